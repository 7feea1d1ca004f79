// Configs built in code for the sim tests: an A100-like cluster and two models. The values
// are typical datasheet figures; tests derive every expected number from these fields.
#pragma once
#include "core/config.hpp"

namespace ringplan::sim::test {

inline ClusterConfig a100_cluster(int64_t nodes = 8) {
  ClusterConfig c;
  c.name = "test_a100";
  c.peak_flops_per_s_bf16 = 312e12;
  c.peak_flops_per_s_fp16 = 312e12;
  c.peak_flops_per_s_fp32 = 19.5e12;
  c.memory_bytes = 80.0 * 1024 * 1024 * 1024;
  c.memory_reserved_bytes = 2.0 * 1024 * 1024 * 1024;
  c.memory_bandwidth_bytes_per_s = 2039e9;
  c.gpus_per_node = 8;
  c.nodes = nodes;
  c.intra_node = {300e9, 3e-6};
  c.inter_node = {25e9, 6e-6};
  c.matmul = {0.75, 0.02e12};
  c.attention = {0.6, 0.016e12};
  return c;
}

// Llama 3 8B shapes: GQA (32 heads, 8 KV heads), gated MLP, untied embeddings.
inline ModelConfig llama8b() {
  ModelConfig m;
  m.name = "llama3_8b";
  m.layers = 32;
  m.hidden = 4096;
  m.heads = 32;
  m.kv_heads = 8;
  m.head_dim = 128;
  m.ffn_hidden = 14336;
  m.gated_mlp = true;
  m.vocab = 128256;
  m.tied_embeddings = false;
  return m;
}

// Megatron GPT 22B of Korthikanti et al. 2022: multi-head, ffn 4h, tied embeddings.
inline ModelConfig gpt22b() {
  ModelConfig m;
  m.name = "gpt_22b";
  m.layers = 48;
  m.hidden = 6144;
  m.heads = 64;
  m.kv_heads = 64;
  m.head_dim = 96;
  m.ffn_hidden = 4 * 6144;
  m.gated_mlp = false;
  m.vocab = 51200;
  m.tied_embeddings = true;
  return m;
}

inline Experiment llama_experiment(int64_t seq_len = 32768, int64_t global_batch = 16) {
  Experiment e;
  e.name = "test_llama8b";
  e.model = llama8b();
  e.cluster = a100_cluster();
  e.training.seq_len = seq_len;
  e.training.global_batch_sequences = global_batch;
  e.training.dtype = DType::bf16;
  e.training.optimizer = Optimizer::adam;
  e.training.causal = true;
  return e;
}

inline Mesh mesh_of(int64_t dp, int64_t tp, int64_t cp, int64_t pp) {
  Mesh m;
  m.dp = dp;
  m.tp = tp;
  m.cp = cp;
  m.pp = pp;
  return m;
}

}  // namespace ringplan::sim::test
