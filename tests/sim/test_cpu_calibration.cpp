// The CPU profile from calibrate's measurements (sim/cpu_calibration.hpp): measurements made up
// from known curves and links must give those curves and links back; bad measurements are
// refused; the written profile loads back to the same cluster.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "sim/cost_model.hpp"
#include "sim/cpu_calibration.hpp"
#include "sim/formulas.hpp"

using namespace ringplan;
using namespace ringplan::sim;

namespace {

// The true machine the synthetic measurements come from.
const RateCurve kFlashFwd{40e9, 2e8}, kFlashBwd{30e9, 3e8}, kMatFwd{20e9, 1e8}, kMatBwd{25e9, 1.5e8}, kGemm{60e9, 5e7};
const LinkProfile kLink{5e9, 2e-6};
const CollectiveCurve kAllReduce{0.8, 1 << 20}, kReduceScatter{0.7, 512 << 10}, kAllGather{0.9, 256 << 10};
constexpr int64_t kRanks = 4;

// Each kernel time is its FLOPs (on the axis calibrate fits it on, times the backward factor)
// over the true rate at that axis value.
CpuMeasurements synthetic() {
  CpuMeasurements m;
  m.name = "synthetic_cpu";
  m.ranks = kRanks;
  m.hosts = 1;
  m.ranks_per_host = kRanks;
  m.batch = 1;
  m.heads = 4;
  m.kv_heads = 4;
  m.head_dim = 64;
  m.threads = 1;
  for (int64_t n : {128, 256, 512, 1024}) {
    CpuKernelSample k;
    k.tokens = n;
    k.flops = 4.0 * 4 * double(n) * double(n) * 64;
    k.causal_flops = 4.0 * 4 * double(n) * double(n + 1) / 2 * 64;
    k.fwd_s = k.flops / kFlashFwd.at(k.flops);
    k.causal_fwd_s = k.causal_flops / kFlashFwd.at(k.causal_flops);
    k.bwd_s = 2.5 * k.flops / kFlashBwd.at(k.flops);
    k.causal_bwd_s = 2.5 * k.causal_flops / kFlashBwd.at(k.causal_flops);
    k.mat_fwd_s = k.flops / kMatFwd.at(0.5 * k.flops);
    k.mat_bwd_s = 2.0 * k.flops / kMatBwd.at(0.5 * k.flops);
    m.kernels.push_back(k);
  }
  for (int64_t rows : {64, 256, 1024}) {
    CpuGemmSample g{rows, 256, 768, 0, 0};
    g.forward_s = g.forward_flops() / kGemm.at(g.forward_flops());
    g.backward_s = 2.0 * g.forward_s;
    m.gemms.push_back(g);
  }
  // The smallest message measures the latency alone; the ring exchange of the largest adds its
  // transfer at the link's bandwidth (ping-pong alone at twice that).
  m.links.push_back({8, kLink.latency_s, kLink.latency_s});
  const int64_t big = int64_t{8} << 20;
  m.links.push_back({big, kLink.latency_s + double(big) / (2 * kLink.bandwidth_bytes_per_s),
                     kLink.latency_s + double(big) / kLink.bandwidth_bytes_per_s});
  for (int64_t bytes : {int64_t{64} << 10, int64_t{256} << 10, int64_t{1} << 20, int64_t{4} << 20}) {
    const double b = double(bytes);
    m.collectives.push_back({bytes, all_reduce_s(kRanks, b, kLink, kAllReduce), reduce_scatter_s(kRanks, b, kLink, kReduceScatter),
                             all_gather_s(kRanks, b, kLink, kAllGather)});
  }
  m.copy_bytes_per_s = 7e9;
  m.host_memory_bytes = 64.0 * (int64_t{1} << 30);
  m.reserved_bytes = 100e6;
  return m;
}

// The profile text as `calibrate -o` writes it, loaded back through core's file loader.
ClusterConfig load_profile_text(const std::string& text, const char* file_name) {
  const auto path = std::filesystem::temp_directory_path() / file_name;
  {
    std::ofstream f(path);
    f << text;
  }
  const ClusterConfig back = load_cluster(path.string());
  std::filesystem::remove(path);
  return back;
}

void check_curve(const EfficiencyCurve& got, double max, double half, const char* what) {
  INFO(what);
  CHECK(got.max_efficiency == doctest::Approx(max).epsilon(1e-9));
  CHECK(got.half_flops == doctest::Approx(half).epsilon(1e-7));
}

void check_collective(const CollectiveCurve& got, const CollectiveCurve& truth, const char* what) {
  INFO(what);
  CHECK(got.max_efficiency == doctest::Approx(truth.max_efficiency).epsilon(1e-6));
  CHECK(got.half_bytes == doctest::Approx(truth.half_bytes).epsilon(1e-5));
}

}  // namespace

