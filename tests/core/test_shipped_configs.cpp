// Every shipped config under configs/ loads and round-trips; key numbers match their sources
// (the comments of each file cite them). Files are read from the source tree through the
// RINGPLAN_SOURCE_DIR compile definition.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/config_yaml.hpp"
#include "core/units.hpp"

using namespace ringplan;
namespace fs = std::filesystem;

namespace {

std::string source(const std::string& relative) { return std::string(RINGPLAN_SOURCE_DIR) + "/" + relative; }

std::vector<std::string> yaml_files(const std::string& relative_dir) { return find_experiments(source(relative_dir)); }

}  // namespace

TEST_CASE("every shipped model loads and is self-consistent") {
  std::vector<std::string> files = yaml_files("configs/models");
  CHECK(files.size() >= 9);
  for (const auto& f : files) {
    INFO(f);
    ModelConfig m = load_model(f);
    CHECK(m.name == fs::path(f).stem().string());  // file name = model name
  }
}

TEST_CASE("shipped models match their published architectures") {
  struct Row {
    const char* file;
    int64_t layers, hidden, heads, kv_heads, head_dim, ffn_hidden, vocab;
    bool gated, tied;
    double dropout;
  };
  const Row rows[] = {
      // Llama 3 paper (Dubey et al. 2024) Table 3; vocab from the released config.json; no dropout
      // (config.json attention_dropout 0.0).
      {"llama3_8b", 32, 4096, 32, 8, 128, 14336, 128256, true, false, 0.0},
      {"llama3_70b", 80, 8192, 64, 8, 128, 28672, 128256, true, false, 0.0},
      {"llama3_405b", 126, 16384, 128, 8, 128, 53248, 128256, true, false, 0.0},
      {"llama2_7b", 32, 4096, 32, 32, 128, 11008, 32000, true, false, 0.0},
      {"gpt3_175b", 96, 12288, 96, 96, 128, 49152, 50257, false, true, 0.1},
      // Korthikanti et al. 2022 Table 5 (ffn = 4h, vocab 51200, multi-head); dropout 0.1:
      // Megatron-LM's default hidden_dropout / attention_dropout (gpt3_175b: the same, see its file).
      {"megatron_22b", 48, 6144, 64, 64, 96, 4 * 6144, 51200, false, true, 0.1},
      {"megatron_175b", 96, 12288, 96, 96, 128, 4 * 12288, 51200, false, true, 0.1},
      {"megatron_530b", 105, 20480, 128, 128, 160, 4 * 20480, 51200, false, true, 0.1},
      {"megatron_1t", 128, 25600, 160, 160, 160, 4 * 25600, 51200, false, true, 0.1},
      // BLOOM layout search shapes (BigScience chronicles-prequel.md @ 9e64edec: NLAYERS, NHIDDEN,
      // NHEADS of each table; README: MLP 4h, GeLU, tied embeddings, padded vocab 250880,
      // Megatron's dropout 0.1, multi-head attention).
      {"bloom_prequel_l100_h12288_a64", 100, 12288, 64, 64, 12288/64, 4 * 12288, 250880, false, true, 0.1},
      {"bloom_prequel_l70_h14336_a64", 70, 14336, 64, 64, 14336/64, 4 * 14336, 250880, false, true, 0.1},
      {"bloom_prequel_l72_h14336_a128", 72, 14336, 128, 128, 14336/128, 4 * 14336, 250880, false, true, 0.1},
      {"bloom_prequel_l72_h14336_a64", 72, 14336, 64, 64, 14336/64, 4 * 14336, 250880, false, true, 0.1},
      {"bloom_prequel_l82_h13312_a64", 82, 13312, 64, 64, 13312/64, 4 * 13312, 250880, false, true, 0.1},
      {"bloom_prequel_l84_h13312_a64", 84, 13312, 64, 64, 13312/64, 4 * 13312, 250880, false, true, 0.1},
      {"bloom_prequel_l96_h12288_a64", 96, 12288, 64, 64, 12288/64, 4 * 12288, 250880, false, true, 0.1},
      // MosaicML llm-foundry's MPT models (scripts/train/yamls/pretrain/mpt-*.yaml @ b2a43a147: d_model,
      // n_heads, n_layers, expansion_ratio 4, vocab 50368; modeling_mpt.py: tied, GELU, no dropout).
      {"mpt_125m", 12, 768, 12, 12, 768/12, 4 * 768, 50368, false, true, 0.0},
      {"mpt_350m", 24, 1024, 16, 16, 1024/16, 4 * 1024, 50368, false, true, 0.0},
      {"mpt_760m", 24, 1536, 12, 12, 1536/12, 4 * 1536, 50368, false, true, 0.0},
      {"mpt_1b", 24, 2048, 16, 16, 2048/16, 4 * 2048, 50368, false, true, 0.0},
      {"mpt_3b", 32, 2560, 20, 20, 2560/20, 4 * 2560, 50368, false, true, 0.0},
      {"mpt_7b", 32, 4096, 32, 32, 4096/32, 4 * 4096, 50368, false, true, 0.0},
      {"mpt_13b", 40, 5120, 40, 40, 5120/40, 4 * 5120, 50368, false, true, 0.0},
      {"mpt_30b", 48, 7168, 56, 56, 7168/56, 4 * 7168, 50368, false, true, 0.0},
      {"mpt_70b", 80, 8192, 64, 64, 8192/64, 4 * 8192, 50368, false, true, 0.0},
  };
  for (const Row& r : rows) {
    INFO(r.file);
    ModelConfig m = load_model(source(std::string("configs/models/") + r.file + ".yaml"));
    CHECK(m.layers == r.layers);
    CHECK(m.hidden == r.hidden);
    CHECK(m.heads == r.heads);
    CHECK(m.kv_heads == r.kv_heads);
    CHECK(m.head_dim == r.head_dim);
    CHECK(m.heads * m.head_dim == m.hidden);  // true of every shipped model
    CHECK(m.ffn_hidden == r.ffn_hidden);
    CHECK(m.vocab == r.vocab);
    CHECK(m.gated_mlp == r.gated);
    CHECK(m.tied_embeddings == r.tied);
    CHECK(m.dropout == r.dropout);
  }
}

