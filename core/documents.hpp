// Packed documents (core/config.hpp DocumentSpec): the lengths of one sequence's documents, and
// the per-token vocabulary the attention kernels and sharding use: a document id per token (0,
// 1, ... in sequence order) and a position within the document (restarting at 0 at each
// document, the position ids of Megatron-LM / TransformerEngine packed sequences, which rotary
// embeddings read). The attention mask uses the document ids with the GLOBAL positions: query i
// sees key j iff doc(i) == doc(j) and (non-causal or pos(j) <= pos(i)); because a document is
// a contiguous range of the sequence, that is causal attention within each document.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace ringplan {

const char* to_string(DocumentLengthKind k);
std::optional<DocumentLengthKind> parse_document_length_kind(const std::string& s);
std::vector<std::string> document_length_kind_names();  // "fixed" is spelt `lengths:` in YAML

// "" when `lengths` can describe a sequence of seq_len tokens (non-empty, every length >= 1,
// sum == seq_len), else what is wrong, naming the first bad entry or the sum.
std::string check_document_lengths(const std::vector<int64_t>& lengths, int64_t seq_len);

// The document lengths of one sequence of seq_len tokens (what the loader stores in
// DocumentSpec::lengths). fixed: spec.lengths (checked).
// uniform: lengths drawn uniformly from 1 .. 2*mean_length - 1; lognormal: round(exp(N(mu,
// sigma^2))), at least 1, with mu = ln(mean_length) - sigma^2/2 so that the mean is mean_length.
// Drawn until they cover the sequence; the last document is cut at the sequence's end, as a
// packing data loader cuts it. The draw uses its own generator (splitmix64, Box-Muller), not the
// standard library's distributions, so a seed gives the same lengths with every compiler.
// Throws bad_input on an invalid spec (what check_document_lengths or the ranges refuse).
std::vector<int64_t> document_lengths(const DocumentSpec& spec, int64_t seq_len);

// Per token: the document id (0-based, in sequence order) and the position within the document.
std::vector<int64_t> document_ids(const std::vector<int64_t>& lengths);
std::vector<int64_t> document_positions(const std::vector<int64_t>& lengths);

// Attention work of packed documents under CP: the visible (query, key) pairs of each rank's
// queries against the whole sequence (a query at offset t of a document of length len sees t + 1
// keys causal, len non-causal), for the token layout each scheme gives with documents:
//   contiguous, striped  the schemes' positions (runtime/sharding.hpp shard_positions);
//   zigzag               the per-document zigzag (runtime/sharding.hpp document_shard_positions:
//                        each document's chunks r and 2P-1-r of 2P, leftovers zigzag), which is
//                        how Megatron-LM's packed (THD) path applies zigzag load balancing.
// Closed form per document and rank: O(documents x P) arithmetic, no allocation. The cost model
// precomputes it per CP size (sim::prepare_document_work) so that predict() only looks it up.
// Requires the layout's divisibility (L % P, or L % 2P for zigzag).
int64_t document_rank_pairs(const std::vector<int64_t>& lengths, CpScheme scheme, int64_t cp, int64_t rank,
                            bool causal);
struct DocumentAttentionWork {
  double pair_fraction = 1;  // visible pairs with documents / without (one document of seq_len)
  double imbalance = 1;      // max over ranks / mean over ranks of document_rank_pairs
};
DocumentAttentionWork document_attention_work(const std::vector<int64_t>& lengths, CpScheme scheme, int64_t cp,
                                              bool causal);

}  // namespace ringplan
