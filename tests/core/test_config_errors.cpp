// Every kind of bad input gives a ConfigError naming the right file, line and field, and saying
// what would be valid. Each case edits one line of a valid file (test_helpers.hpp).
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "core/config_yaml.hpp"
#include "tests/core/test_helpers.hpp"

using namespace ringplan;
using ringplan::test::check_config_error;
using ringplan::test::replace;
using ringplan::test::TempDir;

namespace {

// An experiment folder: models/m.yaml, clusters/c.yaml, exp/e.yaml referencing both.
struct ExperimentFiles {
  TempDir dir;
  std::string model, cluster;
  ExperimentFiles(const std::string& model_yaml = test::kModelYaml,
                  const std::string& cluster_yaml = test::kClusterYaml)
      : model(dir.write("models/m.yaml", model_yaml)), cluster(dir.write("clusters/c.yaml", cluster_yaml)) {}
  // Writes exp/e.yaml: name, model and cluster references (lines 1-3), then `rest` from line 4.
  std::string experiment(const std::string& rest, const std::string& training =
                                                      "training: {seq_len: 4096, global_batch: 8, dtype: bf16, "
                                                      "optimizer: adam}\n") const {
    return dir.write("exp/e.yaml", "name: e\nmodel: ../models/m.yaml\ncluster: ../clusters/c.yaml\n" + training + rest);
  }
};

}  // namespace

TEST_CASE("syntax error names file and line") {
  TempDir dir;
  std::string f = dir.write("m.yaml", replace(test::kModelYaml, "heads: 8\n", "heads: [8, 4\n"));
  check_config_error([&] { load_model(f); }, {f, 5, "", "YAML syntax error"});
}

TEST_CASE("what is not a regular file of sane size is refused before it is read") {
  TempDir dir;
  // A FIFO would block the reader forever; a device like /dev/zero never ends.
  const std::string fifo = dir.file("fifo.yaml");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  check_config_error([&] { load_model(fifo); }, {fifo, 0, "", "is not a regular file"});
  check_config_error([&] { load_model("/dev/zero"); }, {"/dev/zero", 0, "", "is not a regular file"});
  // 65 MiB (sparse): more than any input of ringplan, so a wrong path, not read into memory.
  const std::string big = dir.write("big.yaml", "name: m\n");
  std::filesystem::resize_file(big, std::uintmax_t{65} << 20);
  check_config_error([&] { load_model(big); }, {big, 0, "", "more than the 64 MiB"});
}

TEST_CASE("a second YAML document is an error and never silently dropped") {
  TempDir dir;
  std::string f = dir.write("m.yaml", std::string(test::kModelYaml) + "---\nname: other\n");
  check_config_error([&] { load_model(f); }, {f, 11, "", "holds 2 YAML documents"});
}

TEST_CASE("unknown key suggests the closest valid key") {
  TempDir dir;
  std::string f = dir.write("m.yaml", replace(test::kModelYaml, "hidden: 512", "hiden: 512"));
  check_config_error([&] { load_model(f); }, {f, 3, "model.hiden", "did you mean 'hidden'?"});
  // The list of valid keys is part of the message.
  check_config_error([&] { load_model(f); }, {f, 3, "model.hiden", "valid keys: name, layers, hidden"});
}

TEST_CASE("unknown nested key names the full field path") {
  TempDir dir;
  std::string f = dir.write("c.yaml", replace(test::kClusterYaml, "  latency_us: 6", "  latency_ms: 6"));
  check_config_error([&] { load_cluster(f); }, {f, 13, "cluster.inter_node.latency_ms", "did you mean 'latency_us'?"});
}

TEST_CASE("half_k belongs to the GEMM curves: under attention it is an unknown key, negative is out of range") {
  TempDir dir;
  const std::string attn = dir.write("a.yaml", replace(test::kClusterYaml, "  attention: {max: 0.6, half_tflop: 0.05}",
                                                       "  attention: {max: 0.6, half_tflop: 0.05, half_k: 64}"));
  check_config_error([&] { load_cluster(attn); }, {attn, 16, "cluster.efficiency.attention.half_k", "unknown key"});
  const std::string neg = dir.write("b.yaml", replace(test::kClusterYaml, "  matmul: {max: 0.8, half_tflop: 0.025}",
                                                      "  matmul: {max: 0.8, half_tflop: 0.025, half_k: -1}"));
  check_config_error([&] { load_cluster(neg); }, {neg, 15, "cluster.efficiency.matmul.half_k", "elements of K"});
}

