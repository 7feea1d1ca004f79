// nccl_smoke: single-GPU smoke test of the NCCL communicator (runtime/nccl), no MPI needed.
//
// Build: cmake --build build/cuda --target nccl_smoke      Run: build/cuda/tests/runtime/nccl_smoke
// (CTest: runtime.cuda.nccl_smoke in the cuda preset)
// One process, one rank: init (non-blocking config), split, grouped send/recv to itself,
// all-reduce, all-gather, broadcast, barrier, and the host-buffer rejection. Inputs are chosen
// so results are exact; every check prints its #wrong elements and the program exits 1 when any
// is wrong (nccl-tests style). With no GPU it prints SKIPPED and exits 0.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "runtime/nccl/nccl_communicator.hpp"

namespace rr = ringplan::runtime;

namespace {

int failures = 0;

void report(const char* what, long wrong) {
  std::printf("%-44s #wrong %ld %s\n", what, wrong, wrong ? "FAIL" : "ok");
  if (wrong) ++failures;
}

template <typename T>
T* dev_alloc(size_t n) {
  void* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
  return static_cast<T*>(p);
}

template <typename T>
std::vector<T> down(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

}  // namespace

int main() {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 0;
  }
  try {
    cudaStream_t compute = nullptr;
    cudaStreamCreate(&compute);
    auto comm = rr::NcclCommunicator::create(rr::single_process_bootstrap(), 0, compute, 30.0);
    report("init: rank 0 of 1", (comm->rank() != 0) + (comm->size() != 1));
    std::printf("  %s\n", comm->describe_rank(0).c_str());

    auto sub = comm->split(0, 0);
    report("split(color 0, key 0): rank 0 of 1", (sub->rank() != 0) + (sub->size() != 1));

    // Grouped send/recv to self: 64 MiB, value i % 251 per byte, timed.
    const size_t bytes = size_t(64) << 20;
    auto* src = dev_alloc<unsigned char>(bytes);
    auto* dst = dev_alloc<unsigned char>(bytes);
    std::vector<unsigned char> pattern(bytes);
    for (size_t i = 0; i < bytes; ++i) pattern[i] = static_cast<unsigned char>(i % 251);
    cudaMemcpy(src, pattern.data(), bytes, cudaMemcpyHostToDevice);
    cudaMemset(dst, 0, bytes);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<rr::RequestPtr> reqs;
    reqs.push_back(comm->post_send(src, bytes, 0, 7));
    reqs.push_back(comm->post_recv(dst, bytes, 0, 7));
    comm->start_posted();
    comm->wait_all(reqs);
    cudaStreamSynchronize(compute);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto got = down(dst, bytes);
    long wrong = 0;
    for (size_t i = 0; i < bytes; ++i) wrong += got[i] != pattern[i];
    report("send/recv to self, 64 MiB (grouped)", wrong);
    std::printf("  %.3f ms, %.1f GB/s (first call includes NCCL connection setup)\n", s * 1e3, bytes / s / 1e9);

    // all_reduce over one rank is the identity; values exact in float.
    const size_t n = 1 << 20;
    auto* f = dev_alloc<float>(n);
    std::vector<float> hf(n);
    for (size_t i = 0; i < n; ++i) hf[i] = float(i % 1000);
    cudaMemcpy(f, hf.data(), n * 4, cudaMemcpyHostToDevice);
    sub->all_reduce_sum(f, n);
    const auto rf = down(f, n);
    wrong = 0;
    for (size_t i = 0; i < n; ++i) wrong += rf[i] != hf[i];
    report("all_reduce_sum(float) on the split group", wrong);

    auto* dd = dev_alloc<double>(4);
    const std::vector<double> hd = {1.5, -2.0, 3.25, 1e300};
    cudaMemcpy(dd, hd.data(), 32, cudaMemcpyHostToDevice);
    comm->all_reduce_max(dd, 4);
    const auto rd = down(dd, 4);
    wrong = 0;
    for (size_t i = 0; i < 4; ++i) wrong += rd[i] != hd[i];
    report("all_reduce_max(double)", wrong);

    comm->all_gather(src, dst, 4096);
    const auto ag = down(dst, 4096);
    wrong = 0;
    for (size_t i = 0; i < 4096; ++i) wrong += ag[i] != pattern[i];
    report("all_gather 4 KiB", wrong);

    comm->broadcast(src, 4096, 0);
    comm->barrier();
    report("broadcast + barrier complete", 0);

    bool rejected = false;
    try {
      comm->post_send(pattern.data(), 16, 0, 0);
    } catch (const ringplan::Error& err) {
      rejected = err.kind() == ringplan::ErrorKind::bad_input;
      std::printf("  host buffer rejected: %s\n", err.what());
    }
    report("host buffer rejected (bad_input)", rejected ? 0 : 1);

    cudaFree(src);
    cudaFree(dst);
    cudaFree(f);
    cudaFree(dd);
    sub.reset();
    comm.reset();
    cudaStreamDestroy(compute);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "nccl_smoke: %s\n", ex.what());
    return 1;
  }
  std::printf("nccl_smoke: %s\n", failures ? "FAILED" : "all checks passed");
  return failures ? 1 : 0;
}
