// Error macros for the NCCL communicator, one family per error source, in NCCL's style: the
// message names file, line and host, the failing call and the library's own error string.
// CUDA checks clear the (non-sticky) error so that later calls start clean.
// Errors are thrown as ringplan::Error(runtime); callers add the rank (see NcclCommunicator).
#pragma once
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

namespace ringplan::runtime::nccl_detail {

std::string local_host_name();
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_nccl_error(ncclResult_t res, const char* call, const char* file, int line);

}  // namespace ringplan::runtime::nccl_detail

#define RINGPLAN_CUDACHECK(cmd)                                                               \
  do {                                                                                        \
    const cudaError_t e_ = (cmd);                                                             \
    if (e_ != cudaSuccess) {                                                                  \
      (void)cudaGetLastError();                                                               \
      ::ringplan::runtime::nccl_detail::throw_cuda_error(e_, #cmd, __FILE__, __LINE__);       \
    }                                                                                         \
  } while (0)

// ncclInProgress is not an error on a non-blocking communicator: the caller then polls
// ncclCommGetAsyncError until the operation is enqueued.
#define RINGPLAN_NCCLCHECK(cmd)                                                               \
  do {                                                                                        \
    const ncclResult_t r_ = (cmd);                                                            \
    if (r_ != ncclSuccess && r_ != ncclInProgress) {                                          \
      ::ringplan::runtime::nccl_detail::throw_nccl_error(r_, #cmd, __FILE__, __LINE__);       \
    }                                                                                         \
  } while (0)
