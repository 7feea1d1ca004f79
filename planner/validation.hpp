// Validation of the cost model against published runs (`ringplan validate`).
//
// A case is an experiment with a fixed mesh and a `published:` block. Each published metric
// present (step_time_s, tflops_per_device, mfu, peak_memory_gib, peak_memory_allocated_gib,
// tokens_per_s_per_device) is
// compared with the prediction (sim::compare_published, shared with `ringplan fit`):
// error_pct = 100 * (predicted - published) / published (signed: + means the model predicts
// more than was measured). Nothing is fitted to the published figures here.
//
// Every case is evaluated or refused, never dropped: a case that loads as YAML but cannot be
// compared (the experiment is invalid, it has no fixed mesh or no published metric, or
// sim::check_layout() refuses its layout) is listed in ValidationReport::refused with the
// reason, and the other cases are still evaluated. The statistics cover the evaluated cases.
// validate_paths() fails (throws bad input) only when the command as a whole cannot give a
// result:
//   * no path given, a path that does not exist, no case found;
//   * a case file that cannot be read or is not one parseable YAML document (syntax error,
//     several documents, empty): the file may not even be a case, so nothing can be said of it;
//   * not a single case could be evaluated (every case refused): there is no number to report.
#pragma once
#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

// One published metric of one evaluated case.
struct ValidationRow {
  std::string name;    // case name (experiment name, else file path)
  std::string metric;  // step_time_s | tflops_per_device | mfu | peak_memory_gib | peak_memory_allocated_gib |
                       // tokens_per_s_per_device
  double predicted = 0;
  double published = 0;
  double error_pct = 0;
  std::string path;    // file the case was loaded from (Experiment::path)
  Mesh mesh;           // the case's fixed mesh
  std::string source;  // Published::source: where the published figure comes from
  // The folder the case file lies in (the corpus groups cases by source that way; `ringplan fit
  // --holdout` names the same folders).
  std::string source_folder;
  // Runs that differ only in layout (mesh and options) share a ranking group: same model,
  // cluster, GPU count, sequence length, global batch, precision and metric (ranking_groups()).
  std::string ranking_group;
  bool time_metric = false;  // the metric depends on the step time (all but the two peak memories)
  bool higher_is_better = true;  // false for step_time_s
  bool fits = true;          // the prediction fits the device memory (the heuristic baseline needs it)
  double peak_memory_bytes = 0;  // predicted peak per device of the case's layout
  double capacity_bytes = 0;     // the device memory it is compared with
  ParallelOptions options;   // the case's options (the heuristic breaks no ties on them)
};

// A case that was found but could not be evaluated.
struct RefusedCase {
  std::string path;    // the case file
  std::string name;    // as ValidationRow::name; empty when the file did not load as an experiment
  std::string reason;  // what is wrong, without the file name when it is `path` itself
};

// Signed errors summarised: the bias (mean signed error) tells whether a group of cases is
// predicted systematically too fast or too slow, which the mean |error| hides.
struct ErrorStats {
  int64_t n = 0;
  double mean_signed_pct = 0;
  double mean_abs_pct = 0;
  double max_abs_pct = 0;
};
ErrorStats error_stats(const std::vector<double>& errors_pct);

// One group of measured runs of the same job in different layouts (ValidationRow::ranking_group)
// with at least two cases. Throughput = the metric (step_time_s inverted: higher is better).
//   spearman: rank correlation of predicted and measured throughput (average ranks for ties;
//     0 when either side is constant);
//   pairs_ordered / pairs: pairs of cases with different measured throughput that the model orders
//     the same way (defined for groups of two as well);
//   pick_regret_pct: 100 * (1 - measured(case the model ranks first) / measured best), what
//     following the model's ranking costs against the best layout measured;
//   heuristic_regret_pct: the same for the Megatron-LM rule of thumb: of the cases the model says
//     fit in memory, the smallest model-parallel product TP*CP*PP, TP filled before PP (larger TP
//     first at equal product); cases it cannot tell apart (same mesh, other options) count with
//     their mean regret, the expected cost of a choice among them.
struct RankingGroup {
  std::string key;
  std::vector<size_t> rows;  // indices into ValidationReport::rows
  double spearman = 0;
  int64_t pairs = 0, pairs_ordered = 0;
  double pick_regret_pct = 0;
  double heuristic_regret_pct = 0;
  size_t measured_best = 0, predicted_best = 0;  // indices into ValidationReport::rows
  std::vector<size_t> heuristic_picks;           // the heuristic's choice (several when tied)
};
std::vector<RankingGroup> ranking_groups(const std::vector<ValidationRow>& rows);

