// Planner: enumerates every (DP, TP, CP, PP) mesh with DP*TP*CP*PP = GPUs together with every
// parallel option of the search space, asks sim::check_layout whether it can run and
// sim::predict what it costs, drops what does not fit in memory, and ranks the rest by step
// time (ties: less peak memory). Every enumerated candidate is either evaluated or counted
// under a rejection reason; nothing is skipped silently:
//
//   enumerated == evaluated + sum(rejections that happened before predict())
//   evaluated  == fitting + rejections[out of memory].count
//
// Usage: PlanResult r = plan(experiment, {.top_k = 10});
#pragma once
#include <array>
#include <optional>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::planner {

// The option values the planner tries for one experiment: Experiment::search with the
// defaults filled in (an empty list in the experiment means "the default set").
//   micro_batch: {1, 2, 4, 8}, each kept for a mesh only if it divides the sequences per DP
//                replica (global_batch / DP); an explicit list is passed on unfiltered, and
//                check_layout() rejects values that do not divide (counted, not skipped).
//   recompute: none, selective, full (selective_op only when listed)      zero_stage: 0, 1, 2, 3
//   sequence_parallel: off, on (tried only with TP > 1; off otherwise)
//   cp_scheme: contiguous, zigzag, striped (tried only with CP > 1; otherwise the
//              experiment's options.cp_scheme, which has no effect at CP = 1)
//   interleave: 1, 2, 4 (tried only with PP > 1; 1 otherwise)
//   attention: flash, materialized
//   cp_comm: ring, allgather, alltoall (tried only with CP > 1; otherwise the experiment's
//            options.cp_comm, which has no effect at CP = 1). allgather and alltoall are tried
//            with the flash entries of `attention` only (they have no materialised kernel);
//            alltoall where CP does not split the heads per TP rank is a rejected layout.
//            hybrid (flash only too) is tried once per all-to-all group size A in cp_a2a_size.
//   cp_a2a_size: the experiment's search.cp_a2a_size (values that do not divide the mesh's CP are
//            skipped), else every divisor of CP with 1 < A < CP (A = 1 is the ring and A = CP
//            the all-to-all, searched as such); fixed by options.cp_a2a_size (0: the default).
//   dp_replicate: the experiment's search.dp_replicate (values that do not divide the mesh's DP are
//            skipped), else 1 and the replica counts whose shard groups fill 1, 2, 4 or 8 whole
//            nodes (hybrid sharding, replicas across node groups: (DP / R) x CP x TP = k x GPUs per
//            node, R > 1), where the mesh has them; tried with ZeRO >= 1 only (1 with ZeRO-0);
//            fixed by options.dp_replicate.
struct ResolvedSearchSpace {
  std::vector<int64_t> micro_batch;
  bool micro_batch_is_default = true;  // default set: filter to divisors per mesh
  std::vector<Recompute> recompute;
  std::vector<int> zero_stage;
  std::vector<bool> sequence_parallel;
  std::vector<CpScheme> cp_scheme;
  std::vector<int64_t> interleave;
  std::vector<AttentionImpl> attention;
  std::vector<CpComm> cp_comm;
  std::vector<int64_t> cp_a2a_size;  // empty: the proper divisors of each mesh's CP
  bool cp_a2a_size_fixed = false;    // options.cp_a2a_size fixed (cp_a2a_size holds it, 0: default)
  std::vector<int64_t> dp_replicate;  // empty: 1 and the shard groups of 1, 2, 4, 8 whole nodes
  bool dp_replicate_fixed = false;    // options.dp_replicate fixed (dp_replicate holds it)
  // 0: no cap. The planner has no default TP cap: TP wider than a node is searched (valid,
  // inter-node TP collectives) unless the experiment sets search.max_tp.
  int64_t max_tp = 0, max_cp = 0, max_pp = 0;
};
ResolvedSearchSpace resolve_search_space(const Experiment& e);

// All meshes with dp*tp*cp*pp == gpus, in a fixed order (tp, then cp, then dp ascending).
// Empty for gpus <= 0; throws ringplan::Error (bad input) for gpus > kMaxGpus (core/config.hpp).
std::vector<Mesh> enumerate_meshes(int64_t gpus);

