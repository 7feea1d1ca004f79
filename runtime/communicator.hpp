// The runtime's transport interface. The ring code talks only to this; MPI (CPU buffers)
// implements it now and NCCL (GPU buffers) behind the same calls, so ring attention does not
// change with the transport.
//
// Invariants: a Communicator is one process group (world or a sub-group from split());
// ranks are group-local. Requests are completed exactly once by wait()/wait_all().
// Every blocking call honours the fault timeout: if a peer is dead or stalled past
// `timeout_s`, the call throws ringplan::Error(runtime) naming the peer rank and host, and
// the implementation aborts the job so that no other rank hangs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace ringplan::runtime {

enum class Device { cpu, cuda };

class Request {
 public:
  virtual ~Request() = default;
};
using RequestPtr = std::unique_ptr<Request>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Device device() const = 0;
  virtual std::string host() const = 0;                 // this rank's host name
  virtual std::string describe_rank(int rank) const = 0;  // "rank 3 (host node07)"

  // Non-blocking point-to-point on raw bytes; the buffer must stay valid until wait().
  virtual RequestPtr post_send(const void* buf, size_t bytes, int dst, int tag) = 0;
  virtual RequestPtr post_recv(void* buf, size_t bytes, int src, int tag) = 0;
  // Starts every operation posted so far. MPI starts each at post time (no-op here); NCCL has
  // no tags and must launch a ring step's sends and receives together as one group, so it
  // queues them until this call (or the first wait on one of them). The ring posts a step's
  // transfers, calls start_posted(), then computes: the transfers overlap the compute.
  virtual void start_posted() {}
  // Completes `r` (a null request is already complete) and resets it.
  virtual void wait(RequestPtr& r) = 0;
  virtual void wait_all(std::vector<RequestPtr>& rs) = 0;

  // Collectives on float32 / float64 / int64 buffers (in place).
  virtual void all_reduce_sum(float* buf, size_t count) = 0;
  virtual void all_reduce_sum(double* buf, size_t count) = 0;
  virtual void all_reduce_max(double* buf, size_t count) = 0;
  virtual void all_gather(const void* send, void* recv, size_t bytes_per_rank) = 0;
  // recv[0, count) = sum over the group's ranks of their send[rank()*count, (rank()+1)*count)
  // (send holds size()*count values). The training step's sequence-parallel and ZeRO paths.
  // A transport without it says so instead of reducing wrongly (its buffers may be device
  // memory, which a host-side fallback could not touch). Inline, like every default here: the
  // NCCL library implements this interface without linking the MPI runtime.
  virtual void reduce_scatter_sum(const float*, float*, size_t) {
    throw Error(ErrorKind::runtime, "reduce_scatter_sum: not implemented by this communicator");
  }
  virtual void reduce_scatter_sum(const double*, double*, size_t) {
    throw Error(ErrorKind::runtime, "reduce_scatter_sum: not implemented by this communicator");
  }
  // Non-blocking forms, completed by wait(): the gradient reduction overlaps the backward with
  // them. A transport without non-blocking collectives runs them at once and returns null.
  virtual RequestPtr post_all_reduce_sum(float* buf, size_t count) {
    all_reduce_sum(buf, count);
    return nullptr;
  }
  virtual RequestPtr post_all_reduce_sum(double* buf, size_t count) {
    all_reduce_sum(buf, count);
    return nullptr;
  }
  virtual RequestPtr post_reduce_scatter_sum(const float* send, float* recv, size_t count_per_rank) {
    reduce_scatter_sum(send, recv, count_per_rank);
    return nullptr;
  }
  virtual RequestPtr post_reduce_scatter_sum(const double* send, double* recv, size_t count_per_rank) {
    reduce_scatter_sum(send, recv, count_per_rank);
    return nullptr;
  }
  // In place: once complete, buf[rank() * count, (rank() + 1) * count) holds the sum over the
  // group's ranks of that block of their buf (each buf holds size() * count values); the rest of
  // buf is undefined. ZeRO-1's gradient reduction: the rank's reduced shard stays inside its
  // gradient buffer, as Megatron-LM's distributed optimizer reduces it, so no second buffer is
  // held. A transport without it says so (a host-side copy could not touch device memory).
  virtual RequestPtr post_reduce_scatter_sum_in_place(float*, size_t) {
    throw Error(ErrorKind::runtime, "post_reduce_scatter_sum_in_place: not implemented by this communicator");
  }
  virtual RequestPtr post_reduce_scatter_sum_in_place(double*, size_t) {
    throw Error(ErrorKind::runtime, "post_reduce_scatter_sum_in_place: not implemented by this communicator");
  }
  // Non-blocking all_gather, completed by wait(): ZeRO-3 gathers the next layer's parameters
  // while this one computes. A transport without it gathers at once and returns null.
  virtual RequestPtr post_all_gather(const void* send, void* recv, size_t bytes_per_rank) {
    all_gather(send, recv, bytes_per_rank);
    return nullptr;
  }
  // Drives a posted request without blocking; true (and r reset: completed exactly once) when
  // it has completed, true for null. MPI advances a non-blocking collective only inside MPI
  // calls, so a caller that computes between post and wait calls this between its operators.
  // A transport that cannot test says false, and wait() completes the request.
  virtual bool test(RequestPtr& r) { return !r; }
  // recv[r * bytes_per_rank, (r+1) * bytes_per_rank) = rank r's send[rank() * bytes_per_rank, ...): every
  // rank sends a different block of `bytes_per_rank` to each rank (send and recv hold size() blocks; they
  // must not overlap). All-to-all CP (runtime/alltoall_attention.hpp). A transport without it says so.
  virtual void all_to_all(const void*, void*, size_t) {
    throw Error(ErrorKind::runtime, "all_to_all: not implemented by this communicator");
  }
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // A sub-group: ranks with the same color, ordered by key (as MPI_Comm_split).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Stop the whole job now with a message (used on faults); never returns.
  [[noreturn]] virtual void abort(const std::string& why) = 0;

  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double t) { timeout_s_ = t; }

 protected:
  double timeout_s_ = 60.0;
};

}  // namespace ringplan::runtime
