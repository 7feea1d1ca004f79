// Fitting a cluster profile's free parameters to measured runs (`ringplan fit`), and the one
// place where a case's published figures are set against a prediction (`ringplan validate`
// uses compare_published() too, so validation and fit compare the same way).
//
// What is fitted: the efficiency curves' `max` and `half_tflop` (matmul, attention) and the
// memory-bandwidth efficiency, one value each for every case (no per-case constant). Peaks,
// memory sizes and links stay as the base profile has them (datasheet figures).
//
// Objective: mean over cases of the case's mean |relative error| over its TIME metrics
// (step_time_s, tflops_per_device, mfu, tokens_per_s_per_device, each compared in its own
// unit as `validate` does). The peak memories are not functions of the fitted parameters and
// are left out.
//
// Optimiser: bounded Hooke-Jeeves pattern search, deterministic: from each start point, try
// +-step on each parameter in turn, keep any improvement, then move along the direction of
// progress while that helps; halve the steps after an exploration with no improvement; stop
// when every step is below FitOptions::min_step (a fraction of the bound width) or after
// max_evaluations. Starts: the base profile (clamped into the bounds) and the bounds'
// centre; the better result wins. The absolute-error objective is not smooth, which a pattern
// search tolerates.
//
// Held-out error: cross_validate() splits the cases into K folds (case i in fold i % K, in
// the order given), fits on K-1 folds and evaluates the fold left out with that fit; a
// held-out case's figures never enter the fit that predicts it, nor (FitOptions::
// select_prior_weight) the choice of the prior's weight for that fit.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/cost_model.hpp"

