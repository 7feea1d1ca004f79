// Cost-model invariants and layout checks (sim/cost_model.hpp).
#include <doctest/doctest.h>

#include <string>

#include "core/config_yaml.hpp"
#include "sim/cost_model.hpp"
#include "sim/ring_model.hpp"
#include "sim/formulas.hpp"
#include "test_helpers.hpp"

using namespace ringplan;
using namespace ringplan::sim;
using doctest::Approx;

namespace {
double sum_of_terms(const TimeBreakdown& t) {
  double s = 0;
  for (const Term& term : time_terms(t)) s += term.value;
  return s;
}
}  // namespace

TEST_CASE("check_layout gives human reasons") {
  Experiment e = test::llama_experiment(4096, 10);
  ParallelOptions o;
  o.cp_scheme = CpScheme::zigzag;
  // TP wider than a node is valid (inter-node TP): the next rule that applies is the model's.
  CHECK(check_layout(e, test::mesh_of(1, 16, 1, 1), o, 16) == "kv_heads 8 not divisible by TP 16");
  CHECK(check_layout(e, test::mesh_of(1, 1, 1, 1), o, 1) == "");
  CHECK(check_layout(e, test::mesh_of(1, 1, 3, 1), o, 3) == "seq_len 4096 not divisible by 2·CP = 6 (zigzag)");
  {  // CP 1 shards nothing: an odd sequence is valid under every scheme
    Experiment odd = e;
    odd.training.seq_len = 4097;
    CHECK(check_layout(odd, test::mesh_of(1, 1, 1, 1), o, 1) == "");
    CHECK(check_layout(odd, test::mesh_of(1, 1, 2, 1), o, 2) == "seq_len 4097 not divisible by 2·CP = 4 (zigzag)");
  }
  CHECK(check_layout(e, test::mesh_of(2, 1, 1, 1), ParallelOptions{.micro_batch = 2}, 2) ==
        "global batch 10 not divisible by DP×micro_batch = 4");
  CHECK(check_layout(e, test::mesh_of(2, 2, 3, 1), o, 16).rfind("world size 12 != 16 GPUs", 0) == 0);
  CHECK(check_layout(e, test::mesh_of(1, 1, 1, 64), o, 64) == "PP 64 > layers 32");
  CHECK(check_layout(e, test::mesh_of(1, 3, 1, 1), o, 3) == "heads 32 not divisible by TP 3");
  ParallelOptions inter = o;
  inter.interleave = 3;
  e.training.global_batch_sequences = 8;
  // 32 layers on 12 virtual stages: torchtitan's split (2, 3 x 8, 2, 2, 2) is valid; 36 virtual
  // stages would leave some without a layer.
  CHECK(check_layout(e, test::mesh_of(1, 1, 1, 4), inter, 4) == "");
  inter.interleave = 9;
  CHECK(check_layout(e, test::mesh_of(1, 1, 1, 4), inter, 4) ==
        "PP×v = 36 stages for 32 layers (every stage needs a layer)");
  inter.interleave = 3;
  CHECK(check_layout(e, test::mesh_of(1, 1, 1, 1), inter, 1) == "interleave 3 needs PP > 1");

  Experiment big = e;
  big.model.heads = 96;
  big.model.kv_heads = 96;
  big.cluster.gpus_per_node = 64;
  CHECK(check_layout(big, test::mesh_of(1, 64, 1, 1), o, 64) == "heads 96 not divisible by TP 64");
  big.model.heads = 128;
  CHECK(check_layout(big, test::mesh_of(1, 64, 1, 1), o, 64) == "kv_heads 96 not divisible by TP 64");
}

TEST_CASE("step time is the sum of its terms, throughput figures follow from it") {
  Experiment e = test::llama_experiment(32768, 16);
  ParallelOptions o;
  o.recompute = Recompute::selective;
  const Mesh mesh = test::mesh_of(2, 2, 4, 2);
  REQUIRE(check_layout(e, mesh, o, 32) == "");
  const Prediction p = predict(e, mesh, o);
  CHECK(p.step_time_s > 0);
  CHECK(p.time.step_time_s == p.step_time_s);
  CHECK(sum_of_terms(p.time) == Approx(p.step_time_s).epsilon(1e-12));
  CHECK(p.micro_batches == 16 / 2);
  CHECK(p.tokens_per_s == Approx(16.0 * 32768 / p.step_time_s));
  CHECK(p.mfu == Approx(p.tflops_per_device * 1e12 / 312e12));
  CHECK(p.mfu > 0.05);
  CHECK(p.mfu < 1.0);
  CHECK(p.peak_memory_bytes == p.memory.peak_bytes);
  CHECK(p.fits == (p.peak_memory_bytes <= e.cluster.memory_bytes));
  // Model FLOPs: (3 x GEMMs incl. logits + 3.5 x causal attention) x sequences.
  const double L = 32768;
  const double gemm = 32 * (2.0 * L * 4096 * 6144 + 2.0 * L * 4096 * 4096 + 2.0 * L * 4096 * 3 * 14336) +
                      2.0 * L * 4096 * 128256;
  const double attn = 32 * 4.0 * 32 * 128 * (L * (L + 1) / 2);
  CHECK(p.model_flops_per_step == Approx(16 * (3 * gemm + 3.5 * attn)));
}

TEST_CASE("peak memory: weights/gradients/optimizer per ZeRO stage over DP x CP (formulas.md)") {
  Experiment e = test::llama_experiment(8192, 16);
  const Mesh mesh = test::mesh_of(4, 2, 2, 1);
  const double psi = model_params(e.model) / 2;  // per TP shard, pp = 1
  const double N = 4 * 2;                        // DP x CP
  // ZeRO-2/3 also hold two whole units in flight (largest of a layer and the embedding, per TP
  // shard): gradients being reduce-scattered (2 bytes each, plus their 1/N reduce-scatter
  // outputs), and with ZeRO-3 gathered weights.
  const double unit = std::max(layer_params(e.model), double(e.model.vocab * e.model.hidden)) / 2;
  ParallelOptions o;
  for (int stage = 0; stage <= 3; ++stage) {
    o.zero_stage = stage;
    const MemoryBreakdown m = predict(e, mesh, o).memory;
    const double states = m.weights_bytes + m.gradients_bytes + m.optimizer_bytes;
    CAPTURE(stage);
    if (stage == 0) CHECK(states == Approx(16 * psi));
    if (stage == 1) CHECK(states == Approx(4 * psi + 12 * psi / N));
    if (stage == 2) CHECK(states == Approx(2 * psi + 14 * psi / N + 2 * unit * 2 * (1 + 1 / N)));
    if (stage == 3) CHECK(states == Approx(16 * psi / N + 2 * unit * (2 + 2 * (1 + 1 / N))));
  }
}

TEST_CASE("memory falls as TP, CP or the ZeRO stage grows") {
  Experiment e = test::llama_experiment(32768, 64);
  ParallelOptions o;
  o.sequence_parallel = true;
  double last = 1e300;
  for (int64_t tp : {1, 2, 4, 8}) {
    const double peak = predict(e, test::mesh_of(1, tp, 1, 1), o).peak_memory_bytes;
    CHECK(peak < last);
    last = peak;
  }
  last = 1e300;
  for (int64_t cp : {1, 2, 4, 8}) {
    const double peak = predict(e, test::mesh_of(1, 1, cp, 1), o).peak_memory_bytes;
    CHECK(peak < last);
    last = peak;
  }
  last = 1e300;
  for (int stage : {0, 1, 2, 3}) {
    o.zero_stage = stage;
    const double peak = predict(e, test::mesh_of(8, 1, 1, 1), o).peak_memory_bytes;
    CHECK(peak < last);
    last = peak;
  }
}

TEST_CASE("recompute trades time for memory: none < selective < full in time, reverse in memory") {
  Experiment e = test::llama_experiment(16384, 16);
  const Mesh mesh = test::mesh_of(2, 4, 2, 1);
  ParallelOptions o;
  o.attention = AttentionImpl::materialized;
  o.recompute = Recompute::none;
  const Prediction none = predict(e, mesh, o);
  o.recompute = Recompute::selective;
  const Prediction sel = predict(e, mesh, o);
  o.recompute = Recompute::full;
  const Prediction full = predict(e, mesh, o);
  CHECK(none.step_time_s < sel.step_time_s);
  CHECK(sel.step_time_s < full.step_time_s);
  CHECK(none.peak_memory_bytes > sel.peak_memory_bytes);
  CHECK(sel.peak_memory_bytes > full.peak_memory_bytes);
  CHECK(none.time.recompute_s == 0.0);
  CHECK(full.time.recompute_s > sel.time.recompute_s);
}

TEST_CASE("selective_op re-runs every other GEMM and the element-wise work, not attention") {
  Experiment e = test::llama_experiment(8192, 8);
  const Mesh mesh = test::mesh_of(2, 1, 4, 1);
  ParallelOptions o;
  o.cp_scheme = CpScheme::contiguous;  // causal imbalance: re-run attention would double it
  o.recompute = Recompute::none;
  const Prediction none = predict(e, mesh, o);
  o.recompute = Recompute::selective;
  const Prediction sel = predict(e, mesh, o);
  o.recompute = Recompute::selective_op;
  const Prediction op = predict(e, mesh, o);
  o.recompute = Recompute::full;
  const Prediction full = predict(e, mesh, o);
  CHECK(op.time.recompute_s > 0.0);
  CHECK(op.time.recompute_s < full.time.recompute_s);
  // Attention is saved: the imbalance and the ring are paid once, as without recompute.
  CHECK(op.time.cp_imbalance_s == Approx(none.time.cp_imbalance_s));
  CHECK(sel.time.cp_imbalance_s > none.time.cp_imbalance_s);
  CHECK(op.time.ring_comm_exposed_s == Approx(none.time.ring_comm_exposed_s));
  // Memory between none and full.
  CHECK(op.peak_memory_bytes < none.peak_memory_bytes);
  CHECK(op.peak_memory_bytes > full.peak_memory_bytes);
  // Without TP the re-run is exactly the GEMM shares plus the forward element-wise work; check it
  // against full, whose re-run is the whole forward: the same layer count and micro-batches.
  const LayerShape x = make_layer_shape(e.model, e.training, mesh, o);
  const LayerGemmFlops g = layer_gemm_flops(x);
  const SelectiveOpRecompute so = selective_op_recompute(x);
  const double rerun_flops = so.qkv * g.qkv + so.out * g.out + so.mlp_up * g.mlp_up + so.mlp_down * g.mlp_down;
  CHECK(rerun_flops < 0.5 * (g.qkv + g.out + g.mlp_up + g.mlp_down));
  CHECK(rerun_flops > 0.3 * (g.qkv + g.out + g.mlp_up + g.mlp_down));
}

TEST_CASE("early-stopped full recompute skips the block's last GEMM and the TP collective after it, nothing else") {
  Experiment e = test::llama_experiment(2048, 8);
  ParallelOptions o;
  o.recompute = Recompute::full;
  o.sequence_parallel = true;
  for (const Mesh mesh : {test::mesh_of(8, 1, 1, 1), test::mesh_of(4, 2, 1, 1)}) {
    INFO("tp " << mesh.tp);
    e.training.recompute_early_stop = false;
    const Prediction whole = predict(e, mesh, o);
    e.training.recompute_early_stop = true;
    const Prediction early = predict(e, mesh, o);
    const double skipped = whole.time.recompute_s - early.time.recompute_s;
    CHECK(skipped > 0.0);
    // fc2 is the only GEMM not run again: less than its FLOP share of the re-run, which also holds
    // attention and the element-wise work; more than half of it (the block is GEMM-bound at 2K).
    const LayerGemmFlops g = layer_gemm_flops(make_layer_shape(e.model, e.training, mesh, o));
    const double fc2_share = g.mlp_down / (g.qkv + g.out + g.mlp_up + g.mlp_down);
    CHECK(skipped < fc2_share * whole.time.recompute_s);
    CHECK(skipped > 0.5 * fc2_share * whole.time.recompute_s);
    // The forward, the backward and memory do not change; the step shrinks by what is skipped.
    CHECK(early.time.forward_compute_s == whole.time.forward_compute_s);
    CHECK(early.time.backward_compute_s == whole.time.backward_compute_s);
    CHECK(early.peak_memory_bytes == whole.peak_memory_bytes);
    const double tp_skipped = whole.time.tp_comm_s - early.time.tp_comm_s;
    if (mesh.tp == 1) {
      CHECK(tp_skipped == 0.0);
    } else {
      // One of the re-run's four SP collectives (the reduce-scatter after fc2) is not run again: of
      // the forward's four, the re-run's four and the backward's, one.
      CHECK(tp_skipped > 0.0);
      CHECK(tp_skipped < 0.25 * whole.time.tp_comm_s);
    }
    CHECK(whole.step_time_s - early.step_time_s == Approx(skipped + tp_skipped).epsilon(1e-9));
  }
  // Without full recompute the key changes nothing.
  for (const Recompute r : {Recompute::none, Recompute::selective, Recompute::selective_op}) {
    o.recompute = r;
    e.training.recompute_early_stop = false;
    const double off = predict(e, test::mesh_of(4, 2, 1, 1), o).step_time_s;
    e.training.recompute_early_stop = true;
    CHECK(predict(e, test::mesh_of(4, 2, 1, 1), o).step_time_s == off);
  }
}

