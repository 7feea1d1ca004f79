// Checks of `ringplan run` on a plan's sizes, made on every rank before anything is allocated,
// so that a plan this host cannot hold (a huge head_dim or micro_batch typed into a plan file)
// is bad input naming the plan's file:line:field (Experiment::sources) and the limit, never an
// allocation failure.
#pragma once
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "core/config.hpp"
#include "core/config_yaml.hpp"
#include "core/error.hpp"
#include "core/format.hpp"

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
inline void check_run_documents(const Experiment& e, bool on_gpu) {
  if (!e.training.documents) return;
  if (on_gpu)
    throw experiment_field_error(e, "training.documents",
                                 "packed documents cannot run on --device cuda: the CUDA attention kernels have no "
                                 "document mask; run --device cpu");
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
// tensors"); `host` the available memory and ranks ("22.31 GiB available for 2 ranks").
// `where` names the memory in the verdict ("this host", "this GPU").
[[noreturn]] inline void refuse_too_big(const Experiment& e, double need_bytes, double budget_bytes,
                                        const std::function<double(const Experiment&)>& need_of,
                                        const std::string& what, const std::string& host,
                                        const std::string& fallback, const std::string& where = "this host") {
  auto fits = [&](auto set) {
    return [&, set](int64_t v) {
      Experiment x = e;
      set(x, v);
      return need_of(x) <= budget_bytes;
    };
  };
  const std::string need = fmt::format("{} need about {} per rank ({} allows {} per rank: {})", what,
                                       format::format_bytes(need_bytes), where, format::format_bytes(budget_bytes), host);
  if (e.model.head_dim > kUsualMaxHeadDim) {
    // Even: the training step's rotary embedding rotates pairs.
    const int64_t best =
        largest_fitting(e.model.head_dim / 2 - (e.model.head_dim % 2 == 0 ? 1 : 0),
                        fits([](Experiment& x, int64_t v) { x.model.head_dim = 2 * v; })) * 2;
    if (best >= 2)
      throw experiment_field_error(e, "model.head_dim",
                                   fmt::format("{} is too large to run here: {}; valid: at most {} on {} "
                                               "(models use 64 to 256)",
                                               e.model.head_dim, need, best, where));
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
                                   fmt::format("{} is too large to run here: {}; valid: at most {} on {}",
                                               e.options.micro_batch, need, best, where));
  }
  throw bad_input(fmt::format("{}: {}; {}", e.path, need, fallback));
}

// The head dimensions the CUDA attention kernels take (kernels/cuda). A plan with another is
// refused for --device cuda at its model.head_dim, before any device is touched.
inline void check_cuda_head_dim(const Experiment& e) {
  if (e.model.head_dim != 64 && e.model.head_dim != 128)
    throw experiment_field_error(e, "model.head_dim",
                                 fmt::format("{}: the CUDA attention kernels take 64 or 128; valid: 64 or 128, or run "
                                             "--device cpu",
                                             e.model.head_dim));
}

// Device bytes per rank of one attention layer on the CUDA runtime (runtime/gpu/gpu_executor.cpp
// and cuda_ring.cpp, 16-bit inputs, float32 outputs and gradients), with q = b*H*n*d,
// kv = b*Hkv*n*d, rows = b*H*n elements:
//   tensors  q, dO, O (16-bit): 6q; K, V (16-bit): 4kv; O, dQ (float32): 8q; lse: 4rows;
//            dK, dV (float32): 8kv
//   ring     K,V double buffer (16-bit): 8kv; dK,dV receive and scratch double buffers (float32):
//            32kv -- only with more than one rank; one block's O: 4q, its lse and D: 8rows;
//            every rank's token positions: 8L
// The float32 staging buffer of the inputs' upload (4q) is freed before the ring allocates and is
// smaller than the ring's share, so it adds nothing to the peak. In double: no product of int64
// sizes can wrap.
inline double gpu_attention_device_bytes(const Experiment& e) {
  const Mesh& mesh = *e.mesh;
  const double b = double(e.options.micro_batch), h = double(e.model.heads / mesh.tp);
  const double hkv = double(e.model.kv_heads / mesh.tp), d = double(e.model.head_dim);
  const double n = double(e.training.seq_len / mesh.cp), L = double(e.training.seq_len);
  const double q = b * h * n * d, kv = b * hkv * n * d, rows = b * h * n;
  const double ring_kv = mesh.cp > 1 ? 40.0 * kv : 0.0;
  return 18.0 * q + 12.0 * kv + ring_kv + 12.0 * rows + 8.0 * L;
}

// The share of a GPU's memory a run may plan for: the CUDA context, cuBLAS's workspace and
// NCCL's buffers take the rest.
inline constexpr double kDeviceBudgetFraction = 0.9;

// Refuses a plan whose per-rank device need (`need_bytes`, `need_of` for a variant, as in
// refuse_too_big) exceeds kDeviceBudgetFraction of `device_bytes`, the smallest total memory of
// the ranks' GPUs. Runs on the plan's sizes and the devices' reported sizes only, before any
// device is selected or anything allocated. `device_bytes` not positive or not finite: no rank
// could read its GPU's size (no driver, no device), nothing is checked, and the device set-up
// refuses the rank without a GPU by name. Identical on every rank when `device_bytes` is agreed.
inline void check_device_fits(const Experiment& e, double need_bytes, double device_bytes,
                              const std::function<double(const Experiment&)>& need_of, const std::string& what,
                              int ranks, const std::string& fallback) {
  if (!(device_bytes > 0) || !std::isfinite(device_bytes)) return;
  const double budget = kDeviceBudgetFraction * device_bytes;
  if (need_bytes <= budget) return;
  refuse_too_big(e, need_bytes, budget, need_of, what,
                 fmt::format("the smallest GPU of the {} rank{} has {}", ranks, ranks == 1 ? "" : "s",
                             format::format_bytes(device_bytes)),
                 fallback, "this GPU");
}

}  // namespace ringplan::cli
