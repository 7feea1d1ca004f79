// Internal: TMA descriptors (CUtensorMap) of the Hopper attention kernels' 16-bit tensors, made on
// the host for each launch. Included by the sm_90a .cu files.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder comes through the runtime)
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/attention.hpp"
#include "kernels/cuda/cuda_check.hpp"

namespace ringplan::kernels::cuda::tma {

// TMA box width: one 128-byte swizzle span of 16-bit elements (a head_dim-128 tile is two boxes).
inline constexpr int kBoxCols = 64;

// Empty when a TMA descriptor (make_map) and the Hopper kernels' int32 tile coordinates can
// describe the view, else why not. TMA wants the stride of every dimension with more than one
// index to be a positive multiple of 16 bytes below 2^40 (extent-1 dimensions get a dense
// stride below); the kernels address tokens with int and add up to one tile to them. Views that
// fail run on the mma.sync kernels instead (the launchers check).
inline std::string tma_unsuitable(const TensorView& t) {
  constexpr int64_t kMaxStrideBytes = int64_t(1) << 40;
  const struct {
    int64_t extent, stride;
    const char* name;
  } dims[3] = {{t.tokens, t.stride_token, "token"}, {t.heads, t.stride_head, "head"}, {t.batch, t.stride_batch, "batch"}};
  for (const auto& d : dims) {
    const int64_t bytes = d.stride * 2;
    if (d.extent > 1 && (bytes <= 0 || bytes % 16 != 0 || bytes >= kMaxStrideBytes)) {
      return std::string(d.name) + " stride " + std::to_string(d.stride) + " elements";
    }
  }
  if (t.tokens > int64_t(INT32_MAX) - 256) return std::to_string(t.tokens) + " tokens";
  return {};
}

// cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
    RINGPLAN_CUDA_THROW_IF(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
#else
    RINGPLAN_CUDA_THROW_IF(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &q));
#endif
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
  const int64_t st = t.tokens > 1 ? t.stride_token : t.head_dim;
  const int64_t sh = t.heads > 1 ? t.stride_head : t.tokens * st;
  const int64_t sb = t.batch > 1 ? t.stride_batch : t.heads * sh;
  const cuuint64_t strides[3] = {cuuint64_t(st * 2), cuuint64_t(sh * 2), cuuint64_t(sb * 2)};
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
