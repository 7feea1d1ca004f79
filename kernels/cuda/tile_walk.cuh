// Internal: the causal tile walks of the attention kernels and what they read. Include from .cu
// files only.
//   tile_detail (shared by the forward kernels and the wgmma backward, attention_bwd_wgmma.cu):
//     TileRanges, the per-tile min/max positions a kernel's walk reads, computed on the stream
//     before a causal launch.
//   fwd_detail (the forward kernels, attention_fwd_mma.cu and attention_fwd_wgmma.cu, only):
//     their kernel arguments (Args, make_args), the block's query position range and TileCursor,
//     the walk over the key tiles not hidden from the block.
//
// A forward thread block owns BlockM query rows and visits the key tiles of BlockN keys that are
// not hidden from all of them (classify_tile, tile_schedule.hpp). Every warp runs the same walk
// on the same positions, so every warp takes the same decisions and the block's control flow
// stays uniform (the kernels rely on this for their barriers).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda::fwd_detail {

// Kernel arguments: base pointers and strides in elements, sizes, and the softmax scale.
struct Args {
  const void *q, *k, *v;
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st;
  float* o;
  int64_t o_sb, o_sh, o_st;
  float* lse;
  int64_t l_sb, l_sh;
  const int64_t *q_pos, *k_pos;  // may be null when !causal
  // With causal: min and max key position of each key tile of the kernel's tile size, [ntiles][2]
  // (tile_detail::TileRanges below fills it before the launch); null: the kernel reads the positions.
  const int64_t* k_tile_range;
  int64_t n, m, heads, group;    // group = heads / kv_heads
  int64_t batch;                 // with heads and the query tiles: the grid (launch_grid)
  int order;                     // BlockOrder: the caller's launch_order, the grid's own at launch (launch_grid)
  int causal;
  int o_vec2;        // O rows 8-byte aligned: store column pairs as float2
  float scale_log2;  // scale * log2(e): softmax runs on exp2
};

// Arguments of one forward block; `scale` is the effective softmax scale, `order` the launch order
// the grid asks for (launch_order).
inline Args make_args(const BlockParams& p, const ForwardOut& o, float scale, BlockOrder order) {
  constexpr float kLog2e = 1.4426950408889634f;
  Args a{};
  a.q = p.q.data, a.k = p.k.data, a.v = p.v.data;
  a.q_sb = p.q.stride_batch, a.q_sh = p.q.stride_head, a.q_st = p.q.stride_token;
  a.k_sb = p.k.stride_batch, a.k_sh = p.k.stride_head, a.k_st = p.k.stride_token;
  a.v_sb = p.v.stride_batch, a.v_sh = p.v.stride_head, a.v_st = p.v.stride_token;
  a.o = static_cast<float*>(o.out.data);
  a.o_sb = o.out.stride_batch, a.o_sh = o.out.stride_head, a.o_st = o.out.stride_token;
  a.o_vec2 = reinterpret_cast<uintptr_t>(o.out.data) % 8 == 0 && o.out.stride_batch % 2 == 0 &&
             o.out.stride_head % 2 == 0 && o.out.stride_token % 2 == 0;
  a.lse = o.lse.data, a.l_sb = o.lse.stride_batch, a.l_sh = o.lse.stride_head;
  a.q_pos = p.q_positions, a.k_pos = p.k_positions;
  a.n = p.q.tokens, a.m = p.k.tokens, a.heads = p.q.heads, a.group = p.q.heads / p.k.heads;
  a.batch = p.q.batch;
  a.order = int(order);
  a.causal = p.causal ? 1 : 0;
  a.scale_log2 = scale * kLog2e;
  return a;
}

// Min and max position of the block's query rows [q0, q0 + BlockM) that exist (< n), identical
// in every lane of every warp; (INT64_MAX, INT64_MIN) without causal masking (not needed then).
template <int BlockM>
__device__ __forceinline__ void block_query_range(bool causal, const int64_t* q_pos, int64_t q0, int64_t n,
                                                  int64_t& qmin, int64_t& qmax) {
  static_assert(BlockM % 32 == 0, "each lane reads BlockM / 32 query positions");
  qmin = INT64_MAX;
  qmax = INT64_MIN;
  if (!causal) return;
  const int lane = int(threadIdx.x & 31);
#pragma unroll
  for (int i = 0; i < BlockM / 32; ++i) {
    const int64_t r = q0 + i * 32 + lane;
    if (r < n) {
      const int64_t p = __ldg(q_pos + r);
      qmin = min(qmin, p);
      qmax = max(qmax, p);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    qmin = min(qmin, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(qmin), off)));
    qmax = max(qmax, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(qmax), off)));
  }
}

// Warp-uniform cursor over the live (not hidden) key tiles of BlockN keys. Tiles are classified
// 32 at a time into two bit masks (live, partial): lane L takes tile base + L and reads its key
// range from Args::k_tile_range (precomputed by tile_detail::TileRanges, below), so a window costs one round
// trip to memory. (Reading the positions themselves here, one lane per tile, made every load
// instruction touch 32 cache lines and cost more than the attention work of a short causal
// block.)
template <int BlockN>
struct TileCursor {
  static constexpr int kWindow = 32;
  int base = -kWindow;  // first tile of the current window; none classified yet
  uint32_t live = 0, partial = 0;
  const int64_t* range = nullptr;  // Args::k_tile_range: required with causal masking

