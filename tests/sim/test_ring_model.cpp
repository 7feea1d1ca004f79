// One attention layer as ring attention (sim/ring_model.hpp).
#include <doctest/doctest.h>

#include "core/documents.hpp"
#include "core/error.hpp"
#include "sim/cost_model.hpp"
#include "sim/ring_model.hpp"
#include "test_helpers.hpp"

using namespace ringplan;
using namespace ringplan::sim;
using doctest::Approx;

namespace {
// An ideal cluster: constant efficiency 1, no latency, so Liu et al.'s arithmetic is exact.
ClusterConfig ideal_cluster() {
  ClusterConfig c = test::a100_cluster();
  c.attention = {1.0, 0.0};
  c.matmul = {1.0, 0.0};
  c.intra_node = {300e9, 0.0};
  c.inter_node = {25e9, 0.0};
  return c;
}
RingAttentionShape one_head(int64_t tokens_per_rank, int64_t cp) {
  RingAttentionShape s;
  s.micro_batch = 1;
  s.heads_per_tp = 1;
  s.kv_heads_per_tp = 1;
  s.head_dim = 128;
  s.cp = cp;
  s.seq_len = tokens_per_rank * cp;
  s.scheme = CpScheme::contiguous;
  s.causal = false;
  s.attention = AttentionImpl::flash;
  s.dtype = DType::bf16;
  return s;
}
}  // namespace

TEST_CASE("Liu et al. 2023: the ring hides its transfers when block size c >= F/B") {
  const ClusterConfig c = ideal_cluster();
  // F/B = 312e12 / 300e9 = 1040 tokens. Per step: 4*d*c^2 FLOPs vs 4*c*d bytes (K,V in bf16).
  SUBCASE("c = 2 F/B: fully overlapped") {
    const RingLayerPrediction r = predict_ring_attention(one_head(2080, 4), c);
    const double kernel = 4.0 * 128 * 2080.0 * 2080 / 312e12;
    CHECK(r.forward.first_step_compute_s == Approx(kernel));
    // later steps also fold the block's O into the fp32 accumulator: (8 + 2) bytes per element
    CHECK(r.forward.merge_step_s == Approx(10.0 * 2080 * 128 / (2039e9 * 0.8)));
    CHECK(r.forward.step_compute_s == Approx(kernel + r.forward.merge_step_s));
    CHECK(r.forward.step_comm_s == Approx(4.0 * 2080 * 128 / 300e9));
    CHECK(r.forward.exposed_comm_s == 0.0);
    CHECK(r.forward.total_s == Approx(kernel + 3 * r.forward.step_compute_s));
  }
  SUBCASE("c = F/B / 2: each of the P-1 transfers shows by comm - compute") {
    const RingLayerPrediction r = predict_ring_attention(one_head(520, 4), c);
    const double kernel = 4.0 * 128 * 520.0 * 520 / 312e12, comm = 4.0 * 520 * 128 / 300e9;
    CHECK(comm == Approx(2 * kernel));
    // the transfer during step 0 hides behind the kernel only, later ones behind kernel + merge
    CHECK(r.forward.exposed_comm_s ==
          Approx((comm - kernel) + 2 * (comm - kernel - r.forward.merge_step_s)));
    CHECK(r.forward.transfers == 3);
  }
  SUBCASE("same block over InfiniBand (25 GB/s) needs c >= 12480") {
    RingAttentionShape s = one_head(2080, 4);
    s.tp = 4;  // TP 4 x CP 4 = 16 > 8 GPUs per node: the ring crosses nodes
    const RingLayerPrediction r = predict_ring_attention(s, c);
    CHECK(r.inter_node);
    CHECK(r.forward.exposed_comm_s > 0.0);
    CHECK(predict_ring_attention(one_head(2 * 12480, 4), c).forward.exposed_comm_s == 0.0);
  }
}

TEST_CASE("backward: 2.5x forward compute, K,V + dK,dV (fp32) per step, last dK,dV hop exposed") {
  const ClusterConfig c = ideal_cluster();
  const RingLayerPrediction r = predict_ring_attention(one_head(8192, 4), c);
  CHECK(r.backward.first_step_compute_s == Approx(2.5 * r.forward.first_step_compute_s));
  CHECK(r.backward.step_compute_s == Approx(2.5 * r.forward.first_step_compute_s + r.backward.merge_step_s));
  // dQ (one head) and dK, dV (one KV head) accumulations: (8 + 2) bytes per element each
  CHECK(r.backward.merge_step_s == Approx(10.0 * 8192 * 128 * 3 / (2039e9 * 0.8)));
  CHECK(r.backward.step_bytes == 2.0 * 8192 * 128 * (2 + 4));
  CHECK(r.backward.unhidden_comm_s == Approx(2.0 * 8192 * 128 * 4 / 300e9));
  CHECK(r.backward.exposed_comm_s == Approx(r.backward.unhidden_comm_s));
}

