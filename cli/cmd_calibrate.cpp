// `mpirun -np P ringplan calibrate [-o PROFILE.yaml] [--plan PLAN.yaml] [--tokens 128,256,...]`
//
// Measures this machine as the runtime uses it (every rank busy at once, as in a ring run:
// runtime/measure_cpu.hpp for the attention kernels, links, copy rate and hosts,
// runtime/step/measure_gemm.hpp for the step's linear layers, runtime/measure_collectives.hpp)
// and writes a cluster profile in core's format: the fits and the profile's assembly are
// sim/cpu_calibration.hpp's, which documents every field. This file reads the flags, checks the
// shapes and sizes before anything is measured, and writes the result.
// `calibrate --gpu-bench` / `--device cuda`: a GPU profile (sim/gpu_calibration.hpp) from
// measurements already taken or taken here (runtime/gpu/measure_gpu.hpp).
// Predictions from a profile are then compared with `ringplan run` on a DIFFERENT workload
// (a plan's ring), never fitted to that run.
// Progress: rank 0 draws one line on stderr (one step per kernel block size, per GEMM row count,
// per link message size and for the copy rate) when mpirun's stderr is a terminal and
// calibration runs past 2 s (core/progress.hpp); it is erased before the profile is printed.
// Otherwise stderr gets nothing.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/command.hpp"
#include "cli/mpi_command.hpp"
#include "core/atomic_file.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/progress.hpp"
#include "planner/plan_file.hpp"
#include "runtime/measure_collectives.hpp"
#include "runtime/measure_cpu.hpp"
#include "sim/cpu_calibration.hpp"
#include "sim/gpu_calibration.hpp"
#if RINGPLAN_HAVE_GPU_RUN
#include "runtime/gpu/measure_gpu.hpp"
#endif
#include "runtime/memory.hpp"
#include "runtime/mpi_communicator.hpp"
#include "runtime/step/measure_gemm.hpp"

