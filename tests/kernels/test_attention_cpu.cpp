// Tests of the CPU attention kernels against the float64 reference, for every mask case the
// ring runtime produces, plus the ring invariants (merge of per-block forwards, sum of per-block
// backwards), strided views, threads and the materialised variant.
// Run: ctest -R kernels   (or build/<dir>/tests/kernels/test_kernels -s); set
// RINGPLAN_TEST_SEED=<seed> to replay the random inputs of a failed run.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/attention.hpp"
#include "tests/kernels/attention_test_util.hpp"

namespace rk = ringplan::kernels;
using rk::test::Problem;
using rk::test::Scheme;
using rk::test::shape_of;
using rk::test::tiles_of;

namespace {

// Seeds, prints the seed, runs flash forward+backward and checks it against the reference.
void check_flash(Problem shape, rk::TileConfig tiles = {}) {
  const uint64_t seed = rk::test::test_seed();
  MESSAGE("seed " << seed);
  INFO("seed " << seed << " (set RINGPLAN_TEST_SEED to replay)");
  const Problem p = rk::test::make_problem(shape, seed);
  rk::test::check_result(p, rk::test::run_flash(p, tiles));
}

Problem sharded(Scheme s, int64_t q_rank, int64_t k_rank) {
  // L = 296, P = 4: 74 tokens per rank, not a multiple of any tile; zigzag chunks of 37.
  Problem p;
  p.q_pos = rk::test::shard_positions(s, 296, 4, q_rank);
  p.k_pos = rk::test::shard_positions(s, 296, 4, k_rank);
  p.n = static_cast<int64_t>(p.q_pos.size());
  p.m = static_cast<int64_t>(p.k_pos.size());
  return p;
}

bool all_finite(const std::vector<double>& x, bool allow_neg_inf = false) {
  for (double e : x)
    if (std::isnan(e) || (std::isinf(e) && !(allow_neg_inf && e < 0))) return false;
  return true;
}

}  // namespace

TEST_CASE("reference: float64 reference agrees with an independent naive float64 implementation") {
  const Problem p = rk::test::make_problem(shape_of(9, 13, 7, 4, 2, 2), 11);
  const auto ref = rk::test::run_reference(p);
  const auto naive = rk::test::run_naive<double>(p);
  CHECK(rk::test::max_abs_diff(ref.out, naive.out) < 1e-12);
  CHECK(rk::test::max_abs_diff(ref.lse, naive.lse) < 1e-12);
  CHECK(rk::test::max_abs_diff(ref.grad_q, naive.grad_q) < 1e-12);
  CHECK(rk::test::max_abs_diff(ref.grad_k, naive.grad_k) < 1e-12);
  CHECK(rk::test::max_abs_diff(ref.grad_v, naive.grad_v) < 1e-12);
}

TEST_CASE("reference: backward matches finite differences of the forward") {
  // loss = sum(W * O) so dL/dO = W; central differences in float64 with eps = 1e-6 have
  // truncation error ~eps^2 and rounding ~1e-16/eps: agreement to 1e-7 relative is expected.
  Problem shape = shape_of(4, 5, 3, 2, 1);
  shape.q_pos = {1, 2, 5, 7};
  shape.k_pos = {0, 2, 3, 4, 6};  // query at 1 sees one key; the one at 7 sees all: partial rows
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  const Problem p = rk::test::make_problem(shape, seed);
  auto q = rk::test::convert<double>(p.q), k = rk::test::convert<double>(p.k),
       v = rk::test::convert<double>(p.v);
  const auto w = rk::test::convert<double>(p.grad_out);
  auto loss = [&]() {
    std::vector<double> out(p.q_elems()), lse(p.rows());
    rk::reference_forward(q.data(), k.data(), v.data(), p.q_pos.data(), p.k_pos.data(), p.b, p.h,
                          p.hkv, p.n, p.m, p.d, p.causal, 0.0, out.data(), lse.data());
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += w[i] * out[i];
    return l;
  };
  const auto ref = rk::test::run_reference(p);
  auto check_grad = [&](const char* name, std::vector<double>& x, const std::vector<double>& g) {
    const double eps = 1e-6;
    for (size_t i = 0; i < x.size(); ++i) {
      const double keep = x[i];
      x[i] = keep + eps;
      const double up = loss();
      x[i] = keep - eps;
      const double down = loss();
      x[i] = keep;
      const double fd = (up - down) / (2 * eps);
      INFO(name << "[" << i << "]: analytic " << g[i] << ", finite difference " << fd);
      CHECK(std::abs(fd - g[i]) <= 1e-7 * std::max(1.0, std::abs(fd)));
    }
  };
  check_grad("dQ", q, ref.grad_q);
  check_grad("dK", k, ref.grad_k);
  check_grad("dV", v, ref.grad_v);
}

