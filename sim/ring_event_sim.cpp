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
    case RingActivity::all_gather_kv: return "all-gather K,V";
    case RingActivity::reduce_scatter_dkv: return "reduce-scatter dK,dV";
    case RingActivity::all_to_all_q: return "all-to-all Q";
    case RingActivity::all_to_all_k: return "all-to-all K";
    case RingActivity::all_to_all_v: return "all-to-all V";
    case RingActivity::all_to_all_o: return "all-to-all O";
  }
  return "?";
}
bool is_communication(RingActivity a) { return a != RingActivity::kernel && a != RingActivity::merge; }

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
// With `forward` the forward kernel's masked tiles (ClusterConfig::masked_tiles), else the
// backward's, are added to the visible pairs (flash only: ring_masked_extra is 0 otherwise).
double kernel_flops(const LayerShape& x, const RingKernelRate& kr, const MaskedTileCost& mt, int64_t r, int64_t j,
                    bool forward) {
  const double c = x.seq_len / x.cp;
  const double visible = block_visible_pairs(x.cp_scheme, x.seq_len, x.cp, r, j, x.causal);
  const double pairs = x.attention == AttentionImpl::materialized ? (visible > 0 ? c * c : 0.0)
                                                                   : visible + block_masked_extra(x, r, j, mt, forward);
  return pairs * kr.per_pair_flops;
}
double kernel_s(const LayerShape& x, const RingKernelRate& kr, const MaskedTileCost& mt, int64_t r, int64_t j) {
  return kernel_flops(x, kr, mt, r, j, true) / kr.forward_flops_per_s;
}
// Backward kernel time: backward_factor x the forward FLOPs at the backward kernel's rate.
double kernel_backward_s(const LayerShape& x, const RingKernelRate& kr, const MaskedTileCost& mt, int64_t r,
                         int64_t j) {
  return kr.backward_factor * kernel_flops(x, kr, mt, r, j, false) / kr.backward_flops_per_s;
}

// The ring of P = x.cp ranks on `link` (forward and backward, events if recorded); the
// summary fields are left to summarize().
RingSimulation replay_ring(const LayerShape& x, const RingKernelRate& kr, const MaskedTileCost& mt, const LinkProfile& link,
                           bool record_events) {
  const int64_t P = static_cast<int64_t>(x.cp);
  // A transfer arrives latency + bytes / bandwidth after it starts, but holds the link only for
  // bytes / bandwidth: back-to-back messages on one link (a step's K,V and the dK,dV accumulator)
  // share its bandwidth, not their latencies.
  const double kv_comm_s = P > 1 ? p2p_s(ring_forward_step_bytes(x), link) : 0.0;
  const double dkv_comm_s = P > 1 ? p2p_s(ring_backward_step_bytes(x) - ring_forward_step_bytes(x), link) : 0.0;
  const double kv_busy_s = P > 1 ? std::max(0.0, kv_comm_s - link.latency_s) : 0.0;
  const double dkv_busy_s = P > 1 ? std::max(0.0, dkv_comm_s - link.latency_s) : 0.0;

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
        const double kern = kernel_s(x, kr, mt, r, j);
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
        const double kern = kernel_backward_s(x, kr, mt, r, j);
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
  return out;
}

// Makespans, busy max / mean and the slowest-finishing rank's wait, from the per-rank times.
void summarize(RingSimulation& out) {
  const double P = static_cast<double>(out.ranks.size());
  for (const RingRankTimes& t : out.ranks) {
    out.forward_s = std::max(out.forward_s, t.forward_finish_s);
    out.backward_s = std::max(out.backward_s, t.backward_finish_s);
    out.forward_busy_max_s = std::max(out.forward_busy_max_s, t.forward_busy_s);
    out.backward_busy_max_s = std::max(out.backward_busy_max_s, t.backward_busy_s);
    out.forward_busy_mean_s += t.forward_busy_s / P;
    out.backward_busy_mean_s += t.backward_busy_s / P;
  }
  for (const RingRankTimes& t : out.ranks) {
    if (t.forward_finish_s == out.forward_s) out.forward_wait_s = out.forward_s - t.forward_busy_s;
    if (t.backward_finish_s == out.backward_s) out.backward_wait_s = out.backward_s - t.backward_busy_s;
  }
}

