// The whole training step of a plan, run for real (DESIGN.md "The whole training step").
//
// A decoder-only transformer as the plan's model describes it: token embedding; per layer
// RMSNorm -> Q, K, V projections (GQA) -> rotary embedding at each token's GLOBAL position (from
// the CP sharding) -> attention (the ring of runtime/ring_attention.hpp, all-gather CP of
// runtime/allgather_attention.hpp with options.cp_comm allgather, or all-to-all CP of
// runtime/alltoall_attention.hpp with alltoall, or hierarchical CP of
// runtime/hybrid_attention.hpp with hybrid) -> output projection ->
// residual -> RMSNorm -> MLP (SwiGLU when gated, else GELU) -> residual; final RMSNorm, output
// layer and cross-entropy over the tokens this rank holds (a token's loss needs only its own
// logits: nothing is gathered over CP).
//
// Every mesh dimension of the plan, in DESIGN's rank order rank = tp + TP*(cp + CP*(dp + DP*pp)):
//  - TP: Megatron's column-parallel Q/K/V and MLP-up (gate, up), row-parallel output projection
//    and MLP-down; vocabulary-parallel embedding and output layer with a vocabulary-parallel
//    cross-entropy; all-reduce after the row-parallel GEMMs, or with sequence parallelism
//    reduce-scatter there and all-gather before the column-parallel GEMMs (norms and residuals
//    then run on a 1/TP slice of the tokens, and the norm weights' gradients are summed over TP);
//  - CP: ring attention; every other operation is local to the shard;
//  - DP: replicas on different micro-batches;
//  - gradients summed over DP x CP: ZeRO-0 all-reduces the accumulated gradients once, ZeRO-1
//    reduce-scatters them once in place (each rank's shard lands in its part of the buffer), in
//    per-layer buckets posted during the last micro-batch's backward (what sim/cost_model.cpp
//    assumes: only what outlasts the backward is exposed); ZeRO-2 reduce-scatters every
//    micro-batch's gradients the same way into the rank's shard; ZeRO-1/2 update their shard of
//    the optimizer state and all-gather the updated parameters; ZeRO-3 (below);
//  - PP: stages of layers/PP consecutive layers, 1F1B over the micro-batches, activations and
//    their gradients point-to-point (send and receive of a pair posted together, as Megatron's
//    batched p2p does, so the schedule cannot deadlock);
//  - recompute: full keeps only each layer's input and re-runs the layer's forward before its
//    backward; selective drops the attention output and re-runs the attention forward;
//    selective_op keeps what torchtitan's per-op policy keeps (input, attention output and lse,
//    the wq, wv and first MLP matmul outputs, the down output when gated, the reduce-scatter
//    outputs with SP) and re-runs the rest (recompute_selective_op).
//  - optimizer: gradient-norm clipping (the global L2 norm over every parameter once, then every
//    gradient times min(1, clip / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_ does), then
//    Adam (beta 0.9/0.999, eps 1e-8) or SGD with momentum 0.9, in the scalar type.
//
// Parameters and data are deterministic functions of GLOBAL indices (a parameter element of its
// full, unsharded matrix; a token of its global sequence and position), so every mesh trains the
// same model on the same data and a one-process run is the parity reference.
//
// Scalar T: float (the measured run; attention by the CPU flash kernels in the ring) or double
// (the finite-difference check; attention by the float64 reference kernels, CP = 1 only).
// ZeRO-3 keeps only its shard of each block and all-gathers a block before its forward, again
// before its backward (and recompute), and frees it after; the next layer's gather is posted
// once this layer's has completed and driven between operators while this layer computes (FSDP's
// forward and backward prefetch), so two layers' parameters are live at most; gradients are
// reduce-scattered per micro-batch as with ZeRO-2.
// Interleaved pipelines (interleave v > 1): stage p holds v model chunks (virtual stages k*PP+p),
// run in the order of Megatron's interleaved 1F1B with every receive posted up front.
// Not run here (refused by check_step_spec, with the reason): materialised attention, tied
// embeddings with PP > 1.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "kernels/attention.hpp"
#include "runtime/communicator.hpp"
#include "runtime/mesh.hpp"

namespace ringplan::runtime {
class RingAttention;
class AllGatherAttention;
class AllToAllAttention;
class HybridAttention;
}

