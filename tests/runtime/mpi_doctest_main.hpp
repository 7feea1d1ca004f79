// The main() of the runtime's MPI test programs (include from exactly one file per program).
// One process (unit tests) or every rank of an mpirun job (collective tests): rank 0 prints
// doctest's summary, other ranks only their failures, and with `collective` the exit status is
// the same on every rank (non-zero when any rank failed), with a one-line verdict from rank 0.
#pragma once
#include <doctest/doctest.h>

#include <cstdio>

#include "runtime/mpi_communicator.hpp"

// OpenMPI's start-up allocations are never freed, so LeakSanitizer would fail every MPI binary
// under the asan preset (including doctest's test discovery at build time, which runs without
// the preset's ASAN_OPTIONS). Every other ASan/UBSan check stays on. Unused without ASan.
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }

namespace ringplan::test {

// Runs the doctest cases with `world` set to the job's world communicator while they run.
inline int run_mpi_doctest(int argc, char** argv, runtime::MpiCommunicator*& world, const char* program,
                           bool collective) {
  runtime::MpiSession mpi(&argc, &argv);
  int failed = 0;
  {
    auto w = runtime::MpiCommunicator::world();
    world = w.get();
    doctest::Context ctx;
    ctx.applyCommandLine(argc, argv);
    if (collective && w->rank() != 0) ctx.setOption("minimal", true);
    failed = ctx.run() != 0 ? 1 : 0;
    if (ctx.shouldExit() || !collective) {
      world = nullptr;
      return failed;
    }
    double any = failed;
    w->all_reduce_max(&any, 1);
    failed = any > 0 ? 1 : 0;
    if (w->rank() == 0) std::printf("%s: P=%d %s\n", program, w->size(), failed ? "FAILED" : "passed");
    world = nullptr;
  }
  return failed;
}

}  // namespace ringplan::test
