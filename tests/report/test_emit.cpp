// Emit (report/emit.hpp): exact Megatron-LM arguments and torchtitan settings for hand-made
// plans; every Megatron flag checked against the flag list of the pinned parser
// (data/megatron_core_v0.19.0_flags.txt) and every torchtitan key against the pinned versions'
// config fields (copied below with their commits); torchtitan's pipeline stage arithmetic; the
// TOML and Python string writers; the notes and the errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <toml++/toml.h>
#include <vector>

#include "core/error.hpp"
#include "report/emit.hpp"

using namespace ringplan;

namespace {

// Llama-3-8B-like model on 128 GPUs; the numbers only need to be consistent.
Experiment hand_made_experiment() {
  Experiment e;
  e.name = "emit-test";
  e.model.name = "llama3_8b";
  e.model.layers = 32;
  e.model.hidden = 4096;
  e.model.heads = 32;
  e.model.kv_heads = 8;
  e.model.head_dim = 128;
  e.model.ffn_hidden = 14336;
  e.model.gated_mlp = true;
  e.model.vocab = 128256;
  e.model.tied_embeddings = false;
  e.model.rope_base = 500000;
  e.cluster.name = "h100-test";
  e.cluster.memory_bytes = 80.0 * 1024 * 1024 * 1024;
  e.cluster.gpus_per_node = 8;
  e.cluster.nodes = 16;
  e.training.seq_len = 131072;
  e.training.global_batch_sequences = 64;
  e.training.dtype = DType::bf16;
  return e;
}

// DP=2 TP=8 CP=4 PP=2, interleave 2, selective recompute, ZeRO-1, SP, zigzag, flash.
sim::Prediction hand_made_plan() {
  sim::Prediction p;
  p.mesh = Mesh{2, 8, 4, 2};
  p.options.micro_batch = 1;
  p.options.recompute = Recompute::selective;
  p.options.zero_stage = 1;
  p.options.sequence_parallel = true;
  p.options.cp_scheme = CpScheme::zigzag;
  p.options.interleave = 2;
  p.options.attention = AttentionImpl::flash;
  p.micro_batches = 32;  // 64 / (DP 2 x micro-batch 1)
  p.step_time_s = 12.5;
  p.tokens_per_s = 64.0 * 131072 / 12.5;
  p.mfu = 0.41;
  p.peak_memory_bytes = 61.0 * 1024 * 1024 * 1024;
  p.capacity_bytes = 80.0 * 1024 * 1024 * 1024;
  p.fits = true;
  return p;
}

template <typename T>
bool has_note(const T& out, const std::string& needle) {
  return std::any_of(out.notes.begin(), out.notes.end(),
                     [&](const std::string& n) { return n.find(needle) != std::string::npos; });
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// The value after `flag` in argv, or "" when absent.
std::string value_of(const std::vector<std::string>& args, const std::string& flag) {
  const auto it = std::find(args.begin(), args.end(), flag);
  return it == args.end() || it + 1 == args.end() ? std::string() : *(it + 1);
}

// Option strings of Megatron-LM's parser at core_v0.19.0 (commit
// 5be9626709af2722333bf54797c954c09edeada3), dumped from the parser itself.
const std::set<std::string>& megatron_flags() {
  static const std::set<std::string> flags = [] {
    std::set<std::string> out;
    std::ifstream in(std::string(RINGPLAN_REPORT_TEST_DATA) + "/megatron_core_v0.19.0_flags.txt");
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] != '#') out.insert(line);
    }
    return out;
  }();
  return flags;
}

// Every "--flag" of a launch (plan, run and both data argument lists) is a flag of the pinned parser.
void check_flags_exist(const report::MegatronLaunch& l) {
  REQUIRE(megatron_flags().size() > 800);
  for (const auto* list : {&l.args, &l.run_args, &l.mock_data_args, &l.real_data_args}) {
    for (const auto& a : *list) {
      if (a.rfind("--", 0) == 0) {
        INFO("flag " << a);
        CHECK(megatron_flags().count(a) == 1);
      }
    }
  }
}

// torchtitan config fields per section, copied from the pinned sources.
using KeySet = std::map<std::string, std::set<std::string>>;
// v0.2.2 (commit 73a0e6979dd10b6b1904098eb3c8f62c18ab87ce) torchtitan/config/job_config.py:
// class Parallelism, Training, ActivationCheckpoint, Model.
const KeySet kTomlKeys = {
    {"parallelism",
     {"data_parallel_replicate_degree", "data_parallel_shard_degree", "fsdp_reshard_after_forward",
      "tensor_parallel_degree", "disable_loss_parallel", "enable_async_tensor_parallel", "pipeline_parallel_degree",
      "module_fqns_per_model_part", "pipeline_parallel_first_stage_less_layers",
      "pipeline_parallel_last_stage_less_layers", "pipeline_parallel_layers_per_stage", "pipeline_parallel_schedule",
      "pipeline_parallel_schedule_csv", "pipeline_parallel_microbatch_size",
      "pipeline_parallel_expert_parallel_overlap", "context_parallel_degree", "context_parallel_load_balancer",
      "context_parallel_rotate_method", "expert_parallel_degree", "expert_tensor_parallel_degree",
      "expert_parallel_comm_backend"}},
    {"training",
     {"dataset", "dataset_path", "local_batch_size", "global_batch_size", "seq_len", "max_norm", "steps",
      "enable_cpu_offload", "dtype", "mixed_precision_param", "mixed_precision_reduce", "gc_freq", "gc_debug",
      "dataloader"}},
    {"activation_checkpoint",
     {"mode", "selective_ac_option", "per_op_sac_force_recompute_mm_shapes_by_fqns", "early_stop", "memory_budget",
      "visualize_memory_budget_pareto", "preserve_rng_state", "determinism_check", "debug"}},
    {"model", {"name", "flavor", "hf_assets_path", "tokenizer_path", "converters", "print_after_conversion"}},
    {"compile", {"enable", "components", "backend"}},  // class Compile
    // class Float8Linear (job_config.py:731), [quantize.linear.float8]
    {"quantize.linear.float8",
     {"enable_fsdp_float8_all_gather", "precompute_float8_dynamic_scale_for_fsdp", "recipe_name", "filter_fqns",
      "emulate"}},
};
// main at commit b5bcd76c66d0acb1a08b176d9639425bc55e0b2a torchtitan/config/configs.py:
// ParallelismConfig and TrainingConfig (Trainer.Config.parallelism / .training).
const KeySet kPythonKeys = {
    {"parallelism",
     {"data_parallel_replicate_degree", "data_parallel_shard_degree", "fsdp_reshard_after_forward",
      "enable_fsdp_symm_mem", "tensor_parallel_degree", "enable_sequence_parallel", "spmd_backend",
      "pipeline_parallel_degree", "module_fqns_per_model_part", "pipeline_parallel_first_stage_less_layers",
      "pipeline_parallel_last_stage_less_layers", "pipeline_parallel_layers_per_stage", "pipeline_parallel_schedule",
      "pipeline_parallel_schedule_csv", "num_pp_microbatches", "context_parallel_degree",
      "context_parallel_load_balancer", "context_parallel_ptrr_mask_key", "expert_parallel_degree"}},
    {"training",
     {"num_tokens_per_microbatch_per_dp_rank", "num_tokens_per_train_step", "max_context_length", "max_norm",
      "steps", "enable_cpu_offload", "disable_cuda_graphs", "dtype", "mixed_precision_param",
      "mixed_precision_reduce", "gc_freq", "gc_debug"}},
    {"compile", {"enable", "enable_async_tensor_parallel", "components", "backend"}},  // CompileConfig
};

void check_keys_exist(const report::TorchtitanConfig& c) {
  const KeySet& keys = c.target == report::TorchtitanTarget::toml ? kTomlKeys : kPythonKeys;
  for (const auto& s : c.settings) {
    INFO("[" << s.section << "] " << s.key);
    REQUIRE(keys.count(s.section) == 1);
    CHECK(keys.at(s.section).count(s.key) == 1);
  }
}

// The value of one torchtitan setting, or nullopt.
std::optional<report::TorchtitanValue> setting(const report::TorchtitanConfig& c, const std::string& section,
                                               const std::string& key) {
  for (const auto& s : c.settings) {
    if (s.section == section && s.key == key) return s.value;
  }
  return std::nullopt;
}

int64_t int_setting(const report::TorchtitanConfig& c, const std::string& section, const std::string& key,
                    int64_t absent) {
  const auto v = setting(c, section, key);
  return v ? std::get<int64_t>(*v) : absent;
}

