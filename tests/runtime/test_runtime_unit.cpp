// Single-process runtime tests (no mpirun): sharding positions and errors, packed documents'
// per-document sharding and work balance, the DESIGN.md
// worked examples, mesh index math, statistics, trace JSON, synthetic inputs, memory probes,
// and the P = 1 ring (MPI singleton) against the float64 reference.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "runtime/measure_cpu.hpp"
#include "runtime/memory.hpp"
#include "core/documents.hpp"
#include "core/error.hpp"
#include "runtime/mesh.hpp"
#include "runtime/mpi_communicator.hpp"
#include "tests/runtime/mpi_doctest_main.hpp"
#include "runtime/trace.hpp"
#include "tests/runtime/ring_check.hpp"

using namespace ringplan;

using runtime::shard_positions;

namespace {
runtime::MpiCommunicator* g_world = nullptr;

std::vector<int64_t> range(int64_t a, int64_t b) {
  std::vector<int64_t> v(static_cast<size_t>(b - a));
  std::iota(v.begin(), v.end(), a);
  return v;
}
}  // namespace

TEST_CASE("DESIGN.md worked example: L=1024, P=4, contiguous -> rank 1 holds 256..511") {
  CHECK(shard_positions(CpScheme::contiguous, 1024, 4, 1) == range(256, 512));
}

TEST_CASE("DESIGN.md worked example: 8 GPUs, DP=2 TP=2 CP=2, L=4096 -> 2048 tokens per rank") {
  const Mesh mesh{2, 2, 2, 1};
  for (int64_t rank = 0; rank < 8; ++rank) {
    const auto c = runtime::mesh_coord(mesh, rank);
    CHECK(runtime::mesh_rank(mesh, c) == rank);
    const runtime::ContextParallel ctx(CpScheme::zigzag, 4096, mesh.cp, c.cp);
    CHECK(ctx.local_tokens() == 2048);
    CHECK(ctx.positions().size() == 2048u);
  }
  // Innermost first: rank 5 = tp 1 + 2*(cp 0 + 2*(dp 1)).
  CHECK(runtime::mesh_coord(mesh, 5) == runtime::MeshCoord{1, 0, 1, 0});
}

