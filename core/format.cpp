// The number formats of core/format.hpp, in C++ and, from the same tables, in the JavaScript
// the HTML report embeds. The two implementations are written step for step alike (same
// unit choice, same decade count, same rounding, same stripping); tests/core/test_format.cpp
// runs the script under node, where there is one, and compares both on sample values.
#include "core/format.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>

#include "core/error.hpp"

namespace ringplan::format {
namespace {

constexpr UnitStep kTimeSteps[] = {{1e-9, " ns"}, {1e-6, " us"}, {1e-3, " ms"}, {1.0, " s"}};
constexpr UnitStep kBytesSteps[] = {{1.0, " B"},
                                    {1024.0, " KiB"},
                                    {1024.0 * 1024.0, " MiB"},
                                    {1024.0 * 1024.0 * 1024.0, " GiB"},
                                    {1024.0 * 1024.0 * 1024.0 * 1024.0, " TiB"},
                                    {1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, " PiB"}};
constexpr UnitStep kTokensSteps[] = {
    {1.0, " tokens/s"}, {1e3, "k tokens/s"}, {1e6, "M tokens/s"}, {1e9, "G tokens/s"}, {1e12, "T tokens/s"}};
constexpr UnitStep kFlopsPerSSteps[] = {{1.0, " FLOP/s"}, {1e3, " kFLOP/s"}, {1e6, " MFLOP/s"},
                                        {1e9, " GFLOP/s"}, {1e12, " TFLOP/s"}, {1e15, " PFLOP/s"}};
constexpr UnitStep kFlopSteps[] = {{1.0, " FLOP"},   {1e3, " kFLOP"},  {1e6, " MFLOP"}, {1e9, " GFLOP"},
                                   {1e12, " TFLOP"}, {1e15, " PFLOP"}, {1e18, " EFLOP"}};
constexpr UnitStep kBandwidthSteps[] = {{1.0, " B/s"}, {1e3, " kB/s"}, {1e6, " MB/s"}, {1e9, " GB/s"}, {1e12, " TB/s"}};

constexpr int kSignificant = 4;

const ScaledRule kTime{"time", kTimeSteps, 3, kSignificant};
const ScaledRule kBytes{"bytes", kBytesSteps, 0, kSignificant};
const ScaledRule kTokens{"tokens_per_s", kTokensSteps, 0, kSignificant};
const ScaledRule kFlopsPerS{"flops_per_s", kFlopsPerSSteps, 0, kSignificant};
const ScaledRule kFlop{"flop", kFlopSteps, 0, kSignificant};
const ScaledRule kBandwidth{"bandwidth", kBandwidthSteps, 0, kSignificant};
const ScaledRule* const kRules[] = {&kTime, &kBytes, &kTokens, &kFlopsPerS, &kFlop, &kBandwidth};

std::string non_finite(double v) { return std::isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf"; }

// e with 10^e <= m < 10^(e+1), for m > 0, by comparisons with exact powers of ten (and
// correctly rounded 1/10^k below 1) rather than log10, whose last bit differs between libms.
int decade(double m) {
  int e = 0;
  double p = 10;
  if (m >= 1) {
    while (m >= p) {
      ++e;
      p *= 10;
    }
  } else {
    e = -1;
    while (m < 1 / p) {
      --e;
      p *= 10;
    }
  }
  return e;
}

// Decimal string of a >= 0 with d decimals, rounded to nearest and half away from zero on
// an exact tie (what JavaScript's toFixed does; fmt rounds such ties to even). A tie shows
// in the exact expansion as digit d+1 = 5 followed only by zeros. 80 more digits settle it:
// with 53 significant bits, a double cannot be a tie plus a remainder 80 decimal orders
// below the 4 significant digits printed.
std::string fixed(double a, int d) {
  std::string s = fmt::format("{:.{}f}", a, d);
  const std::string exact = fmt::format("{:.{}f}", a, d + 80);
  const size_t next = exact.find('.') + 1 + static_cast<size_t>(d);
  if (exact[next] != '5' || exact.find_first_not_of('0', next + 1) != std::string::npos) return s;
  // A tie: the digits up to d, increased by one unit in the last place.
  std::string up = exact.substr(0, next);
  if (up.back() == '.') up.pop_back();
  size_t i = up.size();
  while (i > 0) {
    --i;
    if (up[i] == '.') continue;
    if (up[i] != '9') {
      ++up[i];
      return up;
    }
    up[i] = '0';
  }
  return "1" + up;
}

std::string strip_zeros(std::string t) {
  if (t.find('.') == std::string::npos) return t;
  while (t.back() == '0') t.pop_back();
  if (t.back() == '.') t.pop_back();
  return t;
}

std::string fixed_signed(double v, int d, bool plus, std::string_view suffix) {
  if (!std::isfinite(v)) return non_finite(v) + std::string(suffix);
  // Built with append(): GCC 12 reports a false -Wrestrict on `"literal" + std::string&&`.
  std::string out(v < 0 ? "-" : plus ? "+" : "");
  return out.append(fixed(std::fabs(v), d)).append(suffix);
}

}  // namespace

const ScaledRule& time_rule() { return kTime; }
const ScaledRule& bytes_rule() { return kBytes; }
const ScaledRule& tokens_per_s_rule() { return kTokens; }
const ScaledRule& flops_per_s_rule() { return kFlopsPerS; }
const ScaledRule& flop_rule() { return kFlop; }
const ScaledRule& bandwidth_rule() { return kBandwidth; }
std::span<const ScaledRule* const> scaled_rules() { return kRules; }

std::string format_scaled(const ScaledRule& rule, double v) {
  const auto& steps = rule.steps;
  const std::string base(steps[rule.base].suffix);
  if (!std::isfinite(v)) return non_finite(v) + base;
  if (v == 0) return "0" + base;  // -0 too
  const double a = std::fabs(v);
  size_t i = 0;
  for (size_t k = 0; k < steps.size(); ++k)
    if (a >= steps[k].scale) i = k;
  std::string text;
  for (;;) {
    const double m = a / steps[i].scale;
    const int d = std::max(0, rule.significant - 1 - decade(m));
    text = fixed(m, d);
    // Rounding can carry the number to the next unit (999.96 ms -> "1000" -> 1 s).
    if (i + 1 < steps.size() && std::strtod(text.c_str(), nullptr) >= std::round(steps[i + 1].scale / steps[i].scale)) {
      ++i;
      continue;
    }
    break;
  }
  std::string out(v < 0 ? "-" : "");
  return out.append(strip_zeros(text)).append(steps[i].suffix);
}

std::string format_time_s(double seconds) { return format_scaled(kTime, seconds); }
std::string format_bytes(double bytes) { return format_scaled(kBytes, bytes); }
std::string format_tokens_per_s(double tokens_per_s) { return format_scaled(kTokens, tokens_per_s); }
std::string format_flops_per_s(double flops_per_s) { return format_scaled(kFlopsPerS, flops_per_s); }
std::string format_flop(double flop) { return format_scaled(kFlop, flop); }
std::string format_bandwidth(double bytes_per_s) { return format_scaled(kBandwidth, bytes_per_s); }
std::string format_pct(double pct) { return fixed_signed(pct, kPctDecimals, false, "%"); }
std::string format_error_pct(double pct) { return fixed_signed(pct, kErrorPctDecimals, true, "%"); }
std::string format_abs_error_pct(double pct) { return fixed_signed(pct, kErrorPctDecimals, false, "%"); }
std::string format_ratio(double ratio) { return fixed_signed(ratio, kRatioDecimals, false, ""); }

std::string format_count(int64_t n) {
  // Magnitude as unsigned: -INT64_MIN does not fit in int64_t.
  const uint64_t mag = n < 0 ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  const std::string digits = std::to_string(mag);
  std::string out = n < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

int64_t whole_bytes(double bytes) {
  // 2^63 is the first double past int64_t's range.
  if (!std::isfinite(bytes) || std::fabs(bytes) >= 9223372036854775808.0)
    throw Error(ErrorKind::runtime, fmt::format("byte count {} is not a finite integer in range", bytes));
  return std::llround(bytes);
}

std::string format_script() {
  std::string rules = "const FORMAT_RULES = {\n";
  for (const ScaledRule* r : kRules) {
    rules += fmt::format("  {}: {{base: {}, significant: {}, steps: [", r->name, r->base, r->significant);
    for (size_t k = 0; k < r->steps.size(); ++k)
      rules += fmt::format("{}[{}, \"{}\"]", k ? ", " : "", r->steps[k].scale, r->steps[k].suffix);
    rules += "]},\n";
  }
  rules += "};\n";
  rules += fmt::format("const FORMAT_DECIMALS = {{pct: {}, error_pct: {}, ratio: {}}};\n", kPctDecimals,
                       kErrorPctDecimals, kRatioDecimals);
  // The same steps as format_scaled, fixed, strip_zeros, fixed_signed and format_count above.
  // null and undefined are a figure the data does not have (a run without a measurement):
  // "-"; any other non-finite number prints as NaN/inf, as in C++.
  rules += R"JS(function formatNonFinite(v) { return Number.isNaN(v) || typeof v !== "number" ? "NaN" : v > 0 ? "inf" : "-inf"; }
function formatDecade(m) {
  let e = 0, p = 10;
  if (m >= 1) { while (m >= p) { e += 1; p *= 10; } }
  else { e = -1; while (m < 1 / p) { e -= 1; p *= 10; } }
  return e;
}
// toFixed writes numbers from 1e21 up in exponent form; those doubles are integers, and
// BigInt gives their exact digits, as fmt does.
function formatToFixed(a, d) { return a >= 1e21 ? BigInt(a).toString() + (d > 0 ? "." + "0".repeat(d) : "") : a.toFixed(d); }
function formatStrip(t) { return t.includes(".") ? t.replace(/0+$/, "").replace(/\.$/, "") : t; }
function formatScaled(rule, v) {
  const steps = rule.steps, base = steps[rule.base][1];
  if (v === null || v === undefined) return "-";
  if (typeof v !== "number" || !Number.isFinite(v)) return formatNonFinite(v) + base;
  if (v === 0) return "0" + base;
  const a = Math.abs(v);
  let i = 0;
  for (let k = 0; k < steps.length; ++k) if (a >= steps[k][0]) i = k;
  let text;
  for (;;) {
    const m = a / steps[i][0];
    const d = Math.max(0, rule.significant - 1 - formatDecade(m));
    text = formatToFixed(m, d);
    if (i + 1 < steps.length && parseFloat(text) >= Math.round(steps[i + 1][0] / steps[i][0])) { i += 1; continue; }
    break;
  }
  return (v < 0 ? "-" : "") + formatStrip(text) + steps[i][1];
}
function formatFixed(v, d, plus, suffix) {
  if (v === null || v === undefined) return "-";
  if (typeof v !== "number" || !Number.isFinite(v)) return formatNonFinite(v) + suffix;
  return (v < 0 ? "-" : plus ? "+" : "") + formatToFixed(Math.abs(v), d) + suffix;
}
function formatTime(v) { return formatScaled(FORMAT_RULES.time, v); }
function formatBytes(v) { return formatScaled(FORMAT_RULES.bytes, v); }
function formatTokensPerS(v) { return formatScaled(FORMAT_RULES.tokens_per_s, v); }
function formatFlopsPerS(v) { return formatScaled(FORMAT_RULES.flops_per_s, v); }
function formatFlop(v) { return formatScaled(FORMAT_RULES.flop, v); }
function formatBandwidth(v) { return formatScaled(FORMAT_RULES.bandwidth, v); }
function formatPct(v) { return formatFixed(v, FORMAT_DECIMALS.pct, false, "%"); }
function formatErrorPct(v) { return formatFixed(v, FORMAT_DECIMALS.error_pct, true, "%"); }
function formatAbsErrorPct(v) { return formatFixed(v, FORMAT_DECIMALS.error_pct, false, "%"); }
function formatRatio(v) { return formatFixed(v, FORMAT_DECIMALS.ratio, false, ""); }
function formatCount(n) {
  if (n === null || n === undefined) return "-";
  if (typeof n !== "number" || !Number.isFinite(n)) return formatNonFinite(n);
  const digits = String(Math.abs(Math.trunc(n)));
  return (n < 0 ? "-" : "") + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}
)JS";
  return rules;
}

}  // namespace ringplan::format
