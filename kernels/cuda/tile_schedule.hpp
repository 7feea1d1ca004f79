// Tile geometry and causal tile classification of the CUDA flash-attention kernels.
//
// One header serves the device kernels (attention_*_mma.cu, attention_*_wgmma.cu) and host code
// (tests, the benchmark and launch-size checks), so the rule that decides which tiles are skipped or masked exists
// once. It needs no GPU and no CUDA headers: with a host compiler RINGPLAN_HD expands to nothing.
//
// Causal rule (DESIGN.md "Attention math"): key j is visible to query i iff k_pos[j] <= q_pos[i].
// For a tile of queries with positions in [q_min, q_max] and keys in [k_min, k_max]:
//   k_min >  q_max  -> every key comes after every query: hidden, skipped entirely;
//   k_max <= q_min  -> every key is at or before every query: visible, no per-element mask;
//   otherwise       -> partial: the kernel masks element by element.
// Positions are arbitrary (zigzag, striped, unsorted), only min/max of the tile matter.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define RINGPLAN_HD __host__ __device__
#else
#define RINGPLAN_HD
#endif

namespace ringplan::kernels::cuda {

enum class TileVisibility : int { hidden = 0, visible = 1, partial = 2 };

RINGPLAN_HD inline TileVisibility classify_tile(bool causal, int64_t q_min, int64_t q_max,
                                                int64_t k_min, int64_t k_max) {
  if (!causal) return TileVisibility::visible;
  if (k_min > q_max) return TileVisibility::hidden;
  if (k_max <= q_min) return TileVisibility::visible;
  return TileVisibility::partial;
}

// Launch order of the flash kernels' thread blocks.
//
// A block owns one tile of one (batch, head): the forward a query tile, the backward a key tile
// of a KV head. Under a causal mask the tiles' work differs: with sorted positions, query tile t
// sees t + 1 key tiles and key tile t is seen by the query tiles from t on. The GPU starts blocks
// about in launch order as SMs free up, so the order is a list schedule. With the tile fastest
// (the head-major order below) each head's heavy tiles come first, but the last heads' heavy
// tiles start near the end and one of them is the tail of the whole kernel (the model below
// gives 81 % busy SMs for the 8K causal backward on 132 SMs, against 97 % non-causal; an H200
// measured 80 % of the non-causal rate per FLOP there, BENCHMARKS.md "GPU path").
// The tile-major order launches the heaviest tile of every (head, batch) first and the lightest
// last: a list schedule in decreasing work, whose tail is one light block. The head-major order
// (tile fastest, then head, then batch; tiles walked from the heavy end) is the baseline the
// tile-major order is measured against (KernelChoice::order in attention_cuda.hpp).
//
// Both are 3-D grids, which start blocks with x fastest, then y, then z, and whose coordinates
// the kernel reads from special registers: nothing to divide, and nothing held in registers
// through the main loop (a 1-D grid's decoded coordinates made the mma.sync backward spill).
//   tile_major: x = head, y = batch, z = tile rank (z <= 65535 tiles: launch_grid falls back to
//               head_major beyond that, same results);
//   head_major: x = tile rank, y = head, z = batch.
// heaviest_last: tile tiles - 1 carries the most work (the forward with sorted positions), else
// tile 0 (the backward). With unsorted positions the order is only a guess; every order computes
// the same result.
enum class BlockOrder : int { tile_major = 0, head_major = 1 };
// The order a launch asks launch_grid for: `wanted` if causal, else head_major (uniform tiles:
// nothing to balance, and a head's blocks, which read the same K and V, run together).
inline BlockOrder launch_order(BlockOrder wanted, bool causal) { return causal ? wanted : BlockOrder::head_major; }
struct BlockCoord {
  int32_t tile, head, batch;
};
RINGPLAN_HD inline BlockCoord block_coord(uint32_t bx, uint32_t by, uint32_t bz, uint32_t tiles, BlockOrder order,
                                          bool heaviest_last) {
  const bool tm = order == BlockOrder::tile_major;
  const uint32_t rank = tm ? bz : bx;
  BlockCoord c;
  c.tile = int32_t(heaviest_last ? tiles - 1 - rank : rank);
  c.head = int32_t(tm ? bx : by);
  c.batch = int32_t(tm ? by : bz);
  return c;
}

// The grid of a launch: its dimensions and the order it really uses (tile_major falls back to
// head_major when tiles > 65535, the grid's z limit). Throws std::invalid_argument naming the
// sizes when no order fits (heads or batch > 65535, tiles > 2^31 - 1) or a size is < 1.
struct LaunchGrid {
  uint32_t x, y, z;
  BlockOrder order;
};
LaunchGrid launch_grid(int64_t tiles, int64_t heads, int64_t batch, BlockOrder wanted);

// Host model of the launch sequence: the (tile, head, batch) of the linear-th block started,
// i.e. block_coord of (x, y, z) with linear = x + X (y + Y z).
BlockCoord launch_block(int64_t linear, int64_t tiles, int64_t heads, int64_t batch, BlockOrder order,
                        bool heaviest_last);

// Largest dynamic shared memory one block may opt into: sm_80 (A100) 163 KiB, sm_90 227 KiB.
inline constexpr size_t kMaxSmemBytesSm80 = 163 * 1024;

// How a (query positions x key positions) problem splits into tiles: a host-side mirror of the
// kernels' decision, used by tests (checked against per-element visibility) and the benchmark
// (reports how much work causal skipping saves).
struct TileCounts {
  int64_t hidden = 0, visible = 0, partial = 0;
};
TileCounts count_tiles(const int64_t* q_pos, int64_t n, const int64_t* k_pos, int64_t m, bool causal,
                       int64_t tile_q, int64_t tile_k);

// Work of each owned tile, in streamed tiles it computes (visible + partial): the forward owns
// query tiles (owner_is_query) and streams key tiles, the backward owns key tiles and streams
// query tiles. Same causal rule as the kernels (classify_tile).
std::vector<int64_t> owned_tile_work(const int64_t* q_pos, int64_t n, const int64_t* k_pos, int64_t m, bool causal,
                                     int64_t tile_q, int64_t tile_k, bool owner_is_query);

// Work of every block of a kernel in launch order, given the work of each tile (the same for
// every head and batch).
std::vector<double> blocks_in_launch_order(const std::vector<int64_t>& tile_work, int64_t heads, int64_t batch,
                                           BlockOrder order, bool heaviest_last);

// Model of how well a grid fills `sms` SMs: blocks start in launch order, each on the SM that
// frees first, one block per SM (the flash kernels' occupancy), a block takes overhead + work.
// Returns total time / (sms * finish time), 1 = no SM idles before the end.
double grid_balance(const std::vector<double>& work_in_launch_order, int sms, double overhead = 0.0);

}  // namespace ringplan::kernels::cuda
