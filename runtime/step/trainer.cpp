// The whole training step (see trainer.hpp for what runs where and why).
#include "runtime/step/trainer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/documents.hpp"
#include "core/error.hpp"
#include "core/pipeline_split.hpp"
#include "runtime/executor.hpp"
#include "runtime/allgather_attention.hpp"
#include "runtime/alltoall_attention.hpp"
#include "runtime/hybrid_attention.hpp"
#include "runtime/ring_attention.hpp"
#include "runtime/sharding.hpp"
#include "runtime/step/ops.hpp"

namespace ringplan::runtime::step {

// ------------------------------------------------------------------ names, data, init
const char* term_name(Term t) {
  switch (t) {
    case Term::forward_compute: return "forward_compute";
    case Term::backward_compute: return "backward_compute";
    case Term::recompute: return "recompute";
    case Term::ring_exposed: return "ring_exposed";
    case Term::tp_comm: return "tp_comm";
    case Term::dp_comm_exposed: return "dp_comm_exposed";
    case Term::zero_comm: return "zero_comm";
    case Term::pp_comm: return "pp_comm";
    case Term::optimizer: return "optimizer";
    case Term::count: break;
  }
  return "?";
}

namespace {
uint64_t mix(uint64_t x) { return splitmix64(x); }
uint64_t hash(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e) {
  return mix(mix(mix(mix(mix(a) ^ b) ^ c) ^ d) ^ e);
}
double unit(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53 * 2.0 - 1.0; }  // [-1, 1)
}  // namespace

int64_t synthetic_token(uint64_t seed, int64_t sequence, int64_t position, int64_t vocab) {
  return static_cast<int64_t>(hash(seed, 0x70C3, 0, static_cast<uint64_t>(sequence),
                                   static_cast<uint64_t>(position)) %
                              static_cast<uint64_t>(vocab));
}

double initial_parameter(uint64_t seed, int32_t id, int64_t row, int64_t col, int64_t fan_in, bool is_norm) {
  const double u = unit(hash(seed, 0x9A4A, static_cast<uint64_t>(id), static_cast<uint64_t>(row), static_cast<uint64_t>(col)));
  // Norm scales near 1 (not exactly 1, so their gradients are exercised); matrices uniform with
  // variance 1/(3 fan_in), which keeps activations O(1) through the layers.
  return is_norm ? 1.0 + 0.1 * u : u / std::sqrt(static_cast<double>(fan_in));
}

// ------------------------------------------------------------------ checks
void check_step_spec(const StepSpec& s) {
  const ModelConfig& m = s.model;
  const Mesh& mesh = s.mesh;
  const ParallelOptions& o = s.options;
  auto fail = [](const std::string& why) { throw bad_input("the training step cannot run this plan: " + why); };
  if (mesh.dp < 1 || mesh.tp < 1 || mesh.cp < 1 || mesh.pp < 1)
    fail(fmt::format("mesh sizes must be >= 1 (dp={} tp={} cp={} pp={})", mesh.dp, mesh.tp, mesh.cp, mesh.pp));
  if (m.layers < 1 || m.hidden < 1 || m.heads < 1 || m.kv_heads < 1 || m.head_dim < 2 || m.ffn_hidden < 1 || m.vocab < 2)
    fail("model sizes must be positive (layers, hidden, heads, kv_heads, head_dim >= 2, ffn_hidden, vocab >= 2)");
  if (m.head_dim % 2 != 0) fail(fmt::format("head_dim {} must be even (rotary embedding rotates pairs)", m.head_dim));
  if (m.heads % m.kv_heads != 0) fail(fmt::format("heads {} not divisible by kv_heads {}", m.heads, m.kv_heads));
  if (m.heads % mesh.tp != 0) fail(fmt::format("heads {} not divisible by tp={}", m.heads, mesh.tp));
  if (m.kv_heads % mesh.tp != 0) fail(fmt::format("kv_heads {} not divisible by tp={}", m.kv_heads, mesh.tp));
  if (m.ffn_hidden % mesh.tp != 0) fail(fmt::format("ffn_hidden {} not divisible by tp={}", m.ffn_hidden, mesh.tp));
  if (m.vocab % mesh.tp != 0)
    fail(fmt::format("vocab {} not divisible by tp={} (the embedding and output layer are split by vocabulary)",
                     m.vocab, mesh.tp));
  if (mesh.pp > m.layers) fail(fmt::format("pp={} exceeds the {} layers (every stage needs a layer)", mesh.pp, m.layers));
  if (s.seq_len < 1) fail("seq_len must be >= 1");
  const int64_t multiple = shard_multiple(o.cp_scheme, mesh.cp);
  if (s.seq_len % multiple != 0)
    fail(fmt::format("seq_len {} not divisible by {} ({} sharding over cp={})", s.seq_len, multiple,
                     to_string(o.cp_scheme), mesh.cp));
  if (!s.document_lengths.empty()) {
    if (const std::string why = check_document_lengths(s.document_lengths, s.seq_len); !why.empty())
      fail("packed documents: " + why);
  }
  if (o.micro_batch < 1) fail(fmt::format("micro_batch {} must be >= 1", o.micro_batch));
  if (s.global_batch < 1 || s.global_batch % (mesh.dp * o.micro_batch) != 0)
    fail(fmt::format("global batch {} not divisible by dp x micro_batch = {}", s.global_batch, mesh.dp * o.micro_batch));
  const int64_t rows = o.micro_batch * (s.seq_len / mesh.cp);
  if (o.sequence_parallel && mesh.tp > 1 && rows % mesh.tp != 0)
    fail(fmt::format("sequence parallelism splits micro_batch x seq_len/cp = {} token rows by tp={}, which does not "
                     "divide them",
                     rows, mesh.tp));
  if (o.zero_stage < 0 || o.zero_stage > 3) fail(fmt::format("zero_stage {} must be 0..3", o.zero_stage));
  if (o.dp_replicate < 1 || mesh.dp % o.dp_replicate != 0)
    fail(fmt::format("dp_replicate {} must divide dp={} (hybrid sharding's replica count)", o.dp_replicate, mesh.dp));
  if (o.dp_replicate > 1 && o.zero_stage == 0)
    fail(fmt::format("dp_replicate {} needs zero_stage >= 1 (ZeRO-0 shards nothing to replicate)", o.dp_replicate));
  if (o.interleave < 1) fail(fmt::format("interleave {} must be >= 1", o.interleave));
  // The layers of each stage and chunk: core/pipeline_split.hpp, as the cost model and emit.
  if (const std::string why = pipeline_split_problem(m.layers, mesh.pp, o); !why.empty()) fail("pipeline split: " + why);
  if (o.interleave > 1) {
    if (mesh.pp < 2) fail(fmt::format("interleave {} needs pp > 1", o.interleave));
    const int64_t mbs = s.global_batch / (mesh.dp * o.micro_batch);
    if (mbs % mesh.pp != 0)
      fail(fmt::format("interleave {} needs micro-batches {} divisible by pp={} (they enter in groups of pp)",
                       o.interleave, mbs, mesh.pp));
  }
  if (o.attention != AttentionImpl::flash)
    fail("attention materialized: the step runs flash attention (the materialised kernel keeps one layer's scores "
         "only); use --scope attention to measure materialised attention");
  if (m.tied_embeddings && mesh.pp > 1)
    fail("tied embeddings with pp > 1 (the first and last stage would share the embedding) are not run; untie them "
         "or use pp=1");
  if (s.learning_rate <= 0 || !std::isfinite(s.learning_rate)) fail("learning rate must be a finite number > 0");
  if (s.clip_grad < 0 || !std::isfinite(s.clip_grad)) fail("clip_grad must be a finite number >= 0 (0: no clipping)");
}

StepSpec one_process_reference(const StepSpec& spec) {
  StepSpec ref = spec;
  ref.mesh = Mesh{1, 1, 1, 1};
  ref.options = ParallelOptions{};
  ref.options.micro_batch = spec.options.micro_batch;  // divides the global batch whenever dp x it does
  ref.options.attention = spec.options.attention;
  return ref;
}

// ------------------------------------------------------------------ timing
// Stack of nested regions: a region's own time is its wall time minus its children's, so every
// instant of the step is charged to exactly one term.
template <class T>
struct Trainer<T>::Clock {
  struct Frame {
    Term term;
    std::chrono::steady_clock::time_point start;
    double child_s;
  };
  std::array<double, kTermCount>* acc = nullptr;
  std::vector<Frame> stack;
  std::vector<StepEvent>* events = nullptr;  // null: not recording
  std::vector<double> tp_regions;            // own time of each TP collective region, this step
  std::chrono::steady_clock::time_point epoch;
  int32_t step = 0;
  void push(Term t) { stack.push_back({t, std::chrono::steady_clock::now(), 0.0}); }
  void pop() {
    const Frame f = stack.back();
    stack.pop_back();
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - f.start).count();
    (*acc)[static_cast<size_t>(f.term)] += el - f.child_s;
    if (f.term == Term::tp_comm) tp_regions.push_back(el - f.child_s);
    if (events != nullptr)
      events->push_back({std::chrono::duration<double>(f.start - epoch).count(), el, step, f.term});
    if (!stack.empty()) stack.back().child_s += el;
  }
  // Re-charges `s` seconds of the current region to `to` (the ring's waits inside a compute region).
  void move_current(Term to, double s) {
    (*acc)[static_cast<size_t>(stack.back().term)] -= s;
    (*acc)[static_cast<size_t>(to)] += s;
  }
};

