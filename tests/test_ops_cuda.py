"""CUDA kernels against the torch reference on the same GPU (run on the GPU machine: pytest -m gpu).

Fresh random inputs per test; the extension's debug poison mode fills every uninitialised
output with NaN / -987654321 / 0xAB first, so an element a kernel forgot to write cannot
match the reference. Indices must match exactly (the kernels use the reference's float32
expression order); values to 1e-5 relative.
"""
import math

import numpy as np
import pytest
import torch

from r1_core.geometry.boxes import (
    box_iou_3d, box_iou_3d_aligned, generalized_box_iou_3d, generalized_box_iou_3d_aligned, points_in_boxes,
)
from r1_core.geometry.dispatch import reference_ops
from r1_core.geometry.points import (
    ball_query, furthest_point_sample, gather_points, group_points, inverse_distance_weights, three_interpolate,
    three_nn, voxel_downsample,
)

pytestmark = pytest.mark.gpu
DEV = "cuda"


@pytest.fixture(scope="module", autouse=True)
def ext():
    from r1_core.cuda import load_extension
    e = load_extension()
    e.set_debug_poison(True)
    yield e
    e.set_debug_poison(False)


def gen(seed):
    return torch.Generator(device=DEV).manual_seed(seed)


def ref(fn, *args, **kw):
    with reference_ops():
        return fn(*args, **kw)


def cloud(B, N, seed, dup=0, scale=1.0):
    x = torch.rand(B, N, 3, device=DEV, generator=gen(seed)) * scale
    if dup:
        x[:, -dup:] = x[:, :dup]
    return x


# ---- FPS -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,n,dup", [(700, 128, 0), (5000, 1000, 100), (20000, 2048, 0), (40000, 2048, 500),
                                     (70000, 256, 0), (300, 700, 0)])
def test_fps_kernel_equals_reference(N, n, dup):
    x = cloud(3, N, N + n, dup)
    got = furthest_point_sample(x, n)
    want = ref(furthest_point_sample, x, n)
    assert got.dtype == torch.long and torch.equal(got, want)
    if N <= 5000:   # and the CPU reference agrees bit for bit
        assert torch.equal(got.cpu(), furthest_point_sample(x.cpu(), n))


# ---- ball query --------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,S,r,k", [(30000, 1000, 0.05, 16), (30000, 1000, 0.2, 64), (3000, 300, 0.01, 8),
                                     (4000, 257, 0.5, 100)])
