// Discrete-event replay of one attention layer's ring on one CP group (DESIGN.md: "the event
// simulator replays the ring schedule per rank"). Where ring_model.hpp gives closed forms on
// the slowest rank, this replays every rank and every transfer with its dependencies, so it
// shows who waits for whom: the per-rank busy time of an unbalanced scheme and the transfers
// that compute does not hide. Same kernel rates, merge costs and link as ring_model (one
// source); on balanced, uniform cases the two agree exactly (tests/sim/test_ring_event_sim.cpp).
//
// Schedule replayed (rank r of P, block j = (r - k) mod P at step k):
//  forward : at the start of step k, r posts the send of the block in hand to r+1 and the
//            receive of the next block from r-1 (double buffer), then runs the block's kernel
//            and, after step 0, the fp32 merge. A transfer starts once both ends have posted
//            (start of step k on both ranks) and the link r -> r+1 is free; step k+1 starts
//            when step k is done and the block has arrived.
//  backward: K,V travel as in the forward. The dK,dV accumulators of block j travel with it:
//            after its kernel for step k (k > 0), r waits for the accumulator from r-1, adds
//            its contribution (merge) and sends it on; after the last step every accumulator
//            makes one more hop, home to its owner. Both kinds of transfer share link r -> r+1.
// Resources: each rank's GPU (kernels and merges run in order) and each directed link.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/ring_model.hpp"

namespace ringplan::sim {

enum class RingPhase { forward, backward };
enum class RingActivity { kernel, merge, send_kv, send_dkv };
const char* to_string(RingPhase p);
const char* to_string(RingActivity a);

struct RingEvent {
  RingPhase phase = RingPhase::forward;
  RingActivity activity = RingActivity::kernel;
  int64_t rank = 0;   // the rank doing it (the sender for transfers)
  int64_t step = 0;
  int64_t block = 0;  // the KV block concerned (= the rank that owns it)
  double start_s = 0, end_s = 0;  // from the start of the phase
};

struct RingRankTimes {
  double forward_busy_s = 0;      // kernels + merges
  double forward_finish_s = 0;    // last step done
  double backward_busy_s = 0;
  double backward_finish_s = 0;   // last step done and own dK,dV home
};

struct RingSimulation {
  std::vector<RingRankTimes> ranks;
  double forward_s = 0;             // makespan: slowest rank's forward finish
  double backward_s = 0;
  double forward_busy_max_s = 0, forward_busy_mean_s = 0;
  double backward_busy_max_s = 0, backward_busy_mean_s = 0;
  // Time the slowest-finishing rank is not computing: waiting for transfers (exposed
  // communication) or for slower neighbours (imbalance that propagates around the ring).
  double forward_wait_s = 0, backward_wait_s = 0;
  std::vector<RingEvent> events;    // empty unless recorded
};

// Validates the shape like predict_ring_attention() (throws ringplan::Error bad_input).
RingSimulation simulate_ring(const RingAttentionShape& s, const ClusterConfig& c, bool record_events = false);

// The attention layer that one CP group of a layout runs: micro-batch, heads and kv heads per TP
// rank, the whole sequence split over CP, the layout's scheme and kernel. `ringplan simulate
// --trace`, the report's ring timeline and `ringplan run` all replay this same shape.
RingAttentionShape ring_shape_for(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt);

// Chrome / Perfetto trace (JSON object format): one complete event ("ph": "X") per kernel,
// merge and transfer; pid = rank (named "rank N"), tid 0 compute and 1 communication (the
// transfer rank -> rank+1), the backward placed after the forward. Times in microseconds. The
// same layout as `ringplan run --trace`'s measured ranks.
std::string ring_trace_json(const RingSimulation& sim);

}  // namespace ringplan::sim
