// cuda::flash_backward under every implementation (BackwardImpl::mma and, on an sm_90 device,
// wgmma; elsewhere a SKIPPED message says why) against the float64 reference, and the
// implementations against each other.
//
// The forward here is the float64 reference (reference_forward): O rounded to the input type and
// lse rounded to float32 are uploaded as the "final" forward results, so these cases test the
// backward alone, independent of either forward kernel. D comes from cuda::backward_delta.
//
// Error bounds (as in test_attention_cuda.cpp, whose header derives them): the reference runs in
// float64 on the SAME rounded inputs, so the remaining error is the kernel's own (P and dS rounded
// to the input type before the tensor-core products, float32 accumulation, exp2). Gradients are
// compared relative to the largest reference entry of each tensor: f16 1e-2, bf16 6e-2 (a wrong
// mask, head mapping, fragment index or missing term gives errors of order 1).
//
// Without a GPU every case prints "SKIPPED: no CUDA device (...)" and passes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
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
using rkc::BackwardImpl;

namespace {

using ringplan::test::cuda::DeviceBuffer;
using ringplan::test::cuda::have_gpu;

const char* impl_name(BackwardImpl i) { return rkc::backward_impl_name(i); }

constexpr BackwardImpl kImpls[] = {BackwardImpl::mma, BackwardImpl::wgmma};

// True when `impl` can run on this device; otherwise prints why it is skipped.
bool impl_runs(BackwardImpl impl) {
  const std::string why = rkc::backward_impl_unavailable(impl);
  if (why.empty()) return true;
  MESSAGE("SKIPPED backward impl " << impl_name(impl) << ": " << why);
  return false;
}

// 16-bit storage of a value, rounded to nearest even; `rounded` receives the exact stored value.
uint16_t to_16bit(double x, ElemType t, double& rounded) {
  uint16_t bits;
  if (t == ElemType::f16) {
    const __half h = __float2half_rn(float(x));
    std::memcpy(&bits, &h, 2);
    rounded = __half2float(h);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(float(x));
    std::memcpy(&bits, &h, 2);
    rounded = __bfloat162float(h);
  }
  return bits;
}

std::vector<double> random_values(size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

std::vector<int64_t> iota_positions(int64_t count, int64_t first = 0) {
  std::vector<int64_t> p(static_cast<size_t>(count));
  std::iota(p.begin(), p.end(), first);
  return p;
}

// Zigzag shard r of p over `total` tokens (chunks r and 2p - 1 - r), then shuffled: positions in
// no order at all, so nearly every tile is partially masked.
std::vector<int64_t> zigzag_shuffled(int64_t total, int64_t p, int64_t r, std::mt19937_64& rng) {
  std::vector<int64_t> pos;
  const int64_t c = total / (2 * p);
  for (int64_t t = r * c; t < (r + 1) * c; ++t) pos.push_back(t);
  for (int64_t t = (2 * p - 1 - r) * c; t < (2 * p - r) * c; ++t) pos.push_back(t);
  std::shuffle(pos.begin(), pos.end(), rng);
  return pos;
}

// Tensor layouts on the device: dense [b, h, tokens, d] or token-major [b, tokens, h, d] (the
// layout of a fused QKV projection), both described by TensorView strides.
enum class Layout { bhsd, bshd };

rk::TensorView make_view(void* data, ElemType t, int64_t b, int64_t h, int64_t s, int64_t d, Layout l) {
  rk::TensorView v = rk::dense_view(data, t, b, h, s, d);
  if (l == Layout::bshd) {
    v.stride_token = h * d;
    v.stride_head = d;
    v.stride_batch = s * h * d;
  }
  return v;
}

// Device offset of dense index ((bi * h + hi) * s + si) * d + di under layout l.
size_t device_index(size_t dense, int64_t h, int64_t s, int64_t d, Layout l) {
  if (l == Layout::bhsd) return dense;
  const int64_t di = int64_t(dense) % d, si = int64_t(dense) / d % s, hi = int64_t(dense) / (d * s) % h,
                bi = int64_t(dense) / (d * s * h);
  return size_t(((bi * s + si) * h + hi) * d + di);
}

struct Case {
  ElemType type = ElemType::bf16;
  int64_t b = 1, h = 4, hkv = 2, d = 64;
  bool causal = true;
  std::vector<int64_t> q_pos, k_pos;
  Layout layout = Layout::bhsd;
};

double tol_grad(ElemType t) { return t == ElemType::f16 ? 1e-2 : 6e-2; }

double max_abs(const std::vector<double>& x) {
  double m = 0.0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

// Everything one backward call needs, on the device, plus the float64 reference gradients.
struct Problem {
  Case c;
  int64_t n, m;
  size_t q_elems, kv_elems, rows;
  DeviceBuffer<uint16_t> q, k, v, out, dout;
  DeviceBuffer<int64_t> q_pos, k_pos;
  DeviceBuffer<float> lse, delta;
  std::vector<double> ref_dq, ref_dk, ref_dv;  // dense [b, h, n, d] / [b, hkv, m, d]
  rk::BlockParams params;

  Problem(const Case& cs, uint64_t seed, bool with_reference)
      : c(cs), n(int64_t(cs.q_pos.size())), m(int64_t(cs.k_pos.size())),
        q_elems(size_t(cs.b * cs.h * n * cs.d)), kv_elems(size_t(cs.b * cs.hkv * m * cs.d)),
        rows(size_t(cs.b * cs.h * n)), q(q_elems), k(kv_elems), v(kv_elems), out(q_elems), dout(q_elems),
        q_pos(size_t(n)), k_pos(size_t(m)), lse(rows), delta(rows) {
    std::mt19937_64 rng(seed);
    // Dense rounded host copies for the reference; device copies in the case's layout.
    auto fill = [&](DeviceBuffer<uint16_t>& dev, std::vector<double>& host, int64_t heads, int64_t tokens,
                    const std::vector<double>& values) {
      host.resize(values.size());
      std::vector<uint16_t> bits(values.size());
      for (size_t i = 0; i < values.size(); ++i) {
        bits[device_index(i, heads, tokens, c.d, c.layout)] = to_16bit(values[i], c.type, host[i]);
      }
      dev.upload(bits);
    };
    std::vector<double> hq, hk, hv, ho, hdo;
    fill(q, hq, c.h, n, random_values(q_elems, rng));
    fill(k, hk, c.hkv, m, random_values(kv_elems, rng));
    fill(v, hv, c.hkv, m, random_values(kv_elems, rng));
    q_pos.upload(c.q_pos);
    k_pos.upload(c.k_pos);

    // Forward by the reference; O rounded to the input type and lse to float32, as a ring hands
    // them to the backward.
    std::vector<double> ref_out(q_elems), ref_lse(rows);
    rk::reference_forward(hq.data(), hk.data(), hv.data(), c.q_pos.data(), c.k_pos.data(), c.b, c.h, c.hkv, n, m,
                          c.d, c.causal, 0.0, ref_out.data(), ref_lse.data());
    fill(out, ho, c.h, n, ref_out);
    fill(dout, hdo, c.h, n, random_values(q_elems, rng));
    std::vector<float> lse_f(rows);
    std::vector<double> lse_d(rows);
    for (size_t i = 0; i < rows; ++i) {
      lse_f[i] = float(ref_lse[i]);  // -inf stays -inf
      lse_d[i] = double(lse_f[i]);
    }
    lse.upload(lse_f);

    params.q = make_view(q.ptr, c.type, c.b, c.h, n, c.d, c.layout);
    params.k = make_view(k.ptr, c.type, c.b, c.hkv, m, c.d, c.layout);
    params.v = make_view(v.ptr, c.type, c.b, c.hkv, m, c.d, c.layout);
    params.q_positions = q_pos.ptr;
    params.k_positions = k_pos.ptr;
    params.causal = c.causal;
    rkc::backward_delta(make_view(out.ptr, c.type, c.b, c.h, n, c.d, c.layout),
                        make_view(dout.ptr, c.type, c.b, c.h, n, c.d, c.layout), rk::dense_rows(delta.ptr, c.b, c.h, n),
                        nullptr);
    REQUIRE_CUDA(cudaDeviceSynchronize());

    if (with_reference) {
      ref_dq.resize(q_elems);
      ref_dk.resize(kv_elems);
      ref_dv.resize(kv_elems);
      rk::reference_backward(hq.data(), hk.data(), hv.data(), ho.data(), hdo.data(), lse_d.data(), c.q_pos.data(),
                             c.k_pos.data(), c.b, c.h, c.hkv, n, m, c.d, c.causal, 0.0, ref_dq.data(), ref_dk.data(),
                             ref_dv.data());
    }
  }

  // Gradients after `calls` calls of flash_backward under `impl` on accumulators that start at
  // `start`, returned dense [b, heads, tokens, d] (float64).
  struct Grads {
    std::vector<double> dq, dk, dv;
  };
  Grads run(BackwardImpl impl, int calls, float start) {
    rkc::KernelChoice choice;
    choice.backward = impl;
    DeviceBuffer<float> gq(q_elems), gk(kv_elems), gv(kv_elems);
    gq.upload(std::vector<float>(q_elems, start));
    gk.upload(std::vector<float>(kv_elems, start));
    gv.upload(std::vector<float>(kv_elems, start));
    rk::BackwardArgs g;
    g.out = make_view(out.ptr, c.type, c.b, c.h, n, c.d, c.layout);
    g.grad_out = make_view(dout.ptr, c.type, c.b, c.h, n, c.d, c.layout);
    g.lse = rk::dense_rows(lse.ptr, c.b, c.h, n);
    g.delta = rk::dense_rows(delta.ptr, c.b, c.h, n);
    g.grad_q = make_view(gq.ptr, ElemType::f32, c.b, c.h, n, c.d, c.layout);
    g.grad_k = make_view(gk.ptr, ElemType::f32, c.b, c.hkv, m, c.d, c.layout);
    g.grad_v = make_view(gv.ptr, ElemType::f32, c.b, c.hkv, m, c.d, c.layout);
    for (int i = 0; i < calls; ++i) rkc::flash_backward(params, g, nullptr, choice);
    REQUIRE_CUDA(cudaDeviceSynchronize());
    auto dense = [&](const DeviceBuffer<float>& buf, int64_t heads, int64_t tokens) {
      const std::vector<float> x = buf.download();
      std::vector<double> r(x.size());
      for (size_t i = 0; i < r.size(); ++i) r[i] = double(x[device_index(i, heads, tokens, c.d, c.layout)]) - start;
      return r;
    };
    return {dense(gq, c.h, n), dense(gk, c.hkv, m), dense(gv, c.hkv, m)};
  }
};

// max |got - scale * ref| / max |scale * ref|; NaN anywhere counts as infinite error.
double rel_err(const std::vector<double>& got, const std::vector<double>& ref, double scale = 1.0) {
  REQUIRE(got.size() == ref.size());
  const double denom = std::max(scale * max_abs(ref), 1e-6);
  double e = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    e = std::max(e, std::fabs(got[i] - scale * ref[i]));
  }
  return e / denom;
}

// Backward of one case under every implementation against the reference. `calls` > 1 checks
// accumulation: the accumulators start at 0.5 and must end at 0.5 + calls * reference.
void check_case(const Case& c, uint64_t seed, int calls = 1) {
  Problem pr(c, seed, true);
  for (BackwardImpl impl : kImpls) {
    if (!impl_runs(impl)) continue;
    const auto gr = pr.run(impl, calls, 0.5f);
    const double eq = rel_err(gr.dq, pr.ref_dq, calls), ek = rel_err(gr.dk, pr.ref_dk, calls),
                 ev = rel_err(gr.dv, pr.ref_dv, calls);
    INFO(std::string(impl_name(impl)) << ": relative errors dQ " << eq << " dK " << ek << " dV " << ev << " (bound "
                         << tol_grad(c.type) << ", calls " << calls << ")");
    CHECK(eq <= tol_grad(c.type));
    CHECK(ek <= tol_grad(c.type));
    CHECK(ev <= tol_grad(c.type));
  }
}

}  // namespace

TEST_CASE("cuda backward (every impl): head dims 64 and 128, f16 and bf16, causal and not, partial tiles, GQA 4:2") {
  if (!have_gpu()) return;
  for (ElemType t : {ElemType::f16, ElemType::bf16}) {
    for (int64_t d : {64, 128}) {
      for (bool causal : {true, false}) {
        CAPTURE(int(t));
        CAPTURE(d);
        CAPTURE(causal);
        Case c;
        c.type = t;
        c.d = d;
        c.causal = causal;
        c.h = 4, c.hkv = 2;
        c.q_pos = iota_positions(200);  // n = 200, m = 136: neither a multiple of 64
        c.k_pos = iota_positions(136, 40);
        check_case(c, 100 + uint64_t(d) + 10 * uint64_t(t) + (causal ? 1 : 0));
      }
    }
  }
}

TEST_CASE("cuda backward (every impl): GQA 4:1, batch 2, token-major strides, n < m") {
  if (!have_gpu()) return;
  for (ElemType t : {ElemType::f16, ElemType::bf16}) {
    CAPTURE(int(t));
    Case c;
    c.type = t;
    c.b = 2, c.h = 4, c.hkv = 1, c.d = 128;
    c.layout = Layout::bshd;
    c.q_pos = iota_positions(77, 150);
    c.k_pos = iota_positions(230);
    check_case(c, 200 + uint64_t(t));
  }
}

TEST_CASE("cuda backward (every impl): unsorted (shuffled zigzag) positions, every (query, key) shard pair") {
  if (!have_gpu()) return;
  std::mt19937_64 rng(300);
  const int64_t total = 512, p = 2;
  for (int64_t qr = 0; qr < p; ++qr) {
    for (int64_t kr = 0; kr < p; ++kr) {
      for (int64_t d : {64, 128}) {
        CAPTURE(qr);
        CAPTURE(kr);
        CAPTURE(d);
        Case c;
        c.type = ElemType::bf16;
        c.d = d;
        c.h = 4, c.hkv = 1;
        c.q_pos = zigzag_shuffled(total, p, qr, rng);
        c.k_pos = zigzag_shuffled(total, p, kr, rng);
        check_case(c, 310 + uint64_t(qr * p + kr) + uint64_t(d));
      }
    }
  }
}

TEST_CASE("cuda backward (every impl): rows without a visible key (lse = -inf) contribute nothing") {
  if (!have_gpu()) return;
  // Queries at 0..99, keys at 50..249: rows 0..49 see nothing; key tiles beyond 99 are hidden.
  Case c;
  c.type = ElemType::f16;
  c.q_pos = iota_positions(100);
  c.k_pos = iota_positions(200, 50);
  check_case(c, 400);
}

TEST_CASE("cuda backward (every impl): accumulates (two calls on the same outputs double them)") {
  if (!have_gpu()) return;
  for (int64_t d : {64, 128}) {
    CAPTURE(d);
    Case c;
    c.type = ElemType::f16;
    c.d = d;
    c.h = 4, c.hkv = 2;
    c.q_pos = iota_positions(150);
    c.k_pos = iota_positions(150);
    check_case(c, 500 + uint64_t(d), 2);
  }
}

TEST_CASE("cuda backward: every implementation agrees with mma on a large causal case (n = m = 1024, head_dim 128)") {
  if (!have_gpu()) return;
  for (ElemType t : {ElemType::f16, ElemType::bf16}) {
    CAPTURE(int(t));
    Case c;
    c.type = t;
    c.d = 128;
    c.h = 4, c.hkv = 2;
    c.q_pos = c.k_pos = iota_positions(1024);
    Problem pr(c, 600 + uint64_t(t), false);
    const auto a = pr.run(BackwardImpl::mma, 1, 0.0f);
    for (BackwardImpl other : {BackwardImpl::wgmma}) {
      if (!impl_runs(other)) continue;
      const auto b = pr.run(other, 1, 0.0f);
      const double eq = rel_err(a.dq, b.dq), ek = rel_err(a.dk, b.dk), ev = rel_err(a.dv, b.dv);
      INFO("mma vs " << impl_name(other) << ": relative differences dQ " << eq << " dK " << ek << " dV " << ev
                     << " (bound " << tol_grad(t) << ")");
      CHECK(eq <= tol_grad(t));
      CHECK(ek <= tol_grad(t));
      CHECK(ev <= tol_grad(t));
    }
  }
}

TEST_CASE("cuda backward impl selection: automatic picks wgmma exactly where it can run, explicit wgmma elsewhere throws") {
  if (!have_gpu()) return;
  const std::string why = rkc::backward_impl_unavailable(BackwardImpl::wgmma);
  CHECK(rkc::backward_impl_unavailable(BackwardImpl::mma).empty());
  if (why.empty()) {
    CHECK(rkc::resolve_backward_impl(BackwardImpl::automatic) == BackwardImpl::wgmma);
    return;
  }
  MESSAGE("wgmma unavailable here: " << why);
  CHECK(why.find("wgmma backward") != std::string::npos);
  CHECK(rkc::resolve_backward_impl(BackwardImpl::automatic) == BackwardImpl::mma);
  Case c;
  c.q_pos = c.k_pos = iota_positions(64);
  Problem pr(c, 700, false);
  CHECK_THROWS_WITH_AS(pr.run(BackwardImpl::wgmma, 1, 0.0f), doctest::Contains("wgmma"), std::invalid_argument);
}