// torchtitan's stage arithmetic (distributed/pipeline_parallel.py at both pinned versions):
// returns the stages per rank it builds, or throws std::runtime_error where it raises.
int64_t torchtitan_stages_per_rank(const report::TorchtitanConfig& c, int64_t layers, bool single_stage_schedule) {
  const int64_t pp = int_setting(c, "parallelism", "pipeline_parallel_degree", 1);
  const auto fqns = setting(c, "parallelism", "module_fqns_per_model_part");
  if (fqns) {
    const auto& parts = std::get<std::vector<std::vector<std::string>>>(*fqns);
    if (parts.size() % pp != 0) throw std::runtime_error("num_stages must be evenly divisible by pp_degree");
    return static_cast<int64_t>(parts.size()) / pp;
  }
  const int64_t first = int_setting(c, "parallelism", "pipeline_parallel_first_stage_less_layers", 1);
  const int64_t last = int_setting(c, "parallelism", "pipeline_parallel_last_stage_less_layers", 1);
  const int64_t k = int_setting(c, "parallelism", "pipeline_parallel_layers_per_stage", 0);
  if (k == 0) return single_stage_schedule ? 1 : 2;
  const int64_t stages = (layers + first + last + k - 1) / k;
  if (stages % pp != 0) throw std::runtime_error("virtual stages not divisible by PP");
  const int64_t per_rank = stages / pp;
  if (single_stage_schedule && per_rank != 1) throw std::runtime_error("single stage schedule needs 1 stage per rank");
  if (!single_stage_schedule && per_rank < 2) throw std::runtime_error("multi-stage schedule needs >= 2 per rank");
  // generate_llm_fqn_per_model_part: weights may not exceed the layers of a stage.
  const int64_t effective = layers + first + last;
  if (first > effective / stages || last > effective / stages) throw std::runtime_error("weight exceeds stage");
  return per_rank;
}

}  // namespace


TEST_CASE("emit: Megatron-LM arguments of a hand-made plan, exactly") {
  const auto l = report::megatron_launch(hand_made_experiment(), hand_made_plan());
  const std::vector<std::string> expected = {
      "--num-layers", "32", "--hidden-size", "4096", "--ffn-hidden-size", "14336", "--num-attention-heads", "32",
      "--kv-channels", "128", "--group-query-attention", "--num-query-groups", "8",
      "--position-embedding-type", "rope", "--rotary-base", "500000", "--normalization", "RMSNorm", "--swiglu",
      "--disable-bias-linear", "--untie-embeddings-and-output-weights", "--attention-dropout", "0",
      "--hidden-dropout", "0", "--seq-length", "131072", "--max-position-embeddings", "131072",
      "--attention-backend", "flash", "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "2",
      "--context-parallel-size", "4", "--cp-comm-type", "p2p", "--num-layers-per-virtual-pipeline-stage", "8",
      "--sequence-parallel", "--micro-batch-size", "1", "--global-batch-size", "64",
      "--recompute-granularity", "selective", "--use-distributed-optimizer", "--overlap-grad-reduce", "--clip-grad",
      "1", "--bf16"};
  CHECK(l.args == expected);
  // No seq_len x seq_len mask from the dataloader (16 GiB per micro-batch at 128K on the GPU).
  CHECK(l.mock_data_args == std::vector<std::string>{"--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size",
                                                     "128256", "--no-create-attention-mask-in-dataloader"});
  CHECK(contains(l.real_data_args, "--no-create-attention-mask-in-dataloader"));
  // Not FSDP, TP > 1: Megatron asserts CUDA_DEVICE_MAX_CONNECTIONS=1.
  CHECK(contains(l.env, "export CUDA_DEVICE_MAX_CONNECTIONS=1"));
  REQUIRE(l.notes.size() == 1);
  CHECK(l.notes[0].find("vocabulary 128256") != std::string::npos);
  check_flags_exist(l);
}

TEST_CASE("emit: Megatron-LM overlaps the gradient reduction where the plan has one to overlap") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();  // DP 2 x CP 4
  auto has = [](const report::MegatronLaunch& l, const std::string& flag) {
    return std::find(l.args.begin(), l.args.end(), flag) != l.args.end();
  };
  CHECK(has(report::megatron_launch(e, p), "--overlap-grad-reduce"));
  CHECK_FALSE(has(report::megatron_launch(e, p), "--overlap-param-gather"));
  // The parameter all-gather behind the next forward only where the plan assumes it (ZeRO-1).
  p.options.overlap_param_gather = true;
  CHECK(p.options.zero_stage == 1);
  CHECK(has(report::megatron_launch(e, p), "--overlap-param-gather"));
  CHECK(has(report::megatron_launch(e, p), "--overlap-grad-reduce"));  // Megatron-LM asserts both
  // One rank per DP x CP group: nothing to reduce or gather.
  p.mesh = Mesh{1, 8, 1, 2};
  e.training.global_batch_sequences = 32;
  CHECK_FALSE(has(report::megatron_launch(e, p), "--overlap-grad-reduce"));
  CHECK_FALSE(has(report::megatron_launch(e, p), "--overlap-param-gather"));
  // Megatron-FSDP (ZeRO-2/3) reduces on its own schedule.
  p.mesh = Mesh{2, 8, 4, 2};
  e.training.global_batch_sequences = 64;
  p.options.zero_stage = 3;
  CHECK_FALSE(has(report::megatron_launch(e, p), "--overlap-grad-reduce"));
  CHECK_FALSE(has(report::megatron_launch(e, p), "--overlap-param-gather"));
}

TEST_CASE("emit: every Megatron-LM flag of many plans is a flag of the pinned parser") {
  for (int zero = 0; zero <= 3; ++zero) {
    for (Recompute rc : {Recompute::none, Recompute::selective, Recompute::full}) {
      for (DType dt : {DType::bf16, DType::fp16, DType::fp32}) {
        Experiment e = hand_made_experiment();
        e.training.dtype = dt;
        e.training.optimizer = zero == 2 ? Optimizer::sgd : Optimizer::adam;
        e.model.layers = zero == 0 ? 30 : 32;  // 30 on PP=4: uneven stages
        e.model.kv_heads = zero == 1 ? 32 : 8;
        e.model.gated_mlp = zero != 3;
        sim::Prediction p = hand_made_plan();
        p.options.zero_stage = zero;
        p.options.recompute = rc;
        p.options.attention = zero == 1 ? AttentionImpl::materialized : AttentionImpl::flash;
        if (zero == 0) {
          p.mesh = Mesh{2, 8, 2, 4};
          p.options.interleave = 1;
        }
        if (zero == 1) p.mesh.cp = 1;  // materialized attention has no CP in Megatron-LM (Transformer Engine)
        e.training.fp8 = zero == 3 && dt == DType::bf16;
        check_flags_exist(report::megatron_launch(e, p));
      }
    }
  }
}

TEST_CASE("emit: Megatron-FSDP for ZeRO-2 and ZeRO-3 -- checkpoint format and environment") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  for (int zero : {2, 3}) {
    p.options.zero_stage = zero;
    const auto l = report::megatron_launch(e, p);
    CHECK(contains(l.args, "--use-megatron-fsdp"));
    CHECK(value_of(l.args, "--data-parallel-sharding-strategy") == (zero == 2 ? "optim_grads" : "optim_grads_params"));
    CHECK(value_of(l.args, "--ckpt-format") == "fsdp_dtensor");  // validate_args asserts it with FSDP
    CHECK(contains(l.env, "unset CUDA_DEVICE_MAX_CONNECTIONS"));   // and asserts it is not "1"
    CHECK_FALSE(contains(l.env, "export CUDA_DEVICE_MAX_CONNECTIONS=1"));
    CHECK(has_note(l, "FSDP's requirement wins"));  // TP 8, CP 4
  }
  p.options.zero_stage = 1;
  const auto l = report::megatron_launch(e, p);
  CHECK_FALSE(contains(l.args, "--use-megatron-fsdp"));
  CHECK(value_of(l.args, "--ckpt-format").empty());
}

TEST_CASE("emit: Megatron-LM recompute, precision, dropout, non-gated MLP, uneven pipeline") {
  Experiment e = hand_made_experiment();
  e.model.layers = 30;
  e.model.gated_mlp = false;
  e.model.tied_embeddings = true;
  e.model.dropout = 0.1;
  e.model.rope_base = 10000;
  e.training.dtype = DType::fp16;
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 8, 2, 4};
  p.options.interleave = 1;
  p.options.recompute = Recompute::full;
  p.options.cp_scheme = CpScheme::contiguous;
  const auto l = report::megatron_launch(e, p);
  // 30 layers on PP 4, the cost model's split (torchtitan's rule): 7, 8, 8, 7.
  CHECK(value_of(l.args, "--pipeline-model-parallel-layout") == "Et*7|t*8|t*8|t*7L");
  CHECK(value_of(l.args, "--recompute-method") == "uniform");
  CHECK(value_of(l.args, "--recompute-num-layers") == "1");
  CHECK(value_of(l.args, "--attention-dropout") == "0.1");
  CHECK(value_of(l.args, "--hidden-dropout") == "0.1");
  CHECK(value_of(l.args, "--rotary-base") == "10000");
  CHECK(contains(l.args, "--fp16"));
  CHECK_FALSE(contains(l.args, "--swiglu"));
  CHECK_FALSE(contains(l.args, "--untie-embeddings-and-output-weights"));
  CHECK(has_note(l, "non-gated MLP"));
  CHECK(has_note(l, "cp_scheme contiguous is not expressible"));
  // Learned positions (MPT, GPT-2): Megatron's learned_absolute table, no rotary flags.
  e.model.rope = false;
  const auto learned = report::megatron_launch(e, p);
  CHECK(value_of(learned.args, "--position-embedding-type") == "learned_absolute");
  CHECK_FALSE(contains(learned.args, "--rotary-base"));
  CHECK(has_note(l, "uneven pipeline"));
  p.options.interleave = 2;  // 8 virtual stages of 30 layers: torchtitan's split, 3, 4 x 6, 3
  const auto lv = report::megatron_launch(e, p);
  CHECK(value_of(lv.args, "--pipeline-model-parallel-layout") == "Et*3|t*4|t*4|t*4|t*4|t*4|t*4|t*3L");
  CHECK_FALSE(contains(lv.args, "--num-layers-per-virtual-pipeline-stage"));
  check_flags_exist(lv);
  p.options.interleave = 8;  // 32 virtual stages for 30 layers
  CHECK_THROWS_AS(report::megatron_launch(e, p), Error);
}

