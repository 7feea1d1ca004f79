// Flag parsers of plan/simulate: valid forms and the messages of invalid ones.
#include <doctest/doctest.h>

#include <algorithm>
#include <limits>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "cli/cli_args.hpp"

using namespace ringplan;
using namespace ringplan::planner;

namespace {
// The bad-input message of f(), or "" if it did not throw.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    return e.what();
  }
  return "";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("parse_mesh_spec: valid forms") {
  CHECK(parse_mesh_spec("--mesh", "dp=2,tp=8,cp=4,pp=1") == Mesh{2, 8, 4, 1});
  CHECK(parse_mesh_spec("--mesh", "pp=2,cp=3") == Mesh{1, 1, 3, 2});
  CHECK(parse_mesh_spec("--mesh", "tp=8") == Mesh{1, 8, 1, 1});
  CHECK(mesh_spec(Mesh{2, 8, 4, 1}) == "dp=2,tp=8,cp=4,pp=1");
  CHECK(parse_mesh_spec("--mesh", mesh_spec(Mesh{3, 5, 7, 11})) == Mesh{3, 5, 7, 11});
}

TEST_CASE("parse_mesh_spec: malformed input says what is valid") {
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=two"); }), "not a positive integer"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=0"); }), "not a positive integer"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=-2"); }), "not a positive integer"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=2x"); }), "not a positive integer"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "xp=2"); }), "valid keys: dp, tp, cp, pp"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=2,dp=4"); }), "given twice"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp2"); }), "not key=value"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=2,"); }), "not key=value"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", ""); }), "empty mesh"));
  // Sizes beyond 2^20, alone or as a product (which would wrap int64 if multiplied unchecked:
  // 4323 x 2731 x 409891 x 7623851 = 2 x 2^64 + 1).
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "pp=7623851"); }), "limit on mesh sizes, 2^20"));
  CHECK(has(error_of([] { parse_mesh_spec("--mesh", "dp=1024,tp=1024,cp=2"); }), "more than 2^20"));
  CHECK(parse_mesh_spec("--mesh", "dp=1024,tp=1024") == Mesh{1024, 1024, 1, 1});
}

TEST_CASE("enum flags: known names parse, unknown ones list the valid names") {
  CHECK(parse_recompute_flag("--recompute", "selective") == Recompute::selective);
  CHECK(parse_cp_scheme_flag("--cp-scheme", "striped") == CpScheme::striped);
  CHECK(parse_attention_flag("--attention", "materialized") == AttentionImpl::materialized);
  CHECK(parse_on_off_flag("--sequence-parallel", "on"));
  CHECK_FALSE(parse_on_off_flag("--sequence-parallel", "off"));
  const std::string rc = error_of([] { parse_recompute_flag("--recompute", "ful"); });
  CHECK(has(rc, "--recompute: unknown value 'ful'"));
  CHECK(has(rc, "none, selective, full"));
  CHECK(has(rc, "did you mean 'full'"));
  CHECK(has(error_of([] { parse_cp_scheme_flag("--cp-scheme", "ring"); }), "contiguous, zigzag, striped"));
  CHECK(has(error_of([] { parse_attention_flag("--attention", "sdpa"); }), "flash, materialized"));
  CHECK(has(error_of([] { parse_on_off_flag("--sequence-parallel", "yes"); }), "valid: on, off"));
  CHECK(has(error_of([] { parse_zero_stage_flag("--zero", 4); }), "valid: 0, 1, 2, 3"));
  CHECK(parse_zero_stage_flag("--zero", 3) == 3);
  CHECK(has(error_of([] { parse_positive_flag("--top", 0); }), "--top: must be a positive integer"));
}

