// CUDA flash-attention kernels against the float64 CPU reference (kernels::reference_forward /
// reference_backward), plus LSE merge and ring-style block decomposition.
//
// Without a GPU every case prints "SKIPPED: no CUDA device (...)" and passes; argument checks
// that fail before touching the device run everywhere.
//
// Forward implementations: every case that runs flash_forward runs it once per implementation
// (KernelChoice::forward: mma and wgmma; wgmma only on an sm_90 device, else a SKIPPED message
// says why), under the same bounds; a failure names the implementation ("forward impl: ...").
// The backward then uses that forward's O and lse.
//
// Error bounds. The reference runs in float64 on the SAME rounded inputs the kernel sees, so the
// remaining error is the kernel's own: P (and dS) rounded to the input type before the tensor-
// core products, float32 accumulation, exp2 instead of exp. Unit roundoff u: f16 2^-11 = 4.9e-4,
// bf16 2^-8 = 3.9e-3. O is a convex combination of V rows (|V| <= 1) with weights carrying
// relative error <= u, so |dO| <= ~4u: bounds f16 2e-3, bf16 1.6e-2. lse is float32 math on exact
// products: 1e-3 for both. Gradients sum n terms with independent roundings; we bound the error
// relative to the largest reference entry of each tensor: f16 1e-2, bf16 6e-2 (a wrong mask, head
// mapping or missing term gives errors of order 1).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "tests/kernels/cuda/cuda_test_util.hpp"

namespace rk = ringplan::kernels;
namespace rkc = ringplan::kernels::cuda;
using rk::ElemType;

namespace {

struct ForwardImplCase {
  rkc::ForwardImpl impl;
  const char* name;
};
constexpr ForwardImplCase kForwardImpls[] = {
    {rkc::ForwardImpl::mma, "mma"}, {rkc::ForwardImpl::wgmma, "wgmma"}};

// True when `f` can run on this device; otherwise prints why it is skipped.
bool impl_runs(const ForwardImplCase& f) {
  const std::string why = rkc::forward_impl_unavailable(f.impl);
  if (why.empty()) return true;
  MESSAGE("SKIPPED forward impl " << f.name << ": " << why);
  return false;
}

using ringplan::test::cuda::DeviceBuffer;
using ringplan::test::cuda::have_gpu;

// 16-bit storage of a float, rounded to nearest even; `rounded` receives the exact stored value.
std::vector<uint16_t> to_16bit(const std::vector<double>& x, ElemType t, std::vector<double>& rounded) {
  std::vector<uint16_t> bits(x.size());
  rounded.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == ElemType::f16) {
      const __half h = __float2half_rn(float(x[i]));
      std::memcpy(&bits[i], &h, 2);
      rounded[i] = __half2float(h);
    } else {
      const __nv_bfloat16 h = __float2bfloat16_rn(float(x[i]));
      std::memcpy(&bits[i], &h, 2);
      rounded[i] = __bfloat162float(h);
    }
  }
  return bits;
}

std::vector<double> random_values(size_t n, std::mt19937_64& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Global positions of the tokens rank r of p holds, per DESIGN.md's sharding schemes.
enum class Scheme { contiguous, zigzag, striped };
std::vector<int64_t> shard_positions(Scheme s, int64_t total, int64_t p, int64_t r) {
  std::vector<int64_t> pos;
  if (s == Scheme::contiguous) {
    for (int64_t t = r * total / p; t < (r + 1) * total / p; ++t) pos.push_back(t);
  } else if (s == Scheme::zigzag) {
    const int64_t c = total / (2 * p);
    for (int64_t t = r * c; t < (r + 1) * c; ++t) pos.push_back(t);
    for (int64_t t = (2 * p - 1 - r) * c; t < (2 * p - r) * c; ++t) pos.push_back(t);
  } else {
    for (int64_t t = r; t < total; t += p) pos.push_back(t);
  }
  return pos;
}

struct Case {
  ElemType type = ElemType::bf16;
  int64_t b = 1, h = 4, hkv = 2, d = 64;
  bool causal = true;
  std::vector<int64_t> q_pos, k_pos;
};

double tol_out(ElemType t) { return t == ElemType::f16 ? 2e-3 : 1.6e-2; }
double tol_grad(ElemType t) { return t == ElemType::f16 ? 1e-2 : 6e-2; }

double max_abs(const std::vector<double>& x) {
  double m = 0.0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

// max |a - b| over entries; NaN anywhere counts as infinite error.
template <typename A>
double max_err(const std::vector<A>& got, const std::vector<double>& ref, double offset = 0.0) {
  REQUIRE(got.size() == ref.size());
  double e = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]) - offset;
    if (!std::isfinite(g)) return INFINITY;
    e = std::max(e, std::fabs(g - ref[i]));
  }
  return e;
}

// Device-side inputs of one case, and the rounded float64 copies the reference uses.
struct Inputs {
  int64_t n, m;
  std::vector<double> q, k, v;  // rounded
  DeviceBuffer<uint16_t> dq_in, dk_in, dv_in;
  DeviceBuffer<int64_t> dq_pos, dk_pos;
  rk::BlockParams params;

