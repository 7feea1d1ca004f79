// Context-parallel sequence sharding, like PyTorch's context_parallel(mesh, buffers,
// buffer_seq_dims): shard tensors along their sequence dimension for this CP rank, report the
// global positions held, and gather them back.
//
// Schemes (DESIGN.md "Sequence sharding"), rank r of P, sequence length L:
//   contiguous  tokens [r*L/P, (r+1)*L/P)                    requires L % P == 0
//   zigzag      chunks r and 2P-1-r of 2P equal chunks        requires L % 2P == 0
//   striped     tokens t with t mod P == r                    requires L % P == 0
// Every rank holds exactly L/P tokens, listed in increasing position order. A length that
// does not divide is a bad_input error naming L, P, the scheme and the valid multiple; never
// a silent truncation.
#pragma once
#include <cstdint>
#include <vector>

#include "core/config.hpp"
#include "runtime/communicator.hpp"

namespace ringplan::runtime {

// The multiple L must be of: P for contiguous and striped, 2P for zigzag.
int64_t shard_multiple(CpScheme scheme, int64_t cp_size);
// Throws bad_input unless seq_len > 0, cp_size >= 1 and seq_len is a multiple of shard_multiple.
void check_shardable(CpScheme scheme, int64_t seq_len, int64_t cp_size);
// Global positions held by rank `cp_rank` (increasing). Validates as check_shardable.
std::vector<int64_t> shard_positions(CpScheme scheme, int64_t seq_len, int64_t cp_size, int64_t cp_rank);

// Packed documents (core/documents.hpp) under CP. Any scheme above can carry documents: each
// rank's tokens take their document ids from the global sequence (documents_at). But with
// causal attention inside short documents, the work of a rank is the sum over its tokens of
// their offset in their document, which the position-based schemes do not balance (contiguous:
// a rank holding the tails of long documents does far more work than one holding many short
// ones). The per-document zigzag balances it, as Megatron-LM's packed (THD) path splits each
// sequence of cu_seqlens into 2*CP chunks and WLB-LLM balances per document:
//   each document of length len is cut into 2P chunks of floor(len / 2P) tokens, rank r taking
//   chunks r and 2P-1-r of every document; the len mod 2P tokens left at the end of each
//   document form a pool (in sequence order) that is sharded zigzag, 2P equal chunks (the pool
//   holds L - 2P * sum(floor(len / 2P)) tokens, a multiple of 2P because L is).
// Every rank holds exactly L/P tokens, listed in increasing position order. When every length
// is a multiple of 2P (Megatron pads each document to one), the causal work per rank is equal.
// Requires L % 2P == 0 and valid lengths (bad_input otherwise, naming what is wrong).
std::vector<int64_t> document_shard_positions(const std::vector<int64_t>& lengths, int64_t cp_size, int64_t cp_rank);
// The global positions of every rank, rank-major: of a scheme, and of the per-document zigzag.
std::vector<std::vector<int64_t>> scheme_shards(CpScheme scheme, int64_t seq_len, int64_t cp_size);
std::vector<std::vector<int64_t>> document_shards(const std::vector<int64_t>& lengths, int64_t cp_size);
// Document ids of the tokens at `positions` (global) for documents of `lengths`.
std::vector<int64_t> documents_at(const std::vector<int64_t>& lengths, const std::vector<int64_t>& positions);
// The positions a CP rank holds in a training step or an attention layer: the per-document
// zigzag when packed documents (non-empty lengths) meet the zigzag scheme, else the scheme's.
std::vector<int64_t> rank_positions(CpScheme scheme, int64_t seq_len, const std::vector<int64_t>& lengths,
                                    int64_t cp_size, int64_t cp_rank);
// Attention work per rank: the unmasked (query, key) pairs of each rank's queries against the
// whole sequence (what the ring computes on that rank over all its steps). A query at offset t
// of a document of length len has t + 1 visible keys (causal) or len (non-causal). Without
// documents pass lengths = {seq_len}. O(L).
std::vector<int64_t> rank_attention_pairs(const std::vector<std::vector<int64_t>>& shards,
                                          const std::vector<int64_t>& lengths, bool causal);
// Work imbalance of a layout: max / mean of rank_attention_pairs (1 = balanced; the factor by
// which the slowest rank's attention time exceeds a perfectly balanced split).
double attention_work_imbalance(const std::vector<std::vector<int64_t>>& shards, const std::vector<int64_t>& lengths,
                                bool causal);

// A dense row-major host tensor.
template <class T>
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<T> data;
  int64_t numel() const;
};

// Gathers rows of `src` along `seq_dim` at `positions` into a new tensor whose seq_dim has
// positions.size() entries. Throws bad_input on a bad dim or an out-of-range position.
template <class T>
HostTensor<T> select_along(const HostTensor<T>& src, int seq_dim, const std::vector<int64_t>& positions);
// Inverse of select_along: writes `part`'s rows into `dst` at `positions`.
template <class T>
void scatter_along(const HostTensor<T>& part, int seq_dim, const std::vector<int64_t>& positions, HostTensor<T>& dst);

class ContextParallel {
 public:
  // `cp` is the CP group (its rank is this rank's CP index). It may be null for offline use
  // (sharding only; gather then throws), in which case cp_rank/cp_size are given explicitly.
  ContextParallel(Communicator* cp, CpScheme scheme, int64_t seq_len);
  ContextParallel(CpScheme scheme, int64_t seq_len, int64_t cp_size, int64_t cp_rank);

  CpScheme scheme() const { return scheme_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t cp_size() const { return cp_size_; }
  int64_t cp_rank() const { return cp_rank_; }
  int64_t local_tokens() const { return seq_len_ / cp_size_; }
  const std::vector<int64_t>& positions() const { return positions_; }
  std::vector<int64_t> positions_of(int64_t rank) const { return shard_positions(scheme_, seq_len_, cp_size_, rank); }

  // Shards each buffer along its sequence dim (whose extent must equal seq_len).
  template <class T>
  std::vector<HostTensor<T>> shard(const std::vector<HostTensor<T>>& buffers, const std::vector<int>& seq_dims) const;
  template <class T>
  HostTensor<T> shard(const HostTensor<T>& full, int seq_dim) const;
  // All-gathers the shards of the CP group and unpermutes them into the full sequence.
  template <class T>
  HostTensor<T> gather(const HostTensor<T>& local, int seq_dim) const;

 private:
  Communicator* cp_ = nullptr;
  CpScheme scheme_;
  int64_t seq_len_, cp_size_, cp_rank_;
  std::vector<int64_t> positions_;
};

}  // namespace ringplan::runtime
