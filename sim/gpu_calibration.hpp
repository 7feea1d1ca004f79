// A GPU cluster profile from measurements of the card (not from training runs): the efficiency
// curves the cost model uses, fitted to kernel timings taken on the GPU by bench/gpu/gemm_bench.py
// (cuBLAS GEMMs at the linear layers' shapes, bf16 and FP8, and the HBM copy rate) and
// bench/gpu/sdpa_bench.py (PyTorch's scaled_dot_product_attention, the flash/cuDNN kernels a
// framework runs). `ringplan calibrate --gpu-bench` runs this; the shipped H100/H200 profiles are
// its output on an H200 (BENCHMARKS.md, "GPU profile from measurement").
//
// Curves (core/config.hpp EfficiencyCurve, eff(x) = max * x / (x + half)):
//   matmul           bf16 forward GEMMs, x = 2MNK, rate = x / time
//   matmul_backward  bf16 data- and weight-gradient GEMMs, same axis (cost_model.cpp uses
//                    matmul for the linear layers' backward; this curve is reported to check that
//                    the backward GEMMs run at the forward's rate, and used by materialised attention)
//   matmul_fp8       FP8 e4m3 GEMMs (per-tensor scales, bf16 output) against peak_tflops.fp8
//   attention        forward kernel, x = the kernel's FLOPs (4 b h pairs d), rate = x / time
//   attention_backward  backward kernel, x = the FORWARD FLOPs, rate = 2.5 x / time
//   memory_bandwidth measured copy rate (read + write) / memory_bandwidth_gbps
// Each fit is least squares on 1/rate = 1/R + (half/R)/x (fit_efficiency_curve); max = R / peak,
// capped at 1. The fit's own error (mean and max relative error of the curve against the points)
// is reported with it.
#pragma once
#include <string>
#include <vector>

#include "core/config.hpp"

namespace ringplan::sim {

// One measured rate: `flops` of the operation's x-axis, `rate` in FLOP/s.
struct RatePoint {
  double flops = 0;
  double rate = 0;
};

// Least squares of 1/rate = 1/R + (half/R) * (1/x) over the points (x = flops > 0, rate > 0):
// eff = {max = R / peak (capped at 1), half = half}. Falls back to a constant (half 0, R = the
// median rate) when the points do not rise with size (the fitted slope or intercept <= 0).
// Requires at least one point and peak > 0; throws bad_input otherwise.
EfficiencyCurve fit_efficiency_curve(const std::vector<RatePoint>& points, double peak_flops_per_s);

// Mean and max |curve rate - measured rate| / measured rate over the points, in percent.
struct CurveFitError {
  double mean_pct = 0, max_pct = 0;
  int points = 0;
};
CurveFitError curve_fit_error(const EfficiencyCurve& curve, double peak_flops_per_s, const std::vector<RatePoint>& points);

struct GpuBenchMeasurements {
  std::string device;   // as the bench printed it (e.g. "NVIDIA H200")
  std::string source;   // the files read, for the report
  std::vector<RatePoint> gemm_bf16_fwd, gemm_bf16_bwd, gemm_fp8;
  std::vector<RatePoint> attention_fwd, attention_bwd;  // bwd: x = forward FLOPs, rate = 2.5 x / time
  double hbm_copy_bytes_per_s = 0;                      // 0: not measured
};

// Reads gemm_bench.py's JSON (required) and sdpa_bench.py's JSON (optional: empty path). Every
// record is checked (finite, positive); a malformed file is bad input naming the file and the
// record.
GpuBenchMeasurements read_gpu_bench(const std::string& gemm_json, const std::string& sdpa_json);

struct GpuCalibration {
  ClusterConfig cluster;  // the base profile with the measured curves in place
  struct Curve {
    std::string key;  // YAML key under efficiency:
    EfficiencyCurve fitted;
    CurveFitError error;
  };
  std::vector<Curve> curves;
  double memory_bandwidth_efficiency = 0;  // 0: not measured (the base's value is kept)
};

// Fits every curve the measurements allow onto `base` (whose peaks and memory bandwidth are the
// datasheet figures the fractions are taken against). FP8 points need base.peak_flops_per_s_fp8.
GpuCalibration calibrate_gpu_profile(const ClusterConfig& base, const GpuBenchMeasurements& m);

}  // namespace ringplan::sim
