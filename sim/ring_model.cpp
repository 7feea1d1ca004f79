// One attention layer as ring attention on one CP group (see ring_model.hpp).
#include "sim/ring_model.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "core/documents.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::sim {

RingKernelRate ring_kernel_rate(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s) {
  RingKernelRate k;
  const AttentionFlops f = attention_forward_flops(x);
  const double mem_bw = achieved_memory_bandwidth_bytes_per_s(c);
  k.per_pair_flops = attention_pair_flops(x);
  // Flash attention is one fused kernel per block: its kernel's forward curve
  // (ClusterConfig::flash_forward_curve) at its FLOPs; backward
  // 2.5x the forward FLOPs (it recomputes the scores). Materialised attention is cuBLAS batched
  // GEMMs around the softmax: Q*K^T writes and P*V reads the score matrix, so each GEMM takes
  // the longer of its compute (the materialized_attention curve, = matmul unless the profile
  // measured its own) and its score traffic (roofline: with K = head_dim
  // ~100 these GEMMs sit below A100's ~150 FLOP/byte ridge); backward is 4 such GEMMs
  // (dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q), 2x the forward.
  if (x.attention == AttentionImpl::materialized) {
    const double gemm_flops = 0.5 * f.per_step_kernel;
    const double score_bytes = gemm_flops / (2.0 * x.head_dim) * x.activation_bytes;
    const double traffic_s = mem_bw > 0 ? score_bytes / mem_bw : 0.0;
    // By FLOPs alone (at(), not at_gemm()): these batched GEMMs reduce over head_dim or the key
    // block, far outside the linear layers' K from which a matmul curve's half_k is measured.
    auto rate = [&](const EfficiencyCurve& curve) {
      const double compute_s = gemm_flops / (peak_flops_per_s * curve.at(gemm_flops));
      return gemm_flops / std::max(compute_s, traffic_s);
    };
    k.forward_flops_per_s = rate(c.materialized_attention_curve());
    k.backward_factor = 2.0;
    // Each backward GEMM moves a score-sized operand per GEMM FLOP as the forward's do; its
    // compute runs at the backward curve (= matmul unless the profile measured its own).
    k.backward_flops_per_s = rate(c.matmul_backward_curve());
  } else {
    k.forward_flops_per_s = peak_flops_per_s * c.flash_forward_curve(x.flash_kernel).at(f.per_step_kernel);
    k.backward_factor = 2.5;
    // The backward kernel's own efficiency, on the same x (the block's forward FLOPs).
    k.backward_flops_per_s = peak_flops_per_s * c.flash_backward_curve(x.flash_kernel).at(f.per_step_kernel);
  }
  const RingMergeBytes merge = ring_merge_bytes(x);
  k.merge_forward_s = mem_bw > 0 ? merge.forward_per_step / mem_bw : 0.0;
  k.merge_backward_s = mem_bw > 0 ? merge.backward_per_step / mem_bw : 0.0;
  return k;
}

OneCallKernel one_call_kernel(double flops, const ClusterConfig& c, FlashKernel kernel, double peak_flops_per_s,
                              double masked_fw_flops, double masked_bw_flops) {
  constexpr double kBackwardFactor = 2.5;  // flash backward FLOPs / forward FLOPs (as the ring)
  OneCallKernel k;
  k.forward_s = (flops + masked_fw_flops) / (peak_flops_per_s * c.flash_forward_curve(kernel).at(flops));
  k.backward_s =
      kBackwardFactor * (flops + masked_bw_flops) / (peak_flops_per_s * c.flash_backward_curve(kernel).at(flops));
  return k;
}

double alltoall_masked_flops(const LayerShape& x, const ClusterConfig& c, bool forward) {
  // The whole sequence is one causal square on each of the rank's heads: the ring's extra at
  // CP 1, over the rank's 1/CP of the heads.
  LayerShape whole = x;
  whole.cp = 1;
  return rank_masked_flops(whole, c.masked_tiles, forward) / std::max(1.0, x.cp);
}