namespace {

using namespace ringplan;

struct CalibrateArgs {
  std::string output;
  std::string plan;
  std::vector<int64_t> tokens;
  int64_t heads = 4, kv_heads = 0, head_dim = 64, batch = 1;
  int reps = 3;
  int threads = 1;
  std::string name = "calibrated_cpu";
  double timeout_s = 0;        // --timeout, used when timeout_given (else env RINGPLAN_TIMEOUT_S or 60 s)
  bool timeout_given = false;  // every given value is checked: 0, negative and nan are errors
  // GPU profile from kernel measurements taken on the card (no MPI, no measurement here):
  std::string gpu_bench;      // --gpu-bench: bench/gpu/gemm_bench.py --json output
  std::string gpu_attention;  // --gpu-attention: bench/gpu/sdpa_bench.py --json output (optional)
  std::string base;           // --base: the card's datasheet profile the fractions are taken against
  std::string device = "cpu"; // --device cpu (this machine's CPU kernels, under mpirun) | cuda (this GPU)
  std::string measurements;   // --measurements: with --device cuda, the raw measurements as JSON
  bool skip_fp8 = false;      // --skip-fp8: with --device cuda, bf16 GEMMs only
  bool name_given = false;
};

// Bounds of the kernel shape. Per dimension they keep every product measure_kernels forms in
// int64 (b*H*n*d <= 2^16 * 2^12 * 2^20 * 2^12 = 2^60, b*H*n*n <= 2^60); the byte limit keeps
// one block size's buffers within what a calibration can sensibly allocate per rank.
constexpr int64_t kMaxCalibrateBatch = int64_t{1} << 16;
constexpr int64_t kMaxCalibrateHeads = int64_t{1} << 12;
constexpr int64_t kMaxCalibrateHeadDim = int64_t{1} << 12;
constexpr int64_t kMaxCalibrateTokens = int64_t{1} << 20;
constexpr double kMaxCalibrateBufferBytes = 16.0 * (int64_t{1} << 30);

// Throws bad_input naming the value and its limit when a shape is out of bounds, or when the
// buffers of its largest block size (q, o, dO, dQ: b*H*n*d floats; k, v, dK, dV: b*Hkv*n*d;
// lse, delta: b*H*n; materialised scores: b*H*n*n) would exceed kMaxCalibrateBufferBytes.
void check_shape_fits(const CalibrateArgs& a) {
  auto bound = [](const char* flag, int64_t v, int64_t limit) {
    if (v > limit) throw bad_input(fmt::format("{} {}: must be at most {} for calibrate", flag, v, limit));
  };
  bound("--batch", a.batch, kMaxCalibrateBatch);
  bound("--heads", a.heads, kMaxCalibrateHeads);
  bound("--kv-heads", a.kv_heads, kMaxCalibrateHeads);
  bound("--head-dim", a.head_dim, kMaxCalibrateHeadDim);
  for (int64_t t : a.tokens) bound("--tokens", t, kMaxCalibrateTokens);
  const double b = static_cast<double>(a.batch), h = static_cast<double>(a.heads),
               hkv = static_cast<double>(a.kv_heads), d = static_cast<double>(a.head_dim);
  for (int64_t t : a.tokens) {
    const double n = static_cast<double>(t);
    const double bytes = 4.0 * (4.0 * b * h * n * d + 4.0 * b * hkv * n * d + 2.0 * b * h * n + b * h * n * n);
    if (bytes > kMaxCalibrateBufferBytes)
      throw bad_input(fmt::format("calibrate: block size {} tokens with batch {}, heads {}, kv_heads {}, head_dim {} "
                                  "needs {} of buffers per rank (the materialised scores alone b*H*n*n = "
                                  "{} floats); the limit is {}: use smaller --tokens, --batch or --heads",
                                  t, a.batch, a.heads, a.kv_heads, a.head_dim, format::format_bytes(bytes),
                                  format::format_count(static_cast<int64_t>(b * h * n * n)),
                                  format::format_bytes(kMaxCalibrateBufferBytes)));
  }
}

int calibrate_body(const CalibrateArgs& a0, runtime::MpiCommunicator& world) {
  CalibrateArgs a = a0;
  const bool root = world.rank() == 0;
  if (world.size() < 2)
    throw bad_input("calibrate needs at least 2 ranks to measure the links between them: "
                    "run mpirun -np 2 (or the ranks per node you will use) ringplan calibrate");
  // The step's linear layers: the plan's, at its rows per rank and half and a quarter of them
  // (points along the curve); without a plan, those of a small Llama-like layer on the kernel
  // shape (hidden = heads x head_dim, kv = kv_heads x head_dim, SwiGLU 3 x hidden, vocabulary
  // 1024) at each --tokens block.
  ModelConfig gemm_model;
  Mesh gemm_mesh;
  std::vector<int64_t> gemm_rows;
  if (!a.plan.empty()) {
    const planner::PlanFile plan = planner::read_plan_file(a.plan);
    const Experiment& e = plan.experiment;
    const Mesh mesh = e.mesh.value_or(Mesh{});
    gemm_model = e.model;
    gemm_mesh = mesh;
    const int64_t rows = e.options.micro_batch * (e.training.seq_len / mesh.cp);
    for (int64_t r : {rows / 4, rows / 2, rows})
      if (r >= 16) gemm_rows.push_back(r);
    a.heads = e.model.heads / mesh.tp;
    a.kv_heads = e.model.kv_heads / mesh.tp;
    a.head_dim = e.model.head_dim;
    a.batch = e.options.micro_batch;
    if (a.tokens.empty()) {
      // Blocks around the plan's per-rank tokens (L/CP): the sizes its ring steps use.
      const int64_t n = e.training.seq_len / mesh.cp;
      for (int64_t t : {n / 4, n / 2, n})
        if (t >= 16) a.tokens.push_back(t);
    }
  }
  if (a.kv_heads == 0) a.kv_heads = a.heads;
  if (a.tokens.empty()) a.tokens = {128, 256, 512, 1024};
  if (a.heads < 1 || a.kv_heads < 1 || a.heads % a.kv_heads != 0 || a.head_dim < 1 || a.batch < 1)
    throw bad_input(fmt::format("calibrate: heads={} kv_heads={} head_dim={} batch={}: need all >= 1 and heads % kv_heads == 0",
                                a.heads, a.kv_heads, a.head_dim, a.batch));
  if (a.tokens.size() < 2) throw bad_input("--tokens: give at least two block sizes so the efficiency curve can be fitted");
  for (int64_t t : a.tokens)
    if (t < 1) throw bad_input(fmt::format("--tokens {}: block sizes must be >= 1", t));
  check_shape_fits(a);
  // After the bounds above: heads x head_dim and batch x tokens fit int64.
  if (a.plan.empty()) {
    gemm_model.hidden = a.heads * a.head_dim;
    gemm_model.heads = a.heads;
    gemm_model.kv_heads = a.kv_heads;
    gemm_model.head_dim = a.head_dim;
    gemm_model.ffn_hidden = 3 * gemm_model.hidden;
    gemm_model.gated_mlp = true;
    gemm_model.vocab = 1024;
    for (int64_t t : a.tokens) gemm_rows.push_back(a.batch * t);
  }
  // The GEMM buffers (X, dX: rows x in; W, dW: out x in; Y, dY: rows x out floats) under the
  // same per-rank limit as the kernels'.
  for (int64_t rows : gemm_rows)
    for (const auto& g : runtime::step::step_gemm_shapes(gemm_model, gemm_mesh, rows)) {
      const double bytes = 4.0 * 2.0 * (double(g.rows) * double(g.in) + double(g.out) * double(g.in) +
                                        double(g.rows) * double(g.out));
      if (bytes > kMaxCalibrateBufferBytes)
        throw bad_input(fmt::format(
            "calibrate: the linear layer of {} rows x {} in x {} out{} needs {:.1f} GiB of buffers per rank; the limit "
            "is {:.0f} GiB: {}",
            g.rows, g.in, g.out, a.plan.empty() ? "" : fmt::format(" (plan {})", a.plan), bytes / (1 << 30),
            kMaxCalibrateBufferBytes / (1 << 30),
            a.plan.empty() ? "use smaller --tokens, --batch, --heads or --head-dim"
                           : "calibrate without --plan (default shapes) or with a plan of a smaller model or sequence"));
    }
  if (gemm_rows.empty())
    throw bad_input(fmt::format("calibrate --plan {}: its rows per rank (micro_batch x seq_len / cp) are below 16, too "
                                "few for the linear-layer GEMMs the profile records; calibrate without --plan",
                                a.plan));
  if (a.reps < 1) throw bad_input(fmt::format("--reps {}: must be >= 1", a.reps));
  cli::check_threads(a.threads);
  // The profile is written by rank 0 after minutes of measurement: a path it cannot write fails now.
  cli::check_output_on_root(world, a.output, "-o");

  const int64_t reserved_bytes = runtime::current_rss_bytes();
  const std::vector<int64_t> link_bytes = {int64_t{8}, int64_t{1} << 10, int64_t{64} << 10, int64_t{1} << 20,
                                           int64_t{8} << 20};
  // Steps: every kernel block size, every link message size, the copy rate. Silent on ranks > 0
  // and whenever mpirun's stderr is not a terminal; on error its destructor erases the line
  // before run_under_mpi reports.
  Progress progress("calibrate", static_cast<int64_t>(a.tokens.size() + gemm_rows.size() + link_bytes.size() + 1),
                    rank_progress_options(world.rank()));
  // Measurement (runtime/), every rank at once; then rank 0 fits and writes the profile (sim/).
  sim::CpuMeasurements m;
  m.name = a.name;
  m.ranks = world.size();
  m.batch = a.batch;
  m.heads = a.heads;
  m.kv_heads = a.kv_heads;
  m.head_dim = a.head_dim;
  m.threads = a.threads;
  for (int64_t n : a.tokens) {
    const runtime::KernelPoint k =
        runtime::measure_kernels(world, {a.batch, a.heads, a.kv_heads, a.head_dim, a.threads, a.reps}, n);
    m.kernels.push_back({k.tokens, k.flops, k.fwd_s, k.bwd_s, k.mat_fwd_s, k.mat_bwd_s, k.causal_flops, k.causal_fwd_s,
                         k.causal_bwd_s});
    m.attention_tile = k.tile;
    progress.advance();
  }
  for (int64_t rows : gemm_rows) {
    for (const auto& p : runtime::step::measure_gemms(world, runtime::step::step_gemm_shapes(gemm_model, gemm_mesh, rows),
                                                      a.reps))
      m.gemms.push_back({p.shape.rows, p.shape.in, p.shape.out, p.forward_s, p.backward_s});
    progress.advance();
  }
  for (int64_t bytes : link_bytes) {
    const runtime::LinkPoint l = runtime::measure_link(world, bytes, a.reps + 2);
    m.links.push_back({l.bytes, l.pingpong_one_way_s, l.ring_step_s});
    progress.advance();
  }
  m.copy_bytes_per_s = runtime::measure_copy_bandwidth(world);
  progress.advance();
  // Collectives, at the message sizes of TP activations and gradient buckets.
  const std::vector<int64_t> coll_bytes = {int64_t{64} << 10, int64_t{256} << 10, int64_t{1} << 20, int64_t{4} << 20};
  for (const auto& p : runtime::measure_collectives(world, coll_bytes, a.reps + 2))
    m.collectives.push_back({p.bytes, p.all_reduce_s, p.reduce_scatter_s, p.all_gather_s});
  // Erased before anything below reaches stdout or stderr (the profile, the "wrote" line).
  progress.finish();
  const runtime::HostCounts hosts = runtime::count_hosts(world);
  m.hosts = hosts.hosts;
  m.ranks_per_host = hosts.ranks_per_host;
  m.host_memory_bytes = static_cast<double>(runtime::mem_total_bytes());
  m.reserved_bytes = static_cast<double>(std::max<int64_t>(reserved_bytes, 0));
  // Every rank fits (the measurements are the ranks' medians, the same on each), so that a
  // refusal is thrown by all of them together, as run_under_mpi expects; rank 0 writes.
  const sim::CpuCalibration cal = sim::calibrate_cpu_profile(m);
  if (!root) return 0;
  const std::string text = sim::cpu_profile_text(m, cal);
  if (a.output.empty()) {
    std::fputs(text.c_str(), stdout);
  } else {
    write_file_atomic(a.output, text, "-o");
    std::fprintf(stderr, "ringplan calibrate: wrote %s (flash %s forward, %s backward asymptotic, ring link %s, %s)\n",
                 a.output.c_str(), format::format_flops_per_s(cal.flash_fwd.asymptote).c_str(),
                 format::format_flops_per_s(cal.flash_bwd.asymptote).c_str(),
                 format::format_bandwidth(cal.ring_bandwidth).c_str(), format::format_time_s(cal.latency_s).c_str());
  }
  return 0;
}

// The base profile with its efficiency curves fitted to GPU measurements (sim/gpu_calibration.hpp),
// written to -o (or stdout) with the fit's own error per curve in its header.
int write_gpu_profile(const CalibrateArgs& a, const ClusterConfig& base, const sim::GpuBenchMeasurements& m,
                      const std::string& notes) {
  sim::GpuCalibration cal = sim::calibrate_gpu_profile(base, m);
  if (a.name_given) cal.cluster.name = a.name;
  const std::string text = sim::gpu_profile_text(cal, m, base, a.base, notes);
  if (a.output.empty()) {
    std::fputs(text.c_str(), stdout);
  } else {
    write_file_atomic(a.output, text, "-o");
    std::fprintf(stderr, "ringplan calibrate: wrote %s (%zu curves fitted to %s)\n", a.output.c_str(),
                 cal.curves.size(), m.device.c_str());
  }
  return 0;
}

ClusterConfig load_gpu_base(const CalibrateArgs& a, const char* mode) {
  if (a.base.empty())
    throw bad_input(fmt::format("{} needs --base PROFILE.yaml: the card's datasheet profile (peaks, memory bandwidth) "
                                "whose fractions the measured rates become, e.g. configs/clusters/h200.yaml",
                                mode));
  if (!a.plan.empty() || !a.tokens.empty())
    throw bad_input(fmt::format("{}: --plan and --tokens apply to the CPU calibration only", mode));
  return load_cluster(a.base);
}

// `calibrate --gpu-bench GEMM.json [--gpu-attention SDPA.json] --base PROFILE.yaml`: measurements
// already taken (bench/gpu/gemm_bench.py, sdpa_bench.py, or an earlier --device cuda's
// --measurements file).
int calibrate_from_gpu_bench(const CalibrateArgs& a) {
  const ClusterConfig base = load_gpu_base(a, "--gpu-bench");
  return write_gpu_profile(a, base, sim::read_gpu_bench(a.gpu_bench, a.gpu_attention), "");
}

// `calibrate --device cuda --base PROFILE.yaml [--measurements FILE.json]`: measure this GPU
// (runtime/gpu/measure_gpu.hpp), then fit as above. One process, no MPI.
int calibrate_on_gpu(const CalibrateArgs& a) {
  const ClusterConfig base = load_gpu_base(a, "--device cuda");
#if RINGPLAN_HAVE_GPU_RUN
  // Outputs are checked before the measurement (minutes on a GPU) starts.
  if (!a.measurements.empty()) check_output_path(a.measurements, "--measurements");
  if (!a.output.empty()) check_output_path(a.output, "-o");
  // The number of items is fixed by measure_gpu's lists (2 models x 4 TP x 3 token counts, the
  // copy, 6 attention shapes).
  Progress progress("calibrate", 31);
  runtime::gpu::GpuMeasureOptions opt;
  opt.fp8 = !a.skip_fp8;
  opt.on_item = [&progress](int done, int) { progress.set_done(done); };
  const runtime::gpu::GpuMeasureResult r = runtime::gpu::measure_gpu(opt);
  progress.finish();
  if (!a.measurements.empty()) write_file_atomic(a.measurements, r.json + "\n", "--measurements");
  return write_gpu_profile(a, base, sim::parse_gpu_bench(r.json, "", "ringplan calibrate --device cuda on " + r.device),
                           r.notes);
#else
  (void)base;
  throw bad_input("--device cuda: this ringplan was built without CUDA and NCCL; build it with "
                  "-DRINGPLAN_ENABLE_CUDA=ON, or measure with bench/gpu/gemm_bench.py and use --gpu-bench");
#endif
}

int calibrate_command(const CalibrateArgs& a) {
  if (a.device != "cpu" && a.device != "cuda")
    throw bad_input(fmt::format("--device '{}': valid values are cpu (under mpirun) and cuda", a.device));
  if (!a.gpu_bench.empty() && a.device == "cuda")
    throw bad_input("--gpu-bench fits measurements already taken; --device cuda measures this GPU: give one");
  if (!a.gpu_bench.empty()) return calibrate_from_gpu_bench(a);
  if (a.device == "cuda") return calibrate_on_gpu(a);
  if (!a.gpu_attention.empty() || !a.base.empty() || !a.measurements.empty() || a.skip_fp8)
    throw bad_input("--gpu-attention, --base and --measurements go with --gpu-bench GEMM.json or --device cuda (a GPU "
                    "profile)");
  return cli::run_under_mpi(a.timeout_given, a.timeout_s, [&](runtime::MpiCommunicator& world) { return calibrate_body(a, world); });
}

}  // namespace

