// FlashAttention-2-style backward on mma.sync.m16n8k16: the implementation of
// cuda::flash_backward where the wgmma backward cannot run, or when asked for (BackwardImpl::mma;
// contracts in attention_cuda.hpp).
//
// Work split (key-tile outer loop): one thread block = 8 warps = 128 keys of one (batch, KV head);
// warp w owns keys [16w, 16w + 16) of the tile. The block loops over every query head of its KV
// head (GQA: query heads hk * group .. hk * group + group - 1, group = heads / kv_heads) and,
// per head, over 64-row query tiles; one flat item index covers (head, tile) pairs.
//
// Per item (a query tile not hidden from the key tile), each warp, for ITS 16 keys:
//   S^T  = K_w Q^T            (16 keys x 64 queries, 8 m16n8 tiles; rows = keys)
//   P^T  = exp2(S^T * scale * log2 e - lse * log2 e), masked entries 0
//   dV_w += P^T dO            (P^T accumulators are directly the A operand, as in the forward)
//   dP^T = V_w dO^T
//   dS^T = P^T * (dP^T - D)
//   dK_w += dS^T Q            (dS^T rounded to the input type, again as A operand in registers)
// Transposing S (keys as mma rows) keeps P and dS in registers for both dV and dK: the C layout
// of two adjacent m16n8 tiles is the m16n8k16 A layout. Only dQ needs dS with queries as rows:
// each warp writes its dS^T rows to shared memory, and after a barrier warp w computes
//   dQ[16r .. 16r + 16, cols of range c) = scale * dS K   (r = w % 4, c = w / 4; dS read with
//   ldmatrix.trans from the dS^T tile, all 128 keys as the k dimension)
// and adds it to global float32 with atomics (other key tiles add to the same rows; on sm_90
// red.global.add.v2.f32, one vector reduction per column pair). The 128-key tile halves these
// atomics per key against a 64-key one.
// dK (times scale) and dV are added to global memory once at the end, read-add-write: the block
// is the only writer of its keys' rows, so GQA needs no atomics there.
//
// Memory: K, V of the key tile are copied once (cp.async) and read with ldmatrix every item.
// Q, dO, lse, D and (on partial tiles) query positions are double-buffered: the copy of the next
// live item is issued before the current one is computed, so it overlaps the tensor-core work.
// 16-bit tiles are [rows][D] with 16-byte chunks XOR-swizzled by row % 8 (conflict-free ldmatrix
// without padding; see swz).
//
// Fragment layouts (PTX ISA, mma.m16n8k16, 16-bit inputs), g = lane / 4, t = lane % 4:
//   A (16x16, row):  a0 (row g, cols 2t, 2t+1)  a1 (row g+8, same)  a2 (row g, cols 2t+8, +9)
//                    a3 (row g+8, cols 2t+8, +9)
//   B (16x8, col):   b0 (k rows 2t, 2t+1, col g)  b1 (k rows 2t+8, +9, col g)
//   C (16x8, f32):   c0, c1 (row g, cols 2t, 2t+1)  c2, c3 (row g+8, same cols)
// A 32-bit register holds two 16-bit elements, the lower column (or k) index in the low half.
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i, and register i of every
// lane receives matrix i: without .trans the lane holds (row g, cols 2t, 2t+1) of it, with .trans
// (rows 2t, 2t+1, col g). Lane address patterns used below (r = lane):
//   A, stored [row][k]:      row (r & 15), chunk 2kk + (r >> 4)          -> a0, a1, a2, a3
//   B, stored [n][k]:        row 16p + (r & 7) + ((r >> 4) << 3), chunk 2kk + ((r >> 3) & 1)
//                            -> b0, b1 of n-tile 2p, b0, b1 of n-tile 2p + 1
//   B, stored [k][n], .trans: row 16kk + (r & 7) + (((r >> 3) & 1) << 3), chunk 2p + (r >> 4)
//                            -> b0, b1 of n-tile 2p, b0, b1 of n-tile 2p + 1
//   A from a stored A^T ([k][row]), .trans: the [n][k] B pattern with k rows and row chunks
//                            -> a0, a1, a2, a3 (see the dQ step)
//
// Causal masking: key j is visible to query i iff k_pos[j] <= q_pos[i]; positions are arbitrary
// (not assumed sorted). Every warp classifies query tiles against the block's key range
// (classify_tile, tile_schedule.hpp) 32 items at a time (one per lane, ballot): hidden tiles are
// skipped, visible tiles take no mask work, partial tiles compare positions element by element.
// All warps read the same positions and take the same decisions: control flow stays uniform.
// Rows with lse = -inf (no visible key in the whole sequence) get P = 0 and contribute nothing.
//
// Edges: key rows beyond m and query rows beyond n are zero-filled by the copies and masked
// (P = 0, so dS = 0); their dK, dV, dQ rows are never stored.
#include "kernels/cuda/attention_bwd_mma.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention_cuda.hpp"
#include "kernels/cuda/attention_bwd_wgmma.hpp"
#include "kernels/cuda/attention_fwd_wgmma.hpp"  // detail::sm90_device_problem
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/mma_primitives.cuh"
#include "kernels/cuda/tile_schedule.hpp"

