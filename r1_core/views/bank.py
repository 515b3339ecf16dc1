"""Keyframe bank: the RGB-D frames worth keeping for view selection, chosen online.

    bank = KeyframeBank(load_config(BankConfig, "config/views.yaml", section="bank"))
    for color, depth, K, T, stamp in frames:            # fed by the fusion stream
        bank.offer(color, depth, K, T, stamp)           # True when kept as a keyframe
    snap = bank.snapshot()                              # immutable view for one selection
    bank.memory_bytes(), bank.stats

A frame is kept when it (1) moved: translation >= `min_translation_m` OR rotation >=
`min_rotation_deg` from the last keyframe, AND (2) adds coverage: at least
`min_new_fraction` of the map voxels it sees (from a subsampled back-projection of its depth)
are seen by no keyframe in the bank (voxel sets from a back-projection of every
`stride_for(width)`-th pixel). Each keyframe stores its colour and depth (downscaled to
`store_width` to bound memory; K scaled with them), pose, K and its visible voxel set.

Bounds: at most `max_keyframes` keyframes and `max_bytes` bytes (images + voxel sets + the
voxel table). Eviction rule (`eviction`):
  most_redundant  drop the keyframe whose voxels are most covered by other keyframes (the
                  fraction of its voxels that at least one other keyframe also sees); ties go
                  to the oldest; the keyframe just inserted is never dropped.
  oldest          drop the oldest keyframe.

Thread safety: every public method takes the bank's lock; `offer` does the back-projection
before taking it, so a selection running from another thread waits only for the table update.
Snapshots are immutable and cached until the bank changes.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
import cv2
import numpy as np

from r1_core.geometry.fusion import KEY_BITS, pack_keys, unpack_keys
from r1_core.geometry.rgbd import Intrinsics, backproject

EVICTIONS = ("most_redundant", "oldest")
_KEYFRAME_IDS = itertools.count()     # keyframe ids are unique within the process (across banks)


@dataclass
class BankConfig:
    """Keyframe bank settings (config/views.yaml, section `bank`)."""

    max_keyframes: int = 200                # keyframes kept at most
    max_bytes: int = 256 * 2**20            # memory bound (images, voxel sets, voxel table)
    store_width: int = 320                  # colour/depth kept at this width (aspect kept); 0 = as given
    voxel_size: float = 0.05                # voxel edge (m) of the visible-voxel sets
    sample_columns: int = 160               # voxel sets from a back-projection of ~this many columns
    min_depth_m: float = 0.1                # depth outside [min, max] is ignored
    max_depth_m: float = 6.0
    min_translation_m: float = 0.25         # pose gate (either one suffices) ...
    min_rotation_deg: float = 15.0
    min_new_fraction: float = 0.10          # ... AND this fraction of the frame's voxels is new
    min_voxels: int = 30                    # frames seeing fewer voxels are rejected (blank depth)
    eviction: str = "most_redundant"        # most_redundant | oldest

    def __post_init__(self) -> None:
        if self.eviction not in EVICTIONS:
            raise ValueError(f"unknown eviction {self.eviction!r}; choose one of {list(EVICTIONS)}")
        for name in ("max_keyframes", "max_bytes", "sample_columns"):
            if getattr(self, name) <= 0:
                raise ValueError(f"bank.{name} must be > 0, got {getattr(self, name)}")
        if self.store_width < 0:
            raise ValueError(f"bank.store_width must be >= 0 (0 = keep size), got {self.store_width}")
        if not self.voxel_size > 0:
            raise ValueError(f"bank.voxel_size must be > 0, got {self.voxel_size}")
        if not 0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError(f"bank: need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if not 0.0 <= self.min_new_fraction <= 1.0:
            raise ValueError(f"bank.min_new_fraction must be in [0, 1], got {self.min_new_fraction}")

    def stride_for(self, width: int) -> int:
        """Pixel stride of the voxel-set sample for images `width` wide. Fixed in angle, not in
        pixels: samples must stay closer than a voxel at room distances, or two near-identical
        views sample different voxels and their overlap (redundancy, coverage) reads low."""
        return max(1, int(round(width / self.sample_columns)))


@dataclass(frozen=True)
class Keyframe:
    """One kept frame. Arrays are never modified after insertion."""

    keyframe_id: int
    stamp: float
    color: np.ndarray          # (h, w, 3) uint8 RGB (downscaled to store_width)
    depth_mm: np.ndarray       # (h, w) uint16 millimetres, 0 = invalid (same size as color)
    K: np.ndarray              # (3, 3) float64 intrinsics of the stored images
    T_map_optical: np.ndarray  # (4, 4) float64 camera-to-map pose
    voxel_ids: np.ndarray      # (M,) int32 ids into the bank's voxel table, sorted, unique
    voxel_rgb: np.ndarray      # (M, 3) uint8 mean colour of the frame's samples in each voxel

    @property
    def depth_m(self) -> np.ndarray:
        """(h, w) float32 metres, 0 = invalid."""
        return self.depth_mm.astype(np.float32) * 1e-3

    @property
    def nbytes(self) -> int:
        return int(self.color.nbytes + self.depth_mm.nbytes + self.voxel_ids.nbytes + self.voxel_rgb.nbytes
                   + self.K.nbytes + self.T_map_optical.nbytes)


@dataclass(frozen=True)
class BankSnapshot:
    """An immutable view of the bank for one selection (see KeyframeBank.snapshot)."""

    version: int
    keyframes: tuple[Keyframe, ...]     # insertion order (oldest first)
    sizes: np.ndarray                   # (N,) |V_i|: voxels each keyframe sees
    overlap: np.ndarray                 # (N, N) int32 |V_i ∩ V_j|
    centers: np.ndarray                 # (V,) × 3 float32 voxel centres by voxel id
    voxel_rgb: np.ndarray               # (V, 3) float32 mean colour (0..255) by voxel id
    live: np.ndarray                    # (V,) bool: seen by some keyframe
    flat_ids: np.ndarray                # (sum M_i,) int32 voxel ids of all keyframes, concatenated
    flat_kf: np.ndarray                 # (sum M_i,) int32 keyframe index of each entry
    grid_order: np.ndarray              # live voxel ids sorted by their 2D grid cell (box queries)
    grid_keys: np.ndarray               # their cell keys cx * GRID_NY + cy, sorted
    cell_keys: np.ndarray               # (C,) the distinct cell keys, sorted
    cell_of: np.ndarray                 # (V,) dense cell index of each voxel (-1: not live)
    voxel_size: float = 0.05
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def ids(self) -> np.ndarray:
        return np.array([k.keyframe_id for k in self.keyframes], np.int64)

    @property
    def stamps(self) -> np.ndarray:
        return np.array([k.stamp for k in self.keyframes], np.float64)

    def voxels_in_boxes(self, boxes: np.ndarray) -> list[np.ndarray]:
        """Live voxel ids whose centre lies in each box (K, 7) -> K sorted int64 arrays."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
        if boxes.shape[0] == 0:
            return []
        # candidates: live voxels in the grid cells the box's footprint touches, then the exact test
        c, sn = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
        hx = 0.5 * (boxes[:, 3] * c + boxes[:, 4] * sn)
        hy = 0.5 * (boxes[:, 3] * sn + boxes[:, 4] * c)
        out = []
        for b, ex, ey in zip(boxes, hx, hy):
            spans = self._cell_spans(b[0] - ex, b[0] + ex, b[1] - ey, b[1] + ey)
            if not spans:
                out.append(np.zeros(0, np.int64))
                continue
            cand = np.concatenate(spans)
            out.append(np.sort(cand[points_in_boxes_np(self.centers[cand], b[None])[:, 0]]).astype(np.int64))
        return out

    def voxels_near(self, boxes: np.ndarray, margin: float) -> np.ndarray:
        """Live voxel ids (any height) in the grid cells that the boxes' footprints, grown by
        `margin`, touch: the coarse region around objects (no exact test: cheap)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
        c, sn = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
        hx = 0.5 * (boxes[:, 3] * c + boxes[:, 4] * sn) + margin
        hy = 0.5 * (boxes[:, 3] * sn + boxes[:, 4] * c) + margin
        spans = []
        for b, ex, ey in zip(boxes, hx, hy):
            spans += self._cell_spans(b[0] - ex, b[0] + ex, b[1] - ey, b[1] + ey)
        if not spans:
            return np.zeros(0, np.int64)
        mask = np.zeros(self.live.shape[0], bool)          # de-duplicate (cheaper than np.unique)
        mask[np.concatenate(spans)] = True
        return np.flatnonzero(mask)

    def _cell_spans(self, x0: float, x1: float, y0: float, y1: float) -> list[np.ndarray]:
        rows = np.arange(_cell(x0), _cell(x1) + 1, dtype=np.int64) * GRID_NY
        a = np.searchsorted(self.grid_keys, rows + _cell(y0), side="left")
        e = np.searchsorted(self.grid_keys, rows + _cell(y1), side="right")
        return [self.grid_order[i:j] for i, j in zip(a, e) if j > i]

    def counts_in(self, voxel_ids: np.ndarray) -> np.ndarray:
        """(N,) how many of `voxel_ids` (duplicates count once) each keyframe sees."""
        mask = np.zeros(self.live.shape[0], bool)
        mask[np.asarray(voxel_ids, np.int64)] = True
        return np.bincount(self.flat_kf[mask[self.flat_ids]], minlength=len(self.keyframes))

    def cells_near(self, boxes: np.ndarray, margin: float) -> np.ndarray:
        """Dense indices of the grid cells (any height) that the boxes' footprints, grown by
        `margin`, touch and that hold map voxels: the coarse region around objects."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
        c, sn = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
        hx = 0.5 * (boxes[:, 3] * c + boxes[:, 4] * sn) + margin
        hy = 0.5 * (boxes[:, 3] * sn + boxes[:, 4] * c) + margin
        out = []
        for b, ex, ey in zip(boxes, hx, hy):
            rows = np.arange(_cell(b[0] - ex), _cell(b[0] + ex) + 1, dtype=np.int64) * GRID_NY
            a = np.searchsorted(self.cell_keys, rows + _cell(b[1] - ey), side="left")
            e = np.searchsorted(self.cell_keys, rows + _cell(b[1] + ey), side="right")
            out += [np.arange(i, j) for i, j in zip(a, e) if j > i]
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def counts_in_cells(self, cells: np.ndarray) -> np.ndarray:
        """(N,) how many voxels of the given cells each keyframe sees."""
        table = self._cache.get("cell_counts")
        if table is None:             # (C, N) dense: a few thousand cells x the keyframes
            C, N = self.cell_keys.size, len(self.keyframes)
            table = np.bincount(self.cell_of[self.flat_ids] * N + self.flat_kf, minlength=C * N)
            table = self._cache["cell_counts"] = table.reshape(C, N).astype(np.int32)
        return table[np.asarray(cells, np.int64)].sum(0, dtype=np.int64)

    def color_indices(self, voxel_ids: np.ndarray) -> np.ndarray:
        """vocab.COLOR_WORDS index of each voxel's mean colour (cached per snapshot)."""
        from r1_core.views.vocab import color_indices

        cache = self._cache.get("color_idx")
        if cache is None:
            cache = self._cache["color_idx"] = np.full(self.live.shape[0], -1, np.int16)
        ids = np.asarray(voxel_ids, np.int64)
        todo = ids[cache[ids] < 0]
        if todo.size:
            cache[todo] = color_indices(self.voxel_rgb[todo])
        return cache[ids]


