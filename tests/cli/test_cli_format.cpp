// End-to-end checks of the output conventions: JSON carries numbers (schema_version, whole byte
// counts, *_s and *_pct numbers), and text prints every quantity in its one format
// (core/format.hpp), the same in simulate, plan and the HTML report. Runs the built binary;
// doctest's main is test_cli.cpp's.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/format.hpp"
#include "tests/fixtures/temp_dir.hpp"

namespace fs = std::filesystem;
using ringplan_test::read_file;
using ringplan_test::TempDir;

namespace {

const std::string kConfigs = std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/";

struct Result {
  int rc = -1;
  std::string out;
};

// Runs `ringplan ARGS` (shell words, quoted where needed); stderr is discarded.
Result run_cli(const std::string& args) {
  const char* env = std::getenv("RINGPLAN_TEST_BIN");
  const std::string bin = env != nullptr && *env != '\0' ? env : RINGPLAN_BIN;
  Result r;
  FILE* p = popen(("'" + bin + "' " + args + " 2>/dev/null").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

namespace {

// Every *_bytes field anywhere in `j` is a whole number (or null), every *_s and *_pct field a
// number (or null): JSON carries numbers, never text formatted for people.
void check_json_numbers(const nlohmann::json& j, const std::string& where) {
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) check_json_numbers(j[i], where + "[" + std::to_string(i) + "]");
    return;
  }
  if (!j.is_object()) return;
  auto ends = [](const std::string& k, const std::string& suffix) {
    return k.size() > suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const auto& [k, v] : j.items()) {
    const std::string at = where + "." + k;
    if (ends(k, "_bytes") && !v.is_null()) CHECK_MESSAGE(v.is_number_integer(), at << " = " << v.dump());
    if ((ends(k, "_s") || ends(k, "_pct")) && !v.is_null()) CHECK_MESSAGE(v.is_number(), at << " = " << v.dump());
    check_json_numbers(v, at);
  }
}

}  // namespace

TEST_CASE("JSON of plan, simulate, validate and fit: schema_version, whole byte counts, numbers not text") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  std::vector<std::pair<std::string, std::string>> runs = {
      {"plan", "plan " + exp + " --top 3 --format json"},
      {"simulate", "simulate " + exp + " --mesh tp=8,cp=8 --format json"}};
  const std::string korthikanti = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/korthikanti2022";
  if (fs::exists(korthikanti)) {
    runs.push_back({"validate", "validate '" + korthikanti + "' --format json"});
    runs.push_back({"fit", "fit '" + korthikanti + "' --folds 2 --format json"});
  }
  for (const auto& [name, args] : runs) {
    const Result r = run_cli(args);
    REQUIRE_MESSAGE(r.rc == 0, name);
    const auto j = nlohmann::json::parse(r.out);
    CHECK_MESSAGE(j.contains("schema_version"), name);
    CHECK_MESSAGE(j["schema_version"] == 2, name);
    check_json_numbers(j, name);
  }
  // The byte fields of a prediction are there to be checked.
  const auto sim = nlohmann::json::parse(run_cli("simulate " + exp + " --mesh tp=8,cp=8 --format json").out);
  CHECK(sim["peak_memory_bytes"].is_number_integer());
  CHECK(sim["memory"]["weights_bytes"].is_number_integer());
}

TEST_CASE("text output prints each quantity in its one format (core/format.hpp)") {
  const std::string exp = "'" + kConfigs + "default.yaml'";
  const auto j = nlohmann::json::parse(run_cli("simulate " + exp + " --mesh tp=8,cp=8 --format json").out);
  const Result t = run_cli("simulate " + exp + " --mesh tp=8,cp=8");
  REQUIRE(t.rc == 0);
  using namespace ringplan::format;
  const std::string headline =
      "step time " + format_time_s(j["step_time_s"].get<double>()) + "  |  " +
      format_tokens_per_s(j["tokens_per_s"].get<double>()) + "  |  " +
      format_flops_per_s(j["tflops_per_device"].get<double>() * 1e12) + " per device  |  MFU " +
      format_pct(100.0 * j["mfu"].get<double>()) + "  |  memory " +
      format_bytes(j["peak_memory_bytes"].get<double>()) + " / " + format_bytes(j["capacity_bytes"].get<double>());
  CHECK_MESSAGE(has(t.out, headline), headline << "\n" << t.out);
  CHECK(has(t.out, format_bytes(j["memory"]["weights_bytes"].get<double>())));
  CHECK(has(t.out, format_time_s(j["time"]["forward_compute_s"].get<double>())));
  // The same figures in plan's table and in the HTML report's table.
  const Result p = run_cli("plan " + exp + " --top 3");
  REQUIRE(p.rc == 0);
  const auto pj = nlohmann::json::parse(run_cli("plan " + exp + " --top 3 --format json").out);
  const auto& first = pj["candidates"][0];
  for (const std::string& cell :
       {format_time_s(first["step_time_s"].get<double>()), format_tokens_per_s(first["tokens_per_s"].get<double>()),
        format_flops_per_s(first["tflops_per_device"].get<double>() * 1e12),
        format_pct(100.0 * first["mfu"].get<double>())})
    CHECK_MESSAGE(has(p.out, cell), cell);
  TempDir tmp;
  const Result h = run_cli("report " + exp + " --top 3 -o '" + tmp.file("r.html") + "'");
  REQUIRE(h.rc == 0);
  const std::string html = read_file(tmp.file("r.html"));
  CHECK(has(html, "<td>" + format_time_s(first["step_time_s"].get<double>()) + "</td><td>" +
                      format_tokens_per_s(first["tokens_per_s"].get<double>()) + "</td>"));
  CHECK_FALSE(has(html, "@FORMAT_JS@"));
  CHECK(has(html, "function formatTime("));
}
