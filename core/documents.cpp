#include "core/documents.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.hpp"

namespace ringplan {
namespace {

// splitmix64 (Steele, Lea, Flood 2014): a 64-bit state stepped by a constant and mixed; fully
// specified, so a seed reproduces on every platform.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1]: 53 random bits, never 0 (Box-Muller takes its logarithm).
  double unit() { return (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53; }
};

}  // namespace

const char* to_string(DocumentLengthKind k) {
  switch (k) {
    case DocumentLengthKind::fixed: return "fixed";
    case DocumentLengthKind::uniform: return "uniform";
    case DocumentLengthKind::lognormal: return "lognormal";
  }
  return "?";
}

std::optional<DocumentLengthKind> parse_document_length_kind(const std::string& s) {
  for (DocumentLengthKind k : {DocumentLengthKind::fixed, DocumentLengthKind::uniform, DocumentLengthKind::lognormal})
    if (s == to_string(k)) return k;
  return std::nullopt;
}

std::vector<std::string> document_length_kind_names() { return {"fixed", "uniform", "lognormal"}; }

std::string check_document_lengths(const std::vector<int64_t>& lengths, int64_t seq_len) {
  if (lengths.empty()) return "no documents: give at least one length";
  int64_t sum = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] < 1)
      return "document " + std::to_string(i) + " has length " + std::to_string(lengths[i]) +
             "; every length must be >= 1";
    if (lengths[i] > seq_len)
      return "document " + std::to_string(i) + " has length " + std::to_string(lengths[i]) +
             ", longer than the sequence (seq_len " + std::to_string(seq_len) + ")";
    sum += lengths[i];  // each <= seq_len <= 2^31 and at most 2^31 of them: no overflow before the check below
    if (sum > seq_len) break;
  }
  if (sum != seq_len)
    return "the document lengths sum to " + std::string(sum > seq_len ? "more than " : "") + std::to_string(sum) +
           " but must sum to seq_len = " + std::to_string(seq_len) + " (the documents fill the sequence exactly)";
  return {};
}

std::vector<int64_t> document_lengths(const DocumentSpec& spec, int64_t seq_len) {
  if (seq_len < 1) throw bad_input("document lengths: seq_len " + std::to_string(seq_len) + " must be >= 1");
  if (spec.kind == DocumentLengthKind::fixed) {
    if (const std::string e = check_document_lengths(spec.lengths, seq_len); !e.empty())
      throw bad_input("documents: " + e);
    return spec.lengths;
  }
  if (!(spec.mean_length >= 1.0) || !std::isfinite(spec.mean_length))
    throw bad_input("documents: mean_length " + std::to_string(spec.mean_length) + " must be a finite number >= 1");
  if (spec.kind == DocumentLengthKind::lognormal && !(spec.sigma > 0.0 && spec.sigma <= 4.0))
    throw bad_input("documents: sigma " + std::to_string(spec.sigma) + " must be in (0, 4]");
  SplitMix64 rng{spec.seed};
  const double mu = std::log(spec.mean_length) - 0.5 * spec.sigma * spec.sigma;
  // Largest uniform length: 2*mean - 1, so that lengths 1 .. max have mean `mean_length`.
  const auto uniform_max = static_cast<uint64_t>(std::max(1.0, std::floor(2.0 * spec.mean_length - 1.0)));
  std::vector<int64_t> lengths;
  int64_t covered = 0;
  while (covered < seq_len) {
    double drawn = 1.0;
    if (spec.kind == DocumentLengthKind::uniform) {
      drawn = 1.0 + static_cast<double>(rng.next() % uniform_max);
    } else {
      const double u1 = rng.unit(), u2 = rng.unit();
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
      drawn = std::max(1.0, std::round(std::exp(mu + spec.sigma * z)));
    }
    // Compare in double before converting: a lognormal tail can exceed int64.
    const int64_t left = seq_len - covered;
    const int64_t len = drawn >= static_cast<double>(left) ? left : static_cast<int64_t>(drawn);
    lengths.push_back(len);
    covered += len;
  }
  return lengths;
}

std::vector<int64_t> document_ids(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> ids;
  for (size_t d = 0; d < lengths.size(); ++d) ids.insert(ids.end(), static_cast<size_t>(lengths[d]), static_cast<int64_t>(d));
  return ids;
}

