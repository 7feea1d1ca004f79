// Config types shared by sim, planner, runtime and cli: model, cluster (hardware profile),
// training, mesh and parallel options. Plain values; loading and validation live in
// core/config_yaml.hpp. Units are in the names (_bytes, _s, _flops_per_s).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ringplan {

enum class DType { bf16, fp16, fp32 };
enum class Optimizer { adam, sgd };  // adam: mixed-precision Adam, 16 bytes/param (ZeRO paper)
// Activation recomputation. selective: Korthikanti et al.'s (Megatron's selective granularity):
// the attention core is re-run in backward. selective_op: torchtitan's per-op policy
// (activation_checkpoint mode "selective", selective_ac_option "op"): inside each block the
// outputs of attention and of every other aten.mm in forward order are saved, everything else
// (the other matmuls, norms, RoPE, activation function, residual adds, casts) is re-run in
// backward; eager PyTorch keeps every saved output, a compiled block (TrainingConfig::
// eager_elementwise false) only those a backward op reads, so not the block's last matmul output
// (sim::layer_activation_bytes). full: only the layer input is kept and the whole layer is re-run.
enum class Recompute { none, selective, full, selective_op };
enum class CpScheme { contiguous, zigzag, striped };
enum class AttentionImpl { flash, materialized };
// How a CP group exchanges keys and values. ring: K,V blocks travel rank to rank while each
// step computes (p2p, overlapped; Megatron --cp-comm-type p2p). allgather: K,V of the whole
// sequence are all-gathered before attention and dK,dV reduce-scattered after it (Megatron
// all_gather, torchtitan's "allgather" rotation, Llama 3's long-context CP); see
// runtime/allgather_attention.hpp and sim/ring_model.hpp. alltoall: DeepSpeed-Ulysses (Megatron
// a2a): all-to-alls turn sequence shards of Q, K, V into head shards of the whole sequence, each
// rank runs attention on heads/CP heads, one all-to-all brings O back; needs CP to divide the
// query heads per TP rank (KV heads are split, or replicated when CP is a multiple of them);
// runtime/alltoall_attention.hpp. hybrid: hierarchical CP (Megatron/TE a2a+p2p,
// --hierarchical-context-parallel-sizes A R; USP): the CP group of C = A x R ranks is cut into R
// groups of A consecutive CP ranks; all-to-all over heads inside each group (as alltoall with A
// ranks), ring attention across the R groups on the group's head shard (as ring with R ranks),
// all-to-all back. A is ParallelOptions::cp_a2a_size; runtime/hybrid_attention.hpp.
enum class CpComm { ring, allgather, alltoall, hybrid };
// How the TP collectives overlap computation (ParallelOptions::tp_overlap): a property of the
// framework that runs the layout, not searched by the planner.
//   none      every TP collective waits for the GEMM before it and blocks the one after it
//             (synchronous autograd all-reduces: Megatron-LM before its async all-reduce,
//             Megatron-DeepSpeed, this project's CPU runtime);
//   backward  Megatron-LM's default: the backward collectives at the column-parallel inputs run
//             asynchronously behind the weight-gradient GEMM (all-reduce, or with sequence
//             parallelism the reduce-scatter; the re-all-gather behind the data-gradient GEMM);
//   pipelined Transformer Engine's userbuffers (--tp-comm-overlap, needs sequence parallelism):
//             the forward all-gathers and reduce-scatters are split in chunks and overlapped with
//             their GEMMs too.
enum class TpOverlap { none, backward, pipelined };

// How gradients are summed over the micro-batches of a step (TrainingConfig::grad_accumulation,
// YAML training.grad_accumulation), with g the bytes per element of the gradient autograd
// produces and a those of the accumulator (4 with grad_accumulation_dtype fp32, else g):
//   fused     inside the weight-gradient GEMM, which adds into the accumulator (Megatron-LM's
//             --gradient-accumulation-fusion into main_grad; this project's runtime): no pass
//             of its own.
//   inplace   a separate element-wise add per micro-batch after the first: PyTorch autograd's
//             AccumulateGrad (.grad += new; DeepSpeed's ZeRO-1 without gradient hooks, plain DDP,
//             autocast) and FSDP2's no-sync accumulation (the first gradient cast to the reduce
//             dtype, later ones added into it): g + 2a bytes per parameter per later
//             micro-batch, plus g + a for the first when a != g.
//   cast_add  every micro-batch's gradient cast to a float32 temporary and added into a float32
//             buffer, which the step zeroes (DeepSpeed's BF16_Optimizer, update_hp_grads and
//             clear_hp_grads): g + 16 bytes per parameter per micro-batch, 4 per step.
enum class GradAccumulation { fused, inplace, cast_add };
// How the framework computes the loss (TrainingConfig::cross_entropy).
enum class CrossEntropy { fused, unfused, fused_16bit };
// How a layer's norms run (TrainingConfig::norm).
enum class NormImpl { fused, eager, low_precision };
// Which flash-attention kernel the framework runs (TrainingConfig::flash_kernel).
enum class FlashKernel { standard, triton, fa2 };

int dtype_bytes(DType t);                 // 2, 2, 4
const char* to_string(DType t);
const char* to_string(Optimizer o);
const char* to_string(Recompute r);
const char* to_string(CpScheme s);
const char* to_string(AttentionImpl a);
const char* to_string(CpComm c);
const char* to_string(TpOverlap t);
const char* to_string(GradAccumulation g);
const char* to_string(CrossEntropy c);
const char* to_string(NormImpl n);
const char* to_string(FlashKernel k);
// The cluster's efficiency key that prices kernel `k` ("attention" for standard).
const char* flash_curve_key(FlashKernel k);
// The kernel as printed in headers and notes ("" for standard, the profile's own kernel).
const char* flash_kernel_label(FlashKernel k);
struct ParallelOptions;
// The pipeline split settings for people: "first 6, last 5 layers", "embedding and loss slots",
// "even" when none is set (ParallelOptions::pp_first_layers ... pp_loss_slot).
std::string pipeline_split_text(const ParallelOptions& o);
// Parsers return std::nullopt on an unknown name; callers build the error message
// (they know the file:line or the CLI flag).
std::optional<DType> parse_dtype(const std::string& s);
std::optional<Optimizer> parse_optimizer(const std::string& s);
std::optional<Recompute> parse_recompute(const std::string& s);
std::optional<CpScheme> parse_cp_scheme(const std::string& s);
std::optional<AttentionImpl> parse_attention(const std::string& s);
std::optional<CpComm> parse_cp_comm(const std::string& s);
std::optional<TpOverlap> parse_tp_overlap(const std::string& s);
std::optional<GradAccumulation> parse_grad_accumulation(const std::string& s);
std::optional<CrossEntropy> parse_cross_entropy(const std::string& s);
std::optional<NormImpl> parse_norm(const std::string& s);
std::optional<FlashKernel> parse_flash_kernel(const std::string& s);
// The valid names of each enum in declaration order, for "must be one of ..." messages
// (CLI flags and config errors use the same lists).
std::vector<std::string> dtype_names();
std::vector<std::string> optimizer_names();
std::vector<std::string> recompute_names();
std::vector<std::string> cp_scheme_names();
std::vector<std::string> attention_names();
std::vector<std::string> cp_comm_names();
std::vector<std::string> tp_overlap_names();
std::vector<std::string> grad_accumulation_names();
std::vector<std::string> cross_entropy_names();
std::vector<std::string> norm_names();
std::vector<std::string> flash_kernel_names();

