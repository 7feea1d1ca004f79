// Per-layer formulas of the cost model (see formulas.hpp for the sources and conventions).
#include "sim/formulas.hpp"

#include "core/documents.hpp"

#include <algorithm>

namespace ringplan::sim {

LayerShape make_layer_shape(const ModelConfig& m, const TrainingConfig& t, const Mesh& mesh,
                            const ParallelOptions& opt) {
  LayerShape x;
  x.micro_batch = static_cast<double>(opt.micro_batch);
  x.seq_len = static_cast<double>(t.seq_len);
  x.hidden = static_cast<double>(m.hidden);
  x.heads = static_cast<double>(m.heads);
  x.kv_heads = static_cast<double>(m.kv_heads > 0 ? m.kv_heads : m.heads);
  x.head_dim = static_cast<double>(m.head_dim > 0 ? m.head_dim : (m.heads > 0 ? m.hidden / m.heads : 0));
  x.ffn_hidden = static_cast<double>(m.ffn_hidden);
  x.gated_mlp = m.gated_mlp;
  x.tp = static_cast<double>(mesh.tp);
  x.cp = static_cast<double>(mesh.cp);
  // Sequence parallelism only changes anything when there is a TP group to scatter over.
  x.sequence_parallel = opt.sequence_parallel && mesh.tp > 1;
  x.tp_dtensor = x.sequence_parallel && t.tp_dtensor;
  x.causal = t.causal;
  x.cp_scheme = opt.cp_scheme;
  x.attention = opt.attention;
  x.flash_kernel = t.flash_kernel;
  x.cp_comm = opt.cp_comm;
  // The caller resolves cp_a2a_size 0 (sim::cp_a2a_size_of); 1 (the plain ring) if it did not.
  x.cp_a2a = opt.cp_comm == CpComm::hybrid && opt.cp_a2a_size > 0 ? static_cast<double>(opt.cp_a2a_size) : 1.0;
  x.recompute = opt.recompute;
  // Only the presence of dropout changes memory and traffic (masks, dropout outputs).
  x.dropout = m.dropout > 0.0;
  x.activation_bytes = dtype_bytes(t.dtype);
  x.autocast = t.autocast;
  x.eager_elementwise = t.eager_elementwise;
  x.norm = t.norm;
  x.separate_projections = t.separate_projections;
  x.rope = m.rope;
  if (t.fp8 && t.fp8_torchao) {
    const int64_t shard = mesh.dp * mesh.cp / std::max<int64_t>(opt.dp_replicate, 1);
    // The weights are FSDP-gathered under ZeRO-3, and once per step under the ZeRO-1 form
    // PyTorch FSDP2 takes with a pipeline (no reshard between micro-batches).
    x.fp8_weights_gathered = t.fp8_all_gather && opt.zero_stage >= 1 && shard > 1;
    // Per forward: amax (read 2) and a cast writing both layouts (read 2, write 1 + 1); with the
    // FP8 gather, the cast is on the shard (counted with the gathers) and the backward copies
    // the gathered weight to column-major (read 1, write 1).
    x.fp8_weight_fwd_bytes = x.fp8_weights_gathered ? 0.0 : 6.0;
    x.fp8_weight_bwd_bytes = x.fp8_weights_gathered ? 2.0 : 0.0;
    x.fp8_tp_all_gather = x.sequence_parallel;
  }
  if (t.documents && !t.documents->lengths.empty() && mesh.cp >= 1) {
    // The precomputed entry (sim::prepare_document_work), else computed here: the same closed
    // form, allocation-free but O(documents x CP), which the planner's loop must not pay.
    const DocumentSpec::Work* found = nullptr;
    for (const DocumentSpec::Work& w : t.documents->work)
      if (w.cp == mesh.cp && w.scheme == opt.cp_scheme && w.causal == t.causal) found = &w;
    if (found != nullptr) {
      x.document_pair_fraction = found->pair_fraction;
      x.document_imbalance = found->imbalance;
    } else {
      const DocumentAttentionWork w = document_attention_work(t.documents->lengths, opt.cp_scheme, mesh.cp, t.causal);
      x.document_pair_fraction = w.pair_fraction;
      x.document_imbalance = w.imbalance;
    }
  }
  return x;
}

double layer_params(const ModelConfig& m) {
  const double h = static_cast<double>(m.hidden);
  const double q = static_cast<double>(m.heads * m.head_dim);
  const double kv = static_cast<double>(m.kv_heads * m.head_dim);
  const double f = static_cast<double>(m.ffn_hidden);
  const double mlp_matrices = m.gated_mlp ? 3.0 : 2.0;
  return h * (q + 2.0 * kv) + q * h + mlp_matrices * h * f + 2.0 * h;
}

double model_params(const ModelConfig& m) {
  const double h = static_cast<double>(m.hidden);
  const double v = static_cast<double>(m.vocab);
  return static_cast<double>(m.layers) * layer_params(m) + v * h * (m.tied_embeddings ? 1.0 : 2.0) + h;
}

StateBytes state_bytes_per_param(DType dtype, Optimizer opt, bool fp32_grad_accumulation) {
  const bool mixed = dtype != DType::fp32;
  const double w = dtype_bytes(dtype);
  StateBytes s;
  s.weights = w;
  s.gradients = mixed && fp32_grad_accumulation ? 4.0 : w;
  if (opt == Optimizer::adam) s.optimizer = mixed ? 12.0 : 8.0;  // (fp32 master +) two moments
  else s.optimizer = mixed ? 8.0 : 4.0;                           // (fp32 master +) momentum
  return s;
}

double ring_buffer_bytes(const LayerShape& x) {
  if (x.cp <= 1) return 0.0;
  // Invariant: exactly the ring buffers runtime/ring_attention.cpp allocates when P > 1 (and
  // reports as RingWorkspaceBytes::kv_ring_bytes + dkv_ring_bytes; none when P = 1):
  //   kv_buf_[2]:   2 x [K | V] of one block (double buffer, forward and backward);
  //   dkv_recv_[2]: 2 x [dK | dV] fp32, the accumulators arriving from r-1 (and, at the last
  //                 step, this rank's complete dK,dV coming home);
  //   dkv_work_[2]: 2 x [dK | dV] fp32 scratch, this rank's contribution + the arriving one,
  //                 sent on while the next step computes (so 4 fp32 dK,dV blocks in all).
  // The runtime's per-block (O, lse) and D = rowsum(dO*O) are not ring buffers (block_out_bytes).
  // One K or V block: b * (L/CP) * (a_kv/t) * d elements.
  const double block_elems = x.tokens() * (x.kv_heads / x.tp) * x.head_dim;
  const double kv_double_buffer = 2.0 /*buffers*/ * 2.0 /*K,V*/ * block_elems * x.activation_bytes;
  const double dkv_buffers = 4.0 /*2 receive + 2 scratch*/ * 2.0 /*dK,dV*/ * block_elems * 4.0;  // fp32
  return kv_double_buffer + dkv_buffers;
}

double allgather_buffer_bytes(const LayerShape& x) {
  if (x.cp <= 1) return 0.0;
  // Invariant: runtime/allgather_attention.cpp's packed_ (2 x full), k_full_, v_full_,
  // dk_full_, dv_full_ (1 x full each); one "full" = b * L * (a_kv/t) * d elements.
  const double full_elems = x.micro_batch * x.seq_len * (x.kv_heads / x.tp) * x.head_dim;
  return 6.0 * full_elems * x.activation_bytes;
}

double alltoall_buffer_bytes(const LayerShape& x) {
  if (x.cp <= 1) return 0.0;
  // Invariant: runtime/alltoall_attention.cpp's send_, recv_, qh_, oh_, doh_, dqh_ (Q-sized) and
  // kh_, vh_, dkh_, dvh_ (KV-sized); lse and D (fp32 rows) are not counted, as for all-gather.
  const double q_heads = x.heads / x.tp / x.cp;
  const double kv_heads = std::max(1.0, x.kv_heads / x.tp / x.cp);
  const double per_head = x.micro_batch * x.seq_len * x.head_dim;
  return (6.0 * q_heads + 4.0 * kv_heads) * per_head * x.activation_bytes;
}

LayerShape hybrid_ring_stage(const LayerShape& x) {
  LayerShape r = x;
  const double a = std::max(1.0, x.cp_a2a);
  r.cp = x.cp / a;
  r.cp_a2a = 1;
  r.cp_comm = CpComm::ring;
  r.heads = x.heads / a;
  r.kv_heads = x.tp * std::max(1.0, x.kv_heads / x.tp / a);
  r.hidden = r.heads * x.head_dim;
  return r;
}

double hybrid_buffer_bytes(const LayerShape& x) {
  if (x.cp <= 1) return 0.0;
  // The all-to-all stage: an A-rank group whose "whole sequence" is its L/R tokens.
  const double a = std::max(1.0, x.cp_a2a);
  LayerShape group = x;
  group.cp = a;
  group.seq_len = x.seq_len * a / x.cp;
  return alltoall_buffer_bytes(group) + ring_buffer_bytes(hybrid_ring_stage(x));
}

double cp_buffer_bytes(const LayerShape& x) {
  switch (x.cp_comm) {
    case CpComm::allgather: return allgather_buffer_bytes(x);
    case CpComm::alltoall: return alltoall_buffer_bytes(x);
    case CpComm::hybrid: return hybrid_buffer_bytes(x);
    case CpComm::ring: break;
  }
  return ring_buffer_bytes(x);
}

double ring_forward_step_bytes(const LayerShape& x) {
  return 2.0 * x.tokens() * (x.kv_heads / x.tp) * x.head_dim * x.activation_bytes;
}

double ring_backward_step_bytes(const LayerShape& x) {
  return 2.0 * x.tokens() * (x.kv_heads / x.tp) * x.head_dim * (x.activation_bytes + 4.0);
}

double norm_saved_bytes_per_element(const LayerShape& x) {
  const double e = x.activation_bytes;
  // Without autocast a norm in PyTorch ops upcasts its e-byte input (torchtitan's RMSNorm:
  // `self._norm(x.float()).type_as(x) * self.weight`): pow and the product with rsqrt save the
  // float32 copy, the product with the weight the e-byte cast back, the linear layer its e-byte
  // input: 4 + 2e; a fused norm its input and the linear layer its own: 2e.
  if (!x.autocast) return x.norm == NormImpl::eager ? 4.0 + 2.0 * e : 2.0 * e;
  // Under autocast the norm's input is the float32 residual stream. A norm in PyTorch ops
  // (bench/gpu/torch_step_bench.py's RMSNorm, Hugging Face's LlamaRMSNorm) also saves its float32
  // output (the product with its scale saves it; the linear layer saves the e-byte cast): 4 + 4 + e.
  // A fused float32 norm (F.layer_norm, which autocast runs in float32) saves its input, not its
  // output: 4 + e. A low-precision norm (llm-foundry's LPLayerNorm) saves the e-byte copy of its
  // input and its e-byte output, which the linear layer saves as is: 2e.
  switch (x.norm) {
    case NormImpl::eager: return 4.0 + 4.0 + e;
    case NormImpl::low_precision: return 2.0 * e;
    case NormImpl::fused: break;
  }
  return 4.0 + e;
}

double output_block_stored_bytes(const LayerShape& x) {
  const double rows = x.tokens() * x.replicated_share();
  // The final norm and the output layer's input keep what a block's norm and linear layer keep
  // (norm_saved_bytes_per_element), plus the norm's float32 row statistics; under DTensor TP the
  // output layer keeps its all-gathered input whole (the rows beyond the shard, e bytes each).
  const double gathered_rows = x.tp_dtensor ? x.tokens() - rows : 0.0;
  return rows * (x.hidden * norm_saved_bytes_per_element(x) + 4.0) + gathered_rows * x.hidden * x.activation_bytes;
}

double materialized_scores_bytes(const LayerShape& x) {
  // Scores of a rank's queries against all keys: b * (a/t) * (L/CP) * L elements; softmax
  // output (e) [+ dropout mask (1) + dropout output (e)]: Korthikanti's 5*a*s^2*b.
  const double score_elems = x.micro_batch * (x.heads / x.tp) * (x.seq_len / x.cp) * x.seq_len;
  return score_elems * (x.activation_bytes + (x.dropout ? x.activation_bytes + 1.0 : 0.0));
}

double flash_lse_bytes(const LayerShape& x) {
  // Flash keeps only the fp32 log-sum-exp per query row and head.
  return x.micro_batch * (x.heads / x.tp) * (x.seq_len / x.cp) * 4.0;
}

RingMergeBytes ring_merge_bytes(const LayerShape& x) {
  RingMergeBytes m;
  if (x.cp <= 1) return m;
  const double per_elem = 8.0 + x.activation_bytes;
  const double q_elems = x.tokens() * (x.heads / x.tp) * x.head_dim;
  const double kv_elems = x.tokens() * (x.kv_heads / x.tp) * x.head_dim;
  m.forward_per_step = per_elem * q_elems;
  m.backward_per_step = per_elem * (q_elems + 2.0 * kv_elems);
  return m;
}

SelectiveOpRecompute selective_op_recompute(const LayerShape& x) {
  SelectiveOpRecompute r;
  const double e = x.activation_bytes, T = x.tokens(), t = x.tp;
  const double q = x.heads * x.head_dim, kv = x.kv_heads * x.head_dim;
  r.qkv = kv / (q + 2.0 * kv);  // wk re-run; wq and wv saved
  r.out = 1.0;                  // wo (4th) re-run
  // The row-parallel output (wo, w2) holds all T rows before its reduction, whatever t.
  double saved = e * T * (q + kv) / t;
  if (x.gated_mlp) {
    r.mlp_up = 0.5;    // w3 re-run, w1 saved
    r.mlp_down = 0.0;  // w2 (7th) saved
    saved += e * T * x.ffn_hidden / t + e * T * x.hidden;
  } else {
    r.mlp_up = 0.0;    // up (5th) saved
    r.mlp_down = 1.0;  // down (6th) re-run
    saved += e * T * x.ffn_hidden / t;
  }
  r.saved_gemm_output_bytes = saved;
  return r;
}

LayerActivationBytes layer_activation_bytes(const LayerShape& x) {
  const double e = x.activation_bytes;
  const double T = x.tokens();  // s*b/CP
  const double t = x.tp;
  const double h = x.hidden;
  const double q = x.heads * x.head_dim;
  const double kv = x.kv_heads * x.head_dim;
  const double r = x.replicated_share();
  const double mask = x.dropout ? 1.0 : 0.0;  // 1-byte dropout masks

  // Korthikanti Sec. 4.1, per layer. Not TP-sharded (only SP splits them):
  //   LN1 input, QKV input (LN1 output), LN2 input, fc1 input: 4 * e*T*h
  //   dropout masks after attention and after the MLP: 2 * T*h bytes
  // The two norms and the linear inputs after them: norm_saved_bytes_per_element each.
  const double norms = 2.0 * norm_saved_bytes_per_element(x);
  // The QKV and MLP inputs (2e of the norms' bytes) stay whole where the linear layers keep their
  // all-gathered input (TrainingConfig::tp_dtensor).
  const double linear_inputs = x.tp_dtensor ? 2.0 * e * T * h * (1.0 - r) : 0.0;
  const double replicated = (norms + 2.0 * mask) * T * h * r + linear_inputs;
  const double layer_input = x.residual_bytes() * T * h * r;  // what full recompute keeps
  // TP-sharded: Q (a*d), K and V (a_kv*d each), attention output = out-proj input (a*d);
  // MLP: activation input and output (f each), gated: gate and up outputs and their product.
  const double attention_sharded = e * T * (q + 2.0 * kv + q) / t;
  const double mlp_sharded = e * T * x.ffn_hidden * (x.gated_mlp ? 3.0 : 2.0) / t;
  // Eager element-wise ops keep more (TrainingConfig::eager_elementwise), counted as torchtitan's
  // and Hugging Face's Llama code runs (separate Q, K, V projections): the attention output's
  // contiguous copy for the output projection (q; none after the Triton kernel,
  // attention_output_copied), a gated MLP's SiLU output beside its input
  // (f; GeLU's input and output are the not-gated MLP's two tensors already), and with GQA the
  // K and V that repeat_kv expands to the query heads before SDPA, which saves the expanded
  // copies (2(q - kv) beyond the kv-wide K and V above). RoPE keeps nothing: its products are with
  // constant tables, whose autograd saves only the tables. A fused QKV projection whose V is a
  // view of the projection's output (bench/gpu/torch_step_bench.py, SDPA's enable_gqa) keeps
  // that output, q + kv instead of 2(q - kv): the same within kv at Llama 3's four query heads per
  // KV head.
  const double gqa_copies = 2.0 * std::max(q - kv, 0.0);
  const double out_copy = attention_output_copied(x) ? q : 0.0;
  const double eager =
      x.eager_elementwise ? e * T * (out_copy + (x.gated_mlp ? x.ffn_hidden : 0.0) + gqa_copies) / t : 0.0;
  const double layer_no_scores = replicated + attention_sharded + mlp_sharded + eager;

  const double scores = x.attention == AttentionImpl::materialized ? materialized_scores_bytes(x) : flash_lse_bytes(x);

  LayerActivationBytes out;
  switch (x.recompute) {
    case Recompute::none:
      out.stored_bytes = layer_no_scores;
      out.scores_bytes = scores;
      break;
    case Recompute::selective:
      // The attention core (scores, softmax, dropout) is re-run in backward from the stored
      // Q, K, V: its scores are not kept, but live again while this layer runs backward.
      out.stored_bytes = layer_no_scores;
      out.scores_bytes = 0.0;
      out.backward_working_bytes = scores;
      out.backward_working_scores_bytes = scores;
      break;
    case Recompute::selective_op: {
      // What the policy saves: the layer input, attention's output and lse (or scores), the saved
      // linear outputs and, with SP, the two reduce-scatter outputs (selective_op_recompute). Of
      // these, the w2 output (gated) and the reduce-scatter outputs are not among the tensors of
      // layer_no_scores; the rest are, and are not re-run. Backward re-runs the rest of
      // layer_no_scores, which lives again while this layer runs backward.
      const double w2_out = x.gated_mlp ? e * T * h : 0.0;
      const double scattered = x.sequence_parallel ? 2.0 * e * T * h * r : 0.0;
      const double saved = layer_input + e * T * q / t + selective_op_recompute(x).saved_gemm_output_bytes + scattered;
      // Eager PyTorch (torch.utils.checkpoint's selective mode) caches the output of every op the
      // policy saves until the block's backward, whether a backward op reads it or not. A compiled
      // block (torch.compile; fused element-wise work, TrainingConfig::eager_elementwise false) is
      // split by AOTAutograd's min-cut partitioner instead: a must-save op is kept from being re-run,
      // but only the values on the cut to the backward's inputs are saved
      // (torch/_functorch/partitioners.py, solve_min_cut). The block's last result, w2's output
      // (gated; the 7th matmul, saved by the policy) and with SP its reduce-scatter, is added to
      // the residual stream and read by no backward op: not kept. The out projection's
      // reduce-scatter is, as the backward re-forms the residual stream from it.
      const double unread = x.eager_elementwise ? 0.0 : w2_out + (x.sequence_parallel ? e * T * h * r : 0.0);
      out.stored_bytes = saved - unread;
      out.scores_bytes = scores;
      out.backward_working_bytes = std::max(0.0, layer_no_scores - (saved - w2_out - scattered));
      break;
    }
    case Recompute::full:
      // Only the layer input is kept (scattered over TP with SP); backward re-runs the layer
      // forward, so one layer's full activations are live again during its backward.
      out.stored_bytes = layer_input;
      out.scores_bytes = 0.0;
      out.backward_working_bytes = layer_no_scores + scores;
      out.backward_working_scores_bytes = scores;
      break;
  }
  return out;
}

LayerGemmFlops layer_gemm_flops(const LayerShape& x) {
  const double T = x.tokens();
  const double h = x.hidden;
  const double q = x.heads * x.head_dim;
  const double kv = x.kv_heads * x.head_dim;
  LayerGemmFlops g;
  g.qkv = 2.0 * T * h * (q + 2.0 * kv) / x.tp;
  g.out = 2.0 * T * q * h / x.tp;
  g.mlp_up = 2.0 * T * h * x.ffn_hidden * (x.gated_mlp ? 2.0 : 1.0) / x.tp;
  g.mlp_down = 2.0 * T * x.ffn_hidden * h / x.tp;
  g.tokens = T;
  // Column-parallel GEMMs (QKV, MLP up) split N by TP, row-parallel ones (out, MLP down) K.
  g.k_qkv = h;
  g.n_qkv = (q + 2.0 * kv) / x.tp;
  g.k_out = q / x.tp;
  g.n_out = h;
  g.k_mlp_up = h;
  g.n_mlp_up = x.ffn_hidden * (x.gated_mlp ? 2.0 : 1.0) / x.tp;
  g.k_mlp_down = x.ffn_hidden / x.tp;
  g.n_mlp_down = h;
  return g;
}

double logits_flops(const LayerShape& x, double vocab) {
  return 2.0 * x.tokens() * x.hidden * vocab / x.tp;
}

RingPairs ring_pairs(CpScheme scheme, double seq_len, double cp, bool causal) {
  RingPairs p;
  const double L = seq_len;
  const double P = cp < 1 ? 1 : cp;
  const double c = L / P;  // tokens per rank
  if (!causal) {
    p.diagonal_pairs = c * c;
    p.off_diagonal_max_pairs = c * c;
    p.mean_rank_pairs = L * L / P;
  } else {
    p.mean_rank_pairs = L * (L + 1.0) / 2.0 / P;
    switch (scheme) {
      case CpScheme::contiguous:
        p.diagonal_pairs = c * (c + 1.0) / 2.0;
        p.off_diagonal_max_pairs = c * c;
        break;
      case CpScheme::zigzag: {
        const double h = c / 2.0;  // chunk of 2P
        // own chunks r and 2P-1-r: two diagonal triangles + chunk 2P-1-r fully sees chunk r
        p.diagonal_pairs = 2.0 * h * h + h;
        p.off_diagonal_max_pairs = 2.0 * h * h;
        break;
      }
      case CpScheme::striped:
        p.diagonal_pairs = c * (c + 1.0) / 2.0;
        p.off_diagonal_max_pairs = c * (c + 1.0) / 2.0;
        break;
    }
  }
  if (P <= 1) p.off_diagonal_max_pairs = 0.0;
  p.max_rank_pairs = p.diagonal_pairs + (P - 1.0) * p.off_diagonal_max_pairs;
  return p;
}

RingPairs layer_ring_pairs(const LayerShape& x) {
  RingPairs p = ring_pairs(x.cp_scheme, x.seq_len, x.cp, x.causal);
  if (x.document_imbalance <= 0) return p;
  p.diagonal_pairs *= x.document_pair_fraction;
  p.off_diagonal_max_pairs *= x.document_pair_fraction;
  p.mean_rank_pairs *= x.document_pair_fraction;
  p.max_rank_pairs = p.mean_rank_pairs * x.document_imbalance;
  return p;
}

double rank_visible_pairs(CpScheme scheme, double seq_len, double cp, double rank, bool causal) {
  const double L = seq_len, P = cp, r = rank;
  const double c = L / P;
  if (!causal) return c * L;
  switch (scheme) {
    case CpScheme::contiguous: return c * (r * c) + c * (c + 1.0) / 2.0;
    case CpScheme::zigzag: {
      const double h = c / 2.0;
      return h * h * (2.0 * P - 1.0) + h * (h + 1.0);
    }
    case CpScheme::striped: return c * (r + 1.0) + P * c * (c - 1.0) / 2.0;
  }
  return 0.0;
}

double block_visible_pairs(CpScheme scheme, double seq_len, double cp, int64_t rank, int64_t block, bool causal) {
  const double c = seq_len / cp;
  if (!causal) return c * c;
  switch (scheme) {
    case CpScheme::contiguous: return block < rank ? c * c : (block == rank ? c * (c + 1.0) / 2.0 : 0.0);
    case CpScheme::zigzag: {
      const double h = c / 2.0;
      return block == rank ? 2.0 * h * h + h : 2.0 * h * h;
    }
    case CpScheme::striped: return block <= rank ? c * (c + 1.0) / 2.0 : c * (c - 1.0) / 2.0;
  }
  return 0.0;
}

double masked_square_extra_pairs(double m, const MaskedTileCost& mt, bool forward) {
  // A tile of one pair is visible or hidden, never masked: nothing beyond the visible pairs.
  const double t = std::min(static_cast<double>(mt.tile), m);
  if (t <= 1.0) return 0.0;
  const double cost = forward ? mt.forward : mt.backward;
  return m * (cost * t - (t + 1.0) / 2.0);
}

RingMaskedExtra ring_masked_extra(const LayerShape& x, const MaskedTileCost& mt, bool forward) {
  RingMaskedExtra e;
  if (!x.causal || x.attention == AttentionImpl::materialized || mt.is_exact()) return e;
  const double P = x.cp < 1 ? 1 : x.cp;
  const double c = x.seq_len / P;
  switch (x.cp_scheme) {
    case CpScheme::contiguous: e.first_step = masked_square_extra_pairs(c, mt, forward); break;
    case CpScheme::zigzag: e.first_step = 2.0 * masked_square_extra_pairs(c / 2.0, mt, forward); break;
    case CpScheme::striped:
      e.first_step = masked_square_extra_pairs(c, mt, forward);
      if (P > 1) e.later_step = e.first_step;
      break;
  }
  e.rank_total = e.first_step + (P - 1.0) * e.later_step;
  return e;
}

double rank_masked_flops(const LayerShape& x, const MaskedTileCost& mt, bool forward) {
  return attention_pair_flops(x) * ring_masked_extra(x, mt, forward).rank_total;
}

double block_masked_extra(const LayerShape& x, int64_t rank, int64_t block, const MaskedTileCost& mt, bool forward) {
  const RingMaskedExtra e = ring_masked_extra(x, mt, forward);
  return block == rank ? e.first_step : e.later_step;
}

RingVisibleBlocks ring_visible_blocks(CpScheme scheme, double seq_len, double cp, bool causal) {
  // A block is skipped when its smallest key position exceeds the rank's largest query
  // position (runtime/ring_attention.cpp hidden_). Zigzag: every rank holds a chunk of each
  // half, so it sees part of every block. Striped with L/P >= 2: block j > r still has
  // n(n-1)/2 visible pairs. Contiguous (and striped with one token per rank): rank r sees
  // blocks 0..r: slowest P, mean (P+1)/2.
  RingVisibleBlocks v;
  v.max_rank = cp;
  v.mean_rank = cp;
  const bool prefix = scheme == CpScheme::contiguous || (scheme == CpScheme::striped && seq_len / cp < 2.0);
  if (causal && prefix) v.mean_rank = (cp + 1.0) / 2.0;
  return v;
}

double attention_pair_flops(const LayerShape& x) { return 4.0 * x.micro_batch * (x.heads / x.tp) * x.head_dim; }

bool attention_output_copied(const LayerShape& x) {
  return !(x.attention == AttentionImpl::flash && x.flash_kernel == FlashKernel::triton);
}

double projection_gradient_sum_bytes(const LayerShape& x) {
  if (!x.separate_projections) return 0.0;
  // Pairwise sums per layer: two for Q, K and V's partial input gradients, one for a gated MLP's
  // gate and up. Compiled, each is one more partial the consuming kernel reads; eager, an add that
  // reads two and writes one.
  const double sums = x.gated_mlp ? 3.0 : 2.0;
  const double elements = x.eager_elementwise ? 3.0 * sums : sums;
  return elements * x.tokens() * x.hidden * x.activation_bytes;
}

AttentionFlops attention_forward_flops(const LayerShape& x) {
  const double per_pair = attention_pair_flops(x);
  AttentionFlops f;
  if (x.attention == AttentionImpl::materialized) {
    // Every block the rank sees is computed in full (masked afterwards); fully hidden blocks
    // are skipped, as the runtime does for both kernels.
    const double c = x.seq_len / x.cp;
    const RingVisibleBlocks vb = ring_visible_blocks(x.cp_scheme, x.seq_len, x.cp, x.causal);
    f.per_step_kernel = per_pair * c * c;
    f.mean_rank = f.per_step_kernel * vb.mean_rank;
    f.max_rank = f.per_step_kernel * vb.max_rank;
    return f;
  }
  const RingPairs p = layer_ring_pairs(x);
  f.mean_rank = per_pair * p.mean_rank_pairs;
  f.max_rank = per_pair * p.max_rank_pairs;
  f.per_step_kernel = per_pair * (x.cp > 1 ? p.off_diagonal_max_pairs : p.diagonal_pairs);
  return f;
}

AttentionCoreBytes attention_core_elementwise_bytes(const LayerShape& x) {
  // Materialised attention: fused scale-mask-softmax reads and writes every score (2e);
  // its backward reads y and dy and writes dx (3e); dropout on the probabilities adds a
  // read, a write and a mask byte each way. Flash does all of this inside the kernel.
  AttentionCoreBytes b;
  if (x.attention != AttentionImpl::materialized) return b;
  const double e = x.activation_bytes;
  const double s_elems = x.micro_batch * (x.heads / x.tp) * (x.seq_len / x.cp) * x.seq_len;
  const double dropout = x.dropout ? 2.0 * e + 1.0 : 0.0;
  b.forward = (2.0 * e + dropout) * s_elems;
  b.backward = (3.0 * e + dropout) * s_elems;
  return b;
}

namespace {

// Eager (one PyTorch op per kernel) element-wise traffic of one layer, per device and
// micro-batch, counted op by op from the code that runs it and the backward formulas autograd
// applies (PyTorch tools/autograd/derivatives.yaml, FunctionsManual.cpp). Bytes per element, e
// = activation bytes, r = residual-stream bytes (4 under autocast, else e), [r<4] = 1 when the
// residual is 16-bit:
//  * RMSNorm as torchtitan's RMSNorm / torch.nn.RMSNorm's composite (upcast, pow, mean, rsqrt,
//    mul, cast back, mul by the weight), per hidden element:
//      forward  [r<4](r + 4) + pow 8 + mean 4 + mul 8 + [r<4](4 + r) + weight 2r
//               = 20 + 2r + [r<4](2r + 8)                        (36 at r = 2, 28 at r = 4);
//      backward weight mul 6r (grad * w; grad * normed, then its sum over tokens),
//               [r<4](r + 4) + mul 8 + sum(grad * x) 16 + mean 4
//               + pow 28 (self.pow(1), times 2, times grad) + the two x-gradients added 12
//               + [r<4](4 + r) = 68 + 6r + [r<4](2r + 8)       (92 at r = 2 and at r = 4).
//    A fused norm (NormImpl::fused: Transformer Engine, apex, torchtitan's
//    fused_rmsnorm): 2r forward, 3r backward.
//  * autocast (LayerShape::autocast) casts each norm's float32 output to e for the next linear
//    layer: 4 + e per hidden element both ways, twice per layer.
//  * residual add of the branch output into the stream: 2r + e forward; backward adds the
//    norm's input gradient into the stream's: 3r, and when the stream is float32 (r > e) casts
//    its gradient down for the e-byte branch: r + e; twice per layer.
//  * RoPE on Q and K (torchtitan's apply_rotary_emb: .float(), complex multiply, type_as):
//    (e + 4) + 8 + (4 + e) = 2e + 16 per Q or K element, the same backward.
//    ringplan's bench/gpu/torch_step_bench.py rotates halves in e bytes (9e = 18): within
//    2 bytes per element of this count.
//  * attention output copied from [b, heads, s, d] to [b, s, heads x d] (transpose +
//    contiguous): 2e per Q element, again for its gradient; not with the Triton kernel
//    (attention_output_copied).
//  * gated MLP: silu(gate) 2e, times up 3e forward (5e); backward the product's two gradients
//    3e each and silu's 3e (9e) per FFN element. Not gated: the activation 2e / 3e.
//  * GQA (kv heads < query heads): torchtitan's and Hugging Face's repeat_kv copies K and V to
//    the query heads (read kv, write q, each), and its backward sums them back (read q, write
//    kv): 2e(q + kv) each way. SDPA's enable_gqa needs no copy (bench/gpu/torch_step_bench.py:
//    within 1 % of its layer traffic).
// Not counted: the split/chunk of fused QKV or up projections (views forward, one gradient
// concatenation back).
LayerElementwiseBytes eager_layer_elementwise_bytes(const LayerShape& x) {
  const double e = x.activation_bytes;
  const double r = x.residual_bytes();
  const double half = r < 4.0 ? 1.0 : 0.0;  // [r < 4]: the norm upcasts and casts back
  const double T = x.tokens();
  const double h_elems = T * x.hidden * x.replicated_share();
  const double q_elems = T * x.heads * x.head_dim / x.tp;
  const double kv_elems = T * x.kv_heads * x.head_dim / x.tp;
  const double f_elems = T * x.ffn_hidden / x.tp;
  const double mask = x.dropout ? 1.0 : 0.0;
  // A low-precision norm under autocast (r > e) casts its input down (r + e each way) and runs in
  // e bytes (2e forward, 3e backward); its output needs no cast for the linear layer.
  const bool eager = x.norm == NormImpl::eager, low = x.norm == NormImpl::low_precision && r > e;
  const double norm_fwd = eager ? 20.0 + 2.0 * r + half * (2.0 * r + 8.0) : low ? r + 3.0 * e : 2.0 * r;
  const double norm_bwd = eager ? 68.0 + 6.0 * r + half * (2.0 * r + 8.0) : low ? r + 4.0 * e : 3.0 * r;
  const double cast = x.autocast && !low ? 4.0 + e : 0.0;
  const double hidden_fwd = 2.0 * (norm_fwd + cast + 2.0 * r + e + mask);
  // Under autocast the residual add promotes the e-byte branch output into the float32 stream; its
  // backward casts the stream's gradient down for the branch (autograd's engine casts a gradient to
  // its input's dtype, validate_outputs): r + e more per add.
  const double branch_grad_cast = r > e ? r + e : 0.0;
  const double hidden_bwd = 2.0 * (norm_bwd + cast + 3.0 * r + branch_grad_cast + mask);
  const double rope = x.rope ? 2.0 * e + 16.0 : 0.0;  // learned positions: added once, before the layers
  const double act_fwd = x.gated_mlp ? 5.0 * e : 2.0 * e;
  const double act_bwd = x.gated_mlp ? 9.0 * e : 3.0 * e;
  const double repeat_kv = kv_elems < q_elems ? 2.0 * e * (q_elems + kv_elems) : 0.0;
  const AttentionCoreBytes core = attention_core_elementwise_bytes(x);
  LayerElementwiseBytes b;
  b.attention_core_forward = core.forward;
  b.attention_core_backward = core.backward;
  const double out_copy = attention_output_copied(x) ? 2.0 * e * q_elems : 0.0;
  b.forward = hidden_fwd * h_elems + rope * (q_elems + kv_elems) + out_copy + repeat_kv +
              act_fwd * f_elems + core.forward;
  b.backward = hidden_bwd * h_elems + rope * (q_elems + kv_elems) + out_copy + repeat_kv +
               act_bwd * f_elems + core.backward + projection_gradient_sum_bytes(x);
  return b;
}

}  // namespace

LayerElementwiseBytes layer_elementwise_bytes(const LayerShape& x) {
  if (x.eager_elementwise) return eager_layer_elementwise_bytes(x);
  const double e = x.activation_bytes;
  const double T = x.tokens();
  const double h_elems = T * x.hidden * x.replicated_share();
  const double mask = x.dropout ? 1.0 : 0.0;
  // Forward per hidden element: LN1 (read, write) 2e, residual add (+bias, +dropout: read 2,
  // write 1, mask) 3e, LN2 2e, second residual 3e. Backward: norm backward reads x and dy and
  // writes dx (3e each), residual/dropout backward adds two gradients (3e each).
  const double hidden_fwd = (10.0 * e + 2.0 * mask) * h_elems;
  const double hidden_bwd = (12.0 * e + 2.0 * mask) * h_elems;
  // Activation function on the TP-sharded MLP: read input(s), write output.
  const double f_elems = T * x.ffn_hidden / x.tp;
  const double act_fwd = (x.gated_mlp ? 3.0 : 2.0) * e * f_elems;
  const double act_bwd = (x.gated_mlp ? 5.0 : 3.0) * e * f_elems;
  const AttentionCoreBytes core = attention_core_elementwise_bytes(x);
  const double core_fwd = core.forward, core_bwd = core.backward;
  LayerElementwiseBytes b;
  b.attention_core_forward = core_fwd;
  b.attention_core_backward = core_bwd;
  b.forward = hidden_fwd + act_fwd + core_fwd;
  b.backward = hidden_bwd + act_bwd + core_bwd + projection_gradient_sum_bytes(x);
  return b;
}

double achieved_memory_bandwidth_bytes_per_s(const ClusterConfig& c) {
  return c.memory_bandwidth_bytes_per_s * c.memory_bandwidth_efficiency;
}

LossBytes loss_elementwise_bytes(const LayerShape& x, double vocab, CrossEntropy kind) {
  const double logits = x.tokens() * (vocab / x.tp);
  const double e = x.activation_bytes;
  LossBytes b;
  if (kind == CrossEntropy::fused_16bit) {
    // flash-attn's xentropy kernel: forward reads each row twice (max, then the sum of
    // exponentials and the target's logit); backward reads the logits, writes the gradient.
    b.forward = b.backward = logits * 2.0 * e;
    return b;
  }
  if (kind == CrossEntropy::fused) {
    b.forward = b.backward = logits * (e + 4.0);
    return b;
  }
  // F.cross_entropy(logits.float(), ...) = log_softmax + nll_loss, one kernel each. The row of a
  // modern vocabulary does not fit in shared memory, so PyTorch's softmax kernels stream it from
  // DRAM (aten/src/ATen/native/cuda/SoftMax.cu): forward reads it three times (max, sum of
  // exponentials, output) and writes once: 16 bytes per float32 logit; backward reads the
  // gradient twice and the output once and writes once: 16. nll_loss_backward writes a dense
  // float32 zero gradient (4) before scattering the targets' entries; the upcast of 16-bit
  // logits costs e + 4 each way.
  const double upcast = e < 4.0 ? e + 4.0 : 0.0;
  b.forward = logits * (upcast + 16.0);
  b.backward = logits * (4.0 + 16.0 + upcast);
  return b;
}

double unfused_cross_entropy_bytes_per_logit(int64_t tp) { return tp > 1 ? 16.0 : 12.0; }

double grad_accumulation_bytes_per_param(GradAccumulation mode, double g, double a, double m) {
  switch (mode) {
    case GradAccumulation::fused: return 0.0;
    case GradAccumulation::inplace:
      if (m <= 1.0) return 0.0;
      return (a != g ? g + a : 0.0) + (m - 1.0) * (g + 2.0 * a);
    case GradAccumulation::cast_add: return m * (g + 16.0);
  }
  return 0.0;
}

double optimizer_step_bytes_per_param(DType dtype, Optimizer opt, bool clip_grad, bool autocast) {
  // Megatron-style mixed precision over fp32 master weights and fp32 gradients:
  //   fp16 loss-scale unscale + inf check (read, write grads)        8  (fp16 only)
  //   gradient norm (read grads)                                     4  (clip_grad > 0)
  //   gradient clipping (read, write grads)                          8  (clip_grad > 0)
  //   update: Adam reads p, g, m, v (16), writes p, m, v (12)      28
  //           SGD reads p, g, mom (12), writes p, mom (8)          20
  //   copy master to 16-bit weights (read 4, write 2)                6  (mixed only)
  // Zeroing the gradient buffer is not in it: the buffer is the whole stage's gradients unless
  // ZeRO-2/3 shard them, not the optimizer's shard (sim::predict charges it on the buffer).
  // The clipping pass is charged every step: torch.nn.utils.clip_grad_norm_ (torchtitan, FSDP)
  // scales by min(1, coefficient) unconditionally; Megatron-LM scales only when the norm exceeds
  // the bound, which is most steps early in training and fewer later (the model cannot know the
  // norm; it charges the pass).
  // Autocast (TrainingConfig::autocast) keeps no 16-bit copy of the weights (each forward casts
  // them, counted there): no copy.
  const double update = opt == Optimizer::adam ? 28.0 : 20.0;
  const double unscale = dtype == DType::fp16 ? 8.0 : 0.0;
  const double clip = clip_grad ? 4.0 + 8.0 : 0.0;
  const double copy = dtype == DType::fp32 || autocast ? 0.0 : 6.0;
  return unscale + clip + update + copy;
}

}  // namespace ringplan::sim
