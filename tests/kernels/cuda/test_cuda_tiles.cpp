// Host-side checks of the CUDA kernels' tile logic (kernels/cuda/tile_schedule.hpp): no GPU needed.
// The classification decides which tiles the kernels skip (hidden) or compute without a mask
// (visible); a wrong answer silently drops or corrupts attention, so it is checked here against
// per-element visibility on every sharding scheme.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/tile_schedule.hpp"

namespace rkc = ringplan::kernels::cuda;

namespace {

std::vector<int64_t> iota_positions(int64_t count, int64_t first = 0) {
  std::vector<int64_t> p(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) p[size_t(i)] = first + i;
  return p;
}

// Zigzag shard (DESIGN.md): rank r of p holds chunks r and 2p-1-r of 2p chunks.
std::vector<int64_t> zigzag(int64_t total, int64_t p, int64_t r) {
  std::vector<int64_t> pos;
  const int64_t c = total / (2 * p);
  for (int64_t t = r * c; t < (r + 1) * c; ++t) pos.push_back(t);
  for (int64_t t = (2 * p - 1 - r) * c; t < (2 * p - r) * c; ++t) pos.push_back(t);
  return pos;
}

std::vector<int64_t> striped(int64_t total, int64_t p, int64_t r) {
  std::vector<int64_t> pos;
  for (int64_t t = r; t < total; t += p) pos.push_back(t);
  return pos;
}

// Every tile's class must agree with its elements: hidden -> no visible pair, visible -> all
// pairs visible, partial -> some of each (the classification is exact for min/max, so a partial
// tile whose elements are all visible or all hidden would be a wasted mask, not an error; we
// only require hidden/visible to be right, and count the rest).
void check_against_elements(const std::vector<int64_t>& q, const std::vector<int64_t>& k, int64_t tq, int64_t tk) {
  const int64_t n = int64_t(q.size()), m = int64_t(k.size());
  for (int64_t q0 = 0; q0 < n; q0 += tq) {
    for (int64_t k0 = 0; k0 < m; k0 += tk) {
      const int64_t q1 = std::min(n, q0 + tq), k1 = std::min(m, k0 + tk);
      int64_t vis = 0;
      for (int64_t i = q0; i < q1; ++i)
        for (int64_t j = k0; j < k1; ++j) vis += k[size_t(j)] <= q[size_t(i)];
      const auto [qmin, qmax] = std::minmax_element(q.begin() + q0, q.begin() + q1);
      const auto [kmin, kmax] = std::minmax_element(k.begin() + k0, k.begin() + k1);
      const auto c = rkc::classify_tile(true, *qmin, *qmax, *kmin, *kmax);
      if (c == rkc::TileVisibility::hidden) CHECK(vis == 0);
      if (c == rkc::TileVisibility::visible) CHECK(vis == (q1 - q0) * (k1 - k0));
    }
  }
}

}  // namespace

TEST_CASE("classify_tile: the three cases and non-causal") {
  using rkc::TileVisibility;
  CHECK(rkc::classify_tile(true, 0, 63, 64, 127) == TileVisibility::hidden);
  CHECK(rkc::classify_tile(true, 64, 127, 0, 63) == TileVisibility::visible);
  CHECK(rkc::classify_tile(true, 0, 63, 0, 63) == TileVisibility::partial);
  CHECK(rkc::classify_tile(true, 10, 20, 20, 30) == TileVisibility::partial);   // one pair (20,20) visible
  CHECK(rkc::classify_tile(true, 10, 20, 21, 30) == TileVisibility::hidden);
  CHECK(rkc::classify_tile(true, 30, 40, 0, 30) == TileVisibility::visible);    // k_max == q_min is visible
  CHECK(rkc::classify_tile(false, 0, 0, 100, 200) == TileVisibility::visible);  // no mask without causal
}

