// `ringplan report`: builds the report data from the planner's result, the cost model's
// per-rank ring schedule and an optional `ringplan run` result, and renders one self-contained
// HTML page (report/report_page.inc holds the page and its drawing script).
#include "report/report_html.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/units.hpp"
#include "planner/report.hpp"
#include "sim/formulas.hpp"
#include "sim/ring_event_sim.hpp"
#include "sim/ring_model.hpp"

namespace ringplan::report {

namespace {

const char* const kPage =
#include "report/report_page.inc"
    ;

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// JSON placed inside <script type="application/json">: a '<' could close the element
// ("</script>" in a model name), so every '<' -- which JSON only has inside strings -- is
// written as the equivalent escape \u003c. Paths (the --run file) are bytes, not necessarily
// UTF-8: an invalid byte becomes U+FFFD instead of aborting the dump.
std::string script_safe_json(const nlohmann::json& j) {
  const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '<') {
      out += "\\u003c";
    } else {
      out += c;
    }
  }
  return out;
}

// Replaces every @NAME@ marker of the page template in one pass over the template, so that
// substituted text (a model called "@DATA@") is never scanned for markers again.
std::string substitute(const std::string& page, const std::vector<std::pair<std::string, std::string>>& values) {
  std::string out;
  out.reserve(page.size() + 4096);
  size_t pos = 0;
  while (pos < page.size()) {
    const size_t at = page.find('@', pos);
    if (at == std::string::npos) break;
    bool replaced = false;
    for (const auto& [marker, value] : values) {
      if (page.compare(at, marker.size(), marker) == 0) {
        out.append(page, pos, at - pos);
        out += value;
        pos = at + marker.size();
        replaced = true;
        break;
      }
    }
    if (!replaced) {
      out.append(page, pos, at + 1 - pos);
      pos = at + 1;
    }
  }
  out.append(page, pos, std::string::npos);
  return out;
}

std::string layout_label(const sim::Prediction& p) {
  return planner::mesh_text(p.mesh) + " " + planner::options_text(p.mesh, p.options);
}

// A layout's terms as plain arrays, in the order of the page's `time_term_names` and
// `memory_term_names` (sim::time_terms, sim::memory_terms without the peak): seconds, bytes.
nlohmann::json time_values(const sim::Prediction& p) {
  nlohmann::json v = nlohmann::json::array();
  for (const auto& t : sim::time_terms(p.time)) v.push_back(t.value);
  return v;
}
nlohmann::json memory_values(const sim::Prediction& p) {
  nlohmann::json v = nlohmann::json::array();
  for (const auto& t : sim::memory_terms(p.memory))
    if (t.name != "peak_bytes") v.push_back(planner::bytes_json(t.value));
  return v;
}

nlohmann::json candidate_json(const sim::Prediction& p, int64_t rank, bool chosen) {
  return {{"rank", rank},
          {"label", layout_label(p)},
          {"step_time_s", p.step_time_s},
          {"peak_memory_bytes", planner::bytes_json(p.peak_memory_bytes)},
          {"tokens_per_s", p.tokens_per_s},
          {"mfu", p.mfu},
          {"fits", p.fits},
          {"chosen", chosen},
          {"dp", p.mesh.dp},
          {"tp", p.mesh.tp},
          {"cp", p.mesh.cp},
          {"pp", p.mesh.pp},
          {"zero_stage", p.options.zero_stage},
          {"time", time_values(p)},
          {"memory_bytes", memory_values(p)}};
}

nlohmann::json sweep_point(int64_t x, const sim::Prediction& p) {
  return {{"x", x},
          {"label", layout_label(p)},
          {"peak_memory_bytes", planner::bytes_json(p.peak_memory_bytes)},
          {"step_time_s", p.step_time_s},
          {"fits", p.fits},
          {"memory_bytes", memory_values(p)}};
}

std::optional<double> optional_number(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) {
    throw bad_input(fmt::format("{}: field '{}' must be a number (seconds or bytes), got {}", where, key, it->dump()));
  }
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) {
    throw bad_input(fmt::format("{}: field '{}' must be a finite number >= 0, got {}", where, key, it->dump()));
  }
  return v;
}

