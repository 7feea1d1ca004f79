// Kernels of the GPU training step (see step_kernels.hpp). Memory-bound, simple on purpose: one
// thread block per row for the row reductions (norm, cross-entropy), grid-stride loops for the
// element-wise work; float32 arithmetic on bf16 storage.
#include "runtime/gpu/step_kernels.hpp"

#include <cuda_fp8.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace ringplan::runtime::gpu {
namespace {

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("runtime/gpu/step_kernels.cu: ") + what + ": " + cudaGetErrorString(e));
}

int grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

__device__ float to_f(bf16 v) { return __bfloat162float(v); }
__device__ bf16 to_b(float v) { return __float2bfloat16(v); }

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float t = lane < warps ? part[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}
__device__ float block_max(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float t = lane < warps ? part[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

__global__ void k_embedding_forward(const int32_t* tok, const bf16* emb, bf16* x, int64_t rows, int64_t h) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * h; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / h, c = i % h;
    x[i] = emb[int64_t(tok[r]) * h + c];
  }
}
__global__ void k_embedding_backward(const int32_t* tok, const bf16* dx, float* d_emb, int64_t rows, int64_t h) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * h; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / h, c = i % h;
    atomicAdd(d_emb + int64_t(tok[r]) * h + c, to_f(dx[i]));
  }
}

__global__ void k_rmsnorm_forward(const bf16* x, const float* g, bf16* y, float* rstd, int64_t h, float eps) {
  const int64_t r = blockIdx.x;
  const bf16* xr = x + r * h;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < h; c += blockDim.x) {
    const float v = to_f(xr[c]);
    ss += v * v;
  }
  const float s = rsqrtf(block_sum(ss) / float(h) + eps);
  if (threadIdx.x == 0) rstd[r] = s;
  bf16* yr = y + r * h;
  for (int64_t c = threadIdx.x; c < h; c += blockDim.x) yr[c] = to_b(to_f(xr[c]) * s * g[c]);
}
__global__ void k_rmsnorm_backward_dx(const bf16* x, const float* g, const float* rstd, const bf16* dy, bf16* dx,
                                      int64_t h) {
  const int64_t r = blockIdx.x;
  const bf16 *xr = x + r * h, *dyr = dy + r * h;
  const float s = rstd[r];
  float dot = 0;
  for (int64_t c = threadIdx.x; c < h; c += blockDim.x) dot += to_f(xr[c]) * s * g[c] * to_f(dyr[c]);
  const float mean = block_sum(dot) / float(h);
  bf16* dxr = dx + r * h;
  for (int64_t c = threadIdx.x; c < h; c += blockDim.x) {
    const float xhat = to_f(xr[c]) * s;
    dxr[c] = to_b(to_f(dxr[c]) + s * (g[c] * to_f(dyr[c]) - xhat * mean));
  }
}
// dg[c] += sum over a chunk of rows of dy * x * rstd; blockIdx.y picks the chunk.
__global__ void k_rmsnorm_backward_dg(const bf16* x, const float* rstd, const bf16* dy, float* dg, int64_t rows,
                                      int64_t h, int64_t rows_per_chunk) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= h) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float acc = 0;
  for (int64_t r = r0; r < r1; ++r) acc += to_f(dy[r * h + c]) * to_f(x[r * h + c]) * rstd[r];
  atomicAdd(dg + c, acc);
}

__global__ void k_rope(bf16* x, const int64_t* pos, int64_t rows, int64_t n, int64_t heads, int64_t d,
                       int64_t row_stride, float log_base) {
  const int64_t half = d / 2, per_row = heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * per_row;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, rem = i % per_row, hh = rem / half, k = rem % half;
    const double theta = double(pos[r % n]) * exp(-2.0 * double(k) / double(d) * double(log_base));
    double sn, cs;
    sincos(theta, &sn, &cs);
    bf16* v = x + r * row_stride + hh * d;
    const float a = to_f(v[k]), b = to_f(v[k + half]);
    v[k] = to_b(float(a * cs - b * sn));
    v[k + half] = to_b(float(b * cs + a * sn));
  }
}

