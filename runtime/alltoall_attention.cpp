// All-to-all (Ulysses) context-parallel attention (see alltoall_attention.hpp).
#include "runtime/alltoall_attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <stdexcept>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

AllToAllAttention::AllToAllAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions,
                                     const int64_t* documents)
    : cp_(cp), cfg_(cfg), size_(cp.size()), rank_(cp.rank()) {
  if (cfg.kernel != AttentionImpl::flash)
    throw bad_input("all-to-all CP runs the flash kernel only (a materialised score matrix of the whole sequence per "
                    "head is what the flash kernel avoids)");
  if (cfg.batch < 1 || cfg.heads < 1 || cfg.kv_heads < 1 || cfg.tokens < 1 || cfg.head_dim < 1 ||
      cfg.heads % cfg.kv_heads != 0)
    throw bad_input(fmt::format("all-to-all CP: batch={} heads={} kv_heads={} tokens={} head_dim={}: need all >= 1 and "
                                "heads % kv_heads == 0",
                                cfg.batch, cfg.heads, cfg.kv_heads, cfg.tokens, cfg.head_dim));
  if (cfg.heads % size_ != 0)
    throw bad_input(fmt::format("all-to-all CP: the CP size {} must divide the query heads per TP rank ({}): each rank "
                                "computes heads/CP of them over the whole sequence",
                                size_, cfg.heads));
  if (cfg.kv_heads % size_ != 0 && size_ % cfg.kv_heads != 0)
    throw bad_input(fmt::format("all-to-all CP: the KV heads per TP rank ({}) must divide by the CP size {} or divide "
                                "it (then each KV head is replicated to CP/kv_heads ranks)",
                                cfg.kv_heads, size_));
  n_ = cfg.tokens;
  m_ = n_ * size_;
  hq_ = cfg.heads / size_;
  hkv_ = std::max<int64_t>(1, cfg.kv_heads / size_);
  // Global order: the gathered positions (rank-major) sorted; order_[i] is where gathered token i goes.
  const std::vector<int64_t> all = exchange_positions(cp, n_, positions);
  std::vector<int64_t> idx(static_cast<size_t>(m_));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::stable_sort(idx.begin(), idx.end(),
                   [&all](int64_t a, int64_t b) { return all[static_cast<size_t>(a)] < all[static_cast<size_t>(b)]; });
  order_.assign(static_cast<size_t>(m_), 0);
  positions_.assign(static_cast<size_t>(m_), 0);
  for (int64_t j = 0; j < m_; ++j) {
    order_[static_cast<size_t>(idx[static_cast<size_t>(j)])] = j;
    positions_[static_cast<size_t>(j)] = all[static_cast<size_t>(idx[static_cast<size_t>(j)])];
  }
  const std::vector<int64_t> all_docs = exchange_documents(cp, n_, documents);
  if (!all_docs.empty()) {
    documents_.assign(static_cast<size_t>(m_), 0);
    for (int64_t j = 0; j < m_; ++j)
      documents_[static_cast<size_t>(j)] = all_docs[static_cast<size_t>(idx[static_cast<size_t>(j)])];
  }
  const size_t b = static_cast<size_t>(cfg.batch), d = static_cast<size_t>(cfg.head_dim), m = static_cast<size_t>(m_);
  const size_t qfull = b * static_cast<size_t>(hq_) * m * d, kvfull = b * static_cast<size_t>(hkv_) * m * d;
  send_.assign(qfull, 0.0f);  // hq_ >= hkv_: the Q-sized exchange is the largest
  recv_.assign(qfull, 0.0f);
  qh_.assign(qfull, 0.0f);
  oh_.assign(qfull, 0.0f);
  doh_.assign(qfull, 0.0f);
  dqh_.assign(qfull, 0.0f);
  kh_.assign(kvfull, 0.0f);
  vh_.assign(kvfull, 0.0f);
  dkh_.assign(kvfull, 0.0f);
  dvh_.assign(kvfull, 0.0f);
  lseh_.assign(b * static_cast<size_t>(hq_) * m, 0.0f);
  delta_.assign(b * static_cast<size_t>(hq_) * m, 0.0f);
}

int64_t AllToAllAttention::workspace_bytes() const { return workspace().total(); }

RingWorkspaceBytes AllToAllAttention::workspace() const {
  RingWorkspaceBytes w;
  constexpr int64_t f = sizeof(float);
  w.kv_ring_bytes =
      static_cast<int64_t>(send_.size() + recv_.size() + qh_.size() + kh_.size() + vh_.size() + oh_.size()) * f;
  w.dkv_ring_bytes = static_cast<int64_t>(doh_.size() + dqh_.size() + dkh_.size() + dvh_.size()) * f;
  w.block_out_bytes = static_cast<int64_t>(lseh_.size() + delta_.size()) * f;
  return w;
}

