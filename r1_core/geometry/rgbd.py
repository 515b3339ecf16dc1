"""RGB-D back-projection, pinhole intrinsics, depth validity and pose composition.

    from r1_core.geometry.rgbd import Intrinsics, backproject, intrinsics_from_camera_info
    K = intrinsics_from_camera_info(msg.k, msg.width, msg.height, msg.d, msg.distortion_model)
    cloud = backproject(color, depth, K, T_map_optical)     # (N, 6) float32 xyz (map) + rgb 0..255

Frames (docs/conventions.md, REP 103/105): poses are `T_map_optical`, 4x4 camera-to-map
transforms of the camera's *optical* frame (x right, y down, z forward);
`T_map_optical = T_map_link @ T_LINK_OPTICAL` converts a REP 103 body frame (x forward,
y left, z up). Pixel (u, v) = (column, row) with pixel centres at integer coordinates.

Depth: `uint16` millimetres (0 = invalid; `depth_scale` m per unit) or `float32` metres
(NaN, +-inf and <= 0 invalid, as REP 117). Lens distortion is handled explicitly: the
per-pixel ray table of `pixel_rays` is undistorted with OpenCV (plumb_bob / rational_polynomial
/ equidistant); zero coefficients skip it.

The arithmetic of `world_points` is fixed (float32, no fused multiply-adds, one order) so
that the CPU fusion map and the CUDA fusion kernel place every pixel in the same voxel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Optical frame (z forward, x right, y down) expressed in a REP 103 body frame (x forward, y left, z up).
T_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0],
                           [-1.0, 0.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 1.0]])
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class FrameError(ValueError):
    """An RGB-D frame or its calibration/pose is unusable; `reason` is a short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera: focal lengths and principal point in pixels, image size, distortion."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self):
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in vals) or self.fx <= 0 or self.fy <= 0:
            raise FrameError("bad_intrinsics", f"intrinsics: fx, fy must be finite and > 0, cx, cy finite; "
                                               f"got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.width <= 0 or self.height <= 0:
            raise FrameError("bad_intrinsics", f"intrinsics: image size must be positive, got "
                                               f"{self.width}x{self.height}")
        if not all(math.isfinite(d) for d in self.distortion):
            raise FrameError("bad_intrinsics", f"intrinsics: non-finite distortion {self.distortion}")
        if self.has_distortion and self.distortion_model not in DISTORTION_MODELS:
            raise FrameError("bad_intrinsics", f"unknown distortion_model {self.distortion_model!r}; "
                                               f"choose one of {list(DISTORTION_MODELS)}")

    @property
    def has_distortion(self) -> bool:
        return any(d != 0.0 for d in self.distortion)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K: Any, width: int, height: int, distortion: Sequence[float] = (),
               distortion_model: str = "plumb_bob") -> "Intrinsics":
        """From a 3x3 matrix (or 9 numbers, row-major, as CameraInfo.k)."""
        k = np.asarray(K, dtype=np.float64)
        if k.size != 9:
            raise FrameError("bad_intrinsics", f"K: expected 9 numbers (3x3), got shape {k.shape}")
        k = k.reshape(3, 3)
        if not np.isfinite(k).all():
            raise FrameError("bad_intrinsics", f"K: non-finite entries {k.tolist()}")
        if k[0, 1] != 0 or k[1, 0] != 0 or not np.allclose(k[2], [0, 0, 1]):
            raise FrameError("bad_intrinsics", f"K: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                                               f"(no skew), got {k.tolist()}")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height),
                   tuple(float(d) for d in distortion), distortion_model)


def intrinsics_from_camera_info(k: Sequence[float], width: int, height: int, d: Sequence[float] = (),
                                distortion_model: str = "plumb_bob") -> Intrinsics:
    """Intrinsics from sensor_msgs/CameraInfo fields (k, width, height, d, distortion_model)."""
    return Intrinsics.from_K(k, width, height, d, distortion_model or "plumb_bob")


# ---- rays and back-projection ------------------------------------------------------------------------
_RAY_CACHE: dict[Intrinsics, tuple[np.ndarray, np.ndarray]] = {}