TEST_CASE("cluster inter_node switch groups: one key without the other, or a ratio below 1, is refused at its line") {
  TempDir dir;
  const std::string lone = dir.write("a.yaml", replace(test::kClusterYaml, "  latency_us: 6\n", "  latency_us: 6\n  group_nodes: 16\n"));
  check_config_error([&] { load_cluster(lone); }, {lone, 14, "cluster.inter_node.group_nodes", "set both, or neither"});
  const std::string ratio = dir.write(
      "b.yaml", replace(test::kClusterYaml, "  latency_us: 6\n", "  latency_us: 6\n  group_nodes: 16\n  oversubscription: 0.5\n"));
  check_config_error([&] { load_cluster(ratio); }, {ratio, 15, "cluster.inter_node.oversubscription", "[1, 1000]"});
  const std::string zero = dir.write(
      "c.yaml", replace(test::kClusterYaml, "  latency_us: 6\n", "  latency_us: 6\n  group_nodes: 0\n  oversubscription: 2\n"));
  check_config_error([&] { load_cluster(zero); }, {zero, 14, "cluster.inter_node.group_nodes", ""});
  // Switch groups describe the network between nodes, not NVLink inside one.
  const std::string intra = dir.write("d.yaml", replace(test::kClusterYaml, "  latency_us: 3\n", "  latency_us: 3\n  group_nodes: 4\n"));
  check_config_error([&] { load_cluster(intra); }, {intra, 11, "cluster.intra_node.group_nodes", "unknown key"});
}

TEST_CASE("duplicate key is rejected") {
  TempDir dir;
  std::string f = dir.write("m.yaml", std::string(test::kModelYaml) + "layers: 8\n");
  check_config_error([&] { load_model(f); }, {f, 10, "model.layers", "duplicate key"});
}

TEST_CASE("missing required field points at its mapping") {
  TempDir dir;
  std::string f = dir.write("m.yaml", replace(test::kModelYaml, "ffn_hidden: 1536\n", ""));
  check_config_error([&] { load_model(f); }, {f, 1, "model.ffn_hidden", "missing required key 'ffn_hidden'"});
  std::string c = dir.write("c.yaml", replace(test::kClusterYaml, "  bandwidth_gbps: 450\n", ""));
  check_config_error([&] { load_cluster(c); }, {c, 9, "cluster.intra_node.bandwidth_gbps", "missing required key"});
}

TEST_CASE("a key without a value is an error and never a default") {
  TempDir dir;
  std::string f = dir.write("m.yaml", replace(test::kModelYaml, "layers: 4", "layers:"));
  check_config_error([&] { load_model(f); }, {f, 2, "model.layers", "has no value"});
}

TEST_CASE("wrong types are named") {
  TempDir dir;
  std::string f = dir.write("a.yaml", replace(test::kModelYaml, "layers: 4", "layers: four"));
  check_config_error([&] { load_model(f); }, {f, 2, "model.layers", "expected an integer, got 'four'"});
  f = dir.write("b.yaml", replace(test::kModelYaml, "layers: 4", "layers: 4.5"));
  check_config_error([&] { load_model(f); }, {f, 2, "model.layers", "expected an integer, got '4.5'"});
  f = dir.write("c.yaml", replace(test::kModelYaml, "layers: 4", "layers: \"4\""));
  check_config_error([&] { load_model(f); }, {f, 2, "model.layers", "quoted text"});
  f = dir.write("d.yaml", replace(test::kModelYaml, "gated_mlp: true", "gated_mlp: 2"));
  check_config_error([&] { load_model(f); }, {f, 8, "model.gated_mlp", "expected true or false"});
  f = dir.write("e.yaml", replace(test::kModelYaml, "layers: 4", "layers: [4]"));
  check_config_error([&] { load_model(f); }, {f, 2, "model.layers", "expected an integer, got a list"});
  std::string c = dir.write("f.yaml", replace(test::kClusterYaml, "memory_gib: 80", "memory_gib: lots"));
  check_config_error([&] { load_cluster(c); }, {c, 3, "cluster.memory_gib", "expected a number"});
  c = dir.write("g.yaml", replace(test::kClusterYaml, "memory_gib: 80", "memory_gib: .inf"));
  check_config_error([&] { load_cluster(c); }, {c, 3, "cluster.memory_gib", "finite"});
  c = dir.write("h.yaml", replace(test::kClusterYaml, "intra_node:\n  bandwidth_gbps: 450\n  latency_us: 3\n",
                                  "intra_node: 450\n"));
  check_config_error([&] { load_cluster(c); },
                     {c, 8, "cluster.intra_node", "expected a mapping with keys {bandwidth_gbps, latency_us}"});
}

