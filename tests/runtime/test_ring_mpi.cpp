// Ring attention, sharding and communicator tests under mpirun: every rank runs every case
// (they are collective), each checks its own shard, and the exit code is non-zero when any
// rank failed. Registered for P = 1, 2, 3, 4 (and 8, label "long") in tests/runtime/CMakeLists.txt.
//   mpirun -np 4 --oversubscribe build/.../tests/runtime/ringplan_test_ring_mpi
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <numeric>

#include "core/error.hpp"
#include "runtime/mesh.hpp"
#include "runtime/mpi_communicator.hpp"
#include "tests/runtime/mpi_doctest_main.hpp"
#include "tests/runtime/ring_check.hpp"

using namespace ringplan;


namespace {
runtime::MpiCommunicator* g_world = nullptr;

// Stated float32 bound: max abs error / max(1, max|reference|) over O, dQ, dK, dV (and abs
// error of lse). Inputs are in [-1, 1), d = 16, L <= 320: float32 rounding gives about
// 1e-7 .. 6e-7 here (measured, see the "error vs P" case); 2e-5 leaves a 30x margin and still
// catches any wrong mask, merge, skipped block or lost accumulator (errors of 1e-2 .. 1).
constexpr double kFloat32Bound = 2e-5;

const char* kernel_name(AttentionImpl k) { return k == AttentionImpl::flash ? "flash" : "materialized"; }

std::string case_name(const test::RingCase& c) {
  return fmt::format("P={} L={} {} {} {} b={} H={} Hkv={} d={}", g_world->size(), c.seq_len, to_string(c.scheme),
                     c.causal ? "causal" : "non-causal", kernel_name(c.kernel), c.batch, c.heads, c.kv_heads,
                     c.head_dim);
}

void check_case(const test::RingCase& c) {
  const test::RingErrors e = test::run_ring_case(*g_world, c);
  INFO(case_name(c), " rank ", g_world->rank());
  INFO(fmt::format("errors: O {:.2e} lse {:.2e} dQ {:.2e} dK {:.2e} dV {:.2e}", e.out, e.lse, e.grad_q, e.grad_k,
                   e.grad_v));
  CHECK(e.worst_relative() <= kFloat32Bound);
  // The reference must be non-trivial, or a zero output would pass.
  CHECK(e.ref_out > 0.05);
  CHECK(e.ref_grad_k > 0.01);
}

}  // namespace

TEST_CASE("ring attention equals the float64 reference: every scheme, causal and not, flash and materialised") {
  const int P = g_world->size();
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (bool causal : {true, false})
      for (AttentionImpl kernel : {AttentionImpl::flash, AttentionImpl::materialized}) {
        test::RingCase c;
        c.batch = 2;
        c.seq_len = 16 * P;  // n = 16: one full tile per block
        c.scheme = scheme;
        c.causal = causal;
        c.kernel = kernel;
        check_case(c);
      }
}

TEST_CASE("all-gather CP attention equals the float64 reference: every scheme, causal and not, GQA and MHA") {
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (bool causal : {true, false})
      for (int64_t kv : {int64_t{2}, int64_t{1}}) {
        test::RingCase c;
        c.seq_len = 48;
        c.heads = 2;
        c.kv_heads = kv;
        c.scheme = scheme;
        c.causal = causal;
        c.allgather = true;
        if (c.seq_len % runtime::shard_multiple(scheme, g_world->size()) != 0) c.seq_len = 2 * 8 * 3 * g_world->size();
        INFO(fmt::format("all-gather P={} L={} {} {} Hkv={}", g_world->size(), c.seq_len, to_string(scheme),
                         causal ? "causal" : "full", kv));
        const test::RingErrors e = test::run_ring_case(*g_world, c);
        CHECK(e.worst_relative() <= kFloat32Bound);
      }
}

TEST_CASE("all-gather CP accounting: the ring's visible pairs, buffers in the ring's categories, 6 full K,V") {
  // What `ringplan run --scope attention` reports for cp_comm allgather: the pairs its kernel
  // computes (the same as the ring's for the same positions) and its buffers, which
  // sim::allgather_buffer_bytes predicts as 6 x b * L * Hkv * d elements.
  const int P = g_world->size();
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (bool causal : {true, false}) {
      INFO(fmt::format("P={} {} {}", P, to_string(scheme), causal ? "causal" : "full"));
      const int64_t L = 32 * P;
      const runtime::ContextParallel ctx(g_world, scheme, L);
      const int64_t n = ctx.local_tokens();
      runtime::RingConfig cfg;
      cfg.batch = 2;
      cfg.heads = 4;
      cfg.kv_heads = 2;
      cfg.tokens = n;
      cfg.head_dim = 8;
      cfg.causal = causal;
      const size_t qn = static_cast<size_t>(cfg.batch * cfg.heads * n * cfg.head_dim);
      const size_t kn = static_cast<size_t>(cfg.batch * cfg.kv_heads * n * cfg.head_dim);
      std::vector<float> q(qn, 0.1f), k(kn, 0.2f), v(kn, 0.3f), out(qn), lse(static_cast<size_t>(cfg.batch * cfg.heads * n));
      runtime::RingAttention ring(*g_world, cfg, ctx.positions().data());
      ring.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
      runtime::AllGatherAttention ag(*g_world, cfg, ctx.positions().data());
      CHECK(ag.visible_pairs() == ring.last_forward().visible_pairs());
      const runtime::RingWorkspaceBytes w = ag.workspace();
      CHECK(w.total() == ag.workspace_bytes());
      const int64_t full = cfg.batch * L * cfg.kv_heads * cfg.head_dim * 4;  // float32 bytes
      CHECK(w.kv_ring_bytes + w.dkv_ring_bytes == 6 * full);
      CHECK(w.scores_bytes == 0);
    }
}

