// 3D box IoU / GIoU (upright boxes, yaw about +z) and points-in-boxes masks.
// IoU runs in float64, one thread per pair, with the reference's algorithm: the xy intersection
// polygon from corners inside the other box plus edge crossings, ordered by angle, shoelace
// area; GIoU encloses with the axis-aligned rectangle ("aabb") or the convex hull ("hull").
#include "common.cuh"

namespace r1 {
constexpr double BOX_EPS = 1e-9;

struct Box7 {
  double cx, cy, cz, dx, dy, dz, yaw;
};

template <typename scalar_t>
__device__ __forceinline__ Box7 load_box(const scalar_t* p) {
  return {(double)p[0], (double)p[1], (double)p[2], (double)p[3], (double)p[4], (double)p[5], (double)p[6]};
}

__device__ __forceinline__ void rect_xy(const Box7& b, double* x, double* y) {
  const double c = cos(b.yaw), s = sin(b.yaw);
  const double sx[4] = {-0.5, 0.5, 0.5, -0.5}, sy[4] = {-0.5, -0.5, 0.5, 0.5};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const double lx = sx[i] * b.dx, ly = sy[i] * b.dy;
    x[i] = b.cx + c * lx - s * ly;
    y[i] = b.cy + s * lx + c * ly;
  }
}

__device__ __forceinline__ bool inside_rect(double px, double py, const Box7& b) {
  const double c = cos(b.yaw), s = sin(b.yaw);
  const double dx = px - b.cx, dy = py - b.cy;
  const double lx = c * dx + s * dy, ly = -s * dx + c * dy;
  return fabs(lx) <= b.dx * 0.5 + BOX_EPS && fabs(ly) <= b.dy * 0.5 + BOX_EPS;
}

__device__ __forceinline__ double cross2(double ax, double ay, double bx, double by) { return ax * by - ay * bx; }

__device__ double intersection_area_xy(const Box7& a, const Box7& b) {
  if (a.dx * a.dy <= 0.0 || b.dx * b.dy <= 0.0) return 0.0;
  double ax[4], ay[4], bx[4], by[4];
  rect_xy(a, ax, ay);
  rect_xy(b, bx, by);
  double px[24], py[24];
  int n = 0;
  for (int i = 0; i < 4; ++i)
    if (inside_rect(ax[i], ay[i], b)) { px[n] = ax[i]; py[n] = ay[i]; ++n; }
  for (int i = 0; i < 4; ++i)
    if (inside_rect(bx[i], by[i], a)) { px[n] = bx[i]; py[n] = by[i]; ++n; }
  for (int i = 0; i < 4; ++i) {
    const double rx = ax[(i + 1) & 3] - ax[i], ry = ay[(i + 1) & 3] - ay[i];
    const double rn = sqrt(rx * rx + ry * ry);
    for (int j = 0; j < 4; ++j) {
      const double sx = bx[(j + 1) & 3] - bx[j], sy = by[(j + 1) & 3] - by[j];
      const double rxs = cross2(rx, ry, sx, sy);
      if (!(fabs(rxs) > 1e-12 * fmax(rn * sqrt(sx * sx + sy * sy), 1e-300))) continue;
      const double qx = bx[j] - ax[i], qy = by[j] - ay[i];
      const double t = cross2(qx, qy, sx, sy) / rxs, u = cross2(qx, qy, rx, ry) / rxs;
      if (t >= -BOX_EPS && t <= 1 + BOX_EPS && u >= -BOX_EPS && u <= 1 + BOX_EPS) {
        px[n] = ax[i] + t * rx; py[n] = ay[i] + t * ry; ++n;
      }
    }
  }
  if (n < 3) return 0.0;
  double mx = 0.0, my = 0.0;
  for (int i = 0; i < n; ++i) { mx += px[i]; my += py[i]; }
  mx /= n; my /= n;
  double ang[24];
  for (int i = 0; i < n; ++i) ang[i] = atan2(py[i] - my, px[i] - mx);
  for (int i = 1; i < n; ++i) {  // insertion sort by angle
    const double a0 = ang[i], x0 = px[i], y0 = py[i];
    int j = i - 1;
    while (j >= 0 && ang[j] > a0) { ang[j + 1] = ang[j]; px[j + 1] = px[j]; py[j + 1] = py[j]; --j; }
    ang[j + 1] = a0; px[j + 1] = x0; py[j + 1] = y0;
  }
  double area = 0.0;
  for (int i = 0; i < n; ++i) {
    const int k = (i + 1 == n) ? 0 : i + 1;
    area += px[i] * py[k] - px[k] * py[i];
  }
  return 0.5 * fabs(area);
}

