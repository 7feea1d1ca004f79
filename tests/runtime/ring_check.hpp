// Test helper: runs ring (or all-gather, or all-to-all) attention on a CP group, optionally with
// packed documents, and compares O, lse, dQ, dK, dV of this rank's
// shard with the single-process float64 reference (kernels::reference_*) over the whole
// sequence, restricted to the shard. Inputs come from runtime::synthetic_value, i.e. they
// depend on the global position only, so every scheme and P sees the same problem.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.hpp"
#include "runtime/allgather_attention.hpp"
#include "runtime/alltoall_attention.hpp"
#include "runtime/hybrid_attention.hpp"
#include "runtime/executor.hpp"
#include "runtime/ring_attention.hpp"
#include "runtime/sharding.hpp"

namespace ringplan::test {

struct RingCase {
  int64_t batch = 1, heads = 2, kv_heads = 2, seq_len = 48, head_dim = 16;
  bool causal = true;
  CpScheme scheme = CpScheme::contiguous;
  AttentionImpl kernel = AttentionImpl::flash;
  uint64_t seed = 7;
  bool allgather = false;  // the all-gather CP method instead of the ring
  bool alltoall = false;   // the all-to-all (Ulysses) CP method instead of the ring
  int64_t hybrid_a2a = 0;  // > 0: hybrid CP (HybridAttention) with all-to-all groups of this many ranks
  // Packed documents (lengths summing to seq_len; empty: one document) and whether the shards
  // are the per-document zigzag (runtime::document_shard_positions) instead of `scheme`.
  std::vector<int64_t> doc_lengths;
  bool per_document = false;
};

// Max abs error of each output, and the max abs value of the reference (for relative bounds).
struct RingErrors {
  double out = 0, lse = 0, grad_q = 0, grad_k = 0, grad_v = 0;
  double ref_out = 0, ref_grad_q = 0, ref_grad_k = 0, ref_grad_v = 0;
  std::vector<float> out_shard;  // this rank's O, for gather tests
  double worst_relative() const {
    auto rel = [](double e, double ref) { return e / std::max(1.0, ref); };
    return std::max({rel(out, ref_out), lse, rel(grad_q, ref_grad_q), rel(grad_k, ref_grad_k), rel(grad_v, ref_grad_v)});
  }
};

// Full-sequence float64 tensor [b, heads, L, d] of synthetic values.
inline std::vector<double> full_tensor(const RingCase& c, runtime::SyntheticTensor t, int64_t heads) {
  std::vector<double> x(static_cast<size_t>(c.batch * heads * c.seq_len * c.head_dim));
  size_t i = 0;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t p = 0; p < c.seq_len; ++p)
        for (int64_t d = 0; d < c.head_dim; ++d) x[i++] = runtime::synthetic_value(c.seed, t, b, h, p, d);
  return x;
}

// Max |a - ref[rows at positions]| for a shard a [b, heads, n, width] of a full ref [b, heads, L, width].
inline double shard_error(const std::vector<float>& a, const std::vector<double>& ref, int64_t outer, int64_t seq_len,
                          const std::vector<int64_t>& pos, int64_t width, double* ref_max) {
  double err = 0;
  const int64_t n = static_cast<int64_t>(pos.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t x = 0; x < width; ++x) {
        const double r = ref[static_cast<size_t>((o * seq_len + pos[static_cast<size_t>(i)]) * width + x)];
        const double v = a[static_cast<size_t>((o * n + i) * width + x)];
        if (ref_max) *ref_max = std::max(*ref_max, std::abs(r));
        if (std::isinf(r) || std::isinf(v))
          err = std::max(err, (r == v) ? 0.0 : INFINITY);
        else
          err = std::max(err, std::abs(v - r));
      }
  return err;
}

