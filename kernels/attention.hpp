// Block attention with log-sum-exp: the one primitive every ring step calls.
//
// Tensors are batch x heads x tokens x head_dim with explicit element strides (head_dim is
// contiguous), so callers point into their own buffers without copies. Queries and keys carry
// global token positions; with `causal`, key j is visible to query i iff k_pos[j] <= q_pos[i].
// Positions, not block indices, decide the mask, so one kernel serves every sharding scheme.
// Packed documents: when both q_documents and k_documents are given, key j is visible to query
// i only if they are in the same document as well (q_doc[i] == k_doc[j]); with causal, that is
// causal attention within each document, since a document is a contiguous range of positions.
// Tiles whose query and key document ranges do not meet are skipped like causally hidden ones.
//
// Forward over one KV block:  S = scale*Q*K^T (hidden -> -inf), m = rowmax S,
//   l = sum exp(S - m), O = exp(S - m)*V / l, lse = m + log l.
// A row with no visible key yields O = 0, lse = -inf (never NaN).
// Merge two partials (stable sigmoid form; hi / lo = the partial with the larger / smaller lse):
//   w = sigmoid(lse_lo - lse_hi) = e / (1 + e) with e = exp(lse_lo - lse_hi) <= 1,
//   O = O_hi + w (O_lo - O_hi),  lse = lse_hi + log1p(e).
// Equal to e^(lse_a-lse) O_a + e^(lse_b-lse) O_b in exact arithmetic, but O stays a convex
// combination however lse rounds (weights taken from a float32 lse ~ 150 miss 1 by 1e-5).
// One side -inf: the result is the other side exactly; both -inf: O = 0, lse = -inf.
// Backward with the FINAL O, dO, lse: D = rowsum(dO * O), P = exp(S - lse), dV += P^T dO,
//   dP = dO V^T, dS = P * (dP - D), dQ += scale dS K, dK += scale dS^T Q.
// Because the final lse is used, per-block contributions sum exactly to the full gradient.
//
// GQA: query head h reads KV head floor(h * kv_heads / heads); dK, dV of a KV head sum over
// its query heads. This header knows nothing of MPI, YAML or the rest of the project.
#pragma once
#include <cstdint>
#include <limits>
#include <string>