// Area of the convex hull of both rectangles' corners (Andrew's monotone chain; collinear
// points popped with cross <= 0, as the reference).
__device__ double hull_area_xy(const Box7& a, const Box7& b) {
  double x[8], y[8];
  rect_xy(a, x, y);
  rect_xy(b, x + 4, y + 4);
  for (int i = 1; i < 8; ++i) {  // lexicographic (x, y)
    const double x0 = x[i], y0 = y[i];
    int j = i - 1;
    while (j >= 0 && (x[j] > x0 || (x[j] == x0 && y[j] > y0))) { x[j + 1] = x[j]; y[j + 1] = y[j]; --j; }
    x[j + 1] = x0; y[j + 1] = y0;
  }
  double area = 0.0;
  for (int pass = 0; pass < 2; ++pass) {
    int st[8], top = 0;
    for (int q = 0; q < 8; ++q) {
      const int i = pass == 0 ? q : 7 - q;
      while (top >= 2) {
        const int i0 = st[top - 2], i1 = st[top - 1];
        if (cross2(x[i1] - x[i0], y[i1] - y[i0], x[i] - x[i0], y[i] - y[i0]) <= 0) --top;
        else break;
      }
      st[top++] = i;
    }
    for (int k = 0; k + 1 < top; ++k) area += cross2(x[st[k]], y[st[k]], x[st[k + 1]], y[st[k + 1]]);
  }
  return 0.5 * fabs(area);
}

// mode: 0 IoU, 1 GIoU with the axis-aligned enclosure, 2 GIoU with the convex-hull enclosure
__device__ double box_metric(const Box7& a, const Box7& b, int mode) {
  const double zlo = fmax(a.cz - a.dz * 0.5, b.cz - b.dz * 0.5), zhi = fmin(a.cz + a.dz * 0.5, b.cz + b.dz * 0.5);
  const double zo = fmax(zhi - zlo, 0.0);
  double inter;
  const bool aligned = a.yaw == 0.0 && b.yaw == 0.0;
  if (aligned) {
    const double ox = fmax(fmin(a.cx + a.dx * 0.5, b.cx + b.dx * 0.5) - fmax(a.cx - a.dx * 0.5, b.cx - b.dx * 0.5), 0.0);
    const double oy = fmax(fmin(a.cy + a.dy * 0.5, b.cy + b.dy * 0.5) - fmax(a.cy - a.dy * 0.5, b.cy - b.dy * 0.5), 0.0);
    inter = ox * oy * zo;
  } else {
    inter = zo > 0.0 ? intersection_area_xy(a, b) * zo : 0.0;
  }
  const double va = a.dx * a.dy * a.dz, vb = b.dx * b.dy * b.dz;
  const double uni = va + vb - inter;
  const double iou = uni > 0.0 ? inter / uni : 0.0;
  if (mode == 0) return iou;
  const double zc = fmax(a.cz + a.dz * 0.5, b.cz + b.dz * 0.5) - fmin(a.cz - a.dz * 0.5, b.cz - b.dz * 0.5);
  double area;
  if (mode == 2) {
    area = hull_area_xy(a, b);
  } else if (aligned) {
    area = (fmax(a.cx + a.dx * 0.5, b.cx + b.dx * 0.5) - fmin(a.cx - a.dx * 0.5, b.cx - b.dx * 0.5)) *
           (fmax(a.cy + a.dy * 0.5, b.cy + b.dy * 0.5) - fmin(a.cy - a.dy * 0.5, b.cy - b.dy * 0.5));
  } else {
    double x[8], y[8];
    rect_xy(a, x, y);
    rect_xy(b, x + 4, y + 4);
    double x0 = x[0], x1 = x[0], y0 = y[0], y1 = y[0];
    for (int i = 1; i < 8; ++i) { x0 = fmin(x0, x[i]); x1 = fmax(x1, x[i]); y0 = fmin(y0, y[i]); y1 = fmax(y1, y[i]); }
    area = (x1 - x0) * (y1 - y0);
  }
  const double encl = area * zc;
  return encl > 0.0 ? iou - (encl - uni) / encl : iou;
}