namespace {
template <class C>
struct Scope {
  C& c;
  Scope(C& clock, Term t) : c(clock) { c.push(t); }
  ~Scope() { c.pop(); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
};
}  // namespace

// ------------------------------------------------------------------ parameters
// Layer parameters, in block order.
enum LayerParam : int { kAttnNorm = 0, kWq, kWk, kWv, kWo, kMlpNorm, kWgate, kWup, kWdown, kLayerParams };
enum OutParam : int { kFinalNorm = 0, kHead };
constexpr int32_t kIdEmbedding = 1, kIdFinalNorm = 2, kIdHead = 3;
int32_t layer_param_id(int64_t layer, int which) { return static_cast<int32_t>(100 + layer * 16 + which); }

template <class T>
struct Trainer<T>::Block {
  int kind = 0;                 // 0 embedding, 1 layer, 2 output
  int64_t layer = -1;
  std::vector<int> param;       // index into params_ per slot; -1 absent
  size_t offset = 0;            // of the block's segment in weights_ / grads_
  size_t padded = 0;            // segment length, a multiple of the DP x CP group size
  size_t shard = 0;             // padded / group size
  size_t shard_offset = 0;      // of this rank's shard in opt state / shard_grads_
};

template <class T>
struct Trainer<T>::LayerStash {
  std::vector<T> x_in, rstd1, a_loc, q, k, v, o, lse, x_mid, rstd2, c_loc, ga, gu, mact;
  // Kept only by recompute selective_op, as torchtitan's per-op policy keeps them: the down
  // projection's output (gated MLP: the 7th matmul) and, with SP, the two reduce-scatter outputs.
  std::vector<T> down_out, attn_rs, mlp_rs;
  int64_t bytes() const {
    size_t n = 0;
    for (const auto* p : {&x_in, &rstd1, &a_loc, &q, &k, &v, &o, &lse, &x_mid, &rstd2, &c_loc, &ga, &gu, &mact,
                          &down_out, &attn_rs, &mlp_rs})
      n += p->size();
    return static_cast<int64_t>(n * sizeof(T));
  }
  void release_all_but_input() {
    for (auto* p : {&rstd1, &a_loc, &q, &k, &v, &o, &lse, &x_mid, &rstd2, &c_loc, &ga, &gu, &mact}) {
      p->clear();
      p->shrink_to_fit();
    }
  }
};

template <class T>
struct Trainer<T>::MicroBatch {
  int64_t chunk = 0;                     // model chunk (virtual stage chunk * PP + stage)
  std::vector<int64_t> tokens, targets;  // [rows_] (first / last stage)
  std::vector<T> input;                  // stage input [rows_local_, h] (received, or the embedding's)
  std::vector<LayerStash> layers;
  std::vector<T> x_final, rstd_f, xf_loc;  // last stage: output of the last layer, final norm
  std::vector<T> dlogits;                // last stage: [rows_, V/TP], d loss / d logits
  std::vector<T> out;                    // stage output to send [rows_local_, h]
  std::vector<T> grad_out;               // gradient of the stage output (received)
  std::vector<T> grad_in;                // gradient of the stage input (to send)
};

template <class T>
Trainer<T>::Trainer(const StepSpec& spec, Communicator& world)
    : spec_(spec), world_(world), clock_(std::make_unique<Clock>()) {
  check_step_spec(spec_);
  groups_ = make_mesh_groups(world_, spec_.mesh);
  const Mesh& mesh = spec_.mesh;
  const MeshCoord& c = groups_.coord;
  // The gradient group: ranks with the same (tp, pp), ordered by (cp, dp).
  dpcp_ = world_.split(static_cast<int>(c.tp + mesh.tp * c.pp), static_cast<int>(c.cp + mesh.cp * c.dp));
  // Hybrid sharding: the gradient group's ranks (ordered by cp + CP x dp) cut into R groups of
  // S = DP x CP / R consecutive ones, the DP index split as replica x shard with the shard inner,
  // as the cost model places them (sim::predict); the i-th ranks of the R groups hold the same shard.
  if (spec_.options.dp_replicate > 1) {
    const int r = dpcp_->rank(), S = dpcp_->size() / static_cast<int>(spec_.options.dp_replicate);
    shard_owned_ = dpcp_->split(r / S, r % S);
    replica_ = dpcp_->split(r % S, r / S);
    shard_ = shard_owned_.get();
  } else {
    shard_ = dpcp_.get();
  }
  tp_ = mesh.tp;
  hq_ = spec_.model.heads / tp_;
  hkv_ = spec_.model.kv_heads / tp_;
  d_ = spec_.model.head_dim;
  hidden_ = spec_.model.hidden;
  ffn_ = spec_.model.ffn_hidden / tp_;
  vocab_ = spec_.model.vocab / tp_;
  vocab0_ = c.tp * vocab_;
  n_ = spec_.seq_len / mesh.cp;
  rows_ = spec_.options.micro_batch * n_;
  rows_local_ = spec_.options.sequence_parallel ? rows_ / tp_ : rows_;
  // Chunk k of stage p is virtual stage k * PP + p; virtual stages hold consecutive layers in
  // that order, as many as core/pipeline_split.hpp gives them (Megatron's and torchtitan's
  // looped assignment; interleave 1 gives stage p one contiguous range).
  chunks_ = spec_.options.interleave;
  chunk_layers_.resize(static_cast<size_t>(chunks_));
  chunk_layer0_.resize(static_cast<size_t>(chunks_));
  for (int64_t k = 0; k < chunks_; ++k) {
    chunk_layers_[static_cast<size_t>(k)] = chunk_layers(spec_.model.layers, mesh.pp, spec_.options, c.pp, k);
    chunk_layer0_[static_cast<size_t>(k)] = chunk_first_layer(spec_.model.layers, mesh.pp, spec_.options, c.pp, k);
  }
  first_stage_ = c.pp == 0;
  last_stage_ = c.pp == mesh.pp - 1;
  micro_batches_ = spec_.global_batch / (mesh.dp * spec_.options.micro_batch);
  const bool packed = !spec_.document_lengths.empty();
  positions_ = rank_positions(spec_.options.cp_scheme, spec_.seq_len, spec_.document_lengths, mesh.cp, c.cp);
  if (packed) documents_ = documents_at(spec_.document_lengths, positions_);

  if constexpr (std::is_same_v<T, float>) {
    RingConfig rc;
    rc.batch = spec_.options.micro_batch;
    rc.heads = hq_;
    rc.kv_heads = hkv_;
    rc.tokens = n_;
    rc.head_dim = d_;
    rc.causal = spec_.causal;
    rc.kernel = AttentionImpl::flash;
    rc.tiles = spec_.tiles;
    if (spec_.options.cp_comm == CpComm::allgather && mesh.cp > 1)
      gather_ = std::make_unique<AllGatherAttention>(*groups_.cp, rc, positions_.data(), documents());
    else if (spec_.options.cp_comm == CpComm::alltoall && mesh.cp > 1)
      a2a_ = std::make_unique<AllToAllAttention>(*groups_.cp, rc, positions_.data(), documents());
    else if (spec_.options.cp_comm == CpComm::hybrid && mesh.cp > 1) {
      // The caller resolves the default group size (the cost model's rule; the runtime knows no sim).
      if (spec_.options.cp_a2a_size < 1)
        throw bad_input(fmt::format("cp_comm hybrid: options.cp_a2a_size {} must be a group size >= 1 that divides "
                                    "cp {} (0, the default, is resolved by the caller)",
                                    spec_.options.cp_a2a_size, mesh.cp));
      hybrid_ = std::make_unique<HybridAttention>(*groups_.cp, spec_.options.cp_a2a_size, rc, positions_.data(),
                                                  documents());
    }
    else
      ring_ = std::make_unique<RingAttention>(*groups_.cp, rc, positions_.data(), documents());
  } else {
    if (mesh.cp != 1)
      throw bad_input("the float64 training step runs attention with the reference kernels: cp must be 1");
  }
  build_params();
}

template <class T>
Trainer<T>::~Trainer() = default;

template <class T>
void Trainer<T>::record_events(std::chrono::steady_clock::time_point epoch) {
  clock_->events = &events_;
  clock_->epoch = epoch;
}

template <class T>
void Trainer<T>::build_params() {
  const int64_t h = hidden_;
  const int64_t S = shard_->size();
  size_t offset = 0, shard_offset = 0;
  const ModelConfig& m = spec_.model;
  // One parameter: a [rows, cols] block at (row0, col0) of the full [full_rows, full_cols] matrix.
  auto add = [&](Block& b, int slot, int32_t id, const std::string& name, int64_t full_rows, int64_t full_cols,
                 int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
    ParamInfo p{id, name, full_rows, full_cols, row0, rows, col0, cols, offset};
    if (static_cast<int>(b.param.size()) <= slot) b.param.resize(static_cast<size_t>(slot) + 1, -1);
    b.param[static_cast<size_t>(slot)] = static_cast<int>(params_.size());
    params_.push_back(p);
    offset += static_cast<size_t>(rows * cols);
  };
  auto begin_block = [&](int kind, int64_t layer) {
    Block b;
    b.kind = kind;
    b.layer = layer;
    b.offset = offset;
    return b;
  };
  auto end_block = [&](Block& b) {
    const size_t len = offset - b.offset;
    b.shard = (len + static_cast<size_t>(S) - 1) / static_cast<size_t>(S);
    b.padded = b.shard * static_cast<size_t>(S);
    offset = b.offset + b.padded;  // padding: zeros that the optimizer leaves at zero
    b.shard_offset = shard_offset;
    shard_offset += b.shard;
    blocks_.push_back(std::move(b));
  };
  const int64_t t = groups_.coord.tp;
  if (first_stage_) {
    Block b = begin_block(0, -1);
    add(b, 0, kIdEmbedding, "embedding", m.vocab, h, vocab0_, vocab_, 0, h);
    end_block(b);
  }
  const int64_t qd = hq_ * d_, kvd = hkv_ * d_;
  block_of_layer_.assign(static_cast<size_t>(m.layers), -1);
  for (int64_t k = 0; k < chunks_; ++k)
    for (int64_t l = chunk_layer0_[static_cast<size_t>(k)];
         l < chunk_layer0_[static_cast<size_t>(k)] + chunk_layers_[static_cast<size_t>(k)]; ++l) {
    block_of_layer_[static_cast<size_t>(l)] = static_cast<int64_t>(blocks_.size());
    Block b = begin_block(1, l);
    const std::string p = fmt::format("layer{}.", l);
    add(b, kAttnNorm, layer_param_id(l, kAttnNorm), p + "attn_norm", 1, h, 0, 1, 0, h);
    add(b, kWq, layer_param_id(l, kWq), p + "wq", m.heads * d_, h, t * qd, qd, 0, h);
    add(b, kWk, layer_param_id(l, kWk), p + "wk", m.kv_heads * d_, h, t * kvd, kvd, 0, h);
    add(b, kWv, layer_param_id(l, kWv), p + "wv", m.kv_heads * d_, h, t * kvd, kvd, 0, h);
    add(b, kWo, layer_param_id(l, kWo), p + "wo", h, m.heads * d_, 0, h, t * qd, qd);
    add(b, kMlpNorm, layer_param_id(l, kMlpNorm), p + "mlp_norm", 1, h, 0, 1, 0, h);
    if (m.gated_mlp) add(b, kWgate, layer_param_id(l, kWgate), p + "w_gate", m.ffn_hidden, h, t * ffn_, ffn_, 0, h);
    add(b, kWup, layer_param_id(l, kWup), p + "w_up", m.ffn_hidden, h, t * ffn_, ffn_, 0, h);
    add(b, kWdown, layer_param_id(l, kWdown), p + "w_down", h, m.ffn_hidden, 0, h, t * ffn_, ffn_);
    end_block(b);
  }
  if (last_stage_) {
    Block b = begin_block(2, -1);
    add(b, kFinalNorm, kIdFinalNorm, "final_norm", 1, h, 0, 1, 0, h);
    if (!m.tied_embeddings) add(b, kHead, kIdHead, "output", m.vocab, h, vocab0_, vocab_, 0, h);
    end_block(b);
  }
  weights_.assign(offset, T(0));
  // ZeRO >= 2 keeps no full gradient buffer: a block's gradient exists from its backward until
  // its reduce-scatter completes (block_grads_).
  if (spec_.options.zero_stage >= 2) {
    block_grads_.resize(blocks_.size());
    block_scratch_.resize(blocks_.size());
  } else {
    grads_.assign(offset, T(0));
  }
  for (const ParamInfo& p : params_) {
    const bool is_norm = p.full_rows == 1;
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t c = 0; c < p.cols; ++c)
        weights_[p.offset + static_cast<size_t>(r * p.cols + c)] =
            T(initial_parameter(spec_.seed, p.id, p.row0 + r, p.col0 + c, p.full_cols, is_norm));
  }
  if (spec_.options.zero_stage >= 3) {
    // ZeRO-3 keeps only this rank's shard of every block; blocks are all-gathered before use.
    const size_t me = static_cast<size_t>(shard_->rank());
    shard_weights_.assign(shard_offset, T(0));
    for (const Block& b : blocks_)
      std::copy(weights_.begin() + static_cast<std::ptrdiff_t>(b.offset + me * b.shard),
                weights_.begin() + static_cast<std::ptrdiff_t>(b.offset + (me + 1) * b.shard),
                shard_weights_.begin() + static_cast<std::ptrdiff_t>(b.shard_offset));
    weights_ = {};
    gathered_.resize(blocks_.size());
    gather_req_.resize(blocks_.size());
  }
  const bool sharded = spec_.options.zero_stage >= 1;
  const size_t state = sharded ? shard_offset : offset;
  opt_m_.assign(state, T(0));
  if (spec_.optimizer == Optimizer::adam) opt_v_.assign(state, T(0));
  if (spec_.options.zero_stage >= 2) {
    shard_grads_.assign(shard_offset, T(0));
  }
}

