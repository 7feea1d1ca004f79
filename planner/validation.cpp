// Predicted vs published figures for validation cases (see validation.hpp).
#include "planner/validation.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <string_view>
#include <utility>
#include <filesystem>
#include <fstream>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/units.hpp"
#include "planner/report.hpp"
#include "sim/fit.hpp"

namespace ringplan::planner {
namespace {

// A file found while walking a folder is a case only if its top level has `published:`
// (directly, or inside an `experiment:` mapping as in plan files).
bool has_published_block(const std::string& path) {
  try {
    const YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return false;
    if (root["published"]) return true;
    const YAML::Node exp = root["experiment"];
    return exp && exp.IsMap() && exp["published"];
  } catch (const YAML::Exception&) {
    return true;  // let load_experiment() report the YAML error with its position
  }
}

// Is the file one readable, non-empty YAML document? Decides whether a load error refuses the
// case (the YAML is fine, the experiment in it is not) or fails the command (nothing can be
// said of a file that is not YAML; it may not even be a case).
bool is_one_yaml_document(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(in);
    return docs.size() == 1 && !docs.front().IsNull();
  } catch (const YAML::Exception&) {
    return false;
  }
}

// The reason of a refusal: the ConfigError's message without its leading "file: " when the
// file is the case itself (the refusal already names it); "line N: " stays. An error in
// another file (a model or cluster the case names) keeps its full message.
std::string refusal_reason(const ConfigError& err, const std::string& case_path) {
  const std::string what = err.what();
  std::string prefix = err.file();
  if (err.line() > 0) prefix.append(":").append(std::to_string(err.line()));
  prefix += ": ";
  if (err.file() != case_path || what.rfind(prefix, 0) != 0) return what;
  const std::string rest = what.substr(prefix.size());
  return err.line() > 0 ? fmt::format("line {}: {}", err.line(), rest) : rest;
}

std::string case_name(const Experiment& e) { return e.name.empty() ? e.path : e.name; }

// The job a case measures, without its layout: cases with the same key differ only in mesh and
// options, so their measured throughputs rank layouts of one job. Cases of different source
// folders are different measurement campaigns (software versions, dates, machines' set-up) and are
// not ranked against each other: the folder ends the key.
std::string ranking_key(const Experiment& e, const std::string& metric, const std::string& source_folder) {
  const TrainingConfig& t = e.training;
  const int64_t gpus = e.mesh ? e.mesh->world_size() : 0;
  return fmt::format("{} on {} x {}, seq {}, batch {}, {}{}{}, {} ({})", e.model.name, gpus, e.cluster.name, t.seq_len,
                     t.global_batch_sequences, to_string(t.dtype), t.fp8 ? "+fp8" : "", t.causal ? "" : ", full mask",
                     metric, source_folder);
}

// Ranks (1 = smallest) with ties given their average rank.
std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&v](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double r = 0.5 * static_cast<double>(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) rank[idx[k]] = r;
    i = j + 1;
  }
  return rank;
}

// Pearson correlation of the ranks (Spearman's rho with ties); 0 when either side is constant.
double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const std::vector<double> ra = average_ranks(a), rb = average_ranks(b);
  const double n = static_cast<double>(ra.size());
  double ma = 0, mb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    ma += ra[i] / n;
    mb += rb[i] / n;
  }
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0.0;
}

}  // namespace

std::vector<std::string> collect_cases(const std::vector<std::string>& paths, std::vector<std::string>* skipped,
                                       const char* command) {
  if (paths.empty()) throw bad_input(fmt::format("{}: give at least one case file or folder", command));
  std::vector<std::string> cases;
  for (const auto& p : paths) {
    if (const std::string why = input_path_problem(p, true); why == "no such file or folder")
      throw bad_input(fmt::format("{}: '{}' does not exist (give case files or folders of them)", command, p));
    else if (!why.empty())
      throw bad_input(fmt::format("{}: '{}' {} (give case files or folders of them)", command, p, why));
    std::error_code ec;
    if (!std::filesystem::is_directory(p, ec)) {
      cases.push_back(p);  // named explicitly: a case; validate_paths() refuses it, with why, if it is not
      continue;
    }
    for (const auto& f : find_experiments(p)) {
      if (has_published_block(f)) {
        cases.push_back(f);
      } else if (skipped) {
        skipped->push_back(f);
      }
    }
  }
  if (cases.empty())
    throw bad_input(fmt::format("{}: no case found in {} (a case is an experiment YAML with a fixed "
                                "mesh and a `published:` block)",
                                command, fmt::join(paths, ", ")));
  // One measurement counts once: a file reached twice (named twice, or named and inside a folder
  // given too) would weigh double in the statistics and, under `fit`, sit in the training set of
  // its own held-out fold. The first occurrence keeps its place.
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const auto& f : cases) {
    std::error_code ec;
    const std::filesystem::path canon = std::filesystem::weakly_canonical(f, ec);
    if (seen.insert(ec ? f : canon.string()).second) unique.push_back(f);
  }
  return unique;
}

