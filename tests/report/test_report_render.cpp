// Renders the HTML report in headless Chromium and checks, in the DOM after the page's script
// ran, that every chart was drawn: one circle per candidate, one rect per memory/time term,
// ring segments for every CP rank and the predicted/measured bars of a run.
//
// Needs Chromium (Debian package `chromium`; scripts/setup.sh installs it, so CI draws the
// page). Set RINGPLAN_CHROMIUM to use another binary. Without a browser the case prints
// "SKIPPED: ..." and CTest reports it as skipped (SKIP_REGULAR_EXPRESSION in CMakeLists.txt).
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <unistd.h>

#include "planner/planner.hpp"
#include "report/report_html.hpp"
#include "tests/report/fixtures.hpp"

using namespace ringplan;

namespace {

std::string find_chromium() {
  if (const char* env = std::getenv("RINGPLAN_CHROMIUM"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (const char* name : {"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}) {
    size_t start = 0;
    while (start <= dirs.size()) {
      const size_t end = dirs.find(':', start);
      const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
      const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  return "";
}

// Runs Chromium headless on `html_path` and returns the DOM after scripts ran.
std::string dump_dom(const std::string& html_path) {
  const std::string chromium = find_chromium();
  REQUIRE(!chromium.empty());  // callers skip first (have_chromium)
  // A private profile folder: parallel tests must not share Chromium's profile lock.
  const std::filesystem::path profile =
      std::filesystem::temp_directory_path() / ("ringplan-chromium-" + std::to_string(::getpid()));
  const std::string cmd = "'" + chromium + "' --headless --no-sandbox --disable-gpu --disable-dev-shm-usage " +
                          "--no-first-run --user-data-dir='" + profile.string() + "' --dump-dom 'file://" +
                          std::filesystem::absolute(html_path).string() + "' 2>/dev/null";
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE_MESSAGE(pipe != nullptr, "cannot start " << chromium);
  std::string dom;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) dom.append(buf, n);
  const int status = ::pclose(pipe);
  std::error_code ec;
  std::filesystem::remove_all(profile, ec);
  REQUIRE_MESSAGE(status == 0, "chromium exited with status " << status << " running: " << cmd);
  return dom;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string attribute_of(const std::string& dom, const std::string& element_id, const std::string& attribute) {
  const std::regex re("id=\"" + element_id + "\"[^>]*" + attribute + "=\"([^\"]*)\"");
  std::smatch m;
  if (std::regex_search(dom, m, re)) return m[1];
  // Attribute order is the browser's choice: try attribute before id.
  const std::regex re2(attribute + "=\"([^\"]*)\"[^>]*id=\"" + element_id + "\"");
  if (std::regex_search(dom, m, re2)) return m[1];
  return "";
}

}  // namespace

TEST_CASE("render: headless Chromium draws every chart of the report") {
  const Experiment e = test::report_experiment();
  planner::PlanSettings settings;
  settings.top_k = 40;
  const planner::PlanResult r = planner::plan(e, settings);
  report::ReportData d = report::build_report(e, r);
  // The chosen plan must have a ring for the timeline to have something to draw (CP > 1 and
  // cp_comm ring: an all-gather layer has no ring steps).
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    if (d.candidates[i].mesh.cp > 1 && d.candidates[i].options.cp_comm == CpComm::ring) {
      d.chosen = i;
      break;
    }
  }
  const int64_t cp = d.candidates[d.chosen].mesh.cp;
  REQUIRE(cp > 1);
  d.ring = report::ring_timeline(e, d.candidates[d.chosen]);
  d.run = report::parse_run_result(
      nlohmann::json::parse(R"json({"cp": 4, "iterations": 5, "validates": "one attention layer",
        "rows": [{"name": "forward time (slowest rank)", "predicted_s": 0.010, "measured_median_s": 0.013,
                  "measured_min_s": 0.012, "measured_max_s": 0.016},
                 {"name": "backward time (slowest rank)", "predicted_s": 0.025, "measured_median_s": 0.031},
                 {"name": "step", "predicted_s": 0.05}],
        "memory": {"measured_ring_buffer_bytes": 1048576, "predicted_ring_buffer_bytes": 1048576}})json"),
      "run.json");

  if (find_chromium().empty()) {
    std::printf("SKIPPED: chromium not found on PATH: install Debian's `chromium` package (apt-get install "
                "chromium) or set RINGPLAN_CHROMIUM to a Chromium/Chrome binary\n");
    return;
  }
  const std::string path = "report_render_test.html";
  std::ofstream(path) << report::render_html(d);
  struct RemoveFile {
    std::string path;
    ~RemoveFile() { std::remove(path.c_str()); }
  } cleanup{path};
  const std::string dom = dump_dom(path);

  INFO("DOM head: " << dom.substr(0, 400));
  CHECK(dom.find("data-ringplan-error=\"") == std::string::npos);  // the attribute, not the script's text
  CHECK(dom.find("data-ringplan-charts=\"5\"") != std::string::npos);

  const size_t points = d.candidates.size() + (d.closest_out_of_memory ? 1 : 0);
  CHECK(count(dom, "class=\"candidate\"") == points);
  CHECK(attribute_of(dom, "chart-scatter", "data-drawn") == std::to_string(points));
  CHECK(count(dom, "class=\"capacity\"") == 1);

  size_t memory_terms = 0, time_terms = 0;
  for (const auto& t : sim::memory_terms(d.candidates[d.chosen].memory)) memory_terms += t.value > 0 && t.name != "peak_bytes";
  for (const auto& t : sim::time_terms(d.candidates[d.chosen].time)) time_terms += t.value > 0;
  CHECK(attribute_of(dom, "chart-memory", "data-drawn") == std::to_string(memory_terms));
  CHECK(attribute_of(dom, "chart-time", "data-drawn") == std::to_string(time_terms));
  CHECK(count(dom, "class=\"term\"") == memory_terms + time_terms);

  size_t ring_marks = 0;
  for (const auto& rank : d.ring.ranks) {
    for (const auto& s : rank.steps) ring_marks += (s.compute_s > 0) + (s.exposed_s > 0);
  }
  CHECK(ring_marks >= static_cast<size_t>(cp));  // every rank computes at least its own block
  CHECK(attribute_of(dom, "chart-ring", "data-drawn") == std::to_string(ring_marks));
  CHECK(count(dom, "CP rank ") >= static_cast<size_t>(cp));

  CHECK(attribute_of(dom, "chart-run", "data-drawn") == "5");  // 3 predicted + 2 measured bars
  CHECK(count(dom, "class=\"run-bar\"") == 5);
  CHECK(dom.find("<td class=\"l\">backward time (slowest rank)</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"l\">memory: ring buffer</td>") != std::string::npos);
}
