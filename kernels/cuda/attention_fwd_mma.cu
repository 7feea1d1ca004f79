// FlashAttention-2-style forward on mma.sync.m16n8k16: the default implementation of
// cuda::flash_forward (contracts in attention_cuda.hpp; the WMMA forward in attention_cuda.cu
// stays selectable with set_forward_impl, for benchmarks and tests).
//
// Work split: one thread block = 4 warps = 64 query rows of one (batch, head); warp w owns rows
// [16w, 16w + 16). The block loops over 64-key tiles of its KV head (GQA: query head h reads KV
// head h / (heads / kv_heads)).
//
// Per block:
//   Q tile -> shared memory (cp.async) -> registers as mma A fragments (ldmatrix.x4), once.
//   K, V tiles: cp.async 16-byte copies into a double buffer; the copy of the next live tile is
//   issued before the current tile is computed, so it overlaps the tensor-core work.
//   S = Q K^T: K through ldmatrix (non-transposed: K stored [key][d] row-major is the "col"
//   B operand). Online softmax in registers, log2 domain (scale * log2(e) folded into S).
//   P = exp2(S - m) is rounded to the input type IN REGISTERS and used as the A operand of P V:
//   the accumulators of two adjacent m16n8 tiles are exactly one m16n8k16 A fragment.
//   V through ldmatrix.trans. O accumulates in float32 registers.
//   End: O / rowsum written as float32, lse = (m + log2 l) * ln 2 (natural log).
//
// Fragment layouts (PTX ISA, mma.m16n8k16, 16-bit inputs), g = lane / 4, t = lane % 4:
//   A (16x16, row):  a0 (row g, cols 2t, 2t+1)  a1 (row g+8, same)  a2 (row g, cols 2t+8, +9)
//                    a3 (row g+8, cols 2t+8, +9)
//   B (16x8, col):   b0 (k rows 2t, 2t+1, col g)  b1 (k rows 2t+8, +9, col g)
//   C (16x8, f32):   c0, c1 (row g, cols 2t, 2t+1)  c2, c3 (row g+8, same cols)
// A 32-bit register holds two 16-bit elements, the lower column (or k) index in the low half.
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i, and register i of every
// lane receives matrix i in the layout of one 8x8 quarter of A (lane holds row g, cols 2t, 2t+1);
// with .trans it receives rows 2t, 2t+1 of column g instead (the B layout).
//
// Causal masking: key j is visible to query i iff k_pos[j] <= q_pos[i]; positions are arbitrary
// (not assumed sorted). Every warp classifies key tiles against the BLOCK's query range
// (classify_tile, tile_schedule.hpp) 32 tiles at a time (one per lane, ballot); hidden tiles are
// skipped, visible tiles take no mask work, partial tiles compare the tile's key positions
// (staged in shared memory with the tile) with the thread's two query positions. All warps read
// the same positions and so take the same decisions: the block's control flow stays uniform.
// A row whose keys so far are all masked has max -inf; exponents then subtract 0 instead
// (FA2), so P = 0 and the rescale factor is 0, never NaN. Such a row ends with O = 0 and
// lse = -inf.
//
// Edges: key rows beyond m and query rows beyond n are zero-filled by the copies; scores of keys
// beyond m are masked, rows beyond n are computed but never stored.
#include "kernels/cuda/attention_fwd_mma.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention_cuda.hpp"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {
namespace {

constexpr int kWarps = kMmaFwdWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockM = kMmaFwdBlockM;
constexpr int kBlockN = kMmaFwdBlockN;
constexpr int kWindow = 32;  // key tiles classified per scan: one per lane
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The Q tile is staged in the second K buffer (same shape), and the block min/max of query
// positions is two warp reductions over one position per lane each.
static_assert(kBlockM == kBlockN, "Q is staged in a K buffer");
static_assert(kBlockM == 2 * 32, "query range: each lane reads two query positions");
static_assert(kBlockN == 64, "S of a warp is 8 m16n8 tiles; P V takes 4 k-steps");

#define RINGPLAN_MMA_THROW_IF(call)                                                               \
  do {                                                                                            \
    const cudaError_t err_ = (call);                                                              \
    if (err_ != cudaSuccess) {                                                                    \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls start clean */          \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #call + \
                               " failed: " + cudaGetErrorString(err_));                           \
    }                                                                                             \
  } while (0)

