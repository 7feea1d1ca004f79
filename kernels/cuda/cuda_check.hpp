// The CUDA runtime error check of kernels/cuda (host code only).
//
// RINGPLAN_CUDA_THROW_IF(call) evaluates a CUDA runtime call and, when it fails, throws
// std::runtime_error with file:line, the call's text and the CUDA error string; it first clears a
// non-sticky error (cudaGetLastError) so that later calls start clean. kernels/ does not include
// runtime/ headers: runtime/ has its own checks (runtime/nccl/nccl_check.hpp, runtime/gpu).
#pragma once
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#define RINGPLAN_CUDA_THROW_IF(call)                                                                   \
  do {                                                                                                 \
    const cudaError_t err_ = (call);                                                                   \
    if (err_ != cudaSuccess) {                                                                         \
      (void)cudaGetLastError();                                                                        \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #call + \
                               " failed: " + cudaGetErrorString(err_));                                \
    }                                                                                                  \
  } while (0)
