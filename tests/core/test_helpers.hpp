// Helpers of the core tests: the shared temporary folder (tests/fixtures/temp_dir.hpp), and a
// check that a callable throws ConfigError at an expected file, line and field.
#pragma once
#include <doctest/doctest.h>

#include <string>

#include "core/error.hpp"
#include "tests/fixtures/temp_dir.hpp"

namespace ringplan::test {

using ringplan_test::TempDir;

struct ExpectedError {
  std::string file;
  int line;
  std::string field;
  std::string message_part;  // must occur in what()
};

template <typename F>
void check_config_error(F&& load, const ExpectedError& want) {
  bool threw = false;
  try {
    load();
  } catch (const ConfigError& e) {
    threw = true;
    INFO("message: " << std::string(e.what()));
    CHECK(e.file() == want.file);
    CHECK(e.line() == want.line);
    CHECK(e.field() == want.field);
    CHECK(std::string(e.what()).find(want.message_part) != std::string::npos);
    CHECK(e.kind() == ErrorKind::bad_input);
  }
  CHECK_MESSAGE(threw, "expected a ConfigError containing '" << want.message_part << "'");
}

// A valid model, cluster and training file body, reused by the tests (line numbers matter:
// tests that edit them state the line they expect).
inline const char* kModelYaml =
    "name: m\n"           // 1
    "layers: 4\n"         // 2
    "hidden: 512\n"       // 3
    "heads: 8\n"          // 4
    "kv_heads: 2\n"       // 5
    "head_dim: 64\n"      // 6
    "ffn_hidden: 1536\n"  // 7
    "gated_mlp: true\n"   // 8
    "vocab: 32000\n";     // 9

inline const char* kClusterYaml =
    "name: c\n"                                        // 1
    "peak_tflops: {bf16: 989, fp16: 989, fp32: 67}\n"  // 2
    "memory_gib: 80\n"                                 // 3
    "memory_reserved_gib: 2\n"                         // 4
    "memory_bandwidth_gbps: 3350\n"                    // 5
    "gpus_per_node: 8\n"                               // 6
    "nodes: 2\n"                                       // 7
    "intra_node:\n"                                    // 8
    "  bandwidth_gbps: 450\n"                          // 9
    "  latency_us: 3\n"                                // 10
    "inter_node:\n"                                    // 11
    "  bandwidth_gbps: 50\n"                           // 12
    "  latency_us: 6\n"                                // 13
    "efficiency:\n"                                    // 14
    "  matmul: {max: 0.8, half_tflop: 0.025}\n"        // 15
    "  attention: {max: 0.6, half_tflop: 0.05}\n";     // 16

inline const char* kTrainingYaml =
    "seq_len: 4096\n"     // 1
    "global_batch: 8\n"   // 2
    "dtype: bf16\n"       // 3
    "optimizer: adam\n";  // 4

// Replaces the first occurrence of `from` in `text` (which must occur).
inline std::string replace(std::string text, const std::string& from, const std::string& to) {
  auto pos = text.find(from);
  REQUIRE_MESSAGE(pos != std::string::npos, "test bug: '" << from << "' not in the template");
  return text.replace(pos, from.size(), to);
}

}  // namespace ringplan::test