namespace ringplan::sim {

// ---------------------------------------------------------------- comparison
// One published metric of a case next to its prediction (in the metric's unit).
struct MetricComparison {
  const char* metric = "";  // step_time_s | tflops_per_device | mfu | peak_memory_gib | peak_memory_allocated_gib |
                            // tokens_per_s_per_device
  double predicted = 0;
  double published = 0;
  bool time_metric = false;  // depends on the step time (everything but the two peak memories)
  double error_pct() const { return 100.0 * (predicted - published) / published; }
};
struct Comparisons {
  std::array<MetricComparison, 6> items;  // one per metric a published block can hold
  int count = 0;
};

// The model FLOPs of one step, counted the way the case's source counts them
// (Published::attention_flops): `causal` is Prediction::model_flops_per_step; `full` counts
// every (query, key) pair (3x forward for forward + backward, as Megatron-LM/NeMo/torchtitan).
double published_model_flops_per_step(const Experiment& e, const Prediction& p);

// Every metric in e.published against p (predict() of e's mesh and options). tflops_per_device
// and mfu use published_model_flops_per_step(); tokens_per_s_per_device is tokens/s / devices.
// Precondition: e.published is set. Allocates nothing.
Comparisons compare_published(const Experiment& e, const Prediction& p);

// ---------------------------------------------------------------- parameters
enum class FitParam {
  matmul_max,
  matmul_half_tflop,
  attention_max,
  attention_half_tflop,
  memory_bandwidth,
  // Optional (fitted only when asked, `ringplan fit --free collectives_inter_node`): the bus-
  // bandwidth efficiency of collectives across nodes, one value for all-reduce, reduce-scatter and
  // all-gather (ClusterConfig::inter_node_collectives max; half_mib kept). For a network whose
  // collectives were never measured, or were measured before the nodes were set up as they ran.
  inter_node_collectives,
  // Optional (`--free matmul_fp8`): the FP8 GEMM curve against peak_tflops.fp8 (unset in a
  // profile means "matmul's fraction"; fitting it starts from that).
  matmul_fp8_max,
  matmul_fp8_half_tflop,
  // Optional (`--free training_scale`): one factor on every GEMM curve's max, and one on every
  // attention curve's max (ClusterConfig::set_training_scale), keeping the measured kernel
  // curves' shapes. Each replaces its family's `max` in the fit (matmul.max, attention.max).
  matmul_training_scale,
  attention_training_scale,
  // Optional (`--free oversubscription`): the downlink : uplink ratio out of the base profile's
  // switch groups (ClusterConfig::switch_groups; the base must set inter_node.group_nodes). For a
  // network whose spine is oversubscribed by an unknown ratio: the runs whose groups cross switch
  // groups say how much.
  oversubscription,
  // Optional (`--free attention_flash_triton`): the Triton flash kernel's curve
  // (ClusterConfig::attention_flash_triton; the base must set it), for runs on that kernel whose
  // device has no published rates of it. Fitting `attention` leaves it alone: another kernel.
  flash_triton_max,
  flash_triton_half_tflop,
  // Optional (`--free attention_flash_fa2`): FlashAttention-2's curve
  // (ClusterConfig::attention_flash_fa2; the base must set it), as the Triton kernel's: for runs
  // on it whose kernel curve is to be fitted rather than taken from its published rates.
  flash_fa2_max,
  flash_fa2_half_tflop,
  // Optional (`--free matmul.half_k`): the GEMM curve's K-ramp (EfficiencyCurve::half_k: a GEMM
  // reducing over K runs at K / (K + half_k) of the curve), for a device whose GEMM rate by shape
  // was never measured (`calibrate --gpu-bench` measures it): runs whose GEMMs reduce over a
  // few hundred to a few thousand elements (small models, TP-split layers) say how much. Only
  // its full name selects it (`matmul` names the default parameters).
  matmul_half_k,
};
// Fitted by default.
inline constexpr std::array<FitParam, 5> kAllFitParams{FitParam::matmul_max, FitParam::matmul_half_tflop,
                                                       FitParam::attention_max, FitParam::attention_half_tflop,
                                                       FitParam::memory_bandwidth};
// Fitted when named by --free.
inline constexpr std::array<FitParam, 11> kOptionalFitParams{
    FitParam::inter_node_collectives, FitParam::matmul_fp8_max,         FitParam::matmul_fp8_half_tflop,
    FitParam::matmul_training_scale,  FitParam::attention_training_scale, FitParam::oversubscription,
    FitParam::flash_triton_max,       FitParam::flash_triton_half_tflop, FitParam::flash_fa2_max,
    FitParam::flash_fa2_half_tflop,   FitParam::matmul_half_k};
const char* fit_param_name(FitParam p);  // "matmul.max", "matmul.half_tflop", ...
double get_param(const ClusterConfig& c, FitParam p);         // in config units (half in TFLOP)
// Setting a family's max or half_tflop (matmul, attention), or matmul's half_k, moves the
// profile's own backward curve of that family too (matmul_backward, attention_backward, where
// set), keeping its measured ratio to the forward curve (capped at efficiency 1).
void set_param(ClusterConfig& c, FitParam p, double value);

struct ParamBounds {
  double lo = 0, hi = 1;
};
// Bounds: max in [0.2, 1], half_tflop in [0, 1] TFLOP (a GEMM of 1 TFLOP runs ~1 ms on an
// H100, far past any ramp-up), memory_bandwidth in [0.3, 1], collectives_inter_node.max in
// [0.02, 1] (a congested or misconfigured fabric can reach a few % of its line rate), training
// scales in [0.2, 1.5], stopping where the family's largest kernel curve of `base` would pass 1
// (ClusterConfig::kernel_max); attention_flash_triton.max and attention_flash_fa2.max in [0.05,
// base's attention training scale] (the profile holds them scaled: the kernel's own value, written
// to the file, stays <= 1).
ParamBounds bounds_for(FitParam p, const ClusterConfig& base);

// The parameters left to fit when `fixed` names some to hold at the base profile's values (a
// measured curve, say): each entry is a parameter name ("matmul.max", ...) or a family
// ("matmul", "attention", "memory_bandwidth") for all of its parameters. Throws bad_input naming
// an unknown entry and the valid names; may be empty (fit_params() checks what is left).
std::vector<FitParam> params_without(const std::vector<std::string>& fixed);
// `params` plus the optional parameters named in `extra` (a name such as
// "collectives_inter_node.max" or its family "collectives_inter_node"). A training scale takes its
// family's max out of `params` (the two set the same level). Throws bad_input naming an unknown
// entry and the valid names.
std::vector<FitParam> params_with(std::vector<FitParam> params, const std::vector<std::string>& extra);
// The default parameters less `fixed`, plus `extra` (`ringplan fit --fix ... --free ...`): the
// two checks above, and bad_input when nothing is left to fit.
std::vector<FitParam> fit_params(const std::vector<std::string>& fixed, const std::vector<std::string>& extra);

struct FitOptions {
  std::vector<FitParam> params{kAllFitParams.begin(), kAllFitParams.end()};
  int max_evaluations = 20000;  // objective evaluations per fit (all starts together)
  double min_step = 1e-4;       // stop when every step < min_step x (hi - lo)
  // Prior toward the base profile: the objective adds prior_weight x sum over parameters of
  // ((value - base) / (hi - lo))^2, in percentage points of mean |error|. A parameter the cases
  // do not determine (a GEMM curve's half point when every case runs large GEMMs) then stays at
  // the base's value instead of drifting to wherever the search stops; a parameter the cases do
  // determine moves at a cost of at most prior_weight points for a whole-range move. 0: none.
  double prior_weight = 0.25;
  // cross_validate() only: choose each fold's prior_weight by an inner cross-validation on that
  // fold's training cases (select_prior_weight), so that the held-out figure includes the choice
  // of the weight (nested cross-validation). prior_weight is then the fallback for folds with too
  // few training cases to choose.
  bool select_prior_weight = false;
};

struct FitResult {
  ClusterConfig cluster;             // the base with the fitted parameters
  double mean_abs_error_pct = 0;     // objective at the result, in %
  int evaluations = 0;
};

// Mean over the case's time metrics of the signed relative error (%) when predicted on
// cluster `c` (the case's own cluster is replaced by `c`). Throws ConfigError when the case
// has no published time metric or check_layout() refuses it.
double case_time_error_pct(const Experiment& e, const ClusterConfig& c);

// The same error in throughput terms, so that cases of every metric share one sign: + means the
// model predicts the run faster than measured (a step time predicted x % too long counts as a
// throughput 100 (1/(1 + x/100) - 1) % too low). The bias by TP degree is read in these terms.
double case_speed_error_pct(const Experiment& e, const ClusterConfig& c);

// Fits opts.params of `base` to `cases` (each predicted on the candidate cluster, not its
// own). Throws bad input for no case, a case without mesh or published time metric, or a
// layout check_layout() refuses (message names the case file).
FitResult fit_cluster(const std::vector<Experiment>& cases, const ClusterConfig& base, const FitOptions& opts = {});

struct CrossValidation {
  int folds = 0;
  std::vector<int> fold_of;                // per case: the fold it is held out in
  std::vector<FitResult> fold_fits;        // per fold: fitted on every other fold
  std::vector<double> heldout_error_pct;   // per case: signed error with its fold's fit
  std::vector<double> fold_prior_weight;   // per fold: the prior weight its fit used
};
// K-fold cross-validation (case i in fold i % K). K is clamped to [2, cases]; needs >= 2 cases.
CrossValidation cross_validate(const std::vector<Experiment>& cases, const ClusterConfig& base, int folds,
                               const FitOptions& opts = {});

// ---------------------------------------------------------------- prior weight
// How strongly to hold the parameters at the base profile is itself chosen by the cases: the fit
// is cross-validated on `cases` (K folds as cross_validate, K clamped to the case count) at every
// weight of kPriorWeightGrid, and the weight with the lowest held-out mean |error| wins (ties to
// the larger weight: the profile closer to the base). A few homogeneous runs (every GEMM large,
// say) leave a curve's half point undetermined, and a weak prior lets it drift to values that
// predict other runs badly; a strong prior on a varied set throws information away. Choosing by
// held-out error is the standard answer (regularisation strength by cross-validation).
inline constexpr std::array<double, 8> kPriorWeightGrid{0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0};
inline constexpr size_t kMinCasesToSelectPrior = 4;  // an inner fold then trains on >= 2 cases
struct PriorWeightChoice {
  double weight = 0;      // the chosen weight (opts.prior_weight when not selected)
  bool selected = false;  // false: fewer than kMinCasesToSelectPrior cases
  std::vector<std::pair<double, double>> scores;  // per grid weight: held-out mean |error| %
};
PriorWeightChoice select_prior_weight(const std::vector<Experiment>& cases, const ClusterConfig& base, int folds,
                                      const FitOptions& opts = {});

}  // namespace ringplan::sim
