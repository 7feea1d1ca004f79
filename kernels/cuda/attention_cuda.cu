// CUDA flash-attention kernels (forward, backward, D preprocess, LSE merge); API and contracts in
// attention_cuda.hpp, tile rule and shared-memory layouts in tile_schedule.hpp.
//
// Contents:
//   helpers        element conversion, block min/max of positions, 16-byte tile loads
//   forward        one block = 128 query rows of one (batch, head); streams 64-key tiles;
//                  online softmax in float32 (log2 domain), O accumulated in WMMA fragments
//   backward       one block = 64 keys of one (batch, KV head); loops over the head's query
//                  heads and 64-query tiles; dK, dV in WMMA fragments, dQ by float atomics
//   delta, merge   one warp per row
//   host side      validation, dispatch over (f16 | bf16) x (64 | 128), launches
//
// Row-scale trick: WMMA does not document which (row, col) each accumulator element holds, but
// two accumulator fragments of the same shape loaded from memory with the same layout map
// element i to the same (row, col). To scale the rows of O by per-row factors we write the
// factor of row r into every column of a 16x16 float scratch tile, load it as an accumulator
// fragment and multiply element by element.
#include "kernels/cuda/attention_cuda.hpp"
#include "kernels/cuda/attention_bwd_mma.hpp"
#include "kernels/cuda/attention_bwd_wgmma.hpp"
#include "kernels/cuda/attention_fwd_mma.hpp"
#include "kernels/cuda/attention_fwd_wgmma.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ringplan::kernels::cuda {
namespace {

using namespace nvcuda;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

#define RINGPLAN_CUDA_THROW_IF(call)                                                              \
  do {                                                                                            \
    const cudaError_t err_ = (call);                                                              \
    if (err_ != cudaSuccess) {                                                                    \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls start clean */          \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #call + \
                               " failed: " + cudaGetErrorString(err_));                           \
    }                                                                                             \
  } while (0)

// ---------------------------------------------------------------------------------------------
// helpers

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Min and max over the block of per-thread values (threads without a value pass INT64_MAX /
// INT64_MIN). Every thread receives the result. `red` holds 2 * warps slots. Contains one
// __syncthreads; the caller must synchronise before `red` is written again.
template <int WARPS>
__device__ __forceinline__ void block_minmax(int64_t v_min, int64_t v_max, int64_t* red, int64_t& out_min,
                                             int64_t& out_max) {
  for (int off = 16; off > 0; off >>= 1) {
    v_min = min(v_min, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(v_min), off)));
    v_max = max(v_max, static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(v_max), off)));
  }
  const int warp = threadIdx.x / 32;
  if ((threadIdx.x & 31) == 0) {
    red[warp] = v_min;
    red[WARPS + warp] = v_max;
  }
  __syncthreads();
  out_min = red[0];
  out_max = red[WARPS];
  for (int w = 1; w < WARPS; ++w) {
    out_min = min(out_min, red[w]);
    out_max = max(out_max, red[WARPS + w]);
  }
}

// Copies rows [row0, row0 + ROWS) of a [tokens, D] slice (token stride `stride_t`, elements) into
// shared memory with leading dimension `ld`; rows at or beyond `nrows` become zeros. 16-byte
// vector loads: the host checked pointer alignment and stride % 8 == 0.
template <typename T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* src, int64_t stride_t, int64_t row0,
                                          int64_t nrows) {
  constexpr int kChunksPerRow = D / 8;
  for (int idx = threadIdx.x; idx < ROWS * kChunksPerRow; idx += THREADS) {
    const int rr = idx / kChunksPerRow;
    const int cc = idx % kChunksPerRow;
    const int64_t g = row0 + rr;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (g < nrows) val = __ldg(reinterpret_cast<const uint4*>(src + g * stride_t + cc * 8));
    *reinterpret_cast<uint4*>(dst + rr * ld + cc * 8) = val;
  }
}

// Multiplies every row r of the 16 x (16*NF) accumulator tile `acc` by the row factor that lane
// pair (2r, 2r+1) holds in `factor`. `scratch` is the warp's 16x16 float tile.
template <int NF>
__device__ __forceinline__ void scale_rows(wmma::fragment<wmma::accumulator, 16, 16, 16, float> (&acc)[NF],
                                           float factor, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int r = lane >> 1, half = lane & 1;
#pragma unroll
  for (int c = 0; c < 8; ++c) scratch[r * 16 + half * 8 + c] = factor;
  __syncwarp();
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> f;
  wmma::load_matrix_sync(f, scratch, 16, wmma::mem_row_major);
#pragma unroll
  for (int j = 0; j < NF; ++j) {
#pragma unroll
    for (int i = 0; i < f.num_elements; ++i) acc[j].x[i] *= f.x[i];
  }
  __syncwarp();
}

// ---------------------------------------------------------------------------------------------
// forward

struct FwdArgs {
  const void *q, *k, *v;
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st;
  float* o;
  int64_t o_sb, o_sh, o_st;
  float* lse;
  int64_t l_sb, l_sh;
  const int64_t *q_pos, *k_pos;
  int64_t n, m, heads, kv_heads;
  int causal;
  float scale_log2;  // scale * log2(e): softmax runs on exp2
};