AllGatherCollectives allgather_collectives(const LayerShape& x, const ClusterConfig& c, int64_t cp_per_node,
                                           double inter_slowdown) {
  const int64_t P = static_cast<int64_t>(x.cp);
  AllGatherCollectives g;
  g.full_kv_bytes = 2.0 * x.micro_batch * x.seq_len * (x.kv_heads / x.tp) * x.head_dim * x.activation_bytes;
  g.all_gather_s = group_collective_s(CollectiveKind::all_gather, P, cp_per_node, g.full_kv_bytes, c, inter_slowdown);
  g.reduce_scatter_s =
      group_collective_s(CollectiveKind::reduce_scatter, P, cp_per_node, g.full_kv_bytes, c, inter_slowdown);
  return g;
}

AllToAllCollectives alltoall_collectives(const LayerShape& x, const ClusterConfig& c, int64_t n,
                                         const LinkProfile& link, bool inter_node) {
  // Send buffer per rank of each all-to-all: the rank's L/CP tokens of every head it sends (KV
  // heads replicated when the group outnumbers them).
  AllToAllCollectives a;
  const double tokens = x.micro_batch * x.seq_len / x.cp;
  a.q_bytes = tokens * (x.heads / x.tp) * x.head_dim * x.activation_bytes;
  a.kv_bytes = tokens * std::max(x.kv_heads / x.tp, static_cast<double>(n)) * x.head_dim * x.activation_bytes;
  const CollectiveCurve& eff = c.collectives_on(inter_node).all_gather;
  a.q_s = all_to_all_s(n, a.q_bytes, link, eff);
  a.kv_s = all_to_all_s(n, a.kv_bytes, link, eff);
  return a;
}