// A byte count of the run: a number as above, and below 2^63 so that the page's data can
// carry it as a whole number (format::whole_bytes); a larger one is a broken input, not a run.
std::optional<double> optional_bytes(const nlohmann::json& obj, const char* key, const std::string& where) {
  const std::optional<double> v = optional_number(obj, key, where);
  if (v && *v >= 9223372036854775808.0) {
    throw bad_input(fmt::format("{}: field '{}' must be a byte count below 2^63, got {}", where, key,
                                obj.find(key)->dump()));
  }
  return v;
}

std::string candidate_table(const ReportData& d) {
  std::string t =
      "<table><tr><th>#</th><th class=\"l\">mesh</th><th class=\"l\">options</th><th>step time</th>"
      "<th>throughput</th><th>compute/device</th><th>MFU</th><th>peak memory</th></tr>\n";
  const size_t rows = std::min<size_t>(d.candidates.size(), 10);
  for (size_t i = 0; i < rows; ++i) {
    const auto& p = d.candidates[i];
    t += fmt::format(
        "<tr{}><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td></tr>\n",
        i == d.chosen ? " class=\"chosen\"" : "", i + 1, html_escape(planner::mesh_text(p.mesh)),
        html_escape(planner::options_text(p.mesh, p.options)), format::format_time_s(p.step_time_s),
        format::format_tokens_per_s(p.tokens_per_s), format::format_flops_per_s(p.tflops_per_device * units::tflop),
        format::format_pct(100.0 * p.mfu), html_escape(planner::memory_text(p.peak_memory_bytes, p.capacity_bytes)));
  }
  t += "</table>\n";
  if (d.candidates.size() > rows) {
    t += fmt::format("<p class=\"note\">{} more candidates in the chart.</p>\n",
                     format::format_count(static_cast<int64_t>(d.candidates.size() - rows)));
  }
  std::string rejected;
  for (const auto& r : d.rejected) {
    rejected += fmt::format("<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>\n", format::format_count(r.count),
                            html_escape(r.reason), html_escape(r.example));
  }
  if (!rejected.empty()) {
    t += "<details><summary>Rejected layouts</summary><table><tr><th>count</th><th class=\"l\">reason</th>"
         "<th class=\"l\">example</th></tr>\n" +
         rejected + "</table></details>\n";
  }
  return t;
}

}  // namespace

