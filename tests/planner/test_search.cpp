// Search correctness: pruning changes nothing, every candidate is valid and fits, the ranking
// is the brute-force ranking, rejections are grouped with examples, nothing-fits is explained.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.hpp"
#include "core/format.hpp"
#include "planner/planner.hpp"
#include "tests/fixtures/experiments.hpp"

using namespace ringplan;
using namespace ringplan::planner;

namespace {

// Independent brute force: every mesh x every option value, check_layout + predict, fitting
// ones sorted by the ranking order. Written without the planner's loops on purpose.
// The hybrid group sizes a layout is tried with: every divisor 1 < A < CP (the planner's
// default); one value (the experiment's) for every other method.
std::vector<int64_t> hybrid_sizes(const Mesh& m, CpComm cc, int64_t fixed) {
  if (cc != CpComm::hybrid || m.cp <= 1) return {fixed};
  std::vector<int64_t> out;
  for (int64_t a = 2; a < m.cp; ++a)
    if (m.cp % a == 0) out.push_back(a);
  return out;
}

// Hybrid-sharding replica counts of a mesh, written out independently of the planner: every R
// that divides DP and leaves a shard group of exactly 1, 2, 4 or 8 nodes ((DP / R) x CP x TP =
// k x GPUs per node), R > 1, beside R = 1; an explicit search list keeps its values that divide DP.
std::vector<int64_t> replica_counts(const Experiment& e, const Mesh& m, int zero) {
  if (zero == 0) return {1};
  std::vector<int64_t> out;
  if (!e.search.dp_replicate.empty()) {
    for (int64_t r : e.search.dp_replicate)
      if (m.dp % r == 0) out.push_back(r);
    if (out.empty()) out.push_back(1);
    return out;
  }
  out.push_back(1);
  for (int64_t r = 2; r <= m.dp; ++r) {
    if (m.dp % r != 0) continue;
    const int64_t span = (m.dp / r) * m.cp * m.tp;  // GPUs of one shard group
    for (int64_t k : {1, 2, 4, 8})
      if (span == k * e.cluster.gpus_per_node) out.push_back(r);
  }
  return out;
}

std::vector<sim::Prediction> brute_force(const Experiment& e, int64_t gpus) {
  const ResolvedSearchSpace s = resolve_search_space(e);
  std::vector<sim::Prediction> all;
  for (const Mesh& m : enumerate_meshes(gpus)) {
    for (int64_t mb : s.micro_batch)
      for (Recompute rc : s.recompute)
        for (int z : s.zero_stage)
         for (int64_t rep : replica_counts(e, m, z))
          for (bool sp : s.sequence_parallel)
            for (CpScheme cs : s.cp_scheme)
              for (int64_t v : s.interleave)
                for (AttentionImpl a : s.attention)
                 for (CpComm cc : s.cp_comm)
                 for (int64_t a2a : hybrid_sizes(m, cc, e.options.cp_a2a_size)) {
                  // Options without effect are tried once, with their "off" value.
                  if (m.tp == 1 && sp) continue;
                  if (m.cp == 1 && cs != s.cp_scheme.front()) continue;
                  if (m.cp == 1 && cc != s.cp_comm.front()) continue;
                  // Not a combination: all-gather CP has no materialised kernel.
                  if (m.cp > 1 && cc == CpComm::allgather && a != AttentionImpl::flash) continue;
                  if (m.pp == 1 && v != 1) continue;
                  ParallelOptions o = e.options;
                  o.micro_batch = mb;
                  o.recompute = rc;
                  o.zero_stage = z;
                  o.sequence_parallel = sp;
                  o.cp_scheme = m.cp == 1 ? e.options.cp_scheme : cs;
                  o.interleave = v;
                  o.attention = a;
                  o.cp_comm = m.cp == 1 ? e.options.cp_comm : cc;
                  o.cp_a2a_size = a2a;
                  o.dp_replicate = rep;
                  if (!sim::check_layout(e, m, o, gpus).empty()) continue;
                  sim::Prediction p = sim::predict(e, m, o);
                  if (p.fits) all.push_back(p);
                }
  }
  std::sort(all.begin(), all.end(), ranks_before);
  return all;
}

// Capacity at the median peak memory of all layouts that fit unconstrained, so that about
// half of them run out of memory whatever the cost model's exact numbers.
double median_capacity_bytes(const Experiment& e, int64_t gpus) {
  const PlanResult all = plan(e, {.gpus = gpus, .top_k = 1000000});
  std::vector<double> peaks;
  for (const auto& p : all.candidates) peaks.push_back(p.peak_memory_bytes);
  REQUIRE(peaks.size() > 4);
  std::sort(peaks.begin(), peaks.end());
  return peaks[peaks.size() / 2];
}

Experiment searchable() {
  Experiment e = test::tiny_experiment();
  e.search.micro_batch = {1, 2};  // explicit: brute_force() uses the same list
  e.search.interleave = {1, 2};
  return e;
}

void check_same(const PlanResult& a, const PlanResult& b) {
  CHECK(a.enumerated == b.enumerated);
  CHECK(a.evaluated == b.evaluated);
  CHECK(a.fitting == b.fitting);
  REQUIRE(a.candidates.size() == b.candidates.size());
  for (size_t i = 0; i < a.candidates.size(); ++i) {
    CHECK(a.candidates[i].mesh == b.candidates[i].mesh);
    CHECK(a.candidates[i].options == b.candidates[i].options);
  }
  // Pruned and exhaustive group the same candidates under the same categories.
  int64_t total_a = 0, total_b = 0;
  for (const auto& r : a.rejected) total_a += r.count;
  for (const auto& r : b.rejected) total_b += r.count;
  CHECK(total_a == total_b);
}

}  // namespace

