// bench_attention_cuda: times the CUDA flash-attention forward and backward (kernels/cuda) at
// long-context shapes, after validating sampled outputs against the float64 reference.
//
// Build (CUDA build dir): cmake --build build/cuda --target bench_attention_cuda
// Run:   build/cuda/bench/gpu/bench_attention_cuda --tokens 4096,8192,16384 --json ours.json
//
// Shapes (defaults): batch 1, 32 query heads, 8 KV heads (GQA), head dim 128, bf16 inputs,
// self-attention with positions 0..n-1, causal and non-causal.
// Backward implementations (--backward-impl LIST, as --forward-impl below) likewise: each timed
// one is validated first; bwd_ms / bwd_tflops are the first (the library's default on this
// device), every other one is reported as bwd_ms_<name> / bwd_tflops_<name>.
// Forward implementations (--forward-impl LIST, comma-separated from wgmma, mma, or "all";
// default all that run on this device, in that order): flash_forward runs each of them
// (KernelChoice::forward). The first is the "primary" (the library's default on this device: wgmma on
// sm_90, else mma): its rate fills fwd_ms / fwd_tflops and its O and lse feed the backward; every
// other one is reported as fwd_ms_<name> / fwd_tflops_<name>.
// Validation (before any timing; exit 1 on failure): for EVERY timed forward implementation, O
// and lse of 16 sampled query rows in two heads; with the primary forward's O and lse, dQ of
// those rows and dK, dV of 16 sampled keys of KV head 0 (all query rows of its group); all
// against kernels::reference_forward / reference_backward on the same rounded inputs.
// Launch order (--block-order tile_major|head_major, default tile_major): KernelChoice::order of
// every call in the run (the kernels' causal launches; attention_cuda.hpp); the JSON
// records it and the grid model column is computed for it. bench/device_check.sh runs the
// primary kernels a second time (--primary-only) in head_major order: one call compares the two.
// Timing: CUDA events around each iteration after warm-up; the median is reported.
//   forward  = flash_forward (O float32, lse), per implementation
//   backward = zero dQ/dK/dV + backward_delta + flash_backward
// FLOP model (FlashAttention's): forward 4*b*h*n*n*d, halved for causal; backward 2.5x forward.
//   TFLOP/s = flops / median_seconds / 1e12
// Google Benchmark is not used here: GPU time is measured with CUDA events on the stream, and the
// binary must run on a GPU machine that has none of this machine's packages.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "kernels/cuda/attention_fwd_mma.hpp"    // tile sizes of the mma forward (tile counts)
#include "kernels/cuda/attention_fwd_wgmma.hpp"  // and of the wgmma forward
#include "kernels/cuda/attention_bwd_wgmma.hpp"  // and of the wgmma backward (grid model)

namespace rk = ringplan::kernels;
namespace rkc = ringplan::kernels::cuda;

namespace {

#define BENCH_CUDA(call)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (call);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #call + \
                               ": " + cudaGetErrorString(e_));                                    \
    }                                                                                             \
  } while (0)

struct Options {
  std::vector<int64_t> tokens = {4096, 8192, 16384};
  int64_t batch = 1, heads = 32, kv_heads = 8, head_dim = 128;
  rk::ElemType type = rk::ElemType::bf16;
  int warmup = 5, iters = 20;
  bool causal_only = false, noncausal_only = false;
  std::string json;
  // Forward implementations to validate and time; the first is the primary (see the top).
  std::vector<rkc::ForwardImpl> forward_impls = {rkc::ForwardImpl::wgmma, rkc::ForwardImpl::mma};
  bool forward_impls_given = false;  // default list: drop those this device cannot run
  // Backward implementations, likewise (the first is the primary: bwd_ms, bwd_tflops).
  std::vector<rkc::BackwardImpl> backward_impls = {rkc::BackwardImpl::wgmma, rkc::BackwardImpl::mma};
  bool backward_impls_given = false;
  rkc::BlockOrder order = rkc::BlockOrder::tile_major;
  bool primary_only = false;  // time only the first runnable forward and backward
};

const char* order_name(rkc::BlockOrder b) { return b == rkc::BlockOrder::tile_major ? "tile_major" : "head_major"; }

