"""Incremental RGB-D fusion into a sparse voxel-hashed point map (CPU numpy, or CUDA).

    from r1_core.config import load_config
    from r1_core.geometry.fusion import FusionConfig, FusionMap
    fmap = FusionMap(load_config(FusionConfig, "config/fusion.yaml"))
    res = fmap.integrate(color, depth, K, T_map_optical)   # res.fused, or res.reason (counted)
    cloud = fmap.snapshot()                                 # (N, 6) float32 xyz (map) + rgb 0..255
    fmap.save("scene.r1map"); fmap = FusionMap.load("scene.r1map")
    fmap.export_ply("scene.ply")

Why voxel hashing of point statistics rather than a TSDF: the consumers want a coloured point
cloud (the encoder's N x 6 input, a PointCloud2 for RViz), not a mesh. Averaging each voxel's
points costs one update per pixel (a TSDF writes every voxel of a truncation band along each
ray, several per pixel), a snapshot is a plain read of the voxels (no marching cubes / zero
crossings), and the centroid of a voxel's samples lies on the surface (sub-voxel accuracy on
planes). What a TSDF adds - carving free space for moving objects - is not needed for the
static scenes a reasoning query looks at; a voxel seen once and never again fades out of
snapshots through `min_observations`, and stale voxels go first when the map is full.

Per voxel (key = packed integer voxel coordinates floor(p / voxel_size), 21 bits per axis):
float64 sums of weight, weight*xyz and weight*rgb, the number of frames that saw it and the
index of the last fused frame that saw it. The snapshot is the weighted mean xyz and rgb of
every voxel seen in at least `min_observations` frames, sorted by key (deterministic).

Per frame: depth -> metres (uint16 x depth_scale, or float32; NaN/inf/<= 0 invalid), range
[min_depth, max_depth], flying-pixel filter (a pixel whose depth differs from a valid
4-neighbour by more than edge_threshold x its depth is dropped), every `pixel_stride`-th
pixel, back-projection and transform in a fixed float32 order (rgbd.world_points; the CUDA
kernel uses the same order, so both backends put each pixel in the same voxel), optional crop
box, then one accumulation per voxel. The CPU path first reduces the frame's pixels to its
voxels (a scratch hash table + numpy bincount, all vectorised) and then updates the map
through a linear-probing hash index; the CUDA path (r1_core.cuda) does both in one kernel
with atomics. Results agree to float64 rounding; snapshots compare equal to ~1e-6.

Memory is bounded: when a frame leaves more than `max_voxels` voxels, the map evicts the
least recently observed ones (ties: smaller accumulated weight, then smaller key) until
max_voxels x (1 - evict_fraction) remain. An optional crop box (map frame) drops points
outside it before they reach the map.

Bad frames never touch the map: every check runs before the first write, and `integrate`
returns IntegrationResult(fused=False, reason=...) with the reason counted in `stats`
(reasons: SKIP_REASONS).

Save format (`save`/`load`): an uncompressed numpy .npz with `keys` int64 (M,), `sums`
float64 (M, 7) = [w, w*x, w*y, w*z, w*r, w*g, w*b], `observations` int32 (M,), `last_seen`
int32 (M,), rows sorted by key, and `meta`: UTF-8 JSON bytes (uint8) with format
"r1-fusion-map", version 1, voxel_size, frames_fused and the FusionConfig. Written to a temp
file in the same directory, fsynced and renamed over the target (os.replace), so a crash
mid-save leaves the previous map intact.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from r1_core.config import config_to_dict, load_config
from r1_core.geometry.rgbd import FrameError, Intrinsics, check_pose, pixel_rays

WEIGHTINGS = ("uniform", "inverse_depth_squared")
SKIP_REASONS = ("bad_depth_dtype", "bad_color", "bad_shape", "size_mismatch", "bad_intrinsics",
                "bad_pose", "no_valid_depth", "out_of_range")
FORMAT_NAME = "r1-fusion-map"
FORMAT_VERSION = 1
KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)          # voxel coordinate v is stored as v + 2**20
KEY_LIMIT = KEY_OFFSET - 2             # |voxel coordinate| limit; +-1 neighbours stay in range
_EMPTY = np.int64(-1)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


@dataclass
class FusionConfig:
    """Fusion map settings (config/fusion.yaml)."""

    voxel_size: float = 0.02            # metres
    min_depth: float = 0.2              # metres; nearer pixels are dropped
    max_depth: float = 4.0              # metres; farther pixels are dropped (depth noise grows ~z^2)
    depth_scale: float = 0.001          # metres per unit of uint16 depth (0.001: millimetres)
    pixel_stride: int = 2               # integrate every n-th pixel in u and v (1: all). 2 at 640x480 and
                                        # 2 cm still gives a voxel >= 1 sample per frame at 4 m, had the same
                                        # Chamfer error as 1 in bench/fusion.py, and halves the CPU time
    edge_threshold: float = 0.05        # flying-pixel filter: relative depth jump to a 4-neighbour; 0 = off
    weighting: str = "uniform"          # per-pixel weight: uniform | inverse_depth_squared (1/z^2)
    min_observations: int = 2           # frames a voxel must be seen in to appear in snapshots
    support_ratio: float = 0.5          # snapshot: drop voxels lighter than this x their heaviest 26-neighbour (0 = off)
    project: bool = True                # snapshot: project points onto their 3x3x3 neighbourhood plane
    max_voxels: int = 2_000_000         # voxel cap (memory: ~90 B/voxel CPU, ~110 B/voxel CUDA)
    evict_fraction: float = 0.1         # on overflow, evict down to max_voxels * (1 - evict_fraction)
    crop_min: Optional[tuple[float, float, float]] = None   # map-frame crop box (both or neither)
    crop_max: Optional[tuple[float, float, float]] = None
    device: str = "cpu"                 # cpu | cuda | cuda:N

    def __post_init__(self):
        pos = {"voxel_size": self.voxel_size, "max_depth": self.max_depth, "depth_scale": self.depth_scale}
        for k, v in pos.items():
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be a finite number > 0, got {v}")
        if not (0 <= self.min_depth < self.max_depth):
            raise ValueError(f"need 0 <= min_depth < max_depth, got min_depth={self.min_depth} "
                             f"max_depth={self.max_depth}")
        if self.pixel_stride < 1:
            raise ValueError(f"pixel_stride must be >= 1, got {self.pixel_stride}")
        if not (0 <= self.edge_threshold < math.inf):
            raise ValueError(f"edge_threshold must be >= 0 (0 disables), got {self.edge_threshold}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {list(WEIGHTINGS)}")
        if not (0 <= self.support_ratio <= 1):
            raise ValueError(f"support_ratio must be in [0, 1] (0 disables), got {self.support_ratio}")
        if self.min_observations < 1:
            raise ValueError(f"min_observations must be >= 1, got {self.min_observations}")
        if self.max_voxels < 1:
            raise ValueError(f"max_voxels must be >= 1, got {self.max_voxels}")
        if not (0 < self.evict_fraction <= 1):
            raise ValueError(f"evict_fraction must be in (0, 1], got {self.evict_fraction}")
        if (self.crop_min is None) != (self.crop_max is None):
            raise ValueError(f"crop_min and crop_max go together, got crop_min={self.crop_min} "
                             f"crop_max={self.crop_max}")
        if self.crop_min is not None and not all(a < b for a, b in zip(self.crop_min, self.crop_max)):
            raise ValueError(f"crop_min must be < crop_max on every axis, got {self.crop_min} {self.crop_max}")
        if not (self.device == "cpu" or self.device == "cuda" or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"unknown device {self.device!r}; choose one of ['cpu', 'cuda', 'cuda:N']")


@dataclass
class IntegrationResult:
    """What one `integrate` call did: fused, or skipped for a counted reason."""

    fused: bool
    reason: Optional[str] = None        # None when fused, else one of SKIP_REASONS
    message: str = ""
    frame: int = -1                     # index among fused frames (-1 when skipped)
    valid_pixels: int = 0
    new_voxels: int = 0
    voxels: int = 0                     # map size after the frame
    evicted: int = 0

    def raise_if_skipped(self) -> "IntegrationResult":
        if not self.fused:
            raise FrameError(self.reason or "skipped", self.message)
        return self


@dataclass
class FusionStats:
    frames_fused: int = 0
    frames_skipped: Counter = field(default_factory=Counter)
    evicted_total: int = 0
    last_integrate_ms: float = 0.0


def pack_keys(vox: np.ndarray) -> np.ndarray:
    """(N, 3) int voxel coordinates (|v| <= 2**20 - 1) -> (N,) int64 keys (non-negative)."""
    o = vox.astype(np.int64) + KEY_OFFSET
    return (o[:, 0] << (2 * KEY_BITS)) | (o[:, 1] << KEY_BITS) | o[:, 2]


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    mask = (1 << KEY_BITS) - 1
    return np.stack([(keys >> (2 * KEY_BITS)) & mask, (keys >> KEY_BITS) & mask, keys & mask], -1) - KEY_OFFSET


def _hash(keys: np.ndarray, bits: int) -> np.ndarray:
    """Fibonacci hashing of int64 keys to `bits` bits. (A locality-preserving variant - blocks of
    4x4x4 voxels sharing a table group - was tried: linear probing then clusters badly, 3x slower.)"""
    h = keys.view(np.uint64) * _HASH_MUL
    h >>= np.uint64(64 - bits)
    return h.view(np.int64)


class _HashIndex:
    """Open-addressing (linear probing) map int64 key -> int32 slot, vectorised with numpy.
    Load factor <= 1/2; rebuilt at twice the size when a batch would exceed it."""

    def __init__(self, capacity: int = 1 << 16):
        self.bits = max(10, int(math.ceil(math.log2(max(2, capacity) * 2))))
        self.keys = np.full(1 << self.bits, _EMPTY, np.int64)
        self.vals = np.zeros(1 << self.bits, np.int32)
        self.size = 0

    def find_or_insert(self, keys: np.ndarray, new_slots: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the unique `keys`; absent keys are inserted with consecutive slots starting
        at `new_slots` (int), or with the given slots (array, for rebuilds). -> (slots, is_new)."""
        if (self.size + len(keys)) * 2 > len(self.keys):
            live = self.keys != _EMPTY
            old_k, old_v = self.keys[live], self.vals[live]
            self.__init__((self.size + len(keys)) * 2)
            if len(old_k):
                self.find_or_insert(old_k, old_v)
        given = None if isinstance(new_slots, (int, np.integer)) else np.asarray(new_slots)
        next_slot = int(new_slots) if given is None else 0
        mask = len(self.keys) - 1
        n = len(keys)
        pos = _hash(keys, self.bits)
        slots = self.vals[pos]                        # round 1 directly over all keys
        is_new = np.zeros(n, bool)
        pend = np.flatnonzero(self.keys[pos] != keys)
        while len(pend):
            p = pos[pend]
            k = keys[pend]
            tk = self.keys[p]
            empty = tk == _EMPTY
            if empty.any():
                cand, cp = pend[empty], p[empty]
                self.keys[cp] = keys[cand]            # keys racing for one bucket: one wins
                won = self.keys[cp] == keys[cand]
                wc, wp = cand[won], cp[won]
                if given is None:
                    sl = np.arange(next_slot, next_slot + len(wc), dtype=np.int32)
                    next_slot += len(wc)
                else:
                    sl = given[wc]
                self.vals[wp] = sl
                slots[wc] = sl
                is_new[wc] = True
                self.size += len(wc)
                done = np.zeros(len(pend), bool)
                done[np.flatnonzero(empty)[won]] = True
                tk = self.keys[p]
            else:
                done = np.zeros(len(pend), bool)
            hit = (tk == k) & ~done
            slots[pend[hit]] = self.vals[p[hit]]
            pend = pend[~(hit | done)]
            pos[pend] = (pos[pend] + 1) & mask
        return slots.astype(np.int64), is_new


