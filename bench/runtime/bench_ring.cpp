// Google Benchmark of the runtime on one rank: ring attention forward + backward (P = 1, so
// pure kernel + merge + bookkeeping cost; multi-rank timings come from bench/runtime/sweep.sh)
// and the sharding manager's shard/gather. Every benchmark validates its result first.
//   build/<dir>/bench/runtime/ringplan_bench_runtime
// FLOP model (FlashAttention convention): forward 4*b*H*pairs*d, backward 2.5x; causal pairs
// are counted exactly (visible pairs).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "kernels/attention.hpp"
#include "runtime/executor.hpp"
#include "runtime/mpi_communicator.hpp"
#include "runtime/ring_attention.hpp"
#include "runtime/sharding.hpp"

using namespace ringplan;

namespace {
runtime::MpiCommunicator* g_world = nullptr;

void BM_RingForwardBackwardP1(benchmark::State& state) {
  const int64_t L = state.range(0);
  const auto kernel = state.range(1) == 0 ? AttentionImpl::flash : AttentionImpl::materialized;
  const int64_t b = 1, H = 8, Hkv = 2, d = 32;
  std::vector<int64_t> pos(static_cast<size_t>(L));
  std::iota(pos.begin(), pos.end(), int64_t{0});
  runtime::RingConfig cfg;
  cfg.batch = b;
  cfg.heads = H;
  cfg.kv_heads = Hkv;
  cfg.tokens = L;
  cfg.head_dim = d;
  cfg.kernel = kernel;
  runtime::RingAttention ring(*g_world, cfg, pos.data());
  const size_t qe = static_cast<size_t>(b * H * L * d), ke = static_cast<size_t>(b * Hkv * L * d);
  std::vector<float> q(qe), k(ke), v(ke), dout(qe), out(qe), lse(static_cast<size_t>(b * H * L)), dq(qe), dk(ke), dv(ke);
  runtime::fill_synthetic(q.data(), 1, runtime::SyntheticTensor::q, b, H, pos.data(), L, d);
  runtime::fill_synthetic(k.data(), 1, runtime::SyntheticTensor::k, b, Hkv, pos.data(), L, d);
  runtime::fill_synthetic(v.data(), 1, runtime::SyntheticTensor::v, b, Hkv, pos.data(), L, d);
  runtime::fill_synthetic(dout.data(), 1, runtime::SyntheticTensor::grad_out, b, H, pos.data(), L, d);
  // Validate before timing: first query row sees only key 0, so O row 0 == V row 0 of its KV head.
  ring.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
  for (int64_t x = 0; x < d; ++x)
    if (std::abs(out[static_cast<size_t>(x)] - v[static_cast<size_t>(x)]) > 1e-5f) {
      state.SkipWithError("validation failed: O[0] != V[0] for the first causal query");
      return;
    }
  for (auto _ : state) {
    ring.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
    ring.backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    benchmark::DoNotOptimize(dq.data());
  }
  const double fwd_flops = kernels::forward_flops(b, H, kernels::visible_pairs(pos.data(), L, pos.data(), L, true), d);
  state.counters["GFLOP/s"] = benchmark::Counter(3.5 * fwd_flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(fmt::format("{} causal b=1 H=8 Hkv=2 d=32, 3.5x fwd FLOPs per iter",
                             kernel == AttentionImpl::flash ? "flash" : "materialized"));
}
BENCHMARK(BM_RingForwardBackwardP1)->ArgsProduct({{256, 1024}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ShardPositionsAndSelect(benchmark::State& state) {
  const int64_t L = state.range(0), P = 4;
  runtime::HostTensor<float> x;
  x.shape = {1, 8, L, 32};
  x.data.resize(static_cast<size_t>(x.numel()));
  std::iota(x.data.begin(), x.data.end(), 0.0f);
  const runtime::ContextParallel ctx(CpScheme::zigzag, L, P, 1);
  const auto s = ctx.shard(x, 2);
  // Validate: token i of rank 1 is global position positions()[i].
  if (s.data[32] != x.data[static_cast<size_t>(ctx.positions()[1] * 32)]) {
    state.SkipWithError("validation failed: shard holds the wrong token");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(ctx.shard(x, 2).data.data());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(s.data.size() * sizeof(float)));
}
BENCHMARK(BM_ShardPositionsAndSelect)->Arg(4096)->Arg(32768);

}  // namespace

int main(int argc, char** argv) {
  runtime::MpiSession mpi(&argc, &argv);
  auto world = runtime::MpiCommunicator::world();
  g_world = world.get();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_world = nullptr;
  return 0;
}
