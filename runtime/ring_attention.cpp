#include "runtime/ring_attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.hpp"
#include "runtime/ring_schedule.hpp"

namespace ringplan::runtime {
using ring_detail::now_s;

double RingPassTiming::compute_s() const {
  double t = 0;
  for (const auto& s : steps) t += s.compute_s;
  return t;
}
double RingPassTiming::comm_wait_s() const {
  double t = 0;
  for (const auto& s : steps) t += s.comm_wait_s;
  return t;
}
int64_t RingPassTiming::visible_pairs() const {
  int64_t t = 0;
  for (const auto& s : steps) t += s.visible_pairs;
  return t;
}

std::vector<int64_t> exchange_positions(Communicator& cp, int64_t tokens, const int64_t* positions) {
  // Every rank must hold the same number of tokens: check before exchanging positions.
  const int P = cp.size();
  std::vector<int64_t> counts(static_cast<size_t>(P));
  cp.all_gather(&tokens, counts.data(), sizeof(int64_t));
  for (int r = 0; r < P; ++r)
    if (counts[static_cast<size_t>(r)] != tokens)
      throw bad_input(fmt::format("ring attention: {} holds {} tokens but {} holds {}; every CP rank needs L/P tokens",
                                  cp.describe_rank(r), counts[static_cast<size_t>(r)], cp.describe_rank(cp.rank()),
                                  tokens));
  std::vector<int64_t> all(static_cast<size_t>(tokens) * static_cast<size_t>(P));
  cp.all_gather(positions, all.data(), static_cast<size_t>(tokens) * sizeof(int64_t));
  return all;
}

std::vector<int64_t> exchange_documents(Communicator& cp, int64_t tokens, const int64_t* documents) {
  const int P = cp.size();
  const int64_t mine = documents != nullptr ? 1 : 0;
  std::vector<int64_t> flags(static_cast<size_t>(P));
  cp.all_gather(&mine, flags.data(), sizeof(int64_t));
  const auto with = std::count(flags.begin(), flags.end(), int64_t{1});
  if (with == 0) return {};
  if (with != P) {
    const int other = static_cast<int>(std::find(flags.begin(), flags.end(), 1 - mine) - flags.begin());
    throw bad_input(fmt::format("ring attention: {} {} document ids but {} {}; every CP rank must give its tokens' "
                                "document ids, or none",
                                cp.describe_rank(cp.rank()), mine ? "gives" : "gives no", cp.describe_rank(other),
                                mine ? "does not" : "does"));
  }
  std::vector<int64_t> all(static_cast<size_t>(tokens) * static_cast<size_t>(P));
  cp.all_gather(documents, all.data(), static_cast<size_t>(tokens) * sizeof(int64_t));
  return all;
}

RingVisibility ring_visibility(const int64_t* all_positions, int cp_size, int64_t tokens, int rank, bool causal,
                               const int64_t* all_documents) {
  const size_t n = static_cast<size_t>(tokens);
  const int64_t* qpos = all_positions + static_cast<size_t>(rank) * n;
  const int64_t* qdoc = all_documents != nullptr ? all_documents + static_cast<size_t>(rank) * n : nullptr;
  RingVisibility v;
  v.hidden.assign(static_cast<size_t>(cp_size), 0);
  v.pairs.assign(static_cast<size_t>(cp_size), 0);
  for (int src = 0; src < cp_size; ++src) {
    const int64_t* kpos = all_positions + static_cast<size_t>(src) * n;
    const int64_t* kdoc = all_documents != nullptr ? all_documents + static_cast<size_t>(src) * n : nullptr;
    // Exact count; a block with no visible pair is skipped (for causal without documents that
    // is exactly "its smallest key position exceeds every query position").
    const int64_t pairs = kernels::visible_pairs(qpos, tokens, kpos, tokens, causal, qdoc, kdoc);
    v.hidden[static_cast<size_t>(src)] = pairs == 0 ? 1 : 0;
    v.pairs[static_cast<size_t>(src)] = pairs;
  }
  return v;
}

RingAttention::RingAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions,
                             const int64_t* documents)
    : cp_(cp), cfg_(cfg), rank_(cp.rank()), size_(cp.size()) {
  if (cfg.batch < 1 || cfg.heads < 1 || cfg.kv_heads < 1 || cfg.tokens < 1 || cfg.head_dim < 1)
    throw bad_input(fmt::format("ring attention: batch={} heads={} kv_heads={} tokens={} head_dim={}: all must be >= 1",
                                cfg.batch, cfg.heads, cfg.kv_heads, cfg.tokens, cfg.head_dim));
  if (cfg.heads % cfg.kv_heads != 0)
    throw bad_input(fmt::format("ring attention: heads={} is not a multiple of kv_heads={} (GQA needs heads % kv_heads == 0)",
                                cfg.heads, cfg.kv_heads));
  if (positions == nullptr) throw bad_input("ring attention: positions must not be null");
  n_ = static_cast<size_t>(cfg.tokens);
  q_elems_ = static_cast<size_t>(cfg.batch * cfg.heads * cfg.tokens * cfg.head_dim);
  kv_elems_ = static_cast<size_t>(cfg.batch * cfg.kv_heads * cfg.tokens * cfg.head_dim);
  rows_ = static_cast<size_t>(cfg.batch * cfg.heads * cfg.tokens);

  all_positions_ = exchange_positions(cp_, cfg.tokens, positions);
  all_documents_ = exchange_documents(cp_, cfg.tokens, documents);
  RingVisibility vis = ring_visibility(all_positions_.data(), size_, cfg.tokens, rank_, cfg.causal,
                                       all_documents_.empty() ? nullptr : all_documents_.data());
  hidden_ = std::move(vis.hidden);
  pairs_ = std::move(vis.pairs);

  // P = 1 needs no ring buffers: the kernels read K, V and write dK, dV in the caller's arrays.
  if (size_ > 1) {
    for (int i = 0; i < 2; ++i) {
      kv_buf_[i].assign(2 * kv_elems_, 0.0f);
      dkv_recv_[i].assign(2 * kv_elems_, 0.0f);
      dkv_work_[i].assign(2 * kv_elems_, 0.0f);
    }
  }
  blk_out_.assign(q_elems_, 0.0f);
  blk_lse_.assign(rows_, 0.0f);
  delta_.assign(rows_, 0.0f);
  if (cfg.kernel == AttentionImpl::materialized)
    scores_.assign(static_cast<size_t>(size_) * rows_ * n_, 0.0f);  // b*H*n*L: the O(L^2/P) term
}

