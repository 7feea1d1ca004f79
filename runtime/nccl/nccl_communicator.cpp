// NCCL communicator: see nccl_communicator.hpp for the stream, grouping and fault rules.
#include "runtime/nccl/nccl_communicator.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "core/error.hpp"
#include "runtime/nccl/nccl_check.hpp"

namespace ringplan::runtime {

namespace nccl_detail {

std::string local_host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  std::ostringstream s;
  s << file << ":" << line << ": host " << local_host_name() << ": CUDA failure in " << call << ": "
    << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ")";
  throw Error(ErrorKind::runtime, s.str());
}

void throw_nccl_error(ncclResult_t res, const char* call, const char* file, int line) {
  std::ostringstream s;
  s << file << ":" << line << ": host " << local_host_name() << ": NCCL failure in " << call << ": "
    << ncclGetErrorString(res);
  const char* last = ncclGetLastError(nullptr);
  if (last && *last) s << " (" << last << ")";
  throw Error(ErrorKind::runtime, s.str());
}

}  // namespace nccl_detail

namespace {

using Clock = std::chrono::steady_clock;

ncclConfig_t nonblocking_config() {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  c.blocking = 0;  // calls return ncclInProgress; we poll with a deadline instead of hanging
  return c;
}

}  // namespace

NcclBootstrap single_process_bootstrap() {
  NcclBootstrap b;
  b.rank = 0;
  b.size = 1;
  b.broadcast_from_root = [](void*, size_t) {};
  b.all_gather = [](const void* send, void* recv, size_t bytes) { std::memcpy(recv, send, bytes); };
  return b;
}

struct NcclCommunicator::Event {
  cudaEvent_t ev = nullptr;
  ~Event() {
    if (ev) cudaEventDestroy(ev);
  }
};

// One queued point-to-point operation. `done` is set when its group is launched.
struct NcclCommunicator::Pending {
  bool is_send = false;
  void* buf = nullptr;
  size_t bytes = 0;
  int peer = 0;
  bool launched = false;
  std::shared_ptr<Event> done;
};

class NcclCommunicator::NcclRequest final : public Request {
 public:
  NcclRequest(std::shared_ptr<Pending> p, const NcclCommunicator* o) : op(std::move(p)), owner(o) {}
  std::shared_ptr<Pending> op;
  const NcclCommunicator* owner;
};

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(const NcclBootstrap& boot, int cuda_device,
                                                           cudaStream_t compute_stream, double timeout_s) {
  if (boot.size < 1 || boot.rank < 0 || boot.rank >= boot.size || !boot.broadcast_from_root || !boot.all_gather) {
    throw bad_input("NcclCommunicator::create: bootstrap needs 0 <= rank < size and both exchange functions (rank " +
                    std::to_string(boot.rank) + ", size " + std::to_string(boot.size) + ")");
  }
  if (!(timeout_s > 0.0)) {
    throw bad_input("NcclCommunicator::create: timeout_s must be > 0, got " + std::to_string(timeout_s));
  }
  int devices = 0;
  RINGPLAN_CUDACHECK(cudaGetDeviceCount(&devices));
  if (cuda_device < 0 || cuda_device >= devices) {
    throw bad_input("NcclCommunicator::create: cuda_device " + std::to_string(cuda_device) + " does not exist (" +
                    std::to_string(devices) + " visible devices: 0.." + std::to_string(devices - 1) + ")");
  }
  RINGPLAN_CUDACHECK(cudaSetDevice(cuda_device));

  ncclUniqueId id{};
  if (boot.rank == 0) RINGPLAN_NCCLCHECK(ncclGetUniqueId(&id));
  boot.broadcast_from_root(&id, sizeof(id));

  constexpr size_t kHostBytes = 256;
  std::vector<char> mine(kHostBytes, '\0'), all(kHostBytes * size_t(boot.size), '\0');
  const std::string me = nccl_detail::local_host_name();
  std::memcpy(mine.data(), me.data(), std::min(me.size(), kHostBytes - 1));
  boot.all_gather(mine.data(), all.data(), kHostBytes);
  std::vector<std::string> hosts;
  for (int r = 0; r < boot.size; ++r) hosts.emplace_back(all.data() + size_t(r) * kHostBytes);

  ncclComm_t comm = nullptr;
  ncclConfig_t config = nonblocking_config();
  RINGPLAN_NCCLCHECK(ncclCommInitRankConfig(&comm, boot.size, id, boot.rank, &config));
  std::unique_ptr<NcclCommunicator> c(
      new NcclCommunicator(comm, cuda_device, compute_stream, timeout_s, std::move(hosts), boot.abort_job));
  c->await_nccl_ready(comm, "ncclCommInitRankConfig");
  int r = -1, n = -1;
  RINGPLAN_NCCLCHECK(ncclCommUserRank(comm, &r));
  RINGPLAN_NCCLCHECK(ncclCommCount(comm, &n));
  c->rank_ = r;
  c->size_ = n;
  return c;
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int cuda_device, cudaStream_t compute_stream, double timeout_s,
                                   std::vector<std::string> hosts, std::function<void(const std::string&)> abort_job)
    : comm_(comm), cuda_device_(cuda_device), compute_stream_(compute_stream), hosts_(std::move(hosts)),
      abort_job_(std::move(abort_job)) {
  timeout_s_ = timeout_s;
  rank_ = 0;
  size_ = int(hosts_.size());
  RINGPLAN_CUDACHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  RINGPLAN_CUDACHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
  RINGPLAN_CUDACHECK(cudaMalloc(reinterpret_cast<void**>(&scratch_), sizeof(float)));
}

