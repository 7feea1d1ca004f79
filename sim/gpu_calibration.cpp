// GPU profile from kernel measurements (see gpu_calibration.hpp).
#include "sim/gpu_calibration.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"

namespace ringplan::sim {

namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw bad_input(fmt::format("{}: cannot open (a JSON file written by bench/gpu/*.py --json)", path));
  try {
    return json::parse(in);
  } catch (const json::exception& ex) {
    throw bad_input(fmt::format("{}: not valid JSON: {}", path, ex.what()));
  }
}

double positive(const json& rec, const char* key, const std::string& where) {
  if (!rec.contains(key) || !rec[key].is_number())
    throw bad_input(fmt::format("{}: missing or non-numeric '{}'", where, key));
  const double v = rec[key].get<double>();
  if (!(v > 0) || !std::isfinite(v)) throw bad_input(fmt::format("{}: '{}' must be finite and > 0, got {}", where, key, v));
  return v;
}

std::string text(const json& rec, const char* key, const std::string& where) {
  if (!rec.contains(key) || !rec[key].is_string()) throw bad_input(fmt::format("{}: missing or non-text '{}'", where, key));
  return rec[key].get<std::string>();
}

}  // namespace

namespace {

// gemm_bench.py's object `g` (label names it) and the attention results of `s` (null: none).
GpuBenchMeasurements from_json(const json& g, const std::string& glabel, const json* s, const std::string& slabel) {
  GpuBenchMeasurements m;
  if (!g.is_object() || !g.contains("gemms") || !g["gemms"].is_array() || g["gemms"].empty())
    throw bad_input(fmt::format("{}: no 'gemms' array (is this gemm_bench.py's --json output?)", glabel));
  m.device = g.contains("device") && g["device"].is_string() ? g["device"].get<std::string>() : "";
  m.source = glabel;
  for (size_t i = 0; i < g["gemms"].size(); ++i) {
    const json& r = g["gemms"][i];
    const std::string where = fmt::format("{}: gemms[{}]", glabel, i);
    const double flops = positive(r, "flops", where), ms = positive(r, "ms", where);
    const std::string dtype = text(r, "dtype", where), pass = text(r, "pass_", where);
    // The reduction length, where the bench recorded it (the K-ramp is fitted only with it).
    const double k = r.contains("k") ? positive(r, "k", where) : 0.0;
    const RatePoint p{flops, flops / (ms * 1e-3), k};
    if (dtype == "bf16" && pass == "fwd") {
      m.gemm_bf16_fwd.push_back(p);
    } else if (dtype == "bf16" && (pass == "bwd_dx" || pass == "bwd_dw")) {
      m.gemm_bf16_bwd.push_back(p);
    } else if (dtype == "fp8_e4m3") {
      m.gemm_fp8.push_back(p);
    } else {
      throw bad_input(fmt::format("{}: dtype '{}' pass '{}' unknown (valid: bf16 fwd|bwd_dx|bwd_dw, fp8_e4m3)", where,
                                  dtype, pass));
    }
  }
  if (g.contains("hbm_copy_gbps")) m.hbm_copy_bytes_per_s = positive(g, "hbm_copy_gbps", glabel) * 1e9;
  if (s != nullptr) {
    if (!s->is_object() || !s->contains("results") || !(*s)["results"].is_array() || (*s)["results"].empty())
      throw bad_input(fmt::format("{}: no 'results' array (is this sdpa_bench.py's --json output?)", slabel));
    if (slabel != glabel) m.source += ", " + slabel;
    for (size_t i = 0; i < (*s)["results"].size(); ++i) {
      const json& r = (*s)["results"][i];
      const std::string where = fmt::format("{}: results[{}]", slabel, i);
      // sdpa_bench.py's FLOP model: forward 4*b*h*n*n*d (x0.5 causal), backward 2.5x forward.
      const double fwd_ms = positive(r, "fwd_ms", where), bwd_ms = positive(r, "bwd_ms", where);
      const double fwd_flops = positive(r, "fwd_tflops", where) * 1e12 * fwd_ms * 1e-3;
      m.attention_fwd.push_back({fwd_flops, fwd_flops / (fwd_ms * 1e-3)});
      m.attention_bwd.push_back({fwd_flops, 2.5 * fwd_flops / (bwd_ms * 1e-3)});
    }
  }
  return m;
}

json parse_text(const std::string& text, const std::string& label) {
  try {
    return json::parse(text);
  } catch (const json::exception& ex) {
    throw bad_input(fmt::format("{}: not valid JSON: {}", label, ex.what()));
  }
}

}  // namespace

GpuBenchMeasurements read_gpu_bench(const std::string& gemm_json, const std::string& sdpa_json) {
  const json g = read_json(gemm_json);
  if (sdpa_json.empty()) return from_json(g, gemm_json, nullptr, "");
  const json s = read_json(sdpa_json);
  return from_json(g, gemm_json, &s, sdpa_json);
}