RingWorkspaceBytes RingAttention::workspace_bytes() const {
  auto bytes = [](const std::vector<float>& v) { return static_cast<int64_t>(v.capacity() * sizeof(float)); };
  RingWorkspaceBytes w;
  w.kv_ring_bytes = bytes(kv_buf_[0]) + bytes(kv_buf_[1]);
  w.dkv_ring_bytes = bytes(dkv_recv_[0]) + bytes(dkv_recv_[1]) + bytes(dkv_work_[0]) + bytes(dkv_work_[1]);
  w.block_out_bytes = bytes(blk_out_) + bytes(blk_lse_) + bytes(delta_);
  w.scores_bytes = bytes(scores_);
  return w;
}

kernels::BlockParams RingAttention::block_params(const float* q, const float* k, const float* v, int src) const {
  using kernels::ElemType;
  kernels::BlockParams p;
  const auto& c = cfg_;
  p.q = kernels::dense_view(const_cast<float*>(q), ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim);
  p.k = kernels::dense_view(const_cast<float*>(k), ElemType::f32, c.batch, c.kv_heads, c.tokens, c.head_dim);
  p.v = kernels::dense_view(const_cast<float*>(v), ElemType::f32, c.batch, c.kv_heads, c.tokens, c.head_dim);
  p.q_positions = positions_of(rank_);
  p.k_positions = positions_of(src);
  p.q_documents = documents_of(rank_);
  p.k_documents = documents_of(src);
  p.causal = c.causal;
  p.scale = c.scale;
  return p;
}

void RingAttention::trace_step(TracePhase phase, const RingStepTiming& st, double c0, double c1, double w0, double w1) {
  if (trace_ == nullptr) return;
  // Convert absolute steady-clock seconds into the recorder's epoch.
  const double shift = trace_->now_s() - now_s();
  trace_->add(phase, TraceLane::compute, st.step, st.src_rank, c0 + shift, c1 + shift, st.skipped);
  trace_->add(phase, TraceLane::comm, st.step, st.src_rank, w0 + shift, w1 + shift, false);
}

// The CPU backend of the ring schedule (ring_schedule.hpp): float32 host buffers, the CPU
// kernels, and plain loops for copies and sums.
struct RingAttention::CpuForwardOps {
  RingAttention& r;
  const float *q, *k, *v;
  float *out, *lse;

  void stage_kv() {
    std::copy_n(k, r.kv_elems_, r.kv_buf_[0].data());
    std::copy_n(v, r.kv_elems_, r.kv_buf_[0].data() + r.kv_elems_);
  }
  void* kv_buffer(int i) { return r.kv_buf_[i].data(); }
  size_t kv_bytes() const { return 2 * r.kv_elems_ * sizeof(float); }
  void forward_block(int buf, int src, bool first) {
    using kernels::ElemType;
    const auto& c = r.cfg_;
    const kernels::BlockParams p = buf >= 0 ? r.block_params(q, r.kv_buf_[buf].data(), r.kv_buf_[buf].data() + r.kv_elems_, src)
                                            : r.block_params(q, k, v, src);
    kernels::ForwardOut acc{kernels::dense_view(out, ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim),
                            kernels::dense_rows(lse, c.batch, c.heads, c.tokens)};
    kernels::ForwardOut blk{kernels::dense_view(r.blk_out_.data(), ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim),
                            kernels::dense_rows(r.blk_lse_.data(), c.batch, c.heads, c.tokens)};
    if (first) {
      const std::string err = kernels::validate(p, acc);
      if (!err.empty()) throw bad_input("ring attention forward: " + err);
    }
    // The first computed block writes the result directly; later ones merge into it.
    const kernels::ForwardOut& target = first ? acc : blk;
    if (c.kernel == AttentionImpl::materialized)
      kernels::cpu_materialized_forward(p, target, r.scores_.data() + static_cast<size_t>(src) * r.rows_ * r.n_);
    else
      kernels::cpu_flash_forward(p, target, c.tiles);
    if (!first) kernels::merge_partial(acc, blk);
  }
  void forward_empty() {
    std::fill_n(out, r.q_elems_, 0.0f);
    std::fill_n(lse, r.rows_, kernels::kNegInf);
  }
  void fence() {}
};