  Inputs(const Case& c, std::mt19937_64& rng)
      : n(int64_t(c.q_pos.size())), m(int64_t(c.k_pos.size())),
        dq_in(size_t(c.b * c.h * n * c.d)), dk_in(size_t(c.b * c.hkv * m * c.d)), dv_in(size_t(c.b * c.hkv * m * c.d)),
        dq_pos(size_t(n)), dk_pos(size_t(m)) {
    dq_in.upload(to_16bit(random_values(dq_in.count, rng), c.type, q));
    dk_in.upload(to_16bit(random_values(dk_in.count, rng), c.type, k));
    dv_in.upload(to_16bit(random_values(dv_in.count, rng), c.type, v));
    dq_pos.upload(c.q_pos);
    dk_pos.upload(c.k_pos);
    params.q = rk::dense_view(dq_in.ptr, c.type, c.b, c.h, n, c.d);
    params.k = rk::dense_view(dk_in.ptr, c.type, c.b, c.hkv, m, c.d);
    params.v = rk::dense_view(dv_in.ptr, c.type, c.b, c.hkv, m, c.d);
    params.q_positions = dq_pos.ptr;
    params.k_positions = dk_pos.ptr;
    params.causal = c.causal;
  }
};

// Forward and backward of one case, with the kernels and launch order of `choice`, against the
// reference.
void check_case_once(const Case& c, uint64_t seed, const rkc::KernelChoice& choice) {
  std::mt19937_64 rng(seed);
  Inputs in(c, rng);
  const int64_t n = in.n, m = in.m;
  const size_t q_elems = size_t(c.b * c.h * n * c.d), kv_elems = size_t(c.b * c.hkv * m * c.d);
  const size_t rows = size_t(c.b * c.h * n);

  // forward
  DeviceBuffer<float> d_out(q_elems), d_lse(rows);
  rk::ForwardOut fo{rk::dense_view(d_out.ptr, ElemType::f32, c.b, c.h, n, c.d), rk::dense_rows(d_lse.ptr, c.b, c.h, n)};
  rkc::flash_forward(in.params, fo, nullptr, choice);
  REQUIRE_CUDA(cudaDeviceSynchronize());
  std::vector<double> ref_out(q_elems), ref_lse(rows);
  rk::reference_forward(in.q.data(), in.k.data(), in.v.data(), c.q_pos.data(), c.k_pos.data(), c.b, c.h, c.hkv, n, m,
                        c.d, c.causal, 0.0, ref_out.data(), ref_lse.data());
  const auto out = d_out.download();
  const auto lse = d_lse.download();
  CHECK(max_err(out, ref_out) <= tol_out(c.type));
  double lse_err = 0.0;
  for (size_t i = 0; i < rows; ++i) {
    if (std::isinf(ref_lse[i])) {
      CHECK_MESSAGE((std::isinf(lse[i]) && lse[i] < 0), "row " << i << " has no visible key: lse must be -inf");
    } else {
      lse_err = std::max(lse_err, std::isfinite(lse[i]) ? std::fabs(lse[i] - ref_lse[i]) : INFINITY);
    }
  }
  CHECK(lse_err <= 1e-3);

  // backward: final O in the input type (as the ring hands it over), random dO, the kernel's lse.
  std::vector<double> out_rounded, dout;
  DeviceBuffer<uint16_t> d_out16(q_elems), d_dout(q_elems);
  d_out16.upload(to_16bit(std::vector<double>(out.begin(), out.end()), c.type, out_rounded));
  d_dout.upload(to_16bit(random_values(q_elems, rng), c.type, dout));
  DeviceBuffer<float> d_delta(rows), d_gq(q_elems), d_gk(kv_elems), d_gv(kv_elems);
  // Accumulators start at 0.5 to check that the kernel adds (+=) instead of overwriting.
  constexpr float kStart = 0.5f;
  d_gq.upload(std::vector<float>(q_elems, kStart));
  d_gk.upload(std::vector<float>(kv_elems, kStart));
  d_gv.upload(std::vector<float>(kv_elems, kStart));
  rk::BackwardArgs g;
  g.out = rk::dense_view(d_out16.ptr, c.type, c.b, c.h, n, c.d);
  g.grad_out = rk::dense_view(d_dout.ptr, c.type, c.b, c.h, n, c.d);
  g.lse = fo.lse;
  g.delta = rk::dense_rows(d_delta.ptr, c.b, c.h, n);
  g.grad_q = rk::dense_view(d_gq.ptr, ElemType::f32, c.b, c.h, n, c.d);
  g.grad_k = rk::dense_view(d_gk.ptr, ElemType::f32, c.b, c.hkv, m, c.d);
  g.grad_v = rk::dense_view(d_gv.ptr, ElemType::f32, c.b, c.hkv, m, c.d);
  rkc::backward_delta(g.out, g.grad_out, g.delta, nullptr);
  rkc::flash_backward(in.params, g, nullptr, choice);
  REQUIRE_CUDA(cudaDeviceSynchronize());

  const std::vector<double> lse_d(lse.begin(), lse.end());
  std::vector<double> rq(q_elems), rkk(kv_elems), rv(kv_elems);
  rk::reference_backward(in.q.data(), in.k.data(), in.v.data(), out_rounded.data(), dout.data(), lse_d.data(),
                         c.q_pos.data(), c.k_pos.data(), c.b, c.h, c.hkv, n, m, c.d, c.causal, 0.0, rq.data(),
                         rkk.data(), rv.data());
  const double sq = std::max(max_abs(rq), 1e-6), sk = std::max(max_abs(rkk), 1e-6), sv = std::max(max_abs(rv), 1e-6);
  const double eq = max_err(d_gq.download(), rq, kStart) / sq;
  const double ek = max_err(d_gk.download(), rkk, kStart) / sk;
  const double ev = max_err(d_gv.download(), rv, kStart) / sv;
  INFO("relative errors dQ " << eq << " dK " << ek << " dV " << ev << " (bound " << tol_grad(c.type) << ")");
  CHECK(eq <= tol_grad(c.type));
  CHECK(ek <= tol_grad(c.type));
  CHECK(ev <= tol_grad(c.type));
}

