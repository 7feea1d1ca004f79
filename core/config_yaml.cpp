// YAML loading with precise errors, and the matching writers. Schema: configs/README.md.
//
// Error contract: every ConfigError names file, 1-based line (yaml-cpp marks are 0-based), the
// field path and what would be valid. Position rules: a bad value points at its key's line (or
// at the element for list items); a missing key points at the line of the mapping that lacks it.
#include "core/config_yaml.hpp"
#include "core/documents.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>
#include <cstring>

#include "core/error.hpp"
#include "core/units.hpp"

namespace fs = std::filesystem;

namespace ringplan {

std::string closest_name(const std::string& word, const std::vector<std::string>& candidates) {
  // Levenshtein distance; a candidate counts as a likely typo when at most a third of its
  // letters (at least 2) differ, so "hiden" -> "hidden" but "foo" suggests nothing.
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
      }
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = distance(word, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  size_t allowed = std::max<size_t>(2, best.size() / 3);
  return best_distance <= allowed ? best : std::string();
}

void check_not_cut(const std::string& text, const std::string& path) {
  // Lines without their line break and trailing spaces or '\r' (a copy through Windows).
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    lines.push_back(line);
    pos = nl + 1;
  }
  const char* marker = nullptr;
  const char* writer = nullptr;
  if (!lines.empty() && lines.front().substr(0, std::strlen(kWrittenByPrefix)) == kWrittenByPrefix) {
    marker = kProfileEndMarker;
    writer = "`ringplan calibrate -o` or `ringplan fit -o`";
  } else {
    for (const auto& l : lines)
      if (l.substr(0, 14) == "ringplan_plan:") {
        marker = kPlanEndMarker;
        writer = "`ringplan plan -o`";
        break;
      }
  }
  if (marker == nullptr) return;
  for (const auto& l : lines)
    if (l == marker) return;
  // The cut is after the last line there is: name that line.
  int last = static_cast<int>(lines.size());
  while (last > 1 && lines[static_cast<size_t>(last - 1)].empty()) --last;
  throw ConfigError(path, last, "",
                    fmt::format("file ends without its final line `{}`: it was written by ringplan and then cut short "
                                "(a full disk or an interrupted copy?); write it again with {}",
                                marker, writer));
}

namespace {

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

// Offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), or npos.
size_t invalid_utf8_at(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string::npos;
}

int line_of(const YAML::Node& node) {
  if (!node.IsDefined()) return 0;
  YAML::Mark m = node.Mark();
  return m.is_null() ? 0 : m.line + 1;
}

std::string sub(const std::string& parent, const std::string& key) { return parent.empty() ? key : parent + "." + key; }

const char* kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "an undefined node";
  }
}

// One rule for every number in a config; MapReader::get_count / get_real are the only readers.
//  - An integer is a count in [1, limit]. GPU counts (gpus, gpus_per_node, nodes, mesh
//    dimensions, max_tp/cp/pp) are at most kMaxGpus = 2^20 (core/config.hpp), and so are the
//    products gpus_per_node x nodes and dp*tp*cp*pp. Every other count (layers, hidden, heads,
//    kv_heads, head_dim, ffn_hidden, vocab, seq_len, global_batch, micro_batch, interleave) is at
//    most kMaxSize = 2^31; global_batch_tokens at most 2^62, and its global_batch (tokens /
//    seq_len) at most kMaxSize again. Invariant: the products the code forms in int64 (size x size, e.g. tokens
//    = global_batch x seq_len, <= 2^62; size x GPU count <= 2^51) cannot overflow; products of
//    more factors (parameters, FLOPs, bytes) are formed in double, where they stay finite.
//  - A real is finite and inside a stated range (Range below), bounded on both sides where a
//    value divides or multiplies the model's results: 1e308 GiB would turn into inf bytes, a
//    peak of 1e-300 TFLOP/s into an infinite step time.
constexpr int64_t kMaxSize = int64_t{1} << 31;
constexpr int64_t kMaxTokens = int64_t{1} << 62;

// Why a count has its limit, for messages.
std::string limit_reason(int64_t limit) {
  if (limit == kMaxGpus) return "ringplan's limit on GPU counts and mesh sizes, 2^20";
  return fmt::format("2^{}, so that products of sizes fit in 64-bit integers", limit == kMaxSize ? 31 : 62);
}

struct Range {
  double lo, hi;
  bool lo_open;     // (lo, hi] rather than [lo, hi]
  bool hi_open;     // [lo, hi) rather than [lo, hi]
  const char* unit;  // appended to the valid range in messages ("" for none)
  const char* what = "";  // what the value is, for messages ("a probability (0.1 for 10%)")
  std::string text() const {
    return fmt::format("{}{}, {}{}{}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]", *unit ? " " : "", unit);
  }
};
// Ranges of the reals. Upper bounds sit orders of magnitude above any device (an H200 has
// 0.99e3 dense bf16 TFLOP/s, 141 GiB, 4.8e3 GB/s); lower bounds of divisors keep times finite.
constexpr Range kTflopsRange{1e-6, 1e6, false, false, "TFLOP/s"};
constexpr Range kMemoryGibRange{1e-6, 1e6, false, false, "GiB"};
constexpr Range kReservedGibRange{0, 1e6, false, false, "GiB"};
constexpr Range kBandwidthRange{1e-6, 1e9, false, false, "GB/s"};
constexpr Range kLatencyRange{0, 1e9, false, false, "us"};
constexpr Range kOversubscriptionRange{1, 1e3, false, false, "",
                                       "a downlink : uplink ratio (2 for 2:1; 1 is non-blocking)"};
constexpr Range kHalfTflopRange{0, 1e12, false, false, "TFLOP"};
constexpr Range kHalfKRange{0, 1e9, false, false, "elements of K"};
constexpr Range kHalfMibRange{0, 1e9, false, false, "MiB"};
constexpr Range kFractionRange{1e-6, 1, false, false, "", "a fraction of peak (0.38 for 38%)"};
constexpr Range kStreamingFractionRange{
    1e-6, 1, false, false, "", "the fraction of memory_bandwidth_gbps that streaming kernels reach (0.85 for 85%)"};
constexpr Range kOverlapShareRange{0, 0.5, false, false, "",
                                   "the fraction of the device's SMs an overlapped collective takes (0.12 for 16 of 132)"};
constexpr Range kMaskedTileCostRange{0.5, 16, false, false, "",
                                     "a diagonal tile's cost over a full tile's (1.85: masking makes it 85% dearer)"};
constexpr Range kTrainingScaleRange{0.05, 2, false, false, "",
                                   "the factor on the measured kernel curves' max in training (0.8: 80 % of their rate)"};
constexpr Range kProbabilityRange{0, 1, false, true, "", "a probability (0.1 for 10%, 0 for none)"};
constexpr Range kClipGradRange{0, 1e9, false, false, "", "the bound on the gradients' global L2 norm (1.0; 0 for no clipping)"};
constexpr Range kStepTimeRange{1e-9, 1e9, false, false, "s"};
constexpr Range kTokensPerSecondRange{1e-6, 1e12, false, false, "tokens/s"};

