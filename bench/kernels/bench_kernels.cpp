// bench_kernels: throughput of the flash-style CPU attention kernels against Eigen's own float32
// GEMM on the same machine in the same run, and peak heap of flash vs materialised attention.
//
// Build: cmake --build <build> --target bench_kernels
// Run:   <build>/bench/kernels/bench_kernels            (all; ~1-2 minutes on 2 cores)
//        <build>/bench/kernels/bench_kernels --benchmark_filter=Flash
//
// FLOP model (FlashAttention's convention, also kernels/attention.hpp):
//   forward  = 4 * b * h * pairs * d, pairs = visible (query, key) pairs: n*m, or
//              n*(n+1)/2 ~ n*m/2 for causal self-attention (exact count from visible_pairs)
//   backward = 2.5 * forward     (5 tile GEMMs instead of 2)
//   GEMM     = 2 * M * N * K
// ratio_vs_gemm = kernel GFLOP/s / Eigen GEMM GFLOP/s, where the GEMM rate is the better of the
// score product S = Q K^T of the same shape (n x d times d x n) and a square 1024^3 product,
// float32, one thread, timed in this process. All rates are per CPU second of the benchmark
// thread (Google Benchmark's default), which keeps them meaningful on a shared, loaded machine.
//
// Every kernel is validated before it is timed: the forward against the float64 reference on
// a slice of query rows, the backward against the materialised backward (itself tested against
// the reference in tests/kernels). A wrong result skips the benchmark with an error and makes
// the program exit non-zero.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bench/kernels/heap_counter.hpp"
#include "kernels/attention.hpp"

namespace rk = ringplan::kernels;

namespace {

bool g_any_wrong = false;

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// One attention problem, b = 1, h = kv_heads = 1 (the per-head work the ring runtime calls).
struct Attn {
  int64_t n, d;
  bool causal;
  std::vector<int64_t> pos;
  std::vector<float> q, k, v, dout, out, lse, delta, dq, dk, dv;
  rk::BlockParams params;
  rk::ForwardOut fwd;
  rk::BackwardArgs bwd;

  Attn(int64_t tokens, int64_t head_dim, bool is_causal)
      : n(tokens), d(head_dim), causal(is_causal), pos(tokens), q(n * d), k(n * d), v(n * d),
        dout(n * d), out(n * d), lse(n), delta(n), dq(n * d), dk(n * d), dv(n * d) {
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto* x : {&q, &k, &v, &dout})
      for (auto& e : *x) e = normal(rng);
    for (int64_t i = 0; i < n; ++i) pos[i] = i;
    auto view = [&](std::vector<float>& x) { return rk::dense_view(x.data(), rk::ElemType::f32, 1, 1, n, d); };
    params = {view(q), view(k), view(v), pos.data(), pos.data(), causal, 0.0f};
    fwd = {view(out), rk::dense_rows(lse.data(), 1, 1, n)};
    bwd = {view(out), view(dout), fwd.lse, rk::dense_rows(delta.data(), 1, 1, n), view(dq), view(dk), view(dv)};
  }
  double forward_flops() const {
    return rk::forward_flops(1, 1, rk::visible_pairs(pos.data(), n, pos.data(), n, causal), d);
  }
  void zero_grads() {
    std::fill(dq.begin(), dq.end(), 0.0f);
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
  }
};

// Forward check: rows of a slice (first and last `rows` queries) against the float64 reference.
// Bound 1e-4 absolute: outputs are convex combinations of N(0,1) values (|O| < ~4) and float32
// accumulations over n <= 16K keys stay far below it; a wrong mask or rescale is >> 1e-2.
std::string check_forward(const Attn& a, int64_t rows = 8) {
  std::vector<double> k(a.k.begin(), a.k.end()), v(a.v.begin(), a.v.end());
  for (int64_t start : {int64_t{0}, a.n - rows}) {
    std::vector<double> q(a.q.begin() + start * a.d, a.q.begin() + (start + rows) * a.d);
    std::vector<double> out(rows * a.d), lse(rows);
    rk::reference_forward(q.data(), k.data(), v.data(), a.pos.data() + start, a.pos.data(), 1, 1, 1,
                          rows, a.n, a.d, a.causal, 0.0, out.data(), lse.data());
    for (int64_t i = 0; i < rows * a.d; ++i)
      if (!(std::abs(out[i] - a.out[start * a.d + i]) <= 1e-4))
        return "forward O differs from the float64 reference at row " + std::to_string(start + i / a.d);
    for (int64_t i = 0; i < rows; ++i)
      if (!(std::abs(lse[i] - a.lse[start + i]) <= 1e-4))
        return "forward lse differs from the float64 reference at row " + std::to_string(start + i);
  }
  return {};
}

