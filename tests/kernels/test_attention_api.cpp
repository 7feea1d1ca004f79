// Tests of the small pieces of kernels/attention.hpp: views, validate() messages, argument
// errors of the kernels, merge_partial with -inf on either side and at large lse,
// attention_backward_delta and the exact visible-pair count.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention.hpp"
#include "tests/kernels/attention_test_util.hpp"

namespace rk = ringplan::kernels;
using rk::test::shape_of;
using rk::test::tiles_of;

TEST_CASE("views: dense_view and dense_rows strides") {
  float x = 0;
  const auto t = rk::dense_view(&x, rk::ElemType::f32, 2, 3, 5, 7);
  CHECK(t.stride_token == 7);
  CHECK(t.stride_head == 35);
  CHECK(t.stride_batch == 105);
  const auto r = rk::dense_rows(&x, 2, 3, 5);
  CHECK(r.stride_head == 5);
  CHECK(r.stride_batch == 15);
}

TEST_CASE("validate: consistent arguments pass, each mistake is named") {
  const rk::test::Problem p = rk::test::make_problem(shape_of(6, 5, 8, 4), 1);
  rk::test::KernelBuffers kb(p);
  CHECK(rk::validate(kb.params, kb.fwd).empty());
  CHECK(rk::validate(kb.params, kb.bwd).empty());

  auto expect = [&](rk::BlockParams bp, rk::ForwardOut fo, const std::string& needle) {
    const std::string msg = rk::validate(bp, fo);
    INFO("message: " << msg);
    CHECK(msg.find(needle) != std::string::npos);
    CHECK_THROWS_AS(rk::cpu_flash_forward(bp, fo), std::invalid_argument);
  };
  {
    auto bp = kb.params;
    bp.k.heads = 3;
    bp.v.heads = 3;
    expect(bp, kb.fwd, "not a multiple of kv heads");
  }
  {
    auto bp = kb.params;
    bp.v.tokens = 4;
    expect(bp, kb.fwd, "must match k");
  }
  {
    auto bp = kb.params;
    bp.k.head_dim = 4;
    expect(bp, kb.fwd, "head_dim differs");
  }
  {
    auto bp = kb.params;
    bp.q.data = nullptr;
    expect(bp, kb.fwd, "q.data is null");
  }
  {
    auto bp = kb.params;
    bp.k_positions = nullptr;
    expect(bp, kb.fwd, "k_positions is null");
  }
  {
    auto bp = kb.params;
    bp.q.stride_token = 3;
    expect(bp, kb.fwd, "stride_token");
  }
  {
    auto fo = kb.fwd;
    fo.out.tokens = 5;
    expect(kb.params, fo, "out has shape");
  }
  {
    auto fo = kb.fwd;
    fo.lse.heads = 2;
    expect(kb.params, fo, "lse is");
  }
  {
    auto fo = kb.fwd;
    fo.out.type = rk::ElemType::bf16;
    expect(kb.params, fo, "must be f32");
  }
  {
    // f16 inputs are valid for validate() (the CUDA path) but not for the CPU kernels.
    auto bp = kb.params;
    bp.q.type = bp.k.type = bp.v.type = rk::ElemType::f16;
    CHECK(rk::validate(bp, kb.fwd).empty());
    try {
      rk::cpu_flash_forward(bp, kb.fwd);
      FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find("cpu_flash_forward: CPU kernels take f32") == 0);
    }
  }
  {
    auto g = kb.bwd;
    g.grad_k.tokens = 4;
    const std::string msg = rk::validate(kb.params, g);
    CHECK(msg.find("grad_k has shape") != std::string::npos);
    CHECK_THROWS_AS(rk::cpu_flash_backward(kb.params, g), std::invalid_argument);
  }
  {
    auto g = kb.bwd;
    g.delta.data = nullptr;
    CHECK(rk::validate(kb.params, g).find("delta.data is null") != std::string::npos);
  }
  CHECK_THROWS_AS(rk::cpu_flash_forward(kb.params, kb.fwd, tiles_of(0, 64, 1)), std::invalid_argument);
  CHECK_THROWS_AS(rk::cpu_flash_backward(kb.params, kb.bwd, tiles_of(64, 64, 0)), std::invalid_argument);
  CHECK_THROWS_AS(rk::cpu_materialized_forward(kb.params, kb.fwd, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(rk::reference_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 3, 2, 1, 1,
                                        4, true, 0.0, nullptr, nullptr),
                  std::invalid_argument);
}

