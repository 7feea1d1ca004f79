#include "runtime/ring_attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {

// Tags per message kind; MPI keeps messages between one pair with one tag in order, so a
// kind needs no step number.
constexpr int kTagKv = 11;
constexpr int kTagDkv = 12;        // partial dK,dV accumulator moving on to the next rank
constexpr int kTagDkvFinal = 13;   // complete dK,dV returning to the block's owner

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

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

RingAttention::RingAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions)
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

  // Every rank must hold the same number of tokens: check before exchanging positions.
  std::vector<int64_t> tokens(static_cast<size_t>(size_));
  cp_.all_gather(&cfg.tokens, tokens.data(), sizeof(int64_t));
  for (int r = 0; r < size_; ++r)
    if (tokens[static_cast<size_t>(r)] != cfg.tokens)
      throw bad_input(fmt::format("ring attention: {} holds {} tokens but {} holds {}; every CP rank needs L/P tokens",
                                  cp_.describe_rank(r), tokens[static_cast<size_t>(r)], cp_.describe_rank(rank_),
                                  cfg.tokens));
  all_positions_.resize(n_ * static_cast<size_t>(size_));
  cp_.all_gather(positions, all_positions_.data(), n_ * sizeof(int64_t));

  // Which source blocks are fully hidden from this rank's queries, and how many pairs each has.
  const int64_t* qpos = positions_of(rank_);
  const int64_t q_max = *std::max_element(qpos, qpos + n_);
  hidden_.assign(static_cast<size_t>(size_), 0);
  pairs_.assign(static_cast<size_t>(size_), 0);
  for (int src = 0; src < size_; ++src) {
    const int64_t* kpos = positions_of(src);
    const int64_t k_min = *std::min_element(kpos, kpos + n_);
    hidden_[static_cast<size_t>(src)] = (cfg.causal && k_min > q_max) ? 1 : 0;
    pairs_[static_cast<size_t>(src)] =
        hidden_[static_cast<size_t>(src)] ? 0
                                          : kernels::visible_pairs(qpos, cfg.tokens, kpos, cfg.tokens, cfg.causal);
  }

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
  if (cfg.kernel == RingKernel::materialized)
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

void RingAttention::forward(const float* q, const float* k, const float* v, float* out, float* lse) {
  using kernels::ElemType;
  const auto& c = cfg_;
  const int next = (rank_ + 1) % size_, prev = (rank_ - 1 + size_) % size_;
  const double t_start = now_s();
  fwd_timing_.steps.assign(static_cast<size_t>(size_), RingStepTiming{});

  if (size_ > 1) {  // the block in hand travels as one [K | V] message
    std::copy_n(k, kv_elems_, kv_buf_[0].data());
    std::copy_n(v, kv_elems_, kv_buf_[0].data() + kv_elems_);
  }
  kernels::ForwardOut acc{kernels::dense_view(out, ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim),
                          kernels::dense_rows(lse, c.batch, c.heads, c.tokens)};
  kernels::ForwardOut blk{kernels::dense_view(blk_out_.data(), ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim),
                          kernels::dense_rows(blk_lse_.data(), c.batch, c.heads, c.tokens)};
  bool have_result = false;  // false until a block wrote (O, lse) directly into `acc`
  int cur = 0;
  for (int step = 0; step < size_; ++step) {
    const int src = (rank_ - step + size_) % size_;  // block in hand came from rank r - step
    RingStepTiming& st = fwd_timing_.steps[static_cast<size_t>(step)];
    st.step = step;
    st.src_rank = src;
    st.skipped = block_hidden(src);
    st.visible_pairs = pairs_[static_cast<size_t>(src)];
    // Post the next block's receive and this block's send before computing (double buffer).
    std::vector<RequestPtr> reqs;
    if (step < size_ - 1) {
      reqs.push_back(cp_.post_recv(kv_buf_[1 - cur].data(), 2 * kv_elems_ * sizeof(float), prev, kTagKv));
      reqs.push_back(cp_.post_send(kv_buf_[cur].data(), 2 * kv_elems_ * sizeof(float), next, kTagKv));
    }
    const double c0 = now_s();
    if (!st.skipped) {
      const kernels::BlockParams p = size_ > 1 ? block_params(q, kv_buf_[cur].data(), kv_buf_[cur].data() + kv_elems_, src)
                                               : block_params(q, k, v, src);
      if (step == 0) {
        const std::string err = kernels::validate(p, acc);
        if (!err.empty()) throw bad_input("ring attention forward: " + err);
      }
      // The first computed block writes the result directly; later ones merge into it.
      const kernels::ForwardOut& target = have_result ? blk : acc;
      float* scores = c.kernel == RingKernel::materialized ? scores_.data() + static_cast<size_t>(src) * rows_ * n_ : nullptr;
      if (c.kernel == RingKernel::materialized)
        kernels::cpu_materialized_forward(p, target, scores);
      else
        kernels::cpu_flash_forward(p, target, c.tiles);
      if (have_result) kernels::merge_partial(acc, blk);
      have_result = true;
    }
    const double c1 = now_s();
    cp_.wait_all(reqs);
    const double w1 = now_s();
    st.compute_s = c1 - c0;
    st.comm_wait_s = w1 - c1;
    trace_step(TracePhase::forward, st, c0, c1, c1, w1);
    cur = 1 - cur;
  }
  if (!have_result) {  // unreachable for a query's own block (it sees itself); kept for safety
    std::fill_n(out, q_elems_, 0.0f);
    std::fill_n(lse, rows_, kernels::kNegInf);
  }
  fwd_timing_.total_s = now_s() - t_start;
}

