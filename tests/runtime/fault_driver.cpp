// Fault-injection driver for tests/runtime/fault_test.sh (not a test by itself).
//   mpirun -np 3 ringplan_fault_driver MODE VICTIM
// MODE:
//   stall  every rank exchanges a message with every other rank each iteration; at iteration 3
//          the victim sleeps for 600 s. Every other rank is then waiting on the victim only, so
//          each must abort within the timeout naming the victim's rank and host.
//   exit   the victim leaves at iteration 3 with _exit(3) (a crash, no MPI_Finalize); mpirun
//          must stop the job and name the process.
//   ring   ring attention forward/backward; the victim sleeps before its third iteration. The
//          ring stalls behind it and the job must stop within the timeout.
//   stall_init      the victim sleeps 600 s before MPI_Init (as a rank stopped during start-up):
//                   the others wait in MPI_Init, where no MPI call can time out; MpiSession's
//                   watchdog must end them within the timeout ("in MPI start-up").
//   stall_finalize  the victim sleeps 600 s after the exchanges, before MPI_Finalize: the others
//                   wait in MPI_Finalize; the watchdog must end them ("in MPI teardown").
// Exits 0 only if no fault happened (which the test script treats as a failure).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "runtime/mpi_communicator.hpp"
#include "runtime/ring_attention.hpp"
#include "runtime/sharding.hpp"

using namespace ringplan;

// OpenMPI's start-up allocations are never freed, so LeakSanitizer would fail every MPI binary
// under the asan preset (including doctest's test discovery at build time, which runs without
// the preset's ASAN_OPTIONS). Every other ASan/UBSan check stays on. Unused without ASan.
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }

// This rank before MPI_Init: mpirun's environment.
int launcher_rank() {
  const char* v = std::getenv("OMPI_COMM_WORLD_RANK");
  return v != nullptr ? std::atoi(v) : -1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: ringplan_fault_driver stall|exit|ring|stall_init|stall_finalize VICTIM\n");
    return 2;
  }
  const std::string mode = argv[1];
  const int victim = std::atoi(argv[2]);
  if (mode == "stall_init" && launcher_rank() == victim) std::this_thread::sleep_for(std::chrono::seconds(600));
  runtime::MpiSession mpi(&argc, &argv);
  auto world = runtime::MpiCommunicator::world();
  const int P = world->size(), r = world->rank();
  auto stall_or_exit = [&](int it) {
    if (r != victim || it != 3) return;
    if (mode == "exit") _exit(3);
    std::this_thread::sleep_for(std::chrono::seconds(600));
  };
  if (mode == "stall_init" || mode == "stall_finalize") {
    std::vector<int64_t> in(static_cast<size_t>(P));
    std::vector<runtime::RequestPtr> reqs;
    int64_t out = r;
    for (int q = 0; q < P; ++q)
      if (q != r) reqs.push_back(world->post_recv(&in[static_cast<size_t>(q)], sizeof(int64_t), q, 1));
    for (int q = 0; q < P; ++q)
      if (q != r) reqs.push_back(world->post_send(&out, sizeof(int64_t), q, 1));
    world->wait_all(reqs);
    world.reset();  // MPI_Comm_free before the session's MPI_Finalize
    if (mode == "stall_finalize" && r == victim) std::this_thread::sleep_for(std::chrono::seconds(600));
    // stall_init reaching here means start-up completed although the victim slept: a failure
    // is reported by exit 0 below (the test requires a non-zero exit).
    std::printf("rank %d: no fault happened\n", r);
    return 0;
  }
  if (mode == "stall" || mode == "exit") {
    std::vector<int64_t> in(static_cast<size_t>(P));
    for (int it = 0; it < 10; ++it) {
      stall_or_exit(it);
      std::vector<runtime::RequestPtr> reqs;
      int64_t out = it;
      for (int q = 0; q < P; ++q)
        if (q != r) reqs.push_back(world->post_recv(&in[static_cast<size_t>(q)], sizeof(int64_t), q, 1));
      for (int q = 0; q < P; ++q)
        if (q != r) reqs.push_back(world->post_send(&out, sizeof(int64_t), q, 1));
      world->wait_all(reqs);
    }
  } else if (mode == "ring") {
    const int64_t L = 64 * P;
    const runtime::ContextParallel ctx(world.get(), CpScheme::zigzag, L);
    runtime::RingConfig cfg;
    cfg.tokens = ctx.local_tokens();
    cfg.head_dim = 16;
    runtime::RingAttention ring(*world, cfg, ctx.positions().data());
    const size_t e = static_cast<size_t>(cfg.tokens * cfg.head_dim);
    std::vector<float> x(e, 0.25f), out(e), lse(static_cast<size_t>(cfg.tokens)), dq(e), dk(e), dv(e);
    for (int it = 0; it < 10; ++it) {
      stall_or_exit(it);
      ring.forward(x.data(), x.data(), x.data(), out.data(), lse.data());
      ring.backward(x.data(), x.data(), x.data(), out.data(), lse.data(), x.data(), dq.data(), dk.data(), dv.data());
    }
  } else {
    std::fprintf(stderr, "unknown mode '%s': use stall, exit, ring, stall_init or stall_finalize\n", mode.c_str());
    return 2;
  }
  std::printf("rank %d: no fault happened\n", r);
  return 0;
}
