// All-gather context-parallel attention (see allgather_attention.hpp).
#include "runtime/allgather_attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

AllGatherAttention::AllGatherAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions,
                                       const int64_t* documents)
    : cp_(cp), cfg_(cfg), size_(cp.size()), rank_(cp.rank()) {
  if (cfg.kernel != AttentionImpl::flash)
    throw bad_input("all-gather CP runs the flash kernel only (a materialised score matrix of the whole sequence "
                    "per rank is what this method avoids)");
  if (cfg.batch < 1 || cfg.heads < 1 || cfg.kv_heads < 1 || cfg.tokens < 1 || cfg.head_dim < 1 ||
      cfg.heads % cfg.kv_heads != 0)
    throw bad_input(fmt::format("all-gather CP: batch={} heads={} kv_heads={} tokens={} head_dim={}: need all >= 1 and "
                                "heads % kv_heads == 0",
                                cfg.batch, cfg.heads, cfg.kv_heads, cfg.tokens, cfg.head_dim));
  n_ = cfg.tokens;
  m_ = n_ * size_;
  q_positions_.assign(positions, positions + n_);
  k_positions_ = exchange_positions(cp, n_, positions);
  k_documents_ = exchange_documents(cp, n_, documents);
  if (!k_documents_.empty()) q_documents_.assign(documents, documents + n_);
  const size_t blk = static_cast<size_t>(cfg.batch * cfg.kv_heads * n_ * cfg.head_dim);
  packed_.assign(2 * blk * static_cast<size_t>(size_), 0.0f);
  const size_t full = blk * static_cast<size_t>(size_);
  k_full_.assign(full, 0.0f);
  v_full_.assign(full, 0.0f);
  dk_full_.assign(full, 0.0f);
  dv_full_.assign(full, 0.0f);
  delta_.assign(static_cast<size_t>(cfg.batch * cfg.heads * n_), 0.0f);
}

int64_t AllGatherAttention::workspace_bytes() const {
  return static_cast<int64_t>((packed_.size() + k_full_.size() + v_full_.size() + dk_full_.size() + dv_full_.size() +
                               delta_.size()) *
                              sizeof(float));
}

RingWorkspaceBytes AllGatherAttention::workspace() const {
  RingWorkspaceBytes w;
  constexpr int64_t f = sizeof(float);
  w.kv_ring_bytes = static_cast<int64_t>(packed_.size() + k_full_.size() + v_full_.size()) * f;
  w.dkv_ring_bytes = static_cast<int64_t>(dk_full_.size() + dv_full_.size()) * f;
  w.block_out_bytes = static_cast<int64_t>(delta_.size()) * f;
  return w;
}

int64_t AllGatherAttention::visible_pairs() const {
  // Sorted keys and one binary search per query: O((n + m) log m), not n * m.
  return kernels::visible_pairs(q_positions_.data(), n_, k_positions_.data(), m_, cfg_.causal,
                                q_documents_.empty() ? nullptr : q_documents_.data(),
                                k_documents_.empty() ? nullptr : k_documents_.data());
}

// packed_ holds rank r's [K | V] block at r * 2*blk after the all-gather; K_full[b, h, r*n + t]
// is rank r's K[b, h, t] (the key positions are rank-major, matching k_positions_).
void AllGatherAttention::gather_kv(const float* k, const float* v) {
  const int64_t B = cfg_.batch, H = cfg_.kv_heads, d = cfg_.head_dim;
  const size_t blk = static_cast<size_t>(B * H * n_ * d);
  std::vector<float> mine(2 * blk);
  std::copy(k, k + blk, mine.begin());
  std::copy(v, v + blk, mine.begin() + static_cast<std::ptrdiff_t>(blk));
  cp_.all_gather(mine.data(), packed_.data(), 2 * blk * sizeof(float));
  for (int r = 0; r < size_; ++r) {
    const float* kr = packed_.data() + static_cast<size_t>(r) * 2 * blk;
    const float* vr = kr + blk;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const size_t src = static_cast<size_t>((b * H + h) * n_ * d);
        const size_t dst = static_cast<size_t>(((b * H + h) * m_ + r * n_) * d);
        std::copy(kr + src, kr + src + static_cast<size_t>(n_ * d), k_full_.begin() + static_cast<std::ptrdiff_t>(dst));
        std::copy(vr + src, vr + src + static_cast<size_t>(n_ * d), v_full_.begin() + static_cast<std::ptrdiff_t>(dst));
      }
  }
}

// This rank's queries against every gathered key, by position.
kernels::BlockParams AllGatherAttention::block_params(const float* q) {
  using kernels::ElemType;
  const int64_t B = cfg_.batch, H = cfg_.heads, Hkv = cfg_.kv_heads, d = cfg_.head_dim;
  kernels::BlockParams p;
  p.q = kernels::dense_view(const_cast<float*>(q), ElemType::f32, B, H, n_, d);
  p.k = kernels::dense_view(k_full_.data(), ElemType::f32, B, Hkv, m_, d);
  p.v = kernels::dense_view(v_full_.data(), ElemType::f32, B, Hkv, m_, d);
  p.q_positions = q_positions_.data();
  p.k_positions = k_positions_.data();
  if (!k_documents_.empty()) {
    p.q_documents = q_documents_.data();
    p.k_documents = k_documents_.data();
  }
  p.causal = cfg_.causal;
  p.scale = cfg_.scale;
  return p;
}