NcclCommunicator::~NcclCommunicator() {
  // Never throws. Queued operations that were never started are dropped. A clean finalize is
  // attempted for timeout_s(); if a peer is gone, the communicator is aborted instead.
  if (comm_ && !aborted_) {
    const ncclResult_t fr = ncclCommFinalize(comm_);
    const bool clean = fr == ncclSuccess || fr == ncclInProgress;
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
    ncclResult_t st = ncclInProgress;
    while (clean) {
      if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) break;
      if (st != ncclInProgress) break;
      if (Clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (clean && st == ncclSuccess) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
  } else if (comm_) {
    ncclCommAbort(comm_);
  }
  if (scratch_) cudaFree(scratch_);
  if (compute_ready_) cudaEventDestroy(compute_ready_);
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
}

std::string NcclCommunicator::describe_rank(int rank) const {
  if (rank < 0 || rank >= int(hosts_.size())) return "rank " + std::to_string(rank) + " (not in this group)";
  return "rank " + std::to_string(rank) + " (host " + hosts_[size_t(rank)] + ")";
}

void NcclCommunicator::fail(const std::string& what) {
  const std::string msg = "ringplan: " + describe_rank(rank_) + ": " + what;
  std::fprintf(stderr, "%s\n", msg.c_str());
  if (comm_ && !aborted_) ncclCommAbort(comm_);  // unblocks this rank's NCCL kernels
  aborted_ = true;
  comm_ = nullptr;
  throw Error(ErrorKind::runtime, msg);
}

void NcclCommunicator::check_usable(const char* fn) const {
  if (aborted_ || !comm_) {
    throw Error(ErrorKind::runtime, std::string("NcclCommunicator::") + fn + ": " + describe_rank(rank_) +
                                        ": the communicator was aborted after an earlier failure");
  }
}

void NcclCommunicator::check_peer(int peer, const char* fn) const {
  if (peer < 0 || peer >= size_) {
    throw bad_input(std::string("NcclCommunicator::") + fn + ": peer rank " + std::to_string(peer) +
                    " is outside this group (valid 0.." + std::to_string(size_ - 1) + ")");
  }
}

void NcclCommunicator::check_device_buffer(const void* buf, size_t bytes, const char* fn) const {
  if (bytes == 0) return;
  if (buf == nullptr) {
    throw bad_input(std::string("NcclCommunicator::") + fn + ": buffer is null for " + std::to_string(bytes) + " bytes");
  }
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, buf);
  if (err != cudaSuccess) (void)cudaGetLastError();
  if (err != cudaSuccess || (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)) {
    std::ostringstream s;
    s << "NcclCommunicator::" << fn << ": buffer " << buf
      << " is host memory; the NCCL transport takes device buffers only (Device::cuda)";
    throw bad_input(s.str());
  }
}

void NcclCommunicator::await_nccl_ready(ncclComm_t comm, const std::string& what) {
  const auto t0 = Clock::now();
  for (;;) {
    ncclResult_t st = ncclInProgress;
    const ncclResult_t q = ncclCommGetAsyncError(comm, &st);
    if (q != ncclSuccess) fail(what + ": ncclCommGetAsyncError failed: " + ncclGetErrorString(q));
    if (st == ncclSuccess) return;
    if (st != ncclInProgress) fail(what + ": NCCL error " + ncclGetErrorString(st));
    const double waited_s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (waited_s > timeout_s_) fail("timeout after " + std::to_string(waited_s) + " s in " + what);
    std::this_thread::yield();
  }
}