// Backward check against the materialised backward at the same shape (relative 1e-4 of the
// largest gradient entry: the two differ only in float32 summation order).
std::string check_backward(Attn& a, rk::TileConfig tiles) {
  a.zero_grads();
  rk::cpu_flash_backward(a.params, a.bwd, tiles);
  const std::vector<float> dq = a.dq, dk = a.dk, dv = a.dv;
  a.zero_grads();
  std::vector<float> scores(rk::materialized_scores_elems(a.params));
  std::vector<float> out_m(a.n * a.d), lse_m(a.n);
  const rk::ForwardOut fm{rk::dense_view(out_m.data(), rk::ElemType::f32, 1, 1, a.n, a.d),
                          rk::dense_rows(lse_m.data(), 1, 1, a.n)};
  rk::cpu_materialized_forward(a.params, fm, scores.data());
  rk::cpu_materialized_backward(a.params, a.bwd, scores.data());
  for (auto [name, x, y] : {std::tuple{"dQ", &dq, &a.dq}, std::tuple{"dK", &dk, &a.dk},
                            std::tuple{"dV", &dv, &a.dv}}) {
    float scale = 1.0f, worst = 0.0f;
    for (size_t i = 0; i < x->size(); ++i) {
      scale = std::max(scale, std::abs((*y)[i]));
      worst = std::max(worst, std::abs((*x)[i] - (*y)[i]));
    }
    if (!(worst <= 1e-4f * scale))
      return std::string("backward ") + name + " differs from the materialised backward by " +
             std::to_string(worst) + " (largest entry " + std::to_string(scale) + ")";
  }
  return {};
}

// CPU seconds of the calling thread: the kernels run single-threaded here, and Google Benchmark
// reports rates per CPU second too, so a loaded machine (shared dev VM) skews both alike.
double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Eigen float32 GEMM rate C (M x N) = A (M x K) * B^T, best of 3 runs, in GFLOP per CPU second.
double eigen_gemm_rate(int64_t m, int64_t n, int64_t k) {
  RowMat a = RowMat::Random(m, k), b = RowMat::Random(n, k), c(m, n);
  double best_s = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = thread_cpu_s();
    c.noalias() = a * b.transpose();
    benchmark::DoNotOptimize(c.data());
    best_s = std::min(best_s, thread_cpu_s() - t0);
  }
  return 2.0 * double(m) * double(n) * double(k) / best_s / 1e9;
}

// The GEMM rate a kernel is compared with: the better of Eigen's score-shaped product
// S (n x n) = Q (n x d) K^T and a square 1024^3 product, so the ratio is not flattered by a
// GEMM shape Eigen handles poorly. Measured once per (n, d) in this process.
double gemm_gflops(int64_t n, int64_t d) {
  static std::vector<std::tuple<int64_t, int64_t, double>> cache;
  for (auto [cn, cd, rate] : cache)
    if (cn == n && cd == d) return rate;
  const double rate = std::max(eigen_gemm_rate(n, n, d), eigen_gemm_rate(1024, 1024, 1024));
  cache.emplace_back(n, d, rate);
  return rate;
}

rk::TileConfig tiles_for(const benchmark::State& state) {
  rk::TileConfig t;
  t.tile_q = state.range(3);
  t.tile_k = state.range(4);
  t.threads = 1;
  return t;
}

std::string flop_label(bool backward) {
  return backward ? "flops=2.5*4*b*h*pairs*d" : "flops=4*b*h*pairs*d";
}