template <class T>
T* Trainer<T>::w(int64_t block, int which) {
  const Block& b = blocks_[static_cast<size_t>(block)];
  const int i = b.param[static_cast<size_t>(which)];
  if (i < 0) return nullptr;
  const size_t off = params_[static_cast<size_t>(i)].offset;
  if (gathered_.empty()) return weights_.data() + off;
  progress_prefetch();  // an operator is about to run: drive the next block's gather
  // ZeRO-3: the block must have been gathered (gather_block) by the code that uses it.
  std::vector<T>& full = gathered_[static_cast<size_t>(block)];
  if (full.empty() || gather_req_[static_cast<size_t>(block)])
    throw Error(ErrorKind::runtime, fmt::format("ZeRO-3: block {} used before its gather", block));
  return full.data() + (off - b.offset);
}

template <class T>
void Trainer<T>::progress_prefetch() {
  if (prefetching_ < 0) return;
  if (shard_->test(gather_req_[static_cast<size_t>(prefetching_)])) prefetching_ = -1;
}

template <class T>
void Trainer<T>::prefetch_block(int64_t block) {
  if (gathered_.empty() || block < 0 || prefetching_ >= 0) return;  // one prefetch in flight at most
  std::vector<T>& full = gathered_[static_cast<size_t>(block)];
  if (!full.empty()) return;  // gathered already
  const Block& b = blocks_[static_cast<size_t>(block)];
  Scope<Clock> s(*clock_, Term::zero_comm);  // posting is not free (the first exchange may run here)
  full.resize(b.padded);
  RequestPtr& r = gather_req_[static_cast<size_t>(block)];
  r = shard_->post_all_gather(shard_weights_.data() + b.shard_offset, full.data(), b.shard * sizeof(T));
  if (r) prefetching_ = block;
  gathered_bytes_ += static_cast<int64_t>(b.padded * sizeof(T));
  gathered_peak_bytes_ = std::max(gathered_peak_bytes_, gathered_bytes_);
}

template <class T>
void Trainer<T>::gather_block(int64_t block) {
  if (gathered_.empty()) return;
  std::vector<T>& full = gathered_[static_cast<size_t>(block)];
  RequestPtr& pending = gather_req_[static_cast<size_t>(block)];
  if (pending) {  // prefetched: what is left of its gather is exposed here
    Scope<Clock> s(*clock_, Term::zero_comm);
    shard_->wait(pending);
    if (prefetching_ == block) prefetching_ = -1;
    return;
  }
  if (!full.empty()) return;
  const Block& b = blocks_[static_cast<size_t>(block)];
  Scope<Clock> s(*clock_, Term::zero_comm);
  full.resize(b.padded);
  shard_->all_gather(shard_weights_.data() + b.shard_offset, full.data(), b.shard * sizeof(T));
  gathered_bytes_ += static_cast<int64_t>(b.padded * sizeof(T));
  gathered_peak_bytes_ = std::max(gathered_peak_bytes_, gathered_bytes_);
}

template <class T>
void Trainer<T>::release_block(int64_t block) {
  if (gathered_.empty()) return;
  std::vector<T>& full = gathered_[static_cast<size_t>(block)];
  if (gather_req_[static_cast<size_t>(block)])  // never freed under a gather in flight
    throw Error(ErrorKind::runtime, fmt::format("ZeRO-3: block {} released while its gather is in flight", block));
  gathered_bytes_ -= static_cast<int64_t>(full.size() * sizeof(T));
  full = {};
}

template <class T>
void Trainer<T>::gather_full_parameters() {
  if (gathered_.empty()) return;
  size_t total = 0;
  for (const Block& b : blocks_) total = std::max(total, b.offset + b.padded);
  weights_.assign(total, T(0));
  for (const Block& b : blocks_)
    shard_->all_gather(shard_weights_.data() + b.shard_offset, weights_.data() + b.offset, b.shard * sizeof(T));
}
template <class T>
T* Trainer<T>::g(int64_t block, int which) {
  const Block& b = blocks_[static_cast<size_t>(block)];
  const int i = b.param[static_cast<size_t>(which)];
  if (i < 0) return nullptr;
  const size_t off = params_[static_cast<size_t>(i)].offset;
  if (block_grads_.empty()) return grads_.data() + off;
  std::vector<T>& gb = block_grads_[static_cast<size_t>(block)];
  if (gb.empty()) {
    gb.assign(b.padded, T(0));
    grad_work_bytes_ += static_cast<int64_t>(b.padded * sizeof(T));
    grad_work_peak_bytes_ = std::max(grad_work_peak_bytes_, grad_work_bytes_);
  }
  return gb.data() + (off - b.offset);
}

template <class T>
const T* Trainer<T>::find(int32_t id, int64_t row, int64_t col) const {
  for (const ParamInfo& p : params_)
    if (p.id == id && row >= p.row0 && row < p.row0 + p.rows && col >= p.col0 && col < p.col0 + p.cols)
      return weights_.data() + p.offset + static_cast<size_t>((row - p.row0) * p.cols + (col - p.col0));
  return nullptr;
}

// ------------------------------------------------------------------ TP collectives
template <class T>
void Trainer<T>::tp_reduce_output(const T* partial, T* out_local, int64_t cols) {
  const size_t full = static_cast<size_t>(rows_ * cols);
  if (tp_ == 1) {
    std::copy(partial, partial + full, out_local);
    return;
  }
  Scope<Clock> s(*clock_, Term::tp_comm);
  if (spec_.options.sequence_parallel) {
    groups_.tp->reduce_scatter_sum(partial, out_local, static_cast<size_t>(rows_local_ * cols));
  } else {
    std::copy(partial, partial + full, out_local);
    groups_.tp->all_reduce_sum(out_local, full);
  }
}
template <class T>
void Trainer<T>::tp_gather_input(const T* local, T* full, int64_t cols) {
  if (tp_ == 1 || !spec_.options.sequence_parallel) {
    std::copy(local, local + rows_ * cols, full);
    return;
  }
  Scope<Clock> s(*clock_, Term::tp_comm);
  groups_.tp->all_gather(local, full, static_cast<size_t>(rows_local_ * cols) * sizeof(T));
}
// Backward of Megatron's f (identity forward, all-reduce backward) and of the SP all-gather
// (reduce-scatter backward): the column-parallel GEMMs' input gradients are partial sums over TP.
template <class T>
void Trainer<T>::tp_reduce_input_grad(T* partial_full, T* grad_local, int64_t cols) {
  tp_reduce_output(partial_full, grad_local, cols);
}

