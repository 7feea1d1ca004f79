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
//
// The other CP methods (simulate_cp_layer dispatches on RingAttentionShape::comm) replay the
// closed forms' schedules of ring_model.hpp from the same pieces. A collective is one event per
// rank on the communication track; it starts when every rank of its group has posted it (the
// latest rank's ready time) and ends for all of them together, and the compute waits for it
// (nothing overlaps, as the closed forms assume):
//  allgather: forward  all-gather K,V -> one kernel over the rank's queries against all L keys
//                      (the scheme's visible pairs, so the scheme's per-rank imbalance);
//             backward all-gather K,V again -> the backward kernel -> reduce-scatter dK,dV
//                      (which waits for the slowest rank's kernel).
//  alltoall:  forward  all-to-alls of Q, K, V -> one kernel on (a/t)/CP heads of the whole
//                      sequence (1/CP of the pairs on every rank: balanced) -> all-to-all of O;
//             backward all-to-all of dO -> the backward kernel -> all-to-alls of dQ, dK, dV.
//  hybrid:    CP rank g*A + i is rank i of all-to-all group g: the group's all-to-alls around
//             the ring of the R groups (ring position g), which is replayed as above on
//             hybrid_ring_stage() (L/R tokens of (a/t)/A heads per rank); the closing
//             all-to-all of a group waits for the group's ring finish.
// Event fields for these: step 0 and block -1 (the whole sequence) except hybrid's ring events,
// whose step and block are the ring's (block = the ring position that owns it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/ring_model.hpp"

namespace ringplan::sim {

enum class RingPhase { forward, backward };
// Collectives of the non-ring methods: all_gather_kv, reduce_scatter_dkv and the all-to-alls of
// one tensor each (in the backward they carry its gradient: all_to_all_q is dQ, _o is dO, ...).
enum class RingActivity {
  kernel,
  merge,
  send_kv,
  send_dkv,
  all_gather_kv,
  reduce_scatter_dkv,
  all_to_all_q,
  all_to_all_k,
  all_to_all_v,
  all_to_all_o
};
// On the communication track (tid 1): transfers and collectives.
bool is_communication(RingActivity a);
const char* to_string(RingPhase p);
const char* to_string(RingActivity a);

struct RingEvent {
  RingPhase phase = RingPhase::forward;
  RingActivity activity = RingActivity::kernel;
  int64_t rank = 0;   // the rank doing it (the sender for transfers)
  int64_t step = 0;
  int64_t block = 0;  // the KV block concerned (= the rank that owns it); -1: the whole sequence
  double start_s = 0, end_s = 0;  // from the start of the phase
};

struct RingRankTimes {
  double forward_busy_s = 0;      // kernels + merges
  double forward_finish_s = 0;    // last step done (other methods: the pass's last collective done)
  double backward_busy_s = 0;
  double backward_finish_s = 0;   // last step done and own dK,dV home (other methods: as forward)
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
  CpComm comm = CpComm::ring;       // the method replayed
};

// The ring (cp_comm ring) whatever s.comm says. Validates the shape like
// predict_ring_attention() (throws ringplan::Error bad_input).
RingSimulation simulate_ring(const RingAttentionShape& s, const ClusterConfig& c, bool record_events = false);

// The method s.comm names: simulate_ring() for ring, the schedules above for allgather,
// alltoall and hybrid (s.a2a_size = A). Throws bad_input where predict_ring_attention() does
// (e.g. materialised attention or heads the all-to-all cannot split).
RingSimulation simulate_cp_layer(const RingAttentionShape& s, const ClusterConfig& c, bool record_events = false);

// The attention layer that one CP group of a layout runs: micro-batch, heads and kv heads per TP
// rank, the whole sequence split over CP, the layout's scheme, kernel, CP method and hybrid group
// size (sim::cp_a2a_size_of). `ringplan simulate --trace`, the report's ring timeline and
// `ringplan run` all replay this same shape.
RingAttentionShape ring_shape_for(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt);

// Chrome / Perfetto trace (JSON object format): one complete event ("ph": "X") per kernel,
// merge, transfer and collective; pid = rank (named "rank N"), tid 0 compute and 1
// communication (the transfer rank -> rank+1, or the rank's part of a collective), the backward
// placed after the forward. Times in microseconds. The
// same layout as `ringplan run --trace`'s measured ranks.
std::string ring_trace_json(const RingSimulation& sim);

}  // namespace ringplan::sim
