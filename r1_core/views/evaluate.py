"""Ground truth for view selection on synthetic walk-throughs, and hit rates of selectors.

    episodes = list(synthetic_episodes(n_rooms=10, seed=1000))          # rooms generated in-process
    episodes = list(dataset_episodes("data/synth", "val"))               # or a synthetic dataset dir
    rates = hit_rates(episodes, {"dynamic": DynamicSelector(...), "uniform": UniformSelector(...)}, k=4)

One episode = one room: its walk-through (r1_core.data.synthetic.render.walkthrough_poses) is
rendered frame by frame (colour, noisy uint16 depth, instance image) and offered to a fresh
KeyframeBank; for every frame the bank keeps, the ground-truth visibility of every object is
recorded: the fraction of the object's scene points (the ScanNet-like cloud of the room) that
project into the frame onto a pixel of the renderer's instance image showing that object, at
the rendered depth (± `surface_tol_m`). A request's target counts as *contained* in a view
when that fraction is >= `visible_fraction` (10 %).

Requests: ScanRefer-style grounding descriptions (one target object) and ScanQA questions
(their object ids; contained when any is), from the data layer's annotation generator.
"Scene understanding" for the selector: ground-truth-derived proposals (GT boxes and NYU40
labels of the non-structure objects, centre and size jittered by `proposal_jitter`), not the
trained detector.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from r1_core.data.scene import Scene
from r1_core.data.synthetic.render import RenderConfig, RenderedView, make_renderer, walkthrough_poses
from r1_core.data.synthetic.world import SynthConfig, SynthRoom, generate_room
from r1_core.model.r1model import SceneEncoding
from r1_core.query import SceneQuery
from r1_core.views.bank import BankConfig, BankSnapshot, KeyframeBank

log = logging.getLogger(__name__)


@dataclass
class WalkConfig:
    """Synthetic walk-through evaluation settings (config/views.yaml, section `walk`)."""

    width: int = 320                    # rendered image size (intrinsics: 525 px at 640 wide, scaled)
    height: int = 240
    frames: int = 300                   # frames of one walk-through loop (10 s at 30 fps)
    noise: bool = True                  # sensor noise on depth and colour
    visible_fraction: float = 0.10      # a view contains an object when >= this fraction of its points is seen
    surface_tol_m: float = 0.05         # a projected point is seen when the rendered depth is within this
    proposal_jitter: float = 0.05       # std of GT-proposal centre/size noise, as a fraction of the size
    descriptions_per_object: int = 2    # annotation generator: ScanRefer descriptions per object
    qa_per_scene: int = 8               # annotation generator: ScanQA questions per room
    rooms_per_tour: int = 3             # rooms one episode's bank spans (1 = a single-room loop)
    room_gap_m: float = 1.0             # rooms are laid side by side along x with this gap

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.frames < 1:
            raise ValueError(f"walk: need width, height >= 16 and frames >= 1, got {self.width}x{self.height}, {self.frames}")
        if self.rooms_per_tour < 1:
            raise ValueError(f"walk.rooms_per_tour must be >= 1, got {self.rooms_per_tour}")
        if not 0 < self.visible_fraction <= 1:
            raise ValueError(f"walk.visible_fraction must be in (0, 1], got {self.visible_fraction}")

    def render_config(self) -> RenderConfig:
        s = self.width / 640.0
        return RenderConfig(width=self.width, height=self.height, fx=525.0 * s, fy=525.0 * s,
                            cx=(self.width - 1) / 2, cy=(self.height - 1) / 2, noise=self.noise)


@dataclass
class Request:
    query: SceneQuery
    targets: tuple[int, ...]            # object ids; the request is served when any is contained
    anchors: tuple[int, ...] = ()       # other objects the request refers to (relations)
    source: str = "scanrefer"


@dataclass
class Episode:
    scene_id: str
    bank: KeyframeBank
    snap: BankSnapshot
    scene: SceneEncoding                # GT-derived proposals
    visibility: np.ndarray              # (N keyframes, max object id + 1) GT visible fraction
    requests: list[Request] = field(default_factory=list)
    frames: int = 0

    def contains(self, idx: list[int] | np.ndarray, objects: tuple[int, ...], frac: float) -> bool:
        if len(idx) == 0 or not objects:
            return False
        return bool((self.visibility[np.asarray(idx)][:, list(objects)] >= frac).any())


# ---- ground truth ---------------------------------------------------------------------------------
def gt_visibility(scene: Scene, view: RenderedView, K: np.ndarray, T: np.ndarray, tol: float,
                  n_objects: int) -> np.ndarray:
    """(n_objects,) fraction of each object's scene points seen in a rendered view."""
    xyz = scene.points[:, :3].astype(np.float64)
    inst = scene.instance_labels.astype(np.int64)
    cam = (xyz - T[:3, 3]) @ T[:3, :3]
    z = cam[:, 2]
    H, W = view.instance.shape
    zs = np.where(z > 1e-6, z, 1.0)
    u = np.rint(K[0, 0] * cam[:, 0] / zs + K[0, 2]).astype(np.int64)
    v = np.rint(K[1, 1] * cam[:, 1] / zs + K[1, 2]).astype(np.int64)
    ok = (z > 1e-3) & (u >= 0) & (v >= 0) & (u < W) & (v < H) & (inst > 0)
    seen = np.zeros_like(ok)
    uu, vv = u[ok], v[ok]
    seen[ok] = (view.instance[vv, uu] == inst[ok]) & (np.abs(view.depth_clean[vv, uu] - z[ok]) <= tol)
    total = np.bincount(inst, minlength=n_objects + 1)[1:n_objects + 1]
    got = np.bincount(inst[seen], minlength=n_objects + 1)[1:n_objects + 1]
    return got / np.maximum(total, 1)


