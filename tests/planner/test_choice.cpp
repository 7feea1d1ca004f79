// The planner's choice and fixed layouts: the ranking band groups candidates whose step times
// are closer than the cost model can tell apart, the simplest layout of the first group is
// chosen; an experiment's `mesh:` and `options:` restrict `plan` to them.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "planner/planner.hpp"
#include "tests/fixtures/experiments.hpp"

using namespace ringplan;
using namespace ringplan::planner;

namespace {

bool same_layout(const sim::Prediction& a, const sim::Prediction& b) {
  return a.mesh == b.mesh && a.options == b.options;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Every fitting candidate (the planner with an unbounded top K lists them all).
std::vector<sim::Prediction> all_fitting(const Experiment& e, int64_t gpus) {
  return plan(e, {.gpus = gpus, .top_k = 1000000}).candidates;
}

// The rule of PlanResult::chosen written out on the whole list: the candidates within the band
// of the fastest, the simplest of them, the fastest among equally simple ones.
sim::Prediction expected_choice(const std::vector<sim::Prediction>& all) {
  const double fastest = all.front().step_time_s;
  std::vector<sim::Prediction> band;
  for (const auto& p : all)
    if (within_band(p.step_time_s, fastest)) band.push_back(p);
  return *std::min_element(band.begin(), band.end(), [](const sim::Prediction& a, const sim::Prediction& b) {
    const Simplicity sa = simplicity_of(a.mesh, a.options), sb = simplicity_of(b.mesh, b.options);
    if (sa != sb) return sa < sb;
    return ranks_before(a, b);
  });
}

}  // namespace

TEST_CASE("ranking band: the named constant and its reason") {
  CHECK(kRankingBand == doctest::Approx(0.03));
  CHECK(has(kRankingBandReason, "held out: 1.3 % on Korthikanti"));
  CHECK(has(kRankingBandReason, "BENCHMARKS.md"));
  CHECK(within_band(1.029, 1.0));
  CHECK_FALSE(within_band(1.031, 1.0));
  CHECK(within_band(0.0, 0.0));
}

TEST_CASE("ranking groups: a group holds every candidate within the band of its first") {
  std::vector<sim::Prediction> ranked(5);
  const double times[] = {1.00, 1.02, 1.029, 1.04, 1.05};
  for (size_t i = 0; i < ranked.size(); ++i) ranked[i].step_time_s = times[i];
  CHECK(ranking_groups(ranked) == std::vector<int>{1, 1, 1, 2, 2});
  CHECK(ranking_groups({}).empty());
}

TEST_CASE("simplicity: ZeRO stage, then interleave, then mesh dimensions, then ring before all-gather before all-to-all, then one copy of the shards") {
  ParallelOptions o;
  const Simplicity dp_only = simplicity_of(Mesh{4, 1, 1, 1}, o);
  CHECK(dp_only.dims_above_one == 1);
  CHECK(simplicity_of(Mesh{2, 1, 2, 1}, o) > dp_only);
  ParallelOptions z1 = o;
  z1.zero_stage = 1;
  CHECK(simplicity_of(Mesh{4, 1, 1, 1}, z1) > simplicity_of(Mesh{1, 2, 2, 1}, o));
  ParallelOptions ag = o;
  ag.cp_comm = CpComm::allgather;
  CHECK(simplicity_of(Mesh{1, 1, 4, 1}, ag) > simplicity_of(Mesh{1, 1, 4, 1}, o));
  CHECK(simplicity_of(Mesh{4, 1, 1, 1}, ag) == dp_only);  // no CP: the exchange does not act
  ParallelOptions a2a = o;
  a2a.cp_comm = CpComm::alltoall;  // all-to-all after all-gather (and the ring)
  CHECK(simplicity_of(Mesh{1, 1, 4, 1}, a2a) > simplicity_of(Mesh{1, 1, 4, 1}, ag));
  CHECK(simplicity_of(Mesh{4, 1, 1, 1}, a2a) == dp_only);
  CHECK(simplicity_index(simplicity_of(Mesh{1, 1, 4, 1}, a2a)) > simplicity_index(simplicity_of(Mesh{1, 1, 4, 1}, ag)));
  ParallelOptions v2 = o;
  v2.interleave = 2;
  CHECK(simplicity_of(Mesh{1, 1, 1, 4}, v2) > simplicity_of(Mesh{1, 1, 1, 4}, o));
  // The dense index keeps the order.
  CHECK(simplicity_index(simplicity_of(Mesh{1, 1, 4, 1}, ag)) > simplicity_index(simplicity_of(Mesh{1, 1, 4, 1}, o)));
  ParallelOptions hy = o;
  hy.cp_comm = CpComm::hybrid;  // hybrid last: both stages, two process groups
  CHECK(simplicity_of(Mesh{1, 1, 4, 1}, hy) > simplicity_of(Mesh{1, 1, 4, 1}, a2a));
  CHECK(simplicity_index(simplicity_of(Mesh{1, 1, 4, 1}, hy)) > simplicity_index(simplicity_of(Mesh{1, 1, 4, 1}, a2a)));
  CHECK(simplicity_of(Mesh{4, 1, 1, 1}, hy) == dp_only);
  // Hybrid sharding last: the same layout with one copy of the sharded state is simpler.
  ParallelOptions z3 = o, hsdp = o;
  z3.zero_stage = hsdp.zero_stage = 3;
  hsdp.dp_replicate = 2;
  CHECK(simplicity_of(Mesh{4, 1, 1, 1}, hsdp) > simplicity_of(Mesh{4, 1, 1, 1}, z3));
  CHECK(simplicity_index(simplicity_of(Mesh{4, 1, 1, 1}, hsdp)) ==
        simplicity_index(simplicity_of(Mesh{4, 1, 1, 1}, z3)) + 1);
  CHECK(simplicity_of(Mesh{2, 1, 2, 1}, z3) > simplicity_of(Mesh{4, 1, 1, 1}, hsdp));  // mesh dimensions first
  CHECK(simplicity_index(Simplicity{3, 1, 4, 3, 1}) == kSimplicityClasses - 1);
}

TEST_CASE("scheme twins: zigzag and striped of the same layout, nothing else") {
  sim::Prediction a, b;
  a.mesh = b.mesh = Mesh{1, 1, 4, 1};
  a.options.cp_scheme = CpScheme::zigzag;
  b.options.cp_scheme = CpScheme::striped;
  CHECK(scheme_twins(a, b));
  b.options.cp_scheme = CpScheme::contiguous;
  CHECK_FALSE(scheme_twins(a, b));
  b.options.cp_scheme = CpScheme::striped;
  b.options.zero_stage = 1;
  CHECK_FALSE(scheme_twins(a, b));
  b.options.zero_stage = 0;
  b.mesh = a.mesh = Mesh{4, 1, 1, 1};
  CHECK_FALSE(scheme_twins(a, b));  // no CP: the scheme does not act
}

TEST_CASE("plan: chosen is the simplest layout within the band of the fastest, over every fitting candidate") {
  for (int64_t gpus : {4, 8}) {
    Experiment e = test::tiny_experiment();
    e.cluster.nodes = 4;
    e.gpus.reset();
    const std::vector<sim::Prediction> all = all_fitting(e, gpus);
    REQUIRE(!all.empty());
    const sim::Prediction want = expected_choice(all);
    for (int64_t k : {int64_t{1}, int64_t{3}, int64_t{1000000}}) {
      const PlanResult r = plan(e, {.gpus = gpus, .top_k = k});
      REQUIRE(r.chosen);
      CHECK_MESSAGE(same_layout(*r.chosen, want), "gpus ", gpus, " top ", k);
      CHECK(within_band(r.chosen->step_time_s, r.candidates.front().step_time_s));
      if (r.chosen_rank > 0) {
        CHECK(same_layout(r.candidates[static_cast<size_t>(r.chosen_rank - 1)], *r.chosen));
      } else {
        for (const auto& c : r.candidates) CHECK_FALSE(same_layout(c, *r.chosen));
      }
      CHECK(!r.choice_reason.empty());
      CHECK(has(r.choice_reason, "3.0%"));
    }
  }
}

TEST_CASE("plan: the choice prefers ZeRO 0 over a marginally faster ZeRO 3") {
  // Two candidates only: same mesh, ZeRO 0 and 3. Whatever their order, the chosen one is
  // ZeRO 0 if it is within the band, else the faster one.
  Experiment e = test::tiny_experiment();
  e.search.zero_stage = {0, 3};
  e.search.dp_replicate = {1};  // no hybrid-sharding variant of ZeRO 3
  e.search.recompute = {Recompute::none};
  e.search.attention = {AttentionImpl::flash};
  e.search.micro_batch = {1};
  e.search.max_tp = 1;
  e.search.max_cp = 1;
  e.search.max_pp = 1;
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 10});
  REQUIRE(r.candidates.size() == 2);
  REQUIRE(r.chosen);
  const auto& fast = r.candidates[0];
  const auto& slow = r.candidates[1];
  if (within_band(slow.step_time_s, fast.step_time_s)) {
    CHECK(r.chosen->options.zero_stage == 0);
  } else {
    CHECK(same_layout(*r.chosen, fast));
  }
  if (r.chosen_rank == 2) CHECK(has(r.choice_reason, "ZeRO stage 0 instead of 3"));
  if (r.chosen_rank == 1) CHECK(has(r.choice_reason, "rank 1 is the fastest"));
}