TEST_CASE("every shipped cluster loads and datasheet peaks and links are as cited") {
  std::vector<std::string> files = yaml_files("configs/clusters");
  CHECK(files.size() >= 5);
  for (const auto& f : files) {
    INFO(f);
    ClusterConfig c = load_cluster(f);
    CHECK(c.name == fs::path(f).stem().string());
    CHECK(c.peak_flops_per_s_bf16 >= c.peak_flops_per_s_fp32);
    CHECK(c.intra_node.bandwidth_bytes_per_s >= c.inter_node.bandwidth_bytes_per_s);
    // Every shipped profile states its streaming fraction explicitly (an estimate, see the files).
    CHECK(c.memory_bandwidth_efficiency > 0.5);
    CHECK(c.memory_bandwidth_efficiency <= 1.0);
  }
  ClusterConfig a100 = load_cluster(source("configs/clusters/dgx_a100_80gb.yaml"));
  CHECK(a100.peak_flops_per_s_bf16 == doctest::Approx(312e12));
  CHECK(a100.intra_node.bandwidth_bytes_per_s == doctest::Approx(300e9));
  CHECK(a100.inter_node.bandwidth_bytes_per_s == doctest::Approx(25e9));  // 8 x 200 Gb/s per 8 GPUs
  // The 40GB A100 differs only in memory (40 GB HBM2 at 1,555 GB/s, datasheet).
  ClusterConfig a100_40 = load_cluster(source("configs/clusters/dgx_a100_40gb.yaml"));
  CHECK(a100_40.memory_bytes == doctest::Approx(40.0 * 1024 * 1024 * 1024));
  CHECK(a100_40.memory_bandwidth_bytes_per_s == doctest::Approx(1555e9));
  CHECK(a100_40.peak_flops_per_s_bf16 == a100.peak_flops_per_s_bf16);
  CHECK(a100_40.intra_node.bandwidth_bytes_per_s == a100.intra_node.bandwidth_bytes_per_s);
  CHECK(a100_40.inter_node.bandwidth_bytes_per_s == a100.inter_node.bandwidth_bytes_per_s);
  CHECK(a100_40.matmul.max_efficiency == a100.matmul.max_efficiency);
  CHECK(a100_40.attention.max_efficiency == a100.attention.max_efficiency);
  ClusterConfig h100 = load_cluster(source("configs/clusters/dgx_h100.yaml"));
  CHECK(h100.peak_flops_per_s_bf16 == doctest::Approx(989e12));
  CHECK(h100.memory_bandwidth_bytes_per_s == doctest::Approx(3.35e12));
  CHECK(h100.intra_node.bandwidth_bytes_per_s == doctest::Approx(450e9));
  CHECK(h100.inter_node.bandwidth_bytes_per_s == doctest::Approx(50e9));  // 8 x 400 Gb/s per 8 GPUs
  ClusterConfig h200 = load_cluster(source("configs/clusters/h200.yaml"));
  CHECK(h200.memory_bandwidth_bytes_per_s == doctest::Approx(4.8e12));
  CHECK(h200.memory_bytes > h100.memory_bytes);
  ClusterConfig b200 = load_cluster(source("configs/clusters/b200.yaml"));
  CHECK(b200.peak_flops_per_s_bf16 == doctest::Approx(2250e12));
  CHECK(b200.intra_node.bandwidth_bytes_per_s == doctest::Approx(900e9));
}

