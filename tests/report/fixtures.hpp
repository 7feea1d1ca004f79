// A small hand-built experiment for the report tests (no YAML): a GQA model on a made-up
// 8-GPU cluster (4 per node), so that a search keeps a few dozen candidates with CP > 1 and
// runs in milliseconds.
#pragma once
#include "core/config.hpp"
#include "core/units.hpp"

namespace ringplan::test {

inline Experiment report_experiment() {
  Experiment e;
  e.name = "report-test";
  e.path = "report-test.yaml";
  e.model.name = "small_gqa";
  e.model.layers = 8;
  e.model.hidden = 1024;
  e.model.heads = 16;
  e.model.kv_heads = 4;
  e.model.head_dim = 64;
  e.model.ffn_hidden = 2816;
  e.model.gated_mlp = true;
  e.model.vocab = 32000;
  e.cluster.name = "test_cluster";
  e.cluster.peak_flops_per_s_bf16 = 300e12;
  e.cluster.peak_flops_per_s_fp16 = 300e12;
  e.cluster.peak_flops_per_s_fp32 = 60e12;
  e.cluster.memory_bytes = 24 * units::gib_bytes;
  e.cluster.memory_reserved_bytes = 1 * units::gib_bytes;
  e.cluster.memory_bandwidth_bytes_per_s = 2e12;
  e.cluster.gpus_per_node = 4;
  e.cluster.nodes = 2;
  e.cluster.intra_node = {150e9, 3e-6};
  e.cluster.inter_node = {20e9, 8e-6};
  e.cluster.matmul = {0.75, 5e9};
  e.cluster.attention = {0.6, 5e9};
  e.training.seq_len = 32768;
  e.training.global_batch_sequences = 16;
  e.training.dtype = DType::bf16;
  e.gpus = 8;
  return e;
}

}  // namespace ringplan::test