def gt_proposals(scene: Scene, jitter: float, rng: np.random.Generator) -> SceneEncoding:
    """Ground-truth-derived proposals: non-structure objects' boxes (jittered) and NYU40 labels."""
    objs = scene.annotated_objects()
    boxes = np.stack([o.box for o in objs]).astype(np.float64) if objs else np.zeros((0, 7))
    if jitter > 0 and len(objs):
        size = boxes[:, 3:6].copy()
        boxes[:, :3] += rng.normal(0, jitter, size.shape) * size
        boxes[:, 3:6] = size * np.clip(1 + rng.normal(0, jitter, size.shape), 0.5, 1.5)
    return SceneEncoding(token_inputs=torch.zeros(len(objs), 1), boxes=boxes.astype(np.float32),
                         scores=np.ones(len(objs), np.float32),
                         labels=np.array([o.nyu40_id for o in objs], np.int64), num_points=len(scene.points))


def _anchor_ids(graph, text: str) -> tuple[int, ...]:
    from r1_core.data.graph import parse_expression

    try:
        q = parse_expression(text)
    except ValueError:
        return ()
    if q.anchor is None:
        return ()
    return tuple(graph.resolve(q.anchor))


def requests_from_records(scene: Scene, scanrefer: list, scanqa: list) -> list[Request]:
    """Requests from ScanRefer / ScanQA records of one scene (targets from their object ids)."""
    from r1_core.data.graph import SceneGraph

    g = SceneGraph(scene)
    out = []
    for r in scanrefer:
        out.append(Request(SceneQuery("grounding", r.description), (int(r.object_id),),
                           _anchor_ids(g, r.description), "scanrefer"))
    for r in scanqa:
        if r.object_ids:
            out.append(Request(SceneQuery("qa", r.question), tuple(int(i) for i in r.object_ids), (), "scanqa"))
    return out


@dataclass
class TourRoom:
    """One room of a tour: the room, its scene cloud and requests (room-local object ids)."""

    room: SynthRoom
    scene: Scene
    requests: list[Request]
    seed: int
    poses: list[np.ndarray]             # the walk-through (T_map_optical in the room's frame)


SKIPPED: list[tuple[str, str]] = []     # (scene_id, reason) of rooms without a walk-through


