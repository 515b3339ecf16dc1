"""`r1 train pack`: turn a ScanNet-format dataset into a training pack (see training/data.py).

    r1 train pack --data data/synth --out data/nano_pack [--detector runs/nano/detector]

Per scene: the cloud subsampled to `points` (seeded) - `cloud: mesh`, the dataset's vertices as
the ScanNet benchmarks use them, or `cloud: fused`, the walk-through fused by the robot's own
FusionMap (partial coverage, sensor noise, one point per voxel: what rgbd_fusion hands the model
on a robot; labels from the nearest mesh vertex) - its walk-through keyframes (rendered from
the synthetic room when `<data>/synthetic/<scene>.json` exists, else read from the real ScanNet
RGB-D frames exported under `<data>/scannet/frames/<scene>/`, see r1_core.data.scannet_frames)
filtered by the same KeyframeBank the robot uses and stored at
`view_width`, and for every example the views each selector picks (dynamic, uniform, random;
k = `num_views`). Dynamic selection needs the scene's object proposals: from a pre-trained
detector (`--detector`, what the robot would have) or, without one, ground-truth-derived
proposals (for bootstrapping; the pack records which).

Training examples come from the Scene-30K CoT file of the split (each record trains the task it
was made from: grounding, qa, dialogue, planning, …) plus object captions from ScanRefer
descriptions; validation examples come from the split's original annotation files (ScanRefer,
ScanQA, 3D-LLM) with their reference answers, so evaluation scores against the benchmark
references, not against our own CoT.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from r1_core.config import config_to_dict, format_config
from r1_core.data.classes import STRUCTURE_NYU40_IDS
from r1_core.data.errors import DataFormatError
from r1_core.data.scene import Scene, load_scannet_scene, scene_files
from r1_core.data.synthetic.render import RenderConfig, make_renderer, walkthrough_poses
from r1_core.data.synthetic.world import SynthRoom
from r1_core.data.tasks import DatasetLayout, TaskSample, load_task_samples
from r1_core.geometry.fusion import FusionConfig, FusionMap
from r1_core.model.answer import format_box, format_response
from r1_core.model.encoder import EncoderConfig, PointEncoder
from r1_core.model.r1model import SceneEncoding
from r1_core.views.bank import BankConfig, KeyframeBank
from r1_core.views.evaluate import gt_proposals
from r1_core.views.select import SelectorConfig, make_selector
from training.data import VIEW_STRATEGIES, TrainExample, example_from_sample

TRAIN_SOURCES = ("scene30k",)
VAL_SOURCES = ("scanrefer", "scanqa", "3dllm_dialogue", "3dllm_planning")
CLOUD_SOURCES = ("mesh", "fused")


@dataclass
class PackConfig:
    points: int = 20000              # cloud points kept per scene
    frames: int = 150                # walk-through frames offered to the keyframe bank
    view_width: int = 128            # stored keyframe width (aspect kept)
    num_views: int = 4
    seed: int = 0
    caption_per_scene: int = 12      # object-caption training examples per scene (0 = none)
    bank: BankConfig = field(default_factory=lambda: BankConfig(max_keyframes=24, min_new_fraction=0.05))
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    render: RenderConfig = field(default_factory=lambda: RenderConfig(noise=True))
    cloud: str = "mesh"              # mesh | fused: the dataset's vertices, or the walk-through fused by FusionMap
    fusion: FusionConfig = field(default_factory=FusionConfig)   # cloud: fused only
    label_radius_m: float = 0.05     # cloud: fused: a point takes the labels of the mesh vertex this close

    def __post_init__(self):
        if self.cloud not in CLOUD_SOURCES:
            raise ValueError(f"pack.cloud: expected one of {list(CLOUD_SOURCES)}, got {self.cloud!r}")


def _frame_source(layout: DatasetLayout, scene_id: str) -> tuple[Path, Path]:
    """(synthetic room file, exported frames folder) of a scene, one of which exists; else a
    DataFormatError naming both."""
    room_file, frames_dir = layout.root / "synthetic" / f"{scene_id}.json", layout.frames_dir(scene_id)
    if not room_file.is_file() and not frames_dir.is_dir():
        raise DataFormatError(frames_dir, f"scene {scene_id}: no frames to select views from: neither a synthetic "
                              f"room ({room_file}) nor exported ScanNet RGB-D frames (this folder: color/ depth/ "
                              f"pose/ intrinsic/ and {scene_id}.txt, see r1_core.data.scannet_frames)")
    return room_file, frames_dir


def _walkthrough(layout: DatasetLayout, scene_id: str, cfg: PackConfig):
    """(color, depth (uint16 mm), K, T_map_optical, stamp s) of the scene's walk-through: rendered
    from `<root>/synthetic/<scene>.json`, or read from real RGB-D frames under
    `<root>/scannet/frames/<scene>/` (SensReader export, every frame up to `frames` evenly)."""
    room_file, frames_dir = _frame_source(layout, scene_id)
    if room_file.is_file():
        room = SynthRoom.load_json(room_file)
        renderer = make_renderer(room, cfg.render)
        rng = np.random.default_rng(cfg.seed)
        # A crowded room may leave no loop with the configured clearance: walk it closer to the
        # furniture rather than leave the scene out (the camera still never enters geometry).
        for clearance in (cfg.render.clearance, 0.25, 0.15):
            try:
                poses = walkthrough_poses(room, dataclasses.replace(cfg.render, clearance=clearance),
                                          n_frames=cfg.frames, seed=cfg.seed)
                break
            except RuntimeError:
                if clearance == 0.15:
                    raise
        for i, T in enumerate(poses):
            view = renderer.render(T, rng=rng)
            yield view.color, view.depth, renderer.K, T, i / cfg.render.fps
    else:
        from r1_core.data.scannet_frames import read_scannet_frames

        for i, f in enumerate(read_scannet_frames(frames_dir, scene_id, max_frames=cfg.frames)):
            yield f.color, f.depth, f.K, f.T_map_optical, float(i)


def _keyframes(layout: DatasetLayout, scene_id: str, cfg: PackConfig,
               keyframes: bool = True) -> tuple[KeyframeBank | None, FusionMap | None]:
    """The walk-through's keyframe bank (unless `keyframes` is False) and, for `cloud: fused`,
    the FusionMap of all its frames."""
    bank = KeyframeBank(cfg.bank) if keyframes else None
    fusion = FusionMap(cfg.fusion) if cfg.cloud == "fused" else None
    for color, depth, K, T, stamp in _walkthrough(layout, scene_id, cfg):
        if bank is not None:
            bank.offer(color, depth, K, T, stamp=stamp)
        if fusion is not None:
            fusion.integrate(color, depth, K, T)
    return bank, fusion


def _fused_cloud(scene: Scene, fusion: FusionMap, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fused map as (N, 6) points with instance / semantic labels of the nearest mesh vertex
    within `radius` (0 = unlabelled beyond it: fused noise and surfaces the mesh lacks)."""
    from scipy.spatial import cKDTree

    pts = fusion.snapshot()
    if len(pts) == 0:
        raise RuntimeError(f"{scene.scene_id}: the fused walk-through is empty")
    dist, nearest = cKDTree(scene.points[:, :3]).query(pts[:, :3].astype(np.float64), distance_upper_bound=radius)
    hit = np.isfinite(dist)
    inst = np.zeros(len(pts), scene.instance_labels.dtype)
    sem = np.zeros(len(pts), scene.semantic_labels.dtype)
    inst[hit] = scene.instance_labels[nearest[hit]]
    sem[hit] = scene.semantic_labels[nearest[hit]]
    return pts, inst, sem