TEST_CASE("non-positive values are rejected with the valid range") {
  TempDir dir;
  std::string f = dir.write("a.yaml", replace(test::kModelYaml, "heads: 8", "heads: 0"));
  check_config_error([&] { load_model(f); }, {f, 4, "model.heads", "must be a positive integer (> 0), got 0"});
  f = dir.write("b.yaml", replace(test::kModelYaml, "vocab: 32000", "vocab: -5"));
  check_config_error([&] { load_model(f); }, {f, 9, "model.vocab", "got -5"});
  std::string c = dir.write("c.yaml", replace(test::kClusterYaml, "  bandwidth_gbps: 450", "  bandwidth_gbps: -1"));
  check_config_error([&] { load_cluster(c); }, {c, 9, "cluster.intra_node.bandwidth_gbps", "got -1; valid range [1e-06, 1000000000] GB/s"});
  c = dir.write("d.yaml", replace(test::kClusterYaml, "fp32: 67", "fp32: 0"));
  check_config_error([&] { load_cluster(c); }, {c, 2, "cluster.peak_tflops.fp32", "must be >= 1e-06, got 0"});
  c = dir.write("e.yaml", replace(test::kClusterYaml, "  latency_us: 3", "  latency_us: -3"));
  check_config_error([&] { load_cluster(c); }, {c, 10, "cluster.intra_node.latency_us", "must be >= 0"});
  std::string t = dir.write("t.yaml", replace(test::kTrainingYaml, "seq_len: 4096", "seq_len: 0"));
  check_config_error([&] { load_training(t); }, {t, 1, "training.seq_len", "must be a positive integer"});
}

TEST_CASE("cluster consistency: efficiency max at most 1 and reserved memory below capacity") {
  TempDir dir;
  std::string c = dir.write("a.yaml", replace(test::kClusterYaml, "max: 0.8", "max: 1.5"));
  check_config_error([&] { load_cluster(c); }, {c, 15, "cluster.efficiency.matmul.max", "in [1e-06, 1], got 1.5"});
  c = dir.write("b.yaml", replace(test::kClusterYaml, "memory_reserved_gib: 2", "memory_reserved_gib: 80"));
  check_config_error([&] { load_cluster(c); }, {c, 4, "cluster.memory_reserved_gib", "less than memory_gib (80)"});
}

TEST_CASE("cluster efficiency.masked_tiles: loaded when valid, refused at its line otherwise") {
  TempDir dir;
  const std::string ok = std::string(test::kClusterYaml) + "  masked_tiles: {tile: 128, forward: 1.85, backward: 1.05}\n";
  const ClusterConfig c = load_cluster(dir.write("ok.yaml", ok));
  CHECK(c.masked_tiles.tile == 128);
  CHECK(c.masked_tiles.forward == 1.85);
  CHECK(c.masked_tiles.backward == 1.05);
  CHECK(load_cluster(dir.write("none.yaml", test::kClusterYaml)).masked_tiles.is_exact());
  std::string f = dir.write("a.yaml", replace(ok, "tile: 128", "tile: 0"));
  check_config_error([&] { load_cluster(f); }, {f, 17, "cluster.efficiency.masked_tiles.tile", "must be a positive integer"});
  f = dir.write("b.yaml", replace(ok, "forward: 1.85", "forward: 0.2"));
  check_config_error([&] { load_cluster(f); },
                     {f, 17, "cluster.efficiency.masked_tiles.forward", "a diagonal tile's cost over a full tile's"});
  f = dir.write("c.yaml", replace(ok, "backward: 1.05", "backwards: 1.05"));
  check_config_error([&] { load_cluster(f); }, {f, 17, "cluster.efficiency.masked_tiles.backwards", "did you mean 'backward'"});
}

TEST_CASE("model dropout below 0 or at least 1 is rejected at its line") {
  TempDir dir;
  std::string f = dir.write("a.yaml", std::string(test::kModelYaml) + "dropout: 1.5\n");
  check_config_error([&] { load_model(f); }, {f, 10, "model.dropout", "must be a probability (0.1 for 10%, 0 for none) in [0, 1)"});
  f = dir.write("b.yaml", std::string(test::kModelYaml) + "dropout: 1\n");
  check_config_error([&] { load_model(f); }, {f, 10, "model.dropout", "got 1"});
  f = dir.write("c.yaml", std::string(test::kModelYaml) + "dropout: -0.1\n");
  check_config_error([&] { load_model(f); }, {f, 10, "model.dropout", "got -0.1"});
  f = dir.write("d.yaml", std::string(test::kModelYaml) + "dropout: \"0.1\"\n");
  check_config_error([&] { load_model(f); }, {f, 10, "model.dropout", "expected a number"});
  f = dir.write("e.yaml", std::string(test::kModelYaml) + "droput: 0.1\n");
  check_config_error([&] { load_model(f); }, {f, 10, "model.droput", "did you mean 'dropout'?"});
}