struct Args {
  const void *q, *k, *v;
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st;
  float* o;
  int64_t o_sb, o_sh, o_st;
  float* lse;
  int64_t l_sb, l_sh;
  const int64_t *q_pos, *k_pos;  // may be null when !causal
  int64_t n, m, heads, group;    // group = heads / kv_heads
  int causal;
  int o_vec2;        // O rows 8-byte aligned: store column pairs as float2
  float scale_log2;  // scale * log2(e): softmax runs on exp2
};

// Shared memory: K0, V0, K1, V1 (each kBlockN x D, swizzled, no padding), then the key positions
// of each buffer (kBlockN int64). The Q tile is staged in K1 before the first K1 copy is issued.
template <int D>
struct Smem {
  static constexpr int kTileElems = kBlockN * D;
  static constexpr size_t kTileBytes = size_t(kTileElems) * 2;
  static constexpr size_t kKposOff = 4 * kTileBytes;
  static constexpr size_t kBytes = kKposOff + 2 * kBlockN * sizeof(int64_t);
};
static_assert(Smem<128>::kBytes <= kMaxSmemBytesSm80, "forward tile does not fit an A100 block");

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] tile. Chunks are XOR-
// swizzled with row % 8: the 8 row addresses of one ldmatrix 8x8 matrix (8 consecutive rows, one
// logical chunk) land in 8 different 16-byte bank groups, so ldmatrix is conflict-free without
// padding. D / 8 >= 8 chunks per row, so the XOR stays inside the row.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// ---- PTX wrappers ------------------------------------------------------------------------
// volatile: the compiler must not move shared-memory reads and async copies across barriers.

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; with valid == false nothing is read and the 16 bytes are zeroed
// (src-size 0), but `gmem` must still be a mapped address.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits for all of this thread's copies; other threads' copies need a barrier afterwards.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

// d += A B for one m16n8k16 tile; float32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded (nearest even) to the input type; `lo` in the low 16 bits.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

// ---- tiles -------------------------------------------------------------------------------

// Issues cp.async copies of rows [row0, row0 + 64) of a [tokens, D] slice (token stride `stride`
// elements) into a swizzled tile; rows at or beyond `nrows` are zero-filled. row0 < nrows, so the
// (unread) source address of a zero-filled chunk is row0's, a mapped address.
template <typename T, int D>
__device__ __forceinline__ void copy_tile(T* dst, const T* src, int64_t stride, int64_t row0, int64_t nrows) {
  constexpr int kChunks = D / 8;
  constexpr int kPerThread = kBlockN * kChunks / kThreads;
  static_assert(kBlockN * kChunks % kThreads == 0, "copy loop has no tail");
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int idx = int(threadIdx.x) + i * kThreads;
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t g = row0 + r;
    const bool valid = g < nrows;
    cp_async16(dst + swz<D>(r, c), src + (valid ? g : row0) * stride + c * 8, valid);
  }
}

// Key positions of tile [key0, key0 + 64) into shared memory (beyond m: 0, never read: those
// columns are masked by the key count before positions are compared).
__device__ __forceinline__ void copy_kpos(int64_t* dst, const int64_t* k_pos, int64_t key0, int64_t m) {
  const int i = int(threadIdx.x);
  if (i < kBlockN) {
    const bool valid = key0 + i < m;
    cp_async8(dst + i, k_pos + (valid ? key0 + i : key0), valid);
  }
}

// Warp-uniform cursor over the live (not hidden) key tiles. Tiles are classified kWindow at a
// time: lane L takes tile base + L, reduces its key positions to min/max and classifies it
// against the block's query range; two ballots give the window's live and partial bits.
struct TileCursor {
  int base = -kWindow;  // first tile of the current window; none classified yet
  uint32_t live = 0, partial = 0;

  __device__ void classify(const Args& a, int ntiles, int64_t qmin, int64_t qmax) {
    const int tile = base + int(threadIdx.x & 31);
    bool is_live = false, is_partial = false;
    if (tile < ntiles) {
      if (!a.causal) {
        is_live = true;
      } else {
        const int64_t k0 = int64_t(tile) * kBlockN;
        const int64_t k1 = min(k0 + kBlockN, a.m);
        int64_t kmin = INT64_MAX, kmax = INT64_MIN;
#pragma unroll 16
        for (int64_t j = k0; j < k1; ++j) {
          const int64_t p = __ldg(a.k_pos + j);
          kmin = min(kmin, p);
          kmax = max(kmax, p);
        }
        const TileVisibility vis = classify_tile(true, qmin, qmax, kmin, kmax);
        is_live = vis != TileVisibility::hidden;
        is_partial = vis == TileVisibility::partial;
      }
    }
    live = __ballot_sync(0xffffffffu, is_live);
    partial = __ballot_sync(0xffffffffu, is_partial);
  }