RingLayerPrediction predict_ring_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                       const LinkProfile& ring_link, bool inter_node) {
  RingLayerPrediction r;
  const int64_t P = static_cast<int64_t>(x.cp);
  const AttentionFlops f = attention_forward_flops(x);
  const RingPairs pairs = layer_ring_pairs(x);
  const double mem_bw = achieved_memory_bandwidth_bytes_per_s(c);
  const RingKernelRate kr = ring_kernel_rate(x, c, peak_flops_per_s);
  const double rate = kr.forward_flops_per_s, backward_factor = kr.backward_factor;
  const double bwd_rate = kr.backward_flops_per_s;
  const double eff = rate / peak_flops_per_s;  // achieved fraction of peak of the attention kernels
  r.kernel_efficiency = eff;
  r.backward_kernel_efficiency = bwd_rate / peak_flops_per_s;
  r.inter_node = inter_node && P > 1;
  r.forward_flops_mean_rank = f.mean_rank;
  r.forward_flops_max_rank = f.max_rank;
  r.imbalance = f.max_rank / f.mean_rank;

  // Slowest rank's kernel time per step. Materialised attention computes every visible block
  // in full (fully hidden blocks are skipped, as for flash; the slowest rank sees every block).
  const double per_pair = kr.per_pair_flops;
  double first_flops = per_pair * pairs.diagonal_pairs;
  double later_flops = per_pair * pairs.off_diagonal_max_pairs;
  if (x.attention == AttentionImpl::materialized) {
    const double block = x.seq_len / x.cp;
    first_flops = per_pair * block * block;
    later_flops = P > 1 ? first_flops : 0.0;
  }
  // Flash: the tiles the causal diagonal crosses, in forward-FLOP equivalents of each kernel
  // (0 for materialised attention and for an exact profile). The model FLOPs (f) stay visible pairs.
  const RingMaskedExtra mask_fw = ring_masked_extra(x, c.masked_tiles, true);
  const RingMaskedExtra mask_bw = ring_masked_extra(x, c.masked_tiles, false);
  const AttentionCoreBytes elem = attention_core_elementwise_bytes(x);
  // Merges: a rank folds in every block it computes after its own (both kernels skip hidden
  // blocks). Contiguous causal: rank r sees r earlier blocks (mean (P-1)/2, slowest P-1);
  // zigzag and striped: every rank P-1.
  const RingVisibleBlocks vb = ring_visible_blocks(x.cp_scheme, x.seq_len, x.cp, x.causal);
  const double merges_max = vb.max_rank - 1.0;
  const double merges_mean = vb.mean_rank - 1.0;

  // Forward.
  RingPhasePrediction& fw = r.forward;
  fw.compute_steps = P;
  fw.transfers = P - 1;
  fw.step_bytes = P > 1 ? ring_forward_step_bytes(x) : 0.0;
  fw.merge_step_s = kr.merge_forward_s;
  fw.first_step_compute_s = (first_flops + per_pair * mask_fw.first_step) / rate;
  fw.step_compute_s = (later_flops + per_pair * mask_fw.later_step) / rate + fw.merge_step_s;
  fw.step_comm_s = P > 1 ? p2p_s(fw.step_bytes, ring_link) : 0.0;
  fw.mean_rank_compute_s = (f.mean_rank + per_pair * mask_fw.rank_total) / rate + merges_mean * fw.merge_step_s;
  fw.max_rank_compute_s = (f.max_rank + per_pair * mask_fw.rank_total) / rate + merges_max * fw.merge_step_s;
  fw.elementwise_s = mem_bw > 0 ? elem.forward / mem_bw : 0.0;
  if (P > 1) {
    // The transfer made during step 0 overlaps the diagonal block, the others a later step.
    fw.exposed_comm_s = std::max(0.0, fw.step_comm_s - fw.first_step_compute_s) +
                        static_cast<double>(P - 2) * std::max(0.0, fw.step_comm_s - fw.step_compute_s);
  }
  fw.total_s = fw.max_rank_compute_s + fw.elementwise_s + fw.exposed_comm_s;

  // Backward: 2.5x (flash) or 2x (materialised) the forward FLOPs per block, at the backward
  // kernel's own rate.
  RingPhasePrediction& bw = r.backward;
  bw.compute_steps = P;
  bw.transfers = P - 1;
  bw.step_bytes = P > 1 ? ring_backward_step_bytes(x) : 0.0;
  bw.merge_step_s = kr.merge_backward_s;
  bw.first_step_compute_s = backward_factor * (first_flops + per_pair * mask_bw.first_step) / bwd_rate;
  bw.step_compute_s = backward_factor * (later_flops + per_pair * mask_bw.later_step) / bwd_rate + bw.merge_step_s;
  bw.step_comm_s = P > 1 ? p2p_s(bw.step_bytes, ring_link) : 0.0;
  bw.mean_rank_compute_s =
      backward_factor * (f.mean_rank + per_pair * mask_bw.rank_total) / bwd_rate + merges_mean * bw.merge_step_s;
  bw.max_rank_compute_s =
      backward_factor * (f.max_rank + per_pair * mask_bw.rank_total) / bwd_rate + merges_max * bw.merge_step_s;
  bw.elementwise_s = mem_bw > 0 ? elem.backward / mem_bw : 0.0;
  if (P > 1) {
    // dK,dV (fp32) of the last block go home after the last step: half of a step's bytes
    // were K,V, the rest the accumulators; K,V need not travel on.
    const double dkv_bytes = bw.step_bytes - fw.step_bytes;
    bw.unhidden_comm_s = p2p_s(dkv_bytes, ring_link);
    bw.exposed_comm_s = std::max(0.0, bw.step_comm_s - bw.first_step_compute_s) +
                        static_cast<double>(P - 2) * std::max(0.0, bw.step_comm_s - bw.step_compute_s) +
                        bw.unhidden_comm_s;
  }
  bw.total_s = bw.max_rank_compute_s + bw.elementwise_s + bw.exposed_comm_s;

  // Memory of one layer's attention.
  // Materialised scores: the runtime allocates b*H*(L/P)*L for ALL P blocks, skipped ones
  // included (ring_attention.cpp scores_), so the memory keeps the full (L/CP)*L term.
  r.scores_bytes_materialized = materialized_scores_bytes(x);
  r.scores_bytes_flash = flash_lse_bytes(x);
  r.scores_bytes = x.attention == AttentionImpl::materialized ? r.scores_bytes_materialized : r.scores_bytes_flash;
  r.ring_buffer_bytes = ring_buffer_bytes(x);
  return r;
}

