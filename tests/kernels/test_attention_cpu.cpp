// Tests of the CPU attention kernels against the float64 reference, for every mask case the
// ring runtime produces, plus the ring invariants (merge of per-block forwards, sum of per-block
// backwards), strided views, threads and the materialised variant.
// Run: ctest -R kernels   (or build/<dir>/tests/kernels/test_kernels -s); set
// RINGPLAN_TEST_SEED=<seed> to replay the random inputs of a failed run.
#include <doctest/doctest.h>

#include <cmath>
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