RingTimeline ring_timeline(const Experiment& e, const sim::Prediction& p) {
  RingTimeline t;
  t.scope = "one layer, forward, one micro-batch";
  const int64_t P = p.mesh.cp;
  if (P <= 1) return t;
  // All-gather and all-to-all CP have no ring steps to draw (collectives around one kernel
  // call), and hybrid's all-to-alls do not fit a per-step timeline: no timeline, and the scope
  // says why (simulate --trace replays every method).
  if (p.options.cp_comm == CpComm::allgather) {
    t.scope = "cp_comm allgather: no ring steps (one all-gather of K,V, one kernel call per layer)";
    return t;
  }
  if (p.options.cp_comm == CpComm::alltoall) {
    t.scope = "cp_comm alltoall: no ring steps (all-to-alls of Q,K,V and O around one kernel call per layer)";
    return t;
  }
  if (p.options.cp_comm == CpComm::hybrid) {
    t.scope = "cp_comm hybrid: not drawn here (all-to-alls inside groups of " + std::to_string(p.options.cp_a2a_size) +
              " CP ranks around a ring across the groups; this timeline draws ring steps only; "
              "`ringplan simulate --trace` writes the replay of all of it)";
    return t;
  }
  // The attention layer one CP group of this plan runs (the shapes `ringplan run` uses).
  const sim::RingAttentionShape shape = sim::ring_shape_for(e, p.mesh, p.options);
  const sim::RingSimulation sim_run = sim::simulate_ring(shape, e.cluster, /*record_events=*/true);

  for (int64_t r = 0; r < P; ++r) {
    RingRank rank;
    rank.rank = r;
    rank.steps.resize(static_cast<size_t>(P));
    for (int64_t k = 0; k < P; ++k) rank.steps[static_cast<size_t>(k)].source_rank = ((r - k) % P + P) % P;
    t.ranks.push_back(std::move(rank));
  }
  // Events are recorded only when they take time: a skipped block (no visible pair) has no
  // kernel. A step starts when the previous one is done and its block has arrived -- the end of
  // the send by rank r-1 during step k-1 -- as in the event simulator.
  const auto idx = [](int64_t i) { return static_cast<size_t>(i); };
  std::vector<std::vector<double>> arrival(idx(P), std::vector<double>(idx(P), 0.0));
  for (const auto& ev : sim_run.events) {
    if (ev.phase != sim::RingPhase::forward || ev.rank < 0 || ev.rank >= P || ev.step < 0 || ev.step >= P) continue;
    RingStep& s = t.ranks[idx(ev.rank)].steps[idx(ev.step)];
    const double d = ev.end_s - ev.start_s;
    if (ev.activity == sim::RingActivity::send_kv) {
      s.comm_s = d;
      if (ev.step + 1 < P) arrival[idx((ev.rank + 1) % P)][idx(ev.step + 1)] = ev.end_s;
    } else {  // kernel or merge of this step
      s.compute_s += d;
    }
  }
  for (int64_t r = 0; r < P; ++r) {
    auto& steps = t.ranks[idx(r)].steps;
    for (int64_t k = 1; k < P; ++k) {
      RingStep& prev = steps[idx(k - 1)];
      const double prev_end = prev.start_s + prev.compute_s;
      steps[idx(k)].start_s = std::max(prev_end, arrival[idx(r)][idx(k)]);
      prev.exposed_s = steps[idx(k)].start_s - prev_end;
    }
  }
  return t;
}

MemorySweeps memory_sweeps(const Experiment& e, const sim::Prediction& chosen) {
  MemorySweeps out;
  const Mesh& m = chosen.mesh;
  const int64_t gpus = m.world_size();
  // CP: the chosen TP, PP and options, every CP size that divides the GPUs left for DP x CP.
  const int64_t dp_cp = m.dp * m.cp;
  for (int64_t c = 1; c <= dp_cp; ++c) {
    if (dp_cp % c != 0) continue;
    const Mesh mesh{dp_cp / c, m.tp, c, m.pp};
    if (!sim::check_layout(e, mesh, chosen.options, gpus).empty()) continue;
    out.by_cp.push_back({c, sim::predict(e, mesh, chosen.options)});
  }
  // Sequence length: the chosen layout at 1/8 .. 8 times the experiment's, where it is valid.
  for (const int shift : {-3, -2, -1, 0, 1, 2, 3}) {
    Experiment x = e;
    const int64_t L = e.training.seq_len;
    if (shift < 0 && L % (int64_t{1} << -shift) != 0) continue;
    x.training.seq_len = shift < 0 ? L >> -shift : L << shift;
    if (x.training.seq_len < 1) continue;
    if (!sim::check_layout(x, m, chosen.options, gpus).empty()) continue;
    out.by_seq_len.push_back({x.training.seq_len, sim::predict(x, m, chosen.options)});
  }
  return out;
}

