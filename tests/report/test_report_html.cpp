// The HTML report's data (report/report_html.hpp): the per-rank ring timeline agrees with the
// cost model's ring prediction, the page embeds exactly report_json() and escapes what could
// break out of it, and run results are read tolerantly but malformed ones are clear errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/units.hpp"
#include "planner/planner.hpp"
#include "planner/report.hpp"
#include "report/report_html.hpp"
#include "sim/formulas.hpp"
#include "sim/ring_event_sim.hpp"
#include "sim/ring_model.hpp"
#include "tests/fixtures/experiments.hpp"

using namespace ringplan;

namespace {

sim::Prediction layout(const Experiment& e, Mesh mesh, CpScheme scheme, AttentionImpl attention = AttentionImpl::flash) {
  ParallelOptions o;
  o.cp_scheme = scheme;
  o.attention = attention;
  o.micro_batch = 1;
  REQUIRE(sim::check_layout(e, mesh, o, mesh.world_size()) == "");
  return sim::predict(e, mesh, o);
}


std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = "report_test_" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("ring timeline: the event simulator's per-rank schedule, step by step") {
  Experiment e = test::report_experiment();
  for (bool causal : {true, false}) {
    e.training.causal = causal;
    for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
      CAPTURE(causal);
      const std::string scheme_name = to_string(scheme);
      CAPTURE(scheme_name);
      const sim::Prediction p = layout(e, Mesh{1, 2, 4, 1}, scheme);
      const report::RingTimeline t = report::ring_timeline(e, p);
      sim::RingAttentionShape shape;
      shape.heads_per_tp = e.model.heads / 2;
      shape.kv_heads_per_tp = e.model.kv_heads / 2;
      shape.head_dim = e.model.head_dim;
      shape.seq_len = e.training.seq_len;
      shape.cp = 4;
      shape.scheme = scheme;
      shape.causal = causal;
      shape.tp = 2;
      const sim::RingSimulation sim_run = sim::simulate_ring(shape, e.cluster);
      REQUIRE(t.ranks.size() == 4);
      double finish_max = 0;
      for (const auto& r : t.ranks) {
        REQUIRE(r.steps.size() == 4);
        double compute = 0;
        for (size_t k = 0; k < r.steps.size(); ++k) {
          const auto& s = r.steps[k];
          CHECK(s.source_rank == (r.rank - static_cast<int64_t>(k) + 4) % 4);  // DESIGN.md ring order
          CHECK(s.exposed_s >= 0);
          CHECK((k + 1 < 4 ? s.comm_s > 0 : s.comm_s == 0));  // the last step passes nothing on
          if (k + 1 < 4) {  // the next step starts when this one is done and the wait is over
            CHECK(r.steps[k + 1].start_s == doctest::Approx(s.start_s + s.compute_s + s.exposed_s));
          }
          compute += s.compute_s;
        }
        const auto& rank_times = sim_run.ranks[static_cast<size_t>(r.rank)];
        CHECK(compute == doctest::Approx(rank_times.forward_busy_s));
        const auto& last = r.steps.back();
        CHECK(last.start_s + last.compute_s == doctest::Approx(rank_times.forward_finish_s));
        finish_max = std::max(finish_max, last.start_s + last.compute_s);
      }
      CHECK(finish_max == doctest::Approx(sim_run.forward_s));
    }
  }
}

TEST_CASE("ring timeline: contiguous starves the first rank, zigzag balances every step") {
  const Experiment e = test::report_experiment();
  const auto contiguous = report::ring_timeline(e, layout(e, Mesh{1, 2, 4, 1}, CpScheme::contiguous));
  for (size_t k = 1; k < 4; ++k) CHECK(contiguous.ranks[0].steps[k].compute_s == 0.0);  // later ranks' keys are hidden
  CHECK(contiguous.ranks[3].steps[1].compute_s > 0.0);
  const auto zigzag = report::ring_timeline(e, layout(e, Mesh{1, 2, 4, 1}, CpScheme::zigzag));
  for (size_t k = 0; k < 4; ++k) {
    for (size_t r = 1; r < 4; ++r) CHECK(zigzag.ranks[r].steps[k].compute_s == zigzag.ranks[0].steps[k].compute_s);
  }
  // Materialised attention skips fully hidden blocks as the runtime does, but computes every
  // visible block in full (masking after the GEMM).
  const auto mat = report::ring_timeline(e, layout(e, Mesh{1, 2, 4, 1}, CpScheme::contiguous, AttentionImpl::materialized));
  CHECK(mat.ranks[0].steps[3].compute_s == 0.0);
  CHECK(mat.ranks[3].steps[3].compute_s > 0);
  // No ring without CP.
  CHECK(report::ring_timeline(e, layout(e, Mesh{2, 4, 1, 1}, CpScheme::zigzag)).ranks.empty());
}

