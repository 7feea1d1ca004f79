// A CPU cluster profile from what `ringplan calibrate` measures under mpirun (runtime/measure_cpu.hpp,
// runtime/step/measure_gemm.hpp, runtime/measure_collectives.hpp): the fits and the assembly of
// the profile, kept apart from the measurement so that both can be tested on their own. sim does
// not know the runtime: the CLI copies the runtime's points into the samples below.
//
// The profile (core/config.hpp ClusterConfig, written by core/config_yaml.hpp write_cluster):
//   peak_tflops (all dtypes; the CPU kernels compute in fp32) and efficiency.attention: fitted
//       to the flash forward kernel's rate at a few token block sizes on full blocks,
//       rate(x) = R * x / (x + half), x = kernel FLOPs (4*b*H*visible_pairs*d);
//       peak = R, attention = {max 1, half}. Fitted by sim/rate_fit.hpp fit_rate_curve.
//   efficiency.masked_tiles: the kernels' tile (CpuMeasurements::attention_tile) and the cost of
//       a tile the causal diagonal crosses over a full tile's, forward and backward: from the
//       causal diagonal block of n tokens timed against the full block of the same n (median over
//       the sizes with n >= 2 tiles; sim/formulas.hpp masked_square_extra_pairs). Without a tile
//       (0) the causal blocks join the curve fits instead, as visible pairs.
//   efficiency.attention_backward: the same fit to the flash BACKWARD kernel (full blocks),
//       rate = 2.5 x forward FLOPs / time at x = the block's forward FLOPs
//       (the axis sim/ring_model.cpp reads it on). peak_tflops is the largest of the fitted
//       asymptotes, so no curve is capped: each max = its asymptote / peak.
//   efficiency.matmul and efficiency.materialized_attention: the same fit to the materialised
//       kernel (GEMMs around a softmax), at x = half its FLOPs, which is how sim/ring_model.hpp
//       times materialised attention. The training step's linear-layer GEMMs are fitted and
//       recorded in the header, but not used for matmul (see calibrate_cpu_profile).
//   efficiency.matmul_backward: the same fit to the materialised BACKWARD kernel, rate = 2 x
//       forward FLOPs / time at the same x: its cost is not the forward's (no exponentials).
//   intra_node: latency = half the round trip of the smallest ping-pong message; bandwidth =
//       per-rank rate of a ring exchange of the largest message (every rank sends to r+1 and
//       receives from r-1 at once, as ring attention does), latency removed. inter_node = intra_node.
//   memory_bandwidth_gbps: per-rank copy rate with every rank copying at once (an achieved
//       rate, so efficiency.memory_bandwidth = 1).
//   efficiency.collectives: all-reduce, reduce-scatter and all-gather as bus bandwidth against
//       intra_node's bandwidth, fitted by fit_collective_curve (sim/cost_model.hpp), with 2 or
//       more message sizes.
//   memory_gib: the host's memory / ranks per host; memory_reserved_gib: one rank's RSS after start-up.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/rate_fit.hpp"

namespace ringplan::sim {

// One token block size: the flash and materialised kernels, forward and backward, on a full
// n x n block, and the flash kernels on a causal diagonal block. Times in seconds.
struct CpuKernelSample {
  int64_t tokens = 0;
  double flops = 0;  // forward FLOPs of the full block
  double fwd_s = 0, bwd_s = 0, mat_fwd_s = 0, mat_bwd_s = 0;
  double causal_flops = 0, causal_fwd_s = 0, causal_bwd_s = 0;
};

// One linear layer of the training step: rows x in -> out; forward and backward (data and weight
// gradient) times.
struct CpuGemmSample {
  int64_t rows = 0, in = 0, out = 0;
  double forward_s = 0, backward_s = 0;
  double forward_flops() const { return 2.0 * double(rows) * double(in) * double(out); }
};

// One message size between ranks: one way of a ping-pong, and one step of a ring exchange.
struct LinkSample {
  int64_t bytes = 0;
  double pingpong_one_way_s = 0, ring_step_s = 0;
};

// One buffer size of the step's collectives over all ranks.
struct CollectiveSample {
  int64_t bytes = 0;
  double all_reduce_s = 0, reduce_scatter_s = 0, all_gather_s = 0;
};

struct CpuMeasurements {
  std::string name;  // the profile's name
  int64_t ranks = 0, hosts = 0, ranks_per_host = 0;
  // The kernel shape (for the header): per-rank heads, batch and kernel threads.
  int64_t batch = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int threads = 0;
  // The flash kernels' tile edge in tokens (kernels::TileConfig: the larger of its query and key
  // tiles); 0: unknown, no efficiency.masked_tiles.
  int64_t attention_tile = 0;
  std::vector<CpuKernelSample> kernels;         // >= 2 block sizes
  std::vector<CpuGemmSample> gemms;             // >= 1 (the GEMM fit in the header)
  std::vector<LinkSample> links;                // ascending sizes; the first is the latency probe
  std::vector<CollectiveSample> collectives;    // fitted when there are >= 2
  double copy_bytes_per_s = 0;                  // per-rank memcpy rate, read + write
  double host_memory_bytes = 0;                 // the whole host's (0: unknown, written as 0)
  double reserved_bytes = 0;                    // one rank's RSS after start-up (>= 0)
};

struct CpuCalibration {
  ClusterConfig cluster;
  RateCurve flash_fwd, flash_bwd, mat_fwd, mat_bwd, gemm;
  double latency_s = 0;
  double ring_bandwidth = 0;      // = cluster.intra_node.bandwidth
  double pingpong_bandwidth = 0;  // the same message ping-ponged alone (header only)
};

// The cost of a diagonal tile over a full tile's (ClusterConfig::masked_tiles) from a causal
// diagonal block of `tokens` timed against the full block of the same size (time ratio),
// inverting sim::masked_square_extra_pairs; clamped to the profile's range [0.5, 16].
double masked_tile_cost(int64_t tokens, int64_t tile, double causal_over_full_time);

// Fits every curve and assembles the profile. Throws bad_input when a rank or host count is < 1,
// fewer than two kernel block sizes, no GEMM or no link size is given, or a time, FLOP count,
// byte count or rate is not finite and > 0.
CpuCalibration calibrate_cpu_profile(const CpuMeasurements& m);

// The profile as `ringplan calibrate` writes it: a "# " header with every measured point and
// fit, the profile YAML, and core's end marker (kProfileEndMarker) last.
std::string cpu_profile_text(const CpuMeasurements& m, const CpuCalibration& c);

}  // namespace ringplan::sim
