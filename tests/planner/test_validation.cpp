// Validation against published figures: signed error, mean/max, case discovery.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/units.hpp"
#include "planner/validation.hpp"
#include "tests/fixtures/experiments.hpp"
#include "tests/fixtures/temp_dir.hpp"

using namespace ringplan;
using namespace ringplan::planner;
namespace fs = std::filesystem;
using ringplan_test::TempDir;

namespace {

Experiment a_case(const std::string& name, double time_factor) {
  Experiment e = test::tiny_experiment();
  e.name = name;
  e.mesh = Mesh{2, 2, 1, 1};
  const sim::Prediction p = sim::predict(e, *e.mesh, e.options);
  Published pub;
  pub.step_time_s = p.step_time_s * time_factor;  // the model is off by 1/factor - 1
  pub.peak_memory_gib = p.peak_memory_bytes / units::gib_bytes;  // exact
  pub.source = "made up for the test";
  e.published = pub;
  return e;
}

}  // namespace

TEST_CASE("validate_case: signed error per published metric") {
  const Experiment e = a_case("c1", 1.25);
  const auto rows = validate_case(e);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].metric == "step_time_s");
  CHECK(rows[0].name == "c1");
  CHECK(rows[0].error_pct == doctest::Approx(100.0 * (1.0 / 1.25 - 1.0)));  // predicts less: negative
  CHECK(rows[1].metric == "peak_memory_gib");
  CHECK(std::abs(rows[1].error_pct) < 1e-9);
}

TEST_CASE("validate_case: peak_memory_allocated_gib is compared without the profile's reserve") {
  Experiment e = a_case("c1", 1.0);
  const sim::Prediction p = sim::predict(e, *e.mesh, e.options);
  REQUIRE(p.memory.reserved_bytes > 0);
  e.published = Published{};
  e.published->source = "made up for the test";
  // Tensors alone: the predicted peak less the reserve, exactly.
  e.published->peak_memory_allocated_gib = (p.peak_memory_bytes - p.memory.reserved_bytes) / units::gib_bytes;
  auto rows = validate_case(e);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].metric == "peak_memory_allocated_gib");
  CHECK(std::abs(rows[0].error_pct) < 1e-9);
  CHECK_FALSE(rows[0].time_metric);
  // The same figure read as reserved memory would be short of the prediction by the reserve.
  e.published->peak_memory_gib = e.published->peak_memory_allocated_gib;
  rows = validate_case(e);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].metric == "peak_memory_gib");
  CHECK(rows[0].predicted - rows[1].predicted == doctest::Approx(p.memory.reserved_bytes / units::gib_bytes));
}

TEST_CASE("validate_case: a case needs a mesh and a published metric") {
  Experiment e = a_case("c", 1.0);
  e.mesh.reset();
  CHECK_THROWS_AS(validate_case(e), ConfigError);
  e = a_case("c", 1.0);
  e.published.reset();
  CHECK_THROWS_AS(validate_case(e), ConfigError);
  e = a_case("c", 1.0);
  e.published = Published{};
  CHECK_THROWS_WITH_AS(validate_case(e), doctest::Contains("no metric given"), ConfigError);
  e = a_case("c", 1.0);
  e.published->step_time_s = -1.0;
  CHECK_THROWS_WITH_AS(validate_case(e), doctest::Contains("published.step_time_s"), ConfigError);
}

TEST_CASE("validate_paths: measured runs predicted not to fit are listed once per case, with peak and capacity") {
  TempDir tmp;
  Experiment fits = a_case("fits", 1.0);
  Experiment over = a_case("over", 1.0);  // the same run on a device with less memory than predicted
  const sim::Prediction p = sim::predict(over, *over.mesh, over.options);
  over.cluster.memory_bytes = 0.9 * p.peak_memory_bytes;
  const std::string a = tmp.file("fits.yaml", experiment_to_yaml(fits));
  const std::string b = tmp.file("over.yaml", experiment_to_yaml(over));
  const ValidationReport r = validate_paths({a, b});
  REQUIRE(r.cases == 2);
  REQUIRE(r.rows.size() == 4);  // step time and peak memory each
  const std::vector<size_t> idx = rows_predicted_not_to_fit(r);
  REQUIRE(idx.size() == 1);
  CHECK(r.rows[idx[0]].name == "over");
  CHECK(r.rows[idx[0]].peak_memory_bytes == doctest::Approx(p.peak_memory_bytes));
  CHECK(r.rows[idx[0]].capacity_bytes == doctest::Approx(0.9 * p.peak_memory_bytes).epsilon(1e-6));
  const std::string text = validation_text(r);
  CHECK(text.find("measured runs predicted not to fit: 1 of 2") != std::string::npos);
  CHECK(text.find("over: predicted") != std::string::npos);
  const auto j = validation_json(r);
  REQUIRE(j["predicted_not_to_fit"].size() == 1);
  CHECK(j["predicted_not_to_fit"][0]["name"] == "over");
  CHECK(j["predicted_not_to_fit"][0]["predicted_peak_gib"].get<double>() ==
        doctest::Approx(p.peak_memory_bytes / units::gib_bytes));
}

