"""Pictures of a scene and a model's answer: a rerun `.rrd` recording and static PNG renders.

    from r1_core.eval.visualize import Keyframe, VisualizeConfig, log_rrd, render_topdown, render_view
    log_rrd("out/scene.rrd", cloud, trajectory=poses, keyframes=[Keyframe(rgb, K, T)],
            pred_boxes=pred, gt_boxes=gt, pred_labels=["chair"], gt_labels=["chair"],
            reasoning="<think>...</think><answer>...</answer>", question="Where is the chair?")
    render_topdown(cloud, pred_boxes=pred, gt_boxes=gt, path="out/topdown.png")
    render_view(cloud, K, T_map_optical, 640, 480, pred_boxes=pred, gt_boxes=gt, path="out/view.png")
    # open the recording with the rerun viewer: `rerun out/scene.rrd`
    # from the shell, for a whole scene: `r1 viz --synthetic-seed 3 --out out/viz` (viz_cli.py)

Inputs follow docs/conventions.md: a cloud is (N, 6) float xyz (map frame, metres) + rgb
0..255; boxes are (K, 7) (cx, cy, cz, dx, dy, dz, yaw); camera poses are 4x4 T_map_optical
(REP 103 optical frame: x right, y down, z forward); K is the 3x3 pinhole matrix with pixel
centres at integer coordinates.

The recording (rerun-sdk, written straight to a file: no viewer, no network) holds
`world/cloud` (Points3D), `world/trajectory` (camera centres as LineStrips3D) and
`world/camera` (the pose on the `frame` timeline), `world/keyframes/kf_<i>` (Transform3D +
Pinhole + Image, + DepthImage when given), `world/boxes/gt` and `world/boxes/pred` (Boxes3D
with labels, one colour each) and `reasoning` (TextDocument, Markdown).

PNG renders use matplotlib's Agg canvas at exactly width x height pixels, so a pixel of the
returned array is a pixel of the PNG: the cloud is z-buffered and splatted with numpy
(nearest point wins per pixel, square splats whose size follows depth and, by default, the
cloud's own point spacing), then box edges are
drawn (ground truth solid, predictions dashed with corner dots, labelled). Why numpy and not
open3d's renderer: open3d's offscreen renderer needs an EGL/GL context that headless CI
machines lack, and it cannot put pixels exactly where the pinhole model says; the splatter
is a few vectorised lines and exact.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from r1_core.geometry.boxes import boxes_to_corners

# Box edges as corner-index pairs of boxes_to_corners (bottom face, top face, verticals).
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


@dataclass
class VisualizeConfig:
    """Settings of the visualiser (r1_core.config.load_config(VisualizeConfig, yaml, section=...))."""
    width: int = 960                      # PNG width in pixels (top-down render)
    height: int = 720                     # PNG height in pixels (top-down render)
    max_points: int = 400_000             # cloud points kept (random subsample, seeded) per output
    seed: int = 0
    point_size_m: float | None = None     # splat footprint of a point in the renders, metres;
                                          # None: 2 x the cloud's point spacing (point_spacing)
    max_splat_px: int = 6                 # cap on the splat half-size in pixels
    point_radius_m: float = 0.008         # point radius in the rerun recording
    line_width_px: float = 2.0
    gt_color: tuple[int, int, int] = (30, 190, 60)
    pred_color: tuple[int, int, int] = (230, 40, 40)
    trajectory_color: tuple[int, int, int] = (60, 120, 255)
    background: tuple[int, int, int] = (255, 255, 255)
    near_m: float = 0.05                  # box edges are clipped to z >= near in the camera
    topdown_margin_m: float = 0.3
    topdown_z_max: float | None = None    # drop points above this height (e.g. a ceiling)
    labels: bool = True
    legend: bool = True
    jpeg_quality: int = 90                # keyframe images in the recording; 0 = store raw

    def __post_init__(self):
        if self.width < 16 or self.height < 16:
            raise ValueError(f"width/height: expected >= 16 pixels, got {self.width}x{self.height}")
        if self.max_points < 1:
            raise ValueError(f"max_points: expected >= 1, got {self.max_points}")
        if (self.point_size_m is not None and self.point_size_m <= 0) or self.point_radius_m <= 0 or self.line_width_px <= 0:
            raise ValueError("point_size_m, point_radius_m and line_width_px must be > 0, got "
                             f"{self.point_size_m}, {self.point_radius_m}, {self.line_width_px}")
        if not 0 <= self.max_splat_px <= 16:
            raise ValueError(f"max_splat_px: expected 0..16, got {self.max_splat_px}")
        if self.near_m <= 0:
            raise ValueError(f"near_m: expected > 0, got {self.near_m}")
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: expected 0..100, got {self.jpeg_quality}")
        for name in ("gt_color", "pred_color", "trajectory_color", "background"):
            c = getattr(self, name)
            if len(c) != 3 or any(not 0 <= v <= 255 for v in c):
                raise ValueError(f"{name}: expected three integers 0..255, got {c}")


@dataclass
class Keyframe:
    """One chosen view: colour image (H, W, 3) uint8, intrinsics K (3, 3), pose T_map_optical
    (4, 4); depth (H, W) uint16 mm or float32 m, optional."""
    image: np.ndarray
    K: np.ndarray
    T_map_optical: np.ndarray
    depth: np.ndarray | None = None
    name: str = ""


# ---------------------------------------------------------------- input checks

def _cloud(cloud: Any, cfg: VisualizeConfig) -> np.ndarray:
    c = np.asarray(cloud)
    if c.ndim != 2 or c.shape[1] < 6:
        raise ValueError(f"cloud: expected (N, 6) xyz + rgb 0..255, got shape {c.shape}")
    c = c[:, :6].astype(np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError("cloud: contains non-finite values")
    if len(c) and (c[:, 3:].min() < 0 or c[:, 3:].max() > 255):
        raise ValueError(f"cloud: colours must be 0..255, got range {c[:, 3:].min()}..{c[:, 3:].max()}")
    if len(c) > cfg.max_points:
        keep = np.random.default_rng(cfg.seed).choice(len(c), cfg.max_points, replace=False)
        c = c[np.sort(keep)]
    return c


def _boxes(boxes: Any, name: str) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 7))
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 7))
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 7 or not np.all(np.isfinite(b)):
        raise ValueError(f"{name}: expected finite boxes of shape (K, 7), got {b.shape}")
    return b


def _labels(labels: Sequence[str] | None, n: int, name: str) -> list[str]:
    if labels is None:
        return [""] * n
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{name}: expected {n} labels (one per box), got {len(labels)}")
    return [str(s) for s in labels]


def _camera(K: Any, T: Any) -> tuple[np.ndarray, np.ndarray]:
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K: expected a 3x3 pinhole matrix with fx, fy > 0, got {K.tolist()}")
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_map_optical: expected a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise ValueError("T_map_optical: the upper-left 3x3 is not a rotation")
    return K, T


# ---------------------------------------------------------------- projection + splatting

def point_spacing(xyz: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """The cloud's typical point spacing in metres: the median distance to the 4th-nearest
    neighbour over a random sample. On a regular grid of pitch a that is a; on randomly
    sampled surfaces (density rho) about 1.13 / sqrt(rho), where square splats of 2x that
    cover ~99 % of the surface (the nearest-neighbour distance would leave holes)."""
    from scipy.spatial import cKDTree

    if len(xyz) < 2:
        return 0.02
    rng = np.random.default_rng(seed)
    q = xyz[rng.choice(len(xyz), min(sample, len(xyz)), replace=False)]
    k = min(5, len(xyz))
    d, _ = cKDTree(xyz).query(q, k=k)
    return float(np.median(d[:, k - 1]))


def _point_size(c: np.ndarray, cfg: VisualizeConfig) -> float:
    if cfg.point_size_m is not None:
        return cfg.point_size_m
    return max(2.0 * point_spacing(c[:, :3], seed=cfg.seed), 1e-3)


def project_points(xyz: np.ndarray, K: Any, T_map_optical: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map-frame points (N, 3) -> pixel coordinates (N, 2) (u column, v row) and depth z (N,)
    in the camera's optical frame; points with z <= 0 get NaN pixels."""
    K, T = _camera(K, T_map_optical)
    p = (np.asarray(xyz, dtype=np.float64) - T[:3, 3]) @ T[:3, :3]  # R^T (p - t)
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * p[:, 0] / z + K[0, 1] * p[:, 1] / z + K[0, 2],
                       K[1, 1] * p[:, 1] / z + K[1, 2]], axis=1)
    uv[z <= 0] = np.nan
    return uv, z