namespace ringplan::kernels::cuda {
namespace {

using namespace mma_detail;

constexpr int kWarps = kMmaBwdWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = kMmaBwdBlockN;  // keys owned by a block
constexpr int kBlockM = kMmaBwdBlockM;  // query rows per item
constexpr int kWindow = 32;             // items classified per scan: one per lane
constexpr float kLog2e = 1.4426950408889634f;

constexpr int kDqRowGroups = kBlockM / 16;           // m16 row groups of a step's dQ
constexpr int kDqColSplit = kMmaBwdDqColSplit;        // column ranges of head_dim per row group

static_assert(kBlockN == 16 * kWarps, "each warp owns 16 keys (one m16 tile of S^T, dK, dV)");
static_assert(kBlockM == 64,
              "S^T of a warp is 8 m16n8 tiles (64 queries, two halves of 32); the dS^T tile rows are 64 "
              "queries wide (8 swizzle chunks)");
static_assert(kDqRowGroups * kDqColSplit == kWarps, "dQ: every warp owns one (row group, column range)");
static_assert(kDqColSplit == 2, "dQ column ranges: head_dim / 2 = 2 or 4 n16 chunks per warp (D = 64, 128)");
static_assert(kBlockN % 32 == 0, "key range: each lane reads kBlockN / 32 key positions");
static_assert(kThreads >= 3 * kBlockM, "row statistics: threads 0-63 copy lse, 64-127 D, 128-191 positions");
static_assert(kThreads >= kBlockN, "key positions: one per thread into shared memory");

struct Args {
  const void *q, *k, *v, *dout;
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st, do_sb, do_sh, do_st;
  const float *lse, *delta;
  int64_t l_sb, l_sh, d_sb, d_sh;
  float *dq, *dk, *dv;
  int64_t dq_sb, dq_sh, dq_st, dk_sb, dk_sh, dk_st, dv_sb, dv_sh, dv_st;
  const int64_t *q_pos, *k_pos;  // may be null when !causal
  int64_t n, m, group;           // group = heads / kv_heads
  int64_t kv_heads, batch;       // with the key tiles: the grid (launch_grid)
  int order;                     // BlockOrder: the caller's launch_order, the grid's own at launch (launch_grid)
  int causal;
  int dq_vec2;   // dQ rows 8-byte aligned: column pairs as one 2-wide reduction (sm_90)
  int dkv_vec2;  // dK and dV rows 8-byte aligned: column pairs as float2
  float scale, scale_log2;
};

// Shared memory, in layout order: K, V (the key tile, kBlockN rows), Q[2], dO[2] (query tiles of
// kBlockM rows, double buffer), dS^T (kBlockN keys x kBlockM queries), lse[2], D[2] (float per
// query row), query positions[2], key positions and the key tile's position range (kept here,
// not in registers: registers are the scarce resource at head_dim 128).
// All 16-bit tiles are [rows][D] (dS^T [keys][kBlockM]), swizzled, unpadded. At head_dim 128
// 147 KiB: one block (8 warps) per SM, also on A100.
template <int D>
struct Smem {
  static constexpr size_t kKTileBytes = size_t(kBlockN) * D * 2;  // K or V
  static constexpr size_t kQTileBytes = size_t(kBlockM) * D * 2;  // one Q or dO buffer
  static constexpr size_t kK = 0;
  static constexpr size_t kV = kKTileBytes;
  static constexpr size_t kQ = 2 * kKTileBytes;                    // buffer i at kQ + i * kQTileBytes
  static constexpr size_t kDo = kQ + 2 * kQTileBytes;              // buffer i at kDo + i * kQTileBytes
  static constexpr size_t kDs = kDo + 2 * kQTileBytes;
  static constexpr size_t kLse = kDs + size_t(kBlockN) * kBlockM * 2;  // float [2][kBlockM]
  static constexpr size_t kDelta = kLse + 2 * kBlockM * sizeof(float);
  static constexpr size_t kQpos = kDelta + 2 * kBlockM * sizeof(float);  // int64 [2][kBlockM]
  static constexpr size_t kKpos = kQpos + 2 * kBlockM * sizeof(int64_t);  // int64 [kBlockN]
  static constexpr size_t kKrange = kKpos + kBlockN * sizeof(int64_t);     // int64 min, max
  static constexpr size_t kBytes = kKrange + 2 * sizeof(int64_t);
};
static_assert(Smem<128>::kBytes <= kMaxSmemBytesSm80, "backward tile does not fit an A100 block");
static_assert(Smem<64>::kBytes % 16 == 0 && Smem<128>::kLse % 16 == 0, "16-byte aligned regions");

// *p += x, p[1] += y as global reductions (no return value). `vec2`: p is 8-byte aligned.
// sm_90 has a 2-wide float reduction: one memory transaction per column pair instead of two.
__device__ __forceinline__ void red_add2(float* p, float x, float y, bool vec2) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (vec2) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(x), "f"(y) : "memory");
    return;
  }
