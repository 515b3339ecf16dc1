// Voxel hashing on the GPU: voxel downsampling (hash insert + first index + scatter-add) and the
// RGB-D fusion map (check pass + integrate pass with a persistent hash table and warp-aggregated
// float64 atomics). The per-pixel arithmetic mirrors r1_core/geometry/fusion.py exactly.
#include <climits>
#include "common.cuh"

namespace r1 {
constexpr unsigned long long EMPTY_KEY = 0xffffffffffffffffull;
constexpr unsigned long long HASH_MUL = 0x9E3779B97F4A7C15ull;
constexpr unsigned VFULL = 0xffffffffu;

__device__ __forceinline__ int64_t hash_pos(unsigned long long key, int bits) {
  return (int64_t)((key * HASH_MUL) >> (64 - bits));
}

// ---- voxel downsampling ----------------------------------------------------------------------------
__global__ void vd_insert_kernel(const int64_t* __restrict__ keys, int64_t N, unsigned long long* __restrict__ table,
                                 int bits, long long* __restrict__ first, int64_t* __restrict__ pos_out) {
  const int64_t mask = (1ll << bits) - 1;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x) {
    const unsigned long long key = (unsigned long long)keys[i];
    int64_t p = hash_pos(key, bits);
    while (true) {
      const unsigned long long old = atomicCAS(table + p, EMPTY_KEY, key);
      if (old == EMPTY_KEY || old == key) break;
      p = (p + 1) & mask;
    }
    pos_out[i] = p;
    atomicMin(first + p, (long long)i);
  }
}

template <typename scalar_t>
__global__ void vd_scatter_kernel(const scalar_t* __restrict__ pts, const int64_t* __restrict__ ids, int64_t N, int D,
                                  double* __restrict__ sums) {
  const int64_t total = N * D;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / D;
    const int d = (int)(e - i * D);
    atomicAdd(sums + ids[i] * D + d, (double)pts[e]);
  }
}

std::vector<at::Tensor> voxel_hash_insert(const at::Tensor& keys, int64_t bits) {
  // -> (table positions of each key (N,), first point index per table entry (T,), INT64_MAX = empty)
  R1_CHECK_INPUT(keys);
  const c10::cuda::CUDAGuard guard(keys.device());
  const int64_t N = keys.size(0), T = 1ll << bits;
  auto table = at::full({T}, -1, keys.options());
  auto first = at::full({T}, LLONG_MAX, keys.options());
  auto pos = at::empty({N}, keys.options());
  maybe_poison(pos);
  if (N) {
    const int threads = 256;
    const int blocks = (int)std::min<int64_t>(ceil_div(N, threads), 132 * 32);
    vd_insert_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        keys.data_ptr<int64_t>(), N, reinterpret_cast<unsigned long long*>(table.data_ptr<int64_t>()), (int)bits,
        reinterpret_cast<long long*>(first.data_ptr<int64_t>()), pos.data_ptr<int64_t>());
    R1_LAUNCH_CHECK();
  }
  return {pos, first};
}

at::Tensor voxel_scatter_sum(const at::Tensor& pts, const at::Tensor& ids, int64_t M) {
  R1_CHECK_INPUT(pts);
  R1_CHECK_INPUT(ids);
  const c10::cuda::CUDAGuard guard(pts.device());
  const int64_t N = pts.size(0), D = pts.size(1);
  auto sums = at::zeros({M, D}, pts.options().dtype(at::kDouble));
  if (N == 0) return sums;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(ceil_div(N * D, threads), 132 * 32);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pts.scalar_type(), "voxel_scatter_sum", [&] {
    vd_scatter_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pts.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(), N, (int)D, sums.data_ptr<double>());
  });
  R1_LAUNCH_CHECK();
  return sums;
}

// ---- fusion map ------------------------------------------------------------------------------------------
struct FuseParams {
  int W, hs, ws, stride;             // full width; strided height/width; pixel stride
  int depth_u16;                     // 1: uint16 units, 0: float32 metres
  float depth_scale, min_depth, max_depth, edge_thr, voxel;
  float R[9], t[3];
  int crop;
  float lo[3], hi[3];
  int weighting;                     // 0 uniform, 1 inverse depth squared
  int frame;
  int key_limit, key_offset, key_bits;
};

