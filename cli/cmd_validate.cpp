// `ringplan validate PATH... [--format table|json]`
// Predicts every validation case (an experiment with a fixed mesh and a `published:` block;
// folders are searched recursively) and prints predicted vs published per metric with the
// signed error, then the mean and max absolute error over the evaluated cases
// (planner/validation.hpp).
//
// Exit status (kValidateExitRule, also in --help): every case is evaluated or refused. A case
// that cannot be compared (invalid experiment, no fixed mesh or published metric, a layout
// sim::check_layout() refuses) is listed under `refused` with its reason and does not change
// the exit status: 0 when at least one case was evaluated. 2 (bad input) when the command
// itself fails: no path, a path that does not exist, no case found, a case file that cannot be
// read or parsed as one YAML document, or no case could be evaluated at all.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.hpp"
#include "core/config_yaml.hpp"
#include "planner/validation.hpp"

namespace {

constexpr const char* kValidateExitRule =
    "Every case is evaluated or refused. A case that cannot be compared (invalid experiment, no fixed mesh "
    "or published metric, a layout the cost model refuses) is listed as refused with its reason; the "
    "statistics cover the evaluated cases.\n"
    "Exit status: 0 when at least one case was evaluated (refused cases do not change it); 2 when the "
    "command fails: no path, a path that does not exist, no case found, a case file that cannot be read or "
    "parsed as YAML, or no case could be evaluated.";

struct ValidateArgs {
  std::vector<std::string> paths;
  std::string cluster;  // --cluster: predict every case on this profile
  std::string format = "table";
};

RINGPLAN_COMMAND("validate", "Compare predictions with published measurements (cases with a `published:` block)", 40,
                 [](CLI::App& app) {
                   auto a = std::make_shared<ValidateArgs>();
                   app.footer(kValidateExitRule);
                   app.add_option("paths", a->paths, "Case files or folders (searched recursively)")->required();
                   app.add_option("--cluster", a->cluster,
                                  "Predict every case on this cluster profile instead of its own (e.g. one "
                                  "written by `ringplan fit`)");
                   app.add_option("--format", a->format, "Output format: table or json")
                       ->check(CLI::IsMember({"table", "json"}))
                       ->capture_default_str();
                   return [a] {
                     std::optional<ringplan::ClusterConfig> cluster;
                     if (!a->cluster.empty()) cluster = ringplan::load_cluster(a->cluster);
                     const auto report = ringplan::planner::validate_paths(a->paths, cluster);
                     if (a->format == "json") {
                       std::printf("%s\n", ringplan::planner::validation_json(report)
                                                  .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)  // paths: bytes
                                                  .c_str());
                     } else {
                       std::fputs(ringplan::planner::validation_text(report).c_str(), stdout);
                     }
                     return 0;
                   };
                 });

}  // namespace