// A mapping being read: remembers each key's line, rejects unknown and duplicate keys.
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string file, std::string field, std::vector<std::string> allowed)
      : node_(node), file_(std::move(file)), field_(std::move(field)), allowed_(std::move(allowed)) {
    if (!node.IsMap())
      throw ConfigError(file_, line_of(node), field_,
                        fmt::format("expected a mapping with keys {{{}}}, got {}", join(allowed_), kind_of(node)));
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      if (!key.IsScalar())
        throw ConfigError(file_, line_of(key), field_, "keys must be plain names, got " + std::string(kind_of(key)));
      std::string k = key.Scalar();
      if (std::find(allowed_.begin(), allowed_.end(), k) == allowed_.end()) {
        std::string hint = closest_name(k, allowed_);
        throw ConfigError(file_, line_of(key), sub(field_, k),
                          fmt::format("unknown key '{}'{}; valid keys: {}", k,
                                      hint.empty() ? "" : " (did you mean '" + hint + "'?)", join(allowed_)));
      }
      if (!seen.insert(k).second) throw ConfigError(file_, line_of(key), sub(field_, k), "duplicate key '" + k + "'");
      key_line_[k] = line_of(key);
      value_[k] = kv.second;
    }
  }

  const std::string& file() const { return file_; }
  std::string field(const std::string& key) const { return sub(field_, key); }
  // Records where every key of this mapping was read, as `prefix`.key (prefix "" at the top).
  void record(std::map<std::string, FieldSource>& out, const std::string& prefix) const {
    out[prefix] = FieldSource{file_, map_line(), field_};  // "" at the top: the experiment mapping
    for (const auto& [k, line] : key_line_) out[sub(prefix, k)] = FieldSource{file_, line, field(k)};
  }
  bool has(const std::string& key) const { return value_.count(key) != 0; }
  int map_line() const { return line_of(node_); }
  int key_line(const std::string& key) const {
    auto it = key_line_.find(key);
    return it == key_line_.end() ? map_line() : it->second;
  }

  // The value of a required key; a missing key or an empty value (`key:`) is an error.
  const YAML::Node& require(const std::string& key) const {
    auto it = value_.find(key);
    if (it == value_.end())
      throw ConfigError(file_, map_line(), field(key), fmt::format("missing required key '{}'", key));
    if (it->second.IsNull()) throw ConfigError(file_, key_line(key), field(key), "has no value; a value is required");
    return it->second;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(file_, key_line(key), field(key), what);
  }

  // Scalars. A quoted scalar is text even when it looks like a number ("32").
  int64_t get_int(const std::string& key) const { return scalar_int(require(key), key_line(key), field(key)); }
  bool get_bool(const std::string& key) const { return scalar_bool(require(key), key_line(key), field(key)); }
  std::string get_string(const std::string& key) const {
    const YAML::Node& n = require(key);
    if (!n.IsScalar()) fail(key, fmt::format("expected a text value, got {}", kind_of(n)));
    if (n.Scalar().empty()) fail(key, "must not be empty");
    // Names travel into JSON (run --format json, report) and HTML, which hold UTF-8 only.
    if (const size_t bad = invalid_utf8_at(n.Scalar()); bad != std::string::npos)
      fail(key, fmt::format("is not valid UTF-8 text (byte {} of the value is 0x{:02x}); save the file as UTF-8 "
                            "or use plain ASCII",
                            bad + 1, static_cast<unsigned char>(n.Scalar()[bad])));
    return n.Scalar();
  }
  // A count in [1, limit] (see "One rule for every number" above).
  int64_t get_count(const std::string& key, int64_t limit) const {
    return scalar_count(require(key), key_line(key), field(key), limit);
  }
  // A finite real inside `range`.
  double get_real(const std::string& key, const Range& range) const {
    return scalar_real(require(key), key_line(key), field(key), range);
  }

  // A key with two named values: true for `on`, false for `off`, anything else refused with both.
  bool get_choice(const std::string& key, const char* off, const char* on) const {
    const std::string v = get_string(key);
    if (v != off && v != on) fail(key, fmt::format("must be one of {}, {}; got '{}'", off, on, v));
    return v == on;
  }

  template <typename E>
  E get_enum(const std::string& key, std::optional<E> (*parse)(const std::string&),
             const std::vector<std::string>& names) const {
    return scalar_enum(require(key), key_line(key), field(key), parse, names);
  }

  // The nested mapping of `key`, read with its own allowed keys.
  MapReader nested(const std::string& key, std::vector<std::string> allowed) const {
    const YAML::Node& n = require(key);
    if (!n.IsMap()) fail(key, fmt::format("expected a mapping with keys {{{}}}, got {}", join(allowed), kind_of(n)));
    return MapReader(n, file_, field(key), std::move(allowed));
  }

  // --- scalar conversions, shared with list elements ---------------------------------------
  int64_t scalar_int(const YAML::Node& n, int line, const std::string& where) const {
    if (!n.IsScalar()) throw ConfigError(file_, line, where, fmt::format("expected an integer, got {}", kind_of(n)));
    if (n.Tag() == "!")
      throw ConfigError(file_, line, where, fmt::format("expected an integer, got the quoted text \"{}\"", n.Scalar()));
    try {
      return n.as<int64_t>();
    } catch (const YAML::Exception&) {
      throw ConfigError(file_, line, where, fmt::format("expected an integer, got '{}'", n.Scalar()));
    }
  }
  double scalar_double(const YAML::Node& n, int line, const std::string& where) const {
    if (!n.IsScalar()) throw ConfigError(file_, line, where, fmt::format("expected a number, got {}", kind_of(n)));
    if (n.Tag() == "!")
      throw ConfigError(file_, line, where, fmt::format("expected a number, got the quoted text \"{}\"", n.Scalar()));
    double v = 0;
    try {
      v = n.as<double>();
    } catch (const YAML::Exception&) {
      throw ConfigError(file_, line, where, fmt::format("expected a number, got '{}'", n.Scalar()));
    }
    if (!std::isfinite(v))
      throw ConfigError(file_, line, where, fmt::format("must be a finite number, got '{}'", n.Scalar()));
    return v;
  }
  int64_t scalar_count(const YAML::Node& n, int line, const std::string& where, int64_t limit) const {
    const int64_t v = scalar_int(n, line, where);
    const std::string valid = fmt::format("valid: 1 .. {}", limit);
    if (v <= 0)
      throw ConfigError(file_, line, where, fmt::format("must be a positive integer (> 0), got {}; {}", v, valid));
    if (v > limit)
      throw ConfigError(file_, line, where,
                        fmt::format("must be at most {} ({}), got {}; {}", limit, limit_reason(limit), v, valid));
    return v;
  }
  double scalar_real(const YAML::Node& n, int line, const std::string& where, const Range& range) const {
    const double v = scalar_double(n, line, where);  // finite
    const bool low = range.lo_open ? !(v > range.lo) : !(v >= range.lo);
    const bool high = range.hi_open ? !(v < range.hi) : !(v <= range.hi);
    if ((low || high) && *range.what)
      throw ConfigError(file_, line, where, fmt::format("must be {} in {}, got {}", range.what, range.text(), v));
    if (low)
      throw ConfigError(file_, line, where,
                        fmt::format("must be {} {}, got {}; valid range {}", range.lo_open ? ">" : ">=", range.lo,
                                    v, range.text()));
    if (high)
      throw ConfigError(file_, line, where,
                        fmt::format("must be {} {}, got {}; valid range {}", range.hi_open ? "<" : "<=", range.hi,
                                    v, range.text()));
    return v;
  }
  bool scalar_bool(const YAML::Node& n, int line, const std::string& where) const {
    if (!n.IsScalar() || n.Tag() == "!")
      throw ConfigError(
          file_, line, where,
          fmt::format("expected true or false, got {}", n.IsScalar() ? "'" + n.Scalar() + "'" : kind_of(n)));
    try {
      return n.as<bool>();
    } catch (const YAML::Exception&) {
      throw ConfigError(file_, line, where, fmt::format("expected true or false, got '{}'", n.Scalar()));
    }
  }
  template <typename E>
  E scalar_enum(const YAML::Node& n, int line, const std::string& where, std::optional<E> (*parse)(const std::string&),
                const std::vector<std::string>& names) const {
    if (!n.IsScalar())
      throw ConfigError(file_, line, where, fmt::format("expected one of {}, got {}", join(names), kind_of(n)));
    if (auto v = parse(n.Scalar())) return *v;
    std::string hint = closest_name(n.Scalar(), names);
    throw ConfigError(file_, line, where,
                      fmt::format("'{}' is not valid{}; must be one of: {}", n.Scalar(),
                                  hint.empty() ? "" : " (did you mean '" + hint + "'?)", join(names)));
  }

  // A non-empty flow or block list; `element` converts and checks one item.
  template <typename T, typename F>
  std::vector<T> get_list(const std::string& key, F element) const {
    const YAML::Node& n = require(key);
    if (!n.IsSequence()) fail(key, fmt::format("expected a list such as [a, b], got {}", kind_of(n)));
    if (n.size() == 0) fail(key, "must not be an empty list; omit the key to use the planner's default set");
    std::vector<T> out;
    for (size_t i = 0; i < n.size(); ++i) {
      const YAML::Node& item = n[i];
      int line = line_of(item) ? line_of(item) : key_line(key);
      out.push_back(element(item, line, fmt::format("{}[{}]", field(key), i)));
    }
    return out;
  }

 private:
  YAML::Node node_;
  std::string file_;
  std::string field_;
  std::vector<std::string> allowed_;
  std::map<std::string, int> key_line_;
  std::map<std::string, YAML::Node> value_;
};

std::string read_text(const std::string& path) {
  if (std::string why = input_path_problem(path); !why.empty()) throw ConfigError(path, 0, "", why);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, "", "cannot open file for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  check_not_cut(text, path);
  return text;
}

YAML::Node parse_text(const std::string& text, const std::string& file) {
  try {
    // LoadAll, not Load: Load silently drops every document after the first.
    std::vector<YAML::Node> docs = YAML::LoadAll(text);
    if (docs.size() > 1)
      throw ConfigError(file, line_of(docs[1]), "",
                        fmt::format("holds {} YAML documents (separated by ---); expected exactly one", docs.size()));
    return docs.empty() ? YAML::Node() : docs.front();
  } catch (const YAML::ParserException& e) {
    int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    throw ConfigError(file, line, "", fmt::format("YAML syntax error (column {}): {}", e.mark.column + 1, e.msg));
  }
}

// The document of a standalone file: must be a mapping.
YAML::Node load_document(const std::string& path, const char* what) {
  YAML::Node doc = parse_text(read_text(path), path);
  if (doc.IsNull()) throw ConfigError(path, 0, "", fmt::format("file is empty; expected a {} mapping", what));
  return doc;
}

const std::vector<std::string> kModelKeys{"name",       "layers",    "hidden", "heads",           "kv_heads", "head_dim",
                                          "ffn_hidden", "gated_mlp", "vocab",  "tied_embeddings", "dropout",
                                          "rope_base", "position_embedding"};
const std::vector<std::string> kClusterKeys{
    "name",          "peak_tflops", "memory_gib", "memory_reserved_gib", "memory_bandwidth_gbps",
    "gpus_per_node", "nodes",       "intra_node", "inter_node",          "efficiency"};
const std::vector<std::string> kTrainingKeys{"seq_len", "global_batch", "global_batch_tokens",
                                             "dtype",   "optimizer",    "causal",
                                             "grad_accumulation_dtype", "cross_entropy", "fp8", "clip_grad", "documents",
                                             "mixed_precision", "elementwise", "norm", "fsdp", "pp_schedule", "pp_p2p", "tp_impl",
                                             "fp8_impl", "fp8_all_gather", "flash_kernel", "recompute_early_stop",
                                             "grad_accumulation", "param_gather_dtype", "grad_reduce_dtype", "projections"};
const std::vector<std::string> kDocumentKeys{"lengths", "distribution", "mean_length", "sigma", "seed"};
const std::vector<std::string> kExperimentKeys{"name", "model",   "cluster", "training", "gpus",
                                               "mesh", "options", "search",  "published"};
const std::vector<std::string> kMeshKeys{"dp", "tp", "cp", "pp"};
const std::vector<std::string> kOptionKeys{"micro_batch", "recompute",  "zero_stage", "sequence_parallel",
                                           "cp_scheme",   "interleave", "attention",  "cp_comm",
                                           "tp_overlap",  "cp_a2a_size", "pp_first_layers", "pp_last_layers",
                                           "pp_embedding_slot", "pp_loss_slot", "overlap_param_gather", "dp_replicate"};
const std::vector<std::string> kSearchKeys{"micro_batch", "recompute",  "zero_stage", "sequence_parallel",
                                           "cp_scheme",   "interleave", "attention",  "cp_comm",
                                           "cp_a2a_size", "dp_replicate", "max_tp",  "max_cp",     "max_pp"};
const std::vector<std::string> kPublishedKeys{"step_time_s",     "tflops_per_device",       "mfu",
                                              "peak_memory_gib", "peak_memory_allocated_gib", "tokens_per_s_per_device",
                                              "attention_flops", "source"};

// A link's bandwidth and latency from its mapping (read with the keys its caller allows).
LinkProfile read_link(const MapReader& r) {
  LinkProfile link;
  link.bandwidth_bytes_per_s = r.get_real("bandwidth_gbps", kBandwidthRange) * units::gb_bytes;
  link.latency_s = r.get_real("latency_us", kLatencyRange) * units::us_s;
  return link;
}

// `gemm`: a GEMM curve (matmul, matmul_backward, matmul_fp8), which may also give `half_k`
// (EfficiencyCurve::half_k); other curves refuse the key.
EfficiencyCurve read_curve(const MapReader& parent, const std::string& key, bool gemm = false) {
  MapReader r = gemm ? parent.nested(key, {"max", "half_tflop", "half_k"}) : parent.nested(key, {"max", "half_tflop"});
  EfficiencyCurve c;
  c.max_efficiency = r.get_real("max", kFractionRange);
  c.half_flops = r.get_real("half_tflop", kHalfTflopRange) * units::tflop;
  if (gemm && r.has("half_k")) c.half_k = r.get_real("half_k", kHalfKRange);
  return c;
}