// Ranking band: predicted step times closer than this fraction of the faster one are not a
// trustworthy order. The cost model's mean absolute error is about that: 2.8 % on Korthikanti et
// al. Table 5 (bounded in tests/sim/test_validation.cpp), 1.5-4.5 % held out within a framework on most
// sources of the public corpus (BENCHMARKS.md), so two candidates inside the band are a tie as far as the
// prediction can tell. Ties go to the simpler, more robust layout.
inline constexpr double kRankingBand = 0.03;
inline constexpr const char* kRankingBandReason =
    "the cost model's mean error is about 3 % (held out: 1.3 % on Korthikanti et al. Table 5, 1.5-4.5 % within a "
    "framework on most of the public corpus; BENCHMARKS.md): step times closer than 3 % are not a reliable order";

// True when `t` is within the ranking band of `leader` (t - leader < kRankingBand * leader).
inline bool within_band(double t, double leader) { return t <= leader || t - leader < kRankingBand * leader; }

// How simple and robust a layout is, compared lexicographically (smaller is simpler):
// ZeRO stage (fewer sharded states, fewer collectives), interleaved pipeline or not, mesh
// dimensions > 1 (fewer process groups to go wrong), then CP exchange (ring before all-gather
// before all-to-all before hybrid: the ring's p2p and its overlap are the default of every
// framework; all-to-all adds a constraint on heads and four collectives per pass; hybrid has
// both stages and two process groups), then hybrid sharding (options.dp_replicate > 1: two
// process groups for the gradients and R copies of the sharded state, so more memory per GPU).
// The CP scheme is not part of it: zigzag and striped twins are equivalent here.
struct Simplicity {
  int zero_stage = 0;
  int interleaved = 0;      // 1 when PP > 1 and interleave > 1
  int dims_above_one = 0;   // 0 .. 4
  int cp_method = 0;        // CP > 1: 0 ring, 1 allgather, 2 alltoall, 3 hybrid; 0 when CP = 1
  int hybrid_shard = 0;     // 1 when dp_replicate > 1
  auto operator<=>(const Simplicity&) const = default;
};
Simplicity simplicity_of(const Mesh& m, const ParallelOptions& o);
// Number of distinct Simplicity values, and a dense index that keeps their order.
inline constexpr int kSimplicityClasses = 4 * 2 * 5 * 4 * 2;
int simplicity_index(const Simplicity& s);

// Group number (1-based) of each candidate of a ranked list: a group starts at the first
// candidate outside the previous group and holds every later one within the band of it.
std::vector<int> ranking_groups(const std::vector<sim::Prediction>& ranked);

// Two layouts that differ only in the balanced CP scheme (zigzag vs striped): equivalent twins.
bool scheme_twins(const sim::Prediction& a, const sim::Prediction& b);

struct PlanSettings {
  int64_t gpus = 0;          // 0: experiment.gpus, else cluster.gpus()
  int64_t top_k = 10;        // candidates kept in PlanResult::candidates (> 0)
  // Pruning: check_layout() is asked once per mesh with the least demanding options
  // (micro-batch 1, contiguous, interleave 1, ...) and once per (mesh, micro-batch, scheme,
  // interleave, SP); when that fails every candidate below it is counted under that reason
  // without being built. `exhaustive` asks check_layout() for every single candidate
  // instead (tests compare both; results and counts must be identical).
  bool exhaustive = false;
  // Honour the experiment's fixed layout (`ringplan plan`): with e.mesh set only that mesh is
  // searched (its world size must equal the GPU count), and every option named by
  // e.fixed_options keeps e.options' value (tried even where it has no effect, so that
  // check_layout() judges it). Off: the whole space is searched (report ranks a fixed layout
  // among all the others).
  bool fixed_layout = false;
};

// One rejection category: "out of memory" or a check_layout() message with its numbers
// replaced by '#', e.g. "heads # not divisible by TP #". `example` is the first full message seen.
struct Rejection {
  std::string reason;
  int64_t count = 0;
  std::string example;
};

