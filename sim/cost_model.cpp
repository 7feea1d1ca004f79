// Closed-form cost model (see cost_model.hpp). Per-layer formulas live in formulas.cpp, the
// attention ring in ring_model.cpp; this file composes them into a training step:
//
//   per micro-batch on the critical pipeline rank (its stage_layers(), + the output layer on the
//   last rank):
//     T_mb = forward + backward + recompute compute        (GEMMs, attention, memory-bound ops)
//          + CP imbalance + exposed ring comm + TP comm     (per layer)
//   step  = m * T_mb + bubble (sum of the other ranks' T_mb) / v + PP p2p + exposed DPxCP grad reduction
//          + ZeRO all-gathers + optimizer step
//
// predict() allocates nothing: doubles in, doubles out.
#include "sim/cost_model.hpp"

#include "core/documents.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <fmt/format.h>

#include "core/error.hpp"
#include "sim/formulas.hpp"
#include "sim/ring_model.hpp"

namespace ringplan::sim {

// ------------------------------------------------------------------ collectives (formulas.md)
double all_reduce_s(int64_t n, double bytes, const LinkProfile& link, const CollectiveCurve& eff) {
  if (n <= 1 || bytes <= 0) return 0.0;
  const double k = static_cast<double>(n);
  return 2.0 * (k - 1.0) * link.latency_s +
         2.0 * (k - 1.0) / k * bytes / (link.bandwidth_bytes_per_s * eff.at(bytes));
}
double reduce_scatter_s(int64_t n, double bytes, const LinkProfile& link, const CollectiveCurve& eff) {
  if (n <= 1 || bytes <= 0) return 0.0;
  const double k = static_cast<double>(n);
  return (k - 1.0) * link.latency_s + (k - 1.0) / k * bytes / (link.bandwidth_bytes_per_s * eff.at(bytes));
}
double all_gather_s(int64_t n, double bytes, const LinkProfile& link, const CollectiveCurve& eff) {
  return reduce_scatter_s(n, bytes, link, eff);
}
double all_to_all_s(int64_t n, double bytes_per_rank, const LinkProfile& link, const CollectiveCurve& eff) {
  return reduce_scatter_s(n, bytes_per_rank, link, eff);  // the same (n-1)/n traffic and n-1 latencies
}

CollectiveCurve fit_collective_curve(const std::vector<double>& bytes, const std::vector<double>& seconds,
                                     double factor, double alphas, const LinkProfile& link) {
  // 1/eff = 1/max + (half/max) * (1/bytes): linear in u = 1/bytes.
  const size_t n = std::min(bytes.size(), seconds.size());
  double su = 0, sy = 0, suu = 0, suy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double transfer = std::max(1e-12, seconds[i] - alphas * link.latency_s);
    const double eff = factor * bytes[i] / link.bandwidth_bytes_per_s / transfer;
    const double u = 1.0 / bytes[i], y = 1.0 / eff;
    su += u;
    sy += y;
    suu += u * u;
    suy += u * y;
  }
  CollectiveCurve c;
  const double den = static_cast<double>(n) * suu - su * su;
  if (n >= 2 && den > 0) {
    const double slope = (static_cast<double>(n) * suy - su * sy) / den;
    const double icpt = (sy - slope * su) / static_cast<double>(n);
    if (icpt > 0 && slope >= 0) {
      c.max_efficiency = std::min(1.0, 1.0 / icpt);
      c.half_bytes = slope / icpt;
      return c;
    }
  }
  // No rising curve fits: the efficiency is flat or falls with size (on CPUs the larger buffers
  // leave the caches). A constant then, the one with the least squared error of the log of the
  // predicted transfer times over the measured sizes (a ratio off either way counts alike): the
  // geometric mean of the measured efficiencies.
  c.half_bytes = 0;
  double log_sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const double transfer = std::max(1e-12, seconds[i] - alphas * link.latency_s);
    log_sum += std::log(factor * bytes[i] / link.bandwidth_bytes_per_s / transfer);
  }
  c.max_efficiency = n > 0 ? std::min(1.0, std::exp(log_sum / static_cast<double>(n))) : 1.0;
  return c;
}
double p2p_s(double bytes, const LinkProfile& link) {
  if (bytes <= 0) return 0.0;
  return link.latency_s + bytes / link.bandwidth_bytes_per_s;
}

LinkProfile contended(const LinkProfile& link, double slowdown) {
  LinkProfile l = link;
  if (slowdown > 1.0) l.bandwidth_bytes_per_s /= slowdown;
  return l;
}

double uplink_slowdown(int64_t size, int64_t stride, const ClusterConfig& c, UplinkTraffic traffic) {
  const int64_t G = c.gpus_per_node, L = c.switch_groups.nodes;
  if (c.switch_groups.is_flat() || size <= 1 || stride < 1 || G < 1) return 1.0;
  if (stride <= G / size && G % (stride * size) == 0) return 1.0;  // every group inside one node
  // A group's nodes: consecutive members are `stride` ranks apart, so its nodes are
  // node_stride = max(1, stride / G) nodes apart, and node_stride groups interleave in a block of
  // group_nodes x node_stride consecutive nodes (the blocks tile the nodes).
  const int64_t per_node = group_ranks_per_node(size, stride, G);
  const int64_t group_nodes = (size + per_node - 1) / per_node;
  const int64_t node_stride = std::max<int64_t>(1, stride / G);
  const int64_t block = group_nodes * node_stride;
  if (block <= L && L % block == 0) return 1.0;  // every group under one switch group
  // Segments of one group under one switch group whose ring leaves it (per rail, per direction):
  // one where the switch groups tile the blocks (the ring enters and leaves once), and where they
  // do not, two in some switch group (a group ending in it and another starting in it) once the
  // boundaries fall on three or more offsets into the block (block / gcd(L, block) >= 3). Each
  // of the node_stride interleaved groups has its own, at most L in all.
  const int64_t offsets = block / std::gcd(L, block);
  const int64_t segments = block % L == 0 ? 1 : (offsets >= 3 ? 2 : 1);
  const double crossing = static_cast<double>(std::min(L, segments * node_stride));
  const double R = c.switch_groups.oversubscription;
  if (traffic == UplinkTraffic::all_to_all) {
    if (block <= L) {
      // A group that straddles a boundary: at worst half of it on each side, each half sending
      // half of its data across, group_nodes / 4 nodes' worth of NICs per straddling group.
      return std::max(1.0, R * crossing * static_cast<double>(group_nodes) / (4.0 * static_cast<double>(L)));
    }
    // k of the group's nodes share a switch group; 1 - k / group_nodes of each member's data leaves it.
    const int64_t k = std::max<int64_t>(1, L / node_stride);
    return std::max(1.0, R * (1.0 - static_cast<double>(k) / static_cast<double>(group_nodes)));
  }
  return std::max(1.0, R * crossing / static_cast<double>(L));
}

UplinkSlowdowns uplink_slowdowns(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt) {
  const ClusterConfig& c = e.cluster;
  UplinkSlowdowns u;
  if (c.switch_groups.is_flat()) return u;
  const int64_t replicas = std::max<int64_t>(1, opt.dp_replicate);
  const int64_t n_shard = mesh.dp * mesh.cp / replicas, stage_block = mesh.tp * mesh.cp * mesh.dp;
  u.tp = uplink_slowdown(mesh.tp, 1, c, UplinkTraffic::ring);
  if (mesh.cp > 1) {
    u.cp = cp_links(mesh, opt.cp_comm, cp_a2a_size_of(e, mesh, opt), c).slowdown;
  }
  u.shard = uplink_slowdown(n_shard, mesh.tp, c, UplinkTraffic::ring);
  u.replicas = uplink_slowdown(replicas, mesh.tp * n_shard, c, UplinkTraffic::ring);
  u.pp = uplink_slowdown(mesh.pp, stage_block, c, UplinkTraffic::ring);
  u.tied_pair = mesh.pp > 1 ? uplink_slowdown(2, stage_block * (mesh.pp - 1), c, UplinkTraffic::ring) : 1.0;
  return u;
}

double group_collective_s(CollectiveKind kind, int64_t n, int64_t per_node, double bytes, const ClusterConfig& c,
                          double inter_slowdown) {
  if (n <= 1 || bytes <= 0) return 0.0;
  const LinkProfile network = contended(c.inter_node, inter_slowdown);
  auto flat = [&](const LinkProfile& link, const CollectiveEfficiency& ce) {
    switch (kind) {
      case CollectiveKind::all_reduce: return all_reduce_s(n, bytes, link, ce.all_reduce);
      case CollectiveKind::reduce_scatter: return reduce_scatter_s(n, bytes, link, ce.reduce_scatter);
      case CollectiveKind::all_gather: return all_gather_s(n, bytes, link, ce.all_gather);
    }
    return 0.0;
  };
  if (per_node >= n) return flat(c.intra_node, c.collectives);
  const CollectiveEfficiency& inter = c.collectives_on(true);
  if (per_node <= 1 || n % per_node != 0) return flat(network, inter);
  const int64_t nodes = n / per_node;
  const double shard = bytes / static_cast<double>(per_node);
  if (kind == CollectiveKind::all_reduce) {
    const double rs_in = reduce_scatter_s(per_node, bytes, c.intra_node, c.collectives.reduce_scatter);
    const double ag_in = all_gather_s(per_node, bytes, c.intra_node, c.collectives.all_gather);
    return rs_in + all_reduce_s(nodes, shard, network, inter.all_reduce) + ag_in;
  }
  // Reduce-scatter and all-gather across nodes: the hierarchical bandwidth terms, and the latency
  // of the one ring NCCL runs them on (its only algorithm for these two collectives up to 2.22):
  // n - 1 steps, of which nodes - 1 cross the network and the other n - nodes go over NVLink
  // (src/graph/tuning.cc, ncclTopoTuneModel: nsteps = nRanks - 1, nInterSteps = nNodes - 1,
  // latency += (nsteps - nInterSteps) * intraLat + nInterSteps * interLat). A two-level sum would
  // count only per_node - 1 steps inside the nodes, far fewer than the ring takes at scale.
  LinkProfile intra = c.intra_node, across = network;
  intra.latency_s = 0.0;
  across.latency_s = 0.0;
  const double ring_latency = static_cast<double>(n - nodes) * c.intra_node.latency_s +
                              static_cast<double>(nodes - 1) * c.inter_node.latency_s;
  if (kind == CollectiveKind::reduce_scatter)
    return reduce_scatter_s(per_node, bytes, intra, c.collectives.reduce_scatter) +
           reduce_scatter_s(nodes, shard, across, inter.reduce_scatter) + ring_latency;
  return all_gather_s(nodes, shard, across, inter.all_gather) + all_gather_s(per_node, bytes, intra, c.collectives.all_gather) +
         ring_latency;
}

