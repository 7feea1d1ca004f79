// Hand-computed checks of sim/formulas.hpp: every expected value is written out as arithmetic.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "sim/cost_model.hpp"
#include "sim/formulas.hpp"
#include "test_helpers.hpp"

using namespace ringplan;
using namespace ringplan::sim;
using doctest::Approx;

TEST_CASE("layer and model parameters of Llama 3 8B (GQA, gated MLP, untied)") {
  const ModelConfig m = test::llama8b();
  // QKV 4096*(4096 + 2*1024) + out 4096*4096 + MLP 3*4096*14336 + norms 2*4096
  const double layer = 4096.0 * 6144 + 4096.0 * 4096 + 3.0 * 4096 * 14336 + 2.0 * 4096;
  CHECK(layer_params(m) == layer);
  CHECK(layer == 218112000.0);
  // 32 layers + embedding and output layer 2*128256*4096 + final norm: 8.03e9 (Llama 3 "8B")
  CHECK(model_params(m) == 32.0 * layer + 2.0 * 128256 * 4096 + 4096);
  CHECK(model_params(m) == Approx(8.030e9).epsilon(1e-3));
}

TEST_CASE("GPT parameter count matches Narayanan et al. 12*l*h^2 to within the bias terms") {
  const ModelConfig m = test::gpt22b();
  const double l = 48, h = 6144, V = 51200;
  // Narayanan: 12 l h^2 (1 + 13/(12h) + (V + s)/(12 l h)); we count no biases and no learned
  // position embedding (s*h), so compare with 12 l h^2 + V h + l*2h + h exactly.
  CHECK(model_params(m) == 12.0 * l * h * h + V * h + l * 2.0 * h + h);
  const double narayanan = 12.0 * l * h * h * (1.0 + 13.0 / (12.0 * h) + (V + 2048) / (12.0 * l * h));
  CHECK(model_params(m) == Approx(narayanan).epsilon(2e-3));
}

TEST_CASE("bytes per parameter: 16 for mixed-precision Adam (ZeRO paper)") {
  const StateBytes s = state_bytes_per_param(DType::bf16, Optimizer::adam);
  CHECK(s.weights + s.gradients + s.optimizer == 16.0);
  const StateBytes f = state_bytes_per_param(DType::fp32, Optimizer::adam);
  CHECK(f.weights + f.gradients + f.optimizer == 4.0 + 4.0 + 8.0);
  // optimizer step traffic, itemised in formulas.cpp
  CHECK(optimizer_step_bytes_per_param(DType::fp16, Optimizer::adam, true) == 8 + 4 + 8 + 28 + 6);
  CHECK(optimizer_step_bytes_per_param(DType::bf16, Optimizer::adam, true) == 4 + 8 + 28 + 6);
  CHECK(optimizer_step_bytes_per_param(DType::fp32, Optimizer::adam, true) == 4 + 8 + 28);
  // No clipping: neither the norm's read nor the scaling pass.
  CHECK(optimizer_step_bytes_per_param(DType::bf16, Optimizer::adam, false) == 28 + 6);
  CHECK(optimizer_step_bytes_per_param(DType::fp32, Optimizer::sgd, false) == 20);
  // Autocast: no 16-bit copy to write and no gradient buffer to zero (set to None).
  CHECK(optimizer_step_bytes_per_param(DType::bf16, Optimizer::adam, true, true) == 4 + 8 + 28);
  CHECK(optimizer_step_bytes_per_param(DType::bf16, Optimizer::adam, false, true) == 28);
  // Summing micro-batch gradients outside the GEMMs (GradAccumulation).
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::fused, 2, 4, 8) == 0);
  // AccumulateGrad in 16 bits: 7 later micro-batches read the gradient and .grad, write .grad.
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::inplace, 2, 2, 8) == 7 * (2 + 2 + 2));
  // FSDP2 no-sync into float32: the first cast (read 2, write 4), then 7 adds (read 2 + 4, write 4).
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::inplace, 2, 4, 8) == (2 + 4) + 7 * (2 + 4 + 4));
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::inplace, 2, 4, 1) == 0);  // nothing to sum
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::inplace, 4, 4, 4) == 3 * 12);  // autocast's float32 .grad
  // BF16_Optimizer: every micro-batch, the cast to a float32 temporary and the add.
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::cast_add, 2, 4, 8) == 8 * ((2 + 4) + (4 + 4 + 4)));
  CHECK(grad_accumulation_bytes_per_param(GradAccumulation::cast_add, 2, 4, 1) == 2 + 16);
}