CollectiveCurve read_collective_curve(const MapReader& parent, const std::string& key) {
  MapReader r = parent.nested(key, {"max", "half_mib"});
  CollectiveCurve c;
  c.max_efficiency = r.get_real("max", kFractionRange);
  c.half_bytes = r.get_real("half_mib", kHalfMibRange) * units::mib_bytes;
  return c;
}

int zero_stage_of(const MapReader& r, const YAML::Node& n, int line, const std::string& where) {
  int64_t v = r.scalar_int(n, line, where);
  if (v < 0 || v > 3)
    throw ConfigError(r.file(), line, where, fmt::format("must be a ZeRO stage 0, 1, 2 or 3, got {}", v));
  return static_cast<int>(v);
}


// A `model:` / `cluster:` / `training:` entry of an experiment: a path or an inline mapping.
// Records where the block's keys were read in `sources` (under `key`.).
template <typename T>
T read_block(const MapReader& r, const std::string& key, const std::string& base_dir,
             const std::vector<std::string>& keys, std::map<std::string, FieldSource>& sources,
             T (*from_node)(const YAML::Node&, const std::string&, const std::string&)) {
  const YAML::Node& n = r.require(key);
  if (n.IsMap()) {
    T value = from_node(n, r.file(), r.field(key));
    MapReader(n, r.file(), r.field(key), keys).record(sources, key);
    sources[key].line = r.key_line(key);
    return value;
  }
  if (!n.IsScalar() || n.Scalar().empty())
    r.fail(key, fmt::format("expected a file path (relative to this file's folder) or an inline mapping, got {}",
                            kind_of(n)));
  fs::path ref(n.Scalar());
  fs::path resolved = ref.is_absolute() ? ref : (fs::path(base_dir) / ref);
  std::string resolved_str = resolved.lexically_normal().string();
  if (std::string why = input_path_problem(resolved_str); !why.empty()) {
    if (why == "file not found")
      r.fail(key, fmt::format("referenced file '{}' not found (looked for '{}'; relative paths are resolved against "
                              "the folder of the file that names them)",
                              n.Scalar(), resolved_str));
    r.fail(key, fmt::format("referenced file '{}' ('{}') {}", n.Scalar(), resolved_str, why));
  }
  // Errors inside name the referenced file (as load_model() etc. would).
  const YAML::Node doc = load_document(resolved_str, key.c_str());
  T value = from_node(doc, resolved_str, key);
  MapReader(doc, resolved_str, key, keys).record(sources, key);
  return value;
}

std::string fmt_double(double v) { return fmt::format("{}", v); }  // shortest text that reads back exactly

void emit_double(YAML::Emitter& out, const char* key, double v) {
  out << YAML::Key << key << YAML::Value << fmt_double(v);
}

std::string dir_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// "1, 2, 4, 8" for the divisors of n (at most `shown`, then "..."), for "valid:" lists.
std::string divisors_text(int64_t n, size_t shown = 24) {
  std::vector<int64_t> small, large;
  for (int64_t d = 1; d * d <= n; ++d)
    if (n % d == 0) {
      small.push_back(d);
      if (d != n / d) large.push_back(n / d);
    }
  small.insert(small.end(), large.rbegin(), large.rend());
  std::string s;
  for (size_t i = 0; i < small.size() && i < shown; ++i) s += (i ? ", " : "") + std::to_string(small[i]);
  if (small.size() > shown) s += fmt::format(", ... ({} divisors of {})", small.size(), n);
  return s;
}

int64_t gcd64(int64_t a, int64_t b) {
  while (b != 0) a = std::exchange(b, a % b);
  return a;
}

// A fixed mesh against the model and the training setup it must split (the mesh sizes and their
// product against gpus are checked where the mesh is read). The same rules as
// sim::check_layout(), said here with the file, line and field and the valid values, so that
// every command that takes a fixed mesh (simulate, validate, fit, run, report, emit) refuses it
// at load. Options the command line may override (micro-batch, interleave) stay with check_layout.
void check_mesh_fits(const MapReader& m, const Experiment& e) {
  const Mesh& mesh = *e.mesh;
  const ModelConfig& md = e.model;
  if (md.heads % mesh.tp != 0 || md.kv_heads % mesh.tp != 0 || md.ffn_hidden % mesh.tp != 0) {
    const char* what = md.heads % mesh.tp != 0 ? "heads" : md.kv_heads % mesh.tp != 0 ? "kv_heads" : "ffn_hidden";
    const int64_t value = md.heads % mesh.tp != 0 ? md.heads : md.kv_heads % mesh.tp != 0 ? md.kv_heads : md.ffn_hidden;
    const int64_t g = gcd64(gcd64(md.heads, md.kv_heads), md.ffn_hidden);
    m.fail("tp", fmt::format("{} does not divide {} {} of model '{}'; valid: {} (the divisors of heads {}, kv_heads {} "
                             "and ffn_hidden {})",
                             mesh.tp, what, value, md.name, divisors_text(g), md.heads, md.kv_heads, md.ffn_hidden));
  }
  if (mesh.pp > md.layers)
    m.fail("pp", fmt::format("{} pipeline stages exceed the {} layers of model '{}'; valid: 1 .. {}", mesh.pp,
                             md.layers, md.name, md.layers));
  const int64_t seq = e.training.seq_len;
  // CP 1 shards nothing, whatever the scheme: any seq_len.
  const bool zigzag = e.options.cp_scheme == CpScheme::zigzag && mesh.cp > 1;
  const int64_t chunks = zigzag ? 2 * mesh.cp : mesh.cp;
  if (seq % chunks != 0)
    m.fail("cp", fmt::format("{} does not divide seq_len {}{}; valid: {}{}", mesh.cp, seq,
                             zigzag ? fmt::format(" into 2*cp = {} chunks (cp_scheme zigzag)", chunks) : "",
                             zigzag && seq % 2 == 0 ? divisors_text(seq / 2)
                                                    : zigzag ? std::string("none (zigzag needs an even seq_len)")
                                                             : divisors_text(seq),
                             zigzag ? " (zigzag: cp divides seq_len / 2)" : ""));
  // Data parallel replicas split the global batch.
  const int64_t batch = e.training.global_batch_sequences;
  if (batch % mesh.dp != 0)
    m.fail("dp", fmt::format("{} replicas do not divide the global batch of {} sequences; valid: {}", mesh.dp, batch,
                             divisors_text(batch)));
}

// cp_comm hybrid with a fixed mesh: the group size A must divide CP and split the heads per TP
// rank as an all-to-all of A ranks does (sim::check_layout says the same for meshes searched).
void check_cp_a2a_size(const MapReader& o, const Experiment& e) {
  const Mesh& mesh = *e.mesh;
  const int64_t a = e.options.cp_a2a_size;
  if (mesh.cp % a != 0)
    o.fail("cp_a2a_size", fmt::format("{} does not divide cp {} (the CP group is cut into cp / cp_a2a_size ring groups "
                                      "of cp_a2a_size ranks); valid: {}",
                                      a, mesh.cp, divisors_text(mesh.cp)));
  if (e.model.heads % mesh.tp != 0 || e.model.kv_heads % mesh.tp != 0) return;  // check_mesh_fits reports TP
  const int64_t hq = e.model.heads / mesh.tp, hkv = e.model.kv_heads / mesh.tp;
  auto splits = [&](int64_t g) { return hq % g == 0 && (hkv % g == 0 || g % hkv == 0); };
  if (!splits(a)) {
    std::string valid;
    for (int64_t g = 1; g <= mesh.cp; ++g)
      if (mesh.cp % g == 0 && splits(g)) valid += (valid.empty() ? "" : ", ") + std::to_string(g);
    o.fail("cp_a2a_size", fmt::format("{} cannot split the heads per TP rank (heads {} / tp {} = {}, kv_heads {} / tp {} "
                                      "= {}): it must divide the query heads and divide or be a multiple of the KV "
                                      "heads; valid: {} (the divisors of cp {} that do)",
                                      a, e.model.heads, mesh.tp, hq, e.model.kv_heads, mesh.tp, hkv, valid, mesh.cp));
  }
}

}  // namespace

ConfigError experiment_field_error(const Experiment& e, const std::string& key, const std::string& what) {
  auto it = e.sources.find(key);
  if (it == e.sources.end()) return ConfigError(e.path, 0, key, what);
  return ConfigError(it->second.file, it->second.line, it->second.field, what);
}

// ---------------------------------------------------------------------------------------------
// Readers

ModelConfig model_from_yaml(const YAML::Node& node, const std::string& file, const std::string& field) {
  MapReader r(node, file, field, kModelKeys);
  ModelConfig m;
  m.name = r.get_string("name");
  m.layers = r.get_count("layers", kMaxSize);
  m.hidden = r.get_count("hidden", kMaxSize);
  m.heads = r.get_count("heads", kMaxSize);
  m.kv_heads = r.get_count("kv_heads", kMaxSize);
  m.head_dim = r.get_count("head_dim", kMaxSize);
  m.ffn_hidden = r.get_count("ffn_hidden", kMaxSize);
  m.gated_mlp = r.get_bool("gated_mlp");
  m.vocab = r.get_count("vocab", kMaxSize);
  m.tied_embeddings = r.has("tied_embeddings") ? r.get_bool("tied_embeddings") : false;
  if (r.has("dropout")) {
    // A probability of dropping an element; 1 would drop everything.
    m.dropout = r.get_real("dropout", kProbabilityRange);
  }
  if (r.has("rope_base")) m.rope_base = r.get_count("rope_base", kMaxSize);
  if (r.has("position_embedding")) m.rope = !r.get_choice("position_embedding", "rope", "learned");
  // Grouped-query attention: each KV head serves heads/kv_heads query heads.
  if (m.kv_heads > m.heads) r.fail("kv_heads", fmt::format("must be <= heads ({}), got {}", m.heads, m.kv_heads));
  if (m.heads % m.kv_heads != 0)
    r.fail("kv_heads", fmt::format("heads ({}) must be a multiple of kv_heads ({}); use a divisor of {}", m.heads,
                                   m.kv_heads, m.heads));
  return m;
}

