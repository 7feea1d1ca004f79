// Row-major linear-layer GEMMs on cuBLAS (bf16 inputs, float32 accumulation), as the GPU training
// step runs them and `calibrate --device cuda` times them. cuBLAS is column-major: a row-major
// [rows, cols] matrix is its column-major transpose, so each call below swaps the operands.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>

namespace ringplan::runtime::gpu {

// Throws Error(runtime) naming the call, file:line and cuBLAS's status.
void cublas_check(cublasStatus_t st, const char* call, const char* file, int line);
#define RINGPLAN_CUBLAS_OK(call) ::ringplan::runtime::gpu::cublas_check((call), #call, __FILE__, __LINE__)

// Y[M, N] = X[M, K] W[N, K]^T (bf16 out): the forward of a layer with weight W [out, in].
void gemm_forward(cublasHandle_t h, const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t M,
                  int64_t K, int64_t N);
// dX[M, K] = dY[M, N] W[N, K] (bf16 out, overwrites): the data gradient.
void gemm_dgrad(cublasHandle_t h, const __nv_bfloat16* dy, const __nv_bfloat16* w, __nv_bfloat16* dx, int64_t M,
                int64_t K, int64_t N);
// dW[N, K] (+)= dY[M, N]^T X[M, K] (float32; accumulate: beta 1, else 0): the weight gradient.
void gemm_wgrad(cublasHandle_t h, const __nv_bfloat16* dy, const __nv_bfloat16* x, float* dw, int64_t M, int64_t K,
                int64_t N, bool accumulate);

}  // namespace ringplan::runtime::gpu