__global__ void k_heads_to_tokens(const float* o, bf16* out, int64_t b, int64_t n, int64_t heads, int64_t d) {
  const int64_t total = b * n * heads * d;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    // i indexes the output [b, n, heads, d]
    const int64_t e = i % d, hh = (i / d) % heads, t = (i / (d * heads)) % n, s = i / (d * heads * n);
    out[i] = to_b(o[((s * heads + hh) * n + t) * d + e]);
  }
}

// One thread per (row, head, pair k): reads the two halves of a head's gradient, rotates back.
__global__ void k_grads_to_qkv(const float* dq, const float* dk, const float* dv, bf16* dqkv, const int64_t* pos,
                               int64_t b, int64_t n, int64_t hq, int64_t hkv, int64_t d, float log_base) {
  const int64_t half = d / 2, heads = hq + 2 * hkv, W = heads * d;
  const int64_t total = b * n * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % half, hh = (i / half) % heads, t = (i / (half * heads)) % n, s = i / (half * heads * n);
    const float* src;
    bool rotate = true;
    if (hh < hq) {
      src = dq + ((s * hq + hh) * n + t) * d;
    } else if (hh < hq + hkv) {
      src = dk + ((s * hkv + (hh - hq)) * n + t) * d;
    } else {
      src = dv + ((s * hkv + (hh - hq - hkv)) * n + t) * d;
      rotate = false;
    }
    float a = src[k], c = src[k + half];
    if (rotate) {
      const double theta = double(pos[t]) * exp(-2.0 * double(k) / double(d) * double(log_base));
      double sn, cs;
      sincos(theta, &sn, &cs);
      // inverse rotation: angle -theta
      const float na = float(a * cs + c * sn), nc = float(c * cs - a * sn);
      a = na;
      c = nc;
    }
    bf16* dst = dqkv + (s * n + t) * W + hh * d;
    dst[k] = to_b(a);
    dst[k + half] = to_b(c);
  }
}

__device__ float gelu_tanh(float x, float* dgelu) {
  const float k = 0.7978845608028654f;
  const float inner = k * (x + 0.044715f * x * x * x);
  const float t = tanhf(inner);
  *dgelu = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
  return 0.5f * x * (1.0f + t);
}

__global__ void k_mlp_forward(const bf16* gu, bf16* m, int64_t rows, int64_t f, bool gated) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * f; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    if (gated) {
      const float a = to_f(gu[r * 2 * f + c]), u = to_f(gu[r * 2 * f + f + c]);
      m[i] = to_b(a / (1.0f + __expf(-a)) * u);
    } else {
      float dg;
      m[i] = to_b(gelu_tanh(to_f(gu[i]), &dg));
    }
  }
}
__global__ void k_mlp_backward(const bf16* gu, const bf16* dm, bf16* dgu, int64_t rows, int64_t f, bool gated) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * f; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    const float g = to_f(dm[i]);
    if (gated) {
      const float a = to_f(gu[r * 2 * f + c]), u = to_f(gu[r * 2 * f + f + c]);
      const float sg = 1.0f / (1.0f + __expf(-a));
      dgu[r * 2 * f + f + c] = to_b(g * a * sg);
      dgu[r * 2 * f + c] = to_b(g * u * sg * (1.0f + a * (1.0f - sg)));
    } else {
      float dgelu;
      gelu_tanh(to_f(gu[i]), &dgelu);
      dgu[i] = to_b(g * dgelu);
    }
  }
}

__global__ void k_add(const bf16* a, const bf16* b, bf16* out, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = to_b(to_f(a[i]) + to_f(b[i]));
}