TEST_CASE("plan: a fixed mesh restricts the search to it, fixed options to their values") {
  Experiment e = test::tiny_experiment();
  e.mesh = Mesh{1, 1, 4, 1};
  e.mesh_line = 12;
  const PlanResult free = plan(e, {.gpus = 4, .top_k = 1000});
  bool other_mesh = false;
  for (const auto& c : free.candidates) other_mesh |= !(c.mesh == *e.mesh);
  CHECK(other_mesh);  // without fixed_layout (report) the whole space is searched
  CHECK_FALSE(free.fixed_mesh);

  const PlanResult fixed = plan(e, {.gpus = 4, .top_k = 1000, .fixed_layout = true});
  CHECK(fixed.fixed_mesh);
  REQUIRE(!fixed.candidates.empty());
  for (const auto& c : fixed.candidates) CHECK(c.mesh == *e.mesh);
  CHECK(fixed.chosen->mesh == *e.mesh);
  CHECK(has(fixed_layout_text(e), "mesh fixed by tiny.yaml:12 (dp=1 tp=1 cp=4 pp=1)"));

  // Options named by `options:` keep their value; the others are searched.
  e.options.cp_scheme = CpScheme::striped;
  e.options.zero_stage = 1;
  e.fixed_options.cp_scheme = true;
  e.fixed_options.zero_stage = true;
  e.options_line = 13;
  const PlanResult opts = plan(e, {.gpus = 4, .top_k = 1000, .fixed_layout = true});
  REQUIRE(!opts.candidates.empty());
  bool recompute_varies = false;
  for (const auto& c : opts.candidates) {
    CHECK(c.options.cp_scheme == CpScheme::striped);
    CHECK(c.options.zero_stage == 1);
    recompute_varies |= c.options.recompute != opts.candidates.front().options.recompute;
  }
  CHECK(recompute_varies);
  CHECK(has(fixed_layout_text(e), "options fixed by tiny.yaml:13 (zero_stage 1, cp_scheme striped)"));
  CHECK(has(fixed_layout_text(e), "the other options searched"));
  // Pruning still changes nothing.
  const PlanResult ex = plan(e, {.gpus = 4, .top_k = 1000, .exhaustive = true, .fixed_layout = true});
  CHECK(ex.enumerated == opts.enumerated);
  CHECK(ex.evaluated == opts.evaluated);
  CHECK(ex.fitting == opts.fitting);
}