struct RingAttention::CpuBackwardOps : RingAttention::CpuForwardOps {
  const float* grad_out;
  float *grad_q, *grad_k, *grad_v;
  bool validated = false;

  kernels::TensorView view_q(const float* p) const {
    const auto& c = r.cfg_;
    return kernels::dense_view(const_cast<float*>(p), kernels::ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim);
  }
  kernels::TensorView view_kv(float* p) const {
    const auto& c = r.cfg_;
    return kernels::dense_view(p, kernels::ElemType::f32, c.batch, c.kv_heads, c.tokens, c.head_dim);
  }
  kernels::RowStatsView rows(float* p) const {
    const auto& c = r.cfg_;
    return kernels::dense_rows(p, c.batch, c.heads, c.tokens);
  }
  void backward_begin() {
    kernels::attention_backward_delta(view_q(out), view_q(grad_out), rows(r.delta_.data()));
    std::fill_n(grad_q, r.q_elems_, 0.0f);
  }
  void* dkv_recv(int i) { return r.dkv_recv_[i].data(); }
  void* dkv_work(int i) { return r.dkv_work_[i].data(); }
  size_t dkv_bytes() const { return 2 * r.kv_elems_ * sizeof(float); }
  void backward_block(int buf, int src, int par, bool skipped) {
    float* work_k = par >= 0 ? r.dkv_work_[par].data() : grad_k;
    float* work_v = par >= 0 ? r.dkv_work_[par].data() + r.kv_elems_ : grad_v;
    std::fill_n(work_k, r.kv_elems_, 0.0f);
    std::fill_n(work_v, r.kv_elems_, 0.0f);
    if (skipped) return;
    const kernels::BlockParams p = buf >= 0 ? r.block_params(q, r.kv_buf_[buf].data(), r.kv_buf_[buf].data() + r.kv_elems_, src)
                                            : r.block_params(q, k, v, src);
    kernels::BackwardArgs g{view_q(out), view_q(grad_out), rows(const_cast<float*>(lse)), rows(r.delta_.data()),
                            view_q(grad_q), view_kv(work_k), view_kv(work_v)};
    if (!validated) {
      const std::string err = kernels::validate(p, g);
      if (!err.empty()) throw bad_input("ring attention backward: " + err);
      validated = true;
    }
    if (r.cfg_.kernel == AttentionImpl::materialized)
      kernels::cpu_materialized_backward(p, g, r.scores_.data() + static_cast<size_t>(src) * r.rows_ * r.n_);
    else
      kernels::cpu_flash_backward(p, g, r.cfg_.tiles);
  }
  void accumulate(int par) {
    const float* in = r.dkv_recv_[par].data();
    float* work = r.dkv_work_[par].data();  // [dK | dV], contiguous
    for (size_t i = 0; i < 2 * r.kv_elems_; ++i) work[i] += in[i];
  }
  void backward_finish(int i) {
    const float* result = r.dkv_recv_[i].data();
    std::copy_n(result, r.kv_elems_, grad_k);
    std::copy_n(result + r.kv_elems_, r.kv_elems_, grad_v);
  }
};

void RingAttention::forward(const float* q, const float* k, const float* v, float* out, float* lse) {
  CpuForwardOps ops{*this, q, k, v, out, lse};
  ring_detail::forward_pass(cp_, ops, hidden_, pairs_, fwd_timing_,
                            [&](const RingStepTiming& st, double c0, double c1, double w0, double w1) {
                              trace_step(TracePhase::forward, st, c0, c1, w0, w1);
                            });
}

void RingAttention::backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                             const float* grad_out, float* grad_q, float* grad_k, float* grad_v) {
  CpuBackwardOps ops{{*this, q, k, v, const_cast<float*>(out), const_cast<float*>(lse)}, grad_out, grad_q, grad_k, grad_v};
  ring_detail::backward_pass(cp_, ops, hidden_, pairs_, bwd_timing_,
                             [&](const RingStepTiming& st, double c0, double c1, double w0, double w1) {
                               trace_step(TracePhase::backward, st, c0, c1, w0, w1);
                             });
}

}  // namespace ringplan::runtime