def _zbuffer(u: np.ndarray, v: np.ndarray, depth: np.ndarray, radius: np.ndarray,
             width: int, height: int, chunk: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Square splats of half-size radius[i] around integer pixels (u, v); per pixel the
    smallest depth wins. Returns (flat pixel indices, winning point index). Candidates are
    processed in chunks of about `chunk` (pixel, point) pairs to bound memory."""
    zbuf = np.full(width * height, np.inf)
    owner = np.full(width * height, -1, dtype=np.int64)
    for r in np.unique(radius):
        sel_all = np.nonzero(radius == r)[0]
        offs = np.arange(-r, r + 1)
        du, dv = (a.ravel() for a in np.meshgrid(offs, offs))
        step = max(1, chunk // du.size)
        for s0 in range(0, len(sel_all), step):
            sel = sel_all[s0:s0 + step]
            uu = (u[sel, None] + du[None]).ravel()
            vv = (v[sel, None] + dv[None]).ravel()
            idx = np.repeat(sel, du.size)
            ok = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
            pix, pt = vv[ok] * width + uu[ok], idx[ok]
            d = depth[pt]
            order = np.lexsort((d, pix))          # by pixel, then nearest first
            pix, pt, d = pix[order], pt[order], d[order]
            first = np.ones(len(pix), dtype=bool)
            first[1:] = pix[1:] != pix[:-1]
            pix, pt, d = pix[first], pt[first], d[first]
            better = d < zbuf[pix]                # pixels are unique here: plain assignment is safe
            zbuf[pix[better]] = d[better]
            owner[pix[better]] = pt[better]
    hit = np.nonzero(owner >= 0)[0]
    return hit, owner[hit]


def splat_view(cloud: Any, K: Any, T_map_optical: Any, width: int, height: int,
               cfg: VisualizeConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render the cloud into a pinhole camera: (H, W, 3) uint8 colour (background where no
    point lands) and (H, W) float depth (inf there). Splat half-size follows depth:
    round(fx * point_size_m / (2 z)), capped at cfg.max_splat_px."""
    cfg = cfg or VisualizeConfig()
    c = _cloud(cloud, cfg)
    K, T = _camera(K, T_map_optical)
    uv, z = project_points(c[:, :3], K, T)
    ok = (z > 1e-6) & np.isfinite(uv).all(axis=1)
    ui = np.rint(uv[ok, 0]).astype(np.int64)
    vi = np.rint(uv[ok, 1]).astype(np.int64)
    zz = z[ok]
    size = _point_size(c, cfg)
    rad = np.clip(np.rint(K[0, 0] * size / (2 * zz)), 0, cfg.max_splat_px).astype(np.int64)
    pix, pt = _zbuffer(ui, vi, zz, rad, width, height)
    img = np.empty((height * width, 3), np.uint8)
    img[:] = cfg.background
    depth = np.full(height * width, np.inf)
    img[pix] = np.clip(np.rint(c[ok][pt, 3:6]), 0, 255).astype(np.uint8)
    depth[pix] = zz[pt]
    return img.reshape(height, width, 3), depth.reshape(height, width)


@dataclass(frozen=True)
class TopDownGrid:
    """The top-down render's map-to-pixel mapping: x to the right, y up; pixel centres at
    integer (u, v)."""
    center_x: float
    center_y: float
    resolution: float   # metres per pixel
    width: int
    height: int

    def to_pixel(self, xy: Any) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        u = (xy[:, 0] - self.center_x) / self.resolution + (self.width - 1) / 2
        v = (self.center_y - xy[:, 1]) / self.resolution + (self.height - 1) / 2
        return np.stack([u, v], axis=1)


def topdown_grid(cloud_xyz: np.ndarray, boxes: np.ndarray, width: int, height: int, margin: float) -> TopDownGrid:
    """A grid that fits the cloud and the boxes' footprints, with `margin` metres around."""
    pts = [cloud_xyz[:, :2]]
    if len(boxes):
        pts.append(boxes_to_corners(boxes)[:, :4, :2].reshape(-1, 2))
    xy = np.concatenate(pts) if pts else np.zeros((0, 2))
    if len(xy) == 0:
        raise ValueError("render_topdown: nothing to draw (empty cloud and no boxes)")
    lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    span = np.maximum(hi - lo, 1e-3)
    res = float(max(span[0] / (width - 1), span[1] / (height - 1)))
    mid = (lo + hi) / 2
    return TopDownGrid(float(mid[0]), float(mid[1]), res, width, height)


def splat_topdown(cloud: Any, grid: TopDownGrid, cfg: VisualizeConfig | None = None) -> np.ndarray:
    """Orthographic view from above: per pixel the highest point (below cfg.topdown_z_max)."""
    cfg = cfg or VisualizeConfig()
    c = _cloud(cloud, cfg)
    if cfg.topdown_z_max is not None:
        c = c[c[:, 2] <= cfg.topdown_z_max]
    uv = grid.to_pixel(c[:, :2])
    r = int(min(cfg.max_splat_px, max(0, round(_point_size(c, cfg) / grid.resolution / 2))))
    pix, pt = _zbuffer(np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64),
                       -c[:, 2], np.full(len(c), r, np.int64), grid.width, grid.height)
    img = np.empty((grid.height * grid.width, 3), np.uint8)
    img[:] = cfg.background
    img[pix] = np.clip(np.rint(c[pt, 3:6]), 0, 255).astype(np.uint8)
    return img.reshape(grid.height, grid.width, 3)


