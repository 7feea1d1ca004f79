// All-gather context parallelism (Megatron's cp_comm_type all_gather; torchtitan's allgather
// rotation; the method Llama 3 used for its long-context stage): each rank of a CP group
// all-gathers K and V of the whole sequence (only the H_kv heads: with GQA that is cheap), runs
// attention of its own queries against every key in one kernel call (positions decide the
// mask, so every sharding scheme works), and in the backward computes dK, dV for the whole
// sequence and reduce-scatters them back to their owners. dQ never leaves home.
//
// Against the ring: no per-step overlap (the all-gather is exposed unless overlapped with other
// work) and P x the K/V memory, but one large kernel call instead of P block calls, no merge of
// partial results, and no dependence on the ring's per-step compute/transfer balance.
// Wire bytes per layer: forward all-gather of K, V: (P-1)/P x 2*b*Hkv*L*d*4; backward the
// same again for dK, dV (reduce-scatter). Deadlock-free for every P (two collectives).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/attention.hpp"
#include "runtime/communicator.hpp"
#include "runtime/ring_attention.hpp"

namespace ringplan::runtime {

struct AllGatherTiming {
  double comm_s = 0;     // in the all-gather (forward) or reduce-scatter (backward)
  double compute_s = 0;  // the kernel call (+ packing)
  double total_s = 0;
};

class AllGatherAttention {
 public:
  // Collective over `cp`: all-gathers every rank's positions (n each); allocates every buffer
  // here (the gathered K, V and, for the backward, dK, dV of the whole sequence). Only the flash
  // kernel; throws bad_input on a materialised kernel or inconsistent shapes.
  // documents: this rank's n document ids (packed documents), or null on every rank.
  AllGatherAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions,
                     const int64_t* documents = nullptr);

  // Same tensors and contracts as RingAttention::forward / backward.
  void forward(const float* q, const float* k, const float* v, float* out, float* lse);
  void backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                const float* grad_out, float* grad_q, float* grad_k, float* grad_v);

  const AllGatherTiming& last_forward() const { return fwd_; }
  const AllGatherTiming& last_backward() const { return bwd_; }
  // Bytes of the buffers it owns: gathered K, V and the full-sequence dK, dV plus the packing
  // buffer (the method's memory term, P x a shard's K/V).
  int64_t workspace_bytes() const;
  // The same bytes in the ring's categories, so one report compares both methods:
  // kv_ring_bytes = packing buffer + gathered K, V; dkv_ring_bytes = full-sequence dK, dV;
  // block_out_bytes = D = rowsum(dO*O); scores_bytes 0 (flash only). total() == workspace_bytes().
  RingWorkspaceBytes workspace() const;
  // (query, key) pairs this rank's kernel computes: for each own query, the gathered keys at
  // positions <= its own (causal) or all of them, in its own document (packed documents).
  int64_t visible_pairs() const;

 private:
  void gather_kv(const float* k, const float* v);  // into k_full_, v_full_ ([b, Hkv, P*n, d] each)
  kernels::BlockParams block_params(const float* q);

  Communicator& cp_;
  RingConfig cfg_;
  int size_ = 1, rank_ = 0;
  int64_t n_ = 0, m_ = 0;              // tokens per rank, tokens in all
  std::vector<int64_t> q_positions_;   // this rank's n positions
  std::vector<int64_t> k_positions_;   // every rank's positions, rank-major (P*n)
  std::vector<int64_t> q_documents_, k_documents_;  // as the positions; empty without documents
  std::vector<float> packed_;          // rank-major [P][K | V of b*Hkv*n*d each]
  std::vector<float> k_full_, v_full_; // [b, Hkv, P*n, d]
  std::vector<float> dk_full_, dv_full_;
  std::vector<float> delta_;
  AllGatherTiming fwd_, bwd_;
};

}  // namespace ringplan::runtime