RunComparison parse_run_result(const nlohmann::json& run, const std::string& source) {
  if (!run.is_object()) {
    throw bad_input(fmt::format("{}: not the output of `ringplan run --format json`: expected a JSON object, got {}",
                                source, run.type_name()));
  }
  RunComparison out;
  out.source = source;
  // `run --scope step` writes {step_time: {...}, terms: [...]}: the step, then its terms, as rows.
  const bool step_scope = !run.contains("rows") && !run.contains("phases") && run.contains("terms");
  nlohmann::json step_rows;
  if (step_scope) {
    const auto& terms = run.at("terms");
    if (!terms.is_array()) throw bad_input(fmt::format("{}: 'terms' must be a list, got {}", source, terms.type_name()));
    const auto st = run.find("step_time");
    if (st == run.end() || !st->is_object())
      throw bad_input(fmt::format("{}: missing object 'step_time' beside 'terms' (`ringplan run --scope step "
                                  "--format json` writes both)",
                                  source));
    nlohmann::json step = *st;
    step["name"] = "step";
    step_rows = nlohmann::json::array({step});
    for (const auto& t : terms) step_rows.push_back(t);
  }
  const bool has_rows = run.contains("rows");
  const auto phases = step_scope ? run.find("terms") : has_rows ? run.find("rows") : run.find("phases");
  if (phases == run.end()) {
    throw bad_input(fmt::format(
        "{}: missing field 'rows' (the predicted/measured rows of `ringplan run --format json`; a 'phases' list, "
        "or the 'step_time' and 'terms' of `run --scope step`, are accepted too)",
        source));
  }
  const char* field = step_scope ? "terms" : has_rows ? "rows" : "phases";
  // `ringplan run` rows: measured_median_s (and min/max); plain phases: measured_s.
  auto add_phase = [&](const std::string& name, const nlohmann::json& obj, const std::string& where) {
    if (!obj.is_object()) {
      throw bad_input(fmt::format("{}: must be an object with predicted_s/measured_s, got {}", where, obj.dump()));
    }
    PhaseComparison ph;
    ph.phase = name;
    ph.predicted_s = optional_number(obj, "predicted_s", where);
    ph.measured_s = optional_number(obj, "measured_median_s", where);
    if (!ph.measured_s) ph.measured_s = optional_number(obj, "measured_s", where);
    ph.measured_min_s = optional_number(obj, "measured_min_s", where);
    ph.measured_max_s = optional_number(obj, "measured_max_s", where);
    if (!ph.predicted_s && !ph.measured_s) {
      throw bad_input(fmt::format("{}: '{}' has neither predicted_s nor measured_median_s/measured_s", where, name));
    }
    out.phases.push_back(std::move(ph));
  };
  const nlohmann::json& list = step_scope ? step_rows : *phases;
  if (list.is_array()) {
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& ph = list[i];
      // Step scope: row 0 is step_time, row i the terms' [i - 1].
      const std::string where = !step_scope ? fmt::format("{}: {}[{}]", source, field, i)
                                : i == 0    ? fmt::format("{}: step_time", source)
                                            : fmt::format("{}: terms[{}]", source, i - 1);
      const auto name = ph.is_object() ? (ph.contains("phase") ? ph.find("phase") : ph.find("name")) : ph.end();
      if (!ph.is_object() || name == ph.end() || !name->is_string()) {
        throw bad_input(fmt::format("{}: must be an object with a string 'name' (or 'phase'), got {}", where, ph.dump()));
      }
      add_phase(name->get<std::string>(), ph, where);
    }
  } else if (list.is_object()) {
    for (const auto& [name, ph] : phases->items()) add_phase(name, ph, fmt::format("{}: {}.{}", source, field, name));
  } else {
    throw bad_input(fmt::format("{}: '{}' must be a list or an object, got {}", source, field, phases->type_name()));
  }
  if (out.phases.empty()) throw bad_input(fmt::format("{}: '{}' is empty", source, field));

  // The timeline: the parts that follow one another in a run, each predicted and measured.
  // Step scope: its terms (they add up to the step); attention scope: per phase the slowest
  // rank's compute, then the exposed communication (they add up to the phase time).
  auto find_phase = [&out](const std::string& name) -> const PhaseComparison* {
    for (const auto& ph : out.phases)
      if (ph.phase == name) return &ph;
    return nullptr;
  };
  if (step_scope) {
    out.timeline.assign(out.phases.begin() + 1, out.phases.end());
  } else {
    for (const char* name : {"forward compute (slowest rank)", "forward exposed comm", "backward compute (slowest rank)",
                             "backward exposed comm"})
      if (const PhaseComparison* ph = find_phase(name)) out.timeline.push_back(*ph);
  }

  // Memory: pair measured_<x>_bytes with predicted_<x>_bytes, in the order first seen.
  if (const auto mem = run.find("memory"); mem != run.end()) {
    if (!mem->is_object()) throw bad_input(fmt::format("{}: 'memory' must be an object, got {}", source, mem->type_name()));
    auto entry = [&out](const std::string& name) -> MemoryComparison& {
      for (auto& m : out.memory) {
        if (m.name == name) return m;
      }
      out.memory.push_back({name, std::nullopt, std::nullopt});
      return out.memory.back();
    };
    // `run --scope step`: memory.terms [{name, measured_bytes, predicted_bytes}].
    if (const auto terms = mem->find("terms"); terms != mem->end() && terms->is_array()) {
      for (size_t i = 0; i < terms->size(); ++i) {
        const auto& t = (*terms)[i];
        const std::string where = fmt::format("{}: memory.terms[{}]", source, i);
        if (!t.is_object() || !t.contains("name") || !t["name"].is_string())
          throw bad_input(fmt::format("{}: must be an object with a string 'name', got {}", where, t.dump()));
        MemoryComparison& m = entry(t["name"].get<std::string>());
        m.measured_bytes = optional_bytes(t, "measured_bytes", where);
        m.predicted_bytes = optional_bytes(t, "predicted_bytes", where);
      }
    }
    for (const auto& [key, value] : mem->items()) {
      const bool measured = key.rfind("measured_", 0) == 0, predicted = key.rfind("predicted_", 0) == 0;
      if ((!measured && !predicted) || key.size() < 7 || key.compare(key.size() - 6, 6, "_bytes") != 0) continue;
      const size_t prefix = measured ? 9 : 10;
      if (key.size() <= prefix + 6) continue;
      const std::string name = key.substr(prefix, key.size() - prefix - 6);
      const auto v = optional_bytes(*mem, key.c_str(), source + ": memory");
      if (!v) continue;
      (measured ? entry(name).measured_bytes : entry(name).predicted_bytes) = v;
    }
  }

  if (const auto it = run.find("validates"); it != run.end() && it->is_string()) out.description = it->get<std::string>();
  std::vector<std::string> parts;
  if (const auto it = run.find("cp"); it != run.end() && it->is_number_integer()) {
    parts.push_back(fmt::format("{} ranks", it->get<int64_t>()));
  } else if (const auto r = run.find("ranks"); r != run.end() && r->is_number_integer()) {
    parts.push_back(fmt::format("{} ranks", r->get<int64_t>()));
  }
  if (const auto it = run.find("transport"); it != run.end() && it->is_string()) parts.push_back(it->get<std::string>());
  if (const auto it = run.find("iterations"); it != run.end() && it->is_number_integer()) {
    parts.push_back(fmt::format("{} iterations", it->get<int64_t>()));
  }
  if (const auto it = run.find("steps"); step_scope && it != run.end() && it->is_number_integer()) {
    parts.push_back(fmt::format("{} steps", it->get<int64_t>()));
  }
  if (const auto it = run.find("profile"); it != run.end() && it->is_string()) {
    parts.push_back("predicted on " + it->get<std::string>());
  }
  // The layout the run executed (`run --scope step` writes it): shown, and compared with the
  // report's chosen layout by the caller.
  if (const auto it = run.find("mesh"); it != run.end() && it->is_object()) {
    Mesh m;
    bool ok = true;
    for (const auto& [key, dst] : {std::pair<const char*, int64_t*>{"dp", &m.dp}, {"tp", &m.tp}, {"cp", &m.cp}, {"pp", &m.pp}}) {
      const auto v = it->find(key);
      if (v == it->end() || !v->is_number_integer() || v->get<int64_t>() < 1) {
        ok = false;
        break;
      }
      *dst = v->get<int64_t>();
    }
    if (!ok) throw bad_input(fmt::format("{}: 'mesh' must hold positive integers dp, tp, cp and pp, got {}", source, it->dump()));
    out.mesh = m;
    parts.push_back(fmt::format("mesh dp={} tp={} cp={} pp={}", m.dp, m.tp, m.cp, m.pp));
  }
  out.summary = fmt::format("{}", fmt::join(parts, ", "));
  return out;
}

