// FlashAttention-2-style forward on mma.sync.m16n8k16: the implementation of
// cuda::flash_forward where the wgmma forward cannot run, or when asked for (ForwardImpl::mma;
// contracts in attention_cuda.hpp).
//
// Work split: one thread block = 4 warps = 128 query rows of one (batch, head); warp w owns rows
// [32w, 32w + 32) as two m16 tiles (mt = 0, 1: rows 32w + 16mt .. 32w + 16mt + 15). The block
// loops over 64-key tiles of its KV head (GQA: query head h reads KV head h / (heads / kv_heads)).
// Two m tiles per warp: every K and V fragment loaded from shared memory (ldmatrix) feeds two mma
// instructions; with one m tile the kernel was bound by the fragment loads.
//
// Per block:
//   Q tile -> shared memory (cp.async), kept there for the whole block: its fragments (ldmatrix.x4)
//   are reloaded per k-step of Q K^T. Registers at head_dim 128 go to O (2 x 16 x 128 / 32 = 128
//   floats per thread) and S (2 x 16 x 64 / 32 = 64); Q held in registers would need 64 more.
//   K, V tiles: cp.async 16-byte copies into a double buffer; the copy of the next live tile is
//   issued before the current tile is computed, so it overlaps the tensor-core work.
//   S = Q K^T: K through ldmatrix (non-transposed: K stored [key][d] row-major is the "col"
//   B operand). Online softmax in registers, log2 domain (scale * log2(e) folded into S).
//   P = exp2(S - m) is rounded to the input type IN REGISTERS and used as the A operand of P V:
//   the accumulators of two adjacent m16n8 tiles are exactly one m16n8k16 A fragment.
//   V through ldmatrix.trans. O accumulates in float32 registers.
//   End: O / rowsum written as float32, lse = (m + log2 l) * ln 2 (natural log).
//
// Fragment layouts: see mma_primitives.cuh. Both m tiles of a warp use the same lane -> (row,
// column) maps, their rows 16 apart: a lane holds rows g and g + 8 of each m tile, i.e. warp rows
// g, g + 8, g + 16, g + 24 (g = lane / 4), and columns 2t, 2t + 1 of every n8 tile (t = lane % 4).
//
// Causal masking: key j is visible to query i iff k_pos[j] <= q_pos[i]; positions are arbitrary
// (not assumed sorted). Every warp classifies key tiles against the BLOCK's query range (all 128
// rows; classify_tile, tile_schedule.hpp) 32 tiles at a time (one per lane, ballot); hidden tiles
// are skipped, visible tiles take no mask work, partial tiles compare the tile's key positions
// (staged in shared memory with the tile) with the thread's four query positions (staged in
// shared memory once per block). All warps read the same positions and so take the same
// decisions: the block's control flow stays uniform.
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

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention_cuda.hpp"
#include "kernels/cuda/attention_fwd_wgmma.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/mma_primitives.cuh"
#include "kernels/cuda/tile_schedule.hpp"
#include "kernels/cuda/tile_walk.cuh"

