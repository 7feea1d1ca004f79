// `ringplan run`'s checks of a plan's sizes against the memory of the GPUs (cli/run_limits.hpp),
// on the sizes alone: no GPU is needed to test them, and the CUDA build applies them before any
// device is selected or allocated.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/run_limits.hpp"
#include "core/config_yaml.hpp"

namespace {

using namespace ringplan;

constexpr double kGiB = 1073741824.0;

// tests/runtime/data/plan_cp2.yaml (head_dim at line 12, seq_len at 31, micro_batch at 39),
// with each `from` line replaced by `to`.
Experiment cp2_plan(const std::vector<std::pair<std::string, std::string>>& edits = {}) {
  std::ifstream in(std::string(RINGPLAN_SOURCE_DIR) + "/tests/runtime/data/plan_cp2.yaml");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  for (const auto& [from, to] : edits) {
    const auto pos = text.find(from);
    REQUIRE_MESSAGE(pos != std::string::npos, "test bug: '" << from << "' not in plan_cp2.yaml");
    text.replace(pos, from.size(), to);
  }
  return parse_experiment(text, "plan.yaml");
}

// The plan's need as the refusal's searches ask for it.
double need_of(const Experiment& x) { return cli::gpu_attention_device_bytes(x); }

}  // namespace

TEST_CASE("GPU attention need counts every device buffer of the CUDA executor and ring") {
  // b=1, H=8, Hkv=2, d=32, L=256 over cp=2: n=128, q=32768, kv=8192, rows=1024 elements.
  const Experiment e = cp2_plan();
  const double q = 32768, kv = 8192, rows = 1024, L = 256;
  CHECK(cli::gpu_attention_device_bytes(e) == 18 * q + 12 * kv + 40 * kv + 12 * rows + 8 * L);
  // One rank holds no ring buffers (the kernels work on the caller's K, V, dK, dV).
  Experiment one = cp2_plan({{"cp: 2", "cp: 1"}, {"gpus: 2", "gpus: 1"}});
  CHECK(cli::gpu_attention_device_bytes(one) == 18 * 2 * q + 12 * 2 * kv + 12 * 2 * rows + 8 * L);
  // Sizes near the config limits (2^31 each) stay finite in double.
  Experiment huge = cp2_plan({{"    head_dim: 32\n", "    head_dim: 2147483648\n"}});
  const double d = 2147483648.0;
  CHECK(cli::gpu_attention_device_bytes(huge) == 18 * (q / 32) * d + 52 * (kv / 32) * d + 12 * rows + 8 * L);
}

TEST_CASE("a plan that fits the smallest GPU, or GPUs of unknown size, passes the device check") {
  const Experiment e = cp2_plan();
  CHECK_NOTHROW(cli::check_device_fits(e, need_of(e), 80 * kGiB, need_of, "layer", 2, "shorter"));
  // No rank could read its GPU's size: nothing to check against (the device set-up names the rank).
  Experiment big = cp2_plan({{"    global_batch: 1\n", "    global_batch: 1073741824\n"},
                             {"    micro_batch: 1\n", "    micro_batch: 1073741824\n"}});
  CHECK_NOTHROW(cli::check_device_fits(big, need_of(big), 0.0, need_of, "layer", 2, "shorter"));
  CHECK_NOTHROW(cli::check_device_fits(big, need_of(big), HUGE_VAL, need_of, "layer", 2, "shorter"));
}

TEST_CASE("a micro_batch no GPU holds is refused at the plan's file:line:field with the largest that fits") {
  const Experiment e = cp2_plan({{"    global_batch: 1\n", "    global_batch: 1073741824\n"},
                                 {"    micro_batch: 1\n", "    micro_batch: 1073741824\n"}});
  bool threw = false;
  try {
    cli::check_device_fits(e, need_of(e), 80 * kGiB, need_of, "one attention layer", 2, "use a larger cp");
  } catch (const ConfigError& err) {
    threw = true;
    const std::string what = err.what();
    INFO(what);
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(err.file() == "plan.yaml");
    CHECK(err.line() == 39);
    CHECK(err.field() == "experiment.options.micro_batch");
    CHECK(what.find("1073741824 is too large to run here") != std::string::npos);
    CHECK(what.find("this GPU allows 72 GiB per rank: the smallest GPU of the 2 ranks has 80 GiB") !=
          std::string::npos);
    // The largest power-of-two micro-batch (a divisor of 2^30) within 72 GiB: need is linear in it.
    const double per_sequence = need_of(cp2_plan()) - 8 * 256;  // all but the positions scale with b
    const auto best = static_cast<int64_t>(std::exp2(std::floor(std::log2(72 * kGiB / per_sequence))));
    CHECK(what.find("valid: at most " + std::to_string(best) + " on this GPU") != std::string::npos);
  }
  CHECK(threw);
}

TEST_CASE("a sequence no GPU holds at micro_batch 1 is refused naming the plan and the way out") {
  const Experiment e = cp2_plan({{"    seq_len: 256\n", "    seq_len: 2147483648\n"}});
  bool threw = false;
  try {
    cli::check_device_fits(e, need_of(e), 80 * kGiB, need_of, "one attention layer", 2, "use a larger cp");
  } catch (const Error& err) {
    threw = true;
    const std::string what = err.what();
    INFO(what);
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(what.rfind("plan.yaml: one attention layer need about", 0) == 0);
    CHECK(what.find("use a larger cp") != std::string::npos);
  }
  CHECK(threw);
}

TEST_CASE("--device cuda refuses a head_dim the CUDA kernels do not take at its file:line") {
  CHECK_NOTHROW(cli::check_cuda_head_dim(cp2_plan({{"    head_dim: 32\n", "    head_dim: 64\n"}})));
  CHECK_NOTHROW(cli::check_cuda_head_dim(cp2_plan({{"    head_dim: 32\n", "    head_dim: 128\n"}})));
  for (const char* d : {"32", "2147483648"}) {
    const Experiment e = cp2_plan({{"    head_dim: 32\n", std::string("    head_dim: ") + d + "\n"}});
    bool threw = false;
    try {
      cli::check_cuda_head_dim(e);
    } catch (const ConfigError& err) {
      threw = true;
      CHECK(err.line() == 12);
      CHECK(err.field() == "experiment.model.head_dim");
      CHECK(std::string(err.what()).find("valid: 64 or 128") != std::string::npos);
    }
    CHECK(threw);
  }
}
