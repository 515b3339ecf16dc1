"""Procedural ScanNet-like rooms: furniture of the ScanNet classes, named colours, support
relations (on / under / next to), geometry as axis-aligned boxes, and point clouds sampled
from the same surfaces the renderer draws.

    from r1_core.data.synthetic.world import SynthConfig, generate_room
    room = generate_room(SynthConfig(), seed=7)            # deterministic by seed
    scene = room.to_scene()                                # r1_core.data.scene.Scene (ScanNet arrays)
    room.save_json("room.json"); SynthRoom.load_json("room.json")

Frame: `map`, z up, the room spans [0, W] × [0, D] × [0, H]. Walls 0..3 are x=0, x=W, y=0, y=D.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r1_core.data.classes import nyu40_id
from r1_core.data.scene import Scene, SceneObject
from r1_core.data.synthetic.catalog import CLASSES, COLORS, FLOOR_COLORS, ROOM_KINDS, ROOM_SIZES, WALL_COLORS

WALL_NORMALS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float64)  # inward normals of walls 0..3
_WALL_QUARTER_TURNS = (1, 3, 2, 0)  # rotate the local frame so its front (-y) faces into the room


@dataclass
class SynthConfig:
    """Synthetic world settings (config/data.yaml, section `synth`)."""
    kinds: tuple[str, ...] = ("bedroom", "living room", "office", "kitchen", "bathroom")
    height_range: tuple[float, float] = (2.5, 3.0)
    points_per_m2: float = 550.0          # ScanNet-like vertex density of the sampled cloud
    min_points: int = 40000
    max_points: int = 100000
    with_normals: bool = False            # N×9 clouds (xyz rgb normal) instead of N×6
    cloud_ceiling: bool = False           # ScanNet reconstructions rarely have ceilings
    color_noise: float = 6.0              # std of per-point colour noise (0..255 units)
    max_attempts: int = 60                # placement tries per object before it is dropped

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in ROOM_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"unknown room kind(s) {bad}; choose from {sorted(ROOM_KINDS)}")
        if not 0 < self.min_points <= self.max_points:
            raise ValueError(f"need 0 < min_points <= max_points, got {self.min_points}, {self.max_points}")


@dataclass
class SynthObject:
    object_id: int
    label: str
    color: str
    parts_lo: np.ndarray      # (P, 3) part box corners, map frame
    parts_hi: np.ndarray
    place: str                # structure | wall | free | near | on | under | wallmount | door | window
    support: int | None = None    # object it stands on / is under / is next to (by construction)
    wall: int | None = None       # wall index for wall-placed objects

    @property
    def nyu40_id(self) -> int:
        return nyu40_id(self.label)

    @property
    def lo(self) -> np.ndarray:
        return self.parts_lo.min(0)

    @property
    def hi(self) -> np.ndarray:
        return self.parts_hi.max(0)

    @property
    def box(self) -> np.ndarray:
        lo, hi = self.lo, self.hi
        return np.concatenate([(lo + hi) / 2, hi - lo, [0.0]]).astype(np.float32)

    @property
    def rgb(self) -> np.ndarray:
        return np.asarray(COLORS[self.color], np.float32)


@dataclass
class BoxTable:
    """Every surface box of a room, flattened for the renderer and the sampler.
    `face` is -1 for a solid box (all faces), or the one face (2*axis + side) of a shell box."""
    lo: np.ndarray          # (B, 3) float64
    hi: np.ndarray
    rgb: np.ndarray         # (B, 3) float32 0..1
    instance: np.ndarray    # (B,) int32 object_id + 1 (0 = ceiling / none)
    nyu40: np.ndarray       # (B,) int32
    face: np.ndarray        # (B,) int32


@dataclass
class SynthRoom:
    scene_id: str
    kind: str
    size: tuple[float, float, float]
    objects: list[SynthObject]
    wall_color: str = "white"
    floor_color: str = "brown"
    seed: int = 0

    def object(self, object_id: int) -> SynthObject:
        return self.objects[object_id]

    @property
    def door(self) -> SynthObject:
        return next(o for o in self.objects if o.label == "door")

    def furniture(self) -> list[SynthObject]:
        return [o for o in self.objects if o.place != "structure"]

    # -- geometry --------------------------------------------------------------------------
    def box_table(self, ceiling: bool = True) -> BoxTable:
        W, D, H = self.size
        lo, hi, rgb, inst, nyu, face = [], [], [], [], [], []
        for o in self.objects:
            shell_face = -1
            if o.place == "structure":
                shell_face = {"floor": 5}.get(o.label, -1)
                if o.label == "wall":
                    shell_face = (1, 0, 3, 2)[o.wall]  # the face that looks into the room
            for a, b in zip(o.parts_lo, o.parts_hi):
                lo.append(a); hi.append(b); rgb.append(o.rgb); inst.append(o.object_id + 1)
                nyu.append(o.nyu40_id); face.append(shell_face)
        if ceiling:
            lo.append([0, 0, H]); hi.append([W, D, H + 0.05]); rgb.append(COLORS["white"])
            inst.append(0); nyu.append(22); face.append(4)
        return BoxTable(np.asarray(lo, np.float64), np.asarray(hi, np.float64), np.asarray(rgb, np.float32),
                        np.asarray(inst, np.int32), np.asarray(nyu, np.int32), np.asarray(face, np.int32))

    def to_scene(self, cfg: SynthConfig | None = None, seed: int | None = None) -> Scene:
        """Sample the ScanNet-like cloud from the room's surfaces (deterministic by `seed`)."""
        cfg = cfg or SynthConfig()
        rng = np.random.default_rng(self.seed if seed is None else seed)
        pts, nrm, rgb, inst, sem = sample_surface_points(self, cfg, rng)
        cols = [pts, np.clip(rgb * 255.0 + rng.normal(0, cfg.color_noise, rgb.shape), 0, 255)]
        if cfg.with_normals:
            cols.append(nrm)
        objs = [SceneObject(o.object_id, o.label, o.nyu40_id, o.box, o.color) for o in self.objects]
        return Scene(self.scene_id, np.concatenate(cols, 1).astype(np.float32), inst, sem, objs)

    # -- (de)serialisation ------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "scene_id": self.scene_id, "kind": self.kind, "size": list(self.size), "seed": self.seed,
            "wall_color": self.wall_color, "floor_color": self.floor_color,
            "objects": [{"object_id": o.object_id, "label": o.label, "color": o.color, "place": o.place,
                         "support": o.support, "wall": o.wall,
                         "parts": [[*map(float, a), *map(float, b)] for a, b in zip(o.parts_lo, o.parts_hi)]}
                        for o in self.objects],
        }

    @classmethod
    def from_json(cls, d: dict) -> "SynthRoom":
        objs = []
        for o in d["objects"]:
            p = np.asarray(o["parts"], np.float64).reshape(-1, 6)
            objs.append(SynthObject(o["object_id"], o["label"], o["color"], p[:, :3], p[:, 3:], o["place"], o["support"], o["wall"]))
        return cls(d["scene_id"], d["kind"], tuple(d["size"]), objs, d["wall_color"], d["floor_color"], d["seed"])

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "SynthRoom":
        from r1_core.data.errors import DataFormatError, require_file
        path = require_file(path, "synthetic room")
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(path, f"not a synthetic room description: {e!r}") from None


