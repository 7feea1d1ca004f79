// CUDA flash-attention block kernels: the GPU twin of the CPU functions in kernels/attention.hpp.
//
// Same structs as the CPU path (BlockParams, ForwardOut, BackwardArgs, TensorView, RowStatsView)
// with DEVICE pointers inside, so the ring code is unchanged: it swaps cpu_flash_forward for
// cuda::flash_forward and passes a stream. Every function only enqueues work on `stream`
// (asynchronous to the host); argument errors are found before anything is enqueued. Which
// kernel runs and in which launch order is an argument of each call (KernelChoice, defaulted);
// the library holds no process-wide settings.
//
// Types and precision:
//   q, k, v (and grad_out for the backward): f16 or bf16, all the same type; head_dim 64 or 128.
//   Products on tensor cores (wgmma on sm_90, mma.sync m16n8k16 elsewhere) with float32
//   accumulation; softmax in float32.
//   O (ForwardOut.out), dQ, dK, dV: float32 (the ring merges and accumulates them in float32).
//   lse, D: float32 rows. BackwardArgs.out (final O) has the input type (kernels::validate);
//   backward_delta itself accepts O and dO in f32, f16 or bf16.
// Layout: [batch, heads, tokens, head_dim] with explicit strides; head_dim contiguous, strides
// multiples of 8 elements and 16-byte aligned base pointers for the 16-bit inputs (vector loads).
// Positions: int64 device arrays of global token positions; with causal, key j is visible to
// query i iff k_pos[j] <= q_pos[i]. Tiles are classified by min/max position (tile_schedule.hpp).
// A row with no visible key gets O = 0 and lse = -inf, and contributes nothing to the backward.
//
// Errors: bad arguments throw std::invalid_argument naming the function, the argument and what
// would be valid (kernels/ knows nothing of ringplan::Error; callers wrap with context). CUDA
// failures throw std::runtime_error with file:line and the CUDA error string.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/attention.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {

// Empty when the arguments suit the CUDA kernels, else what is wrong (includes kernels::validate).
std::string validate_forward(const BlockParams& p, const ForwardOut& o);
std::string validate_backward(const BlockParams& p, const BackwardArgs& g);

// Which kernel flash_forward runs. All satisfy the same contract:
//   automatic: wgmma on an sm_90 device when the build has it, else mma.
//   wgmma: Hopper only (sm_90a code, built when RINGPLAN_CUDA_ARCHITECTURES lists 90):
//     FlashAttention-3 style, asynchronous warpgroup MMAs from shared memory, 128 query rows
//     per block (attention_fwd_wgmma.cu).
//   mma: FlashAttention-2 style, mma.sync m16n8k16 with S and P kept in registers, 128 query
//     rows per block (attention_fwd_mma.cu); sm_80 and later.
enum class ForwardImpl { automatic, mma, wgmma };

// Which kernel flash_backward runs. All satisfy the same contract:
//   automatic: wgmma on an sm_90 device when the build has it, else mma.
//   wgmma: Hopper only (sm_90a code): FlashAttention-3 style, asynchronous warpgroup MMAs and
//     TMA, 128 keys per block (attention_bwd_wgmma.cu).
//   mma: FlashAttention-2 style, mma.sync m16n8k16, 128 keys per block with P and dS kept in
//     registers for dV and dK (attention_bwd_mma.cu); sm_80 and later.
enum class BackwardImpl { automatic, mma, wgmma };

// The kernels and launch order one flash_forward / flash_backward call uses. The default is what
// production code runs; benchmarks and tests pass other choices to compare the kernels.
//   forward, backward: the kernel (above). Asking for wgmma where it cannot run makes the call
//     throw std::invalid_argument.
//   order: launch order of the thread blocks (tile_schedule.hpp): tile_major, every head's
//     heaviest causal tile first and the lightest last; head_major, each head's tiles in turn.
//     It applies to causal launches (launch_order): without a mask every tile has the same work,
//     so the order changes no balance, and those launches stay head-major, which keeps the blocks
//     that read the same K and V (one head's) running together. The results do not depend on it.
struct KernelChoice {
  ForwardImpl forward = ForwardImpl::automatic;
  BackwardImpl backward = BackwardImpl::automatic;
  BlockOrder order = BlockOrder::tile_major;
};

// Writes O and lse of this block (overwrites, does not merge), like cpu_flash_forward, with the
// kernel and launch order of `choice`.
void flash_forward(const BlockParams& p, const ForwardOut& o, cudaStream_t stream, const KernelChoice& choice = {});

// dQ += ..., dK += ..., dV += ... for this block, using the FINAL lse and D (fill D first with
// backward_delta), with the kernel and launch order of `choice`. dQ is accumulated with float
// atomics (several key tiles add to one query row), dK and dV by plain read-add-write (one thread
// block owns a key tile of a KV head and loops over all of that head's query heads, so GQA needs
// no atomics there).
void flash_backward(const BlockParams& p, const BackwardArgs& g, cudaStream_t stream,
                    const KernelChoice& choice = {});

// Empty when `impl` can run on the current device, else why not. resolve_*_impl gives the kernel
// flash_forward / flash_backward runs for `impl` (automatic resolved) on the current device.
std::string forward_impl_unavailable(ForwardImpl impl);
ForwardImpl resolve_forward_impl(ForwardImpl impl);
const char* forward_impl_name(ForwardImpl impl);
std::string backward_impl_unavailable(BackwardImpl impl);
BackwardImpl resolve_backward_impl(BackwardImpl impl);
const char* backward_impl_name(BackwardImpl impl);

// acc <- merge(acc, blk) in place; both float32. Same stable sigmoid form as the CPU merge_partial
// (kernels/attention.hpp): one side lse = -inf gives the other side exactly, both give O = 0,
// lse = -inf.
void merge_partial(const ForwardOut& acc, const ForwardOut& blk, cudaStream_t stream);

// D = rowsum(dO * O) in float32; O and dO may be f32, f16 or bf16.
void backward_delta(const TensorView& out, const TensorView& grad_out, const RowStatsView& delta,
                    cudaStream_t stream);

// dst <- src rounded to dst's type (round to nearest even); src f32, dst f16 or bf16, both dense
// [batch, heads, tokens, head_dim] of one shape. The ring keeps O in float32 while merging
// blocks and hands the layer's output on in the input type.
void convert_from_f32(const TensorView& src, const TensorView& dst, cudaStream_t stream);

// dst[i] += src[i] for i < n (float32): the ring adds an incoming dK, dV accumulator.
void accumulate(float* dst, const float* src, int64_t n, cudaStream_t stream);

// Device count, or 0 with `why` filled when there is no usable device (no driver, no GPU).
int device_count(std::string* why);

}  // namespace ringplan::kernels::cuda