TEST_CASE("flash: all keys visible (keys before queries), n, m not multiples of the tile") {
  Problem p = shape_of(67, 131);
  p.q_pos = rk::test::iota_positions(67, 1000);
  check_flash(p);
}

TEST_CASE("flash: all keys hidden gives O = 0, lse = -inf, zero gradients, no NaN") {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  Problem shape = shape_of(67, 131);
  shape.q_pos = rk::test::iota_positions(67, 0);
  shape.k_pos = rk::test::iota_positions(131, 500);
  const Problem p = rk::test::make_problem(shape, seed);
  const auto r = rk::test::run_flash(p);
  CHECK(rk::test::max_abs(r.out) == 0.0);
  CHECK(all_finite(r.out));
  for (double l : r.lse) CHECK(l == -std::numeric_limits<double>::infinity());
  CHECK(rk::test::max_abs(r.grad_q) == 0.0);
  CHECK(rk::test::max_abs(r.grad_k) == 0.0);
  CHECK(rk::test::max_abs(r.grad_v) == 0.0);
  CHECK(all_finite(r.grad_q));
  CHECK(all_finite(r.grad_k));
  CHECK(all_finite(r.grad_v));
}

TEST_CASE("flash: causal diagonal (same positions for queries and keys)") {
  check_flash(shape_of(131, 131));
}

TEST_CASE("flash: rows with no visible key inside a partial block stay exactly zero") {
  // Keys start at position 40: queries 0..39 see nothing, the rest see a growing prefix.
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  Problem shape = shape_of(100, 70);
  shape.q_pos = rk::test::iota_positions(100, 0);
  shape.k_pos = rk::test::iota_positions(70, 40);
  const Problem p = rk::test::make_problem(shape, seed);
  const auto r = rk::test::run_flash(p);
  rk::test::check_result(p, r);
  for (int64_t h = 0; h < p.h; ++h)
    for (int64_t i = 0; i < 40; ++i) {
      CHECK(r.lse[h * p.n + i] == -std::numeric_limits<double>::infinity());
      for (int64_t x = 0; x < p.d; ++x) {
        CHECK(r.out[(h * p.n + i) * p.d + x] == 0.0);
        CHECK(r.grad_q[(h * p.n + i) * p.d + x] == 0.0);
      }
    }
  CHECK(all_finite(r.out));
  CHECK(all_finite(r.lse, /*allow_neg_inf=*/true));
}

TEST_CASE("flash: contiguous sharding, Q of one rank against K of another") {
  for (auto [qr, kr] : {std::pair{2, 1}, {1, 2}, {3, 0}, {2, 2}}) {
    CAPTURE(qr);
    CAPTURE(kr);
    check_flash(sharded(Scheme::contiguous, qr, kr));
  }
}

TEST_CASE("flash: zigzag sharding, Q of one rank against K of another") {
  for (auto [qr, kr] : {std::pair{2, 1}, {1, 2}, {0, 3}, {3, 0}, {1, 1}}) {
    CAPTURE(qr);
    CAPTURE(kr);
    check_flash(sharded(Scheme::zigzag, qr, kr));
  }
}

TEST_CASE("flash: striped sharding, Q of one rank against K of another") {
  for (auto [qr, kr] : {std::pair{2, 1}, {1, 2}, {0, 3}, {3, 3}}) {
    CAPTURE(qr);
    CAPTURE(kr);
    check_flash(sharded(Scheme::striped, qr, kr));
  }
}