#else
  (void)vec2;
#endif
  atomicAdd(p, x);
  atomicAdd(p + 1, y);
}

// ---- tiles -------------------------------------------------------------------------------

// Warp-uniform cursor over the live (not hidden) items. Item i is query tile i % ntq of query
// head i / ntq (within the KV head's group). Items are classified kWindow at a time: lane L takes
// item base + L, reduces its query positions to min/max and classifies the tile against the
// block's key range; two ballots give the window's live and partial bits.
struct ItemCursor {
  int base = -kWindow;  // first item of the current window; none classified yet
  uint32_t live = 0, partial = 0;

  __device__ void classify(const Args& a, int nitems, int ntq, int64_t kmin, int64_t kmax) {
    const int item = base + int(threadIdx.x & 31);
    bool is_live = false, is_partial = false;
    if (item < nitems) {
      if (!a.causal) {
        is_live = true;
      } else {
        const int64_t q0 = int64_t(item % ntq) * kBlockM;
        const int64_t q1 = min(q0 + kBlockM, a.n);
        int64_t qmin = INT64_MAX, qmax = INT64_MIN;
#pragma unroll 16
        for (int64_t i = q0; i < q1; ++i) {
          const int64_t p = __ldg(a.q_pos + i);
          qmin = min(qmin, p);
          qmax = max(qmax, p);
        }
        const TileVisibility vis = classify_tile(true, qmin, qmax, kmin, kmax);
        is_live = vis != TileVisibility::hidden;
        is_partial = vis == TileVisibility::partial;
      }
    }
    live = __ballot_sync(0xffffffffu, is_live);
    partial = __ballot_sync(0xffffffffu, is_partial);
  }

  // First live item >= i (nitems when none); `is_partial` receives its class. i never decreases
  // between calls, so a window once passed is never needed again.
  __device__ int next(const Args& a, int i, int nitems, int ntq, int64_t kmin, int64_t kmax,
                          bool& is_partial) {
    while (i < nitems) {
      if (i >= base + kWindow) {
        base = i;
        classify(a, nitems, ntq, kmin, kmax);
      }
      const uint32_t rest = live >> (i - base);  // i - base in [0, kWindow)
      if (rest != 0u) {
        i += __ffs(int(rest)) - 1;
        is_partial = ((partial >> (i - base)) & 1u) != 0u;
        return i;
      }
      i = base + kWindow;
    }
    is_partial = false;
    return nitems;
  }
};

// Issues the copies of item `item` into buffer `buf`: Q and dO tiles, lse and D of its rows, and
// on partial tiles the query positions. One thread copies one row statistic (threads 0-63 lse,
// 64-127 D, 128-191 positions); rows beyond n are zero-filled (and masked by the row count).
template <typename T, int D>
__device__ __forceinline__ void issue_item(const Args& a, unsigned char* smem, int buf, int item, int ntq,
                                           int64_t hk, int64_t b, bool partial) {
  using S = Smem<D>;
  const int hg = item / ntq;  // query head within the group
  const int64_t h = hk * a.group + hg;
  const int64_t q0 = int64_t(item - hg * ntq) * kBlockM;
  const T* q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* dout = static_cast<const T*>(a.dout) + b * a.do_sb + h * a.do_sh;
  copy_tile<T, D, kBlockM, kThreads>(reinterpret_cast<T*>(smem + S::kQ + buf * S::kQTileBytes), q, a.q_st, q0, a.n);
  copy_tile<T, D, kBlockM, kThreads>(reinterpret_cast<T*>(smem + S::kDo + buf * S::kQTileBytes), dout, a.do_st, q0, a.n);
  const int tid = int(threadIdx.x);
  const int r = tid & (kBlockM - 1);
  const bool valid = q0 + r < a.n;
  const int64_t src_row = valid ? q0 + r : q0;
  if (tid < kBlockM) {
    const float* lse = a.lse + b * a.l_sb + h * a.l_sh;
    cp_async4(reinterpret_cast<float*>(smem + S::kLse) + buf * kBlockM + r, lse + src_row, valid);
  } else if (tid < 2 * kBlockM) {
    const float* delta = a.delta + b * a.d_sb + h * a.d_sh;
    cp_async4(reinterpret_cast<float*>(smem + S::kDelta) + buf * kBlockM + r, delta + src_row, valid);
  } else if (tid < 3 * kBlockM && partial) {
    cp_async8(reinterpret_cast<int64_t*>(smem + S::kQpos) + buf * kBlockM + r, a.q_pos + src_row, valid);
  }
}

// ---- kernel ------------------------------------------------------------------------------

// n16 column chunks of dQ per pass of the dQ step (see there): all of a warp's columns (D / 32)
// in one pass, so each dS fragment is read from shared memory once per item.
template <int D>
constexpr int dq_pass_chunks() { return D / 16 / kDqColSplit; }