namespace {
// A pass whose CP communication is not overlapped with its one kernel call (all-gather and
// all-to-all CP): the communication is all exposed, before or after the compute.
void fill_unoverlapped_pass(RingPhasePrediction& ph, int64_t transfers, double bytes, double max_rank_compute_s,
                            double mean_rank_compute_s, double comm_s, double elementwise_s) {
  ph.compute_steps = 1;
  ph.transfers = transfers;
  ph.step_bytes = bytes;
  ph.first_step_compute_s = max_rank_compute_s;
  ph.step_compute_s = max_rank_compute_s;
  ph.step_comm_s = comm_s;
  ph.unhidden_comm_s = comm_s;
  ph.mean_rank_compute_s = mean_rank_compute_s;
  ph.max_rank_compute_s = max_rank_compute_s;
  ph.elementwise_s = elementwise_s;
  ph.exposed_comm_s = comm_s;
  ph.total_s = max_rank_compute_s + elementwise_s + comm_s;
}
}  // namespace

RingLayerPrediction predict_allgather_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                            int64_t cp_per_node, bool inter_node, double inter_slowdown) {
  if (x.attention != AttentionImpl::flash)
    throw bad_input("all-gather CP runs the flash kernel only (materialised scores of the whole sequence per rank "
                    "are what the method avoids); use cp_comm ring or attention flash");
  RingLayerPrediction r;
  r.comm = CpComm::allgather;
  const int64_t P = static_cast<int64_t>(x.cp);
  const AttentionFlops f = attention_forward_flops(x);
  const double mem_bw = achieved_memory_bandwidth_bytes_per_s(c);
  // One kernel call per rank over all of its visible pairs: the curve's x is that call's FLOPs,
  // so the slowest and the mean rank each run at the efficiency of their own call.
  // Its masked tiles are the ring's squares (the rank's chunks on their diagonals; striped: one
  // per stride), all in one call.
  const double mask_fw = rank_masked_flops(x, c.masked_tiles, true);
  const double mask_bw = rank_masked_flops(x, c.masked_tiles, false);
  const OneCallKernel max_call = one_call_kernel(f.max_rank, c, x.flash_kernel, peak_flops_per_s, mask_fw, mask_bw);
  const OneCallKernel mean_call = one_call_kernel(f.mean_rank, c, x.flash_kernel, peak_flops_per_s, mask_fw, mask_bw);
  r.kernel_efficiency = c.flash_forward_curve(x.flash_kernel).at(f.max_rank);
  r.backward_kernel_efficiency = c.flash_backward_curve(x.flash_kernel).at(f.max_rank);
  r.inter_node = inter_node && P > 1;
  r.forward_flops_mean_rank = f.mean_rank;
  r.forward_flops_max_rank = f.max_rank;
  r.imbalance = f.mean_rank > 0 ? f.max_rank / f.mean_rank : 1.0;

  const AllGatherCollectives coll = allgather_collectives(x, c, cp_per_node, inter_slowdown);
  const double received = P > 1 ? coll.full_kv_bytes * static_cast<double>(P - 1) / static_cast<double>(P) : 0.0;
  const double ag = coll.all_gather_s, rs = coll.reduce_scatter_s;
  const AttentionCoreBytes elem = attention_core_elementwise_bytes(x);  // 0 for flash; kept for one source

  // Not overlapped (assumption above): forward all-gathers K, V; backward re-gathers them and
  // reduce-scatters dK, dV.
  fill_unoverlapped_pass(r.forward, P > 1 ? 1 : 0, received, max_call.forward_s, mean_call.forward_s, ag,
                         mem_bw > 0 ? elem.forward / mem_bw : 0.0);
  fill_unoverlapped_pass(r.backward, P > 1 ? 2 : 0, 2.0 * received, max_call.backward_s, mean_call.backward_s, ag + rs,
                         mem_bw > 0 ? elem.backward / mem_bw : 0.0);

  r.scores_bytes_materialized = materialized_scores_bytes(x);
  r.scores_bytes_flash = flash_lse_bytes(x);
  r.scores_bytes = r.scores_bytes_flash;
  r.ring_buffer_bytes = allgather_buffer_bytes(x);
  return r;
}

