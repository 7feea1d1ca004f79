// MPI communicator: non-blocking point-to-point and collectives, all completed by polling
// MPI_Test against the fault deadline (see mpi_communicator.hpp).
#include "runtime/mpi_communicator.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {

struct MpiRequest final : Request {
  MPI_Request req = MPI_REQUEST_NULL;
  std::string what;  // for the timeout message: "recv of 4096 bytes from rank 2 (host a), tag 11"
  // Run once when the request completes (wait or a successful test), before it is released.
  std::function<void()> on_complete;
};

// The MPI request behind `r` (non-null); a request from another communicator is refused, naming `op`.
MpiRequest& mpi_request(RequestPtr& r, const char* op) {
  auto* m = dynamic_cast<MpiRequest*>(r.get());
  if (m == nullptr) throw Error(ErrorKind::runtime, fmt::format("{}: request was not created by this MPI communicator", op));
  return *m;
}

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(ErrorKind::runtime, fmt::format("{} failed: {}", call, std::string(msg, static_cast<size_t>(len))));
}

std::string processor_name() {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  return std::string(name, static_cast<size_t>(len));
}

// Polling a request until it completes. OpenMPI advances a non-blocking collective (libnbc)
// only inside MPI calls, so every pause between two MPI_Test calls stalls each of its rounds.
// With at most one rank per core (`spin`), the poll never sleeps: a 1 MiB all-reduce over two
// ranks then takes the same time in calibrate as inside a training step. When the node holds
// more ranks than cores, a spinning rank would take the core from a rank that computes, so the
// poll sleeps 50 us between tests after the first 200 us.
template <class Test>
bool poll_until(Test&& done, double timeout_s, bool spin) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto spin_until = start + std::chrono::microseconds(200);
  const auto deadline = start + std::chrono::duration<double>(timeout_s);
  while (true) {
    if (done()) return true;
    const auto now = clock::now();
    if (now >= deadline) return false;
    if (!spin && now > spin_until) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// True when this node runs more ranks of `comm` than it has online processors (collective
// over `comm`). hardware_concurrency counts the online CPUs, not this rank's binding.
bool node_oversubscribed(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) return true;
  int local = 1;
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  const unsigned cpus = std::thread::hardware_concurrency();
  return cpus == 0 || static_cast<unsigned>(local) > cpus;
}

}  // namespace

// A thread that ends the process when a phase (MPI start-up, teardown) outlasts its timeout.
// It never calls MPI (MPI_THREAD_FUNNELED): it prints and calls _exit, which is safe however
// the main thread is stuck. Invariant: at most one phase is armed at a time.
class Watchdog {
 public:
  Watchdog() : thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // `rank` is a text because MPI cannot tell it before MPI_Init returns (then the launcher's
  // environment does).
  void arm(std::string phase, double timeout_s, std::string rank) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      phase_ = std::move(phase);
      rank_ = std::move(rank);
      timeout_s_ = timeout_s;
      deadline_ = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s));
      armed_ = true;
    }
    cv_.notify_all();
  }
  void disarm() {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && armed_ && !stop_ &&
          std::chrono::steady_clock::now() >= deadline_)
        fire();
    }
  }
  [[noreturn]] void fire() {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    std::fprintf(stderr,
                 "ringplan: rank %s (host %s): timeout after %.1f s in %s; a rank is stalled or dead "
                 "(limit: --timeout or env RINGPLAN_TIMEOUT_S); exiting\n",
                 rank_.c_str(), host, timeout_s_, phase_.c_str());
    std::fflush(stderr);
    _exit(1);  // not exit(): the main thread is inside MPI, and atexit handlers would wait on it
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  bool armed_ = false, stop_ = false;
  std::string phase_, rank_;
  double timeout_s_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  std::thread thread_;  // last: started once every member above is initialised
};

namespace {
// This process's rank before MPI_Init has returned: the launcher's environment (OpenMPI,
// PMIx, MPICH/PMI), else "?".
std::string launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') return v;
  return "?";
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv, double timeout_s) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  if (timeout_s > 0) {
    timeout_s_ = timeout_s;
  } else {
    try {
      timeout_s_ = default_timeout_s();
    } catch (const Error&) {
      timeout_s_ = 60.0;  // the caller reports the bad variable once MPI is up (cli/mpi_command.hpp)
    }
  }
  watchdog_ = std::make_unique<Watchdog>();
  watchdog_->arm("MPI start-up (MPI_Init)", timeout_s_, launcher_rank());
  int provided = 0;
  // Only the main thread calls MPI (kernels and the watchdog may use threads, never MPI).
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  watchdog_->disarm();
  check_mpi(rc, "MPI_Init_thread");
  owns_ = true;
}

