// Internal helpers of the CPU attention kernels (not part of the public API): Eigen maps of
// strided tiles, tile visibility from positions, argument checks and a tiny work-sharing loop.
// Included only by kernels/*.cpp.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "kernels/attention.hpp"

namespace ringplan::kernels::detail {

// Row-major float matrices: one row is one token's head_dim vector, so a tile of a strided
// TensorView is a row-major map with outer stride = stride_token.
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<Eigen::Dynamic>;
using TileMap = Eigen::Map<RowMat, Eigen::Unaligned, Strided>;
using ConstTileMap = Eigen::Map<const RowMat, Eigen::Unaligned, Strided>;
using ScratchMap = Eigen::Map<RowMat>;  // dense scratch, leading dimension = cols
using VecMap = Eigen::Map<Eigen::VectorXf>;
using ConstVecMap = Eigen::Map<const Eigen::VectorXf>;

inline float* row_ptr(const TensorView& t, int64_t b, int64_t h, int64_t token) {
  return static_cast<float*>(t.data) + b * t.stride_batch + h * t.stride_head +
         token * t.stride_token;
}
// rows [token0, token0+rows) of head (b, h) as a rows x head_dim map.
inline ConstTileMap const_tile(const TensorView& t, int64_t b, int64_t h, int64_t token0,
                               int64_t rows) {
  return ConstTileMap(row_ptr(t, b, h, token0), rows, t.head_dim,
                      Strided(std::max<int64_t>(t.stride_token, t.head_dim)));
}
inline TileMap tile(const TensorView& t, int64_t b, int64_t h, int64_t token0, int64_t rows) {
  return TileMap(row_ptr(t, b, h, token0), rows, t.head_dim,
                 Strided(std::max<int64_t>(t.stride_token, t.head_dim)));
}
inline float* stats_ptr(const RowStatsView& r, int64_t b, int64_t h) {
  return r.data + b * r.stride_batch + h * r.stride_head;
}

inline float effective_scale(const BlockParams& p) {
  return p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(p.q.head_dim));
}
// Query head h reads KV head floor(h / (H / Hkv)) == floor(h * Hkv / H) since Hkv divides H.
inline int64_t kv_head_of(int64_t h, int64_t heads, int64_t kv_heads) {
  return h / (heads / kv_heads);
}

// What a tile of the score matrix needs, decided from the min/max positions and document ids of
// its rows and columns only (valid for any position set: contiguous, zigzag, striped,
// arbitrary, and any document layout).
enum class TileVis { hidden, partial, visible };
struct TileRange {
  int64_t pos_min = 0, pos_max = 0;
  int64_t doc_min = 0, doc_max = 0;  // 0, 0 without documents
};
// The mask of one block: causal and/or packed documents (Mask::active() false: every pair visible).
struct Mask {
  bool causal = false;
  const int64_t* q_pos = nullptr;
  const int64_t* k_pos = nullptr;
  const int64_t* q_doc = nullptr;  // both document arrays or neither
  const int64_t* k_doc = nullptr;
  bool documents() const { return q_doc != nullptr; }
  bool active() const { return causal || documents(); }
};
inline Mask mask_of(const BlockParams& p) {
  return Mask{p.causal, p.q_positions, p.k_positions, p.q_documents, p.k_documents};
}
// Per-tile min/max of positions (when causal) and document ids; empty when the mask is inactive.
inline std::vector<TileRange> tile_ranges(const int64_t* pos, const int64_t* doc, bool causal, int64_t count,
                                          int64_t tile) {
  std::vector<TileRange> r;
  if (!causal && doc == nullptr) return r;
  for (int64_t t0 = 0; t0 < count; t0 += tile) {
    const int64_t t1 = std::min(count, t0 + tile);
    TileRange x;
    if (causal) {
      const auto [lo, hi] = std::minmax_element(pos + t0, pos + t1);
      x.pos_min = *lo;
      x.pos_max = *hi;
    }
    if (doc != nullptr) {
      const auto [lo, hi] = std::minmax_element(doc + t0, doc + t1);
      x.doc_min = *lo;
      x.doc_max = *hi;
    }
    r.push_back(x);
  }
  return r;
}
inline TileVis classify(const Mask& mask, const TileRange& q, const TileRange& k) {
  if (!mask.active()) return TileVis::visible;
  if (mask.documents()) {
    if (k.doc_max < q.doc_min || k.doc_min > q.doc_max) return TileVis::hidden;  // no document in common
  }
  if (mask.causal && k.pos_min > q.pos_max) return TileVis::hidden;  // every key after every query
  // Visible needs one single document on both sides (else some pair crosses documents) and,
  // when causal, every key at or before every query.
  const bool one_document =
      !mask.documents() || (q.doc_min == q.doc_max && k.doc_min == k.doc_max && q.doc_min == k.doc_min);
  const bool causal_ok = !mask.causal || k.pos_max <= q.pos_min;
  return one_document && causal_ok ? TileVis::visible : TileVis::partial;
}
// Sets the hidden entries of a partial tile (key after its query, or in another document) to
// `value`: -inf before a row max, 0 after the exponential. i0 / j0: the tile's first query / key.
inline void mask_partial(ScratchMap& s, const Mask& mask, int64_t i0, int64_t j0, float value) {
  for (Eigen::Index i = 0; i < s.rows(); ++i) {
    float* row = s.row(i).data();
    const int64_t qp = mask.causal ? mask.q_pos[i0 + i] : 0;
    const int64_t qd = mask.documents() ? mask.q_doc[i0 + i] : 0;
    for (Eigen::Index j = 0; j < s.cols(); ++j) {
      const bool hidden = (mask.causal && mask.k_pos[j0 + j] > qp) || (mask.documents() && mask.k_doc[j0 + j] != qd);
      if (hidden) row[j] = value;
    }
  }
}

// Throws std::invalid_argument("<where>: <message>") when message is not empty.
inline void throw_if(const std::string& where, const std::string& message) {
  if (!message.empty()) throw std::invalid_argument(where + ": " + message);
}
std::string check_tiles(const TileConfig& t);
std::string check_cpu_types(const BlockParams& p);

// Runs body(item, thread_index) for item in [0, items) on `threads` threads (the caller is
// thread 0). Items are handed out dynamically; the first exception is rethrown in the caller.
template <class Body>
void parallel_for(int64_t items, int64_t threads, Body&& body) {
  threads = std::max<int64_t>(1, std::min(threads, items));
  if (threads == 1) {
    for (int64_t i = 0; i < items; ++i) body(i, int64_t{0});
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int64_t t) {
    try {
      for (int64_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) body(i, t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(items);
    }
  };
  // Invariant: no joinable std::thread is ever destroyed (that calls std::terminate). If the
  // system refuses a thread (std::system_error: thread limit, address space), the workers
  // already started are told to stop (next = items), joined, and the failure is rethrown as a
  // std::system_error naming how many threads were asked for.
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int64_t t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  } catch (const std::system_error& e) {
    next.store(items);
    for (auto& th : pool) th.join();
    throw std::system_error(e.code(), "cannot start kernel worker thread " + std::to_string(pool.size() + 1) + " of " +
                                          std::to_string(threads) + " (use fewer threads)");
  }
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ringplan::kernels::detail
