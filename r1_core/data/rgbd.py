"""RGB-D frames and pinhole intrinsics shared by the renderer, the bag writer/reader and fusion.

    K = CameraIntrinsics().K                 # 640×480, fx = fy = 525, principal point at the centre
    frame = RGBDFrame(color, depth_mm, K, T_map_optical, stamp_ns)
    xyz = backproject(frame.depth, frame.K, frame.T_map_optical)   # (M, 3) map-frame points

Conventions (docs/conventions.md): depth uint16 mm (0 = invalid) or float32 m; colour rgb8;
`T_map_optical` maps optical-frame points (x right, y down, z forward) into `map`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CameraIntrinsics:
    width: int = 640
    height: int = 480
    fx: float = 525.0
    fy: float = 525.0
    cx: float = 319.5
    cy: float = 239.5

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"intrinsics must be positive: {self}")

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        K = np.asarray(K, np.float64).reshape(3, 3)
        return cls(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))


@dataclass
class RGBDFrame:
    color: np.ndarray          # (H, W, 3) uint8 RGB
    depth: np.ndarray          # (H, W) uint16 mm (0 invalid) or float32 m (NaN/0 invalid)
    K: np.ndarray              # (3, 3)
    T_map_optical: np.ndarray  # (4, 4) float64 camera-to-map
    stamp_ns: int = 0
    instance: np.ndarray | None = None   # (H, W) int32 object_id + 1 (synthetic frames only)

    def depth_m(self) -> np.ndarray:
        """Depth in metres as float32 with 0 where invalid."""
        if self.depth.dtype == np.uint16:
            return self.depth.astype(np.float32) * 1e-3
        d = self.depth.astype(np.float32)
        return np.where(np.isfinite(d), d, 0.0).astype(np.float32)


def backproject(depth: np.ndarray, K: np.ndarray, T_map_optical: np.ndarray | None = None,
                stride: int = 1) -> np.ndarray:
    """Valid depth pixels as 3D points (optical frame, or map frame when a pose is given)."""
    d = depth.astype(np.float32) * (1e-3 if depth.dtype == np.uint16 else 1.0)
    d = d[::stride, ::stride]
    v, u = np.nonzero(np.isfinite(d) & (d > 0))
    z = d[v, u]
    u = u * stride
    v = v * stride
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1).astype(np.float64)
    if T_map_optical is not None:
        pts = pts @ np.asarray(T_map_optical)[:3, :3].T + np.asarray(T_map_optical)[:3, 3]
    return pts


def look_at(position: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_map_optical of a camera at `position` looking at `target` (optical z forward, y down)."""
    p = np.asarray(position, np.float64)
    f = np.asarray(target, np.float64) - p
    f /= np.linalg.norm(f)
    r = np.cross(f, np.asarray(up, np.float64))
    if np.linalg.norm(r) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = r, d, f, p
    return T


def visible_point_counts(points: np.ndarray, instance_labels: np.ndarray, depth: np.ndarray, K: np.ndarray,
                         T_map_optical: np.ndarray, tol: float = 0.03) -> dict[int, int]:
    """object_id → how many of its cloud points this view sees: points that project inside the
    image in front of the camera and agree with the depth image within `tol` metres (not occluded,
    not in a hole). `depth` is uint16 mm or float32 m; instance labels are object_id + 1."""
    d = depth.astype(np.float32) * (1e-3 if depth.dtype == np.uint16 else 1.0)
    T = np.asarray(T_map_optical, np.float64)
    p = (np.asarray(points, np.float64)[:, :3] - T[:3, 3]) @ T[:3, :3]
    z = p[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    u = np.round(p[:, 0] / zs * K[0, 0] + K[0, 2]).astype(np.int64)
    v = np.round(p[:, 1] / zs * K[1, 1] + K[1, 2]).astype(np.int64)
    h, w = d.shape
    ok = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    idx = np.flatnonzero(ok)
    dz = d[v[idx], u[idx]]
    seen = idx[(dz > 0) & np.isfinite(dz) & (np.abs(dz - z[idx]) <= tol)]
    labels = np.asarray(instance_labels)[seen]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return {int(i) - 1: int(c) for i, c in zip(ids, counts)}