int64_t AllToAllAttention::visible_pairs() const {
  // Every rank computes the whole sequence's pairs for heads/P of the heads.
  const int64_t* docs = documents_.empty() ? nullptr : documents_.data();
  return kernels::visible_pairs(positions_.data(), m_, positions_.data(), m_, cfg_.causal, docs, docs) / size_;
}

void AllToAllAttention::to_heads(const float* src, int64_t heads, int64_t hx, bool kv, int64_t w, float* dst) {
  const int64_t B = cfg_.batch;
  const size_t row = static_cast<size_t>(n_ * w);           // one head's n tokens
  const size_t block = static_cast<size_t>(B * hx) * row;   // per destination
  for (int r = 0; r < size_; ++r) {
    const int64_t h0 = kv ? first_kv_head(r) : first_head(r);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < hx; ++h)
        std::copy_n(src + static_cast<size_t>(b * heads + h0 + h) * row, row,
                    send_.data() + static_cast<size_t>(r) * block + static_cast<size_t>(b * hx + h) * row);
  }
  const float* in = exchange(block);
  for (int s = 0; s < size_; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < hx; ++h) {
        const float* from = in + static_cast<size_t>(s) * block + static_cast<size_t>(b * hx + h) * row;
        float* to = dst + static_cast<size_t>((b * hx + h) * m_ * w);
        for (int64_t t = 0; t < n_; ++t)
          std::copy_n(from + static_cast<size_t>(t * w), static_cast<size_t>(w),
                      to + static_cast<size_t>(order_[static_cast<size_t>(s * n_ + t)] * w));
      }
}

const float* AllToAllAttention::exchange(size_t block) {
  if (size_ == 1) return send_.data();  // one rank: its only block stays where it is
  const auto t0 = std::chrono::steady_clock::now();
  cp_.all_to_all(send_.data(), recv_.data(), block * sizeof(float));
  comm_acc_ += since(t0);
  return recv_.data();
}

void AllToAllAttention::to_sequence(const float* src, int64_t heads, int64_t hx, bool kv, int64_t w, float* dst,
                                    bool accumulate) {
  const int64_t B = cfg_.batch;
  const size_t row = static_cast<size_t>(n_ * w);
  const size_t block = static_cast<size_t>(B * hx) * row;
  for (int s = 0; s < size_; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < hx; ++h) {
        const float* from = src + static_cast<size_t>((b * hx + h) * m_ * w);
        float* to = send_.data() + static_cast<size_t>(s) * block + static_cast<size_t>(b * hx + h) * row;
        for (int64_t t = 0; t < n_; ++t)
          std::copy_n(from + static_cast<size_t>(order_[static_cast<size_t>(s * n_ + t)] * w), static_cast<size_t>(w),
                      to + static_cast<size_t>(t * w));
      }
  const float* in = exchange(block);
  for (int r = 0; r < size_; ++r) {
    const int64_t h0 = kv ? first_kv_head(r) : first_head(r);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < hx; ++h) {
        const float* from = in + static_cast<size_t>(r) * block + static_cast<size_t>(b * hx + h) * row;
        float* to = dst + static_cast<size_t>(b * heads + h0 + h) * row;
        if (accumulate)
          for (size_t i = 0; i < row; ++i) to[i] += from[i];
        else
          std::copy_n(from, row, to);
      }
  }
}

kernels::BlockParams AllToAllAttention::block_params() {
  using kernels::ElemType;
  const int64_t B = cfg_.batch, d = cfg_.head_dim;
  kernels::BlockParams p;
  p.q = kernels::dense_view(qh_.data(), ElemType::f32, B, hq_, m_, d);
  p.k = kernels::dense_view(kh_.data(), ElemType::f32, B, hkv_, m_, d);
  p.v = kernels::dense_view(vh_.data(), ElemType::f32, B, hkv_, m_, d);
  p.q_positions = positions_.data();
  p.k_positions = positions_.data();
  if (!documents_.empty()) p.q_documents = p.k_documents = documents_.data();
  p.causal = cfg_.causal;
  p.scale = cfg_.scale;
  return p;
}

void AllToAllAttention::exchange_inputs(const float* q, const float* k, const float* v) {
  const int64_t d = cfg_.head_dim;
  to_heads(q, cfg_.heads, hq_, false, d, qh_.data());
  to_heads(k, cfg_.kv_heads, hkv_, true, d, kh_.data());
  to_heads(v, cfg_.kv_heads, hkv_, true, d, vh_.data());
}

