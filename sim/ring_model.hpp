// Prediction of ONE attention layer run as ring attention on one CP group: per ring step
// compute and transfer, exposed communication, per-rank busy time with the sharding scheme's
// imbalance, and the memory of the scores (flash vs materialised) and of the ring buffers.
// `ringplan run` prints it beside the measured ring times; predict() builds every step's
// attention and ring terms from the same predict_ring_layer() (one source).
//
// Ring schedule modelled (DESIGN.md): forward has P compute steps (kernel, then the fp32 merge
// of its partial result, which is memory-bound); the K,V block for step k+1
// is in flight while step k computes (double buffer), so a step lasts
// max(compute of the slowest rank, transfer) and P-1 transfers are made. Backward has P
// compute steps (2.5x the forward FLOPs); K,V and the dK,dV accumulators (fp32) travel on,
// P-1 overlapped transfers plus the last hop of dK,dV home, which nothing hides. The backward
// kernel has its own rate (efficiency.attention_backward). Both kernels skip KV blocks fully
// hidden by the causal mask (as the runtime does); materialised computes the others in full.
//
// All-gather CP (CpComm::allgather, runtime/allgather_attention.hpp) is predicted by
// predict_allgather_layer() into the same RingLayerPrediction, so every consumer reads one
// shape. Forward: all-gather K,V of the whole sequence over the CP group (only the a_kv/t KV
// heads: GQA makes it cheap), then ONE flash kernel call of the rank's L/CP queries against
// all L keys (the visible pairs, and so the imbalance, are the sharding scheme's, as for the
// ring). Backward: all-gather K,V again (the runtime, like Transformer Engine's all-gather CP,
// does not keep the gathered copy from the forward), one backward kernel call producing dK,dV
// of the whole sequence, then reduce-scatter dK,dV to their owners. Assumption: the
// collectives are NOT overlapped with the attention kernel (the simple model: each waits for
// the other; the Llama 3 paper reports all-gather CP's communication as exposed but small), so
// every collective is exposed comm. Collectives use group_collective_s (efficiency curves,
// hierarchical when the CP group spans nodes), all in the activation dtype. Fields of a
// phase for allgather: compute_steps 1, transfers = collectives (forward 1, backward 2),
// step_bytes = bytes this rank receives in them ((P-1)/P of each full buffer), step_comm_s =
// their time, unhidden_comm_s = exposed_comm_s = the same, merge_step_s 0 (no merges).
// Materialised attention is not supported by the method (check_layout refuses it).
//
// All-to-all CP (CpComm::alltoall, DeepSpeed-Ulysses, runtime/alltoall_attention.hpp) is
// predicted by predict_alltoall_layer() into the same shape. Forward: 3 all-to-alls before
// attention (Q; K and V of the KV heads: sequence shards -> head shards) and 1 after (O back);
// backward the reverse: dO in, dQ, dK, dV out. An all-to-all of an n-rank group moving B bytes
// per rank (its whole send buffer) costs all_to_all_s = (n-1)/n * B / bw + (n-1) * latency on
// the link the CP group spans (group_within_node), the bandwidth scaled by the profile's
// all-gather efficiency curve at B (the same (n-1)/n bus traffic; ideal by default). Per rank
// B = b * (L/CP) * (a/t) * d * e for Q, O, dO, dQ and b * (L/CP) * max(a_kv/t, CP) * d * e for K,
// V, dK, dV (KV heads replicated when CP exceeds them). Not overlapped with attention: every
// all-to-all is exposed comm. Attention then runs ONE kernel call per rank over the whole
// sequence on (a/t)/CP heads: every rank does 1/CP of the layer's pairs whatever the scheme, so
// no causal imbalance (max = mean rank). Phase fields: compute_steps 1, transfers 4 (all-to-
// alls), step_bytes = bytes this rank receives in them, step_comm_s = unhidden_comm_s =
// exposed_comm_s = their time, merge_step_s 0. Flash only; check_layout refuses CP that does not
// divide the query heads per TP rank, or KV heads per TP rank that neither divide by CP nor
// divide it. Memory: alltoall_buffer_bytes().
//
// Hierarchical CP (CpComm::hybrid, Megatron/TE a2a+p2p, runtime/hybrid_attention.hpp) is
// predicted by predict_hybrid_layer() into the same shape. The CP group of C = A x R ranks is R
// groups of A consecutive CP ranks. Per pass the group runs the all-to-all CP's four all-to-alls
// over its A ranks (the same bytes per rank as alltoall with CP = A: the rank's L/C tokens of
// every head it sends) on `a2a_link` (intra-node when TP x A ranks stay in one node), not
// overlapped, so exposed; between them the ring of R ranks runs on the group's head shard
// exactly as predict_ring_layer() predicts a ring of R ranks holding L/R tokens of (a/t)/A
// query heads and max((a_kv/t)/A, 1) KV heads (hybrid_ring_stage()): transfers overlapped with
// the steps' compute, dK,dV's last hop unhidden, on `ring_link`. No causal imbalance inside a
// group (after the all-to-all each rank holds all of the group's tokens); across groups the
// ring's imbalance of the scheme at R: the group's tokens are the R-level contiguous or zigzag
// shard exactly (zigzag chunks gA .. gA+A-1 and their mirrors are the R-level zigzag chunk g and
// its mirror); for striped the group's tokens are A consecutive stripes of every C, modelled as
// striped at R (both are balanced to O(1/L)); with packed documents the C-level document
// imbalance is kept (a group sums A ranks, so it is an upper bound). Phase fields: the ring's
// (compute_steps R, transfers R-1, step_bytes and step_comm_s of one ring hop) with the
// all-to-alls added to unhidden_comm_s, exposed_comm_s and total_s. A = 1 is the ring, A = C
// the all-to-all (R = 1: a ring of one rank). The event replay (sim/ring_event_sim.hpp,
// simulate_cp_layer) replays every method from the same pieces (ring_kernel_rate,
// one_call_kernel, allgather_collectives, alltoall_collectives, the links) and agrees with these
// closed forms on balanced cases; `simulate --trace` writes it for every method. `run --trace`
// measures the ring's steps only and refuses the other methods.
#pragma once
#include <cstdint>