std::vector<int64_t> document_positions(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> pos;
  for (int64_t len : lengths)
    for (int64_t i = 0; i < len; ++i) pos.push_back(i);
  return pos;
}

namespace {

// Sum of (u + 1) for u in [lo, hi): the causal keys of queries at document offsets lo .. hi-1.
int64_t causal_keys(int64_t lo, int64_t hi) { return hi * (hi + 1) / 2 - lo * (lo + 1) / 2; }
// Keys of the queries at document offsets [lo, hi) of a document of length len.
int64_t keys_of(int64_t lo, int64_t hi, int64_t len, bool causal) {
  if (hi <= lo) return 0;
  return causal ? causal_keys(lo, hi) : (hi - lo) * len;
}

}  // namespace

int64_t document_rank_pairs(const std::vector<int64_t>& lengths, CpScheme scheme, int64_t cp, int64_t rank,
                            bool causal) {
  int64_t seq_len = 0;
  for (int64_t len : lengths) seq_len += len;
  const int64_t P = cp, r = rank;
  int64_t pairs = 0, start = 0;
  switch (scheme) {
    case CpScheme::contiguous: {
      const int64_t n = seq_len / P, a = r * n, b = (r + 1) * n;
      for (int64_t len : lengths) {
        pairs += keys_of(std::max(a, start) - start, std::min(b, start + len) - start, len, causal);
        start += len;
      }
      return pairs;
    }
    case CpScheme::striped:
      for (int64_t len : lengths) {
        // Tokens t = r (mod P) of [start, start + len): offsets u0, u0 + P, ... (k of them).
        const int64_t u0 = ((r - start) % P + P) % P;
        if (u0 < len) {
          const int64_t k = (len - 1 - u0) / P + 1;
          pairs += causal ? k * (u0 + 1) + P * k * (k - 1) / 2 : k * len;
        }
        start += len;
      }
      return pairs;
    case CpScheme::zigzag: {
      // Each document's chunks r and 2P-1-r of floor(len / 2P) tokens; the leftovers of every
      // document form a pool of R tokens (in sequence order) cut into 2P chunks of R / 2P.
      const int64_t chunks = 2 * P;
      int64_t pool = 0;
      for (int64_t len : lengths) pool += len % chunks;
      const int64_t pc = pool / chunks;
      const int64_t pool_ranges[2][2] = {{r * pc, (r + 1) * pc}, {(chunks - 1 - r) * pc, (chunks - r) * pc}};
      int64_t p0 = 0;  // pool index of this document's first leftover token
      for (int64_t len : lengths) {
        const int64_t c = len / chunks;
        pairs += keys_of(r * c, (r + 1) * c, len, causal);
        pairs += keys_of((chunks - 1 - r) * c, (chunks - r) * c, len, causal);
        const int64_t rem = len % chunks;
        for (const auto& range : pool_ranges) {
          const int64_t lo = std::max(range[0], p0), hi = std::min(range[1], p0 + rem);
          // Pool index i holds document offset chunks * c + (i - p0).
          if (lo < hi) pairs += keys_of(chunks * c + lo - p0, chunks * c + hi - p0, len, causal);
        }
        p0 += rem;
      }
      return pairs;
    }
  }
  return pairs;
}

DocumentAttentionWork document_attention_work(const std::vector<int64_t>& lengths, CpScheme scheme, int64_t cp,
                                              bool causal) {
  DocumentAttentionWork w;
  int64_t seq_len = 0, total = 0;
  for (int64_t len : lengths) {
    seq_len += len;
    total += causal ? causal_keys(0, len) : len * len;
  }
  if (seq_len < 1 || cp < 1) return w;
  const double whole = causal ? static_cast<double>(causal_keys(0, seq_len)) : double(seq_len) * double(seq_len);
  w.pair_fraction = static_cast<double>(total) / whole;
  int64_t max_rank = 0;
  for (int64_t r = 0; r < cp; ++r) max_rank = std::max(max_rank, document_rank_pairs(lengths, scheme, cp, r, causal));
  const double mean = static_cast<double>(total) / static_cast<double>(cp);
  w.imbalance = mean > 0 ? static_cast<double>(max_rank) / mean : 1.0;
  return w;
}

}  // namespace ringplan