namespace ringplan::runtime::step {

struct StepSpec {
  ModelConfig model;          // model.layers = the layers this run trains (all of PP's stages)
  Mesh mesh;
  ParallelOptions options;    // micro_batch, recompute, zero_stage, sequence_parallel, cp_scheme
  int64_t seq_len = 0;
  int64_t global_batch = 0;   // sequences per optimizer step (all DP replicas)
  bool causal = true;
  // Packed documents (TrainingConfig::documents): lengths summing to seq_len, every sequence
  // packed alike; attention stays inside each document, and cp_scheme zigzag shards each
  // document into 2 CP chunks (runtime/sharding.hpp document_shard_positions), the layout the
  // cost model assumes. Empty: each sequence is one document.
  std::vector<int64_t> document_lengths;
  Optimizer optimizer = Optimizer::adam;
  double learning_rate = 1e-3;
  double clip_grad = 1.0;     // bound on the gradients' global L2 norm before the update; 0: none
  double rope_base = 10000.0;
  double norm_eps = 1e-5;
  uint64_t seed = 1;
  kernels::TileConfig tiles{};
};

// Throws bad_input (the same verdict on every rank, before any communication) when the spec
// cannot run: shapes that do not split (heads, kv_heads, ffn, vocab by TP; layers by PP; tokens
// by CP's scheme and, with sequence parallelism, rows by TP; global batch by DP x micro-batch),
// odd head_dim, or an option this runtime does not execute.
void check_step_spec(const StepSpec& spec);

// The one-process run that `spec` must reproduce (parity check): the same model, data, seed,
// optimizer and micro-batch size on a 1 x 1 x 1 x 1 mesh with every parallel option at its
// default (no SP, ZeRO, recompute, interleave or pipeline split: they change how the step is
// laid out, not what it computes). Valid whenever `spec` is.
StepSpec one_process_reference(const StepSpec& spec);

// The step's measured terms, named as the cost model's time terms they feed.
enum class Term : int {
  forward_compute = 0,   // GEMMs, norms, rotary, attention kernels, loss: forward
  backward_compute,      // the same, backward
  recompute,             // forward work re-run before a backward (compute part)
  ring_exposed,          // time blocked in the ring's waits: exposed K/V transfers and CP imbalance
  tp_comm,               // TP all-reduce / reduce-scatter / all-gather (not overlapped)
  dp_comm_exposed,       // DP x CP gradient reduction: time waiting for it after the backward
  zero_comm,             // ZeRO-1/2 all-gather of the updated parameters
  pp_comm,               // waiting in the pipeline's send/receive: the bubble plus the transfers
  optimizer,             // the optimizer update
  count
};
inline constexpr int kTermCount = static_cast<int>(Term::count);
const char* term_name(Term t);

// One timed region of a rank's step, for traces: `term` is the cost-model term it was charged to
// (nested regions are recorded separately; a region's own time excludes its children).
struct StepEvent {
  double start_s = 0;     // since the trainer's event epoch
  double duration_s = 0;
  int32_t step = 0;       // the trainer's step counter (warm-up steps included)
  Term term = Term::forward_compute;
};

struct StepTiming {
  double step_s = 0;                       // this rank's wall time of the step
  std::array<double, kTermCount> term_s{};  // this rank's time per term
};

// Exact bytes of the buffers this rank holds, by cost-model memory term.
struct StepMemory {
  int64_t weights_bytes = 0;
  int64_t gradients_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t activations_peak_bytes = 0;   // peak of the stashed activations over the step
  int64_t ring_buffers_bytes = 0;       // the ring's K/V and dK/dV buffers
  int64_t logits_bytes = 0;             // logits and their gradient (last stage)
  int64_t tracked_peak_bytes = 0;       // states + peak of (activations + working buffers)
};

template <class T>
class Trainer {
 public:
  // Collective over `world` (its size must equal the mesh's world size).
  Trainer(const StepSpec& spec, Communicator& world);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One optimizer step (forward and backward of every micro-batch, gradient reduction, update).
  // Returns the mean token loss of the global batch, the same on every rank. Collective.
  double train_step();
  // Loss and gradients of the global batch without an update (gradients() then holds them,
  // already reduced over DP x CP). Collective.
  double loss_and_gradients();

  const StepTiming& last_timing() const { return timing_; }
  // The time of each TP collective of the last step, in issue order (one region = one
  // collective). Every rank of a TP group issues the same sequence, so the k-th entries of the
  // group's ranks are one collective: the smallest of them is its transfer time (the last rank to
  // arrive waits for no one), the rest of each rank's entry is waiting for a slower TP peer.
  const std::vector<double>& last_tp_comm_regions() const;
  // The gradients' global L2 norm of the last train_step(), before clipping (0 with clip_grad 0,
  // which computes none). The same on every rank.
  double last_grad_norm() const { return grad_norm_; }
  // Events of every timed region from now on, relative to `epoch` (set it right after a barrier
  // on every rank so the ranks' clocks line up). Off until called.
  void record_events(std::chrono::steady_clock::time_point epoch);
  const std::vector<StepEvent>& events() const { return events_; }
  StepMemory memory() const;

