// Flag value parsers of the planner commands (see cli_args.hpp).
#include "cli/cli_args.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <numeric>
#include <optional>
#include <vector>

#include "core/config_yaml.hpp"
#include "core/error.hpp"

namespace ringplan::planner {
namespace {

std::string one_of(const std::vector<std::string>& names) { return fmt::format("{}", fmt::join(names, ", ")); }

template <typename T>
T parse_enum(const std::string& flag, const std::string& text, std::optional<T> (*parse)(const std::string&),
             const std::vector<std::string>& names) {
  if (auto v = parse(text)) return *v;
  std::string hint = closest_name(text, names);
  throw bad_input(fmt::format("{}: unknown value '{}'; valid: {}{}", flag, text, one_of(names),
                              hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
}

}  // namespace

Mesh parse_mesh_spec(const std::string& flag, const std::string& text) {
  const std::string valid = "expected dp=D,tp=T,cp=C,pp=P with positive integers (a key left out is 1)";
  if (text.empty()) throw bad_input(fmt::format("{}: empty mesh; {}", flag, valid));
  Mesh m;
  bool seen[4] = {false, false, false, false};
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      throw bad_input(fmt::format("{}: '{}' in '{}' is not key=value; {}", flag, item, text, valid));
    const std::string key = item.substr(0, eq);
    const std::string value = item.substr(eq + 1);
    int idx = key == "dp" ? 0 : key == "tp" ? 1 : key == "cp" ? 2 : key == "pp" ? 3 : -1;
    if (idx < 0) throw bad_input(fmt::format("{}: unknown mesh dimension '{}' in '{}'; valid keys: dp, tp, cp, pp", flag, key, text));
    if (seen[idx]) throw bad_input(fmt::format("{}: '{}' given twice in '{}'", flag, key, text));
    seen[idx] = true;
    int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || ptr != value.data() + value.size() || v <= 0)
      throw bad_input(fmt::format("{}: {}='{}' is not a positive integer; {}", flag, key, value, valid));
    if (v > kMaxGpus)
      throw bad_input(fmt::format("{}: {}={} exceeds ringplan's limit on mesh sizes, 2^20 = {}", flag, key, v, kMaxGpus));
    (idx == 0 ? m.dp : idx == 1 ? m.tp : idx == 2 ? m.cp : m.pp) = v;
    pos = end + 1;
  }
  if (!m.within_gpu_limit())
    throw bad_input(fmt::format("{}: '{}' asks for more than 2^20 = {} GPUs (ringplan's limit on GPU counts)", flag,
                                text, kMaxGpus));
  return m;
}

std::string mesh_spec(const Mesh& m) { return fmt::format("dp={},tp={},cp={},pp={}", m.dp, m.tp, m.cp, m.pp); }

Recompute parse_recompute_flag(const std::string& flag, const std::string& text) {
  return parse_enum<Recompute>(flag, text, &parse_recompute, recompute_names());
}
CpScheme parse_cp_scheme_flag(const std::string& flag, const std::string& text) {
  return parse_enum<CpScheme>(flag, text, &parse_cp_scheme, cp_scheme_names());
}
AttentionImpl parse_attention_flag(const std::string& flag, const std::string& text) {
  return parse_enum<AttentionImpl>(flag, text, &parse_attention, attention_names());
}
CpComm parse_cp_comm_flag(const std::string& flag, const std::string& text) {
  return parse_enum<CpComm>(flag, text, &parse_cp_comm, cp_comm_names());
}
TpOverlap parse_tp_overlap_flag(const std::string& flag, const std::string& text) {
  return parse_enum<TpOverlap>(flag, text, &parse_tp_overlap, tp_overlap_names());
}

bool parse_on_off_flag(const std::string& flag, const std::string& text) {
  if (text == "on" || text == "true") return true;
  if (text == "off" || text == "false") return false;
  throw bad_input(fmt::format("{}: unknown value '{}'; valid: on, off", flag, text));
}

int parse_zero_stage_flag(const std::string& flag, int64_t value) {
  if (value < 0 || value > 3) throw bad_input(fmt::format("{}: ZeRO stage {} does not exist; valid: 0, 1, 2, 3", flag, value));
  return static_cast<int>(value);
}

int64_t parse_positive_flag(const std::string& flag, int64_t value) {
  if (value <= 0) throw bad_input(fmt::format("{}: must be a positive integer, got {}", flag, value));
  return value;
}

int64_t parse_gpus_flag(const std::string& flag, int64_t value) {
  if (value <= 0 || value > kMaxGpus)
    throw bad_input(fmt::format("{}: must be a GPU count in 1 .. {} (ringplan's limit, 2^20), got {}", flag, kMaxGpus,
                                value));
  return value;
}

int64_t experiment_gpus(const Experiment& e, int64_t cli_gpus) {
  if (cli_gpus != 0) return parse_gpus_flag("--gpus", cli_gpus);
  if (e.gpus && *e.gpus > 0) return *e.gpus;
  const int64_t n = e.cluster.gpus();
  if (n <= 0)
    throw bad_input(fmt::format("{}: cluster '{}' has no GPUs (gpus_per_node {} x nodes {}); give --gpus N",
                                e.path, e.cluster.name, e.cluster.gpus_per_node, e.cluster.nodes));
  return n;
}

void check_mesh_gpus(const Mesh& mesh, int64_t gpus, const std::string& where, int64_t global_batch,
                     int64_t micro_batch) {
  if (mesh.world_size() == gpus) return;
  // A valid example: all remaining GPUs in DP, keeping TP/CP/PP when they divide.
  Mesh example{gpus, 1, 1, 1};
  const int64_t inner = mesh.tp * mesh.cp * mesh.pp;
  if (inner > 0 && gpus % inner == 0) example = Mesh{gpus / inner, mesh.tp, mesh.cp, mesh.pp};
  // DP x micro-batch must divide the global batch: the part of DP that does not moves to PP
  // (any factor of the GPU count is a valid PP count as far as the GPU count goes).
  if (global_batch > 0 && micro_batch > 0 && global_batch % micro_batch == 0) {
    const int64_t dp = std::gcd(example.dp, global_batch / micro_batch);
    example.pp *= example.dp / dp;
    example.dp = dp;
  }
  throw bad_input(fmt::format(
      "{}: mesh {} uses dp*tp*cp*pp = {} GPUs but the experiment has {}; valid: a mesh whose product is {} "
      "(e.g. {}), or --gpus {}",
      where, mesh_spec(mesh), mesh.world_size(), gpus, gpus, mesh_spec(example), mesh.world_size()));
}

PlanResult plan_top(const Experiment& e, PlanSettings settings, int64_t top) {
  constexpr int64_t kFirstTop = 4096;
  settings.top_k = std::min(top, kFirstTop);
  PlanResult r = plan(e, settings);
  if (top > settings.top_k && r.fitting > settings.top_k) {
    settings.top_k = std::min(top, r.fitting);
    r = plan(e, settings);
  }
  return r;
}

std::string mesh_where(const Experiment& e) {
  const auto it = e.sources.find("mesh");
  if (it == e.sources.end() || it->second.line <= 0) return e.path + ": mesh";
  return fmt::format("{}:{}: {}", it->second.file, it->second.line, it->second.field);
}

void set_runtime_types(TrainingConfig& t, bool on_gpu) {
  t.dtype = on_gpu ? DType::bf16 : DType::fp32;
  t.fp32_grad_accumulation = on_gpu;
  t.autocast = false;
  t.fp8 = false;
  t.fp8_torchao = false;
  t.fp8_all_gather = false;
  t.eager_elementwise = false;
  t.norm = NormImpl::fused;
  t.cross_entropy = CrossEntropy::fused;
  t.fsdp_per_parameter = false;
  t.pytorch_pp_schedule = false;
  // The runtimes' sequence-parallel layers keep their input shard and all-gather it again in the
  // backward (step::Trainer's tp_gather_input), and a pipeline stage sends its whole output
  // without SP: Megatron-LM's TP, today's pipeline message.
  t.tp_dtensor = false;
  t.pp_scatter_gather = false;
  // Both runtimes' full recompute re-runs the whole block (step::Trainer).
  t.recompute_early_stop = false;
  // Both runtimes' weight-gradient GEMMs add into the gradient (step::linear_backward, the GPU
  // step's cuBLAS calls with beta 1).
  t.grad_accumulation = GradAccumulation::fused;
}

}  // namespace ringplan::planner
