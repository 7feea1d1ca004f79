// The ring attention schedule, shared by every device: which block is in hand at each step,
// which transfers are posted when, when they are waited for, and what is timed. It is the one
// copy of the ring logic described in ring_attention.hpp; the CPU path (ring_attention.cpp) and
// the CUDA path (runtime/gpu/cuda_ring.cpp) differ only in the Ops they pass.
//
// Ops (a backend: buffers and kernels of one device). The schedule treats buffers as opaque
// addresses it hands to the communicator:
//   void   stage_kv();                  copy this rank's own K, V into kv_buffer(0) (P > 1)
//   void*  kv_buffer(int i);            [K | V] double buffer, i in {0, 1}
//   size_t kv_bytes() const;            bytes of one [K | V] message
//   void   forward_block(int buf, int src, bool first);
//                                       compute the block from rank `src` held in kv_buffer(buf)
//                                       (buf = -1: the caller's own K, V, P = 1); first: write
//                                       (O, lse) directly, else merge into the running result
//   void   forward_empty();             no block was computed (unreachable: a query sees itself)
//   void   fence();                     returns once the compute issued so far has finished
//                                       (CPU: nothing to do; GPU: the time stamps need it)
//   void   backward_begin();            D = rowsum(dO * O), dQ = 0
//   void*  dkv_recv(int i);             incoming [dK | dV] accumulators, i in {0, 1}
//   void*  dkv_work(int i);             own contribution + incoming sum, i in {0, 1}
//   size_t dkv_bytes() const;           bytes of one [dK | dV] message
//   void   backward_block(int buf, int src, int par, bool skipped);
//                                       zero the contribution dkv_work(par) (par = -1: the
//                                       caller's dK, dV, P = 1), then, unless skipped, add this
//                                       block's dQ, dK, dV
//   void   accumulate(int par);         dkv_work(par) += dkv_recv(par)
//   void   backward_finish(int i);      caller's dK, dV <- dkv_recv(i) (P > 1)
//
// Message order (needed by NCCL, which has no tags and matches the operations between a pair of
// ranks in issue order, each group launched as one unit): every step's sends and receives are
// posted, then started together with Communicator::start_posted(). Within a step, a rank posts
// the receive of the incoming dK, dV accumulator BEFORE the K, V receive, because its left
// neighbour's queue holds the accumulator send (posted at the end of the previous step) before
// the K, V send. The complete dK, dV of the last step travel in a final group of their own
// (send and receive together), so no group ever waits for a later group of a neighbour.
#pragma once
#include <chrono>
#include <cstdint>
#include <vector>

#include "runtime/communicator.hpp"
#include "runtime/ring_attention.hpp"