void NcclCommunicator::await_event(cudaEvent_t ev, const std::string& what) {
  const auto t0 = Clock::now();
  for (;;) {
    const cudaError_t e = cudaEventQuery(ev);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) {
      (void)cudaGetLastError();
      fail(what + ": CUDA error " + cudaGetErrorString(e));
    }
    ncclResult_t st = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st != ncclSuccess && st != ncclInProgress) {
      fail(what + ": NCCL error " + ncclGetErrorString(st));
    }
    const double waited_s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (waited_s > timeout_s_) {
      fail("timeout after " + std::to_string(waited_s) + " s waiting for " + what +
           " (peer dead or stalled; NCCL communicator aborted)");
    }
    std::this_thread::yield();
  }
}

void NcclCommunicator::order_after_compute() {
  RINGPLAN_CUDACHECK(cudaEventRecord(compute_ready_, compute_stream_));
  RINGPLAN_CUDACHECK(cudaStreamWaitEvent(comm_stream_, compute_ready_, 0));
}

RequestPtr NcclCommunicator::post_send(const void* buf, size_t bytes, int dst, int /*tag*/) {
  check_usable("post_send");
  check_peer(dst, "post_send");
  check_device_buffer(buf, bytes, "post_send");
  auto p = std::make_shared<Pending>();
  p->is_send = true;
  p->buf = const_cast<void*>(buf);  // ncclSend takes const void*; stored untyped
  p->bytes = bytes;
  p->peer = dst;
  pending_.push_back(p);
  return std::make_unique<NcclRequest>(std::move(p), this);
}

RequestPtr NcclCommunicator::post_recv(void* buf, size_t bytes, int src, int /*tag*/) {
  check_usable("post_recv");
  check_peer(src, "post_recv");
  check_device_buffer(buf, bytes, "post_recv");
  auto p = std::make_shared<Pending>();
  p->is_send = false;
  p->buf = buf;
  p->bytes = bytes;
  p->peer = src;
  pending_.push_back(p);
  return std::make_unique<NcclRequest>(std::move(p), this);
}

void NcclCommunicator::start_posted() {
  if (pending_.empty()) return;
  check_usable("start_posted");
  order_after_compute();
  RINGPLAN_NCCLCHECK(ncclGroupStart());
  for (const auto& p : pending_) {
    if (p->is_send) {
      RINGPLAN_NCCLCHECK(ncclSend(p->buf, p->bytes, ncclUint8, p->peer, comm_, comm_stream_));
    } else {
      RINGPLAN_NCCLCHECK(ncclRecv(p->buf, p->bytes, ncclUint8, p->peer, comm_, comm_stream_));
    }
  }
  RINGPLAN_NCCLCHECK(ncclGroupEnd());
  await_nccl_ready(comm_, "ncclGroupEnd of " + std::to_string(pending_.size()) + " send/recv");
  auto done = std::make_shared<Event>();
  RINGPLAN_CUDACHECK(cudaEventCreateWithFlags(&done->ev, cudaEventDisableTiming));
  RINGPLAN_CUDACHECK(cudaEventRecord(done->ev, comm_stream_));
  for (auto& p : pending_) {
    p->launched = true;
    p->done = done;
  }
  pending_.clear();
}

void NcclCommunicator::wait(RequestPtr& r) {
  if (!r) return;  // a request never posted or already completed (as MpiCommunicator::wait)
  auto* req = dynamic_cast<NcclRequest*>(r.get());
  if (!req || req->owner != this) {
    throw bad_input("NcclCommunicator::wait: the request comes from another communicator");
  }
  check_usable("wait");
  if (!req->op->launched) start_posted();
  const Pending& p = *req->op;
  await_event(p.done->ev, std::string(p.is_send ? "send of " : "recv of ") + std::to_string(p.bytes) + " bytes " +
                              (p.is_send ? "to " : "from ") + describe_rank(p.peer));
  // Kernels enqueued later on the compute stream see the received data (and may overwrite a
  // sent buffer).
  RINGPLAN_CUDACHECK(cudaStreamWaitEvent(compute_stream_, p.done->ev, 0));
  r.reset();
}

void NcclCommunicator::wait_all(std::vector<RequestPtr>& rs) {
  for (auto& r : rs) {
    if (r) wait(r);
  }
  rs.clear();
}

