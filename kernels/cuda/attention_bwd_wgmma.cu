// Hopper backward on wgmma and TMA (FlashAttention-3 style): the sm_90 implementation of
// cuda::flash_backward (contracts in attention_cuda.hpp). Compiled for sm_90a only; flash_backward
// picks it on sm_90 devices.
//
// Work split (key-tile outer loop, as the mma.sync backward): one thread block = 2 consumer
// warpgroups + 1 producer warpgroup (384 threads) = 128 keys of one (batch, KV head); consumer
// warpgroup w owns keys [64w, 64w + 64) of the tile, whose dK and dV accumulate in its registers.
// The block walks every query head of its KV head (GQA: heads hk * group .. + group - 1) and, per
// head, the 64-row query tiles; one flat item index covers (head, tile) pairs.
//
// Producer warp (the first warp of the producer warpgroup, on 24 registers per thread so that the
// consumers get 240): TMA copies of the key tile's K and V once, then per live item Q and dO into
// a double buffer (128-byte swizzled, the layout wgmma reads; rows past the tensor's end arrive as
// zeros); its lanes store the item's lse (times log2 e), D and, on partial tiles, query positions.
// "full" / "empty" mbarriers per buffer as in the forward (attention_fwd_wgmma.cu); the item
// index travels with the buffer (-1 after the last one).
//
// Consumer warpgroup w, per item (wgmma_primitives.cuh has the layouts):
//   S^T  = K_w Q^T            wgmma SS m64n64 (rows = the warpgroup's 64 keys, columns = queries)
//   dP^T = V_w dO^T           wgmma SS m64n64
//   P^T  = exp2(S^T * scale * log2 e - lse * log2 e), masked entries 0;  dS^T = P^T (dP^T - D)
//   dV_w += P^T dO            wgmma RS m64nD: P^T rounded to the input type in registers is the
//   dK_w += dS^T Q            A operand (the accumulators of n8 blocks 2k, 2k + 1 are the A
//                             fragment of k-step k); dO and Q N-major (trans-b)
//   dS^T -> shared memory (both warpgroups' 64 keys: the 128 x 64 tile), named barrier, then
//   dQ = dS K                 wgmma SS m64n64, A = the stored dS^T read M-major (trans-a), B = K
//                             N-major. head_dim 128: warpgroup w computes columns [64w, 64w + 64)
//                             over all 128 keys; head_dim 64: all 64 columns over its own 64 keys
//                             (both add). Added to global float32 with 2-wide reductions (other
//                             key tiles add to the same rows).
// dS^T is double-buffered: a warpgroup writes buffer i % 2 only after the named barrier of step
// i - 1, which the other warpgroup reaches after its dQ product of step i - 2 has finished.
// dK (times scale) and dV are added to global memory once at the end, read-add-write: the block is
// the only writer of its keys' rows, so GQA needs no atomics there.
//
// Causal masking: key j is visible to query i iff k_pos[j] <= q_pos[i]. Query tiles hidden from
// all of the block's keys are skipped (the producer classifies items with precomputed per-tile
// query ranges, tile_walk.cuh tile_detail::TileRanges); partial tiles compare positions per element. Rows with
// lse = -inf (no visible key in the whole sequence) get P = 0. Key rows beyond m and query rows
// beyond n are masked; their dK, dV, dQ rows are never stored.
#include "kernels/cuda/attention_bwd_wgmma.hpp"
#include "kernels/cuda/attention_bwd_mma.hpp"

#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder comes through the runtime)
#include <cudaTypedefs.h>
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
#error "attention_bwd_wgmma.cu is compiled for sm_90a only (kernels/cuda/CMakeLists.txt)"
#endif

