// Discrete-event replay of a ring attention layer (see ring_event_sim.hpp).
#include "sim/ring_event_sim.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "sim/cost_model.hpp"
#include "sim/formulas.hpp"

namespace ringplan::sim {

const char* to_string(RingPhase p) { return p == RingPhase::forward ? "forward" : "backward"; }
const char* to_string(RingActivity a) {
  switch (a) {
    case RingActivity::kernel: return "kernel";
    case RingActivity::merge: return "merge";
    case RingActivity::send_kv: return "send K,V";
    case RingActivity::send_dkv: return "send dK,dV";
  }
  return "?";
}

namespace {

struct Replay {
  int64_t P = 1;
  bool record = false;
  std::vector<RingEvent>* events = nullptr;
  void add(RingPhase ph, RingActivity a, int64_t rank, int64_t step, int64_t block, double t0, double t1) {
    if (record && t1 > t0) events->push_back({ph, a, rank, step, block, t0, t1});
  }
  int64_t block_at(int64_t r, int64_t k) const { return ((r - k) % P + P) % P; }
  int64_t next(int64_t r) const { return (r + 1) % P; }
};

// Forward FLOPs of rank r's kernel on block j. Both kernels skip fully hidden blocks (as the
// runtime does); materialised computes a visible block in full and masks afterwards.
double kernel_flops(const LayerShape& x, const RingKernelRate& kr, int64_t r, int64_t j) {
  const double c = x.seq_len / x.cp;
  const double visible = block_visible_pairs(x.cp_scheme, x.seq_len, x.cp, r, j, x.causal);
  const double pairs = x.attention == AttentionImpl::materialized ? (visible > 0 ? c * c : 0.0) : visible;
  return pairs * kr.per_pair_flops;
}
double kernel_s(const LayerShape& x, const RingKernelRate& kr, int64_t r, int64_t j) {
  return kernel_flops(x, kr, r, j) / kr.forward_flops_per_s;
}
// Backward kernel time: backward_factor x the forward FLOPs at the backward kernel's rate.
double kernel_backward_s(const LayerShape& x, const RingKernelRate& kr, int64_t r, int64_t j) {
  return kr.backward_factor * kernel_flops(x, kr, r, j) / kr.backward_flops_per_s;
}

}  // namespace

RingSimulation simulate_ring(const RingAttentionShape& s, const ClusterConfig& c, bool record_events) {
  const RingLayerShape shape = ring_layer_shape(s, c);
  const LayerShape& x = shape.layer;
  const RingKernelRate kr = ring_kernel_rate(x, c, shape.peak_flops_per_s);
  const int64_t P = s.cp;
  // A transfer arrives latency + bytes / bandwidth after it starts, but holds the link only for
  // bytes / bandwidth: back-to-back messages on one link (a step's K,V and the dK,dV accumulator)
  // share its bandwidth, not their latencies.
  const double kv_comm_s = P > 1 ? p2p_s(ring_forward_step_bytes(x), shape.link) : 0.0;
  const double dkv_comm_s = P > 1 ? p2p_s(ring_backward_step_bytes(x) - ring_forward_step_bytes(x), shape.link) : 0.0;
  const double kv_busy_s = P > 1 ? std::max(0.0, kv_comm_s - shape.link.latency_s) : 0.0;
  const double dkv_busy_s = P > 1 ? std::max(0.0, dkv_comm_s - shape.link.latency_s) : 0.0;

  RingSimulation out;
  out.ranks.assign(static_cast<size_t>(P), RingRankTimes{});
  Replay rp;
  rp.P = P;
  rp.record = record_events;
  rp.events = &out.events;
  auto at = [](std::vector<double>& v, int64_t i) -> double& { return v[static_cast<size_t>(i)]; };

  // ---------------- forward
  {
    std::vector<double> ready(P, 0.0), arrival(P, 0.0), next_arrival(P, 0.0), step_start(P, 0.0), link_free(P, 0.0);
    for (int64_t k = 0; k < P; ++k) {
      for (int64_t r = 0; r < P; ++r) {
        const int64_t j = rp.block_at(r, k);
        const double t0 = std::max(at(ready, r), at(arrival, r));
        const double kern = kernel_s(x, kr, r, j);
        const double merge = (k > 0 && kern > 0) ? kr.merge_forward_s : 0.0;
        rp.add(RingPhase::forward, RingActivity::kernel, r, k, j, t0, t0 + kern);
        rp.add(RingPhase::forward, RingActivity::merge, r, k, j, t0 + kern, t0 + kern + merge);
        at(step_start, r) = t0;
        at(ready, r) = t0 + kern + merge;
        out.ranks[static_cast<size_t>(r)].forward_busy_s += kern + merge;
      }
      if (k + 1 < P) {
        for (int64_t r = 0; r < P; ++r) {
          const int64_t to = rp.next(r);
          const double t0 = std::max({at(step_start, r), at(step_start, to), at(link_free, r)});
          at(link_free, r) = t0 + kv_busy_s;
          at(next_arrival, to) = t0 + kv_comm_s;
          rp.add(RingPhase::forward, RingActivity::send_kv, r, k, rp.block_at(r, k), t0, t0 + kv_comm_s);
        }
        arrival.swap(next_arrival);
      }
    }
    for (int64_t r = 0; r < P; ++r) out.ranks[static_cast<size_t>(r)].forward_finish_s = at(ready, r);
  }

  // ---------------- backward (its own time origin)
  {
    std::vector<double> ready(P, 0.0), kv_arrival(P, 0.0), kv_next(P, 0.0), acc_arrival(P, 0.0), acc_next(P, 0.0),
        step_start(P, 0.0), link_free(P, 0.0), home(P, 0.0);
    for (int64_t k = 0; k < P; ++k) {
      for (int64_t r = 0; r < P; ++r) {
        const int64_t j = rp.block_at(r, k);
        const double t0 = std::max(at(ready, r), at(kv_arrival, r));
        const double kern = kernel_backward_s(x, kr, r, j);
        rp.add(RingPhase::backward, RingActivity::kernel, r, k, j, t0, t0 + kern);
        double done = t0 + kern;
        if (k > 0) {
          // add this rank's dK,dV of block j to the accumulator arriving from r-1 (and dQ)
          const double merge = kern > 0 ? kr.merge_backward_s : 0.0;
          const double m0 = std::max(done, at(acc_arrival, r));
          rp.add(RingPhase::backward, RingActivity::merge, r, k, j, m0, m0 + merge);
          done = m0 + merge;
          out.ranks[static_cast<size_t>(r)].backward_busy_s += merge;
        }
        out.ranks[static_cast<size_t>(r)].backward_busy_s += kern;
        at(step_start, r) = t0;
        at(ready, r) = done;
      }
      for (int64_t r = 0; r < P && P > 1; ++r) {
        const int64_t to = rp.next(r);
        const int64_t j = rp.block_at(r, k);
        if (k + 1 < P) {  // K,V of block j for the next step of r+1 (posted at step start)
          const double t0 = std::max({at(step_start, r), at(step_start, to), at(link_free, r)});
          at(link_free, r) = t0 + kv_busy_s;
          at(kv_next, to) = t0 + kv_comm_s;
          rp.add(RingPhase::backward, RingActivity::send_kv, r, k, j, t0, t0 + kv_comm_s);
        }
        // the dK,dV accumulator of block j, once this rank has added to it; after the last
        // step this hop takes it home (block j = r+1 then)
        const double t0 = std::max(at(ready, r), at(link_free, r));
        at(link_free, r) = t0 + dkv_busy_s;
        at(k + 1 < P ? acc_next : home, to) = t0 + dkv_comm_s;
        rp.add(RingPhase::backward, RingActivity::send_dkv, r, k, j, t0, t0 + dkv_comm_s);
      }
      kv_arrival.swap(kv_next);
      acc_arrival.swap(acc_next);
    }
    for (int64_t r = 0; r < P; ++r)
      out.ranks[static_cast<size_t>(r)].backward_finish_s = std::max(at(ready, r), at(home, r));
  }

  // ---------------- summary
  for (const RingRankTimes& t : out.ranks) {
    out.forward_s = std::max(out.forward_s, t.forward_finish_s);
    out.backward_s = std::max(out.backward_s, t.backward_finish_s);
    out.forward_busy_max_s = std::max(out.forward_busy_max_s, t.forward_busy_s);
    out.backward_busy_max_s = std::max(out.backward_busy_max_s, t.backward_busy_s);
    out.forward_busy_mean_s += t.forward_busy_s / static_cast<double>(P);
    out.backward_busy_mean_s += t.backward_busy_s / static_cast<double>(P);
  }
  for (const RingRankTimes& t : out.ranks) {
    if (t.forward_finish_s == out.forward_s) out.forward_wait_s = out.forward_s - t.forward_busy_s;
    if (t.backward_finish_s == out.backward_s) out.backward_wait_s = out.backward_s - t.backward_busy_s;
  }
  return out;
}

// One layout for every ringplan trace (simulate, run --scope attention, run --scope step):
// pid = rank, tid 0 = compute lane, tid 1 = communication lane, with process and thread name
// metadata, so predicted and measured timelines of a plan open side by side in Perfetto.
std::string ring_trace_json(const RingSimulation& sim) {
  nlohmann::json events = nlohmann::json::array();
  const double backward_offset_us = sim.forward_s * 1e6;
  int ranks = 0;
  for (const RingEvent& e : sim.events) {
    const bool transfer = e.activity == RingActivity::send_kv || e.activity == RingActivity::send_dkv;
    const double offset = e.phase == RingPhase::forward ? 0.0 : backward_offset_us;
    ranks = std::max(ranks, static_cast<int>(e.rank) + 1);
    events.push_back({{"name", std::string(to_string(e.phase)) + " " + to_string(e.activity) + " block " +
                                   std::to_string(e.block)},
                      {"cat", to_string(e.phase)},
                      {"ph", "X"},
                      {"ts", offset + e.start_s * 1e6},
                      {"dur", (e.end_s - e.start_s) * 1e6},
                      {"pid", e.rank},
                      {"tid", transfer ? 1 : 0},
                      {"args", {{"step", e.step}, {"rank", e.rank}}}});
  }
  for (int r = 0; r < ranks; ++r) {
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", r}, {"args", {{"name", "rank " + std::to_string(r)}}}});
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", r}, {"tid", 0}, {"args", {{"name", "compute"}}}});
    events.push_back(
        {{"name", "thread_name"}, {"ph", "M"}, {"pid", r}, {"tid", 1}, {"args", {{"name", "communication"}}}});
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump();
}

RingAttentionShape ring_shape_for(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt) {
  RingAttentionShape shape;
  shape.micro_batch = opt.micro_batch;
  shape.heads_per_tp = e.model.heads / mesh.tp;
  shape.kv_heads_per_tp = e.model.kv_heads / mesh.tp;
  shape.head_dim = e.model.head_dim;
  shape.seq_len = e.training.seq_len;
  shape.cp = mesh.cp;
  shape.scheme = opt.cp_scheme;
  shape.causal = e.training.causal;
  shape.attention = opt.attention;
  shape.dtype = e.training.dtype;
  shape.tp = mesh.tp;
  return shape;
}

}  // namespace ringplan::sim