// check_case_once under each forward implementation, on the same inputs (same seed); the backward
// and the launch order come from `base`.
void check_case(const Case& c, uint64_t seed, rkc::KernelChoice base = {}) {
  for (const ForwardImplCase& f : kForwardImpls) {
    if (!impl_runs(f)) continue;
    INFO("forward impl: " << f.name);
    base.forward = f.impl;
    check_case_once(c, seed, base);
  }
}

std::vector<int64_t> iota_positions(int64_t count, int64_t first = 0) {
  std::vector<int64_t> p(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) p[size_t(i)] = first + i;
  return p;
}

// Keys: `chunks` runs of `chunk` consecutive positions, the runs in random order, the last one
// cut to `last` keys; queries: `nq` distinct positions below `q_below` in random order. Hidden,
// visible and partial key tiles then follow each other in no particular order.
void shuffled_chunks(Case& c, std::mt19937_64& rng, int64_t chunks, int64_t chunk, int64_t last, int64_t q_below,
                     int64_t nq) {
  std::vector<int64_t> order = iota_positions(chunks);
  std::shuffle(order.begin(), order.end(), rng);
  for (int64_t ch : order) {
    for (int64_t i = 0; i < chunk; ++i) c.k_pos.push_back(ch * chunk + i);
  }
  c.k_pos.resize(size_t((chunks - 1) * chunk + last));
  std::vector<int64_t> qs = iota_positions(q_below);
  std::shuffle(qs.begin(), qs.end(), rng);
  c.q_pos.assign(qs.begin(), qs.begin() + nq);
}

}  // namespace

TEST_CASE("cuda forward (every impl)/backward: causal self-attention, f16 and bf16, head dims 64 and 128") {
  if (!have_gpu()) return;
  for (ElemType t : {ElemType::f16, ElemType::bf16}) {
    for (int64_t d : {64, 128}) {
      CAPTURE(int(t));
      CAPTURE(d);
      Case c;
      c.type = t;
      c.d = d;
      c.q_pos = c.k_pos = iota_positions(192);
      check_case(c, 1000 + uint64_t(d) + uint64_t(t));
    }
  }
}

TEST_CASE("cuda forward (every impl)/backward: non-causal, GQA 8:2, batch 2, sizes not multiples of the tiles") {
  if (!have_gpu()) return;
  for (ElemType t : {ElemType::f16, ElemType::bf16}) {
    Case c;
    c.type = t;
    c.b = 2, c.h = 8, c.hkv = 2, c.d = 128, c.causal = false;
    c.q_pos = iota_positions(131);
    c.k_pos = iota_positions(77, 500);
    check_case(c, 2000 + uint64_t(t));
  }
}

TEST_CASE("cuda forward (every impl)/backward: zigzag shards, every (query rank, key rank) pair of 4") {
  if (!have_gpu()) return;
  const int64_t total = 512, p = 4;
  for (int64_t qr = 0; qr < p; ++qr) {
    for (int64_t kr = 0; kr < p; ++kr) {
      CAPTURE(qr);
      CAPTURE(kr);
      Case c;
      c.type = ElemType::bf16;
      c.q_pos = shard_positions(Scheme::zigzag, total, p, qr);
      c.k_pos = shard_positions(Scheme::zigzag, total, p, kr);
      check_case(c, 3000 + uint64_t(qr * p + kr));
    }
  }
}

TEST_CASE("cuda forward (every impl)/backward: striped shards (every tile partially masked)") {
  if (!have_gpu()) return;
  const int64_t total = 600, p = 3;
  for (int64_t kr = 0; kr < p; ++kr) {
    Case c;
    c.type = ElemType::f16;
    c.h = 2, c.hkv = 1, c.d = 64;
    c.q_pos = shard_positions(Scheme::striped, total, p, 1);
    c.k_pos = shard_positions(Scheme::striped, total, p, kr);
    check_case(c, 4000 + uint64_t(kr));
  }
}

