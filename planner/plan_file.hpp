// Plan files (PLAN.yaml): the layout chosen by `ringplan plan -o PLAN.yaml`, self-contained,
// for `ringplan run PLAN.yaml` and for `ringplan simulate PLAN.yaml`.
//
// Layout (top-level mapping):
//   ringplan_plan: 1                  # format version
//   experiment: {...}                 # core's write_plan_header(): model, cluster, training
//                                     # inlined, with the chosen mesh and options fixed
//   prediction:                       # what sim::predict said when the plan was made
//     step_time_s, tokens_per_s, tflops_per_device, mfu, peak_memory_gib, capacity_gib,
//     micro_batches, fits
//   # end of ringplan plan            # last line: a file without it was cut short and is refused
//
// Because the experiment is under `experiment:`, core's load_experiment(path) reads a plan
// file as an ordinary experiment with a fixed mesh.
#pragma once
#include <cstdint>
#include <string>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

inline constexpr int kPlanFileVersion = 1;
// Version of the JSON documents of plan, simulate and run (their top-level `schema_version`):
// raised when a field is removed or changes meaning (adding a field keeps it).
//   2: plan's `best` is the chosen layout (was the fastest, now `fastest`).
inline constexpr int kJsonSchemaVersion = 2;

// The predicted figures stored in a plan file (units in names, memory in bytes here).
struct PlannedFigures {
  double step_time_s = 0;
  double tokens_per_s = 0;
  double tflops_per_device = 0;
  double mfu = 0;
  double peak_memory_bytes = 0;
  double capacity_bytes = 0;
  int64_t micro_batches = 0;
  bool fits = false;
};

struct PlanFile {
  Experiment experiment;     // mesh set (always) and options set as planned
  PlannedFigures predicted;
  std::string path;
  int prediction_line = 0;   // line of `prediction:` in the file
};

PlannedFigures planned_figures(const sim::Prediction& p);

// Text of a plan file for experiment `e` run with p.mesh and p.options.
std::string plan_file_yaml(const Experiment& e, const sim::Prediction& p);
// Writes plan_file_yaml() to `path` whole or not at all (core/atomic_file.hpp). Throws
// ringplan::Error (runtime) if it cannot be written.
void write_plan_file(const std::string& path, const Experiment& e, const sim::Prediction& p);

// Reads a plan file. Throws ConfigError (bad input) naming file, line and field for a missing
// file, a file cut short (no end marker), a missing or newer `ringplan_plan` version, a
// missing `experiment:` or mesh, or a missing/ill-typed `prediction:` figure.
PlanFile read_plan_file(const std::string& path);

// The recorded figures of `plan` that differ from sim::predict of its experiment made now
// ("mfu 7.5 (its layout: 0.518), ..."); empty when every figure agrees to a relative 1e-6 and the
// counts exactly. A plan written by `ringplan plan` agrees, so a difference means the file was
// edited after it was written (a mesh, a size, a figure) or written by a ringplan with another
// cost model: its figures then describe some other layout. A layout sim cannot predict
// (check_layout) is reported as such. Commands that run a plan print this as a note.
std::string prediction_mismatch(const PlanFile& plan);

// An experiment file (core's load_experiment), or a plan file read with every check of
// read_plan_file (version, end marker, prediction), returning its experiment. Commands that
// accept both (simulate, plan, report) use this, so a damaged plan is never half-read.
Experiment load_experiment_or_plan(const std::string& path);

}  // namespace ringplan::planner