# ---- helpers ------------------------------------------------------------------------------------
GRID_CELL_M = 0.5                # 2D cells of the snapshot's box-query index
GRID_NY = 1 << 21                # cell key = cx * GRID_NY + cy (cy offset to be >= 0)


def _cell(v: float | np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(v) / GRID_CELL_M).astype(np.int64) + (GRID_NY // 2)


def points_in_boxes_np(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """bool (P, K): point p in box k (boundary included), the test of
    r1_core.geometry.boxes.points_in_boxes in plain numpy. Written here because selection calls
    it on a few thousand points per request: the torch version's thread pool measured 30-140 ms
    spikes on 2 busy cores where this takes ~1 ms (tests compare the two)."""
    p = np.asarray(points, np.float64)[:, None, :3]
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    d = p - b[None, :, :3]
    lx = d[..., 0] * c + d[..., 1] * s
    ly = d[..., 1] * c - d[..., 0] * s
    return (np.abs(lx) <= b[:, 3] * 0.5) & (np.abs(ly) <= b[:, 4] * 0.5) & (np.abs(d[..., 2]) <= b[:, 5] * 0.5)


def depth_to_metres(depth: np.ndarray, name: str = "depth") -> np.ndarray:
    """uint16 millimetres or float metres (NaN/inf/<=0 invalid) -> float32 metres, 0 = invalid."""
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) image, got shape {d.shape}")
    if d.dtype == np.uint16:
        return d.astype(np.float32) * 1e-3
    if d.dtype in (np.float32, np.float64):
        out = d.astype(np.float32)
        out[~np.isfinite(out) | (out < 0)] = 0.0
        return out
    raise ValueError(f"{name}: expected uint16 millimetres or float32 metres, got dtype {d.dtype}")


def check_pose(T: np.ndarray, name: str = "T_map_optical") -> np.ndarray:
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{name}: expected a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6) or not np.allclose(R.T @ R, np.eye(3), atol=1e-3) \
            or np.linalg.det(R) < 0:
        raise ValueError(f"{name}: expected a rigid transform (orthonormal rotation, det +1, last row 0 0 0 1), "
                         f"got\n{T}")
    return T