TEST_CASE("all-to-all CP attention equals the float64 reference: every scheme, causal and not, GQA and MHA") {
  // H = 2P query heads (P divides them); KV heads: MHA (2P), P (one per rank), 1 (replicated to
  // every rank) and, for even P > 2, 2 (each replicated to P/2 ranks).
  const int P = g_world->size();
  std::vector<int64_t> kvs = {2 * P, P, 1};
  if (P % 2 == 0 && P > 2) kvs.push_back(2);
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (bool causal : {true, false})
      for (int64_t kv : kvs) {
        test::RingCase c;
        c.heads = 2 * P;
        c.kv_heads = kv;
        c.seq_len = 24 * P;  // n = 24: partial tiles of 16, divisible by 2P for zigzag
        c.scheme = scheme;
        c.causal = causal;
        c.alltoall = true;
        INFO(fmt::format("all-to-all P={} L={} {} {} H={} Hkv={}", P, c.seq_len, to_string(scheme),
                         causal ? "causal" : "full", c.heads, kv));
        const test::RingErrors e = test::run_ring_case(*g_world, c);
        INFO(fmt::format("errors: O {:.2e} lse {:.2e} dQ {:.2e} dK {:.2e} dV {:.2e}", e.out, e.lse, e.grad_q, e.grad_k,
                         e.grad_v));
        CHECK(e.worst_relative() <= kFloat32Bound);
        CHECK(e.ref_out > 0.05);
        CHECK(e.ref_grad_k > 0.01);
      }
}

TEST_CASE("all-to-all CP: backward after another forward exchanges again and stays exact, accounting") {
  // The training step runs one object over every layer: a backward whose forward is not the last
  // one must not reuse the stashed head shards.
  const int P = g_world->size();
  const int64_t L = 32 * P;
  const runtime::ContextParallel ctx(g_world, CpScheme::zigzag, L);
  const int64_t n = ctx.local_tokens();
  runtime::RingConfig cfg;
  cfg.batch = 2;
  cfg.heads = 2 * P;
  cfg.kv_heads = 1;
  cfg.tokens = n;
  cfg.head_dim = 8;
  const size_t qn = static_cast<size_t>(cfg.batch * cfg.heads * n * cfg.head_dim);
  const size_t kn = static_cast<size_t>(cfg.batch * cfg.kv_heads * n * cfg.head_dim);
  const size_t rows = static_cast<size_t>(cfg.batch * cfg.heads * n);
  auto fill = [](std::vector<float>& x, float s) {
    for (size_t i = 0; i < x.size(); ++i) x[i] = s * static_cast<float>((i * 37 + 11) % 23) / 23.0f - 0.4f;
  };
  std::vector<float> q1(qn), k1(kn), v1(kn), q2(qn), k2(kn), v2(kn), dout(qn);
  fill(q1, 1.0f), fill(k1, 0.7f), fill(v1, 0.9f), fill(q2, -0.8f), fill(k2, 0.5f), fill(v2, 1.1f), fill(dout, 0.6f);
  std::vector<float> o1(qn), l1(rows), o2(qn), l2(rows);
  std::vector<float> dq_a(qn), dk_a(kn), dv_a(kn), dq_b(qn), dk_b(kn), dv_b(kn);
  runtime::AllToAllAttention a2a(*g_world, cfg, ctx.positions().data());
  // Reference: forward and backward of (q1, k1, v1) back to back (the stash is reused).
  a2a.forward(q1.data(), k1.data(), v1.data(), o1.data(), l1.data());
  a2a.backward(q1.data(), k1.data(), v1.data(), o1.data(), l1.data(), dout.data(), dq_a.data(), dk_a.data(), dv_a.data());
  CHECK(a2a.last_backward_reused_forward());
  // Interleaved: a second forward in between, then the first tensors' backward.
  a2a.forward(q1.data(), k1.data(), v1.data(), o1.data(), l1.data());
  a2a.forward(q2.data(), k2.data(), v2.data(), o2.data(), l2.data());
  a2a.backward(q1.data(), k1.data(), v1.data(), o1.data(), l1.data(), dout.data(), dq_b.data(), dk_b.data(), dv_b.data());
  CHECK_FALSE(a2a.last_backward_reused_forward());
  CHECK(dq_a == dq_b);
  CHECK(dk_a == dk_b);
  CHECK(dv_a == dv_b);
  // Accounting: pairs per rank are the layer's / P (no imbalance); buffers in the ring's categories.
  CHECK(a2a.visible_pairs() == L * (L + 1) / 2 / P);
  const runtime::RingWorkspaceBytes w = a2a.workspace();
  CHECK(w.total() == a2a.workspace_bytes());
  const int64_t per_head = cfg.batch * L * cfg.head_dim * 4;  // float32 bytes of one head, whole sequence
  CHECK(w.kv_ring_bytes + w.dkv_ring_bytes == (6 * 2 + 4 * 1) * per_head);
  CHECK(w.scores_bytes == 0);
}