MpiSession::~MpiSession() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  watchdog_->arm("MPI teardown (MPI_Finalize)", timeout_s_, std::to_string(rank));
  MPI_Finalize();
  watchdog_->disarm();
}

double check_timeout_s(double t, const std::string& source) {
  if (!std::isfinite(t) || t <= 0.0 || t > kMaxTimeoutS)
    throw bad_input(fmt::format("{} {}: must be a finite number of seconds in (0, {:g}] (e.g. 60)", source, t,
                                kMaxTimeoutS));
  return t;
}

double default_timeout_s() {
  const char* env = std::getenv("RINGPLAN_TIMEOUT_S");
  if (env == nullptr || *env == '\0') return 60.0;
  char* end = nullptr;
  const double t = std::strtod(env, &end);
  if (end == env || *end != '\0' || !std::isfinite(t) || t <= 0.0 || t > kMaxTimeoutS)
    throw bad_input(fmt::format("RINGPLAN_TIMEOUT_S='{}': must be a finite number of seconds in (0, {:g}] (e.g. 60)",
                                env, kMaxTimeoutS));
  return t;
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  MPI_Comm dup = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup");
  const bool spin = !node_oversubscribed(dup);
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(dup, spin));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool spin) : comm_(comm), spin_(spin) {
  // A bad RINGPLAN_TIMEOUT_S is bad input reported once, by rank 0, after every rank agreed on
  // it (cli/mpi_command.hpp); thrown here it would leave every rank at once, each printing it,
  // and end the job before rank 0 may have printed. Callers set the checked timeout next.
  try {
    timeout_s_ = default_timeout_s();
  } catch (const Error&) {
    timeout_s_ = 60.0;
  }
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  world_ranks_.assign(static_cast<size_t>(size_), 0);
  all_gather(&world_rank, world_ranks_.data(), sizeof(int));
  // Host names travel as fixed-size records so one all_gather serves every rank.
  std::vector<char> mine(MPI_MAX_PROCESSOR_NAME, '\0');
  const std::string name = processor_name();
  std::copy(name.begin(), name.end(), mine.begin());
  std::vector<char> all(static_cast<size_t>(MPI_MAX_PROCESSOR_NAME) * static_cast<size_t>(size_));
  all_gather(mine.data(), all.data(), MPI_MAX_PROCESSOR_NAME);
  hosts_.resize(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) hosts_[static_cast<size_t>(r)] = std::string(all.data() + r * MPI_MAX_PROCESSOR_NAME);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::string MpiCommunicator::describe_rank(int rank) const {
  if (rank < 0 || rank >= size_) return fmt::format("rank {} (out of range 0..{})", rank, size_ - 1);
  const size_t i = static_cast<size_t>(rank);
  const std::string host = hosts_.empty() ? std::string("?") : hosts_[i];
  if (world_ranks_.empty() || world_ranks_[i] == rank) return fmt::format("rank {} (host {})", rank, host);
  return fmt::format("rank {} (world rank {}, host {})", rank, world_ranks_[i], host);
}

int MpiCommunicator::checked_count(size_t bytes, const char* op) const {
  if (bytes > static_cast<size_t>(INT_MAX))
    throw bad_input(fmt::format("{}: message of {} bytes exceeds MPI's int count ({} bytes); use fewer tokens per rank",
                                op, bytes, INT_MAX));
  return static_cast<int>(bytes);
}

RequestPtr MpiCommunicator::post_send(const void* buf, size_t bytes, int dst, int tag) {
  if (dst < 0 || dst >= size_) throw bad_input(fmt::format("post_send: destination {} not in 0..{}", dst, size_ - 1));
  auto r = std::make_unique<MpiRequest>();
  r->what = fmt::format("send of {} bytes to {}, tag {}", bytes, describe_rank(dst), tag);
  check_mpi(MPI_Isend(buf, checked_count(bytes, "post_send"), MPI_BYTE, dst, tag, comm_, &r->req), "MPI_Isend");
  return r;
}

RequestPtr MpiCommunicator::post_recv(void* buf, size_t bytes, int src, int tag) {
  if (src < 0 || src >= size_) throw bad_input(fmt::format("post_recv: source {} not in 0..{}", src, size_ - 1));
  auto r = std::make_unique<MpiRequest>();
  r->what = fmt::format("recv of {} bytes from {}, tag {}", bytes, describe_rank(src), tag);
  check_mpi(MPI_Irecv(buf, checked_count(bytes, "post_recv"), MPI_BYTE, src, tag, comm_, &r->req), "MPI_Irecv");
  return r;
}

void MpiCommunicator::poll(MPI_Request& req, const std::string& what) {
  int rc = MPI_SUCCESS;
  const bool done = poll_until(
      [&] {
        int flag = 0;
        rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
        return rc != MPI_SUCCESS || flag != 0;
      },
      timeout_s_, spin_);
  if (rc != MPI_SUCCESS) check_mpi(rc, "MPI_Test");
  if (!done)
    abort(fmt::format("timeout after {:.1f} s waiting for {}; that peer is dead or stalled "
                      "(limit: --timeout or env RINGPLAN_TIMEOUT_S)",
                      timeout_s_, what));
}

void MpiCommunicator::wait(RequestPtr& r) {
  if (!r) return;
  MpiRequest& m = mpi_request(r, "wait");
  poll(m.req, m.what);
  if (m.on_complete) m.on_complete();
  r.reset();  // completed exactly once
}

void MpiCommunicator::wait_all(std::vector<RequestPtr>& rs) {
  // Waiting one by one is equivalent to MPI_Waitall here: every request was already posted,
  // and the deadline is per request, which bounds the total by count * timeout.
  for (auto& r : rs) wait(r);
  rs.clear();
}

void MpiCommunicator::all_reduce_sum(float* buf, size_t count) {
  MPI_Request req;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count, "all_reduce_sum"), MPI_FLOAT, MPI_SUM, comm_, &req),
            "MPI_Iallreduce");
  poll(req, fmt::format("all_reduce_sum of {} floats over {} ranks", count, size_));
}

