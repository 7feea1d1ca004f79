// `mpirun -np W ringplan run PLAN.yaml --scope step [--steps N] [--warmup N] [--layers N]
//                                      [--check-parity] [--format table|json] [--trace FILE]
//                                      [--profile PROFILE.yaml]`
//
// Runs whole training steps of the plan's layout (runtime/step: every mesh dimension, the
// plan's options) on the CPU in float32, and prints the measured step time and each observable
// cost-model term beside sim::predict() for the same layout on a hardware profile (--profile,
// by default the plan's cluster) with the same layer count and float32 types. The runtime
// measures; sim predicts; this file compares.
//
// Measured definitions (printed with the table):
//   step time     the slowest rank's wall time of a step (every step starts at a barrier);
//                 median over the measured steps, spread = min..max over steps
//   term          per step, the time charged to that term on the critical rank (the rank with the
//                 most compute: forward + backward + recompute + optimizer), median over steps.
//                 The cost model's terms describe that rank too (its waits are the exposed
//                 communication and the bubble; a faster rank's longer waits are slack, not cost),
//                 and its terms add up to about the step time.
//   tp term       the critical rank's TP collectives, each at the smallest time any rank of its TP
//                 group spent in it (the last to arrive waits for no one: the transfer); the
//                 remainder, waiting for a TP peer that is still computing, is the tp_wait row
//                 (rank skew: no cost-model term, predicted 0), as Megatron-LM's timers separate
//                 it with --barrier-with-L1-time.
//   pp term       with PP > 1, the step time minus the critical rank's other terms: its waits for
//                 its neighbours AND the drain after its last backward, while the other stages
//                 finish theirs (it idles then, and the step is not over). That is what the
//                 model's bubble + p2p describe; the critical rank's own waits alone would miss
//                 the drain.
// Term pairs (measured <- predicted): ring_exposed <- ring_comm_exposed + cp_imbalance (the
// ring's waits hold both); pp_comm <- pp_comm + pp_bubble (a stage's waits hold both).
// --trace writes the measured regions of every rank and, under them, the predicted terms of each
// step (predicted_step_lanes) in one Chrome/Perfetto file (runtime::overlay_trace_json).
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/cli_args.hpp"  // set_runtime_types
#include "cli/mpi_command.hpp"
#include "cli/run_args.hpp"
#include "cli/run_limits.hpp"
#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/progress.hpp"
#include "planner/plan_file.hpp"
#include "planner/report.hpp"  // bytes_json
#include "runtime/executor.hpp"
#include "runtime/memory.hpp"
#include "runtime/step/step_executor.hpp"
#include "sim/cost_model.hpp"
#if RINGPLAN_HAVE_GPU_RUN
#include "runtime/gpu/gpu_executor.hpp"
#include "runtime/gpu/gpu_trainer.hpp"
#endif