# ---------------------------------------------------------------- drawing

def _figure(image: np.ndarray):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = image.shape[:2]
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    return fig, canvas, ax


def _finish(fig, canvas, ax, shape: tuple[int, int], cfg: VisualizeConfig, path: str | Path | None,
            kinds: set[str]) -> np.ndarray:
    from matplotlib.lines import Line2D

    if cfg.legend and kinds:
        handles = []
        if "gt" in kinds:
            handles.append(Line2D([], [], color=np.array(cfg.gt_color) / 255, lw=2, label="ground truth"))
        if "pred" in kinds:
            handles.append(Line2D([], [], color=np.array(cfg.pred_color) / 255, lw=2, ls="--", label="predicted"))
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    canvas.draw()
    out = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if out.shape[:2] != shape:
        raise RuntimeError(f"matplotlib produced a {out.shape[1]}x{out.shape[0]} canvas, expected {shape[1]}x{shape[0]}")
    if path is not None:
        from PIL import Image

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(out).save(path)
    return out


def _draw_segments(ax, segs: list[np.ndarray], color, dashed: bool, cfg: VisualizeConfig) -> None:
    from matplotlib.collections import LineCollection

    if not segs:
        return
    lw = cfg.line_width_px * 72 / 100  # points at 100 dpi
    ax.add_collection(LineCollection(segs, colors=[np.array(color) / 255], linewidths=lw,
                                     linestyles=[(0, (4, 3))] if dashed else "solid", antialiaseds=False,
                                     capstyle="projecting"))


