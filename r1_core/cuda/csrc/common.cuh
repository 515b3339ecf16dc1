// Shared helpers for the r1 CUDA ops. Arithmetic that decides an index (distances, voxel
// coordinates) uses explicit round-to-nearest intrinsics so that no multiply-add is fused:
// results are then bit-identical to the torch / numpy references, which form the same
// expressions in the same order.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <limits>

#define R1_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define R1_CHECK_CONTIG(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define R1_CHECK_INPUT(x) \
  R1_CHECK_CUDA(x);       \
  R1_CHECK_CONTIG(x)
#define R1_CUDA_CHECK(expr)                                                           \
  do {                                                                                \
    cudaError_t err__ = (expr);                                                       \
    TORCH_CHECK(err__ == cudaSuccess, "CUDA error: ", cudaGetErrorString(err__), " at ", \
                __FILE__, ":", __LINE__);                                             \
  } while (0)
#define R1_LAUNCH_CHECK() R1_CUDA_CHECK(cudaGetLastError())

namespace r1 {

// Squared distance ((dx*dx + dy*dy) + dz*dz) in float32 without FMA contraction.
__device__ __forceinline__ float sqdist(float ax, float ay, float az, float bx, float by, float bz) {
  float dx = __fsub_rn(ax, bx), dy = __fsub_rn(ay, by), dz = __fsub_rn(az, bz);
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Test aid: when on (set_debug_poison from Python), every output allocated uninitialised is
// filled with a poison value first (NaN, 0xAB bytes for bool, -987654321 for integers), so a
// test can prove that the kernel wrote every element.
bool debug_poison();
inline void maybe_poison(at::Tensor& t) {
  if (!debug_poison()) return;
  if (t.is_floating_point()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  else if (t.scalar_type() == at::kBool) t.view(at::kByte).fill_(0xAB);
  else t.fill_(-987654321);
}

}  // namespace r1