ClusterConfig cluster_from_yaml(const YAML::Node& node, const std::string& file, const std::string& field) {
  MapReader r(node, file, field, kClusterKeys);
  ClusterConfig c;
  c.name = r.get_string("name");
  {
    MapReader peak = r.nested("peak_tflops", {"bf16", "fp16", "fp32", "fp8"});
    c.peak_flops_per_s_bf16 = peak.get_real("bf16", kTflopsRange) * units::tflop;
    c.peak_flops_per_s_fp16 = peak.get_real("fp16", kTflopsRange) * units::tflop;
    c.peak_flops_per_s_fp32 = peak.get_real("fp32", kTflopsRange) * units::tflop;
    // Optional: devices without FP8 tensor cores leave it out (0).
    if (peak.has("fp8")) c.peak_flops_per_s_fp8 = peak.get_real("fp8", kTflopsRange) * units::tflop;
  }
  c.memory_bytes = r.get_real("memory_gib", kMemoryGibRange) * units::gib_bytes;
  c.memory_reserved_bytes = r.get_real("memory_reserved_gib", kReservedGibRange) * units::gib_bytes;
  if (c.memory_reserved_bytes >= c.memory_bytes)
    r.fail("memory_reserved_gib",
           fmt::format("must be less than memory_gib ({}), got {}", c.memory_bytes / units::gib_bytes,
                       c.memory_reserved_bytes / units::gib_bytes));
  c.memory_bandwidth_bytes_per_s = r.get_real("memory_bandwidth_gbps", kBandwidthRange) * units::gb_bytes;
  c.gpus_per_node = r.get_count("gpus_per_node", kMaxGpus);
  c.nodes = r.get_count("nodes", kMaxGpus);
  if (c.gpus_per_node > kMaxGpus / c.nodes)  // both <= 2^20: the product cannot overflow, but keep the rule
    r.fail("nodes", fmt::format("gpus_per_node x nodes = {} x {} = {} GPUs; at most {} ({}) are valid",
                                c.gpus_per_node, c.nodes, c.gpus_per_node * c.nodes, kMaxGpus,
                                limit_reason(kMaxGpus)));
  c.intra_node = read_link(r.nested("intra_node", {"bandwidth_gbps", "latency_us"}));
  {
    // The inter-node link, and how its switch groups share it (SwitchGroups): both keys or neither.
    const MapReader in = r.nested("inter_node", {"bandwidth_gbps", "latency_us", "group_nodes", "oversubscription"});
    c.inter_node = read_link(in);
    if (in.has("group_nodes") != in.has("oversubscription"))
      in.fail(in.has("group_nodes") ? "group_nodes" : "oversubscription",
              "group_nodes (nodes under one non-blocking switch group) and oversubscription (the downlink : uplink "
              "ratio of the links leaving a group, >= 1) go together; set both, or neither for one non-blocking "
              "network");
    if (in.has("group_nodes")) {
      c.switch_groups.nodes = in.get_count("group_nodes", kMaxGpus);
      c.switch_groups.oversubscription = in.get_real("oversubscription", kOversubscriptionRange);
    }
  }
  MapReader eff =
      r.nested("efficiency",
               {"matmul", "matmul_backward", "matmul_fp8", "materialized_attention", "attention", "attention_backward",
                "attention_flash_triton", "attention_flash_fa2", "memory_bandwidth", "collectives",
                "collectives_inter_node", "overlap_sm_share", "masked_tiles",
                "training_scale"});
  c.matmul = read_curve(eff, "matmul", true);
  c.attention = read_curve(eff, "attention");
  // Optional: absent leaves max_efficiency 0, i.e. the backward uses `attention`.
  if (eff.has("attention_backward")) c.attention_backward = read_curve(eff, "attention_backward");
  // Optional: absent leaves max_efficiency 0, i.e. the materialised forward uses `matmul`.
  if (eff.has("materialized_attention")) c.materialized_attention = read_curve(eff, "materialized_attention");
  // Optional: absent leaves max_efficiency 0, and runs with training.flash_kernel triton are refused.
  if (eff.has("attention_flash_triton")) c.attention_flash_triton = read_curve(eff, "attention_flash_triton");
  // Optional: absent leaves max_efficiency 0, and runs with training.flash_kernel fa2 are refused.
  if (eff.has("attention_flash_fa2")) c.attention_flash_fa2 = read_curve(eff, "attention_flash_fa2");
  // Optional: absent leaves max_efficiency 0, i.e. the materialised backward uses `matmul`.
  if (eff.has("matmul_backward")) c.matmul_backward = read_curve(eff, "matmul_backward", true);
  // Optional: absent leaves max_efficiency 0, i.e. FP8 GEMMs use matmul's fraction of their peak.
  if (eff.has("matmul_fp8")) {
    if (c.peak_flops_per_s_fp8 <= 0)
      eff.fail("matmul_fp8", "is set but peak_tflops.fp8 is not: give the device's dense FP8 peak, or remove it");
    c.matmul_fp8 = read_curve(eff, "matmul_fp8", true);
  }
  // Optional: absent keeps the ideal ring (efficiency 1 at every size).
  if (eff.has("collectives")) {
    const MapReader coll = eff.nested("collectives", {"all_reduce", "reduce_scatter", "all_gather"});
    if (coll.has("all_reduce")) c.collectives.all_reduce = read_collective_curve(coll, "all_reduce");
    if (coll.has("reduce_scatter")) c.collectives.reduce_scatter = read_collective_curve(coll, "reduce_scatter");
    if (coll.has("all_gather")) c.collectives.all_gather = read_collective_curve(coll, "all_gather");
  }
  // Optional: absent means inter-node collectives use `collectives` too.
  if (eff.has("collectives_inter_node")) {
    const MapReader coll = eff.nested("collectives_inter_node", {"all_reduce", "reduce_scatter", "all_gather"});
    c.has_inter_node_collectives = true;
    if (coll.has("all_reduce")) c.inter_node_collectives.all_reduce = read_collective_curve(coll, "all_reduce");
    if (coll.has("reduce_scatter"))
      c.inter_node_collectives.reduce_scatter = read_collective_curve(coll, "reduce_scatter");
    if (coll.has("all_gather")) c.inter_node_collectives.all_gather = read_collective_curve(coll, "all_gather");
  }
  if (eff.has("memory_bandwidth")) {
    c.memory_bandwidth_efficiency = eff.get_real("memory_bandwidth", kStreamingFractionRange);
  }
  // Optional: absent (0) means overlap is free, as before this key existed.
  if (eff.has("overlap_sm_share")) c.overlap_sm_share = eff.get_real("overlap_sm_share", kOverlapShareRange);
  // Optional: absent counts the visible pairs exactly (tile 1, costs 1).
  if (eff.has("masked_tiles")) {
    const MapReader mt = eff.nested("masked_tiles", {"tile", "forward", "backward"});
    c.masked_tiles.tile = mt.get_count("tile", 1 << 16);
    c.masked_tiles.forward = mt.get_real("forward", kMaskedTileCostRange);
    c.masked_tiles.backward = mt.get_real("backward", kMaskedTileCostRange);
  }
  // Optional: absent keeps the kernel curves as they are (scales 1). The curves above are the
  // kernels' own; the model holds them scaled (ClusterConfig::set_training_scale).
  if (eff.has("training_scale")) {
    const MapReader ts = eff.nested("training_scale", {"matmul", "attention"});
    const double m = ts.has("matmul") ? ts.get_real("matmul", kTrainingScaleRange) : 1.0;
    const double a = ts.has("attention") ? ts.get_real("attention", kTrainingScaleRange) : 1.0;
    for (const bool attn : {false, true}) {
      const double scale = attn ? a : m, top = c.kernel_max(attn);
      if (scale * top > 1.0)
        ts.fail(attn ? "attention" : "matmul",
                fmt::format("{} x the family's largest curve max {} = {:.3f} exceeds 1 (no kernel runs above peak); "
                            "valid: at most {:.3f} for these curves",
                            scale, top, scale * top, 1.0 / top));
    }
    c.set_training_scale(m, a);
  }
  return c;
}

namespace {

// training.documents: either `lengths: [..]` (summing to seq_len) or `distribution: uniform |
// lognormal` with mean_length, seed and (lognormal only) sigma.
DocumentSpec documents_from_yaml(const MapReader& r, int64_t seq_len) {
  DocumentSpec d;
  const bool fixed = r.has("lengths"), drawn = r.has("distribution");
  if (fixed == drawn)
    throw ConfigError(r.file(), fixed ? r.key_line("distribution") : r.map_line(),
                      r.field(fixed ? "distribution" : "lengths"),
                      fixed ? "give either lengths (a fixed list) or distribution, not both"
                            : "missing required key: give lengths: [..] (summing to seq_len) or distribution: "
                              "uniform | lognormal with mean_length and seed");
  if (fixed) {
    for (const char* key : {"mean_length", "sigma", "seed"})
      if (r.has(key)) r.fail(key, "belongs to a length distribution; a fixed `lengths` list takes no " + std::string(key));
    d.kind = DocumentLengthKind::fixed;
    if (const YAML::Node& n = r.require("lengths"); n.IsSequence() && n.size() == 0)
      r.fail("lengths", "must list at least one document length (summing to seq_len)");
    d.lengths = r.get_list<int64_t>("lengths", [&](const YAML::Node& n, int line, const std::string& where) {
      return r.scalar_count(n, line, where, kMaxSize);
    });
    if (const std::string e = check_document_lengths(d.lengths, seq_len); !e.empty()) r.fail("lengths", e);
    return d;
  }
  const std::vector<std::string> kinds{"uniform", "lognormal"};
  d.kind = r.get_enum<DocumentLengthKind>("distribution", parse_document_length_kind, kinds);
  if (d.kind == DocumentLengthKind::fixed)
    r.fail("distribution", "'fixed' is written as lengths: [..]; distribution must be one of: uniform, lognormal");
  d.mean_length = r.get_real("mean_length", Range{1, static_cast<double>(kMaxSize), false, false, "tokens"});
  const int64_t seed = r.get_int("seed");
  if (seed < 0) r.fail("seed", fmt::format("must be an integer >= 0, got {}", seed));
  d.seed = static_cast<uint64_t>(seed);
  if (r.has("sigma")) {
    if (d.kind != DocumentLengthKind::lognormal)
      r.fail("sigma", "only the lognormal distribution takes sigma (the uniform one is set by mean_length alone)");
    d.sigma = r.get_real("sigma", Range{0, 4, true, false, "", "the standard deviation of log(length)"});
  }
  d.lengths = document_lengths(d, seq_len);
  return d;
}

}  // namespace