def _label(ax, uv: np.ndarray, text: str, color, cfg: VisualizeConfig, below: bool = False) -> None:
    """A tag above the point (ground truth) or below it (predictions, so the two don't collide)."""
    if not (cfg.labels and text):
        return
    h = ax.get_ylim()[0] + 0.5
    w = ax.get_xlim()[1] + 0.5
    u, v = float(uv[0]), float(uv[1])
    if not (0 <= u < w and 0 <= v < h):
        return
    ax.annotate(text, (u, v), xytext=(0, -6 if below else 6), textcoords="offset pixels", ha="center",
                va="top" if below else "bottom",
                fontsize=8, color="white",
                bbox=dict(boxstyle="round,pad=0.2", fc=np.array(color) / 255, ec="none", alpha=0.85))


def box_segments_in_view(boxes: np.ndarray, K: np.ndarray, T: np.ndarray, near: float) -> list[list[np.ndarray]]:
    """Per box, its 12 edges as pixel segments (2, 2), clipped to z >= near in the camera
    (an edge wholly behind the near plane is dropped)."""
    out = []
    if len(boxes) == 0:
        return out
    corners = np.asarray(boxes_to_corners(boxes), dtype=np.float64)  # (B, 8, 3)
    for cb in corners:
        pc = (cb - T[:3, 3]) @ T[:3, :3]   # optical frame
        segs = []
        for i, j in BOX_EDGES:
            a, b = pc[i].copy(), pc[j].copy()
            if a[2] < near and b[2] < near:
                continue
            if a[2] < near or b[2] < near:
                t = (near - a[2]) / (b[2] - a[2])
                p = a + t * (b - a)
                if a[2] < near:
                    a = p
                else:
                    b = p
            seg = np.stack([a, b])
            uv = (seg @ K.T)[:, :2] / seg[:, 2:3]
            segs.append(uv)
        out.append(segs)
    return out


