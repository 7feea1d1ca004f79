// The CUDA twin of runtime/executor.hpp: runs one attention layer's ring forward + backward on
// one CP group whose ranks each drive one GPU, and measures it into the same
// RingLayerMeasurement, so `ringplan run` reports CPU and GPU runs alike.
//
// Rank -> GPU: the rank's index among the ranks of its node (MPI_COMM_TYPE_SHARED) is its device
// number. NCCL cannot put two ranks on one GPU, so a node with more ranks than GPUs is refused
// before any work, naming the host and both counts.
//
// Transports: K, V and the dK, dV accumulators move over NCCL (device buffers, a communication
// stream of their own); the few host values (positions, samples, memory) over MPI.
//
// Memory: tracked_bytes counts every device buffer this run allocates; peak_memory_rise_bytes is
// the device-memory rise: free memory (cudaMemGetInfo) before allocating minus the smallest free
// memory seen after each iteration (nothing allocates mid-iteration).
#pragma once
#include <string>

#include "kernels/attention.hpp"
#include "runtime/executor.hpp"
#include "runtime/mpi_communicator.hpp"

namespace ringplan::runtime {

// CUDA devices this process sees; 0 with `why` filled when there are none (no driver, no GPU).
int cuda_devices(std::string* why);

// The smallest total memory (bytes) of the GPUs the ranks of `world` would drive (each its local
// rank on its host), read from the device properties without selecting a device, creating a
// context or allocating: what `ringplan run --device cuda` checks a plan against before any
// device work. Ranks whose GPU cannot be read (no driver, fewer GPUs than ranks on the host) do
// not count; 0 when no rank could read one. Collective over `world`.
double smallest_device_memory_bytes(MpiCommunicator& world);

// Makes this rank's GPU current (its local rank on the host) and returns its index. Throws
// bad_input naming rank and host when the host has no GPU, or fewer GPUs than ranks (NCCL cannot
// put two ranks on one GPU). Collective over nothing: each rank decides from its own host.
int select_rank_device(MpiCommunicator& world);

// Collective over `world` (the CP group, all its ranks on GPUs). `type`: bf16 or f16 inputs.
RingLayerMeasurement run_ring_layer_cuda(MpiCommunicator& world, const RingLayerShape& shape,
                                         const ExecutorOptions& opt, kernels::ElemType type);

}  // namespace ringplan::runtime
