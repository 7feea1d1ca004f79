// The CPU profile from calibrate's measurements (see cpu_calibration.hpp).
#include "sim/cpu_calibration.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::sim {

namespace {

double median_of(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  const size_t n = xs.size();
  return n % 2 == 1 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}

void check_positive(double v, const std::string& what) {
  if (!std::isfinite(v) || !(v > 0))
    throw bad_input(fmt::format("calibrate: {} = {} is not finite and > 0", what, v));
}

void check(const CpuMeasurements& m) {
  if (m.ranks < 1 || m.hosts < 1 || m.ranks_per_host < 1 || m.ranks_per_host > m.ranks)
    throw bad_input(fmt::format("calibrate: {} ranks on {} hosts with at most {} per host: need ranks >= 1, hosts >= 1 "
                                "and 1 <= ranks per host <= ranks",
                                m.ranks, m.hosts, m.ranks_per_host));
  if (m.kernels.size() < 2)
    throw bad_input(fmt::format("calibrate: {} kernel block size(s) measured; the efficiency curves need at least two",
                                m.kernels.size()));
  if (m.gemms.empty()) throw bad_input("calibrate: no linear-layer GEMM measured");
  if (m.links.empty()) throw bad_input("calibrate: no link message size measured");
  for (const auto& k : m.kernels) {
    const std::string at = fmt::format("kernel block of {} tokens", k.tokens);
    for (auto [v, name] : {std::pair{k.flops, "FLOPs"}, {k.fwd_s, "flash forward time"},
                           {k.bwd_s, "flash backward time"}, {k.mat_fwd_s, "materialised forward time"},
                           {k.mat_bwd_s, "materialised backward time"}, {k.causal_flops, "causal FLOPs"},
                           {k.causal_fwd_s, "causal forward time"}, {k.causal_bwd_s, "causal backward time"}})
      check_positive(v, at + " " + name);
  }
  for (const auto& g : m.gemms) {
    const std::string at = fmt::format("GEMM {} x {} x {}", g.rows, g.in, g.out);
    check_positive(g.forward_flops(), at + " FLOPs");
    check_positive(g.forward_s, at + " forward time");
    check_positive(g.backward_s, at + " backward time");
  }
  for (const auto& l : m.links) {
    const std::string at = fmt::format("link message of {} bytes", l.bytes);
    check_positive(static_cast<double>(l.bytes), at + " size");
    check_positive(l.pingpong_one_way_s, at + " ping-pong time");
    check_positive(l.ring_step_s, at + " ring step time");
  }
  for (const auto& c : m.collectives) {
    const std::string at = fmt::format("collective of {} bytes", c.bytes);
    check_positive(static_cast<double>(c.bytes), at + " size");
    check_positive(c.all_reduce_s, at + " all-reduce time");
    check_positive(c.reduce_scatter_s, at + " reduce-scatter time");
    check_positive(c.all_gather_s, at + " all-gather time");
  }
  check_positive(m.copy_bytes_per_s, "copy rate");
  for (auto [v, name] : {std::pair{m.host_memory_bytes, "host memory"}, {m.reserved_bytes, "reserved memory"}})
    if (!std::isfinite(v) || v < 0) throw bad_input(fmt::format("calibrate: {} = {} is not finite and >= 0", name, v));
}

}  // namespace

double masked_tile_cost(int64_t tokens, int64_t tile, double causal_over_full_time) {
  // The causal block's time in pair-equivalents of the full block (n^2 pairs in full_s):
  // E = ratio * n^2 = visible + masked_square_extra_pairs(n) = n(n+1)/2 + n(cost*t - (t+1)/2).
  const double n = static_cast<double>(tokens), t = std::min(static_cast<double>(tile), n);
  const double e = causal_over_full_time * n * n;
  const double cost = ((e - n * (n + 1.0) / 2.0) / n + (t + 1.0) / 2.0) / t;
  // The profile's valid range (core/config_yaml.cpp): a measurement outside it is noise.
  return std::clamp(cost, 0.5, 16.0);
}