TEST_CASE("cuda forward (every impl)/backward: rows without a visible key give O = 0, lse = -inf, no NaN") {
  if (!have_gpu()) return;
  // Queries at positions 0..99, keys at 50..249: rows 0..49 see nothing.
  Case c;
  c.type = ElemType::bf16;
  c.q_pos = iota_positions(100);
  c.k_pos = iota_positions(200, 50);
  check_case(c, 5000);
  // Every key after every query: the whole block is hidden (all tiles skipped).
  c.q_pos = iota_positions(70);
  c.k_pos = iota_positions(90, 1000);
  check_case(c, 5001);
}

TEST_CASE("cuda forward (every impl)/backward: unsorted positions, hidden tiles among live ones, partial last tile") {
  if (!have_gpu()) return;
  std::mt19937_64 rng(7000);
  // Queries and keys drawn from one random permutation of 0..299: no order inside any tile, so
  // every tile is partial; 150 queries and 173 keys leave a partial last tile on both sides.
  for (auto [t, d] : {std::pair{ElemType::f16, int64_t(64)}, std::pair{ElemType::bf16, int64_t(128)}}) {
    CAPTURE(int(t));
    CAPTURE(d);
    std::vector<int64_t> perm = iota_positions(300);
    std::shuffle(perm.begin(), perm.end(), rng);
    Case c;
    c.type = t;
    c.d = d;
    c.q_pos.assign(perm.begin(), perm.begin() + 150);
    std::shuffle(perm.begin(), perm.end(), rng);
    c.k_pos.assign(perm.begin(), perm.begin() + 173);
    check_case(c, 7000 + uint64_t(d));
  }
  // Keys in 64-key chunks of consecutive positions, chunks in random order, the last chunk cut
  // to 17 keys: 40 key tiles (more than one 32-tile classification window), whose tiles are
  // hidden (chunks above every query), visible or partial in no particular order. Queries: 130
  // distinct positions below 900 in random order.
  {
    Case c;
    c.type = ElemType::bf16;
    c.h = 2, c.hkv = 1, c.d = 128;
    shuffled_chunks(c, rng, 40, 64, 17, 900, 130);
    check_case(c, 7100);
  }
}

TEST_CASE("cuda forward (every impl)/backward: long causal and hidden-chunk cases (many 128-key tiles)") {
  if (!have_gpu()) return;
  // Causal self-attention over 1000 tokens: 8 key tiles of the wgmma kernel (128 keys), so its
  // two-step pipeline (S of a tile beside P V of the previous one) runs for many steps, with
  // visible, partial (diagonal) and hidden tiles, and a partial last tile.
  {
    Case c;
    c.type = ElemType::bf16;
    c.h = 2, c.hkv = 1, c.d = 128;
    c.q_pos = c.k_pos = iota_positions(1000);
    check_case(c, 7200);
  }
  // Keys in 128-key chunks in random order (40 chunks, the last cut to 33 keys): more than one
  // 32-tile classification window at the wgmma kernel's tile size; f16, head_dim 64.
  {
    std::mt19937_64 rng(7300);
    Case c;
    c.type = ElemType::f16;
    c.h = 2, c.hkv = 1, c.d = 64;
    shuffled_chunks(c, rng, 40, 128, 33, 40 * 128, 200);
    check_case(c, 7300);
  }
}

// The launch order (KernelChoice::order) maps a block's linear index to (tile, head, batch) in the
// mma and wgmma kernels; every block must still be computed once. Both orders, with more than one
// tile, head and batch so that a mix-up of any two shows.
TEST_CASE("cuda forward (every impl)/backward: both launch orders and backwards, causal, batch 3, GQA 6:2, 5 x 128-row tiles (last partial)") {
  const rkc::KernelChoice defaults;
  CHECK(defaults.forward == rkc::ForwardImpl::automatic);
  CHECK(defaults.backward == rkc::BackwardImpl::automatic);
  CHECK(defaults.order == rkc::BlockOrder::tile_major);  // the default, for causal launches
  CHECK(rkc::launch_order(rkc::BlockOrder::tile_major, true) == rkc::BlockOrder::tile_major);
  CHECK(rkc::launch_order(rkc::BlockOrder::head_major, true) == rkc::BlockOrder::head_major);
  CHECK(rkc::launch_order(rkc::BlockOrder::tile_major, false) == rkc::BlockOrder::head_major);  // uniform tiles
  if (!have_gpu()) return;
  for (const rkc::BlockOrder order : {rkc::BlockOrder::tile_major, rkc::BlockOrder::head_major}) {
    // Both backward kernels that use the order (check_case runs every forward implementation).
    for (const rkc::BackwardImpl bwd : {rkc::BackwardImpl::mma, rkc::BackwardImpl::wgmma}) {
      if (!rkc::backward_impl_unavailable(bwd).empty()) continue;
      CAPTURE(int(order));
      CAPTURE(rkc::backward_impl_name(bwd));
      rkc::KernelChoice choice;
      choice.backward = bwd;
      choice.order = order;
      Case c;
      c.type = ElemType::bf16;
      c.b = 3, c.h = 6, c.hkv = 2, c.d = 64;
      c.q_pos = c.k_pos = iota_positions(520);
      check_case(c, 3100, choice);
    }
  }
}