// The chosen layout with another CP communication method, at that method's best CP scheme
// (contiguous suits all-to-all, which sees the whole sequence, and starves a causal ring) and,
// for hybrid, its best group size 1 < A < CP (the default size when CP has none);
// everything else the same, so the plan can say why its method won (cp_comm_alternatives).
struct CpCommAlternative {
  CpComm comm = CpComm::ring;
  CpScheme scheme = CpScheme::zigzag;  // the fastest fitting scheme for this method (the chosen's for the first)
  int64_t a2a_size = 1;       // hybrid: its all-to-all group size (the chosen's, else the fastest 1 < A < CP); 1 otherwise
  std::string refused;        // check_layout's reason when the method cannot run this layout; else empty
  double step_time_s = 0;     // predicted, when not refused
  double cp_exposed_s = 0;    // its exposed CP communication + CP imbalance per step
  double cp_buffer_bytes = 0; // its CP buffers (ring K/V, gathered K/V, all-to-all head shards)
  double peak_memory_bytes = 0;
  bool fits = false;
};

struct PlanResult {
  int64_t gpus = 0;
  std::vector<sim::Prediction> candidates;  // fitting, best first, at most top_k
  std::vector<Rejection> rejected;          // most frequent first
  int64_t enumerated = 0;                   // all (mesh, options) combinations considered
  int64_t evaluated = 0;                    // sim::predict() calls
  int64_t fitting = 0;                      // evaluated and within memory
  // The out-of-memory candidate with the least peak memory (for the "nothing fits" message).
  std::optional<sim::Prediction> closest_out_of_memory;
  // The recommended layout: the fastest layout of the simplest Simplicity class that has a
  // member within the ranking band of the fastest candidate (over every fitting candidate, not
  // only the top K). Empty when nothing fits.
  std::optional<sim::Prediction> chosen;
  int64_t chosen_rank = 0;   // 1-based position of `chosen` in candidates; 0 when it ranks below top K
  std::string choice_reason; // why `chosen` (and not rank 1), for people
  // With CP > 1 in `chosen`: every CP method (ring, allgather, alltoall, hybrid) on the chosen layout,
  // the chosen one first, and for people why the chosen one won (cp_comm_reason). Empty otherwise.
  std::vector<CpCommAlternative> cp_comm_alternatives;
  std::string cp_comm_reason;
  bool fixed_mesh = false;   // the search was restricted to the experiment's mesh
  bool empty() const { return candidates.empty(); }
};

// The CP methods on `chosen`'s layout and the sentence comparing them (used by plan()).
std::vector<CpCommAlternative> cp_comm_alternatives(const Experiment& e, const sim::Prediction& chosen, int64_t gpus);
// `searched`: the CP methods the search tried (a faster method outside it is named as such).
std::string cp_comm_reason(const sim::Prediction& chosen, const std::vector<CpCommAlternative>& alternatives,
                           const std::vector<CpComm>& searched);

// Runs the search. Throws ringplan::Error (bad_input) for settings that cannot be valid
// (top_k <= 0, a GPU count outside 1 .. kMaxGpus). A search where nothing fits returns an empty
// candidate list; use describe_no_fit() for the message.
PlanResult plan(const Experiment& e, const PlanSettings& settings = {});

// "no layout of <model> fits on N GPUs (<cluster>, C GiB each): evaluated E, ... the
// closest was ... needs X GiB" -- used by the CLI when PlanResult::candidates is empty.
std::string describe_no_fit(const Experiment& e, const PlanResult& r);

// What the experiment fixed for a search with PlanSettings::fixed_layout, for people:
// "mesh fixed by exp.yaml:14 (dp=1 tp=1 cp=4 pp=1); options fixed by exp.yaml:16 (micro_batch,
// cp_scheme); the others searched". Empty when nothing is fixed.
std::string fixed_layout_text(const Experiment& e);

// Ranking order: step time, then peak memory, then a deterministic key of the layout so
// equal predictions come out in a stable order.
bool ranks_before(const sim::Prediction& a, const sim::Prediction& b);

// Rejection category of a message: digits (and decimal points between digits) become '#'.
std::string rejection_category(const std::string& message);

// "out of memory: 93.1 GiB > 80.0 GiB"
std::string out_of_memory_message(const sim::Prediction& p);

}  // namespace ringplan::planner