// Registers at head_dim 128 per thread: dK 64 and dV 64 (float accumulators of the warp's 16
// keys x 128), S^T / P^T 16 and dP^T / dS^T 16 per half item, plus fragments and addresses: up
// to 255, so one 256-thread block per SM (65536 registers). Shared memory 147 KiB at head_dim
// 128 (one block per SM anyway; it fits A100's 163 KiB), 83 KiB at head_dim 64.
template <int D>
constexpr int min_blocks_per_sm() {
  // 1: up to 255 registers. At head_dim 64, 2 (83 KiB each, two per H100/H200 SM) also compiles
  // without spills under ptxas 13 for sm_90 (128 registers), doubling the warps per SM; kept at 1
  // until a measurement shows that the extra occupancy outweighs the lower ILP.
  return 1;
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_blocks_per_sm<D>()) flash_backward_mma_kernel(const Args a) {
  using S = Smem<D>;
  constexpr int NK = D / 16;  // k-steps over head_dim; also pairs of n8 tiles over head_dim
  constexpr int NO = D / 8;   // n8 tiles over head_dim
  extern __shared__ __align__(128) unsigned char smem[];
  const T* const ks = reinterpret_cast<const T*>(smem + S::kK);
  const T* const vs = reinterpret_cast<const T*>(smem + S::kV);
  T* const dst_s = reinterpret_cast<T*>(smem + S::kDs);  // dS^T [key][query], swizzled, 64 wide

  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  // Launch order (tile_schedule.hpp; tile_major by default): the first key tile of every KV head
  // first (with sorted causal positions the most query tiles see it), the last tiles last.
  const BlockCoord blk =
      block_coord(blockIdx.x, blockIdx.y, blockIdx.z, uint32_t((a.m + kBlockN - 1) / kBlockN), BlockOrder(a.order), false);
  const int b = blk.batch, hk = blk.head;
  const int64_t key0 = int64_t(blk.tile) * kBlockN;
  const int kvalid = int(min(int64_t(kBlockN), a.m - key0));
  const T* const k = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh;
  const T* const v = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh;

  // Key positions to shared memory (read on partial tiles; beyond m: never visible, and masked
  // by kvalid anyway) and the key tile's position range, identical in every warp (lane L reads
  // keys L, 32 + L, ...). Both are published by the prologue's barrier.
  const int krow0 = warp * 16 + g, krow1 = krow0 + 8;  // this thread's key rows, local to the tile
  int64_t* const kpos_s = reinterpret_cast<int64_t*>(smem + S::kKpos);
  int64_t* const krange_s = reinterpret_cast<int64_t*>(smem + S::kKrange);
  int64_t kmin = INT64_MAX, kmax = INT64_MIN;
  if (a.causal) {
    if (int(threadIdx.x) < kBlockN) {
      kpos_s[threadIdx.x] = int(threadIdx.x) < kvalid ? __ldg(a.k_pos + key0 + threadIdx.x) : INT64_MAX;
    }
#pragma unroll
    for (int i = 0; i < kBlockN / 32; ++i) {
      const int r = i * 32 + lane;
      if (r < kvalid) {
        const int64_t p = __ldg(a.k_pos + key0 + r);
        kmin = min(kmin, p);
        kmax = max(kmax, p);
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      kmin = min(kmin, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(kmin), off)));
      kmax = max(kmax, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(kmax), off)));
    }
  }

  float dk[NO][4], dv[NO][4];
