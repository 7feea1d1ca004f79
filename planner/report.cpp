// Text and JSON reports of predictions and plans (see report.hpp for the JSON layout).
#include "planner/report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/format.hpp"
#include "core/units.hpp"

namespace ringplan::planner {
namespace {

using format::format_bytes;
using format::format_count;
using format::format_error_pct;
using format::format_pct;
using format::format_time_s;
using format::format_tokens_per_s;

// Prediction::tflops_per_device is in TFLOP/s; the format takes FLOP/s.
std::string flops_text(double tflops) { return format::format_flops_per_s(tflops * units::tflop); }


std::string pad_right(const std::string& s, size_t w) { return s.size() >= w ? s : s + std::string(w - s.size(), ' '); }
std::string pad_left(const std::string& s, size_t w) { return s.size() >= w ? s : std::string(w - s.size(), ' ') + s; }

// Minimal column-aligned table: first column(s) left-aligned as told, the rest right-aligned.
std::string render_table(const std::vector<std::string>& header, const std::vector<bool>& left,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t c = 0; c < header.size(); ++c) {
      const std::string& cell = c < cells.size() ? cells[c] : std::string();
      if (c) s += "  ";
      s += left[c] ? pad_right(cell, width[c]) : pad_left(cell, width[c]);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(header);
  size_t total = 0;
  for (size_t c = 0; c < width.size(); ++c) total += width[c] + (c ? 2 : 0);
  out += std::string(total, '-') + "\n";
  for (const auto& row : rows) out += line(row);
  return out;
}

}  // namespace

std::string term_label(std::string_view name) {
  for (std::string_view suffix : {std::string_view("_bytes"), std::string_view("_s")}) {
    if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
      name.remove_suffix(suffix.size());
      break;
    }
  }
  std::string out(name);
  std::replace(out.begin(), out.end(), '_', ' ');
  return out;
}

nlohmann::json bytes_json(double bytes) {
  if (std::isfinite(bytes) && std::fabs(bytes) >= 9223372036854775808.0) return std::round(bytes);
  return format::whole_bytes(bytes);
}

nlohmann::json mesh_json(const Mesh& m) {
  return {{"dp", m.dp}, {"tp", m.tp}, {"cp", m.cp}, {"pp", m.pp}};
}

nlohmann::json options_json(const ParallelOptions& o) {
  return {{"micro_batch", o.micro_batch},
          {"recompute", to_string(o.recompute)},
          {"zero_stage", o.zero_stage},
          {"sequence_parallel", o.sequence_parallel},
          {"cp_scheme", to_string(o.cp_scheme)},
          {"interleave", o.interleave},
          {"attention", to_string(o.attention)},
          {"cp_comm", to_string(o.cp_comm)},
          {"cp_a2a_size", o.cp_comm == CpComm::hybrid ? o.cp_a2a_size : 1},
          {"tp_overlap", to_string(o.tp_overlap)},
          {"pp_first_layers", o.pp_first_layers},
          {"pp_last_layers", o.pp_last_layers},
          {"pp_embedding_slot", o.pp_embedding_slot},
          {"pp_loss_slot", o.pp_loss_slot},
          {"overlap_param_gather", o.overlap_param_gather},
          {"dp_replicate", o.dp_replicate}};
}

nlohmann::json prediction_json(const sim::Prediction& p) {
  nlohmann::json memory = nlohmann::json::object();
  // Byte counts are whole numbers in JSON (the terms are doubles in the cost model).
  for (const auto& t : sim::memory_terms(p.memory)) memory[std::string(t.name)] = bytes_json(t.value);
  memory["peak_bytes"] = bytes_json(p.memory.peak_bytes);
  nlohmann::json time = nlohmann::json::object();
  for (const auto& t : sim::time_terms(p.time)) time[std::string(t.name)] = t.value;
  time["step_time_s"] = p.time.step_time_s;
  return {{"step_time_s", p.step_time_s},
          {"tokens_per_s", p.tokens_per_s},
          {"tflops_per_device", p.tflops_per_device},
          {"mfu", p.mfu},
          {"peak_memory_bytes", bytes_json(p.peak_memory_bytes)},
          {"capacity_bytes", bytes_json(p.capacity_bytes)},
          {"memory", std::move(memory)},
          {"time", std::move(time)},
          {"mesh", mesh_json(p.mesh)},
          {"options", options_json(p.options)},
          {"micro_batches", p.micro_batches},
          {"model_flops_per_step", p.model_flops_per_step},
          {"fits", p.fits}};
}

