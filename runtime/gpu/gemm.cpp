// Row-major GEMMs on cuBLAS (see gemm.hpp).
#include "runtime/gpu/gemm.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace ringplan::runtime::gpu {

void cublas_check(cublasStatus_t st, const char* call, const char* file, int line) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorKind::runtime, fmt::format("{}:{}: {} failed: {} ({})", file, line, call, cublasGetStatusName(st),
                                                cublasGetStatusString(st)));
}

// Column-major: Y^T (N x M) = op_T(W as K x N) * X^T (K x M).
void gemm_forward(cublasHandle_t h, const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t M,
                  int64_t K, int64_t N) {
  const float one = 1.0f, zero = 0.0f;
  RINGPLAN_CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, w, CUDA_R_16BF, int(K), x,
                                  CUDA_R_16BF, int(K), &zero, y, CUDA_R_16BF, int(N), CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
}

// Column-major: dX^T (K x M) = W^T (K x N) * dY^T (N x M).
void gemm_dgrad(cublasHandle_t h, const __nv_bfloat16* dy, const __nv_bfloat16* w, __nv_bfloat16* dx, int64_t M,
                int64_t K, int64_t N) {
  const float one = 1.0f, zero = 0.0f;
  RINGPLAN_CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(M), int(N), &one, w, CUDA_R_16BF, int(K),
                                  dy, CUDA_R_16BF, int(N), &zero, dx, CUDA_R_16BF, int(K), CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
}

// Column-major: dW^T (K x N) = X^T (K x M) * op_T(dY^T as N x M).
void gemm_wgrad(cublasHandle_t h, const __nv_bfloat16* dy, const __nv_bfloat16* x, float* dw, int64_t M, int64_t K,
                int64_t N, bool accumulate) {
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  RINGPLAN_CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, int(K), int(N), int(M), &one, x, CUDA_R_16BF, int(K),
                                  dy, CUDA_R_16BF, int(N), &beta, dw, CUDA_R_32F, int(K), CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
}

}  // namespace ringplan::runtime::gpu
