// Rate-curve fits (see rate_fit.hpp).
#include "sim/rate_fit.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace ringplan::sim {

RateCurve fit_rate_curve(const std::vector<RatePoint>& points) {
  if (points.empty()) throw bad_input("fit_rate_curve: no measured points");
  double su = 0, sy = 0, suu = 0, suy = 0;
  const double n = static_cast<double>(points.size());
  for (const RatePoint& p : points) {
    if (!(p.flops > 0) || !(p.rate > 0) || !std::isfinite(p.flops) || !std::isfinite(p.rate))
      throw bad_input(fmt::format("fit_rate_curve: point (flops {}, rate {}) is not finite and > 0", p.flops, p.rate));
    // Work in TFLOP and TFLOP/s so the normal equations stay well scaled.
    const double u = 1e12 / p.flops, y = 1e12 / p.rate;
    su += u;
    sy += y;
    suu += u * u;
    suy += u * y;
  }
  RateCurve c;
  const double den = n * suu - su * su;
  if (points.size() >= 2 && den > 0) {
    const double b = (n * suy - su * sy) / den;  // half / R  (TFLOP / TFLOP/s)
    const double a = (sy - b * su) / n;          // 1 / R     (1 / TFLOP/s)
    if (a > 0 && b > 0) {
      c.asymptote = 1e12 / a;
      c.half_flops = b / a * 1e12;
      return c;
    }
  }
  std::vector<double> rates;
  rates.reserve(points.size());
  for (const RatePoint& p : points) rates.push_back(p.rate);
  std::nth_element(rates.begin(), rates.begin() + static_cast<std::ptrdiff_t>(rates.size() / 2), rates.end());
  c.asymptote = rates[rates.size() / 2];
  c.half_flops = 0;
  return c;
}

EfficiencyCurve fit_efficiency_curve(const std::vector<RatePoint>& points, double peak) {
  if (!(peak > 0) || !std::isfinite(peak)) throw bad_input(fmt::format("fit_efficiency_curve: peak {} is not > 0", peak));
  const RateCurve r = fit_rate_curve(points);
  return {std::min(1.0, r.asymptote / peak), r.half_flops};
}

CurveFitError curve_fit_error(const EfficiencyCurve& curve, double peak, const std::vector<RatePoint>& points) {
  CurveFitError e;
  double sum = 0;
  for (const RatePoint& p : points) {
    const double err = std::abs(peak * curve.at(p.flops) - p.rate) / p.rate * 100.0;
    sum += err;
    e.max_pct = std::max(e.max_pct, err);
  }
  e.points = static_cast<int>(points.size());
  e.mean_pct = points.empty() ? 0.0 : sum / static_cast<double>(points.size());
  return e;
}

}  // namespace ringplan::sim
