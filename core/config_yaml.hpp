// Loading, validating and writing the YAML configs (schema: configs/README.md).
//
// Every loader either returns a fully valid config or throws ringplan::ConfigError naming the
// file, the 1-based line, the field path (e.g. "cluster.intra_node.bandwidth_gbps") and what
// would be valid. No required field is ever defaulted silently; optional fields and their
// defaults are listed in configs/README.md.
//
// Files state units in key names (peak_tflops, memory_gib, bandwidth_gbps = GB/s, latency_us,
// half_tflop); the structs of core/config.hpp hold SI base units (FLOP/s, bytes, bytes/s, s).
//
// Plan files: write_plan_header() embeds a fully inlined experiment under the key
// `experiment:`; load_experiment() accepts such a file (all other top-level keys of a plan file
// belong to the planner and are ignored here), so `ringplan run plan.yaml` needs no other file.
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"

namespace ringplan {

// Standalone files: the top-level mapping holds the fields directly (name, layers, ...).
ModelConfig load_model(const std::string& path);
ClusterConfig load_cluster(const std::string& path);
TrainingConfig load_training(const std::string& path);

// An experiment file, or a plan file with an `experiment:` mapping at the top level.
// model/cluster/training are each a path (relative to the folder of the file that names it) or
// an inline mapping. Sets Experiment::path to `path`.
Experiment load_experiment(const std::string& path);

// Same as load_experiment, from text. `file_label` is used in error messages and as
// Experiment::path; relative references resolve against `base_dir`.
Experiment parse_experiment(const std::string& yaml_text, const std::string& file_label,
                            const std::string& base_dir = ".");

// Building blocks for files that embed configs (the planner's plan files): read one mapping
// node. `field` is the path of the node used in error messages ("model", "experiment.model").
ModelConfig model_from_yaml(const YAML::Node& node, const std::string& file, const std::string& field);
ClusterConfig cluster_from_yaml(const YAML::Node& node, const std::string& file, const std::string& field);
TrainingConfig training_from_yaml(const YAML::Node& node, const std::string& file, const std::string& field);
Experiment experiment_from_yaml(const YAML::Node& node, const std::string& file, const std::string& base_dir,
                                const std::string& field);

// A ConfigError (bad input) about `key` of `e` ("mesh.tp", "model.head_dim", "mesh"): at the
// file and line it was read from (Experiment::sources); at e.path, line 0, when not recorded.
ConfigError experiment_field_error(const Experiment& e, const std::string& key, const std::string& what);

// Writers: each emits one mapping in the file schema (units as in the files), so that
// reading it back gives the same values (up to the last bit of a unit conversion).
void write_model(YAML::Emitter& out, const ModelConfig& m);
void write_cluster(YAML::Emitter& out, const ClusterConfig& c);
void write_training(YAML::Emitter& out, const TrainingConfig& t);
void write_experiment(YAML::Emitter& out, const Experiment& e);  // model/cluster/training inlined
// Inside an open top-level mapping of a plan file: emits `experiment: <write_experiment(e)>`.
void write_plan_header(YAML::Emitter& out, const Experiment& e);
std::string experiment_to_yaml(const Experiment& e);  // a complete experiment document

// Why `path` cannot be read as an input file (or, with folder_ok, a folder of them); "" when it
// can. Tells a missing path, a dangling symbolic link, a symbolic-link loop and a refused path
// apart, and never throws: "file not found", "is a symbolic link loop (...)", "is a folder, ...";
// also refuses what is not a regular file (a device, a pipe) and files over 64 MiB.
std::string input_path_problem(const std::string& path, bool folder_ok = false);

// `path_or_dir` a file: {path}. A folder: every *.yaml / *.yml file below it, recursively,
// sorted by path. Throws bad input when the path does not exist or a folder holds none.
std::vector<std::string> find_experiments(const std::string& path_or_dir);

// The candidate closest to `word` by edit distance when it is plausibly a typo of it,
// otherwise "". Used for "did you mean" hints (config keys, CLI values).
std::string closest_name(const std::string& word, const std::vector<std::string>& candidates);

// Files that ringplan writes end with a marker line, so that a copy cut short (a full disk, an
// interrupted transfer) is refused instead of read as a smaller valid file: a profile cut
// before an optional key (efficiency.collectives) would otherwise load with defaults.
// A file claims to be written by ringplan when it has a top-level `ringplan_plan:` key (a plan
// file) or its first line starts with kWrittenByPrefix (a profile of calibrate or fit). Such a
// file must contain its end marker as a whole line (its last line when ringplan writes it);
// hand-written configs make no claim and need no marker.
inline constexpr const char* kPlanEndMarker = "# end of ringplan plan";
inline constexpr const char* kProfileEndMarker = "# end of ringplan profile";
inline constexpr const char* kWrittenByPrefix = "# Written by `ringplan";
// Throws ConfigError "PATH:LAST_LINE: ..." when `text` (the content of `path`) claims to be
// written by ringplan but lacks its end marker. Every loader of this header applies it.
void check_not_cut(const std::string& text, const std::string& path);

}  // namespace ringplan
