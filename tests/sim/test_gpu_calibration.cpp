// The GPU profile from measurements (sim/gpu_calibration.hpp) and the FP8 GEMM term of the cost
// model: the curve fit on synthetic points with a known answer, the shipped H100/H200 curves
// recomputed from the measurement files committed beside them, the written profile, and FP8
// predictions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "sim/cost_model.hpp"
#include "sim/formulas.hpp"
#include "sim/gpu_calibration.hpp"
#include "test_helpers.hpp"

using namespace ringplan;
using namespace ringplan::sim;

namespace {

std::string source(const std::string& rel) { return std::string(RINGPLAN_SOURCE_DIR) + "/" + rel; }

// The profiles carry the fitted values rounded to 3 significant figures.
void check_rounded(const EfficiencyCurve& shipped, const EfficiencyCurve& fitted, const char* what) {
  INFO(what);
  CHECK(shipped.max_efficiency == doctest::Approx(fitted.max_efficiency).epsilon(0.002));
  CHECK(shipped.half_flops == doctest::Approx(fitted.half_flops).epsilon(0.005));
  CHECK(shipped.half_k == doctest::Approx(fitted.half_k).epsilon(0.005));
}

}  // namespace

TEST_CASE("fit_rate_curve and fit_efficiency_curve recover a known curve and fall back to a constant") {
  const double peak = 1000e12;
  const EfficiencyCurve truth{0.7, 0.01e12};
  std::vector<RatePoint> pts;
  for (double x : {0.001e12, 0.004e12, 0.02e12, 0.1e12, 1e12}) pts.push_back({x, peak * truth.at(x)});
  const EfficiencyCurve fit = fit_efficiency_curve(pts, peak);
  CHECK(fit.max_efficiency == doctest::Approx(0.7).epsilon(1e-9));
  CHECK(fit.half_flops == doctest::Approx(0.01e12).epsilon(1e-9));
  CHECK(curve_fit_error(fit, peak, pts).max_pct < 1e-6);
  // The same fit as a rate curve (what the CPU calibrate writes as its peak and half).
  const RateCurve rc = fit_rate_curve(pts);
  CHECK(rc.asymptote == doctest::Approx(700e12).epsilon(1e-9));
  CHECK(rc.at(0.01e12) == doctest::Approx(350e12).epsilon(1e-9));
  // Rates that fall with size have no rising curve: the median rate, constant.
  const EfficiencyCurve flat = fit_efficiency_curve({{1e12, 600e12}, {2e12, 500e12}, {4e12, 400e12}}, peak);
  CHECK(flat.half_flops == 0);
  CHECK(flat.max_efficiency == doctest::Approx(0.5));
  // Faster than the peak: capped at 1.
  CHECK(fit_efficiency_curve({{1e12, 2000e12}}, peak).max_efficiency == 1.0);
  CHECK_THROWS_AS(fit_efficiency_curve({}, peak), Error);
  CHECK_THROWS_AS(fit_efficiency_curve({{0, 1e12}}, peak), Error);
  CHECK_THROWS_AS(fit_efficiency_curve({{1e12, 1e12}}, 0), Error);
}