TEST_CASE("report: JSON of a planner result and the page that embeds it") {
  Experiment e = test::report_experiment();
  e.name = "evil </script><script>alert(1)</script> @DATA@";
  planner::PlanSettings settings;
  settings.top_k = 50;
  const planner::PlanResult r = planner::plan(e, settings);
  REQUIRE_FALSE(r.candidates.empty());
  report::ReportData d = report::build_report(e, r);
  // The planner's choice (ranking band): at its rank, or inserted in order when below the top K.
  REQUIRE(r.chosen);
  CHECK(d.candidates.size() == r.candidates.size() + (r.chosen_rank > 0 ? 0 : 1));
  if (r.chosen_rank > 0) CHECK(d.chosen == static_cast<size_t>(r.chosen_rank - 1));
  CHECK(d.candidates[d.chosen].mesh == r.chosen->mesh);
  CHECK(d.candidates[d.chosen].options == r.chosen->options);

  const nlohmann::json j = report::report_json(d);
  REQUIRE(j["candidates"].size() == d.candidates.size());
  CHECK(j["candidates"][d.chosen]["chosen"] == true);
  CHECK(j["candidates"][d.chosen == 0 ? 1 : 0]["chosen"] == false);
  CHECK(j["candidates"][0]["step_time_s"].get<double>() == d.candidates[0].step_time_s);
  // Every memory term of the chosen plan except the peak, which is the chart's total.
  std::vector<sim::Term> terms;
  for (const auto& t : sim::memory_terms(d.candidates[d.chosen].memory)) {
    if (t.name != "peak_bytes") terms.push_back(t);
  }
  REQUIRE(j["memory_terms"].size() == terms.size());
  for (size_t i = 0; i < terms.size(); ++i) {
    CHECK(j["memory_terms"][i]["name"] == std::string(terms[i].name));
    CHECK(j["memory_terms"][i]["value_bytes"].get<int64_t>() == std::llround(terms[i].value));
  }
  // Byte counts are whole numbers, like every *_bytes field of the CLI's JSON.
  CHECK(j["peak_memory_bytes"].is_number_integer());
  CHECK(j["peak_memory_bytes"].get<int64_t>() == std::llround(d.candidates[d.chosen].peak_memory_bytes));
  CHECK(j["capacity_bytes"].get<int64_t>() == std::llround(d.candidates[d.chosen].capacity_bytes));
  CHECK(j["schema_version"] == planner::kJsonSchemaVersion);
  CHECK(j["time_terms"].size() == sim::time_terms(d.candidates[d.chosen].time).size());
  CHECK(j["run"].is_null());

  const std::string html = report::render_html(d);
  CHECK(html.find("@TITLE@") == std::string::npos);
  CHECK(html.find("@CANDIDATE_TABLE@") == std::string::npos);
  // No external resource: nothing to fetch when offline.
  for (size_t at = html.find("http"); at != std::string::npos; at = html.find("http", at + 1)) {
    CHECK(html.compare(at, 26, "http://www.w3.org/2000/svg") == 0);  // the SVG namespace name only
  }
  CHECK(html.find(" src=") == std::string::npos);
  // The hostile name appears escaped in HTML and never closes the data script early.
  CHECK(html.find("<script>alert(1)") == std::string::npos);
  CHECK(html.find("evil &lt;/script&gt;") != std::string::npos);
  const std::string open = "<script type=\"application/json\" id=\"ringplan-data\">";
  const size_t begin = html.find(open);
  REQUIRE(begin != std::string::npos);
  const size_t end = html.find("</script>", begin);
  REQUIRE(end != std::string::npos);
  const nlohmann::json embedded = nlohmann::json::parse(html.substr(begin + open.size(), end - begin - open.size()));
  CHECK(embedded == j);

  d.chosen = d.candidates.size();
  CHECK_THROWS_AS(report::render_html(d), Error);
  d.candidates.clear();
  CHECK_THROWS_AS(report::report_json(d), Error);
}

