// Point ops for the PointNet++ encoder: furthest point sampling, ball query, gather (+ backward),
// three-NN, three-interpolate (+ backward). Layout is channels-last: xyz (B, N, 3), feat (B, N, C).
#include <cooperative_groups.h>
#include <climits>
#include "common.cuh"

namespace cg = cooperative_groups;

namespace r1 {
constexpr unsigned FULL = 0xffffffffu;

__device__ __forceinline__ bool fps_better(float d1, int i1, float d2, int i2) {
  return d1 > d2 || (d1 == d2 && i1 < i2);
}

// Warp argmax of (d, i) with ties to the lower index, carrying the winner's coordinates.
__device__ __forceinline__ void fps_warp_reduce(float& d, int& i, float& x, float& y, float& z, int width = 32) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    if (off >= width) continue;
    float od = __shfl_xor_sync(FULL, d, off);
    int oi = __shfl_xor_sync(FULL, i, off);
    float ox = __shfl_xor_sync(FULL, x, off);
    float oy = __shfl_xor_sync(FULL, y, off);
    float oz = __shfl_xor_sync(FULL, z, off);
    if (fps_better(od, oi, d, i)) { d = od; i = oi; x = ox; y = oy; z = oz; }
  }
}

// ---- furthest point sampling --------------------------------------------------------------------
// One thread-block cluster per batch element (csize blocks). Each thread keeps its points and
// their running min-distance in registers (P > 0) or streams them from global memory (P == 0,
// very large N). Per iteration: warp argmax -> block argmax (shared memory) -> cluster argmax
// through distributed shared memory after one cluster barrier. Block results are double
// buffered by iteration parity, so a single cluster.sync() per iteration suffices.
template <int P>
__global__ void __launch_bounds__(1024, 1)
fps_kernel(const float* __restrict__ xyz, float* __restrict__ scratch, int N, int n, int csize,
           int64_t* __restrict__ out) {
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = (int)cluster.block_rank();
  const int b = blockIdx.x / csize;
  const int T = blockDim.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nwarps = (T + 31) >> 5;
  const float* X = xyz + (int64_t)b * N * 3;
  float* D = scratch ? scratch + (int64_t)b * N : nullptr;
  const int stride = csize * T;
  const int base = rank * T + tid;

  __shared__ float s_wd[32], s_wx[32], s_wy[32], s_wz[32];
  __shared__ int s_wi[32];
  __shared__ float s_bd[2], s_bx[2], s_by[2], s_bz[2];
  __shared__ int s_bi[2];

  constexpr int PP = P > 0 ? P : 1;
  float px[PP], py[PP], pz[PP], pd[PP];
  if constexpr (P > 0) {
#pragma unroll
    for (int k = 0; k < P; ++k) {
      int i = base + k * stride;
      if (i < N) {
        px[k] = X[3 * i]; py[k] = X[3 * i + 1]; pz[k] = X[3 * i + 2]; pd[k] = INFINITY;
      } else {
        px[k] = py[k] = pz[k] = 0.f; pd[k] = -1.f;
      }
    }
  } else {
    for (int i = base; i < N; i += stride) D[i] = INFINITY;
  }
  float cx = X[0], cy = X[1], cz = X[2];
  if (rank == 0 && tid == 0) out[(int64_t)b * n] = 0;

  for (int it = 1; it < n; ++it) {
    float bd = -1.f, bx = 0.f, by = 0.f, bz = 0.f;
    int bi = INT_MAX;
    if constexpr (P > 0) {
#pragma unroll
      for (int k = 0; k < P; ++k) {
        int i = base + k * stride;
        if (i < N) {
          float d = fminf(pd[k], sqdist(px[k], py[k], pz[k], cx, cy, cz));
          pd[k] = d;
          if (d > bd) { bd = d; bi = i; bx = px[k]; by = py[k]; bz = pz[k]; }  // i ascends: ties keep the lower
        }
      }
    } else {
      for (int i = base; i < N; i += stride) {
        float x = X[3 * i], y = X[3 * i + 1], z = X[3 * i + 2];
        float d = fminf(D[i], sqdist(x, y, z, cx, cy, cz));
        D[i] = d;
        if (d > bd) { bd = d; bi = i; bx = x; by = y; bz = z; }
      }
    }
    fps_warp_reduce(bd, bi, bx, by, bz);
    if (lane == 0) { s_wd[warp] = bd; s_wi[warp] = bi; s_wx[warp] = bx; s_wy[warp] = by; s_wz[warp] = bz; }
    __syncthreads();
    const int par = it & 1;
    if (warp == 0) {
      if (lane < nwarps) { bd = s_wd[lane]; bi = s_wi[lane]; bx = s_wx[lane]; by = s_wy[lane]; bz = s_wz[lane]; }
      else { bd = -1.f; bi = INT_MAX; }
      fps_warp_reduce(bd, bi, bx, by, bz);
      if (lane == 0) { s_bd[par] = bd; s_bi[par] = bi; s_bx[par] = bx; s_by[par] = by; s_bz[par] = bz; }
    }
    cluster.sync();
    if (lane < csize) {
      bd = *cluster.map_shared_rank(&s_bd[par], lane);
      bi = *cluster.map_shared_rank(&s_bi[par], lane);
      bx = *cluster.map_shared_rank(&s_bx[par], lane);
      by = *cluster.map_shared_rank(&s_by[par], lane);
      bz = *cluster.map_shared_rank(&s_bz[par], lane);
    } else {
      bd = -1.f; bi = INT_MAX;
    }
    fps_warp_reduce(bd, bi, bx, by, bz, csize <= 1 ? 1 : (csize <= 2 ? 2 : (csize <= 4 ? 4 : (csize <= 8 ? 8 : 16))));
    bi = __shfl_sync(FULL, bi, 0); cx = __shfl_sync(FULL, bx, 0);
    cy = __shfl_sync(FULL, by, 0); cz = __shfl_sync(FULL, bz, 0);
    if (rank == 0 && tid == 0) out[(int64_t)b * n + it] = bi;
  }
  cluster.sync();  // no block may exit while others still read its shared memory
}

