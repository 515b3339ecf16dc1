// Python bindings of the r1 CUDA ops (built by r1_core/cuda/__init__.py with
// torch.utils.cpp_extension.load). The Python API and its argument checks live in
// r1_core/geometry; these entry points expect validated, contiguous CUDA tensors.
#include <torch/extension.h>
#include <vector>

namespace r1 {
static bool g_debug_poison = false;
bool debug_poison() { return g_debug_poison; }
void set_debug_poison(bool on) { g_debug_poison = on; }
at::Tensor furthest_point_sample(const at::Tensor& xyz, int64_t n);
void sync_probe(int64_t iters, int64_t csize, int64_t threads, int64_t clusters, const at::Tensor& out);
at::Tensor ball_query(const at::Tensor& xyz, const at::Tensor& centers, double r2, int64_t k);
at::Tensor gather_rows(const at::Tensor& feat, const at::Tensor& idx);
at::Tensor scatter_add_rows(const at::Tensor& grad_out, const at::Tensor& idx, int64_t N);
std::vector<at::Tensor> three_nn(const at::Tensor& unknown, const at::Tensor& known);
at::Tensor three_interpolate(const at::Tensor& feat, const at::Tensor& idx, const at::Tensor& w);
std::vector<at::Tensor> three_interpolate_backward(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& idx,
                                                   const at::Tensor& w, bool need_feat, bool need_w);
at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b, int64_t mode, bool pairwise);
at::Tensor points_in_boxes(const at::Tensor& p, const at::Tensor& boxes, const at::Tensor& cs);
std::vector<at::Tensor> voxel_hash_insert(const at::Tensor& keys, int64_t bits);
at::Tensor voxel_scatter_sum(const at::Tensor& pts, const at::Tensor& ids, int64_t M);
at::Tensor fusion_check(const at::Tensor& depth, const at::Tensor& rx, const at::Tensor& ry, int64_t stride,
                        const std::vector<double>& f);
void fusion_integrate(const at::Tensor& color, const at::Tensor& depth, const at::Tensor& rx, const at::Tensor& ry,
                      int64_t stride, const std::vector<double>& f, at::Tensor tkeys, at::Tensor tslot, at::Tensor slot_keys,
                      at::Tensor sums, at::Tensor obs, at::Tensor last, at::Tensor counter);
void fusion_rebuild(at::Tensor tkeys, at::Tensor tslot, at::Tensor slot_keys, at::Tensor sums, at::Tensor obs,
                    at::Tensor last, at::Tensor counter, int64_t n);
}  // namespace r1

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_debug_poison", &r1::set_debug_poison, "fill uninitialised outputs with poison (tests)");
  m.def("furthest_point_sample", &r1::furthest_point_sample);
  m.def("ball_query", &r1::ball_query);
  m.def("sync_probe", &r1::sync_probe, "benchmark aid: FPS iteration critical path without the work");
  m.def("gather_rows", &r1::gather_rows);
  m.def("scatter_add_rows", &r1::scatter_add_rows);
  m.def("three_nn", &r1::three_nn);
  m.def("three_interpolate", &r1::three_interpolate);
  m.def("three_interpolate_backward", &r1::three_interpolate_backward);
  m.def("box_iou", &r1::box_iou);
  m.def("points_in_boxes", &r1::points_in_boxes);
  m.def("voxel_hash_insert", &r1::voxel_hash_insert);
  m.def("voxel_scatter_sum", &r1::voxel_scatter_sum);
  m.def("fusion_check", &r1::fusion_check);
  m.def("fusion_integrate", &r1::fusion_integrate);
  m.def("fusion_rebuild", &r1::fusion_rebuild);
}
