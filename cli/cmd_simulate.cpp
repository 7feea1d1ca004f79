// `ringplan simulate EXPERIMENT.yaml --mesh dp=D,tp=T,cp=C,pp=P [options] [--format table|json]
//                    [-o PLAN.yaml]`
// Predicts one layout: memory and time term by term (sim/cost_model.hpp). Every option may
// be fixed in the experiment file; a flag given here overrides the file. A plan file
// (`ringplan plan -o PLAN.yaml`) is an experiment with mesh and options fixed; -o writes the
// simulated layout as one. A layout that does not fit in memory is reported in full, then
// exits 3 (and no plan file is written).
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli/command.hpp"
#include "sim/ring_event_sim.hpp"
#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "cli/cli_args.hpp"
#include "planner/plan_file.hpp"
#include "planner/report.hpp"
#include "sim/cost_model.hpp"

namespace {

struct SimulateArgs {
  std::string experiment;
  std::string mesh, recompute, sequence_parallel, cp_scheme, attention, cp_comm, tp_overlap;
  std::string pp_embedding_slot, pp_loss_slot, overlap_param_gather;
  int64_t micro_batch = 0, zero = 0, interleave = 0, gpus = 0, cp_a2a_size = 0, pp_first_layers = 0, pp_last_layers = 0,
          dp_replicate = 0;
  std::string format = "table";
  std::string trace;  // Chrome/Perfetto trace of one layer's CP attention (event simulator)
  std::string output;  // plan file of the simulated layout (-o)
  // Which flags were given (count() > 0): only those override the file.
  CLI::Option *mesh_opt = nullptr, *mb_opt = nullptr, *rc_opt = nullptr, *zero_opt = nullptr, *sp_opt = nullptr,
              *scheme_opt = nullptr, *v_opt = nullptr, *attn_opt = nullptr, *comm_opt = nullptr,
              *tpo_opt = nullptr, *a2a_opt = nullptr, *ppf_opt = nullptr, *ppl_opt = nullptr, *ppe_opt = nullptr,
              *ppls_opt = nullptr, *opg_opt = nullptr, *rep_opt = nullptr;
};

int run_simulate(const SimulateArgs& a) {
  using namespace ringplan;
  using namespace ringplan::planner;
  if (!a.trace.empty()) check_output_path(a.trace, "--trace");
  if (!a.output.empty()) check_output_path(a.output, "-o");
  Experiment e = load_experiment_or_plan(a.experiment);
  if (a.mesh_opt->count()) e.mesh = parse_mesh_spec("--mesh", a.mesh);
  if (!e.mesh)
    throw bad_input(fmt::format("{}: no mesh: give --mesh dp=D,tp=T,cp=C,pp=P or a `mesh:` in the experiment file "
                                "(or use `ringplan plan` to search for one)",
                                a.experiment));
  ParallelOptions& o = e.options;
  if (a.mb_opt->count()) o.micro_batch = parse_positive_flag("--micro-batch", a.micro_batch);
  if (a.rc_opt->count()) o.recompute = parse_recompute_flag("--recompute", a.recompute);
  if (a.zero_opt->count()) o.zero_stage = parse_zero_stage_flag("--zero", a.zero);
  if (a.sp_opt->count()) o.sequence_parallel = parse_on_off_flag("--sequence-parallel", a.sequence_parallel);
  if (a.scheme_opt->count()) o.cp_scheme = parse_cp_scheme_flag("--cp-scheme", a.cp_scheme);
  if (a.v_opt->count()) o.interleave = parse_positive_flag("--interleave", a.interleave);
  if (a.attn_opt->count()) o.attention = parse_attention_flag("--attention", a.attention);
  if (a.comm_opt->count()) o.cp_comm = parse_cp_comm_flag("--cp-comm", a.cp_comm);
  if (a.tpo_opt->count()) o.tp_overlap = parse_tp_overlap_flag("--tp-overlap", a.tp_overlap);
  if (a.ppf_opt->count()) o.pp_first_layers = parse_positive_flag("--pp-first-layers", a.pp_first_layers);
  if (a.ppl_opt->count()) o.pp_last_layers = parse_positive_flag("--pp-last-layers", a.pp_last_layers);
  if (a.ppe_opt->count()) o.pp_embedding_slot = parse_on_off_flag("--pp-embedding-slot", a.pp_embedding_slot);
  if (a.ppls_opt->count()) o.pp_loss_slot = parse_on_off_flag("--pp-loss-slot", a.pp_loss_slot);
  if (a.opg_opt->count())
    o.overlap_param_gather = parse_on_off_flag("--overlap-param-gather", a.overlap_param_gather);
  if (a.rep_opt->count()) o.dp_replicate = parse_positive_flag("--dp-replicate", a.dp_replicate);
  if (a.a2a_opt->count()) {
    if (o.cp_comm != CpComm::hybrid)
      throw bad_input(fmt::format("--cp-a2a-size is the all-to-all group size of cp_comm hybrid; the layout has cp_comm "
                                  "{} (add --cp-comm hybrid)",
                                  to_string(o.cp_comm)));
    o.cp_a2a_size = parse_positive_flag("--cp-a2a-size", a.cp_a2a_size);
  }

  const int64_t gpus = experiment_gpus(e, a.gpus);
  check_mesh_gpus(*e.mesh, gpus, a.mesh_opt->count() ? "--mesh" : mesh_where(e), e.training.global_batch_sequences,
                  o.micro_batch);
  const std::string why = sim::check_layout(e, *e.mesh, o, gpus);
  if (!why.empty())
    throw bad_input(fmt::format("layout {} {} cannot run: {}", mesh_text(*e.mesh), options_text(*e.mesh, o), why));
  if (!a.trace.empty()) {  // refused before any output
    if (e.mesh->cp <= 1)
      throw bad_input("--trace shows the attention of a CP group: the layout has cp=1, so there is no CP group");
    // The replay holds every rank's every step: events and memory grow as CP^2 (CP 256: about
    // 1 GB and a 50 MB trace, already more than a trace viewer shows usefully; CP 16384 ran out of
    // memory). The pattern is the same at smaller CP.
    constexpr int64_t kMaxTraceCp = 256;
    if (e.mesh->cp > kMaxTraceCp)
      throw bad_input(fmt::format("--trace: a CP group of {} ranks is too large to replay event by event (its events "
                                  "grow as CP^2); valid: cp <= {} (the same layout with a smaller --mesh cp shows "
                                  "the pattern)",
                                  e.mesh->cp, kMaxTraceCp));
  }
  const sim::Prediction p = sim::predict(e, *e.mesh, o);
  if (a.format == "json") {
    nlohmann::json j = prediction_json(p);
    j["schema_version"] = kJsonSchemaVersion;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    // A named flash kernel is named where it prices the attention (its own curve, not `attention`),
    // an early-stopped recompute where full recompute runs (it re-runs less than the forward).
    std::fputs(fmt::format("{}: {} on {} x {}, seq {} tokens, global batch {} sequences{}\n",
                           e.name.empty() ? e.path : e.name, e.model.name, format::format_count(gpus), e.cluster.name,
                           format::format_count(e.training.seq_len),
                           format::format_count(e.training.global_batch_sequences),
                           planner::training_header_notes(e.training, o.attention == AttentionImpl::flash,
                                                          o.recompute == Recompute::full))
                   .c_str(),
               stdout);
    std::fputs(prediction_text(e, p).c_str(), stdout);
  }
  if (!a.trace.empty()) {
    // The event simulator replays one layer of one CP group with the layout's cp_comm, rank by
    // rank (ring steps, collectives, kernels), in the event vocabulary of `ringplan run --trace`.
    const sim::RingSimulation cp = sim::simulate_cp_layer(sim::ring_shape_for(e, *e.mesh, o), e.cluster, true);
    write_file_atomic(a.trace, sim::ring_trace_json(cp), "--trace");
    std::fprintf(stderr, "wrote %s CP trace (one layer, one CP group of %lld ranks) to %s\n", to_string(o.cp_comm),
                 static_cast<long long>(e.mesh->cp), a.trace.c_str());
  }
  if (!p.fits)
    throw no_fit(fmt::format("layout {} {} does not fit: it needs {} per GPU, the GPUs have {}{}", mesh_text(p.mesh),
                             options_text(p.mesh, p.options), format::format_bytes(p.peak_memory_bytes),
                             format::format_bytes(p.capacity_bytes), a.output.empty() ? "" : "; no plan file written"));
  if (!a.output.empty()) {
    write_plan_file(a.output, e, p);  // whole or not at all (core/atomic_file.hpp)
    std::fprintf(stderr, "wrote plan %s (%s) to %s\n", mesh_text(p.mesh).c_str(),
                 options_text(p.mesh, p.options).c_str(), a.output.c_str());
  }
  return 0;
}

RINGPLAN_COMMAND("simulate", "Predict memory and step time of one layout, term by term", 20, [](CLI::App& app) {
  auto a = std::make_shared<SimulateArgs>();
  app.add_option("experiment", a->experiment, "Experiment or plan YAML")->required();
  app.add_option("-o,--output", a->output,
                 "Write the simulated layout as a plan file (PLAN.yaml, for `ringplan run`); not written when it "
                 "does not fit");
  app.add_option("--trace", a->trace, "Write the event simulator's timeline of one layer's attention on one CP group (ring steps, or the "
                 "collectives of allgather, alltoall, hybrid) as Chrome/Perfetto trace JSON");
  a->mesh_opt = app.add_option("--mesh", a->mesh, "Mesh dp=D,tp=T,cp=C,pp=P (product = GPUs; overrides the file)");
  a->mb_opt = app.add_option("--micro-batch", a->micro_batch, "Sequences per micro-batch per DP replica");
  a->rc_opt = app.add_option("--recompute", a->recompute, "Activation recompute: none, selective (attention core), full, selective_op (torchtitan per-op policy)");
  a->zero_opt = app.add_option("--zero", a->zero, "ZeRO stage 0..3 (sharded over DP x CP, or DP / R x CP with --dp-replicate R)");
  a->sp_opt = app.add_option("--sequence-parallel", a->sequence_parallel, "Megatron sequence parallelism: on, off");
  a->scheme_opt = app.add_option("--cp-scheme", a->cp_scheme, "Sequence sharding: contiguous, zigzag, striped");
  a->v_opt = app.add_option("--interleave", a->interleave, "Virtual pipeline stages per device (PP > 1)");
  a->attn_opt = app.add_option("--attention", a->attention, "Attention kernel: flash, materialized");
  a->comm_opt = app.add_option("--cp-comm", a->cp_comm, "CP exchange: ring (p2p K,V, overlapped), allgather (K,V gathered), alltoall (Ulysses: heads split over CP), hybrid (all-to-all in groups of --cp-a2a-size ranks, ring across groups)");
  a->a2a_opt = app.add_option("--cp-a2a-size", a->cp_a2a_size,
                              "cp_comm hybrid: CP ranks per all-to-all group (divides CP; default: the largest that "
                              "splits the heads per TP rank and stays inside a node)");
  a->tpo_opt = app.add_option("--tp-overlap", a->tp_overlap,
                              "TP collectives overlapped with GEMMs: none, backward (Megatron's async, default), "
                              "pipelined (Transformer Engine --tp-comm-overlap, needs sequence parallelism)");
  a->ppf_opt = app.add_option("--pp-first-layers", a->pp_first_layers,
                              "Layers on the first pipeline rank (Megatron --decoder-first-pipeline-num-layers)");
  a->ppl_opt = app.add_option("--pp-last-layers", a->pp_last_layers,
                              "Layers on the last pipeline rank (Megatron --decoder-last-pipeline-num-layers)");
  a->ppe_opt = app.add_option("--pp-embedding-slot", a->pp_embedding_slot,
                              "The embedding takes a layer's slot on the first pipeline rank: on, off");
  a->ppls_opt = app.add_option("--pp-loss-slot", a->pp_loss_slot,
                               "The output layer and loss take a layer's slot on the last pipeline rank: on, off");
  a->opg_opt = app.add_option("--overlap-param-gather", a->overlap_param_gather,
                              "ZeRO 1/2: all-gather the updated parameters behind the next step's first forward "
                              "(Megatron --overlap-param-gather): on, off");
  a->rep_opt = app.add_option("--dp-replicate", a->dp_replicate,
                              "Hybrid sharding: replicas of the ZeRO-sharded state (divides DP; ZeRO >= 1), each "
                              "sharded over DP / R x CP ranks (FSDP HYBRID_SHARD, Megatron "
                              "--num-distributed-optimizer-instances); default 1");
  app.add_option("--gpus", a->gpus, "GPU count the mesh must multiply to (default: experiment, else cluster)");
  app.add_option("--format", a->format, "Output format: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  return [a] { return run_simulate(*a); };
});

}  // namespace
