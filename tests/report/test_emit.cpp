// Emit: exact Megatron-LM flags and torchtitan TOML for hand-made plans (report/emit.hpp),
// the notes for what a framework cannot express, and the errors for inconsistent plans.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
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

bool has_note(const report::Emitted& out, const std::string& needle) {
  return std::any_of(out.notes.begin(), out.notes.end(),
                     [&](const std::string& n) { return n.find(needle) != std::string::npos; });
}

}  // namespace

TEST_CASE("emit: Megatron-LM flags of a hand-made plan, exactly") {
  const auto out = report::megatron_settings(hand_made_experiment(), hand_made_plan());
  const std::vector<std::string> expected = {
      "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "2", "--context-parallel-size", "4",
      "--cp-comm-type", "p2p", "--num-layers-per-virtual-pipeline-stage", "8", "--micro-batch-size", "1",
      "--global-batch-size", "64", "--seq-length", "131072", "--max-position-embeddings", "131072",
      "--sequence-parallel", "--recompute-granularity", "selective", "--use-distributed-optimizer", "--bf16",
      "--attention-backend", "flash", "--num-layers", "32", "--hidden-size", "4096", "--num-attention-heads", "32",
      "--group-query-attention", "--num-query-groups", "8", "--kv-channels", "128", "--ffn-hidden-size", "14336",
      "--swiglu", "--untie-embeddings-and-output-weights"};
  CHECK(out.settings == expected);
  // Everything of this plan is expressible; only the tokenizer remark remains.
  REQUIRE(out.notes.size() == 1);
  CHECK(out.notes[0].find("vocabulary 128256") != std::string::npos);
}

TEST_CASE("emit: torchtitan TOML of a hand-made plan, exactly") {
  const auto out = report::torchtitan_settings(hand_made_experiment(), hand_made_plan());
  const std::vector<std::string> expected = {
      "[parallelism]",
      "data_parallel_replicate_degree = 1",
      "data_parallel_shard_degree = 2",
      "fsdp_reshard_after_forward = \"never\"",
      "tensor_parallel_degree = 8",
      "context_parallel_degree = 4",
      "context_parallel_rotate_method = \"alltoall\"",
      "pipeline_parallel_degree = 2",
      "pipeline_parallel_schedule = \"Interleaved1F1B\"",
      "pipeline_parallel_layers_per_stage = 8",
      "pipeline_parallel_microbatch_size = 1",
      "",
      "[activation_checkpoint]",
      "mode = \"selective\"",
      "selective_ac_option = \"op\"",
      "",
      "[training]",
      "local_batch_size = 32",
      "global_batch_size = 64",
      "seq_len = 131072",
      "mixed_precision_param = \"bfloat16\"",
      "",
      "[model]",
      "name = \"llama3\"",
      "flavor = \"llama3_8b\""};
  CHECK(out.settings == expected);
  CHECK(has_note(out, "ZeRO-1 is not expressible"));
  CHECK(has_note(out, "flavor \"llama3_8b\" with dim=4096, n_layers=32, n_heads=32, n_kv_heads=8"));
}

TEST_CASE("emit: full recompute, ZeRO-3, fp16, MHA, no PP, contiguous scheme") {
  Experiment e = hand_made_experiment();
  e.model.kv_heads = e.model.heads;
  e.model.gated_mlp = false;
  e.model.tied_embeddings = true;
  e.training.dtype = DType::fp16;
  e.training.seq_len = 8192;
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{16, 1, 8, 1};
  p.options.recompute = Recompute::full;
  p.options.zero_stage = 3;
  p.options.sequence_parallel = true;  // no effect at TP = 1: no flag, no note
  p.options.cp_scheme = CpScheme::contiguous;
  p.options.interleave = 1;
  p.options.micro_batch = 2;
  p.micro_batches = 2;  // 64 / (16 x 2)

  const auto mg = report::megatron_settings(e, p);
  const std::vector<std::string> expected = {
      "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1", "--context-parallel-size", "8",
      "--cp-comm-type", "p2p", "--micro-batch-size", "2", "--global-batch-size", "64", "--seq-length", "8192",
      "--max-position-embeddings", "8192", "--recompute-granularity", "full", "--recompute-method", "uniform",
      "--recompute-num-layers", "1", "--use-distributed-optimizer", "--use-megatron-fsdp",
      "--data-parallel-sharding-strategy", "optim_grads_params", "--fp16", "--attention-backend", "flash",
      "--num-layers", "32", "--hidden-size", "4096", "--num-attention-heads", "32", "--kv-channels", "128",
      "--ffn-hidden-size", "14336"};
  CHECK(mg.settings == expected);
  CHECK(has_note(mg, "cp_scheme contiguous is not expressible"));
  CHECK(has_note(mg, "ZeRO-3 maps to Megatron-FSDP"));

  const auto tt = report::torchtitan_settings(e, p);
  auto has_line = [&](const std::string& l) {
    return std::find(tt.settings.begin(), tt.settings.end(), l) != tt.settings.end();
  };
  CHECK(has_line("data_parallel_replicate_degree = 1"));
  CHECK(has_line("data_parallel_shard_degree = 16"));
  CHECK(has_line("fsdp_reshard_after_forward = \"always\""));
  CHECK(has_line("mode = \"full\""));
  CHECK(has_line("local_batch_size = 2"));  // no PP: torchtitan accumulates 64 / (2 x 16) = 2 steps
  CHECK(has_line("mixed_precision_param = \"bfloat16\""));
  CHECK_FALSE(has_line("pipeline_parallel_schedule = \"1F1B\""));  // no PP keys without PP
  CHECK(has_note(tt, "fp16 is not expressible"));
  CHECK(has_note(tt, "cp_scheme contiguous is not expressible"));
  CHECK(has_note(tt, "non-gated MLP"));
}

