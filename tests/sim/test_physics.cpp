// Physics of the cost model taken from published sources rather than fitted: the shipped
// profiles' collective bus-bandwidth efficiencies (nccl-tests figures), Megatron's fp32
// main-gradient buffers and distributed optimizer, TP communication overlap, and hierarchical
// collectives of groups that span nodes. Each test names its source.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/config_yaml.hpp"
#include "sim/cost_model.hpp"
#include "sim/formulas.hpp"
#include "test_helpers.hpp"

using namespace ringplan;
using namespace ringplan::sim;

namespace {
ClusterConfig shipped(const std::string& name) {
  return load_cluster(std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/" + name + ".yaml");
}
}  // namespace

// Achieved bus bandwidth over the link's line rate, as the cost model charges it: the time of an
// n-rank ring all-reduce less the model's own latency term (2(n-1) hops of latency_us).
static double model_efficiency(double bytes, double seconds, int64_t n, const LinkProfile& link) {
  const double k = static_cast<double>(n);
  const double transfer = seconds - 2.0 * (k - 1.0) * link.latency_s;
  return 2.0 * (k - 1.0) / k * bytes / link.bandwidth_bytes_per_s / transfer;
}

TEST_CASE("shipped collective efficiencies reproduce the cited nccl-tests bus bandwidths") {
  // NVLink 4, ring all-reduce on 8 x H20 (github.com/kvcache-ai/Mooncake/pull/3484, nccl-tests
  // all_reduce_perf, out-of-place time in us): 16 MiB 121.33, 32 MiB 195.40, 128 MiB 700.25,
  // 256 MiB 1366.17, 512 MiB 2671.60, 1 GiB 5252.64. With the profile's 3 us per hop subtracted,
  // no size dependence is left (half_mib 0) and the level is 0.79-0.85: the profile's 0.8 for the
  // ring collectives (reduce-scatter, all-gather; the all-reduce uses NVLink SHARP, see below).
  const ClusterConfig h100 = shipped("dgx_h100");
  const double mib = 1024.0 * 1024.0;
  const double rows[][2] = {{16, 121.33}, {32, 195.40}, {128, 700.25}, {256, 1366.17}, {512, 2671.60}, {1024, 5252.64}};
  for (const auto& r : rows) {
    const double eff = model_efficiency(r[0] * mib, r[1] * 1e-6, 8, h100.intra_node);
    INFO(r[0] << " MiB: " << eff);
    CHECK(std::fabs(eff - h100.collectives.reduce_scatter.at(r[0] * mib)) < 0.06);
    CHECK(std::fabs(eff - h100.collectives.all_gather.at(r[0] * mib)) < 0.06);
  }
  // NCCL's maintainer (github.com/NVIDIA/nccl-tests/issues/212): ~370 GB/s effective NVLink 4 for
  // non-all-reduce collectives; all-reduce with NVLink SHARP ~480 GB/s busbw (>= 450 line rate).
  CHECK(h100.collectives.all_gather.max_efficiency * 450 == doctest::Approx(370).epsilon(0.04));
  CHECK(h100.collectives.all_reduce.max_efficiency == 1.0);
  // NVLink 3 (github.com/NVIDIA/nccl-tests/issues/149): ~230 GB/s of 300.
  const ClusterConfig a100 = shipped("dgx_a100_80gb");
  CHECK(a100.collectives.all_reduce.max_efficiency * 300 == doctest::Approx(230).epsilon(0.01));
  // HDR: 12.2 of 12.5 GB/s per 100 Gb/s card (nccl-tests#29), 96 of 100 (nccl-tests#119).
  REQUIRE(a100.has_inter_node_collectives);
  CHECK(a100.inter_node_collectives.all_reduce.max_efficiency == doctest::Approx(0.96));
  // NDR: 46-48 of 50 GB/s per NIC (nccl-tests#290).
  for (const char* name : {"dgx_h100", "h200", "b200", "grand_teton_h100"}) {
    INFO(name);
    const ClusterConfig c = shipped(name);
    REQUIRE(c.has_inter_node_collectives);
    CHECK(c.inter_node_collectives.reduce_scatter.max_efficiency * 50 >= 46);
    CHECK(c.inter_node_collectives.reduce_scatter.max_efficiency * 50 <= 48);
    CHECK_FALSE(c.collectives.reduce_scatter.is_ideal());
  }
  // NVLink 5: 8 x B200 all-reduce "830+" GB/s busbw of 900 (nccl#1807).
  CHECK(shipped("b200").collectives.all_reduce.max_efficiency * 900 == doctest::Approx(830).epsilon(0.01));
}

TEST_CASE("collectives use the curve of the link they run on") {
  // TP inside a node uses `collectives`; a DP gradient all-reduce across nodes uses
  // `collectives_inter_node` once set: changing one curve moves only the terms on its link.
  Experiment e = test::llama_experiment(4096, 64);
  ParallelOptions o;
  const Mesh tp_node = test::mesh_of(1, 8, 1, 1);  // one node, TP 8
  const Mesh dp_wide = test::mesh_of(64, 1, 1, 1);  // DP 64 over 8 nodes
  const Prediction tp0 = predict(e, tp_node, o), dp0 = predict(e, dp_wide, o);
  e.cluster.has_inter_node_collectives = true;
  e.cluster.inter_node_collectives.all_reduce = {0.5, 0};
  const Prediction tp1 = predict(e, tp_node, o), dp1 = predict(e, dp_wide, o);
  CHECK(tp1.time.tp_comm_s == doctest::Approx(tp0.time.tp_comm_s));
  CHECK(dp1.time.dp_comm_exposed_s > dp0.time.dp_comm_exposed_s);
  e.cluster.collectives.all_reduce = {0.5, 0};
  const Prediction tp2 = predict(e, tp_node, o), dp2 = predict(e, dp_wide, o);
  CHECK(tp2.time.tp_comm_s > tp1.time.tp_comm_s);
  CHECK(dp2.time.dp_comm_exposed_s == doctest::Approx(dp1.time.dp_comm_exposed_s));
  // Unset inter-node curves fall back to `collectives` (a profile without the inter-node key).
  e.cluster.has_inter_node_collectives = false;
  CHECK(predict(e, dp_wide, o).time.dp_comm_exposed_s == doctest::Approx(dp1.time.dp_comm_exposed_s));
}

TEST_CASE("Megatron fp32 main gradients: 18 bytes per parameter, 6 + 12/d with the distributed optimizer") {
  // Megatron-LM docs/source/api-guide/dist_optimizer.md @ 50b073cc, bytes per parameter,
  // "float16 param, fp32 grads": non-distributed 18, distributed optimizer 6 + 12/d.
  const StateBytes sb = state_bytes_per_param(DType::bf16, Optimizer::adam, true);
  CHECK(sb.weights + sb.gradients + sb.optimizer == 18.0);
  CHECK(sb.gradients == 4.0);
  const StateBytes same = state_bytes_per_param(DType::bf16, Optimizer::adam, false);
  CHECK(same.weights + same.gradients + same.optimizer == 16.0);  // ZeRO paper
  const StateBytes f32 = state_bytes_per_param(DType::fp32, Optimizer::adam, true);
  CHECK(f32.weights + f32.gradients + f32.optimizer == 16.0);  // "fp32 param, fp32 grads": 16

  Experiment e = test::llama_experiment(4096, 64);
  e.training.fp32_grad_accumulation = true;
  const Mesh mesh = test::mesh_of(8, 2, 2, 1);
  const double psi = model_params(e.model) / 2;  // per TP shard, PP 1
  const double d = 8 * 2;                        // DP x CP
  ParallelOptions o;
  o.zero_stage = 0;
  MemoryBreakdown m = predict(e, mesh, o).memory;
  CHECK(m.weights_bytes + m.gradients_bytes + m.optimizer_bytes == doctest::Approx(18 * psi));
  o.zero_stage = 1;  // Megatron's distributed optimizer
  m = predict(e, mesh, o).memory;
  CHECK(m.weights_bytes + m.gradients_bytes + m.optimizer_bytes == doctest::Approx((6 + 12 / d) * psi));
  CHECK(m.gradients_bytes == doctest::Approx(4 * psi));  // the main_grad buffer is full size
  // The allocator's reserve stays its own term.
  CHECK(m.reserved_bytes == doctest::Approx(e.cluster.memory_reserved_bytes));
  // The gradient reduction moves the fp32 buffer: twice the bytes of bf16 gradients.
  Experiment same_e = e;
  same_e.training.fp32_grad_accumulation = false;
  const Mesh dp_only = test::mesh_of(64, 1, 1, 1);
  o.zero_stage = 0;
  const double t32 = predict(e, dp_only, o).time.dp_comm_exposed_s;
  const double t16 = predict(same_e, dp_only, o).time.dp_comm_exposed_s;
  CHECK(t32 > 1.5 * t16);
}

TEST_CASE("hierarchical collectives of a group that spans nodes") {
  // NCCL across nodes: intra-node reduce-scatter, inter-node all-reduce of 1/g of the data (every
  // GPU on its own NIC), intra-node all-gather; nccl-tests' multi-node busbw is then the node's
  // NIC rate, g x the per-GPU link (github.com/NVIDIA/nccl-tests/issues/119: 4 HDR NICs per
  // node of 8 GPUs, busbw ~96 of 100 GB/s = the 4 NICs' rate, not one GPU's share).
  ClusterConfig c = test::a100_cluster(4);
  const double bytes = 1e9;
  const int64_t n = 32, g = 8, nodes = 4;
  const double expect = reduce_scatter_s(g, bytes, c.intra_node) + all_reduce_s(nodes, bytes / g, c.inter_node) +
                        all_gather_s(g, bytes, c.intra_node);
  CHECK(group_collective_s(CollectiveKind::all_reduce, n, g, bytes, c) == doctest::Approx(expect));
  // Reduce-scatter and all-gather: the same two-level bandwidth terms, but the latency of NCCL's one
  // ring over all n ranks (nccl src/graph/tuning.cc): n - nodes NVLink steps and nodes - 1 network
  // steps, not the two levels' (g - 1) + (nodes - 1).
  const double ring_latency = (n - nodes) * c.intra_node.latency_s + (nodes - 1) * c.inter_node.latency_s;
  const double two_level_latency = (g - 1) * c.intra_node.latency_s + (nodes - 1) * c.inter_node.latency_s;
  REQUIRE(c.intra_node.latency_s > 0);
  CHECK(group_collective_s(CollectiveKind::reduce_scatter, n, g, bytes, c) ==
        doctest::Approx(reduce_scatter_s(g, bytes, c.intra_node) + reduce_scatter_s(nodes, bytes / g, c.inter_node) -
                        two_level_latency + ring_latency));
  CHECK(group_collective_s(CollectiveKind::all_gather, n, g, bytes, c) ==
        doctest::Approx(all_gather_s(nodes, bytes / g, c.inter_node) + all_gather_s(g, bytes, c.intra_node) -
                        two_level_latency + ring_latency));
  // The ring's latency grows with the group at a fixed node size: 64 nodes pay 448 NVLink steps.
  const double small = group_collective_s(CollectiveKind::all_gather, 128, 8, 1.0, c);
  const double large = group_collective_s(CollectiveKind::all_gather, 512, 8, 1.0, c);
  CHECK(large - small == doctest::Approx((448 - 112) * c.intra_node.latency_s + 48 * c.inter_node.latency_s).epsilon(1e-3));
  // Far cheaper than the flat ring charged entirely at one GPU's NIC share ...
  CHECK(group_collective_s(CollectiveKind::all_reduce, n, g, bytes, c) < 0.25 * all_reduce_s(n, bytes, c.inter_node));
  // ... which is what a group with one rank per node still gets; inside a node, the flat NVLink ring.
  CHECK(group_collective_s(CollectiveKind::all_reduce, n, 1, bytes, c) == doctest::Approx(all_reduce_s(n, bytes, c.inter_node)));
  CHECK(group_collective_s(CollectiveKind::all_reduce, 8, 8, bytes, c) == doctest::Approx(all_reduce_s(8, bytes, c.intra_node)));
  // The inter-node part uses the inter-node curve.
  c.has_inter_node_collectives = true;
  c.inter_node_collectives.all_reduce = {0.5, 0};
  CHECK(group_collective_s(CollectiveKind::all_reduce, n, g, bytes, c) ==
        doctest::Approx(reduce_scatter_s(g, bytes, c.intra_node) + all_reduce_s(nodes, bytes / g, c.inter_node, {0.5, 0}) +
                        all_gather_s(g, bytes, c.intra_node)));

  // Ranks per node of mesh groups (ranks fill nodes in the order TP, CP, DP, PP; 8 GPUs a node).
  CHECK(group_ranks_per_node(64, 2, 8) == 4);   // DP 64 behind TP 2: 4 per node
  CHECK(group_ranks_per_node(16, 8, 8) == 1);   // behind TP 8: one per node
  CHECK(group_ranks_per_node(16, 1, 8) == 8);   // TP 16: 8 per node
  CHECK(group_ranks_per_node(4, 2, 8) == 4);    // inside a node
  CHECK(group_ranks_per_node(3, 1, 8) == 1);    // TP 3 straddles nodes: flat
  // In predict: DP 32 x TP 2 over 8 nodes reduces its gradients hierarchically (4 per node).
  Experiment e = test::llama_experiment(4096, 64);
  e.cluster = test::a100_cluster(8);
  ParallelOptions o;
  const Prediction p = predict(e, test::mesh_of(32, 2, 1, 1), o);
  const double grad_bytes = model_params(e.model) / 2 * 2;  // bf16 gradients of one TP shard
  const double reduce = group_collective_s(CollectiveKind::all_reduce, 32, 4, grad_bytes, e.cluster);
  CHECK(p.time.dp_comm_exposed_s >= reduce / e.model.layers * 0.999);
  CHECK(p.time.dp_comm_exposed_s <= reduce * 1.001);
  CHECK(reduce < 0.5 * all_reduce_s(32, grad_bytes, e.cluster.inter_node));
}

TEST_CASE("overlapped collectives take their SM share of the compute they hide behind") {
  // NCCL CTAs hold SMs no compute kernel shares (github.com/NVIDIA/nccl/issues/689): computation
  // overlapped with a collective of time C advances at 1 - share, so the pair ends at
  // max(C, G + share x C).
  CHECK(overlapped_exposed_s(1.0, 3.0, 0.0) == 0.0);                     // hidden, free overlap
  CHECK(overlapped_exposed_s(1.0, 3.0, 0.125) == doctest::Approx(0.125));  // hidden, share x C
  CHECK(overlapped_exposed_s(4.0, 3.0, 0.125) == doctest::Approx(1.0));    // outlasts the compute
  CHECK(overlapped_exposed_s(1.0, 0.9, 0.125) == doctest::Approx(0.125));  // G + sC = 1.025 > C
  CHECK(overlapped_exposed_s(0.0, 3.0, 0.5) == 0.0);
  // Only the overlapped TP collectives change. TP 2 without SP: each layer's two backward
  // all-reduces (0.29 ms at 8K tokens of Llama 8B on NVLink 3) hide behind weight-gradient GEMMs
  // of about 1 ms, so free overlap charges only the forward's two: tp_comm = 2 AR x layers x m.
  // With the share, the hidden two add share x AR each: tp_comm x (1 + share).
  Experiment e = test::llama_experiment(8192, 64);
  ParallelOptions o;
  const Mesh tp2 = test::mesh_of(8, 2, 1, 1);
  const Prediction free_overlap = predict(e, tp2, o);
  e.cluster.overlap_sm_share = 16.0 / 108.0;
  const Prediction shared = predict(e, tp2, o);
  CHECK(shared.time.forward_compute_s == doctest::Approx(free_overlap.time.forward_compute_s));
  // What free overlap hides is what tp_overlap none exposes on top of it (the two backward
  // all-reduces per layer and the output layer's input-gradient all-reduce): the share adds
  // share x that, nothing else.
  e.cluster.overlap_sm_share = 0.0;
  ParallelOptions sync = o;
  sync.tp_overlap = TpOverlap::none;
  const double hidden = predict(e, tp2, sync).time.tp_comm_s - free_overlap.time.tp_comm_s;
  e.cluster.overlap_sm_share = 16.0 / 108.0;
  CHECK(hidden > 0.0);
  CHECK(shared.time.tp_comm_s - free_overlap.time.tp_comm_s == doctest::Approx(16.0 / 108.0 * hidden));
  // TP 8: the QKV all-reduce outlasts its weight-gradient GEMM (C - G > share x C: charged as
  // before), the MLP's does not: the share adds less than at TP 2, in proportion.
  e.cluster.overlap_sm_share = 0.0;
  const double tp8_free = predict(e, test::mesh_of(8, 8, 1, 1), o).time.tp_comm_s;
  e.cluster.overlap_sm_share = 16.0 / 108.0;
  const double tp8_shared = predict(e, test::mesh_of(8, 8, 1, 1), o).time.tp_comm_s;
  CHECK(tp8_shared > tp8_free);
  CHECK(tp8_shared < tp8_free * (1.0 + 16.0 / 108.0));
  // DP gradient reduction: the buckets hidden behind the backward now cost their share.
  CHECK(shared.time.dp_comm_exposed_s > free_overlap.time.dp_comm_exposed_s);
  // The key reads from YAML, in range, and is written back.
  const ClusterConfig a100 = shipped("dgx_a100_80gb");
  CHECK(a100.overlap_sm_share == doctest::Approx(16.0 / 108.0).epsilon(0.01));
}

TEST_CASE("tp_overlap: none exposes every TP collective, pipelined hides the forward ones too") {
  // Megatron-DeepSpeed's ColumnParallelLinear (bigscience-workshop/Megatron-DeepSpeed,
  // megatron/mpu/layers.py) all-reduces the input gradient in the autograd backward of
  // copy_to_tensor_model_parallel_region, synchronously: tp_overlap none. Megatron-LM's
  // LinearWithGradAccumulationAndAsyncCommunication starts it asynchronously before the
  // weight-gradient GEMM: backward (the default).
  Experiment e = test::llama_experiment(8192, 64);
  ParallelOptions o;
  const Mesh tp2 = test::mesh_of(8, 2, 1, 1);
  o.tp_overlap = TpOverlap::backward;
  const Prediction async = predict(e, tp2, o);
  o.tp_overlap = TpOverlap::none;
  const Prediction sync = predict(e, tp2, o);
  // TP 2 hides the backward all-reduces behind the weight-gradient GEMMs (test above): backward
  // charges per layer the forward's 2 all-reduces, plus the embedding's all-reduce and the loss's
  // three all-reduces of T floats per micro-batch; none adds the 2 backward ones per layer and the
  // output layer's input gradient (T x h, as the embedding's). So none = 2 x backward less the
  // three small ones: equal within 0.1 %.
  CHECK(sync.time.tp_comm_s == doctest::Approx(2.0 * async.time.tp_comm_s).epsilon(1e-3));
  CHECK(sync.time.tp_comm_s < 2.0 * async.time.tp_comm_s);
  CHECK(sync.time.forward_compute_s == doctest::Approx(async.time.forward_compute_s));
  // Sequence parallelism: pipelined <= backward <= none. Every collective of TP 2 hides behind
  // its GEMM when pipelined, so only the SM share of them is left.
  o.sequence_parallel = true;
  e.cluster.overlap_sm_share = 16.0 / 108.0;
  double tp[3];
  for (const TpOverlap t : {TpOverlap::none, TpOverlap::backward, TpOverlap::pipelined}) {
    o.tp_overlap = t;
    CHECK(check_layout(e, tp2, o, tp2.world_size()).empty());
    tp[static_cast<int>(t)] = predict(e, tp2, o).time.tp_comm_s;
  }
  CHECK(tp[0] > tp[1]);
  CHECK(tp[1] > tp[2]);
  CHECK(tp[2] > 0.0);  // the SM share stays
  // pipelined without sequence parallelism is refused (Megatron-LM demands --sequence-parallel).
  o.sequence_parallel = false;
  o.tp_overlap = TpOverlap::pipelined;
  CHECK(check_layout(e, tp2, o, tp2.world_size()).find("needs sequence_parallel") != std::string::npos);
  CHECK(check_layout(e, test::mesh_of(16, 1, 1, 1), o, 16).empty());  // TP 1: nothing to overlap
}

TEST_CASE("vocabulary-parallel embedding and loss: their TP collectives per micro-batch") {
  // Megatron's VocabParallelEmbedding all-reduces its T x h output; vocab_parallel_cross_entropy
  // all-reduces the max logit, the target logit and the sum of exponentials (T floats each); the
  // column-parallel output layer all-reduces its input gradient (T x h). With tp_overlap none all
  // are exposed: the per-micro-batch intercept of tp_comm over the layer count is them.
  Experiment e = test::llama_experiment(8192, 8);
  ParallelOptions o;
  o.tp_overlap = TpOverlap::none;
  const Mesh tp2 = test::mesh_of(1, 2, 1, 1);
  auto tp_comm = [&](int64_t layers, const Mesh& mesh) {
    Experiment x = e;
    x.model.layers = layers;
    return predict(x, mesh, o).time.tp_comm_s;
  };
  const double per_layer = tp_comm(3, tp2) - tp_comm(2, tp2);
  const double intercept = tp_comm(2, tp2) - 2.0 * per_layer;
  const double m = 8.0;  // global batch 8, DP 1, micro-batch 1
  const double tokens = 8192.0, act = tokens * static_cast<double>(e.model.hidden) * 2.0;
  const double ar = group_collective_s(CollectiveKind::all_reduce, 2, 2, act, e.cluster);
  const double small = group_collective_s(CollectiveKind::all_reduce, 2, 2, tokens * 4.0, e.cluster);
  CHECK(intercept == doctest::Approx(m * (2.0 * ar + 3.0 * small)));
  // With PP > 1 the embedding sits on the first stage, off the critical (last) one.
  const Mesh tp2pp2 = test::mesh_of(1, 2, 1, 2);
  const double per_layer_pp = tp_comm(6, tp2pp2) - tp_comm(4, tp2pp2);  // 3 vs 2 layers per stage
  CHECK(tp_comm(4, tp2pp2) - 2.0 * per_layer_pp == doctest::Approx(m * (ar + 3.0 * small)));
}

TEST_CASE("pipeline split: Megatron-LM's uneven stages and torchtitan's automatic split") {
  auto layers_of = [](int64_t layers, int64_t pp, const ParallelOptions& o) {
    std::vector<int64_t> n;
    for (int64_t d = 0; d < pp; ++d) n.push_back(stage_layers(layers, pp, o, d));
    return n;
  };
  ParallelOptions even;
  CHECK(layers_of(32, 4, even) == std::vector<int64_t>{8, 8, 8, 8});
  // torchtitan generate_split_points for 126 layers on 8 stages: 15, then 16 on the middle six
  // while the 6 extra layers last, the last stage the rest.
  CHECK(layers_of(126, 8, even) == std::vector<int64_t>{15, 16, 16, 16, 16, 16, 16, 15});
  CHECK(layers_of(70, 12, even) == std::vector<int64_t>{5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5});
  CHECK(layers_of(7, 4, even) == std::vector<int64_t>{1, 2, 2, 2});  // extra = PP - 1: the last gets one too
  CHECK(layers_of(5, 2, even) == std::vector<int64_t>{2, 3});
  CHECK(pipeline_split_problem(126, 8, even).empty());
  // Interleaved (v = 2): torchtitan splits the 16 virtual stages (7, 8 x 14, 7) and rank d runs
  // stages d and d + 8.
  ParallelOptions looped;
  looped.interleave = 2;
  CHECK(split_layers(126, 16, 0) == 7);
  CHECK(split_layers(126, 16, 14) == 8);
  CHECK(split_layers(126, 16, 15) == 7);
  CHECK(layers_of(126, 8, looped) == std::vector<int64_t>{15, 16, 16, 16, 16, 16, 16, 15});
  CHECK(layers_of(32, 4, looped) == std::vector<int64_t>{8, 8, 8, 8});
  CHECK(pipeline_split_problem(3, 4, even).find("every stage needs a layer") != std::string::npos);

  // Megatron --account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split:
  // (layers + 2) / PP slots per rank, the first and last rank one layer fewer.
  ParallelOptions slots;
  slots.pp_embedding_slot = slots.pp_loss_slot = true;
  CHECK(layers_of(70, 12, slots) == std::vector<int64_t>{5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5});
  CHECK(layers_of(100, 6, slots) == std::vector<int64_t>{16, 17, 17, 17, 17, 16});
  ParallelOptions loss_only;
  loss_only.pp_loss_slot = true;
  CHECK(layers_of(31, 4, loss_only) == std::vector<int64_t>{8, 8, 8, 7});
  CHECK(pipeline_split_problem(72, 12, slots).find("74 not divisible by PP 12") != std::string::npos);
  slots.interleave = 4;
  CHECK(pipeline_split_problem(70, 12, slots).find("6 slots per pipeline rank") != std::string::npos);
  CHECK(pipeline_split_problem(70, 6, slots).empty());  // 12 slots per rank, 3 per chunk

  // --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers: the rest evenly.
  ParallelOptions firstlast;
  firstlast.pp_first_layers = 15;
  firstlast.pp_last_layers = 15;
  CHECK(layers_of(126, 8, firstlast) == std::vector<int64_t>{15, 16, 16, 16, 16, 16, 16, 15});
  CHECK(pipeline_split_problem(126, 8, firstlast).empty());
  // One pipeline rank has nowhere to put a split: refused, not ignored.
  CHECK(pipeline_split_problem(126, 1, firstlast).find("needs PP > 1") != std::string::npos);
  CHECK(pipeline_split_problem(70, 1, loss_only).empty());  // a slot changes nothing at PP 1 (Megatron-LM accepts it)
  CHECK(pipeline_split_problem(126, 1, even).empty());
  ParallelOptions all_first;
  all_first.pp_first_layers = 126;  // the one rank's true count
  CHECK(pipeline_split_problem(126, 1, all_first).empty());
  firstlast.pp_last_layers = 14;
  CHECK(pipeline_split_problem(126, 8, firstlast).find("97 layers left") != std::string::npos);
  firstlast.pp_last_layers = 0;  // first only
  firstlast.pp_first_layers = 6;
  CHECK(layers_of(30, 4, firstlast) == std::vector<int64_t>{6, 8, 8, 8});
  ParallelOptions two;
  two.pp_first_layers = 3;
  CHECK(pipeline_split_problem(8, 2, two).empty());  // the last rank takes the other 5
  two.pp_last_layers = 4;
  CHECK(pipeline_split_problem(8, 2, two).find("must equal the layers") != std::string::npos);
  ParallelOptions both = slots;
  both.interleave = 1;
  both.pp_first_layers = 4;
  CHECK(pipeline_split_problem(70, 12, both).find("cannot be combined") != std::string::npos);
  // PP 1: a layer count other than all the layers is refused (before the combination check).
  CHECK(pipeline_split_problem(70, 1, both).find("needs PP > 1") != std::string::npos);
  CHECK(stage_layers(70, 1, both, 0) == 70);
}

TEST_CASE("pipeline split: every split sums to the layers and no middle rank holds more than rank 1") {
  // predict() evaluates ranks 0, 1 and PP-1 only; this is the property that makes it exact.
  int checked = 0;
  for (int64_t layers = 1; layers <= 130; ++layers) {
    for (int64_t pp = 2; pp <= 16; ++pp) {
      for (int64_t v = 1; v <= 4; ++v) {
        for (int kind = 0; kind < 4; ++kind) {
          ParallelOptions o;
          o.interleave = v;
          if (kind == 1) o.pp_embedding_slot = o.pp_loss_slot = true;
          if (kind == 2) o.pp_loss_slot = true;
          if (kind == 3) o.pp_first_layers = o.pp_last_layers = v;
          if (!pipeline_split_problem(layers, pp, o).empty()) continue;
          int64_t sum = 0;
          for (int64_t d = 0; d < pp; ++d) {
            const int64_t n = stage_layers(layers, pp, o, d);
            REQUIRE(n >= 0);
            sum += n;
            if (d >= 1 && d <= pp - 2) REQUIRE(n <= stage_layers(layers, pp, o, 1));
          }
          REQUIRE(sum == layers);
          ++checked;
        }
      }
    }
  }
  CHECK(checked > 5000);
}

TEST_CASE("uneven pipeline stages: the critical rank sets the steady state, the others the fill and drain") {
  // Llama 3 8B shapes at 4K tokens: its output layer (vocab 128256) costs about a layer. With an
  // even split of 31 layers (torchtitan: 7, 8, 8, 8) the last rank runs 8 layers + the output
  // layer; a loss slot (31 + 1 = 4 x 8: 8, 8, 8, 7) moves a layer off it.
  Experiment e = test::llama_experiment(4096, 16);
  e.model.layers = 31;
  const Mesh pp4 = test::mesh_of(1, 1, 1, 4);
  ParallelOptions even, slot;
  slot.pp_loss_slot = true;
  REQUIRE(check_layout(e, pp4, even, 4).empty());
  REQUIRE(check_layout(e, pp4, slot, 4).empty());
  const Prediction a = predict(e, pp4, even), b = predict(e, pp4, slot);
  CHECK(b.step_time_s < a.step_time_s);
  CHECK(b.time.forward_compute_s < a.time.forward_compute_s);

  // Equal stages and a negligible output layer: the fill and drain are (PP - 1) stage times, the
  // stage time being the per-micro-batch share of the critical rank's terms.
  auto per_mb = [](const Prediction& p) {
    return (p.time.forward_compute_s + p.time.backward_compute_s + p.time.recompute_s + p.time.cp_imbalance_s +
            p.time.ring_comm_exposed_s + p.time.tp_comm_s) /
           static_cast<double>(p.micro_batches);
  };
  Experiment u = e;
  u.model.layers = 32;
  u.model.vocab = 8;
  const Prediction c = predict(u, pp4, even);
  // (The tiny output layer still costs its GEMM's fixed overhead on the critical rank: 0.1 %.)
  CHECK(c.time.pp_bubble_s == doctest::Approx(3.0 * per_mb(c)).epsilon(3e-3));
  // With the real vocabulary the last rank is critical and its output layer is not repeated in
  // the fill and drain: bubble = 3 x (T_crit - T_output) < 3 x T_crit.
  Experiment w = e;
  w.model.layers = 32;
  const Prediction d = predict(w, pp4, even);
  CHECK(d.time.pp_bubble_s < 3.0 * per_mb(d));
  CHECK(d.time.pp_bubble_s == doctest::Approx(c.time.pp_bubble_s).epsilon(1e-3));  // same layers: same fill
}

TEST_CASE("uneven pipeline stages: the peak memory rank") {
  // 1F1B: rank d holds min(PP - d, m) micro-batches' activations. With the embedding in a slot
  // (11 + 1 = 4 x 3 slots) rank 0 holds 2 layers x 4 in flight, rank 1 3 x 3 = 9: rank 1 peaks.
  Experiment e = test::llama_experiment(4096, 16);
  e.model.layers = 11;
  e.model.vocab = 8;  // embedding parameters negligible: activations decide
  const Mesh pp4 = test::mesh_of(1, 1, 1, 4);
  ParallelOptions slot;
  slot.pp_embedding_slot = true;
  REQUIRE(check_layout(e, pp4, slot, 4).empty());
  const Prediction p = predict(e, pp4, slot);
  REQUIRE(p.micro_batches >= 4);
  const LayerShape x = make_layer_shape(e.model, e.training, pp4, slot);
  const LayerActivationBytes act = layer_activation_bytes(x);
  const double working = act.backward_working_bytes - act.backward_working_scores_bytes;
  CHECK(p.memory.activations_bytes == doctest::Approx(9.0 * act.stored_bytes + working));
  // Even split of 12 layers: rank 0, 3 layers x 4 in flight.
  Experiment f = e;
  f.model.layers = 12;
  const Prediction q = predict(f, pp4, ParallelOptions{});
  CHECK(q.memory.activations_bytes == doctest::Approx(12.0 * act.stored_bytes + working));
}

TEST_CASE("interleaved pipeline: warm-up chunks in flight, capped by the step's micro-batches") {
  // Megatron-LM and PyTorch warm up 2 (PP - d - 1) + (v - 1) PP chunks of 1/v of the rank's layers
  // and run one more forward before the first backward, at most the m v chunks of the step.
  CHECK(pipeline_in_flight(4, 1, 0, 16) == 4.0);  // 1F1B: min(PP - d, m)
  CHECK(pipeline_in_flight(4, 1, 3, 16) == 1.0);
  CHECK(pipeline_in_flight(4, 1, 0, 2) == 2.0);
  // PP 4, v 2, m 16: rank 0 warms up 6 + 4 = 10 chunks, + 1 = 11 chunks = 5.5 micro-batches of
  // the rank's layers: PP (1 + (PP - 1) / (PP v)) = 4 x 11/8, Megatron's interleaved factor.
  CHECK(pipeline_in_flight(4, 2, 0, 16, false) == doctest::Approx(5.5));
  CHECK(pipeline_in_flight(4, 2, 0, 16, false) == doctest::Approx(4.0 * (1.0 + 3.0 / 8.0)));
  CHECK(pipeline_in_flight(4, 2, 3, 16, false) == doctest::Approx(2.5));  // last rank: 4 + 1 chunks
  // m = 3 < PP: never more than the 3 x 2 chunks there are.
  CHECK(pipeline_in_flight(4, 2, 0, 3, false) == doctest::Approx(3.0));
  CHECK(pipeline_in_flight(4, 2, 3, 3, false) == doctest::Approx(2.5));
  // m = PP: PyTorch keeps the rank-dependent warm-up (rank 0 capped at all 8 chunks, the last
  // rank 5 chunks); Megatron-LM runs every forward first on every rank.
  CHECK(pipeline_in_flight(4, 2, 0, 4, true) == doctest::Approx(4.0));
  CHECK(pipeline_in_flight(4, 2, 3, 4, true) == doctest::Approx(2.5));
  CHECK(pipeline_in_flight(4, 2, 3, 4, false) == doctest::Approx(4.0));
  CHECK(pipeline_in_flight(4, 2, 0, 4, false) == doctest::Approx(4.0));
}

TEST_CASE("interleaved pipeline: the activations predict() holds follow the warm-up") {
  Experiment e = test::llama_experiment(4096, 4);  // m = 4 micro-batches of 1 sequence
  e.model.layers = 16;
  e.model.vocab = 8;  // the last rank's logits negligible: activations decide
  const Mesh pp4 = test::mesh_of(1, 1, 1, 4);
  ParallelOptions o;
  o.interleave = 2;
  REQUIRE(check_layout(e, pp4, o, 4).empty());
  const LayerShape x = make_layer_shape(e.model, e.training, pp4, o);
  const LayerActivationBytes act = layer_activation_bytes(x);
  const double working = act.backward_working_bytes - act.backward_working_scores_bytes;
  // PyTorch's schedule: rank 0 holds all 8 chunks of its 4 layers, 4 micro-batches x 4 layers,
  // as 1F1B's rank 0 (the uncapped factor would give 4 x 11/8 = 5.5); the last rank 5 chunks.
  e.training.pytorch_pp_schedule = true;
  const Prediction p = predict(e, pp4, o);
  REQUIRE(p.micro_batches == 4);
  CHECK(p.memory.activations_bytes == doctest::Approx(16.0 * act.stored_bytes + working));
  // Megatron-LM at m = PP: the last rank too holds every micro-batch, beside its output block.
  e.training.pytorch_pp_schedule = false;
  CHECK(predict(e, pp4, o).memory.activations_bytes > p.memory.activations_bytes);
  o.interleave = 1;
  CHECK(predict(e, pp4, o).memory.activations_bytes == doctest::Approx(16.0 * act.stored_bytes + working));
  // More micro-batches: rank 0 holds 11 chunks of 2 layers = 22 layer-micro-batches.
  Experiment big = e;
  big.training.global_batch_sequences = 16;
  o.interleave = 2;
  CHECK(predict(big, pp4, o).memory.activations_bytes == doctest::Approx(22.0 * act.stored_bytes + working));
}

TEST_CASE("PyTorch pipelining: the last stage keeps every micro-batch's output until the step ends") {
  Experiment e = test::llama_experiment(4096, 8);  // 8 micro-batches of one sequence
  e.model.layers = 2;                              // one layer per rank: the last rank's logits decide
  const Mesh pp2 = test::mesh_of(1, 1, 1, 2);
  ParallelOptions o;
  REQUIRE(check_layout(e, pp2, o, 2).empty());
  const Prediction megatron = predict(e, pp2, o);
  e.training.pytorch_pp_schedule = true;
  const Prediction pytorch = predict(e, pp2, o);
  REQUIRE(pytorch.micro_batches == 8);
  // 1F1B warms up the same way in both; PyTorch also holds 7 earlier micro-batches' 16-bit logits
  // (4096 tokens x the whole vocabulary at TP 1) at the last one's loss.
  const double logits16 = 4096.0 * double(e.model.vocab) * 2.0;
  CHECK(pytorch.memory.activations_bytes - megatron.memory.activations_bytes == doctest::Approx(7.0 * logits16));
  CHECK(pytorch.peak_memory_bytes - megatron.peak_memory_bytes == doctest::Approx(7.0 * logits16));
  CHECK(pytorch.time.step_time_s == doctest::Approx(megatron.time.step_time_s));
}

TEST_CASE("tied embeddings with PP > 1: the first and last stage all-reduce the embedding gradient") {
  // Megatron-LM finalize_model_grads `_allreduce_word_embedding_grads`, DeepSpeed's pipeline
  // engine `_exec_reduce_tied_grads`: after the backward, the two stages holding the tied
  // embedding all-reduce its gradient (this TP rank's vocabulary slice, in the gradient buffer's
  // dtype) before the optimizer step. Exposed, once per step; memory is unchanged (both stages
  // already hold a copy).
  Experiment e = test::llama_experiment(4096, 16);
  e.cluster = test::a100_cluster(4);
  ParallelOptions o;
  auto both = [&](const Mesh& mesh, bool fp32_grads) {
    Experiment untied = e, tied = e;
    untied.training.fp32_grad_accumulation = tied.training.fp32_grad_accumulation = fp32_grads;
    tied.model.tied_embeddings = true;
    REQUIRE(check_layout(tied, mesh, o, mesh.world_size()).empty());
    return std::pair<Prediction, Prediction>{predict(untied, mesh, o), predict(tied, mesh, o)};
  };
  const double emb = double(e.model.vocab) * double(e.model.hidden);
  // TP 2 x PP 2 in one node: NVLink; bf16 gradients, 2 bytes.
  {
    const auto [u, t] = both(test::mesh_of(1, 2, 1, 2), false);
    const double ar = group_collective_s(CollectiveKind::all_reduce, 2, 2, emb / 2.0 * 2.0, e.cluster);
    CHECK(ar > 0);
    CHECK(t.time.pp_comm_s - u.time.pp_comm_s == doctest::Approx(ar));
    CHECK(t.time.step_time_s - u.time.step_time_s == doctest::Approx(ar));
    CHECK(t.peak_memory_bytes == doctest::Approx(u.peak_memory_bytes));
  }
  // DP 8 x PP 2 on two nodes: the stages sit on different nodes; float32 main gradients, 4 bytes.
  {
    const auto [u, t] = both(test::mesh_of(8, 1, 1, 2), true);
    const double ar = group_collective_s(CollectiveKind::all_reduce, 2, 1, emb * 4.0, e.cluster);
    CHECK(ar > group_collective_s(CollectiveKind::all_reduce, 2, 2, emb * 4.0, e.cluster));  // the inter-node link
    CHECK(t.time.pp_comm_s - u.time.pp_comm_s == doctest::Approx(ar));
  }
  // PP 1: one stage holds the only copy; nothing to reduce (the tied model is smaller, so the
  // step is not slower).
  {
    const auto [u, t] = both(test::mesh_of(2, 2, 1, 1), false);
    CHECK(t.time.pp_comm_s == 0.0);
    CHECK(u.time.pp_comm_s == 0.0);
    CHECK(t.time.step_time_s <= u.time.step_time_s);
  }
}

TEST_CASE("overlap_param_gather: ZeRO-1's parameter all-gather behind the next step's first forward") {
  // Megatron-LM --overlap-param-gather: the first bucket (here one layer's parameters) is waited
  // for in full, every later one is gathered while the layer before it runs forward, taking its
  // SM share of that layer or showing where it outlasts it.
  Experiment e = test::llama_experiment(4096, 32);
  e.cluster = test::a100_cluster(2);
  e.cluster.overlap_sm_share = 0.15;
  e.model.layers = 4;
  const Mesh dp16 = test::mesh_of(16, 1, 1, 1);  // two nodes: the gather crosses them
  ParallelOptions o;
  o.zero_stage = 1;
  REQUIRE(check_layout(e, dp16, o, 16).empty());
  const Prediction after = predict(e, dp16, o);
  ParallelOptions ov = o;
  ov.overlap_param_gather = true;
  const Prediction behind = predict(e, dp16, ov);
  const double ag = after.time.zero_comm_exposed_s;
  REQUIRE(ag > 0);
  // Every layer forward (one micro-batch of 4096 tokens) outlasts its bucket here, so each later
  // bucket shows only its SM share.
  const double bucket = ag / 4.0;
  CHECK(behind.time.zero_comm_exposed_s == doctest::Approx(bucket + 3.0 * e.cluster.overlap_sm_share * bucket));
  CHECK(behind.time.zero_comm_exposed_s < ag);
  CHECK(after.time.step_time_s - behind.time.step_time_s == doctest::Approx(ag - behind.time.zero_comm_exposed_s));
  CHECK(behind.peak_memory_bytes == doctest::Approx(after.peak_memory_bytes));
  // Nothing to gather: ZeRO 0 all-reduces, ZeRO 3 gathers every layer on its own schedule, and one
  // DP x CP rank gathers nothing.
  for (int zero : {0, 3}) {
    ParallelOptions a = o, b = ov;
    a.zero_stage = b.zero_stage = zero;
    CHECK(predict(e, dp16, b).time.step_time_s == doctest::Approx(predict(e, dp16, a).time.step_time_s));
  }
  e.model.layers = 4;
  e.training.global_batch_sequences = 2;
  const Mesh one = test::mesh_of(1, 1, 1, 1);
  CHECK(predict(e, one, ov).time.step_time_s == doctest::Approx(predict(e, one, o).time.step_time_s));
}

TEST_CASE("tp_overlap pipelined: chunked GEMMs, the last chunk's reduce-scatter and the partial sums") {
  // Micro-pipelined TP (PyTorch's async TP, Transformer Engine's userbuffers) cuts each
  // overlapped GEMM into one chunk per TP rank: QKV, out, fc1, fc2 in the forward and the data
  // gradients of out and fc2 in the backward run as TP GEMMs of 1/TP of the rows, at that size's
  // efficiency. Everything else of the layer is the same as with `backward`.
  Experiment e = test::llama_experiment(8192, 8);
  e.model.layers = 2;
  ParallelOptions o;
  o.sequence_parallel = true;
  const Mesh tp8 = test::mesh_of(1, 8, 1, 1);
  o.tp_overlap = TpOverlap::backward;
  const Prediction b = predict(e, tp8, o);
  o.tp_overlap = TpOverlap::pipelined;
  REQUIRE(check_layout(e, tp8, o, 8).empty());
  const Prediction p = predict(e, tp8, o);
  const LayerGemmFlops g = layer_gemm_flops(make_layer_shape(e.model, e.training, tp8, o));
  const double peak = e.cluster.peak_flops_per_s(e.training.dtype);
  auto t = [&](double flops) { return flops / (peak * e.cluster.matmul.at(flops)); };
  auto cut = [&](double flops) { return 8.0 * t(flops / 8.0) - t(flops); };
  const double m = static_cast<double>(p.micro_batches), layers = 2.0;
  CHECK(p.time.forward_compute_s - b.time.forward_compute_s ==
        doctest::Approx(m * layers * (cut(g.qkv) + cut(g.out) + cut(g.mlp_up) + cut(g.mlp_down))));
  CHECK(p.time.backward_compute_s - b.time.backward_compute_s ==
        doctest::Approx(m * layers * (cut(g.out) + cut(g.mlp_down))));
  // Each forward reduce-scatter leaves its last chunk's share exposed plus the compute-side sum of
  // the partials (the T x h output read, its T/8 x h shard written), so pipelined never hides all of
  // the forward's TP traffic even with free overlap (no SM share).
  e.cluster.overlap_sm_share = 0.0;
  const Prediction free_overlap = predict(e, tp8, o);
  const double act = 8192.0 * double(e.model.hidden) * 2.0;
  const double rs = group_collective_s(CollectiveKind::reduce_scatter, 8, 8, act, e.cluster);
  const double sum_s = act * (1.0 + 1.0 / 8.0) / achieved_memory_bandwidth_bytes_per_s(e.cluster);
  CHECK(free_overlap.time.tp_comm_s >= m * layers * 2.0 * (rs / 8.0 + sum_s));
  CHECK(free_overlap.time.tp_comm_s < b.time.tp_comm_s);
}

TEST_CASE("async TP under DTensor: the backward's reduce-scatters of summed input gradients stay exposed") {
  // PyTorch's micro-pipeline pass fuses a reduce-scatter only with the one matmul that produces
  // its input. The QKV and fc1 input gradients are sums over wq, wk, wv and w1, w3, so under
  // tp_impl dtensor their reduce-scatters run unfused and are waited for at once: the backward
  // exposes two whole reduce-scatters per layer, where Megatron's (tp_impl megatron) hide behind
  // the weight-gradient GEMMs. Nothing else differs from the pipelined Megatron layer but
  // DTensor's own terms (its copies through dim 0, the inputs it keeps gathered), so with memory
  // bandwidth no object and those terms measured apart, the difference is exactly the hidden part.
  Experiment e = test::llama_experiment(8192, 8);
  e.model.layers = 2;
  e.cluster.memory_bandwidth_bytes_per_s = 1e21;
  ParallelOptions o;
  o.sequence_parallel = true;
  o.recompute = Recompute::none;
  const Mesh tp8 = test::mesh_of(1, 8, 1, 1);
  auto tp_comm = [&](bool dtensor, TpOverlap overlap) {
    Experiment v = e;
    v.training.tp_dtensor = dtensor;
    ParallelOptions x = o;
    x.tp_overlap = overlap;
    REQUIRE(check_layout(v, tp8, x, 8).empty());
    return predict(v, tp8, x);
  };
  const Prediction dt = tp_comm(true, TpOverlap::pipelined), mg = tp_comm(false, TpOverlap::pipelined);
  const double act = 8192.0 * double(e.model.hidden) * 2.0;
  const double rs = group_collective_s(CollectiveKind::reduce_scatter, 8, 8, act, e.cluster);
  const double ag = group_collective_s(CollectiveKind::all_gather, 8, 8, act, e.cluster);
  const double m = static_cast<double>(dt.micro_batches), layers = 2.0;
  // Megatron's pipelined layer: each backward reduce-scatter leaves max(rs - wgrad, share x rs);
  // its two re-all-gathers of the kept shards likewise behind the data-gradient GEMMs. DTensor
  // has no re-all-gather and exposes both reduce-scatters whole.
  const LayerShape x = make_layer_shape(e.model, e.training, tp8, o);
  const LayerGemmFlops g = layer_gemm_flops(x);
  const double peak = e.cluster.peak_flops_per_s(e.training.dtype);
  auto bwd = [&](double flops, double k) {
    return flops / (peak * e.cluster.matmul_backward_curve().at_gemm(flops, k));
  };
  const double share = e.cluster.overlap_sm_share;
  // What Megatron leaves exposed: of the reduce-scatters behind the weight-gradient GEMMs (reducing
  // over the tokens), of the re-all-gathers behind the data-gradient GEMMs (over the forward's N).
  const double rs_left = overlapped_exposed_s(rs, bwd(g.qkv, g.tokens), share) +
                         overlapped_exposed_s(rs, bwd(g.mlp_up, g.tokens), share);
  const double re_ag_left = overlapped_exposed_s(ag, bwd(g.qkv, g.n_qkv), share) +
                            overlapped_exposed_s(ag, bwd(g.mlp_up, g.n_mlp_up), share);
  CHECK(dt.time.tp_comm_s - mg.time.tp_comm_s ==
        doctest::Approx(m * layers * (2.0 * rs - rs_left - re_ag_left)).epsilon(1e-6));
  // So at these sizes async TP hides less under DTensor than under Megatron, and still more than
  // vanilla DTensor TP.
  CHECK(dt.time.tp_comm_s > mg.time.tp_comm_s);
  CHECK(dt.time.tp_comm_s < tp_comm(true, TpOverlap::none).time.tp_comm_s);
}

TEST_CASE("hybrid sharding (dp_replicate): states over the shard group, reduce-scatter inside it, all-reduce across replicas") {
  // 16 GPUs on two 8-GPU nodes, DP 16. With the SM share at 1 an overlapped reduction shows in
  // full, so the exposed DP time is the reduction's own time.
  Experiment e = test::llama_experiment(4096, 32);
  e.cluster = test::a100_cluster(2);
  e.cluster.overlap_sm_share = 1.0;
  e.model.layers = 4;
  const ClusterConfig& c = e.cluster;
  const Mesh dp16 = test::mesh_of(16, 1, 1, 1);
  const double grad = model_params(e.model) * 2.0;  // bf16 gradients, one pipeline stage
  ParallelOptions o;
  auto run = [&](int zero, int64_t replicas) {
    ParallelOptions x = o;
    x.zero_stage = zero;
    x.dp_replicate = replicas;
    REQUIRE(check_layout(e, dp16, x, 16).empty());
    return predict(e, dp16, x);
  };
  const Prediction zero0 = run(0, 1), zero1 = run(1, 1), hsdp2 = run(1, 2), hsdp16 = run(1, 16);
  // ZeRO-0 all-reduces over the 16 ranks (8 per node), ZeRO-1 reduce-scatters over them.
  CHECK(zero0.time.dp_comm_exposed_s == doctest::Approx(group_collective_s(CollectiveKind::all_reduce, 16, 8, grad, c)));
  CHECK(zero1.time.dp_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::reduce_scatter, 16, 8, grad, c)));
  // Two replicas: each shard group is one node's 8 ranks (NVLink); each rank's eighth of the
  // gradients is then all-reduced with its replica on the other node.
  CHECK(hsdp2.time.dp_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::reduce_scatter, 8, 8, grad, c) +
                        group_collective_s(CollectiveKind::all_reduce, 2, 1, grad / 8.0, c)));
  CHECK(hsdp2.time.zero_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::all_gather, 8, 8, model_params(e.model) * 2.0, c)));
  // Sharded over 8 ranks instead of 16: twice the optimizer state per device.
  CHECK(hsdp2.memory.optimizer_bytes == doctest::Approx(2.0 * zero1.memory.optimizer_bytes));
  // 16 replicas of one-rank shards: nothing sharded, the gradients all-reduced as by ZeRO-0.
  CHECK(hsdp16.time.dp_comm_exposed_s == doctest::Approx(zero0.time.dp_comm_exposed_s));
  CHECK(hsdp16.time.zero_comm_exposed_s == 0.0);
  CHECK(hsdp16.memory.optimizer_bytes == doctest::Approx(zero0.memory.optimizer_bytes));
  // ZeRO-3: the per-layer gathers stay in the node; the sharded states double.
  const Prediction full3 = run(3, 1), hsdp3 = run(3, 2);
  CHECK(hsdp3.memory.optimizer_bytes == doctest::Approx(2.0 * full3.memory.optimizer_bytes));
  CHECK(hsdp3.memory.gradients_bytes > full3.memory.gradients_bytes);
  // Layouts that cannot run are refused with the reason.
  ParallelOptions bad = o;
  bad.zero_stage = 1;
  bad.dp_replicate = 3;
  CHECK(check_layout(e, dp16, bad, 16).find("does not divide DP 16") != std::string::npos);
  bad.dp_replicate = 2;
  bad.zero_stage = 0;
  CHECK(check_layout(e, dp16, bad, 16).find("needs zero_stage >= 1") != std::string::npos);
  bad.dp_replicate = 0;
  CHECK(check_layout(e, dp16, bad, 16).find("dp_replicate must be >= 1") != std::string::npos);
}