TEST_CASE("per-rank busy time follows the scheme: contiguous slowest rank ~ (2 - 1/P) x mean") {
  const ClusterConfig c = ideal_cluster();
  RingAttentionShape s = one_head(4096, 8);
  s.causal = true;
  s.heads_per_tp = 8;
  s.kv_heads_per_tp = 2;
  const RingLayerPrediction contiguous = predict_ring_attention(s, c);
  CHECK(contiguous.imbalance == Approx(cp_imbalance(CpScheme::contiguous, s.seq_len, 8, true)));
  // kernel time (merges aside: the slowest rank merges 7 blocks, the mean rank 3.5)
  const double merge = contiguous.forward.merge_step_s;
  CHECK((contiguous.forward.max_rank_compute_s - 7 * merge) / (contiguous.forward.mean_rank_compute_s - 3.5 * merge) ==
        Approx(2.0 - 1.0 / 8).epsilon(1e-3));
  s.scheme = CpScheme::zigzag;
  const RingLayerPrediction zigzag = predict_ring_attention(s, c);
  CHECK(zigzag.imbalance == Approx(1.0));
  CHECK(zigzag.forward.total_s < contiguous.forward.total_s);
  // zigzag per step is half a full block, contiguous a full block on its slowest rank
  CHECK(zigzag.forward.step_compute_s - merge == Approx((contiguous.forward.step_compute_s - merge) / 2));
}

TEST_CASE("ring layer memory: materialised (L/CP)*L scores vs flash lse, ring double buffers") {
  RingAttentionShape s = one_head(4096, 4);
  s.heads_per_tp = 8;
  s.kv_heads_per_tp = 2;
  s.micro_batch = 2;
  const RingLayerPrediction r = predict_ring_attention(s, test::a100_cluster());
  CHECK(r.scores_bytes_materialized == 2.0 * 8 * 4096 * 16384 * 2);
  CHECK(r.scores_bytes_flash == 2.0 * 8 * 4096 * 4);
  CHECK(r.scores_bytes == r.scores_bytes_flash);
  const double block = 2.0 * 4096 * 2 * 128;
  // runtime/ring_attention.cpp: kv_buf_[2] (bf16 here) + dkv_recv_[2] + dkv_work_[2] (fp32)
  CHECK(r.ring_buffer_bytes == 2 * 2 * block * 2 + 4 * 2 * block * 4);
}

TEST_CASE("backward kernel at its own efficiency (efficiency.attention_backward), unset = attention") {
  ClusterConfig c = ideal_cluster();
  RingAttentionShape s = one_head(8192, 4);
  const RingLayerPrediction same = predict_ring_attention(s, c);
  const double block_flops = 4.0 * 128 * 8192.0 * 8192;
  CHECK(same.backward_kernel_efficiency == 1.0);
  CHECK(same.backward.first_step_compute_s == Approx(2.5 * block_flops / 312e12));
  c.attention_backward = {0.4, 0.0};
  const RingLayerPrediction own = predict_ring_attention(s, c);
  CHECK(own.backward_kernel_efficiency == Approx(0.4));
  CHECK(own.kernel_efficiency == 1.0);  // the forward is unchanged
  CHECK(own.forward.total_s == same.forward.total_s);
  CHECK(own.backward.first_step_compute_s == Approx(2.5 * block_flops / (312e12 * 0.4)));
  CHECK(own.backward.step_compute_s == Approx(2.5 * block_flops / (312e12 * 0.4) + own.backward.merge_step_s));
  CHECK(own.backward.max_rank_compute_s ==
        Approx(4 * 2.5 * block_flops / (312e12 * 0.4) + 3 * own.backward.merge_step_s));
  // the curve's x is the block's forward FLOPs: half of max at x = half_tflop
  c.attention_backward = {0.4, block_flops};
  CHECK(predict_ring_attention(s, c).backward_kernel_efficiency == Approx(0.2));
  // materialised backward is GEMMs: it keeps the forward GEMM rate unless matmul_backward is set
  s.attention = AttentionImpl::materialized;
  const RingLayerPrediction mat = predict_ring_attention(s, c);
  CHECK(mat.backward_kernel_efficiency == mat.kernel_efficiency);
  // Each materialised GEMM runs at the slower of its compute and its score traffic (roofline):
  // with matmul at 1.0 of peak these GEMMs are traffic-bound (about 0.67 of peak here).
  CHECK(mat.backward_kernel_efficiency < 1.0);
  // A backward curve below that bound sets the rate ...
  c.matmul_backward = {0.5 * mat.backward_kernel_efficiency, 0.0};
  const RingLayerPrediction matb = predict_ring_attention(s, c);
  CHECK(matb.kernel_efficiency == mat.kernel_efficiency);
  CHECK(matb.forward.total_s == mat.forward.total_s);
  CHECK(matb.backward_kernel_efficiency == Approx(0.5 * mat.backward_kernel_efficiency));
  CHECK(matb.backward.first_step_compute_s == Approx(2.0 * mat.backward.first_step_compute_s));
  // ... one above it does not beat the score traffic.
  c.matmul_backward = {0.5 * (1.0 + mat.backward_kernel_efficiency), 0.0};
  CHECK(predict_ring_attention(s, c).backward_kernel_efficiency == Approx(mat.backward_kernel_efficiency));
  // The forward runs on materialized_attention when the profile has it (a CPU's softmax-bound
  // kernel), and matmul (the linear layers' GEMMs) does not move it.
  c.materialized_attention = {0.5 * mat.kernel_efficiency, 0.0};
  const RingLayerPrediction matf = predict_ring_attention(s, c);
  CHECK(matf.kernel_efficiency == Approx(0.5 * mat.kernel_efficiency));
  c.matmul = {0.1, 0.0};
  CHECK(predict_ring_attention(s, c).kernel_efficiency == Approx(matf.kernel_efficiency));
}