TEST_CASE("all-to-all CP refuses heads the CP size cannot split and the materialised kernel") {
  const int P = g_world->size();
  const runtime::ContextParallel ctx(g_world, CpScheme::contiguous, 16 * P);
  runtime::RingConfig cfg;
  cfg.tokens = ctx.local_tokens();
  cfg.head_dim = 8;
  cfg.heads = 2 * P;
  cfg.kv_heads = 2 * P;
  cfg.kernel = AttentionImpl::materialized;
  CHECK_THROWS_AS(runtime::AllToAllAttention(*g_world, cfg, ctx.positions().data()), Error);
  if (P == 3) {
    cfg.kernel = AttentionImpl::flash;
    cfg.heads = 4;  // 4 % 3
    cfg.kv_heads = 4;
    CHECK_THROWS_AS(runtime::AllToAllAttention(*g_world, cfg, ctx.positions().data()), Error);
    cfg.heads = 6;  // 6 % 3 == 0, but 2 KV heads neither divide by 3 nor divide it
    cfg.kv_heads = 2;
    CHECK_THROWS_AS(runtime::AllToAllAttention(*g_world, cfg, ctx.positions().data()), Error);
  }
}

TEST_CASE("hybrid CP attention equals the float64 reference: every group size, scheme, causal and not, GQA and MHA") {
  // Every divisor A of P (A = 1: the plain ring over P ranks, A = P: the all-to-all with a ring of
  // one). H = 2P query heads; KV heads: MHA (2P), A (one per group member), 1 (replicated to the
  // whole group).
  const int P = g_world->size();
  for (int64_t A = 1; A <= P; ++A) {
    if (P % A != 0) continue;
    std::vector<int64_t> kvs = {2 * P, 1};
    if (A > 1 && A < 2 * P) kvs.push_back(A);
    for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
      for (bool causal : {true, false})
        for (int64_t kv : kvs) {
          test::RingCase c;
          c.heads = 2 * P;
          c.kv_heads = kv;
          c.seq_len = 24 * P;  // n = 24: partial tiles of 16, divisible by 2P for zigzag
          c.scheme = scheme;
          c.causal = causal;
          c.hybrid_a2a = A;
          INFO(fmt::format("hybrid P={} A={} R={} L={} {} {} H={} Hkv={}", P, A, P / A, c.seq_len, to_string(scheme),
                           causal ? "causal" : "full", c.heads, kv));
          const test::RingErrors e = test::run_ring_case(*g_world, c);
          INFO(fmt::format("errors: O {:.2e} lse {:.2e} dQ {:.2e} dK {:.2e} dV {:.2e}", e.out, e.lse, e.grad_q,
                           e.grad_k, e.grad_v));
          CHECK(e.worst_relative() <= kFloat32Bound);
          CHECK(e.ref_out > 0.05);
          CHECK(e.ref_grad_k > 0.01);
        }
  }
}

TEST_CASE("hybrid CP: buffers are the group's all-to-all buffers plus the ring's, pairs the layer's share") {
  const int P = g_world->size();
  const int64_t L = 32 * P;
  const runtime::ContextParallel ctx(g_world, CpScheme::zigzag, L);
  runtime::RingConfig cfg;
  cfg.batch = 2;
  cfg.heads = 2 * P;
  cfg.kv_heads = 1;
  cfg.tokens = ctx.local_tokens();
  cfg.head_dim = 8;
  for (int64_t A = 1; A <= P; ++A) {
    if (P % A != 0) continue;
    INFO("A = " << A);
    runtime::HybridAttention h(*g_world, A, cfg, ctx.positions().data());
    CHECK(h.a2a_size() == A);
    CHECK(h.ring_size() == P / A);
    const size_t qn = static_cast<size_t>(cfg.batch * cfg.heads * cfg.tokens * cfg.head_dim);
    const size_t kn = static_cast<size_t>(cfg.batch * cfg.kv_heads * cfg.tokens * cfg.head_dim);
    std::vector<float> q(qn, 0.1f), k(kn, 0.2f), v(kn, 0.3f), out(qn),
        lse(static_cast<size_t>(cfg.batch * cfg.heads * cfg.tokens));
    h.forward(q.data(), k.data(), v.data(), out.data(), lse.data());
    // The group's tokens m = L/R on 2P/A query heads and max(1/A, 1) = 1 KV head: 6 Q-sized and
    // 4 KV-sized all-to-all buffers (A > 1), the ring's 2 x [K|V] and 4 x [dK|dV] (R > 1), float32.
    const int64_t m = L / (P / A);
    const int64_t per_head = cfg.batch * m * cfg.head_dim * 4;
    const int64_t a2a = A > 1 ? (6 * (2 * P / A) + 4 * 1) * per_head : 0;
    const int64_t ring = P / A > 1 ? (2 * 2 + 4 * 2) * per_head : 0;
    const runtime::RingWorkspaceBytes w = h.workspace();
    CHECK(w.kv_ring_bytes + w.dkv_ring_bytes == a2a + ring);
    CHECK(w.total() == h.workspace_bytes());
    // Zigzag balances the causal pairs across the ring's groups: every rank does the layer's 1/P.
    CHECK(h.visible_pairs() == L * (L + 1) / 2 / P);
    CHECK(h.last_forward().total_s >= h.last_forward().comm_s);
  }
}