TEST_CASE("zigzag holds chunks r and 2P-1-r and striped holds t mod P == r") {
  CHECK(shard_positions(CpScheme::zigzag, 16, 2, 0) == std::vector<int64_t>{0, 1, 2, 3, 12, 13, 14, 15});
  CHECK(shard_positions(CpScheme::zigzag, 16, 2, 1) == std::vector<int64_t>{4, 5, 6, 7, 8, 9, 10, 11});
  CHECK(shard_positions(CpScheme::striped, 12, 3, 2) == std::vector<int64_t>{2, 5, 8, 11});
  // Every scheme is a partition of 0..L-1 into P equal parts.
  for (CpScheme s : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (int64_t P : {1, 2, 3, 4, 8}) {
      const int64_t L = 2 * P * 5;
      std::set<int64_t> seen;
      for (int64_t r = 0; r < P; ++r)
        for (int64_t p : shard_positions(s, L, P, r)) CHECK(seen.insert(p).second);
      CHECK(seen.size() == static_cast<size_t>(L));
    }
}

TEST_CASE("a length that does not divide is a clear error naming L, P, scheme and the multiple") {
  try {
    shard_positions(CpScheme::zigzag, 1000, 3, 0);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK(m.find("1000") != std::string::npos);
    CHECK(m.find("P=3") != std::string::npos);
    CHECK(m.find("zigzag") != std::string::npos);
    CHECK(m.find("multiple of 6") != std::string::npos);
  }
  CHECK_THROWS_AS(shard_positions(CpScheme::contiguous, 10, 4, 0), Error);
  CHECK_THROWS_AS(shard_positions(CpScheme::striped, 10, 4, 0), Error);
  CHECK_NOTHROW(shard_positions(CpScheme::striped, 12, 4, 3));
  CHECK_THROWS_AS(shard_positions(CpScheme::contiguous, 12, 4, 4), Error);  // rank out of range
  CHECK_THROWS_AS(shard_positions(CpScheme::contiguous, 12, 0, 0), Error);
}

TEST_CASE("per-document zigzag: each document's chunks r and 2P-1-r, leftovers zigzag, every token once") {
  // Documents 8 and 4 over P = 2 (2P = 4): document 0 chunks of 2, document 1 chunks of 1.
  CHECK(runtime::document_shard_positions({8, 4}, 2, 0) == std::vector<int64_t>{0, 1, 6, 7, 8, 11});
  CHECK(runtime::document_shard_positions({8, 4}, 2, 1) == std::vector<int64_t>{2, 3, 4, 5, 9, 10});
  // Leftovers: documents 5 and 3 over P = 2: 4 + 0 tokens in chunks, leftovers {4, 5, 6, 7} zigzag.
  CHECK(runtime::document_shard_positions({5, 3}, 2, 0) == std::vector<int64_t>{0, 3, 4, 7});
  CHECK(runtime::document_shard_positions({5, 3}, 2, 1) == std::vector<int64_t>{1, 2, 5, 6});
  const std::vector<std::vector<int64_t>> layouts{{1, 13, 5, 29, 2, 41, 9, 4}, {104}, {1, 1, 1, 101}, {52, 52}};
  for (const auto& lengths : layouts)
    for (int64_t P : {1, 2, 4}) {
      const int64_t L = 104;  // a multiple of 2P for P = 1, 2, 4
      INFO("P=" << P << " documents " << lengths.size());
      std::set<int64_t> seen;
      for (int64_t r = 0; r < P; ++r) {
        const auto pos = runtime::document_shard_positions(lengths, P, r);
        CHECK(static_cast<int64_t>(pos.size()) == L / P);
        CHECK(std::is_sorted(pos.begin(), pos.end()));
        for (int64_t p : pos) CHECK(seen.insert(p).second);
      }
      CHECK(seen.size() == static_cast<size_t>(L));
    }
}

TEST_CASE("packed documents: document ids of positions and the attention pairs of each rank") {
  CHECK(runtime::documents_at({3, 1, 4}, {0, 2, 3, 4, 7}) == std::vector<int64_t>{0, 0, 1, 2, 2});
  CHECK_THROWS_AS(runtime::documents_at({3, 1}, {4}), Error);
  // Documents 3, 1, 4 on one rank: causal 6 + 1 + 10 pairs, non-causal 9 + 1 + 16.
  const std::vector<std::vector<int64_t>> one{range(0, 8)};
  CHECK(runtime::rank_attention_pairs(one, {3, 1, 4}, true) == std::vector<int64_t>{17});
  CHECK(runtime::rank_attention_pairs(one, {3, 1, 4}, false) == std::vector<int64_t>{26});
  // One document, contiguous causal: rank r's queries see (r n + 1) .. (r+1) n keys; max/mean
  // is 2 - 1/P up to O(1/n) (DESIGN.md "Sequence sharding").
  const auto contiguous = runtime::scheme_shards(CpScheme::contiguous, 4096, 4);
  CHECK(runtime::attention_work_imbalance(contiguous, {4096}, true) == doctest::Approx(1.75).epsilon(1e-3));
  CHECK(runtime::attention_work_imbalance(runtime::scheme_shards(CpScheme::zigzag, 4096, 4), {4096}, true) == 1.0);
  CHECK(runtime::attention_work_imbalance(contiguous, {4096}, false) == 1.0);
}

TEST_CASE("packed documents: the per-document zigzag balances attention work where the schemes do not") {
  // Lengths multiples of 2P: exactly balanced, causal and not, for P = 1..8.
  for (int64_t P : {1, 2, 3, 4, 8}) {
    const int64_t u = 2 * P;
    const std::vector<int64_t> lengths{7 * u, 1 * u, 30 * u, 2 * u};
    for (bool causal : {true, false})
      CHECK(runtime::attention_work_imbalance(runtime::document_shards(lengths, P), lengths, causal) == 1.0);
  }
  // Seeded lognormal documents (mean 2048, sigma 1) in a 64K sequence, P = 8: the per-document
  // zigzag stays within 1 % of balanced; contiguous sharding, which gives whole long documents'
  // tails to one rank, is far off, and the position-based zigzag is too.
  DocumentSpec spec;
  spec.kind = DocumentLengthKind::lognormal;
  spec.mean_length = 2048;
  spec.sigma = 1.0;
  spec.seed = 11;
  const int64_t L = 65536, P = 8;
  const auto lengths = document_lengths(spec, L);
  const double per_doc = runtime::attention_work_imbalance(runtime::document_shards(lengths, P), lengths, true);
  const double contiguous =
      runtime::attention_work_imbalance(runtime::scheme_shards(CpScheme::contiguous, L, P), lengths, true);
  const double zigzag = runtime::attention_work_imbalance(runtime::scheme_shards(CpScheme::zigzag, L, P), lengths, true);
  MESSAGE("causal work max/mean, " << lengths.size() << " lognormal documents, P=8: per-document " << per_doc
                                   << ", contiguous " << contiguous << ", zigzag " << zigzag);
  CHECK(per_doc <= 1.01);
  CHECK(contiguous > 1.1);
  CHECK(per_doc < zigzag);
}

TEST_CASE("packed documents: the cost model's closed-form work per rank equals the count over the shards") {
  // core/documents.hpp document_rank_pairs (what sim::predict uses) against rank_attention_pairs
  // over the positions the runtime shards: contiguous and striped by scheme, zigzag per document.
  for (int64_t P : {1, 2, 3, 4, 8}) {
    const int64_t L = 2 * P * 37;
    std::vector<int64_t> lengths;
    const int64_t pattern[] = {1, 13, 5, 29, 2, 41, 9, 100};
    for (int64_t sum = 0, i = 0; sum < L; ++i) {
      lengths.push_back(std::min(pattern[i % 8], L - sum));
      sum += lengths.back();
    }
    for (bool causal : {true, false})
      for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
        INFO("P=" << P << " " << to_string(scheme) << (causal ? " causal" : " non-causal"));
        const auto shards =
            scheme == CpScheme::zigzag ? runtime::document_shards(lengths, P) : runtime::scheme_shards(scheme, L, P);
        const auto counted = runtime::rank_attention_pairs(shards, lengths, causal);
        for (int64_t r = 0; r < P; ++r)
          CHECK(document_rank_pairs(lengths, scheme, P, r, causal) == counted[static_cast<size_t>(r)]);
        CHECK(document_attention_work(lengths, scheme, P, causal).imbalance ==
              doctest::Approx(runtime::attention_work_imbalance(shards, lengths, causal)).epsilon(1e-12));
      }
  }
}

