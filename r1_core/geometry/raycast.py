"""Analytic ray casting of box rooms: exact RGB-D frames and ground truth for fusion tests.

    from r1_core.geometry.raycast import BoxScene, demo_room, orbit_poses
    scene = demo_room()
    K = scene_intrinsics(160, 120)
    for T in orbit_poses(scene, 20):
        color, depth = scene.render(K, T, noise=True, rng=rng)    # rgb8, uint16 mm

A scene is a room shell (the camera is inside an axis-aligned box whose inner faces are
walls, floor and ceiling) plus axis-aligned solid boxes. Every face has its own flat colour,
so the true colour of any surface point is known exactly. Depth noise (optional) follows the
Kinect model sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 m, with flying pixels (depth interpolated
between foreground and background) at a fraction of depth discontinuities, random dropouts
and millimetre quantisation - the artefacts the fusion map's filters exist for.

This is a small exact reference for geometry tests and benchmarks; the synthetic world of
r1_core.data.synthetic is the full procedural scene engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from r1_core.geometry.rgbd import Intrinsics, look_at, pixel_rays


@dataclass
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    colors: np.ndarray            # (6, 3) uint8: faces -x, +x, -y, +y, -z, +z


@dataclass
class BoxScene:
    room: Box                     # the shell (camera inside)
    boxes: list[Box] = field(default_factory=list)

    def raycast(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter t of the first hit (inf where none) and its colour (N, 3) uint8 for
        rays origin + t * dirs (dirs (N, 3), not necessarily unit)."""
        n = len(dirs)
        best = np.full(n, np.inf)
        col = np.zeros((n, 3), np.uint8)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            for box, inside in [(self.room, True)] + [(b, False) for b in self.boxes]:
                t1 = (np.asarray(box.lo) - origin) * inv
                t2 = (np.asarray(box.hi) - origin) * inv
                tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
                tmin = np.where(np.isnan(tmin), -np.inf, tmin)
                tmax = np.where(np.isnan(tmax), np.inf, tmax)
                t_near, t_far = tmin.max(1), tmax.min(1)
                if inside:       # leaving the shell through its far face
                    t = t_far
                    axis = tmax.argmin(1)
                    side = (dirs[np.arange(n), axis] > 0).astype(int)     # + face if moving +
                else:
                    t = np.where((t_near <= t_far) & (t_near > 1e-9), t_near, np.inf)
                    axis = tmin.argmax(1)
                    side = (dirs[np.arange(n), axis] < 0).astype(int)     # + face if coming from +
                hit = t < best
                best = np.where(hit, t, best)
                col[hit] = box.colors[(2 * axis + side)[hit]]
        return best, col

    def render(self, intr: Intrinsics, T_map_optical: np.ndarray, noise: bool = False,
               rng: np.random.Generator | None = None, flying_fraction: float = 0.3,
               dropout: float = 0.01, return_clean: bool = False) -> tuple[np.ndarray, ...]:
        """(color uint8 (H, W, 3), depth uint16 mm (H, W)) seen from T_map_optical; with
        return_clean also the noise-free float32 depth in metres."""
        color, z = self.render_float(intr, T_map_optical)
        clean = z
        if noise:
            rng = rng or np.random.default_rng(0)
            z = z.astype(np.float64)
            sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
            zn = z + rng.normal(size=z.shape) * sigma
            # flying pixels: at depth jumps, some pixels take a depth between both sides
            jump = np.zeros(z.shape, bool)
            jump[:, 1:] |= np.abs(z[:, 1:] - z[:, :-1]) > 0.05 * z[:, 1:]
            jump[1:] |= np.abs(z[1:] - z[:-1]) > 0.05 * z[1:]
            fly = jump & (rng.random(z.shape) < flying_fraction)
            right = np.roll(z, -1, axis=1)
            mix = rng.uniform(0.2, 0.8, z.shape)
            zn = np.where(fly, mix * z + (1 - mix) * right, zn)
            zn[rng.random(z.shape) < dropout] = 0
            z = zn
        depth = np.where(np.isfinite(z) & (z > 0), np.rint(z * 1000.0), 0).clip(0, 65535).astype(np.uint16)
        return (color, depth, clean) if return_clean else (color, depth)

    def render_float(self, intr: Intrinsics, T_map_optical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free (color uint8 (H, W, 3), depth float32 metres (H, W))."""
        rx, ry = pixel_rays(intr)
        d_opt = np.stack([rx.ravel(), ry.ravel(), np.ones(rx.size, np.float32)], 1).astype(np.float64)
        R, t = T_map_optical[:3, :3], T_map_optical[:3, 3]
        t_hit, col = self.raycast(t, d_opt @ R.T)
        z = t_hit.reshape(intr.height, intr.width).astype(np.float32)   # t along (rx, ry, 1) is depth
        return col.reshape(intr.height, intr.width, 3), z


def _face_colors(rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(40, 216, 3)
    shade = np.array([0.8, 1.0, 0.9, 0.7, 0.6, 1.15])[:, None]
    return np.clip(base[None, :] * shade, 0, 255).astype(np.uint8)


def demo_room(seed: int = 0) -> BoxScene:
    """A 6 x 5 x 3 m room with a table, a cabinet, a bed and a box on the table."""
    rng = np.random.default_rng(seed)
    room = Box((-3.0, -2.5, 0.0), (3.0, 2.5, 3.0), _face_colors(rng))
    specs = [((-0.6, -0.4, 0.0), (0.6, 0.4, 0.75)),     # table
             ((1.8, 1.6, 0.0), (2.9, 2.4, 1.8)),        # cabinet
             ((-2.9, -2.4, 0.0), (-1.3, -0.4, 0.55)),   # bed
             ((-0.2, -0.15, 0.75), (0.15, 0.2, 1.0))]   # box on the table
    return BoxScene(room, [Box(lo, hi, _face_colors(rng)) for lo, hi in specs])


def orbit_poses(n: int, radius: float = 1.6, height: float = 1.4, turns: float = 1.0,
                target_z: float = 0.6) -> list[np.ndarray]:
    """T_map_optical of a camera circling the room centre, looking across the room."""
    out = []
    for i in range(n):
        a = 2 * np.pi * turns * i / max(n, 1)
        eye = np.array([radius * np.cos(a), radius * np.sin(a), height + 0.1 * np.sin(3 * a)])
        target = np.array([-2.0 * np.cos(a + 0.4), -2.0 * np.sin(a + 0.4), target_z])
        out.append(look_at(eye, target))
    return out


def scene_intrinsics(width: int = 640, height: int = 480) -> Intrinsics:
    """A Kinect-like pinhole camera (fx = fy = 525 at 640 x 480, scaled with the width)."""
    s = width / 640.0
    return Intrinsics(525.0 * s, 525.0 * s, (width - 1) / 2.0, (height - 1) / 2.0, width, height)