def clearance(room: SynthRoom, pts: np.ndarray) -> np.ndarray:
    """Distance of each point (M, 3) to the nearest solid geometry or wall/floor/ceiling."""
    pts = np.asarray(pts, np.float64).reshape(-1, 3)
    t = room.box_table(ceiling=True)
    solid = t.face < 0
    lo, hi = t.lo[solid], t.hi[solid]
    d = np.linalg.norm(np.maximum(0, np.maximum(lo[None] - pts[:, None], pts[:, None] - hi[None])), axis=2).min(1)
    W, D, H = room.size
    shell = np.minimum.reduce([pts[:, 0], W - pts[:, 0], pts[:, 1], D - pts[:, 1], pts[:, 2], H - pts[:, 2]])
    return np.minimum(d, shell)


# ---------------------------------------------------------------------------------------------
# point sampling


def _face_rect(lo: np.ndarray, hi: np.ndarray, f: int) -> tuple[int, float, int, int]:
    axis, side = divmod(f, 2)
    u, v = [a for a in range(3) if a != axis]
    return axis, (hi if side else lo)[axis], u, v


def sample_surface_points(room: SynthRoom, cfg: SynthConfig, rng: np.random.Generator):
    """Area-uniform samples of every visible surface. Written here rather than with open3d's
    sampler because each point must carry its box's instance and class labels, and faces in
    contact with other boxes (hidden in a real scan) must be left out."""
    t = room.box_table(ceiling=cfg.cloud_ceiling)
    W, D, H = room.size
    room_lo, room_hi = np.zeros(3), np.array([W, D, H])
    faces = []  # (box, face, area)
    for b in range(len(t.lo)):
        fs = [t.face[b]] if t.face[b] >= 0 else range(6)
        for f in fs:
            axis, c, u, v = _face_rect(t.lo[b], t.hi[b], f)
            if t.face[b] < 0:
                side = f % 2
                if (side == 0 and c <= room_lo[axis] + 1e-6) or (side == 1 and c >= room_hi[axis] - 1e-6):
                    continue  # lies on the floor or against a wall
            area = (t.hi[b, u] - t.lo[b, u]) * (t.hi[b, v] - t.lo[b, v])
            if area > 0:
                faces.append((b, f, area))
    areas = np.array([a for _, _, a in faces])
    n_total = int(np.clip(areas.sum() * cfg.points_per_m2, cfg.min_points, cfg.max_points))
    # oversample: hidden contact regions are removed below
    counts = rng.multinomial(int(n_total * 1.15), areas / areas.sum())
    P, N, C, I, S = [], [], [], [], []
    for (b, f, _), n in zip(faces, counts):
        if n == 0:
            continue
        axis, c, u, v = _face_rect(t.lo[b], t.hi[b], f)
        p = np.empty((n, 3))
        p[:, axis] = c
        p[:, u] = rng.uniform(t.lo[b, u], t.hi[b, u], n)
        p[:, v] = rng.uniform(t.lo[b, v], t.hi[b, v], n)
        nrm = np.zeros((n, 3)); nrm[:, axis] = 1.0 if f % 2 else -1.0
        P.append(p); N.append(nrm); C.append(np.repeat(t.rgb[b][None] * _face_shade(f), n, 0))
        I.append(np.full(n, t.instance[b], np.int32)); S.append(np.full(n, t.nyu40[b], np.int32))
        P[-1] = np.concatenate([p, np.full((n, 1), b)], 1)  # remember the owning box
    pts = np.concatenate(P)
    owner = pts[:, 3].astype(np.int64)
    pts = pts[:, :3]
    keep = ~_inside_other_box(pts, owner, t)
    sel = np.flatnonzero(keep)
    if len(sel) > n_total:
        sel = np.sort(rng.choice(sel, n_total, replace=False))
    return (pts[sel].astype(np.float32), np.concatenate(N)[sel].astype(np.float32), np.concatenate(C)[sel].astype(np.float32),
            np.concatenate(I)[sel], np.concatenate(S)[sel])


