#include "runtime/gpu/cuda_ring.hpp"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <stdexcept>
#include <utility>

#include "core/error.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "runtime/ring_schedule.hpp"

namespace ringplan::runtime {

CudaStream::CudaStream() { RINGPLAN_CUDA_OK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
CudaStream::~CudaStream() {
  if (s_) cudaStreamDestroy(s_);
}

void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error
  throw Error(ErrorKind::runtime,
              fmt::format("{}:{}: {} failed: {} ({})", file, line, call, cudaGetErrorName(err), cudaGetErrorString(err)));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(ErrorKind::runtime, fmt::format("cudaMalloc of {:.1f} MiB failed: {} ({:.1f} of {:.1f} MiB free)",
                                                bytes / 1048576.0, cudaGetErrorString(err), free_b / 1048576.0,
                                                total_b / 1048576.0));
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

size_t elem_bytes(kernels::ElemType t) { return t == kernels::ElemType::f32 ? 4 : 2; }

namespace {

// The kernels report argument and CUDA errors as std exceptions (kernels/ knows nothing of
// ringplan::Error); here they get the rank that hit them.
template <class F>
void kernel_call(const Communicator& c, const char* what, F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    throw bad_input(fmt::format("{}: {}: {}", c.describe_rank(c.rank()), what, e.what()));
  } catch (const std::runtime_error& e) {
    if (dynamic_cast<const Error*>(&e)) throw;
    throw Error(ErrorKind::runtime, fmt::format("{}: {}: {}", c.describe_rank(c.rank()), what, e.what()));
  }
}

}  // namespace

CudaRingAttention::CudaRingAttention(Communicator& dev, Communicator& host, const RingConfig& cfg,
                                     kernels::ElemType type, const int64_t* positions, cudaStream_t stream)
    : dev_(dev), cfg_(cfg), type_(type), stream_(stream), rank_(dev.rank()), size_(dev.size()) {
  if (host.size() != dev.size() || host.rank() != dev.rank())
    throw bad_input(fmt::format("CUDA ring: the host group (rank {} of {}) and the device group (rank {} of {}) must "
                                "be the same ranks",
                                host.rank(), host.size(), dev.rank(), dev.size()));
  if (type != kernels::ElemType::bf16 && type != kernels::ElemType::f16)
    throw bad_input("CUDA ring: inputs must be bf16 or f16");
  if (cfg.kernel != AttentionImpl::flash)
    throw bad_input("CUDA ring: only the flash kernel exists on CUDA (the materialised kernel is the CPU reference "
                    "of the O(L^2/P) memory term); set attention: flash");
  if (cfg.batch < 1 || cfg.heads < 1 || cfg.kv_heads < 1 || cfg.tokens < 1)
    throw bad_input(fmt::format("CUDA ring: batch={} heads={} kv_heads={} tokens={}: all must be >= 1", cfg.batch,
                                cfg.heads, cfg.kv_heads, cfg.tokens));
  if (cfg.head_dim != 64 && cfg.head_dim != 128)
    throw bad_input(fmt::format("CUDA ring: head_dim={} is not supported (the CUDA kernels take 64 or 128)",
                                cfg.head_dim));
  if (cfg.heads % cfg.kv_heads != 0)
    throw bad_input(fmt::format("CUDA ring: heads={} is not a multiple of kv_heads={}", cfg.heads, cfg.kv_heads));
  if (positions == nullptr) throw bad_input("CUDA ring: positions must not be null");
  n_ = static_cast<size_t>(cfg.tokens);
  q_elems_ = static_cast<size_t>(cfg.batch * cfg.heads * cfg.tokens * cfg.head_dim);
  kv_elems_ = static_cast<size_t>(cfg.batch * cfg.kv_heads * cfg.tokens * cfg.head_dim);
  rows_ = static_cast<size_t>(cfg.batch * cfg.heads * cfg.tokens);
  esz_ = elem_bytes(type);

  all_positions_ = exchange_positions(host, cfg.tokens, positions);
  RingVisibility vis = ring_visibility(all_positions_.data(), size_, cfg.tokens, rank_, cfg.causal);
  hidden_ = std::move(vis.hidden);
  pairs_ = std::move(vis.pairs);

  positions_ = DeviceBuffer(all_positions_.size() * sizeof(int64_t));
  RINGPLAN_CUDA_OK(cudaMemcpy(positions_.get(), all_positions_.data(), positions_.bytes(), cudaMemcpyHostToDevice));
  // P = 1 needs no ring buffers: the kernels read K, V and write dK, dV in the caller's arrays.
  if (size_ > 1) {
    for (int i = 0; i < 2; ++i) {
      kv_buf_[i] = DeviceBuffer(2 * kv_elems_ * esz_);
      dkv_recv_[i] = DeviceBuffer(2 * kv_elems_ * sizeof(float));
      dkv_work_[i] = DeviceBuffer(2 * kv_elems_ * sizeof(float));
    }
  }
  blk_out_ = DeviceBuffer(q_elems_ * sizeof(float));
  blk_lse_ = DeviceBuffer(rows_ * sizeof(float));
  delta_ = DeviceBuffer(rows_ * sizeof(float));
}

RingWorkspaceBytes CudaRingAttention::workspace_bytes() const {
  RingWorkspaceBytes w;
  w.kv_ring_bytes = static_cast<int64_t>(kv_buf_[0].bytes() + kv_buf_[1].bytes());
  w.dkv_ring_bytes = static_cast<int64_t>(dkv_recv_[0].bytes() + dkv_recv_[1].bytes() + dkv_work_[0].bytes() +
                                          dkv_work_[1].bytes());
  w.block_out_bytes = static_cast<int64_t>(blk_out_.bytes() + blk_lse_.bytes() + delta_.bytes());
  w.scores_bytes = 0;
  return w;
}

kernels::BlockParams CudaRingAttention::block_params(const void* q, const void* k, const void* v, int src) const {
  const auto& c = cfg_;
  kernels::BlockParams p;
  p.q = kernels::dense_view(const_cast<void*>(q), type_, c.batch, c.heads, c.tokens, c.head_dim);
  p.k = kernels::dense_view(const_cast<void*>(k), type_, c.batch, c.kv_heads, c.tokens, c.head_dim);
  p.v = kernels::dense_view(const_cast<void*>(v), type_, c.batch, c.kv_heads, c.tokens, c.head_dim);
  p.q_positions = positions_.as<int64_t>() + static_cast<size_t>(rank_) * n_;
  p.k_positions = positions_.as<int64_t>() + static_cast<size_t>(src) * n_;
  p.causal = c.causal;
  p.scale = c.scale;
  return p;
}

void CudaRingAttention::trace_step(TracePhase phase, const RingStepTiming& st, double c0, double c1, double w0,
                                   double w1) {
  if (trace_ == nullptr) return;
  const double shift = trace_->now_s() - ring_detail::now_s();
  trace_->add(phase, TraceLane::compute, st.step, st.src_rank, c0 + shift, c1 + shift, st.skipped);
  trace_->add(phase, TraceLane::comm, st.step, st.src_rank, w0 + shift, w1 + shift, false);
}

struct CudaRingAttention::ForwardOps {
  CudaRingAttention& r;
  const void *q, *k, *v;
  float *out, *lse;