RunComparison load_run_result(const std::string& path) {
  if (const std::string why = input_path_problem(path); !why.empty())
    throw bad_input(fmt::format("{}: the run result {} (expected the JSON of `ringplan run --format json`)", path, why));
  std::ifstream in(path);
  if (!in) throw bad_input(fmt::format("{}: cannot open the run result (expected the JSON of `ringplan run --format json`)", path));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw bad_input(fmt::format("{}: not valid JSON (byte {}): {}", path, e.byte, e.what()));
  }
  return parse_run_result(j, path);
}

ReportData build_report(const Experiment& e, const planner::PlanResult& r) {
  if (r.candidates.empty()) throw no_fit(planner::describe_no_fit(e, r));
  ReportData d;
  d.experiment = e;
  d.candidates = r.candidates;
  d.closest_out_of_memory = r.closest_out_of_memory;
  // The planner's choice (ranking band, planner.hpp); listed at its rank if below the top K.
  d.chosen = 0;
  if (r.chosen_rank > 0) {
    d.chosen = static_cast<size_t>(r.chosen_rank - 1);
  } else if (r.chosen) {
    auto it = d.candidates.insert(
        std::upper_bound(d.candidates.begin(), d.candidates.end(), *r.chosen, planner::ranks_before), *r.chosen);
    d.chosen = static_cast<size_t>(it - d.candidates.begin());
  }
  d.enumerated = r.enumerated;
  d.evaluated = r.evaluated;
  d.fitting = r.fitting;
  d.rejected = r.rejected;
  d.ring = ring_timeline(e, d.candidates[d.chosen]);
  return d;
}