TEST_CASE("materialised scores cost b*(H/TP)*(L/CP)*L*bytes per layer, flash keeps only the lse") {
  Experiment e = test::llama_experiment(8192, 8);
  const Mesh mesh = test::mesh_of(1, 2, 2, 1);
  ParallelOptions o;
  o.attention = AttentionImpl::materialized;
  const MemoryBreakdown mat = predict(e, mesh, o).memory;
  CHECK(mat.attention_scores_bytes == Approx(32.0 * 1 * (32 / 2) * (8192 / 2) * 8192 * 2));
  o.attention = AttentionImpl::flash;
  const MemoryBreakdown fl = predict(e, mesh, o).memory;
  CHECK(fl.attention_scores_bytes == Approx(32.0 * 1 * 16 * 4096 * 4));
  CHECK(fl.activations_bytes == Approx(mat.activations_bytes));
}

TEST_CASE("CP = 1 is no CP: the scheme does not matter and no ring term appears") {
  Experiment e = test::llama_experiment(8192, 8);
  const Mesh mesh = test::mesh_of(2, 4, 1, 1);
  ParallelOptions o;
  o.cp_scheme = CpScheme::contiguous;
  const Prediction a = predict(e, mesh, o);
  o.cp_scheme = CpScheme::striped;
  const Prediction b = predict(e, mesh, o);
  CHECK(a.step_time_s == b.step_time_s);
  CHECK(a.peak_memory_bytes == b.peak_memory_bytes);
  CHECK(a.time.ring_comm_exposed_s == 0.0);
  CHECK(a.time.cp_imbalance_s == 0.0);
  CHECK(a.memory.ring_buffers_bytes == 0.0);
}

TEST_CASE("CP imbalance: zigzag 1, contiguous -> 2 - 1/P, striped close to 1") {
  for (int64_t P : {2, 4, 8, 16}) {
    CAPTURE(P);
    CHECK(cp_imbalance(CpScheme::zigzag, 1 << 20, P, true) == Approx(1.0).epsilon(1e-12));
    CHECK(cp_imbalance(CpScheme::contiguous, 1 << 20, P, true) == Approx(2.0 - 1.0 / P).epsilon(1e-4));
    const double n = (1 << 20) / P;
    CHECK(cp_imbalance(CpScheme::striped, 1 << 20, P, true) == Approx(P * (n + 1) / (n * P + 1)));
    CHECK(cp_imbalance(CpScheme::striped, 1 << 20, P, true) < 1.0001);
    CHECK(cp_imbalance(CpScheme::contiguous, 1 << 20, P, false) == 1.0);
  }
  CHECK(cp_imbalance(CpScheme::contiguous, 4096, 1, true) == 1.0);
  // and the step time shows it: contiguous is slower than zigzag by the imbalance term
  Experiment e = test::llama_experiment(131072, 8);
  ParallelOptions o;
  const Mesh mesh = test::mesh_of(1, 8, 8, 1);
  o.cp_scheme = CpScheme::zigzag;
  const Prediction z = predict(e, mesh, o);
  o.cp_scheme = CpScheme::contiguous;
  const Prediction c = predict(e, mesh, o);
  CHECK(z.time.cp_imbalance_s == Approx(0.0).epsilon(1e-12));
  CHECK(c.time.cp_imbalance_s > 0.2 * c.time.forward_compute_s);
  CHECK(c.step_time_s > z.step_time_s);
}

TEST_CASE("group link: a group stays in a node while its extent fits (rank order TP, CP, DP, PP)") {
  const ClusterConfig c = test::a100_cluster();
  const Mesh m = test::mesh_of(4, 4, 2, 2);  // extents: TP 4, CP 8, DP 32, PP 64
  CHECK(group_within_node(m, MeshDim::tp, 8));
  CHECK(group_within_node(m, MeshDim::cp, 8));
  CHECK_FALSE(group_within_node(m, MeshDim::dp, 8));
  CHECK_FALSE(group_within_node(m, MeshDim::pp, 8));
  const Mesh wide = test::mesh_of(1, 8, 2, 1);  // CP extent 16 > 8
  CHECK(group_within_node(wide, MeshDim::tp, c.gpus_per_node));
  CHECK_FALSE(group_within_node(wide, MeshDim::cp, c.gpus_per_node));
  // a group of one sends nothing and counts as inside
  CHECK(group_within_node(test::mesh_of(64, 8, 1, 1), MeshDim::cp, 8));
}

TEST_CASE("group link: a group wider than a node, or one that does not tile the node, crosses nodes") {
  // TP 16 on 8-GPU nodes: each TP group spans two nodes.
  CHECK_FALSE(group_within_node(test::mesh_of(1, 16, 1, 1), MeshDim::tp, 8));
  CHECK(group_within_node(test::mesh_of(1, 16, 1, 1), MeshDim::tp, 16));
  // TP 3 on 8-GPU nodes: with 24 ranks the third group is ranks 6, 7, 8, across nodes 0 and 1;
  // the groups run in lockstep, so the whole dimension waits for that one.
  CHECK_FALSE(group_within_node(test::mesh_of(8, 3, 1, 1), MeshDim::tp, 8));
  // ... but 6 ranks all sit in node 0.
  CHECK(group_within_node(test::mesh_of(2, 3, 1, 1), MeshDim::tp, 8));
  // The same block rule for the dimensions outside TP: CP blocks of TP 2 x CP 3 = 6 ranks do
  // not tile an 8-GPU node.
  CHECK_FALSE(group_within_node(test::mesh_of(4, 2, 3, 1), MeshDim::cp, 8));
  CHECK(group_within_node(test::mesh_of(4, 2, 4, 1), MeshDim::cp, 8));
  // TP 8 on 8-GPU nodes stays on NVLink whatever the world size.
  CHECK(group_within_node(test::mesh_of(64, 8, 1, 1), MeshDim::tp, 8));
}

TEST_CASE("a ring crossing nodes exposes more communication than one on NVLink") {
  Experiment e = test::llama_experiment(32768, 8);
  ParallelOptions o;
  const Prediction inside = predict(e, test::mesh_of(1, 1, 8, 1), o);
  const Prediction across = predict(e, test::mesh_of(1, 1, 16, 1), o);  // 16 > 8 GPUs per node
  // 4K tokens per step hide every K,V transfer behind NVLink: only the last dK,dV hop of each
  // layer's backward shows, 2*4096*8*128*4 bytes, for 32 layers x 8 micro-batches.
  const double last_hop = p2p_s(2.0 * 4096 * 8 * 128 * 4, e.cluster.intra_node);
  CHECK(inside.time.ring_comm_exposed_s == Approx(32 * 8 * last_hop));
  CHECK(across.time.ring_comm_exposed_s > 2 * inside.time.ring_comm_exposed_s);
}

TEST_CASE("pipeline: bubble (PP-1)/(v*m), interleave halves it, uneven stages by torchtitan's split") {
  Experiment e = test::llama_experiment(8192, 32);
  ParallelOptions o;
  const Mesh mesh = test::mesh_of(1, 1, 1, 4);
  o.interleave = 1;
  const Prediction v1 = predict(e, mesh, o);
  o.interleave = 2;
  REQUIRE(check_layout(e, mesh, o, 4) == "");
  const Prediction v2 = predict(e, mesh, o);
  CHECK(v2.time.pp_bubble_s == Approx(v1.time.pp_bubble_s / 2));
  CHECK(v1.time.pp_comm_s > 0.0);
  // bubble = (PP-1)/m of the m micro-batches' stage time; a tiny vocabulary makes the output
  // layer (which the bubble excludes) negligible.
  Experiment tiny = e;
  tiny.model.vocab = 8;
  o.interleave = 1;
  const Prediction t1 = predict(tiny, mesh, o);
  const double per_mb = (t1.time.forward_compute_s + t1.time.backward_compute_s) / 32;
  CHECK(t1.time.pp_bubble_s == Approx(3 * per_mb).epsilon(1e-3));
  // 126 layers on 16 stages, torchtitan's automatic split: 7, then 8 on each of the 14 middle
  // ranks, 7 on the last. The last rank (7 layers + the output layer, about two layers' work
  // here) stays critical, as with 112 layers (7 per rank); the 14 ranks of 8 layers lengthen the
  // fill and drain by 14 layers' micro-batch time.
  Experiment a = test::llama_experiment(8192, 32), b = a;
  a.model.layers = 126;
  b.model.layers = 112;
  o.interleave = 1;
  const Mesh pp16 = test::mesh_of(1, 1, 1, 16);
  CHECK(check_layout(a, pp16, o, 16) == "");
  const Prediction pa = predict(a, pp16, o);
  const Prediction pb = predict(b, pp16, o);
  CHECK(pa.time.forward_compute_s == Approx(pb.time.forward_compute_s));
  CHECK(pa.time.backward_compute_s == Approx(pb.time.backward_compute_s));
  Experiment c = b;
  c.model.layers = 96;  // one layer fewer per rank
  const Prediction pc = predict(c, pp16, o);
  const double layer_mb = (pb.time.forward_compute_s + pb.time.backward_compute_s - pc.time.forward_compute_s -
                           pc.time.backward_compute_s) / 32.0;  // one layer, per micro-batch
  CHECK(pa.time.pp_bubble_s - pb.time.pp_bubble_s == Approx(14.0 * layer_mb).epsilon(1e-6));
}

TEST_CASE("DP x CP gradient reduction: at least the last layer's bucket is exposed") {
  Experiment e = test::llama_experiment(8192, 64);
  ParallelOptions o;
  const Prediction p1 = predict(e, test::mesh_of(1, 8, 1, 1), o);
  const Prediction p8 = predict(e, test::mesh_of(8, 8, 1, 1), o);  // DP over InfiniBand
  CHECK(p1.time.dp_comm_exposed_s == 0.0);
  const double grad_bytes = (32 * layer_params(e.model) + 2 * 128256.0 * 4096 + 4096) / 8 * 2;
  const double ar = all_reduce_s(8, grad_bytes, e.cluster.inter_node);
  CHECK(p8.time.dp_comm_exposed_s >= ar / 32 * (1 - 1e-12));
  CHECK(p8.time.dp_comm_exposed_s <= ar);
  // ZeRO-1 (Megatron-LM's distributed optimizer): one reduce-scatter of the accumulated
  // gradients, half the all-reduce's traffic, exposed like it (its last bucket here), and one
  // all-gather of the updated weights after the step
  o.zero_stage = 1;
  const Prediction z1 = predict(e, test::mesh_of(8, 8, 1, 1), o);
  const double rs = reduce_scatter_s(8, grad_bytes, e.cluster.inter_node);
  CHECK(z1.time.zero_comm_exposed_s == Approx(all_gather_s(8, grad_bytes, e.cluster.inter_node)));
  CHECK(z1.time.dp_comm_exposed_s >= rs / 32 * (1 - 1e-12));
  CHECK(z1.time.dp_comm_exposed_s <= rs);
  CHECK(z1.time.dp_comm_exposed_s < p8.time.dp_comm_exposed_s);
  // ZeRO-2 keeps only a gradient shard: every one of the m = 8 micro-batches reduce-scatters
  // its gradients (each hidden behind its backward except at least the last bucket)
  o.zero_stage = 2;
  const Prediction z2 = predict(e, test::mesh_of(8, 8, 1, 1), o);
  CHECK(z2.micro_batches == 8);
  CHECK(z2.time.dp_comm_exposed_s >= 8 * rs / 32 * (1 - 1e-12));
  CHECK(z2.time.dp_comm_exposed_s <= 8 * rs);
}

TEST_CASE("TP collectives use NVLink inside a node, sequence parallelism moves the same bytes") {
  Experiment e = test::llama_experiment(8192, 8);
  ParallelOptions o;
  const Prediction tp1 = predict(e, test::mesh_of(1, 1, 1, 1), o);
  const Prediction tp8 = predict(e, test::mesh_of(1, 8, 1, 1), o);
  CHECK(tp1.time.tp_comm_s == 0.0);
  // forward: 2 all-reduces of b*L*h*2 bytes per layer and micro-batch
  const double ar = all_reduce_s(8, 8192.0 * 4096 * 2, e.cluster.intra_node);
  CHECK(tp8.time.tp_comm_s >= 8 * 32 * 2 * ar * (1 - 1e-12));
  CHECK(tp8.time.tp_comm_s <= 8 * 32 * 4 * ar * (1 + 1e-12));
}