template <typename T, int D>
__global__ void __launch_bounds__(kFwdWarps * 32) flash_forward_kernel(const FwdArgs a) {
  constexpr ForwardSmem L = forward_smem(D);
  constexpr int LDH = ld_half(D), LDS = ld_scores(), LDP = ld_probs(), NF = D / 16;
  constexpr int kThreads = kFwdWarps * 32;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem + L.k_off);
  T* Vs = reinterpret_cast<T*>(smem + L.v_off);
  float* Ss = reinterpret_cast<float*>(smem + L.s_off);
  T* Ps = reinterpret_cast<T*>(smem + L.p_off);
  int64_t* kpos_s = reinterpret_cast<int64_t*>(smem + L.kpos_off);
  int64_t* red = kpos_s + kFwdBlockN;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid & 31;
  float* scratch = reinterpret_cast<float*>(smem + L.scratch_off) + warp * 256;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t hk = h * a.kv_heads / a.heads;  // GQA: query head h reads KV head floor(h*Hkv/H)
  const int64_t q0 = int64_t(blockIdx.x) * kFwdBlockM;
  const T* q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* k = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh;
  const T* v = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh;

  // The Q tile is staged in the score buffer, then kept in registers for the whole KV sweep.
  T* Qs = reinterpret_cast<T*>(Ss);
  load_tile<T, D, kFwdBlockM, kThreads>(Qs, LDH, q, a.q_st, q0, a.n);

  // Lane pair (2r, 2r+1) owns row r of the warp's 16 rows, columns [32*half, 32*half + 32).
  const int r = lane >> 1, half = lane & 1;
  const int64_t row = q0 + warp * 16 + r;
  const bool row_valid = row < a.n;
  const int64_t my_qpos = row_valid && a.q_pos ? a.q_pos[row] : 0;  // null positions: non-causal
  int64_t qmin, qmax;
  block_minmax<kFwdWarps>(row_valid ? my_qpos : INT64_MAX, row_valid ? my_qpos : INT64_MIN, red, qmin, qmax);

  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf[NF];
#pragma unroll
  for (int kk = 0; kk < NF; ++kk) wmma::load_matrix_sync(qf[kk], Qs + warp * 16 * LDH + kk * 16, LDH);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> of[NF];
#pragma unroll
  for (int j = 0; j < NF; ++j) wmma::fill_fragment(of[j], 0.0f);

  float m_run = -INFINITY;  // running row max of scale*log2(e)*S
  float l_run = 0.0f;       // running sum of exp2(S' - m_run)
  float* Sw = Ss + warp * 16 * LDS;
  T* Pw = Ps + warp * 16 * LDP;

  for (int64_t k0 = 0; k0 < a.m; k0 += kFwdBlockN) {
    // Previous step (and, at the first step, every warp's Q fragment load) is done with the
    // shared buffers before they are overwritten.
    __syncthreads();
    const int kvalid = int(min(int64_t(kFwdBlockN), a.m - k0));
    int64_t kp_min = INT64_MAX, kp_max = INT64_MIN;
    if (tid < kFwdBlockN) {
      if (tid < kvalid) {
        const int64_t p = a.k_pos ? a.k_pos[k0 + tid] : 0;  // null positions: non-causal
        kpos_s[tid] = p;
        kp_min = kp_max = p;
      } else {
        kpos_s[tid] = INT64_MAX;
      }
    }
    int64_t kmin, kmax;
    block_minmax<kFwdWarps>(kp_min, kp_max, red, kmin, kmax);
    const TileVisibility vis = classify_tile(a.causal != 0, qmin, qmax, kmin, kmax);
    if (vis == TileVisibility::hidden) continue;  // uniform over the block: same smem values
    const bool masked = vis == TileVisibility::partial || kvalid < kFwdBlockN;
    load_tile<T, D, kFwdBlockN, kThreads>(Ks, LDH, k, a.k_st, k0, a.m);
    load_tile<T, D, kFwdBlockN, kThreads>(Vs, LDH, v, a.v_st, k0, a.m);
    __syncthreads();

    // S (16 x 64 per warp) = Q_w K^T
#pragma unroll
    for (int j = 0; j < kFwdBlockN / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc;
      wmma::fill_fragment(sacc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < NF; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, Ks + j * 16 * LDH + kk * 16, LDH);
        wmma::mma_sync(sacc, qf[kk], kf, sacc);
      }
      wmma::store_matrix_sync(Sw + j * 16, sacc, LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of the lane's half row (log2 domain). Two passes over shared memory
    // instead of a 32-float register copy: registers hold O and Q, occupancy needs the rest.
    const float* srow = Sw + r * LDS + half * 32;
    auto score = [&](int c) {
      const int col = half * 32 + c;
      const bool visible = !masked || (col < kvalid && (!a.causal || kpos_s[col] <= my_qpos));
      return visible ? srow[c] * a.scale_log2 : -INFINITY;
    };
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; ++c) mx = fmaxf(mx, score(c));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_run, mx);
    // While every key so far is hidden m_new is -inf; subtracting 0 instead keeps exp2 at 0
    // rather than NaN (-inf - -inf).
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(m_run - m_use);  // 0 when m_run = -inf
    float sum = 0.0f;
    T* prow = Pw + r * LDP + half * 32;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const float p = exp2f(score(c) - m_use);
      sum += p;
      prow[c] = from_float<T>(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    if (!__all_sync(0xffffffffu, alpha == 1.0f)) scale_rows<NF>(of, alpha, scratch);
    __syncwarp();  // P rows written by every lane before the warp reads P as a fragment

    // O_w += P_w V
#pragma unroll
    for (int kk = 0; kk < kFwdBlockN / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
      wmma::load_matrix_sync(pf, Pw + kk * 16, LDP);
#pragma unroll
      for (int j = 0; j < NF; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
        wmma::load_matrix_sync(vf, Vs + kk * 16 * LDH + j * 16, LDH);
        wmma::mma_sync(of[j], pf, vf, of[j]);
      }
    }
  }

  // O = O / l; rows with no visible key (l = 0) stay 0 and get lse = -inf.
  scale_rows<NF>(of, l_run > 0.0f ? 1.0f / l_run : 0.0f, scratch);
  float* o = a.o + b * a.o_sb + h * a.o_sh;