TEST_CASE("materialised: hidden blocks skipped like flash, causal imbalance kept, scores memory full") {
  const ClusterConfig c = ideal_cluster();
  RingAttentionShape s = one_head(1024, 4);
  s.causal = true;
  s.attention = AttentionImpl::materialized;
  const RingLayerPrediction r = predict_ring_attention(s, c);
  // contiguous, P = 4: rank r computes r+1 full 1024^2 blocks (mean 2.5, slowest 4)
  const double block_flops = 4.0 * 128 * 1024.0 * 1024;
  CHECK(r.forward_flops_max_rank == 4 * block_flops);
  CHECK(r.forward_flops_mean_rank == 2.5 * block_flops);
  CHECK(r.imbalance == Approx(1.6));
  const double rate = r.kernel_efficiency * 312e12, merge = r.forward.merge_step_s;
  CHECK(r.forward.max_rank_compute_s == Approx(4 * block_flops / rate + 3 * merge));
  CHECK(r.forward.mean_rank_compute_s == Approx(2.5 * block_flops / rate + 1.5 * merge));
  CHECK(r.backward.mean_rank_compute_s == Approx(2.0 * 2.5 * block_flops / rate + 1.5 * r.backward.merge_step_s));
  // the runtime allocates scores for all P blocks, skipped ones included: b*H*(L/P)*L*e
  CHECK(r.scores_bytes == 1.0 * 1024 * 4096 * 2);
  // zigzag: every rank sees part of every block: balanced, nothing skipped
  s.scheme = CpScheme::zigzag;
  const RingLayerPrediction z = predict_ring_attention(s, c);
  CHECK(z.imbalance == 1.0);
  CHECK(z.forward_flops_mean_rank == 4 * block_flops);
}

TEST_CASE("bad ring shapes are rejected with the field and the valid range") {
  RingAttentionShape s = one_head(1000, 4);
  s.scheme = CpScheme::zigzag;
  s.seq_len = 4004;
  CHECK_THROWS_WITH_AS(predict_ring_attention(s, test::a100_cluster()),
                       "ring attention shape: seq_len 4004 not divisible by 2*CP = 8 (zigzag)", Error);
  s = one_head(1000, 0);
  s.seq_len = 4000;
  CHECK_THROWS_WITH_AS(predict_ring_attention(s, test::a100_cluster()), "ring attention shape: cp must be >= 1, got 0",
                       Error);
}