// ------------------------------------------------------------------ attention
template <class T>
void Trainer<T>::attention_forward(LayerStash& st) {
  const int64_t b = spec_.options.micro_batch;
  st.o.assign(static_cast<size_t>(b * hq_ * n_ * d_), T(0));
  st.lse.assign(static_cast<size_t>(b * hq_ * n_), T(0));
  if constexpr (std::is_same_v<T, float>) {
    if (gather_) {
      // The all-gather's time (waits included) is this method's exposed CP communication.
      gather_->forward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data());
      clock_->move_current(Term::ring_exposed, gather_->last_forward().comm_s);
    } else if (a2a_) {
      // The all-to-alls' time (waits included) is this method's exposed CP communication.
      a2a_->forward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data());
      clock_->move_current(Term::ring_exposed, a2a_->last_forward().comm_s);
    } else if (hybrid_) {
      // The group's all-to-alls and the ring's waits are this method's exposed CP communication.
      hybrid_->forward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data());
      clock_->move_current(Term::ring_exposed, hybrid_->last_forward().comm_s);
    } else {
      ring_->forward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data());
      clock_->move_current(Term::ring_exposed, ring_->last_forward().comm_wait_s());
    }
  } else {
    kernels::reference_forward(st.q.data(), st.k.data(), st.v.data(), positions_.data(), positions_.data(), b, hq_,
                               hkv_, n_, n_, d_, spec_.causal, 1.0 / std::sqrt(double(d_)), st.o.data(), st.lse.data(),
                               documents(), documents());
  }
}

template <class T>
void Trainer<T>::attention_backward(LayerStash& st, const T* dout, T* dq, T* dk, T* dv) {
  const int64_t b = spec_.options.micro_batch;
  if constexpr (std::is_same_v<T, float>) {
    if (gather_) {
      gather_->backward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data(), dout, dq, dk, dv);
      clock_->move_current(Term::ring_exposed, gather_->last_backward().comm_s);
    } else if (a2a_) {
      // Reuses the forward's head-sharded tensors when no other forward ran in between (the last
      // layer of a micro-batch); otherwise exchanges Q, K, V, O again (alltoall_attention.hpp).
      a2a_->backward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data(), dout, dq, dk, dv);
      clock_->move_current(Term::ring_exposed, a2a_->last_backward().comm_s);
    } else if (hybrid_) {
      hybrid_->backward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data(), dout, dq, dk, dv);
      clock_->move_current(Term::ring_exposed, hybrid_->last_backward().comm_s);
    } else {
      ring_->backward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data(), dout, dq, dk, dv);
      clock_->move_current(Term::ring_exposed, ring_->last_backward().comm_wait_s());
    }
  } else {
    kernels::reference_backward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), dout, st.lse.data(),
                                positions_.data(), positions_.data(), b, hq_, hkv_, n_, n_, d_, spec_.causal,
                                1.0 / std::sqrt(double(d_)), dq, dk, dv, documents(), documents());
  }
}

// ------------------------------------------------------------------ one layer
template <class T>
void Trainer<T>::layer_forward(int64_t layer, const T* x_in, T* x_out, LayerStash& st, bool keep_all) {
  const int64_t blk = block_of_layer_[static_cast<size_t>(layer)];
  const int64_t h = hidden_, R = rows_, Rl = rows_local_, b = spec_.options.micro_batch;
  const bool gated = spec_.model.gated_mlp;
  const size_t act = static_cast<size_t>(Rl * h);
  st.x_in.assign(x_in, x_in + act);
  st.rstd1.resize(static_cast<size_t>(Rl));
  st.a_loc.resize(act);
  rmsnorm_forward(x_in, w(blk, kAttnNorm), st.a_loc.data(), st.rstd1.data(), Rl, h, spec_.norm_eps);
  std::vector<T> a(static_cast<size_t>(R * h));
  tp_gather_input(st.a_loc.data(), a.data(), h);
  project_heads(a.data(), blk, kWq, hq_, true, st.q);
  project_heads(a.data(), blk, kWk, hkv_, true, st.k);
  project_heads(a.data(), blk, kWv, hkv_, false, st.v);
  attention_forward(st);
  std::vector<T> o_tok(static_cast<size_t>(R * hq_ * d_)), y(static_cast<size_t>(R * h));
  heads_to_tokens(st.o.data(), o_tok.data(), b, n_, hq_, d_);
  linear_forward(o_tok.data(), w(blk, kWo), y.data(), R, hq_ * d_, h);
  st.x_mid.resize(act);
  tp_reduce_output(y.data(), st.x_mid.data(), h);
  const bool keep_op_outputs = !keep_all && spec_.options.recompute == Recompute::selective_op;
  const bool sp = spec_.options.sequence_parallel && tp_ > 1;
  if (keep_op_outputs && sp) st.attn_rs = st.x_mid;
  for (size_t i = 0; i < act; ++i) st.x_mid[i] += x_in[i];

  st.rstd2.resize(static_cast<size_t>(Rl));
  st.c_loc.resize(act);
  rmsnorm_forward(st.x_mid.data(), w(blk, kMlpNorm), st.c_loc.data(), st.rstd2.data(), Rl, h, spec_.norm_eps);
  tp_gather_input(st.c_loc.data(), a.data(), h);  // a now holds the MLP input c
  const size_t fsz = static_cast<size_t>(R * ffn_);
  st.ga.resize(fsz);
  linear_forward(a.data(), gated ? w(blk, kWgate) : w(blk, kWup), st.ga.data(), R, h, ffn_);
  if (gated) {
    st.gu.resize(fsz);
    linear_forward(a.data(), w(blk, kWup), st.gu.data(), R, h, ffn_);
  }
  st.mact.resize(fsz);
  mlp_act_forward(st.ga.data(), gated ? st.gu.data() : nullptr, st.mact.data(), static_cast<int64_t>(fsz), gated);
  linear_forward(st.mact.data(), w(blk, kWdown), y.data(), R, ffn_, h);
  if (keep_op_outputs && gated) st.down_out = y;
  tp_reduce_output(y.data(), x_out, h);
  if (keep_op_outputs && sp) st.mlp_rs.assign(x_out, x_out + act);
  for (size_t i = 0; i < act; ++i) x_out[i] += st.x_mid[i];

  if (!keep_all) {
    auto release = [](std::initializer_list<std::vector<T>*> vs) {
      for (std::vector<T>* v : vs) {
        v->clear();
        v->shrink_to_fit();
      }
    };
    if (spec_.options.recompute == Recompute::full) {
      st.release_all_but_input();
    } else if (spec_.options.recompute == Recompute::selective) {
      release({&st.o, &st.lse});
    } else if (spec_.options.recompute == Recompute::selective_op) {
      // torchtitan's per-op policy (sim::selective_op_recompute): kept are the input, attention's
      // output and lse, the outputs of wq, wv and the first MLP matmul (w1 / up), plus down_out,
      // attn_rs and mlp_rs above. Everything else is re-run by recompute_selective_op.
      release({&st.rstd1, &st.a_loc, &st.k, &st.x_mid, &st.rstd2, &st.c_loc, &st.gu, &st.mact});
    }
  }
}

// One projection of the attention input `a` [rows_, hidden] by weight `which` into `heads` heads,
// rotated (Q, K) or not (V), in the head-major layout attention takes.
template <class T>
void Trainer<T>::project_heads(const T* a, int64_t blk, int which, int64_t heads, bool rotate, std::vector<T>& out) {
  const int64_t R = rows_;
  std::vector<T> tok(static_cast<size_t>(R * heads * d_));
  linear_forward(a, w(blk, which), tok.data(), R, hidden_, heads * d_);
  if (rotate) rope_apply(tok.data(), positions_.data(), R, n_, heads, d_, spec_.rope_base, false);
  out.resize(tok.size());
  tokens_to_heads(tok.data(), out.data(), spec_.options.micro_batch, n_, heads, d_);
}

// Re-runs what recompute selective_op released, in forward order: norm 1, wk (+ RoPE), wo and its
// TP reduction (without SP; with SP its reduce-scatter output was kept), norm 2, w3 and the
// activation (gated) or the activation and the down projection with its TP reduction (not gated,
// without SP). The re-run wo (and, not gated, down) outputs feed only what is already kept: the
// policy re-runs them all the same, and so does this, so the recompute term is what
// sim::predict() charges.
template <class T>
void Trainer<T>::recompute_selective_op(int64_t layer, LayerStash& st) {
  const int64_t blk = block_of_layer_[static_cast<size_t>(layer)];
  const int64_t h = hidden_, R = rows_, Rl = rows_local_, b = spec_.options.micro_batch;
  const bool gated = spec_.model.gated_mlp;
  const bool sp = spec_.options.sequence_parallel && tp_ > 1;
  const size_t act = static_cast<size_t>(Rl * h);
  st.rstd1.resize(static_cast<size_t>(Rl));
  st.a_loc.resize(act);
  rmsnorm_forward(st.x_in.data(), w(blk, kAttnNorm), st.a_loc.data(), st.rstd1.data(), Rl, h, spec_.norm_eps);
  std::vector<T> full(static_cast<size_t>(R * h));
  tp_gather_input(st.a_loc.data(), full.data(), h);
  project_heads(full.data(), blk, kWk, hkv_, true, st.k);
  std::vector<T> o_tok(static_cast<size_t>(R * hq_ * d_)), y(static_cast<size_t>(R * h));
  heads_to_tokens(st.o.data(), o_tok.data(), b, n_, hq_, d_);
  linear_forward(o_tok.data(), w(blk, kWo), y.data(), R, hq_ * d_, h);
  if (sp) {
    st.x_mid = st.attn_rs;
  } else {
    st.x_mid.resize(act);
    tp_reduce_output(y.data(), st.x_mid.data(), h);
  }
  for (size_t i = 0; i < act; ++i) st.x_mid[i] += st.x_in[i];
  st.rstd2.resize(static_cast<size_t>(Rl));
  st.c_loc.resize(act);
  rmsnorm_forward(st.x_mid.data(), w(blk, kMlpNorm), st.c_loc.data(), st.rstd2.data(), Rl, h, spec_.norm_eps);
  tp_gather_input(st.c_loc.data(), full.data(), h);
  const size_t fsz = static_cast<size_t>(R * ffn_);
  if (gated) {
    st.gu.resize(fsz);
    linear_forward(full.data(), w(blk, kWup), st.gu.data(), R, h, ffn_);
  }
  st.mact.resize(fsz);
  mlp_act_forward(st.ga.data(), gated ? st.gu.data() : nullptr, st.mact.data(), static_cast<int64_t>(fsz), gated);
  if (!gated) {
    linear_forward(st.mact.data(), w(blk, kWdown), y.data(), R, ffn_, h);
    if (!sp) {
      std::vector<T> reduced(act);
      tp_reduce_output(y.data(), reduced.data(), h);
    }
  }
}