def render_view(
    cloud: Any, K: Any, T_map_optical: Any, width: int, height: int,
    pred_boxes: Any = None, gt_boxes: Any = None,
    pred_labels: Sequence[str] | None = None, gt_labels: Sequence[str] | None = None,
    cfg: VisualizeConfig | None = None, path: str | Path | None = None,
) -> np.ndarray:
    """The cloud seen from camera (K, T_map_optical) at width x height, with the boxes'
    projected edges; returns the (H, W, 3) uint8 image and writes it as PNG to `path`."""
    cfg = cfg or VisualizeConfig()
    K, T = _camera(K, T_map_optical)
    pb, gb = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    pl, gl = _labels(pred_labels, len(pb), "pred_labels"), _labels(gt_labels, len(gb), "gt_labels")
    img, _ = splat_view(cloud, K, T, width, height, cfg)
    fig, canvas, ax = _figure(img)
    for boxes, labels, color, dashed in ((gb, gl, cfg.gt_color, False), (pb, pl, cfg.pred_color, True)):
        for segs, text in zip(box_segments_in_view(boxes, K, T, cfg.near_m), labels):
            _draw_segments(ax, segs, color, dashed, cfg)
            if dashed and segs:
                pts = np.concatenate(segs)
                ax.plot(pts[:, 0], pts[:, 1], ls="none", marker="s", ms=cfg.line_width_px * 0.72 * 1.5,
                        color=np.array(color) / 255, antialiased=False)
            if segs:
                pts = np.concatenate(segs)
                pick = np.argmax(pts[:, 1]) if dashed else np.argmin(pts[:, 1])
                _label(ax, pts[pick], text, color, cfg, below=dashed)
    kinds = ({"gt"} if len(gb) else set()) | ({"pred"} if len(pb) else set())
    return _finish(fig, canvas, ax, (height, width), cfg, path, kinds)