// Args: head_dim, tokens, causal, tile_q, tile_k.
void BM_FlashForward(benchmark::State& state) {
  Attn a(state.range(1), state.range(0), state.range(2) != 0);
  const rk::TileConfig tiles = tiles_for(state);
  rk::cpu_flash_forward(a.params, a.fwd, tiles);
  if (auto e = check_forward(a); !e.empty()) {
    g_any_wrong = true;
    state.SkipWithError(e.c_str());
    return;
  }
  for (auto _ : state) {
    rk::cpu_flash_forward(a.params, a.fwd, tiles);
    benchmark::DoNotOptimize(a.out.data());
  }
  const double flops = a.forward_flops();
  const double gemm = gemm_gflops(a.n, a.d);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_GFLOP/s"] = gemm;
  state.counters["ratio_vs_gemm"] = benchmark::Counter(flops / 1e9 / gemm, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(flop_label(false));
}

void BM_FlashBackward(benchmark::State& state) {
  Attn a(state.range(1), state.range(0), state.range(2) != 0);
  const rk::TileConfig tiles = tiles_for(state);
  rk::cpu_flash_forward(a.params, a.fwd, tiles);
  rk::attention_backward_delta(a.bwd.out, a.bwd.grad_out, a.bwd.delta);
  std::string e = check_forward(a);
  if (e.empty()) e = check_backward(a, tiles);
  if (!e.empty()) {
    g_any_wrong = true;
    state.SkipWithError(e.c_str());
    return;
  }
  for (auto _ : state) {
    rk::cpu_flash_backward(a.params, a.bwd, tiles);  // accumulates: values grow, time does not
    benchmark::DoNotOptimize(a.dq.data());
  }
  const double flops = 2.5 * a.forward_flops();
  const double gemm = gemm_gflops(a.n, a.d);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_GFLOP/s"] = gemm;
  state.counters["ratio_vs_gemm"] = benchmark::Counter(flops / 1e9 / gemm, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(flop_label(true));
}

// Eigen GEMM of the score shape, reported on its own. Args: head_dim, tokens.
void BM_EigenGemm(benchmark::State& state) {
  const int64_t d = state.range(0), n = state.range(1);
  RowMat a = RowMat::Random(n, d), b = RowMat::Random(n, d), c(n, n);
  c.noalias() = a * b.transpose();
  for (int64_t i : {int64_t{0}, n / 2, n - 1}) {  // spot-check entries against a double dot
    double ref = 0;
    for (int64_t x = 0; x < d; ++x) ref += double(a(i, x)) * b(n - 1 - i, x);
    if (!(std::abs(ref - c(i, n - 1 - i)) <= 1e-4 * d)) {
      g_any_wrong = true;
      state.SkipWithError("Eigen GEMM result is wrong");
      return;
    }
  }
  for (auto _ : state) {
    c.noalias() = a * b.transpose();
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * d / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("flops=2*n*n*d (S = Q K^T)");
}

// Peak heap bytes that one forward + backward needs beyond its inputs and outputs, measured by
// the malloc counter (heap_counter.hpp). For the materialised variant the scores buffer the
// caller must provide (b*H*n*m floats) is allocated inside the measured region and counted.
// Args: variant (0 flash, 1 materialised), tokens; head_dim 64, causal, one thread.
void BM_PeakMemory(benchmark::State& state) {
  if (!heap::counting_enabled()) {
    state.SkipWithError("heap counting disabled in this build (sanitizer build)");
    return;
  }
  const bool materialized = state.range(0) != 0;
  Attn a(state.range(1), 64, true);
  int64_t peak = 0;
  for (auto _ : state) {
    a.zero_grads();
    heap::reset_peak();
    const int64_t base = heap::live_bytes();
    if (materialized) {
      std::vector<float> scores(rk::materialized_scores_elems(a.params));
      rk::cpu_materialized_forward(a.params, a.fwd, scores.data());
      rk::attention_backward_delta(a.bwd.out, a.bwd.grad_out, a.bwd.delta);
      rk::cpu_materialized_backward(a.params, a.bwd, scores.data());
    } else {
      rk::cpu_flash_forward(a.params, a.fwd);
      rk::attention_backward_delta(a.bwd.out, a.bwd.grad_out, a.bwd.delta);
      rk::cpu_flash_backward(a.params, a.bwd);
    }
    peak = heap::peak_bytes() - base;
  }
  // The result must still be right (checked after the measured run, outside it).
  if (auto e = check_forward(a); !e.empty()) {
    g_any_wrong = true;
    state.SkipWithError(e.c_str());
    return;
  }
  state.counters["peak_heap_bytes"] = double(peak);
  state.counters["bytes_per_token"] = double(peak) / double(a.n);
  state.counters["inputs_outputs_bytes"] = double(a.n * a.d * 10 * sizeof(float));  // q,k,v,dO,O,dQ,dK,dV,(lse,D)
  state.SetLabel(materialized ? "materialized (scores kept)" : "flash (tiles only)");
}

}  // namespace

// Tiles 64x64 (the default) and 128x128 at head dims 128 and 64, 4K tokens.
// EigenGemm args: (K, M = N): the score shapes and a square 1024^3 product.
BENCHMARK(BM_EigenGemm)->Args({128, 4096})->Args({64, 4096})->Args({1024, 1024})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FlashForward)
    ->ArgNames({"d", "n", "causal", "tq", "tk"})
    ->Args({128, 4096, 0, 64, 64})
    ->Args({128, 4096, 1, 64, 64})
    ->Args({64, 4096, 0, 64, 64})
    ->Args({64, 4096, 1, 64, 64})
    ->Args({128, 4096, 0, 128, 128})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FlashBackward)
    ->ArgNames({"d", "n", "causal", "tq", "tk"})
    ->Args({128, 4096, 0, 64, 64})
    ->Args({128, 4096, 1, 64, 64})
    ->Args({64, 4096, 0, 64, 64})
    ->Args({64, 4096, 1, 64, 64})
    ->Args({128, 4096, 0, 128, 128})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PeakMemory)
    ->ArgNames({"materialized", "n"})
    ->Args({0, 4096})->Args({0, 8192})->Args({0, 16384})
    ->Args({1, 4096})->Args({1, 8192})->Args({1, 16384})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_any_wrong) {
    std::fprintf(stderr, "bench_kernels: a kernel produced a wrong result (see the error rows)\n");
    return 1;
  }
  return 0;
}