template <int P>
static void launch_fps(const at::Tensor& xyz, at::Tensor& scratch, int B, int N, int n, int csize, int T,
                       at::Tensor& out, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(B * csize);
  cfg.blockDim = dim3(T);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = csize;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  R1_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, (void*)fps_kernel<P>, &cfg));
  TORCH_CHECK(clusters > 0, "furthest_point_sample: no cluster of ", csize, " blocks x ", T,
              " threads fits on this GPU");
  float* sp = scratch.defined() ? scratch.data_ptr<float>() : nullptr;
  R1_CUDA_CHECK(cudaLaunchKernelEx(&cfg, fps_kernel<P>, (const float*)xyz.data_ptr<float>(), sp, N, n, csize,
                                   out.data_ptr<int64_t>()));
}

at::Tensor furthest_point_sample(const at::Tensor& xyz, int64_t n) {
  R1_CHECK_INPUT(xyz);
  TORCH_CHECK(xyz.dim() == 3 && xyz.size(2) == 3 && xyz.scalar_type() == at::kFloat, "xyz: (B, N, 3) float32");
  const c10::cuda::CUDAGuard guard(xyz.device());
  const int B = xyz.size(0), N = xyz.size(1);
  TORCH_CHECK(N < INT_MAX / 4 && n < INT_MAX, "furthest_point_sample: too many points");
  auto out = at::empty({B, n}, xyz.options().dtype(at::kLong));
  maybe_poison(out);
  if (B == 0 || n == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor scratch;
  int csize, P, T;
  if (N <= 1024 * 8) {
    csize = 1;
    P = N <= 1024 ? 1 : (N <= 2048 ? 2 : (N <= 4096 ? 4 : 8));
    T = (int)ceil_div(ceil_div(N, P), 32) * 32;
  } else if (N <= 8 * 1024 * 8) {
    csize = 8;
    P = N <= 8 * 1024 ? 1 : (N <= 8 * 2048 ? 2 : (N <= 8 * 4096 ? 4 : 8));
    T = (int)ceil_div(ceil_div(N, 8 * P), 32) * 32;
  } else {
    csize = 8; P = 0; T = 1024;
    scratch = at::empty({B, N}, xyz.options());
  }
  switch (P) {
    case 0: launch_fps<0>(xyz, scratch, B, N, (int)n, csize, T, out, stream); break;
    case 1: launch_fps<1>(xyz, scratch, B, N, (int)n, csize, T, out, stream); break;
    case 2: launch_fps<2>(xyz, scratch, B, N, (int)n, csize, T, out, stream); break;
    case 4: launch_fps<4>(xyz, scratch, B, N, (int)n, csize, T, out, stream); break;
    default: launch_fps<8>(xyz, scratch, B, N, (int)n, csize, T, out, stream); break;
  }
  R1_LAUNCH_CHECK();
  return out;
}

// Benchmark aid: the per-iteration critical path of fps_kernel without the distance work (warp
// reduce, block barrier, block reduce, cluster barrier, DSMEM read, final reduce) repeated
// `iters` times. Its time / iters is the sequential floor of one FPS iteration on this GPU.
__global__ void __launch_bounds__(1024, 1) sync_probe_kernel(int iters, int csize, float* out) {
  cg::cluster_group cluster = cg::this_cluster();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = (blockDim.x + 31) >> 5;
  __shared__ float s_w[32];
  __shared__ float s_b[2];
  float acc = 0.f;
  for (int it = 0; it < iters; ++it) {
    float v = (float)(tid ^ it);
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, off));
    if (lane == 0) s_w[warp] = v;
    __syncthreads();
    if (warp == 0) {
      v = lane < nwarps ? s_w[lane] : -1.f;
      for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, off));
      if (lane == 0) s_b[it & 1] = v;
    }
    cluster.sync();
    v = lane < csize ? *cluster.map_shared_rank(&s_b[it & 1], lane) : -1.f;
    for (int off = 4; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, off));
    acc += __shfl_sync(FULL, v, 0);
  }
  cluster.sync();
  if (tid == 0) out[blockIdx.x] = acc;
}