TEST_CASE("per-document zigzag refuses lengths that cannot fill 2P equal shards") {
  try {
    runtime::document_shard_positions({5, 5}, 4, 0);  // L = 10, not a multiple of 8
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK(std::string(e.what()).find("multiple of 2P = 8") != std::string::npos);
  }
  CHECK_THROWS_AS(runtime::document_shard_positions({4, 0, 4}, 2, 0), Error);
  CHECK_THROWS_AS(runtime::document_shard_positions({}, 2, 0), Error);
  CHECK_THROWS_AS(runtime::document_shard_positions({8}, 2, 2), Error);  // rank out of range
}

TEST_CASE("offline shard of several buffers along their own sequence dims") {
  const runtime::ContextParallel ctx(CpScheme::striped, 6, 3, 1);  // holds positions 1, 4
  runtime::HostTensor<float> a{{6, 2}, {0, 1, 10, 11, 20, 21, 30, 31, 40, 41, 50, 51}};
  runtime::HostTensor<float> b{{2, 6}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}};
  const auto s = ctx.shard(std::vector<runtime::HostTensor<float>>{a, b}, {0, 1});
  CHECK(s[0].data == std::vector<float>{10, 11, 40, 41});
  CHECK(s[1].data == std::vector<float>{1, 4, 7, 10});
  CHECK_THROWS_AS(ctx.shard(a, 1), Error);  // dim 1 has 2 entries, not L = 6
  CHECK_THROWS_AS(ctx.shard(a, 2), Error);  // no such dim
  CHECK_THROWS_AS(ctx.gather(s[0], 0), Error);  // offline: no communicator
}

