// `ringplan report EXPERIMENT.yaml [--run RESULT.json] -o report.html [--gpus N] [--top K]`
// Writes one self-contained HTML page (opens offline): the planner's ranked candidates (coloured
// by CP size and ZeRO stage, terms on hover, stacked time and memory terms per candidate), the
// chosen plan's memory/time terms, its memory against CP and sequence length, its per-rank ring
// timeline and, given the JSON of `ringplan run --format json` (--scope attention or step),
// predicted vs measured as timelines and per phase or term (report/report_html.hpp).
// With a plan file (or an experiment with a fixed mesh) the chosen plan is that layout.
#include <fmt/format.h>

#include <algorithm>
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
#include "report/report_html.hpp"
#include "sim/cost_model.hpp"

namespace {

struct ReportArgs {
  std::string experiment;
  std::string run;
  std::string output;
  int64_t gpus = 0;
  int64_t top = 200;
};

int run_report(const ReportArgs& a) {
  using namespace ringplan;
  check_output_path(a.output, "-o");  // before the search: a bad path fails at once
  const Experiment e = planner::load_experiment_or_plan(a.experiment);
  planner::PlanSettings settings;
  const int64_t top = planner::parse_positive_flag("--top", a.top);  // any K: plan_top() clamps it
  settings.gpus = planner::experiment_gpus(e, a.gpus);
  const planner::PlanResult r = planner::plan_top(e, settings, top);
  report::ReportData d = report::build_report(e, r);

  if (e.mesh) {
    // The experiment fixes a layout: report that one as chosen, ranked among the others.
    planner::check_mesh_gpus(*e.mesh, settings.gpus, planner::mesh_where(e), e.training.global_batch_sequences,
                             e.options.micro_batch);
    const std::string why = sim::check_layout(e, *e.mesh, e.options, settings.gpus);
    if (!why.empty()) {
      throw bad_input(fmt::format("{}: layout {} {} cannot run: {}", planner::mesh_where(e),
                                  planner::mesh_text(*e.mesh), planner::options_text(*e.mesh, e.options), why));
    }
    const sim::Prediction fixed = sim::predict(e, *e.mesh, e.options);
    auto same = [&](const sim::Prediction& p) { return p.mesh == fixed.mesh && p.options == fixed.options; };
    auto it = std::find_if(d.candidates.begin(), d.candidates.end(), same);
    if (it == d.candidates.end()) {
      it = d.candidates.insert(std::upper_bound(d.candidates.begin(), d.candidates.end(), fixed, planner::ranks_before),
                               fixed);
    }
    d.chosen = static_cast<size_t>(it - d.candidates.begin());
    d.ring = report::ring_timeline(e, d.candidates[d.chosen]);
  }
  if (!a.run.empty()) {
    d.run = report::load_run_result(a.run);
    // A run of another layout still shows its own prediction against its measurement, but the
    // page must not pass it off as the chosen layout's: its summary names its mesh, and so does
    // this note.
    const Mesh& chosen = d.candidates[d.chosen].mesh;
    if (d.run->mesh && !(*d.run->mesh == chosen))
      std::fprintf(stderr, "note: %s ran mesh %s, not the report's chosen layout %s; the page shows the run against "
                   "its own prediction\n",
                   a.run.c_str(), planner::mesh_spec(*d.run->mesh).c_str(), planner::mesh_spec(chosen).c_str());
  }

  const std::string html = report::render_html(d);
  write_file_atomic(a.output, html, "-o");
  std::fprintf(stderr, "wrote report of %zu candidates (chosen: %s %s) to %s\n", d.candidates.size(),
               planner::mesh_text(d.candidates[d.chosen].mesh).c_str(),
               planner::options_text(d.candidates[d.chosen].mesh, d.candidates[d.chosen].options).c_str(),
               a.output.c_str());
  return 0;
}

RINGPLAN_COMMAND("report", "Write a self-contained HTML report: candidates, breakdowns, ring timeline, run vs prediction",
                 60, [](CLI::App& app) {
                   auto a = std::make_shared<ReportArgs>();
                   app.add_option("experiment", a->experiment, "Experiment or plan YAML")->required();
                   app.add_option("--run", a->run, "JSON of `ringplan run --format json` to compare with the prediction");
                   app.add_option("-o,--output", a->output, "HTML file to write")->required();
                   app.add_option("--gpus", a->gpus, "GPUs to plan for (default: experiment gpus, else the cluster's)");
                   app.add_option("--top", a->top, "How many ranked candidates to chart (K > 0)")->capture_default_str();
                   return [a] { return run_report(*a); };
                 });

}  // namespace
