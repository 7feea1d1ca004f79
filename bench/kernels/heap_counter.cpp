// See heap_counter.hpp. glibc exports __libc_malloc & co., and a malloc defined in the
// executable takes precedence over libc's for every library of the process.
#include "bench/kernels/heap_counter.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>

#ifdef RINGPLAN_BENCH_COUNT_MALLOC
#include <malloc.h>

extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}

namespace {
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

void on_alloc(void* p) {
  if (p == nullptr) return;
  const int64_t now = g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) +
                      static_cast<int64_t>(malloc_usable_size(p));
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void on_free(void* p) {
  if (p != nullptr) g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
}
}  // namespace

extern "C" {
void* malloc(size_t n) {
  void* p = __libc_malloc(n);
  on_alloc(p);
  return p;
}
void free(void* p) {
  on_free(p);
  __libc_free(p);
}
void* calloc(size_t a, size_t b) {
  void* p = __libc_calloc(a, b);
  on_alloc(p);
  return p;
}
void* realloc(void* old, size_t n) {
  on_free(old);
  void* p = __libc_realloc(old, n);
  if (p == nullptr && old != nullptr && n != 0) on_alloc(old);  // failed: old block still live
  else on_alloc(p);
  return p;
}
void* memalign(size_t align, size_t n) {
  void* p = __libc_memalign(align, n);
  on_alloc(p);
  return p;
}
void* aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
int posix_memalign(void** out, size_t align, size_t n) {
  void* p = memalign(align, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}

namespace heap {
bool counting_enabled() { return true; }
int64_t live_bytes() { return g_live.load(); }
int64_t peak_bytes() { return g_peak.load(); }
void reset_peak() { g_peak.store(g_live.load()); }
}  // namespace heap

#else

namespace heap {
bool counting_enabled() { return false; }
int64_t live_bytes() { return 0; }
int64_t peak_bytes() { return 0; }
void reset_peak() {}
}  // namespace heap

#endif
