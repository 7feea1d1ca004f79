// Fits of a rate-vs-size curve to measured kernel rates, as the cost model's efficiency curves
// take them (core/config.hpp EfficiencyCurve: eff(x) = max * x / (x + half), x = the operation's
// FLOPs): rate(x) = R * x / (x + half), by least squares on 1/rate = 1/R + (half/R) * (1/x).
// Used by `ringplan calibrate` on CPUs (its kernels' rates) and on GPU measurements
// (sim/gpu_calibration.hpp).
#pragma once
#include <vector>

#include "core/config.hpp"

namespace ringplan::sim {

// One measured rate: `flops` on the operation's x-axis, `rate` in FLOP/s, and for a GEMM its
// reduction length `k` (0: not a GEMM, or not recorded).
struct RatePoint {
  double flops = 0;
  double rate = 0;
  double k = 0;
};

// rate(x) = asymptote * x / (x + half_flops); half_flops 0 means a constant rate.
struct RateCurve {
  double asymptote = 0;  // FLOP/s
  double half_flops = 0;
  double at(double x) const { return half_flops > 0 ? asymptote * x / (x + half_flops) : asymptote; }
};

// Least squares of 1/rate = 1/R + (half/R) * (1/x) over the points (x = flops > 0, rate > 0).
// Falls back to a constant (half 0, R = the median rate) when the points do not rise with size
// (the fitted slope or intercept <= 0) or there is one point. Throws bad_input on no points or a
// point that is not finite and > 0.
RateCurve fit_rate_curve(const std::vector<RatePoint>& points);

// The same as a fraction of `peak_flops_per_s`: {max = R / peak capped at 1, half}. Throws
// bad_input when peak is not > 0.
EfficiencyCurve fit_efficiency_curve(const std::vector<RatePoint>& points, double peak_flops_per_s);

// A GEMM curve (matmul, matmul_backward, matmul_fp8) with the K-ramp (EfficiencyCurve::half_k)
// where it earns its third parameter on points it was not fitted to. Both forms are scored
// 5-fold (point i in fold i mod 5; each fold's error taken from a fit of the other four):
//   FLOPs curve  fit_efficiency_curve, half_k 0;
//   K-ramp       for each half_k on a log grid (1 to 1e5 elements, 50 steps per decade) the
//                FLOPs curve is fitted by fit_efficiency_curve to the rates divided by
//                K / (K + half_k); the half_k of least sum of squared log(curve / measured) wins.
// `curve` is the K-ramp fitted to every point when its held-out mean relative error is the lower,
// else the FLOPs curve. The ramp is not tried (ramp_tried false) with fewer than 10 points or a
// point whose k is not > 0.
struct GemmCurveFit {
  EfficiencyCurve curve;
  bool ramp_tried = false;
  double held_out_flops_pct = 0;  // held-out mean relative error of the FLOPs curve, percent (0: one point)
  double held_out_ramp_pct = 0;   // the same for the K-ramp (0 when not tried)
};
GemmCurveFit fit_gemm_efficiency_curve(const std::vector<RatePoint>& points, double peak_flops_per_s);

// Mean and max |curve rate - measured rate| / measured rate over the points, in percent (a point
// with k > 0 at the curve's at_gemm, else at at()).
struct CurveFitError {
  double mean_pct = 0, max_pct = 0;
  int points = 0;
};
CurveFitError curve_fit_error(const EfficiencyCurve& curve, double peak_flops_per_s, const std::vector<RatePoint>& points);

}  // namespace ringplan::sim
