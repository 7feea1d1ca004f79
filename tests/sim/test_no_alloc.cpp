// predict() is the planner's inner loop: it must not touch the heap. This file replaces the
// global operator new of test_sim with a counting one (it forwards to malloc).
#include <doctest/doctest.h>

#include <cstdlib>
#include <new>

#include "core/documents.hpp"
#include "sim/cost_model.hpp"
#include "test_helpers.hpp"

namespace {
long g_allocations = 0;
}

void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

TEST_CASE("predict() and a passing check_layout() allocate nothing") {
  using namespace ringplan;
  Experiment e = sim::test::llama_experiment(131072, 32);
  ParallelOptions o;
  o.recompute = Recompute::selective;
  o.zero_stage = 3;
  o.interleave = 2;
  const Mesh mesh = sim::test::mesh_of(2, 4, 4, 4);
  const long before = g_allocations;
  double sum = 0;
  for (int i = 0; i < 100; ++i) {
    const std::string why = sim::check_layout(e, mesh, o, 128);  // "" fits in the small-string buffer
    sum += sim::predict(e, mesh, o).step_time_s + static_cast<double>(why.size());
  }
  CHECK(g_allocations == before);
  CHECK(sum > 0);
}

TEST_CASE("predict() and check_layout() of every CP method allocate nothing, hybrid's default group size included") {
  using namespace ringplan;
  Experiment e = sim::test::llama_experiment(131072, 32);
  const Mesh mesh = sim::test::mesh_of(2, 2, 8, 2);
  const long before = g_allocations;
  double sum = 0;
  for (CpComm comm : {CpComm::ring, CpComm::allgather, CpComm::alltoall, CpComm::hybrid})
    for (int64_t a2a : {int64_t{0}, int64_t{2}, int64_t{4}}) {
      ParallelOptions o;
      o.cp_comm = comm;
      o.cp_a2a_size = a2a;
      const std::string why = sim::check_layout(e, mesh, o, 64);
      sum += sim::predict(e, mesh, o).step_time_s + static_cast<double>(why.size());
    }
  CHECK(g_allocations == before);
  CHECK(sum > 0);
}

TEST_CASE("predict() with packed documents allocates nothing") {
  using namespace ringplan;
  Experiment e = sim::test::llama_experiment(131072, 32);
  DocumentSpec docs;
  docs.kind = DocumentLengthKind::lognormal;
  docs.mean_length = 2048;
  docs.seed = 5;
  docs.lengths = document_lengths(docs, e.training.seq_len);  // what the loader stores
  e.training.documents = docs;
  sim::prepare_document_work(e, {4});  // as the planner does before its search
  ParallelOptions o;
  const Mesh mesh = sim::test::mesh_of(2, 4, 4, 4);
  const long before = g_allocations;
  double sum = 0;
  for (CpScheme scheme : {CpScheme::contiguous, CpScheme::zigzag, CpScheme::striped}) {
    o.cp_scheme = scheme;
    const std::string why = sim::check_layout(e, mesh, o, 128);
    sum += sim::predict(e, mesh, o).step_time_s + static_cast<double>(why.size());
  }
  CHECK(g_allocations == before);
  CHECK(sum > 0);
}