// Over the groups: mean regrets, ordered pairs in total, mean Spearman over the groups of >= 3
// cases (groups of two only say whether one pair is ordered; big_groups 0: no such group).
struct RankingSummary {
  double mean_pick_regret_pct = 0, mean_heuristic_regret_pct = 0, mean_spearman = 0;
  int64_t pairs = 0, pairs_ordered = 0, big_groups = 0;
};
RankingSummary ranking_summary(const std::vector<RankingGroup>& groups);

struct ValidationReport {
  std::vector<ValidationRow> rows;   // evaluated cases, one row per published metric
  std::vector<RefusedCase> refused;  // cases found but not evaluated, in file order
  std::vector<std::string> skipped;  // files found in folders that have no `published:` block
  double mean_abs_error_pct = 0;     // over all rows (evaluated cases only)
  double max_abs_error_pct = 0;
  int64_t cases = 0;                 // evaluated cases
  // Filled by summarize(): every row by source folder (signed errors in each metric's unit); the
  // time metrics by TP degree in throughput terms (+: predicted faster than measured; a step time
  // predicted x % long counts 100 (1/(1 + x/100) - 1) %), where a bias of the TP terms shows; the
  // ranking groups.
  std::map<std::string, ErrorStats> by_source;
  std::map<int64_t, ErrorStats> time_by_tp;
  // The time metrics (same terms) by the run's GPU count, in the scale bands of
  // gpu_scale_band(): whether a profile fitted at one scale holds at another.
  std::map<int64_t, ErrorStats> time_by_gpus;
  std::vector<RankingGroup> ranking;
};

// Scale band of a run on `gpus` GPUs, keyed by its upper bound: 8 (one node of 8 GPUs or less),
// 64, 512, 4096, and INT64_MAX above that. gpu_scale_label(band): "1-8", "9-64", "65-512",
// "513-4096", ">4096".
int64_t gpu_scale_band(int64_t gpus);
std::string gpu_scale_label(int64_t band);

// Files to validate: each path is a file (must be a case) or a folder searched recursively
// for *.yaml / *.yml. A file found in a folder without a top-level `published:` key is not a
// case (model, cluster or plain experiment files live beside cases) and goes to `skipped`.
// A file reached twice (named twice, or named and inside a folder given) is kept once, where it
// first appears. Throws bad input for a path that does not exist, or when no case is found at all; the message
// starts with `command` (the CLI command reading the cases: validate, fit).
std::vector<std::string> collect_cases(const std::vector<std::string>& paths, std::vector<std::string>* skipped,
                                       const char* command = "validate");

// Rows of one case. Throws ConfigError when the experiment has no fixed mesh or no published
// metric, or when check_layout() rejects its layout (validate_paths() turns these into
// refusals).
std::vector<ValidationRow> validate_case(const Experiment& e);

// Loads and validates every case of collect_cases(paths); see the top of this file for what is
// refused and what throws.
// With `cluster` set, every case is predicted on that profile instead of its own (a profile
// written by `ringplan fit`, say); the case's layout checks use it too.
ValidationReport validate_paths(const std::vector<std::string>& paths,
                                const std::optional<ClusterConfig>& cluster = std::nullopt);

// Mean and max |error_pct| of rows (0 when empty), by_source, time_by_tp, time_by_gpus and ranking.
void summarize(ValidationReport& r);

// Rows (one per case file) whose layout the cost model predicts not to fit its GPUs. Every case
// is a measured run, which fit: each of these over-counts memory.
std::vector<size_t> rows_predicted_not_to_fit(const ValidationReport& r);
std::string validation_text(const ValidationReport& r);
// {schema_version (kJsonSchemaVersion),
//  cases: [{name, metric, predicted, published, error_pct, path, mesh: {dp, tp, cp, pp}, source}],
//  refused: [{path, name, reason}],
//  predicted_not_to_fit: [{name, path, predicted_peak_gib, capacity_gib}] (rows_predicted_not_to_fit),
//  mean_abs_error_pct, max_abs_error_pct,
//  case_count (evaluated cases), refused_count, skipped: [paths],
//  by_source: {folder: {cases, mean_signed_error_pct, mean_abs_error_pct, max_abs_error_pct}},
//  time_by_tp: {"1": {...same...}, ...},
//  time_by_gpus: {"1-8": {...same...}, "9-64": ..., ...} (gpu_scale_label),
//  ranking: {groups: [{key, cases: [names], measured_best, predicted_best, heuristic_pick, spearman,
//            pairs, pairs_ordered, pick_regret_pct, heuristic_regret_pct}], group_count,
//            mean_spearman (groups of >= 3), mean_pick_regret_pct, mean_heuristic_regret_pct,
//            pairs, pairs_ordered}}
nlohmann::json validation_json(const ValidationReport& r);

}  // namespace ringplan::planner