TEST_CASE("plan: with CP the chosen layout is compared with every CP method, and the reason names them") {
  Experiment e = test::tiny_experiment();
  e.mesh = Mesh{1, 1, 4, 1};
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1000, .fixed_layout = true});
  REQUIRE(r.chosen);
  REQUIRE(r.cp_comm_alternatives.size() == 4);
  const CpCommAlternative& first = r.cp_comm_alternatives.front();
  CHECK(first.comm == r.chosen->options.cp_comm);
  CHECK(first.refused.empty());
  CHECK(first.step_time_s == r.chosen->step_time_s);
  for (CpComm c : {CpComm::ring, CpComm::allgather, CpComm::alltoall, CpComm::hybrid}) {
    const auto n = std::count_if(r.cp_comm_alternatives.begin(), r.cp_comm_alternatives.end(),
                                 [c](const CpCommAlternative& a) { return a.comm == c; });
    CHECK(n == 1);
  }
  CHECK(first.scheme == r.chosen->options.cp_scheme);
  // Each alternative is predict() of the chosen layout with that method at its fastest scheme.
  for (const auto& a : r.cp_comm_alternatives) {
    ParallelOptions o = r.chosen->options;
    o.cp_comm = a.comm;
    o.cp_scheme = a.scheme;
    o.cp_a2a_size = a.comm == CpComm::hybrid ? a.a2a_size : o.cp_a2a_size;
    CHECK(a.step_time_s == sim::predict(e, r.chosen->mesh, o).step_time_s);
    if (a.comm == first.comm) continue;
    for (CpScheme sc : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
      o.cp_scheme = sc;
      CHECK(a.step_time_s <= sim::predict(e, r.chosen->mesh, o).step_time_s);
    }
  }
  CHECK(has(r.cp_comm_reason, std::string("cp_comm ") + to_string(first.comm) + " (" + to_string(first.scheme) +
                                  "): exposed CP communication"));
  CHECK(has(r.cp_comm_reason, "% step time"));  // format_error_pct: "+1.23%"
  // A method that cannot run the layout says why: CP 4 does not divide 6 query heads.
  Experiment six = e;
  six.model.heads = 6;
  six.model.hidden = 6 * 32;
  const auto alts = cp_comm_alternatives(six, *r.chosen, 4);
  const auto a2a = std::find_if(alts.begin(), alts.end(), [](const CpCommAlternative& a) { return a.comm == CpComm::alltoall; });
  REQUIRE(a2a != alts.end());
  CHECK(has(a2a->refused, "to divide the query heads per TP rank"));
  CHECK(has(cp_comm_reason(*r.chosen, alts, {CpComm::ring}), "alltoall cannot run this layout"));
  // hybrid is named with its group size: the default for CP 4 on 2-GPU nodes is 2.
  const auto hy = std::find_if(r.cp_comm_alternatives.begin(), r.cp_comm_alternatives.end(),
                               [](const CpCommAlternative& a) { return a.comm == CpComm::hybrid; });
  REQUIRE(hy != r.cp_comm_alternatives.end());
  CHECK(hy->a2a_size == 2);
  CHECK(has(r.cp_comm_reason, "hybrid (a2a size 2)"));
  // Without CP there is nothing to compare.
  e.mesh = Mesh{4, 1, 1, 1};
  CHECK(plan(e, {.gpus = 4, .top_k = 10, .fixed_layout = true}).cp_comm_alternatives.empty());
}

