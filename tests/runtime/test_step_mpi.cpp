// The whole training step under mpirun: for every mesh and option that fits the job's world
// size, the parallel step's losses and updated parameters equal the one-process step of the
// same model, data and seed (each rank trains the tiny reference itself and compares its own
// shard). Registered for P = 1, 2, 4 in tests/runtime/CMakeLists.txt.
//   mpirun -np 4 --oversubscribe build/cpu/tests/runtime/ringplan_test_step_mpi
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "runtime/mpi_communicator.hpp"
#include "tests/runtime/mpi_doctest_main.hpp"
#include "tests/runtime/step_check.hpp"

using namespace ringplan;
using runtime::step::StepSpec;
using runtime::step::Trainer;


namespace {
runtime::MpiCommunicator* g_world = nullptr;

// Stated float32 bound. Both runs compute in float32 and differ only in summation order
// (partial sums over TP, the ring's block merge over CP, reduction trees over DP x CP). Measured
// after 3 Adam steps at lr 1e-2 (printed by the case): relative loss differences <= 1e-7, and
// parameter differences <= 1.1e-4 (Adam divides by sqrt(v), so an element whose gradient is
// near zero turns float32 noise into up to lr per step). A wrong shard, mask, position, reduction
// or schedule moves the loss by 1e-3 or more and its parameters by ~lr = 1e-2.
constexpr double kLossBound = 2e-6;
constexpr double kParamBound = 5e-4;
constexpr int kSteps = 3;

struct Case {
  std::string name;
  Mesh mesh;
  ParallelOptions options;
  int64_t layers = 2;
  Optimizer optimizer = Optimizer::adam;
  std::vector<int64_t> documents;  // packed documents of the 16-token sequences (empty: none)
};

// Packed documents crossing every shard boundary of 2 and 4 CP ranks (and zigzag chunks).
const std::vector<int64_t> kDocuments{3, 8, 5};

ParallelOptions opts(CpScheme scheme = CpScheme::zigzag) {
  ParallelOptions o;
  o.micro_batch = 1;
  o.cp_scheme = scheme;
  return o;
}

std::vector<Case> cases_for(int world) {
  std::vector<Case> cs;
  auto add = [&](std::string name, Mesh m, ParallelOptions o, int64_t layers = 2, Optimizer opt = Optimizer::adam) {
    if (m.world_size() == world) cs.push_back({std::move(name), m, o, layers, opt, {}});
  };
  ParallelOptions o;
  // P = 1: the options alone (recompute and ZeRO change nothing numerically).
  add("one process", Mesh{1, 1, 1, 1}, opts());
  o = opts();
  o.recompute = Recompute::full;
  add("recompute full", Mesh{1, 1, 1, 1}, o);
  // P = 2: each dimension.
  add("dp2", Mesh{2, 1, 1, 1}, opts());
  add("tp2", Mesh{1, 2, 1, 1}, opts());
  o = opts();
  o.sequence_parallel = true;
  add("tp2 sequence parallel", Mesh{1, 2, 1, 1}, o);
  add("cp2 contiguous", Mesh{1, 1, 2, 1}, opts(CpScheme::contiguous));
  add("cp2 zigzag", Mesh{1, 1, 2, 1}, opts(CpScheme::zigzag));
  add("cp2 striped", Mesh{1, 1, 2, 1}, opts(CpScheme::striped));
  add("pp2", Mesh{1, 1, 1, 2}, opts());
  o = opts();
  o.interleave = 2;
  add("pp2 interleaved v=2", Mesh{1, 1, 1, 2}, o, 4);
  // Uneven pipelines (core/pipeline_split.hpp): torchtitan's split of 3 layers (1, 2), the
  // first rank given 2 of 3, a loss slot (3 + 1 slots: 2, 1), and 5 layers interleaved over 4
  // virtual stages (1, 2, 1, 1: ranks hold 2 and 3).
  add("pp2 3 layers (1, 2)", Mesh{1, 1, 1, 2}, opts(), 3);
  o = opts();
  o.pp_first_layers = 2;
  add("pp2 pp_first_layers 2 of 3", Mesh{1, 1, 1, 2}, o, 3);
  o = opts();
  o.pp_loss_slot = true;
  add("pp2 loss slot (2, 1)", Mesh{1, 1, 1, 2}, o, 3);
  o = opts();
  o.interleave = 2;
  add("pp2 interleaved v=2, 5 layers", Mesh{1, 1, 1, 2}, o, 5);
  o = opts();
  o.zero_stage = 1;
  add("dp2 zero1", Mesh{2, 1, 1, 1}, o);
  o.zero_stage = 2;
  add("cp2 zero2", Mesh{1, 1, 2, 1}, o);
  o.zero_stage = 3;
  add("dp2 zero3", Mesh{2, 1, 1, 1}, o);
  o = opts();
  o.recompute = Recompute::full;
  add("tp2 recompute full", Mesh{1, 2, 1, 1}, o);
  o.recompute = Recompute::selective;
  add("cp2 recompute selective", Mesh{1, 1, 2, 1}, o);
  o.recompute = Recompute::selective_op;
  add("tp2 recompute selective_op", Mesh{1, 2, 1, 1}, o);
  add("dp2 sgd", Mesh{2, 1, 1, 1}, opts(), 2, Optimizer::sgd);
  // P = 4: combinations.
  add("dp2 x cp2", Mesh{2, 1, 2, 1}, opts());
  add("tp2 x cp2", Mesh{1, 2, 2, 1}, opts());
  add("cp4 zigzag", Mesh{1, 1, 4, 1}, opts());
  add("cp4 striped", Mesh{1, 1, 4, 1}, opts(CpScheme::striped));
  add("pp4", Mesh{1, 1, 1, 4}, opts(), 4);
  o = opts();
  o.pp_embedding_slot = o.pp_loss_slot = true;
  add("pp4 embedding and loss slots, 6 layers (1, 2, 2, 1)", Mesh{1, 1, 1, 4}, o, 6);
  add("pp2 x dp2", Mesh{2, 1, 1, 2}, opts());
  o = opts();
  o.interleave = 2;
  o.zero_stage = 2;
  add("pp4 interleaved v=2 zero2", Mesh{1, 1, 1, 4}, o, 8);
  o = opts();
  o.sequence_parallel = true;
  o.zero_stage = 2;
  o.recompute = Recompute::selective;
  add("tp2 sp x pp2 zero2 selective", Mesh{1, 2, 1, 2}, o);
  o.recompute = Recompute::selective_op;
  add("tp2 sp x cp2 selective_op", Mesh{1, 2, 2, 1}, o);
  o = opts();
  o.zero_stage = 1;
  o.recompute = Recompute::full;
  add("dp2 x tp2 zero1 full", Mesh{2, 2, 1, 1}, o);
  o.zero_stage = 3;
  add("dp2 x cp2 zero3 full", Mesh{2, 1, 2, 1}, o);
  o = opts();
  o.zero_stage = 3;
  add("pp2 x cp2 zero3", Mesh{1, 1, 2, 2}, o);
  // Hybrid sharding (options.dp_replicate R): ZeRO over (DP / R) x CP ranks, the reduced shards
  // all-reduced across the R replicas, the gradient norm counted once per shard. dp2 with R 2:
  // one-rank shard groups (the whole state on each rank, gradients all-reduced across the two).
  auto hsdp = [](int zero, int64_t replicas) {
    ParallelOptions h = opts();
    h.zero_stage = zero;
    h.dp_replicate = replicas;
    return h;
  };
  add("dp2 hsdp 2 zero1", Mesh{2, 1, 1, 1}, hsdp(1, 2));
  add("dp2 hsdp 2 zero3", Mesh{2, 1, 1, 1}, hsdp(3, 2));
  add("dp4 hsdp 2 zero1", Mesh{4, 1, 1, 1}, hsdp(1, 2));
  add("dp4 hsdp 2 zero2", Mesh{4, 1, 1, 1}, hsdp(2, 2));
  add("dp4 hsdp 2 zero3", Mesh{4, 1, 1, 1}, hsdp(3, 2));
  add("dp2 x cp2 hsdp 2 zero3 (shards over CP)", Mesh{2, 1, 2, 1}, hsdp(3, 2));
  // Hierarchical CP (cp_comm hybrid): all-to-all groups of A ranks, ring across CP/A of them.
  auto hybrid = [](int64_t a2a, CpScheme scheme) {
    ParallelOptions h = opts(scheme);
    h.cp_comm = CpComm::hybrid;
    h.cp_a2a_size = a2a;
    return h;
  };
  add("cp2 hybrid a2a 2 x ring 1", Mesh{1, 1, 2, 1}, hybrid(2, CpScheme::zigzag));
  add("cp2 hybrid a2a 1 x ring 2", Mesh{1, 1, 2, 1}, hybrid(1, CpScheme::zigzag));
  add("cp4 hybrid a2a 2 x ring 2 zigzag", Mesh{1, 1, 4, 1}, hybrid(2, CpScheme::zigzag));
  add("cp4 hybrid a2a 2 x ring 2 contiguous", Mesh{1, 1, 4, 1}, hybrid(2, CpScheme::contiguous));
  add("cp4 hybrid a2a 2 x ring 2 striped", Mesh{1, 1, 4, 1}, hybrid(2, CpScheme::striped));
  add("tp2 x cp2 hybrid a2a 2 (KV head replicated)", Mesh{1, 2, 2, 1}, hybrid(2, CpScheme::zigzag));
  add("dp2 x cp2 hybrid a2a 1 x ring 2", Mesh{2, 1, 2, 1}, hybrid(1, CpScheme::zigzag));
  // Packed documents: the mask inside the ring (and the other CP methods), the per-document
  // zigzag; the one-process reference masks the same documents.
  auto add_docs = [&](std::string name, Mesh m, ParallelOptions po) {
    if (m.world_size() == world) cs.push_back({std::move(name), m, po, 2, Optimizer::adam, kDocuments});
  };
  add_docs("documents one process", Mesh{1, 1, 1, 1}, opts());
  add_docs("documents cp2 zigzag", Mesh{1, 1, 2, 1}, opts(CpScheme::zigzag));
  add_docs("documents cp2 contiguous", Mesh{1, 1, 2, 1}, opts(CpScheme::contiguous));
  add_docs("documents cp2 striped", Mesh{1, 1, 2, 1}, opts(CpScheme::striped));
  o = opts();
  o.cp_comm = CpComm::allgather;
  add_docs("documents cp2 allgather", Mesh{1, 1, 2, 1}, o);
  o.cp_comm = CpComm::alltoall;
  add_docs("documents cp2 alltoall", Mesh{1, 1, 2, 1}, o);
  add_docs("documents cp2 hybrid a2a 2", Mesh{1, 1, 2, 1}, hybrid(2, CpScheme::zigzag));
  add_docs("documents cp4 hybrid a2a 2 x ring 2", Mesh{1, 1, 4, 1}, hybrid(2, CpScheme::zigzag));
  add_docs("documents cp4 zigzag", Mesh{1, 1, 4, 1}, opts(CpScheme::zigzag));
  add_docs("documents dp2 x cp2", Mesh{2, 1, 2, 1}, opts());
  add_docs("documents tp2 x cp2", Mesh{1, 2, 2, 1}, opts());
  return cs;
}
}  // namespace

