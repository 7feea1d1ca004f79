// A GPU cluster profile from measurements of the card (not from training runs): the efficiency
// curves the cost model uses, fitted to kernel timings taken on the GPU by bench/gpu/gemm_bench.py
// (cuBLAS GEMMs at the linear layers' shapes, bf16 and FP8, and the HBM copy rate) and
// bench/gpu/sdpa_bench.py (PyTorch's scaled_dot_product_attention, the flash/cuDNN kernels a
// framework runs). `ringplan calibrate --gpu-bench` runs this; the shipped H100/H200 profiles are
// its output on an H200 (BENCHMARKS.md, "GPU profile from measurement").
//
// Curves (core/config.hpp EfficiencyCurve, eff(x) = max * x / (x + half)):
//   matmul           bf16 forward GEMMs, x = 2MNK, rate = x / time
//   matmul_backward  bf16 data- and weight-gradient GEMMs, same axis (cost_model.cpp times the
//                    linear layers' backward GEMMs and materialised attention's backward on it)
//   matmul_fp8       FP8 e4m3 GEMMs (per-tensor scales, bf16 output) against peak_tflops.fp8
//   attention        forward kernel, x = the kernel's FLOPs (4 b h pairs d), rate = x / time
//   attention_backward  backward kernel, x = the FORWARD FLOPs, rate = 2.5 x / time
//   memory_bandwidth measured copy rate (read + write) / memory_bandwidth_gbps
// Each fit is sim/rate_fit.hpp's fit_efficiency_curve; max = R / peak, capped at 1. The GEMM
// curves take the K-ramp (EfficiencyCurve::half_k, from each GEMM's recorded `k`) where it does
// better on held-out GEMMs (fit_gemm_efficiency_curve). The fit's own error (mean and max
// relative error of the curve against the points) is reported with it.
#pragma once
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/rate_fit.hpp"

namespace ringplan::sim {

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
// The same from JSON text: `gemm_text` in gemm_bench.py's schema ("gemms", optional
// "hbm_copy_gbps"), and attention results ("results", sdpa_bench.py's schema) from `sdpa_text`
// or, when that is empty, from the same object if it has them (`calibrate --device cuda` writes
// one object with all three). `label` names the source in errors.
GpuBenchMeasurements parse_gpu_bench(const std::string& gemm_text, const std::string& sdpa_text,
                                     const std::string& label);

struct GpuCalibration {
  ClusterConfig cluster;  // the base profile with the measured curves in place
  struct Curve {
    std::string key;  // YAML key under efficiency:
    EfficiencyCurve fitted;
    CurveFitError error;
    GemmCurveFit gemm;  // GEMM curves: the held-out choice of the K-ramp (ramp_tried false otherwise)
  };
  std::vector<Curve> curves;
  double memory_bandwidth_efficiency = 0;  // 0: not measured (the base's value is kept)
};

// Fits every curve the measurements allow onto `base` (whose peaks and memory bandwidth are the
// datasheet figures the fractions are taken against). FP8 points need base.peak_flops_per_s_fp8.
GpuCalibration calibrate_gpu_profile(const ClusterConfig& base, const GpuBenchMeasurements& m);

// The profile as `ringplan calibrate` writes it: a "# " header (the measurements' source and
// device, the base profile `base_label`, each non-empty line of `notes`, every fitted curve with
// its fit error), the profile YAML, and core's end marker (kProfileEndMarker) last.
std::string gpu_profile_text(const GpuCalibration& cal, const GpuBenchMeasurements& m, const ClusterConfig& base,
                             const std::string& base_label, const std::string& notes);

}  // namespace ringplan::sim