const char* impl_name(rkc::ForwardImpl f) { return rkc::forward_impl_name(f); }
const char* impl_name(rkc::BackwardImpl f) { return rkc::backward_impl_name(f); }

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "bench_attention_cuda: %s\n"
               "usage: bench_attention_cuda [--tokens 4096,8192,16384] [--batch 1] [--heads 32] [--kv-heads 8]\n"
               "       [--head-dim 64|128] [--type bf16|f16] [--warmup 5] [--iters 20] [--causal-only|--noncausal-only]\n"
               "       [--forward-impl all|wgmma,mma] [--backward-impl all|wgmma,mma]\n"
               "       [--block-order tile_major|head_major] [--primary-only] [--json FILE]\n",
               why.c_str());
  std::exit(2);
}

int64_t parse_int(const std::string& flag, const char* v) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (!end || *end || x <= 0) usage(flag + " needs a positive integer, got '" + v + "'");
  return x;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--tokens") {
      o.tokens.clear();
      std::string s = next();
      for (size_t p = 0; p <= s.size();) {
        const size_t q = std::min(s.find(',', p), s.size());
        o.tokens.push_back(parse_int(a, s.substr(p, q - p).c_str()));
        p = q + 1;
      }
    } else if (a == "--batch") o.batch = parse_int(a, next());
    else if (a == "--heads") o.heads = parse_int(a, next());
    else if (a == "--kv-heads") o.kv_heads = parse_int(a, next());
    else if (a == "--head-dim") o.head_dim = parse_int(a, next());
    else if (a == "--warmup") o.warmup = int(parse_int(a, next()));
    else if (a == "--iters") o.iters = int(parse_int(a, next()));
    else if (a == "--causal-only") o.causal_only = true;
    else if (a == "--noncausal-only") o.noncausal_only = true;
    else if (a == "--json") o.json = next();
    else if (a == "--forward-impl") {
      const std::string f = next();
      o.forward_impls_given = f != "all";
      if (o.forward_impls_given) {
        o.forward_impls.clear();
        for (size_t p = 0; p <= f.size();) {
          const size_t q = std::min(f.find(',', p), f.size());
          const std::string name = f.substr(p, q - p);
          if (name == "wgmma") o.forward_impls.push_back(rkc::ForwardImpl::wgmma);
          else if (name == "mma") o.forward_impls.push_back(rkc::ForwardImpl::mma);
          else usage("--forward-impl takes 'all' or a comma list of wgmma, mma; got '" + name + "'");
          p = q + 1;
        }
      }
    } else if (a == "--backward-impl") {
      const std::string f = next();
      o.backward_impls_given = f != "all";
      if (o.backward_impls_given) {
        o.backward_impls.clear();
        for (size_t p = 0; p <= f.size();) {
          const size_t q = std::min(f.find(',', p), f.size());
          const std::string name = f.substr(p, q - p);
          if (name == "wgmma") o.backward_impls.push_back(rkc::BackwardImpl::wgmma);
          else if (name == "mma") o.backward_impls.push_back(rkc::BackwardImpl::mma);
          else usage("--backward-impl takes 'all' or a comma list of wgmma, mma; got '" + name + "'");
          p = q + 1;
        }
      }
    }
    else if (a == "--primary-only") o.primary_only = true;
    else if (a == "--block-order") {
      const std::string b = next();
      if (b == "tile_major") o.order = rkc::BlockOrder::tile_major;
      else if (b == "head_major") o.order = rkc::BlockOrder::head_major;
      else usage("--block-order must be tile_major or head_major, got '" + b + "'");
    }
    else if (a == "--type") {
      const std::string t = next();
      if (t == "bf16") o.type = rk::ElemType::bf16;
      else if (t == "f16") o.type = rk::ElemType::f16;
      else usage("--type must be bf16 or f16, got '" + t + "'");
    } else {
      usage("unknown argument '" + a + "'");
    }
  }
  if (o.heads % o.kv_heads) usage("--heads must be a multiple of --kv-heads");
  return o;
}

// Deterministic uniform values in [-1, 1) from a counter hash (splitmix64), generated on the GPU.
__device__ __host__ inline float hash_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void fill_uniform(T* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    p[i] = T(hash_uniform(seed, i));
  }
}

template <typename T>
__global__ void convert_from_f32(const float* src, T* dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    dst[i] = T(src[i]);
  }
}

__global__ void iota(int64_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) p[i] = i;
}

