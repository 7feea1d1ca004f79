// core/config.hpp helpers: enum names both ways, dtype sizes, peak by dtype, "did you mean".
#include <doctest/doctest.h>

#include "core/config.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"

using namespace ringplan;

TEST_CASE("enum names parse back to the same value and unknown names are rejected") {
  for (const auto& n : dtype_names()) CHECK(std::string(to_string(*parse_dtype(n))) == n);
  for (const auto& n : optimizer_names()) CHECK(std::string(to_string(*parse_optimizer(n))) == n);
  for (const auto& n : recompute_names()) CHECK(std::string(to_string(*parse_recompute(n))) == n);
  for (const auto& n : cp_scheme_names()) CHECK(std::string(to_string(*parse_cp_scheme(n))) == n);
  for (const auto& n : attention_names()) CHECK(std::string(to_string(*parse_attention(n))) == n);
  CHECK(dtype_names() == std::vector<std::string>{"bf16", "fp16", "fp32"});
  CHECK(cp_scheme_names() == std::vector<std::string>{"contiguous", "zigzag", "striped"});
  CHECK_FALSE(parse_dtype("BF16").has_value());  // names are case-sensitive, as in the files
  CHECK_FALSE(parse_optimizer("adamw").has_value());
  CHECK_FALSE(parse_recompute("").has_value());
  CHECK_FALSE(parse_cp_scheme("ring").has_value());
  CHECK_FALSE(parse_attention("flash2").has_value());
}

TEST_CASE("dtype_bytes and peak_flops_per_s follow the dtype") {
  CHECK(dtype_bytes(DType::bf16) == 2);
  CHECK(dtype_bytes(DType::fp16) == 2);
  CHECK(dtype_bytes(DType::fp32) == 4);
  ClusterConfig c;
  c.peak_flops_per_s_bf16 = 1e15;
  c.peak_flops_per_s_fp16 = 2e15;
  c.peak_flops_per_s_fp32 = 3e13;
  CHECK(c.peak_flops_per_s(DType::bf16) == 1e15);
  CHECK(c.peak_flops_per_s(DType::fp16) == 2e15);
  CHECK(c.peak_flops_per_s(DType::fp32) == 3e13);
}

TEST_CASE("closest_name suggests likely typos only") {
  std::vector<std::string> keys{"layers", "hidden", "heads", "kv_heads", "head_dim"};
  CHECK(closest_name("hiden", keys) == "hidden");
  CHECK(closest_name("kv_head", keys) == "kv_heads");
  CHECK(closest_name("head_dims", keys) == "head_dim");
  CHECK(closest_name("optimizer", keys) == "");
  CHECK(closest_name("x", {}) == "");
}
