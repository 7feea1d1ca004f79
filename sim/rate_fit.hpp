// Fits of a rate-vs-size curve to measured kernel rates, as the cost model's efficiency curves
// take them (core/config.hpp EfficiencyCurve: eff(x) = max * x / (x + half), x = the operation's
// FLOPs): rate(x) = R * x / (x + half), by least squares on 1/rate = 1/R + (half/R) * (1/x).
// Used by `ringplan calibrate` on CPUs (its kernels' rates) and on GPU measurements
// (sim/gpu_calibration.hpp).
#pragma once
#include <vector>

#include "core/config.hpp"

namespace ringplan::sim {

// One measured rate: `flops` on the operation's x-axis, `rate` in FLOP/s.
struct RatePoint {
  double flops = 0;
  double rate = 0;
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

// Mean and max |curve rate - measured rate| / measured rate over the points, in percent.
struct CurveFitError {
  double mean_pct = 0, max_pct = 0;
  int points = 0;
};
CurveFitError curve_fit_error(const EfficiencyCurve& curve, double peak_flops_per_s, const std::vector<RatePoint>& points);

}  // namespace ringplan::sim