namespace ringplan::kernels::cuda {
namespace {

using namespace mma_detail;
using fwd_detail::Args;
using fwd_detail::TileCursor;

constexpr int kWarps = kMmaFwdWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kMT = kMmaFwdWarpTilesM;  // m16 tiles per warp
constexpr int kWarpRows = 16 * kMT;
constexpr int kBlockM = kMmaFwdBlockM;
constexpr int kBlockN = kMmaFwdBlockN;
constexpr float kLn2 = 0.6931471805599453f;

static_assert(kBlockM == kWarps * kWarpRows, "the warps' m tiles cover the block's rows");
static_assert(kMT == 2, "register budgets (min_blocks_per_sm, sub_step_keys) are sized for two m tiles per warp");
static_assert(kThreads == kBlockM, "query positions: one per thread into shared memory");
static_assert(kBlockN <= kThreads, "key positions: one per thread into shared memory");
static_assert(kBlockN == 64, "S of an m tile is 8 m16n8 tiles; P V takes 4 k-steps");

// Shared memory, in layout order: Q (kBlockM x D), K0, V0, K1, V1 (each kBlockN x D); all
// swizzled, no padding. Then the key positions of each K/V buffer (int64 [2][kBlockN]) and the
// block's query positions (int64 [kBlockM]; INT64_MIN for rows beyond n).
template <int D>
struct Smem {
  static constexpr int kQElems = kBlockM * D;
  static constexpr int kTileElems = kBlockN * D;
  static constexpr size_t kQ = 0;
  static constexpr size_t kKV = size_t(kQElems) * 2;  // buffer i: K at kKV + 2i tiles, V after it
  static constexpr size_t kKpos = kKV + 4 * size_t(kTileElems) * 2;
  static constexpr size_t kQpos = kKpos + 2 * kBlockN * sizeof(int64_t);
  static constexpr size_t kBytes = kQpos + kBlockM * sizeof(int64_t);
};
static_assert(Smem<128>::kBytes <= kMaxSmemBytesSm80, "forward tile does not fit an A100 block");
static_assert(Smem<64>::kKV % 128 == 0 && Smem<64>::kKpos % 16 == 0, "aligned regions");

// Key positions of tile [key0, key0 + kBlockN) into shared memory (beyond m: 0, never read: those
// columns are masked by the key count before positions are compared).
__device__ __forceinline__ void copy_kpos(int64_t* dst, const int64_t* k_pos, int64_t key0, int64_t m) {
  const int i = int(threadIdx.x);
  if (i < kBlockN) {
    const bool valid = key0 + i < m;
    cp_async8(dst + i, k_pos + (valid ? key0 + i : key0), valid);
  }
}

// ---- kernel ------------------------------------------------------------------------------

// Blocks per SM the register budget is sized for (4 warps each). head_dim 128: O 128 registers,
// S / P 64, Q and K fragments of one k-step 12, plus softmax state and addresses; two blocks
// (255 registers) and 2 x 98 KiB of shared memory. head_dim 64: O 64, S 64; three blocks
// (168 registers).
template <int D>
constexpr int min_blocks_per_sm() { return D == 64 ? 3 : 2; }

// Keys per softmax sub-step of a key tile (S of one sub-step is kMT x kSubN / 8 x 4 floats per
// thread): kBlockN, or 32 to halve S's registers at the price of reloading the Q fragments per
// sub-step (both spill-free under ptxas 13.0 for sm_90). With kBlockN the budgets above hold
// without spills only when the Q K^T k-step loop is unrolled by 2 (qk_unroll); fully unrolled,
// ptxas spills at both head dims.
template <int D>
constexpr int sub_step_keys() { return kBlockN; }
template <int D>
constexpr int qk_unroll() { return 2; }

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_blocks_per_sm<D>()) flash_forward_mma_kernel(const Args a) {
  using S = Smem<D>;
  constexpr int NK = D / 16;  // k-steps of Q K^T, pairs of d n-tiles of P V
  constexpr int NO = D / 8;   // m16n8 tiles of O per m tile
  constexpr int kSubN = sub_step_keys<D>();
  constexpr int NS = kSubN / 8;  // m16n8 tiles of S per m tile and sub-step
  constexpr int kQkUnroll = qk_unroll<D>();
  static_assert(kBlockN % kSubN == 0 && kSubN % 16 == 0, "sub-steps tile the key tile in k-steps");
  extern __shared__ __align__(128) unsigned char smem[];
  T* const q_s = reinterpret_cast<T*>(smem + S::kQ);
  T* const tiles = reinterpret_cast<T*>(smem + S::kKV);  // K0, V0, K1, V1
  int64_t* const kpos_s = reinterpret_cast<int64_t*>(smem + S::kKpos);
  int64_t* const qpos_s = reinterpret_cast<int64_t*>(smem + S::kQpos);

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  // Launch order (tile_schedule.hpp; tile_major by default): the last query tile of every head
  // first (with sorted causal positions it sees the most keys), the first tiles last.
  const BlockCoord blk =
      block_coord(blockIdx.x, blockIdx.y, blockIdx.z, uint32_t((a.n + kBlockM - 1) / kBlockM), BlockOrder(a.order), true);
  const int b = blk.batch, h = blk.head;
  const int64_t hk = h / a.group;
  const int64_t q0 = int64_t(blk.tile) * kBlockM;
  const T* const q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* const k = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh;
  const T* const v = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh;
  const int ntiles = int((a.m + kBlockN - 1) / kBlockN);

  // This thread's rows: block row wrow + 16 mt + 8 hf for m tile mt, half hf (C registers
  // 2hf, 2hf + 1).
  const int wrow = warp * kWarpRows + g;

  // The block's query range, identical in every warp.
  int64_t qmin, qmax;
  fwd_detail::block_query_range<kBlockM>(a.causal != 0, a.q_pos, q0, a.n, qmin, qmax);

  float o[kMT][NO][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int j = 0; j < NO; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
  }
  // Running max (log2 domain, scaled) and this thread's partial row sums, [mt][hf]. The max is
  // reduced over the quad every tile; the sums only at the end (the rescale factors are
  // quad-uniform, so the partial sums stay consistent).
  float mrow[kMT][2], lrow[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    mrow[mt][0] = mrow[mt][1] = -INFINITY;
    lrow[mt][0] = lrow[mt][1] = 0.0f;
  }

  TileCursor<kBlockN> cursor;
  cursor.range = a.k_tile_range;
  bool partial = false;
  int t = cursor.next(a.causal != 0, 0, ntiles, qmin, qmax, partial);
  if (t < ntiles) {
    // Prologue: Q, its positions (rows beyond n get INT64_MIN: every key is masked for them on
    // partial tiles; they are never stored) and the first live tile into buffer 0.
    if (a.causal) {
      const int64_t r = q0 + int(threadIdx.x);
      qpos_s[threadIdx.x] = r < a.n ? __ldg(a.q_pos + r) : INT64_MIN;
    }
    copy_tile<T, D, kBlockM, kThreads>(q_s, q, a.q_st, q0, a.n);
    copy_tile<T, D, kBlockN, kThreads>(tiles, k, a.k_st, int64_t(t) * kBlockN, a.m);
    copy_tile<T, D, kBlockN, kThreads>(tiles + S::kTileElems, v, a.v_st, int64_t(t) * kBlockN, a.m);
    if (partial) copy_kpos(kpos_s, a.k_pos, int64_t(t) * kBlockN, a.m);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    // Per-lane ldmatrix rows and chunks; every row below is a multiple of 8 plus lane & 7.
    // Q (non-trans, one m tile per x4): lanes 0-15 address rows 0-15 of the m tile at chunk 2kk,
    // lanes 16-31 the same rows at chunk 2kk + 1 -> a0, a1, a2, a3.
    const int q_row = warp * kWarpRows + (lane & 15), q_chunk = lane >> 4;
    // K (non-trans, two key n-tiles per x4): matrices (keys 0-7, chunk lo), (keys 0-7, hi),
    // (keys 8-15, lo), (keys 8-15, hi) -> b0, b1 of n-tile 2p, b0, b1 of 2p + 1.
    const int k_row = (lane & 7) + ((lane >> 4) << 3), k_chunk = (lane >> 3) & 1;
    // V (.trans, two d n-tiles per x4): matrices (keys 0-7, chunk 2p), (keys 8-15, 2p),
    // (keys 0-7, 2p + 1), (keys 8-15, 2p + 1) -> b0, b1 of n-tile 2p, b0, b1 of 2p + 1.
    const int v_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_chunk = lane >> 4;
    // Swizzled byte offsets of each lane's first address (k-step / n-tile pair 0) in its tile; the
    // other addresses add multiples of 16 rows (row & 7 unchanged) and XOR chunk bits, see below.
    const uint32_t q_off = 2 * swz<D>(q_row, q_chunk), k_off = 2 * swz<D>(k_row, k_chunk),
                   v_off = 2 * swz<D>(v_row, v_chunk);
    const uint32_t q_a = smem_addr(q_s), tiles_a = smem_addr(tiles);

    int buf = 0;
    for (;;) {
      const bool cur_partial = partial;
      const int64_t key0 = int64_t(t) * kBlockN;
      const int kvalid = int(min(int64_t(kBlockN), a.m - key0));
      const int tn = cursor.next(a.causal != 0, t + 1, ntiles, qmin, qmax, partial);
      if (tn < ntiles) {
        // Buffer buf ^ 1 is free: the barrier ending the previous step (or the prologue's, for
        // the first step) comes after every warp's last read of it. Copy loops not unrolled:
        // unrolled, their address offsets stay in registers across the tile loop (spills at
        // head_dim 128).
        T* const nk = tiles + (buf ^ 1) * 2 * S::kTileElems;
        copy_tile<T, D, kBlockN, kThreads, 1>(nk, k, a.k_st, int64_t(tn) * kBlockN, a.m);
        copy_tile<T, D, kBlockN, kThreads, 1>(nk + S::kTileElems, v, a.v_st, int64_t(tn) * kBlockN, a.m);
        if (partial) copy_kpos(kpos_s + (buf ^ 1) * kBlockN, a.k_pos, int64_t(tn) * kBlockN, a.m);
        cp_async_commit();
      }

      const uint32_t ks_a = tiles_a + buf * 4 * S::kTileElems, vs_a = ks_a + 2 * S::kTileElems;
      const int64_t* const kp = kpos_s + buf * kBlockN;
      const bool masked = cur_partial || kvalid < kBlockN;
      // Visibility of this thread's 16 columns of the tile (8j + 2t + e, j < 8, e < 2) for each of
      // its rows: vis[mt] bit 16 hf + 2j + e for row 16 mt + 8 hf + g of the warp. Computed once
      // per tile, before any S is live: the 64-bit position compares need registers that the
      // sub-steps give to S.
      static_assert(kBlockN == 64, "vis holds 16 columns of two rows per 32-bit word");
      uint32_t vis[kMT];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) vis[mt] = ~0u;
      if (masked) {
        int64_t qp[kMT][2];  // rows beyond n hold INT64_MIN: no key is visible to them
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          vis[mt] = 0u;
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) qp[mt][hf] = cur_partial ? qpos_s[wrow + 16 * mt + 8 * hf] : 0;
        }
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * j + 2 * tq + e;
            const bool in_range = col < kvalid;
            const int64_t kpos = cur_partial ? kp[col] : 0;
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
              for (int hf = 0; hf < 2; ++hf) {
                const bool v = in_range && (!cur_partial || kpos <= qp[mt][hf]);
                vis[mt] |= uint32_t(v) << (16 * hf + 2 * j + e);
              }
            }
          }
        }
      }

      // The tile in sub-steps of kSubN keys (S, softmax, P V each; one sub-step unless
      // sub_step_keys says otherwise). Not unrolled: one sub-step's S is live at a time.