namespace ringplan::kernels {

enum class ElemType { f32, f16, bf16 };  // CPU kernels take f32; CUDA kernels f16 / bf16

// A 4-D view [batch, heads, tokens, head_dim]; head_dim stride is 1.
struct TensorView {
  void* data = nullptr;
  ElemType type = ElemType::f32;
  int64_t batch = 0, heads = 0, tokens = 0, head_dim = 0;
  int64_t stride_batch = 0, stride_head = 0, stride_token = 0;  // in elements
};
// Dense row-major view [batch, heads, tokens, head_dim].
TensorView dense_view(void* data, ElemType type, int64_t batch, int64_t heads, int64_t tokens,
                      int64_t head_dim);

// Per-row float32 statistics [batch, heads, tokens] (lse, D), dense.
struct RowStatsView {
  float* data = nullptr;
  int64_t batch = 0, heads = 0, tokens = 0;
  int64_t stride_batch = 0, stride_head = 0;  // token stride is 1
};
RowStatsView dense_rows(float* data, int64_t batch, int64_t heads, int64_t tokens);

// Parameters of one block: Q [b, H, n, d] against K, V [b, Hkv, m, d].
struct BlockParams {
  TensorView q, k, v;
  const int64_t* q_positions = nullptr;  // n global positions
  const int64_t* k_positions = nullptr;  // m global positions
  bool causal = true;
  float scale = 0.0f;                    // 0 means 1/sqrt(head_dim)
  // Packed documents: n and m document ids, both or neither (neither: one document). Last, so
  // that brace-initialised params without documents keep their meaning.
  const int64_t* q_documents = nullptr;
  const int64_t* k_documents = nullptr;
};

// Forward outputs of one block (or the running accumulator of a ring): O is float32.
struct ForwardOut {
  TensorView out;      // [b, H, n, d], f32
  RowStatsView lse;    // [b, H, n]
};

// Backward inputs (final O, dO, lse of the whole sequence) and float32 accumulators.
struct BackwardArgs {
  TensorView out;          // final O   [b, H, n, d]
  TensorView grad_out;     // dO        [b, H, n, d]
  RowStatsView lse;        // final lse [b, H, n]
  RowStatsView delta;      // D = rowsum(dO * O) [b, H, n]; fill with attention_backward_delta
  TensorView grad_q;       // dQ += ...  [b, H, n, d], f32
  TensorView grad_k;       // dK += ...  [b, Hkv, m, d], f32
  TensorView grad_v;       // dV += ...  [b, Hkv, m, d], f32
};

// Tile sizes of the flash-style CPU kernel; memory per thread is O(tile_q * tile_k), never n*m.
// threads: worker threads of one call (1 = run on the calling thread). The forward splits
// batch x heads x query tiles; the backward splits batch x kv_heads x key tiles and, with more
// than one thread, gives each thread a private dQ accumulator of b*H*n*d floats (linear in
// tokens) that is summed into grad_q at the end.
struct TileConfig {
  int64_t tile_q = 64;
  int64_t tile_k = 64;
  int64_t threads = 1;
};

// Returns an empty string when the parameters are consistent, else what is wrong
// (shape mismatch, heads % kv_heads, null pointers, wrong element type for the backend).
// validate() accepts any input ElemType as long as q, k, v agree (the CUDA kernels share it);
// outputs, accumulators and row statistics must be f32.
std::string validate(const BlockParams& p, const ForwardOut& o);
std::string validate(const BlockParams& p, const BackwardArgs& g);
// Errors: every cpu_* function and merge_partial / attention_backward_delta check their
// arguments first and throw std::invalid_argument carrying validate()'s message (prefixed with
// the function name); CPU kernels also require f32 inputs. kernels/ uses nothing of the
// project, so it does not throw ringplan::Error: callers wrap it where they know the context.

// Flash-style CPU forward: writes O and lse of this block (overwrites, does not merge).
void cpu_flash_forward(const BlockParams& p, const ForwardOut& o, TileConfig tiles = {});
// Merge a block result into a running accumulator in place: acc <- merge(acc, blk).
void merge_partial(const ForwardOut& acc, const ForwardOut& blk);
// D = rowsum(dO * O) for the backward.
void attention_backward_delta(const TensorView& out, const TensorView& grad_out, const RowStatsView& delta);
// Flash-style CPU backward: recomputes scores tile by tile, accumulates dQ, dK, dV.
void cpu_flash_backward(const BlockParams& p, const BackwardArgs& g, TileConfig tiles = {});

// Materialised variant: the forward keeps the scaled, masked scores S [b, H, n, m] (float32)
// so the backward needs no Q*K^T. Its memory is the O(L^2/P) term of the cost model.
int64_t materialized_scores_elems(const BlockParams& p);
void cpu_materialized_forward(const BlockParams& p, const ForwardOut& o, float* scores);
void cpu_materialized_backward(const BlockParams& p, const BackwardArgs& g, const float* scores);

// Plain float64 reference over the whole Q block and KV block (dense double buffers,
// [b, H, n, d] / [b, Hkv, m, d]). Used by tests and benchmarks only. q_docs / k_docs: document
// ids of packed documents (both or neither), as BlockParams::q_documents. reference_forward
// overwrites out and lse; reference_backward computes D itself from out and grad_out and
// overwrites (does not accumulate) grad_q, grad_k, grad_v. Both throw std::invalid_argument
// on inconsistent sizes or null pointers.
void reference_forward(const double* q, const double* k, const double* v, const int64_t* q_pos,
                       const int64_t* k_pos, int64_t b, int64_t h, int64_t hkv, int64_t n, int64_t m,
                       int64_t d, bool causal, double scale, double* out, double* lse,
                       const int64_t* q_docs = nullptr, const int64_t* k_docs = nullptr);
void reference_backward(const double* q, const double* k, const double* v, const double* out,
                        const double* grad_out, const double* lse, const int64_t* q_pos,
                        const int64_t* k_pos, int64_t b, int64_t h, int64_t hkv, int64_t n, int64_t m,
                        int64_t d, bool causal, double scale, double* grad_q, double* grad_k,
                        double* grad_v, const int64_t* q_docs = nullptr, const int64_t* k_docs = nullptr);

// FLOP model (FlashAttention's convention): forward 4*b*h*n*m*d, halved for causal
// self-attention; backward 2.5x forward. Exact visible-pair count for arbitrary positions (and
// packed documents: pairs in different documents are not visible; both id arrays or neither):
int64_t visible_pairs(const int64_t* q_pos, int64_t n, const int64_t* k_pos, int64_t m, bool causal,
                      const int64_t* q_docs = nullptr, const int64_t* k_docs = nullptr);
inline double forward_flops(int64_t b, int64_t h, int64_t pairs, int64_t d) { return 4.0 * b * h * double(pairs) * d; }

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace ringplan::kernels
