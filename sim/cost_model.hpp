// Closed-form cost model: per-device memory and per-step time of one training layout
// (mesh + options), every term broken out. Uses only core/ config types.
//
// predict() is the planner's inner loop: it must not allocate and must stay in the
// microsecond range (target >= 1e6 evaluations/s on one core).
#pragma once
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/pipeline_split.hpp"

namespace ringplan::sim {

// Per-device memory at the peak (bytes). peak_bytes is the peak of the schedule, not the
// sum of per-term maxima: e.g. ring buffers and logits are not live at the same time.
//   peak = weights + gradients + optimizer + reserved
//        + activations (in-flight micro-batches x stage layers, + one layer's recompute set)
//        + attention_scores (kept scores/lse, + one layer's recomputed scores)
//        + max(ring_buffers, logits)   -- the ring runs inside a layer, logits after the last
// With PP > 1 the first stage (PP in-flight micro-batches, x (1 + (PP-1)/(PP v)) interleaved)
// and the last stage (1 in flight, output layer, logits) are both evaluated; the larger is
// reported. Formulas: sim/formulas.hpp; one layer's ring: sim/ring_model.hpp.
struct MemoryBreakdown {
  double weights_bytes = 0;            // params of the largest PP stage / TP (ZeRO-3: / DPxCP + 2 gathered units)
  double gradients_bytes = 0;          // ZeRO>=2: / DPxCP + 2 units being reduce-scattered
  double optimizer_bytes = 0;          // master weights + moments, ZeRO>=1: / DPxCP
  double activations_bytes = 0;        // Korthikanti terms x layers of the stage x in-flight micro-batches
  double attention_scores_bytes = 0;   // materialised: b*(H/TP)*(L/CP)*L per kept matrix; flash: lse only
  double ring_buffers_bytes = 0;       // CP exchange: ring K,V double buffers (+ dK,dV in backward), or
                                       // cp_comm allgather's full-sequence K,V, dK,dV (sim::cp_buffer_bytes)
  double logits_bytes = 0;             // logits + loss buffers on the last stage
  double reserved_bytes = 0;           // cluster.memory_reserved_bytes (context, allocator)
  double peak_bytes = 0;
};

// Per-step time terms (seconds per optimizer step, on the slowest rank).
struct TimeBreakdown {
  double forward_compute_s = 0;        // matmuls + attention forward, all micro-batches
  double backward_compute_s = 0;       // 2x matmuls, 2.5x attention
  double recompute_s = 0;              // forward work re-run (selective, selective_op or full)
  double cp_imbalance_s = 0;           // extra attention time of the slowest CP rank vs mean
  double ring_comm_exposed_s = 0;      // sum over ring steps of max(0, comm - compute) + latency;
                                       // cp_comm allgather: its all-gathers and reduce-scatters (not overlapped)
  double tp_comm_s = 0;                // all-reduce or RS+AG (sequence parallel), not overlapped
  double dp_comm_exposed_s = 0;        // DPxCP gradient reduction not hidden behind backward
  double zero_comm_exposed_s = 0;      // ZeRO parameter all-gathers not hidden (1/2: after the step; 3: per layer)
  double pp_comm_s = 0;                // PP send/recv of activations; tied embeddings: the first and
                                       // last stage's embedding-gradient all-reduce
  double pp_bubble_s = 0;              // (PP-1)/(v*m) of the busy time
  double optimizer_s = 0;              // optimizer step (memory-bound)
  double step_time_s = 0;
};

struct Prediction {
  Mesh mesh;
  ParallelOptions options;
  MemoryBreakdown memory;
  TimeBreakdown time;
  double step_time_s = 0;
  double tokens_per_s = 0;
  double tflops_per_device = 0;   // model FLOPs (no recompute) / step time / device, in TFLOP/s
  double mfu = 0;                 // model FLOPs / (step time * peak * devices)
  double peak_memory_bytes = 0;
  double capacity_bytes = 0;      // cluster.memory_bytes
  bool fits = false;              // peak_memory_bytes <= capacity_bytes
  int64_t micro_batches = 0;      // per DP replica per step (m)
  double model_flops_per_step = 0;  // whole step, all devices, no recompute
};

// Term tables for reporting (table and JSON use the same names).
struct Term { std::string_view name; double value; };
// memory_terms: the eight terms, then `peak_bytes` last (the schedule's peak, not their sum).
std::array<Term, 9> memory_terms(const MemoryBreakdown& m);
std::array<Term, 11> time_terms(const TimeBreakdown& t);      // excludes step_time

// Why (mesh, options) cannot run for this model/cluster/training at `gpus` devices;
// empty string when valid. Messages are for people: "heads 96 not divisible by TP 64".
// A TP group wider than a node is valid (its collectives use the inter-node link).
// Does not check memory (predict() reports fits).
std::string check_layout(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt, int64_t gpus);

// The pipeline split (core/pipeline_split.hpp) is part of the layout check and the prediction.
using ringplan::chunk_first_layer;
using ringplan::chunk_layers;
using ringplan::pipeline_split_problem;
using ringplan::split_layers;
using ringplan::stage_layers;

// Micro-batches whose stored activations pipeline rank d holds at its peak, in units of all of
// the rank's layers (rank d of pp, v model chunks per rank, m micro-batches per step):
//  * 1F1B (v = 1): pp - d - 1 warm-up forwards and one more before the first backward, at most
//    m: min(pp - d, m).
//  * interleaved (v > 1, each chunk 1/v of the rank's layers): Megatron-LM
//    (forward_backward_pipelining_with_interleaving) and PyTorch's ScheduleInterleaved1F1B warm up
//    2 (pp - d - 1) + (v - 1) pp chunks and run one more forward before the first backward,
//    never more than the m v chunks of the step; so min(2 (pp - d - 1) + (v - 1) pp + 1, m v) / v.
//    At m = pp Megatron-LM warms up every chunk on every rank (all_warmup_microbatches): m there;
//    PyTorch's schedule (pytorch_schedule) keeps the rank-dependent count.
//    For large m rank 0 holds pp + (pp - 1) / v, Megatron's (1 + (pp - 1) / (pp v)) x pp.
double pipeline_in_flight(int64_t pp, int64_t v, int64_t d, double m, bool pytorch_schedule = false);

// Predict one layout. Precondition: check_layout(...) returned "".
Prediction predict(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt);

// Packed documents: computes the attention work (DocumentSpec::work) of every scheme at each CP
// size in `cp_sizes` (those the lengths can be sharded into), so that predict() only looks it up.
// Without it predict() computes the work itself, O(documents x CP) per call. No-op without
// documents. Call after the last change to e.training.
void prepare_document_work(Experiment& e, const std::vector<int64_t>& cp_sizes);

// Load balance of causal attention work across the CP ranks for a scheme: returns
// max over ranks / mean over ranks of visible (query, key) pairs, exactly (tends to
// 2 - 1/P for contiguous; 1 for zigzag; close to 1 for striped).
double cp_imbalance(CpScheme scheme, int64_t seq_len, int64_t cp, bool causal);

// Does every group of a mesh dimension stay inside one node? Ranks fill nodes in order (rank
// order TP, CP, DP, PP); a group's block is its size times the sizes of the dimensions inside
// it. Inside when the group has one rank, the world fits in one node, or the block fits in a
// node and divides gpus_per_node. Otherwise some group crosses nodes and, as the groups run in
// lockstep, the dimension uses the inter-node link: TP 16 on 8-GPU nodes, TP 3 on 8.
enum class MeshDim { tp, cp, dp, pp };
bool group_within_node(const Mesh& mesh, MeshDim dim, int64_t gpus_per_node);
// Does every all-to-all group of cp_comm hybrid (a2a_size consecutive CP ranks, TP apart) stay
// inside one node? The same rule as group_within_node with the block TP x a2a_size.
bool cp_a2a_within_node(const Mesh& mesh, int64_t a2a_size, int64_t gpus_per_node);
// cp_comm hybrid's default group size (ParallelOptions::cp_a2a_size 0): the largest divisor A
// of CP that divides the query heads per TP rank, divides or is a multiple of the KV heads per
// TP rank, and keeps each group of TP x A ranks inside one node (cp_a2a_within_node); 1 (the
// plain ring) when no larger one qualifies. Needs TP to divide heads and kv_heads (else 1).
int64_t default_cp_a2a_size(const ModelConfig& m, const Mesh& mesh, int64_t gpus_per_node);
// The group size a layout runs: opt.cp_a2a_size, or the default when it is 0; 1 unless cp_comm
// is hybrid with CP > 1.
int64_t cp_a2a_size_of(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt);

// Alpha-beta ring collectives (formulas.md): bytes = full buffer size. The bandwidth term runs
// at the link's bandwidth times the collective's achieved bus-bandwidth fraction at that size
// (ClusterConfig::collectives; the default curve is the ideal ring).
double all_reduce_s(int64_t n, double bytes, const LinkProfile& link, const CollectiveCurve& eff = {});
double reduce_scatter_s(int64_t n, double bytes, const LinkProfile& link, const CollectiveCurve& eff = {});
double all_gather_s(int64_t n, double bytes, const LinkProfile& link, const CollectiveCurve& eff = {});
// All-to-all of an n-rank group where every rank sends `bytes_per_rank` in all (its whole send
// buffer, 1/n of it to each rank, the own block staying home): (n-1)/n * bytes / (bw * eff) +
// (n-1) * latency (pairwise exchange, one latency per peer). All-to-all CP (sim/ring_model.hpp).
double all_to_all_s(int64_t n, double bytes_per_rank, const LinkProfile& link, const CollectiveCurve& eff = {});

// Fits a collective's curve to measured times of an n-rank collective on `link` (calibrate):
// per size, eff = ideal bus transfer time / (measured time - its latency term), then
// eff(bytes) = max * bytes / (bytes + half) by least squares on 1/eff; max is capped at 1 (a
// collective faster than the link's point-to-point rate is predicted at the link's rate). Where
// the efficiency does not rise with size (CPU caches), a constant (half 0): the geometric mean of
// the measured efficiencies, which has the least squared log error of the transfer times.
// `factor` is the bus-traffic factor: 2(n-1)/n for all-reduce, (n-1)/n otherwise; `alphas` is
// the number of latency terms (2(n-1) or n-1). Requires >= 2 sizes; sizes and times > 0.
CollectiveCurve fit_collective_curve(const std::vector<double>& bytes, const std::vector<double>& seconds,
                                     double factor, double alphas, const LinkProfile& link);
double p2p_s(double bytes, const LinkProfile& link);

// A collective of an n-rank group with `per_node` of its ranks in each node it spans (per_node
// >= n: inside one node). Inside a node: the flat ring on intra_node with `collectives`. Across
// nodes with per_node > 1 (and dividing n): hierarchical, as NCCL's multi-node rings and trees
// behave (each node's GPUs drive their own NICs in parallel, nccl-tests busbw = node NIC rate):
//   all-reduce     = intra RS over per_node + inter AR over n/per_node of bytes/per_node + intra AG
//   reduce-scatter = intra RS over per_node + inter RS over n/per_node of bytes/per_node
//   all-gather     = inter AG over n/per_node of bytes/per_node + intra AG over per_node
// the inter-node parts on inter_node with collectives_on(true). Bandwidth terms as written; the
// all-reduce's latency is the two levels' sum, while reduce-scatter and all-gather pay the latency
// of NCCL's one ring over all n ranks: (n - nodes) intra-node steps + (nodes - 1) network steps.
// per_node <= 1 (one rank per node, or a group that does not tile the nodes): the flat ring on
// inter_node.
enum class CollectiveKind { all_reduce, reduce_scatter, all_gather };

// Time a collective of comm_s adds when it overlaps compute_s of computation that takes
// `sm_share` of the device while it runs (ClusterConfig::overlap_sm_share): the computation
// advances at (1 - share) during the collective, so the pair ends at max(comm, compute + share x
// comm) and the collective shows max(comm - compute, share x comm). share 0: max(0, comm - compute).
double overlapped_exposed_s(double comm_s, double compute_s, double sm_share);
// `inter_slowdown` (>= 1, uplink_slowdown()) divides the inter-node link's bandwidth: the share of
// an oversubscribed uplink each of the group's flows gets.
double group_collective_s(CollectiveKind kind, int64_t n, int64_t per_node, double bytes, const ClusterConfig& c,
                          double inter_slowdown = 1.0);
// Ranks per node of a group of `size` ranks `stride` apart (ranks fill nodes in order): G/stride
// when the stride divides the node size G and the group's block tiles whole nodes, else 1.
int64_t group_ranks_per_node(int64_t size, int64_t stride, int64_t gpus_per_node);

// How much slower a mesh dimension's inter-node traffic runs because the links leaving a switch
// group are oversubscribed (ClusterConfig::switch_groups): the groups of `size` ranks `stride`
// apart all communicate at once (they run in lockstep), each flow at the NIC's rate unless the
// flows leaving one switch group need more than its uplinks carry, L x G x bandwidth / R for L
// nodes of G GPUs at ratio R. Nodes are filled in rank order and switch groups in node order.
//  * ring: a collective's ring (NCCL's rings, one per rail in the hierarchical form), a
//    point-to-point ring or chain (CP's ring, pipeline sends). Per rail, each group's ring leaves
//    a switch group once for every segment of its nodes there that continues outside it, so the
//    slowdown is max(1, R x c / L) with c such segments per switch group: 1 per interleaved group
//    where the switch groups tile the groups' blocks (R / L for a ring through L nodes of one
//    group; R when each switch group holds one node of each of its groups: pipeline stages of
//    whole switch groups, DP strided across them), up to 2 where they do not.
//  * all_to_all: every member sends 1 / n of its data to each member; with k of a group's nodes
//    under one switch group the share leaving it is 1 - k / (the group's nodes), so the slowdown
//    is max(1, R (1 - k / nodes)); a group within L nodes that straddles a boundary sends at
//    worst a quarter of its NICs' worth across.
// 1 for groups inside one node or one switch group each, and for a flat network
// (SwitchGroups::is_flat).
enum class UplinkTraffic { ring, all_to_all };
double uplink_slowdown(int64_t size, int64_t stride, const ClusterConfig& c, UplinkTraffic traffic);
// `link` with its bandwidth divided by `slowdown` (>= 1).
LinkProfile contended(const LinkProfile& link, double slowdown);
// The slowdowns of a layout's groups (rank order TP, CP, DP, PP; 1 where a group stays inside a
// node or a switch group): TP's collectives, CP's traffic by its method (cp_links), the ZeRO /
// gradient shard group's (DP x CP / dp_replicate ranks, TP apart), the replicas' all-reduce, the
// pipeline's sends (stages one DP x CP x TP block apart) and the tied embedding's first-last pair.
struct UplinkSlowdowns {
  double tp = 1, cp = 1, shard = 1, replicas = 1, pp = 1, tied_pair = 1;
};
UplinkSlowdowns uplink_slowdowns(const Experiment& e, const Mesh& mesh, const ParallelOptions& opt);

}  // namespace ringplan::sim