TEST_CASE("flash: non-causal") {
  Problem p = shape_of(67, 131);
  p.causal = false;
  check_flash(p);
}

TEST_CASE("flash: GQA with 8 query heads on 2 KV heads, batch 2") {
  check_flash(shape_of(67, 131, 64, 8, 2, 2));
}

TEST_CASE("flash: head dims 128 and 40, odd tile sizes") {
  check_flash(shape_of(67, 131, 128, 2, 1));
  check_flash(shape_of(67, 131, 40));
  check_flash(shape_of(67, 131, 40), tiles_of(17, 29, 1));
  check_flash(shape_of(5, 3, 1), tiles_of(2, 1, 1));
}

TEST_CASE("flash: K/V split into pieces, forward per piece + merge_partial == whole sequence") {
  // The ring forward: the same queries meet the KV blocks one by one, in an arbitrary order.
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  const Problem whole = rk::test::make_problem(shape_of(67, 131, 64, 4), seed);
  const int64_t cuts[] = {0, 50, 51, 110, 131};  // pieces of 50, 1, 59, 21 keys
  std::vector<float> acc_out(whole.q_elems(), 0.0f), acc_lse(whole.rows(), rk::kNegInf);
  const rk::ForwardOut acc{rk::dense_view(acc_out.data(), rk::ElemType::f32, whole.b, whole.h, whole.n, whole.d),
                           rk::dense_rows(acc_lse.data(), whole.b, whole.h, whole.n)};
  for (int piece : {2, 0, 3, 1}) {
    Problem part = whole;
    part.m = cuts[piece + 1] - cuts[piece];
    part.k_pos.assign(whole.k_pos.begin() + cuts[piece], whole.k_pos.begin() + cuts[piece + 1]);
    part.k.clear();
    part.v.clear();
    for (int64_t kh = 0; kh < whole.hkv; ++kh) {
      const int64_t base = kh * whole.m * whole.d;
      part.k.insert(part.k.end(), whole.k.begin() + base + cuts[piece] * whole.d,
                    whole.k.begin() + base + cuts[piece + 1] * whole.d);
      part.v.insert(part.v.end(), whole.v.begin() + base + cuts[piece] * whole.d,
                    whole.v.begin() + base + cuts[piece + 1] * whole.d);
    }
    rk::test::KernelBuffers kb(part);
    rk::cpu_flash_forward(kb.params, kb.fwd);
    rk::merge_partial(acc, kb.fwd);
  }
  const auto ref = rk::test::run_reference(whole);
  const auto naive = rk::test::run_naive<float>(whole);
  rk::test::check_close_to_reference("merged O", rk::test::to_double(acc_out), naive.out, ref.out);
  rk::test::check_close_to_reference("merged lse", rk::test::to_double(acc_lse), naive.lse, ref.lse);
}

namespace {

// Keys [j0, j1) of `whole` (same queries), as its own problem.
Problem key_range(const Problem& whole, int64_t j0, int64_t j1) {
  Problem part = whole;
  part.m = j1 - j0;
  part.k_pos.assign(whole.k_pos.begin() + j0, whole.k_pos.begin() + j1);
  part.k.clear();
  part.v.clear();
  for (int64_t bk = 0; bk < whole.b * whole.hkv; ++bk) {
    const int64_t base = bk * whole.m * whole.d;
    part.k.insert(part.k.end(), whole.k.begin() + base + j0 * whole.d, whole.k.begin() + base + j1 * whole.d);
    part.v.insert(part.v.end(), whole.v.begin() + base + j0 * whole.d, whole.v.begin() + base + j1 * whole.d);
  }
  return part;
}

// Worst row's error: max over rows of (row's max |x - ref|) / denominator. Absolute (denominator
// 1) for O, whose rows are ~1. Relative for dQ, whose rows span many orders of magnitude; the
// denominator is the row's max |ref|, but at least 1% of the tensor's: a near one-hot row has
// dQ ~ 0 as the difference of two nearly equal terms (dP - D), and float32 cannot resolve it
// below the size of those terms, whatever the merge does.
double worst_row_error(const std::vector<double>& x, const std::vector<double>& ref, int64_t rows, int64_t d,
                       bool relative) {
  const double floor = 0.01 * rk::test::max_abs(ref);
  double worst = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double err = 0.0, mag = 0.0;
    for (int64_t c = r * d; c < (r + 1) * d; ++c) {
      if (!std::isfinite(x[c])) return std::numeric_limits<double>::infinity();
      err = std::max(err, std::abs(x[c] - ref[c]));
      mag = std::max(mag, std::abs(ref[c]));
    }
    worst = std::max(worst, relative ? err / std::max(mag, floor) : err);
  }
  return worst;
}

