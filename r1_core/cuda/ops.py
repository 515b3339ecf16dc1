"""Thin wrappers over the CUDA extension, with autograd where training needs it.

Called by r1_core.geometry.points / boxes after their argument checks (use those APIs, not
these); every function takes CUDA tensors and mirrors the torch reference of the same name.
float16/bfloat16 features are computed in float32 and cast back.
"""
from __future__ import annotations

import numpy as np
import torch

from r1_core.cuda import load_extension


def _ext():
    return load_extension()


def furthest_point_sample(xyz: torch.Tensor, n: int) -> torch.Tensor:
    return _ext().furthest_point_sample(xyz.contiguous(), int(n))


def ball_query(xyz: torch.Tensor, centers: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    r2 = float(np.float32(radius) * np.float32(radius))     # the reference's float32 r*r
    return _ext().ball_query(xyz.contiguous(), centers.contiguous(), r2, int(k))


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.n = feat.shape[1]
        return _ext().gather_rows(feat.contiguous(), idx)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (idx,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        g = g.contiguous()
        if g.dtype in (torch.float32, torch.float64):
            return _ext().scatter_add_rows(g, idx, ctx.n), None
        gf = _ext().scatter_add_rows(g.float(), idx, ctx.n)
        return gf.to(g.dtype), None


def gather_points(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    B, N, C = feat.shape
    flat = idx.reshape(B, -1).contiguous()
    return _Gather.apply(feat, flat).reshape(*idx.shape, C)


def three_nn(unknown: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist, idx = _ext().three_nn(unknown.contiguous(), known.contiguous())
    return dist, idx


class _ThreeInterpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feat: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(feat, idx, weight)
        return _ext().three_interpolate(feat, idx, weight)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        feat, idx, weight = ctx.saved_tensors
        gf, gw = _ext().three_interpolate_backward(g.contiguous(), feat, idx, weight, ctx.needs_input_grad[0],
                                                   ctx.needs_input_grad[2])
        return (gf if ctx.needs_input_grad[0] else None), None, (gw if ctx.needs_input_grad[2] else None)


def three_interpolate(feat: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    dtype = feat.dtype
    if dtype not in (torch.float32, torch.float64):
        feat, weight = feat.float(), weight.float()
    out = _ThreeInterpolate.apply(feat.contiguous(), idx.contiguous(), weight.contiguous())
    return out.to(dtype)


_MODES = {("iou", "aabb"): 0, ("giou", "aabb"): 1, ("giou", "hull"): 2}


def box_iou(a: torch.Tensor, b: torch.Tensor, giou: bool, enclosure: str, pairwise: bool) -> torch.Tensor:
    mode = _MODES[("giou" if giou else "iou", enclosure if giou else "aabb")]
    dt = torch.promote_types(a.dtype, b.dtype)
    if dt not in (torch.float32, torch.float64):
        dt = torch.float32
    return _ext().box_iou(a.to(dt).contiguous(), b.to(dt).contiguous(), mode, pairwise)


def points_in_boxes(xyz: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    dt = torch.float64 if (xyz.dtype == torch.float64 or boxes.dtype == torch.float64) else torch.float32
    p, b = xyz.to(dt).contiguous(), boxes.to(dt).contiguous()
    cs = torch.stack([torch.cos(b[:, 6]), torch.sin(b[:, 6])], 1).contiguous()   # torch's cos/sin, as the reference
    return _ext().points_in_boxes(p, b, cs)


class _VoxelMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pts: torch.Tensor, ids: torch.Tensor, M: int) -> torch.Tensor:
        sums = _ext().voxel_scatter_sum(pts.contiguous(), ids, M)
        cnt = torch.bincount(ids, minlength=M).to(torch.float64)
        ctx.save_for_backward(ids, cnt)
        return (sums / cnt[:, None]).to(pts.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        ids, cnt = ctx.saved_tensors
        return (g / cnt[:, None].to(g.dtype))[ids], None, None


def voxel_downsample(points: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    from r1_core.geometry.points import voxel_keys

    _, key = voxel_keys(points[:, :3], voxel_size)
    N = key.shape[0]
    bits = max(10, int(np.ceil(np.log2(max(2, 2 * N)))))
    pos, first = _ext().voxel_hash_insert(key.contiguous(), bits)
    occ = torch.nonzero(first != torch.iinfo(torch.int64).max).squeeze(1)
    order = torch.argsort(first[occ])                        # voxels by their first point
    rank = torch.empty(1 << bits, dtype=torch.long, device=points.device)
    rank[occ[order]] = torch.arange(occ.numel(), device=points.device)
    ids = rank[pos]
    return _VoxelMean.apply(points, ids, int(occ.numel())), ids