TEST_CASE("K-ramp: each linear-layer GEMM slowed by (K + half_k) / K at its own reduction length") {
  Experiment e = test::llama_experiment(8192, 8);
  e.cluster.matmul_backward = {0.7, 0.01e12};
  const ParallelOptions o;
  const double hk = 256.0;
  double share_tp1 = 0;
  for (int64_t tp : {1, 4}) {
    INFO("tp " << tp);
    const Mesh mesh = test::mesh_of(1, tp, 1, 1);
    Experiment ramp = e;
    ramp.cluster.matmul.half_k = hk;
    ramp.cluster.matmul_backward.half_k = hk;
    const Prediction flat = predict(e, mesh, o), slow = predict(ramp, mesh, o);
    const LayerShape x = make_layer_shape(e.model, e.training, mesh, o);
    const LayerGemmFlops g = layer_gemm_flops(x);
    const double peak = e.cluster.peak_flops_per_s(e.training.dtype);
    // 1 / (eff K / (K + hk)) = (1 / eff) (1 + hk / K): each GEMM's time grows by its time on the
    // FLOPs curve x hk / K, K its own reduction length.
    auto fwd = [&](double f, double k) { return f / (peak * e.cluster.matmul.at(f)) * hk / k; };
    auto bwd = [&](double f, double k) { return f / (peak * e.cluster.matmul_backward.at(f)) * hk / k; };
    const double T = x.tokens(), V = static_cast<double>(e.model.vocab), h = static_cast<double>(e.model.hidden);
    CHECK(g.k_out == doctest::Approx(4096.0 / static_cast<double>(tp)));  // row-parallel: K split by TP
    CHECK(g.k_qkv == doctest::Approx(4096.0));                            // column-parallel: N split
    const double layer_fwd = fwd(g.qkv, g.k_qkv) + fwd(g.out, g.k_out) + fwd(g.mlp_up, g.k_mlp_up) +
                             fwd(g.mlp_down, g.k_mlp_down);
    // data gradients reduce over the forward's N, weight gradients over the tokens
    const double layer_bwd = bwd(g.qkv, g.n_qkv) + bwd(g.out, g.n_out) + bwd(g.mlp_up, g.n_mlp_up) +
                             bwd(g.mlp_down, g.n_mlp_down) + bwd(g.qkv, T) + bwd(g.out, T) + bwd(g.mlp_up, T) +
                             bwd(g.mlp_down, T);
    const double logits = logits_flops(x, V);
    const double out_fwd = fwd(logits, h), out_bwd = bwd(logits, V / static_cast<double>(tp)) + bwd(logits, T);
    const double m = 8, layers = 32;  // 8 micro-batches of one sequence, one stage
    CHECK(slow.time.forward_compute_s - flat.time.forward_compute_s == Approx(m * (layers * layer_fwd + out_fwd)));
    CHECK(slow.time.backward_compute_s - flat.time.backward_compute_s == Approx(m * (layers * layer_bwd + out_bwd)));
    const double share = (slow.time.forward_compute_s - flat.time.forward_compute_s) / flat.time.forward_compute_s;
    if (tp == 1) share_tp1 = share;
    // The row-parallel GEMMs' shorter K costs TP 4 a larger share of its forward than TP 1.
    if (tp == 4) CHECK(share > share_tp1);
  }
}

TEST_CASE("TP 16 on 8-GPU nodes is valid and its collectives cross the inter-node link") {
  // Megatron GPT 22B: 64 heads and ffn 4h split over TP 16.
  Experiment e = test::llama_experiment(8192, 8);
  e.model = test::gpt22b();
  const Mesh mesh = test::mesh_of(1, 16, 1, 1);
  ParallelOptions o;
  REQUIRE(check_layout(e, mesh, o, 16) == "");
  // The same prediction on a hypothetical 16-GPU node with the same NVLink.
  Experiment one_node = e;
  one_node.cluster.gpus_per_node = 16;
  REQUIRE(check_layout(one_node, mesh, o, 16) == "");

  const Prediction across = predict(e, mesh, o), inside = predict(one_node, mesh, o);
  CHECK(across.time.tp_comm_s > inside.time.tp_comm_s);
  CHECK(across.step_time_s > inside.step_time_s);
  // Only the TP link differs: same compute.
  CHECK(across.time.forward_compute_s == inside.time.forward_compute_s);

  // Alpha-beta, hierarchical across the 2 nodes (8 ranks each: NVLink reduce-scatter, inter-node
  // all-reduce of 1/8, NVLink all-gather; tests/sim/test_physics.cpp): forward 2 all-reduces of
  // b*L*h*2 bytes per layer and micro-batch (m = 8, 48 layers), the backward's 2 at most fully exposed.
  const double bytes = 8192.0 * 6144 * 2;
  const double ar_inter = reduce_scatter_s(8, bytes, e.cluster.intra_node) +
                          all_reduce_s(2, bytes / 8, e.cluster.inter_node) + all_gather_s(8, bytes, e.cluster.intra_node);
  CHECK(across.time.tp_comm_s >= 8 * 48 * 2 * ar_inter * (1 - 1e-12));
  CHECK(across.time.tp_comm_s <= 8 * 48 * 4 * ar_inter * (1 + 1e-12));
  // Exactly: full recompute re-runs the forward all-reduces, on the inter-node link.
  ParallelOptions full = o;
  full.recompute = Recompute::full;
  CHECK(predict(e, mesh, full).time.tp_comm_s - across.time.tp_comm_s == Approx(8 * 48 * 2 * ar_inter));
  CHECK(predict(one_node, mesh, full).time.tp_comm_s - inside.time.tp_comm_s ==
        Approx(8 * 48 * 2 * all_reduce_s(16, bytes, e.cluster.intra_node)));
}

TEST_CASE("optimizer step and PP transfers, computed by hand") {
  Experiment e = test::llama_experiment(8192, 32);
  ParallelOptions o;
  o.zero_stage = 1;
  const Mesh mesh = test::mesh_of(2, 2, 2, 1);
  const Prediction p = predict(e, mesh, o);
  // bf16 Adam: 46 bytes per parameter of the shard this rank updates (ZeRO-1 over DP x CP = 4),
  // then the whole gradient buffer of this TP rank zeroed (ZeRO-1 does not shard it), at 80% of
  // 2039 GB/s.
  const double shard = model_params(e.model) / 2 / 4, buffer = model_params(e.model) / 2;
  const double g = state_bytes_per_param(e.training.dtype, e.training.optimizer, e.training.fp32_grad_accumulation).gradients;
  CHECK(p.time.optimizer_s == Approx((shard * 46 + buffer * g) / (2039e9 * 0.8)));
  // ZeRO-2 shards the buffer: its zeroing shrinks with it.
  o.zero_stage = 2;
  CHECK(predict(e, mesh, o).time.optimizer_s == Approx((shard * 46 + shard * g) / (2039e9 * 0.8)));
  o.zero_stage = 1;
  // DP 4 x PP 4, m = 32/4 = 8, v = 1: 2 * (v*m + PP - 1) hops of b*L*h*2/TP bytes over
  // InfiniBand (the PP group spans all 16 ranks > 8 GPUs per node).
  const Prediction q = predict(e, test::mesh_of(4, 1, 1, 4), ParallelOptions{});
  const double hop = 6e-6 + 8192.0 * 4096 * 2 / 25e9;
  CHECK(q.micro_batches == 8);
  CHECK(q.time.pp_comm_s == Approx(2 * (8 + 3) * hop));
  // inside one node (DP 2 x PP 4 = 8 ranks) the same hop runs on NVLink
  const Prediction r = predict(e, test::mesh_of(2, 1, 1, 4), ParallelOptions{});
  CHECK(r.time.pp_comm_s == Approx(2 * (16 + 3) * (3e-6 + 8192.0 * 4096 * 2 / 300e9)));
}

TEST_CASE("optimizer step without gradient clipping drops the norm and scale passes, 12 bytes per parameter of the shard") {
  Experiment e = test::llama_experiment(8192, 32);
  ParallelOptions o;
  o.zero_stage = 1;
  const Mesh mesh = test::mesh_of(2, 2, 2, 1);
  const double clipped = predict(e, mesh, o).time.optimizer_s;
  e.training.clip_grad = 0;
  const double shard = model_params(e.model) / 2 / 4, buffer = model_params(e.model) / 2;
  const double g = state_bytes_per_param(e.training.dtype, e.training.optimizer, e.training.fp32_grad_accumulation).gradients;
  CHECK(predict(e, mesh, o).time.optimizer_s == Approx((shard * 34 + buffer * g) / (2039e9 * 0.8)));
  CHECK(clipped == Approx((shard * 46 + buffer * g) / (2039e9 * 0.8)));
}

TEST_CASE("logits memory: 16-bit logits plus the cross-entropy's float32 copy, float32 logits alone") {
  Experiment e = test::llama_experiment(8192, 32);
  const Mesh mesh = test::mesh_of(1, 2, 1, 1);
  const double rows = 8192.0, slice = double(e.model.vocab) / 2;
  CHECK(predict(e, mesh, ParallelOptions{}).memory.logits_bytes == Approx(rows * slice * (2 + 4)));
  e.training.dtype = DType::fp32;
  CHECK(predict(e, mesh, ParallelOptions{}).memory.logits_bytes == Approx(rows * slice * 4));
  // Unfused (PyTorch's cross_entropy over logits.float()) under TP runs as loss_parallel: four
  // float32 tensors at its backward, whatever the dtype; the peak grows by the difference.
  e.training.cross_entropy = CrossEntropy::unfused;
  CHECK(predict(e, mesh, ParallelOptions{}).memory.logits_bytes == Approx(rows * slice * 16));
  e.training.dtype = DType::bf16;
  const Prediction unfused = predict(e, mesh, ParallelOptions{});
  CHECK(unfused.memory.logits_bytes == Approx(rows * slice * 16));
  e.training.cross_entropy = CrossEntropy::fused;
  CHECK(unfused.peak_memory_bytes - predict(e, mesh, ParallelOptions{}).peak_memory_bytes ==
        Approx(rows * slice * (16 - 6)));
  // On one device (no vocabulary split): the native log-softmax backward, three float32 tensors.
  e.training.cross_entropy = CrossEntropy::unfused;
  CHECK(predict(e, test::mesh_of(1, 1, 1, 1), ParallelOptions{}).memory.logits_bytes ==
        Approx(rows * double(e.model.vocab) * 12));
}

TEST_CASE("tp_impl: Megatron's sequence-parallel linear layers keep their shard, DTensor's the gathered input") {
  Experiment e = test::llama_experiment(8192, 32);
  ParallelOptions o;
  o.sequence_parallel = true;
  o.recompute = Recompute::full;
  const Mesh mesh = test::mesh_of(1, 2, 1, 1);
  const double rows = 8192.0, h = double(e.model.hidden);
  const LayerShape shard = make_layer_shape(e.model, e.training, mesh, o);
  // Local: the norm's input and output (bf16) and its float32 statistics, on this rank's rows.
  CHECK(output_block_stored_bytes(shard) == Approx(rows / 2 * (2 * h * 2 + 4)));
  const LayerActivationBytes shard_layer = layer_activation_bytes(shard);
  const sim::Prediction shard_p = predict(e, mesh, o);
  e.training.tp_dtensor = true;
  const LayerShape gathered = make_layer_shape(e.model, e.training, mesh, o);
  // Gathered (DTensor): the output layer's input whole.
  CHECK(output_block_stored_bytes(gathered) == Approx(rows / 2 * (h * 2 + 4) + rows * h * 2));
  // The QKV and MLP inputs whole in a layer's activations: full recompute keeps only the layer
  // input, the recomputed layer holds them again during its backward.
  const LayerActivationBytes gathered_layer = layer_activation_bytes(gathered);
  CHECK(gathered_layer.stored_bytes == Approx(shard_layer.stored_bytes));
  CHECK(gathered_layer.backward_working_bytes - shard_layer.backward_working_bytes == Approx(2 * rows * h * 2 / 2));
  o.recompute = Recompute::none;
  CHECK(layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o)).stored_bytes -
            layer_activation_bytes(make_layer_shape(e.model, test::llama_experiment(8192, 32).training, mesh, o)).stored_bytes ==
        Approx(2 * rows * h * 2 / 2));
  o.recompute = Recompute::full;
  // Time: no all-gather of the QKV and MLP inputs in the backward, but a copy through dim 0 at
  // every collective (memory bandwidth). With memory bandwidth no object, DTensor's TP time is
  // Megatron's less the two re-all-gathers (exposed: tp_overlap none); with it, the copies cost.
  ParallelOptions exposed = o;
  exposed.tp_overlap = TpOverlap::none;
  auto tp_time = [&](bool dtensor, double bandwidth) {
    Experiment v = e;
    v.training.tp_dtensor = dtensor;
    v.cluster.memory_bandwidth_bytes_per_s = bandwidth;
    return predict(v, mesh, exposed).time.tp_comm_s;
  };
  const double hbm = e.cluster.memory_bandwidth_bytes_per_s, unlimited = 1e21;
  CHECK(tp_time(true, unlimited) < tp_time(false, unlimited));
  // Two of the backward's six per-layer collectives (2 all-gathers of output gradients, 2 re-all-
  // gathers, 2 reduce-scatters) and none of the forward's four, which recompute repeats.
  CHECK(tp_time(true, unlimited) / tp_time(false, unlimited) > 0.7);
  CHECK(tp_time(false, hbm / 2) == Approx(tp_time(false, hbm)));
  CHECK(tp_time(true, hbm / 2) > tp_time(true, hbm));
  // Eight copies per layer and micro-batch, four of them repeated by full recompute: 12 x 2 T h e.
  const double layers = double(e.model.layers), micro = double(e.training.global_batch_sequences);
  const double copy_bytes = 12.0 * 2.0 * rows * h * 2.0 * layers * micro;
  const double achieved = hbm * e.cluster.memory_bandwidth_efficiency;
  CHECK(tp_time(true, hbm) - tp_time(true, unlimited) == Approx(copy_bytes / achieved).epsilon(1e-3));
  // Async TP fuses the forward's four collectives and the backward's two all-gathers with their
  // GEMMs: six copies per layer and micro-batch, all in the backward, none repeated by recompute.
  // (Beyond what memory bandwidth costs both implementations there: the fused reduce-scatters'
  // reductions.)
  exposed.tp_overlap = TpOverlap::pipelined;
  CHECK((tp_time(true, hbm) - tp_time(true, unlimited)) - (tp_time(false, hbm) - tp_time(false, unlimited)) ==
        Approx(6.0 * 2.0 * rows * h * 2.0 * layers * micro / achieved).epsilon(1e-3));
  exposed.tp_overlap = TpOverlap::none;
  const sim::Prediction gathered_p = predict(e, mesh, o);
  CHECK(gathered_p.memory.activations_bytes > shard_p.memory.activations_bytes);
  // Without sequence parallelism (or TP) nothing is sharded to keep: the key changes nothing.
  o.sequence_parallel = false;
  const double without_sp = predict(e, mesh, o).step_time_s;
  e.training.tp_dtensor = false;
  CHECK(predict(e, mesh, o).step_time_s == without_sp);
  CHECK(output_block_stored_bytes(make_layer_shape(e.model, e.training, test::mesh_of(1, 1, 1, 1), o)) ==
        Approx(rows * (2 * h * 2 + 4)));
}