template <typename scalar_t>
__global__ void box_iou_pairwise_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t N,
                                        int64_t M, int mode, double* __restrict__ out) {
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < N * M; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / M, j = e - i * M;
    out[e] = box_metric(load_box(a + i * 7), load_box(b + j * 7), mode);
  }
}

template <typename scalar_t>
__global__ void box_iou_aligned_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t N,
                                       int mode, double* __restrict__ out) {
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < N; e += (int64_t)gridDim.x * blockDim.x)
    out[e] = box_metric(load_box(a + e * 7), load_box(b + e * 7), mode);
}

at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b, int64_t mode, bool pairwise) {
  R1_CHECK_INPUT(a);
  R1_CHECK_INPUT(b);
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "box_iou: a and b need one dtype");
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t N = a.size(0), M = b.size(0);
  auto out = pairwise ? at::empty({N, M}, a.options().dtype(at::kDouble)) : at::empty({N}, a.options().dtype(at::kDouble));
  maybe_poison(out);
  if (out.numel() == 0) return out;
  const int threads = 128;
  const int64_t work = out.numel();
  const int blocks = (int)std::min<int64_t>(ceil_div(work, threads), 132 * 32);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "box_iou", [&] {
    if (pairwise)
      box_iou_pairwise_kernel<scalar_t><<<blocks, threads, 0, stream>>>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), N, M,
                                                                        (int)mode, out.data_ptr<double>());
    else
      box_iou_aligned_kernel<scalar_t><<<blocks, threads, 0, stream>>>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), N,
                                                                       (int)mode, out.data_ptr<double>());
  });
  R1_LAUNCH_CHECK();
  return out;
}

// ---- points in boxes ------------------------------------------------------------------------------------
// Same float32 expression order as the torch reference (cos/sin come precomputed from torch so
// both paths use identical values): lx = dx*c + dy*s, ly = dy*c - dx*s, |l| <= extent * 0.5.
__device__ __forceinline__ float fmul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float fadd(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float fsub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double fmul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double fadd(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double fsub(double a, double b) { return __dsub_rn(a, b); }

template <typename scalar_t>
__global__ void points_in_boxes_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ boxes,
                                       const scalar_t* __restrict__ cs, int64_t P, int64_t K, bool* __restrict__ out) {
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < P * K; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / K, k = e - i * K;
    const scalar_t* bx = boxes + k * 7;
    const scalar_t c = cs[2 * k], s = cs[2 * k + 1];
    const scalar_t dx = fsub(p[3 * i], bx[0]), dy = fsub(p[3 * i + 1], bx[1]), dz = fsub(p[3 * i + 2], bx[2]);
    const scalar_t lx = fadd(fmul(dx, c), fmul(dy, s));
    const scalar_t ly = fsub(fmul(dy, c), fmul(dx, s));
    const scalar_t h = (scalar_t)0.5;
    out[e] = fabs(lx) <= fmul(bx[3], h) && fabs(ly) <= fmul(bx[4], h) && fabs(dz) <= fmul(bx[5], h);
  }
}

at::Tensor points_in_boxes(const at::Tensor& p, const at::Tensor& boxes, const at::Tensor& cs) {
  R1_CHECK_INPUT(p);
  R1_CHECK_INPUT(boxes);
  R1_CHECK_INPUT(cs);
  const c10::cuda::CUDAGuard guard(p.device());
  const int64_t P = p.size(0), K = boxes.size(0);
  auto out = at::empty({P, K}, p.options().dtype(at::kBool));
  maybe_poison(out);
  if (out.numel() == 0) return out;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(ceil_div(P * K, threads), 132 * 64);
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "points_in_boxes", [&] {
    points_in_boxes_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        p.data_ptr<scalar_t>(), boxes.data_ptr<scalar_t>(), cs.data_ptr<scalar_t>(), P, K, out.data_ptr<bool>());
  });
  R1_LAUNCH_CHECK();
  return out;
}

}  // namespace r1