TEST_CASE("report: candidates carry CP, ZeRO stage and their terms, and memory against CP and sequence length") {
  const Experiment e = test::report_experiment();
  planner::PlanSettings settings;
  settings.top_k = 40;
  report::ReportData d = report::build_report(e, planner::plan(e, settings));
  // A chosen layout with CP > 1, so that the CP sweep has more than one size to show.
  for (size_t i = 0; i < d.candidates.size(); ++i)
    if (d.candidates[i].mesh.cp > 1) {
      d.chosen = i;
      break;
    }
  REQUIRE(d.candidates[d.chosen].mesh.cp > 1);
  const nlohmann::json j = report::report_json(d);
  const sim::Prediction& c = d.candidates[d.chosen];
  // Term names once, values per candidate in that order (seconds, bytes; the peak is not a term).
  std::vector<std::string> time_names, memory_names;
  for (const auto& t : sim::time_terms(c.time)) time_names.emplace_back(t.name);
  for (const auto& t : sim::memory_terms(c.memory))
    if (t.name != "peak_bytes") memory_names.emplace_back(t.name);
  CHECK(j["time_term_names"] == time_names);
  CHECK(j["memory_term_names"] == memory_names);
  std::set<int64_t> cps, zero_stages;
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    const sim::Prediction& p = d.candidates[i];
    const auto& jc = j["candidates"][i];
    CHECK(jc["cp"] == p.mesh.cp);
    CHECK(jc["tp"] == p.mesh.tp);
    CHECK(jc["dp"] == p.mesh.dp);
    CHECK(jc["pp"] == p.mesh.pp);
    CHECK(jc["zero_stage"] == p.options.zero_stage);
    cps.insert(p.mesh.cp);
    zero_stages.insert(p.options.zero_stage);
    const auto tt = sim::time_terms(p.time);
    REQUIRE(jc["time"].size() == tt.size());
    double sum = 0;
    for (size_t k = 0; k < tt.size(); ++k) {
      CHECK(jc["time"][k].get<double>() == tt[k].value);
      sum += tt[k].value;
    }
    CHECK(sum == doctest::Approx(p.step_time_s));  // the stacked bar ends at the step time
    REQUIRE(jc["memory_bytes"].size() == memory_names.size());
    size_t k = 0;
    for (const auto& t : sim::memory_terms(p.memory))
      if (t.name != "peak_bytes") CHECK(jc["memory_bytes"][k++].get<int64_t>() == std::llround(t.value));
  }
  CHECK(cps.size() > 1);  // the colours have something to tell apart
  CHECK(zero_stages.size() > 1);

  // Memory against CP: the chosen TP, PP and options; DP x CP kept; one point per valid CP size.
  const auto& by_cp = j["memory_vs_cp"];
  REQUIRE(by_cp.size() >= 2);
  bool has_chosen = false;
  int64_t prev_cp = 0;
  double prev_activations = HUGE_VAL;
  const size_t activations = static_cast<size_t>(
      std::find(memory_names.begin(), memory_names.end(), "activations_bytes") - memory_names.begin());
  REQUIRE(activations < memory_names.size());
  for (const auto& pt : by_cp) {
    const int64_t cp = pt["x"].get<int64_t>();
    CHECK(cp > prev_cp);
    prev_cp = cp;
    const Mesh mesh{c.mesh.dp * c.mesh.cp / cp, c.mesh.tp, cp, c.mesh.pp};
    REQUIRE(sim::check_layout(e, mesh, c.options, mesh.world_size()) == "");
    const sim::Prediction p = sim::predict(e, mesh, c.options);
    CHECK(pt["peak_memory_bytes"].get<int64_t>() == std::llround(p.peak_memory_bytes));
    CHECK(pt["fits"] == p.fits);
    CHECK(pt["label"].get<std::string>().find(planner::mesh_text(mesh)) == 0);
    // Splitting the sequence over more ranks never adds activations per device.
    const double act = pt["memory_bytes"][activations].get<double>();
    CHECK(act <= prev_activations * (1 + 1e-12));
    prev_activations = act;
    if (cp == c.mesh.cp) {
      has_chosen = true;
      CHECK(pt["peak_memory_bytes"] == j["candidates"][d.chosen]["peak_memory_bytes"]);
    }
  }
  CHECK(has_chosen);
  // Memory against sequence length: the chosen mesh and options at L * 2^k; grows with L.
  const auto& by_seq = j["memory_vs_seq_len"];
  REQUIRE(by_seq.size() >= 3);
  double prev_peak = 0;
  bool has_l = false;
  for (const auto& pt : by_seq) {
    const int64_t L = pt["x"].get<int64_t>();
    Experiment x = e;
    x.training.seq_len = L;
    REQUIRE(sim::check_layout(x, c.mesh, c.options, c.mesh.world_size()) == "");
    CHECK(pt["peak_memory_bytes"].get<int64_t>() == std::llround(sim::predict(x, c.mesh, c.options).peak_memory_bytes));
    CHECK(pt["peak_memory_bytes"].get<double>() >= prev_peak);
    prev_peak = pt["peak_memory_bytes"].get<double>();
    has_l = has_l || L == e.training.seq_len;
  }
  CHECK(has_l);
  CHECK(by_seq.front()["x"].get<int64_t>() == e.training.seq_len / 8);
  CHECK(by_seq.back()["x"].get<int64_t>() == e.training.seq_len * 8);
}