TrainingConfig training_from_yaml(const YAML::Node& node, const std::string& file, const std::string& field) {
  MapReader r(node, file, field, kTrainingKeys);
  TrainingConfig t;
  t.seq_len = r.get_count("seq_len", kMaxSize);
  bool by_sequences = r.has("global_batch"), by_tokens = r.has("global_batch_tokens");
  if (by_sequences == by_tokens)
    throw ConfigError(file, by_tokens ? r.key_line("global_batch_tokens") : r.map_line(),
                      by_tokens ? r.field("global_batch_tokens") : r.field("global_batch"),
                      by_tokens ? "give either global_batch (sequences) or global_batch_tokens, not both"
                                : "missing required key: give global_batch (sequences) or global_batch_tokens");
  if (by_sequences) {
    t.global_batch_sequences = r.get_count("global_batch", kMaxSize);
  } else {
    int64_t tokens = r.get_count("global_batch_tokens", kMaxTokens);
    if (tokens % t.seq_len != 0) {
      int64_t below = tokens / t.seq_len * t.seq_len, above = below + t.seq_len;
      r.fail("global_batch_tokens",
             fmt::format("{} is not a multiple of seq_len {}; use a multiple such as {}{}", tokens, t.seq_len,
                         below > 0 ? std::to_string(below) + " or " : "", above));
    }
    t.global_batch_sequences = tokens / t.seq_len;
    if (t.global_batch_sequences > kMaxSize)
      r.fail("global_batch_tokens",
             fmt::format("{} tokens are {} sequences of seq_len {}; at most {} sequences ({}) are valid", tokens,
                         t.global_batch_sequences, t.seq_len, kMaxSize, limit_reason(kMaxSize)));
  }
  t.dtype = r.get_enum<DType>("dtype", parse_dtype, dtype_names());
  t.optimizer = r.get_enum<Optimizer>("optimizer", parse_optimizer, optimizer_names());
  t.causal = r.has("causal") ? r.get_bool("causal") : true;
  if (r.has("grad_accumulation_dtype")) t.fp32_grad_accumulation = r.get_choice("grad_accumulation_dtype", "same", "fp32");
  if (r.has("cross_entropy")) {
    t.cross_entropy = r.get_enum<CrossEntropy>("cross_entropy", parse_cross_entropy, cross_entropy_names());
    if (t.cross_entropy == CrossEntropy::fused_16bit && t.dtype == DType::fp32)
      r.fail("cross_entropy", "fused_16bit reads 16-bit logits: it needs dtype bf16 or fp16, got fp32");
  }
  if (r.has("fsdp")) t.fsdp_per_parameter = r.get_choice("fsdp", "flat", "per_parameter");
  if (r.has("pp_schedule")) t.pytorch_pp_schedule = r.get_choice("pp_schedule", "megatron", "pytorch");
  if (r.has("pp_p2p")) t.pp_scatter_gather = r.get_choice("pp_p2p", "full", "scatter_gather");
  if (r.has("tp_impl")) t.tp_dtensor = r.get_choice("tp_impl", "megatron", "dtensor");
  if (r.has("recompute_early_stop")) t.recompute_early_stop = r.get_bool("recompute_early_stop");
  if (r.has("fp8")) {
    t.fp8 = r.get_bool("fp8");
    if (t.fp8 && t.dtype == DType::fp32)
      r.fail("fp8", "FP8 linear layers need a 16-bit training dtype (bf16 or fp16), got dtype fp32");
  }
  if (r.has("fp8_impl")) {
    t.fp8_torchao = r.get_choice("fp8_impl", "transformer_engine", "torchao");
    if (!t.fp8) r.fail("fp8_impl", "says which library runs the FP8 linear layers: it needs fp8: true");
  }
  if (r.has("fp8_all_gather")) {
    t.fp8_all_gather = r.get_bool("fp8_all_gather");
    if (t.fp8_all_gather && !t.fp8_torchao)
      r.fail("fp8_all_gather", "is torchao's FP8 all-gather of FSDP-sharded weights: it needs fp8: true and fp8_impl: torchao");
  }
  if (r.has("mixed_precision")) {
    t.autocast = r.get_choice("mixed_precision", "master_weights", "autocast");
    if (t.autocast && t.dtype == DType::fp32)
      r.fail("mixed_precision", "autocast needs a 16-bit training dtype (bf16 or fp16), got dtype fp32");
    if (t.autocast && r.has("grad_accumulation_dtype") && !t.fp32_grad_accumulation)
      r.fail("grad_accumulation_dtype",
             "autocast keeps float32 parameters and gradients; grad_accumulation_dtype must be fp32 or left out");
    if (t.autocast) t.fp32_grad_accumulation = true;
  }
  // The collectives' dtypes, read after mixed_precision, which decides whether float32
  // parameters exist to gather.
  auto collective_dtype = [&](const char* key) {
    const DType d = r.get_enum<DType>(key, parse_dtype, dtype_names());
    if (d != DType::fp32 && t.dtype == DType::fp32)
      r.fail(key, fmt::format("{} with dtype fp32: the parameters and gradients are float32; valid: fp32", to_string(d)));
    if (d != DType::fp32 && d != t.dtype)
      r.fail(key, fmt::format("{}: a 16-bit collective dtype must be the training dtype {}; valid: {}, fp32",
                              to_string(d), to_string(t.dtype), to_string(t.dtype)));
    return d;
  };
  if (r.has("param_gather_dtype")) {
    t.param_gather_dtype = collective_dtype("param_gather_dtype");
    if (*t.param_gather_dtype == DType::fp32 && t.dtype != DType::fp32 && !t.autocast)
      r.fail("param_gather_dtype",
             fmt::format("fp32 with mixed_precision master_weights: the {} weights are what the group gathers (the float32 "
                         "master copy stays in the optimizer); valid: {}, or fp32 with mixed_precision: autocast",
                         to_string(t.dtype), to_string(t.dtype)));
  }
  if (r.has("grad_reduce_dtype")) t.grad_reduce_dtype = collective_dtype("grad_reduce_dtype");
  // Autocast's float32 .grad is summed by autograd (no main_grad for a GEMM to add into).
  if (t.autocast) t.grad_accumulation = GradAccumulation::inplace;
  if (r.has("grad_accumulation")) {
    t.grad_accumulation =
        r.get_enum<GradAccumulation>("grad_accumulation", parse_grad_accumulation, grad_accumulation_names());
    if (t.autocast && t.grad_accumulation != GradAccumulation::inplace)
      r.fail("grad_accumulation", fmt::format("mixed_precision autocast sums its float32 .grad through autograd; "
                                              "grad_accumulation must be inplace or left out, got {}",
                                              to_string(t.grad_accumulation)));
    if (t.grad_accumulation == GradAccumulation::cast_add && !(t.fp32_grad_accumulation && t.dtype != DType::fp32))
      r.fail("grad_accumulation", "cast_add adds 16-bit gradients into a float32 buffer: it needs a 16-bit dtype and "
                                  "grad_accumulation_dtype: fp32");
  }
  if (r.has("elementwise")) t.eager_elementwise = r.get_choice("elementwise", "fused", "eager");
  t.norm = t.eager_elementwise ? NormImpl::eager : NormImpl::fused;
  if (r.has("norm")) {
    t.norm = r.get_enum<NormImpl>("norm", parse_norm, norm_names());
    if (t.norm == NormImpl::eager && !t.eager_elementwise)
      r.fail("norm", "norm: eager needs elementwise: eager (with fused element-wise ops the norm is fused too); "
                     "leave norm out or set elementwise: eager");
  }
  if (r.has("flash_kernel"))
    t.flash_kernel = r.get_enum<FlashKernel>("flash_kernel", parse_flash_kernel, flash_kernel_names());
  if (r.has("projections")) t.separate_projections = r.get_choice("projections", "fused", "separate");
  if (r.has("clip_grad")) t.clip_grad = r.get_real("clip_grad", kClipGradRange);
  if (r.has("documents")) t.documents = documents_from_yaml(r.nested("documents", kDocumentKeys), t.seq_len);
  return t;
}

