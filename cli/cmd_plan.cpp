// `ringplan plan EXPERIMENT.yaml [--gpus N] [--top K] [--format table|json] [-o PLAN.yaml]`
// Searches every valid (DP, TP, CP, PP) layout and option (planner/planner.hpp), prints the
// top K with the chosen plan's breakdown and the rejection summary, and optionally writes
// the chosen layout as a plan file for `ringplan run`. A `mesh:` in the experiment restricts
// the search to that mesh, an `options:` block fixes the options it names (the output says
// "mesh fixed by EXP:LINE"). Exit 3 when nothing fits; 2 when the fixed layout cannot run.
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli/command.hpp"
#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "cli/cli_args.hpp"
#include "planner/plan_file.hpp"
#include "planner/planner.hpp"
#include "planner/report.hpp"
#include "report/emit.hpp"

namespace {

struct PlanArgs {
  std::string experiment;
  int64_t gpus = 0;
  CLI::Option* gpus_opt = nullptr;  // given or not: 0 and negatives are errors, not "unset"
  int64_t top = 10;
  std::string format = "table";
  std::string output;
  std::string emit;  // megatron | torchtitan: print the chosen plan as launch settings
};

int run_plan(const PlanArgs& a) {
  using namespace ringplan;
  planner::PlanSettings settings;
  const int64_t top = planner::parse_positive_flag("--top", a.top);  // any K: plan_top() clamps it
  if (a.gpus_opt->count()) settings.gpus = planner::parse_gpus_flag("--gpus", a.gpus);
  if (a.format == "json" && !a.emit.empty())
    throw bad_input("--emit prints launch settings as text and cannot be mixed into --format json; "
                    "use --format table, or write a plan with -o and run `ringplan emit PLAN.yaml`");
  // A plan file that could never be written fails now, not after the search.
  if (!a.output.empty()) check_output_path(a.output, "-o");
  const Experiment e = planner::load_experiment_or_plan(a.experiment);
  settings.fixed_layout = true;  // the experiment's `mesh:` and `options:` restrict the search
  const planner::PlanResult r = planner::plan_top(e, settings, top);

  if (a.format == "json") {
    std::printf("%s\n", planner::plan_json(r, planner::fixed_layout_text(e)).dump(2).c_str());
  } else {
    std::fputs(planner::plan_text(e, r).c_str(), stdout);
  }
  if (r.candidates.empty()) {
    // A fixed layout that no option makes valid is bad input; otherwise nothing fits (exit 3).
    if (r.fixed_mesh && r.evaluated == 0) throw bad_input(planner::describe_no_fit(e, r));
    throw no_fit(planner::describe_no_fit(e, r));
  }
  const sim::Prediction& chosen = r.chosen ? *r.chosen : r.candidates.front();
  if (!a.output.empty()) {
    planner::write_plan_file(a.output, e, chosen);
    std::fprintf(stderr, "wrote plan %s (%s) to %s\n", planner::mesh_text(chosen.mesh).c_str(),
                 planner::options_text(chosen.mesh, chosen.options).c_str(), a.output.c_str());
  }
  if (!a.emit.empty()) {
    std::fputs(report::emit_plan(*report::parse_format(a.emit), e, chosen).c_str(), stdout);
  }
  return 0;
}

RINGPLAN_COMMAND("plan", "Search every valid (DP,TP,CP,PP) layout and option, rank by predicted step time", 10,
                 [](CLI::App& app) {
                   auto a = std::make_shared<PlanArgs>();
                   app.add_option("experiment", a->experiment, "Experiment YAML (model, cluster, training, search)")
                       ->required();
                   a->gpus_opt = app.add_option(
                       "--gpus", a->gpus,
                       "GPUs to plan for, 1 .. 1048576 (default: experiment gpus, else the cluster's)");
                   app.add_option("--top", a->top, "How many ranked layouts to list (K > 0)")->capture_default_str();
                   app.add_option("--format", a->format, "Output format: table or json")
                       ->check(CLI::IsMember({"table", "json"}))
                       ->capture_default_str();
                   app.add_option("-o,--output", a->output, "Write the chosen layout as a plan file (PLAN.yaml)");
                   app.add_option("--emit", a->emit, "Also print the chosen layout as Megatron-LM flags or torchtitan TOML")
                       ->check(CLI::IsMember({"megatron", "torchtitan"}));
                   return [a] { return run_plan(*a); };
                 });

}  // namespace