TEST_CASE("report: a fixed layout that is not among the candidates can still be the chosen plan") {
  const Experiment e = test::report_experiment();
  report::ReportData d;
  d.experiment = e;
  d.candidates = {layout(e, Mesh{2, 1, 4, 1}, CpScheme::contiguous), layout(e, Mesh{1, 2, 4, 1}, CpScheme::zigzag)};
  d.chosen = 1;
  d.ring = report::ring_timeline(e, d.candidates[1]);
  const nlohmann::json j = report::report_json(d);
  CHECK(j["candidates"][1]["chosen"] == true);
  CHECK(j["ring"]["ranks"].size() == 4);
  CHECK(j["ring"]["ranks"][2]["steps"][1]["source_rank"] == 1);
}

TEST_CASE("run result: the rows of `ringplan run --format json` (cli/cmd_run.cpp)") {
  const auto run = report::parse_run_result(nlohmann::json::parse(R"json({
      "plan": "plan.yaml", "validates": "one attention layer of one CP group", "cp": 4, "iterations": 5,
      "warmup": 1, "profile": "local_cpu", "hosts": ["a", "a", "a", "a"],
      "rows": [{"name": "forward time (slowest rank)", "measured_median_s": 0.012, "measured_min_s": 0.011,
                "measured_max_s": 0.015, "measured_p10_s": 0.011, "measured_p90_s": 0.014, "samples": 5,
                "predicted_s": 0.010, "error_pct": 20.0},
               {"name": "backward exposed comm", "measured_median_s": 0.0, "predicted_s": 0.001}],
      "busy_max_over_mean": {"measured": 1.7, "predicted": 1.75},
      "memory": {"measured_ring_buffer_bytes": 1048576, "predicted_ring_buffer_bytes": 1048576,
                 "measured_scores_bytes": 2048, "predicted_scores_bytes": 4096,
                 "measured_rss_peak_delta_max_bytes": 5000000}})json"),
                                            "run.json");
  REQUIRE(run.phases.size() == 2);
  CHECK(run.phases[0].phase == "forward time (slowest rank)");
  CHECK(*run.phases[0].measured_s == 0.012);
  CHECK(*run.phases[0].measured_min_s == 0.011);
  CHECK(*run.phases[0].measured_max_s == 0.015);
  CHECK(*run.phases[0].predicted_s == 0.010);
  CHECK(*run.phases[1].measured_s == 0.0);  // zero is a measurement, not a missing value
  // The timeline holds the parts that follow one another (compute, exposed comm), as present.
  REQUIRE(run.timeline.size() == 1);
  CHECK(run.timeline[0].phase == "backward exposed comm");
  CHECK(run.description == "one attention layer of one CP group");
  CHECK(run.summary == "4 ranks, 5 iterations, predicted on local_cpu");
  // Memory pairs measured_<x>_bytes with predicted_<x>_bytes; an unpaired figure stays alone.
  REQUIRE(run.memory.size() == 3);
  auto memory = [&run](const std::string& name) -> const report::MemoryComparison& {
    for (const auto& m : run.memory) {
      if (m.name == name) return m;
    }
    FAIL("no memory figure " << name);
    return run.memory.front();
  };
  CHECK(*memory("ring_buffer").measured_bytes == 1048576.0);
  CHECK(*memory("ring_buffer").predicted_bytes == 1048576.0);
  CHECK(*memory("scores").measured_bytes == 2048.0);
  CHECK(*memory("scores").predicted_bytes == 4096.0);
  CHECK(*memory("rss_peak_delta_max").measured_bytes == 5000000.0);
  CHECK_FALSE(memory("rss_peak_delta_max").predicted_bytes.has_value());
}