namespace {
// Korthikanti's setting: multi-head, d = h/a, f = 4h, dropout, materialised, 16-bit.
LayerShape korthikanti_shape(double t, bool sp, Recompute rc) {
  LayerShape x;
  x.micro_batch = 1;
  x.seq_len = 2048;
  x.hidden = 6144;
  x.heads = 64;
  x.kv_heads = 64;
  x.head_dim = 96;
  x.ffn_hidden = 4 * 6144;
  x.tp = t;
  x.cp = 1;
  x.sequence_parallel = sp && t > 1;
  x.attention = AttentionImpl::materialized;
  x.recompute = rc;
  x.dropout = true;
  x.activation_bytes = 2;
  return x;
}
double kept(const LayerActivationBytes& a) { return a.stored_bytes + a.scores_bytes; }
}  // namespace

TEST_CASE("Korthikanti et al. 2022 Table 2 activation formulas reproduced exactly") {
  const double s = 2048, b = 1, h = 6144, a = 64, t = 8;
  SUBCASE("no parallelism: sbh(34 + 5as/h)") {
    CHECK(kept(layer_activation_bytes(korthikanti_shape(1, false, Recompute::none))) ==
          Approx(s * b * h * (34 + 5 * a * s / h)).epsilon(1e-12));
  }
  SUBCASE("tensor parallel: sbh(10 + 24/t + 5as/(ht))") {
    CHECK(kept(layer_activation_bytes(korthikanti_shape(t, false, Recompute::none))) ==
          Approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t))).epsilon(1e-12));
  }
  SUBCASE("tensor + sequence parallel: sbh(34 + 5as/h)/t") {
    CHECK(kept(layer_activation_bytes(korthikanti_shape(t, true, Recompute::none))) ==
          Approx(s * b * h * (34 + 5 * a * s / h) / t).epsilon(1e-12));
  }
  SUBCASE("tensor + sequence parallel + selective recompute: 34sbh/t") {
    CHECK(kept(layer_activation_bytes(korthikanti_shape(t, true, Recompute::selective))) ==
          Approx(34 * s * b * h / t).epsilon(1e-12));
  }
  SUBCASE("full recompute: 2sbh (layer input), /t with sequence parallelism") {
    CHECK(kept(layer_activation_bytes(korthikanti_shape(t, false, Recompute::full))) == Approx(2 * s * b * h));
    CHECK(kept(layer_activation_bytes(korthikanti_shape(t, true, Recompute::full))) == Approx(2 * s * b * h / t));
  }
}

TEST_CASE("activation memory without dropout, with GQA and a gated MLP (derived terms)") {
  LayerShape x = korthikanti_shape(1, false, Recompute::none);
  x.dropout = false;
  const double s = 2048, h = 6144, a = 64;
  // Dropping the two hidden dropout masks (2sbh) and the score dropout (mask + output, 3as^2b):
  CHECK(kept(layer_activation_bytes(x)) == Approx(s * h * (32 + 2 * a * s / h)));
  // GQA with 8 KV heads: K and V shrink from 2*(2sbh) to 2*(2*s*8*96) bytes.
  x.kv_heads = 8;
  CHECK(kept(layer_activation_bytes(x)) == Approx(s * h * (32 + 2 * a * s / h) - 2 * 2 * s * (64 - 8) * 96));
  // Gated MLP with f = 4h stores gate, up and their product: 3*2*s*f instead of 2*2*s*f.
  x.gated_mlp = true;
  CHECK(kept(layer_activation_bytes(x)) ==
        Approx(s * h * (32 + 2 * a * s / h) - 2 * 2 * s * (64 - 8) * 96 + 2 * s * 4 * h));
  // Flash keeps the fp32 lse (4 bytes per query row and head) instead of the s^2 scores.
  x.attention = AttentionImpl::flash;
  CHECK(layer_activation_bytes(x).scores_bytes == 4.0 * a * s);
}

