// Plan file writing and reading (format: plan_file.hpp).
#include "planner/plan_file.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <iterator>

#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/units.hpp"

namespace ringplan::planner {
namespace {

int line_of(const YAML::Node& n) { return n.Mark().line >= 0 ? n.Mark().line + 1 : 0; }

template <typename T>
T read_scalar(const YAML::Node& map, const char* key, const std::string& file, const char* what_valid) {
  const std::string field = std::string("prediction.") + key;
  const YAML::Node n = map[key];
  if (!n) throw ConfigError(file, line_of(map), field, fmt::format("missing; expected {}", what_valid));
  // A quoted scalar ("12") is text, as everywhere in core's configs, never a number or flag.
  if (n.IsScalar() && n.Tag() == "!")
    throw ConfigError(file, line_of(n), field, fmt::format("expected {}, got the quoted text \"{}\"", what_valid, n.Scalar()));
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(file, line_of(n), field,
                      fmt::format("expected {}, got '{}'", what_valid, n.IsScalar() ? n.Scalar() : "a non-scalar"));
  }
}

// A recorded figure: finite and in [lo, hi] (the ranges hold every prediction sim::predict
// makes: its inputs are bounded by core's config limits).
double read_figure(const YAML::Node& map, const char* key, const std::string& file, const char* what, double lo,
                   double hi) {
  const double v = read_scalar<double>(map, key, file, what);
  if (!std::isfinite(v) || v < lo || v > hi)
    throw ConfigError(file, line_of(map[key]), std::string("prediction.") + key,
                      fmt::format("{} is not valid; expected {}, finite, in [{:g}, {:g}]", map[key].Scalar(), what, lo,
                                  hi));
  return v;
}

// A mapping read with operator[] would silently take one of two equal keys: refuse them.
void check_unique_keys(const YAML::Node& map, const std::string& file, const std::string& parent) {
  std::set<std::string> seen;
  for (const auto& kv : map) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
    if (!seen.insert(key).second)
      throw ConfigError(file, line_of(kv.first), parent.empty() ? key : parent + "." + key,
                        "appears twice; each key may appear once");
  }
}

}  // namespace

PlannedFigures planned_figures(const sim::Prediction& p) {
  return {p.step_time_s, p.tokens_per_s, p.tflops_per_device, p.mfu,
          p.peak_memory_bytes, p.capacity_bytes, p.micro_batches, p.fits};
}

std::string plan_file_yaml(const Experiment& e, const sim::Prediction& p) {
  Experiment planned = e;
  planned.mesh = p.mesh;
  planned.options = p.options;
  planned.gpus = p.mesh.world_size();  // a plan made with --gpus N runs on N, not the file's count
  YAML::Emitter out;
  out.SetDoublePrecision(17);  // round trip of the figures to the last bit
  out << YAML::Comment("ringplan plan file: `ringplan run` / `ringplan simulate` read it as an experiment");
  out << YAML::BeginMap;
  out << YAML::Key << "ringplan_plan" << YAML::Value << kPlanFileVersion;
  write_plan_header(out, planned);
  out << YAML::Key << "prediction" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "step_time_s" << YAML::Value << p.step_time_s;
  out << YAML::Key << "tokens_per_s" << YAML::Value << p.tokens_per_s;
  out << YAML::Key << "tflops_per_device" << YAML::Value << p.tflops_per_device;
  out << YAML::Key << "mfu" << YAML::Value << p.mfu;
  out << YAML::Key << "peak_memory_gib" << YAML::Value << p.peak_memory_bytes / units::gib_bytes;
  out << YAML::Key << "capacity_gib" << YAML::Value << p.capacity_bytes / units::gib_bytes;
  out << YAML::Key << "micro_batches" << YAML::Value << p.micro_batches;
  out << YAML::Key << "fits" << YAML::Value << p.fits;
  out << YAML::EndMap;
  out << YAML::EndMap;
  if (!out.good())
    throw Error(ErrorKind::runtime, fmt::format("cannot emit plan file YAML: {}", out.GetLastError()));
  // The end marker last: read_plan_file() refuses a copy that was cut short (core's check_not_cut).
  return std::string(out.c_str()) + "\n" + kPlanEndMarker + "\n";
}

void write_plan_file(const std::string& path, const Experiment& e, const sim::Prediction& p) {
  write_file_atomic(path, plan_file_yaml(e, p), "plan file");
}