class _FrameReducer:
    """Reduces one frame's pixels to its voxels without sorting: a scratch hash table gives
    every pixel a representative pixel of its voxel (last writer wins; pixels whose bucket was
    won by another key retry the next bucket), then numpy.bincount sums per voxel. Measured
    here ~10x faster than torch.unique / np.unique (sort-based) followed by index_add."""

    def __init__(self, bits: int = 20):
        self.bits = bits
        self.table = np.zeros(1 << bits, np.int32)

    def ids(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n,) in [0, m), unique keys (m,)), voxels numbered in order of their
        representative pixel."""
        n = len(keys)
        mask = len(self.table) - 1
        pos = _hash(keys, self.bits)
        ar = np.arange(n, dtype=np.int32)
        self.table[pos] = ar                       # round 1 over all pixels, no indirection
        rep = self.table[pos]
        bad = np.flatnonzero(keys[rep] != keys)
        while len(bad):                            # the few pixels whose bucket another key won
            pos[bad] = (pos[bad] + 1) & mask
            p = pos[bad]
            self.table[p] = bad
            r = self.table[p]
            rep[bad] = r
            bad = bad[keys[r] != keys[bad]]
        is_rep = rep == ar
        reps = np.flatnonzero(is_rep)
        lookup = np.cumsum(is_rep, dtype=np.int32)    # rank of each representative (+1)
        ids = lookup[rep]
        ids -= 1
        return ids, keys[reps]


class FusionMap:
    """The fused scene: integrate RGB-D frames, snapshot the coloured cloud, save/load, PLY."""

    def __init__(self, config: FusionConfig | None = None, **overrides: Any):
        cfg = config or FusionConfig()
        if overrides:
            cfg = load_config(FusionConfig, config_to_dict(cfg), overrides=overrides)
        self.config = cfg
        self.stats = FusionStats()
        if cfg.device == "cpu":
            self._backend: Any = _CpuBackend(cfg)
        else:
            from r1_core.cuda.fusion import CudaFusionBackend
            self._backend = CudaFusionBackend(cfg)

    # ---- integration -----------------------------------------------------------------------------
    def integrate(self, color: Any, depth: Any, K: Any, T_map_optical: Any) -> IntegrationResult:
        """Fuse one registered RGB-D frame (color uint8 HxWx3 rgb8, depth uint16 mm or float32 m)
        taken with intrinsics K (Intrinsics, or 3x3 / 9 numbers for an undistorted camera of the
        depth's size) at pose T_map_optical (4x4). Never raises for a bad frame: returns
        fused=False with a reason (counted in `stats.frames_skipped`)."""
        t0 = time.perf_counter()
        try:
            res = self._integrate(color, depth, K, T_map_optical)
        except FrameError as e:
            res = IntegrationResult(False, e.reason, str(e), voxels=len(self))
        if res.fused:
            self.stats.frames_fused += 1
            self.stats.evicted_total += res.evicted
        else:
            self.stats.frames_skipped[res.reason] += 1
        self.stats.last_integrate_ms = (time.perf_counter() - t0) * 1e3
        return res

    def _integrate(self, color: Any, depth: Any, K: Any, T_map_optical: Any) -> IntegrationResult:
        shape = tuple(depth.shape) if hasattr(depth, "shape") else None
        if shape is not None and (len(shape) != 2 or 0 in shape):
            raise FrameError("bad_shape", f"depth: expected a non-empty (H, W) image, got shape {shape}")
        if isinstance(K, Intrinsics):
            intr = K
        else:
            if shape is None or len(shape) != 2:
                raise FrameError("bad_shape", f"depth: expected (H, W), got {shape}")
            intr = Intrinsics.from_K(K, shape[1], shape[0])
        T = check_pose(T_map_optical)
        frame = self.stats.frames_fused
        return self._backend.integrate(color, depth, intr, T, frame)

    # ---- outputs ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._backend.num_voxels()

    def snapshot(self, min_observations: int | None = None, refine: bool | None = None) -> np.ndarray:
        """(N, 6) float32 xyz (map frame, metres) + rgb (0..255), one point per voxel seen in at least
        `min_observations` frames (default: the config's), sorted by voxel key.

        With refinement (config `support_ratio` / `project`, on by default; `refine=False` gives
        the raw voxel means), voxels lighter than support_ratio x their heaviest 26-neighbour are
        dropped - the thin shells that depth noise leaves in front of and behind a surface - and
        each point is moved along the normal onto the plane fitted (weighted) to its 3x3x3
        neighbourhood of voxel means. When depth noise is as large as a voxel, samples that land
        in a voxel are a truncated slice of the noise, which pulls every mean towards the voxel
        centre (a bias of up to half a voxel); the neighbourhood plane spans the noise and
        removes it. Costs ~1 s per 500k voxels on 2 cores (numpy); see `refine_voxels`."""
        keys, sums, obs, _ = self._backend.state()
        m = self.config.min_observations if min_observations is None else min_observations
        sel = obs >= m
        keys, sums = keys[sel], sums[sel]
        order = np.argsort(keys, kind="stable")
        keys, sums = keys[order], sums[order]
        out = (sums[:, 1:7] / sums[:, :1])
        do = (self.config.support_ratio > 0 or self.config.project) if refine is None else refine
        if do and len(keys):
            keep, xyz = refine_voxels(keys, sums[:, 0], out[:, :3], self.config.support_ratio, self.config.project)
            out[:, :3] = xyz
            out = out[keep]
        return out.astype(np.float32)

    def snapshot_records(self, min_observations: int | None = None, refine: bool | None = None) -> np.ndarray:
        """The snapshot as a PointCloud2-ready structured array (x, y, z float32, rgb float32 with the
        packed 0x00RRGGBB bits, as PCL/RViz expect); 16 bytes per point, no padding. refine=False
        skips the (~1 s / 500k voxels) refinement, e.g. for frequent previews."""
        pts = self.snapshot(min_observations, refine)
        rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
        rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        c = np.clip(np.rint(pts[:, 3:6]), 0, 255).astype(np.uint32)
        rec["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
        return rec

    def voxel_keys(self) -> np.ndarray:
        """Keys of all voxels (sorted), whatever their observation count."""
        return np.sort(self._backend.state()[0])

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the map atomically (see the module docstring for the format)."""
        keys, sums, obs, last = self._backend.state()
        order = np.argsort(keys, kind="stable")
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "voxel_size": self.config.voxel_size,
                "frames_fused": self.stats.frames_fused, "config": config_to_dict(self.config)}
        buf = io.BytesIO()
        np.savez(buf, keys=keys[order], sums=sums[order], observations=obs[order].astype(np.int32),
                 last_seen=last[order].astype(np.int32),
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return _atomic_write(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, config: FusionConfig | None = None, **overrides: Any) -> "FusionMap":
        """Read a map written by `save`. With `config`, its voxel_size must equal the file's;
        without, the file's config is used. Raises ValueError naming the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: fusion map file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: not a readable .npz fusion map ({e})") from e
        need = {"keys", "sums", "observations", "last_seen", "meta"}
        if set(data) != need:
            raise ValueError(f"{path}: expected arrays {sorted(need)}, found {sorted(data)}")
        try:
            meta = json.loads(data["meta"].tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: meta is not UTF-8 JSON ({e})") from e
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, got "
                             f"{meta.get('format')!r} version {meta.get('version')}")
        if config is None:
            config = load_config(FusionConfig, meta["config"])
        if overrides:
            config = load_config(FusionConfig, config_to_dict(config), overrides=overrides)
        if config.voxel_size != meta["voxel_size"]:
            raise ValueError(f"{path}: map has voxel_size {meta['voxel_size']}, config asks for "
                             f"{config.voxel_size}; maps cannot be resampled on load")
        keys, sums, obs, last = data["keys"], data["sums"], data["observations"], data["last_seen"]
        M = len(keys)
        shapes_ok = (keys.dtype == np.int64 and keys.shape == (M,) and sums.dtype == np.float64
                     and sums.shape == (M, 7) and obs.shape == (M,) and last.shape == (M,))
        if not shapes_ok:
            raise ValueError(f"{path}: arrays have wrong dtypes/shapes: keys {keys.dtype}{keys.shape}, "
                             f"sums {sums.dtype}{sums.shape}, observations {obs.shape}, last_seen {last.shape}")
        if not np.isfinite(sums).all() or (M and (sums[:, 0] <= 0).any()):
            raise ValueError(f"{path}: sums must be finite with positive weights")
        if M and (np.diff(keys) <= 0).any():
            raise ValueError(f"{path}: keys must be unique and sorted")
        fmap = cls(config)
        fmap._backend.set_state(keys, sums, obs.astype(np.int32), last.astype(np.int32))
        fmap.stats.frames_fused = int(meta.get("frames_fused", 0))
        return fmap

    def export_ply(self, path: str | Path, min_observations: int | None = None, refine: bool | None = None) -> Path:
        """Write the snapshot as a binary little-endian coloured PLY (x, y, z float; red, green,
        blue uchar), atomically."""
        from plyfile import PlyData, PlyElement

        pts = self.snapshot(min_observations, refine)
        v = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                      ("red", "u1"), ("green", "u1"), ("blue", "u1")])
        v["x"], v["y"], v["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        rgb = np.clip(np.rint(pts[:, 3:6]), 0, 255).astype(np.uint8)
        v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        buf = io.BytesIO()
        PlyData([PlyElement.describe(v, "vertex")], text=False, byte_order="<").write(buf)
        return _atomic_write(Path(path), buf.getvalue())

    def clear(self) -> None:
        self._backend.set_state(np.zeros(0, np.int64), np.zeros((0, 7)), np.zeros(0, np.int32), np.zeros(0, np.int32))
        self.stats = FusionStats()


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write bytes to path via a temp file in the same directory + fsync + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


# ---- CPU backend -----------------------------------------------------------------------------------------
def frame_inputs(color: Any, depth: Any, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Validate a numpy frame; FrameError with a reason code on any problem."""
    if not isinstance(depth, np.ndarray):
        raise FrameError("bad_depth_dtype", f"depth: expected a numpy array, got {type(depth).__name__}")
    if depth.dtype not in (np.uint16, np.float32):
        raise FrameError("bad_depth_dtype", f"depth: expected uint16 (mm, 16UC1) or float32 (m, 32FC1), "
                                            f"got {depth.dtype}")
    if depth.ndim != 2 or depth.size == 0:
        raise FrameError("bad_shape", f"depth: expected a non-empty (H, W) image, got shape {depth.shape}")
    if depth.shape != (intr.height, intr.width):
        raise FrameError("size_mismatch", f"depth is {depth.shape[1]}x{depth.shape[0]} but the intrinsics "
                                          f"are for {intr.width}x{intr.height}")
    if not isinstance(color, np.ndarray):
        raise FrameError("bad_color", f"color: expected a numpy array, got {type(color).__name__}")
    if color.dtype != np.uint8 or color.ndim != 3 or color.shape[2] != 3:
        raise FrameError("bad_color", f"color: expected uint8 (H, W, 3) rgb8, got {color.dtype} {color.shape}")
    if color.shape[:2] != depth.shape:
        raise FrameError("size_mismatch", f"color is {color.shape[1]}x{color.shape[0]} but depth is "
                                          f"{depth.shape[1]}x{depth.shape[0]}; register/resize them first")
    return color, depth


class _CpuBackend:
    """numpy storage: slot arrays (grown by doubling) + a hash index key -> slot."""

    def __init__(self, cfg: FusionConfig):
        self.cfg = cfg
        self.reducer = _FrameReducer()
        self.set_state(np.zeros(0, np.int64), np.zeros((0, 7)), np.zeros(0, np.int32), np.zeros(0, np.int32))

    # state ----------------------------------------------------------------------------------------------
    def set_state(self, keys: np.ndarray, sums: np.ndarray, obs: np.ndarray, last: np.ndarray) -> None:
        n = len(keys)
        cap = max(1 << 14, 1 << int(math.ceil(math.log2(max(n, 1)))))
        self.keys = np.zeros(cap, np.int64)
        self.sums = np.zeros((7, cap), np.float64)      # channel-major: fancy updates per channel
        self.obs = np.zeros(cap, np.int32)
        self.last = np.zeros(cap, np.int32)
        self.n = n
        self.keys[:n], self.sums[:, :n], self.obs[:n], self.last[:n] = keys, sums.T, obs, last
        self.index = _HashIndex(max(n, 1 << 15))
        if n:
            self.index.find_or_insert(keys.astype(np.int64), np.arange(n))

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        return self.keys[:n].copy(), self.sums[:, :n].T.copy(), self.obs[:n].copy(), self.last[:n].copy()

    def num_voxels(self) -> int:
        return self.n

    def _grow(self, need: int) -> None:
        cap = len(self.keys)
        if need <= cap:
            return
        new = 1 << int(math.ceil(math.log2(need)))
        for name in ("keys", "sums", "obs", "last"):
            old = getattr(self, name)
            arr = np.zeros(old.shape[:-1] + (new,), old.dtype)
            arr[..., : self.n] = old[..., : self.n]
            setattr(self, name, arr)

    # per frame ----------------------------------------------------------------------------------------
    def integrate(self, color: Any, depth: Any, intr: Intrinsics, T: np.ndarray, frame: int) -> IntegrationResult:
        cfg = self.cfg
        color, depth = frame_inputs(color, depth, intr)
        st = cfg.pixel_stride
        z = depth_metres(depth[::st, ::st] if st > 1 else depth, cfg.depth_scale)
        with np.errstate(invalid="ignore"):
            valid = z >= np.float32(cfg.min_depth)
            valid &= z <= np.float32(cfg.max_depth)
            if cfg.edge_threshold > 0:
                valid &= ~_edge_mask(z, np.float32(cfg.edge_threshold))
        vi = np.flatnonzero(valid)
        if len(vi) == 0:
            raise FrameError("no_valid_depth", f"frame {frame}: no pixel with valid depth in "
                                               f"[{cfg.min_depth}, {cfg.max_depth}] m")
        rx, ry = pixel_rays(intr)
        if st > 1:
            rx, ry = rx[::st, ::st], ry[::st, ::st]
        zi = z.ravel().take(vi)
        p = _world(zi, rx.ravel().take(vi), ry.ravel().take(vi), T)
        if cfg.crop_min is not None:
            lo, hi = np.asarray(cfg.crop_min, np.float32), np.asarray(cfg.crop_max, np.float32)
            inside = (p[0] >= lo[0]) & (p[0] <= hi[0]) & (p[1] >= lo[1]) & (p[1] <= hi[1]) \
                & (p[2] >= lo[2]) & (p[2] <= hi[2])
            keep = np.flatnonzero(inside)
            if len(keep) == 0:
                raise FrameError("no_valid_depth", f"frame {frame}: no valid point inside the crop box")
            vi, zi, p = vi[keep], zi[keep], [c[keep] for c in p]
        key = _voxel_key(p, np.float32(cfg.voxel_size), frame)
        ids, ukeys = self.reducer.ids(key)
        m = len(ukeys)
        cflat = (color[::st, ::st] if st > 1 else color).reshape(-1)
        if not cflat.flags.c_contiguous:
            cflat = np.ascontiguousarray(cflat)
        c3 = vi * 3
        fs = np.empty((7, m), np.float64)
        if cfg.weighting == "uniform":
            fs[0] = np.bincount(ids, minlength=m)
            for j in range(3):
                fs[1 + j] = np.bincount(ids, weights=p[j], minlength=m)
                fs[4 + j] = np.bincount(ids, weights=cflat.take(c3 + j), minlength=m)
        else:
            w = (np.float32(1.0) / (zi * zi)).astype(np.float64)   # float32 1/(z*z), as the kernel
            fs[0] = np.bincount(ids, weights=w, minlength=m)
            for j in range(3):
                fs[1 + j] = np.bincount(ids, weights=w * p[j], minlength=m)
                fs[4 + j] = np.bincount(ids, weights=w * cflat.take(c3 + j), minlength=m)
        # ---- map update: the first write of this frame ----
        slots, is_new = self.index.find_or_insert(ukeys, self.n)
        n_new = int(np.count_nonzero(is_new))
        self._grow(self.n + n_new)
        self.keys[slots[is_new]] = ukeys[is_new]
        self.n += n_new
        self.sums[:, slots] += fs
        self.obs[slots] += 1
        self.last[slots] = frame
        evicted = self._evict_if_full()
        return IntegrationResult(True, None, "", frame, len(vi), n_new, self.n, evicted)

    def _evict_if_full(self) -> int:
        cfg = self.cfg
        if self.n <= cfg.max_voxels:
            return 0
        keep_n = int(cfg.max_voxels * (1.0 - cfg.evict_fraction))
        keys, sums, obs, last = self.state()
        keep = eviction_order(keys, sums[:, 0], last)[:keep_n]
        keep.sort()
        evicted = self.n - len(keep)
        self.set_state(keys[keep], sums[keep], obs[keep], last[keep])
        return evicted


def refine_voxels(keys: np.ndarray, weight: np.ndarray, xyz: np.ndarray, support_ratio: float,
                  project: bool) -> tuple[np.ndarray, np.ndarray]:
    """Snapshot refinement over sorted unique `keys` with voxel weights and means xyz (M, 3):
    returns (keep mask, refined xyz). keep: weight >= support_ratio x max weight of the 26
    neighbours. xyz: if `project`, each mean moved onto the weighted least-squares plane of the
    means in its 3x3x3 neighbourhood (itself included); else unchanged.

    Neighbours are found by binary search in the sorted keys: for each (dx, dy) one
    np.searchsorted of key - 1 in z, and the z-neighbours follow in sorted order."""
    M = len(keys)
    w = weight.astype(np.float64)
    px, py, pz = (np.ascontiguousarray(xyz[:, j], dtype=np.float64) for j in range(3))
    nbmax = np.zeros(M)
    if project:   # weighted sums of the means and their products over the neighbourhood (itself included)
        W = w.copy()
        Sx, Sy, Sz = w * px, w * py, w * pz
        Sxx, Sxy, Sxz, Syy, Syz, Szz = Sx * px, Sx * py, Sx * pz, Sy * py, Sy * pz, Sz * pz
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            base = keys + ((dx << (2 * KEY_BITS)) + (dy << KEY_BITS) - 1)
            pos = np.searchsorted(keys, base)
            for dz in (0, 1, 2):                  # neighbours at z - 1, z, z + 1 are consecutive keys
                q = np.minimum(pos, M - 1)
                hit = keys[q] == base + dz
                pos = pos + hit                   # the next z-neighbour sits after a found one
                if dx == 0 and dy == 0 and dz == 1:
                    continue                      # the voxel itself
                wn = w.take(q)
                wn *= hit
                np.maximum(nbmax, wn, out=nbmax)
                if project:
                    xq, yq, zq = px.take(q), py.take(q), pz.take(q)
                    W += wn
                    t = wn * xq
                    Sx += t; Sxx += t * xq; Sxy += t * yq; Sxz += t * zq
                    t = wn * yq
                    Sy += t; Syy += t * yq; Syz += t * zq
                    t = wn * zq
                    Sz += t; Szz += t * zq
    keep = w >= support_ratio * nbmax
    if not project:
        return keep, xyz
    k = np.flatnonzero(keep)                      # only kept voxels need their plane
    W = W[k]
    cx, cy, cz = Sx[k] / W, Sy[k] / W, Sz[k] / W
    cov = np.empty((len(k), 3, 3))
    cov[:, 0, 0] = Sxx[k] / W - cx * cx
    cov[:, 0, 1] = cov[:, 1, 0] = Sxy[k] / W - cx * cy
    cov[:, 0, 2] = cov[:, 2, 0] = Sxz[k] / W - cx * cz
    cov[:, 1, 1] = Syy[k] / W - cy * cy
    cov[:, 1, 2] = cov[:, 2, 1] = Syz[k] / W - cy * cz
    cov[:, 2, 2] = Szz[k] / W - cz * cz
    p = np.stack([px[k], py[k], pz[k]], 1)
    c = np.stack([cx, cy, cz], 1)
    evals, evecs = np.linalg.eigh(cov)
    n = evecs[:, :, 0]                            # normal: the least-variance direction
    planar = evals[:, 1] > 1e-12                  # fewer than 3 voxels or a line: keep the mean
    off = ((p - c) * n).sum(1)
    out = np.array(xyz, dtype=np.float64)
    out[k] = np.where(planar[:, None], p - off[:, None] * n, p)
    return keep, out.astype(xyz.dtype)


def eviction_order(keys: np.ndarray, weight: np.ndarray, last_seen: np.ndarray) -> np.ndarray:
    """Voxel indices from most to least worth keeping: most recently seen first, then larger
    weight, then smaller key (the eviction rule; both backends use it)."""
    return np.lexsort((keys, -weight, -last_seen.astype(np.int64)))


def depth_metres(d: np.ndarray, depth_scale: float) -> np.ndarray:
    """float32 metres with NaN where invalid (uint16 0; float NaN/inf/<= 0)."""
    if d.dtype == np.uint16:
        z = d.astype(np.float32)
        z *= np.float32(depth_scale)
        z[d == 0] = np.nan
    else:
        z = np.array(d, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            z[~((z > 0) & (z < np.inf))] = np.nan
    return z


def _voxel_key(p: list[np.ndarray], vs: np.float32, frame: int) -> np.ndarray:
    """Packed int64 keys of floor(p / voxel_size); FrameError('out_of_range') past 2**20 voxels."""
    key = None
    for axis, c in enumerate(p):
        v = np.floor(c / vs)
        lo, hi = float(v.min()), float(v.max())
        if lo < -KEY_LIMIT or hi > KEY_LIMIT:
            raise FrameError("out_of_range", f"frame {frame}: points reach {max(-lo, hi):.0f} voxels from "
                                             f"the origin on axis {'xyz'[axis]} (limit {KEY_LIMIT}); check "
                                             f"the pose and voxel_size")
        k = v.astype(np.int64)
        k += KEY_OFFSET
        if key is None:
            key = k << (2 * KEY_BITS)
        elif axis == 1:
            key |= k << KEY_BITS
        else:
            key |= k
    return key


def _edge_mask(z: np.ndarray, thr: np.float32) -> np.ndarray:
    """True where a pixel's depth differs from a valid 4-neighbour by more than thr * depth
    (NaN neighbours never trigger)."""
    bad = np.zeros(z.shape, bool)
    lim = z * thr
    d = np.abs(z[:, 1:] - z[:, :-1])                   # horizontal pairs
    bad[:, 1:] |= d > lim[:, 1:]
    bad[:, :-1] |= d > lim[:, :-1]
    d = np.abs(z[1:] - z[:-1])                         # vertical pairs
    bad[1:] |= d > lim[1:]
    bad[:-1] |= d > lim[:-1]
    return bad


def _world(z: np.ndarray, rx: np.ndarray, ry: np.ndarray, T: np.ndarray) -> list[np.ndarray]:
    """Map-frame x, y, z (float32 arrays), same fixed order as rgbd.world_points."""
    R = T[:3, :3].astype(np.float32)
    t = T[:3, 3].astype(np.float32)
    x, y = z * rx, z * ry
    out = []
    for i in range(3):
        a = x * R[i, 0]
        a += y * R[i, 1]
        a += z * R[i, 2]
        a += t[i]
        out.append(a)
    return out