struct RingErrors {
  double out = 0.0;   // worst row's max |O - O_ref|
  double dq = 0.0;    // worst row's relative dQ error (see worst_row_error)
};

// The ring forward of `whole` with its keys in `blocks` contiguous blocks (forward per block,
// merge_partial into an accumulator), then the backward over all keys with the merged O and
// lse, both compared with the float64 reference.
RingErrors ring_errors(const Problem& whole, int64_t blocks, const rk::test::Result& ref) {
  std::vector<float> acc_out(whole.q_elems(), 0.0f), acc_lse(whole.rows(), rk::kNegInf);
  const rk::ForwardOut acc{rk::dense_view(acc_out.data(), rk::ElemType::f32, whole.b, whole.h, whole.n, whole.d),
                           rk::dense_rows(acc_lse.data(), whole.b, whole.h, whole.n)};
  for (int64_t blk = 0; blk < blocks; ++blk) {
    rk::test::KernelBuffers kb(key_range(whole, blk * whole.m / blocks, (blk + 1) * whole.m / blocks));
    rk::cpu_flash_forward(kb.params, kb.fwd);
    rk::merge_partial(acc, kb.fwd);
  }
  rk::test::KernelBuffers full(whole);
  std::copy(acc_out.begin(), acc_out.end(), full.out.begin());  // the views point into these buffers
  std::copy(acc_lse.begin(), acc_lse.end(), full.lse.begin());
  rk::attention_backward_delta(full.bwd.out, full.bwd.grad_out, full.bwd.delta);
  rk::cpu_flash_backward(full.params, full.bwd);
  return {worst_row_error(rk::test::to_double(acc_out), ref.out, whole.rows(), whole.d, false),
          worst_row_error(rk::test::to_double(full.grad_q), ref.grad_q, whole.rows(), whole.d, true)};
}

}  // namespace

