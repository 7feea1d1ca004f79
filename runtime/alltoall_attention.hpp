// All-to-all context parallelism (DeepSpeed-Ulysses; Megatron's cp_comm_type a2a): rank r of a
// CP group of P holds Q, K, V of its n = L/P tokens for every head (any sharding scheme). Before
// attention, all-to-alls turn sequence shards into head shards: afterwards rank r holds the
// WHOLE sequence (m = P*n tokens, restored to global token order, so the causal mask is the
// plain one and every scheme gives the same result) for H/P query heads and their KV heads. One
// flash kernel call per rank computes full-sequence attention on those heads: no causal
// imbalance between ranks (each sees every token) and no merge of partial results. One
// all-to-all brings O (and lse) back to sequence shards.
//
// All-to-alls, as the cost model counts them (sim/ring_model.hpp, predict_alltoall_layer):
//   forward:  Q, K, V (sequence -> heads; K, V only the KV heads), O (heads -> sequence);
//   backward: dO (sequence -> heads), dQ, dK, dV (heads -> sequence).
// The forward's head-sharded Q, K, V, O and lse stay in this object and the backward reuses
// them when it is called on the same caller tensors (q, k, v, out, lse pointers) as the last
// forward, as Megatron/TE keep them per layer. A caller that runs other forwards in between
// (the training step runs one object over every layer and micro-batch) gets a correct backward
// all the same: Q, K, V, O and lse are exchanged again (the extra time is counted in comm_s).
// The small lse all-to-all (b*H*n floats) is not counted by the cost model.
//
// Heads: the CP size must divide the query heads of this rank (cfg.heads; the layout check
// refuses it otherwise). KV heads: when P divides cfg.kv_heads each rank gets kv_heads/P of
// them; when kv_heads < P and P is a multiple of kv_heads, every KV head is REPLICATED to the
// P/kv_heads ranks whose query heads use it (DeepSpeed-Ulysses' GQA rule), and in the backward
// their partial dK, dV are summed at the owner. Any other kv_heads is refused (bad_input).
//
// Wire bytes per rank, each all-to-all sending (P-1)/P of its send buffer: Q, O, dO, dQ:
// b*H*n*d*4; K, V, dK, dV: b*max(Hkv, P)*n*d*4 (with replication every rank sends one KV head
// per destination). Deadlock-free for every P (collectives only); P = 1 does no communication.
// Flash kernel only (like all-gather CP). No trace events.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/attention.hpp"
#include "runtime/allgather_attention.hpp"
#include "runtime/communicator.hpp"
#include "runtime/ring_attention.hpp"

namespace ringplan::runtime {

// comm_s: time inside the all-to-alls (waits on slower ranks included); compute_s: the kernel
// call, the packing and the permutation to global order; total_s: the whole pass.
using AllToAllTiming = AllGatherTiming;

class AllToAllAttention {
 public:
  // Collective over `cp`: all-gathers every rank's positions (n each) and sorts them into the
  // global order; allocates every buffer here. Throws bad_input on a materialised kernel, on
  // heads not divisible by the CP size, or on kv_heads that neither divide by it nor divide it.
  // documents: this rank's n document ids (packed documents), or null on every rank.
  AllToAllAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions,
                    const int64_t* documents = nullptr);