TEST_CASE("emit: the Megatron-LM script is valid bash with comments outside the command") {
  Experiment e = hand_made_experiment();
  e.name = "it's a \"test\"\nrm -rf /";  // a hostile name stays inside comments
  const std::string text = report::emit_plan(report::Format::megatron, e, hand_made_plan());
  CHECK(text.rfind("#!/usr/bin/env bash\n# ringplan plan for it's a \"test\" rm -rf / (llama3_8b on 128 GPUs", 0) == 0);
  CHECK(text.find("core_v0.19.0 (commit 5be9626709af2722333bf54797c954c09edeada3)") != std::string::npos);
  CHECK(text.find("\nexport CUDA_DEVICE_MAX_CONNECTIONS=1\n") != std::string::npos);
  CHECK(text.find("PLAN_ARGS=(\n  --num-layers 32\n  --hidden-size 4096\n") != std::string::npos);
  CHECK(text.find("pretrain_gpt.py \"${PLAN_ARGS[@]}\" \"${RUN_ARGS[@]}\" \"${DATA_ARGS[@]}\" \"$@\"\n") !=
        std::string::npos);
  // No comment inside a continued line: a line after one ending in '\' never starts with '#'.
  std::istringstream lines(text);
  std::string line, previous;
  while (std::getline(lines, line)) {
    if (!previous.empty() && previous.back() == '\\') {
      INFO(line);
      CHECK(line.find('#') == std::string::npos);
    }
    previous = line;
  }
  // bash parses it (-n: read, do not run).
  const std::string path = "emit_test_script.sh";
  std::ofstream(path) << text;
  CHECK(std::system(("bash -n " + path).c_str()) == 0);
  std::remove(path.c_str());
}

TEST_CASE("emit: torchtitan python target of a hand-made plan, exactly") {
  const auto c = report::torchtitan_config(hand_made_experiment(), hand_made_plan(), report::TorchtitanTarget::python);
  CHECK(c.flavor == "8B");
  CHECK(c.base_function == "llama3_8b");
  CHECK(c.activation_checkpoint == "SelectiveAC.Config()");
  check_keys_exist(c);
  CHECK(int_setting(c, "parallelism", "data_parallel_shard_degree", -1) == 2);
  CHECK(int_setting(c, "parallelism", "tensor_parallel_degree", -1) == 8);
  CHECK(std::get<bool>(*setting(c, "parallelism", "enable_sequence_parallel")));
  CHECK(std::get<std::string>(*setting(c, "parallelism", "context_parallel_load_balancer")) == "headtail");
  CHECK(std::get<std::string>(*setting(c, "parallelism", "pipeline_parallel_schedule")) == "Interleaved1F1B");
  CHECK(int_setting(c, "parallelism", "pipeline_parallel_layers_per_stage", -1) == 8);
  CHECK(int_setting(c, "parallelism", "num_pp_microbatches", -1) == 32);
  // main's Trainer.Config rejects PP while CUDA graphs are on (its default).
  CHECK(std::get<bool>(*setting(c, "training", "disable_cuda_graphs")));
  CHECK(int_setting(c, "training", "num_tokens_per_microbatch_per_dp_rank", -1) == 131072);
  CHECK(int_setting(c, "training", "num_tokens_per_train_step", -1) == 64 * 131072);
  CHECK(int_setting(c, "training", "max_context_length", -1) == 131072);
  CHECK(std::get<double>(*setting(c, "training", "max_norm")) == 1.0);
  CHECK(torchtitan_stages_per_rank(c, 32, false) == 2);  // interleave 2

  const std::string text = report::emit_plan(report::Format::torchtitan, hand_made_experiment(), hand_made_plan());
  CHECK(text.find("from torchtitan.models.llama3.config_registry import llama3_8b\n") != std::string::npos);
  // The model spec is written over the base recipe's, so its converters do not decide the precision.
  CHECK(text.find("from torchtitan.models.llama3 import model_registry\n") != std::string::npos);
  CHECK(text.find("    config = llama3_8b()\n    config.model_spec = model_registry(\"8B\")\n"
                  "    config.parallelism = ParallelismConfig(\n") != std::string::npos);
  CHECK(text.find("        pipeline_parallel_first_stage_less_layers=0,\n") != std::string::npos);
  CHECK(text.find("    config.activation_checkpoint = SelectiveAC.Config()\n    return config\n") != std::string::npos);
  CHECK(text.find("    config.training.max_norm = 1.0\n") != std::string::npos);  // a Python float
  CHECK(text.find("    config.training.disable_cuda_graphs = True\n") != std::string::npos);
  CHECK(text.find("b5bcd76c66d0acb1a08b176d9639425bc55e0b2a") != std::string::npos);
}

TEST_CASE("emit: selective_op is torchtitan's selective op policy and no Megatron-LM mode") {
  sim::Prediction p = hand_made_plan();
  p.options.recompute = Recompute::selective_op;
  const auto toml_cfg = report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::toml);
  CHECK(std::get<std::string>(*setting(toml_cfg, "activation_checkpoint", "mode")) == "selective");
  CHECK(std::get<std::string>(*setting(toml_cfg, "activation_checkpoint", "selective_ac_option")) == "op");
  CHECK_FALSE(has_note(toml_cfg, "selective recompute:"));
  const auto py = report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::python);
  CHECK(py.activation_checkpoint == "SelectiveAC.Config()");
  // ringplan's selective (attention core only) maps to the same torchtitan policy, with a note.
  p.options.recompute = Recompute::selective;
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::toml),
                 "selective recompute:"));
  p.options.recompute = Recompute::selective_op;
  CHECK_THROWS_WITH_AS(report::megatron_launch(hand_made_experiment(), p),
                       doctest::Contains("Megatron-LM has no such mode"), Error);
}

TEST_CASE("emit: elementwise is torchtitan's compile.enable, with notes where the loss or the norm differ") {
  for (const auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
    Experiment e = hand_made_experiment();
    auto c = report::torchtitan_config(e, hand_made_plan(), target);
    check_keys_exist(c);
    CHECK(std::get<bool>(*setting(c, "compile", "enable")));  // fused element-wise ops: torch.compile
    CHECK_FALSE(has_note(c, "training.cross_entropy"));
    e.training.cross_entropy = CrossEntropy::unfused;
    CHECK(has_note(report::torchtitan_config(e, hand_made_plan(), target), "compiles torchtitan's loss"));
    e.training.eager_elementwise = true;
    e.training.norm = NormImpl::eager;
    c = report::torchtitan_config(e, hand_made_plan(), target);
    CHECK_FALSE(std::get<bool>(*setting(c, "compile", "enable")));
    CHECK_FALSE(has_note(c, "compiles torchtitan's loss"));
    CHECK_FALSE(has_note(c, "training.norm"));
    e.training.norm = NormImpl::fused;
    CHECK(has_note(report::torchtitan_config(e, hand_made_plan(), target), "training.norm fused with elementwise eager"));
  }
  const std::string py = report::emit_plan(report::Format::torchtitan, hand_made_experiment(), hand_made_plan());
  CHECK(py.find("    config.compile.enable = True\n") != std::string::npos);
  const toml::table doc = toml::parse(report::emit_plan(report::Format::torchtitan, hand_made_experiment(),
                                                        hand_made_plan(), report::EmitOptions{report::TorchtitanTarget::toml}));
  CHECK(doc["compile"]["enable"].value<bool>() == true);
}