TEST_CASE("cuda forward (every impl): no keys (k.tokens = 0) gives O = 0 and lse = -inf") {
  if (!have_gpu()) return;
  const int64_t h = 2, n = 70, d = 64;
  // K and V: views of 0 tokens over a small live buffer (the kernels must not read it).
  DeviceBuffer<uint16_t> dq{size_t(h * n * d)}, dkv{size_t(8 * d)};
  dq.upload(std::vector<uint16_t>(dq.count, uint16_t(0x3c00)));  // 1.0 in f16
  DeviceBuffer<int64_t> qp{size_t(n)}, kp{1};
  qp.upload(iota_positions(n));
  kp.upload(std::vector<int64_t>{0});
  DeviceBuffer<float> o{size_t(h * n * d)}, l{size_t(h * n)};
  rk::BlockParams p;
  p.q = rk::dense_view(dq.ptr, ElemType::f16, 1, h, n, d);
  p.k = rk::dense_view(dkv.ptr, ElemType::f16, 1, 1, 0, d);
  p.v = rk::dense_view(dkv.ptr, ElemType::f16, 1, 1, 0, d);
  p.q_positions = qp.ptr;
  p.k_positions = kp.ptr;
  p.causal = true;
  const rk::ForwardOut fo{rk::dense_view(o.ptr, ElemType::f32, 1, h, n, d), rk::dense_rows(l.ptr, 1, h, n)};
  for (const ForwardImplCase& f : kForwardImpls) {
    if (!impl_runs(f)) continue;
    INFO("forward impl: " << f.name);
    const rkc::KernelChoice choice{f.impl};
    o.upload(std::vector<float>(o.count, 7.0f));  // overwritten, not merged
    l.upload(std::vector<float>(l.count, 7.0f));
    rkc::flash_forward(p, fo, nullptr, choice);
    REQUIRE_CUDA(cudaDeviceSynchronize());
    const auto out = o.download();
    const auto lse = l.download();
    CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 0.0f; }));
    CHECK(std::all_of(lse.begin(), lse.end(), [](float x) { return std::isinf(x) && x < 0; }));
  }
}

TEST_CASE("cuda forward impl selection: automatic picks wgmma exactly where it can run, explicit wgmma elsewhere throws") {
  if (!have_gpu()) return;
  const std::string why = rkc::forward_impl_unavailable(rkc::ForwardImpl::wgmma);
  CHECK(rkc::forward_impl_unavailable(rkc::ForwardImpl::mma).empty());
  if (why.empty()) {
    CHECK(rkc::resolve_forward_impl(rkc::ForwardImpl::automatic) == rkc::ForwardImpl::wgmma);
    return;
  }
  MESSAGE("wgmma unavailable here: " << why);
  CHECK(rkc::resolve_forward_impl(rkc::ForwardImpl::automatic) == rkc::ForwardImpl::mma);
  Case c;
  c.q_pos = c.k_pos = iota_positions(64);
  CHECK_THROWS_WITH_AS(check_case_once(c, 7400, rkc::KernelChoice{rkc::ForwardImpl::wgmma}), doctest::Contains("wgmma"), std::invalid_argument);
}

TEST_CASE("cuda forward (every impl): token-major strided inputs, odd-stride padded output") {
  if (!have_gpu()) return;
  // q [b, n, h, d] and k, v [b, m, hkv, d] in memory (head stride d, token stride heads * d);
  // O rows padded to d + 1 floats, so O's strides are odd (no paired float stores).
  const ElemType t = ElemType::bf16;
  const int64_t b = 2, h = 4, hkv = 2, n = 100, m = 90, d = 64, od = d + 1;
  std::mt19937_64 rng(8000);
  std::vector<double> q, k, v;  // dense [b, heads, tokens, d], rounded
  const auto qb = to_16bit(random_values(size_t(b * h * n * d), rng), t, q);
  const auto kb = to_16bit(random_values(size_t(b * hkv * m * d), rng), t, k);
  const auto vb = to_16bit(random_values(size_t(b * hkv * m * d), rng), t, v);
  // dense [b, heads, tokens, d] -> token-major [b, tokens, heads, d]
  auto token_major = [&](const std::vector<uint16_t>& x, int64_t heads, int64_t tokens) {
    std::vector<uint16_t> y(x.size());
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < heads; ++hi)
        for (int64_t i = 0; i < tokens; ++i)
          for (int64_t c = 0; c < d; ++c)
            y[size_t(((bi * tokens + i) * heads + hi) * d + c)] = x[size_t(((bi * heads + hi) * tokens + i) * d + c)];
    return y;
  };
  DeviceBuffer<uint16_t> dq(qb.size()), dk(kb.size()), dv(vb.size());
  dq.upload(token_major(qb, h, n));
  dk.upload(token_major(kb, hkv, m));
  dv.upload(token_major(vb, hkv, m));
  const std::vector<int64_t> q_pos = iota_positions(n, 40), k_pos = iota_positions(m);  // rows see 41..90 keys
  DeviceBuffer<int64_t> dqp{size_t(n)}, dkp{size_t(m)};
  dqp.upload(q_pos);
  dkp.upload(k_pos);
  auto view = [&](void* data, ElemType type, int64_t heads, int64_t tokens, int64_t row) {
    rk::TensorView tv{};
    tv.data = data, tv.type = type, tv.batch = b, tv.heads = heads, tv.tokens = tokens, tv.head_dim = d;
    tv.stride_head = row, tv.stride_token = heads * row, tv.stride_batch = tokens * heads * row;
    return tv;
  };
  rk::BlockParams p;
  p.q = view(dq.ptr, t, h, n, d);
  p.k = view(dk.ptr, t, hkv, m, d);
  p.v = view(dv.ptr, t, hkv, m, d);
  p.q_positions = dqp.ptr;
  p.k_positions = dkp.ptr;
  p.causal = true;
  DeviceBuffer<float> d_out(size_t(b * n * h * od)), d_lse(size_t(b * h * n));
  const rk::ForwardOut fo{view(d_out.ptr, ElemType::f32, h, n, od), rk::dense_rows(d_lse.ptr, b, h, n)};
  std::vector<double> ref_out(size_t(b * h * n * d)), ref_lse(size_t(b * h * n));
  rk::reference_forward(q.data(), k.data(), v.data(), q_pos.data(), k_pos.data(), b, h, hkv, n, m, d, true, 0.0,
                        ref_out.data(), ref_lse.data());
  for (const ForwardImplCase& f : kForwardImpls) {
    if (!impl_runs(f)) continue;
    INFO("forward impl: " << f.name);
    const rkc::KernelChoice choice{f.impl};
    REQUIRE_CUDA(cudaMemset(d_out.ptr, 0, d_out.count * sizeof(float)));
    rkc::flash_forward(p, fo, nullptr, choice);
    REQUIRE_CUDA(cudaDeviceSynchronize());
    const auto out = d_out.download();
    std::vector<float> got(ref_out.size());
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < d; ++c)
            got[size_t(((bi * h + hi) * n + i) * d + c)] = out[size_t(((bi * n + i) * h + hi) * od + c)];
    CHECK(max_err(got, ref_out) <= tol_out(t));
    CHECK(max_err(d_lse.download(), ref_lse) <= 1e-3);
  }
}

