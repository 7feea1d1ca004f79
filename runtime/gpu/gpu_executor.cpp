#include "runtime/gpu/gpu_executor.hpp"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/attention_cuda.hpp"
#include "runtime/gpu/cuda_ring.hpp"
#include "runtime/nccl/nccl_communicator.hpp"
#include "runtime/nccl/nccl_mpi_bootstrap.hpp"
#include "runtime/sharding.hpp"

namespace ringplan::runtime {
namespace {

// Ranks on this node (the same MPI_COMM_TYPE_SHARED split as mpi_local_rank).
int local_ranks(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
    throw Error(ErrorKind::runtime, "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) failed");
  int n = 0;
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  return n;
}

// A dense [batch, heads, n, head_dim] device tensor of `type` filled with synthetic_value for the
// tokens at `positions`: generated on the host in float32, rounded to `type` on the device.
void upload_synthetic(void* dst, kernels::ElemType type, uint64_t seed, SyntheticTensor t, int64_t batch,
                      int64_t heads, const int64_t* positions, int64_t n, int64_t head_dim, cudaStream_t stream) {
  std::vector<float> host(static_cast<size_t>(batch * heads * n * head_dim));
  fill_synthetic(host.data(), seed, t, batch, heads, positions, n, head_dim);
  DeviceBuffer staging(host.size() * sizeof(float));
  RINGPLAN_CUDA_OK(cudaMemcpy(staging.get(), host.data(), staging.bytes(), cudaMemcpyHostToDevice));
  kernels::cuda::convert_from_f32(kernels::dense_view(staging.get(), kernels::ElemType::f32, batch, heads, n, head_dim),
                                  kernels::dense_view(dst, type, batch, heads, n, head_dim), stream);
  RINGPLAN_CUDA_OK(cudaStreamSynchronize(stream));
}

int64_t free_device_bytes() {
  size_t free_b = 0, total_b = 0;
  RINGPLAN_CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(free_b);
}

}  // namespace

int cuda_devices(std::string* why) { return kernels::cuda::device_count(why); }

double smallest_device_memory_bytes(MpiCommunicator& world) {
  std::string why;
  const int devices = cuda_devices(&why);
  const int device = mpi_local_rank(world.comm());
  double neg_bytes = -HUGE_VAL;  // max over ranks of -bytes = -(smallest bytes); -inf: unknown here
  cudaDeviceProp prop{};
  if (device < devices) {
    if (cudaGetDeviceProperties(&prop, device) == cudaSuccess)
      neg_bytes = -static_cast<double>(prop.totalGlobalMem);
    else
      (void)cudaGetLastError();  // clear a non-sticky error; select_rank_device reports the rank
  }
  world.all_reduce_max(&neg_bytes, 1);
  return std::isfinite(neg_bytes) ? -neg_bytes : 0.0;
}

int select_rank_device(MpiCommunicator& world) {
  std::string why;
  const int devices = cuda_devices(&why);
  if (devices < 1) throw bad_input(fmt::format("{}: no CUDA device: {}", world.describe_rank(world.rank()), why));
  const int on_node = local_ranks(world.comm());
  if (on_node > devices)
    throw bad_input(fmt::format("{}: {} ranks on this host but only {} GPU{}; NCCL cannot put two ranks on one GPU: "
                                "start at most {} rank{} per host",
                                world.describe_rank(world.rank()), on_node, devices, devices == 1 ? "" : "s", devices,
                                devices == 1 ? "" : "s"));
  const int device = mpi_local_rank(world.comm());
  RINGPLAN_CUDA_OK(cudaSetDevice(device));
  return device;
}

RingLayerMeasurement run_ring_layer_cuda(MpiCommunicator& world, const RingLayerShape& shape,
                                         const ExecutorOptions& opt, kernels::ElemType type) {
  if (opt.iterations < 1) throw bad_input(fmt::format("iterations = {}: must be >= 1", opt.iterations));
  if (opt.warmup < 0) throw bad_input(fmt::format("warmup = {}: must be >= 0", opt.warmup));
  const int P = world.size();
  check_shardable(shape.scheme, shape.seq_len, P);
  const int device = select_rank_device(world);
  const CudaStream owned_stream;
  cudaStream_t stream = owned_stream.get();

  NcclBootstrap boot = mpi_bootstrap(world.comm());
  auto nccl = NcclCommunicator::create(boot, device, stream, world.timeout_s());

  const ContextParallel ctx(&world, shape.scheme, shape.seq_len);
  const int64_t n = ctx.local_tokens();
  const int64_t* pos = ctx.positions().data();

  RingLayerMeasurement m;
  m.shape = shape;
  m.cp_size = P;
  world.barrier();
  RankMemory mem;
  mem.rss_peak_was_reset = true;  // the device figure starts from the free memory before allocating
  const int64_t free_before = free_device_bytes();

  const size_t esz = elem_bytes(type);
  const size_t q_elems = static_cast<size_t>(shape.batch * shape.heads * n * shape.head_dim);
  const size_t kv_elems = static_cast<size_t>(shape.batch * shape.kv_heads * n * shape.head_dim);
  const size_t rows = static_cast<size_t>(shape.batch * shape.heads * n);
  DeviceBuffer q(q_elems * esz), k(kv_elems * esz), v(kv_elems * esz), dout(q_elems * esz), out_typed(q_elems * esz);
  DeviceBuffer out(q_elems * sizeof(float)), lse(rows * sizeof(float)), dq(q_elems * sizeof(float)),
      dk(kv_elems * sizeof(float)), dv(kv_elems * sizeof(float));
  mem.tensors_bytes = static_cast<int64_t>(q.bytes() + k.bytes() + v.bytes() + dout.bytes() + out_typed.bytes() +
                                           out.bytes() + lse.bytes() + dq.bytes() + dk.bytes() + dv.bytes());
  upload_synthetic(q.get(), type, opt.seed, SyntheticTensor::q, shape.batch, shape.heads, pos, n, shape.head_dim, stream);
  upload_synthetic(k.get(), type, opt.seed, SyntheticTensor::k, shape.batch, shape.kv_heads, pos, n, shape.head_dim, stream);
  upload_synthetic(v.get(), type, opt.seed, SyntheticTensor::v, shape.batch, shape.kv_heads, pos, n, shape.head_dim, stream);
  upload_synthetic(dout.get(), type, opt.seed, SyntheticTensor::grad_out, shape.batch, shape.heads, pos, n,
                   shape.head_dim, stream);

  CudaRingAttention ring(*nccl, world, ring_config(shape, n, opt.tiles), type, pos, stream);
  mem.workspace = ring.workspace_bytes();
  mem.tracked_bytes = mem.tensors_bytes + mem.workspace.total();

  TraceRecorder recorder;
  if (opt.trace) ring.set_trace(&recorder);
  std::vector<RankIterationSample> mine;
  int64_t free_min = free_device_bytes();
  const auto o_view = kernels::dense_view(out.get(), kernels::ElemType::f32, shape.batch, shape.heads, n, shape.head_dim);
  const auto o_typed = kernels::dense_view(out_typed.get(), type, shape.batch, shape.heads, n, shape.head_dim);
  for (int it = -opt.warmup; it < opt.iterations; ++it) {
    world.barrier();  // iterations start together, so a rank's wait is the ring's, not the last iteration's skew
    if (it == 0) recorder.reset_epoch();
    recorder.set_iteration(it);
    ring.forward(q.get(), k.get(), v.get(), out.as<float>(), lse.as<float>());
    // The layer's output leaves in the input type, and the backward reads that O (as a framework's
    // autograd would). Not part of the timed phases: an element-wise cast of the output.
    kernels::cuda::convert_from_f32(o_view, o_typed, stream);
    ring.backward(q.get(), k.get(), v.get(), out_typed.get(), lse.as<float>(), dout.get(), dq.as<float>(),
                  dk.as<float>(), dv.as<float>());
    RINGPLAN_CUDA_OK(cudaStreamSynchronize(stream));
    free_min = std::min(free_min, free_device_bytes());
    if (opt.on_iteration) opt.on_iteration(it + opt.warmup + 1, int64_t{opt.warmup} + opt.iterations);
    if (it < 0) {
      recorder.clear();
      continue;
    }
    const RingPassTiming& f = ring.last_forward();
    const RingPassTiming& b = ring.last_backward();
    mine.push_back({f.total_s, f.compute_s(), f.comm_wait_s(), b.total_s, b.compute_s(), b.comm_wait_s()});
  }
  // Results must be finite; a NaN means a kernel or merge bug, and timing it would be meaningless.
  std::vector<float> host(q_elems);
  RINGPLAN_CUDA_OK(cudaMemcpy(host.data(), dq.get(), q_elems * sizeof(float), cudaMemcpyDeviceToHost));
  for (float x : host)
    if (!std::isfinite(x))
      throw Error(ErrorKind::runtime, fmt::format("{}: non-finite dQ after the CUDA ring backward", world.describe_rank(world.rank())));
  mem.peak_memory_rise_bytes = free_before - free_min;
  gather_measurement(world, mine, ring.last_forward().visible_pairs(), mem, opt.trace ? &recorder.events() : nullptr, m);
  return m;
}

}  // namespace ringplan::runtime
