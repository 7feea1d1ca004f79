// MPI implementation of runtime/communicator.hpp over CPU buffers.
//
// Fault handling: every wait polls MPI_Test against a deadline (never a blocking MPI_Wait),
// and collectives use their non-blocking forms (MPI_Iallreduce, ...) polled the same way.
// When a peer is dead or stalled past timeout_s(), the waiting rank prints
//   "ringplan: rank 0 (host vm): timeout after 3.0 s waiting for recv from rank 2 (host vm) ..."
// to stderr and calls MPI_Abort, which makes mpirun stop every rank: no rank ever hangs.
// The timeout defaults to env RINGPLAN_TIMEOUT_S (else 60 s, also when the variable is invalid:
// the commands check it themselves and report it once); CLI flags override it. MPI
// start-up and teardown are guarded by the same timeout (MpiSession's watchdog).
//
// Usage:
//   ringplan::runtime::MpiSession mpi(&argc, &argv);   // MPI_Init_thread .. MPI_Finalize
//   auto world = ringplan::runtime::MpiCommunicator::world();
#pragma once
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/communicator.hpp"

namespace ringplan::runtime {

class Watchdog;

// RAII for MPI_Init / MPI_Finalize. Safe to construct when MPI is already initialised
// (then it does not finalise).
//
// Start-up and teardown are guarded by a watchdog thread: MPI_Init and MPI_Finalize wait for
// every rank (OpenMPI exchanges connection data, then fences), and no MPI call can time out
// there, so one rank stopped or stalled in start-up or before its MPI_Finalize would hang the
// whole job forever. If MPI_Init_thread or MPI_Finalize has not returned within `timeout_s`
// (<= 0: default_timeout_s(), or 60 s when the environment's value is invalid), the watchdog
// prints "ringplan: rank R (host H): timeout after T s in MPI start-up; ..." (or "teardown")
// and ends the process with _exit(1); mpirun then stops every rank.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv, double timeout_s = 0);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
  double timeout_s_ = 60.0;
  std::unique_ptr<Watchdog> watchdog_;
};

// The largest fault timeout: 10^6 s (11.6 days) keeps every deadline far inside the clocks'
// range; a larger value would mean "never", which is what the timeout exists to prevent.
inline constexpr double kMaxTimeoutS = 1e6;

// Returns `t` when it is a finite number of seconds in (0, kMaxTimeoutS]; otherwise throws
// bad_input naming `source` (a flag or variable, e.g. "--timeout") and the valid range.
double check_timeout_s(double t, const std::string& source);

// Default fault timeout: env RINGPLAN_TIMEOUT_S if set (must be a finite number of seconds in
// (0, kMaxTimeoutS], else bad_input naming the variable), otherwise 60 s.
double default_timeout_s();

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates MPI_COMM_WORLD so the runtime's traffic never mixes with other users of it.
  static std::unique_ptr<MpiCommunicator> world();
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cpu; }
  std::string host() const override { return hosts_[static_cast<size_t>(rank_)]; }
  std::string describe_rank(int rank) const override;

  RequestPtr post_send(const void* buf, size_t bytes, int dst, int tag) override;
  RequestPtr post_recv(void* buf, size_t bytes, int src, int tag) override;
  void wait(RequestPtr& r) override;
  void wait_all(std::vector<RequestPtr>& rs) override;

  void all_reduce_sum(float* buf, size_t count) override;
  void all_reduce_sum(double* buf, size_t count) override;
  void all_reduce_max(double* buf, size_t count) override;
  void reduce_scatter_sum(const float* send, float* recv, size_t count_per_rank) override;
  void reduce_scatter_sum(const double* send, double* recv, size_t count_per_rank) override;
  RequestPtr post_all_reduce_sum(float* buf, size_t count) override;
  RequestPtr post_all_reduce_sum(double* buf, size_t count) override;
  RequestPtr post_reduce_scatter_sum(const float* send, float* recv, size_t count_per_rank) override;
  RequestPtr post_reduce_scatter_sum(const double* send, double* recv, size_t count_per_rank) override;
  RequestPtr post_reduce_scatter_sum_in_place(float* buf, size_t count_per_rank) override;
  RequestPtr post_reduce_scatter_sum_in_place(double* buf, size_t count_per_rank) override;
  void all_gather(const void* send, void* recv, size_t bytes_per_rank) override;
  RequestPtr post_all_gather(const void* send, void* recv, size_t bytes_per_rank) override;
  bool test(RequestPtr& r) override;
  void all_to_all(const void* send, void* recv, size_t bytes_per_rank) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void barrier() override;

  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(const std::string& why) override;

  MPI_Comm comm() const { return comm_; }
  // Rank in MPI_COMM_WORLD of a rank of this group (for messages: the launcher numbers by world rank).
  int world_rank_of(int rank) const { return world_ranks_[static_cast<size_t>(rank)]; }

 private:
  // Takes ownership of comm; `spin`: poll without sleeping (at most one rank per core).
  MpiCommunicator(MPI_Comm comm, bool spin);
  // Polls one request until done or the deadline; on timeout aborts naming `what`.
  void poll(MPI_Request& req, const std::string& what);
  int checked_count(size_t bytes, const char* op) const;
  template <class T>
  RequestPtr post_all_reduce_impl(T* buf, size_t count);
  template <class T>
  RequestPtr post_reduce_scatter_impl(const T* send, T* recv, size_t count_per_rank);
  template <class T>
  RequestPtr post_reduce_scatter_in_place_impl(T* buf, size_t count_per_rank);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool spin_ = false;  // poll without sleeping: the node has a core for every rank
  std::vector<std::string> hosts_;   // host name of each group rank
  std::vector<int> world_ranks_;     // world rank of each group rank
};

}  // namespace ringplan::runtime