RingLayerPrediction predict_alltoall_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                           const LinkProfile& link, bool inter_node) {
  if (x.attention != AttentionImpl::flash)
    throw bad_input("all-to-all CP runs the flash kernel only; use cp_comm ring or attention flash");
  const int64_t P = static_cast<int64_t>(x.cp);
  const double heads_tp = x.heads / x.tp, kv_tp = x.kv_heads / x.tp;
  const int64_t hq = static_cast<int64_t>(heads_tp), hkv = static_cast<int64_t>(kv_tp);
  if (P > 1 && (hq % P != 0 || (hkv % P != 0 && P % hkv != 0)))
    throw bad_input("all-to-all CP: CP = " + std::to_string(P) + " must divide the query heads per TP rank (" +
                    std::to_string(hq) + ") and divide or be a multiple of the KV heads per TP rank (" +
                    std::to_string(hkv) + ")");
  RingLayerPrediction r;
  r.comm = CpComm::alltoall;
  const AttentionFlops f = attention_forward_flops(x);
  const double mem_bw = achieved_memory_bandwidth_bytes_per_s(c);
  // Every rank: the whole sequence on 1/CP of the heads, one kernel call of the mean rank's FLOPs.
  const double flops = f.mean_rank;
  const OneCallKernel call = one_call_kernel(flops, c, x.flash_kernel, peak_flops_per_s,
                                             alltoall_masked_flops(x, c, true), alltoall_masked_flops(x, c, false));
  r.kernel_efficiency = c.flash_forward_curve(x.flash_kernel).at(flops);
  r.backward_kernel_efficiency = c.flash_backward_curve(x.flash_kernel).at(flops);
  r.inter_node = inter_node && P > 1;
  r.forward_flops_mean_rank = flops;
  r.forward_flops_max_rank = flops;
  r.imbalance = 1.0;

  const AllToAllCollectives a2a = alltoall_collectives(x, c, P, link, r.inter_node);
  const double comm = 2.0 * a2a.q_s + 2.0 * a2a.kv_s;  // forward Q, O + K, V; backward dO, dQ + dK, dV
  const double received =
      P > 1 ? (2.0 * a2a.q_bytes + 2.0 * a2a.kv_bytes) * static_cast<double>(P - 1) / static_cast<double>(P) : 0.0;
  const AttentionCoreBytes elem = attention_core_elementwise_bytes(x);  // 0 for flash; kept for one source

  // Not overlapped: forward Q, K, V in and O out; backward dO in and dQ, dK, dV out.
  const double pass_comm = P > 1 ? comm : 0.0;
  fill_unoverlapped_pass(r.forward, P > 1 ? 4 : 0, received, call.forward_s, call.forward_s, pass_comm,
                         mem_bw > 0 ? elem.forward / mem_bw : 0.0);
  fill_unoverlapped_pass(r.backward, P > 1 ? 4 : 0, received, call.backward_s, call.backward_s, pass_comm,
                         mem_bw > 0 ? elem.backward / mem_bw : 0.0);

  r.scores_bytes_materialized = materialized_scores_bytes(x);
  r.scores_bytes_flash = flash_lse_bytes(x);
  r.scores_bytes = r.scores_bytes_flash;
  r.ring_buffer_bytes = alltoall_buffer_bytes(x);
  return r;
}

