// Plan files: round trip through write_plan_file/read_plan_file and core's load_experiment,
// and clear errors for malformed files.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "planner/plan_file.hpp"
#include "planner/planner.hpp"
#include "tests/fixtures/experiments.hpp"
#include "tests/fixtures/temp_dir.hpp"

using namespace ringplan;
using namespace ringplan::planner;
namespace fs = std::filesystem;
using ringplan_test::read_file;
using ringplan_test::TempDir;

namespace {

// Replaces the first occurrence of `from` in `s` (the test fails if absent).
std::string replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, from);
  return s.replace(at, from.size(), to);
}

std::string error_of(const std::string& path) {
  try {
    read_plan_file(path);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("plan file: round trip keeps mesh, options, model, cluster, training and figures") {
  TempDir dir;
  Experiment e = test::tiny_experiment();
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1});
  REQUIRE(!r.candidates.empty());
  const sim::Prediction& best = r.candidates.front();
  const std::string path = dir.file("plan.yaml");
  write_plan_file(path, e, best);

  const PlanFile pf = read_plan_file(path);
  REQUIRE(pf.experiment.mesh.has_value());
  CHECK(*pf.experiment.mesh == best.mesh);
  CHECK(pf.experiment.options == best.options);
  CHECK(pf.experiment.model.layers == e.model.layers);
  CHECK(pf.experiment.model.kv_heads == e.model.kv_heads);
  CHECK(pf.experiment.cluster.gpus_per_node == e.cluster.gpus_per_node);
  CHECK(pf.experiment.cluster.memory_bytes == doctest::Approx(e.cluster.memory_bytes));
  CHECK(pf.experiment.training.seq_len == e.training.seq_len);
  CHECK(pf.predicted.step_time_s == doctest::Approx(best.step_time_s).epsilon(1e-12));
  CHECK(pf.predicted.tokens_per_s == doctest::Approx(best.tokens_per_s).epsilon(1e-12));
  CHECK(pf.predicted.peak_memory_bytes == doctest::Approx(best.peak_memory_bytes).epsilon(1e-12));
  CHECK(pf.predicted.micro_batches == best.micro_batches);
  CHECK(pf.predicted.fits == best.fits);

  // Self-contained: core's loader reads it as an experiment, and predicting it again gives
  // the recorded figures.
  const Experiment again = load_experiment(path);
  const sim::Prediction p2 = sim::predict(again, *again.mesh, again.options);
  CHECK(p2.step_time_s == doctest::Approx(best.step_time_s).epsilon(1e-9));
  CHECK(p2.peak_memory_bytes == doctest::Approx(best.peak_memory_bytes).epsilon(1e-9));
}

TEST_CASE("plan file: cp_comm allgather round-trips and predicts the recorded figures again") {
  TempDir dir;
  Experiment e = test::tiny_experiment();
  e.search.cp_comm = {CpComm::allgather};
  e.search.max_cp = 4;
  PlanResult r = plan(e, {.gpus = 4, .top_k = 1000});
  const sim::Prediction* chosen = nullptr;
  for (const auto& p : r.candidates)
    if (p.mesh.cp > 1) {
      chosen = &p;
      break;
    }
  REQUIRE(chosen != nullptr);
  REQUIRE(chosen->options.cp_comm == CpComm::allgather);
  const std::string path = dir.file("plan_ag.yaml");
  write_plan_file(path, e, *chosen);
  const PlanFile pf = read_plan_file(path);
  CHECK(pf.experiment.options == chosen->options);
  CHECK(pf.experiment.options.cp_comm == CpComm::allgather);
  const sim::Prediction again = sim::predict(pf.experiment, *pf.experiment.mesh, pf.experiment.options);
  CHECK(again.step_time_s == doctest::Approx(chosen->step_time_s).epsilon(1e-9));
  CHECK(again.peak_memory_bytes == doctest::Approx(chosen->peak_memory_bytes).epsilon(1e-9));
  CHECK(prediction_mismatch(pf) == "");
}

TEST_CASE("plan file: a plan made for fewer GPUs than the experiment names records its own count") {
  TempDir dir;
  Experiment e = test::tiny_experiment();  // gpus: 4
  const PlanResult r = plan(e, {.gpus = 2, .top_k = 1});
  REQUIRE(!r.candidates.empty());
  const std::string path = dir.file("plan2.yaml");
  write_plan_file(path, e, r.candidates.front());
  const PlanFile pf = read_plan_file(path);
  CHECK(pf.experiment.mesh->world_size() == 2);
  CHECK(pf.experiment.gpus == 2);
  CHECK(prediction_mismatch(pf) == "");  // its figures are those of the layout it records
}

