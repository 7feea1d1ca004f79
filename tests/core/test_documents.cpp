// Packed documents: training.documents read from YAML (fixed lengths or a seeded distribution),
// bad values refused at their file:line, written back, and turned into per-token document ids
// and within-document positions (core/documents.hpp).
#include <doctest/doctest.h>

#include <numeric>

#include "core/config_yaml.hpp"
#include "core/documents.hpp"
#include "tests/core/test_helpers.hpp"

using namespace ringplan;
using ringplan::test::check_config_error;
using ringplan::test::TempDir;

namespace {

// kTrainingYaml (seq_len 4096, lines 1-4) followed by `documents` from line 5.
std::string training_with(const std::string& documents) { return std::string(test::kTrainingYaml) + documents; }

TrainingConfig written_back(const TrainingConfig& t, const TempDir& dir) {
  YAML::Emitter out;
  write_training(out, t);
  return load_training(dir.write("back.yaml", std::string(out.c_str()) + "\n"));
}

}  // namespace

TEST_CASE("documents: fixed lengths give ids and positions restarting at each document") {
  TempDir dir;
  const TrainingConfig t =
      load_training(dir.write("t.yaml", training_with("documents:\n  lengths: [1000, 3000, 96]\n")));
  REQUIRE(t.documents.has_value());
  CHECK(t.documents->kind == DocumentLengthKind::fixed);
  const std::vector<int64_t> lengths = document_lengths(*t.documents, t.seq_len);
  CHECK(lengths == std::vector<int64_t>{1000, 3000, 96});
  const auto ids = document_ids(lengths);
  const auto pos = document_positions(lengths);
  REQUIRE(ids.size() == 4096);
  REQUIRE(pos.size() == 4096);
  CHECK(ids[0] == 0);
  CHECK(ids[999] == 0);
  CHECK(ids[1000] == 1);
  CHECK(ids[3999] == 1);
  CHECK(ids[4000] == 2);
  CHECK(pos[999] == 999);
  CHECK(pos[1000] == 0);
  CHECK(pos[4000] == 0);
  CHECK(pos[4095] == 95);
  CHECK(written_back(t, dir).documents == t.documents);
  CHECK_FALSE(load_training(dir.write("u.yaml", test::kTrainingYaml)).documents.has_value());
}

TEST_CASE("documents: a seeded distribution is reproducible, fills the sequence and has about the mean") {
  TempDir dir;
  for (const char* kind : {"uniform", "lognormal"}) {
    INFO(kind);
    const TrainingConfig t = load_training(dir.write(
        "t.yaml", training_with(std::string("documents:\n  distribution: ") + kind + "\n  mean_length: 256\n  seed: 3\n")));
    REQUIRE(t.documents.has_value());
    CHECK(to_string(t.documents->kind) == std::string(kind));
    const auto a = document_lengths(*t.documents, t.seq_len);
    CHECK(a == document_lengths(*t.documents, t.seq_len));  // a pure function of the seed
    CHECK(check_document_lengths(a, t.seq_len).empty());    // positive, summing to seq_len
    CHECK(written_back(t, dir).documents == t.documents);
    DocumentSpec other = *t.documents;
    other.seed = 4;
    CHECK(document_lengths(other, t.seq_len) != a);
    // The mean over many documents (a long sequence) is mean_length within sampling error.
    const auto many = document_lengths(*t.documents, int64_t{1} << 22);
    const double mean = double(int64_t{1} << 22) / double(many.size());
    CHECK(mean == doctest::Approx(256.0).epsilon(0.05));
  }
  // The exact draw of one seed, pinned: a change of generator would silently change every plan.
  DocumentSpec u;
  u.kind = DocumentLengthKind::uniform;
  u.mean_length = 8;
  u.seed = 1;
  CHECK(document_lengths(u, 40) == std::vector<int64_t>{6, 5, 1, 6, 7, 9, 1, 4, 1});  // last one cut at 40
  u.kind = DocumentLengthKind::lognormal;
  u.sigma = 1;
  CHECK(document_lengths(u, 40) == std::vector<int64_t>{5, 4, 5, 3, 7, 2, 1, 9, 4});
}

