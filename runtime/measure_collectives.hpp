// Times the collectives the training step uses (all-reduce, reduce-scatter, all-gather of
// float32 buffers) on a communicator, the way the step calls them, for `ringplan calibrate`.
// Each size is checked for the right result before it is timed. On CPU communicators each
// repetition starts with the caches flushed, as inside a step (measure_collectives.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/communicator.hpp"

namespace ringplan::runtime {

struct CollectivePoint {
  int64_t bytes = 0;              // full buffer (all-reduce buffer; reduce-scatter input; all-gather output)
  double all_reduce_s = 0;        // median over repetitions of the slowest rank's time
  double reduce_scatter_s = 0;
  double all_gather_s = 0;
};

// Collective over `comm` (size >= 2). Every size is rounded down to a multiple of 4 * size()
// bytes. Throws Error(runtime) when a collective returns a wrong result.
std::vector<CollectivePoint> measure_collectives(Communicator& comm, const std::vector<int64_t>& bytes, int reps);

}  // namespace ringplan::runtime