std::vector<ValidationRow> validate_case(const Experiment& e) {
  const std::string name = case_name(e);
  // A missing block is named at the line of the mapping that lacks it (the experiment's).
  auto missing = [&e](const std::string& key, const std::string& what) {
    const auto it = e.sources.find("");
    return it == e.sources.end() ? ConfigError(e.path, 0, key, what)
                                 : ConfigError(it->second.file, it->second.line,
                                               it->second.field.empty() ? key : it->second.field + "." + key, what);
  };
  if (!e.mesh) throw missing("mesh", "a validation case needs a fixed mesh (dp, tp, cp, pp)");
  if (!e.published)
    throw missing("published",
                  "a validation case needs a `published:` block with step_time_s, tflops_per_device, mfu, "
                  "peak_memory_gib, peak_memory_allocated_gib or tokens_per_s_per_device");
  const Published& pub = *e.published;
  if (!pub.has_metric())
    throw experiment_field_error(e, "published",
                                 "no metric given; expected at least one of step_time_s, tflops_per_device, mfu, "
                                 "peak_memory_gib, peak_memory_allocated_gib, tokens_per_s_per_device");
  const Mesh& mesh = *e.mesh;
  const std::string why = sim::check_layout(e, mesh, e.options, mesh.world_size());
  if (!why.empty()) {
    // Named at the option the reason is about when the file gives it, else at the mesh (the
    // loader has already checked the mesh against the model and training on its own).
    std::string key = "mesh";
    for (const char* option : {"interleave", "micro_batch", "zero_stage"})
      if (why.find(option) != std::string::npos && e.sources.count(std::string("options.") + option))
        key = std::string("options.") + option;
    throw experiment_field_error(e, key, fmt::format("layout {} cannot run: {}", mesh_text(mesh), why));
  }
  const sim::Prediction p = sim::predict(e, mesh, e.options);

  // One comparison rule for validate and fit (sim/fit.hpp): tflops_per_device and mfu in the
  // source's FLOP count (published.attention_flops), tokens_per_s_per_device per device.
  const sim::Comparisons cmp = sim::compare_published(e, p);
  std::vector<ValidationRow> rows;
  for (int i = 0; i < cmp.count; ++i) {
    const sim::MetricComparison& c = cmp.items[static_cast<size_t>(i)];
    if (!(c.published > 0))
      throw experiment_field_error(e, std::string("published.") + c.metric, fmt::format("must be > 0, got {}", c.published));
    ValidationRow row;
    row.name = name;
    row.metric = c.metric;
    row.predicted = c.predicted;
    row.published = c.published;
    row.error_pct = c.error_pct();
    row.path = e.path;
    row.mesh = mesh;
    row.source = pub.source;
    row.source_folder = std::filesystem::path(e.path).parent_path().filename().string();
    row.ranking_group = ranking_key(e, c.metric, row.source_folder);
    row.time_metric = c.time_metric;
    row.higher_is_better = std::string_view(c.metric) != "step_time_s";
    row.fits = p.fits;
    row.peak_memory_bytes = p.memory.peak_bytes;
    row.capacity_bytes = p.capacity_bytes;
    row.options = e.options;
    rows.push_back(std::move(row));
  }
  return rows;
}

ErrorStats error_stats(const std::vector<double>& errors_pct) {
  ErrorStats s;
  for (double x : errors_pct) {
    s.mean_signed_pct += x;
    s.mean_abs_pct += std::abs(x);
    s.max_abs_pct = std::max(s.max_abs_pct, std::abs(x));
  }
  s.n = static_cast<int64_t>(errors_pct.size());
  if (s.n > 0) {
    s.mean_signed_pct /= static_cast<double>(s.n);
    s.mean_abs_pct /= static_cast<double>(s.n);
  }
  return s;
}