TEST_CASE("fit_gemm_efficiency_curve: the K-ramp recovered where the rates have it, the FLOPs curve where they do not") {
  const double peak = 1000e12;
  const EfficiencyCurve truth{0.7, 0.01e12, 200.0};
  std::vector<RatePoint> ramp, flat, no_k;
  for (double m : {1024.0, 4096.0, 16384.0})
    for (double k : {256.0, 1024.0, 4096.0, 16384.0})
      for (double n : {512.0, 4096.0}) {
        const double flops = 2.0 * m * n * k;
        ramp.push_back({flops, peak * truth.at_gemm(flops, k), k});
        flat.push_back({flops, peak * truth.at(flops), k});
        no_k.push_back({flops, peak * truth.at(flops), 0.0});
      }
  const GemmCurveFit r = fit_gemm_efficiency_curve(ramp, peak);
  REQUIRE(r.ramp_tried);
  CHECK(r.held_out_ramp_pct < r.held_out_flops_pct);
  // half_k on the fit's grid (50 steps per decade): within one step of 200
  CHECK(r.curve.half_k == doctest::Approx(200.0).epsilon(0.05));
  CHECK(r.curve.max_efficiency == doctest::Approx(0.7).epsilon(0.02));
  CHECK(curve_fit_error(r.curve, peak, ramp).max_pct < 3.0);
  // rates that do not depend on K: the ramp does no better held out and is not taken
  const GemmCurveFit f = fit_gemm_efficiency_curve(flat, peak);
  CHECK(f.ramp_tried);
  CHECK(f.curve.half_k == 0.0);
  CHECK(f.curve.max_efficiency == doctest::Approx(0.7).epsilon(1e-9));
  // without each point's K, or with too few points, it is not tried
  CHECK_FALSE(fit_gemm_efficiency_curve(no_k, peak).ramp_tried);
  CHECK_FALSE(fit_gemm_efficiency_curve(std::vector<RatePoint>(ramp.begin(), ramp.begin() + 9), peak).ramp_tried);
}

TEST_CASE("shipped H200 and H100 curves are the fit of the committed H200 measurements") {
  const GpuBenchMeasurements m = read_gpu_bench(source("configs/clusters/measured/h200_2026-12-04_gemm.json"),
                                                source("configs/clusters/measured/h200_2026-12-04_sdpa.json"));
  CHECK(m.device == "NVIDIA H200");
  CHECK(m.gemm_bf16_fwd.size() == 120);
  CHECK(m.gemm_bf16_bwd.size() == 240);
  CHECK(m.gemm_fp8.size() == 120);
  CHECK(m.attention_fwd.size() == 6);
  for (const char* name : {"h200", "dgx_h100"}) {
    INFO(name);
    // The kernel curves as written in the file; dgx_h100's training scale (fitted to training
    // runs, tests/sim/test_fit.cpp) is not part of the measurement.
    ClusterConfig shipped = load_cluster(source(std::string("configs/clusters/") + name + ".yaml"));
    shipped.set_training_scale(1.0, 1.0);
    const GpuCalibration cal = calibrate_gpu_profile(load_cluster(source("configs/clusters/h200.yaml")), m);
    REQUIRE(cal.curves.size() == 5);
    // Every GEMM curve of the H200 keeps the K-ramp: it predicts the GEMMs it was not fitted to
    // better than the FLOPs curve does.
    for (size_t i = 0; i < 3; ++i) {
      INFO(cal.curves[i].key);
      CHECK(cal.curves[i].gemm.ramp_tried);
      CHECK(cal.curves[i].gemm.held_out_ramp_pct < cal.curves[i].gemm.held_out_flops_pct);
      CHECK(cal.curves[i].fitted.half_k > 0);
    }
    check_rounded(shipped.matmul, cal.cluster.matmul, "matmul");
    check_rounded(shipped.matmul_backward, cal.cluster.matmul_backward, "matmul_backward");
    check_rounded(shipped.matmul_fp8, cal.cluster.matmul_fp8, "matmul_fp8");
    check_rounded(shipped.attention, cal.cluster.attention, "attention");
    check_rounded(shipped.attention_backward, cal.cluster.attention_backward, "attention_backward");
    CHECK(shipped.memory_bandwidth_efficiency == doctest::Approx(cal.memory_bandwidth_efficiency).epsilon(0.002));
    // The curve describes its own points to within a few percent on average.
    for (const auto& c : cal.curves) {
      INFO(c.key);
      CHECK(c.error.mean_pct < 10.0);
    }
  }
}

