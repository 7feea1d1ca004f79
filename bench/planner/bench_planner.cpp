// bench_planner: how fast the planner evaluates layouts and searches.
//
//   predict_mix        sim::predict() over a realistic candidate mix: every layout of Llama 3
//                      405B at 128K on 16,384 H100s that passes check_layout() (all meshes,
//                      all options of its search space). Rate = predictions / s on one core.
//   check_predict_mix  check_layout() + predict() on the same mix (what the planner's inner
//                      loop pays per candidate).
//   full_search/*      plan() wall time for a whole experiment; counters report how many
//                      layouts were enumerated, evaluated (predict() calls) and fit.
//
// Every benchmark validates its result before timing: predictions finite and positive and
// identical on repeated calls, searches keeping the planner's counting invariants and
// returning a fitting best layout. Build and run:
//   cmake --build build/cpu --target bench_planner
//   build/cpu/bench/planner/bench_planner
#include <benchmark/benchmark.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/config_yaml.hpp"
#include "planner/planner.hpp"
#include "sim/cost_model.hpp"

namespace {

using namespace ringplan;

const std::string kExperiments = std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/";

struct Candidate {
  Mesh mesh;
  ParallelOptions options;
};

// All layouts of the experiment's search space that pass check_layout().
std::vector<Candidate> candidate_mix(const Experiment& e, int64_t gpus) {
  const planner::ResolvedSearchSpace s = planner::resolve_search_space(e);
  std::vector<Candidate> out;
  for (const Mesh& m : planner::enumerate_meshes(gpus))
    for (int64_t mb : s.micro_batch)
      for (Recompute rc : s.recompute)
        for (int z : s.zero_stage)
          for (bool sp : s.sequence_parallel)
            for (CpScheme cs : s.cp_scheme)
              for (int64_t v : s.interleave)
                for (AttentionImpl a : s.attention) {
                  ParallelOptions o;
                  o.micro_batch = mb;
                  o.recompute = rc;
                  o.zero_stage = z;
                  o.sequence_parallel = sp && m.tp > 1;
                  o.cp_scheme = cs;
                  o.interleave = v;
                  o.attention = a;
                  if (sim::check_layout(e, m, o, gpus).empty()) out.push_back({m, o});
                }
  return out;
}

bool plausible(const sim::Prediction& p) {
  return std::isfinite(p.step_time_s) && p.step_time_s > 0 && std::isfinite(p.peak_memory_bytes) &&
         p.peak_memory_bytes > 0 && std::isfinite(p.tokens_per_s) && p.tokens_per_s > 0;
}

void predict_mix(benchmark::State& state, bool with_check) {
  const Experiment e = load_experiment(kExperiments + "llama3_405b_128k.yaml");
  const int64_t gpus = *e.gpus;
  const std::vector<Candidate> mix = candidate_mix(e, gpus);
  if (mix.empty()) {
    state.SkipWithError("no valid candidate in the 405B search space");
    return;
  }
  // Validate before timing: every prediction plausible and deterministic.
  for (const auto& c : mix) {
    const sim::Prediction a = sim::predict(e, c.mesh, c.options), b = sim::predict(e, c.mesh, c.options);
    if (!plausible(a) || a.step_time_s != b.step_time_s || a.peak_memory_bytes != b.peak_memory_bytes) {
      state.SkipWithError("implausible or non-deterministic prediction");
      return;
    }
  }
  size_t i = 0;
  for (auto _ : state) {
    const Candidate& c = mix[i];
    if (with_check) {
      std::string why = sim::check_layout(e, c.mesh, c.options, gpus);
      benchmark::DoNotOptimize(why);
    }
    sim::Prediction p = sim::predict(e, c.mesh, c.options);
    benchmark::DoNotOptimize(p);
    if (++i == mix.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["mix_size"] = static_cast<double>(mix.size());
}

void full_search(benchmark::State& state, const std::string& file) {
  const Experiment e = load_experiment(kExperiments + file);
  planner::PlanResult r = planner::plan(e, {.top_k = 10});
  // plan() itself throws if its counting invariants break; check the result is usable.
  if (r.candidates.empty() || !r.candidates.front().fits || r.evaluated <= 0 ||
      r.enumerated < r.evaluated) {
    state.SkipWithError("search returned no fitting layout");
    return;
  }
  for (auto _ : state) {
    r = planner::plan(e, {.top_k = 10});
    benchmark::DoNotOptimize(r.candidates.data());
  }
  state.counters["enumerated"] = static_cast<double>(r.enumerated);
  state.counters["evaluated"] = static_cast<double>(r.evaluated);
  state.counters["fitting"] = static_cast<double>(r.fitting);
  state.counters["evaluated_per_s"] =
      benchmark::Counter(static_cast<double>(r.evaluated), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK_CAPTURE(predict_mix, predict_405b_mix, false);
BENCHMARK_CAPTURE(predict_mix, check_predict_405b_mix, true);
BENCHMARK_CAPTURE(full_search, llama3_405b_128k_16384gpus, std::string("llama3_405b_128k.yaml"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(full_search, llama3_8b_128k_64gpus, std::string("default.yaml"))->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
