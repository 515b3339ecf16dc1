"""Batched point ops for the PointNet++ encoder: FPS, ball query, grouping, 3-NN interpolation,
voxel downsampling.

    from r1_core.geometry.points import furthest_point_sample, ball_query, gather_points, group_points
    idx = furthest_point_sample(xyz, 2048)            # (B, N, 3) -> long (B, 2048)
    centers = gather_points(xyz, idx)                 # (B, 2048, 3)
    nbr = ball_query(xyz, centers, 0.2, 64)           # long (B, 2048, 64)
    grouped = group_points(feats, nbr)                # (B, N, C) -> (B, 2048, 64, C)

Layout is channels-last: points (B, N, 3), features (B, N, C). Coordinates are processed in
float32 (float64/float16 inputs are converted) with the squared distance formed in one fixed
order, ((dx*dx + dy*dy) + dz*dz) without fused multiply-adds, on both the torch reference and
the CUDA kernels - so index results (FPS, ball query, 3-NN) are bit-identical across devices.
Ties always go to the lowest index.

Dispatch (see r1_core.geometry.dispatch): CPU tensors run the torch reference below; CUDA
tensors run the kernels of r1_core.cuda (built at first use); `reference_ops()` or
R1_OPS_BACKEND=reference forces the reference on CUDA. gather/group/three_interpolate and
voxel_downsample are differentiable on both paths.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from r1_core.geometry.dispatch import use_kernel

_CHUNK = 1 << 23     # elements per temporary distance block in the references


# ---- checks -------------------------------------------------------------------------------
def _check_xyz(t: Any, name: str) -> torch.Tensor:
    """A finite (B, N, 3) float tensor -> contiguous float32."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor, got {type(t).__name__}")
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (B, N, 3), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got {t.dtype}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: {int((~torch.isfinite(t)).any(-1).sum())} point(s) have non-finite coordinates")
    return t.to(torch.float32).contiguous()


def _same_device(**tensors: torch.Tensor) -> None:
    devs = {k: v.device for k, v in tensors.items()}
    if len(set(devs.values())) > 1:
        raise ValueError(f"tensors on different devices: {', '.join(f'{k}={v}' for k, v in devs.items())}")


def _check_index(idx: Any, name: str, B: int, N: int) -> torch.Tensor:
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor, got {type(idx).__name__}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: expected an int64/int32 index tensor, got {idx.dtype}")
    if idx.ndim < 2 or idx.shape[0] != B:
        raise ValueError(f"{name}: expected shape (B={B}, ...), got {tuple(idx.shape)}")
    if idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= N:
            raise ValueError(f"{name}: indices must lie in [0, {N}), got min {lo} max {hi}")
    return idx.long()