TEST_CASE("predict() takes its ring terms from the same one-layer ring prediction") {
  Experiment e = test::llama_experiment(65536, 1);
  ParallelOptions o;
  o.cp_scheme = CpScheme::contiguous;
  const Mesh mesh = test::mesh_of(1, 2, 16, 1);  // TP 2 x CP 16: the ring crosses nodes
  const Prediction p = predict(e, mesh, o);
  RingAttentionShape s;
  s.micro_batch = 1;
  s.heads_per_tp = 16;
  s.kv_heads_per_tp = 4;
  s.head_dim = 128;
  s.seq_len = 65536;
  s.cp = 16;
  s.scheme = CpScheme::contiguous;
  s.tp = 2;
  const RingLayerPrediction r = predict_ring_attention(s, e.cluster);
  REQUIRE(r.inter_node);
  CHECK(p.time.ring_comm_exposed_s == Approx(32 * (r.forward.exposed_comm_s + r.backward.exposed_comm_s)));
  const double imbalance = (r.forward.max_rank_compute_s - r.forward.mean_rank_compute_s) +
                           (r.backward.max_rank_compute_s - r.backward.mean_rank_compute_s);
  CHECK(p.time.cp_imbalance_s == Approx(32 * imbalance));
  CHECK(p.memory.ring_buffers_bytes == Approx(r.ring_buffer_bytes));
}

// ---------------------------------------------------------------- all-gather CP (cp_comm allgather)
namespace {
RingAttentionShape gqa_allgather(int64_t seq_len, int64_t cp, int64_t kv_heads) {
  RingAttentionShape s;
  s.micro_batch = 2;
  s.heads_per_tp = 8;
  s.kv_heads_per_tp = kv_heads;
  s.head_dim = 128;
  s.seq_len = seq_len;
  s.cp = cp;
  s.scheme = CpScheme::zigzag;
  s.causal = true;
  s.dtype = DType::bf16;
  s.comm = CpComm::allgather;
  return s;
}
}  // namespace

TEST_CASE("allgather: each rank receives (CP-1)/CP of the full K,V, backward re-gathers and reduce-scatters") {
  const ClusterConfig c = test::a100_cluster();
  for (int64_t cp : {2, 4, 8}) {
    CAPTURE(cp);
    const RingAttentionShape s = gqa_allgather(16384, cp, 2);
    const RingLayerPrediction r = predict_ring_attention(s, c);
    CHECK(r.comm == CpComm::allgather);
    const double full_kv = 2.0 /*K,V*/ * 2 * 16384 * 2 * 128 * 2 /*bf16*/;
    CHECK(r.forward.step_bytes == Approx(full_kv * double(cp - 1) / double(cp)));
    CHECK(r.backward.step_bytes == Approx(2 * full_kv * double(cp - 1) / double(cp)));
    CHECK(r.forward.transfers == 1);
    CHECK(r.backward.transfers == 2);
    // The cost model's own collectives, on the link inside a node, and nothing hides them.
    const double ag = all_gather_s(cp, full_kv, c.intra_node, c.collectives.all_gather);
    const double rs = reduce_scatter_s(cp, full_kv, c.intra_node, c.collectives.reduce_scatter);
    CHECK(r.forward.exposed_comm_s == Approx(ag));
    CHECK(r.backward.exposed_comm_s == Approx(ag + rs));
    CHECK(r.forward.total_s == Approx(r.forward.max_rank_compute_s + r.forward.exposed_comm_s));
  }
}

TEST_CASE("allgather: fewer KV heads (GQA) make the gather cheaper, attention compute unchanged") {
  const ClusterConfig c = test::a100_cluster();
  const RingLayerPrediction mha = predict_ring_attention(gqa_allgather(16384, 4, 8), c);
  const RingLayerPrediction gqa = predict_ring_attention(gqa_allgather(16384, 4, 1), c);
  CHECK(gqa.forward.step_bytes == Approx(mha.forward.step_bytes / 8));
  CHECK(gqa.forward.exposed_comm_s < mha.forward.exposed_comm_s);
  CHECK(gqa.backward.exposed_comm_s < mha.backward.exposed_comm_s);
  // Attention compute depends on query heads only.
  CHECK(gqa.forward.max_rank_compute_s == Approx(mha.forward.max_rank_compute_s));
}

TEST_CASE("allgather: its buffers grow with L, not L/CP, and are what the runtime allocates") {
  const ClusterConfig c = test::a100_cluster();
  const RingLayerPrediction cp2 = predict_ring_attention(gqa_allgather(16384, 2, 2), c);
  const RingLayerPrediction cp8 = predict_ring_attention(gqa_allgather(16384, 8, 2), c);
  // runtime/allgather_attention.cpp: packed_ (2 full) + k_full_, v_full_, dk_full_, dv_full_
  const double full = 2.0 * 16384 * 2 * 128 * 2;  // b * L * Hkv * d elements, bf16
  CHECK(cp2.ring_buffer_bytes == Approx(6 * full));
  CHECK(cp8.ring_buffer_bytes == Approx(cp2.ring_buffer_bytes));  // CP does not shrink it
  RingAttentionShape ring = gqa_allgather(16384, 8, 2);
  ring.comm = CpComm::ring;
  CHECK(predict_ring_attention(ring, c).ring_buffer_bytes < cp8.ring_buffer_bytes);
  const RingLayerPrediction longer = predict_ring_attention(gqa_allgather(32768, 8, 2), c);
  CHECK(longer.ring_buffer_bytes == Approx(2 * cp8.ring_buffer_bytes));
}