// One pass (forward or backward) of a method whose collectives and kernels do not overlap: per
// rank a ready time that each stage advances. A collective runs in groups of `group`
// consecutive ranks and starts at the group's latest ready time (everyone must post it).
class PassReplay {
 public:
  PassReplay(RingSimulation& out, RingPhase phase, int64_t group, bool record)
      : out_(out), phase_(phase), group_(group), record_(record), ready_(out.ranks.size(), 0.0) {}

  void collective(RingActivity a, double duration_s) {
    const size_t n = ready_.size(), g = static_cast<size_t>(group_);
    for (size_t first = 0; first < n; first += g) {
      const double t0 = *std::max_element(ready_.begin() + first, ready_.begin() + first + g);
      for (size_t r = first; r < first + g; ++r) {
        add(a, static_cast<int64_t>(r), 0, -1, t0, t0 + duration_s);
        ready_[r] = t0 + duration_s;
      }
    }
  }
  void kernel(size_t r, double duration_s) {
    add(RingActivity::kernel, static_cast<int64_t>(r), 0, -1, ready_[r], ready_[r] + duration_s);
    ready_[r] += duration_s;
    busy(r) += duration_s;
  }
  // The ring across groups: CP rank r runs ring position r / group of `ring` (its own phase
  // replay, origin 0) from its ready time on; the events keep the ring's step and block.
  void ring(const RingSimulation& ring) {
    for (size_t r = 0; r < ready_.size(); ++r) {
      const size_t pos = r / static_cast<size_t>(group_);
      const RingRankTimes& t = ring.ranks[pos];
      for (const RingEvent& e : ring.events)
        if (e.phase == phase_ && e.rank == static_cast<int64_t>(pos))
          add(e.activity, static_cast<int64_t>(r), e.step, e.block, ready_[r] + e.start_s, ready_[r] + e.end_s);
      const bool fw = phase_ == RingPhase::forward;
      busy(r) += fw ? t.forward_busy_s : t.backward_busy_s;
      ready_[r] += fw ? t.forward_finish_s : t.backward_finish_s;
    }
  }
  void finish() {
    for (size_t r = 0; r < ready_.size(); ++r)
      (phase_ == RingPhase::forward ? out_.ranks[r].forward_finish_s : out_.ranks[r].backward_finish_s) = ready_[r];
  }

 private:
  double& busy(size_t r) {
    return phase_ == RingPhase::forward ? out_.ranks[r].forward_busy_s : out_.ranks[r].backward_busy_s;
  }
  void add(RingActivity a, int64_t rank, int64_t step, int64_t block, double t0, double t1) {
    if (record_ && t1 > t0) out_.events.push_back({phase_, a, rank, step, block, t0, t1});
  }
  RingSimulation& out_;
  RingPhase phase_;
  int64_t group_;
  bool record_;
  std::vector<double> ready_;
};