nlohmann::json plan_json(const PlanResult& r, const std::string& fixed_layout) {
  nlohmann::json candidates = nlohmann::json::array();
  const std::vector<int> groups = ranking_groups(r.candidates);
  int64_t top_group = 0;
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    nlohmann::json c = prediction_json(r.candidates[i]);
    c["group"] = groups[i];
    if (groups[i] == 1) ++top_group;
    candidates.push_back(std::move(c));
  }
  nlohmann::json rejected = nlohmann::json::array();
  for (const auto& x : r.rejected)
    rejected.push_back({{"reason", x.reason}, {"count", x.count}, {"example", x.example}});
  nlohmann::json ranking = {{"band", kRankingBand},
                            {"band_reason", kRankingBandReason},
                            {"chosen_rank", r.chosen_rank},
                            {"reason", r.choice_reason},
                            {"cp_comm_reason", r.cp_comm_reason},
                            {"top_group_size", top_group}};
  const nlohmann::json chosen_json = r.chosen              ? prediction_json(*r.chosen)
                                     : r.candidates.empty() ? nlohmann::json(nullptr)
                                                            : prediction_json(r.candidates.front());
  nlohmann::json cp_alts = nlohmann::json::array();
  for (const auto& a : r.cp_comm_alternatives) {
    nlohmann::json j = {{"cp_comm", to_string(a.comm)}, {"cp_scheme", to_string(a.scheme)}};
    if (a.comm == CpComm::hybrid) j["cp_a2a_size"] = a.a2a_size;
    if (!a.refused.empty()) {
      j["refused"] = a.refused;
    } else {
      j["step_time_s"] = a.step_time_s;
      j["cp_exposed_s"] = a.cp_exposed_s;
      j["cp_buffer_bytes"] = static_cast<int64_t>(a.cp_buffer_bytes);
      j["peak_memory_bytes"] = static_cast<int64_t>(a.peak_memory_bytes);
      j["fits"] = a.fits;
    }
    cp_alts.push_back(std::move(j));
  }
  return {{"schema_version", kJsonSchemaVersion},
          {"cp_comm_alternatives", cp_alts},
          // schema_version 2: `best` is the recommended layout (= `chosen`, what `plan -o` writes);
          // in version 1 it was the fastest, which is now `fastest`.
          {"best", chosen_json},
          {"chosen", chosen_json},
          {"fastest", r.candidates.empty() ? nlohmann::json(nullptr) : prediction_json(r.candidates.front())},
          {"ranking", std::move(ranking)},
          {"fixed_layout", fixed_layout.empty() ? nlohmann::json(nullptr) : nlohmann::json(fixed_layout)},
          {"candidates", std::move(candidates)},
          {"rejected", std::move(rejected)},
          {"evaluated", r.evaluated},
          {"enumerated", r.enumerated},
          {"fitting", r.fitting},
          {"gpus", r.gpus}};
}

std::string mesh_text(const Mesh& m) {
  return fmt::format("dp={} tp={} cp={} pp={}", m.dp, m.tp, m.cp, m.pp);
}

std::string options_text(const Mesh& m, const ParallelOptions& o) {
  std::string s = fmt::format("mb={} rc={} zero={}", o.micro_batch, to_string(o.recompute), o.zero_stage);
  // Hybrid sharding: the ZeRO state's replica count (shard groups of DP x CP / R ranks).
  if (o.dp_replicate > 1) s += fmt::format(" hsdp={}", o.dp_replicate);
  if (m.tp > 1 && o.sequence_parallel) s += " sp";
  // The TP overlap is named only when it is not Megatron-LM's default (and TP > 1).
  if (m.tp > 1 && o.tp_overlap != TpOverlap::backward) s += fmt::format(" tp-overlap={}", to_string(o.tp_overlap));
  // Named where it acts: ZeRO 1/2 gathering over more than one rank.
  if (o.overlap_param_gather && (o.zero_stage == 1 || o.zero_stage == 2) && m.dp * m.cp > 1) s += " opg";
  // The CP method is named only where it acts (CP > 1): "zigzag ring", "zigzag allgather".
  if (m.cp > 1) s += fmt::format(" {} {}", to_string(o.cp_scheme), to_string(o.cp_comm));
  if (m.cp > 1 && o.cp_comm == CpComm::hybrid) s += fmt::format(" a2a={}", o.cp_a2a_size);
  if (m.pp > 1) s += fmt::format(" v={}", o.interleave);
  if (m.pp > 1 && o.uneven_pipeline()) s += " split=" + pipeline_split_text(o);
  s += fmt::format(" {}", to_string(o.attention));
  return s;
}