TEST_CASE("allgather: one kernel call over the scheme's visible pairs, no merges, flash only") {
  ClusterConfig c = test::a100_cluster();
  c.attention = {1.0, 0.0};
  c.attention_backward = {0.5, 0.0};
  RingAttentionShape s = gqa_allgather(8192, 4, 2);
  const RingLayerPrediction ag = predict_ring_attention(s, c);
  s.comm = CpComm::ring;
  const RingLayerPrediction ring = predict_ring_attention(s, c);
  // The same visible pairs (so the same imbalance) as the ring with the same scheme.
  CHECK(ag.forward_flops_max_rank == Approx(ring.forward_flops_max_rank));
  CHECK(ag.imbalance == Approx(ring.imbalance));
  CHECK(ag.forward.max_rank_compute_s == Approx(ag.forward_flops_max_rank / 312e12));
  CHECK(ag.backward.max_rank_compute_s == Approx(2.5 * ag.forward_flops_max_rank / (312e12 * 0.5)));
  CHECK(ag.forward.merge_step_s == 0.0);
  s.comm = CpComm::allgather;
  s.attention = AttentionImpl::materialized;
  CHECK_THROWS_AS(predict_ring_attention(s, c), Error);
}

TEST_CASE("allgather across nodes: hierarchical collectives, slower than inside a node") {
  ClusterConfig c = test::a100_cluster();
  RingAttentionShape s = gqa_allgather(16384, 4, 2);
  const RingLayerPrediction inside = predict_ring_attention(s, c);
  s.tp = c.gpus_per_node;  // CP ranks a node apart: every CP rank on its own node
  const RingLayerPrediction across = predict_ring_attention(s, c);
  CHECK(across.inter_node);
  const double full_kv = 2.0 * 2 * 16384 * 2 * 128 * 2;
  CHECK(across.forward.exposed_comm_s ==
        Approx(group_collective_s(CollectiveKind::all_gather, 4, 1, full_kv, c)));
  CHECK(across.forward.exposed_comm_s > inside.forward.exposed_comm_s);
}

// ---------------------------------------------------------------- all-to-all CP (cp_comm alltoall)
namespace {
RingAttentionShape gqa_alltoall(int64_t seq_len, int64_t cp, int64_t kv_heads) {
  RingAttentionShape s = gqa_allgather(seq_len, cp, kv_heads);
  s.comm = CpComm::alltoall;
  return s;
}
}  // namespace

TEST_CASE("all_to_all_s: (n-1)/n * B / bw + (n-1) * latency, by hand") {
  const LinkProfile link{100e9, 5e-6};
  // n = 4, 8 MB per rank: 3/4 * 8e6 / 1e11 = 60 us, + 3 * 5 us = 75 us.
  CHECK(all_to_all_s(4, 8e6, link) == Approx(75e-6));
  // n = 2: 1/2 * 8e6 / 1e11 = 40 us + 5 us.
  CHECK(all_to_all_s(2, 8e6, link) == Approx(45e-6));
  CHECK(all_to_all_s(1, 8e6, link) == 0.0);
  // An efficiency curve scales the bandwidth term only: eff 0.5 doubles the 60 us.
  CHECK(all_to_all_s(4, 8e6, link, CollectiveCurve{0.5, 0.0}) == Approx(135e-6));
}

