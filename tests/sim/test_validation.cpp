// The cost model against published Megatron-LM iteration times (Korthikanti et al. 2022,
// Table 5), read from configs/validation/korthikanti2022 in the source tree. The bounds are
// the errors this model reaches with the one A100 profile of configs/clusters/dgx_a100_80gb.yaml:
// a change that makes the model worse fails here. Nothing is fitted per case; the profile's two
// matmul numbers and its memory bandwidth are fitted to the eight runs together.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/config_yaml.hpp"
#include "sim/cost_model.hpp"
#include "sim/ring_model.hpp"

using namespace ringplan;

TEST_CASE("Korthikanti et al. 2022 Table 5: eight iteration times within the reached error") {
  const std::string dir = std::string(RINGPLAN_SOURCE_DIR) + "/configs/validation/korthikanti2022";
  const std::vector<std::string> files = find_experiments(dir);
  REQUIRE(files.size() == 8);
  double sum_abs = 0, max_abs = 0;
  for (const std::string& f : files) {
    const Experiment e = load_experiment(f);
    REQUIRE(e.mesh.has_value());
    REQUIRE(e.published.has_value());
    REQUIRE(e.published->step_time_s.has_value());
    CHECK(sim::check_layout(e, *e.mesh, e.options, e.mesh->world_size()) == "");
    const sim::Prediction p = sim::predict(e, *e.mesh, e.options);
    CHECK(p.fits);  // the published runs ran
    const double err = 100.0 * (p.step_time_s - *e.published->step_time_s) / *e.published->step_time_s;
    MESSAGE(e.name << ": predicted " << p.step_time_s << " s, published " << *e.published->step_time_s
                   << " s, error " << err << " %");
    sum_abs += std::fabs(err);
    max_abs = std::max(max_abs, std::fabs(err));
  }
  const double mean_abs = sum_abs / static_cast<double>(files.size());
  MESSAGE("mean |error| " << mean_abs << " %, max |error| " << max_abs << " %");
  // The profile's matmul curve and memory bandwidth are fitted to these eight runs (`ringplan fit
  // configs/validation/korthikanti2022 --fix attention`; tests/sim/test_fit.cpp re-fits them and
  // bounds the 5-fold held-out mean by 3 %), so this is their training error: reached 1.01 % mean,
  // 3.29 % max. A cost term that moves these runs but not the curve's fit fails here; one that
  // every run shares is absorbed by the next fit. Goal (held out): mean <= 3 %, max <= 8 %.
  CHECK(mean_abs <= 1.2);
  CHECK(max_abs <= 3.5);
}

// zhuzilin/ring-flash-attention README: Llama-3-8B attention shapes (32 heads, 8 KV heads,
// head dim 128, bf16, causal), 8K tokens per GPU on 8 x A100, forward + backward as a share of
// the ideal (single-device kernel time / 8): plain ring (contiguous) 52.5 %, zigzag 89.8 %,
// striped 82.6 %. The ideal here is one 65536-token call / 8; the README's is 8 calls of 8192
// tokens (the next test case compares absolute times, which settles the difference).
// Predicted (BENCHMARKS.md, cost model section): 51.3, 93.0, 93.0. The load imbalance and
// the per-step fp32 merge are modelled; striped's per-element masking of every tile is not,
// hence its wider bound.
namespace {
// ring-flash-attention's benchmark shape: Llama-3-8B attention, bf16, causal, one sequence of
// `tokens` on `cp` ranks.
sim::RingAttentionShape ring_flash_shape(int64_t tokens, int64_t cp) {
  sim::RingAttentionShape s;
  s.micro_batch = 1;
  s.heads_per_tp = 32;
  s.kv_heads_per_tp = 8;
  s.head_dim = 128;
  s.seq_len = tokens;
  s.causal = true;
  s.dtype = DType::bf16;
  s.cp = cp;
  return s;
}
ClusterConfig a100() {
  return load_cluster(std::string(RINGPLAN_SOURCE_DIR) + "/configs/clusters/dgx_a100_80gb.yaml");
}
}  // namespace

TEST_CASE("ring-flash-attention on 8 x A100: share of ideal by sharding scheme") {
  const ClusterConfig c = a100();
  sim::RingAttentionShape s = ring_flash_shape(8 * 8192, 1);
  const sim::RingLayerPrediction single = sim::predict_ring_attention(s, c);
  const double ideal_s = (single.forward.total_s + single.backward.total_s) / 8;
  auto share = [&](CpScheme scheme) {
    s.cp = 8;
    s.scheme = scheme;
    const sim::RingLayerPrediction r = sim::predict_ring_attention(s, c);
    return 100.0 * ideal_s / (r.forward.total_s + r.backward.total_s);
  };
  const double contiguous = share(CpScheme::contiguous), zigzag = share(CpScheme::zigzag),
               striped = share(CpScheme::striped);
  MESSAGE("share of ideal: contiguous " << contiguous << " %, zigzag " << zigzag << " %, striped " << striped
                                        << " % (published 52.5, 89.8, 82.6)");
  CHECK(contiguous == doctest::Approx(52.5).epsilon(0.05));
  CHECK(zigzag == doctest::Approx(89.8).epsilon(0.05));
  CHECK(striped == doctest::Approx(82.6).epsilon(0.20));
  CHECK(zigzag > contiguous + 30);
}