TEST_CASE("collective dtypes: parameters gathered and gradients reduced in the dtype the framework casts to") {
  // Composer's FSDP under autocast, MP Mode DEFAULT: float32 parameters gathered, gradients reduced
  // in bf16; the defaults gather the 16-bit weights and reduce the float32 .grad. SM share 1: the
  // overlapped reduction shows in full (its own time).
  Experiment e = test::llama_experiment(4096, 32);
  e.cluster = test::a100_cluster(2);
  e.cluster.overlap_sm_share = 1.0;
  e.model.layers = 4;
  e.training.autocast = true;
  e.training.fp32_grad_accumulation = true;
  e.training.grad_accumulation = GradAccumulation::inplace;
  const ClusterConfig& c = e.cluster;
  const Mesh dp16 = test::mesh_of(16, 1, 1, 1);
  ParallelOptions o;
  o.zero_stage = 1;
  const double params = model_params(e.model);
  const Prediction base = predict(e, dp16, o);
  CHECK(base.time.dp_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::reduce_scatter, 16, 8, params * 4.0, c)));
  CHECK(base.time.zero_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::all_gather, 16, 8, params * 2.0, c)));
  Experiment d = e;
  d.training.param_gather_dtype = DType::fp32;
  d.training.grad_reduce_dtype = DType::bf16;
  const Prediction cast = predict(d, dp16, o);
  CHECK(cast.time.dp_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::reduce_scatter, 16, 8, params * 2.0, c)));
  CHECK(cast.time.zero_comm_exposed_s ==
        doctest::Approx(group_collective_s(CollectiveKind::all_gather, 16, 8, params * 4.0, c)));
  // ZeRO-3: the two gathered units live at once take 4 bytes per parameter instead of 2.
  o.zero_stage = 3;
  const Prediction w2 = predict(e, dp16, o), w4 = predict(d, dp16, o);
  const double unit = std::max(layer_params(e.model), static_cast<double>(e.model.vocab * e.model.hidden));
  CHECK(w4.memory.weights_bytes - w2.memory.weights_bytes == doctest::Approx(2.0 * unit * 2.0));
  CHECK(w4.time.zero_comm_exposed_s >= w2.time.zero_comm_exposed_s);
}

