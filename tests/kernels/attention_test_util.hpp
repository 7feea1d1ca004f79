// Test helpers for the CPU attention kernels: seeded random problems, the position sets that
// contiguous / zigzag / striped sharding give a rank, runners for the flash, materialised and
// float64 reference paths, and a plain (naive) implementation templated on the precision.
//
// Error bounds follow flash-attention's tests: a float32 kernel is compared with the float64
// reference, and its error must stay within a small multiple of the error that the naive
// float32 implementation (same inputs, one row at a time, sequential sums) makes against the
// same reference, plus a tiny absolute floor for the case where the naive error is by chance ~0.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.hpp"

namespace ringplan::kernels::test {

// Seed of a test: RINGPLAN_TEST_SEED when set (to reproduce a failure), else a fresh one.
// Every test prints it (INFO on failure, MESSAGE always) so any failure can be replayed.
inline uint64_t test_seed() {
  if (const char* env = std::getenv("RINGPLAN_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

enum class Scheme { contiguous, zigzag, striped };

// Global positions of the tokens that rank r of p holds for a sequence of L tokens
// (DESIGN.md "Sequence sharding": contiguous [r L/P, (r+1) L/P); zigzag chunks r and 2P-1-r of
// 2P; striped t mod P == r). Written independently of the runtime's sharding code on purpose.
inline std::vector<int64_t> shard_positions(Scheme s, int64_t L, int64_t P, int64_t r) {
  std::vector<int64_t> pos;
  switch (s) {
    case Scheme::contiguous:
      for (int64_t t = r * L / P; t < (r + 1) * L / P; ++t) pos.push_back(t);
      break;
    case Scheme::zigzag: {
      const int64_t c = L / (2 * P);
      for (int64_t t = r * c; t < (r + 1) * c; ++t) pos.push_back(t);
      for (int64_t t = (2 * P - 1 - r) * c; t < (2 * P - r) * c; ++t) pos.push_back(t);
      break;
    }
    case Scheme::striped:
      for (int64_t t = r; t < L; t += P) pos.push_back(t);
      break;
  }
  return pos;
}

inline std::vector<int64_t> iota_positions(int64_t count, int64_t first) {
  std::vector<int64_t> pos(count);
  for (int64_t i = 0; i < count; ++i) pos[i] = first + i;
  return pos;
}

// One problem: shapes, mask, positions (global), seeded inputs (dense [b, H|Hkv, tokens, d]).
struct Problem {
  int64_t b = 1, h = 2, hkv = 2, n = 67, m = 131, d = 64;
  bool causal = true;
  std::vector<int64_t> q_pos, k_pos;
  std::vector<int64_t> q_doc, k_doc;  // packed documents: ids per token, both or neither
  std::vector<float> q, k, v, grad_out;
  const int64_t* q_doc_ptr() const { return q_doc.empty() ? nullptr : q_doc.data(); }
  const int64_t* k_doc_ptr() const { return k_doc.empty() ? nullptr : k_doc.data(); }

  int64_t q_elems() const { return b * h * n * d; }
  int64_t kv_elems() const { return b * hkv * m * d; }
  int64_t rows() const { return b * h * n; }
};

// Shape of a problem (inputs filled by make_problem); positions default as described there.
inline Problem shape_of(int64_t n, int64_t m, int64_t d = 64, int64_t h = 2, int64_t hkv = 2,
                        int64_t b = 1) {
  Problem p;
  p.n = n;
  p.m = m;
  p.d = d;
  p.h = h;
  p.hkv = hkv;
  p.b = b;
  return p;
}
inline TileConfig tiles_of(int64_t tile_q, int64_t tile_k, int64_t threads) {
  TileConfig t;
  t.tile_q = tile_q;
  t.tile_k = tile_k;
  t.threads = threads;
  return t;
}

// Fills inputs with N(0, 1) values from `seed`. Positions default to a causal diagonal with the
// queries at the end of the keys (q_pos = m - n + i), the usual "self attention" layout.
inline Problem make_problem(Problem p, uint64_t seed) {
  if (p.q_pos.empty()) p.q_pos = iota_positions(p.n, std::max<int64_t>(0, p.m - p.n));
  if (p.k_pos.empty()) p.k_pos = iota_positions(p.m, 0);
  REQUIRE(static_cast<int64_t>(p.q_pos.size()) == p.n);
  REQUIRE(static_cast<int64_t>(p.k_pos.size()) == p.m);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& x, int64_t count) {
    x.resize(count);
    for (auto& e : x) e = normal(rng);
  };
  fill(p.q, p.q_elems());
  fill(p.k, p.kv_elems());
  fill(p.v, p.kv_elems());
  fill(p.grad_out, p.q_elems());
  return p;
}

// Results of forward + backward of one path, as doubles for comparison.
struct Result {
  std::vector<double> out, lse, grad_q, grad_k, grad_v;
};

template <class T>
std::vector<T> convert(const std::vector<float>& x) {
  return std::vector<T>(x.begin(), x.end());
}
template <class From>
std::vector<double> to_double(const std::vector<From>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// Plain implementation in precision T: one query row at a time, sequential sums. In double it
// is an independent cross-check of reference_*; in float it is the yardstick of the error bound.
template <class T>
Result run_naive(const Problem& p) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const T scale = T(1) / std::sqrt(T(p.d));
  const auto q = convert<T>(p.q), k = convert<T>(p.k), v = convert<T>(p.v);
  const auto dout = convert<T>(p.grad_out);
  std::vector<T> out(p.q_elems(), T(0)), lse(p.rows()), dq(p.q_elems(), T(0));
  std::vector<T> dk(p.kv_elems(), T(0)), dv(p.kv_elems(), T(0)), s(p.m);
  auto visible = [&](int64_t i, int64_t j) {
    if (!p.q_doc.empty() && p.q_doc[i] != p.k_doc[j]) return false;
    return !p.causal || p.k_pos[j] <= p.q_pos[i];
  };
  for (int64_t bi = 0; bi < p.b; ++bi)
    for (int64_t hi = 0; hi < p.h; ++hi) {
      const int64_t kv0 = (bi * p.hkv + hi / (p.h / p.hkv)) * p.m * p.d;
      for (int64_t i = 0; i < p.n; ++i) {
        const int64_t row = (bi * p.h + hi) * p.n + i;
        T mx = neg_inf;
        for (int64_t j = 0; j < p.m; ++j) {
          T dot = 0;
          for (int64_t x = 0; x < p.d; ++x) dot += q[row * p.d + x] * k[kv0 + j * p.d + x];
          s[j] = visible(i, j) ? scale * dot : neg_inf;
          mx = std::max(mx, s[j]);
        }
        if (mx == neg_inf) {
          lse[row] = neg_inf;
          continue;
        }
        T sum = 0;
        for (int64_t j = 0; j < p.m; ++j)
          if (visible(i, j)) sum += std::exp(s[j] - mx);
        lse[row] = mx + std::log(sum);
        for (int64_t j = 0; j < p.m; ++j) {
          if (!visible(i, j)) continue;
          const T pr = std::exp(s[j] - lse[row]);
          for (int64_t x = 0; x < p.d; ++x) out[row * p.d + x] += pr * v[kv0 + j * p.d + x];
        }
        T delta = 0;
        for (int64_t x = 0; x < p.d; ++x) delta += dout[row * p.d + x] * out[row * p.d + x];
        for (int64_t j = 0; j < p.m; ++j) {
          if (!visible(i, j)) continue;
          const T pr = std::exp(s[j] - lse[row]);
          T dp = 0;
          for (int64_t x = 0; x < p.d; ++x) dp += dout[row * p.d + x] * v[kv0 + j * p.d + x];
          const T ds = pr * (dp - delta) * scale;
          for (int64_t x = 0; x < p.d; ++x) {
            dv[kv0 + j * p.d + x] += pr * dout[row * p.d + x];
            dq[row * p.d + x] += ds * k[kv0 + j * p.d + x];
            dk[kv0 + j * p.d + x] += ds * q[row * p.d + x];
          }
        }
      }
    }
  return {to_double(out), to_double(lse), to_double(dq), to_double(dk), to_double(dv)};
}

// The library's float64 reference (forward, then backward with its own O and lse).
inline Result run_reference(const Problem& p) {
  const auto q = convert<double>(p.q), k = convert<double>(p.k), v = convert<double>(p.v);
  const auto dout = convert<double>(p.grad_out);
  Result r;
  r.out.resize(p.q_elems());
  r.lse.resize(p.rows());
  r.grad_q.resize(p.q_elems());
  r.grad_k.resize(p.kv_elems());
  r.grad_v.resize(p.kv_elems());
  reference_forward(q.data(), k.data(), v.data(), p.q_pos.data(), p.k_pos.data(), p.b, p.h, p.hkv,
                    p.n, p.m, p.d, p.causal, 0.0, r.out.data(), r.lse.data(), p.q_doc_ptr(), p.k_doc_ptr());
  reference_backward(q.data(), k.data(), v.data(), r.out.data(), dout.data(), r.lse.data(),
                     p.q_pos.data(), p.k_pos.data(), p.b, p.h, p.hkv, p.n, p.m, p.d, p.causal,
                     0.0, r.grad_q.data(), r.grad_k.data(), r.grad_v.data(), p.q_doc_ptr(), p.k_doc_ptr());
  return r;
}

// Float32 buffers of one kernel run, with BlockParams / ForwardOut / BackwardArgs over them.
struct KernelBuffers {
  std::vector<float> q, k, v, grad_out, out, lse, delta, grad_q, grad_k, grad_v;
  BlockParams params;
  ForwardOut fwd;
  BackwardArgs bwd;

  explicit KernelBuffers(const Problem& p)
      : q(p.q), k(p.k), v(p.v), grad_out(p.grad_out), out(p.q_elems(), 7.0f),
        lse(p.rows(), 7.0f), delta(p.rows()), grad_q(p.q_elems(), 0.0f),
        grad_k(p.kv_elems(), 0.0f), grad_v(p.kv_elems(), 0.0f) {
    // out / lse start as garbage (7): the forward must overwrite every entry.
    params.q = dense_view(q.data(), ElemType::f32, p.b, p.h, p.n, p.d);
    params.k = dense_view(k.data(), ElemType::f32, p.b, p.hkv, p.m, p.d);
    params.v = dense_view(v.data(), ElemType::f32, p.b, p.hkv, p.m, p.d);
    params.q_positions = p.q_pos.data();
    params.k_positions = p.k_pos.data();
    params.q_documents = p.q_doc_ptr();
    params.k_documents = p.k_doc_ptr();
    params.causal = p.causal;
    fwd.out = dense_view(out.data(), ElemType::f32, p.b, p.h, p.n, p.d);
    fwd.lse = dense_rows(lse.data(), p.b, p.h, p.n);
    bwd.out = fwd.out;
    bwd.grad_out = dense_view(grad_out.data(), ElemType::f32, p.b, p.h, p.n, p.d);
    bwd.lse = fwd.lse;
    bwd.delta = dense_rows(delta.data(), p.b, p.h, p.n);
    bwd.grad_q = dense_view(grad_q.data(), ElemType::f32, p.b, p.h, p.n, p.d);
    bwd.grad_k = dense_view(grad_k.data(), ElemType::f32, p.b, p.hkv, p.m, p.d);
    bwd.grad_v = dense_view(grad_v.data(), ElemType::f32, p.b, p.hkv, p.m, p.d);
  }
  KernelBuffers(const KernelBuffers&) = delete;
  KernelBuffers& operator=(const KernelBuffers&) = delete;

  Result result() const {
    return {to_double(out), to_double(lse), to_double(grad_q), to_double(grad_k), to_double(grad_v)};
  }
};

inline Result run_flash(const Problem& p, TileConfig tiles = {}) {
  KernelBuffers kb(p);
  cpu_flash_forward(kb.params, kb.fwd, tiles);
  attention_backward_delta(kb.bwd.out, kb.bwd.grad_out, kb.bwd.delta);
  cpu_flash_backward(kb.params, kb.bwd, tiles);
  return kb.result();
}

inline Result run_materialized(const Problem& p) {
  KernelBuffers kb(p);
  std::vector<float> scores(materialized_scores_elems(kb.params));
  cpu_materialized_forward(kb.params, kb.fwd, scores.data());
  attention_backward_delta(kb.bwd.out, kb.bwd.grad_out, kb.bwd.delta);
  cpu_materialized_backward(kb.params, kb.bwd, scores.data());
  return kb.result();
}

// Largest |a - b|; infinities must match exactly (lse = -inf rows), NaN anywhere is +inf error.
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst;
}
inline double max_abs(const std::vector<double>& a) {
  double worst = 0.0;
  for (double x : a)
    if (std::isfinite(x)) worst = std::max(worst, std::abs(x));
  return worst;
}

// Float32 bound: err(kernel) <= kFactor * err(naive float32) + kFloor * max(1, |ref|).
// kFactor = 4: the tiled kernel sums in blocks (usually *more* accurate than the naive
// sequential sums), 4 leaves room for different rounding of exp (Eigen's vectorised exp is
// within ~2 ulp). kFloor = 2e-6 ~ 16 float32 ulps at 1: covers outputs where the naive error is
// by chance near zero (e.g. tiny rows, all-hidden tensors where both errors are 0).
inline constexpr double kFactor = 4.0;
inline constexpr double kFloor = 2e-6;

// `floor_scale` widens the floor where the result is a difference of larger terms that the
// kernel and the naive code round differently (see its use in test_attention_documents.cpp).
inline void check_close_to_reference(const char* what, const std::vector<double>& kernel,
                                     const std::vector<double>& naive32,
                                     const std::vector<double>& ref, double floor_scale = 1.0) {
  const double err = max_abs_diff(kernel, ref);
  const double naive_err = max_abs_diff(naive32, ref);
  const double bound = kFactor * naive_err + kFloor * std::max({1.0, max_abs(ref), floor_scale});
  INFO(std::string(what) << ": kernel error " << err << ", naive float32 error " << naive_err << ", bound "
            << bound);
  CHECK(err <= bound);
}

// Checks forward (O, lse) and backward (dQ, dK, dV) of `kernel` against the float64 reference
// with the bound above.
// `grad_floor_scale`: floor_scale of dQ and dK (check_close_to_reference).
inline void check_result(const Problem& p, const Result& kernel, double grad_floor_scale = 1.0) {
  const Result ref = run_reference(p);
  const Result naive = run_naive<float>(p);
  check_close_to_reference("O", kernel.out, naive.out, ref.out);
  check_close_to_reference("lse", kernel.lse, naive.lse, ref.lse);
  check_close_to_reference("dQ", kernel.grad_q, naive.grad_q, ref.grad_q, grad_floor_scale);
  check_close_to_reference("dK", kernel.grad_k, naive.grad_k, ref.grad_k, grad_floor_scale);
  check_close_to_reference("dV", kernel.grad_v, naive.grad_v, ref.grad_v);
}

}  // namespace ringplan::kernels::test