def render_topdown(
    cloud: Any, pred_boxes: Any = None, gt_boxes: Any = None,
    pred_labels: Sequence[str] | None = None, gt_labels: Sequence[str] | None = None,
    cfg: VisualizeConfig | None = None, path: str | Path | None = None,
) -> tuple[np.ndarray, TopDownGrid]:
    """Top-down (x right, y up) view of the cloud with box footprints; returns the (H, W, 3)
    image (cfg.width x cfg.height) and its map-to-pixel grid; writes a PNG to `path`."""
    cfg = cfg or VisualizeConfig()
    c = _cloud(cloud, cfg)
    pb, gb = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    pl, gl = _labels(pred_labels, len(pb), "pred_labels"), _labels(gt_labels, len(gb), "gt_labels")
    grid = topdown_grid(c[:, :3], np.concatenate([pb, gb]), cfg.width, cfg.height, cfg.topdown_margin_m)
    img = splat_topdown(c, grid, cfg)
    fig, canvas, ax = _figure(img)
    for boxes, labels, color, dashed in ((gb, gl, cfg.gt_color, False), (pb, pl, cfg.pred_color, True)):
        if not len(boxes):
            continue
        foot = np.asarray(boxes_to_corners(boxes), dtype=np.float64)[:, :4, :2]   # (B, 4, 2) bottom face
        for quad, text in zip(foot, labels):
            uv = grid.to_pixel(quad)
            segs = [np.stack([uv[i], uv[(i + 1) % 4]]) for i in range(4)]
            _draw_segments(ax, segs, color, dashed, cfg)
            if dashed:
                ax.plot(uv[:, 0], uv[:, 1], ls="none", marker="s", ms=cfg.line_width_px * 0.72 * 1.5,
                        color=np.array(color) / 255, antialiased=False)
            pick = np.argmax(uv[:, 1]) if dashed else np.argmin(uv[:, 1])
            _label(ax, uv[pick], text, color, cfg, below=dashed)
    kinds = ({"gt"} if len(gb) else set()) | ({"pred"} if len(pb) else set())
    return _finish(fig, canvas, ax, (cfg.height, cfg.width), cfg, path, kinds), grid


def pick_best_view(poses: Sequence[Any], K: Any, width: int, height: int, boxes: Any,
                   near: float = 0.05) -> int:
    """Index of the pose that sees the boxes best: most box corners in front of the camera
    and inside the image, ties broken by the larger projected extent."""
    b = _boxes(boxes, "boxes")
    if len(poses) == 0:
        raise ValueError("poses: expected at least one camera pose")
    if len(b) == 0:
        raise ValueError("boxes: expected at least one box to look at")
    corners = np.asarray(boxes_to_corners(b), dtype=np.float64).reshape(-1, 3)
    best, best_key = 0, (-1, -1.0)
    for i, T in enumerate(poses):
        uv, z = project_points(corners, K, T)
        vis = (z > near) & (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)
        n = int(vis.sum())
        area = float(np.ptp(uv[vis, 0]) * np.ptp(uv[vis, 1])) if n >= 2 else 0.0
        if (n, area) > best_key:
            best, best_key = i, (n, area)
    return best


# ---------------------------------------------------------------- rerun recording

def _quat_xyzw(yaw: np.ndarray) -> np.ndarray:
    return np.stack([np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2), np.cos(yaw / 2)], axis=1)