TEST_CASE("emit: ZeRO-3's gathered parameters (training.fsdp) noted where the framework differs") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  p.options.zero_stage = 3;
  CHECK(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.fsdp flat"));
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.fsdp"));
  e.training.fsdp_per_parameter = true;
  CHECK_FALSE(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.fsdp"));
  CHECK(has_note(report::megatron_launch(e, p), "training.fsdp per_parameter"));
  // Without ZeRO-3 the setting changes nothing, so nothing is noted.
  p.options.zero_stage = 1;
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.fsdp"));
  e.training.fsdp_per_parameter = false;
  CHECK_FALSE(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.fsdp"));
}

TEST_CASE("emit: the pipeline implementation's memory (training.pp_schedule) noted where the framework differs") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();  // PP 2, 32 micro-batches
  CHECK(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.pp_schedule megatron"));
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.pp_schedule"));
  e.training.pytorch_pp_schedule = true;
  CHECK_FALSE(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.pp_schedule"));
  CHECK(has_note(report::megatron_launch(e, p), "training.pp_schedule pytorch"));
  // Where the two agree, one micro-batch per step or no pipeline, nothing is noted.
  e.training.global_batch_sequences = 2;
  p.micro_batches = 1;
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.pp_schedule"));
  e.training.global_batch_sequences = 64;
  p.micro_batches = 32;
  p.mesh = Mesh{2, 8, 8, 1};
  p.options.interleave = 1;
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.pp_schedule"));
}

TEST_CASE("emit: summing micro-batch gradients (training.grad_accumulation) noted where the framework differs") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();  // 32 micro-batches, ZeRO-1
  CHECK(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.grad_accumulation fused"));
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.grad_accumulation"));
  e.training.fp32_grad_accumulation = true;
  e.training.grad_accumulation = GradAccumulation::inplace;
  CHECK_FALSE(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.grad_accumulation"));
  CHECK(has_note(report::megatron_launch(e, p), "training.grad_accumulation inplace"));
  e.training.grad_accumulation = GradAccumulation::cast_add;
  CHECK(has_note(report::megatron_launch(e, p), "training.grad_accumulation cast_add"));
  // One micro-batch per step: nothing is summed, nothing is noted.
  e.training.global_batch_sequences = 2;
  p.micro_batches = 1;
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.grad_accumulation"));
  e.training.grad_accumulation = GradAccumulation::fused;
  CHECK_FALSE(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.grad_accumulation"));
}

TEST_CASE("emit: the loss implementation is noted where the framework differs from the plan") {
  Experiment e = hand_made_experiment();
  CHECK_FALSE(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                       "training.cross_entropy fused"));  // compiled: torchtitan's loss is compiled too
  e.training.eager_elementwise = true;
  e.training.norm = NormImpl::eager;
  CHECK(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                 "training.cross_entropy fused"));
  e.training.eager_elementwise = false;
  e.training.norm = NormImpl::fused;
  CHECK_FALSE(has_note(report::megatron_launch(e, hand_made_plan()), "training.cross_entropy"));
  e.training.cross_entropy = CrossEntropy::unfused;
  e.training.eager_elementwise = true;  // torchtitan uncompiled: its loss as planned
  e.training.norm = NormImpl::eager;
  CHECK_FALSE(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                       "training.cross_entropy"));
  e.training.eager_elementwise = false;
  e.training.norm = NormImpl::fused;
  CHECK(has_note(report::megatron_launch(e, hand_made_plan()), "training.cross_entropy unfused"));
  CHECK_FALSE(has_note(report::megatron_launch(e, hand_made_plan()), "training.mixed_precision"));
  e.training.autocast = true;
  CHECK(has_note(report::megatron_launch(e, hand_made_plan()), "training.mixed_precision autocast"));
  CHECK(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                 "training.mixed_precision autocast"));
  CHECK_FALSE(has_note(report::megatron_launch(e, hand_made_plan()), "training.elementwise"));
  e.training.eager_elementwise = true;
  CHECK(has_note(report::megatron_launch(e, hand_made_plan()), "training.elementwise eager"));
}

TEST_CASE("emit: torchtitan toml target parses back with the plan's values") {
  const std::string text = report::emit_plan(report::Format::torchtitan, hand_made_experiment(), hand_made_plan(),
                                             report::EmitOptions{report::TorchtitanTarget::toml});
  CHECK(text.find("torchtitan v0.2.2 (commit 73a0e6979dd10b6b1904098eb3c8f62c18ab87ce)") != std::string::npos);
  const toml::table doc = toml::parse(text);
  CHECK(doc["model"]["name"].value<std::string>() == "llama3");
  CHECK(doc["model"]["flavor"].value<std::string>() == "8B");  // not "llama3_8b": a KeyError in v0.2.2
  CHECK(doc["parallelism"]["data_parallel_shard_degree"].value<int64_t>() == 2);
  CHECK(doc["parallelism"]["context_parallel_rotate_method"].value<std::string>() == "alltoall");
  CHECK(doc["parallelism"]["pipeline_parallel_schedule"].value<std::string>() == "Interleaved1F1B");
  CHECK(doc["parallelism"]["pipeline_parallel_layers_per_stage"].value<int64_t>() == 8);
  CHECK(doc["parallelism"]["pipeline_parallel_first_stage_less_layers"].value<int64_t>() == 0);
  CHECK(doc["parallelism"]["pipeline_parallel_microbatch_size"].value<int64_t>() == 1);
  CHECK(doc["activation_checkpoint"]["mode"].value<std::string>() == "selective");
  CHECK(doc["activation_checkpoint"]["selective_ac_option"].value<std::string>() == "op");
  CHECK(doc["training"]["local_batch_size"].value<int64_t>() == 32);  // micro-batch 1 x m 32 with PP
  CHECK(doc["training"]["global_batch_size"].value<int64_t>() == 64);
  CHECK(doc["training"]["seq_len"].value<int64_t>() == 131072);
  CHECK(doc["training"]["max_norm"].value<double>() == 1.0);
  const auto c = report::torchtitan_config(hand_made_experiment(), hand_made_plan(), report::TorchtitanTarget::toml);
  check_keys_exist(c);
  CHECK(has_note(c, "ZeRO-1 is not expressible"));
  // Every key in the document is a v0.2.2 key.
  for (const auto& [section, node] : doc) {
    for (const auto& [key, value] : *node.as_table()) {
      INFO(section.str() << "." << key.str());
      CHECK(kTomlKeys.at(std::string(section.str())).count(std::string(key.str())) == 1);
    }
  }
}

TEST_CASE("emit: torchtitan pipeline settings satisfy its stage arithmetic") {
  for (const auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
    for (int64_t pp : {2, 4, 8}) {
      for (int64_t v : {1, 2, 4}) {
        Experiment e = hand_made_experiment();
        sim::Prediction p = hand_made_plan();
        p.mesh = Mesh{2, 4, 2, pp};
        p.options.interleave = v;
        if (32 % (pp * v) != 0) {
          CHECK_THROWS_AS(report::torchtitan_config(e, p, target), Error);
          continue;
        }
        const auto c = report::torchtitan_config(e, p, target);
        INFO("PP " << pp << " interleave " << v);
        CHECK(torchtitan_stages_per_rank(c, 32, v == 1) == v);
        check_keys_exist(c);
      }
    }
  }
}

TEST_CASE("emit: uneven torchtitan pipeline as explicit module names per stage") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 4, 4, 3};  // 32 layers on 3 stages, torchtitan's rule: 10, 11, 11
  p.options.interleave = 1;
  for (const auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
    const auto c = report::torchtitan_config(e, p, target);
    const auto parts = std::get<std::vector<std::vector<std::string>>>(*setting(c, "parallelism", "module_fqns_per_model_part"));
    REQUIRE(parts.size() == 3);
    CHECK(parts[0].front() == "tok_embeddings");
    CHECK(parts[0].size() == 11);
    CHECK(parts[1].front() == "layers.10");
    CHECK(parts[2].back() == (target == report::TorchtitanTarget::python ? "lm_head" : "output"));
    CHECK(parts[2].size() == 13);  // layers 21..31, norm, output
    CHECK(torchtitan_stages_per_rank(c, 32, true) == 1);
    CHECK_FALSE(setting(c, "parallelism", "pipeline_parallel_layers_per_stage").has_value());
    CHECK(has_note(c, "uneven pipeline"));
  }
}

TEST_CASE("emit: Interleaved1F1B micro-batches must be a multiple of PyTorch's rounds") {
  Experiment e = hand_made_experiment();
  e.training.global_batch_sequences = 20;  // m = 10 micro-batches on PP 4: 2 rounds, fine
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 4, 4, 4};
  p.options.interleave = 2;
  p.micro_batches = 10;
  CHECK_NOTHROW(report::torchtitan_config(e, p, report::TorchtitanTarget::python));
  e.training.global_batch_sequences = 18;  // m = 9 on PP 4: 2 rounds, 9 % 2 != 0
  p.micro_batches = 9;
  CHECK_THROWS_AS(report::torchtitan_config(e, p, report::TorchtitanTarget::python), Error);
}

