// Internal: the Hopper (sm_90a) backward on wgmma and TMA (attention_bwd_wgmma.cu), chosen by
// cuda::flash_backward on sm_90 devices when the build has it (BackwardImpl::automatic) or when
// asked for (BackwardImpl::wgmma). Callers outside kernels/cuda use flash_backward and
// KernelChoice (attention_cuda.hpp).
#pragma once
#include <cuda_runtime_api.h>

#include "kernels/attention.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {

// A thread block owns kWgmmaBwdBlockN keys of one (batch, KV head), 64 per consumer warpgroup
// (their dK and dV stay in registers), and streams kWgmmaBwdBlockM query rows per step over
// every query head of that KV head.
inline constexpr int kWgmmaBwdWarpGroups = 2;
inline constexpr int kWgmmaBwdBlockN = 64 * kWgmmaBwdWarpGroups;  // 128 keys
inline constexpr int kWgmmaBwdBlockM = 64;                         // query rows per step

namespace detail {

// True when this build compiled the wgmma kernels (RINGPLAN_CUDA_ARCHITECTURES lists 90).
bool wgmma_backward_built();

// Enqueues the backward on `stream`; same preconditions and effects as launch_backward_mma
// (attention_bwd_mma.hpp), and the current device must be sm_90 (the caller checks).
void launch_backward_wgmma(const BlockParams& p, const BackwardArgs& g, float scale, BlockOrder order,
                           cudaStream_t stream);

}  // namespace detail
}  // namespace ringplan::kernels::cuda