struct ModelConfig {
  std::string name;
  int64_t layers = 0;
  int64_t hidden = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;     // == heads for multi-head attention; heads % kv_heads == 0
  int64_t head_dim = 0;     // heads * head_dim need not equal hidden
  int64_t ffn_hidden = 0;   // MLP inner size (per gate branch when gated)
  bool gated_mlp = false;   // SwiGLU-style: three ffn matrices instead of two
  int64_t vocab = 0;
  bool tied_embeddings = false;
  // Dropout probability on the hidden states (after attention and after the MLP) and on the
  // attention probabilities; 0 = no dropout, valid range [0, 1). Megatron-LM configures it per
  // model (hidden_dropout, attention_dropout, default 0.1); modern LLM recipes use 0. Only
  // whether it is > 0 matters to the cost model: it adds the 1-byte masks and the dropout
  // outputs to activation memory and their element-wise traffic (Korthikanti et al. 2022).
  double dropout = 0.0;
  // Rotary position embedding base (theta). The cost model does not use it; `ringplan emit`
  // passes it to the framework (Megatron-LM --rotary-base), since it changes the model trained.
  // 10000 is RoPE's original value (Su et al. 2021) and Megatron-LM's default; Llama 3 uses 500000.
  int64_t rope_base = 10000;
  // How positions enter the model, YAML position_embedding: rope | learned (default rope).
  // rope: rotary embedding applied to Q and K in every layer (Llama, Megatron-LM's GPT); under
  // eager element-wise ops its products are charged in time (sim::layer_elementwise_bytes).
  // learned: a position table added to the token embedding once, before the first layer (GPT-2,
  // MPT with learned_pos_emb): nothing per layer.
  bool rope = true;
};

// Achieved fraction of peak as a function of problem size: eff(x) = max * x / (x + half),
// where x is the operation's FLOPs and `half` the FLOPs at which half of `max` is reached.
// Small GEMMs and short attention blocks run far below peak; this captures it with two numbers.
struct EfficiencyCurve {
  double max_efficiency = 0.0;   // in (0, 1]
  double half_flops = 0.0;       // >= 0; 0 means constant max_efficiency
  // GEMM curves only (matmul, matmul_backward, matmul_fp8; YAML `half_k`, optional): the
  // reduction length at which a GEMM's rate is half the FLOPs curve's, eff(x, K) = eff(x) *
  // K / (K + half_k). A GEMM's tiles each run a loop over K between a fixed prologue (loading the
  // first operand stages) and epilogue (writing the output tile), so a short K amortises them
  // less at any FLOPs count: TP's row-parallel GEMMs (K = hidden / TP) run below column-parallel
  // ones of the same FLOPs. 0 (the default): the rate depends on the FLOPs alone.
  double half_k = 0.0;  // >= 0, in elements of K
  double at(double flops) const { return half_flops <= 0 ? max_efficiency : max_efficiency * flops / (flops + half_flops); }
  // A GEMM of `flops` = 2 M N K with reduction length `k`.
  double at_gemm(double flops, double k) const { return half_k > 0 ? at(flops) * k / (k + half_k) : at(flops); }
};

// Default of ClusterConfig::memory_bandwidth_efficiency: STREAM-like copy/scale/triad kernels
// reach ~80-90% of datasheet HBM bandwidth on A100/H100 (e.g. ~1.6-1.7 of 2.0 TB/s on A100);
// 0.8, the low end, is the default (an estimate; a calibrated profile sets its own).
inline constexpr double kDefaultMemoryBandwidthEfficiency = 0.8;

// Achieved fraction of a link's bandwidth by a collective, measured as nccl-tests' bus
// bandwidth (an all-reduce moves 2(n-1)/n of its buffer through every rank, a reduce-scatter or
// all-gather (n-1)/n), by buffer size: eff(bytes) = max * bytes / (bytes + half_bytes). The
// defaults (1, 0) are the ideal alpha-beta ring. YAML efficiency.collectives.<kind> {max, half_mib}.
struct CollectiveCurve {
  double max_efficiency = 1.0;  // in (0, 1]
  double half_bytes = 0.0;      // >= 0; 0 means constant max_efficiency
  double at(double bytes) const {
    return half_bytes <= 0 ? max_efficiency : max_efficiency * bytes / (bytes + half_bytes);
  }
  bool is_ideal() const { return max_efficiency == 1.0 && half_bytes == 0.0; }
};
struct CollectiveEfficiency {
  CollectiveCurve all_reduce, reduce_scatter, all_gather;
};

struct LinkProfile {
  double bandwidth_bytes_per_s = 0.0;  // per GPU, per direction
  double latency_s = 0.0;              // alpha of the alpha-beta model
};

// The inter-node network as switch groups: `nodes` consecutive nodes sit under one non-blocking
// group (a leaf switch, a rail-optimised scalable unit of a fat tree), and the links leaving a
// group carry 1 / `oversubscription` of the bandwidth its nodes' NICs bring into it (downlink :
// uplink ratio; 1 is a non-blocking fat tree). YAML inter_node {group_nodes, oversubscription},
// both or neither. Unset (nodes 0): one non-blocking network, inter_node.bandwidth for every
// flow. sim::uplink_slowdown() turns it into the slowdown of a mesh dimension's traffic.
struct SwitchGroups {
  int64_t nodes = 0;              // nodes per group; 0 = no groups
  double oversubscription = 1.0;  // >= 1
  bool is_flat() const { return nodes <= 0 || oversubscription <= 1.0; }
  bool operator==(const SwitchGroups&) const = default;
};

// See ClusterConfig::masked_tiles.
struct MaskedTileCost {
  int64_t tile = 1;       // tokens per tile edge (query and key tiles: the larger of the two)
  double forward = 1.0;   // a diagonal tile's forward cost / a full tile's
  double backward = 1.0;  // the same for the backward kernel
  bool is_exact() const { return tile == 1 && forward == 1.0 && backward == 1.0; }
  bool operator==(const MaskedTileCost&) const = default;
};

