// Validation of the cost model against published runs (`ringplan validate`).
//
// A case is an experiment with a fixed mesh and a `published:` block. Each published metric
// present (step_time_s, tflops_per_device, mfu, peak_memory_gib, tokens_per_s_per_device) is
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
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

// One published metric of one evaluated case.
struct ValidationRow {
  std::string name;    // case name (experiment name, else file path)
  std::string metric;  // step_time_s | tflops_per_device | mfu | peak_memory_gib | tokens_per_s_per_device
  double predicted = 0;
  double published = 0;
  double error_pct = 0;
  std::string path;    // file the case was loaded from (Experiment::path)
  Mesh mesh;           // the case's fixed mesh
  std::string source;  // Published::source: where the published figure comes from
};

// A case that was found but could not be evaluated.
struct RefusedCase {
  std::string path;    // the case file
  std::string name;    // as ValidationRow::name; empty when the file did not load as an experiment
  std::string reason;  // what is wrong, without the file name when it is `path` itself
};

struct ValidationReport {
  std::vector<ValidationRow> rows;   // evaluated cases, one row per published metric
  std::vector<RefusedCase> refused;  // cases found but not evaluated, in file order
  std::vector<std::string> skipped;  // files found in folders that have no `published:` block
  double mean_abs_error_pct = 0;     // over all rows (evaluated cases only)
  double max_abs_error_pct = 0;
  int64_t cases = 0;                 // evaluated cases
};

// Files to validate: each path is a file (must be a case) or a folder searched recursively
// for *.yaml / *.yml. A file found in a folder without a top-level `published:` key is not a
// case (model, cluster or plain experiment files live beside cases) and goes to `skipped`.
// Throws bad input for a path that does not exist, or when no case is found at all.
std::vector<std::string> collect_cases(const std::vector<std::string>& paths, std::vector<std::string>* skipped);

// Rows of one case. Throws ConfigError when the experiment has no fixed mesh or no published
// metric, or when check_layout() rejects its layout (validate_paths() turns these into
// refusals).
std::vector<ValidationRow> validate_case(const Experiment& e);

// Loads and validates every case of collect_cases(paths); see the top of this file for what is
// refused and what throws.
ValidationReport validate_paths(const std::vector<std::string>& paths);

// Mean and max |error_pct| of rows (0 when empty).
void summarize(ValidationReport& r);

std::string validation_text(const ValidationReport& r);
// {cases: [{name, metric, predicted, published, error_pct, path, mesh: {dp, tp, cp, pp}, source}],
//  refused: [{path, name, reason}], mean_abs_error_pct, max_abs_error_pct,
//  case_count (evaluated cases), refused_count, skipped: [paths]}
nlohmann::json validation_json(const ValidationReport& r);

}  // namespace ringplan::planner