def log_rrd(
    path: str | Path,
    cloud: Any,
    trajectory: Sequence[Any] | None = None,
    keyframes: Sequence[Keyframe] | None = None,
    pred_boxes: Any = None,
    gt_boxes: Any = None,
    pred_labels: Sequence[str] | None = None,
    gt_labels: Sequence[str] | None = None,
    reasoning: str | None = None,
    question: str | None = None,
    answer: str | None = None,
    cfg: VisualizeConfig | None = None,
    recording_name: str = "r1",
) -> Path:
    """Write a rerun recording of the scene and the answer to `path` (.rrd); returns the path."""
    import rerun as rr

    cfg = cfg or VisualizeConfig()
    path = Path(path)
    if path.suffix != ".rrd":
        raise ValueError(f"path: expected a .rrd file name, got {path}")
    c = _cloud(cloud, cfg)
    pb, gb = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    pl, gl = _labels(pred_labels, len(pb), "pred_labels"), _labels(gt_labels, len(gb), "gt_labels")
    poses = [np.asarray(T, dtype=np.float64) for T in (trajectory or [])]
    for i, T in enumerate(poses):
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"trajectory[{i}]: expected a finite 4x4 T_map_optical, got shape {T.shape}")
    kfs = list(keyframes or [])
    for i, kf in enumerate(kfs):
        img = np.asarray(kf.image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"keyframes[{i}].image: expected (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}")
        try:
            _camera(kf.K, kf.T_map_optical)
        except ValueError as e:
            raise ValueError(f"keyframes[{i}]: {e}") from None
        if kf.depth is not None and np.asarray(kf.depth).shape != img.shape[:2]:
            raise ValueError(f"keyframes[{i}].depth: expected shape {img.shape[:2]}, got {np.asarray(kf.depth).shape}")

    path.parent.mkdir(parents=True, exist_ok=True)
    rec = rr.RecordingStream("r1", recording_id=uuid.uuid4())
    rec.save(path)
    try:
        rec.send_recording_name(recording_name)
        rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        rec.log("world/cloud", rr.Points3D(c[:, :3].astype(np.float32),
                                           colors=np.clip(np.rint(c[:, 3:6]), 0, 255).astype(np.uint8),
                                           radii=cfg.point_radius_m), static=True)
        for name, boxes, labels, color in (("gt", gb, gl, cfg.gt_color), ("pred", pb, pl, cfg.pred_color)):
            if len(boxes):
                rec.log(f"world/boxes/{name}", rr.Boxes3D(
                    centers=boxes[:, :3], sizes=boxes[:, 3:6], quaternions=_quat_xyzw(boxes[:, 6]),
                    labels=[f"{name}: {s}" if s else name for s in labels],
                    colors=[color] * len(boxes), radii=0.01), static=True)
        if poses:
            centres = np.stack([T[:3, 3] for T in poses])
            rec.log("world/trajectory", rr.LineStrips3D([centres], colors=[cfg.trajectory_color], radii=0.01), static=True)
            for i, T in enumerate(poses):
                rec.set_time("frame", sequence=i)
                rec.log("world/camera", rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]))
            rec.reset_time()
        for i, kf in enumerate(kfs):
            ent = f"world/keyframes/kf_{i}"
            K = np.asarray(kf.K, dtype=np.float64)
            T = np.asarray(kf.T_map_optical, dtype=np.float64)
            h, w = kf.image.shape[:2]
            rec.log(ent, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]), static=True)
            rec.log(ent, rr.Pinhole(image_from_camera=K, resolution=[w, h],
                                    camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=0.3), static=True)
            image = rr.Image(np.ascontiguousarray(kf.image))
            if cfg.jpeg_quality:
                image = image.compress(jpeg_quality=cfg.jpeg_quality)
            rec.log(ent, image, static=True)
            if kf.depth is not None:
                d = np.asarray(kf.depth)
                meter = 1000.0 if d.dtype == np.uint16 else 1.0
                rec.log(ent, rr.DepthImage(d, meter=meter), static=True)
        if reasoning is not None or question is not None or answer is not None:
            parts = []
            if question:
                parts.append(f"**Question.** {question}")
            if reasoning:
                parts.append(f"**Reasoning.**\n\n```\n{reasoning}\n```")
            if answer:
                parts.append(f"**Answer.** {answer}")
            rec.log("reasoning", rr.TextDocument("\n\n".join(parts), media_type=rr.MediaType.MARKDOWN), static=True)
        rec.flush()
    finally:
        rec.disconnect()
    return path


def rrd_entities(path: str | Path) -> dict[str, list[str]]:
    """Entity path -> component column names of a recording (read back in-process)."""
    from rerun.chunk import RrdReader

    out: dict[str, list[str]] = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        cols = out.setdefault(chunk.entity_path, [])
        for name in chunk.to_record_batch().schema.names:
            if ":" in name and name not in cols:
                cols.append(name)
    return out
