// Packed documents in the CPU attention kernels: query i sees key j iff they are in the same
// document and (causal) pos_j <= pos_i. Flash (forward, backward, several tile shapes and
// threads) and materialised kernels against the float64 reference and the naive float32
// yardstick (attention_test_util.hpp bounds), with documents crossing the shard boundaries of
// contiguous, zigzag and striped sharding; fully hidden tiles are skipped (their keys are never
// read); visible_pairs counts only same-document pairs.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/cpu_common.hpp"
#include "tests/kernels/attention_test_util.hpp"

namespace rk = ringplan::kernels;
using rk::test::Problem;
using rk::test::Scheme;
using rk::test::shape_of;
using rk::test::tiles_of;

namespace {

// Document id of each global position for documents of the given lengths (in sequence order).
std::vector<int64_t> doc_of_positions(const std::vector<int64_t>& lengths, const std::vector<int64_t>& positions) {
  std::vector<int64_t> id_at;
  for (size_t d = 0; d < lengths.size(); ++d) id_at.insert(id_at.end(), static_cast<size_t>(lengths[d]), int64_t(d));
  std::vector<int64_t> out;
  for (int64_t p : positions) out.push_back(id_at.at(static_cast<size_t>(p)));
  return out;
}

// Documents of L = 296 tokens (the `sharded` layout of test_attention_cpu.cpp: P = 4, 74 tokens
// per rank, zigzag chunks of 37): lengths 1, 30, 70, 5, 100, 90 cross every shard boundary
// (74, 148, 222 and the zigzag chunk boundaries) and include a one-token document.
const std::vector<int64_t> kLengths296{1, 30, 70, 5, 100, 90};

Problem with_documents(Problem p, const std::vector<int64_t>& lengths) {
  p.q_doc = doc_of_positions(lengths, p.q_pos);
  p.k_doc = doc_of_positions(lengths, p.k_pos);
  return p;
}

Problem self_attention(int64_t L, const std::vector<int64_t>& lengths, bool causal, int64_t h = 2, int64_t hkv = 2) {
  Problem p = shape_of(L, L, 32, h, hkv);
  p.q_pos = rk::test::iota_positions(L, 0);
  p.k_pos = p.q_pos;
  p.causal = causal;
  return with_documents(p, lengths);
}

Problem sharded_docs(Scheme s, int64_t q_rank, int64_t k_rank, bool causal) {
  Problem p;
  p.d = 32;
  p.q_pos = rk::test::shard_positions(s, 296, 4, q_rank);
  p.k_pos = rk::test::shard_positions(s, 296, 4, k_rank);
  p.n = static_cast<int64_t>(p.q_pos.size());
  p.m = static_cast<int64_t>(p.k_pos.size());
  p.causal = causal;
  return with_documents(p, kLengths296);
}

// Largest |D_i| = |dO_i . O_i| over query rows when every query sees exactly one key, its own
// (O_i = V_i). There dS = P (dP - D) = dO.V - dO.O is a difference of two equal float32 dot
// products that the kernel and the naive code sum in different orders, so dQ and dK are
// rounding noise of |D| times |K| or |Q| around an exact 0: the floor scales with |D|.
double single_key_cancellation(const Problem& p) {
  double worst = 0;
  const int64_t group = p.h / p.hkv;
  for (int64_t bh = 0; bh < p.b * p.h; ++bh)
    for (int64_t i = 0; i < p.n; ++i) {
      const int64_t kv_row = ((bh / p.h) * p.hkv + (bh % p.h) / group) * p.m + i;
      double d = 0;
      for (int64_t x = 0; x < p.d; ++x)
        d += double(p.grad_out[size_t((bh * p.n + i) * p.d + x)]) * double(p.v[size_t(kv_row * p.d + x)]);
      worst = std::max(worst, std::abs(d));
    }
  return worst;
}

void check_both_kernels(const Problem& shape, rk::TileConfig tiles = tiles_of(16, 16, 1), bool single_keys = false) {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed << " (set RINGPLAN_TEST_SEED to replay)");
  const Problem p = rk::test::make_problem(shape, seed);
  const double grad_floor = single_keys ? single_key_cancellation(p) : 1.0;
  {
    INFO("flash");
    rk::test::check_result(p, rk::test::run_flash(p, tiles), grad_floor);
  }
  {
    INFO("materialized");
    rk::test::check_result(p, rk::test::run_materialized(p), grad_floor);
  }
}

}  // namespace

