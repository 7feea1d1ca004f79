// Heap accounting for the memory benchmarks: this binary replaces malloc/free & co. with thin
// wrappers around glibc's __libc_* functions that keep the live heap bytes (by
// malloc_usable_size, so allocator rounding is included) and their high-water mark. It sees every
// allocation of every thread: std::vector, Eigen temporaries (Eigen allocates with std::malloc),
// std::thread stacks are NOT included (mmap'ed by pthreads directly).
//
// Use: heap::reset_peak(); run(); heap::peak_bytes() - baseline = bytes the call needed at most.
// Only compiled when RINGPLAN_BENCH_COUNT_MALLOC is defined (not under sanitizers, which
// interpose malloc themselves).
#pragma once
#include <cstdint>

namespace heap {
bool counting_enabled();
int64_t live_bytes();
int64_t peak_bytes();
void reset_peak();  // peak := live
}  // namespace heap