#pragma unroll
  for (int j = 0; j < NF; ++j) {
    wmma::store_matrix_sync(scratch, of[j], 16, wmma::mem_row_major);
    __syncwarp();
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int idx = e * 32 + lane;
      const int64_t grow = q0 + warp * 16 + idx / 16;
      if (grow < a.n) o[grow * a.o_st + j * 16 + idx % 16] = scratch[idx];
    }
    __syncwarp();
  }
  if (half == 0 && row_valid) {
    a.lse[b * a.l_sb + h * a.l_sh + row] = l_run > 0.0f ? (m_run + log2f(l_run)) * kLn2 : -INFINITY;
  }
}

// ---------------------------------------------------------------------------------------------
// backward

struct BwdArgs {
  const void *q, *k, *v, *dout;
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st, do_sb, do_sh, do_st;
  const float *lse, *delta;
  int64_t l_sb, l_sh, d_sb, d_sh;
  float *dq, *dk, *dv;
  int64_t dq_sb, dq_sh, dq_st, dk_sb, dk_sh, dk_st, dv_sb, dv_sh, dv_st;
  const int64_t *q_pos, *k_pos;
  int64_t n, m, heads, kv_heads;
  int causal;
  float scale, scale_log2;
};

// Adds the 16 x (16*NF) accumulator tile to rows [row0, row0 + 16) of a float32 [tokens, D]
// slice, skipping rows >= nrows. ATOMIC for dQ (shared by key tiles), plain for dK / dV.
template <bool ATOMIC, int NF>
__device__ __forceinline__ void add_tile_to_global(wmma::fragment<wmma::accumulator, 16, 16, 16, float>& f,
                                                   int col0, float factor, float* scratch, float* dst,
                                                   int64_t stride_t, int64_t row0, int64_t nrows) {
  const int lane = threadIdx.x & 31;
  wmma::store_matrix_sync(scratch, f, 16, wmma::mem_row_major);
  __syncwarp();
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int idx = e * 32 + lane;
    const int64_t g = row0 + idx / 16;
    if (g < nrows) {
      float* p = dst + g * stride_t + col0 + idx % 16;
      if (ATOMIC) {
        atomicAdd(p, factor * scratch[idx]);
      } else {
        *p += factor * scratch[idx];
      }
    }
  }
  __syncwarp();
}

