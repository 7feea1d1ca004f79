// Host-side tile counting; see tile_schedule.hpp for the classification rule.
#include "kernels/cuda/tile_schedule.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

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

}  // namespace ringplan::kernels::cuda