CpuCalibration calibrate_cpu_profile(const CpuMeasurements& m) {
  check(m);
  CpuCalibration out;
  std::vector<RatePoint> fwd, bwd, mat, mat_bwd, gemm;
  // With the kernels' tile known, the causal diagonal blocks measure the masked tiles' cost and
  // the curves are fitted on full blocks; without it they join the curves as visible pairs.
  const bool masked = m.attention_tile > 1;
  std::vector<double> mask_fwd, mask_bwd;
  for (const auto& k : m.kernels) {
    fwd.push_back({k.flops, k.flops / k.fwd_s});
    // Backward: 2.5x the forward FLOPs (sim's flash backward factor), on the forward's x.
    bwd.push_back({k.flops, 2.5 * k.flops / k.bwd_s});
    if (!masked) {
      fwd.push_back({k.causal_flops, k.causal_flops / k.causal_fwd_s});
      bwd.push_back({k.causal_flops, 2.5 * k.causal_flops / k.causal_bwd_s});
    } else if (k.tokens >= 2 * m.attention_tile) {
      mask_fwd.push_back(masked_tile_cost(k.tokens, m.attention_tile, k.causal_fwd_s / k.fwd_s));
      mask_bwd.push_back(masked_tile_cost(k.tokens, m.attention_tile, k.causal_bwd_s / k.bwd_s));
    }
    // Materialised: sim times each of its two GEMMs at half the block's FLOPs; its backward is
    // 2x the forward FLOPs.
    mat.push_back({0.5 * k.flops, k.flops / k.mat_fwd_s});
    mat_bwd.push_back({0.5 * k.flops, 2.0 * k.flops / k.mat_bwd_s});
  }
  // The linear-layer GEMMs at x = the GEMM's forward FLOPs, as sim/cost_model.cpp times each
  // linear layer.
  for (const auto& g : m.gemms) gemm.push_back({g.forward_flops(), g.forward_flops() / g.forward_s});
  out.flash_fwd = fit_rate_curve(fwd);
  out.flash_bwd = fit_rate_curve(bwd);
  out.mat_fwd = fit_rate_curve(mat);
  out.mat_bwd = fit_rate_curve(mat_bwd);
  out.gemm = fit_rate_curve(gemm);

  // Latency from the smallest message; bandwidth from the largest, latency removed (the floor
  // keeps a ring step at or below the latency from dividing by zero or a negative time).
  out.latency_s = m.links.front().pingpong_one_way_s;
  const LinkSample& big = m.links.back();
  out.ring_bandwidth = static_cast<double>(big.bytes) / std::max(1e-9, big.ring_step_s - out.latency_s);
  out.pingpong_bandwidth = static_cast<double>(big.bytes) / std::max(1e-9, big.pingpong_one_way_s - out.latency_s);

  ClusterConfig& c = out.cluster;
  c.name = m.name;
  // Peak = the fastest asymptote of the flash kernels and the GEMMs; every curve is relative to
  // it (max <= 1).
  const double peak = std::max({out.flash_fwd.asymptote, out.flash_bwd.asymptote, out.gemm.asymptote});
  c.peak_flops_per_s_bf16 = c.peak_flops_per_s_fp16 = c.peak_flops_per_s_fp32 = peak;
  c.attention = {out.flash_fwd.asymptote / peak, out.flash_fwd.half_flops};
  c.attention_backward = {out.flash_bwd.asymptote / peak, out.flash_bwd.half_flops};
  // Curves relative to the same peak: eff(x) = rate(x) / peak, capped at 1.
  // matmul is the materialised kernel's fit (its GEMMs with the softmax's exponentials between
  // them), NOT the linear-layer GEMMs' own (faster) fit, which the header records: the cost model
  // charges the step's element-wise work (softmax over the vocabulary, SwiGLU, rotary, norms, the
  // optimizer's update) at memcpy bandwidth, while on a CPU that work is bound by its exponentials,
  // divisions and square roots. With matmul from the GEMMs alone the step sweep
  // (bench/runtime/step_sweep.sh) came out 28-43 % slower than predicted; the materialised
  // kernel's rate carries that element-wise cost (BENCHMARKS.md, whole training step).
  if (!mask_fwd.empty()) {
    c.masked_tiles.tile = m.attention_tile;
    c.masked_tiles.forward = median_of(mask_fwd);
    c.masked_tiles.backward = median_of(mask_bwd);
  }
  c.matmul = {std::min(1.0, out.mat_fwd.asymptote / peak), out.mat_fwd.half_flops};
  c.materialized_attention = c.matmul;
  c.matmul_backward = {std::min(1.0, out.mat_bwd.asymptote / peak), out.mat_bwd.half_flops};
  c.memory_bytes = m.host_memory_bytes / static_cast<double>(m.ranks_per_host);
  c.memory_reserved_bytes = m.reserved_bytes;
  c.memory_bandwidth_bytes_per_s = m.copy_bytes_per_s;
  c.memory_bandwidth_efficiency = 1.0;  // the copy rate is already the achieved streaming rate
  c.gpus_per_node = m.ranks_per_host;
  c.nodes = m.hosts;
  c.intra_node = {out.ring_bandwidth, out.latency_s};
  c.inter_node = c.intra_node;  // not measured: the header says so
  if (m.collectives.size() >= 2) {
    std::vector<double> xb, ar, rs, ag;
    for (const auto& p : m.collectives) {
      xb.push_back(static_cast<double>(p.bytes));
      ar.push_back(p.all_reduce_s);
      rs.push_back(p.reduce_scatter_s);
      ag.push_back(p.all_gather_s);
    }
    const double n = static_cast<double>(m.ranks);
    c.collectives.all_reduce = fit_collective_curve(xb, ar, 2.0 * (n - 1.0) / n, 2.0 * (n - 1.0), c.intra_node);
    c.collectives.reduce_scatter = fit_collective_curve(xb, rs, (n - 1.0) / n, n - 1.0, c.intra_node);
    c.collectives.all_gather = fit_collective_curve(xb, ag, (n - 1.0) / n, n - 1.0, c.intra_node);
  }
  return out;
}