template <typename T, int D>
__global__ void __launch_bounds__(kBwdWarps * 32) flash_backward_kernel(const BwdArgs a) {
  constexpr BackwardSmem L = backward_smem(D);
  constexpr int LDH = ld_half(D), LDS = ld_scores(), LDP = ld_probs(), NF = D / 16;
  constexpr int kThreads = kBwdWarps * 32;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem + L.k_off);
  T* Vs = reinterpret_cast<T*>(smem + L.v_off);
  T* Qs = reinterpret_cast<T*>(smem + L.q_off);
  T* dOs = reinterpret_cast<T*>(smem + L.do_off);
  float* Ss = reinterpret_cast<float*>(smem + L.s_off);
  T* Ps = reinterpret_cast<T*>(smem + L.p_off);
  float* lse_s = reinterpret_cast<float*>(smem + L.rows_off);
  float* d_s = lse_s + kBwdBlockM;
  int64_t* qpos_s = reinterpret_cast<int64_t*>(d_s + kBwdBlockM);
  int64_t* kpos_s = reinterpret_cast<int64_t*>(smem + L.kpos_off);
  int64_t* red = kpos_s + kBwdBlockN;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid & 31;
  float* scratch = reinterpret_cast<float*>(smem + L.scratch_off) + warp * 256;
  const int64_t b = blockIdx.z, hk = blockIdx.y;
  const int64_t k0 = int64_t(blockIdx.x) * kBwdBlockN;
  const int kvalid = int(min(int64_t(kBwdBlockN), a.m - k0));
  const T* k = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh;
  const T* v = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh;

  int64_t kp_min = INT64_MAX, kp_max = INT64_MIN;
  if (tid < kBwdBlockN) {
    if (tid < kvalid) {
      const int64_t p = a.k_pos ? a.k_pos[k0 + tid] : 0;  // null positions: non-causal
      kpos_s[tid] = p;
      kp_min = kp_max = p;
    } else {
      kpos_s[tid] = INT64_MAX;
    }
  }
  load_tile<T, D, kBwdBlockN, kThreads>(Ks, LDH, k, a.k_st, k0, a.m);
  load_tile<T, D, kBwdBlockN, kThreads>(Vs, LDH, v, a.v_st, k0, a.m);
  int64_t kmin, kmax;
  block_minmax<kBwdWarps>(kp_min, kp_max, red, kmin, kmax);

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dk[NF], dv[NF];
#pragma unroll
  for (int j = 0; j < NF; ++j) {
    wmma::fill_fragment(dk[j], 0.0f);
    wmma::fill_fragment(dv[j], 0.0f);
  }
  const int r = lane >> 1, half = lane & 1;
  float* Sw = Ss + warp * 16 * LDS;
  T* Pw = Ps + warp * 16 * LDP;
  const int64_t group = a.heads / a.kv_heads;  // query heads hk*group .. hk*group+group-1 read KV head hk

  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    const T* q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
    const T* dout = static_cast<const T*>(a.dout) + b * a.do_sb + h * a.do_sh;
    const float* lse = a.lse + b * a.l_sb + h * a.l_sh;
    const float* delta = a.delta + b * a.d_sb + h * a.d_sh;
    float* dq = a.dq + b * a.dq_sb + h * a.dq_sh;

    for (int64_t q0 = 0; q0 < a.n; q0 += kBwdBlockM) {
      __syncthreads();  // the previous step is done with Q, dO, P/dS and the row buffers
      int64_t qp_min = INT64_MAX, qp_max = INT64_MIN;
      if (tid < kBwdBlockM) {
        const int64_t row = q0 + tid;
        if (row < a.n) {
          const int64_t p = a.q_pos ? a.q_pos[row] : 0;  // null positions: non-causal
          qpos_s[tid] = p;
          qp_min = qp_max = p;
          lse_s[tid] = lse[row];
          d_s[tid] = delta[row];
        } else {
          // Padding rows: lse = +inf makes P = exp2(S - inf) = 0, so they contribute nothing.
          qpos_s[tid] = INT64_MIN;
          lse_s[tid] = INFINITY;
          d_s[tid] = 0.0f;
        }
      }
      int64_t qmin, qmax;
      block_minmax<kBwdWarps>(qp_min, qp_max, red, qmin, qmax);
      const TileVisibility vis = classify_tile(a.causal != 0, qmin, qmax, kmin, kmax);
      if (vis == TileVisibility::hidden) continue;
      const bool masked = vis == TileVisibility::partial || kvalid < kBwdBlockN;
      load_tile<T, D, kBwdBlockM, kThreads>(Qs, LDH, q, a.q_st, q0, a.n);
      load_tile<T, D, kBwdBlockM, kThreads>(dOs, LDH, dout, a.do_st, q0, a.n);
      __syncthreads();

      // S (rows of this warp) = Q_w K^T
#pragma unroll
      for (int j = 0; j < kBwdBlockN / 16; ++j) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc;
        wmma::fill_fragment(sacc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < NF; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
          wmma::load_matrix_sync(qf, Qs + warp * 16 * LDH + kk * 16, LDH);
          wmma::load_matrix_sync(kf, Ks + j * 16 * LDH + kk * 16, LDH);
          wmma::mma_sync(sacc, qf, kf, sacc);
        }
        wmma::store_matrix_sync(Sw + j * 16, sacc, LDS, wmma::mem_row_major);
      }
      __syncwarp();

      // P = exp(S - lse) with the final lse; hidden entries and rows without any visible key
      // (lse = -inf) are 0.
      {
        const int lr = warp * 16 + r;
        const float lse_row = lse_s[lr];
        const float lse2 = lse_row * kLog2e;
        const int64_t qp = qpos_s[lr];
#pragma unroll
        for (int c = 0; c < 32; ++c) {
          const int col = half * 32 + c;
          float p = exp2f(Sw[r * LDS + col] * a.scale_log2 - lse2);
          if (lse_row == -INFINITY) p = 0.0f;
          if (masked && !(col < kvalid && (!a.causal || kpos_s[col] <= qp))) p = 0.0f;
          Pw[r * LDP + col] = from_float<T>(p);
        }
      }
      __syncthreads();  // dV needs P of every query row

      // dV_w (this warp's 16 keys) += P^T dO
#pragma unroll
      for (int kk = 0; kk < kBwdBlockM / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> ptf;
        wmma::load_matrix_sync(ptf, Ps + kk * 16 * LDP + warp * 16, LDP);
#pragma unroll
        for (int j = 0; j < NF; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> dof;
          wmma::load_matrix_sync(dof, dOs + kk * 16 * LDH + j * 16, LDH);
          wmma::mma_sync(dv[j], ptf, dof, dv[j]);
        }
      }
      // dP (rows of this warp) = dO_w V^T, into the S buffer rows this warp owns
#pragma unroll
      for (int j = 0; j < kBwdBlockN / 16; ++j) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> pacc;
        wmma::fill_fragment(pacc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < NF; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> dof;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> vf;
          wmma::load_matrix_sync(dof, dOs + warp * 16 * LDH + kk * 16, LDH);
          wmma::load_matrix_sync(vf, Vs + j * 16 * LDH + kk * 16, LDH);
          wmma::mma_sync(pacc, dof, vf, pacc);
        }
        wmma::store_matrix_sync(Sw + j * 16, pacc, LDS, wmma::mem_row_major);
      }
      __syncthreads();  // every warp has read all of P (for dV) before dS overwrites it

      // dS = P * (dP - D), in place of P
      {
        const float d_row = d_s[warp * 16 + r];
#pragma unroll
        for (int c = 0; c < 32; ++c) {
          const int col = half * 32 + c;
          const float p = to_float(Pw[r * LDP + col]);
          Pw[r * LDP + col] = from_float<T>(p * (Sw[r * LDS + col] - d_row));
        }
      }
      __syncthreads();  // dK needs dS of every query row

      // dK_w += dS^T Q (scale applied once at the end)
#pragma unroll
      for (int kk = 0; kk < kBwdBlockM / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> dstf;
        wmma::load_matrix_sync(dstf, Ps + kk * 16 * LDP + warp * 16, LDP);
#pragma unroll
        for (int j = 0; j < NF; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> qf;
          wmma::load_matrix_sync(qf, Qs + kk * 16 * LDH + j * 16, LDH);
          wmma::mma_sync(dk[j], dstf, qf, dk[j]);
        }
      }
      // dQ (rows of this warp) += scale * dS_w K: other key tiles add to the same rows -> atomics
