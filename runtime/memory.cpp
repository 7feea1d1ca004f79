#include "runtime/memory.hpp"

#include <cstdio>
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

}  // namespace ringplan::runtime
