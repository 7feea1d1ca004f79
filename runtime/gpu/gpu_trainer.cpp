// The whole training step on GPUs (see gpu_trainer.hpp).
#include "runtime/gpu/gpu_trainer.hpp"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "core/error.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "runtime/gpu/cuda_ring.hpp"
#include "runtime/gpu/gemm.hpp"
#include "runtime/gpu/gpu_executor.hpp"
#include "runtime/gpu/step_kernels.hpp"
#include "runtime/memory.hpp"
#include "runtime/nccl/nccl_communicator.hpp"
#include "runtime/nccl/nccl_mpi_bootstrap.hpp"

namespace ringplan::runtime::gpu {

using step::StepSpec;
using step::Term;

namespace {

// The same ids as runtime/step/trainer.cpp (parity compares parameters by id).
constexpr int32_t kIdEmbedding = 1, kIdFinalNorm = 2, kIdHead = 3;
enum LayerParam : int { kAttnNorm = 0, kWq, kWk, kWv, kWo, kMlpNorm, kWgate, kWup, kWdown };
int32_t layer_param_id(int64_t layer, int which) { return static_cast<int32_t>(100 + layer * 16 + which); }

}  // namespace

void check_gpu_step_spec(const StepSpec& s) {
  step::check_step_spec(s);  // shapes and options every runtime needs
  auto fail = [](const std::string& why) {
    throw bad_input("--device cuda: the GPU training step cannot run this plan: " + why +
                    " (the CPU runtime, --device cpu, runs every layout)");
  };
  const Mesh& m = s.mesh;
  if (m.tp != 1 || m.cp != 1 || m.pp != 1)
    fail(fmt::format("it runs DP meshes only (tp = cp = pp = 1), the plan has dp={} tp={} cp={} pp={}", m.dp, m.tp,
                     m.cp, m.pp));
  if (s.options.zero_stage != 0) fail(fmt::format("zero_stage {} (it runs ZeRO 0)", s.options.zero_stage));
  if (s.options.recompute != Recompute::none)
    fail(fmt::format("recompute {} (it runs recompute none)", to_string(s.options.recompute)));
  if (s.options.attention != AttentionImpl::flash) fail("materialised attention (it runs the flash kernels)");
  if (s.options.interleave != 1) fail("an interleaved pipeline");
  if (s.model.tied_embeddings) fail("tied embeddings");
  if (s.model.head_dim != 64 && s.model.head_dim != 128)
    fail(fmt::format("head_dim {} (the CUDA attention kernels take 64 or 128)", s.model.head_dim));
  if (s.model.hidden % 8 != 0 || s.model.ffn_hidden % 8 != 0 || s.model.vocab % 8 != 0)
    fail(fmt::format("hidden {}, ffn_hidden {}, vocab {}: each must be a multiple of 8 (16-byte rows for the GEMMs "
                     "and the strided attention views)",
                     s.model.hidden, s.model.ffn_hidden, s.model.vocab));
  if (s.seq_len > (int64_t{1} << 24)) fail(fmt::format("seq_len {} above 2^24", s.seq_len));
}

struct GpuTrainer::Impl {
  StepSpec spec;
  Communicator& dp;
  cudaStream_t stream;
  cublasHandle_t blas = nullptr;
  int64_t b = 1, n = 0, R = 0, h = 0, hq = 0, hkv = 0, d = 0, f = 0, V = 0, L = 0, W = 0, gu_cols = 0;
  int64_t micro_batches = 1;
  int64_t step_count = 0;
  size_t n_params = 0;
  // Parameters: float32 master, bf16 copy, float32 gradient, optimizer state.
  DeviceBuffer w32, w16, g32, opt_m, opt_v;
  size_t off_emb = 0, off_final_norm = 0, off_head = 0;
  struct LayerOffsets {
    size_t attn_norm, qkv, wo, mlp_norm, gu, down;
  };
  std::vector<LayerOffsets> lo;
  // Activations stashed per layer for the backward.
  struct Stash {
    DeviceBuffer x_in, rstd1, xn1, qkv, lse, attn, x_mid, rstd2, xn2, gu, m;
  };
  std::vector<Stash> st;
  DeviceBuffer x_final, rstd_f, xn_f, logits;
  // Working buffers.
  DeviceBuffer o32, tmp_h, dx, dxn, d_attn, dq, dk, dv, delta, dqkv, dgu, dm;
  DeviceBuffer tokens, targets, positions, loss_sum;
  int64_t act_bytes = 0, logits_bytes = 0, work_bytes = 0;
  cudaEvent_t ev[2] = {nullptr, nullptr};

