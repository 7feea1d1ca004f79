// The training step in one process: its float64 gradients against central finite differences
// of its own loss (every parameter kind, gated and plain MLP, tied and untied embeddings, with
// and without recompute), the layer pieces against closed forms, and the refusals of shapes
// that cannot be split.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "runtime/mpi_communicator.hpp"
#include "tests/runtime/mpi_doctest_main.hpp"
#include "runtime/step/measure_gemm.hpp"
#include "runtime/step/step_executor.hpp"
#include "runtime/step/ops.hpp"
#include "tests/runtime/step_check.hpp"

using namespace ringplan;
using runtime::step::StepSpec;
using runtime::step::Trainer;


namespace {
runtime::MpiCommunicator* g_world = nullptr;

// Worst relative error of the analytic gradient against (L(w+e) - L(w-e)) / 2e over a few
// elements of every parameter (first, last and a middle element of each block).
double worst_fd_error(StepSpec spec) {
  Trainer<double> t(spec, *g_world);
  t.loss_and_gradients();
  const std::vector<double> grads = t.gradients();
  double worst = 0;
  const double eps = 1e-5;
  for (const auto& p : t.params()) {
    const int64_t n = p.rows * p.cols;
    for (int64_t i : {int64_t{0}, n / 2, n - 1}) {
      const size_t at = p.offset + static_cast<size_t>(i);
      const double w0 = t.parameters()[at];
      t.parameters_mut()[at] = w0 + eps;
      const double lp = t.loss_and_gradients();
      t.parameters_mut()[at] = w0 - eps;
      const double lm = t.loss_and_gradients();
      t.parameters_mut()[at] = w0;
      const double fd = (lp - lm) / (2 * eps);
      const double err = std::abs(fd - grads[at]) / std::max(1e-4, std::abs(fd) + std::abs(grads[at]));
      INFO(p.name << "[" << i << "] analytic " << grads[at] << " finite difference " << fd);
      CHECK(err < 1e-5);
      worst = std::max(worst, err);
    }
  }
  return worst;
}
}  // namespace

TEST_CASE("step gradients equal finite differences in float64: SwiGLU, GQA, untied") {
  StepSpec s = test::tiny_step_spec();
  MESSAGE("worst relative error " << worst_fd_error(s));
}

TEST_CASE("step gradients equal finite differences in float64: GELU MLP, tied embeddings, non-causal") {
  StepSpec s = test::tiny_step_spec();
  s.model.gated_mlp = false;
  s.model.tied_embeddings = true;
  s.causal = false;
  MESSAGE("worst relative error " << worst_fd_error(s));
}

TEST_CASE("step gradients equal finite differences in float64: selective_op recompute, gated and not") {
  StepSpec s = test::tiny_step_spec();
  s.options.recompute = Recompute::selective_op;
  MESSAGE("gated: worst relative error " << worst_fd_error(s));
  s.model.gated_mlp = false;
  MESSAGE("not gated: worst relative error " << worst_fd_error(s));
}

TEST_CASE("step gradients equal finite differences in float64: full recompute, two micro-batches of 2") {
  StepSpec s = test::tiny_step_spec();
  s.options.recompute = Recompute::full;
  s.options.micro_batch = 2;
  MESSAGE("worst relative error " << worst_fd_error(s));
}

TEST_CASE("rotary embedding: inverse undoes it, and a pair rotates by pos * base^(-2i/d)") {
  const int64_t d = 4, heads = 1, n = 3;
  std::vector<int64_t> pos = {0, 5, 17};
  std::vector<double> x = {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4};
  std::vector<double> y = x;
  runtime::step::rope_apply(y.data(), pos.data(), n, n, heads, d, 10000.0, false);
  // Position 0: identity. Position 5, pair (0, 2): angle 5.
  CHECK(y[0] == doctest::Approx(1.0));
  CHECK(y[4] == doctest::Approx(1 * std::cos(5.0) - 3 * std::sin(5.0)));
  CHECK(y[6] == doctest::Approx(3 * std::cos(5.0) + 1 * std::sin(5.0)));
  CHECK(y[5] == doctest::Approx(2 * std::cos(5.0 * 0.01) - 4 * std::sin(5.0 * 0.01)));
  runtime::step::rope_apply(y.data(), pos.data(), n, n, heads, d, 10000.0, true);
  for (size_t i = 0; i < x.size(); ++i) CHECK(y[i] == doctest::Approx(x[i]).epsilon(1e-12));
}

