// Validation against published figures: signed error, mean/max, case discovery.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/units.hpp"
#include "planner/validation.hpp"
#include "tests/planner/fixtures.hpp"

using namespace ringplan;
using namespace ringplan::planner;
namespace fs = std::filesystem;

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

TEST_CASE("summarize: mean and max absolute error") {
  ValidationReport r;
  r.rows = {{"a", "step_time_s", 0, 0, -10.0}, {"b", "step_time_s", 0, 0, 4.0}, {"c", "mfu", 0, 0, 1.0}};
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

  // Named explicitly, a file without `published:` is an error, not skipped.
  CHECK_THROWS_AS(validate_paths({(dir / "sub" / "plain.yaml").string()}), ConfigError);
  CHECK_THROWS_AS(validate_paths({(dir / "nope.yaml").string()}), Error);
  CHECK_THROWS_AS(validate_paths({}), Error);
  std::error_code ec;
  fs::remove_all(dir, ec);
}
