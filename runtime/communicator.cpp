// Defaults of the optional Communicator collectives (see communicator.hpp).
#include "runtime/communicator.hpp"

#include "core/error.hpp"

namespace ringplan::runtime {

// A transport that does not implement reduce-scatter cannot run the training step's
// sequence-parallel or ZeRO paths; it says so instead of reducing wrongly (its buffers may be
// device memory, which a host-side fallback could not touch).
void Communicator::reduce_scatter_sum(const float*, float*, size_t) {
  throw Error(ErrorKind::runtime, "reduce_scatter_sum: not implemented by this communicator");
}
void Communicator::reduce_scatter_sum(const double*, double*, size_t) {
  throw Error(ErrorKind::runtime, "reduce_scatter_sum: not implemented by this communicator");
}

}  // namespace ringplan::runtime