TEST_CASE("plan file: malformed files name the field and what is valid") {
  TempDir dir;
  Experiment e = test::tiny_experiment();
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1});
  REQUIRE(!r.candidates.empty());
  const std::string good = dir.file("good.yaml");
  write_plan_file(good, e, r.candidates.front());
  const std::string text = read_file(good);

  CHECK(error_of(dir.path.string() + "/missing.yaml").find("plan file not found") != std::string::npos);
  CHECK(error_of(dir.file("notyaml.yaml", "a: [1, 2\n")).find("not valid YAML") != std::string::npos);
  CHECK(error_of(dir.file("list.yaml", "- 1\n- 2\n")).find("a plan file is a mapping") != std::string::npos);
  CHECK(error_of(dir.file("nover.yaml", replace(text, "ringplan_plan: 1", "other: 1"))).find("ringplan_plan: missing") !=
        std::string::npos);
  CHECK(error_of(dir.file("newver.yaml", replace(text, "ringplan_plan: 1", "ringplan_plan: 7")))
            .find("unsupported plan file version '7'") != std::string::npos);
  CHECK(error_of(dir.file("nopred.yaml", replace(text, "prediction:", "predictions:"))).find("prediction: missing") !=
        std::string::npos);
  const std::string bad_type = error_of(dir.file("badtype.yaml", replace(text, "step_time_s: ", "step_time_s: fast #")));
  CHECK(bad_type.find("prediction.step_time_s") != std::string::npos);
  CHECK(bad_type.find("expected a time in seconds") != std::string::npos);
  CHECK(bad_type.find("badtype.yaml:") != std::string::npos);  // file:line
  CHECK(error_of(dir.file("nofield.yaml", replace(text, "tokens_per_s:", "tokens_per_sec:")))
            .find("prediction.tokens_per_s: missing") != std::string::npos);
  CHECK(error_of(dir.file("noexp.yaml", "ringplan_plan: 1\nprediction: {step_time_s: 1}\n# end of ringplan plan\n")).find("experiment: missing") !=
        std::string::npos);
  // A well-formed experiment without a mesh is not a plan.
  Experiment nomesh = e;
  nomesh.mesh.reset();
  std::string exp_text = "ringplan_plan: 1\nexperiment:\n";
  std::string body = experiment_to_yaml(nomesh);
  for (size_t pos = 0; pos < body.size();) {  // indent the experiment under `experiment:`
    const size_t nl = body.find('\n', pos);
    exp_text += "  " + body.substr(pos, nl - pos) + "\n";
    pos = nl + 1;
  }
  exp_text += "prediction: {step_time_s: 1, tokens_per_s: 1, tflops_per_device: 1, mfu: 0.1, peak_memory_gib: 1, "
              "capacity_gib: 2, micro_batches: 1, fits: true}\n# end of ringplan plan\n";
  CHECK(error_of(dir.file("nomesh.yaml", exp_text)).find("experiment.mesh: missing") != std::string::npos);
  // Recorded figures are finite numbers in range, unquoted, and each key appears once.
  CHECK(error_of(dir.file("nanmfu.yaml", replace(text, "mfu: ", "mfu: .nan #"))).find("prediction.mfu: .nan is not valid") !=
        std::string::npos);
  CHECK(error_of(dir.file("quoted.yaml", replace(text, "micro_batches: ", "micro_batches: \"12\" #")))
            .find("got the quoted text \"12\"") != std::string::npos);
  CHECK(error_of(dir.file("dup.yaml", replace(text, "  fits:", "  mfu: 0.5\n  fits:"))).find("prediction.mfu: appears twice") !=
        std::string::npos);
  // Cut short anywhere before its last line (here: before `fits:`), a plan is refused as such.
  const std::string cut = error_of(dir.file("cut.yaml", text.substr(0, text.find("  fits:"))));
  CHECK(cut.find("cut.yaml:") != std::string::npos);
  CHECK(cut.find("file ends without its final line `# end of ringplan plan`") != std::string::npos);
}

TEST_CASE("plan file: a recorded prediction its experiment no longer gives is named, figure by figure") {
  TempDir dir;
  Experiment e = test::tiny_experiment();
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 1});
  REQUIRE(!r.candidates.empty());
  const std::string good = dir.file("good.yaml");
  write_plan_file(good, e, r.candidates.front());
  const PlanFile pf = read_plan_file(good);
  CHECK(pf.path == good);
  CHECK(pf.prediction_line > 1);
  CHECK(read_file(good).find("prediction:") != std::string::npos);
  // As written by ringplan: the figures are its experiment's.
  CHECK(prediction_mismatch(pf) == "");

  // A figure typed over: named with the layout's value.
  const std::string text = read_file(good);
  const std::string mfu =
      prediction_mismatch(read_plan_file(dir.file("mfu.yaml", replace(text, "mfu: ", "mfu: 7.5 #"))));
  CHECK(mfu.rfind("mfu 7.5 (its layout: ", 0) == 0);
  CHECK(mfu.find("step_time_s") == std::string::npos);

  // The layout edited under the recorded figures: the figures it changes are named.
  const Mesh m = *pf.experiment.mesh;
  REQUIRE(m.world_size() == 4);
  const std::string from = fmt::format("{{dp: {}, tp: {}, cp: {}, pp: {}}}", m.dp, m.tp, m.cp, m.pp);
  REQUIRE(text.find(from) != std::string::npos);
  const Mesh other = m.dp == 4 ? Mesh{2, 1, 2, 1} : Mesh{4, 1, 1, 1};
  const std::string edited = replace(
      text, from, fmt::format("{{dp: {}, tp: {}, cp: {}, pp: {}}}", other.dp, other.tp, other.cp, other.pp));
  const std::string layout = prediction_mismatch(read_plan_file(dir.file("mesh.yaml", edited)));
  CHECK(layout.find("step_time_s ") != std::string::npos);
  CHECK(layout.find("peak_memory_gib ") != std::string::npos);
}

TEST_CASE("plan file: plans of the shipped experiments record their layout's figures (no mismatch note)") {
  TempDir dir;
  for (const char* name : {"default.yaml", "cpu_small.yaml", "llama3_405b_128k.yaml"}) {
    const Experiment e = load_experiment(std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/" + name);
    const PlanResult r = plan(e, {.top_k = 1});
    REQUIRE(!r.candidates.empty());
    const std::string path = dir.file(std::string("plan_") + name);
    write_plan_file(path, e, r.candidates.front());
    CAPTURE(name);
    CHECK(prediction_mismatch(read_plan_file(path)) == "");
  }
}
