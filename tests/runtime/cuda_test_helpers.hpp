// Shared by the GPU test programs: whether a CUDA device is usable here. Without one, a test case
// prints "SKIPPED: no CUDA device (why)" and returns, so the program passes on machines without a
// GPU (CI) and CTest reports the reason.
#pragma once
#include <doctest/doctest.h>

#include <string>

#include "runtime/gpu/gpu_executor.hpp"

namespace ringplan::test {

inline bool have_gpu() {
  std::string why;
  if (runtime::cuda_devices(&why) > 0) return true;
  MESSAGE("SKIPPED: no CUDA device (" << why << ")");
  return false;
}

}  // namespace ringplan::test
