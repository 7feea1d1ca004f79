// `ringplan fit CASES... -o PROFILE.yaml [--holdout SOURCE | --folds K] [--cluster BASE.yaml] [--fix LIST]
//                [--format table|json]`
// Fits a cluster profile's free parameters (efficiency curves, memory-bandwidth efficiency;
// sim/fit.hpp) to measured validation cases that share one cluster, and reports the error on
// cases the fit did not see:
//   * --folds K (default 5): K-fold cross-validation, case i (in path order) held out in fold
//     i % K; the written profile is then fitted on every case;
//   * --holdout SOURCE: the cases of that source are held out, the profile is fitted on the
//     others. A case's source is the folder its file lies in (configs/validation/<source>/).
// Cases that cannot be fitted (invalid experiment, no fixed mesh or published time metric,
// refused layout) are listed as refused, as `validate` does, and left out.
// Exit status: 0 on success; 2 for bad input (no case, mixed clusters without --cluster, an
// empty training or held-out set, an unknown --holdout source).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli/command.hpp"
#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/units.hpp"
#include "planner/plan_file.hpp"  // kJsonSchemaVersion
#include "planner/validation.hpp"
#include "sim/fit.hpp"

namespace {

using namespace ringplan;

struct FitArgs {
  std::vector<std::string> paths;
  std::string output;
  std::string holdout;
  int folds = 5;
  std::string cluster;
  std::string format = "table";
  std::vector<std::string> fix;  // --fix: parameters held at the base profile's values
  std::vector<std::string> free;  // --free: optional parameters fitted too
  // --prior-weight: "auto" (chosen by cross-validation on the training cases) or a fixed weight.
  std::string prior_weight = "auto";
};

// The fixed weight --prior-weight names, or nullopt for "auto". Throws bad_input otherwise.
std::optional<double> parse_prior_weight(const std::string& s) {
  if (s == "auto") return std::nullopt;
  size_t used = 0;
  double w = 0;
  try {
    w = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || !std::isfinite(w) || w < 0.0)
    throw bad_input(fmt::format("fit: --prior-weight '{}': expected 'auto' or a number >= 0 (percentage points per "
                                "(parameter move / bounds width)^2)",
                                s));
  return w;
}

struct CaseRow {
  std::string name, path, source;
  int64_t tp = 1;                // the case's TP degree (held-out bias by TP degree)
  int64_t gpus = 1;              // the case's GPU count (held-out bias by scale band)
  double train_error_pct = 0;    // with the written profile
  double heldout_error_pct = 0;  // with a fit that did not see the case
  double heldout_speed_pct = 0;  // the same in throughput terms (+: predicted faster than measured)
  bool held_out = false;         // --holdout: in the held-out set (else: training set)
};

std::string abs_pct(double pct) { return format::format_abs_error_pct(pct); }

std::string source_of(const std::string& path) {
  return std::filesystem::path(path).parent_path().filename().string();
}

// The profile's own backward curves (set in `base`) that the fit moved with their family
// (sim::set_param): name, fitted curve, base curve; for the text and the JSON alike.
struct MovedCurve {
  const char* name;
  const EfficiencyCurve* now;
  const EfficiencyCurve* was;
};
std::vector<MovedCurve> moved_backward_curves(const ClusterConfig& fitted, const ClusterConfig& base) {
  std::vector<MovedCurve> out;
  auto check = [&](const char* name, const EfficiencyCurve& now, const EfficiencyCurve& was) {
    if (was.max_efficiency > 0 && (now.max_efficiency != was.max_efficiency || now.half_flops != was.half_flops))
      out.push_back({name, &now, &was});
  };
  check("matmul_backward", fitted.matmul_backward, base.matmul_backward);
  check("attention_backward", fitted.attention_backward, base.attention_backward);
  return out;
}

int fit_command(const FitArgs& a) {
  if (!a.output.empty()) check_output_path(a.output, "-o");  // before the fit: a bad path fails at once
  const std::optional<double> fixed_weight = parse_prior_weight(a.prior_weight);
  // Cases, in path order (collect_cases keeps the order given; folders are walked sorted).
  std::vector<std::string> skipped;
  const std::vector<std::string> files = planner::collect_cases(a.paths, &skipped, "fit");
  std::vector<Experiment> cases;
  std::vector<std::pair<std::string, std::string>> refused;  // path, reason
  // With --cluster every case is predicted on that profile: its layout is checked there too (an
  // FP8 run cannot be fitted on a profile without an FP8 peak).
  std::optional<ClusterConfig> given;
  if (!a.cluster.empty()) given = load_cluster(a.cluster);
  for (const auto& f : files) {
    try {
      Experiment e = load_experiment(f);
      (void)sim::case_time_error_pct(e, given ? *given : e.cluster);  // the fit's checks: mesh, time metric, layout
      cases.push_back(std::move(e));
    } catch (const ConfigError& err) {
      refused.emplace_back(f, err.what());
    }
  }
  if (cases.empty()) {
    std::string list;
    for (const auto& entry : refused) list += fmt::format("\n  {}", entry.second);  // the reason names the file
    throw bad_input(fmt::format("fit: none of the {} cases can be fitted:{}", files.size(), list));
  }

  ClusterConfig base;
  if (given) {
    base = *given;
  } else {
    std::set<std::string> names;
    for (const auto& e : cases) names.insert(e.cluster.name);
    if (names.size() > 1)
      throw bad_input(fmt::format("fit: the cases use {} clusters ({}); fit one GPU generation at a time, or give "
                                  "--cluster BASE.yaml to predict every case on BASE",
                                  names.size(), fmt::join(names, ", ")));
    base = cases.front().cluster;
  }

  std::vector<CaseRow> rows(cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    rows[i] = {cases[i].name, cases[i].path, source_of(cases[i].path), cases[i].mesh ? cases[i].mesh->tp : 1,
               cases[i].mesh ? cases[i].mesh->world_size() : 1};

  sim::FitOptions opts;
  if (fixed_weight) opts.prior_weight = *fixed_weight;
  opts.select_prior_weight = !fixed_weight;
  // The weight of the written profile's fit: fixed, or chosen by cross-validation on its cases.
  sim::PriorWeightChoice prior;
  prior.weight = opts.prior_weight;
  std::vector<double> fold_weights;
  opts.params = sim::fit_params(a.fix, a.free);
  sim::FitResult fit;
  std::string method;
  if (!a.holdout.empty()) {
    std::vector<Experiment> train, test;
    std::set<std::string> sources;
    for (size_t i = 0; i < cases.size(); ++i) {
      sources.insert(rows[i].source);
      rows[i].held_out = rows[i].source == a.holdout;
      (rows[i].held_out ? test : train).push_back(cases[i]);
    }
    if (test.empty())
      throw bad_input(fmt::format("fit: --holdout {}: no case from that source; sources: {}", a.holdout,
                                  fmt::join(sources, ", ")));
    if (train.empty())
      throw bad_input(fmt::format("fit: --holdout {}: every case is from that source, nothing left to fit", a.holdout));
    if (opts.select_prior_weight) prior = sim::select_prior_weight(train, base, a.folds, opts);
    sim::FitOptions final_opts = opts;
    final_opts.prior_weight = prior.weight;
    fit = sim::fit_cluster(train, base, final_opts);
    method = fmt::format("held-out source '{}' ({} cases), fitted on {} cases", a.holdout, test.size(), train.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      const double err = sim::case_time_error_pct(cases[i], fit.cluster);
      (rows[i].held_out ? rows[i].heldout_error_pct : rows[i].train_error_pct) = err;
      if (rows[i].held_out) rows[i].heldout_speed_pct = sim::case_speed_error_pct(cases[i], fit.cluster);
    }
  } else {
    if (a.folds < 2) throw bad_input(fmt::format("fit: --folds must be >= 2, got {}", a.folds));
    if (cases.size() < 2) throw bad_input("fit: k-fold cross-validation needs at least 2 cases (or use --holdout)");
    const sim::CrossValidation cv = sim::cross_validate(cases, base, a.folds, opts);
    fold_weights = cv.fold_prior_weight;
    if (opts.select_prior_weight) prior = sim::select_prior_weight(cases, base, a.folds, opts);
    sim::FitOptions final_opts = opts;
    final_opts.prior_weight = prior.weight;
    fit = sim::fit_cluster(cases, base, final_opts);
    method = fmt::format("{}-fold cross-validation over {} cases (case i held out in fold i % {}); profile fitted on "
                         "all",
                         cv.folds, cases.size(), cv.folds);
    for (size_t i = 0; i < cases.size(); ++i) {
      rows[i].held_out = true;
      rows[i].heldout_error_pct = cv.heldout_error_pct[i];
      rows[i].heldout_speed_pct =
          sim::case_speed_error_pct(cases[i], cv.fold_fits[static_cast<size_t>(cv.fold_of[i])].cluster);
      rows[i].train_error_pct = sim::case_time_error_pct(cases[i], fit.cluster);
    }
  }

  if (!a.fix.empty()) method += fmt::format("; held at the base profile: {}", fmt::join(a.fix, ", "));
  if (fixed_weight)
    method += fmt::format("; prior weight {:g} (fixed)", prior.weight);
  else if (prior.selected)
    method += fmt::format("; prior weight {:g}, chosen by cross-validation on the fitted cases{}", prior.weight,
                          fold_weights.empty() ? "" : fmt::format(" (each fold's on its own: {:g})",
                                                                 fmt::join(fold_weights, ", ")));
  else
    method += fmt::format("; prior weight {:g} (fewer than {} cases to choose it by cross-validation)", prior.weight,
                          sim::kMinCasesToSelectPrior);
  if (!a.free.empty()) method += fmt::format("; also fitted: {}", fmt::join(a.free, ", "));
  // Statistics: training (cases the written profile was fitted on), held-out overall and per source.
  std::vector<double> train_err, held_err;
  std::map<std::string, std::vector<double>> held_by_source;
  // Throughput terms (+: predicted faster), so that step-time and throughput cases share a sign.
  std::map<int64_t, std::vector<double>> held_by_tp, held_by_gpus;  // the latter by planner::gpu_scale_band
  for (const auto& r : rows) {
    const bool held = a.holdout.empty() ? true : r.held_out;
    if (a.holdout.empty() || !r.held_out) train_err.push_back(r.train_error_pct);
    if (!held) continue;
    held_err.push_back(r.heldout_error_pct);
    held_by_source[r.source].push_back(r.heldout_error_pct);
    held_by_tp[r.tp].push_back(r.heldout_speed_pct);
    held_by_gpus[planner::gpu_scale_band(r.gpus)].push_back(r.heldout_speed_pct);
  }
  const planner::ErrorStats tr = planner::error_stats(train_err), ho = planner::error_stats(held_err);

  // Reported: the default parameters (fitted or held by --fix), then the optional ones fitted.
  std::vector<sim::FitParam> reported(sim::kAllFitParams.begin(), sim::kAllFitParams.end());
  for (const auto p : opts.params)
    if (std::find(reported.begin(), reported.end(), p) == reported.end()) reported.push_back(p);

  // The profile: the base with the fitted parameters, and how it was made.
  ClusterConfig out_cluster = fit.cluster;
  std::vector<std::string> fitted_names;
  for (const sim::FitParam p : opts.params) fitted_names.emplace_back(sim::fit_param_name(p));
  std::string head = fmt::format(
      "# Written by `ringplan fit` from {} measured cases ({}).\n"
      "# Fitted: {}; the rest is the base profile '{}'.\n"
      "# Training mean |error| {}, max {}; held-out mean |error| {}, max {}.\n",
      cases.size(), method, fmt::join(fitted_names, ", "), base.name, abs_pct(tr.mean_abs_pct),
      abs_pct(tr.max_abs_pct), abs_pct(ho.mean_abs_pct), abs_pct(ho.max_abs_pct));
  YAML::Emitter y;
  write_cluster(y, out_cluster);
  // The end marker last: load_cluster() refuses a copy of this profile that was cut short.
  if (!a.output.empty()) write_file_atomic(a.output, head + y.c_str() + "\n" + kProfileEndMarker + "\n", "-o");

  if (a.format == "json") {
    nlohmann::json j;
    j["schema_version"] = planner::kJsonSchemaVersion;
    j["method"] = method;
    j["base_cluster"] = base.name;
    nlohmann::json params;
    for (const auto p : reported) params[sim::fit_param_name(p)] = sim::get_param(out_cluster, p);
    j["fitted"] = params;
    // The profile's own backward curves where the fit moved them with their family (sim::set_param).
    nlohmann::json follow = nlohmann::json::object();
    for (const auto& [name, now, was] : moved_backward_curves(out_cluster, base))
      follow[name] = {{"max", now->max_efficiency}, {"half_tflop", now->half_flops / units::tflop}};
    j["backward_curves_moved"] = follow;
    j["fixed"] = a.fix;  // held at the base profile's values (their "fitted" entries are those values)
    j["prior_weight"] = prior.weight;  // percentage points per (move / bounds width)^2
    j["prior_weight_mode"] = fixed_weight ? "fixed" : (prior.selected ? "cross_validated" : "default");
    nlohmann::json scores = nlohmann::json::array();
    for (const auto& [w, e] : prior.scores) scores.push_back({{"weight", w}, {"heldout_mean_abs_error_pct", e}});
    j["prior_weight_scores"] = scores;    // the written profile's choice (empty unless cross-validated)
    j["fold_prior_weights"] = fold_weights;  // k-fold: the weight each fold's fit used
    nlohmann::json cs = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::json c{{"name", r.name}, {"path", r.path}, {"source", r.source}, {"held_out", r.held_out}};
      if (a.holdout.empty() || !r.held_out) c["train_error_pct"] = r.train_error_pct;
      if (r.held_out) c["heldout_error_pct"] = r.heldout_error_pct;
      cs.push_back(c);
    }
    j["cases"] = cs;
    j["train"] = {{"cases", tr.n}, {"mean_abs_error_pct", tr.mean_abs_pct}, {"max_abs_error_pct", tr.max_abs_pct}};
    j["heldout"] = {{"cases", ho.n}, {"mean_abs_error_pct", ho.mean_abs_pct}, {"max_abs_error_pct", ho.max_abs_pct}};
    nlohmann::json bys = nlohmann::json::object();
    for (const auto& [src, v] : held_by_source) {
      const planner::ErrorStats s = planner::error_stats(v);
      bys[src] = {{"cases", s.n}, {"mean_abs_error_pct", s.mean_abs_pct}, {"max_abs_error_pct", s.max_abs_pct}};
    }
    j["heldout_by_source"] = bys;
    // Held-out throughput errors grouped by an integer key (TP degree, GPU scale band), keyed by its label.
    auto signed_groups = [](const std::map<int64_t, std::vector<double>>& groups, auto label) {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [key, v] : groups) {
        const planner::ErrorStats s = planner::error_stats(v);
        out[label(key)] = {{"cases", s.n},
                           {"mean_signed_error_pct", s.mean_signed_pct},
                           {"mean_abs_error_pct", s.mean_abs_pct},
                           {"max_abs_error_pct", s.max_abs_pct}};
      }
      return out;
    };
    j["heldout_by_tp"] = signed_groups(held_by_tp, [](int64_t tp) { return std::to_string(tp); });
    j["heldout_by_gpus"] = signed_groups(held_by_gpus, planner::gpu_scale_label);
    nlohmann::json ref = nlohmann::json::array();
    for (const auto& [p, why] : refused) ref.push_back({{"path", p}, {"reason", why}});
    j["refused"] = ref;
    j["evaluations"] = fit.evaluations;
    // Paths are bytes, not necessarily UTF-8: replaced (U+FFFD) rather than aborting the dump.
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }

