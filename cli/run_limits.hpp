// Checks of `ringplan run` on a plan's sizes, made on every rank before anything is allocated,
// so that a plan this host cannot hold (a huge head_dim or micro_batch typed into a plan file)
// is bad input naming the plan's file:line:field (Experiment::sources) and the limit, never an
// allocation failure.
#pragma once
#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <string>

#include "core/config.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"

namespace ringplan::cli {

// The plan's micro-batch must split each replica's share of the global batch (the cost model
// and the training step both require it); `dp` divides the global batch (checked at load).
inline void check_run_micro_batch(const Experiment& e) {
  const int64_t per_replica = e.training.global_batch_sequences / e.mesh->dp;
  if (per_replica % e.options.micro_batch != 0)
    throw experiment_field_error(
        e, "options.micro_batch",
        fmt::format("{} does not divide the {} sequence{} of each of the dp={} replicas (global batch {}); valid: "
                    "a divisor of {}",
                    e.options.micro_batch, per_replica, per_replica == 1 ? "" : "s", e.mesh->dp,
                    e.training.global_batch_sequences, per_replica));
}

// Packed documents (training.documents): the CPU training step masks them (runtime/step/
// trainer.hpp StepSpec::document_lengths). The attention scope does not pass document ids to its
// layer yet, and the CUDA attention kernels have no document mask: running there would measure
// a different computation than the plan's, so it is refused (exit 2) on every rank.
inline void check_run_documents(const Experiment& e, bool attention_scope, bool on_gpu) {
  if (!e.training.documents) return;
  if (on_gpu)
    throw experiment_field_error(e, "training.documents",
                                 "packed documents cannot run on --device cuda: the CUDA attention kernels have no "
                                 "document mask; run --device cpu");
  if (attention_scope)
    throw experiment_field_error(e, "training.documents",
                                 "packed documents cannot be run by --scope attention yet: its attention layer runs "
                                 "without a document mask, so it would not measure the plan's work; use --scope step");
}

// No model has a head_dim near this (Llama, GPT-3, Megatron: 64 to 256): a larger one is blamed
// first when a plan does not fit.
inline constexpr int64_t kUsualMaxHeadDim = 1024;

// Largest v in [1, hi] with fits(v), assuming fits is monotone (true then false); 0 if none.
inline int64_t largest_fitting(int64_t hi, const std::function<bool(int64_t)>& fits) {
  if (hi < 1 || !fits(1)) return 0;
  int64_t lo = 1;  // fits(lo)
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Refuses a plan whose per-rank need (`need_bytes` of the plan, in bytes) exceeds `budget_bytes`
// per rank, naming the field to change and the largest value of it that fits: head_dim when it is
// beyond any model's, else micro_batch when it is above 1 and 1 would fit, else `fallback`
// (a message for the plan as a whole). `what` says what is held ("one attention layer's float32
// tensors"); `host` the available memory and ranks ("22.3 GiB available for 2 ranks").
[[noreturn]] inline void refuse_too_big(const Experiment& e, double need_bytes, double budget_bytes,
                                        const std::function<double(const Experiment&)>& need_of,
                                        const std::string& what, const std::string& host,
                                        const std::string& fallback) {
  constexpr double kGiB = 1073741824.0;
  auto fits = [&](auto set) {
    return [&, set](int64_t v) {
      Experiment x = e;
      set(x, v);
      return need_of(x) <= budget_bytes;
    };
  };
  const std::string need = fmt::format("{} need about {:.1f} GiB per rank (this host allows {:.1f} GiB per rank: "
                                       "{})",
                                       what, need_bytes / kGiB, budget_bytes / kGiB, host);
  if (e.model.head_dim > kUsualMaxHeadDim) {
    // Even: the training step's rotary embedding rotates pairs.
    const int64_t best =
        largest_fitting(e.model.head_dim / 2 - (e.model.head_dim % 2 == 0 ? 1 : 0),
                        fits([](Experiment& x, int64_t v) { x.model.head_dim = 2 * v; })) * 2;
    if (best >= 2)
      throw experiment_field_error(e, "model.head_dim",
                                   fmt::format("{} is too large to run here: {}; valid: at most {} on this host "
                                               "(models use 64 to 256)",
                                               e.model.head_dim, need, best));
  }
  if (e.options.micro_batch > 1) {
    // The largest divisor of each replica's batch below micro_batch that fits (need grows with it).
    const int64_t per_replica = e.training.global_batch_sequences / e.mesh->dp;
    auto fits_mb = fits([](Experiment& x, int64_t v) { x.options.micro_batch = v; });
    int64_t best = 0;
    for (int64_t d = 1; d * d <= per_replica; ++d) {
      if (per_replica % d != 0) continue;
      for (int64_t v : {d, per_replica / d})
        if (v < e.options.micro_batch && v > best && fits_mb(v)) best = v;
    }
    if (best >= 1)
      throw experiment_field_error(e, "options.micro_batch",
                                   fmt::format("{} is too large to run here: {}; valid: at most {} on this host",
                                               e.options.micro_batch, need, best));
  }
  throw bad_input(fmt::format("{}: {}; {}", e.path, need, fallback));
}

}  // namespace ringplan::cli