TEST_CASE("mesh index math rejects bad ranks and world sizes") {
  CHECK_THROWS_AS(runtime::mesh_coord(Mesh{1, 2, 2, 1}, 4), Error);
  CHECK_THROWS_AS(runtime::check_world_size(Mesh{1, 1, 4, 1}, 2), Error);
  try {
    runtime::check_world_size(Mesh{1, 1, 4, 1}, 2);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("mpirun -np 4") != std::string::npos);
  }
}

TEST_CASE("phase times: the backward starts where the last forward ends, so the two add up to the layer's time") {
  // Rank 0's forward ends at 1 s and its backward clock then runs 5 s, most of it waiting in the
  // ring for rank 1, whose forward ends at 4 s and backward 2 s later: the layer ends at 6 s.
  std::vector<runtime::RankIterationSample> ranks(2);
  ranks[0].forward_s = 1.0, ranks[0].backward_s = 5.0;
  ranks[1].forward_s = 4.0, ranks[1].backward_s = 2.0;
  const runtime::PhaseTimes t = runtime::phase_times(ranks);
  CHECK(t.forward_s == 4.0);
  CHECK(t.backward_s == 2.0);  // not max_r backward_s = 5, which counts the forward's 3 s skew again
  CHECK(t.forward_s + t.backward_s == 6.0);
  // One rank: its own times.
  const runtime::PhaseTimes one = runtime::phase_times({ranks[0]});
  CHECK(one.forward_s == 1.0);
  CHECK(one.backward_s == 5.0);
  // A rank whose backward ends first still bounds nothing: the layer ends with the last one.
  ranks[1].backward_s = 0.5;  // ends at 4.5, before rank 0's 6
  CHECK(runtime::phase_times(ranks).backward_s == 2.0);
}

TEST_CASE("sample statistics: median and percentiles") {
  const auto s = runtime::sample_stats({5, 1, 3, 2, 4});
  CHECK(s.median == 3);
  CHECK(s.min == 1);
  CHECK(s.max == 5);
  CHECK(s.p10 == doctest::Approx(1.4));
  CHECK(runtime::sample_stats({}).count == 0);
}

TEST_CASE("synthetic inputs depend on the global position only and lie in -1 to 1") {
  using runtime::SyntheticTensor;
  const float a = runtime::synthetic_value(3, SyntheticTensor::q, 0, 1, 77, 5);
  CHECK(a == runtime::synthetic_value(3, SyntheticTensor::q, 0, 1, 77, 5));
  CHECK(a != runtime::synthetic_value(3, SyntheticTensor::k, 0, 1, 77, 5));
  double sum = 0;
  for (int i = 0; i < 4000; ++i) {
    const float x = runtime::synthetic_value(1, SyntheticTensor::v, 0, 0, i, 0);
    CHECK(x >= -1.0f);
    CHECK(x < 1.0f);
    sum += x;
  }
  CHECK(std::abs(sum / 4000) < 0.05);  // roughly centred
}

TEST_CASE("Chrome trace JSON: complete events with pid = rank and tid = lane") {
  runtime::TraceRecorder rec;
  rec.add(runtime::TracePhase::forward, runtime::TraceLane::compute, 0, 1, 0.001, 0.003, false);
  rec.add(runtime::TracePhase::backward, runtime::TraceLane::comm, 2, 0, 0.004, 0.0045, false);
  const auto doc = nlohmann::json::parse(runtime::chrome_trace_json({rec.events(), rec.events()}));
  int x_events = 0;
  for (const auto& e : doc.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    ++x_events;
    CHECK((e.at("tid") == 0 || e.at("tid") == 1));  // compute, communication lanes (named by metadata)
    CHECK(e.at("dur").get<double>() > 0);
  }
  CHECK(x_events == 4);
  CHECK(doc.at("traceEvents").back().at("pid") == 1);
  CHECK(doc.at("traceEvents").back().at("ts").get<double>() == doctest::Approx(4000.0));
}

