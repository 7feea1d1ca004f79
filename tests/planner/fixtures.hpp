// Small hand-built experiments for the planner tests (no YAML needed). Numbers are a tiny
// GQA model on a made-up 2-GPU-per-node cluster: small enough that a search takes
// microseconds, large enough that memory, heads and node size all constrain the layouts.
#pragma once
#include "core/config.hpp"
#include "core/units.hpp"

namespace ringplan::test {

inline Experiment tiny_experiment() {
  Experiment e;
  e.name = "tiny";
  e.path = "tiny.yaml";
  e.model.name = "tiny_gqa";
  e.model.layers = 4;
  e.model.hidden = 256;
  e.model.heads = 8;
  e.model.kv_heads = 2;
  e.model.head_dim = 32;
  e.model.ffn_hidden = 768;
  e.model.gated_mlp = true;
  e.model.vocab = 1024;
  e.cluster.name = "tiny_cluster";
  e.cluster.peak_flops_per_s_bf16 = 100e12;
  e.cluster.peak_flops_per_s_fp16 = 100e12;
  e.cluster.peak_flops_per_s_fp32 = 20e12;
  e.cluster.memory_bytes = 16 * units::gib_bytes;
  e.cluster.memory_reserved_bytes = 0.5 * units::gib_bytes;
  e.cluster.memory_bandwidth_bytes_per_s = 1e12;
  e.cluster.gpus_per_node = 2;
  e.cluster.nodes = 2;
  e.cluster.intra_node = {100e9, 3e-6};
  e.cluster.inter_node = {10e9, 10e-6};
  e.cluster.matmul = {0.8, 1e9};
  e.cluster.attention = {0.6, 1e9};
  e.training.seq_len = 4096;
  e.training.global_batch_sequences = 8;
  e.training.dtype = DType::bf16;
  e.gpus = 4;
  return e;
}

}  // namespace ringplan::test
