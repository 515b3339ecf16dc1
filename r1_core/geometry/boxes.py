"""3D boxes: corners, IoU / GIoU (axis-aligned and yaw-rotated), points-in-box masks.

    from r1_core.geometry.boxes import box_iou_3d, boxes_to_corners, points_in_boxes
    iou = box_iou_3d(pred, gt)                  # (N, 7), (M, 7) -> (N, M)
    corners = boxes_to_corners(boxes)           # (..., 7) -> (..., 8, 3)
    inside = points_in_boxes(xyz, boxes)        # (P, 3), (K, 7) -> bool (P, K)

Box format (docs/conventions.md): `(cx, cy, cz, dx, dy, dz, yaw)`, centre in metres, full
extents along the box's own axes, yaw in radians about +z (counter-clockwise from above).
Boxes are upright (only yaw), so a 3D intersection is the xy-polygon intersection times the
z-overlap. Rotated IoU is exact: the two xy rectangles are intersected as convex polygons
(corners inside the other box + edge/edge crossings, ordered by angle, shoelace area).
When every yaw is exactly 0 the axis-aligned closed form runs instead (same values).

Inputs may be numpy arrays or torch tensors; outputs have the same kind (numpy in, numpy
out). Values are computed in float64 and returned in the input's floating dtype. The torch
reference is differentiable (GIoU as a loss); CUDA tensors that need no gradient run the
kernel from `r1_core.cuda` (see `r1_core.geometry.dispatch`), CUDA tensors that require
grad run this differentiable torch code on the GPU.

Degenerate cases, by definition here: a box with a zero extent has volume 0; IoU of two
boxes whose union volume is 0 is 0; GIoU whose enclosing volume is 0 equals the IoU (0).
Touching boxes (shared face) have IoU 0. Negative extents and non-finite values are errors.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from r1_core.geometry.dispatch import use_kernel

ENCLOSURES = ("aabb", "hull")
# Corner order of boxes_to_corners, in box-local units (multiply by the extents):
# bottom face (z-) counter-clockwise seen from above starting at (-x, -y), then the top face.
CORNER_SIGNS = torch.tensor(
    [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
     [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=torch.float64) * 0.5
_EPS = 1e-9          # tolerance (dimensionless / metres) for on-boundary tests in float64
_PAIR_CHUNK = 1 << 18  # pairs per chunk in the pairwise reference (bounds temporary memory)


# ---- input handling -------------------------------------------------------------------------
def is_box_list(value: Any, least: int = 0) -> bool:
    """Whether a JSON value is a list of at least `least` boxes, each a list of 7 finite numbers
    (the form predictions files and answer files hold boxes in)."""
    return isinstance(value, list) and len(value) >= least and all(
        isinstance(b, list) and len(b) == 7
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in b)
        for b in value)


def _to_tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    """A floating tensor of `x` and whether it came as numpy."""
    if isinstance(x, torch.Tensor):
        t, was_np = x, False
    elif isinstance(x, np.ndarray):
        t, was_np = torch.from_numpy(np.ascontiguousarray(x)), True
    else:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t, was_np


def _check_boxes(t: torch.Tensor, name: str, ndim: int | None = None) -> None:
    if t.ndim < 1 or t.shape[-1] != 7:
        raise ValueError(f"{name}: expected boxes of shape (..., 7) (cx, cy, cz, dx, dy, dz, yaw), "
                         f"got {tuple(t.shape)}")
    if ndim is not None and t.ndim != ndim:
        want = "(N, 7)" if ndim == 2 else f"{ndim} dims"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if t.numel() == 0:
        return
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t).all(dim=-1)).sum())
        raise ValueError(f"{name}: {bad} box(es) have non-finite values (NaN/inf)")
    if bool((t[..., 3:6] < 0).any()):
        raise ValueError(f"{name}: box extents (dx, dy, dz) must be >= 0, got a minimum of "
                         f"{float(t[..., 3:6].min()):.6g}")


def _out(t: torch.Tensor, was_np: bool) -> Any:
    return t.detach().cpu().numpy() if was_np else t


def _result_dtype(*ts: torch.Tensor) -> torch.dtype:
    return torch.promote_types(ts[0].dtype, ts[-1].dtype)


# ---- corners ----------------------------------------------------------------------------------
def boxes_to_corners(boxes: Any) -> Any:
    """(..., 7) boxes -> (..., 8, 3) corners, in the order of CORNER_SIGNS (bottom face
    counter-clockwise from (-dx/2, -dy/2), then the top face in the same order)."""
    t, was_np = _to_tensor(boxes, "boxes")
    _check_boxes(t, "boxes")
    signs = CORNER_SIGNS.to(device=t.device, dtype=t.dtype)
    local = signs * t[..., None, 3:6]                                       # (..., 8, 3)
    c, s = torch.cos(t[..., 6])[..., None], torch.sin(t[..., 6])[..., None]
    x = c * local[..., 0] - s * local[..., 1] + t[..., None, 0]
    y = s * local[..., 0] + c * local[..., 1] + t[..., None, 1]
    z = local[..., 2] + t[..., None, 2]
    return _out(torch.stack([x, y, z], dim=-1), was_np)


def corners_to_boxes(corners: Any, atol: float = 1e-4) -> Any:
    """(..., 8, 3) corners in `boxes_to_corners` order -> (..., 7) boxes, yaw in [-pi, pi).

    Extents average the four parallel edges of each axis; yaw comes from the x-edges.
    Raises ValueError if the corners are not an upright box in that order (edges not
    orthogonal, bottom/top faces not level, or parallel edges differing by more than `atol`).
    """
    t, was_np = _to_tensor(corners, "corners")
    if t.ndim < 2 or t.shape[-2:] != (8, 3):
        raise ValueError(f"corners: expected shape (..., 8, 3), got {tuple(t.shape)}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError("corners: non-finite values (NaN/inf)")
    ex = torch.stack([t[..., 1, :] - t[..., 0, :], t[..., 2, :] - t[..., 3, :],
                      t[..., 5, :] - t[..., 4, :], t[..., 6, :] - t[..., 7, :]], dim=-2)
    ey = torch.stack([t[..., 3, :] - t[..., 0, :], t[..., 2, :] - t[..., 1, :],
                      t[..., 7, :] - t[..., 4, :], t[..., 6, :] - t[..., 5, :]], dim=-2)
    ez = t[..., 4:8, :] - t[..., 0:4, :]
    mx, my, mz = ex.mean(-2), ey.mean(-2), ez.mean(-2)
    if t.numel():
        scale = max(1.0, float(t.abs().max()))
        tol = atol * scale
        dev = max(float((ex - mx[..., None, :]).abs().max()), float((ey - my[..., None, :]).abs().max()),
                  float((ez - mz[..., None, :]).abs().max()), float(mx[..., 2].abs().max()),
                  float(my[..., 2].abs().max()), float(mz[..., :2].abs().max()),
                  float((mx[..., :2] * my[..., :2]).sum(-1).abs().max()) / scale)
        if dev > tol:
            raise ValueError(f"corners: not an upright box in boxes_to_corners order (deviation "
                             f"{dev:.3g} > atol {tol:.3g})")
    dx = torch.linalg.vector_norm(mx[..., :2], dim=-1)
    dy = torch.linalg.vector_norm(my[..., :2], dim=-1)
    dz = mz[..., 2]
    yaw = torch.atan2(mx[..., 1], mx[..., 0])
    # a zero x-extent leaves yaw undefined by the x-edges: take it from the y-edges
    yaw_y = torch.atan2(-my[..., 0], my[..., 1])
    yaw = torch.where(dx > 0, yaw, yaw_y)
    yaw = torch.remainder(yaw + math.pi, 2 * math.pi) - math.pi
    centre = t.mean(-2)
    return _out(torch.cat([centre, torch.stack([dx, dy, dz, yaw], -1)], -1), was_np)


# ---- xy polygon helpers (float64) -------------------------------------------------------------
def _rect_xy(b: torch.Tensor) -> torch.Tensor:
    """(P, 7) -> (P, 4, 2) xy corners, counter-clockwise."""
    sx = torch.tensor([-0.5, 0.5, 0.5, -0.5], dtype=b.dtype, device=b.device)
    sy = torch.tensor([-0.5, -0.5, 0.5, 0.5], dtype=b.dtype, device=b.device)
    lx, ly = sx * b[:, 3:4], sy * b[:, 4:5]
    c, s = torch.cos(b[:, 6:7]), torch.sin(b[:, 6:7])
    return torch.stack([b[:, 0:1] + c * lx - s * ly, b[:, 1:2] + s * lx + c * ly], dim=-1)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside_rect(pts: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """pts (P, K, 2) inside box b (P, 7)'s xy rectangle, boundary included (tolerance _EPS)."""
    d = pts - b[:, None, :2]
    c, s = torch.cos(b[:, None, 6]), torch.sin(b[:, None, 6])
    lx = c * d[..., 0] + s * d[..., 1]
    ly = -s * d[..., 0] + c * d[..., 1]
    return (lx.abs() <= b[:, None, 3] * 0.5 + _EPS) & (ly.abs() <= b[:, None, 4] * 0.5 + _EPS)