#pragma unroll
      for (int j = 0; j < NF; ++j) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> qacc;
        wmma::fill_fragment(qacc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < kBwdBlockN / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> dsf;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> kf;
          wmma::load_matrix_sync(dsf, Pw + kk * 16, LDP);
          wmma::load_matrix_sync(kf, Ks + kk * 16 * LDH + j * 16, LDH);
          wmma::mma_sync(qacc, dsf, kf, qacc);
        }
        add_tile_to_global<true, NF>(qacc, j * 16, a.scale, scratch, dq, a.dq_st, q0 + warp * 16, a.n);
      }
    }
  }

  // This block alone owns keys [k0, k0 + 64) of KV head hk: plain += into dK, dV.
  float* dkg = a.dk + b * a.dk_sb + hk * a.dk_sh;
  float* dvg = a.dv + b * a.dv_sb + hk * a.dv_sh;
#pragma unroll
  for (int j = 0; j < NF; ++j) {
    add_tile_to_global<false, NF>(dk[j], j * 16, a.scale, scratch, dkg, a.dk_st, k0 + warp * 16, a.m);
    add_tile_to_global<false, NF>(dv[j], j * 16, 1.0f, scratch, dvg, a.dv_st, k0 + warp * 16, a.m);
  }
}

// ---------------------------------------------------------------------------------------------
// delta and merge: one warp per (batch, head, token) row

struct RowArgs {
  int64_t batch, heads, tokens, head_dim;
  const void* x;  // O (merge: accumulator) or O for delta
  int64_t x_sb, x_sh, x_st;
  const void* y;  // dO for delta, block O for merge
  int64_t y_sb, y_sh, y_st;
  float* row_a;  // delta out, or accumulator lse
  int64_t a_sb, a_sh;
  const float* row_b;  // block lse (merge)
  int64_t b_sb, b_sh;
};

template <typename TO, typename TD>
__global__ void delta_kernel(const RowArgs a) {
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (gw >= a.batch * a.heads * a.tokens) return;
  const int64_t i = gw % a.tokens, h = (gw / a.tokens) % a.heads, b = gw / (a.tokens * a.heads);
  const TO* o = static_cast<const TO*>(a.x) + b * a.x_sb + h * a.x_sh + i * a.x_st;
  const TD* d = static_cast<const TD*>(a.y) + b * a.y_sb + h * a.y_sh + i * a.y_st;
  float sum = 0.0f;
  for (int64_t c = lane; c < a.head_dim; c += 32) sum += to_float(o[c]) * to_float(d[c]);
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) a.row_a[b * a.a_sb + h * a.a_sh + i] = sum;
}

__global__ void merge_kernel(const RowArgs a) {
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (gw >= a.batch * a.heads * a.tokens) return;
  const int64_t i = gw % a.tokens, h = (gw / a.tokens) % a.heads, b = gw / (a.tokens * a.heads);
  float* acc_lse = a.row_a + b * a.a_sb + h * a.a_sh + i;
  const float la = *acc_lse;
  const float lb = a.row_b[b * a.b_sb + h * a.b_sh + i];
  float* oa = const_cast<float*>(static_cast<const float*>(a.x)) + b * a.x_sb + h * a.x_sh + i * a.x_st;
  const float* ob = static_cast<const float*>(a.y) + b * a.y_sb + h * a.y_sh + i * a.y_st;
  const float hi = fmaxf(la, lb), lo = fminf(la, lb);
  if (hi == -INFINITY) {  // both -inf: O = 0, lse = -inf (never -inf - -inf)
    for (int64_t c = lane; c < a.head_dim; c += 32) oa[c] = 0.0f;
    __syncwarp();
    if (lane == 0) *acc_lse = -INFINITY;
    return;
  }
  // Stable sigmoid form, as merge_partial on the CPU (kernels/attention.hpp): the smaller-lse
  // side weighs w = e / (1 + e) <= 1/2, e = exp(lo - hi), and O moves from the larger-lse side
  // toward it, a convex combination however lse rounds. One side -inf: O and lse are the other
  // side's exactly.
  const float e = expf(lo - hi);
  const float w = e / (1.0f + e);
  const bool a_hi = la >= lb;
  for (int64_t c = lane; c < a.head_dim; c += 32) {
    const float o_hi = a_hi ? oa[c] : ob[c], o_lo = a_hi ? ob[c] : oa[c];
    oa[c] = lo == -INFINITY ? o_hi : fmaf(w, o_lo - o_hi, o_hi);  // one side empty: copy, no arithmetic
  }
  __syncwarp();
  if (lane == 0) *acc_lse = hi + log1pf(e);
}

// ---------------------------------------------------------------------------------------------
// host side

const char* type_name(ElemType t) {
  switch (t) {
    case ElemType::f32: return "f32";
    case ElemType::f16: return "f16";
    case ElemType::bf16: return "bf16";
  }
  return "?";
}

// Where a pointer lives, for the "device pointers only" check; "" when it is device memory.
std::string pointer_problem(const void* ptr, const char* name) {
  if (ptr == nullptr) return std::string(name) + " is null";
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string(name) + ": cannot query the pointer (" + cudaGetErrorString(err) + ")";
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    return std::string(name) + " is host memory; the CUDA kernels take device (or managed) pointers";
  }
  return "";
}