TEST_CASE("cuda merge_partial (every forward impl): two key blocks merged equal the whole block (ring forward)") {
  if (!have_gpu()) return;
  Case c;
  c.type = ElemType::f16;
  c.h = 4, c.hkv = 1, c.d = 64;
  const auto q_pos = shard_positions(Scheme::zigzag, 512, 2, 1);  // 256 queries: chunks 1 and 2
  const auto k0 = shard_positions(Scheme::zigzag, 512, 2, 0);     // keys held by rank 0
  const auto k1 = shard_positions(Scheme::zigzag, 512, 2, 1);     // keys held by rank 1
  std::mt19937_64 rng(6000);
  const int64_t n = int64_t(q_pos.size()), m = 256;
  std::vector<double> q, k, v;
  DeviceBuffer<uint16_t> dq{size_t(c.h * n * c.d)}, dk{size_t(2 * m * c.d)}, dv{size_t(2 * m * c.d)};
  dq.upload(to_16bit(random_values(dq.count, rng), c.type, q));
  dk.upload(to_16bit(random_values(dk.count, rng), c.type, k));
  dv.upload(to_16bit(random_values(dv.count, rng), c.type, v));
  std::vector<int64_t> all_k(k0);
  all_k.insert(all_k.end(), k1.begin(), k1.end());
  DeviceBuffer<int64_t> dqp{size_t(n)}, dkp{size_t(2 * m)};
  dqp.upload(q_pos);
  dkp.upload(all_k);
  const size_t q_elems = size_t(c.h * n * c.d), rows = size_t(c.h * n);
  DeviceBuffer<float> acc_o(q_elems), acc_l(rows), blk_o(q_elems), blk_l(rows);
  rk::ForwardOut acc{rk::dense_view(acc_o.ptr, ElemType::f32, 1, c.h, n, c.d), rk::dense_rows(acc_l.ptr, 1, c.h, n)};
  rk::ForwardOut blk{rk::dense_view(blk_o.ptr, ElemType::f32, 1, c.h, n, c.d), rk::dense_rows(blk_l.ptr, 1, c.h, n)};
  std::vector<double> ref_out(q_elems), ref_lse(rows);
  rk::reference_forward(q.data(), k.data(), v.data(), q_pos.data(), all_k.data(), 1, c.h, 1, n, 2 * m, c.d, true, 0.0,
                        ref_out.data(), ref_lse.data());
  for (const ForwardImplCase& f : kForwardImpls) {
    if (!impl_runs(f)) continue;
    INFO("forward impl: " << f.name);
    const rkc::KernelChoice choice{f.impl};
    for (int step = 0; step < 2; ++step) {
      // Block `step`: the second half of the KV buffers, as a view with the full buffer's strides.
      rk::BlockParams p;
      p.q = rk::dense_view(dq.ptr, c.type, 1, c.h, n, c.d);
      p.k = rk::dense_view(dk.ptr + step * m * c.d, c.type, 1, 1, m, c.d);
      p.v = rk::dense_view(dv.ptr + step * m * c.d, c.type, 1, 1, m, c.d);
      p.q_positions = dqp.ptr;
      p.k_positions = dkp.ptr + step * m;
      p.causal = true;
      rkc::flash_forward(p, step == 0 ? acc : blk, nullptr, choice);
      if (step == 1) rkc::merge_partial(acc, blk, nullptr);
    }
    REQUIRE_CUDA(cudaDeviceSynchronize());
    CHECK(max_err(acc_o.download(), ref_out) <= tol_out(c.type));
    CHECK(max_err(acc_l.download(), ref_lse) <= 1e-3);
  }
}