namespace ringplan::kernels::cuda {
namespace {

using mma_detail::pack2;
using mma_detail::smem_addr;
using namespace wgmma_detail;

constexpr int kConsumerWarps = 4 * kWgmmaBwdWarpGroups;
constexpr int kProducerWarp = kConsumerWarps;  // first warp of the last warpgroup; its other 3 warps exit
constexpr int kThreads = 128 * (kWgmmaBwdWarpGroups + 1);
constexpr int kProducerRegs = 24;
constexpr int kConsumerRegs = 240;
static_assert(128 * (kProducerRegs + kWgmmaBwdWarpGroups * kConsumerRegs) <= 65536, "register file of an SM");
constexpr int kBlockN = kWgmmaBwdBlockN;  // keys owned by a block
constexpr int kBlockM = kWgmmaBwdBlockM;  // query rows per item
constexpr int kNS = kBlockM / 2;          // S^T (and dP^T) accumulators per thread: m64n64
using tma::kBoxCols;
constexpr int kWindow = 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kDsBarrier = 1;  // named barrier of the two consumer warpgroups (0 is __syncthreads)

static_assert(kBlockM == 64, "S^T is one m64n64 accumulator; dV and dK take 4 k-steps; dS^T rows are 128 bytes");
static_assert(kBlockN == 128, "dQ takes 8 k-steps over the block's keys");

struct Args {
  const int64_t *q_pos, *k_pos;  // may be null when !causal
  const int64_t* q_tile_range;   // causal: min, max query position of each 64-row tile
  const float *lse, *delta;
  int64_t l_sb, l_sh, d_sb, d_sh;
  float *dq, *dk, *dv;
  int64_t dq_sb, dq_sh, dq_st, dk_sb, dk_sh, dk_st, dv_sb, dv_sh, dv_st;
  int64_t n, m, group;  // group = heads / kv_heads
  int64_t kv_heads, batch;  // with the key tiles: the grid (launch_grid)
  int order;                // BlockOrder: the caller's launch_order, the grid's own at launch (launch_grid)
  int causal;
  int dq_vec2;   // dQ rows 8-byte aligned: column pairs as one 2-wide reduction
  int dkv_vec2;  // dK and dV rows 8-byte aligned: column pairs as float2
  float scale, scale_log2;
};

// Shared memory, tiles 1024-byte aligned: K, V (kBlockN x D), Q[2], dO[2] (kBlockM x D), dS^T[2]
// (kBlockN keys x kBlockM queries), then per buffer lse * log2 e and D (float [2][kBlockM]), query
// positions (int64 [2][kBlockM]), key positions (int64 [kBlockN]), the item of each buffer and
// its partial flag (int32 [2] each), and the mbarriers.
template <int D>
struct Smem {
  static constexpr size_t kKBytes = size_t(kBlockN) * D * 2;
  static constexpr size_t kQBytes = size_t(kBlockM) * D * 2;
  static constexpr size_t kDsBytes = size_t(kBlockN) * kBlockM * 2;
  static constexpr size_t kK = 0;
  static constexpr size_t kV = kK + kKBytes;
  static constexpr size_t kQ = kV + kKBytes;       // buffer s at kQ + s * kQBytes
  static constexpr size_t kDo = kQ + 2 * kQBytes;  // buffer s at kDo + s * kQBytes
  static constexpr size_t kDs = kDo + 2 * kQBytes;  // buffer s at kDs + s * kDsBytes
  static constexpr size_t kLse = kDs + 2 * kDsBytes;
  static constexpr size_t kDelta = kLse + 2 * kBlockM * sizeof(float);
  static constexpr size_t kQpos = kDelta + 2 * kBlockM * sizeof(float);
  static constexpr size_t kKpos = kQpos + 2 * kBlockM * sizeof(int64_t);
  static constexpr size_t kInfo = kKpos + kBlockN * sizeof(int64_t);
  static constexpr size_t kBars = kInfo + 4 * sizeof(int32_t);
  static constexpr int kNumBars = 5;  // K and V full; Q/dO full x2; Q/dO empty x2
  static constexpr size_t kBytes = kBars + kNumBars * 8;
  static constexpr size_t kAlign = 1024;
};
static_assert(Smem<128>::kBytes + Smem<128>::kAlign <= 227 * 1024, "backward tiles exceed an sm_90 block");
static_assert(Smem<64>::kQ % 1024 == 0 && Smem<128>::kDs % 1024 == 0 && Smem<64>::kDs % 1024 == 0,
              "tiles on swizzle-atom boundaries");

// *p += x, p[1] += y as one 2-wide global reduction (vec2: p 8-byte aligned) or two.
__device__ __forceinline__ void red_add2(float* p, float x, float y, bool vec2) {
  if (vec2) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(x), "f"(y) : "memory");
  } else {
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
  }
}

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1)
    flash_backward_wgmma_kernel(const Args a, const __grid_constant__ CUtensorMap tm_q,
                                const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                                const __grid_constant__ CUtensorMap tm_do) {
  using S = Smem<D>;
  constexpr int NKD = D / 16;  // k-steps over head_dim (S^T, dP^T)
  constexpr int NQ = 32;       // dQ accumulators per thread: m64n64
  // dQ product of warpgroup w (see the top): keys it sums over, and where its dS^T rows, K rows
  // and output columns start.
  constexpr int kDqKeys = D == 128 ? kBlockN : 64;
  constexpr int NO = D / 2;    // dK, dV accumulators per thread: m64nD
  extern __shared__ unsigned char smem_raw[];
  unsigned char* const smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + S::kAlign - 1) & ~uintptr_t(S::kAlign - 1));
  float* const lse_s = reinterpret_cast<float*>(smem + S::kLse);
  float* const delta_s = reinterpret_cast<float*>(smem + S::kDelta);
  int64_t* const qpos_s = reinterpret_cast<int64_t*>(smem + S::kQpos);
  int64_t* const kpos_s = reinterpret_cast<int64_t*>(smem + S::kKpos);
  int32_t* const info_s = reinterpret_cast<int32_t*>(smem + S::kInfo);  // item [2], partial [2]
  const uint32_t k_a = smem_addr(smem + S::kK), v_a = smem_addr(smem + S::kV);
  const uint32_t q_a = smem_addr(smem + S::kQ), do_a = smem_addr(smem + S::kDo), ds_a = smem_addr(smem + S::kDs);
  const uint32_t bars = smem_addr(smem + S::kBars);
  const uint32_t full_kv = bars;
  auto full_q = [&](int s) { return bars + 8u * uint32_t(1 + s); };
  auto empty_q = [&](int s) { return bars + 8u * uint32_t(3 + s); };

  const int tid = int(threadIdx.x);
  const int warp = tid / 32, lane = tid & 31;
  // Launch order (tile_schedule.hpp; tile_major by default): the first key tile of every KV head
  // first (with sorted causal positions the most query tiles see it), the last tiles last.
  const BlockCoord blk =
      block_coord(blockIdx.x, blockIdx.y, blockIdx.z, uint32_t((a.m + kBlockN - 1) / kBlockN), BlockOrder(a.order), false);
  const int b = blk.batch, hk = blk.head;
  const int64_t key0 = int64_t(blk.tile) * kBlockN;
  const int kvalid = int(min(int64_t(kBlockN), a.m - key0));
  const bool causal = a.causal != 0;
  const int ntq = int((a.n + kBlockM - 1) / kBlockM);
  const int nitems = int(a.group) * ntq;  // fits: the host checked

  if (tid == 0) {
    mbar_init(full_kv, 32);  // every producer lane arrives (lane 0 with the TMA bytes)
    for (int s = 0; s < 2; ++s) {
      mbar_init(full_q(s), 32);
      mbar_init(empty_q(s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();  // the only block-wide barrier

  if (warp >= kConsumerWarps) {
    setmaxnreg_dec<kProducerRegs>();
    if (warp != kProducerWarp) return;
    // The key tile's position range (lanes read keys L, L + 32, ...) and positions.
    int64_t kmin = INT64_MAX, kmax = INT64_MIN;
    if (causal) {
      for (int j = lane; j < kBlockN; j += 32) {
        if (j < kvalid) {
          const int64_t p = __ldg(a.k_pos + key0 + j);
          kpos_s[j] = p;
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
    // Live items, 32 per window (lane L: item base + L, its query tile's range).
    int base = -kWindow;
    uint32_t live = 0, partial_bits = 0;
    auto next_item = [&](int it, bool& is_partial) {
      while (it < nitems) {
        if (it >= base + kWindow) {
          base = it;
          const int item = base + lane;
          TileVisibility vis = TileVisibility::hidden;
          if (item < nitems) {
            const int qt = item % ntq;
            vis = causal ? classify_tile(true, __ldg(a.q_tile_range + 2 * qt), __ldg(a.q_tile_range + 2 * qt + 1),
                                         kmin, kmax)
                         : TileVisibility::visible;
          }
          live = __ballot_sync(0xffffffffu, vis != TileVisibility::hidden);
          partial_bits = __ballot_sync(0xffffffffu, vis == TileVisibility::partial);
        }
        const uint32_t rest = live >> (it - base);
        if (rest != 0u) {
          it += __ffs(int(rest)) - 1;
          is_partial = ((partial_bits >> (it - base)) & 1u) != 0u;
          return it;
        }
        it = base + kWindow;
      }
      is_partial = false;
      return nitems;
    };
    bool partial = false;
    int it = next_item(0, partial);
    if (it < nitems) {  // K and V only when some item is live (else no copy may be left in flight)
      if (lane == 0) {
        tma_prefetch_desc(&tm_q);
        tma_prefetch_desc(&tm_do);
        mbar_arrive_expect_tx(full_kv, 2 * uint32_t(S::kKBytes));
#pragma unroll
        for (int c = 0; c < D / kBoxCols; ++c) {
          tma_load_4d(k_a + c * (kBlockN * 128), &tm_k, full_kv, c * kBoxCols, int(key0), int(hk), int(b));
          tma_load_4d(v_a + c * (kBlockN * 128), &tm_v, full_kv, c * kBoxCols, int(key0), int(hk), int(b));
        }
      } else {
        mbar_arrive(full_kv);
      }
    }
    for (int i = 0;; ++i) {
      const int s = i & 1;
      mbar_wait(empty_q(s), uint32_t((i >> 1) & 1) ^ 1u);
      if (lane == 0) {
        info_s[s] = it < nitems ? it : -1;
        info_s[2 + s] = partial ? 1 : 0;
      }
      if (it >= nitems) {  // end marker: no bytes, every lane arrives
        mbar_arrive(full_q(s));
        return;
      }
      const int hg = it / ntq;
      const int64_t h = hk * a.group + hg;
      const int q0 = (it - hg * ntq) * kBlockM;
      const float* const lse = a.lse + b * a.l_sb + h * a.l_sh;
      const float* const delta = a.delta + b * a.d_sb + h * a.d_sh;
#pragma unroll
      for (int r = lane; r < kBlockM; r += 32) {
        const bool valid = q0 + r < a.n;
        // lse = -inf (a row with no visible key anywhere) becomes +inf: P = exp2(-inf) = 0.
        const float l = valid ? __ldg(lse + q0 + r) : INFINITY;
        lse_s[s * kBlockM + r] = l == -INFINITY ? INFINITY : l * kLog2e;
        delta_s[s * kBlockM + r] = valid ? __ldg(delta + q0 + r) : 0.0f;
        if (partial) qpos_s[s * kBlockM + r] = valid ? __ldg(a.q_pos + q0 + r) : INT64_MIN;
      }
      if (lane == 0) {
        mbar_arrive_expect_tx(full_q(s), 2 * uint32_t(S::kQBytes));
#pragma unroll
        for (int c = 0; c < D / kBoxCols; ++c) {
          tma_load_4d(q_a + s * uint32_t(S::kQBytes) + c * (kBlockM * 128), &tm_q, full_q(s), c * kBoxCols, q0, int(h),
                      int(b));
          tma_load_4d(do_a + s * uint32_t(S::kQBytes) + c * (kBlockM * 128), &tm_do, full_q(s), c * kBoxCols, q0,
                      int(h), int(b));
        }
      } else {
        mbar_arrive(full_q(s));
      }
      it = next_item(it + 1, partial);
    }
  }

  // ---- consumers ----
  setmaxnreg_inc<kConsumerRegs>();
  const int wg = warp / 4, g = lane >> 2, tq = lane & 3;
  // This thread's keys (block-relative): accumulator rows 4j, 4j + 1 -> krow, 4j + 2, 4j + 3 -> krow + 8.
  const int krow = 64 * wg + 16 * (warp & 3) + g;
  // dQ rows of this thread within an item (the m64 of the dQ product is the item's 64 queries).
  const int qrow = 16 * (warp & 3) + g;

  mbar_wait(full_q(0), 0);
  if (info_s[0] < 0) return;  // no live item: dK, dV += 0
  mbar_wait(full_kv, 0);
  const int64_t kp0 = causal && krow < kvalid ? kpos_s[krow] : 0;
  const int64_t kp1 = causal && krow + 8 < kvalid ? kpos_s[krow + 8] : 0;

  float dk[NO], dv[NO];
#pragma unroll
  for (int e = 0; e < NO; ++e) dk[e] = dv[e] = 0.0f;

  // Descriptors without per-instruction offsets (see attention_fwd_wgmma.cu).
  const uint64_t kA_desc = make_desc(k_a + 64 * 128 * wg, 16, 1024);          // K_w rows, K-major A
  const uint64_t vA_desc = make_desc(v_a + 64 * 128 * wg, 16, 1024);          // V_w rows, K-major A
  const uint64_t qB_desc = make_desc(q_a, 16, 1024);                          // Q rows, K-major B
  const uint64_t doB_desc = make_desc(do_a, 16, 1024);                        // dO rows, K-major B
  const uint64_t qT_desc = make_desc(q_a, kBlockM * 128, 1024);               // Q, N-major B (dK)
  const uint64_t doT_desc = make_desc(do_a, kBlockM * 128, 1024);             // dO, N-major B (dV)
  const uint64_t dsA_desc = make_desc(ds_a, 1024, 1024);                      // dS^T, M-major A (dQ)
  // K as the N-major B of dQ: column half w of all keys (head_dim 128), or the only half from the
  // warpgroup's own key rows (head_dim 64); dS^T rows to match.
  const uint64_t kT_desc =
      make_desc(k_a + (D == 128 ? uint32_t(wg) * (kBlockN * 128) : uint32_t(wg) * (64 * 128)), 1024, 1024);
  const uint32_t ds_row0 = D == 128 ? 0u : uint32_t(wg) * (64 * 128);
  const int dq_col0 = D == 128 ? 64 * wg : 0;

  // dQ of an item; add_dq adds it to global memory.
  float dq[NQ];
  int64_t dq_h = 0, dq_q0 = 0;
  int dq_rows = 0;  // valid rows of the item
  auto add_dq = [&]() {
    // dQ += scale * dS K: rows dq_q0 + qrow (+ 8), columns dq_col0 + 8j + 2t (+ 1).
    float* const dqg = a.dq + b * a.dq_sb + dq_h * a.dq_sh;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = qrow + 8 * hf;
      if (r >= dq_rows) continue;
      float* const row = dqg + (dq_q0 + r) * a.dq_st + dq_col0 + 2 * tq;
#pragma unroll
      for (int j = 0; j < NQ / 4; ++j) {
        red_add2(row + 8 * j, a.scale * dq[4 * j + 2 * hf], a.scale * dq[4 * j + 2 * hf + 1], a.dq_vec2 != 0);
      }
    }
  };

  for (int i = 0;; ++i) {
    const int s = i & 1;
    if (i > 0) mbar_wait(full_q(s), uint32_t(i >> 1) & 1u);
    const int it = info_s[s];
    if (it < 0) break;
    const bool partial = info_s[2 + s] != 0;
    const int hg = it / ntq;
    const int64_t h = hk * a.group + hg;
    const int64_t q0 = int64_t(it - hg * ntq) * kBlockM;
    const int qvalid = int(min(int64_t(kBlockM), a.n - q0));
    const uint32_t qbuf = uint32_t(s) * uint32_t(S::kQBytes);

    // S^T = K_w Q^T and dP^T = V_w dO^T, two batches (the softmax of S^T overlaps dP^T).
    float st[kNS], dpt[kNS];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < NKD; ++kk) {
      const uint32_t aoff = (kk / 4) * (kBlockN * 128) + (kk % 4) * 32;
      const uint32_t boff = qbuf + (kk / 4) * (kBlockM * 128) + (kk % 4) * 32;
      wgmma_ss<kBlockM, T, 0, 0>(st, kA_desc + (aoff >> 4), qB_desc + (boff >> 4), kk > 0 ? 1 : 0);
    }
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < NKD; ++kk) {
      const uint32_t aoff = (kk / 4) * (kBlockN * 128) + (kk % 4) * 32;
      const uint32_t boff = qbuf + (kk / 4) * (kBlockM * 128) + (kk % 4) * 32;
      wgmma_ss<kBlockM, T, 0, 0>(dpt, vA_desc + (aoff >> 4), doB_desc + (boff >> 4), kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<1>();
    fence_regs(st);

    // P^T in place; masked entries are REPLACED by 0 (a hidden score may overflow).
    const float* const l2 = lse_s + s * kBlockM;
    const float* const dl = delta_s + s * kBlockM;
    const bool masked = partial || qvalid < kBlockM || kvalid < kBlockN;
#pragma unroll
    for (int j = 0; j < kBlockM / 8; ++j) {
      const int col = 8 * j + 2 * tq;
      const float2 l = *reinterpret_cast<const float2*>(l2 + col);
      st[4 * j] = exp2f(fmaf(st[4 * j], a.scale_log2, -l.x));
      st[4 * j + 1] = exp2f(fmaf(st[4 * j + 1], a.scale_log2, -l.y));
      st[4 * j + 2] = exp2f(fmaf(st[4 * j + 2], a.scale_log2, -l.x));
      st[4 * j + 3] = exp2f(fmaf(st[4 * j + 3], a.scale_log2, -l.y));
      if (masked) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const bool qin = col + e < qvalid;
          bool vis0 = qin && krow < kvalid, vis1 = qin && krow + 8 < kvalid;
          if (partial) {
            const int64_t qp = qpos_s[s * kBlockM + col + e];
            vis0 = vis0 && kp0 <= qp;
            vis1 = vis1 && kp1 <= qp;
          }
          if (!vis0) st[4 * j + e] = 0.0f;
          if (!vis1) st[4 * j + 2 + e] = 0.0f;
        }
      }
    }
    uint32_t pa[kBlockM / 16][4], dsa[kBlockM / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      pa[kk][0] = pack2<T>(st[8 * kk], st[8 * kk + 1]);
      pa[kk][1] = pack2<T>(st[8 * kk + 2], st[8 * kk + 3]);
      pa[kk][2] = pack2<T>(st[8 * kk + 4], st[8 * kk + 5]);
      pa[kk][3] = pack2<T>(st[8 * kk + 6], st[8 * kk + 7]);
    }
    // dV_w += P^T dO (asynchronous; k-step kk = queries 16kk .. 16kk + 15), while dS^T is formed.
    fence_regs(pa);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      wgmma_rs_tb<D, T>(dv, pa[kk], doT_desc + ((qbuf + kk * 16 * 128) >> 4), 1);
    }
    wgmma_commit();
    wgmma_wait<1>();  // dP^T done (dV may still run)
    fence_regs(dpt);
#pragma unroll
    for (int j = 0; j < kBlockM / 8; ++j) {
      const float2 dd = *reinterpret_cast<const float2*>(dl + 8 * j + 2 * tq);
      dpt[4 * j] = st[4 * j] * (dpt[4 * j] - dd.x);
      dpt[4 * j + 1] = st[4 * j + 1] * (dpt[4 * j + 1] - dd.y);
      dpt[4 * j + 2] = st[4 * j + 2] * (dpt[4 * j + 2] - dd.x);
      dpt[4 * j + 3] = st[4 * j + 3] * (dpt[4 * j + 3] - dd.y);
    }
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      dsa[kk][0] = pack2<T>(dpt[8 * kk], dpt[8 * kk + 1]);
      dsa[kk][1] = pack2<T>(dpt[8 * kk + 2], dpt[8 * kk + 3]);
      dsa[kk][2] = pack2<T>(dpt[8 * kk + 4], dpt[8 * kk + 5]);
      dsa[kk][3] = pack2<T>(dpt[8 * kk + 6], dpt[8 * kk + 7]);
    }
    // dS^T rows of this warpgroup's keys into buffer s, before the dK product is issued: the A
    // fragment registers of an in-flight wgmma must not be accessed, not even read (PTX ISA,
    // wgmma.wait_group): (key r, queries 8j + 2t, + 1) is one
    // 4-byte store at row r, chunk j ^ (r % 8) (128B swizzle), byte 4t of the chunk.
    const uint32_t dsb = ds_a + uint32_t(s) * uint32_t(S::kDsBytes);
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {  // n8 block 2kk + hf: registers dsa[kk][2hf] (row krow), [2hf + 1] (krow + 8)
        const int j = 2 * kk + hf;
        mma_detail::st_shared_b32(dsb + uint32_t(krow * 128 + ((j ^ (krow & 7)) << 4) + 4 * tq), dsa[kk][2 * hf]);
        mma_detail::st_shared_b32(dsb + uint32_t((krow + 8) * 128 + ((j ^ ((krow + 8) & 7)) << 4) + 4 * tq),
                                  dsa[kk][2 * hf + 1]);
      }
    }

    // dK_w += dS^T Q (asynchronous).
    fence_regs(dsa);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      wgmma_rs_tb<D, T>(dk, dsa[kk], qT_desc + ((qbuf + kk * 16 * 128) >> 4), 1);
    }
    wgmma_commit();

    fence_proxy_async();
    named_barrier_sync(kDsBarrier, 128 * kWgmmaBwdWarpGroups);

    // dQ = dS K (k-step kk = keys 16kk .. 16kk + 15 of the summed range).
#pragma unroll
    for (int kk = 0; kk < kDqKeys / 16; ++kk) {
      wgmma_ss<64, T, 1, 1>(dq, dsA_desc + ((uint32_t(s) * uint32_t(S::kDsBytes) + ds_row0 + kk * 16 * 128) >> 4),
                            kT_desc + ((kk * 16 * 128) >> 4), kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(dq);
    fence_regs(dk);
    fence_regs(dv);
    // Q, dO, lse, D of buffer s are no longer read by this warp.
    __syncwarp();
    if (lane == 0) mbar_arrive(empty_q(s));
    dq_h = h, dq_q0 = q0, dq_rows = qvalid;
    add_dq();
  }

  // This block alone owns keys [key0, key0 + kBlockN) of KV head hk: plain += into dK, dV.
  float* const dkg = a.dk + b * a.dk_sb + hk * a.dk_sh;
  float* const dvg = a.dv + b * a.dv_sb + hk * a.dv_sh;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int kr = krow + 8 * hf;
    if (kr >= kvalid) continue;
    float* const krp = dkg + (key0 + kr) * a.dk_st + 2 * tq;
    float* const vrp = dvg + (key0 + kr) * a.dv_st + 2 * tq;
#pragma unroll
    for (int j = 0; j < NO / 4; ++j) {
      const float kx = a.scale * dk[4 * j + 2 * hf], ky = a.scale * dk[4 * j + 2 * hf + 1];
      const float vx = dv[4 * j + 2 * hf], vy = dv[4 * j + 2 * hf + 1];
      if (a.dkv_vec2) {
        float2* const kp = reinterpret_cast<float2*>(krp + 8 * j);
        float2* const vp = reinterpret_cast<float2*>(vrp + 8 * j);
        const float2 ko = *kp, vo = *vp;
        *kp = make_float2(ko.x + kx, ko.y + ky);
        *vp = make_float2(vo.x + vx, vo.y + vy);
      } else {
        krp[8 * j] += kx;
        krp[8 * j + 1] += ky;
        vrp[8 * j] += vx;
        vrp[8 * j + 1] += vy;
      }
    }
  }
}