TEST_CASE("context parallelism divides every s by CP except the score matrix (s/CP)*s") {
  LayerShape x = korthikanti_shape(1, false, Recompute::none);
  x.dropout = false;
  LayerShape y = x;
  y.cp = 4;
  const LayerActivationBytes ax = layer_activation_bytes(x), ay = layer_activation_bytes(y);
  CHECK(ay.stored_bytes == Approx(ax.stored_bytes / 4));
  CHECK(ay.scores_bytes == Approx(1.0 * 64 * (2048 / 4) * 2048 * 2));  // b*a*(L/CP)*L*e
  CHECK(ay.scores_bytes == Approx(ax.scores_bytes / 4));
}

TEST_CASE("GEMM and attention FLOPs per device (DESIGN.md worked example: 2048 tokens per rank)") {
  // 8 GPUs, DP 2, TP 2, CP 2, L = 4096: each rank holds 2048 tokens.
  ModelConfig m = test::llama8b();
  TrainingConfig t;
  t.seq_len = 4096;
  t.global_batch_sequences = 2;
  ParallelOptions o;
  const LayerShape x = make_layer_shape(m, t, test::mesh_of(2, 2, 2, 1), o);
  CHECK(x.tokens() == 2048);
  const LayerGemmFlops g = layer_gemm_flops(x);
  CHECK(g.qkv == 2.0 * 2048 * 4096 * (4096 + 2 * 1024) / 2);
  CHECK(g.out == 2.0 * 2048 * 4096 * 4096 / 2);
  CHECK(g.mlp_up == 2.0 * 2048 * 4096 * (2 * 14336) / 2);
  CHECK(g.mlp_down == 2.0 * 2048 * 14336 * 4096 / 2);
  CHECK(logits_flops(x, 128256) == 2.0 * 2048 * 4096 * 128256 / 2);
  // Attention, flash, causal: 4*b*(a/t)*d per visible pair; mean rank = L(L+1)/2 / CP pairs.
  const AttentionFlops f = attention_forward_flops(x);
  CHECK(f.mean_rank == 4.0 * 1 * 16 * 128 * (4096.0 * 4097 / 2) / 2);
  // zigzag: perfectly balanced
  CHECK(f.max_rank == Approx(f.mean_rank).epsilon(1e-12));
  // FlashAttention convention on one device: 4*b*a*s^2*d / 2 for causal (+ the diagonal).
  const LayerShape one = make_layer_shape(m, t, test::mesh_of(1, 1, 1, 1), o);
  CHECK(attention_forward_flops(one).mean_rank == Approx(4.0 * 32 * 4096.0 * 4096 * 128 / 2).epsilon(3e-4));
}

TEST_CASE("ring bytes per step: 2*b*(L/CP)*(H_kv/TP)*d*bytes forward, + dK,dV in fp32 backward") {
  ModelConfig m = test::llama8b();
  TrainingConfig t;
  t.seq_len = 4096;
  ParallelOptions o;
  const LayerShape x = make_layer_shape(m, t, test::mesh_of(2, 2, 2, 1), o);
  CHECK(ring_forward_step_bytes(x) == 2.0 * 1 * 2048 * (8 / 2) * 128 * 2);  // 4 MiB
  CHECK(ring_forward_step_bytes(x) == 4194304.0);
  CHECK(ring_backward_step_bytes(x) == 2.0 * 2048 * 4 * 128 * (2 + 4));
  // runtime/ring_attention.cpp: 2 x (K,V) in bf16 + 4 x (dK,dV) in fp32 (2 receive + 2 scratch)
  const double block = 2048.0 * 4 * 128;
  CHECK(ring_buffer_bytes(x) == 2 * 2 * block * 2 + 4 * 2 * block * 4);
  CHECK(ring_buffer_bytes(x) == 41943040.0);  // block = 2^20 elements: 8 MiB K,V + 32 MiB dK,dV
  const LayerShape no_cp = make_layer_shape(m, t, test::mesh_of(2, 2, 1, 1), o);
  CHECK(ring_buffer_bytes(no_cp) == 0.0);
}