__global__ void k_cross_entropy(bf16* logits, const int32_t* target, double* loss_sum, int64_t vocab, float scale) {
  const int64_t r = blockIdx.x;
  bf16* row = logits + r * vocab;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) mx = fmaxf(mx, to_f(row[c]));
  mx = block_max(mx);
  float se = 0;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) se += __expf(to_f(row[c]) - mx);
  se = block_sum(se);
  const float lse = mx + logf(se);
  const int64_t t = target[r];
  // Every thread has read its own elements before any is overwritten; the target's logit is
  // read by the thread that owns it, before that thread writes it.
  const float target_logit = (t % blockDim.x == threadIdx.x) ? to_f(row[t]) : 0.0f;
  const float tl = block_sum(target_logit);
  if (threadIdx.x == 0) atomicAdd(loss_sum, double(lse - tl));
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float p = __expf(to_f(row[c]) - lse);
    row[c] = to_b((p - (c == t ? 1.0f : 0.0f)) * scale);
  }
}

__global__ void k_optimizer(float* w, float* g, float* m, float* v, bf16* wb, int64_t count, bool adam, float lr,
                            float lr1, float c2) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    float wi = w[i];
    if (adam) {
      const float mi = 0.9f * m[i] + 0.1f * gi;
      const float vi = 0.999f * v[i] + 0.001f * gi * gi;
      m[i] = mi;
      v[i] = vi;
      wi -= lr1 * mi / (sqrtf(vi * c2) + 1e-8f);
    } else {
      const float mi = 0.9f * m[i] + gi;
      m[i] = mi;
      wi -= lr * mi;
    }
    w[i] = wi;
    wb[i] = to_b(wi);
    g[i] = 0.0f;
  }
}

__global__ void k_to_bf16(const float* src, bf16* dst, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = to_b(src[i]);
}

__global__ void k_fill_uniform(bf16* x, int64_t count, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * uint64_t(i + 1);  // splitmix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x[i] = to_b(scale * (float(z >> 40) * (1.0f / 8388608.0f) - 1.0f));
  }
}

__global__ void k_to_fp8(const bf16* src, __nv_fp8_e4m3* dst, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __nv_fp8_e4m3(to_f(src[i]));
}

constexpr int kThreads = 256;

}  // namespace