void RingAttention::backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                             const float* grad_out, float* grad_q, float* grad_k, float* grad_v) {
  using kernels::ElemType;
  const auto& c = cfg_;
  const int next = (rank_ + 1) % size_, prev = (rank_ - 1 + size_) % size_;
  const size_t kv_bytes = 2 * kv_elems_ * sizeof(float);
  const double t_start = now_s();
  bwd_timing_.steps.assign(static_cast<size_t>(size_), RingStepTiming{});

  auto view_q = [&](const float* p) {
    return kernels::dense_view(const_cast<float*>(p), ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim);
  };
  auto view_kv = [&](float* p) { return kernels::dense_view(p, ElemType::f32, c.batch, c.kv_heads, c.tokens, c.head_dim); };
  kernels::RowStatsView lse_view = kernels::dense_rows(const_cast<float*>(lse), c.batch, c.heads, c.tokens);
  kernels::RowStatsView delta_view = kernels::dense_rows(delta_.data(), c.batch, c.heads, c.tokens);
  kernels::attention_backward_delta(view_q(out), view_q(grad_out), delta_view);
  std::fill_n(grad_q, q_elems_, 0.0f);

  if (size_ > 1) {  // the block in hand travels as one [K | V] message
    std::copy_n(k, kv_elems_, kv_buf_[0].data());
    std::copy_n(v, kv_elems_, kv_buf_[0].data() + kv_elems_);
  }
  RequestPtr dkv_send[2];   // send of dkv_work_[i], completed before dkv_work_[i] is reused
  RequestPtr final_recv;    // this rank's complete dK,dV coming home at the last step
  int cur = 0;
  for (int step = 0; step < size_; ++step) {
    const int src = (rank_ - step + size_) % size_;
    const int par = step % 2;
    RingStepTiming& st = bwd_timing_.steps[static_cast<size_t>(step)];
    st.step = step;
    st.src_rank = src;
    st.skipped = block_hidden(src);
    st.visible_pairs = pairs_[static_cast<size_t>(src)];
    double wait_s = 0;
    std::vector<RequestPtr> kv_reqs;
    RequestPtr dkv_in;
    if (step < size_ - 1) {
      kv_reqs.push_back(cp_.post_recv(kv_buf_[1 - cur].data(), kv_bytes, prev, kTagKv));
      kv_reqs.push_back(cp_.post_send(kv_buf_[cur].data(), kv_bytes, next, kTagKv));
    }
    // The accumulator of block `src` comes from r-1, which held that block at step-1.
    if (step >= 1) dkv_in = cp_.post_recv(dkv_recv_[par].data(), kv_bytes, prev, kTagDkv);
    // The complete dK,dV of this rank's own block arrive after the last step; dkv_recv_[1 - par]
    // held step-1's accumulator, already consumed, so it takes them (no extra buffer).
    if (step == size_ - 1 && size_ > 1)
      final_recv = cp_.post_recv(dkv_recv_[1 - par].data(), kv_bytes, prev, kTagDkvFinal);
    const double w0 = now_s();
    cp_.wait(dkv_send[par]);  // sent two steps ago: dkv_work_[par] is free again
    wait_s += now_s() - w0;

    const double c0 = now_s();
    // This rank's contribution to block src: into scratch (P > 1) or straight into dK, dV (P = 1).
    float* work_k = size_ > 1 ? dkv_work_[par].data() : grad_k;
    float* work_v = size_ > 1 ? dkv_work_[par].data() + kv_elems_ : grad_v;
    std::fill_n(work_k, kv_elems_, 0.0f);
    std::fill_n(work_v, kv_elems_, 0.0f);
    if (!st.skipped) {
      const kernels::BlockParams p = size_ > 1 ? block_params(q, kv_buf_[cur].data(), kv_buf_[cur].data() + kv_elems_, src)
                                               : block_params(q, k, v, src);
      kernels::BackwardArgs g{view_q(out), view_q(grad_out), lse_view, delta_view, view_q(grad_q), view_kv(work_k),
                              view_kv(work_v)};
      if (step == 0) {
        const std::string err = kernels::validate(p, g);
        if (!err.empty()) throw bad_input("ring attention backward: " + err);
      }
      if (c.kernel == RingKernel::materialized)
        kernels::cpu_materialized_backward(p, g, scores_.data() + static_cast<size_t>(src) * rows_ * n_);
      else
        kernels::cpu_flash_backward(p, g, c.tiles);
    }
    double c1 = now_s();
    if (dkv_in) {
      const double w1 = now_s();
      cp_.wait(dkv_in);
      const double w2 = now_s();
      wait_s += w2 - w1;
      const float* in = dkv_recv_[par].data();
      float* work = dkv_work_[par].data();  // [dK | dV], contiguous
      for (size_t i = 0; i < 2 * kv_elems_; ++i) work[i] += in[i];
      c1 = now_s();
      st.compute_s -= w2 - w1;  // the add counts as compute, the wait does not
    }
    st.compute_s += c1 - c0;
    if (size_ > 1)
      dkv_send[par] = cp_.post_send(dkv_work_[par].data(), kv_bytes, next, step == size_ - 1 ? kTagDkvFinal : kTagDkv);
    const double w3 = now_s();
    cp_.wait_all(kv_reqs);
    const double w4 = now_s();
    wait_s += w4 - w3;
    st.comm_wait_s = wait_s;
    trace_step(TracePhase::backward, st, c0, c1, c1, w4);
    cur = 1 - cur;
  }
  // P == 1: the kernel already wrote this rank's complete dK, dV into grad_k, grad_v.
  if (size_ > 1) {
    const double w0 = now_s();
    cp_.wait(final_recv);
    cp_.wait(dkv_send[0]);
    cp_.wait(dkv_send[1]);
    bwd_timing_.steps.back().comm_wait_s += now_s() - w0;
    const float* result = dkv_recv_[size_ % 2].data();  // = dkv_recv_[1 - (P-1)%2], see the last step
    std::copy_n(result, kv_elems_, grad_k);
    std::copy_n(result + kv_elems_, kv_elems_, grad_v);
  }
  bwd_timing_.total_s = now_s() - t_start;
}

}  // namespace ringplan::runtime