TEST_CASE("hybrid CP refuses a group size that does not divide the CP size, naming the valid ones") {
  const int P = g_world->size();
  const runtime::ContextParallel ctx(g_world, CpScheme::contiguous, 16 * P);
  runtime::RingConfig cfg;
  cfg.tokens = ctx.local_tokens();
  cfg.head_dim = 8;
  cfg.heads = 2 * P;
  cfg.kv_heads = 2 * P;
  bool named = false;
  try {
    runtime::HybridAttention h(*g_world, P + 1, cfg, ctx.positions().data());
  } catch (const Error& e) {
    named = std::string(e.what()).find("must divide the CP size") != std::string::npos;
  }
  CHECK(named);
  CHECK_THROWS_AS(runtime::HybridAttention(*g_world, 0, cfg, ctx.positions().data()), Error);
  cfg.kernel = AttentionImpl::materialized;
  CHECK_THROWS_AS(runtime::HybridAttention(*g_world, 1, cfg, ctx.positions().data()), Error);
}

TEST_CASE("ring attention with partial tiles (n = 40 tokens per rank, tiles of 16)") {
  const int P = g_world->size();
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
    test::RingCase c;
    c.seq_len = 40 * P;
    c.scheme = scheme;
    check_case(c);
  }
}

TEST_CASE("ring attention with GQA sends only the KV heads and sums dK, dV over query heads") {
  const int P = g_world->size();
  for (int64_t kv : {2, 1})
    for (AttentionImpl kernel : {AttentionImpl::flash, AttentionImpl::materialized}) {
      test::RingCase c;
      c.heads = 4;
      c.kv_heads = kv;
      c.seq_len = 16 * P;
      c.scheme = CpScheme::zigzag;
      c.kernel = kernel;
      check_case(c);
    }
}

namespace {

// A communicator that matches messages the way NCCL does: no tags (every message between a pair
// of ranks travels with tag 0, so MPI's non-overtaking rule matches sends and receives in
// posting order) and nothing starts before start_posted() or a wait (queued like NCCL's groups).
// The ring must give the reference result over it; a schedule whose receives were posted in a
// different order than the peer's sends would swap K, V with a dK, dV accumulator.
class TaglessCommunicator final : public runtime::Communicator {
 public:
  explicit TaglessCommunicator(runtime::Communicator& base) : base_(base) {}
  int rank() const override { return base_.rank(); }
  int size() const override { return base_.size(); }
  runtime::Device device() const override { return base_.device(); }
  std::string host() const override { return base_.host(); }
  std::string describe_rank(int r) const override { return base_.describe_rank(r); }
  runtime::RequestPtr post_send(const void* buf, size_t bytes, int dst, int) override {
    return queue(Op{true, const_cast<void*>(buf), bytes, dst, nullptr});
  }
  runtime::RequestPtr post_recv(void* buf, size_t bytes, int src, int) override {
    return queue(Op{false, buf, bytes, src, nullptr});
  }
  void start_posted() override {
    for (auto& op : pending_) {
      *op.slot = op.is_send ? base_.post_send(op.buf, op.bytes, op.peer, 0) : base_.post_recv(op.buf, op.bytes, op.peer, 0);
      ++started_;
    }
    pending_.clear();
  }
  void wait(runtime::RequestPtr& r) override {
    if (!r) return;
    auto* q = dynamic_cast<Queued*>(r.get());
    REQUIRE(q != nullptr);
    if (!*q->inner) start_posted();
    base_.wait(*q->inner);
    r.reset();
  }
  void wait_all(std::vector<runtime::RequestPtr>& rs) override {
    for (auto& r : rs) wait(r);
    rs.clear();
  }
  void all_reduce_sum(float* b, size_t n) override { base_.all_reduce_sum(b, n); }
  void all_reduce_sum(double* b, size_t n) override { base_.all_reduce_sum(b, n); }
  void all_reduce_max(double* b, size_t n) override { base_.all_reduce_max(b, n); }
  void all_gather(const void* s, void* r, size_t n) override { base_.all_gather(s, r, n); }
  void broadcast(void* b, size_t n, int root) override { base_.broadcast(b, n, root); }
  void barrier() override { base_.barrier(); }
  std::unique_ptr<runtime::Communicator> split(int, int) override { throw std::logic_error("not needed"); }
  [[noreturn]] void abort(const std::string& why) override {
    base_.abort(why);
    std::abort();  // unreachable: the base never returns
  }
  int64_t started() const { return started_; }