TEST_CASE("emit: torchtitan flavors by the names torchtitan defines") {
  Experiment e = hand_made_experiment();
  e.model.layers = 80;
  e.model.hidden = 8192;
  e.model.heads = 64;
  e.model.ffn_hidden = 28672;
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 8, 4, 2};
  auto c = report::torchtitan_config(e, p, report::TorchtitanTarget::toml);
  CHECK(c.flavor == "70B");
  c = report::torchtitan_config(e, p, report::TorchtitanTarget::python);
  CHECK(c.base_function == "llama3_70b");

  // Llama 3.2 1B: tied embeddings; a flavor only after the Python-config refactor.
  e = hand_made_experiment();
  e.model.layers = 16;
  e.model.hidden = 2048;
  e.model.head_dim = 64;
  e.model.ffn_hidden = 8192;
  e.model.tied_embeddings = true;
  p.mesh = Mesh{2, 8, 4, 2};
  // torchtitan's decoder refuses weight tying with pipeline parallelism.
  CHECK_THROWS_WITH_AS(report::torchtitan_config(e, p, report::TorchtitanTarget::python),
                       doctest::Contains("Weight tying is not supported with Pipeline Parallel"), Error);
  p.mesh = Mesh{4, 8, 4, 1};
  p.options.interleave = 1;
  p.micro_batches = 16;  // 64 / (DP 4 x micro-batch 1)
  c = report::torchtitan_config(e, p, report::TorchtitanTarget::python);
  CHECK(c.flavor == "1B");
  CHECK(report::emit_plan(report::Format::torchtitan, e, p).find("config.model_spec = model_registry(\"1B\")") !=
        std::string::npos);
  try {
    report::torchtitan_config(e, p, report::TorchtitanTarget::toml);
    FAIL("expected an error");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(std::string(err.what()).find("none of torchtitan's llama3 flavors at v0.2.2") != std::string::npos);
    CHECK(std::string(err.what()).find("\"8B\" (layers 32, hidden 4096") != std::string::npos);
  }
  e = hand_made_experiment();
  e.model.rope_base = 10000;  // same shape, different model
  CHECK_THROWS_AS(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::python), Error);
  e = hand_made_experiment();
  e.model.rope = false;  // same shape, learned positions: not a llama3 flavor
  CHECK_THROWS_WITH_AS(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::python),
                       doctest::Contains("learned positions"), Error);
}

TEST_CASE("emit: torchtitan notes and python-only settings") {
  Experiment e = hand_made_experiment();
  e.training.dtype = DType::fp16;
  e.training.seq_len = 8192;
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{4, 4, 2, 1};
  p.options.zero_stage = 0;
  p.options.sequence_parallel = false;
  p.options.cp_scheme = CpScheme::contiguous;
  p.options.recompute = Recompute::full;
  p.options.interleave = 1;
  p.micro_batches = 16;
  const auto py = report::torchtitan_config(e, p, report::TorchtitanTarget::python);
  CHECK(int_setting(py, "parallelism", "data_parallel_replicate_degree", -1) == 4);
  CHECK(int_setting(py, "parallelism", "data_parallel_shard_degree", -1) == 1);
  CHECK_FALSE(std::get<bool>(*setting(py, "parallelism", "enable_sequence_parallel")));
  CHECK(std::get<std::string>(*setting(py, "parallelism", "context_parallel_load_balancer")).empty());  // None
  CHECK(py.activation_checkpoint == "FullAC.Config()");
  CHECK_FALSE(setting(py, "training", "disable_cuda_graphs").has_value());  // only PP needs them off
  CHECK(has_note(py, "ZeRO-0 over CP is not expressible"));
  CHECK(has_note(py, "fp16 is not expressible"));
  const std::string text = report::emit_plan(report::Format::torchtitan, e, p);
  CHECK(text.find("        context_parallel_load_balancer=None,\n") != std::string::npos);
  CHECK(text.find("        enable_sequence_parallel=False,\n") != std::string::npos);

  const auto tt = report::torchtitan_config(e, p, report::TorchtitanTarget::toml);
  CHECK_FALSE(setting(tt, "parallelism", "enable_sequence_parallel").has_value());
  CHECK(has_note(tt, "TP without sequence parallelism is not expressible in v0.2.2"));
  CHECK(has_note(tt, "cp_scheme contiguous is not expressible in TOML"));
  CHECK(std::get<std::string>(*setting(tt, "activation_checkpoint", "mode")) == "full");
}

TEST_CASE("emit: TOML and Python string writers escape quotes and backslashes") {
  const std::vector<std::string> hostile = {"plain", "a\"b", "back\\slash", "it's", "tab\there", "new\nline",
                                            "\"\"\"", "'''", "uni\xc3\xa9"};
  for (const auto& s : hostile) {
    INFO(s);
    const std::string literal = report::toml_string(s);
    const toml::table doc = toml::parse("key = " + literal);
    CHECK(doc["key"].value<std::string>() == s);
  }
  CHECK(report::python_string("a\"b\\c\nd") == "\"a\\\"b\\\\c\\nd\"");
  CHECK(report::python_string("\x01") == "\"\\x01\"");
}

TEST_CASE("emit: an inconsistent plan is bad input with a clear message") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  p.options.micro_batch = 3;  // 64 is not a multiple of DP 2 x 3
  try {
    report::megatron_launch(e, p);
    FAIL("expected an error");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(std::string(err.what()).find("global batch 64 sequences is not a multiple of DP x micro_batch") !=
          std::string::npos);
  }
  p = hand_made_plan();
  p.micro_batches = 7;  // not 64 / 2
  CHECK_THROWS_AS(report::torchtitan_config(e, p, report::TorchtitanTarget::python), Error);
  p = hand_made_plan();
  p.options.zero_stage = 5;
  CHECK_THROWS_AS(report::megatron_launch(e, p), Error);
  CHECK_THROWS_AS(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), Error);
}

TEST_CASE("emit: format and target names round-trip") {
  for (const auto& name : report::format_names()) {
    const auto f = report::parse_format(name);
    REQUIRE(f.has_value());
    CHECK(name == report::to_string(*f));
  }
  for (const auto& name : report::torchtitan_target_names()) {
    const auto t = report::parse_torchtitan_target(name);
    REQUIRE(t.has_value());
    CHECK(name == report::to_string(*t));
  }
  CHECK_FALSE(report::parse_format("deepspeed").has_value());
  CHECK_FALSE(report::parse_format("").has_value());
  CHECK_FALSE(report::parse_torchtitan_target("yaml").has_value());
}

TEST_CASE("emit: tp_overlap pipelined is Megatron's --tp-comm-overlap, none a note, backward the default") {
  sim::Prediction p = hand_made_plan();
  REQUIRE(p.mesh.tp > 1);
  auto has_flag = [](const report::MegatronLaunch& l, const std::string& f) {
    return std::find(l.args.begin(), l.args.end(), f) != l.args.end();
  };
  CHECK_FALSE(has_flag(report::megatron_launch(hand_made_experiment(), p), "--tp-comm-overlap"));
  p.options.sequence_parallel = true;
  p.options.tp_overlap = TpOverlap::pipelined;
  const auto l = report::megatron_launch(hand_made_experiment(), p);
  CHECK(has_flag(l, "--tp-comm-overlap"));
  CHECK(has_flag(l, "--sequence-parallel"));
  check_flags_exist(l);
  p.options.tp_overlap = TpOverlap::none;
  const auto n = report::megatron_launch(hand_made_experiment(), p);
  CHECK_FALSE(has_flag(n, "--tp-comm-overlap"));
  bool noted = false;
  for (const auto& x : n.notes) noted = noted || x.find("tp_overlap none") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("emit: cp_comm allgather is Megatron's --cp-comm-type all_gather and torchtitan's allgather rotation") {
  sim::Prediction p = hand_made_plan();
  p.options.cp_comm = CpComm::allgather;
  const auto l = report::megatron_launch(hand_made_experiment(), p);
  const auto it = std::find(l.args.begin(), l.args.end(), "--cp-comm-type");
  REQUIRE(it != l.args.end());
  REQUIRE(it + 1 != l.args.end());
  CHECK(*(it + 1) == "all_gather");
  check_flags_exist(l);
  // torchtitan v0.2.2 (TOML): the rotate method; main (Python) all-gathers K,V anyway: no note.
  const std::string toml_text = report::emit_plan(report::Format::torchtitan, hand_made_experiment(), p,
                                                  report::EmitOptions{report::TorchtitanTarget::toml});
  const toml::table doc = toml::parse(toml_text);
  CHECK(doc["parallelism"]["context_parallel_rotate_method"].value<std::string>() == "allgather");
  const auto py = report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::python);
  check_keys_exist(py);
  CHECK_FALSE(has_note(py, "all-gathers K,V before attention"));
  // The ring stays p2p / alltoall (the default cp_comm); main's Python config says it all-gathers.
  const auto ring = report::megatron_launch(hand_made_experiment(), hand_made_plan());
  CHECK(*(std::find(ring.args.begin(), ring.args.end(), "--cp-comm-type") + 1) == "p2p");
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), hand_made_plan(), report::TorchtitanTarget::python),
                 "cp_comm ring: torchtitan main's context parallelism all-gathers K,V before attention"));
}