void NcclCommunicator::run_collective(const std::string& what, const std::function<ncclResult_t()>& issue) {
  check_usable(what.c_str());
  order_after_compute();
  const ncclResult_t res = issue();
  if (res != ncclSuccess && res != ncclInProgress) nccl_detail::throw_nccl_error(res, what.c_str(), __FILE__, __LINE__);
  await_nccl_ready(comm_, what);
  Event done;
  RINGPLAN_CUDACHECK(cudaEventCreateWithFlags(&done.ev, cudaEventDisableTiming));
  RINGPLAN_CUDACHECK(cudaEventRecord(done.ev, comm_stream_));
  await_event(done.ev, what);
}

void NcclCommunicator::all_reduce_sum(float* buf, size_t count) {
  check_device_buffer(buf, count * sizeof(float), "all_reduce_sum");
  run_collective("all_reduce_sum(float)", [&] {
    return ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, comm_, comm_stream_);
  });
}

void NcclCommunicator::all_reduce_sum(double* buf, size_t count) {
  check_device_buffer(buf, count * sizeof(double), "all_reduce_sum");
  run_collective("all_reduce_sum(double)", [&] {
    return ncclAllReduce(buf, buf, count, ncclFloat64, ncclSum, comm_, comm_stream_);
  });
}

void NcclCommunicator::all_reduce_max(double* buf, size_t count) {
  check_device_buffer(buf, count * sizeof(double), "all_reduce_max");
  run_collective("all_reduce_max(double)", [&] {
    return ncclAllReduce(buf, buf, count, ncclFloat64, ncclMax, comm_, comm_stream_);
  });
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t bytes_per_rank) {
  check_device_buffer(send, bytes_per_rank, "all_gather");
  check_device_buffer(recv, bytes_per_rank * size_t(size_), "all_gather");
  run_collective("all_gather", [&] {
    return ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm_, comm_stream_);
  });
}

void NcclCommunicator::broadcast(void* buf, size_t bytes, int root) {
  check_peer(root, "broadcast");
  check_device_buffer(buf, bytes, "broadcast");
  run_collective("broadcast", [&] { return ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, comm_stream_); });
}

void NcclCommunicator::barrier() {
  run_collective("barrier", [&] {
    return ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, comm_stream_);
  });
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  check_usable("split");
  if (color < 0) {
    throw bad_input("NcclCommunicator::split: color must be >= 0, got " + std::to_string(color) +
                    " (every rank joins exactly one sub-group)");
  }
  ncclComm_t child = nullptr;
  ncclConfig_t config = nonblocking_config();
  RINGPLAN_NCCLCHECK(ncclCommSplit(comm_, color, key, &child, &config));
  await_nccl_ready(comm_, "ncclCommSplit (parent)");
  if (!child) fail("ncclCommSplit returned no communicator for color " + std::to_string(color));
  std::unique_ptr<NcclCommunicator> c(
      new NcclCommunicator(child, cuda_device_, compute_stream_, timeout_s_, {hosts_[size_t(rank_)]}, abort_job_));
  c->await_nccl_ready(child, "ncclCommSplit (child)");
  RINGPLAN_NCCLCHECK(ncclCommUserRank(child, &c->rank_));
  RINGPLAN_NCCLCHECK(ncclCommCount(child, &c->size_));
  // Host names of the sub-group: gather each member's parent rank over the new communicator.
  int* dev = nullptr;
  RINGPLAN_CUDACHECK(cudaMalloc(reinterpret_cast<void**>(&dev), sizeof(int) * size_t(c->size_ + 1)));
  std::vector<int> parent(size_t(c->size_), -1);
  try {
    RINGPLAN_CUDACHECK(cudaMemcpy(dev, &rank_, sizeof(int), cudaMemcpyHostToDevice));
    c->all_gather(dev, dev + 1, sizeof(int));
    RINGPLAN_CUDACHECK(cudaMemcpy(parent.data(), dev + 1, sizeof(int) * parent.size(), cudaMemcpyDeviceToHost));
  } catch (...) {
    cudaFree(dev);
    throw;
  }
  cudaFree(dev);
  c->hosts_.clear();
  for (int pr : parent) c->hosts_.push_back(pr >= 0 && pr < size_ ? hosts_[size_t(pr)] : "unknown-host");
  return c;
}

void NcclCommunicator::abort(const std::string& why) {
  std::fprintf(stderr, "ringplan: %s: abort: %s\n", describe_rank(rank_).c_str(), why.c_str());
  std::fflush(stderr);
  if (comm_ && !aborted_) ncclCommAbort(comm_);
  aborted_ = true;
  comm_ = nullptr;
  if (abort_job_) abort_job_(why);
  std::abort();
}

}  // namespace ringplan::runtime