Experiment experiment_from_yaml(const YAML::Node& node, const std::string& file, const std::string& base_dir,
                                const std::string& field) {
  MapReader r(node, file, field, kExperimentKeys);
  Experiment e;
  e.path = file;
  e.name = r.get_string("name");
  r.record(e.sources, "");
  e.model = read_block<ModelConfig>(r, "model", base_dir, kModelKeys, e.sources, model_from_yaml);
  e.cluster = read_block<ClusterConfig>(r, "cluster", base_dir, kClusterKeys, e.sources, cluster_from_yaml);
  e.training = read_block<TrainingConfig>(r, "training", base_dir, kTrainingKeys, e.sources, training_from_yaml);
  if (r.has("gpus")) e.gpus = r.get_count("gpus", kMaxGpus);
  if (e.training.fp8 && e.cluster.peak_flops_per_s_fp8 <= 0)
    r.fail("cluster", fmt::format("training.fp8 is true but cluster '{}' has no peak_tflops.fp8 (no FP8 tensor "
                                  "cores given); use a cluster with FP8 tensor cores or set training.fp8: false",
                                  e.cluster.name));
  if (!e.cluster.has_flash_curve(e.training.flash_kernel))
    r.fail("cluster", fmt::format("training.flash_kernel is {} but cluster '{}' has no efficiency.{} curve; add "
                                  "one (measured or published rates of that kernel on this device) or set "
                                  "training.flash_kernel: standard",
                                  to_string(e.training.flash_kernel), e.cluster.name,
                                  flash_curve_key(e.training.flash_kernel)));

  std::optional<MapReader> mesh_reader;
  if (r.has("mesh")) {
    // Omitted mesh dimensions are 1 (no parallelism along them).
    MapReader& m = mesh_reader.emplace(r.nested("mesh", kMeshKeys));
    m.record(e.sources, "mesh");
    e.sources["mesh"].line = r.key_line("mesh");
    Mesh mesh;
    if (m.has("dp")) mesh.dp = m.get_count("dp", kMaxGpus);
    if (m.has("tp")) mesh.tp = m.get_count("tp", kMaxGpus);
    if (m.has("cp")) mesh.cp = m.get_count("cp", kMaxGpus);
    if (m.has("pp")) mesh.pp = m.get_count("pp", kMaxGpus);
    if (!mesh.within_gpu_limit())
      r.fail("mesh", fmt::format("dp*tp*cp*pp = {}*{}*{}*{} exceeds {} GPUs ({}); use a smaller mesh", mesh.dp,
                                 mesh.tp, mesh.cp, mesh.pp, kMaxGpus, limit_reason(kMaxGpus)));
    // A fixed mesh fixes the world size: gpus defaults to it and must agree with it.
    if (e.gpus && *e.gpus != mesh.world_size())
      r.fail("mesh", fmt::format("dp*tp*cp*pp = {}*{}*{}*{} = {} must equal gpus ({}); change the mesh or gpus",
                                 mesh.dp, mesh.tp, mesh.cp, mesh.pp, mesh.world_size(), *e.gpus));
    e.gpus = mesh.world_size();
    e.mesh = mesh;
    e.mesh_line = r.key_line("mesh");
  }

  if (r.has("options")) {
    MapReader o = r.nested("options", kOptionKeys);
    o.record(e.sources, "options");
    e.sources["options"].line = r.key_line("options");
    ParallelOptions& opt = e.options;
    e.options_line = r.key_line("options");
    FixedOptionKeys& given = e.fixed_options;
    given.micro_batch = o.has("micro_batch");
    given.recompute = o.has("recompute");
    given.zero_stage = o.has("zero_stage");
    given.sequence_parallel = o.has("sequence_parallel");
    given.cp_scheme = o.has("cp_scheme");
    given.interleave = o.has("interleave");
    given.attention = o.has("attention");
    given.cp_comm = o.has("cp_comm");
    given.tp_overlap = o.has("tp_overlap");
    given.cp_a2a_size = o.has("cp_a2a_size");
    given.pp_split = o.has("pp_first_layers") || o.has("pp_last_layers") || o.has("pp_embedding_slot") || o.has("pp_loss_slot");
    given.overlap_param_gather = o.has("overlap_param_gather");
    given.dp_replicate = o.has("dp_replicate");
    if (o.has("micro_batch")) opt.micro_batch = o.get_count("micro_batch", kMaxSize);
    if (o.has("recompute")) opt.recompute = o.get_enum<Recompute>("recompute", parse_recompute, recompute_names());
    if (o.has("zero_stage"))
      opt.zero_stage = zero_stage_of(o, o.require("zero_stage"), o.key_line("zero_stage"), o.field("zero_stage"));
    if (o.has("sequence_parallel")) opt.sequence_parallel = o.get_bool("sequence_parallel");
    if (o.has("cp_scheme")) opt.cp_scheme = o.get_enum<CpScheme>("cp_scheme", parse_cp_scheme, cp_scheme_names());
    if (o.has("interleave")) opt.interleave = o.get_count("interleave", kMaxSize);
    if (o.has("attention")) opt.attention = o.get_enum<AttentionImpl>("attention", parse_attention, attention_names());
    if (o.has("cp_comm")) opt.cp_comm = o.get_enum<CpComm>("cp_comm", parse_cp_comm, cp_comm_names());
    if (o.has("tp_overlap"))
      opt.tp_overlap = o.get_enum<TpOverlap>("tp_overlap", parse_tp_overlap, tp_overlap_names());
    if (o.has("pp_first_layers")) opt.pp_first_layers = o.get_count("pp_first_layers", kMaxSize);
    if (o.has("pp_last_layers")) opt.pp_last_layers = o.get_count("pp_last_layers", kMaxSize);
    if (o.has("pp_embedding_slot")) opt.pp_embedding_slot = o.get_bool("pp_embedding_slot");
    if (o.has("pp_loss_slot")) opt.pp_loss_slot = o.get_bool("pp_loss_slot");
    if (o.has("overlap_param_gather")) opt.overlap_param_gather = o.get_bool("overlap_param_gather");
    if (o.has("dp_replicate")) {
      opt.dp_replicate = o.get_count("dp_replicate", kMaxGpus);
      if (opt.dp_replicate > 1 && o.has("zero_stage") && opt.zero_stage == 0)
        o.fail("dp_replicate", fmt::format("{} replicas of the sharded state need zero_stage >= 1 (this layout has "
                                           "zero_stage 0, which shards nothing); valid: 1, or a zero_stage of 1-3",
                                           opt.dp_replicate));
      if (e.mesh && e.mesh->dp % opt.dp_replicate != 0)
        o.fail("dp_replicate", fmt::format("{} does not divide dp {} (the DP ranks split into dp_replicate groups of "
                                           "dp / dp_replicate shards); valid: {}",
                                           opt.dp_replicate, e.mesh->dp, divisors_text(e.mesh->dp)));
    }
    // Both fixed, they leave no TP > 1 layout that can run (check_layout refuses each one): said
    // here with the line, not as one rejection reason among a plan's many.
    if (opt.tp_overlap == TpOverlap::pipelined && o.has("sequence_parallel") && !opt.sequence_parallel &&
        (!e.mesh || e.mesh->tp > 1))
      o.fail("tp_overlap",
             "pipelined needs sequence_parallel true (Transformer Engine overlaps the sequence-parallel all-gathers "
             "and reduce-scatters; Megatron-LM refuses --tp-comm-overlap without --sequence-parallel), and this "
             "file sets sequence_parallel false, so no layout with TP > 1 could run; valid: sequence_parallel true, "
             "or tp_overlap backward or none");
    // Whatever the mesh, the first and last stages' layers come out of the model's: with only
    // one of them given, the other stages need at least one layer. (What a given PP allows on top
    // is check_layout's.) Refused here so that a plan never quietly searches PP 1 only.
    if (opt.pp_first_layers > 0 || opt.pp_last_layers > 0) {
      const int64_t a = opt.pp_first_layers, b = opt.pp_last_layers, layers = e.model.layers;
      const bool both = a > 0 && b > 0;
      if (a + b + (both ? 0 : 1) > layers)
        o.fail(a > 0 ? "pp_first_layers" : "pp_last_layers",
               both ? fmt::format("pp_first_layers {} + pp_last_layers {} exceed the model's {} layers; valid: the two "
                                  "together at most {}",
                                  a, b, layers, layers)
                    : fmt::format("{} leaves no layer for the other pipeline stages of the model's {} layers; valid: "
                                  "at most {}",
                                  std::max(a, b), layers, layers - 1));
    }
    if ((opt.pp_first_layers > 0 || opt.pp_last_layers > 0) && (opt.pp_embedding_slot || opt.pp_loss_slot))
      o.fail(o.has("pp_embedding_slot") ? "pp_embedding_slot" : "pp_loss_slot",
             "cannot be combined with pp_first_layers / pp_last_layers (Megatron-LM refuses the two kinds of "
             "uneven pipeline together): give the layer counts, or the slots");
    if (o.has("cp_a2a_size")) {
      opt.cp_a2a_size = o.get_count("cp_a2a_size", kMaxGpus);
      if (opt.cp_comm != CpComm::hybrid)
        o.fail("cp_a2a_size", fmt::format("is the all-to-all group size of cp_comm hybrid; this layout has cp_comm {} "
                                          "(set cp_comm: hybrid, or remove cp_a2a_size)",
                                          to_string(opt.cp_comm)));
      if (e.mesh) check_cp_a2a_size(o, e);
    }
  }

  if (mesh_reader) check_mesh_fits(*mesh_reader, e);

  if (r.has("search")) {
    MapReader s = r.nested("search", kSearchKeys);
    SearchSpace& sp = e.search;
    auto size = [&s](const YAML::Node& n, int line, const std::string& w) { return s.scalar_count(n, line, w, kMaxSize); };
    if (s.has("micro_batch")) sp.micro_batch = s.get_list<int64_t>("micro_batch", size);
    if (s.has("recompute"))
      sp.recompute = s.get_list<Recompute>("recompute", [&s](const YAML::Node& n, int line, const std::string& w) {
        return s.scalar_enum<Recompute>(n, line, w, parse_recompute, recompute_names());
      });
    if (s.has("zero_stage"))
      sp.zero_stage = s.get_list<int>("zero_stage", [&s](const YAML::Node& n, int line, const std::string& w) {
        return zero_stage_of(s, n, line, w);
      });
    if (s.has("sequence_parallel"))
      sp.sequence_parallel = s.get_list<bool>(
          "sequence_parallel",
          [&s](const YAML::Node& n, int line, const std::string& w) { return s.scalar_bool(n, line, w); });
    if (s.has("cp_scheme"))
      sp.cp_scheme = s.get_list<CpScheme>("cp_scheme", [&s](const YAML::Node& n, int line, const std::string& w) {
        return s.scalar_enum<CpScheme>(n, line, w, parse_cp_scheme, cp_scheme_names());
      });
    if (s.has("interleave")) sp.interleave = s.get_list<int64_t>("interleave", size);
    if (s.has("attention"))
      sp.attention = s.get_list<AttentionImpl>("attention", [&s](const YAML::Node& n, int line, const std::string& w) {
        return s.scalar_enum<AttentionImpl>(n, line, w, parse_attention, attention_names());
      });
    if (s.has("cp_comm"))
      sp.cp_comm = s.get_list<CpComm>("cp_comm", [&s](const YAML::Node& n, int line, const std::string& w) {
        return s.scalar_enum<CpComm>(n, line, w, parse_cp_comm, cp_comm_names());
      });
    if (s.has("cp_a2a_size")) {
      sp.cp_a2a_size = s.get_list<int64_t>("cp_a2a_size", [&s](const YAML::Node& n, int line, const std::string& w) {
        return s.scalar_count(n, line, w, kMaxGpus);
      });
    }
    if (s.has("dp_replicate")) {
      sp.dp_replicate = s.get_list<int64_t>("dp_replicate", [&s](const YAML::Node& n, int line, const std::string& w) {
        return s.scalar_count(n, line, w, kMaxGpus);
      });
    }
    // Each value once: a repeat searched every layout with it twice and ranked the copies apart.
    auto once = [&s](const char* key, const auto& values) {
      for (size_t i = 1; i < values.size(); ++i)
        for (size_t j = 0; j < i; ++j)
          if (values[i] == values[j])
            s.fail(key, fmt::format("item {} repeats item {} (counting from 0); list each value once", i, j));
    };
    once("micro_batch", sp.micro_batch);
    once("recompute", sp.recompute);
    once("zero_stage", sp.zero_stage);
    once("sequence_parallel", sp.sequence_parallel);
    once("cp_scheme", sp.cp_scheme);
    once("interleave", sp.interleave);
    once("attention", sp.attention);
    once("cp_comm", sp.cp_comm);
    once("cp_a2a_size", sp.cp_a2a_size);
    once("dp_replicate", sp.dp_replicate);
    if (s.has("max_tp")) sp.max_tp = s.get_count("max_tp", kMaxGpus);
    if (s.has("max_cp")) sp.max_cp = s.get_count("max_cp", kMaxGpus);
    if (s.has("max_pp")) sp.max_pp = s.get_count("max_pp", kMaxGpus);
  }

  if (r.has("published")) {
    MapReader p = r.nested("published", kPublishedKeys);
    Published pub;
    if (p.has("step_time_s")) pub.step_time_s = p.get_real("step_time_s", kStepTimeRange);
    if (p.has("tflops_per_device")) pub.tflops_per_device = p.get_real("tflops_per_device", kTflopsRange);
    if (p.has("mfu")) {
      pub.mfu = p.get_real("mfu", kFractionRange);
    }
    if (p.has("peak_memory_gib")) pub.peak_memory_gib = p.get_real("peak_memory_gib", kMemoryGibRange);
    if (p.has("peak_memory_allocated_gib"))
      pub.peak_memory_allocated_gib = p.get_real("peak_memory_allocated_gib", kMemoryGibRange);
    if (p.has("tokens_per_s_per_device"))
      pub.tokens_per_s_per_device = p.get_real("tokens_per_s_per_device", kTokensPerSecondRange);
    if (p.has("attention_flops")) {
      const std::string rule = p.get_string("attention_flops");
      if (rule == "full") {
        pub.attention_flops = AttentionFlopCount::full;
      } else if (rule != "causal") {
        p.fail("attention_flops", fmt::format("'{}' is not valid; must be one of: causal, full", rule));
      }
    }
    // Published figures are only useful with their provenance, and at least one figure.
    pub.source = p.get_string("source");
    if (!pub.has_metric())
      throw ConfigError(file, p.map_line(), r.field("published"),
                        "needs at least one of step_time_s, tflops_per_device, mfu, peak_memory_gib, "
                        "peak_memory_allocated_gib, tokens_per_s_per_device");
    e.published = pub;
  }
  return e;
}

