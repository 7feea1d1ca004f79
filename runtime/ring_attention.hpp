// Ring attention forward and backward over one CP group (DESIGN.md "Ring attention").
//
// Rank r of P holds Q, K, V of its own shard (n = L/P tokens, any sharding scheme: the global
// positions of every token decide the causal mask). At ring step s the K/V block in hand came
// from rank (r - s) mod P.
//
// Forward, step s: post recv of the next block from r-1 and send of the block in hand to r+1
// (double buffer) BEFORE computing on the block in hand; compute the block's (O, lse) and merge
// it into the running result with kernels::merge_partial; wait; swap. A block whose smallest
// key position exceeds every query position of this rank (causal) is skipped: no kernel call.
//
// Backward, step s: K, V travel again exactly as in the forward. The dK, dV accumulator of the
// block in hand arrives from r-1 (which added its own contribution at step s-1); this rank
// computes its contribution into a zeroed float32 scratch (overlapping the accumulator's
// transfer), adds the incoming accumulator and sends the sum on to r+1. At the last step the
// sum goes to the block's owner, so after the ring every rank holds the complete dK, dV of its
// own shard. dQ never leaves home. Only the H_kv heads travel (GQA).
//
// Packed documents: with per-token document ids, a query sees only keys of its own document
// (kernels/attention.hpp); the ids travel once, at construction, beside the positions, and a
// block holding none of this rank's documents (or, causal, only later positions) is skipped.
//
// Deadlock-free for every P: all transfers are non-blocking and posted before any wait;
// P = 1 does no communication. Wire bytes per step: forward 2*b*Hkv*n*d*4 (K, V float32);
// backward adds the same again for dK, dV.
#pragma once
#include <cstdint>
#include <vector>

#include "core/config.hpp"  // AttentionImpl: the kernel the ring runs
#include "kernels/attention.hpp"
#include "runtime/communicator.hpp"
#include "runtime/trace.hpp"

namespace ringplan::runtime {

struct RingConfig {
  int64_t batch = 1;
  int64_t heads = 1;      // query heads on this rank (already divided by TP)
  int64_t kv_heads = 1;   // KV heads on this rank; heads % kv_heads == 0
  int64_t tokens = 0;     // per rank: L / P
  int64_t head_dim = 0;
  bool causal = true;
  AttentionImpl kernel = AttentionImpl::flash;
  kernels::TileConfig tiles{};
  float scale = 0.0f;     // 0 means 1/sqrt(head_dim)
};

struct RingStepTiming {
  int32_t step = 0;
  int32_t src_rank = 0;      // owner of the K/V block in hand
  bool skipped = false;      // fully hidden: no kernel call
  int64_t visible_pairs = 0; // (query, key) pairs computed, for FLOP counts
  double compute_s = 0;      // kernel (+ merge / accumulate) time
  double comm_wait_s = 0;    // time blocked in waits: the exposed communication
};

struct RingPassTiming {
  std::vector<RingStepTiming> steps;
  double total_s = 0;        // wall time of the whole pass on this rank
  double compute_s() const;
  double comm_wait_s() const;
  int64_t visible_pairs() const;
};

// Bytes of the buffers the ring owns (the caller owns Q, K, V, O, lse, dO, dQ, dK, dV).
struct RingWorkspaceBytes {
  int64_t kv_ring_bytes = 0;     // K,V double buffer: 2 x 2*b*Hkv*n*d*4
  int64_t dkv_ring_bytes = 0;    // dK,dV: receive double buffer + scratch double buffer (4 blocks, fp32)
  int64_t block_out_bytes = 0;   // one block's (O, lse) before merging, and D = rowsum(dO*O)
  int64_t scores_bytes = 0;      // materialised only: b*H*n*L*4 (the O(L^2/P) term)
  int64_t total() const { return kv_ring_bytes + dkv_ring_bytes + block_out_bytes + scores_bytes; }
};

// Collective over `cp`: checks that every rank holds `tokens` tokens and all-gathers their global
// positions (P x tokens, in rank order). Throws bad_input naming the rank that differs.
std::vector<int64_t> exchange_positions(Communicator& cp, int64_t tokens, const int64_t* positions);

// Collective over `cp`: all-gathers every rank's document ids (P x tokens, in rank order), or
// returns an empty vector when no rank has documents (documents == nullptr everywhere). Every
// rank must agree: a group where some ranks give ids and others not is bad_input on all ranks.
std::vector<int64_t> exchange_documents(Communicator& cp, int64_t tokens, const int64_t* documents);

// Per source rank: whether its block is fully hidden from `rank`'s queries (no visible pair:
// causal with its smallest key position after every query position, or no document in common),
// and the visible (query, key) pairs it holds. all_documents: P x tokens ids, or null.
struct RingVisibility {
  std::vector<char> hidden;
  std::vector<int64_t> pairs;
};
RingVisibility ring_visibility(const int64_t* all_positions, int cp_size, int64_t tokens, int rank, bool causal,
                               const int64_t* all_documents = nullptr);

class RingAttention {
 public:
  // Collective over `cp`: all-gathers every rank's positions (n each, from `positions`) so
  // each rank knows which incoming blocks are fully hidden. Allocates every buffer here, so
  // workspace_bytes() is the ring's whole footprint. Throws bad_input on inconsistent shapes.
  // documents: this rank's n document ids (packed documents), or null on every rank.
  RingAttention(Communicator& cp, const RingConfig& cfg, const int64_t* positions,
                const int64_t* documents = nullptr);