// 16-bit input tensors: type, head_dim, and the 16-byte alignment the vector loads need.
std::string input_problem(const TensorView& t, const char* name, ElemType want) {
  if (t.type != ElemType::f16 && t.type != ElemType::bf16) {
    return std::string(name) + " has element type " + type_name(t.type) + "; the CUDA kernels take f16 or bf16";
  }
  if (t.type != want) {
    return std::string(name) + " is " + type_name(t.type) + " but q is " + type_name(want) + "; all inputs share one type";
  }
  if (t.head_dim != 64 && t.head_dim != 128) {
    return std::string(name) + " head_dim is " + std::to_string(t.head_dim) + "; the CUDA kernels support 64 and 128";
  }
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0 || t.stride_batch % 8 || t.stride_head % 8 || t.stride_token % 8) {
    return std::string(name) + ": base pointer must be 16-byte aligned and strides multiples of 8 elements (got strides " +
           std::to_string(t.stride_batch) + ", " + std::to_string(t.stride_head) + ", " + std::to_string(t.stride_token) + ")";
  }
  return pointer_problem(t.data, name);
}

// Every kernel launches a 3-D grid with heads and batch in y / z (the mma and wgmma kernels in
// their tile-major order put the heads in x and the tiles in z, and fall back to the other order
// beyond 65535 tiles: tile_schedule.hpp launch_grid), so these limits cover them all.
std::string grid_problem(int64_t batch, int64_t heads, int64_t tiles) {
  if (batch > 65535 || heads > 65535 || tiles > INT32_MAX) {
    return "grid too large: batch and heads must be <= 65535 (got batch " + std::to_string(batch) + ", heads " +
           std::to_string(heads) + ")";
  }
  return "";
}

void throw_if(const std::string& problem, const char* fn) {
  if (!problem.empty()) throw std::invalid_argument(std::string("ringplan::kernels::cuda::") + fn + ": " + problem);
}

float effective_scale(const BlockParams& p) {
  return p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(float(p.q.head_dim));
}

template <typename T, int D>
void launch_forward(const FwdArgs& a, int64_t batch, cudaStream_t stream) {
  constexpr size_t smem = forward_smem(D).total_bytes;
  auto kernel = flash_forward_kernel<T, D>;
  RINGPLAN_CUDA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((a.n + kFwdBlockM - 1) / kFwdBlockM), unsigned(a.heads), unsigned(batch));
  kernel<<<grid, kFwdWarps * 32, smem, stream>>>(a);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

template <typename T, int D>
void launch_backward(const BwdArgs& a, int64_t batch, cudaStream_t stream) {
  constexpr size_t smem = backward_smem(D).total_bytes;
  auto kernel = flash_backward_kernel<T, D>;
  RINGPLAN_CUDA_THROW_IF(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((a.m + kBwdBlockN - 1) / kBwdBlockN), unsigned(a.kv_heads), unsigned(batch));
  kernel<<<grid, kBwdWarps * 32, smem, stream>>>(a);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

unsigned row_blocks(int64_t rows) { return unsigned((rows * 32 + 255) / 256); }

// ---------------------------------------------------------------------------------------------
// element-wise helpers of the ring (dense buffers, grid-stride loops)

template <typename T>
__global__ void convert_kernel(const float* __restrict__ src, T* __restrict__ dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_float<T>(src[i]);
}

__global__ void accumulate_kernel(float* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

// Enough blocks to fill the device several times over; the loops stride over the rest.
unsigned elementwise_blocks(int64_t n) {
  const int64_t want = (n + 255) / 256;
  return static_cast<unsigned>(want < 4096 ? (want < 1 ? 1 : want) : 4096);
}

bool dense(const TensorView& t) {
  return t.stride_token == t.head_dim && t.stride_head == t.tokens * t.head_dim &&
         t.stride_batch == t.heads * t.tokens * t.head_dim;
}

}  // namespace

void convert_from_f32(const TensorView& src, const TensorView& dst, cudaStream_t stream) {
  std::string s;
  if (src.type != ElemType::f32) {
    s = std::string("src must be f32, got ") + type_name(src.type);
  } else if (dst.type == ElemType::f32) {
    s = "dst must be f16 or bf16 (an f32 -> f32 copy is cudaMemcpyAsync)";
  } else if (src.batch != dst.batch || src.heads != dst.heads || src.tokens != dst.tokens ||
             src.head_dim != dst.head_dim) {
    s = "src and dst shapes differ";
  } else if (!dense(src) || !dense(dst)) {
    s = "src and dst must be dense [batch, heads, tokens, head_dim]";
  } else if (!(s = pointer_problem(src.data, "src")).empty() || !(s = pointer_problem(dst.data, "dst")).empty()) {
  }
  throw_if(s, "convert_from_f32");
  const int64_t n = src.batch * src.heads * src.tokens * src.head_dim;
  if (n == 0) return;
  const float* x = static_cast<const float*>(src.data);
  if (dst.type == ElemType::bf16)
    convert_kernel<<<elementwise_blocks(n), 256, 0, stream>>>(x, static_cast<__nv_bfloat16*>(dst.data), n);
  else
    convert_kernel<<<elementwise_blocks(n), 256, 0, stream>>>(x, static_cast<__half*>(dst.data), n);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

void accumulate(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  std::string s;
  if (n < 0) s = "n = " + std::to_string(n) + " must be >= 0";
  else if (!(s = pointer_problem(dst, "dst")).empty() || !(s = pointer_problem(src, "src")).empty()) {
  }
  throw_if(s, "accumulate");
  if (n == 0) return;
  accumulate_kernel<<<elementwise_blocks(n), 256, 0, stream>>>(dst, src, n);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}


static_assert(forward_smem(128).total_bytes <= kMaxSmemBytesSm80, "forward tile does not fit an A100 block");
static_assert(backward_smem(128).total_bytes <= kMaxSmemBytesSm80, "backward tile does not fit an A100 block");

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (why) *why = cudaGetErrorString(err);
    return 0;
  }
  if (n == 0 && why) *why = "cudaGetDeviceCount returned 0";
  return n;
}