template <class T>
void Trainer<T>::layer_backward(int64_t layer, LayerStash& st, T* dx, int64_t next_block) {
  const int64_t blk = block_of_layer_[static_cast<size_t>(layer)];
  const int64_t h = hidden_, R = rows_, Rl = rows_local_, b = spec_.options.micro_batch;
  const bool gated = spec_.model.gated_mlp;
  const bool sp = spec_.options.sequence_parallel && tp_ > 1;
  const size_t act = static_cast<size_t>(Rl * h);

  gather_block(blk);
  if (next_block != blk) prefetch_block(next_block);
  // Recompute what the forward did not keep (its time is the recompute term).
  const int64_t kept_bytes = st.bytes();
  if (spec_.options.recompute == Recompute::full) {
    Scope<Clock> s(*clock_, Term::recompute);
    std::vector<T> x_in = st.x_in, out(act);
    layer_forward(layer, x_in.data(), out.data(), st, true);
  } else if (spec_.options.recompute == Recompute::selective) {
    Scope<Clock> s(*clock_, Term::recompute);
    attention_forward(st);
  } else if (spec_.options.recompute == Recompute::selective_op) {
    Scope<Clock> s(*clock_, Term::recompute);
    recompute_selective_op(layer, st);
  }
  act_bytes_ += st.bytes() - kept_bytes;  // the recomputed set is live during this backward
  act_peak_bytes_ = std::max(act_peak_bytes_, act_bytes_);

  // Norm-weight gradients: with SP each TP rank holds a slice of the rows, so its share is
  // summed over TP before it joins the accumulated gradient.
  std::vector<T> dnorm(static_cast<size_t>(h));
  auto norm_grad_into = [&](T* grad) {
    if (sp) {
      Scope<Clock> s(*clock_, Term::tp_comm);
      groups_.tp->all_reduce_sum(dnorm.data(), dnorm.size());
    }
    for (int64_t i = 0; i < h; ++i) grad[i] += dnorm[static_cast<size_t>(i)];
  };

  // MLP: x_out = x_mid + down(act(up(norm(x_mid)))).
  std::vector<T> dfull(static_cast<size_t>(R * h)), cfull(static_cast<size_t>(R * h));
  tp_gather_input(dx, dfull.data(), h);  // SP: the reduce-scatter's backward is an all-gather
  const size_t fsz = static_cast<size_t>(R * ffn_);
  std::vector<T> dm(fsz), da(fsz), du(gated ? fsz : 0);
  linear_backward(st.mact.data(), w(blk, kWdown), dfull.data(), dm.data(), g(blk, kWdown), R, ffn_, h);
  mlp_act_backward(st.ga.data(), gated ? st.gu.data() : nullptr, dm.data(), da.data(), gated ? du.data() : nullptr,
                   static_cast<int64_t>(fsz), gated);
  tp_gather_input(st.c_loc.data(), cfull.data(), h);  // SP: re-gather the MLP input
  std::vector<T> dc(static_cast<size_t>(R * h)), tmp(static_cast<size_t>(R * h));
  linear_backward(cfull.data(), gated ? w(blk, kWgate) : w(blk, kWup), da.data(), dc.data(),
                  gated ? g(blk, kWgate) : g(blk, kWup), R, h, ffn_);
  if (gated) {
    linear_backward(cfull.data(), w(blk, kWup), du.data(), tmp.data(), g(blk, kWup), R, h, ffn_);
    for (size_t i = 0; i < dc.size(); ++i) dc[i] += tmp[i];
  }
  std::vector<T> dc_loc(act), dxn(act);
  tp_reduce_input_grad(dc.data(), dc_loc.data(), h);
  std::fill(dnorm.begin(), dnorm.end(), T(0));
  rmsnorm_backward(st.x_mid.data(), w(blk, kMlpNorm), st.rstd2.data(), dc_loc.data(), dxn.data(), dnorm.data(), Rl, h);
  norm_grad_into(g(blk, kMlpNorm));
  for (size_t i = 0; i < act; ++i) dx[i] += dxn[i];  // dx is now d x_mid

  // Attention: x_mid = x_in + wo(attn(rope(q), rope(k), v)).
  tp_gather_input(dx, dfull.data(), h);
  std::vector<T> o_tok(static_cast<size_t>(R * hq_ * d_)), do_tok(o_tok.size()), do_h(o_tok.size());
  heads_to_tokens(st.o.data(), o_tok.data(), b, n_, hq_, d_);
  linear_backward(o_tok.data(), w(blk, kWo), dfull.data(), do_tok.data(), g(blk, kWo), R, hq_ * d_, h);
  tokens_to_heads(do_tok.data(), do_h.data(), b, n_, hq_, d_);
  std::vector<T> dq(st.q.size()), dk(st.k.size()), dv(st.v.size());
  attention_backward(st, do_h.data(), dq.data(), dk.data(), dv.data());
  std::vector<T> dq_tok(dq.size()), dkv_tok(dk.size());
  std::vector<T>& afull = cfull;
  tp_gather_input(st.a_loc.data(), afull.data(), h);  // SP: re-gather the attention input
  std::vector<T> da_full(static_cast<size_t>(R * h));
  heads_to_tokens(dq.data(), dq_tok.data(), b, n_, hq_, d_);
  rope_apply(dq_tok.data(), positions_.data(), R, n_, hq_, d_, spec_.rope_base, true);
  linear_backward(afull.data(), w(blk, kWq), dq_tok.data(), da_full.data(), g(blk, kWq), R, h, hq_ * d_);
  heads_to_tokens(dk.data(), dkv_tok.data(), b, n_, hkv_, d_);
  rope_apply(dkv_tok.data(), positions_.data(), R, n_, hkv_, d_, spec_.rope_base, true);
  linear_backward(afull.data(), w(blk, kWk), dkv_tok.data(), tmp.data(), g(blk, kWk), R, h, hkv_ * d_);
  for (size_t i = 0; i < da_full.size(); ++i) da_full[i] += tmp[i];
  heads_to_tokens(dv.data(), dkv_tok.data(), b, n_, hkv_, d_);
  linear_backward(afull.data(), w(blk, kWv), dkv_tok.data(), tmp.data(), g(blk, kWv), R, h, hkv_ * d_);
  for (size_t i = 0; i < da_full.size(); ++i) da_full[i] += tmp[i];
  std::vector<T> da_loc(act);
  tp_reduce_input_grad(da_full.data(), da_loc.data(), h);
  std::fill(dnorm.begin(), dnorm.end(), T(0));
  rmsnorm_backward(st.x_in.data(), w(blk, kAttnNorm), st.rstd1.data(), da_loc.data(), dxn.data(), dnorm.data(), Rl, h);
  norm_grad_into(g(blk, kAttnNorm));
  for (size_t i = 0; i < act; ++i) dx[i] += dxn[i];  // dx is now d x_in

  act_bytes_ -= st.bytes();
  st = LayerStash{};
  release_block(blk);
}