TEST_CASE("autocast: float32 residual stream and norm tensors in the activations, and no gradient at the loss's peak") {
  Experiment e = test::llama_experiment(4096, 1);
  e.training.fp32_grad_accumulation = true;
  const Mesh one = test::mesh_of(1, 1, 1, 1);
  ParallelOptions o;
  o.recompute = Recompute::none;
  LayerShape x = make_layer_shape(e.model, e.training, one, o);
  const double T = 4096, h = double(e.model.hidden);
  const LayerActivationBytes master = layer_activation_bytes(x);
  e.training.autocast = true;
  x = make_layer_shape(e.model, e.training, one, o);
  REQUIRE(x.autocast);
  // A fused norm (F.layer_norm, which autocast runs in float32) saves its float32 input (4 for 2)
  // and not its output; the casts the linear layers save are the 2-byte tensors counted already.
  CHECK(layer_activation_bytes(x).stored_bytes - master.stored_bytes == Approx(2 * (4 - 2) * T * h));
  // A norm in PyTorch ops (eager) also keeps its float32 output: per norm 4 + 4 + 2 under autocast.
  // Without autocast it upcasts its 16-bit input (torchtitan's RMSNorm: x.float()) and keeps that
  // float32 copy and the 16-bit cast of its output besides the linear layer's input: 4 + 2 + 2,
  // 4 more than a fused norm's 2 + 2.
  e.training.eager_elementwise = true;
  e.training.norm = NormImpl::eager;
  const LayerActivationBytes eager_master = layer_activation_bytes(make_layer_shape(e.model, e.training, one, o));
  e.training.autocast = false;
  const LayerActivationBytes eager_plain = layer_activation_bytes(make_layer_shape(e.model, e.training, one, o));
  CHECK(eager_master.stored_bytes - eager_plain.stored_bytes == Approx(2 * (10 - 8) * T * h));
  e.training.norm = NormImpl::fused;
  const LayerActivationBytes fused_plain = layer_activation_bytes(make_layer_shape(e.model, e.training, one, o));
  CHECK(eager_plain.stored_bytes - fused_plain.stored_bytes == Approx(2 * 4 * T * h));
  // The final norm likewise: its float32 copy, its 16-bit output and the output layer's input.
  e.training.norm = NormImpl::eager;
  CHECK(output_block_stored_bytes(make_layer_shape(e.model, e.training, one, o)) == Approx(T * h * (4 + 2 + 2) + T * 4));
  e.training.norm = NormImpl::fused;
  CHECK(output_block_stored_bytes(make_layer_shape(e.model, e.training, one, o)) == Approx(T * h * (2 + 2) + T * 4));
  e.training.norm = NormImpl::eager;
  // A low-precision norm (llm-foundry's LPLayerNorm) keeps only 16-bit tensors: as without autocast.
  e.training.autocast = true;
  e.training.norm = NormImpl::low_precision;
  const LayerActivationBytes low = layer_activation_bytes(make_layer_shape(e.model, e.training, one, o));
  e.training.autocast = false;
  CHECK(low.stored_bytes == Approx(layer_activation_bytes(make_layer_shape(e.model, e.training, one, o)).stored_bytes));
  // The final norm before the output layer saves what the blocks' norms save: under autocast an
  // eager norm its float32 input and output and the output layer's 16-bit input, a fused float32
  // norm its float32 input and that 16-bit cast, a low-precision norm two 16-bit tensors (each
  // with 4 bytes of row statistics per token).
  e.training.autocast = true;
  auto output_block = [&](NormImpl n) {
    e.training.norm = n;
    e.training.eager_elementwise = n == NormImpl::eager;
    return output_block_stored_bytes(make_layer_shape(e.model, e.training, one, o));
  };
  CHECK(output_block(NormImpl::eager) == Approx(T * h * (4 + 4 + 2) + T * 4));
  CHECK(output_block(NormImpl::fused) == Approx(T * h * (4 + 2) + T * 4));
  CHECK(output_block(NormImpl::low_precision) == Approx(T * h * (2 + 2) + T * 4));
  e.training.eager_elementwise = false;
  e.training.norm = NormImpl::fused;
  // Full recompute keeps the float32 layer input.
  o.recompute = Recompute::full;
  CHECK(layer_activation_bytes(make_layer_shape(e.model, e.training, one, o)).stored_bytes == Approx(4 * T * h));
  // The peak: gradients are not yet allocated at the loss's backward, so it is the larger of
  // (weights + activations + logits) and (gradients + one layer's working set), optimizer beside.
  o.recompute = Recompute::none;
  const Prediction p = predict(e, one, o);
  const MemoryBreakdown& m = p.memory;
  const double loss = m.weights_bytes + m.activations_bytes + m.attention_scores_bytes + m.logits_bytes;
  CHECK(loss > m.gradients_bytes);
  CHECK(m.peak_bytes == Approx(m.optimizer_bytes + loss + m.reserved_bytes));
  CHECK(m.peak_bytes < m.weights_bytes + m.gradients_bytes + m.optimizer_bytes + m.activations_bytes +
                           m.attention_scores_bytes + m.logits_bytes + m.reserved_bytes);
  // Same states as Megatron's float32 main gradients: 2 + 4 + 12 bytes per parameter.
  e.training.autocast = false;
  const MemoryBreakdown mw = predict(e, one, o).memory;
  CHECK(m.weights_bytes + m.gradients_bytes + m.optimizer_bytes ==
        Approx(mw.weights_bytes + mw.gradients_bytes + mw.optimizer_bytes));
}

TEST_CASE("autocast with ZeRO-1/2: the float32 parameters stay whole, only the moments are sharded") {
  // Under autocast the optimizer's float32 master copy is the model's parameters: every forward
  // casts from them, so ZeRO-1/2 (ZeroRedundancyOptimizer, FSDP SHARD_GRAD_OP) cannot shard them.
  Experiment e = test::llama_experiment(4096, 8);
  e.training.autocast = true;
  e.training.fp32_grad_accumulation = true;
  e.training.grad_accumulation = GradAccumulation::inplace;
  const Mesh dp8 = test::mesh_of(8, 1, 1, 1);
  ParallelOptions o;
  const double params = model_params(e.model);
  o.zero_stage = 1;
  CHECK(predict(e, dp8, o).memory.optimizer_bytes == Approx(params * (4.0 + 8.0 / 8.0)));
  // SHARD_GRAD_OP also keeps the float32 shard beside the unsharded parameters.
  o.zero_stage = 2;
  CHECK(predict(e, dp8, o).memory.optimizer_bytes == Approx(params * (4.0 + 12.0 / 8.0)));
  o.zero_stage = 3;
  CHECK(predict(e, dp8, o).memory.optimizer_bytes == Approx(params * 12.0 / 8.0));
  // So ZeRO-3 needs the least, ZeRO-2 never less than ZeRO-1 by more than the gradients it shards.
  o.zero_stage = 0;
  const double z0 = predict(e, dp8, o).memory.peak_bytes;
  o.zero_stage = 1;
  const double z1 = predict(e, dp8, o).memory.peak_bytes;
  o.zero_stage = 3;
  CHECK(predict(e, dp8, o).memory.peak_bytes < z1);
  CHECK(z1 < z0);
  // With master weights (no autocast) ZeRO-1 shards all 12 bytes (Megatron-LM's distributed optimizer).
  e.training.autocast = false;
  o.zero_stage = 1;
  CHECK(predict(e, dp8, o).memory.optimizer_bytes == Approx(params * 12.0 / 8.0));
}

TEST_CASE("autocast with ZeRO-3: every layer's saved weight casts, or one unit's under full recompute, and no 16-bit shard") {
  // FSDP's gathered weights are views (not leaves), so autocast casts them on every use without
  // its cache and autograd saves each cast for the layer's backward.
  Experiment e = test::llama_experiment(4096, 8);
  e.training.autocast = true;
  e.training.fp32_grad_accumulation = true;
  e.training.grad_accumulation = GradAccumulation::inplace;
  e.training.param_gather_dtype = DType::fp32;
  const Mesh dp8 = test::mesh_of(8, 1, 1, 1);
  ParallelOptions o;
  o.zero_stage = 3;
  const double params = model_params(e.model);
  const double unit = std::max(layer_params(e.model), static_cast<double>(e.model.vocab * e.model.hidden));
  o.recompute = Recompute::none;
  CHECK(predict(e, dp8, o).memory.weights_bytes == Approx(params * 2.0 + 2.0 * unit * 4.0));
  o.recompute = Recompute::full;
  CHECK(predict(e, dp8, o).memory.weights_bytes == Approx(unit * 2.0 + 2.0 * unit * 4.0));
  // Master weights (FSDP's param_dtype): the 16-bit shard and the gathered 16-bit units.
  e.training.autocast = false;
  e.training.param_gather_dtype.reset();
  CHECK(predict(e, dp8, o).memory.weights_bytes == Approx(params * 2.0 / 8.0 + 2.0 * unit * 2.0));
}

TEST_CASE("eager element-wise ops: the attention output's copy, SiLU's output and GQA's expanded K and V are kept too") {
  Experiment e = test::llama_experiment(4096, 2);
  const Mesh mesh = test::mesh_of(1, 2, 1, 1);
  ParallelOptions o;
  o.recompute = Recompute::none;
  const double T = 4096, t = 2, q = double(e.model.heads * e.model.head_dim),
               kv = double(e.model.kv_heads * e.model.head_dim), f = double(e.model.ffn_hidden);
  REQUIRE(e.model.gated_mlp);
  const LayerActivationBytes fused = layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o));
  e.training.eager_elementwise = true;
  const LayerActivationBytes eager = layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o));
  REQUIRE(kv < q);  // GQA: repeat_kv's expanded K and V are what SDPA saves
  CHECK(eager.stored_bytes - fused.stored_bytes == Approx(2 * T * (q + f + 2 * (q - kv)) / t));
  // Full recompute keeps only the layer input; the layer re-run in backward holds the extra.
  o.recompute = Recompute::full;
  const LayerActivationBytes full_eager = layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o));
  e.training.eager_elementwise = false;
  const LayerActivationBytes full_fused = layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o));
  CHECK(full_eager.stored_bytes == Approx(full_fused.stored_bytes));
  CHECK(full_eager.backward_working_bytes - full_fused.backward_working_bytes ==
        Approx(2 * T * (q + f + 2 * (q - kv)) / t));
  // MHA: no expanded copies; RoPE's products with constant tables keep nothing.
  e.model.kv_heads = e.model.heads;
  o.recompute = Recompute::none;
  e.training.eager_elementwise = true;
  const LayerActivationBytes mha_eager = layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o));
  e.training.eager_elementwise = false;
  const LayerActivationBytes mha_fused = layer_activation_bytes(make_layer_shape(e.model, e.training, mesh, o));
  REQUIRE(mha_fused.stored_bytes > fused.stored_bytes);  // K, V at full width now
  CHECK(mha_eager.stored_bytes - mha_fused.stored_bytes == Approx(2 * T * (q + f) / t));
  // The Triton kernel returns [batch, seq, heads, head_dim], read through a view (llm-foundry's
  // triton_flash_attn_fn): no copy of the attention output is kept, in memory or in time.
  e.training.eager_elementwise = true;
  e.training.flash_kernel = FlashKernel::triton;
  o.attention = AttentionImpl::flash;
  const LayerShape triton = make_layer_shape(e.model, e.training, mesh, o);
  CHECK_FALSE(attention_output_copied(triton));
  CHECK(mha_eager.stored_bytes - layer_activation_bytes(triton).stored_bytes == Approx(2 * T * q / t));
  e.training.flash_kernel = FlashKernel::standard;
  const LayerShape sdpa = make_layer_shape(e.model, e.training, mesh, o);
  CHECK(attention_output_copied(sdpa));
  CHECK(layer_elementwise_bytes(sdpa).forward - layer_elementwise_bytes(triton).forward == Approx(2 * 2 * T * q / t));
  CHECK(layer_elementwise_bytes(sdpa).backward - layer_elementwise_bytes(triton).backward == Approx(2 * 2 * T * q / t));
}