TEST_CASE("step refuses shapes that cannot be split, naming the reason, before any communication") {
  auto refused = [](StepSpec s, const std::string& needle) {
    try {
      runtime::step::check_step_spec(s);
      FAIL("accepted: " << needle);
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::bad_input);
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  StepSpec s = test::tiny_step_spec();
  s.mesh = Mesh{1, 3, 1, 1};
  refused(s, "heads 4 not divisible by tp=3");
  s = test::tiny_step_spec();
  s.mesh = Mesh{1, 1, 1, 3};
  refused(s, "pp=3 exceeds the 2 layers");
  // Layers PP does not divide are split (core/pipeline_split.hpp); a split that cannot be built
  // is refused with the reason.
  s = test::tiny_step_spec();
  s.model.layers = 3;
  s.mesh = Mesh{1, 1, 1, 2};
  s.options.pp_first_layers = 2;
  s.options.pp_last_layers = 2;
  refused(s, "pipeline split: pp_first_layers 2 + pp_last_layers 2 exceed the model's 3 layers");
  s.options.pp_first_layers = s.options.pp_last_layers = 0;
  s.options.interleave = 2;
  refused(s, "pipeline split: PP×v = 4 stages for 3 layers");
  s = test::tiny_step_spec();
  s.mesh = Mesh{1, 1, 3, 1};
  refused(s, "seq_len 16 not divisible by 6 (zigzag sharding over cp=3)");
  s = test::tiny_step_spec();
  s.mesh = Mesh{3, 1, 1, 1};
  refused(s, "global batch 4 not divisible by dp x micro_batch = 3");
  s = test::tiny_step_spec();
  s.options.zero_stage = 4;
  refused(s, "zero_stage 4 must be 0..3");
  s = test::tiny_step_spec();
  s.model.vocab = 63;
  s.mesh = Mesh{1, 2, 1, 1};
  refused(s, "vocab 63 not divisible by tp=2");
  s = test::tiny_step_spec();
  s.seq_len = 6;
  s.mesh = Mesh{1, 4, 1, 1};
  s.model.heads = 4;
  s.model.kv_heads = 4;
  s.options.sequence_parallel = true;
  s.options.cp_scheme = CpScheme::contiguous;
  refused(s, "6 token rows by tp=4");
}

TEST_CASE("calibrate's GEMM shapes are the step's linear layers on one rank, split by TP, without repeats") {
  ModelConfig m = test::tiny_step_spec().model;  // hidden 32, 4:2 heads of 8, ffn 48, vocab 64
  using runtime::step::GemmShape;
  auto shapes = runtime::step::step_gemm_shapes(m, Mesh{1, 2, 1, 1}, 16);
  const std::vector<GemmShape> want = {{16, 32, 16}, {16, 32, 8}, {16, 16, 32}, {16, 32, 24}, {16, 24, 32}, {16, 32, 32}};
  CHECK(shapes == want);
  // TP 1 and MHA: Q, K, V and the attention output are one shape, measured once.
  m.kv_heads = 4;
  shapes = runtime::step::step_gemm_shapes(m, Mesh{}, 8);
  CHECK(shapes.size() == 4);
  CHECK(shapes.front() == GemmShape{8, 32, 32});
  CHECK(shapes.front().forward_flops() == 2.0 * 8 * 32 * 32);
}

TEST_CASE("calibrate's GEMM timing checks each product and reports positive times on every rank") {
  const std::vector<runtime::step::GemmShape> shapes = {{16, 32, 24}, {33, 17, 5}};
  const auto pts = runtime::step::measure_gemms(*g_world, shapes, 2);
  REQUIRE(pts.size() == 2);
  for (size_t i = 0; i < pts.size(); ++i) {
    CHECK(pts[i].shape == shapes[i]);
    CHECK(pts[i].forward_s > 0);
    CHECK(pts[i].backward_s > 0);
  }
}

TEST_CASE("TP time split: per collective the fastest rank of the TP group is the transfer, the rest is waiting") {
  // 4 ranks, TP 2: groups {0, 1} and {2, 3}; two collectives per rank this step.
  const std::vector<std::vector<double>> regions = {{1.0, 5.0}, {3.0, 2.0}, {10.0, 10.0}, {4.0, 20.0}};
  auto s = runtime::step::split_tp_comm(regions, 0, 2);
  CHECK(s.transfer_s == doctest::Approx(1.0 + 2.0));
  CHECK(s.wait_s == doctest::Approx(0.0 + 3.0));
  s = runtime::step::split_tp_comm(regions, 1, 2);
  CHECK(s.transfer_s == doctest::Approx(3.0));
  CHECK(s.wait_s == doctest::Approx(2.0 + 0.0));
  s = runtime::step::split_tp_comm(regions, 3, 2);  // its group is {2, 3}, not rank 0's
  CHECK(s.transfer_s == doctest::Approx(4.0 + 10.0));
  CHECK(s.wait_s == doctest::Approx(0.0 + 10.0));
  // TP 1: every collective is its own transfer.
  s = runtime::step::split_tp_comm(regions, 2, 1);
  CHECK(s.transfer_s == doctest::Approx(20.0));
  CHECK(s.wait_s == 0.0);
}

int main(int argc, char** argv) {
  return test::run_mpi_doctest(argc, argv, g_world, "ringplan_test_step_unit", false);
}