#pragma unroll
  for (int j = 0; j < NO; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.0f;
  }

  // Item counts fit in int: the host checked group * ntq <= INT32_MAX.
  const int ntq = int((a.n + kBlockM - 1) / kBlockM);
  const int nitems = int(a.group) * ntq;
  ItemCursor cursor;
  bool partial = false;
  int it = cursor.next(a, 0, nitems, ntq, kmin, kmax, partial);
  if (it >= nitems) return;  // every query tile is hidden from these keys: dK, dV += 0
  if (threadIdx.x == 0) {
    krange_s[0] = kmin;
    krange_s[1] = kmax;
  }

  // Prologue: the key tile and the first live item (buffer 0), one copy group.
  copy_tile<T, D, kBlockN, kThreads>(reinterpret_cast<T*>(smem + S::kK), k, a.k_st, key0, a.m);
  copy_tile<T, D, kBlockN, kThreads>(reinterpret_cast<T*>(smem + S::kV), v, a.v_st, key0, a.m);
  issue_item<T, D>(a, smem, 0, it, ntq, hk, b, partial);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  // ldmatrix lane addressing (see the header comment): A from [row][k]; B from [n][k]; B from
  // [k][n] with .trans. Kept as swizzled byte offsets of each lane's first address (k-step or
  // n-tile pair 0, row block 0) in a [rows][D] tile: the other addresses add multiples of 16 rows
  // (row % 8 unchanged) and move chunk c to c + 2i, which in the swizzled tile is the byte offset
  // XOR (i << 5) (chunk c + 2i = c ^ 2i for c < 2; i << 5 < 2 * D touches only the chunk bits).
  // The XOR is computed where it is used (xor_in_place): hoisted, every (tile, i) offset would
  // hold a register for the whole item loop, and dK, dV need those registers.
  const int a_row = lane & 15, a_chunk = lane >> 4;
  const int b_row = (lane & 7) + ((lane >> 4) << 3), b_chunk = (lane >> 3) & 1;
  const int t_row = (lane & 7) + (((lane >> 3) & 1) << 3), t_chunk = lane >> 4;
  const uint32_t a_off = 2 * swz<D>(a_row, a_chunk), b_off = 2 * swz<D>(b_row, b_chunk),
                 t_off = 2 * swz<D>(t_row, t_chunk);
  const uint32_t ks_a = smem_addr(ks), vs_a = smem_addr(vs);
  const uint32_t kw_a = ks_a + 2 * D * 16 * warp, vw_a = vs_a + 2 * D * 16 * warp;  // the warp's 16 keys
  // dS^T stores: (key row krow0, chunk c) at byte krow0 * 128 + ((c ^ g) << 4) + 4 * tq, i.e.
  // ds_off XOR (c << 4); row krow1 = krow0 + 8 adds 8 * 128 bytes (same row % 8).
  const uint32_t dst_a = smem_addr(dst_s), ds_off = 2 * swz<kBlockM>(krow0, 0) + 4 * tq;

  int buf = 0;
  for (;;) {
    const bool cur_partial = partial;
    const int hg = it / ntq;  // query head within the group
    const int64_t h = hk * a.group + hg;
    const int64_t q0 = int64_t(it - hg * ntq) * kBlockM;
    const int qvalid = int(min(int64_t(kBlockM), a.n - q0));
    const int itn = cursor.next(a, it + 1, nitems, ntq, krange_s[0], krange_s[1], partial);
    if (itn < nitems) {
      // Buffer buf ^ 1 is free: the barrier ending the previous step (or the prologue's) comes
      // after every warp's last read of it.
      issue_item<T, D>(a, smem, buf ^ 1, itn, ntq, hk, b, partial);
      cp_async_commit();
    }

    const uint32_t qs_a = smem_addr(smem + S::kQ + buf * S::kQTileBytes);
    const uint32_t dos_a = smem_addr(smem + S::kDo + buf * S::kQTileBytes);
    const float* const lse_s = reinterpret_cast<const float*>(smem + S::kLse) + buf * kBlockM;
    const float* const dl_s = reinterpret_cast<const float*>(smem + S::kDelta) + buf * kBlockM;
    const int64_t* const qp_s = reinterpret_cast<const int64_t*>(smem + S::kQpos) + buf * kBlockM;

    // The item is computed in two halves of 32 queries (columns c0 .. c0 + 31 of S^T): S^T and
    // dP^T of a half are 16 + 16 accumulators beside the 2 * 4 * NO of dK and dV, which keeps
    // head_dim 128 within 255 registers. The K_w / V_w fragments are re-read per half (cheap:
    // 2 * NK extra ldmatrix.x4 per item against 40 * NK mma).
#pragma unroll 1
    for (int c0 = 0; c0 < kBlockM; c0 += 32) {
      // S^T = K_w Q^T: s[j] holds (keys g, g + 8) x (queries c0 + 8j + 2t, +1).
      float s[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < NK; ++kk) {
        uint32_t ka[4];
        ldmatrix_x4(ka, kw_a + xor_in_place(a_off, kk << 5));
        const uint32_t qx = qs_a + 2 * D * c0 + xor_in_place(b_off, kk << 5);
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          uint32_t qb[4];
          ldmatrix_x4(qb, qx + 2 * D * 16 * p);
          mma16816<T>(s[2 * p], ka, qb[0], qb[1]);
          mma16816<T>(s[2 * p + 1], ka, qb[2], qb[3]);
        }
      }

      // P^T = exp2(S^T * scale * log2 e - lse * log2 e). lse = -inf (a query row with no visible
      // key anywhere) becomes +inf, so its P is exp2(-inf) = 0 rather than exp2(+inf).
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 l = *reinterpret_cast<const float2*>(lse_s + c0 + 8 * j + 2 * tq);
        const float l2x = l.x == -INFINITY ? INFINITY : l.x * kLog2e;
        const float l2y = l.y == -INFINITY ? INFINITY : l.y * kLog2e;
        s[j][0] = exp2f(fmaf(s[j][0], a.scale_log2, -l2x));
        s[j][1] = exp2f(fmaf(s[j][1], a.scale_log2, -l2y));
        s[j][2] = exp2f(fmaf(s[j][2], a.scale_log2, -l2x));
        s[j][3] = exp2f(fmaf(s[j][3], a.scale_log2, -l2y));
      }
      // Masked entries are REPLACED by 0 (never multiplied: a hidden score may overflow to
      // inf). Keys beyond m and queries beyond n always; positions on partial tiles.
      if (cur_partial || qvalid < kBlockM || kvalid < kBlockN) {
        const bool kin0 = krow0 < kvalid, kin1 = krow1 < kvalid;
        const int64_t kp0 = cur_partial ? kpos_s[krow0] : 0, kp1 = cur_partial ? kpos_s[krow1] : 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = c0 + 8 * j + 2 * tq + e;
            bool vis0 = kin0 && col < qvalid, vis1 = kin1 && col < qvalid;
            if (cur_partial) {
              const int64_t qp = qp_s[col];
              vis0 = vis0 && kp0 <= qp;
              vis1 = vis1 && kp1 <= qp;
            }
            if (!vis0) s[j][e] = 0.0f;
            if (!vis1) s[j][2 + e] = 0.0f;
          }
        }
      }

      // dV_w += P^T dO. k-step kk covers queries c0 + 16kk .. +15 = S^T tiles 2kk and 2kk + 1,
      // whose accumulators are the A fragment: a0 = (key g, queries 2t, 2t+1) = s[2kk][0..1],
      // a1 = (key g+8, same) = s[2kk][2..3], a2 = (key g, queries 8+2t, 8+2t+1) = s[2kk+1][0..1],
      // a3 = (key g+8, same) = s[2kk+1][2..3]. dO is [query][d] = [k][n]: .trans.
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        uint32_t pa[4];
        pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int p = 0; p < NK; ++p) {
          uint32_t ob[4];
          ldmatrix_x4_trans(ob, dos_a + 2 * D * (c0 + 16 * kk) + xor_in_place(t_off, p << 5));
          mma16816<T>(dv[2 * p], pa, ob[0], ob[1]);
          mma16816<T>(dv[2 * p + 1], pa, ob[2], ob[3]);
        }
      }

      // dP^T = V_w dO^T: same shapes and addressing as S^T (V for K, dO for Q).
      float dp[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < NK; ++kk) {
        uint32_t va[4];
        ldmatrix_x4(va, vw_a + xor_in_place(a_off, kk << 5));
        const uint32_t ox = dos_a + 2 * D * c0 + xor_in_place(b_off, kk << 5);
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          uint32_t ob[4];
          ldmatrix_x4(ob, ox + 2 * D * 16 * p);
          mma16816<T>(dp[2 * p], va, ob[0], ob[1]);
          mma16816<T>(dp[2 * p + 1], va, ob[2], ob[3]);
        }
      }

      // dS^T = P^T * (dP^T - D), rounded to the input type: ds[j][0] = (key g, queries
      // c0 + 8j + 2t, +1), ds[j][1] = (key g + 8, same). Masked entries have P = 0: dS = 0.
      uint32_t ds[4][2];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 dd = *reinterpret_cast<const float2*>(dl_s + c0 + 8 * j + 2 * tq);
        ds[j][0] = pack2<T>(s[j][0] * (dp[j][0] - dd.x), s[j][1] * (dp[j][1] - dd.y));
        ds[j][1] = pack2<T>(s[j][2] * (dp[j][2] - dd.x), s[j][3] * (dp[j][3] - dd.y));
      }
      // dS^T rows of this warp to shared memory for dQ: (key row, query cols c0 + 8j + 2t, +1)
      // is word t of chunk c0 / 8 + j. Rows g and g + 8 have the same swizzle (row % 8).
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t sx = dst_a + xor_in_place(ds_off, (c0 / 8 + j) << 4);
        st_shared_b32(sx, ds[j][0]);
        st_shared_b32(sx + 2 * 8 * kBlockM, ds[j][1]);
      }

      // dK_w += dS^T Q (scale applied once at the end): A from ds exactly as P^T above; Q is
      // [query][d] = [k][n]: .trans.
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        const uint32_t da[4] = {ds[2 * kk][0], ds[2 * kk][1], ds[2 * kk + 1][0], ds[2 * kk + 1][1]};
#pragma unroll
        for (int p = 0; p < NK; ++p) {
          uint32_t qb[4];
          ldmatrix_x4_trans(qb, qs_a + 2 * D * (c0 + 16 * kk) + xor_in_place(t_off, p << 5));
          mma16816<T>(dk[2 * p], da, qb[0], qb[1]);
          mma16816<T>(dk[2 * p + 1], da, qb[2], qb[3]);
        }
      }
    }

    __syncthreads();  // every warp's dS^T rows are in shared memory

    // dQ of the item += scale * dS K, split over the warps: warp w owns query rows [16r, 16r + 16)
    // (r = w % kDqRowGroups) and head_dim columns [c * D / 2, (c + 1) * D / 2) (c = w /
    // kDqRowGroups), k over all kBlockN keys. A = dS (query rows, key k) read from the stored
    // dS^T = [key][query] with .trans: matrix i = (keys 16kk + 8 * (i >> 1) .. +7, query chunk
    // 2r + (i & 1)) gives a0 (queries 16r + g, keys 16kk + 2t), a1 (queries 16r + 8 + g), a2
    // (keys 16kk + 8 + 2t), a3 - the [n][k] B lane pattern. K is [key][d] = [k][n]: .trans; n16
    // chunk p of head_dim (columns 16p .. 16p + 15) is d chunks 2p, 2p + 1.
    // The k-step loop is outermost so that each dS fragment is read once per pass; the warp's
    // NQ column chunks are covered in passes of NP (accumulators 8 * NP per thread).
    {
      constexpr int NQ = NK / kDqColSplit;    // n16 chunks of head_dim per warp
      constexpr int NP = dq_pass_chunks<D>();  // n16 chunks per pass
      static_assert(NQ % NP == 0, "passes cover the warp's columns");
      const int rg = warp % kDqRowGroups, cr = warp / kDqRowGroups;
      float* const dq = a.dq + b * a.dq_sb + h * a.dq_sh;
      const int64_t qrow0 = q0 + rg * 16 + g, qrow1 = qrow0 + 8;
      const bool in0 = qrow0 < a.n, in1 = qrow1 < a.n;
      const bool vec2 = a.dq_vec2 != 0;
#pragma unroll 1
      for (int pc = cr * NQ; pc < cr * NQ + NQ; pc += NP) {
        float acc[NP][2][4];
#pragma unroll
        for (int p = 0; p < NP; ++p) {
#pragma unroll
          for (int x = 0; x < 2; ++x) acc[p][x][0] = acc[p][x][1] = acc[p][x][2] = acc[p][x][3] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          uint32_t da[4];
          ldmatrix_x4_trans(da, dst_a + 2 * kBlockM * 16 * kk + 2 * swz<kBlockM>(b_row, 2 * rg + b_chunk));
#pragma unroll
          for (int p = 0; p < NP; ++p) {
            uint32_t kb[4];
            ldmatrix_x4_trans(kb, ks_a + 2 * D * 16 * kk + xor_in_place(t_off, (pc + p) << 5));
            mma16816<T>(acc[p][0], da, kb[0], kb[1]);
            mma16816<T>(acc[p][1], da, kb[2], kb[3]);
          }
        }
#pragma unroll
        for (int p = 0; p < NP; ++p) {
#pragma unroll
          for (int x = 0; x < 2; ++x) {
            const int col = 16 * (pc + p) + 8 * x + 2 * tq;
            if (in0) red_add2(dq + qrow0 * a.dq_st + col, a.scale * acc[p][x][0], a.scale * acc[p][x][1], vec2);
            if (in1) red_add2(dq + qrow1 * a.dq_st + col, a.scale * acc[p][x][2], a.scale * acc[p][x][3], vec2);
          }
        }
      }
    }

    if (itn >= nitems) break;
    cp_async_wait_all();  // this thread's copies of item itn have landed ...
    __syncthreads();      // ... everyone's; every warp is done with buffer `buf` and dS^T
    it = itn;
    buf ^= 1;
  }

  // This block alone owns keys [key0, key0 + kBlockN) of KV head hk: plain += into dK, dV.
  // dk[j] / dv[j] hold (keys g, g + 8) x (d 8j + 2t, 8j + 2t + 1).
  float* const dkg = a.dk + b * a.dk_sb + hk * a.dk_sh;
  float* const dvg = a.dv + b * a.dv_sb + hk * a.dv_sh;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int kr = half == 0 ? krow0 : krow1;
    if (kr >= kvalid) continue;
    float* const krow = dkg + (key0 + kr) * a.dk_st + 2 * tq;
    float* const vrow = dvg + (key0 + kr) * a.dv_st + 2 * tq;