RingLayerPrediction predict_hybrid_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                         const LinkProfile& a2a_link, bool a2a_inter, const LinkProfile& ring_link,
                                         bool ring_inter) {
  if (x.attention != AttentionImpl::flash)
    throw bad_input("hybrid CP runs the flash kernel only; use cp_comm ring or attention flash");
  const int64_t C = static_cast<int64_t>(x.cp), A = static_cast<int64_t>(x.cp_a2a);
  if (A < 1 || C % A != 0)
    throw bad_input("hybrid CP: the all-to-all group size " + std::to_string(A) + " must divide CP = " +
                    std::to_string(C));
  const int64_t hq = static_cast<int64_t>(x.heads / x.tp), hkv = static_cast<int64_t>(x.kv_heads / x.tp);
  if (A > 1 && (hq % A != 0 || (hkv % A != 0 && A % hkv != 0)))
    throw bad_input("hybrid CP: the all-to-all group size " + std::to_string(A) +
                    " must divide the query heads per TP rank (" + std::to_string(hq) +
                    ") and divide or be a multiple of the KV heads per TP rank (" + std::to_string(hkv) + ")");
  // The ring across the R groups, on the group's head shard.
  RingLayerPrediction r = predict_ring_layer(hybrid_ring_stage(x), c, peak_flops_per_s, ring_link, ring_inter);
  r.comm = CpComm::hybrid;
  // The all-to-alls inside each group: the rank's L/C tokens of every head it sends.
  double a2a = 0.0;
  if (A > 1) {
    const AllToAllCollectives g = alltoall_collectives(x, c, A, a2a_link, a2a_inter);
    a2a = 2.0 * g.q_s + 2.0 * g.kv_s;
  }
  for (RingPhasePrediction* ph : {&r.forward, &r.backward}) {
    ph->unhidden_comm_s += a2a;
    ph->exposed_comm_s += a2a;
    ph->total_s += a2a;
  }
  r.inter_node = (a2a_inter && A > 1) || r.inter_node;
  // Memory: the layer's own lse (not the ring stage's per-head view), the buffers of both stages.
  r.scores_bytes_materialized = materialized_scores_bytes(x);
  r.scores_bytes_flash = flash_lse_bytes(x);
  r.scores_bytes = r.scores_bytes_flash;
  r.ring_buffer_bytes = hybrid_buffer_bytes(x);
  return r;
}

namespace {
void require_positive(int64_t v, const char* field) {
  if (v < 1)
    throw bad_input(std::string("ring attention shape: ") + field + " must be >= 1, got " + std::to_string(v));
}
}  // namespace

RingLayerShape ring_layer_shape(const RingAttentionShape& s, const ClusterConfig& c) {
  require_positive(s.micro_batch, "micro_batch");
  require_positive(s.heads_per_tp, "heads_per_tp");
  require_positive(s.kv_heads_per_tp, "kv_heads_per_tp");
  require_positive(s.head_dim, "head_dim");
  require_positive(s.seq_len, "seq_len");
  require_positive(s.cp, "cp");
  require_positive(s.tp, "tp");
  if (s.heads_per_tp % s.kv_heads_per_tp != 0)
    throw bad_input("ring attention shape: heads_per_tp " + std::to_string(s.heads_per_tp) +
                    " not divisible by kv_heads_per_tp " + std::to_string(s.kv_heads_per_tp));
  const int64_t chunks = s.scheme == CpScheme::zigzag && s.cp > 1 ? 2 * s.cp : s.cp;  // CP 1: one chunk
  if (s.seq_len % chunks != 0)
    throw bad_input("ring attention shape: seq_len " + std::to_string(s.seq_len) + " not divisible by " +
                    (s.scheme == CpScheme::zigzag ? "2*CP = " : "CP = ") + std::to_string(chunks) + " (" +
                    to_string(s.scheme) + ")");
  RingLayerShape out;
  out.peak_flops_per_s = c.peak_flops_per_s(s.dtype);
  if (!(out.peak_flops_per_s > 0))
    throw bad_input(std::string("cluster ") + c.name + ": no peak FLOP/s for " + to_string(s.dtype));

  // Express the shape as a layer with TP = 1 and the per-TP head counts.
  LayerShape& x = out.layer;
  x.micro_batch = static_cast<double>(s.micro_batch);
  x.seq_len = static_cast<double>(s.seq_len);
  x.heads = static_cast<double>(s.heads_per_tp);
  x.kv_heads = static_cast<double>(s.kv_heads_per_tp);
  x.head_dim = static_cast<double>(s.head_dim);
  x.hidden = x.heads * x.head_dim;
  x.tp = 1;
  x.cp = static_cast<double>(s.cp);
  x.causal = s.causal;
  x.cp_scheme = s.scheme;
  x.attention = s.attention;
  x.flash_kernel = s.flash_kernel;
  if (s.attention == AttentionImpl::flash && !c.has_flash_curve(s.flash_kernel))
    throw bad_input(std::string("ring attention shape: the ") + flash_kernel_label(s.flash_kernel) +
                    " needs cluster " + c.name + "'s efficiency." + flash_curve_key(s.flash_kernel) +
                    " curve; it has none");
  x.cp_comm = s.comm;
  if (s.comm == CpComm::hybrid) {
    require_positive(s.a2a_size, "a2a_size");
    if (s.cp % s.a2a_size != 0)
      throw bad_input("ring attention shape: a2a_size " + std::to_string(s.a2a_size) + " does not divide cp " +
                      std::to_string(s.cp));
    x.cp_a2a = static_cast<double>(s.a2a_size);
  }
  x.activation_bytes = dtype_bytes(s.dtype);
  if (!s.document_lengths.empty()) {
    const DocumentAttentionWork w = document_attention_work(s.document_lengths, s.scheme, s.cp, s.causal);
    x.document_pair_fraction = w.pair_fraction;
    x.document_imbalance = w.imbalance;
  }
  Mesh mesh;
  mesh.tp = s.tp;
  mesh.cp = s.cp;
  static_cast<CpLinks&>(out) = cp_links(mesh, s.comm, s.comm == CpComm::hybrid ? s.a2a_size : 1, c);
  return out;
}