std::vector<RankingGroup> ranking_groups(const std::vector<ValidationRow>& rows) {
  std::map<std::string, std::vector<size_t>> by_key;  // sorted by key: deterministic output
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].time_metric) by_key[rows[i].ranking_group].push_back(i);
  std::vector<RankingGroup> out;
  for (auto& [key, idx] : by_key) {
    if (idx.size() < 2) continue;
    RankingGroup g;
    g.key = key;
    g.rows = idx;
    // Throughput, higher is better, on both sides.
    std::vector<double> meas, pred;
    for (size_t i : idx) {
      const ValidationRow& x = rows[i];
      meas.push_back(x.higher_is_better ? x.published : 1.0 / x.published);
      pred.push_back(x.higher_is_better ? x.predicted : 1.0 / x.predicted);
    }
    g.spearman = spearman(pred, meas);
    for (size_t a = 0; a < idx.size(); ++a)
      for (size_t b = a + 1; b < idx.size(); ++b) {
        if (meas[a] == meas[b]) continue;
        ++g.pairs;
        if ((meas[a] - meas[b]) * (pred[a] - pred[b]) > 0) ++g.pairs_ordered;
      }
    const size_t best = static_cast<size_t>(std::max_element(meas.begin(), meas.end()) - meas.begin());
    const size_t pick = static_cast<size_t>(std::max_element(pred.begin(), pred.end()) - pred.begin());
    g.measured_best = idx[best];
    g.predicted_best = idx[pick];
    g.pick_regret_pct = 100.0 * (1.0 - meas[pick] / meas[best]);
    // The heuristic: smallest TP*CP*PP among the cases predicted to fit (all if none does), then
    // the larger TP. Ties (same mesh) share the choice.
    bool any_fits = false;
    for (size_t i : idx) any_fits = any_fits || rows[i].fits;
    auto heuristic_key = [&rows](size_t i) {
      const Mesh& m = rows[i].mesh;
      return std::make_pair(m.tp * m.cp * m.pp, -m.tp);
    };
    std::pair<int64_t, int64_t> best_key{INT64_MAX, 0};
    for (size_t i : idx)
      if (!any_fits || rows[i].fits) best_key = std::min(best_key, heuristic_key(i));
    double regret_sum = 0;
    for (size_t k = 0; k < idx.size(); ++k) {
      const size_t i = idx[k];
      if ((any_fits && !rows[i].fits) || heuristic_key(i) != best_key) continue;
      g.heuristic_picks.push_back(i);
      regret_sum += 100.0 * (1.0 - meas[k] / meas[best]);
    }
    g.heuristic_regret_pct = regret_sum / static_cast<double>(g.heuristic_picks.size());
    out.push_back(std::move(g));
  }
  return out;
}

RankingSummary ranking_summary(const std::vector<RankingGroup>& groups) {
  RankingSummary s;
  for (const auto& g : groups) {
    s.mean_pick_regret_pct += g.pick_regret_pct;
    s.mean_heuristic_regret_pct += g.heuristic_regret_pct;
    s.pairs += g.pairs;
    s.pairs_ordered += g.pairs_ordered;
    if (g.rows.size() >= 3) {
      s.mean_spearman += g.spearman;
      ++s.big_groups;
    }
  }
  if (!groups.empty()) {
    s.mean_pick_regret_pct /= static_cast<double>(groups.size());
    s.mean_heuristic_regret_pct /= static_cast<double>(groups.size());
  }
  if (s.big_groups > 0) s.mean_spearman /= static_cast<double>(s.big_groups);
  return s;
}

int64_t gpu_scale_band(int64_t gpus) {
  for (const int64_t band : {int64_t{8}, int64_t{64}, int64_t{512}, int64_t{4096}})
    if (gpus <= band) return band;
  return std::numeric_limits<int64_t>::max();
}

std::string gpu_scale_label(int64_t band) {
  switch (band) {
    case 8: return "1-8";
    case 64: return "9-64";
    case 512: return "65-512";
    case 4096: return "513-4096";
    default: return ">4096";
  }
}