TEST_CASE("training step: losses and parameters equal the one-process step (every mesh of this world size)") {
  const int W = g_world->size(), r = g_world->rank();
  auto self = g_world->split(r, 0);  // each rank's own one-process reference
  std::vector<std::string> lines;
  for (const Case& c : cases_for(W)) {
    StepSpec spec = test::tiny_step_spec();
    spec.model.layers = c.layers;
    spec.mesh = c.mesh;
    spec.options = c.options;
    spec.optimizer = c.optimizer;
    spec.document_lengths = c.documents;
    StepSpec ref_spec = spec;
    ref_spec.mesh = Mesh{1, 1, 1, 1};
    ref_spec.options = opts();
    Trainer<float> parallel(spec, *g_world);
    Trainer<float> reference(ref_spec, *self);
    const test::ParityResult p = test::compare_with_reference(parallel, reference, kSteps);
    INFO(c.name);
    CHECK(p.params_compared > 0);
    CHECK(p.max_loss_rel_diff <= kLossBound);
    CHECK(p.max_param_diff <= kParamBound);
    // The global gradient norm counts every element once on every mesh (TP-replicated norm
    // weights, DP x CP replicas and ZeRO shards), and it exceeded clip_grad, so the clipping
    // scale ran: counting the TP-replicated norm weights twice alone moves tp2's norm by 5e-3,
    // 250 times the bound.
    CHECK(p.max_norm_rel_diff <= kLossBound * 10);
    CHECK(p.min_grad_norm > spec.clip_grad);
    // The loss moved: the step trained something (a broken update would leave it flat).
    CHECK(p.losses.back() < p.losses.front());
    double worst[2] = {p.max_loss_rel_diff, p.max_param_diff};
    g_world->all_reduce_max(worst, 2);
    lines.push_back(fmt::format(
        "  {:<32} loss {:.5f} -> {:.5f}  max rel loss diff {:.2e}  max param diff {:.2e}  grad norm {:.3f} rel diff {:.1e}",
        c.name, p.losses.front(), p.losses.back(), worst[0], worst[1], p.min_grad_norm, p.max_norm_rel_diff));
  }
  if (r == 0) {
    std::printf("training step parity vs one process (P=%d, %d steps):\n", W, kSteps);
    for (const auto& l : lines) std::printf("%s\n", l.c_str());
  }
}

