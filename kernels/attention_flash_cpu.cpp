// Flash-style CPU attention (float32, Eigen): forward with online softmax, backward that
// recomputes scores tile by tile, LSE merge of partial results and D = rowsum(dO * O).
//
// Memory: each thread holds a few tile_q x tile_k and tile x head_dim float scratch matrices;
// nothing of size n x m is ever allocated (the multi-thread backward adds one private dQ of
// b*H*n*d floats per extra thread: linear in tokens).
// Masking: a tile is classified from the min/max positions and document ids of its rows and
// columns (detail::classify): fully hidden tiles (keys after every query, or no document in
// common) are skipped with no work, fully visible tiles take no per-element test, only partial
// tiles (straddling the diagonal or a document boundary) are masked element by element.
// Eigen's vectorised exp maps -inf to ~3e-39, not 0, so masked entries and rows with no visible
// key are zeroed explicitly after the exponential: hidden keys contribute exactly nothing.
#include <cmath>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/cpu_common.hpp"

namespace ringplan::kernels {
namespace {

using namespace detail;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-thread scratch of the forward: scaled Q tile, score tile, O accumulator, row statistics.
struct ForwardScratch {
  std::vector<float> q_scaled, scores, acc, row_max, row_sum, row_tile_max;
  ForwardScratch(int64_t tq, int64_t tk, int64_t d)
      : q_scaled(tq * d), scores(tq * tk), acc(tq * d), row_max(tq), row_sum(tq),
        row_tile_max(tq) {}
};

// One (batch, head, query tile) of the forward: O and lse of rows [i0, i0 + rows).
void forward_tile(const BlockParams& p, const ForwardOut& o, const TileConfig& tiles,
                  const std::vector<TileRange>& q_ranges, const std::vector<TileRange>& k_ranges,
                  int64_t b, int64_t h, int64_t qt, ForwardScratch& sc) {
  const int64_t d = p.q.head_dim, m = p.k.tokens;
  const int64_t i0 = qt * tiles.tile_q, rows = std::min(tiles.tile_q, p.q.tokens - i0);
  const int64_t kvh = kv_head_of(h, p.q.heads, p.k.heads);
  const float scale = effective_scale(p);
  const Mask mask = mask_of(p);

  // Pre-scaling Q once per tile folds `scale` out of every score tile.
  ScratchMap qs(sc.q_scaled.data(), rows, d);
  qs.noalias() = const_tile(p.q, b, h, i0, rows) * scale;
  ScratchMap acc(sc.acc.data(), rows, d);
  acc.setZero();
  VecMap row_max(sc.row_max.data(), rows), row_sum(sc.row_sum.data(), rows);
  VecMap tile_max(sc.row_tile_max.data(), rows);
  row_max.setConstant(kNegInf);
  row_sum.setZero();

  for (int64_t kt = 0; kt < ceil_div(m, tiles.tile_k); ++kt) {
    const TileVis vis = mask.active() ? classify(mask, q_ranges[qt], k_ranges[kt]) : TileVis::visible;
    if (vis == TileVis::hidden) continue;
    const int64_t j0 = kt * tiles.tile_k, cols = std::min(tiles.tile_k, m - j0);
    const ConstTileMap k = const_tile(p.k, b, kvh, j0, cols);
    const ConstTileMap v = const_tile(p.v, b, kvh, j0, cols);
    ScratchMap s(sc.scores.data(), rows, cols);
    s.noalias() = qs * k.transpose();
    if (vis == TileVis::partial) mask_partial(s, mask, i0, j0, kNegInf);

    // Online softmax: new running max, rescale what was accumulated with the old one.
    // Invariant: row_max == -inf  <=>  no visible key seen yet for that row (acc, row_sum are 0).
    tile_max.noalias() = s.rowwise().maxCoeff();
    bool any_dead = false;
    for (int64_t i = 0; i < rows; ++i) {
      const float new_max = std::max(row_max[i], tile_max[i]);
      if (new_max == kNegInf) {  // still nothing visible in this row
        any_dead = true;
        tile_max[i] = 0.0f;      // shift used below; the row is zeroed after exp
        continue;
      }
      if (new_max != row_max[i]) {  // rescale only when the max moved (rare after a few tiles)
        const float alpha = std::exp(row_max[i] - new_max);  // std::exp(-inf) == 0 exactly
        row_sum[i] *= alpha;
        acc.row(i) *= alpha;
      }
      row_max[i] = new_max;
      tile_max[i] = new_max;
    }
    s.array().colwise() -= tile_max.array();
    s = s.array().exp();
    if (vis == TileVis::partial) mask_partial(s, mask, i0, j0, 0.0f);
    if (any_dead)
      for (int64_t i = 0; i < rows; ++i)
        if (row_max[i] == kNegInf) s.row(i).setZero();
    row_sum.noalias() += s.rowwise().sum();
    acc.noalias() += s * v;
  }

  TileMap out = tile(o.out, b, h, i0, rows);
  float* lse = stats_ptr(o.lse, b, h) + i0;
  for (int64_t i = 0; i < rows; ++i) {
    if (row_max[i] == kNegInf || !(row_sum[i] > 0.0f)) {  // no visible key: O = 0, lse = -inf
      out.row(i).setZero();
      lse[i] = kNegInf;
    } else {
      out.row(i).noalias() = acc.row(i) * (1.0f / row_sum[i]);
      lse[i] = row_max[i] + std::log(row_sum[i]);
    }
  }
}

// Per-thread scratch of the backward.
struct BackwardScratch {
  std::vector<float> probs, grad_scores, grad_k_acc, grad_v_acc, lse_used;
  std::vector<char> dead;
  BackwardScratch(int64_t tq, int64_t tk, int64_t d)
      : probs(tq * tk), grad_scores(tq * tk), grad_k_acc(tk * d), grad_v_acc(tk * d),
        lse_used(tq), dead(tq) {}
};

// One (batch, kv head, key tile) of the backward: loops over the query heads of its GQA group
// and all query tiles. dK, dV of the key tile are owned by this item (accumulated locally,
// added once); dQ rows are shared with other key tiles, hence grad_q_target per thread.
void backward_tile(const BlockParams& p, const BackwardArgs& g, const TensorView& grad_q_target,
                   const TileConfig& tiles, const std::vector<TileRange>& q_ranges,
                   const std::vector<TileRange>& k_ranges, int64_t b, int64_t kvh, int64_t kt,
                   BackwardScratch& sc) {
  const int64_t d = p.q.head_dim, n = p.q.tokens, m = p.k.tokens;
  const int64_t group = p.q.heads / p.k.heads;
  const int64_t j0 = kt * tiles.tile_k, cols = std::min(tiles.tile_k, m - j0);
  const float scale = effective_scale(p);
  const Mask mask = mask_of(p);
  const ConstTileMap k = const_tile(p.k, b, kvh, j0, cols);
  const ConstTileMap v = const_tile(p.v, b, kvh, j0, cols);
  ScratchMap dk_acc(sc.grad_k_acc.data(), cols, d), dv_acc(sc.grad_v_acc.data(), cols, d);
  dk_acc.setZero();
  dv_acc.setZero();
  bool touched = false;

  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float* lse_row = stats_ptr(g.lse, b, h);
    const float* delta_row = stats_ptr(g.delta, b, h);
    for (int64_t qt = 0; qt < ceil_div(n, tiles.tile_q); ++qt) {
      const TileVis vis = mask.active() ? classify(mask, q_ranges[qt], k_ranges[kt]) : TileVis::visible;
      if (vis == TileVis::hidden) continue;
      touched = true;
      const int64_t i0 = qt * tiles.tile_q, rows = std::min(tiles.tile_q, n - i0);
      const ConstTileMap q = const_tile(p.q, b, h, i0, rows);
      const ConstTileMap dout = const_tile(g.grad_out, b, h, i0, rows);
      // Rows with lse = -inf have no visible key anywhere: P and dS rows must be exactly 0.
      VecMap lse_used(sc.lse_used.data(), rows);
      bool any_dead = false;
      for (int64_t i = 0; i < rows; ++i) {
        sc.dead[i] = !(lse_row[i0 + i] > kNegInf);
        any_dead |= static_cast<bool>(sc.dead[i]);
        lse_used[i] = sc.dead[i] ? 0.0f : lse_row[i0 + i];
      }
      const ConstVecMap delta(delta_row + i0, rows);

      // P = exp(scale * Q K^T - lse), hidden -> 0.
      ScratchMap prob(sc.probs.data(), rows, cols);
      prob.noalias() = q * k.transpose();
      prob.array() = (prob.array() * scale).colwise() - lse_used.array();
      prob = prob.array().exp();
      if (vis == TileVis::partial) mask_partial(prob, mask, i0, j0, 0.0f);
      if (any_dead)
        for (int64_t i = 0; i < rows; ++i)
          if (sc.dead[i]) prob.row(i).setZero();

      dv_acc.noalias() += prob.transpose() * dout;
      // dS * scale = scale * P * (dO V^T - D): the scale of both dQ and dK folded in once.
      ScratchMap ds(sc.grad_scores.data(), rows, cols);
      ds.noalias() = dout * v.transpose();
      ds.array() = ((ds.array().colwise() - delta.array()) * prob.array()) * scale;
      if (any_dead)
        for (int64_t i = 0; i < rows; ++i)
          if (sc.dead[i]) ds.row(i).setZero();
      tile(grad_q_target, b, h, i0, rows).noalias() += ds * k;
      dk_acc.noalias() += ds.transpose() * q;
    }
  }
  if (!touched) return;
  tile(g.grad_k, b, kvh, j0, cols) += dk_acc;
  tile(g.grad_v, b, kvh, j0, cols) += dv_acc;
}

}  // namespace