struct ClusterConfig {
  std::string name;
  double peak_flops_per_s_bf16 = 0.0;  // dense tensor-core peak per device
  double peak_flops_per_s_fp16 = 0.0;
  double peak_flops_per_s_fp32 = 0.0;
  // Dense FP8 tensor-core peak (YAML peak_tflops.fp8, optional): 0 means the device has no FP8
  // tensor cores (A100) and a run with training.fp8 is refused.
  double peak_flops_per_s_fp8 = 0.0;
  double memory_bytes = 0.0;           // device memory capacity
  double memory_reserved_bytes = 0.0;  // framework/context overhead not available to the model
  double memory_bandwidth_bytes_per_s = 0.0;
  int64_t gpus_per_node = 0;
  int64_t nodes = 0;
  LinkProfile intra_node;
  LinkProfile inter_node;
  SwitchGroups switch_groups;          // how the inter-node links are shared (SwitchGroups)
  EfficiencyCurve matmul;              // dense GEMM efficiency by GEMM FLOPs
  EfficiencyCurve attention;           // attention kernel efficiency by kernel FLOPs
  // Efficiency of the attention BACKWARD kernel (flash), optional YAML key
  // efficiency.attention_backward {max, half_tflop}. Its own curve because the backward kernel
  // runs at a different fraction of peak than the forward (FlashAttention-2 papers; the CPU
  // kernels, BENCHMARKS.md, runtime section). Axis: x = the block's FORWARD FLOPs (the same x as
  // `attention`), efficiency = backward FLOPs (2.5x forward) / time / peak. Unset
  // (max_efficiency == 0, the default) means "same as attention": use attention_backward_curve().
  EfficiencyCurve attention_backward;
  const EfficiencyCurve& attention_backward_curve() const {
    return attention_backward.max_efficiency > 0 ? attention_backward : attention;
  }
  // Efficiency of the MATERIALISED attention forward (its two GEMMs, QK^T and PV, with the
  // softmax between them), optional YAML key efficiency.materialized_attention {max, half_tflop}.
  // On GPUs these are GEMMs like the linear layers', so unset (the default) means "same as
  // matmul". A CPU kernel differs: the softmax's exponentials dominate it, so calibrate measures
  // it apart from the linear layers' GEMMs (which set `matmul`). Axis: x = one of its GEMMs'
  // FLOPs (half the block's forward FLOPs); efficiency = block forward FLOPs / 2 / time / peak.
  EfficiencyCurve materialized_attention;
  // Efficiency of the Triton FlashAttention kernel (Tri Dao's flash_attn_triton.py, which
  // llm-foundry runs as attn_impl triton), optional YAML key efficiency.attention_flash_triton
  // {max, half_tflop}: the flash path of runs whose TrainingConfig::flash_kernel is `triton`.
  // Axis as `attention` (x = the block's forward FLOPs); one curve for the forward and the
  // backward, because its source publishes the two passes' joint rate (forward + backward FLOPs
  // over their time; sim's 2.5x backward FLOPs make that rate the joint one). It belongs to the
  // attention family: the attention training scale scales it; fitting `attention` leaves it (another
  // kernel; `fit --free attention_flash_triton` fits it). Unset (max 0): runs asking for it are refused.
  EfficiencyCurve attention_flash_triton;
  // Efficiency of FlashAttention-2 (Dao-AILab flash-attn 2.x; PyTorch's scaled_dot_product_attention
  // runs it as its flash backend), optional YAML key efficiency.attention_flash_fa2 {max, half_tflop}:
  // the flash path of runs whose TrainingConfig::flash_kernel is `fa2`. Same axis, one curve for both
  // passes (its source publishes their joint rate) and the attention family's scale, as
  // attention_flash_triton. On Hopper it runs at about half the rate of the cuDNN / FlashAttention-3
  // class kernels a Hopper profile's `attention` curves measure (it uses no TMA or wgmma). Unset
  // (max 0): runs asking for it are refused.
  EfficiencyCurve attention_flash_fa2;
  // The flash kernel's forward / backward curve for runs on kernel `k`.
  const EfficiencyCurve& flash_forward_curve(FlashKernel k) const {
    switch (k) {
      case FlashKernel::triton: return attention_flash_triton;
      case FlashKernel::fa2: return attention_flash_fa2;
      case FlashKernel::standard: break;
    }
    return attention;
  }
  const EfficiencyCurve& flash_backward_curve(FlashKernel k) const {
    return k == FlashKernel::standard ? attention_backward_curve() : flash_forward_curve(k);
  }
  // Whether the profile can price kernel `k` (every kernel but `standard` needs its own curve).
  bool has_flash_curve(FlashKernel k) const {
    return k == FlashKernel::standard || flash_forward_curve(k).max_efficiency > 0;
  }
  const EfficiencyCurve& materialized_attention_curve() const {
    return materialized_attention.max_efficiency > 0 ? materialized_attention : matmul;
  }
  // Efficiency of the backward's GEMMs, optional YAML key efficiency.matmul_backward {max,
  // half_tflop}: the linear layers' data- and weight-gradient GEMMs (x = the forward GEMM's
  // FLOPs; sim/cost_model.cpp) and the MATERIALISED attention backward (its GEMMs and element-wise
  // work; x = one forward GEMM's FLOPs, half the block's forward FLOPs; efficiency = backward
  // FLOPs (2x forward) / time / peak). Unset (the default) means "same as matmul". GPUs: the
  // measured backward GEMMs (calibrate --device cuda). A CPU differs more: its forward kernels
  // are dominated by exponentials (softmax, SwiGLU) that the backward does not repeat, and
  // calibrate measures both.
  EfficiencyCurve matmul_backward;
  const EfficiencyCurve& matmul_backward_curve() const {
    return matmul_backward.max_efficiency > 0 ? matmul_backward : matmul;
  }
  // Efficiency of FP8 GEMMs (per-tensor scaled e4m3/e5m2 inputs, bf16 output) against
  // peak_flops_per_s_fp8, by the GEMM's FLOPs, optional YAML key efficiency.matmul_fp8. Unset
  // means "same fraction as matmul" (an assumption: measured FP8 GEMMs reach a different
  // fraction of their peak than bf16 ones, so a profile for FP8 runs should set it).
  EfficiencyCurve matmul_fp8;
  const EfficiencyCurve& matmul_fp8_curve() const { return matmul_fp8.max_efficiency > 0 ? matmul_fp8 : matmul; }
  // Fraction of memory_bandwidth_bytes_per_s that streaming (memory-bound, element-wise)
  // kernels achieve, in (0, 1]. YAML key efficiency.memory_bandwidth (optional); the default is
  // kDefaultMemoryBandwidthEfficiency.
  double memory_bandwidth_efficiency = kDefaultMemoryBandwidthEfficiency;
  // Collectives' achieved bus bandwidth against the group's link (optional YAML key
  // efficiency.collectives; `ringplan calibrate` measures it on the intra-node link). It applies
  // to groups inside a node, and to groups across nodes unless inter_node_collectives is set.
  CollectiveEfficiency collectives;
  // Bus-bandwidth efficiency of collectives whose inter-node part runs over inter_node (NICs),
  // against inter_node.bandwidth (optional YAML key efficiency.collectives_inter_node, same form
  // as efficiency.collectives). Unset (has_inter_node_collectives false): `collectives` is used.
  CollectiveEfficiency inter_node_collectives;
  bool has_inter_node_collectives = false;
  // Fraction of the device's compute a collective takes while it overlaps computation, YAML key
  // efficiency.overlap_sm_share in [0, 0.5] (default 0: overlap is free). NCCL runs one CTA per
  // channel on an SM of its own that no compute kernel shares (S. Jeaugey, NVIDIA/nccl issue #689:
  // "NCCL CTAs won't share an SM with compute kernels"; 16 SMs on a DGX), so a GEMM overlapped
  // with a collective runs on the remaining SMs: during a collective of time C the overlapped
  // compute advances at (1 - share), and a hidden collective costs share x C of compute time
  // (sim::overlapped_exposed_s). Memory-bandwidth contention (NVIDIA/nccl issue #1433) is not in it.
  double overlap_sm_share = 0.0;
  // The flash kernel's work where the causal diagonal crosses a block, optional YAML key
  // efficiency.masked_tiles {tile, forward, backward}. A tiled kernel computes every tile the
  // diagonal crosses in full and masks it element by element, so a causal block of m tokens
  // costs its full tiles plus m/tile diagonal tiles at `forward` (`backward`) times a full
  // tile's cost each, not its m(m+1)/2 visible pairs (sim::masked_square_extra_pairs). Unset:
  // tile 1, costs 1, which is the visible-pair count exactly. `ringplan calibrate` measures
  // both costs on the CPU kernels (causal against full blocks of the same size).
  MaskedTileCost masked_tiles;
  // Training scale of the compute curves, optional YAML key efficiency.training_scale {matmul,
  // attention} (default 1, 1). Kernel curves measured in isolation (cuBLAS GEMMs, SDPA at the
  // layers' shapes: `ringplan calibrate --gpu-bench`) run faster than the same kernels inside a
  // training step (sustained clocks under power limits, the framework's launch gaps and the
  // kernels around them); one factor per family scales every curve's max and keeps the measured
  // shape (size dependence, forward against backward, bf16 against FP8). `ringplan fit --free
  // training_scale` fits the two factors to measured runs. Families: `matmul` scales matmul,
  // matmul_backward and matmul_fp8; `attention` scales attention, attention_backward,
  // materialized_attention, attention_flash_triton and attention_flash_fa2 (curves left unset
  // follow the curve they default to).
  // Invariant: the curves held here are the EFFECTIVE ones (kernel curve x scale); the YAML
  // writes the kernel curves (effective / scale) next to the scales, and every scaled max <= 1.
  double matmul_training_scale = 1.0;
  double attention_training_scale = 1.0;
  // Sets the two training scales, rescaling the effective curves from the current scales to the
  // new ones. Precondition: both > 0.
  void set_training_scale(double matmul_scale, double attention_scale);
  // The largest max over the curves of a family as the kernels measured them (unscaled): a
  // scale above 1 / this would push a curve past 1.
  double kernel_max(bool attention_family) const;
  const CollectiveEfficiency& collectives_on(bool across_nodes) const {
    return across_nodes && has_inter_node_collectives ? inter_node_collectives : collectives;
  }
  double peak_flops_per_s(DType t) const;
  int64_t gpus() const { return gpus_per_node * nodes; }
};