TEST_CASE("training step: ZeRO-3 prefetches the next layer, so two layers' gathered parameters are live") {
  const int W = g_world->size(), r = g_world->rank();
  if (W < 2) return;
  auto self = g_world->split(r, 0);
  // One layer's parameter block, from two unsharded one-process trainers that differ by a layer.
  auto full_weights = [&](int64_t layers) {
    StepSpec s = test::tiny_step_spec();
    s.model.layers = layers;
    s.mesh = Mesh{1, 1, 1, 1};
    Trainer<float> t(s, *self);
    return t.memory().weights_bytes;
  };
  const int64_t layer_bytes = full_weights(4) - full_weights(3);
  REQUIRE(layer_bytes > 0);
  const int64_t per_rank = (layer_bytes / 4 + W - 1) / W;  // floats, padded to the DP size
  const int64_t padded = per_rank * W * 4;
  StepSpec spec = test::tiny_step_spec();
  spec.model.layers = 4;
  spec.mesh = Mesh{W, 1, 1, 1};
  spec.options.zero_stage = 3;
  Trainer<float> t(spec, *g_world);
  t.train_step();
  const runtime::step::StepMemory m = t.memory();
  // ZeRO-3 weights = this rank's shard of every block (the size of one Adam moment) + the peak
  // of the blocks gathered at once: the layer in use and the next one, in flight while it
  // computes (the cost model's two live units; the embedding and output blocks are smaller).
  const int64_t gathered_peak = m.weights_bytes - m.optimizer_bytes / 2;
  CHECK(gathered_peak == 2 * padded);
}

TEST_CASE("training step: packed documents change the loss (the mask is applied), and bad lengths are refused") {
  auto self = g_world->split(g_world->rank(), 0);
  StepSpec spec = test::tiny_step_spec();
  Trainer<float> plain(spec, *self);
  spec.document_lengths = kDocuments;
  Trainer<float> packed(spec, *self);
  const double a = plain.train_step(), b = packed.train_step();
  INFO("loss without documents " << a << ", with " << b);
  CHECK(std::abs(a - b) > 1e-4);
  spec.document_lengths = {3, 8};
  CHECK_THROWS_AS(runtime::step::check_step_spec(spec), Error);
}

TEST_CASE("training step: a world size that does not match the mesh is refused on every rank before any work") {
  const int W = g_world->size();
  StepSpec spec = test::tiny_step_spec();
  spec.mesh = Mesh{1, 1, W + 1, 1};
  CHECK_THROWS_AS(Trainer<float>(spec, *g_world), Error);
}

int main(int argc, char** argv) {
  return test::run_mpi_doctest(argc, argv, g_world, "ringplan_test_step_mpi", true);
}