#pragma unroll
    for (int j = 0; j < NO; ++j) {
      const float kx = a.scale * dk[j][2 * half], ky = a.scale * dk[j][2 * half + 1];
      const float vx = dv[j][2 * half], vy = dv[j][2 * half + 1];
      if (a.dkv_vec2) {
        float2* const kp = reinterpret_cast<float2*>(krow + 8 * j);
        float2* const vp = reinterpret_cast<float2*>(vrow + 8 * j);
        const float2 ko = *kp, vo = *vp;
        *kp = make_float2(ko.x + kx, ko.y + ky);
        *vp = make_float2(vo.x + vx, vo.y + vy);
      } else {
        krow[8 * j] += kx;
        krow[8 * j + 1] += ky;
        vrow[8 * j] += vx;
        vrow[8 * j + 1] += vy;
      }
    }
  }
}

template <typename T, int D>
void launch(const Args& a, int64_t batch, int64_t kv_heads, cudaStream_t stream) {
  constexpr size_t smem = Smem<D>::kBytes;
  auto kernel = flash_backward_mma_kernel<T, D>;
  RINGPLAN_CUDA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const LaunchGrid g = launch_grid((a.m + kBlockN - 1) / kBlockN, kv_heads, batch, BlockOrder(a.order));
  Args ga = a;
  ga.order = int(g.order);  // the order the grid really has
  kernel<<<dim3(g.x, g.y, g.z), kThreads, smem, stream>>>(ga);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

bool aligned8(const TensorView& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 8 == 0 && t.stride_batch % 2 == 0 && t.stride_head % 2 == 0 &&
         t.stride_token % 2 == 0;
}

}  // namespace