#pragma unroll 1
      for (int c0 = 0; c0 < kBlockN; c0 += kSubN) {
        // S = Q K^T of keys c0 .. c0 + kSubN - 1: per m tile NS m16n8 tiles; s[mt][j] holds keys
        // c0 + 8j .. c0 + 8j + 7. Each K fragment feeds both m tiles.
        float s[kMT][NS][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int j = 0; j < NS; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
        }
#pragma unroll kQkUnroll
        for (int kk = 0; kk < NK; ++kk) {
          // Chunk 2kk + c of a lane's row r sits at element ((c ^ (r & 7)) ^ 2kk) << 3 of the row:
          // the lane's byte offset XOR kk << 5 (kk << 5 < 2D, so only the chunk bits change).
          const uint32_t qx = q_a + xor_in_place(q_off, kk << 5), kx = ks_a + xor_in_place(k_off, kk << 5);
          uint32_t qa[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(qa[mt], qx + 32 * D * mt);
#pragma unroll
          for (int p = 0; p < NS / 2; ++p) {
            uint32_t kb[4];
            ldmatrix_x4(kb, kx + 2 * D * (c0 + 16 * p));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              mma16816<T>(s[mt][2 * p], qa[mt], kb[0], kb[1]);
              mma16816<T>(s[mt][2 * p + 1], qa[mt], kb[2], kb[3]);
            }
          }
        }

        // Scale into the log2 domain, then mask (vis).
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int j = 0; j < NS; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][j][e] *= a.scale_log2;
          }
        }
        if (masked) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const uint32_t bits = vis[mt] >> (c0 / 4);  // bit 16 hf + 2j + e: column c0 + 8j + 2t + e
