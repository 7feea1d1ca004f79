// Emit a chosen plan as a launch of a training framework:
//   Megatron-LM  a bash script: environment lines, the plan's pretrain_gpt.py arguments as a
//                bash array, run settings from the environment, then torchrun;
//   torchtitan   --target python: a Python config module (a function returning Trainer.Config,
//                the configuration system of torchtitan since February 2026);
//                --target toml: a job-config TOML for torchtitan v0.2.x, the last TOML releases.
//
// Every flag and key was checked against the pinned framework sources named below (the
// versions are printed in the emitted header too). The mapping of each plan field, and what a
// framework cannot express, is in docs/emit.md. Whatever a framework cannot express exactly is
// never dropped silently: it becomes a note ("# note:" comment); what cannot be launched at all
// (e.g. a pipeline split the framework's stage arithmetic rejects) is an error.
//
// Usage (`ringplan emit PLAN.yaml --format megatron|torchtitan [--target python|toml]`):
//   std::string text = report::emit_plan(report::Format::megatron, experiment, prediction);
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::report {

// The framework versions the emitted settings were verified against (read from the sources).
// Megatron-LM: megatron/training/arguments.py (and argument_utils.py, whose dataclass-generated
// flags are part of the same parser) at release tag core_v0.19.0.
inline constexpr const char* kMegatronVersion = "core_v0.19.0";
inline constexpr const char* kMegatronCommit = "5be9626709af2722333bf54797c954c09edeada3";
// torchtitan main after the "TOML to Python Dataclass Registry" refactor (#2386):
// torchtitan/config/configs.py, trainer.py, models/llama3/{__init__,config_registry}.py,
// distributed/{pipeline_parallel,activation_checkpoint}.py.
inline constexpr const char* kTorchtitanPythonCommit = "b5bcd76c66d0acb1a08b176d9639425bc55e0b2a";
// torchtitan v0.2.2, the release right before that refactor: torchtitan/config/job_config.py,
// models/llama3/__init__.py, distributed/pipeline_parallel.py.
inline constexpr const char* kTorchtitanTomlVersion = "v0.2.2";
inline constexpr const char* kTorchtitanTomlCommit = "73a0e6979dd10b6b1904098eb3c8f62c18ab87ce";

enum class Format { megatron, torchtitan };
const char* to_string(Format f);
std::optional<Format> parse_format(const std::string& s);  // "megatron" | "torchtitan"
std::vector<std::string> format_names();

// torchtitan's configuration system: python = current main (Python config module);
// toml = v0.2.x job config TOML.
enum class TorchtitanTarget { python, toml };
const char* to_string(TorchtitanTarget t);
std::optional<TorchtitanTarget> parse_torchtitan_target(const std::string& s);  // "python" | "toml"
std::vector<std::string> torchtitan_target_names();

// ---------------------------------------------------------------------------------------------
// Megatron-LM

struct MegatronLaunch {
  // The plan's pretrain_gpt.py arguments in order ("--tensor-model-parallel-size", "8", ...):
  // model architecture, parallel layout, batch, recompute, optimizer sharding, precision.
  std::vector<std::string> args;
  // Run settings that are not part of the plan, as argv tokens whose values may be shell
  // expansions of environment variables with defaults ("--train-iters", "\"$TRAIN_ITERS\"").
  std::vector<std::string> run_args;
  // Data arguments: synthetic tokens with the plan's vocabulary (the default, so the script
  // runs as written), or a dataset and tokenizer when DATA_PATH is set.
  std::vector<std::string> mock_data_args;
  std::vector<std::string> real_data_args;
  // Shell lines setting the environment Megatron-LM asserts on (CUDA_DEVICE_MAX_CONNECTIONS),
  // each preceded by a comment line saying why.
  std::vector<std::string> env;
  std::vector<std::string> notes;
};

// Throws ringplan::Error (bad_input) when the plan is inconsistent with the experiment (e.g.
// global batch not divisible by DP x micro-batch) or not launchable (e.g. interleaving that
// does not divide the layers).
MegatronLaunch megatron_launch(const Experiment& e, const sim::Prediction& p);

// ---------------------------------------------------------------------------------------------
// torchtitan

using TorchtitanValue =
    std::variant<int64_t, bool, std::string, double, std::vector<std::string>, std::vector<std::vector<std::string>>>;
// One configuration field: TOML `[section] key = value`, Python `config.section.key = value`.
// For the Python target, section "parallelism" fields become ParallelismConfig(...) arguments.
struct TorchtitanSetting {
  std::string section;
  std::string key;
  TorchtitanValue value;
};

struct TorchtitanConfig {
  TorchtitanTarget target = TorchtitanTarget::python;
  std::string flavor;  // a key of torchtitan's llama3 flavor table ("8B", "70B", ...)
  // python: the config_registry function the module starts from ("llama3_8b").
  std::string base_function;
  // python: the activation-checkpoint policy, "None", "FullAC.Config()" or "SelectiveAC.Config()"
  // (toml: [activation_checkpoint] mode is among the settings).
  std::string activation_checkpoint;
  // python: the model_spec expression (model_registry of the flavor, with the Float8 converter
  // for training.fp8), written over the base recipe's so that its converters do not decide it.
  std::string model_spec;
  // python: the model_spec expression uses Float8LinearConverter (imported from
  // torchtitan.components.quantization).
  bool float8_converter = false;
  std::vector<TorchtitanSetting> settings;
  std::vector<std::string> notes;
};

// Throws ringplan::Error (bad_input) when the plan is inconsistent, the model is none of
// torchtitan's llama3 flavors at that version (the message lists them), or the pipeline cannot
// satisfy torchtitan's stage arithmetic.
TorchtitanConfig torchtitan_config(const Experiment& e, const sim::Prediction& p, TorchtitanTarget target);

// A TOML basic string for s, written by toml++ (quotes, backslashes and control characters
// escaped), e.g. a"b -> "a\"b".
std::string toml_string(const std::string& s);
// A Python string literal for s (double-quoted; backslash, quote and control characters escaped).
std::string python_string(const std::string& s);

// ---------------------------------------------------------------------------------------------

struct EmitOptions {
  TorchtitanTarget torchtitan_target = TorchtitanTarget::python;
};

// The text printed by `ringplan emit`: comment lines naming the plan, its prediction, the
// pinned framework version and the notes, then
//   megatron:   a bash script that runs as written (comments never inside the continued command);
//   torchtitan: the Python module (target python) or the TOML document (target toml).
std::string emit_plan(Format format, const Experiment& e, const sim::Prediction& p, const EmitOptions& options = {});

}  // namespace ringplan::report