TEST_CASE("plan: pruned search equals exhaustive search") {
  Experiment e = searchable();
  check_same(plan(e, {.gpus = 4, .top_k = 100000}), plan(e, {.gpus = 4, .top_k = 100000, .exhaustive = true}));
  e.cluster.memory_bytes = median_capacity_bytes(e, 8);  // tighter: some layouts run out of memory
  check_same(plan(e, {.gpus = 4, .top_k = 100000}), plan(e, {.gpus = 4, .top_k = 100000, .exhaustive = true}));
  check_same(plan(e, {.gpus = 8, .top_k = 100000}), plan(e, {.gpus = 8, .top_k = 100000, .exhaustive = true}));
}

TEST_CASE("plan: ranking equals the brute-force ranking, every candidate valid and fitting") {
  Experiment e = searchable();
  const PlanResult r = plan(e, {.gpus = 8, .top_k = 100000});
  const std::vector<sim::Prediction> expected = brute_force(e, 8);
  REQUIRE(!expected.empty());
  REQUIRE(r.candidates.size() == expected.size());
  CHECK(r.fitting == static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& p = r.candidates[i];
    CHECK(p.mesh == expected[i].mesh);
    CHECK(p.options == expected[i].options);
    CHECK(p.fits);
    CHECK(p.peak_memory_bytes <= p.capacity_bytes);
    CHECK(p.mesh.world_size() == 8);
    CHECK(sim::check_layout(e, p.mesh, p.options, 8).empty());
    if (i > 0) CHECK_FALSE(ranks_before(p, r.candidates[i - 1]));
    if (i > 0) CHECK(r.candidates[i - 1].step_time_s <= p.step_time_s);
  }
}

TEST_CASE("plan: top-K keeps the K best in order") {
  Experiment e = searchable();
  const PlanResult all = plan(e, {.gpus = 8, .top_k = 100000});
  const PlanResult top3 = plan(e, {.gpus = 8, .top_k = 3});
  REQUIRE(all.candidates.size() > 3);
  REQUIRE(top3.candidates.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(top3.candidates[i].mesh == all.candidates[i].mesh);
    CHECK(top3.candidates[i].options == all.candidates[i].options);
  }
  CHECK(top3.fitting == all.fitting);
}

TEST_CASE("plan: ties on step time go to less memory") {
  sim::Prediction a, b;
  a.step_time_s = b.step_time_s = 1.0;
  a.peak_memory_bytes = 10;
  b.peak_memory_bytes = 20;
  CHECK(ranks_before(a, b));
  CHECK_FALSE(ranks_before(b, a));
  b.step_time_s = 0.5;
  CHECK(ranks_before(b, a));
  CHECK_FALSE(ranks_before(a, a));  // strict weak order
}

TEST_CASE("plan: rejections are grouped by category with one example each") {
  Experiment e = searchable();
  e.cluster.memory_bytes = median_capacity_bytes(e, 8);
  const PlanResult r = plan(e, {.gpus = 8, .top_k = 10});
  REQUIRE(!r.rejected.empty());
  int64_t rejected = 0;
  bool has_oom = false;
  for (const auto& x : r.rejected) {
    CHECK(x.count > 0);
    CHECK(!x.example.empty());
    CHECK(x.reason == (x.reason == "out of memory" ? x.reason : rejection_category(x.example)));
    rejected += x.count;
    if (x.reason == "out of memory") {
      has_oom = true;
      CHECK(x.example.rfind("out of memory: ", 0) == 0);
      CHECK(x.example.find(std::string(" > ").append(format::format_bytes(e.cluster.memory_bytes))) != std::string::npos);
    }
  }
  CHECK(has_oom);
  CHECK(rejected == r.enumerated - r.fitting);
  // Categories are distinct and sorted by count, largest first.
  for (size_t i = 1; i < r.rejected.size(); ++i) {
    CHECK(r.rejected[i - 1].count >= r.rejected[i].count);
    for (size_t j = 0; j < i; ++j) CHECK(r.rejected[i].reason != r.rejected[j].reason);
  }
}