// Packed documents, YAML training.documents: a training sequence is the concatenation of
// several documents, and attention never crosses a document boundary (causal within each one),
// as Megatron-LM's packed-sequence (THD, cu_seqlens) path and TransformerEngine run it. Either a
// fixed list of lengths (summing to seq_len) or a length distribution drawn with a seed; the
// lengths of one sequence are core/documents.hpp document_lengths(). Invariant: every length is
// >= 1 and the lengths sum to seq_len.
enum class DocumentLengthKind { fixed, uniform, lognormal };
struct DocumentSpec {
  DocumentLengthKind kind = DocumentLengthKind::fixed;
  // The lengths of one sequence, in order: given (fixed) or drawn by document_lengths() (the
  // loader fills them for a distribution too, so every consumer reads them here).
  std::vector<int64_t> lengths;
  double mean_length = 0;         // uniform / lognormal: mean document length in tokens
  double sigma = 1.0;             // lognormal: standard deviation of log(length)
  uint64_t seed = 0;              // uniform / lognormal: the draw is a pure function of the seed
  // The attention work of these documents per (CP size, scheme, causal), precomputed outside the
  // cost model's inner loop (sim::prepare_document_work; core/documents.hpp
  // document_attention_work). Derived from the lengths: never written to files, not part of ==.
  struct Work {
    int64_t cp = 0;
    CpScheme scheme = CpScheme::zigzag;
    bool causal = true;
    double pair_fraction = 1, imbalance = 1;
  };
  std::vector<Work> work;
  bool operator==(const DocumentSpec& o) const {
    return kind == o.kind && lengths == o.lengths && mean_length == o.mean_length && sigma == o.sigma && seed == o.seed;
  }
};