// The device kernels classify and mask tiles by position only: packed-document ids would be
// ignored, so they are refused here (the CPU kernels mask documents).
namespace {
std::string documents_problem(const BlockParams& p) {
  if (p.q_documents == nullptr && p.k_documents == nullptr) return {};
  return "packed documents (q_documents / k_documents) are not supported by the CUDA attention kernels, which mask "
         "by position only; run documents on the CPU kernels";
}
}  // namespace

std::string validate_forward(const BlockParams& p, const ForwardOut& o) {
  std::string s = kernels::validate(p, o);
  if (!s.empty()) return s;
  if (!(s = documents_problem(p)).empty()) return s;
  for (const auto& [t, name] : {std::pair{&p.q, "q"}, std::pair{&p.k, "k"}, std::pair{&p.v, "v"}}) {
    s = input_problem(*t, name, p.q.type);
    if (!s.empty()) return s;
  }
  // Positions may be null without causal masking (kernels::validate); when given, on the device.
  if (p.q_positions && !(s = pointer_problem(p.q_positions, "q_positions")).empty()) return s;
  if (p.k_positions && !(s = pointer_problem(p.k_positions, "k_positions")).empty()) return s;
  if (!(s = pointer_problem(o.out.data, "out")).empty()) return s;
  if (!(s = pointer_problem(o.lse.data, "lse")).empty()) return s;
  return grid_problem(p.q.batch, p.q.heads, (p.q.tokens + kFwdBlockM - 1) / kFwdBlockM);
}

std::string validate_backward(const BlockParams& p, const BackwardArgs& g) {
  std::string s = kernels::validate(p, g);
  if (!s.empty()) return s;
  if (!(s = documents_problem(p)).empty()) return s;
  for (const auto& [t, name] : {std::pair{&p.q, "q"}, std::pair{&p.k, "k"}, std::pair{&p.v, "v"},
                                std::pair{&g.grad_out, "grad_out"}}) {
    s = input_problem(*t, name, p.q.type);
    if (!s.empty()) return s;
  }
  // Positions may be null without causal masking (kernels::validate); when given, on the device.
  if (p.q_positions && !(s = pointer_problem(p.q_positions, "q_positions")).empty()) return s;
  if (p.k_positions && !(s = pointer_problem(p.k_positions, "k_positions")).empty()) return s;
  for (const auto& [ptr, name] : {std::pair<const void*, const char*>{g.lse.data, "lse"}, {g.delta.data, "delta"},
                                  {g.grad_q.data, "grad_q"}, {g.grad_k.data, "grad_k"}, {g.grad_v.data, "grad_v"}}) {
    if (!(s = pointer_problem(ptr, name)).empty()) return s;
  }
  return grid_problem(p.k.batch, p.k.heads, (p.k.tokens + kBwdBlockN - 1) / kBwdBlockN);
}

void flash_forward(const BlockParams& p, const ForwardOut& o, cudaStream_t stream) {
  throw_if(validate_forward(p, o), "flash_forward");
  if (p.q.tokens == 0 || p.q.batch == 0 || p.q.heads == 0) return;
  const ForwardImpl impl = resolve_forward_impl(forward_impl());
  if (impl == ForwardImpl::wgmma) {
    throw_if(forward_impl_unavailable(impl), "flash_forward");
    detail::launch_forward_wgmma(p, o, effective_scale(p), stream);
    return;
  }
  if (impl == ForwardImpl::mma) {  // below: ForwardImpl::wmma, a comparison baseline
    detail::launch_forward_mma(p, o, effective_scale(p), stream);
    return;
  }
  FwdArgs a{};
  a.q = p.q.data, a.k = p.k.data, a.v = p.v.data;
  a.q_sb = p.q.stride_batch, a.q_sh = p.q.stride_head, a.q_st = p.q.stride_token;
  a.k_sb = p.k.stride_batch, a.k_sh = p.k.stride_head, a.k_st = p.k.stride_token;
  a.v_sb = p.v.stride_batch, a.v_sh = p.v.stride_head, a.v_st = p.v.stride_token;
  a.o = static_cast<float*>(o.out.data);
  a.o_sb = o.out.stride_batch, a.o_sh = o.out.stride_head, a.o_st = o.out.stride_token;
  a.lse = o.lse.data, a.l_sb = o.lse.stride_batch, a.l_sh = o.lse.stride_head;
  a.q_pos = p.q_positions, a.k_pos = p.k_positions;
  a.n = p.q.tokens, a.m = p.k.tokens, a.heads = p.q.heads, a.kv_heads = p.k.heads;
  a.causal = p.causal ? 1 : 0;
  a.scale_log2 = effective_scale(p) * kLog2e;
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch_forward<__nv_bfloat16, 64>(a, p.q.batch, stream) : launch_forward<__half, 64>(a, p.q.batch, stream);
  } else {
    bf16 ? launch_forward<__nv_bfloat16, 128>(a, p.q.batch, stream) : launch_forward<__half, 128>(a, p.q.batch, stream);
  }
}