void sync_probe(int64_t iters, int64_t csize, int64_t threads, int64_t clusters, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(out.device());
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(clusters * csize));
  cfg.blockDim = dim3((unsigned)threads);
  cfg.stream = c10::cuda::getCurrentCUDAStream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = (unsigned)csize;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  R1_CUDA_CHECK(cudaLaunchKernelEx(&cfg, sync_probe_kernel, (int)iters, (int)csize, out.data_ptr<float>()));
}

// ---- ball query ------------------------------------------------------------------------------------
// One warp per centre; the block's warps share shared-memory tiles of the batch's points. Each
// 32-point chunk is tested by the warp at once; a ballot keeps the found indices in index order.
constexpr int BQ_WARPS = 16;
constexpr int BQ_TILE = 2048;

__global__ void __launch_bounds__(BQ_WARPS * 32)
ball_query_kernel(const float* __restrict__ xyz, const float* __restrict__ centers, int N, int S, float r2, int k,
                  int64_t* __restrict__ out) {
  __shared__ float sx[BQ_TILE], sy[BQ_TILE], sz[BQ_TILE];
  const int b = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int s = blockIdx.x * BQ_WARPS + warp;
  const bool active = s < S;
  const float* X = xyz + (int64_t)b * N * 3;
  float cx = 0.f, cy = 0.f, cz = 0.f;
  if (active) {
    const float* c = centers + ((int64_t)b * S + s) * 3;
    cx = c[0]; cy = c[1]; cz = c[2];
  }
  int64_t* o = out + ((int64_t)b * S + (active ? s : 0)) * k;
  int cnt = 0, first = -1;
  bool done = !active;
  for (int t0 = 0; t0 < N; t0 += BQ_TILE) {
    const int tn = min(BQ_TILE, N - t0);
    for (int j = tid; j < tn; j += blockDim.x) {
      const float* p = X + (int64_t)(t0 + j) * 3;
      sx[j] = p[0]; sy[j] = p[1]; sz[j] = p[2];
    }
    __syncthreads();
    if (!done) {
      for (int j0 = 0; j0 < tn; j0 += 32) {
        const int j = j0 + lane;
        const bool in = j < tn && sqdist(sx[j], sy[j], sz[j], cx, cy, cz) < r2;
        const unsigned m = __ballot_sync(FULL, in);
        if (m) {
          const int pos = cnt + __popc(m & ((1u << lane) - 1u));
          if (in && pos < k) o[pos] = t0 + j;
          if (cnt == 0) first = t0 + j0 + __ffs(m) - 1;
          cnt += __popc(m);
          if (cnt >= k) { done = true; break; }
        }
      }
    }
    if (__syncthreads_and(done)) break;
  }
  if (!active) return;
  if (cnt == 0) {  // empty ball: the nearest point, ties to the lower index
    float bd = INFINITY;
    int bi = INT_MAX;
    for (int j = lane; j < N; j += 32) {
      const float* p = X + (int64_t)j * 3;
      const float d = sqdist(p[0], p[1], p[2], cx, cy, cz);
      if (d < bd) { bd = d; bi = j; }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      float od = __shfl_xor_sync(FULL, bd, off);
      int oi = __shfl_xor_sync(FULL, bi, off);
      if (od < bd || (od == bd && oi < bi)) { bd = od; bi = oi; }
    }
    first = bi;
  }
  for (int pos = min(cnt, k) + lane; pos < k; pos += 32) o[pos] = first;
}