struct TrainingConfig {
  int64_t seq_len = 0;
  int64_t global_batch_sequences = 0;  // a `global_batch_tokens` in YAML is converted (must divide)
  DType dtype = DType::bf16;
  Optimizer optimizer = Optimizer::adam;
  bool causal = true;
  // Gradients accumulated (and reduced) in a float32 buffer under 16-bit mixed precision, YAML
  // training.grad_accumulation_dtype: fp32 | same (default same). Megatron-LM / NeMo keep a
  // float32 `main_grad` buffer per parameter (forced for bf16; --accumulate-allreduce-grads-in-fp32),
  // so Adam holds 2 + 4 + 12 = 18 bytes per parameter, 6 + 12/d with the distributed optimizer
  // (Megatron-LM docs/source/api-guide/dist_optimizer.md, "float16 param, fp32 grads"). `same`:
  // gradients in the training dtype, the ZeRO paper's 2 + 2 + 12 = 16 (PyTorch FSDP, DeepSpeed).
  // No effect with dtype fp32.
  bool fp32_grad_accumulation = false;
  // The dtype the data-parallel group gathers the parameters in and the one it reduces the
  // gradients in, YAML training.param_gather_dtype / grad_reduce_dtype (PyTorch FSDP's
  // MixedPrecision param_dtype / reduce_dtype, torchtitan's mixed_precision_param /
  // mixed_precision_reduce, Megatron-LM's --grad-reduce-in-bf16). Unset (the default): the 16-bit
  // weights (dtype) and the gradient buffer's dtype (float32 with grad_accumulation_dtype fp32 or
  // autocast). Composer's FSDP under amp_bf16 with MP Mode DEFAULT gathers its float32 parameters
  // (param_gather_dtype fp32, autocast only: with master weights the 16-bit copy is what is
  // gathered) and reduces in bf16. Time of the ZeRO gathers and the gradient reduction, and the
  // memory of ZeRO-3's gathered units (sim::predict); a 16-bit value must be the training dtype.
  // The cast to the reduce dtype is not charged (one pass over a unit's gradients per reduction).
  std::optional<DType> param_gather_dtype, grad_reduce_dtype;
  // How the micro-batches' gradients are summed (GradAccumulation above), YAML
  // training.grad_accumulation: fused | inplace | cast_add (default fused; inplace with autocast,
  // which cannot be fused). Time only (sim::grad_accumulation_bytes_per_param).
  GradAccumulation grad_accumulation = GradAccumulation::fused;
  // How the framework computes the loss, YAML training.cross_entropy: fused | unfused |
  // fused_16bit (default fused). fused: Megatron-LM's vocab_parallel_cross_entropy, float32 softmax computed in place
  // over the 16-bit logits (e + 4 bytes per logit, 4 in fp32). unfused: PyTorch's
  // F.cross_entropy over logits.float(), as torchtitan calls it (torchtitan/components/loss.py):
  // its peak is the log-softmax backward, with the saved float32 log-softmax output, the dense
  // float32 gradient from nll_loss and the float32 gradient it writes, 12 bytes per logit; 16
  // under TP, where PyTorch's loss_parallel computes it (sim::unfused_cross_entropy_bytes_per_logit).
  // fused_16bit: one kernel over the 16-bit logits with no float32 copy, flash-attn's CrossEntropyLoss (xentropy_cuda_lib, llm-foundry's fused_crossentropy): it saves
  // the logits and their per-row log-sum-exp and writes a 16-bit gradient in the backward
  // (inplace_backward false), so its peak is 2e bytes per logit (the fused loss: e + 4); in time
  // it reads the logits twice forward (row max, then the sum of exponentials) and reads them and
  // writes the gradient backward: 2e each way. Needs a 16-bit dtype.
  CrossEntropy cross_entropy = CrossEntropy::fused;
  // How ZeRO-3 (options.zero_stage 3) holds the gathered parameters, YAML training.fsdp: flat |
  // per_parameter (default flat). flat: views of the gathered flat buffer (FSDP1's flat
  // parameters, DeepSpeed ZeRO-3, Megatron-FSDP, this project's runtime). per_parameter:
  // PyTorch FSDP2 (fully_shard, torchtitan), which shards every parameter and copies the gathered
  // ones out of the all-gather buffer on the compute stream at every gather (sim::predict's
  // ZeRO-3 term). Time only; without ZeRO-3 it changes nothing.
  bool fsdp_per_parameter = false;
  // Whose interleaved 1F1B schedule runs an interleaved pipeline (options.interleave > 1), YAML
  // training.pp_schedule: megatron | pytorch (default megatron). Both warm up
  // 2 (PP - d - 1) + (v - 1) PP model chunks on rank d before the first backward; when the
  // micro-batches per step equal PP, Megatron-LM instead runs every forward first on every rank
  // (forward_backward_pipelining_with_interleaving, all_warmup_microbatches), so every rank holds
  // the activations of all m micro-batches; PyTorch's ScheduleInterleaved1F1B (torchtitan) keeps
  // the rank-dependent warm-up, and its last stage keeps every micro-batch's output (the logits)
  // until the step ends (PipelineStage.output_chunks). Memory only (sim::pipeline_in_flight,
  // sim::predict's last-rank term); this project's runtime runs Megatron-LM's order.
  bool pytorch_pp_schedule = false;
  // What a pipeline stage sends its neighbour without sequence parallelism, YAML training.pp_p2p:
  // full | scatter_gather (default full). full: every TP rank sends the whole activation
  // (Megatron-Core's get_tensor_shapes splits the sequence over TP only under sequence
  // parallelism; PyTorch's pipelining sends the stage output as it is). scatter_gather: each TP
  // rank sends 1/TP of it and the receiving stage all-gathers it over TP (Megatron-LM's
  // scatter/gather optimisation, on by default from its commit 72e4230b of 2021 until the
  // pipeline moved into Megatron-Core, commit 3c92fa93 of March 2023; DeepSpeed's pipeline engine
  // whenever TP > 1, its is_pipe_partitioned / is_grad_partitioned and PartitionedTensor). Time only.
  bool pp_scatter_gather = false;
  // How tensor parallelism with sequence parallelism runs, YAML training.tp_impl: megatron |
  // dtensor (default megatron); only with TP > 1 and sequence parallelism.
  // megatron (Megatron-LM, Transformer Engine): a column-parallel linear layer (QKV, MLP up, the
  // output layer) keeps its rank's 1/TP of the sequence and all-gathers it again in the backward
  // behind the data-gradient GEMM (LinearWithGradAccumulationAndAsyncCommunication); the
  // collectives run on the sequence-major [seq, batch, hidden] layout, in place.
  // dtensor (PyTorch DTensor TP, torchtitan): the layers keep the all-gathered input whole and
  // all-gather nothing again (PrepareModuleInput's Shard(1) -> Replicate redistribute is an
  // autograd op whose output they save); the sequence is dim 1 of [batch, seq, hidden], so every
  // all-gather copies its output from the collective's dim-0 layout and every reduce-scatter its
  // input into it (torch.distributed._functional_collectives all_gather_tensor /
  // reduce_scatter_tensor: chunk + cat), one read and one write of the whole tensor each; async
  // TP fuses the forward's collectives and the backward's all-gathers with their GEMMs, whose
  // gathered views the backward's weight-gradient GEMMs copy to flatten.
  // Time (sim::predict's TP collectives) and memory (the QKV and MLP inputs,
  // sim::layer_activation_bytes; the output layer's input, sim::output_block_stored_bytes).
  bool tp_dtensor = false;
  // How 16-bit mixed precision holds the weights, YAML training.mixed_precision: master_weights |
  // autocast (default master_weights). master_weights: 16-bit weights beside a float32 master copy
  // in the optimizer, activations in `dtype` (Megatron-LM, FSDP's MixedPrecisionPolicy,
  // DeepSpeed). autocast: PyTorch's automatic mixed precision over float32 parameters
  // (torch.autocast; Hugging Face Trainer's bf16/fp16 runs it): each op casts its weights to
  // `dtype` (cast once per step and held until the backward: the 2-byte weights term; with ZeRO-3
  // each layer's casts of its gathered weights, all layers' at the loss unless full recompute
  // leaves one unit's, sim::predict, and no 16-bit shard) and its
  // inputs; the float32 parameters are the master copy and the gradients are float32 (2 + 4 + 12
  // = 18 bytes per parameter with Adam); the residual stream stays float32, and an eager norm saves
  // its float32 input and output beside the 16-bit cast the next linear layer saves, a fused one its
  // float32 input and that cast (a low_precision one: neither float32 tensor)
  // (sim::layer_activation_bytes); the loop's zero_grad(set_to_none=True) (PyTorch's default)
  // frees the gradients, which the backward allocates again, so the loss's peak holds none
  // (sim::predict's peak). Needs a 16-bit dtype.
  bool autocast = false;
  // How the element-wise ops inside a layer run, YAML training.elementwise: fused | eager (default
  // fused). fused: the activation formula's tensors (Korthikanti et al. 2022), as Megatron-LM /
  // Transformer Engine's fused RoPE and SwiGLU and torch.compile's generated kernels keep them.
  // eager: PyTorch ops one by one (no torch.compile), as torchtitan's and Hugging Face's Llama
  // code runs them: attention's output is copied into the output projection's [tokens, heads x d]
  // layout and both copies are kept, a gated MLP saves SiLU's output beside its input, and with
  // GQA SDPA saves the K and V that repeat_kv expanded to the query heads
  // (sim::layer_activation_bytes); in time every
  // op reads and writes its tensors, forward and backward (sim::layer_elementwise_bytes).
  bool eager_elementwise = false;
  // How the norms run, YAML training.norm: fused | eager | low_precision (default: eager with
  // `elementwise: eager`, else fused). eager: torchtitan's RMSNorm or
  // torch.nn.RMSNorm's composite, one kernel per op (upcast, pow, mean, rsqrt, mul, cast back,
  // weight); fused: one kernel (torchtitan's fused_rmsnorm, apex, Transformer Engine). Time
  // depends on it (sim::layer_elementwise_bytes), and memory (under autocast an eager norm keeps its
  // float32 output too, without autocast the float32 copy of its upcast input and the 16-bit cast of
  // its output: sim::layer_activation_bytes, sim::output_block_stored_bytes); `norm: eager` needs `elementwise: eager`
  // (torch.compile and the fused frameworks fuse the norm). low_precision: one fused kernel run in the 16-bit `dtype` under autocast, its input
  // cast down first (llm-foundry's LPLayerNorm / low_precision_layernorm: _cast_if_autocast_enabled,
  // then F.layer_norm with autocast off). Each norm saves the 16-bit copy of its input and its
  // 16-bit output, which the next linear layer saves as is (2e per element, no float32 tensor
  // kept), where a fused float32 norm under autocast saves its float32 input and the next linear
  // layer its e-byte cast (4 + e). In time: the input's cast down (4 + e) and a 16-bit norm (2e
  // forward, 3e backward) instead of a float32 norm and autocast's cast of its output
  // (sim::layer_activation_bytes, sim::layer_elementwise_bytes). Without autocast the same as
  // fused.
  NormImpl norm = NormImpl::fused;
  // Whether the attention's Q, K and V (and a gated MLP's gate and up) are separate linear layers,
  // YAML training.projections: fused | separate (default fused). fused: one GEMM each (Megatron-LM,
  // Transformer Engine, MPT's Wqkv); separate: torchtitan's and Hugging Face's Llama (wq, wk, wv;
  // w1, w3). The separate layers read the same input, so autograd sums their input gradients (full
  // tokens x hidden per rank, gathered under sequence parallelism) before the norm's backward or
  // the reduce-scatter: compiled, the sum fuses into the kernel that consumes it, which then reads
  // the 3 (QKV) and 2 (gate, up) partials instead of one sum each (3 more element reads); eager,
  // pairwise adds (3 elements each: 9). Time only (sim::projection_gradient_sum_bytes).
  bool separate_projections = false;
  // Whether full recompute stops before the block's last linear layer, YAML
  // training.recompute_early_stop (default false; read with options.recompute: full). The block's
  // last GEMM (the MLP down projection: fc2, w2) and the TP collective after it feed nothing the
  // backward needs, and two ways of checkpointing do not run them again (sim::predict):
  //  * PyTorch's non-reentrant torch.utils.checkpoint (use_reentrant=False,
  //    CheckpointImpl.NO_REENTRANT: torchtitan; Composer / llm-foundry with
  //    activation_checkpointing_reentrant false) from PyTorch 2.1 on: it stops the recompute as
  //    soon as the last tensor the forward saved is packed again
  //    (torch.utils.checkpoint.set_checkpoint_early_stop, on by default), and a native autograd op
  //    packs its inputs before it runs (the generated VariableType code builds its SavedVariables
  //    before the redispatch), so fc2, which saves only its input and weight, never runs;
  //  * torch.compile over a checkpointed block: the backward graph recomputes only what the
  //    backward reads (the partitioner drops fc2's forward output as dead).
  // Not skipped (false): eager linear layers that are custom autograd Functions save after their
  // GEMM has run (torchao's Float8Linear and Transformer Engine's layers without torch.compile);
  // Megatron-LM's and Transformer Engine's checkpoints (reentrant) and PyTorch before 2.1 re-run
  // the whole block.
  bool recompute_early_stop = false;
  // Which flash-attention kernel runs the flash path, YAML training.flash_kernel: standard |
  // triton (default standard). standard: the profile's `attention` / `attention_backward`
  // curves, the kernel the profile was measured or fitted on (FlashAttention-2, cuDNN or SDPA's
  // flash backend on GPUs; the runtime's own kernel on CPUs). triton: the Triton FlashAttention
  // kernel (flash_attn_triton.py; llm-foundry's attn_impl triton), on the profile's
  // efficiency.attention_flash_triton curve: on an A100 it runs at 40-50 % of FlashAttention-2's
  // rate (Dao 2023, FlashAttention-2, Figure 4), so a profile fitted on one predicts runs of the
  // other only with its own curve. fa2: FlashAttention-2 (flash-attn 2.x, or PyTorch SDPA's flash
  // backend), on the profile's efficiency.attention_flash_fa2 curve: on an H100 it reaches about
  // a third of the bf16 peak where cuDNN's and FlashAttention-3's kernels reach over half (Dao 2023,
  // FlashAttention-2, H100 figure of its repository; Shah et al. 2024, FlashAttention-3). Each needs
  // a cluster that sets its curve.
  FlashKernel flash_kernel = FlashKernel::standard;
  // FP8 linear layers, YAML training.fp8 (default false): the transformer blocks' GEMMs (QKV,
  // attention output, MLP up and down; forward, data and weight gradient) run in FP8 with
  // per-tensor scaling, as Transformer Engine runs them under Megatron-LM / NeMo (--fp8-format
  // hybrid) and torchao's Float8 linear layers under torchtitan. Attention, the embedding, the
  // output layer and the loss stay in `dtype`, as in both frameworks. Needs a 16-bit dtype and a
  // cluster with peak_tflops.fp8.
  bool fp8 = false;
  // Which library runs the FP8 linear layers, YAML training.fp8_impl: transformer_engine | torchao
  // (default transformer_engine; needs fp8: true). They differ in what the casts cost:
  //  * transformer_engine: each GEMM input is cast with its transpose in one fused pass (read 2,
  //    write 1 + 1 bytes per element); the weights are cast once per step and cached across
  //    micro-batches (is_first_microbatch), not counted.
  //  * torchao (torchtitan's Float8Linear, tensorwise dynamic scaling): the inputs as above, and
  //    each weight is cast again in every forward (every micro-batch and every recompute): an amax
  //    pass and a cast that writes both layouts, 2 + 2 + 2 bytes per weight element, as torchao's
  //    own roofline counts it (torchao/float8/roofline_utils.py get_float8_mem_sympy,
  //    fwd_fp8_weight_mem). Under DTensor TP with sequence parallelism the inputs are cast on
  //    the shard and all-gathered in FP8, and the backward's output gradients likewise
  //    (torchao/float8/float8_tensor_parallel.py Float8ColwiseParallel / Float8RowwiseParallel /
  //    PrepareFloat8ModuleInput): those all-gathers move 1 byte per element; the reduce-scatters
  //    stay 16-bit; the gathered FP8 tensors exist row-major only, so the weight-gradient GEMMs
  //    copy them to the layout torch._scaled_mm takes (torchao/float8/float8_ops.py
  //    preprocess_addmm).
  bool fp8_torchao = false;
  // torchao's FP8 all-gather of FSDP-sharded weights, YAML training.fp8_all_gather (default false;
  // needs fp8_impl torchao; torchtitan's enable_fsdp_float8_all_gather with
  // precompute_float8_dynamic_scale_for_fsdp). Where FSDP gathers the weights over more than one
  // rank (ZeRO-3, or ZeRO-1 as FSDP2 runs under a pipeline: gathered once per step) each shard is
  // cast before the all-gather (read 2, write 1 byte per shard element, per gather;
  // WeightWithDynamicFloat8CastTensor.fsdp_pre_all_gather), the block weights are gathered and held
  // in FP8 (1 byte per parameter), and the forward casts nothing; the backward's data-gradient
  // GEMM copies the gathered row-major weight to the column-major layout torch._scaled_mm takes
  // (torchao/float8/float8_ops.py preprocess_addmm: read 1, write 1 byte per element). Without
  // sharded weights (ZeRO-0, or one rank) it changes nothing: the forward casts as fp8_impl
  // torchao does.
  bool fp8_all_gather = false;
  // Gradient-norm clipping, YAML training.clip_grad (default 1.0, Megatron-LM's --clip-grad and
  // torchtitan's max_norm default; 0 turns it off). Before the optimizer step the global L2 norm
  // of the gradients is computed over every parameter once (TP-replicated norm weights counted
  // once, DP x CP replicas once) and every gradient is scaled by min(1, clip_grad / (norm +
  // 1e-6)), as torch.nn.utils.clip_grad_norm_ does (Megatron-LM scales only when the norm exceeds
  // the bound). Costs the optimizer step a read of the gradients (the norm) and a read and write
  // (the scale).
  double clip_grad = 1.0;
  // Packed documents (see DocumentSpec); absent: each sequence is one document.
  std::optional<DocumentSpec> documents;
};