void cpu_flash_forward(const BlockParams& p, const ForwardOut& o, TileConfig tiles) {
  const char* where = "cpu_flash_forward";
  throw_if(where, validate(p, o));
  throw_if(where, check_cpu_types(p));
  throw_if(where, check_tiles(tiles));
  const int64_t n = p.q.tokens, d = p.q.head_dim;
  const int64_t q_tiles = ceil_div(n, tiles.tile_q);
  const auto q_ranges = tile_ranges(p.q_positions, p.q_documents, p.causal, n, tiles.tile_q);
  const auto k_ranges = tile_ranges(p.k_positions, p.k_documents, p.causal, p.k.tokens, tiles.tile_k);
  const int64_t items = p.q.batch * p.q.heads * q_tiles;
  const int64_t threads = std::max<int64_t>(1, std::min(tiles.threads, items));
  std::vector<ForwardScratch> scratch;
  scratch.reserve(threads);
  for (int64_t t = 0; t < threads; ++t) scratch.emplace_back(tiles.tile_q, tiles.tile_k, d);
  parallel_for(items, threads, [&](int64_t item, int64_t t) {
    const int64_t qt = item % q_tiles, bh = item / q_tiles;
    forward_tile(p, o, tiles, q_ranges, k_ranges, bh / p.q.heads, bh % p.q.heads, qt, scratch[t]);
  });
}

