// Host-side tile counting; see tile_schedule.hpp for the classification rule.
#include "kernels/cuda/tile_schedule.hpp"

#include <algorithm>
#include <functional>
#include <queue>
#include <stdexcept>
#include <string>
#include <utility>

namespace ringplan::kernels::cuda {

TileCounts count_tiles(const int64_t* q_pos, int64_t n, const int64_t* k_pos, int64_t m, bool causal,
                       int64_t tile_q, int64_t tile_k) {
  if (n < 0 || m < 0 || tile_q <= 0 || tile_k <= 0 || (n > 0 && !q_pos) || (m > 0 && !k_pos)) {
    throw std::invalid_argument("count_tiles: need n, m >= 0, tile sizes > 0 and non-null positions; got n=" +
                                std::to_string(n) + " m=" + std::to_string(m) + " tile_q=" +
                                std::to_string(tile_q) + " tile_k=" + std::to_string(tile_k));
  }
  TileCounts c;
  for (int64_t q0 = 0; q0 < n; q0 += tile_q) {
    const int64_t q1 = std::min(n, q0 + tile_q);
    const auto [qmin, qmax] = std::minmax_element(q_pos + q0, q_pos + q1);
    for (int64_t k0 = 0; k0 < m; k0 += tile_k) {
      const int64_t k1 = std::min(m, k0 + tile_k);
      const auto [kmin, kmax] = std::minmax_element(k_pos + k0, k_pos + k1);
      switch (classify_tile(causal, *qmin, *qmax, *kmin, *kmax)) {
        case TileVisibility::hidden: ++c.hidden; break;
        case TileVisibility::visible: ++c.visible; break;
        case TileVisibility::partial: ++c.partial; break;
      }
    }
  }
  return c;
}

LaunchGrid launch_grid(int64_t tiles, int64_t heads, int64_t batch, BlockOrder wanted) {
  constexpr int64_t kMaxX = 2147483647, kMaxYZ = 65535;  // grid limits of every architecture since sm_30
  if (tiles < 1 || heads < 1 || batch < 1 || heads > kMaxYZ || batch > kMaxYZ || tiles > kMaxX) {
    throw std::invalid_argument("flash attention grid: " + std::to_string(tiles) + " tiles x " + std::to_string(heads) +
                                " heads x " + std::to_string(batch) +
                                " batch; need each >= 1, heads and batch <= 65535, tiles <= 2^31 - 1");
  }
  if (wanted == BlockOrder::tile_major && tiles <= kMaxYZ) {
    return {uint32_t(heads), uint32_t(batch), uint32_t(tiles), BlockOrder::tile_major};
  }
  return {uint32_t(tiles), uint32_t(heads), uint32_t(batch), BlockOrder::head_major};
}

BlockCoord launch_block(int64_t linear, int64_t tiles, int64_t heads, int64_t batch, BlockOrder order,
                        bool heaviest_last) {
  const LaunchGrid g = launch_grid(tiles, heads, batch, order);
  if (linear < 0 || linear >= tiles * heads * batch) {
    throw std::invalid_argument("launch_block: block " + std::to_string(linear) + " outside [0, " +
                                std::to_string(tiles * heads * batch) + ")");
  }
  const int64_t x = linear % g.x, yz = linear / g.x;
  return block_coord(uint32_t(x), uint32_t(yz % g.y), uint32_t(yz / g.y), uint32_t(tiles), g.order, heaviest_last);
}

std::vector<int64_t> owned_tile_work(const int64_t* q_pos, int64_t n, const int64_t* k_pos, int64_t m, bool causal,
                                     int64_t tile_q, int64_t tile_k, bool owner_is_query) {
  if (n < 0 || m < 0 || tile_q <= 0 || tile_k <= 0 || (causal && ((n > 0 && !q_pos) || (m > 0 && !k_pos)))) {
    throw std::invalid_argument("owned_tile_work: need n, m >= 0, tile sizes > 0 and, with causal, non-null positions; got n=" +
                                std::to_string(n) + " m=" + std::to_string(m) + " tile_q=" + std::to_string(tile_q) +
                                " tile_k=" + std::to_string(tile_k));
  }
  const int64_t tq = (n + tile_q - 1) / tile_q, tk = (m + tile_k - 1) / tile_k;
  std::vector<int64_t> work(size_t(owner_is_query ? tq : tk), 0);
  if (!causal) {
    std::fill(work.begin(), work.end(), owner_is_query ? tk : tq);
    return work;
  }
  std::vector<std::pair<int64_t, int64_t>> kr(static_cast<size_t>(tk));
  for (int64_t j = 0; j < tk; ++j) {
    const auto [lo, hi] = std::minmax_element(k_pos + j * tile_k, k_pos + std::min(m, (j + 1) * tile_k));
    kr[size_t(j)] = {*lo, *hi};
  }
  for (int64_t i = 0; i < tq; ++i) {
    const auto [lo, hi] = std::minmax_element(q_pos + i * tile_q, q_pos + std::min(n, (i + 1) * tile_q));
    for (int64_t j = 0; j < tk; ++j) {
      if (classify_tile(true, *lo, *hi, kr[size_t(j)].first, kr[size_t(j)].second) != TileVisibility::hidden) {
        ++work[size_t(owner_is_query ? i : j)];
      }
    }
  }
  return work;
}

std::vector<double> blocks_in_launch_order(const std::vector<int64_t>& tile_work, int64_t heads, int64_t batch,
                                           BlockOrder order, bool heaviest_last) {
  if (heads <= 0 || batch <= 0) {
    throw std::invalid_argument("blocks_in_launch_order: heads and batch must be > 0, got " + std::to_string(heads) +
                                ", " + std::to_string(batch));
  }
  const int64_t tiles = int64_t(tile_work.size());
  if (tiles == 0) return {};
  const LaunchGrid g = launch_grid(tiles, heads, batch, order);
  std::vector<double> out;
  out.reserve(size_t(tiles * heads * batch));
  for (uint32_t z = 0; z < g.z; ++z) {
    for (uint32_t y = 0; y < g.y; ++y) {
      for (uint32_t x = 0; x < g.x; ++x) {  // x fastest, as the GPU starts them
        out.push_back(double(tile_work[size_t(block_coord(x, y, z, uint32_t(tiles), g.order, heaviest_last).tile)]));
      }
    }
  }
  return out;
}

double grid_balance(const std::vector<double>& work_in_launch_order, int sms, double overhead) {
  if (sms <= 0 || overhead < 0) {
    throw std::invalid_argument("grid_balance: need sms > 0 and overhead >= 0, got " + std::to_string(sms) + ", " +
                                std::to_string(overhead));
  }
  // Min-heap of the times at which each SM frees.
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (int s = 0; s < sms; ++s) free_at.push(0.0);
  double total = 0, finish = 0;
  for (const double w : work_in_launch_order) {
    const double start = free_at.top();
    free_at.pop();
    const double end = start + overhead + w;
    free_at.push(end);
    total += overhead + w;
    finish = std::max(finish, end);
  }
  return finish > 0 ? total / (double(sms) * finish) : 1.0;
}

}  // namespace ringplan::kernels::cuda
