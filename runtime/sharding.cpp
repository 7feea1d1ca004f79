#include "runtime/sharding.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.hpp"

namespace ringplan::runtime {

int64_t shard_multiple(CpScheme scheme, int64_t cp_size) {
  return scheme == CpScheme::zigzag ? 2 * cp_size : cp_size;
}

void check_shardable(CpScheme scheme, int64_t seq_len, int64_t cp_size) {
  if (cp_size < 1) throw bad_input(fmt::format("context-parallel size {} must be >= 1", cp_size));
  if (seq_len < 1) throw bad_input(fmt::format("sequence length {} must be >= 1", seq_len));
  const int64_t mult = shard_multiple(scheme, cp_size);
  if (seq_len % mult != 0) {
    const int64_t lower = seq_len / mult * mult, upper = lower + mult;
    throw bad_input(fmt::format(
        "sequence length {} cannot be sharded over P={} ranks with the {} scheme: it must be a multiple of {}{} "
        "(e.g. {}{}{})",
        seq_len, cp_size, to_string(scheme), mult, scheme == CpScheme::zigzag ? " (2P equal chunks)" : " (P)",
        lower > 0 ? std::to_string(lower) : std::string(), lower > 0 ? " or " : "", upper));
  }
}

std::vector<int64_t> shard_positions(CpScheme scheme, int64_t seq_len, int64_t cp_size, int64_t cp_rank) {
  check_shardable(scheme, seq_len, cp_size);
  if (cp_rank < 0 || cp_rank >= cp_size)
    throw bad_input(fmt::format("CP rank {} is outside 0..{}", cp_rank, cp_size - 1));
  const int64_t n = seq_len / cp_size;
  std::vector<int64_t> pos;
  pos.reserve(static_cast<size_t>(n));
  switch (scheme) {
    case CpScheme::contiguous:
      for (int64_t i = 0; i < n; ++i) pos.push_back(cp_rank * n + i);
      break;
    case CpScheme::zigzag: {
      // Head chunk r pairs with tail chunk 2P-1-r: cheap early queries balance costly late ones.
      const int64_t c = seq_len / (2 * cp_size);
      for (int64_t i = 0; i < c; ++i) pos.push_back(cp_rank * c + i);
      for (int64_t i = 0; i < c; ++i) pos.push_back((2 * cp_size - 1 - cp_rank) * c + i);
      break;
    }
    case CpScheme::striped:
      for (int64_t i = 0; i < n; ++i) pos.push_back(i * cp_size + cp_rank);
      break;
  }
  return pos;
}

namespace {

// Valid document lengths for a sequence: bad_input naming the problem otherwise.
int64_t checked_length_sum(const std::vector<int64_t>& lengths) {
  int64_t sum = 0;
  for (int64_t len : lengths) {
    if (len < 1) throw bad_input(fmt::format("document lengths must be >= 1, got {}", len));
    sum += len;
  }
  if (lengths.empty()) throw bad_input("document lengths: at least one document is needed");
  return sum;
}

}  // namespace

std::vector<int64_t> document_shard_positions(const std::vector<int64_t>& lengths, int64_t cp_size, int64_t cp_rank) {
  const int64_t seq_len = checked_length_sum(lengths);
  if (cp_size >= 1 && seq_len % (2 * cp_size) != 0)
    throw bad_input(fmt::format("packed documents of {} tokens cannot be sharded per document over P={} ranks: the "
                                "sequence length must be a multiple of 2P = {}",
                                seq_len, cp_size, 2 * cp_size));
  check_shardable(CpScheme::zigzag, seq_len, cp_size);
  if (cp_rank < 0 || cp_rank >= cp_size)
    throw bad_input(fmt::format("CP rank {} is outside 0..{}", cp_rank, cp_size - 1));
  const int64_t chunks = 2 * cp_size;
  std::vector<int64_t> pos, pool;
  int64_t start = 0;
  for (int64_t len : lengths) {
    const int64_t c = len / chunks;
    // Head chunk r and tail chunk 2P-1-r of this document: early (cheap) and late (costly)
    // queries of the same document on one rank.
    for (int64_t i = 0; i < c; ++i) pos.push_back(start + cp_rank * c + i);
    for (int64_t i = 0; i < c; ++i) pos.push_back(start + (chunks - 1 - cp_rank) * c + i);
    for (int64_t t = start + chunks * c; t < start + len; ++t) pool.push_back(t);
    start += len;
  }
  // The pool (a multiple of 2P tokens) zigzag: chunks r and 2P-1-r of 2P equal chunks.
  const int64_t pc = static_cast<int64_t>(pool.size()) / chunks;
  for (int64_t i = 0; i < pc; ++i) pos.push_back(pool[static_cast<size_t>(cp_rank * pc + i)]);
  for (int64_t i = 0; i < pc; ++i) pos.push_back(pool[static_cast<size_t>((chunks - 1 - cp_rank) * pc + i)]);
  std::sort(pos.begin(), pos.end());
  return pos;
}

std::vector<std::vector<int64_t>> scheme_shards(CpScheme scheme, int64_t seq_len, int64_t cp_size) {
  check_shardable(scheme, seq_len, cp_size);
  std::vector<std::vector<int64_t>> shards;
  for (int64_t r = 0; r < cp_size; ++r) shards.push_back(shard_positions(scheme, seq_len, cp_size, r));
  return shards;
}

std::vector<std::vector<int64_t>> document_shards(const std::vector<int64_t>& lengths, int64_t cp_size) {
  std::vector<std::vector<int64_t>> shards;
  for (int64_t r = 0; r < cp_size; ++r) shards.push_back(document_shard_positions(lengths, cp_size, r));
  return shards;
}

std::vector<int64_t> rank_positions(CpScheme scheme, int64_t seq_len, const std::vector<int64_t>& lengths,
                                    int64_t cp_size, int64_t cp_rank) {
  return !lengths.empty() && scheme == CpScheme::zigzag ? document_shard_positions(lengths, cp_size, cp_rank)
                                                        : shard_positions(scheme, seq_len, cp_size, cp_rank);
}

std::vector<int64_t> documents_at(const std::vector<int64_t>& lengths, const std::vector<int64_t>& positions) {
  const int64_t seq_len = checked_length_sum(lengths);
  std::vector<int64_t> starts;  // starts[d] = first position of document d
  int64_t s = 0;
  for (int64_t len : lengths) {
    starts.push_back(s);
    s += len;
  }
  std::vector<int64_t> ids;
  ids.reserve(positions.size());
  for (int64_t p : positions) {
    if (p < 0 || p >= seq_len)
      throw bad_input(fmt::format("position {} is outside the sequence of {} document tokens", p, seq_len));
    ids.push_back(std::upper_bound(starts.begin(), starts.end(), p) - starts.begin() - 1);
  }
  return ids;
}

std::vector<int64_t> rank_attention_pairs(const std::vector<std::vector<int64_t>>& shards,
                                          const std::vector<int64_t>& lengths, bool causal) {
  const int64_t seq_len = checked_length_sum(lengths);
  // Per global position: visible keys of a query there (offset + 1 causal, length non-causal).
  std::vector<int64_t> keys(static_cast<size_t>(seq_len));
  int64_t start = 0;
  for (int64_t len : lengths) {
    for (int64_t t = 0; t < len; ++t) keys[static_cast<size_t>(start + t)] = causal ? t + 1 : len;
    start += len;
  }
  std::vector<int64_t> pairs;
  for (const auto& shard : shards) {
    int64_t sum = 0;
    for (int64_t p : shard) {
      if (p < 0 || p >= seq_len)
        throw bad_input(fmt::format("position {} is outside the sequence of {} document tokens", p, seq_len));
      sum += keys[static_cast<size_t>(p)];
    }
    pairs.push_back(sum);
  }
  return pairs;
}

double attention_work_imbalance(const std::vector<std::vector<int64_t>>& shards, const std::vector<int64_t>& lengths,
                                bool causal) {
  const std::vector<int64_t> pairs = rank_attention_pairs(shards, lengths, causal);
  if (pairs.empty()) throw bad_input("attention work imbalance: no ranks");
  const double total = static_cast<double>(std::accumulate(pairs.begin(), pairs.end(), int64_t{0}));
  if (total <= 0) return 1.0;
  const double mean = total / static_cast<double>(pairs.size());
  return static_cast<double>(*std::max_element(pairs.begin(), pairs.end())) / mean;
}

template <class T>
int64_t HostTensor<T>::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

namespace {

struct Split {
  int64_t outer = 1, extent = 0, inner = 1;
};

template <class T>
Split split_at(const HostTensor<T>& t, int seq_dim, const char* what) {
  if (seq_dim < 0 || seq_dim >= static_cast<int>(t.shape.size()))
    throw bad_input(fmt::format("{}: sequence dim {} is outside the tensor's {} dims", what, seq_dim, t.shape.size()));
  if (static_cast<int64_t>(t.data.size()) != t.numel())
    throw bad_input(fmt::format("{}: tensor holds {} elements but its shape needs {}", what, t.data.size(), t.numel()));
  Split s;
  for (int i = 0; i < seq_dim; ++i) s.outer *= t.shape[static_cast<size_t>(i)];
  s.extent = t.shape[static_cast<size_t>(seq_dim)];
  for (size_t i = static_cast<size_t>(seq_dim) + 1; i < t.shape.size(); ++i) s.inner *= t.shape[i];
  return s;
}

void check_positions(const std::vector<int64_t>& positions, int64_t extent, const char* what) {
  for (int64_t p : positions)
    if (p < 0 || p >= extent)
      throw bad_input(fmt::format("{}: position {} outside the sequence 0..{}", what, p, extent - 1));
}

}  // namespace

template <class T>
HostTensor<T> select_along(const HostTensor<T>& src, int seq_dim, const std::vector<int64_t>& positions) {
  const Split s = split_at(src, seq_dim, "shard");
  check_positions(positions, s.extent, "shard");
  HostTensor<T> dst;
  dst.shape = src.shape;
  const int64_t n = static_cast<int64_t>(positions.size());
  dst.shape[static_cast<size_t>(seq_dim)] = n;
  dst.data.resize(static_cast<size_t>(s.outer * n * s.inner));
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(src.data.data() + (o * s.extent + positions[static_cast<size_t>(i)]) * s.inner, s.inner,
                  dst.data.data() + (o * n + i) * s.inner);
  return dst;
}

template <class T>
void scatter_along(const HostTensor<T>& part, int seq_dim, const std::vector<int64_t>& positions, HostTensor<T>& dst) {
  const Split sp = split_at(part, seq_dim, "gather");
  const Split sd = split_at(dst, seq_dim, "gather");
  if (sp.extent != static_cast<int64_t>(positions.size()) || sp.outer != sd.outer || sp.inner != sd.inner)
    throw bad_input(fmt::format("gather: shard of {} tokens does not match {} positions or the full tensor's shape",
                                sp.extent, positions.size()));
  check_positions(positions, sd.extent, "gather");
  for (int64_t o = 0; o < sp.outer; ++o)
    for (int64_t i = 0; i < sp.extent; ++i)
      std::copy_n(part.data.data() + (o * sp.extent + i) * sp.inner, sp.inner,
                  dst.data.data() + (o * sd.extent + positions[static_cast<size_t>(i)]) * sd.inner);
}

ContextParallel::ContextParallel(Communicator* cp, CpScheme scheme, int64_t seq_len)
    : ContextParallel(scheme, seq_len, cp != nullptr ? cp->size() : 1, cp != nullptr ? cp->rank() : 0) {
  cp_ = cp;
}

ContextParallel::ContextParallel(CpScheme scheme, int64_t seq_len, int64_t cp_size, int64_t cp_rank)
    : scheme_(scheme), seq_len_(seq_len), cp_size_(cp_size), cp_rank_(cp_rank),
      positions_(shard_positions(scheme, seq_len, cp_size, cp_rank)) {}

template <class T>
HostTensor<T> ContextParallel::shard(const HostTensor<T>& full, int seq_dim) const {
  const Split s = split_at(full, seq_dim, "shard");
  if (s.extent != seq_len_)
    throw bad_input(fmt::format("shard: tensor's sequence dim {} has {} entries but the CP sequence length is {}",
                                seq_dim, s.extent, seq_len_));
  return select_along(full, seq_dim, positions_);
}

template <class T>
std::vector<HostTensor<T>> ContextParallel::shard(const std::vector<HostTensor<T>>& buffers,
                                                  const std::vector<int>& seq_dims) const {
  if (buffers.size() != seq_dims.size())
    throw bad_input(fmt::format("shard: {} buffers but {} sequence dims; give one dim per buffer", buffers.size(),
                                seq_dims.size()));
  std::vector<HostTensor<T>> out;
  out.reserve(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) out.push_back(shard(buffers[i], seq_dims[i]));
  return out;
}

template <class T>
HostTensor<T> ContextParallel::gather(const HostTensor<T>& local, int seq_dim) const {
  const Split s = split_at(local, seq_dim, "gather");
  if (s.extent != local_tokens())
    throw bad_input(fmt::format("gather: shard's sequence dim has {} entries, expected L/P = {}", s.extent, local_tokens()));
  HostTensor<T> full;
  full.shape = local.shape;
  full.shape[static_cast<size_t>(seq_dim)] = seq_len_;
  full.data.resize(static_cast<size_t>(full.numel()));
  if (cp_size_ == 1) {
    scatter_along(local, seq_dim, positions_, full);
    return full;
  }
  if (cp_ == nullptr) throw bad_input("gather: this ContextParallel has no communicator (offline sharding only)");
  // Every shard has the same shape, so one all_gather collects them in CP-rank order.
  std::vector<T> all(local.data.size() * static_cast<size_t>(cp_size_));
  cp_->all_gather(local.data.data(), all.data(), local.data.size() * sizeof(T));
  HostTensor<T> part;
  part.shape = local.shape;
  for (int64_t r = 0; r < cp_size_; ++r) {
    part.data.assign(all.begin() + static_cast<ptrdiff_t>(r * local.data.size()),
                     all.begin() + static_cast<ptrdiff_t>((r + 1) * local.data.size()));
    scatter_along(part, seq_dim, positions_of(r), full);
  }
  return full;
}

#define RINGPLAN_SHARDING_INSTANTIATE(T)                                                                        \
  template struct HostTensor<T>;                                                                                \
  template HostTensor<T> select_along(const HostTensor<T>&, int, const std::vector<int64_t>&);                   \
  template void scatter_along(const HostTensor<T>&, int, const std::vector<int64_t>&, HostTensor<T>&);           \
  template HostTensor<T> ContextParallel::shard(const HostTensor<T>&, int) const;                               \
  template std::vector<HostTensor<T>> ContextParallel::shard(const std::vector<HostTensor<T>>&,                  \
                                                             const std::vector<int>&) const;                    \
  template HostTensor<T> ContextParallel::gather(const HostTensor<T>&, int) const;

RINGPLAN_SHARDING_INSTANTIATE(float)
RINGPLAN_SHARDING_INSTANTIATE(double)
RINGPLAN_SHARDING_INSTANTIATE(int64_t)

}  // namespace ringplan::runtime