TEST_CASE("plan: cp_comm ring and allgather are both searched where CP > 1, and only there") {
  Experiment e = searchable();
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1000000});
  bool ring = false, allgather = false;
  for (const auto& p : r.candidates) {
    if (p.mesh.cp == 1) {
      CHECK(p.options.cp_comm == e.options.cp_comm);  // no effect at CP = 1: tried once
      continue;
    }
    ring = ring || p.options.cp_comm == CpComm::ring;
    allgather = allgather || p.options.cp_comm == CpComm::allgather;
    // The impossible pair is never enumerated (check_layout refuses it when a user fixes it).
    CHECK_FALSE((p.options.cp_comm == CpComm::allgather && p.options.attention == AttentionImpl::materialized));
  }
  CHECK(ring);
  CHECK(allgather);
  for (const auto& x : r.rejected) CHECK(x.reason.find("cp_comm") == std::string::npos);
  // A search list restricts it, like every other option.
  e.search.cp_comm = {CpComm::allgather};
  for (const auto& p : plan(e, {.gpus = 4, .top_k = 1000000}).candidates)
    if (p.mesh.cp > 1) CHECK(p.options.cp_comm == CpComm::allgather);
}

TEST_CASE("plan: a TP group larger than a node is planned and ranked like any other, max_tp caps it") {
  Experiment e = searchable();  // 2 GPUs per node
  e.model.kv_heads = e.model.heads;  // 8 KV heads: TP 4 and 8 split the model
  const PlanResult r = plan(e, {.gpus = 8, .top_k = 100000});
  bool wider_than_node = false;
  for (const auto& p : r.candidates)
    if (p.mesh.tp > e.cluster.gpus_per_node) {
      wider_than_node = true;
      // Its TP collectives run on the inter-node link, so it predicts more TP time than the
      // same layout would inside one (hypothetically larger) node.
      Experiment big_node = e;
      big_node.cluster.gpus_per_node = p.mesh.world_size();
      CHECK(p.time.tp_comm_s > sim::predict(big_node, p.mesh, p.options).time.tp_comm_s);
    }
  CHECK(wider_than_node);
  for (const auto& x : r.rejected) CHECK(x.example.find("per node") == std::string::npos);
  // The ranking is still the brute-force one (every valid candidate, sorted).
  CHECK(r.candidates.size() == brute_force(e, 8).size());

  e.search.max_tp = e.cluster.gpus_per_node;  // the user's cap keeps TP inside a node
  for (const auto& p : plan(e, {.gpus = 8, .top_k = 100000}).candidates)
    CHECK(p.mesh.tp <= e.cluster.gpus_per_node);
}

TEST_CASE("plan: search caps are reported as rejections") {
  Experiment e = searchable();
  e.search.max_tp = 1;
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1000});
  for (const auto& p : r.candidates) CHECK(p.mesh.tp == 1);
  bool cap = false;
  for (const auto& x : r.rejected)
    if (x.reason == "TP # > search cap max_tp #") cap = true;
  CHECK(cap);
}

TEST_CASE("plan: nothing fits gives an empty result and a clear message") {
  Experiment e = searchable();
  e.cluster.memory_bytes = 1.0 * units::mib_bytes;
  e.cluster.memory_reserved_bytes = 0;
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 10});
  CHECK(r.empty());
  CHECK(r.fitting == 0);
  CHECK(r.evaluated > 0);
  REQUIRE(r.closest_out_of_memory.has_value());
  const std::string msg = describe_no_fit(e, r);
  CHECK(msg.find("no layout of tiny_gqa fits on 4 GPUs") != std::string::npos);
  CHECK(msg.find("the smallest needs") != std::string::npos);
  // Sizes in the bytes format: the GPUs' 1 MiB, the smallest need above it.
  // Built with append(): GCC 12 reports a false -Wrestrict on `"literal" + std::string&&`.
  const std::string capacity = std::string("(").append(format::format_bytes(e.cluster.memory_bytes)).append(" each)");
  const std::string need =
      std::string("the smallest needs ").append(format::format_bytes(r.closest_out_of_memory->peak_memory_bytes));
  CHECK(msg.find(capacity) != std::string::npos);
  CHECK(msg.find(need) != std::string::npos);
}

TEST_CASE("plan: bad settings are bad input") {
  Experiment e = searchable();
  CHECK_THROWS_AS(plan(e, {.gpus = 4, .top_k = 0}), Error);
  CHECK_THROWS_AS(plan(e, {.gpus = -1, .top_k = 1}), Error);
  try {
    plan(e, {.gpus = 4, .top_k = -3});
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(std::string(err.what()).find("top-K must be > 0") != std::string::npos);
  }
}

TEST_CASE("plan: GPU count comes from settings, then experiment, then cluster") {
  Experiment e = searchable();
  CHECK(plan(e, {.top_k = 1}).gpus == 4);            // experiment gpus
  CHECK(plan(e, {.gpus = 2, .top_k = 1}).gpus == 2);  // settings
  e.gpus.reset();
  CHECK(plan(e, {.top_k = 1}).gpus == 4);  // cluster: 2 per node x 2 nodes
}