TEST_CASE("every shipped experiment loads and round-trips through the writer") {
  std::vector<std::string> files = yaml_files("configs/experiments");
  // configs/validation/ holds experiments in the same format (written by the cost-model work).
  if (fs::exists(source("configs/validation"))) {
    for (const auto& f : yaml_files("configs/validation")) files.push_back(f);
  }
  CHECK(files.size() >= 3);
  for (const auto& f : files) {
    INFO(f);
    Experiment e = load_experiment(f);
    Experiment back = parse_experiment(experiment_to_yaml(e), "<written>");
    CHECK(back.name == e.name);
    CHECK(back.model.hidden == e.model.hidden);
    CHECK(back.model.dropout == e.model.dropout);
    CHECK(back.cluster.memory_bandwidth_efficiency == e.cluster.memory_bandwidth_efficiency);
    CHECK(back.cluster.peak_flops_per_s_bf16 == doctest::Approx(e.cluster.peak_flops_per_s_bf16).epsilon(1e-12));
    CHECK(back.training.global_batch_sequences == e.training.global_batch_sequences);
    CHECK(back.mesh == e.mesh);
    CHECK(back.options == e.options);
    CHECK(back.gpus == e.gpus);
    CHECK(experiment_to_yaml(back) == experiment_to_yaml(e));
  }
}

TEST_CASE("the shipped default and 405B and CPU experiments are what the README promises") {
  Experiment d = load_experiment(source("configs/experiments/default.yaml"));
  CHECK(d.model.name == "llama3_8b");
  CHECK(d.cluster.name == "dgx_h100");
  CHECK(d.gpus == 64);
  CHECK(d.training.seq_len == 131072);
  CHECK_FALSE(d.mesh.has_value());  // the planner searches
  CHECK(d.search.cp_scheme.size() == 3);

  Experiment big = load_experiment(source("configs/experiments/llama3_405b_128k.yaml"));
  CHECK(big.model.name == "llama3_405b");
  CHECK(big.gpus == 16384);
  CHECK(big.training.seq_len == 131072);
  CHECK(big.training.global_batch_sequences * big.training.seq_len == 16 * 1024 * 1024);  // 16M tokens

  Experiment cpu = load_experiment(source("configs/experiments/cpu_small.yaml"));
  CHECK(cpu.cluster.name == "local_cpu");
  CHECK(cpu.model.layers == 2);
  CHECK(cpu.model.hidden == 256);
  CHECK(cpu.model.heads == 8);
  CHECK(cpu.model.kv_heads == 2);
  CHECK(cpu.model.head_dim == 32);
  // The demo job (scripts/demo.sh): 2 MPI ranks, one 4096-token sequence, so the planner's
  // only choice is the CP scheme of a 2-rank ring.
  CHECK(cpu.gpus == 2);
  CHECK(cpu.training.seq_len == 4096);
  CHECK(cpu.training.global_batch_sequences == 1);
  CHECK(cpu.search.cp_scheme.size() == 3);
  CHECK(cpu.training.dtype == DType::fp32);

  // The CPU ring: a fixed mesh of 4 CP ranks whose zigzag sharding divides the sequence.
  Experiment ring = load_experiment(source("configs/experiments/cpu_small_cp4.yaml"));
  REQUIRE(ring.mesh.has_value());
  CHECK(*ring.mesh == Mesh{1, 1, 4, 1});
  CHECK(ring.gpus == 4);
  CHECK(ring.options.cp_scheme == CpScheme::zigzag);
  CHECK(ring.training.seq_len % (2 * ring.mesh->cp) == 0);
  CHECK(ring.model.name == cpu.model.name);
}

TEST_CASE("the example experiment of configs/README.md is valid") {
  std::ifstream in(source("configs/README.md"));
  REQUIRE(in.good());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string open = "```yaml\n";
  auto begin = text.find(open);
  REQUIRE(begin != std::string::npos);
  begin += open.size();
  auto end = text.find("```", begin);
  REQUIRE(end != std::string::npos);
  // Its references are written from a sibling folder of configs/models (configs/validation/).
  Experiment e = parse_experiment(text.substr(begin, end - begin), "configs/README.md", source("configs/experiments"));
  CHECK(e.model.name == "megatron_22b");
  CHECK(e.gpus == 8);
  REQUIRE(e.mesh.has_value());
  CHECK(e.mesh->tp == 8);
  REQUIRE(e.published.has_value());
  CHECK(e.published->step_time_s == 1.10);
}