 private:
  struct Queued : runtime::Request {
    std::shared_ptr<runtime::RequestPtr> inner = std::make_shared<runtime::RequestPtr>();
  };
  struct Op {
    bool is_send;
    void* buf;
    size_t bytes;
    int peer;
    std::shared_ptr<runtime::RequestPtr> slot;
  };
  runtime::RequestPtr queue(Op op) {
    auto q = std::make_unique<Queued>();
    op.slot = q->inner;
    pending_.push_back(op);
    return q;
  }
  runtime::Communicator& base_;
  std::vector<Op> pending_;
  int64_t started_ = 0;
};

}  // namespace

TEST_CASE("ring attention over a tagless, grouped communicator (NCCL's matching rules) equals the reference") {
  const int P = g_world->size();
  TaglessCommunicator tagless(*g_world);
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag})
    for (bool causal : {true, false}) {
      test::RingCase c;
      c.heads = 4;
      c.kv_heads = 2;
      c.seq_len = 16 * P;
      c.scheme = scheme;
      c.causal = causal;
      const test::RingErrors e = test::run_ring_case(tagless, c);
      INFO(case_name(c), " rank ", g_world->rank(), " (tagless)");
      CHECK(e.worst_relative() <= kFloat32Bound);
      CHECK(e.ref_grad_k > 0.01);
    }
  // Forward P-1 steps x 2 messages; backward 2 (P-1) K, V + (P-1) accumulators + 2 final, per run.
  if (P > 1) CHECK(tagless.started() > 0);
}

TEST_CASE("causal contiguous ring skips exactly the fully hidden blocks") {
  const int P = g_world->size(), r = g_world->rank();
  const int64_t L = 16 * P;
  const runtime::ContextParallel ctx(g_world, CpScheme::contiguous, L);
  runtime::RingConfig cfg;
  cfg.heads = 1;
  cfg.kv_heads = 1;
  cfg.tokens = ctx.local_tokens();
  cfg.head_dim = 8;
  runtime::RingAttention ring(*g_world, cfg, ctx.positions().data());
  std::vector<float> q(static_cast<size_t>(cfg.tokens * 8), 0.5f), out(q.size()), lse(static_cast<size_t>(cfg.tokens));
  ring.forward(q.data(), q.data(), q.data(), out.data(), lse.data());
  int64_t pairs = 0;
  for (const auto& st : ring.last_forward().steps) {
    // Contiguous: block of rank src is hidden from rank r exactly when src > r.
    CHECK(st.skipped == (st.src_rank > r));
    CHECK(st.src_rank == (r - st.step + P) % P);
    if (st.skipped) CHECK(st.visible_pairs == 0);
    pairs += st.visible_pairs;
  }
  // Summed over ranks, the visible pairs of causal attention are L(L+1)/2.
  double total = static_cast<double>(pairs);
  g_world->all_reduce_sum(&total, 1);
  CHECK(total == doctest::Approx(static_cast<double>(L * (L + 1) / 2)));
}

