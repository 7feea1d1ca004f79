// Per-layer formulas of the cost model: parameters, activation memory, FLOPs, memory-bound
// traffic and the causal work of each context-parallel (CP) rank. predict() (cost_model.cpp)
// and the one-layer ring prediction (ring_model.cpp) are both built from these functions, so
// the planner and `ringplan run` print the same numbers for the same layer.
//
// Everything here is per device (one TP shard, one CP shard of the sequence) and per
// micro-batch unless the name says otherwise. Pure arithmetic: no allocation, no strings.
//
// Sources (copied from ../shared/reference/formulas.md and checked against the papers):
//  - activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
//    Transformer Models", Sec. 4 / Table 2, re-derived for GQA, gated MLPs, optional dropout;
//  - FLOPs: 2*M*N*K per GEMM; attention 4*b*heads*s_q*s_k*d forward (FlashAttention's
//    convention), backward 2.5x attention and 2x GEMMs (Narayanan et al. 2021);
//  - optimizer bytes: ZeRO (Rajbhandari et al. 2020), 2 + 2 + 12 bytes/param mixed Adam.
#pragma once
#include <cstdint>

#include "core/config.hpp"

namespace ringplan::sim {

// One transformer layer as one device sees it. Built once per prediction.
struct LayerShape {
  double micro_batch = 1;      // b, sequences per micro-batch
  double seq_len = 0;          // L, full sequence (every CP rank sees all keys)
  double hidden = 0;           // h
  double heads = 0;            // a (query heads, whole model)
  double kv_heads = 0;         // a_kv
  double head_dim = 0;         // d
  double ffn_hidden = 0;       // f (per gate branch when gated)
  bool gated_mlp = false;
  double tp = 1;               // TP degree t
  double cp = 1;               // CP degree
  bool sequence_parallel = false;
  // TrainingConfig::tp_dtensor, with sequence parallelism only: the column-parallel linear layers
  // keep their all-gathered input (no backward all-gather); collectives copy through dim 0.
  bool tp_dtensor = false;
  bool causal = true;
  CpScheme cp_scheme = CpScheme::zigzag;
  AttentionImpl attention = AttentionImpl::flash;
  FlashKernel flash_kernel = FlashKernel::standard;  // TrainingConfig::flash_kernel: the flash path's curves
  CpComm cp_comm = CpComm::ring;  // how the CP group exchanges K,V (ring_model.hpp)
  double cp_a2a = 1;           // cp_comm hybrid: the all-to-all group size A (resolved, divides cp); else 1
  Recompute recompute = Recompute::none;
  bool dropout = false;        // ModelConfig::dropout > 0 (Korthikanti's runs used 0.1; modern LLMs 0)
  double activation_bytes = 2; // bytes per activation element (training dtype)
  // TrainingConfig::autocast: the residual stream (layer inputs and outputs, norm inputs) is
  // float32; what each norm saves depends on how it runs (layer_activation_bytes).
  bool autocast = false;
  bool eager_elementwise = false;  // TrainingConfig::eager_elementwise
  NormImpl norm = NormImpl::fused; // TrainingConfig::norm (eager counted only with eager_elementwise)
  bool separate_projections = false;  // TrainingConfig::separate_projections
  bool rope = true;                // ModelConfig::rope: RoPE on Q and K in every layer
  // FP8 weight casts beyond the inputs' (TrainingConfig::fp8_torchao, fp8_all_gather): bytes moved
  // per block weight element on this device in each forward (every micro-batch, every recompute)
  // and each backward; 0 with Transformer Engine (weights cast once per step) or without FP8.
  double fp8_weight_fwd_bytes = 0;
  double fp8_weight_bwd_bytes = 0;
  // torchao's FP8 all-gather of FSDP-sharded weights in effect (ZeRO >= 1 over more than one
  // rank): the block weights gathered at 1 byte per parameter, each shard cast before its gather.
  bool fp8_weights_gathered = false;
  // torchao under sequence-parallel TP: the all-gathers of the linear layers' inputs (forward)
  // and of the output gradients (backward) move FP8, 1 byte per element.
  bool fp8_tp_all_gather = false;
  double residual_bytes() const { return autocast ? 4.0 : activation_bytes; }
  // Packed documents (TrainingConfig::documents; core/documents.hpp document_attention_work for
  // this scheme and CP): the visible pairs with documents / without, and the slowest rank's
  // work / the mean rank's. document_imbalance 0: no documents (the scheme's closed forms).
  double document_pair_fraction = 1;
  double document_imbalance = 0;

