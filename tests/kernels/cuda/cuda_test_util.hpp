// Helpers shared by the CUDA kernel tests: the no-GPU skip, CUDA call checks inside doctest
// cases, and an owning device buffer. Header-only; include after doctest.
#pragma once
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/attention_cuda.hpp"

namespace ringplan::test::cuda {

// False (and a "SKIPPED: ..." message, which bench/device_check.sh counts as not run) when
// there is no usable device.
inline bool have_gpu() {
  std::string why;
  if (kernels::cuda::device_count(&why) > 0) return true;
  MESSAGE("SKIPPED: no CUDA device (" << why << ")");
  return false;
}

#define REQUIRE_CUDA(call)                                                            \
  do {                                                                                \
    const cudaError_t e_ = (call);                                                    \
    if (e_ != cudaSuccess) FAIL(#call << " failed: " << cudaGetErrorString(e_));     \
  } while (0)

// Owns one device allocation of `count` elements.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) {
    if (n > 0 && cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)) != cudaSuccess) {
      throw std::runtime_error("cudaMalloc failed");
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<T>& h) {
    REQUIRE(h.size() == count);
    if (count) REQUIRE_CUDA(cudaMemcpy(ptr, h.data(), count * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(count);
    if (count) REQUIRE_CUDA(cudaMemcpy(h.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

}  // namespace ringplan::test::cuda