TEST_CASE("overlay trace: measured and predicted process groups, named and ordered, same lanes") {
  std::vector<std::vector<runtime::LaneEvent>> measured(2), predicted(2);
  measured[0].push_back({0.001, 0.002, 0, "fwd compute", "compute", {{"step", 0}}});
  measured[1].push_back({0.001, 0.003, 1, "fwd comm wait", "comm", {{"step", 0}}});
  predicted[0].push_back({0.001, 0.0025, 0, "forward kernel block 0", "predicted", {{"step", 0}}});
  predicted[1].push_back({0.001, 0.0015, 0, "forward kernel block 1", "predicted", {{"step", 0}}});
  predicted[1].push_back({0.0025, 0.0005, 1, "forward send_kv block 1", "predicted", {{"step", 0}}});
  const auto doc = nlohmann::json::parse(runtime::overlay_trace_json(measured, predicted));
  std::map<int64_t, std::string> names;
  std::map<int64_t, int64_t> sort_index, x_events;
  std::map<std::pair<int64_t, int64_t>, std::string> threads;
  double predicted_us = 0;
  for (const auto& e : doc.at("traceEvents")) {
    const int64_t pid = e.at("pid").get<int64_t>();
    if (e.at("ph") == "M" && e.at("name") == "process_name") names[pid] = e.at("args").at("name");
    if (e.at("ph") == "M" && e.at("name") == "process_sort_index") sort_index[pid] = e.at("args").at("sort_index");
    if (e.at("ph") == "M" && e.at("name") == "thread_name") threads[{pid, e.at("tid").get<int64_t>()}] = e.at("args").at("name");
    if (e.at("ph") != "X") continue;
    ++x_events[pid];
    CHECK((e.at("tid") == 0 || e.at("tid") == 1));
    if (pid >= runtime::kPredictedPidBase) {
      CHECK(e.at("cat") == "predicted");
      predicted_us += e.at("dur").get<double>();
    }
  }
  CHECK(names == std::map<int64_t, std::string>{{0, "measured rank 0"}, {1, "measured rank 1"},
                                                 {1000, "predicted rank 0"}, {1001, "predicted rank 1"}});
  // Perfetto lists predicted rank r right under measured rank r.
  CHECK(sort_index == std::map<int64_t, int64_t>{{0, 0}, {1000, 1}, {1, 2}, {1001, 3}});
  CHECK(threads.size() == 8);
  CHECK(threads[{1001, 1}] == "communication");
  CHECK(x_events == std::map<int64_t, int64_t>{{0, 1}, {1, 1}, {1000, 1}, {1001, 2}});
  CHECK(predicted_us == doctest::Approx(4500.0));
}

TEST_CASE("memory probes read /proc and see a touched allocation") {
  const int64_t before = runtime::current_rss_bytes();
  REQUIRE(before > 0);
  runtime::reset_peak_rss();
  std::vector<char> big(64 << 20, 1);  // 64 MiB, touched
  CHECK(runtime::peak_rss_bytes() - before >= (48 << 20));
  CHECK(big[12345] == 1);
}