TEST_CASE("count_tiles: contiguous causal self-attention has a lower triangle of visible tiles") {
  const auto pos = iota_positions(256);
  const auto c = rkc::count_tiles(pos.data(), 256, pos.data(), 256, true, 64, 64);
  CHECK(c.partial == 4);  // diagonal
  CHECK(c.visible == 6);  // strictly below
  CHECK(c.hidden == 6);   // strictly above: skipped, half the work
  const auto nc = rkc::count_tiles(pos.data(), 256, pos.data(), 256, false, 64, 64);
  CHECK(nc.visible == 16);
  CHECK(nc.hidden + nc.partial == 0);
}

TEST_CASE("classification agrees with element visibility for contiguous, zigzag and striped shards") {
  const int64_t total = 1024, p = 4;
  for (int64_t qr = 0; qr < p; ++qr) {
    for (int64_t kr = 0; kr < p; ++kr) {
      CAPTURE(qr);
      CAPTURE(kr);
      check_against_elements(zigzag(total, p, qr), zigzag(total, p, kr), rkc::kFwdBlockM, rkc::kFwdBlockN);
      check_against_elements(zigzag(total, p, qr), zigzag(total, p, kr), rkc::kBwdBlockM, rkc::kBwdBlockN);
      check_against_elements(striped(total, p, qr), striped(total, p, kr), rkc::kFwdBlockM, rkc::kFwdBlockN);
      check_against_elements(iota_positions(total / p, qr * total / p), iota_positions(total / p, kr * total / p),
                             rkc::kFwdBlockM, rkc::kFwdBlockN);
    }
  }
  // Non-multiple sizes: the last tiles are short.
  check_against_elements(iota_positions(130), iota_positions(77, 40), 64, 64);
}

TEST_CASE("zigzag rank 0 against its own keys skips the tiles of its future chunk") {
  // Rank 0 of 2 holds chunks 0 and 3 of 4 (256 tokens each): its queries in chunk 0 see none of
  // chunk 3's keys, so with 128-row tiles and 64-key tiles those (2 x 4) tiles are hidden.
  const auto pos = zigzag(1024, 2, 0);
  const auto c = rkc::count_tiles(pos.data(), int64_t(pos.size()), pos.data(), int64_t(pos.size()), true,
                                  rkc::kFwdBlockM, rkc::kFwdBlockN);
  CHECK(c.hidden >= 2 * 4);
  CHECK(c.hidden + c.visible + c.partial == (512 / rkc::kFwdBlockM) * (512 / rkc::kFwdBlockN));
}

TEST_CASE("shared-memory layouts fit one block on A100 (163 KiB) and respect WMMA alignment") {
  for (int d : {64, 128}) {
    CAPTURE(d);
    const auto f = rkc::forward_smem(d);
    const auto b = rkc::backward_smem(d);
    CHECK(f.total_bytes <= rkc::kMaxSmemBytesSm80);
    CHECK(b.total_bytes <= rkc::kMaxSmemBytesSm80);
    for (size_t off : {f.k_off, f.v_off, f.s_off, f.p_off, f.scratch_off, f.kpos_off, b.k_off, b.v_off, b.q_off,
                       b.do_off, b.s_off, b.p_off, b.scratch_off, b.rows_off, b.kpos_off})
      CHECK(off % 32 == 0);  // WMMA fragment pointers must be 256-bit aligned
    // 16 rows of a 16-bit tile must keep 32-byte alignment for fragment loads at any row block.
    CHECK((16 * rkc::ld_half(d) * 2) % 32 == 0);
    // Q is staged in the score buffer: it must fit there.
    CHECK(size_t(rkc::kFwdBlockM) * rkc::ld_half(d) * 2 <= f.p_off - f.s_off);
  }
  CHECK(rkc::ld_scores() % 4 == 0);
  CHECK(rkc::ld_probs() % 8 == 0);
}

TEST_CASE("count_tiles rejects bad sizes") {
  const auto pos = iota_positions(4);
  CHECK_THROWS_AS(rkc::count_tiles(pos.data(), 4, pos.data(), 4, true, 0, 64), std::invalid_argument);
  CHECK_THROWS_AS(rkc::count_tiles(nullptr, 4, pos.data(), 4, true, 64, 64), std::invalid_argument);
}