std::string training_header_notes(const TrainingConfig& t, bool flash, bool full_recompute) {
  std::string s;
  if (flash && t.flash_kernel != FlashKernel::standard) s += std::string(", ") + flash_kernel_label(t.flash_kernel);
  if (full_recompute && t.recompute_early_stop) s += ", full recompute stops before the MLP down projection";
  return s;
}

std::string memory_text(double used_bytes, double capacity_bytes) {
  return format_bytes(used_bytes) + " / " + format_bytes(capacity_bytes);
}

std::string top_table(const PlanResult& r) {
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> shown;  // candidate index of each row
  const std::vector<int> groups = ranking_groups(r.candidates);
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    const auto& p = r.candidates[i];
    // A zigzag/striped twin within the band of a row already shown is noted on that row.
    bool collapsed = false;
    for (size_t k = 0; k < shown.size() && !collapsed; ++k) {
      const auto& q = r.candidates[shown[k]];
      if (scheme_twins(q, p) && within_band(p.step_time_s, q.step_time_s)) {
        std::string& note = rows[k].back();
        note += fmt::format("{}twin: {} {}", note.empty() ? "" : "; ", to_string(p.options.cp_scheme),
                            format_error_pct(q.step_time_s > 0 ? 100.0 * (p.step_time_s / q.step_time_s - 1.0) : 0.0));
        collapsed = true;
      }
    }
    if (collapsed) continue;
    const bool chosen = r.chosen_rank == static_cast<int64_t>(i) + 1;
    shown.push_back(i);
    rows.push_back({std::to_string(i + 1), std::to_string(groups[i]), std::to_string(p.mesh.dp),
                    std::to_string(p.mesh.tp), std::to_string(p.mesh.cp), std::to_string(p.mesh.pp),
                    options_text(p.mesh, p.options), format_time_s(p.step_time_s), format_tokens_per_s(p.tokens_per_s),
                    flops_text(p.tflops_per_device), format_pct(100.0 * p.mfu),
                    memory_text(p.peak_memory_bytes, p.capacity_bytes), chosen ? "chosen" : ""});
  }
  if (r.chosen && r.chosen_rank == 0) {
    // The choice ranks below the top K (the band holds more than K layouts): listed last.
    const auto& p = *r.chosen;
    rows.push_back({fmt::format(">{}", r.candidates.size()), "1", std::to_string(p.mesh.dp),
                    std::to_string(p.mesh.tp), std::to_string(p.mesh.cp), std::to_string(p.mesh.pp),
                    options_text(p.mesh, p.options), format_time_s(p.step_time_s), format_tokens_per_s(p.tokens_per_s),
                    flops_text(p.tflops_per_device), format_pct(100.0 * p.mfu),
                    memory_text(p.peak_memory_bytes, p.capacity_bytes), "chosen (below the top K)"});
  }
  return render_table(
      {"rank", "group", "dp", "tp", "cp", "pp", "options", "step time", "throughput", "compute/device", "MFU", "memory",
       "note"},
      {false, false, false, false, false, false, true, false, false, false, false, false, true}, rows);
}

