// One number format per quantity, for everything people read: CLI tables and sentences,
// the text reports, the HTML report's tables and the script that draws its charts
// (format_script() is that script's copy of these rules, generated from the same tables).
// JSON is machine data and never goes through here: SI base units in the field names
// (`_s`, `_bytes` as integers, `_pct`) and plain numbers (whole_bytes() rounds byte counts).
//
// The rule of each quantity kind:
//   time (seconds)       format_time_s          4 significant digits, unit ns/us/ms/s so that the
//                                               number is in [1, 1000) (seconds above that):
//                                               0.0123456 -> "12.35 ms", 1.5 -> "1.5 s",
//                                               2.5e-7 -> "250 ns", 4321.5 -> "4322 s"
//   bytes (memory)       format_bytes           4 significant digits, binary units B/KiB/MiB/GiB/
//                                               TiB/PiB, number in [1, 1024):
//                                               76450000000 -> "71.2 GiB" (71.20 stripped),
//                                               1536 -> "1.5 KiB", 512 -> "512 B"
//   throughput           format_tokens_per_s    4 significant digits, SI prefix k/M/G/T attached
//                                               to the unit: 219840 -> "219.8k tokens/s"
//   compute rate         format_flops_per_s     4 significant digits, SI units FLOP/s ..
//                                               PFLOP/s: 5.816e14 -> "581.6 TFLOP/s"
//   FLOP count           format_flop            4 significant digits, FLOP .. EFLOP
//   bandwidth            format_bandwidth       4 significant digits, decimal units B/s, kB/s,
//                                               MB/s, GB/s, TB/s (bandwidths are decimal,
//                                               core/units.hpp): 4.5e11 -> "450 GB/s"
//   share / utilisation  format_pct             percent, 1 decimal, no sign: 45.14 -> "45.1%"
//   model error          format_error_pct       percent, 2 decimals, always signed:
//                                               3.14159 -> "+3.14%", -0.5 -> "-0.50%"
//   error magnitude      format_abs_error_pct   percent, 2 decimals, no sign (mean |error|,
//                                               regret): 2.5 -> "2.50%"
//   ratio                format_ratio           3 decimals: 1.04567 -> "1.046"
//   count                format_count           integer, thousands grouped by ',':
//                                               131072 -> "131,072", -1234 -> "-1,234"
//
// Shared by the scaled kinds: the unit is the largest whose scale is <= |v| (the smallest
// unit below that); after rounding to 4 significant digits a number that reaches the next
// unit moves there (999.96 ms -> "1 s"); zeros ending a fraction are dropped ("1.500" ->
// "1.5"); 0 prints in the base unit ("0 s", "0 B"); the sign of a negative value leads.
// Rounding is half away from zero on exact binary ties (0.125 -> "0.13"), the rule of
// JavaScript's toFixed, so that the page's script prints the same digits as C++.
//
// Non-finite values are never hidden behind a dash or a zero: they print as "NaN", "inf" or
// "-inf" with the kind's base unit ("NaN s", "inf B", "NaN%"), so a broken number stays
// visible wherever it lands (the inputs are checked finite when loaded; a non-finite
// result is a bug to see, not to paper over).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringplan::format {

// One unit of a scaled kind: the value is divided by `scale` and followed by `suffix`
// (the suffix carries its own leading space where one is wanted: " ms", "k tokens/s").
struct UnitStep {
  double scale;
  std::string_view suffix;
};

// A scaled quantity kind: its units in increasing scale, the one that prints 0 and
// non-finite values, and the significant digits of the number.
struct ScaledRule {
  std::string_view name;  // the kind's name in format_script()'s FORMAT_RULES
  std::span<const UnitStep> steps;
  size_t base;            // index into steps of the SI base unit (scale 1)
  int significant;
};

// The rules, for format_script() and for tests that compare C++ with the page's script.
const ScaledRule& time_rule();
const ScaledRule& bytes_rule();
const ScaledRule& tokens_per_s_rule();
const ScaledRule& flops_per_s_rule();
const ScaledRule& flop_rule();
const ScaledRule& bandwidth_rule();
std::span<const ScaledRule* const> scaled_rules();

// Decimals of the fixed-decimal kinds.
inline constexpr int kPctDecimals = 1;
inline constexpr int kErrorPctDecimals = 2;
inline constexpr int kRatioDecimals = 3;

std::string format_scaled(const ScaledRule& rule, double v);

std::string format_time_s(double seconds);
std::string format_bytes(double bytes);
std::string format_tokens_per_s(double tokens_per_s);
std::string format_flops_per_s(double flops_per_s);
std::string format_flop(double flop);
std::string format_bandwidth(double bytes_per_s);
// Arguments in percent (100 * fraction).
std::string format_pct(double pct);
std::string format_error_pct(double pct);
std::string format_abs_error_pct(double pct);
std::string format_ratio(double ratio);
std::string format_count(int64_t n);

// A byte count for JSON: the nearest integer. Memory terms are computed in double (products
// of shapes and dtype sizes, sums over layers), so they can carry a fraction from rounding;
// JSON writes them as integers everywhere. Throws ringplan::Error (runtime) on a non-finite
// or out-of-range value: that is a bug upstream, and writing it would hide it.
int64_t whole_bytes(double bytes);

// JavaScript defining FORMAT_RULES (from the tables above) and formatTime, formatBytes,
// formatTokensPerS, formatFlopsPerS, formatFlop, formatBandwidth, formatPct, formatErrorPct,
// formatAbsErrorPct, formatRatio, formatCount, which print exactly what the C++ functions
// print for the same double. The HTML report embeds it.
std::string format_script();

}  // namespace ringplan::format
