// Hopper forward on wgmma (FlashAttention-3 style, without warp specialisation): the sm_90
// implementation of cuda::flash_forward (contracts in attention_cuda.hpp). Compiled for sm_90a
// only (wgmma does not exist elsewhere); flash_forward picks it on sm_90 devices.
//
// Work split: one thread block = 2 warpgroups (256 threads) = 128 query rows of one (batch,
// head); warpgroup w owns rows [64w, 64w + 64). The block loops over the live 128-key tiles of
// its KV head (GQA: query head h reads KV head h / (heads / kv_heads)).
//
// Per key tile, per warpgroup (wgmma_primitives.cuh has the layouts):
//   S = Q K^T: D/16 wgmma m64n128k16, both operands from shared memory (Q and K tiles in the
//     128-byte swizzled layout wgmma reads), 64 float accumulators per thread.
//   Online softmax on S in registers (log2 domain), as in the mma.sync kernel.
//   O += P V: P rounded to the input type IN REGISTERS is the A operand (RS form: the S
//     accumulators of n8 blocks 2k, 2k + 1 are the A fragment of k-step k); V from shared
//     memory, MN-major (trans-b). O: D/2 float accumulators per thread.
// Overlap inside a warpgroup: iteration i issues S_i = Q K_i^T and then O += P_{i-1} V_{i-1}
// (both asynchronous), waits for S_i only, and runs the softmax of S_i while the tensor cores
// still work on P_{i-1} V_{i-1}; it then waits for that product and rescales O by the factor
// the softmax of S_i produced. So O after iteration i is relative to row max m_i and includes
// tiles 0 .. i-1; the last tile's P V runs after the loop.
//
// Loads: cp.async 16-byte copies by all 256 threads into two K buffers and two V buffers. At the
// top of iteration i (after the barrier that makes tile i's K visible), the block issues K of
// the next live tile into the other K buffer (free: it held K_{i-1}, whose product finished in
// iteration i-1) and V_i into V buffer i % 2 (free: it held V_{i-2}, finished in iteration i-1);
// both land during iteration i's compute and are waited for at the top of iteration i + 1.
// cp.async writes reach wgmma (the async proxy) through fence.proxy.async before the barrier.
//
// Causal masking and edges as in the mma.sync kernel (attention_fwd_mma.cu): key j is visible to
// query i iff k_pos[j] <= q_pos[i]; hidden tiles are skipped (fwd_common.cuh), visible
// tiles take no mask work, partial tiles and the last, short tile compare per element; rows
// with no visible key so far subtract 0 instead of -inf (P = 0, factor 0, never NaN) and end
// with O = 0, lse = -inf. Key rows beyond m and query rows beyond n are zero-filled.
#include "kernels/cuda/attention_fwd_wgmma.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/fwd_common.cuh"
#include "kernels/cuda/mma_primitives.cuh"
#include "kernels/cuda/wgmma_primitives.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "attention_fwd_wgmma.cu is compiled for sm_90a only (kernels/cuda/CMakeLists.txt)"
#endif

