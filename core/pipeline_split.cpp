// The pipeline split (see pipeline_split.hpp).
#include "core/pipeline_split.hpp"

#include <algorithm>

namespace ringplan {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

bool layer_counts_given(const ParallelOptions& o) { return o.pp_first_layers > 0 || o.pp_last_layers > 0; }
bool slots_given(const ParallelOptions& o) { return o.pp_embedding_slot || o.pp_loss_slot; }

}  // namespace

std::string pipeline_split_problem(int64_t layers, int64_t pp, const ParallelOptions& opt) {
  const int64_t v = opt.interleave;
  const int64_t a = opt.pp_first_layers, b = opt.pp_last_layers;
  if (pp <= 1) {
    // One rank holds every layer. Layer counts that say otherwise would be ignored silently;
    // Megatron-LM refuses them too (TransformerConfig: "Mismatch: N middle layers remaining but
    // 0 middle PP stages"), while its embedding / loss slots change nothing at PP 1 and pass.
    const bool one_count_is_all = (a > 0) != (b > 0) && std::max(a, b) == layers;
    if (layer_counts_given(opt) && !one_count_is_all)
      return "pipeline split (" + pipeline_split_text(opt) + ") needs PP > 1, got PP " + str(pp) +
             " (the one pipeline rank holds all " + str(layers) +
             " layers); valid: remove pp_first_layers / pp_last_layers, or use PP >= 2";
    return {};
  }
  if (v < 1) return "interleave must be >= 1, got " + str(v);
  if (a < 0 || b < 0) return "pp_first_layers and pp_last_layers must be >= 1 when given";
  if (layer_counts_given(opt) && slots_given(opt))
    return "pp_first_layers / pp_last_layers cannot be combined with pp_embedding_slot / pp_loss_slot";
  if (layer_counts_given(opt)) {
    const int64_t others = pp - (a > 0 ? 1 : 0) - (b > 0 ? 1 : 0);
    const int64_t rest = layers - a - b;
    if (rest < 0)
      return "pp_first_layers " + str(a) + " + pp_last_layers " + str(b) + " exceed the model's " + str(layers) + " layers";
    if (others == 0 && rest != 0)
      return "with PP " + str(pp) + " pp_first_layers + pp_last_layers must equal the layers (" + str(layers) + "), got " +
             str(a + b);
    if (others > 0 && (rest == 0 || rest % others != 0))
      return "the " + str(rest) + " layers left after pp_first_layers / pp_last_layers must divide evenly over the " +
             str(others) + " other pipeline ranks (PP " + str(pp) + ")";
    if (v > 1) {
      if (a % v != 0) return "pp_first_layers " + str(a) + " must divide by interleave " + str(v);
      if (b % v != 0) return "pp_last_layers " + str(b) + " must divide by interleave " + str(v);
      if (others > 0 && (rest / others) % v != 0)
        return "the " + str(rest / others) + " layers on each middle pipeline rank must divide by interleave " + str(v);
    }
    return {};
  }
  if (slots_given(opt)) {
    const int64_t slots = (opt.pp_embedding_slot ? 1 : 0) + (opt.pp_loss_slot ? 1 : 0);
    if ((layers + slots) % pp != 0)
      return "layers " + str(layers) + " + " + str(slots) + " embedding/loss slot" + (slots > 1 ? "s" : "") + " = " +
             str(layers + slots) + " not divisible by PP " + str(pp) + " (pp_embedding_slot / pp_loss_slot)";
    const int64_t per_rank = (layers + slots) / pp;
    if (v > 1 && per_rank % v != 0)
      return "the " + str(per_rank) + " slots per pipeline rank (layers + embedding/loss slots) must divide by interleave " +
             str(v);
    return {};
  }
  if (layers < pp * v)
    return "PP×v = " + str(pp * v) + " stages for " + str(layers) + " layers (every stage needs a layer)";
  return {};
}

int64_t split_layers(int64_t layers, int64_t stages, int64_t k) {
  if (stages <= 1) return layers;
  const int64_t base = layers / stages, extra = layers % stages;
  if (extra == 0 || k == 0) return base;
  // torchtitan: middle stages 1..stages-2 take one extra layer each, in order, while extras
  // remain; the last stage takes what is left (one extra only when extra = stages - 1).
  if (k < stages - 1) return base + (k <= extra ? 1 : 0);
  return layers - base - (stages - 2) * base - std::min(extra, stages - 2);
}

int64_t chunk_layers(int64_t layers, int64_t pp, const ParallelOptions& opt, int64_t rank, int64_t chunk) {
  if (pp <= 1) return opt.interleave <= 1 ? layers : split_layers(layers, opt.interleave, chunk);
  const int64_t v = std::max<int64_t>(opt.interleave, 1);
  const bool first = rank == 0, last = rank == pp - 1;
  if (layer_counts_given(opt)) {
    int64_t n;
    if (first && opt.pp_first_layers > 0) {
      n = opt.pp_first_layers;
    } else if (last && opt.pp_last_layers > 0) {
      n = opt.pp_last_layers;
    } else {
      const int64_t others = pp - (opt.pp_first_layers > 0 ? 1 : 0) - (opt.pp_last_layers > 0 ? 1 : 0);
      n = (layers - opt.pp_first_layers - opt.pp_last_layers) / others;
    }
    return n / v;
  }
  if (slots_given(opt)) {
    const int64_t per_chunk = (layers + (opt.pp_embedding_slot ? 1 : 0) + (opt.pp_loss_slot ? 1 : 0)) / pp / v;
    const bool embedding = opt.pp_embedding_slot && first && chunk == 0;
    const bool loss = opt.pp_loss_slot && last && chunk == v - 1;
    return per_chunk - (embedding ? 1 : 0) - (loss ? 1 : 0);
  }
  return split_layers(layers, pp * v, chunk * pp + rank);
}

int64_t chunk_first_layer(int64_t layers, int64_t pp, const ParallelOptions& opt, int64_t rank, int64_t chunk) {
  const int64_t p = std::max<int64_t>(pp, 1);
  int64_t first = 0;
  for (int64_t k = 0; k < chunk * p + rank; ++k) first += chunk_layers(layers, p, opt, k % p, k / p);
  return first;
}

int64_t stage_layers(int64_t layers, int64_t pp, const ParallelOptions& opt, int64_t rank) {
  if (pp <= 1) return layers;
  const int64_t v = std::max<int64_t>(opt.interleave, 1);
  int64_t n = 0;
  for (int64_t c = 0; c < v; ++c) n += chunk_layers(layers, pp, opt, rank, c);
  return n;
}

}  // namespace ringplan