def _polygon_area_sorted(pts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Area of the convex polygon whose vertices are the masked points of pts (P, K, 2)
    (any order, duplicates allowed): sort by angle about their mean, shoelace."""
    cnt = mask.sum(-1)
    w = mask.to(pts.dtype)
    with torch.no_grad():
        centre = (pts * w[..., None]).sum(1) / cnt.clamp(min=1)[:, None].to(pts.dtype)
        rel = pts - centre[:, None]
        ang = torch.atan2(rel[..., 1], rel[..., 0])
        ang = torch.where(mask, ang, torch.full_like(ang, 10.0))       # invalid points last
        order = torch.argsort(ang, dim=1)
    sp = torch.gather(pts, 1, order[..., None].expand(-1, -1, 2))
    sm = torch.gather(mask, 1, order)
    sp = torch.where(sm[..., None], sp, sp[:, :1])                      # pad with the first vertex
    area = 0.5 * _cross(sp, sp.roll(-1, dims=1)).sum(-1)
    return torch.where(cnt >= 3, area.abs(), torch.zeros_like(area))


def _intersection_area_xy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact area of the intersection of the xy rectangles of box pairs a, b (P, 7), float64."""
    ca, cb = _rect_xy(a), _rect_xy(b)
    in_a = _inside_rect(ca, b)                                         # a's corners inside b
    in_b = _inside_rect(cb, a)
    r = ca.roll(-1, dims=1) - ca                                       # (P, 4, 2) edges of a
    s = cb.roll(-1, dims=1) - cb
    rxs = _cross(r[:, :, None], s[:, None, :])                         # (P, 4, 4)
    qp = cb[:, None, :, :] - ca[:, :, None, :]                         # (P, 4, 4, 2)
    norm = torch.linalg.vector_norm(r, dim=-1)[:, :, None] * torch.linalg.vector_norm(s, dim=-1)[:, None, :]
    ok_den = rxs.abs() > 1e-12 * norm.clamp(min=1e-300)
    den = torch.where(ok_den, rxs, torch.ones_like(rxs))
    tt = _cross(qp, s[:, None, :, :]) / den
    uu = _cross(qp, r[:, :, None, :]) / den
    ok = ok_den & (tt >= -_EPS) & (tt <= 1 + _EPS) & (uu >= -_EPS) & (uu <= 1 + _EPS)
    cross_pts = (ca[:, :, None, :] + tt[..., None] * r[:, :, None, :]).reshape(-1, 16, 2)
    pts = torch.cat([ca, cb, cross_pts], dim=1)                        # (P, 24, 2)
    mask = torch.cat([in_a, in_b, ok.reshape(-1, 16)], dim=1)
    area = _polygon_area_sorted(pts, mask)
    empty = (a[:, 3] * a[:, 4] <= 0) | (b[:, 3] * b[:, 4] <= 0)
    return torch.where(empty, torch.zeros_like(area), area)


def _hull_area_xy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Area of the convex hull of both boxes' xy corners (P,), Andrew's monotone chain
    vectorised over pairs (8 points each; collinear and duplicate points are dropped)."""
    pts = torch.cat([_rect_xy(a), _rect_xy(b)], dim=1)                 # (P, 8, 2)
    P = pts.shape[0]
    with torch.no_grad():
        o1 = torch.argsort(pts[..., 1], dim=1, stable=True)
        o2 = torch.argsort(torch.gather(pts[..., 0], 1, o1), dim=1, stable=True)
        order = torch.gather(o1, 1, o2)                                # lexicographic (x, y)
        sp = torch.gather(pts, 1, order[..., None].expand(-1, -1, 2))
        rows = torch.arange(P, device=pts.device)
        chains = []
        for seq in (range(8), range(7, -1, -1)):                       # lower, then upper chain
            stack = torch.zeros(P, 8, dtype=torch.long, device=pts.device)
            top = torch.zeros(P, dtype=torch.long, device=pts.device)
            for i in seq:
                p = sp[:, i]
                for _ in range(6):
                    can = top >= 2
                    i1 = stack[rows, (top - 1).clamp(min=0)]
                    i0 = stack[rows, (top - 2).clamp(min=0)]
                    a0, a1 = sp[rows, i0], sp[rows, i1]
                    pop = can & (_cross(a1 - a0, p - a0) <= 0)
                    if not bool(pop.any()):
                        break
                    top = top - pop.long()
                stack[rows, top.clamp(max=7)] = i
                top = top + 1
            chains.append((stack, top))
    area = torch.zeros(P, dtype=pts.dtype, device=pts.device)
    spg = torch.gather(pts, 1, order[..., None].expand(-1, -1, 2))     # differentiable copy
    for stack, top in chains:
        hp = torch.gather(spg, 1, stack[..., None].expand(-1, -1, 2))  # (P, 8, 2)
        seg = _cross(hp[:, :-1], hp[:, 1:])                           # (P, 7)
        valid = torch.arange(7, device=pts.device)[None] < (top[:, None] - 1)
        area = area + torch.where(valid, seg, torch.zeros_like(seg)).sum(-1)
    return 0.5 * area.abs()


def _z_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lo = torch.maximum(a[:, 2] - a[:, 5] * 0.5, b[:, 2] - b[:, 5] * 0.5)
    hi = torch.minimum(a[:, 2] + a[:, 5] * 0.5, b[:, 2] + b[:, 5] * 0.5)
    return (hi - lo).clamp(min=0)


def _aa_overlap(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    lo = torch.maximum(a[:, dim] - a[:, dim + 3] * 0.5, b[:, dim] - b[:, dim + 3] * 0.5)
    hi = torch.minimum(a[:, dim] + a[:, dim + 3] * 0.5, b[:, dim] + b[:, dim + 3] * 0.5)
    return (hi - lo).clamp(min=0)


def _pair_metric(a: torch.Tensor, b: torch.Tensor, giou: bool, enclosure: str, axis_aligned: bool) -> torch.Tensor:
    """IoU or GIoU of pairs a[i], b[i] (P, 7), float64, differentiable."""
    if axis_aligned:
        inter = _aa_overlap(a, b, 0) * _aa_overlap(a, b, 1) * _z_overlap(a, b)
    else:
        inter = _intersection_area_xy(a, b) * _z_overlap(a, b)
    va = a[:, 3] * a[:, 4] * a[:, 5]
    vb = b[:, 3] * b[:, 4] * b[:, 5]
    union = va + vb - inter
    pos = union > 0
    iou = torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), torch.zeros_like(union))
    if not giou:
        return iou
    zlo = torch.minimum(a[:, 2] - a[:, 5] * 0.5, b[:, 2] - b[:, 5] * 0.5)
    zhi = torch.maximum(a[:, 2] + a[:, 5] * 0.5, b[:, 2] + b[:, 5] * 0.5)
    if enclosure == "hull":
        area = _hull_area_xy(a, b)
    elif axis_aligned:
        ext = [torch.maximum(a[:, d] + a[:, d + 3] * 0.5, b[:, d] + b[:, d + 3] * 0.5)
               - torch.minimum(a[:, d] - a[:, d + 3] * 0.5, b[:, d] - b[:, d + 3] * 0.5) for d in (0, 1)]
        area = ext[0] * ext[1]
    else:
        pts = torch.cat([_rect_xy(a), _rect_xy(b)], dim=1)
        span = pts.amax(1) - pts.amin(1)
        area = span[:, 0] * span[:, 1]
    encl = area * (zhi - zlo)
    pos_c = encl > 0
    frac = torch.where(pos_c, (encl - union) / torch.where(pos_c, encl, torch.ones_like(encl)),
                       torch.zeros_like(encl))
    return iou - frac


def _check_enclosure(enclosure: str) -> None:
    if enclosure not in ENCLOSURES:
        raise ValueError(f"unknown enclosure {enclosure!r}; choose one of {list(ENCLOSURES)}")


def _pairwise(a: Any, b: Any, giou: bool, enclosure: str, name: str) -> Any:
    ta, np_a = _to_tensor(a, "a")
    tb, _ = _to_tensor(b, "b")
    _check_boxes(ta, "a", ndim=2)
    _check_boxes(tb, "b", ndim=2)
    if ta.device != tb.device:
        raise ValueError(f"{name}: a is on {ta.device}, b on {tb.device}; put both on one device")
    dtype = _result_dtype(ta, tb)
    N, M = ta.shape[0], tb.shape[0]
    if N == 0 or M == 0:
        return _out(torch.zeros(N, M, dtype=dtype, device=ta.device), np_a)
    if use_kernel(ta) and not (ta.requires_grad or tb.requires_grad):
        from r1_core.cuda import ops as cuda_ops
        res = cuda_ops.box_iou(ta, tb, giou=giou, enclosure=enclosure, pairwise=True)
        return _out(res.to(dtype), np_a)
    a64, b64 = ta.to(torch.float64), tb.to(torch.float64)
    axis_aligned = bool((a64[:, 6] == 0).all()) and bool((b64[:, 6] == 0).all())
    rows = max(1, _PAIR_CHUNK // M)
    out = []
    for i in range(0, N, rows):
        aa = a64[i:i + rows]
        n = aa.shape[0]
        pa = aa[:, None, :].expand(n, M, 7).reshape(-1, 7)
        pb = b64[None, :, :].expand(n, M, 7).reshape(-1, 7)
        out.append(_pair_metric(pa, pb, giou, enclosure, axis_aligned).reshape(n, M))
    return _out(torch.cat(out, 0).to(dtype), np_a)


def _aligned(a: Any, b: Any, giou: bool, enclosure: str, name: str) -> Any:
    ta, np_a = _to_tensor(a, "a")
    tb, _ = _to_tensor(b, "b")
    _check_boxes(ta, "a", ndim=2)
    _check_boxes(tb, "b", ndim=2)
    if ta.shape[0] != tb.shape[0]:
        raise ValueError(f"{name}: a and b need the same number of boxes, got {ta.shape[0]} and {tb.shape[0]}")
    if ta.device != tb.device:
        raise ValueError(f"{name}: a is on {ta.device}, b on {tb.device}; put both on one device")
    dtype = _result_dtype(ta, tb)
    if ta.shape[0] == 0:
        return _out(torch.zeros(0, dtype=dtype, device=ta.device), np_a)
    if use_kernel(ta) and not (ta.requires_grad or tb.requires_grad):
        from r1_core.cuda import ops as cuda_ops
        res = cuda_ops.box_iou(ta, tb, giou=giou, enclosure=enclosure, pairwise=False)
        return _out(res.to(dtype), np_a)
    a64, b64 = ta.to(torch.float64), tb.to(torch.float64)
    axis_aligned = bool((a64[:, 6] == 0).all()) and bool((b64[:, 6] == 0).all())
    out = [_pair_metric(a64[i:i + _PAIR_CHUNK], b64[i:i + _PAIR_CHUNK], giou, enclosure, axis_aligned)
           for i in range(0, a64.shape[0], _PAIR_CHUNK)]
    return _out(torch.cat(out).to(dtype), np_a)


# ---- public IoU API ---------------------------------------------------------------------------
def box_iou_3d(a: Any, b: Any) -> Any:
    """Pairwise 3D IoU of boxes a (N, 7) and b (M, 7) -> (N, M); exact for yaw-rotated boxes."""
    return _pairwise(a, b, giou=False, enclosure="aabb", name="box_iou_3d")


def box_iou_3d_aligned(a: Any, b: Any) -> Any:
    """3D IoU of matching rows a[i], b[i] (N, 7) -> (N,)."""
    return _aligned(a, b, giou=False, enclosure="aabb", name="box_iou_3d_aligned")


def generalized_box_iou_3d(a: Any, b: Any, enclosure: str = "aabb") -> Any:
    """Pairwise 3D GIoU (N, 7) x (M, 7) -> (N, M) in (-1, 1]: IoU - (C - U) / C.

    C, the enclosing volume, is the z-range of both boxes times an xy area chosen by
    `enclosure`: "aabb" - the axis-aligned rectangle around both boxes' corners (the classic
    GIoU for axis-aligned boxes; for rotated boxes it depends on the frame's orientation);
    "hull" - the convex hull of both boxes' xy corners (rotation invariant)."""
    _check_enclosure(enclosure)
    return _pairwise(a, b, giou=True, enclosure=enclosure, name="generalized_box_iou_3d")


def generalized_box_iou_3d_aligned(a: Any, b: Any, enclosure: str = "aabb") -> Any:
    """GIoU of matching rows a[i], b[i] (N, 7) -> (N,); `enclosure` as in generalized_box_iou_3d."""
    _check_enclosure(enclosure)
    return _aligned(a, b, giou=True, enclosure=enclosure, name="generalized_box_iou_3d_aligned")


# ---- points in boxes ---------------------------------------------------------------------------
def points_in_boxes(points: Any, boxes: Any) -> Any:
    """bool (P, K): point p lies in box k (boundary included). points (P, 3+) (extra columns
    ignored), boxes (K, 7)."""
    tp, np_p = _to_tensor(points, "points")
    tb, _ = _to_tensor(boxes, "boxes")
    if tp.ndim != 2 or tp.shape[1] < 3:
        raise ValueError(f"points: expected shape (P, 3) (extra columns allowed), got {tuple(tp.shape)}")
    _check_boxes(tb, "boxes", ndim=2)
    if tp.device != tb.device:
        raise ValueError(f"points_in_boxes: points on {tp.device}, boxes on {tb.device}; use one device")
    xyz = tp[:, :3]
    P, K = xyz.shape[0], tb.shape[0]
    if P == 0 or K == 0:
        return _out(torch.zeros(P, K, dtype=torch.bool, device=tp.device), np_p)
    if use_kernel(tp):
        from r1_core.cuda import ops as cuda_ops
        return _out(cuda_ops.points_in_boxes(xyz, tb), np_p)
    return _out(_points_in_boxes_ref(xyz, tb), np_p)


def _points_in_boxes_ref(xyz: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    # Computed in float32 in this exact order (the CUDA kernel uses the same arithmetic, so
    # points on a face classify identically on both devices); float64 inputs stay float64.
    dt = torch.float64 if (xyz.dtype == torch.float64 or boxes.dtype == torch.float64) else torch.float32
    p, b = xyz.to(dt), boxes.to(dt)
    c, s = torch.cos(b[:, 6]), torch.sin(b[:, 6])
    out = torch.empty(p.shape[0], b.shape[0], dtype=torch.bool, device=p.device)
    step = max(1, (1 << 22) // max(1, b.shape[0]))
    for i in range(0, p.shape[0], step):
        dx = p[i:i + step, None, 0] - b[None, :, 0]
        dy = p[i:i + step, None, 1] - b[None, :, 1]
        dz = p[i:i + step, None, 2] - b[None, :, 2]
        lx = dx * c + dy * s
        ly = dy * c - dx * s
        out[i:i + step] = ((lx.abs() <= b[:, 3] * 0.5) & (ly.abs() <= b[:, 4] * 0.5)
                           & (dz.abs() <= b[:, 5] * 0.5))
    return out