namespace ringplan::cli {
namespace {

using runtime::step::Term;

// A plan file (its recorded prediction checked: note_prediction_mismatch), or an experiment with
// a fixed mesh (the prediction is then made here).
Experiment load_run_input(const std::string& path, bool rank0) {
  // Before YAML::LoadFile opens it: a FIFO would block every rank, a device never end.
  if (const std::string why = input_path_problem(path); !why.empty()) throw ConfigError(path, 0, "", why);
  bool is_plan = false;
  try {
    const YAML::Node root = YAML::LoadFile(path);
    is_plan = root.IsMap() && root["ringplan_plan"];
  } catch (const YAML::Exception&) {
    is_plan = true;  // let read_plan_file() report the YAML error with its position
  }
  if (is_plan) {
    planner::PlanFile plan = planner::read_plan_file(path);
    note_prediction_mismatch(plan, rank0);
    return std::move(plan.experiment);
  }
  Experiment e = load_experiment(path);
  if (!e.mesh)
    throw ConfigError(path, 0, "mesh",
                      "`ringplan run` needs a fixed mesh: give a plan file (ringplan plan -o PLAN.yaml) or an "
                      "experiment with `mesh: {dp, tp, cp, pp}`");
  return e;
}

struct TermRow {
  std::string name;
  double measured_s = 0, predicted_s = 0;
};

// The predicted timeline of `run --trace` (runtime::overlay_trace_json): the cost model's time
// terms of one step (sim::TimeBreakdown, on the critical rank; the model adds them, it does not
// place them in time) laid end to end in the order a step runs them -- forward, its exposed
// communication, recompute, backward, the gradient reduction, the optimizer -- compute terms on
// the compute lane, the others on the communication lane. Every rank gets the same predicted
// step, once per traced step, starting where that step's first measured event starts, or where
// the previous predicted step ends if that is later (a prediction slower than the run is not
// drawn over itself); the durations of one predicted step add up to the predicted step time.
// Terms of 0 s are left out.
std::vector<std::vector<runtime::LaneEvent>> predicted_step_lanes(
    const sim::TimeBreakdown& t, const std::vector<std::vector<runtime::step::StepEvent>>& measured) {
  struct Part {
    const char* name;
    double s;
    int lane;
  };
  const Part parts[] = {{"forward_compute", t.forward_compute_s, 0},
                        {"cp_imbalance", t.cp_imbalance_s, 1},
                        {"ring_comm_exposed", t.ring_comm_exposed_s, 1},
                        {"tp_comm", t.tp_comm_s, 1},
                        {"pp_comm", t.pp_comm_s, 1},
                        {"pp_bubble", t.pp_bubble_s, 1},
                        {"recompute", t.recompute_s, 0},
                        {"backward_compute", t.backward_compute_s, 0},
                        {"dp_comm_exposed", t.dp_comm_exposed_s, 1},
                        {"zero_comm_exposed", t.zero_comm_exposed_s, 1},
                        {"optimizer", t.optimizer_s, 0}};
  std::map<int32_t, double> starts;  // step -> earliest measured event over the ranks
  for (const auto& rank : measured)
    for (const runtime::step::StepEvent& e : rank) {
      const auto it = starts.find(e.step);
      if (it == starts.end() || e.start_s < it->second) starts[e.step] = e.start_s;
    }
  std::vector<std::vector<runtime::LaneEvent>> out(measured.size());
  for (auto& lanes : out) {
    double at = -HUGE_VAL;  // end of the previous predicted step
    for (const auto& [step, measured_start] : starts) {
      at = std::max(at, measured_start);
      for (const Part& p : parts) {
        if (!(p.s > 0)) continue;
        lanes.push_back({at, p.s, p.lane, p.name, "predicted", {{"step", step}}});
        at += p.s;
      }
    }
  }
  return out;
}

double median(std::vector<double> xs) { return runtime::sample_stats(std::move(xs)).median; }
std::string pct(double meas, double pred) {
  return pred > 0 ? format::format_error_pct(100.0 * (meas - pred) / pred) : std::string("n/a");
}
nlohmann::json pct_json(double meas, double pred) {
  return pred > 0 ? nlohmann::json(100.0 * (meas - pred) / pred) : nlohmann::json(nullptr);
}

}  // namespace

void note_prediction_mismatch(const planner::PlanFile& plan, bool root) {
  if (!root) return;
  const std::string diff = planner::prediction_mismatch(plan);
  if (diff.empty()) return;
  std::fprintf(stderr,
               "ringplan: note: %s:%d: prediction: the recorded figures differ from its experiment's layout: %s; "
               "the file was edited after ringplan wrote it, or written by another version (run compares with the "
               "prediction it makes now)\n",
               plan.path.c_str(), plan.prediction_line, diff.c_str());
  std::fflush(stderr);
}

int run_step_body(const RunArgs& a, runtime::MpiCommunicator& world) {
  const bool root = world.rank() == 0;
  // Validation first, identical on every rank.
  Experiment e = load_run_input(a.plan, root);
  const Mesh mesh = *e.mesh;
  check_run_micro_batch(e);
  if (e.model.head_dim % 2 != 0)
    throw experiment_field_error(e, "model.head_dim",
                                 fmt::format("{} is odd; the training step's rotary embedding rotates pairs of "
                                             "dimensions; valid: an even head_dim",
                                             e.model.head_dim));
  if (world.size() != mesh.world_size())
    throw bad_input(fmt::format("plan has dp={} tp={} cp={} pp={} = {} ranks but mpirun started {} rank{}; run mpirun "
                                "-np {} ringplan run {}",
                                mesh.dp, mesh.tp, mesh.cp, mesh.pp, mesh.world_size(), world.size(),
                                world.size() == 1 ? "" : "s", mesh.world_size(), a.plan));
  if (a.steps < 1) throw bad_input(fmt::format("--steps {}: must be >= 1", a.steps));
  if (a.warmup < 0) throw bad_input(fmt::format("--warmup {}: must be >= 0", a.warmup));
  check_threads(a.threads);
  if (a.layers < 0) throw bad_input(fmt::format("--layers {}: must be >= 1 (or omitted: the plan's model)", a.layers));
  // --device cuda: the GPU step (runtime/gpu/gpu_trainer.hpp: bf16 GEMMs and attention, float32
  // master weights, NCCL); auto and cpu: the CPU step (float32, MPI).
  const bool on_gpu = a.device == "cuda";
  check_run_documents(e, on_gpu);
#if !RINGPLAN_HAVE_GPU_RUN
  if (on_gpu)
    throw bad_input("--device cuda: this ringplan was built without CUDA and NCCL; build it with "
                    "-DRINGPLAN_ENABLE_CUDA=ON on a machine with nvcc and NCCL, or run --device cpu");
#endif
  if (a.layers > 0) e.model.layers = a.layers;

  // hybrid: the group size the cost model resolves for this plan (0: the default), for the
  // trainer and the prediction alike.
  if (e.options.cp_comm == CpComm::hybrid && mesh.cp > 1) e.options.cp_a2a_size = sim::cp_a2a_size_of(e, mesh, e.options);
  runtime::step::StepSpec spec;
  spec.model = e.model;
  spec.mesh = mesh;
  spec.options = e.options;
  spec.seq_len = e.training.seq_len;
  spec.global_batch = e.training.global_batch_sequences;
  spec.causal = e.training.causal;
  if (e.training.documents) spec.document_lengths = e.training.documents->lengths;
  spec.optimizer = e.training.optimizer;
  spec.clip_grad = e.training.clip_grad;
  spec.tiles.threads = a.threads;
#if RINGPLAN_HAVE_GPU_RUN
  if (on_gpu) {
    check_cuda_head_dim(e);  // at the plan's file:line, before check_gpu_step_spec's other reasons
    runtime::gpu::check_gpu_step_spec(spec);
  }
#endif
  runtime::step::check_step_spec(spec);

  // The prediction for the same work: these layers, on the profile, in the runtime's types.
  Experiment pe = e;
  pe.cluster = a.profile.empty() ? e.cluster : load_cluster(a.profile);
  planner::set_runtime_types(pe.training, on_gpu);
  // The runtime's TP collectives block (MPI_Allreduce and friends between the GEMMs, nothing
  // asynchronous behind them): predicted as such, whatever the plan assumes of its framework.
  ParallelOptions run_options = e.options;
  run_options.tp_overlap = TpOverlap::none;
  // ZeRO-1's parameter all-gather runs after the optimizer step, blocking (runtime/step).
  run_options.overlap_param_gather = false;
  const std::string why = sim::check_layout(pe, mesh, run_options, mesh.world_size());
  if (!why.empty())
    throw experiment_field_error(e, "mesh", fmt::format("layout dp={} tp={} cp={} pp={} cannot run: {}", mesh.dp,
                                                        mesh.tp, mesh.cp, mesh.pp, why));
  const sim::Prediction pred = sim::predict(pe, mesh, run_options);
  const std::string profile_label = a.profile.empty() ? fmt::format("the plan's cluster '{}'", e.cluster.name)
                                                      : fmt::format("profile {} ('{}')", a.profile, pe.cluster.name);

  // A plan this host cannot hold is refused before any allocation. Free memory is read at
  // slightly different moments on each rank, so the verdict is agreed (max over ranks) before
  // anyone throws: every rank then leaves with the same error.
  if (!on_gpu) {
    double avail = static_cast<double>(runtime::available_memory_bytes());
    const double ranks_here = double(world.size());  // upper bound: all ranks on this host
    const double need = (pred.memory.peak_bytes - pred.memory.reserved_bytes) * ranks_here;
    double too_big = (avail > 0 && need > 0.9 * avail) ? 1.0 : 0.0;
    world.all_reduce_max(&too_big, 1);
    if (too_big > 0) {
      // Which field to change, and to what (cli/run_limits.hpp): the same prediction for a variant.
      auto need_of = [&](const Experiment& x) {
        Experiment px = x;
        px.cluster = pe.cluster;
        px.training.dtype = DType::fp32;
        if (!sim::check_layout(px, mesh, x.options, mesh.world_size()).empty()) return HUGE_VAL;
        const sim::Prediction q = sim::predict(px, mesh, x.options);
        return q.memory.peak_bytes - q.memory.reserved_bytes;
      };
      refuse_too_big(e, need / ranks_here, 0.9 * avail / ranks_here, need_of,
                     fmt::format("{} layer{} of {} (float32, predicted)", e.model.layers,
                                 e.model.layers == 1 ? "" : "s", e.model.name),
                     fmt::format("{} available for {} rank{}", format::format_bytes(avail), world.size(),
                                 world.size() == 1 ? "" : "s"),
                     "run fewer layers with --layers N");
    }
  } else {
#if RINGPLAN_HAVE_GPU_RUN
    // The same rule on the GPU: the predicted peak in the GPU step's types (bf16, float32
    // gradients and optimizer states) against the smallest GPU of the ranks, from the sizes and
    // the devices' reported memory, before any device is selected or allocated.
    auto need_of = [&](const Experiment& x) {
      Experiment px = x;
      px.cluster = pe.cluster;
      planner::set_runtime_types(px.training, true);
      ParallelOptions o = x.options;  // the variant's micro_batch, the run's blocking TP collectives
      o.tp_overlap = TpOverlap::none;
      o.overlap_param_gather = false;
      if (!sim::check_layout(px, mesh, o, mesh.world_size()).empty()) return HUGE_VAL;
      const sim::Prediction q = sim::predict(px, mesh, o);
      return q.memory.peak_bytes - q.memory.reserved_bytes;
    };
    check_device_fits(e, pred.memory.peak_bytes - pred.memory.reserved_bytes,
                      runtime::smallest_device_memory_bytes(world), need_of,
                      fmt::format("{} layer{} of {} (bf16 with float32 gradients and optimizer states, predicted)",
                                  e.model.layers, e.model.layers == 1 ? "" : "s", e.model.name),
                      world.size(), "run fewer layers with --layers N");
#endif
  }

  // The trace is written by rank 0 after the measurement: a path it cannot write fails now, on
  // every rank (check_output_on_root shares rank 0's verdict).
  check_output_on_root(world, a.trace, "--trace");

  runtime::step::StepRunOptions opt;
  opt.steps = a.steps;
  opt.warmup = a.warmup;
  opt.check_parity = a.check_parity;
  opt.trace = !a.trace.empty();
  if (root) discard_earlier_output(a.trace, "--trace");
  Progress progress("run", int64_t{a.warmup} + a.steps, rank_progress_options(world.rank()));
  opt.on_step = [&progress](int64_t done, int64_t) { progress.set_done(done); };
#if RINGPLAN_HAVE_GPU_RUN
  const runtime::step::StepMeasurement m = on_gpu ? runtime::gpu::run_training_steps_cuda(world, spec, opt)
                                                  : runtime::step::run_training_steps(world, spec, opt);
#else
  const runtime::step::StepMeasurement m = runtime::step::run_training_steps(world, spec, opt);
#endif
  progress.finish();
  if (!root) return 0;
  if (!a.trace.empty())
    write_file_atomic(a.trace,
                      runtime::overlay_trace_json(runtime::step::step_lane_events(m.events),
                                                  predicted_step_lanes(pred.time, m.events)),
                      "--trace");

  // Measured step time and terms: per step the slowest rank, then the median over steps.
  std::vector<double> step_s;
  std::array<std::vector<double>, runtime::step::kTermCount> term_s;
  std::vector<double> tp_wait_s;  // the critical rank's TP waiting for slower TP peers, per step
  auto compute_of = [](const runtime::step::StepTiming& t) {
    return t.term_s[size_t(Term::forward_compute)] + t.term_s[size_t(Term::backward_compute)] +
           t.term_s[size_t(Term::recompute)] + t.term_s[size_t(Term::optimizer)];
  };
  for (const auto& ranks : m.timing) {
    double worst = 0;
    size_t critical = 0;
    for (size_t r = 0; r < ranks.size(); ++r) {
      worst = std::max(worst, ranks[r].step_s);
      if (compute_of(ranks[r]) > compute_of(ranks[critical])) critical = r;
    }
    step_s.push_back(worst);
    double others = 0;
    for (int k = 0; k < runtime::step::kTermCount; ++k) {
      const double v = ranks[critical].term_s[static_cast<size_t>(k)];
      if (static_cast<Term>(k) != Term::pp_comm) others += v;
      term_s[static_cast<size_t>(k)].push_back(v);
    }
    if (mesh.pp > 1) term_s[size_t(Term::pp_comm)].back() = std::max(0.0, worst - others);
    // TP: the model's tp_comm is the collectives' transfer; the critical rank's waits for a TP
    // peer still computing (skew between ranks, which the model has no term for) are shown apart.
    // (The GPU step, DP only, records no TP regions: its TP term stays as measured.)
    const size_t si = static_cast<size_t>(&ranks - m.timing.data());
    if (si < m.tp_regions.size()) {
      const runtime::step::TpCommSplit tp =
          runtime::step::split_tp_comm(m.tp_regions[si], static_cast<int>(critical), mesh.tp);
      term_s[size_t(Term::tp_comm)].back() = tp.transfer_s;
      tp_wait_s.push_back(tp.wait_s);
    }
  }
  const runtime::SampleStats st = runtime::sample_stats(step_s);
  const sim::TimeBreakdown& p = pred.time;
  auto term = [&](Term t) { return median(term_s[static_cast<size_t>(t)]); };
  const std::vector<TermRow> rows = {
      {"forward_compute", term(Term::forward_compute), p.forward_compute_s},
      {"backward_compute", term(Term::backward_compute), p.backward_compute_s},
      {"recompute", term(Term::recompute), p.recompute_s},
      {"ring_exposed (+cp_imbalance)", term(Term::ring_exposed), p.ring_comm_exposed_s + p.cp_imbalance_s},
      {"tp_comm", term(Term::tp_comm), p.tp_comm_s},
      {"tp_wait (rank skew, unmodelled)", tp_wait_s.empty() ? 0.0 : median(tp_wait_s), 0.0},
      {"dp_comm_exposed", term(Term::dp_comm_exposed), p.dp_comm_exposed_s},
      {"zero_comm", term(Term::zero_comm), p.zero_comm_exposed_s},
      {"pp_comm (+pp_bubble)", term(Term::pp_comm), p.pp_comm_s + p.pp_bubble_s},
      {"optimizer", term(Term::optimizer), p.optimizer_s},
  };
  // Memory: the largest rank's exact buffer bytes by term against the predicted terms.
  runtime::step::StepMemory mm;
  int64_t rss_max = -1;
  for (size_t r = 0; r < m.memory.size(); ++r) {
    const auto& x = m.memory[r];
    if (x.tracked_peak_bytes > mm.tracked_peak_bytes) mm = x;
    rss_max = std::max(rss_max, m.peak_memory_rise_bytes[r]);
  }
  const sim::MemoryBreakdown& pm = pred.memory;
  const std::vector<TermRow> mem_rows = {
      {"weights", double(mm.weights_bytes), pm.weights_bytes},
      {"gradients", double(mm.gradients_bytes), pm.gradients_bytes},
      {"optimizer", double(mm.optimizer_bytes), pm.optimizer_bytes},
      {"activations (+scores)", double(mm.activations_peak_bytes), pm.activations_bytes + pm.attention_scores_bytes},
      {"ring_buffers", double(mm.ring_buffers_bytes), pm.ring_buffers_bytes},
      {"logits", double(mm.logits_bytes), pm.logits_bytes},
      {"peak (without reserved)", double(mm.tracked_peak_bytes), pm.peak_bytes - pm.reserved_bytes},
  };
  const std::string what = fmt::format(
      "whole training steps of {} ({} layer{}, hidden {}, heads {}/{} kv, head_dim {}, ffn {}{}, vocab {}) on mesh "
      "dp={} tp={} cp={} pp={}: seq_len {}, global batch {}, micro_batch {}, recompute {}, zero {}, sequence "
      "parallel {}, {} CP by {}, {} optimizer; {}",
      e.model.name, e.model.layers, e.model.layers == 1 ? "" : "s", e.model.hidden, e.model.heads, e.model.kv_heads,
      e.model.head_dim, e.model.ffn_hidden, e.model.gated_mlp ? " gated" : "", e.model.vocab, mesh.dp, mesh.tp, mesh.cp,
      mesh.pp, spec.seq_len, spec.global_batch, e.options.micro_batch, to_string(e.options.recompute),
      e.options.zero_stage, e.options.sequence_parallel ? "on" : "off", to_string(e.options.cp_scheme),
      to_string(e.options.cp_comm), to_string(spec.optimizer),
      on_gpu ? "bf16 GEMMs and attention with float32 master weights, one GPU per rank (cuBLAS, CUDA kernels, NCCL)"
             : "float32 on CPUs over MPI");

  if (a.format == "json") {
    nlohmann::json j;
    j["schema_version"] = planner::kJsonSchemaVersion;
    j["scope"] = "step";
    j["device"] = on_gpu ? "cuda" : "cpu";
    j["plan"] = a.plan;
    j["validates"] = what;
    j["mesh"] = {{"dp", mesh.dp}, {"tp", mesh.tp}, {"cp", mesh.cp}, {"pp", mesh.pp}};
    j["layers"] = e.model.layers;
    j["steps"] = a.steps;
    j["warmup"] = a.warmup;
    j["profile"] = profile_label;
    j["hosts"] = m.hosts;
    j["losses"] = m.losses;
    j["grad_norms"] = m.grad_norms;
    if (a.check_parity) {
      j["reference_losses"] = m.reference_losses;
      j["reference_grad_norms"] = m.reference_grad_norms;
      j["max_param_diff"] = m.max_param_diff;
      j["params_compared"] = m.params_compared;
    }
    j["step_time"] = {{"measured_median_s", st.median}, {"measured_min_s", st.min}, {"measured_max_s", st.max},
                      {"predicted_s", pred.step_time_s}, {"error_pct", pct_json(st.median, pred.step_time_s)}};
    j["terms"] = nlohmann::json::array();
    for (const auto& r : rows)
      j["terms"].push_back({{"name", r.name}, {"measured_s", r.measured_s}, {"predicted_s", r.predicted_s},
                            {"error_pct", pct_json(r.measured_s, r.predicted_s)}});
    nlohmann::json mem = nlohmann::json::array();
    for (const auto& r : mem_rows)
      mem.push_back({{"name", r.name}, {"measured_bytes", format::whole_bytes(r.measured_s)},
                     {"predicted_bytes", planner::bytes_json(r.predicted_s)},
                     {"error_pct", pct_json(r.measured_s, r.predicted_s)}});
    j["memory"] = {{"terms", mem}, {"rss_peak_delta_max_bytes", rss_max}};
    // Paths are bytes, not necessarily UTF-8: replaced (U+FFFD) rather than aborting the dump.
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }

  std::printf("ringplan run %s --scope step\nvalidates: %s\n", a.plan.c_str(), what.c_str());
  std::printf("predicted: sim::predict on %s, %s\n", profile_label.c_str(),
              on_gpu ? "bf16 with float32 gradients and optimizer states" : "float32");
  if (a.profile.empty())
    std::printf("note: no --profile given; measure one with  mpirun -np %d ringplan calibrate -o PROFILE.yaml\n",
                world.size());
  std::printf("\nloss per step (%d warm-up, %d measured):", a.warmup, a.steps);
  for (double l : m.losses) std::printf(" %.5f", l);
  std::printf("\n");
  if (!m.grad_norms.empty() && m.grad_norms.front() > 0) {
    std::printf("gradient norm before clipping:");
    for (double g : m.grad_norms) std::printf(" %.4f", g);
    std::printf("\n");
  }
  if (a.check_parity) {
    std::printf("one process (same model, data, seed):");
    for (double l : m.reference_losses) std::printf(" %.5f", l);
    double worst = 0;
    for (size_t i = 0; i < m.losses.size(); ++i)
      worst = std::max(worst, std::abs(m.losses[i] - m.reference_losses[i]) / std::abs(m.reference_losses[i]));
    std::printf("\nparity: largest relative loss difference %.2e, largest parameter difference %.2e over %lld "
                "parameters\n",
                worst, m.max_param_diff, static_cast<long long>(m.params_compared));
  }
  using format::format_time_s;
  std::printf("\n%-30s %12s %22s %12s %8s\n", "time", "measured", "spread (min..max)", "predicted", "error");
  std::printf("%-30s %12s %22s %12s %8s\n", "step", format_time_s(st.median).c_str(),
              fmt::format("{} .. {}", format_time_s(st.min), format_time_s(st.max)).c_str(),
              format_time_s(pred.step_time_s).c_str(), pct(st.median, pred.step_time_s).c_str());
  for (const auto& r : rows)
    std::printf("%-30s %12s %22s %12s %8s\n", r.name.c_str(), format_time_s(r.measured_s).c_str(), "",
                format_time_s(r.predicted_s).c_str(), pct(r.measured_s, r.predicted_s).c_str());
  std::printf("step = slowest rank's wall time per step (median over %d steps); term = time in that term on the "
              "critical rank (most compute) per step (median)%s\n",
              a.steps, mesh.pp > 1 ? "; pp = step - the critical rank's other terms (its waits and the drain)" : "");
  std::printf("\n%-30s %12s %12s %8s\n", "memory, largest rank", "measured", "predicted", "error");
  for (const auto& r : mem_rows)
    std::printf("%-30s %12s %12s %8s\n", r.name.c_str(), format::format_bytes(r.measured_s).c_str(),
                format::format_bytes(r.predicted_s).c_str(), pct(r.measured_s, r.predicted_s).c_str());
  // rss_max stays -1 when no rank could read its RSS: "unknown" rather than a negative size.
  std::printf("measured = exact bytes of the buffers the step holds; %s (largest rank): %s\n",
              on_gpu ? "drop in free device memory over the run (allocator, cuBLAS and NCCL included)"
                     : "RSS rise during the run",
              rss_max >= 0 ? format::format_bytes(double(rss_max)).c_str() : "unknown");
  return 0;
}

}  // namespace ringplan::cli
