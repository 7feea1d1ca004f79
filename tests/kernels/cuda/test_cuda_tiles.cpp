// Host-side checks of the CUDA kernels' tile logic (kernels/cuda/tile_schedule.hpp): no GPU needed.
// The classification decides which tiles the kernels skip (hidden) or compute without a mask
// (visible); a wrong answer silently drops or corrupts attention, so it is checked here against
// per-element visibility on every sharding scheme.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cuda/tile_schedule.hpp"

namespace rkc = ringplan::kernels::cuda;

namespace {

// Tile shapes (query rows x keys) the kernels classify: the mma.sync forward, the wgmma forward,
// and both backwards (attention_*_mma.hpp, attention_*_wgmma.hpp).
constexpr std::pair<int64_t, int64_t> kKernelTiles[] = {{128, 64}, {128, 128}, {64, 128}};

uint32_t u32(int64_t x) { return static_cast<uint32_t>(x); }

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
      for (const auto& [tq, tk] : kKernelTiles) {
        check_against_elements(zigzag(total, p, qr), zigzag(total, p, kr), tq, tk);
        check_against_elements(striped(total, p, qr), striped(total, p, kr), tq, tk);
        check_against_elements(iota_positions(total / p, qr * total / p), iota_positions(total / p, kr * total / p),
                               tq, tk);
      }
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
                                  128, 64);
  CHECK(c.hidden >= 2 * 4);
  CHECK(c.hidden + c.visible + c.partial == (512 / 128) * (512 / 64));
}

TEST_CASE("count_tiles rejects bad sizes") {
  const auto pos = iota_positions(4);
  CHECK_THROWS_AS(rkc::count_tiles(pos.data(), 4, pos.data(), 4, true, 0, 64), std::invalid_argument);
  CHECK_THROWS_AS(rkc::count_tiles(nullptr, 4, pos.data(), 4, true, 64, 64), std::invalid_argument);
}

TEST_CASE("launch orders visit every (tile, head, batch) once, tile-major from the heaviest tile rank down") {
  using rkc::BlockOrder;
  for (const bool heaviest_last : {false, true}) {
    for (const auto& [tiles, heads, batch] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {5, 3, 2}, {64, 8, 1},
                                              {7, 1, 4}, {2, 32, 3}}) {
      CAPTURE(heaviest_last);
      CAPTURE(tiles);
      CAPTURE(heads);
      CAPTURE(batch);
      const int64_t blocks = tiles * heads * batch;
      for (const BlockOrder order : {BlockOrder::tile_major, BlockOrder::head_major}) {
        CAPTURE(int(order));
        const auto g = rkc::launch_grid(tiles, heads, batch, order);
        CHECK(g.order == order);  // far below the 65535-tile fallback
        CHECK(int64_t(g.x) * g.y * g.z == blocks);
        std::vector<int> seen(size_t(blocks), 0);
        int64_t last_rank = 0;
        for (int64_t linear = 0; linear < blocks; ++linear) {
          // The kernels' view (3-D indices, x fastest) and the host model's agree.
          const uint32_t x = u32(linear % g.x), y = u32(linear / g.x % g.y), z = u32(linear / g.x / g.y);
          const auto c = rkc::block_coord(x, y, z, u32(tiles), g.order, heaviest_last);
          const auto m = rkc::launch_block(linear, tiles, heads, batch, order, heaviest_last);
          CHECK((c.tile == m.tile && c.head == m.head && c.batch == m.batch));
          REQUIRE(c.tile >= 0);
          REQUIRE(c.tile < tiles);
          REQUIRE(c.head >= 0);
          REQUIRE(c.head < heads);
          REQUIRE(c.batch >= 0);
          REQUIRE(c.batch < batch);
          ++seen[size_t((c.batch * heads + c.head) * tiles + c.tile)];
          const int64_t rank = heaviest_last ? tiles - 1 - c.tile : c.tile;
          if (order == BlockOrder::tile_major) {
            // Tile ranks never go back: all heads and batches of the heaviest tile come first.
            CHECK(rank >= last_rank);
            last_rank = rank;
          } else {
            // The earlier order: tile fastest from the heavy end, then head, then batch.
            CHECK(rank == linear % tiles);
            CHECK(c.head == (linear / tiles) % heads);
            CHECK(c.batch == linear / (tiles * heads));
          }
        }
        CHECK(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 1; }));
        // The first block is the heaviest tile of head 0, batch 0.
        const auto first = rkc::launch_block(0, tiles, heads, batch, order, heaviest_last);
        CHECK(first.tile == (heaviest_last ? tiles - 1 : 0));
        CHECK(first.head == 0);
        CHECK(first.batch == 0);
      }
    }
  }
}

