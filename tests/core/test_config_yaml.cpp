// Valid files: values and units, defaults of optional fields, relative path resolution,
// inline blocks, plan-file embedding, writer round trip, find_experiments.
#include <doctest/doctest.h>

#include "core/config_yaml.hpp"
#include "core/units.hpp"
#include "tests/core/test_helpers.hpp"

using namespace ringplan;
using ringplan::test::replace;
using ringplan::test::TempDir;
using ringplan::test::check_config_error;

namespace {

// Compares every field; doubles to 1e-12 relative (a unit conversion may differ in the last bit).
void check_same(const Experiment& a, const Experiment& b) {
  auto close = [](double x, double y) { return x == doctest::Approx(y).epsilon(1e-12); };
  CHECK(a.name == b.name);
  const ModelConfig &ma = a.model, &mb = b.model;
  CHECK(ma.name == mb.name);
  CHECK(ma.layers == mb.layers);
  CHECK(ma.hidden == mb.hidden);
  CHECK(ma.heads == mb.heads);
  CHECK(ma.kv_heads == mb.kv_heads);
  CHECK(ma.head_dim == mb.head_dim);
  CHECK(ma.ffn_hidden == mb.ffn_hidden);
  CHECK(ma.gated_mlp == mb.gated_mlp);
  CHECK(ma.vocab == mb.vocab);
  CHECK(ma.tied_embeddings == mb.tied_embeddings);
  CHECK(ma.dropout == mb.dropout);
  const ClusterConfig &ca = a.cluster, &cb = b.cluster;
  CHECK(ca.name == cb.name);
  CHECK(close(ca.peak_flops_per_s_bf16, cb.peak_flops_per_s_bf16));
  CHECK(close(ca.peak_flops_per_s_fp16, cb.peak_flops_per_s_fp16));
  CHECK(close(ca.peak_flops_per_s_fp32, cb.peak_flops_per_s_fp32));
  CHECK(close(ca.memory_bytes, cb.memory_bytes));
  CHECK(close(ca.memory_reserved_bytes, cb.memory_reserved_bytes));
  CHECK(close(ca.memory_bandwidth_bytes_per_s, cb.memory_bandwidth_bytes_per_s));
  CHECK(ca.gpus_per_node == cb.gpus_per_node);
  CHECK(ca.nodes == cb.nodes);
  CHECK(close(ca.intra_node.bandwidth_bytes_per_s, cb.intra_node.bandwidth_bytes_per_s));
  CHECK(close(ca.intra_node.latency_s, cb.intra_node.latency_s));
  CHECK(close(ca.inter_node.bandwidth_bytes_per_s, cb.inter_node.bandwidth_bytes_per_s));
  CHECK(close(ca.inter_node.latency_s, cb.inter_node.latency_s));
  CHECK(close(ca.matmul.max_efficiency, cb.matmul.max_efficiency));
  CHECK(close(ca.matmul.half_flops, cb.matmul.half_flops));
  CHECK(close(ca.attention.max_efficiency, cb.attention.max_efficiency));
  CHECK(close(ca.attention.half_flops, cb.attention.half_flops));
  CHECK(ca.memory_bandwidth_efficiency == cb.memory_bandwidth_efficiency);
  CHECK(a.training.seq_len == b.training.seq_len);
  CHECK(a.training.global_batch_sequences == b.training.global_batch_sequences);
  CHECK(a.training.dtype == b.training.dtype);
  CHECK(a.training.optimizer == b.training.optimizer);
  CHECK(a.training.causal == b.training.causal);
  CHECK(a.mesh == b.mesh);
  CHECK(a.options == b.options);
  CHECK(a.gpus == b.gpus);
  CHECK(a.search.micro_batch == b.search.micro_batch);
  CHECK(a.search.recompute == b.search.recompute);
  CHECK(a.search.zero_stage == b.search.zero_stage);
  CHECK(a.search.sequence_parallel == b.search.sequence_parallel);
  CHECK(a.search.cp_scheme == b.search.cp_scheme);
  CHECK(a.search.interleave == b.search.interleave);
  CHECK(a.search.attention == b.search.attention);
  CHECK(a.search.cp_comm == b.search.cp_comm);
  CHECK(a.search.max_tp == b.search.max_tp);
  CHECK(a.search.max_cp == b.search.max_cp);
  CHECK(a.search.max_pp == b.search.max_pp);
  REQUIRE(a.published.has_value() == b.published.has_value());
  if (a.published) {
    CHECK(a.published->step_time_s == b.published->step_time_s);
    CHECK(a.published->tflops_per_device == b.published->tflops_per_device);
    CHECK(a.published->mfu == b.published->mfu);
    CHECK(a.published->peak_memory_gib == b.published->peak_memory_gib);
    CHECK(a.published->peak_memory_allocated_gib == b.published->peak_memory_allocated_gib);
    CHECK(a.published->source == b.published->source);
  }
}

// Indents every line of `text` by two spaces (to inline a file's body under a key).
std::string indent(const std::string& text) {
  std::string out;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    out += "  " + text.substr(begin, end - begin + 1);
    begin = end + 1;
  }
  return out;
}

const char* kFullExperiment =
    "name: full\n"
    "model: ../models/m.yaml\n"
    "cluster: ../clusters/c.yaml\n"
    "training: {seq_len: 4096, global_batch_tokens: 65536, dtype: fp16, optimizer: sgd, causal: false}\n"
    "mesh: {dp: 2, tp: 2, cp: 4}\n"
    "options: {micro_batch: 2, recompute: selective, zero_stage: 1, sequence_parallel: true,\n"
    "          cp_scheme: striped, interleave: 2, attention: materialized, cp_comm: allgather}\n"
    "search:\n"
    "  micro_batch: [1, 2, 4]\n"
    "  recompute: [none, full]\n"
    "  zero_stage: [0, 3]\n"
    "  sequence_parallel: [true, false]\n"
    "  cp_scheme: [contiguous, zigzag]\n"
    "  interleave: [1, 3]\n"
    "  attention: [flash]\n"
    "  cp_comm: [allgather, ring]\n"
    "  max_tp: 8\n"
    "  max_cp: 32\n"
    "  max_pp: 4\n"
    "published: {step_time_s: 1.42, tflops_per_device: 150.5, mfu: 0.48, peak_memory_gib: 61.25,\n"
    "            peak_memory_allocated_gib: 58.5,\n"
    "            source: \"Korthikanti et al. 2022, Table 5: row 22B\"}\n";

// Loading `text` as training file `name` in `dir` fails with a ConfigError that names the file
// (name:line) and contains `expected`.
void check_training_refused(TempDir& dir, const std::string& name, const std::string& text, const std::string& expected) {
  try {
    load_training(dir.write(name, text));
    FAIL("accepted " << text);
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK_MESSAGE(what.find(name + ":") != std::string::npos, what);
    CHECK_MESSAGE(what.find(expected) != std::string::npos, what);
  }
}

}  // namespace

TEST_CASE("a model file loads with its values and optional defaults") {
  TempDir dir;
  ModelConfig m = load_model(dir.write("m.yaml", test::kModelYaml));
  CHECK(m.name == "m");
  CHECK(m.layers == 4);
  CHECK(m.hidden == 512);
  CHECK(m.heads == 8);
  CHECK(m.kv_heads == 2);
  CHECK(m.head_dim == 64);
  CHECK(m.ffn_hidden == 1536);
  CHECK(m.gated_mlp);
  CHECK(m.vocab == 32000);
  CHECK_FALSE(m.tied_embeddings);  // optional, default false
  CHECK(load_model(dir.write("t.yaml", std::string(test::kModelYaml) + "tied_embeddings: yes\n")).tied_embeddings);
  CHECK(m.dropout == 0.0);  // optional, default 0 (no dropout)
}