void flash_backward(const BlockParams& p, const BackwardArgs& g, cudaStream_t stream) {
  throw_if(validate_backward(p, g), "flash_backward");
  if (p.k.tokens == 0 || p.q.tokens == 0 || p.q.batch == 0 || p.q.heads == 0) return;
  const BackwardImpl impl = resolve_backward_impl(backward_impl());
  if (impl == BackwardImpl::wgmma) {
    throw_if(backward_impl_unavailable(impl), "flash_backward");
    detail::launch_backward_wgmma(p, g, effective_scale(p), stream);
    return;
  }
  if (impl == BackwardImpl::mma) {  // below: BackwardImpl::wmma, a comparison baseline
    detail::launch_backward_mma(p, g, effective_scale(p), stream);
    return;
  }
  BwdArgs a{};
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
  a.n = p.q.tokens, a.m = p.k.tokens, a.heads = p.q.heads, a.kv_heads = p.k.heads;
  a.causal = p.causal ? 1 : 0;
  a.scale = effective_scale(p);
  a.scale_log2 = a.scale * kLog2e;
  const bool bf16 = p.q.type == ElemType::bf16;
  if (p.q.head_dim == 64) {
    bf16 ? launch_backward<__nv_bfloat16, 64>(a, p.q.batch, stream) : launch_backward<__half, 64>(a, p.q.batch, stream);
  } else {
    bf16 ? launch_backward<__nv_bfloat16, 128>(a, p.q.batch, stream) : launch_backward<__half, 128>(a, p.q.batch, stream);
  }
}

void backward_delta(const TensorView& out, const TensorView& grad_out, const RowStatsView& delta,
                    cudaStream_t stream) {
  std::string s;
  if (out.batch != grad_out.batch || out.heads != grad_out.heads || out.tokens != grad_out.tokens ||
      out.head_dim != grad_out.head_dim) {
    s = "out and grad_out shapes differ";
  } else if (delta.batch != out.batch || delta.heads != out.heads || delta.tokens != out.tokens) {
    s = "delta must be [batch, heads, tokens] of out";
  } else if (!(s = pointer_problem(out.data, "out")).empty() || !(s = pointer_problem(grad_out.data, "grad_out")).empty() ||
             !(s = pointer_problem(delta.data, "delta")).empty()) {
  }
  throw_if(s, "backward_delta");
  const int64_t rows = out.batch * out.heads * out.tokens;
  if (rows == 0) return;
  RowArgs a{};
  a.batch = out.batch, a.heads = out.heads, a.tokens = out.tokens, a.head_dim = out.head_dim;
  a.x = out.data, a.x_sb = out.stride_batch, a.x_sh = out.stride_head, a.x_st = out.stride_token;
  a.y = grad_out.data, a.y_sb = grad_out.stride_batch, a.y_sh = grad_out.stride_head, a.y_st = grad_out.stride_token;
  a.row_a = delta.data, a.a_sb = delta.stride_batch, a.a_sh = delta.stride_head;
  // Every (out type, grad_out type) pair: the ring may keep O in float32 or in the input type.
  auto launch = [&](auto o_tag, auto d_tag) {
    using TO = decltype(o_tag);
    using TD = decltype(d_tag);
    delta_kernel<TO, TD><<<row_blocks(rows), 256, 0, stream>>>(a);
  };
  auto with_d = [&](auto o_tag) {
    switch (grad_out.type) {
      case ElemType::f32: launch(o_tag, float{}); break;
      case ElemType::f16: launch(o_tag, __half{}); break;
      case ElemType::bf16: launch(o_tag, __nv_bfloat16{}); break;
    }
  };
  switch (out.type) {
    case ElemType::f32: with_d(float{}); break;
    case ElemType::f16: with_d(__half{}); break;
    case ElemType::bf16: with_d(__nv_bfloat16{}); break;
  }
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

void merge_partial(const ForwardOut& acc, const ForwardOut& blk, cudaStream_t stream) {
  std::string s;
  const TensorView &x = acc.out, &y = blk.out;
  if (x.type != ElemType::f32 || y.type != ElemType::f32) {
    s = "both outputs must be f32 (got acc " + std::string(type_name(x.type)) + ", blk " + type_name(y.type) + ")";
  } else if (x.batch != y.batch || x.heads != y.heads || x.tokens != y.tokens || x.head_dim != y.head_dim) {
    s = "acc and blk output shapes differ";
  } else if (acc.lse.batch != x.batch || acc.lse.heads != x.heads || acc.lse.tokens != x.tokens ||
             blk.lse.batch != x.batch || blk.lse.heads != x.heads || blk.lse.tokens != x.tokens) {
    s = "lse must be [batch, heads, tokens] of the outputs";
  } else if (!(s = pointer_problem(x.data, "acc.out")).empty() || !(s = pointer_problem(y.data, "blk.out")).empty() ||
             !(s = pointer_problem(acc.lse.data, "acc.lse")).empty() ||
             !(s = pointer_problem(blk.lse.data, "blk.lse")).empty()) {
  }
  throw_if(s, "merge_partial");
  const int64_t rows = x.batch * x.heads * x.tokens;
  if (rows == 0) return;
  RowArgs a{};
  a.batch = x.batch, a.heads = x.heads, a.tokens = x.tokens, a.head_dim = x.head_dim;
  a.x = x.data, a.x_sb = x.stride_batch, a.x_sh = x.stride_head, a.x_st = x.stride_token;
  a.y = y.data, a.y_sb = y.stride_batch, a.y_sh = y.stride_head, a.y_st = y.stride_token;
  a.row_a = acc.lse.data, a.a_sb = acc.lse.stride_batch, a.a_sh = acc.lse.stride_head;
  a.row_b = blk.lse.data, a.b_sb = blk.lse.stride_batch, a.b_sh = blk.lse.stride_head;
  merge_kernel<<<row_blocks(rows), 256, 0, stream>>>(a);
  RINGPLAN_CUDA_THROW_IF(cudaGetLastError());
}

}  // namespace ringplan::kernels::cuda