// Collective over `cp`: every rank runs the ring and checks its own shard.
inline RingErrors run_ring_case(runtime::Communicator& cp, const RingCase& c) {
  using runtime::SyntheticTensor;
  const std::vector<int64_t> pos = c.per_document ? runtime::document_shard_positions(c.doc_lengths, cp.size(), cp.rank())
                                                   : runtime::shard_positions(c.scheme, c.seq_len, cp.size(), cp.rank());
  const int64_t n = c.seq_len / cp.size();
  // Each shard carries its tokens' document ids (null without documents).
  const std::vector<int64_t> docs = c.doc_lengths.empty() ? std::vector<int64_t>{}
                                                          : runtime::documents_at(c.doc_lengths, pos);
  const int64_t* doc_ptr = docs.empty() ? nullptr : docs.data();
  const size_t qe = static_cast<size_t>(c.batch * c.heads * n * c.head_dim);
  const size_t ke = static_cast<size_t>(c.batch * c.kv_heads * n * c.head_dim);
  const size_t rows = static_cast<size_t>(c.batch * c.heads * n);
  std::vector<float> q(qe), k(ke), v(ke), dout(qe), out(qe), lse(rows), dq(qe), dk(ke), dv(ke);
  runtime::fill_synthetic(q.data(), c.seed, SyntheticTensor::q, c.batch, c.heads, pos.data(), n, c.head_dim);
  runtime::fill_synthetic(k.data(), c.seed, SyntheticTensor::k, c.batch, c.kv_heads, pos.data(), n, c.head_dim);
  runtime::fill_synthetic(v.data(), c.seed, SyntheticTensor::v, c.batch, c.kv_heads, pos.data(), n, c.head_dim);
  runtime::fill_synthetic(dout.data(), c.seed, SyntheticTensor::grad_out, c.batch, c.heads, pos.data(), n, c.head_dim);

  runtime::RingConfig cfg;
  cfg.batch = c.batch;
  cfg.heads = c.heads;
  cfg.kv_heads = c.kv_heads;
  cfg.tokens = n;
  cfg.head_dim = c.head_dim;
  cfg.causal = c.causal;
  cfg.kernel = c.kernel;
  cfg.tiles.tile_q = 16;  // small tiles so partial tiles and tile-level masking are exercised
  cfg.tiles.tile_k = 16;
  if (c.hybrid_a2a > 0) {
    runtime::HybridAttention h(cp, c.hybrid_a2a, cfg, pos.data(), doc_ptr);
    h.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
    h.backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  } else if (c.alltoall) {
    runtime::AllToAllAttention a2a(cp, cfg, pos.data(), doc_ptr);
    a2a.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
    a2a.backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  } else if (c.allgather) {
    runtime::AllGatherAttention ag(cp, cfg, pos.data(), doc_ptr);
    ag.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
    ag.backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  } else {
    runtime::RingAttention ring(cp, cfg, pos.data(), doc_ptr);
    ring.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
    ring.backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  }

  // Reference over the whole sequence (positions 0..L-1).
  const int64_t L = c.seq_len;
  std::vector<int64_t> all_pos(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) all_pos[static_cast<size_t>(i)] = i;
  const std::vector<int64_t> all_docs = c.doc_lengths.empty() ? std::vector<int64_t>{}
                                                              : runtime::documents_at(c.doc_lengths, all_pos);
  const int64_t* all_doc_ptr = all_docs.empty() ? nullptr : all_docs.data();
  const auto Q = full_tensor(c, SyntheticTensor::q, c.heads), K = full_tensor(c, SyntheticTensor::k, c.kv_heads),
             V = full_tensor(c, SyntheticTensor::v, c.kv_heads), dO = full_tensor(c, SyntheticTensor::grad_out, c.heads);
  std::vector<double> O(Q.size()), LSE(static_cast<size_t>(c.batch * c.heads * L)), dQ(Q.size()), dK(K.size()),
      dV(V.size());
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  kernels::reference_forward(Q.data(), K.data(), V.data(), all_pos.data(), all_pos.data(), c.batch, c.heads, c.kv_heads,
                             L, L, c.head_dim, c.causal, scale, O.data(), LSE.data(), all_doc_ptr, all_doc_ptr);
  kernels::reference_backward(Q.data(), K.data(), V.data(), O.data(), dO.data(), LSE.data(), all_pos.data(),
                              all_pos.data(), c.batch, c.heads, c.kv_heads, L, L, c.head_dim, c.causal, scale, dQ.data(),
                              dK.data(), dV.data(), all_doc_ptr, all_doc_ptr);
  RingErrors e;
  e.out = shard_error(out, O, c.batch * c.heads, L, pos, c.head_dim, &e.ref_out);
  e.lse = shard_error(lse, LSE, c.batch * c.heads, L, pos, 1, nullptr);
  e.grad_q = shard_error(dq, dQ, c.batch * c.heads, L, pos, c.head_dim, &e.ref_grad_q);
  e.grad_k = shard_error(dk, dK, c.batch * c.kv_heads, L, pos, c.head_dim, &e.ref_grad_k);
  e.grad_v = shard_error(dv, dV, c.batch * c.kv_heads, L, pos, c.head_dim, &e.ref_grad_v);
  e.out_shard = std::move(out);
  return e;
}

}  // namespace ringplan::test