  Impl(const StepSpec& s, Communicator& dp_comm, cudaStream_t st_) : spec(s), dp(dp_comm), stream(st_) {}
  ~Impl() {
    if (blas) cublasDestroy(blas);
    for (cudaEvent_t e : ev)
      if (e) cudaEventDestroy(e);
  }

  float* W32(size_t off) const { return w32.as<float>() + off; }
  bf16* W16(size_t off) const { return w16.as<bf16>() + off; }
  float* G32(size_t off) const { return g32.as<float>() + off; }

  void linear_fwd(const bf16* x, const bf16* w, bf16* y, int64_t M, int64_t K, int64_t N) {
    gemm_forward(blas, x, w, y, M, K, N);
  }
  void linear_dgrad(const bf16* dy, const bf16* w, bf16* dxo, int64_t M, int64_t K, int64_t N) {
    gemm_dgrad(blas, dy, w, dxo, M, K, N);
  }
  // Accumulates over micro-batches (beta 1).
  void linear_wgrad(const bf16* dy, const bf16* x, float* dw, int64_t M, int64_t K, int64_t N) {
    gemm_wgrad(blas, dy, x, dw, M, K, N, true);
  }

  kernels::TensorView view16(void* base, int64_t heads, int64_t row_stride) const {
    kernels::TensorView t;
    t.data = base;
    t.type = kernels::ElemType::bf16;
    t.batch = b;
    t.heads = heads;
    t.tokens = n;
    t.head_dim = d;
    t.stride_batch = n * row_stride;
    t.stride_head = d;
    t.stride_token = row_stride;
    return t;
  }

