// Element-wise and reduction kernels of the whole training step on a GPU (runtime/gpu/gpu_trainer):
// the CUDA twins of runtime/step/ops.hpp, on bf16 activations with float32 arithmetic, float32
// statistics and float32 parameter gradients (Megatron's mixed precision). GEMMs are cuBLAS's
// and attention is kernels/cuda's; these are the rest.
//
// Layouts as in ops.hpp: an activation is [rows, cols] row-major, one row per token (rows =
// micro-batch sequences x tokens this rank holds). Every launcher only enqueues on `stream`.
// Parameter-gradient outputs ACCUMULATE (gradient accumulation over micro-batches); activation
// outputs OVERWRITE unless the name says add.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace ringplan::runtime::gpu {

using bf16 = __nv_bfloat16;

// x[r, :] = emb[tok[r], :] (emb: the bf16 copy of the [vocab, h] table).
void embedding_forward(const int32_t* tok, const bf16* emb, bf16* x, int64_t rows, int64_t h, cudaStream_t s);
// d_emb[tok[r], :] += dx[r, :] (float atomics: tokens repeat).
void embedding_backward(const int32_t* tok, const bf16* dx, float* d_emb, int64_t rows, int64_t h, cudaStream_t s);

// y = x * rstd * g, rstd = 1/sqrt(mean(x^2) + eps) per row (kept for the backward).
void rmsnorm_forward(const bf16* x, const float* g, bf16* y, float* rstd, int64_t rows, int64_t h, float eps,
                     cudaStream_t s);
// dx_acc += rstd * (g*dy - xhat * mean(xhat*g*dy)) (the residual stream's gradient already in
// dx_acc); dg += sum over rows of dy * xhat.
void rmsnorm_backward(const bf16* x, const float* g, const float* rstd, const bf16* dy, bf16* dx_acc, float* dg,
                      int64_t rows, int64_t h, cudaStream_t s);

// Rotary embedding ("rotate half", ops.hpp rope_apply) in place on the first `heads` heads of
// each row of x [rows, row_stride]: row r holds the token at global position pos[r % n].
void rope_forward(bf16* x, const int64_t* pos, int64_t rows, int64_t n, int64_t heads, int64_t head_dim,
                  int64_t row_stride, float base, cudaStream_t s);

// out [rows = b*n, heads*d] (bf16) <- o [b, heads, n, d] (float32): the attention output in the
// layout of the output projection's input.
void heads_to_tokens(const float* o, bf16* out, int64_t b, int64_t n, int64_t heads, int64_t d, cudaStream_t s);
// dqkv [rows, (hq + 2 hkv) d] (bf16) <- dq [b, hq, n, d], dk, dv [b, hkv, n, d] (float32), the
// inverse rotation applied to dq and dk (the rotation's transpose): the gradient of the QKV
// projection's output.
void attention_grads_to_qkv(const float* dq, const float* dk, const float* dv, bf16* dqkv, const int64_t* pos,
                            int64_t b, int64_t n, int64_t hq, int64_t hkv, int64_t d, float base, cudaStream_t s);

// Gated (SwiGLU): m = silu(gate) * up with gu = [gate | up] per row ([rows, 2f]); not gated:
// m = gelu_tanh(gu) ([rows, f]).
void mlp_act_forward(const bf16* gu, bf16* m, int64_t rows, int64_t f, bool gated, cudaStream_t s);
// dgu from dm (overwrites).
void mlp_act_backward(const bf16* gu, const bf16* dm, bf16* dgu, int64_t rows, int64_t f, bool gated, cudaStream_t s);

// out = a + b (count elements).
void add(const bf16* a, const bf16* b, bf16* out, int64_t count, cudaStream_t s);

// Cross-entropy of each row of logits [rows, vocab] against target[r]: loss_sum += sum of the
// rows' losses (float64 accumulator on the device), and logits <- (softmax - onehot) * scale in
// place (the gradient of scale * sum of losses).
void cross_entropy(bf16* logits, const int32_t* target, double* loss_sum, int64_t rows, int64_t vocab, float scale,
                   cudaStream_t s);

// Adam (b1, b2, eps; lr1 = lr / (1 - b1^t), c2 = 1 / (1 - b2^t)) or SGD with momentum (v null),
// on float32 master weights, then their bf16 copy; the gradient is zeroed for the next step.
void optimizer_step(float* w, float* g, float* m, float* v, bf16* w_bf16, int64_t count, bool adam, float lr,
                    float lr1, float c2, cudaStream_t s);

// dst = bf16(src).
void to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t s);

// x[i] = scale * u(seed, i), u uniform in [-1, 1) from a hash of (seed, i): benchmark inputs
// without a host round trip.
void fill_uniform(bf16* x, int64_t count, uint64_t seed, float scale, cudaStream_t s);
// dst = FP8 e4m3 (saturating, round to nearest) of src, one byte per element.
void to_fp8_e4m3(const bf16* src, uint8_t* dst, int64_t count, cudaStream_t s);

}  // namespace ringplan::runtime::gpu
