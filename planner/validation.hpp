// Validation of the cost model against published runs (`ringplan validate`).
//
// A case is an experiment with a fixed mesh and a `published:` block. Each published metric
// present (step_time_s, tflops_per_device, mfu, peak_memory_gib) is compared with the
// prediction: error_pct = 100 * (predicted - published) / published (signed: + means the model
// predicts more than was measured). Nothing is fitted to the published figures here.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

struct ValidationRow {
  std::string name;    // case name (experiment name, else file path)
  std::string metric;  // step_time_s | tflops_per_device | mfu | peak_memory_gib
  double predicted = 0;
  double published = 0;
  double error_pct = 0;
};

struct ValidationReport {
  std::vector<ValidationRow> rows;
  std::vector<std::string> skipped;  // files found in folders that have no `published:` block
  double mean_abs_error_pct = 0;     // over all rows
  double max_abs_error_pct = 0;
  int64_t cases = 0;
};

// Files to validate: each path is a file (must be a case) or a folder searched recursively
// for *.yaml / *.yml. A file found in a folder without a top-level `published:` key is not a
// case (model, cluster or plain experiment files live beside cases) and goes to `skipped`.
// Throws bad input for a path that does not exist, or when no case is found at all.
std::vector<std::string> collect_cases(const std::vector<std::string>& paths, std::vector<std::string>* skipped);

// Rows of one case. Throws ConfigError when the experiment has no fixed mesh or no published
// metric, or when check_layout() rejects its layout.
std::vector<ValidationRow> validate_case(const Experiment& e);

// Loads and validates every case of collect_cases(paths).
ValidationReport validate_paths(const std::vector<std::string>& paths);

// Mean and max |error_pct| of rows (0 when empty).
void summarize(ValidationReport& r);

std::string validation_text(const ValidationReport& r);
// {cases:[{name, metric, predicted, published, error_pct}], mean_abs_error_pct, max_abs_error_pct}
nlohmann::json validation_json(const ValidationReport& r);

}  // namespace ringplan::planner