def _scene_and_keyframes(layout: DatasetLayout, scene_id: str, cfg: PackConfig,
                         keyframes: bool = True) -> tuple[Scene, KeyframeBank | None]:
    scene = load_scannet_scene(layout.scannet_dir, scene_id)
    bank, fusion = _keyframes(layout, scene_id, cfg, keyframes)
    if fusion is not None:
        pts, inst, sem = _fused_cloud(scene, fusion, cfg.label_radius_m)
        scene = dataclasses.replace(scene, points=pts, instance_labels=inst, semantic_labels=sem)
    return scene, bank


def training_scene(data: str | Path, scene_id: str, cfg: PackConfig) -> Scene:
    """A dataset scene with the cloud `cfg.cloud` names (the full cloud, before the pack's
    subsampling): what the detector stage trains on, so that it sees the clouds SFT will."""
    layout = DatasetLayout(Path(data))
    if cfg.cloud == "mesh":
        return load_scannet_scene(layout.scannet_dir, scene_id)
    return _scene_and_keyframes(layout, scene_id, cfg, keyframes=False)[0]    # the detector needs no views


def _caption_examples(scene: Scene, descriptions: list[TaskSample], n: int, rng: np.random.Generator) -> list[TaskSample]:
    by_obj: dict[int, list[TaskSample]] = {}
    for s in descriptions:
        by_obj.setdefault(s.object_ids[0], []).append(s)
    ids = sorted(by_obj)
    rng.shuffle(ids)
    out = []
    for oid in ids[:n]:
        s = by_obj[oid][int(rng.integers(len(by_obj[oid])))]
        obj = scene.object(oid)
        colour = f"{obj.color} " if obj.color else ""
        think = (f"First, the object at {format_box(obj.box)} is asked about. Next, it is a {colour}{obj.label}. "
                 f"Finally, I describe the {obj.label} and where it is.")
        out.append(TaskSample("object_caption", s.scene_id, "", s.answers, s.boxes, s.object_ids,
                              cot=format_response(think, s.answers[0]), meta=dict(s.meta)))
    return out