TEST_CASE("alltoall: Q, K, V in and O out forward, dO in and dQ, dK, dV out backward, by hand") {
  ClusterConfig c = test::a100_cluster();
  c.attention = {1.0, 0.0};
  c.attention_backward = {0.5, 0.0};
  c.intra_node = {100e9, 5e-6};
  c.collectives = {};  // ideal curves: the formula exactly
  // b = 2, H = 8, Hkv = 2, d = 128, L = 16384, CP = 2, bf16: per rank 2 * 8192 tokens.
  const RingLayerPrediction r = predict_ring_attention(gqa_alltoall(16384, 2, 2), c);
  CHECK(r.comm == CpComm::alltoall);
  const double tokens = 2.0 * 8192;
  const double q_bytes = tokens * 8 * 128 * 2;   // 33.55 MB: Q (and O, dO, dQ)
  const double kv_bytes = tokens * 2 * 128 * 2;  // K (and V, dK, dV): Hkv = 2 >= CP
  const double a2a = [](double b) { return 0.5 * b / 100e9 + 5e-6; }(q_bytes);
  const double a2a_kv = 0.5 * kv_bytes / 100e9 + 5e-6;
  CHECK(a2a == Approx(0.5 * 33554432.0 / 100e9 + 5e-6));
  CHECK(r.forward.exposed_comm_s == Approx(2 * a2a + 2 * a2a_kv));
  CHECK(r.backward.exposed_comm_s == Approx(2 * a2a + 2 * a2a_kv));
  CHECK(r.forward.transfers == 4);
  CHECK(r.backward.transfers == 4);
  CHECK(r.forward.step_bytes == Approx(0.5 * (2 * q_bytes + 2 * kv_bytes)));
  // Attention: the whole sequence on H/CP = 4 heads, causal: 4 * b * 4 * d * L(L+1)/2 FLOPs.
  const double flops = 4.0 * 2 * 4 * 128 * (16384.0 * 16385.0 / 2.0);
  CHECK(r.forward_flops_max_rank == Approx(flops));
  CHECK(r.forward_flops_mean_rank == Approx(flops));
  CHECK(r.imbalance == 1.0);
  CHECK(r.forward.max_rank_compute_s == Approx(flops / 312e12));
  CHECK(r.forward.max_rank_compute_s == Approx(r.forward.mean_rank_compute_s));
  CHECK(r.backward.max_rank_compute_s == Approx(2.5 * flops / (312e12 * 0.5)));
  CHECK(r.forward.total_s == Approx(r.forward.max_rank_compute_s + r.forward.exposed_comm_s));
  CHECK(r.forward.merge_step_s == 0.0);
}

TEST_CASE("alltoall: no causal imbalance whatever the scheme, the ring's contiguous has one") {
  const ClusterConfig c = test::a100_cluster();
  RingAttentionShape s = gqa_alltoall(8192, 4, 4);
  s.scheme = CpScheme::contiguous;
  const RingLayerPrediction a2a = predict_ring_attention(s, c);
  s.comm = CpComm::ring;
  const RingLayerPrediction ring = predict_ring_attention(s, c);
  CHECK(ring.imbalance > 1.5);
  CHECK(a2a.imbalance == 1.0);
  // The same work in all: every rank does the mean rank's share.
  CHECK(a2a.forward_flops_mean_rank == Approx(ring.forward_flops_mean_rank));
}

TEST_CASE("alltoall: KV heads replicated when CP exceeds them, memory is what the runtime allocates") {
  ClusterConfig c = test::a100_cluster();
  c.collectives = {};
  c.intra_node = {100e9, 0.0};
  // Hkv = 2 < CP = 4: every rank sends one KV head per destination, so K moves b*(L/4)*4*d.
  const RingLayerPrediction rep = predict_ring_attention(gqa_alltoall(16384, 4, 2), c);
  const double tokens = 2.0 * 4096;
  const double q_bytes = tokens * 8 * 128 * 2, kv_bytes = tokens * 4 * 128 * 2;
  CHECK(rep.forward.exposed_comm_s == Approx(0.75 * (2 * q_bytes + 2 * kv_bytes) / 100e9));
  // runtime/alltoall_attention.cpp: 6 Q-sized (send, recv, Q, O, dO, dQ) + 4 KV-sized buffers of
  // the whole sequence on the rank's heads: H/CP = 2 query heads, max(Hkv/CP, 1) = 1 KV head.
  const double per_head = 2.0 * 16384 * 128 * 2;
  CHECK(rep.ring_buffer_bytes == Approx((6 * 2 + 4 * 1) * per_head));
  const RingLayerPrediction split = predict_ring_attention(gqa_alltoall(16384, 2, 2), c);
  CHECK(split.ring_buffer_bytes == Approx((6 * 4 + 4 * 1) * per_head));
}

TEST_CASE("alltoall: refused for heads CP cannot split and for materialised attention") {
  const ClusterConfig c = test::a100_cluster();
  CHECK_THROWS_AS(predict_ring_attention(gqa_alltoall(16384 * 3, 3, 2), c), Error);  // 8 heads % 3
  RingAttentionShape s = gqa_alltoall(16384, 2, 2);
  s.heads_per_tp = 6;
  s.kv_heads_per_tp = 3;  // 3 KV heads: neither divisible by 2 nor dividing it
  CHECK_THROWS_AS(predict_ring_attention(s, c), Error);
  s = gqa_alltoall(16384, 4, 2);
  s.attention = AttentionImpl::materialized;
  CHECK_THROWS_AS(predict_ring_attention(s, c), Error);
  // CP = 1: the plain single-rank attention, no all-to-all.
  const RingLayerPrediction one = predict_ring_attention(gqa_alltoall(16384, 1, 2), c);
  CHECK(one.forward.exposed_comm_s == 0.0);
  CHECK(one.ring_buffer_bytes == 0.0);
}