void cpu_flash_backward(const BlockParams& p, const BackwardArgs& g, TileConfig tiles) {
  const char* where = "cpu_flash_backward";
  throw_if(where, validate(p, g));
  throw_if(where, check_cpu_types(p));
  throw_if(where, check_tiles(tiles));
  const int64_t n = p.q.tokens, m = p.k.tokens, d = p.q.head_dim;
  const int64_t k_tiles = ceil_div(m, tiles.tile_k);
  const auto q_ranges = tile_ranges(p.q_positions, p.q_documents, p.causal, n, tiles.tile_q);
  const auto k_ranges = tile_ranges(p.k_positions, p.k_documents, p.causal, m, tiles.tile_k);
  const int64_t items = p.k.batch * p.k.heads * k_tiles;
  const int64_t threads = std::max<int64_t>(1, std::min(tiles.threads, items));
  std::vector<BackwardScratch> scratch;
  scratch.reserve(threads);
  for (int64_t t = 0; t < threads; ++t) scratch.emplace_back(tiles.tile_q, tiles.tile_k, d);
  // Thread 0 adds dQ straight into grad_q; every other thread into its own zeroed dense copy.
  std::vector<std::vector<float>> dq_private(threads - 1);
  std::vector<TensorView> dq_target(threads, g.grad_q);
  for (int64_t t = 1; t < threads; ++t) {
    dq_private[t - 1].assign(p.q.batch * p.q.heads * n * d, 0.0f);
    dq_target[t] = dense_view(dq_private[t - 1].data(), ElemType::f32, p.q.batch, p.q.heads, n, d);
  }
  parallel_for(items, threads, [&](int64_t item, int64_t t) {
    const int64_t kt = item % k_tiles, bkv = item / k_tiles;
    backward_tile(p, g, dq_target[t], tiles, q_ranges, k_ranges, bkv / p.k.heads,
                  bkv % p.k.heads, kt, scratch[t]);
  });
  if (threads == 1) return;
  parallel_for(p.q.batch * p.q.heads, threads, [&](int64_t bh, int64_t) {
    const int64_t b = bh / p.q.heads, h = bh % p.q.heads;
    TileMap dq = tile(g.grad_q, b, h, 0, n);
    for (int64_t t = 1; t < threads; ++t) dq += const_tile(dq_target[t], b, h, 0, n);
  });
}

