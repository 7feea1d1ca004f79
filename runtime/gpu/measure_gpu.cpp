// GPU measurements for `ringplan calibrate --device cuda` (see measure_gpu.hpp).
#include "runtime/gpu/measure_gpu.hpp"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "runtime/gpu/cuda_ring.hpp"
#include "runtime/gpu/gemm.hpp"
#include "runtime/gpu/gpu_executor.hpp"
#include "runtime/gpu/step_kernels.hpp"

namespace ringplan::runtime::gpu {
namespace {

struct ModelShape {
  const char* name;
  int64_t hidden, ffn, heads, kv_heads, head_dim, vocab;
};
// Llama 3 model cards (Dubey et al. 2024, Table 3; vocabulary of the released tokenizer).
constexpr ModelShape kModels[] = {{"llama3_8b", 4096, 14336, 32, 8, 128, 128256},
                                  {"llama3_70b", 8192, 28672, 64, 8, 128, 128256}};
constexpr int64_t kTp[] = {1, 2, 4, 8};
constexpr int64_t kTokens[] = {1024, 4096, 16384};

struct Gemm {
  const char* name;
  int64_t in, out;
};
std::vector<Gemm> layer_gemms(const ModelShape& m, int64_t tp) {
  // KV heads are replicated when TP > kv_heads (Megatron), so a rank holds at least one.
  const int64_t kv = std::max<int64_t>(m.kv_heads / tp, 1);
  return {{"qkv", m.hidden, (m.heads / tp + 2 * kv) * m.head_dim},
          {"attn_out", m.heads * m.head_dim / tp, m.hidden},
          {"mlp_up", m.hidden, 2 * m.ffn / tp},
          {"mlp_down", m.ffn / tp, m.hidden},
          {"logits", m.hidden, m.vocab / tp}};
}

float bf16_to_float(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// `count` elements of a bf16 (or, with fp32, float) device matrix from element `start`, every
// `stride` elements, as double.
std::vector<double> fetch(const void* base, int64_t start, int64_t count, int64_t stride, int elem_bytes) {
  // The work runs on a non-blocking stream, which a plain cudaMemcpy does not wait for.
  RINGPLAN_CUDA_OK(cudaDeviceSynchronize());
  std::vector<unsigned char> raw(static_cast<size_t>(count * elem_bytes));
  const unsigned char* src = static_cast<const unsigned char*>(base) + start * elem_bytes;
  if (stride == 1) {
    RINGPLAN_CUDA_OK(cudaMemcpy(raw.data(), src, raw.size(), cudaMemcpyDeviceToHost));
  } else {
    RINGPLAN_CUDA_OK(cudaMemcpy2D(raw.data(), static_cast<size_t>(elem_bytes), src,
                                  static_cast<size_t>(stride * elem_bytes), static_cast<size_t>(elem_bytes),
                                  static_cast<size_t>(count), cudaMemcpyDeviceToHost));
  }
  std::vector<double> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    if (elem_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, raw.data() + i * 2, 2);
      out[static_cast<size_t>(i)] = bf16_to_float(v);
    } else if (elem_bytes == 4) {
      float v;
      std::memcpy(&v, raw.data() + i * 4, 4);
      out[static_cast<size_t>(i)] = v;
    } else {
      __nv_fp8_e4m3 v;
      std::memcpy(&v, raw.data() + i, 1);
      out[static_cast<size_t>(i)] = static_cast<float>(v);
    }
  }
  return out;
}

// Median over 5 of (time of `reps` calls) / reps, reps chosen so one measurement lasts ~20 ms.
template <class F>
double time_ms(F&& fn, cudaStream_t s) {
  cudaEvent_t a, b;
  RINGPLAN_CUDA_OK(cudaEventCreate(&a));
  RINGPLAN_CUDA_OK(cudaEventCreate(&b));
  fn();
  RINGPLAN_CUDA_OK(cudaEventRecord(a, s));
  fn();
  RINGPLAN_CUDA_OK(cudaEventRecord(b, s));
  RINGPLAN_CUDA_OK(cudaEventSynchronize(b));
  float once = 0;
  RINGPLAN_CUDA_OK(cudaEventElapsedTime(&once, a, b));
  const int reps = std::clamp(static_cast<int>(20.0f / std::max(once, 1e-3f)), 1, 200);
  std::vector<double> samples;
  for (int k = 0; k < 5; ++k) {
    RINGPLAN_CUDA_OK(cudaEventRecord(a, s));
    for (int r = 0; r < reps; ++r) fn();
    RINGPLAN_CUDA_OK(cudaEventRecord(b, s));
    RINGPLAN_CUDA_OK(cudaEventSynchronize(b));
    float ms = 0;
    RINGPLAN_CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    samples.push_back(double(ms) / reps);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::nth_element(samples.begin(), samples.begin() + 2, samples.end());
  return samples[2];
}

// FP8 e4m3 forward GEMM through cuBLASLt (the "TN" layout FP8 requires): Y[M, N] bf16 =
// X[M, K] W[N, K]^T, unit scales.
class Fp8Gemm {
 public:
  Fp8Gemm(cudaStream_t s) : stream_(s), ws_(kWorkspace) { RINGPLAN_CUBLAS_OK(cublasLtCreate(&lt_)); }
  ~Fp8Gemm() { cublasLtDestroy(lt_); }
  // Returns false (with `why`) when cuBLASLt offers no algorithm for the shape.
  bool prepare(int64_t M, int64_t K, int64_t N, std::string* why) {
    release();
    RINGPLAN_CUBLAS_OK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    RINGPLAN_CUBLAS_OK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    RINGPLAN_CUBLAS_OK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    RINGPLAN_CUBLAS_OK(cublasLtMatrixLayoutCreate(&la_, CUDA_R_8F_E4M3, uint64_t(K), uint64_t(N), int64_t(K)));
    RINGPLAN_CUBLAS_OK(cublasLtMatrixLayoutCreate(&lb_, CUDA_R_8F_E4M3, uint64_t(K), uint64_t(M), int64_t(K)));
    RINGPLAN_CUBLAS_OK(cublasLtMatrixLayoutCreate(&lc_, CUDA_R_16BF, uint64_t(N), uint64_t(M), int64_t(N)));
    cublasLtMatmulPreference_t pref;
    RINGPLAN_CUBLAS_OK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t wsb = kWorkspace;
    RINGPLAN_CUBLAS_OK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_, desc_, la_, lb_, lc_, lc_, pref, 1, &heur_, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      *why = fmt::format("cuBLASLt has no FP8 e4m3 algorithm for M={} K={} N={} ({})", M, K, N, cublasGetStatusName(st));
      return false;
    }
    return true;
  }
  void run(const void* x8, const void* w8, void* y) {
    const float one = 1.0f, zero = 0.0f;
    RINGPLAN_CUBLAS_OK(cublasLtMatmul(lt_, desc_, &one, w8, la_, x8, lb_, &zero, y, lc_, y, lc_, &heur_.algo,
                                      ws_.get(), kWorkspace, stream_));
  }

 private:
  static constexpr size_t kWorkspace = size_t{32} << 20;
  void release() {
    if (desc_) cublasLtMatmulDescDestroy(desc_);
    if (la_) cublasLtMatrixLayoutDestroy(la_);
    if (lb_) cublasLtMatrixLayoutDestroy(lb_);
    if (lc_) cublasLtMatrixLayoutDestroy(lc_);
    desc_ = nullptr;
    la_ = lb_ = lc_ = nullptr;
  }
  cudaStream_t stream_;
  cublasLtHandle_t lt_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t la_ = nullptr, lb_ = nullptr, lc_ = nullptr;
  cublasLtMatmulHeuristicResult_t heur_{};
  DeviceBuffer ws_;

 public:
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;
};

// Checks 8 sampled entries C[i, j] = sum_k A(i, k) B(k, j), fetched with the given strides:
// A(i, k) at a + i*a_row + k*a_col, B(k, j) at b + k*b_row + j*b_col. Relative to the largest
// |reference| among the samples; bf16 output and inputs rounded the same on both sides.
void check_gemm(const char* what, const void* a, int64_t a_row, int64_t a_col, int a_bytes, const void* b,
                int64_t b_row, int64_t b_col, int b_bytes, const void* c, int64_t c_ld, int c_bytes, int64_t M,
                int64_t N, int64_t K, double bound) {
  double worst = 0, scale = 0;
  std::vector<std::pair<double, double>> pairs;
  for (int s = 0; s < 8; ++s) {
    const int64_t i = (s * 7919 + 13) % M, j = (s * 104729 + 7) % N;
    const std::vector<double> av = fetch(a, i * a_row, K, a_col, a_bytes);
    const std::vector<double> bv = fetch(b, j * b_col, K, b_row, b_bytes);
    double ref = 0;
    for (int64_t k = 0; k < K; ++k) ref += av[static_cast<size_t>(k)] * bv[static_cast<size_t>(k)];
    const double got = fetch(c, i * c_ld + j, 1, 1, c_bytes)[0];
    pairs.emplace_back(ref, got);
    scale = std::max(scale, std::abs(ref));
  }
  for (const auto& [ref, got] : pairs) worst = std::max(worst, std::abs(got - ref) / std::max(scale, 1e-30));
  if (!(worst <= bound))
    throw Error(ErrorKind::runtime, fmt::format("calibrate --device cuda: {}: sampled outputs off by {:.3e} of the "
                                                "largest (bound {:.1e}); not timing a wrong result",
                                                what, worst, bound));
}

}  // namespace

