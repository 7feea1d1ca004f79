#include "runtime/executor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>

#include "core/error.hpp"
#include "core/documents.hpp"
#include "runtime/allgather_attention.hpp"
#include "runtime/alltoall_attention.hpp"
#include "runtime/hybrid_attention.hpp"
#include "runtime/memory.hpp"
#include "runtime/sharding.hpp"

namespace ringplan::runtime {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

namespace {

uint64_t mix(uint64_t x) { return splitmix64(x); }

}  // namespace

float synthetic_value(uint64_t seed, SyntheticTensor t, int64_t b, int64_t h, int64_t pos, int64_t d) {
  uint64_t x = mix(seed ^ (static_cast<uint64_t>(t) << 56));
  x = mix(x ^ static_cast<uint64_t>(b));
  x = mix(x ^ static_cast<uint64_t>(h));
  x = mix(x ^ static_cast<uint64_t>(pos));
  x = mix(x ^ static_cast<uint64_t>(d));
  // Top 24 bits -> [0, 1) exactly representable in float32, then [-1, 1).
  return static_cast<float>(x >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

void fill_synthetic(float* dst, uint64_t seed, SyntheticTensor t, int64_t batch, int64_t heads,
                    const int64_t* positions, int64_t n, int64_t head_dim) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < head_dim; ++d)
          *dst++ = synthetic_value(seed, t, b, h, positions[i], d);
}

PhaseTimes phase_times(const std::vector<RankIterationSample>& ranks) {
  PhaseTimes t;
  double end = 0;
  for (const auto& r : ranks) {
    t.forward_s = std::max(t.forward_s, r.forward_s);
    end = std::max(end, r.forward_s + r.backward_s);
  }
  t.backward_s = end - t.forward_s;  // >= 0: end >= every rank's forward_s
  return t;
}

SampleStats sample_stats(std::vector<double> xs) {
  SampleStats s;
  s.count = static_cast<int64_t>(xs.size());
  if (xs.empty()) return s;
  std::sort(xs.begin(), xs.end());
  // Linear interpolation between order statistics (numpy's default percentile).
  auto q = [&](double f) {
    const double idx = f * static_cast<double>(xs.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(idx));
    const size_t hi = std::min(lo + 1, xs.size() - 1);
    return xs[lo] + (xs[hi] - xs[lo]) * (idx - static_cast<double>(lo));
  };
  s.min = xs.front();
  s.max = xs.back();
  s.median = q(0.5);
  s.p10 = q(0.1);
  s.p90 = q(0.9);
  return s;
}

RingConfig ring_config(const RingLayerShape& shape, int64_t tokens_per_rank, const kernels::TileConfig& tiles) {
  RingConfig cfg;
  cfg.batch = shape.batch;
  cfg.heads = shape.heads;
  cfg.kv_heads = shape.kv_heads;
  cfg.tokens = tokens_per_rank;
  cfg.head_dim = shape.head_dim;
  cfg.causal = shape.causal;
  cfg.kernel = shape.kernel;
  cfg.tiles = tiles;
  return cfg;
}

void gather_measurement(Communicator& cp, const std::vector<RankIterationSample>& mine, int64_t my_pairs,
                        const RankMemory& mem, const std::vector<TraceEvent>* events, RingLayerMeasurement& m) {
  const int P = cp.size();
  const size_t iters = mine.size();
  std::vector<RankIterationSample> all(iters * static_cast<size_t>(P));
  static_assert(std::is_trivially_copyable_v<RankIterationSample>);
  cp.all_gather(mine.data(), all.data(), iters * sizeof(RankIterationSample));
  m.samples.assign(iters, std::vector<RankIterationSample>(static_cast<size_t>(P)));
  for (int r = 0; r < P; ++r)
    for (size_t i = 0; i < iters; ++i) m.samples[i][static_cast<size_t>(r)] = all[static_cast<size_t>(r) * iters + i];
  m.forward_pairs.resize(static_cast<size_t>(P));
  cp.all_gather(&my_pairs, m.forward_pairs.data(), sizeof(int64_t));
  static_assert(std::is_trivially_copyable_v<RankMemory>);
  m.memory.resize(static_cast<size_t>(P));
  cp.all_gather(&mem, m.memory.data(), sizeof(RankMemory));
  m.hosts.clear();
  for (int r = 0; r < P; ++r) m.hosts.push_back(cp.describe_rank(r));
  if (events != nullptr) m.trace = gather_events(cp, *events);
}

RingLayerMeasurement run_ring_layer(Communicator& cp, const RingLayerShape& shape, const ExecutorOptions& opt) {
  if (opt.iterations < 1) throw bad_input(fmt::format("iterations = {}: must be >= 1", opt.iterations));
  if (opt.warmup < 0) throw bad_input(fmt::format("warmup = {}: must be >= 0", opt.warmup));
  const int P = cp.size();
  check_shardable(shape.scheme, shape.seq_len, P);
  const ContextParallel ctx(&cp, shape.scheme, shape.seq_len);
  const int64_t n = ctx.local_tokens();

  RingLayerMeasurement m;
  m.shape = shape;
  m.cp_size = P;
  // Memory: start from a clean high-water mark before any of this layer's buffers exist.
  cp.barrier();
  RankMemory mem;
  mem.rss_peak_was_reset = reset_peak_rss();
  const int64_t rss_before = current_rss_bytes();

  const size_t q_elems = static_cast<size_t>(shape.batch * shape.heads * n * shape.head_dim);
  const size_t kv_elems = static_cast<size_t>(shape.batch * shape.kv_heads * n * shape.head_dim);
  const size_t rows = static_cast<size_t>(shape.batch * shape.heads * n);
  std::vector<float> q(q_elems), k(kv_elems), v(kv_elems), out(q_elems), lse(rows), dout(q_elems), dq(q_elems),
      dk(kv_elems), dv(kv_elems);
  // Positions and document ids as the training step takes them (Trainer's constructor).
  const bool packed = !shape.document_lengths.empty();
  if (packed) {
    if (const std::string why = check_document_lengths(shape.document_lengths, shape.seq_len); !why.empty())
      throw bad_input("packed documents: " + why);
  }
  const std::vector<int64_t> positions = rank_positions(shape.scheme, shape.seq_len, shape.document_lengths, P, cp.rank());
  const std::vector<int64_t> documents =
      packed ? documents_at(shape.document_lengths, positions) : std::vector<int64_t>{};
  const int64_t* pos = positions.data();
  const int64_t* docs = packed ? documents.data() : nullptr;
  fill_synthetic(q.data(), opt.seed, SyntheticTensor::q, shape.batch, shape.heads, pos, n, shape.head_dim);
  fill_synthetic(k.data(), opt.seed, SyntheticTensor::k, shape.batch, shape.kv_heads, pos, n, shape.head_dim);
  fill_synthetic(v.data(), opt.seed, SyntheticTensor::v, shape.batch, shape.kv_heads, pos, n, shape.head_dim);
  fill_synthetic(dout.data(), opt.seed, SyntheticTensor::grad_out, shape.batch, shape.heads, pos, n, shape.head_dim);
  mem.tensors_bytes = static_cast<int64_t>((4 * q_elems + 4 * kv_elems + rows) * sizeof(float));  // q,out,dout,dq; k,v,dk,dv; lse

  // One of the two CP methods, behind the same loop: forward, backward, their timings.
  std::unique_ptr<RingAttention> ring;
  std::unique_ptr<AllGatherAttention> gather;
  std::unique_ptr<AllToAllAttention> a2a;
  std::unique_ptr<HybridAttention> hybrid;
  if (shape.comm == CpComm::hybrid) {
    if (opt.trace) throw bad_input("trace: the hybrid CP layer records no trace events (ring only)");
    hybrid = std::make_unique<HybridAttention>(cp, shape.a2a_size, ring_config(shape, n, opt.tiles), pos, docs);
    mem.workspace = hybrid->workspace();
  } else if (shape.comm == CpComm::allgather) {
    if (opt.trace) throw bad_input("trace: the all-gather CP layer records no trace events (ring only)");
    gather = std::make_unique<AllGatherAttention>(cp, ring_config(shape, n, opt.tiles), pos, docs);
    mem.workspace = gather->workspace();
  } else if (shape.comm == CpComm::alltoall) {
    if (opt.trace) throw bad_input("trace: the all-to-all CP layer records no trace events (ring only)");
    a2a = std::make_unique<AllToAllAttention>(cp, ring_config(shape, n, opt.tiles), pos, docs);
    mem.workspace = a2a->workspace();
  } else {
    ring = std::make_unique<RingAttention>(cp, ring_config(shape, n, opt.tiles), pos, docs);
    mem.workspace = ring->workspace_bytes();
  }
  mem.tracked_bytes = mem.tensors_bytes + mem.workspace.total();

  TraceRecorder recorder;
  if (opt.trace && ring) ring->set_trace(&recorder);
  std::vector<RankIterationSample> mine;
  for (int it = -opt.warmup; it < opt.iterations; ++it) {
    cp.barrier();  // iterations start together, so a rank's wait is the ring's, not the last iteration's skew
    if (it == 0) recorder.reset_epoch();
    recorder.set_iteration(it);
    if (ring) {
      ring->forward(q.data(), k.data(), v.data(), out.data(), lse.data());
      ring->backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    } else if (hybrid) {
      hybrid->forward(q.data(), k.data(), v.data(), out.data(), lse.data());
      hybrid->backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    } else if (gather) {
      gather->forward(q.data(), k.data(), v.data(), out.data(), lse.data());
      gather->backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    } else {
      a2a->forward(q.data(), k.data(), v.data(), out.data(), lse.data());
      a2a->backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    }
    if (opt.on_iteration) opt.on_iteration(it + opt.warmup + 1, int64_t{opt.warmup} + opt.iterations);
    if (it < 0) {
      recorder.clear();
      continue;
    }
    if (ring) {
      const RingPassTiming& f = ring->last_forward();
      const RingPassTiming& b = ring->last_backward();
      mine.push_back({f.total_s, f.compute_s(), f.comm_wait_s(), b.total_s, b.compute_s(), b.comm_wait_s()});
    } else {
      // Compute = the kernel call (+ packing); comm = time in the all-gather / reduce-scatter
      // (or the all-to-alls), waits on slower ranks included (the counterpart of the ring's comm_wait).
      const AllGatherTiming& f = hybrid ? hybrid->last_forward() : gather ? gather->last_forward() : a2a->last_forward();
      const AllGatherTiming& b =
          hybrid ? hybrid->last_backward() : gather ? gather->last_backward() : a2a->last_backward();
      mine.push_back({f.total_s, f.compute_s, f.comm_s, b.total_s, b.compute_s, b.comm_s});
    }
  }
  // Results must be finite; a NaN means a kernel or merge bug, and timing it would be meaningless.
  for (float x : dq)
    if (!std::isfinite(x)) throw Error(ErrorKind::runtime, fmt::format("{}: non-finite dQ after the {} backward", cp.describe_rank(cp.rank()), ring ? "ring" : hybrid ? "hybrid" : gather ? "all-gather" : "all-to-all"));

  const int64_t peak = peak_rss_bytes();
  mem.peak_memory_rise_bytes = (peak >= 0 && rss_before >= 0) ? peak - rss_before : -1;
  const int64_t pairs = ring     ? ring->last_forward().visible_pairs()
                        : hybrid ? hybrid->visible_pairs()
                        : gather ? gather->visible_pairs()
                                 : a2a->visible_pairs();
  gather_measurement(cp, mine, pairs, mem, opt.trace ? &recorder.events() : nullptr, m);
  return m;
}

}  // namespace ringplan::runtime
