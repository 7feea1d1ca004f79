// The search's inner loop does not allocate: heap allocations during plan() grow with the
// number of meshes and rejection categories, not with the number of evaluated candidates.
// Counted by replacing the global operator new of this test program.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "planner/planner.hpp"
#include "tests/fixtures/experiments.hpp"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

// Every non-aligned form is replaced together, so that each allocation and its release go
// through the same malloc/free pair (AddressSanitizer checks that they match).
namespace {
void* counted_malloc(std::size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
}  // namespace
void* operator new(std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

using namespace ringplan;

namespace {
struct Counted {
  int64_t allocations = 0;
  planner::PlanResult result;
};
Counted counted_plan(const Experiment& e) {
  const int64_t before = g_allocations.load();
  Counted c;
  c.result = planner::plan(e, {.top_k = 10});
  c.allocations = g_allocations.load() - before;
  return c;
}
}  // namespace

TEST_CASE("plan: allocations do not grow with the number of evaluated candidates") {
  // Same meshes and outer options twice; the second search multiplies the innermost loop
  // (recompute x ZeRO stage x attention) by 3 x 4 x 2 = 24. Allocations may come from the
  // mesh level and from rejection categories, not from the candidates evaluated.
  Experiment e = test::tiny_experiment();
  e.cluster.gpus_per_node = 8;
  e.cluster.nodes = 8;
  e.gpus.reset();  // 64 GPUs
  Experiment narrow = e;
  narrow.search.recompute = {Recompute::none};
  narrow.search.zero_stage = {0};
  narrow.search.attention = {AttentionImpl::flash};
  counted_plan(e);  // warm-up (first-use allocations of libraries)
  const Counted a = counted_plan(narrow);
  const Counted b = counted_plan(e);
  MESSAGE("narrow: evaluated ", a.result.evaluated, " with ", a.allocations, " allocations; wide: evaluated ",
          b.result.evaluated, " with ", b.allocations, " allocations");
  REQUIRE(b.result.evaluated >= 10 * a.result.evaluated);
  // A few more for the wider result (the out-of-memory example, rejection list growth).
  CHECK(b.allocations <= a.allocations + a.allocations / 4 + 16);
}
