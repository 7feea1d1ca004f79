// Measured memory of this process, from Linux /proc (the runtime's "peak memory per rank").
//   current_rss_bytes: VmRSS, resident now.
//   peak_rss_bytes:    VmHWM, the high-water mark of the resident set.
//   reset_peak_rss:    writes "5" to /proc/self/clear_refs, which resets VmHWM to the current
//                      RSS (Linux >= 4.0); returns false where that is not allowed, and the
//                      caller then reports the peak since process start instead.
// Allocations that are never touched do not count in RSS; the runtime fills every buffer it
// allocates, so RSS deltas measure its buffers (plus allocator and MPI overheads).
#pragma once
#include <cstdint>

namespace ringplan::runtime {

int64_t current_rss_bytes();
// MemAvailable of /proc/meminfo: what this host can still give processes; -1 if unknown.
int64_t available_memory_bytes();
int64_t peak_rss_bytes();
bool reset_peak_rss();

}  // namespace ringplan::runtime
