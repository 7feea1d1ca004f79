// Views, argument validation and the exact visible-pair count (the FLOP model's numerator).
// Every kernel entry point checks its arguments here first, so a bad call fails with a message
// naming the field, the value and what would be valid, before any memory is touched.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <string>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/cpu_common.hpp"

namespace ringplan::kernels {

TensorView dense_view(void* data, ElemType type, int64_t batch, int64_t heads, int64_t tokens,
                      int64_t head_dim) {
  TensorView t;
  t.data = data;
  t.type = type;
  t.batch = batch;
  t.heads = heads;
  t.tokens = tokens;
  t.head_dim = head_dim;
  t.stride_token = head_dim;
  t.stride_head = tokens * head_dim;
  t.stride_batch = heads * tokens * head_dim;
  return t;
}

RowStatsView dense_rows(float* data, int64_t batch, int64_t heads, int64_t tokens) {
  RowStatsView r;
  r.data = data;
  r.batch = batch;
  r.heads = heads;
  r.tokens = tokens;
  r.stride_head = tokens;
  r.stride_batch = heads * tokens;
  return r;
}

namespace {

const char* type_name(ElemType t) {
  switch (t) {
    case ElemType::f32: return "f32";
    case ElemType::f16: return "f16";
    case ElemType::bf16: return "bf16";
  }
  return "unknown";
}

std::string shape(const TensorView& t) {
  // Appending (not "[" + std::string) avoids a GCC 12 -Wrestrict false positive.
  std::string s = "[";
  s += std::to_string(t.batch) + ", " + std::to_string(t.heads) + ", ";
  s += std::to_string(t.tokens) + ", " + std::to_string(t.head_dim) + "]";
  return s;
}

// Checks one tensor view on its own: sizes, pointer, strides.
std::string check_view(const char* name, const TensorView& t) {
  const std::string n = name;
  if (t.batch < 0 || t.heads < 1 || t.tokens < 0 || t.head_dim < 1)
    return n + " has shape " + shape(t) +
           ": need batch >= 0, heads >= 1, tokens >= 0, head_dim >= 1";
  if (t.stride_batch < 0 || t.stride_head < 0 || t.stride_token < 0)
    return n + " has a negative stride (batch " + std::to_string(t.stride_batch) + ", head " +
           std::to_string(t.stride_head) + ", token " + std::to_string(t.stride_token) +
           "); strides are in elements and must be >= 0";
  if (t.tokens > 1 && t.stride_token < t.head_dim)
    return n + ".stride_token = " + std::to_string(t.stride_token) +
           " is smaller than head_dim = " + std::to_string(t.head_dim) +
           ": token rows would overlap (head_dim is the contiguous dimension)";
  if (t.data == nullptr && t.batch * t.tokens > 0) return n + ".data is null";
  return {};
}

std::string check_rows(const char* name, const RowStatsView& r, const TensorView& like) {
  const std::string n = name;
  if (r.batch != like.batch || r.heads != like.heads || r.tokens != like.tokens)
    return n + " is [" + std::to_string(r.batch) + ", " + std::to_string(r.heads) + ", " +
           std::to_string(r.tokens) + "] but must be [" + std::to_string(like.batch) + ", " +
           std::to_string(like.heads) + ", " + std::to_string(like.tokens) +
           "] (batch, heads, tokens of the queries)";
  if (r.stride_batch < 0 || r.stride_head < 0) return n + " has a negative stride";
  if (r.data == nullptr && r.batch * r.tokens > 0) return n + ".data is null";
  return {};
}

std::string check_same_shape(const char* name, const TensorView& t, const TensorView& like,
                             const char* like_name) {
  if (t.batch != like.batch || t.heads != like.heads || t.tokens != like.tokens ||
      t.head_dim != like.head_dim)
    return std::string(name) + " has shape " + shape(t) + " but must match " + like_name + " " +
           shape(like);
  return {};
}

std::string check_f32(const char* name, const TensorView& t) {
  if (t.type != ElemType::f32)
    return std::string(name) + " is " + type_name(t.type) + " but must be f32 (float32 output/accumulator)";
  return {};
}

std::string check_params(const BlockParams& p) {
  for (auto [name, view] : {std::pair{"q", &p.q}, std::pair{"k", &p.k}, std::pair{"v", &p.v}})
    if (auto e = check_view(name, *view); !e.empty()) return e;
  if (p.k.type != p.q.type || p.v.type != p.q.type)
    return std::string("q, k, v element types differ (") + type_name(p.q.type) + ", " +
           type_name(p.k.type) + ", " + type_name(p.v.type) + "); they must be the same";
  if (p.k.batch != p.q.batch || p.v.batch != p.q.batch)
    return "batch differs: q " + std::to_string(p.q.batch) + ", k " + std::to_string(p.k.batch) +
           ", v " + std::to_string(p.v.batch);
  if (p.k.head_dim != p.q.head_dim || p.v.head_dim != p.q.head_dim)
    return "head_dim differs: q " + std::to_string(p.q.head_dim) + ", k " +
           std::to_string(p.k.head_dim) + ", v " + std::to_string(p.v.head_dim) +
           "; all three must be equal";
  if (p.v.heads != p.k.heads || p.v.tokens != p.k.tokens)
    return "v has shape " + shape(p.v) + " but must match k " + shape(p.k);
  if (p.q.heads % p.k.heads != 0)
    return "q.heads = " + std::to_string(p.q.heads) + " is not a multiple of kv heads = " +
           std::to_string(p.k.heads) + " (GQA needs kv_heads to divide heads)";
  if (p.causal && p.q.tokens > 0 && p.q_positions == nullptr)
    return "q_positions is null but causal masking needs one position per query token";
  if (p.causal && p.k.tokens > 0 && p.k_positions == nullptr)
    return "k_positions is null but causal masking needs one position per key token";
  if ((p.q_documents == nullptr) != (p.k_documents == nullptr))
    return std::string(p.q_documents == nullptr ? "q_documents is null but k_documents is set"
                                                : "k_documents is null but q_documents is set") +
           ": packed documents need one document id per query and per key token (or neither)";
  if (!std::isfinite(p.scale)) return "scale = " + std::to_string(p.scale) + " is not finite (0 means 1/sqrt(head_dim))";
  return {};
}

}  // namespace

std::string validate(const BlockParams& p, const ForwardOut& o) {
  if (auto e = check_params(p); !e.empty()) return e;
  if (auto e = check_view("out", o.out); !e.empty()) return e;
  if (auto e = check_f32("out", o.out); !e.empty()) return e;
  if (auto e = check_same_shape("out", o.out, p.q, "q"); !e.empty()) return e;
  return check_rows("lse", o.lse, p.q);
}

std::string validate(const BlockParams& p, const BackwardArgs& g) {
  if (auto e = check_params(p); !e.empty()) return e;
  const std::pair<const char*, const TensorView*> q_like[] = {
      {"out", &g.out}, {"grad_out", &g.grad_out}, {"grad_q", &g.grad_q}};
  for (auto [name, view] : q_like) {
    if (auto e = check_view(name, *view); !e.empty()) return e;
    if (auto e = check_same_shape(name, *view, p.q, "q"); !e.empty()) return e;
  }
  const std::pair<const char*, const TensorView*> k_like[] = {{"grad_k", &g.grad_k},
                                                              {"grad_v", &g.grad_v}};
  for (auto [name, view] : k_like) {
    if (auto e = check_view(name, *view); !e.empty()) return e;
    if (auto e = check_same_shape(name, *view, p.k, "k"); !e.empty()) return e;
  }
  // dO and O share the input type on GPU (f16/bf16); accumulators are always f32.
  if (g.out.type != p.q.type || g.grad_out.type != p.q.type)
    return std::string("out / grad_out are ") + type_name(g.out.type) + " / " +
           type_name(g.grad_out.type) + " but must have the input type " + type_name(p.q.type);
  for (auto [name, view] : {std::pair{"grad_q", &g.grad_q}, std::pair{"grad_k", &g.grad_k},
                            std::pair{"grad_v", &g.grad_v}})
    if (auto e = check_f32(name, *view); !e.empty()) return e;
  if (auto e = check_rows("lse", g.lse, p.q); !e.empty()) return e;
  return check_rows("delta", g.delta, p.q);
}

int64_t visible_pairs(const int64_t* q_pos, int64_t n, const int64_t* k_pos, int64_t m,
                      bool causal, const int64_t* q_docs, const int64_t* k_docs) {
  if (n < 0 || m < 0)
    throw std::invalid_argument("visible_pairs: n = " + std::to_string(n) + ", m = " +
                                std::to_string(m) + "; token counts must be >= 0");
  if ((q_docs == nullptr) != (k_docs == nullptr))
    throw std::invalid_argument("visible_pairs: document ids must be given for both queries and keys or neither");
  if (q_docs == nullptr && !causal) return n * m;
  if (causal && n > 0 && m > 0 && (q_pos == nullptr || k_pos == nullptr))
    throw std::invalid_argument("visible_pairs: causal counting needs q_pos and k_pos (got null)");
  // Keys sorted by (document, position); per query, binary search for the keys of its document
  // (at or before its position when causal). Without documents every key is in document 0.
  std::vector<std::pair<int64_t, int64_t>> keys(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j)
    keys[static_cast<size_t>(j)] = {k_docs != nullptr ? k_docs[j] : 0, causal ? k_pos[j] : 0};
  std::sort(keys.begin(), keys.end());
  int64_t pairs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t doc = q_docs != nullptr ? q_docs[i] : 0;
    const auto first = std::lower_bound(keys.begin(), keys.end(), std::pair{doc, std::numeric_limits<int64_t>::min()});
    const auto last = std::upper_bound(keys.begin(), keys.end(),
                                       std::pair{doc, causal ? q_pos[i] : std::numeric_limits<int64_t>::max()});
    pairs += last - first;
  }
  return pairs;
}

namespace detail {

std::string check_tiles(const TileConfig& t) {
  if (t.tile_q < 1 || t.tile_k < 1 || t.threads < 1)
    return "TileConfig {tile_q " + std::to_string(t.tile_q) + ", tile_k " +
           std::to_string(t.tile_k) + ", threads " + std::to_string(t.threads) +
           "}: all must be >= 1";
  // Scratch of one thread is a few tile_q x tile_k float matrices; refuse sizes that would make
  // "a tile" as large as the whole problem the flash kernel exists to avoid.
  if (t.tile_q > 4096 || t.tile_k > 4096)
    return "TileConfig tile sizes must be <= 4096 (got tile_q " + std::to_string(t.tile_q) +
           ", tile_k " + std::to_string(t.tile_k) + "); 64..128 is the intended range";
  return {};
}

std::string check_cpu_types(const BlockParams& p) {
  if (p.q.type != ElemType::f32)
    return std::string("CPU kernels take f32 inputs, got q/k/v of type ") + type_name(p.q.type) +
           " (f16/bf16 run on the CUDA kernels)";
  return {};
}

}  // namespace detail
}  // namespace ringplan::kernels