  // Dense float32 [b, H, n, d] (q, out) and [b, Hkv, n, d] (k, v); lse [b, H, n].
  void forward(const float* q, const float* k, const float* v, float* out, float* lse);
  // Uses the final out and lse of forward(); overwrites grad_q [b,H,n,d], grad_k, grad_v
  // [b,Hkv,n,d]. With the materialised kernel, forward() must have run on the same inputs
  // (its kept scores are reused).
  void backward(const float* q, const float* k, const float* v, const float* out, const float* lse,
                const float* grad_out, float* grad_q, float* grad_k, float* grad_v);

  const RingPassTiming& last_forward() const { return fwd_timing_; }
  const RingPassTiming& last_backward() const { return bwd_timing_; }
  RingWorkspaceBytes workspace_bytes() const;
  void set_trace(TraceRecorder* trace) { trace_ = trace; }
  const RingConfig& config() const { return cfg_; }
  // Global positions of CP rank `rank`'s tokens.
  const int64_t* positions_of(int rank) const { return all_positions_.data() + static_cast<size_t>(rank) * n_; }
  bool block_hidden(int src_rank) const { return hidden_[static_cast<size_t>(src_rank)] != 0; }
  // Document ids of CP rank `rank`'s tokens, or null without packed documents.
  const int64_t* documents_of(int rank) const {
    return all_documents_.empty() ? nullptr : all_documents_.data() + static_cast<size_t>(rank) * n_;
  }

 private:
  struct CpuForwardOps;   // the CPU backend of ring_schedule.hpp
  struct CpuBackwardOps;
  kernels::BlockParams block_params(const float* q, const float* k, const float* v, int src) const;
  void trace_step(TracePhase phase, const RingStepTiming& st, double c0, double c1, double w0, double w1);

  Communicator& cp_;
  RingConfig cfg_;
  int rank_ = 0, size_ = 1;
  size_t n_ = 0;                        // tokens per rank
  size_t q_elems_ = 0, kv_elems_ = 0;   // b*H*n*d, b*Hkv*n*d
  size_t rows_ = 0;                     // b*H*n
  std::vector<int64_t> all_positions_;  // P x n
  std::vector<int64_t> all_documents_;  // P x n, empty without packed documents
  std::vector<char> hidden_;            // per source rank: fully hidden for this rank's queries
  std::vector<int64_t> pairs_;          // per source rank: visible pairs
  std::vector<float> kv_buf_[2];        // [K | V] of the block in hand / the next block
  std::vector<float> dkv_recv_[2], dkv_work_[2];  // incoming accumulators; own contribution + sum
  std::vector<float> blk_out_, blk_lse_, delta_;
  std::vector<float> scores_;           // materialised: per source block b*H*n*n, P blocks
  RingPassTiming fwd_timing_, bwd_timing_;
  TraceRecorder* trace_ = nullptr;
};

}  // namespace ringplan::runtime