RingSimulation simulate_allgather(const RingLayerShape& shape, const ClusterConfig& c, bool record) {
  const LayerShape& x = shape.layer;
  const int64_t P = static_cast<int64_t>(x.cp);
  const AllGatherCollectives coll = allgather_collectives(x, c, shape.cp_per_node, shape.slowdown);
  const double per_pair = ring_kernel_rate(x, c, shape.peak_flops_per_s).per_pair_flops;
  RingSimulation out;
  out.comm = CpComm::allgather;
  out.ranks.assign(static_cast<size_t>(P), RingRankTimes{});
  // Rank r's one call: its queries against every key it sees (the scheme's per-rank imbalance).
  // Its masked tiles: the ring's squares of that rank, all in its one call.
  const double mask_fw = rank_masked_flops(x, c.masked_tiles, true);
  const double mask_bw = rank_masked_flops(x, c.masked_tiles, false);
  std::vector<OneCallKernel> call;
  for (int64_t r = 0; r < P; ++r)
    call.push_back(one_call_kernel(
        per_pair * rank_visible_pairs(x.cp_scheme, x.seq_len, x.cp, static_cast<double>(r), x.causal), c,
        x.flash_kernel, shape.peak_flops_per_s, mask_fw, mask_bw));
  const double ag = P > 1 ? coll.all_gather_s : 0.0, rs = P > 1 ? coll.reduce_scatter_s : 0.0;
  PassReplay fw(out, RingPhase::forward, P, record);
  fw.collective(RingActivity::all_gather_kv, ag);
  for (size_t r = 0; r < call.size(); ++r) fw.kernel(r, call[r].forward_s);
  fw.finish();
  PassReplay bw(out, RingPhase::backward, P, record);
  bw.collective(RingActivity::all_gather_kv, ag);  // the gathered K,V are not kept from the forward
  for (size_t r = 0; r < call.size(); ++r) bw.kernel(r, call[r].backward_s);
  bw.collective(RingActivity::reduce_scatter_dkv, rs);
  bw.finish();
  return out;
}

// The all-to-alls of one pass of all-to-all CP (group = CP) or of hybrid's groups (group = A)
// around `middle`, the pass's compute: forward Q, K, V in and O out; backward dO in and dQ, dK,
// dV out (2 query-head and 2 KV-head tensors per pass, as the closed forms count them).
template <class Middle>
void alltoall_pass(PassReplay& pass, RingPhase phase, const AllToAllCollectives& a2a, Middle middle) {
  if (phase == RingPhase::forward) {
    pass.collective(RingActivity::all_to_all_q, a2a.q_s);
    pass.collective(RingActivity::all_to_all_k, a2a.kv_s);
    pass.collective(RingActivity::all_to_all_v, a2a.kv_s);
    middle();
    pass.collective(RingActivity::all_to_all_o, a2a.q_s);
  } else {
    pass.collective(RingActivity::all_to_all_o, a2a.q_s);
    middle();
    pass.collective(RingActivity::all_to_all_q, a2a.q_s);
    pass.collective(RingActivity::all_to_all_k, a2a.kv_s);
    pass.collective(RingActivity::all_to_all_v, a2a.kv_s);
  }
  pass.finish();
}

RingSimulation simulate_alltoall(const RingLayerShape& shape, const ClusterConfig& c, bool record) {
  const LayerShape& x = shape.layer;
  const int64_t P = static_cast<int64_t>(x.cp);
  const bool inter = shape.inter_node && P > 1;
  const AllToAllCollectives a2a = P > 1 ? alltoall_collectives(x, c, P, shape.link, inter) : AllToAllCollectives{};
  // Every rank: the whole sequence on 1/CP of the heads, 1/CP of the pairs (balanced).
  const OneCallKernel call =
      one_call_kernel(attention_forward_flops(x).mean_rank, c, x.flash_kernel, shape.peak_flops_per_s,
                      alltoall_masked_flops(x, c, true), alltoall_masked_flops(x, c, false));
  RingSimulation out;
  out.comm = CpComm::alltoall;
  out.ranks.assign(static_cast<size_t>(P), RingRankTimes{});
  for (RingPhase phase : {RingPhase::forward, RingPhase::backward}) {
    PassReplay pass(out, phase, P, record);
    alltoall_pass(pass, phase, a2a, [&] {
      for (size_t r = 0; r < out.ranks.size(); ++r)
        pass.kernel(r, phase == RingPhase::forward ? call.forward_s : call.backward_s);
    });
  }
  return out;
}