#pragma unroll
            for (int j = 0; j < NS; ++j) {
#pragma unroll
              for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                  if (((bits >> (16 * hf + 2 * j + e)) & 1u) == 0u) s[mt][j][2 * hf + e] = -INFINITY;
                }
              }
            }
          }
        }

        // Online softmax, per m tile. Row g: s[mt][j][0..1]; row g + 8: s[mt][j][2..3]; a row
        // spans the 4 lanes of a quad.
        bool rescale = false;
        float alpha[kMT][2];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
          for (int j = 0; j < NS; ++j) {
            mx0 = fmaxf(mx0, fmaxf(s[mt][j][0], s[mt][j][1]));
            mx1 = fmaxf(mx1, fmaxf(s[mt][j][2], s[mt][j][3]));
          }
#pragma unroll
          for (int off = 1; off <= 2; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
          }
          const float mn0 = fmaxf(mrow[mt][0], mx0), mn1 = fmaxf(mrow[mt][1], mx1);
          // No visible key so far: subtract 0 so exp2(-inf - ref) = 0 instead of NaN.
          const float ref0 = mn0 == -INFINITY ? 0.0f : mn0, ref1 = mn1 == -INFINITY ? 0.0f : mn1;
          alpha[mt][0] = exp2f(mrow[mt][0] - ref0);  // 0 while m = -inf
          alpha[mt][1] = exp2f(mrow[mt][1] - ref1);
          mrow[mt][0] = mn0;
          mrow[mt][1] = mn1;
          float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
          for (int j = 0; j < NS; ++j) {
            s[mt][j][0] = exp2f(s[mt][j][0] - ref0);
            s[mt][j][1] = exp2f(s[mt][j][1] - ref0);
            s[mt][j][2] = exp2f(s[mt][j][2] - ref1);
            s[mt][j][3] = exp2f(s[mt][j][3] - ref1);
            sum0 += s[mt][j][0] + s[mt][j][1];
            sum1 += s[mt][j][2] + s[mt][j][3];
          }
          lrow[mt][0] = lrow[mt][0] * alpha[mt][0] + sum0;
          lrow[mt][1] = lrow[mt][1] * alpha[mt][1] + sum1;
          rescale = rescale || alpha[mt][0] != 1.0f || alpha[mt][1] != 1.0f;
        }
        // Once the row maxima settle, every factor is 1: skip the O rescale for the whole warp.
        if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
            for (int j = 0; j < NO; ++j) {
              o[mt][j][0] *= alpha[mt][0];
              o[mt][j][1] *= alpha[mt][0];
              o[mt][j][2] *= alpha[mt][1];
              o[mt][j][3] *= alpha[mt][1];
            }
          }
        }

        // O += P V. k-step kk covers keys c0 + 16kk .. c0 + 16kk + 15 = S tiles 2kk and 2kk + 1 of
        // each m tile, whose accumulators are the A fragment: a0 = (row g, keys 2t, 2t+1) =
        // s[2kk][0..1], a1 = (row g+8, same) = s[2kk][2..3], a2 = (row g, keys 8+2t, 8+2t+1) =
        // s[2kk+1][0..1], a3 = (row g+8, same) = s[2kk+1][2..3]. Each V fragment feeds both m
        // tiles; V's chunk 2p + c sits at the lane's byte offset XOR p << 5 (as for Q and K above).
