// Internal: the FlashAttention-2-style backward on mma.sync (attention_bwd_mma.cu), one of the
// kernels behind cuda::flash_backward (BackwardImpl::mma). Callers outside kernels/cuda use
// flash_backward and KernelChoice (attention_cuda.hpp); tests and the benchmark may read the tile
// sizes.
#pragma once
#include <cuda_runtime_api.h>

#include "kernels/attention.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {

// A thread block owns kMmaBwdBlockN keys of one (batch, KV head): 8 warps x 16 keys, whose dK and
// dV stay in registers. It streams kMmaBwdBlockM query rows per step over every query head of
// that KV head. Causal tiles are classified over these sizes. 128 keys per block (as in
// FlashAttention-2's head_dim 128 backward) halve the dQ atomics and the Q, dO, lse, D loads per
// key against 64; the dQ of a step is split over the warps as kMmaBwdBlockM / 16 row groups x
// kMmaBwdDqColSplit column ranges of head_dim.
inline constexpr int kMmaBwdWarps = 8;
inline constexpr int kMmaBwdBlockN = 16 * kMmaBwdWarps;  // 128 keys owned by a block
inline constexpr int kMmaBwdBlockM = 64;                 // query rows per step
inline constexpr int kMmaBwdDqColSplit = kMmaBwdWarps / (kMmaBwdBlockM / 16);  // 2 column ranges of dQ

namespace detail {

// Enqueues the backward of one block on `stream`: dQ += (float atomics), dK += and dV += (plain
// read-add-write; one block owns a key tile). Preconditions (flash_backward checked them with
// validate_backward): f16 or bf16 inputs, head_dim 64 or 128, 16-byte aligned bases and strides
// multiples of 8 elements, device pointers, q.tokens > 0 and k.tokens > 0. `scale` is the
// effective softmax scale (p.scale, or 1/sqrt(head_dim) when p.scale is 0); `order` the launch
// order the grid asks for (launch_order). Throws std::runtime_error on launch failure.
void launch_backward_mma(const BlockParams& p, const BackwardArgs& g, float scale, BlockOrder order,
                         cudaStream_t stream);

}  // namespace detail
}  // namespace ringplan::kernels::cuda