std::string cpu_profile_text(const CpuMeasurements& m, const CpuCalibration& cal) {
  using format::format_flops_per_s;
  const RateCurve& attn = cal.flash_fwd;
  const RateCurve& bwd = cal.flash_bwd;
  const RateCurve& mat = cal.mat_fwd;
  const RateCurve& mat_bwd = cal.mat_bwd;
  const RateCurve& gemm = cal.gemm;
  std::ostringstream head;
  head << "# Written by `ringplan calibrate` with " << m.ranks << " ranks on " << m.hosts
       << " host(s); every rank measured at once, as in a ring run.\n"
       << "# Kernel shape: batch " << m.batch << ", heads " << m.heads << ", kv_heads " << m.kv_heads << ", head_dim "
       << m.head_dim << ", full (non-causal) blocks, fp32, " << m.threads << " thread(s) per rank.\n"
       << "# rates: forward FLOP per block, then FLOP/s of each kernel (backward: 2.5x or 2x the forward FLOP)\n"
       << fmt::format("# {:>6}  {:>11}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}\n", "tokens",
                      "fwd FLOP", "flash fwd", "flash bwd", "mat fwd", "mat bwd", "fit", "causal diag fwd",
                      "causal diag bwd", "bwd fit");
  for (const auto& k : m.kernels)
    head << fmt::format("#  {:6d}  {:>11}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}\n", k.tokens,
                        format::format_flop(k.flops), format_flops_per_s(k.flops / k.fwd_s),
                        format_flops_per_s(2.5 * k.flops / k.bwd_s), format_flops_per_s(k.flops / k.mat_fwd_s),
                        format_flops_per_s(2.0 * k.flops / k.mat_bwd_s), format_flops_per_s(attn.at(k.flops)),
                        format_flops_per_s(k.causal_flops / k.causal_fwd_s),
                        format_flops_per_s(2.5 * k.causal_flops / k.causal_bwd_s), format_flops_per_s(bwd.at(k.flops)));
  head << "# flash fit: rate(x) = " << format_flops_per_s(attn.asymptote) << " * x / (x + "
       << format::format_flop(attn.half_flops) << "); flash backward fit: " << format_flops_per_s(bwd.asymptote)
       << " * x / (x + " << format::format_flop(bwd.half_flops) << "); materialised fit (at x = FLOP/2): "
       << format_flops_per_s(mat.asymptote) << ", half " << format::format_flop(mat.half_flops)
       << "; materialised backward fit: " << format_flops_per_s(mat_bwd.asymptote) << ", half "
       << format::format_flop(mat_bwd.half_flops) << "\n"
       << (cal.cluster.masked_tiles.is_exact()
               ? std::string("# masked tiles: not measured (causal blocks fitted as visible pairs)\n")
               : fmt::format("# masked tiles (causal diag against full blocks, n >= 2 tiles, median): tile {}, a diagonal "
                             "tile costs {:.3f} full tiles forward, {:.3f} backward\n",
                             cal.cluster.masked_tiles.tile, cal.cluster.masked_tiles.forward,
                             cal.cluster.masked_tiles.backward))
       << fmt::format("# linear-layer GEMMs (the step's, runtime/step/ops.hpp):\n#  {:>6}  {:>6}  {:>6}  {:>14}  {:>14}  {:>14}\n",
                      "rows", "in", "out", "fwd", "bwd (2x)", "fit");
  for (const auto& g : m.gemms)
    head << fmt::format("#  {:6d}  {:6d}  {:6d}  {:>14}  {:>14}  {:>14}\n", g.rows, g.in, g.out,
                        format_flops_per_s(g.forward_flops() / g.forward_s),
                        format_flops_per_s(2.0 * g.forward_flops() / g.backward_s),
                        format_flops_per_s(gemm.at(g.forward_flops())));
  head << "# GEMM fit (recorded, not efficiency.matmul: see sim/cpu_calibration.cpp): rate(x) = "
       << format_flops_per_s(gemm.asymptote) << " * x / (x + " << format::format_flop(gemm.half_flops)
       << "), x = the GEMM's forward FLOP\n"
       << fmt::format("# links: {:>10}  {:>19}  {:>12}\n", "message", "ping-pong one way", "ring step");
  for (const auto& l : m.links)
    head << fmt::format("#        {:>10}  {:>19}  {:>12}\n", format::format_bytes(static_cast<double>(l.bytes)),
                        format::format_time_s(l.pingpong_one_way_s), format::format_time_s(l.ring_step_s));
  head << fmt::format("# intra_node: latency = {}-byte ping-pong one way; bandwidth = ring exchange of {} "
                      "({}; ping-pong alone: {})\n",
                      m.links.front().bytes, format::format_bytes(static_cast<double>(m.links.back().bytes)),
                      format::format_bandwidth(cal.ring_bandwidth), format::format_bandwidth(cal.pingpong_bandwidth))
       << (m.hosts == 1 ? "# inter_node: NOT measured (one host); copied from intra_node\n"
                        : "# inter_node: copied from intra_node (not measured separately)\n")
       << fmt::format("# memory_bandwidth: per-rank memcpy rate, read+write, all ranks at once: {}\n",
                      format::format_bandwidth(m.copy_bytes_per_s));
  if (!m.collectives.empty()) {
    head << fmt::format("# collectives over {} ranks (float32, slowest rank, median):\n#  {:>10}  {:>12}  {:>14}  {:>12}\n",
                        m.ranks, "message", "all-reduce", "reduce-scatter", "all-gather");
    for (const auto& p : m.collectives)
      head << fmt::format("#  {:>10}  {:>12}  {:>14}  {:>12}\n", format::format_bytes(static_cast<double>(p.bytes)),
                          format::format_time_s(p.all_reduce_s), format::format_time_s(p.reduce_scatter_s),
                          format::format_time_s(p.all_gather_s));
  }
  YAML::Emitter out;
  write_cluster(out, cal.cluster);
  // The end marker last: load_cluster() refuses a copy of this profile that was cut short.
  return head.str() + out.c_str() + "\n" + kProfileEndMarker + "\n";
}

}  // namespace ringplan::sim