PlanFile read_plan_file(const std::string& path) {
  if (const std::string why = input_path_problem(path); why == "file not found")
    throw ConfigError(path, 0, "", "plan file not found (write one with `ringplan plan EXPERIMENT.yaml -o PLAN.yaml`)");
  else if (!why.empty())
    throw ConfigError(path, 0, "", "plan file " + why);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, "", "cannot open the plan file for reading");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Before parsing: a cut file must be named as such, not by whatever its remains lack.
  check_not_cut(text, path);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& ex) {
    throw ConfigError(path, ex.mark.line + 1, "", fmt::format("not valid YAML: {}", ex.msg));
  }
  if (!root.IsMap())
    throw ConfigError(path, line_of(root), "", "a plan file is a mapping with ringplan_plan, experiment and prediction");
  check_unique_keys(root, path, "");
  const YAML::Node version = root["ringplan_plan"];
  if (!version)
    throw ConfigError(path, 1, "ringplan_plan",
                      fmt::format("missing: not a plan file (expected `ringplan_plan: {}` at the top)", kPlanFileVersion));
  int v = 0;
  try {
    v = version.as<int>();
  } catch (const YAML::Exception&) {
    v = -1;
  }
  if (v < 1 || v > kPlanFileVersion)
    throw ConfigError(path, line_of(version), "ringplan_plan",
                      fmt::format("unsupported plan file version '{}'; this ringplan reads version 1..{}",
                                  version.IsScalar() ? version.Scalar() : "?", kPlanFileVersion));
  if (!root["experiment"] || !root["experiment"].IsMap())
    throw ConfigError(path, line_of(root), "experiment",
                      "missing: a plan file embeds its experiment (model, cluster, training, mesh, options)");
  const YAML::Node pred = root["prediction"];
  if (!pred || !pred.IsMap())
    throw ConfigError(path, line_of(root), "prediction",
                      "missing: a plan file records its prediction (step_time_s, tokens_per_s, ...)");

  PlanFile plan;
  plan.path = path;
  plan.prediction_line = line_of(pred);
  plan.experiment = load_experiment(path);
  if (!plan.experiment.mesh)
    throw ConfigError(path, line_of(root["experiment"]), "experiment.mesh",
                      "missing: a plan fixes its mesh (dp, tp, cp, pp)");
  check_unique_keys(pred, path, "prediction");
  PlannedFigures& f = plan.predicted;
  f.step_time_s = read_figure(pred, "step_time_s", path, "a time in seconds", 1e-12, 1e12);
  if (!(f.step_time_s > 0))
    throw ConfigError(path, line_of(pred["step_time_s"]), "prediction.step_time_s",
                      fmt::format("must be > 0, got {}", f.step_time_s));
  f.tokens_per_s = read_figure(pred, "tokens_per_s", path, "a rate in tokens/s", 0, 1e18);
  f.tflops_per_device = read_figure(pred, "tflops_per_device", path, "a number of TFLOP/s", 0, 1e9);
  f.mfu = read_figure(pred, "mfu", path, "a fraction of peak", 0, 1e3);
  f.peak_memory_bytes = read_figure(pred, "peak_memory_gib", path, "a size in GiB", 0, 1e12) * units::gib_bytes;
  f.capacity_bytes = read_figure(pred, "capacity_gib", path, "a size in GiB", 0, 1e12) * units::gib_bytes;
  f.micro_batches = read_scalar<int64_t>(pred, "micro_batches", path, "an integer count");
  if (f.micro_batches < 1 || f.micro_batches > (int64_t{1} << 31))
    throw ConfigError(path, line_of(pred["micro_batches"]), "prediction.micro_batches",
                      fmt::format("{} is not valid; expected an integer count in [1, 2^31]", f.micro_batches));
  f.fits = read_scalar<bool>(pred, "fits", path, "true or false");
  return plan;
}

std::string prediction_mismatch(const PlanFile& plan) {
  const Experiment& e = plan.experiment;
  const Mesh& mesh = *e.mesh;
  if (const std::string why = sim::check_layout(e, mesh, e.options, mesh.world_size()); !why.empty())
    return fmt::format("its layout dp={} tp={} cp={} pp={} cannot be predicted: {}", mesh.dp, mesh.tp, mesh.cp,
                       mesh.pp, why);
  const PlannedFigures now = planned_figures(sim::predict(e, mesh, e.options));
  const PlannedFigures& was = plan.predicted;
  std::string out;
  auto add = [&out](const std::string& part) { out += (out.empty() ? "" : ", ") + part; };
  auto real = [&add](const char* name, double recorded, double predicted, double unit) {
    // Both are finite (read_figure, and predict() on bounded inputs).
    if (std::abs(recorded - predicted) > 1e-6 * std::max(std::abs(recorded), std::abs(predicted)))
      add(fmt::format("{} {:.6g} (its layout: {:.6g})", name, recorded / unit, predicted / unit));
  };
  real("step_time_s", was.step_time_s, now.step_time_s, 1.0);
  real("tokens_per_s", was.tokens_per_s, now.tokens_per_s, 1.0);
  real("tflops_per_device", was.tflops_per_device, now.tflops_per_device, 1.0);
  real("mfu", was.mfu, now.mfu, 1.0);
  real("peak_memory_gib", was.peak_memory_bytes, now.peak_memory_bytes, units::gib_bytes);
  real("capacity_gib", was.capacity_bytes, now.capacity_bytes, units::gib_bytes);
  if (was.micro_batches != now.micro_batches)
    add(fmt::format("micro_batches {} (its layout: {})", was.micro_batches, now.micro_batches));
  if (was.fits != now.fits) add(fmt::format("fits {} (its layout: {})", was.fits, now.fits));
  return out;
}

Experiment load_experiment_or_plan(const std::string& path) {
  // Checked before the scan below opens it: a FIFO would block it, a device never end it.
  if (const std::string why = input_path_problem(path); !why.empty()) throw ConfigError(path, 0, "", why);
  std::ifstream in(path, std::ios::binary);
  std::string line;
  // A plan file names its version at the top level (a line starting `ringplan_plan:`).
  while (in && std::getline(in, line))
    if (line.rfind("ringplan_plan:", 0) == 0) return read_plan_file(path).experiment;
  return load_experiment(path);
}

}  // namespace ringplan::planner