// Depth (metres) of strided pixel (v, u), NaN where the raw value is invalid (as depth_metres()).
__device__ __forceinline__ float fuse_depth(const FuseParams& P, const void* depth, int v, int u) {
  const int64_t off = (int64_t)(v * P.stride) * P.W + (int64_t)u * P.stride;
  if (P.depth_u16) {
    const uint16_t d = reinterpret_cast<const uint16_t*>(depth)[off];
    return d ? __fmul_rn((float)d, P.depth_scale) : NAN;
  }
  const float z = reinterpret_cast<const float*>(depth)[off];
  return (z > 0.f && z < INFINITY) ? z : NAN;
}

// Status: 0 invalid, 1 valid (p, key set), 2 out of key range.
__device__ __forceinline__ int fuse_pixel(const FuseParams& P, const void* depth, const float* rx, const float* ry,
                                          int v, int u, float& z, float p[3], unsigned long long& key) {
  z = fuse_depth(P, depth, v, u);
  if (!(z >= P.min_depth && z <= P.max_depth)) return 0;
  if (P.edge_thr > 0.f) {
    const float lim = __fmul_rn(z, P.edge_thr);
    const int nv[4] = {v, v, v - 1, v + 1}, nu[4] = {u - 1, u + 1, u, u};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (nv[q] < 0 || nv[q] >= P.hs || nu[q] < 0 || nu[q] >= P.ws) continue;
      const float zn = fuse_depth(P, depth, nv[q], nu[q]);
      if (fabsf(__fsub_rn(z, zn)) > lim) return 0;      // NaN neighbours never trigger
    }
  }
  const int64_t r = (int64_t)(v * P.stride) * P.W + (int64_t)u * P.stride;
  const float x = __fmul_rn(z, rx[r]), y = __fmul_rn(z, ry[r]);
#pragma unroll
  for (int i = 0; i < 3; ++i)
    p[i] = __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(x, P.R[3 * i]), __fmul_rn(y, P.R[3 * i + 1])), __fmul_rn(z, P.R[3 * i + 2])), P.t[i]);
  if (P.crop) {
#pragma unroll
    for (int i = 0; i < 3; ++i)
      if (!(p[i] >= P.lo[i] && p[i] <= P.hi[i])) return 0;
  }
  key = 0;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const float f = floorf(__fdiv_rn(p[i], P.voxel));
    if (f < (float)-P.key_limit || f > (float)P.key_limit) return 2;
    key = (key << P.key_bits) | (unsigned long long)((long long)f + P.key_offset);
  }
  return 1;
}

__global__ void fuse_check_kernel(FuseParams P, const void* __restrict__ depth, const float* __restrict__ rx,
                                  const float* __restrict__ ry, int* __restrict__ counters) {
  const int64_t n = (int64_t)P.hs * P.ws;
  const int lane = threadIdx.x & 31;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e - lane < n; e += (int64_t)gridDim.x * blockDim.x) {
    int st = 0;
    if (e < n) {
      float z, p[3];
      unsigned long long key;
      st = fuse_pixel(P, depth, rx, ry, (int)(e / P.ws), (int)(e % P.ws), z, p, key);
    }
    const unsigned valid = __ballot_sync(VFULL, st == 1), bad = __ballot_sync(VFULL, st == 2);
    if (lane == 0) {
      if (valid) atomicAdd(counters, __popc(valid));
      if (bad) atomicOr(counters + 1, 1);
    }
  }
}

struct FuseMap {
  unsigned long long* tkeys;         // (T,) hash table keys
  int* tslot;                        // (T,) slot of each table entry, -1 until published
  int bits;
  int64_t* slot_keys;                // (cap,)
  double* sums;                      // (7, cap) channel-major: w, wx, wy, wz, wr, wg, wb
  int* obs;                          // (cap,)
  int* last;                         // (cap,)
  int* counter;                      // [0] voxels in use, [1] overflow flag
  int cap;
};

__device__ int fuse_find_or_insert(const FuseMap& M, unsigned long long key) {
  const int64_t mask = (1ll << M.bits) - 1;
  int64_t p = hash_pos(key, M.bits);
  while (true) {
    const unsigned long long k = *reinterpret_cast<volatile unsigned long long*>(M.tkeys + p);
    if (k == key) break;
    if (k == EMPTY_KEY) {
      const unsigned long long old = atomicCAS(M.tkeys + p, EMPTY_KEY, key);
      if (old == EMPTY_KEY) {                   // we own the new entry: allocate its slot
        const int s = atomicAdd(M.counter, 1);
        if (s >= M.cap) {                       // cannot happen (capacity is checked per frame); never hang
          atomicOr(M.counter + 1, 1);
          atomicExch(M.tslot + p, INT_MAX);
          return -1;
        }
        M.slot_keys[s] = (int64_t)key;
        __threadfence();
        atomicExch(M.tslot + p, s);
        return s;
      }
      if (old == key) break;
    }
    p = (p + 1) & mask;
  }
  int s;
  while ((s = *reinterpret_cast<volatile int*>(M.tslot + p)) < 0) __nanosleep(20);
  return s == INT_MAX ? -1 : s;
}