TEST_CASE("flash: empty blocks (no keys, no queries) are valid") {
  rk::test::Problem shape = shape_of(5, 0, 8);
  shape.k_pos.clear();
  shape.q_pos = rk::test::iota_positions(5, 0);
  // make_problem would fill default positions for an empty k_pos, which for m = 0 is empty anyway.
  const auto p = rk::test::make_problem(shape, 3);
  const auto r = rk::test::run_flash(p);
  for (double l : r.lse) CHECK(l == -std::numeric_limits<double>::infinity());
  CHECK(rk::test::max_abs(r.out) == 0.0);
  CHECK(rk::test::max_abs(r.grad_q) == 0.0);
}

namespace {

// One row, head_dim 2: a partial result with the given lse and O = (o0, o1).
struct Partial {
  float out[2];
  float lse;
  rk::ForwardOut view() {
    return {rk::dense_view(out, rk::ElemType::f32, 1, 1, 1, 2), rk::dense_rows(&lse, 1, 1, 1)};
  }
};

}  // namespace

TEST_CASE("merge_partial: finite, one side -inf, both -inf") {
  const float inf = std::numeric_limits<float>::infinity();
  {
    // lse_a = log 1, lse_b = log 3: weights 1/4 and 3/4, lse = log 4.
    Partial a{{1.0f, 2.0f}, 0.0f}, b{{5.0f, -2.0f}, std::log(3.0f)};
    rk::merge_partial(a.view(), b.view());
    CHECK(a.lse == doctest::Approx(std::log(4.0f)).epsilon(1e-6));
    CHECK(a.out[0] == doctest::Approx(0.25 * 1 + 0.75 * 5).epsilon(1e-6));
    CHECK(a.out[1] == doctest::Approx(0.25 * 2 - 0.75 * 2).epsilon(1e-6));
  }
  {
    // Large, far-apart lse values: no overflow (exp of differences only).
    Partial a{{1.0f, 1.0f}, 1000.0f}, b{{3.0f, 3.0f}, -1000.0f};
    rk::merge_partial(a.view(), b.view());
    CHECK(a.lse == doctest::Approx(1000.0f));
    CHECK(a.out[0] == doctest::Approx(1.0f));
  }
  {
    Partial a{{0.0f, 0.0f}, -inf}, b{{5.0f, 6.0f}, 2.0f};
    rk::merge_partial(a.view(), b.view());
    CHECK(a.lse == 2.0f);
    CHECK(a.out[0] == 5.0f);
    CHECK(a.out[1] == 6.0f);
  }
  {
    Partial a{{5.0f, 6.0f}, 2.0f}, b{{0.0f, 0.0f}, -inf};
    rk::merge_partial(a.view(), b.view());
    CHECK(a.lse == 2.0f);
    CHECK(a.out[0] == 5.0f);
  }
  {
    Partial a{{0.0f, 0.0f}, -inf}, b{{0.0f, 0.0f}, -inf};
    rk::merge_partial(a.view(), b.view());
    CHECK(a.lse == -inf);
    CHECK(a.out[0] == 0.0f);
    CHECK(a.out[1] == 0.0f);
  }
  {
    Partial a{{0.0f, 0.0f}, 0.0f}, b{{0.0f, 0.0f}, 0.0f};
    auto bad = b.view();
    bad.out.head_dim = 3;
    CHECK_THROWS_AS(rk::merge_partial(a.view(), bad), std::invalid_argument);
  }
}