namespace ringplan::kernels::cuda {
namespace {

using mma_detail::cp_async16;
using mma_detail::cp_async8;
using mma_detail::cp_async_commit;
using mma_detail::cp_async_wait_all;
using mma_detail::pack2;
using mma_detail::smem_addr;
using namespace wgmma_detail;
using fwd_detail::Args;

constexpr int kThreads = 128 * kWgmmaFwdWarpGroups;
constexpr int kBlockM = kWgmmaFwdBlockM;
constexpr int kBlockN = kWgmmaFwdBlockN;
constexpr int kNS = kBlockN / 2;  // S accumulators per thread (m64n128 over 128 threads)
constexpr float kLn2 = 0.6931471805599453f;

static_assert(kBlockN == 128, "S is one m64n128 accumulator; P V takes 8 k-steps");
static_assert(kThreads == 2 * kBlockN && kThreads == 2 * kBlockM, "positions: one per thread pair");

// Shared memory, every tile 1024-byte aligned (swizzle atoms): Q (kBlockM x D), K0, K1, V0, V1
// (kBlockN x D each), key positions of K0, K1 (int64 [2][kBlockN]), query positions (int64
// [kBlockM]; INT64_MIN for rows beyond n). The kernel aligns the dynamic base itself (kAlign
// extra bytes are requested).
template <int D>
struct Smem {
  static constexpr size_t kQBytes = size_t(kBlockM) * D * 2;
  static constexpr size_t kTileBytes = size_t(kBlockN) * D * 2;
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + kQBytes;       // K buffer s at kK + s * kTileBytes
  static constexpr size_t kV = kK + 2 * kTileBytes;  // V buffer s at kV + s * kTileBytes
  static constexpr size_t kKpos = kV + 2 * kTileBytes;
  static constexpr size_t kQpos = kKpos + 2 * kBlockN * sizeof(int64_t);
  static constexpr size_t kBytes = kQpos + kBlockM * sizeof(int64_t);
  static constexpr size_t kAlign = 1024;
};
static_assert(Smem<128>::kBytes + Smem<128>::kAlign <= 227 * 1024, "forward tiles exceed an sm_90 block");
static_assert(Smem<64>::kK % 1024 == 0 && Smem<128>::kK % 1024 == 0, "tiles on swizzle-atom boundaries");

// Rows [row0, row0 + Rows) of a [tokens, D] slice into a 128B-swizzled [Rows][D] tile, all
// threads of the block sharing the copies; rows at or beyond nrows are zero-filled (their source
// address is row0's, which exists). Consecutive threads copy consecutive 16-byte chunks of a row.
// Unroll: of the per-thread copy loop; inside the tile loop 1, so that the copies' address
// offsets are recomputed instead of held in registers the accumulators need.
template <typename T, int D, int Rows, int Unroll = Rows * (D / 8) / kThreads>
__device__ __forceinline__ void copy_tile(T* dst, const T* src, int64_t stride, int64_t row0, int64_t nrows) {
  constexpr int kChunks = D / 8;
  constexpr int kPerThread = Rows * kChunks / kThreads;
  static_assert(Rows * kChunks % kThreads == 0, "copy loop has no tail");
#pragma unroll Unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int idx = int(threadIdx.x) + i * kThreads;
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t gr = row0 + r;
    const bool valid = gr < nrows;
    cp_async16(dst + swz128<Rows>(r, 8 * c), src + (valid ? gr : row0) * stride + 8 * c, valid);
  }
}

// Key positions of tile [key0, key0 + kBlockN) (beyond m: not copied, never read: those columns
// are masked by the key count before positions are compared).
__device__ __forceinline__ void copy_kpos(int64_t* dst, const int64_t* k_pos, int64_t key0, int64_t m) {
  const int i = int(threadIdx.x);
  if (i < kBlockN) {
    const bool valid = key0 + i < m;
    cp_async8(dst + i, k_pos + (valid ? key0 + i : key0), valid);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) flash_forward_wgmma_kernel(const Args a) {
  using S = Smem<D>;
  constexpr int NK = D / 16;  // k-steps of Q K^T
  constexpr int NO = D / 2;   // O accumulators per thread (m64nD)
  extern __shared__ unsigned char smem_raw[];
  unsigned char* const smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + S::kAlign - 1) & ~uintptr_t(S::kAlign - 1));
  T* const q_s = reinterpret_cast<T*>(smem + S::kQ);
  T* const k_s = reinterpret_cast<T*>(smem + S::kK);
  T* const v_s = reinterpret_cast<T*>(smem + S::kV);
  int64_t* const kpos_s = reinterpret_cast<int64_t*>(smem + S::kKpos);
  int64_t* const qpos_s = reinterpret_cast<int64_t*>(smem + S::kQpos);
  constexpr int kTileElems = kBlockN * D;