TEST_CASE("documents: bad values are refused at their file and line") {
  TempDir dir;
  std::string f = dir.write("a.yaml", training_with("documents:\n  lengths: [1000, 3000]\n"));
  check_config_error([&] { load_training(f); },
                     {f, 6, "training.documents.lengths", "sum to 4000 but must sum to seq_len = 4096"});
  f = dir.write("b.yaml", training_with("documents:\n  lengths: [4000, 0, 96]\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.lengths[1]", "positive integer"});
  f = dir.write("c.yaml", training_with("documents:\n  lengths: [4000, 5000]\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.lengths", "longer than the sequence"});
  f = dir.write("d.yaml", training_with("documents:\n  lengths: []\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.lengths", "at least one document"});
  f = dir.write("e.yaml", training_with("documents:\n  lengths: [4096]\n  distribution: uniform\n"));
  check_config_error([&] { load_training(f); }, {f, 7, "training.documents.distribution", "not both"});
  f = dir.write("g.yaml", training_with("documents:\n  seed: 1\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.lengths", "missing required key"});
  f = dir.write("h.yaml", training_with("documents:\n  distribution: zipf\n  mean_length: 10\n  seed: 1\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.distribution", "uniform, lognormal"});
  f = dir.write("i.yaml", training_with("documents:\n  distribution: uniform\n  mean_length: 0.5\n  seed: 1\n"));
  check_config_error([&] { load_training(f); }, {f, 7, "training.documents.mean_length", ">= 1"});
  f = dir.write("j.yaml", training_with("documents:\n  distribution: uniform\n  mean_length: 64\n  seed: -1\n"));
  check_config_error([&] { load_training(f); }, {f, 8, "training.documents.seed", ">= 0"});
  f = dir.write("k.yaml", training_with("documents:\n  distribution: uniform\n  mean_length: 64\n  seed: 1\n  sigma: 1\n"));
  check_config_error([&] { load_training(f); }, {f, 9, "training.documents.sigma", "only the lognormal"});
  f = dir.write("l.yaml", training_with("documents:\n  distribution: lognormal\n  mean_length: 64\n  seed: 1\n  sigma: 0\n"));
  check_config_error([&] { load_training(f); }, {f, 9, "training.documents.sigma", "(0, 4]"});
  f = dir.write("m.yaml", training_with("documents:\n  distribution: uniform\n  mean_length: 64\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.seed", "missing required key"});
  f = dir.write("n.yaml", training_with("documents:\n  lengths: [4096]\n  seed: 2\n"));
  check_config_error([&] { load_training(f); }, {f, 7, "training.documents.seed", "takes no seed"});
  f = dir.write("o.yaml", training_with("documents:\n  lenghts: [4096]\n"));
  check_config_error([&] { load_training(f); }, {f, 6, "training.documents.lenghts", "did you mean 'lengths'?"});
}

TEST_CASE("documents: check_document_lengths and document_lengths refuse what cannot fill a sequence") {
  CHECK(check_document_lengths({}, 8).find("at least one") != std::string::npos);
  CHECK(check_document_lengths({4, -1, 5}, 8).find("document 1 has length -1") != std::string::npos);
  CHECK(check_document_lengths({4, 4}, 8).empty());
  CHECK(check_document_lengths({4, 5}, 8).find("more than") != std::string::npos);
  DocumentSpec bad;
  bad.lengths = {3};
  CHECK_THROWS_AS(document_lengths(bad, 8), Error);
  bad.kind = DocumentLengthKind::lognormal;
  bad.mean_length = 4;
  bad.sigma = -1;
  CHECK_THROWS_AS(document_lengths(bad, 8), Error);
}
