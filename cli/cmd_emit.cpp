// `ringplan emit PLAN.yaml --format megatron|torchtitan [-o FILE]`
// Prints the plan as launch settings of a training framework: Megatron-LM command-line flags
// or a torchtitan TOML fragment (report/emit.hpp; field-by-field mapping in docs/emit.md).
// The plan's prediction is recomputed with sim::predict from the plan's own experiment, so
// the header states what the cost model says about exactly these settings.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include "cli/command.hpp"
#include "core/error.hpp"
#include "planner/plan_file.hpp"
#include "planner/report.hpp"
#include "report/emit.hpp"
#include "sim/cost_model.hpp"

namespace {

struct EmitArgs {
  std::string plan;
  std::string format;
  std::string output;
};

int run_emit(const EmitArgs& a) {
  using namespace ringplan;
  const auto format = report::parse_format(a.format);
  if (!format) {
    throw bad_input(fmt::format("--format: '{}' is not a framework; valid: {}", a.format,
                                fmt::join(report::format_names(), ", ")));
  }
  const planner::PlanFile plan = planner::read_plan_file(a.plan);
  const Experiment& e = plan.experiment;
  if (!e.mesh) throw bad_input(fmt::format("{}: the plan has no mesh", a.plan));
  const int64_t gpus = e.mesh->world_size();
  const std::string why = sim::check_layout(e, *e.mesh, e.options, gpus);
  if (!why.empty()) {
    throw bad_input(fmt::format("{}: layout {} {} cannot run: {}", a.plan, planner::mesh_text(*e.mesh),
                                planner::options_text(*e.mesh, e.options), why));
  }
  const std::string text = report::emit_plan(*format, e, sim::predict(e, *e.mesh, e.options));
  if (a.output.empty() || a.output == "-") {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  std::ofstream out(a.output);
  out << text;
  out.close();
  if (!out) throw Error(ErrorKind::runtime, fmt::format("{}: cannot write the {} settings", a.output, a.format));
  std::fprintf(stderr, "wrote %s settings to %s\n", a.format.c_str(), a.output.c_str());
  return 0;
}

RINGPLAN_COMMAND("emit", "Print a plan as Megatron-LM flags or a torchtitan TOML fragment", 35, [](CLI::App& app) {
  auto a = std::make_shared<EmitArgs>();
  app.add_option("plan", a->plan, "Plan file (ringplan plan -o PLAN.yaml)")->required();
  app.add_option("--format", a->format, "Framework: megatron or torchtitan")->required();
  app.add_option("-o,--output", a->output, "Write to this file instead of stdout");
  return [a] { return run_emit(*a); };
});

}  // namespace