TEST_CASE("read_gpu_bench refuses malformed measurement files with the record named") {
  const std::string bad = "test_gpu_calibration_bad.json";
  {
    std::ofstream f(bad);
    f << R"({"device": "x", "gemms": [{"flops": 1e12, "ms": -1, "dtype": "bf16", "pass_": "fwd"}]})";
  }
  try {
    read_gpu_bench(bad, "");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK(std::string(e.what()).find("gemms[0]") != std::string::npos);
    CHECK(std::string(e.what()).find("'ms'") != std::string::npos);
  }
  {
    std::ofstream f(bad);
    f << R"({"gemms": []})";
  }
  CHECK_THROWS_AS(read_gpu_bench(bad, ""), Error);
  CHECK_THROWS_AS(read_gpu_bench("/nonexistent/gemm.json", ""), Error);
  std::remove(bad.c_str());
  // One object holding GEMMs, the copy rate and attention results (what calibrate --device cuda
  // writes): the attention comes from the same text.
  const GpuBenchMeasurements one = parse_gpu_bench(
      R"({"device": "d", "hbm_copy_gbps": 4000, "gemms": [{"flops": 2e12, "ms": 4, "dtype": "bf16", "pass_": "fwd"}],
          "results": [{"tokens": 4096, "causal": true, "fwd_ms": 0.5, "bwd_ms": 1.5, "fwd_tflops": 400}]})",
      "", "inline");
  CHECK(one.gemm_bf16_fwd.size() == 1);
  CHECK(one.gemm_bf16_fwd[0].rate == doctest::Approx(5e14));
  CHECK(one.gemm_bf16_fwd[0].k == 0.0);  // not recorded: the K-ramp is not tried
  // A recorded K is read with the record; one that is not > 0 is refused with the record named.
  CHECK(parse_gpu_bench(R"({"gemms": [{"flops": 2e12, "ms": 4, "dtype": "bf16", "pass_": "fwd", "k": 4096}]})", "",
                        "inline")
            .gemm_bf16_fwd[0]
            .k == 4096.0);
  try {
    parse_gpu_bench(R"({"gemms": [{"flops": 2e12, "ms": 4, "dtype": "bf16", "pass_": "fwd", "k": 0}]})", "", "inline");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("gemms[0]") != std::string::npos);
    CHECK(std::string(e.what()).find("'k'") != std::string::npos);
  }
  CHECK(one.attention_fwd.size() == 1);
  CHECK(one.attention_bwd[0].rate == doctest::Approx(2.5 * 400e12 * 0.5 / 1.5));
  CHECK(one.hbm_copy_bytes_per_s == doctest::Approx(4e12));
  CHECK_THROWS_AS(parse_gpu_bench("{not json", "", "inline"), Error);
  // FP8 points need the profile's FP8 peak.
  GpuBenchMeasurements m;
  m.gemm_fp8 = {{1e12, 1000e12}};
  ClusterConfig c = test::a100_cluster();
  CHECK_THROWS_AS(calibrate_gpu_profile(c, m), Error);
}

TEST_CASE("fp8 runs the blocks' GEMMs at the FP8 rate and nothing else") {
  Experiment e = test::llama_experiment(8192, 64);
  e.cluster.peak_flops_per_s_fp8 = 2.0 * e.cluster.peak_flops_per_s_bf16;
  e.cluster.matmul_fp8 = e.cluster.matmul;  // same fraction of twice the peak
  e.cluster.matmul_fp8.half_flops *= 2.0;    // and the same ramp in time: at(x) over 2x peak
  const Mesh mesh{8, 1, 1, 1};
  ParallelOptions opt;
  const Prediction bf16 = predict(e, mesh, opt);
  e.training.fp8 = true;
  const Prediction fp8 = predict(e, mesh, opt);
  // Same model FLOPs, less time; memory terms unchanged (FP8 copies are not modelled).
  CHECK(fp8.model_flops_per_step == bf16.model_flops_per_step);
  CHECK(fp8.step_time_s < bf16.step_time_s);
  CHECK(fp8.peak_memory_bytes == bf16.peak_memory_bytes);
  // Without an FP8 peak the cluster cannot run it.
  e.cluster.peak_flops_per_s_fp8 = 0;
  CHECK_THROWS_AS(predict(e, mesh, opt), Error);
}

