// Tests of the small pieces of kernels/attention.hpp: views, validate() messages, argument
// errors of the kernels, merge_partial with -inf on either side, attention_backward_delta and
// the exact visible-pair count.
#include <doctest/doctest.h>

#include <cmath>
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