TEST_CASE("calibrate_cpu_profile recovers the curves, link and memory the measurements were made from") {
  const CpuMeasurements m = synthetic();
  const CpuCalibration cal = calibrate_cpu_profile(m);
  const ClusterConfig& c = cal.cluster;
  CHECK(cal.flash_fwd.asymptote == doctest::Approx(kFlashFwd.asymptote).epsilon(1e-9));
  CHECK(cal.gemm.half_flops == doctest::Approx(kGemm.half_flops).epsilon(1e-7));
  // The peak is the fastest asymptote (the GEMMs' here); every curve is a fraction of it.
  const double peak = kGemm.asymptote;
  CHECK(c.peak_flops_per_s_bf16 == doctest::Approx(peak).epsilon(1e-9));
  CHECK(c.peak_flops_per_s_fp32 == c.peak_flops_per_s_bf16);
  check_curve(c.attention, kFlashFwd.asymptote / peak, kFlashFwd.half_flops, "attention");
  check_curve(c.attention_backward, kFlashBwd.asymptote / peak, kFlashBwd.half_flops, "attention_backward");
  // matmul is the materialised kernel's fit, not the (faster) GEMMs'.
  check_curve(c.matmul, kMatFwd.asymptote / peak, kMatFwd.half_flops, "matmul");
  check_curve(c.materialized_attention, kMatFwd.asymptote / peak, kMatFwd.half_flops, "materialized_attention");
  check_curve(c.matmul_backward, kMatBwd.asymptote / peak, kMatBwd.half_flops, "matmul_backward");
  CHECK(c.intra_node.latency_s == doctest::Approx(kLink.latency_s).epsilon(1e-12));
  CHECK(c.intra_node.bandwidth_bytes_per_s == doctest::Approx(kLink.bandwidth_bytes_per_s).epsilon(1e-9));
  CHECK(cal.pingpong_bandwidth == doctest::Approx(2 * kLink.bandwidth_bytes_per_s).epsilon(1e-9));
  CHECK(c.inter_node.bandwidth_bytes_per_s == c.intra_node.bandwidth_bytes_per_s);
  check_collective(c.collectives.all_reduce, kAllReduce, "all_reduce");
  check_collective(c.collectives.reduce_scatter, kReduceScatter, "reduce_scatter");
  check_collective(c.collectives.all_gather, kAllGather, "all_gather");
  CHECK(c.memory_bytes == doctest::Approx(m.host_memory_bytes / kRanks));
  CHECK(c.memory_reserved_bytes == doctest::Approx(m.reserved_bytes));
  CHECK(c.memory_bandwidth_bytes_per_s == doctest::Approx(m.copy_bytes_per_s));
  CHECK(c.memory_bandwidth_efficiency == 1.0);
  CHECK(c.gpus_per_node == kRanks);
  CHECK(c.nodes == 1);
  CHECK(c.name == "synthetic_cpu");
}

TEST_CASE("calibrate_cpu_profile takes the peak from the flash kernels when they outrun the GEMMs, and fits collectives only from two sizes") {
  CpuMeasurements m = synthetic();
  for (auto& g : m.gemms) g.forward_s *= 4;  // GEMMs at a quarter of the rate: 15 GFLOP/s asymptote
  m.collectives.resize(1);
  const CpuCalibration cal = calibrate_cpu_profile(m);
  CHECK(cal.cluster.peak_flops_per_s_bf16 == doctest::Approx(kFlashFwd.asymptote).epsilon(1e-9));
  CHECK(cal.cluster.attention.max_efficiency == doctest::Approx(1.0).epsilon(1e-9));
  CHECK(cal.gemm.asymptote == doctest::Approx(kGemm.asymptote / 4).epsilon(1e-9));
  CHECK(cal.cluster.collectives.all_reduce.is_ideal());
  CHECK(cal.cluster.collectives.all_gather.is_ideal());
}

TEST_CASE("calibrate_cpu_profile refuses measurements it cannot fit") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto refused = [](CpuMeasurements m, const std::string& says) {
    INFO(says);
    CHECK_THROWS_WITH_AS(calibrate_cpu_profile(m), doctest::Contains(says.c_str()), Error);
  };
  CpuMeasurements m = synthetic();
  m.kernels.resize(1);
  refused(m, "at least two");
  m = synthetic();
  m.gemms.clear();
  refused(m, "no linear-layer GEMM");
  m = synthetic();
  m.links.clear();
  refused(m, "no link");
  m = synthetic();
  m.kernels[2].bwd_s = nan;
  refused(m, "kernel block of 512 tokens flash backward time");
  m = synthetic();
  m.kernels[0].causal_fwd_s = 0;
  refused(m, "causal forward time = 0");
  m = synthetic();
  m.links[1].ring_step_s = -1;
  refused(m, "ring step time");
  m = synthetic();
  m.collectives[3].all_gather_s = std::numeric_limits<double>::infinity();
  refused(m, "all-gather time");
  m = synthetic();
  m.ranks_per_host = kRanks + 1;
  refused(m, "ranks per host");
  m = synthetic();
  m.copy_bytes_per_s = 0;
  refused(m, "copy rate");
  m = synthetic();
  m.reserved_bytes = -1;
  refused(m, "reserved memory");
}

