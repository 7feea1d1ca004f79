// Packed documents in the cost model: the attention work of a document layout (core/documents.hpp
// document_attention_work, closed form) enters the ring's per-rank compute, its imbalance term and
// the all-gather / all-to-all attention; one document is exactly the scheme's closed form.
#include <doctest/doctest.h>

#include "core/documents.hpp"
#include "sim/cost_model.hpp"
#include "sim/formulas.hpp"
#include "test_helpers.hpp"

using namespace ringplan;

namespace {

Experiment with_documents(Experiment e, const std::vector<int64_t>& lengths) {
  DocumentSpec d;
  d.lengths = lengths;
  e.training.documents = d;
  return e;
}

}  // namespace

TEST_CASE("document work: one document is the scheme's own balance and pair count") {
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (int64_t P : {1, 2, 4, 8})
      for (bool causal : {true, false}) {
        INFO(to_string(scheme) << " P=" << P << (causal ? " causal" : " non-causal"));
        const DocumentAttentionWork w = document_attention_work({4096}, scheme, P, causal);
        CHECK(w.pair_fraction == 1.0);
        CHECK(w.imbalance == doctest::Approx(sim::cp_imbalance(scheme, 4096, P, causal)).epsilon(1e-12));
      }
}

TEST_CASE("document work: the pair fraction, and equal documents of 2P-multiples balance under zigzag") {
  // Four documents of 1024 in 4096 tokens: causal pairs 4 * 1024*1025/2 of 4096*4097/2.
  const std::vector<int64_t> four(4, 1024);
  const DocumentAttentionWork z = document_attention_work(four, CpScheme::zigzag, 8, true);
  CHECK(z.pair_fraction == doctest::Approx(4.0 * 1024 * 1025 / (4096.0 * 4097)).epsilon(1e-12));
  CHECK(z.imbalance == 1.0);
  CHECK(document_attention_work(four, CpScheme::zigzag, 8, false).pair_fraction == doctest::Approx(0.25));
  // Contiguous P = 4 gives each rank one whole document: balanced too; P = 8 halves them, and
  // the ranks holding second halves do 3x the work of the first halves: max/mean 1.5.
  CHECK(document_attention_work(four, CpScheme::contiguous, 4, true).imbalance == 1.0);
  CHECK(document_attention_work(four, CpScheme::contiguous, 8, true).imbalance ==
        doctest::Approx((512.0 * 512 + 512.0 * 513 / 2) / (1024.0 * 1025 / 4)).epsilon(1e-12));
}

TEST_CASE("layer shape and predict: documents scale attention work and set the CP imbalance term") {
  const Experiment plain = sim::test::llama_experiment(32768, 16);
  // Documents of 6144 and 2048 tokens alternating (multiples of 2 CP = 16): the per-document
  // zigzag is balanced; contiguous shards of 4096 cut the 6144-token documents, so the rank
  // holding a document's second part does more work than the one holding its first.
  std::vector<int64_t> lengths;
  for (int i = 0; i < 4; ++i) {
    lengths.push_back(6144);
    lengths.push_back(2048);
  }
  const Experiment docs = with_documents(plain, lengths);
  const Mesh mesh = sim::test::mesh_of(1, 2, 8, 1);
  ParallelOptions o;
  o.cp_scheme = CpScheme::zigzag;
  REQUIRE(sim::check_layout(docs, mesh, o, 16).empty());
  const sim::LayerShape x = sim::make_layer_shape(docs.model, docs.training, mesh, o);
  const DocumentAttentionWork w = document_attention_work(lengths, CpScheme::zigzag, 8, true);
  CHECK(x.document_pair_fraction == w.pair_fraction);
  CHECK(x.document_imbalance == w.imbalance);
  CHECK(w.imbalance == 1.0);
  const sim::RingPairs pp = sim::layer_ring_pairs(x);
  CHECK(pp.mean_rank_pairs ==
        doctest::Approx(sim::ring_pairs(CpScheme::zigzag, 32768, 8, true).mean_rank_pairs * w.pair_fraction));
  CHECK(pp.max_rank_pairs == doctest::Approx(pp.mean_rank_pairs));

  const sim::Prediction p_plain = sim::predict(plain, mesh, o);
  const sim::Prediction p_zig = sim::predict(docs, mesh, o);
  // Fewer visible pairs: less forward compute, no imbalance with the per-document zigzag.
  CHECK(p_zig.time.forward_compute_s < p_plain.time.forward_compute_s);
  CHECK(p_zig.time.cp_imbalance_s == doctest::Approx(0.0).epsilon(1e-12));
  o.cp_scheme = CpScheme::contiguous;
  const sim::Prediction p_cont = sim::predict(docs, mesh, o);
  const double contiguous_imbalance = document_attention_work(lengths, CpScheme::contiguous, 8, true).imbalance;
  // Slowest rank: the second 2048 tokens of a 6144 document plus a 2048 document, vs the mean.
  CHECK(contiguous_imbalance == doctest::Approx((6144.0 * 6145 / 2 - 4096.0 * 4097 / 2 + 2048.0 * 2049 / 2) /
                                                (6144.0 * 6145 / 2 + 2048.0 * 2049 / 2) * 2));
  CHECK(p_cont.time.cp_imbalance_s > 0.0);
  CHECK(p_cont.time.cp_imbalance_s > p_zig.time.cp_imbalance_s);
  // Without documents, contiguous causal CP 8 is imbalanced 2 - 1/P; with these documents less so.
  CHECK(contiguous_imbalance < sim::cp_imbalance(CpScheme::contiguous, 32768, 8, true));
}

TEST_CASE("check_layout refuses documents that do not fill the sequence") {
  const Experiment docs = with_documents(sim::test::llama_experiment(32768, 16), {1000, 2000});
  const std::string why = sim::check_layout(docs, sim::test::mesh_of(1, 2, 8, 1), ParallelOptions{}, 16);
  CHECK(why.find("training.documents") != std::string::npos);
  CHECK(why.find("sum to 3000") != std::string::npos);
}

TEST_CASE("prepare_document_work: predict() looks the work up and gives the same prediction") {
  DocumentSpec d;
  d.kind = DocumentLengthKind::lognormal;
  d.mean_length = 1024;
  d.seed = 3;
  d.lengths = document_lengths(d, 32768);
  Experiment e = sim::test::llama_experiment(32768, 16);
  e.training.documents = d;
  Experiment prepared = e;
  sim::prepare_document_work(prepared, {1, 2, 4, 8});
  CHECK(prepared.training.documents->work.size() == 12);  // 4 CP sizes x 3 schemes
  CHECK(prepared.training.documents == e.training.documents);  // derived data is not part of ==
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped})
    for (int64_t cp : {2, 8}) {
      ParallelOptions o;
      o.cp_scheme = scheme;
      const Mesh mesh = sim::test::mesh_of(1, 2, cp, 1);
      const sim::LayerShape a = sim::make_layer_shape(e.model, e.training, mesh, o);
      const sim::LayerShape b = sim::make_layer_shape(prepared.model, prepared.training, mesh, o);
      CHECK(a.document_pair_fraction == b.document_pair_fraction);
      CHECK(a.document_imbalance == b.document_imbalance);
      CHECK(sim::predict(e, mesh, o).step_time_s == sim::predict(prepared, mesh, o).step_time_s);
    }
  // Sizes the sequence cannot be sharded into are left out (check_layout refuses them).
  Experiment odd = e;
  sim::prepare_document_work(odd, {3});
  CHECK(odd.training.documents->work.empty());  // 32768 is a multiple of neither 3 nor 6
}
