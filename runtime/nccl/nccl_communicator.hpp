// NCCL implementation of runtime/communicator.hpp over DEVICE buffers (Device::cuda).
//
// Streams: NCCL work runs on a communication stream of its own, separate from the compute
// stream the kernels use. Before NCCL touches a buffer, the communication stream waits on an
// event recorded on the compute stream (the data is produced there); after wait(), the compute
// stream waits on the operation's completion event, so later kernels see received data. wait()
// also blocks the host until completion, because that is where the fault timeout is enforced.
//
// Point-to-point: NCCL has no tags and needs matching sends and receives of a ring issued in one
// ncclGroupStart/End group (a send to r+1 alone would block on r+1, which is itself blocked
// sending to r+2). post_send/post_recv therefore queue the operation; the queue is launched as
// one group by start_posted() or by the first wait()/wait_all() on any queued request. The ring
// code posts its step's sends and receives, then calls start_posted() before computing, so the
// transfer overlaps the compute. Operations between one pair of ranks match in posting order.
//
// Faults: the communicator is non-blocking (ncclConfig_t.blocking = 0), so every wait polls
// cudaEventQuery and ncclCommGetAsyncError against a deadline of timeout_s(); on timeout or an
// asynchronous NCCL error it calls ncclCommAbort (which unblocks the GPU work of this rank) and
// throws ringplan::Error(runtime) naming this rank, its host, the peer and its host, like the
// MPI path. The communicator is unusable afterwards.
//
// Bootstrap: the unique id goes from rank 0 to every rank and the host names are gathered
// through an NcclBootstrap (MPI_Bcast / MPI_Allgather in nccl_mpi_bootstrap.hpp; a trivial one
// for a single process), so this file does not depend on MPI.
#pragma once
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/communicator.hpp"

namespace ringplan::runtime {

// How ranks exchange the few bytes NCCL needs before it exists.
struct NcclBootstrap {
  int rank = 0;
  int size = 1;
  // Copies `bytes` at `data` from rank 0 to every rank (collective).
  std::function<void(void* data, size_t bytes)> broadcast_from_root;
  // Gathers `bytes_per_rank` from every rank into `recv` in rank order (collective).
  std::function<void(const void* send, void* recv, size_t bytes_per_rank)> all_gather;
  // Stops every process of the job (e.g. MPI_Abort); empty: std::abort of this process only.
  std::function<void(const std::string& why)> abort_job;
};

// One process, one rank: the id and host names stay local.
NcclBootstrap single_process_bootstrap();

class NcclCommunicator final : public Communicator {
 public:
  // Collective over the bootstrap's ranks. `cuda_device` becomes the current device;
  // `compute_stream` is where the caller's kernels run (nullptr = legacy default stream).
  static std::unique_ptr<NcclCommunicator> create(const NcclBootstrap& boot, int cuda_device,
                                                  cudaStream_t compute_stream, double timeout_s);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda; }
  std::string host() const override { return hosts_[static_cast<size_t>(rank_)]; }
  std::string describe_rank(int rank) const override;

  RequestPtr post_send(const void* buf, size_t bytes, int dst, int tag) override;
  RequestPtr post_recv(void* buf, size_t bytes, int src, int tag) override;
  // Launches every queued send/receive as one NCCL group on the communication stream.
  void start_posted() override;
  void wait(RequestPtr& r) override;
  void wait_all(std::vector<RequestPtr>& rs) override;

  void all_reduce_sum(float* buf, size_t count) override;
  void all_reduce_sum(double* buf, size_t count) override;
  void all_reduce_max(double* buf, size_t count) override;
  void all_gather(const void* send, void* recv, size_t bytes_per_rank) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void barrier() override;

  // ncclCommSplit: same color -> same group, ordered by key. color must be >= 0.
  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(const std::string& why) override;

  cudaStream_t compute_stream() const { return compute_stream_; }
  void set_compute_stream(cudaStream_t s) { compute_stream_ = s; }
  cudaStream_t comm_stream() const { return comm_stream_; }
  ncclComm_t nccl_comm() const { return comm_; }

 private:
  struct Pending;
  struct Event;
  class NcclRequest;

  NcclCommunicator(ncclComm_t comm, int cuda_device, cudaStream_t compute_stream, double timeout_s,
                   std::vector<std::string> hosts, std::function<void(const std::string&)> abort_job);
  // Polls until ncclCommGetAsyncError leaves ncclInProgress (after a non-blocking call).
  void await_nccl_ready(ncclComm_t comm, const std::string& what);
  // Blocks until `ev` completes on the GPU, or times out / sees an NCCL error (then throws).
  void await_event(cudaEvent_t ev, const std::string& what);
  // Makes the communication stream wait for the work enqueued so far on the compute stream.
  void order_after_compute();
  [[noreturn]] void fail(const std::string& what);
  void check_device_buffer(const void* buf, size_t bytes, const char* fn) const;
  void check_peer(int peer, const char* fn) const;
  void check_usable(const char* fn) const;
  // Runs one collective (enqueued by `issue` on comm_stream_) to completion.
  void run_collective(const std::string& what, const std::function<ncclResult_t()>& issue);

  ncclComm_t comm_ = nullptr;
  int cuda_device_ = 0;
  int rank_ = 0;
  int size_ = 1;
  bool aborted_ = false;
  cudaStream_t compute_stream_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;
  std::vector<std::string> hosts_;
  std::function<void(const std::string&)> abort_job_;
  std::vector<std::shared_ptr<Pending>> pending_;
  float* scratch_ = nullptr;  // one float for barrier()
};

}  // namespace ringplan::runtime