void MpiCommunicator::all_reduce_sum(double* buf, size_t count) {
  MPI_Request req;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count, "all_reduce_sum"), MPI_DOUBLE, MPI_SUM, comm_, &req),
            "MPI_Iallreduce");
  poll(req, fmt::format("all_reduce_sum of {} doubles over {} ranks", count, size_));
}

void MpiCommunicator::all_reduce_max(double* buf, size_t count) {
  MPI_Request req;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count, "all_reduce_max"), MPI_DOUBLE, MPI_MAX, comm_, &req),
            "MPI_Iallreduce");
  poll(req, fmt::format("all_reduce_max of {} doubles over {} ranks", count, size_));
}

namespace {
template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
}  // namespace

template <class T>
RequestPtr MpiCommunicator::post_all_reduce_impl(T* buf, size_t count) {
  auto r = std::make_unique<MpiRequest>();
  r->what = fmt::format("all_reduce_sum of {} values over {} ranks", count, size_);
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count, "all_reduce_sum"), mpi_type<T>(), MPI_SUM, comm_,
                           &r->req),
            "MPI_Iallreduce");
  return r;
}

template <class T>
RequestPtr MpiCommunicator::post_reduce_scatter_impl(const T* send, T* recv, size_t count_per_rank) {
  auto r = std::make_unique<MpiRequest>();
  r->what = fmt::format("reduce_scatter_sum of {} values per rank over {} ranks", count_per_rank, size_);
  checked_count(count_per_rank * static_cast<size_t>(size_), "reduce_scatter_sum");
  check_mpi(MPI_Ireduce_scatter_block(send, recv, checked_count(count_per_rank, "reduce_scatter_sum"), mpi_type<T>(),
                                      MPI_SUM, comm_, &r->req),
            "MPI_Ireduce_scatter_block");
  return r;
}

RequestPtr MpiCommunicator::post_all_reduce_sum(float* buf, size_t count) { return post_all_reduce_impl(buf, count); }
RequestPtr MpiCommunicator::post_all_reduce_sum(double* buf, size_t count) { return post_all_reduce_impl(buf, count); }
// MPI_IN_PLACE: the input is the whole receive buffer and the rank's reduced block lands at its
// start (MPI 4.0, 6.11.2); on completion it is moved to the rank's own block.
template <class T>
RequestPtr MpiCommunicator::post_reduce_scatter_in_place_impl(T* buf, size_t count_per_rank) {
  auto r = std::make_unique<MpiRequest>();
  r->what = fmt::format("reduce_scatter_sum (in place) of {} values per rank over {} ranks", count_per_rank, size_);
  checked_count(count_per_rank * static_cast<size_t>(size_), "reduce_scatter_sum");
  check_mpi(MPI_Ireduce_scatter_block(MPI_IN_PLACE, buf, checked_count(count_per_rank, "reduce_scatter_sum"),
                                      mpi_type<T>(), MPI_SUM, comm_, &r->req),
            "MPI_Ireduce_scatter_block");
  const size_t offset = static_cast<size_t>(rank_) * count_per_rank;
  if (offset != 0)
    r->on_complete = [buf, offset, count_per_rank] { std::memmove(buf + offset, buf, count_per_rank * sizeof(T)); };
  return r;
}