// Largest GPU count ringplan accepts anywhere (experiment `gpus`, cluster gpus_per_node x nodes,
// a mesh's dp*tp*cp*pp, `--gpus`): 2^20 = 1,048,576, beyond any machine built so far. It keeps
// the mesh enumeration small (at most 240 divisors) and every GPU count times a config size
// (<= 2^31, core/config_yaml.cpp) well inside int64.
inline constexpr int64_t kMaxGpus = int64_t{1} << 20;

// World size N = dp * tp * cp * pp; rank = tp + TP*(cp + CP*(dp + DP*pp)) (innermost first).
struct Mesh {
  int64_t dp = 1, tp = 1, cp = 1, pp = 1;
  int64_t world_size() const { return dp * tp * cp * pp; }
  // Every size in 1 .. kMaxGpus and their product too, checked factor by factor so that no
  // multiplication can overflow (callers read sizes from files and flags, then call world_size()).
  bool within_gpu_limit() const {
    int64_t world = 1;
    for (const int64_t f : {dp, tp, cp, pp}) {
      if (f < 1 || f > kMaxGpus) return false;
      world *= f;
      if (world > kMaxGpus) return false;
    }
    return true;
  }
  bool operator==(const Mesh&) const = default;
};

struct ParallelOptions {
  int64_t micro_batch = 1;          // sequences per micro-batch per DP replica
  Recompute recompute = Recompute::none;
  int zero_stage = 0;               // 0..3, sharded over DP x CP
  bool sequence_parallel = false;   // Megatron SP: TP collectives as reduce-scatter + all-gather
  CpScheme cp_scheme = CpScheme::zigzag;
  int64_t interleave = 1;           // virtual pipeline stages per device (v)
  AttentionImpl attention = AttentionImpl::flash;
  CpComm cp_comm = CpComm::ring;    // only matters with CP > 1; ring keeps every earlier result
  // cp_comm hybrid only: A, the all-to-all group size (R = CP / A ring groups). 0 means the
  // default, sim::default_cp_a2a_size(): the largest divisor of CP that splits the heads per TP
  // rank (as alltoall needs) and whose TP x A ranks stay inside one node. Must divide CP.
  int64_t cp_a2a_size = 0;
  TpOverlap tp_overlap = TpOverlap::backward;  // only matters with TP > 1; not searched
  // ZeRO-1/2's all-gather of the updated parameters runs behind the next step's first forward,
  // bucket by bucket (Megatron-LM --overlap-param-gather: each bucket's wait in a forward pre-hook
  // dispatches the next one). false: the all-gather ends the step, exposed (Megatron-LM's default,
  // DeepSpeed ZeRO-1/2, this project's runtime). Only matters with ZeRO 1/2 and DP x CP > 1; not
  // searched.
  bool overlap_param_gather = false;
  // Hybrid sharding (HSDP): R copies of the ZeRO-sharded state across the data-parallel ranks,
  // YAML options.dp_replicate (default 1: one shard group of every DP x CP rank). The states are
  // sharded over a group of (DP / R) x CP ranks, consecutive in rank order (the DP index split as
  // replica x shard, the shard inner: inside a node where it fits), and replicated across the R
  // groups; gradients are reduce-scattered inside the shard group, then all-reduced across the R
  // replicas of each shard, and ZeRO-3 gathers (ZeRO-1/2's parameter all-gather) stay inside the
  // shard group. PyTorch FSDP's HYBRID_SHARD and FSDP2 on a (replicate, shard) mesh (torchtitan's
  // data_parallel_replicate_degree), Megatron-LM's --num-distributed-optimizer-instances.
  // Invariants (check_layout): R divides DP; R > 1 needs ZeRO >= 1 (ZeRO-0 shards nothing).
  int64_t dp_replicate = 1;
  // How the layers split over the pipeline ranks (PP > 1 only; not searched; sim::stage_layers).
  // Megatron-LM's uneven-pipeline settings, at most one of the two kinds:
  //   pp_first_layers / pp_last_layers (0: not set): transformer layers on the first / last
  //     pipeline rank, over all its virtual stages (--decoder-first-pipeline-num-layers,
  //     --decoder-last-pipeline-num-layers); the other layers divide evenly over the other ranks.
  //   pp_embedding_slot / pp_loss_slot: the input embedding / the output layer with the loss take
  //     one layer's slot on the first / last rank (--account-for-embedding-in-pipeline-split,
  //     --account-for-loss-in-pipeline-split; DeepSpeed's --pp-partition-method
  //     'type:transformer|embedding' with tied embeddings is both): (layers + slots) / PP per rank.
  // None set: layers / PP per rank; where PP does not divide the layers, torchtitan's automatic
  // split (the first and last rank floor(layers / PP), the middle ranks one more until the rest
  // is placed).
  int64_t pp_first_layers = 0, pp_last_layers = 0;
  bool pp_embedding_slot = false, pp_loss_slot = false;
  bool uneven_pipeline() const { return pp_first_layers > 0 || pp_last_layers > 0 || pp_embedding_slot || pp_loss_slot; }
  bool operator==(const ParallelOptions&) const = default;
};