TEST_CASE("separate projections: the backward sums the Q, K, V (and gate, up) layers' input gradients") {
  // torchtitan's wq, wk, wv and w1, w3 read one input each: autograd sums their partial input
  // gradients, tokens x hidden each on every TP rank (gathered under SP). Compiled, the consuming
  // kernel reads 5 partials instead of 2 sums: 3 elements more per layer; eager, three pairwise
  // adds of 3 elements each: 9. A not-gated MLP has one up layer: 2 and 6.
  Experiment e = test::llama_experiment(4096, 2);
  const Mesh mesh = test::mesh_of(1, 2, 1, 1);
  ParallelOptions o;
  o.sequence_parallel = true;
  REQUIRE(e.model.gated_mlp);
  const double T = 4096, h = double(e.model.hidden), bytes = 2.0;
  auto extra = [&](bool eager, bool gated) {
    e.training.eager_elementwise = eager;
    e.model.gated_mlp = gated;
    e.training.separate_projections = false;
    const LayerShape fused = make_layer_shape(e.model, e.training, mesh, o);
    e.training.separate_projections = true;
    const LayerShape separate = make_layer_shape(e.model, e.training, mesh, o);
    CHECK(projection_gradient_sum_bytes(fused) == 0.0);
    CHECK(layer_elementwise_bytes(separate).forward == Approx(layer_elementwise_bytes(fused).forward));
    CHECK(layer_elementwise_bytes(separate).backward - layer_elementwise_bytes(fused).backward ==
          Approx(projection_gradient_sum_bytes(separate)));
    CHECK(layer_activation_bytes(separate).stored_bytes == Approx(layer_activation_bytes(fused).stored_bytes));
    return projection_gradient_sum_bytes(separate) / (T * h * bytes);
  };
  CHECK(extra(false, true) == Approx(3.0));
  CHECK(extra(true, true) == Approx(9.0));
  CHECK(extra(false, false) == Approx(2.0));
  CHECK(extra(true, false) == Approx(6.0));
}

TEST_CASE("eager element-wise time: every PyTorch op reads and writes its tensors, counted op by op") {
  Experiment e = test::llama_experiment(4096, 2);
  const Mesh mesh = test::mesh_of(1, 2, 1, 1);
  ParallelOptions o;
  o.recompute = Recompute::none;
  const double T = 4096, t = 2, h = double(e.model.hidden), q = double(e.model.heads * e.model.head_dim),
               kv = double(e.model.kv_heads * e.model.head_dim), f = double(e.model.ffn_hidden);
  REQUIRE(e.model.gated_mlp);
  REQUIRE(e.model.dropout == 0.0);
  // bf16, no sequence parallelism (norms and residuals on the whole sequence on each TP rank).
  // Per layer: two norms (eager 36 / 92 bytes per hidden element) and two residual adds (6 / 6);
  // RoPE 20 per Q and K element both ways; the attention output's copy 4; repeat_kv's GQA copies
  // 4 per Q and per K element both ways; SwiGLU 10 / 18.
  // `hidden_fwd` / `hidden_bwd`: bytes per hidden element of one norm and one residual add (twice
  // per layer); `rope`: bytes per Q and K element, both ways.
  auto check = [&](double hidden_fwd, double hidden_bwd, double rope) {
    const LayerElementwiseBytes b = layer_elementwise_bytes(make_layer_shape(e.model, e.training, mesh, o));
    CHECK(b.forward == Approx(T * (2 * hidden_fwd * h + (rope + 4) * (q + kv) / t + 4 * q / t + 10 * f / t)));
    CHECK(b.backward == Approx(T * (2 * hidden_bwd * h + (rope + 4) * (q + kv) / t + 4 * q / t + 18 * f / t)));
  };
  e.training.eager_elementwise = true;
  e.training.norm = NormImpl::eager;
  check(36 + 6, 92 + 6, 20);
  // A fused norm (torchtitan's fused_rmsnorm) under eager ops: 2e / 3e per hidden element.
  e.training.norm = NormImpl::fused;
  check(4 + 6, 6 + 6, 20);
  // Autocast: float32 residual (norm 28 / 92, residual add 10 / 12, and its backward's cast of the
  // stream's float32 gradient down for the bf16 branch, 4 + 2) and the cast of each norm's float32
  // output for its linear layer (6 both ways).
  e.training.norm = NormImpl::eager;
  e.training.autocast = true;
  e.training.fp32_grad_accumulation = true;
  check(28 + 6 + 10, 92 + 6 + 12 + 6, 20);
  // A fused float32 norm under autocast: 2r = 8 / 3r = 12, and the cast of its output (6 both ways).
  e.training.norm = NormImpl::fused;
  check(8 + 6 + 10, 12 + 6 + 12 + 6, 20);
  // A low-precision norm (llm-foundry's LPLayerNorm): the input's cast down (4 + 2) and a 16-bit
  // norm (4 forward, 6 backward), no cast of its output: 10 / 12.
  e.training.norm = NormImpl::low_precision;
  check(10 + 10, 12 + 12 + 6, 20);
  // Learned positions (added once before the layers): no RoPE in the layers.
  e.model.rope = false;
  check(10 + 10, 12 + 12 + 6, 0);
  e.model.rope = true;
  e.training.norm = NormImpl::eager;
  // Eager always moves more than the fused kernels it stands for.
  e.training.autocast = false;
  e.training.fp32_grad_accumulation = false;
  const LayerElementwiseBytes eager = layer_elementwise_bytes(make_layer_shape(e.model, e.training, mesh, o));
  e.training.eager_elementwise = false;
  const LayerElementwiseBytes fused = layer_elementwise_bytes(make_layer_shape(e.model, e.training, mesh, o));
  CHECK(eager.forward > 2 * fused.forward);
  CHECK(eager.backward > 2 * fused.backward);

  // predict(): one device, two micro-batches of one sequence, no recompute: eager adds exactly
  // 2 x layers x the extra bytes at the achieved memory bandwidth to forward and backward.
  const Mesh one = test::mesh_of(1, 1, 1, 1);
  e.training.eager_elementwise = false;
  e.training.norm = NormImpl::fused;
  const Prediction pf = predict(e, one, o);
  const LayerElementwiseBytes bf = layer_elementwise_bytes(make_layer_shape(e.model, e.training, one, o));
  e.training.eager_elementwise = true;
  e.training.norm = NormImpl::eager;
  const Prediction pe = predict(e, one, o);
  const LayerElementwiseBytes be = layer_elementwise_bytes(make_layer_shape(e.model, e.training, one, o));
  const double bw = achieved_memory_bandwidth_bytes_per_s(e.cluster);
  const double L = 2.0 * double(e.model.layers);
  REQUIRE(pe.micro_batches == 2);
  CHECK(pe.time.forward_compute_s - pf.time.forward_compute_s == Approx(L * (be.forward - bf.forward) / bw));
  CHECK(pe.time.backward_compute_s - pf.time.backward_compute_s == Approx(L * (be.backward - bf.backward) / bw));
}

TEST_CASE("cross-entropy traffic: fused half each way, PyTorch's unfused log_softmax + nll_loss op by op") {
  Experiment e = test::llama_experiment(4096, 1);
  const Mesh one = test::mesh_of(1, 1, 1, 1);
  ParallelOptions o;
  const LayerShape x = make_layer_shape(e.model, e.training, one, o);
  const double V = double(e.model.vocab), logits = 4096 * V;
  REQUIRE(x.activation_bytes == 2);
  // fused: (2e + 8) per logit, half forward, half backward.
  LossBytes b = loss_elementwise_bytes(x, V, CrossEntropy::fused);
  CHECK(b.forward == Approx(6 * logits));
  CHECK(b.backward == Approx(6 * logits));
  // unfused, 16-bit logits: upcast 6 + softmax 16 forward; zero gradient 4 + softmax backward 16
  // + the upcast's backward 6.
  b = loss_elementwise_bytes(x, V, CrossEntropy::unfused);
  CHECK(b.forward == Approx(22 * logits));
  CHECK(b.backward == Approx(26 * logits));
  // fused_16bit (flash-attn's xentropy): two reads forward, a read and a 16-bit write backward.
  b = loss_elementwise_bytes(x, V, CrossEntropy::fused_16bit);
  CHECK(b.forward == Approx(4 * logits));
  CHECK(b.backward == Approx(4 * logits));
  // float32 logits need no upcast.
  LayerShape y = x;
  y.activation_bytes = 4;
  b = loss_elementwise_bytes(y, V, CrossEntropy::unfused);
  CHECK(b.forward == Approx(16 * logits));
  CHECK(b.backward == Approx(20 * logits));
  // predict(): the last stage's forward and backward carry the difference to the fused count.
  const double bw = achieved_memory_bandwidth_bytes_per_s(e.cluster);
  e.training.cross_entropy = CrossEntropy::fused;
  const Prediction pf = predict(e, one, o);
  e.training.cross_entropy = CrossEntropy::unfused;
  const Prediction pu = predict(e, one, o);
  CHECK(pu.time.forward_compute_s - pf.time.forward_compute_s == Approx((22 - 6) * logits / bw));
  CHECK(pu.time.backward_compute_s - pf.time.backward_compute_s == Approx((26 - 6) * logits / bw));
  // fused_16bit in predict(): 4 instead of 6 bytes per logit each way in time, and at the loss's
  // peak the 16-bit logits and their 16-bit gradient (4 bytes per logit) instead of the logits
  // and their float32 copy (6).
  e.training.cross_entropy = CrossEntropy::fused_16bit;
  const Prediction p16 = predict(e, one, o);
  CHECK(pf.time.forward_compute_s - p16.time.forward_compute_s == Approx((6 - 4) * logits / bw));
  CHECK(pf.time.backward_compute_s - p16.time.backward_compute_s == Approx((6 - 4) * logits / bw));
  CHECK(pf.memory.logits_bytes == Approx(6 * logits));
  CHECK(p16.memory.logits_bytes == Approx(4 * logits));
}

TEST_CASE("autocast time: weights cast to 16 bits every forward and their gradients back, .grad accumulated after the first micro-batch") {
  Experiment e = test::llama_experiment(4096, 1);
  e.training.fp32_grad_accumulation = true;
  const Mesh one = test::mesh_of(1, 1, 1, 1);
  ParallelOptions o;
  o.recompute = Recompute::none;
  const Prediction master = predict(e, one, o);
  e.training.autocast = true;
  const Prediction amp = predict(e, one, o);
  const LayerShape x = make_layer_shape(e.model, e.training, one, o);
  LayerShape xm = x;
  xm.autocast = false;
  const LayerElementwiseBytes ba = layer_elementwise_bytes(x), bm = layer_elementwise_bytes(xm);
  REQUIRE(ba.forward == Approx(bm.forward));  // fused element-wise kernels: the same traffic
  const double bw = achieved_memory_bandwidth_bytes_per_s(e.cluster);
  // Block weights (layer_params less the two norm scales) and the output layer, 6 bytes each way.
  const double h = double(e.model.hidden);
  const double weights = double(e.model.layers) * (layer_params(e.model) - 2 * h) + double(e.model.vocab) * h;
  CHECK(amp.time.forward_compute_s - master.time.forward_compute_s == Approx(6 * weights / bw));
  CHECK(amp.time.backward_compute_s - master.time.backward_compute_s == Approx(6 * weights / bw));
  // Four micro-batches: three of them add into the float32 .grad, 12 bytes per parameter.
  e.training.global_batch_sequences = 4;
  const Prediction amp4 = predict(e, one, o);
  const double params = double(e.model.layers) * layer_params(e.model) + double(e.model.vocab) * h *
                        (e.model.tied_embeddings ? 1.0 : 2.0) + h;
  CHECK(amp4.time.backward_compute_s - 4 * amp.time.backward_compute_s == Approx(3 * params * 12 / bw));
}

TEST_CASE("grad_accumulation: the micro-batches' gradients summed outside the GEMMs, over the stage's parameters or ZeRO-2's shard") {
  Experiment e = test::llama_experiment(4096, 8);  // 8 micro-batches of one sequence on one device
  const Mesh one = test::mesh_of(1, 1, 1, 1);
  ParallelOptions o;
  o.recompute = Recompute::none;
  const Prediction fused = predict(e, one, o);
  REQUIRE(fused.micro_batches == 8);
  const double bw = achieved_memory_bandwidth_bytes_per_s(e.cluster);
  const double h = double(e.model.hidden);
  const double params = double(e.model.layers) * layer_params(e.model) + double(e.model.vocab) * h *
                        (e.model.tied_embeddings ? 1.0 : 2.0) + h;
  auto extra = [&](const Experiment& f, const Mesh& mesh) {
    Experiment g = f;
    g.training.grad_accumulation = GradAccumulation::fused;
    return predict(f, mesh, o).time.backward_compute_s - predict(g, mesh, o).time.backward_compute_s;
  };
  e.training.grad_accumulation = GradAccumulation::inplace;  // bf16 .grad += bf16
  CHECK(extra(e, one) == Approx(params * 7 * 6 / bw));
  e.training.fp32_grad_accumulation = true;  // FSDP2: cast the first, add the rest in float32
  CHECK(extra(e, one) == Approx(params * (6 + 7 * 10) / bw));
  e.training.grad_accumulation = GradAccumulation::cast_add;
  CHECK(extra(e, one) == Approx(params * 8 * 18 / bw));
  // Only the step time moves: memory and the other terms are the fused prediction's.
  const Prediction cast = predict(e, one, o);
  CHECK(cast.peak_memory_bytes == Approx(predict([&] { Experiment f = e; f.training.grad_accumulation = GradAccumulation::fused; return f; }(), one, o).peak_memory_bytes));
  CHECK(cast.time.forward_compute_s == Approx(fused.time.forward_compute_s));
  // ZeRO-2 over 8 ranks reduce-scatters every micro-batch: the sums run over the shard.
  Experiment z = test::llama_experiment(4096, 64);
  z.training.fp32_grad_accumulation = true;
  z.training.grad_accumulation = GradAccumulation::inplace;
  ParallelOptions o2 = o;
  o2.zero_stage = 2;
  const Mesh dp8 = test::mesh_of(8, 1, 1, 1);
  Experiment zf = z;
  zf.training.grad_accumulation = GradAccumulation::fused;
  CHECK(predict(z, dp8, o2).time.backward_compute_s - predict(zf, dp8, o2).time.backward_compute_s ==
        Approx(params / 8 * (6 + 7 * 10) / bw));
}

