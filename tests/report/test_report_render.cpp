// Renders the HTML report in headless Chromium and checks, in the DOM after the page's script
// ran, that every chart was drawn: one circle per candidate, one rect per memory/time term,
// ring segments for every CP rank and the predicted/measured bars of a run.
//
// Needs Chromium (Debian package `chromium`; scripts/setup.sh installs it, so CI draws the
// page). Set RINGPLAN_CHROMIUM to use another binary. Without a browser the case prints
// "SKIPPED: ..." and CTest reports it as skipped (SKIP_REGULAR_EXPRESSION in CMakeLists.txt).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <unistd.h>

#include "core/format.hpp"
#include "planner/planner.hpp"
#include "planner/report.hpp"
#include "report/report_html.hpp"
#include "tests/fixtures/experiments.hpp"

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
                 {"name": "forward compute (slowest rank)", "predicted_s": 0.009, "measured_median_s": 0.011},
                 {"name": "forward exposed comm", "predicted_s": 0.001, "measured_median_s": 0.002},
                 {"name": "backward time (slowest rank)", "predicted_s": 0.025, "measured_median_s": 0.031},
                 {"name": "step", "predicted_s": 0.05}],
        "memory": {"measured_ring_buffer_bytes": 1048576, "predicted_ring_buffer_bytes": 1048576}})json"),
      "run.json");
  // The closest layout that does not fit, far beyond the fitting ones: drawn at the chart's edge,
  // not stretching its axes.
  REQUIRE(d.closest_out_of_memory);
  d.closest_out_of_memory->peak_memory_bytes = 10 * d.closest_out_of_memory->capacity_bytes;

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
  CHECK(dom.find("data-ringplan-charts=\"10\"") != std::string::npos);

  const size_t points = d.candidates.size() + (d.closest_out_of_memory ? 1 : 0);
  CHECK(count(dom, "class=\"candidate\"") == points);
  CHECK(attribute_of(dom, "chart-scatter", "data-drawn") == std::to_string(points));
  CHECK(count(dom, "class=\"capacity\"") == 1);
  // Colour by CP size, shape by ZeRO stage: every mark of one CP size has one colour, different
  // CP sizes differ; the out-of-memory point alone lies beyond the axes (an arrow at the edge).
  {
    const std::regex mark_re("<(circle|path) [^>]*class=\"candidate\"[^>]*>");
    const std::regex fill_re("fill=\"([^\"]*)\""), cp_re("data-cp=\"([0-9]+)\""),
        zero_re("data-zero=\"([0-9])\""), beyond_re("data-beyond=\"1\"");
    std::map<std::string, std::set<std::string>> fills_of_cp;
    std::map<std::string, size_t> marks_of_cp;
    size_t beyond = 0, circles = 0, zero0 = 0;
    for (auto it = std::sregex_iterator(dom.begin(), dom.end(), mark_re); it != std::sregex_iterator(); ++it) {
      const std::string tag = it->str();
      std::smatch f, c, z;
      REQUIRE(std::regex_search(tag, f, fill_re));
      REQUIRE(std::regex_search(tag, c, cp_re));
      REQUIRE(std::regex_search(tag, z, zero_re));
      if (std::regex_search(tag, beyond_re)) {
        ++beyond;
        continue;
      }
      fills_of_cp[c[1]].insert(f[1]);
      ++marks_of_cp[c[1]];
      circles += (*it)[1] == "circle";
      zero0 += z[1] == "0";
    }
    CHECK(beyond == 1);
    CHECK(circles == zero0);  // ZeRO 0 is the circle, the other stages other shapes
    std::set<std::string> all_fills;
    for (const auto& [cp_value, fills] : fills_of_cp) {
      CHECK(fills.size() == 1);
      all_fills.insert(*fills.begin());
      size_t want = 0;
      for (const auto& p : d.candidates) want += std::to_string(p.mesh.cp) == cp_value;
      CHECK(marks_of_cp[cp_value] == want);
    }
    CHECK(all_fills.size() == fills_of_cp.size());
    CHECK(fills_of_cp.size() > 1);
    CHECK(count(dom, "class=\"beyond\"") == 1);
  }
  // Hover panel: filled with the chosen layout's terms until a point is hovered.
  size_t hover_terms = 0;
  for (const auto& t : sim::time_terms(d.candidates[d.chosen].time)) hover_terms += t.value > 0;
  for (const auto& t : sim::memory_terms(d.candidates[d.chosen].memory)) hover_terms += t.value > 0 && t.name != "peak_bytes";
  CHECK(count(dom, "class=\"hover-term\"") == hover_terms);
  CHECK(dom.find("(chosen): " + planner::mesh_text(d.candidates[d.chosen].mesh)) != std::string::npos);
  // Stacked bars per candidate: the first 12 (and the chosen one), one rect per non-zero term.
  {
    size_t time_rects = 0, memory_rects = 0;
    for (size_t i = 0; i < d.candidates.size(); ++i) {
      if (i >= 12 && i != d.chosen) continue;
      for (const auto& t : sim::time_terms(d.candidates[i].time)) time_rects += t.value > 0;
      for (const auto& t : sim::memory_terms(d.candidates[i].memory)) memory_rects += t.value > 0 && t.name != "peak_bytes";
    }
    CHECK(attribute_of(dom, "chart-cand-time", "data-drawn") == std::to_string(time_rects));
    CHECK(attribute_of(dom, "chart-cand-memory", "data-drawn") == std::to_string(memory_rects));
    CHECK(count(dom, "class=\"cand-term\"") == time_rects + memory_rects);
    // The first candidate's step-time bar: its forward compute, with the value in data-value.
    const auto& first = d.candidates[0];
    CHECK(dom.find(fmt::format("data-term=\"forward_compute_s\" data-value=\"{}\"", nlohmann::json(first.time.forward_compute_s).dump())) !=
          std::string::npos);
  }
  // Memory against CP and sequence length: one rect per non-zero term of every point.
  {
    const report::MemorySweeps sweeps = report::memory_sweeps(e, d.candidates[d.chosen]);
    auto rects = [](const std::vector<std::pair<int64_t, sim::Prediction>>& pts) {
      size_t n = 0;
      for (const auto& [x, p] : pts)
        for (const auto& t : sim::memory_terms(p.memory)) n += t.value > 0 && t.name != "peak_bytes";
      return n;
    };
    REQUIRE(sweeps.by_cp.size() >= 2);
    CHECK(attribute_of(dom, "chart-mem-cp", "data-drawn") == std::to_string(rects(sweeps.by_cp)));
    CHECK(attribute_of(dom, "chart-mem-seq", "data-drawn") == std::to_string(rects(sweeps.by_seq_len)));
    CHECK(count(dom, "class=\"sweep-current\"") == 2);
    size_t oom = 0;
    for (const auto& [x, p] : sweeps.by_seq_len) oom += !p.fits;
    for (const auto& [x, p] : sweeps.by_cp) oom += !p.fits;
    CHECK(count(dom, "class=\"sweep-peak sweep-oom\"") == oom);
  }
  // Predicted and measured timelines: forward compute and exposed comm, both non-zero.
  CHECK(attribute_of(dom, "chart-run-timeline", "data-drawn") == "4");
  CHECK(count(dom, "class=\"timeline-seg\"") == 4);
  CHECK(dom.find("data-part=\"forward exposed comm\" data-which=\"measured\" data-value=\"0.002\"") != std::string::npos);

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

  CHECK(attribute_of(dom, "chart-run", "data-drawn") == "9");  // 5 predicted + 4 measured bars
  CHECK(count(dom, "class=\"run-bar\"") == 9);
  CHECK(dom.find("<td class=\"l\">backward time (slowest rank)</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"l\">memory: ring buffer</td>") != std::string::npos);

  // The script prints numbers as C++ does (core/format.hpp): the cards show the chosen layout's
  // figures in the C++ formats, as do the run table's times, sizes and ratios.
  const sim::Prediction& c = d.candidates[d.chosen];
  const auto card = [](const std::string& value, const std::string& key) {
    return "<div class=\"v\">" + value + "</div><div class=\"k\">" + key + "</div>";
  };
  CHECK(dom.find(card(format::format_time_s(c.step_time_s), "step time")) != std::string::npos);
  CHECK(dom.find(card(format::format_tokens_per_s(c.tokens_per_s), "throughput")) != std::string::npos);
  CHECK(dom.find(card(format::format_pct(100.0 * c.mfu), "MFU")) != std::string::npos);
  CHECK(dom.find(card(planner::memory_text(c.peak_memory_bytes, c.capacity_bytes), "peak memory")) != std::string::npos);
  // The table lists the first ten candidates: the first one's figures, as the C++ formats print them.
  const sim::Prediction& top = d.candidates[0];
  const std::string top_row = fmt::format("<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                          format::format_time_s(top.step_time_s),
                                          format::format_tokens_per_s(top.tokens_per_s),
                                          format::format_flops_per_s(top.tflops_per_device * 1e12),
                                          format::format_pct(100.0 * top.mfu),
                                          planner::memory_text(top.peak_memory_bytes, top.capacity_bytes));
  CHECK(dom.find(top_row) != std::string::npos);
  CHECK(dom.find(fmt::format("<td class=\"l\">forward time (slowest rank)</td><td>{}</td><td>{}</td><td>{} .. {}</td>"
                             "<td>{}</td></tr>",
                             format::format_time_s(0.010), format::format_time_s(0.013), format::format_time_s(0.012),
                             format::format_time_s(0.016), format::format_ratio(0.013 / 0.010))) != std::string::npos);
  CHECK(dom.find(fmt::format("<td class=\"l\">memory: ring buffer</td><td>{0}</td><td>{0}</td><td>-</td><td>{1}</td>",
                             format::format_bytes(1048576), format::format_ratio(1.0))) != std::string::npos);
}