TEST_CASE("cuda merge_partial: at large lse the result is a convex combination within ulps of a float64 merge") {
  // The CUDA twin of test_attention_api.cpp's "merge_partial: at large lse ...": partials with
  // lse ~ 100..200 (large logits, one float32 ulp of lse = 1.5e-5), merged on the device. The
  // stable sigmoid form keeps every element within 4 eps * max(|O_a|, |O_b|) of the float64 merge
  // of the same inputs, inside [O_a, O_b], and an equal row bit-exact; the merged lse within one
  // ulp. Then a chain of P = 2..8 merges (a ring's forward) stays within P times that.
  if (!have_gpu()) return;
  const int64_t rows = 4096, d = 8;
  std::mt19937_64 rng(9001);
  std::uniform_real_distribution<float> lse_of(100.0f, 200.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> oa(static_cast<size_t>(rows * d)), ob(static_cast<size_t>(rows * d));
  std::vector<float> la(static_cast<size_t>(rows)), lb(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    la[size_t(r)] = lse_of(rng);
    lb[size_t(r)] = r % 4 == 0 ? la[size_t(r)] + 4.0f * normal(rng) : lse_of(rng);
    for (int64_t x = r * d; x < (r + 1) * d; ++x) {
      oa[size_t(x)] = normal(rng);
      ob[size_t(x)] = r % 4 == 1 ? oa[size_t(x)] : normal(rng);
    }
  }
  DeviceBuffer<float> d_oa(oa.size()), d_ob(ob.size()), d_la(la.size()), d_lb(lb.size());
  d_oa.upload(oa);
  d_ob.upload(ob);
  d_la.upload(la);
  d_lb.upload(lb);
  rkc::merge_partial({rk::dense_view(d_oa.ptr, ElemType::f32, 1, 1, rows, d), rk::dense_rows(d_la.ptr, 1, 1, rows)},
                     {rk::dense_view(d_ob.ptr, ElemType::f32, 1, 1, rows, d), rk::dense_rows(d_lb.ptr, 1, 1, rows)},
                     nullptr);
  REQUIRE_CUDA(cudaDeviceSynchronize());
  const std::vector<float> out = d_oa.download(), lse = d_la.download();
  const double eps = 1.1920928955078125e-07;  // float32 epsilon
  int64_t outside = 0, inexact_equal = 0;
  double worst_ulps = 0.0, worst_lse_ulps = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const double a = la[size_t(r)], b = lb[size_t(r)], hi = std::max(a, b);
    const double exact_lse = hi + std::log(std::exp(a - hi) + std::exp(b - hi));
    worst_lse_ulps = std::max(worst_lse_ulps, std::abs(lse[size_t(r)] - exact_lse) / (eps * std::abs(exact_lse)));
    for (int64_t x = r * d; x < (r + 1) * d; ++x) {
      const double exact = std::exp(a - exact_lse) * oa[size_t(x)] + std::exp(b - exact_lse) * ob[size_t(x)];
      const double size = std::max(std::abs(oa[size_t(x)]), std::abs(ob[size_t(x)]));
      worst_ulps = std::max(worst_ulps, std::abs(out[size_t(x)] - exact) / (eps * std::max(size, 1e-30)));
      if (out[size_t(x)] < std::min(oa[size_t(x)], ob[size_t(x)]) || out[size_t(x)] > std::max(oa[size_t(x)], ob[size_t(x)]))
        ++outside;
      if (r % 4 == 1 && out[size_t(x)] != oa[size_t(x)]) ++inexact_equal;
    }
  }
  MESSAGE("one merge: worst O error " << worst_ulps << " eps, lse error " << worst_lse_ulps << " eps");
  CHECK(worst_ulps <= 4.0);
  CHECK(worst_lse_ulps <= 1.0);
  CHECK(outside == 0);
  CHECK(inexact_equal == 0);

  // A ring's forward: P partials of one row set merged in turn, against the float64 merge of all.
  for (int64_t P = 2; P <= 8; ++P) {
    std::vector<std::vector<float>> po(static_cast<size_t>(P)), pl(static_cast<size_t>(P));
    for (int64_t k = 0; k < P; ++k) {
      po[size_t(k)].resize(size_t(rows * d));
      pl[size_t(k)].resize(size_t(rows));
      for (float& v : po[size_t(k)]) v = normal(rng);
      for (float& v : pl[size_t(k)]) v = lse_of(rng);
    }
    DeviceBuffer<float> acc_o(static_cast<size_t>(rows * d)), acc_l(static_cast<size_t>(rows));
    DeviceBuffer<float> blk_o(static_cast<size_t>(rows * d)), blk_l(static_cast<size_t>(rows));
    acc_o.upload(po[0]);
    acc_l.upload(pl[0]);
    for (int64_t k = 1; k < P; ++k) {
      blk_o.upload(po[size_t(k)]);
      blk_l.upload(pl[size_t(k)]);
      rkc::merge_partial({rk::dense_view(acc_o.ptr, ElemType::f32, 1, 1, rows, d), rk::dense_rows(acc_l.ptr, 1, 1, rows)},
                         {rk::dense_view(blk_o.ptr, ElemType::f32, 1, 1, rows, d), rk::dense_rows(blk_l.ptr, 1, 1, rows)},
                         nullptr);
    }
    REQUIRE_CUDA(cudaDeviceSynchronize());
    const std::vector<float> got = acc_o.download();
    double worst = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      double hi = -INFINITY;
      for (int64_t k = 0; k < P; ++k) hi = std::max(hi, double(pl[size_t(k)][size_t(r)]));
      double sum = 0.0;
      for (int64_t k = 0; k < P; ++k) sum += std::exp(double(pl[size_t(k)][size_t(r)]) - hi);
      const double L = hi + std::log(sum);
      for (int64_t x = r * d; x < (r + 1) * d; ++x) {
        double exact = 0.0, size = 0.0;
        for (int64_t k = 0; k < P; ++k) {
          exact += std::exp(double(pl[size_t(k)][size_t(r)]) - L) * po[size_t(k)][size_t(x)];
          size = std::max(size, double(std::abs(po[size_t(k)][size_t(x)])));
        }
        worst = std::max(worst, std::abs(got[size_t(x)] - exact) / (eps * std::max(size, 1e-30)));
      }
    }
    MESSAGE("P = " << P << ": worst O error " << worst << " eps * max |O_k|");
    // Each merge adds at most its own rounding (4 eps) plus that of the running lse, rounded to
    // float32 between merges: half an ulp of an lse in [128, 256) is 64 eps, and it moves a weight
    // w by w (1 - w) <= 1/4 times that: 16 eps. So about 20 eps per merge.
    CHECK(worst <= 23.0 * double(P - 1));
  }
}