TEST_CASE("ZeRO-3: the backward's gathers and reduce-scatters share one link and one window") {
  // FSDP issues the backward's all-gathers and reduce-scatters on one process group, so they take
  // turns on the DP x CP link and the backward hides the two together. A link-bound layout (CP 8
  // with all-gather CP: the gradient group spans 8 nodes) must then get slower, never faster, when
  // the GPU does, and its exposed DP traffic can never be less than the link's busy time beyond
  // the compute that hides it.
  Experiment e = test::llama_experiment(4096, 512);
  e.cluster = shipped("dgx_h100");
  const Mesh mesh = test::mesh_of(4, 2, 8, 1);
  ParallelOptions o;
  o.zero_stage = 3;
  o.cp_comm = CpComm::allgather;
  const Prediction fast = predict(e, mesh, o);
  Experiment slow_gpu = e;
  slow_gpu.cluster.peak_flops_per_s_bf16 /= 2;
  const Prediction slow = predict(slow_gpu, mesh, o);
  CHECK(slow.time.step_time_s > fast.time.step_time_s);
  // ZeRO-2 (no per-layer gathers) orders them the same way.
  o.zero_stage = 2;
  CHECK(predict(slow_gpu, mesh, o).time.step_time_s > predict(e, mesh, o).time.step_time_s);
}

