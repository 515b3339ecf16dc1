"""Boxes: corners round trip, IoU/GIoU against a brute-force numpy reference, points in boxes.

The reference clips polygons with Sutherland-Hodgman in plain Python (a different algorithm
from the library's corner/crossing enumeration) and takes hull areas from scipy's Qhull.
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull, QhullError

from r1_core.geometry.boxes import (
    box_iou_3d, box_iou_3d_aligned, boxes_to_corners, corners_to_boxes, generalized_box_iou_3d,
    generalized_box_iou_3d_aligned, points_in_boxes,
)


# ---- brute-force reference ----------------------------------------------------------------
def rect(box):
    cx, cy, _, dx, dy, _, yaw = box
    c, s = math.cos(yaw), math.sin(yaw)
    pts = []
    for sx, sy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        lx, ly = sx * dx, sy * dy
        pts.append((cx + c * lx - s * ly, cy + s * lx + c * ly))
    return pts


def clip(subject, clipper):
    """Sutherland-Hodgman: subject polygon clipped by a convex CCW clipper."""
    out = list(subject)
    n = len(clipper)
    for i in range(n):
        a, b = clipper[i], clipper[(i + 1) % n]
        inside = lambda p: (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0
        inp, out = out, []
        if not inp:
            break
        for j in range(len(inp)):
            cur, prev = inp[j], inp[j - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(intersect(prev, cur, a, b))
                out.append(cur)
            elif inside(prev):
                out.append(intersect(prev, cur, a, b))
    return out


def intersect(p, q, a, b):
    dx1, dy1 = q[0] - p[0], q[1] - p[1]
    dx2, dy2 = b[0] - a[0], b[1] - a[1]
    den = dx1 * dy2 - dy1 * dx2
    t = ((a[0] - p[0]) * dy2 - (a[1] - p[1]) * dx2) / den
    return (p[0] + t * dx1, p[1] + t * dy1)


def area(poly):
    return 0.5 * abs(sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                         for i in range(len(poly)))) if len(poly) >= 3 else 0.0


def ref_metric(a, b, giou=False, enclosure="aabb"):
    ra, rb = rect(a), rect(b)
    inter_xy = area(clip(ra, rb)) if a[3] * a[4] > 0 and b[3] * b[4] > 0 else 0.0
    zo = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
    inter = inter_xy * zo
    union = a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter
    iou = inter / union if union > 0 else 0.0
    if not giou:
        return iou
    pts = np.array(ra + rb)
    if enclosure == "aabb":
        axy = np.prod(pts.max(0) - pts.min(0))
    else:
        try:
            axy = ConvexHull(pts).volume
        except QhullError:           # collinear / coincident corners: zero area
            axy = 0.0
    zc = max(a[2] + a[5] / 2, b[2] + b[5] / 2) - min(a[2] - a[5] / 2, b[2] - b[5] / 2)
    c = axy * zc
    return iou - (c - union) / c if c > 0 else iou


def random_boxes(rng, n, rotated=True, spread=2.0):
    b = np.zeros((n, 7))
    b[:, :3] = rng.uniform(-spread, spread, (n, 3))
    b[:, 3:6] = rng.uniform(0.2, 2.5, (n, 3))
    if rotated:
        b[:, 6] = rng.uniform(-math.pi, math.pi, n)
    return b


# ---- corners --------------------------------------------------------------------------------
def test_corners_of_axis_aligned_box_are_exact():
    c = boxes_to_corners(np.array([1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 0.0]))
    assert c.shape == (8, 3)
    expect = np.array([[0, 0, 0], [2, 0, 0], [2, 4, 0], [0, 4, 0], [0, 0, 6], [2, 0, 6], [2, 4, 6], [0, 4, 6]], float)
    assert np.allclose(c, expect)


def test_corners_round_trip_random_rotated_boxes():
    rng = np.random.default_rng(0)
    b = random_boxes(rng, 200)
    back = corners_to_boxes(boxes_to_corners(b))
    assert np.allclose(back[:, :6], b[:, :6], atol=1e-9)
    assert np.allclose(np.angle(np.exp(1j * (back[:, 6] - b[:, 6]))), 0, atol=1e-9)
    # batched leading dims and torch in -> torch out
    t = torch.tensor(b.reshape(10, 20, 7))
    ct = boxes_to_corners(t)
    assert isinstance(ct, torch.Tensor) and ct.shape == (10, 20, 8, 3)
    # rotation about the centre keeps every corner at the same distance from it
    d = np.linalg.norm(boxes_to_corners(b) - b[:, None, :3], axis=-1)
    assert np.allclose(d, 0.5 * np.linalg.norm(b[:, None, 3:6], axis=-1).repeat(8, 1))


def test_corners_to_boxes_rejects_a_non_box():
    c = boxes_to_corners(np.array([0, 0, 0, 1, 1, 1, 0.3]))
    c[2] += [0.3, 0, 0]
    with pytest.raises(ValueError, match="not an upright box"):
        corners_to_boxes(c)
    with pytest.raises(ValueError, match=r"\(\.\.\., 8, 3\)"):
        corners_to_boxes(np.zeros((7, 3)))


def test_zero_extent_corners_keep_yaw():
    b = np.array([[0, 0, 0, 0.0, 2.0, 1.0, 0.7]])
    back = corners_to_boxes(boxes_to_corners(b))
    assert np.allclose(back, b, atol=1e-9)


# ---- IoU / GIoU vs brute force ---------------------------------------------------------------
@pytest.mark.parametrize("rotated", [False, True])
def test_pairwise_iou_matches_brute_force(rotated):
    rng = np.random.default_rng(1 + rotated)
    a, b = random_boxes(rng, 23, rotated, 1.0), random_boxes(rng, 17, rotated, 1.0)
    got = box_iou_3d(a, b)
    ref = np.array([[ref_metric(x, y) for y in b] for x in a])
    assert got.shape == (23, 17) and got.dtype == np.float64
    assert (ref > 0).mean() > 0.3            # the draw really overlaps
    np.testing.assert_allclose(got, ref, atol=1e-9)


@pytest.mark.parametrize("enclosure", ["aabb", "hull"])
@pytest.mark.parametrize("rotated", [False, True])
def test_pairwise_giou_matches_brute_force(rotated, enclosure):
    rng = np.random.default_rng(3 + rotated)
    a, b = random_boxes(rng, 15, rotated, 1.5), random_boxes(rng, 11, rotated, 1.5)
    got = generalized_box_iou_3d(a, b, enclosure=enclosure)
    ref = np.array([[ref_metric(x, y, True, enclosure) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert (got <= 1 + 1e-12).all() and (got > -1).all()
    assert (got < 0).any()                   # disjoint pairs give negative GIoU


def test_aligned_variants_equal_the_diagonal_of_pairwise():
    rng = np.random.default_rng(5)
    a, b = random_boxes(rng, 40, True, 1.0), random_boxes(rng, 40, True, 1.0)
    np.testing.assert_allclose(box_iou_3d_aligned(a, b), np.diag(box_iou_3d(a, b)), atol=1e-12)
    for enc in ("aabb", "hull"):
        np.testing.assert_allclose(generalized_box_iou_3d_aligned(a, b, enc),
                                   np.diag(generalized_box_iou_3d(a, b, enc)), atol=1e-12)


def test_rotated_path_equals_axis_aligned_closed_form():
    # yaw = 2*pi is the same box as yaw = 0 but forces the polygon path
    rng = np.random.default_rng(6)
    a, b = random_boxes(rng, 20, False, 1.0), random_boxes(rng, 20, False, 1.0)
    a2 = a.copy()
    a2[:, 6] = 2 * math.pi
    np.testing.assert_allclose(box_iou_3d(a2, b), box_iou_3d(a, b), atol=1e-9)
    # a quarter turn with swapped extents is the same box as well
    a3 = a.copy()
    a3[:, 3], a3[:, 4], a3[:, 6] = a[:, 4], a[:, 3], math.pi / 2
    np.testing.assert_allclose(box_iou_3d(a3, b), box_iou_3d(a, b), atol=1e-9)
    np.testing.assert_allclose(generalized_box_iou_3d(a3, b, "hull"), generalized_box_iou_3d(a, b, "hull"), atol=1e-9)


def test_iou_is_rotation_invariant_and_hull_giou_too():
    rng = np.random.default_rng(7)
    a, b = random_boxes(rng, 12, True, 1.0), random_boxes(rng, 12, True, 1.0)
    th = 0.83
    c, s = math.cos(th), math.sin(th)

    def rot(x):
        y = x.copy()
        y[:, 0], y[:, 1] = c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]
        y[:, 6] += th
        return y
    np.testing.assert_allclose(box_iou_3d(rot(a), rot(b)), box_iou_3d(a, b), atol=1e-9)
    np.testing.assert_allclose(generalized_box_iou_3d(rot(a), rot(b), "hull"),
                               generalized_box_iou_3d(a, b, "hull"), atol=1e-9)


def test_edge_cases_identical_touching_degenerate_empty():
    box = np.array([[0.3, -0.2, 0.5, 1.0, 2.0, 0.5, 0.4]])
    assert box_iou_3d(box, box)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert generalized_box_iou_3d(box, box, "hull")[0, 0] == pytest.approx(1.0, abs=1e-12)
    # touching along a face (rotated): IoU 0, GIoU 0 (enclosure equals the union)
    t = box.copy()
    t[0, 0] += math.cos(0.4) * 1.0
    t[0, 1] += math.sin(0.4) * 1.0
    assert box_iou_3d(box, t)[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert generalized_box_iou_3d(box, t, "hull")[0, 0] == pytest.approx(0.0, abs=1e-9)
    # stacked in z, touching: IoU 0
    z = box.copy()
    z[0, 2] += 0.5
    assert box_iou_3d(box, z)[0, 0] == 0.0
    # degenerate (zero extent) boxes: volume 0 -> IoU 0, never NaN
    flat = box.copy()
    flat[0, 5] = 0.0
    pt = np.zeros((1, 7))
    m = box_iou_3d(np.concatenate([flat, pt]), np.concatenate([box, flat, pt]))
    assert np.isfinite(m).all() and (m == 0).all()
    g = generalized_box_iou_3d(np.concatenate([flat, pt]), np.concatenate([box, flat, pt]), "hull")
    assert np.isfinite(g).all()
    # one box inside the other
    inner = box.copy()
    inner[0, 3:6] *= 0.5
    assert box_iou_3d(box, inner)[0, 0] == pytest.approx(0.125, abs=1e-12)
    # empty inputs
    assert box_iou_3d(np.zeros((0, 7)), box).shape == (0, 1)
    assert generalized_box_iou_3d(box, np.zeros((0, 7))).shape == (1, 0)
    assert box_iou_3d_aligned(np.zeros((0, 7)), np.zeros((0, 7))).shape == (0,)


def test_giou_gradients_are_finite_and_match_finite_differences():
    rng = np.random.default_rng(8)
    a = torch.tensor(random_boxes(rng, 6, True, 0.6), requires_grad=True)
    b = torch.tensor(random_boxes(rng, 6, True, 0.6))
    for enc in ("aabb", "hull"):
        assert torch.autograd.gradcheck(lambda x: generalized_box_iou_3d_aligned(x, b, enc), (a,),
                                        eps=1e-6, atol=1e-5)
    loss = (1 - generalized_box_iou_3d(a, b)).sum()
    loss.backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # identical boxes (every crossing degenerate) still give finite gradients
    c = a.detach().clone().requires_grad_(True)
    box_iou_3d_aligned(c, a.detach()).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_float32_tensor_in_float32_out():
    rng = np.random.default_rng(9)
    a = torch.tensor(random_boxes(rng, 5), dtype=torch.float32)
    out = box_iou_3d(a, a)
    assert out.dtype == torch.float32 and torch.allclose(out.diagonal(), torch.ones(5))


def test_bad_boxes_are_rejected_with_the_field_named():
    good = np.zeros((2, 7)) + 1
    with pytest.raises(ValueError, match=r"a: expected boxes of shape \(\.\.\., 7\)"):
        box_iou_3d(np.zeros((2, 6)), good)
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="b: 1 box"):
        box_iou_3d(good, bad)
    neg = good.copy()
    neg[0, 4] = -1
    with pytest.raises(ValueError, match="extents"):
        box_iou_3d(neg, good)
    with pytest.raises(ValueError, match="same number"):
        box_iou_3d_aligned(good, good[:1])
    with pytest.raises(ValueError, match="unknown enclosure 'obb'; choose one of"):
        generalized_box_iou_3d(good, good, enclosure="obb")
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        box_iou_3d([[0] * 7], good)


# ---- points in boxes ---------------------------------------------------------------------------
def test_points_in_boxes_matches_brute_force():
    rng = np.random.default_rng(10)
    boxes = random_boxes(rng, 9, True, 1.0)
    pts = rng.uniform(-2.5, 2.5, (3000, 3))
    pts = np.concatenate([pts, boxes[:, :3], boxes_to_corners(boxes)[:, 0] * 0.999 + boxes[:, :3] * 0.001])
    got = points_in_boxes(pts, boxes)
    ref = np.zeros_like(got)
    for k, b in enumerate(boxes):
        c, s = math.cos(b[6]), math.sin(b[6])
        for p in range(len(pts)):
            d = pts[p] - b[:3]
            lx, ly = c * d[0] + s * d[1], -s * d[0] + c * d[1]
            ref[p, k] = abs(lx) <= b[3] / 2 and abs(ly) <= b[4] / 2 and abs(d[2]) <= b[5] / 2
    assert got.dtype == bool and got.shape == (len(pts), 9)
    assert (got == ref).all() and got.sum() > 100
    assert got[3000 + np.arange(9), np.arange(9)].all()          # centres are inside
    assert got[3009 + np.arange(9), np.arange(9)].all()          # just inside a corner


def test_points_in_boxes_boundary_and_empty():
    box = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    pts = np.array([[1.0, 0, 0], [1.0 + 1e-6, 0, 0], [0, -1.0, 1.0], [0, 0, -1.0001]], dtype=np.float32)
    assert points_in_boxes(pts, box)[:, 0].tolist() == [True, False, True, False]
    assert points_in_boxes(np.zeros((0, 3)), box).shape == (0, 1)
    assert points_in_boxes(pts, np.zeros((0, 7))).shape == (4, 0)
    # extra columns (rgb) are ignored; degenerate box holds only its own plane
    cloud = np.concatenate([pts, np.full((4, 3), 200.0, np.float32)], 1)
    assert points_in_boxes(cloud, box).shape == (4, 1)
    with pytest.raises(ValueError, match=r"points: expected shape \(P, 3\)"):
        points_in_boxes(np.zeros((4, 2)), box)