def _sqdist(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances of p (..., 3) to c (..., 3) (broadcast), in the kernels' exact order."""
    dx = p[..., 0] - c[..., 0]
    dy = p[..., 1] - c[..., 1]
    dz = p[..., 2] - c[..., 2]
    return (dx * dx + dy * dy) + dz * dz


# ---- furthest point sampling ---------------------------------------------------------------------
def furthest_point_sample(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Furthest point sampling: long (B, n) indices into xyz (B, N, 3).

    Starts at index 0; each next sample is the point furthest (squared Euclidean) from the
    samples so far, ties to the lowest index - deterministic. With fewer distinct points than
    n, once every point is at distance 0 the remaining samples are index 0.
    """
    xyz = _check_xyz(xyz, "xyz")
    B, N, _ = xyz.shape
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"furthest_point_sample: n must be an int >= 0, got {n!r}")
    if n > 0 and N == 0:
        raise ValueError("furthest_point_sample: xyz has no points (N = 0) to sample from")
    if n == 0 or B == 0:
        return torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    if use_kernel(xyz):
        from r1_core.cuda import ops
        return ops.furthest_point_sample(xyz, n)
    return _fps_ref(xyz, n)


def _fps_ref(xyz: torch.Tensor, n: int) -> torch.Tensor:
    B, N, _ = xyz.shape
    out = torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), device=xyz.device)
    rows = torch.arange(B, device=xyz.device)
    cur = torch.zeros(B, dtype=torch.long, device=xyz.device)
    for i in range(1, n):
        dist = torch.minimum(dist, _sqdist(xyz, xyz[rows, cur][:, None, :]))
        cur = torch.argmax(dist, dim=1)       # first maximum = lowest index on ties
        out[:, i] = cur
    return out


# ---- ball query -----------------------------------------------------------------------------------
def ball_query(xyz: torch.Tensor, centers: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """PointNet++ ball query: long (B, S, k) indices of the first k points (in index order)
    with squared distance < radius**2 to each centre; xyz (B, N, 3), centers (B, S, 3).

    Slots beyond the number found repeat the first found index. A centre with no point
    inside the radius gets its nearest point (ties to the lowest index) in every slot, so
    grouped coordinates relative to that centre exceed the radius - callers that must know
    can test `(group_points(xyz, idx) - centers[:, :, None]).norm(dim=-1) < radius`.
    """
    xyz = _check_xyz(xyz, "xyz")
    centers = _check_xyz(centers, "centers")
    _same_device(xyz=xyz, centers=centers)
    B, N, _ = xyz.shape
    if centers.shape[0] != B:
        raise ValueError(f"ball_query: xyz has batch {B}, centers {centers.shape[0]}")
    if not (isinstance(radius, (int, float)) and not isinstance(radius, bool)) or not radius > 0 \
            or radius == float("inf"):
        raise ValueError(f"ball_query: radius must be a finite number > 0, got {radius!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"ball_query: k must be an int >= 1, got {k!r}")
    S = centers.shape[1]
    if N == 0 and S > 0:
        raise ValueError("ball_query: xyz has no points (N = 0)")
    if S == 0 or B == 0:
        return torch.zeros(B, S, k, dtype=torch.long, device=xyz.device)
    if use_kernel(xyz):
        from r1_core.cuda import ops
        return ops.ball_query(xyz, centers, float(radius), k)
    return _ball_query_ref(xyz, centers, float(radius), k)


def _ball_query_ref(xyz: torch.Tensor, centers: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    B, N, _ = xyz.shape
    S = centers.shape[1]
    r2 = torch.tensor(radius, dtype=torch.float32) ** 2          # float32 r*r, as the kernel
    out = torch.empty(B, S, k, dtype=torch.long, device=xyz.device)
    step = max(1, _CHUNK // max(1, B * N))
    slots = torch.arange(k, device=xyz.device)
    for s0 in range(0, S, step):
        c = centers[:, s0:s0 + step]                             # (B, s, 3)
        d2 = _sqdist(xyz[:, None, :, :], c[:, :, None, :])       # (B, s, N)
        inside = d2 < r2.to(xyz.device)
        rank = inside.long().cumsum(-1)                         # 1-based rank among found
        count = rank[..., -1]                                   # (B, s)
        take = inside & (rank <= k)
        bi, si, ni = torch.nonzero(take, as_tuple=True)
        blk = torch.empty(B, c.shape[1], k, dtype=torch.long, device=xyz.device)
        blk[bi, si, rank[bi, si, ni] - 1] = ni
        first = torch.where(count > 0, blk[..., 0], torch.argmin(d2, dim=-1))
        fill = slots[None, None, :] >= count.clamp(max=k)[..., None]
        out[:, s0:s0 + step] = torch.where(fill, first[..., None], blk)
    return out


# ---- gather / group -------------------------------------------------------------------------------
def gather_points(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """out[b, ...] = feat[b, idx[b, ...]]: feat (B, N, C), idx (B, ...) -> (B, ..., C).
    Differentiable in feat (the CUDA backward scatter-adds with atomics)."""
    if not isinstance(feat, torch.Tensor) or feat.ndim != 3:
        raise ValueError(f"feat: expected a tensor of shape (B, N, C), got "
                         f"{tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__}")
    B, N, C = feat.shape
    idx = _check_index(idx, "idx", B, N)
    _same_device(feat=feat, idx=idx)
    if use_kernel(feat):
        from r1_core.cuda import ops
        return ops.gather_points(feat, idx)
    return _gather_ref(feat, idx)


def _gather_ref(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    B, N, C = feat.shape
    flat = idx.reshape(B, -1)
    out = torch.gather(feat, 1, flat[..., None].expand(-1, -1, C))
    return out.reshape(*idx.shape, C)


def group_points(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Neighbourhood grouping: feat (B, N, C), idx (B, S, k) from ball_query -> (B, S, k, C)."""
    if isinstance(idx, torch.Tensor) and idx.ndim != 3:
        raise ValueError(f"group_points: idx must be (B, S, k), got {tuple(idx.shape)}")
    return gather_points(feat, idx)


# ---- three-NN interpolation ---------------------------------------------------------------------------
def three_nn(unknown: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 nearest known points of every unknown point: (dist (B, n, 3) Euclidean, float32,
    ascending; idx long (B, n, 3)), ties to the lowest index. known needs >= 3 points."""
    unknown = _check_xyz(unknown, "unknown")
    known = _check_xyz(known, "known")
    _same_device(unknown=unknown, known=known)
    if unknown.shape[0] != known.shape[0]:
        raise ValueError(f"three_nn: unknown has batch {unknown.shape[0]}, known {known.shape[0]}")
    B, n, _ = unknown.shape
    m = known.shape[1]
    if m < 3:
        raise ValueError(f"three_nn: known needs at least 3 points, got {m}")
    if n == 0 or B == 0:
        return (torch.zeros(B, n, 3, device=unknown.device), torch.zeros(B, n, 3, dtype=torch.long, device=unknown.device))
    if use_kernel(unknown):
        from r1_core.cuda import ops
        return ops.three_nn(unknown, known)
    return _three_nn_ref(unknown, known)


def _three_nn_ref(unknown: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, n, _ = unknown.shape
    m = known.shape[1]
    dist = torch.empty(B, n, 3, device=unknown.device)
    idx = torch.empty(B, n, 3, dtype=torch.long, device=unknown.device)
    step = max(1, _CHUNK // max(1, B * m))
    for s0 in range(0, n, step):
        d2 = _sqdist(known[:, None, :, :], unknown[:, s0:s0 + step, None, :])   # (B, s, m)
        for j in range(3):
            a = torch.argmin(d2, dim=-1)                 # first minimum: lowest index on ties
            dist[:, s0:s0 + step, j] = torch.gather(d2, -1, a[..., None])[..., 0]
            idx[:, s0:s0 + step, j] = a
            d2.scatter_(-1, a[..., None], float("inf"))
    return dist.sqrt(), idx


def inverse_distance_weights(dist: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """PointNet++ feature-propagation weights from three_nn distances: 1/(d + eps), normalised
    to sum to 1 over the last dimension."""
    recip = 1.0 / (dist + eps)
    return recip / recip.sum(-1, keepdim=True)


def three_interpolate(feat: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out[b, i] = sum_j weight[b, i, j] * feat[b, idx[b, i, j]]: feat (B, m, C), idx/weight
    (B, n, 3) -> (B, n, C). Differentiable in feat and weight."""
    if not isinstance(feat, torch.Tensor) or feat.ndim != 3:
        raise ValueError(f"feat: expected a tensor of shape (B, m, C), got "
                         f"{tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__}")
    B, m, C = feat.shape
    idx = _check_index(idx, "idx", B, m)
    if idx.ndim != 3 or idx.shape[-1] != 3:
        raise ValueError(f"idx: expected shape (B, n, 3), got {tuple(idx.shape)}")
    if not isinstance(weight, torch.Tensor) or weight.shape != idx.shape:
        raise ValueError(f"weight: expected shape {tuple(idx.shape)} like idx, got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    _same_device(feat=feat, idx=idx, weight=weight)
    weight = weight.to(feat.dtype)
    if use_kernel(feat):
        from r1_core.cuda import ops
        return ops.three_interpolate(feat, idx, weight)
    return _three_interpolate_ref(feat, idx, weight)


def _three_interpolate_ref(feat: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    g = _gather_ref(feat, idx)                                  # (B, n, 3, C)
    return (g * weight[..., None]).sum(2)


# ---- voxel downsampling ---------------------------------------------------------------------------
_KEY_BITS = 21
_KEY_MAX = (1 << (_KEY_BITS - 1)) - 1


def voxel_keys(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer voxel coordinates floor(xyz / voxel_size) (N, 3) int64 and their packed int64
    key (21 bits per axis, offset by 2**20). Raises ValueError beyond +-2**20 voxels per axis."""
    v = torch.floor(xyz.to(torch.float32) / torch.tensor(voxel_size, dtype=torch.float32)).to(torch.int64)
    if v.numel() and int(v.abs().max()) > _KEY_MAX:
        raise ValueError(f"voxel coordinates exceed +-{_KEY_MAX} voxels per axis (|xyz| up to "
                         f"{float(xyz.abs().max()):.4g} m at voxel_size {voxel_size}); shift or crop the cloud")
    o = v + (_KEY_MAX + 1)
    return v, (o[:, 0] << (2 * _KEY_BITS)) | (o[:, 1] << _KEY_BITS) | o[:, 2]


def voxel_downsample(points: Any, voxel_size: float, return_inverse: bool = False) -> Any:
    """Average every column of the points (N, D) (D >= 3; xyz first, e.g. xyz+rgb) that fall
    in the same voxel (floor(xyz / voxel_size)) -> (M, D), voxels ordered by their first point.

    numpy in, numpy out. With return_inverse also returns long (N,) mapping each input
    point to its output row. Differentiable in the point values (the mean is linear).
    """
    was_np = isinstance(points, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(points)) if was_np else points
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"points: expected a numpy array or torch tensor, got {type(points).__name__}")
    if t.ndim != 2 or t.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, D) with D >= 3 (xyz first), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"points: expected a floating array, got {t.dtype}")
    if not (isinstance(voxel_size, (int, float)) and not isinstance(voxel_size, bool)) or not voxel_size > 0 \
            or voxel_size == float("inf"):
        raise ValueError(f"voxel_downsample: voxel_size must be a finite number > 0, got {voxel_size!r}")
    if t.numel() and not bool(torch.isfinite(t[:, :3]).all()):
        raise ValueError(f"points: {int((~torch.isfinite(t[:, :3])).any(1).sum())} point(s) have non-finite xyz")
    if t.shape[0] == 0:
        out, inv = t.new_zeros(0, t.shape[1]), torch.zeros(0, dtype=torch.long, device=t.device)
    elif use_kernel(t):
        from r1_core.cuda import ops
        out, inv = ops.voxel_downsample(t, float(voxel_size))
    else:
        out, inv = _voxel_downsample_ref(t, float(voxel_size))
    if was_np:
        out, inv = out.detach().cpu().numpy(), inv.cpu().numpy()
    return (out, inv) if return_inverse else out


def _voxel_downsample_ref(t: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    _, key = voxel_keys(t[:, :3], voxel_size)
    uniq, inv = torch.unique(key, return_inverse=True)
    M = uniq.shape[0]
    N = t.shape[0]
    first = torch.full((M,), N, dtype=torch.long, device=t.device)
    first.scatter_reduce_(0, inv, torch.arange(N, device=t.device), reduce="amin")
    order = torch.argsort(first)                     # voxels by their first point
    rank = torch.empty_like(order)
    rank[order] = torch.arange(M, device=t.device)
    inv = rank[inv]
    acc = torch.zeros(M, t.shape[1], dtype=torch.float64, device=t.device).index_add(0, inv, t.to(torch.float64))
    cnt = torch.bincount(inv, minlength=M).to(torch.float64)
    return (acc / cnt[:, None]).to(t.dtype), inv
