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

// Makes the C allocator keep freed memory for reuse instead of returning it to the kernel, as a
// training framework's caching allocator does (PyTorch's CUDA caching allocator, its CPU
// allocator's pools). glibc by default serves blocks of 128 KiB and more with mmap (its threshold
// then adapts upward) and trims the heap's top on free, so a step that allocates and frees
// megabyte activations per operator page-faults them again every time, inside its compute and
// its collectives: on a 2-core VM the whole-step sweep's forward compute measured 14-15 % above
// its calibrated prediction and each 1 MiB TP all-reduce 2-3x calibrate's, both back within
// 5 % with this setting. Sets glibc's M_MMAP_THRESHOLD to its maximum (32 MiB on 64-bit;
// larger blocks, allocated once per run, still map), M_TRIM_THRESHOLD to "never" and
// M_TOP_PAD to 64 MiB. Process-wide; call before the run allocates. Returns false where the
// allocator is not glibc's (nothing is changed).
bool keep_freed_memory();

}  // namespace ringplan::runtime