TEST_CASE("model position_embedding: rope (default) or learned, written back, others refused at the key") {
  TempDir dir;
  CHECK(load_model(dir.write("a.yaml", test::kModelYaml)).rope);
  CHECK(load_model(dir.write("b.yaml", std::string(test::kModelYaml) + "position_embedding: rope\n")).rope);
  const ModelConfig m = load_model(dir.write("c.yaml", std::string(test::kModelYaml) + "position_embedding: learned\n"));
  CHECK_FALSE(m.rope);
  YAML::Emitter out;
  write_model(out, m);
  CHECK_FALSE(load_model(dir.write("d.yaml", std::string(out.c_str()) + "\n")).rope);
  try {
    load_model(dir.write("e.yaml", std::string(test::kModelYaml) + "position_embedding: alibi\n"));
    FAIL("accepted position_embedding: alibi");
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK_MESSAGE(what.find("e.yaml:") != std::string::npos, what);
    CHECK_MESSAGE(what.find("must be one of rope, learned; got 'alibi'") != std::string::npos, what);
  }
}

TEST_CASE("model dropout is an optional probability from 0 up to but excluding 1") {
  TempDir dir;
  CHECK(load_model(dir.write("a.yaml", std::string(test::kModelYaml) + "dropout: 0.1\n")).dropout == 0.1);
  CHECK(load_model(dir.write("b.yaml", std::string(test::kModelYaml) + "dropout: 0\n")).dropout == 0.0);
  CHECK(load_model(dir.write("c.yaml", std::string(test::kModelYaml) + "dropout: 0.99\n")).dropout == 0.99);
}

TEST_CASE("cluster efficiency.memory_bandwidth is optional with default 0.8 and read as given") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.memory_bandwidth_efficiency == kDefaultMemoryBandwidthEfficiency);
  CHECK(kDefaultMemoryBandwidthEfficiency == 0.8);
  c = load_cluster(dir.write("d.yaml", std::string(test::kClusterYaml) + "  memory_bandwidth: 0.9\n"));
  CHECK(c.memory_bandwidth_efficiency == 0.9);
  c = load_cluster(dir.write("e.yaml", std::string(test::kClusterYaml) + "  memory_bandwidth: 1\n"));
  CHECK(c.memory_bandwidth_efficiency == 1.0);
}

TEST_CASE("cluster efficiency.matmul_backward is optional: absent = matmul, read and written as given") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.matmul_backward.max_efficiency == 0.0);  // unset
  CHECK(c.matmul_backward_curve().max_efficiency == doctest::Approx(c.matmul.max_efficiency));
  c = load_cluster(
      dir.write("d.yaml", std::string(test::kClusterYaml) + "  matmul_backward: {max: 0.3, half_tflop: 0.1}\n"));
  CHECK(c.matmul_backward_curve().max_efficiency == doctest::Approx(0.3));
  CHECK(c.matmul_backward_curve().half_flops == doctest::Approx(0.1e12));
  YAML::Emitter out;
  write_cluster(out, c);
  const ClusterConfig back = load_cluster(dir.write("e.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.matmul_backward.max_efficiency == doctest::Approx(0.3));
  c.matmul_backward = {};
  YAML::Emitter out2;
  write_cluster(out2, c);
  CHECK(std::string(out2.c_str()).find("matmul_backward") == std::string::npos);
}

TEST_CASE("cluster GEMM curves take an optional half_k (the K-ramp), read and written as given, 0 = FLOPs alone") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.matmul.half_k == 0.0);
  CHECK(c.matmul.at_gemm(1e12, 64) == c.matmul.at(1e12));  // no ramp: K does not matter
  c = load_cluster(dir.write("d.yaml", replace(test::kClusterYaml, "  matmul: {max: 0.8, half_tflop: 0.025}",
                                               "  matmul: {max: 0.8, half_tflop: 0.025, half_k: 128}\n"
                                               "  matmul_backward: {max: 0.7, half_tflop: 0.02, half_k: 64}")));
  CHECK(c.matmul.half_k == 128.0);
  CHECK(c.matmul_backward_curve().half_k == 64.0);
  // eff(x, K) = eff(x) * K / (K + half_k): half the FLOPs curve's rate at K = half_k
  CHECK(c.matmul.at_gemm(1e12, 128) == doctest::Approx(0.5 * c.matmul.at(1e12)));
  CHECK(c.matmul.at_gemm(1e12, 3 * 128) == doctest::Approx(0.75 * c.matmul.at(1e12)));
  YAML::Emitter out;
  write_cluster(out, c);
  const ClusterConfig back = load_cluster(dir.write("e.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.matmul.half_k == 128.0);
  CHECK(back.matmul_backward.half_k == 64.0);
  c.matmul.half_k = 0;
  YAML::Emitter out2;
  write_cluster(out2, c);
  CHECK(std::string(out2.c_str()).find("matmul: {max: 0.8, half_tflop: 0.025}") != std::string::npos);
}

TEST_CASE("cluster efficiency.materialized_attention is optional: absent = matmul, read and written as given") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.materialized_attention.max_efficiency == 0.0);  // unset
  CHECK(c.materialized_attention_curve().max_efficiency == doctest::Approx(c.matmul.max_efficiency));
  c = load_cluster(
      dir.write("d.yaml", std::string(test::kClusterYaml) + "  materialized_attention: {max: 0.2, half_tflop: 0.05}\n"));
  CHECK(c.materialized_attention_curve().max_efficiency == doctest::Approx(0.2));
  CHECK(c.materialized_attention_curve().half_flops == doctest::Approx(0.05e12));
  YAML::Emitter out;
  write_cluster(out, c);
  CHECK(load_cluster(dir.write("e.yaml", std::string(out.c_str()) + "\n")).materialized_attention.max_efficiency ==
        doctest::Approx(0.2));
}

