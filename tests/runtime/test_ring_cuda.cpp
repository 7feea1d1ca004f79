// The CUDA ring (runtime/gpu/cuda_ring.hpp) on one GPU over NCCL against the float64 reference:
// O, lse, dQ, dK, dV of a whole sequence, bf16 and f16, head_dim 64 and 128, GQA, causal and
// not, and the layer's output cast to the input type before the backward (as `ringplan run`
// does). One rank: NCCL cannot put two ranks on one GPU, so P > 1 needs several GPUs; the ring
// schedule itself is shared with the CPU path and tested there for P = 1..8, including NCCL's
// tagless matching rules (tests/runtime/test_ring_mpi.cpp).
//
// Without a GPU every case prints "SKIPPED: no CUDA device (...)" and passes.
//
// Error bounds (as tests/kernels/cuda/test_attention_cuda.cpp, whose kernels this runs): the
// reference sees the SAME rounded inputs; relative to the largest reference entry, O within
// f16 2e-3 / bf16 1.6e-2, lse 1e-3, gradients f16 1e-2 / bf16 6e-2. D here comes from the output
// rounded to the input type (the reference uses its exact O): one more rounding of O, inside
// the gradient bound. A wrong mask, head mapping or lost accumulator gives errors of order 1.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "kernels/attention.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "runtime/executor.hpp"
#include "runtime/gpu/cuda_ring.hpp"
#include "runtime/gpu/gpu_executor.hpp"
#include "runtime/mpi_communicator.hpp"
#include "tests/runtime/cuda_test_helpers.hpp"
#include "tests/runtime/mpi_doctest_main.hpp"
#include "runtime/nccl/nccl_communicator.hpp"
#include "runtime/sharding.hpp"

using namespace ringplan;
using kernels::ElemType;

