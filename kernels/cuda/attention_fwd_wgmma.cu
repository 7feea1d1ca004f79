// Hopper forward on wgmma and TMA (FlashAttention-3 style): the sm_90 implementation of
// cuda::flash_forward (contracts in attention_cuda.hpp). Compiled for sm_90a only (wgmma and
// TMA do not exist elsewhere); flash_forward picks it on sm_90 devices.
//
// Work split: one thread block = 2 consumer warpgroups + 1 producer warpgroup (384 threads) = 128
// query rows of one (batch, head); consumer warpgroup w owns rows [64w, 64w + 64). The block
// visits the live 128-key tiles of its KV head (GQA: query head h reads KV head h / (heads /
// kv_heads)) in the order of fwd_detail::TileCursor, which every warp runs for itself.
//
// Producer warp (warp specialisation; the first warp of the producer warpgroup, which runs on 40
// registers per thread so that the consumers get 232): lane 0 issues TMA copies of Q, then per tile K and V into
// two K and two V buffers (128-byte swizzled, the layout wgmma reads; rows past the tensor's end
// arrive as zeros); the warp's lanes store the tile's key positions when the tile is partially
// masked. Each buffer has a "full" mbarrier (TMA bytes landed, positions stored) and an "empty"
// one (every consumer warp is done with it); the producer runs up to two tiles ahead.
//
// Consumer warpgroup, per tile i (wgmma_primitives.cuh has the layouts):
//   S_i = Q K_i^T: D/16 wgmma m64n128k16 from shared memory, 64 float accumulators per thread;
//   O += P_{i-1} V_{i-1}: P in registers (RS form: the S accumulators of n8 blocks 2k, 2k + 1 are
//     the A fragment of k-step k), V from shared memory MN-major (trans-b);
//   both issued asynchronously; the warpgroup waits for S_i only, masks it and runs the online
//   softmax while the tensor cores still work on P_{i-1} V_{i-1}, frees K_i, then waits for that
//   product, frees V_{i-1} and rescales O by the factor of S_i's softmax. So O after step i is
//   relative to row max m_i and includes tiles 0 .. i-1; the last tile's P V follows the loop.
// The two consumer warpgroups never wait for each other (no block-wide barrier after setup), so
// one's softmax overlaps the other's products.
//
// Causal masking and edges as in the mma.sync kernel (attention_fwd_mma.cu): key j is visible to
// query i iff k_pos[j] <= q_pos[i]; hidden tiles are skipped, visible tiles take no mask work,
// partial tiles and the last, short tile compare per element; rows with no visible key so far
// subtract 0 instead of -inf (P = 0, factor 0, never NaN) and end with O = 0, lse = -inf.
#include "kernels/cuda/attention_fwd_wgmma.hpp"
#include "kernels/cuda/attention_fwd_mma.hpp"

#include <cuda.h>  // CUtensorMap
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/mma_primitives.cuh"
#include "kernels/cuda/tile_walk.cuh"
#include "kernels/cuda/wgmma_primitives.cuh"
#include "kernels/cuda/wgmma_tma.hpp"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "attention_fwd_wgmma.cu is compiled for sm_90a only (kernels/cuda/CMakeLists.txt)"
#endif