TEST_CASE("alpha-beta collectives (formulas.md)") {
  const LinkProfile link{1e11, 1e-5};
  CHECK(all_reduce_s(8, 1e9, link) == Approx(2 * 7 * 1e-5 + 2.0 * 7 / 8 * 1e9 / 1e11));
  CHECK(reduce_scatter_s(8, 1e9, link) == Approx(7 * 1e-5 + 7.0 / 8 * 1e9 / 1e11));
  CHECK(all_gather_s(4, 2e9, link) == Approx(3 * 1e-5 + 3.0 / 4 * 2e9 / 1e11));
  CHECK(p2p_s(5e8, link) == Approx(1e-5 + 5e8 / 1e11));
  // a group of one moves nothing
  CHECK(all_reduce_s(1, 1e9, link) == 0.0);
  CHECK(all_gather_s(1, 1e9, link) == 0.0);
}

namespace {
// Positions held by CP rank r of P over L tokens, in its local order (DESIGN.md's sharding table).
std::vector<int> rank_positions(CpScheme s, int L, int P, int r) {
  std::vector<int> pos;
  for (int i = 0; i < L; ++i) {
    bool mine = false;
    if (s == CpScheme::contiguous) mine = i / (L / P) == r;
    if (s == CpScheme::striped) mine = i % P == r;
    if (s == CpScheme::zigzag) {
      const int chunk = i / (L / (2 * P));
      mine = chunk == r || chunk == 2 * P - 1 - r;
    }
    if (mine) pos.push_back(i);
  }
  return pos;
}
}  // namespace

TEST_CASE("closed-form causal work per CP rank equals a brute-force count over tokens") {
  // Counted token by token over the positions each rank holds (rank_positions).
  const int L = 48;
  for (CpScheme s : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
    for (int P : {1, 2, 3, 4}) {
      if (L % (2 * P) != 0) continue;
      CAPTURE(to_string(s));
      CAPTURE(P);
      double total = 0, max_rank = 0, max_diag = 0, max_later = 0;
      for (int r = 0; r < P; ++r) {
        const std::vector<int> q = rank_positions(s, L, P, r);
        double pairs = 0;
        for (int i : q) pairs += i + 1;  // causal: keys 0..i
        CHECK(rank_visible_pairs(s, L, P, r, true) == pairs);
        total += pairs;
        max_rank = std::max(max_rank, pairs);
        // Ring steps: at step k rank r works on the KV block of rank (r - k) mod P.
        for (int k = 0; k < P; ++k) {
          const std::vector<int> kv = rank_positions(s, L, P, ((r - k) % P + P) % P);
          double step = 0;
          for (int i : q)
            for (int j : kv) step += j <= i ? 1 : 0;
          CHECK(block_visible_pairs(s, L, P, r, ((r - k) % P + P) % P, true) == step);
          (k == 0 ? max_diag : max_later) = std::max(k == 0 ? max_diag : max_later, step);
        }
      }
      const RingPairs rp = ring_pairs(s, L, P, true);
      CHECK(total == L * (L + 1) / 2.0);
      CHECK(rp.mean_rank_pairs == Approx(total / P));
      CHECK(rp.max_rank_pairs == max_rank);
      CHECK(rp.diagonal_pairs == max_diag);
      CHECK(rp.off_diagonal_max_pairs == max_later);
    }
  }
}