TEST_CASE("merge_partial: at large lse the result is a convex combination within ulps of a float64 merge") {
  // Ring attention merges partials whose lse is the largest score plus log of a sum: ~150 for
  // large logits, where one float32 ulp is 1.5e-5. The weights must still sum to 1: a row merged
  // with an equal row comes back bit-exact, every element stays between its two inputs, and the
  // result is within 4 eps * max(|O_a|, |O_b|) of the float64 merge of the same inputs (weights
  // taken as exp(lse_x - lse) of a float32-rounded lse were off by up to 64 eps, and moved 2 in 3
  // elements outside [O_a, O_b]).
  const uint64_t seed = rk::test::test_seed();
  MESSAGE("seed " << seed);
  INFO("seed " << seed << " (set RINGPLAN_TEST_SEED to replay)");
  const int64_t rows = 4096, d = 8;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> lse_of(100.0f, 200.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> oa(rows * d), ob(rows * d), la(rows), lb(rows);
  for (int64_t r = 0; r < rows; ++r) {
    la[r] = lse_of(rng);
    // A quarter of the rows at lse distances of a few units (both weights matter), a quarter
    // with equal O on both sides.
    lb[r] = r % 4 == 0 ? la[r] + 4.0f * normal(rng) : lse_of(rng);
    for (int64_t x = r * d; x < (r + 1) * d; ++x) {
      oa[x] = normal(rng);
      ob[x] = r % 4 == 1 ? oa[x] : normal(rng);
    }
  }
  std::vector<float> out = oa, lse = la;
  rk::merge_partial({rk::dense_view(out.data(), rk::ElemType::f32, 1, 1, rows, d), rk::dense_rows(lse.data(), 1, 1, rows)},
                    {rk::dense_view(ob.data(), rk::ElemType::f32, 1, 1, rows, d), rk::dense_rows(lb.data(), 1, 1, rows)});
  const double eps = std::numeric_limits<float>::epsilon();
  int64_t outside = 0, inexact_equal = 0;
  double worst_ulps = 0.0, worst_lse_ulps = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const double a = la[r], b = lb[r], hi = std::max(a, b);
    const double exact_lse = hi + std::log(std::exp(a - hi) + std::exp(b - hi));
    worst_lse_ulps = std::max(worst_lse_ulps, std::abs(lse[r] - exact_lse) / (eps * std::abs(exact_lse)));
    for (int64_t x = r * d; x < (r + 1) * d; ++x) {
      const double exact = std::exp(a - exact_lse) * oa[x] + std::exp(b - exact_lse) * ob[x];
      const double size = std::max(std::abs(oa[x]), std::abs(ob[x]));
      worst_ulps = std::max(worst_ulps, std::abs(out[x] - exact) / (eps * std::max(size, 1e-30)));
      if (out[x] < std::min(oa[x], ob[x]) || out[x] > std::max(oa[x], ob[x])) ++outside;
      if (r % 4 == 1 && out[x] != oa[x]) ++inexact_equal;
    }
  }
  INFO("worst O error " << worst_ulps << " x eps * max(|O_a|, |O_b|), lse error " << worst_lse_ulps
                        << " x eps * |lse| (eps = float32 epsilon); " << outside << " elements outside [O_a, O_b], " << inexact_equal
                        << " elements of equal-O rows changed");
  CHECK(worst_ulps <= 4.0);
  CHECK(worst_lse_ulps <= 1.0);
  CHECK(outside == 0);
  CHECK(inexact_equal == 0);
}

TEST_CASE("attention_backward_delta: D = rowsum(dO * O)") {
  std::vector<float> o = {1, 2, 3, 4, 5, 6}, dout = {1, 0, -1, 2, 2, 2};
  std::vector<float> d(2);
  rk::attention_backward_delta(rk::dense_view(o.data(), rk::ElemType::f32, 1, 1, 2, 3),
                               rk::dense_view(dout.data(), rk::ElemType::f32, 1, 1, 2, 3),
                               rk::dense_rows(d.data(), 1, 1, 2));
  CHECK(d[0] == doctest::Approx(1 - 3));
  CHECK(d[1] == doctest::Approx(2 * (4 + 5 + 6)));
}

TEST_CASE("visible_pairs: exact count for sharded positions and the causal/non-causal totals") {
  using rk::test::Scheme;
  for (Scheme s : {Scheme::contiguous, Scheme::zigzag, Scheme::striped}) {
    int64_t total = 0;
    for (int64_t qr = 0; qr < 4; ++qr)
      for (int64_t kr = 0; kr < 4; ++kr) {
        const auto qp = rk::test::shard_positions(s, 96, 4, qr);
        const auto kp = rk::test::shard_positions(s, 96, 4, kr);
        int64_t brute = 0;
        for (int64_t a : qp)
          for (int64_t b : kp) brute += b <= a;
        const int64_t got = rk::visible_pairs(qp.data(), 24, kp.data(), 24, true);
        CHECK(got == brute);
        total += got;
      }
    CHECK(total == 96 * 97 / 2);  // every (i, j) with j <= i exactly once over all rank pairs
  }
  const auto pos = rk::test::iota_positions(10, 0);
  CHECK(rk::visible_pairs(pos.data(), 10, pos.data(), 10, false) == 100);
  CHECK(rk::forward_flops(1, 2, 55, 64) == 4.0 * 2 * 55 * 64);
  CHECK_THROWS_AS(rk::visible_pairs(nullptr, 3, pos.data(), 10, true), std::invalid_argument);
}
