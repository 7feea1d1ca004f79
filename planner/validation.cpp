// Predicted vs published figures for validation cases (see validation.hpp).
#include "planner/validation.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/units.hpp"
#include "planner/report.hpp"
#include "sim/fit.hpp"

namespace ringplan::planner {
namespace {

// A file found while walking a folder is a case only if its top level has `published:`
// (directly, or inside an `experiment:` mapping as in plan files).
bool has_published_block(const std::string& path) {
  try {
    const YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return false;
    if (root["published"]) return true;
    const YAML::Node exp = root["experiment"];
    return exp && exp.IsMap() && exp["published"];
  } catch (const YAML::Exception&) {
    return true;  // let load_experiment() report the YAML error with its position
  }
}

// Is the file one readable, non-empty YAML document? Decides whether a load error refuses the
// case (the YAML is fine, the experiment in it is not) or fails the command (nothing can be
// said of a file that is not YAML; it may not even be a case).
bool is_one_yaml_document(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(in);
    return docs.size() == 1 && !docs.front().IsNull();
  } catch (const YAML::Exception&) {
    return false;
  }
}

// The reason of a refusal: the ConfigError's message without its leading "file: " when the
// file is the case itself (the refusal already names it); "line N: " stays. An error in
// another file (a model or cluster the case names) keeps its full message.
std::string refusal_reason(const ConfigError& err, const std::string& case_path) {
  const std::string what = err.what();
  std::string prefix = err.file();
  if (err.line() > 0) prefix.append(":").append(std::to_string(err.line()));
  prefix += ": ";
  if (err.file() != case_path || what.rfind(prefix, 0) != 0) return what;
  const std::string rest = what.substr(prefix.size());
  return err.line() > 0 ? fmt::format("line {}: {}", err.line(), rest) : rest;
}

std::string case_name(const Experiment& e) { return e.name.empty() ? e.path : e.name; }

}  // namespace

std::vector<std::string> collect_cases(const std::vector<std::string>& paths, std::vector<std::string>* skipped) {
  if (paths.empty()) throw bad_input("validate: give at least one case file or folder");
  std::vector<std::string> cases;
  for (const auto& p : paths) {
    if (const std::string why = input_path_problem(p, true); why == "no such file or folder")
      throw bad_input(fmt::format("validate: '{}' does not exist (give case files or folders of them)", p));
    else if (!why.empty())
      throw bad_input(fmt::format("validate: '{}' {} (give case files or folders of them)", p, why));
    std::error_code ec;
    if (!std::filesystem::is_directory(p, ec)) {
      cases.push_back(p);  // named explicitly: a case; validate_paths() refuses it, with why, if it is not
      continue;
    }
    for (const auto& f : find_experiments(p)) {
      if (has_published_block(f)) {
        cases.push_back(f);
      } else if (skipped) {
        skipped->push_back(f);
      }
    }
  }
  if (cases.empty())
    throw bad_input(fmt::format("validate: no case found in {} (a case is an experiment YAML with a fixed "
                                "mesh and a `published:` block)",
                                fmt::join(paths, ", ")));
  return cases;
}

std::vector<ValidationRow> validate_case(const Experiment& e) {
  const std::string name = case_name(e);
  // A missing block is named at the line of the mapping that lacks it (the experiment's).
  auto missing = [&e](const std::string& key, const std::string& what) {
    const auto it = e.sources.find("");
    return it == e.sources.end() ? ConfigError(e.path, 0, key, what)
                                 : ConfigError(it->second.file, it->second.line,
                                               it->second.field.empty() ? key : it->second.field + "." + key, what);
  };
  if (!e.mesh) throw missing("mesh", "a validation case needs a fixed mesh (dp, tp, cp, pp)");
  if (!e.published)
    throw missing("published",
                  "a validation case needs a `published:` block with step_time_s, tflops_per_device, mfu "
                  "or peak_memory_gib");
  const Published& pub = *e.published;
  if (!pub.step_time_s && !pub.tflops_per_device && !pub.mfu && !pub.peak_memory_gib && !pub.tokens_per_s_per_device)
    throw experiment_field_error(e, "published",
                                 "no metric given; expected at least one of step_time_s, tflops_per_device, mfu, "
                                 "peak_memory_gib, tokens_per_s_per_device");
  const Mesh& mesh = *e.mesh;
  const std::string why = sim::check_layout(e, mesh, e.options, mesh.world_size());
  if (!why.empty()) {
    // Named at the option the reason is about when the file gives it, else at the mesh (the
    // loader has already checked the mesh against the model and training on its own).
    std::string key = "mesh";
    for (const char* option : {"interleave", "micro_batch", "zero_stage"})
      if (why.find(option) != std::string::npos && e.sources.count(std::string("options.") + option))
        key = std::string("options.") + option;
    throw experiment_field_error(e, key, fmt::format("layout {} cannot run: {}", mesh_text(mesh), why));
  }
  const sim::Prediction p = sim::predict(e, mesh, e.options);

  // One comparison rule for validate and fit (sim/fit.hpp): tflops_per_device and mfu in the
  // source's FLOP count (published.attention_flops), tokens_per_s_per_device per device.
  const sim::Comparisons cmp = sim::compare_published(e, p);
  std::vector<ValidationRow> rows;
  for (int i = 0; i < cmp.count; ++i) {
    const sim::MetricComparison& c = cmp.items[static_cast<size_t>(i)];
    if (!(c.published > 0))
      throw experiment_field_error(e, std::string("published.") + c.metric, fmt::format("must be > 0, got {}", c.published));
    rows.push_back(ValidationRow{name, c.metric, c.predicted, c.published, c.error_pct(), e.path, mesh, pub.source});
  }
  return rows;
}