at::Tensor ball_query(const at::Tensor& xyz, const at::Tensor& centers, double r2, int64_t k) {
  R1_CHECK_INPUT(xyz);
  R1_CHECK_INPUT(centers);
  TORCH_CHECK(xyz.scalar_type() == at::kFloat && centers.scalar_type() == at::kFloat, "ball_query: float32 inputs");
  const c10::cuda::CUDAGuard guard(xyz.device());
  const int B = xyz.size(0), N = xyz.size(1), S = centers.size(1);
  auto out = at::empty({B, S, k}, xyz.options().dtype(at::kLong));
  maybe_poison(out);
  if (B == 0 || S == 0) return out;
  dim3 grid((unsigned)ceil_div(S, BQ_WARPS), B);
  ball_query_kernel<<<grid, BQ_WARPS * 32, 0, c10::cuda::getCurrentCUDAStream()>>>(
      xyz.data_ptr<float>(), centers.data_ptr<float>(), N, S, (float)r2, (int)k, out.data_ptr<int64_t>());
  R1_LAUNCH_CHECK();
  return out;
}

// ---- gather / group ------------------------------------------------------------------------------------
// out[b, m, :] = feat[b, idx[b, m], :]: a raw copy of each row with the widest aligned vector.
template <typename V>
__global__ void gather_rows_kernel(const V* __restrict__ feat, const int64_t* __restrict__ idx, int64_t B, int64_t N,
                                   int64_t M, int Cv, V* __restrict__ out) {
  const int64_t rows = B * M;
  if (Cv >= 32) {  // a warp per row
    const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
      const int64_t b = r / M;
      const V* src = feat + (b * N + idx[r]) * Cv;
      V* dst = out + r * Cv;
      for (int c = threadIdx.x & 31; c < Cv; c += 32) dst[c] = src[c];
    }
  } else {
    const int64_t total = rows * Cv;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
      const int64_t r = e / Cv;
      const int c = (int)(e - r * Cv);
      const int64_t b = r / M;
      out[e] = feat[(b * N + idx[r]) * Cv + c];
    }
  }
}

static int grid_for(int64_t work, int threads) {
  const int64_t blocks = ceil_div(work, threads);
  return (int)std::min<int64_t>(std::max<int64_t>(blocks, 1), 132 * 64);
}