def check_intrinsics(K: np.ndarray, name: str = "K") -> np.ndarray:
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 \
            or not np.allclose(K[2], [0, 0, 1]):
        raise ValueError(f"{name}: expected a pinhole 3x3 [[fx,0,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0, got\n{K}")
    return K


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of an image resized by (sx, sy), pixel centres at integer coordinates (docs/conventions.md)."""
    K2 = K.copy()
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 1] *= sx
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def sample_points(color: np.ndarray, depth_m: np.ndarray, K: np.ndarray, T: np.ndarray, stride: int,
                  min_depth: float, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Every `stride`-th pixel with depth in [min_depth, max_depth], back-projected into the map
    (r1_core.geometry.rgbd.backproject) -> (points (M, 3), colours (M, 3) uint8). A strided
    sample: the bank only needs which voxels a frame sees."""
    H, W = depth_m.shape
    d = np.where(depth_m > 0, depth_m, np.nan).astype(np.float32)      # 0 = invalid, as NaN for rgbd
    cloud = backproject(color, d, Intrinsics.from_K(K, W, H), T, min_depth=min_depth, max_depth=max_depth,
                        stride=stride)
    return cloud[:, :3].astype(np.float64), cloud[:, 3:6].astype(np.uint8)


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    """Packed int64 keys of floor(points / voxel): the fusion map's packing
    (r1_core.geometry.fusion.pack_keys), so with equal voxel sizes the keys are the map's."""
    v = np.floor(points / voxel).astype(np.int64)
    lim = (1 << (KEY_BITS - 1)) - 1
    if v.size and np.abs(v).max() > lim:
        raise ValueError(f"voxel coordinates exceed +-{lim} voxels per axis at voxel_size {voxel}")
    return pack_keys(v)