RINGPLAN_COMMAND("calibrate", "Measure kernel throughput and links under mpirun; write a cluster profile", 60,
                 [](CLI::App& app) {
                   auto a = std::make_shared<CalibrateArgs>();
                   app.add_option("-o,--output", a->output, "Profile YAML to write (default: stdout)");
                   app.add_option("--plan", a->plan, "Take head shapes and block sizes from this plan");
                   app.add_option("--tokens", a->tokens, "Block sizes in tokens (default 128,256,512,1024)")
                       ->delimiter(',');
                   app.add_option("--heads", a->heads, "Query heads per rank")->capture_default_str();
                   app.add_option("--kv-heads", a->kv_heads, "KV heads per rank (default: heads)");
                   app.add_option("--head-dim", a->head_dim, "Head dimension")->capture_default_str();
                   app.add_option("--batch", a->batch, "Micro-batch sequences")->capture_default_str();
                   app.add_option("--reps", a->reps, "Timed repetitions per point")->capture_default_str();
                   app.add_option("--threads", a->threads, "Kernel threads per rank, 1..256")->capture_default_str();
                   CLI::Option* name = app.add_option("--name", a->name, "Profile name")->capture_default_str();
                   app.add_option("--gpu-bench", a->gpu_bench,
                                  "Fit a GPU profile to bench/gpu/gemm_bench.py --json output (no MPI run)");
                   app.add_option("--gpu-attention", a->gpu_attention,
                                  "With --gpu-bench: bench/gpu/sdpa_bench.py --json output for the attention curves");
                   app.add_option("--base", a->base,
                                  "With --gpu-bench or --device cuda: the card's datasheet profile YAML");
                   app.add_option("--device", a->device,
                                  "cpu (default: the CPU kernels under mpirun) or cuda (measure this GPU: cuBLAS "
                                  "GEMMs, the attention kernels, HBM; needs --base)");
                   app.add_flag("--skip-fp8", a->skip_fp8, "With --device cuda: measure bf16 GEMMs only");
                   app.add_option("--measurements", a->measurements,
                                  "With --device cuda: also write the raw measurements (JSON; refit with --gpu-bench)");
                   CLI::Option* timeout = app.add_option(
                       "--timeout", a->timeout_s,
                       "Fault timeout in seconds, finite and > 0 (default: env RINGPLAN_TIMEOUT_S, else 60)");
                   return [=] {
                     a->timeout_given = timeout->count() > 0;
                     a->name_given = name->count() > 0;
                     return calibrate_command(*a);
                   };
                 });