std::string prediction_text(const Experiment& e, const sim::Prediction& p) {
  std::string s;
  s += fmt::format("layout: {}  {}\n", mesh_text(p.mesh), options_text(p.mesh, p.options));
  s += fmt::format(
      "step time {}  |  {}  |  {} per device  |  MFU {}  |  memory {}{}\n",
      format_time_s(p.step_time_s), format_tokens_per_s(p.tokens_per_s), flops_text(p.tflops_per_device),
      format_pct(100.0 * p.mfu),
      memory_text(p.peak_memory_bytes, p.capacity_bytes), p.fits ? "" : "  (DOES NOT FIT)");
  s += fmt::format("micro-batches per step per replica: {}\n", format_count(p.micro_batches));
  if (!e.cluster.switch_groups.is_flat()) {
    // Which groups' inter-node traffic the oversubscribed uplinks slow (sim::uplink_slowdowns).
    const sim::UplinkSlowdowns u = sim::uplink_slowdowns(e, p.mesh, p.options);
    std::string slowed;
    for (const auto& [name, f] : {std::pair{"TP", u.tp}, {"CP", u.cp}, {"DP/ZeRO", u.shard}, {"DP replicas", u.replicas},
                                  {"PP sends", u.pp}, {"tied embedding", u.tied_pair}})
      if (f > 1.0) slowed += fmt::format("{}{} x{:.3g}", slowed.empty() ? "" : ", ", name, f);
    s += fmt::format("network: switch groups of {} nodes, {:.3g}:1 out of a group; inter-node bandwidth divided for {}\n",
                     e.cluster.switch_groups.nodes, e.cluster.switch_groups.oversubscription,
                     slowed.empty() ? "no group (every group's flows fit the uplinks)" : slowed);
  }
  s += "\n";

  std::vector<std::vector<std::string>> mem_rows;
  for (const auto& t : sim::memory_terms(p.memory)) {
    if (t.name == "peak_bytes") continue;  // shown once, below the terms
    mem_rows.push_back({term_label(t.name), format_bytes(t.value),
                        p.peak_memory_bytes > 0 ? format_pct(100.0 * t.value / p.peak_memory_bytes) : "-"});
  }
  mem_rows.push_back({"peak (schedule, not sum of maxima)", format_bytes(p.memory.peak_bytes), format_pct(100.0)});
  mem_rows.push_back({"capacity", format_bytes(p.capacity_bytes), ""});
  s += "memory per device\n";
  s += render_table({"term", "size", "of peak"}, {true, false, false}, mem_rows);

  std::vector<std::vector<std::string>> time_rows;
  for (const auto& t : sim::time_terms(p.time)) {
    if (t.name == "step_time_s") continue;  // shown once, below the terms
    time_rows.push_back({term_label(t.name), format_time_s(t.value),
                         p.step_time_s > 0 ? format_pct(100.0 * t.value / p.step_time_s) : "-"});
  }
  time_rows.push_back({"step time", format_time_s(p.step_time_s), format_pct(100.0)});
  s += "\ntime per step (slowest rank)\n";
  s += render_table({"term", "time", "of step"}, {true, false, false}, time_rows);
  (void)e;
  return s;
}

std::string rejection_text(const PlanResult& r) {
  if (r.rejected.empty()) return "rejected: none\n";
  std::vector<std::vector<std::string>> rows;
  // The first message of each category, in full (the category itself has its numbers as '#').
  for (const auto& x : r.rejected)
    rows.push_back({format_count(x.count), x.count > 1 ? x.example + " (first of these)" : x.example});
  return render_table({"count", "reason"}, {false, true}, rows);
}

std::string plan_text(const Experiment& e, const PlanResult& r) {
  std::string s = fmt::format(
      "{}: {} on {} x {} ({}), seq {} tokens, global batch {} sequences{}\n"
      "enumerated {} layouts, evaluated {}, {} fit in memory\n\n",
      e.name.empty() ? e.path : e.name, e.model.name, format_count(r.gpus), e.cluster.name,
      format_bytes(e.cluster.memory_bytes), format_count(e.training.seq_len),
      format_count(e.training.global_batch_sequences),
      // The search spans attention and recompute: name what the training config sets.
      training_header_notes(e.training, true, true),
      format_count(r.enumerated),
      format_count(r.evaluated),
      format_count(r.fitting));
  if (r.fixed_mesh || e.fixed_options.any()) {
    const std::string fixed = fixed_layout_text(e);
    if (!fixed.empty()) s += fixed + "\n\n";
  }
  if (!r.candidates.empty()) {
    s += fmt::format("top {} layouts (ranked by step time, ties by memory)\n",
                     format_count(static_cast<int64_t>(r.candidates.size())));
    s += top_table(r);
    s += fmt::format(
        "\nranking band {}: layouts whose step times differ by less than that share a group; {}. Within the "
        "first group the simpler layout is chosen (lower ZeRO stage, no interleave, fewer mesh dimensions > 1, "
        "ring before all-gather, one copy of the ZeRO shards before hybrid sharding; zigzag/striped twins shown once)\n",
        format_pct(100.0 * kRankingBand), kRankingBandReason);
    s += fmt::format("chosen: {}\n", r.choice_reason);
    if (!r.cp_comm_reason.empty()) s += fmt::format("CP method: {}\n", r.cp_comm_reason);
    s += "\nchosen plan\n";
    s += prediction_text(e, r.chosen ? *r.chosen : r.candidates.front());
  } else {
    s += describe_no_fit(e, r) + "\n";
  }
  s += "\nrejected layouts\n";
  s += rejection_text(r);
  return s;
}

}  // namespace ringplan::planner
