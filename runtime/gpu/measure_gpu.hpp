// Measures one GPU as the cost model sees it (`ringplan calibrate --device cuda`): cuBLAS GEMM
// rates at the linear layers' shapes plans run, in bf16 and (compute capability >= 8.9) FP8
// e4m3 through cuBLASLt; the project's flash-attention kernels forward and backward; the HBM
// copy rate. The result is JSON in the schema of bench/gpu/gemm_bench.py and sdpa_bench.py, so the
// CLI fits it exactly as measurements taken with those scripts (`calibrate --gpu-bench`,
// sim::parse_gpu_bench): runtime measures, sim fits.
//
// GEMM shapes: the QKV (GQA), attention-out, gated MLP-up, MLP-down and vocabulary GEMMs of
// Llama-3 8B and 70B (hidden 4096 / 8192, ffn 14336 / 28672, 32 / 64 query heads, 8 KV heads,
// head_dim 128, vocab 128256) split by TP in {1, 2, 4, 8}, at 1K, 4K and 16K tokens per rank;
// each as forward (Y = X W^T), data gradient (dX = dY W) and weight gradient (dW = dY^T X).
// FLOPs = 2 M N K. Attention: batch 1, 32 query / 8 KV heads, head_dim 128, bf16, 4K / 8K /
// 16K tokens, causal and not; FLOPs as sdpa_bench.py (4 b h n^2 d, half when causal; backward
// 2.5x).
//
// Every timed result is checked first: sampled GEMM outputs against float64 dot products on the
// host, sampled attention rows against a float64 softmax on the host. Timing: CUDA events around
// `reps` back-to-back calls (reps chosen for about 20 ms), median of 5.
#pragma once
#include <functional>
#include <string>


namespace ringplan::runtime::gpu {

struct GpuMeasureOptions {
  bool fp8 = true;        // FP8 GEMMs where the device has them
  bool attention = true;  // the flash kernels
  // Called after each measured item (done, total) for a progress line.
  std::function<void(int done, int total)> on_item;
};

struct GpuMeasureResult {
  std::string device;
  std::string json;   // the raw measurements in gemm_bench.py's and sdpa_bench.py's schema
                      // (one object with "gemms", "hbm_copy_gbps" and "results")
  std::string notes;  // what was skipped and why (e.g. FP8 unavailable)
};

// Runs on the current CUDA device. Throws bad_input when there is no device, Error(runtime) on a
// CUDA/cuBLAS failure or a result that fails its check.
GpuMeasureResult measure_gpu(const GpuMeasureOptions& opt);

}  // namespace ringplan::runtime::gpu