TEST_CASE("ZeRO-3: two gathers per layer whatever the recompute, FSDP2 copies each gather out of its buffer") {
  Experiment e = test::llama_experiment(4096, 8);
  const Mesh mesh = test::mesh_of(8, 1, 1, 1);
  ParallelOptions o;
  o.zero_stage = 3;
  o.recompute = Recompute::none;
  const Prediction flat = predict(e, mesh, o);
  e.training.fsdp_per_parameter = true;
  const Prediction fsdp2 = predict(e, mesh, o);
  // Per layer and micro-batch: two gathers, each reading and writing the layer's 16-bit weights.
  const double bw = achieved_memory_bandwidth_bytes_per_s(e.cluster);
  const double copies = double(e.model.layers) * 2.0 * (2.0 * layer_params(e.model) * 2.0) / bw;
  REQUIRE(fsdp2.micro_batches == 1);
  CHECK(fsdp2.time.zero_comm_exposed_s - flat.time.zero_comm_exposed_s == Approx(copies));
  // Nothing else moves, and nothing at all without ZeRO-3.
  CHECK(fsdp2.time.forward_compute_s == Approx(flat.time.forward_compute_s));
  o.zero_stage = 1;
  CHECK(predict(e, mesh, o).time.step_time_s == Approx(
      [&] { Experiment f = e; f.training.fsdp_per_parameter = false; return predict(f, mesh, o).time.step_time_s; }()));
  // Full recompute re-runs the forward inside the backward's gather: still two gathers, so the
  // copies are the same.
  o.zero_stage = 3;
  o.recompute = Recompute::full;
  const Prediction fsdp2_full = predict(e, mesh, o);
  e.training.fsdp_per_parameter = false;
  const Prediction flat_full = predict(e, mesh, o);
  CHECK(fsdp2_full.time.zero_comm_exposed_s - flat_full.time.zero_comm_exposed_s == Approx(copies));
}

TEST_CASE("full recompute re-runs the forward TP collectives, selective does not") {
  Experiment e = test::llama_experiment(8192, 8);
  const Mesh mesh = test::mesh_of(1, 8, 1, 1);
  ParallelOptions o;
  o.recompute = Recompute::none;
  const double none = predict(e, mesh, o).time.tp_comm_s;
  o.recompute = Recompute::selective;
  const double sel = predict(e, mesh, o).time.tp_comm_s;
  o.recompute = Recompute::full;
  const double full = predict(e, mesh, o).time.tp_comm_s;
  const double forward_ar = 8 * 32 * 2 * all_reduce_s(8, 8192.0 * 4096 * 2, e.cluster.intra_node);
  CHECK(sel == Approx(none));
  CHECK(full == Approx(none + forward_ar));
}

// Dropout comes from the model file (megatron_22b.yaml: dropout 0.1). With Korthikanti et al.
// 2022's setting (multi-head, f = 4h, fp16, materialised attention) predict()'s activation
// memory must be Table 2's per-layer formula times the layers, exactly.
TEST_CASE("dropout from the model file: predict() memory is Korthikanti Table 2 34sbh + 5as^2b per layer") {
  Experiment e = test::llama_experiment(2048, 2);
  e.model = load_model(std::string(RINGPLAN_SOURCE_DIR) + "/configs/models/megatron_22b.yaml");
  REQUIRE(e.model.dropout == 0.1);
  e.training.dtype = DType::fp16;
  ParallelOptions o;
  o.attention = AttentionImpl::materialized;
  o.micro_batch = 2;
  const double l = 48, s = 2048, b = 2, h = 6144, a = 64, t = 8;
  // Beside the layers, the output block keeps the final norm's input, its float32 row statistics
  // and the output layer's input (each split by TP only with sequence parallelism).
  auto kept = [&](const MemoryBreakdown& m, double share) {
    return m.activations_bytes + m.attention_scores_bytes - s * b * share * (2 * h * 2 + 4);
  };

  CHECK(make_layer_shape(e.model, e.training, test::mesh_of(1, 1, 1, 1), o).dropout);
  const MemoryBreakdown none = predict(e, test::mesh_of(1, 1, 1, 1), o).memory;
  CHECK(kept(none, 1) == Approx(l * (34 * s * b * h + 5 * a * s * s * b)).epsilon(1e-12));

  o.sequence_parallel = true;
  const MemoryBreakdown sp = predict(e, test::mesh_of(1, 8, 1, 1), o).memory;
  CHECK(kept(sp, 1 / t) == Approx(l * (34 * s * b * h + 5 * a * s * s * b) / t).epsilon(1e-12));

  // Selective: 34sbh/t kept per layer; one layer's scores (5as^2b/t) recomputed in backward.
  o.recompute = Recompute::selective;
  const MemoryBreakdown sel = predict(e, test::mesh_of(1, 8, 1, 1), o).memory;
  CHECK(sel.activations_bytes - s * b / t * (2 * h * 2 + 4) == Approx(l * 34 * s * b * h / t).epsilon(1e-12));
  CHECK(sel.attention_scores_bytes == Approx(5 * a * s * s * b / t).epsilon(1e-12));

  // Without dropout: no masks (2sbh) and no score dropout (mask + output, 3as^2b).
  e.model.dropout = 0.0;
  o.recompute = Recompute::none;
  o.sequence_parallel = false;
  CHECK_FALSE(make_layer_shape(e.model, e.training, test::mesh_of(1, 1, 1, 1), o).dropout);
  const MemoryBreakdown nodrop = predict(e, test::mesh_of(1, 1, 1, 1), o).memory;
  CHECK(kept(nodrop, 1) == Approx(l * (32 * s * b * h + 2 * a * s * s * b)).epsilon(1e-12));
}

TEST_CASE("dropout adds memory-bound time and efficiency.memory_bandwidth scales memory-bound terms") {
  Experiment e = test::llama_experiment(4096, 8);
  const Mesh mesh = test::mesh_of(1, 2, 1, 1);
  ParallelOptions o;
  o.attention = AttentionImpl::materialized;
  const Prediction base = predict(e, mesh, o);
  e.model.dropout = 0.1;
  const Prediction drop = predict(e, mesh, o);
  CHECK(drop.step_time_s > base.step_time_s);
  CHECK(drop.peak_memory_bytes > base.peak_memory_bytes);
  CHECK(drop.time.optimizer_s == base.time.optimizer_s);  // dropout does not touch the optimizer

  // The optimizer step is purely memory-bound: its time scales as 1 / memory_bandwidth_efficiency.
  e.model.dropout = 0.0;
  CHECK(e.cluster.memory_bandwidth_efficiency == kDefaultMemoryBandwidthEfficiency);
  CHECK(achieved_memory_bandwidth_bytes_per_s(e.cluster) == Approx(2039e9 * 0.8));
  e.cluster.memory_bandwidth_efficiency = 0.4;
  CHECK(achieved_memory_bandwidth_bytes_per_s(e.cluster) == Approx(2039e9 * 0.4));
  const Prediction slow = predict(e, mesh, o);
  CHECK(slow.time.optimizer_s == Approx(2.0 * base.time.optimizer_s).epsilon(1e-12));
  CHECK(slow.step_time_s > base.step_time_s);
  CHECK(slow.time.forward_compute_s > base.time.forward_compute_s);  // element-wise kernels slow down
}

TEST_CASE("collectives: efficiency scales the bandwidth term only, and the fit recovers a known curve") {
  const LinkProfile link{100e9, 5e-6};
  const double bytes = 64.0 * 1024 * 1024;
  const double ideal = all_reduce_s(8, bytes, link);
  CHECK(ideal == Approx(14 * 5e-6 + 2.0 * 7 / 8 * bytes / 100e9));
  const CollectiveCurve half{0.5, 0.0};
  CHECK(all_reduce_s(8, bytes, link, half) - 14 * 5e-6 == Approx(2.0 * (ideal - 14 * 5e-6)));
  CHECK(reduce_scatter_s(8, bytes, link, half) - 7 * 5e-6 == Approx(2.0 * (reduce_scatter_s(8, bytes, link) - 7 * 5e-6)));
  CHECK(all_gather_s(1, bytes, link, half) == 0.0);
  // Times generated from a known curve (max 0.6, half 2 MiB) are fitted back.
  const CollectiveCurve truth{0.6, 2.0 * 1024 * 1024};
  std::vector<double> sizes, times;
  for (double b : {256e3, 1e6, 4e6, 16e6}) {
    sizes.push_back(b);
    times.push_back(all_reduce_s(4, b, link, truth));
  }
  const CollectiveCurve fit = fit_collective_curve(sizes, times, 2.0 * 3 / 4, 6.0, link);
  CHECK(fit.max_efficiency == Approx(0.6).epsilon(1e-6));
  CHECK(fit.half_bytes == Approx(truth.half_bytes).epsilon(1e-6));
  // Faster than the link: capped at 1.
  CHECK(fit_collective_curve({1e6, 2e6}, {6 * 5e-6 + 1e-7, 6 * 5e-6 + 2e-7}, 1.5, 6.0, link).max_efficiency <= 1.0);
  // Efficiency falling with size (a CPU's caches; calibrate's 2-rank all-reduce on the dev VM
  // went 0.86, 1.41, 0.53, 0.43 of the link from 64 KiB to 4 MiB): no rising curve fits, so a
  // constant, the one whose predicted transfer times have the least squared log error (the
  // geometric mean, 0.725). It beats the best size's efficiency, the worst's and the others.
  const std::vector<double> falling_eff = {0.86, 1.41, 0.53, 0.43};
  const std::vector<double> falling_bytes = {65536, 262144, 1048576, 4194304};
  std::vector<double> falling_times;
  for (size_t i = 0; i < falling_eff.size(); ++i)
    falling_times.push_back(all_reduce_s(4, falling_bytes[i], link, CollectiveCurve{falling_eff[i], 0.0}));
  const CollectiveCurve flat = fit_collective_curve(falling_bytes, falling_times, 2.0 * 3 / 4, 6.0, link);
  CHECK(flat.half_bytes == 0.0);
  auto rel_sq = [&](double eff) {
    double sum = 0;
    for (size_t i = 0; i < falling_eff.size(); ++i) sum += std::pow(std::log(falling_eff[i] / eff), 2);
    return sum;
  };
  for (double other : {0.43, 0.5, 0.6, 0.7, 0.86, 1.0}) CHECK(rel_sq(flat.max_efficiency) <= rel_sq(other));
  CHECK(flat.max_efficiency == Approx(std::pow(0.86 * 1.41 * 0.53 * 0.43, 0.25)).epsilon(1e-9));
}

TEST_CASE("collectives: a profile's collective efficiency slows the TP and gradient terms of predict()") {
  Experiment e = test::llama_experiment(8192, 16);
  const Mesh mesh = test::mesh_of(4, 2, 1, 1);
  ParallelOptions o;
  const Prediction base = predict(e, mesh, o);
  e.cluster.collectives.all_reduce = {0.25, 0.0};
  const Prediction slow = predict(e, mesh, o);
  CHECK(slow.time.tp_comm_s > base.time.tp_comm_s);
  CHECK(slow.time.dp_comm_exposed_s >= base.time.dp_comm_exposed_s);
  CHECK(slow.time.forward_compute_s == Approx(base.time.forward_compute_s));
}

TEST_CASE("ZeRO memory: sharded states plus two units in flight (gathered weights, gradients being reduce-scattered)") {
  Experiment e = test::llama_experiment(8192, 16);
  const Mesh mesh = test::mesh_of(4, 2, 2, 1);
  ParallelOptions o;
  const StateBytes sb = state_bytes_per_param(e.training.dtype, e.training.optimizer);
  const double unit = std::max(layer_params(e.model), double(e.model.vocab * e.model.hidden)) / 2.0;  // / TP
  o.zero_stage = 1;
  const Prediction z1 = predict(e, mesh, o);
  o.zero_stage = 2;
  const Prediction z2 = predict(e, mesh, o);
  o.zero_stage = 3;
  const Prediction z3 = predict(e, mesh, o);
  // DP x CP = 8 shards the gradients (ZeRO-2) and the weights (ZeRO-3); two units stay whole,
  // and each unit being reduce-scattered has its shard-sized output buffer (1/8 of the unit).
  CHECK(z2.memory.gradients_bytes == Approx(z1.memory.gradients_bytes / 8.0 + 2.0 * unit * sb.gradients * (1.0 + 1.0 / 8.0)));
  CHECK(z2.memory.weights_bytes == Approx(z1.memory.weights_bytes));
  CHECK(z3.memory.weights_bytes == Approx(z1.memory.weights_bytes / 8.0 + 2.0 * unit * sb.weights));
  // One rank in the group: nothing is sharded, nothing is in flight.
  o.zero_stage = 3;
  const Prediction alone = predict(e, test::mesh_of(1, 2, 1, 1), o);
  o.zero_stage = 0;
  const Prediction zero0 = predict(e, test::mesh_of(1, 2, 1, 1), o);
  CHECK(alone.memory.weights_bytes == Approx(zero0.memory.weights_bytes));
  CHECK(alone.memory.gradients_bytes == Approx(zero0.memory.gradients_bytes));
}

