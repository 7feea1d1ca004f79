// Plan -> framework launch settings. Flag names checked against the frameworks' sources:
//   Megatron-LM megatron/training/arguments.py (--cp-comm-type p2p|a2a|allgather|a2a+p2p,
//     --num-layers-per-virtual-pipeline-stage, --recompute-granularity/-method/-num-layers,
//     --decoder-last-pipeline-num-layers, --attention-backend flash|fused|unfused|local|auto),
//     Megatron-FSDP: --use-megatron-fsdp --data-parallel-sharding-strategy optim_grads[_params]
//     (older releases: --use-custom-fsdp);
//   torchtitan torchtitan/config/job_config.py (Parallelism, ActivationCheckpoint, Training).
// See docs/emit.md for the table of plan field -> flag and the limits of each framework.
#include "report/emit.hpp"

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/units.hpp"

namespace ringplan::report {

const char* to_string(Format f) {
  switch (f) {
    case Format::megatron: return "megatron";
    case Format::torchtitan: return "torchtitan";
  }
  return "?";
}

std::optional<Format> parse_format(const std::string& s) {
  if (s == "megatron") return Format::megatron;
  if (s == "torchtitan") return Format::torchtitan;
  return std::nullopt;
}

std::vector<std::string> format_names() { return {"megatron", "torchtitan"}; }

namespace {

std::string mesh_text(const Mesh& m) {
  return fmt::format("DP={} TP={} CP={} PP={}", m.dp, m.tp, m.cp, m.pp);
}

// Checks the plan against the experiment and returns m, the micro-batches per DP replica per
// step. Invariant used by both frameworks: global_batch = m * DP * micro_batch.
int64_t checked_micro_batches(const Experiment& e, const sim::Prediction& p) {
  const Mesh& mesh = p.mesh;
  const ParallelOptions& o = p.options;
  if (mesh.dp < 1 || mesh.tp < 1 || mesh.cp < 1 || mesh.pp < 1) {
    throw bad_input(fmt::format("emit: mesh {} has a dimension < 1; every dimension must be >= 1", mesh_text(mesh)));
  }
  if (o.micro_batch < 1) {
    throw bad_input(fmt::format("emit: micro_batch {} must be >= 1", o.micro_batch));
  }
  if (o.interleave < 1) {
    throw bad_input(fmt::format("emit: interleave {} must be >= 1", o.interleave));
  }
  if (e.model.layers < 1 || e.model.heads < 1 || e.model.kv_heads < 1 || e.training.seq_len < 1) {
    throw bad_input("emit: the experiment's model/training is not loaded (layers, heads, kv_heads and seq_len must be >= 1)");
  }
  const int64_t per_step = mesh.dp * o.micro_batch;
  const int64_t gbs = e.training.global_batch_sequences;
  if (gbs < 1 || gbs % per_step != 0) {
    throw bad_input(fmt::format(
        "emit: global batch {} sequences is not a multiple of DP x micro_batch = {} x {} = {}; "
        "a plan must process whole micro-batches on every DP replica",
        gbs, mesh.dp, o.micro_batch, per_step));
  }
  const int64_t m = gbs / per_step;
  if (p.micro_batches != 0 && p.micro_batches != m) {
    throw bad_input(fmt::format(
        "emit: the prediction says {} micro-batches per step but global batch {} / (DP {} x micro_batch {}) = {}; "
        "the plan does not belong to this experiment",
        p.micro_batches, gbs, mesh.dp, o.micro_batch, m));
  }
  return m;
}

void add(std::vector<std::string>& args, const std::string& flag, int64_t value) {
  args.push_back(flag);
  args.push_back(std::to_string(value));
}

void add(std::vector<std::string>& args, const std::string& flag, const std::string& value) {
  args.push_back(flag);
  args.push_back(value);
}

}  // namespace

Emitted megatron_settings(const Experiment& e, const sim::Prediction& p) {
  const int64_t m = checked_micro_batches(e, p);
  (void)m;  // Megatron derives m from --global-batch-size / (--micro-batch-size x DP)
  const Mesh& mesh = p.mesh;
  const ParallelOptions& o = p.options;
  const ModelConfig& model = e.model;
  Emitted out;
  auto& a = out.settings;

  // Mesh. Megatron derives DP = world size / (TP x PP x CP) from the launcher; its rank
  // order is also TP innermost, then CP, DP, PP (the default "tp-cp-ep-dp-pp" order).
  add(a, "--tensor-model-parallel-size", mesh.tp);
  add(a, "--pipeline-model-parallel-size", mesh.pp);
  add(a, "--context-parallel-size", mesh.cp);
  if (mesh.cp > 1) {
    add(a, "--cp-comm-type", "p2p");  // the ring: K,V blocks passed rank to rank
    if (o.cp_scheme != CpScheme::zigzag) {
      out.notes.push_back(fmt::format(
          "cp_scheme {} is not expressible: Megatron-LM always shards the sequence into 2*CP chunks and gives "
          "CP rank r chunks r and 2*CP-1-r (ringplan's zigzag); the run will be load-balanced like zigzag, not {}",
          to_string(o.cp_scheme), to_string(o.cp_scheme)));
    }
    if (e.training.seq_len % (2 * mesh.cp) != 0) {
      out.notes.push_back(fmt::format(
          "Megatron-LM requires --seq-length divisible by 2*CP = {}; {} is not, so Megatron will reject these flags",
          2 * mesh.cp, e.training.seq_len));
    }
  }
  if (mesh.pp > 1) {
    if (o.interleave > 1) {
      if (model.layers % (mesh.pp * o.interleave) != 0) {
        throw bad_input(fmt::format(
            "emit megatron: interleave {} needs layers divisible by PP x interleave = {}; the model has {} layers",
            o.interleave, mesh.pp * o.interleave, model.layers));
      }
      add(a, "--num-layers-per-virtual-pipeline-stage", model.layers / (mesh.pp * o.interleave));
    } else if (model.layers % mesh.pp != 0) {
      // ringplan's largest stage holds ceil(L/PP) layers; Megatron can give the last stage
      // fewer layers as long as the others are equal: (PP-1) stages of ceil(L/PP), the rest last.
      const int64_t per_stage = (model.layers + mesh.pp - 1) / mesh.pp;
      const int64_t last = model.layers - (mesh.pp - 1) * per_stage;
      if (last < 1) {
        throw bad_input(fmt::format(
            "emit megatron: {} layers on PP={} cannot be split as Megatron-LM allows (equal stages of {} and a "
            "smaller last stage); use a PP that divides the layers",
            model.layers, mesh.pp, per_stage));
      }
      add(a, "--decoder-last-pipeline-num-layers", last);
      out.notes.push_back(fmt::format(
          "uneven pipeline: {} layers on PP={}: stages of {} layers and a last stage of {} layers",
          model.layers, mesh.pp, per_stage, last));
    }
  } else if (o.interleave > 1) {
    out.notes.push_back(fmt::format("interleave {} ignored: virtual pipeline stages need PP > 1", o.interleave));
  }

  // Batch and sequence.
  add(a, "--micro-batch-size", o.micro_batch);
  add(a, "--global-batch-size", e.training.global_batch_sequences);
  add(a, "--seq-length", e.training.seq_len);
  add(a, "--max-position-embeddings", e.training.seq_len);
  if (o.sequence_parallel && mesh.tp > 1) a.push_back("--sequence-parallel");

  // Activation recomputation. ringplan's "selective" is Korthikanti et al.'s: recompute the
  // attention core only, which is Megatron's selective granularity; "full" recomputes every layer
  // from its input (uniform, one layer per recompute unit).
  switch (o.recompute) {
    case Recompute::none: break;
    case Recompute::selective: add(a, "--recompute-granularity", "selective"); break;
    case Recompute::full:
      add(a, "--recompute-granularity", "full");
      add(a, "--recompute-method", "uniform");
      add(a, "--recompute-num-layers", 1);
      break;
  }

  // ZeRO. Megatron's distributed optimizer shards optimizer state over DP x CP (ZeRO-1);
  // ZeRO-2/3 need Megatron-FSDP.
  switch (o.zero_stage) {
    case 0: break;
    case 1: a.push_back("--use-distributed-optimizer"); break;
    case 2:
    case 3:
      a.push_back("--use-distributed-optimizer");
      a.push_back("--use-megatron-fsdp");
      add(a, "--data-parallel-sharding-strategy", o.zero_stage == 2 ? "optim_grads" : "optim_grads_params");
      out.notes.push_back(fmt::format(
          "ZeRO-{} maps to Megatron-FSDP (--use-megatron-fsdp; older releases call it --use-custom-fsdp), "
          "which also wants --no-gradient-accumulation-fusion and --ckpt-format fsdp_dtensor",
          o.zero_stage));
      break;
    default:
      throw bad_input(fmt::format("emit: zero_stage {} is not one of 0, 1, 2, 3", o.zero_stage));
  }
  if (e.training.optimizer == Optimizer::sgd) add(a, "--optimizer", "sgd");

  // Precision and attention kernel.
  switch (e.training.dtype) {
    case DType::bf16: a.push_back("--bf16"); break;
    case DType::fp16: a.push_back("--fp16"); break;
    case DType::fp32: break;  // Megatron's default
  }
  add(a, "--attention-backend", o.attention == AttentionImpl::flash ? "flash" : "unfused");

  // Model shape.
  add(a, "--num-layers", model.layers);
  add(a, "--hidden-size", model.hidden);
  add(a, "--num-attention-heads", model.heads);
  if (model.kv_heads != model.heads) {
    a.push_back("--group-query-attention");
    add(a, "--num-query-groups", model.kv_heads);
  }
  add(a, "--kv-channels", model.head_dim);
  add(a, "--ffn-hidden-size", model.ffn_hidden);
  if (model.gated_mlp) a.push_back("--swiglu");
  if (!model.tied_embeddings) a.push_back("--untie-embeddings-and-output-weights");

  if (!e.training.causal) {
    out.notes.push_back("non-causal attention: Megatron-LM's GPT model is always causal (pretrain_gpt.py)");
  }
  out.notes.push_back(fmt::format(
      "vocabulary {} comes from the tokenizer (--vocab-size only with NullTokenizer); Megatron pads it to a "
      "multiple of 128 x TP",
      model.vocab));
  return out;
}

Emitted torchtitan_settings(const Experiment& e, const sim::Prediction& p) {
  const int64_t m = checked_micro_batches(e, p);
  const Mesh& mesh = p.mesh;
  const ParallelOptions& o = p.options;
  const ModelConfig& model = e.model;
  Emitted out;
  auto& t = out.settings;
  auto line = [&t](const std::string& key, const auto& value) {
    t.push_back(fmt::format("{} = {}", key, value));
  };
  auto quoted = [](const std::string& s) { return "\"" + s + "\""; };

  t.push_back("[parallelism]");
  // torchtitan's DP = replicate x shard. FSDP (fully_shard) shards parameters, gradients and
  // optimizer state over dp_shard x cp (ZeRO-3); reshard_after_forward = "never" keeps the
  // gathered parameters from forward to backward, which is ZeRO-2's memory and traffic.
  int64_t replicate = mesh.dp, shard = 1;
  std::string reshard = "default";
  switch (o.zero_stage) {
    case 0:
      if (mesh.cp > 1) {
        out.notes.push_back(
            "ZeRO-0 over CP is not expressible: with CP > 1 torchtitan applies FSDP on the dp_shard x cp mesh, "
            "so parameters, gradients and optimizer state are sharded over CP anyway");
      }
      break;
    case 1:
      out.notes.push_back(
          "ZeRO-1 is not expressible: torchtitan shards with FSDP (ZeRO-3) or replicates (DDP); emitted the "
          "ZeRO-2-like FSDP with reshard_after_forward = \"never\"");
      [[fallthrough]];
    case 2: replicate = 1; shard = mesh.dp; reshard = "never"; break;
    case 3: replicate = 1; shard = mesh.dp; reshard = "always"; break;
    default: throw bad_input(fmt::format("emit: zero_stage {} is not one of 0, 1, 2, 3", o.zero_stage));
  }
  line("data_parallel_replicate_degree", replicate);
  line("data_parallel_shard_degree", shard);
  line("fsdp_reshard_after_forward", quoted(reshard));
  line("tensor_parallel_degree", mesh.tp);
  if (mesh.tp > 1 && !o.sequence_parallel) {
    out.notes.push_back(
        "TP without sequence parallelism is not expressible: torchtitan's tensor parallel plan always shards "
        "norms and dropout along the sequence (sequence parallel)");
  }
  line("context_parallel_degree", mesh.cp);
  if (mesh.cp > 1) {
    // PyTorch's context_parallel "alltoall" rotater passes each K,V shard to the next rank per
    // step (a ring); "allgather" gathers all of K,V first.
    line("context_parallel_rotate_method", quoted("alltoall"));
    if (o.cp_scheme != CpScheme::zigzag) {
      out.notes.push_back(fmt::format(
          "cp_scheme {} is not expressible: torchtitan (PyTorch context_parallel) load-balances causal attention "
          "with its head-tail sharding, which is ringplan's zigzag; the run will use zigzag",
          to_string(o.cp_scheme)));
    }
  }
  line("pipeline_parallel_degree", mesh.pp);
  if (mesh.pp > 1) {
    line("pipeline_parallel_schedule", quoted(o.interleave > 1 ? "Interleaved1F1B" : "1F1B"));
    const int64_t stages = mesh.pp * o.interleave;
    if (model.layers % stages == 0) {
      line("pipeline_parallel_layers_per_stage", model.layers / stages);
    } else {
      out.notes.push_back(fmt::format(
          "{} layers do not divide into PP x interleave = {} stages: pipeline_parallel_layers_per_stage cannot "
          "express it; set pipeline_parallel_split_points by hand",
          model.layers, stages));
    }
    line("pipeline_parallel_microbatch_size", o.micro_batch);
  } else if (o.interleave > 1) {
    out.notes.push_back(fmt::format("interleave {} ignored: virtual pipeline stages need PP > 1", o.interleave));
  }

  t.push_back("");
  t.push_back("[activation_checkpoint]");
  line("mode", quoted(to_string(o.recompute)));
  if (o.recompute == Recompute::selective) {
    line("selective_ac_option", quoted("op"));
    out.notes.push_back(
        "selective recompute: torchtitan's per-op policy (\"op\") saves matmul outputs and recomputes the rest, "
        "close to but not exactly ringplan's Korthikanti selective (attention core only)");
  }

  t.push_back("");
  t.push_back("[training]");
  // With PP the whole local batch goes through one pipeline schedule, split into micro-batches
  // of pipeline_parallel_microbatch_size; without PP torchtitan accumulates gradients over
  // global / (local x DP) steps of local_batch_size.
  line("local_batch_size", mesh.pp > 1 ? o.micro_batch * m : o.micro_batch);
  line("global_batch_size", e.training.global_batch_sequences);
  line("seq_len", e.training.seq_len);
  switch (e.training.dtype) {
    case DType::bf16: line("mixed_precision_param", quoted("bfloat16")); break;
    case DType::fp32: line("mixed_precision_param", quoted("float32")); break;
    case DType::fp16:
      line("mixed_precision_param", quoted("bfloat16"));
      out.notes.push_back("fp16 is not expressible: torchtitan's mixed_precision_param is bfloat16 or float32; emitted bfloat16");
      break;
  }

  t.push_back("");
  t.push_back("[model]");
  line("name", quoted("llama3"));
  line("flavor", quoted(model.name));
  out.notes.push_back(fmt::format(
      "model shape is a flavor registered in Python, not TOML: register flavor \"{}\" with dim={}, n_layers={}, "
      "n_heads={}, n_kv_heads={}, head_dim={}, ffn_hidden={}{}, vocab_size={}",
      model.name, model.hidden, model.layers, model.heads, model.kv_heads, model.head_dim, model.ffn_hidden,
      model.gated_mlp ? " (SwiGLU)" : " (non-gated MLP: not a llama3 block)", model.vocab));

  if (o.attention == AttentionImpl::materialized) {
    out.notes.push_back(
        "materialized attention is not expressible: torchtitan runs SDPA/flex attention (flash-style, context "
        "parallel needs it)");
  }
  if (e.training.optimizer == Optimizer::sgd) {
    out.notes.push_back("optimizer sgd: set [optimizer] name by hand (torchtitan ships Adam and AdamW)");
  }
  if (!e.training.causal) {
    out.notes.push_back("non-causal attention: torchtitan's llama3 model is always causal");
  }
  return out;
}

std::string emit_plan(Format format, const Experiment& e, const sim::Prediction& p) {
  const Emitted emitted = format == Format::megatron ? megatron_settings(e, p) : torchtitan_settings(e, p);
  std::string text = fmt::format(
      "# ringplan plan for {} ({} on {} GPUs of {}): {}, micro-batch {}, cp_scheme {}, recompute {}, ZeRO-{}\n"
      "# predicted: step {:.4g} s, {:.4g} tokens/s, MFU {:.1f}%, peak memory {:.2f} GiB of {:.2f} GiB\n",
      e.name, e.model.name, p.mesh.world_size(), e.cluster.name, mesh_text(p.mesh), p.options.micro_batch,
      to_string(p.options.cp_scheme), to_string(p.options.recompute), p.options.zero_stage, p.step_time_s,
      p.tokens_per_s, 100.0 * p.mfu, p.peak_memory_bytes / units::gib_bytes, p.capacity_bytes / units::gib_bytes);
  for (const auto& note : emitted.notes) text += "# note: " + note + "\n";
  if (format == Format::megatron) {
    // One flag (and its value) per line, joined with shell continuations.
    std::vector<std::string> lines;
    for (size_t i = 0; i < emitted.settings.size(); ++i) {
      const std::string& s = emitted.settings[i];
      if (s.rfind("--", 0) == 0 || lines.empty()) {
        lines.push_back(s);
      } else {
        lines.back() += " " + s;
      }
    }
    for (size_t i = 0; i < lines.size(); ++i) text += lines[i] + (i + 1 < lines.size() ? " \\\n" : "\n");
  } else {
    for (const auto& s : emitted.settings) text += s + "\n";
  }
  return text;
}

}  // namespace ringplan::report