namespace ringplan::runtime::ring_detail {

// Tags per message kind; MPI keeps messages between one pair with one tag in order, so a kind
// needs no step number (NCCL ignores tags and relies on the posting order above).
constexpr int kTagKv = 11;
constexpr int kTagDkv = 12;       // partial dK, dV accumulator moving on to the next rank
constexpr int kTagDkvFinal = 13;  // complete dK, dV returning to the block's owner

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Per step: (timing, compute start, compute end, wait start, wait end) in steady-clock seconds.
template <class Ops, class Trace>
void forward_pass(Communicator& cp, Ops& ops, const std::vector<char>& hidden, const std::vector<int64_t>& pairs,
                  RingPassTiming& timing, Trace&& trace) {
  const int P = cp.size(), rank = cp.rank();
  const int next = (rank + 1) % P, prev = (rank - 1 + P) % P;
  const double t_start = now_s();
  timing.steps.assign(static_cast<size_t>(P), RingStepTiming{});
  if (P > 1) ops.stage_kv();  // the block in hand travels as one [K | V] message
  bool have_result = false;    // false until a block wrote (O, lse) directly
  int cur = 0;
  for (int step = 0; step < P; ++step) {
    const int src = (rank - step + P) % P;  // the block in hand came from rank r - step
    RingStepTiming& st = timing.steps[static_cast<size_t>(step)];
    st.step = step;
    st.src_rank = src;
    st.skipped = hidden[static_cast<size_t>(src)] != 0;
    st.visible_pairs = pairs[static_cast<size_t>(src)];
    // Post the next block's receive and this block's send before computing (double buffer).
    std::vector<RequestPtr> reqs;
    if (step < P - 1) {
      reqs.push_back(cp.post_recv(ops.kv_buffer(1 - cur), ops.kv_bytes(), prev, kTagKv));
      reqs.push_back(cp.post_send(ops.kv_buffer(cur), ops.kv_bytes(), next, kTagKv));
      cp.start_posted();
    }
    const double c0 = now_s();
    if (!st.skipped) {
      ops.forward_block(P > 1 ? cur : -1, src, !have_result);
      have_result = true;
    }
    ops.fence();
    const double c1 = now_s();
    cp.wait_all(reqs);
    const double w1 = now_s();
    st.compute_s = c1 - c0;
    st.comm_wait_s = w1 - c1;
    trace(st, c0, c1, c1, w1);
    cur = 1 - cur;
  }
  if (!have_result) ops.forward_empty();
  timing.total_s = now_s() - t_start;
}

template <class Ops, class Trace>
void backward_pass(Communicator& cp, Ops& ops, const std::vector<char>& hidden, const std::vector<int64_t>& pairs,
                   RingPassTiming& timing, Trace&& trace) {
  const int P = cp.size(), rank = cp.rank();
  const int next = (rank + 1) % P, prev = (rank - 1 + P) % P;
  const double t_start = now_s();
  timing.steps.assign(static_cast<size_t>(P), RingStepTiming{});
  ops.backward_begin();
  if (P > 1) ops.stage_kv();
  RequestPtr dkv_send[2];  // send of dkv_work(i); completed before dkv_work(i) is reused
  int cur = 0;
  for (int step = 0; step < P; ++step) {
    const int src = (rank - step + P) % P;
    const int par = step % 2;
    RingStepTiming& st = timing.steps[static_cast<size_t>(step)];
    st.step = step;
    st.src_rank = src;
    st.skipped = hidden[static_cast<size_t>(src)] != 0;
    st.visible_pairs = pairs[static_cast<size_t>(src)];
    double wait_s = 0;
    // The accumulator of block `src` comes from r-1, which held that block at step-1. Posted
    // first: see "Message order" above.
    RequestPtr dkv_in;
    if (step >= 1) dkv_in = cp.post_recv(ops.dkv_recv(par), ops.dkv_bytes(), prev, kTagDkv);
    std::vector<RequestPtr> kv_reqs;
    if (step < P - 1) {
      kv_reqs.push_back(cp.post_recv(ops.kv_buffer(1 - cur), ops.kv_bytes(), prev, kTagKv));
      kv_reqs.push_back(cp.post_send(ops.kv_buffer(cur), ops.kv_bytes(), next, kTagKv));
    }
    cp.start_posted();  // also launches the accumulator send queued at the end of step-1
    const double w0 = now_s();
    cp.wait(dkv_send[par]);  // sent two steps ago: dkv_work(par) is free again
    wait_s += now_s() - w0;

    const double c0 = now_s();
    // This rank's contribution to block src: into scratch (P > 1) or straight into dK, dV (P = 1).
    ops.backward_block(P > 1 ? cur : -1, src, P > 1 ? par : -1, st.skipped);
    ops.fence();
    double c1 = now_s();
    if (dkv_in) {
      const double w1 = now_s();
      cp.wait(dkv_in);
      const double w2 = now_s();
      wait_s += w2 - w1;
      ops.accumulate(par);
      ops.fence();
      c1 = now_s();
      st.compute_s -= w2 - w1;  // the add counts as compute, the wait does not
    }
    st.compute_s += c1 - c0;
    // Queued; it leaves with the next step's group (or with the final group below).
    if (P > 1 && step < P - 1) dkv_send[par] = cp.post_send(ops.dkv_work(par), ops.dkv_bytes(), next, kTagDkv);
    const double w3 = now_s();
    cp.wait_all(kv_reqs);
    const double w4 = now_s();
    wait_s += w4 - w3;
    st.comm_wait_s = wait_s;
    trace(st, c0, c1, c1, w4);
    cur = 1 - cur;
  }
  // P == 1: the kernel already wrote this rank's complete dK, dV into the caller's buffers.
  if (P > 1) {
    // The last step's sum is complete: it goes to r+1, the owner of the block in hand at the last
    // step (src = r - (P-1) = r + 1 mod P), and this rank's own complete dK, dV arrive from r-1.
    // dkv_recv(P % 2) held step P-2's accumulator, consumed at step P-2, so it takes them.
    const int last_par = (P - 1) % 2;
    const int home = P % 2;
    const double w0 = now_s();
    RequestPtr final_recv = cp.post_recv(ops.dkv_recv(home), ops.dkv_bytes(), prev, kTagDkvFinal);
    RequestPtr final_send = cp.post_send(ops.dkv_work(last_par), ops.dkv_bytes(), next, kTagDkvFinal);
    cp.start_posted();
    cp.wait(final_recv);
    cp.wait(final_send);
    cp.wait(dkv_send[0]);
    cp.wait(dkv_send[1]);
    timing.steps.back().comm_wait_s += now_s() - w0;
    ops.backward_finish(home);
  }
  timing.total_s = now_s() - t_start;
}

}  // namespace ringplan::runtime::ring_detail