#include "core/config.hpp"
#include "sim/formulas.hpp"

namespace ringplan::sim {

// Shapes of one attention layer as the runtime runs it (heads already divided by TP).
struct RingAttentionShape {
  int64_t micro_batch = 1;
  int64_t heads_per_tp = 0;
  int64_t kv_heads_per_tp = 0;
  int64_t head_dim = 0;
  int64_t seq_len = 0;        // full sequence L
  int64_t cp = 1;             // ranks in the ring
  CpScheme scheme = CpScheme::zigzag;
  bool causal = true;
  AttentionImpl attention = AttentionImpl::flash;
  // Which flash kernel's curves price the kernels (TrainingConfig::flash_kernel); the runtime's
  // own kernels run as `standard` (the profile `calibrate` measured them into).
  FlashKernel flash_kernel = FlashKernel::standard;
  DType dtype = DType::bf16;
  // Ranks inside one CP group's stride (the TP size): the ring of this one TP x CP block stays
  // in a node when tp * cp <= gpus_per_node (DESIGN.md rank order). 1 for a plain CP run.
  int64_t tp = 1;
  CpComm comm = CpComm::ring;  // ring: predict_ring_layer; allgather / alltoall / hybrid: predict_<comm>_layer
  int64_t a2a_size = 1;        // hybrid: the all-to-all group size A (divides cp); ignored otherwise
  // Packed documents (TrainingConfig::documents), empty: none. Their closed-form work per rank
  // (core/documents.hpp document_attention_work) scales the pairs, as in predict().
  std::vector<int64_t> document_lengths;
};

struct RingPhasePrediction {
  int64_t compute_steps = 0;
  int64_t transfers = 0;            // overlapped transfers (P-1)
  double step_bytes = 0;            // bytes per overlapped transfer per rank
  double first_step_compute_s = 0;  // own (diagonal) block, slowest rank
  double step_compute_s = 0;        // each later step, slowest rank (kernel + merge)
  double merge_step_s = 0;          // fp32 accumulation of one step's partial result
  double step_comm_s = 0;           // alpha + bytes/B of one transfer
  double unhidden_comm_s = 0;       // transfers nothing can hide (backward: dK,dV home)
  double mean_rank_compute_s = 0;   // attention kernel time of the average rank
  double max_rank_compute_s = 0;    // attention kernel time of the slowest rank
  double elementwise_s = 0;         // materialised softmax passes (0 for flash)
  double exposed_comm_s = 0;        // sum of max(0, comm - compute) + unhidden
  double total_s = 0;               // slowest rank: max-rank compute + elementwise + exposed comm
};

struct RingLayerPrediction {
  RingPhasePrediction forward;
  RingPhasePrediction backward;
  double imbalance = 1;                  // cp_imbalance(): slowest / mean rank work
  double forward_flops_mean_rank = 0;    // attention forward FLOPs of the average rank
  double forward_flops_max_rank = 0;
  double kernel_efficiency = 0;          // the flash kernel's forward curve at the per-step kernel FLOPs
  double backward_kernel_efficiency = 0; // backward kernel's achieved fraction of peak
  bool inter_node = false;               // the ring crosses nodes
  double scores_bytes = 0;               // materialised: b*(H/TP)*(L/CP)*L*e; flash: fp32 lse
  double scores_bytes_materialized = 0;  // both, for the comparison
  double scores_bytes_flash = 0;
  double ring_buffer_bytes = 0;          // K,V double buffer + 4 fp32 dK,dV blocks (ring_buffer_bytes());
                                         // allgather: allgather_buffer_bytes() (full-sequence K,V, dK,dV);
                                         // alltoall: alltoall_buffer_bytes() (head-sharded Q,K,V,O + grads)
  CpComm comm = CpComm::ring;            // the method predicted
};

// Achieved rate of the attention kernels of one ring step and the merge cost per step (the
// pieces shared by predict_ring_layer() and the event simulator, sim/ring_event_sim.hpp).
struct RingKernelRate {
  double per_pair_flops = 0;       // forward FLOPs per visible (query, key) pair: 4*b*(a/t)*d
  double forward_flops_per_s = 0;  // achieved rate of a step's forward kernel(s)
  double backward_factor = 2.5;    // backward FLOPs / forward FLOPs of a block (2.5 flash, 2 materialised)
  // Achieved rate of a step's backward kernel(s), counting backward_factor x the forward FLOPs:
  // flash: peak * ClusterConfig::flash_backward_curve(x.flash_kernel) at the block's forward
  // FLOPs (equal to forward_flops_per_s when the cluster sets no efficiency.attention_backward, and
  // on a named kernel's one curve: Triton, FlashAttention-2);
  // materialised: the GEMM rate on ClusterConfig::matmul_backward_curve() (= the forward's
  // matmul curve unless the profile sets efficiency.matmul_backward).
  double backward_flops_per_s = 0;
  double merge_forward_s = 0;      // fp32 merge of one step's (O, lse)
  double merge_backward_s = 0;     // fp32 accumulation of one step's dQ, dK, dV
};
RingKernelRate ring_kernel_rate(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s);

// One flash kernel call of `flops` forward FLOPs (all-gather and all-to-all CP run one call per
// rank and pass): each call runs at `kernel`'s forward curve at its own FLOPs, the backward at its
// backward curve for 2.5x the FLOPs (ClusterConfig::flash_forward_curve / flash_backward_curve).
// Shared by the closed forms and the replay.
struct OneCallKernel {
  double forward_s = 0;
  double backward_s = 0;
};
// masked_fw_flops / masked_bw_flops: the call's masked-tile work (ClusterConfig::masked_tiles) in
// forward-FLOP equivalents, added to its time at the call's rate (the curve's x stays `flops`).
OneCallKernel one_call_kernel(double flops, const ClusterConfig& c, FlashKernel kernel, double peak_flops_per_s,
                              double masked_fw_flops = 0.0, double masked_bw_flops = 0.0);
// All-to-all CP's masked-tile work per rank (one causal square of the whole sequence on its
// 1/CP of the heads), in forward-FLOP equivalents; forward or backward cost.
double alltoall_masked_flops(const LayerShape& x, const ClusterConfig& c, bool forward);

// The collectives of all-gather CP (predict_allgather_layer): the all-gather of the whole
// sequence's K,V over the CP group and the reduce-scatter of dK,dV, each once per pass that
// has it (group_collective_s, hierarchical when the group spans nodes).
struct AllGatherCollectives {
  double full_kv_bytes = 0;        // K and V of the whole sequence: 2 * b * L * (a_kv/t) * d * e
  double all_gather_s = 0;         // all-gather of K,V
  double reduce_scatter_s = 0;     // reduce-scatter of dK,dV
};
// `inter_slowdown`: CpLinks::slowdown.
AllGatherCollectives allgather_collectives(const LayerShape& x, const ClusterConfig& c, int64_t cp_per_node,
                                           double inter_slowdown = 1.0);

// One all-to-all of each kind of tensor of all-to-all CP inside a group of n ranks, every rank
// holding L/x.cp tokens (alltoall: n = CP; hybrid: n = A). 0 when n <= 1.
struct AllToAllCollectives {
  double q_bytes = 0;   // send buffer of a query-head tensor (Q, O, dO, dQ): b (L/CP) (a/t) d e
  double kv_bytes = 0;  // of a KV-head tensor (K, V, dK, dV): b (L/CP) max(a_kv/t, n) d e
  double q_s = 0;       // one all-to-all of q_bytes
  double kv_s = 0;      // one all-to-all of kv_bytes
};
AllToAllCollectives alltoall_collectives(const LayerShape& x, const ClusterConfig& c, int64_t n,
                                         const LinkProfile& link, bool inter_node);

// The links a CP method's traffic runs on (predict() and ring_layer_shape() both take them from
// cp_links): the ring's (or all-to-all's) link, the hybrid all-to-all group's, and what a switch
// group's oversubscribed uplinks leave of the inter-node link for each (uplink_slowdown).
struct CpLinks {
  LinkProfile link;         // ring: the ring's link; alltoall: the group's; hybrid: the ring across groups
  bool inter_node = false;  // the CP group spans nodes
  int64_t cp_per_node = 1;  // ranks of the CP group per node it spans (cp when inside one node)
  double slowdown = 1;      // uplink_slowdown of the method's traffic across nodes (`link` carries it;
                            // allgather passes it to its collectives)
  LinkProfile a2a_link;          // hybrid: the link of an all-to-all group of a2a_size ranks
  bool a2a_inter_node = false;
};
// CP ranks are TP apart (rank order TP, CP, DP, PP); `a2a_size` is the hybrid group (1 otherwise).
CpLinks cp_links(const Mesh& mesh, CpComm comm, int64_t a2a_size, const ClusterConfig& c);

// A validated RingAttentionShape as a layer (TP folded into the head counts) and its links.
struct RingLayerShape : CpLinks {
  LayerShape layer;
  double peak_flops_per_s = 0;
};
RingLayerShape ring_layer_shape(const RingAttentionShape& s, const ClusterConfig& c);

// The one implementation, used by predict() with the layer shape of a layout.
RingLayerPrediction predict_ring_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                       const LinkProfile& ring_link, bool inter_node);