const char* backward_impl_name(BackwardImpl impl) {
  switch (impl) {
    case BackwardImpl::automatic: return "automatic";
    case BackwardImpl::mma: return "mma";
    case BackwardImpl::wgmma: return "wgmma";
  }
  return "?";
}

std::string backward_impl_unavailable(BackwardImpl impl) {
  if (impl != BackwardImpl::wgmma) return {};
  if (!detail::wgmma_backward_built()) {
    return "the wgmma backward is not in this build (RINGPLAN_CUDA_ARCHITECTURES must list 90)";
  }
  const std::string device = detail::sm90_device_problem();
  return device.empty() ? device : "the wgmma backward needs " + device;
}

BackwardImpl resolve_backward_impl(BackwardImpl impl) {
  if (impl != BackwardImpl::automatic) return impl;
  return backward_impl_unavailable(BackwardImpl::wgmma).empty() ? BackwardImpl::wgmma : BackwardImpl::mma;
}

namespace detail {

#if !RINGPLAN_HAVE_WGMMA
// This build has no sm_90a code (attention_bwd_wgmma.cu not compiled).
bool wgmma_backward_built() { return false; }
void launch_backward_wgmma(const BlockParams&, const BackwardArgs&, float, BlockOrder, cudaStream_t) {
  throw std::invalid_argument("flash_backward: the wgmma backward is not in this build");
}
#endif

void launch_backward_mma(const BlockParams& p, const BackwardArgs& g, float scale, BlockOrder order,
                         cudaStream_t stream) {
  Args a{};
  a.q = p.q.data, a.k = p.k.data, a.v = p.v.data, a.dout = g.grad_out.data;
  a.q_sb = p.q.stride_batch, a.q_sh = p.q.stride_head, a.q_st = p.q.stride_token;
  a.k_sb = p.k.stride_batch, a.k_sh = p.k.stride_head, a.k_st = p.k.stride_token;
  a.v_sb = p.v.stride_batch, a.v_sh = p.v.stride_head, a.v_st = p.v.stride_token;
  a.do_sb = g.grad_out.stride_batch, a.do_sh = g.grad_out.stride_head, a.do_st = g.grad_out.stride_token;
  a.lse = g.lse.data, a.l_sb = g.lse.stride_batch, a.l_sh = g.lse.stride_head;
  a.delta = g.delta.data, a.d_sb = g.delta.stride_batch, a.d_sh = g.delta.stride_head;
  a.dq = static_cast<float*>(g.grad_q.data);
  a.dq_sb = g.grad_q.stride_batch, a.dq_sh = g.grad_q.stride_head, a.dq_st = g.grad_q.stride_token;
  a.dk = static_cast<float*>(g.grad_k.data);
  a.dk_sb = g.grad_k.stride_batch, a.dk_sh = g.grad_k.stride_head, a.dk_st = g.grad_k.stride_token;
  a.dv = static_cast<float*>(g.grad_v.data);
  a.dv_sb = g.grad_v.stride_batch, a.dv_sh = g.grad_v.stride_head, a.dv_st = g.grad_v.stride_token;
  a.q_pos = p.q_positions, a.k_pos = p.k_positions;
  a.n = p.q.tokens, a.m = p.k.tokens, a.group = p.q.heads / p.k.heads;
  a.kv_heads = p.k.heads, a.batch = p.k.batch;
  a.order = int(order);
  // The kernel counts (query head, query tile) items in int. Unreachable in practice (it needs
  // more than 2^37 query rows x heads), but checked rather than wrapped.
  if (a.group * ((a.n + kBlockM - 1) / kBlockM) > INT32_MAX) {
    throw std::invalid_argument("ringplan::kernels::cuda::flash_backward: heads / kv_heads * ceil(q.tokens / 64) = " +
                                std::to_string(a.group * ((a.n + kBlockM - 1) / kBlockM)) +
                                " exceeds 2^31 - 1 query tiles per KV head");
  }
  a.causal = p.causal ? 1 : 0;
  a.dq_vec2 = aligned8(g.grad_q) ? 1 : 0;
  a.dkv_vec2 = aligned8(g.grad_k) && aligned8(g.grad_v) ? 1 : 0;
  a.scale = scale;
  a.scale_log2 = scale * kLog2e;
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch<__nv_bfloat16, 64>(a, p.k.batch, p.k.heads, stream) : launch<__half, 64>(a, p.k.batch, p.k.heads, stream);
  } else {
    bf16 ? launch<__nv_bfloat16, 128>(a, p.k.batch, p.k.heads, stream)
         : launch<__half, 128>(a, p.k.batch, p.k.heads, stream);
  }
}

}  // namespace detail
}  // namespace ringplan::kernels::cuda
