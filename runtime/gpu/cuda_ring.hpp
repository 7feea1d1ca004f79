// Ring attention on CUDA devices: the schedule of runtime/ring_schedule.hpp (the same one the CPU
// path runs) with the CUDA kernels of kernels/cuda/attention_cuda.hpp and device buffers.
//
// Precision: Q, K, V, dO and the output O handed on are in the input type (bf16 or f16); the
// running O, lse, dQ, dK, dV and the travelling dK, dV accumulators are float32 (the kernels
// accumulate in float32 and the ring adds accumulators across ranks in float32). K and V travel
// in the input type, only the KV heads (GQA).
//
// Streams: every kernel and copy runs on `stream`; the device communicator (NCCL) orders its
// transfers after the work enqueued there and makes later work wait for received data (see
// runtime/nccl/nccl_communicator.hpp). fence() synchronises the stream so that per-step compute
// times are kernel times, not launch times; it does not stall the communication stream.
//
// Two communicators: `dev` moves device buffers (the ring), `host` exchanges host metadata (the
// token positions) once at construction. On one node with MPI they are the NCCL and the MPI
// communicator of the same CP group, with the same ranks.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/attention.hpp"
#include "runtime/communicator.hpp"
#include "runtime/ring_attention.hpp"
#include "runtime/trace.hpp"

namespace ringplan::runtime {

// An owning device allocation (cudaMalloc / cudaFree); empty when bytes == 0.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// An owning non-blocking CUDA stream (cudaStreamCreateWithFlags / cudaStreamDestroy). The
// project's GPU work runs on such streams; a plain cudaMemcpy does not wait for them.
class CudaStream {
 public:
  CudaStream();
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// Throws ringplan::Error(runtime) with the call, file:line and CUDA's message on failure.
void cuda_check(cudaError_t err, const char* call, const char* file, int line);
#define RINGPLAN_CUDA_OK(call) ::ringplan::runtime::cuda_check((call), #call, __FILE__, __LINE__)

size_t elem_bytes(kernels::ElemType t);

class CudaRingAttention {
 public:
  // Collective over `host` (positions) and `dev`. `positions` are this rank's global token
  // positions on the HOST (cfg.tokens of them). `type`: f16 or bf16. Allocates every buffer the
  // ring owns here, so workspace_bytes() is its whole footprint. Throws bad_input on shapes
  // the CUDA kernels cannot take (head_dim other than 64/128, the materialised kernel).
  CudaRingAttention(Communicator& dev, Communicator& host, const RingConfig& cfg, kernels::ElemType type,
                    const int64_t* positions, cudaStream_t stream);

  // Device pointers: q [b,H,n,d], k, v [b,Hkv,n,d] in the input type; out [b,H,n,d] and lse
  // [b,H,n] float32 (the merged result).
  void forward(const void* q, const void* k, const void* v, float* out, float* lse);
  // out: the final O in the input type (convert it with kernels::cuda::convert_from_f32);
  // lse: forward()'s float32 lse. Overwrites grad_q [b,H,n,d], grad_k, grad_v [b,Hkv,n,d]
  // (float32, device).
  void backward(const void* q, const void* k, const void* v, const void* out, const float* lse, const void* grad_out,
                float* grad_q, float* grad_k, float* grad_v);

  const RingPassTiming& last_forward() const { return fwd_timing_; }
  const RingPassTiming& last_backward() const { return bwd_timing_; }
  RingWorkspaceBytes workspace_bytes() const;
  void set_trace(TraceRecorder* trace) { trace_ = trace; }
  const RingConfig& config() const { return cfg_; }
  kernels::ElemType type() const { return type_; }
  const int64_t* positions_host(int rank) const { return all_positions_.data() + static_cast<size_t>(rank) * n_; }

 private:
  struct ForwardOps;  // the CUDA backend of ring_schedule.hpp
  struct BackwardOps;
  kernels::BlockParams block_params(const void* q, const void* k, const void* v, int src) const;
  void trace_step(TracePhase phase, const RingStepTiming& st, double c0, double c1, double w0, double w1);

  Communicator& dev_;
  RingConfig cfg_;
  kernels::ElemType type_;
  cudaStream_t stream_;
  int rank_ = 0, size_ = 1;
  size_t n_ = 0, q_elems_ = 0, kv_elems_ = 0, rows_ = 0, esz_ = 2;
  std::vector<int64_t> all_positions_;  // P x n, host
  std::vector<char> hidden_;
  std::vector<int64_t> pairs_;
  DeviceBuffer positions_;              // P x n int64, device
  DeviceBuffer kv_buf_[2];              // [K | V] in the input type
  DeviceBuffer dkv_recv_[2], dkv_work_[2];  // [dK | dV] float32
  DeviceBuffer blk_out_, blk_lse_, delta_;  // float32
  RingPassTiming fwd_timing_, bwd_timing_;
  TraceRecorder* trace_ = nullptr;
};

}  // namespace ringplan::runtime
