// Mesh enumeration and candidate counts, checked against counts computed by hand.
#include <doctest/doctest.h>

#include <limits>
#include <set>
#include <string>
#include <tuple>

#include "core/error.hpp"
#include "planner/planner.hpp"
#include "tests/fixtures/experiments.hpp"

using namespace ringplan;
using namespace ringplan::planner;

TEST_CASE("enumerate_meshes: every ordered factorisation of the GPU count, once") {
  // Ordered 4-factorisations of p^k number C(k+3, 3): 8 = 2^3 -> C(6,3) = 20;
  // 12 = 2^2 * 3 -> C(5,3) * C(4,3) = 10 * 4 = 40; 1 -> only (1,1,1,1).
  CHECK(enumerate_meshes(1).size() == 1);
  CHECK(enumerate_meshes(8).size() == 20);
  CHECK(enumerate_meshes(12).size() == 40);
  CHECK(enumerate_meshes(16384).size() == 680);  // 2^14: C(17,3)
  CHECK(enumerate_meshes(0).empty());
  std::set<std::tuple<int64_t, int64_t, int64_t, int64_t>> seen;
  for (const Mesh& m : enumerate_meshes(12)) {
    CHECK(m.world_size() == 12);
    CHECK(seen.insert({m.dp, m.tp, m.cp, m.pp}).second);
  }
}

TEST_CASE("enumerate_meshes and plan: GPU counts up to kMaxGpus, refused beyond (never a d*d overflow)") {
  // 2^20 = kMaxGpus: C(23, 3) ordered factorisations. The divisor loop bound is d <= n / d;
  // with d * d <= n a count near INT64_MAX overflowed and looped forever.
  CHECK(enumerate_meshes(kMaxGpus).size() == 1771);
  CHECK(enumerate_meshes(720720).size() == 89600);  // 2^4 3^2 5 7 11 13: 35 * 10 * 4^4
  CHECK_THROWS_AS(enumerate_meshes(kMaxGpus + 1), Error);
  CHECK_THROWS_AS(enumerate_meshes(std::numeric_limits<int64_t>::max()), Error);
  const Experiment e = test::tiny_experiment();
  for (int64_t gpus : {kMaxGpus + 1, int64_t{963761198400}, std::numeric_limits<int64_t>::max(), int64_t{-8}}) {
    PlanSettings s;
    s.gpus = gpus;
    try {
      plan(e, s);
      FAIL("plan accepted " << gpus << " GPUs");
    } catch (const Error& err) {
      CHECK(err.kind() == ErrorKind::bad_input);
      CHECK(std::string(err.what()).find("1 .. 1048576") != std::string::npos);
    }
  }
  // A cluster built in code whose gpus_per_node x nodes would overflow is refused, not wrapped.
  Experiment big = test::tiny_experiment();
  big.gpus.reset();
  big.cluster.gpus_per_node = 4355693533221597513;
  big.cluster.nodes = 2532977338045449188;
  CHECK_THROWS_AS(plan(big, PlanSettings{}), Error);
}

TEST_CASE("resolve_search_space: empty lists become the documented defaults") {
  Experiment e = test::tiny_experiment();
  ResolvedSearchSpace s = resolve_search_space(e);
  CHECK(s.micro_batch_is_default);
  CHECK(s.micro_batch == std::vector<int64_t>{1, 2, 4, 8});
  CHECK(s.recompute.size() == 3);
  CHECK(s.zero_stage == std::vector<int>{0, 1, 2, 3});
  CHECK(s.sequence_parallel.size() == 2);
  CHECK(s.cp_scheme.size() == 3);
  CHECK(s.interleave == std::vector<int64_t>{1, 2, 4});
  CHECK(s.attention.size() == 2);
  CHECK(s.max_tp == 0);
  e.search.micro_batch = {3};
  e.search.max_tp = 2;
  s = resolve_search_space(e);
  CHECK_FALSE(s.micro_batch_is_default);
  CHECK(s.micro_batch == std::vector<int64_t>{3});
  CHECK(s.max_tp == 2);
}

namespace {
// The tiny experiment (4 GPUs, 2 per node) with the short option lists of the hand counts below.
Experiment hand_count_experiment() {
  Experiment e = test::tiny_experiment();
  e.search.micro_batch = {1};
  e.search.recompute = {Recompute::none, Recompute::full};
  e.search.zero_stage = {0, 1};
  e.search.sequence_parallel = {false, true};
  e.search.cp_scheme = {CpScheme::contiguous, CpScheme::zigzag};
  e.search.interleave = {1, 2};
  e.search.attention = {AttentionImpl::flash};
  e.search.cp_comm = {CpComm::ring};
  return e;
}
}  // namespace