TEST_CASE("emit: cp_comm alltoall is Megatron's --cp-comm-type a2a, torchtitan has no Ulysses CP and says so") {
  sim::Prediction p = hand_made_plan();  // TP 8, CP 4: 4 query heads and 1 KV head per TP rank
  p.options.cp_comm = CpComm::alltoall;
  // 1 KV head per TP rank, CP 4: ringplan replicates it; Transformer Engine's a2a splits K,V heads
  // and asserts they divide, so Megatron-LM cannot run it: refused.
  CHECK_THROWS_WITH_AS(report::megatron_launch(hand_made_experiment(), p),
                       doctest::Contains("asserts num_heads % cp_size == 0"), Error);
  // torchtitan: v0.2.2 has no Ulysses (its "alltoall" is a K,V rotation), main all-gathers K,V.
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::toml),
                 "is not supported by torchtitan"));
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::python),
                 "cp_comm alltoall: torchtitan main's context parallelism all-gathers K,V"));
  // KV heads that CP divides: Megatron's a2a.
  sim::Prediction q = p;
  q.mesh = Mesh{4, 2, 4, 2};  // 4 KV heads per TP rank, CP 4
  q.micro_batches = 16;       // 64 / (DP 4 x micro-batch 1)
  const auto l = report::megatron_launch(hand_made_experiment(), q);
  const auto it = std::find(l.args.begin(), l.args.end(), "--cp-comm-type");
  REQUIRE(it != l.args.end());
  REQUIRE(it + 1 != l.args.end());
  CHECK(*(it + 1) == "a2a");
  check_flags_exist(l);
}

TEST_CASE("emit: cp_comm hybrid is Megatron's a2a+p2p with --hierarchical-context-parallel-sizes A R, torchtitan says no") {
  sim::Prediction p = hand_made_plan();  // TP 8, CP 4: 4 query heads and 1 KV head per TP rank
  p.mesh = Mesh{4, 2, 4, 2};             // TP 2: 16 query heads, 4 KV heads per TP rank
  p.micro_batches = 16;
  p.options.cp_comm = CpComm::hybrid;
  p.options.cp_a2a_size = 2;
  const auto l = report::megatron_launch(hand_made_experiment(), p);
  const auto it = std::find(l.args.begin(), l.args.end(), "--cp-comm-type");
  REQUIRE(it != l.args.end());
  REQUIRE(it + 1 != l.args.end());
  CHECK(*(it + 1) == "a2a+p2p");
  const auto hs = std::find(l.args.begin(), l.args.end(), "--hierarchical-context-parallel-sizes");
  REQUIRE(hs != l.args.end());
  REQUIRE(l.args.end() - hs >= 3);
  CHECK(*(hs + 1) == "2");  // the all-to-all level first (Megatron's create_hierarchical_groups)
  CHECK(*(hs + 2) == "2");
  check_flags_exist(l);
  for (const auto& n : l.notes) CHECK(n.find("replicates each KV head") == std::string::npos);
  // Group size 4 of CP 4 (R = 1).
  p.options.cp_a2a_size = 4;
  p.mesh = Mesh{4, 1, 4, 4};  // 8 KV heads per TP rank
  p.micro_batches = 16;
  const auto l4 = report::megatron_launch(hand_made_experiment(), p);
  const auto hs4 = std::find(l4.args.begin(), l4.args.end(), "--hierarchical-context-parallel-sizes");
  REQUIRE(l4.args.end() - hs4 >= 3);
  CHECK(*(hs4 + 1) == "4");
  CHECK(*(hs4 + 2) == "1");
  // A group larger than the KV heads per TP rank: ringplan replicates them, Transformer Engine
  // cannot: refused.
  p.mesh = Mesh{2, 8, 4, 2};  // 1 KV head per TP rank
  p.micro_batches = 32;
  CHECK_THROWS_WITH_AS(report::megatron_launch(hand_made_experiment(), p),
                       doctest::Contains("not divisible by the all-to-all group size 4"), Error);
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::toml),
                 "cp_comm hybrid (all-to-all in groups of 4 CP ranks"));
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::python),
                 "cp_comm hybrid: torchtitan main's context parallelism all-gathers K,V"));
  // Other methods: no hierarchical sizes.
  p.options.cp_comm = CpComm::ring;
  const auto lr = report::megatron_launch(hand_made_experiment(), p);
  CHECK(std::find(lr.args.begin(), lr.args.end(), "--hierarchical-context-parallel-sizes") == lr.args.end());
}

TEST_CASE("emit: clip_grad is Megatron's --clip-grad and torchtitan's max_norm, 0 a note for torchtitan") {
  Experiment e = hand_made_experiment();
  e.training.clip_grad = 0.5;
  auto l = report::megatron_launch(e, hand_made_plan());
  auto at = std::find(l.args.begin(), l.args.end(), "--clip-grad");
  REQUIRE(at != l.args.end());
  CHECK(*(at + 1) == "0.5");
  auto c = report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml);
  CHECK(std::get<double>(*setting(c, "training", "max_norm")) == 0.5);
  // 0: Megatron skips clipping (clip_grad > 0.0 gates it); torchtitan cannot, and says so.
  e.training.clip_grad = 0;
  l = report::megatron_launch(e, hand_made_plan());
  at = std::find(l.args.begin(), l.args.end(), "--clip-grad");
  REQUIRE(at != l.args.end());
  CHECK(*(at + 1) == "0");
  c = report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::python);
  CHECK_FALSE(setting(c, "training", "max_norm").has_value());
  CHECK(has_note(c, "clip_grad 0"));
}

TEST_CASE("emit: the pipeline split settings as Megatron-LM flags and torchtitan stages") {
  Experiment e = hand_made_experiment();  // 32 layers
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 4, 4, 4};
  p.options.interleave = 1;
  p.options.pp_loss_slot = true;  // 32 + 1 = 33 not divisible by 4
  CHECK_THROWS_AS(report::megatron_launch(e, p), Error);
  p.options.pp_embedding_slot = true;  // 34 still not
  CHECK_THROWS_AS(report::megatron_launch(e, p), Error);
  e.model.layers = 30;  // 32 slots: 7, 8, 8, 7
  auto l = report::megatron_launch(e, p);
  CHECK(contains(l.args, "--account-for-embedding-in-pipeline-split"));
  CHECK(contains(l.args, "--account-for-loss-in-pipeline-split"));
  CHECK_FALSE(contains(l.args, "--pipeline-model-parallel-layout"));
  CHECK(has_note(l, "7, 8, 8, 7 per stage"));
  check_flags_exist(l);
  {
    // torchtitan needs one of its flavors (Llama 3 8B: 32 layers): a loss slot on PP 3, 33 = 3 x 11.
    Experiment t = hand_made_experiment();
    sim::Prediction q = hand_made_plan();
    q.mesh = Mesh{2, 4, 4, 3};
    q.options.interleave = 1;
    q.options.pp_loss_slot = true;
    for (const auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
      const auto c = report::torchtitan_config(t, q, target);
      const auto parts =
          std::get<std::vector<std::vector<std::string>>>(*setting(c, "parallelism", "module_fqns_per_model_part"));
      REQUIRE(parts.size() == 3);
      CHECK(parts[0].size() == 12);  // tok_embeddings + 11 layers
      CHECK(parts[1].front() == "layers.11");
      CHECK(parts[2].size() == 12);  // 10 layers, norm, output
      CHECK(has_note(c, "11, 11, 10 per stage"));
    }
  }
  p.options.pp_embedding_slot = p.options.pp_loss_slot = false;
  p.options.pp_first_layers = 6;  // 6, then 24 over 3 ranks
  l = report::megatron_launch(e, p);
  CHECK(value_of(l.args, "--decoder-first-pipeline-num-layers") == "6");
  CHECK_FALSE(contains(l.args, "--decoder-last-pipeline-num-layers"));
  check_flags_exist(l);
  p.options.interleave = 2;  // every rank's layers (6, 8, 8, 8) divide by 2
  l = report::megatron_launch(e, p);
  CHECK(value_of(l.args, "--num-virtual-stages-per-pipeline-rank") == "2");
  CHECK_FALSE(contains(l.args, "--num-layers-per-virtual-pipeline-stage"));
  check_flags_exist(l);
  e.model.layers = 32;  // 6, then 26 over 3 ranks does not divide
  CHECK_THROWS_AS(report::megatron_launch(e, p), Error);
  // torchtitan with interleaving: Megatron's per-rank counts split evenly over the chunks, one
  // module list per virtual stage. 32 layers, first 2, last 6: ranks 2, 12, 12, 6; chunks of v 2
  // 1, 6, 6, 3 in each round.
  e.model.layers = 32;
  p.options.pp_first_layers = 2;
  p.options.pp_last_layers = 6;
  const auto c = report::torchtitan_config(e, p, report::TorchtitanTarget::toml);
  const auto parts = std::get<std::vector<std::vector<std::string>>>(*setting(c, "parallelism", "module_fqns_per_model_part"));
  REQUIRE(parts.size() == 8);
  const std::vector<size_t> sizes = {2, 6, 6, 3, 1, 6, 6, 5};  // + tok_embeddings first, + norm, output last
  for (size_t k = 0; k < parts.size(); ++k) CHECK(parts[k].size() == sizes[k]);
  CHECK(parts[4].front() == "layers.16");
  CHECK(torchtitan_stages_per_rank(c, 32, false) == 2);
}