RequestPtr MpiCommunicator::post_reduce_scatter_sum_in_place(float* buf, size_t n) {
  return post_reduce_scatter_in_place_impl(buf, n);
}
RequestPtr MpiCommunicator::post_reduce_scatter_sum_in_place(double* buf, size_t n) {
  return post_reduce_scatter_in_place_impl(buf, n);
}

RequestPtr MpiCommunicator::post_reduce_scatter_sum(const float* send, float* recv, size_t n) {
  return post_reduce_scatter_impl(send, recv, n);
}
RequestPtr MpiCommunicator::post_reduce_scatter_sum(const double* send, double* recv, size_t n) {
  return post_reduce_scatter_impl(send, recv, n);
}
void MpiCommunicator::reduce_scatter_sum(const float* send, float* recv, size_t n) {
  RequestPtr r = post_reduce_scatter_impl(send, recv, n);
  wait(r);
}
void MpiCommunicator::reduce_scatter_sum(const double* send, double* recv, size_t n) {
  RequestPtr r = post_reduce_scatter_impl(send, recv, n);
  wait(r);
}

void MpiCommunicator::all_gather(const void* send, void* recv, size_t bytes_per_rank) {
  MPI_Request req;
  const int n = checked_count(bytes_per_rank, "all_gather");
  check_mpi(MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &req), "MPI_Iallgather");
  poll(req, fmt::format("all_gather of {} bytes per rank over {} ranks", bytes_per_rank, size_));
}

RequestPtr MpiCommunicator::post_all_gather(const void* send, void* recv, size_t bytes_per_rank) {
  auto r = std::make_unique<MpiRequest>();
  const int n = checked_count(bytes_per_rank, "all_gather");
  r->what = fmt::format("all_gather of {} bytes per rank over {} ranks", bytes_per_rank, size_);
  check_mpi(MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &r->req), "MPI_Iallgather");
  return r;
}

bool MpiCommunicator::test(RequestPtr& r) {
  if (!r) return true;
  int flag = 0;
  MpiRequest& m = mpi_request(r, "test");
  check_mpi(MPI_Test(&m.req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
  if (flag != 0) {
    if (m.on_complete) m.on_complete();
    r.reset();
  }
  return flag != 0;
}

void MpiCommunicator::all_to_all(const void* send, void* recv, size_t bytes_per_rank) {
  MPI_Request req;
  const int n = checked_count(bytes_per_rank, "all_to_all");
  check_mpi(MPI_Ialltoall(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &req), "MPI_Ialltoall");
  poll(req, fmt::format("all_to_all of {} bytes per rank pair over {} ranks", bytes_per_rank, size_));
}

void MpiCommunicator::broadcast(void* buf, size_t bytes, int root) {
  if (root < 0 || root >= size_) throw bad_input(fmt::format("broadcast: root {} not in 0..{}", root, size_ - 1));
  MPI_Request req;
  check_mpi(MPI_Ibcast(buf, checked_count(bytes, "broadcast"), MPI_BYTE, root, comm_, &req), "MPI_Ibcast");
  poll(req, fmt::format("broadcast of {} bytes from {}", bytes, describe_rank(root)));
}

void MpiCommunicator::barrier() {
  MPI_Request req;
  check_mpi(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
  poll(req, fmt::format("barrier over {} ranks", size_));
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  MPI_Comm sub = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::unique_ptr<Communicator>(new MpiCommunicator(sub, spin_));
}

void MpiCommunicator::abort(const std::string& why) {
  const std::string host = hosts_.empty() ? processor_name() : this->host();
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  std::fprintf(stderr, "ringplan: rank %d (host %s): %s; aborting the job\n", world_rank, host.c_str(), why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);  // MPI_Abort does not return; this satisfies [[noreturn]] if it ever did
}

}  // namespace ringplan::runtime