double overlapped_exposed_s(double comm_s, double compute_s, double sm_share) {
  if (comm_s <= 0) return 0.0;
  return std::max(comm_s - compute_s, sm_share * comm_s);
}

int64_t group_ranks_per_node(int64_t size, int64_t stride, int64_t gpus_per_node) {
  if (size <= 1 || stride < 1 || gpus_per_node < 1) return 1;
  const int64_t extent = stride * size;
  if (extent <= gpus_per_node) return gpus_per_node % extent == 0 ? size : 1;  // blocks tile a node, or straddle
  if (stride >= gpus_per_node || gpus_per_node % stride != 0) return 1;
  if ((stride * size) % gpus_per_node != 0) return 1;
  return gpus_per_node / stride;
}

// ------------------------------------------------------------------ mesh groups
namespace {
// Ranks fill nodes of gpus_per_node in order (rank order TP, CP, DP, PP). A group of `size`
// ranks lies, strided, inside an aligned block of `extent` consecutive ranks (its size times
// the sizes of the dimensions inside it). Every group stays in one node iff no block straddles
// a node boundary: the whole world fits in one node, or the block fits in a node and tiles it
// (extent divides gpus_per_node; TP 3 on 8-GPU nodes puts ranks 6, 7, 8 in one group). With
// size >= 2, a straddling block always holds a group with ranks on both sides of the boundary,
// and the groups of a dimension run their collectives in lockstep, so that one group sets the
// link of the whole dimension.
bool blocks_within_node(int64_t size, int64_t extent, int64_t world, int64_t gpus_per_node) {
  if (size <= 1) return true;  // a group of one sends nothing
  if (world <= gpus_per_node) return true;
  return extent <= gpus_per_node && gpus_per_node % extent == 0;  // extent >= 1: no % by 0
}
}  // namespace

bool group_within_node(const Mesh& mesh, MeshDim dim, int64_t gpus_per_node) {
  int64_t size = 1, extent = 1;
  switch (dim) {
    case MeshDim::tp: size = mesh.tp; extent = mesh.tp; break;
    case MeshDim::cp: size = mesh.cp; extent = mesh.tp * mesh.cp; break;
    case MeshDim::dp: size = mesh.dp; extent = mesh.tp * mesh.cp * mesh.dp; break;
    case MeshDim::pp: size = mesh.pp; extent = mesh.world_size(); break;
  }
  return blocks_within_node(size, extent, mesh.world_size(), gpus_per_node);
}

bool cp_a2a_within_node(const Mesh& mesh, int64_t a2a_size, int64_t gpus_per_node) {
  if (a2a_size <= 1) return true;
  if (mesh.tp < 1 || a2a_size > gpus_per_node) return false;  // bounds first: tp x a2a_size below cannot overflow
  return blocks_within_node(a2a_size, mesh.tp * a2a_size, mesh.world_size(), gpus_per_node);
}

namespace {
bool a2a_splits_heads(const ModelConfig& m, const Mesh& mesh, int64_t a) {
  if (mesh.tp < 1 || m.heads % mesh.tp != 0 || m.kv_heads % mesh.tp != 0) return a == 1;
  const int64_t hq = m.heads / mesh.tp, hkv = m.kv_heads / mesh.tp;
  return hkv > 0 && hq % a == 0 && (hkv % a == 0 || a % hkv == 0);
}
}  // namespace

int64_t default_cp_a2a_size(const ModelConfig& m, const Mesh& mesh, int64_t gpus_per_node) {
  for (int64_t a = mesh.cp; a > 1; --a)
    if (mesh.cp % a == 0 && a2a_splits_heads(m, mesh, a) && cp_a2a_within_node(mesh, a, gpus_per_node)) return a;
  return 1;
}

int64_t cp_a2a_size_of(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt) {
  if (opt.cp_comm != CpComm::hybrid || mesh.cp <= 1) return 1;
  return opt.cp_a2a_size > 0 ? opt.cp_a2a_size : default_cp_a2a_size(e.model, mesh, e.cluster.gpus_per_node);
}

void prepare_document_work(Experiment& e, const std::vector<int64_t>& cp_sizes) {
  if (!e.training.documents) return;
  DocumentSpec& d = *e.training.documents;
  const bool causal = e.training.causal;
  d.work.clear();
  for (int64_t cp : cp_sizes)
    for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
      const int64_t multiple = scheme == CpScheme::zigzag ? 2 * cp : cp;
      if (cp < 1 || e.training.seq_len % multiple != 0) continue;  // check_layout refuses these
      bool seen = false;
      for (const DocumentSpec::Work& w : d.work) seen = seen || (w.cp == cp && w.scheme == scheme && w.causal == causal);
      if (seen) continue;
      const DocumentAttentionWork w = document_attention_work(d.lengths, scheme, cp, causal);
      d.work.push_back({cp, scheme, causal, w.pair_fraction, w.imbalance});
    }
}

double cp_imbalance(CpScheme scheme, int64_t seq_len, int64_t cp, bool causal) {
  const RingPairs p = ring_pairs(scheme, static_cast<double>(seq_len), static_cast<double>(cp), causal);
  return p.mean_rank_pairs > 0 ? p.max_rank_pairs / p.mean_rank_pairs : 1.0;
}

// ------------------------------------------------------------------ term tables
std::array<Term, 9> memory_terms(const MemoryBreakdown& m) {
  return {{{"weights_bytes", m.weights_bytes},
           {"gradients_bytes", m.gradients_bytes},
           {"optimizer_bytes", m.optimizer_bytes},
           {"activations_bytes", m.activations_bytes},
           {"attention_scores_bytes", m.attention_scores_bytes},
           {"ring_buffers_bytes", m.ring_buffers_bytes},
           {"logits_bytes", m.logits_bytes},
           {"reserved_bytes", m.reserved_bytes},
           {"peak_bytes", m.peak_bytes}}};
}

std::array<Term, 11> time_terms(const TimeBreakdown& t) {
  return {{{"forward_compute_s", t.forward_compute_s},
           {"backward_compute_s", t.backward_compute_s},
           {"recompute_s", t.recompute_s},
           {"cp_imbalance_s", t.cp_imbalance_s},
           {"ring_comm_exposed_s", t.ring_comm_exposed_s},
           {"tp_comm_s", t.tp_comm_s},
           {"dp_comm_exposed_s", t.dp_comm_exposed_s},
           {"zero_comm_exposed_s", t.zero_comm_exposed_s},
           {"pp_comm_s", t.pp_comm_s},
           {"pp_bubble_s", t.pp_bubble_s},
           {"optimizer_s", t.optimizer_s}}};
}

