// `mpirun -np W ringplan run PLAN.yaml [--scope step|attention] ...`
//
// --scope step (the default): whole training steps of the plan's layout, every mesh dimension
// (W = dp*tp*cp*pp); see run_step.cpp.
//
// --scope attention: `mpirun -np CP ringplan run PLAN.yaml --scope attention [--iters N]
// [--warmup N] [--format table|json] [--trace FILE] [--profile PROFILE.yaml] [--timeout S]
// [--device auto|cpu|cuda]` runs the plan's attention layer, forward and backward, with the
// plan's per-rank shapes (heads/TP, kv_heads/TP, L/CP tokens, micro-batch) with the plan's CP
// method (options.cp_comm: ring attention, all-gather CP, runtime/allgather_attention.hpp, or
// all-to-all CP, runtime/alltoall_attention.hpp) on
// ONE CP group (world size must equal the plan's CP), and prints the measured times and memory
// beside the prediction of sim/ring_model.hpp for the same work on a hardware profile
// (--profile, by default the plan's cluster). The prediction must come from a calibrate
// profile, never from the run it is compared with. The runtime measures; sim predicts; this
// file compares. --trace writes both timelines in one Chrome/Perfetto file (runtime/trace.hpp,
// overlay_trace_json): the measured ring of every rank and, under it, the event simulator's
// replay of the same ring (predicted_ring_lanes).
//
// Devices (attention scope): `cpu` runs the float32 CPU kernels over MPI; `cuda` (builds with
// CUDA and NCCL) runs the CUDA kernels in the plan's 16-bit training type over NCCL, one GPU per
// rank; `auto` takes cuda when this build has it, every rank sees a GPU and the plan suits the
// CUDA kernels.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cli/command.hpp"
#include "cli/run_args.hpp"
#include "cli/run_limits.hpp"
#include "cli/mpi_command.hpp"
#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/progress.hpp"
#include "planner/plan_file.hpp"
#include "planner/report.hpp"  // bytes_json
#include "runtime/executor.hpp"
#if RINGPLAN_HAVE_GPU_RUN
#include "runtime/gpu/gpu_executor.hpp"
#endif
#include "runtime/memory.hpp"
#include "runtime/mpi_communicator.hpp"
#include "runtime/trace.hpp"
#include "sim/ring_event_sim.hpp"
#include "sim/ring_model.hpp"

