// Reports of predictions and plans, as text tables (for people) and JSON (for scripts).
// Text and JSON use the same term names as sim::memory_terms / sim::time_terms.
//
// JSON of one prediction (simulate, and each entry of plan's candidates):
//   {step_time_s, tokens_per_s, tflops_per_device, mfu, peak_memory_bytes, capacity_bytes,
//    memory:{<term>_bytes...}, time:{<term>_s...}, mesh:{dp,tp,cp,pp},
//    options:{micro_batch, recompute, zero_stage, sequence_parallel, cp_scheme, interleave,
//             attention, cp_comm}, micro_batches, fits}
// JSON of a plan: {best: <prediction> or null, candidates:[<prediction>...],
//   rejected:[{reason, count, example}], evaluated, enumerated, fitting, gpus}
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/config.hpp"
#include "planner/planner.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

nlohmann::json mesh_json(const Mesh& m);
nlohmann::json options_json(const ParallelOptions& o);
nlohmann::json prediction_json(const sim::Prediction& p);
nlohmann::json plan_json(const PlanResult& r);

// "dp=8 tp=8 cp=16 pp=16"
std::string mesh_text(const Mesh& m);
// The options that matter for this mesh, e.g. "mb=1 rc=selective zero=1 sp zigzag v=2 flash":
// SP only with TP > 1, the CP scheme only with CP > 1, interleave only with PP > 1.
std::string options_text(const Mesh& m, const ParallelOptions& o);
// "71.2 / 80.0 GiB"
std::string memory_text(double used_bytes, double capacity_bytes);

// Top-K table: rank, mesh, options, step time, tokens/s, TFLOP/s per device, MFU, memory.
std::string top_table(const PlanResult& r);
// One layout: headline figures, then memory and time term by term (with shares of the peak
// and of the step time).
std::string prediction_text(const Experiment& e, const sim::Prediction& p);
// Rejections: count, category and one example each.
std::string rejection_text(const PlanResult& r);
// Whole `ringplan plan` text report: header, top-K, chosen plan breakdown, rejections.
std::string plan_text(const Experiment& e, const PlanResult& r);

}  // namespace ringplan::planner