__global__ void __launch_bounds__(256)
fuse_integrate_kernel(FuseParams P, FuseMap M, const void* __restrict__ depth, const uint8_t* __restrict__ color,
                      const float* __restrict__ rx, const float* __restrict__ ry) {
  // One thread per strided pixel, rows padded to warps so a warp's lanes are consecutive pixels
  // of one row: runs of equal voxels are summed with a segmented warp scan before the atomics.
  const int wpr = (P.ws + 31) / 32;                       // warps per row
  const int64_t nwarps = (int64_t)P.hs * wpr;
  const int lane = threadIdx.x & 31;
  for (int64_t wg = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; wg < nwarps;
       wg += (int64_t)gridDim.x * blockDim.x / 32) {
    const int v = (int)(wg / wpr);
    const int u = (int)(wg % wpr) * 32 + lane;
    int slot = -1;
    double val[7] = {0, 0, 0, 0, 0, 0, 0};
    if (u < P.ws) {
      float z, p[3];
      unsigned long long key;
      if (fuse_pixel(P, depth, rx, ry, v, u, z, p, key) == 1) {
        slot = fuse_find_or_insert(M, key);
        const double w = P.weighting ? (double)__fdiv_rn(1.f, __fmul_rn(z, z)) : 1.0;
        const uint8_t* c = color + ((int64_t)(v * P.stride) * P.W + (int64_t)u * P.stride) * 3;
        val[0] = w;
        val[1] = w * (double)p[0]; val[2] = w * (double)p[1]; val[3] = w * (double)p[2];
        val[4] = w * (double)c[0]; val[5] = w * (double)c[1]; val[6] = w * (double)c[2];
      }
    }
    // runs of consecutive lanes with one slot: head lanes end up with the run's sums
    const int prev = __shfl_up_sync(VFULL, slot, 1);
    const bool head = lane == 0 || prev != slot;
    const unsigned heads = __ballot_sync(VFULL, head);
    const int run = __popc(heads & (0xffffffffu >> (31 - lane)));   // run id of this lane (1-based)
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int orun = __shfl_down_sync(VFULL, run, off);
      const bool same = lane + off < 32 && orun == run;
#pragma unroll
      for (int j = 0; j < 7; ++j) {
        const double o = __shfl_down_sync(VFULL, val[j], off);
        if (same) val[j] += o;
      }
    }
    if (head && slot >= 0) {
#pragma unroll
      for (int j = 0; j < 7; ++j) atomicAdd(M.sums + (int64_t)j * M.cap + slot, val[j]);
      if (atomicExch(M.last + slot, P.frame) != P.frame) atomicAdd(M.obs + slot, 1);
    }
  }
}

__global__ void fuse_rebuild_kernel(FuseMap M, int64_t n) {
  const int64_t mask = (1ll << M.bits) - 1;
  for (int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; s < n; s += (int64_t)gridDim.x * blockDim.x) {
    const unsigned long long key = (unsigned long long)M.slot_keys[s];
    int64_t p = hash_pos(key, M.bits);
    while (atomicCAS(M.tkeys + p, EMPTY_KEY, key) != EMPTY_KEY) p = (p + 1) & mask;
    M.tslot[p] = (int)s;
  }
}

static FuseMap make_map(at::Tensor& tkeys, at::Tensor& tslot, at::Tensor& slot_keys, at::Tensor& sums, at::Tensor& obs,
                        at::Tensor& last, at::Tensor& counter) {
  FuseMap M;
  M.tkeys = reinterpret_cast<unsigned long long*>(tkeys.data_ptr<int64_t>());
  M.tslot = tslot.data_ptr<int>();
  int bits = 0;
  while ((1ll << bits) < tkeys.numel()) ++bits;
  M.bits = bits;
  M.slot_keys = slot_keys.data_ptr<int64_t>();
  M.sums = sums.data_ptr<double>();
  M.obs = obs.data_ptr<int>();
  M.last = last.data_ptr<int>();
  M.counter = counter.data_ptr<int>();
  M.cap = (int)slot_keys.numel();
  return M;
}

