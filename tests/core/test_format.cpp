// core/format.hpp: the one number format of each quantity kind, its edge cases (0, -0,
// negatives, unit carries, exact binary ties, values beyond the unit ladder, NaN and
// infinities), and that the report's script (format_script) prints the same text as C++
// for the same doubles (run under node when there is one; the constants are checked without).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/format.hpp"

using namespace ringplan::format;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

TEST_CASE("format_time_s: 4 significant digits in ns, us, ms or s") {
  CHECK(format_time_s(0) == "0 s");
  CHECK(format_time_s(-0.0) == "0 s");
  CHECK(format_time_s(0.0123456) == "12.35 ms");
  CHECK(format_time_s(1.5) == "1.5 s");
  CHECK(format_time_s(1.23456) == "1.235 s");
  CHECK(format_time_s(2.5e-7) == "250 ns");
  CHECK(format_time_s(3.2e-5) == "32 us");
  CHECK(format_time_s(4321.6) == "4322 s");
  CHECK(format_time_s(123456.0) == "123456 s");
  CHECK(format_time_s(-0.0123456) == "-12.35 ms");
  // A rounding that reaches the next unit moves there.
  CHECK(format_time_s(0.99996) == "1 s");
  CHECK(format_time_s(9.99996e-4) == "1 ms");
  // Below the smallest unit: still 4 significant digits.
  CHECK(format_time_s(1.234e-12) == "0.001234 ns");
}

TEST_CASE("format_bytes: 4 significant digits in binary units") {
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(76450000000.0) == "71.2 GiB");
  CHECK(format_bytes(80.0 * 1024 * 1024 * 1024) == "80 GiB");
  CHECK(format_bytes(1000.0 * 1024 * 1024) == "1000 MiB");
  CHECK(format_bytes(1023.99 * 1024 * 1024) == "1 GiB");  // "1024" MiB carries
  CHECK(format_bytes(2.0 * 1024 * 1024 * 1024 * 1024) == "2 TiB");
  CHECK(format_bytes(-1536) == "-1.5 KiB");
  CHECK(format_bytes(0.5) == "0.5 B");
}

TEST_CASE("format of rates and FLOP counts: SI units, 4 significant digits") {
  CHECK(format_tokens_per_s(219840) == "219.8k tokens/s");
  CHECK(format_tokens_per_s(950) == "950 tokens/s");
  CHECK(format_tokens_per_s(1.25e6) == "1.25M tokens/s");
  CHECK(format_flops_per_s(5.816e14) == "581.6 TFLOP/s");
  CHECK(format_flops_per_s(2.684e10) == "26.84 GFLOP/s");
  CHECK(format_flop(3.1e18) == "3.1 EFLOP");
  CHECK(format_flop(4.5e21) == "4500 EFLOP");  // past the last unit: stays in it
  CHECK(format_bandwidth(4.5e11) == "450 GB/s");
  CHECK(format_bandwidth(2.5e10) == "25 GB/s");
}

TEST_CASE("format of percentages, errors, ratios: fixed decimals") {
  CHECK(format_pct(45.14) == "45.1%");
  CHECK(format_pct(0) == "0.0%");
  CHECK(format_pct(-0.0) == "0.0%");
  CHECK(format_pct(100) == "100.0%");
  CHECK(format_error_pct(3.14159) == "+3.14%");
  CHECK(format_error_pct(-0.5) == "-0.50%");
  CHECK(format_error_pct(0) == "+0.00%");
  CHECK(format_abs_error_pct(2.5) == "2.50%");
  CHECK(format_ratio(1.04567) == "1.046");
  CHECK(format_ratio(1) == "1.000");
}

TEST_CASE("format: exact binary ties round half away from zero, as JavaScript's toFixed") {
  CHECK(format_pct(0.25) == "0.3%");
  CHECK(format_pct(-0.25) == "-0.3%");
  CHECK(format_error_pct(1.125) == "+1.13%");
  CHECK(format_time_s(1.0625) == "1.063 s");
  CHECK(format_bytes(1000.5) == "1001 B");
  CHECK(format_ratio(0.0625) == "0.063");
  CHECK(format_ratio(9.9995) == "9.999");  // 9.9995 is not a tie in binary: below it
  CHECK(format_pct(99.95) == "100.0%");    // 99.95 lies above the tie in binary
}

TEST_CASE("format_count: integers grouped by thousands") {
  CHECK(format_count(0) == "0");
  CHECK(format_count(999) == "999");
  CHECK(format_count(1000) == "1,000");
  CHECK(format_count(131072) == "131,072");
  CHECK(format_count(-1234) == "-1,234");
  CHECK(format_count(std::numeric_limits<int64_t>::min()) == "-9,223,372,036,854,775,808");
}

TEST_CASE("format: NaN and infinities print as such, with the base unit") {
  CHECK(format_time_s(kNaN) == "NaN s");
  CHECK(format_time_s(kInf) == "inf s");
  CHECK(format_bytes(-kInf) == "-inf B");
  CHECK(format_tokens_per_s(kNaN) == "NaN tokens/s");
  CHECK(format_pct(kNaN) == "NaN%");
  CHECK(format_error_pct(kInf) == "inf%");
  CHECK(format_ratio(-kInf) == "-inf");
}