void summarize(ValidationReport& r) {
  double sum = 0, mx = 0;
  for (const auto& x : r.rows) {
    sum += std::abs(x.error_pct);
    mx = std::max(mx, std::abs(x.error_pct));
  }
  r.mean_abs_error_pct = r.rows.empty() ? 0.0 : sum / static_cast<double>(r.rows.size());
  r.max_abs_error_pct = mx;
}

ValidationReport validate_paths(const std::vector<std::string>& paths) {
  ValidationReport r;
  for (const auto& f : collect_cases(paths, &r.skipped)) {
    // Only ConfigError (bad input about this case) refuses it; anything else is a failure of
    // the command and propagates.
    Experiment e;
    try {
      e = load_experiment(f);
    } catch (const ConfigError& err) {
      if (!is_one_yaml_document(f)) throw;  // unreadable or not YAML: bad input, exit 2
      r.refused.push_back({f, "", refusal_reason(err, f)});
      continue;
    }
    try {
      auto rows = validate_case(e);
      r.rows.insert(r.rows.end(), rows.begin(), rows.end());
      ++r.cases;
    } catch (const ConfigError& err) {
      r.refused.push_back({f, case_name(e), refusal_reason(err, f)});
    }
  }
  if (r.cases == 0) {
    std::string list;
    for (const auto& x : r.refused) list += fmt::format("\n  {}: {}", x.path, x.reason);
    throw bad_input(fmt::format("validate: no case could be evaluated ({} refused):{}", r.refused.size(), list));
  }
  summarize(r);
  return r;
}

std::string validation_text(const ValidationReport& r) {
  size_t name_w = 4, mesh_w = 4, metric_w = 6;
  for (const auto& x : r.rows) {
    name_w = std::max(name_w, x.name.size());
    mesh_w = std::max(mesh_w, mesh_text(x.mesh).size());
    metric_w = std::max(metric_w, x.metric.size());
  }
  std::string s = fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>8}\n", "case", name_w, "mesh", mesh_w,
                              "metric", metric_w, "predicted", "published", "error");
  s += std::string(name_w + mesh_w + metric_w + 44, '-') + "\n";
  for (const auto& x : r.rows)
    s += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12.4g}  {:>12.4g}  {:>+7.2f}%\n", x.name, name_w, mesh_text(x.mesh),
                     mesh_w, x.metric, metric_w, x.predicted, x.published, x.error_pct);
  s += fmt::format("\n{} cases evaluated, {} refused; {} comparisons: mean |error| {:.2f}%, max |error| {:.2f}%\n",
                   r.cases, r.refused.size(), r.rows.size(), r.mean_abs_error_pct, r.max_abs_error_pct);
  if (!r.refused.empty()) {
    s += fmt::format("\nrefused (not in the statistics):\n");
    for (const auto& x : r.refused) s += fmt::format("  {}: {}\n", x.path, x.reason);
  }
  if (!r.skipped.empty()) s += fmt::format("skipped {} files without a `published:` block\n", r.skipped.size());
  return s;
}

nlohmann::json validation_json(const ValidationReport& r) {
  nlohmann::json cases = nlohmann::json::array();
  for (const auto& x : r.rows)
    cases.push_back({{"name", x.name},
                     {"metric", x.metric},
                     {"predicted", x.predicted},
                     {"published", x.published},
                     {"error_pct", x.error_pct},
                     {"path", x.path},
                     {"mesh", {{"dp", x.mesh.dp}, {"tp", x.mesh.tp}, {"cp", x.mesh.cp}, {"pp", x.mesh.pp}}},
                     {"source", x.source}});
  nlohmann::json refused = nlohmann::json::array();
  for (const auto& x : r.refused) refused.push_back({{"path", x.path}, {"name", x.name}, {"reason", x.reason}});
  return {{"cases", std::move(cases)},
          {"refused", std::move(refused)},
          {"mean_abs_error_pct", r.mean_abs_error_pct},
          {"max_abs_error_pct", r.max_abs_error_pct},
          {"case_count", r.cases},
          {"refused_count", static_cast<int64_t>(r.refused.size())},
          {"skipped", r.skipped}};
}

}  // namespace ringplan::planner
