// Internal: TMA descriptors (CUtensorMap) of the Hopper attention kernels' 16-bit tensors, made on
// the host for each launch. Included by the sm_90a .cu files.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder comes through the runtime)
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/attention.hpp"
#include "kernels/cuda/mma_primitives.cuh"  // RINGPLAN_MMA_THROW_IF

namespace ringplan::kernels::cuda::tma {

// TMA box width: one 128-byte swizzle span of 16-bit elements (a head_dim-128 tile is two boxes).
inline constexpr int kBoxCols = 64;

// cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    RINGPLAN_MMA_THROW_IF(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || f == nullptr) {
      throw std::runtime_error("the driver has no cuTensorMapEncodeTiled (TMA needs a CUDA 12+ driver)");
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// TMA descriptor of a [batch, heads, tokens, head_dim] 16-bit tensor with the view's strides,
// boxes of kBoxCols columns x `rows` tokens, 128-byte swizzle (the wgmma layout), zero fill
// outside. Extent-1 dimensions get a dense stride (their coordinate is always 0; the encoder
// wants strides that are multiples of 16 bytes, and views may carry anything there).
inline CUtensorMap make_map(const TensorView& t, int rows) {
  const cuuint64_t dims[4] = {cuuint64_t(t.head_dim), cuuint64_t(t.tokens), cuuint64_t(t.heads), cuuint64_t(t.batch)};
  const int64_t sh = t.heads > 1 ? t.stride_head : t.tokens * t.stride_token;
  const int64_t sb = t.batch > 1 ? t.stride_batch : t.heads * sh;
  const cuuint64_t strides[3] = {cuuint64_t(t.stride_token * 2), cuuint64_t(sh * 2), cuuint64_t(sb * 2)};
  const cuuint32_t box[4] = {cuuint32_t(kBoxCols), cuuint32_t(rows), 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode_fn()(
      &map, t.type == ElemType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      const_cast<void*>(t.data), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    throw std::runtime_error("cuTensorMapEncodeTiled failed (CUresult " + std::to_string(int(r)) +
                             ") for a tensor of " + std::to_string(t.batch) + "x" + std::to_string(t.heads) + "x" +
                             std::to_string(t.tokens) + "x" + std::to_string(t.head_dim));
  }
  return map;
}

}  // namespace ringplan::kernels::cuda::tma