at::Tensor gather_rows(const at::Tensor& feat, const at::Tensor& idx) {
  // feat (B, N, C) any dtype; idx (B, M) int64 -> (B, M, C)
  R1_CHECK_INPUT(feat);
  R1_CHECK_INPUT(idx);
  TORCH_CHECK(idx.scalar_type() == at::kLong, "idx: int64");
  const c10::cuda::CUDAGuard guard(feat.device());
  const int64_t B = feat.size(0), N = feat.size(1), C = feat.size(2), M = idx.size(1);
  auto out = at::empty({B, M, C}, feat.options());
  maybe_poison(out);
  if (out.numel() == 0) return out;
  const int64_t row_bytes = C * feat.element_size();
  const auto fp = reinterpret_cast<uintptr_t>(feat.data_ptr()), op = reinterpret_cast<uintptr_t>(out.data_ptr());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int threads = 256;
  auto go = [&](auto vec) {
    using V = decltype(vec);
    const int Cv = (int)(row_bytes / sizeof(V));
    const int64_t work = Cv >= 32 ? B * M * 32 : B * M * Cv;
    gather_rows_kernel<V><<<grid_for(work, threads), threads, 0, stream>>>(
        reinterpret_cast<const V*>(feat.data_ptr()), idx.data_ptr<int64_t>(), B, N, M, Cv, reinterpret_cast<V*>(out.data_ptr()));
  };
  if (row_bytes % 16 == 0 && fp % 16 == 0 && op % 16 == 0) go(uint4{});
  else if (row_bytes % 8 == 0 && fp % 8 == 0 && op % 8 == 0) go(uint2{});
  else if (row_bytes % 4 == 0 && fp % 4 == 0 && op % 4 == 0) go(uint32_t{});
  else if (row_bytes % 2 == 0) go(uint16_t{});
  else go(uint8_t{});
  R1_LAUNCH_CHECK();
  return out;
}

// grad_feat[b, idx[b, m], c] += grad_out[b, m, c] (atomics; float32 uses 16-byte vector atomics on sm_90)
template <typename scalar_t>
__global__ void scatter_add_rows_kernel(const scalar_t* __restrict__ g, const int64_t* __restrict__ idx, int64_t B,
                                        int64_t N, int64_t M, int64_t C, scalar_t* __restrict__ gf) {
  const int64_t total = B * M * C;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / C, c = e - r * C, b = r / M;
    atomicAdd(gf + (b * N + idx[r]) * C + c, g[e]);
  }
}

__global__ void scatter_add_rows_f4_kernel(const float4* __restrict__ g, const int64_t* __restrict__ idx, int64_t B,
                                           int64_t N, int64_t M, int Cv, float4* __restrict__ gf) {
  const int64_t total = B * M * Cv;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / Cv, c = e - r * Cv, b = r / M;
    float4* dst = gf + (b * N + idx[r]) * Cv + c;
    const float4 v = g[e];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(dst, v);
#else
    float* d = reinterpret_cast<float*>(dst);
    atomicAdd(d, v.x); atomicAdd(d + 1, v.y); atomicAdd(d + 2, v.z); atomicAdd(d + 3, v.w);
#endif
  }
}

at::Tensor scatter_add_rows(const at::Tensor& grad_out, const at::Tensor& idx, int64_t N) {
  // grad_out (B, M, C) float32/float64, idx (B, M) -> (B, N, C)
  R1_CHECK_INPUT(grad_out);
  R1_CHECK_INPUT(idx);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t B = grad_out.size(0), M = grad_out.size(1), C = grad_out.size(2);
  auto gf = at::zeros({B, N, C}, grad_out.options());
  if (grad_out.numel() == 0) return gf;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int threads = 256;
  if (grad_out.scalar_type() == at::kFloat && C % 4 == 0 &&
      reinterpret_cast<uintptr_t>(grad_out.data_ptr()) % 16 == 0) {
    const int Cv = (int)(C / 4);
    scatter_add_rows_f4_kernel<<<grid_for(B * M * Cv, threads), threads, 0, stream>>>(
        reinterpret_cast<const float4*>(grad_out.data_ptr()), idx.data_ptr<int64_t>(), B, N, M, Cv,
        reinterpret_cast<float4*>(gf.data_ptr()));
  } else {
    AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "scatter_add_rows", [&] {
      scatter_add_rows_kernel<scalar_t><<<grid_for(B * M * C, threads), threads, 0, stream>>>(
          grad_out.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), B, N, M, C, gf.data_ptr<scalar_t>());
    });
  }
  R1_LAUNCH_CHECK();
  return gf;
}