namespace {

using namespace ringplan;

using cli::RunArgs;

// One compared quantity: measured median and spread, predicted value, error in %.
struct Row {
  std::string name;
  runtime::SampleStats measured;
  double predicted = 0;
  double error_pct() const { return predicted > 0 ? 100.0 * (measured.median - predicted) / predicted : 0.0; }
};

nlohmann::json row_json(const Row& r) {
  return {{"name", r.name},
          {"measured_median_s", r.measured.median},
          {"measured_min_s", r.measured.min},
          {"measured_max_s", r.measured.max},
          {"measured_p10_s", r.measured.p10},
          {"measured_p90_s", r.measured.p90},
          {"samples", r.measured.count},
          {"predicted_s", r.predicted},
          {"error_pct", r.predicted > 0 ? nlohmann::json(r.error_pct()) : nlohmann::json(nullptr)}};
}

// Rows of one phase. Definitions (stated in the output):
//   time            slowest rank's phase time per iteration (the step waits for it)
//   compute max     slowest rank's kernel time per iteration     vs max_rank_compute + elementwise
//   compute mean    mean rank's kernel time per iteration         vs mean_rank_compute + elementwise
//   exposed comm    time - compute max, per iteration: what the slowest rank's compute does not
//                   explain (waits on transfers and their latency)  vs exposed_comm
std::vector<Row> phase_rows(const char* phase, const runtime::RingLayerMeasurement& m, bool forward,
                            const sim::RingPhasePrediction& p) {
  std::vector<double> total, cmax, cmean, exposed;
  for (const auto& it : m.samples) {
    const runtime::PhaseTimes pt = runtime::phase_times(it);
    const double t = forward ? pt.forward_s : pt.backward_s;
    double mx = 0, sum = 0;
    for (const auto& s : it) {
      const double cc = forward ? s.forward_compute_s : s.backward_compute_s;
      mx = std::max(mx, cc);
      sum += cc;
    }
    total.push_back(t);
    cmax.push_back(mx);
    cmean.push_back(sum / static_cast<double>(it.size()));
    exposed.push_back(std::max(0.0, t - mx));
  }
  return {{fmt::format("{} time (slowest rank)", phase), runtime::sample_stats(total), p.total_s},
          {fmt::format("{} compute (slowest rank)", phase), runtime::sample_stats(cmax),
           p.max_rank_compute_s + p.elementwise_s},
          {fmt::format("{} compute (mean rank)", phase), runtime::sample_stats(cmean),
           p.mean_rank_compute_s + p.elementwise_s},
          {fmt::format("{} exposed comm", phase), runtime::sample_stats(exposed), p.exposed_comm_s}};
}

sim::RingAttentionShape predicted_shape(const runtime::RingLayerShape& x, int64_t cp, DType dtype) {
  sim::RingAttentionShape s;
  s.micro_batch = x.batch;
  s.heads_per_tp = x.heads;
  s.kv_heads_per_tp = x.kv_heads;
  s.head_dim = x.head_dim;
  s.seq_len = x.seq_len;
  s.cp = cp;
  s.scheme = x.scheme;
  s.causal = x.causal;
  s.attention = x.kernel;
  // The CPU runtime computes and sends float32 whatever the plan's training dtype; the CUDA
  // runtime the plan's 16-bit type.
  s.dtype = dtype;
  s.tp = 1;  // the ranks of this run form one CP group with nothing between them
  s.comm = x.comm;
  s.a2a_size = x.comm == CpComm::hybrid ? x.a2a_size : 1;
  s.document_lengths = x.document_lengths;
  return s;
}

// The predicted timeline of `run --trace`: the event simulator's replay of the same ring
// (sim/ring_event_sim.hpp, the events of `simulate --trace`: kernels and merges on the compute
// lane, the transfers K,V and dK,dV on the communication lane, the backward after the forward),
// once per measured iteration, starting where that iteration's first measured event starts, or
// where the previous predicted iteration ends if that is later (a prediction slower than the run
// is not drawn over itself: the predicted iterations then follow one another).
// The measured communication lane holds the waits (what the transfers left exposed); the
// predicted one holds the transfers themselves, which overlap the compute.
std::vector<std::vector<runtime::LaneEvent>> predicted_ring_lanes(
    const sim::RingSimulation& ring, const std::vector<std::vector<runtime::TraceEvent>>& measured) {
  std::map<int32_t, double> starts;  // iteration -> earliest measured event over the ranks
  for (const auto& rank : measured)
    for (const runtime::TraceEvent& e : rank) {
      const auto it = starts.find(e.iteration);
      if (it == starts.end() || e.start_s < it->second) starts[e.iteration] = e.start_s;
    }
  std::vector<std::vector<runtime::LaneEvent>> out(measured.size());
  double previous_end = -HUGE_VAL;
  for (const auto& [iteration, measured_start] : starts) {
    const double t0 = std::max(measured_start, previous_end);
    previous_end = t0 + ring.forward_s + ring.backward_s;
    for (const sim::RingEvent& e : ring.events) {
      if (e.rank < 0 || static_cast<size_t>(e.rank) >= out.size()) continue;
      const bool transfer = e.activity == sim::RingActivity::send_kv || e.activity == sim::RingActivity::send_dkv;
      const double offset = t0 + (e.phase == sim::RingPhase::forward ? 0.0 : ring.forward_s);
      out[static_cast<size_t>(e.rank)].push_back(
          {offset + e.start_s, e.end_s - e.start_s, transfer ? 1 : 0,
           fmt::format("{} {} block {}", sim::to_string(e.phase), sim::to_string(e.activity), e.block), "predicted",
           {{"iteration", iteration}, {"step", e.step}, {"block", e.block}}});
    }
  }
  return out;
}

#if RINGPLAN_HAVE_GPU_RUN
// Why the CUDA kernels cannot run this shape; empty when they can.
std::string cuda_unsuitable(const runtime::RingLayerShape& x) {
  if (x.kernel != AttentionImpl::flash) return "the plan uses materialised attention (CPU only)";
  if (x.head_dim != 64 && x.head_dim != 128)
    return fmt::format("head_dim {} (the CUDA kernels take 64 or 128)", x.head_dim);
  return {};
}
#endif

// Host bytes per rank of one attention layer on the CPU runtime (float32): the tensors the
// executor owns (q, out, dout, dq: b*H*n*d each; k, v, dk, dv: b*Hkv*n*d; lse: b*H*n) and the
// ring's buffers (runtime/ring_attention.hpp: K,V double buffer, dK,dV receive and scratch
// double buffers, one block's O and lse and D; the L x n scores when materialised). In double:
// no product of int64 sizes can wrap.
double attention_host_bytes(const Experiment& e) {
  const Mesh& mesh = *e.mesh;
  const double b = double(e.options.micro_batch), h = double(e.model.heads / mesh.tp);
  const double hkv = double(e.model.kv_heads / mesh.tp), d = double(e.model.head_dim);
  const double n = double(e.training.seq_len / mesh.cp), L = double(e.training.seq_len);
  const double q = b * h * n * d, kv = b * hkv * n * d, rows = b * h * n;
  const double scores = e.options.attention == AttentionImpl::materialized ? b * h * n * L : 0.0;
  return 4.0 * (5 * q + 16 * kv + 3 * rows + scores);
}

// A layer this host cannot hold is refused before any allocation, naming the field to change
// (cli/run_limits.hpp). Free memory differs a little between ranks: the verdict is agreed.
void check_attention_fits(const Experiment& e, runtime::MpiCommunicator& world) {
  const double avail = static_cast<double>(runtime::available_memory_bytes());
  const double ranks_here = double(world.size());  // upper bound: all ranks on this host
  const double need = attention_host_bytes(e);
  double too_big = (avail > 0 && need * ranks_here > 0.9 * avail) ? 1.0 : 0.0;
  world.all_reduce_max(&too_big, 1);
  if (too_big == 0) return;
  cli::refuse_too_big(e, need, 0.9 * avail / ranks_here, attention_host_bytes,
                      "one attention layer's float32 tensors and ring buffers",
                      fmt::format("{} available for {} rank{}", format::format_bytes(avail), world.size(),
                                  world.size() == 1 ? "" : "s"),
                      "use a shorter seq_len or a plan with a larger cp");
}

// The GPU twin of check_attention_fits: the layer's device bytes (cli::gpu_attention_device_bytes)
// against the smallest GPU of the ranks, from the sizes alone, before any device is selected or
// allocated. Without a CUDA build there is no GPU run to check.
void check_attention_fits_gpu(const Experiment& e, runtime::MpiCommunicator& world) {
#if RINGPLAN_HAVE_GPU_RUN
  cli::check_device_fits(e, cli::gpu_attention_device_bytes(e), runtime::smallest_device_memory_bytes(world),
                         cli::gpu_attention_device_bytes,
                         "one attention layer's 16-bit tensors, float32 gradients and ring buffers", world.size(),
                         "use a shorter seq_len or a plan with a larger cp");
#else
  (void)e;
  (void)world;
#endif
}

// The device of this run, the same on every rank (collective over `world` for --device auto).
bool choose_gpu(const std::string& device, const Experiment& e, const runtime::RingLayerShape& shape,
                runtime::MpiCommunicator& world) {
  if (device == "cpu") return false;
  // The CUDA executor runs the ring only; all-gather and all-to-all CP run on the CPU kernels over MPI.
  if (shape.comm != CpComm::ring) {
    if (device == "cuda")
      throw bad_input(fmt::format("--device cuda: the plan has cp_comm {}, which runs on the CPU kernels only (the "
                                  "CUDA executor implements the ring); use --device cpu (or auto)",
                                  to_string(shape.comm)));
    return false;
  }
#if RINGPLAN_HAVE_GPU_RUN
  const std::string unsuitable = cuda_unsuitable(shape);
  if (device == "cuda") {
    cli::check_cuda_head_dim(e);
    if (!unsuitable.empty()) throw bad_input("--device cuda: the CUDA ring cannot run this plan: " + unsuitable);
    return true;  // run_ring_layer_cuda refuses a rank without a GPU, naming it
  }
  // auto: CUDA only if every rank sees a GPU (fewest devices over the ranks).
  std::string why;
  double neg_devices = -static_cast<double>(runtime::cuda_devices(&why));
  world.all_reduce_max(&neg_devices, 1);
  return -neg_devices >= 1 && unsuitable.empty();
#else
  (void)e;
  (void)shape;
  (void)world;
  if (device == "cuda")
    throw bad_input("--device cuda: this ringplan was built without CUDA and NCCL; build it with "
                    "`cmake --preset cuda` on a machine with the CUDA Toolkit and NCCL");
  return false;
#endif
}

int run_body(const RunArgs& a, runtime::MpiCommunicator& world) {
  const bool root = world.rank() == 0;
  // Validation first: identical on every rank, so all reach the same verdict before any work.
  const planner::PlanFile plan = planner::read_plan_file(a.plan);
  const Experiment& e = plan.experiment;
  if (!e.mesh) throw bad_input(fmt::format("{}: the plan has no mesh", a.plan));
  cli::note_prediction_mismatch(plan, root);
  const Mesh& mesh = *e.mesh;
  if (world.size() != mesh.cp)
    throw bad_input(fmt::format("plan has cp={} but mpirun started {} rank{}; run mpirun -np {} ringplan run {}", mesh.cp,
                                world.size(), world.size() == 1 ? "" : "s", mesh.cp, a.plan));
  cli::check_run_micro_batch(e);
  cli::check_run_documents(e, a.device == "cuda");
  if (e.model.heads % mesh.tp != 0 || e.model.kv_heads % mesh.tp != 0)
    throw bad_input(fmt::format("{}: heads={} and kv_heads={} must both divide by tp={}", a.plan, e.model.heads,
                                e.model.kv_heads, mesh.tp));
  if (a.iters < 1) throw bad_input(fmt::format("--iters {}: must be >= 1", a.iters));
  if (a.warmup < 0) throw bad_input(fmt::format("--warmup {}: must be >= 0", a.warmup));
  cli::check_threads(a.threads);
  const ClusterConfig profile = a.profile.empty() ? e.cluster : load_cluster(a.profile);
  const std::string profile_label = a.profile.empty() ? fmt::format("the plan's cluster '{}'", e.cluster.name)
                                                      : fmt::format("profile {} ('{}')", a.profile, profile.name);
  // The trace is written by rank 0 after the measurement: a path it cannot write fails now.
  cli::check_output_on_root(world, a.trace, "--trace");
  if (!a.trace.empty() && e.options.cp_comm != CpComm::ring && mesh.cp > 1)
    throw bad_input(fmt::format("--trace records ring attention's steps; {} has cp_comm {}, which records no "
                                "trace events; drop --trace",
                                a.plan, to_string(e.options.cp_comm)));

  runtime::RingLayerShape shape;
  shape.batch = e.options.micro_batch;
  shape.heads = e.model.heads / mesh.tp;
  shape.kv_heads = e.model.kv_heads / mesh.tp;
  shape.seq_len = e.training.seq_len;
  shape.head_dim = e.model.head_dim;
  shape.causal = e.training.causal;
  shape.scheme = e.options.cp_scheme;
  shape.kernel = e.options.attention;
  // At CP = 1 both methods are the same single-rank attention; the ring runs it.
  shape.comm = mesh.cp > 1 ? e.options.cp_comm : CpComm::ring;
  if (shape.comm != CpComm::ring && shape.kernel != AttentionImpl::flash)
    throw bad_input(fmt::format("{}: cp_comm {} needs attention flash (the plan has {})", a.plan, to_string(shape.comm),
                                to_string(e.options.attention)));
  // hybrid: the plan's group size, resolved as the cost model resolves it (0: the default).
  if (shape.comm == CpComm::hybrid) shape.a2a_size = sim::cp_a2a_size_of(e, mesh, e.options);
  if (e.training.documents) shape.document_lengths = e.training.documents->lengths;
  const bool allgather = shape.comm == CpComm::allgather;
  const bool alltoall = shape.comm == CpComm::alltoall;
  const bool hybrid = shape.comm == CpComm::hybrid;
  const bool on_gpu = choose_gpu(a.device, e, shape, world);
  if (on_gpu)
    check_attention_fits_gpu(e, world);
  else
    check_attention_fits(e, world);
  const DType run_dtype = on_gpu ? (e.training.dtype == DType::fp16 ? DType::fp16 : DType::bf16) : DType::fp32;
  // Prediction before measurement (and independent of it): also validates the shape.
  const sim::RingLayerPrediction pred =
      sim::predict_ring_attention(predicted_shape(shape, mesh.cp, run_dtype), profile);

  runtime::ExecutorOptions opt;
  opt.iterations = a.iters;
  opt.warmup = a.warmup;
  opt.trace = !a.trace.empty();
  opt.tiles.threads = a.threads;
  if (root) cli::discard_earlier_output(a.trace, "--trace");
  // A long run shows progress on rank 0's terminal (silent in pipes, files and on other ranks).
  Progress progress("run", int64_t{a.warmup} + a.iters, rank_progress_options(world.rank()));
  opt.on_iteration = [&progress](int64_t done, int64_t) { progress.set_done(done); };
#if RINGPLAN_HAVE_GPU_RUN
  const runtime::RingLayerMeasurement m =
      on_gpu ? runtime::run_ring_layer_cuda(world, shape, opt,
                                            run_dtype == DType::fp16 ? kernels::ElemType::f16 : kernels::ElemType::bf16)
             : runtime::run_ring_layer(world, shape, opt);
#else
  const runtime::RingLayerMeasurement m = runtime::run_ring_layer(world, shape, opt);
#endif
  progress.finish();

  if (!a.trace.empty() && root) {
    // Measured and predicted ring side by side (runtime::overlay_trace_json).
    const sim::RingSimulation ring =
        sim::simulate_ring(predicted_shape(shape, mesh.cp, run_dtype), profile, /*record_events=*/true);
    write_file_atomic(a.trace,
                      runtime::overlay_trace_json(runtime::ring_lane_events(m.trace), predicted_ring_lanes(ring, m.trace)),
                      "--trace");
  }
  if (!root) return 0;

  std::vector<Row> rows = phase_rows("forward", m, true, pred.forward);
  for (auto& r : phase_rows("backward", m, false, pred.backward)) rows.push_back(r);
  // Busy balance across ranks: median compute per rank, max / mean (vs the scheme's imbalance).
  std::vector<double> busy(static_cast<size_t>(m.cp_size), 0.0);
  for (int r = 0; r < m.cp_size; ++r) {
    std::vector<double> xs;
    for (const auto& it : m.samples) xs.push_back(it[static_cast<size_t>(r)].forward_compute_s + it[static_cast<size_t>(r)].backward_compute_s);
    busy[static_cast<size_t>(r)] = runtime::sample_stats(xs).median;
  }
  const double busy_mean = std::accumulate(busy.begin(), busy.end(), 0.0) / static_cast<double>(busy.size());
  const double busy_ratio = busy_mean > 0 ? *std::max_element(busy.begin(), busy.end()) / busy_mean : 1.0;
  const int64_t pairs_max = *std::max_element(m.forward_pairs.begin(), m.forward_pairs.end());
  const double fwd_flops_max = 4.0 * double(shape.batch) * double(shape.heads) * double(pairs_max) * double(shape.head_dim);
  const double measured_ring_bytes = static_cast<double>(m.memory[0].workspace.kv_ring_bytes + m.memory[0].workspace.dkv_ring_bytes);
  int64_t rss_max = 0, tracked_max = 0, scores_max = 0;
  for (const auto& mem : m.memory) {
    rss_max = std::max(rss_max, mem.peak_memory_rise_bytes);
    tracked_max = std::max(tracked_max, mem.tracked_bytes);
    scores_max = std::max(scores_max, mem.workspace.scores_bytes);
  }
  const double pred_scores = shape.kernel == AttentionImpl::materialized ? pred.scores_bytes_materialized : 0.0;

  const std::string slice = fmt::format(
      "one attention layer (forward + backward) of one CP group: {} ranks x [micro-batch {}, heads {}/tp {} = {}, "
      "kv_heads {}/tp {} = {}, L {}/cp {} = {} tokens, head_dim {}], {} {} {}, cp_comm {}; the plan's DP={}, TP={} "
      "(as head split only), PP={}, other layers, MLP and optimizer are not run",
      m.cp_size, shape.batch, e.model.heads, mesh.tp, shape.heads, e.model.kv_heads, mesh.tp, shape.kv_heads,
      shape.seq_len, mesh.cp, shape.seq_len / mesh.cp, shape.head_dim, to_string(shape.scheme),
      shape.causal ? "causal" : "non-causal", to_string(e.options.attention), to_string(shape.comm), mesh.dp, mesh.tp,
      mesh.pp);

  if (a.format == "json") {
    nlohmann::json j;
    j["schema_version"] = planner::kJsonSchemaVersion;
    j["plan"] = a.plan;
    j["validates"] = slice;
    j["cp"] = m.cp_size;
    j["cp_comm"] = to_string(shape.comm);
    if (shape.comm == CpComm::hybrid) j["cp_a2a_size"] = shape.a2a_size;
    j["device"] = on_gpu ? "cuda" : "cpu";
    j["dtype"] = to_string(run_dtype);
    j["iterations"] = a.iters;
    j["warmup"] = a.warmup;
    j["profile"] = profile_label;
    j["hosts"] = m.hosts;
    j["rows"] = nlohmann::json::array();
    for (const auto& r : rows) j["rows"].push_back(row_json(r));
    j["busy_max_over_mean"] = {{"measured", busy_ratio}, {"predicted", pred.imbalance}};
    j["forward_gflops_per_s_slowest_rank"] = fwd_flops_max / rows[1].measured.median / 1e9;
    nlohmann::json ranks = nlohmann::json::array();
    for (int r = 0; r < m.cp_size; ++r) {
      const auto& mem = m.memory[static_cast<size_t>(r)];
      ranks.push_back({{"rank", r},
                       {"host", m.hosts[static_cast<size_t>(r)]},
                       {"forward_visible_pairs", m.forward_pairs[static_cast<size_t>(r)]},
                       {"busy_median_s", busy[static_cast<size_t>(r)]},
                       {"tensors_bytes", mem.tensors_bytes},
                       {"ring_kv_bytes", mem.workspace.kv_ring_bytes},
                       {"ring_dkv_bytes", mem.workspace.dkv_ring_bytes},
                       {"block_out_bytes", mem.workspace.block_out_bytes},
                       {"scores_bytes", mem.workspace.scores_bytes},
                       {"tracked_bytes", mem.tracked_bytes},
                       {"rss_peak_delta_bytes", mem.peak_memory_rise_bytes},
                       {"rss_peak_was_reset", mem.rss_peak_was_reset}});
    }
    j["ranks"] = ranks;
    j["memory"] = {{"measured_ring_buffer_bytes", format::whole_bytes(measured_ring_bytes)},
                   {"predicted_ring_buffer_bytes", planner::bytes_json(pred.ring_buffer_bytes)},
                   {"measured_scores_bytes", scores_max},
                   {"predicted_scores_bytes", planner::bytes_json(pred_scores)},
                   {"measured_tracked_max_bytes", tracked_max},
                   {"measured_rss_peak_delta_max_bytes", rss_max}};
    // Paths are bytes, not necessarily UTF-8: replaced (U+FFFD) rather than aborting the dump.
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }

  std::printf("ringplan run %s\nvalidates: %s\n", a.plan.c_str(), slice.c_str());
  std::printf("measured: %d iterations after %d warm-up, ranks: ", a.iters, a.warmup);
  for (size_t i = 0; i < m.hosts.size(); ++i) std::printf("%s%s", i ? ", " : "", m.hosts[i].c_str());
  std::printf("\ndevice: %s, %s kernels over %s\n", on_gpu ? "cuda (one GPU per rank)" : "cpu",
              to_string(run_dtype), on_gpu ? "NCCL" : "MPI");
  std::printf("predicted: sim/ring_model.hpp on %s (%s, %s within a node)\n", profile_label.c_str(),
              to_string(run_dtype),
              allgather  ? "all-gather CP, collectives not overlapped"
              : alltoall ? "all-to-all CP, all-to-alls not overlapped"
              : hybrid   ? "hybrid CP, all-to-alls not overlapped, ring across groups overlapped"
                         : "ring");
  if (a.profile.empty())
    std::printf("note: no --profile given; a prediction is only as good as its profile: measure one with\n"
                "      mpirun -np %d ringplan calibrate --plan %s -o PROFILE.yaml\n",
                m.cp_size, a.plan.c_str());
  std::printf("\n");
  std::printf("%-30s %12s %25s %12s %8s\n", "phase", "measured", "spread (min..max)", "predicted", "error");
  for (const auto& r : rows)
    std::printf("%-30s %12s %25s %12s %8s\n", r.name.c_str(), format::format_time_s(r.measured.median).c_str(),
                fmt::format("{} .. {}", format::format_time_s(r.measured.min), format::format_time_s(r.measured.max))
                    .c_str(),
                format::format_time_s(r.predicted).c_str(),
                r.predicted > 0 ? format::format_error_pct(r.error_pct()).c_str() : "n/a");
  std::printf("\nspread: over %lld iterations (times and compute: per iteration)\n",
              static_cast<long long>(rows[0].measured.count));
  std::printf("forward time = until the last rank's forward ends; backward time = from there until the last rank's "
              "backward ends (their sum is the layer's time)\n");
  std::printf("exposed comm = phase time - slowest rank's compute, per iteration\n");
  if (allgather)
    std::printf("cp_comm allgather: forward = all-gather K,V + one kernel call; backward = all-gather K,V + one "
                "kernel call + reduce-scatter dK,dV\n");
  if (alltoall)
    std::printf("cp_comm alltoall: forward = all-to-all Q, K, V to head shards + one kernel call over the whole "
                "sequence on heads/CP heads + all-to-all O (and lse) back; backward = all-to-all dO + one kernel call "
                "+ all-to-all dQ, dK, dV\n");
  if (hybrid)
    std::printf("cp_comm hybrid: %lld all-to-all group(s) of %lld CP ranks, ring of %lld across them: forward = "
                "all-to-all Q, K, V to head shards of the group's tokens + ring attention on them + all-to-all O back; "
                "backward = all-to-all dO + the ring's backward + all-to-all dQ, dK, dV\n",
                static_cast<long long>(m.cp_size / shape.a2a_size), static_cast<long long>(shape.a2a_size),
                static_cast<long long>(m.cp_size / shape.a2a_size));
  std::printf("busy max/mean over ranks: measured %s, predicted %s (%s)\n", format::format_ratio(busy_ratio).c_str(),
              format::format_ratio(pred.imbalance).c_str(), to_string(shape.scheme));
  std::printf("forward kernel rate, slowest rank: %s (4*b*H*pairs*d = %s)\n",
              format::format_flops_per_s(fwd_flops_max / rows[1].measured.median).c_str(),
              format::format_flop(fwd_flops_max).c_str());
  if (on_gpu)
    std::printf("\nmemory per rank (tracked = exact bytes of the device buffers this run allocates; "
                "device peak = free device memory before allocating minus its minimum during the run)\n");
  else
    std::printf("\nmemory per rank (tracked = exact bytes of the buffers this run allocates; "
                "RSS = VmHWM rise during the run%s)\n",
                m.memory[0].rss_peak_was_reset ? ", peak reset before allocation" : "; peak could not be reset");
  std::printf("%-6s %11s %11s %11s %11s %11s %11s\n", "rank", "tensors",
              allgather ? "gather K,V" : alltoall ? "a2a QKVO" : hybrid ? "a2a+ring KV" : "ring K,V",
              allgather ? "full dK,dV" : alltoall ? "a2a grads" : hybrid ? "a2a+ring dKV" : "ring dK,dV", "scores", "tracked",
              on_gpu ? "device peak" : "RSS peak");
  auto bytes = [](auto b) { return format::format_bytes(static_cast<double>(b)); };
  // peak_memory_rise_bytes is -1 where it could not be measured.
  for (int r = 0; r < m.cp_size; ++r) {
    const auto& mem = m.memory[static_cast<size_t>(r)];
    std::printf("%-6d %11s %11s %11s %11s %11s %11s\n", r, bytes(mem.tensors_bytes).c_str(),
                bytes(mem.workspace.kv_ring_bytes).c_str(), bytes(mem.workspace.dkv_ring_bytes).c_str(),
                bytes(mem.workspace.scores_bytes).c_str(), bytes(mem.tracked_bytes).c_str(),
                mem.peak_memory_rise_bytes >= 0 ? bytes(mem.peak_memory_rise_bytes).c_str() : "unknown");
  }
  auto pct = [](double meas, double pr) {
    return pr > 0 ? format::format_error_pct(100.0 * (meas - pr) / pr) : std::string("n/a");
  };
  std::printf("%s: measured %s, predicted %s (%s)\n",
              allgather  ? "all-gather buffers (full-sequence K,V + dK,dV + packing)"
              : alltoall ? "all-to-all buffers (head-sharded Q,K,V,O + dO,dQ,dK,dV + staging)"
              : hybrid   ? "hybrid buffers (the group's all-to-all buffers + the ring's K,V + dK,dV)"
                         : "ring buffers (K,V + dK,dV)",
              bytes(measured_ring_bytes).c_str(), bytes(pred.ring_buffer_bytes).c_str(),
              pct(measured_ring_bytes, pred.ring_buffer_bytes).c_str());
  if (shape.kernel == AttentionImpl::materialized)
    std::printf("kept scores (O(L^2/P)): measured %s, predicted %s (%s)\n", bytes(scores_max).c_str(),
                bytes(pred_scores).c_str(), pct(static_cast<double>(scores_max), pred_scores).c_str());
  return 0;
}

int run_command(const RunArgs& a) {
  return cli::run_under_mpi(a.timeout_given, a.timeout_s, [&](runtime::MpiCommunicator& world) {
    return a.scope == "attention" ? run_body(a, world) : cli::run_step_body(a, world);
  });
}

}  // namespace