void summarize(ValidationReport& r) {
  std::vector<double> all;
  std::map<std::string, std::vector<double>> by_source;
  std::map<int64_t, std::vector<double>> by_tp, by_gpus;
  for (const auto& x : r.rows) {
    all.push_back(x.error_pct);
    by_source[x.source_folder].push_back(x.error_pct);
    // In throughput terms (+: predicted faster than measured) so that step times and
    // throughputs share one sign: a step time predicted x % too long is a throughput too low.
    if (x.time_metric) {
      const double speed = x.higher_is_better ? x.error_pct : 100.0 * (x.published / x.predicted - 1.0);
      by_tp[x.mesh.tp].push_back(speed);
      by_gpus[gpu_scale_band(x.mesh.world_size())].push_back(speed);
    }
  }
  const ErrorStats s = error_stats(all);
  r.mean_abs_error_pct = s.mean_abs_pct;
  r.max_abs_error_pct = s.max_abs_pct;
  r.by_source.clear();
  r.time_by_tp.clear();
  r.time_by_gpus.clear();
  for (const auto& [k, v] : by_source) r.by_source[k] = error_stats(v);
  for (const auto& [k, v] : by_tp) r.time_by_tp[k] = error_stats(v);
  for (const auto& [k, v] : by_gpus) r.time_by_gpus[k] = error_stats(v);
  r.ranking = ranking_groups(r.rows);
}

ValidationReport validate_paths(const std::vector<std::string>& paths, const std::optional<ClusterConfig>& cluster) {
  ValidationReport r;
  for (const auto& f : collect_cases(paths, &r.skipped)) {
    // Only ConfigError (bad input about this case) refuses it; anything else is a failure of
    // the command and propagates.
    Experiment e;
    try {
      e = load_experiment(f);
    } catch (const ConfigError& err) {
      if (!is_one_yaml_document(f)) throw;  // unreadable or not YAML: bad input, exit 2
      r.refused.push_back({f, "", refusal_reason(err, f)});
      continue;
    }
    if (cluster) e.cluster = *cluster;
    try {
      auto rows = validate_case(e);
      r.rows.insert(r.rows.end(), rows.begin(), rows.end());
      ++r.cases;
    } catch (const ConfigError& err) {
      r.refused.push_back({f, case_name(e), refusal_reason(err, f)});
    }
  }
  if (r.cases == 0) {
    std::string list;
    for (const auto& x : r.refused) list += fmt::format("\n  {}: {}", x.path, x.reason);
    throw bad_input(fmt::format("validate: no case could be evaluated ({} refused):{}", r.refused.size(), list));
  }
  summarize(r);
  return r;
}

namespace {

// A published or predicted figure in its quantity's format (core/format.hpp); the metric names
// are those of sim::MetricComparison.
std::string metric_text(std::string_view metric, double v) {
  if (metric == "step_time_s") return format::format_time_s(v);
  if (metric == "tflops_per_device") return format::format_flops_per_s(v * units::tflop);
  if (metric == "mfu") return format::format_pct(100.0 * v);
  if (metric == "peak_memory_gib" || metric == "peak_memory_allocated_gib") return format::format_bytes(v * units::gib_bytes);
  if (metric == "tokens_per_s_per_device") return format::format_tokens_per_s(v);
  throw Error(ErrorKind::runtime, fmt::format("validation: no format for metric '{}'", metric));
}

}  // namespace

std::vector<size_t> rows_predicted_not_to_fit(const ValidationReport& r) {
  std::vector<size_t> out;
  std::set<std::string> seen;  // one entry per case file, not per published metric
  for (size_t i = 0; i < r.rows.size(); ++i)
    if (!r.rows[i].fits && seen.insert(r.rows[i].path).second) out.push_back(i);
  return out;
}

