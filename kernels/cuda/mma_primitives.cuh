// Internal: the device primitives shared by the mma.sync attention kernels (attention_fwd_mma.cu,
// attention_bwd_mma.cu): PTX wrappers for cp.async, ldmatrix and mma.m16n8k16, the swizzled tile
// index, the 16-bit pair packing and the swizzled tile copy. Include from .cu files only.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, 16-bit inputs), g = lane / 4, t = lane % 4:
//   A (16x16, row):  a0 (row g, cols 2t, 2t+1)  a1 (row g+8, same)  a2 (row g, cols 2t+8, +9)
//                    a3 (row g+8, cols 2t+8, +9)
//   B (16x8, col):   b0 (k rows 2t, 2t+1, col g)  b1 (k rows 2t+8, +9, col g)
//   C (16x8, f32):   c0, c1 (row g, cols 2t, 2t+1)  c2, c3 (row g+8, same cols)
// A 32-bit register holds two 16-bit elements, the lower column (or k) index in the low half.
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i, and register i of every
// lane receives matrix i: without .trans the lane holds (row g, cols 2t, 2t+1) of it, with .trans
// (rows 2t, 2t+1, col g).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace ringplan::kernels::cuda::mma_detail {

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][W] tile of 16-bit elements.
// Chunks are XOR-swizzled with row % 8: the 8 row addresses of one ldmatrix 8x8 matrix (8
// consecutive rows, one logical chunk) land in 8 different 16-byte bank groups, and so do 4-byte
// stores of 8 consecutive rows at one chunk; ldmatrix is conflict-free without padding.
// Requires W / 8 >= 8 chunks per row, so the XOR stays inside the row.
template <int W>
__device__ __forceinline__ int swz(int row, int chunk) {
  static_assert(W % 64 == 0, "the swizzle needs at least 8 chunks of 8 elements per row");
  return row * W + ((chunk ^ (row & 7)) << 3);
}

// ---- PTX wrappers ------------------------------------------------------------------------
// volatile: the compiler must not move shared-memory reads and async copies across barriers.

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Global -> shared copies; with valid == false nothing is read and the bytes are zeroed
// (src-size 0), but `gmem` must still be a mapped address.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits for all of this thread's copies; other threads' copies need a barrier afterwards.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
// The same on 32-bit shared-state-space addresses (smem_addr), for callers that compute
// addresses themselves.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t saddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(saddr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t saddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(saddr));
}
// a ^ b, computed where it is written: volatile keeps the compiler from hoisting it out of a
// loop. Used for per-lane swizzled addresses that differ per unrolled k-step: hoisted, each would
// hold a register for the whole loop, and the accumulators need those registers.
__device__ __forceinline__ uint32_t xor_in_place(uint32_t a, uint32_t b) {
  uint32_t r;
  asm volatile("xor.b32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ void st_shared_b32(void* smem, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(smem_addr(smem)), "r"(v));
}
// The same on a 32-bit shared-state-space address (smem_addr).
__device__ __forceinline__ void st_shared_b32(uint32_t saddr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(saddr), "r"(v));
}

// d += A B for one m16n8k16 tile; float32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded (nearest even) to the input type; `lo` in the low 16 bits.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

// ---- tiles -------------------------------------------------------------------------------

// Issues cp.async copies of rows [row0, row0 + Rows) of a [tokens, D] slice (token stride `stride`
// elements) into a swizzled [Rows][D] tile, Threads threads sharing the work (threadIdx.x in
// [0, Threads)); rows at or beyond `nrows` are zero-filled. row0 < nrows, so the (unread) source
// address of a zero-filled chunk is row0's, a mapped address. Unroll: of the per-thread copy loop
// (default: all of it). Inside a loop over tiles a fully unrolled copy's per-copy offsets are
// loop invariants, and the compiler may keep them all in registers across that loop.
template <typename T, int D, int Rows, int Threads, int Unroll = Rows * (D / 8) / Threads>
__device__ __forceinline__ void copy_tile(T* dst, const T* src, int64_t stride, int64_t row0, int64_t nrows) {
  constexpr int kChunks = D / 8;
  constexpr int kPerThread = Rows * kChunks / Threads;
  static_assert(Rows * kChunks % Threads == 0, "copy loop has no tail");
  static_assert(Unroll >= 1 && kPerThread % Unroll == 0, "unroll factor divides the copy loop");
#pragma unroll Unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int idx = int(threadIdx.x) + i * Threads;
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t gr = row0 + r;
    const bool valid = gr < nrows;
    cp_async16(dst + swz<D>(r, c), src + (valid ? gr : row0) * stride + c * 8, valid);
  }
}

}  // namespace ringplan::kernels::cuda::mma_detail