template <typename T>
struct Dev {
  T* ptr = nullptr;
  size_t count = 0;
  explicit Dev(size_t n) : count(n) { BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T))); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(ptr); }
};

double to_double(uint16_t bits, rk::ElemType t) {
  if (t == rk::ElemType::bf16) {
    uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  std::memcpy(&h, &bits, 2);
  return __half2float(h);
}

// Rows [first, first + count) of head `head` of a dense [1, heads, n, d] 16-bit tensor, as doubles.
std::vector<double> fetch_rows(const uint16_t* dev, int64_t heads_n_d_head_stride, int64_t head, int64_t first,
                               int64_t count, int64_t d, rk::ElemType t) {
  std::vector<uint16_t> bits(size_t(count * d));
  BENCH_CUDA(cudaMemcpy(bits.data(), dev + head * heads_n_d_head_stride + first * d, bits.size() * 2,
                        cudaMemcpyDeviceToHost));
  std::vector<double> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = to_double(bits[i], t);
  return out;
}

std::vector<float> fetch_f32(const float* dev, size_t offset, size_t count) {
  std::vector<float> h(count);
  BENCH_CUDA(cudaMemcpy(h.data(), dev + offset, count * 4, cudaMemcpyDeviceToHost));
  return h;
}

// max |got - ref| / max(|ref|, floor); NaN counts as infinite.
double rel_err(const std::vector<float>& got, const std::vector<double>& ref, double floor = 1e-6) {
  double e = 0.0, m = floor;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    e = std::max(e, std::fabs(double(got[i]) - ref[i]));
    m = std::max(m, std::fabs(ref[i]));
  }
  return e / m;
}

struct Result {
  int64_t tokens;
  bool causal;
  double fwd_ms, bwd_ms, fwd_tflops, bwd_tflops;           // fwd: the primary implementation
  std::vector<std::pair<std::string, double>> fwd_ms_other;  // every timed forward but the primary
  std::vector<std::pair<std::string, double>> bwd_ms_other;  // every timed backward but the primary
  double err_out, err_lse, err_dq, err_dk, err_dv;          // err_out, err_lse: worst implementation
  int64_t tiles_hidden, tiles_partial, tiles_visible;
  double busy_fwd = -1, busy_bwd = -1;  // grid model (tile_schedule.hpp grid_balance); -1: not modelled
};

// The primary kernels' launch (launch_order: o.order when causal) as the grid model sees it: the
// wgmma kernels run one block per SM (their registers fill an SM: attention_*_wgmma.cu); the
// others may hold several blocks per SM, which the model does not know, so they get none (-1).
void model_grid(Result& r, const Options& o, rkc::ForwardImpl fwd, rkc::BackwardImpl bwd, int sms) {
  std::vector<int64_t> pos(static_cast<size_t>(r.tokens));
  for (int64_t i = 0; i < r.tokens; ++i) pos[size_t(i)] = i;
  const rkc::BlockOrder order = rkc::launch_order(o.order, r.causal);
  if (fwd == rkc::ForwardImpl::wgmma) {
    const auto w = rkc::owned_tile_work(pos.data(), r.tokens, pos.data(), r.tokens, r.causal, rkc::kWgmmaFwdBlockM,
                                        rkc::kWgmmaFwdBlockN, true);
    r.busy_fwd = rkc::grid_balance(rkc::blocks_in_launch_order(w, o.heads, o.batch, order, true), sms);
  }
  if (bwd == rkc::BackwardImpl::wgmma) {
    const auto w = rkc::owned_tile_work(pos.data(), r.tokens, pos.data(), r.tokens, r.causal, rkc::kWgmmaBwdBlockM,
                                        rkc::kWgmmaBwdBlockN, false);
    r.busy_bwd = rkc::grid_balance(rkc::blocks_in_launch_order(w, o.kv_heads, o.batch, order, false), sms);
  }
}

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