TEST_CASE("sharding: shard then gather is the identity, and gathering ring outputs gives the full reference O") {
  const int P = g_world->size();
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
    const int64_t L = 12 * P;
    // A [2, L, 3] tensor with the sequence in dim 1, and a [L, 2] int64 tensor in dim 0.
    runtime::HostTensor<double> x;
    x.shape = {2, L, 3};
    x.data.resize(static_cast<size_t>(x.numel()));
    std::iota(x.data.begin(), x.data.end(), 0.0);
    runtime::HostTensor<int64_t> ids;
    ids.shape = {L, 2};
    ids.data.resize(static_cast<size_t>(ids.numel()));
    std::iota(ids.data.begin(), ids.data.end(), int64_t{100});
    const runtime::ContextParallel ctx(g_world, scheme, L);
    const auto shards = ctx.shard(std::vector<runtime::HostTensor<double>>{x, x}, {1, 1});
    CHECK(shards[0].shape == std::vector<int64_t>{2, L / P, 3});
    CHECK(ctx.gather(shards[1], 1).data == x.data);
    CHECK(ctx.gather(ctx.shard(ids, 0), 0).data == ids.data);

    // Ring outputs gathered back equal the full-sequence reference (within the float32 bound).
    test::RingCase c;
    c.seq_len = 16 * P;
    c.scheme = scheme;
    const test::RingErrors e = test::run_ring_case(*g_world, c);
    const runtime::ContextParallel ctx2(g_world, scheme, c.seq_len);
    runtime::HostTensor<float> o;
    o.shape = {c.batch, c.heads, c.seq_len / P, c.head_dim};
    o.data = e.out_shard;
    const auto full = ctx2.gather(o, 2);
    const auto ref = runtime::HostTensor<float>{{c.batch, c.heads, c.seq_len, c.head_dim}, {}};
    std::vector<int64_t> all(static_cast<size_t>(c.seq_len));
    std::iota(all.begin(), all.end(), int64_t{0});
    // Compare the gathered tensor through the same shard_error helper with identity positions.
    const auto Q = test::full_tensor(c, runtime::SyntheticTensor::q, c.heads);
    const auto K = test::full_tensor(c, runtime::SyntheticTensor::k, c.kv_heads);
    const auto V = test::full_tensor(c, runtime::SyntheticTensor::v, c.kv_heads);
    std::vector<double> O(Q.size()), LSE(static_cast<size_t>(c.batch * c.heads * c.seq_len));
    kernels::reference_forward(Q.data(), K.data(), V.data(), all.data(), all.data(), c.batch, c.heads, c.kv_heads,
                               c.seq_len, c.seq_len, c.head_dim, c.causal, 0.0, O.data(), LSE.data());
    CHECK(full.shape == ref.shape);
    CHECK(test::shard_error(full.data, O, c.batch * c.heads, c.seq_len, all, c.head_dim, nullptr) <= kFloat32Bound);
  }
}

TEST_CASE("communicator: point-to-point ring, collectives and rank descriptions") {
  const int P = g_world->size(), r = g_world->rank();
  // Ring exchange with both sends and receives posted before any wait (odd P included).
  int64_t mine = 1000 + r, got = -1;
  std::vector<runtime::RequestPtr> reqs;
  reqs.push_back(g_world->post_recv(&got, sizeof(got), (r - 1 + P) % P, 5));
  reqs.push_back(g_world->post_send(&mine, sizeof(mine), (r + 1) % P, 5));
  g_world->wait_all(reqs);
  CHECK(got == 1000 + (r - 1 + P) % P);
  CHECK(reqs.empty());

  double s[2] = {1.0, static_cast<double>(r)};
  g_world->all_reduce_sum(s, 2);
  CHECK(s[0] == P);
  CHECK(s[1] == P * (P - 1) / 2);
  float f = 0.5f;
  g_world->all_reduce_sum(&f, 1);
  CHECK(f == doctest::Approx(0.5 * P));
  double mx = static_cast<double>(r);
  g_world->all_reduce_max(&mx, 1);
  CHECK(mx == P - 1);
  int64_t b = r == P - 1 ? 77 : 0;
  g_world->broadcast(&b, sizeof(b), P - 1);
  CHECK(b == 77);
  std::vector<int32_t> all(static_cast<size_t>(P));
  const int32_t me = r * r;
  g_world->all_gather(&me, all.data(), sizeof(me));
  for (int i = 0; i < P; ++i) CHECK(all[static_cast<size_t>(i)] == i * i);
  // In-place reduce-scatter (ZeRO-1's gradient reduction): rank r's block r holds the sum of every
  // rank's block r; both the blocking-wait and the test() completion paths move it there.
  for (const bool by_test : {false, true}) {
    const size_t n = 3;
    std::vector<double> buf(static_cast<size_t>(P) * n);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = 1000.0 * r + static_cast<double>(i);
    runtime::RequestPtr req = g_world->post_reduce_scatter_sum_in_place(buf.data(), n);
    if (by_test)
      while (!g_world->test(req)) {
      }
    else
      g_world->wait(req);
    for (size_t k = 0; k < n; ++k) {
      const size_t i = static_cast<size_t>(r) * n + k;
      CHECK(buf[i] == doctest::Approx(1000.0 * P * (P - 1) / 2 + static_cast<double>(P) * static_cast<double>(i)));
    }
  }
  g_world->barrier();
  CHECK(g_world->describe_rank(r).find("rank " + std::to_string(r)) == 0);
  CHECK(g_world->describe_rank(r).find(g_world->host()) != std::string::npos);
  CHECK_THROWS_AS(g_world->post_send(&mine, sizeof(mine), P, 5), Error);
}

