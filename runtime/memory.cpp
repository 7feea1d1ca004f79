#include "runtime/memory.hpp"

#include <cstdio>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstring>
#include <fstream>
#include <string>

namespace ringplan::runtime {
namespace {

// Reads a "Key:   1234 kB" line of /proc/self/status; -1 when absent.
int64_t status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t klen = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, klen, key) == 0 && line.size() > klen && line[klen] == ':') {
      return std::stoll(line.substr(klen + 1));
    }
  }
  return -1;
}

}  // namespace

int64_t current_rss_bytes() {
  const int64_t kib = status_kib("VmRSS");
  return kib < 0 ? -1 : kib * 1024;
}

int64_t peak_rss_bytes() {
  const int64_t kib = status_kib("VmHWM");
  return kib < 0 ? -1 : kib * 1024;
}

bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

int64_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return -1;
}

bool keep_freed_memory() {
#if defined(__GLIBC__)
  // mallopt returns 1 on success. 32 MiB = glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit (a larger
  // value is refused); a negative trim threshold would wrap, so the largest int stands for never.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 0x7fffffff) == 1;
  const bool pad_ok = mallopt(M_TOP_PAD, 64 * 1024 * 1024) == 1;
  return mmap_ok && trim_ok && pad_ok;
#else
  return false;
#endif
}

}  // namespace ringplan::runtime