Result run_case(const Options& o, int64_t n, bool causal) {
  const int64_t b = o.batch, h = o.heads, hkv = o.kv_heads, d = o.head_dim;
  const size_t q_elems = size_t(b * h * n * d), kv_elems = size_t(b * hkv * n * d), rows = size_t(b * h * n);
  Dev<uint16_t> q(q_elems), k(kv_elems), v(kv_elems), dout(q_elems), out16(q_elems);
  Dev<float> out(q_elems), lse(rows), delta(rows), dq(q_elems), dk(kv_elems), dv(kv_elems);
  Dev<int64_t> pos{size_t(n)};
  const bool bf16 = o.type == rk::ElemType::bf16;
  auto fill = [&](uint16_t* p, size_t cnt, uint64_t seed) {
    if (bf16) fill_uniform<<<1024, 256>>>(reinterpret_cast<__nv_bfloat16*>(p), cnt, seed);
    else fill_uniform<<<1024, 256>>>(reinterpret_cast<__half*>(p), cnt, seed);
  };
  fill(q.ptr, q_elems, 1);
  fill(k.ptr, kv_elems, 2);
  fill(v.ptr, kv_elems, 3);
  fill(dout.ptr, q_elems, 4);
  iota<<<256, 256>>>(pos.ptr, n);
  BENCH_CUDA(cudaGetLastError());

  rk::BlockParams p;
  p.q = rk::dense_view(q.ptr, o.type, b, h, n, d);
  p.k = rk::dense_view(k.ptr, o.type, b, hkv, n, d);
  p.v = rk::dense_view(v.ptr, o.type, b, hkv, n, d);
  p.q_positions = p.k_positions = pos.ptr;
  p.causal = causal;
  rk::ForwardOut fo{rk::dense_view(out.ptr, rk::ElemType::f32, b, h, n, d), rk::dense_rows(lse.ptr, b, h, n)};
  rk::BackwardArgs g;
  g.out = rk::dense_view(out16.ptr, o.type, b, h, n, d);
  g.grad_out = rk::dense_view(dout.ptr, o.type, b, h, n, d);
  g.lse = fo.lse;
  g.delta = rk::dense_rows(delta.ptr, b, h, n);
  g.grad_q = rk::dense_view(dq.ptr, rk::ElemType::f32, b, h, n, d);
  g.grad_k = rk::dense_view(dk.ptr, rk::ElemType::f32, b, hkv, n, d);
  g.grad_v = rk::dense_view(dv.ptr, rk::ElemType::f32, b, hkv, n, d);
  cudaStream_t stream = nullptr;

  rkc::KernelChoice kernels;  // the implementations under test, in the run's launch order
  kernels.order = o.order;
  auto forward = [&] { rkc::flash_forward(p, fo, stream, kernels); };
  auto backward = [&] {
    BENCH_CUDA(cudaMemsetAsync(dq.ptr, 0, q_elems * 4, stream));
    BENCH_CUDA(cudaMemsetAsync(dk.ptr, 0, kv_elems * 4, stream));
    BENCH_CUDA(cudaMemsetAsync(dv.ptr, 0, kv_elems * 4, stream));
    rkc::backward_delta(g.out, g.grad_out, g.delta, stream);
    rkc::flash_backward(p, g, stream, kernels);
  };

  // ---- validate (batch 0 only) ----
  Result r{};
  r.tokens = n;
  r.causal = causal;
  std::vector<int64_t> all_pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all_pos[size_t(i)] = i;
  const int64_t head_stride = n * d;
  const double scale = 1.0 / std::sqrt(double(d));
  constexpr int64_t kSample = 16;
  // Query rows and keys spread over the sequence, including the first and the last.
  std::vector<int64_t> sample(static_cast<size_t>(kSample));
  for (int64_t s = 0; s < kSample; ++s) sample[size_t(s)] = s * (n - 1) / (kSample - 1);
  const double tol_o = bf16 ? 1.6e-2 : 2e-3, tol_g = bf16 ? 6e-2 : 1e-2;  // as in tests/kernels/cuda

  // Forward of every timed implementation, the primary last: its O and lse stay in the buffers
  // for the backward check below.
  for (size_t fi = o.forward_impls.size(); fi-- > 0;) {
    kernels.forward = o.forward_impls[fi];
    forward();
    BENCH_CUDA(cudaDeviceSynchronize());
    double e_out = 0.0, e_lse = 0.0;
    for (int64_t head : {int64_t(0), h - 1}) {
      const int64_t kvh = head * hkv / h;
      const auto kk = fetch_rows(k.ptr, head_stride, kvh, 0, n, d, o.type);
      const auto vv = fetch_rows(v.ptr, head_stride, kvh, 0, n, d, o.type);
      std::vector<double> qs;
      std::vector<float> got_o, got_l;
      for (int64_t row : sample) {
        auto qr = fetch_rows(q.ptr, head_stride, head, row, 1, d, o.type);
        qs.insert(qs.end(), qr.begin(), qr.end());
        auto go = fetch_f32(out.ptr, size_t(head * head_stride + row * d), size_t(d));
        got_o.insert(got_o.end(), go.begin(), go.end());
        got_l.push_back(fetch_f32(lse.ptr, size_t(head * n + row), 1)[0]);
      }
      std::vector<double> ref_o(size_t(kSample * d)), ref_l(static_cast<size_t>(kSample));
      rk::reference_forward(qs.data(), kk.data(), vv.data(), sample.data(), all_pos.data(), 1, 1, 1, kSample, n, d,
                            causal, scale, ref_o.data(), ref_l.data());
      e_out = std::max(e_out, rel_err(got_o, ref_o, 1.0));  // absolute for |O| <= 1
      for (int64_t s = 0; s < kSample; ++s) {
        const double gl = got_l[size_t(s)];
        e_lse = std::max(e_lse, std::isfinite(gl) ? std::fabs(gl - ref_l[size_t(s)]) : INFINITY);
      }
    }
    const bool fwd_ok = e_out <= tol_o && e_lse <= 1e-3;
    std::printf("validate n=%lld causal=%d forward %s: |dO|=%.2e lse=%.2e (bounds %.1e, 1e-3): %s\n", (long long)n,
                int(causal), impl_name(o.forward_impls[fi]), e_out, e_lse, tol_o, fwd_ok ? "ok" : "WRONG");
    if (!fwd_ok) throw std::runtime_error("validation failed; not timing a wrong kernel");
    r.err_out = std::max(r.err_out, e_out);
    r.err_lse = std::max(r.err_lse, e_lse);
  }

  // Backward with the primary forward's O (rounded to the input type, as the ring hands it on)
  // and lse.
  if (bf16) convert_from_f32<<<1024, 256>>>(out.ptr, reinterpret_cast<__nv_bfloat16*>(out16.ptr), q_elems);
  else convert_from_f32<<<1024, 256>>>(out.ptr, reinterpret_cast<__half*>(out16.ptr), q_elems);
  // Every timed backward implementation is validated (the last one validated is the primary's).
  for (size_t bi = o.backward_impls.size(); bi-- > 0;) {
  kernels.backward = o.backward_impls[bi];
  backward();
  BENCH_CUDA(cudaDeviceSynchronize());
  for (int64_t head : {int64_t(0), h - 1}) {
    const int64_t kvh = head * hkv / h;
    const auto kk = fetch_rows(k.ptr, head_stride, kvh, 0, n, d, o.type);
    const auto vv = fetch_rows(v.ptr, head_stride, kvh, 0, n, d, o.type);
    std::vector<double> qs, dos, os, ls;
    std::vector<float> got_dq;
    for (int64_t row : sample) {
      auto qr = fetch_rows(q.ptr, head_stride, head, row, 1, d, o.type);
      auto dr = fetch_rows(dout.ptr, head_stride, head, row, 1, d, o.type);
      auto orow = fetch_rows(out16.ptr, head_stride, head, row, 1, d, o.type);
      qs.insert(qs.end(), qr.begin(), qr.end());
      dos.insert(dos.end(), dr.begin(), dr.end());
      os.insert(os.end(), orow.begin(), orow.end());
      ls.push_back(fetch_f32(lse.ptr, size_t(head * n + row), 1)[0]);
      auto gq = fetch_f32(dq.ptr, size_t(head * head_stride + row * d), size_t(d));
      got_dq.insert(got_dq.end(), gq.begin(), gq.end());
    }
    std::vector<double> ref_dq(size_t(kSample * d)), scratch_k(size_t(n * d)), scratch_v(size_t(n * d));
    rk::reference_backward(qs.data(), kk.data(), vv.data(), os.data(), dos.data(), ls.data(), sample.data(),
                           all_pos.data(), 1, 1, 1, kSample, n, d, causal, scale, ref_dq.data(), scratch_k.data(),
                           scratch_v.data());
    r.err_dq = std::max(r.err_dq, rel_err(got_dq, ref_dq));
  }
  {
    // dK, dV of sampled keys of KV head 0: every query row of its query heads contributes.
    const int64_t group = h / hkv;
    std::vector<double> qg, dog, og, lg;
    for (int64_t head = 0; head < group; ++head) {
      auto a = fetch_rows(q.ptr, head_stride, head, 0, n, d, o.type);
      auto c = fetch_rows(dout.ptr, head_stride, head, 0, n, d, o.type);
      auto e = fetch_rows(out16.ptr, head_stride, head, 0, n, d, o.type);
      qg.insert(qg.end(), a.begin(), a.end());
      dog.insert(dog.end(), c.begin(), c.end());
      og.insert(og.end(), e.begin(), e.end());
      auto l = fetch_f32(lse.ptr, size_t(head * n), size_t(n));
      lg.insert(lg.end(), l.begin(), l.end());
    }
    std::vector<double> ks, vs;
    std::vector<float> got_dk, got_dv;
    for (int64_t key : sample) {
      auto a = fetch_rows(k.ptr, head_stride, 0, key, 1, d, o.type);
      auto c = fetch_rows(v.ptr, head_stride, 0, key, 1, d, o.type);
      ks.insert(ks.end(), a.begin(), a.end());
      vs.insert(vs.end(), c.begin(), c.end());
      auto gk = fetch_f32(dk.ptr, size_t(key * d), size_t(d));
      auto gv = fetch_f32(dv.ptr, size_t(key * d), size_t(d));
      got_dk.insert(got_dk.end(), gk.begin(), gk.end());
      got_dv.insert(got_dv.end(), gv.begin(), gv.end());
    }
    std::vector<double> rq(size_t(group * n * d)), rkk(size_t(kSample * d)), rv(size_t(kSample * d));
    rk::reference_backward(qg.data(), ks.data(), vs.data(), og.data(), dog.data(), lg.data(), all_pos.data(),
                           sample.data(), 1, group, 1, n, kSample, d, causal, scale, rq.data(), rkk.data(), rv.data());
    r.err_dk = std::max(r.err_dk, rel_err(got_dk, rkk));
    r.err_dv = std::max(r.err_dv, rel_err(got_dv, rv));
  }
  // Bounds as in tests/kernels/cuda (bf16 / f16); see the reasoning there.
  const bool ok = r.err_out <= tol_o && r.err_lse <= 1e-3 && r.err_dq <= tol_g && r.err_dk <= tol_g &&
                  r.err_dv <= tol_g;
  std::printf("validate n=%lld causal=%d backward %s: |dO|=%.2e lse=%.2e dQ=%.2e dK=%.2e dV=%.2e (bounds %.1e, 1e-3, %.1e): %s\n",
              (long long)n, int(causal), impl_name(o.backward_impls[bi]), r.err_out, r.err_lse, r.err_dq, r.err_dk,
              r.err_dv, tol_o, tol_g, ok ? "ok" : "WRONG");
  if (!ok) throw std::runtime_error("validation failed; not timing a wrong kernel");
  }

  // Tiles of the primary forward's geometry.
  const rkc::ForwardImpl primary = o.forward_impls.front();
  const bool wgmma = primary == rkc::ForwardImpl::wgmma;
  const int64_t tile_m = wgmma ? rkc::kWgmmaFwdBlockM : rkc::kMmaFwdBlockM;
  const int64_t tile_n = wgmma ? rkc::kWgmmaFwdBlockN : rkc::kMmaFwdBlockN;
  const auto tiles = rkc::count_tiles(all_pos.data(), n, all_pos.data(), n, causal, tile_m, tile_n);
  r.tiles_hidden = tiles.hidden;
  r.tiles_partial = tiles.partial;
  r.tiles_visible = tiles.visible;

  // ---- time ----
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  auto time_ms = [&](auto&& fn) {
    for (int i = 0; i < o.warmup; ++i) fn();
    std::vector<float> ms;
    for (int i = 0; i < o.iters; ++i) {
      BENCH_CUDA(cudaEventRecord(e0, stream));
      fn();
      BENCH_CUDA(cudaEventRecord(e1, stream));
      BENCH_CUDA(cudaEventSynchronize(e1));
      float t = 0;
      BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
      ms.push_back(t);
    }
    return median(ms);
  };
  const double fwd_flops = 4.0 * double(b) * double(h) * double(n) * double(n) * double(d) * (causal ? 0.5 : 1.0);
  for (size_t fi = 0; fi < o.forward_impls.size(); ++fi) {
    kernels.forward = o.forward_impls[fi];
    const double ms = time_ms(forward);
    if (fi == 0) r.fwd_ms = ms;
    else r.fwd_ms_other.emplace_back(impl_name(o.forward_impls[fi]), ms);
  }
  for (size_t bi = 0; bi < o.backward_impls.size(); ++bi) {
    kernels.backward = o.backward_impls[bi];
    const double ms = time_ms(backward);
    if (bi == 0) r.bwd_ms = ms;
    else r.bwd_ms_other.emplace_back(impl_name(o.backward_impls[bi]), ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  r.fwd_tflops = fwd_flops / (r.fwd_ms * 1e-3) / 1e12;
  r.bwd_tflops = 2.5 * fwd_flops / (r.bwd_ms * 1e-3) / 1e12;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  std::string why;
  if (rkc::device_count(&why) == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  // Forward implementations this device cannot run: dropped from the default list (with a note),
  // an error when asked for by name.
  std::vector<rkc::ForwardImpl> runnable;
  for (rkc::ForwardImpl f : o.forward_impls) {
    const std::string no = rkc::forward_impl_unavailable(f);
    if (no.empty()) {
      runnable.push_back(f);
    } else if (o.forward_impls_given) {
      std::fprintf(stderr, "bench_attention_cuda: --forward-impl %s: %s\n", impl_name(f), no.c_str());
      return 2;
    } else {
      std::printf("forward %s not timed: %s\n", impl_name(f), no.c_str());
    }
  }
  o.forward_impls = runnable;
  std::vector<rkc::BackwardImpl> runnable_bwd;
  for (rkc::BackwardImpl f : o.backward_impls) {
    const std::string no = rkc::backward_impl_unavailable(f);
    if (no.empty()) {
      runnable_bwd.push_back(f);
    } else if (o.backward_impls_given) {
      std::fprintf(stderr, "bench_attention_cuda: --backward-impl %s: %s\n", impl_name(f), no.c_str());
      return 2;
    } else {
      std::printf("backward %s not timed: %s\n", impl_name(f), no.c_str());
    }
  }
  o.backward_impls = runnable_bwd;
  if (o.forward_impls.empty() || o.backward_impls.empty()) {
    std::fprintf(stderr, "bench_attention_cuda: no forward or no backward implementation runs on this device\n");
    return 2;
  }
  if (o.primary_only) {
    o.forward_impls.resize(1);
    o.backward_impls.resize(1);
  }
  std::printf("launch order of the mma and wgmma kernels: %s (causal rows; non-causal ones are head-major)\n",
              order_name(o.order));
  std::printf("FLOP model: fwd 4*b*h*n*n*d (x0.5 causal), bwd 2.5x fwd; TFLOP/s = flops / median time\n");
  std::string others;
  for (size_t fi = 1; fi < o.forward_impls.size(); ++fi) others += std::string(" ") + impl_name(o.forward_impls[fi]);
  std::printf("forward: %s (fwd_ms, fwd_TF/s)%s\n", impl_name(o.forward_impls.front()),
              others.empty() ? "" : ("; also timed, TF/s per column:" + others).c_str());
  std::string bwd_others;
  for (size_t bi = 1; bi < o.backward_impls.size(); ++bi) bwd_others += std::string(" ") + impl_name(o.backward_impls[bi]);
  std::printf("backward: %s (bwd_ms, bwd_TF/s)%s\n", impl_name(o.backward_impls.front()),
              bwd_others.empty() ? "" : ("; also timed, TF/s per column:" + bwd_others).c_str());
  std::printf("%8s %7s %10s %10s %10s %10s", "tokens", "causal", "fwd_ms", "fwd_TF/s", "bwd_ms", "bwd_TF/s");
  for (size_t fi = 1; fi < o.forward_impls.size(); ++fi) {
    std::printf(" %14s", (std::string("fwd_") + impl_name(o.forward_impls[fi]) + "_TF/s").c_str());
  }
  for (size_t bi = 1; bi < o.backward_impls.size(); ++bi) {
    std::printf(" %14s", (std::string("bwd_") + impl_name(o.backward_impls[bi]) + "_TF/s").c_str());
  }
  std::printf(" %s %s\n", "tiles hidden/partial/visible", "SMs_busy_fwd/bwd(model)");
  // The primary implementations as the kernels resolve them on this device (automatic -> wgmma on sm_90).
  const rkc::ForwardImpl fwd_kernel = rkc::resolve_forward_impl(o.forward_impls.front());
  const rkc::BackwardImpl bwd_kernel = rkc::resolve_backward_impl(o.backward_impls.front());
  std::vector<Result> results;
  std::vector<double> fwd_flops_of;  // per result, for the secondary rates
  try {
    for (int64_t n : o.tokens) {
      for (bool causal : {false, true}) {
        if ((causal && o.noncausal_only) || (!causal && o.causal_only)) continue;
        Result r = run_case(o, n, causal);
        model_grid(r, o, fwd_kernel, bwd_kernel, prop.multiProcessorCount);
        const double flops = r.fwd_tflops * 1e12 * r.fwd_ms * 1e-3;
        std::printf("%8lld %7d %10.3f %10.1f %10.3f %10.1f", (long long)r.tokens, int(r.causal), r.fwd_ms,
                    r.fwd_tflops, r.bwd_ms, r.bwd_tflops);
        for (const auto& [name, ms] : r.fwd_ms_other) std::printf(" %14.1f", flops / (ms * 1e-3) / 1e12);
        for (const auto& [name, ms] : r.bwd_ms_other) std::printf(" %14.1f", 2.5 * flops / (ms * 1e-3) / 1e12);
        std::printf(" %lld/%lld/%lld %.3f/%.3f\n", (long long)r.tiles_hidden, (long long)r.tiles_partial,
                    (long long)r.tiles_visible, r.busy_fwd, r.busy_bwd);
        results.push_back(r);
        fwd_flops_of.push_back(flops);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention_cuda: %s\n", e.what());
    return 1;
  }
  if (!o.json.empty()) {
    FILE* f = std::fopen(o.json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_attention_cuda: cannot write %s\n", o.json.c_str());
      return 1;
    }
    // "impl" names the primary forward (fwd_ms, fwd_tflops); fwd_ms_<name> / fwd_tflops_<name>
    // appear in each result for every other timed forward, bwd_ms_<name> / bwd_tflops_<name> for
    // every other timed backward (bwd_ms, bwd_tflops: the primary backward).
    std::fprintf(f, "{\"impl\": \"ringplan_%s\", \"block_order\": \"%s\", \"device\": \"%s\", \"batch\": %lld, \"heads\": %lld, "
                    "\"kv_heads\": %lld, \"head_dim\": %lld, \"type\": \"%s\", \"results\": [\n",
                 impl_name(o.forward_impls.front()), order_name(o.order), prop.name, (long long)o.batch, (long long)o.heads,
                 (long long)o.kv_heads, (long long)o.head_dim, o.type == rk::ElemType::bf16 ? "bf16" : "f16");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::string extra;
      char buf[160];
      for (const auto& [name, ms] : r.fwd_ms_other) {
        std::snprintf(buf, sizeof buf, "\"fwd_ms_%s\": %.4f, \"fwd_tflops_%s\": %.2f, ", name.c_str(), ms, name.c_str(),
                      fwd_flops_of[i] / (ms * 1e-3) / 1e12);
        extra += buf;
      }
      for (const auto& [name, ms] : r.bwd_ms_other) {
        std::snprintf(buf, sizeof buf, "\"bwd_ms_%s\": %.4f, \"bwd_tflops_%s\": %.2f, ", name.c_str(), ms, name.c_str(),
                      2.5 * fwd_flops_of[i] / (ms * 1e-3) / 1e12);
        extra += buf;
      }
      std::fprintf(f,
                   "  {\"tokens\": %lld, \"causal\": %s, \"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwd_tflops\": %.2f, "
                   "\"bwd_tflops\": %.2f, %s\"max_err\": {\"out\": %.3e, \"lse\": %.3e, \"dq\": %.3e, "
                   "\"dk\": %.3e, \"dv\": %.3e}, \"sms_busy_model\": {\"fwd\": %.4f, \"bwd\": %.4f}}%s\n",
                   (long long)r.tokens, r.causal ? "true" : "false", r.fwd_ms, r.bwd_ms, r.fwd_tflops, r.bwd_tflops,
                   extra.c_str(), r.err_out, r.err_lse, r.err_dq, r.err_dk, r.err_dv, r.busy_fwd, r.busy_bwd,
                   i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}