// ---- three-NN ---------------------------------------------------------------------------------------------
constexpr int NN_THREADS = 256;
constexpr int NN_TILE = 1024;

__global__ void __launch_bounds__(NN_THREADS)
three_nn_kernel(const float* __restrict__ unknown, const float* __restrict__ known, int n, int m,
                float* __restrict__ dist, int64_t* __restrict__ idx) {
  __shared__ float sx[NN_TILE], sy[NN_TILE], sz[NN_TILE];
  const int b = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = i < n;
  float ux = 0.f, uy = 0.f, uz = 0.f;
  if (active) {
    const float* u = unknown + ((int64_t)b * n + i) * 3;
    ux = u[0]; uy = u[1]; uz = u[2];
  }
  const float* Kp = known + (int64_t)b * m * 3;
  float d1 = INFINITY, d2 = INFINITY, d3 = INFINITY;
  int i1 = 0, i2 = 0, i3 = 0;
  for (int t0 = 0; t0 < m; t0 += NN_TILE) {
    const int tn = min(NN_TILE, m - t0);
    __syncthreads();
    for (int j = threadIdx.x; j < tn; j += blockDim.x) {
      const float* p = Kp + (int64_t)(t0 + j) * 3;
      sx[j] = p[0]; sy[j] = p[1]; sz[j] = p[2];
    }
    __syncthreads();
    if (active) {
      for (int j = 0; j < tn; ++j) {
        const float d = sqdist(sx[j], sy[j], sz[j], ux, uy, uz);   // known - unknown, as the reference
        if (d < d3) {
          const int jj = t0 + j;
          if (d < d2) {
            d3 = d2; i3 = i2;
            if (d < d1) { d2 = d1; i2 = i1; d1 = d; i1 = jj; }
            else { d2 = d; i2 = jj; }
          } else { d3 = d; i3 = jj; }
        }
      }
    }
  }
  if (!active) return;
  const int64_t o = ((int64_t)b * n + i) * 3;
  dist[o] = sqrtf(d1); dist[o + 1] = sqrtf(d2); dist[o + 2] = sqrtf(d3);
  idx[o] = i1; idx[o + 1] = i2; idx[o + 2] = i3;
}

std::vector<at::Tensor> three_nn(const at::Tensor& unknown, const at::Tensor& known) {
  R1_CHECK_INPUT(unknown);
  R1_CHECK_INPUT(known);
  TORCH_CHECK(unknown.scalar_type() == at::kFloat && known.scalar_type() == at::kFloat, "three_nn: float32 inputs");
  const c10::cuda::CUDAGuard guard(unknown.device());
  const int B = unknown.size(0), n = unknown.size(1), m = known.size(1);
  auto dist = at::empty({B, n, 3}, unknown.options());
  maybe_poison(dist);
  auto idx = at::empty({B, n, 3}, unknown.options().dtype(at::kLong));
  maybe_poison(idx);
  if (B == 0 || n == 0) return {dist, idx};
  dim3 grid((unsigned)ceil_div(n, NN_THREADS), B);
  three_nn_kernel<<<grid, NN_THREADS, 0, c10::cuda::getCurrentCUDAStream()>>>(
      unknown.data_ptr<float>(), known.data_ptr<float>(), n, m, dist.data_ptr<float>(), idx.data_ptr<int64_t>());
  R1_LAUNCH_CHECK();
  return {dist, idx};
}

// ---- three-interpolate -----------------------------------------------------------------------------------
template <typename scalar_t>
__global__ void three_interp_fwd_kernel(const scalar_t* __restrict__ feat, const int64_t* __restrict__ idx,
                                        const scalar_t* __restrict__ w, int64_t B, int64_t m, int64_t n, int64_t C,
                                        scalar_t* __restrict__ out) {
  const int64_t total = B * n * C;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / C, c = e - r * C, b = r / n;
    const scalar_t* f = feat + b * m * C + c;
    const int64_t* ii = idx + r * 3;
    const scalar_t* ww = w + r * 3;
    out[e] = ww[0] * f[ii[0] * C] + ww[1] * f[ii[1] * C] + ww[2] * f[ii[2] * C];
  }
}

