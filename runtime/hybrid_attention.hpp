// Hierarchical context parallelism (Megatron/Transformer Engine cp_comm_type a2a+p2p,
// --hierarchical-context-parallel-sizes A R; USP): the CP group of C = A x R ranks is cut into R
// groups of A consecutive CP ranks (rank c is member c % A of group c / A, as Megatron-Core's
// create_hierarchical_groups makes its first level). Forward:
//   1. inside each group, the all-to-all of AllToAllAttention (runtime/alltoall_attention.hpp)
//      turns the A sequence shards into head shards of the group's m = A*n tokens (in global
//      order): each rank holds H/A query heads and max(Hkv/A, 1) KV heads (replicated as there);
//   2. across groups, RingAttention (runtime/ring_attention.hpp) runs on those head shards over
//      the R ranks that hold the same heads (members c % A of every group): a ring of R ranks,
//      each holding m tokens at any positions, so every sharding scheme and packed documents
//      work as for the ring (the causal mask follows the global positions);
//   3. the all-to-all brings O and lse back to the sequence shards.
// Backward: dO in by all-to-all, the ring's backward on the head shards, dQ, dK, dV back (the
// replicated KV heads' partial gradients summed). The objects are composed, not copied: the
// AllToAllAttention runs its exchanges and calls the ring as its inner attention.
//
// A = 1 is the plain ring over C ranks (no all-to-all, nothing copied), A = C the all-to-all
// (a ring of one rank). Sub-communicators come from Communicator::split. Flash kernel only.
// The heads of this rank (cfg.heads, cfg.kv_heads) must split over A as all-to-all CP needs
// (bad_input otherwise). No trace events.
//
// Buffers (sim::hybrid_buffer_bytes counts the same): the all-to-all stage's (A > 1) plus the
// ring's (R > 1). Timing: comm_s = time in the all-to-alls + the ring's waits; compute_s the rest.
#pragma once
#include <cstdint>
#include <memory>

#include "runtime/alltoall_attention.hpp"
#include "runtime/communicator.hpp"
#include "runtime/ring_attention.hpp"

namespace ringplan::runtime {

using HybridTiming = AllGatherTiming;

class HybridAttention {
 public:
  // Collective over `cp` (splits it twice, then the all-to-all's and the ring's own collective
  // constructors). a2a_size = A must divide cp.size(); bad_input otherwise, naming the valid sizes.
  // documents: this rank's n document ids (packed documents), or null on every rank.
  HybridAttention(Communicator& cp, int64_t a2a_size, const RingConfig& cfg, const int64_t* positions,
                  const int64_t* documents = nullptr);

  // Same tensors and contracts as RingAttention::forward / backward.
  void forward(const float* q, const float* k, const float* v, float* out, float* lse);
  void backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                const float* grad_out, float* grad_q, float* grad_k, float* grad_v);

  const HybridTiming& last_forward() const { return fwd_; }
  const HybridTiming& last_backward() const { return bwd_; }
  // The all-to-all stage's categories (AllToAllAttention::workspace) plus the ring's.
  RingWorkspaceBytes workspace() const;
  int64_t workspace_bytes() const { return workspace().total(); }
  // Visible (query, key) pairs of the last forward per head of this rank's H heads (as the ring
  // and all-to-all report theirs): the ring's pairs on its H/A heads, divided by A.
  int64_t visible_pairs() const;
  int64_t a2a_size() const { return a2a_size_; }
  int64_t ring_size() const { return ring_size_; }

 private:
  int64_t a2a_size_ = 1, ring_size_ = 1;
  std::unique_ptr<Communicator> a2a_comm_, ring_comm_;
  std::unique_ptr<AllToAllAttention> a2a_;  // null when A = 1
  std::unique_ptr<RingAttention> ring_;
  HybridTiming fwd_, bwd_;
};

}  // namespace ringplan::runtime
