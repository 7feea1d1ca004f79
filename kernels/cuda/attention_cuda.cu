// CUDA flash-attention host side and the small kernels (API and contracts in attention_cuda.hpp):
//
// Contents:
//   helpers        element conversion
//   delta, merge   one warp per row: D = rowsum(dO * O), and the LSE merge of two partial outputs
//   host side      validation, and flash_forward / flash_backward dispatch to the mma.sync
//                  (attention_fwd_mma.cu, attention_bwd_mma.cu) and wgmma (attention_*_wgmma.cu)
//                  kernels
//   element-wise   the ring's f32 -> f16/bf16 conversion and accumulation
#include "kernels/cuda/attention_cuda.hpp"
#include "kernels/cuda/attention_bwd_mma.hpp"
#include "kernels/cuda/attention_bwd_wgmma.hpp"
#include "kernels/cuda/attention_fwd_mma.hpp"
#include "kernels/cuda/attention_fwd_wgmma.hpp"
#include "kernels/cuda/cuda_check.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ringplan::kernels::cuda {
namespace {

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

// Every attention kernel launches a 3-D grid of (tiles, heads, batch): head-major with the tiles in
// x, tile-major with the heads in x and the tiles in z, falling back to head-major beyond 65535
// tiles (tile_schedule.hpp launch_grid), so these limits cover them all. The forward kernels own
// query tiles of one size and the backward kernels key tiles of one size (static_asserts below).
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

static_assert(kWgmmaFwdBlockM == kMmaFwdBlockM, "validate_forward counts query tiles of one size");
static_assert(kWgmmaBwdBlockN == kMmaBwdBlockN, "validate_backward counts key tiles of one size");

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
  return grid_problem(p.q.batch, p.q.heads, (p.q.tokens + kMmaFwdBlockM - 1) / kMmaFwdBlockM);
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
  return grid_problem(p.k.batch, p.k.heads, (p.k.tokens + kMmaBwdBlockN - 1) / kMmaBwdBlockN);
}

void flash_forward(const BlockParams& p, const ForwardOut& o, cudaStream_t stream, const KernelChoice& choice) {
  throw_if(validate_forward(p, o), "flash_forward");
  if (p.q.tokens == 0 || p.q.batch == 0 || p.q.heads == 0) return;
  const BlockOrder order = launch_order(choice.order, p.causal);
  if (resolve_forward_impl(choice.forward) == ForwardImpl::wgmma) {
    throw_if(forward_impl_unavailable(ForwardImpl::wgmma), "flash_forward");
    detail::launch_forward_wgmma(p, o, effective_scale(p), order, stream);
  } else {
    detail::launch_forward_mma(p, o, effective_scale(p), order, stream);
  }
}

void flash_backward(const BlockParams& p, const BackwardArgs& g, cudaStream_t stream, const KernelChoice& choice) {
  throw_if(validate_backward(p, g), "flash_backward");
  if (p.k.tokens == 0 || p.q.tokens == 0 || p.q.batch == 0 || p.q.heads == 0) return;
  const BlockOrder order = launch_order(choice.order, p.causal);
  if (resolve_backward_impl(choice.backward) == BackwardImpl::wgmma) {
    throw_if(backward_impl_unavailable(BackwardImpl::wgmma), "flash_backward");
    detail::launch_backward_wgmma(p, g, effective_scale(p), order, stream);
  } else {
    detail::launch_backward_mma(p, g, effective_scale(p), order, stream);
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