TEST_CASE("P = 1 ring (no communication) equals the float64 reference, all schemes and kernels") {
  for (CpScheme s : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (auto k : {AttentionImpl::flash, AttentionImpl::materialized})
      for (bool causal : {true, false}) {
        test::RingCase c;
        c.seq_len = 40;
        c.scheme = s;
        c.kernel = k;
        c.causal = causal;
        c.heads = 4;
        c.kv_heads = 2;
        const auto e = test::run_ring_case(*g_world, c);
        INFO(to_string(s), k == AttentionImpl::flash ? " flash" : " materialized", causal ? " causal" : " non-causal",
             " errors O ", e.out, " lse ", e.lse, " dQ ", e.grad_q, " dK ", e.grad_k, " dV ", e.grad_v);
        CHECK(e.worst_relative() <= 2e-5);  // the float32 bound of test_ring_mpi.cpp
        CHECK(e.ref_grad_q > 0.01);
      }
}

TEST_CASE("the executor reports each iteration, warm-up included, and keeps only the measured samples") {
  runtime::RingLayerShape shape;
  shape.heads = 2;
  shape.kv_heads = 1;
  shape.seq_len = 64;
  shape.head_dim = 16;
  runtime::ExecutorOptions opt;
  opt.warmup = 2;
  opt.iterations = 3;
  std::vector<std::pair<int64_t, int64_t>> calls;
  opt.on_iteration = [&](int64_t done, int64_t total) { calls.emplace_back(done, total); };
  const runtime::RingLayerMeasurement m = runtime::run_ring_layer(*g_world, shape, opt);
  REQUIRE(calls.size() == 5);
  for (size_t i = 0; i < calls.size(); ++i) {
    CHECK(calls[i].first == static_cast<int64_t>(i) + 1);
    CHECK(calls[i].second == 5);
  }
  CHECK(m.samples.size() == 3);
}

TEST_CASE("the executor masks packed documents: one rank computes exactly the documents' causal pairs") {
  runtime::RingLayerShape shape;
  shape.heads = 2;
  shape.kv_heads = 1;
  shape.seq_len = 256;
  shape.head_dim = 16;
  shape.document_lengths = {100, 156};
  runtime::ExecutorOptions opt;
  opt.warmup = 0;
  opt.iterations = 1;
  for (const CpComm comm : {CpComm::ring, CpComm::allgather, CpComm::alltoall, CpComm::hybrid}) {
    shape.comm = comm;
    const runtime::RingLayerMeasurement m = runtime::run_ring_layer(*g_world, shape, opt);
    REQUIRE(m.forward_pairs.size() == 1);
    CHECK(m.forward_pairs[0] == 100 * 101 / 2 + 156 * 157 / 2);
  }
  shape.comm = CpComm::ring;
  shape.document_lengths = {100, 100};  // 200 tokens for a 256-token sequence
  CHECK_THROWS_WITH_AS(runtime::run_ring_layer(*g_world, shape, opt), doctest::Contains("packed documents"), Error);
}

TEST_CASE("ring attention rejects inconsistent shapes") {
  runtime::RingConfig cfg;
  cfg.heads = 3;
  cfg.kv_heads = 2;
  cfg.tokens = 4;
  cfg.head_dim = 8;
  const int64_t pos[4] = {0, 1, 2, 3};
  CHECK_THROWS_AS(runtime::RingAttention(*g_world, cfg, pos), Error);
  cfg.heads = 2;
  cfg.head_dim = 0;
  CHECK_THROWS_AS(runtime::RingAttention(*g_world, cfg, pos), Error);
}

TEST_CASE("calibrate's CPU measurements: kernel rates of both block kinds, copy rate, host memory") {
  runtime::KernelShape shape;
  shape.heads = 2;
  shape.kv_heads = 1;
  shape.head_dim = 16;
  shape.reps = 1;
  const runtime::KernelPoint k = runtime::measure_kernels(*g_world, shape, 32);
  CHECK(k.tokens == 32);
  CHECK(k.flops == doctest::Approx(4.0 * 2 * 32 * 32 * 16));
  CHECK(k.causal_flops < k.flops);  // a causal diagonal block has about half the visible pairs
  for (double t : {k.fwd_s, k.bwd_s, k.mat_fwd_s, k.mat_bwd_s, k.causal_fwd_s, k.causal_bwd_s}) CHECK(t > 0);
  CHECK(runtime::measure_copy_bandwidth(*g_world) > 0);
  CHECK(runtime::mem_total_bytes() > 0);
}

int main(int argc, char** argv) {
  return test::run_mpi_doctest(argc, argv, g_world, "ringplan_test_runtime_unit", false);
}