// ------------------------------------------------------------------ layout checks
namespace {
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

std::string check_layout(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt, int64_t gpus) {
  const ModelConfig& m = e.model;
  const TrainingConfig& t = e.training;
  if (mesh.dp < 1 || mesh.tp < 1 || mesh.cp < 1 || mesh.pp < 1)
    return "mesh sizes must be >= 1, got DP " + str(mesh.dp) + " TP " + str(mesh.tp) + " CP " + str(mesh.cp) +
           " PP " + str(mesh.pp);
  // FP8 GEMMs need FP8 tensor cores (a profile given in place of the case's own may lack them).
  if (t.fp8 && !(e.cluster.peak_flops_per_s_fp8 > 0))
    return "training.fp8 needs a cluster with an FP8 peak (peak_tflops.fp8); '" + e.cluster.name + "' has none";
  // A named flash kernel runs on its own curve (a profile given in place of the case's own may lack it).
  if (opt.attention == AttentionImpl::flash && !e.cluster.has_flash_curve(t.flash_kernel))
    return std::string("training.flash_kernel ") + to_string(t.flash_kernel) + " needs a cluster with efficiency." +
           flash_curve_key(t.flash_kernel) + "; '" + e.cluster.name + "' has none";
  if (mesh.world_size() != gpus)
    return "world size " + str(mesh.world_size()) + " != " + str(gpus) + " GPUs (DP " + str(mesh.dp) + " x TP " +
           str(mesh.tp) + " x CP " + str(mesh.cp) + " x PP " + str(mesh.pp) + ")";
  // A TP group larger than a node, or one that does not tile it, is valid: it runs (slowly),
  // its collectives on the inter-node link (group_within_node). SearchSpace::max_tp caps it.
  if (m.heads % mesh.tp != 0) return "heads " + str(m.heads) + " not divisible by TP " + str(mesh.tp);
  if (m.kv_heads % mesh.tp != 0) return "kv_heads " + str(m.kv_heads) + " not divisible by TP " + str(mesh.tp);
  if (m.ffn_hidden % mesh.tp != 0) return "ffn_hidden " + str(m.ffn_hidden) + " not divisible by TP " + str(mesh.tp);
  if (mesh.pp > m.layers) return "PP " + str(mesh.pp) + " > layers " + str(m.layers);
  if (opt.micro_batch < 1) return "micro_batch must be >= 1, got " + str(opt.micro_batch);
  if (opt.zero_stage < 0 || opt.zero_stage > 3) return "zero_stage must be 0..3, got " + std::to_string(opt.zero_stage);
  if (opt.interleave < 1) return "interleave must be >= 1, got " + str(opt.interleave);
  // Hybrid sharding (ParallelOptions::dp_replicate): R replicas of shard groups of (DP / R) x CP.
  if (opt.dp_replicate < 1) return "dp_replicate must be >= 1, got " + str(opt.dp_replicate);
  if (opt.dp_replicate > 1 && mesh.dp % opt.dp_replicate != 0)
    return "dp_replicate " + str(opt.dp_replicate) + " does not divide DP " + str(mesh.dp);
  if (opt.dp_replicate > 1 && opt.zero_stage == 0)
    return "dp_replicate " + str(opt.dp_replicate) + " needs zero_stage >= 1 (ZeRO-0 shards nothing to replicate)";
  if (std::string why = pipeline_split_problem(m.layers, mesh.pp, opt); !why.empty()) return why;
  // One CP rank holds the whole sequence whatever the scheme: zigzag's 2*CP chunks only with CP > 1.
  if (opt.cp_scheme == CpScheme::zigzag && mesh.cp > 1) {
    if (t.seq_len % (2 * mesh.cp) != 0)
      return "seq_len " + str(t.seq_len) + " not divisible by 2·CP = " + str(2 * mesh.cp) + " (zigzag)";
  } else if (t.seq_len % mesh.cp != 0) {
    return "seq_len " + str(t.seq_len) + " not divisible by CP = " + str(mesh.cp) + " (" + to_string(opt.cp_scheme) + ")";
  }
  // Packed documents: the loader guarantees lengths that fill the sequence; experiments built in
  // code are checked here (no allocation unless there is a message).
  if (t.documents) {
    if (std::string why = check_document_lengths(t.documents->lengths, t.seq_len); !why.empty())
      return "training.documents: " + why;
  }
  // All-gather CP runs one flash kernel over the whole gathered sequence (runtime and
  // Megatron/TE alike); a materialised score matrix of L/CP x L per head is what it avoids.
  if (opt.cp_comm == CpComm::allgather && mesh.cp > 1 && opt.attention != AttentionImpl::flash)
    return std::string("cp_comm allgather needs attention flash, got ") + to_string(opt.attention);
  // All-to-all CP splits each TP rank's heads over CP (sim/ring_model.hpp): CP must divide the
  // query heads; KV heads are split too, or replicated when CP is a multiple of them.
  if (opt.cp_comm == CpComm::alltoall && mesh.cp > 1) {
    if (opt.attention != AttentionImpl::flash)
      return std::string("cp_comm alltoall needs attention flash, got ") + to_string(opt.attention);
    const int64_t hq = m.heads / mesh.tp, hkv = m.kv_heads / mesh.tp;
    if (hq % mesh.cp != 0)
      return "cp_comm alltoall needs CP " + str(mesh.cp) + " to divide the query heads per TP rank (heads " +
             str(m.heads) + " / TP " + str(mesh.tp) + " = " + str(hq) + ")";
    if (hkv % mesh.cp != 0 && mesh.cp % hkv != 0)
      return "cp_comm alltoall needs the KV heads per TP rank (kv_heads " + str(m.kv_heads) + " / TP " + str(mesh.tp) +
             " = " + str(hkv) + ") to divide by CP " + str(mesh.cp) + " or divide it (replicated KV heads)";
  }
  // Hierarchical CP: all-to-all over groups of A CP ranks (as alltoall with CP = A), ring across
  // the CP/A groups (sim/ring_model.hpp).
  if (opt.cp_comm == CpComm::hybrid && mesh.cp > 1) {
    if (opt.attention != AttentionImpl::flash)
      return std::string("cp_comm hybrid needs attention flash, got ") + to_string(opt.attention);
    if (opt.cp_a2a_size < 0) return "cp_a2a_size must be >= 1 (or 0: the default), got " + str(opt.cp_a2a_size);
    const int64_t a = cp_a2a_size_of(e, mesh, opt);
    if (mesh.cp % a != 0)
      return "cp_comm hybrid needs cp_a2a_size " + str(a) + " to divide CP " + str(mesh.cp);
    const int64_t hq = m.heads / mesh.tp, hkv = m.kv_heads / mesh.tp;
    if (hq % a != 0)
      return "cp_comm hybrid needs cp_a2a_size " + str(a) + " to divide the query heads per TP rank (heads " +
             str(m.heads) + " / TP " + str(mesh.tp) + " = " + str(hq) + ")";
    if (hkv % a != 0 && a % hkv != 0)
      return "cp_comm hybrid needs the KV heads per TP rank (kv_heads " + str(m.kv_heads) + " / TP " + str(mesh.tp) +
             " = " + str(hkv) + ") to divide by cp_a2a_size " + str(a) + " or divide it (replicated KV heads)";
  }
  // Transformer Engine's userbuffer overlap splits the sequence-parallel all-gathers and
  // reduce-scatters; Megatron-LM refuses --tp-comm-overlap without --sequence-parallel.
  if (opt.tp_overlap == TpOverlap::pipelined && mesh.tp > 1 && !opt.sequence_parallel)
    return "tp_overlap pipelined needs sequence_parallel true (Transformer Engine overlaps the sequence-parallel "
           "all-gathers and reduce-scatters); use tp_overlap backward or none without it";
  const int64_t per_step = mesh.dp * opt.micro_batch;
  if (t.global_batch_sequences % per_step != 0)
    return "global batch " + str(t.global_batch_sequences) + " not divisible by DP×micro_batch = " + str(per_step);
  if (opt.interleave > 1) {
    // Megatron's interleaved 1F1B: v model chunks per stage (pipeline_split_problem checks
    // their layers), and the micro-batches enter in groups of PP.
    if (mesh.pp == 1) return "interleave " + str(opt.interleave) + " needs PP > 1";
    const int64_t micro_batches = t.global_batch_sequences / per_step;
    if (micro_batches % mesh.pp != 0)
      return "interleave " + str(opt.interleave) + " needs micro-batches " + str(micro_batches) +
             " divisible by PP " + str(mesh.pp);
  }
  return {};
}

// ------------------------------------------------------------------ prediction
namespace {

// Time of one GEMM of `flops` reducing over `k` at the cluster's efficiency for that shape.
double gemm_s(double flops, double k, const ClusterConfig& c, double peak) {
  return flops / (peak * c.matmul.at_gemm(flops, k));
}
// One backward GEMM (a data or a weight gradient, reducing over `k`) of a forward GEMM of `flops`.
double gemm_backward_s(double flops, double k, const ClusterConfig& c, double peak) {
  return flops / (peak * c.matmul_backward_curve().at_gemm(flops, k));
}

// The rate the transformer blocks' linear layers run at: the training dtype's peak and the matmul
// curve, or with training.fp8 the FP8 peak and the FP8 curve (ClusterConfig::matmul_fp8).
// The backward's data- and weight-gradient GEMMs (the forward's shapes, 2x its FLOPs) run on
// matmul_backward where the profile measured it (= matmul otherwise); FP8 on the FP8 curve.
struct BlockGemmRate {
  double peak = 0;
  const EfficiencyCurve* curve = nullptr;
  bool fp8 = false;
  const EfficiencyCurve* backward_curve = nullptr;
  // A forward GEMM of `flops` reducing over `k`.
  double seconds(double flops, double k) const { return flops / (peak * curve->at_gemm(flops, k)); }
  // One backward GEMM of the forward's `flops` (a data or a weight gradient) reducing over `k`.
  double backward_seconds(double flops, double k) const { return flops / (peak * backward_curve->at_gemm(flops, k)); }
};

BlockGemmRate block_gemm_rate(const ClusterConfig& c, const TrainingConfig& t) {
  if (!t.fp8) return {c.peak_flops_per_s(t.dtype), &c.matmul, false, &c.matmul_backward_curve()};
  if (c.peak_flops_per_s_fp8 <= 0)
    throw bad_input(fmt::format("training.fp8 is true but cluster '{}' has no peak_tflops.fp8; use a cluster "
                                "with FP8 tensor cores or set training.fp8: false",
                                c.name));
  return {c.peak_flops_per_s_fp8, &c.matmul_fp8_curve(), true, &c.matmul_fp8_curve()};
}

// Bytes the FP8 casts of one layer move per micro-batch (FP8 only; 0 otherwise). Each FP8 GEMM
// input is quantised from the 16-bit activation: Transformer Engine's fused cast-transpose reads
// 2 bytes and writes the FP8 copy and its transpose (1 + 1 bytes) per element, the transpose
// being the operand of the weight-gradient GEMM. Forward: the inputs X of QKV, attention-out,
// MLP-up and MLP-down (M x K each); backward: their output gradients dY (M x N each). torchao's
// casts of these inputs cost the same (its roofline: the amax fused with the op before, then read
// 2 and write both layouts). Weights: Transformer Engine casts them once per step and caches them
// across micro-batches (is_first_microbatch), not counted; torchao's casts of them are
// LayerShape::fp8_weight_fwd_bytes / fp8_weight_bwd_bytes (layer_times).
struct Fp8CastBytes {
  double forward = 0, backward = 0;
};
Fp8CastBytes fp8_cast_bytes(const LayerShape& x) {
  constexpr double kBytesPerElement = 2.0 + 1.0 + 1.0;
  const double T = x.tokens(), h = x.hidden;
  const double q = x.heads * x.head_dim / x.tp, kv = x.kv_heads * x.head_dim / x.tp;
  const double f = x.ffn_hidden / x.tp, up = f * (x.gated_mlp ? 2.0 : 1.0);
  Fp8CastBytes b;
  b.forward = kBytesPerElement * T * (h + q + h + f);              // K of qkv, out, up, down
  b.backward = kBytesPerElement * T * ((q + 2.0 * kv) + h + up + h);  // N of qkv, out, up, down
  return b;
}

// Ranks of a TP group per node: the whole group inside a node, else G per node when the group
// tiles nodes (hierarchical collectives), else 1 (group_collective_s).
int64_t tp_ranks_per_node(const Mesh& mesh, const ClusterConfig& c) {
  return group_within_node(mesh, MeshDim::tp, c.gpus_per_node) ? mesh.tp
                                                               : group_ranks_per_node(mesh.tp, 1, c.gpus_per_node);
}

// One layer, one micro-batch, on one device.
struct LayerTimes {
  double linear_weights = 0;  // the block's GEMM weights on this device: forward FLOPs / (2 x tokens)
  double gemm_fwd_s = 0, gemm_bwd_s = 0;
  double wgrad_qkv_s = 0, wgrad_mlp_up_s = 0, dgrad_qkv_s = 0, dgrad_mlp_up_s = 0;
  double fwd_qkv_s = 0, fwd_out_s = 0, fwd_mlp_up_s = 0, fwd_mlp_down_s = 0;
  double elementwise_fwd_s = 0, elementwise_bwd_s = 0, attention_core_elementwise_fwd_s = 0;
  double tp_fwd_s = 0, tp_bwd_exposed_s = 0;
  // The part of tp_fwd_s that follows the block's last GEMM (fc2): the all-reduce, or the
  // reduce-scatter (with its DTensor copy; with pipelined overlap, what is left of it behind the
  // cut fc2). What an early-stopped recompute does not run again (TrainingConfig::recompute_early_stop).
  double tp_fwd_after_down_s = 0;
  RingLayerPrediction ring;
};

// `tp_slowdown`: UplinkSlowdowns::tp.
LayerTimes layer_times(const LayerShape& x, const ClusterConfig& c, double peak, const BlockGemmRate& gr,
                       const Mesh& mesh, TpOverlap overlap, double tp_slowdown) {
  LayerTimes lt;
  const LayerGemmFlops g = layer_gemm_flops(x);
  lt.linear_weights = g.total() / (2.0 * x.tokens());
  const double qkv = gr.seconds(g.qkv, g.k_qkv), out = gr.seconds(g.out, g.k_out);
  const double up = gr.seconds(g.mlp_up, g.k_mlp_up), down = gr.seconds(g.mlp_down, g.k_mlp_down);
  lt.gemm_fwd_s = qkv + out + up + down;
  // Backward: a data-gradient GEMM (reducing over the forward's N) and a weight-gradient GEMM
  // (reducing over the tokens) per forward GEMM, each of the forward's FLOPs.
  const double T = g.tokens;
  const double out_dgrad = gr.backward_seconds(g.out, g.n_out), down_dgrad = gr.backward_seconds(g.mlp_down, g.n_mlp_down);
  lt.dgrad_qkv_s = gr.backward_seconds(g.qkv, g.n_qkv);
  lt.dgrad_mlp_up_s = gr.backward_seconds(g.mlp_up, g.n_mlp_up);
  lt.wgrad_qkv_s = gr.backward_seconds(g.qkv, T);
  lt.wgrad_mlp_up_s = gr.backward_seconds(g.mlp_up, T);
  lt.gemm_bwd_s = lt.dgrad_qkv_s + lt.wgrad_qkv_s + out_dgrad + gr.backward_seconds(g.out, T) + lt.dgrad_mlp_up_s +
                  lt.wgrad_mlp_up_s + down_dgrad + gr.backward_seconds(g.mlp_down, T);
  lt.fwd_qkv_s = qkv;
  lt.fwd_out_s = out;
  lt.fwd_mlp_up_s = up;
  lt.fwd_mlp_down_s = down;

  const LayerElementwiseBytes eb = layer_elementwise_bytes(x);
  const double bw = achieved_memory_bandwidth_bytes_per_s(c);
  if (bw > 0) {
    // The attention core's passes are counted by the ring prediction (one source).
    lt.elementwise_fwd_s = (eb.forward - eb.attention_core_forward) / bw;
    lt.elementwise_bwd_s = (eb.backward - eb.attention_core_backward) / bw;
    if (gr.fp8) {
      const Fp8CastBytes cast = fp8_cast_bytes(x);
      lt.elementwise_fwd_s += cast.forward / bw;
      lt.elementwise_bwd_s += cast.backward / bw;
      // torchao's weight casts (TrainingConfig::fp8_torchao), per block weight element.
      lt.elementwise_fwd_s += lt.linear_weights * x.fp8_weight_fwd_bytes / bw;
      lt.elementwise_bwd_s += lt.linear_weights * x.fp8_weight_bwd_bytes / bw;
      // Tensors all-gathered in FP8 (LayerShape::fp8_tp_all_gather) exist in the gathered
      // row-major layout only (the cast ran on the shard, before the gather, so it could not also
      // write the transpose): each weight-gradient GEMM that takes one in the other layout copies
      // it first (torchao/float8/float8_ops.py preprocess_addmm: `b.t().contiguous().t()` for
      // the gathered QKV and fc1 inputs, `a.contiguous()` for the transposed gathered output
      // gradients of the attention output and fc2): four T x h FP8 tensors, read 1 and write 1.
      if (x.fp8_tp_all_gather) lt.elementwise_bwd_s += 4.0 * 2.0 * x.tokens() * x.hidden / bw;
    }
    // Autocast over float32 parameters: each linear layer's weight is cast to 16 bits once per
    // forward (autocast's cast cache lives for one autocast region, so every micro-batch and
    // every recompute casts again), and the cast's backward turns the 16-bit weight gradient
    // into float32: 4 + e bytes per weight element each way.
    if (x.autocast) {
      const double weight_cast = lt.linear_weights * (4.0 + x.activation_bytes) / bw;
      lt.elementwise_fwd_s += weight_cast;
      lt.elementwise_bwd_s += weight_cast;
    }
  }

  // TP collectives on the link the TP group spans; buffer = the layer's full activation.
  if (mesh.tp > 1) {
    // Inside a node: the flat ring; a TP group across nodes runs hierarchically (per node G ranks).
    const int64_t tp_per_node = tp_ranks_per_node(mesh, c);
    const double bytes = x.tokens() * x.hidden * x.activation_bytes;
    const int64_t n = mesh.tp;
    const double share = c.overlap_sm_share;
    // A collective overlapped (or not, with tp_overlap none) with the GEMM `gemm`.
    auto behind = [&](double comm, double gemm) { return overlap == TpOverlap::none ? comm : overlapped_exposed_s(comm, gemm, share); };
    if (!x.sequence_parallel) {
      // Forward: all-reduce after the output projection and after the MLP (Megatron's g).
      // Backward: all-reduce of the input gradient of QKV and fc1 (f), each overlapped with
      // that GEMM's weight-gradient computation (Megatron's async TP all-reduce), or exposed
      // (tp_overlap none). `pipelined` needs sequence parallelism (check_layout).
      const double ar = group_collective_s(CollectiveKind::all_reduce, n, tp_per_node, bytes, c, tp_slowdown);
      lt.tp_fwd_s = 2.0 * ar;
      lt.tp_fwd_after_down_s = ar;
      lt.tp_bwd_exposed_s = behind(ar, lt.wgrad_qkv_s) + behind(ar, lt.wgrad_mlp_up_s);
    } else {
      // Forward: all-gather before QKV and fc1, reduce-scatter after out-proj and fc2.
      // Backward: all-gather of the output gradients of the row-parallel GEMMs (exposed),
      // re-all-gather of the QKV/fc1 inputs where the layers kept their shard (overlapped with
      // their data-gradient GEMM; none with training.tp_impl dtensor) and
      // reduce-scatter of their input gradients (overlapped with the weight-gradient GEMM).
      // torchao's FP8 linear layers all-gather their inputs and output gradients in FP8
      // (LayerShape::fp8_tp_all_gather): 1 byte per element; the reduce-scatters stay 16-bit.
      const double ag_bytes = x.fp8_tp_all_gather ? x.tokens() * x.hidden : bytes;
      const double ag = group_collective_s(CollectiveKind::all_gather, n, tp_per_node, ag_bytes, c, tp_slowdown),
                   rs = group_collective_s(CollectiveKind::reduce_scatter, n, tp_per_node, bytes, c, tp_slowdown);
      // tp_overlap pipelined (Transformer Engine userbuffers, PyTorch's async TP): the forward
      // all-gathers overlap the GEMMs they feed (QKV, fc1), the reduce-scatters the GEMMs they
      // follow (out, fc2), and the backward's all-gathers of output gradients their data-gradient
      // GEMMs (out, fc2), by cutting each of those GEMMs into one chunk per TP rank's shard of the
      // tokens (PyTorch torch/distributed/_symmetric_memory/__init__.py
      // _pipelined_all_gather_and_consume / _pipelined_produce_and_all2all: the gathered tensor's
      // chunks, one per rank; Transformer Engine's ring-exchange all-gather likewise). So:
      //  * each cut GEMM runs as TP GEMMs of 1/TP of its rows, at that size's efficiency;
      //  * an all-gather's first chunk is the rank's own shard, so its transfers hide behind the
      //    chunks' GEMMs (at their SM share) except where they outlast them;
      //  * a reduce-scatter's chunk k is sent while chunk k + 1 computes; the last chunk's share
      //    of the reduce-scatter has no GEMM left to hide behind.
      if (overlap == TpOverlap::pipelined) {
        const double k = static_cast<double>(n);
        // The chunks cut M; each keeps its GEMM's reduction length.
        auto cut = [&](double flops, double red) { return k * gr.seconds(flops / k, red); };
        auto cut_backward = [&](double flops, double red) { return k * gr.backward_seconds(flops / k, red); };
        const double qkv_c = cut(g.qkv, g.k_qkv), out_c = cut(g.out, g.k_out), up_c = cut(g.mlp_up, g.k_mlp_up),
                     down_c = cut(g.mlp_down, g.k_mlp_down);
        const double out_dgrad_c = cut_backward(g.out, g.n_out), down_dgrad_c = cut_backward(g.mlp_down, g.n_mlp_down);
        lt.gemm_fwd_s += (qkv_c - qkv) + (out_c - out) + (up_c - up) + (down_c - down);
        lt.gemm_bwd_s += (out_dgrad_c - out_dgrad) + (down_dgrad_c - down_dgrad);
        lt.fwd_qkv_s = qkv_c;
        lt.fwd_out_s = out_c;
        lt.fwd_mlp_up_s = up_c;
        lt.fwd_mlp_down_s = down_c;
        // The chunks' partial sums are reduced on the compute side, not inside a collective
        // kernel: PyTorch's matmul-reduce-scatter copies each chunk's unreduced output to its
        // owner and sums the TP partials there (_fused_matmul_reduce_scatter_impl's final sum),
        // Transformer Engine's ring exchange adds each arriving partial to the next chunk's
        // output; either way the unreduced T x h output is read once and the rank's T/TP x h
        // written, at memory bandwidth, with no GEMM left to hide behind.
        const double reduce_s = bw > 0 ? bytes * (1.0 + 1.0 / k) / bw : 0.0;
        auto rs_behind = [&](double comm, double gemm) {
          return comm / k + overlapped_exposed_s(comm * (k - 1.0) / k, gemm * (k - 1.0) / k, share) + reduce_s;
        };
        lt.tp_fwd_s = overlapped_exposed_s(ag, qkv_c, share) + overlapped_exposed_s(ag, up_c, share) +
                      rs_behind(rs, out_c) + rs_behind(rs, down_c);
        lt.tp_fwd_after_down_s = rs_behind(rs, down_c);
        lt.tp_bwd_exposed_s = overlapped_exposed_s(ag, out_dgrad_c, share) + overlapped_exposed_s(ag, down_dgrad_c, share);
      } else {
        lt.tp_fwd_s = 2.0 * (ag + rs);
        lt.tp_fwd_after_down_s = rs;
        lt.tp_bwd_exposed_s = 2.0 * ag;
      }
      // The re-all-gathers only where the linear layers kept their shard (tp_impl megatron).
      if (!x.tp_dtensor) lt.tp_bwd_exposed_s += behind(ag, lt.dgrad_qkv_s) + behind(ag, lt.dgrad_mlp_up_s);
      // DTensor's copies through dim 0 (TrainingConfig::tp_dtensor): one read and one write of
      // the whole T x h tensor, at memory bandwidth, on the compute stream, per collective that
      // runs as a functional collective (torch.distributed._functional_collectives: cat(chunk())
      // around all_gather_into_tensor / reduce_scatter_tensor; Inductor keeps it, the split and
      // the cat being on different dims): the forward's two all-gathers and two reduce-scatters
      // (recompute repeats them with tp_fwd_s) and the backward's two all-gathers of output
      // gradients and two reduce-scatters of input gradients. Async TP (pipelined) fuses the
      // forward's four and the backward's two all-gathers with their GEMMs, which work on the
      // shards in place (torch/distributed/_symmetric_memory: the moved and flattened input
      // "doesn't need to be contiguous") and return the gathered tensor as a sequence-major view;
      // so the backward's two reduce-scatters (their input a sum of GEMM outputs, not fusable)
      // keep their copies, and the weight-gradient GEMMs that read a gathered view (the QKV and
      // MLP inputs, the output projection's and fc2's output gradients) copy it to flatten it:
      // six copies, all in the backward. What was all-gathered is copied at the all-gather's
      // bytes per element (FP8 under torchao), what is reduce-scattered at 16 bits.
      if (x.tp_dtensor && bw > 0) {
        const double copy_rs = 2.0 * bytes / bw, copy_ag = 2.0 * ag_bytes / bw;
        const bool fused = overlap == TpOverlap::pipelined;
        lt.tp_fwd_s += fused ? 0.0 : 2.0 * (copy_ag + copy_rs);
        lt.tp_fwd_after_down_s += fused ? 0.0 : copy_rs;
        lt.tp_bwd_exposed_s += fused ? 2.0 * copy_rs + 4.0 * copy_ag : 2.0 * (copy_ag + copy_rs);
      }
      // The backward's reduce-scatters of the QKV and fc1 input gradients, behind those layers'
      // weight-gradient GEMMs: Megatron issues each asynchronously before its weight-gradient
      // GEMM (and Transformer Engine's userbuffers overlap it with that GEMM). Not so under
      // DTensor (tp_impl dtensor), async TP included: the input gradient is a sum of matmul
      // outputs (wq, wk, wv; w1, w3), so PyTorch's micro-pipeline pass, which fuses a
      // reduce-scatter only with the one matmul that produces its input
      // (torch/_inductor/fx_passes/micro_pipeline_tp.py: fuse_matmul_reduce_scatter gives up when
      // _find_producer_matmul finds no mm / _scaled_mm), leaves it a plain functional
      // collective. It is issued after the matmul nodes that computed both gradients (one
      // autograd node each) and waited for by the norm's backward that consumes it, with no
      // GEMM left in between: exposed, with or without async TP.
      if (x.tp_dtensor)
        lt.tp_bwd_exposed_s += 2.0 * rs;
      else
        lt.tp_bwd_exposed_s += behind(rs, lt.wgrad_qkv_s) + behind(rs, lt.wgrad_mlp_up_s);
    }
  }

  const CpLinks cl = cp_links(mesh, mesh.cp > 1 ? x.cp_comm : CpComm::ring, static_cast<int64_t>(x.cp_a2a), c);
  if (x.cp_comm == CpComm::allgather && mesh.cp > 1) {
    lt.ring = predict_allgather_layer(x, c, peak, cl.cp_per_node, cl.inter_node, cl.slowdown);
  } else if (x.cp_comm == CpComm::alltoall && mesh.cp > 1) {
    lt.ring = predict_alltoall_layer(x, c, peak, cl.link, cl.inter_node);
  } else if (x.cp_comm == CpComm::hybrid && mesh.cp > 1) {
    lt.ring = predict_hybrid_layer(x, c, peak, cl.a2a_link, cl.a2a_inter_node, cl.link, cl.inter_node);
  } else {
    lt.ring = predict_ring_layer(x, c, peak, cl.link, cl.inter_node);
  }
  return lt;
}

// Memory of one pipeline stage at its peak (see MemoryBreakdown for which terms are live
// together: the output layer's logits and the ring buffers never are).
// `unit_params` is the largest unit ZeRO gathers or reduces at once on this device (one layer, or
// the embedding / output matrix, where this pipeline rank holds one), `two_units_params` its two
// largest units together (never more than the rank holds). With sharded gradients (ZeRO >= 2) two units' full gradients
// are live while the reduce-scatter of one overlaps the backward of the next, each with its
// reduce-scatter output (a shard-sized buffer, 1 / shard_group of the unit: a collective cannot
// add into the accumulated shard, so its result lands apart and is added after, as FSDP2's
// reduce-scatter output and this project's runtime do); with sharded
// weights (ZeRO-3) two units' gathered weights are live (the one in use and the one prefetched:
// PyTorch FSDP's default backward prefetch, and DeepSpeed ZeRO-3's prefetch bucket). ZeRO-1
// reduce-scatters its full gradient buffer in place (Megatron-LM's distributed optimizer, this
// project's runtime): no second buffer. Only when the group has more than one rank: otherwise
// nothing is sharded. `output_bytes` is what the output block stores for its backward
// (output_block_stored_bytes; the last stage, else 0), live beside the stored layers'
// activations. The logits and one layer's backward working set are summed although the output
// layer's backward frees the first before the layers' backward makes the second: the measured
// torchtitan peaks (configs/validation/torchtitan_h100_*) are matched better by the sum (the
// larger-of form predicts them 1.3-4.3 GiB lower, 1.7-6.2 points further below the measured;
// allocator blocks of the freed logits need not fit the working set's tensors).
// `gathered_bytes_per_param`: ZeRO-3's gathered units in the dtype they are gathered in
// (TrainingConfig::param_gather_dtype; the weights' otherwise).
// `autocast` (TrainingConfig::autocast): the gradients are freed between steps and allocated
// again in the first backward, and the 16-bit weight casts are released as each layer's backward
// ends, so the peak is the larger of the loss's (weights, optimizer, activations, logits) and the
// backward's end (optimizer, every gradient, one layer's working set, the stored activations of
// the other micro-batches in flight); otherwise every term is live at once. With gradient
// accumulation the later micro-batches' losses have the accumulated gradients beside them; that
// term is left out for now: added to the sum above, it puts MPT runs that trained on their cards
// over them (tests/sim/test_fit.cpp), and it needs the tensor peak (what must fit) apart from the
// allocator's reserved peak (what torchtitan reports) first.
// Under autocast the optimizer's float32 master copy is the model's parameters, which every
// forward casts from: ZeRO-1/2 shard the moments but not those (ZeroRedundancyOptimizer shards
// only optimizer state; FSDP SHARD_GRAD_OP keeps the unsharded parameters from the forward to the
// end of the backward, beside their shard), so the 4 bytes stay whole there; ZeRO-3 shards them.
MemoryBreakdown stage_memory(double params_on_device, const StateBytes& sb, int zero_stage, double shard_group,
                             double in_flight, double layers, const LayerActivationBytes& act, double ring_bytes,
                             double logits_bytes, double output_bytes, double reserved_bytes, double unit_params,
                             double two_units_params, bool autocast, double gathered_bytes_per_param,
                             bool full_recompute) {
  MemoryBreakdown m;
  const bool sharded_group = shard_group > 1.0;
  const double units_live = std::min(two_units_params, params_on_device);
  // The 16-bit weights. Under autocast with ZeRO-3 no 16-bit shard exists (the float32 shard is
  // the optimizer's master copy): each linear layer casts its gathered weight, a view of the
  // gathered flat buffer and so outside autocast's cast cache (leaf tensors only), and autograd
  // saves the cast for the layer's backward. So every layer's casts are live at the loss, unless
  // full recompute re-runs the layer inside its backward, which leaves one unit's casts at a time.
  const double own_16bit = autocast && zero_stage >= 3
                               ? (full_recompute ? std::min(unit_params, params_on_device) : params_on_device) * sb.weights
                               : params_on_device * sb.weights / (zero_stage >= 3 ? shard_group : 1.0);
  m.weights_bytes = own_16bit + (zero_stage >= 3 && sharded_group ? units_live * gathered_bytes_per_param : 0.0);
  m.gradients_bytes = params_on_device * sb.gradients / (zero_stage >= 2 ? shard_group : 1.0) +
                      (zero_stage >= 2 && sharded_group ? units_live * sb.gradients * (1.0 + 1.0 / shard_group) : 0.0);
  constexpr double kMasterBytes = 4.0;  // the float32 master copy inside StateBytes::optimizer
  if (autocast && (zero_stage == 1 || zero_stage == 2) && sharded_group)
    m.optimizer_bytes = params_on_device * (kMasterBytes + (sb.optimizer - kMasterBytes) / shard_group +
                                            (zero_stage == 2 ? kMasterBytes / shard_group : 0.0));
  else
    m.optimizer_bytes = params_on_device * sb.optimizer / (zero_stage >= 1 ? shard_group : 1.0);
  // Stored activations of every in-flight micro-batch, plus one layer's backward working set.
  m.activations_bytes = in_flight * layers * act.stored_bytes + output_bytes +
                        (act.backward_working_bytes - act.backward_working_scores_bytes);
  m.attention_scores_bytes = in_flight * layers * act.scores_bytes + act.backward_working_scores_bytes;
  m.ring_buffers_bytes = ring_bytes;
  m.logits_bytes = logits_bytes;
  m.reserved_bytes = reserved_bytes;
  const double forward_and_loss = m.weights_bytes + m.activations_bytes + m.attention_scores_bytes +
                                  std::max(m.ring_buffers_bytes, m.logits_bytes);
  if (autocast) {
    const double others_stored = std::max(0.0, in_flight - 1.0) * layers * (act.stored_bytes + act.scores_bytes);
    const double backward_end = m.gradients_bytes + act.backward_working_bytes + others_stored;
    m.peak_bytes = m.optimizer_bytes + std::max(forward_and_loss, backward_end) + m.reserved_bytes;
  } else {
    m.peak_bytes = m.gradients_bytes + m.optimizer_bytes + forward_and_loss + m.reserved_bytes;
  }
  return m;
}

}  // namespace

double pipeline_in_flight(int64_t pp, int64_t v, int64_t d, double m, bool pytorch_schedule) {
  const double P = static_cast<double>(pp), V = static_cast<double>(v), D = static_cast<double>(d);
  if (v <= 1) return std::min(P - D, m);
  if (m == P && !pytorch_schedule) return m;  // Megatron-LM: all forwards first on every rank
  const double chunks = 2.0 * (P - D - 1.0) + (V - 1.0) * P + 1.0;
  return std::min(chunks, m * V) / V;
}

Prediction predict(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt) {
  const ModelConfig& model = e.model;
  const ClusterConfig& c = e.cluster;
  const TrainingConfig& train = e.training;
  Prediction p;
  p.mesh = mesh;
  p.options = opt;
  // The layout as it runs: hybrid's default group size resolved (plan files write it).
  if (opt.cp_comm == CpComm::hybrid && mesh.cp > 1) p.options.cp_a2a_size = cp_a2a_size_of(e, mesh, opt);
  p.capacity_bytes = c.memory_bytes;

  const double peak = c.peak_flops_per_s(train.dtype);
  const LayerShape x = make_layer_shape(model, train, mesh, p.options);
  const double tp = static_cast<double>(mesh.tp);
  const double pp = static_cast<double>(mesh.pp);
  const double v = static_cast<double>(opt.interleave);
  // ZeRO's shard group: DP x CP, or with hybrid sharding (ParallelOptions::dp_replicate = R) the
  // (DP / R) x CP ranks of one replica (check_layout: R divides DP, and R > 1 only with ZeRO >= 1).
  const int64_t replicas = opt.dp_replicate;
  const double shard_group = static_cast<double>(mesh.dp * mesh.cp / replicas);
  const double vocab = static_cast<double>(model.vocab);
  const double hidden = static_cast<double>(model.hidden);
  const int64_t m_int = train.global_batch_sequences / (mesh.dp * opt.micro_batch);
  const double m = static_cast<double>(m_int);
  p.micro_batches = m_int;
  // Parameters of a pipeline rank holding `layers` layers: the first rank also holds the
  // embedding, the last the output layer and final norm (with tied embeddings and PP > 1 Megatron
  // keeps a copy of the embedding there). PP = 1: one stage holds both.
  const double emb = vocab * hidden;
  auto rank_params = [&](int64_t rank, double layers) {
    const double blocks = layers * layer_params(model);
    if (mesh.pp == 1) return blocks + emb * (model.tied_embeddings ? 1.0 : 2.0) + hidden;
    return blocks + (rank == 0 ? emb : 0.0) + (rank == mesh.pp - 1 ? emb + hidden : 0.0);
  };

  // ---------------- per layer, per micro-batch
  // What oversubscribed uplinks leave of the network to each group's traffic (1 on a
  // non-blocking network).
  const UplinkSlowdowns uplinks = uplink_slowdowns(e, mesh, opt);
  const LayerTimes lt = layer_times(x, c, peak, block_gemm_rate(c, train), mesh, opt.tp_overlap, uplinks.tp);
  const RingLayerPrediction& ring = lt.ring;
  const bool full = opt.recompute == Recompute::full;
  const bool selective_op = opt.recompute == Recompute::selective_op;
  // selective and full re-run the attention core; torchtitan's op policy saves its output.
  const bool reruns_attention = opt.recompute == Recompute::selective || full;
  const double attn_fwd = ring.forward.mean_rank_compute_s + ring.forward.elementwise_s;
  const double attn_bwd = ring.backward.mean_rank_compute_s + ring.backward.elementwise_s;
  const double layer_fwd_compute = lt.gemm_fwd_s + attn_fwd + lt.elementwise_fwd_s;
  const double layer_bwd_compute = lt.gemm_bwd_s + attn_bwd + lt.elementwise_bwd_s;
  double layer_recompute = full ? layer_fwd_compute : (reruns_attention ? attn_fwd : 0.0);
  // TP forward collectives re-run: all of them with full; with selective_op the ones whose output
  // is not saved: the all-gathers under SP (half the forward's TP traffic: an all-gather and a
  // reduce-scatter of the same activation before and after each sublayer), the all-reduces
  // without SP.
  double tp_rerun = full ? 1.0 : 0.0;
  if (selective_op) {
    const SelectiveOpRecompute so = selective_op_recompute(x);
    layer_recompute = so.qkv * lt.fwd_qkv_s + so.out * lt.fwd_out_s + so.mlp_up * lt.fwd_mlp_up_s +
                      so.mlp_down * lt.fwd_mlp_down_s + lt.elementwise_fwd_s;
    tp_rerun = x.sequence_parallel ? 0.5 : 1.0;
  }
  // An early-stopped full recompute (TrainingConfig::recompute_early_stop) ends at the block's
  // last saved tensor, fc2's input: fc2's GEMM and the TP collective after it do not run again.
  const bool early_stop = full && train.recompute_early_stop;
  if (early_stop) layer_recompute -= lt.fwd_mlp_down_s;
  const double tp_rerun_s = lt.tp_fwd_s * tp_rerun - (early_stop ? lt.tp_fwd_after_down_s : 0.0);
  const double fwd_imb = ring.forward.max_rank_compute_s - ring.forward.mean_rank_compute_s;
  const double bwd_imb = ring.backward.max_rank_compute_s - ring.backward.mean_rank_compute_s;
  const double layer_imbalance = fwd_imb * (reruns_attention ? 2.0 : 1.0) + bwd_imb;
  const double layer_ring = ring.forward.exposed_comm_s * (reruns_attention ? 2.0 : 1.0) + ring.backward.exposed_comm_s;
  const double layer_tp = lt.tp_fwd_s + tp_rerun_s + lt.tp_bwd_exposed_s;
  const double layer_total = layer_fwd_compute + layer_bwd_compute + layer_recompute + layer_imbalance + layer_ring + layer_tp;

  // Output layer + loss on the critical (last) stage: the logits GEMM forward, its data- and
  // weight-gradient GEMMs backward, cross-entropy memory traffic (about half forward, half
  // backward).
  const double logits = logits_flops(x, vocab);
  // Its data gradient reduces over the vocabulary shard, its weight gradient over the tokens.
  const double out_gemm = gemm_s(logits, hidden, c, peak);
  const double out_gemm_dgrad = gemm_backward_s(logits, vocab / x.tp, c, peak),
               out_gemm_wgrad = gemm_backward_s(logits, x.tokens(), c, peak);
  const double mem_bw = achieved_memory_bandwidth_bytes_per_s(c);
  const LossBytes loss_bytes = loss_elementwise_bytes(x, vocab, train.cross_entropy);
  const double loss_fwd_s = mem_bw > 0 ? loss_bytes.forward / mem_bw : 0.0;
  const double loss_bwd_s = mem_bw > 0 ? loss_bytes.backward / mem_bw : 0.0;
  // Autocast (TrainingConfig::autocast) casts the output layer's float32 weight to 16 bits in
  // every forward and its 16-bit gradient back to float32 in the backward, as each layer's weights
  // (layer_times).
  const double out_weight_elems = logits / (2.0 * x.tokens());
  const double out_cast_s = train.autocast && mem_bw > 0 ? out_weight_elems * (4.0 + x.activation_bytes) / mem_bw : 0.0;
  const double out_fwd = out_gemm + loss_fwd_s + out_cast_s;
  const double out_bwd = out_gemm_dgrad + out_gemm_wgrad + loss_bwd_s + out_cast_s;

  // Vocabulary-parallel embedding and output layer (Megatron's VocabParallelEmbedding and
  // vocab_parallel_cross_entropy), per micro-batch, the embedding's on the first stage and the
  // output layer's on the last:
  //   embedding forward: all-reduce of the T x h output (reduce-scatter with SP), and with SP
  //   the all-gather of its output gradient in the backward;
  //   output layer forward: with SP, all-gather of the final hidden states before the logits GEMM;
  //   cross-entropy: three all-reduces of T floats (max logit, target logit, sum of exponentials);
  //   output layer backward: all-reduce of its input gradient (reduce-scatter with SP), behind
  //   its weight-gradient GEMM unless tp_overlap is none.
  // Not repeated by recompute (the output layer is not recomputed).
  // emb_tp: the embedding's, on the first pipeline rank (without SP the all-reduce's backward is
  // the identity, Megatron's reduce_from_tensor_model_parallel_region).
  double out_tp = 0.0, emb_tp = 0.0;
  if (mesh.tp > 1) {
    const int64_t tp_per_node = tp_ranks_per_node(mesh, c);
    const double act = x.tokens() * hidden * x.activation_bytes;
    auto coll = [&](CollectiveKind k, double bytes) {
      return group_collective_s(k, mesh.tp, tp_per_node, bytes, c, uplinks.tp);
    };
    const CollectiveKind reduce = x.sequence_parallel ? CollectiveKind::reduce_scatter : CollectiveKind::all_reduce;
    const double gather = x.sequence_parallel ? coll(CollectiveKind::all_gather, act) : 0.0;
    emb_tp = coll(reduce, act) + gather;
    const double loss = 3.0 * coll(CollectiveKind::all_reduce, x.tokens() * 4.0);
    const double out_grad = coll(reduce, act);
    const double out_grad_exposed = opt.tp_overlap == TpOverlap::none
                                        ? out_grad
                                        : overlapped_exposed_s(out_grad, out_gemm_wgrad, c.overlap_sm_share);
    out_tp = gather + loss + out_grad_exposed;
  }

  // Pipeline ranks: each holds stage_layers(...) layers, the last also the output layer. A
  // micro-batch's forward + backward on rank d takes T_d; the critical rank (largest T_d, the
  // last among equals) sets the steady state and every other rank's T_d shows once in the fill
  // and drain (1F1B: makespan = sum_d T_d + (m - 1) max_d T_d; with v chunks per rank the fill
  // and drain shrink by v, Megatron's interleaved schedule).
  // Only ranks 0, 1 and PP-1 need looking at: every split gives the middle ranks 1..PP-2 at most
  // rank 1's layers (equal ones for Megatron's settings; torchtitan's extra layers go to the
  // earliest stages of each round), and rank 1 has more micro-batches in flight than any later
  // middle rank. The ranks' times sum to all layers plus the output layer.
  const double out_total = out_fwd + out_bwd + out_tp;
  const int64_t candidates[3] = {0, std::min<int64_t>(1, mesh.pp - 1), mesh.pp - 1};
  double cand_layers[3];
  for (int i = 0; i < 3; ++i) cand_layers[i] = static_cast<double>(stage_layers(model.layers, mesh.pp, opt, candidates[i]));
  int crit = 0;
  double crit_time = -1.0;
  for (int i = 0; i < 3; ++i) {
    const double td = cand_layers[i] * layer_total + (candidates[i] == mesh.pp - 1 ? out_total : 0.0) +
                      (candidates[i] == 0 ? emb_tp : 0.0);
    if (td >= crit_time) crit_time = td, crit = i;
  }
  const int64_t crit_rank = candidates[crit];
  const double sum_rank_times = static_cast<double>(model.layers) * layer_total + out_total + emb_tp;
  const double layers_stage = cand_layers[crit];
  const double crit_out = crit_rank == mesh.pp - 1 ? 1.0 : 0.0;  // does the critical rank run the output layer

  // ZeRO-3 gathers each layer's weights before its forward and its backward, prefetched one
  // layer ahead: only what exceeds the layer's own time shows.
  const double layer_params_dev = layer_params(model) / tp;
  const StateBytes sb = state_bytes_per_param(train.dtype, train.optimizer, train.fp32_grad_accumulation);
  // Bytes per parameter of the data-parallel collectives (TrainingConfig::param_gather_dtype,
  // grad_reduce_dtype): the weights' and the gradient buffer's unless the framework casts.
  const double gather_b = train.param_gather_dtype ? static_cast<double>(dtype_bytes(*train.param_gather_dtype)) : sb.weights;
  const double reduce_b = train.grad_reduce_dtype ? static_cast<double>(dtype_bytes(*train.grad_reduce_dtype)) : sb.gradients;
  // The gradient group is DP x CP (ranks of one TP index and one stage): same block rule.
  // With hybrid sharding the shard group is the first (DP / R) x CP of them (the DP index split as
  // replica x shard, the shard inner), and each shard's R replicas are (DP / R) x CP x TP apart.
  const int64_t n_shard = mesh.dp * mesh.cp / replicas;
  const bool grads_inside = blocks_within_node(n_shard, mesh.tp * n_shard, mesh.world_size(), c.gpus_per_node);
  // DP x CP ranks are TP apart: per node G/TP of them when TP divides G (hierarchical reduction).
  const int64_t grad_per_node = grads_inside ? n_shard : group_ranks_per_node(n_shard, mesh.tp, c.gpus_per_node);
  const int64_t replica_per_node =
      blocks_within_node(replicas, mesh.tp * mesh.cp * mesh.dp, mesh.world_size(), c.gpus_per_node)
          ? replicas
          : group_ranks_per_node(replicas, mesh.tp * n_shard, c.gpus_per_node);
  const double shard_slow = uplinks.shard, replica_slow = uplinks.replicas;
  // What a ZeRO all-gather of `params` parameters (`layers` layers' worth of block weights among
  // them) moves, and the cast before it. Under torchao's FP8 all-gather
  // (LayerShape::fp8_weights_gathered) the blocks' linear weights travel at 1 byte, the rest at
  // gather_b, and each rank casts its shard of them first (read 2, write 1 byte per shard
  // element) on the compute stream. (The scales' amax, once per step over the shards, 2 bytes per
  // shard element, is left out: under 0.1 % of a step. The gathered buffers' memory stays
  // counted at gather_b per parameter in stage_memory, over by at most two layers' linear
  // weights at gather_b - 1 bytes each.)
  const double fp8_gathered_weights = x.fp8_weights_gathered ? lt.linear_weights : 0.0;
  auto gather_bytes = [&](double params, double layers) {
    return params * gather_b - layers * fp8_gathered_weights * (gather_b - 1.0);
  };
  auto shard_cast_s = [&](double layers) {
    return mem_bw > 0 ? 3.0 * layers * fp8_gathered_weights / static_cast<double>(n_shard) / mem_bw : 0.0;
  };
  // zero3_backward_link: the time the backward's gathers hold the DP x CP link per micro-batch.
  double zero3_per_mb = 0.0, zero3_first = 0.0, zero3_backward_link = 0.0;
  if (opt.zero_stage >= 3 && n_shard > 1) {
    const double layer_gather_bytes = gather_bytes(layer_params_dev, 1.0);
    const double ag =
        group_collective_s(CollectiveKind::all_gather, n_shard, grad_per_node, layer_gather_bytes, c, shard_slow);
    // Two gathers per layer and micro-batch, before its forward and before its backward. Full
    // recompute runs inside the backward's gather, not a third one: PyTorch FSDP2's pre-forward
    // hook returns early while the module waits for its backward ("the pre-backward hook is
    // responsible for the unshard", torch/distributed/fsdp/_fully_shard/_fsdp_state.py), and
    // this project's runtime gathers a block once for its recompute and backward
    // (runtime/step/trainer.cpp, layer_backward).
    // The forward's gather hides behind the layer's forward, the backward's behind the rest of
    // the layer's time (recompute, backward); the backward's reduce-scatter shares that window
    // and the link (below).
    const double layer_fwd_part = layer_fwd_compute + fwd_imb + ring.forward.exposed_comm_s + lt.tp_fwd_s;
    const double layer_bwd_part = std::max(0.0, layer_total - layer_fwd_part);
    // training.fsdp per_parameter (FSDP2): each gather also copies the parameters out of the
    // all-gather buffer on the compute stream (foreach_all_gather_copy_out's
    // split_with_sizes_copy, torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py): the
    // layer's gathered bytes read and written.
    const double copy_out =
        (train.fsdp_per_parameter && mem_bw > 0 ? 2.0 * layer_gather_bytes / mem_bw : 0.0) + shard_cast_s(1.0);
    zero3_per_mb = layers_stage * (overlapped_exposed_s(ag, layer_fwd_part, c.overlap_sm_share) +
                                   overlapped_exposed_s(ag, layer_bwd_part, c.overlap_sm_share) + 2.0 * copy_out);
    zero3_first = ag;
    zero3_backward_link = layers_stage * ag;
  }

  // ---------------- the step
  TimeBreakdown& t = p.time;
  t.forward_compute_s = m * (layers_stage * layer_fwd_compute + crit_out * out_fwd);
  t.backward_compute_s = m * (layers_stage * layer_bwd_compute + crit_out * out_bwd);
  // Summing the micro-batches' gradients outside the GEMMs (TrainingConfig::grad_accumulation):
  // over the stage's parameters on this device, or over its shard where ZeRO-2/3 reduce-scatter
  // every micro-batch. Autocast's float32 .grad (g = a = 4) is always summed by autograd: 12 bytes
  // per later micro-batch.
  const GradAccumulation accumulation = train.autocast ? GradAccumulation::inplace : train.grad_accumulation;
  if (mem_bw > 0 && accumulation != GradAccumulation::fused) {
    const double g = train.autocast ? 4.0 : static_cast<double>(dtype_bytes(train.dtype));
    const double a = train.autocast || train.fp32_grad_accumulation ? 4.0 : g;
    const double params = rank_params(crit_rank, layers_stage) / tp / (opt.zero_stage >= 2 ? shard_group : 1.0);
    t.backward_compute_s += params * grad_accumulation_bytes_per_param(accumulation, g, a, m) / mem_bw;
  }
  t.recompute_s = m * layers_stage * layer_recompute;
  t.cp_imbalance_s = m * layers_stage * layer_imbalance;
  t.ring_comm_exposed_s = m * layers_stage * layer_ring;
  t.tp_comm_s = m * (layers_stage * layer_tp + crit_out * out_tp + (crit_rank == 0 ? emb_tp : 0.0));

  // Pipeline: the fill and drain run every other rank's micro-batch time once, over v (above;
  // with equal stages (PP-1)/v stage-times). Activations cross a stage boundary forward and
  // backward for every chunk of every micro-batch: each TP rank sends its own copy, split over
  // TP only with sequence parallelism (Megatron-Core's get_tensor_shapes divides the sequence by
  // TP only under sequence_parallel; this project's runtime sends its rows_local_ likewise), or
  // with training.pp_p2p scatter_gather, whose receiving stage then all-gathers the pieces over
  // TP before it can start (TrainingConfig::pp_scatter_gather).
  if (mesh.pp > 1) {
    t.pp_bubble_s = (sum_rank_times - crit_time) / v;
    const bool scattered = x.sequence_parallel || train.pp_scatter_gather;
    const double full_bytes = x.tokens() * hidden * x.activation_bytes;
    const double act_bytes = full_bytes / (scattered ? tp : 1.0);
    const double regather = train.pp_scatter_gather && !x.sequence_parallel && mesh.tp > 1
                                ? group_collective_s(CollectiveKind::all_gather, mesh.tp, tp_ranks_per_node(mesh, c),
                                                     full_bytes, c, uplinks.tp)
                                : 0.0;
    // Every stage sends at once (the schedule's steady state): a chain of PP ranks one stage
    // block apart, through the switch groups' uplinks where stages sit under different ones.
    const LinkProfile pp_link =
        group_within_node(mesh, MeshDim::pp, c.gpus_per_node) ? c.intra_node : contended(c.inter_node, uplinks.pp);
    const double hop = p2p_s(act_bytes, pp_link) + regather;
    t.pp_comm_s = 2.0 * (v * m + pp - 1.0) * hop;
    // Tied input embedding and output layer: the first and the last stage each hold a copy and
    // each computes part of its gradient, so after the backward the pair all-reduces the
    // embedding gradient (this TP rank's vocabulary slice, in the gradient buffer's dtype) before
    // the optimizer step, with nothing left to hide it behind: Megatron-LM
    // finalize_model_grads `_allreduce_word_embedding_grads` (the main_grad, after the DP
    // reduction), DeepSpeed's pipeline engine `_exec_reduce_tied_grads` ->
    // PipelineModule.allreduce_tied_weight_gradients (weight.grad, before ReduceGrads). Every
    // other rank waits for it at the next step's first forward, so it lengthens the step.
    if (model.tied_embeddings) {
      const int64_t pair_per_node = group_within_node(mesh, MeshDim::pp, c.gpus_per_node) ? 2 : 1;
      t.pp_comm_s += group_collective_s(CollectiveKind::all_reduce, 2, pair_per_node, emb / tp * sb.gradients, c,
                                        uplinks.tied_pair);
    }
  }

  // Gradient reduction over DP x CP, in per-layer buckets during a backward: it hides behind
  // that backward except the last layer's bucket. ZeRO-0/1 accumulate full gradients locally
  // and reduce once, during the last micro-batch's backward: ZeRO-0 all-reduces; ZeRO-1
  // reduce-scatters, each rank keeping the shard its optimizer updates (Megatron-LM's
  // distributed optimizer: reduce-scatter of the gradient buffer, then all-gather of the updated
  // parameters; DeepSpeed ZeRO-1 reduces each partition to its owner), half the all-reduce's
  // traffic. ZeRO-2/3 keep only their gradient shard, so every micro-batch's gradients are
  // reduce-scattered (as DeepSpeed ZeRO-2 and FSDP do under gradient accumulation): m
  // reductions, each behind its own backward.
  // The rank with the most parameters reduces and updates the most.
  double max_rank_params = 0.0, max_rank_layers = 0.0;
  for (int i = 0; i < 3; ++i) {
    const double params_i = rank_params(candidates[i], cand_layers[i]);
    if (params_i > max_rank_params) max_rank_params = params_i, max_rank_layers = cand_layers[i];
  }
  const double stage_params_dev = max_rank_params / tp;
  // Hybrid sharding (R replicas): the reduce-scatter stays inside the shard group, then each
  // rank's shard is all-reduced across its R replicas (PyTorch FSDP HYBRID_SHARD and FSDP2 on a
  // 2-D mesh: reduce-scatter, then all-reduce on the replicate group; Megatron-LM's partial
  // distributed optimizer: reduce-scatter in the instance, all-reduce across instances), both
  // behind the backward as one reduction. A shard group of one rank (R = DP, CP = 1) only
  // all-reduces.
  if (n_shard > 1 || replicas > 1) {
    const double grad_bytes = stage_params_dev * reduce_b;
    const bool sharded_grads = opt.zero_stage >= 2;
    const double in_shard =
        n_shard > 1 ? group_collective_s(opt.zero_stage >= 1 ? CollectiveKind::reduce_scatter : CollectiveKind::all_reduce,
                                         n_shard, grad_per_node, grad_bytes, c, shard_slow)
                    : 0.0;
    const double across_replicas =
        replicas > 1 ? group_collective_s(CollectiveKind::all_reduce, replicas, replica_per_node,
                                          grad_bytes / static_cast<double>(n_shard), c, replica_slow)
                     : 0.0;
    const double reduce = in_shard + across_replicas;
    // The backward the reduction hides behind: its wall time, the CP imbalance and the exposed
    // ring and TP communication included (the reduction overlaps time, not only kernels), less
    // the time ZeRO-3's backward gathers hold the same link (one collective at a time on it:
    // FSDP issues both on one process group), and less the CP exchange's own transfers when
    // the CP group crosses nodes as the gradient group does (both on the node's network link):
    // the backward covers them together, not each in full. So a slower kernel that hides more
    // of the ring cannot also widen the window by its whole slowdown.
    const RingPhasePrediction& rb = ring.backward;
    const double cp_link_s =
        mesh.cp > 1 && !grads_inside && !group_within_node(mesh, MeshDim::cp, c.gpus_per_node)
            ? (opt.cp_comm == CpComm::ring || opt.cp_comm == CpComm::hybrid
                   ? static_cast<double>(rb.transfers) * rb.step_comm_s + rb.unhidden_comm_s
                   : rb.unhidden_comm_s)
            : 0.0;
    const double backward_window = std::max(
        0.0, layers_stage * (layer_bwd_compute + bwd_imb + rb.exposed_comm_s + lt.tp_bwd_exposed_s - cp_link_s) -
                 zero3_backward_link);
    // The last layer's bucket has no backward left to hide behind; the others overlap the window
    // and take their SM share of it (overlapped_exposed_s), or show where they outlast it.
    const double last_bucket = reduce / std::max(layers_stage, 1.0);
    t.dp_comm_exposed_s =
        (sharded_grads ? m : 1.0) * std::max(last_bucket + c.overlap_sm_share * (reduce - last_bucket), reduce - backward_window);
    // ZeRO-1/2: updated 16-bit weights are all-gathered after the optimizer step, exposed; with
    // overlap_param_gather (Megatron-LM --overlap-param-gather) bucket by bucket behind the next
    // step's first forward: the first layer's bucket is waited for in full, each later one is
    // gathered while the layer before it runs (a forward pre-hook waits for a bucket and
    // dispatches the next, megatron/core/distributed/param_and_grad_buffer.py finish_param_sync),
    // taking its SM share of that layer or showing where it outlasts it.
    if ((opt.zero_stage == 1 || opt.zero_stage == 2) && n_shard > 1) {
      const double ag = group_collective_s(CollectiveKind::all_gather, n_shard, grad_per_node,
                                           gather_bytes(stage_params_dev, max_rank_layers), c, shard_slow) +
                        shard_cast_s(max_rank_layers);
      if (!opt.overlap_param_gather) {
        t.zero_comm_exposed_s = ag;
      } else {
        const double buckets = std::max(layers_stage, 1.0);
        const double bucket = ag / buckets;
        t.zero_comm_exposed_s = bucket + (buckets - 1.0) * overlapped_exposed_s(bucket, layer_fwd_compute, c.overlap_sm_share);
      }
    } else if (opt.zero_stage >= 3) {
      t.zero_comm_exposed_s = m * zero3_per_mb + zero3_first;
    }
  }

  // Optimizer step: memory-bound over this device's shard of the master weights; then the
  // gradient buffer is zeroed for the next step, all of it (sharded only by ZeRO-2/3: Megatron's
  // zero_grad_buffer clears the whole main-grad buffer under the distributed optimizer). Autocast
  // frees the gradients instead (zero_grad(set_to_none=True)): nothing to zero.
  if (mem_bw > 0) {
    const double params_updated = stage_params_dev / (opt.zero_stage >= 1 ? shard_group : 1.0);
    const double grad_buffer_params = stage_params_dev / (opt.zero_stage >= 2 ? shard_group : 1.0);
    t.optimizer_s = (params_updated * optimizer_step_bytes_per_param(train.dtype, train.optimizer, train.clip_grad > 0,
                                                                     train.autocast) +
                     (train.autocast ? 0.0 : grad_buffer_params * sb.gradients)) /
                    mem_bw;
  }

  t.step_time_s = t.forward_compute_s + t.backward_compute_s + t.recompute_s + t.cp_imbalance_s +
                  t.ring_comm_exposed_s + t.tp_comm_s + t.dp_comm_exposed_s + t.zero_comm_exposed_s + t.pp_comm_s +
                  t.pp_bubble_s + t.optimizer_s;
  p.step_time_s = t.step_time_s;

  // ---------------- memory: the pipeline rank with the highest peak (below); pp == 1 is one
  // stage holding the embedding, the output layer and the logits.
  const LayerActivationBytes act = layer_activation_bytes(x);
  const double ring_bytes = cp_buffer_bytes(x);  // ring buffers, or all-gather's full-sequence K,V, dK,dV
  // Logits of this rank's vocabulary slice at the loss's peak (TrainingConfig::cross_entropy).
  // fused: the logits plus the float32 copy the cross-entropy makes of 16-bit logits (Megatron's
  // vocab_parallel_cross_entropy calls .float(), then works in place; float32 logits are not
  // copied). unfused: float32 tensors of the logits' size at the loss backward, three on one
  // device and four under TP (unfused_cross_entropy_bytes_per_logit). fused_16bit: the saved
  // 16-bit logits and the 16-bit gradient the backward writes.
  const bool unfused = train.cross_entropy == CrossEntropy::unfused;
  const double logits_bytes =
      x.tokens() * (vocab / tp) *
      (unfused                                            ? unfused_cross_entropy_bytes_per_logit(mesh.tp)
       : train.cross_entropy == CrossEntropy::fused_16bit ? 2.0 * x.activation_bytes
                                                          : x.activation_bytes + (x.activation_bytes < 4.0 ? 4.0 : 0.0));
  // The output layer's input is kept gathered under DTensor TP (training.tp_impl dtensor).
  const double output_bytes = output_block_stored_bytes(x);
  // The units ZeRO gathers and reduces on pipeline rank `rank` holding `layers` layers: its layers,
  // and the embedding (first rank) and output matrix (last rank; one table on a single stage with
  // tied embeddings). A middle rank's largest unit is a layer.
  struct Units {
    double largest = 0.0, two = 0.0;
  };
  auto units_of = [&](int64_t rank, double layers) {
    const double layer = layer_params(model) / tp, table = emb / tp;
    double a = layers >= 1.0 ? layer : 0.0, b = layers >= 2.0 ? layer : 0.0;  // the two largest, a >= b
    auto add = [&](double u) {
      if (u > a) {
        b = a;
        a = u;
      } else if (u > b) {
        b = u;
      }
    };
    const int tables = mesh.pp == 1 ? (model.tied_embeddings ? 1 : 2)
                                    : (rank == 0 ? 1 : 0) + (rank == mesh.pp - 1 ? 1 : 0);
    for (int i = 0; i < tables; ++i) add(table);
    return Units{a, a + b};
  };
  if (mesh.pp == 1) {
    const Units u = units_of(0, layers_stage);
    p.memory = stage_memory(rank_params(0, layers_stage) / tp, sb, opt.zero_stage, shard_group, 1.0, layers_stage, act,
                            ring_bytes, logits_bytes, output_bytes, c.memory_reserved_bytes, u.largest, u.two,
                            train.autocast, gather_b, opt.recompute == Recompute::full);
  } else {
    // Rank d holds the stored activations of in_flight micro-batches of all its layers
    // (pipeline_in_flight: min(PP - d, m) for 1F1B, the capped warm-up for interleaved); the last
    // rank also the logits. The peak rank is the largest of them: the first with even stages, a
    // middle one when the first gives a slot to the embedding.
    // PyTorch's pipelining (pp_schedule pytorch) also keeps the last stage's output of every
    // micro-batch until the step ends, to merge them for the caller (PipelineStage.output_chunks,
    // cleared at the next step; torch/distributed/pipelining/stage.py): at the last micro-batch's
    // loss the m - 1 earlier outputs, the 16-bit logits of this rank's vocabulary slice.
    const double retained_outputs =
        train.pytorch_pp_schedule ? (m - 1.0) * x.tokens() * (vocab / tp) * x.activation_bytes : 0.0;
    bool have = false;
    for (int i = 0; i < 3; ++i) {
      const int64_t d = candidates[i];
      const bool last = d == mesh.pp - 1;
      const double layers_d = cand_layers[i];
      const double in_flight = pipeline_in_flight(mesh.pp, opt.interleave, d, m, train.pytorch_pp_schedule);
      const Units u = units_of(d, layers_d);
      const MemoryBreakdown mb = stage_memory(rank_params(d, layers_d) / tp, sb, opt.zero_stage, shard_group, in_flight,
                                              layers_d, act, ring_bytes, last ? logits_bytes : 0.0,
                                              last ? output_bytes + retained_outputs : 0.0, c.memory_reserved_bytes,
                                              u.largest, u.two, train.autocast, gather_b,
                                              opt.recompute == Recompute::full);
      if (!have || mb.peak_bytes > p.memory.peak_bytes) p.memory = mb, have = true;
    }
  }
  p.peak_memory_bytes = p.memory.peak_bytes;
  p.fits = p.peak_memory_bytes <= c.memory_bytes;

  // ---------------- throughput. Model FLOPs: forward + backward (GEMMs 3x, attention 3.5x)
  // of the whole model for every sequence, causal pairs only, no recompute.
  LayerShape one = x;
  one.micro_batch = 1;
  one.tp = 1;
  one.cp = 1;
  one.attention = AttentionImpl::flash;
  const double seq_fwd_gemm = static_cast<double>(model.layers) * layer_gemm_flops(one).total() + logits_flops(one, vocab);
  const double seq_fwd_attn = static_cast<double>(model.layers) * attention_forward_flops(one).mean_rank;
  const double seqs = static_cast<double>(train.global_batch_sequences);
  p.model_flops_per_step = seqs * (3.0 * seq_fwd_gemm + 3.5 * seq_fwd_attn);
  const double devices = static_cast<double>(mesh.world_size());
  p.tokens_per_s = seqs * static_cast<double>(train.seq_len) / p.step_time_s;
  p.tflops_per_device = p.model_flops_per_step / p.step_time_s / devices / 1e12;
  p.mfu = p.model_flops_per_step / (p.step_time_s * peak * devices);
  return p;
}

}  // namespace ringplan::sim
