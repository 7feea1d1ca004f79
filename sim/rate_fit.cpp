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

namespace {

double point_efficiency(const EfficiencyCurve& c, const RatePoint& p) {
  return p.k > 0 ? c.at_gemm(p.flops, p.k) : c.at(p.flops);
}

// The FLOPs curve fitted to the rates with the K-ramp of `half_k` divided out.
EfficiencyCurve fit_with_ramp(const std::vector<RatePoint>& points, double peak, double half_k) {
  std::vector<RatePoint> flat(points);
  for (RatePoint& p : flat) p.rate *= (p.k + half_k) / p.k;
  EfficiencyCurve c = fit_efficiency_curve(flat, peak);
  c.half_k = half_k;
  return c;
}

double sum_sq_log(const EfficiencyCurve& c, double peak, const std::vector<RatePoint>& points) {
  double s = 0;
  for (const RatePoint& p : points) {
    const double r = std::log(peak * point_efficiency(c, p) / p.rate);
    s += r * r;
  }
  return s;
}

EfficiencyCurve fit_ramp(const std::vector<RatePoint>& points, double peak) {
  constexpr int kStepsPerDecade = 50, kDecades = 5;
  EfficiencyCurve best = fit_with_ramp(points, peak, 1.0);
  double best_loss = sum_sq_log(best, peak, points);
  for (int i = 1; i <= kStepsPerDecade * kDecades; ++i) {
    const EfficiencyCurve c = fit_with_ramp(points, peak, std::pow(10.0, static_cast<double>(i) / kStepsPerDecade));
    const double loss = sum_sq_log(c, peak, points);
    if (loss < best_loss) best = c, best_loss = loss;
  }
  return best;
}

}  // namespace

GemmCurveFit fit_gemm_efficiency_curve(const std::vector<RatePoint>& points, double peak) {
  GemmCurveFit f;
  f.curve = fit_efficiency_curve(points, peak);
  constexpr size_t kFolds = 5, kMinPoints = 10;
  f.ramp_tried = points.size() >= kMinPoints &&
                 std::all_of(points.begin(), points.end(), [](const RatePoint& p) { return p.k > 0 && std::isfinite(p.k); });
  double flops_err = 0, ramp_err = 0, tested = 0;
  for (size_t fold = 0; fold < kFolds; ++fold) {
    std::vector<RatePoint> train, test;
    for (size_t i = 0; i < points.size(); ++i) (i % kFolds == fold ? test : train).push_back(points[i]);
    if (test.empty() || train.empty()) continue;
    const double n = static_cast<double>(test.size());
    tested += n;
    flops_err += curve_fit_error(fit_efficiency_curve(train, peak), peak, test).mean_pct * n;
    if (f.ramp_tried) ramp_err += curve_fit_error(fit_ramp(train, peak), peak, test).mean_pct * n;
  }
  // One point leaves nothing to fit a fold on: no held-out figure (0).
  const double total = std::max(tested, 1.0);
  f.held_out_flops_pct = flops_err / total;
  if (f.ramp_tried) {
    f.held_out_ramp_pct = ramp_err / total;
    if (f.held_out_ramp_pct < f.held_out_flops_pct) f.curve = fit_ramp(points, peak);
  }
  return f;
}

CurveFitError curve_fit_error(const EfficiencyCurve& curve, double peak, const std::vector<RatePoint>& points) {
  CurveFitError e;
  double sum = 0;
  for (const RatePoint& p : points) {
    const double err = std::abs(peak * point_efficiency(curve, p) - p.rate) / p.rate * 100.0;
    sum += err;
    e.max_pct = std::max(e.max_pct, err);
  }
  e.points = static_cast<int>(points.size());
  e.mean_pct = points.empty() ? 0.0 : sum / static_cast<double>(points.size());
  return e;
}

}  // namespace ringplan::sim