TEST_CASE("flash: merge_partial keeps its precision at large logits (scores up to +-150, P = 1..8)") {
  // The ring forward at large logits: the keys in P = 1..8 blocks, forward per block, merged
  // with merge_partial, then the backward with the merged O and lse, against float64.
  // lse ~ 150 has a float32 ulp of 1.5e-5. A merge that weighs with exp(lse_x - lse) of the
  // float32-rounded merged lse has weights that miss 1 by up to that much, once per merge; D =
  // rowsum(dO * O) then carries that error into dP - D, which cancels for the near one-hot rows
  // of large logits. Measured with that merge: dQ's worst relative row error went from 4.5e-5
  // (P = 1) to 3.7e-4 .. 2e-3 (P >= 2), and O's from 4e-7 to 1.6e-5 .. 3.7e-5.
  // With the sigmoid form (a convex combination) dQ stays at its P = 1 error. O cannot: the
  // partials' lse are float32 too (the ring stores them so), and an lse error of half an ulp
  // moves a weight w by w (1 - w) times it, so each merge may add up to ulp(lse) / 2 * max |O|
  // whatever the merge formula (merging the same float32 partials in float64 errs as much).
  // O's bound is 4x its P = 1 error plus that one-merge term; merge_partial's own rounding is
  // bounded tightly in test_attention_api.cpp ("merge_partial: at large lse ...").
  const uint64_t seed = rk::test::test_seed();
  MESSAGE("seed " << seed);
  INFO("seed " << seed << " (set RINGPLAN_TEST_SEED to replay)");
  Problem whole = shape_of(48, 256, 64, 2, 2);
  whole.causal = false;  // every block holds keys of every row: each row goes through 7 merges
  whole = rk::test::make_problem(whole, seed);
  // Q and K are small integers, so that every score is exact in float32 (scale = 1/8 for
  // d = 64, sums below 2^24): the unsplit forward then errs only by the rounding of exp and of
  // its sums, and what splitting adds is the merge's own error. Each query row is multiplied by
  // the integer that brings its largest |score| closest to 150.
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> small(-3, 3);
  for (float& x : whole.q) x = float(small(rng));
  for (float& x : whole.k) x = float(small(rng));
  for (int64_t bh = 0; bh < whole.b * whole.h; ++bh) {
    const int64_t kv0 = (bh / whole.h * whole.hkv + bh % whole.h / (whole.h / whole.hkv)) * whole.m * whole.d;
    for (int64_t i = 0; i < whole.n; ++i) {
      float* q = whole.q.data() + (bh * whole.n + i) * whole.d;
      int64_t peak = 1;
      for (int64_t j = 0; j < whole.m; ++j) {
        int64_t dot = 0;
        for (int64_t x = 0; x < whole.d; ++x) dot += int64_t(q[x]) * int64_t(whole.k[kv0 + j * whole.d + x]);
        peak = std::max<int64_t>(peak, dot < 0 ? -dot : dot);
      }
      const double factor = std::max<double>(1.0, std::round(150.0 * 8.0 / double(peak)));
      for (int64_t x = 0; x < whole.d; ++x) q[x] = float(q[x] * factor);
    }
  }
  const rk::test::Result ref = rk::test::run_reference(whole);
  const RingErrors one = ring_errors(whole, 1, ref);
  // One merge's worth of float32-lse rounding (see above): ulp(max lse) / 2 * max |O|.
  const double max_lse = *std::max_element(ref.lse.begin(), ref.lse.end());
  const double lse_floor = 0.5 * std::ldexp(1.0, std::ilogb(max_lse) - 23) * rk::test::max_abs(ref.out);
  MESSAGE("max lse " << max_lse << ", max |O| " << rk::test::max_abs(ref.out) << ", one-merge lse floor " << lse_floor);
  MESSAGE("P = 1: worst row O error " << one.out << ", dQ relative error " << one.dq);
  for (int64_t blocks = 2; blocks <= 8; ++blocks) {
    const RingErrors split = ring_errors(whole, blocks, ref);
    MESSAGE("P = " << blocks << ": worst row O error " << split.out << ", dQ relative error " << split.dq);
    INFO("P = " << blocks << ": O error " << split.out << " (P = 1: " << one.out << "), dQ relative error "
                << split.dq << " (P = 1: " << one.dq << ")");
    // dQ: 4x its P = 1 error, plus 1e-5 for a P = 1 error near 0.
    CHECK(split.out <= 4.0 * one.out + lse_floor);
    CHECK(split.dq <= 4.0 * one.dq + 1e-5);
  }
}

TEST_CASE("flash: backward per KV piece with the final lse sums to the whole gradient") {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  const Problem whole = rk::test::make_problem(shape_of(67, 131, 64, 4), seed);
  rk::test::KernelBuffers full(whole);
  rk::cpu_flash_forward(full.params, full.fwd);
  rk::attention_backward_delta(full.bwd.out, full.bwd.grad_out, full.bwd.delta);
  // Pieces are views into the whole K, V, dK, dV (token offset into the same buffers), as a
  // ring step does with a received block; dQ accumulates over pieces.
  std::vector<float> dq(whole.q_elems(), 0.0f), dk(whole.kv_elems(), 0.0f), dv(whole.kv_elems(), 0.0f);
  const int64_t cuts[] = {0, 64, 100, 131};
  for (int piece = 0; piece < 3; ++piece) {
    const int64_t j0 = cuts[piece], len = cuts[piece + 1] - cuts[piece];
    rk::BlockParams bp = full.params;
    auto shift = [&](rk::TensorView t, float* base) {
      t.data = base + j0 * t.stride_token;
      t.tokens = len;
      return t;
    };
    bp.k = shift(full.params.k, full.k.data());
    bp.v = shift(full.params.v, full.v.data());
    bp.k_positions = whole.k_pos.data() + j0;
    rk::BackwardArgs g = full.bwd;
    g.grad_q = rk::dense_view(dq.data(), rk::ElemType::f32, whole.b, whole.h, whole.n, whole.d);
    g.grad_k = shift(rk::dense_view(dk.data(), rk::ElemType::f32, whole.b, whole.hkv, whole.m, whole.d), dk.data());
    g.grad_v = shift(rk::dense_view(dv.data(), rk::ElemType::f32, whole.b, whole.hkv, whole.m, whole.d), dv.data());
    rk::cpu_flash_backward(bp, g);
  }
  rk::cpu_flash_backward(full.params, full.bwd);
  // Same float32 operations on the same tiles up to the tile boundaries of the pieces: the sums
  // differ only by rounding order.
  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    double worst = 0, scale = 1;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, double(std::abs(a[i] - b[i])));
      scale = std::max(scale, double(std::abs(b[i])));
    }
    return worst <= 1e-5 * scale;
  };
  CHECK(close(dq, full.grad_q));
  CHECK(close(dk, full.grad_k));
  CHECK(close(dv, full.grad_v));
}

