// Hierarchical (all-to-all + ring) context-parallel attention (see hybrid_attention.hpp).
#include "runtime/hybrid_attention.hpp"

#include <fmt/format.h>

#include <string>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {
std::string divisors_of(int n) {
  std::string s;
  for (int d = 1; d <= n; ++d)
    if (n % d == 0) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return s;
}
}  // namespace

HybridAttention::HybridAttention(Communicator& cp, int64_t a2a_size, const RingConfig& cfg, const int64_t* positions,
                                 const int64_t* documents) {
  const int C = cp.size();
  if (a2a_size < 1 || a2a_size > C || C % a2a_size != 0)
    throw bad_input(fmt::format("hybrid CP: the all-to-all group size {} must divide the CP size {}; valid: {}",
                                a2a_size, C, divisors_of(C)));
  if (cfg.kernel != AttentionImpl::flash)
    throw bad_input("hybrid CP runs the flash kernel only (as all-to-all CP)");
  a2a_size_ = a2a_size;
  ring_size_ = C / a2a_size;
  const int A = static_cast<int>(a2a_size), r = cp.rank();
  // Group r / A holds A consecutive CP ranks; the ring links the members with the same r % A.
  a2a_comm_ = cp.split(r / A, r % A);
  ring_comm_ = cp.split(r % A, r / A);
  if (A == 1) {
    ring_ = std::make_unique<RingAttention>(*ring_comm_, cfg, positions, documents);
    return;
  }
  a2a_ = std::make_unique<AllToAllAttention>(*a2a_comm_, cfg, positions, documents);
  RingConfig inner = cfg;
  inner.heads = a2a_->heads_per_rank();
  inner.kv_heads = a2a_->kv_heads_per_rank();
  inner.tokens = a2a_->head_tokens();
  ring_ = std::make_unique<RingAttention>(*ring_comm_, inner, a2a_->head_positions(), a2a_->head_documents());
  a2a_->set_inner(ring_.get());
}

void HybridAttention::forward(const float* q, const float* k, const float* v, float* out, float* lse) {
  if (!a2a_) {
    ring_->forward(q, k, v, out, lse);
  } else {
    a2a_->forward(q, k, v, out, lse);
  }
  const RingPassTiming& rt = ring_->last_forward();
  fwd_.total_s = a2a_ ? a2a_->last_forward().total_s : rt.total_s;
  fwd_.comm_s = (a2a_ ? a2a_->last_forward().comm_s : 0.0) + rt.comm_wait_s();
  fwd_.compute_s = fwd_.total_s - fwd_.comm_s;
}

void HybridAttention::backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                               const float* grad_out, float* grad_q, float* grad_k, float* grad_v) {
  if (!a2a_)
    ring_->backward(q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v);
  else
    a2a_->backward(q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v);
  const RingPassTiming& rt = ring_->last_backward();
  bwd_.total_s = a2a_ ? a2a_->last_backward().total_s : rt.total_s;
  bwd_.comm_s = (a2a_ ? a2a_->last_backward().comm_s : 0.0) + rt.comm_wait_s();
  bwd_.compute_s = bwd_.total_s - bwd_.comm_s;
}

RingWorkspaceBytes HybridAttention::workspace() const {
  RingWorkspaceBytes w = ring_->workspace_bytes();
  if (a2a_) {
    const RingWorkspaceBytes g = a2a_->workspace();
    w.kv_ring_bytes += g.kv_ring_bytes;
    w.dkv_ring_bytes += g.dkv_ring_bytes;
    w.block_out_bytes += g.block_out_bytes;
    w.scores_bytes += g.scores_bytes;
  }
  return w;
}

int64_t HybridAttention::visible_pairs() const { return ring_->last_forward().visible_pairs() / a2a_size_; }

}  // namespace ringplan::runtime