  // First live tile >= t (ntiles when none); `is_partial` receives its class. t never decreases
  // between calls, so a window once passed is never needed again.
  __device__ int next(const Args& a, int t, int ntiles, int64_t qmin, int64_t qmax, bool& is_partial) {
    while (t < ntiles) {
      if (t >= base + kWindow) {
        base = t;
        classify(a, ntiles, qmin, qmax);
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

// ---- kernel ------------------------------------------------------------------------------

// Blocks per SM the register budget is sized for. head_dim 128: Q fragments 32 registers, O 64,
// S / P 32, plus softmax state and addresses; two blocks (8 warps, 255 registers each) and
// 2 x 65 KiB of shared memory. head_dim 64 needs half of Q and O: three blocks (168 registers;
// at four, 128 registers, ptxas spills).
template <int D>
constexpr int min_blocks_per_sm() { return D == 64 ? 3 : 2; }

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_blocks_per_sm<D>()) flash_forward_mma_kernel(const Args a) {
  using S = Smem<D>;
  constexpr int NK = D / 16;  // k-steps of Q K^T, pairs of d n-tiles of P V
  constexpr int NO = D / 8;   // m16n8 tiles of O per warp
  extern __shared__ __align__(128) unsigned char smem[];
  T* const tiles = reinterpret_cast<T*>(smem);  // K0, V0, K1, V1
  int64_t* const kpos_s = reinterpret_cast<int64_t*>(smem + S::kKposOff);

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t hk = h / a.group;
  // Query tiles in reverse launch order: with sorted causal positions the last tiles see the
  // most keys, and starting them first shortens the tail of the grid.
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kBlockM;
  const T* const q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* const k = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh;
  const T* const v = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh;
  const int ntiles = int((a.m + kBlockN - 1) / kBlockN);

  // This thread's two query rows (g and g + 8 of the warp's 16) and their positions. Rows beyond
  // n get INT64_MIN: every key is masked for them on partial tiles (they are never stored).
  const int64_t row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  int64_t qp0 = INT64_MIN, qp1 = INT64_MIN;
  // The block's query range, identical in every warp: lane L reads rows q0 + L and q0 + 32 + L.
  int64_t qmin = INT64_MAX, qmax = INT64_MIN;
  if (a.causal) {
    if (row0 < a.n) qp0 = __ldg(a.q_pos + row0);
    if (row1 < a.n) qp1 = __ldg(a.q_pos + row1);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t r = q0 + i * 32 + lane;
      if (r < a.n) {
        const int64_t p = __ldg(a.q_pos + r);
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

  float o[NO][4];
#pragma unroll
  for (int j = 0; j < NO; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  // Running max (log2 domain, scaled) and this thread's partial row sums of rows g and g + 8.
  // The max is reduced over the quad every tile; the sums only at the end (the rescale factors
  // are quad-uniform, so the partial sums stay consistent).
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  TileCursor cursor;
  bool partial = false;
  int t = cursor.next(a, 0, ntiles, qmin, qmax, partial);
  if (t < ntiles) {
    // Prologue: Q into K1's place and the first live tile into buffer 0, one copy group.
    T* const q_s = tiles + 2 * S::kTileElems;
    copy_tile<T, D>(q_s, q, a.q_st, q0, a.n);
    copy_tile<T, D>(tiles, k, a.k_st, int64_t(t) * kBlockN, a.m);
    copy_tile<T, D>(tiles + S::kTileElems, v, a.v_st, int64_t(t) * kBlockN, a.m);
    if (partial) copy_kpos(kpos_s, a.k_pos, int64_t(t) * kBlockN, a.m);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    // Q fragments of the warp's 16 rows, k-step kk: lanes 0-15 address rows 0-15 at chunk 2kk,
    // lanes 16-31 the same rows at chunk 2kk + 1 (matrices: rows 0-7 / 8-15 x chunk lo / hi).
    uint32_t qf[NK][4];
    {
      const int r = warp * 16 + (lane & 15);
#pragma unroll
      for (int kk = 0; kk < NK; ++kk) ldmatrix_x4(qf[kk], q_s + swz<D>(r, 2 * kk + (lane >> 4)));
    }
    __syncthreads();  // every warp holds its Q fragments before K1 (Q's staging place) is refilled

    // Per-lane ldmatrix rows. K (non-trans, two key n-tiles per x4): matrices (keys 0-7, chunk lo),
    // (keys 0-7, hi), (keys 8-15, lo), (keys 8-15, hi) -> b0, b1 of n-tile 2p, b0, b1 of 2p + 1.
    const int k_row = (lane & 7) + ((lane >> 4) << 3), k_chunk = (lane >> 3) & 1;
    // V (.trans, two d n-tiles per x4): matrices (keys 0-7, chunk 2p), (keys 8-15, 2p),
    // (keys 0-7, 2p + 1), (keys 8-15, 2p + 1) -> b0, b1 of n-tile 2p, b0, b1 of 2p + 1.
    const int v_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_chunk = lane >> 4;

    int buf = 0;
    for (;;) {
      const bool cur_partial = partial;
      const int64_t key0 = int64_t(t) * kBlockN;
      const int kvalid = int(min(int64_t(kBlockN), a.m - key0));
      const int tn = cursor.next(a, t + 1, ntiles, qmin, qmax, partial);
      if (tn < ntiles) {
        // Buffer buf ^ 1 is free: the barrier ending the previous step (or the one above, for
        // the first step) comes after every warp's last read of it.
        T* const nk = tiles + (buf ^ 1) * 2 * S::kTileElems;
        copy_tile<T, D>(nk, k, a.k_st, int64_t(tn) * kBlockN, a.m);
        copy_tile<T, D>(nk + S::kTileElems, v, a.v_st, int64_t(tn) * kBlockN, a.m);
        if (partial) copy_kpos(kpos_s + (buf ^ 1) * kBlockN, a.k_pos, int64_t(tn) * kBlockN, a.m);
        cp_async_commit();
      }

      const T* const ks = tiles + buf * 2 * S::kTileElems;
      const T* const vs = ks + S::kTileElems;

      // S = Q K^T: 16 x 64 per warp as 8 m16n8 tiles; s[j] holds keys 8j .. 8j + 7.
      float s[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < NK; ++kk) {
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          uint32_t kb[4];
          ldmatrix_x4(kb, ks + swz<D>(16 * p + k_row, 2 * kk + k_chunk));
          mma16816<T>(s[2 * p], qf[kk], kb[0], kb[1]);
          mma16816<T>(s[2 * p + 1], qf[kk], kb[2], kb[3]);
        }
      }

      // Scale into the log2 domain, then mask: keys beyond m always, positions on partial tiles.
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] *= a.scale_log2;
      }
      if (cur_partial || kvalid < kBlockN) {
        const int64_t* const kp = kpos_s + buf * kBlockN;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * j + 2 * tq + e;
            bool vis0 = col < kvalid, vis1 = vis0;
            if (cur_partial) {
              const int64_t kpos = kp[col];
              vis0 = vis0 && kpos <= qp0;
              vis1 = vis1 && kpos <= qp1;
            }
            if (!vis0) s[j][e] = -INFINITY;
            if (!vis1) s[j][2 + e] = -INFINITY;
          }
        }
      }

      // Online softmax. Row g: s[j][0..1]; row g + 8: s[j][2..3]; a row spans the 4 lanes of a quad.
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
      }
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
      // No visible key so far: subtract 0 so exp2(-inf - ref) = 0 instead of NaN.
      const float ref0 = mn0 == -INFINITY ? 0.0f : mn0, ref1 = mn1 == -INFINITY ? 0.0f : mn1;
      const float alpha0 = exp2f(m0 - ref0), alpha1 = exp2f(m1 - ref1);  // 0 while m = -inf
      m0 = mn0;
      m1 = mn1;
      float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        s[j][0] = exp2f(s[j][0] - ref0);
        s[j][1] = exp2f(s[j][1] - ref0);
        s[j][2] = exp2f(s[j][2] - ref1);
        s[j][3] = exp2f(s[j][3] - ref1);
        sum0 += s[j][0] + s[j][1];
        sum1 += s[j][2] + s[j][3];
      }
      l0 = l0 * alpha0 + sum0;
      l1 = l1 * alpha1 + sum1;
      // Once the row maxima settle, every factor is 1: skip the O rescale for the whole warp.
      if (__any_sync(0xffffffffu, alpha0 != 1.0f || alpha1 != 1.0f)) {
#pragma unroll
        for (int j = 0; j < NO; ++j) {
          o[j][0] *= alpha0;
          o[j][1] *= alpha0;
          o[j][2] *= alpha1;
          o[j][3] *= alpha1;
        }
      }

      // O += P V. k-step kk covers keys 16kk .. 16kk + 15 = S tiles 2kk and 2kk + 1, whose
      // accumulators are the A fragment: a0 = (row g, keys 2t, 2t+1) = s[2kk][0..1],
      // a1 = (row g+8, same) = s[2kk][2..3], a2 = (row g, keys 8+2t, 8+2t+1) = s[2kk+1][0..1],
      // a3 = (row g+8, same) = s[2kk+1][2..3].
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t pa[4];
        pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int p = 0; p < NK; ++p) {
          uint32_t vb[4];
          ldmatrix_x4_trans(vb, vs + swz<D>(16 * kk + v_row, 2 * p + v_chunk));
          mma16816<T>(o[2 * p], pa, vb[0], vb[1]);
          mma16816<T>(o[2 * p + 1], pa, vb[2], vb[3]);
        }
      }

      if (tn >= ntiles) break;
      cp_async_wait_all();  // this thread's copies of tile tn have landed ...
      __syncthreads();      // ... everyone's, and every warp is done reading buffer `buf`
      t = tn;
      buf ^= 1;
    }
  }

  // O = O / l and lse; a row with no visible key (l = 0) gets O = 0, lse = -inf.
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  float* const out = a.o + b * a.o_sb + h * a.o_sh;
  float* const lse = a.lse + b * a.l_sb + h * a.l_sh;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = half == 0 ? row0 : row1;
    if (row >= a.n) continue;
    const float inv = half == 0 ? inv0 : inv1;
    float* const orow = out + row * a.o_st + 2 * tq;