TEST_CASE("cluster efficiency.attention_backward is optional: absent = attention, read and written as given") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.attention_backward.max_efficiency == 0.0);  // unset
  CHECK(c.attention_backward_curve().max_efficiency == doctest::Approx(0.6));
  CHECK(c.attention_backward_curve().half_flops == doctest::Approx(0.05e12));
  c = load_cluster(
      dir.write("d.yaml", std::string(test::kClusterYaml) + "  attention_backward: {max: 0.4, half_tflop: 0.2}\n"));
  CHECK(c.attention_backward.max_efficiency == doctest::Approx(0.4));
  CHECK(c.attention_backward_curve().half_flops == doctest::Approx(0.2e12));
  CHECK(c.attention.max_efficiency == doctest::Approx(0.6));  // forward untouched
  // written back only when set, and read back equal
  YAML::Emitter out;
  write_cluster(out, c);
  const ClusterConfig back = load_cluster(dir.write("e.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.attention_backward.max_efficiency == doctest::Approx(0.4));
  CHECK(back.attention_backward.half_flops == doctest::Approx(0.2e12));
  c.attention_backward = {};
  YAML::Emitter out2;
  write_cluster(out2, c);
  CHECK(std::string(out2.c_str()).find("attention_backward") == std::string::npos);
  // out of range is rejected at its line
  CHECK_THROWS_AS(load_cluster(dir.write("f.yaml", std::string(test::kClusterYaml) +
                                                       "  attention_backward: {max: 1.5, half_tflop: 0}\n")),
                  ConfigError);
}

TEST_CASE("cluster efficiency.collectives is optional: absent = the ideal ring, read and written as given") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.collectives.all_reduce.is_ideal());
  CHECK(c.collectives.all_gather.at(1e6) == doctest::Approx(1.0));
  c = load_cluster(dir.write("d.yaml", std::string(test::kClusterYaml) +
                                           "  collectives:\n    all_reduce: {max: 0.5, half_mib: 1}\n"));
  CHECK(c.collectives.all_reduce.max_efficiency == doctest::Approx(0.5));
  CHECK(c.collectives.all_reduce.half_bytes == doctest::Approx(1024.0 * 1024.0));
  CHECK(c.collectives.all_reduce.at(1024.0 * 1024.0) == doctest::Approx(0.25));
  CHECK(c.collectives.reduce_scatter.is_ideal());  // kinds not given stay ideal
  YAML::Emitter out;
  write_cluster(out, c);
  const ClusterConfig back = load_cluster(dir.write("e.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.collectives.all_reduce.max_efficiency == doctest::Approx(0.5));
  CHECK(back.collectives.all_reduce.half_bytes == doctest::Approx(1024.0 * 1024.0));
  c.collectives = {};
  YAML::Emitter out2;
  write_cluster(out2, c);
  CHECK(std::string(out2.c_str()).find("collectives") == std::string::npos);
  CHECK_THROWS_AS(load_cluster(dir.write("f.yaml", std::string(test::kClusterYaml) +
                                                       "  collectives:\n    all_gather: {max: 2, half_mib: 0}\n")),
                  ConfigError);
}

TEST_CASE("cluster efficiency.collectives_inter_node is optional: absent = efficiency.collectives for every link") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", std::string(test::kClusterYaml) +
                                                         "  collectives:\n    all_reduce: {max: 0.8, half_mib: 0}\n"));
  CHECK_FALSE(c.has_inter_node_collectives);
  CHECK(&c.collectives_on(true) == &c.collectives);
  CHECK(c.collectives_on(true).all_reduce.max_efficiency == doctest::Approx(0.8));
  c = load_cluster(dir.write("d.yaml", std::string(test::kClusterYaml) +
                                           "  collectives:\n    all_reduce: {max: 0.8, half_mib: 0}\n"
                                           "  collectives_inter_node:\n    reduce_scatter: {max: 0.94, half_mib: 2}\n"));
  CHECK(c.has_inter_node_collectives);
  CHECK(c.collectives_on(false).all_reduce.max_efficiency == doctest::Approx(0.8));
  CHECK(c.collectives_on(true).reduce_scatter.max_efficiency == doctest::Approx(0.94));
  CHECK(c.collectives_on(true).reduce_scatter.half_bytes == doctest::Approx(2.0 * 1024 * 1024));
  CHECK(c.collectives_on(true).all_reduce.is_ideal());  // kinds not given stay ideal
  YAML::Emitter out;
  write_cluster(out, c);
  const ClusterConfig back = load_cluster(dir.write("e.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.has_inter_node_collectives);
  CHECK(back.inter_node_collectives.reduce_scatter.max_efficiency == doctest::Approx(0.94));
  CHECK(back.collectives.all_reduce.max_efficiency == doctest::Approx(0.8));
  CHECK_THROWS_AS(load_cluster(dir.write("f.yaml", std::string(test::kClusterYaml) +
                                                       "  collectives_inter_node:\n    all_gather: {max: 0, half_mib: 0}\n")),
                  ConfigError);
}

TEST_CASE("a cluster file converts its units to SI") {
  TempDir dir;
  ClusterConfig c = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(c.name == "c");
  CHECK(c.peak_flops_per_s_bf16 == doctest::Approx(989e12));
  CHECK(c.peak_flops_per_s(DType::fp32) == doctest::Approx(67e12));
  CHECK(c.memory_bytes == 80.0 * 1024 * 1024 * 1024);  // GiB, binary
  CHECK(c.memory_reserved_bytes == 2.0 * 1024 * 1024 * 1024);
  CHECK(c.memory_bandwidth_bytes_per_s == doctest::Approx(3.35e12));  // GB/s, decimal
  CHECK(c.gpus_per_node == 8);
  CHECK(c.nodes == 2);
  CHECK(c.gpus() == 16);
  CHECK(c.intra_node.bandwidth_bytes_per_s == doctest::Approx(450e9));
  CHECK(c.intra_node.latency_s == doctest::Approx(3e-6));
  CHECK(c.inter_node.bandwidth_bytes_per_s == doctest::Approx(50e9));
  CHECK(c.inter_node.latency_s == doctest::Approx(6e-6));
  CHECK(c.matmul.max_efficiency == doctest::Approx(0.8));
  CHECK(c.matmul.half_flops == doctest::Approx(0.025e12));
  CHECK(c.attention.half_flops == doctest::Approx(0.05e12));
  // eff(x) = max * x / (x + half): half of max at x = half.
  CHECK(c.matmul.at(c.matmul.half_flops) == doctest::Approx(0.4));
}

TEST_CASE("training: global_batch_tokens converts to sequences and causal defaults to true") {
  TempDir dir;
  TrainingConfig t = load_training(dir.write("t.yaml", test::kTrainingYaml));
  CHECK(t.seq_len == 4096);
  CHECK(t.global_batch_sequences == 8);
  CHECK(t.dtype == DType::bf16);
  CHECK(t.optimizer == Optimizer::adam);
  CHECK(t.causal);
  t = load_training(dir.write(
      "u.yaml", replace(test::kTrainingYaml, "global_batch: 8", "global_batch_tokens: 131072") + "causal: false\n"));
  CHECK(t.global_batch_sequences == 32);
  CHECK_FALSE(t.causal);
}

TEST_CASE("training: grad_accumulation_dtype fp32 or same (default), read and written back") {
  TempDir dir;
  TrainingConfig t = load_training(dir.write("t.yaml", test::kTrainingYaml));
  CHECK_FALSE(t.fp32_grad_accumulation);
  t = load_training(dir.write("u.yaml", std::string(test::kTrainingYaml) + "grad_accumulation_dtype: fp32\n"));
  CHECK(t.fp32_grad_accumulation);
  YAML::Emitter out;
  write_training(out, t);
  CHECK(std::string(out.c_str()).find("grad_accumulation_dtype: fp32") != std::string::npos);
  CHECK(load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n")).fp32_grad_accumulation);
  CHECK_FALSE(load_training(dir.write("w.yaml", std::string(test::kTrainingYaml) + "grad_accumulation_dtype: same\n"))
                  .fp32_grad_accumulation);
  CHECK_THROWS_AS(load_training(dir.write("x.yaml", std::string(test::kTrainingYaml) + "grad_accumulation_dtype: bf16\n")),
                  ConfigError);
}

TEST_CASE("training: two-valued keys (elementwise, fsdp, pp_schedule, pp_p2p, tp_impl, projections) read with their default, written back, others refused at the key") {
  struct Key {
    const char* key;
    const char* off;  // the default
    const char* on;
    bool TrainingConfig::*field;
  };
  for (const Key k : {Key{"elementwise", "fused", "eager", &TrainingConfig::eager_elementwise},
                      Key{"fsdp", "flat", "per_parameter", &TrainingConfig::fsdp_per_parameter},
                      Key{"pp_schedule", "megatron", "pytorch", &TrainingConfig::pytorch_pp_schedule},
                      Key{"pp_p2p", "full", "scatter_gather", &TrainingConfig::pp_scatter_gather},
                      Key{"tp_impl", "megatron", "dtensor", &TrainingConfig::tp_dtensor},
                      Key{"projections", "fused", "separate", &TrainingConfig::separate_projections}}) {
    INFO(k.key);
    TempDir dir;
    const std::string line = std::string(k.key) + ": ";
    CHECK_FALSE(load_training(dir.write("t.yaml", test::kTrainingYaml)).*k.field);
    const TrainingConfig t = load_training(dir.write("u.yaml", test::kTrainingYaml + line + k.on + "\n"));
    CHECK(t.*k.field);
    YAML::Emitter out;
    write_training(out, t);
    CHECK(load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n")).*k.field);
    CHECK_FALSE(load_training(dir.write("w.yaml", test::kTrainingYaml + line + k.off + "\n")).*k.field);
    try {
      load_training(dir.write("x.yaml", test::kTrainingYaml + line + "liger\n"));
      FAIL("accepted " << k.key << ": liger");
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      CHECK_MESSAGE(what.find("x.yaml:") != std::string::npos, what);
      CHECK_MESSAGE(what.find(std::string("must be one of ") + k.off + ", " + k.on + "; got 'liger'") != std::string::npos, what);
    }
  }
}

TEST_CASE("training: recompute_early_stop is off unless set, written back when on, a non-boolean refused at the key") {
  TempDir dir;
  CHECK_FALSE(load_training(dir.write("t.yaml", test::kTrainingYaml)).recompute_early_stop);
  const TrainingConfig t = load_training(dir.write("u.yaml", test::kTrainingYaml + std::string("recompute_early_stop: true\n")));
  CHECK(t.recompute_early_stop);
  YAML::Emitter out;
  write_training(out, t);
  CHECK(load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n")).recompute_early_stop);
  YAML::Emitter off;
  write_training(off, load_training(dir.write("w.yaml", test::kTrainingYaml)));
  CHECK(std::string(off.c_str()).find("recompute_early_stop") == std::string::npos);
  try {
    load_training(dir.write("x.yaml", test::kTrainingYaml + std::string("recompute_early_stop: sometimes\n")));
    FAIL("accepted recompute_early_stop: sometimes");
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK_MESSAGE(what.find("x.yaml:") != std::string::npos, what);
    CHECK_MESSAGE(what.find("recompute_early_stop") != std::string::npos, what);
  }
}

TEST_CASE("training: norm follows elementwise unless set, fused written back, eager refused with fused element-wise ops") {
  TempDir dir;
  CHECK(load_training(dir.write("t.yaml", test::kTrainingYaml)).norm == NormImpl::fused);
  CHECK(load_training(dir.write("u.yaml", test::kTrainingYaml + std::string("elementwise: eager\n"))).norm == NormImpl::eager);
  const TrainingConfig t =
      load_training(dir.write("v.yaml", test::kTrainingYaml + std::string("elementwise: eager\nnorm: fused\n")));
  CHECK(t.eager_elementwise);
  CHECK(t.norm == NormImpl::fused);
  YAML::Emitter out;
  write_training(out, t);
  const TrainingConfig back = load_training(dir.write("w.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.eager_elementwise);
  CHECK(back.norm == NormImpl::fused);
  check_training_refused(dir, "x.yaml", test::kTrainingYaml + std::string("norm: eager\n"),
                         "norm: eager needs elementwise: eager");
  CHECK_THROWS_AS(load_training(dir.write("y.yaml", test::kTrainingYaml + std::string("elementwise: eager\nnorm: apex\n"))),
                  ConfigError);
}

TEST_CASE("training: cross_entropy fused (default), unfused or fused_16bit, read and written back, others refused at the key") {
  TempDir dir;
  const TrainingConfig d = load_training(dir.write("t.yaml", test::kTrainingYaml));
  CHECK(d.cross_entropy == CrossEntropy::fused);
  for (const char* v : {"fused", "unfused", "fused_16bit"}) {
    INFO(v);
    const TrainingConfig t = load_training(dir.write("u.yaml", test::kTrainingYaml + std::string("cross_entropy: ") + v + "\n"));
    CHECK(std::string(to_string(t.cross_entropy)) == v);
    YAML::Emitter out;
    write_training(out, t);
    const TrainingConfig back = load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n"));
    CHECK(back.cross_entropy == t.cross_entropy);
  }
  check_training_refused(dir, "x.yaml", test::kTrainingYaml + std::string("cross_entropy: liger\n"),
                         "must be one of: fused, unfused, fused_16bit");
  std::string fp32 = test::kTrainingYaml;
  fp32.replace(fp32.find("dtype: bf16"), 11, "dtype: fp32");
  check_training_refused(dir, "y.yaml", fp32 + "cross_entropy: fused_16bit\n", "fused_16bit reads 16-bit logits");
}

TEST_CASE("training: norm low_precision read and written back, with or without eager element-wise ops") {
  TempDir dir;
  CHECK(load_training(dir.write("t.yaml", test::kTrainingYaml)).norm == NormImpl::fused);
  for (const std::string extra : {"", "elementwise: eager\n"}) {
    INFO(extra);
    const TrainingConfig t = load_training(dir.write("u.yaml", test::kTrainingYaml + extra + "norm: low_precision\n"));
    CHECK(t.norm == NormImpl::low_precision);
    YAML::Emitter out;
    write_training(out, t);
    const TrainingConfig back = load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n"));
    CHECK(back.norm == NormImpl::low_precision);
    CHECK(back.eager_elementwise == t.eager_elementwise);
  }
  check_training_refused(dir, "x.yaml", test::kTrainingYaml + std::string("elementwise: eager\nnorm: rms\n"),
                         "must be one of: fused, eager, low_precision");
}

TEST_CASE("training: mixed_precision master_weights (default) or autocast, read and written back, bad values refused at the key") {
  TempDir dir;
  CHECK_FALSE(load_training(dir.write("t.yaml", test::kTrainingYaml)).autocast);
  TrainingConfig t = load_training(dir.write("u.yaml", std::string(test::kTrainingYaml) + "mixed_precision: autocast\n"));
  CHECK(t.autocast);
  CHECK(t.fp32_grad_accumulation);  // float32 parameters keep float32 gradients
  YAML::Emitter out;
  write_training(out, t);
  const TrainingConfig back = load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.autocast);
  CHECK(back.fp32_grad_accumulation);
  CHECK_FALSE(
      load_training(dir.write("w.yaml", std::string(test::kTrainingYaml) + "mixed_precision: master_weights\n")).autocast);
  auto refused = [&](const std::string& name, const std::string& text, const std::string& expected) {
    check_training_refused(dir, name, text, expected);
  };
  refused("x.yaml", std::string(test::kTrainingYaml) + "mixed_precision: amp\n",
          "must be one of master_weights, autocast; got 'amp'");
  refused("y.yaml", replace(test::kTrainingYaml, "dtype: bf16", "dtype: fp32") + "mixed_precision: autocast\n",
          "autocast needs a 16-bit training dtype");
  refused("z.yaml", std::string(test::kTrainingYaml) + "grad_accumulation_dtype: same\nmixed_precision: autocast\n",
          "grad_accumulation_dtype must be fp32 or left out");
}

TEST_CASE("training: grad_accumulation fused by default, inplace under autocast, checked against the dtypes, written back") {
  TempDir dir;
  CHECK(load_training(dir.write("t.yaml", test::kTrainingYaml)).grad_accumulation == GradAccumulation::fused);
  const std::string amp = std::string(test::kTrainingYaml) + "mixed_precision: autocast\n";
  CHECK(load_training(dir.write("a.yaml", amp)).grad_accumulation == GradAccumulation::inplace);
  for (const GradAccumulation g : {GradAccumulation::inplace, GradAccumulation::cast_add}) {
    INFO(to_string(g));
    const TrainingConfig t = load_training(dir.write(
        "u.yaml", std::string(test::kTrainingYaml) + "grad_accumulation_dtype: fp32\ngrad_accumulation: " + to_string(g) + "\n"));
    CHECK(t.grad_accumulation == g);
    YAML::Emitter out;
    write_training(out, t);
    CHECK(load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n")).grad_accumulation == g);
  }
  auto refused = [&](const std::string& name, const std::string& text, const std::string& expected) {
    check_training_refused(dir, name, text, expected);
  };
  refused("x.yaml", std::string(test::kTrainingYaml) + "grad_accumulation: fusion\n",
          "'fusion' is not valid; must be one of: fused, inplace, cast_add");
  refused("y.yaml", amp + "grad_accumulation: fused\n", "grad_accumulation must be inplace or left out, got fused");
  refused("z.yaml", std::string(test::kTrainingYaml) + "grad_accumulation: cast_add\n",
          "cast_add adds 16-bit gradients into a float32 buffer");
}

TEST_CASE("training: clip_grad defaults to 1.0, 0 turns it off, negative or non-finite refused, written back") {
  TempDir dir;
  CHECK(load_training(dir.write("t.yaml", test::kTrainingYaml)).clip_grad == 1.0);
  TrainingConfig t = load_training(dir.write("u.yaml", std::string(test::kTrainingYaml) + "clip_grad: 0.25\n"));
  CHECK(t.clip_grad == 0.25);
  YAML::Emitter out;
  write_training(out, t);
  CHECK(load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n")).clip_grad == 0.25);
  CHECK(load_training(dir.write("w.yaml", std::string(test::kTrainingYaml) + "clip_grad: 0\n")).clip_grad == 0.0);
  for (const char* bad : {"clip_grad: -1\n", "clip_grad: .nan\n", "clip_grad: \"1\"\n"})
    CHECK_THROWS_AS(load_training(dir.write("x.yaml", std::string(test::kTrainingYaml) + bad)), ConfigError);
}

TEST_CASE("experiment references resolve relative to the experiment file's folder") {
  TempDir dir;
  dir.write("configs/models/m.yaml", test::kModelYaml);
  dir.write("configs/clusters/c.yaml", test::kClusterYaml);
  dir.write("configs/training/t.yaml", test::kTrainingYaml);
  std::string e = dir.write("configs/experiments/deep/e.yaml",
                            "name: e\nmodel: ../../models/m.yaml\ncluster: ../../clusters/c.yaml\n"
                            "training: ../../training/t.yaml\n");
  Experiment x = load_experiment(e);
  CHECK(x.path == e);
  CHECK(x.model.hidden == 512);
  CHECK(x.cluster.nodes == 2);
  CHECK(x.training.seq_len == 4096);
  // Defaults of an experiment without mesh/options/search/published/gpus.
  CHECK_FALSE(x.mesh.has_value());
  CHECK_FALSE(x.gpus.has_value());
  CHECK(x.options == ParallelOptions{});
  CHECK(x.search.cp_scheme.empty());
  CHECK_FALSE(x.published.has_value());

  // Absolute references work from anywhere.
  std::string abs = dir.write("elsewhere/e.yaml", "name: e\nmodel: " + dir.file("configs/models/m.yaml") +
                                                      "\ncluster: " + dir.file("configs/clusters/c.yaml") +
                                                      "\ntraining: " + dir.file("configs/training/t.yaml") + "\n");
  CHECK(load_experiment(abs).model.kv_heads == 2);

  // parse_experiment resolves against the given base folder.
  Experiment y =
      parse_experiment("name: s\nmodel: models/m.yaml\ncluster: clusters/c.yaml\ntraining: training/t.yaml\n", "<text>",
                       dir.file("configs"));
  CHECK(y.path == "<text>");
  CHECK(y.cluster.gpus_per_node == 8);
}

TEST_CASE("experiment with inline blocks and mesh and options and search and published") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  Experiment e = load_experiment(dir.write("exp/full.yaml", kFullExperiment));
  CHECK(e.training.global_batch_sequences == 16);
  CHECK(e.training.dtype == DType::fp16);
  CHECK(e.training.optimizer == Optimizer::sgd);
  CHECK_FALSE(e.training.causal);
  REQUIRE(e.mesh.has_value());
  CHECK(*e.mesh == Mesh{2, 2, 4, 1});  // omitted pp is 1
  CHECK(e.gpus == 16);                 // a fixed mesh fixes the world size
  CHECK(e.options.micro_batch == 2);
  CHECK(e.options.recompute == Recompute::selective);
  CHECK(e.options.zero_stage == 1);
  CHECK(e.options.sequence_parallel);
  CHECK(e.options.cp_scheme == CpScheme::striped);
  CHECK(e.options.interleave == 2);
  CHECK(e.options.attention == AttentionImpl::materialized);
  CHECK(e.options.cp_comm == CpComm::allgather);
  CHECK(e.search.micro_batch == std::vector<int64_t>{1, 2, 4});
  CHECK(e.search.recompute == std::vector<Recompute>{Recompute::none, Recompute::full});
  CHECK(e.search.zero_stage == std::vector<int>{0, 3});
  CHECK(e.search.sequence_parallel == std::vector<bool>{true, false});
  CHECK(e.search.cp_scheme == std::vector<CpScheme>{CpScheme::contiguous, CpScheme::zigzag});
  CHECK(e.search.interleave == std::vector<int64_t>{1, 3});
  CHECK(e.search.attention == std::vector<AttentionImpl>{AttentionImpl::flash});
  CHECK(e.search.cp_comm == std::vector<CpComm>{CpComm::allgather, CpComm::ring});
  CHECK(e.search.max_tp == 8);
  CHECK(e.search.max_cp == 32);
  CHECK(e.search.max_pp == 4);
  REQUIRE(e.published.has_value());
  CHECK(e.published->step_time_s == 1.42);
  CHECK(e.published->tflops_per_device == 150.5);
  CHECK(e.published->mfu == 0.48);
  CHECK(e.published->peak_memory_gib == 61.25);
  CHECK(e.published->peak_memory_allocated_gib == 58.5);
  CHECK(e.published->source == "Korthikanti et al. 2022, Table 5: row 22B");

  // The same experiment with every block inlined.
  std::string inl = replace(kFullExperiment, "model: ../models/m.yaml\n", "model:\n" + indent(test::kModelYaml));
  inl = replace(inl, "cluster: ../clusters/c.yaml\n", "cluster:\n" + indent(test::kClusterYaml));
  Experiment f = load_experiment(dir.write("exp/inline.yaml", inl));
  check_same(e, f);
}

TEST_CASE("options.cp_comm: ring by default, allgather and alltoall read and written back") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  const std::string head = "name: comm\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n"
                           "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam}\n";
  const Experiment plain = load_experiment(dir.write("exp/plain.yaml", head));
  CHECK(plain.options.cp_comm == CpComm::ring);  // every earlier file keeps the ring
  CHECK(plain.search.cp_comm.empty());           // the planner's default set
  const Experiment ag = load_experiment(dir.write("exp/ag.yaml", head + "options: {cp_comm: allgather}\n"));
  CHECK(ag.options.cp_comm == CpComm::allgather);
  const std::string text = experiment_to_yaml(ag);
  CHECK(text.find("cp_comm: allgather") != std::string::npos);
  CHECK(parse_experiment(text, "<written>", "/nonexistent").options.cp_comm == CpComm::allgather);
  CHECK(cp_comm_names() == std::vector<std::string>{"ring", "allgather", "alltoall", "hybrid"});
  CHECK(parse_cp_comm("all_gather") == std::nullopt);
  // alltoall (Ulysses): options and search lists read and written back.
  const Experiment a2a =
      load_experiment(dir.write("exp/a2a.yaml", head + "options: {cp_comm: alltoall}\nsearch: {cp_comm: [alltoall, ring]}\n"));
  CHECK(a2a.options.cp_comm == CpComm::alltoall);
  CHECK(a2a.search.cp_comm == std::vector<CpComm>{CpComm::alltoall, CpComm::ring});
  const Experiment back = parse_experiment(experiment_to_yaml(a2a), "<written>", "/nonexistent");
  CHECK(back.options.cp_comm == CpComm::alltoall);
  CHECK(back.search.cp_comm == a2a.search.cp_comm);
  CHECK(parse_cp_comm("a2a") == std::nullopt);
}

TEST_CASE("options: the pipeline split settings read, written back, and the two kinds refused together") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  const std::string head = "name: split\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n"
                           "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam}\n";
  const Experiment plain = load_experiment(dir.write("exp/plain.yaml", head));
  CHECK_FALSE(plain.options.uneven_pipeline());
  CHECK_FALSE(plain.fixed_options.pp_split);
  CHECK(pipeline_split_text(plain.options) == "even");
  const Experiment slots =
      load_experiment(dir.write("exp/slots.yaml", head + "options: {pp_embedding_slot: true, pp_loss_slot: true}\n"));
  CHECK(slots.options.pp_embedding_slot);
  CHECK(slots.options.pp_loss_slot);
  CHECK(slots.fixed_options.pp_split);
  CHECK(pipeline_split_text(slots.options) == "embedding and loss slots");
  const Experiment back = parse_experiment(experiment_to_yaml(slots), "<written>", "/nonexistent");
  CHECK(back.options == slots.options);
  const Experiment fl =
      load_experiment(dir.write("exp/fl.yaml", head + "options: {pp_first_layers: 2, pp_last_layers: 1}\n"));
  CHECK(fl.options.pp_first_layers == 2);
  CHECK(fl.options.pp_last_layers == 1);
  CHECK(pipeline_split_text(fl.options) == "first 2, last 1 layers");
  CHECK(parse_experiment(experiment_to_yaml(fl), "<written>", "/nonexistent").options == fl.options);
  const std::string both = dir.write("exp/both.yaml", head + "options:\n  pp_first_layers: 2\n  pp_loss_slot: true\n");
  check_config_error([&] { load_experiment(both); }, {both, 7, "options.pp_loss_slot", "cannot be combined"});
  const std::string zero = dir.write("exp/zero.yaml", head + "options:\n  pp_last_layers: 0\n");
  check_config_error([&] { load_experiment(zero); }, {zero, 6, "options.pp_last_layers", "positive integer"});
  // More layers than the model's 4, whatever the mesh: refused at load, not left to a search
  // that would quietly keep PP 1 only.
  const std::string big = dir.write("exp/big.yaml", head + "options:\n  pp_first_layers: 3\n  pp_last_layers: 2\n");
  check_config_error([&] { load_experiment(big); }, {big, 6, "options.pp_first_layers", "exceed the model's 4 layers"});
  const std::string all = dir.write("exp/all.yaml", head + "options:\n  pp_last_layers: 4\n");
  check_config_error([&] { load_experiment(all); }, {all, 6, "options.pp_last_layers", "at most 3"});
  CHECK(load_experiment(dir.write("exp/ok.yaml", head + "options: {pp_first_layers: 3}\n")).options.pp_first_layers == 3);
  CHECK(load_experiment(dir.write("exp/ok2.yaml", head + "options: {pp_first_layers: 2, pp_last_layers: 2}\n"))
            .options.pp_last_layers == 2);
}

TEST_CASE("options.cp_comm hybrid: the group size cp_a2a_size read, written back and checked against the mesh") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);  // 8 heads, 2 KV heads
  dir.write("clusters/c.yaml", test::kClusterYaml);
  const std::string head = "name: comm\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n"
                           "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam}\n";
  // No size: 0, the default (sim::default_cp_a2a_size), and nothing written for it.
  const Experiment dflt = load_experiment(dir.write("exp/d.yaml", head + "options: {cp_comm: hybrid}\n"));
  CHECK(dflt.options.cp_comm == CpComm::hybrid);
  CHECK(dflt.options.cp_a2a_size == 0);
  CHECK_FALSE(dflt.fixed_options.cp_a2a_size);
  CHECK(experiment_to_yaml(dflt).find("cp_a2a_size") == std::string::npos);
  const Experiment h = load_experiment(dir.write(
      "exp/h.yaml", head + "mesh: {dp: 1, tp: 1, cp: 4, pp: 1}\noptions: {cp_comm: hybrid, cp_a2a_size: 2}\n"
                           "search: {cp_comm: [hybrid, ring], cp_a2a_size: [2, 4]}\n"));
  CHECK(h.options.cp_a2a_size == 2);
  CHECK(h.fixed_options.cp_a2a_size);
  CHECK(h.search.cp_a2a_size == std::vector<int64_t>{2, 4});
  const Experiment back = parse_experiment(experiment_to_yaml(h), "<written>", "/nonexistent");
  CHECK(back.options.cp_comm == CpComm::hybrid);
  CHECK(back.options.cp_a2a_size == 2);
  CHECK(back.search.cp_a2a_size == h.search.cp_a2a_size);
  CHECK(back.search.cp_comm == std::vector<CpComm>{CpComm::hybrid, CpComm::ring});
  // Errors at the key's line, with what is valid.
  const std::string bad_div = dir.write(
      "exp/b1.yaml", head + "mesh: {dp: 1, tp: 1, cp: 4, pp: 1}\noptions:\n  cp_comm: hybrid\n  cp_a2a_size: 3\n");
  check_config_error([&] { load_experiment(bad_div); },
                     {bad_div, 8, "options.cp_a2a_size", "3 does not divide cp 4 (the CP group is cut into"});
  check_config_error([&] { load_experiment(bad_div); }, {bad_div, 8, "options.cp_a2a_size", "valid: 1, 2, 4"});
  // 8 heads, 2 KV heads, TP 1: a group of 8 splits the query heads and is a multiple of the KV heads,
  // so every divisor of cp 16 up to 8 is valid and 16 is not.
  const std::string bad_heads = dir.write(
      "exp/b2.yaml", head + "mesh: {dp: 1, tp: 1, cp: 16, pp: 1}\noptions:\n  cp_comm: hybrid\n  cp_a2a_size: 16\n");
  check_config_error([&] { load_experiment(bad_heads); },
                     {bad_heads, 8, "options.cp_a2a_size", "16 cannot split the heads per TP rank (heads 8 / tp 1 = 8"});
  check_config_error([&] { load_experiment(bad_heads); },
                     {bad_heads, 8, "options.cp_a2a_size", "valid: 1, 2, 4, 8 (the divisors of cp 16 that do)"});
  const std::string not_hybrid =
      dir.write("exp/b3.yaml", head + "options:\n  cp_comm: ring\n  cp_a2a_size: 2\n");
  check_config_error([&] { load_experiment(not_hybrid); },
                     {not_hybrid, 7, "options.cp_a2a_size", "this layout has cp_comm ring"});
  const std::string zero = dir.write("exp/b4.yaml", head + "options:\n  cp_comm: hybrid\n  cp_a2a_size: 0\n");
  check_config_error([&] { load_experiment(zero); }, {zero, 7, "options.cp_a2a_size", "positive integer"});
}

TEST_CASE("options.dp_replicate: hybrid sharding's replica count read, written back and checked against the mesh") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  const std::string head = "name: hsdp\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n"
                           "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam}\n";
  // Not given: 1, not fixed, nothing written for it.
  const Experiment dflt = load_experiment(dir.write("exp/d.yaml", head + "options: {zero_stage: 3}\n"));
  CHECK(dflt.options.dp_replicate == 1);
  CHECK_FALSE(dflt.fixed_options.dp_replicate);
  CHECK(experiment_to_yaml(dflt).find("dp_replicate") == std::string::npos);
  const Experiment h = load_experiment(
      dir.write("exp/h.yaml", head + "mesh: {dp: 4, tp: 1, cp: 1, pp: 1}\noptions: {zero_stage: 3, dp_replicate: 2}\n"
                                     "search: {dp_replicate: [1, 2, 4]}\n"));
  CHECK(h.options.dp_replicate == 2);
  CHECK(h.fixed_options.dp_replicate);
  CHECK(h.search.dp_replicate == std::vector<int64_t>{1, 2, 4});
  const Experiment back = parse_experiment(experiment_to_yaml(h), "<written>", "/nonexistent");
  CHECK(back.options.dp_replicate == 2);
  CHECK(back.fixed_options.dp_replicate);
  CHECK(back.search.dp_replicate == h.search.dp_replicate);
  // Errors at the key's line, with what is valid.
  const std::string bad_div =
      dir.write("exp/b1.yaml", head + "mesh: {dp: 4, tp: 1, cp: 1, pp: 1}\noptions:\n  zero_stage: 1\n  dp_replicate: 3\n");
  check_config_error([&] { load_experiment(bad_div); },
                     {bad_div, 8, "options.dp_replicate", "3 does not divide dp 4 (the DP ranks split into"});
  check_config_error([&] { load_experiment(bad_div); }, {bad_div, 8, "options.dp_replicate", "valid: 1, 2, 4"});
  const std::string zero0 = dir.write("exp/b2.yaml", head + "options:\n  zero_stage: 0\n  dp_replicate: 2\n");
  check_config_error([&] { load_experiment(zero0); },
                     {zero0, 7, "options.dp_replicate", "need zero_stage >= 1 (this layout has zero_stage 0"});
  const std::string nonpos = dir.write("exp/b3.yaml", head + "options:\n  dp_replicate: 0\n");
  check_config_error([&] { load_experiment(nonpos); }, {nonpos, 6, "options.dp_replicate", "positive integer"});
  const std::string bad_list = dir.write("exp/b4.yaml", head + "search:\n  dp_replicate: [2, -1]\n");
  check_config_error([&] { load_experiment(bad_list); }, {bad_list, 6, "search.dp_replicate[1]", "positive integer"});
}

TEST_CASE("options: tp_overlap pipelined with sequence_parallel false refused at the key unless the mesh has TP 1") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  const std::string head = "name: tpo\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n"
                           "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam}\n";
  const std::string opts = "options:\n  sequence_parallel: false\n  tp_overlap: pipelined\n";
  // No mesh: a plan would refuse every TP > 1 layout one by one.
  const std::string plan = dir.write("exp/p.yaml", head + opts);
  check_config_error([&] { load_experiment(plan); },
                     {plan, 7, "options.tp_overlap", "pipelined needs sequence_parallel true"});
  check_config_error([&] { load_experiment(plan); }, {plan, 7, "options.tp_overlap", "valid: sequence_parallel true"});
  const std::string tp2 = dir.write("exp/t2.yaml", head + "mesh: {dp: 2, tp: 2, cp: 1, pp: 1}\n" + opts);
  check_config_error([&] { load_experiment(tp2); }, {tp2, 8, "options.tp_overlap", "no layout with TP > 1"});
  // TP 1 has no TP collective to overlap: the pair is harmless there.
  const Experiment tp1 = load_experiment(dir.write("exp/t1.yaml", head + "mesh: {dp: 4, tp: 1, cp: 1, pp: 1}\n" + opts));
  CHECK(tp1.options.tp_overlap == TpOverlap::pipelined);
  // Sequence parallelism searched, not fixed: the planner pairs them itself.
  const Experiment searched = load_experiment(
      dir.write("exp/s.yaml", head + "options:\n  tp_overlap: pipelined\nsearch:\n  sequence_parallel: [false, true]\n"));
  CHECK(searched.options.tp_overlap == TpOverlap::pipelined);
}