namespace ringplan::kernels::cuda {
namespace {

using mma_detail::pack2;
using mma_detail::smem_addr;
using namespace wgmma_detail;
using fwd_detail::Args;

constexpr int kConsumerWarps = 4 * kWgmmaFwdWarpGroups;
constexpr int kProducerWarp = kConsumerWarps;  // first warp of the last warpgroup; its other 3 warps exit
constexpr int kThreads = 128 * (kWgmmaFwdWarpGroups + 1);
// Registers per thread after setmaxnreg: the launch gives every thread 65536 / 384 -> 168; the
// producer warpgroup drops to kProducerRegs so that the consumers can rise to kConsumerRegs
// (S 64 + O 64 + P 32 accumulator registers, plus addresses and softmax state).
constexpr int kProducerRegs = 40;
constexpr int kConsumerRegs = 232;
static_assert(128 * (kProducerRegs + kWgmmaFwdWarpGroups * kConsumerRegs) <= 65536, "register file of an SM");
constexpr int kBlockM = kWgmmaFwdBlockM;
constexpr int kBlockN = kWgmmaFwdBlockN;
constexpr int kNS = kBlockN / 2;  // S accumulators per thread (m64n128 over 128 threads)
using tma::kBoxCols;
constexpr float kLn2 = 0.6931471805599453f;

static_assert(kBlockN == 128, "S is one m64n128 accumulator; P V takes 8 k-steps");
static_assert(kBlockN % 32 == 0, "key positions: the producer's lanes store kBlockN / 32 each");

// Shared memory, every tile 1024-byte aligned (swizzle atoms): Q (kBlockM x D), K0, K1, V0, V1
// (kBlockN x D each), key positions of K0, K1 (int64 [2][kBlockN]), the tile index and partial
// flag of the tile in K0, K1 (int32 [2] each; tile -1 marks the end), then the mbarriers. The
// kernel aligns the dynamic base itself (kAlign extra bytes are requested).
template <int D>
struct Smem {
  static constexpr size_t kQBytes = size_t(kBlockM) * D * 2;
  static constexpr size_t kTileBytes = size_t(kBlockN) * D * 2;
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + kQBytes;         // K buffer s at kK + s * kTileBytes
  static constexpr size_t kV = kK + 2 * kTileBytes;  // V buffer s at kV + s * kTileBytes
  static constexpr size_t kKpos = kV + 2 * kTileBytes;
  static constexpr size_t kInfo = kKpos + 2 * kBlockN * sizeof(int64_t);  // int32 tile[2], partial[2]
  static constexpr size_t kBars = kInfo + 4 * sizeof(int32_t);
  static constexpr int kNumBars = 9;  // Q full; K full x2; V full x2; K empty x2; V empty x2
  static constexpr size_t kBytes = kBars + kNumBars * 8;
  static constexpr size_t kAlign = 1024;
};
static_assert(Smem<128>::kBytes + Smem<128>::kAlign <= 227 * 1024, "forward tiles exceed an sm_90 block");
static_assert(Smem<64>::kK % 1024 == 0 && Smem<128>::kK % 1024 == 0, "tiles on swizzle-atom boundaries");

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1)
    flash_forward_wgmma_kernel(const Args a, const __grid_constant__ CUtensorMap tm_q,
                               const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v) {
  using S = Smem<D>;
  constexpr int NK = D / 16;  // k-steps of Q K^T
  constexpr int NO = D / 2;   // O accumulators per thread (m64nD)
  constexpr uint32_t kTileBytes = uint32_t(S::kTileBytes);
  extern __shared__ unsigned char smem_raw[];
  unsigned char* const smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + S::kAlign - 1) & ~uintptr_t(S::kAlign - 1));
  int64_t* const kpos_s = reinterpret_cast<int64_t*>(smem + S::kKpos);
  int32_t* const tile_s = reinterpret_cast<int32_t*>(smem + S::kInfo);  // [2]; partial flags at [2 + s]
  const uint32_t q_a = smem_addr(smem + S::kQ), k_a = smem_addr(smem + S::kK), v_a = smem_addr(smem + S::kV);
  const uint32_t bars = smem_addr(smem + S::kBars);
  const uint32_t bar_q = bars;
  auto full_k = [&](int s) { return bars + 8u * uint32_t(1 + s); };
  auto full_v = [&](int s) { return bars + 8u * uint32_t(3 + s); };
  auto empty_k = [&](int s) { return bars + 8u * uint32_t(5 + s); };
  auto empty_v = [&](int s) { return bars + 8u * uint32_t(7 + s); };

  const int tid = int(threadIdx.x);
  const int warp = tid / 32, lane = tid & 31;
  // Launch order (tile_schedule.hpp; tile_major by default): the last query tile of every head
  // first (with sorted causal positions it sees the most keys), the first tiles last.
  const BlockCoord blk =
      block_coord(blockIdx.x, blockIdx.y, blockIdx.z, uint32_t((a.n + kBlockM - 1) / kBlockM), BlockOrder(a.order), true);
  const int b = blk.batch, h = blk.head;
  const int hk = h / int(a.group);
  const int64_t q0 = int64_t(blk.tile) * kBlockM;
  const int ntiles = int((a.m + kBlockN - 1) / kBlockN);
  const bool causal = a.causal != 0;

  if (tid == 0) {
    mbar_init(bar_q, 1);
    for (int s = 0; s < 2; ++s) {
      mbar_init(full_k(s), 32);  // every producer lane arrives (lane 0 with the TMA bytes)
      mbar_init(full_v(s), 1);
      mbar_init(empty_k(s), kConsumerWarps);
      mbar_init(empty_v(s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();  // the only block-wide barrier: from here on the warps meet at mbarriers

  if (warp >= kConsumerWarps) {
    setmaxnreg_dec<kProducerRegs>();
    if (warp != kProducerWarp) return;
    // Only this warp walks the tiles; it tells the consumers which tile each buffer holds
    // (tile_s, written before its arrival on the buffer's "full" barrier), and -1 after the
    // last one.
    int64_t qmin, qmax;
    fwd_detail::block_query_range<kBlockM>(causal, a.q_pos, q0, a.n, qmin, qmax);
    fwd_detail::TileCursor<kBlockN> cursor;
    cursor.range = a.k_tile_range;
    bool partial = false;
    int t = cursor.next(causal, 0, ntiles, qmin, qmax, partial);
    if (t < ntiles && lane == 0) {
      tma_prefetch_desc(&tm_q);
      tma_prefetch_desc(&tm_k);
      tma_prefetch_desc(&tm_v);
      mbar_arrive_expect_tx(bar_q, uint32_t(S::kQBytes));
#pragma unroll
      for (int c = 0; c < D / kBoxCols; ++c) {
        tma_load_4d(q_a + c * (kBlockM * 128), &tm_q, bar_q, c * kBoxCols, int(q0), int(h), int(b));
      }
    }
    for (int i = 0;; ++i) {
      const int s = i & 1;
      const uint32_t free_parity = ((i >> 1) & 1) ^ 1;  // the phase that freed buffer s for tile i
      const int key0 = t * kBlockN;
      mbar_wait(empty_k(s), free_parity);
      if (lane == 0) {
        tile_s[s] = t < ntiles ? t : -1;
        tile_s[2 + s] = partial ? 1 : 0;
      }
      if (t >= ntiles) {  // end marker: no bytes, every lane arrives
        mbar_arrive(full_k(s));
        return;
      }
      if (partial) {
        // Positions of keys beyond m are never read (those columns are masked by the count).
#pragma unroll
        for (int j = lane; j < kBlockN; j += 32) {
          if (key0 + j < a.m) kpos_s[s * kBlockN + j] = __ldg(a.k_pos + key0 + j);
        }
      }
      if (lane == 0) {
        mbar_arrive_expect_tx(full_k(s), kTileBytes);
#pragma unroll
        for (int c = 0; c < D / kBoxCols; ++c) {
          tma_load_4d(k_a + s * kTileBytes + c * (kBlockN * 128), &tm_k, full_k(s), c * kBoxCols, key0, int(hk), int(b));
        }
      } else {
        mbar_arrive(full_k(s));
      }
      mbar_wait(empty_v(s), free_parity);
      if (lane == 0) {
        mbar_arrive_expect_tx(full_v(s), kTileBytes);
#pragma unroll
        for (int c = 0; c < D / kBoxCols; ++c) {
          tma_load_4d(v_a + s * kTileBytes + c * (kBlockN * 128), &tm_v, full_v(s), c * kBoxCols, key0, int(hk), int(b));
        }
      }
      t = cursor.next(causal, t + 1, ntiles, qmin, qmax, partial);
    }
  }

  // ---- consumers ----
  setmaxnreg_inc<kConsumerRegs>();
  const int wg = warp / 4, g = lane >> 2, tq = lane & 3;
  // This thread's rows (block-relative): accumulators 4j, 4j + 1 -> row_a, 4j + 2, 4j + 3 -> row_a + 8.
  const int row_a = 64 * wg + 16 * (warp & 3) + g;
  // Their positions (INT64_MIN beyond n: no key is visible to them; such rows are never stored).
  int64_t qp[2] = {0, 0};
  if (causal) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int64_t r = q0 + row_a + 8 * hf;
      qp[hf] = r < a.n ? __ldg(a.q_pos + r) : INT64_MIN;
    }
  }

  float o[NO];
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i] = 0.0f;
  // Running max (log2 domain, scaled) and this thread's partial row sums for row_a, row_a + 8;
  // the sums are reduced over the quad at the end (the factors are quad-uniform).
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

  // The first buffer's tile (or -1: no live tile, the rows end with O = 0, lse = -inf).
  mbar_wait(full_k(0), 0);
  int t = tile_s[0];
  if (t >= 0) {
    // Descriptors without the start address's k-step offsets (added per instruction; offsets
    // stay inside the 14-bit address field: shared addresses are below 256 KiB).
    const uint64_t q_desc = make_desc(q_a + 64 * 128 * wg, 16, 1024);
    const uint64_t k_desc = make_desc(k_a, 16, 1024);
    const uint64_t v_desc = make_desc(v_a, kBlockN * 128, 1024);

    uint32_t p[kBlockN / 16][4];  // P of the previous tile: the A fragments of P V
    float s[kNS];

    // S = Q K^T with K from buffer kb, issued (asynchronous) and committed as one batch.
    auto issue_s = [&](int kb) {
#pragma unroll
      for (int kk = 0; kk < NK; ++kk) {
        // k-step kk: column half kk / 4, 32-byte step kk % 4 inside the atom rows.
        const uint32_t qoff = (kk / 4) * (kBlockM * 128) + (kk % 4) * 32;
        const uint32_t koff = kb * kTileBytes + (kk / 4) * (kBlockN * 128) + (kk % 4) * 32;
        wgmma_ss<kBlockN, T, 0, 0>(s, q_desc + (qoff >> 4), k_desc + (koff >> 4), kk > 0 ? 1 : 0);
      }
      wgmma_commit();
    };
    // O += P V with V from buffer vb, issued and committed as one batch.
    auto issue_pv = [&](int vb) {
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        const uint32_t voff = vb * kTileBytes + kk * 16 * 128;
        wgmma_rs_tb<D, T>(o, p[kk], v_desc + (voff >> 4), 1);
      }
      wgmma_commit();
    };
    // This warp is done with a buffer: one arrival per warp on its "empty" barrier.
    auto release = [&](uint32_t bar) {
      __syncwarp();
      if (lane == 0) mbar_arrive(bar);
    };
    // Mask and online softmax of the finished S of tile t (positions in buffer kb): S becomes
    // exp2(S - m) in place, the row max and sums move on, alpha receives the factor that takes
    // O to the new max.
    auto softmax = [&](int kb, bool tile_partial, float (&alpha)[2]) {
      const int kvalid = int(min(int64_t(kBlockN), a.m - int64_t(t) * kBlockN));
      // Scale into the log2 domain, then mask: columns past the last key, and on partial tiles
      // keys after the row's query.
#pragma unroll
      for (int e = 0; e < kNS; ++e) s[e] *= a.scale_log2;
      if (tile_partial || kvalid < kBlockN) {
        const int64_t* const kp = kpos_s + kb * kBlockN;
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * j + 2 * tq + e;
            const bool in_range = col < kvalid;
            const int64_t kpos = tile_partial && in_range ? kp[col] : 0;
            if (!(in_range && (!tile_partial || kpos <= qp[0]))) s[4 * j + e] = -INFINITY;
            if (!(in_range && (!tile_partial || kpos <= qp[1]))) s[4 * j + 2 + e] = -INFINITY;
          }
        }
      }
      // Row row_a holds s[4j], s[4j + 1]; row_a + 8 s[4j + 2], s[4j + 3]; a row spans the 4
      // lanes of a quad.
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        mx0 = fmaxf(mx0, fmaxf(s[4 * j], s[4 * j + 1]));
        mx1 = fmaxf(mx1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
      }
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      const float mn0 = fmaxf(mrow[0], mx0), mn1 = fmaxf(mrow[1], mx1);
      // No visible key so far: subtract 0 so exp2(-inf - ref) = 0 instead of NaN.
      const float ref0 = mn0 == -INFINITY ? 0.0f : mn0, ref1 = mn1 == -INFINITY ? 0.0f : mn1;
      alpha[0] = exp2f(mrow[0] - ref0);  // 0 while m = -inf
      alpha[1] = exp2f(mrow[1] - ref1);
      mrow[0] = mn0;
      mrow[1] = mn1;
      float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        s[4 * j] = exp2f(s[4 * j] - ref0);
        s[4 * j + 1] = exp2f(s[4 * j + 1] - ref0);
        s[4 * j + 2] = exp2f(s[4 * j + 2] - ref1);
        s[4 * j + 3] = exp2f(s[4 * j + 3] - ref1);
        sum0 += s[4 * j] + s[4 * j + 1];
        sum1 += s[4 * j + 2] + s[4 * j + 3];
      }
      lrow[0] = lrow[0] * alpha[0] + sum0;
      lrow[1] = lrow[1] * alpha[1] + sum1;
    };
    // P of tile t (rounded to the input type) into the A fragments of the next P V.
    auto pack_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        p[kk][0] = pack2<T>(s[8 * kk], s[8 * kk + 1]);
        p[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
        p[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
        p[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };

    mbar_wait(bar_q, 0);
    // First live tile (buffer 0): S and its softmax only (O is still 0, no factor to apply).
    {
      const bool tile_partial = tile_s[2] != 0;
      wgmma_fence();
      issue_s(0);
      wgmma_wait<0>();
      fence_regs(s);
      float alpha[2];
      softmax(0, tile_partial, alpha);
      release(empty_k(0));
      pack_p();
    }
    // Tile i (buffer i % 2, phase (i / 2) % 2 of its barriers): S of this tile and P V of the
    // previous one in flight together. Every batch is waited for in the step that issued it, so
    // no wgmma is in flight across the loop's back edge.
    int i = 1;
    for (;; ++i) {
      const int kb = i & 1, vb = kb ^ 1;
      mbar_wait(full_k(kb), uint32_t(i >> 1) & 1u);
      t = tile_s[kb];
      if (t < 0) break;
      const bool tile_partial = tile_s[2 + kb] != 0;
      // Both waits before the batch: a wait between two wgmma issues would make ptxas fence the
      // second one. V of the previous tile was issued before K of this one, so it is not later.
      mbar_wait(full_v(vb), uint32_t((i - 1) >> 1) & 1u);
      fence_regs(o);  // the rescale and the new P are written before the batch that reads them
      fence_regs(p);
      wgmma_fence();
      issue_s(kb);
      issue_pv(vb);
      wgmma_wait<1>();
      fence_regs(s);
      float alpha[2];
      softmax(kb, tile_partial, alpha);
      release(empty_k(kb));
      wgmma_wait<0>();
      fence_regs(o);
      release(empty_v(vb));
      // O (now including the previous tile) moves to the new row max; P of this tile replaces
      // the previous one, whose product has finished.
#pragma unroll
      for (int j = 0; j < NO / 4; ++j) {
        o[4 * j] *= alpha[0];
        o[4 * j + 1] *= alpha[0];
        o[4 * j + 2] *= alpha[1];
        o[4 * j + 3] *= alpha[1];
      }
      pack_p();
    }
    // The last tile's P V (tile i - 1, buffer (i - 1) % 2).
    const int vb = (i - 1) & 1;
    mbar_wait(full_v(vb), uint32_t((i - 1) >> 1) & 1u);
    fence_regs(o);
    fence_regs(p);
    wgmma_fence();
    issue_pv(vb);
    wgmma_wait<0>();
    fence_regs(o);
  }

  // O = O / l and lse; a row with no visible key (l = 0) gets O = 0, lse = -inf.
  float* const out = a.o + b * a.o_sb + h * a.o_sh;
  float* const lse = a.lse + b * a.l_sb + h * a.l_sh;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float l = lrow[hf];
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    const int64_t row = q0 + row_a + 8 * hf;
    if (row >= a.n) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* const orow = out + row * a.o_st + 2 * tq;
#pragma unroll
    for (int j = 0; j < NO / 4; ++j) {
      const float x = o[4 * j + 2 * hf] * inv, y = o[4 * j + 2 * hf + 1] * inv;
      if (a.o_vec2) {
        *reinterpret_cast<float2*>(orow + 8 * j) = make_float2(x, y);
      } else {
        orow[8 * j] = x;
        orow[8 * j + 1] = y;
      }
    }
    if (tq == 0) lse[row] = l > 0.0f ? (mrow[hf] + log2f(l)) * kLn2 : -INFINITY;
  }
}

