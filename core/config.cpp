// Enum names and small helpers declared in core/config.hpp. The names here are the spelling used
// in YAML files, on the command line and in reports: one table per enum serves both directions.
#include "core/config.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include "core/error.hpp"

namespace ringplan {
namespace {

template <typename E, size_t N>
using NameTable = std::array<std::pair<E, const char*>, N>;

constexpr NameTable<DType, 3> kDTypeNames{{{DType::bf16, "bf16"}, {DType::fp16, "fp16"}, {DType::fp32, "fp32"}}};
constexpr NameTable<Optimizer, 2> kOptimizerNames{{{Optimizer::adam, "adam"}, {Optimizer::sgd, "sgd"}}};
constexpr NameTable<Recompute, 4> kRecomputeNames{{{Recompute::none, "none"},
                                                   {Recompute::selective, "selective"},
                                                   {Recompute::full, "full"},
                                                   {Recompute::selective_op, "selective_op"}}};
constexpr NameTable<CpScheme, 3> kCpSchemeNames{
    {{CpScheme::contiguous, "contiguous"}, {CpScheme::zigzag, "zigzag"}, {CpScheme::striped, "striped"}}};
constexpr NameTable<AttentionImpl, 2> kAttentionNames{
    {{AttentionImpl::flash, "flash"}, {AttentionImpl::materialized, "materialized"}}};
constexpr NameTable<CpComm, 4> kCpCommNames{{{CpComm::ring, "ring"},
                                            {CpComm::allgather, "allgather"},
                                            {CpComm::alltoall, "alltoall"},
                                            {CpComm::hybrid, "hybrid"}}};
constexpr NameTable<TpOverlap, 3> kTpOverlapNames{
    {{TpOverlap::none, "none"}, {TpOverlap::backward, "backward"}, {TpOverlap::pipelined, "pipelined"}}};
constexpr NameTable<GradAccumulation, 3> kGradAccumulationNames{{{GradAccumulation::fused, "fused"},
                                                                {GradAccumulation::inplace, "inplace"},
                                                                {GradAccumulation::cast_add, "cast_add"}}};
constexpr NameTable<CrossEntropy, 3> kCrossEntropyNames{
    {{CrossEntropy::fused, "fused"}, {CrossEntropy::unfused, "unfused"}, {CrossEntropy::fused_16bit, "fused_16bit"}}};
constexpr NameTable<NormImpl, 3> kNormNames{
    {{NormImpl::fused, "fused"}, {NormImpl::eager, "eager"}, {NormImpl::low_precision, "low_precision"}}};
constexpr NameTable<FlashKernel, 3> kFlashKernelNames{
    {{FlashKernel::standard, "standard"}, {FlashKernel::triton, "triton"}, {FlashKernel::fa2, "fa2"}}};

template <typename E, size_t N>
const char* name_of(const NameTable<E, N>& table, E value) {
  for (const auto& [v, name] : table)
    if (v == value) return name;
  return "?";  // unreachable for valid enum values; never used as a parse input
}

template <typename E, size_t N>
std::optional<E> parse_name(const NameTable<E, N>& table, const std::string& s) {
  for (const auto& [v, name] : table)
    if (s == name) return v;
  return std::nullopt;
}

template <typename E, size_t N>
std::vector<std::string> names_of(const NameTable<E, N>& table) {
  std::vector<std::string> out;
  for (const auto& entry : table) out.emplace_back(entry.second);
  return out;
}

}  // namespace

int dtype_bytes(DType t) { return t == DType::fp32 ? 4 : 2; }

const char* to_string(DType t) { return name_of(kDTypeNames, t); }
const char* to_string(Optimizer o) { return name_of(kOptimizerNames, o); }
const char* to_string(Recompute r) { return name_of(kRecomputeNames, r); }
const char* to_string(CpScheme s) { return name_of(kCpSchemeNames, s); }
const char* to_string(AttentionImpl a) { return name_of(kAttentionNames, a); }
const char* to_string(CpComm c) { return name_of(kCpCommNames, c); }
const char* to_string(TpOverlap t) { return name_of(kTpOverlapNames, t); }
const char* to_string(GradAccumulation g) { return name_of(kGradAccumulationNames, g); }
const char* to_string(CrossEntropy c) { return name_of(kCrossEntropyNames, c); }
const char* to_string(NormImpl n) { return name_of(kNormNames, n); }
const char* to_string(FlashKernel k) { return name_of(kFlashKernelNames, k); }
namespace {
// Each kernel's cluster curve key and printed name ("" for standard: the profile's own kernel).
struct FlashKernelText {
  FlashKernel kernel;
  const char* curve_key;
  const char* label;
};
constexpr FlashKernelText kFlashKernelTexts[] = {{FlashKernel::standard, "attention", ""},
                                                 {FlashKernel::triton, "attention_flash_triton", "Triton flash kernel"},
                                                 {FlashKernel::fa2, "attention_flash_fa2", "FlashAttention-2 kernel"}};
const FlashKernelText& flash_kernel_text(FlashKernel k) {
  for (const FlashKernelText& t : kFlashKernelTexts)
    if (t.kernel == k) return t;
  return kFlashKernelTexts[0];
}
}  // namespace
const char* flash_curve_key(FlashKernel k) { return flash_kernel_text(k).curve_key; }
const char* flash_kernel_label(FlashKernel k) { return flash_kernel_text(k).label; }

std::string pipeline_split_text(const ParallelOptions& o) {
  if (o.pp_first_layers > 0 || o.pp_last_layers > 0) {
    std::string s;
    if (o.pp_first_layers > 0) s += "first " + std::to_string(o.pp_first_layers);
    if (o.pp_last_layers > 0) s += std::string(s.empty() ? "" : ", ") + "last " + std::to_string(o.pp_last_layers);
    return s + " layers";
  }
  if (o.pp_embedding_slot && o.pp_loss_slot) return "embedding and loss slots";
  if (o.pp_embedding_slot) return "embedding slot";
  if (o.pp_loss_slot) return "loss slot";
  return "even";
}

std::optional<DType> parse_dtype(const std::string& s) { return parse_name(kDTypeNames, s); }
std::optional<Optimizer> parse_optimizer(const std::string& s) { return parse_name(kOptimizerNames, s); }
std::optional<Recompute> parse_recompute(const std::string& s) { return parse_name(kRecomputeNames, s); }
std::optional<CpScheme> parse_cp_scheme(const std::string& s) { return parse_name(kCpSchemeNames, s); }
std::optional<AttentionImpl> parse_attention(const std::string& s) { return parse_name(kAttentionNames, s); }
std::optional<CpComm> parse_cp_comm(const std::string& s) { return parse_name(kCpCommNames, s); }
std::optional<TpOverlap> parse_tp_overlap(const std::string& s) { return parse_name(kTpOverlapNames, s); }
std::optional<GradAccumulation> parse_grad_accumulation(const std::string& s) {
  return parse_name(kGradAccumulationNames, s);
}
std::optional<CrossEntropy> parse_cross_entropy(const std::string& s) { return parse_name(kCrossEntropyNames, s); }
std::optional<NormImpl> parse_norm(const std::string& s) { return parse_name(kNormNames, s); }
std::optional<FlashKernel> parse_flash_kernel(const std::string& s) { return parse_name(kFlashKernelNames, s); }

std::vector<std::string> dtype_names() { return names_of(kDTypeNames); }
std::vector<std::string> optimizer_names() { return names_of(kOptimizerNames); }
std::vector<std::string> recompute_names() { return names_of(kRecomputeNames); }
std::vector<std::string> cp_scheme_names() { return names_of(kCpSchemeNames); }
std::vector<std::string> attention_names() { return names_of(kAttentionNames); }
std::vector<std::string> cp_comm_names() { return names_of(kCpCommNames); }
std::vector<std::string> tp_overlap_names() { return names_of(kTpOverlapNames); }
std::vector<std::string> grad_accumulation_names() { return names_of(kGradAccumulationNames); }
std::vector<std::string> cross_entropy_names() { return names_of(kCrossEntropyNames); }
std::vector<std::string> norm_names() { return names_of(kNormNames); }
std::vector<std::string> flash_kernel_names() { return names_of(kFlashKernelNames); }

void ClusterConfig::set_training_scale(double matmul_scale, double attention_scale) {
  auto rescale = [](EfficiencyCurve& curve, double ratio) {
    if (curve.max_efficiency > 0) curve.max_efficiency *= ratio;  // unset (0) stays unset
  };
  const double m = matmul_scale / matmul_training_scale, a = attention_scale / attention_training_scale;
  rescale(matmul, m);
  rescale(matmul_backward, m);
  rescale(matmul_fp8, m);
  rescale(attention, a);
  rescale(attention_backward, a);
  rescale(materialized_attention, a);
  rescale(attention_flash_triton, a);
  rescale(attention_flash_fa2, a);
  matmul_training_scale = matmul_scale;
  attention_training_scale = attention_scale;
}

double ClusterConfig::kernel_max(bool attention_family) const {
  if (attention_family)
    return std::max({attention.max_efficiency, attention_backward.max_efficiency, materialized_attention.max_efficiency,
                     attention_flash_triton.max_efficiency, attention_flash_fa2.max_efficiency}) /
           attention_training_scale;
  return std::max({matmul.max_efficiency, matmul_backward.max_efficiency, matmul_fp8.max_efficiency}) /
         matmul_training_scale;
}

double ClusterConfig::peak_flops_per_s(DType t) const {
  switch (t) {
    case DType::bf16:
      return peak_flops_per_s_bf16;
    case DType::fp16:
      return peak_flops_per_s_fp16;
    case DType::fp32:
      return peak_flops_per_s_fp32;
  }
  throw bad_input("ClusterConfig::peak_flops_per_s: invalid DType value " + std::to_string(static_cast<int>(t)));
}

}  // namespace ringplan