void merge_partial(const ForwardOut& acc, const ForwardOut& blk) {
  const char* where = "merge_partial";
  auto check = [&](const char* name, const ForwardOut& f) -> std::string {
    if (f.out.type != ElemType::f32) return std::string(name) + ".out must be f32";
    if (f.out.batch < 0 || f.out.heads < 1 || f.out.tokens < 0 || f.out.head_dim < 1)
      return std::string(name) + ".out has an invalid shape";
    if (f.out.data == nullptr && f.out.batch * f.out.tokens > 0) return std::string(name) + ".out.data is null";
    if (f.lse.data == nullptr && f.lse.batch * f.lse.tokens > 0) return std::string(name) + ".lse.data is null";
    if (f.lse.batch != f.out.batch || f.lse.heads != f.out.heads || f.lse.tokens != f.out.tokens)
      return std::string(name) + ".lse shape differs from " + name + ".out's [batch, heads, tokens]";
    return {};
  };
  throw_if(where, check("acc", acc));
  throw_if(where, check("blk", blk));
  if (acc.out.batch != blk.out.batch || acc.out.heads != blk.out.heads ||
      acc.out.tokens != blk.out.tokens || acc.out.head_dim != blk.out.head_dim)
    throw_if(where, "acc.out and blk.out have different shapes [b, H, n, d]: [" +
                        std::to_string(acc.out.batch) + ", " + std::to_string(acc.out.heads) +
                        ", " + std::to_string(acc.out.tokens) + ", " +
                        std::to_string(acc.out.head_dim) + "] vs [" +
                        std::to_string(blk.out.batch) + ", " + std::to_string(blk.out.heads) +
                        ", " + std::to_string(blk.out.tokens) + ", " +
                        std::to_string(blk.out.head_dim) + "]");
  for (int64_t b = 0; b < acc.out.batch; ++b)
    for (int64_t h = 0; h < acc.out.heads; ++h) {
      float* la = stats_ptr(acc.lse, b, h);
      const float* lb = stats_ptr(blk.lse, b, h);
      TileMap oa = tile(acc.out, b, h, 0, acc.out.tokens);
      const ConstTileMap ob = const_tile(blk.out, b, h, 0, blk.out.tokens);
      for (int64_t i = 0; i < acc.out.tokens; ++i) {
        const float a = la[i], c = lb[i];
        if (!(c > kNegInf)) continue;  // block saw no key for this row: acc unchanged
        if (!(a > kNegInf)) {          // accumulator empty: take the block as is
          oa.row(i) = ob.row(i);
          la[i] = c;
          continue;
        }
        // Both finite. The other partial's weight is sigmoid(lo - hi) = e / (1 + e), e =
        // exp(lo - hi) <= 1, so it is <= 1/2 and needs no 1 - x. O moves from the partial with
        // the larger lse toward the other by that weight: a convex combination whatever the
        // rounding. Weights exp(lse_x - lse) taken from the float32-rounded merged lse would not
        // sum to 1 (off by up to an ulp of lse, 1.5e-5 at lse ~ 150), once per merge.
        const float hi = std::max(a, c), lo = std::min(a, c);
        const float e = std::exp(lo - hi);
        const float w = e / (1.0f + e);
        if (a >= c)
          oa.row(i) = oa.row(i) + w * (ob.row(i) - oa.row(i));
        else
          oa.row(i) = ob.row(i) + w * (oa.row(i) - ob.row(i));
        la[i] = hi + std::log1p(e);
      }
    }
}

void attention_backward_delta(const TensorView& out, const TensorView& grad_out,
                              const RowStatsView& delta) {
  const char* where = "attention_backward_delta";
  if (out.type != ElemType::f32 || grad_out.type != ElemType::f32)
    throw_if(where, "CPU path takes f32 out and grad_out");
  if (out.batch != grad_out.batch || out.heads != grad_out.heads ||
      out.tokens != grad_out.tokens || out.head_dim != grad_out.head_dim)
    throw_if(where, "out and grad_out have different shapes");
  if (delta.batch != out.batch || delta.heads != out.heads || delta.tokens != out.tokens)
    throw_if(where, "delta must be [batch, heads, tokens] of out");
  if (out.batch * out.tokens > 0 &&
      (out.data == nullptr || grad_out.data == nullptr || delta.data == nullptr))
    throw_if(where, "null data pointer in out, grad_out or delta");
  if (out.tokens > 1 && (out.stride_token < out.head_dim || grad_out.stride_token < out.head_dim))
    throw_if(where, "stride_token smaller than head_dim: rows would overlap");
  for (int64_t b = 0; b < out.batch; ++b)
    for (int64_t h = 0; h < out.heads; ++h) {
      const ConstTileMap o = const_tile(out, b, h, 0, out.tokens);
      const ConstTileMap dout = const_tile(grad_out, b, h, 0, out.tokens);
      float* dst = stats_ptr(delta, b, h);
      for (int64_t i = 0; i < out.tokens; ++i) dst[i] = o.row(i).dot(dout.row(i));
    }
}

}  // namespace ringplan::kernels
