// The whole training step on one GPU (runtime/gpu/gpu_trainer.hpp) against the CPU runtime's
// float32 step on the same model, data and seed (step::Trainer<float>, one process): losses of
// every step and every parameter after them. One rank: NCCL cannot put two ranks on one GPU.
//
// Bounds: the GPU runs bf16 activations and GEMM inputs (8 significant bits) with float32
// accumulation and float32 master weights, the CPU float32 throughout. The loss (about ln vocab)
// then agrees to 1e-2 relative. Adam moves a parameter by at most about lr per step
// (|m / sqrt(v)| <= 1 early on), so bf16 noise in a gradient can move the two runs' parameters
// apart by at most 2 lr per step: the parameter bound is 2 lr x steps. A wrong gradient (a
// missing term, a transposed GEMM) moves every parameter by about lr per step in a consistent
// direction and the loss trajectory apart by far more than 1e-2; a run that trains nothing shows
// a flat loss, which the test also refuses.
//
// Without a GPU every case prints "SKIPPED: no CUDA device (...)" and passes.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "runtime/gpu/gpu_executor.hpp"
#include "runtime/gpu/gpu_trainer.hpp"
#include "runtime/mpi_communicator.hpp"
#include "tests/runtime/cuda_test_helpers.hpp"
#include "tests/runtime/mpi_doctest_main.hpp"

using namespace ringplan;

namespace {
runtime::MpiCommunicator* g_world = nullptr;

using test::have_gpu;

runtime::step::StepSpec tiny_spec(int64_t head_dim, bool gated, int64_t micro_batches) {
  runtime::step::StepSpec s;
  s.model.name = "tiny";
  s.model.layers = 2;
  s.model.heads = 4;
  s.model.kv_heads = 2;
  s.model.head_dim = head_dim;
  s.model.hidden = 4 * head_dim;
  s.model.ffn_hidden = 512;
  s.model.gated_mlp = gated;
  s.model.vocab = 1024;
  s.model.tied_embeddings = false;
  s.mesh = Mesh{1, 1, 1, 1};
  s.options.micro_batch = 1;
  s.seq_len = 384;  // three 128-row tiles: partial diagonal tiles and a full one
  s.global_batch = micro_batches;
  s.causal = true;
  s.optimizer = Optimizer::adam;
  s.learning_rate = 1e-3;
  return s;
}
}  // namespace

TEST_CASE("GPU step matches the CPU float32 step: losses and parameters") {
  if (!have_gpu()) return;
  struct Case {
    int64_t head_dim;
    bool gated;
    int64_t micro_batches;
  };
  for (const Case c : {Case{64, true, 2}, Case{128, true, 1}, Case{64, false, 1}}) {
    CAPTURE(c.head_dim);
    CAPTURE(c.gated);
    CAPTURE(c.micro_batches);
    const runtime::step::StepSpec spec = tiny_spec(c.head_dim, c.gated, c.micro_batches);
    runtime::step::StepRunOptions opt;
    opt.steps = 3;
    opt.warmup = 0;
    opt.check_parity = true;
    const runtime::step::StepMeasurement m = runtime::gpu::run_training_steps_cuda(*g_world, spec, opt);
    REQUIRE(m.losses.size() == 3);
    REQUIRE(m.reference_losses.size() == 3);
    for (size_t i = 0; i < m.losses.size(); ++i) {
      CAPTURE(i);
      MESSAGE("loss gpu " << m.losses[i] << " cpu " << m.reference_losses[i]);
      CHECK(std::abs(m.losses[i] - m.reference_losses[i]) <= 1e-2 * std::abs(m.reference_losses[i]));
    }
    CHECK(m.losses.back() < m.losses.front());  // it trains
    MESSAGE("largest parameter difference " << m.max_param_diff << " over " << m.params_compared);
    CHECK(m.params_compared > 0);
    CHECK(m.max_param_diff <= 2.0 * spec.learning_rate * 3);
    REQUIRE(m.timing.size() == 3);
    CHECK(m.timing[0][0].term_s[size_t(runtime::step::Term::forward_compute)] > 0);
    CHECK(m.timing[0][0].term_s[size_t(runtime::step::Term::backward_compute)] > 0);
  }
}

TEST_CASE("GPU step refuses what it does not run, before any GPU work") {
  runtime::step::StepSpec s = tiny_spec(64, true, 1);
  s.mesh = Mesh{1, 2, 1, 1};
  s.model.heads = 4;
  CHECK_THROWS_AS(runtime::gpu::check_gpu_step_spec(s), Error);
  s = tiny_spec(64, true, 1);
  s.options.zero_stage = 1;
  CHECK_THROWS_AS(runtime::gpu::check_gpu_step_spec(s), Error);
  s = tiny_spec(64, true, 1);
  s.model.head_dim = 32;
  s.model.hidden = 128;
  CHECK_THROWS_AS(runtime::gpu::check_gpu_step_spec(s), Error);
  s = tiny_spec(64, true, 1);
  s.options.recompute = Recompute::full;
  CHECK_THROWS_AS(runtime::gpu::check_gpu_step_spec(s), Error);
  CHECK_NOTHROW(runtime::gpu::check_gpu_step_spec(tiny_spec(64, true, 1)));
}

int main(int argc, char** argv) { return test::run_mpi_doctest(argc, argv, g_world, "test_step_cuda", false); }
