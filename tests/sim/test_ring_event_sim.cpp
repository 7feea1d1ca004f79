// The discrete-event ring replay (sim/ring_event_sim.hpp) against the closed forms of
// sim/ring_model.hpp: equal on balanced, uniform cases; per-rank detail where they differ.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

#include "sim/ring_event_sim.hpp"
#include "sim/ring_model.hpp"
#include "test_helpers.hpp"

using namespace ringplan;
using namespace ringplan::sim;
using doctest::Approx;

namespace {
ClusterConfig no_latency_cluster() {
  ClusterConfig c = test::a100_cluster();
  c.intra_node.latency_s = 0;
  c.inter_node.latency_s = 0;
  return c;
}
RingAttentionShape llama_heads(int64_t tokens_per_rank, int64_t cp, CpScheme scheme) {
  RingAttentionShape s;
  s.micro_batch = 1;
  s.heads_per_tp = 32;
  s.kv_heads_per_tp = 8;
  s.head_dim = 128;
  s.cp = cp;
  s.seq_len = tokens_per_rank * cp;
  s.scheme = scheme;
  s.causal = true;
  return s;
}
}  // namespace

TEST_CASE("balanced ring (zigzag), transfers hidden: replay == closed form") {
  const ClusterConfig c = test::a100_cluster();
  const RingAttentionShape s = llama_heads(8192, 8, CpScheme::zigzag);
  const RingLayerPrediction closed = predict_ring_attention(s, c);
  REQUIRE(closed.forward.exposed_comm_s == 0.0);
  const RingSimulation sim = simulate_ring(s, c);
  CHECK(sim.forward_s == Approx(closed.forward.total_s).epsilon(1e-12));
  CHECK(sim.backward_s == Approx(closed.backward.total_s).epsilon(1e-12));
  CHECK(sim.forward_busy_max_s == Approx(closed.forward.max_rank_compute_s).epsilon(1e-12));
  CHECK(sim.forward_busy_mean_s == Approx(sim.forward_busy_max_s).epsilon(1e-12));  // balanced
  // the only wait is the last dK,dV hop home
  CHECK(sim.forward_wait_s == Approx(0.0));
  CHECK(sim.backward_wait_s == Approx(closed.backward.unhidden_comm_s).epsilon(1e-9));
}

TEST_CASE("balanced ring over InfiniBand, transfers exposed: replay == closed form") {
  const ClusterConfig c = no_latency_cluster();
  RingAttentionShape s = llama_heads(1024, 4, CpScheme::zigzag);
  s.tp = 4;  // TP 4 x CP 4 > 8 GPUs per node
  const RingLayerPrediction closed = predict_ring_attention(s, c);
  REQUIRE(closed.inter_node);
  REQUIRE(closed.forward.step_comm_s > closed.forward.step_compute_s);
  const RingSimulation sim = simulate_ring(s, c);
  // step k+1 starts max(compute, transfer) after step k: (P-1) transfers + the last step
  CHECK(sim.forward_s == Approx(closed.forward.total_s).epsilon(1e-12));
  CHECK(sim.forward_s == Approx(3 * closed.forward.step_comm_s + closed.forward.step_compute_s).epsilon(1e-12));
  CHECK(sim.forward_wait_s > 0.0);
}

TEST_CASE("contiguous: per-rank busy time grows with the rank, the slowest rank sets the time") {
  const ClusterConfig c = test::a100_cluster();
  const RingAttentionShape s = llama_heads(8192, 8, CpScheme::contiguous);
  const RingLayerPrediction closed = predict_ring_attention(s, c);
  const RingSimulation sim = simulate_ring(s, c);
  REQUIRE(sim.ranks.size() == 8);
  for (size_t r = 1; r < 8; ++r) CHECK(sim.ranks[r].forward_busy_s > sim.ranks[r - 1].forward_busy_s);
  CHECK(sim.forward_busy_max_s == Approx(closed.forward.max_rank_compute_s).epsilon(1e-12));
  CHECK(sim.forward_busy_mean_s == Approx(closed.forward.mean_rank_compute_s).epsilon(1e-12));
  CHECK(sim.backward_busy_max_s == Approx(closed.backward.max_rank_compute_s).epsilon(1e-12));
  CHECK(sim.forward_s == Approx(closed.forward.total_s).epsilon(1e-12));
  // rank 0 computes only its own diagonal block but still relays every block: it idles
  CHECK(sim.ranks[0].forward_busy_s < 0.2 * sim.forward_s);
  CHECK(sim.ranks[0].forward_finish_s > sim.ranks[0].forward_busy_s);
  CHECK(sim.forward_busy_max_s / sim.forward_busy_mean_s > 1.8);
}