TEST_CASE("ZeRO-2/3 never hold more state than ZeRO-1: a rank's live units are its own") {
  // Two units are live while one is reduced (ZeRO >= 2) or prefetched (ZeRO-3): on a pipeline
  // rank, the two largest units it holds. A middle rank holds layers only, the embedding lives on
  // the first rank and the output matrix on the last; a stage whose embedding is most of its
  // parameters cannot have two embedding-sized units live.
  Experiment e = test::llama_experiment(8192, 128);
  e.cluster = shipped("dgx_h100");
  const Mesh mesh = test::mesh_of(8, 1, 1, 16);
  ParallelOptions o;
  o.zero_stage = 1;
  const MemoryBreakdown z1 = predict(e, mesh, o).memory;
  o.zero_stage = 2;
  const MemoryBreakdown z2 = predict(e, mesh, o).memory;
  o.zero_stage = 3;
  const MemoryBreakdown z3 = predict(e, mesh, o).memory;
  CHECK(z2.gradients_bytes <= z1.gradients_bytes);
  CHECK(z3.weights_bytes <= z1.weights_bytes);
  CHECK(z2.peak_bytes <= z1.peak_bytes);
  CHECK(z3.peak_bytes <= z2.peak_bytes);
}

TEST_CASE("pipeline sends: the whole activation per TP rank, 1/TP with sequence parallelism or Megatron-LM 2022's scatter/gather") {
  Experiment e = test::llama_experiment(4096, 16);
  e.cluster.intra_node.latency_s = 0.0;  // bytes only: the ratios below are exact
  e.cluster.inter_node.latency_s = 0.0;
  const Mesh mesh = test::mesh_of(2, 2, 1, 2);
  ParallelOptions o;
  o.recompute = Recompute::full;
  o.sequence_parallel = false;
  const double full = sim::predict(e, mesh, o).time.pp_comm_s;
  o.sequence_parallel = true;
  const double sp = sim::predict(e, mesh, o).time.pp_comm_s;
  REQUIRE(sp > 0.0);
  CHECK(full == doctest::Approx(2.0 * sp));  // Megatron-Core get_tensor_shapes: / TP only with SP
  // Scatter/gather: the 1/TP piece, then an all-gather of the whole activation over TP per hop.
  o.sequence_parallel = false;
  e.training.pp_scatter_gather = true;
  const sim::Prediction sg = sim::predict(e, mesh, o);
  const double hops = 2.0 * (static_cast<double>(sg.micro_batches) + 1.0);  // 2 (v m + PP - 1), v 1, PP 2
  const double tokens = 4096.0, bytes = tokens * e.model.hidden * 2.0;
  CHECK(sg.time.pp_comm_s ==
        doctest::Approx(sp + hops * sim::group_collective_s(sim::CollectiveKind::all_gather, 2, 2, bytes, e.cluster)));
  // With sequence parallelism the activation is already split: nothing to gather.
  o.sequence_parallel = true;
  CHECK(sim::predict(e, mesh, o).time.pp_comm_s == doctest::Approx(sp));
}