template <typename T, int D>
void launch(const Args& a, const BlockParams& p, int64_t batch, cudaStream_t stream) {
  constexpr size_t smem = Smem<D>::kBytes + Smem<D>::kAlign;
  auto kernel = flash_forward_wgmma_kernel<T, D>;
  RINGPLAN_CUDA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const CUtensorMap tm_q = tma::make_map(p.q, kBlockM), tm_k = tma::make_map(p.k, kBlockN),
                    tm_v = tma::make_map(p.v, kBlockN);
  const LaunchGrid g = launch_grid((a.n + kBlockM - 1) / kBlockM, a.heads, batch, BlockOrder(a.order));
  Args ga = a;
  ga.order = int(g.order);  // the order the grid really has
  kernel<<<dim3(g.x, g.y, g.z), kThreads, smem, stream>>>(ga, tm_q, tm_k, tm_v);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

}  // namespace

namespace detail {

bool wgmma_forward_built() { return true; }

void launch_forward_wgmma(const BlockParams& p, const ForwardOut& o, float scale, BlockOrder order,
                          cudaStream_t stream) {
  // No keys: every row ends with O = 0, lse = -inf. TMA descriptors need every dimension >= 1,
  // so the mma.sync kernel (which needs none) writes that; it also takes the views TMA cannot
  // describe (tma::tma_unsuitable).
  if (p.k.tokens == 0 || !tma::tma_unsuitable(p.q).empty() || !tma::tma_unsuitable(p.k).empty() ||
      !tma::tma_unsuitable(p.v).empty()) {
    launch_forward_mma(p, o, scale, order, stream);
    return;
  }
  Args a = fwd_detail::make_args(p, o, scale, order);
  // Causal: per-tile key ranges for the kernel's tile walk, freed in stream order after it.
  const auto ranges = tile_detail::TileRanges::make<kBlockN>(a.k_pos, a.m, a.causal != 0, stream);
  a.k_tile_range = ranges.ptr();
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch<__nv_bfloat16, 64>(a, p, p.q.batch, stream) : launch<__half, 64>(a, p, p.q.batch, stream);
  } else {
    bf16 ? launch<__nv_bfloat16, 128>(a, p, p.q.batch, stream) : launch<__half, 128>(a, p, p.q.batch, stream);
  }
}

}  // namespace detail
}  // namespace ringplan::kernels::cuda