TEST_CASE("training.param_gather_dtype and grad_reduce_dtype: read, written back, refused where no such tensor exists") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  const std::string head = "name: dt\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n";
  auto training = [&](const std::string& file, const std::string& extra) {
    return dir.write(file, head + "training:\n  seq_len: 4096\n  global_batch: 8\n  dtype: bf16\n  optimizer: adam\n" + extra);
  };
  const Experiment dflt = load_experiment(training("exp/d.yaml", ""));
  CHECK_FALSE(dflt.training.param_gather_dtype);
  CHECK_FALSE(dflt.training.grad_reduce_dtype);
  CHECK(experiment_to_yaml(dflt).find("gather_dtype") == std::string::npos);
  // Composer's DEFAULT: float32 parameters gathered under autocast, gradients reduced in bf16.
  const Experiment composer = load_experiment(training(
      "exp/c.yaml", "  mixed_precision: autocast\n  param_gather_dtype: fp32\n  grad_reduce_dtype: bf16\n"));
  CHECK(composer.training.param_gather_dtype == DType::fp32);
  CHECK(composer.training.grad_reduce_dtype == DType::bf16);
  const Experiment back = parse_experiment(experiment_to_yaml(composer), "<written>", "/nonexistent");
  CHECK(back.training.param_gather_dtype == DType::fp32);
  CHECK(back.training.grad_reduce_dtype == DType::bf16);
  CHECK(back.training.autocast);
  // Errors at the key's line (line 9: the key after the four training lines).
  const std::string master = training("exp/b1.yaml", "  param_gather_dtype: fp32\n");
  check_config_error([&] { load_experiment(master); },
                     {master, 9, "training.param_gather_dtype", "fp32 with mixed_precision master_weights"});
  const std::string other16 = training("exp/b2.yaml", "  grad_reduce_dtype: fp16\n");
  check_config_error([&] { load_experiment(other16); },
                     {other16, 9, "training.grad_reduce_dtype", "must be the training dtype bf16; valid: bf16, fp32"});
  const std::string fp32 = dir.write("exp/b3.yaml", head + "training:\n  seq_len: 4096\n  global_batch: 8\n  dtype: fp32\n"
                                                           "  optimizer: adam\n  grad_reduce_dtype: bf16\n");
  check_config_error([&] { load_experiment(fp32); }, {fp32, 9, "training.grad_reduce_dtype", "valid: fp32"});
  const std::string bad = training("exp/b4.yaml", "  grad_reduce_dtype: fp64\n");
  check_config_error([&] { load_experiment(bad); }, {bad, 9, "training.grad_reduce_dtype", "bf16"});
}

