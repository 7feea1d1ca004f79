// The kernels' worker pool (kernels/cpu_common.hpp parallel_for) when the system refuses a
// thread: it must join the threads it started and throw std::system_error, never destroy a
// joinable std::thread (std::terminate, as `run --threads 1000` under `ulimit -v` did).
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <system_error>

#include "kernels/cpu_common.hpp"

namespace {
// Virtual memory of this process in bytes (/proc/self/statm, first field in pages).
long long vm_bytes() {
  std::ifstream f("/proc/self/statm");
  long long pages = 0;
  f >> pages;
  return pages * sysconf(_SC_PAGESIZE);
}
}  // namespace

TEST_CASE("parallel_for: a thread the system refuses ends in std::system_error, not std::terminate") {
  // In a child process: its address space is capped a little above what it uses, so only a few
  // 8 MiB thread stacks fit. Exit 0: system_error caught; 1: no error (limit ineffective);
  // killed by SIGABRT: std::terminate.
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = static_cast<rlim_t>(vm_bytes() + (64LL << 20));
    if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(3);
    std::atomic<long> done{0};
    try {
      ringplan::kernels::detail::parallel_for(1000, 1000, [&](int64_t, int64_t) { done.fetch_add(1); });
    } catch (const std::system_error& e) {
      const std::string what = e.what();
      _exit(what.find("of 1000 (use fewer threads)") != std::string::npos ? 0 : 4);
    }
    _exit(1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("status " << status << (WIFSIGNALED(status) ? " (killed by a signal: std::terminate?)" : ""));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