template <typename scalar_t>
__global__ void three_interp_bwd_feat_kernel(const scalar_t* __restrict__ g, const int64_t* __restrict__ idx,
                                             const scalar_t* __restrict__ w, int64_t B, int64_t m, int64_t n,
                                             int64_t C, scalar_t* __restrict__ gf) {
  const int64_t total = B * n * C;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / C, c = e - r * C, b = r / n;
    scalar_t* f = gf + b * m * C + c;
    const scalar_t gv = g[e];
#pragma unroll
    for (int j = 0; j < 3; ++j) atomicAdd(f + idx[r * 3 + j] * C, w[r * 3 + j] * gv);
  }
}

// grad_w[b, i, j] = sum_c g[b, i, c] * feat[b, idx[b, i, j], c]: one warp per (b, i)
template <typename scalar_t>
__global__ void three_interp_bwd_w_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ feat,
                                          const int64_t* __restrict__ idx, int64_t B, int64_t m, int64_t n, int64_t C,
                                          scalar_t* __restrict__ gw) {
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
  const int lane = threadIdx.x & 31;
  for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < B * n; r += warps) {
    const int64_t b = r / n;
    const scalar_t* gr = g + r * C;
    scalar_t acc[3] = {0, 0, 0};
    for (int64_t c = lane; c < C; c += 32) {
      const scalar_t gv = gr[c];
#pragma unroll
      for (int j = 0; j < 3; ++j) acc[j] += gv * feat[(b * m + idx[r * 3 + j]) * C + c];
    }
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      scalar_t v = acc[j];
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL, v, off);
      if (lane == 0) gw[r * 3 + j] = v;
    }
  }
}

at::Tensor three_interpolate(const at::Tensor& feat, const at::Tensor& idx, const at::Tensor& w) {
  R1_CHECK_INPUT(feat);
  R1_CHECK_INPUT(idx);
  R1_CHECK_INPUT(w);
  const c10::cuda::CUDAGuard guard(feat.device());
  const int64_t B = feat.size(0), m = feat.size(1), C = feat.size(2), n = idx.size(1);
  auto out = at::empty({B, n, C}, feat.options());
  maybe_poison(out);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "three_interpolate", [&] {
    three_interp_fwd_kernel<scalar_t><<<grid_for(B * n * C, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        feat.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), w.data_ptr<scalar_t>(), B, m, n, C, out.data_ptr<scalar_t>());
  });
  R1_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> three_interpolate_backward(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& idx,
                                                   const at::Tensor& w, bool need_feat, bool need_w) {
  R1_CHECK_INPUT(grad);
  R1_CHECK_INPUT(feat);
  R1_CHECK_INPUT(idx);
  R1_CHECK_INPUT(w);
  const c10::cuda::CUDAGuard guard(feat.device());
  const int64_t B = feat.size(0), m = feat.size(1), C = feat.size(2), n = idx.size(1);
  at::Tensor gf, gw;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "three_interpolate_backward", [&] {
    if (need_feat) {
      gf = at::zeros_like(feat);
      if (grad.numel())
        three_interp_bwd_feat_kernel<scalar_t><<<grid_for(B * n * C, 256), 256, 0, stream>>>(
            grad.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), w.data_ptr<scalar_t>(), B, m, n, C, gf.data_ptr<scalar_t>());
    }
    if (need_w) {
      gw = at::empty_like(w);
      maybe_poison(gw);
      if (w.numel())
        three_interp_bwd_w_kernel<scalar_t><<<grid_for(B * n * 32, 256), 256, 0, stream>>>(
            grad.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), B, m, n, C, gw.data_ptr<scalar_t>());
    }
  });
  R1_LAUNCH_CHECK();
  return {gf, gw};
}

}  // namespace r1