def _walk(room: SynthRoom, walk: WalkConfig, seed: int) -> list[np.ndarray] | None:
    """The room's walk-through, or None (recorded in SKIPPED and logged) when the data layer
    finds no camera loop with enough clearance in it."""
    try:
        return walkthrough_poses(room, walk.render_config(), n_frames=walk.frames, seed=seed)
    except RuntimeError as e:
        if "no camera loop" not in str(e):
            raise
        SKIPPED.append((room.scene_id, str(e)))
        log.warning("view evaluation: skipping %s: %s", room.scene_id, e)
        return None


def build_episode(rooms: list[TourRoom], bank_cfg: BankConfig, walk: WalkConfig) -> Episode:
    """Walk the rooms one after the other (laid side by side along x, `room_gap_m` apart) into
    one fresh bank. Object ids become tour-wide: room r's ids are offset by the object count of
    the rooms before it."""
    rc = walk.render_config()
    K = rc.intrinsics.K
    n_objs = [max([o.object_id for o in tr.scene.objects] + [-1]) + 1 for tr in rooms]
    bases = np.concatenate([[0], np.cumsum(n_objs)]).astype(int)
    total = int(bases[-1])
    bank = KeyframeBank(bank_cfg)
    vis: dict[int, np.ndarray] = {}
    boxes, scores, labels, requests = [], [], [], []
    x0, frame = 0.0, 0
    for r, tr in enumerate(rooms):
        shift = np.eye(4)
        shift[0, 3] = x0
        renderer = make_renderer(tr.room, rc)
        rng = np.random.default_rng(tr.seed)
        for T in tr.poses:
            view = renderer.render(T, rng=rng)
            if bank.offer(view.color, view.depth, K, shift @ T, frame / rc.fps):
                row = np.zeros(total)
                row[bases[r]:bases[r + 1]] = gt_visibility(tr.scene, view, K, T, walk.surface_tol_m, n_objs[r])
                vis[bank.keyframes()[-1].keyframe_id] = row
            frame += 1
        props = gt_proposals(tr.scene, walk.proposal_jitter, np.random.default_rng(tr.seed + 1))
        b = np.asarray(props.boxes, np.float64).copy()
        b[:, 0] += x0
        boxes.append(b)
        scores.append(props.scores)
        labels.append(props.labels)
        for q in tr.requests:
            requests.append(Request(q.query, tuple(int(t) + int(bases[r]) for t in q.targets),
                                    tuple(int(a) + int(bases[r]) for a in q.anchors), q.source))
        x0 += float(tr.room.size[0]) + walk.room_gap_m
    kfs = bank.keyframes()
    scene = SceneEncoding(token_inputs=torch.zeros(sum(len(x) for x in labels), 1),
                          boxes=np.concatenate(boxes).astype(np.float32), scores=np.concatenate(scores),
                          labels=np.concatenate(labels), num_points=sum(len(tr.scene.points) for tr in rooms))
    visibility = np.stack([vis[k.keyframe_id] for k in kfs]) if kfs else np.zeros((0, total))
    return Episode("+".join(tr.room.scene_id for tr in rooms), bank, bank.snapshot(), scene, visibility,
                   requests, frame)


def _tours(rooms: Iterator[TourRoom], per_tour: int) -> Iterator[list[TourRoom]]:
    buf: list[TourRoom] = []
    for tr in rooms:
        buf.append(tr)
        if len(buf) == per_tour:
            yield buf
            buf = []
    if buf:
        yield buf