def _inside_other_box(pts: np.ndarray, owner: np.ndarray, t: BoxTable, eps: float = 1e-3) -> np.ndarray:
    """True where a point lies inside (or on) a solid box other than its own: a contact face."""
    out = np.zeros(len(pts), bool)
    solid = np.flatnonzero(t.face < 0)
    for b in solid:
        lo, hi = t.lo[b] - eps, t.hi[b] + eps
        m = np.all((pts >= lo) & (pts <= hi), 1) & (owner != b)
        out |= m
    return out


_LIGHT = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])


def _face_shade(f: int) -> float:
    """Lambert shade of a face (fixed light from above) — the renderer uses the same."""
    n = np.zeros(3); n[f // 2] = 1.0 if f % 2 else -1.0
    return float(0.55 + 0.45 * abs(n @ _LIGHT))


FACE_SHADES = np.array([_face_shade(f) for f in range(6)], np.float32)

# ---------------------------------------------------------------------------------------------
# placement


def _rotate_parts(parts, k: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([p[0] for p in parts], np.float64)
    hi = np.array([p[1] for p in parts], np.float64)
    def rot(xy):
        x, y = xy[:, 0], xy[:, 1]
        return [np.stack([x, y], 1), np.stack([-y, x], 1), np.stack([-x, -y], 1), np.stack([y, -x], 1)][k % 4]
    a, b = rot(lo[:, :2]), rot(hi[:, :2])
    lo2 = lo.copy(); hi2 = hi.copy()
    lo2[:, :2] = np.minimum(a, b); hi2[:, :2] = np.maximum(a, b)
    return lo2, hi2


class _Layout:
    """Occupancy bookkeeping while a room is furnished."""

    def __init__(self, W: float, D: float, H: float):
        self.W, self.D, self.H = W, D, H
        self.floor: list[tuple[np.ndarray, np.ndarray]] = []   # 3D boxes of floor objects (and reserved zones)
        self.walls: list[list[tuple[float, float, float, float]]] = [[], [], [], []]  # (a0, a1, z0, z1)

    def wall_len(self, w: int) -> float:
        return self.D if w < 2 else self.W

    def free3d(self, lo, hi, margin=0.03) -> bool:
        if np.any(lo[:2] < -1e-9) or hi[0] > self.W + 1e-9 or hi[1] > self.D + 1e-9 or hi[2] > self.H - 0.05:
            return False
        for a, b in self.floor:
            if np.all(lo < b + margin - 1e-9) and np.all(hi > a - margin + 1e-9):
                return False
        return True

    def free_wall(self, w, a0, a1, z0, z1, margin=0.05) -> bool:
        if a0 < 0.05 or a1 > self.wall_len(w) - 0.05:
            return False
        return all(not (a0 < b1 + margin and a1 > b0 - margin and z0 < c1 and z1 > c0) for b0, b1, c0, c1 in self.walls[w])


def _wall_span(lo, hi, w):
    ax = 1 if w < 2 else 0
    return float(lo[ax]), float(hi[ax])


def _touching_wall(lo, hi, L: _Layout, tol=0.02) -> list[int]:
    out = []
    if lo[0] <= tol: out.append(0)
    if hi[0] >= L.W - tol: out.append(1)
    if lo[1] <= tol: out.append(2)
    if hi[1] >= L.D - tol: out.append(3)
    return out


def _place_at_wall(parts, w: int, a: float, L: _Layout, z0: float = 0.0, offset: float = 0.0):
    lo, hi = _rotate_parts(parts, _WALL_QUARTER_TURNS[w])
    ext = hi.max(0) - lo.min(0)
    if w == 0:
        c = (offset + ext[0] / 2, a)
    elif w == 1:
        c = (L.W - offset - ext[0] / 2, a)
    elif w == 2:
        c = (a, offset + ext[1] / 2)
    else:
        c = (a, L.D - offset - ext[1] / 2)
    mid = (lo[:, :2].min(0) + hi[:, :2].max(0)) / 2
    shift = np.array([c[0] - mid[0], c[1] - mid[1], z0])
    return lo + shift, hi + shift


def generate_room(cfg: SynthConfig | None = None, seed: int = 0, kind: str | None = None,
                  scene_id: str | None = None, recipe: list[dict] | None = None) -> SynthRoom:
    """Furnish one room. `recipe` (list of {label, color?, near?}) replaces the kind's random
    contents — the demo scene uses it. Deterministic by `seed`."""
    cfg = cfg or SynthConfig()
    rng = np.random.default_rng(seed)
    kind = kind or str(rng.choice(list(cfg.kinds)))
    if kind not in ROOM_KINDS:
        raise ValueError(f"unknown room kind {kind!r}; choose one of {sorted(ROOM_KINDS)}")
    scene_id = scene_id or f"synth{seed:04d}_00"
    for attempt in range(20):
        room = _try_room(cfg, np.random.default_rng([seed, attempt]), kind, scene_id, recipe)
        if room is not None:
            room.seed = seed
            return room
    raise RuntimeError(f"could not furnish a {kind} for seed {seed} in 20 attempts (recipe too crowded?)")


MAX_OBJECTS = 25


def _entries(kind: str, rng: np.random.Generator) -> list[dict]:
    out = []
    for label, lo, hi in ROOM_KINDS[kind]:
        out += [{"label": label} for _ in range(int(rng.integers(lo, hi + 1)))]
    return out[:MAX_OBJECTS]   # recipes list essentials first: the cap drops small extras


def _try_room(cfg: SynthConfig, rng: np.random.Generator, kind: str, scene_id: str, recipe) -> SynthRoom | None:
    (w0, w1), (d0, d1) = ROOM_SIZES[kind]
    W, D = round(float(rng.uniform(w0, w1)), 2), round(float(rng.uniform(d0, d1)), 2)
    H = round(float(rng.uniform(*cfg.height_range)), 2)
    L = _Layout(W, D, H)
    objs: list[SynthObject] = []
    wall_color, floor_color = str(rng.choice(WALL_COLORS)), str(rng.choice(FLOOR_COLORS))
    t = 0.1
    objs.append(SynthObject(0, "floor", floor_color, np.array([[0, 0, -0.05]]), np.array([[W, D, 0.0]]), "structure"))
    for w, (lo, hi) in enumerate([([-t, 0, 0], [0, D, H]), ([W, 0, 0], [W + t, D, H]),
                                  ([0, -t, 0], [W, 0, H]), ([0, D, 0], [W, D + t, H])]):
        objs.append(SynthObject(len(objs), "wall", wall_color, np.array([lo], float), np.array([hi], float), "structure", wall=w))
    entries = recipe if recipe is not None else _entries(kind, rng)
    used_colors: dict[str, list[str]] = {}
    for e in entries:
        spec = CLASSES[e["label"]]
        color = e.get("color")
        if color is None:
            taken = used_colors.get(spec.label, [])
            free = [c for c in spec.colors if c not in taken]
            # mostly distinct colours per class; sometimes a repeat so relations must disambiguate
            color = str(rng.choice(free if free and rng.random() > 0.25 else list(spec.colors)))
        placed = None
        for _ in range(cfg.max_attempts):
            placed = _place(spec, e, rng, L, objs)
            if placed is not None:
                break
        if placed is None:
            if recipe is not None:
                return None
            continue
        lo, hi, place, support, wall = placed
        used_colors.setdefault(spec.label, []).append(color)
        objs.append(SynthObject(len(objs), spec.label, color, lo, hi, place, support, wall))
        olo, ohi = lo.min(0), hi.max(0)
        if place in ("wall", "free", "near", "under", "door"):
            L.floor.append((olo, ohi))
        for wi in _touching_wall(olo, ohi, L):
            a0, a1 = _wall_span(olo, ohi, wi)
            L.walls[wi].append((a0, a1, float(olo[2]), float(ohi[2])))
        if place == "door":  # keep the doorway clear
            w = wall
            n = WALL_NORMALS[w]
            zlo, zhi = olo.copy(), ohi.copy()
            if n[0] > 0: zhi[0] = 1.0
            elif n[0] < 0: zlo[0] = W - 1.0
            elif n[1] > 0: zhi[1] = 1.0
            else: zlo[1] = D - 1.0
            L.floor.append((zlo, zhi))
    n_furn = len(objs) - 5
    if recipe is None and n_furn < 10:
        return None
    if not any(o.label == "door" for o in objs):
        return None
    return SynthRoom(scene_id, kind, (W, D, H), objs, wall_color, floor_color)


def _supports(objs, labels) -> list[SynthObject]:
    return [o for o in objs if o.label in labels]


def _place(spec, e, rng, L: _Layout, objs):
    w_, d_, h_ = spec.sample_size(rng)
    parts = spec.builder(w_, d_, h_)
    place = spec.place
    if spec.label == "box":
        place = str(rng.choice(["free", "on", "under"], p=[0.4, 0.3, 0.3]))
        if place == "on" and not _supports(objs, ("table", "desk", "cabinet", "dresser")):
            place = "free"
        if place == "under" and not _supports(objs, ("table", "desk")):
            place = "free"
    if spec.label == "chair" and e.get("near") is None and rng.random() < 0.25:
        place = "free"
    if place in ("wall", "door"):
        w = int(rng.integers(4))
        a = float(rng.uniform(0.3, L.wall_len(w) - 0.3))
        lo, hi = _place_at_wall(parts, w, a, L)
        olo, ohi = lo.min(0), hi.max(0)
        a0, a1 = _wall_span(olo, ohi, w)
        if L.free3d(olo, ohi, 0.05) and L.free_wall(w, a0, a1, float(olo[2]), float(ohi[2])):
            return lo, hi, place, None, w
        return None
    if place in ("window", "wallmount"):
        w = int(rng.integers(4))
        z0 = float(rng.uniform(*spec.mount_z))
        a = float(rng.uniform(0.3, L.wall_len(w) - 0.3))
        if place == "wallmount" and rng.random() < 0.5:  # often above a wall piece of furniture
            below = [o for o in objs if o.wall is not None and o.place == "wall" and o.hi[2] < 1.3]
            if below:
                b = below[int(rng.integers(len(below)))]
                w = b.wall
                a = float(np.mean(_wall_span(b.lo, b.hi, w)))
                z0 = max(z0, float(b.hi[2]) + 0.2)
        lo, hi = _place_at_wall(parts, w, a, L, z0=z0)
        olo, ohi = lo.min(0), hi.max(0)
        a0, a1 = _wall_span(olo, ohi, w)
        if ohi[2] < L.H - 0.1 and L.free_wall(w, a0, a1, float(olo[2]), float(ohi[2])):
            return lo, hi, place, None, w
        return None
    if place == "free":
        k = int(rng.integers(4))
        lo, hi = _rotate_parts(parts, k)
        ext = hi.max(0) - lo.min(0)
        m = 0.7
        if L.W - 2 * m < ext[0] or L.D - 2 * m < ext[1]:
            return None
        c = np.array([rng.uniform(m + ext[0] / 2, L.W - m - ext[0] / 2), rng.uniform(m + ext[1] / 2, L.D - m - ext[1] / 2)])
        shift = np.array([*(c - (lo[:, :2].min(0) + hi[:, :2].max(0)) / 2), 0.0])
        lo, hi = lo + shift, hi + shift
        if L.free3d(lo.min(0), hi.max(0), 0.15):
            return lo, hi, "free", None, None
        return None
    if place == "near":
        labels = (e["near"],) if e.get("near") else spec.supports
        cands = _supports(objs, labels)
        if not cands:
            return None
        s = cands[int(rng.integers(len(cands)))]
        if spec.label in ("curtain",):
            return _beside_on_wall(parts, s, rng, L, z0=0.0)
        if spec.label == "night stand":
            return _beside_on_wall(parts, s, rng, L, z0=0.0, floor=True)
        if spec.label == "shower curtain":
            lo, hi = _place_at_wall(parts, s.wall, float(np.mean(_wall_span(s.lo, s.hi, s.wall))), L, z0=0.1,
                                    offset=float(s.hi[0 if s.wall < 2 else 1] - s.lo[0 if s.wall < 2 else 1]) + 0.01)
            if L.free3d(lo.min(0), hi.max(0), 0.0):
                return lo, hi, "near", s.object_id, None
            return None
        # a seat beside its support, facing it
        side = int(rng.integers(4))
        n = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])[side]   # direction from support to chair
        k = {(1, 0): 3, (-1, 0): 1, (0, 1): 0, (0, -1): 2}[tuple(n)]  # chair front faces the support
        if spec.label == "chair" and s.label in ("bed", "sofa"):
            k = (k + 2) % 4 if rng.random() < 0.5 else k
        lo, hi = _rotate_parts(parts, k)
        ext = hi.max(0) - lo.min(0)
        gap = float(rng.uniform(0.08, 0.3))
        sc = (s.lo + s.hi) / 2
        c = sc[:2].copy()
        ax = 0 if n[0] != 0 else 1
        c[ax] = (s.hi[ax] + gap + ext[ax] / 2) if n[ax] > 0 else (s.lo[ax] - gap - ext[ax] / 2)
        other = 1 - ax
        half = (s.hi[other] - s.lo[other]) / 2
        c[other] += float(rng.uniform(-1, 1)) * max(0.0, half - ext[other] / 2)
        shift = np.array([*(c - (lo[:, :2].min(0) + hi[:, :2].max(0)) / 2), 0.0])
        lo, hi = lo + shift, hi + shift
        if L.free3d(lo.min(0), hi.max(0), 0.05):
            return lo, hi, "near", s.object_id, None
        return None
    if place == "on":
        labels = ("table", "desk", "cabinet", "dresser") if spec.label == "box" else spec.supports
        cands = _supports(objs, labels)
        if not cands:
            return None
        s = cands[int(rng.integers(len(cands)))]
        # the support surface: the highest part among those with a large top (mattress, seat, desk top)
        area = (s.parts_hi[:, 0] - s.parts_lo[:, 0]) * (s.parts_hi[:, 1] - s.parts_lo[:, 1])
        big = area >= 0.5 * area.max()
        top = int(np.argmax(np.where(big, s.parts_hi[:, 2], -np.inf)))
        tlo, thi = s.parts_lo[top], s.parts_hi[top]
        k = int(rng.integers(4)) if spec.label != "tv" else _WALL_QUARTER_TURNS[s.wall if s.wall is not None else 3]
        lo, hi = _rotate_parts(parts, k)
        ext = hi.max(0) - lo.min(0)
        if ext[0] > thi[0] - tlo[0] - 0.04 or ext[1] > thi[1] - tlo[1] - 0.04:
            return None
        c = np.array([rng.uniform(tlo[0] + ext[0] / 2 + 0.02, thi[0] - ext[0] / 2 - 0.02),
                      rng.uniform(tlo[1] + ext[1] / 2 + 0.02, thi[1] - ext[1] / 2 - 0.02)])
        shift = np.array([*(c - (lo[:, :2].min(0) + hi[:, :2].max(0)) / 2), thi[2]])
        lo, hi = lo + shift, hi + shift
        olo, ohi = lo.min(0), hi.max(0)
        for o in objs:  # nothing else on that support may overlap
            if o.place == "on" and o.support == s.object_id and np.all(olo < o.hi) and np.all(ohi > o.lo):
                return None
        if ohi[2] > L.H - 0.1:
            return None
        return lo, hi, "on", s.object_id, None
    if place == "under":
        cands = _supports(objs, ("table", "desk"))
        if not cands:
            return None
        s = cands[int(rng.integers(len(cands)))]
        inner_lo, inner_hi = s.lo + np.array([0.06, 0.06, 0]), s.hi - np.array([0.06, 0.06, 0.06])
        lo, hi = _rotate_parts(parts, int(rng.integers(4)))
        ext = hi.max(0) - lo.min(0)
        if np.any(ext[:2] > inner_hi[:2] - inner_lo[:2]) or ext[2] > inner_hi[2] - 0.03:
            return None
        c = np.array([rng.uniform(inner_lo[0] + ext[0] / 2, inner_hi[0] - ext[0] / 2),
                      rng.uniform(inner_lo[1] + ext[1] / 2, inner_hi[1] - ext[1] / 2)])
        shift = np.array([*(c - (lo[:, :2].min(0) + hi[:, :2].max(0)) / 2), 0.0])
        lo, hi = lo + shift, hi + shift
        olo, ohi = lo.min(0), hi.max(0)
        for a, b in zip(s.parts_lo, s.parts_hi):  # must not cut through the support's parts
            if np.all(olo < b) and np.all(ohi > a):
                return None
        for o in objs:
            if o.place == "under" and o.support == s.object_id and np.all(olo < o.hi) and np.all(ohi > o.lo):
                return None
        return lo, hi, "under", s.object_id, None
    raise ValueError(f"unknown placement {place!r}; choose one of ['wall', 'door', 'window', 'wallmount', 'free', 'near', 'on', 'under']")


def _beside_on_wall(parts, s: SynthObject, rng, L: _Layout, z0: float, floor: bool = False):
    """Next to `s` along the wall it stands against (curtains by windows, night stands by beds)."""
    if s.wall is None:
        return None
    w = s.wall
    a0, a1 = _wall_span(s.lo, s.hi, w)
    lo, hi = _place_at_wall(parts, w, 0.0, L, z0=z0)
    ext = hi.max(0) - lo.min(0)
    width = ext[1] if w < 2 else ext[0]
    gap = 0.02 if not floor else float(rng.uniform(0.03, 0.12))
    a = (a0 - gap - width / 2) if rng.random() < 0.5 else (a1 + gap + width / 2)
    lo, hi = _place_at_wall(parts, w, a, L, z0=z0)
    olo, ohi = lo.min(0), hi.max(0)
    b0, b1 = _wall_span(olo, ohi, w)
    if not L.free_wall(w, b0, b1, float(olo[2]), float(ohi[2]), margin=0.0):
        return None
    if not L.free3d(olo, ohi, 0.0):
        return None
    return lo, hi, "near", s.object_id, w
