// Planner search: enumeration, constraint pruning, evaluation and top-K ranking.
// See planner/planner.hpp for the counting invariants every search keeps.
#include "planner/planner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <tuple>

#include "core/error.hpp"
#include "core/format.hpp"
#include "core/units.hpp"

namespace ringplan::planner {
namespace {


// Default sets, see ResolvedSearchSpace.
const std::vector<int64_t> kDefaultMicroBatch = {1, 2, 4, 8};
const std::vector<int64_t> kDefaultInterleave = {1, 2, 4};

// Stable key of a layout, the last tie-breaker of the ranking.
auto layout_key(const sim::Prediction& p) {
  const Mesh& m = p.mesh;
  const ParallelOptions& o = p.options;
  return std::make_tuple(m.tp, m.cp, m.pp, m.dp, o.micro_batch, static_cast<int>(o.recompute),
                         o.zero_stage, o.sequence_parallel, static_cast<int>(o.cp_scheme),
                         o.interleave, static_cast<int>(o.attention), static_cast<int>(o.cp_comm),
                         o.cp_a2a_size, static_cast<int>(o.tp_overlap), o.overlap_param_gather, o.dp_replicate);
}

// Collects rejections. Layout rejections arrive once per pruned subtree (not once per
// candidate), so grouping them by category string is outside the hot loop. Out-of-memory
// rejections come from the innermost loop: they use a fixed counter and format their
// example message only the first time.
class RejectionTally {
 public:
  void layout(const std::string& message, int64_t count) {
    if (count <= 0) return;
    std::string category = rejection_category(message);
    for (auto& r : layout_) {
      if (r.reason == category) {
        r.count += count;
        return;
      }
    }
    layout_.push_back({std::move(category), count, message});
  }
  void out_of_memory(const sim::Prediction& p) {
    if (oom_count_++ == 0) oom_example_ = out_of_memory_message(p);
  }
  int64_t out_of_memory_count() const { return oom_count_; }
  int64_t layout_total() const {
    int64_t n = 0;
    for (const auto& r : layout_) n += r.count;
    return n;
  }
  std::vector<Rejection> summary() const {
    std::vector<Rejection> all = layout_;
    if (oom_count_ > 0) all.push_back({"out of memory", oom_count_, oom_example_});
    std::stable_sort(all.begin(), all.end(),
                     [](const Rejection& a, const Rejection& b) { return a.count > b.count; });
    return all;
  }