def test_ball_query_kernel_equals_reference(N, S, r, k):
    x = cloud(2, N, N + S, dup=N // 10)
    c = torch.cat([x[:, : S // 2], torch.rand(2, S - S // 2, 3, device=DEV, generator=gen(7)) * 1.6 - 0.3], 1)
    got = ball_query(x, c, r, k)
    want = ref(ball_query, x, c, r, k)
    assert torch.equal(got, want)
    if r == 0.01:   # some balls are empty (centres off the cloud): nearest point everywhere
        d = (group_points(x, got)[:, :, 0] - c).norm(dim=-1)
        assert (d >= r).any()


# ---- gather / group -----------------------------------------------------------------------------------
@pytest.mark.parametrize("C,dtype", [(3, torch.float32), (64, torch.float32), (256, torch.float32),
                                     (5, torch.float64), (48, torch.float16)])
def test_gather_group_values_and_gradients(C, dtype):
    B, N, S, k = 2, 3000, 300, 32
    f = torch.randn(B, N, C, device=DEV, generator=gen(C)).to(dtype).requires_grad_(True)
    idx = torch.randint(0, N, (B, S, k), device=DEV, generator=gen(C + 1))
    idx[:, :5] = 7                                        # heavy repeats: atomics collide
    out = group_points(f, idx)
    out_ref = ref(group_points, f, idx)
    assert torch.equal(out, out_ref)
    g = torch.randn_like(out)
    (gk,) = torch.autograd.grad(out, f, g)
    (gr,) = torch.autograd.grad(out_ref, f, g)
    if dtype == torch.float16:
        # both sum up to 5 * 32 = 160 fp16 terms per element, in different orders: compare each with
        # the float32 sum; neither may be further from it than fp16 rounding of such a sum allows
        f32 = f.detach().float().requires_grad_(True)
        (g32,) = torch.autograd.grad(ref(group_points, f32, idx), f32, g.float())
        bound = 160 * 2.0 ** -11 * g32.abs().amax().item() + 1e-3
        assert (gk.float() - g32).abs().max().item() <= bound
        assert (gr.float() - g32).abs().max().item() <= bound
    else:
        torch.testing.assert_close(gk, gr, rtol=1e-5, atol=1e-5)
    i1 = torch.randint(0, N, (B, 77), device=DEV, generator=gen(3))
    assert torch.equal(gather_points(f, i1), ref(gather_points, f, i1))


# ---- three-NN / interpolate -------------------------------------------------------------------------
def test_three_nn_kernel_equals_reference():
    known = cloud(3, 2048, 11, dup=200)
    unknown = torch.cat([cloud(3, 20000, 12), known[:, :100]], 1)
    d, i = three_nn(unknown, known)
    dr, ir = ref(three_nn, unknown, known)
    assert torch.equal(i, ir)
    torch.testing.assert_close(d, dr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_three_interpolate_values_and_gradients(dtype):
    B, m, n, C = 2, 500, 4000, 96
    known, unknown = cloud(B, m, 21), cloud(B, n, 22)
    dist, idx = three_nn(unknown, known)
    w = inverse_distance_weights(dist).to(dtype).requires_grad_(True)
    f = torch.randn(B, m, C, device=DEV, dtype=dtype, generator=gen(23)).requires_grad_(True)
    out = three_interpolate(f, idx, w)
    out_ref = ref(three_interpolate, f, idx, w)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    gk = torch.autograd.grad(out, (f, w), g)
    gr = torch.autograd.grad(out_ref, (f, w), g)
    for a, b in zip(gk, gr):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- voxel downsample ------------------------------------------------------------------------------
def test_voxel_downsample_kernel_equals_reference():
    pts = torch.cat([cloud(1, 200000, 31, scale=4.0)[0], torch.rand(200000, 3, device=DEV, generator=gen(32)) * 255], 1)
    pts[150000:] = pts[:50000]
    pts.requires_grad_(True)
    out, inv = voxel_downsample(pts, 0.05, return_inverse=True)
    out_r, inv_r = ref(voxel_downsample, pts, 0.05, return_inverse=True)
    assert torch.equal(inv, inv_r)
    torch.testing.assert_close(out, out_r, rtol=1e-5, atol=1e-4)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, pts, g)[0], torch.autograd.grad(out_r, pts, g)[0])


# ---- boxes ------------------------------------------------------------------------------------------------
def boxes(n, seed, rotated=True):
    g = gen(seed)
    b = torch.zeros(n, 7, device=DEV, dtype=torch.float64)
    b[:, :3] = torch.rand(n, 3, device=DEV, generator=g, dtype=torch.float64) * 3
    b[:, 3:6] = torch.rand(n, 3, device=DEV, generator=g, dtype=torch.float64) * 2 + 0.1
    if rotated:
        b[:, 6] = (torch.rand(n, device=DEV, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    return b


@pytest.mark.parametrize("rotated", [False, True])
def test_box_iou_kernels_equal_reference(rotated):
    a, b = boxes(256, 41 + rotated, rotated), boxes(200, 43 + rotated, rotated)
    a[:5] = b[:5]                                  # identical pairs
    a[5, 3] = 0.0                                  # degenerate box
    a[6] = b[6]
    a[6, 0] += b[6, 3] * math.cos(b[6, 6])         # touching along a face
    a[6, 1] += b[6, 3] * math.sin(b[6, 6])
    for fn, kw in [(box_iou_3d, {}), (generalized_box_iou_3d, {"enclosure": "aabb"}),
                   (generalized_box_iou_3d, {"enclosure": "hull"})]:
        got = fn(a, b, **kw)
        want = ref(fn, a, b, **kw)
        assert not got.isnan().any()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    for fn, kw in [(box_iou_3d_aligned, {}), (generalized_box_iou_3d_aligned, {"enclosure": "hull"})]:
        torch.testing.assert_close(fn(a, b[:200].repeat(2, 1)[:256], **kw), ref(fn, a, b[:200].repeat(2, 1)[:256], **kw),
                                   rtol=1e-5, atol=1e-7)
    # float32 boxes
    torch.testing.assert_close(box_iou_3d(a.float(), b.float()), ref(box_iou_3d, a.float(), b.float()), rtol=1e-5, atol=1e-6)


def test_points_in_boxes_kernel_equals_reference(ext):
    b = boxes(64, 51).float()
    p = torch.rand(50000, 3, device=DEV, generator=gen(52)) * 3
    p[:64] = b[:, :3]
    got = points_in_boxes(p, b)
    assert torch.equal(got, ref(points_in_boxes, p, b))
    raw = ext.points_in_boxes(p, b, torch.stack([b[:, 6].cos(), b[:, 6].sin()], 1).contiguous())
    assert set(raw.view(torch.uint8).unique().tolist()) <= {0, 1}      # every element written
    assert torch.equal(points_in_boxes(p.double(), b.double()), ref(points_in_boxes, p.double(), b.double()))


def test_dispatch_runs_the_kernel_and_can_be_forced_off(monkeypatch):
    from r1_core.cuda import ops
    calls = []
    real = ops.furthest_point_sample
    monkeypatch.setattr(ops, "furthest_point_sample", lambda *a: calls.append(1) or real(*a))
    x = cloud(1, 100, 61)
    furthest_point_sample(x, 10)
    assert calls == [1]
    ref(furthest_point_sample, x, 10)
    monkeypatch.setenv("R1_OPS_BACKEND", "reference")
    furthest_point_sample(x, 10)
    assert calls == [1]