TEST_CASE("emit: torchtitan interleaved stages where PP x v does not divide the layers") {
  // Llama 3 8B's 32 layers on PP 4 x v 3 = 12 virtual stages: torchtitan's split 2, 3 x 8, 2, 2,
  // 2 as one module list per virtual stage (stage k on rank k % 4), 3 stages per rank.
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 4, 4, 4};
  p.options.interleave = 3;
  for (const auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
    const auto c = report::torchtitan_config(e, p, target);
    const auto parts = std::get<std::vector<std::vector<std::string>>>(*setting(c, "parallelism", "module_fqns_per_model_part"));
    REQUIRE(parts.size() == 12);
    CHECK(parts[0].size() == 3);  // tok_embeddings + 2 layers
    CHECK(parts[1].front() == "layers.2");
    CHECK(parts[8].size() == 3);
    CHECK(parts[9].size() == 2);
    CHECK(parts[11].back() == (target == report::TorchtitanTarget::python ? "lm_head" : "output"));
    CHECK(parts[11].size() == 4);  // layers 30, 31, norm, output
    CHECK(torchtitan_stages_per_rank(c, 32, false) == 3);
    CHECK(std::get<std::string>(*setting(c, "parallelism", "pipeline_parallel_schedule")) == "Interleaved1F1B");
  }
  const auto l = report::megatron_launch(e, p);
  CHECK(value_of(l.args, "--pipeline-model-parallel-layout") == "Et*2|t*3|t*3|t*3|t*3|t*3|t*3|t*3|t*3|t*2|t*2|t*2L");
  check_flags_exist(l);
}

TEST_CASE("emit: tp_overlap is torchtitan's async TP, written either way, with notes where it cannot match") {
  for (const auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
    INFO(report::to_string(target));
    const char* section = target == report::TorchtitanTarget::python ? "compile" : "parallelism";
    Experiment e = hand_made_experiment();
    sim::Prediction p = hand_made_plan();  // TP 8 with sequence parallelism, fused element-wise ops
    REQUIRE(p.mesh.tp > 1);
    p.options.tp_overlap = TpOverlap::pipelined;
    auto c = report::torchtitan_config(e, p, target);
    check_keys_exist(c);
    CHECK(std::get<bool>(*setting(c, section, "enable_async_tensor_parallel")));
    CHECK_FALSE(has_note(c, "tp_overlap"));
    // Vanilla TP is `none`: written off, nothing to note.
    p.options.tp_overlap = TpOverlap::none;
    c = report::torchtitan_config(e, p, target);
    CHECK_FALSE(std::get<bool>(*setting(c, section, "enable_async_tensor_parallel")));
    CHECK_FALSE(has_note(c, "tp_overlap"));
    // Megatron-LM's asynchronous backward collectives have no torchtitan setting.
    p.options.tp_overlap = TpOverlap::backward;
    c = report::torchtitan_config(e, p, target);
    CHECK_FALSE(std::get<bool>(*setting(c, section, "enable_async_tensor_parallel")));
    CHECK(has_note(c, "tp_overlap backward"));
    // Async TP is an Inductor pass: without compile (eager element-wise ops) it stays off.
    p.options.tp_overlap = TpOverlap::pipelined;
    e.training.eager_elementwise = true;
    c = report::torchtitan_config(e, p, target);
    CHECK_FALSE(std::get<bool>(*setting(c, section, "enable_async_tensor_parallel")));
    CHECK(has_note(c, "tp_overlap pipelined needs torch.compile"));
    // TP 1: written off all the same (llama3_405b's base turns it on, and CompileConfig refuses it
    // with compile off).
    p.mesh = Mesh{2, 1, 4, 2};
    CHECK_FALSE(std::get<bool>(*setting(report::torchtitan_config(hand_made_experiment(), p, target), section,
                                        "enable_async_tensor_parallel")));
  }
}

TEST_CASE("emit: training.fp8 is Megatron's --fp8-format hybrid and torchtitan's Float8 converter, output layer in 16 bits") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  CHECK(value_of(report::megatron_launch(e, p).args, "--fp8-format").empty());
  e.training.fp8 = true;
  const auto l = report::megatron_launch(e, p);
  CHECK(value_of(l.args, "--fp8-format") == "hybrid");
  check_flags_exist(l);
  // v0.2.2: the converter by its registered name, the output layer filtered out; nested TOML tables.
  const auto t = report::torchtitan_config(e, p, report::TorchtitanTarget::toml);
  check_keys_exist(t);
  const toml::table doc =
      toml::parse(report::emit_plan(report::Format::torchtitan, e, p, report::EmitOptions{report::TorchtitanTarget::toml}));
  const toml::array* converters = doc["model"]["converters"].as_array();
  REQUIRE(converters != nullptr);
  REQUIRE(converters->size() == 1);
  CHECK((*converters)[0].value<std::string>() == "quantize.linear.float8");
  const toml::array* filtered = doc["quantize"]["linear"]["float8"]["filter_fqns"].as_array();
  REQUIRE(filtered != nullptr);
  CHECK((*filtered)[0].value<std::string>() == "output");
  // main: the model spec with Float8LinearConverter, over the base recipe's.
  const std::string py = report::emit_plan(report::Format::torchtitan, e, p);
  CHECK(py.find("from torchtitan.components.quantization import Float8LinearConverter\n") != std::string::npos);
  CHECK(py.find("    config.model_spec = model_registry(\"8B\", converters=[Float8LinearConverter.Config("
                "filter_fqns=[\"lm_head\"], model_compile_enabled=True)])\n") != std::string::npos);
  // fp8_impl: the plan's FP8 casts named where the framework runs them another way; torchao's FSDP
  // float8 all-gather emitted for v0.2.2, noted for main (rowwise only, no such gather).
  auto noted = [](const std::vector<std::string>& notes, const char* what) {
    for (const std::string& n : notes)
      if (n.find(what) != std::string::npos) return true;
    return false;
  };
  CHECK(noted(report::torchtitan_config(e, p, report::TorchtitanTarget::toml).notes, "fp8_impl transformer_engine"));
  CHECK_FALSE(noted(report::megatron_launch(e, p).notes, "fp8_impl"));
  e.training.fp8_torchao = true;
  e.training.fp8_all_gather = true;
  CHECK(noted(report::megatron_launch(e, p).notes, "fp8_impl torchao"));
  const auto ao = report::torchtitan_config(e, p, report::TorchtitanTarget::toml);
  check_keys_exist(ao);
  CHECK_FALSE(noted(ao.notes, "fp8_impl"));
  CHECK(std::get<bool>(*setting(ao, "quantize.linear.float8", "enable_fsdp_float8_all_gather")));
  CHECK(std::get<bool>(*setting(ao, "quantize.linear.float8", "precompute_float8_dynamic_scale_for_fsdp")));
  CHECK(noted(report::torchtitan_config(e, p, report::TorchtitanTarget::python).notes, "rowwise recipe"));
  e.training.fp8_torchao = false;
  e.training.fp8_all_gather = false;
  CHECK_FALSE(setting(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "quantize.linear.float8",
                      "enable_fsdp_float8_all_gather")
                  .has_value());
  // Without fp8 the model spec has no converter, so llama3_405b's own Float8 does not stay on.
  e.training.fp8 = false;
  const std::string plain = report::emit_plan(report::Format::torchtitan, e, p);
  CHECK(plain.find("Float8LinearConverter") == std::string::npos);
  CHECK(plain.find("    config.model_spec = model_registry(\"8B\")\n") != std::string::npos);
  CHECK_FALSE(setting(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "model", "converters").has_value());
}

TEST_CASE("emit: layouts the framework cannot run are refused with the framework's reason") {
  // Megatron-LM: unfused attention has no context parallelism in Transformer Engine.
  sim::Prediction p = hand_made_plan();  // CP 4
  p.options.attention = AttentionImpl::materialized;
  CHECK_THROWS_WITH_AS(report::megatron_launch(hand_made_experiment(), p),
                       doctest::Contains("unfused attention, which has no context parallelism"), Error);
  // Megatron-LM: the sequence in 2*CP whole chunks (validate_args).
  Experiment odd = hand_made_experiment();
  odd.training.seq_len = 131072 + 4;  // divisible by CP 4, not by 2*CP
  sim::Prediction contiguous = hand_made_plan();
  contiguous.options.cp_scheme = CpScheme::contiguous;
  CHECK_THROWS_WITH_AS(report::megatron_launch(odd, contiguous), doctest::Contains("not divisible by 2*CP = 8"), Error);
  // torchtitan v0.2.2: ZeRO-0 with TP or PP and no CP is DDP, which refuses other dimensions.
  sim::Prediction ddp = hand_made_plan();
  ddp.options.zero_stage = 0;
  ddp.mesh = Mesh{8, 8, 1, 1};
  ddp.options.interleave = 1;
  ddp.micro_batches = 8;
  CHECK_THROWS_WITH_AS(report::torchtitan_config(hand_made_experiment(), ddp, report::TorchtitanTarget::toml),
                       doctest::Contains("DDP has not supported > 1D parallelism"), Error);
  // main replicates through FSDP's mesh: fine there.
  CHECK_NOTHROW(report::torchtitan_config(hand_made_experiment(), ddp, report::TorchtitanTarget::python));
  // DP only: DDP runs, with a note on its autocast.
  ddp.mesh = Mesh{64, 1, 1, 1};
  ddp.micro_batches = 1;
  CHECK(has_note(report::torchtitan_config(hand_made_experiment(), ddp, report::TorchtitanTarget::toml),
                 "torchtitan v0.2.2 runs DDP under torch.autocast"));
}