TEST_CASE("run result: `ringplan run --scope step --format json` (cli/run_step.cpp): step, terms, memory terms") {
  const auto run = report::parse_run_result(nlohmann::json::parse(R"json({
      "schema_version": 2, "scope": "step", "device": "cpu", "plan": "plan.yaml", "validates": "whole training steps",
      "mesh": {"dp": 1, "tp": 1, "cp": 2, "pp": 1}, "layers": 2, "steps": 2, "warmup": 1, "profile": "local_cpu",
      "hosts": ["a", "a"], "losses": [7.0, 6.9, 6.8],
      "step_time": {"measured_median_s": 0.06, "measured_min_s": 0.058, "measured_max_s": 0.061,
                    "predicted_s": 0.19, "error_pct": -68.4},
      "terms": [{"name": "forward_compute", "measured_s": 0.018, "predicted_s": 0.057, "error_pct": -68},
                {"name": "backward_compute", "measured_s": 0.034, "predicted_s": 0.122, "error_pct": -72},
                {"name": "recompute", "measured_s": 0.0, "predicted_s": 0.0, "error_pct": null},
                {"name": "optimizer", "measured_s": 0.004, "predicted_s": 0.011, "error_pct": -62}],
      "memory": {"terms": [{"name": "weights", "measured_bytes": 8000000, "predicted_bytes": 8100000, "error_pct": -1},
                           {"name": "peak (without reserved)", "measured_bytes": 40000000, "predicted_bytes": 38000000}],
                 "rss_peak_delta_max_bytes": 50000000}})json"),
                                            "step.json");
  REQUIRE(run.phases.size() == 5);
  // The layout it ran, read and named in the summary (report --run compares it with the chosen one).
  REQUIRE(run.mesh.has_value());
  CHECK(*run.mesh == Mesh{1, 1, 2, 1});
  CHECK(run.summary.find("mesh dp=1 tp=1 cp=2 pp=1") != std::string::npos);
  CHECK_THROWS_WITH_AS(report::parse_run_result(nlohmann::json::parse(R"json({"scope": "step", "mesh": {"dp": 0},
      "step_time": {"measured_median_s": 1, "predicted_s": 1}, "terms": []})json"), "bad.json"),
                       doctest::Contains("'mesh' must hold positive integers"), Error);
  CHECK(run.phases[0].phase == "step");
  CHECK(*run.phases[0].measured_s == 0.06);
  CHECK(*run.phases[0].measured_min_s == 0.058);
  CHECK(*run.phases[0].predicted_s == 0.19);
  CHECK(run.phases[2].phase == "backward_compute");
  CHECK(*run.phases[2].measured_s == 0.034);
  // The timeline: the terms in order, predicted and measured, adding up to the step.
  REQUIRE(run.timeline.size() == 4);
  double predicted = 0, measured = 0;
  for (const auto& t : run.timeline) {
    predicted += *t.predicted_s;
    measured += *t.measured_s;
  }
  CHECK(run.timeline[0].phase == "forward_compute");
  CHECK(run.timeline[3].phase == "optimizer");
  CHECK(predicted == doctest::Approx(0.19));
  CHECK(measured == doctest::Approx(0.056));
  REQUIRE(run.memory.size() == 2);
  CHECK(run.memory[0].name == "weights");
  CHECK(*run.memory[0].measured_bytes == 8000000.0);
  CHECK(*run.memory[1].predicted_bytes == 38000000.0);
  CHECK(run.summary == "2 steps, predicted on local_cpu, mesh dp=1 tp=1 cp=2 pp=1");
  const nlohmann::json j = [&] {
    report::ReportData d = report::build_report(test::report_experiment(),
                                                planner::plan(test::report_experiment(), planner::PlanSettings{}));
    d.run = run;
    return report::report_json(d);
  }();
  REQUIRE(j["run"]["timeline"].size() == 4);
  CHECK(j["run"]["timeline"][1]["name"] == "backward_compute");
  CHECK(j["run"]["timeline"][1]["predicted_s"].get<double>() == 0.122);
  CHECK(j["run"]["timeline"][1]["measured_s"].get<double>() == 0.034);

  auto message_of = [](const char* text) -> std::string {
    try {
      report::parse_run_result(nlohmann::json::parse(text), "step.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(message_of(R"json({"terms": [{"name": "f", "predicted_s": 1}]})json").find("missing object 'step_time'") !=
        std::string::npos);
  CHECK(message_of(R"json({"step_time": {"predicted_s": 1}, "terms": [{"name": "f", "measured_s": "x"}]})json")
            .find("step.json: terms[0]: field 'measured_s' must be a number") != std::string::npos);
  CHECK(message_of(R"json({"step_time": {"predicted_s": 1}, "terms": 3})json").find("'terms' must be a list") !=
        std::string::npos);
}

TEST_CASE("run result: a plain phases list or object is accepted too") {
  const auto list = report::parse_run_result(
      nlohmann::json::parse(R"json({"phases": [{"phase": "ring forward", "predicted_s": 0.01, "measured_s": 0.012},
                                            {"name": "ring backward", "predicted_s": 0.025, "measured_s": null}]})json"),
      "run.json");
  REQUIRE(list.phases.size() == 2);
  CHECK(list.phases[0].phase == "ring forward");
  CHECK(*list.phases[0].measured_s == 0.012);
  CHECK_FALSE(list.phases[1].measured_s.has_value());
  CHECK(list.summary.empty());

  const auto obj = report::parse_run_result(
      nlohmann::json::parse(R"json({"phases": {"forward": {"predicted_s": 1, "measured_s": 2}}})json"), "r.json");
  REQUIRE(obj.phases.size() == 1);
  CHECK(obj.phases[0].phase == "forward");
  CHECK(*obj.phases[0].predicted_s == 1.0);
}

