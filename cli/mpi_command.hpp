// Shared start-up and error policy of the commands that run under mpirun (run, calibrate).
#pragma once
#include <fmt/format.h>
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "runtime/memory.hpp"
#include "runtime/mpi_communicator.hpp"

namespace ringplan::cli {

// Initialises MPI and runs `body` on the world communicator. The fault timeout is --timeout
// when given (`timeout_given`), else env RINGPLAN_TIMEOUT_S, else 60 s; both must be finite
// seconds in (0, runtime::kMaxTimeoutS] (bad input otherwise: exit 2). It is resolved before
// MPI starts because the watchdog of MPI start-up and teardown (runtime::MpiSession) uses it.
// Bad input is detected identically on every rank before any communication: rank 0 alone
// reports it and every rank exits 2 after a barrier (mpirun aborts the whole job as soon as one
// rank exits non-zero, so no rank may leave before rank 0 has printed the reason). A runtime
// failure may strike one rank only, and the others would wait for it forever: abort the job.
inline int run_under_mpi(bool timeout_given, double timeout_flag_s,
                         const std::function<int(runtime::MpiCommunicator&)>& body) {
  double timeout_s = 60.0;
  std::exception_ptr bad_timeout;
  try {
    const double env_s = runtime::default_timeout_s();  // a bad env value is an error even with --timeout
    timeout_s = timeout_given ? runtime::check_timeout_s(timeout_flag_s, "--timeout") : env_s;
  } catch (const Error&) {
    bad_timeout = std::current_exception();  // reported once MPI tells which rank is rank 0
  }
  // The runtime's buffers are reused, never returned to the kernel between operators
  // (runtime/memory.hpp keep_freed_memory): measured times are the kernels' and links', not
  // page faults'.
  runtime::keep_freed_memory();
  runtime::MpiSession mpi(nullptr, nullptr, timeout_s);
  auto world = runtime::MpiCommunicator::world();
  world->set_timeout_s(timeout_s);
  // Every rank holds the same bad-input verdict: rank 0 prints it, then all leave together.
  auto bad_input_exit = [&world](const char* what) {
    if (world->rank() == 0) {
      std::fprintf(stderr, "ringplan: error: %s\n", what);
      std::fflush(stderr);
    }
    world->barrier();
    return 2;
  };
  if (bad_timeout) {
    try {
      std::rethrow_exception(bad_timeout);
    } catch (const Error& err) {
      return bad_input_exit(err.what());
    }
  }
  try {
    return body(*world);
  } catch (const Error& err) {
    if (err.kind() == ErrorKind::bad_input) return bad_input_exit(err.what());
    world->abort(err.what());
  } catch (const std::system_error& err) {
    // The system refused a resource (threads, memory maps): a runtime failure, not a bug.
    world->abort(err.what());
  } catch (const std::exception& err) {
    world->abort(std::string("internal error: ") + err.what());
  }
}

// Kernel threads per rank: each is a real thread with its own stack, and more threads than any
// machine has cores only slows the kernels down; 256 keeps a mistyped count from exhausting
// the process's threads or address space.
inline constexpr int kMaxThreads = 256;
inline void check_threads(int threads) {
  if (threads < 1 || threads > kMaxThreads)
    throw bad_input(fmt::format("--threads {}: must be in 1..{} (kernel threads per rank; at most the cores per rank "
                                "are useful)",
                                threads, kMaxThreads));
}

// Checks on rank 0 that it can write `path` (empty: nothing to write) and shares the verdict,
// so every rank throws bad_input together before the measurement: rank 0 reports the reason,
// the others return 2 quietly (run_under_mpi). Only rank 0 writes outputs, so only its file
// system counts. Collective: every rank must call it with the same path.
inline void check_output_on_root(runtime::Communicator& world, const std::string& path, const std::string& what) {
  if (path.empty()) return;
  std::string why;
  if (world.rank() == 0) {
    try {
      check_output_path(path, what);
    } catch (const Error& err) {
      why = err.what();
    }
  }
  int32_t bad = why.empty() ? 0 : 1;
  world.broadcast(&bad, sizeof bad, 0);
  if (bad != 0) throw bad_input(world.rank() == 0 ? why : fmt::format("{} {}: rank 0 cannot write it", what, path));
}

// Called by rank 0 as the measurement starts: removes the trace an earlier run left at `path`
// (a regular file only; /dev/null and other special files stay). The new trace is written
// whole at the end (write_file_atomic), so a run killed or failed in between leaves no trace
// rather than an older one that reads as complete and would pass for this run's.
inline void discard_earlier_output(const std::string& path, const std::string& what) {
  if (path.empty()) return;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(std::filesystem::symlink_status(path, ec))) return;
  if (!std::filesystem::remove(path, ec) && ec)
    throw Error(ErrorKind::runtime, fmt::format("{} {}: cannot remove the earlier file: {}", what, path, ec.message()));
}

}  // namespace ringplan::cli