GpuMeasureResult measure_gpu(const GpuMeasureOptions& opt) {
  std::string why;
  if (cuda_devices(&why) < 1) throw bad_input("calibrate --device cuda: no CUDA device: " + why);
  int dev = 0;
  RINGPLAN_CUDA_OK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  RINGPLAN_CUDA_OK(cudaGetDeviceProperties(&prop, dev));
  const bool fp8 = opt.fp8 && prop.major * 10 + prop.minor >= 89;
  const CudaStream owned_stream;
  cudaStream_t s = owned_stream.get();
  cublasHandle_t blas = nullptr;
  RINGPLAN_CUBLAS_OK(cublasCreate(&blas));
  struct BlasGuard {
    cublasHandle_t h;
    ~BlasGuard() { cublasDestroy(h); }
  } bguard{blas};
  RINGPLAN_CUBLAS_OK(cublasSetStream(blas, s));
  std::unique_ptr<Fp8Gemm> f8 = fp8 ? std::make_unique<Fp8Gemm>(s) : nullptr;

  GpuMeasureResult res;
  res.device = prop.name;
  if (!fp8) res.notes += opt.fp8 ? "FP8: not measured (compute capability below 8.9)\n" : "FP8: not asked for\n";
  nlohmann::json j;
  j["device"] = prop.name;
  j["sm"] = fmt::format("{}.{}", prop.major, prop.minor);
  j["multiprocessors"] = prop.multiProcessorCount;
  j["source"] = "ringplan calibrate --device cuda";
  j["fp8"] = fp8;
  j["gemms"] = nlohmann::json::array();
  const int total = int(std::size(kModels) * std::size(kTp) * std::size(kTokens)) + (opt.attention ? 6 : 0) + 1;
  int done = 0;
  bool fp8_ok = fp8;
  uint64_t seed = 1;
  for (const ModelShape& m : kModels)
    for (int64_t tp : kTp)
      for (int64_t tokens : kTokens) {
        for (const Gemm& g : layer_gemms(m, tp)) {
          const int64_t T = tokens, K = g.in, N = g.out;
          DeviceBuffer x(size_t(T * K) * 2), w(size_t(N * K) * 2), dy(size_t(T * N) * 2), y(size_t(T * N) * 2),
              dx(size_t(T * K) * 2), dw(size_t(N * K) * 4);
          fill_uniform(x.as<bf16>(), T * K, seed++, 1.0f, s);
          fill_uniform(w.as<bf16>(), N * K, seed++, 1.0f / std::sqrt(float(K)), s);
          fill_uniform(dy.as<bf16>(), T * N, seed++, 1.0f, s);
          auto record = [&](const char* pass, const char* dtype, int64_t mm, int64_t nn, int64_t kk, double ms) {
            const double flops = 2.0 * double(mm) * double(nn) * double(kk);
            j["gemms"].push_back({{"model", m.name}, {"tp", tp}, {"tokens", T}, {"gemm", g.name}, {"dtype", dtype},
                                  {"pass_", pass}, {"m", mm}, {"n", nn}, {"k", kk}, {"flops", flops}, {"ms", ms},
                                  {"tflops", flops / ms / 1e9}});
          };
          const std::string label = fmt::format("{} tp{} {} tokens {}", m.name, tp, T, g.name);
          // forward: C[T, N] = X[T, K] W[N, K]^T
          gemm_forward(blas, x.as<bf16>(), w.as<bf16>(), y.as<bf16>(), T, K, N);
          check_gemm((label + " fwd").c_str(), x.get(), K, 1, 2, w.get(), 1, K, 2, y.get(), N, 2, T, N, K, 2e-2);
          record("fwd", "bf16", T, N, K, time_ms([&] { gemm_forward(blas, x.as<bf16>(), w.as<bf16>(), y.as<bf16>(), T, K, N); }, s));
          // data gradient: C[T, K] = dY[T, N] W[N, K]
          gemm_dgrad(blas, dy.as<bf16>(), w.as<bf16>(), dx.as<bf16>(), T, K, N);
          check_gemm((label + " dgrad").c_str(), dy.get(), N, 1, 2, w.get(), K, 1, 2, dx.get(), K, 2, T, K, N, 2e-2);
          record("bwd_dx", "bf16", T, K, N, time_ms([&] { gemm_dgrad(blas, dy.as<bf16>(), w.as<bf16>(), dx.as<bf16>(), T, K, N); }, s));
          // weight gradient: C[N, K] = dY[T, N]^T X[T, K] (float32 out)
          gemm_wgrad(blas, dy.as<bf16>(), x.as<bf16>(), dw.as<float>(), T, K, N, false);
          check_gemm((label + " wgrad").c_str(), dy.get(), 1, N, 2, x.get(), K, 1, 2, dw.get(), K, 4, N, K, T, 1e-2);
          record("bwd_dw", "bf16", N, K, T, time_ms([&] { gemm_wgrad(blas, dy.as<bf16>(), x.as<bf16>(), dw.as<float>(), T, K, N, false); }, s));
          if (fp8_ok) {
            DeviceBuffer x8(size_t(T * K)), w8(size_t(N * K));
            to_fp8_e4m3(x.as<bf16>(), static_cast<uint8_t*>(x8.get()), T * K, s);
            to_fp8_e4m3(w.as<bf16>(), static_cast<uint8_t*>(w8.get()), N * K, s);
            std::string no;
            if (!f8->prepare(T, K, N, &no)) {
              res.notes += "FP8: " + no + "; FP8 not measured\n";
              fp8_ok = false;
            } else {
              f8->run(x8.get(), w8.get(), y.get());
              check_gemm((label + " fp8").c_str(), x8.get(), K, 1, 1, w8.get(), 1, K, 1, y.get(), N, 2, T, N, K, 2e-2);
              record("fwd", "fp8_e4m3", T, N, K, time_ms([&] { f8->run(x8.get(), w8.get(), y.get()); }, s));
            }
          }
        }
        if (opt.on_item) opt.on_item(++done, total);
      }

  // HBM: device-to-device copy of 4 GiB (read 4 + write 4 GiB per copy).
  {
    const size_t bytes = size_t{4} << 30;
    DeviceBuffer a(bytes), b(bytes);
    fill_uniform(a.as<bf16>(), int64_t(bytes / 2), seed++, 1.0f, s);
    RINGPLAN_CUDA_OK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, s));
    RINGPLAN_CUDA_OK(cudaStreamSynchronize(s));
    const std::vector<double> pa = fetch(a.get(), 12345, 64, 1 << 20, 2), pb = fetch(b.get(), 12345, 64, 1 << 20, 2);
    if (pa != pb) throw Error(ErrorKind::runtime, "calibrate --device cuda: the device copy check failed");
    const double ms = time_ms([&] { RINGPLAN_CUDA_OK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, s)); }, s);
    j["hbm_copy_gbps"] = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
    if (opt.on_item) opt.on_item(++done, total);
  }

  // The project's attention kernels at the shapes sdpa_bench.py times.
  j["results"] = nlohmann::json::array();
  if (opt.attention) {
    const int64_t b = 1, hq = 32, hkv = 8, d = 128;
    for (int64_t n : {int64_t{4096}, int64_t{8192}, int64_t{16384}})
      for (bool causal : {false, true}) {
        DeviceBuffer q(size_t(b * hq * n * d) * 2), k(size_t(b * hkv * n * d) * 2), v(size_t(b * hkv * n * d) * 2),
            o(size_t(b * hq * n * d) * 4), o16(size_t(b * hq * n * d) * 2), dout(size_t(b * hq * n * d) * 2),
            lse(size_t(b * hq * n) * 4), delta(size_t(b * hq * n) * 4), dq(size_t(b * hq * n * d) * 4),
            dk(size_t(b * hkv * n * d) * 4), dv(size_t(b * hkv * n * d) * 4), pos(size_t(n) * 8);
        fill_uniform(q.as<bf16>(), b * hq * n * d, seed++, 1.0f, s);
        fill_uniform(k.as<bf16>(), b * hkv * n * d, seed++, 1.0f, s);
        fill_uniform(v.as<bf16>(), b * hkv * n * d, seed++, 1.0f, s);
        fill_uniform(dout.as<bf16>(), b * hq * n * d, seed++, 1.0f, s);
        std::vector<int64_t> hp(static_cast<size_t>(n));
        for (int64_t t = 0; t < n; ++t) hp[size_t(t)] = t;
        RINGPLAN_CUDA_OK(cudaMemcpy(pos.get(), hp.data(), hp.size() * 8, cudaMemcpyHostToDevice));
        using kernels::ElemType;
        kernels::BlockParams bp;
        bp.q = kernels::dense_view(q.get(), ElemType::bf16, b, hq, n, d);
        bp.k = kernels::dense_view(k.get(), ElemType::bf16, b, hkv, n, d);
        bp.v = kernels::dense_view(v.get(), ElemType::bf16, b, hkv, n, d);
        bp.q_positions = bp.k_positions = pos.as<int64_t>();
        bp.causal = causal;
        const kernels::ForwardOut fo{kernels::dense_view(o.get(), ElemType::f32, b, hq, n, d),
                                     kernels::dense_rows(lse.as<float>(), b, hq, n)};
        kernels::cuda::flash_forward(bp, fo, s);
        RINGPLAN_CUDA_OK(cudaStreamSynchronize(s));
        // Check two rows (query t of head h) against a float64 softmax over its visible keys.
        for (const auto& [h, t] : {std::pair<int64_t, int64_t>{3, n - 1}, {17, n / 3}}) {
          const int64_t kvh = h / (hq / hkv);
          const std::vector<double> qr = fetch(q.get(), (h * n + t) * d, d, 1, 2);
          const int64_t keys = causal ? t + 1 : n;
          const std::vector<double> kr = fetch(k.get(), kvh * n * d, keys * d, 1, 2);
          const std::vector<double> vr = fetch(v.get(), kvh * n * d, keys * d, 1, 2);
          std::vector<double> sc(static_cast<size_t>(keys));
          double mx = -INFINITY;
          for (int64_t c = 0; c < keys; ++c) {
            double dot = 0;
            for (int64_t e = 0; e < d; ++e) dot += qr[size_t(e)] * kr[size_t(c * d + e)];
            sc[size_t(c)] = dot / std::sqrt(double(d));
            mx = std::max(mx, sc[size_t(c)]);
          }
          double sum = 0;
          for (double& x : sc) sum += (x = std::exp(x - mx));
          const std::vector<double> got = fetch(o.get(), (h * n + t) * d, d, 1, 4);
          double worst = 0, big = 0;
          for (int64_t e = 0; e < d; ++e) {
            double ref = 0;
            for (int64_t c = 0; c < keys; ++c) ref += sc[size_t(c)] * vr[size_t(c * d + e)];
            ref /= sum;
            big = std::max(big, std::abs(ref));
            worst = std::max(worst, std::abs(ref - got[size_t(e)]));
          }
          if (!(worst <= 2e-2 * std::max(big, 1e-3)))
            throw Error(ErrorKind::runtime, fmt::format("calibrate --device cuda: attention {} tokens causal {}: row "
                                                        "{} of head {} off by {:.3e} (largest {:.3e})",
                                                        n, causal, t, h, worst, big));
        }
        const double fwd_ms = time_ms([&] { kernels::cuda::flash_forward(bp, fo, s); }, s);
        kernels::cuda::convert_from_f32(fo.out, kernels::dense_view(o16.get(), ElemType::bf16, b, hq, n, d), s);
        kernels::BackwardArgs ga;
        ga.out = kernels::dense_view(o16.get(), ElemType::bf16, b, hq, n, d);
        ga.grad_out = kernels::dense_view(dout.get(), ElemType::bf16, b, hq, n, d);
        ga.lse = fo.lse;
        ga.delta = kernels::dense_rows(delta.as<float>(), b, hq, n);
        ga.grad_q = kernels::dense_view(dq.get(), ElemType::f32, b, hq, n, d);
        ga.grad_k = kernels::dense_view(dk.get(), ElemType::f32, b, hkv, n, d);
        ga.grad_v = kernels::dense_view(dv.get(), ElemType::f32, b, hkv, n, d);
        kernels::cuda::backward_delta(ga.out, ga.grad_out, ga.delta, s);
        // The backward accumulates into dQ, dK, dV: repeated calls only grow them, which does not
        // change the work; the gradients' correctness is the kernel tests' business.
        const double bwd_ms = time_ms([&] { kernels::cuda::flash_backward(bp, ga, s); }, s);
        const double fwd_flops = 4.0 * double(b * hq) * double(n) * double(n) * double(d) * (causal ? 0.5 : 1.0);
        j["results"].push_back({{"tokens", n}, {"causal", causal}, {"fwd_ms", fwd_ms}, {"bwd_ms", bwd_ms},
                                {"fwd_tflops", fwd_flops / fwd_ms / 1e9}, {"bwd_tflops", 2.5 * fwd_flops / bwd_ms / 1e9}});
        if (opt.on_item) opt.on_item(++done, total);
      }
  }
  j["notes"] = res.notes;
  res.json = j.dump(1);
  return res;
}

}  // namespace ringplan::runtime::gpu