TEST_CASE("launch_grid: tile-major up to 65535 tiles, then the head-major order, errors naming the sizes") {
  using rkc::BlockOrder;
  const auto g = rkc::launch_grid(64, 8, 2, BlockOrder::tile_major);
  CHECK((g.x == 8 && g.y == 2 && g.z == 64 && g.order == BlockOrder::tile_major));
  const auto h = rkc::launch_grid(64, 8, 2, BlockOrder::head_major);
  CHECK((h.x == 64 && h.y == 8 && h.z == 2 && h.order == BlockOrder::head_major));
  CHECK(rkc::launch_grid(65535, 1, 1, BlockOrder::tile_major).order == BlockOrder::tile_major);
  const auto big = rkc::launch_grid(65536, 4, 1, BlockOrder::tile_major);
  CHECK((big.x == 65536 && big.order == BlockOrder::head_major));
  CHECK(rkc::launch_grid(2147483647, 1, 1, BlockOrder::tile_major).x == 2147483647u);
  CHECK_THROWS_WITH_AS(rkc::launch_grid(4, 70000, 1, BlockOrder::tile_major), doctest::Contains("70000 heads"),
                       std::invalid_argument);
  CHECK_THROWS_AS(rkc::launch_grid(4, 8, 65536, BlockOrder::tile_major), std::invalid_argument);
  CHECK_THROWS_AS(rkc::launch_grid(int64_t(1) << 31, 1, 1, BlockOrder::head_major), std::invalid_argument);
  CHECK_THROWS_AS(rkc::launch_grid(0, 8, 1, BlockOrder::tile_major), std::invalid_argument);
  CHECK_THROWS_AS(rkc::launch_block(16, 4, 2, 2, BlockOrder::tile_major, false), std::invalid_argument);
}

TEST_CASE("owned_tile_work counts the streamed tiles each owned tile computes") {
  const auto pos = iota_positions(256);
  // Forward: query tile i of 64 rows sees key tiles 0..i of 64.
  CHECK(rkc::owned_tile_work(pos.data(), 256, pos.data(), 256, true, 64, 64, true) == std::vector<int64_t>{1, 2, 3, 4});
  // Backward: key tile j is seen by query tiles j..3.
  CHECK(rkc::owned_tile_work(pos.data(), 256, pos.data(), 256, true, 64, 64, false) == std::vector<int64_t>{4, 3, 2, 1});
  // Backward with 128-key tiles and 64-row query tiles: key tile 0 by all 4, tile 1 by 2.
  CHECK(rkc::owned_tile_work(pos.data(), 256, pos.data(), 256, true, 64, 128, false) == std::vector<int64_t>{4, 2});
  CHECK(rkc::owned_tile_work(nullptr, 130, nullptr, 70, false, 64, 64, true) == std::vector<int64_t>{2, 2, 2});
  // Totals agree with count_tiles on a zigzag shard.
  const auto z = zigzag(2048, 4, 1);
  const int64_t zn = int64_t(z.size());
  const auto c = rkc::count_tiles(z.data(), zn, z.data(), zn, true, 64, 128);
  for (const bool owner_is_query : {false, true}) {
    const auto w = rkc::owned_tile_work(z.data(), zn, z.data(), zn, true, 64, 128, owner_is_query);
    int64_t sum = 0;
    for (const int64_t x : w) sum += x;
    CHECK(sum == c.visible + c.partial);
  }
  CHECK_THROWS_AS(rkc::owned_tile_work(nullptr, 4, pos.data(), 4, true, 64, 64, true), std::invalid_argument);
  CHECK_THROWS_AS(rkc::owned_tile_work(pos.data(), 4, pos.data(), 4, true, 64, 0, true), std::invalid_argument);
}