ModelConfig load_model(const std::string& path) { return model_from_yaml(load_document(path, "model"), path, "model"); }

ClusterConfig load_cluster(const std::string& path) {
  return cluster_from_yaml(load_document(path, "cluster"), path, "cluster");
}

TrainingConfig load_training(const std::string& path) {
  return training_from_yaml(load_document(path, "training"), path, "training");
}

Experiment parse_experiment(const std::string& yaml_text, const std::string& file_label, const std::string& base_dir) {
  YAML::Node doc = parse_text(yaml_text, file_label);
  if (doc.IsNull()) throw ConfigError(file_label, 0, "", "file is empty; expected an experiment mapping");
  // A plan file carries its experiment under `experiment:`; its other keys are the planner's.
  const YAML::Node& cdoc = doc;  // const: operator[] on a non-const node would insert the key
  if (cdoc.IsMap() && cdoc["experiment"])
    return experiment_from_yaml(cdoc["experiment"], file_label, base_dir, "experiment");
  return experiment_from_yaml(doc, file_label, base_dir, "");
}

Experiment load_experiment(const std::string& path) { return parse_experiment(read_text(path), path, dir_of(path)); }

// ---------------------------------------------------------------------------------------------
// Writers

// Names are written double-quoted so that any text (e.g. "null", "yes", "1e3") reads back as
// the same text; numbers are written as the shortest decimal that reads back exactly.
void write_model(YAML::Emitter& out, const ModelConfig& m) {
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << m.name;
  out << YAML::Key << "layers" << YAML::Value << m.layers;
  out << YAML::Key << "hidden" << YAML::Value << m.hidden;
  out << YAML::Key << "heads" << YAML::Value << m.heads;
  out << YAML::Key << "kv_heads" << YAML::Value << m.kv_heads;
  out << YAML::Key << "head_dim" << YAML::Value << m.head_dim;
  out << YAML::Key << "ffn_hidden" << YAML::Value << m.ffn_hidden;
  out << YAML::Key << "gated_mlp" << YAML::Value << m.gated_mlp;
  out << YAML::Key << "vocab" << YAML::Value << m.vocab;
  out << YAML::Key << "tied_embeddings" << YAML::Value << m.tied_embeddings;
  emit_double(out, "dropout", m.dropout);
  out << YAML::Key << "rope_base" << YAML::Value << m.rope_base;
  if (!m.rope) out << YAML::Key << "position_embedding" << YAML::Value << "learned";
  out << YAML::EndMap;
}

void write_cluster(YAML::Emitter& out, const ClusterConfig& c) {
  // A link; the inter-node one with its switch groups where the cluster has them.
  auto link = [&out](const char* key, const LinkProfile& l, const SwitchGroups& groups = {}) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    emit_double(out, "bandwidth_gbps", l.bandwidth_bytes_per_s / units::gb_bytes);
    emit_double(out, "latency_us", l.latency_s / units::us_s);
    if (groups.nodes > 0) {
      out << YAML::Key << "group_nodes" << YAML::Value << groups.nodes;
      emit_double(out, "oversubscription", groups.oversubscription);
    }
    out << YAML::EndMap;
  };
  // `scaled`: the curve's max was divided back out of a training scale (below), which leaves an
  // error in the last bits (0.688 * 0.809 / 0.809 = 0.68799999999999997): 12 significant digits
  // write the kernel value the file held, so that writing what was read is a fixed point.
  auto curve = [&out](const char* key, const EfficiencyCurve& e, bool scaled) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (scaled)
      out << YAML::Key << "max" << YAML::Value << fmt::format("{:.12g}", e.max_efficiency);
    else
      emit_double(out, "max", e.max_efficiency);
    emit_double(out, "half_tflop", e.half_flops / units::tflop);
    if (e.half_k > 0) emit_double(out, "half_k", e.half_k);
    out << YAML::EndMap;
  };
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << c.name;
  out << YAML::Key << "peak_tflops" << YAML::Value << YAML::Flow << YAML::BeginMap;
  emit_double(out, "bf16", c.peak_flops_per_s_bf16 / units::tflop);
  emit_double(out, "fp16", c.peak_flops_per_s_fp16 / units::tflop);
  emit_double(out, "fp32", c.peak_flops_per_s_fp32 / units::tflop);
  if (c.peak_flops_per_s_fp8 > 0) emit_double(out, "fp8", c.peak_flops_per_s_fp8 / units::tflop);
  out << YAML::EndMap;
  emit_double(out, "memory_gib", c.memory_bytes / units::gib_bytes);
  emit_double(out, "memory_reserved_gib", c.memory_reserved_bytes / units::gib_bytes);
  emit_double(out, "memory_bandwidth_gbps", c.memory_bandwidth_bytes_per_s / units::gb_bytes);
  out << YAML::Key << "gpus_per_node" << YAML::Value << c.gpus_per_node;
  out << YAML::Key << "nodes" << YAML::Value << c.nodes;
  link("intra_node", c.intra_node);
  link("inter_node", c.inter_node, c.switch_groups);
  out << YAML::Key << "efficiency" << YAML::Value << YAML::BeginMap;
  // The kernel curves (effective / training scale) and, when not 1, the scales: reading the file
  // back rebuilds the same effective curves.
  ClusterConfig kernels = c;
  kernels.set_training_scale(1.0, 1.0);
  const bool mm_scaled = c.matmul_training_scale != 1.0, attn_scaled = c.attention_training_scale != 1.0;
  curve("matmul", kernels.matmul, mm_scaled);
  curve("attention", kernels.attention, attn_scaled);
  if (kernels.materialized_attention.max_efficiency > 0)
    curve("materialized_attention", kernels.materialized_attention, attn_scaled);
  if (kernels.matmul_backward.max_efficiency > 0) curve("matmul_backward", kernels.matmul_backward, mm_scaled);
  if (kernels.matmul_fp8.max_efficiency > 0) curve("matmul_fp8", kernels.matmul_fp8, mm_scaled);
  if (kernels.attention_backward.max_efficiency > 0) curve("attention_backward", kernels.attention_backward, attn_scaled);
  if (kernels.attention_flash_triton.max_efficiency > 0)
    curve("attention_flash_triton", kernels.attention_flash_triton, attn_scaled);
  if (kernels.attention_flash_fa2.max_efficiency > 0)
    curve("attention_flash_fa2", kernels.attention_flash_fa2, attn_scaled);
  if (c.matmul_training_scale != 1.0 || c.attention_training_scale != 1.0) {
    out << YAML::Key << "training_scale" << YAML::Value << YAML::Flow << YAML::BeginMap;
    emit_double(out, "matmul", c.matmul_training_scale);
    emit_double(out, "attention", c.attention_training_scale);
    out << YAML::EndMap;
  }
  emit_double(out, "memory_bandwidth", c.memory_bandwidth_efficiency);
  auto colls = [&out](const char* key, const CollectiveEfficiency& ce) {
    out << YAML::Key << key << YAML::Value << YAML::BeginMap;
    auto coll = [&out](const char* k, const CollectiveCurve& e) {
      out << YAML::Key << k << YAML::Value << YAML::Flow << YAML::BeginMap;
      emit_double(out, "max", e.max_efficiency);
      emit_double(out, "half_mib", e.half_bytes / units::mib_bytes);
      out << YAML::EndMap;
    };
    coll("all_reduce", ce.all_reduce);
    coll("reduce_scatter", ce.reduce_scatter);
    coll("all_gather", ce.all_gather);
    out << YAML::EndMap;
  };
  const CollectiveEfficiency& ce = c.collectives;
  if (!ce.all_reduce.is_ideal() || !ce.reduce_scatter.is_ideal() || !ce.all_gather.is_ideal())
    colls("collectives", ce);
  if (c.has_inter_node_collectives) colls("collectives_inter_node", c.inter_node_collectives);
  if (c.overlap_sm_share > 0) emit_double(out, "overlap_sm_share", c.overlap_sm_share);
  if (!c.masked_tiles.is_exact()) {
    out << YAML::Key << "masked_tiles" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "tile" << YAML::Value << c.masked_tiles.tile;
    emit_double(out, "forward", c.masked_tiles.forward);
    emit_double(out, "backward", c.masked_tiles.backward);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::EndMap;
}

