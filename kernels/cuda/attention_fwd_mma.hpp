// Internal: the FlashAttention-2-style forward on mma.sync (attention_fwd_mma.cu), one of the
// kernels behind cuda::flash_forward (ForwardImpl::mma). Callers outside kernels/cuda use
// flash_forward and KernelChoice (attention_cuda.hpp); tests and the benchmark may read the tile
// sizes.
#pragma once
#include <cuda_runtime_api.h>

#include "kernels/attention.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {

// A thread block owns kMmaFwdBlockM query rows of one (batch, head): 4 warps x 2 m16 tiles x 16
// rows (each K and V fragment read from shared memory feeds both m tiles of a warp); it streams
// kMmaFwdBlockN keys per step. Causal tiles are classified over these sizes.
inline constexpr int kMmaFwdWarps = 4;
inline constexpr int kMmaFwdWarpTilesM = 2;                                   // m16 tiles per warp
inline constexpr int kMmaFwdBlockM = 16 * kMmaFwdWarpTilesM * kMmaFwdWarps;  // 128 query rows
inline constexpr int kMmaFwdBlockN = 64;                                      // keys per step

namespace detail {

// Enqueues the forward of one block on `stream`. Preconditions (flash_forward checked them with
// validate_forward): f16 or bf16 inputs, head_dim 64 or 128, 16-byte aligned bases and strides
// multiples of 8 elements, device pointers, q.tokens > 0. `scale` is the effective softmax scale
// (p.scale, or 1/sqrt(head_dim) when p.scale is 0); `order` the launch order the grid asks for
// (launch_order). Throws std::runtime_error on launch failure.
void launch_forward_mma(const BlockParams& p, const ForwardOut& o, float scale, BlockOrder order,
                        cudaStream_t stream);

}  // namespace detail
}  // namespace ringplan::kernels::cuda