TEST_CASE("emit: Megatron-LM 2022's pipeline scatter/gather is noted where today's frameworks send the whole activation") {
  Experiment e = hand_made_experiment();
  e.training.pp_scatter_gather = true;
  sim::Prediction p = hand_made_plan();  // TP 8, PP 2
  p.options.sequence_parallel = false;
  CHECK(has_note(report::megatron_launch(e, p), "training.pp_p2p scatter_gather"));
  CHECK(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.pp_p2p scatter_gather"));
  p.options.sequence_parallel = true;  // split anyway
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.pp_p2p scatter_gather"));
}

TEST_CASE("emit: a plan whose TP runs another way than the target framework's is noted (tp_impl)") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();  // TP 8
  p.options.sequence_parallel = true;
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.tp_impl"));
  CHECK(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.tp_impl megatron"));
  e.training.tp_dtensor = true;
  CHECK(has_note(report::megatron_launch(e, p), "training.tp_impl dtensor"));
  CHECK_FALSE(has_note(report::torchtitan_config(e, p, report::TorchtitanTarget::toml), "training.tp_impl"));
  p.options.sequence_parallel = false;  // nothing differs without sequence parallelism
  CHECK_FALSE(has_note(report::megatron_launch(e, p), "training.tp_impl"));
}

TEST_CASE("emit: a bf16 gradient reduction is written for torchtitan with a note on its declared type") {
  Experiment e = hand_made_experiment();
  e.training.grad_reduce_dtype = DType::bf16;
  for (auto target : {report::TorchtitanTarget::python, report::TorchtitanTarget::toml}) {
    const auto c = report::torchtitan_config(e, hand_made_plan(), target);
    CHECK(std::get<std::string>(*setting(c, "training", "mixed_precision_reduce")) == "bfloat16");
    CHECK(has_note(c, "Literal[\"float32\"]"));
  }
}

TEST_CASE("emit: dp_replicate is Megatron's --num-distributed-optimizer-instances and torchtitan's replicate degree") {
  // DP 2 x CP 4: two replicas of shard groups of (DP 1) x CP 4 ranks.
  sim::Prediction p = hand_made_plan();
  p.options.dp_replicate = 2;
  for (int zero : {1, 3}) {
    p.options.zero_stage = zero;
    const auto l = report::megatron_launch(hand_made_experiment(), p);
    const auto it = std::find(l.args.begin(), l.args.end(), "--num-distributed-optimizer-instances");
    REQUIRE(it != l.args.end());
    REQUIRE(it + 1 != l.args.end());
    CHECK(*(it + 1) == "2");
    CHECK(std::find(l.args.begin(), l.args.end(), "--use-distributed-optimizer") != l.args.end());
    check_flags_exist(l);
  }
  const auto py = report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::python);
  check_keys_exist(py);
  CHECK(int_setting(py, "parallelism", "data_parallel_replicate_degree", -1) == 2);
  CHECK(int_setting(py, "parallelism", "data_parallel_shard_degree", -1) == 1);
  // One replica: neither the flag nor a replicate degree.
  p.options.dp_replicate = 1;
  const auto one = report::megatron_launch(hand_made_experiment(), p);
  CHECK(std::find(one.args.begin(), one.args.end(), "--num-distributed-optimizer-instances") == one.args.end());
  const auto py1 = report::torchtitan_config(hand_made_experiment(), p, report::TorchtitanTarget::python);
  CHECK(int_setting(py1, "parallelism", "data_parallel_replicate_degree", -1) == 1);
  CHECK(int_setting(py1, "parallelism", "data_parallel_shard_degree", -1) == 2);
}

TEST_CASE("emit: the collective dtypes are Megatron's --grad-reduce-in-bf16 and torchtitan's mixed_precision_param / reduce") {
  Experiment e = hand_made_experiment();  // bf16
  const sim::Prediction p = hand_made_plan();
  auto megatron_has = [&](const std::string& flag) {
    const auto l = report::megatron_launch(e, p);
    check_flags_exist(l);
    return std::find(l.args.begin(), l.args.end(), flag) != l.args.end();
  };
  CHECK_FALSE(megatron_has("--grad-reduce-in-bf16"));
  e.training.grad_reduce_dtype = DType::bf16;
  CHECK(megatron_has("--grad-reduce-in-bf16"));
  auto py = report::torchtitan_config(e, p, report::TorchtitanTarget::python);
  check_keys_exist(py);
  CHECK(std::get<std::string>(*setting(py, "training", "mixed_precision_reduce")) == "bfloat16");
  CHECK(std::get<std::string>(*setting(py, "training", "mixed_precision_param")) == "bfloat16");
  // Composer's DEFAULT: float32 parameters gathered under autocast: torchtitan's float32 param
  // dtype; Megatron-LM has no such gather and says so.
  e.training.autocast = true;
  e.training.fp32_grad_accumulation = true;
  e.training.grad_accumulation = GradAccumulation::inplace;
  e.training.param_gather_dtype = DType::fp32;
  py = report::torchtitan_config(e, p, report::TorchtitanTarget::python);
  CHECK(std::get<std::string>(*setting(py, "training", "mixed_precision_param")) == "float32");
  const auto l = report::megatron_launch(e, p);
  bool noted = false;
  for (const auto& n : l.notes) noted = noted || n.find("param_gather_dtype fp32") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("emit: the Triton flash kernel the plan priced is noted in both frameworks, only where flash runs") {
  Experiment e = hand_made_experiment();
  CHECK_FALSE(has_note(report::megatron_launch(e, hand_made_plan()), "training.flash_kernel"));
  CHECK_FALSE(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                       "training.flash_kernel"));
  e.training.flash_kernel = FlashKernel::triton;
  CHECK(has_note(report::megatron_launch(e, hand_made_plan()), "training.flash_kernel triton"));
  CHECK(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                 "training.flash_kernel triton"));
  sim::Prediction materialized = hand_made_plan();
  materialized.options.attention = AttentionImpl::materialized;
  materialized.mesh = Mesh{8, 8, 1, 2};  // Megatron-LM's unfused attention has no CP
  materialized.micro_batches = 8;         // 64 / (DP 8 x micro-batch 1)
  CHECK_FALSE(has_note(report::megatron_launch(e, materialized), "training.flash_kernel"));
}

TEST_CASE("emit: FlashAttention-2 as the priced kernel is noted in both frameworks") {
  Experiment e = hand_made_experiment();
  e.training.flash_kernel = FlashKernel::fa2;
  CHECK(has_note(report::megatron_launch(e, hand_made_plan()), "training.flash_kernel fa2"));
  CHECK(has_note(report::megatron_launch(e, hand_made_plan()), "NVTE_FUSED_ATTN=0"));
  CHECK(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                 "training.flash_kernel fa2"));
  CHECK_FALSE(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                       "training.flash_kernel triton"));
}

TEST_CASE("emit: an early-stopped full recompute is noted where the framework's checkpoint differs from the plan's") {
  Experiment e = hand_made_experiment();
  sim::Prediction full = hand_made_plan();
  full.options.recompute = Recompute::full;
  // torchtitan stops early; a plan priced without it says so, one priced with it does not.
  CHECK(has_note(report::torchtitan_config(e, full, report::TorchtitanTarget::toml), "recompute_early_stop: true"));
  CHECK_FALSE(has_note(report::megatron_launch(e, full), "recompute_early_stop"));
  e.training.recompute_early_stop = true;
  CHECK_FALSE(has_note(report::torchtitan_config(e, full, report::TorchtitanTarget::toml), "recompute_early_stop"));
  // Megatron-LM re-runs the whole layer: the launch says the plan priced less.
  CHECK(has_note(report::megatron_launch(e, full), "recompute_early_stop: false"));
  // Without full recompute neither says anything.
  CHECK_FALSE(has_note(report::megatron_launch(e, hand_made_plan()), "recompute_early_stop"));
  CHECK_FALSE(has_note(report::torchtitan_config(e, hand_made_plan(), report::TorchtitanTarget::toml),
                       "recompute_early_stop"));
}