static FuseParams make_params(const at::Tensor& depth, int stride, const std::vector<double>& f,
                              const at::Tensor* color) {
  // f: depth_scale, min, max, edge, voxel, R(9), t(3), crop, lo(3), hi(3), weighting, frame, key_limit, key_offset, key_bits
  TORCH_CHECK(f.size() == 29, "fusion params: expected 29 numbers, got ", f.size());
  FuseParams P;
  const int H = depth.size(0), W = depth.size(1);
  P.W = W; P.stride = stride;
  P.hs = (H + stride - 1) / stride; P.ws = (W + stride - 1) / stride;
  // uint16 depth arrives as int16 (same bits; torch's uint16 support is minimal) or uint16
  P.depth_u16 = (depth.scalar_type() == at::kShort || depth.scalar_type() == at::kUInt16) ? 1 : 0;
  TORCH_CHECK(P.depth_u16 || depth.scalar_type() == at::kFloat, "depth: int16/uint16 (mm bits) or float32 (m)");
  if (color != nullptr)  // fusion_check reads depth only
    TORCH_CHECK(color->dim() == 3 && color->size(0) == H && color->size(1) == W && color->size(2) == 3 &&
                color->scalar_type() == at::kByte, "color: (H, W, 3) uint8");
  P.depth_scale = (float)f[0]; P.min_depth = (float)f[1]; P.max_depth = (float)f[2];
  P.edge_thr = (float)f[3]; P.voxel = (float)f[4];
  for (int i = 0; i < 9; ++i) P.R[i] = (float)f[5 + i];
  for (int i = 0; i < 3; ++i) P.t[i] = (float)f[14 + i];
  P.crop = (int)f[17];
  for (int i = 0; i < 3; ++i) { P.lo[i] = (float)f[18 + i]; P.hi[i] = (float)f[21 + i]; }
  P.weighting = (int)f[24]; P.frame = (int)f[25];
  P.key_limit = (int)f[26]; P.key_offset = (int)f[27]; P.key_bits = (int)f[28];
  return P;
}

at::Tensor fusion_check(const at::Tensor& depth, const at::Tensor& rx, const at::Tensor& ry, int64_t stride,
                        const std::vector<double>& f) {
  R1_CHECK_INPUT(depth);
  R1_CHECK_INPUT(rx);
  R1_CHECK_INPUT(ry);
  const c10::cuda::CUDAGuard guard(depth.device());
  FuseParams P = make_params(depth, (int)stride, f, nullptr);
  auto counters = at::zeros({2}, depth.options().dtype(at::kInt));
  const int64_t n = (int64_t)P.hs * P.ws;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(ceil_div(n, threads), 132 * 16);
  fuse_check_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(P, depth.data_ptr(), rx.data_ptr<float>(),
                                                                              ry.data_ptr<float>(), counters.data_ptr<int>());
  R1_LAUNCH_CHECK();
  return counters;
}

void fusion_integrate(const at::Tensor& color, const at::Tensor& depth, const at::Tensor& rx, const at::Tensor& ry,
                      int64_t stride, const std::vector<double>& f, at::Tensor tkeys, at::Tensor tslot, at::Tensor slot_keys,
                      at::Tensor sums, at::Tensor obs, at::Tensor last, at::Tensor counter) {
  R1_CHECK_INPUT(color);
  R1_CHECK_INPUT(depth);
  const c10::cuda::CUDAGuard guard(depth.device());
  FuseParams P = make_params(depth, (int)stride, f, &color);
  FuseMap M = make_map(tkeys, tslot, slot_keys, sums, obs, last, counter);
  const int64_t nwarps = (int64_t)P.hs * ((P.ws + 31) / 32);
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(ceil_div(nwarps * 32, threads), 132 * 16);
  fuse_integrate_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      P, M, depth.data_ptr(), color.data_ptr<uint8_t>(), rx.data_ptr<float>(), ry.data_ptr<float>());
  R1_LAUNCH_CHECK();
}

void fusion_rebuild(at::Tensor tkeys, at::Tensor tslot, at::Tensor slot_keys, at::Tensor sums, at::Tensor obs,
                    at::Tensor last, at::Tensor counter, int64_t n) {
  const c10::cuda::CUDAGuard guard(tkeys.device());
  tkeys.fill_(-1);
  tslot.fill_(-1);
  FuseMap M = make_map(tkeys, tslot, slot_keys, sums, obs, last, counter);
  if (n > 0) {
    const int threads = 256;
    const int blocks = (int)std::min<int64_t>(ceil_div(n, threads), 132 * 16);
    fuse_rebuild_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(M, n);
    R1_LAUNCH_CHECK();
  }
}

}  // namespace r1