  // The parameters this rank holds, each a block of one full (unsharded) parameter matrix.
  struct ParamInfo {
    int32_t id = 0;              // the full parameter's id (the same on every rank and mesh)
    std::string name;            // "layer3.wq"
    int64_t full_rows = 0, full_cols = 0;
    int64_t row0 = 0, rows = 0;  // this rank's block
    int64_t col0 = 0, cols = 0;
    size_t offset = 0;           // into parameters() / gradients()
  };
  const std::vector<ParamInfo>& params() const { return params_; }
  // Every parameter of this rank's blocks (TP shards, full over DP x CP). With ZeRO-3 they live
  // sharded over DP x CP: call gather_full_parameters() (collective over the mesh) first.
  const std::vector<T>& parameters() const { return weights_; }
  void gather_full_parameters();
  std::vector<T>& parameters_mut() { return weights_; }
  // Gradients after loss_and_gradients(), reduced over DP x CP, laid out as parameters() (ZeRO
  // 0/1; ZeRO >= 2 keeps only its reduced shard and returns an empty buffer).
  const std::vector<T>& gradients() const { return grads_; }
  // Element (row, col) of full parameter `id` on this rank, or nullptr when another rank holds it.
  const T* find(int32_t id, int64_t row, int64_t col) const;
  const MeshCoord& coord() const { return groups_.coord; }

 private:
  struct LayerStash;
  struct MicroBatch;
  struct Block;  // the parameters of one layer (or of the embedding / output layer)

  void build_params();
  void forward_micro_batch(MicroBatch& mb, int64_t index);
  void backward_micro_batch(MicroBatch& mb, bool last);
  void layer_forward(int64_t layer, const T* x_in, T* x_out, LayerStash& st, bool keep_all);
  // dx: in dx_out, out dx_in. next_block: the block the backward uses next (prefetched once this
  // layer's is gathered), -1 for none.
  void layer_backward(int64_t layer, LayerStash& st, T* dx, int64_t next_block = -1);
  void recompute_selective_op(int64_t layer, LayerStash& st);  // what selective_op released
  void project_heads(const T* a, int64_t blk, int which, int64_t heads, bool rotate, std::vector<T>& out);
  void attention_forward(LayerStash& st);
  void attention_backward(LayerStash& st, const T* d_out_heads, T* dq, T* dk, T* dv);
  void run_schedule();
  void run_interleaved_schedule();
  void reduce_gradients_post(int64_t block);
  void reduce_gradients_finish();
  void complete_oldest_reduction();
  void optimizer_update();
  void clip_gradients();  // inside optimizer_update: sets grad_norm_, scales the gradients it reads
  // TP collectives on activations [rows, cols]: the row-parallel output (g) and the
  // column-parallel input (f) of Megatron, with or without sequence parallelism.
  void tp_reduce_output(const T* partial, T* out_local, int64_t cols);  // all-reduce or reduce-scatter
  void tp_gather_input(const T* local, T* full, int64_t cols);          // copy or all-gather
  void tp_reduce_input_grad(T* partial_full, T* grad_local, int64_t cols);
  T* w(int64_t block, int which);
  void gather_block(int64_t block);   // ZeRO-3: all-gather a block's parameters before use
  void release_block(int64_t block);  // ZeRO-3: free them after use
  // Bytes the output block keeps from its forward to its backward: the final norm's input,
  // row statistics and output (this rank's rows).
  static int64_t output_block_bytes(const MicroBatch& mb) {
    return static_cast<int64_t>((mb.x_final.size() + mb.rstd_f.size() + mb.xf_loc.size()) * sizeof(T));
  }
  // ZeRO-3: post the all-gather of the block used next, so that it runs while this one computes
  // (FSDP's forward and backward prefetch; the cost model's two live units). gather_block()
  // then waits for it; w() and g() drive it between operators.
  void prefetch_block(int64_t block);
  void progress_prefetch();
  T* g(int64_t block, int which);