TEST_CASE("DESIGN.md worked example: L = 1024, P = 4, contiguous, rank 1 holds 256..511") {
  // sum over i = 256..511 of (i + 1) = 256*256 + 256*257/2
  CHECK(rank_visible_pairs(CpScheme::contiguous, 1024, 4, 1, true) == 256.0 * 256 + 256.0 * 257 / 2);
  CHECK(rank_visible_pairs(CpScheme::contiguous, 1024, 4, 1, true) == 98432.0);
}

TEST_CASE("memory-bound traffic: sequence parallelism splits the replicated norm/residual work") {
  LayerShape x = korthikanti_shape(8, false, Recompute::none);
  x.dropout = false;
  x.attention = AttentionImpl::flash;
  LayerShape y = x;
  y.sequence_parallel = true;
  const double e = 2, T = 2048, h = 6144, f = 4 * 6144, t = 8;
  // forward: norms + residuals 10e per hidden element (replicated), GELU 2e per ffn element /t
  CHECK(layer_elementwise_bytes(x).forward == Approx(10 * e * T * h + 2 * e * T * f / t));
  CHECK(layer_elementwise_bytes(y).forward == Approx(10 * e * T * h / t + 2 * e * T * f / t));
  CHECK(layer_elementwise_bytes(x).backward == Approx(12 * e * T * h + 3 * e * T * f / t));
}

