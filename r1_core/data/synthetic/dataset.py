"""A complete synthetic training set in the real datasets' on-disk layout (DatasetLayout).

    stats = write_dataset("data/synth", train_scenes=100, val_scenes=20, seed=0)
    samples = load_task_samples("data/synth", "train")       # the same readers as real data

Per scene: ScanNet-preprocessed arrays, the ground-truth room (`synthetic/<scene>.json`) and
annotations in every format (ScanRefer, Nr3D csv + LL3DA json, ScanQA, SQA3D, 3D-LLM dialogue
and planning); then Scene-30K CoT from the template engine. Deterministic by seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence
from pathlib import Path

import numpy as np

from r1_core.data import formats as F
from r1_core.data.scene import save_scannet_scene, write_split
from r1_core.data.synthetic.language import LanguageConfig, SceneAnnotations, annotate_scene
from r1_core.data.synthetic.world import SynthConfig, SynthRoom, generate_room
from r1_core.data.tasks import DatasetLayout


@dataclass
class DatasetStats:
    scenes: dict[str, list[str]] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cot: dict[str, tuple[int, int]] = field(default_factory=dict)   # split → (kept, rejected)


def scene_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_scene(layout: DatasetLayout, room: SynthRoom, cfg: SynthConfig, lang: LanguageConfig, split: str,
                rng: np.random.Generator) -> SceneAnnotations:
    scene = room.to_scene(cfg)
    save_scannet_scene(scene, layout.scannet_dir)
    room.save_json(layout.root / "synthetic" / f"{room.scene_id}.json")
    return annotate_scene(scene, room, rng, lang, split)


def write_annotations(layout: DatasetLayout, split: str, anns: list[SceneAnnotations], scene_ids: list[str]) -> dict[str, int]:
    cat = SceneAnnotations()
    for a in anns:
        for k in ("scanrefer", "nr3d", "scanqa", "sqa3d", "dialogue", "planning"):
            getattr(cat, k).extend(getattr(a, k))
    write_split(layout.split_file(split), scene_ids)
    F.write_scanrefer(cat.scanrefer, layout.path("scanrefer", split))
    write_split(layout.path("scanrefer", split).with_suffix(".txt"), sorted({r.scene_id for r in cat.scanrefer}))
    F.write_nr3d_json(F.nr3d_to_refer(cat.nr3d), layout.path("nr3d", split))
    write_split(layout.path("nr3d", split).with_suffix(".txt"), sorted({r.scan_id for r in cat.nr3d}))
    F.write_scanqa(cat.scanqa, layout.path("scanqa", split))
    F.write_sqa3d(cat.sqa3d, layout.path("sqa3d", split), layout.path("sqa3d_annotations", split), split)
    F.write_3dllm(cat.dialogue, layout.path("3dllm_dialogue", split))
    F.write_3dllm(cat.planning, layout.path("3dllm_planning", split))
    return {"scanrefer": len(cat.scanrefer), "nr3d": len(cat.nr3d), "scanqa": len(cat.scanqa), "sqa3d": len(cat.sqa3d),
            "3dllm_dialogue": len(cat.dialogue), "3dllm_planning": len(cat.planning)}


def write_dataset(out: str | Path, train_scenes: int | None = None, val_scenes: int | None = None, seed: int = 0,
                  cfg: SynthConfig | None = None, lang: LanguageConfig | None = None, cot: bool = True,
                  progress: bool = True, val_start: int | None = None,
                  val_rooms: Sequence[int] | None = None,
                  train_rooms: Sequence[int] | None = None) -> DatasetStats:
    """Generate and write the whole dataset; returns counts and timing.

    Room i is generated from (seed, i) alone. The held-out rooms are val_start .. val_start +
    val_scenes - 1 (default: right after the training rooms), the training rooms the first
    train_scenes others. So `train_scenes=300, val_start=100` holds out exactly the rooms of the
    default 100 + 20 dataset and trains on 200 more. train_scenes defaults to 100, val_scenes to 20. `val_rooms` names
    the held-out rooms instead (val_scenes, if given, must be their count):
    `train_scenes=300, val_rooms=[100..119, 320..379]` trains on the very rooms of
    `train_scenes=300, val_start=100` and holds out 60 more. `train_rooms` names the training
    rooms instead of the first train_scenes others (train_scenes, if given, must be their
    count), e.g. rooms that no earlier training stage saw: `train_rooms=[400..499], val_scenes=0`."""
    from tqdm import tqdm

    cfg, lang = cfg or SynthConfig(), lang or LanguageConfig()
    if val_scenes is None:
        val_scenes = len(val_rooms) if val_rooms is not None else 20
    if train_scenes is None:
        train_scenes = len(train_rooms) if train_rooms is not None else 100
    if train_rooms is not None:
        chosen = list(train_rooms)
        if not chosen or len(set(chosen)) != len(chosen) or any(not isinstance(i, int) or i < 0 for i in chosen):
            raise ValueError(f"train_rooms: expected distinct room indices >= 0, got {chosen[:10]}")
        if train_scenes != len(chosen):
            raise ValueError(f"train_scenes: expected {len(chosen)} (the number of train_rooms), got {train_scenes}")
    if train_scenes < 1 or val_scenes < 0:
        raise ValueError(f"need train_scenes >= 1 and val_scenes >= 0, got {train_scenes}, {val_scenes}")
    if val_rooms is not None:
        if val_start is not None:
            raise ValueError("give val_start or val_rooms, not both")
        held_out = list(val_rooms)
        if len(set(held_out)) != len(held_out) or any(not isinstance(i, int) or i < 0 for i in held_out):
            raise ValueError(f"val_rooms: expected distinct room indices >= 0, got {held_out[:10]}")
        if val_scenes != len(held_out):
            raise ValueError(f"val_scenes: expected {len(held_out)} (the number of val_rooms), got {val_scenes}")
        held_out.sort()
    else:
        total = train_scenes + val_scenes
        val_start = train_scenes if val_start is None else val_start
        if not 0 <= val_start <= train_scenes:
            raise ValueError(f"val_start: expected 0..{train_scenes} (the held-out rooms must lie among the "
                             f"{total} rooms), got {val_start}")
        held_out = list(range(val_start, val_start + val_scenes))
    held = set(held_out)
    if train_rooms is None:
        train_rooms = [i for i in range(train_scenes + len(held_out)) if i not in held][:train_scenes]
    elif held & set(train_rooms):
        raise ValueError(f"train_rooms: rooms {sorted(held & set(train_rooms))[:10]} are also held out")
    else:
        train_rooms = sorted(train_rooms)
    layout = DatasetLayout(Path(out))
    t0 = time.perf_counter()
    stats = DatasetStats()
    nr3d_all: list[F.Nr3dRecord] = []
    for split, indices in (("train", train_rooms), ("val", held_out)):
        anns, ids = [], []
        for index in tqdm(indices, desc=f"synth {split}", disable=not progress, unit="scene"):
            sid = f"synth{index:04d}_00"
            s = scene_seed(seed, index)
            room = generate_room(cfg, seed=s, scene_id=sid)
            anns.append(write_scene(layout, room, cfg, lang, split, np.random.default_rng(s)))
            ids.append(sid)
        stats.scenes[split] = ids
        for k, v in write_annotations(layout, split, anns, ids).items():
            stats.records[f"{split}/{k}"] = v
        nr3d_all += [r for a in anns for r in a.nr3d]
    F.write_nr3d_csv(nr3d_all, layout.path("nr3d_csv", "train"))
    if cot:
        from r1_core.data.cot import CotConfig, CotEngine

        engine = CotEngine(CotConfig(backend="template", seed=seed), layout)
        for split in ("train", "val"):
            if stats.scenes.get(split):
                st = engine.run(split, progress=progress)
                stats.cot[split] = (st.kept, st.rejected)
    stats.seconds = time.perf_counter() - t0
    return stats