// ------------------------------------------------------------------ one micro-batch
template <class T>
void Trainer<T>::forward_micro_batch(MicroBatch& mb, int64_t index) {
  Scope<Clock> scope(*clock_, Term::forward_compute);
  const int64_t h = hidden_, R = rows_, Rl = rows_local_, b = spec_.options.micro_batch;
  const MeshCoord& c = groups_.coord;
  const size_t act = static_cast<size_t>(Rl * h);
  // Global sequence of row block s of this micro-batch on this DP replica.
  auto sequence = [&](int64_t s) { return (index * spec_.mesh.dp + c.dp) * b + s; };
  const bool first = first_stage_ && mb.chunk == 0, last = last_stage_ && mb.chunk == chunks_ - 1;
  if (first || last) {
    mb.tokens.resize(static_cast<size_t>(R));
    mb.targets.resize(static_cast<size_t>(R));
    for (int64_t s = 0; s < b; ++s)
      for (int64_t t = 0; t < n_; ++t) {
        const int64_t pos = positions_[static_cast<size_t>(t)];
        mb.tokens[static_cast<size_t>(s * n_ + t)] = synthetic_token(spec_.seed, sequence(s), pos, spec_.model.vocab);
        mb.targets[static_cast<size_t>(s * n_ + t)] =
            synthetic_token(spec_.seed, sequence(s), pos + 1, spec_.model.vocab);
      }
  }
  if (first) {
    // Vocabulary-parallel embedding: rows of tokens outside this rank's vocabulary slice are
    // zero; the TP reduction assembles the full embedding.
    std::vector<T> partial(static_cast<size_t>(R * h), T(0));
    gather_block(0);
    const T* e = w(0, 0);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t tok = mb.tokens[static_cast<size_t>(r)] - vocab0_;
      if (tok >= 0 && tok < vocab_) std::copy(e + tok * h, e + (tok + 1) * h, partial.begin() + r * h);
    }
    mb.input.resize(act);
    tp_reduce_output(partial.data(), mb.input.data(), h);
    if (!(spec_.model.tied_embeddings && last_stage_)) release_block(0);
  }
  const int64_t chunk_layers_n = chunk_layers_[static_cast<size_t>(mb.chunk)];
  mb.layers.resize(static_cast<size_t>(chunk_layers_n));
  std::vector<T> x = mb.input, y(act);
  const int64_t layer0 = chunk_layer0_[static_cast<size_t>(mb.chunk)];
  for (int64_t l = 0; l < chunk_layers_n; ++l) {
    LayerStash& st = mb.layers[static_cast<size_t>(l)];
    const int64_t blk = block_of_layer_[static_cast<size_t>(layer0 + l)];
    gather_block(blk);
    if (l + 1 < chunk_layers_n) {
      const int64_t next = block_of_layer_[static_cast<size_t>(layer0 + l + 1)];
      if (next != blk) prefetch_block(next);
    }
    layer_forward(layer0 + l, x.data(), y.data(), st, false);
    release_block(blk);
    act_bytes_ += st.bytes();
    act_peak_bytes_ = std::max(act_peak_bytes_, act_bytes_);
    std::swap(x, y);
  }
  if (!last) {
    mb.out = std::move(x);
    return;
  }
  // Final norm, vocabulary-parallel output layer and cross-entropy. The gradient of the loss
  // w.r.t. the logits is formed here, where the logits are, and kept for the backward (the
  // logits themselves are freed): the "logits" memory term.
  const int64_t ob = static_cast<int64_t>(blocks_.size()) - 1;
  gather_block(ob);
  if (spec_.model.tied_embeddings) gather_block(0);
  mb.x_final = std::move(x);
  mb.rstd_f.resize(static_cast<size_t>(Rl));
  mb.xf_loc.resize(act);
  rmsnorm_forward(mb.x_final.data(), w(ob, kFinalNorm), mb.xf_loc.data(), mb.rstd_f.data(), Rl, h, spec_.norm_eps);
  // The norm's input, statistics and output stay until the output block's backward (an
  // activation of the output block: sim::output_block_stored_bytes).
  act_bytes_ += output_block_bytes(mb);
  act_peak_bytes_ = std::max(act_peak_bytes_, act_bytes_);
  std::vector<T> xf(static_cast<size_t>(R * h));
  tp_gather_input(mb.xf_loc.data(), xf.data(), h);
  const T* head = spec_.model.tied_embeddings ? w(0, 0) : w(ob, kHead);
  mb.dlogits.resize(static_cast<size_t>(R * vocab_));
  linear_forward(xf.data(), head, mb.dlogits.data(), R, h, vocab_);
  logits_bytes_ = static_cast<int64_t>(mb.dlogits.size() * sizeof(T));
  // Row statistics over the whole vocabulary: max, then sum of exp and the target's logit.
  std::vector<double> mx(static_cast<size_t>(R)), st(static_cast<size_t>(2 * R), 0.0);
  for (int64_t r = 0; r < R; ++r) {
    const T* lr = mb.dlogits.data() + r * vocab_;
    mx[static_cast<size_t>(r)] = double(*std::max_element(lr, lr + vocab_));
  }
  if (tp_ > 1) {
    Scope<Clock> s(*clock_, Term::tp_comm);
    groups_.tp->all_reduce_max(mx.data(), mx.size());
  }
  for (int64_t r = 0; r < R; ++r) {
    const T* lr = mb.dlogits.data() + r * vocab_;
    double se = 0;
    for (int64_t v = 0; v < vocab_; ++v) se += std::exp(double(lr[v]) - mx[static_cast<size_t>(r)]);
    st[static_cast<size_t>(2 * r)] = se;
    const int64_t tgt = mb.targets[static_cast<size_t>(r)] - vocab0_;
    if (tgt >= 0 && tgt < vocab_) st[static_cast<size_t>(2 * r + 1)] = double(lr[tgt]);
  }
  if (tp_ > 1) {
    Scope<Clock> s(*clock_, Term::tp_comm);
    groups_.tp->all_reduce_sum(st.data(), st.size());
  }
  // Loss = mean over every token of the global batch, so each token's gradient is scaled by
  // 1 / (global batch x seq_len) and the DP x CP sum of gradients is the global mean's.
  const double scale = 1.0 / (double(spec_.global_batch) * double(spec_.seq_len));
  double loss_sum = 0;
  for (int64_t r = 0; r < R; ++r) {
    const double m = mx[static_cast<size_t>(r)], se = st[static_cast<size_t>(2 * r)];
    loss_sum += std::log(se) + m - st[static_cast<size_t>(2 * r + 1)];
    T* lr = mb.dlogits.data() + r * vocab_;
    const int64_t tgt = mb.targets[static_cast<size_t>(r)] - vocab0_;
    for (int64_t v = 0; v < vocab_; ++v) {
      const double p = std::exp(double(lr[v]) - m) / se;
      lr[v] = T((p - (v == tgt ? 1.0 : 0.0)) * scale);
    }
  }
  last_loss_sum_ += loss_sum;
  release_block(ob);
  if (spec_.model.tied_embeddings) release_block(0);
}

template <class T>
void Trainer<T>::backward_micro_batch(MicroBatch& mb, bool last) {
  Scope<Clock> scope(*clock_, Term::backward_compute);
  const int64_t h = hidden_, R = rows_, Rl = rows_local_;
  const size_t act = static_cast<size_t>(Rl * h);
  const bool sp = spec_.options.sequence_parallel && tp_ > 1;
  const bool zero2 = spec_.options.zero_stage >= 2;
  std::vector<T> dx(act);
  const bool first_v = first_stage_ && mb.chunk == 0, last_v = last_stage_ && mb.chunk == chunks_ - 1;
  if (last_v) {
    const int64_t ob = static_cast<int64_t>(blocks_.size()) - 1;
    gather_block(ob);
    if (spec_.model.tied_embeddings) gather_block(0);
    const T* head = spec_.model.tied_embeddings ? w(0, 0) : w(ob, kHead);
    T* dhead = spec_.model.tied_embeddings ? g(0, 0) : g(ob, kHead);
    std::vector<T> xf(static_cast<size_t>(R * h)), dxf(static_cast<size_t>(R * h)), dxf_loc(act);
    tp_gather_input(mb.xf_loc.data(), xf.data(), h);
    linear_backward(xf.data(), head, mb.dlogits.data(), dxf.data(), dhead, R, h, vocab_);
    mb.dlogits = {};
    tp_reduce_input_grad(dxf.data(), dxf_loc.data(), h);
    std::vector<T> dnorm(static_cast<size_t>(h), T(0));
    rmsnorm_backward(mb.x_final.data(), w(ob, kFinalNorm), mb.rstd_f.data(), dxf_loc.data(), dx.data(), dnorm.data(),
                     Rl, h);
    act_bytes_ -= output_block_bytes(mb);
    mb.x_final = {};
    mb.xf_loc = {};
    mb.rstd_f = {};
    if (sp) {
      Scope<Clock> s(*clock_, Term::tp_comm);
      groups_.tp->all_reduce_sum(dnorm.data(), dnorm.size());
    }
    T* gf = g(ob, kFinalNorm);
    for (int64_t i = 0; i < h; ++i) gf[i] += dnorm[static_cast<size_t>(i)];
    release_block(ob);
    if (spec_.model.tied_embeddings) release_block(0);
    // Tied embeddings: the output block holds only the final norm; the shared matrix is in the
    // embedding block, which is reduced after the embedding's own backward below.
    if (last || zero2) reduce_gradients_post(ob);
  } else {
    dx = std::move(mb.grad_out);
  }
  const int64_t layer0 = chunk_layer0_[static_cast<size_t>(mb.chunk)];
  for (int64_t l = chunk_layers_[static_cast<size_t>(mb.chunk)] - 1; l >= 0; --l) {
    const int64_t next = l > 0 ? block_of_layer_[static_cast<size_t>(layer0 + l - 1)] : -1;
    layer_backward(layer0 + l, mb.layers[static_cast<size_t>(l)], dx.data(), next);
    if (last || zero2) reduce_gradients_post(block_of_layer_[static_cast<size_t>(layer0 + l)]);
  }
  mb.layers.clear();
  if (first_v) {
    std::vector<T> dfull(static_cast<size_t>(R * h));
    tp_gather_input(dx.data(), dfull.data(), h);
    T* de = g(0, 0);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t tok = mb.tokens[static_cast<size_t>(r)] - vocab0_;
      if (tok < 0 || tok >= vocab_) continue;
      T* row = de + tok * h;
      const T* src = dfull.data() + r * h;
      for (int64_t i = 0; i < h; ++i) row[i] += src[i];
    }
    if (last || zero2) reduce_gradients_post(0);
  } else {
    mb.grad_in = std::move(dx);
  }
  if (zero2) {
    // ZeRO >= 2: this micro-batch's last reductions complete before the next one starts.
    while (!inflight_.empty()) complete_oldest_reduction();
  }
}

// ZeRO >= 2: waits for the oldest posted reduce-scatter, adds its result to the rank's gradient
// shard and frees the block's gradient and scratch buffers.
template <class T>
void Trainer<T>::complete_oldest_reduction() {
  auto [blk, req] = std::move(inflight_.front());
  inflight_.erase(inflight_.begin());
  {
    Scope<Clock> s(*clock_, Term::dp_comm_exposed);
    shard_->wait(req);
  }
  const Block& bl = blocks_[static_cast<size_t>(blk)];
  std::vector<T>& scratch = block_scratch_[static_cast<size_t>(blk)];
  if (replica_) {  // hybrid sharding: the shard's sum over the replicas
    Scope<Clock> s(*clock_, Term::dp_comm_exposed);
    replica_->all_reduce_sum(scratch.data(), bl.shard);
  }
  for (size_t i = 0; i < bl.shard; ++i) shard_grads_[bl.shard_offset + i] += scratch[i];
  grad_work_bytes_ -= static_cast<int64_t>((scratch.size() + block_grads_[static_cast<size_t>(blk)].size()) * sizeof(T));
  scratch = {};
  block_grads_[static_cast<size_t>(blk)] = {};
}