TEST_CASE("flash: strided views into larger buffers ([b, n, H, d] layout with padding)") {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  const Problem p = rk::test::make_problem(shape_of(67, 131, 40, 4, 2, 2), seed);
  const auto dense = rk::test::run_flash(p);
  // Token-major layout: element (b, h, t, x) at b*stride_b + t*stride_t + h*stride_h + x, with
  // 3 floats of padding after each head's row and 5 after each token; sentinels stay untouched.
  const float sentinel = 12345.0f;
  auto strided = [&](int64_t heads, int64_t tokens) {
    rk::TensorView t;
    t.type = rk::ElemType::f32;
    t.batch = p.b;
    t.heads = heads;
    t.tokens = tokens;
    t.head_dim = p.d;
    t.stride_head = p.d + 3;
    t.stride_token = heads * (p.d + 3) + 5;
    t.stride_batch = tokens * t.stride_token + 7;
    return t;
  };
  auto buffer_for = [&](rk::TensorView& t) {
    auto buf = std::make_unique<std::vector<float>>(t.batch * t.stride_batch, sentinel);
    t.data = buf->data();
    return buf;
  };
  auto at = [](const rk::TensorView& t, int64_t b, int64_t h, int64_t i) {
    return static_cast<float*>(t.data) + b * t.stride_batch + h * t.stride_head + i * t.stride_token;
  };
  auto copy_in = [&](rk::TensorView& t, const std::vector<float>& src) {
    for (int64_t b = 0; b < t.batch; ++b)
      for (int64_t h = 0; h < t.heads; ++h)
        for (int64_t i = 0; i < t.tokens; ++i)
          for (int64_t x = 0; x < t.head_dim; ++x)
            at(t, b, h, i)[x] = src[((b * t.heads + h) * t.tokens + i) * t.head_dim + x];
  };
  auto copy_out = [&](const rk::TensorView& t) {
    std::vector<double> dst;
    for (int64_t b = 0; b < t.batch; ++b)
      for (int64_t h = 0; h < t.heads; ++h)
        for (int64_t i = 0; i < t.tokens; ++i)
          for (int64_t x = 0; x < t.head_dim; ++x) dst.push_back(at(t, b, h, i)[x]);
    return dst;
  };
  auto q = strided(p.h, p.n), k = strided(p.hkv, p.m), v = strided(p.hkv, p.m), o = strided(p.h, p.n),
       dout = strided(p.h, p.n), dq = strided(p.h, p.n), dk = strided(p.hkv, p.m), dv = strided(p.hkv, p.m);
  auto bq = buffer_for(q), bk = buffer_for(k), bv = buffer_for(v), bo = buffer_for(o),
       bdo = buffer_for(dout), bdq = buffer_for(dq), bdk = buffer_for(dk), bdv = buffer_for(dv);
  copy_in(q, p.q);
  copy_in(k, p.k);
  copy_in(v, p.v);
  copy_in(dout, p.grad_out);
  for (auto* t : {&dq, &dk, &dv}) copy_in(*t, std::vector<float>(t->batch * t->heads * t->tokens * t->head_dim, 0.0f));
  std::vector<float> lse(p.rows()), delta(p.rows());
  const rk::BlockParams bp{q, k, v, p.q_pos.data(), p.k_pos.data(), true, 0.0f};
  const rk::ForwardOut fo{o, rk::dense_rows(lse.data(), p.b, p.h, p.n)};
  rk::cpu_flash_forward(bp, fo, tiles_of(32, 48, 2));
  const rk::RowStatsView drow = rk::dense_rows(delta.data(), p.b, p.h, p.n);
  rk::attention_backward_delta(o, dout, drow);
  rk::cpu_flash_backward(bp, {o, dout, fo.lse, drow, dq, dk, dv}, tiles_of(32, 48, 2));
  // Tiles differ from the dense run (32x48 vs 64x64), so compare within float32 rounding.
  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    return rk::test::max_abs_diff(a, b) <= 1e-5 * std::max(1.0, rk::test::max_abs(b));
  };
  CHECK(near(copy_out(o), dense.out));
  CHECK(near(rk::test::to_double(lse), dense.lse));
  CHECK(near(copy_out(dq), dense.grad_q));
  CHECK(near(copy_out(dk), dense.grad_k));
  CHECK(near(copy_out(dv), dense.grad_v));
  // Padding between rows, heads and batches is never written.
  for (auto* t : {&o, &dq, &dk, &dv}) {
    int64_t touched_padding = 0;
    std::vector<char> inside(t->batch * t->stride_batch, 0);
    for (int64_t b = 0; b < t->batch; ++b)
      for (int64_t h = 0; h < t->heads; ++h)
        for (int64_t i = 0; i < t->tokens; ++i)
          for (int64_t x = 0; x < t->head_dim; ++x)
            inside[at(*t, b, h, i) + x - static_cast<float*>(t->data)] = 1;
    const float* base = static_cast<float*>(t->data);
    for (size_t e = 0; e < inside.size(); ++e)
      if (!inside[e] && base[e] != sentinel) ++touched_padding;
    CHECK(touched_padding == 0);
  }
}