TEST_CASE("fp8_impl torchao: every forward casts the weights, FSDP's FP8 gather and TP's all-gathers move 1 byte") {
  Experiment e = test::llama_experiment(8192, 64);
  e.cluster.peak_flops_per_s_fp8 = 2.0 * e.cluster.peak_flops_per_s_bf16;
  e.training.fp8 = true;
  const Mesh dp8 = test::mesh_of(8, 1, 1, 1);
  ParallelOptions opt;
  opt.recompute = Recompute::none;
  const double bw = achieved_memory_bandwidth_bytes_per_s(e.cluster);
  REQUIRE(bw > 0);
  auto with = [&](bool torchao, bool all_gather) {
    Experiment v = e;
    v.training.fp8_torchao = torchao;
    v.training.fp8_all_gather = all_gather;
    return v;
  };
  const LayerShape x = make_layer_shape(e.model, e.training, dp8, opt);
  const double weights = layer_gemm_flops(x).total() / (2.0 * x.tokens());  // block weights per device
  CHECK(weights == doctest::Approx(double(layer_params(e.model)) - 2.0 * e.model.hidden).epsilon(1e-9));
  const Prediction te = predict(with(false, false), dp8, opt);
  const Prediction ao = predict(with(true, false), dp8, opt);
  const double per_pass = double(te.micro_batches) * double(e.model.layers) * weights / bw;
  // torchao: 6 bytes per weight element in every forward (amax, then a cast writing both
  // layouts), nothing more in the backward; Transformer Engine's once-per-step cast not counted.
  CHECK(ao.time.forward_compute_s - te.time.forward_compute_s == doctest::Approx(6.0 * per_pass).epsilon(1e-9));
  CHECK(ao.time.backward_compute_s == doctest::Approx(te.time.backward_compute_s));
  // Full recompute re-runs the forward, casts included.
  ParallelOptions full = opt;
  full.recompute = Recompute::full;
  CHECK(predict(with(true, false), dp8, full).time.recompute_s - predict(with(false, false), dp8, full).time.recompute_s ==
        doctest::Approx(6.0 * per_pass).epsilon(1e-9));
  // FP8 all-gather without sharded weights (ZeRO-0) changes nothing.
  CHECK(predict(with(true, true), dp8, opt).step_time_s == doctest::Approx(ao.step_time_s));
  // Under ZeRO-3 the forward casts nothing, the backward copies the gathered weight to
  // column-major (2 bytes per element), and the gathers move 1 byte per linear weight: with a
  // slow link that exposes them, less gather time than 16-bit gathers.
  ParallelOptions z3 = opt;
  z3.zero_stage = 3;
  Experiment slow_te = with(false, false), slow_ag = with(true, true), slow_ao = with(true, false);
  for (Experiment* v : {&slow_te, &slow_ag, &slow_ao}) v->cluster.intra_node.bandwidth_bytes_per_s /= 100.0;
  const Prediction z_te = predict(slow_te, dp8, z3), z_ag = predict(slow_ag, dp8, z3), z_ao = predict(slow_ao, dp8, z3);
  CHECK(z_ag.time.forward_compute_s == doctest::Approx(z_te.time.forward_compute_s));
  CHECK(z_ag.time.backward_compute_s - z_te.time.backward_compute_s == doctest::Approx(2.0 * per_pass).epsilon(1e-9));
  // (torchao without the FP8 gather: 16-bit gathers, hidden a little more behind its longer forward.)
  CHECK(z_ao.time.zero_comm_exposed_s <= z_te.time.zero_comm_exposed_s);
  CHECK(z_ao.time.zero_comm_exposed_s > 0.95 * z_te.time.zero_comm_exposed_s);
  CHECK(z_ag.time.zero_comm_exposed_s < 0.6 * z_te.time.zero_comm_exposed_s);
  // ZeRO-1 (PyTorch FSDP2 under a pipeline: gathered once per step) likewise: the gather after the
  // step moves the linear weights at 1 byte, and the forward casts nothing.
  ParallelOptions z1 = opt;
  z1.zero_stage = 1;
  const Prediction o_te = predict(slow_te, dp8, z1), o_ag = predict(slow_ag, dp8, z1);
  CHECK(o_ag.time.forward_compute_s == doctest::Approx(o_te.time.forward_compute_s));
  CHECK(o_ag.time.zero_comm_exposed_s < 0.6 * o_te.time.zero_comm_exposed_s);
  // TP 2 with sequence parallelism, DTensor: the forward's input all-gathers and the backward's
  // output-gradient all-gathers in FP8, the reduce-scatters in 16 bits. With unlimited memory
  // bandwidth the collectives alone are cheaper; the copies through dim 0 move 1 byte per element
  // for what was all-gathered: 3/4 of the 16-bit copies (2 ag at 1 + 2 rs at 2 against 4 at 2).
  const Mesh tp2 = test::mesh_of(4, 2, 1, 1);
  ParallelOptions sp = opt;
  sp.sequence_parallel = true;
  sp.tp_overlap = TpOverlap::none;
  auto tp_time = [&](bool torchao, double bandwidth) {
    Experiment v = with(torchao, false);
    v.training.tp_dtensor = true;
    v.cluster.memory_bandwidth_bytes_per_s = bandwidth;
    return predict(v, tp2, sp).time.tp_comm_s;
  };
  const double hbm = e.cluster.memory_bandwidth_bytes_per_s, unlimited = 1e21;
  CHECK(make_layer_shape(e.model, with(true, false).training, tp2, sp).fp8_tp_all_gather);
  CHECK_FALSE(make_layer_shape(e.model, with(false, false).training, tp2, sp).fp8_tp_all_gather);
  CHECK(tp_time(true, unlimited) < tp_time(false, unlimited));
  CHECK(tp_time(true, unlimited) > 0.5 * tp_time(false, unlimited));
  CHECK(tp_time(true, hbm) - tp_time(true, unlimited) ==
        doctest::Approx(0.75 * (tp_time(false, hbm) - tp_time(false, unlimited))).epsilon(1e-6));
  // The gathered FP8 tensors exist row-major only: the weight-gradient GEMMs copy the two
  // gathered inputs and the two gathered output gradients to the layout torch._scaled_mm takes,
  // 1 byte read and 1 written per element of each T x h tensor, in the backward.
  Experiment te_tp = with(false, false), ao_tp = with(true, false);
  te_tp.training.tp_dtensor = ao_tp.training.tp_dtensor = true;
  const Prediction te2 = predict(te_tp, tp2, sp), ao2 = predict(ao_tp, tp2, sp);
  const double tokens = make_layer_shape(e.model, ao_tp.training, tp2, sp).tokens();
  CHECK(ao2.time.backward_compute_s - te2.time.backward_compute_s ==
        doctest::Approx(double(te2.micro_batches) * double(e.model.layers) * 4.0 * 2.0 * tokens * double(e.model.hidden) / bw)
            .epsilon(1e-9));
}

