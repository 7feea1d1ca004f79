// Collective timings for calibrate (see measure_collectives.hpp).
#include "runtime/measure_collectives.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <unistd.h>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0.0 : xs[xs.size() / 2];
}

// Bytes a rank streams before each timed CPU collective: twice the last-level cache (sysconf;
// 32 MiB when unknown), at least 64 MiB. Inside a training step every collective follows compute
// that streams the weights and activations, so MPI's shared-memory segments and the peers' data
// are out of cache, while the operand was just written by this rank; a collective timed back to
// back with itself finds everything cached (1 MiB all-reduce over 2 ranks on a 2-core EPYC VM:
// about 240 us back to back, 480 us after 5 ms of streaming compute).
size_t eviction_bytes() {
  long l3 = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
  l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  const size_t llc = l3 > 0 ? static_cast<size_t>(l3) : (size_t{32} << 20);
  return std::max(size_t{64} << 20, 2 * llc);
}

// Reads and writes one float per 64-byte line of `evict`, so the caches hold it afterwards.
void evict_caches(std::vector<float>& evict) {
  for (size_t i = 0; i < evict.size(); i += 16) evict[i] += 1.0f;
}

// The slowest rank's time of `op`, after a barrier, median over `reps`. `evict` non-empty: the
// caches are flushed by streaming it before each repetition (CPU communicators), then
// `produce` writes the collective's input, as the step's operator writes it just before the
// collective: the operand is in this rank's cache, MPI's segments and the peers' data are not.
template <class Produce, class Op>
double time_collective(Communicator& comm, int reps, std::vector<float>& evict, Produce&& produce, Op&& op) {
  std::vector<double> ts;
  for (int i = 0; i < reps; ++i) {
    if (!evict.empty()) evict_caches(evict);
    produce();
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    op();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    comm.all_reduce_max(&t, 1);
    ts.push_back(t);
  }
  return median(ts);
}

}  // namespace

std::vector<CollectivePoint> measure_collectives(Communicator& comm, const std::vector<int64_t>& sizes, int reps) {
  const int n = comm.size(), me = comm.rank();
  std::vector<CollectivePoint> out;
  // Device memory is not cached by the host: only CPU collectives need the eviction.
  std::vector<float> evict(comm.device() == Device::cpu ? eviction_bytes() / sizeof(float) : 0, 0.0f);
  for (int64_t want : sizes) {
    const size_t count = static_cast<size_t>(want / (4 * n)) * static_cast<size_t>(n);  // floats, divisible by n
    if (count == 0) continue;
    const size_t per_rank = count / static_cast<size_t>(n);
    std::vector<float> buf(count), part(per_rank);
    // Exact in float32: small integers. Element i of rank r holds (r + 1) + (i % 7).
    auto fill = [&] {
      for (size_t i = 0; i < count; ++i) buf[i] = static_cast<float>(me + 1) + static_cast<float>(i % 7);
    };
    const float rank_sum = static_cast<float>(n * (n + 1) / 2);
    auto check = [&](const char* what, bool ok) {
      if (!ok)
        throw Error(ErrorKind::runtime, fmt::format("calibrate: {} of {} bytes over {} ranks returned a wrong result on {}",
                                                    what, count * 4, n, comm.describe_rank(me)));
    };
    fill();
    comm.all_reduce_sum(buf.data(), count);
    check("all_reduce", buf[count - 1] == rank_sum + static_cast<float>(n) * static_cast<float>((count - 1) % 7));
    fill();
    comm.reduce_scatter_sum(buf.data(), part.data(), per_rank);
    const size_t first = static_cast<size_t>(me) * per_rank;
    check("reduce_scatter", part[0] == rank_sum + static_cast<float>(n) * static_cast<float>(first % 7));
    std::fill(part.begin(), part.end(), static_cast<float>(me));
    comm.all_gather(part.data(), buf.data(), per_rank * sizeof(float));
    check("all_gather", buf[count - 1] == static_cast<float>(n - 1) && buf[0] == 0.0f);

    CollectivePoint p;
    p.bytes = static_cast<int64_t>(count * sizeof(float));
    auto produce_buf = [&] { fill(); };
    auto produce_part = [&] { std::fill(part.begin(), part.end(), static_cast<float>(me)); };
    p.all_reduce_s = time_collective(comm, reps, evict, produce_buf, [&] { comm.all_reduce_sum(buf.data(), count); });
    p.reduce_scatter_s = time_collective(comm, reps, evict, produce_buf,
                                         [&] { comm.reduce_scatter_sum(buf.data(), part.data(), per_rank); });
    p.all_gather_s = time_collective(comm, reps, evict, produce_part,
                                     [&] { comm.all_gather(part.data(), buf.data(), per_rank * sizeof(float)); });
    out.push_back(p);
  }
  return out;
}

}  // namespace ringplan::runtime