TEST_CASE("plan: enumerated count on 4 GPUs matches the hand count") {
  // 10 meshes of 4 GPUs. Options: mb [1], recompute [none, full], zero [0, 1], attention
  // [flash] -> 4 per layout; SP [off, on] only with TP > 1, schemes [contiguous, zigzag] only
  // with CP > 1, interleave [1, 2] only with PP > 1: each doubles the count where it applies.
  // One dimension = 4: dp -> 1, tp/cp/pp -> 2 each: 7. Two dimensions = 2: with dp (3 pairs)
  // -> 2 each, without dp (3 pairs) -> 4 each: 18. Total 25 layouts x 4 = 100.
  Experiment e = hand_count_experiment();
  e.search.dp_replicate = {1};  // hybrid sharding's replica counts: counted in the test below
  PlanResult r = plan(e, {.gpus = 4, .top_k = 1000});
  CHECK(r.enumerated == 100);
  PlanResult ex = plan(e, {.gpus = 4, .top_k = 1000, .exhaustive = true});
  CHECK(ex.enumerated == 100);
  // cp_comm [ring, allgather] doubles the layouts with CP > 1: cp=4 (2 schemes), dp2 x cp2 (2),
  // tp2 x cp2 (2 SP x 2 schemes = 4), cp2 x pp2 (2 schemes x 2 interleaves = 4): 12 layouts x 4
  // = 48 more, 148.
  e.search.cp_comm = {CpComm::ring, CpComm::allgather};
  CHECK(plan(e, {.gpus = 4, .top_k = 1000}).enumerated == 148);
  CHECK(plan(e, {.gpus = 4, .top_k = 1000, .exhaustive = true}).enumerated == 148);
  // With attention [flash, materialized], allgather is tried with flash only: ring 2 x 100 = 200,
  // allgather still 48: 248.
  e.search.attention = {AttentionImpl::flash, AttentionImpl::materialized};
  CHECK(plan(e, {.gpus = 4, .top_k = 1000}).enumerated == 248);
}

TEST_CASE("plan: hybrid sharding adds the replica count whose shard group fills a node, with ZeRO >= 1") {
  // The hand count above (100) on the tiny cluster (2 GPUs per node). A shard group of
  // (DP / R) x CP x TP = 2 ranks with R > 1 exists for dp4 (R 2, shards of 2 DP ranks), dp2 x tp2
  // and dp2 x cp2 (R 2, shards of one rank): each of their layouts gets one more ZeRO-1 candidate
  // (mb 1 x recompute 2 = 2 per layout): dp4 1 layout, dp2 x tp2 2 (SP), dp2 x cp2 2 (schemes):
  // 5 layouts x 2 = 10 more, 110. dp2 x pp2 shards over both ranks of a node already (R 1).
  Experiment e = hand_count_experiment();
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1000});
  CHECK(r.enumerated == 110);
  CHECK(plan(e, {.gpus = 4, .top_k = 1000, .exhaustive = true}).enumerated == 110);
  int64_t hybrid = 0;
  for (const auto& p : r.candidates) {
    if (p.options.dp_replicate == 1) continue;
    ++hybrid;
    CHECK(p.options.dp_replicate == 2);
    CHECK(p.options.zero_stage >= 1);
    CHECK(p.mesh.dp * p.mesh.cp * p.mesh.tp / p.options.dp_replicate == 2);  // one node per shard group
  }
  CHECK(hybrid > 0);
  // An explicit list: values that divide DP; a mesh that none divides keeps 1.
  e.search.dp_replicate = {4};
  const PlanResult only4 = plan(e, {.gpus = 4, .top_k = 1000});
  for (const auto& p : only4.candidates) {
    if (p.options.zero_stage == 0 || p.mesh.dp < 4) CHECK(p.options.dp_replicate == 1);
    else CHECK(p.options.dp_replicate == 4);
  }
  // Fixed by options: ZeRO-0 with 2 replicas is a rejected layout, named.
  e.search.dp_replicate.clear();
  e.options.dp_replicate = 2;
  e.fixed_options.dp_replicate = true;
  const PlanResult fixed = plan(e, {.gpus = 4, .top_k = 1000, .fixed_layout = true});
  bool named = false;
  for (const auto& x : fixed.rejected) named = named || x.example.find("needs zero_stage >= 1") != std::string::npos;
  CHECK(named);
  for (const auto& p : fixed.candidates) CHECK(p.options.dp_replicate == 2);
}

TEST_CASE("plan: default micro-batch set keeps only sizes that divide the per-replica batch") {
  // Global batch 8: dp=1 -> {1,2,4,8} (6 meshes), dp=2 -> {1,2,4} (3 meshes), dp=4 -> {1,2}
  // (1 mesh): 24 + 9 + 2 = 35 with every other option fixed to one value.
  Experiment e = test::tiny_experiment();
  e.search.recompute = {Recompute::none};
  e.search.zero_stage = {0};
  e.search.sequence_parallel = {false};
  e.search.cp_scheme = {CpScheme::zigzag};
  e.search.interleave = {1};
  e.search.attention = {AttentionImpl::flash};
  e.search.cp_comm = {CpComm::ring};
  PlanResult r = plan(e, {.gpus = 4, .top_k = 100});
  CHECK(r.enumerated == 35);
  for (const auto& p : r.candidates) CHECK((8 / p.mesh.dp) % p.options.micro_batch == 0);
}