void embedding_forward(const int32_t* tok, const bf16* emb, bf16* x, int64_t rows, int64_t h, cudaStream_t s) {
  k_embedding_forward<<<grid_for(rows * h, kThreads), kThreads, 0, s>>>(tok, emb, x, rows, h);
  check_launch("embedding_forward");
}
void embedding_backward(const int32_t* tok, const bf16* dx, float* d_emb, int64_t rows, int64_t h, cudaStream_t s) {
  k_embedding_backward<<<grid_for(rows * h, kThreads), kThreads, 0, s>>>(tok, dx, d_emb, rows, h);
  check_launch("embedding_backward");
}
void rmsnorm_forward(const bf16* x, const float* g, bf16* y, float* rstd, int64_t rows, int64_t h, float eps,
                     cudaStream_t s) {
  k_rmsnorm_forward<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, g, y, rstd, h, eps);
  check_launch("rmsnorm_forward");
}
void rmsnorm_backward(const bf16* x, const float* g, const float* rstd, const bf16* dy, bf16* dx_acc, float* dg,
                      int64_t rows, int64_t h, cudaStream_t s) {
  k_rmsnorm_backward_dx<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, g, rstd, dy, dx_acc, h);
  check_launch("rmsnorm_backward (dx)");
  const int64_t chunks = rows < 256 ? rows : 256;
  const int64_t per = (rows + chunks - 1) / chunks;
  const dim3 grid(static_cast<unsigned>((h + kThreads - 1) / kThreads), static_cast<unsigned>((rows + per - 1) / per));
  k_rmsnorm_backward_dg<<<grid, kThreads, 0, s>>>(x, rstd, dy, dg, rows, h, per);
  check_launch("rmsnorm_backward (dg)");
}
void rope_forward(bf16* x, const int64_t* pos, int64_t rows, int64_t n, int64_t heads, int64_t head_dim,
                  int64_t row_stride, float base, cudaStream_t s) {
  k_rope<<<grid_for(rows * heads * head_dim / 2, kThreads), kThreads, 0, s>>>(x, pos, rows, n, heads, head_dim,
                                                                              row_stride, std::log(base));
  check_launch("rope_forward");
}
void heads_to_tokens(const float* o, bf16* out, int64_t b, int64_t n, int64_t heads, int64_t d, cudaStream_t s) {
  k_heads_to_tokens<<<grid_for(b * n * heads * d, kThreads), kThreads, 0, s>>>(o, out, b, n, heads, d);
  check_launch("heads_to_tokens");
}
void attention_grads_to_qkv(const float* dq, const float* dk, const float* dv, bf16* dqkv, const int64_t* pos,
                            int64_t b, int64_t n, int64_t hq, int64_t hkv, int64_t d, float base, cudaStream_t s) {
  k_grads_to_qkv<<<grid_for(b * n * (hq + 2 * hkv) * d / 2, kThreads), kThreads, 0, s>>>(dq, dk, dv, dqkv, pos, b, n,
                                                                                        hq, hkv, d, std::log(base));
  check_launch("attention_grads_to_qkv");
}
void mlp_act_forward(const bf16* gu, bf16* m, int64_t rows, int64_t f, bool gated, cudaStream_t s) {
  k_mlp_forward<<<grid_for(rows * f, kThreads), kThreads, 0, s>>>(gu, m, rows, f, gated);
  check_launch("mlp_act_forward");
}
void mlp_act_backward(const bf16* gu, const bf16* dm, bf16* dgu, int64_t rows, int64_t f, bool gated, cudaStream_t s) {
  k_mlp_backward<<<grid_for(rows * f, kThreads), kThreads, 0, s>>>(gu, dm, dgu, rows, f, gated);
  check_launch("mlp_act_backward");
}
void add(const bf16* a, const bf16* b, bf16* out, int64_t count, cudaStream_t s) {
  k_add<<<grid_for(count, kThreads), kThreads, 0, s>>>(a, b, out, count);
  check_launch("add");
}
void cross_entropy(bf16* logits, const int32_t* target, double* loss_sum, int64_t rows, int64_t vocab, float scale,
                   cudaStream_t s) {
  k_cross_entropy<<<static_cast<unsigned>(rows), 512, 0, s>>>(logits, target, loss_sum, vocab, scale);
  check_launch("cross_entropy");
}
void optimizer_step(float* w, float* g, float* m, float* v, bf16* w_bf16, int64_t count, bool adam, float lr,
                    float lr1, float c2, cudaStream_t s) {
  k_optimizer<<<grid_for(count, kThreads), kThreads, 0, s>>>(w, g, m, v, w_bf16, count, adam, lr, lr1, c2);
  check_launch("optimizer_step");
}
void fill_uniform(bf16* x, int64_t count, uint64_t seed, float scale, cudaStream_t s) {
  k_fill_uniform<<<grid_for(count, kThreads), kThreads, 0, s>>>(x, count, seed, scale);
  check_launch("fill_uniform");
}
void to_fp8_e4m3(const bf16* src, uint8_t* dst, int64_t count, cudaStream_t s) {
  k_to_fp8<<<grid_for(count, kThreads), kThreads, 0, s>>>(src, reinterpret_cast<__nv_fp8_e4m3*>(dst), count);
  check_launch("to_fp8_e4m3");
}
void to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t s) {
  k_to_bf16<<<grid_for(count, kThreads), kThreads, 0, s>>>(src, dst, count);
  check_launch("to_bf16");
}

}  // namespace ringplan::runtime::gpu
