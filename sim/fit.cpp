// Fit of a cluster profile to measured runs, and the published-vs-predicted comparison
// (see fit.hpp).
#include "sim/fit.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <string_view>
#include <cmath>
#include <limits>

#include "core/error.hpp"
#include "core/units.hpp"
#include "sim/formulas.hpp"

namespace ringplan::sim {

// ------------------------------------------------------------------ comparison
double published_model_flops_per_step(const Experiment& e, const Prediction& p) {
  if (!e.published || e.published->attention_flops == AttentionFlopCount::causal) return p.model_flops_per_step;
  // The same single-device layer as predict()'s model FLOPs, with and without the mask.
  LayerShape one = make_layer_shape(e.model, e.training, Mesh{}, e.options);
  one.micro_batch = 1;
  one.tp = 1;
  one.cp = 1;
  one.attention = AttentionImpl::flash;
  const double visible = attention_forward_flops(one).mean_rank;
  one.causal = false;
  const double all_pairs = attention_forward_flops(one).mean_rank;
  const double layers = static_cast<double>(e.model.layers);
  const double seqs = static_cast<double>(e.training.global_batch_sequences);
  // predict() counts attention as 3.5x its forward (flash backward 2.5x); `full` sources count
  // 3x (12*s*h per layer and token = 3 x the forward's 4*s*h).
  return p.model_flops_per_step + seqs * layers * (3.0 * all_pairs - 3.5 * visible);
}

Comparisons compare_published(const Experiment& e, const Prediction& p) {
  Comparisons out;
  const Published& pub = *e.published;
  auto add = [&](const char* metric, double predicted, double published, bool time_metric) {
    out.items[static_cast<size_t>(out.count++)] = MetricComparison{metric, predicted, published, time_metric};
  };
  const double devices = static_cast<double>(p.mesh.world_size());
  const double flops = (pub.tflops_per_device || pub.mfu) ? published_model_flops_per_step(e, p) : 0.0;
  if (pub.step_time_s) add("step_time_s", p.step_time_s, *pub.step_time_s, true);
  if (pub.tflops_per_device)
    add("tflops_per_device", flops / p.step_time_s / devices / units::tflop, *pub.tflops_per_device, true);
  if (pub.mfu)
    add("mfu", flops / (p.step_time_s * e.cluster.peak_flops_per_s(e.training.dtype) * devices), *pub.mfu, true);
  if (pub.peak_memory_gib) add("peak_memory_gib", p.peak_memory_bytes / units::gib_bytes, *pub.peak_memory_gib, false);
  if (pub.peak_memory_allocated_gib)
    add("peak_memory_allocated_gib", (p.peak_memory_bytes - p.memory.reserved_bytes) / units::gib_bytes,
        *pub.peak_memory_allocated_gib, false);
  if (pub.tokens_per_s_per_device)
    add("tokens_per_s_per_device", p.tokens_per_s / devices, *pub.tokens_per_s_per_device, true);
  return out;
}

// ------------------------------------------------------------------ parameters
const char* fit_param_name(FitParam p) {
  switch (p) {
    case FitParam::matmul_max: return "matmul.max";
    case FitParam::matmul_half_tflop: return "matmul.half_tflop";
    case FitParam::attention_max: return "attention.max";
    case FitParam::attention_half_tflop: return "attention.half_tflop";
    case FitParam::memory_bandwidth: return "memory_bandwidth";
    case FitParam::inter_node_collectives: return "collectives_inter_node.max";
    case FitParam::matmul_fp8_max: return "matmul_fp8.max";
    case FitParam::matmul_fp8_half_tflop: return "matmul_fp8.half_tflop";
    case FitParam::matmul_training_scale: return "training_scale.matmul";
    case FitParam::attention_training_scale: return "training_scale.attention";
    case FitParam::oversubscription: return "oversubscription";
    case FitParam::flash_triton_max: return "attention_flash_triton.max";
    case FitParam::flash_triton_half_tflop: return "attention_flash_triton.half_tflop";
    case FitParam::flash_fa2_max: return "attention_flash_fa2.max";
    case FitParam::flash_fa2_half_tflop: return "attention_flash_fa2.half_tflop";
    case FitParam::matmul_half_k: return "matmul.half_k";
  }
  return "?";
}

double get_param(const ClusterConfig& c, FitParam p) {
  switch (p) {
    case FitParam::matmul_max: return c.matmul.max_efficiency;
    case FitParam::matmul_half_tflop: return c.matmul.half_flops / units::tflop;
    case FitParam::attention_max: return c.attention.max_efficiency;
    case FitParam::attention_half_tflop: return c.attention.half_flops / units::tflop;
    case FitParam::memory_bandwidth: return c.memory_bandwidth_efficiency;
    case FitParam::inter_node_collectives: return c.collectives_on(true).all_reduce.max_efficiency;
    case FitParam::matmul_fp8_max: return c.matmul_fp8_curve().max_efficiency;
    case FitParam::matmul_fp8_half_tflop: return c.matmul_fp8_curve().half_flops / units::tflop;
    case FitParam::matmul_training_scale: return c.matmul_training_scale;
    case FitParam::attention_training_scale: return c.attention_training_scale;
    case FitParam::oversubscription: return c.switch_groups.oversubscription;
    case FitParam::flash_triton_max: return c.attention_flash_triton.max_efficiency;
    case FitParam::flash_triton_half_tflop: return c.attention_flash_triton.half_flops / units::tflop;
    case FitParam::flash_fa2_max: return c.attention_flash_fa2.max_efficiency;
    case FitParam::flash_fa2_half_tflop: return c.attention_flash_fa2.half_flops / units::tflop;
    case FitParam::matmul_half_k: return c.matmul.half_k;
  }
  return 0.0;
}

namespace {

// A family's forward curve and its own backward curve (matmul_backward, attention_backward)
// where the profile measured one: fitting the family's level or knee moves both, keeping the
// measured backward/forward ratio, as a training scale does. Moving the forward alone would leave
// the backward, most of a step's kernel time, at the isolated kernel's value whatever the runs
// say. An unset backward curve (max 0: "same as the forward") stays unset.
void set_family_max(EfficiencyCurve& fwd, EfficiencyCurve& bwd, double value) {
  if (bwd.max_efficiency > 0 && fwd.max_efficiency > 0)
    bwd.max_efficiency = std::min(1.0, bwd.max_efficiency * value / fwd.max_efficiency);
  fwd.max_efficiency = value;
}
// A knee (half_flops) or a K-ramp (half_k; 95.5 backward against 158 forward on the H100 profiles)
// likewise keeps its measured ratio; a forward without one hands the value over as it is.
void set_family_knee(EfficiencyCurve& fwd, EfficiencyCurve& bwd, double EfficiencyCurve::*knee, double value) {
  if (bwd.max_efficiency > 0) bwd.*knee = fwd.*knee > 0 ? bwd.*knee * value / fwd.*knee : value;
  fwd.*knee = value;
}

}  // namespace

void set_param(ClusterConfig& c, FitParam p, double value) {
  switch (p) {
    case FitParam::matmul_max: set_family_max(c.matmul, c.matmul_backward, value); break;
    case FitParam::matmul_half_tflop:
      set_family_knee(c.matmul, c.matmul_backward, &EfficiencyCurve::half_flops, value * units::tflop);
      break;
    case FitParam::attention_max: set_family_max(c.attention, c.attention_backward, value); break;
    case FitParam::attention_half_tflop:
      set_family_knee(c.attention, c.attention_backward, &EfficiencyCurve::half_flops, value * units::tflop);
      break;
    case FitParam::memory_bandwidth: c.memory_bandwidth_efficiency = value; break;
    case FitParam::inter_node_collectives:
      // Unset inter-node curves meant "as `collectives`": start from those, then set the level.
      if (!c.has_inter_node_collectives) c.inter_node_collectives = c.collectives;
      c.has_inter_node_collectives = true;
      c.inter_node_collectives.all_reduce.max_efficiency = value;
      c.inter_node_collectives.reduce_scatter.max_efficiency = value;
      c.inter_node_collectives.all_gather.max_efficiency = value;
      break;
    case FitParam::matmul_fp8_max:
    case FitParam::matmul_fp8_half_tflop:
      // Unset meant "matmul's fraction": start from it, then set the one value.
      if (c.matmul_fp8.max_efficiency <= 0) c.matmul_fp8 = c.matmul;
      if (p == FitParam::matmul_fp8_max)
        c.matmul_fp8.max_efficiency = value;
      else
        c.matmul_fp8.half_flops = value * units::tflop;
      break;
    case FitParam::matmul_training_scale: c.set_training_scale(value, c.attention_training_scale); break;
    case FitParam::attention_training_scale: c.set_training_scale(c.matmul_training_scale, value); break;
    case FitParam::oversubscription: c.switch_groups.oversubscription = value; break;
    case FitParam::flash_triton_max: c.attention_flash_triton.max_efficiency = value; break;
    case FitParam::flash_triton_half_tflop: c.attention_flash_triton.half_flops = value * units::tflop; break;
    case FitParam::flash_fa2_max: c.attention_flash_fa2.max_efficiency = value; break;
    case FitParam::flash_fa2_half_tflop: c.attention_flash_fa2.half_flops = value * units::tflop; break;
    case FitParam::matmul_half_k: set_family_knee(c.matmul, c.matmul_backward, &EfficiencyCurve::half_k, value); break;
  }
}

ParamBounds bounds_for(FitParam p, const ClusterConfig& base) {
  switch (p) {
    case FitParam::matmul_max:
    case FitParam::attention_max: return {0.2, 1.0};
    case FitParam::matmul_half_tflop:
    case FitParam::attention_half_tflop: return {0.0, 1.0};
    case FitParam::memory_bandwidth: return {0.3, 1.0};
    case FitParam::inter_node_collectives: return {0.02, 1.0};
    case FitParam::matmul_fp8_max: return {0.2, 1.0};
    case FitParam::matmul_fp8_half_tflop: return {0.0, 1.0};
    case FitParam::oversubscription: return {1.0, 32.0};  // 1: non-blocking
    case FitParam::flash_triton_max:
    case FitParam::flash_fa2_max: return {0.05, std::max(0.05, std::min(1.0, base.attention_training_scale))};
    case FitParam::flash_triton_half_tflop:
    case FitParam::flash_fa2_half_tflop: return {0.0, 1.0};
    // 0: no ramp. The measured Hopper ramps are 95-302 (configs/clusters/dgx_h100.yaml); 2048
    // halves the rate of a GEMM reducing over a 2048-wide hidden layer, well past any of them.
    case FitParam::matmul_half_k: return {0.0, 2048.0};
    case FitParam::matmul_training_scale:
    case FitParam::attention_training_scale: {
      ParamBounds b{0.2, 1.5};
      const double top = base.kernel_max(p == FitParam::attention_training_scale);
      if (top > 0) b.hi = std::max(b.lo, std::min(b.hi, 1.0 / top));
      return b;
    }
  }
  return {0.0, 1.0};
}

std::vector<FitParam> params_without(const std::vector<std::string>& fixed) {
  std::vector<FitParam> left;
  std::vector<bool> used(fixed.size(), false);
  for (const FitParam p : kAllFitParams) {
    const std::string name = fit_param_name(p);
    const std::string family = name.substr(0, name.find('.'));
    bool hold = false;
    for (size_t i = 0; i < fixed.size(); ++i)
      if (fixed[i] == name || fixed[i] == family) hold = used[i] = true;
    if (!hold) left.push_back(p);
  }
  for (size_t i = 0; i < fixed.size(); ++i)
    if (!used[i]) {
      std::vector<std::string> names{"matmul", "attention"};
      for (const FitParam p : kAllFitParams) names.emplace_back(fit_param_name(p));
      throw bad_input(fmt::format("fit: --fix {}: not a fitted parameter; valid: {}", fixed[i], fmt::join(names, ", ")));
    }
  return left;
}

std::vector<FitParam> fit_params(const std::vector<std::string>& fixed, const std::vector<std::string>& extra) {
  std::vector<FitParam> params = params_with(params_without(fixed), extra);
  if (params.empty())
    throw bad_input("fit: --fix holds every parameter and --free adds none; nothing is left to fit");
  return params;
}

std::vector<FitParam> params_with(std::vector<FitParam> params, const std::vector<std::string>& extra) {
  for (const std::string& x : extra) {
    bool found = false;
    for (const FitParam p : kOptionalFitParams) {
      const std::string name = fit_param_name(p);
      const std::string family = name.substr(0, name.find('.'));
      // A family of the default parameters (matmul, attention) names those, not an optional one in
      // it (matmul.half_k): that one by its full name only.
      const bool default_family = std::any_of(kAllFitParams.begin(), kAllFitParams.end(), [&](FitParam d) {
        const std::string n = fit_param_name(d);
        return n.substr(0, n.find('.')) == family;
      });
      if (x == name || (!default_family && x == family)) {
        found = true;
        if (std::find(params.begin(), params.end(), p) == params.end()) params.push_back(p);
        // The scale sets its family's level, as the family's max would: fit one of the two.
        const FitParam replaced = p == FitParam::matmul_training_scale      ? FitParam::matmul_max
                                  : p == FitParam::attention_training_scale ? FitParam::attention_max
                                                                            : p;
        if (replaced != p) params.erase(std::remove(params.begin(), params.end(), replaced), params.end());
      }
    }
    if (!found) {
      std::vector<std::string> names;
      for (const FitParam p : kOptionalFitParams) names.emplace_back(fit_param_name(p));
      throw bad_input(fmt::format("fit: --free {}: not an optional parameter; valid: {}", x, fmt::join(names, ", ")));
    }
  }
  return params;
}

// ------------------------------------------------------------------ objective
namespace {

// The case's own layout, checked once; the fit then only swaps the cluster.
void check_case(const Experiment& e) {
  if (!e.mesh)
    throw ConfigError(e.path, 0, "mesh", "a fitted case needs a fixed mesh (dp, tp, cp, pp)");
  if (!e.published)
    throw ConfigError(e.path, 0, "published", "a fitted case needs a `published:` block");
  const Published& pub = *e.published;
  if (!pub.step_time_s && !pub.tflops_per_device && !pub.mfu && !pub.tokens_per_s_per_device)
    throw ConfigError(e.path, 0, "published",
                      "no time metric to fit (step_time_s, tflops_per_device, mfu or tokens_per_s_per_device); "
                      "peak memory does not depend on the fitted parameters");
  const std::string why = check_layout(e, *e.mesh, e.options, e.mesh->world_size());
  if (!why.empty()) throw ConfigError(e.path, 0, "mesh", "layout cannot run: " + why);
}

// Mean |error| (sum_abs) and signed mean error over the time metrics of one case, in %.
struct CaseErr {
  double abs_pct = 0, signed_pct = 0, speed_pct = 0;
};
CaseErr case_err(const Experiment& e) {
  const Prediction p = predict(e, *e.mesh, e.options);
  const Comparisons cmp = compare_published(e, p);
  CaseErr r;
  int n = 0;
  for (int i = 0; i < cmp.count; ++i) {
    const MetricComparison& m = cmp.items[static_cast<size_t>(i)];
    if (!m.time_metric) continue;
    const double err = m.error_pct();
    r.abs_pct += std::abs(err);
    r.signed_pct += err;
    // A step time predicted x% too long is a throughput predicted 1/(1 + x) - 1 too low.
    r.speed_pct += std::string_view(m.metric) == "step_time_s" ? 100.0 * (m.published / m.predicted - 1.0) : err;
    ++n;
  }
  if (n > 0) {
    r.abs_pct /= n;
    r.signed_pct /= n;
    r.speed_pct /= n;
  }
  return r;
}

// Mean over cases of their mean |error|. `work` holds the cases with the candidate cluster.
double objective(std::vector<Experiment>& work, const ClusterConfig& c) {
  double sum = 0;
  for (Experiment& e : work) {
    e.cluster = c;
    const double err = case_err(e).abs_pct;
    // A candidate that makes a prediction non-finite is never better than any finite one.
    if (!std::isfinite(err)) return std::numeric_limits<double>::infinity();
    sum += err;
  }
  return sum / static_cast<double>(work.size());
}

// The case's errors when predicted on `c` instead of its own cluster.
CaseErr case_err_on(const Experiment& e, const ClusterConfig& c) {
  Experiment x = e;
  x.cluster = c;
  check_case(x);  // on the profile it is predicted on (an FP8 run needs an FP8 peak there)
  return case_err(x);
}

}  // namespace

double case_time_error_pct(const Experiment& e, const ClusterConfig& c) { return case_err_on(e, c).signed_pct; }

double case_speed_error_pct(const Experiment& e, const ClusterConfig& c) { return case_err_on(e, c).speed_pct; }

FitResult fit_cluster(const std::vector<Experiment>& cases, const ClusterConfig& base, const FitOptions& opts) {
  if (cases.empty()) throw bad_input("fit: no case to fit");
  if (opts.params.empty()) throw bad_input("fit: no parameter to fit");
  // An FP8 GEMM curve is a fraction of the FP8 peak: without one, the profile written would be
  // refused by every command that reads it.
  for (const FitParam p : opts.params)
    if ((p == FitParam::matmul_fp8_max || p == FitParam::matmul_fp8_half_tflop) && !(base.peak_flops_per_s_fp8 > 0))
      throw bad_input(fmt::format("fit: --free matmul_fp8 needs a cluster with an FP8 peak (peak_tflops.fp8); "
                                  "'{}' has none; give --cluster with one",
                                  base.name));
  // The attention training scale rescales a named flash kernel's curve: fitted beside its max, the
  // two would trade against each other on the runs of that kernel.
  const auto has = [&opts](FitParam p) {
    return std::find(opts.params.begin(), opts.params.end(), p) != opts.params.end();
  };
  struct KernelParams {
    FlashKernel kernel;
    FitParam max, half;
  };
  const KernelParams kernels[] = {
      {FlashKernel::triton, FitParam::flash_triton_max, FitParam::flash_triton_half_tflop},
      {FlashKernel::fa2, FitParam::flash_fa2_max, FitParam::flash_fa2_half_tflop}};
  for (const KernelParams& k : kernels) {
    if (!has(k.max) && !has(k.half)) continue;
    const char* key = flash_curve_key(k.kernel);
    if (has(FitParam::attention_training_scale))
      throw bad_input(fmt::format("fit: --free {} and training_scale.attention move the same curve; free one of "
                                  "them (training_scale.matmul alone is fine)",
                                  key));
    if (!base.has_flash_curve(k.kernel))
      throw bad_input(fmt::format("fit: --free {0} needs a cluster with that curve (efficiency.{0}) to start from; "
                                  "'{1}' has none; give --cluster with one",
                                  key, base.name));
  }
  for (const FitParam p : opts.params)
    if (p == FitParam::oversubscription && base.switch_groups.nodes <= 0)
      throw bad_input(fmt::format("fit: --free oversubscription needs switch groups in the cluster: '{}' sets no "
                                  "inter_node.group_nodes (the nodes under one non-blocking switch group, which "
                                  "the ratio applies to); give --cluster with group_nodes and oversubscription set",
                                  base.name));
  // Each case on the profile it is fitted on (a Triton-kernel run needs that kernel's curve there,
  // an FP8 run an FP8 peak): a case that cannot run on `base` would make every objective infinite.
  for (const Experiment& e : cases) {
    Experiment on_base = e;
    on_base.cluster = base;
    check_case(on_base);
  }
  std::vector<Experiment> work = cases;

  const size_t n = opts.params.size();
  std::vector<ParamBounds> bounds(n);
  for (size_t i = 0; i < n; ++i) bounds[i] = bounds_for(opts.params[i], base);
  auto clamp = [&](size_t i, double v) { return std::clamp(v, bounds[i].lo, bounds[i].hi); };

  // The base's values (clamped), and the bounds' centre.
  std::vector<std::vector<double>> starts(2, std::vector<double>(n));
  for (size_t i = 0; i < n; ++i) {
    starts[0][i] = clamp(i, get_param(base, opts.params[i]));
    starts[1][i] = 0.5 * (bounds[i].lo + bounds[i].hi);
  }

  FitResult best;
  best.mean_abs_error_pct = std::numeric_limits<double>::infinity();
  double best_penalised = std::numeric_limits<double>::infinity();
  int evaluations = 0;
  const int budget_per_start = std::max(1, opts.max_evaluations / static_cast<int>(starts.size()));
  for (const auto& start : starts) {
    // Hooke-Jeeves pattern search: an exploratory move (+-step on each parameter in turn,
    // keeping any improvement), then, while that succeeds, a pattern move along the last
    // direction of progress (which follows valleys that cross the axes, e.g. matmul.max
    // against memory_bandwidth); no progress halves the steps.
    int used = 0;
    auto f_at = [&](const std::vector<double>& x) {
      ClusterConfig c = base;
      double prior = 0.0;
      for (size_t i = 0; i < n; ++i) {
        set_param(c, opts.params[i], x[i]);
        const double z = (x[i] - starts[0][i]) / (bounds[i].hi - bounds[i].lo);
        prior += z * z;
      }
      ++used;
      return objective(work, c) + opts.prior_weight * prior;
    };
    std::vector<double> step(n);
    for (size_t i = 0; i < n; ++i) step[i] = 0.25 * (bounds[i].hi - bounds[i].lo);
    auto explore = [&](std::vector<double> x, double fx, double* f_out) {
      for (size_t i = 0; i < n && used < budget_per_start; ++i) {
        for (const double dir : {+1.0, -1.0}) {
          std::vector<double> y = x;
          y[i] = clamp(i, x[i] + dir * step[i]);
          if (y[i] == x[i]) continue;
          const double fy = f_at(y);
          if (fy < fx) {
            x = y;
            fx = fy;
            break;
          }
        }
      }
      *f_out = fx;
      return x;
    };
    std::vector<double> xb = start;
    double fb = f_at(xb);
    while (used < budget_per_start) {
      double fn = 0;
      std::vector<double> xn = explore(xb, fb, &fn);
      if (fn < fb) {
        while (used < budget_per_start) {
          std::vector<double> xp(n);
          for (size_t i = 0; i < n; ++i) xp[i] = clamp(i, 2.0 * xn[i] - xb[i]);
          double fe = 0;
          std::vector<double> xe = explore(xp, f_at(xp), &fe);
          xb = xn;
          fb = fn;
          if (!(fe < fn)) break;
          xn = xe;
          fn = fe;
        }
        xb = xn;
        fb = fn;
        continue;
      }
      bool done = true;
      for (size_t i = 0; i < n; ++i) {
        step[i] *= 0.5;
        if (step[i] >= opts.min_step * (bounds[i].hi - bounds[i].lo)) done = false;
      }
      if (done) break;
    }
    ClusterConfig c = base;
    for (size_t i = 0; i < n; ++i) set_param(c, opts.params[i], xb[i]);
    const double fx = fb;  // with the prior
    evaluations += used;
    if (fx < best_penalised) {  // strict: the first start wins ties (deterministic)
      best_penalised = fx;
      best.cluster = c;
      best.mean_abs_error_pct = objective(work, c);
    }
  }
  best.evaluations = evaluations;
  return best;
}

CrossValidation cross_validate(const std::vector<Experiment>& cases, const ClusterConfig& base, int folds,
                               const FitOptions& opts) {
  if (cases.size() < 2) throw bad_input(fmt::format("fit: cross-validation needs at least 2 cases, got {}", cases.size()));
  CrossValidation cv;
  cv.folds = std::clamp(folds, 2, static_cast<int>(cases.size()));
  cv.fold_of.resize(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) cv.fold_of[i] = static_cast<int>(i % static_cast<size_t>(cv.folds));
  cv.heldout_error_pct.assign(cases.size(), 0.0);
  for (int f = 0; f < cv.folds; ++f) {
    std::vector<Experiment> train;
    for (size_t i = 0; i < cases.size(); ++i)
      if (cv.fold_of[i] != f) train.push_back(cases[i]);
    FitOptions fold_opts = opts;
    // The weight is chosen on this fold's training cases only: the held-out fold stays unseen.
    if (opts.select_prior_weight) fold_opts.prior_weight = select_prior_weight(train, base, folds, opts).weight;
    cv.fold_prior_weight.push_back(fold_opts.prior_weight);
    cv.fold_fits.push_back(fit_cluster(train, base, fold_opts));
    for (size_t i = 0; i < cases.size(); ++i)
      if (cv.fold_of[i] == f) cv.heldout_error_pct[i] = case_time_error_pct(cases[i], cv.fold_fits.back().cluster);
  }
  return cv;
}

PriorWeightChoice select_prior_weight(const std::vector<Experiment>& cases, const ClusterConfig& base, int folds,
                                      const FitOptions& opts) {
  PriorWeightChoice choice;
  choice.weight = opts.prior_weight;
  if (cases.size() < kMinCasesToSelectPrior) return choice;
  FitOptions inner = opts;
  inner.select_prior_weight = false;  // one level of nesting
  double best = std::numeric_limits<double>::infinity();
  // Largest weight first, strict improvement to move: ties go to the fit closer to the base.
  for (auto it = kPriorWeightGrid.rbegin(); it != kPriorWeightGrid.rend(); ++it) {
    inner.prior_weight = *it;
    const CrossValidation cv = cross_validate(cases, base, folds, inner);
    double sum = 0;
    for (const double e : cv.heldout_error_pct) sum += std::abs(e);
    const double mean = sum / static_cast<double>(cases.size());
    choice.scores.emplace_back(*it, mean);
    if (mean < best) {
      best = mean;
      choice.weight = *it;
    }
  }
  std::reverse(choice.scores.begin(), choice.scores.end());  // ascending weight
  choice.selected = true;
  return choice;
}

}  // namespace ringplan::sim