TEST_CASE("run result: malformed documents are bad input naming the file and the field") {
  auto message_of = [](const char* text) -> std::string {
    try {
      report::parse_run_result(nlohmann::json::parse(text), "run.json");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::bad_input);
      return e.what();
    }
    return "no error";
  };
  CHECK(message_of("[1, 2]").find("run.json: not the output of `ringplan run --format json`") == 0);
  CHECK(message_of("{}").find("missing field 'rows'") != std::string::npos);
  CHECK(message_of(R"json({"rows": [{"name": "f", "predicted_s": 1}], "memory": 3})json").find("'memory' must be an object") !=
        std::string::npos);
  CHECK(message_of(R"json({"phases": 3})json").find("'phases' must be a list or an object") != std::string::npos);
  CHECK(message_of(R"json({"phases": []})json").find("'phases' is empty") != std::string::npos);
  CHECK(message_of(R"json({"rows": [{"predicted_s": 1}]})json").find("rows[0]: must be an object with a string 'name'") !=
        std::string::npos);
  CHECK(message_of(R"json({"rows": [{"name": "f", "measured_median_s": "fast"}]})json").find("'measured_median_s' must be a number") !=
        std::string::npos);
  CHECK(message_of(R"json({"phases": [{"phase": "f", "measured_s": -1}]})json").find(">= 0") != std::string::npos);
  CHECK(message_of(R"json({"rows": [{"name": "f"}]})json").find("neither predicted_s nor measured") != std::string::npos);
  // Byte counts the page could not carry as whole numbers are refused as input, not failed on later.
  CHECK(message_of(R"json({"rows": [{"name": "f", "predicted_s": 1}], "memory": {"measured_ring_buffer_bytes": 1e308}})json")
            .find("run.json: memory: field 'measured_ring_buffer_bytes' must be a byte count below 2^63") !=
        std::string::npos);
  CHECK(message_of(R"json({"step_time": {"predicted_s": 1}, "terms": [],
                           "memory": {"terms": [{"name": "w", "predicted_bytes": 1e19}]}})json")
            .find("memory.terms[0]: field 'predicted_bytes' must be a byte count below 2^63") != std::string::npos);

  const std::string bad = write_temp("bad.json", "{\"phases\": [");
  try {
    report::load_run_result(bad);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("not valid JSON") != std::string::npos);
  }
  std::remove(bad.c_str());
  CHECK_THROWS_AS(report::load_run_result("no/such/run.json"), Error);
}

TEST_CASE("ring timeline: a cp_comm allgather plan has no ring steps and the scope says so") {
  const Experiment e = test::report_experiment();
  sim::Prediction p = layout(e, Mesh{1, 2, 4, 1}, CpScheme::zigzag);
  p.options.cp_comm = CpComm::allgather;
  const auto t = report::ring_timeline(e, p);
  CHECK(t.ranks.empty());
  CHECK(t.scope.find("cp_comm allgather") != std::string::npos);
}
