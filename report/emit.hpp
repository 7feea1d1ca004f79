// Emit a chosen plan as launch settings of a training framework:
//   Megatron-LM  command-line flags of pretrain_gpt.py
//   torchtitan   TOML sections ([parallelism], [activation_checkpoint], [training], [model])
//
// The mapping of each plan field to a flag, and what each framework cannot express, is in
// docs/emit.md. Whatever a framework cannot express exactly is never dropped silently: it
// becomes a note, printed as a "# note:" comment line above the settings.
//
// Usage (e.g. `ringplan plan --emit megatron`, `ringplan emit plan.yaml --format torchtitan`):
//   std::string text = report::emit_plan(report::Format::megatron, experiment, prediction);
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::report {

enum class Format { megatron, torchtitan };
const char* to_string(Format f);
std::optional<Format> parse_format(const std::string& s);  // "megatron" | "torchtitan"
std::vector<std::string> format_names();

// A framework's settings for one plan, before formatting.
struct Emitted {
  // Megatron: argv entries in order ("--tensor-model-parallel-size", "2", "--bf16", ...).
  // torchtitan: TOML lines in order, section headers included ("[parallelism]", "key = value").
  std::vector<std::string> settings;
  // What the framework cannot express exactly, and what was emitted instead.
  std::vector<std::string> notes;
};

// Throws ringplan::Error (bad_input) when the plan is inconsistent with the experiment (e.g.
// global batch not divisible by DP x micro-batch) or not expressible at all.
Emitted megatron_settings(const Experiment& e, const sim::Prediction& p);
Emitted torchtitan_settings(const Experiment& e, const sim::Prediction& p);

// The text printed by `--emit`: a header comment naming the plan and its prediction, the
// notes as "# note: ..." lines, then the settings (Megatron: one "--flag value \" per line,
// the last line without the backslash; torchtitan: the TOML lines).
std::string emit_plan(Format format, const Experiment& e, const sim::Prediction& p);

}  // namespace ringplan::report