// ---------------------------------------------------------------- hierarchical CP (cp_comm hybrid)
namespace {
RingAttentionShape gqa_hybrid(int64_t seq_len, int64_t cp, int64_t a2a, int64_t kv_heads) {
  RingAttentionShape s = gqa_allgather(seq_len, cp, kv_heads);
  s.comm = CpComm::hybrid;
  s.a2a_size = a2a;
  return s;
}
}  // namespace

TEST_CASE("hybrid: the ring of R groups on the group's head shard plus four all-to-alls of A ranks, by hand") {
  ClusterConfig c = test::a100_cluster();
  c.collectives = {};  // ideal curves: the formula exactly
  c.intra_node = {100e9, 5e-6};
  // b = 2, H = 8, Hkv = 2, d = 128, L = 16384, CP = 4 = A 2 x R 2, bf16, one node.
  const RingLayerPrediction h = predict_ring_attention(gqa_hybrid(16384, 4, 2, 2), c);
  CHECK(h.comm == CpComm::hybrid);
  // The ring stage: 2 ranks, each the group's L/2 tokens of H/A = 4 query and Hkv/A = 1 KV heads.
  RingAttentionShape ring2 = gqa_allgather(16384, 2, 1);
  ring2.heads_per_tp = 4;
  ring2.comm = CpComm::ring;
  const RingLayerPrediction r = predict_ring_attention(ring2, c);
  // The all-to-alls: per rank L/4 tokens of 8 query heads (Q, O; dO, dQ) and 2 KV heads (K, V;
  // dK, dV), over A = 2 ranks: 1/2 of the bytes + one latency each.
  const double tokens = 2.0 * 4096;
  const double q_bytes = tokens * 8 * 128 * 2, kv_bytes = tokens * 2 * 128 * 2;
  const double a2a = 2 * (0.5 * q_bytes / 100e9 + 5e-6) + 2 * (0.5 * kv_bytes / 100e9 + 5e-6);
  CHECK(h.forward.exposed_comm_s == Approx(r.forward.exposed_comm_s + a2a));
  CHECK(h.backward.exposed_comm_s == Approx(r.backward.exposed_comm_s + a2a));
  CHECK(h.forward.unhidden_comm_s == Approx(r.forward.unhidden_comm_s + a2a));
  CHECK(h.forward.max_rank_compute_s == Approx(r.forward.max_rank_compute_s));
  CHECK(h.backward.max_rank_compute_s == Approx(r.backward.max_rank_compute_s));
  CHECK(h.forward.transfers == 1);  // R - 1 ring hops; the all-to-alls are in unhidden_comm_s
  CHECK(h.forward.step_bytes == Approx(r.forward.step_bytes));
  CHECK(h.forward.total_s == Approx(h.forward.max_rank_compute_s + h.forward.elementwise_s + h.forward.exposed_comm_s));
  // Work: the whole layer split over 4 ranks, as any method; the ring of 2's zigzag imbalance.
  const RingLayerPrediction ring4 = predict_ring_attention([] {
    RingAttentionShape s = gqa_allgather(16384, 4, 2);
    s.comm = CpComm::ring;
    return s;
  }(), c);
  CHECK(h.forward_flops_mean_rank == Approx(ring4.forward_flops_mean_rank));
  CHECK(h.imbalance == Approx(r.imbalance));
  // Memory: runtime/hybrid_attention.cpp = the all-to-all stage of a 2-rank group whose sequence
  // is L/2 (6 Q-sized buffers of 4 heads + 4 KV-sized of 1 head, L/2 tokens each) + the ring's
  // K,V double buffer and 4 fp32 dK,dV blocks of L/2 tokens of 1 KV head.
  const double per_head = 2.0 * 8192 * 128;
  CHECK(h.ring_buffer_bytes == Approx((6 * 4 + 4 * 1) * per_head * 2 + 2 * 2 * per_head * 2 + 4 * 2 * per_head * 4));
  CHECK(h.ring_buffer_bytes == Approx(r.ring_buffer_bytes + (6 * 4 + 4 * 1) * per_head * 2));
}