TEST_CASE("plan: a fixed layout that cannot run, does not fit, or has another GPU count") {
  Experiment e = test::tiny_experiment();
  // kv_heads 2 cannot split over TP 4: no option makes it valid.
  e.mesh = Mesh{1, 4, 1, 1};
  e.mesh_line = 5;
  PlanResult r = plan(e, {.gpus = 4, .top_k = 3, .fixed_layout = true});
  CHECK(r.candidates.empty());
  CHECK(r.evaluated == 0);
  CHECK(has(describe_no_fit(e, r), "mesh fixed by tiny.yaml:5"));
  CHECK(has(describe_no_fit(e, r), "cannot run"));
  CHECK_FALSE(has(describe_no_fit(e, r), "#"));

  // A fixed interleave with PP = 1 is judged, not silently dropped.
  Experiment v = test::tiny_experiment();
  v.mesh = Mesh{4, 1, 1, 1};
  v.options.interleave = 2;
  v.fixed_options.interleave = true;
  r = plan(v, {.gpus = 4, .top_k = 3, .fixed_layout = true});
  CHECK(r.candidates.empty());
  CHECK(r.evaluated == 0);

  // Too little memory: evaluated, nothing fits.
  Experiment small = test::tiny_experiment();
  small.mesh = Mesh{1, 1, 4, 1};
  small.cluster.memory_bytes = 1.0 * units::mib_bytes;
  small.cluster.memory_reserved_bytes = 0;
  r = plan(small, {.gpus = 4, .top_k = 3, .fixed_layout = true});
  CHECK(r.candidates.empty());
  CHECK(r.evaluated > 0);
  CHECK(has(describe_no_fit(small, r), "does not fit in memory"));

  // --gpus other than the mesh's world size: bad input naming the mesh.
  Experiment g = test::tiny_experiment();
  g.mesh = Mesh{1, 1, 4, 1};
  g.mesh_line = 9;
  try {
    (void)plan(g, {.gpus = 8, .top_k = 3, .fixed_layout = true});
    FAIL("expected bad input");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(has(err.what(), "tiny.yaml:9"));
  }
}