TEST_CASE("grid_balance is a list schedule in launch order") {
  // Two SMs: {3, 3, 2, 2} in that order ends at 5 of a possible 5: balance 1.
  CHECK(rkc::grid_balance({3, 3, 2, 2}, 2) == doctest::Approx(1.0));
  // {1, 1, 4}: the heavy block starts last and ends at 5; busy 6 of 2 x 5.
  CHECK(rkc::grid_balance({1, 1, 4}, 2) == doctest::Approx(0.6));
  // Decreasing order: {4, 1, 1} ends at 4: 6 / 8.
  CHECK(rkc::grid_balance({4, 1, 1}, 2) == doctest::Approx(0.75));
  // A per-block overhead counts as busy time: blocks of 2, 2, 5 end at 7; busy 9 of 2 x 7.
  CHECK(rkc::grid_balance({1, 1, 4}, 2, 1.0) == doctest::Approx(9.0 / 14.0));
  CHECK(rkc::grid_balance({}, 4) == doctest::Approx(1.0));
  CHECK_THROWS_AS(rkc::grid_balance({1}, 0), std::invalid_argument);
  CHECK_THROWS_AS(rkc::grid_balance({1}, 1, -1.0), std::invalid_argument);
}

// The benchmark shapes of the device check (bf16 SDPA comparison: batch 1, 32 query heads, 8 KV
// heads) on an H200's or H100 SXM's 132 SMs, with the Hopper kernels' tiles: forward 128 query
// rows x 128 keys per block and step, 32 blocks per (batch, head) at 4K tokens; backward 128 keys
// per block of a KV head x 64 query rows per step (attention_*_wgmma.hpp). Prints the model's
// busy fraction of both launch orders (-s); the numbers are computed here, not typed in.
TEST_CASE("grid balance of the causal benchmark shapes: tile-major order against head-major") {
  const int sms = 132;
  for (const int64_t n : {4096, 8192, 16384}) {
    const auto pos = iota_positions(n);
    const auto fwd = rkc::owned_tile_work(pos.data(), n, pos.data(), n, true, 128, 128, true);
    const auto bwd = rkc::owned_tile_work(pos.data(), n, pos.data(), n, true, 64, 128, false);
    const auto fwd_nc = rkc::owned_tile_work(pos.data(), n, pos.data(), n, false, 128, 128, true);
    const auto bwd_nc = rkc::owned_tile_work(pos.data(), n, pos.data(), n, false, 64, 128, false);
    auto bal = [&](const std::vector<int64_t>& w, int64_t heads, rkc::BlockOrder o, bool heaviest_last) {
      return rkc::grid_balance(rkc::blocks_in_launch_order(w, heads, 1, o, heaviest_last), sms);
    };
    const double f_tile = bal(fwd, 32, rkc::BlockOrder::tile_major, true);
    const double f_head = bal(fwd, 32, rkc::BlockOrder::head_major, true);
    const double b_tile = bal(bwd, 8, rkc::BlockOrder::tile_major, false);
    const double b_head = bal(bwd, 8, rkc::BlockOrder::head_major, false);
    const double f_nc = bal(fwd_nc, 32, rkc::BlockOrder::tile_major, true);
    const double b_nc = bal(bwd_nc, 8, rkc::BlockOrder::tile_major, false);
    MESSAGE(n << " tokens, causal, busy SMs: forward tile-major " << f_tile << " / head-major " << f_head
              << "; backward tile-major " << b_tile << " / head-major " << b_head << "; non-causal forward " << f_nc
              << ", backward " << b_nc);
    CAPTURE(n);
    // Decreasing work is never worse than the head-major order, and leaves at most one light
    // block's worth of tail: at 4K (256 backward blocks on 132 SMs) and beyond, >= 0.98.
    CHECK(f_tile >= f_head - 1e-12);
    CHECK(b_tile >= b_head - 1e-12);
    CHECK(f_tile >= 0.98);
    CHECK(b_tile >= 0.98);
    // Non-causal work is uniform: the order changes nothing.
    CHECK(bal(bwd_nc, 8, rkc::BlockOrder::head_major, false) == doctest::Approx(b_nc));
    if (n == 8192) CHECK(b_head < 0.85);  // the causal backward in head-major order leaves SMs idle
  }
}
