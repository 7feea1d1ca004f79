// What `ringplan calibrate` measures on CPUs, every rank at once (as in a run): the attention
// kernels' rates on one block, the point-to-point link, the memory copy rate, and the host's
// memory. Each measurement checks its result before it is timed; results are medians over
// repetitions on a rank, then over ranks (the link's ring step: the slowest rank).
#pragma once
#include <cstdint>

#include "runtime/communicator.hpp"

namespace ringplan::runtime {

// The attention shape the kernels are timed on (the plan's per-TP-rank heads, or calibrate's flags).
struct KernelShape {
  int64_t batch = 1, heads = 4, kv_heads = 4, head_dim = 64;
  int threads = 1;  // kernel threads per rank
  int reps = 3;     // timed repetitions (each long enough for >= 50 ms of kernel calls)
};

// Flash and materialised kernels, forward and backward, on one full (non-causal) n x n block and
// the flash kernels on a causal diagonal block (the two kinds a ring step runs).
struct KernelPoint {
  int64_t tokens = 0;
  double flops = 0;             // forward FLOPs of one full block
  double fwd_s = 0, bwd_s = 0;  // median over reps, then median over ranks
  double mat_fwd_s = 0, mat_bwd_s = 0;
  double causal_flops = 0, causal_fwd_s = 0;  // flash forward of a causal diagonal block
  double causal_bwd_s = 0;                    // flash backward of the same block
  int64_t tile = 0;  // the flash kernels' tile edge (the larger of the query and key tiles)
};

// Collective over `world`. Throws Error(runtime) when a kernel returns non-finite values.
KernelPoint measure_kernels(Communicator& world, const KernelShape& shape, int64_t n);

struct LinkPoint {
  int64_t bytes = 0;
  double pingpong_one_way_s = 0;  // ranks 0 <-> 1
  double ring_step_s = 0;         // every rank sends to r+1 and receives from r-1 at once
};

// Collective over `world` (size >= 2: the ping-pong runs between ranks 0 and 1).
LinkPoint measure_link(Communicator& world, int64_t bytes, int reps);

// Per-rank memcpy rate of a 64 MiB buffer, read + write traffic, every rank at once; median over ranks.
double measure_copy_bandwidth(Communicator& world);

// MemTotal of /proc/meminfo in bytes (0 when unknown).
int64_t mem_total_bytes();

// How the ranks of `world` sit on hosts, from their host names (Communicator::describe_rank):
// the number of distinct hosts and the most ranks on one of them. Local: no communication.
struct HostCounts {
  int64_t hosts = 0, ranks_per_host = 0;
};
HostCounts count_hosts(const Communicator& world);

}  // namespace ringplan::runtime