TEST_CASE("documents: the reference agrees with the naive float64 implementation") {
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  for (bool causal : {true, false}) {
    const Problem p = rk::test::make_problem(self_attention(96, {1, 40, 17, 38}, causal), seed);
    const auto ref = rk::test::run_reference(p);
    const auto naive = rk::test::run_naive<double>(p);
    CHECK(rk::test::max_abs_diff(ref.out, naive.out) < 1e-12);
    CHECK(rk::test::max_abs_diff(ref.lse, naive.lse) < 1e-12);
    CHECK(rk::test::max_abs_diff(ref.grad_q, naive.grad_q) < 1e-12);
    CHECK(rk::test::max_abs_diff(ref.grad_k, naive.grad_k) < 1e-12);
    CHECK(rk::test::max_abs_diff(ref.grad_v, naive.grad_v) < 1e-12);
    // A one-token document sees only itself: O of token 0 is its own V (all heads).
    for (int64_t h = 0; h < p.h; ++h)
      for (int64_t x = 0; x < p.d; ++x)
        CHECK(ref.out[static_cast<size_t>(h * p.n * p.d + x)] ==
              doctest::Approx(double(p.v[static_cast<size_t>(h * p.m * p.d + x)])).epsilon(1e-12));
  }
}

TEST_CASE("documents: flash and materialised equal the reference on the causal diagonal and non-causal") {
  for (bool causal : {true, false}) {
    INFO((causal ? "causal" : "non-causal"));
    check_both_kernels(self_attention(131, {1, 40, 17, 73}, causal));
    check_both_kernels(self_attention(131, {131}, causal));                        // one document
    check_both_kernels(self_attention(131, std::vector<int64_t>(131, 1), causal), tiles_of(16, 16, 1),
                       true);  // every token alone
  }
}

TEST_CASE("documents: GQA and MHA, batch 2, odd tiles and threads") {
  Problem gqa = self_attention(131, {64, 3, 64}, true, 8, 2);
  gqa.b = 2;
  check_both_kernels(gqa, tiles_of(17, 29, 1));
  check_both_kernels(self_attention(131, {64, 3, 64}, false, 4, 1), tiles_of(64, 64, 3));
  check_both_kernels(self_attention(131, {10, 20, 101}, true, 4, 4), tiles_of(16, 16, 4));
}

TEST_CASE("documents: Q of one rank against K of another for every scheme, documents crossing shard boundaries") {
  for (Scheme s : {Scheme::contiguous, Scheme::zigzag, Scheme::striped})
    for (bool causal : {true, false})
      for (auto [qr, kr] : {std::pair{2, 1}, {1, 2}, {0, 3}, {3, 0}, {1, 1}}) {
        INFO("scheme " << int(s) << (causal ? " causal" : " non-causal") << " q rank " << qr << " k rank " << kr);
        check_both_kernels(sharded_docs(s, qr, kr, causal));
      }
}

TEST_CASE("documents: rows whose document has no key in the block are exactly zero with lse -inf") {
  // Queries of documents 0 and 1 (positions 0..39) against keys of documents 1 and 2 only
  // (positions 30..69): queries of document 0 (positions 0..9) see nothing.
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  Problem shape = shape_of(40, 40, 32);
  shape.q_pos = rk::test::iota_positions(40, 0);
  shape.k_pos = rk::test::iota_positions(40, 30);
  shape.causal = false;
  const Problem p = rk::test::make_problem(with_documents(shape, {10, 40, 20}), seed);
  const auto r = rk::test::run_flash(p, tiles_of(8, 8, 1));
  rk::test::check_result(p, r);
  for (int64_t h = 0; h < p.h; ++h)
    for (int64_t i = 0; i < 10; ++i) {
      CHECK(r.lse[static_cast<size_t>(h * p.n + i)] == -std::numeric_limits<double>::infinity());
      for (int64_t x = 0; x < p.d; ++x) CHECK(r.out[static_cast<size_t>((h * p.n + i) * p.d + x)] == 0.0);
    }
}

TEST_CASE("documents: tiles with no document in common are skipped, their keys never read") {
  // Keys 48..63 are a whole tile of document 2, which no query belongs to: their K and V are
  // NaN. Only a skipped tile keeps O and the gradients finite and exact, and their dK, dV 0.
  const uint64_t seed = rk::test::test_seed();
  INFO("seed " << seed);
  for (bool causal : {true, false}) {
    Problem shape = shape_of(32, 64, 16);
    shape.q_pos = rk::test::iota_positions(32, 64);  // queries after every key
    shape.k_pos = rk::test::iota_positions(64, 0);
    shape.causal = causal;
    shape.q_doc.assign(32, 0);
    for (int64_t i = 16; i < 32; ++i) shape.q_doc[static_cast<size_t>(i)] = 1;
    shape.k_doc.assign(64, 0);
    for (int64_t j = 24; j < 48; ++j) shape.k_doc[static_cast<size_t>(j)] = 1;
    for (int64_t j = 48; j < 64; ++j) shape.k_doc[static_cast<size_t>(j)] = 2;
    Problem p = rk::test::make_problem(shape, seed);
    for (int64_t h = 0; h < p.hkv; ++h)
      for (int64_t j = 48; j < 64; ++j)
        for (int64_t x = 0; x < p.d; ++x) {
          p.k[static_cast<size_t>((h * p.m + j) * p.d + x)] = std::numeric_limits<float>::quiet_NaN();
          p.v[static_cast<size_t>((h * p.m + j) * p.d + x)] = std::numeric_limits<float>::quiet_NaN();
        }
    const auto r = rk::test::run_flash(p, tiles_of(16, 16, 1));
    rk::test::check_result(p, r);
    for (int64_t h = 0; h < p.hkv; ++h)
      for (int64_t j = 48; j < 64; ++j)
        for (int64_t x = 0; x < p.d; ++x) {
          CHECK(r.grad_k[static_cast<size_t>((h * p.m + j) * p.d + x)] == 0.0);
          CHECK(r.grad_v[static_cast<size_t>((h * p.m + j) * p.d + x)] == 0.0);
        }
  }
}

