// Materialised CPU attention: the forward writes the scaled, masked scores S = scale*Q*K^T
// (hidden -> -inf) of every (batch, head) into the caller's buffer [b, H, n, m] and keeps them
// for the backward, which then needs no Q*K^T. The buffer is the O(L^2/P) memory term of the
// cost model (b * H * n * m * 4 bytes); besides it, only row blocks of kRowBlock x m floats
// are allocated. Single-threaded: this variant exists to measure memory and to cross-check the
// flash kernel, not to be fast.
#include <cmath>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/cpu_common.hpp"

namespace ringplan::kernels {
namespace {

using namespace detail;

constexpr int64_t kRowBlock = 64;  // rows of P / dP held at once

float* scores_of(const BlockParams& p, float* scores, int64_t b, int64_t h) {
  return scores + (b * p.q.heads + h) * p.q.tokens * p.k.tokens;
}

void check_scores(const char* where, const BlockParams& p, const void* scores) {
  if (scores == nullptr && materialized_scores_elems(p) > 0)
    throw_if(where, "scores is null; it must hold materialized_scores_elems(p) = " +
                        std::to_string(materialized_scores_elems(p)) + " floats");
}

}  // namespace

int64_t materialized_scores_elems(const BlockParams& p) {
  return p.q.batch * p.q.heads * p.q.tokens * p.k.tokens;
}

void cpu_materialized_forward(const BlockParams& p, const ForwardOut& o, float* scores) {
  const char* where = "cpu_materialized_forward";
  throw_if(where, validate(p, o));
  throw_if(where, check_cpu_types(p));
  check_scores(where, p, scores);
  const int64_t n = p.q.tokens, m = p.k.tokens;
  const float scale = effective_scale(p);
  std::vector<float> prob_buf(kRowBlock * m), row_max(kRowBlock);
  for (int64_t b = 0; b < p.q.batch; ++b)
    for (int64_t h = 0; h < p.q.heads; ++h) {
      const int64_t kvh = kv_head_of(h, p.q.heads, p.k.heads);
      ScratchMap s(scores_of(p, scores, b, h), n, m);
      s.noalias() = (const_tile(p.q, b, h, 0, n) * scale) * const_tile(p.k, b, kvh, 0, m).transpose();
      if (const Mask mask = mask_of(p); mask.active()) mask_partial(s, mask, 0, 0, kNegInf);
      const ConstTileMap v = const_tile(p.v, b, kvh, 0, m);
      for (int64_t i0 = 0; i0 < n; i0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, n - i0);
        ScratchMap prob(prob_buf.data(), rows, m);
        VecMap mx(row_max.data(), rows);
        const auto s_rows = s.middleRows(i0, rows);
        mx.noalias() = s_rows.rowwise().maxCoeff();
        // Dead rows (max -inf) get shift 0; every -inf score maps to exactly 0 below.
        const Eigen::VectorXf shift = (mx.array() == kNegInf).select(0.0f, mx.array()).matrix();
        prob.array() = (s_rows.array() == kNegInf)
                           .select(0.0f, (s_rows.array().colwise() - shift.array()).exp());
        TileMap out = tile(o.out, b, h, i0, rows);
        out.noalias() = prob * v;
        float* lse = stats_ptr(o.lse, b, h) + i0;
        for (int64_t i = 0; i < rows; ++i) {
          const float sum = prob.row(i).sum();
          if (mx[i] == kNegInf || !(sum > 0.0f)) {
            out.row(i).setZero();
            lse[i] = kNegInf;
          } else {
            out.row(i) *= 1.0f / sum;
            lse[i] = mx[i] + std::log(sum);
          }
        }
      }
    }
}

void cpu_materialized_backward(const BlockParams& p, const BackwardArgs& g, const float* scores) {
  const char* where = "cpu_materialized_backward";
  throw_if(where, validate(p, g));
  throw_if(where, check_cpu_types(p));
  check_scores(where, p, scores);
  const int64_t n = p.q.tokens, m = p.k.tokens;
  const float scale = effective_scale(p);
  std::vector<float> prob_buf(kRowBlock * m), ds_buf(kRowBlock * m), lse_buf(kRowBlock);
  for (int64_t b = 0; b < p.q.batch; ++b)
    for (int64_t h = 0; h < p.q.heads; ++h) {
      const int64_t kvh = kv_head_of(h, p.q.heads, p.k.heads);
      const Eigen::Map<const RowMat> s(scores_of(p, const_cast<float*>(scores), b, h), n, m);
      const ConstTileMap k = const_tile(p.k, b, kvh, 0, m), v = const_tile(p.v, b, kvh, 0, m);
      TileMap dk = tile(g.grad_k, b, kvh, 0, m), dv = tile(g.grad_v, b, kvh, 0, m);
      for (int64_t i0 = 0; i0 < n; i0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, n - i0);
        const float* lse_src = stats_ptr(g.lse, b, h) + i0;
        VecMap lse(lse_buf.data(), rows);
        for (int64_t i = 0; i < rows; ++i) lse[i] = lse_src[i] > kNegInf ? lse_src[i] : 0.0f;
        const auto s_rows = s.middleRows(i0, rows);
        // P = exp(S - lse) with hidden scores (-inf) and dead rows (lse -inf) exactly 0.
        ScratchMap prob(prob_buf.data(), rows, m);
        prob.array() = (s_rows.array() == kNegInf)
                           .select(0.0f, (s_rows.array().colwise() - lse.array()).exp());
        for (int64_t i = 0; i < rows; ++i)
          if (!(lse_src[i] > kNegInf)) prob.row(i).setZero();
        const ConstTileMap q = const_tile(p.q, b, h, i0, rows);
        const ConstTileMap dout = const_tile(g.grad_out, b, h, i0, rows);
        const ConstVecMap delta(stats_ptr(g.delta, b, h) + i0, rows);
        dv.noalias() += prob.transpose() * dout;
        ScratchMap ds(ds_buf.data(), rows, m);
        ds.noalias() = dout * v.transpose();
        ds.array() = ((ds.array().colwise() - delta.array()) * prob.array()) * scale;
        for (int64_t i = 0; i < rows; ++i)
          if (!(lse_src[i] > kNegInf)) ds.row(i).setZero();
        tile(g.grad_q, b, h, i0, rows).noalias() += ds * k;
        dk.noalias() += ds.transpose() * q;
      }
    }
}

}  // namespace ringplan::kernels
