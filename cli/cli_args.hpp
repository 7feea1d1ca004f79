// Parsing of the planner commands' flag values (`--mesh dp=2,tp=8,cp=4,pp=1`, enum names,
// on/off), shared by cli/cmd_plan.cpp, cli/cmd_simulate.cpp and the tests (library ringplan_cli_lib,
// cli/CMakeLists.txt; namespace planner: they parse the planner's inputs). Every parser
// throws ringplan::Error (bad input) naming the flag, the bad value and what would be valid.
#pragma once
#include <cstdint>
#include <string>

#include "core/config.hpp"
#include "planner/planner.hpp"

namespace ringplan::planner {

// "dp=D,tp=T,cp=C,pp=P": keys in any order, each at most once; a key left out is 1; every
// value a positive integer.
Mesh parse_mesh_spec(const std::string& flag, const std::string& text);
// "dp=D,tp=T,cp=C,pp=P" (all four keys), the form parse_mesh_spec() reads.
std::string mesh_spec(const Mesh& m);

Recompute parse_recompute_flag(const std::string& flag, const std::string& text);
CpScheme parse_cp_scheme_flag(const std::string& flag, const std::string& text);
AttentionImpl parse_attention_flag(const std::string& flag, const std::string& text);
CpComm parse_cp_comm_flag(const std::string& flag, const std::string& text);
TpOverlap parse_tp_overlap_flag(const std::string& flag, const std::string& text);
bool parse_on_off_flag(const std::string& flag, const std::string& text);  // on|off|true|false
int parse_zero_stage_flag(const std::string& flag, int64_t value);          // 0..3
int64_t parse_positive_flag(const std::string& flag, int64_t value);        // > 0
// A GPU count given on the command line: 1 .. kMaxGpus (core/config.hpp); 0 is not "unset" here,
// callers that have a default only call this when the flag was given.
int64_t parse_gpus_flag(const std::string& flag, int64_t value);

// The GPU count a command works with: `cli_gpus` (> 0, checked by parse_gpus_flag) if given,
// else the experiment's `gpus`, else the cluster's gpus_per_node x nodes.
int64_t experiment_gpus(const Experiment& e, int64_t cli_gpus);

// Throws bad input unless mesh.world_size() == gpus; the message names a valid mesh. With the
// experiment's global batch (sequences, > 0) and micro-batch, the example's DP x micro-batch
// divides the batch too, so the suggested mesh is one simulate accepts.
void check_mesh_gpus(const Mesh& mesh, int64_t gpus, const std::string& where, int64_t global_batch = 0,
                     int64_t micro_batch = 1);

// plan() keeping the best `top` candidates for a --top flag (> 0, any int64): no search has more
// candidates than layouts that fit, and plan() reserves room for top_k of them, so a first
// search keeps at most 4096 and, only when more were asked for and more fit, a second one keeps
// exactly the fitting count. `settings.top_k` is ignored.
PlanResult plan_top(const Experiment& e, PlanSettings settings, int64_t top);

// "FILE:LINE: FIELD" of the experiment's `mesh:` (Experiment::sources), for check_mesh_gpus and
// layout errors about a mesh read from a file; "PATH: mesh" when its line is not known.
std::string mesh_where(const Experiment& e);

// The training settings `ringplan run --scope step` predicts with: the ones its runtime runs,
// whatever the plan assumes of its framework. float32 tensors and states on the CPU; on the GPU
// bf16 activations and GEMMs with float32 gradients and optimizer states (grad_accumulation_dtype
// fp32); master weights, no autocast; no FP8; its own fused element-wise kernels and norm; the
// loss in place (cross_entropy fused); ZeRO-3 over flat gathered blocks (fsdp flat).
void set_runtime_types(TrainingConfig& t, bool on_gpu);

}  // namespace ringplan::planner