#pragma unroll
        for (int kk = 0; kk < NS / 2; ++kk) {
          uint32_t pa[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
          }
#pragma unroll
          for (int p = 0; p < NK; ++p) {
            uint32_t vb[4];
            ldmatrix_x4_trans(vb, vs_a + xor_in_place(v_off, p << 5) + 2 * D * (c0 + 16 * kk));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              mma16816<T>(o[mt][2 * p], pa[mt], vb[0], vb[1]);
              mma16816<T>(o[mt][2 * p + 1], pa[mt], vb[2], vb[3]);
            }
          }
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
  float* const out = a.o + b * a.o_sb + h * a.o_sh;
  float* const lse = a.lse + b * a.l_sb + h * a.l_sh;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = lrow[mt][hf];
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
      const int64_t row = q0 + wrow + 16 * mt + 8 * hf;
      if (row >= a.n) continue;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* const orow = out + row * a.o_st + 2 * tq;
#pragma unroll
      for (int j = 0; j < NO; ++j) {
        const float x = o[mt][j][2 * hf] * inv, y = o[mt][j][2 * hf + 1] * inv;
        if (a.o_vec2) {
          *reinterpret_cast<float2*>(orow + 8 * j) = make_float2(x, y);
        } else {
          orow[8 * j] = x;
          orow[8 * j + 1] = y;
        }
      }
      if (tq == 0) lse[row] = l > 0.0f ? (mrow[mt][hf] + log2f(l)) * kLn2 : -INFINITY;
    }
  }
}