void AllGatherAttention::forward(const float* q, const float* k, const float* v, float* out, float* lse) {
  using kernels::ElemType;
  const auto t0 = std::chrono::steady_clock::now();
  gather_kv(k, v);
  fwd_.comm_s = since(t0);
  const int64_t B = cfg_.batch, H = cfg_.heads, d = cfg_.head_dim;
  const kernels::BlockParams p = block_params(q);
  kernels::ForwardOut o{kernels::dense_view(out, ElemType::f32, B, H, n_, d), kernels::dense_rows(lse, B, H, n_)};
  const auto t1 = std::chrono::steady_clock::now();
  try {
    kernels::cpu_flash_forward(p, o, cfg_.tiles);
  } catch (const std::invalid_argument& e) {
    throw bad_input(std::string("all-gather CP forward: ") + e.what());
  }
  fwd_.compute_s = since(t1);
  fwd_.total_s = since(t0);
}

void AllGatherAttention::backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                                  const float* grad_out, float* grad_q, float* grad_k, float* grad_v) {
  using kernels::ElemType;
  const auto t0 = std::chrono::steady_clock::now();
  // The forward's gathered K, V are still in k_full_ / v_full_ when the caller's K, V are the
  // same; gather again so a backward never depends on which forward ran last.
  gather_kv(k, v);
  double comm = since(t0);
  const int64_t B = cfg_.batch, H = cfg_.heads, Hkv = cfg_.kv_heads, d = cfg_.head_dim;
  const auto t1 = std::chrono::steady_clock::now();
  std::fill(dk_full_.begin(), dk_full_.end(), 0.0f);
  std::fill(dv_full_.begin(), dv_full_.end(), 0.0f);
  std::fill(grad_q, grad_q + B * H * n_ * d, 0.0f);
  const kernels::BlockParams p = block_params(q);
  kernels::BackwardArgs g{kernels::dense_view(const_cast<float*>(out), ElemType::f32, B, H, n_, d),
                          kernels::dense_view(const_cast<float*>(grad_out), ElemType::f32, B, H, n_, d),
                          kernels::dense_rows(const_cast<float*>(lse), B, H, n_),
                          kernels::dense_rows(delta_.data(), B, H, n_),
                          kernels::dense_view(grad_q, ElemType::f32, B, H, n_, d),
                          kernels::dense_view(dk_full_.data(), ElemType::f32, B, Hkv, m_, d),
                          kernels::dense_view(dv_full_.data(), ElemType::f32, B, Hkv, m_, d)};
  try {
    kernels::attention_backward_delta(g.out, g.grad_out, g.delta);
    kernels::cpu_flash_backward(p, g, cfg_.tiles);
  } catch (const std::invalid_argument& e) {
    throw bad_input(std::string("all-gather CP backward: ") + e.what());
  }
  // Pack dK, dV rank-major (owner r's rows together) and reduce-scatter: every rank receives the
  // sum over the group of the gradients of its own keys.
  const size_t blk = static_cast<size_t>(B * Hkv * n_ * d);
  for (int r = 0; r < size_; ++r) {
    float* kr = packed_.data() + static_cast<size_t>(r) * 2 * blk;
    float* vr = kr + blk;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hkv; ++h) {
        const size_t dst = static_cast<size_t>((b * Hkv + h) * n_ * d);
        const size_t src = static_cast<size_t>(((b * Hkv + h) * m_ + r * n_) * d);
        std::copy(dk_full_.begin() + static_cast<std::ptrdiff_t>(src),
                  dk_full_.begin() + static_cast<std::ptrdiff_t>(src + static_cast<size_t>(n_ * d)), kr + dst);
        std::copy(dv_full_.begin() + static_cast<std::ptrdiff_t>(src),
                  dv_full_.begin() + static_cast<std::ptrdiff_t>(src + static_cast<size_t>(n_ * d)), vr + dst);
      }
  }
  bwd_.compute_s = since(t1);
  const auto t2 = std::chrono::steady_clock::now();
  std::vector<float> mine(2 * blk);
  if (size_ > 1) {
    cp_.reduce_scatter_sum(packed_.data(), mine.data(), 2 * blk);
  } else {
    std::copy(packed_.begin(), packed_.begin() + static_cast<std::ptrdiff_t>(2 * blk), mine.begin());
  }
  std::copy(mine.begin(), mine.begin() + static_cast<std::ptrdiff_t>(blk), grad_k);
  std::copy(mine.begin() + static_cast<std::ptrdiff_t>(blk), mine.end(), grad_v);
  comm += since(t2);
  bwd_.comm_s = comm;
  bwd_.total_s = since(t0);
}

}  // namespace ringplan::runtime