nlohmann::json report_json(const ReportData& d) {
  if (d.candidates.empty()) throw bad_input("report: no candidate layout to report");
  if (d.chosen >= d.candidates.size()) {
    throw bad_input(fmt::format("report: chosen index {} out of range (0..{})", d.chosen, d.candidates.size() - 1));
  }
  const sim::Prediction& c = d.candidates[d.chosen];
  nlohmann::json j;
  j["experiment"] = {{"name", d.experiment.name},  {"model", d.experiment.model.name},
                     {"cluster", d.experiment.cluster.name}, {"gpus", c.mesh.world_size()},
                     {"seq_len", d.experiment.training.seq_len},
                     {"global_batch_sequences", d.experiment.training.global_batch_sequences}};
  j["schema_version"] = planner::kJsonSchemaVersion;
  j["capacity_bytes"] = planner::bytes_json(c.capacity_bytes);
  j["chosen"] = d.chosen;
  j["candidates"] = nlohmann::json::array();
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    j["candidates"].push_back(candidate_json(d.candidates[i], static_cast<int64_t>(i + 1), i == d.chosen));
  }
  j["closest_out_of_memory"] =
      d.closest_out_of_memory ? candidate_json(*d.closest_out_of_memory, 0, false) : nlohmann::json(nullptr);
  j["time_term_names"] = nlohmann::json::array();
  for (const auto& t : sim::time_terms(c.time)) j["time_term_names"].push_back(std::string(t.name));
  j["memory_term_names"] = nlohmann::json::array();
  for (const auto& t : sim::memory_terms(c.memory))
    if (t.name != "peak_bytes") j["memory_term_names"].push_back(std::string(t.name));
  {
    const MemorySweeps sweeps = memory_sweeps(d.experiment, c);
    nlohmann::json by_cp = nlohmann::json::array(), by_seq = nlohmann::json::array();
    for (const auto& [x, p] : sweeps.by_cp) by_cp.push_back(sweep_point(x, p));
    for (const auto& [x, p] : sweeps.by_seq_len) by_seq.push_back(sweep_point(x, p));
    j["memory_vs_cp"] = std::move(by_cp);
    j["memory_vs_seq_len"] = std::move(by_seq);
  }
  j["memory_terms"] = nlohmann::json::array();
  for (const auto& t : sim::memory_terms(c.memory)) {
    // The peak is drawn as the total, not as a term beside the ones it is made of.
    if (t.name == "peak_bytes") continue;
    j["memory_terms"].push_back({{"name", std::string(t.name)}, {"value_bytes", planner::bytes_json(t.value)}});
  }
  j["peak_memory_bytes"] = planner::bytes_json(c.peak_memory_bytes);
  j["time_terms"] = nlohmann::json::array();
  for (const auto& t : sim::time_terms(c.time)) {
    j["time_terms"].push_back({{"name", std::string(t.name)}, {"value", t.value}});
  }
  j["step_time_s"] = c.step_time_s;
  nlohmann::json ring = {{"scope", d.ring.scope}, {"ranks", nlohmann::json::array()}};
  for (const auto& rank : d.ring.ranks) {
    nlohmann::json steps = nlohmann::json::array();
    for (const auto& s : rank.steps) {
      steps.push_back({{"source_rank", s.source_rank},
                       {"start_s", s.start_s},
                       {"compute_s", s.compute_s},
                       {"comm_s", s.comm_s},
                       {"exposed_s", s.exposed_s}});
    }
    ring["ranks"].push_back({{"rank", rank.rank}, {"steps", std::move(steps)}});
  }
  j["ring"] = std::move(ring);
  if (d.run) {
    auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    auto bytes = [](const std::optional<double>& b) {
      return b ? nlohmann::json(format::whole_bytes(*b)) : nlohmann::json(nullptr);
    };
    nlohmann::json phases = nlohmann::json::array();
    for (const auto& ph : d.run->phases) {
      phases.push_back({{"phase", ph.phase},
                        {"predicted_s", opt(ph.predicted_s)},
                        {"measured_s", opt(ph.measured_s)},
                        {"measured_min_s", opt(ph.measured_min_s)},
                        {"measured_max_s", opt(ph.measured_max_s)}});
    }
    nlohmann::json memory = nlohmann::json::array();
    for (const auto& m : d.run->memory) {
      memory.push_back(
          {{"name", m.name}, {"predicted_bytes", bytes(m.predicted_bytes)}, {"measured_bytes", bytes(m.measured_bytes)}});
    }
    nlohmann::json timeline = nlohmann::json::array();
    for (const auto& ph : d.run->timeline)
      timeline.push_back({{"name", ph.phase}, {"predicted_s", opt(ph.predicted_s)}, {"measured_s", opt(ph.measured_s)}});
    j["run"] = {{"source", d.run->source},
                {"description", d.run->description},
                {"summary", d.run->summary},
                {"phases", std::move(phases)},
                {"timeline", std::move(timeline)},
                {"memory", std::move(memory)}};
  } else {
    j["run"] = nullptr;
  }
  return j;
}