  double tokens() const { return micro_batch * seq_len / cp; }  // tokens this rank holds
  // Replicated (non-TP-sharded) hidden-size tensors are split by t only with sequence parallelism.
  double replicated_share() const { return sequence_parallel ? 1.0 / tp : 1.0; }
};

LayerShape make_layer_shape(const ModelConfig& m, const TrainingConfig& t, const Mesh& mesh,
                            const ParallelOptions& opt);

// ---------------------------------------------------------------- parameters
// Parameters of one layer: QKV (GQA: a*d + 2*a_kv*d outputs), output projection, MLP
// (2 or 3 matrices of h x f), two norms (scale only). No biases (Llama-style); Megatron GPT's
// 13*h biases per layer are < 0.01% of 12*h^2 at these sizes.
double layer_params(const ModelConfig& m);
// Embedding V*h (+ a separate output layer V*h when not tied) + final norm h.
double model_params(const ModelConfig& m);

// Bytes per parameter of each training state (before ZeRO sharding).
struct StateBytes {
  double weights = 0, gradients = 0, optimizer = 0;
};
// Mixed precision (bf16/fp16) Adam: 2 + 2 + 12 (fp32 master, two moments) = 16 (ZeRO paper).
// fp32 Adam: 4 + 4 + 8. SGD with momentum: mixed 2 + 2 + 8 (master, momentum), fp32 4 + 4 + 4.
// fp32_grad_accumulation (TrainingConfig): mixed-precision gradients live in a float32 buffer,
// 4 bytes: Megatron-LM's main_grad, 2 + 4 + 12 = 18 for Adam (Megatron-LM
// docs/source/api-guide/dist_optimizer.md @ 50b073cc, "float16 param, fp32 grads": 18, and
// 6 + 12/d with the distributed optimizer, which shards only the 12).
StateBytes state_bytes_per_param(DType dtype, Optimizer opt, bool fp32_grad_accumulation = false);

// ---------------------------------------------------------------- activation memory
// torchtitan's per-op recompute policy (Recompute::selective_op), per layer. Inside a block the
// policy saves the outputs of attention, of reduce-scatters and of every other aten.mm call in
// forward order, and re-runs every other op in backward (pytorch/torchtitan
// torchtitan/distributed/activation_checkpoint.py `_custom_policy`, "Saves output of all compute
// ops, except every second mm"; the same rule since the 2024 versions in train.py /
// parallelize_llama.py). A Llama block calls its linear layers in the order wq, wk, wv, wo, then
// w1 (gate), w3 (up), w2 (down) (gated MLP: w2(silu(w1(x)) * w3(x))) or up, down: the saved
// GEMM outputs are wq, wv, w1, w2 (gated) or wq, wv, up (not gated), and wk, wo, w3 (gated) or
// wk, wo, down are re-run. FP8 linear layers (torchao Float8Linear) are counted the same way: their
// float8 tensor subclass receives the aten.mm call the policy sees (torchtitan's FP8 rows in
// configs/validation/torchtitan_h100_fp8 peak within 6 GiB of the bf16 rows of the same layout).
struct SelectiveOpRecompute {
  // Share of each forward GEMM group's FLOPs that backward re-runs (layer_gemm_flops groups).
  double qkv = 0, out = 0, mlp_up = 0, mlp_down = 0;
  double saved_gemm_output_bytes = 0;  // the saved linear outputs of one layer
};
SelectiveOpRecompute selective_op_recompute(const LayerShape& x);

struct LayerActivationBytes {
  double stored_bytes = 0;    // kept from forward to backward, excluding attention scores
  double scores_bytes = 0;    // kept score matrices (materialised, no recompute) or lse (flash)
  // Extra bytes live while this layer runs its backward: the recomputed layer (full), the
  // recomputed score matrices (selective), none otherwise (everything is already stored).
  double backward_working_bytes = 0;
  double backward_working_scores_bytes = 0;  // part of the above that is score matrices
};
// Korthikanti Table 2 generalised. For the paper's settings (a_kv = a, d = h/a, f = 4h, not
// gated, dropout, materialised, 2-byte activations) stored + scores equals exactly:
//   none, no TP:      s*b*h*(34 + 5*a*s/h)
//   TP t, no SP:      s*b*h*(10 + 24/t + 5*a*s/(h*t))
//   TP + SP:          s*b*h*(34 + 5*a*s/h)/t
//   TP + SP + selective: 34*s*b*h/t
//   full:             2*s*b*h (/t with SP)
// CP: every s -> s/CP except the score matrix, (s/CP)*s per head.
LayerActivationBytes layer_activation_bytes(const LayerShape& x);
// One layer's score matrices when materialised (b*(a/t)*(L/CP)*L elements, e bytes each, +
// dropout mask and output) and the flash alternative (fp32 lse per query row and head).
double materialized_scores_bytes(const LayerShape& x);
// Bytes per element of its rows that one norm and the linear layer after it keep for the backward,
// by TrainingConfig::norm and autocast (the layer's two norms, the final norm before the output layer).
double norm_saved_bytes_per_element(const LayerShape& x);
// Stored by the output block of the last pipeline stage from its forward to its backward, per
// micro-batch (outside every recomputed layer, so full recompute keeps it too): what the final norm
// and the output layer keep of their input (norm_saved_bytes_per_element) and the norm's float32
// row statistics, split over TP only with sequence parallelism. Megatron-LM's sequence-parallel
// linear layers save their local input and gather it again in the backward; PyTorch DTensor TP
// (torchtitan's ColwiseParallel output layer under loss_parallel) saves the gathered input, whole
// (LayerShape::tp_dtensor).
double output_block_stored_bytes(const LayerShape& x);
double flash_lse_bytes(const LayerShape& x);

// Ring buffers, live while one attention layer runs its backward; 0 without CP: K,V double
// buffer (activation dtype) + 4 fp32 dK,dV blocks (2 receive + 2 scratch, so the transfer
// overlaps compute). Exactly what runtime/ring_attention.cpp allocates (see formulas.cpp).
double ring_buffer_bytes(const LayerShape& x);
// All-gather CP's buffers, live while one attention layer runs: 0 without CP. Exactly what
// runtime/allgather_attention.cpp allocates besides D = rowsum(dO*O): the gathered K and V of
// the whole sequence, dK and dV of the whole sequence (the backward's kernel output, summed by
// the reduce-scatter) and the rank-major packing buffer [K|V] (or [dK|dV]) of the whole
// sequence: 6 x b * L * (a_kv/t) * d elements in the activation dtype. It grows with L, not
// L/CP: the price of the method (the ring holds 2 blocks of L/CP).
double allgather_buffer_bytes(const LayerShape& x);
// All-to-all (Ulysses) CP's buffers, live while one attention layer runs: 0 without CP. Exactly
// what runtime/alltoall_attention.cpp allocates besides lse and D: the whole sequence's Q, O, dO,
// dQ for the rank's (a/t)/CP query heads and the send and receive staging buffers (6 x b * L *
// (a/t)/CP * d elements), and K, V, dK, dV for its KV heads (4 x b * L * max((a_kv/t)/CP, 1) * d:
// KV heads replicated when CP exceeds them), in the activation dtype. Like all-gather's it grows
// with L, but over heads/CP: the same size as the sequence shards of every head.
double alltoall_buffer_bytes(const LayerShape& x);
// Hierarchical (cp_comm hybrid) CP's buffers, live while one attention layer runs: 0 without
// CP. Exactly what runtime/hybrid_attention.cpp allocates: the all-to-all stage's buffers of an
// A-rank group whose whole sequence is the group's L/R tokens (alltoall_buffer_bytes() of that
// group: head-sharded Q, O, dO, dQ, staging, K, V, dK, dV; none when A = 1) plus the ring
// stage's buffers over R = CP/A ranks of L/R tokens on the group's head shard
// (ring_buffer_bytes() with (a/t)/A query and max((a_kv/t)/A, 1) KV heads; none when R = 1).
double hybrid_buffer_bytes(const LayerShape& x);
// The ring stage of hybrid CP as a layer of its own: R = cp/A ranks, each holding the group's
// L/R tokens of (a/t)/A query heads and max((a_kv/t)/A, 1) KV heads (replicated when A exceeds
// them), cp_comm ring. TP stays folded into the head counts as in x.
LayerShape hybrid_ring_stage(const LayerShape& x);
// The CP exchange buffers of the layer's method (x.cp_comm): ring_buffer_bytes(),
// allgather_buffer_bytes(), alltoall_buffer_bytes() or hybrid_buffer_bytes(). What
// MemoryBreakdown::ring_buffers_bytes holds.
double cp_buffer_bytes(const LayerShape& x);
// Bytes on the wire per ring step: forward K,V; backward K,V + dK,dV in fp32 (DESIGN.md).
double ring_forward_step_bytes(const LayerShape& x);
double ring_backward_step_bytes(const LayerShape& x);

// Memory traffic of folding one ring step's partial result into the accumulators (DESIGN.md:
// merge in fp32), per device. Forward: read O_acc (4), read the block's O (e), write O_acc (4)
// per element of b*(L/CP)*(a/t)*d. Backward: dQ += block dQ over the queries, and the dK, dV
// accumulators travelling with their block += the block's dK, dV: (8 + e) per element each.
// The first step writes its result directly: P-1 merges on a rank that sees every block.
struct RingMergeBytes {
  double forward_per_step = 0, backward_per_step = 0;
};
RingMergeBytes ring_merge_bytes(const LayerShape& x);

// ---------------------------------------------------------------- FLOPs (forward, per device)
struct LayerGemmFlops {
  double qkv = 0, out = 0, mlp_up = 0, mlp_down = 0;  // 2*M*N*K of each forward GEMM
  // Their shapes (EfficiencyCurve::at_gemm takes the reduction length): M = tokens for all four;
  // K of the forward GEMMs (k_*); their output widths N (n_*), the K of each data-gradient GEMM
  // (dX = dY W^T reduces over N); every weight-gradient GEMM (dW = X^T dY) reduces over M.
  double tokens = 0;
  double k_qkv = 0, k_out = 0, k_mlp_up = 0, k_mlp_down = 0;
  double n_qkv = 0, n_out = 0, n_mlp_up = 0, n_mlp_down = 0;
  double total() const { return qkv + out + mlp_up + mlp_down; }
};
LayerGemmFlops layer_gemm_flops(const LayerShape& x);
// Logits GEMM 2*tokens*h*V/t (output layer, last pipeline stage).
double logits_flops(const LayerShape& x, double vocab);

// Causal (query, key) pairs each CP rank works on, by ring step. Step 0 is the rank's own KV
// block ("diagonal"); steps 1..P-1 bring the other blocks. For all three schemes the slowest
// rank is the slowest at every step, so its total is diagonal + (P-1)*off_diagonal_max.
//   contiguous (c = L/P): diagonal c(c+1)/2, off-diagonal max c^2 (a rank below gets nothing)
//   zigzag (c' = L/2P):   diagonal 2c'^2 + c', every later step exactly 2c'^2 on every rank
//   striped (n = L/P):    diagonal n(n+1)/2, later steps n(n+1)/2 or n(n-1)/2
// Non-causal: c^2 every step.
struct RingPairs {
  double diagonal_pairs = 0;
  double off_diagonal_max_pairs = 0;
  double max_rank_pairs = 0;   // diagonal + (P-1) * off_diagonal_max
  double mean_rank_pairs = 0;  // all visible pairs / P: L(L+1)/2/P causal, L^2/P otherwise
};
RingPairs ring_pairs(CpScheme scheme, double seq_len, double cp, bool causal);
// ring_pairs of a layer, with packed documents: every count scaled by document_pair_fraction
// (a step's block holds that share of the visible pairs on average) and the slowest rank's
// total = mean * document_imbalance (the exact per-rank work of the document layout).
RingPairs layer_ring_pairs(const LayerShape& x);
// Visible (query, key) pairs of CP rank r (0 <= r < P) over the whole sequence, closed form:
//   contiguous: c*(r*c) + c(c+1)/2            (c = L/P: r*c earlier keys, then a triangle)
//   zigzag:     h^2*(2P-1) + h(h+1)            (h = L/2P: the same for every rank)
//   striped:    n*(r+1) + P*n(n-1)/2           (n = L/P: token r + j*P sees r + j*P + 1 keys)
//   non-causal: (L/P)*L
double rank_visible_pairs(CpScheme scheme, double seq_len, double cp, double rank, bool causal);
// Visible pairs of rank r's queries against the KV block held by rank j (one ring step):
//   contiguous: j < r: c^2, j == r: c(c+1)/2, j > r: 0 (skipped)
//   zigzag:     j == r: 2h^2 + h, otherwise 2h^2     striped: j <= r: n(n+1)/2, j > r: n(n-1)/2
double block_visible_pairs(CpScheme scheme, double seq_len, double cp, int64_t rank, int64_t block, bool causal);

// Masked tiles (ClusterConfig::masked_tiles): the work of a tiled flash kernel beyond the
// visible pairs where the causal diagonal crosses its block. A causal square of m tokens with
// tile t (t_e = min(t, m)) holds m(m - t_e)/2 pairs in full tiles and m/t_e diagonal tiles of
// t_e^2 pairs each, one diagonal tile costing `cost` full ones; in pair-equivalents that is
// m(m - t_e)/2 + cost * m * t_e against m(m + 1)/2 visible, so the extra is
//   m * (cost * t_e - (t_e + 1) / 2)                      (0 for t = 1: no tile is masked)
// (exact when t divides m; a block whose diagonal excludes itself, striped's j > r, differs by
// m pairs, 2/m of the block). `forward` picks the forward or the backward cost.
double masked_square_extra_pairs(double m, const MaskedTileCost& mt, bool forward);
// The masked squares of one CP rank's ring steps, as extra pair-equivalents (flash only;
// materialised attention computes whole blocks and masks afterwards, so 0; non-causal 0):
//   contiguous: step 0 is one square of c = L/P
//   zigzag:     step 0 holds two squares of c/2 (the rank's two chunks on their own diagonals)
//   striped:    every step is a square of c (the stripes interleave: each block is triangular)
// Every rank has the same masked squares, so the slowest and the mean rank carry `rank_total`.
struct RingMaskedExtra {
  double first_step = 0;  // step 0 (the rank's own block)
  double later_step = 0;  // each of steps 1..P-1
  double rank_total = 0;  // first_step + (P-1) * later_step
};
RingMaskedExtra ring_masked_extra(const LayerShape& x, const MaskedTileCost& mt, bool forward);
// rank_total in forward FLOPs (attention_pair_flops per pair-equivalent): the masked-tile work
// of a rank whose kernel calls hold all of its ring's squares (the ring's steps, or all-gather's
// one call).
double rank_masked_flops(const LayerShape& x, const MaskedTileCost& mt, bool forward);
// The extra of rank r's kernel on the KV block of rank j (one ring step; block_visible_pairs).
double block_masked_extra(const LayerShape& x, int64_t rank, int64_t block, const MaskedTileCost& mt, bool forward);

// KV blocks a rank computes (those not fully hidden by the causal mask; the runtime skips
// the others for both kernels): slowest rank and mean over ranks. Non-causal, zigzag and
// striped (L/P >= 2): P on every rank; contiguous causal: rank r sees r+1, mean (P+1)/2.
struct RingVisibleBlocks {
  double max_rank = 1, mean_rank = 1;
};
RingVisibleBlocks ring_visible_blocks(CpScheme scheme, double seq_len, double cp, bool causal);

// Attention forward FLOPs of one rank for one micro-batch: 4*b*(a/t)*d per (query, key) pair
// computed. Flash skips hidden pairs (mean rank: mean_rank_pairs; slowest: max_rank_pairs).
// Materialised attention computes every visible block in full and masks afterwards
// (Megatron's fused masked softmax) but, like flash, skips fully hidden blocks (the runtime
// does): (L/CP)^2 pairs per visible block (ring_visible_blocks), so contiguous causal keeps
// flash's causal saving on the mean rank and its imbalance.
struct AttentionFlops {
  double mean_rank = 0;
  double max_rank = 0;
  double per_step_kernel = 0;  // FLOPs of the largest single kernel call (efficiency curve x)
};
// Forward FLOPs of one (query, key) pair on one device: 4 * b * (heads / TP) * d (2d for Q*K^T,
// 2d for P*V, per head of the rank).
double attention_pair_flops(const LayerShape& x);
// Whether eager PyTorch copies the attention output into the output projection's layout: SDPA and
// the materialised path return [batch, heads, seq, head_dim], which torchtitan's and Hugging Face's
// Llama code (and llm-foundry's torch path: rearrange 'b h s d -> b s (h d)') transpose and make
// contiguous: a copy, saved for the projection's backward, and its gradient copied back. The
// Triton kernel (FlashKernel::triton, flash_attn_triton.py) takes and returns [batch, seq, heads,
// head_dim]: llm-foundry's triton_flash_attn_fn reads its output through a view
// (`attn_output.view(*attn_output.shape[:2], -1)`, llmfoundry/models/layers/attention.py at ba6b8803,
// October 2023), no copy.
// Only counted with eager element-wise ops (TrainingConfig::eager_elementwise).
bool attention_output_copied(const LayerShape& x);
// Bytes one layer's backward moves to sum the input gradients of separate projections
// (TrainingConfig::separate_projections; 0 with fused ones), per device and micro-batch: the Q, K
// and V layers' (and a gated MLP's gate and up layers') partial gradients of their shared input,
// tokens x hidden each on every TP rank. Compiled (fused element-wise work) the sum fuses into the
// kernel that consumes it, which reads 3 + 2 partials instead of 2 sums: 3 elements more; eager,
// pairwise adds: (2 + 1) x 3 = 9 elements. Counted in layer_elementwise_bytes' backward.
double projection_gradient_sum_bytes(const LayerShape& x);
AttentionFlops attention_forward_flops(const LayerShape& x);

// ---------------------------------------------------------------- memory-bound traffic
// DRAM bytes moved by the layer's element-wise kernels (norms, residual adds, activation
// function, dropout, and for materialised attention the masked softmax over the scores),
// per device and micro-batch. Without sequence parallelism the norms/residuals run on the
// whole (replicated) sequence on every TP rank: that is the time SP saves. Fused (default):
// one read and one write per fused kernel (below). eager_elementwise: every PyTorch op its own
// kernel, counted op by op with autograd's backward formulas, RoPE and the attention output's
// copy (attention_output_copied) included (formulas.cpp, eager_layer_elementwise_bytes).
struct LayerElementwiseBytes {
  double forward = 0;
  double backward = 0;
  double attention_core_forward = 0;   // part of forward re-run by selective recompute
  double attention_core_backward = 0;  // part of backward spent on the scores
};
LayerElementwiseBytes layer_elementwise_bytes(const LayerShape& x);
// The attention-core part of it (materialised softmax/dropout over the scores; 0 for flash).
struct AttentionCoreBytes {
  double forward = 0, backward = 0;
};
AttentionCoreBytes attention_core_elementwise_bytes(const LayerShape& x);
// Cross-entropy over this rank's vocabulary slice of the logits, forward and backward.
// fused (Megatron's vocab_parallel_cross_entropy, Transformer Engine's): read the logits,
// write the float32 softmax, read it back, write the logit gradient: tokens*(V/t)*(2*e + 8),
// half each way. unfused (PyTorch's F.cross_entropy over
// logits.float()): op by op, tokens*(V/t)*(e + 20) forward and (e + 24) backward for 16-bit
// logits (formulas.cpp). fused_16bit (flash-attn's CrossEntropyLoss): 2e each way.
struct LossBytes {
  double forward = 0, backward = 0;
};
LossBytes loss_elementwise_bytes(const LayerShape& x, double vocab, CrossEntropy kind);
// Bytes per logit of this rank's vocabulary slice at the peak of an unfused cross-entropy,
// F.cross_entropy over logits.float() as torchtitan calls it (CrossEntropy::unfused).
// Its peak is the backward; the 16-bit logits are freed before it (torchtitan's train step
// deletes `pred` before loss.backward()).
//   one device (tp 1): the saved float32 log-softmax output, the dense float32 gradient
//     nll_loss_backward writes and the float32 gradient of the log-softmax backward: 12.
//   TP (tp > 1, PyTorch's loss_parallel, torchtitan's default under TP: the only way its logits
//     stay sharded over the vocabulary): _nll_loss_and_log_softmax_backward computes
//     (grad_input + exp(x)) * grad_output with grad_input = zeros_like(x), so the saved output
//     x, grad_input, their sum and the product are live together: 16
//     (torch/distributed/tensor/parallel/loss.py).
double unfused_cross_entropy_bytes_per_logit(int64_t tp);
// DRAM bytes per parameter of one optimizer step over the optimizer's shard (fused update over
// fp32 master weights and fp32 gradients; itemised in formulas.cpp): fp16 Adam 54, bf16 Adam 46,
// fp32 Adam 40 with clipping; under autocast (float32 parameters) bf16 Adam 40. The zeroing of the
// gradient buffer is charged apart, on the buffer (sim::predict).
double optimizer_step_bytes_per_param(DType dtype, Optimizer opt, bool clip_grad, bool autocast = false);
// DRAM bytes per parameter per step that summing m micro-batches' gradients moves outside the
// weight-gradient GEMMs (GradAccumulation, core/config.hpp), g bytes per gradient element as
// autograd produces it, a per accumulator element:
//   fused     0;
//   inplace   (m - 1) (g + 2a): each later gradient and the accumulator read, the accumulator
//             written; plus g + a for the first when a != g (FSDP2 casts it to the reduce dtype);
//             0 for m = 1 (nothing to sum; FSDP2 reduces the gradient as it is);
//   cast_add  m (g + 16): the cast to a float32 temporary (read g, write 4), then the add
//             (read 4 + 4, write 4). The step's zeroing of the buffer is the optimizer's pass.
double grad_accumulation_bytes_per_param(GradAccumulation mode, double g, double a, double m);

// Bandwidth memory-bound kernels achieve: the datasheet DRAM bandwidth times the cluster's
// efficiency.memory_bandwidth (ClusterConfig::memory_bandwidth_efficiency, default 0.8).
double achieved_memory_bandwidth_bytes_per_s(const ClusterConfig& c);  // 0 when unknown

}  // namespace ringplan::sim