TEST_CASE("visible KV blocks per rank: the runtime skips blocks fully hidden by the causal mask") {
  // Hand counts for P = 4: contiguous rank r sees r+1 blocks (1+2+3+4 = 10, mean 2.5, max 4).
  RingVisibleBlocks v = ring_visible_blocks(CpScheme::contiguous, 4096, 4, true);
  CHECK(v.max_rank == 4.0);
  CHECK(v.mean_rank == 2.5);
  v = ring_visible_blocks(CpScheme::contiguous, 4096, 4, false);
  CHECK(v.mean_rank == 4.0);
  CHECK(ring_visible_blocks(CpScheme::zigzag, 4096, 4, true).mean_rank == 4.0);
  CHECK(ring_visible_blocks(CpScheme::striped, 4096, 4, true).mean_rank == 4.0);
  CHECK(ring_visible_blocks(CpScheme::striped, 4, 4, true).mean_rank == 2.5);  // one token per rank
  CHECK(ring_visible_blocks(CpScheme::zigzag, 4096, 1, true).max_rank == 1.0);
  // Cross-check against the per-block visible pairs (a block is skipped iff it has none).
  for (CpScheme sc : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (double L : {8.0, 64.0, 4096.0}) {
      const double P = 4;
      double total = 0, worst = 0;
      for (int64_t r = 0; r < 4; ++r) {
        double n = 0;
        for (int64_t j = 0; j < 4; ++j) n += block_visible_pairs(sc, L, P, r, j, true) > 0 ? 1.0 : 0.0;
        total += n;
        worst = std::max(worst, n);
      }
      const RingVisibleBlocks b = ring_visible_blocks(sc, L, P, true);
      CHECK(b.mean_rank == total / P);
      CHECK(b.max_rank == worst);
    }
}

TEST_CASE("materialised attention FLOPs: full (L/CP)^2 blocks, hidden blocks skipped") {
  LayerShape x;
  x.micro_batch = 1;
  x.heads = 2;
  x.kv_heads = 2;
  x.head_dim = 64;
  x.seq_len = 4096;
  x.cp = 4;
  x.causal = true;
  x.attention = AttentionImpl::materialized;
  x.cp_scheme = CpScheme::contiguous;
  // per pair 4*1*2*64 = 512; block 1024^2 = 1048576 pairs -> 536870912 FLOPs per block
  AttentionFlops f = attention_forward_flops(x);
  CHECK(f.per_step_kernel == 536870912.0);
  CHECK(f.max_rank == 4 * 536870912.0);
  CHECK(f.mean_rank == 2.5 * 536870912.0);
  x.cp_scheme = CpScheme::zigzag;  // every rank sees part of every block: nothing skipped
  f = attention_forward_flops(x);
  CHECK(f.mean_rank == 4 * 536870912.0);
  CHECK(f.max_rank == f.mean_rank);
  // the scores memory is still (L/CP)*L per head: the runtime allocates all P blocks
  CHECK(materialized_scores_bytes(x) == 2.0 * 1024 * 4096 * 2);
}

TEST_CASE("selective_op keeps torchtitan's per-op saved set: input, wq, wv, attention, w1 (and w2 when eager) outputs") {
  // Llama-3-8B-like block, flash, no dropout, bf16: T tokens, h 4096, q 32x128, kv 8x128, f 14336.
  LayerShape x;
  x.micro_batch = 1;
  x.seq_len = 8192;
  x.hidden = 4096;
  x.heads = 32;
  x.kv_heads = 8;
  x.head_dim = 128;
  x.ffn_hidden = 14336;
  x.gated_mlp = true;
  x.attention = AttentionImpl::flash;
  x.dropout = false;
  x.activation_bytes = 2;
  x.recompute = Recompute::selective_op;
  const double T = 8192, e = 2, h = 4096, q = 4096, kv = 1024, f = 14336;
  const LayerActivationBytes a = layer_activation_bytes(x);
  // Compiled (element-wise fused, the default): block input, wq out, wv out, attention out, w1 out
  // (every other mm in the order wq wk wv wo w1 w3 w2 is must-save, but AOTAutograd saves only
  // what a backward op reads, and no backward op reads w2's output), and attention's fp32 lse.
  CHECK(a.stored_bytes == Approx(e * T * (h + q + kv + q + f)));
  CHECK(a.scores_bytes == Approx(4.0 * 32 * T));
  // Eager: torch.utils.checkpoint caches every must-save output until the block's backward,
  // w2's output too.
  x.eager_elementwise = true;
  CHECK(layer_activation_bytes(x).stored_bytes == Approx(e * T * (h + q + kv + q + f + h)));
  x.eager_elementwise = false;
  // Re-run in backward: norms' outputs, wk, the out-projection's residual sum, w3 and the product.
  x.recompute = Recompute::none;
  const double none = layer_activation_bytes(x).stored_bytes;
  CHECK(none == Approx(e * T * (4 * h + 2 * q + 2 * kv + 3 * f)));
  CHECK(a.backward_working_bytes == Approx(none - e * T * (h + q + kv + q + f)));
  // The re-run GEMM shares: wk of the QKV group, all of wo, w3 of the up group, none of w2.
  x.recompute = Recompute::selective_op;
  const SelectiveOpRecompute so = selective_op_recompute(x);
  CHECK(so.qkv == Approx(kv / (q + 2 * kv)));
  CHECK(so.out == 1.0);
  CHECK(so.mlp_up == 0.5);
  CHECK(so.mlp_down == 0.0);
  // Not gated: q k v o up down, so up is saved and down re-run.
  x.gated_mlp = false;
  const SelectiveOpRecompute ng = selective_op_recompute(x);
  CHECK(ng.mlp_up == 0.0);
  CHECK(ng.mlp_down == 1.0);
  CHECK(layer_activation_bytes(x).stored_bytes == Approx(e * T * (h + q + kv + q + f)));
  x.eager_elementwise = true;
  CHECK(layer_activation_bytes(x).stored_bytes == Approx(e * T * (h + q + kv + q + f)));
  x.eager_elementwise = false;
  // TP 4 with SP, eager: the row-parallel outputs hold all T rows; both reduce-scatter outputs are
  // saved. Compiled: neither w2's output nor its reduce-scatter (the block's last result); the out
  // projection's reduce-scatter is, as the backward re-forms the residual stream from it.
  x.gated_mlp = true;
  x.tp = 4;
  x.sequence_parallel = true;
  const double compiled_sp = layer_activation_bytes(x).stored_bytes;
  CHECK(compiled_sp == Approx(e * T * (h / 4 + (q + kv + q + f) / 4 + h / 4)));
  x.eager_elementwise = true;
  CHECK(layer_activation_bytes(x).stored_bytes == Approx(e * T * (h / 4 + (q + kv + q + f) / 4 + h + 2 * h / 4)));
  const double eager_working = layer_activation_bytes(x).backward_working_bytes;
  // The compiled block re-runs what it did before w2's output left the saved set: the no-recompute
  // tensors less those it keeps.
  x.eager_elementwise = false;
  const LayerActivationBytes c = layer_activation_bytes(x);
  x.recompute = Recompute::none;
  const double none_sp = layer_activation_bytes(x).stored_bytes;
  CHECK(c.backward_working_bytes == Approx(none_sp - e * T * (h / 4 + (q + kv + q + f) / 4)));
  CHECK(eager_working > c.backward_working_bytes);  // eager ops keep more tensors when re-run
}

TEST_CASE("masked tiles: visible pairs + ring_masked_extra equal a brute-force count of the kernel's tiles") {
  // The flash kernel's t x t tiles over the rank's local query order and the block's local key
  // order: a tile with every pair visible costs t^2, one with some visible costs cost * t^2 (the
  // diagonal), a hidden one nothing. Exact when t divides the chunks, except a striped block
  // whose diagonal excludes itself (j > r), which the closed form under-counts by its n pairs.
  const int L = 96;
  for (const MaskedTileCost mt : {MaskedTileCost{8, 1.85, 1.05}, MaskedTileCost{4, 1.0, 2.0}, MaskedTileCost{1, 1.5, 1.5}}) {
    for (CpScheme s : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
      for (int P : {1, 2, 3}) {
        LayerShape x;
        x.seq_len = L;
        x.cp = P;
        x.cp_scheme = s;
        x.causal = true;
        CAPTURE(to_string(s));
        CAPTURE(P);
        CAPTURE(mt.tile);
        const int t = static_cast<int>(mt.tile);
        for (bool forward : {true, false}) {
          const double cost = forward ? mt.forward : mt.backward;
          for (int r = 0; r < P; ++r) {
          double rank_equiv = 0, rank_visible = 0;
          for (int j = 0; j < P; ++j) {
            const std::vector<int> q = rank_positions(s, L, P, r), kv = rank_positions(s, L, P, j);
            double equiv = 0;
            for (size_t a = 0; a < q.size(); a += t)
              for (size_t b = 0; b < kv.size(); b += t) {
                int seen = 0;
                for (int i = 0; i < t; ++i)
                  for (int k = 0; k < t; ++k) seen += kv[b + k] <= q[a + i] ? 1 : 0;
                if (seen == t * t) equiv += t * t;
                else if (seen > 0) equiv += cost * t * t;
              }
            const double visible = block_visible_pairs(s, L, P, r, j, true);
            const double model = visible + block_masked_extra(x, r, j, mt, forward);
            const double slack = s == CpScheme::striped && j > r && t > 1 ? -double(kv.size()) : 0.0;
            CHECK(model - equiv == Approx(slack));
            rank_equiv += model;
            rank_visible += visible;
          }
          CHECK(rank_equiv == Approx(rank_visible + ring_masked_extra(x, mt, forward).rank_total));
          }
        }
      }
    }
  }
  // Materialised attention, non-causal and an exact profile have no masked work.
  LayerShape x;
  x.seq_len = 1024;
  x.cp = 2;
  x.cp_scheme = CpScheme::striped;
  const MaskedTileCost mt{64, 1.85, 1.05};
  CHECK(ring_masked_extra(x, mt, true).rank_total > 0);
  CHECK(ring_masked_extra(x, MaskedTileCost{}, true).rank_total == 0.0);
  x.attention = AttentionImpl::materialized;
  CHECK(ring_masked_extra(x, mt, true).rank_total == 0.0);
  x.attention = AttentionImpl::flash;
  x.causal = false;
  CHECK(ring_masked_extra(x, mt, true).rank_total == 0.0);
}
