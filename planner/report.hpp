// Reports of predictions and plans, as text tables (for people) and JSON (for scripts).
// Text and JSON use the same term names as sim::memory_terms / sim::time_terms; text numbers
// are in the format of their quantity (core/format.hpp), with the unit beside each value.
//
// JSON of one prediction (simulate, and each entry of plan's candidates):
//   {step_time_s, tokens_per_s, tflops_per_device, mfu, peak_memory_bytes, capacity_bytes,
//    memory:{<term>_bytes...}, time:{<term>_s...}, mesh:{dp,tp,cp,pp},
//    (every *_bytes a whole number: bytes_json),
//    options:{micro_batch, recompute, zero_stage, sequence_parallel, cp_scheme, interleave,
//             attention, cp_comm}, micro_batches, fits}
// JSON of a plan: {schema_version (2), chosen: <prediction> (the recommended layout,
//   PlanResult::chosen: the simplest of the first ranking group, what `plan -o` writes) or null,
//   best: the same as chosen (an alias; schema_version 1 had the fastest here),
//   fastest: <prediction> (candidates[0], the shortest predicted step) or null,
//   candidates:[<prediction> + group...] (full ranked list, each with its ranking group),
//   ranking:{band, band_reason, chosen_rank (0: below the top K), reason, top_group_size},
//   fixed_layout: "mesh fixed by ..." or null,
//   rejected:[{reason (numbers as '#', for grouping), count, example}], evaluated, enumerated, fitting, gpus}
// simulate and run add schema_version to their top-level objects too.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/config.hpp"
#include "planner/plan_file.hpp"  // kJsonSchemaVersion
#include "planner/planner.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

// Label of a term in text tables: the JSON name without its unit suffix, words spaced
// ("weights_bytes" -> "weights", "ring_comm_exposed_s" -> "ring comm exposed").
std::string term_label(std::string_view json_name);

// A byte count for JSON: the nearest whole number, as an integer (format::whole_bytes). A
// prediction beyond int64_t (sizes near their 2^31 limits multiply past 2^63) is written as the
// whole number in a double; a non-finite one throws (format::whole_bytes), as it is a bug.
nlohmann::json bytes_json(double bytes);

nlohmann::json mesh_json(const Mesh& m);
nlohmann::json options_json(const ParallelOptions& o);
nlohmann::json prediction_json(const sim::Prediction& p);
// fixed_layout: fixed_layout_text() of a search with PlanSettings::fixed_layout ("" otherwise).
nlohmann::json plan_json(const PlanResult& r, const std::string& fixed_layout = "");

// "dp=4 tp=8 cp=16 pp=8"
std::string mesh_text(const Mesh& m);
// The options that matter for this mesh, e.g. "mb=1 rc=selective zero=1 sp zigzag v=2 flash":
// SP only with TP > 1, the CP scheme only with CP > 1, interleave only with PP > 1.
std::string options_text(const Mesh& m, const ParallelOptions& o);
// What the headers of `plan` and `simulate` add after the batch: ", <named flash kernel>" where
// `flash` runs and the kernel is not the profile's standard one, ", full recompute stops before
// the MLP down projection" where `full_recompute` runs early-stopped; "" otherwise.
std::string training_header_notes(const TrainingConfig& t, bool flash, bool full_recompute);
// "71.2 GiB / 80 GiB" (format::format_bytes of each)
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