TEST_CASE("summarize: mean and max absolute error") {
  auto with_error = [](double error_pct) {
    ValidationRow x;
    x.error_pct = error_pct;
    return x;
  };
  ValidationReport r;
  r.rows = {with_error(-10.0), with_error(4.0), with_error(1.0)};
  summarize(r);
  CHECK(r.mean_abs_error_pct == doctest::Approx(5.0));
  CHECK(r.max_abs_error_pct == doctest::Approx(10.0));
  ValidationReport empty;
  summarize(empty);
  CHECK(empty.mean_abs_error_pct == 0.0);
}

TEST_CASE("validate_paths: folders are searched recursively, non-cases skipped") {
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("ringplan_test_validate_" + std::to_string(rd()));
  fs::create_directories(dir / "sub");
  std::ofstream(dir / "c1.yaml") << experiment_to_yaml(a_case("c1", 1.25));
  std::ofstream(dir / "sub" / "c2.yml") << experiment_to_yaml(a_case("c2", 0.8));
  Experiment plain = test::tiny_experiment();  // no published block: not a case
  std::ofstream(dir / "sub" / "plain.yaml") << experiment_to_yaml(plain);

  const ValidationReport r = validate_paths({dir.string()});
  CHECK(r.cases == 2);
  CHECK(r.rows.size() == 4);
  CHECK(r.skipped.size() == 1);
  const double e1 = 100.0 * (1.0 / 1.25 - 1.0), e2 = 100.0 * (1.0 / 0.8 - 1.0);
  CHECK(r.max_abs_error_pct == doctest::Approx(std::max(std::abs(e1), std::abs(e2))));
  CHECK(r.mean_abs_error_pct == doctest::Approx((std::abs(e1) + std::abs(e2)) / 4.0));
  const auto j = validation_json(r);
  CHECK(j["cases"].size() == 4);
  for (const auto& c : j["cases"])
    for (const char* k : {"name", "metric", "predicted", "published", "error_pct"}) CHECK(c.contains(k));
  CHECK(validation_text(r).find("mean |error|") != std::string::npos);

  // A case reached twice (the folder, the file inside it, and the file again by another spelling
  // of its path) counts once.
  const std::string c1 = (dir / "c1.yaml").string(), c1_again = (dir / "sub" / ".." / "c1.yaml").string();
  CHECK(collect_cases({dir.string(), c1, c1_again}, nullptr).size() == 2);
  CHECK(validate_paths({dir.string(), c1}).cases == 2);
  CHECK(validate_paths({c1, c1}).cases == 1);

  // Named explicitly, a file without `published:` is a case that is refused, not skipped; as
  // the only case, nothing is evaluated: the command fails with the reason.
  CHECK_THROWS_WITH_AS(validate_paths({(dir / "sub" / "plain.yaml").string()}),
                       doctest::Contains("a validation case needs a fixed mesh"), Error);
  CHECK_THROWS_AS(validate_paths({(dir / "nope.yaml").string()}), Error);
  CHECK_THROWS_AS(validate_paths({}), Error);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// A case whose layout check_layout() refuses: 9 heads do not split over TP 2.
// Loads, but the cost model refuses its layout (interleave needs PP > 1): refused by validate_case.
Experiment refused_case(const std::string& name) {
  Experiment e = a_case(name, 1.0);  // predicted with the good model; the figure does not matter
  e.options.interleave = 2;
  return e;
}

// A mesh that does not fit its model: refused when the file is loaded, with file:line:field.
Experiment bad_mesh_case(const std::string& name) {
  Experiment e = a_case(name, 1.0);
  e.model.heads = 9;
  e.model.kv_heads = 3;
  return e;
}

// The line of the first line of `path` that starts with `prefix` (after indentation), 1-based.
int line_starting(const std::string& path, const std::string& prefix) {
  std::ifstream in(path);
  std::string l;
  for (int n = 1; std::getline(in, l); ++n)
    if (l.find_first_not_of(' ') != std::string::npos && l.substr(l.find_first_not_of(' ')).rfind(prefix, 0) == 0)
      return n;
  return 0;
}

TEST_CASE("validate_paths: a refused case is listed with its reason, the others are still evaluated") {
  TempDir tmp;
  const std::string good = (tmp.path / "a_good.yaml").string(), bad = (tmp.path / "b_refused.yaml").string();
  std::ofstream(good) << experiment_to_yaml(a_case("good", 1.25));
  std::ofstream(bad) << experiment_to_yaml(refused_case("bad"));

  // Before: the refused case threw and no number was reported for the good one.
  const ValidationReport r = validate_paths({tmp.path.string()});
  CHECK(r.cases == 1);
  REQUIRE(r.rows.size() == 2);
  for (const auto& x : r.rows) {
    CHECK(x.name == "good");
    CHECK(x.path == good);
    CHECK((x.mesh == Mesh{2, 2, 1, 1}));
    CHECK(x.source == "made up for the test");
  }
  REQUIRE(r.refused.size() == 1);
  CHECK(r.refused[0].path == bad);
  CHECK(r.refused[0].name == "bad");
  // Named at the line of the option the reason is about (options.interleave) in the file.
  const int interleave_line = line_starting(bad, "interleave:");
  REQUIRE(interleave_line > 0);
  CHECK(r.refused[0].reason ==
        "line " + std::to_string(interleave_line) +
            ": options.interleave: layout dp=2 tp=2 cp=1 pp=1 cannot run: interleave 2 needs PP > 1");
  // The statistics cover the evaluated case only (its exact memory row has 0 error).
  const double e1 = std::abs(100.0 * (1.0 / 1.25 - 1.0));
  CHECK(r.max_abs_error_pct == doctest::Approx(e1));
  CHECK(r.mean_abs_error_pct == doctest::Approx(e1 / 2.0));

  const auto j = validation_json(r);
  CHECK(j["case_count"] == 1);
  CHECK(j["refused_count"] == 1);
  REQUIRE(j["refused"].size() == 1);
  CHECK(j["refused"][0]["path"] == bad);
  CHECK(j["refused"][0]["name"] == "bad");
  CHECK(j["refused"][0]["reason"] == r.refused[0].reason);
  REQUIRE(j["cases"].size() == 2);
  for (const auto& c : j["cases"]) {
    CHECK(c["mesh"] == nlohmann::json({{"dp", 2}, {"tp", 2}, {"cp", 1}, {"pp", 1}}));
    CHECK(c["source"] == "made up for the test");
    CHECK(c["path"] == good);
  }
  CHECK(j["cases"][0]["metric"] == "step_time_s");
  CHECK(j["cases"][1]["metric"] == "peak_memory_gib");

  const std::string text = validation_text(r);
  CHECK(text.find("1 cases evaluated, 1 refused") != std::string::npos);
  CHECK(text.find(bad + ": " + r.refused[0].reason) != std::string::npos);
  CHECK(text.find("dp=2 tp=2 cp=1 pp=1") != std::string::npos);
}

TEST_CASE("validate_paths: an invalid experiment in valid YAML is refused, unparseable YAML fails the command") {
  TempDir tmp;
  std::ofstream(tmp.path / "a_good.yaml") << experiment_to_yaml(a_case("good", 1.0));
  // kv_heads 3 does not divide heads 8: load_experiment() rejects the file, with its line.
  std::string yaml = experiment_to_yaml(a_case("invalid", 1.0));
  const size_t at = yaml.find("kv_heads: 2");
  REQUIRE(at != std::string::npos);
  yaml.replace(at, 11, "kv_heads: 3");
  const std::string invalid = (tmp.path / "b_invalid.yaml").string();
  std::ofstream(invalid) << yaml;
  // A case without a mesh is refused too.
  Experiment no_mesh = a_case("no_mesh", 1.0);
  no_mesh.mesh.reset();
  std::ofstream(tmp.path / "c_no_mesh.yaml") << experiment_to_yaml(no_mesh);

  const ValidationReport r = validate_paths({tmp.path.string()});
  CHECK(r.cases == 1);
  REQUIRE(r.refused.size() == 2);
  CHECK(r.refused[0].path == invalid);
  CHECK(r.refused[0].name == "");  // did not load as an experiment
  CHECK(r.refused[0].reason.rfind("line ", 0) == 0);
  CHECK(r.refused[0].reason.find("model.kv_heads: heads (8) must be a multiple of kv_heads (3)") != std::string::npos);
  CHECK(r.refused[1].name == "no_mesh");
  CHECK(r.refused[1].reason == "line 1: mesh: a validation case needs a fixed mesh (dp, tp, cp, pp)");

  // Not YAML at all: the command fails (bad input), whatever the other cases hold.
  std::ofstream(tmp.path / "d_broken.yaml") << "published: {step_time_s: 1\nname: [\n";
  CHECK_THROWS_WITH_AS(validate_paths({tmp.path.string()}), doctest::Contains("YAML syntax error"), ConfigError);
}

TEST_CASE("validate_paths: when every case is refused the command fails with the reasons") {
  TempDir tmp;
  const std::string bad = (tmp.path / "bad.yaml").string();
  std::ofstream(bad) << experiment_to_yaml(refused_case("bad"));
  try {
    validate_paths({tmp.path.string()});
    FAIL("expected bad input");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    const std::string what = err.what();
    CHECK(what.find("no case could be evaluated (1 refused)") != std::string::npos);
    CHECK(what.find(bad + ": line " + std::to_string(line_starting(bad, "interleave:")) +
                    ": options.interleave: layout dp=2 tp=2 cp=1 pp=1 cannot run: interleave 2 needs PP > 1") !=
          std::string::npos);
  }
}

TEST_CASE("validate_paths: a layout the cost model refuses for no option of the file is named at its mesh line") {
  TempDir tmp;
  std::ofstream(tmp.path / "a_good.yaml") << experiment_to_yaml(a_case("good", 1.0));
  // interleave in the file, but the reason the cost model gives is about the micro-batches,
  // and without `options.micro_batch` in the file the mesh line is named.
  Experiment e = a_case("bad", 1.0);
  e.options.micro_batch = 3;  // the global batch is not a multiple of dp x 3
  std::string yaml = experiment_to_yaml(e);
  const size_t at = yaml.find("micro_batch: 3\n");
  REQUIRE(at != std::string::npos);
  yaml.erase(yaml.rfind('\n', at) + 1, yaml.find('\n', at) - yaml.rfind('\n', at));
  const std::string bad = (tmp.path / "bad.yaml").string();
  std::ofstream(bad) << yaml;
  Experiment loaded = load_experiment(bad);
  loaded.options.micro_batch = 3;  // as a command-line override would
  try {
    validate_case(loaded);
    FAIL("expected bad input");
  } catch (const ConfigError& err) {
    CHECK(err.line() == line_starting(bad, "mesh:"));
    CHECK(err.field() == "mesh");
    CHECK(std::string(err.what()).find("not divisible by DP×micro_batch") != std::string::npos);
  }
}

TEST_CASE("validate_paths: a mesh that does not fit its model is refused at load with line, field and valid values") {
  TempDir tmp;
  const std::string bad = (tmp.path / "bad.yaml").string();
  std::ofstream(tmp.path / "a_good.yaml") << experiment_to_yaml(a_case("good", 1.0));
  std::ofstream(bad) << experiment_to_yaml(bad_mesh_case("bad"));
  const ValidationReport r = validate_paths({tmp.path.string()});
  REQUIRE(r.refused.size() == 1);
  CHECK(r.refused[0].path == bad);
  // The flow mapping `mesh: {dp: 2, tp: 2, ...}` puts mesh.tp on the line of `mesh:`.
  CHECK(r.refused[0].reason == "line " + std::to_string(line_starting(bad, "mesh:")) +
                                   ": mesh.tp: 2 does not divide heads 9 of model 'tiny_gqa'; valid: 1, 3 (the "
                                   "divisors of heads 9, kv_heads 3 and ffn_hidden 768)");
}

namespace {
// A row of a ranking group: throughput `published`, model's `predicted`, the case's mesh.
ValidationRow ranked(const std::string& name, double predicted, double published, Mesh mesh, bool fits = true) {
  ValidationRow x;
  x.name = name;
  x.metric = "tokens_per_s_per_device";
  x.predicted = predicted;
  x.published = published;
  x.error_pct = 100.0 * (predicted - published) / published;
  x.mesh = mesh;
  x.ranking_group = "job";
  x.time_metric = true;
  x.higher_is_better = true;
  x.fits = fits;
  return x;
}
}  // namespace

TEST_CASE("error_stats: bias, mean and max absolute error") {
  const ErrorStats s = error_stats({-10.0, 4.0, 3.0});
  CHECK(s.n == 3);
  CHECK(s.mean_signed_pct == doctest::Approx(-1.0));
  CHECK(s.mean_abs_pct == doctest::Approx(17.0 / 3.0));
  CHECK(s.max_abs_pct == doctest::Approx(10.0));
  CHECK(error_stats({}).n == 0);
}

TEST_CASE("ranking_groups: spearman, ordered pairs, regret of the model's pick and of the heuristic") {
  // Measured: a 100, b 90, c 80, d 70. The model swaps a and b and ranks b first.
  std::vector<ValidationRow> rows{ranked("a", 95, 100, Mesh{1, 8, 1, 2}), ranked("b", 99, 90, Mesh{2, 4, 1, 2}),
                                  ranked("c", 85, 80, Mesh{1, 2, 1, 8}), ranked("d", 60, 70, Mesh{2, 2, 1, 4})};
  rows.push_back(ranked("other job", 1, 1, Mesh{}));
  rows.back().ranking_group = "alone";  // a group of one is not ranked
  const auto groups = ranking_groups(rows);
  REQUIRE(groups.size() == 1);
  const RankingGroup& g = groups[0];
  CHECK(g.rows.size() == 4);
  // Ranks predicted (b, a, c, d) = (4, 3, 2, 1) vs measured (a, b, c, d) = (4, 3, 2, 1): one swap,
  // sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8.
  CHECK(g.spearman == doctest::Approx(0.8));
  CHECK(g.pairs == 6);
  CHECK(g.pairs_ordered == 5);
  CHECK(rows[g.measured_best].name == "a");
  CHECK(rows[g.predicted_best].name == "b");
  CHECK(g.pick_regret_pct == doctest::Approx(10.0));
  // Heuristic: smallest TP*CP*PP = 8 for b (4x2) and d (2x4): TP filled first, b; regret 10 %.
  REQUIRE(g.heuristic_picks.size() == 1);
  CHECK(rows[g.heuristic_picks[0]].name == "b");
  CHECK(g.heuristic_regret_pct == doctest::Approx(10.0));

  // A case that does not fit is not the heuristic's choice; same-mesh ties share it.
  rows[1].fits = false;
  rows[3].mesh = Mesh{2, 4, 1, 2};
  rows.push_back(ranked("e", 50, 75, Mesh{2, 4, 1, 2}));
  const auto g2 = ranking_groups(rows);
  REQUIRE(g2.size() == 1);  // e joins "job"; the group of one stays out
  const RankingGroup& h = g2[0];
  CHECK(h.heuristic_picks.size() == 2);  // d and e, same mesh
  CHECK(h.heuristic_regret_pct == doctest::Approx(0.5 * (30.0 + 25.0)));
}

TEST_CASE("ranking_groups: step times rank inverted, ties are average ranks") {
  auto step = [](const std::string& n, double pred, double pub) {
    ValidationRow x = ranked(n, pred, pub, Mesh{1, 1, 1, 1});
    x.metric = "step_time_s";
    x.higher_is_better = false;
    return x;
  };
  // Measured times 1, 2, 2 (a fastest); predicted 1.5, 1.0, 3.0 (b fastest).
  const std::vector<ValidationRow> rows{step("a", 1.5, 1.0), step("b", 1.0, 2.0), step("c", 3.0, 2.0)};
  const auto groups = ranking_groups(rows);
  REQUIRE(groups.size() == 1);
  CHECK(rows[groups[0].predicted_best].name == "b");
  CHECK(groups[0].pick_regret_pct == doctest::Approx(50.0));  // throughput 1/2 of the best
  CHECK(groups[0].pairs == 2);                                 // b and c measured equal: not a pair
  CHECK(groups[0].pairs_ordered == 1);                         // a before c
  // Throughput ranks: measured (3, 1.5, 1.5), predicted (2, 3, 1): centred (1, -0.5, -0.5) and
  // (0, 1, -1), rho = 0. Breaking the tie either way instead of averaging would give +-0.5.
  CHECK(groups[0].spearman == doctest::Approx(0.0));
}

TEST_CASE("summarize: by source folder and by TP degree in throughput terms") {
  ValidationRow a = ranked("a", 110, 100, Mesh{1, 1, 1, 1});  // +10 % throughput
  a.source_folder = "s1";
  ValidationRow b = ranked("b", 1.0, 1.25, Mesh{1, 8, 1, 1});  // step time 20 % short = throughput +25 %
  b.metric = "step_time_s";
  b.higher_is_better = false;
  b.error_pct = -20.0;
  b.source_folder = "s2";
  b.ranking_group = "other";
  ValidationRow m = ranked("a", 50, 40, Mesh{1, 1, 1, 1});  // memory: by source, not by TP
  m.metric = "peak_memory_gib";
  m.time_metric = false;
  m.source_folder = "s1";
  ValidationReport r;
  r.rows = {a, b, m};
  summarize(r);
  REQUIRE(r.by_source.size() == 2);
  CHECK(r.by_source["s1"].n == 2);
  CHECK(r.by_source["s1"].mean_signed_pct == doctest::Approx(17.5));
  CHECK(r.by_source["s2"].mean_signed_pct == doctest::Approx(-20.0));
  REQUIRE(r.time_by_tp.size() == 2);
  CHECK(r.time_by_tp[1].n == 1);
  CHECK(r.time_by_tp[1].mean_signed_pct == doctest::Approx(10.0));
  CHECK(r.time_by_tp[8].mean_signed_pct == doctest::Approx(25.0));
  CHECK(r.ranking.empty());  // no group of two
  const auto j = validation_json(r);
  CHECK(j["time_by_tp"]["8"]["mean_signed_error_pct"].get<double>() == doctest::Approx(25.0));
  CHECK(j["by_source"]["s1"]["cases"].get<int64_t>() == 2);
  CHECK(j["ranking"]["group_count"].get<int64_t>() == 0);
  CHECK(j["ranking"]["mean_spearman"].is_null());
  // Both time rows ran on one node (1 and 8 GPUs): one scale band.
  REQUIRE(r.time_by_gpus.size() == 1);
  CHECK(r.time_by_gpus.begin()->first == 8);
  CHECK(r.time_by_gpus[8].n == 2);
  CHECK(r.time_by_gpus[8].mean_signed_pct == doctest::Approx(17.5));
  CHECK(j["time_by_gpus"]["1-8"]["cases"].get<int64_t>() == 2);
}

TEST_CASE("gpu_scale_band: the scale bands validate reports the time error in") {
  CHECK(gpu_scale_band(1) == 8);
  CHECK(gpu_scale_band(8) == 8);
  CHECK(gpu_scale_band(9) == 64);
  CHECK(gpu_scale_band(64) == 64);
  CHECK(gpu_scale_band(65) == 512);
  CHECK(gpu_scale_band(512) == 512);
  CHECK(gpu_scale_band(513) == 4096);
  CHECK(gpu_scale_band(16384) == std::numeric_limits<int64_t>::max());
  CHECK(gpu_scale_label(8) == "1-8");
  CHECK(gpu_scale_label(64) == "9-64");
  CHECK(gpu_scale_label(512) == "65-512");
  CHECK(gpu_scale_label(4096) == "513-4096");
  CHECK(gpu_scale_label(gpu_scale_band(16384)) == ">4096");
  // Rows on 8, 128 and 512 GPUs: two bands, each with its own bias; the text names them.
  ValidationReport r;
  r.rows = {ranked("a", 110, 100, Mesh{8, 1, 1, 1}), ranked("b", 120, 100, Mesh{16, 8, 1, 1}),
            ranked("c", 80, 100, Mesh{64, 8, 1, 1})};
  for (auto& x : r.rows) x.ranking_group = x.name;  // no ranking groups
  summarize(r);
  REQUIRE(r.time_by_gpus.size() == 2);
  CHECK(r.time_by_gpus[8].mean_signed_pct == doctest::Approx(10.0));
  CHECK(r.time_by_gpus[512].n == 2);
  CHECK(r.time_by_gpus[512].mean_signed_pct == doctest::Approx(0.0));
  CHECK(r.time_by_gpus[512].mean_abs_pct == doctest::Approx(20.0));
  const std::string text = validation_text(r);
  CHECK(text.find("by GPU count") != std::string::npos);
  CHECK(text.find("65-512") != std::string::npos);
}