TEST_CASE("round trip: write_experiment then load gives the same experiment") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  Experiment e = load_experiment(dir.write("exp/full.yaml", kFullExperiment));
  std::string text = experiment_to_yaml(e);
  INFO(text);
  Experiment back = parse_experiment(text, "<written>", "/nonexistent");  // needs no other file
  check_same(e, back);
  CHECK(experiment_to_yaml(back) == text);  // writing is deterministic

  // Names that YAML would read as null, bool or number stay text.
  Experiment odd = e;
  odd.name = "yes";
  odd.model.name = "null";
  odd.cluster.name = "1e3: x";
  check_same(odd, parse_experiment(experiment_to_yaml(odd), "<written>"));

  // overlap_param_gather is written only when set, and read back as a fixed option.
  CHECK(text.find("overlap_param_gather") == std::string::npos);
  Experiment opg = e;
  opg.options.overlap_param_gather = true;
  const std::string opg_text = experiment_to_yaml(opg);
  CHECK(opg_text.find("overlap_param_gather: true") != std::string::npos);
  const Experiment opg_back = parse_experiment(opg_text, "<written>", "/nonexistent");
  CHECK(opg_back.options.overlap_param_gather);
  CHECK(opg_back.fixed_options.overlap_param_gather);
  CHECK_FALSE(back.fixed_options.overlap_param_gather);

  // Minimal experiment (no optional sections) round-trips too.
  Experiment minimal = e;
  minimal.mesh.reset();
  minimal.gpus.reset();
  minimal.search = SearchSpace{};
  minimal.published.reset();
  check_same(minimal, parse_experiment(experiment_to_yaml(minimal), "<written>"));
}