  StepSpec spec_;
  Communicator& world_;
  MeshGroups groups_;
  std::unique_ptr<Communicator> dpcp_;  // gradient group: every DP x CP rank of this (tp, pp)
  // ZeRO's shard group: dpcp_ itself, or with hybrid sharding (options.dp_replicate R > 1) this
  // rank's (DP / R) x CP consecutive ranks of dpcp_ (shard_owned_); replica_ holds the R ranks
  // with this rank's shard (null when R = 1), across which the reduced shards are all-reduced.
  std::unique_ptr<Communicator> shard_owned_, replica_;
  Communicator* shard_ = nullptr;
  // The CP method of the plan (options.cp_comm), float32 only: exactly one is set. At CP = 1 the
  // ring runs (the three methods are the same single-rank attention there).
  std::unique_ptr<RingAttention> ring_;
  std::unique_ptr<AllGatherAttention> gather_;
  std::unique_ptr<AllToAllAttention> a2a_;
  std::unique_ptr<HybridAttention> hybrid_;
  // Shapes on this rank.
  int64_t tp_ = 1, hq_ = 0, hkv_ = 0, d_ = 0, hidden_ = 0, ffn_ = 0, vocab_ = 0, vocab0_ = 0;
  int64_t n_ = 0;          // tokens of one sequence on this rank (L / CP)
  int64_t rows_ = 0;       // micro_batch * n_: rows of a full (TP-gathered) activation
  int64_t rows_local_ = 0; // rows_ / TP with sequence parallelism, else rows_
  int64_t chunks_ = 1;               // model chunks per stage (interleave)
  std::vector<int64_t> chunk_layers_;  // layers of each chunk (core/pipeline_split.hpp)
  std::vector<int64_t> chunk_layer0_;   // first global layer of each chunk
  std::vector<int64_t> block_of_layer_; // global layer -> index in blocks_ (-1: another stage's)
  bool first_stage_ = true, last_stage_ = true;
  int64_t micro_batches_ = 1;
  std::vector<int64_t> positions_;  // global positions of this rank's n_ tokens
  std::vector<int64_t> documents_;  // their document ids (packed documents), else empty
  const int64_t* documents() const { return documents_.empty() ? nullptr : documents_.data(); }

  std::vector<ParamInfo> params_;
  std::vector<Block> blocks_;       // embedding (first stage), layers, output (last stage)
  std::vector<T> weights_, grads_;
  // ZeRO: each block is split into dpcp shards of padded length; optimizer state (and, with
  // ZeRO-2, the reduced gradients) cover only this rank's shard of each block.
  std::vector<T> opt_m_, opt_v_, shard_grads_;
  // ZeRO-3: this rank's shard of every block, and the blocks gathered for use (empty when
  // ZeRO < 3, where weights_ holds everything).
  std::vector<T> shard_weights_;
  std::vector<std::vector<T>> gathered_;
  std::vector<RequestPtr> gather_req_;  // per block: its prefetch in flight, else null
  int64_t prefetching_ = -1;            // the block whose prefetch is in flight, else -1
  int64_t gathered_bytes_ = 0, gathered_peak_bytes_ = 0;
  std::vector<RequestPtr> pending_;
  // ZeRO >= 2: per-block gradients while they are computed and reduced, the shard-sized
  // reduce-scatter results, and the reductions in flight (oldest first).
  std::vector<std::vector<T>> block_grads_, block_scratch_;
  std::vector<std::pair<int64_t, RequestPtr>> inflight_;
  int64_t grad_work_bytes_ = 0, grad_work_peak_bytes_ = 0;
  int64_t step_count_ = 0;

  StepTiming timing_;
  int64_t act_bytes_ = 0, act_peak_bytes_ = 0, logits_bytes_ = 0;
  std::vector<StepEvent> events_;
  double grad_norm_ = 0;
  double last_loss_sum_ = 0;        // sum of token losses of this step's micro-batches (last stage)
  struct Clock;
  std::unique_ptr<Clock> clock_;
};

extern template class Trainer<float>;
extern template class Trainer<double>;

// Synthetic data: the token at GLOBAL (sequence, position) of the global batch; the target of a
// token is the next token of the same sequence. Every step trains on the same global batch, so
// the loss falls as the model fits it (a step that trains nothing shows a flat loss).
int64_t synthetic_token(uint64_t seed, int64_t sequence, int64_t position, int64_t vocab);
// A parameter element's initial value from its full parameter id and (row, col).
double initial_parameter(uint64_t seed, int32_t id, int64_t row, int64_t col, int64_t fan_in, bool is_norm);

}  // namespace ringplan::runtime::step