std::string validation_text(const ValidationReport& r) {
  size_t name_w = 4, mesh_w = 4, metric_w = 6;
  for (const auto& x : r.rows) {
    name_w = std::max(name_w, x.name.size());
    mesh_w = std::max(mesh_w, mesh_text(x.mesh).size());
    metric_w = std::max(metric_w, x.metric.size());
  }
  std::string s = fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>16}  {:>16}  {:>8}\n", "case", name_w, "mesh", mesh_w,
                              "metric", metric_w, "predicted", "published", "error");
  s += std::string(name_w + mesh_w + metric_w + 52, '-') + "\n";
  for (const auto& x : r.rows)
    s += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>16}  {:>16}  {:>8}\n", x.name, name_w, mesh_text(x.mesh), mesh_w,
                     x.metric, metric_w, metric_text(x.metric, x.predicted), metric_text(x.metric, x.published),
                     format::format_error_pct(x.error_pct));
  s += fmt::format("\n{} cases evaluated, {} refused; {} comparisons: mean |error| {}, max |error| {}\n",
                   format::format_count(r.cases), format::format_count(static_cast<int64_t>(r.refused.size())),
                   format::format_count(static_cast<int64_t>(r.rows.size())),
                   format::format_abs_error_pct(r.mean_abs_error_pct), format::format_abs_error_pct(r.max_abs_error_pct));
  if (!r.refused.empty()) {
    s += fmt::format("\nrefused (not in the statistics):\n");
    for (const auto& x : r.refused) s += fmt::format("  {}: {}\n", x.path, x.reason);
  }
  if (!r.skipped.empty()) s += fmt::format("skipped {} files without a `published:` block\n", r.skipped.size());
  // Every case is a run that was measured, so it fit its GPUs: a prediction that does not fit
  // over-counts memory (a planner would refuse a layout that runs).
  const std::vector<size_t> over = rows_predicted_not_to_fit(r);
  s += fmt::format("\nmeasured runs predicted not to fit: {} of {}\n", over.size(), r.cases);
  for (size_t i : over)
    s += fmt::format("  {}: predicted {:.2f} GiB, the GPUs have {:.2f} GiB ({:+.1f} %)\n", r.rows[i].name,
                     r.rows[i].peak_memory_bytes / units::gib_bytes, r.rows[i].capacity_bytes / units::gib_bytes,
                     100.0 * (r.rows[i].peak_memory_bytes / r.rows[i].capacity_bytes - 1.0));

  // Where the error sits: by source (bias = mean signed error in each metric's own unit), and by
  // TP degree (time metrics in throughput terms: + means predicted faster than measured).
  size_t src_w = 6;
  for (const auto& [k, v] : r.by_source) src_w = std::max(src_w, k.size());
  s += fmt::format("\nby source (all metrics)\n  {:<{}}  {:>5}  {:>9}  {:>10}  {:>9}\n", "source", src_w, "rows", "bias",
                   "mean |err|", "max |err|");
  for (const auto& [k, v] : r.by_source)
    s += fmt::format("  {:<{}}  {:>5}  {:>9}  {:>10}  {:>9}\n", k, src_w, v.n, format::format_error_pct(v.mean_signed_pct),
                     format::format_abs_error_pct(v.mean_abs_pct), format::format_abs_error_pct(v.max_abs_pct));
  s += fmt::format("\nby TP degree (time metrics as throughput: + = predicted faster than measured)\n  {:>4}  {:>5}  {:>9}  {:>10}  {:>9}\n", "TP", "rows", "bias",
                   "mean |err|", "max |err|");
  for (const auto& [k, v] : r.time_by_tp)
    s += fmt::format("  {:>4}  {:>5}  {:>9}  {:>10}  {:>9}\n", k, v.n, format::format_error_pct(v.mean_signed_pct),
                     format::format_abs_error_pct(v.mean_abs_pct), format::format_abs_error_pct(v.max_abs_pct));
  s += fmt::format("\nby GPU count (time metrics as throughput)\n  {:>9}  {:>5}  {:>9}  {:>10}  {:>9}\n", "GPUs", "rows",
                   "bias", "mean |err|", "max |err|");
  for (const auto& [k, v] : r.time_by_gpus)
    s += fmt::format("  {:>9}  {:>5}  {:>9}  {:>10}  {:>9}\n", gpu_scale_label(k), v.n,
                     format::format_error_pct(v.mean_signed_pct), format::format_abs_error_pct(v.mean_abs_pct),
                     format::format_abs_error_pct(v.max_abs_pct));
  if (!r.ranking.empty()) {
    s += fmt::format("\nranking: {} groups of measured runs that differ only in layout (same model, GPUs, sequence, "
                     "batch, precision, metric)\n",
                     r.ranking.size());
    for (const auto& g : r.ranking) {
      std::string picks;
      for (size_t i : g.heuristic_picks) picks += (picks.empty() ? "" : " | ") + r.rows[i].name;
      s += fmt::format("  {}\n    {} cases, spearman {:+.2f}, pairs ordered {}/{}; model's pick {} (regret {}), "
                       "measured best {}, heuristic {} (regret {})\n",
                       g.key, g.rows.size(), g.spearman, g.pairs_ordered, g.pairs, r.rows[g.predicted_best].name,
                       format::format_abs_error_pct(g.pick_regret_pct), r.rows[g.measured_best].name, picks,
                       format::format_abs_error_pct(g.heuristic_regret_pct));
    }
    const RankingSummary sum = ranking_summary(r.ranking);
    s += fmt::format("  mean regret: model {}, heuristic {}; pairs ordered {}/{}",
                     format::format_abs_error_pct(sum.mean_pick_regret_pct),
                     format::format_abs_error_pct(sum.mean_heuristic_regret_pct), sum.pairs_ordered, sum.pairs);
    s += sum.big_groups > 0 ? fmt::format("; mean spearman over {} groups of >= 3 cases {:+.2f}\n", sum.big_groups,
                                          sum.mean_spearman)
                            : std::string("; no group of >= 3 cases\n");
  }
  return s;
}