TEST_CASE("experiment YAML: mesh and options lines and the option keys given are recorded") {
  const Experiment e = load_experiment(std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/cpu_small_cp4.yaml");
  REQUIRE(e.mesh);
  CHECK(e.mesh_line > 0);
  CHECK(e.options_line > e.mesh_line);
  CHECK(e.fixed_options.micro_batch);
  CHECK(e.fixed_options.cp_scheme);
  CHECK(e.fixed_options.attention);
  CHECK_FALSE(e.fixed_options.zero_stage);
  CHECK_FALSE(e.fixed_options.cp_comm);
  const Experiment free = load_experiment(std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/cpu_small.yaml");
  CHECK_FALSE(free.mesh);
  CHECK(free.mesh_line == 0);
  CHECK_FALSE(free.fixed_options.any());
}

TEST_CASE("plan: cp_comm hybrid is searched once per group size, each a layout of its own") {
  Experiment e = test::tiny_experiment();  // 8 heads, 2 KV heads, 2-GPU nodes
  e.mesh = Mesh{1, 1, 8, 1};
  e.search.cp_comm = {CpComm::hybrid};
  const PlanResult r = plan(e, {.gpus = 8, .top_k = 1000, .fixed_layout = true});
  REQUIRE(!r.candidates.empty());
  // The proper divisors of CP 8: 2 and 4 (1 is the ring, 8 the all-to-all).
  std::set<int64_t> sizes;
  for (const auto& p : r.candidates) {
    CHECK(p.options.cp_comm == CpComm::hybrid);
    sizes.insert(p.options.cp_a2a_size);
  }
  CHECK(sizes == std::set<int64_t>{2, 4});
  // An explicit list: only the sizes that divide CP.
  e.search.cp_a2a_size = {4, 3};
  const PlanResult only4 = plan(e, {.gpus = 8, .top_k = 1000, .fixed_layout = true});
  REQUIRE(!only4.candidates.empty());
  for (const auto& p : only4.candidates) CHECK(p.options.cp_a2a_size == 4);
  CHECK(only4.enumerated * 2 == r.enumerated);
  // Fixed by the options: that size, 0 resolved to the default (2: TP 1 x 2 fills a 2-GPU node).
  e.search.cp_a2a_size.clear();
  e.options.cp_comm = CpComm::hybrid;
  e.fixed_options.cp_comm = true;
  e.fixed_options.cp_a2a_size = true;
  e.options.cp_a2a_size = 0;
  const PlanResult fixed = plan(e, {.gpus = 8, .top_k = 1000, .fixed_layout = true});
  REQUIRE(fixed.chosen);
  CHECK(fixed.chosen->options.cp_a2a_size == 2);
}