  const char* kv_half(int buf, bool second) const {
    return r.kv_buf_[buf].as<const char>() + (second ? r.kv_elems_ * r.esz_ : 0);
  }
  void stage_kv() {
    RINGPLAN_CUDA_OK(cudaMemcpyAsync(r.kv_buf_[0].get(), k, r.kv_elems_ * r.esz_, cudaMemcpyDeviceToDevice, r.stream_));
    RINGPLAN_CUDA_OK(cudaMemcpyAsync(r.kv_buf_[0].as<char>() + r.kv_elems_ * r.esz_, v, r.kv_elems_ * r.esz_,
                                     cudaMemcpyDeviceToDevice, r.stream_));
  }
  void* kv_buffer(int i) { return r.kv_buf_[i].get(); }
  size_t kv_bytes() const { return 2 * r.kv_elems_ * r.esz_; }
  kernels::ForwardOut result_view(float* o, float* l) const {
    const auto& c = r.cfg_;
    return {kernels::dense_view(o, kernels::ElemType::f32, c.batch, c.heads, c.tokens, c.head_dim),
            kernels::dense_rows(l, c.batch, c.heads, c.tokens)};
  }
  void forward_block(int buf, int src, bool first) {
    const kernels::BlockParams p =
        buf >= 0 ? r.block_params(q, kv_half(buf, false), kv_half(buf, true), src) : r.block_params(q, k, v, src);
    const kernels::ForwardOut acc = result_view(out, lse);
    const kernels::ForwardOut blk = result_view(r.blk_out_.as<float>(), r.blk_lse_.as<float>());
    // The first computed block writes the result directly; later ones merge into it.
    kernel_call(r.dev_, "ring forward", [&] {
      kernels::cuda::flash_forward(p, first ? acc : blk, r.stream_);
      if (!first) kernels::cuda::merge_partial(acc, blk, r.stream_);
    });
  }
  void forward_empty() {
    RINGPLAN_CUDA_OK(cudaMemsetAsync(out, 0, r.q_elems_ * sizeof(float), r.stream_));
    const std::vector<float> neg(r.rows_, kernels::kNegInf);
    RINGPLAN_CUDA_OK(cudaMemcpyAsync(lse, neg.data(), r.rows_ * sizeof(float), cudaMemcpyHostToDevice, r.stream_));
    RINGPLAN_CUDA_OK(cudaStreamSynchronize(r.stream_));  // `neg` dies here
  }
  void fence() { RINGPLAN_CUDA_OK(cudaStreamSynchronize(r.stream_)); }
};

struct CudaRingAttention::BackwardOps : CudaRingAttention::ForwardOps {
  const void* out_typed;
  const void* grad_out;
  float *grad_q, *grad_k, *grad_v;