GpuBenchMeasurements parse_gpu_bench(const std::string& gemm_text, const std::string& sdpa_text,
                                     const std::string& label) {
  const json g = parse_text(gemm_text, label);
  if (!sdpa_text.empty()) {
    const json s = parse_text(sdpa_text, label);
    return from_json(g, label, &s, label);
  }
  const bool has_results = g.is_object() && g.contains("results") && g["results"].is_array() && !g["results"].empty();
  return from_json(g, label, has_results ? &g : nullptr, label);
}

GpuCalibration calibrate_gpu_profile(const ClusterConfig& base, const GpuBenchMeasurements& m) {
  GpuCalibration cal;
  cal.cluster = base;
  // A calibrated profile holds the kernels as measured: a base's training scale would apply to
  // curves it did not measure and not to those it did, so it is dropped (back to the base's
  // kernel curves, scales 1).
  cal.cluster.set_training_scale(1.0, 1.0);
  const double bf16 = base.peak_flops_per_s_bf16;
  auto fit = [&cal](const char* key, const std::vector<RatePoint>& pts, double peak, EfficiencyCurve& slot) {
    if (pts.empty()) return;
    slot = fit_efficiency_curve(pts, peak);
    cal.curves.push_back({key, slot, curve_fit_error(slot, peak, pts), {}});
  };
  // GEMM curves: the K-ramp where it does better held out (fit_gemm_efficiency_curve).
  auto fit_gemm = [&cal](const char* key, const std::vector<RatePoint>& pts, double peak, EfficiencyCurve& slot) {
    if (pts.empty()) return;
    const GemmCurveFit g = fit_gemm_efficiency_curve(pts, peak);
    slot = g.curve;
    cal.curves.push_back({key, slot, curve_fit_error(slot, peak, pts), g});
  };
  fit_gemm("matmul", m.gemm_bf16_fwd, bf16, cal.cluster.matmul);
  fit_gemm("matmul_backward", m.gemm_bf16_bwd, bf16, cal.cluster.matmul_backward);
  if (!m.gemm_fp8.empty()) {
    if (base.peak_flops_per_s_fp8 <= 0)
      throw bad_input(fmt::format("the measurements hold FP8 GEMMs but profile '{}' has no peak_tflops.fp8 to take "
                                  "their fraction against; add the datasheet's dense FP8 peak",
                                  base.name));
    fit_gemm("matmul_fp8", m.gemm_fp8, base.peak_flops_per_s_fp8, cal.cluster.matmul_fp8);
  }
  fit("attention", m.attention_fwd, bf16, cal.cluster.attention);
  fit("attention_backward", m.attention_bwd, bf16, cal.cluster.attention_backward);
  if (m.hbm_copy_bytes_per_s > 0 && base.memory_bandwidth_bytes_per_s > 0) {
    cal.memory_bandwidth_efficiency = std::min(1.0, m.hbm_copy_bytes_per_s / base.memory_bandwidth_bytes_per_s);
    cal.cluster.memory_bandwidth_efficiency = cal.memory_bandwidth_efficiency;
  }
  return cal;
}

std::string gpu_profile_text(const GpuCalibration& cal, const GpuBenchMeasurements& m, const ClusterConfig& base,
                             const std::string& base_label, const std::string& notes) {
  std::ostringstream head;
  head << "# Written by `ringplan calibrate` from " << m.source << "\n"
       << "# device: " << (m.device.empty() ? "(not recorded)" : m.device) << "; base profile " << base_label
       << " (peaks and memory bandwidth are its datasheet figures)\n";
  std::istringstream nl(notes);
  for (std::string line; std::getline(nl, line);)
    if (!line.empty()) head << "# note: " << line << "\n";
  // max and half_tflop as the profile below writes them; the fit's errors in the error format.
  head << "# curve                 points  max     half_tflop  half_k  fit error mean / max  held out: FLOPs curve / K-ramp\n";
  for (const auto& c : cal.curves) {
    std::string held = "-";
    if (c.gemm.ramp_tried)
      held = fmt::format("{} / {}", format::format_abs_error_pct(c.gemm.held_out_flops_pct),
                         format::format_abs_error_pct(c.gemm.held_out_ramp_pct));
    head << fmt::format("#  {:<20} {:6d}  {:.4f}  {:.6f}  {:6.0f}  {} / {}  {}\n", c.key, c.error.points,
                        c.fitted.max_efficiency, c.fitted.half_flops / 1e12, c.fitted.half_k,
                        format::format_abs_error_pct(c.error.mean_pct), format::format_abs_error_pct(c.error.max_pct), held);
  }
  if (cal.memory_bandwidth_efficiency > 0)
    head << fmt::format("#  memory_bandwidth: copy {} (read + write) / datasheet {} = {:.4f}\n",
                        format::format_bandwidth(m.hbm_copy_bytes_per_s),
                        format::format_bandwidth(base.memory_bandwidth_bytes_per_s), cal.memory_bandwidth_efficiency);
  YAML::Emitter out;
  write_cluster(out, cal.cluster);
  // The end marker last: load_cluster() refuses a copy of this profile that was cut short.
  return head.str() + out.c_str() + "\n" + kProfileEndMarker + "\n";
}

}  // namespace ringplan::sim