TEST_CASE("whole_bytes: nearest integer, non-finite refused") {
  CHECK(whole_bytes(0) == 0);
  CHECK(whole_bytes(1536.4) == 1536);
  CHECK(whole_bytes(1536.5) == 1537);
  CHECK(whole_bytes(8.6e10) == 86000000000LL);
  CHECK_THROWS_AS(whole_bytes(kNaN), ringplan::Error);
  CHECK_THROWS_AS(whole_bytes(kInf), ringplan::Error);
  CHECK_THROWS_AS(whole_bytes(1e19), ringplan::Error);
}

TEST_CASE("format_script: FORMAT_RULES carry the C++ tables") {
  const std::string js = format_script();
  for (const ScaledRule* r : scaled_rules()) {
    std::string steps;
    for (size_t k = 0; k < r->steps.size(); ++k)
      steps += fmt::format("{}[{}, \"{}\"]", k ? ", " : "", r->steps[k].scale, r->steps[k].suffix);
    const std::string line =
        fmt::format("{}: {{base: {}, significant: {}, steps: [{}]}}", r->name, r->base, r->significant, steps);
    CHECK_MESSAGE(js.find(line) != std::string::npos, line);
  }
  CHECK(js.find(fmt::format("pct: {}, error_pct: {}, ratio: {}", kPctDecimals, kErrorPctDecimals, kRatioDecimals)) !=
        std::string::npos);
  for (const char* f : {"function formatTime(", "function formatBytes(", "function formatTokensPerS(",
                        "function formatFlopsPerS(", "function formatFlop(", "function formatBandwidth(",
                        "function formatPct(", "function formatErrorPct(", "function formatAbsErrorPct(",
                        "function formatRatio(", "function formatCount("})
    CHECK_MESSAGE(js.find(f) != std::string::npos, f);
}

// The sample values both implementations print: every unit of every ladder, the carries,
// exact binary ties, and signs.
static std::vector<double> samples() {
  std::vector<double> v = {0.0, 0.5, 1.0, 0.25, 1.0625, 1000.5, 0.99996, 9.99996e-4, 99.95, 9.9995, 0.0625, 1.125};
  for (int e = -13; e <= 22; ++e)
    for (double m : {1.0, 1.0625, 1.5, 2.5, 3.14159265, 9.99949, 9.99951, 7.77777}) v.push_back(m * std::pow(10.0, e));
  for (int e = 0; e <= 5; ++e)
    for (double m : {1.0, 1.5, 1023.99, 1000.0, 71.2, 0.999999}) v.push_back(m * std::pow(1024.0, e));
  const size_t n = v.size();
  for (size_t i = 0; i < n; ++i) v.push_back(-v[i]);
  return v;
}

TEST_CASE("format_script prints what C++ prints (node, when installed)") {
  const char* node_env = std::getenv("RINGPLAN_NODE");
  std::string node = node_env ? node_env : "";
  if (node.empty()) {
    for (const char* p : {"/usr/bin/node", "/usr/local/bin/node", "/usr/bin/nodejs"})
      if (std::filesystem::exists(p)) {
        node = p;
        break;
      }
  }
  if (node.empty()) {
    MESSAGE("skipped: no node (set RINGPLAN_NODE to run the script's check)");
    return;
  }
  const std::vector<double> xs = samples();
  std::string values;
  for (double x : xs) values += fmt::format("{}{}", values.empty() ? "" : ", ", x);
  const std::string script = format_script() + "const xs = [" + values +
                             "];\n"
                             "const fs = [formatTime, formatBytes, formatTokensPerS, formatFlopsPerS, formatFlop,\n"
                             "            formatBandwidth, formatPct, formatErrorPct, formatAbsErrorPct, formatRatio];\n"
                             "for (const x of xs) console.log(fs.map(f => f(x)).join(\"|\") + \"|\" + formatCount(Math.trunc(x)));\n";
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("ringplan_format_{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto file = dir / "format.js";
  std::ofstream(file) << script;
  const std::string cmd = fmt::format("'{}' '{}'", node, file.string());
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  while (size_t got = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, got);
  const int status = ::pclose(pipe);
  std::filesystem::remove_all(dir);
  REQUIRE(status == 0);
  size_t pos = 0;
  for (double x : xs) {
    const size_t eol = out.find('\n', pos);
    REQUIRE(eol != std::string::npos);
    const std::string js_line = out.substr(pos, eol - pos);
    pos = eol + 1;
    // Counts: the sample's integer part where it fits an int64 exactly in both languages.
    const double t = std::trunc(x);
    const std::string count = std::fabs(t) < 9007199254740992.0 ? format_count(static_cast<int64_t>(t)) : "";
    const std::string cpp_line =
        fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|", format_time_s(x), format_bytes(x), format_tokens_per_s(x),
                    format_flops_per_s(x), format_flop(x), format_bandwidth(x), format_pct(x), format_error_pct(x),
                    format_abs_error_pct(x), format_ratio(x));
    if (count.empty()) {
      CHECK_MESSAGE(js_line.rfind(cpp_line, 0) == 0, fmt::format("x = {}", x));
    } else {
      CHECK_MESSAGE(js_line == cpp_line + count, fmt::format("x = {}", x));
    }
  }
}