TEST_CASE("the gradient reduction hides behind the backward's wall time, and a slower GPU never gives a faster step") {
  // GPT-3 175B shapes at 32K tokens, CP 16 across nodes with exposed ring transfers and ZeRO-3:
  // halving the peak hid more of the ring behind compute AND widened the reduction's window by
  // the whole slowdown, so the step got faster (123.7 s -> 117.3 s) before the window counted the
  // backward's exposed ring time and the ring's own use of the network link.
  Experiment e = test::llama_experiment(32768, 64);
  e.model.layers = 96;
  e.model.hidden = 12288;
  e.model.heads = 96;
  e.model.kv_heads = 96;
  e.model.head_dim = 128;
  e.model.ffn_hidden = 4 * 12288;
  e.model.gated_mlp = false;
  e.cluster.nodes = 32;
  const Mesh mesh = test::mesh_of(2, 8, 16, 1);
  ParallelOptions o;
  o.zero_stage = 3;
  o.recompute = Recompute::selective;
  o.sequence_parallel = true;
  for (int zero : {2, 3}) {
    o.zero_stage = zero;
    const double fast = sim::predict(e, mesh, o).step_time_s;
    Experiment slow = e;
    slow.cluster.peak_flops_per_s_bf16 /= 2.0;
    CHECK(sim::predict(slow, mesh, o).step_time_s > fast);
    Experiment slow_attention = e;
    slow_attention.cluster.attention.max_efficiency /= 2.0;
    CHECK(sim::predict(slow_attention, mesh, o).step_time_s > fast);
  }
}