// Which option keys an experiment's `options:` block gave (each fixes that option for `plan`).
struct FixedOptionKeys {
  bool micro_batch = false, recompute = false, zero_stage = false, sequence_parallel = false, cp_scheme = false,
       interleave = false, attention = false, cp_comm = false, tp_overlap = false, cp_a2a_size = false,
       pp_split = false,  // any of pp_first_layers, pp_last_layers, pp_embedding_slot, pp_loss_slot
       overlap_param_gather = false, dp_replicate = false;
  bool any() const {
    return micro_batch || recompute || zero_stage || sequence_parallel || cp_scheme || interleave || attention ||
           cp_comm || tp_overlap || cp_a2a_size || pp_split || overlap_param_gather || dp_replicate;
  }
  bool operator==(const FixedOptionKeys&) const = default;
};

// What the planner may vary. Empty vectors mean "the planner's default set".
struct SearchSpace {
  std::vector<int64_t> micro_batch;
  std::vector<Recompute> recompute;
  std::vector<int> zero_stage;
  std::vector<bool> sequence_parallel;
  std::vector<CpScheme> cp_scheme;
  std::vector<int64_t> interleave;
  std::vector<AttentionImpl> attention;
  std::vector<CpComm> cp_comm;
  // Group sizes A tried for cp_comm hybrid (each must divide the layout's CP to be tried); empty:
  // every divisor of CP with 1 < A < CP (A = 1 is the ring, A = CP the all-to-all).
  std::vector<int64_t> cp_a2a_size;
  // Replica counts R tried for hybrid sharding (options.dp_replicate; each must divide the
  // layout's DP, and is tried with ZeRO >= 1 only); empty: 1, and the R whose shard groups fill
  // exactly 1, 2, 4 or 8 nodes ((DP / R) x CP x TP = k x GPUs per node) where there are such.
  std::vector<int64_t> dp_replicate;
  std::optional<int64_t> max_tp, max_cp, max_pp;  // optional caps
};

