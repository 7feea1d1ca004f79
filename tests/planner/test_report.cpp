// Reports: JSON fields and text tables.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "core/error.hpp"
#include "planner/report.hpp"
#include "tests/fixtures/experiments.hpp"

using namespace ringplan;
using namespace ringplan::planner;

namespace {
int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST_CASE("rejection_category: numbers become #, words stay") {
  CHECK(rejection_category("TP 16 > 8 GPUs per node") == "TP # > # GPUs per node");
  CHECK(rejection_category("out of memory: 93.1 GiB > 80 GiB") == "out of memory: # GiB > # GiB");
  CHECK(rejection_category("heads 96 % TP 64 != 0.") == "heads # % TP # != #.");
  CHECK(rejection_category("no digits") == "no digits");
  CHECK(rejection_category("TP 16 > 8 GPUs per node") == rejection_category("TP 32 > 4 GPUs per node"));
}

TEST_CASE("memory_text and options_text") {
  CHECK(memory_text(71.2 * units::gib_bytes, 80.0 * units::gib_bytes) == "71.2 GiB / 80 GiB");
  CHECK(memory_text(512.0 * units::mib_bytes, 80.0 * units::gib_bytes) == "512 MiB / 80 GiB");
  ParallelOptions o;
  o.micro_batch = 2;
  o.recompute = Recompute::selective;
  o.zero_stage = 1;
  o.sequence_parallel = true;
  o.cp_scheme = CpScheme::zigzag;
  o.interleave = 2;
  CHECK(options_text(Mesh{1, 1, 1, 1}, o) == "mb=2 rc=selective zero=1 flash");
  CHECK(options_text(Mesh{1, 8, 4, 2}, o) == "mb=2 rc=selective zero=1 sp zigzag ring v=2 flash");
  o.cp_comm = CpComm::allgather;  // the CP method is named where CP > 1 only
  CHECK(options_text(Mesh{1, 8, 4, 2}, o) == "mb=2 rc=selective zero=1 sp zigzag allgather v=2 flash");
  CHECK(options_text(Mesh{1, 1, 1, 1}, o) == "mb=2 rc=selective zero=1 flash");
  CHECK(options_json(o)["cp_comm"] == "allgather");
  CHECK(mesh_text(Mesh{4, 8, 16, 8}) == "dp=4 tp=8 cp=16 pp=8");
}

TEST_CASE("bytes_json: whole numbers, integers within int64, NaN refused") {
  CHECK(bytes_json(1536.4).is_number_integer());
  CHECK(bytes_json(1536.4).get<int64_t>() == 1536);
  CHECK(bytes_json(-0.4).get<int64_t>() == 0);
  // Sizes near their 2^31 limits multiply past int64_t: still a whole number, in a double.
  const nlohmann::json huge = bytes_json(1.5e29);
  CHECK(huge.is_number_float());
  CHECK(huge.get<double>() == 1.5e29);
  CHECK_THROWS_AS(bytes_json(std::nan("")), Error);
}

TEST_CASE("prediction_json: every documented field, one per memory and time term") {
  const Experiment e = test::tiny_experiment();
  const Mesh m{2, 2, 1, 1};
  const sim::Prediction p = sim::predict(e, m, e.options);
  const auto j = prediction_json(p);
  for (const char* k : {"step_time_s", "tokens_per_s", "tflops_per_device", "mfu", "peak_memory_bytes", "memory", "time",
                        "mesh", "options", "fits"})
    CHECK_MESSAGE(j.contains(k), k);
  // Byte counts are JSON integers (the nearest one); times stay exact doubles.
  for (const auto& t : sim::memory_terms(p.memory)) {
    CHECK_MESSAGE(j["memory"][std::string(t.name)].is_number_integer(), t.name);
    CHECK(j["memory"][std::string(t.name)].get<int64_t>() == std::llround(t.value));
  }
  for (const auto& t : sim::time_terms(p.time)) CHECK(j["time"][std::string(t.name)] == t.value);
  CHECK(j["memory"]["peak_bytes"].get<int64_t>() == std::llround(p.memory.peak_bytes));
  CHECK(j["peak_memory_bytes"].is_number_integer());
  CHECK(j["capacity_bytes"].is_number_integer());
  CHECK(j["capacity_bytes"].get<int64_t>() == std::llround(p.capacity_bytes));
  CHECK(j["time"]["step_time_s"] == p.time.step_time_s);
  CHECK(j["mesh"]["dp"] == 2);
  CHECK(j["mesh"]["tp"] == 2);
  CHECK(j["options"]["recompute"] == to_string(e.options.recompute));
  CHECK(j["step_time_s"].get<double>() == p.step_time_s);
  CHECK(j["fits"].get<bool>() == p.fits);
}

TEST_CASE("plan_json and plan_text: chosen (= best), fastest, K candidates, rejections, evaluated") {
  Experiment e = test::tiny_experiment();
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 3});
  REQUIRE(r.candidates.size() == 3);
  const auto j = plan_json(r);
  CHECK(j["candidates"].size() == 3);
  nlohmann::json first = j["candidates"][0];
  CHECK(first["group"] == 1);
  first.erase("group");
  CHECK(j["fastest"] == first);
  REQUIRE(r.chosen);
  CHECK(j["chosen"] == prediction_json(*r.chosen));
  CHECK(j["best"] == j["chosen"]);
  CHECK(j["schema_version"] == kJsonSchemaVersion);
  CHECK(kJsonSchemaVersion == 2);
  CHECK(j["ranking"]["band"].get<double>() == kRankingBand);
  CHECK(j["ranking"]["chosen_rank"] == r.chosen_rank);
  CHECK(!j["chosen"].is_null());
  CHECK(j["evaluated"] == r.evaluated);
  CHECK(j["enumerated"] == r.enumerated);
  REQUIRE(j["rejected"].size() == r.rejected.size());
  for (const auto& x : j["rejected"]) {
    CHECK(x.contains("reason"));
    CHECK(x["count"].get<int64_t>() > 0);
    CHECK(!x["example"].get<std::string>().empty());
  }
  const std::string table = top_table(r);
  // header, rule, 3 rows (fewer when a zigzag/striped twin is folded into the row above it), and
  // the chosen layout's own row when it ranks below the top 3
  CHECK(count_lines(table) <= 2 + 3 + (r.chosen_rank == 0 ? 1 : 0));
  CHECK(count_lines(table) >= 2 + 2);
  CHECK(table.find("rank") != std::string::npos);
  CHECK(table.find("MFU") != std::string::npos);
  CHECK(table.find(memory_text(r.candidates[0].peak_memory_bytes, r.candidates[0].capacity_bytes)) != std::string::npos);
  const std::string text = plan_text(e, r);
  CHECK(text.find("chosen plan") != std::string::npos);
  CHECK(text.find("rejected layouts") != std::string::npos);
  // Tables label terms without the JSON names' unit suffixes, and name no rejection with '#'.
  for (const auto& t : sim::time_terms(r.candidates[0].time)) {
    CHECK(text.find(term_label(t.name)) != std::string::npos);
    CHECK(text.find(std::string(t.name)) == std::string::npos);
  }
  for (const auto& t : sim::memory_terms(r.candidates[0].memory)) {
    if (t.name != "peak_bytes") CHECK(text.find(term_label(t.name)) != std::string::npos);
    CHECK(text.find(std::string(t.name)) == std::string::npos);
  }
  CHECK(text.find("_bytes") == std::string::npos);
  CHECK(text.find(" # ") == std::string::npos);
  CHECK(text.find("ranking band 3.0%") != std::string::npos);
  CHECK(text.find("chosen: ") != std::string::npos);
}

TEST_CASE("term_label drops the unit suffix of the JSON name") {
  CHECK(term_label("weights_bytes") == "weights");
  CHECK(term_label("ring_comm_exposed_s") == "ring comm exposed");
  CHECK(term_label("optimizer_s") == "optimizer");
  CHECK(term_label("mfu") == "mfu");
}

TEST_CASE("plan_json: best, chosen and fastest are null when nothing fits") {
  Experiment e = test::tiny_experiment();
  e.cluster.memory_bytes = 1.0 * units::mib_bytes;
  e.cluster.memory_reserved_bytes = 0;
  const PlanResult r = plan(e, {.gpus = 4, .top_k = 3});
  const auto j = plan_json(r);
  CHECK(j["best"].is_null());
  CHECK(j["chosen"].is_null());
  CHECK(j["fastest"].is_null());
  CHECK(j["candidates"].empty());
  CHECK(plan_text(e, r).find("no layout of") != std::string::npos);
}