RingSimulation simulate_hybrid(const RingLayerShape& shape, const ClusterConfig& c, bool record) {
  const LayerShape& x = shape.layer;
  const int64_t C = static_cast<int64_t>(x.cp), A = static_cast<int64_t>(x.cp_a2a);
  // The ring across the R groups on the group's head shard, as predict_hybrid_layer's.
  const LayerShape stage = hybrid_ring_stage(x);
  const RingSimulation ring =
      replay_ring(stage, ring_kernel_rate(stage, c, shape.peak_flops_per_s), c.masked_tiles, shape.link, /*record_events=*/true);
  const AllToAllCollectives a2a =
      A > 1 ? alltoall_collectives(x, c, A, shape.a2a_link, shape.a2a_inter_node) : AllToAllCollectives{};
  RingSimulation out;
  out.comm = CpComm::hybrid;
  out.ranks.assign(static_cast<size_t>(C), RingRankTimes{});
  for (RingPhase phase : {RingPhase::forward, RingPhase::backward}) {
    PassReplay pass(out, phase, A, record);
    alltoall_pass(pass, phase, a2a, [&] { pass.ring(ring); });
  }
  return out;
}

}  // namespace

RingSimulation simulate_cp_layer(const RingAttentionShape& s, const ClusterConfig& c, bool record_events) {
  if (s.comm == CpComm::ring) return simulate_ring(s, c, record_events);
  // The closed form validates what the method accepts (flash only, heads the all-to-all splits).
  (void)predict_ring_attention(s, c);
  const RingLayerShape shape = ring_layer_shape(s, c);
  RingSimulation out = s.comm == CpComm::allgather  ? simulate_allgather(shape, c, record_events)
                       : s.comm == CpComm::alltoall ? simulate_alltoall(shape, c, record_events)
                                                    : simulate_hybrid(shape, c, record_events);
  summarize(out);
  return out;
}

RingSimulation simulate_ring(const RingAttentionShape& s, const ClusterConfig& c, bool record_events) {
  const RingLayerShape shape = ring_layer_shape(s, c);
  RingSimulation out =
      replay_ring(shape.layer, ring_kernel_rate(shape.layer, c, shape.peak_flops_per_s), c.masked_tiles, shape.link,
                  record_events);
  summarize(out);
  return out;
}

namespace {
// "forward kernel block 3", "backward all-to-all dQ", "forward kernel" (a whole-sequence call).
const char* activity_name(RingPhase p, RingActivity a) {
  if (p == RingPhase::backward) {  // the backward's all-to-alls carry the gradients
    switch (a) {
      case RingActivity::all_to_all_q: return "all-to-all dQ";
      case RingActivity::all_to_all_k: return "all-to-all dK";
      case RingActivity::all_to_all_v: return "all-to-all dV";
      case RingActivity::all_to_all_o: return "all-to-all dO";
      default: break;
    }
  }
  return to_string(a);
}
std::string event_name(const RingEvent& e) {
  std::string name = std::string(to_string(e.phase)) + " " + activity_name(e.phase, e.activity);
  if (e.block >= 0) name += " block " + std::to_string(e.block);
  return name;
}
}  // namespace

// One layout for every ringplan trace (simulate, run --scope attention, run --scope step):
// pid = rank, tid 0 = compute lane, tid 1 = communication lane, with process and thread name
// metadata, so predicted and measured timelines of a plan open side by side in Perfetto.
std::string ring_trace_json(const RingSimulation& sim) {
  nlohmann::json events = nlohmann::json::array();
  const double backward_offset_us = sim.forward_s * 1e6;
  int ranks = 0;
  for (const RingEvent& e : sim.events) {
    const double offset = e.phase == RingPhase::forward ? 0.0 : backward_offset_us;
    ranks = std::max(ranks, static_cast<int>(e.rank) + 1);
    events.push_back({{"name", event_name(e)},
                      {"cat", to_string(e.phase)},
                      {"ph", "X"},
                      {"ts", offset + e.start_s * 1e6},
                      {"dur", (e.end_s - e.start_s) * 1e6},
                      {"pid", e.rank},
                      {"tid", is_communication(e.activity) ? 1 : 0},
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
  shape.flash_kernel = e.training.flash_kernel;
  shape.dtype = e.training.dtype;
  shape.tp = mesh.tp;
  shape.comm = opt.cp_comm;
  shape.a2a_size = cp_a2a_size_of(e, mesh, opt);
  return shape;
}

}  // namespace ringplan::sim