  // Same tensors and contracts as RingAttention::forward / backward.
  void forward(const float* q, const float* k, const float* v, float* out, float* lse);
  void backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                const float* grad_out, float* grad_q, float* grad_k, float* grad_v);

  const AllToAllTiming& last_forward() const { return fwd_; }
  const AllToAllTiming& last_backward() const { return bwd_; }
  // True when the last backward reused the forward's head-sharded tensors (no re-exchange).
  bool last_backward_reused_forward() const { return reused_; }
  int64_t workspace_bytes() const;
  // The same bytes in the ring's categories: kv_ring_bytes = head-sharded Q, K, V, O + the send
  // and receive staging buffers; dkv_ring_bytes = head-sharded dO, dQ, dK, dV; block_out_bytes =
  // head-sharded lse and D = rowsum(dO*O); scores_bytes 0. total() == workspace_bytes().
  RingWorkspaceBytes workspace() const;
  // (query, key) pairs of the rank's kernel call (every query of the whole sequence against the
  // keys it sees, on H/P heads) expressed per head of the whole rank's H heads, as the ring and
  // all-gather report theirs: the sequence's visible pairs / P (m(m+1)/2 / P causal).
  int64_t visible_pairs() const;
  int64_t heads_per_rank() const { return hq_; }
  int64_t kv_heads_per_rank() const { return hkv_; }
  // The head-sharded side, for a caller that attends over it with another method (hybrid CP,
  // runtime/hybrid_attention.hpp): the group's m tokens, their positions and document ids
  // (null without documents) in the order of the head-sharded tensors.
  int64_t head_tokens() const { return m_; }
  const int64_t* head_positions() const { return positions_.data(); }
  const int64_t* head_documents() const { return documents_.empty() ? nullptr : documents_.data(); }
  // Attention on the head shards by `inner` (a ring over other ranks holding the same heads of
  // other tokens) instead of one local flash call: inner->forward(Q, K, V -> O, lse) and
  // inner->backward(... -> dQ, dK, dV) on [b, hq, m, d] / [b, hkv, m, d] tensors. Not owned;
  // null restores the local call. Its time is inside this object's compute_s.
  void set_inner(RingAttention* inner) { inner_ = inner; }

 private:
  // Sequence shard [b, heads, n, w] -> head shard [b, hx, m, w] in global order: destination r
  // gets heads [h0(r), h0(r) + hx) (h0 = first_head or first_kv_head).
  // The timed all-to-all of send_ (blocks of `block` floats per rank) into recv_; returns what
  // the caller reads: recv_, or send_ itself with one rank.
  const float* exchange(size_t block);
  void to_heads(const float* src, int64_t heads, int64_t hx, bool kv, int64_t w, float* dst);
  // Head shard [b, hx, m, w] -> sequence shard [b, heads, n, w]; accumulate: add into dst (dst
  // zeroed by the caller), for the replicated KV heads' partial gradients.
  void to_sequence(const float* src, int64_t heads, int64_t hx, bool kv, int64_t w, float* dst, bool accumulate);
  int64_t first_head(int r) const { return static_cast<int64_t>(r) * hq_; }
  int64_t first_kv_head(int r) const { return static_cast<int64_t>(r) * cfg_.kv_heads / size_; }
  kernels::BlockParams block_params();
  void exchange_inputs(const float* q, const float* k, const float* v);

  Communicator& cp_;
  RingConfig cfg_;
  int size_ = 1, rank_ = 0;
  int64_t n_ = 0, m_ = 0;            // tokens per rank, tokens in all
  int64_t hq_ = 0, hkv_ = 0;         // query and KV heads on this rank after the all-to-all
  std::vector<int64_t> order_;       // rank-major gathered token i -> its index in global order
  std::vector<int64_t> positions_;   // the m positions, sorted (global order)
  std::vector<int64_t> documents_;   // their document ids (same order), empty without documents
  std::vector<float> send_, recv_;   // staging, b*hq*m*d each (the largest exchange)
  std::vector<float> qh_, kh_, vh_, oh_;      // head-sharded, global order
  std::vector<float> doh_, dqh_, dkh_, dvh_;  // their gradients
  std::vector<float> lseh_, delta_;           // [b, hq, m]
  const void* stash_[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};  // q, k, v, out, lse of the last forward
  bool reused_ = false;
  RingAttention* inner_ = nullptr;
  double comm_acc_ = 0;  // time in all-to-alls of the pass in progress
  AllToAllTiming fwd_, bwd_;
};

}  // namespace ringplan::runtime
