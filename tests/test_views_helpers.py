"""Hand-built box worlds for the view-selection tests: axis-aligned boxes ray-cast in numpy
(depth, colour, instance id), cameras placed by hand with look_at. No tests here."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# Every box is shifted by this: surfaces off the voxel grid, as in real scans (a face exactly on
# a voxel boundary lands on either side by float rounding, which muddles exact comparisons).
OFFSET = np.array([0.013, 0.027, 0.011])


@dataclass
class BoxWorld:
    lo: list = field(default_factory=list)        # (3,) corners
    hi: list = field(default_factory=list)
    rgb: list = field(default_factory=list)       # (3,) 0..255
    inst: list = field(default_factory=list)      # instance id (0 = structure)
    label: list = field(default_factory=list)     # nyu40 id

    def add(self, lo, hi, rgb, inst=0, label=0) -> "BoxWorld":
        self.lo.append(np.asarray(lo, float) + OFFSET)
        self.hi.append(np.asarray(hi, float) + OFFSET)
        self.rgb.append(np.asarray(rgb, float))
        self.inst.append(inst)
        self.label.append(label)
        return self

    def box7(self, inst: int) -> np.ndarray:
        i = self.inst.index(inst)
        lo, hi = self.lo[i], self.hi[i]
        return np.concatenate([(lo + hi) / 2, hi - lo, [0.0]])


def room(W=6.0, D=5.0, H=2.6) -> BoxWorld:
    """Floor and four walls (instance 0, structure labels)."""
    w = BoxWorld()
    t = 0.1
    w.add([0, 0, -t], [W, D, 0], (150, 110, 70), 0, 2)
    w.add([-t, 0, 0], [0, D, H], (230, 230, 225), 0, 1)
    w.add([W, 0, 0], [W + t, D, H], (230, 230, 225), 0, 1)
    w.add([0, -t, 0], [W, 0, H], (220, 215, 200), 0, 1)
    w.add([0, D, 0], [W, D + t, H], (220, 215, 200), 0, 1)
    return w


def intrinsics(W=160, H=120, fov_deg=70.0) -> np.ndarray:
    f = (W / 2) / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])


def look_at(eye, target) -> np.ndarray:
    """T_map_optical of a camera at `eye` looking at `target` (z up, no roll)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = eye
    return T


def render(world: BoxWorld, K: np.ndarray, T: np.ndarray, W=160, H=120, max_depth=8.0):
    """Ray-cast -> (color uint8 (H,W,3), depth float32 metres (0 = miss), instance int32)."""
    v, u = np.mgrid[0:H, 0:W]
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1).reshape(-1, 3)
    dirs = d_cam @ T[:3, :3].T
    o = T[:3, 3]
    lo, hi = np.stack(world.lo), np.stack(world.hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1 = (lo[None] - o) * inv[:, None]
        t2 = (hi[None] - o) * inv[:, None]
    tmin = np.nanmax(np.minimum(t1, t2), -1)
    tmax = np.nanmin(np.maximum(t1, t2), -1)
    hit = (tmax >= tmin) & (tmax > 1e-6)
    t = np.where(hit, np.maximum(tmin, 0), np.inf)
    best = np.argmin(t, 1)
    tb = t[np.arange(t.shape[0]), best]
    ok = np.isfinite(tb) & (tb * 1.0 < max_depth)
    depth = np.where(ok, tb, 0.0).reshape(H, W).astype(np.float32)    # z-depth: d_cam has z = 1
    # shade by the face normal so colours vary like real surfaces
    p = o + dirs * np.where(ok, tb, 0)[:, None]
    lo_b, hi_b = lo[best], hi[best]
    dist = np.stack([np.abs(p - lo_b), np.abs(p - hi_b)], -1).min(-1)
    axis = np.argmin(dist, 1)
    shade = np.array([0.7, 0.65, 0.95])[axis]
    rgb = np.stack(world.rgb)[best] * shade[:, None]
    color = np.where(ok[:, None], rgb, 0).reshape(H, W, 3).clip(0, 255).astype(np.uint8)
    inst = np.where(ok, np.asarray(world.inst)[best], -1).reshape(H, W).astype(np.int32)
    return color, depth, inst


def object_fraction_visible(world: BoxWorld, inst: int, K, T, W=160, H=120, n=2000, seed=0) -> float:
    """Ground truth: fraction of points sampled on the object's surface (all faces but the
    bottom, which stands on the floor) that the camera sees: projected onto a pixel showing the
    object at that depth."""
    i = world.inst.index(inst)
    lo, hi = world.lo[i], world.hi[i]
    rng = np.random.default_rng(seed)
    pts = rng.uniform(lo, hi, (n, 3))
    face = rng.integers(0, 5, n)                  # -x +x -y +y +z
    ax = np.array([0, 0, 1, 1, 2])[face]
    side = np.array([0, 1, 0, 1, 1])[face]
    pts[np.arange(n), ax] = np.where(side == 1, hi[ax], lo[ax])
    _, depth, im = render(world, K, T, W, H)
    Rt = T[:3, :3].T
    cam = (pts - T[:3, 3]) @ Rt.T
    z = cam[:, 2]
    u = np.rint(K[0, 0] * cam[:, 0] / np.where(z > 0, z, 1) + K[0, 2]).astype(int)
    v = np.rint(K[1, 1] * cam[:, 1] / np.where(z > 0, z, 1) + K[1, 2]).astype(int)
    ok = (z > 0.05) & (u >= 0) & (v >= 0) & (u < W) & (v < H)
    ok[ok] &= (im[v[ok], u[ok]] == inst) & (np.abs(depth[v[ok], u[ok]] - z[ok]) < 0.03)
    return float(ok.mean())
