// Runs one attention layer's ring forward + backward on one CP group, repeatedly, and measures
// it: per-phase times (forward, backward; compute, exposed comm) per iteration and rank,
// memory per rank (exact buffer accounting and the measured RSS high-water mark), and
// optionally the trace events. It knows shapes only; what a plan means (which slice of the
// mesh this is) and what was predicted is the CLI's business.
//
// Inputs are synthetic but deterministic per GLOBAL position (synthetic_value), so every
// sharding scheme and rank count sees the same full-sequence tensors; tests rebuild them.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/config.hpp"
#include "runtime/communicator.hpp"
#include "runtime/ring_attention.hpp"
#include "runtime/trace.hpp"

namespace ringplan::runtime {

// Tensor ids for synthetic_value.
enum class SyntheticTensor : uint32_t { q = 1, k = 2, v = 3, grad_out = 4 };

// splitmix64's finaliser: a bijection with good avalanche, so neighbouring indices give
// unrelated values (the synthetic inputs and the training step's data and parameters).
uint64_t splitmix64(uint64_t x);

// A value in [-1, 1) from a hash of (seed, tensor, batch, head, global position, dim).
float synthetic_value(uint64_t seed, SyntheticTensor t, int64_t b, int64_t h, int64_t pos, int64_t d);
// Fills a dense [batch, heads, n, head_dim] buffer for tokens at `positions` (n of them).
void fill_synthetic(float* dst, uint64_t seed, SyntheticTensor t, int64_t batch, int64_t heads,
                    const int64_t* positions, int64_t n, int64_t head_dim);

struct RingLayerShape {
  int64_t batch = 1;      // micro-batch sequences
  int64_t heads = 1;      // query heads per rank (heads / TP)
  int64_t kv_heads = 1;   // KV heads per rank (kv_heads / TP)
  int64_t seq_len = 0;    // full sequence L (each CP rank holds L / CP)
  int64_t head_dim = 0;
  bool causal = true;
  CpScheme scheme = CpScheme::zigzag;
  AttentionImpl kernel = AttentionImpl::flash;
  // ring: RingAttention; allgather: AllGatherAttention; alltoall: AllToAllAttention; hybrid:
  // HybridAttention (flash only; no trace events, their samples' comm_wait is the time inside
  // their collectives, plus the inner ring's waits for hybrid).
  CpComm comm = CpComm::ring;
  // hybrid: HybridAttention with all-to-all groups of a2a_size ranks (divides the CP size).
  int64_t a2a_size = 1;
  // Packed documents (TrainingConfig::documents): their lengths, summing to seq_len; empty: one
  // sequence. With documents the ranks take the per-document zigzag when scheme is zigzag
  // (document_shard_positions), the scheme's positions otherwise, and every method masks keys of
  // other documents, as the training step does.
  std::vector<int64_t> document_lengths;
};

struct ExecutorOptions {
  int iterations = 5;
  int warmup = 1;
  uint64_t seed = 1;
  bool trace = false;
  kernels::TileConfig tiles{};
  // Called on every rank after each iteration, warm-up included: (done, warmup + iterations).
  // Runs outside the timed passes (the next iteration starts with a barrier); must not communicate.
  std::function<void(int64_t done, int64_t total)> on_iteration;
};

struct RankIterationSample {
  double forward_s = 0, forward_compute_s = 0, forward_comm_wait_s = 0;
  double backward_s = 0, backward_compute_s = 0, backward_comm_wait_s = 0;
};

struct RankMemory {
  int64_t tensors_bytes = 0;     // Q, K, V, O, lse, dO, dQ, dK, dV of this rank (float32)
  RingWorkspaceBytes workspace;  // buffers the ring owns
  int64_t tracked_bytes = 0;     // tensors + workspace: exact allocation accounting
  // Rise of the peak memory over the run, -1 if unknown: on the CPU, VmHWM after the run minus
  // VmRSS before allocating; on a GPU (gpu_executor.hpp), free device memory before allocating
  // minus the least seen during the run. `ringplan run --format json` writes it under the key
  // rss_peak_delta_bytes (and the ranks' maximum as measured_rss_peak_delta_max_bytes), the names
  // its readers (report/) know.
  int64_t peak_memory_rise_bytes = -1;
  bool rss_peak_was_reset = false;    // false: VmHWM could not be reset, the delta may be an over-estimate
};

struct RingLayerMeasurement {
  RingLayerShape shape;
  int cp_size = 1;
  std::vector<std::vector<RankIterationSample>> samples;  // [iteration][rank], warm-up excluded
  std::vector<int64_t> forward_pairs;                      // visible (q, k) pairs per rank
  std::vector<RankMemory> memory;                          // per rank
  std::vector<std::vector<TraceEvent>> trace;              // per rank, when options.trace
  std::vector<std::string> hosts;                          // per rank (describe_rank)
};

// Collective over the CP group `cp` (its size is the CP degree). Throws bad_input when the
// shape cannot be sharded (seq_len % multiple) or is inconsistent, or for shape.comm allgather /
// alltoall with a materialised kernel or opt.trace (those layers record no trace events), or
// alltoall with heads the CP size cannot split (AllToAllAttention).
RingLayerMeasurement run_ring_layer(Communicator& cp, const RingLayerShape& shape, const ExecutorOptions& opt);

// The ring's per-rank configuration for a layer shape (tokens_per_rank = L / CP).
RingConfig ring_config(const RingLayerShape& shape, int64_t tokens_per_rank, const kernels::TileConfig& tiles);

// Collective over `cp` (host buffers): every rank's samples (the same count on every rank),
// forward pairs, memory, host and, when `events` is given, trace events into `m`. Shared by
// the CPU and the CUDA executors.
void gather_measurement(Communicator& cp, const std::vector<RankIterationSample>& mine, int64_t my_pairs,
                        const RankMemory& mem, const std::vector<TraceEvent>* events, RingLayerMeasurement& m);

// The layer's phase times of one iteration from its ranks' samples. Every iteration starts at a
// barrier and a rank's backward follows its own forward at once, so max_r(forward_s + backward_s)
// is the layer's end. forward = max_r forward_s (the forward's end); backward = the layer's end
// minus the forward's end. (max_r backward_s instead would count the forward's uneven finish
// twice: a rank whose forward ends early starts its backward clock and then waits in the ring
// for the rank still in its forward.) forward + backward = the layer's end-to-end time, which is
// what the cost model's phase totals add up to.
struct PhaseTimes {
  double forward_s = 0, backward_s = 0;
};
PhaseTimes phase_times(const std::vector<RankIterationSample>& ranks);

// Order statistics of a sample (used for "median and spread across iterations and ranks").
struct SampleStats {
  double median = 0, min = 0, max = 0, p10 = 0, p90 = 0;
  int64_t count = 0;
};
SampleStats sample_stats(std::vector<double> xs);

}  // namespace ringplan::runtime