std::string render_html(const ReportData& d) {
  const nlohmann::json data = report_json(d);  // validates d
  const Experiment& e = d.experiment;
  const sim::Prediction& c = d.candidates[d.chosen];
  const std::string title = fmt::format("ringplan report: {}", e.name.empty() ? e.model.name : e.name);
  const std::string subtitle = fmt::format(
      "{} on {} GPUs of {} ({} each), sequence {} tokens, global batch {} sequences, {}. "
      "Planner: {} layouts enumerated, {} evaluated, {} fit in memory; chosen: {}.",
      e.model.name, format::format_count(c.mesh.world_size()), e.cluster.name, format::format_bytes(c.capacity_bytes),
      format::format_count(e.training.seq_len), format::format_count(e.training.global_batch_sequences),
      to_string(e.training.dtype), format::format_count(d.enumerated), format::format_count(d.evaluated),
      format::format_count(d.fitting), layout_label(c));
  return substitute(kPage, {{"@TITLE@", html_escape(title)},
                            {"@SUBTITLE@", html_escape(subtitle)},
                            {"@CANDIDATE_TABLE@", candidate_table(d)},
                            {"@FORMAT_JS@", format::format_script()},
                            {"@DATA@", script_safe_json(data)}});
}

}  // namespace ringplan::report