  void forward(int64_t index, double& fwd_ms);
  void backward(double& bwd_ms);
};

GpuTrainer::GpuTrainer(const StepSpec& spec, Communicator& dp, cudaStream_t stream)
    : impl_(std::make_unique<Impl>(spec, dp, stream)) {
  check_gpu_step_spec(spec);
  if (dp.size() != spec.mesh.dp)
    throw bad_input(fmt::format("GpuTrainer: the DP communicator has {} ranks, the mesh dp={}", dp.size(), spec.mesh.dp));
  Impl& I = *impl_;
  const ModelConfig& m = spec.model;
  I.b = spec.options.micro_batch;
  I.n = spec.seq_len;
  I.R = I.b * I.n;
  I.h = m.hidden;
  I.hq = m.heads;
  I.hkv = m.kv_heads;
  I.d = m.head_dim;
  I.f = m.ffn_hidden;
  I.V = m.vocab;
  I.L = m.layers;
  I.W = (I.hq + 2 * I.hkv) * I.d;
  I.gu_cols = m.gated_mlp ? 2 * I.f : I.f;
  I.micro_batches = spec.global_batch / (spec.mesh.dp * I.b);
  RINGPLAN_CUBLAS_OK(cublasCreate(&I.blas));
  RINGPLAN_CUBLAS_OK(cublasSetStream(I.blas, stream));
  for (cudaEvent_t& e : I.ev) RINGPLAN_CUDA_OK(cudaEventCreate(&e));

  // Parameter layout: the matrices of one projection family are adjacent (wq|wk|wv is the fused
  // QKV weight, w_gate|w_up the fused MLP-up weight), in step::Trainer's order and with its ids.
  size_t off = 0;
  auto add = [&](int32_t id, const std::string& name, int64_t rows, int64_t cols) {
    params_.push_back({id, name, rows, cols, off});
    off += static_cast<size_t>(rows * cols);
    return params_.back().offset;
  };
  I.off_emb = add(kIdEmbedding, "embedding", I.V, I.h);
  for (int64_t l = 0; l < I.L; ++l) {
    const std::string p = fmt::format("layer{}.", l);
    Impl::LayerOffsets o{};
    o.attn_norm = add(layer_param_id(l, kAttnNorm), p + "attn_norm", 1, I.h);
    o.qkv = add(layer_param_id(l, kWq), p + "wq", I.hq * I.d, I.h);
    add(layer_param_id(l, kWk), p + "wk", I.hkv * I.d, I.h);
    add(layer_param_id(l, kWv), p + "wv", I.hkv * I.d, I.h);
    o.wo = add(layer_param_id(l, kWo), p + "wo", I.h, I.hq * I.d);
    o.mlp_norm = add(layer_param_id(l, kMlpNorm), p + "mlp_norm", 1, I.h);
    if (m.gated_mlp) {
      o.gu = add(layer_param_id(l, kWgate), p + "w_gate", I.f, I.h);
      add(layer_param_id(l, kWup), p + "w_up", I.f, I.h);
    } else {
      o.gu = add(layer_param_id(l, kWup), p + "w_up", I.f, I.h);
    }
    o.down = add(layer_param_id(l, kWdown), p + "w_down", I.h, I.f);
    I.lo.push_back(o);
  }
  I.off_final_norm = add(kIdFinalNorm, "final_norm", 1, I.h);
  I.off_head = add(kIdHead, "output", I.V, I.h);
  I.n_params = off;

  const size_t P = I.n_params;
  I.w32 = DeviceBuffer(P * 4);
  I.w16 = DeviceBuffer(P * 2);
  I.g32 = DeviceBuffer(P * 4);
  I.opt_m = DeviceBuffer(P * 4);
  I.opt_v = DeviceBuffer(spec.optimizer == Optimizer::adam ? P * 4 : 0);
  {
    // Billions of hashed values for a Llama-sized model: every core of the host fills a share of
    // the rows (the values depend only on (id, row, col), so the split changes nothing).
    std::vector<float> host(P);
    struct Rows {
      const ParamInfo* p;
      int64_t r0, r1;
    };
    std::vector<Rows> work;
    for (const ParamInfo& p : params_)
      for (int64_t r = 0; r < p.rows; r += 256) work.push_back({&p, r, std::min(p.rows, r + 256)});
    std::atomic<size_t> next{0};
    auto fill = [&] {
      for (size_t i = next++; i < work.size(); i = next++) {
        const ParamInfo& p = *work[i].p;
        for (int64_t r = work[i].r0; r < work[i].r1; ++r)
          for (int64_t c = 0; c < p.cols; ++c)
            host[p.offset + static_cast<size_t>(r * p.cols + c)] =
                float(step::initial_parameter(spec.seed, p.id, r, c, p.cols, p.rows == 1));
      }
    };
    const unsigned threads = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(fill);
    fill();
    for (std::thread& t : pool) t.join();
    RINGPLAN_CUDA_OK(cudaMemcpy(I.w32.get(), host.data(), P * 4, cudaMemcpyHostToDevice));
  }
  to_bf16(I.W32(0), I.W16(0), static_cast<int64_t>(P), stream);
  RINGPLAN_CUDA_OK(cudaMemsetAsync(I.g32.get(), 0, P * 4, stream));
  RINGPLAN_CUDA_OK(cudaMemsetAsync(I.opt_m.get(), 0, P * 4, stream));
  if (I.opt_v.bytes()) RINGPLAN_CUDA_OK(cudaMemsetAsync(I.opt_v.get(), 0, I.opt_v.bytes(), stream));

  const size_t R = static_cast<size_t>(I.R), h = static_cast<size_t>(I.h);
  const size_t qd = static_cast<size_t>(I.hq * I.d), kvd = static_cast<size_t>(I.hkv * I.d);
  for (int64_t l = 0; l < I.L; ++l) {
    Impl::Stash s;
    s.x_in = DeviceBuffer(R * h * 2);
    s.rstd1 = DeviceBuffer(R * 4);
    s.xn1 = DeviceBuffer(R * h * 2);
    s.qkv = DeviceBuffer(R * static_cast<size_t>(I.W) * 2);
    s.lse = DeviceBuffer(static_cast<size_t>(I.b * I.hq * I.n) * 4);
    s.attn = DeviceBuffer(R * qd * 2);
    s.x_mid = DeviceBuffer(R * h * 2);
    s.rstd2 = DeviceBuffer(R * 4);
    s.xn2 = DeviceBuffer(R * h * 2);
    s.gu = DeviceBuffer(R * static_cast<size_t>(I.gu_cols) * 2);
    s.m = DeviceBuffer(R * static_cast<size_t>(I.f) * 2);
    I.act_bytes += static_cast<int64_t>(s.x_in.bytes() + s.rstd1.bytes() + s.xn1.bytes() + s.qkv.bytes() +
                                        s.lse.bytes() + s.attn.bytes() + s.x_mid.bytes() + s.rstd2.bytes() +
                                        s.xn2.bytes() + s.gu.bytes() + s.m.bytes());
    I.st.push_back(std::move(s));
  }
  I.x_final = DeviceBuffer(R * h * 2);
  I.rstd_f = DeviceBuffer(R * 4);
  I.xn_f = DeviceBuffer(R * h * 2);
  I.act_bytes += static_cast<int64_t>(I.x_final.bytes() + I.rstd_f.bytes() + I.xn_f.bytes());
  I.logits = DeviceBuffer(R * static_cast<size_t>(I.V) * 2);
  I.logits_bytes = static_cast<int64_t>(I.logits.bytes());
  I.o32 = DeviceBuffer(R * qd * 4);
  I.tmp_h = DeviceBuffer(R * h * 2);
  I.dx = DeviceBuffer(R * h * 2);
  I.dxn = DeviceBuffer(R * h * 2);
  I.d_attn = DeviceBuffer(R * qd * 2);
  I.dq = DeviceBuffer(R * qd * 4);
  I.dk = DeviceBuffer(R * kvd * 4);
  I.dv = DeviceBuffer(R * kvd * 4);
  I.delta = DeviceBuffer(static_cast<size_t>(I.b * I.hq * I.n) * 4);
  I.dqkv = DeviceBuffer(R * static_cast<size_t>(I.W) * 2);
  I.dgu = DeviceBuffer(R * static_cast<size_t>(I.gu_cols) * 2);
  I.dm = DeviceBuffer(R * static_cast<size_t>(I.f) * 2);
  I.tokens = DeviceBuffer(R * 4);
  I.targets = DeviceBuffer(R * 4);
  I.positions = DeviceBuffer(static_cast<size_t>(I.n) * 8);
  I.loss_sum = DeviceBuffer(8);
  I.work_bytes = static_cast<int64_t>(I.o32.bytes() + I.tmp_h.bytes() + I.dx.bytes() + I.dxn.bytes() +
                                      I.d_attn.bytes() + I.dq.bytes() + I.dk.bytes() + I.dv.bytes() + I.delta.bytes() +
                                      I.dqkv.bytes() + I.dgu.bytes() + I.dm.bytes() + I.tokens.bytes() +
                                      I.targets.bytes() + I.positions.bytes() + I.loss_sum.bytes());
  std::vector<int64_t> pos(static_cast<size_t>(I.n));
  for (int64_t t = 0; t < I.n; ++t) pos[static_cast<size_t>(t)] = t;  // CP = 1: the whole sequence in order
  RINGPLAN_CUDA_OK(cudaMemcpy(I.positions.get(), pos.data(), pos.size() * 8, cudaMemcpyHostToDevice));
  RINGPLAN_CUDA_OK(cudaStreamSynchronize(stream));
}

GpuTrainer::~GpuTrainer() = default;

void GpuTrainer::Impl::forward(int64_t index, double& fwd_ms) {
  // Data of this micro-batch: global sequence (index * DP + dp_rank) * b + s, as step::Trainer.
  std::vector<int32_t> tok(static_cast<size_t>(R)), tgt(static_cast<size_t>(R));
  for (int64_t s = 0; s < b; ++s) {
    const int64_t seq = (index * spec.mesh.dp + dp.rank()) * b + s;
    for (int64_t t = 0; t < n; ++t) {
      tok[static_cast<size_t>(s * n + t)] = static_cast<int32_t>(step::synthetic_token(spec.seed, seq, t, V));
      tgt[static_cast<size_t>(s * n + t)] = static_cast<int32_t>(step::synthetic_token(spec.seed, seq, t + 1, V));
    }
  }
  RINGPLAN_CUDA_OK(cudaMemcpyAsync(tokens.get(), tok.data(), tok.size() * 4, cudaMemcpyHostToDevice, stream));
  RINGPLAN_CUDA_OK(cudaMemcpyAsync(targets.get(), tgt.data(), tgt.size() * 4, cudaMemcpyHostToDevice, stream));
  RINGPLAN_CUDA_OK(cudaStreamSynchronize(stream));  // the host vectors go out of scope

  RINGPLAN_CUDA_OK(cudaEventRecord(ev[0], stream));
  const float eps = static_cast<float>(spec.norm_eps), base = static_cast<float>(spec.rope_base);
  const int64_t* pos = positions.as<int64_t>();
  embedding_forward(tokens.as<int32_t>(), W16(off_emb), st[0].x_in.as<bf16>(), R, h, stream);
  for (int64_t l = 0; l < L; ++l) {
    Stash& s = st[static_cast<size_t>(l)];
    const LayerOffsets& o = lo[static_cast<size_t>(l)];
    rmsnorm_forward(s.x_in.as<bf16>(), W32(o.attn_norm), s.xn1.as<bf16>(), s.rstd1.as<float>(), R, h, eps, stream);
    linear_fwd(s.xn1.as<bf16>(), W16(o.qkv), s.qkv.as<bf16>(), R, h, W);
    rope_forward(s.qkv.as<bf16>(), pos, R, n, hq + hkv, d, W, base, stream);
    kernels::BlockParams bp;
    bp.q = view16(s.qkv.as<bf16>(), hq, W);
    bp.k = view16(s.qkv.as<bf16>() + hq * d, hkv, W);
    bp.v = view16(s.qkv.as<bf16>() + (hq + hkv) * d, hkv, W);
    bp.q_positions = pos;
    bp.k_positions = pos;
    bp.causal = spec.causal;
    kernels::ForwardOut fo{kernels::dense_view(o32.get(), kernels::ElemType::f32, b, hq, n, d),
                           kernels::dense_rows(s.lse.as<float>(), b, hq, n)};
    kernels::cuda::flash_forward(bp, fo, stream);
    heads_to_tokens(o32.as<float>(), s.attn.as<bf16>(), b, n, hq, d, stream);
    linear_fwd(s.attn.as<bf16>(), W16(o.wo), tmp_h.as<bf16>(), R, hq * d, h);
    add(s.x_in.as<bf16>(), tmp_h.as<bf16>(), s.x_mid.as<bf16>(), R * h, stream);
    rmsnorm_forward(s.x_mid.as<bf16>(), W32(o.mlp_norm), s.xn2.as<bf16>(), s.rstd2.as<float>(), R, h, eps, stream);
    linear_fwd(s.xn2.as<bf16>(), W16(o.gu), s.gu.as<bf16>(), R, h, gu_cols);
    mlp_act_forward(s.gu.as<bf16>(), s.m.as<bf16>(), R, f, spec.model.gated_mlp, stream);
    linear_fwd(s.m.as<bf16>(), W16(o.down), tmp_h.as<bf16>(), R, f, h);
    bf16* next = l + 1 < L ? st[static_cast<size_t>(l + 1)].x_in.as<bf16>() : x_final.as<bf16>();
    add(s.x_mid.as<bf16>(), tmp_h.as<bf16>(), next, R * h, stream);
  }
  rmsnorm_forward(x_final.as<bf16>(), W32(off_final_norm), xn_f.as<bf16>(), rstd_f.as<float>(), R, h, eps, stream);
  linear_fwd(xn_f.as<bf16>(), W16(off_head), logits.as<bf16>(), R, h, V);
  const float scale = static_cast<float>(1.0 / (double(spec.global_batch) * double(spec.seq_len)));
  cross_entropy(logits.as<bf16>(), targets.as<int32_t>(), loss_sum.as<double>(), R, V, scale, stream);
  RINGPLAN_CUDA_OK(cudaEventRecord(ev[1], stream));
  RINGPLAN_CUDA_OK(cudaEventSynchronize(ev[1]));
  float ms = 0;
  RINGPLAN_CUDA_OK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
  fwd_ms += ms;
}

void GpuTrainer::Impl::backward(double& bwd_ms) {
  RINGPLAN_CUDA_OK(cudaEventRecord(ev[0], stream));
  // Output layer: logits now hold d(loss)/d(logits).
  linear_wgrad(logits.as<bf16>(), xn_f.as<bf16>(), G32(off_head), R, h, V);
  linear_dgrad(logits.as<bf16>(), W16(off_head), dxn.as<bf16>(), R, h, V);
  RINGPLAN_CUDA_OK(cudaMemsetAsync(dx.get(), 0, dx.bytes(), stream));
  rmsnorm_backward(x_final.as<bf16>(), W32(off_final_norm), rstd_f.as<float>(), dxn.as<bf16>(), dx.as<bf16>(),
                   G32(off_final_norm), R, h, stream);
  for (int64_t l = L - 1; l >= 0; --l) {
    Stash& s = st[static_cast<size_t>(l)];
    const LayerOffsets& o = lo[static_cast<size_t>(l)];
    // MLP (dx = d loss / d layer output).
    linear_wgrad(dx.as<bf16>(), s.m.as<bf16>(), G32(o.down), R, f, h);
    linear_dgrad(dx.as<bf16>(), W16(o.down), dm.as<bf16>(), R, f, h);
    mlp_act_backward(s.gu.as<bf16>(), dm.as<bf16>(), dgu.as<bf16>(), R, f, spec.model.gated_mlp, stream);
    linear_wgrad(dgu.as<bf16>(), s.xn2.as<bf16>(), G32(o.gu), R, h, gu_cols);
    linear_dgrad(dgu.as<bf16>(), W16(o.gu), dxn.as<bf16>(), R, h, gu_cols);
    rmsnorm_backward(s.x_mid.as<bf16>(), W32(o.mlp_norm), s.rstd2.as<float>(), dxn.as<bf16>(), dx.as<bf16>(),
                     G32(o.mlp_norm), R, h, stream);
    // Attention (dx = d loss / d x_mid).
    linear_wgrad(dx.as<bf16>(), s.attn.as<bf16>(), G32(o.wo), R, hq * d, h);
    linear_dgrad(dx.as<bf16>(), W16(o.wo), d_attn.as<bf16>(), R, hq * d, h);
    RINGPLAN_CUDA_OK(cudaMemsetAsync(dq.get(), 0, dq.bytes(), stream));
    RINGPLAN_CUDA_OK(cudaMemsetAsync(dk.get(), 0, dk.bytes(), stream));
    RINGPLAN_CUDA_OK(cudaMemsetAsync(dv.get(), 0, dv.bytes(), stream));
    kernels::BlockParams bp;
    bp.q = view16(s.qkv.as<bf16>(), hq, W);
    bp.k = view16(s.qkv.as<bf16>() + hq * d, hkv, W);
    bp.v = view16(s.qkv.as<bf16>() + (hq + hkv) * d, hkv, W);
    bp.q_positions = positions.as<int64_t>();
    bp.k_positions = positions.as<int64_t>();
    bp.causal = spec.causal;
    kernels::BackwardArgs ga;
    ga.out = view16(s.attn.as<bf16>(), hq, hq * d);
    ga.grad_out = view16(d_attn.as<bf16>(), hq, hq * d);
    ga.lse = kernels::dense_rows(s.lse.as<float>(), b, hq, n);
    ga.delta = kernels::dense_rows(delta.as<float>(), b, hq, n);
    ga.grad_q = kernels::dense_view(dq.get(), kernels::ElemType::f32, b, hq, n, d);
    ga.grad_k = kernels::dense_view(dk.get(), kernels::ElemType::f32, b, hkv, n, d);
    ga.grad_v = kernels::dense_view(dv.get(), kernels::ElemType::f32, b, hkv, n, d);
    kernels::cuda::backward_delta(ga.out, ga.grad_out, ga.delta, stream);
    kernels::cuda::flash_backward(bp, ga, stream);
    attention_grads_to_qkv(dq.as<float>(), dk.as<float>(), dv.as<float>(), dqkv.as<bf16>(), positions.as<int64_t>(), b,
                           n, hq, hkv, d, static_cast<float>(spec.rope_base), stream);
    linear_wgrad(dqkv.as<bf16>(), s.xn1.as<bf16>(), G32(o.qkv), R, h, W);
    linear_dgrad(dqkv.as<bf16>(), W16(o.qkv), dxn.as<bf16>(), R, h, W);
    rmsnorm_backward(s.x_in.as<bf16>(), W32(o.attn_norm), s.rstd1.as<float>(), dxn.as<bf16>(), dx.as<bf16>(),
                     G32(o.attn_norm), R, h, stream);
  }
  embedding_backward(tokens.as<int32_t>(), dx.as<bf16>(), G32(off_emb), R, h, stream);
  RINGPLAN_CUDA_OK(cudaEventRecord(ev[1], stream));
  RINGPLAN_CUDA_OK(cudaEventSynchronize(ev[1]));
  float ms = 0;
  RINGPLAN_CUDA_OK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
  bwd_ms += ms;
}

double GpuTrainer::train_step() {
  Impl& I = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  timing_ = step::StepTiming{};
  RINGPLAN_CUDA_OK(cudaMemsetAsync(I.loss_sum.get(), 0, 8, I.stream));
  double fwd_ms = 0, bwd_ms = 0;
  for (int64_t k = 0; k < I.micro_batches; ++k) {
    I.forward(k, fwd_ms);
    I.backward(bwd_ms);
  }
  float ms = 0;
  if (I.spec.mesh.dp > 1) {
    // The reduction blocks the host until NCCL is done (NcclCommunicator orders it after the
    // compute stream): the host clock around it is the exposed time.
    RINGPLAN_CUDA_OK(cudaStreamSynchronize(I.stream));
    const auto c0 = std::chrono::steady_clock::now();
    I.dp.all_reduce_sum(I.G32(0), I.n_params);
    timing_.term_s[size_t(Term::dp_comm_exposed)] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    I.dp.all_reduce_sum(I.loss_sum.as<double>(), 1);  // every replica's token losses
  }
  double loss = 0;
  RINGPLAN_CUDA_OK(cudaMemcpyAsync(&loss, I.loss_sum.get(), 8, cudaMemcpyDeviceToHost, I.stream));
  ++I.step_count;
  const double b1 = 0.9, b2 = 0.999, lr = I.spec.learning_rate;
  const double c1 = 1.0 - std::pow(b1, double(I.step_count)), c2 = 1.0 - std::pow(b2, double(I.step_count));
  RINGPLAN_CUDA_OK(cudaEventRecord(I.ev[0], I.stream));
  if (I.spec.clip_grad > 0) {
    // Gradient-norm clipping as the CPU trainer does it (runtime/step/trainer.hpp): the L2 norm
    // of the whole float32 gradient buffer (DP replicas hold the same reduced gradients), then a
    // scale by min(1, clip / (norm + 1e-6)) applied every step. cuBLAS in host pointer mode
    // returns the norm to the host after the stream's earlier work.
    float norm = 0;
    RINGPLAN_CUBLAS_OK(cublasSnrm2_64(I.blas, static_cast<int64_t>(I.n_params), I.G32(0), 1, &norm));
    const float coef = float(std::min(1.0, I.spec.clip_grad / (double(norm) + 1e-6)));
    RINGPLAN_CUBLAS_OK(cublasSscal_64(I.blas, static_cast<int64_t>(I.n_params), &coef, I.G32(0), 1));
  }
  optimizer_step(I.W32(0), I.G32(0), I.opt_m.as<float>(), I.opt_v.bytes() ? I.opt_v.as<float>() : nullptr, I.W16(0),
                 static_cast<int64_t>(I.n_params), I.spec.optimizer == Optimizer::adam, float(lr), float(lr / c1),
                 float(1.0 / c2), I.stream);
  RINGPLAN_CUDA_OK(cudaEventRecord(I.ev[1], I.stream));
  RINGPLAN_CUDA_OK(cudaEventSynchronize(I.ev[1]));
  RINGPLAN_CUDA_OK(cudaEventElapsedTime(&ms, I.ev[0], I.ev[1]));
  timing_.term_s[size_t(Term::optimizer)] = ms * 1e-3;
  timing_.term_s[size_t(Term::forward_compute)] = fwd_ms * 1e-3;
  timing_.term_s[size_t(Term::backward_compute)] = bwd_ms * 1e-3;
  timing_.step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // `loss` was copied before the optimizer's events were waited for: the stream has completed it.
  if (!std::isfinite(loss))
    throw Error(ErrorKind::runtime, fmt::format("GPU training step {}: the loss is not finite ({})", I.step_count, loss));
  return loss / (double(I.spec.global_batch) * double(I.spec.seq_len));
}

step::StepMemory GpuTrainer::memory() const {
  const Impl& I = *impl_;
  step::StepMemory m;
  m.weights_bytes = static_cast<int64_t>(I.w32.bytes() + I.w16.bytes());
  m.gradients_bytes = static_cast<int64_t>(I.g32.bytes());
  m.optimizer_bytes = static_cast<int64_t>(I.opt_m.bytes() + I.opt_v.bytes());
  m.activations_peak_bytes = I.act_bytes;
  m.logits_bytes = I.logits_bytes;
  m.tracked_peak_bytes = m.weights_bytes + m.gradients_bytes + m.optimizer_bytes + I.act_bytes + I.logits_bytes +
                         I.work_bytes;
  return m;
}

std::vector<float> GpuTrainer::download_parameters() const {
  std::vector<float> host(impl_->n_params);
  RINGPLAN_CUDA_OK(cudaMemcpy(host.data(), impl_->w32.get(), host.size() * 4, cudaMemcpyDeviceToHost));
  return host;
}

step::StepMeasurement run_training_steps_cuda(MpiCommunicator& world, const StepSpec& spec,
                                              const step::StepRunOptions& opt) {
  check_gpu_step_spec(spec);
  step::StepMeasurement m;
  const int P = world.size(), me = world.rank();
  const int device = select_rank_device(world);
  const CudaStream owned_stream;
  cudaStream_t stream = owned_stream.get();
  NcclBootstrap boot = mpi_bootstrap(world.comm());
  auto nccl = NcclCommunicator::create(boot, device, stream, world.timeout_s());

  auto free_device_bytes = [] {
    size_t free_b = 0, total_b = 0;
    RINGPLAN_CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    return static_cast<int64_t>(free_b);
  };
  const int64_t free_before = free_device_bytes();
  std::vector<step::StepTiming> mine;
  std::vector<float> final_params;
  std::vector<GpuTrainer::ParamInfo> infos;
  int64_t device_delta = -1;
  step::StepMemory mem;
  {
    GpuTrainer trainer(spec, *nccl, stream);
    int64_t free_min = free_device_bytes();
    world.barrier();
    const int total = opt.warmup + opt.steps;
    for (int s = 0; s < total; ++s) {
      world.barrier();
      m.losses.push_back(trainer.train_step());
      if (s >= opt.warmup) mine.push_back(trainer.last_timing());
      free_min = std::min(free_min, free_device_bytes());
      if (opt.on_step) opt.on_step(s + 1, total);
    }
    device_delta = free_before - free_min;
    mem = trainer.memory();
    if (opt.check_parity && me == 0) {
      final_params = trainer.download_parameters();
      infos = trainer.params();
    }
  }
  m.timing.assign(mine.size(), std::vector<step::StepTiming>(static_cast<size_t>(P)));
  for (size_t s = 0; s < mine.size(); ++s) world.all_gather(&mine[s], m.timing[s].data(), sizeof(step::StepTiming));
  m.memory.resize(static_cast<size_t>(P));
  world.all_gather(&mem, m.memory.data(), sizeof(step::StepMemory));
  // On a GPU the peak memory rise is the drop in free device memory over the run (allocator included).
  m.peak_memory_rise_bytes.resize(static_cast<size_t>(P));
  world.all_gather(&device_delta, m.peak_memory_rise_bytes.data(), sizeof(int64_t));
  for (int r = 0; r < P; ++r) m.hosts.push_back(world.describe_rank(r));
  if (opt.check_parity) {
    // Rank 0 trains the same model, data and seed with the CPU runtime (float32, one process).
    // DP replicas hold identical parameters after every step (same reduced gradients, same
    // update), so rank 0's are compared.
    auto self = world.split(me, 0);
    if (me == 0) {
      StepSpec ref_spec = spec;
      ref_spec.mesh = Mesh{1, 1, 1, 1};
      step::Trainer<float> ref(ref_spec, *self);
      const int total = opt.warmup + opt.steps;
      for (int s = 0; s < total; ++s) m.reference_losses.push_back(ref.train_step());
      double worst = 0;
      int64_t compared = 0;
      for (const auto& p : infos)
        for (int64_t r = 0; r < p.rows; ++r)
          for (int64_t c = 0; c < p.cols; ++c) {
            const float* x = ref.find(p.id, r, c);
            const double v = final_params[p.offset + static_cast<size_t>(r * p.cols + c)];
            worst = std::max(worst, x == nullptr ? INFINITY : std::abs(v - double(*x)));
            ++compared;
          }
      m.max_param_diff = worst;
      m.params_compared = compared;
    }
  }
  return m;
}

}  // namespace ringplan::runtime::gpu