  std::string s = fmt::format("fit of '{}': {}\n\n", base.name, method);
  if (!prior.scores.empty()) {
    s += "  prior weight   k-fold held-out mean |error| of these cases at that weight\n";
    for (const auto& [w, e] : prior.scores)
      s += fmt::format("  {:>12g}   {}{}\n", w, abs_pct(e), w == prior.weight ? "  <- chosen" : "");
    s += "\n";
  }
  for (const auto p : reported)
    s += fmt::format("  {:<26} {:.4f} (base {:.4f})\n", sim::fit_param_name(p), sim::get_param(out_cluster, p),
                     sim::get_param(base, p));
  // A profile's own backward curves follow their family's fitted values (sim::set_param): say
  // where they landed, as the written profile holds them.
  for (const auto& [name, now, was] : moved_backward_curves(out_cluster, base))
    s += fmt::format("  {:<26} {:.4f} / {:.4f} (base {:.4f} / {:.4f}; max / half_tflop, at the base's ratio to the forward)\n",
                     name, now->max_efficiency, now->half_flops / units::tflop, was->max_efficiency,
                     was->half_flops / units::tflop);
  size_t w = 4;
  for (const auto& r : rows) w = std::max(w, r.name.size());
  s += fmt::format("\n{:<{}}  {:<28}  {:>10}  {:>10}\n", "case", w, "source", "train", "held-out");
  for (const auto& r : rows) {
    const std::string trs = (a.holdout.empty() || !r.held_out) ? format::format_error_pct(r.train_error_pct) : "-";
    const std::string hos = r.held_out ? format::format_error_pct(r.heldout_error_pct) : "-";
    s += fmt::format("{:<{}}  {:<28}  {:>10}  {:>10}\n", r.name, w, r.source, trs, hos);
  }
  s += fmt::format("\ntraining: {} cases, mean |error| {}, max {}\n", tr.n, abs_pct(tr.mean_abs_pct),
                   abs_pct(tr.max_abs_pct));
  s += fmt::format("held-out: {} cases, mean |error| {}, max {}\n", ho.n, abs_pct(ho.mean_abs_pct),
                   abs_pct(ho.max_abs_pct));
  for (const auto& [src, v] : held_by_source) {
    const planner::ErrorStats st = planner::error_stats(v);
    s += fmt::format("  held-out {}: {} cases, mean |error| {}, max {}\n", src, st.n, abs_pct(st.mean_abs_pct),
                     abs_pct(st.max_abs_pct));
  }
  auto signed_lines = [&](const std::map<int64_t, std::vector<double>>& groups, auto label) {
    for (const auto& [key, v] : groups) {
      const planner::ErrorStats st = planner::error_stats(v);
      s += fmt::format("  held-out {}: {} cases, throughput bias {}, mean |error| {}, max {}\n", label(key), st.n,
                       format::format_error_pct(st.mean_signed_pct), abs_pct(st.mean_abs_pct), abs_pct(st.max_abs_pct));
    }
  };
  signed_lines(held_by_tp, [](int64_t tp) { return fmt::format("TP {}", tp); });
  signed_lines(held_by_gpus, [](int64_t band) { return fmt::format("on {} GPUs", planner::gpu_scale_label(band)); });
  if (!refused.empty()) {
    s += "\nrefused (not fitted):\n";
    for (const auto& [p, why] : refused) s += fmt::format("  {}: {}\n", p, why);
  }
  if (!a.output.empty()) s += fmt::format("\nwrote {}\n", a.output);
  std::fputs(s.c_str(), stdout);
  return 0;
}

