// `ringplan report`: one self-contained HTML page (no network: the data is an inline JSON
// blob, the charts are drawn into inline <svg> by an inline script written here; no chart
// library) with
//   (a) the ranked candidates: step time against peak memory, with the device capacity line;
//       axes span the fitting candidates (an out-of-memory point beyond them is drawn at the
//       edge with its value), colour = CP size, shape = ZeRO stage; hovering a point (or a bar
//       of (b')) shows that layout's time and memory terms in a panel (the chosen one at first);
//   (b') the best ranked candidates (and the chosen one) as stacked bars of their time terms
//       and of their memory terms;
//   (b) the chosen plan's memory and time terms as stacked bars (sim::memory_terms/time_terms);
//   (b'') the chosen layout's peak memory by term against CP size and against sequence length
//       (memory_sweeps);
//   (c) the per-CP-rank ring timeline of one layer's forward attention: per ring step, compute
//       and exposed communication, from the cost model's per-rank schedule;
//   (d) with the JSON of `ringplan run --format json` (either scope): predicted and measured as
//       two timelines (RunComparison::timeline), and per phase or term as bars and a table.
//
// The page's script marks what it drew, for tests and for people: <body data-ringplan-charts=N>
// once N charts are drawn, each chart's <svg data-drawn=K> with K marks, and
// data-ringplan-error="..." if drawing failed.
//
// Usage: ReportData d = build_report(experiment, plan_result, run_json_or_null); write render_html(d).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "planner/planner.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::report {

// One ring step of one CP rank, as the cost model's event simulator replays it
// (sim/ring_event_sim.hpp): the rank computes attention of its queries against the K,V block
// that came from `source_rank` = (rank - step) mod CP (kernel, then the fp32 merge), while it
// sends that block on to rank + 1; then it waits until the next block has arrived (and its
// neighbours have posted), which is the communication its compute did not hide.
struct RingStep {
  int64_t source_rank = 0;
  double start_s = 0;     // compute starts, from the start of the layer's forward
  double compute_s = 0;   // kernel + merge (0 for a block with no visible pair: skipped)
  double comm_s = 0;      // sending the block in hand to rank + 1 (0 on the last step)
  double exposed_s = 0;   // waiting after this step's compute until the next step can start
};
struct RingRank {
  int64_t rank = 0;                // CP rank
  std::vector<RingStep> steps;     // steps[s], s = 0 .. CP-1
};

struct RingTimeline {
  std::string scope;               // what one bar covers, e.g. "one layer, forward, one micro-batch"
  std::vector<RingRank> ranks;     // empty when CP = 1 or cp_comm allgather (no ring)
};

// One compared quantity of a run. `ringplan run --format json` writes them as
//   rows: [{name, predicted_s, measured_median_s, measured_min_s, measured_max_s, ...}]
// (cli/cmd_run.cpp; `--scope step` writes step_time {...} and terms [{name, predicted_s,
// measured_s}] instead, read as the row "step" then one row per term); a plainer
// {phases: [{phase|name, predicted_s, measured_s}]} list or {phases: {name: {...}}} object is
// accepted too.
struct PhaseComparison {
  std::string phase;
  std::optional<double> predicted_s;
  std::optional<double> measured_s;                  // median over iterations
  std::optional<double> measured_min_s, measured_max_s;
};

// A memory figure of a run: the pair measured_<name>_bytes / predicted_<name>_bytes of the
// run's "memory" object.
struct MemoryComparison {
  std::string name;
  std::optional<double> predicted_bytes;
  std::optional<double> measured_bytes;
};

struct RunComparison {
  std::string source;                       // file it came from
  std::string description;                  // what the run covers (run's "validates")
  std::string summary;                      // e.g. "4 ranks, 5 iterations, profile local_cpu"
  std::vector<PhaseComparison> phases;
  // The parts of the run that follow one another, predicted and measured (the page draws them as
  // two timelines on one axis): `run --scope step`: its terms; `--scope attention`: per phase
  // the slowest rank's compute, then the exposed communication.
  std::vector<PhaseComparison> timeline;
  std::vector<MemoryComparison> memory;
  std::optional<Mesh> mesh;                 // the layout the run executed, where it says
};

// Peak memory of the chosen layout as one parameter varies (the page's memory-vs-CP and
// memory-vs-sequence-length charts): by CP, the chosen TP, PP and options with every CP size
// that divides DP x CP (DP takes the rest); by sequence length, the chosen layout at 1/8 .. 8
// times the experiment's. Only layouts sim::check_layout accepts; each a full prediction.
struct MemorySweeps {
  std::vector<std::pair<int64_t, sim::Prediction>> by_cp, by_seq_len;
};
MemorySweeps memory_sweeps(const Experiment& e, const sim::Prediction& chosen);

struct ReportData {
  Experiment experiment;
  std::vector<sim::Prediction> candidates;            // ranked, best first; fitting ones
  std::optional<sim::Prediction> closest_out_of_memory;
  size_t chosen = 0;                                  // index into candidates
  int64_t enumerated = 0, evaluated = 0, fitting = 0;
  std::vector<planner::Rejection> rejected;
  RingTimeline ring;                                  // of candidates[chosen]
  std::optional<RunComparison> run;
};

// Per-rank ring schedule of the plan's layer forward: sim::simulate_ring with the plan's
// per-device shapes (heads / TP, micro-batch, sequence, scheme, dtype, the CP group's link).
RingTimeline ring_timeline(const Experiment& e, const sim::Prediction& p);

// Reads the JSON written by `ringplan run --format json`. Throws ringplan::Error (bad_input)
// naming `source` and the field when it is not such a document.
RunComparison parse_run_result(const nlohmann::json& run, const std::string& source);
RunComparison load_run_result(const std::string& path);  // + file and JSON syntax errors

// Runs the planner's result into report data. Throws bad_input when nothing fits (with the
// planner's explanation).
ReportData build_report(const Experiment& e, const planner::PlanResult& r);

// The JSON embedded in the page (what the script draws); exposed for tests.
nlohmann::json report_json(const ReportData& d);
// The whole page. Throws bad_input when d has no candidate or `chosen` is out of range.
std::string render_html(const ReportData& d);

}  // namespace ringplan::report