namespace {
runtime::MpiCommunicator* g_world = nullptr;

using test::have_gpu;

// Device buffer of `type` -> host float (exact: every f16/bf16 value is a float).
std::vector<double> download_typed(const runtime::DeviceBuffer& b, ElemType type, size_t count) {
  std::vector<uint16_t> raw(count);
  RINGPLAN_CUDA_OK(cudaMemcpy(raw.data(), b.get(), count * 2, cudaMemcpyDeviceToHost));
  std::vector<double> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (type == ElemType::bf16) {
      const uint32_t bits = static_cast<uint32_t>(raw[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      out[i] = f;
    } else {
      __half_raw hr;
      hr.x = raw[i];
      out[i] = __half2float(__half(hr));
    }
  }
  return out;
}

std::vector<double> download_f32(const runtime::DeviceBuffer& b, size_t count) {
  std::vector<float> raw(count);
  RINGPLAN_CUDA_OK(cudaMemcpy(raw.data(), b.get(), count * 4, cudaMemcpyDeviceToHost));
  return {raw.begin(), raw.end()};
}

runtime::DeviceBuffer upload_typed(ElemType type, uint64_t seed, runtime::SyntheticTensor t, int64_t heads,
                                   const std::vector<int64_t>& pos, int64_t d, cudaStream_t s) {
  const int64_t n = static_cast<int64_t>(pos.size());
  std::vector<float> host(static_cast<size_t>(heads * n * d));
  runtime::fill_synthetic(host.data(), seed, t, 1, heads, pos.data(), n, d);
  runtime::DeviceBuffer f32(host.size() * 4), typed(host.size() * 2);
  RINGPLAN_CUDA_OK(cudaMemcpy(f32.get(), host.data(), f32.bytes(), cudaMemcpyHostToDevice));
  kernels::cuda::convert_from_f32(kernels::dense_view(f32.get(), ElemType::f32, 1, heads, n, d),
                                  kernels::dense_view(typed.get(), type, 1, heads, n, d), s);
  RINGPLAN_CUDA_OK(cudaStreamSynchronize(s));
  return typed;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double e = 0;
  for (size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(got[i] - ref[i]));
  return e / std::max(1e-30, max_abs(ref));
}

struct Case {
  ElemType type;
  int64_t d;
  bool causal;
  int64_t heads = 4, kv_heads = 2, L = 320;  // 320: partial tiles (query tile 128, key tile 64)
};

void check_case(const Case& c) {
  const std::string name = fmt::format("{} d={} {} H={} Hkv={} L={}", c.type == ElemType::bf16 ? "bf16" : "f16", c.d,
                                       c.causal ? "causal" : "non-causal", c.heads, c.kv_heads, c.L);
  INFO(name);
  cudaStream_t s = nullptr;
  RINGPLAN_CUDA_OK(cudaSetDevice(0));
  RINGPLAN_CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  {
    auto nccl = runtime::NcclCommunicator::create(runtime::single_process_bootstrap(), 0, s, 60.0);
    const runtime::ContextParallel ctx(g_world, CpScheme::contiguous, c.L);
    const std::vector<int64_t>& pos = ctx.positions();
    const uint64_t seed = 11;
    using runtime::SyntheticTensor;
    const size_t qe = static_cast<size_t>(c.heads * c.L * c.d), ke = static_cast<size_t>(c.kv_heads * c.L * c.d);
    const size_t rows = static_cast<size_t>(c.heads * c.L);
    runtime::DeviceBuffer q = upload_typed(c.type, seed, SyntheticTensor::q, c.heads, pos, c.d, s);
    runtime::DeviceBuffer k = upload_typed(c.type, seed, SyntheticTensor::k, c.kv_heads, pos, c.d, s);
    runtime::DeviceBuffer v = upload_typed(c.type, seed, SyntheticTensor::v, c.kv_heads, pos, c.d, s);
    runtime::DeviceBuffer dout = upload_typed(c.type, seed, SyntheticTensor::grad_out, c.heads, pos, c.d, s);
    runtime::DeviceBuffer out(qe * 4), out_typed(qe * 2), lse(rows * 4), dq(qe * 4), dk(ke * 4), dv(ke * 4);

    runtime::RingConfig cfg;
    cfg.heads = c.heads;
    cfg.kv_heads = c.kv_heads;
    cfg.tokens = c.L;
    cfg.head_dim = c.d;
    cfg.causal = c.causal;
    runtime::CudaRingAttention ring(*nccl, *g_world, cfg, c.type, pos.data(), s);
    ring.forward(q.get(), k.get(), v.get(), out.as<float>(), lse.as<float>());
    kernels::cuda::convert_from_f32(kernels::dense_view(out.get(), ElemType::f32, 1, c.heads, c.L, c.d),
                                    kernels::dense_view(out_typed.get(), c.type, 1, c.heads, c.L, c.d), s);
    ring.backward(q.get(), k.get(), v.get(), out_typed.get(), lse.as<float>(), dout.get(), dq.as<float>(),
                  dk.as<float>(), dv.as<float>());
    RINGPLAN_CUDA_OK(cudaStreamSynchronize(s));

    // The reference on the same rounded inputs.
    const auto qh = download_typed(q, c.type, qe), kh = download_typed(k, c.type, ke), vh = download_typed(v, c.type, ke),
               doh = download_typed(dout, c.type, qe);
    std::vector<double> ro(qe), rl(rows), rdq(qe), rdk(ke), rdv(ke);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
    kernels::reference_forward(qh.data(), kh.data(), vh.data(), pos.data(), pos.data(), 1, c.heads, c.kv_heads, c.L,
                               c.L, c.d, c.causal, scale, ro.data(), rl.data());
    kernels::reference_backward(qh.data(), kh.data(), vh.data(), ro.data(), doh.data(), rl.data(), pos.data(),
                                pos.data(), 1, c.heads, c.kv_heads, c.L, c.L, c.d, c.causal, scale, rdq.data(),
                                rdk.data(), rdv.data());
    const double tol_o = c.type == ElemType::bf16 ? 1.6e-2 : 2e-3;
    const double tol_g = c.type == ElemType::bf16 ? 6e-2 : 1e-2;
    const auto lse_h = download_f32(lse, rows);
    double lse_err = 0;
    for (size_t i = 0; i < rows; ++i) lse_err = std::max(lse_err, std::abs(lse_h[i] - rl[i]));
    const double eo = rel_error(download_f32(out, qe), ro), eq = rel_error(download_f32(dq, qe), rdq),
                 ek = rel_error(download_f32(dk, ke), rdk), ev = rel_error(download_f32(dv, ke), rdv);
    MESSAGE(fmt::format("{}: relative errors O {:.2e} dQ {:.2e} dK {:.2e} dV {:.2e}, lse abs {:.2e}", name, eo, eq, ek,
                        ev, lse_err));
    CHECK(eo <= tol_o);
    CHECK(lse_err <= 1e-3);
    CHECK(eq <= tol_g);
    CHECK(ek <= tol_g);
    CHECK(ev <= tol_g);
    CHECK(max_abs(rdk) > 0.01);  // a zero result must not pass
    // One rank: one step, nothing hidden, every visible pair counted.
    REQUIRE(ring.last_forward().steps.size() == 1);
    CHECK(ring.last_forward().visible_pairs() ==
          (c.causal ? c.L * (c.L + 1) / 2 : c.L * c.L));
  }
  cudaStreamDestroy(s);
}

}  // namespace

TEST_CASE("CUDA ring on one GPU equals the float64 reference (bf16, f16, d 64, 128, GQA, causal and not)") {
  if (!have_gpu()) return;
  for (ElemType t : {ElemType::bf16, ElemType::f16})
    for (int64_t d : {64, 128})
      for (bool causal : {true, false}) check_case(Case{t, d, causal});
}

TEST_CASE("CUDA ring refuses shapes its kernels cannot take, before touching the device") {
  if (!have_gpu()) return;
  cudaStream_t s = nullptr;
  RINGPLAN_CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  {
    auto nccl = runtime::NcclCommunicator::create(runtime::single_process_bootstrap(), 0, s, 60.0);
    const std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5, 6, 7};
    runtime::RingConfig cfg;
    cfg.tokens = 8;
    cfg.head_dim = 32;
    CHECK_THROWS_WITH_AS(runtime::CudaRingAttention(*nccl, *g_world, cfg, ElemType::bf16, pos.data(), s),
                         doctest::Contains("head_dim=32"), const Error&);
    cfg.head_dim = 64;
    cfg.kernel = AttentionImpl::materialized;
    CHECK_THROWS_WITH_AS(runtime::CudaRingAttention(*nccl, *g_world, cfg, ElemType::bf16, pos.data(), s),
                         doctest::Contains("materialised"), const Error&);
  }
  cudaStreamDestroy(s);
}

int main(int argc, char** argv) {
  return test::run_mpi_doctest(argc, argv, g_world, "test_ring_cuda", false);
}