CpLinks cp_links(const Mesh& mesh, CpComm comm, int64_t a2a_size, const ClusterConfig& c) {
  CpLinks l;
  l.inter_node = c.gpus_per_node > 0 && !group_within_node(mesh, MeshDim::cp, c.gpus_per_node);
  // The CP ranks are tp apart: inside one node all of them, else G/tp per node when that tiles.
  l.cp_per_node = l.inter_node ? group_ranks_per_node(mesh.cp, mesh.tp, c.gpus_per_node) : mesh.cp;
  const int64_t a = comm == CpComm::hybrid ? std::max<int64_t>(1, a2a_size) : 1;
  l.a2a_inter_node = c.gpus_per_node > 0 && !cp_a2a_within_node(mesh, a, c.gpus_per_node);
  l.a2a_link = l.a2a_inter_node ? contended(c.inter_node, uplink_slowdown(a, mesh.tp, c, UplinkTraffic::all_to_all))
                                : c.intra_node;
  // What crosses the network: the ring over the CP group (ring), the all-to-all over it
  // (alltoall), the ring over the CP / A groups, members TP x A apart (hybrid), the all-gather's
  // and reduce-scatter's rings (allgather).
  switch (comm) {
    case CpComm::ring:
    case CpComm::allgather: l.slowdown = uplink_slowdown(mesh.cp, mesh.tp, c, UplinkTraffic::ring); break;
    case CpComm::alltoall: l.slowdown = uplink_slowdown(mesh.cp, mesh.tp, c, UplinkTraffic::all_to_all); break;
    case CpComm::hybrid: l.slowdown = uplink_slowdown(mesh.cp / a, mesh.tp * a, c, UplinkTraffic::ring); break;
  }
  l.link = l.inter_node ? contended(c.inter_node, l.slowdown) : c.intra_node;
  return l;
}

RingLayerPrediction predict_ring_attention(const RingAttentionShape& s, const ClusterConfig& c) {
  const RingLayerShape r = ring_layer_shape(s, c);
  if (s.comm == CpComm::allgather)
    return predict_allgather_layer(r.layer, c, r.peak_flops_per_s, r.cp_per_node, r.inter_node, r.slowdown);
  if (s.comm == CpComm::alltoall) return predict_alltoall_layer(r.layer, c, r.peak_flops_per_s, r.link, r.inter_node);
  if (s.comm == CpComm::hybrid)
    return predict_hybrid_layer(r.layer, c, r.peak_flops_per_s, r.a2a_link, r.a2a_inter_node, r.link, r.inter_node);
  return predict_ring_layer(r.layer, c, r.peak_flops_per_s, r.link, r.inter_node);
}

}  // namespace ringplan::sim