def _proposals(scene: Scene, encoder: PointEncoder | None, rng) -> SceneEncoding:
    if encoder is None:
        return gt_proposals(scene, jitter=0.05, rng=rng)
    with torch.no_grad():
        pts, _ = encoder.prepare(torch.from_numpy(scene.points))
        out = encoder(pts[None])
    return SceneEncoding(out.token_inputs[0], out.boxes[0].numpy(), out.scores[0].numpy(), out.labels[0].numpy(),
                         num_points=len(scene.points))


def _pack_scene(job: tuple) -> tuple[str, list[str], np.ndarray]:
    """Pack one scene (runs in a worker process): write its npz, return its example lines."""
    root, out, sid, cfg, samples, captions, encoder_state, encoder_cfg, seed = job
    torch.set_num_threads(1)
    layout = DatasetLayout(Path(root))
    rng = np.random.default_rng(seed)
    encoder = None
    if encoder_state is not None:
        encoder = PointEncoder(encoder_cfg).eval()
        encoder.load_state_dict(encoder_state)
    scene, bank = _scene_and_keyframes(layout, sid, cfg)
    pick = np.sort(rng.permutation(len(scene.points))[: cfg.points])
    kfs = bank.keyframes()
    if not kfs:
        raise RuntimeError(f"{sid}: the keyframe bank kept no keyframe")
    h = int(round(kfs[0].color.shape[0] * cfg.view_width / kfs[0].color.shape[1]))
    sx, sy = cfg.view_width / kfs[0].color.shape[1], h / kfs[0].color.shape[0]
    K_view = np.diag([sx, sy, 1.0]) @ kfs[0].K
    np.savez_compressed(
        Path(out) / "scenes" / f"{sid}.npz",
        xyz=scene.points[pick, :3].astype(np.float32),
        rgb=scene.points[pick, 3:6].round().clip(0, 255).astype(np.uint8),
        instance=scene.instance_labels[pick], semantic=scene.semantic_labels[pick],
        boxes=np.array([[*o.box[:6], o.nyu40_id, o.object_id] for o in scene.objects], np.float32),
        kf_color=np.stack([cv2.resize(k.color, (cfg.view_width, h), interpolation=cv2.INTER_AREA) for k in kfs]),
        kf_depth=np.stack([cv2.resize(k.depth_m, (cfg.view_width, h), interpolation=cv2.INTER_NEAREST)
                           for k in kfs]).astype(np.float16),
        kf_pose=np.stack([k.T_map_optical for k in kfs]).astype(np.float32),
    )
    index = {k.keyframe_id: i for i, k in enumerate(kfs)}
    props = _proposals(scene, encoder, rng)
    selectors = {m: make_selector(bank, dataclasses.replace(cfg.selector, method=m)) for m in VIEW_STRATEGIES}
    lines = []
    for s in samples + _caption_examples(scene, captions, cfg.caption_per_scene, rng):
        if s.task == "dense_caption":
            continue
        try:
            ex = example_from_sample(s)
        except ValueError:
            continue   # e.g. a QA record without answers: nothing to train or score
        q = ex.query()
        ex.views = {m: [index[v.keyframe_id] for v in sel.select_views(q, props, cfg.num_views)]
                    for m, sel in selectors.items()}
        lines.append(ex.to_json())
    return sid, lines, K_view