  __device__ void classify(bool causal, int ntiles, int64_t qmin, int64_t qmax) {
    const int lane = int(threadIdx.x & 31);
    const int tile = base + lane;
    TileVisibility vis = TileVisibility::hidden;
    if (tile < ntiles) {
      vis = causal ? classify_tile(true, qmin, qmax, __ldg(range + 2 * tile), __ldg(range + 2 * tile + 1))
                   : TileVisibility::visible;
    }
    live = __ballot_sync(0xffffffffu, vis != TileVisibility::hidden);
    partial = __ballot_sync(0xffffffffu, vis == TileVisibility::partial);
  }

  // First live tile >= t (ntiles when none); `is_partial` receives its class. t never decreases
  // between calls, so a window once passed is never needed again.
  __device__ int next(bool causal, int t, int ntiles, int64_t qmin, int64_t qmax, bool& is_partial) {
    while (t < ntiles) {
      if (t >= base + kWindow) {
        base = t;
        classify(causal, ntiles, qmin, qmax);
      }
      const uint32_t rest = live >> (t - base);  // t - base in [0, kWindow)
      if (rest != 0u) {
        t += __ffs(int(rest)) - 1;
        is_partial = ((partial >> (t - base)) & 1u) != 0u;
        return t;
      }
      t = base + kWindow;
    }
    is_partial = false;
    return ntiles;
  }
};

}  // namespace ringplan::kernels::cuda::fwd_detail

// ---- per-tile position ranges: key tiles of the forward, query tiles of the backward -------

namespace ringplan::kernels::cuda::tile_detail {

// Internal linkage for the kernel AND the host code that launches it: the .cu files including
// this header are compiled for different architecture lists (the sm_90a ones only for 90a), so a
// shared (weak, external) TileRanges::make<64> could end up launching another file's kernel
// image, one the device may lack.
namespace {

// range[2t], range[2t + 1] = min, max of pos over tile t (entries [t * BlockN, min(m, ...))): one
// warp per tile, coalesced loads, shuffle reduction.
template <int BlockN>
__global__ void tile_range_kernel(const int64_t* k_pos, int64_t m, int ntiles, int64_t* range) {
  const int tile = int(blockIdx.x) * int(blockDim.x / 32) + int(threadIdx.x / 32);
  if (tile >= ntiles) return;
  const int lane = int(threadIdx.x & 31);
  const int64_t k0 = int64_t(tile) * BlockN;
  int64_t kmin = INT64_MAX, kmax = INT64_MIN;
  for (int j = lane; j < BlockN; j += 32) {
    if (k0 + j < m) {
      const int64_t p = __ldg(k_pos + k0 + j);
      kmin = min(kmin, p);
      kmax = max(kmax, p);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    kmin = min(kmin, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(kmin), off)));
    kmax = max(kmax, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(kmax), off)));
  }
  if (lane == 0) {
    range[2 * tile] = kmin;
    range[2 * tile + 1] = kmax;
  }
}

// Stream-ordered scratch with the per-tile position ranges of a causal kernel (key tiles of the
// forward, query tiles of the backward): the kernels then classify a window of 32 tiles with one
// round trip to memory instead of one per tile (which, on a short causal block, costs more than
// its attention work). Frees the scratch in stream order when it goes out of scope (after the
// kernel that reads it was enqueued). Not causal, or no positions: nothing, ptr() is null.
class TileRanges {
 public:
  template <int Block>
  static TileRanges make(const int64_t* pos, int64_t count, bool causal, cudaStream_t stream) {
    TileRanges r;
    r.stream_ = stream;
    if (!causal || count == 0) return r;
    const int ntiles = int((count + Block - 1) / Block);
    void* p = nullptr;
    RINGPLAN_CUDA_THROW_IF(cudaMallocAsync(&p, size_t(ntiles) * 2 * sizeof(int64_t), stream));
    r.ptr_ = static_cast<int64_t*>(p);
    constexpr int kWarps = 8;
    tile_range_kernel<Block><<<unsigned((ntiles + kWarps - 1) / kWarps), 32 * kWarps, 0, stream>>>(pos, count, ntiles,
                                                                                               r.ptr_);
    RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
    return r;
  }
  const int64_t* ptr() const { return ptr_; }
  TileRanges(TileRanges&& o) noexcept : ptr_(o.ptr_), stream_(o.stream_) { o.ptr_ = nullptr; }
  TileRanges(const TileRanges&) = delete;
  TileRanges& operator=(const TileRanges&) = delete;
  TileRanges& operator=(TileRanges&&) = delete;
  ~TileRanges() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);
  }

 private:
  TileRanges() = default;
  int64_t* ptr_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

}  // namespace ringplan::kernels::cuda::tile_detail