TEST_CASE("cluster efficiency.memory_bandwidth at most 0 or above 1 is rejected at its line") {
  TempDir dir;
  for (const char* bad : {"0", "1.2", "-0.5"}) {
    std::string c = dir.write(std::string("m") + bad + ".yaml",
                              std::string(test::kClusterYaml) + "  memory_bandwidth: " + bad + "\n");
    check_config_error([&] { load_cluster(c); },
                       {c, 17, "cluster.efficiency.memory_bandwidth", std::string("in [1e-06, 1], got ") + bad});
  }
  std::string c = dir.write("n.yaml", std::string(test::kClusterYaml) + "  memory_bandwidth: {max: 0.8}\n");
  check_config_error([&] { load_cluster(c); }, {c, 17, "cluster.efficiency.memory_bandwidth", "expected a number"});
}

TEST_CASE("attention heads: kv_heads must divide heads and not exceed it") {
  TempDir dir;
  std::string f = dir.write("a.yaml", replace(test::kModelYaml, "kv_heads: 2", "kv_heads: 3"));
  check_config_error([&] { load_model(f); }, {f, 5, "model.kv_heads", "heads (8) must be a multiple of kv_heads (3)"});
  f = dir.write("b.yaml", replace(test::kModelYaml, "kv_heads: 2", "kv_heads: 16"));
  check_config_error([&] { load_model(f); }, {f, 5, "model.kv_heads", "must be <= heads (8), got 16"});
}

TEST_CASE("enum values list the valid names") {
  TempDir dir;
  std::string t = dir.write("a.yaml", replace(test::kTrainingYaml, "dtype: bf16", "dtype: bf32"));
  check_config_error(
      [&] { load_training(t); },
      {t, 3, "training.dtype", "'bf32' is not valid (did you mean 'bf16'?); must be one of: bf16, fp16, fp32"});
  t = dir.write("b.yaml", replace(test::kTrainingYaml, "optimizer: adam", "optimizer: lion"));
  check_config_error([&] { load_training(t); }, {t, 4, "training.optimizer", "must be one of: adam, sgd"});
}

TEST_CASE("global batch: exactly one form and tokens divisible by seq_len") {
  TempDir dir;
  std::string t = dir.write("a.yaml", replace(test::kTrainingYaml, "global_batch: 8", "global_batch_tokens: 10000"));
  check_config_error([&] { load_training(t); },
                     {t, 2, "training.global_batch_tokens",
                      "10000 is not a multiple of seq_len 4096; use a multiple such as 8192 or 12288"});
  t = dir.write("b.yaml", replace(test::kTrainingYaml, "global_batch: 8\n", ""));
  check_config_error([&] { load_training(t); },
                     {t, 1, "training.global_batch", "global_batch (sequences) or global_batch_tokens"});
  t = dir.write("c.yaml", std::string(test::kTrainingYaml) + "global_batch_tokens: 32768\n");
  check_config_error([&] { load_training(t); }, {t, 5, "training.global_batch_tokens", "not both"});
}

TEST_CASE("missing and empty files are named") {
  TempDir dir;
  check_config_error([&] { load_model(dir.file("nope.yaml")); }, {dir.file("nope.yaml"), 0, "", "file not found"});
  std::string f = dir.write("empty.yaml", "# only a comment\n");
  check_config_error([&] { load_model(f); }, {f, 0, "", "file is empty"});
  f = dir.write("list.yaml", "- 1\n- 2\n");
  check_config_error([&] { load_model(f); }, {f, 1, "model", "expected a mapping"});
  check_config_error([&] { load_experiment(dir.path.string()); }, {dir.path.string(), 0, "", "is a folder"});
}

TEST_CASE("a referenced file that does not exist is reported in the experiment file") {
  ExperimentFiles files;
  std::string e = files.dir.write("exp/e.yaml",
                                  "name: e\nmodel: ../models/missing.yaml\ncluster: ../clusters/c.yaml\n"
                                  "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam}\n");
  check_config_error([&] { load_experiment(e); },
                     {e, 2, "model", "referenced file '../models/missing.yaml' not found"});
}

TEST_CASE("errors inside a referenced file name that file") {
  ExperimentFiles files(replace(test::kModelYaml, "head_dim: 64", "head_dim: -64"));
  std::string e = files.experiment("");
  check_config_error([&] { load_experiment(e); }, {files.model, 6, "model.head_dim", "got -64"});
  ExperimentFiles files2(test::kModelYaml, replace(test::kClusterYaml, "nodes: 2", "nodez: 2"));
  e = files2.experiment("");
  check_config_error([&] { load_experiment(e); }, {files2.cluster, 7, "cluster.nodez", "did you mean 'nodes'?"});
}