// All-gather CP of one layer (see the top of this file). `cp_per_node`: the CP group's ranks
// per node (>= x.cp inside one node), for group_collective_s. Flash attention only: throws
// bad_input for a materialised shape. With x.cp == 1 it is the plain single-rank attention.
RingLayerPrediction predict_allgather_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                            int64_t cp_per_node, bool inter_node, double inter_slowdown = 1.0);

// All-to-all CP of one layer (see the top of this file) on `link` (the CP group's). Flash only:
// throws bad_input for a materialised shape or heads the CP size cannot split. With x.cp == 1 it
// is the plain single-rank attention.
RingLayerPrediction predict_alltoall_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                           const LinkProfile& link, bool inter_node);

// Hierarchical CP of one layer (see the top of this file): x.cp_a2a = A. a2a_link / a2a_inter:
// the A-rank group's link; ring_link / ring_inter: the link the ring across groups spans. Flash
// only: throws bad_input for a materialised shape, an A that does not divide CP, or heads A
// cannot split (as all-to-all CP with CP = A).
RingLayerPrediction predict_hybrid_layer(const LayerShape& x, const ClusterConfig& c, double peak_flops_per_s,
                                         const LinkProfile& a2a_link, bool a2a_inter, const LinkProfile& ring_link,
                                         bool ring_inter);

// For the runtime's comparison: validates the shape (throws ringplan::Error bad_input naming
// the field and the valid range) and picks the link the ring spans; s.comm picks the method.
RingLayerPrediction predict_ring_attention(const RingAttentionShape& s, const ClusterConfig& c);

}  // namespace ringplan::sim