// The same README's absolute figures (zhuzilin/ring-flash-attention, README.md at commit
// 01c8baf5, "batch api", 8 x A100, fwd + bwd, iter/s of benchmark/benchmark_kvpacked_func.py:
// every rank holds 8192 tokens): flash_attn on one rank's 8192 tokens 94.7 it/s (its
// "theoretic" ideal is 8 such calls, not one 65536-token call / 8), ring_attn 6.2, zigzag_ring
// 10.6, stripe_attn 9.75. Forward only: 373.4, 24.0, 38.2, 32.5 it/s. The A100 profile is not
// fitted to any of them. Reached (BENCHMARKS.md): the 8K call and the plain ring within 1 %,
// zigzag 6 % fast, striped 14 % fast (ring-flash-attention runs striped's later steps on blocks
// shifted by one token, q[:, 1:] against k[:, :-1], and merges into slices of the output, which
// the model does not charge). Each bound is the reached error plus a little.
TEST_CASE("ring-flash-attention on 8 x A100: absolute times of the 8K call and of each scheme") {
  const ClusterConfig c = a100();
  sim::RingAttentionShape s = ring_flash_shape(8192, 1);
  const sim::RingLayerPrediction one = sim::predict_ring_attention(s, c);
  auto err = [](double predicted_s, double iter_per_s) { return 100.0 * (predicted_s * iter_per_s - 1.0); };
  const double call = one.forward.total_s + one.backward.total_s;
  s.cp = 8;
  s.seq_len = 8 * 8192;
  auto ring = [&](CpScheme scheme) {
    s.scheme = scheme;
    return sim::predict_ring_attention(s, c);
  };
  const sim::RingLayerPrediction plain = ring(CpScheme::contiguous), zigzag = ring(CpScheme::zigzag),
                                 striped = ring(CpScheme::striped);
  auto both = [](const sim::RingLayerPrediction& r) { return r.forward.total_s + r.backward.total_s; };
  const double e_call = err(call, 94.7), e_plain = err(both(plain), 6.2), e_zigzag = err(both(zigzag), 10.6),
               e_striped = err(both(striped), 9.75);
  MESSAGE("fwd+bwd predicted vs README (error %): 8K call " << call * 1e3 << " ms (" << e_call << "), ring "
                                                            << both(plain) * 1e3 << " (" << e_plain << "), zigzag "
                                                            << both(zigzag) * 1e3 << " (" << e_zigzag << "), striped "
                                                            << both(striped) * 1e3 << " (" << e_striped << ")");
  MESSAGE("fwd only (error %): 8K call " << err(one.forward.total_s, 373.4) << ", ring "
                                        << err(plain.forward.total_s, 24.0) << ", zigzag "
                                        << err(zigzag.forward.total_s, 38.2) << ", striped "
                                        << err(striped.forward.total_s, 32.5));
  MESSAGE("share of the README's ideal (8 x the 8K call): ring " << 100 * 8 * call / both(plain) << " %, zigzag "
                                                                  << 100 * 8 * call / both(zigzag) << " %, striped "
                                                                  << 100 * 8 * call / both(striped)
                                                                  << " % (published 52.5, 89.8, 82.6)");
  CHECK(std::abs(e_call) <= 2.0);
  CHECK(std::abs(e_plain) <= 2.0);
  CHECK(std::abs(e_zigzag) <= 8.0);
  CHECK(std::abs(e_striped) <= 15.0);  // reached: -13.8 %; a change that widens it fails
}

// MosaicML llm-foundry's benchmark table (scripts/train/benchmarking/README.md at commit
// 495218376830947dce625efabc4d86be7c47cc45, A100 80GB section, NumParams of the 2048-token rows)
// counts what the cost model does not hold: a bias on every linear layer (9h per layer) and
// LayerNorm (2h per layer, h for the final one; MPT's no_bias is False) and the learned position
// embedding (2048 x h). The shipped MPT shapes plus those give the published counts exactly.
TEST_CASE("llm-foundry's MPT models: the shipped shapes give the published parameter counts") {
  const std::pair<const char*, double> rows[] = {
      {"mpt_125m", 125311488.0},    {"mpt_350m", 355985408.0},     {"mpt_760m", 760470528.0},
      {"mpt_1b", 1315950592.0},     {"mpt_3b", 2651837440.0},      {"mpt_7b", 6658859008.0},
      {"mpt_13b", 12853954560.0},   {"mpt_30b", 29975214080.0},    {"mpt_70b", 64862437376.0},
  };
  for (const auto& [name, published] : rows) {
    INFO(name);
    const ModelConfig m = load_model(std::string(RINGPLAN_SOURCE_DIR) + "/configs/models/" + name + ".yaml");
    const double h = static_cast<double>(m.hidden), layers = static_cast<double>(m.layers);
    const double biases = layers * 11.0 * h + h, position = 2048.0 * h;
    CHECK(sim::model_params(m) + biases + position == published);
  }
}