TEST_CASE("errors inside an inline block name the experiment file and the full path") {
  ExperimentFiles files;
  std::string e =
      files.experiment("", "training:\n  seq_len: 4096\n  global_batch: 8\n  dtype: fp8\n  optimizer: adam\n");
  check_config_error([&] { load_experiment(e); }, {e, 7, "training.dtype", "must be one of: bf16, fp16, fp32"});
}

TEST_CASE("experiment sections: mesh and options and search and published") {
  ExperimentFiles files;
  std::string e = files.experiment("gpus: 16\nmesh: {dp: 2, tp: 4}\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "mesh", "= 8 must equal gpus (16)"});
  e = files.experiment("mesh: {dp: 2, tpp: 4}\n");
  check_config_error([&] { load_experiment(e); }, {e, 5, "mesh.tpp", "did you mean 'tp'?"});
  e = files.experiment("options:\n  zero_stage: 4\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "options.zero_stage", "0, 1, 2 or 3, got 4"});
  e = files.experiment("options:\n  cp_scheme: zig-zag\n");
  check_config_error(
      [&] { load_experiment(e); },
      {e, 6, "options.cp_scheme", "did you mean 'zigzag'?); must be one of: contiguous, zigzag, striped"});
  e = files.experiment("search:\n  cp_scheme: [zigzag,\n    ring]\n");
  check_config_error([&] { load_experiment(e); }, {e, 7, "search.cp_scheme[1]", "'ring' is not valid"});
  e = files.experiment("options:\n  cp_comm: p2p\n");
  check_config_error([&] { load_experiment(e); },
                     {e, 6, "options.cp_comm", "'p2p' is not valid"});
  check_config_error([&] { load_experiment(e); }, {e, 6, "options.cp_comm", "must be one of: ring, allgather"});
  e = files.experiment("options:\n  tp_overlap: async\n");
  check_config_error([&] { load_experiment(e); },
                     {e, 6, "options.tp_overlap", "must be one of: none, backward, pipelined"});
  e = files.experiment("search:\n  cp_comm: [ring,\n    all_gather]\n");
  check_config_error([&] { load_experiment(e); },
                     {e, 7, "search.cp_comm[1]", "must be one of: ring, allgather"});
  e = files.experiment("search:\n  micro_batch: []\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "search.micro_batch", "must not be an empty list"});
  // A repeated value is refused: the planner would search and rank every such layout twice.
  e = files.experiment("search:\n  micro_batch: [1, 2, 1]\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "search.micro_batch", "item 2 repeats item 0"});
  e = files.experiment("search:\n  recompute: [none, none]\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "search.recompute", "list each value once"});
  e = files.experiment("search:\n  micro_batch: 2\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "search.micro_batch", "expected a list"});
  e = files.experiment("search:\n  zero_stage: [0, 1, 5]\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "search.zero_stage[2]", "got 5"});
  e = files.experiment("published:\n  mfu: 0.38\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "published.source", "missing required key 'source'"});
  e = files.experiment("published:\n  mfu: 38\n  source: paper\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "published.mfu", "in [1e-06, 1], got 38"});
  e = files.experiment("published:\n  source: paper\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "published", "at least one of"});
  e = files.experiment("model_file: x\n");
  check_config_error([&] { load_experiment(e); }, {e, 5, "model_file", "valid keys: name, model, cluster"});
}

TEST_CASE("a plan file's embedded experiment reports the embedded field path") {
  TempDir dir;
  std::string p = dir.write("plan.yaml", "plan: {rank: 1}\nexperiment:\n  name: x\n  model: [5]\n");
  check_config_error([&] { load_experiment(p); }, {p, 4, "experiment.model", "expected a file path"});
}

TEST_CASE("counts are bounded so that derived sizes fit int64: refused at their line with the limit") {
  TempDir dir;
  // gpus_per_node x nodes would wrap to 4 GPUs in int64 (4355693533221597513 x 2532977338045449188).
  std::string c = dir.write("a.yaml", replace(test::kClusterYaml, "gpus_per_node: 8", "gpus_per_node: 4355693533221597513"));
  check_config_error([&] { load_cluster(c); },
                     {c, 6, "cluster.gpus_per_node", "must be at most 1048576 (ringplan's limit on GPU counts"});
  c = dir.write("b.yaml", replace(test::kClusterYaml, "nodes: 2", "nodes: 2532977338045449188"));
  check_config_error([&] { load_cluster(c); }, {c, 7, "cluster.nodes", "valid: 1 .. 1048576"});
  // Each within the limit, the product not.
  c = dir.write("c.yaml", replace(replace(test::kClusterYaml, "gpus_per_node: 8", "gpus_per_node: 1024"),
                                  "nodes: 2", "nodes: 2048"));
  check_config_error([&] { load_cluster(c); }, {c, 7, "cluster.nodes", "1024 x 2048 = 2097152 GPUs; at most 1048576"});
  std::string m = dir.write("m.yaml", replace(test::kModelYaml, "hidden: 512", "hidden: 9223372036854775807"));
  check_config_error([&] { load_model(m); }, {m, 3, "model.hidden", "must be at most 2147483648 (2^31"});
  std::string t = dir.write("t.yaml", replace(test::kTrainingYaml, "seq_len: 4096", "seq_len: 4294967296"));
  check_config_error([&] { load_training(t); }, {t, 1, "training.seq_len", "valid: 1 .. 2147483648"});
}

TEST_CASE("a mesh beyond the GPU limit is refused, not wrapped") {
  ExperimentFiles files;
  // dp x cp = 4611686018427387905 x 4 wraps to 4 in int64 and would have matched gpus: 4.
  std::string e = files.experiment("gpus: 4\nmesh: {dp: 4611686018427387905, cp: 4}\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "mesh.dp", "must be at most 1048576"});
  e = files.experiment("mesh: {dp: 1024, tp: 8, cp: 8, pp: 32}\n");
  check_config_error([&] { load_experiment(e); }, {e, 5, "mesh", "dp*tp*cp*pp = 1024*8*8*32 exceeds 1048576 GPUs"});
  e = files.experiment("gpus: 9223372036854775807\n");
  check_config_error([&] { load_experiment(e); }, {e, 5, "gpus", "must be at most 1048576"});
  e = files.experiment("options:\n  micro_batch: 4294967296\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "options.micro_batch", "valid: 1 .. 2147483648"});
  e = files.experiment("search:\n  micro_batch: [1, 4294967296]\n");
  check_config_error([&] { load_experiment(e); }, {e, 6, "search.micro_batch[1]", "valid: 1 .. 2147483648"});
  e = files.experiment("", "training: {seq_len: 2, global_batch_tokens: 4611686018427387904, dtype: bf16, "
                           "optimizer: adam}\n");
  check_config_error([&] { load_experiment(e); }, {e, 4, "training.global_batch_tokens", "at most 2147483648 sequences"});
}

TEST_CASE("reals are finite and in a stated range: 1e308 never becomes inf downstream") {
  TempDir dir;
  std::string c = dir.write("a.yaml", replace(test::kClusterYaml, "memory_gib: 80", "memory_gib: 1e308"));
  check_config_error([&] { load_cluster(c); },
                     {c, 3, "cluster.memory_gib", "must be <= 1000000, got 1e+308; valid range [1e-06, 1000000] GiB"});
  c = dir.write("b.yaml", replace(test::kClusterYaml, "half_tflop: 0.05", "half_tflop: 1e308"));
  check_config_error([&] { load_cluster(c); }, {c, 16, "cluster.efficiency.attention.half_tflop", "valid range [0, "});
  c = dir.write("c.yaml", replace(test::kClusterYaml, "bf16: 989", "bf16: 1e-300"));
  check_config_error([&] { load_cluster(c); }, {c, 2, "cluster.peak_tflops.bf16", "must be >= 1e-06, got 1e-300"});
  c = dir.write("d.yaml", replace(test::kClusterYaml, "  latency_us: 3", "  latency_us: 1e300"));
  check_config_error([&] { load_cluster(c); }, {c, 10, "cluster.intra_node.latency_us", "us"});
}

TEST_CASE("a fixed mesh that does not fit the model or the training setup names file, line, field and valid values") {
  ExperimentFiles files;  // model: heads 8, kv_heads 2, ffn_hidden 1536, layers 4; seq_len 4096, global_batch 8
  // Block mesh: each dimension on its own line (5 = mesh:, 6 = tp, 7 = cp, 8 = pp, 9 = dp).
  auto block = [&](const std::string& tp, const std::string& cp, const std::string& pp, const std::string& dp,
                   const std::string& extra = "") {
    return files.experiment("mesh:\n  tp: " + tp + "\n  cp: " + cp + "\n  pp: " + pp + "\n  dp: " + dp + "\n" + extra);
  };
  std::string e = block("3", "1", "1", "1");
  check_config_error([&] { load_experiment(e); },
                     {e, 6, "mesh.tp", "3 does not divide heads 8 of model 'm'; valid: 1, 2 (the divisors of heads 8, "
                                       "kv_heads 2 and ffn_hidden 1536)"});
  e = block("4", "1", "1", "1");  // divides heads 8 but not kv_heads 2
  check_config_error([&] { load_experiment(e); }, {e, 6, "mesh.tp", "4 does not divide kv_heads 2"});
  // Zigzag (the default scheme) cuts the sequence into 2*cp chunks.
  e = block("1", "3", "1", "1");
  check_config_error([&] { load_experiment(e); },
                     {e, 7, "mesh.cp", "3 does not divide seq_len 4096 into 2*cp = 6 chunks (cp_scheme zigzag); valid: "
                                       "1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048"});
  e = block("1", "4096", "1", "1");  // divides 4096, but zigzag needs 8192 chunks
  check_config_error([&] { load_experiment(e); }, {e, 7, "mesh.cp", "4096 does not divide seq_len 4096 into 2*cp"});
  e = block("1", "4096", "1", "1", "options: {cp_scheme: striped}\n");  // one token per rank: valid
  CHECK_NOTHROW(load_experiment(e));
  // CP 1 shards nothing: an odd seq_len loads under the default (zigzag) scheme.
  e = files.experiment("mesh: {dp: 8}\n", "training: {seq_len: 4097, global_batch: 8, dtype: bf16, optimizer: adam}\n");
  CHECK_NOTHROW(load_experiment(e));
  e = block("1", "3", "1", "1", "options: {cp_scheme: contiguous}\n");
  check_config_error([&] { load_experiment(e); }, {e, 7, "mesh.cp", "3 does not divide seq_len 4096; valid: 1, 2, 4"});
  e = block("1", "1", "8", "1");
  check_config_error([&] { load_experiment(e); },
                     {e, 8, "mesh.pp", "8 pipeline stages exceed the 4 layers of model 'm'; valid: 1 .. 4"});
  e = block("1", "1", "1", "3");
  check_config_error([&] { load_experiment(e); },
                     {e, 9, "mesh.dp", "3 replicas do not divide the global batch of 8 sequences; valid: 1, 2, 4, 8"});
  // The whole mesh against gpus keeps the line of `mesh:`.
  e = block("2", "2", "1", "1", "gpus: 8\n");
  check_config_error([&] { load_experiment(e); }, {e, 5, "mesh", "= 4 must equal gpus (8)"});
}

TEST_CASE("experiment sources: where each field was read, for errors found after loading") {
  ExperimentFiles files;
  const std::string e = files.experiment("mesh:\n  tp: 2\noptions: {micro_batch: 2}\n");
  const Experiment x = load_experiment(e);
  // A referenced model file: its own path, line and field.
  REQUIRE(x.sources.count("model.head_dim") == 1);
  CHECK(x.sources.at("model.head_dim").file == files.model);
  CHECK(x.sources.at("model.head_dim").line == 6);
  CHECK(x.sources.at("model.head_dim").field == "model.head_dim");
  CHECK(x.sources.at("mesh.tp").line == 6);
  CHECK(x.sources.at("mesh").line == 5);
  CHECK(x.sources.at("options.micro_batch").line == 7);
  CHECK(x.sources.at("training.seq_len").line == 4);  // inline block of the experiment file
  CHECK(x.sources.at("training.seq_len").file == e);
  check_config_error([&] { throw experiment_field_error(x, "model.head_dim", "too big"); },
                     {files.model, 6, "model.head_dim", "too big"});
  // Not recorded: the experiment file, no line.
  check_config_error([&] { throw experiment_field_error(x, "options.interleave", "why"); },
                     {e, 0, "options.interleave", "why"});
  // Inside a plan file the experiment sits under `experiment:`; the fields say so.
  TempDir dir;
  const std::string plan = dir.write(
      "p.yaml", "ringplan_plan: 1\nexperiment:\n  name: p\n  model:\n" +
                    [] {
                      std::string m, l;
                      std::istringstream in(test::kModelYaml);
                      while (std::getline(in, l)) m += "    " + l + "\n";
                      return m;
                    }() +
                    "  cluster: " + files.cluster + "\n  training: {seq_len: 64, global_batch: 1, dtype: fp32, "
                    "optimizer: adam}\n");
  const Experiment y = parse_experiment(
      [&] {
        std::ifstream in(plan);
        return std::string(std::istreambuf_iterator<char>(in), {});
      }(),
      plan);
  CHECK(y.sources.at("model.head_dim").line == 10);
  CHECK(y.sources.at("model.head_dim").field == "experiment.model.head_dim");
  CHECK(y.sources.at("cluster.memory_gib").file == files.cluster);
}

TEST_CASE("names must be valid UTF-8: refused at load with file, line and field") {
  TempDir dir;
  std::string f = dir.write("m.yaml", replace(test::kModelYaml, "name: m\n", "name: \"m\xff\xfe\"\n"));
  check_config_error([&] { load_model(f); }, {f, 1, "model.name", "is not valid UTF-8 text (byte 2 of the value is 0xff)"});
  f = dir.write("c.yaml", replace(test::kClusterYaml, "name: c\n", "name: ab\xc3\x28\n"));  // a cut 2-byte sequence
  check_config_error([&] { load_cluster(f); }, {f, 1, "cluster.name", "byte 3 of the value is 0xc3"});
  f = dir.write("c2.yaml", replace(test::kClusterYaml, "name: c\n", "name: \xed\xa0\x80x\n"));  // a UTF-16 surrogate
  check_config_error([&] { load_cluster(f); }, {f, 1, "cluster.name", "not valid UTF-8"});
  f = dir.write("c3.yaml", replace(test::kClusterYaml, "name: c\n", "name: \xc0\xaf\n"));  // overlong '/'
  check_config_error([&] { load_cluster(f); }, {f, 1, "cluster.name", "not valid UTF-8"});
  // Valid multi-byte text is kept as it is.
  f = dir.write("ok.yaml", replace(test::kModelYaml, "name: m\n", "name: \"Modèle 模型 \xf0\x9f\x98\x80\"\n"));
  CHECK(load_model(f).name == "Modèle 模型 \xf0\x9f\x98\x80");
}

TEST_CASE("a symbolic link loop or a dangling link as input is bad input naming the link") {
  TempDir dir;
  const std::string a = dir.file("a.yaml"), b = dir.file("b.yaml");
  std::filesystem::create_symlink(b, a);
  std::filesystem::create_symlink(a, b);
  check_config_error([&] { load_experiment(a); }, {a, 0, "", "is a symbolic link loop"});
  check_config_error([&] { find_experiments(a); }, {a, 0, "", "is a symbolic link loop"});
  CHECK(input_path_problem(a).find("symbolic link loop") != std::string::npos);
  const std::string d = dir.file("dangling.yaml");
  std::filesystem::create_symlink(dir.file("nowhere.yaml"), d);
  check_config_error([&] { load_model(d); }, {d, 0, "", "is a symbolic link to '" + dir.file("nowhere.yaml") + "', which does not exist"});
  // A loop inside a folder of cases names the entry.
  const std::string folder = dir.file("cases");
  std::filesystem::create_directories(folder);
  std::filesystem::create_symlink(folder + "/y.yaml", folder + "/x.yaml");
  std::filesystem::create_symlink(folder + "/x.yaml", folder + "/y.yaml");
  check_config_error([&] { find_experiments(folder); }, {folder + "/x.yaml", 0, "", "is a symbolic link loop"});
  // A model reference that loops: the experiment's line of `model:`.
  ExperimentFiles files;
  std::filesystem::remove(files.model);
  std::filesystem::create_symlink(files.model, files.model);
  const std::string e = files.experiment("");
  check_config_error([&] { load_experiment(e); }, {e, 2, "model", "is a symbolic link loop"});
}

TEST_CASE("training.flash_kernel triton on a cluster without the Triton kernel's curve is refused at the cluster key") {
  ExperimentFiles f;
  const std::string e = f.experiment("gpus: 8\n",
                                     "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam, "
                                     "flash_kernel: triton}\n");
  check_config_error([&] { load_experiment(e); },
                     {e, 3, "cluster", "no efficiency.attention_flash_triton curve"});
  ExperimentFiles with(test::kModelYaml,
                       std::string(test::kClusterYaml) + "  attention_flash_triton: {max: 0.3, half_tflop: 0.02}\n");
  const std::string ok = with.experiment("gpus: 8\n",
                                         "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam, "
                                         "flash_kernel: triton}\n");
  CHECK(load_experiment(ok).training.flash_kernel == FlashKernel::triton);
}

TEST_CASE("training.flash_kernel fa2 on a cluster without FlashAttention-2's curve is refused at the cluster key") {
  ExperimentFiles f;
  const std::string e = f.experiment("gpus: 8\n",
                                     "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam, "
                                     "flash_kernel: fa2}\n");
  check_config_error([&] { load_experiment(e); },
                     {e, 3, "cluster", "training.flash_kernel is fa2 but cluster"});
  check_config_error([&] { load_experiment(e); }, {e, 3, "cluster", "no efficiency.attention_flash_fa2 curve"});
  ExperimentFiles with(test::kModelYaml,
                       std::string(test::kClusterYaml) + "  attention_flash_fa2: {max: 0.3, half_tflop: 0.02}\n");
  const std::string ok = with.experiment("gpus: 8\n",
                                         "training: {seq_len: 4096, global_batch: 8, dtype: bf16, optimizer: adam, "
                                         "flash_kernel: fa2}\n");
  CHECK(load_experiment(ok).training.flash_kernel == FlashKernel::fa2);
}