TEST_CASE("the vocabulary-parallel embedding's TP collectives are the first pipeline rank's") {
  // Rank 0 holds the embedding: its forward reduce-scatter (SP) and the backward's all-gather of
  // its output gradient are on that rank's time, which is critical here (20 of 32 layers there).
  Experiment e = test::llama_experiment(4096, 16);
  const Mesh mesh = test::mesh_of(2, 2, 1, 2);
  ParallelOptions o;
  o.recompute = Recompute::full;
  o.sequence_parallel = true;
  o.pp_first_layers = 20;
  const sim::Prediction p20 = sim::predict(e, mesh, o);
  o.pp_first_layers = 21;
  const sim::Prediction p21 = sim::predict(e, mesh, o);
  const double m = static_cast<double>(p20.micro_batches);
  const double per_layer = (p21.time.tp_comm_s - p20.time.tp_comm_s) / m;  // one more layer on the critical rank
  REQUIRE(per_layer > 0.0);
  const double act = 4096.0 * e.model.hidden * 2.0;
  const double emb = sim::group_collective_s(sim::CollectiveKind::reduce_scatter, 2, 2, act, e.cluster) +
                     sim::group_collective_s(sim::CollectiveKind::all_gather, 2, 2, act, e.cluster);
  CHECK(p20.time.tp_comm_s == doctest::Approx(m * (20.0 * per_layer + emb)));
}
