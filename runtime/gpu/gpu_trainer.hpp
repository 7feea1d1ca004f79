// The whole training step on GPUs (one GPU per MPI rank, NCCL between them): the same decoder as
// runtime/step/trainer.hpp, with the same parameters (initial_parameter of the same ids), data
// (synthetic_token) and loss, run as Megatron runs it in mixed precision:
//   - GEMMs on cuBLAS (bf16 inputs, float32 accumulation; bf16 activations out, float32
//     weight gradients accumulated over micro-batches in place, beta = 1);
//   - attention on the project's CUDA flash kernels (kernels/cuda), reading Q, K, V straight out
//     of the fused QKV projection's output through strided views;
//   - RMSNorm, rotary embedding, SwiGLU/GELU, residual adds and the cross-entropy on bf16
//     activations with float32 arithmetic (runtime/gpu/step_kernels.hpp);
//   - float32 master weights, gradients and Adam/SGD state; a bf16 copy of the weights for the
//     GEMMs, refreshed by the optimizer kernel;
//   - DP: the float32 gradients summed over DP with one NCCL all-reduce after the last
//     micro-batch (not overlapped with the backward), then every rank updates its full copy.
// Meshes: DP only (TP = CP = PP = 1), ZeRO 0, recompute none, flash attention, untied
// embeddings, head_dim 64 or 128 (the CUDA kernels'); everything else is refused by
// check_gpu_step_spec with the reason (those run on --device cpu).
// Timing: CUDA events around each phase on the compute stream, summed per step: forward (with
// the loss), backward, the DP all-reduce, the optimizer.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/communicator.hpp"
#include "runtime/mpi_communicator.hpp"
#include "runtime/step/step_executor.hpp"
#include "runtime/step/trainer.hpp"

namespace ringplan::runtime::gpu {

// Throws bad_input naming the option when the GPU step cannot run `spec` (before any GPU work).
void check_gpu_step_spec(const step::StepSpec& spec);

class GpuTrainer {
 public:
  // `dp`: the NCCL communicator over the DP ranks (its size must be spec.mesh.dp); `stream`: the
  // compute stream the NCCL communicator was created with. Allocates every buffer here.
  GpuTrainer(const step::StepSpec& spec, Communicator& dp, cudaStream_t stream);
  ~GpuTrainer();
  GpuTrainer(const GpuTrainer&) = delete;
  GpuTrainer& operator=(const GpuTrainer&) = delete;

  // One optimizer step; returns the mean token loss of the global batch (the same on every rank).
  double train_step();
  const step::StepTiming& last_timing() const { return timing_; }
  step::StepMemory memory() const;

  struct ParamInfo {
    int32_t id = 0;  // as step::Trainer's ids
    std::string name;
    int64_t rows = 0, cols = 0;
    size_t offset = 0;  // into the flat parameter buffer
  };
  const std::vector<ParamInfo>& params() const { return params_; }
  // The float32 master weights, copied to the host.
  std::vector<float> download_parameters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<ParamInfo> params_;
  step::StepTiming timing_;
};

// Runs opt.warmup + opt.steps steps of `spec` on one GPU per rank of `world` (MPI; NCCL is set
// up over it) and measures them as step::run_training_steps does: losses on every rank, timing,
// memory and hosts gathered on rank 0. With opt.check_parity, rank 0 also trains the same model
// on the CPU (step::Trainer<float>, one process) for the same steps and compares losses and its
// own float32 master weights with it. Collective over `world`.
step::StepMeasurement run_training_steps_cuda(MpiCommunicator& world, const step::StepSpec& spec,
                                              const step::StepRunOptions& opt);

}  // namespace ringplan::runtime::gpu