TEST_CASE("cp_comm allgather in predict(): its collectives are the exposed CP comm, its buffers the CP memory") {
  Experiment e = test::llama_experiment(65536, 8);
  const Mesh mesh = test::mesh_of(1, 2, 4, 1);  // TP 2 x CP 4 in one 8-GPU node
  ParallelOptions ring;
  ring.recompute = Recompute::none;
  ParallelOptions ag = ring;
  ag.cp_comm = CpComm::allgather;
  REQUIRE(check_layout(e, mesh, ag, 8) == "");
  const Prediction pr = predict(e, mesh, ring), pa = predict(e, mesh, ag);
  // Per layer: forward all-gather of K,V, backward re-gather + reduce-scatter of dK,dV; each of
  // b * L * (kv_heads/TP) * d elements per tensor, bf16, over the 4 CP ranks inside the node.
  const double full_kv = 2.0 * 65536 * (8 / 2) * 128 * 2;
  const double ag_s = group_collective_s(CollectiveKind::all_gather, 4, 4, full_kv, e.cluster);
  const double rs_s = group_collective_s(CollectiveKind::reduce_scatter, 4, 4, full_kv, e.cluster);
  const double layers = 32, m = double(pa.micro_batches);
  CHECK(pa.time.ring_comm_exposed_s == Approx(m * layers * (2 * ag_s + rs_s)));
  CHECK(pa.memory.ring_buffers_bytes == Approx(3 * full_kv));  // 6 x (b*L*Hkv*d) elements
  CHECK(pa.memory.ring_buffers_bytes > pr.memory.ring_buffers_bytes);
  // Everything outside attention's CP exchange is the same layout.
  CHECK(pa.time.tp_comm_s == Approx(pr.time.tp_comm_s));
  CHECK(pa.time.dp_comm_exposed_s == Approx(pr.time.dp_comm_exposed_s));
  CHECK(pa.memory.activations_bytes == Approx(pr.memory.activations_bytes));
  CHECK(pa.options.cp_comm == CpComm::allgather);
}

TEST_CASE("cp_comm: no effect at CP = 1, and allgather refuses materialised attention with a reason") {
  Experiment e = test::llama_experiment(4096, 8);
  ParallelOptions ring, ag;
  ag.cp_comm = CpComm::allgather;
  const Prediction a = predict(e, test::mesh_of(8, 1, 1, 1), ring), b = predict(e, test::mesh_of(8, 1, 1, 1), ag);
  CHECK(a.step_time_s == b.step_time_s);
  CHECK(a.peak_memory_bytes == b.peak_memory_bytes);
  ag.attention = AttentionImpl::materialized;
  CHECK(check_layout(e, test::mesh_of(8, 1, 1, 1), ag, 8) == "");  // CP = 1: nothing to exchange
  CHECK(check_layout(e, test::mesh_of(4, 1, 2, 1), ag, 8) == "cp_comm allgather needs attention flash, got materialized");
}

TEST_CASE("cp_comm alltoall in predict(): four all-to-alls per pass are the exposed CP comm, head shards the CP memory") {
  Experiment e = test::llama_experiment(65536, 8);  // 32 heads, 8 KV heads
  const Mesh mesh = test::mesh_of(1, 2, 4, 1);       // TP 2 x CP 4 in one 8-GPU node: 16 and 4 heads per TP rank
  ParallelOptions ring;
  ring.recompute = Recompute::none;
  ParallelOptions a2a = ring;
  a2a.cp_comm = CpComm::alltoall;
  REQUIRE(check_layout(e, mesh, a2a, 8) == "");
  const Prediction pr = predict(e, mesh, ring), pa = predict(e, mesh, a2a);
  // Per rank and all-to-all: L/4 tokens of the 16 query heads (Q, O; dO, dQ) or of the 4 KV heads
  // (K, V; dK, dV), bf16, over the 4 CP ranks on the intra-node link.
  const double tokens = 65536.0 / 4;
  const double q_bytes = tokens * 16 * 128 * 2, kv_bytes = tokens * 4 * 128 * 2;
  const CollectiveCurve& eff = e.cluster.collectives.all_gather;
  const double pass = 2 * all_to_all_s(4, q_bytes, e.cluster.intra_node, eff) +
                      2 * all_to_all_s(4, kv_bytes, e.cluster.intra_node, eff);
  const double layers = 32, m = double(pa.micro_batches);
  CHECK(pa.time.ring_comm_exposed_s == Approx(m * layers * 2 * pass));  // forward + backward
  // No causal imbalance: every rank sees the whole sequence on 16/4 = 4 heads.
  CHECK(pa.time.cp_imbalance_s == 0.0);
  // Buffers: 6 Q-sized (4 heads) + 4 KV-sized (1 head) of the whole sequence.
  CHECK(pa.memory.ring_buffers_bytes == Approx((6 * 4 + 4 * 1) * 65536.0 * 128 * 2));
  CHECK(pa.time.tp_comm_s == Approx(pr.time.tp_comm_s));
  CHECK(pa.memory.activations_bytes == Approx(pr.memory.activations_bytes));
  CHECK(pa.options.cp_comm == CpComm::alltoall);
}

TEST_CASE("cp_comm alltoall: check_layout refuses CP that cannot split the heads per TP rank, with the numbers") {
  Experiment e = test::llama_experiment(4096, 64);  // 32 heads, 8 KV heads
  ParallelOptions a2a;
  a2a.cp_comm = CpComm::alltoall;
  // TP 8: 4 query heads per TP rank; CP 8 does not divide them.
  CHECK(check_layout(e, test::mesh_of(1, 8, 8, 1), a2a, 64) ==
        "cp_comm alltoall needs CP 8 to divide the query heads per TP rank (heads 32 / TP 8 = 4)");
  // TP 4: 8 query heads, 2 KV heads per TP rank; CP 8 divides the query heads and is a multiple
  // of the KV heads: the KV heads are replicated, valid.
  CHECK(check_layout(e, test::mesh_of(2, 4, 8, 1), a2a, 64) == "");
  // 24 heads, 6 KV heads, CP 4: 4 divides 24 but neither divides nor is divided by 6.
  e.model.heads = 24;
  e.model.kv_heads = 6;
  CHECK(check_layout(e, test::mesh_of(16, 1, 4, 1), a2a, 64) ==
        "cp_comm alltoall needs the KV heads per TP rank (kv_heads 6 / TP 1 = 6) to divide by CP 4 or divide it "
        "(replicated KV heads)");
  a2a.attention = AttentionImpl::materialized;
  CHECK(check_layout(e, test::mesh_of(32, 1, 2, 1), a2a, 64) == "cp_comm alltoall needs attention flash, got materialized");
  CHECK(check_layout(e, test::mesh_of(64, 1, 1, 1), a2a, 64) == "");  // CP = 1: nothing to split
}

TEST_CASE("cp_comm hybrid in predict(): the default group size stays in a node, the ring crosses nodes") {
  Experiment e = test::llama_experiment(131072, 8);  // 32 heads, 8 KV heads, 8-GPU nodes
  const Mesh mesh = test::mesh_of(1, 2, 16, 1);       // TP 2 x CP 16: 16 query, 4 KV heads per TP rank
  ParallelOptions h;
  h.cp_comm = CpComm::hybrid;
  // Largest divisor of 16 that splits 16 query heads, divides or is a multiple of 4 KV heads and
  // keeps TP 2 x A inside 8 GPUs: 4 (8 would need 16 GPUs per group).
  CHECK(default_cp_a2a_size(e.model, mesh, 8) == 4);
  CHECK(cp_a2a_size_of(e, mesh, h) == 4);
  REQUIRE(check_layout(e, mesh, h, 32) == "");
  const Prediction p = predict(e, mesh, h);
  CHECK(p.options.cp_a2a_size == 4);  // resolved: what a plan file writes
  ParallelOptions explicit4 = h;
  explicit4.cp_a2a_size = 4;
  const Prediction q = predict(e, mesh, explicit4);
  CHECK(q.step_time_s == Approx(p.step_time_s));
  // The layer's CP terms are predict_hybrid_layer's on the intra-node link (groups of TP 2 x 4 =
  // 8 GPUs) and the ring of 4 groups on the inter-node link.
  LayerShape x = make_layer_shape(e.model, e.training, mesh, explicit4);
  const LinkProfile& intra = e.cluster.intra_node;
  const LinkProfile& inter = e.cluster.inter_node;
  const RingLayerPrediction layer =
      predict_hybrid_layer(x, e.cluster, e.cluster.peak_flops_per_s(DType::bf16), intra, false, inter, true);
  const double layers = 32, m = double(p.micro_batches);
  CHECK(p.time.ring_comm_exposed_s ==
        Approx(m * layers * (layer.forward.exposed_comm_s + layer.backward.exposed_comm_s)));
  CHECK(p.memory.ring_buffers_bytes == Approx(hybrid_buffer_bytes(x)));
  // Each group size is a different layout: A = 2 moves less by all-to-all, more by the ring. With
  // KV heads split (not replicated) the buffers do not depend on A: (6 Hq + 4 Hkv) x L/CP in the
  // all-to-all stage and 10 x L/CP x Hkv-worth in the ring stage either way.
  ParallelOptions two = h;
  two.cp_a2a_size = 2;
  const Prediction p2 = predict(e, mesh, two);
  CHECK(p2.options.cp_a2a_size == 2);
  CHECK(p2.time.ring_comm_exposed_s != Approx(p.time.ring_comm_exposed_s));
  CHECK(p2.memory.ring_buffers_bytes == Approx(p.memory.ring_buffers_bytes));
}

TEST_CASE("cp_comm hybrid: check_layout names a group size that does not divide CP or cannot split the heads") {
  Experiment e = test::llama_experiment(4096, 64);  // 32 heads, 8 KV heads
  ParallelOptions h;
  h.cp_comm = CpComm::hybrid;
  h.cp_a2a_size = 3;
  CHECK(check_layout(e, test::mesh_of(1, 8, 8, 1), h, 64) == "cp_comm hybrid needs cp_a2a_size 3 to divide CP 8");
  h.cp_a2a_size = 8;  // TP 8: 4 query heads per TP rank
  CHECK(check_layout(e, test::mesh_of(1, 8, 8, 1), h, 64) ==
        "cp_comm hybrid needs cp_a2a_size 8 to divide the query heads per TP rank (heads 32 / TP 8 = 4)");
  h.cp_a2a_size = 4;
  CHECK(check_layout(e, test::mesh_of(1, 8, 8, 1), h, 64) == "");  // 1 KV head per TP rank: replicated
  e.model.heads = 24;
  e.model.kv_heads = 6;
  h.cp_a2a_size = 4;
  CHECK(check_layout(e, test::mesh_of(8, 1, 8, 1), h, 64) ==
        "cp_comm hybrid needs the KV heads per TP rank (kv_heads 6 / TP 1 = 6) to divide by cp_a2a_size 4 or divide "
        "it (replicated KV heads)");
  h.cp_a2a_size = 2;
  h.attention = AttentionImpl::materialized;
  CHECK(check_layout(e, test::mesh_of(8, 1, 8, 1), h, 64) == "cp_comm hybrid needs attention flash, got materialized");
  // The default for those heads and one 8-GPU node: 8 does not split 24 heads with 6 KV heads
  // (6 % 8, 8 % 6), 4 neither; 2 does.
  CHECK(default_cp_a2a_size(e.model, test::mesh_of(8, 1, 8, 1), 8) == 2);
}

TEST_CASE("the backward's GEMMs run on matmul_backward where the profile has it, the forward's on matmul") {
  // One layout without TP, CP or PP (no overlap windows): the backward's GEMM seconds follow the
  // backward curve alone. A backward curve equal to matmul changes nothing; one at half the
  // efficiency (half_tflop 0: flat) doubles exactly the backward GEMM time and leaves the forward.
  Experiment e = test::llama_experiment(4096, 8);
  e.cluster.matmul = {0.7, 0.0};
  ParallelOptions o;
  const Mesh mesh = test::mesh_of(8, 1, 1, 1);
  REQUIRE(check_layout(e, mesh, o, 8) == "");
  const Prediction base = predict(e, mesh, o);
  e.cluster.matmul_backward = e.cluster.matmul;
  const Prediction same = predict(e, mesh, o);
  CHECK(same.time.backward_compute_s == Approx(base.time.backward_compute_s).epsilon(1e-12));
  e.cluster.matmul_backward = {0.35, 0.0};
  const Prediction slow = predict(e, mesh, o);
  CHECK(slow.time.forward_compute_s == Approx(base.time.forward_compute_s).epsilon(1e-12));
  // Backward GEMM FLOPs of one micro-batch on this rank: 2x the forward's (blocks + logits).
  const ModelConfig& m = e.model;
  const double L = 4096, h = m.hidden;
  const double q = double(m.heads * m.head_dim), kv = double(m.kv_heads * m.head_dim);
  const double block = 2.0 * L * h * (q + 2 * kv) + 2.0 * L * q * h + 2.0 * L * h * 3.0 * double(m.ffn_hidden);
  const double gemm_bwd_flops = 2.0 * (double(m.layers) * block + 2.0 * L * h * double(m.vocab));
  const double peak = e.cluster.peak_flops_per_s(e.training.dtype);
  const double gemm_bwd_s = slow.micro_batches * gemm_bwd_flops / (peak * 0.7);
  CHECK(slow.time.backward_compute_s - base.time.backward_compute_s == Approx(gemm_bwd_s).epsilon(1e-9));
}