  kernels::TensorView typed_q(const void* p) const {
    const auto& c = r.cfg_;
    return kernels::dense_view(const_cast<void*>(p), r.type_, c.batch, c.heads, c.tokens, c.head_dim);
  }
  kernels::RowStatsView rows(float* p) const {
    const auto& c = r.cfg_;
    return kernels::dense_rows(p, c.batch, c.heads, c.tokens);
  }
  void backward_begin() {
    kernel_call(r.dev_, "ring backward (D = rowsum(dO * O))", [&] {
      kernels::cuda::backward_delta(typed_q(out_typed), typed_q(grad_out), rows(r.delta_.as<float>()), r.stream_);
    });
    RINGPLAN_CUDA_OK(cudaMemsetAsync(grad_q, 0, r.q_elems_ * sizeof(float), r.stream_));
  }
  void* dkv_recv(int i) { return r.dkv_recv_[i].get(); }
  void* dkv_work(int i) { return r.dkv_work_[i].get(); }
  size_t dkv_bytes() const { return 2 * r.kv_elems_ * sizeof(float); }
  void backward_block(int buf, int src, int par, bool skipped) {
    const auto& c = r.cfg_;
    float* work_k = par >= 0 ? r.dkv_work_[par].as<float>() : grad_k;
    float* work_v = par >= 0 ? r.dkv_work_[par].as<float>() + r.kv_elems_ : grad_v;
    // The kernel adds (dK += ...): start this block's contribution from zero.
    RINGPLAN_CUDA_OK(cudaMemsetAsync(work_k, 0, r.kv_elems_ * sizeof(float), r.stream_));
    RINGPLAN_CUDA_OK(cudaMemsetAsync(work_v, 0, r.kv_elems_ * sizeof(float), r.stream_));
    if (skipped) return;
    const kernels::BlockParams p =
        buf >= 0 ? r.block_params(q, kv_half(buf, false), kv_half(buf, true), src) : r.block_params(q, k, v, src);
    auto f32 = [&](float* x, int64_t heads) {
      return kernels::dense_view(x, kernels::ElemType::f32, c.batch, heads, c.tokens, c.head_dim);
    };
    const kernels::BackwardArgs g{typed_q(out_typed), typed_q(grad_out), rows(lse), rows(r.delta_.as<float>()),
                                  f32(grad_q, c.heads), f32(work_k, c.kv_heads), f32(work_v, c.kv_heads)};
    kernel_call(r.dev_, "ring backward", [&] { kernels::cuda::flash_backward(p, g, r.stream_); });
  }
  void accumulate(int par) {
    kernel_call(r.dev_, "ring backward (accumulate dK, dV)", [&] {
      kernels::cuda::accumulate(r.dkv_work_[par].as<float>(), r.dkv_recv_[par].as<float>(),
                                static_cast<int64_t>(2 * r.kv_elems_), r.stream_);
    });
  }
  void backward_finish(int i) {
    const float* result = r.dkv_recv_[i].as<float>();
    RINGPLAN_CUDA_OK(cudaMemcpyAsync(grad_k, result, r.kv_elems_ * sizeof(float), cudaMemcpyDeviceToDevice, r.stream_));
    RINGPLAN_CUDA_OK(cudaMemcpyAsync(grad_v, result + r.kv_elems_, r.kv_elems_ * sizeof(float),
                                     cudaMemcpyDeviceToDevice, r.stream_));
    RINGPLAN_CUDA_OK(cudaStreamSynchronize(r.stream_));
  }
};

void CudaRingAttention::forward(const void* q, const void* k, const void* v, float* out, float* lse) {
  ForwardOps ops{*this, q, k, v, out, lse};
  ring_detail::forward_pass(dev_, ops, hidden_, pairs_, fwd_timing_,
                            [&](const RingStepTiming& st, double c0, double c1, double w0, double w1) {
                              trace_step(TracePhase::forward, st, c0, c1, w0, w1);
                            });
}

void CudaRingAttention::backward(const void* q, const void* k, const void* v, const void* out, const float* lse,
                                 const void* grad_out, float* grad_q, float* grad_k, float* grad_v) {
  BackwardOps ops{{*this, q, k, v, nullptr, const_cast<float*>(lse)}, out, grad_out, grad_q, grad_k, grad_v};
  ring_detail::backward_pass(dev_, ops, hidden_, pairs_, bwd_timing_,
                             [&](const RingStepTiming& st, double c0, double c1, double w0, double w1) {
                               trace_step(TracePhase::backward, st, c0, c1, w0, w1);
                             });
}

}  // namespace ringplan::runtime