template <typename T, int D>
void launch(const Args& a, int64_t batch, cudaStream_t stream) {
  constexpr size_t smem = Smem<D>::kBytes;
  auto kernel = flash_forward_mma_kernel<T, D>;
  RINGPLAN_CUDA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const LaunchGrid g = launch_grid((a.n + kBlockM - 1) / kBlockM, a.heads, batch, BlockOrder(a.order));
  Args ga = a;
  ga.order = int(g.order);  // the order the grid really has
  kernel<<<dim3(g.x, g.y, g.z), kThreads, smem, stream>>>(ga);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

// Compute capability of the current device as 10 * major + minor; 0 when it cannot be read.
int current_device_cc() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return 10 * major + minor;
}

}  // namespace

const char* forward_impl_name(ForwardImpl impl) {
  switch (impl) {
    case ForwardImpl::automatic: return "automatic";
    case ForwardImpl::mma: return "mma";
    case ForwardImpl::wgmma: return "wgmma";
  }
  return "?";
}

std::string forward_impl_unavailable(ForwardImpl impl) {
  if (impl != ForwardImpl::wgmma) return {};
  if (!detail::wgmma_forward_built()) {
    return "the wgmma forward is not in this build (RINGPLAN_CUDA_ARCHITECTURES must list 90)";
  }
  const std::string device = detail::sm90_device_problem();
  return device.empty() ? device : "the wgmma forward needs " + device;
}

namespace detail {

std::string sm90_device_problem() {
  // sm_90a code runs on compute capability 9.0 only.
  const int cc = current_device_cc();
  if (cc == 0) return "a CUDA device; there is none usable";
  if (cc != 90) return "an sm_90 GPU (H100/H200); this device is sm_" + std::to_string(cc);
  return {};
}

}  // namespace detail

ForwardImpl resolve_forward_impl(ForwardImpl impl) {
  if (impl != ForwardImpl::automatic) return impl;
  return forward_impl_unavailable(ForwardImpl::wgmma).empty() ? ForwardImpl::wgmma : ForwardImpl::mma;
}

namespace detail {

#if !RINGPLAN_HAVE_WGMMA
// This build has no sm_90a code (attention_fwd_wgmma.cu not compiled).
bool wgmma_forward_built() { return false; }
void launch_forward_wgmma(const BlockParams&, const ForwardOut&, float, BlockOrder, cudaStream_t) {
  throw std::invalid_argument("flash_forward: the wgmma forward is not in this build");
}
#endif

void launch_forward_mma(const BlockParams& p, const ForwardOut& o, float scale, BlockOrder order,
                        cudaStream_t stream) {
  Args a = fwd_detail::make_args(p, o, scale, order);
  // Causal: per-tile key ranges for the kernel's tile walk, freed in stream order after it.
  const auto ranges = tile_detail::TileRanges::make<kBlockN>(a.k_pos, a.m, a.causal != 0, stream);
  a.k_tile_range = ranges.ptr();
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch<__nv_bfloat16, 64>(a, p.q.batch, stream) : launch<__half, 64>(a, p.q.batch, stream);
  } else {
    bf16 ? launch<__nv_bfloat16, 128>(a, p.q.batch, stream) : launch<__half, 128>(a, p.q.batch, stream);
  }
}

}  // namespace detail
}  // namespace ringplan::kernels::cuda