TEST_CASE("documents: tile classification from document and position ranges") {
  using namespace rk::detail;
  const int64_t qd[] = {0}, kd[] = {0};
  Mask docs{false, nullptr, nullptr, qd, kd};
  Mask causal_docs{true, nullptr, nullptr, qd, kd};
  auto range = [](int64_t pmin, int64_t pmax, int64_t dmin, int64_t dmax) { return TileRange{pmin, pmax, dmin, dmax}; };
  CHECK(classify(docs, range(0, 0, 0, 1), range(0, 0, 2, 3)) == TileVis::hidden);     // no document in common
  CHECK(classify(docs, range(0, 0, 1, 1), range(0, 0, 1, 1)) == TileVis::visible);    // one document, non-causal
  CHECK(classify(docs, range(0, 0, 1, 2), range(0, 0, 2, 2)) == TileVis::partial);    // some queries elsewhere
  CHECK(classify(causal_docs, range(10, 20, 1, 1), range(0, 5, 1, 1)) == TileVis::visible);
  CHECK(classify(causal_docs, range(10, 20, 1, 1), range(21, 30, 1, 1)) == TileVis::hidden);
  CHECK(classify(causal_docs, range(10, 20, 1, 1), range(5, 15, 1, 1)) == TileVis::partial);
  CHECK(classify(causal_docs, range(10, 20, 1, 2), range(0, 5, 1, 1)) == TileVis::partial);
  CHECK(classify(causal_docs, range(10, 20, 3, 3), range(0, 5, 1, 2)) == TileVis::hidden);
}

TEST_CASE("documents: visible_pairs counts same-document pairs only") {
  const std::vector<int64_t> lengths{3, 1, 4};  // positions 0-2, 3, 4-7
  std::vector<int64_t> pos = rk::test::iota_positions(8, 0);
  const auto doc = doc_of_positions(lengths, pos);
  // Causal within documents: 3*4/2 + 1 + 4*5/2 = 6 + 1 + 10; non-causal: 9 + 1 + 16.
  CHECK(rk::visible_pairs(pos.data(), 8, pos.data(), 8, true, doc.data(), doc.data()) == 17);
  CHECK(rk::visible_pairs(pos.data(), 8, pos.data(), 8, false, doc.data(), doc.data()) == 26);
  CHECK(rk::visible_pairs(pos.data(), 8, pos.data(), 8, true) == 36);
  // Against a brute-force count on a sharded layout.
  for (Scheme s : {Scheme::contiguous, Scheme::zigzag, Scheme::striped})
    for (bool causal : {true, false}) {
      const Problem p = sharded_docs(s, 1, 2, causal);
      int64_t brute = 0;
      for (int64_t i = 0; i < p.n; ++i)
        for (int64_t j = 0; j < p.m; ++j)
          brute += p.q_doc[size_t(i)] == p.k_doc[size_t(j)] && (!causal || p.k_pos[size_t(j)] <= p.q_pos[size_t(i)]);
      CHECK(rk::visible_pairs(p.q_pos.data(), p.n, p.k_pos.data(), p.m, causal, p.q_doc.data(), p.k_doc.data()) == brute);
    }
  CHECK_THROWS_AS(rk::visible_pairs(pos.data(), 8, pos.data(), 8, true, doc.data(), nullptr), std::invalid_argument);
}

TEST_CASE("documents: document ids for queries without keys (or keys without queries) are refused") {
  const Problem p = rk::test::make_problem(self_attention(16, {8, 8}, true), 1);
  rk::test::KernelBuffers kb(p);
  kb.params.k_documents = nullptr;
  CHECK(rk::validate(kb.params, kb.fwd).find("k_documents is null but q_documents is set") != std::string::npos);
  CHECK_THROWS_AS(rk::cpu_flash_forward(kb.params, kb.fwd), std::invalid_argument);
  kb.params.k_documents = p.k_doc.data();
  kb.params.q_documents = nullptr;
  CHECK(rk::validate(kb.params, kb.bwd).find("q_documents is null but k_documents is set") != std::string::npos);
}