def key_centers(keys: np.ndarray, voxel: float) -> np.ndarray:
    return ((unpack_keys(keys) + 0.5) * voxel).astype(np.float32)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# ---- the bank ---------------------------------------------------------------------------------------
class KeyframeBank:
    """Bounded, thread-safe keyframe store with per-keyframe visible voxel sets."""

    def __init__(self, cfg: BankConfig | None = None):
        self.cfg = cfg or BankConfig()
        self._lock = threading.RLock()
        self._version = 0
        self._empty()
        self.stats = {"offered": 0, "inserted": 0, "rejected_pose": 0, "rejected_coverage": 0,
                      "rejected_empty": 0, "evicted": 0}

    def _empty(self) -> None:
        self._kfs: list[Keyframe] = []
        self._overlap = np.zeros((0, 0), np.int32)
        # voxel table: id -> key / centre / count of keyframes seeing it / colour sum
        self._keys_sorted = np.zeros(0, np.int64)      # live+dead keys, sorted
        self._ids_sorted = np.zeros(0, np.int32)       # their ids
        self._key = np.zeros(0, np.int64)
        self._center = np.zeros((0, 3), np.float32)
        self._count = np.zeros(0, np.int32)
        self._rgb_sum = np.zeros((0, 3), np.float32)   # exact: sums of uint8 stay far below 2^24
        self._nvox = 0
        self._snapshot: BankSnapshot | None = None

    # ---- public ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._kfs)

    def clear(self) -> None:
        """Drop every keyframe (the map they saw is gone: a fusion reset or a loaded map). The
        bank stays the same object, so a selector holding it sees the change."""
        with self._lock:
            self._empty()
            self._version += 1

    @property
    def version(self) -> int:
        """Increments on every insertion/eviction."""
        return self._version

    def keyframes(self) -> list[Keyframe]:
        with self._lock:
            return list(self._kfs)

    def offer(self, color: np.ndarray, depth: np.ndarray, K: np.ndarray, T_map_optical: np.ndarray,
              stamp: float) -> bool:
        """Insert the frame if it adds enough (see the module docstring); True when inserted.
        Bad input raises ValueError naming the argument."""
        cfg = self.cfg
        color = np.asarray(color)
        if color.ndim != 3 or color.shape[2] != 3 or color.dtype != np.uint8:
            raise ValueError(f"color: expected (H, W, 3) uint8 RGB, got {color.shape} {color.dtype}")
        depth_m = depth_to_metres(depth)
        if depth_m.shape != color.shape[:2]:
            raise ValueError(f"depth: shape {depth_m.shape} differs from color {color.shape[:2]}")
        K = check_intrinsics(K)
        T = check_pose(T_map_optical)
        if not np.isfinite(stamp):
            raise ValueError(f"stamp: expected a finite time in seconds, got {stamp!r}")
        with self._lock:
            self.stats["offered"] += 1
            last = self._kfs[-1] if self._kfs else None
        if last is not None:
            moved = np.linalg.norm(T[:3, 3] - last.T_map_optical[:3, 3]) >= cfg.min_translation_m
            turned = rotation_angle_deg(T[:3, :3], last.T_map_optical[:3, :3]) >= cfg.min_rotation_deg
            if not (moved or turned):
                with self._lock:
                    self.stats["rejected_pose"] += 1
                return False
        pts, pix_rgb = sample_points(color, depth_m, K, T, cfg.stride_for(depth_m.shape[1]), cfg.min_depth_m,
                                     cfg.max_depth_m)
        keys = voxel_keys(pts, cfg.voxel_size)
        keys, inv = np.unique(keys, return_inverse=True)
        if keys.size < cfg.min_voxels:
            with self._lock:
                self.stats["rejected_empty"] += 1
            return False
        n_pix = np.bincount(inv, minlength=keys.size)
        rgb = np.stack([np.bincount(inv, pix_rgb[:, c].astype(np.float64), keys.size) for c in range(3)], 1)
        rgb /= n_pix[:, None]
        color_s, depth_s, K_s = self._downscale(color, depth_m, K)

        with self._lock:
            ids = self._lookup(keys)
            known = ids >= 0
            known[known] = self._count[ids[known]] > 0
            if self._kfs and (1.0 - known.mean()) < cfg.min_new_fraction:
                self.stats["rejected_coverage"] += 1
                return False
            ids = self._assign(keys, ids)
            order = np.argsort(ids, kind="stable")
            kf = Keyframe(next(_KEYFRAME_IDS), float(stamp), color_s, depth_s, K_s, T,
                          ids[order].astype(np.int32), np.round(rgb[order]).astype(np.uint8))
            if kf.nbytes >= cfg.max_bytes:
                raise ValueError(f"one keyframe takes {kf.nbytes} bytes but bank.max_bytes is {cfg.max_bytes}; "
                                 f"raise max_bytes or lower store_width")
            self._insert(kf)
            self.stats["inserted"] += 1
            while len(self._kfs) > cfg.max_keyframes or self.memory_bytes() > cfg.max_bytes:
                self._evict()
            self._version += 1
            return True

    def memory_bytes(self) -> int:
        """Bytes held: keyframe images and voxel sets, the voxel table and the overlap matrix."""
        with self._lock:
            table = (self._key.nbytes + self._center.nbytes + self._count.nbytes + self._rgb_sum.nbytes
                     + self._keys_sorted.nbytes + self._ids_sorted.nbytes)
            return int(sum(k.nbytes for k in self._kfs) + table + self._overlap.nbytes)

    def snapshot(self) -> BankSnapshot:
        """An immutable view for selection; rebuilt only when the bank changed."""
        with self._lock:
            if self._snapshot is not None and self._snapshot.version == self._version:
                return self._snapshot
            n = self._nvox
            kfs = tuple(self._kfs)
            sizes = np.array([k.voxel_ids.size for k in kfs], np.int64)
            flat_ids = np.concatenate([k.voxel_ids for k in kfs]) if kfs else np.zeros(0, np.int32)
            flat_kf = np.repeat(np.arange(len(kfs), dtype=np.int32), sizes)
            live = self._count[:n] > 0
            live_ids = np.nonzero(live)[0]
            centers = self._center[:n].copy()
            cells = _cell(centers[live_ids, 0]) * GRID_NY + _cell(centers[live_ids, 1])
            order = np.argsort(cells, kind="stable")
            sorted_cells = cells[order]
            first = np.concatenate([[True], sorted_cells[1:] != sorted_cells[:-1]]) if sorted_cells.size else \
                np.zeros(0, bool)
            cell_of = np.full(n, -1, np.int64)
            cell_of[live_ids[order]] = np.cumsum(first) - 1
            rgb = np.zeros((n, 3), np.float32)
            rgb[live] = (self._rgb_sum[:n][live] / self._count[:n][live, None]).astype(np.float32)
            self._snapshot = BankSnapshot(
                version=self._version, keyframes=kfs, sizes=sizes, overlap=self._overlap.copy(),
                centers=centers, voxel_rgb=rgb, live=live, flat_ids=flat_ids, flat_kf=flat_kf,
                grid_order=live_ids[order].astype(np.int64), grid_keys=sorted_cells,
                cell_keys=sorted_cells[first], cell_of=cell_of,
                voxel_size=self.cfg.voxel_size)
            return self._snapshot

    # ---- internals (lock held) ----------------------------------------------------------------
    def _downscale(self, color: np.ndarray, depth_m: np.ndarray, K: np.ndarray):
        H, W = depth_m.shape
        sw = self.cfg.store_width
        depth_mm = np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
        if sw == 0 or sw >= W:
            return color.copy(), depth_mm, K.copy()
        w, h = sw, max(1, int(round(H * sw / W)))
        # colour: area averaging; depth: nearest (averaging would blend depths across edges)
        c = cv2.resize(color, (w, h), interpolation=cv2.INTER_AREA)
        d = cv2.resize(depth_mm, (w, h), interpolation=cv2.INTER_NEAREST)
        return c, d, scale_intrinsics(K, w / W, h / H)

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """Voxel ids of sorted unique keys, -1 where the table has none."""
        if self._keys_sorted.size == 0:
            return np.full(keys.size, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._keys_sorted, keys), self._keys_sorted.size - 1)
        return np.where(self._keys_sorted[pos] == keys, self._ids_sorted[pos], -1).astype(np.int64)

    def _assign(self, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
        new = ids < 0
        m = int(new.sum())
        if m:
            need = self._nvox + m
            if need > self._key.size:
                cap = max(need, 2 * self._key.size, 1024)
                self._key = np.resize(self._key, cap)
                self._center = np.resize(self._center, (cap, 3))
                self._count = np.concatenate([self._count[:self._nvox], np.zeros(cap - self._nvox, np.int32)])
                self._rgb_sum = np.concatenate([self._rgb_sum[:self._nvox], np.zeros((cap - self._nvox, 3), np.float32)])
            new_ids = np.arange(self._nvox, need, dtype=np.int64)
            self._key[new_ids] = keys[new]
            self._center[new_ids] = key_centers(keys[new], self.cfg.voxel_size)
            self._nvox = need
            ids = ids.copy()
            ids[new] = new_ids
            merged_k = np.concatenate([self._keys_sorted, keys[new]])
            merged_i = np.concatenate([self._ids_sorted, new_ids.astype(np.int32)])
            o = np.argsort(merged_k, kind="stable")
            self._keys_sorted, self._ids_sorted = merged_k[o], merged_i[o]
        return ids

    def _insert(self, kf: Keyframe) -> None:
        ids = kf.voxel_ids
        self._count[ids] += 1
        self._rgb_sum[ids] += kf.voxel_rgb
        mask = np.zeros(self._nvox, bool)
        mask[ids] = True
        row = np.array([int(mask[k.voxel_ids].sum()) for k in self._kfs] + [ids.size], np.int32)
        n = len(self._kfs)
        ov = np.zeros((n + 1, n + 1), np.int32)
        ov[:n, :n] = self._overlap
        ov[n, :] = row
        ov[:, n] = row
        self._overlap = ov
        self._kfs.append(kf)

    def _evict(self) -> None:
        n = len(self._kfs)
        if n <= 1:
            raise ValueError(f"bank bounds too small: max_bytes {self.cfg.max_bytes} cannot hold one keyframe")
        if self.cfg.eviction == "oldest":
            victim = 0
        else:
            red = np.array([(self._count[k.voxel_ids] >= 2).mean() for k in self._kfs[:-1]])
            victim = int(np.argmax(red))                 # first max: the oldest among ties
        kf = self._kfs.pop(victim)
        self._count[kf.voxel_ids] -= 1
        self._rgb_sum[kf.voxel_ids] -= kf.voxel_rgb
        self._overlap = np.delete(np.delete(self._overlap, victim, 0), victim, 1)
        self.stats["evicted"] += 1
        if self._nvox > 4096 and (self._count[:self._nvox] > 0).sum() < self._nvox // 2:
            self._compact()

    def _compact(self) -> None:
        """Drop voxels no keyframe sees and renumber ids (keeps the table bounded by the bank)."""
        live = np.nonzero(self._count[:self._nvox] > 0)[0]
        remap = np.full(self._nvox, -1, np.int64)
        remap[live] = np.arange(live.size)
        self._key = self._key[live].copy()
        self._center = self._center[live].copy()
        self._count = self._count[live].copy()
        self._rgb_sum = self._rgb_sum[live].copy()
        self._nvox = live.size
        o = np.argsort(self._key, kind="stable")
        self._keys_sorted, self._ids_sorted = self._key[o].copy(), o.astype(np.int32)
        self._kfs = [Keyframe(k.keyframe_id, k.stamp, k.color, k.depth_mm, k.K, k.T_map_optical,
                              remap[k.voxel_ids].astype(np.int32), k.voxel_rgb) for k in self._kfs]
