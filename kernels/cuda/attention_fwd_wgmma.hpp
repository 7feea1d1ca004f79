// Internal: the Hopper (sm_90a) forward on wgmma (attention_fwd_wgmma.cu), chosen by
// cuda::flash_forward on sm_90 devices when the build has it (ForwardImpl::automatic) or when
// asked for (ForwardImpl::wgmma). Callers outside kernels/cuda use flash_forward and
// KernelChoice (attention_cuda.hpp).
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/attention.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {

// A thread block = 2 warpgroups = kWgmmaFwdBlockM query rows of one (batch, head), 64 per
// warpgroup; it streams kWgmmaFwdBlockN keys per step.
inline constexpr int kWgmmaFwdWarpGroups = 2;
inline constexpr int kWgmmaFwdBlockM = 64 * kWgmmaFwdWarpGroups;  // 128 query rows
inline constexpr int kWgmmaFwdBlockN = 128;                         // keys per step

namespace detail {

// True when this build compiled the wgmma kernels (RINGPLAN_CUDA_ARCHITECTURES lists 90).
bool wgmma_forward_built();

// Empty when the current device runs sm_90a code (compute capability 9.0), else what is needed
// and what there is, to follow "... needs " (attention_fwd_mma.cu; built for every architecture).
std::string sm90_device_problem();

// Enqueues the forward on `stream`; same preconditions as launch_forward_mma
// (attention_fwd_mma.hpp), and the current device must be sm_90 (the caller checks).
void launch_forward_wgmma(const BlockParams& p, const ForwardOut& o, float scale, BlockOrder order,
                          cudaStream_t stream);

}  // namespace detail
}  // namespace ringplan::kernels::cuda