nlohmann::json validation_json(const ValidationReport& r) {
  nlohmann::json cases = nlohmann::json::array();
  for (const auto& x : r.rows)
    cases.push_back({{"name", x.name},
                     {"metric", x.metric},
                     {"predicted", x.predicted},
                     {"published", x.published},
                     {"error_pct", x.error_pct},
                     {"path", x.path},
                     {"mesh", {{"dp", x.mesh.dp}, {"tp", x.mesh.tp}, {"cp", x.mesh.cp}, {"pp", x.mesh.pp}}},
                     {"source", x.source}});
  nlohmann::json refused = nlohmann::json::array();
  for (const auto& x : r.refused) refused.push_back({{"path", x.path}, {"name", x.name}, {"reason", x.reason}});
  auto stats_json = [](const ErrorStats& v) {
    return nlohmann::json{{"cases", v.n},
                          {"mean_signed_error_pct", v.mean_signed_pct},
                          {"mean_abs_error_pct", v.mean_abs_pct},
                          {"max_abs_error_pct", v.max_abs_pct}};
  };
  nlohmann::json by_source = nlohmann::json::object(), by_tp = nlohmann::json::object();
  for (const auto& [k, v] : r.by_source) by_source[k] = stats_json(v);
  for (const auto& [k, v] : r.time_by_tp) by_tp[std::to_string(k)] = stats_json(v);
  nlohmann::json by_gpus = nlohmann::json::object();
  for (const auto& [k, v] : r.time_by_gpus) by_gpus[gpu_scale_label(k)] = stats_json(v);
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : r.ranking) {
    nlohmann::json names = nlohmann::json::array(), picks = nlohmann::json::array();
    for (size_t i : g.rows) names.push_back(r.rows[i].name);
    for (size_t i : g.heuristic_picks) picks.push_back(r.rows[i].name);
    groups.push_back({{"key", g.key},
                      {"cases", names},
                      {"measured_best", r.rows[g.measured_best].name},
                      {"predicted_best", r.rows[g.predicted_best].name},
                      {"heuristic_pick", picks},
                      {"spearman", g.spearman},
                      {"pairs", g.pairs},
                      {"pairs_ordered", g.pairs_ordered},
                      {"pick_regret_pct", g.pick_regret_pct},
                      {"heuristic_regret_pct", g.heuristic_regret_pct}});
  }
  nlohmann::json not_fitting = nlohmann::json::array();
  for (size_t i : rows_predicted_not_to_fit(r))
    not_fitting.push_back({{"name", r.rows[i].name},
                           {"path", r.rows[i].path},
                           {"predicted_peak_gib", r.rows[i].peak_memory_bytes / units::gib_bytes},
                           {"capacity_gib", r.rows[i].capacity_bytes / units::gib_bytes}});
  const RankingSummary sum = ranking_summary(r.ranking);
  nlohmann::json ranking{{"groups", std::move(groups)},
                         {"group_count", static_cast<int64_t>(r.ranking.size())},
                         {"mean_pick_regret_pct", sum.mean_pick_regret_pct},
                         {"mean_heuristic_regret_pct", sum.mean_heuristic_regret_pct},
                         {"pairs", sum.pairs},
                         {"pairs_ordered", sum.pairs_ordered}};
  ranking["mean_spearman"] = sum.big_groups > 0 ? nlohmann::json(sum.mean_spearman) : nlohmann::json(nullptr);
  return {{"schema_version", kJsonSchemaVersion},
          {"cases", std::move(cases)},
          {"by_source", std::move(by_source)},
          {"time_by_tp", std::move(by_tp)},
          {"time_by_gpus", std::move(by_gpus)},
          {"ranking", std::move(ranking)},
          {"refused", std::move(refused)},
          {"predicted_not_to_fit", std::move(not_fitting)},
          {"mean_abs_error_pct", r.mean_abs_error_pct},
          {"max_abs_error_pct", r.max_abs_error_pct},
          {"case_count", r.cases},
          {"refused_count", static_cast<int64_t>(r.refused.size())},
          {"skipped", r.skipped}};
}

}  // namespace ringplan::planner