TEST_CASE("mesh groups follow rank = tp + TP*(cp + CP*(dp + DP*pp))") {
  const int W = g_world->size();
  std::vector<Mesh> meshes = {Mesh{1, 1, W, 1}};
  if (W % 2 == 0) meshes.push_back(Mesh{1, 2, W / 2, 1});             // dp, tp, cp, pp
  if (W % 4 == 0) meshes.push_back(Mesh{1, 2, 1, W / 4 * 2});
  if (W == 8) meshes.push_back(Mesh{2, 2, 2, 1});
  for (const Mesh& mesh : meshes) {
    INFO(fmt::format("mesh dp={} tp={} cp={} pp={}", mesh.dp, mesh.tp, mesh.cp, mesh.pp));
    const auto g = runtime::make_mesh_groups(*g_world, mesh);
    CHECK(runtime::mesh_rank(mesh, g.coord) == g_world->rank());
    CHECK(g.tp->size() == mesh.tp);
    CHECK(g.cp->size() == mesh.cp);
    CHECK(g.dp->size() == mesh.dp);
    CHECK(g.pp->size() == mesh.pp);
    CHECK(g.tp->rank() == g.coord.tp);
    CHECK(g.cp->rank() == g.coord.cp);
    // Members of my CP group, by world rank, are exactly my coordinates with cp varied.
    std::vector<int32_t> members(static_cast<size_t>(g.cp->size()));
    const int32_t me = g_world->rank();
    g.cp->all_gather(&me, members.data(), sizeof(me));
    for (int64_t c = 0; c < mesh.cp; ++c) {
      runtime::MeshCoord x = g.coord;
      x.cp = c;
      CHECK(members[static_cast<size_t>(c)] == runtime::mesh_rank(mesh, x));
    }
  }
  CHECK_THROWS_AS(runtime::make_mesh_groups(*g_world, Mesh{1, 1, W + 1, 1}), Error);
}

namespace {

// Irregular document lengths filling L (1, 13, 5, 29, 2, 41, 9, ... the last one cut): documents
// of one token, documents shorter and longer than a shard, boundaries inside every shard and
// zigzag chunk for every P tested.
std::vector<int64_t> irregular_documents(int64_t L) {
  const int64_t pattern[] = {1, 13, 5, 29, 2, 41, 9};
  std::vector<int64_t> lengths;
  int64_t sum = 0;
  for (size_t i = 0; sum < L; ++i) {
    const int64_t len = std::min(pattern[i % 7], L - sum);
    lengths.push_back(len);
    sum += len;
  }
  return lengths;
}

const char* sharding_name(const test::RingCase& c) { return c.per_document ? "per-document zigzag" : to_string(c.scheme); }

void check_documents_case(const test::RingCase& c, const char* method) {
  const test::RingErrors e = test::run_ring_case(*g_world, c);
  INFO(fmt::format("{} with {} documents: P={} L={} {} {} {} H={} Hkv={} rank {}", method, c.doc_lengths.size(),
                   g_world->size(), c.seq_len, sharding_name(c), c.causal ? "causal" : "non-causal",
                   kernel_name(c.kernel), c.heads, c.kv_heads, g_world->rank()));
  INFO(fmt::format("errors: O {:.2e} lse {:.2e} dQ {:.2e} dK {:.2e} dV {:.2e}", e.out, e.lse, e.grad_q, e.grad_k,
                   e.grad_v));
  CHECK(e.worst_relative() <= kFloat32Bound);
  CHECK(e.ref_out > 0.05);
  CHECK(e.ref_grad_k > 0.01);
}

}  // namespace

TEST_CASE("packed documents: ring equals the float64 reference for every scheme and per document, GQA and MHA") {
  const int P = g_world->size();
  for (int sharding = 0; sharding < 4; ++sharding)
    for (bool causal : {true, false})
      for (int64_t kv : {int64_t{2}, int64_t{1}})
        for (AttentionImpl kernel : {AttentionImpl::flash, AttentionImpl::materialized}) {
          test::RingCase c;
          c.seq_len = 24 * P;  // n = 24: partial tiles of 16; a multiple of 2P for zigzag
          c.heads = 2;
          c.kv_heads = kv;
          c.causal = causal;
          c.kernel = kernel;
          c.per_document = sharding == 3;
          if (sharding < 3) c.scheme = std::array{CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}[size_t(sharding)];
          c.doc_lengths = irregular_documents(c.seq_len);
          check_documents_case(c, "ring");
        }
}

TEST_CASE("packed documents: all-gather and all-to-all CP equal the float64 reference, every scheme") {
  const int P = g_world->size();
  for (int sharding = 0; sharding < 4; ++sharding)
    for (bool causal : {true, false})
      for (bool alltoall : {false, true}) {
        test::RingCase c;
        c.seq_len = 24 * P;
        c.heads = alltoall ? 2 * P : 2;  // all-to-all: P divides the query heads
        c.kv_heads = alltoall ? P : 1;
        c.causal = causal;
        c.allgather = !alltoall;
        c.alltoall = alltoall;
        c.per_document = sharding == 3;
        if (sharding < 3) c.scheme = std::array{CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}[size_t(sharding)];
        c.doc_lengths = irregular_documents(c.seq_len);
        check_documents_case(c, alltoall ? "all-to-all" : "all-gather");
      }
}