// Published figures of a real run, for `ringplan validate`.
// How a source counts the attention FLOPs behind its tflops_per_device / mfu. ringplan's model
// FLOPs count the (query, key) pairs the causal mask leaves visible (`causal`); Megatron-LM's,
// NeMo's and torchtitan's published formulas count every pair (`full`: 12*s*h per layer and
// token, forward + backward, whatever the mask). Comparing a `full` figure with ringplan's
// count would blame the model for a difference of definition, so validation converts.
enum class AttentionFlopCount { causal, full };
struct Published {
  std::optional<double> step_time_s;
  std::optional<double> tflops_per_device;
  std::optional<double> mfu;
  // Peak memory as the allocator's high-water mark of reserved memory (torchtitan's "max
  // reserved", nvidia-smi): compared with the predicted peak, the profile's memory_reserved_gib in.
  std::optional<double> peak_memory_gib;
  // Peak of the memory held by tensors alone (torch.cuda.max_memory_allocated): compared with the
  // predicted peak less the profile's memory_reserved_gib (CUDA context, library workspaces and
  // allocator slack, which the allocator's tensor count leaves out).
  std::optional<double> peak_memory_allocated_gib;
  std::optional<double> tokens_per_s_per_device;  // training tokens per second per device
  AttentionFlopCount attention_flops = AttentionFlopCount::causal;  // counting rule of tflops_per_device, mfu
  std::string source;
  bool has_metric() const {
    return step_time_s || tflops_per_device || mfu || peak_memory_gib || peak_memory_allocated_gib ||
           tokens_per_s_per_device;
  }
};

// Where a field was read: its file, 1-based line (0: unknown) and path as errors name it
// ("experiment.model.head_dim" inside a plan file, "model.head_dim" in a model file).
struct FieldSource {
  std::string file;
  int line = 0;
  std::string field;
};

struct Experiment {
  std::string name;
  std::string path;                  // file it was loaded from
  ModelConfig model;
  ClusterConfig cluster;
  TrainingConfig training;
  std::optional<Mesh> mesh;          // fixed mesh (simulate, validate, plan); absent: planner searches
  ParallelOptions options;           // fixed options (used with a fixed mesh or as defaults)
  // Which keys the file's `options:` block gave: `ringplan plan` keeps those options fixed and
  // searches the others (a plan file gives them all).
  FixedOptionKeys fixed_options;
  // 1-based lines of `mesh:` and `options:` in `path` (0: absent, or not read from a file), for
  // messages such as "mesh fixed by exp.yaml:14".
  int mesh_line = 0, options_line = 0;
  SearchSpace search;
  std::optional<int64_t> gpus;       // GPUs to plan for; default cluster.gpus()
  std::optional<Published> published;
  // Where each field given in the files was read, by its path in the experiment schema ("mesh",
  // "mesh.tp", "model.head_dim", "options.micro_batch"): lets checks made after loading (validate,
  // run) name file:line:field. Empty for experiments built in code. See experiment_field_error().
  std::map<std::string, FieldSource> sources;
};

}  // namespace ringplan