TEST_CASE("cuda merge_partial: both sides -inf stay O = 0, lse = -inf") {
  if (!have_gpu()) return;
  const int64_t h = 1, n = 3, d = 64;
  DeviceBuffer<float> ao{size_t(n * d)}, al{size_t(n)}, bo{size_t(n * d)}, bl{size_t(n)};
  ao.upload(std::vector<float>(size_t(n * d), 0.0f));
  bo.upload(std::vector<float>(size_t(n * d), 0.0f));
  al.upload({rk::kNegInf, rk::kNegInf, 0.0f});
  bl.upload({rk::kNegInf, 1.0f, rk::kNegInf});
  rk::ForwardOut a{rk::dense_view(ao.ptr, ElemType::f32, 1, h, n, d), rk::dense_rows(al.ptr, 1, h, n)};
  rk::ForwardOut b{rk::dense_view(bo.ptr, ElemType::f32, 1, h, n, d), rk::dense_rows(bl.ptr, 1, h, n)};
  rkc::merge_partial(a, b, nullptr);
  REQUIRE_CUDA(cudaDeviceSynchronize());
  const auto lse = al.download();
  const auto o = ao.download();
  CHECK((std::isinf(lse[0]) && lse[0] < 0));
  CHECK(lse[1] == doctest::Approx(1.0));
  CHECK(lse[2] == doctest::Approx(0.0));
  for (float x : o) CHECK(x == 0.0f);
}

TEST_CASE("cuda kernels reject bad arguments with a message naming what would be valid") {
  // These checks fail before any device call, so they run without a GPU.
  std::vector<uint16_t> host(4 * 96 * 8);
  std::vector<int64_t> pos(8, 0);
  std::vector<float> out(4 * 96 * 8), lse(32);
  rk::BlockParams p;
  p.q = rk::dense_view(host.data(), ElemType::bf16, 1, 4, 8, 96);
  p.k = rk::dense_view(host.data(), ElemType::bf16, 1, 4, 8, 96);
  p.v = p.k;
  p.q_positions = p.k_positions = pos.data();
  rk::ForwardOut o{rk::dense_view(out.data(), ElemType::f32, 1, 4, 8, 96), rk::dense_rows(lse.data(), 1, 4, 8)};
  CHECK(rkc::validate_forward(p, o).find("64 and 128") != std::string::npos);
  CHECK_THROWS_AS(rkc::flash_forward(p, o, nullptr), std::invalid_argument);

  p.q = rk::dense_view(host.data(), ElemType::f32, 1, 4, 8, 64);
  p.k = p.v = rk::dense_view(host.data(), ElemType::f32, 1, 4, 8, 64);
  o.out = rk::dense_view(out.data(), ElemType::f32, 1, 4, 8, 64);
  CHECK(rkc::validate_forward(p, o).find("f16 or bf16") != std::string::npos);

  p.q = rk::dense_view(host.data(), ElemType::f16, 1, 4, 8, 64);
  p.k = p.v = rk::dense_view(host.data(), ElemType::f16, 1, 4, 8, 64);
  p.q.stride_token = 66;  // not a multiple of 8 elements: no 16-byte vector loads
  CHECK(rkc::validate_forward(p, o).find("multiples of 8") != std::string::npos);
}
