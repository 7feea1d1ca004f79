// Plan -> framework launch. Every flag, key, choice and constraint below was read from the
// pinned sources named in report/emit.hpp (kMegatron*, kTorchtitan*); docs/emit.md has the
// table of plan field -> setting and the limits of each framework. The tests check every
// emitted Megatron flag against the flag list of that parser (tests/report/data/) and every
// torchtitan key against the pinned versions' config fields.
#include "report/emit.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <sstream>
#include <toml++/toml.h>

#include "core/error.hpp"
#include "core/format.hpp"

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

const char* to_string(TorchtitanTarget t) {
  switch (t) {
    case TorchtitanTarget::python: return "python";
    case TorchtitanTarget::toml: return "toml";
  }
  return "?";
}

std::optional<TorchtitanTarget> parse_torchtitan_target(const std::string& s) {
  if (s == "python") return TorchtitanTarget::python;
  if (s == "toml") return TorchtitanTarget::toml;
  return std::nullopt;
}

std::vector<std::string> torchtitan_target_names() { return {"python", "toml"}; }

namespace {

std::string mesh_text(const Mesh& m) {
  return fmt::format("DP={} TP={} CP={} PP={}", m.dp, m.tp, m.cp, m.pp);
}

// Comment text must stay on its line: a newline in a name would end the comment and turn the
// rest into code (bash) or break the document (TOML, Python).
std::string one_line(std::string s) {
  std::replace_if(s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return s;
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
  if (o.zero_stage < 0 || o.zero_stage > 3) {
    throw bad_input(fmt::format("emit: zero_stage {} is not one of 0, 1, 2, 3", o.zero_stage));
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

// Layers on each pipeline rank as the cost model splits them (sim::stage_layers): the split
// both frameworks are given, so that the critical stage they run is the one predicted.
std::vector<int64_t> rank_layers(const Experiment& e, const Mesh& mesh, const ParallelOptions& o) {
  std::vector<int64_t> n;
  for (int64_t d = 0; d < mesh.pp; ++d) n.push_back(sim::stage_layers(e.model.layers, mesh.pp, o, d));
  return n;
}

std::string describe_split(const std::vector<int64_t>& n) {
  std::string s;
  for (size_t i = 0; i < n.size(); ++i) s += (i ? ", " : "") + std::to_string(n[i]);
  return s;
}

void add(std::vector<std::string>& args, const std::string& flag, int64_t value) {
  args.push_back(flag);
  args.push_back(std::to_string(value));
}

void add(std::vector<std::string>& args, const std::string& flag, const std::string& value) {
  args.push_back(flag);
  args.push_back(value);
}

std::string number_text(double v) { return fmt::format("{}", v); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Megatron-LM (core_v0.19.0)

MegatronLaunch megatron_launch(const Experiment& e, const sim::Prediction& p) {
  // Megatron derives m from --global-batch-size / (--micro-batch-size x DP)
  const int64_t m_steps = checked_micro_batches(e, p);
  const Mesh& mesh = p.mesh;
  const ParallelOptions& o = p.options;
  const ModelConfig& model = e.model;
  MegatronLaunch out;
  auto& a = out.args;

  // Model: the Llama architecture as Megatron-LM's examples/llama scripts set it. Without these
  // flags pretrain_gpt.py builds its defaults: a learned position table of
  // max-position-embeddings x hidden (4.3 B parameters at 1M context and hidden 4096),
  // LayerNorm, biases, GeLU, dropout 0.1 and tied embeddings.
  add(a, "--num-layers", model.layers);
  add(a, "--hidden-size", model.hidden);
  add(a, "--ffn-hidden-size", model.ffn_hidden);
  add(a, "--num-attention-heads", model.heads);
  add(a, "--kv-channels", model.head_dim);
  if (model.kv_heads != model.heads) {
    a.push_back("--group-query-attention");
    add(a, "--num-query-groups", model.kv_heads);
  }
  if (model.rope) {
    add(a, "--position-embedding-type", "rope");
    add(a, "--rotary-base", model.rope_base);  // an int in Megatron's parser
  } else {
    // ModelConfig::rope false: a position table added to the embedding, Megatron's learned_absolute
    // (max-position-embeddings x hidden, from seq_len below).
    add(a, "--position-embedding-type", "learned_absolute");
  }
  add(a, "--normalization", "RMSNorm");
  if (model.gated_mlp) {
    a.push_back("--swiglu");
  } else {
    out.notes.push_back(
        "non-gated MLP: emitted Megatron-LM's GeLU MLP (no --swiglu); the rest of the block is Llama's "
        "(RoPE, RMSNorm, no bias)");
  }
  a.push_back("--disable-bias-linear");
  if (!model.tied_embeddings) a.push_back("--untie-embeddings-and-output-weights");
  add(a, "--attention-dropout", number_text(model.dropout));
  add(a, "--hidden-dropout", number_text(model.dropout));
  add(a, "--seq-length", e.training.seq_len);
  add(a, "--max-position-embeddings", e.training.seq_len);
  // Megatron's unfused backend turns Transformer Engine's flash and fused kernels off
  // (language_module.py: NVTE_FLASH_ATTN=0, NVTE_FUSED_ATTN=0), and TE's unfused attention has
  // no context parallelism ("does not support context parallelism", dot_product_attention/
  // utils.py): with CP > 1 no attention backend is left and the first forward raises.
  if (o.attention == AttentionImpl::materialized && mesh.cp > 1)
    throw bad_input(fmt::format(
        "emit megatron: attention materialized with CP = {} cannot run: Megatron-LM's --attention-backend unfused "
        "leaves only Transformer Engine's unfused attention, which has no context parallelism; plan with attention "
        "flash for CP > 1",
        mesh.cp));
  add(a, "--attention-backend", o.attention == AttentionImpl::flash ? "flash" : "unfused");
  if (!e.training.causal) {
    out.notes.push_back("non-causal attention: Megatron-LM's GPT model is always causal (pretrain_gpt.py)");
  }
  if (e.training.cross_entropy == CrossEntropy::unfused) {
    out.notes.push_back(
        "training.cross_entropy unfused: Megatron-LM's vocab_parallel_cross_entropy works in place (fused); this "
        "launch needs less loss memory than the plan assumed");
  }
  if (e.training.cross_entropy == CrossEntropy::fused_16bit) {
    out.notes.push_back(
        "training.cross_entropy fused_16bit: Megatron-LM's vocab_parallel_cross_entropy makes a float32 copy of the "
        "logits (e + 4 bytes per logit, not 2e); this launch needs more loss memory than the plan assumed");
  }
  if (e.training.norm == NormImpl::low_precision) {
    out.notes.push_back(
        "training.norm low_precision: Megatron-LM's norms are Transformer Engine's or apex's fused kernels; the "
        "launch runs them as its own");
  }
  if (e.training.flash_kernel == FlashKernel::triton && o.attention == AttentionImpl::flash) {
    out.notes.push_back(
        "training.flash_kernel triton: Megatron-LM's flash attention is Transformer Engine's (cuDNN or "
        "FlashAttention), not the Triton kernel the plan priced; its attention runs faster than the plan assumed");
  }
  if (e.training.flash_kernel == FlashKernel::fa2 && o.attention == AttentionImpl::flash) {
    out.notes.push_back(
        "training.flash_kernel fa2: Transformer Engine chooses Megatron-LM's attention backend (cuDNN fused "
        "attention or FlashAttention) by GPU, shape and installed packages; the plan priced FlashAttention-2, which "
        "runs only where flash-attn 2 is installed and the others are disabled (NVTE_FUSED_ATTN=0)");
  }
  if (e.training.autocast) {
    out.notes.push_back(
        "training.mixed_precision autocast: Megatron-LM keeps 16-bit weights beside a float32 master copy and a "
        "16-bit residual stream (--bf16/--fp16), not torch.autocast over float32 parameters; its activations and "
        "peak differ from the plan's");
  }
  if (e.training.eager_elementwise) {
    out.notes.push_back(
        "training.elementwise eager: Megatron-LM fuses RoPE and SwiGLU (--apply-rope-fusion, --bias-swiglu-fusion); "
        "this launch keeps less activation memory and moves fewer bytes per layer than the plan assumed");
  }
  if (e.training.grad_accumulation != GradAccumulation::fused && !e.training.autocast && p.options.zero_stage < 2 &&
      m_steps > 1) {
    out.notes.push_back(fmt::format(
        "training.grad_accumulation {}: Megatron-LM adds each micro-batch's weight gradient into main_grad inside the "
        "GEMM (--gradient-accumulation-fusion, its default); this launch spends less time summing gradients than the "
        "plan assumed",
        to_string(e.training.grad_accumulation)));
  }
  if (e.training.pytorch_pp_schedule && p.mesh.pp > 1 && m_steps > 1) {
    out.notes.push_back(
        "training.pp_schedule pytorch: Megatron-LM's last pipeline stage keeps no micro-batch's output (the logits) "
        "once its loss is taken, and interleaved with as many micro-batches as pipeline ranks it runs every forward "
        "first on every rank; plan with pp_schedule: megatron to predict its memory");
  }
  if (e.training.tp_dtensor && mesh.tp > 1 && o.sequence_parallel) {
    out.notes.push_back(
        "training.tp_impl dtensor: Megatron-LM's sequence-parallel linear layers keep their 1/TP input shard and "
        "all-gather it again in the backward, on the sequence-major layout with no copies; this launch's activations "
        "are smaller and its TP time differs from the plan's (plan with tp_impl: megatron to predict it)");
  }
  if (e.training.pp_scatter_gather && mesh.pp > 1 && mesh.tp > 1 && !o.sequence_parallel) {
    out.notes.push_back(
        "training.pp_p2p scatter_gather: Megatron-Core sends every TP rank the whole activation between pipeline "
        "stages without sequence parallelism (get_tensor_shapes); this launch moves TP times the plan's bytes per "
        "hop and gathers nothing (plan with pp_p2p: full to predict it)");
  }
  if (e.training.fsdp_per_parameter && p.options.zero_stage >= 3) {
    out.notes.push_back(
        "training.fsdp per_parameter: Megatron-FSDP gathers into flat buffers and needs no copy out of them; this "
        "launch's ZeRO-3 gathers cost less than the plan assumed");
  }

  // Layout. Megatron derives DP = world size / (TP x PP x CP) from the launcher; its rank order
  // is TP innermost, then CP, DP, PP (the default "tp-cp-ep-dp-pp" order).
  add(a, "--tensor-model-parallel-size", mesh.tp);
  add(a, "--pipeline-model-parallel-size", mesh.pp);
  add(a, "--context-parallel-size", mesh.cp);
  if (mesh.cp > 1) {
    // p2p: the ring, K,V blocks passed rank to rank; all_gather: K,V of the whole sequence
    // gathered before attention, dK,dV reduce-scattered after it; a2a: Ulysses, all-to-alls
    // from sequence shards to head shards and back; a2a+p2p: ringplan's hybrid, all-to-all in
    // groups of A consecutive CP ranks, ring across the R = CP/A groups. Megatron-Core's
    // create_hierarchical_groups makes the first level of --hierarchical-context-parallel-sizes
    // groups of consecutive CP ranks (the a2a level) and validate_args asserts that the sizes
    // multiply to CP and are given whenever a2a+p2p is.
    add(a, "--cp-comm-type",
        o.cp_comm == CpComm::allgather  ? "all_gather"
        : o.cp_comm == CpComm::alltoall ? "a2a"
        : o.cp_comm == CpComm::hybrid   ? "a2a+p2p"
                                        : "p2p");
    if (o.cp_comm == CpComm::hybrid) {
      const int64_t a2a = sim::cp_a2a_size_of(e, mesh, o);
      a.push_back("--hierarchical-context-parallel-sizes");
      a.push_back(std::to_string(a2a));
      a.push_back(std::to_string(mesh.cp / a2a));
      if (mesh.tp > 0 && (e.model.kv_heads / mesh.tp) % a2a != 0)
        throw bad_input(fmt::format(
            "emit megatron: cp_comm hybrid with kv_heads/TP = {} not divisible by the all-to-all group size {}: "
            "ringplan replicates each KV head inside the group (DeepSpeed-Ulysses' GQA rule), but Transformer "
            "Engine's a2a splits the K,V heads as it does Q's and asserts num_heads % cp_size == 0 "
            "(context_parallel.py); plan with a cp_a2a_size that divides the KV heads per TP rank",
            e.model.kv_heads / mesh.tp, a2a));
    }
    if (o.cp_comm == CpComm::alltoall && mesh.tp > 0 && (e.model.kv_heads / mesh.tp) % mesh.cp != 0) {
      // Transformer Engine's a2a (flash_attn_a2a_communicate) views every input's heads as
      // [cp, heads/cp]: K and V need kv_heads/TP divisible by CP; it does not replicate them.
      throw bad_input(fmt::format(
          "emit megatron: cp_comm alltoall with kv_heads/TP = {} not divisible by CP = {}: ringplan replicates each "
          "KV head to CP/(kv_heads/TP) ranks (DeepSpeed-Ulysses' GQA rule), but Transformer Engine's a2a splits the "
          "K,V heads over CP as it does Q's and asserts num_heads % cp_size == 0 (context_parallel.py); plan with a "
          "CP that divides the KV heads per TP rank",
          e.model.kv_heads / mesh.tp, mesh.cp));
    }
    if (o.cp_scheme != CpScheme::zigzag) {
      out.notes.push_back(fmt::format(
          "cp_scheme {} is not expressible: Megatron-LM always shards the sequence into 2*CP chunks and gives "
          "CP rank r chunks r and 2*CP-1-r (ringplan's zigzag); the run will be load-balanced like zigzag, not {}",
          to_string(o.cp_scheme), to_string(o.cp_scheme)));
    }
    if (e.training.seq_len % (2 * mesh.cp) != 0) {
      throw bad_input(fmt::format(
          "emit megatron: --seq-length {} is not divisible by 2*CP = {}, which Megatron-LM's validate_args asserts "
          "(it always splits the sequence into 2*CP chunks); plan with a CP that gives whole chunks",
          e.training.seq_len, 2 * mesh.cp));
    }
  }
  if (mesh.pp > 1) {
    if (std::string why = sim::pipeline_split_problem(model.layers, mesh.pp, o); !why.empty())
      throw bad_input("emit megatron: " + why);
    const bool uneven_keys = o.uneven_pipeline();
    const int64_t stages = mesh.pp * o.interleave;  // virtual stages, rank k % PP runs stage k
    const bool layout = !uneven_keys && model.layers % stages != 0;
    // Virtual stages: a layer count per virtual stage when they are equal; with the
    // uneven-pipeline flags the count of virtual stages per rank; with a layout, the layout.
    if (o.interleave > 1 && !layout) {
      if (uneven_keys)
        add(a, "--num-virtual-stages-per-pipeline-rank", o.interleave);
      else
        add(a, "--num-layers-per-virtual-pipeline-stage", model.layers / stages);
    }
    // The split (sim::stage_layers): Megatron-LM's own flags where the plan sets them; the
    // default split of layers PP does not divide as an explicit layout (E embedding, t layer,
    // L loss; megatron/core/transformer/pipeline_parallel_layer_layout.py).
    if (o.pp_first_layers > 0) add(a, "--decoder-first-pipeline-num-layers", o.pp_first_layers);
    if (o.pp_last_layers > 0) add(a, "--decoder-last-pipeline-num-layers", o.pp_last_layers);
    if (o.pp_embedding_slot) a.push_back("--account-for-embedding-in-pipeline-split");
    if (o.pp_loss_slot) a.push_back("--account-for-loss-in-pipeline-split");
    const std::vector<int64_t> n = rank_layers(e, mesh, o);
    if (layout) {
      std::string text;
      for (int64_t k = 0; k < stages; ++k)
        text += fmt::format("{}{}t*{}{}", k ? "|" : "", k == 0 ? "E" : "",
                            chunk_layers(model.layers, mesh.pp, o, k % mesh.pp, k / mesh.pp), k == stages - 1 ? "L" : "");
      add(a, "--pipeline-model-parallel-layout", text);
    }
    if (uneven_keys || layout)
      out.notes.push_back(fmt::format("uneven pipeline: {} layers on PP={}: {} per stage", model.layers, mesh.pp,
                                      describe_split(n)));
  } else if (o.interleave > 1) {
    out.notes.push_back(fmt::format("interleave {} ignored: virtual pipeline stages need PP > 1", o.interleave));
  }
  if (o.sequence_parallel && mesh.tp > 1) a.push_back("--sequence-parallel");
  // tp_overlap: Megatron-LM's backward TP collectives are asynchronous by default (ringplan's
  // `backward`); --tp-comm-overlap adds Transformer Engine's pipelined userbuffer overlap (needs
  // --sequence-parallel, which check_layout already demands of `pipelined`).
  if (mesh.tp > 1 && o.tp_overlap == TpOverlap::pipelined) a.push_back("--tp-comm-overlap");
  if (mesh.tp > 1 && o.tp_overlap == TpOverlap::none) {
    out.notes.push_back(
        "tp_overlap none: Megatron-LM runs its backward TP collectives asynchronously behind the weight-gradient "
        "GEMMs and has no flag to stop it; the plan was predicted with every TP collective exposed, so Megatron "
        "should run somewhat faster than predicted (plan with tp_overlap backward to match it)");
  }

  // Batch.
  add(a, "--micro-batch-size", o.micro_batch);
  add(a, "--global-batch-size", e.training.global_batch_sequences);

  // Activation recomputation. ringplan's "selective" is Korthikanti et al.'s: recompute the
  // attention core only, which is Megatron's selective granularity; "full" recomputes every
  // layer from its input (uniform, one layer per recompute unit).
  switch (o.recompute) {
    case Recompute::none: break;
    case Recompute::selective: add(a, "--recompute-granularity", "selective"); break;
    case Recompute::full:
      add(a, "--recompute-granularity", "full");
      add(a, "--recompute-method", "uniform");
      add(a, "--recompute-num-layers", 1);
      // Megatron-LM's checkpoint re-runs the whole layer (tensor_parallel.checkpoint, reentrant).
      if (e.training.recompute_early_stop)
        out.notes.push_back(
            "training.recompute_early_stop: Megatron-LM's full recompute re-runs each whole layer, MLP down projection "
            "included; the plan priced it without (set recompute_early_stop: false to predict this launch)");
      break;
    case Recompute::selective_op:
      throw bad_input(
          "emit megatron: recompute selective_op is torchtitan's per-op policy (save attention and every other "
          "matmul output); Megatron-LM has no such mode. Valid here: none, selective (attention core, Megatron's "
          "--recompute-granularity selective) or full");
  }

  // Optimizer-state sharding. The distributed optimizer shards optimizer state over DP x CP
  // (ZeRO-1). ZeRO-2/3 are Megatron-FSDP, whose validate_args asserts --ckpt-format
  // fsdp_dtensor and CUDA_DEVICE_MAX_CONNECTIONS != 1 (flags as in
  // examples/megatron_fsdp/train_llama3_8b_fsdp_h100_fp8.sh).
  const bool fsdp = o.zero_stage >= 2;
  if (o.zero_stage >= 1) a.push_back("--use-distributed-optimizer");
  // The plan overlaps the DP x CP gradient reduction with the last micro-batch's backward (only
  // what outlasts it is exposed); Megatron-LM's DDP reduces after the backward unless told to
  // (--overlap-grad-reduce defaults off; its llama examples set it). The distributed optimizer's
  // parameter all-gather after the step is overlapped with the next forward only where the plan
  // assumes it (options.overlap_param_gather; Megatron-LM asserts --overlap-grad-reduce with it).
  // Hybrid sharding: R distributed-optimizer (or Megatron-FSDP) instances, each over a contiguous
  // slice of (DP x CP) / R ranks of the dp-cp group, CP inner (megatron/core/parallel_state.py:
  // intra_partial_data_parallel_size), the plan's shard groups; the gradient shards are
  // all-reduced across instances (DP replication, --outer-dp-sharding-strategy no_shard, its
  // default, under Megatron-FSDP).
  if (o.dp_replicate > 1) add(a, "--num-distributed-optimizer-instances", o.dp_replicate);
  if (!fsdp && mesh.dp * mesh.cp > 1) a.push_back("--overlap-grad-reduce");
  if (!fsdp && o.zero_stage == 1 && mesh.dp * mesh.cp > 1 && o.overlap_param_gather)
    a.push_back("--overlap-param-gather");
  if (fsdp) {
    a.push_back("--use-megatron-fsdp");
    add(a, "--data-parallel-sharding-strategy", o.zero_stage == 2 ? "optim_grads" : "optim_grads_params");
    add(a, "--ckpt-format", "fsdp_dtensor");
    // The FSDP example disables it; validate_args only warns to "verify that fused gradient
    // accumulation is supported by TransformerEngine for Megatron-FSDP".
    a.push_back("--no-gradient-accumulation-fusion");
  }
  // Gradients reduced in bf16 over a float32 main-gradient buffer (training.grad_reduce_dtype).
  // A float32 parameter gather has no Megatron-LM form (it gathers the 16-bit weights): noted.
  if (e.training.grad_reduce_dtype == DType::bf16 && e.training.dtype == DType::bf16) a.push_back("--grad-reduce-in-bf16");
  if (e.training.param_gather_dtype == DType::fp32 && e.training.dtype != DType::fp32)
    out.notes.push_back("training.param_gather_dtype fp32: Megatron-LM gathers its 16-bit weights; the plan's float32 "
                        "gathers are not expressible");
  if (e.training.optimizer == Optimizer::sgd) add(a, "--optimizer", "sgd");
  // Gradient-norm clipping: Megatron's default is also 1.0; 0 turns it off there as here.
  add(a, "--clip-grad", fmt::format("{}", e.training.clip_grad));

  // Precision.
  switch (e.training.dtype) {
    case DType::bf16: a.push_back("--bf16"); break;
    case DType::fp16:
      a.push_back("--fp16");
      if (fsdp) out.notes.push_back("fp16 with Megatron-FSDP: check that your Megatron-LM supports it (bf16 is the tested path)");
      break;
    case DType::fp32: break;  // Megatron's default
  }
  // training.fp8: the blocks' GEMMs in FP8 through Transformer Engine, attention and the output
  // layer in 16 bits, which is what --fp8-format does (E4M3 forward, E5M2 gradients with
  // "hybrid"; the default delayed-scaling recipe), as examples/llama/train_llama3_8b_h100_fp8.sh
  // runs it. Its --fp8-param-gather (FP8 weights gathered) is left out: the plan gathers 16-bit
  // weights.
  if (e.training.fp8) add(a, "--fp8-format", "hybrid");
  if (e.training.fp8 && e.training.fp8_torchao) {
    out.notes.push_back(
        "training.fp8_impl torchao: Megatron-LM runs its FP8 layers through Transformer Engine, which casts the weights "
        "once per step (and gathers them in 16 bits), where the plan costs torchao's casts in every forward and its FP8 "
        "all-gathers; plan with fp8_impl: transformer_engine to predict this launch");
  }

  // Environment. validate_args (pre-Blackwell GPUs, TP > 1 or CP > 1) asserts
  // CUDA_DEVICE_MAX_CONNECTIONS == "1" without FSDP, so the TP/SP/CP communication kernels are
  // queued in issue order and overlap with compute; Megatron-FSDP asserts it is not "1".
  if (fsdp) {
    out.env.push_back("# Megatron-FSDP (ZeRO-2/3) asserts CUDA_DEVICE_MAX_CONNECTIONS is not 1: leave it unset.");
    out.env.push_back("unset CUDA_DEVICE_MAX_CONNECTIONS");
    if (mesh.tp > 1 || mesh.cp > 1) {
      out.notes.push_back(
          "Megatron-FSDP with TP or CP > 1: Megatron warns that TP/SP communication overlap wants "
          "CUDA_DEVICE_MAX_CONNECTIONS=1 while FSDP needs it > 1; FSDP's requirement wins here");
    }
  } else {
    out.env.push_back(
        "# Megatron-LM asserts CUDA_DEVICE_MAX_CONNECTIONS=1 with TP or CP > 1 (before Blackwell): one hardware "
        "queue keeps communication kernels in issue order so they overlap with compute.");
    out.env.push_back("export CUDA_DEVICE_MAX_CONNECTIONS=1");
  }

  // Run settings (not part of the plan): length of the run and learning rate, from the
  // environment with defaults so the script runs as written. lr 1.5e-4 and cosine decay as in
  // examples/llama/train_llama3_8b_h100_fp8.sh.
  out.run_args = {"--train-iters", "\"$TRAIN_ITERS\"", "--lr", "\"$LR\"", "--min-lr", "\"$MIN_LR\"",
                  "--lr-decay-style", "cosine", "--lr-warmup-iters", "\"$WARMUP_ITERS\"",
                  "--log-interval", "1", "--eval-iters", "0"};
  // Synthetic tokens: NullTokenizer's vocabulary is exactly --vocab-size, so the logits and
  // embedding cost what the plan predicts (Megatron pads it to a multiple of 128 x TP).
  // The dataloader's default causal mask is a seq_len x seq_len tensor per sample, copied to the
  // GPU (core/datasets/gpt_dataset.py, pretrain_gpt.py): 16 GiB at 128K tokens, which the plan
  // does not have; the attention kernels apply the causal mask themselves.
  out.mock_data_args = {"--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", std::to_string(model.vocab),
                        "--no-create-attention-mask-in-dataloader"};
  out.real_data_args = {"--data-path", "\"$DATA_PATH\"", "--tokenizer-type", "HuggingFaceTokenizer",
                        "--tokenizer-model", "\"$TOKENIZER_MODEL\"", "--no-create-attention-mask-in-dataloader"};
  out.notes.push_back(fmt::format(
      "vocabulary {}: the default synthetic data uses exactly this vocabulary; with DATA_PATH the tokenizer's "
      "vocabulary is used. Megatron pads it to a multiple of 128 x TP = {}",
      model.vocab, 128 * mesh.tp));
  return out;
}

namespace {

// A bash word for an argv token: plain tokens as they are, shell expansions ("$X" in double
// quotes) as they are, anything else single-quoted.
std::string shell_word(const std::string& s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s;
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("-_.,:/=+@%").find(c) != std::string::npos;
  });
  if (plain) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Appends a bash array assignment, one flag (and its values) per line. Array elements need no
// backslash continuations, so comments may stand between lines without breaking anything.
void bash_array(std::string& text, const std::string& name, const std::vector<std::string>& tokens,
                const std::string& indent = "") {
  text += indent + name + "=(\n";
  std::string line;
  for (const auto& t : tokens) {
    if (t.rfind("--", 0) == 0 && !line.empty()) {
      text += indent + "  " + line + "\n";
      line.clear();
    }
    if (!line.empty()) line += ' ';
    line += shell_word(t);
  }
  if (!line.empty()) text += indent + "  " + line + "\n";
  text += indent + ")\n";
}

std::string megatron_script(const Experiment& e, const sim::Prediction& p, const std::string& header) {
  const MegatronLaunch l = megatron_launch(e, p);
  std::string t = "#!/usr/bin/env bash\n" + header;
  t += fmt::format("# Flags verified against Megatron-LM {} (commit {}), megatron/training/arguments.py.\n",
                   kMegatronVersion, kMegatronCommit);
  for (const auto& note : l.notes) t += "# note: " + one_line(note) + "\n";
  // Node shape: the cluster's GPUs per node, or the whole plan on one node if it is smaller.
  const int64_t gpus_per_node = std::min<int64_t>(p.mesh.world_size(), std::max<int64_t>(1, e.cluster.gpus_per_node));
  const int64_t nodes = (p.mesh.world_size() + gpus_per_node - 1) / gpus_per_node;
  t += fmt::format(
      "#\n"
      "# Run from the root of a Megatron-LM checkout, once per node:\n"
      "#   NNODES={} NODE_RANK=<0..{}> MASTER_ADDR=<node 0> bash THIS_SCRIPT [more pretrain_gpt.py flags]\n"
      "# Flags given after the script come last and override the ones here (argparse keeps the last).\n"
      "# DATA_PATH=<prefix> TOKENIZER_MODEL=<HF name or path> train on data instead of synthetic tokens.\n",
      nodes, nodes - 1);
  t += "set -euo pipefail\n\n";
  for (const auto& line : l.env) t += line + "\n";
  t += fmt::format(
      "\n# The plan's world size: {} GPUs = NNODES x GPUS_PER_NODE.\n"
      "GPUS_PER_NODE=${{GPUS_PER_NODE:-{}}}\n"
      "NNODES=${{NNODES:-{}}}\n"
      "NODE_RANK=${{NODE_RANK:-0}}\n"
      "MASTER_ADDR=${{MASTER_ADDR:-localhost}}\n"
      "MASTER_PORT=${{MASTER_PORT:-29500}}\n"
      "if [ $((NNODES * GPUS_PER_NODE)) -ne {} ]; then\n"
      "  echo \"this plan needs {} GPUs; NNODES x GPUS_PER_NODE = $((NNODES * GPUS_PER_NODE))\" >&2\n"
      "  exit 2\n"
      "fi\n"
      "TRAIN_ITERS=${{TRAIN_ITERS:-100}}\n"
      "LR=${{LR:-1.5e-4}}\n"
      "MIN_LR=${{MIN_LR:-1.5e-5}}\n"
      "WARMUP_ITERS=${{WARMUP_ITERS:-10}}\n\n",
      p.mesh.world_size(), gpus_per_node, nodes, p.mesh.world_size(), p.mesh.world_size());
  t += "# The plan: model, parallel layout, batch, recompute, optimizer sharding, precision.\n";
  bash_array(t, "PLAN_ARGS", l.args);
  t += "\n# Run settings that are not part of the plan.\n";
  bash_array(t, "RUN_ARGS", l.run_args);
  t += "if [ -n \"${DATA_PATH:-}\" ]; then\n"
       "  : \"${TOKENIZER_MODEL:?set TOKENIZER_MODEL with DATA_PATH}\"\n";
  bash_array(t, "DATA_ARGS", l.real_data_args, "  ");
  t += "else\n  # Synthetic tokens with the plan's vocabulary.\n";
  bash_array(t, "DATA_ARGS", l.mock_data_args, "  ");
  t += "fi\n\n";
  t += "torchrun --nproc-per-node \"$GPUS_PER_NODE\" --nnodes \"$NNODES\" --node-rank \"$NODE_RANK\" \\\n"
       "  --master-addr \"$MASTER_ADDR\" --master-port \"$MASTER_PORT\" \\\n"
       "  pretrain_gpt.py \"${PLAN_ARGS[@]}\" \"${RUN_ARGS[@]}\" \"${DATA_ARGS[@]}\" \"$@\"\n";
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// torchtitan (main at kTorchtitanPythonCommit; v0.2.2)

namespace {

// torchtitan's llama3 flavors (torchtitan/models/llama3/__init__.py at the pinned versions):
// dim, n_layers, n_heads, n_kv_heads, the SwiGLU hidden size its compute_ffn_hidden_dim gives
// (int(ffn_dim_multiplier * int(8 * dim / 3)) rounded up to multiple_of), vocab 128256,
// weight tying, rope theta 500000. 1B and 3B exist only after the Python-config refactor.
struct Flavor {
  const char* name;
  int64_t layers, hidden, heads, kv_heads, ffn_hidden;
  bool tied;
  bool in_toml_release;      // in v0.2.2's llama3_args
  const char* base_function; // config_registry function the Python module starts from
};
constexpr int64_t kFlavorVocab = 128256;
constexpr int64_t kFlavorRopeBase = 500000;
const Flavor kFlavors[] = {
    {"1B", 16, 2048, 32, 8, 8192, true, false, "llama3_8b"},  // multiple_of 1024, multiplier 1.5
    {"3B", 28, 3072, 24, 8, 8192, true, false, "llama3_8b"},  // multiple_of 1024, multiplier 1.0
    {"8B", 32, 4096, 32, 8, 14336, false, true, "llama3_8b"},  // multiple_of 1024, multiplier 1.3
    {"70B", 80, 8192, 64, 8, 28672, false, true, "llama3_70b"},  // multiple_of 4096, multiplier 1.3
    {"405B", 126, 16384, 128, 8, 53248, false, true, "llama3_405b"},  // multiple_of 4096, multiplier 1.2
};

const Flavor& find_flavor(const ModelConfig& m, TorchtitanTarget target) {
  std::string known;
  for (const Flavor& f : kFlavors) {
    if (target == TorchtitanTarget::toml && !f.in_toml_release) continue;
    if (m.layers == f.layers && m.hidden == f.hidden && m.heads == f.heads && m.kv_heads == f.kv_heads &&
        m.head_dim * m.heads == m.hidden && m.ffn_hidden == f.ffn_hidden && m.gated_mlp && m.vocab == kFlavorVocab &&
        m.tied_embeddings == f.tied && m.rope && m.rope_base == kFlavorRopeBase) {
      return f;
    }
    known += fmt::format("{}\"{}\" (layers {}, hidden {}, heads {}/{} kv, ffn {}, {})", known.empty() ? "" : "; ",
                         f.name, f.layers, f.hidden, f.heads, f.kv_heads, f.ffn_hidden, f.tied ? "tied" : "untied");
  }
  throw bad_input(fmt::format(
      "emit torchtitan --target {}: model {} (layers {}, hidden {}, heads {}/{} kv, head_dim {}, ffn {}{}, vocab {}, "
      "{} embeddings, {}) is none of torchtitan's llama3 flavors at {}; a flavor is Python code, not a "
      "setting. Flavors (all SwiGLU, vocab {}, RoPE with rope_base {}): {}",
      to_string(target), m.name, m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim, m.ffn_hidden,
      m.gated_mlp ? " SwiGLU" : " non-gated", m.vocab, m.tied_embeddings ? "tied" : "untied",
      m.rope ? fmt::format("rope_base {}", m.rope_base) : std::string("learned positions"),
      target == TorchtitanTarget::toml ? kTorchtitanTomlVersion : kTorchtitanPythonCommit, kFlavorVocab,
      kFlavorRopeBase, known));
}

}  // namespace

TorchtitanConfig torchtitan_config(const Experiment& e, const sim::Prediction& p, TorchtitanTarget target) {
  const int64_t m = checked_micro_batches(e, p);
  const Mesh& mesh = p.mesh;
  const ParallelOptions& o = p.options;
  const ModelConfig& model = e.model;
  const bool py = target == TorchtitanTarget::python;
  TorchtitanConfig out;
  out.target = target;
  const Flavor& flavor = find_flavor(model, target);
  out.flavor = flavor.name;
  out.base_function = flavor.base_function;
  if (flavor.tied && mesh.pp > 1)
    throw bad_input(fmt::format(
        "emit torchtitan: flavor {} ties its embedding and output weights, and torchtitan's decoder raises "
        "\"Weight tying is not supported with Pipeline Parallel\" (models/common/decoder.py at {}); plan this model "
        "with PP 1",
        flavor.name, kTorchtitanPythonCommit));
  auto set = [&out](const char* section, const char* key, TorchtitanValue v) {
    out.settings.push_back({section, key, std::move(v)});
  };
  // Element-wise work: torchtitan's llama3 block is PyTorch ops (torch.nn.RMSNorm, RoPE, SwiGLU),
  // fused only by torch.compile, so the plan's `elementwise` is compile on or off. compile's
  // default components are the model and the loss: a compiled loss is fused too.
  set("compile", "enable", !e.training.eager_elementwise);
  if (e.training.eager_elementwise && e.training.norm == NormImpl::fused) {
    out.notes.push_back(
        "training.norm fused with elementwise eager is not expressible: torchtitan's norms are torch.nn.RMSNorm, "
        "fused only under torch.compile; emitted compile off, so the norms run eager (slower than the plan)");
  }
  if (!e.training.eager_elementwise && e.training.cross_entropy == CrossEntropy::unfused) {
    out.notes.push_back(
        "training.cross_entropy unfused with fused element-wise ops: compile.enable also compiles torchtitan's loss "
        "(compile.components defaults to model and loss), which fuses the cross-entropy the plan counts op by op; "
        "its memory and time fall below the plan's");
  }
  if (e.training.norm == NormImpl::low_precision) {
    out.notes.push_back(
        "training.norm low_precision is not expressible: torchtitan's norms are torch.nn.RMSNorm in the model's "
        "parameter dtype");
  }
  if (e.training.flash_kernel == FlashKernel::triton && o.attention == AttentionImpl::flash) {
    out.notes.push_back(
        "training.flash_kernel triton is not expressible: torchtitan's attention is PyTorch's "
        "scaled_dot_product_attention (its flash, cuDNN or memory-efficient backend), not the Triton kernel the plan "
        "priced; its attention runs faster than the plan assumed");
  }
  if (e.training.flash_kernel == FlashKernel::fa2 && o.attention == AttentionImpl::flash) {
    out.notes.push_back(
        "training.flash_kernel fa2: torchtitan's attention is PyTorch's scaled_dot_product_attention, whose flash "
        "backend is FlashAttention-2; PyTorch picks the backend per GPU and version (on Hopper, cuDNN's by default "
        "from PyTorch 2.9), so the plan's attention time holds where the flash backend runs");
  }
  if (e.training.eager_elementwise && e.training.cross_entropy != CrossEntropy::unfused) {
    out.notes.push_back(
        std::string("training.cross_entropy ") + to_string(e.training.cross_entropy) +
        ": torchtitan's loss is PyTorch's cross_entropy over logits.float() (12 bytes per logit at its backward, "
        "not the fused loss's " + (e.training.cross_entropy == CrossEntropy::fused_16bit ? "2e" : "e + 4") +
        "); plan with cross_entropy: unfused to predict its memory");
  }
  if (e.training.grad_accumulation == GradAccumulation::fused && m > 1) {
    out.notes.push_back(
        "training.grad_accumulation fused: torchtitan's FSDP sums the micro-batches' gradients outside the GEMMs "
        "(the first cast to float32, each later one added into it); plan with grad_accumulation: inplace to predict "
        "that pass");
  }
  if (!e.training.pytorch_pp_schedule && p.mesh.pp > 1 && m > 1) {
    out.notes.push_back(
        "training.pp_schedule megatron: PyTorch's pipelining keeps the last stage's output (the logits) of every "
        "micro-batch until the step ends, and its Interleaved1F1B keeps the rank-dependent warm-up when the "
        "micro-batches equal the pipeline ranks; plan with pp_schedule: pytorch to predict its memory");
  }
  if (!e.training.tp_dtensor && mesh.tp > 1 && o.sequence_parallel) {
    out.notes.push_back(
        "training.tp_impl megatron: torchtitan's TP is PyTorch DTensor's, whose linear layers keep their all-gathered "
        "input (no backward all-gather) and whose sequence-dim collectives copy through dim 0; this config's "
        "activations are larger and its TP time differs from the plan's (plan with tp_impl: dtensor to predict it)");
  }
  if (e.training.pp_scatter_gather && mesh.pp > 1 && mesh.tp > 1 && !o.sequence_parallel) {
    out.notes.push_back(
        "training.pp_p2p scatter_gather: PyTorch's pipelining sends each stage's whole output; this config moves TP "
        "times the plan's bytes per hop and gathers nothing (plan with pp_p2p: full to predict it)");
  }
  if (!e.training.fsdp_per_parameter && p.options.zero_stage >= 3) {
    out.notes.push_back(
        "training.fsdp flat: torchtitan's FSDP (fully_shard) shards every parameter and copies each gather out of "
        "the all-gather buffer; plan with fsdp: per_parameter to predict that copy");
  }
  if (e.training.autocast) {
    out.notes.push_back(
        "training.mixed_precision autocast: torchtitan runs FSDP's MixedPrecisionPolicy (16-bit weights gathered "
        "from float32 shards, a 16-bit residual stream), not torch.autocast; its activations and peak differ from "
        "the plan's");
  }

  // Data parallelism: torchtitan's DP = replicate x shard. FSDP (fully_shard) shards
  // parameters, gradients and optimizer state over dp_shard x cp (ZeRO-3);
  // fsdp_reshard_after_forward = "never" keeps the gathered parameters from forward to
  // backward, which is ZeRO-2's memory and traffic.
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
          "ZeRO-2-like FSDP with fsdp_reshard_after_forward = \"never\"");
      [[fallthrough]];
    case 2: replicate = 1; shard = mesh.dp; reshard = "never"; break;
    default: replicate = 1; shard = mesh.dp; reshard = "always"; break;  // 3 (checked above)
  }
  // Hybrid sharding: FSDP over dp_shard x cp, replicated data_parallel_replicate_degree times
  // (HSDP on the (dp_replicate, dp_shard) mesh; dp_shard inner, as the plan's shard groups).
  if (o.zero_stage >= 1 && o.dp_replicate > 1) {
    replicate = o.dp_replicate;
    shard = mesh.dp / o.dp_replicate;
  }
  // v0.2.2 runs a replicate-only DP (no shard, no CP) as DDP, which refuses every other parallel
  // dimension (models/llama3/infra/parallelize.py: "DDP has not supported > 1D parallelism");
  // main applies FSDP on the (replicate, shard) mesh whatever the degrees.
  if (!py && shard == 1 && mesh.cp == 1 && replicate > 1) {
    if (mesh.tp > 1 || mesh.pp > 1)
      throw bad_input(fmt::format(
          "emit torchtitan --target toml: ZeRO-0 with DP {} and TP {} PP {} runs as DDP in torchtitan {}, which "
          "raises \"DDP has not supported > 1D parallelism\"; emit with --target python (torchtitan main replicates "
          "through FSDP's mesh), or plan with zero_stage >= 1",
          mesh.dp, mesh.tp, mesh.pp, kTorchtitanTomlVersion));
    out.notes.push_back(
        "ZeRO-0 with DP only: torchtitan v0.2.2 runs DDP under torch.autocast over float32 parameters (not FSDP's "
        "16-bit weights), so its weights and activations differ from the plan's; plan with mixed_precision "
        "autocast to predict it");
  }
  set("parallelism", "data_parallel_replicate_degree", replicate);
  set("parallelism", "data_parallel_shard_degree", shard);
  set("parallelism", "fsdp_reshard_after_forward", reshard);
  set("parallelism", "tensor_parallel_degree", mesh.tp);
  if (mesh.tp > 1) {
    if (py) {
      set("parallelism", "enable_sequence_parallel", o.sequence_parallel);
    } else if (!o.sequence_parallel) {
      out.notes.push_back(
          "TP without sequence parallelism is not expressible in v0.2.2: its tensor parallel plan always shards "
          "norms along the sequence (sequence parallel)");
    }
    // tp_overlap: torchtitan's vanilla TP (DTensor) runs no TP collective behind a GEMM (`none`);
    // async TP, an Inductor pass under torch.compile, pipelines the sequence-parallel all-gathers
    // and reduce-scatters with their matmuls (`pipelined`). Written either way, so that a base
    // config's own setting does not decide it (compile.enable_async_tensor_parallel at main,
    // parallelism.enable_async_tensor_parallel in v0.2.2; both need compile).
    if (o.tp_overlap == TpOverlap::pipelined && e.training.eager_elementwise) {
      out.notes.push_back(
          "tp_overlap pipelined needs torch.compile in torchtitan (async TP is an Inductor pass), which the plan's "
          "eager element-wise ops turn off: TP runs vanilla, slower than the plan (plan with elementwise fused, or "
          "with tp_overlap none)");
    }
    if (o.tp_overlap == TpOverlap::backward) {
      out.notes.push_back(
          "tp_overlap backward (Megatron-LM's asynchronous backward collectives): torchtitan's vanilla TP runs none "
          "of its TP collectives behind a GEMM, so it should run somewhat slower than predicted (plan with "
          "tp_overlap none for vanilla TP, or pipelined for async TP)");
    }
  }
  // Async TP written whatever TP is: a base recipe's own setting (llama3_405b turns it on) with
  // compile off is refused by CompileConfig ("Async TP requires 'model' in --compile.components
  // and --compile.enable").
  set(py ? "compile" : "parallelism", "enable_async_tensor_parallel",
      mesh.tp > 1 && o.tp_overlap == TpOverlap::pipelined && !e.training.eager_elementwise);
  set("parallelism", "context_parallel_degree", mesh.cp);
  if (mesh.cp > 1) {
    // "headtail" gives CP rank r the chunks r and 2*CP-1-r: ringplan's zigzag.
    switch (o.cp_scheme) {
      case CpScheme::zigzag: set("parallelism", "context_parallel_load_balancer", std::string("headtail")); break;
      case CpScheme::contiguous:
        if (py) {
          // None disables load balancing: each rank holds one contiguous chunk. Written as the
          // Python None (TorchtitanValue has no null; the writer maps the empty string to None).
          set("parallelism", "context_parallel_load_balancer", std::string());
        } else {
          out.notes.push_back(
              "cp_scheme contiguous is not expressible in TOML: it is context_parallel_load_balancer = None, and "
              "TOML has no null; the run will use the default \"headtail\" (zigzag)");
        }
        break;
      case CpScheme::striped:
        out.notes.push_back(
            "cp_scheme striped is not expressible: torchtitan balances with \"headtail\" (ringplan's zigzag) or "
            "\"ptrr\" (FlexAttention only); the run will use headtail");
        set("parallelism", "context_parallel_load_balancer", std::string("headtail"));
        break;
    }
    if (py && o.cp_comm != CpComm::allgather) {
      // main's llama3 attention gathers K,V over CP at its local_map boundary (models/llama3/
      // sharding.py: set_gqa_inner_attention_local_map, "the local_map boundary all-gathers
      // k/v"): no rotation, no head split.
      out.notes.push_back(fmt::format(
          "cp_comm {}: torchtitan main's context parallelism all-gathers K,V before attention and reduces dK,dV "
          "after it (ringplan's allgather) whatever the plan says; its time and memory differ from the plan's "
          "prediction: plan with cp_comm allgather for the Python target, or emit --target toml",
          to_string(o.cp_comm)));
    }
    if (!py && o.cp_comm == CpComm::hybrid) {
      // No hierarchical (all-to-all + ring) method in torchtitan either.
      out.notes.push_back(fmt::format(
          "cp_comm hybrid (all-to-all in groups of {} CP ranks, ring across groups; Megatron's a2a+p2p) is not "
          "supported by torchtitan: its context parallelism only exchanges K,V shards; the emitted config runs the "
          "ring (\"alltoall\" rotation) over all {} CP ranks, whose time and memory differ from the plan's "
          "prediction: plan with cp_comm ring for torchtitan",
          sim::cp_a2a_size_of(e, mesh, o), mesh.cp));
    }
    if (!py && o.cp_comm == CpComm::alltoall) {
      // torchtitan's context parallelism (PyTorch's context_parallel) only rotates K,V shards
      // ("allgather" or "alltoall" rotation, both of K,V for ring-style attention); it has no
      // head-sharding all-to-all (Ulysses) method.
      out.notes.push_back(
          "cp_comm alltoall (DeepSpeed-Ulysses, heads split over CP) is not supported by torchtitan: its context "
          "parallelism only exchanges K,V shards (context_parallel_rotate_method allgather or alltoall, the latter "
          "being a K,V rotation, ringplan's ring, not Ulysses); the emitted config runs the ring (\"alltoall\" "
          "rotation), whose time and memory differ from the plan's prediction: plan with cp_comm ring for torchtitan");
    }
    if (!py) {
      // PyTorch's context_parallel "alltoall" rotater passes each K,V shard to the next rank
      // per step (a ring); "allgather" (v0.2.2's default) gathers all of K,V first.
      set("parallelism", "context_parallel_rotate_method",
          std::string(o.cp_comm == CpComm::allgather ? "allgather" : "alltoall"));
    }
  }

  set("parallelism", "pipeline_parallel_degree", mesh.pp);
  if (mesh.pp > 1) {
    // Stage arithmetic (distributed/pipeline_parallel.py, both versions): with
    // pipeline_parallel_layers_per_stage = k, stages = ceil((L + first_less + last_less) / k)
    // must be a multiple of PP, exactly 1 per rank for single-stage schedules (1F1B) and >= 2
    // for looped ones (Interleaved1F1B). first/last_stage_less_layers default to 1 each, which
    // makes k = L / (PP x v) give one stage too many; setting both to 0 gives exactly PP x v
    // stages of k layers, the embedding on the first and norm + output on the last.
    const int64_t v = o.interleave;
    set("parallelism", "pipeline_parallel_schedule", std::string(v > 1 ? "Interleaved1F1B" : "1F1B"));
    if (std::string why = sim::pipeline_split_problem(model.layers, mesh.pp, o); !why.empty())
      throw bad_input("emit torchtitan: " + why);
    if (!o.uneven_pipeline() && model.layers % (mesh.pp * v) == 0) {
      set("parallelism", "pipeline_parallel_layers_per_stage", model.layers / (mesh.pp * v));
      set("parallelism", "pipeline_parallel_first_stage_less_layers", int64_t{0});
      set("parallelism", "pipeline_parallel_last_stage_less_layers", int64_t{0});
    } else {
      // The cost model's split (core/pipeline_split.hpp) as the module names of each virtual
      // stage, stage k on rank k % PP as torchtitan's looped schedules place them, spelled as
      // torchtitan's own generator spells them ("output" in v0.2.2, "lm_head" after the
      // refactor).
      const int64_t stages = mesh.pp * v;
      std::vector<int64_t> n;
      for (int64_t k = 0; k < stages; ++k) n.push_back(chunk_layers(model.layers, mesh.pp, o, k % mesh.pp, k / mesh.pp));
      std::vector<std::vector<std::string>> parts;
      int64_t next = 0;
      for (int64_t stage = 0; stage < stages; ++stage) {
        std::vector<std::string> names;
        if (stage == 0) names.push_back("tok_embeddings");
        for (int64_t l = 0; l < n[stage]; ++l) names.push_back(fmt::format("layers.{}", next++));
        if (stage == stages - 1) {
          names.push_back("norm");
          names.push_back(py ? "lm_head" : "output");
        }
        parts.push_back(std::move(names));
      }
      set("parallelism", "module_fqns_per_model_part", std::move(parts));
      out.notes.push_back(fmt::format("uneven pipeline: {} layers on {} stages: {} per stage", model.layers, stages,
                                      describe_split(n)));
    }
    if (v > 1) {
      // PyTorch's ScheduleInterleaved1F1B (torch 2.15 torch/distributed/pipelining/schedules.py)
      // runs rounds = max(1, m // PP) and raises unless m % rounds == 0.
      const int64_t rounds = std::max<int64_t>(1, m / mesh.pp);
      if (m % rounds != 0) {
        throw bad_input(fmt::format(
            "emit torchtitan: Interleaved1F1B with {} micro-batches on PP={} runs {} rounds and PyTorch requires the "
            "micro-batches to be a multiple of the rounds; choose a global batch giving a multiple of {} or of {}",
            m, mesh.pp, rounds, mesh.pp, rounds));
      }
    }
    if (py) {
      set("parallelism", "num_pp_microbatches", m);
      // Trainer.Config.__post_init__ (trainer.py _validate_cuda_graphs) raises "CUDA graphs do
      // not support pipeline parallelism yet" unless they are turned off; they are on by default.
      set("training", "disable_cuda_graphs", true);
    } else {
      set("parallelism", "pipeline_parallel_microbatch_size", o.micro_batch);
    }
  } else if (o.interleave > 1) {
    out.notes.push_back(fmt::format("interleave {} ignored: virtual pipeline stages need PP > 1", o.interleave));
  }

  // Activation checkpointing.
  if (py) {
    out.activation_checkpoint = o.recompute == Recompute::none   ? "None"
                                : o.recompute == Recompute::full ? "FullAC.Config()"
                                                                 : "SelectiveAC.Config()";
  } else {
    const bool selective = o.recompute == Recompute::selective || o.recompute == Recompute::selective_op;
    set("activation_checkpoint", "mode", std::string(selective ? "selective" : to_string(o.recompute)));
    if (selective) set("activation_checkpoint", "selective_ac_option", std::string("op"));
  }
  // torchtitan's full AC is PyTorch's non-reentrant checkpoint, which stops before each block's
  // last GEMM (PyTorch >= 2.1; torch.compile likewise): say so where the plan priced the whole block.
  if (o.recompute == Recompute::full && !e.training.recompute_early_stop) {
    out.notes.push_back(
        "full recompute: torchtitan's non-reentrant checkpoint (PyTorch >= 2.1, or torch.compile) does not re-run "
        "each block's MLP down projection (eager FP8 linear layers excepted); the plan priced the whole block again "
        "(set training.recompute_early_stop: true to predict what this config runs)");
  }
  // torchtitan's selective mode is its per-op policy, which is ringplan's selective_op exactly.
  if (o.recompute == Recompute::selective) {
    out.notes.push_back(
        "selective recompute: torchtitan's per-op policy saves attention and every other matmul output and "
        "recomputes the rest (ringplan's selective_op), not ringplan's Korthikanti selective (attention core "
        "only); plan with recompute selective_op to predict what this config runs");
  }

  // Batch. python: tokens per DP rank per model forward = micro_batch x seq_len; with PP a
  // train step is one schedule of num_pp_microbatches = m micro-batches, without PP torchtitan
  // accumulates gradients over tokens_per_step / (tokens per forward x DP) = m forwards.
  // v0.2.2: with PP the local batch (micro_batch x m) is split into micro-batches of
  // pipeline_parallel_microbatch_size; without PP it accumulates GBS / (local x DP) = m steps.
  if (py) {
    set("training", "num_tokens_per_microbatch_per_dp_rank", o.micro_batch * e.training.seq_len);
    set("training", "num_tokens_per_train_step", e.training.global_batch_sequences * e.training.seq_len);
    set("training", "max_context_length", e.training.seq_len);
    // trainer.py requires the tokens of a micro-batch divisible by TP (with SP) x 2*CP (CP > 1).
    const int64_t divisor = (mesh.tp > 1 && o.sequence_parallel ? mesh.tp : 1) * (mesh.cp > 1 ? 2 * mesh.cp : 1);
    if ((o.micro_batch * e.training.seq_len) % divisor != 0) {
      throw bad_input(fmt::format(
          "emit torchtitan: {} tokens per micro-batch are not divisible by TP x 2*CP = {}, which torchtitan requires",
          o.micro_batch * e.training.seq_len, divisor));
    }
  } else {
    set("training", "local_batch_size", mesh.pp > 1 ? o.micro_batch * m : o.micro_batch);
    set("training", "global_batch_size", e.training.global_batch_sequences);
    set("training", "seq_len", e.training.seq_len);
  }
  // FSDP's MixedPrecisionPolicy: the gathered parameters' dtype (training.param_gather_dtype,
  // else the training dtype) and the gradient reduction's (training.grad_reduce_dtype; unset,
  // torchtitan's default float32 is left alone).
  const DType gathered = e.training.param_gather_dtype.value_or(e.training.dtype);
  switch (gathered) {
    case DType::bf16: set("training", "mixed_precision_param", std::string("bfloat16")); break;
    case DType::fp32: set("training", "mixed_precision_param", std::string("float32")); break;
    case DType::fp16:
      set("training", "mixed_precision_param", std::string("bfloat16"));
      out.notes.push_back("fp16 is not expressible: torchtitan's mixed_precision_param is bfloat16 or float32; emitted bfloat16");
      break;
  }
  if (e.training.grad_reduce_dtype) {
    const bool bf16_reduce = *e.training.grad_reduce_dtype != DType::fp32;
    set("training", "mixed_precision_reduce", std::string(bf16_reduce ? "bfloat16" : "float32"));
    if (bf16_reduce)
      out.notes.push_back(
          "training.grad_reduce_dtype bf16: torchtitan declares mixed_precision_reduce as Literal[\"float32\"] "
          "(config/configs.py; job_config.py in v0.2.2): its config parser warns and keeps \"bfloat16\", which FSDP "
          "applies");
  }

  // torchtitan clips every step (training.max_norm, default 1.0) and has no switch to turn it off.
  if (e.training.clip_grad > 0) {
    set("training", "max_norm", e.training.clip_grad);
  } else {
    out.notes.push_back(
        "clip_grad 0 (no clipping) is not expressible: torchtitan always clips at training.max_norm; left at its "
        "default 1.0");
  }

  if (!py) {
    set("model", "name", std::string("llama3"));
    set("model", "flavor", std::string(flavor.name));
  }

  if (o.attention == AttentionImpl::materialized) {
    out.notes.push_back(
        "materialized attention is not expressible: torchtitan runs SDPA/flex attention (flash-style; context "
        "parallel needs it)");
  }
  if (model.dropout > 0) {
    out.notes.push_back(fmt::format("dropout {} is not expressible: torchtitan's llama3 has no dropout", model.dropout));
  }
  if (e.training.optimizer == Optimizer::sgd) {
    out.notes.push_back("optimizer sgd is not emitted: set the optimizer by hand (torchtitan's recipes use AdamW)");
  }
  if (!e.training.causal) out.notes.push_back("non-causal attention: torchtitan's llama3 model is always causal");
  // training.fp8: the blocks' linear layers in Float8 (torchao), the output layer in 16 bits as the
  // plan has it (filter_fqns: "lm_head" at main, "output" in v0.2.2). main: the converter is part
  // of the model spec, written over the base recipe's (llama3_405b's carries Float8); v0.2.2: the
  // model.converters list and the [quantize.linear.float8] section.
  const bool compiled = !e.training.eager_elementwise;
  if (py) {
    out.model_spec = fmt::format("model_registry({})", python_string(flavor.name));
    if (e.training.fp8) {
      out.model_spec = fmt::format(
          "model_registry({}, converters=[Float8LinearConverter.Config(filter_fqns=[\"lm_head\"], "
          "model_compile_enabled={})])",
          python_string(flavor.name), compiled ? "True" : "False");
      out.float8_converter = true;
    }
  } else if (e.training.fp8) {
    set("model", "converters", std::vector<std::string>{"quantize.linear.float8"});
    set("quantize.linear.float8", "filter_fqns", std::vector<std::string>{"output"});
    // The plan's casts are torchao's tensorwise ones (fp8_impl torchao), v0.2.2's default recipe;
    // fp8_all_gather is its FSDP float8 all-gather with the scales precomputed once per step.
    if (e.training.fp8_torchao && e.training.fp8_all_gather) {
      set("quantize.linear.float8", "enable_fsdp_float8_all_gather", true);
      set("quantize.linear.float8", "precompute_float8_dynamic_scale_for_fsdp", true);
    }
  }
  if (e.training.fp8 && !e.training.fp8_torchao) {
    out.notes.push_back(
        "training.fp8_impl transformer_engine: torchtitan's Float8 layers are torchao's, which cast every weight again in "
        "each forward and all-gather TP inputs in FP8; plan with fp8_impl: torchao to predict this config");
  }
  if (py && e.training.fp8 && e.training.fp8_torchao) {
    out.notes.push_back(
        "training.fp8_impl torchao: torchtitan main's Float8LinearConverter runs the rowwise recipe and has no FSDP "
        "float8 all-gather; the plan costs tensorwise scaling (v0.2.2's default: emit with --target toml)");
  }
  return out;
}

std::string toml_string(const std::string& s) {
  std::ostringstream os;
  os << toml::value<std::string>(s);
  return os.str();
}

std::string python_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

namespace {

std::string python_value(const TorchtitanValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "True" : "False";
  if (const auto* s = std::get_if<std::string>(&v)) return s->empty() ? "None" : python_string(*s);
  if (const auto* d = std::get_if<double>(&v)) {
    // Shortest round-trip form, with a decimal point so Python reads a float.
    std::string f = fmt::format("{}", *d);
    return f.find_first_of(".en") == std::string::npos ? f + ".0" : f;
  }
  if (const auto* list = std::get_if<std::vector<std::string>>(&v)) {
    std::string out = "[";
    for (size_t i = 0; i < list->size(); ++i) out += (i ? ", " : "") + python_string((*list)[i]);
    return out + "]";
  }
  std::string out = "[";
  for (const auto& part : std::get<std::vector<std::vector<std::string>>>(v)) {
    out += out.size() > 1 ? ", [" : "[";
    for (size_t i = 0; i < part.size(); ++i) out += (i ? ", " : "") + python_string(part[i]);
    out += "]";
  }
  return out + "]";
}

std::string torchtitan_python(const Experiment& e, const sim::Prediction& p, const std::string& header) {
  const TorchtitanConfig c = torchtitan_config(e, p, TorchtitanTarget::python);
  std::string t = header;
  t += fmt::format("# Config fields verified against torchtitan main at commit {} (Python config registry).\n",
                   kTorchtitanPythonCommit);
  for (const auto& note : c.notes) t += "# note: " + one_line(note) + "\n";
  t += fmt::format(
      "#\n"
      "# Save as ringplan_plan.py in a folder on PYTHONPATH and run from the torchtitan repository root:\n"
      "#   NGPU={} MODULE=ringplan_plan CONFIG=ringplan_plan ./run_train.sh\n"
      "# (one node; for several nodes run torchrun -m torchtitan.train --module ringplan_plan --config ringplan_plan\n"
      "#  with the plan's {} GPUs in total).\n",
      p.mesh.world_size(), p.mesh.world_size());
  t += "from torchtitan.config import ParallelismConfig\n";
  if (c.activation_checkpoint != "None") t += "from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC\n";
  if (c.float8_converter) t += "from torchtitan.components.quantization import Float8LinearConverter\n";
  t += "from torchtitan.models.llama3 import model_registry\n";
  t += fmt::format("from torchtitan.models.llama3.config_registry import {}\n", c.base_function);
  t += "from torchtitan.trainer import Trainer\n\n\n";
  t += "def ringplan_plan() -> Trainer.Config:\n";
  t += fmt::format("    config = {}()\n", c.base_function);
  // The model spec replaces the base's: for 1B and 3B (no config_registry function of their own:
  // llama3_8b's run settings, same tokenizer and vocabulary, so its loss config stays valid), and
  // for every flavor so that the plan's precision, not the base recipe's converters, decides.
  t += fmt::format("    config.model_spec = {}\n", c.model_spec);
  // The parallelism is replaced whole, so nothing of the base recipe's layout survives.
  t += "    config.parallelism = ParallelismConfig(\n";
  for (const auto& s : c.settings) {
    if (s.section == "parallelism") t += fmt::format("        {}={},\n", s.key, python_value(s.value));
  }
  t += "    )\n";
  for (const auto& s : c.settings) {
    if (s.section != "parallelism") t += fmt::format("    config.{}.{} = {}\n", s.section, s.key, python_value(s.value));
  }
  t += fmt::format("    config.activation_checkpoint = {}\n", c.activation_checkpoint);
  t += "    return config\n";
  return t;
}

std::string torchtitan_toml(const Experiment& e, const sim::Prediction& p, const std::string& header) {
  const TorchtitanConfig c = torchtitan_config(e, p, TorchtitanTarget::toml);
  std::string t = header;
  t += fmt::format("# Keys verified against torchtitan {} (commit {}), torchtitan/config/job_config.py.\n",
                   kTorchtitanTomlVersion, kTorchtitanTomlCommit);
  for (const auto& note : c.notes) t += "# note: " + one_line(note) + "\n";
  t += fmt::format(
      "#\n# Run from a torchtitan {} checkout: NGPU={} CONFIG_FILE=THIS_FILE ./run_train.sh\n\n",
      kTorchtitanTomlVersion, p.mesh.world_size());
  // Written by toml++, a real TOML writer: strings are escaped per the TOML spec. Sections and
  // keys come out in toml++'s (sorted) order.
  toml::table doc;
  for (const auto& s : c.settings) {
    // A dotted section ("quantize.linear.float8") is a table nested in tables.
    toml::table* table = &doc;
    for (size_t start = 0; start <= s.section.size();) {
      const size_t dot = std::min(s.section.find('.', start), s.section.size());
      const std::string name = s.section.substr(start, dot - start);
      if (!table->contains(name)) table->insert(name, toml::table{});
      table = (*table)[name].as_table();
      start = dot + 1;
    }
    toml::table& section = *table;
    std::visit(
        [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<V, std::vector<std::string>>) {
            toml::array list;
            for (const auto& name : v) list.push_back(name);
            section.insert_or_assign(s.key, std::move(list));
          } else if constexpr (std::is_same_v<V, std::vector<std::vector<std::string>>>) {
            toml::array outer;
            for (const auto& part : v) {
              toml::array inner;
              for (const auto& name : part) inner.push_back(name);
              outer.push_back(std::move(inner));
            }
            section.insert_or_assign(s.key, std::move(outer));
          } else {
            section.insert_or_assign(s.key, v);
          }
        },
        s.value);
  }
  std::ostringstream os;
  os << doc << "\n";
  return t + os.str();
}

}  // namespace

std::string emit_plan(Format format, const Experiment& e, const sim::Prediction& p, const EmitOptions& options) {
  const std::string header = fmt::format(
      "# ringplan plan for {} ({} on {} GPUs of {}): {}, micro-batch {}, cp_scheme {}, recompute {}, ZeRO-{}\n"
      "# predicted: step {}, {}, MFU {}, peak memory {} of {}\n",
      one_line(e.name), one_line(e.model.name), format::format_count(p.mesh.world_size()), one_line(e.cluster.name),
      mesh_text(p.mesh), p.options.micro_batch, to_string(p.options.cp_scheme), to_string(p.options.recompute),
      p.options.zero_stage, format::format_time_s(p.step_time_s), format::format_tokens_per_s(p.tokens_per_s),
      format::format_pct(100.0 * p.mfu), format::format_bytes(p.peak_memory_bytes),
      format::format_bytes(p.capacity_bytes));
  if (format == Format::megatron) return megatron_script(e, p, header);
  return options.torchtitan_target == TorchtitanTarget::python ? torchtitan_python(e, p, header)
                                                               : torchtitan_toml(e, p, header);
}

}  // namespace ringplan::report