#pragma unroll
    for (int j = 0; j < NO; ++j) {
      const float x = o[j][2 * half] * inv, y = o[j][2 * half + 1] * inv;
      if (a.o_vec2) {
        *reinterpret_cast<float2*>(orow + 8 * j) = make_float2(x, y);
      } else {
        orow[8 * j] = x;
        orow[8 * j + 1] = y;
      }
    }
    if (tq == 0) {
      const float l = half == 0 ? l0 : l1, mrow = half == 0 ? m0 : m1;
      lse[row] = l > 0.0f ? (mrow + log2f(l)) * kLn2 : -INFINITY;
    }
  }
}

template <typename T, int D>
void launch(const Args& a, int64_t batch, cudaStream_t stream) {
  constexpr size_t smem = Smem<D>::kBytes;
  auto kernel = flash_forward_mma_kernel<T, D>;
  RINGPLAN_MMA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((a.n + kBlockM - 1) / kBlockM), unsigned(a.heads), unsigned(batch));
  kernel<<<grid, kThreads, smem, stream>>>(a);
  RINGPLAN_MMA_THROW_IF(cudaGetLastError());
}

std::atomic<ForwardImpl> g_forward_impl{ForwardImpl::mma};

}  // namespace

void set_forward_impl(ForwardImpl impl) { g_forward_impl.store(impl, std::memory_order_relaxed); }
ForwardImpl forward_impl() { return g_forward_impl.load(std::memory_order_relaxed); }

namespace detail {

void launch_forward_mma(const BlockParams& p, const ForwardOut& o, float scale, cudaStream_t stream) {
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
  a.causal = p.causal ? 1 : 0;
  a.scale_log2 = scale * kLog2e;
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch<__nv_bfloat16, 64>(a, p.q.batch, stream) : launch<__half, 64>(a, p.q.batch, stream);
  } else {
    bf16 ? launch<__nv_bfloat16, 128>(a, p.q.batch, stream) : launch<__half, 128>(a, p.q.batch, stream);
  }
}

}  // namespace detail
}  // namespace ringplan::kernels::cuda