// ------------------------------------------------------------------ gradient reduction
template <class T>
void Trainer<T>::reduce_gradients_post(int64_t block) {
  const Block& b = blocks_[static_cast<size_t>(block)];
  if (spec_.options.zero_stage >= 2) {
    // Reduce-scatter the block's gradient into a shard-sized scratch; at most two blocks are in
    // flight (this one, and the previous one, which completes now), so the live gradient
    // buffers stay about two blocks however deep the model (FSDP's reduce-scatter pipeline).
    g(block, 0);  // a block whose parameters got no gradient still reduces (zeros)
    std::vector<T>& gb = block_grads_[static_cast<size_t>(block)];
    std::vector<T>& scratch = block_scratch_[static_cast<size_t>(block)];
    scratch.assign(b.shard, T(0));
    grad_work_bytes_ += static_cast<int64_t>(b.shard * sizeof(T));
    grad_work_peak_bytes_ = std::max(grad_work_peak_bytes_, grad_work_bytes_);
    RequestPtr r;
    if (shard_->size() == 1)
      std::copy(gb.begin(), gb.end(), scratch.begin());
    else
      r = shard_->post_reduce_scatter_sum(gb.data(), scratch.data(), b.shard);
    inflight_.emplace_back(block, std::move(r));
    if (inflight_.size() > 1) complete_oldest_reduction();
    return;
  }
  if (spec_.options.zero_stage == 1) {
    // ZeRO-1: the accumulated gradient is reduce-scattered once, after the step's last backward
    // of the block, in place: each rank's reduced shard lands in its own part of the gradient
    // buffer, which its optimizer reads (Megatron-LM's distributed optimizer).
    if (shard_->size() > 1) pending_.push_back(shard_->post_reduce_scatter_sum_in_place(grads_.data() + b.offset, b.shard));
    return;
  }
  if (dpcp_->size() == 1) return;
  pending_.push_back(dpcp_->post_all_reduce_sum(grads_.data() + b.offset, b.padded));
}

template <class T>
void Trainer<T>::reduce_gradients_finish() {
  Scope<Clock> s(*clock_, Term::dp_comm_exposed);
  // ZeRO-0's all-reduces ran on dpcp_, ZeRO-1's reduce-scatters on shard_ (the same group when
  // R = 1; ZeRO-0 has R = 1, check_step_spec).
  shard_->wait_all(pending_);
  // Hybrid sharding, ZeRO-1: each reduced shard summed over its replicas (ZeRO-2/3 do it per
  // block as each reduce-scatter completes).
  if (replica_ && spec_.options.zero_stage == 1) {
    const size_t me = static_cast<size_t>(shard_->rank());
    for (const Block& b : blocks_) replica_->all_reduce_sum(grads_.data() + b.offset + me * b.shard, b.shard);
  }
}

// ------------------------------------------------------------------ optimizer
// The global norm counts every element of the full model once: a rank sums the squares of the
// gradient elements its update reads (ZeRO 0: the whole buffer, on DP x CP rank 0 only, as the
// replicas hold the same reduced values; ZeRO >= 1: its DP x CP shard of each block), skipping
// the norm weights on TP ranks other than 0 (their gradients are the same on every TP rank),
// and one all-reduce over the world adds the ranks' sums (PP stages hold disjoint layers).
// Padding elements are zero. The scale is applied even when it is 1 (min(1, clip / (norm +
// 1e-6))), as torch.nn.utils.clip_grad_norm_ does and as the cost model charges.
template <class T>
void Trainer<T>::clip_gradients() {
  grad_norm_ = 0;
  if (spec_.clip_grad <= 0) return;
  const int zero = spec_.options.zero_stage;
  const size_t me = static_cast<size_t>(shard_->rank());
  const bool tp_lead = groups_.coord.tp == 0;
  // Hybrid sharding: the R replicas of a shard hold the same reduced values; the first counts them.
  const bool counts_shard = !replica_ || replica_->rank() == 0;
  double sum = 0;
  // Adds the squares of grads[lo, hi) (offsets into the full parameter layout) read at `data`
  // (data[0] is offset lo), skipping TP-replicated parameters off TP rank 0.
  auto add_range = [&](const Block& b, size_t lo, size_t hi, const T* data) {
    for (int idx : b.param) {
      if (idx < 0) continue;
      const ParamInfo& p = params_[static_cast<size_t>(idx)];
      if (p.full_rows == 1 && !tp_lead) continue;
      const size_t a = std::max(lo, p.offset), e = std::min(hi, p.offset + static_cast<size_t>(p.rows * p.cols));
      // Eight independent partial sums: one accumulator is a chain of dependent adds (latency-
      // bound, about 4x slower than streaming the gradients), and the compiler may not reorder it.
      const T* x = data + (a - lo);
      const size_t n = a < e ? e - a : 0;
      double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      size_t i = 0;
      for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; ++k) part[k] += double(x[i + k]) * double(x[i + k]);
      for (; i < n; ++i) part[i % 8] += double(x[i]) * double(x[i]);
      for (double v : part) sum += v;
    }
  };
  for (const Block& b : blocks_) {
    if (zero == 0) {
      if (me == 0) add_range(b, b.offset, b.offset + b.padded, grads_.data() + b.offset);
    } else if (counts_shard) {
      const size_t lo = b.offset + me * b.shard;
      const T* gs = zero >= 2 ? shard_grads_.data() + b.shard_offset : grads_.data() + lo;
      add_range(b, lo, lo + b.shard, gs);
    }
  }
  world_.all_reduce_sum(&sum, 1);
  grad_norm_ = std::sqrt(sum);
  const T coef = T(std::min(1.0, spec_.clip_grad / (grad_norm_ + 1e-6)));
  auto scale = [&](T* g, size_t n) {
    for (size_t i = 0; i < n; ++i) g[i] *= coef;
  };
  for (const Block& b : blocks_) {
    if (zero == 0) scale(grads_.data() + b.offset, b.padded);
    else if (zero >= 2) scale(shard_grads_.data() + b.shard_offset, b.shard);
    else scale(grads_.data() + b.offset + me * b.shard, b.shard);
  }
}

template <class T>
void Trainer<T>::optimizer_update() {
  ++step_count_;
  const int zero = spec_.options.zero_stage;
  const size_t S = static_cast<size_t>(shard_->size()), me = static_cast<size_t>(shard_->rank());
  const double lr = spec_.learning_rate;
  const bool adam = spec_.optimizer == Optimizer::adam;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double c1 = 1.0 - std::pow(b1, double(step_count_)), c2 = 1.0 - std::pow(b2, double(step_count_));
  // One streaming pass over (w, g, m, v) in the scalar type: the memory-bound update the cost
  // model charges at memory bandwidth.
  const T tb1 = T(b1), tb2 = T(b2), tlr1 = T(lr / c1), tc2 = T(1.0 / c2), teps = T(eps), tmom = T(0.9), tlr = T(lr);
  auto update = [&](T* wv, const T* gv, T* mv, T* vv, size_t count) {
    if (adam) {
      for (size_t i = 0; i < count; ++i) {
        const T gi = gv[i];
        const T m = tb1 * mv[i] + (T(1) - tb1) * gi;
        const T v = tb2 * vv[i] + (T(1) - tb2) * gi * gi;
        mv[i] = m;
        vv[i] = v;
        wv[i] -= tlr1 * m / (std::sqrt(v * tc2) + teps);
      }
    } else {
      for (size_t i = 0; i < count; ++i) {
        const T m = tmom * mv[i] + gv[i];
        mv[i] = m;
        wv[i] -= tlr * m;
      }
    }
  };
  {
    Scope<Clock> s(*clock_, Term::optimizer);
    clip_gradients();
    for (const Block& b : blocks_) {
      if (zero == 0) {
        update(weights_.data() + b.offset, grads_.data() + b.offset, opt_m_.data() + b.offset,
               adam ? opt_v_.data() + b.offset : nullptr, b.padded);
      } else {
        const size_t off = b.offset + me * b.shard;
        const T* gs = zero >= 2 ? shard_grads_.data() + b.shard_offset : grads_.data() + off;
        T* ws = zero >= 3 ? shard_weights_.data() + b.shard_offset : weights_.data() + off;
        update(ws, gs, opt_m_.data() + b.shard_offset,
               adam ? opt_v_.data() + b.shard_offset : nullptr, b.shard);
      }
    }
    std::fill(grads_.begin(), grads_.end(), T(0));
    std::fill(shard_grads_.begin(), shard_grads_.end(), T(0));
  }
  if ((zero == 1 || zero == 2) && S > 1) {
    // Every rank updated its shard of each block: all-gather the updated parameters (ZeRO-3
    // keeps them sharded and gathers each block where it is used).
    Scope<Clock> s(*clock_, Term::zero_comm);
    std::vector<T> mine;
    for (const Block& b : blocks_) {
      const T* src = weights_.data() + b.offset + me * b.shard;
      mine.assign(src, src + b.shard);
      shard_->all_gather(mine.data(), weights_.data() + b.offset, b.shard * sizeof(T));
    }
  }
}

