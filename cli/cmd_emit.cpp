// `ringplan emit PLAN.yaml --format megatron|torchtitan [--target python|toml] [-o FILE]`
// Prints the plan as a launch of a training framework: a Megatron-LM bash script, or a
// torchtitan Python config module (--target python, torchtitan main) or TOML job config
// (--target toml, torchtitan v0.2.x) (report/emit.hpp; field-by-field mapping in docs/emit.md).
// The plan's prediction is recomputed with sim::predict from the plan's own experiment, so
// the header states what the cost model says about exactly these settings.
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli/command.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "planner/plan_file.hpp"
#include "planner/report.hpp"
#include "report/emit.hpp"
#include "sim/cost_model.hpp"

namespace {

struct EmitArgs {
  std::string plan;
  std::string format;
  std::string target;
  std::string output;
};

int run_emit(const EmitArgs& a) {
  using namespace ringplan;
  const auto format = report::parse_format(a.format);
  if (!format) {
    throw bad_input(fmt::format("--format: '{}' is not a framework; valid: {}", a.format,
                                fmt::join(report::format_names(), ", ")));
  }
  report::EmitOptions options;
  if (!a.target.empty()) {
    if (*format != report::Format::torchtitan) {
      throw bad_input(fmt::format("--target: '{}' applies to --format torchtitan only; Megatron-LM has one target", a.target));
    }
    const auto target = report::parse_torchtitan_target(a.target);
    if (!target) {
      throw bad_input(fmt::format("--target: '{}' is not a torchtitan target; valid: {}", a.target,
                                  fmt::join(report::torchtitan_target_names(), ", ")));
    }
    options.torchtitan_target = *target;
  }
  const bool to_file = !a.output.empty() && a.output != "-";
  if (to_file) check_output_path(a.output, "-o");
  const planner::PlanFile plan = planner::read_plan_file(a.plan);
  const Experiment& e = plan.experiment;
  if (!e.mesh) throw bad_input(fmt::format("{}: the plan has no mesh", a.plan));
  const int64_t gpus = e.mesh->world_size();
  const std::string why = sim::check_layout(e, *e.mesh, e.options, gpus);
  if (!why.empty()) {
    throw bad_input(fmt::format("{}: layout {} {} cannot run: {}", a.plan, planner::mesh_text(*e.mesh),
                                planner::options_text(*e.mesh, e.options), why));
  }
  const std::string text = report::emit_plan(*format, e, sim::predict(e, *e.mesh, e.options), options);
  if (!to_file) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  write_file_atomic(a.output, text, "-o");
  std::fprintf(stderr, "wrote %s settings to %s\n", a.format.c_str(), a.output.c_str());
  return 0;
}

RINGPLAN_COMMAND("emit", "Print a plan as a Megatron-LM launch script or a torchtitan config", 35, [](CLI::App& app) {
  auto a = std::make_shared<EmitArgs>();
  app.add_option("plan", a->plan, "Plan file (ringplan plan -o PLAN.yaml)")->required();
  app.add_option("--format", a->format, "Framework: megatron or torchtitan")->required();
  app.add_option("--target", a->target,
                 "torchtitan config system: python (main, Python config module; default) or toml (v0.2.x)");
  app.add_option("-o,--output", a->output, "Write to this file instead of stdout");
  return [a] { return run_emit(*a); };
});

}  // namespace