 private:
  std::vector<Rejection> layout_;
  int64_t oom_count_ = 0;
  std::string oom_example_;
};

// Keeps the best K predictions: a max-heap on "ranks later", so the worst kept one is on top
// and is replaced in O(log K). Storage is reserved once; push() never allocates.
class TopK {
 public:
  explicit TopK(size_t k) : k_(k) { heap_.reserve(k + 1); }
  void push(const sim::Prediction& p) {
    if (heap_.size() < k_) {
      heap_.push_back(p);
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    } else if (ranks_before(p, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
      heap_.back() = p;
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    }
  }
  std::vector<sim::Prediction> sorted() && {
    std::sort_heap(heap_.begin(), heap_.end(), ranks_before);  // ascending: best first
    return std::move(heap_);
  }

 private:
  size_t k_;
  std::vector<sim::Prediction> heap_;
};

// The loaders already bound every GPU count (core/config_yaml.cpp); these checks guard
// experiments and settings built in code, so that enumerate_meshes() never sees more than
// kMaxGpus.
int64_t resolve_gpus(const Experiment& e, const PlanSettings& s) {
  if (s.gpus != 0) {
    if (s.gpus < 0 || s.gpus > kMaxGpus)
      throw bad_input(fmt::format("GPU count must be in 1 .. {} (ringplan's limit, 2^20), got {}", kMaxGpus, s.gpus));
    return s.gpus;
  }
  if (e.gpus) {
    if (*e.gpus <= 0 || *e.gpus > kMaxGpus)
      throw bad_input(fmt::format("{}: gpus must be in 1 .. {} (ringplan's limit, 2^20), got {}", e.path, kMaxGpus,
                                  *e.gpus));
    return *e.gpus;
  }
  const int64_t per_node = e.cluster.gpus_per_node, nodes = e.cluster.nodes;
  // per_node <= kMaxGpus / nodes: the product is in range and computing it cannot overflow.
  if (per_node <= 0 || nodes <= 0 || per_node > kMaxGpus / nodes)
    throw bad_input(fmt::format(
        "{}: cluster '{}' has gpus_per_node {} x nodes {}; the product must be in 1 .. {} (ringplan's "
        "limit, 2^20): fix cluster.nodes, or set the experiment's gpus or --gpus",
        e.path, e.cluster.name, per_node, nodes, kMaxGpus));
  return per_node * nodes;
}

// Why the planner picked `chosen` over the fastest candidate (see PlanResult::chosen).
std::string choice_reason(const sim::Prediction& fastest, const sim::Prediction& chosen, int64_t chosen_rank,
                          int64_t top_k) {
  const std::string band = format::format_pct(100.0 * kRankingBand);
  if (chosen.mesh == fastest.mesh && chosen.options == fastest.options)
    return fmt::format("rank 1 is the fastest and no simpler layout is within the {} band", band);
  const Simplicity a = simplicity_of(fastest.mesh, fastest.options), b = simplicity_of(chosen.mesh, chosen.options);
  std::vector<std::string> why;
  if (b.zero_stage != a.zero_stage) why.push_back(fmt::format("ZeRO stage {} instead of {}", b.zero_stage, a.zero_stage));
  if (b.interleaved != a.interleaved)
    why.push_back(b.interleaved ? "interleaved pipeline" : "no interleaved pipeline");
  if (b.dims_above_one != a.dims_above_one)
    why.push_back(fmt::format("{} mesh dimension{} > 1 instead of {}", b.dims_above_one,
                              b.dims_above_one == 1 ? "" : "s", a.dims_above_one));
  if (b.cp_method != a.cp_method) {
    static constexpr const char* kMethod[] = {"ring CP", "all-gather CP", "all-to-all CP", "hybrid CP"};
    why.push_back(fmt::format("{} instead of {}", kMethod[b.cp_method], kMethod[a.cp_method]));
  }
  if (b.hybrid_shard != a.hybrid_shard) why.push_back(b.hybrid_shard ? "hybrid sharding" : "no hybrid sharding");
  std::string list;
  for (size_t i = 0; i < why.size(); ++i) list += (i ? ", " : "") + why[i];
  const double slower = fastest.step_time_s > 0 ? 100.0 * (chosen.step_time_s / fastest.step_time_s - 1.0) : 0.0;
  return fmt::format("{} is {} slower than rank 1, inside the {} band, and simpler: {}",
                     chosen_rank > 0 ? fmt::format("rank {}", chosen_rank)
                                     : fmt::format("a layout below the top {}", top_k),
                     format::format_pct(slower), band, list);
}

}  // namespace

ResolvedSearchSpace resolve_search_space(const Experiment& e) {
  const SearchSpace& s = e.search;
  ResolvedSearchSpace r;
  r.micro_batch_is_default = s.micro_batch.empty();
  r.micro_batch = s.micro_batch.empty() ? kDefaultMicroBatch : s.micro_batch;
  r.recompute = s.recompute.empty()
                    ? std::vector<Recompute>{Recompute::none, Recompute::selective, Recompute::full}
                    : s.recompute;
  r.zero_stage = s.zero_stage.empty() ? std::vector<int>{0, 1, 2, 3} : s.zero_stage;
  r.sequence_parallel = s.sequence_parallel.empty() ? std::vector<bool>{false, true} : s.sequence_parallel;
  r.cp_scheme = s.cp_scheme.empty()
                    ? std::vector<CpScheme>{CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}
                    : s.cp_scheme;
  r.interleave = s.interleave.empty() ? kDefaultInterleave : s.interleave;
  r.attention = s.attention.empty()
                    ? std::vector<AttentionImpl>{AttentionImpl::flash, AttentionImpl::materialized}
                    : s.attention;
  r.cp_comm = s.cp_comm.empty()
                  ? std::vector<CpComm>{CpComm::ring, CpComm::allgather, CpComm::alltoall, CpComm::hybrid}
                  : s.cp_comm;
  r.cp_a2a_size = s.cp_a2a_size;
  r.dp_replicate = s.dp_replicate;
  r.max_tp = s.max_tp.value_or(0);
  r.max_cp = s.max_cp.value_or(0);
  r.max_pp = s.max_pp.value_or(0);
  return r;
}

std::vector<Mesh> enumerate_meshes(int64_t gpus) {
  std::vector<Mesh> meshes;
  if (gpus <= 0) return meshes;
  // The number of meshes grows with the divisor count; beyond kMaxGpus the search is refused
  // (plan() says so with the limit) rather than left to run for minutes.
  if (gpus > kMaxGpus)
    throw bad_input(fmt::format("cannot enumerate meshes of {} GPUs: at most {} (ringplan's limit, 2^20)", gpus,
                                kMaxGpus));
  std::vector<int64_t> divisors;
  // d <= gpus / d rather than d * d <= gpus: the product would overflow int64 near its maximum.
  for (int64_t d = 1; d <= gpus / d; ++d) {
    if (gpus % d == 0) {
      divisors.push_back(d);
      if (d != gpus / d) divisors.push_back(gpus / d);
    }
  }
  std::sort(divisors.begin(), divisors.end());
  for (int64_t tp : divisors) {
    const int64_t rest_tp = gpus / tp;
    for (int64_t cp : divisors) {
      if (rest_tp % cp != 0) continue;
      const int64_t rest_cp = rest_tp / cp;
      for (int64_t dp : divisors) {
        if (rest_cp % dp != 0) continue;
        meshes.push_back(Mesh{dp, tp, cp, rest_cp / dp});
      }
    }
  }
  return meshes;
}

Simplicity simplicity_of(const Mesh& m, const ParallelOptions& o) {
  Simplicity s;
  s.zero_stage = std::clamp(o.zero_stage, 0, 3);
  s.interleaved = m.pp > 1 && o.interleave > 1 ? 1 : 0;
  s.dims_above_one = (m.dp > 1) + (m.tp > 1) + (m.cp > 1) + (m.pp > 1);
  s.cp_method = m.cp > 1 ? (o.cp_comm == CpComm::allgather  ? 1
                            : o.cp_comm == CpComm::alltoall ? 2
                            : o.cp_comm == CpComm::hybrid   ? 3
                                                            : 0)
                         : 0;
  s.hybrid_shard = o.dp_replicate > 1 ? 1 : 0;
  return s;
}

int simplicity_index(const Simplicity& s) {
  return (((s.zero_stage * 2 + s.interleaved) * 5 + s.dims_above_one) * 4 + s.cp_method) * 2 + s.hybrid_shard;
}

std::vector<int> ranking_groups(const std::vector<sim::Prediction>& ranked) {
  std::vector<int> groups;
  groups.reserve(ranked.size());
  int group = 0;
  double leader = 0;
  for (const auto& p : ranked) {
    if (group == 0 || !within_band(p.step_time_s, leader)) {
      ++group;
      leader = p.step_time_s;
    }
    groups.push_back(group);
  }
  return groups;
}

bool scheme_twins(const sim::Prediction& a, const sim::Prediction& b) {
  auto balanced = [](CpScheme c) { return c == CpScheme::zigzag || c == CpScheme::striped; };
  if (!(a.mesh == b.mesh) || a.mesh.cp <= 1 || a.options.cp_scheme == b.options.cp_scheme) return false;
  if (!balanced(a.options.cp_scheme) || !balanced(b.options.cp_scheme)) return false;
  ParallelOptions x = a.options;
  x.cp_scheme = b.options.cp_scheme;
  return x == b.options;
}

bool ranks_before(const sim::Prediction& a, const sim::Prediction& b) {
  if (a.step_time_s != b.step_time_s) return a.step_time_s < b.step_time_s;
  if (a.peak_memory_bytes != b.peak_memory_bytes) return a.peak_memory_bytes < b.peak_memory_bytes;
  return layout_key(a) < layout_key(b);
}

std::string rejection_category(const std::string& message) {
  std::string out;
  out.reserve(message.size());
  for (size_t i = 0; i < message.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    if (std::isdigit(c)) {
      // A number (with an optional fraction or exponent-free decimal part) becomes one '#'.
      while (i + 1 < message.size() &&
             (std::isdigit(static_cast<unsigned char>(message[i + 1])) ||
              (message[i + 1] == '.' && i + 2 < message.size() &&
               std::isdigit(static_cast<unsigned char>(message[i + 2])))))
        ++i;
      out += '#';
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string out_of_memory_message(const sim::Prediction& p) {
  return fmt::format("out of memory: {} > {}", format::format_bytes(p.peak_memory_bytes),
                     format::format_bytes(p.capacity_bytes));
}

std::vector<CpCommAlternative> cp_comm_alternatives(const Experiment& e, const sim::Prediction& chosen, int64_t gpus) {
  std::vector<CpCommAlternative> out;
  std::vector<CpComm> order = {chosen.options.cp_comm};
  for (CpComm c : {CpComm::ring, CpComm::allgather, CpComm::alltoall, CpComm::hybrid})
    if (c != chosen.options.cp_comm) order.push_back(c);
  for (CpComm comm : order) {
    // The chosen scheme first (the chosen layout itself for the first entry), then the others:
    // the fastest that fits wins, else the first that runs.
    std::vector<CpScheme> schemes = {chosen.options.cp_scheme};
    for (CpScheme sc : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
      if (sc != chosen.options.cp_scheme && comm != chosen.options.cp_comm) schemes.push_back(sc);
    // hybrid, when it is not the chosen method, at each group size the search tries (1 < A < CP,
    // as A = 1 is the ring and A = CP the all-to-all, both listed already); the chosen layout's
    // size otherwise. No such size (CP 2 or prime): the default size, which is one of the two.
    std::vector<int64_t> sizes = {chosen.options.cp_a2a_size};
    if (comm == CpComm::hybrid && comm != chosen.options.cp_comm) {
      sizes.clear();
      for (int64_t a = 2; a < chosen.mesh.cp; ++a)
        if (chosen.mesh.cp % a == 0) sizes.push_back(a);
      if (sizes.empty()) sizes.push_back(0);
    }
    CpCommAlternative best;
    bool have = false;
    for (CpScheme sc : schemes)
     for (int64_t size : sizes) {
      CpCommAlternative a;
      a.comm = comm;
      a.scheme = sc;
      ParallelOptions opt = chosen.options;
      opt.cp_comm = comm;
      opt.cp_scheme = sc;
      opt.cp_a2a_size = size;
      a.refused = sim::check_layout(e, chosen.mesh, opt, gpus);
      a.a2a_size = sim::cp_a2a_size_of(e, chosen.mesh, opt);
      if (a.refused.empty()) {
        const sim::Prediction p = sim::predict(e, chosen.mesh, opt);
        a.step_time_s = p.step_time_s;
        a.cp_exposed_s = p.time.ring_comm_exposed_s + p.time.cp_imbalance_s;
        a.cp_buffer_bytes = p.memory.ring_buffers_bytes;
        a.peak_memory_bytes = p.peak_memory_bytes;
        a.fits = p.fits;
      }
      const bool better = !have || (best.refused.empty() != a.refused.empty() ? a.refused.empty()
                                    : best.fits != a.fits                     ? a.fits
                                                                               : a.step_time_s < best.step_time_s);
      if (better) {
        best = a;
        have = true;
      }
    }
    out.push_back(std::move(best));
  }
  return out;
}

std::string cp_comm_reason(const sim::Prediction& chosen, const std::vector<CpCommAlternative>& alts,
                           const std::vector<CpComm>& searched) {
  if (alts.empty()) return {};
  const CpCommAlternative& me = alts.front();
  // hybrid is named with its group size: "hybrid (a2a size 4)".
  auto method = [](const CpCommAlternative& a) {
    return a.comm == CpComm::hybrid ? fmt::format("hybrid (a2a size {})", a.a2a_size) : std::string(to_string(a.comm));
  };
  std::string s = fmt::format("cp_comm {} ({}): exposed CP communication + imbalance {} per step, CP buffers {}",
                              method(me), to_string(me.scheme), format::format_time_s(me.cp_exposed_s),
                              format::format_bytes(me.cp_buffer_bytes));
  for (size_t i = 1; i < alts.size(); ++i) {
    const CpCommAlternative& a = alts[i];
    if (!a.refused.empty()) {
      s += fmt::format("; {} cannot run this layout ({})", method(a), a.refused);
    } else if (!a.fits) {
      s += fmt::format("; {} does not fit ({} peak)", method(a), format::format_bytes(a.peak_memory_bytes));
    } else {
      const double d = 100.0 * (a.step_time_s - chosen.step_time_s) / chosen.step_time_s;
      s += fmt::format("; {} ({}) {} step time (exposed CP {}, buffers {}){}", method(a), to_string(a.scheme),
                       format::format_error_pct(d), format::format_time_s(a.cp_exposed_s),
                       format::format_bytes(a.cp_buffer_bytes),
                       d >= 0 ? ""
                       : std::find(searched.begin(), searched.end(), a.comm) == searched.end()
                           ? " -- faster, but not searched (fixed or left out by the experiment)"
                           : " -- faster, but the chosen layout is inside the ranking band and simpler");
    }
  }
  return s;
}

PlanResult plan(const Experiment& e, const PlanSettings& settings) {
  if (settings.top_k <= 0)
    throw bad_input(fmt::format("top-K must be > 0 (number of ranked layouts to keep), got {}",
                                settings.top_k));
  PlanResult result;
  result.gpus = resolve_gpus(e, settings);
  ResolvedSearchSpace space = resolve_search_space(e);
  const FixedOptionKeys fixed = settings.fixed_layout ? e.fixed_options : FixedOptionKeys{};
  {
    // Options fixed by the experiment's `options:` block: one value each.
    const ParallelOptions& o = e.options;
    if (fixed.micro_batch) {
      space.micro_batch = {o.micro_batch};
      space.micro_batch_is_default = false;
    }
    if (fixed.recompute) space.recompute = {o.recompute};
    if (fixed.zero_stage) space.zero_stage = {o.zero_stage};
    if (fixed.sequence_parallel) space.sequence_parallel = {o.sequence_parallel};
    if (fixed.cp_scheme) space.cp_scheme = {o.cp_scheme};
    if (fixed.interleave) space.interleave = {o.interleave};
    if (fixed.attention) space.attention = {o.attention};
    if (fixed.cp_comm) space.cp_comm = {o.cp_comm};
    if (fixed.cp_a2a_size) {
      space.cp_a2a_size = {o.cp_a2a_size};
      space.cp_a2a_size_fixed = true;
    }
    if (fixed.dp_replicate) {
      space.dp_replicate = {o.dp_replicate};
      space.dp_replicate_fixed = true;
    }
  }
  std::vector<Mesh> meshes;
  if (settings.fixed_layout && e.mesh) {
    if (e.mesh->world_size() != result.gpus)
      throw bad_input(fmt::format("the mesh fixed by {} ({}) has dp*tp*cp*pp = {}, but the plan is for {} GPUs; "
                                  "drop --gpus, or change or remove the experiment's `mesh:`",
                                  e.mesh_line > 0 ? fmt::format("{}:{}", e.path, e.mesh_line) : e.path,
                                  fmt::format("dp={} tp={} cp={} pp={}", e.mesh->dp, e.mesh->tp, e.mesh->cp,
                                              e.mesh->pp),
                                  e.mesh->world_size(), result.gpus));
    meshes.push_back(*e.mesh);
    result.fixed_mesh = true;
  } else {
    meshes = enumerate_meshes(result.gpus);
  }
  const int64_t batch = e.training.global_batch_sequences;
  // Packed documents: the attention work of every CP size searched, once, outside predict().
  Experiment with_document_work;
  if (e.training.documents) {
    with_document_work = e;
    std::vector<int64_t> cps;
    for (const Mesh& m : meshes) cps.push_back(m.cp);
    std::sort(cps.begin(), cps.end());
    cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
    sim::prepare_document_work(with_document_work, cps);
  }
  const Experiment& predicted = e.training.documents ? with_document_work : e;

  RejectionTally tally;
  TopK top(static_cast<size_t>(settings.top_k));
  std::vector<int64_t> micro_batches;
  micro_batches.reserve(space.micro_batch.size() + 1);

  // Option lists that collapse to one value where the option has no effect.
  const std::vector<bool> sp_off = {false};
  const std::vector<CpScheme> scheme_fixed = {e.options.cp_scheme};
  const std::vector<CpComm> comm_fixed = {e.options.cp_comm};
  std::vector<std::pair<CpComm, int64_t>> comm_variants;  // refilled per mesh
  const std::vector<int64_t> interleave_one = {1};
  // Hybrid-sharding replica counts of the mesh: for ZeRO >= 1 (refilled per mesh), and for ZeRO-0
  // (1, or the fixed value, which check_layout refuses when it is > 1).
  std::vector<int64_t> replicas;
  const std::vector<int64_t> one_replica = {1};
  const std::vector<int64_t> replicas_zero0 = space.dp_replicate_fixed ? space.dp_replicate : one_replica;

  // All-gather and all-to-all CP run the flash kernel only (check_layout refuses them with a
  // materialised kernel): with those the attention list is its flash entries, so the impossible
  // pair is never enumerated (like SP at TP = 1), and the innermost loop stays allocation-free.
  std::vector<AttentionImpl> attention_flash;
  for (AttentionImpl a : space.attention)
    if (a == AttentionImpl::flash) attention_flash.push_back(a);
  auto attention_for = [&](int64_t cp, CpComm comm) -> const std::vector<AttentionImpl>& {
    return cp > 1 && comm != CpComm::ring ? attention_flash : space.attention;
  };
  // ZeRO stages times their replica counts (refilled per mesh with `replicas`).
  int64_t zero_variants = 0;
  auto inner_for = [&](int64_t cp, CpComm comm) {
    return static_cast<int64_t>(space.recompute.size() * attention_for(cp, comm).size()) * zero_variants;
  };

  // Fastest fitting candidate of each Simplicity class (for PlanResult::chosen); allocated once.
  std::vector<std::optional<sim::Prediction>> best_of_class(kSimplicityClasses);

  for (const Mesh& mesh : meshes) {
    // Micro-batch sizes for this mesh (see ResolvedSearchSpace).
    micro_batches.clear();
    if (space.micro_batch_is_default) {
      const int64_t per_replica = (batch > 0 && batch % mesh.dp == 0) ? batch / mesh.dp : 0;
      for (int64_t mb : space.micro_batch)
        if (per_replica > 0 && per_replica % mb == 0) micro_batches.push_back(mb);
      // None divides: keep 1 so that the mesh is counted and check_layout() says why.
      if (micro_batches.empty()) micro_batches.push_back(1);
    } else {
      micro_batches = space.micro_batch;
    }
    // A fixed option is tried even where it has no effect, so that check_layout() judges it.
    const auto& sps = mesh.tp > 1 || fixed.sequence_parallel ? space.sequence_parallel : sp_off;
    const auto& schemes = mesh.cp > 1 ? space.cp_scheme : scheme_fixed;
    const auto& comms = mesh.cp > 1 ? space.cp_comm : comm_fixed;
    const auto& interleaves = mesh.pp > 1 || fixed.interleave ? space.interleave : interleave_one;
    // (method, hybrid group size) pairs of this mesh: hybrid once per group size, the others once.
    comm_variants.clear();
    for (CpComm comm : comms) {
      if (comm != CpComm::hybrid || mesh.cp <= 1) {
        comm_variants.push_back({comm, e.options.cp_a2a_size});
      } else if (space.cp_a2a_size_fixed) {
        comm_variants.push_back({comm, space.cp_a2a_size.front()});
      } else if (!space.cp_a2a_size.empty()) {
        for (int64_t a : space.cp_a2a_size)
          if (a >= 1 && mesh.cp % a == 0) comm_variants.push_back({comm, a});
      } else {
        for (int64_t a = 2; a < mesh.cp; ++a)
          if (mesh.cp % a == 0) comm_variants.push_back({comm, a});
      }
    }
    replicas.clear();
    if (space.dp_replicate_fixed) {
      replicas = space.dp_replicate;
    } else if (!space.dp_replicate.empty()) {
      for (int64_t r : space.dp_replicate)
        if (r >= 1 && mesh.dp % r == 0) replicas.push_back(r);
      if (replicas.empty()) replicas.push_back(1);  // none divides this DP: no replication possible
    } else {
      replicas.push_back(1);
      // Shard groups that fill 1, 2, 4 or 8 whole nodes: (DP / R) x CP x TP = k x GPUs per node
      // (one node keeps the gathers on NVLink; a few nodes shard a model too large for one).
      const int64_t g = e.cluster.gpus_per_node, inner = mesh.tp * mesh.cp;
      for (int64_t k : {1, 2, 4, 8}) {
        if (g <= 0 || (k * g) % inner != 0) continue;
        const int64_t shard = k * g / inner;
        if (mesh.dp % shard == 0 && mesh.dp / shard > 1) replicas.push_back(mesh.dp / shard);
      }
    }
    zero_variants = 0;
    for (int zero : space.zero_stage)
      zero_variants += static_cast<int64_t>(zero >= 1 ? replicas.size() : replicas_zero0.size());
    int64_t inner_comms = 0;  // innermost candidates summed over the CP methods
    for (const auto& [comm, a2a] : comm_variants) inner_comms += inner_for(mesh.cp, comm);
    const int64_t per_mesh =
        static_cast<int64_t>(micro_batches.size() * sps.size() * schemes.size() * interleaves.size()) * inner_comms;
    result.enumerated += per_mesh;

    // Search caps are the user's choice, not a layout error, but they are still reported.
    if (space.max_tp > 0 && mesh.tp > space.max_tp) {
      tally.layout(fmt::format("TP {} > search cap max_tp {}", mesh.tp, space.max_tp), per_mesh);
      continue;
    }
    if (space.max_cp > 0 && mesh.cp > space.max_cp) {
      tally.layout(fmt::format("CP {} > search cap max_cp {}", mesh.cp, space.max_cp), per_mesh);
      continue;
    }
    if (space.max_pp > 0 && mesh.pp > space.max_pp) {
      tally.layout(fmt::format("PP {} > search cap max_pp {}", mesh.pp, space.max_pp), per_mesh);
      continue;
    }

    ParallelOptions opt = e.options;
    if (!settings.exhaustive) {
      // Least demanding options: if even these fail, the failure is the mesh's own
      // (TP vs heads, PP vs layers, CP vs sequence, DP vs batch).
      opt.micro_batch = 1;
      opt.recompute = Recompute::none;
      opt.zero_stage = 0;
      opt.sequence_parallel = false;
      opt.cp_scheme = CpScheme::contiguous;
      opt.cp_comm = CpComm::ring;
      opt.interleave = 1;
      opt.attention = AttentionImpl::flash;
      opt.dp_replicate = 1;
      std::string why = sim::check_layout(e, mesh, opt, result.gpus);
      if (!why.empty()) {
        tally.layout(why, per_mesh);
        continue;
      }
    }

    for (int64_t mb : micro_batches) {
      opt.micro_batch = mb;
      for (bool sp : sps) {
        opt.sequence_parallel = sp;
        for (CpScheme scheme : schemes) {
          opt.cp_scheme = scheme;
          for (const auto& [comm, a2a] : comm_variants) {
            opt.cp_comm = comm;
            opt.cp_a2a_size = a2a;
            const std::vector<AttentionImpl>& attentions = attention_for(mesh.cp, comm);
            const int64_t inner = inner_for(mesh.cp, comm);
            if (inner == 0) continue;  // allgather/alltoall with only materialised in the search: nothing to try
            for (int64_t v : interleaves) {
              opt.interleave = v;
              if (!settings.exhaustive) {
                opt.recompute = Recompute::none;
                opt.zero_stage = 0;
                opt.dp_replicate = 1;
                opt.attention = AttentionImpl::flash;
                std::string why = sim::check_layout(e, mesh, opt, result.gpus);
                if (!why.empty()) {
                  tally.layout(why, inner);
                  continue;
                }
              }
              // Innermost loop: no allocation unless a candidate is rejected by check_layout()
              // here (only in exhaustive mode or for a constraint on these options).
              for (Recompute rc : space.recompute) {
                opt.recompute = rc;
                for (int zero : space.zero_stage) {
                  opt.zero_stage = zero;
                  for (int64_t rep : zero >= 1 ? replicas : replicas_zero0) {
                    opt.dp_replicate = rep;
                    for (AttentionImpl attn : attentions) {
                      opt.attention = attn;
                      std::string why = sim::check_layout(e, mesh, opt, result.gpus);
                      if (!why.empty()) {
                        tally.layout(why, 1);
                        continue;
                      }
                      const sim::Prediction p = sim::predict(predicted, mesh, opt);
                      ++result.evaluated;
                      if (!p.fits) {
                        tally.out_of_memory(p);
                        if (!result.closest_out_of_memory ||
                            p.peak_memory_bytes < result.closest_out_of_memory->peak_memory_bytes)
                          result.closest_out_of_memory = p;
                        continue;
                      }
                      ++result.fitting;
                      top.push(p);
                      auto& best = best_of_class[static_cast<size_t>(simplicity_index(simplicity_of(mesh, opt)))];
                      if (!best || ranks_before(p, *best)) best = p;
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }

  result.candidates = std::move(top).sorted();
  result.rejected = tally.summary();
  if (!result.candidates.empty()) {
    // The simplest class with a member inside the band of the fastest; its fastest member.
    const sim::Prediction& fastest = result.candidates.front();
    for (const auto& best : best_of_class) {
      if (best && within_band(best->step_time_s, fastest.step_time_s)) {
        result.chosen = *best;
        break;
      }
    }
    if (!result.chosen) result.chosen = fastest;  // unreachable: fastest's class is within the band
    for (size_t i = 0; i < result.candidates.size(); ++i)
      if (result.candidates[i].mesh == result.chosen->mesh && result.candidates[i].options == result.chosen->options)
        result.chosen_rank = static_cast<int64_t>(i) + 1;
    result.choice_reason = choice_reason(fastest, *result.chosen, result.chosen_rank, settings.top_k);
    if (result.chosen->mesh.cp > 1) {
      result.cp_comm_alternatives = cp_comm_alternatives(e, *result.chosen, result.gpus);
      result.cp_comm_reason = cp_comm_reason(*result.chosen, result.cp_comm_alternatives, space.cp_comm);
    }
  }
  // Invariants of planner.hpp: every enumerated candidate is accounted for.
  if (result.enumerated != result.evaluated + tally.layout_total() ||
      result.evaluated != result.fitting + tally.out_of_memory_count())
    throw Error(ErrorKind::runtime,
                fmt::format("planner bookkeeping broken: enumerated {} != evaluated {} + rejected "
                            "{}, or evaluated != fitting {} + out of memory {}",
                            result.enumerated, result.evaluated, tally.layout_total(),
                            result.fitting, tally.out_of_memory_count()));
  return result;
}

std::string fixed_layout_text(const Experiment& e) {
  auto where = [&](int line) { return line > 0 ? fmt::format("{}:{}", e.path, line) : e.path; };
  std::string s;
  if (e.mesh)
    s = fmt::format("mesh fixed by {} (dp={} tp={} cp={} pp={})", where(e.mesh_line), e.mesh->dp, e.mesh->tp,
                    e.mesh->cp, e.mesh->pp);
  const FixedOptionKeys& f = e.fixed_options;
  if (f.any()) {
    std::vector<std::string> keys;
    if (f.micro_batch) keys.push_back(fmt::format("micro_batch {}", e.options.micro_batch));
    if (f.recompute) keys.push_back(fmt::format("recompute {}", to_string(e.options.recompute)));
    if (f.zero_stage) keys.push_back(fmt::format("zero_stage {}", e.options.zero_stage));
    if (f.sequence_parallel) keys.push_back(fmt::format("sequence_parallel {}", e.options.sequence_parallel));
    if (f.cp_scheme) keys.push_back(fmt::format("cp_scheme {}", to_string(e.options.cp_scheme)));
    if (f.interleave) keys.push_back(fmt::format("interleave {}", e.options.interleave));
    if (f.attention) keys.push_back(fmt::format("attention {}", to_string(e.options.attention)));
    if (f.cp_comm) keys.push_back(fmt::format("cp_comm {}", to_string(e.options.cp_comm)));
    if (f.cp_a2a_size) keys.push_back(fmt::format("cp_a2a_size {}", e.options.cp_a2a_size));
    if (f.dp_replicate) keys.push_back(fmt::format("dp_replicate {}", e.options.dp_replicate));
    const size_t searched_fixed = keys.size();  // tp_overlap and overlap_param_gather are never searched
    if (f.tp_overlap) keys.push_back(fmt::format("tp_overlap {}", to_string(e.options.tp_overlap)));
    if (f.overlap_param_gather) keys.push_back(fmt::format("overlap_param_gather {}", e.options.overlap_param_gather));
    if (f.pp_split) keys.push_back("pipeline split " + pipeline_split_text(e.options));
    std::string list;
    for (size_t i = 0; i < keys.size(); ++i) list += (i ? ", " : "") + keys[i];
    s += fmt::format("{}options fixed by {} ({})", s.empty() ? "" : "; ", where(e.options_line), list);
    if (searched_fixed < 10) s += "; the other options searched";
  }
  return s;
}

std::string describe_no_fit(const Experiment& e, const PlanResult& r) {
  if (r.fixed_mesh) {
    const std::string what = fixed_layout_text(e);
    if (r.closest_out_of_memory) {
      const auto& p = *r.closest_out_of_memory;
      return fmt::format(
          "{}: does not fit in memory: {} option combinations evaluated, the smallest needs {} per GPU, "
          "the GPUs have {}. Ways forward: allow full recompute or a higher ZeRO stage in `options:`, "
          "a shorter sequence, or drop the fixed `mesh:` to let plan search every layout",
          what, format::format_count(r.evaluated), format::format_bytes(p.peak_memory_bytes),
          format::format_bytes(p.capacity_bytes));
    }
    if (!r.rejected.empty())
      return fmt::format("{}: this layout cannot run: {}", what, r.rejected.front().example);
    return fmt::format("{}: no option combination to try", what);
  }
  std::string s = fmt::format(
      "no layout of {} fits on {} GPUs of {} ({} each): {} layouts enumerated, {} "
      "evaluated, none within memory",
      e.model.name, format::format_count(r.gpus), e.cluster.name, format::format_bytes(e.cluster.memory_bytes),
      format::format_count(r.enumerated), format::format_count(r.evaluated));
  if (r.closest_out_of_memory) {
    const auto& p = *r.closest_out_of_memory;
    s += fmt::format(
        "; the smallest needs {} (dp={} tp={} cp={} pp={}). Valid ways forward: more "
        "GPUs (--gpus), a shorter sequence or smaller global batch, or allowing full recompute, "
        "ZeRO-3 and larger TP/CP/PP in the search space",
        format::format_bytes(p.peak_memory_bytes), p.mesh.dp, p.mesh.tp, p.mesh.cp, p.mesh.pp);
  } else if (!r.rejected.empty()) {
    s += fmt::format("; no layout passed the constraints, most common reason: {}{}", r.rejected.front().example,
                     r.rejected.front().count > 1
                         ? fmt::format(" (and {} more like it)", format::format_count(r.rejected.front().count - 1))
                         : std::string());
  }
  return s;
}

}  // namespace ringplan::planner
