// `ringplan validate PATH... [--format table|json]`
// Predicts every validation case (an experiment with a fixed mesh and a `published:` block;
// folders are searched recursively) and prints predicted vs published per metric with the
// signed error, then the mean and max absolute error (planner/validation.hpp).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.hpp"
#include "planner/validation.hpp"

namespace {

struct ValidateArgs {
  std::vector<std::string> paths;
  std::string format = "table";
};

RINGPLAN_COMMAND("validate", "Compare predictions with published measurements (cases with a `published:` block)", 40,
                 [](CLI::App& app) {
                   auto a = std::make_shared<ValidateArgs>();
                   app.add_option("paths", a->paths, "Case files or folders (searched recursively)")->required();
                   app.add_option("--format", a->format, "Output format: table or json")
                       ->check(CLI::IsMember({"table", "json"}))
                       ->capture_default_str();
                   return [a] {
                     const auto report = ringplan::planner::validate_paths(a->paths);
                     if (a->format == "json") {
                       std::printf("%s\n", ringplan::planner::validation_json(report).dump(2).c_str());
                     } else {
                       std::fputs(ringplan::planner::validation_text(report).c_str(), stdout);
                     }
                     return 0;
                   };
                 });

}  // namespace