def synthetic_episodes(n_episodes: int, seed: int, bank_cfg: BankConfig | None = None, walk: WalkConfig | None = None,
                       synth: SynthConfig | None = None) -> Iterator[Episode]:
    """Tours of rooms generated in-process (room seeds seed, seed+1, …) with generated annotations."""
    from r1_core.data.synthetic.language import LanguageConfig, annotate_scene

    bank_cfg, walk, synth = bank_cfg or BankConfig(), walk or WalkConfig(), synth or SynthConfig()
    lang = LanguageConfig(descriptions_per_object=walk.descriptions_per_object, nr3d_per_object=0,
                          qa_per_scene=walk.qa_per_scene, sqa_per_scene=0, dialogues_per_scene=0, plans_per_scene=0)

    def rooms() -> Iterator[TourRoom]:
        for i in range(n_episodes * walk.rooms_per_tour):
            s = seed + i
            room = generate_room(synth, seed=s, scene_id=f"synth{s:04d}_00")
            scene = room.to_scene(synth)
            poses = _walk(room, walk, s)
            if poses is None:
                continue
            ann = annotate_scene(scene, room, np.random.default_rng(s), lang)
            yield TourRoom(room, scene, requests_from_records(scene, ann.scanrefer, ann.scanqa), s, poses)

    for tour in _tours(rooms(), walk.rooms_per_tour):
        yield build_episode(tour, bank_cfg, walk)


def dataset_episodes(root: str | Path, split: str, bank_cfg: BankConfig | None = None, walk: WalkConfig | None = None,
                     synth: SynthConfig | None = None, max_scenes: int | None = None) -> Iterator[Episode]:
    """Tours over the scenes of a synthetic dataset directory (r1_core.data.synthetic.dataset
    layout): rooms from `synthetic/<scene>.json`, requests from its ScanRefer and ScanQA files."""
    from r1_core.data.errors import DataFormatError
    from r1_core.data.tasks import DatasetLayout

    bank_cfg, walk, synth = bank_cfg or BankConfig(), walk or WalkConfig(), synth or SynthConfig()
    layout = DatasetLayout(Path(root))
    refer = layout.read("scanrefer", split)
    qa = layout.read("scanqa", split) if layout.path("scanqa", split).is_file() else []
    ids = layout.scene_ids(split)[:max_scenes]

    def rooms() -> Iterator[TourRoom]:
        for n, sid in enumerate(ids):
            path = layout.root / "synthetic" / f"{sid}.json"
            if not path.is_file():
                raise DataFormatError(path, "view-selection ground truth needs rendered walk-throughs: expected the "
                                            "synthetic room description here (real scans have none)")
            room = SynthRoom.load_json(path)
            scene = room.to_scene(synth)
            seed = int(room.seed) % (2**31) + n
            poses = _walk(room, walk, seed)
            if poses is None:
                continue
            reqs = requests_from_records(scene, [r for r in refer if r.scene_id == sid],
                                         [r for r in qa if r.scene_id == sid])
            yield TourRoom(room, scene, reqs, seed, poses)

    for tour in _tours(rooms(), walk.rooms_per_tour):
        yield build_episode(tour, bank_cfg, walk)


# ---- hit rates ------------------------------------------------------------------------------------
def hit_rates(episodes: list[Episode], selectors: Mapping[str, object], k: int = 4,
              visible_fraction: float = 0.10) -> dict:
    """Rate at which each selector's k views contain the request's target, per request source
    and overall; `oracle` = the rate at which any keyframe of the bank contains it."""
    out: dict = {}
    names = list(selectors) + ["oracle"]
    hits = {n: {} for n in names}
    for ep in episodes:
        for r in ep.requests:
            for n in names:
                if n == "oracle":
                    idx = list(range(len(ep.snap)))
                else:
                    idx = selectors[n].select_indices(r.query, ep.scene, k, snap=ep.snap)
                hits[n].setdefault(r.source, []).append(ep.contains(idx, r.targets, visible_fraction))
                # answerable: the bank holds at least one view of the target
            hits.setdefault("_answerable", {}).setdefault(r.source, []).append(
                ep.contains(list(range(len(ep.snap))), r.targets, visible_fraction))
    ans = hits.pop("_answerable", {})
    for n in names:
        out[n] = {}
        for src, h in hits[n].items():
            h = np.asarray(h)
            a = np.asarray(ans[src])
            out[n][src] = {"rate": float(h.mean()), "rate_answerable": float(h[a].mean()) if a.any() else 0.0,
                           "n": int(h.size), "n_answerable": int(a.sum())}
    return out