void AllToAllAttention::forward(const float* q, const float* k, const float* v, float* out, float* lse) {
  using kernels::ElemType;
  const auto t0 = std::chrono::steady_clock::now();
  comm_acc_ = 0;
  exchange_inputs(q, k, v);
  const int64_t B = cfg_.batch, d = cfg_.head_dim;
  const kernels::BlockParams p = block_params();
  kernels::ForwardOut o{kernels::dense_view(oh_.data(), ElemType::f32, B, hq_, m_, d),
                        kernels::dense_rows(lseh_.data(), B, hq_, m_)};
  try {
    if (inner_)
      inner_->forward(qh_.data(), kh_.data(), vh_.data(), oh_.data(), lseh_.data());
    else
      kernels::cpu_flash_forward(p, o, cfg_.tiles);
  } catch (const std::invalid_argument& e) {
    throw bad_input(std::string("all-to-all CP forward: ") + e.what());
  }
  to_sequence(oh_.data(), cfg_.heads, hq_, false, d, out, false);
  to_sequence(lseh_.data(), cfg_.heads, hq_, false, 1, lse, false);
  const void* ids[5] = {q, k, v, out, lse};
  std::copy(std::begin(ids), std::end(ids), std::begin(stash_));
  fwd_.comm_s = comm_acc_;
  fwd_.total_s = since(t0);
  fwd_.compute_s = fwd_.total_s - fwd_.comm_s;
}

void AllToAllAttention::backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                                 const float* grad_out, float* grad_q, float* grad_k, float* grad_v) {
  using kernels::ElemType;
  const auto t0 = std::chrono::steady_clock::now();
  comm_acc_ = 0;
  const int64_t B = cfg_.batch, d = cfg_.head_dim;
  const void* ids[5] = {q, k, v, out, lse};
  reused_ = std::equal(std::begin(ids), std::end(ids), std::begin(stash_));
  if (!reused_) {
    // Another forward ran since this one (or none did): exchange its tensors again.
    exchange_inputs(q, k, v);
    to_heads(out, cfg_.heads, hq_, false, d, oh_.data());
    to_heads(lse, cfg_.heads, hq_, false, 1, lseh_.data());
    std::fill(std::begin(stash_), std::end(stash_), nullptr);
  }
  to_heads(grad_out, cfg_.heads, hq_, false, d, doh_.data());
  std::fill(dqh_.begin(), dqh_.end(), 0.0f);
  std::fill(dkh_.begin(), dkh_.end(), 0.0f);
  std::fill(dvh_.begin(), dvh_.end(), 0.0f);
  const kernels::BlockParams p = block_params();
  kernels::BackwardArgs g{kernels::dense_view(oh_.data(), ElemType::f32, B, hq_, m_, d),
                          kernels::dense_view(doh_.data(), ElemType::f32, B, hq_, m_, d),
                          kernels::dense_rows(lseh_.data(), B, hq_, m_),
                          kernels::dense_rows(delta_.data(), B, hq_, m_),
                          kernels::dense_view(dqh_.data(), ElemType::f32, B, hq_, m_, d),
                          kernels::dense_view(dkh_.data(), ElemType::f32, B, hkv_, m_, d),
                          kernels::dense_view(dvh_.data(), ElemType::f32, B, hkv_, m_, d)};
  try {
    if (inner_) {
      inner_->backward(qh_.data(), kh_.data(), vh_.data(), oh_.data(), lseh_.data(), doh_.data(), dqh_.data(),
                       dkh_.data(), dvh_.data());
    } else {
      kernels::attention_backward_delta(g.out, g.grad_out, g.delta);
      kernels::cpu_flash_backward(p, g, cfg_.tiles);
    }
  } catch (const std::invalid_argument& e) {
    throw bad_input(std::string("all-to-all CP backward: ") + e.what());
  }
  to_sequence(dqh_.data(), cfg_.heads, hq_, false, d, grad_q, false);
  // Replicated KV heads come back from several ranks: sum their partial dK, dV.
  const size_t kv_elems = static_cast<size_t>(B * cfg_.kv_heads * n_ * d);
  std::fill(grad_k, grad_k + kv_elems, 0.0f);
  std::fill(grad_v, grad_v + kv_elems, 0.0f);
  to_sequence(dkh_.data(), cfg_.kv_heads, hkv_, true, d, grad_k, true);
  to_sequence(dvh_.data(), cfg_.kv_heads, hkv_, true, d, grad_v, true);
  bwd_.comm_s = comm_acc_;
  bwd_.total_s = since(t0);
  bwd_.compute_s = bwd_.total_s - bwd_.comm_s;
}

}  // namespace ringplan::runtime