TEST_CASE("fp8 in YAML: needs a 16-bit dtype and an FP8 peak, with file and line") {
  const std::string dir = "test_fp8_yaml";
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string training32 =
      write("t32.yaml", "seq_len: 4096\nglobal_batch: 8\ndtype: fp32\noptimizer: adam\nfp8: true\n");
  try {
    load_training(training32);
    FAIL("no error");
  } catch (const ConfigError& err) {
    CHECK(err.line() == 5);
    CHECK(std::string(err.what()).find("16-bit") != std::string::npos);
  }
  const std::string training16 = write("t16.yaml", "seq_len: 4096\nglobal_batch: 8\ndtype: bf16\noptimizer: adam\nfp8: true\n");
  CHECK(load_training(training16).fp8);
  // The A100 profile has no FP8 peak: an experiment asking for FP8 on it is refused at load.
  const std::string exp = write("e.yaml", "name: e\nmodel: " + source("configs/models/llama3_8b.yaml") +
                                              "\ncluster: " + source("configs/clusters/dgx_a100_80gb.yaml") +
                                              "\ntraining: t16.yaml\ngpus: 8\n");
  try {
    load_experiment(exp);
    FAIL("no error");
  } catch (const ConfigError& err) {
    CHECK(std::string(err.what()).find("peak_tflops.fp8") != std::string::npos);
  }
  // fp8_impl and fp8_all_gather: read, written back, refused where they cannot apply.
  const std::string torchao =
      write("ao.yaml", "seq_len: 4096\nglobal_batch: 8\ndtype: bf16\noptimizer: adam\nfp8: true\nfp8_impl: torchao\n"
                       "fp8_all_gather: true\n");
  const TrainingConfig t = load_training(torchao);
  CHECK(t.fp8_torchao);
  CHECK(t.fp8_all_gather);
  YAML::Emitter out;
  write_training(out, t);
  const TrainingConfig back = load_training(write("back.yaml", std::string(out.c_str()) + "\n"));
  CHECK(back.fp8_torchao);
  CHECK(back.fp8_all_gather);
  CHECK_FALSE(load_training(training16).fp8_torchao);
  struct Refused {
    const char* text;
    int line;
    const char* says;
  };
  for (const Refused r : {Refused{"fp8_impl: torchao\n", 5, "needs fp8: true"},
                          Refused{"fp8: true\nfp8_impl: apex\n", 6, "must be one of transformer_engine, torchao"},
                          Refused{"fp8: true\nfp8_all_gather: true\n", 6, "needs fp8: true and fp8_impl: torchao"}}) {
    INFO(r.text);
    try {
      load_training(write("bad.yaml", std::string("seq_len: 4096\nglobal_batch: 8\ndtype: bf16\noptimizer: adam\n") + r.text));
      FAIL("no error");
    } catch (const ConfigError& err) {
      CHECK(err.line() == r.line);
      CHECK_MESSAGE(std::string(err.what()).find(r.says) != std::string::npos, err.what());
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("gpu_profile_text names its source, notes and curves and loads back to the fitted cluster") {
  const GpuBenchMeasurements m = read_gpu_bench(source("configs/clusters/measured/h200_2026-12-04_gemm.json"),
                                                source("configs/clusters/measured/h200_2026-12-04_sdpa.json"));
  const ClusterConfig base = load_cluster(source("configs/clusters/h200.yaml"));
  const GpuCalibration cal = calibrate_gpu_profile(base, m);
  const std::string text = gpu_profile_text(cal, m, base, "h200.yaml", "first note\n\nsecond note");
  CHECK(text.find("# device: NVIDIA H200; base profile h200.yaml") != std::string::npos);
  CHECK(text.find("# note: first note\n# note: second note\n") != std::string::npos);
  for (const auto& c : cal.curves) {
    INFO(c.key);
    CHECK(text.find("#  " + c.key + " ") != std::string::npos);
  }
  const std::string marker = std::string(kProfileEndMarker) + "\n";
  REQUIRE(text.size() > marker.size());
  CHECK(text.compare(text.size() - marker.size(), marker.size(), marker) == 0);
  const auto path = std::filesystem::temp_directory_path() / "ringplan_test_gpu_profile.yaml";
  {
    std::ofstream f(path);
    f << text;
  }
  const ClusterConfig back = load_cluster(path.string());
  std::filesystem::remove(path);
  CHECK(back.matmul.max_efficiency == doctest::Approx(cal.cluster.matmul.max_efficiency));
  CHECK(back.attention_backward.half_flops == doctest::Approx(cal.cluster.attention_backward.half_flops));
  CHECK(back.memory_bandwidth_efficiency == doctest::Approx(cal.memory_bandwidth_efficiency));
  CHECK(back.peak_flops_per_s_bf16 == doctest::Approx(base.peak_flops_per_s_bf16));
}

namespace {

// A published flash-kernel rate table (configs/clusters/published/*.csv: seq_len, head_dim, causal,
// TFLOP/s, with a leading gpu column where the file holds several GPUs), as RatePoints on the
// attention curves' axis (x = one call's forward FLOPs, rate = forward + backward FLOPs / time);
// causal rows or non-causal rows of `gpu` (empty: the file has no gpu column).
std::vector<RatePoint> flash_rate_points(const char* file, const std::string& gpu, bool causal) {
  std::ifstream in(source(file));
  REQUIRE(in);
  std::vector<RatePoint> pts;
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (header) {
      CHECK(line == (gpu.empty() ? "" : "gpu,") + std::string("seq_len,head_dim,causal,tflops"));
      header = false;
      continue;
    }
    if (!gpu.empty()) {
      if (line.compare(0, gpu.size() + 1, gpu + ",") != 0) continue;
      line = line.substr(gpu.size() + 1);
    }
    double seq = 0, hd = 0, tflops = 0;
    int is_causal = 0;
    REQUIRE(std::sscanf(line.c_str(), "%lf,%lf,%d,%lf", &seq, &hd, &is_causal, &tflops) == 4);
    if ((is_causal != 0) != causal) continue;
    // batch = 16384 / seq, heads = 2048 / head_dim: 4 * batch * seq^2 * heads * head_dim.
    const double fwd_flops = 4.0 * (16384.0 / seq) * seq * seq * 2048.0 / (causal ? 2.0 : 1.0);
    pts.push_back({fwd_flops, tflops * 1e12, 0.0});
  }
  return pts;
}

}  // namespace

// The Triton FlashAttention kernel (flash_attn_triton.py, llm-foundry's attn_impl triton) has no
// published rate; its docstring measures it against FlashAttention v1, whose published A100 rates
// (configs/clusters/published/a100_flash_attention_1_rates.csv) are the profiles' curve. The same
// figure's "FlashAttention Triton" bars (a100_flash_attention_triton.csv) time OpenAI Triton's
// triton.ops.flash_attention, another kernel: printed beside, not used.
TEST_CASE("the A100 profiles' Triton flash kernel curve is the fit of FlashAttention v1's published rates") {
  const char* fa1_file = "configs/clusters/published/a100_flash_attention_1_rates.csv";
  const std::vector<RatePoint> causal = flash_rate_points(fa1_file, "", true),
                               full = flash_rate_points(fa1_file, "", false);
  REQUIRE(causal.size() == 12);
  REQUIRE(full.size() == 12);
  const double peak = 312e12;  // A100 bf16 dense (the profiles' peak_tflops.bf16)
  const EfficiencyCurve fit = fit_efficiency_curve(causal, peak);
  const CurveFitError err = curve_fit_error(fit, peak, causal);
  // The non-causal rows, on the causal curve: the causal kernel masks element by element in every
  // block it visits, so its rate by FLOPs is lower; the runs it serves are causal.
  const CurveFitError err_full = curve_fit_error(fit, peak, full);
  const std::vector<RatePoint> ops_causal =
      flash_rate_points("configs/clusters/published/a100_flash_attention_triton.csv", "", true);
  REQUIRE(ops_causal.size() == 12);
  const EfficiencyCurve ops = fit_efficiency_curve(ops_causal, peak);
  MESSAGE("attention_flash_triton fit on FlashAttention v1's causal rows: max " << fit.max_efficiency
          << ", half_tflop " << fit.half_flops / 1e12 << "; error mean " << err.mean_pct << " % max " << err.max_pct
          << " %; the non-causal rows on it: mean " << err_full.mean_pct << " %; triton.ops.flash_attention's causal "
          << "rows (not used): max " << ops.max_efficiency << ", half_tflop " << ops.half_flops / 1e12);
  // A kernel at about half of FlashAttention-2's rate, rising with the call's size; v1 saturates
  // above OpenAI's Triton kernel of the same figure (97 / 83 against 80 / 80 TFLOP/s at 16K).
  CHECK(fit.max_efficiency > 0.2);
  CHECK(fit.max_efficiency < 0.35);
  CHECK(fit.max_efficiency > ops.max_efficiency);
  CHECK(fit.half_flops > 0);
  CHECK(err.mean_pct < 10.0);
  for (const char* profile : {"configs/clusters/dgx_a100_80gb.yaml", "configs/clusters/dgx_a100_40gb.yaml"}) {
    const ClusterConfig c = load_cluster(source(profile));
    check_rounded(c.attention_flash_triton, fit, profile);
  }
}

// FlashAttention-2's own published rates (configs/clusters/published/flash_attention_2_rates.csv)
// on the A100 and the H100: each profile's attention_flash_fa2 curve is the fit of its GPU's causal
// rows, written as the kernel's curve (the attention training scale multiplies it at load).
TEST_CASE("the A100 and H100 profiles' FlashAttention-2 curve is the fit of its published rates") {
  const char* file = "configs/clusters/published/flash_attention_2_rates.csv";
  struct Gpu {
    const char* name;
    double peak;  // bf16 dense: the profiles' peak_tflops.bf16
    std::vector<const char*> profiles;
  };
  const Gpu gpus[] = {
      {"a100", 312e12, {"configs/clusters/dgx_a100_80gb.yaml", "configs/clusters/dgx_a100_40gb.yaml"}},
      {"h100", 989e12,
       {"configs/clusters/dgx_h100.yaml", "configs/clusters/grand_teton_h100.yaml", "configs/clusters/h200.yaml"}}};
  double max_by_gpu[2] = {0, 0};
  int i = 0;
  for (const Gpu& g : gpus) {
    const std::vector<RatePoint> causal = flash_rate_points(file, g.name, true);
    REQUIRE(causal.size() == 12);
    const EfficiencyCurve fit = fit_efficiency_curve(causal, g.peak);
    const CurveFitError err = curve_fit_error(fit, g.peak, causal);
    const CurveFitError err_full = curve_fit_error(fit, g.peak, flash_rate_points(file, g.name, false));
    MESSAGE(std::string(g.name) << " attention_flash_fa2 fit on the causal rows: max " << fit.max_efficiency << ", half_tflop "
                   << fit.half_flops / 1e12 << "; error mean " << err.mean_pct << " % max " << err.max_pct
                   << " %; the non-causal rows on it: mean " << err_full.mean_pct << " %");
    CHECK(fit.half_flops > 0);
    CHECK(err.mean_pct < 10.0);
    max_by_gpu[i++] = fit.max_efficiency;
    for (const char* profile : g.profiles) {
      ClusterConfig c = load_cluster(source(profile));
      c.set_training_scale(1.0, 1.0);  // the kernel curves, as the file writes them
      check_rounded(c.attention_flash_fa2, fit, profile);
    }
  }
  // On the A100 the kernel reaches about 60 % of the bf16 peak (the FlashAttention-2 class the
  // A100 profiles' `attention` curve describes); on the H100 about a third: it uses none of
  // Hopper's asynchronous tensor-core instructions.
  CHECK(max_by_gpu[0] > 0.5);
  CHECK(max_by_gpu[0] < 0.7);
  CHECK(max_by_gpu[1] > 0.28);
  CHECK(max_by_gpu[1] < 0.4);
}
