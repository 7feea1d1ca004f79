// Times the training step's linear-layer GEMMs on this machine, for `ringplan calibrate`: the
// same calls the step makes (runtime/step/ops.hpp linear_forward and linear_backward, float32)
// at the matrix shapes a plan's step runs, on every rank at once (as in a run). Each shape's
// result is checked against float64 dot products before it is timed.
#pragma once
#include <cstdint>
#include <vector>

#include "core/config.hpp"
#include "runtime/communicator.hpp"

namespace ringplan::runtime::step {

// One linear layer Y[rows, out] = X[rows, in] W[out, in]^T on one rank.
struct GemmShape {
  int64_t rows = 0, in = 0, out = 0;
  double forward_flops() const { return 2.0 * double(rows) * double(in) * double(out); }
  bool operator==(const GemmShape&) const = default;
};

// The distinct linear layers one rank of the step runs for `model` on `mesh` with `rows` token
// rows per micro-batch (micro_batch x seq_len / CP; sequence parallelism gathers the rows before
// the GEMMs, so it does not change them): Q, K, V (heads and kv_heads split by TP), attention
// output, MLP gate and up (gated) or up, MLP down (ffn split by TP), and the vocabulary-parallel
// output layer.
std::vector<GemmShape> step_gemm_shapes(const ModelConfig& model, const Mesh& mesh, int64_t rows);

struct GemmPoint {
  GemmShape shape;
  double forward_s = 0;   // linear_forward; median over reps, then median over ranks
  double backward_s = 0;  // linear_backward (data and weight gradient)
};

// Collective over `world` (every rank measures the same shapes at once). Throws Error(runtime)
// naming the shape and rank when a GEMM's result is wrong.
std::vector<GemmPoint> measure_gemms(Communicator& world, const std::vector<GemmShape>& shapes, int reps);

}  // namespace ringplan::runtime::step