RINGPLAN_COMMAND("fit", "Fit a cluster profile's efficiencies to measured cases; report held-out error", 45,
                 [](CLI::App& app) {
                   auto a = std::make_shared<FitArgs>();
                   app.footer(
                       "Fits efficiency.matmul/attention {max, half_tflop} (a profile's own matmul_backward/attention_backward "
                       "curves follow at their ratio to the forward) and efficiency.memory_bandwidth by "
                       "minimising the mean |relative error| of the cases' time metrics plus a prior toward "
                       "the base profile (--prior-weight, by default chosen by cross-validation; bounded pattern search, deterministic); --fix holds some at the base profile's values (a measured curve). "
                       "Held-out error: --folds K (default 5, case i in fold i % K) or "
                       "--holdout SOURCE (the cases in folder SOURCE). Exit status 2 for bad input.");
                   app.add_option("cases", a->paths, "Case files or folders (searched recursively)")->required();
                   app.add_option("-o,--output", a->output, "Write the fitted cluster profile here");
                   auto* h = app.add_option("--holdout", a->holdout,
                                            "Hold out the cases of this source (the folder the case files lie in)")
                                 ->check(CLI::Validator(
                                     [](std::string& v) {
                                       return v.empty() ? std::string("must name a source (the folder its cases lie in)")
                                                        : std::string();
                                     },
                                     "SOURCE"));
                   app.add_option("--folds", a->folds, "K of K-fold cross-validation (>= 2)")
                       ->capture_default_str()
                       ->excludes(h);
                   app.add_option("--cluster", a->cluster,
                                  "Base profile (default: the cases' own cluster, which must be the same for all)");
                   app.add_option("--fix", a->fix,
                                  "Hold these at the base profile's values (e.g. a measured curve): matmul, "
                                  "attention, memory_bandwidth or a parameter name such as matmul.max")
                       ->delimiter(',');
                   app.add_option("--free", a->free,
                                  "Also fit these optional parameters: collectives_inter_node (the inter-node "
                                  "collectives' bus-bandwidth efficiency), matmul_fp8 (the FP8 GEMM curve, "
                                  "max and half_tflop; or one of them by name), training_scale, oversubscription "
                                  "(the downlink : uplink ratio out of the cluster's switch groups; needs "
                                  "inter_node.group_nodes), attention_flash_triton or attention_flash_fa2 (the "
                                  "Triton or FlashAttention-2 kernel's curve; needs one in the cluster to start "
                                  "from), matmul.half_k (the GEMM curve's K-ramp: a GEMM reducing over K runs at "
                                  "K / (K + half_k) of the curve; for a GPU whose GEMM rate by shape was never "
                                  "measured)")
                       ->delimiter(',');
                   app.add_option("--prior-weight", a->prior_weight,
                                  "Prior toward the base profile: percentage points of mean |error| added per "
                                  "(parameter move / its bounds' width)^2, keeping parameters the cases do not "
                                  "determine at the base's values (0: none); 'auto' chooses it from a grid by "
                                  "cross-validation on the training cases (nested inside --folds, so the held-out "
                                  "error includes the choice)")
                       ->capture_default_str();
                   app.add_option("--format", a->format, "Output format: table or json")
                       ->check(CLI::IsMember({"table", "json"}))
                       ->capture_default_str();
                   return [a] { return fit_command(*a); };
                 });

}  // namespace