TEST_CASE("cpu_profile_text loads back to the fitted cluster and ends with the profile end marker") {
  const CpuMeasurements m = synthetic();
  const CpuCalibration cal = calibrate_cpu_profile(m);
  const std::string text = cpu_profile_text(m, cal);
  const std::string marker = std::string(kProfileEndMarker) + "\n";
  REQUIRE(text.size() > marker.size());
  CHECK(text.compare(text.size() - marker.size(), marker.size(), marker) == 0);
  CHECK(text.find("# inter_node: NOT measured (one host)") != std::string::npos);
  CHECK(text.find("# collectives over 4 ranks") != std::string::npos);
  const ClusterConfig back = load_profile_text(text, "ringplan_test_cpu_profile.yaml");
  const ClusterConfig& c = cal.cluster;
  CHECK(back.name == c.name);
  CHECK(back.peak_flops_per_s_bf16 == doctest::Approx(c.peak_flops_per_s_bf16));
  CHECK(back.attention.half_flops == doctest::Approx(c.attention.half_flops));
  CHECK(back.attention_backward.max_efficiency == doctest::Approx(c.attention_backward.max_efficiency));
  CHECK(back.matmul_backward.half_flops == doctest::Approx(c.matmul_backward.half_flops));
  CHECK(back.intra_node.bandwidth_bytes_per_s == doctest::Approx(c.intra_node.bandwidth_bytes_per_s));
  CHECK(back.intra_node.latency_s == doctest::Approx(c.intra_node.latency_s));
  CHECK(back.collectives.reduce_scatter.half_bytes == doctest::Approx(c.collectives.reduce_scatter.half_bytes));
  CHECK(back.memory_bytes == doctest::Approx(c.memory_bytes));
  CHECK(back.gpus_per_node == c.gpus_per_node);
}

TEST_CASE("calibrate_cpu_profile measures the masked tiles' cost from causal against full blocks") {
  // Causal block times made from known diagonal-tile costs: full tiles at the full block's
  // per-pair time, the n/t diagonal tiles at cost x a full tile each.
  constexpr int64_t kTile = 64;
  constexpr double kFwdCost = 1.85, kBwdCost = 1.05;
  CpuMeasurements m = synthetic();
  m.attention_tile = kTile;
  for (CpuKernelSample& k : m.kernels) {
    const double n = double(k.tokens), t = double(kTile);
    const double full_pairs = n * (n - t) / 2, diag_pairs = n * t;
    k.causal_fwd_s = k.fwd_s * (full_pairs + kFwdCost * diag_pairs) / (n * n);
    k.causal_bwd_s = k.bwd_s * (full_pairs + kBwdCost * diag_pairs) / (n * n);
  }
  const CpuCalibration cal = calibrate_cpu_profile(m);
  const MaskedTileCost& mt = cal.cluster.masked_tiles;
  CHECK(mt.tile == kTile);
  CHECK(mt.forward == doctest::Approx(kFwdCost).epsilon(1e-9));
  CHECK(mt.backward == doctest::Approx(kBwdCost).epsilon(1e-9));
  // The curves come from the full blocks alone: the true curves, whatever the causal times.
  CHECK(cal.flash_fwd.asymptote == doctest::Approx(kFlashFwd.asymptote).epsilon(1e-9));
  CHECK(cal.flash_bwd.half_flops == doctest::Approx(kFlashBwd.half_flops).epsilon(1e-7));
  // Inverse of sim::masked_square_extra_pairs: the model's causal block time is the measured one.
  for (const CpuKernelSample& k : m.kernels) {
    const double n = double(k.tokens);
    const double model_pairs = n * (n + 1) / 2 + masked_square_extra_pairs(n, mt, true);
    CHECK(model_pairs / (n * n) == doctest::Approx(k.causal_fwd_s / k.fwd_s).epsilon(1e-9));
  }
  // The written profile carries them and loads back to the same costs.
  const std::string text = cpu_profile_text(m, cal);
  CHECK(text.find("masked_tiles: {tile: 64") != std::string::npos);
  const ClusterConfig back = load_profile_text(text, "ringplan_test_masked_profile.yaml");
  CHECK(back.masked_tiles.tile == mt.tile);
  CHECK(back.masked_tiles.forward == doctest::Approx(mt.forward));
  CHECK(back.masked_tiles.backward == doctest::Approx(mt.backward));
  // Without the kernels' tile nothing is derived: the causal blocks are visible pairs on the curve.
  m.attention_tile = 0;
  CHECK(calibrate_cpu_profile(m).cluster.masked_tiles.is_exact());
  // A cost outside the profile's range is clamped to it (a noisy measurement stays loadable).
  CHECK(masked_tile_cost(512, 64, 10.0) == 16.0);
  CHECK(masked_tile_cost(512, 64, 0.0) == 0.5);
}