TEST_CASE("emit: ZeRO-0 replicates, TP without SP and striped are flagged for torchtitan") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{4, 4, 2, 1};
  p.options.zero_stage = 0;
  p.options.sequence_parallel = false;
  p.options.cp_scheme = CpScheme::striped;
  p.options.interleave = 1;
  p.micro_batches = 16;
  const auto tt = report::torchtitan_settings(e, p);
  CHECK(tt.settings[1] == "data_parallel_replicate_degree = 4");
  CHECK(tt.settings[2] == "data_parallel_shard_degree = 1");
  CHECK(has_note(tt, "ZeRO-0 over CP is not expressible"));
  CHECK(has_note(tt, "TP without sequence parallelism is not expressible"));
  CHECK(has_note(tt, "cp_scheme striped is not expressible"));
  const auto mg = report::megatron_settings(e, p);
  CHECK(std::find(mg.settings.begin(), mg.settings.end(), "--sequence-parallel") == mg.settings.end());
  CHECK(std::find(mg.settings.begin(), mg.settings.end(), "--use-distributed-optimizer") == mg.settings.end());
  CHECK(has_note(mg, "cp_scheme striped is not expressible"));
}

TEST_CASE("emit: uneven pipeline stages") {
  Experiment e = hand_made_experiment();
  e.model.layers = 30;
  sim::Prediction p = hand_made_plan();
  p.mesh = Mesh{2, 8, 2, 4};
  p.options.interleave = 1;
  const auto mg = report::megatron_settings(e, p);
  const auto it = std::find(mg.settings.begin(), mg.settings.end(), "--decoder-last-pipeline-num-layers");
  REQUIRE(it != mg.settings.end());
  CHECK(*(it + 1) == "6");  // stages 8, 8, 8 and a last stage of 30 - 24 = 6
  CHECK(has_note(mg, "uneven pipeline"));
  const auto tt = report::torchtitan_settings(e, p);
  CHECK(has_note(tt, "pipeline_parallel_layers_per_stage cannot express it"));

  p.options.interleave = 4;  // 30 layers cannot make 16 virtual stages
  CHECK_THROWS_AS(report::megatron_settings(e, p), Error);
}

TEST_CASE("emit: an inconsistent plan is bad input with a clear message") {
  Experiment e = hand_made_experiment();
  sim::Prediction p = hand_made_plan();
  p.options.micro_batch = 3;  // 64 is not a multiple of DP 2 x 3
  try {
    report::megatron_settings(e, p);
    FAIL("expected an error");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(std::string(err.what()).find("global batch 64 sequences is not a multiple of DP x micro_batch") !=
          std::string::npos);
  }
  p = hand_made_plan();
  p.micro_batches = 7;  // not 64 / 2
  CHECK_THROWS_AS(report::torchtitan_settings(e, p), Error);
  p = hand_made_plan();
  p.options.zero_stage = 5;
  CHECK_THROWS_AS(report::megatron_settings(e, p), Error);
}

TEST_CASE("emit: emit_plan text -- header, notes, one flag per continued line") {
  const std::string text = report::emit_plan(report::Format::megatron, hand_made_experiment(), hand_made_plan());
  CHECK(text.rfind("# ringplan plan for emit-test (llama3_8b on 128 GPUs of h100-test): DP=2 TP=8 CP=4 PP=2", 0) == 0);
  CHECK(text.find("# predicted: step 12.5 s") != std::string::npos);
  CHECK(text.find("peak memory 61.00 GiB of 80.00 GiB") != std::string::npos);
  CHECK(text.find("# note: vocabulary 128256") != std::string::npos);
  CHECK(text.find("--tensor-model-parallel-size 8 \\\n--pipeline-model-parallel-size 2 \\\n") != std::string::npos);
  CHECK(text.find("--sequence-parallel \\\n") != std::string::npos);
  // The last line has no continuation.
  CHECK(text.ends_with("--swiglu \\\n--untie-embeddings-and-output-weights\n"));

  const std::string toml = report::emit_plan(report::Format::torchtitan, hand_made_experiment(), hand_made_plan());
  CHECK(toml.find("\n[parallelism]\ndata_parallel_replicate_degree = 1\n") != std::string::npos);
  CHECK(toml.find("# note: ZeRO-1 is not expressible") != std::string::npos);
}

TEST_CASE("emit: format names round-trip") {
  for (const auto& name : report::format_names()) {
    const auto f = report::parse_format(name);
    REQUIRE(f.has_value());
    CHECK(name == report::to_string(*f));
  }
  CHECK_FALSE(report::parse_format("deepspeed").has_value());
  CHECK_FALSE(report::parse_format("").has_value());
}