TEST_CASE("flash: threads give the same result as one thread") {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  const Problem p = rk::test::make_problem(shape_of(67, 131, 64, 4, 2, 2), seed);
  const auto one = rk::test::run_flash(p, tiles_of(64, 64, 1));
  const auto three = rk::test::run_flash(p, tiles_of(64, 64, 3));
  // The forward does identical work per query tile: bit-identical. The backward sums dQ of
  // different key tiles in another order: equal to rounding.
  CHECK(rk::test::max_abs_diff(one.out, three.out) == 0.0);
  CHECK(rk::test::max_abs_diff(one.lse, three.lse) == 0.0);
  CHECK(rk::test::max_abs_diff(one.grad_q, three.grad_q) <= 1e-5 * std::max(1.0, rk::test::max_abs(one.grad_q)));
  CHECK(rk::test::max_abs_diff(one.grad_k, three.grad_k) == 0.0);
  CHECK(rk::test::max_abs_diff(one.grad_v, three.grad_v) == 0.0);
}

TEST_CASE("materialized: equals flash and the reference (causal diagonal, GQA, partial rows)") {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  Problem shape = shape_of(100, 70, 40, 4);
  shape.q_pos = rk::test::iota_positions(100, 0);
  shape.k_pos = rk::test::iota_positions(70, 40);
  const Problem p = rk::test::make_problem(shape, seed);
  const auto mat = rk::test::run_materialized(p);
  rk::test::check_result(p, mat);
  const auto flash = rk::test::run_flash(p);
  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    return rk::test::max_abs_diff(a, b) <= 1e-5 * std::max(1.0, rk::test::max_abs(b));
  };
  CHECK(near(mat.out, flash.out));
  CHECK(near(mat.lse, flash.lse));
  CHECK(near(mat.grad_q, flash.grad_q));
  CHECK(near(mat.grad_k, flash.grad_k));
  CHECK(near(mat.grad_v, flash.grad_v));
}
