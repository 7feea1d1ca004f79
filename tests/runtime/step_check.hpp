// Shared by the training-step tests: a tiny Llama-shaped model and the parity comparison of a
// parallel trainer against the one-process trainer of the same model, data and seed.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/step/trainer.hpp"

namespace ringplan::test {

// 2 layers, GQA 4:2 heads of 8, SwiGLU, vocabulary 64: every dimension splits by 2 and 4.
inline runtime::step::StepSpec tiny_step_spec() {
  runtime::step::StepSpec s;
  s.model.name = "tiny";
  s.model.layers = 2;
  s.model.hidden = 32;
  s.model.heads = 4;
  s.model.kv_heads = 2;
  s.model.head_dim = 8;
  s.model.ffn_hidden = 48;
  s.model.gated_mlp = true;
  s.model.vocab = 64;
  s.seq_len = 16;
  s.global_batch = 4;
  s.options.micro_batch = 1;
  s.options.cp_scheme = CpScheme::zigzag;
  s.learning_rate = 1e-2;
  // Below the tiny model's gradient norm in every step the parity tests run, so the clipping
  // scale (not just the norm) is exercised on every mesh; tests check the norm exceeded it.
  s.clip_grad = 0.05;
  s.seed = 7;
  return s;
}

struct ParityResult {
  std::vector<double> losses, reference_losses;
  double max_loss_rel_diff = 0;  // over steps: |loss - ref| / |ref|
  double max_param_diff = 0;     // over this rank's parameters: |p - p_ref|
  double max_norm_rel_diff = 0;  // over steps: the gradient norm before clipping, vs the reference
  double min_grad_norm = INFINITY;  // the reference's smallest pre-clipping gradient norm
  int64_t params_compared = 0;
};

// Trains `steps` steps with `parallel` and `reference` (a one-process trainer of the same spec
// with mesh 1) and compares losses and this rank's parameters with the reference's.
template <class T>
ParityResult compare_with_reference(runtime::step::Trainer<T>& parallel, runtime::step::Trainer<T>& reference,
                                    int steps) {
  ParityResult r;
  for (int s = 0; s < steps; ++s) {
    r.losses.push_back(parallel.train_step());
    r.reference_losses.push_back(reference.train_step());
    r.max_loss_rel_diff = std::max(r.max_loss_rel_diff, std::abs(r.losses.back() - r.reference_losses.back()) /
                                                            std::abs(r.reference_losses.back()));
    const double n = parallel.last_grad_norm(), ref = reference.last_grad_norm();
    r.max_norm_rel_diff = std::max(r.max_norm_rel_diff, std::abs(n - ref) / ref);
    r.min_grad_norm = std::min(r.min_grad_norm, ref);
  }
  parallel.gather_full_parameters();  // ZeRO-3 holds shards over DP x CP (collective)
  const auto& w = parallel.parameters();
  for (const auto& p : parallel.params())
    for (int64_t i = 0; i < p.rows; ++i)
      for (int64_t j = 0; j < p.cols; ++j) {
        const T* ref = reference.find(p.id, p.row0 + i, p.col0 + j);
        if (ref == nullptr) {
          r.max_param_diff = INFINITY;  // the reference must hold every element
          continue;
        }
        const double d = std::abs(double(w[p.offset + static_cast<size_t>(i * p.cols + j)]) - double(*ref));
        r.max_param_diff = std::max(r.max_param_diff, d);
        ++r.params_compared;
      }
  return r;
}

}  // namespace ringplan::test
