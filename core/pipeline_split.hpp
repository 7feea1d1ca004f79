// How a model's transformer layers split over the pipeline: PP ranks, each running `interleave`
// (v) chunks; chunk c of rank d is virtual stage k = c * PP + d (Megatron-LM's and torchtitan's
// looped order), and virtual stages hold consecutive layers in k order. One definition for the
// cost model (sim), the runtime's trainer and emit, so that the stages predicted, run and
// launched are the same.
//
// The settings (ParallelOptions::pp_first_layers ... pp_loss_slot), at most one kind:
//   pp_first_layers / pp_last_layers: the layers of rank 0 / rank PP-1 (Megatron-LM
//     --decoder-first/last-pipeline-num-layers), the others evenly over the other ranks; each
//     rank's layers evenly over its chunks (Megatron asserts that they divide).
//   pp_embedding_slot / pp_loss_slot: (layers + slots) / PP slots per rank, slots / v per chunk;
//     the embedding takes one in rank 0's first chunk, the output layer and loss one in rank
//     PP-1's last chunk (Megatron-LM --account-for-embedding/loss-in-pipeline-split).
//   none: split_layers() over the PP x v virtual stages: layers / (PP v) each, and where that does
//     not divide torchtitan's automatic split (torchtitan parallelisms/pipelining_utils.py
//     generate_split_points: floor(layers / stages) on the first stage, one more on each middle
//     stage while layers remain, the rest on the last).
// Invariants (tests/sim/test_physics.cpp): the chunks' layers sum to `layers`; no middle rank
// 1..PP-2 holds more layers than rank 1 (so the cost model looks at ranks 0, 1 and PP-1 only).
// PP = 1: one stage with every layer; the settings do not apply.
#pragma once
#include <cstdint>
#include <string>

#include "core/config.hpp"

namespace ringplan {

// Why the split cannot be built (Megatron-LM's TransformerConfig rules for its settings, and at
// least one layer per virtual stage without them), or "" when it can.
std::string pipeline_split_problem(int64_t layers, int64_t pp, const ParallelOptions& opt);

// Layers of stage k of `stages` under the automatic split (no setting).
int64_t split_layers(int64_t layers, int64_t stages, int64_t k);

// Layers of chunk `chunk` (0 <= chunk < interleave) of pipeline rank `rank` (0 <= rank < pp).
// Precondition: pipeline_split_problem(...) returned "".
int64_t chunk_layers(int64_t layers, int64_t pp, const ParallelOptions& opt, int64_t rank, int64_t chunk);

// Global index of the first layer of that chunk (virtual stages hold consecutive layers in k
// order). O(PP x v).
int64_t chunk_first_layer(int64_t layers, int64_t pp, const ParallelOptions& opt, int64_t rank, int64_t chunk);

// Layers of pipeline rank `rank`, all its chunks.
int64_t stage_layers(int64_t layers, int64_t pp, const ParallelOptions& opt, int64_t rank);

}  // namespace ringplan