TEST_CASE("plan files: the embedded experiment loads back and other keys are the planner's") {
  TempDir dir;
  dir.write("models/m.yaml", test::kModelYaml);
  dir.write("clusters/c.yaml", test::kClusterYaml);
  Experiment e = load_experiment(dir.write("exp/full.yaml", kFullExperiment));
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "ringplan_plan" << YAML::Value << 1;
  write_plan_header(out, e);
  out << YAML::Key << "layout" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "tp" << YAML::Value << 2
      << YAML::EndMap;
  out << YAML::EndMap;
  REQUIRE(out.good());
  // A plan file (it claims `ringplan_plan`) ends with its end marker (core's check_not_cut).
  std::string plan = dir.write("out/plan.yaml", std::string(out.c_str()) + "\n" + kPlanEndMarker + "\n");
  Experiment back = load_experiment(plan);
  check_same(e, back);
  CHECK(back.path == plan);
}

TEST_CASE("find_experiments: one file or every yaml below a folder sorted") {
  TempDir dir;
  std::string b = dir.write("exps/b.yaml", "x: 1\n");
  std::string a = dir.write("exps/a.yml", "x: 1\n");
  std::string nested = dir.write("exps/sub/c.yaml", "x: 1\n");
  dir.write("exps/readme.md", "not yaml\n");
  std::vector<std::string> found = find_experiments(dir.file("exps"));
  CHECK(found == std::vector<std::string>{a, b, nested});
  CHECK(find_experiments(b) == std::vector<std::string>{b});
  CHECK_THROWS_AS(find_experiments(dir.file("nope")), ConfigError);
  std::filesystem::create_directories(dir.file("empty"));
  CHECK_THROWS_WITH_AS(find_experiments(dir.file("empty")), doctest::Contains("no .yaml or .yml files"), ConfigError);
}