RINGPLAN_COMMAND("run", "Run a plan under mpirun (whole training steps, or one attention layer) and compare with the prediction", 50,
                 [](CLI::App& app) {
                   auto a = std::make_shared<RunArgs>();
                   app.add_option("plan", a->plan,
                                  "Plan YAML (ringplan plan -o PLAN.yaml), or an experiment YAML with a fixed mesh")
                       ->required();
                   app.add_option("--scope", a->scope,
                                  "step: whole training steps on every mesh dimension (world size = dp*tp*cp*pp); "
                                  "attention: one attention layer of one CP group (world size = cp)")
                       ->check(CLI::IsMember({"step", "attention"}))
                       ->capture_default_str();
                   app.add_option("--steps", a->steps, "Measured training steps (--scope step)")->capture_default_str();
                   app.add_option("--layers", a->layers,
                                  "Run the plan's mesh on this many layers of its model (--scope step; the "
                                  "prediction is made for the same layers); default: all");
                   app.add_flag("--check-parity", a->check_parity,
                                "Also train the same model, data and seed on one process (rank 0) and report both "
                                "loss curves and the largest parameter difference (--scope step)");
                   app.add_option("--iters", a->iters, "Measured iterations (--scope attention)")->capture_default_str();
                   app.add_option("--warmup", a->warmup, "Warm-up steps or iterations (not measured)")->capture_default_str();
                   app.add_option("--format", a->format, "Output format: table or json")
                       ->check(CLI::IsMember({"table", "json"}))
                       ->capture_default_str();
                   app.add_option("--trace", a->trace,
                                  "Write a Chrome/Perfetto trace JSON: every rank's measured events (processes "
                                  "'measured rank N') and the prediction of the same work (processes 'predicted "
                                  "rank N', pid 1000 + N), on one time axis");
                   app.add_option("--profile", a->profile,
                                  "Hardware profile YAML for the prediction (ringplan calibrate -o); "
                                  "default: the plan's cluster");
                   CLI::Option* timeout = app.add_option(
                       "--timeout", a->timeout_s,
                       "Seconds (finite, > 0) a rank may wait on a peer, in MPI start-up or teardown before the "
                       "job is aborted (default: env RINGPLAN_TIMEOUT_S, else 60)");
                   app.add_option("--threads", a->threads, "Kernel threads per rank (cpu), 1..256")->capture_default_str();
                   app.add_option("--device", a->device,
                                  "cpu: float32 CPU kernels over MPI; cuda: CUDA kernels over NCCL, one GPU per "
                                  "rank (builds with CUDA and NCCL); auto: cuda when available and suitable")
                       ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
                       ->capture_default_str();
                   return [=] {
                     a->timeout_given = timeout->count() > 0;
                     return run_command(*a);
                   };
                 });