def pixel_rays(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(rx, ry) float32 (H, W): the optical-frame ray of every pixel is (rx, ry, 1), so a pixel
    at depth z is the point (z*rx, z*ry, z). Undistorted when the intrinsics carry distortion.
    Cached per intrinsics (read-only arrays)."""
    hit = _RAY_CACHE.get(intr)
    if hit is not None:
        return hit
    u, v = np.meshgrid(np.arange(intr.width, dtype=np.float64), np.arange(intr.height, dtype=np.float64))
    if intr.has_distortion:
        import cv2  # only needed for distorted cameras

        pix = np.stack([u.ravel(), v.ravel()], -1)[:, None, :]
        D = np.asarray(intr.distortion, dtype=np.float64)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
        if intr.distortion_model == "equidistant":
            und = cv2.fisheye.undistortPoints(pix, intr.K, D[:4], criteria=crit)
        else:
            und = cv2.undistortPoints(pix, intr.K, D, R=None, P=None, criteria=crit)
        rx = und[:, 0, 0].reshape(intr.height, intr.width)
        ry = und[:, 0, 1].reshape(intr.height, intr.width)
    else:
        rx, ry = (u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy
    out = (np.ascontiguousarray(rx, dtype=np.float32), np.ascontiguousarray(ry, dtype=np.float32))
    for a in out:
        a.flags.writeable = False
    if len(_RAY_CACHE) > 16:
        _RAY_CACHE.clear()
    _RAY_CACHE[intr] = out
    return out


def depth_to_metres(depth: np.ndarray, depth_scale: float = 0.001) -> np.ndarray:
    """float32 metres (H, W) with NaN where invalid: uint16 (0 invalid) times depth_scale, or
    float32 metres (NaN/inf/<= 0 invalid)."""
    if depth.dtype == np.uint16:
        z = depth.astype(np.float32) * np.float32(depth_scale)
        z[depth == 0] = np.nan
        return z
    if depth.dtype == np.float32:
        z = depth.copy()
        z[~(np.isfinite(z) & (z > 0))] = np.nan
        return z
    raise FrameError("bad_depth_dtype", f"depth: expected uint16 (mm, 16UC1) or float32 (m, 32FC1), got {depth.dtype}")


def check_pose(T: Any, name: str = "T_map_optical", tol: float = 1e-3) -> np.ndarray:
    """A 4x4 rigid transform as float64; FrameError('bad_pose') if not finite, not 4x4, bottom
    row not (0, 0, 0, 1), or the rotation not orthonormal with det +1 (within tol)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise FrameError("bad_pose", f"{name}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise FrameError("bad_pose", f"{name}: non-finite entries")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9):
        raise FrameError("bad_pose", f"{name}: bottom row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > tol or np.linalg.det(R) <= 0:
        raise FrameError("bad_pose", f"{name}: rotation is not orthonormal with det +1 "
                                     f"(|R^T R - I| = {err:.3g}, det = {np.linalg.det(R):.4g})")
    return T


def world_points(z: np.ndarray, rx: np.ndarray, ry: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Map-frame points (..., 3) float32 of depths z (float32) along rays (rx, ry, 1), by the
    fixed float32 order p = ((R[:,0]*x + R[:,1]*y) + R[:,2]*z) + t with x = z*rx, y = z*ry."""
    R = T[:3, :3].astype(np.float32)
    t = T[:3, 3].astype(np.float32)
    z = np.asarray(z, np.float32)
    x, y = z * rx, z * ry
    out = np.empty(z.shape + (3,), np.float32)
    for i in range(3):
        out[..., i] = ((x * R[i, 0] + y * R[i, 1]) + z * R[i, 2]) + t[i]
    return out


def backproject(color: np.ndarray | None, depth: np.ndarray, intr: Intrinsics, T_map_optical: Any = None,
                depth_scale: float = 0.001, min_depth: float = 0.0, max_depth: float = math.inf,
                stride: int = 1) -> np.ndarray:
    """Valid pixels of one RGB-D frame as points: (N, 6) float32 xyz (map frame, or the optical
    frame when no pose is given) + rgb 0..255, or (N, 3) without colour. Pixels are taken in
    row-major order every `stride` pixels; depth outside [min_depth, max_depth] is dropped."""
    check_frame(color, depth, intr)
    T = np.eye(4) if T_map_optical is None else check_pose(T_map_optical)
    z = depth_to_metres(depth, depth_scale)[::stride, ::stride]
    rx, ry = pixel_rays(intr)
    ok = np.isfinite(z) & (z >= min_depth) & (z <= max_depth)
    pts = world_points(z[ok], rx[::stride, ::stride][ok], ry[::stride, ::stride][ok], T)
    if color is None:
        return pts
    return np.concatenate([pts, color[::stride, ::stride][ok].astype(np.float32)], 1)


def check_frame(color: Any, depth: Any, intr: Intrinsics) -> None:
    """FrameError for a malformed frame: wrong types/dtypes/shapes or sizes that disagree."""
    if not isinstance(depth, np.ndarray):
        raise FrameError("bad_depth_dtype", f"depth: expected a numpy array, got {type(depth).__name__}")
    if depth.dtype not in (np.uint16, np.float32):
        raise FrameError("bad_depth_dtype", f"depth: expected uint16 (mm) or float32 (m), got {depth.dtype}")
    if depth.ndim != 2:
        raise FrameError("bad_shape", f"depth: expected (H, W), got shape {depth.shape}")
    if depth.shape != (intr.height, intr.width):
        raise FrameError("size_mismatch", f"depth is {depth.shape[1]}x{depth.shape[0]} but the intrinsics "
                                          f"are for {intr.width}x{intr.height}")
    if color is None:
        return
    if not isinstance(color, np.ndarray):
        raise FrameError("bad_color", f"color: expected a numpy array, got {type(color).__name__}")
    if color.dtype != np.uint8 or color.ndim != 3 or color.shape[2] != 3:
        raise FrameError("bad_color", f"color: expected uint8 (H, W, 3) rgb8, got {color.dtype} {color.shape}")
    if color.shape[:2] != depth.shape:
        raise FrameError("size_mismatch", f"color is {color.shape[1]}x{color.shape[0]} but depth is "
                                          f"{depth.shape[1]}x{depth.shape[0]}; register/resize them first")


# ---- poses ----------------------------------------------------------------------------------------------
def compose(*transforms: Any) -> np.ndarray:
    """Product of 4x4 transforms left to right: compose(T_a_b, T_b_c) = T_a_c."""
    out = np.eye(4)
    for T in transforms:
        out = out @ np.asarray(T, dtype=np.float64)
    return out


def invert(T: Any) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t)."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def transform_from_tq(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 from a translation and a unit quaternion (x, y, z, w) as in geometry_msgs/Transform.
    The quaternion is normalised; a zero or non-finite one is a FrameError('bad_pose')."""
    q = np.asarray(quaternion_xyzw, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    if q.shape != (4,) or t.shape != (3,) or not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise FrameError("bad_pose", f"transform: expected finite translation (3) and quaternion (4), "
                                     f"got {t.tolist()} {q.tolist()}")
    nq = np.linalg.norm(q)
    if nq < 1e-12:
        raise FrameError("bad_pose", "transform: zero quaternion")
    x, y, z, w = q / nq
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = t
    return T


def optical_from_link(T_map_link: Any) -> np.ndarray:
    """T_map_optical from the pose of a REP 103 camera body frame (x forward, y left, z up)."""
    return compose(T_map_link, T_LINK_OPTICAL)


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """T_map_optical of a camera at `eye` looking at `target`, image 'up' towards `up`."""
    e, g, u = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    zf = g - e
    if np.linalg.norm(zf) < 1e-12:
        raise FrameError("bad_pose", "look_at: eye and target coincide")
    zf /= np.linalg.norm(zf)
    xr = np.cross(zf, u)
    if np.linalg.norm(xr) < 1e-9:
        raise FrameError("bad_pose", "look_at: viewing direction parallel to up")
    xr /= np.linalg.norm(xr)
    yd = np.cross(zf, xr)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = xr, yd, zf, e
    return T