TEST_CASE("cluster inter_node switch groups: optional, both keys together, written back") {
  TempDir dir;
  const ClusterConfig flat = load_cluster(dir.write("a.yaml", test::kClusterYaml));
  CHECK(flat.switch_groups.nodes == 0);
  CHECK(flat.switch_groups.is_flat());
  const ClusterConfig c = load_cluster(
      dir.write("b.yaml", test::replace(test::kClusterYaml, "  latency_us: 6\n",
                                  "  latency_us: 6\n  group_nodes: 16\n  oversubscription: 2.5\n")));
  CHECK(c.switch_groups.nodes == 16);
  CHECK(c.switch_groups.oversubscription == doctest::Approx(2.5));
  CHECK_FALSE(c.switch_groups.is_flat());
  YAML::Emitter out;
  write_cluster(out, c);
  const ClusterConfig back = load_cluster(dir.write("c.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.switch_groups == c.switch_groups);
  CHECK(back.inter_node.bandwidth_bytes_per_s == doctest::Approx(c.inter_node.bandwidth_bytes_per_s));
  // A flat network writes neither key.
  YAML::Emitter out2;
  write_cluster(out2, flat);
  CHECK(std::string(out2.c_str()).find("group_nodes") == std::string::npos);
}

TEST_CASE("training: flash_kernel standard (default), triton or fa2, read and written back, bad values refused") {
  TempDir dir;
  CHECK(load_training(dir.write("t.yaml", test::kTrainingYaml)).flash_kernel == FlashKernel::standard);
  const TrainingConfig t = load_training(dir.write("u.yaml", test::kTrainingYaml + std::string("flash_kernel: triton\n")));
  CHECK(t.flash_kernel == FlashKernel::triton);
  YAML::Emitter out;
  write_training(out, t);
  CHECK(std::string(out.c_str()).find("flash_kernel: triton") != std::string::npos);
  CHECK(load_training(dir.write("v.yaml", std::string(out.c_str()) + "\n")).flash_kernel == FlashKernel::triton);
  const TrainingConfig f = load_training(dir.write("w.yaml", test::kTrainingYaml + std::string("flash_kernel: fa2\n")));
  CHECK(f.flash_kernel == FlashKernel::fa2);
  YAML::Emitter out_fa2;
  write_training(out_fa2, f);
  CHECK(load_training(dir.write("z.yaml", std::string(out_fa2.c_str()) + "\n")).flash_kernel == FlashKernel::fa2);
  check_training_refused(dir, "x.yaml", test::kTrainingYaml + std::string("flash_kernel: cudnn\n"),
                         "must be one of: standard, triton, fa2");
}

TEST_CASE("cluster: attention_flash_fa2 read, the fa2 kernel's curve for both passes, scaled and written back") {
  TempDir dir;
  const ClusterConfig none = load_cluster(dir.write("c.yaml", test::kClusterYaml));
  CHECK(none.attention_flash_fa2.max_efficiency == 0.0);
  CHECK_FALSE(none.has_flash_curve(FlashKernel::fa2));
  CHECK(none.has_flash_curve(FlashKernel::standard));
  const std::string with = std::string(test::kClusterYaml) + "  attention_flash_fa2: {max: 0.32, half_tflop: 0.036}\n";
  const ClusterConfig c = load_cluster(dir.write("d.yaml", with));
  CHECK(c.has_flash_curve(FlashKernel::fa2));
  CHECK_FALSE(c.has_flash_curve(FlashKernel::triton));
  CHECK(&c.flash_forward_curve(FlashKernel::fa2) == &c.attention_flash_fa2);
  CHECK(&c.flash_backward_curve(FlashKernel::fa2) == &c.attention_flash_fa2);
  CHECK(std::string(flash_curve_key(FlashKernel::fa2)) == "attention_flash_fa2");
  CHECK(std::string(flash_curve_key(FlashKernel::standard)) == "attention");
  const ClusterConfig scaled =
      load_cluster(dir.write("e.yaml", with + "  training_scale: {matmul: 1, attention: 0.5}\n"));
  CHECK(scaled.attention_flash_fa2.max_efficiency == doctest::Approx(0.16));
  YAML::Emitter out;
  write_cluster(out, scaled);
  CHECK(std::string(out.c_str()).find("attention_flash_fa2: {max: 0.32, half_tflop: 0.036}") != std::string::npos);
  const ClusterConfig back = load_cluster(dir.write("f.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.attention_flash_fa2.max_efficiency == doctest::Approx(0.16));
  CHECK(back.attention_flash_fa2.half_flops == doctest::Approx(0.036 * units::tflop));
}

TEST_CASE("cluster: attention_flash_triton read, scaled with the attention family and written back") {
  TempDir dir;
  CHECK(load_cluster(dir.write("c.yaml", test::kClusterYaml)).attention_flash_triton.max_efficiency == 0.0);
  const std::string with = std::string(test::kClusterYaml) + "  attention_flash_triton: {max: 0.3, half_tflop: 0.02}\n";
  const ClusterConfig c = load_cluster(dir.write("d.yaml", with));
  CHECK(c.attention_flash_triton.max_efficiency == doctest::Approx(0.3));
  CHECK(c.attention_flash_triton.half_flops == doctest::Approx(0.02 * units::tflop));
  CHECK(&c.flash_forward_curve(FlashKernel::triton) == &c.attention_flash_triton);
  CHECK(&c.flash_backward_curve(FlashKernel::triton) == &c.attention_flash_triton);
  CHECK(&c.flash_forward_curve(FlashKernel::standard) == &c.attention);
  // The attention training scale scales it as the family's other curves, and the writer writes
  // the kernel's own value next to the scale.
  const ClusterConfig scaled =
      load_cluster(dir.write("e.yaml", with + "  training_scale: {matmul: 1, attention: 0.5}\n"));
  CHECK(scaled.attention_flash_triton.max_efficiency == doctest::Approx(0.15));
  CHECK(scaled.attention.max_efficiency == doctest::Approx(0.3));
  YAML::Emitter out;
  write_cluster(out, scaled);
  CHECK(std::string(out.c_str()).find("attention_flash_triton: {max: 0.3, half_tflop: 0.02}") != std::string::npos);
  const ClusterConfig back = load_cluster(dir.write("f.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.attention_flash_triton.max_efficiency == doctest::Approx(0.15));
  CHECK(back.attention_flash_triton.half_flops == doctest::Approx(0.02 * units::tflop));
  // A curve of the attention family: no GEMM K-ramp.
  const std::string ramp = dir.write("g.yaml", std::string(test::kClusterYaml) +
                                                   "  attention_flash_triton: {max: 0.3, half_tflop: 0.02, half_k: 9}\n");
  check_config_error([&] { load_cluster(ramp); },
                     {ramp, 17, "cluster.efficiency.attention_flash_triton.half_k", "unknown key"});
}