TEST_CASE("uplink_slowdown: flows leaving a switch group share its oversubscribed uplinks") {
  ClusterConfig c = test::a100_cluster(64);  // 8 GPUs per node
  c.switch_groups = {4, 3.0};                // 4 nodes per switch group, 3:1 out of it
  const auto ring = UplinkTraffic::ring, a2a = UplinkTraffic::all_to_all;
  CHECK(uplink_slowdown(8, 1, c, ring) == 1.0);   // TP 8: inside a node
  CHECK(uplink_slowdown(4, 8, c, ring) == 1.0);   // 4 nodes, all under one switch group
  // 64 members one node apart: 4 of a group's nodes per switch group, R / k = 3 / 4 -> not limited.
  CHECK(uplink_slowdown(64, 8, c, ring) == 1.0);
  // Members 2 nodes apart: 2 per switch group -> 3 / 2; 4 nodes apart: one per switch group -> 3.
  CHECK(uplink_slowdown(16, 16, c, ring) == doctest::Approx(1.5));
  CHECK(uplink_slowdown(16, 32, c, ring) == doctest::Approx(3.0));
  CHECK(uplink_slowdown(2, 32 * 15, c, ring) == doctest::Approx(3.0));  // first and last of 16 stages
  // All-to-all: the share of each member's data that leaves its switch group, times R.
  CHECK(uplink_slowdown(16, 8, c, a2a) == doctest::Approx(3.0 * (1.0 - 4.0 / 16.0)));
  CHECK(uplink_slowdown(32, 4, c, a2a) == doctest::Approx(3.0 * (1.0 - 4.0 / 16.0)));  // 2 per node, 16 nodes
  CHECK(uplink_slowdown(32, 4, c, ring) == 1.0);
  CHECK(uplink_slowdown(4, 8, c, a2a) == 1.0);  // inside one switch group
  // Switch groups that do not tile the groups: a 2-node group in 3-node switch groups straddles
  // one boundary (one segment leaves: R / 3); 4-node groups in 5-node switch groups put the end of
  // one group and the start of the next under one switch group (two segments: 2 R / 5).
  c.switch_groups = {3, 6.0};
  CHECK(uplink_slowdown(2, 8, c, ring) == doctest::Approx(2.0));
  c.switch_groups = {5, 5.0};
  CHECK(uplink_slowdown(32, 1, c, ring) == doctest::Approx(2.0));
  CHECK(uplink_slowdown(32, 1, c, a2a) == doctest::Approx(5.0 * 2.0 * 4.0 / 20.0));
  // A non-blocking network, or no switch groups, slows nothing.
  c.switch_groups = {4, 1.0};
  CHECK(uplink_slowdown(16, 32, c, ring) == 1.0);
  c.switch_groups = {};
  CHECK(uplink_slowdown(16, 32, c, a2a) == 1.0);
  const LinkProfile half = contended(c.inter_node, 2.0);
  CHECK(half.bandwidth_bytes_per_s == doctest::Approx(c.inter_node.bandwidth_bytes_per_s / 2));
  CHECK(half.latency_s == c.inter_node.latency_s);
}

TEST_CASE("oversubscribed uplinks: pipeline sends between switch groups slow by R, groups inside one do not") {
  Experiment e = test::llama_experiment(8192, 32);
  e.cluster = test::a100_cluster(16);
  const Mesh mesh = test::mesh_of(4, 8, 1, 4);  // a stage = DP 4 x TP 8 = 32 ranks = 4 nodes
  ParallelOptions o;
  REQUIRE(check_layout(e, mesh, o, e.cluster.gpus()) == "");
  const Prediction flat = predict(e, mesh, o);
  e.cluster.switch_groups = {4, 3.0};  // one stage per switch group: every send crosses one
  const Prediction grouped = predict(e, mesh, o);
  // The DP groups (4 nodes, one switch group) and TP (inside a node) are unchanged.
  CHECK(grouped.time.dp_comm_exposed_s == flat.time.dp_comm_exposed_s);
  CHECK(grouped.time.tp_comm_s == flat.time.tp_comm_s);
  // The hop: latency + bytes / bandwidth becomes latency + 3 bytes / bandwidth (untied embeddings:
  // the pipeline's sends are all of pp_comm_s).
  const double hops = 2.0 * (flat.micro_batches + mesh.pp - 1);
  const double lat = e.cluster.inter_node.latency_s, bw = e.cluster.inter_node.bandwidth_bytes_per_s;
  const double bytes = (flat.time.pp_comm_s / hops - lat) * bw;
  REQUIRE(bytes > 0);
  CHECK(grouped.time.pp_comm_s == doctest::Approx(hops * (lat + 3.0 * bytes / bw)));
  CHECK(grouped.step_time_s > flat.step_time_s);
  // Two stages per switch group: each chain crosses with 2 of its nodes' flows -> 3 / 2.
  e.cluster.switch_groups = {8, 3.0};
  CHECK(predict(e, mesh, o).time.pp_comm_s == doctest::Approx(hops * (lat + 1.5 * bytes / bw)));
}

TEST_CASE("oversubscribed uplinks: DP reduction and CP's ring with one member per switch group") {
  Experiment e = test::llama_experiment(32768, 64);
  e.cluster = test::a100_cluster(16);
  // DP 16 x TP 8: each DP group has one rank per node; with one node per switch group every
  // member sits under its own.
  const Mesh dp = test::mesh_of(16, 8, 1, 1);
  ParallelOptions o;
  o.zero_stage = 1;
  const Prediction flat = predict(e, dp, o);
  e.cluster.switch_groups = {1, 4.0};
  const Prediction grouped = predict(e, dp, o);
  CHECK(grouped.time.dp_comm_exposed_s + grouped.time.zero_comm_exposed_s >
        flat.time.dp_comm_exposed_s + flat.time.zero_comm_exposed_s);
  CHECK(grouped.time.tp_comm_s == flat.time.tp_comm_s);
  // CP 4 x TP 8: the ring's members are a node apart; at R = 4 a CP ring across nodes shows more.
  e.cluster.switch_groups = {};
  const Mesh cp = test::mesh_of(4, 8, 4, 1);
  const Prediction cp_flat = predict(e, cp, o);
  e.cluster.switch_groups = {1, 4.0};
  const Prediction cp_grouped = predict(e, cp, o);
  CHECK(cp_grouped.time.ring_comm_exposed_s > cp_flat.time.ring_comm_exposed_s);
  // The same links in the closed form of predict() and in ring_layer_shape (simulate, the replay).
  RingAttentionShape s;
  s.micro_batch = 1;
  s.heads_per_tp = 4;
  s.kv_heads_per_tp = 1;
  s.head_dim = 128;
  s.seq_len = 32768;
  s.tp = 8;
  s.cp = 4;
  const RingLayerShape r = ring_layer_shape(s, e.cluster);
  CHECK(r.inter_node);
  CHECK(r.link.bandwidth_bytes_per_s == doctest::Approx(e.cluster.inter_node.bandwidth_bytes_per_s / 4.0));
}

TEST_CASE("training.flash_kernel triton runs every flash kernel on the cluster's attention_flash_triton curve") {
  Experiment e = test::llama_experiment(32768, 16);
  ParallelOptions o;
  const Mesh ring = test::mesh_of(2, 1, 8, 1);
  REQUIRE(check_layout(e, ring, o, 16) == "");
  const double peak = e.cluster.peak_flops_per_s(e.training.dtype);
  const LayerShape x_std = make_layer_shape(e.model, e.training, ring, o);
  const RingKernelRate std_rate = ring_kernel_rate(x_std, e.cluster, peak);
  const Prediction std_ring = predict(e, ring, o);

  Experiment t = e;
  t.training.flash_kernel = FlashKernel::triton;
  // Without the curve the layout is refused (a profile given in place of the case's own).
  CHECK(check_layout(t, ring, o, 16) ==
        "training.flash_kernel triton needs a cluster with efficiency.attention_flash_triton; '" + e.cluster.name +
            "' has none");
  t.cluster.attention_flash_triton = {0.25, 0.02e12};
  REQUIRE(check_layout(t, ring, o, 16) == "");
  const LayerShape x = make_layer_shape(t.model, t.training, ring, o);
  CHECK(x.flash_kernel == FlashKernel::triton);
  const double kernel_flops = attention_forward_flops(x).per_step_kernel;
  const RingKernelRate rate = ring_kernel_rate(x, t.cluster, peak);
  // One curve for both passes, as the kernel's published joint rate.
  CHECK(rate.forward_flops_per_s == Approx(peak * t.cluster.attention_flash_triton.at(kernel_flops)));
  CHECK(rate.backward_flops_per_s == Approx(peak * t.cluster.attention_flash_triton.at(kernel_flops)));
  CHECK(rate.forward_flops_per_s < 0.5 * std_rate.forward_flops_per_s);
  // Everything but the kernels' rate is the same: merges, FLOPs.
  CHECK(rate.merge_forward_s == Approx(std_rate.merge_forward_s));
  CHECK(rate.per_pair_flops == Approx(std_rate.per_pair_flops));
  const Prediction tri_ring = predict(t, ring, o);
  CHECK(tri_ring.step_time_s > std_ring.step_time_s);
  CHECK(tri_ring.model_flops_per_step == Approx(std_ring.model_flops_per_step));
  CHECK(tri_ring.peak_memory_bytes == Approx(std_ring.peak_memory_bytes));

  // All-gather CP's one call per rank, and no CP at all, too.
  ParallelOptions ag = o;
  ag.cp_comm = CpComm::allgather;
  CHECK(predict(t, ring, ag).step_time_s > predict(e, ring, ag).step_time_s);
  const Mesh dp_only = test::mesh_of(16, 1, 1, 1);
  CHECK(predict(t, dp_only, o).step_time_s > predict(e, dp_only, o).step_time_s);
  // Materialised attention runs no flash kernel: the choice changes nothing.
  ParallelOptions mat = o;
  mat.attention = AttentionImpl::materialized;
  Experiment t_no_curve = t;
  t_no_curve.cluster.attention_flash_triton = {};
  CHECK(check_layout(t_no_curve, dp_only, mat, 16) == "");
  CHECK(predict(t, dp_only, mat).step_time_s == Approx(predict(e, dp_only, mat).step_time_s));
}

TEST_CASE("training.flash_kernel fa2 runs every flash kernel on the cluster's attention_flash_fa2 curve") {
  Experiment e = test::llama_experiment(32768, 16);
  ParallelOptions o;
  const Mesh ring = test::mesh_of(2, 1, 8, 1);
  const double peak = e.cluster.peak_flops_per_s(e.training.dtype);
  Experiment t = e;
  t.training.flash_kernel = FlashKernel::fa2;
  CHECK(check_layout(t, ring, o, 16) ==
        "training.flash_kernel fa2 needs a cluster with efficiency.attention_flash_fa2; '" + e.cluster.name +
            "' has none");
  // A Triton curve does not price FlashAttention-2: each kernel its own.
  t.cluster.attention_flash_triton = {0.25, 0.02e12};
  CHECK(check_layout(t, ring, o, 16) != "");
  t.cluster.attention_flash_fa2 = {0.3, 0.036e12};
  REQUIRE(check_layout(t, ring, o, 16) == "");
  const LayerShape x = make_layer_shape(t.model, t.training, ring, o);
  CHECK(x.flash_kernel == FlashKernel::fa2);
  const double kernel_flops = attention_forward_flops(x).per_step_kernel;
  const RingKernelRate rate = ring_kernel_rate(x, t.cluster, peak);
  CHECK(rate.forward_flops_per_s == Approx(peak * t.cluster.attention_flash_fa2.at(kernel_flops)));
  CHECK(rate.backward_flops_per_s == Approx(peak * t.cluster.attention_flash_fa2.at(kernel_flops)));
  // Slower curve, slower step; same FLOPs and memory.
  const Prediction std_ring = predict(e, ring, o), fa2_ring = predict(t, ring, o);
  CHECK(fa2_ring.step_time_s > std_ring.step_time_s);
  CHECK(fa2_ring.model_flops_per_step == Approx(std_ring.model_flops_per_step));
  CHECK(fa2_ring.peak_memory_bytes == Approx(std_ring.peak_memory_bytes));
  // A faster fa2 curve makes a faster step: the curve, not the name, sets the time.
  Experiment fast = t;
  fast.cluster.attention_flash_fa2 = {0.6, 0.036e12};
  CHECK(predict(fast, ring, o).step_time_s < fa2_ring.step_time_s);
}