void write_training(YAML::Emitter& out, const TrainingConfig& t) {
  out << YAML::BeginMap;
  out << YAML::Key << "seq_len" << YAML::Value << t.seq_len;
  out << YAML::Key << "global_batch" << YAML::Value << t.global_batch_sequences;
  out << YAML::Key << "dtype" << YAML::Value << to_string(t.dtype);
  out << YAML::Key << "optimizer" << YAML::Value << to_string(t.optimizer);
  out << YAML::Key << "causal" << YAML::Value << t.causal;
  if (t.fp32_grad_accumulation) out << YAML::Key << "grad_accumulation_dtype" << YAML::Value << "fp32";
  if (t.cross_entropy != CrossEntropy::fused) out << YAML::Key << "cross_entropy" << YAML::Value << to_string(t.cross_entropy);
  if (t.fsdp_per_parameter) out << YAML::Key << "fsdp" << YAML::Value << "per_parameter";
  if (t.param_gather_dtype) out << YAML::Key << "param_gather_dtype" << YAML::Value << to_string(*t.param_gather_dtype);
  if (t.grad_reduce_dtype) out << YAML::Key << "grad_reduce_dtype" << YAML::Value << to_string(*t.grad_reduce_dtype);
  if (t.pytorch_pp_schedule) out << YAML::Key << "pp_schedule" << YAML::Value << "pytorch";
  if (t.pp_scatter_gather) out << YAML::Key << "pp_p2p" << YAML::Value << "scatter_gather";
  if (t.tp_dtensor) out << YAML::Key << "tp_impl" << YAML::Value << "dtensor";
  if (t.recompute_early_stop) out << YAML::Key << "recompute_early_stop" << YAML::Value << true;
  if (t.grad_accumulation != (t.autocast ? GradAccumulation::inplace : GradAccumulation::fused))
    out << YAML::Key << "grad_accumulation" << YAML::Value << to_string(t.grad_accumulation);
  if (t.fp8) out << YAML::Key << "fp8" << YAML::Value << true;
  if (t.fp8 && t.fp8_torchao) out << YAML::Key << "fp8_impl" << YAML::Value << "torchao";
  if (t.fp8 && t.fp8_torchao && t.fp8_all_gather) out << YAML::Key << "fp8_all_gather" << YAML::Value << true;
  if (t.autocast) out << YAML::Key << "mixed_precision" << YAML::Value << "autocast";
  if (t.eager_elementwise) out << YAML::Key << "elementwise" << YAML::Value << "eager";
  if (t.norm != (t.eager_elementwise ? NormImpl::eager : NormImpl::fused))
    out << YAML::Key << "norm" << YAML::Value << to_string(t.norm);
  if (t.flash_kernel != FlashKernel::standard)
    out << YAML::Key << "flash_kernel" << YAML::Value << to_string(t.flash_kernel);
  if (t.separate_projections) out << YAML::Key << "projections" << YAML::Value << "separate";
  if (t.clip_grad != 1.0) emit_double(out, "clip_grad", t.clip_grad);
  if (t.documents) {
    const DocumentSpec& d = *t.documents;
    out << YAML::Key << "documents" << YAML::Value << YAML::BeginMap;
    if (d.kind == DocumentLengthKind::fixed) {
      out << YAML::Key << "lengths" << YAML::Value << YAML::Flow << d.lengths;
    } else {
      out << YAML::Key << "distribution" << YAML::Value << to_string(d.kind);
      emit_double(out, "mean_length", d.mean_length);
      if (d.kind == DocumentLengthKind::lognormal) emit_double(out, "sigma", d.sigma);
      out << YAML::Key << "seed" << YAML::Value << d.seed;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

namespace {
template <typename T, typename F>
void emit_list(YAML::Emitter& out, const char* key, const std::vector<T>& values, F to_text) {
  if (values.empty()) return;  // empty: planner default set, expressed by omitting the key
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& v : values) out << to_text(v);
  out << YAML::EndSeq;
}
}  // namespace

void write_experiment(YAML::Emitter& out, const Experiment& e) {
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << e.name;
  out << YAML::Key << "model" << YAML::Value;
  write_model(out, e.model);
  out << YAML::Key << "cluster" << YAML::Value;
  write_cluster(out, e.cluster);
  out << YAML::Key << "training" << YAML::Value;
  write_training(out, e.training);
  if (e.gpus) out << YAML::Key << "gpus" << YAML::Value << *e.gpus;
  if (e.mesh) {
    out << YAML::Key << "mesh" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "dp" << YAML::Value << e.mesh->dp << YAML::Key << "tp" << YAML::Value << e.mesh->tp;
    out << YAML::Key << "cp" << YAML::Value << e.mesh->cp << YAML::Key << "pp" << YAML::Value << e.mesh->pp;
    out << YAML::EndMap;
  }
  const ParallelOptions& o = e.options;
  out << YAML::Key << "options" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "micro_batch" << YAML::Value << o.micro_batch;
  out << YAML::Key << "recompute" << YAML::Value << to_string(o.recompute);
  out << YAML::Key << "zero_stage" << YAML::Value << o.zero_stage;
  out << YAML::Key << "sequence_parallel" << YAML::Value << o.sequence_parallel;
  out << YAML::Key << "cp_scheme" << YAML::Value << to_string(o.cp_scheme);
  out << YAML::Key << "interleave" << YAML::Value << o.interleave;
  out << YAML::Key << "attention" << YAML::Value << to_string(o.attention);
  out << YAML::Key << "cp_comm" << YAML::Value << to_string(o.cp_comm);
  out << YAML::Key << "tp_overlap" << YAML::Value << to_string(o.tp_overlap);
  if (o.cp_comm == CpComm::hybrid && o.cp_a2a_size > 0) out << YAML::Key << "cp_a2a_size" << YAML::Value << o.cp_a2a_size;
  if (o.pp_first_layers > 0) out << YAML::Key << "pp_first_layers" << YAML::Value << o.pp_first_layers;
  if (o.pp_last_layers > 0) out << YAML::Key << "pp_last_layers" << YAML::Value << o.pp_last_layers;
  if (o.pp_embedding_slot) out << YAML::Key << "pp_embedding_slot" << YAML::Value << true;
  if (o.pp_loss_slot) out << YAML::Key << "pp_loss_slot" << YAML::Value << true;
  if (o.overlap_param_gather) out << YAML::Key << "overlap_param_gather" << YAML::Value << true;
  if (o.dp_replicate > 1) out << YAML::Key << "dp_replicate" << YAML::Value << o.dp_replicate;
  out << YAML::EndMap;

  const SearchSpace& s = e.search;
  bool any_search = !s.micro_batch.empty() || !s.recompute.empty() || !s.zero_stage.empty() ||
                    !s.sequence_parallel.empty() || !s.cp_scheme.empty() || !s.interleave.empty() ||
                    !s.attention.empty() || !s.cp_comm.empty() || !s.cp_a2a_size.empty() || !s.dp_replicate.empty() || s.max_tp || s.max_cp || s.max_pp;
  if (any_search) {
    auto same = [](auto v) { return v; };
    auto name = [](auto v) { return std::string(to_string(v)); };
    out << YAML::Key << "search" << YAML::Value << YAML::BeginMap;
    emit_list(out, "micro_batch", s.micro_batch, same);
    emit_list(out, "recompute", s.recompute, name);
    emit_list(out, "zero_stage", s.zero_stage, same);
    emit_list(out, "sequence_parallel", s.sequence_parallel, [](bool b) { return b; });
    emit_list(out, "cp_scheme", s.cp_scheme, name);
    emit_list(out, "interleave", s.interleave, same);
    emit_list(out, "attention", s.attention, name);
    emit_list(out, "cp_comm", s.cp_comm, name);
    emit_list(out, "cp_a2a_size", s.cp_a2a_size, same);
    emit_list(out, "dp_replicate", s.dp_replicate, same);
    if (s.max_tp) out << YAML::Key << "max_tp" << YAML::Value << *s.max_tp;
    if (s.max_cp) out << YAML::Key << "max_cp" << YAML::Value << *s.max_cp;
    if (s.max_pp) out << YAML::Key << "max_pp" << YAML::Value << *s.max_pp;
    out << YAML::EndMap;
  }
  if (e.published) {
    const Published& p = *e.published;
    out << YAML::Key << "published" << YAML::Value << YAML::BeginMap;
    if (p.step_time_s) emit_double(out, "step_time_s", *p.step_time_s);
    if (p.tflops_per_device) emit_double(out, "tflops_per_device", *p.tflops_per_device);
    if (p.mfu) emit_double(out, "mfu", *p.mfu);
    if (p.peak_memory_gib) emit_double(out, "peak_memory_gib", *p.peak_memory_gib);
    if (p.peak_memory_allocated_gib) emit_double(out, "peak_memory_allocated_gib", *p.peak_memory_allocated_gib);
    if (p.tokens_per_s_per_device) emit_double(out, "tokens_per_s_per_device", *p.tokens_per_s_per_device);
    if (p.attention_flops == AttentionFlopCount::full) out << YAML::Key << "attention_flops" << YAML::Value << "full";
    out << YAML::Key << "source" << YAML::Value << YAML::DoubleQuoted << p.source;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

void write_plan_header(YAML::Emitter& out, const Experiment& e) {
  out << YAML::Key << "experiment" << YAML::Value;
  write_experiment(out, e);
}

std::string experiment_to_yaml(const Experiment& e) {
  YAML::Emitter out;
  write_experiment(out, e);
  if (!out.good()) throw Error(ErrorKind::runtime, "experiment_to_yaml: YAML emitter error: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

// ---------------------------------------------------------------------------------------------

std::string input_path_problem(const std::string& path, bool folder_ok) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    std::error_code lec;
    if (fs::is_symlink(fs::symlink_status(path, lec))) {
      const fs::path target = fs::read_symlink(path, lec);
      return fmt::format("is a symbolic link to '{}', which does not exist", target.string());
    }
    return folder_ok ? "no such file or folder" : "file not found";
  }
  if (ec == std::errc::too_many_symbolic_link_levels)
    return "is a symbolic link loop (too many levels of symbolic links); point it at a YAML file";
  if (ec) return "cannot be read: " + ec.message();
  if (fs::is_directory(st)) return folder_ok ? "" : "is a folder, expected a YAML file";
  // A device, pipe or socket would be read without end (/dev/zero) or block forever (a FIFO).
  if (!fs::is_regular_file(st)) return "is not a regular file (a device, pipe or socket)";
  // Every file ringplan reads is a few KB to a few MB; a larger one is a wrong path, and reading
  // it whole would take the machine's memory.
  constexpr std::uintmax_t kMaxInputBytes = std::uintmax_t{64} << 20;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > kMaxInputBytes)
    return fmt::format("is {} bytes, more than the 64 MiB any ringplan input can be", size);
  return "";
}

std::vector<std::string> find_experiments(const std::string& path_or_dir) {
  if (std::string why = input_path_problem(path_or_dir, true); !why.empty())
    throw ConfigError(path_or_dir, 0, "", why);
  std::error_code ec;
  if (!fs::is_directory(path_or_dir, ec)) return {path_or_dir};
  std::vector<std::string> files;
  // Error codes, not exceptions: a link loop or an unreadable entry below the folder is bad
  // input naming that entry (a folder link to an ancestor ends in ELOOP after ~40 levels).
  auto walk_error = [&](const std::string& where, const std::error_code& e) {
    return ConfigError(where, 0, "",
                       fmt::format("cannot walk the folder {}: {} (a symbolic link loop or an unreadable entry?)",
                                   path_or_dir, e.message()));
  };
  fs::recursive_directory_iterator it(path_or_dir, fs::directory_options::follow_directory_symlink, ec), end;
  if (ec) throw walk_error(path_or_dir, ec);
  for (; it != end; it.increment(ec)) {
    if (ec) throw walk_error(path_or_dir, ec);
    const fs::directory_entry& entry = *it;
    std::string ext = entry.path().extension().string();
    if (ext != ".yaml" && ext != ".yml") continue;
    std::error_code fec;
    if (!entry.is_regular_file(fec)) {
      if (fec && fec != std::errc::no_such_file_or_directory)
        throw ConfigError(entry.path().string(), 0, "", input_path_problem(entry.path().string()));
      continue;
    }
    files.push_back(entry.path().string());
  }
  if (ec) throw walk_error(path_or_dir, ec);
  if (files.empty()) throw ConfigError(path_or_dir, 0, "", "folder holds no .yaml or .yml files");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace ringplan