  const int tid = int(threadIdx.x);
  const int wg = tid / 128, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  // This thread's rows (block-relative): accumulators 4j, 4j + 1 -> row_a, 4j + 2, 4j + 3 -> row_a + 8.
  const int row_a = 64 * wg + 16 * ((tid / 32) & 3) + g;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t hk = h / a.group;
  // Query tiles in reverse launch order: with sorted causal positions the last tiles see the
  // most keys, and starting them first shortens the tail of the grid.
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kBlockM;
  const T* const q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* const k = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh;
  const T* const v = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh;
  const int ntiles = int((a.m + kBlockN - 1) / kBlockN);
  const bool causal = a.causal != 0;

  int64_t qmin, qmax;
  fwd_detail::block_query_range<kBlockM>(causal, a.q_pos, q0, a.n, qmin, qmax);

  float o[NO];
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i] = 0.0f;
  // Running max (log2 domain, scaled) and this thread's partial row sums for row_a, row_a + 8;
  // the sums are reduced over the quad at the end (the factors are quad-uniform).
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

  fwd_detail::TileCursor<kBlockN> cursor;
  bool partial = false;
  int t = cursor.next(causal, a.k_pos, a.m, 0, ntiles, qmin, qmax, partial);
  if (t < ntiles) {
    // Prologue: query positions (plain stores), Q and the first live tile's K (and positions).
    if (causal && tid < kBlockM) {
      const int64_t r = q0 + tid;
      qpos_s[tid] = r < a.n ? __ldg(a.q_pos + r) : INT64_MIN;
    }
    copy_tile<T, D, kBlockM>(q_s, q, a.q_st, q0, a.n);
    copy_tile<T, D, kBlockN>(k_s, k, a.k_st, int64_t(t) * kBlockN, a.m);
    if (partial) copy_kpos(kpos_s, a.k_pos, int64_t(t) * kBlockN, a.m);
    cp_async_commit();

    // Descriptors without the start address's k-step offsets (added per instruction; offsets
    // stay inside the 14-bit address field: shared addresses are below 256 KiB).
    const uint32_t q_a = smem_addr(q_s), k_a = smem_addr(k_s), v_a = smem_addr(v_s);
    const uint64_t q_desc = make_desc(q_a + 64 * 128 * wg, 16, 1024);
    const uint64_t k_desc = make_desc(k_a, 16, 1024);
    const uint64_t v_desc = make_desc(v_a, kBlockN * 128, 1024);

    uint32_t p[kBlockN / 16][4];  // P of the previous tile: the A fragments of P V
    float s[kNS];
    int buf = 0;  // K buffer of tile t; V of tile t goes to V buffer buf, too
    int tn = ntiles;
    bool cur_partial = false;

    // Top of a step: K of tile t (and V of the previous tile) landed for every thread, and the
    // previous step's products are finished in both warpgroups, so K[buf ^ 1] and V[buf] are
    // free; issue K (and positions) of the next live tile and V of tile t into them.
    auto start_step = [&]() {
      cur_partial = partial;
      cp_async_wait_all();
      fence_proxy_async();
      __syncthreads();
      tn = cursor.next(causal, a.k_pos, a.m, t + 1, ntiles, qmin, qmax, partial);
      if (tn < ntiles) {
        copy_tile<T, D, kBlockN, 1>(k_s + (buf ^ 1) * kTileElems, k, a.k_st, int64_t(tn) * kBlockN, a.m);
        if (partial) copy_kpos(kpos_s + (buf ^ 1) * kBlockN, a.k_pos, int64_t(tn) * kBlockN, a.m);
      }
      copy_tile<T, D, kBlockN, 1>(v_s + buf * kTileElems, v, a.v_st, int64_t(t) * kBlockN, a.m);
      cp_async_commit();
    };
    // S = Q K^T of tile t, issued (asynchronous) and committed as one batch.
    auto issue_s = [&]() {
#pragma unroll
      for (int kk = 0; kk < NK; ++kk) {
        // k-step kk: column half kk / 4, 32-byte step kk % 4 inside the atom rows.
        const uint32_t qoff = (kk / 4) * (kBlockM * 128) + (kk % 4) * 32;
        const uint32_t koff = buf * uint32_t(S::kTileBytes) + (kk / 4) * (kBlockN * 128) + (kk % 4) * 32;
        wgmma_ss<kBlockN, T>(s, q_desc + (qoff >> 4), k_desc + (koff >> 4), kk > 0 ? 1 : 0);
      }
      wgmma_commit();
    };
    // O += P V with V from buffer vb, issued and committed as one batch.
    auto issue_pv = [&](int vb) {
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        const uint32_t voff = vb * uint32_t(S::kTileBytes) + kk * 16 * 128;
        wgmma_rs_tb<D, T>(o, p[kk], v_desc + (voff >> 4), 1);
      }
      wgmma_commit();
    };
    // Mask and online softmax of the finished S of tile t: S becomes exp2(S - m) in place, the
    // row max and sums move on, and the factor that takes O to the new max is returned.
    auto softmax = [&](float (&alpha)[2]) {
      const int kvalid = int(min(int64_t(kBlockN), a.m - int64_t(t) * kBlockN));
      // Scale into the log2 domain, then mask: columns past the last key, and on partial tiles
      // keys after the row's query.
#pragma unroll
      for (int e = 0; e < kNS; ++e) s[e] *= a.scale_log2;
      if (cur_partial || kvalid < kBlockN) {
        const int64_t* const kp = kpos_s + buf * kBlockN;
        const int64_t qp0 = cur_partial ? qpos_s[row_a] : 0, qp1 = cur_partial ? qpos_s[row_a + 8] : 0;
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * j + 2 * tq + e;
            const bool in_range = col < kvalid;
            const int64_t kpos = cur_partial && in_range ? kp[col] : 0;
            if (!(in_range && (!cur_partial || kpos <= qp0))) s[4 * j + e] = -INFINITY;
            if (!(in_range && (!cur_partial || kpos <= qp1))) s[4 * j + 2 + e] = -INFINITY;
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

    // First live tile: S and its softmax only (O is still 0, no factor to apply).
    {
      start_step();
      wgmma_fence();
      issue_s();
      wgmma_wait<0>();
      fence_regs(s);
      float alpha[2];
      softmax(alpha);
      pack_p();
    }
    // Every further tile: S of this tile and P V of the previous one in flight together; the
    // softmax of S runs while P V is still on the tensor cores. Every batch is waited for in the
    // step that issued it, so no wgmma is in flight across the loop's back edge.
    while (tn < ntiles) {
      t = tn;
      buf ^= 1;
      start_step();
      wgmma_fence();
      issue_s();
      issue_pv(buf ^ 1);
      wgmma_wait<1>();
      fence_regs(s);
      float alpha[2];
      softmax(alpha);
      wgmma_wait<0>();
      fence_regs(o);
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

    // The last tile's P V: its V was issued at the top of the last step into V[buf].
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
    wgmma_fence();
    issue_pv(buf);
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
void launch(const Args& a, int64_t batch, cudaStream_t stream) {
  constexpr size_t smem = Smem<D>::kBytes + Smem<D>::kAlign;
  auto kernel = flash_forward_wgmma_kernel<T, D>;
  RINGPLAN_MMA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((a.n + kBlockM - 1) / kBlockM), unsigned(a.heads), unsigned(batch));
  kernel<<<grid, kThreads, smem, stream>>>(a);
  RINGPLAN_MMA_THROW_IF(cudaGetLastError());
}

}  // namespace

namespace detail {

bool wgmma_forward_built() { return true; }

void launch_forward_wgmma(const BlockParams& p, const ForwardOut& o, float scale, cudaStream_t stream) {
  const Args a = fwd_detail::make_args(p, o, scale);
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch<__nv_bfloat16, 64>(a, p.q.batch, stream) : launch<__half, 64>(a, p.q.batch, stream);
  } else {
    bf16 ? launch<__nv_bfloat16, 128>(a, p.q.batch, stream) : launch<__half, 128>(a, p.q.batch, stream);
  }
}

}  // namespace detail
}  // namespace ringplan::kernels::cuda