TEST_CASE("check_mesh_gpus: a mesh must multiply to the GPU count") {
  CHECK(error_of([] { check_mesh_gpus(Mesh{2, 2, 2, 1}, 8, "--mesh"); }).empty());
  const std::string msg = error_of([] { check_mesh_gpus(Mesh{2, 2, 2, 1}, 16, "--mesh"); });
  CHECK(has(msg, "uses dp*tp*cp*pp = 8 GPUs but the experiment has 16"));
  CHECK(has(msg, "dp=4,tp=2,cp=2,pp=1"));  // a valid example keeping TP, CP, PP
  CHECK(has(msg, "--gpus 8"));
  // With the global batch (32 sequences, micro-batch 1) the example's DP divides it: 64 GPUs
  // all in DP would not, so the rest of DP goes to PP.
  const std::string batch = error_of([] { check_mesh_gpus(Mesh{8, 1, 1, 1}, 64, "--mesh", 32, 1); });
  CHECK(has(batch, "dp=32,tp=1,cp=1,pp=2"));
  const std::string micro = error_of([] { check_mesh_gpus(Mesh{2, 2, 1, 1}, 64, "--mesh", 32, 4); });
  CHECK(has(micro, "dp=8,tp=2,cp=1,pp=4"));  // 8 x micro-batch 4 = 32
}

TEST_CASE("mesh_where: the file, line and field of an experiment's mesh") {
  Experiment e;
  e.path = "exp.yaml";
  CHECK(mesh_where(e) == "exp.yaml: mesh");
  e.sources["mesh"] = FieldSource{"plan.yaml", 39, "experiment.mesh"};
  CHECK(mesh_where(e) == "plan.yaml:39: experiment.mesh");
  const std::string msg = error_of([&] { check_mesh_gpus(Mesh{2, 2, 2, 1}, 16, mesh_where(e)); });
  CHECK(msg.rfind("plan.yaml:39: experiment.mesh: mesh dp=2,tp=2,cp=2,pp=1 uses dp*tp*cp*pp = 8 GPUs", 0) == 0);
}

TEST_CASE("plan_top: any K keeps min(K, fitting) candidates, the best first, as plan() does") {
  const Experiment e = load_experiment(std::string(RINGPLAN_SOURCE_DIR) + "/configs/experiments/default.yaml");
  PlanSettings s;
  s.top_k = 5000;
  const PlanResult all = plan(e, s);
  REQUIRE(all.fitting > 4096);  // the second search is exercised
  for (int64_t k : {int64_t{1}, int64_t{4096}, int64_t{5000}, std::numeric_limits<int64_t>::max()}) {
    const PlanResult r = plan_top(e, PlanSettings{}, k);
    CHECK(static_cast<int64_t>(r.candidates.size()) == std::min(k, r.fitting));
    CHECK(r.fitting == all.fitting);
    CHECK(r.candidates.front().step_time_s == all.candidates.front().step_time_s);
  }
}

TEST_CASE("set_runtime_types: run predicts in the runtime's own types, whatever the plan's framework") {
  TrainingConfig t;
  t.dtype = DType::bf16;
  t.autocast = t.fp32_grad_accumulation = t.fp8 = true;
  t.eager_elementwise = t.fsdp_per_parameter = t.pytorch_pp_schedule = true;
  t.tp_dtensor = t.pp_scatter_gather = true;
  t.norm = NormImpl::low_precision;
  t.cross_entropy = CrossEntropy::unfused;
  t.grad_accumulation = GradAccumulation::cast_add;
  TrainingConfig cpu = t;
  set_runtime_types(cpu, false);
  CHECK(cpu.dtype == DType::fp32);
  CHECK_FALSE(cpu.fp32_grad_accumulation);
  CHECK_FALSE(cpu.autocast);
  CHECK_FALSE(cpu.fp8);
  CHECK_FALSE(cpu.eager_elementwise);
  CHECK(cpu.norm == NormImpl::fused);
  CHECK(cpu.cross_entropy == CrossEntropy::fused);
  CHECK_FALSE(cpu.fsdp_per_parameter);
  CHECK_FALSE(cpu.pytorch_pp_schedule);
  CHECK_FALSE(cpu.tp_dtensor);
  CHECK_FALSE(cpu.pp_scatter_gather);
  CHECK(cpu.grad_accumulation == GradAccumulation::fused);
  TrainingConfig gpu = t;
  set_runtime_types(gpu, true);
  CHECK(gpu.dtype == DType::bf16);
  CHECK(gpu.fp32_grad_accumulation);
  CHECK_FALSE(gpu.autocast);
  CHECK_FALSE(gpu.eager_elementwise);
  CHECK(gpu.grad_accumulation == GradAccumulation::fused);
  // The rest of the training settings stay the plan's.
  CHECK(gpu.seq_len == t.seq_len);
  CHECK(gpu.clip_grad == t.clip_grad);
}