// ------------------------------------------------------------------ the step
template <class T>
void Trainer<T>::run_schedule() {
  const int64_t m = micro_batches_, P = spec_.mesh.pp, s = groups_.coord.pp;
  std::vector<MicroBatch> mbs(static_cast<size_t>(m));
  const size_t act = static_cast<size_t>(rows_local_ * hidden_);
  const size_t bytes = act * sizeof(T);
  Communicator& pp = *groups_.pp;
  constexpr int kTagAct = 31, kTagGrad = 32;
  auto fwd = [&](int64_t i) { forward_micro_batch(mbs[static_cast<size_t>(i)], i); };
  auto bwd = [&](int64_t i) {
    MicroBatch& mb = mbs[static_cast<size_t>(i)];
    backward_micro_batch(mb, i == m - 1);
    std::vector<T> grad_in = std::move(mb.grad_in);  // still to be sent to the previous stage
    mb = MicroBatch{};
    mb.grad_in = std::move(grad_in);
  };
  if (P == 1) {
    for (int64_t i = 0; i < m; ++i) {
      fwd(i);
      bwd(i);
    }
    return;
  }
  if (chunks_ > 1) {
    run_interleaved_schedule();
    return;
  }
  // Point-to-point of one schedule slot: any of (send activation i, receive activation j, send
  // gradient k, receive gradient l), posted together and completed together.
  auto p2p = [&](int64_t send_act, int64_t recv_act, int64_t send_grad, int64_t recv_grad) {
    Scope<Clock> sc(*clock_, Term::pp_comm);
    std::vector<RequestPtr> rq;
    if (recv_act >= 0 && s > 0) {
      auto& in = mbs[static_cast<size_t>(recv_act)].input;
      in.resize(act);
      rq.push_back(pp.post_recv(in.data(), bytes, static_cast<int>(s - 1), kTagAct));
    }
    if (recv_grad >= 0 && s < P - 1) {
      auto& go = mbs[static_cast<size_t>(recv_grad)].grad_out;
      go.resize(act);
      rq.push_back(pp.post_recv(go.data(), bytes, static_cast<int>(s + 1), kTagGrad));
    }
    if (send_act >= 0 && s < P - 1)
      rq.push_back(pp.post_send(mbs[static_cast<size_t>(send_act)].out.data(), bytes, static_cast<int>(s + 1), kTagAct));
    if (send_grad >= 0 && s > 0)
      rq.push_back(
          pp.post_send(mbs[static_cast<size_t>(send_grad)].grad_in.data(), bytes, static_cast<int>(s - 1), kTagGrad));
    pp.start_posted();
    pp.wait_all(rq);
    if (send_act >= 0) mbs[static_cast<size_t>(send_act)].out = {};
    if (send_grad >= 0) mbs[static_cast<size_t>(send_grad)].grad_in = {};
  };
  // 1F1B (Narayanan et al. 2021; Megatron's forward_backward_pipelining_without_interleaving).
  const int64_t warmup = std::min(P - s - 1, m), steady = m - warmup;
  for (int64_t i = 0; i < warmup; ++i) {
    p2p(-1, i, -1, -1);
    fwd(i);
    p2p(i, -1, -1, -1);
  }
  if (steady > 0) p2p(-1, warmup, -1, -1);
  for (int64_t i = 0; i < steady; ++i) {
    const int64_t f = warmup + i;
    fwd(f);
    p2p(f, -1, -1, i);  // send activation f, receive the gradient of i
    bwd(i);
    if (i == steady - 1) {
      p2p(-1, -1, i, -1);
    } else {
      p2p(-1, f + 1, i, -1);  // send gradient i, receive activation f + 1
    }
  }
  for (int64_t i = steady; i < m; ++i) {
    p2p(-1, -1, -1, i);
    bwd(i);
    p2p(-1, -1, i, -1);
  }
}

// Megatron's interleaved 1F1B (forward_backward_pipelining_with_interleaving): the v * m
// (chunk, micro-batch) units of a stage run as warm-up forwards, then one forward and one
// backward alternately, then the remaining backwards. Unit k of a stage is micro-batch
// (k / (PP v)) PP + k % PP of chunk (k % (PP v)) / PP (backwards: chunk v - 1 - that). Chunk c of
// stage p is virtual stage c PP + p: its input comes from virtual stage - 1 (stage p - 1, or
// stage PP - 1's chunk c - 1) and its output gradient from virtual stage + 1. Every receive of
// the step is posted before the first unit and every send is non-blocking, so a unit waits only
// for the transfer it needs: the order is Megatron's, the deadlock-freedom does not depend on
// pairing sends with receives.
template <class T>
void Trainer<T>::run_interleaved_schedule() {
  const int64_t m = micro_batches_, P = spec_.mesh.pp, v = chunks_, s = groups_.coord.pp;
  const int64_t total = m * v;
  const size_t act = static_cast<size_t>(rows_local_ * hidden_);
  const size_t bytes = act * sizeof(T);
  Communicator& pp = *groups_.pp;
  auto unit = [&](int64_t k, bool forward) {
    const int64_t in_group = k % (P * v);
    int64_t chunk = in_group / P;
    if (!forward) chunk = v - 1 - chunk;
    return std::pair<int64_t, int64_t>{chunk, (k / (P * v)) * P + k % P};
  };
  // Tags: one per (direction, RECEIVING chunk, micro-batch), so messages match whatever the
  // order. Stage PP - 1's chunk c feeds stage 0's chunk c + 1 (and gradients flow back).
  auto tag = [&](bool grad, int64_t chunk, int64_t mb) { return static_cast<int>(100 + 2 * (chunk * m + mb) + (grad ? 1 : 0)); };
  std::vector<MicroBatch> units(static_cast<size_t>(total));
  auto at = [&](int64_t chunk, int64_t mb) -> MicroBatch& { return units[static_cast<size_t>(chunk * m + mb)]; };
  const bool first_virtual_here = s == 0, last_virtual_here = s == P - 1;
  const int prev = static_cast<int>((s + P - 1) % P), next = static_cast<int>((s + 1) % P);
  std::vector<RequestPtr> recv_act(static_cast<size_t>(total)), recv_grad(static_cast<size_t>(total)), sends;
  {
    Scope<Clock> sc(*clock_, Term::pp_comm);
    for (int64_t c = 0; c < v; ++c)
      for (int64_t j = 0; j < m; ++j) {
        MicroBatch& u = at(c, j);
        u.chunk = c;
        if (!(first_virtual_here && c == 0)) {
          u.input.resize(act);
          recv_act[static_cast<size_t>(c * m + j)] = pp.post_recv(u.input.data(), bytes, prev, tag(false, c, j));
        }
        if (!(last_virtual_here && c == v - 1)) {
          u.grad_out.resize(act);
          recv_grad[static_cast<size_t>(c * m + j)] = pp.post_recv(u.grad_out.data(), bytes, next, tag(true, c, j));
        }
      }
    pp.start_posted();
  }
  auto wait_for = [&](RequestPtr& r) {
    if (!r) return;
    Scope<Clock> sc(*clock_, Term::pp_comm);
    pp.wait(r);
  };
  auto do_forward = [&](int64_t k) {
    const auto [c, j] = unit(k, true);
    MicroBatch& u = at(c, j);
    wait_for(recv_act[static_cast<size_t>(c * m + j)]);
    forward_micro_batch(u, j);
    if (!(last_virtual_here && c == v - 1)) {
      Scope<Clock> sc(*clock_, Term::pp_comm);
      sends.push_back(pp.post_send(u.out.data(), bytes, next, tag(false, s == P - 1 ? c + 1 : c, j)));
      pp.start_posted();
    }
  };
  auto do_backward = [&](int64_t k) {
    const auto [c, j] = unit(k, false);
    MicroBatch& u = at(c, j);
    wait_for(recv_grad[static_cast<size_t>(c * m + j)]);
    backward_micro_batch(u, j == m - 1);
    if (!(first_virtual_here && c == 0)) {
      Scope<Clock> sc(*clock_, Term::pp_comm);
      sends.push_back(pp.post_send(u.grad_in.data(), bytes, prev, tag(true, s == 0 ? c - 1 : c, j)));
      pp.start_posted();
    }
    u.layers.clear();
  };
  const int64_t warmup = m == P ? total : std::min(total, (P - s - 1) * 2 + (v - 1) * P);
  for (int64_t k = 0; k < warmup; ++k) do_forward(k);
  for (int64_t k = 0; k < total - warmup; ++k) {
    do_forward(warmup + k);
    do_backward(k);
  }
  for (int64_t k = total - warmup; k < total; ++k) do_backward(k);
  Scope<Clock> sc(*clock_, Term::pp_comm);
  pp.wait_all(sends);  // the buffers in `units` stay alive until here
}

template <class T>
double Trainer<T>::loss_and_gradients() {
  timing_ = StepTiming{};
  clock_->acc = &timing_.term_s;
  clock_->step = static_cast<int32_t>(step_count_);
  clock_->tp_regions.clear();
  act_bytes_ = 0;
  std::fill(grads_.begin(), grads_.end(), T(0));
  if (!shard_grads_.empty()) std::fill(shard_grads_.begin(), shard_grads_.end(), T(0));
  const auto t0 = std::chrono::steady_clock::now();
  run_schedule();  // the last stage's forwards add their token losses to last_loss_sum_
  reduce_gradients_finish();
  timing_.step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double loss_sum = last_loss_sum_;
  last_loss_sum_ = 0;
  // One contribution per (dp, cp) of the last stage, TP rank 0 (TP ranks hold the same losses).
  double total = (last_stage_ && groups_.coord.tp == 0) ? loss_sum : 0.0;
  world_.all_reduce_sum(&total, 1);
  return total / (double(spec_.global_batch) * double(spec_.seq_len));
}

template <class T>
double Trainer<T>::train_step() {
  const auto t0 = std::chrono::steady_clock::now();
  const double loss = loss_and_gradients();
  optimizer_update();
  timing_.step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return loss;
}

template <class T>
const std::vector<double>& Trainer<T>::last_tp_comm_regions() const {
  return clock_->tp_regions;
}

template <class T>
StepMemory Trainer<T>::memory() const {
  StepMemory m;
  m.weights_bytes = gathered_.empty() ? static_cast<int64_t>(weights_.size() * sizeof(T))
                                      : static_cast<int64_t>(shard_weights_.size() * sizeof(T)) + gathered_peak_bytes_;
  // ZeRO >= 2: the gradient shard plus the peak of the blocks' gradients being reduced.
  m.gradients_bytes = static_cast<int64_t>((grads_.size() + shard_grads_.size()) * sizeof(T)) + grad_work_peak_bytes_;
  m.optimizer_bytes = static_cast<int64_t>((opt_m_.size() + opt_v_.size()) * sizeof(T));
  m.activations_peak_bytes = act_peak_bytes_;
  if constexpr (std::is_same_v<T, float>) {
    const RingWorkspaceBytes w = gather_   ? gather_->workspace()
                                 : a2a_    ? a2a_->workspace()
                                 : hybrid_ ? hybrid_->workspace()
                                           : ring_->workspace_bytes();
    m.ring_buffers_bytes = w.kv_ring_bytes + w.dkv_ring_bytes;
  }
  m.logits_bytes = logits_bytes_;
  m.tracked_peak_bytes = m.weights_bytes + m.gradients_bytes + m.optimizer_bytes + m.activations_peak_bytes +
                         std::max(m.ring_buffers_bytes, m.logits_bytes);
  return m;
}

template class Trainer<float>;
template class Trainer<double>;

}  // namespace ringplan::runtime::step