TEST_CASE("striped: near balance, every rank merges P-1 blocks") {
  const ClusterConfig c = test::a100_cluster();
  const RingSimulation sim = simulate_ring(llama_heads(8192, 4, CpScheme::striped), c);
  CHECK(sim.forward_busy_max_s / sim.forward_busy_mean_s == Approx(1.0).epsilon(1e-3));
  CHECK(sim.forward_busy_max_s > sim.forward_busy_mean_s);  // rank P-1 sees one extra diagonal per step
}

TEST_CASE("one rank: no transfers, the single-device kernel") {
  const ClusterConfig c = test::a100_cluster();
  const RingAttentionShape s = llama_heads(8192, 1, CpScheme::zigzag);
  const RingSimulation sim = simulate_ring(s, c, true);
  const RingLayerPrediction closed = predict_ring_attention(s, c);
  CHECK(sim.forward_s == Approx(closed.forward.total_s));
  CHECK(sim.backward_s == Approx(closed.backward.total_s));
  CHECK(sim.events.size() == 2);  // one forward and one backward kernel
}

TEST_CASE("Chrome trace: one complete event per kernel, merge and transfer") {
  const ClusterConfig c = test::a100_cluster();
  const RingSimulation sim = simulate_ring(llama_heads(4096, 4, CpScheme::zigzag), c, true);
  // forward: 16 kernels, 12 merges, 12 K,V sends; backward: 16 kernels, 12 merges,
  // 12 K,V sends, 16 dK,dV sends (the last 4 take them home)
  CHECK(sim.events.size() == 16 + 12 + 12 + 16 + 12 + 12 + 16);
  const nlohmann::json trace = nlohmann::json::parse(ring_trace_json(sim));
  REQUIRE(trace.contains("traceEvents"));
  size_t complete = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "X") {
      ++complete;
      CHECK(e["dur"].get<double>() > 0);
    }
  }
  CHECK(complete == sim.events.size());
}

TEST_CASE("the replay validates its shape like the closed form") {
  RingAttentionShape s = llama_heads(1000, 3, CpScheme::zigzag);
  s.seq_len = 3001;
  CHECK_THROWS_AS(simulate_ring(s, test::a100_cluster()), Error);
}

TEST_CASE("materialised contiguous: skipped blocks, replay busy times == closed form, own backward rate") {
  ClusterConfig c = test::a100_cluster();
  c.attention_backward = {0.3, 0.0};
  RingAttentionShape s = llama_heads(2048, 4, CpScheme::contiguous);
  s.attention = AttentionImpl::materialized;
  const RingLayerPrediction closed = predict_ring_attention(s, c);
  const RingSimulation sim = simulate_ring(s, c);
  REQUIRE(sim.ranks.size() == 4);
  // rank r computes r+1 full blocks and merges r of them
  const double kern = closed.forward.first_step_compute_s, merge = closed.forward.merge_step_s;
  for (size_t r = 0; r < 4; ++r)
    CHECK(sim.ranks[r].forward_busy_s == Approx((r + 1) * kern + r * merge).epsilon(1e-12));
  CHECK(sim.forward_busy_max_s == Approx(closed.forward.max_rank_compute_s).epsilon(1e-12));
  CHECK(sim.forward_busy_mean_s == Approx(closed.forward.mean_rank_compute_s).epsilon(1e-12));
  CHECK(sim.backward_busy_max_s == Approx(closed.backward.max_rank_compute_s).epsilon(1e-12));
  s.attention = AttentionImpl::flash;  // flash: the backward runs at attention_backward
  const RingLayerPrediction fl = predict_ring_attention(s, c);
  const RingSimulation fsim = simulate_ring(s, c);
  CHECK(fl.backward_kernel_efficiency == Approx(0.3));
  CHECK(fsim.backward_busy_max_s == Approx(fl.backward.max_rank_compute_s).epsilon(1e-12));
}

TEST_CASE("two ranks, latency-bound link: the replay pipelines back-to-back messages and agrees with the closed form") {
  ClusterConfig c = test::a100_cluster();
  c.intra_node.latency_s = 2e-3;  // a loaded host's ping-pong
  for (CpScheme scheme : {CpScheme::zigzag, CpScheme::contiguous}) {
    const RingAttentionShape s = llama_heads(64, 2, scheme);
    const RingLayerPrediction closed = predict_ring_attention(s, c);
    REQUIRE(closed.forward.step_comm_s > closed.forward.step_compute_s);
    const RingSimulation sim = simulate_ring(s, c);
    INFO("scheme " << to_string(scheme));
    // The backward's K,V and dK,dV messages share the link: the replay charges their bandwidth
    // one after the other and their latencies side by side (a link carries back-to-back
    // messages); the closed form overlaps them whole. The two differ by one message's
    // bandwidth time, well under 0.1 % here; charging each latency in turn made the replay 42 %
    // slower than the closed form in this regime (and `run --trace`'s predicted ring with it).
    CHECK(sim.forward_s == Approx(closed.forward.total_s).epsilon(1e-9));
    CHECK(sim.backward_s == Approx(closed.backward.total_s).epsilon(1e-3));
  }
}