template <typename T, int D>
void launch(const Args& a, const BlockParams& p, const BackwardArgs& g, cudaStream_t stream) {
  constexpr size_t smem = Smem<D>::kBytes + Smem<D>::kAlign;
  auto kernel = flash_backward_wgmma_kernel<T, D>;
  RINGPLAN_CUDA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const CUtensorMap tm_q = tma::make_map(p.q, kBlockM), tm_k = tma::make_map(p.k, kBlockN),
                    tm_v = tma::make_map(p.v, kBlockN), tm_do = tma::make_map(g.grad_out, kBlockM);
  const LaunchGrid lg = launch_grid((a.m + kBlockN - 1) / kBlockN, a.kv_heads, a.batch, BlockOrder(a.order));
  Args ga = a;
  ga.order = int(lg.order);  // the order the grid really has
  kernel<<<dim3(lg.x, lg.y, lg.z), kThreads, smem, stream>>>(ga, tm_q, tm_k, tm_v, tm_do);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

bool aligned8(const TensorView& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 8 == 0 && t.stride_batch % 2 == 0 && t.stride_head % 2 == 0 &&
         t.stride_token % 2 == 0;
}

}  // namespace

namespace detail {

bool wgmma_backward_built() { return true; }

void launch_backward_wgmma(const BlockParams& p, const BackwardArgs& g, float scale, BlockOrder order,
                           cudaStream_t stream) {
  // Views TMA cannot describe (tma::tma_unsuitable), and item counts near the int range (the
  // producer's item walk adds a window to them), go to the mma.sync kernel.
  if (!tma::tma_unsuitable(p.q).empty() || !tma::tma_unsuitable(p.k).empty() || !tma::tma_unsuitable(p.v).empty() ||
      !tma::tma_unsuitable(g.grad_out).empty() ||
      (p.q.heads / p.k.heads) * ((p.q.tokens + kBlockM - 1) / kBlockM) > int64_t(INT32_MAX) - 2 * kWindow) {
    launch_backward_mma(p, g, scale, order, stream);
    return;
  }
  Args a{};
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
  // Causal: per-tile query ranges for the producer's item walk, freed in stream order after it.
  const auto ranges = tile_detail::TileRanges::make<kBlockM>(a.q_pos, a.n, a.causal != 0, stream);
  a.q_tile_range = ranges.ptr();
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch<__nv_bfloat16, 64>(a, p, g, stream) : launch<__half, 64>(a, p, g, stream);
  } else {
    bf16 ? launch<__nv_bfloat16, 128>(a, p, g, stream) : launch<__half, 128>(a, p, g, stream);
  }
}

}  // namespace detail
}  // namespace ringplan::kernels::cuda