TEST_CASE("hybrid: A = 1 is the ring, A = CP the all-to-all") {
  ClusterConfig c = test::a100_cluster();
  c.attention = {0.6, 0.0};  // flat curves: one kernel call or a ring of one rank run at the same rate
  c.attention_backward = {0.5, 0.0};
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
    CAPTURE(to_string(scheme));
    RingAttentionShape s = gqa_hybrid(16384, 4, 1, 2);
    s.scheme = scheme;
    const RingLayerPrediction h1 = predict_ring_attention(s, c);
    s.comm = CpComm::ring;
    const RingLayerPrediction ring = predict_ring_attention(s, c);
    CHECK(h1.forward.total_s == Approx(ring.forward.total_s));
    CHECK(h1.backward.total_s == Approx(ring.backward.total_s));
    CHECK(h1.imbalance == Approx(ring.imbalance));
    CHECK(h1.ring_buffer_bytes == Approx(ring.ring_buffer_bytes));
    s = gqa_hybrid(16384, 4, 4, 4);
    s.scheme = scheme;
    const RingLayerPrediction h4 = predict_ring_attention(s, c);
    s.comm = CpComm::alltoall;
    const RingLayerPrediction a2a = predict_ring_attention(s, c);
    CHECK(h4.forward.exposed_comm_s == Approx(a2a.forward.exposed_comm_s));
    CHECK(h4.backward.exposed_comm_s == Approx(a2a.backward.exposed_comm_s));
    CHECK(h4.imbalance == Approx(1.0));
    CHECK(h4.forward.max_rank_compute_s == Approx(a2a.forward.max_rank_compute_s));
    CHECK(h4.ring_buffer_bytes == Approx(a2a.ring_buffer_bytes));
  }
}

TEST_CASE("hybrid: a contiguous causal ring of 8 is imbalanced, hybrid 4 x 2 less so, zigzag balanced at R") {
  const ClusterConfig c = test::a100_cluster();
  RingAttentionShape s = gqa_hybrid(16384, 8, 4, 4);
  s.scheme = CpScheme::contiguous;
  const RingLayerPrediction h = predict_ring_attention(s, c);
  s.comm = CpComm::ring;
  const RingLayerPrediction ring = predict_ring_attention(s, c);
  CHECK(h.imbalance > 1.0);
  CHECK(h.imbalance < ring.imbalance);
  // Contiguous shards of 8 ranks, grouped by 4: the contiguous shards of 2 (the last group's
  // 3/4 of the pairs over the mean's 1/2: 1.5 up to the diagonal's O(1/L)).
  CHECK(h.imbalance == Approx(1.5).epsilon(0.01));
}

TEST_CASE("hybrid: refused for a group size that does not divide CP, heads it cannot split, materialised attention") {
  const ClusterConfig c = test::a100_cluster();
  CHECK_THROWS_AS(predict_ring_attention(gqa_hybrid(16384, 4, 3, 2), c), Error);
  RingAttentionShape s = gqa_hybrid(16384, 6, 3, 2);  // 8 query heads % 3
  s.scheme = CpScheme::contiguous;
  s.seq_len = 6 * 4096;
  CHECK_THROWS_AS(predict_ring_attention(s, c), Error);
  s = gqa_hybrid(16384, 4, 2, 2);
  s.attention = AttentionImpl::materialized;
  CHECK_THROWS_AS(predict_ring_attention(s, c), Error);
  s = gqa_hybrid(16384, 4, 0, 2);
  CHECK_THROWS_AS(predict_ring_attention(s, c), Error);
}

TEST_CASE("run's attention prediction with packed documents takes the documents' closed-form work") {
  RingAttentionShape s = one_head(128, 2);
  s.causal = true;
  s.scheme = CpScheme::zigzag;
  const ClusterConfig c = test::a100_cluster();
  s.document_lengths = {100, 156};
  const RingLayerShape r = ring_layer_shape(s, c);
  const DocumentAttentionWork w = document_attention_work(s.document_lengths, s.scheme, s.cp, s.causal);
  CHECK(r.layer.document_pair_fraction == doctest::Approx(w.pair_fraction));
  CHECK(r.layer.document_imbalance == doctest::Approx(w.imbalance));
  CHECK(w.pair_fraction < 0.6);  // 17296 of 32896 causal pairs
  // Fewer pairs, less predicted compute than the same sequence without documents.
  RingAttentionShape plain = s;
  plain.document_lengths.clear();
  CHECK(predict_ring_attention(s, c).forward.mean_rank_compute_s <
        predict_ring_attention(plain, c).forward.mean_rank_compute_s);
}