TEST_CASE("packed documents: hybrid CP equals the float64 reference, every scheme and the per-document zigzag") {
  const int P = g_world->size();
  for (int64_t A = 1; A <= P; ++A) {
    if (P % A != 0) continue;
    for (int sharding = 0; sharding < 4; ++sharding)
      for (bool causal : {true, false}) {
        test::RingCase c;
        c.seq_len = 24 * P;
        c.heads = 2 * P;
        c.kv_heads = 1;  // GQA, replicated inside the group
        c.causal = causal;
        c.hybrid_a2a = A;
        c.per_document = sharding == 3;
        if (sharding < 3) c.scheme = std::array{CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}[size_t(sharding)];
        c.doc_lengths = irregular_documents(c.seq_len);
        check_documents_case(c, fmt::format("hybrid A={}", A).c_str());
      }
  }
}

TEST_CASE("packed documents: the per-document zigzag gives every ring rank the same attention work") {
  // Lengths that are multiples of 2P (Megatron pads documents to them): every rank's ring
  // computes exactly the same visible pairs, which rank_attention_pairs predicts; contiguous
  // sharding of the same documents does not.
  const int P = g_world->size(), r = g_world->rank();
  const int64_t u = 2 * P;
  const std::vector<int64_t> lengths{3 * u, 11 * u, 1 * u, 5 * u};  // L = 20 * 2P
  const int64_t L = 20 * u;
  for (bool causal : {true, false}) {
    INFO(fmt::format("P={} {}", P, causal ? "causal" : "non-causal"));
    const auto shards = runtime::document_shards(lengths, P);
    const auto pos = shards[size_t(r)];
    const auto docs = runtime::documents_at(lengths, pos);
    runtime::RingConfig cfg;
    cfg.heads = 1;
    cfg.kv_heads = 1;
    cfg.tokens = L / P;
    cfg.head_dim = 8;
    cfg.causal = causal;
    runtime::RingAttention ring(*g_world, cfg, pos.data(), docs.data());
    std::vector<float> q(static_cast<size_t>(cfg.tokens * 8), 0.25f), out(q.size()), lse(static_cast<size_t>(cfg.tokens));
    ring.forward(q.data(), q.data(), q.data(), out.data(), lse.data());
    const int64_t mine = ring.last_forward().visible_pairs();
    std::vector<int64_t> all(static_cast<size_t>(P));
    g_world->all_gather(&mine, all.data(), sizeof(int64_t));
    const auto predicted = runtime::rank_attention_pairs(shards, lengths, causal);
    CHECK(all == predicted);
    for (int64_t x : all) CHECK(x == all[0]);
    CHECK(runtime::attention_work_imbalance(shards, lengths, causal) == 1.0);
    // Skipped blocks are exactly those with no visible pair (documents or causal order).
    for (const auto& st : ring.last_forward().steps) CHECK(st.skipped == (st.visible_pairs == 0));
  }
}

TEST_CASE("packed documents: ranks that disagree on having documents are refused on every rank") {
  const int P = g_world->size(), r = g_world->rank();
  if (P == 1) return;  // one rank always agrees with itself
  const int64_t L = 16 * P;
  const auto pos = runtime::shard_positions(CpScheme::contiguous, L, P, r);
  const std::vector<int64_t> docs(pos.size(), 0);
  runtime::RingConfig cfg;
  cfg.tokens = L / P;
  cfg.head_dim = 8;
  try {
    runtime::RingAttention ring(*g_world, cfg, pos.data(), r == 0 ? docs.data() : nullptr);
    FAIL("expected bad_input");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK(std::string(e.what()).find("document ids") != std::string::npos);
  }
}

TEST_CASE("error vs the float64 reference as P grows (printed)") {
  // Sub-groups of the first p ranks for p = 1..W; the same L = 96 problem for every p.
  const int W = g_world->size(), r = g_world->rank();
  std::vector<std::string> lines;
  for (int p = 1; p <= W; ++p) {
    if (96 % (2 * p) != 0) continue;  // zigzag needs L % 2P == 0
    auto sub = g_world->split(r < p ? 0 : 1, r);
    double worst[6] = {0, 0, 0, 0, 0, 0};
    if (r < p) {
      test::RingCase c;
      c.seq_len = 96;
      c.scheme = CpScheme::zigzag;
      const test::RingErrors e = test::run_ring_case(*sub, c);
      CHECK(e.worst_relative() <= kFloat32Bound);
      worst[0] = e.out;
      worst[1] = e.lse;
      worst[2] = e.grad_q;
      worst[3] = e.grad_k;
      worst[4] = e.grad_v;
      worst[5] = e.ref_grad_k;
    }
    g_world->all_reduce_max(worst, 6);
    lines.push_back(fmt::format("  P={}  |err| O={:.2e}  lse={:.2e}  dQ={:.2e}  dK={:.2e}  dV={:.2e}  (max|dK_ref|={:.2f})", p,
                                worst[0], worst[1], worst[2], worst[3], worst[4], worst[5]));
  }
  if (r == 0) {
    std::printf("ring attention error vs float64 reference (L=96, zigzag causal flash, b=1 H=2 d=16):\n");
    for (const auto& l : lines) std::printf("%s\n", l.c_str());
  }
}

int main(int argc, char** argv) {
  return test::run_mpi_doctest(argc, argv, g_world, "ringplan_test_ring_mpi", true);
}