def _split_inputs(layout: DatasetLayout, split: str) -> tuple[list[str], list[TaskSample], list[TaskSample]]:
    """One split's scene ids, task samples and caption samples, read and checked up front (a
    missing file found after hours of packing loses those hours): the annotation files the split
    needs, each scene's arrays and its frames (a synthetic room or exported RGB-D frames)."""
    scene_ids = layout.scene_ids(split)
    if not scene_ids:            # e.g. GRPO's prompt rooms: `r1 data synth --train-rooms … --val-scenes 0`
        print(f"pack {split}: no scenes")
        return [], [], []
    wanted = TRAIN_SOURCES + ("scanrefer",) if split == "train" else VAL_SOURCES
    found = [s for s in wanted if layout.path(s, split).is_file()]
    missing = [s for s in wanted if s not in found]
    if split == "train" and "scene30k" in missing:
        raise DataFormatError(layout.path("scene30k", split), "missing Scene-30K chain-of-thought file: the "
                              "training examples come from it; write it with `r1 data cot --dataset "
                              f"{layout.root} --split train` (see README, training on your data)")
    if split != "train" and not found:
        raise DataFormatError(layout.root, f"split {split!r} has none of its annotation files "
                              f"(expected any of {[str(layout.path(s, split)) for s in VAL_SOURCES]})")
    print(f"pack {split}: {len(scene_ids)} scenes; annotations {', '.join(found)}"
          + (f"; not found (left out): {', '.join(missing)}" if missing else ""))
    for sid in scene_ids:
        for what, path in scene_files(layout.scannet_dir, sid).items():
            if not path.is_file():
                raise DataFormatError(path, f"scene {sid}: missing {what} array (r1 data prepare-scannet writes it)")
        _frame_source(layout, sid)
    if split == "train":
        samples = load_task_samples(layout, split, sources=["scene30k"], scene_ids=scene_ids)
        for s in samples:      # Scene-30K records train the task they were made from
            s.task = s.meta.get("task", s.task)
        captions = (load_task_samples(layout, split, sources=["scanrefer"], refer_task="object_caption", scene_ids=scene_ids)
                    if "scanrefer" in found else [])
        return scene_ids, samples, captions
    return scene_ids, load_task_samples(layout, split, sources=found, scene_ids=scene_ids), []


def check_pack_inputs(data: str | Path, splits=("train", "val")) -> None:
    """Every input `build_pack` will read, checked now (DataFormatError naming the first gap):
    `r1 train all` calls it before the detector stage trains."""
    layout = DatasetLayout(Path(data))
    for split in splits:
        _split_inputs(layout, split)


def build_pack(data: str | Path, out: str | Path, cfg: PackConfig, splits=("train", "val"),
               encoder_cfg: EncoderConfig | None = None, detector: str | Path | None = None,
               workers: int = 1, progress: bool = True) -> dict:
    """Write a training pack (scenes packed in `workers` processes); returns counts per split."""
    from concurrent.futures import ProcessPoolExecutor

    from training.detector import load_pretrained_encoder

    layout = DatasetLayout(Path(data))
    out = Path(out)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    print(format_config(cfg))
    encoder_state = None
    encoder_cfg = encoder_cfg or EncoderConfig()
    if detector is not None:
        encoder = PointEncoder(encoder_cfg)
        load_pretrained_encoder(encoder, detector)
        encoder_state = encoder.state_dict()
    meta = {"source": str(Path(data).resolve()), "config": config_to_dict(cfg), "splits": {},
            "proposals": "detector" if detector is not None else "ground-truth (jittered)",
            "detector": str(detector) if detector else None, "counts": {}}
    inputs = {split: _split_inputs(layout, split) for split in splits}   # every input checked before packing
    K_view = None
    for split in splits:
        scene_ids, samples, captions = inputs[split]
        meta["splits"][split] = scene_ids
        jobs = [(str(layout.root), str(out), sid, cfg, [s for s in samples if s.scene_id == sid],
                 [s for s in captions if s.scene_id == sid], encoder_state, encoder_cfg, cfg.seed * 100003 + i)
                for i, sid in enumerate(scene_ids)]
        results = {}
        bar = tqdm(total=len(jobs), desc=f"pack {split}", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for sid, lines, K_view in pool.map(_pack_scene, jobs):
                    results[sid] = lines
                    bar.update(1)
        else:
            for job in jobs:
                sid, lines, K_view = _pack_scene(job)
                results[sid] = lines
                bar.update(1)
        bar.close()
        lines = [ln for sid in scene_ids for ln in results[sid]]
        (out / f"examples_{split}.jsonl").write_text("\n".join(lines) + "\n")
        meta["counts"][split] = {"scenes": len(scene_ids), "examples": len(lines)}
    meta["view_K"] = K_view.tolist()
    (out / "pack.json").write_text(json.dumps(meta, indent=1))
    return meta["counts"]
