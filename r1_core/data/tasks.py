"""TaskSample: the one shape every annotation format becomes for the model, training and eval.

    layout = DatasetLayout("data/synth")                      # the on-disk layout (r1_core.data docs)
    samples = load_task_samples(layout, "train", sources=["scanrefer", "scanqa"])
    s = samples[0]; s.task, s.question, s.answers, s.boxes   # boxes (K, 7) in the map frame

`to_task_samples(records, boxes)` converts any list of records from r1_core.data.formats;
`boxes` looks up an object's (7,) box by (scene_id, object_id) (`SceneBoxIndex` reads them from
the ScanNet-preprocessed bbox arrays).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from r1_core.data import formats as F
from r1_core.data.errors import DataFormatError
from r1_core.data.scene import objects_from_scannet_rows, read_split
from r1_core.model.answer import format_box, parse_response

TASKS = ("grounding", "qa", "dense_caption", "object_caption", "dialogue", "planning", "reasoning")
SOURCES = ("scanrefer", "nr3d", "scanqa", "sqa3d", "3dllm_dialogue", "3dllm_planning", "scene30k")

BoxLookup = Callable[[str, int], np.ndarray]
log = logging.getLogger(__name__)


@dataclass
class TaskSample:
    task: str                   # one of TASKS
    scene_id: str
    question: str
    answers: list[str]          # reference answers (may be empty for unlabelled test splits)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))  # (K, 7)
    object_ids: list[int] = field(default_factory=list)
    history: list[str] = field(default_factory=list)   # earlier turns, "user: …" / "assistant: …"
    cot: str | None = None      # full <think>…</think><answer>…</answer> target where known
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {list(TASKS)}")
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 7)


class SceneBoxIndex:
    """(scene_id, object_id) → (7,) box, read lazily from `<scannet_dir>/<scene>_aligned_bbox.npy`."""

    def __init__(self, scannet_dir: str | Path):
        self.dir = Path(scannet_dir)
        self._cache: dict[str, dict[int, np.ndarray]] = {}

    def scene_boxes(self, scene_id: str) -> dict[int, np.ndarray]:
        if scene_id not in self._cache:
            path = self.dir / f"{scene_id}_aligned_bbox.npy"
            if not path.is_file():
                raise DataFormatError(path, f"missing aligned boxes of scene {scene_id!r}")
            objs = objects_from_scannet_rows(np.load(path), path)
            self._cache[scene_id] = {o.object_id: o.box for o in objs}
        return self._cache[scene_id]

    def __call__(self, scene_id: str, object_id: int) -> np.ndarray:
        boxes = self.scene_boxes(scene_id)
        if int(object_id) not in boxes:
            raise DataFormatError(self.dir / f"{scene_id}_aligned_bbox.npy",
                                  f"no object {object_id} in scene {scene_id} (its ids: {sorted(boxes)[:40]})")
        return boxes[int(object_id)]


def _boxes(lookup: BoxLookup | None, scene_id: str, ids: Sequence[int]) -> np.ndarray:
    if lookup is None or not ids:
        return np.zeros((0, 7), np.float32)
    return np.stack([np.asarray(lookup(scene_id, i), np.float32) for i in ids])


def _refer(r: F.ReferRecord, lookup: BoxLookup | None, task: str) -> TaskSample:
    boxes = _boxes(lookup, r.scene_id, [r.object_id])
    meta = {"source": r.source, "ann_id": r.ann_id, "object_name": r.object_name}
    if task == "grounding":
        ans = f"{r.object_name} {format_box(boxes[0])}" if len(boxes) else r.object_name
        return TaskSample("grounding", r.scene_id, r.description, [ans], boxes, [r.object_id], meta=meta)
    if task in ("dense_caption", "object_caption"):
        where = format_box(boxes[0]) if len(boxes) else f"object {r.object_id}"
        q = f"Describe the object at {where}." if task == "dense_caption" else f"Briefly describe the object at {where}."
        return TaskSample(task, r.scene_id, q, [r.description], boxes, [r.object_id], meta=meta)
    raise ValueError(f"unknown task {task!r} for referring records; choose one of ['grounding', 'dense_caption', 'object_caption']")


def record_scene_id(record) -> str:
    """The scene an annotation record belongs to (Nr3D calls it scan_id)."""
    return record.scan_id if isinstance(record, F.Nr3dRecord) else record.scene_id


def to_task_samples(records: Iterable, boxes: BoxLookup | None = None, task: str | None = None,
                    source: str | Path = "annotation records", indices: Sequence[int] | None = None) -> list[TaskSample]:
    """Convert annotation records (any reader's output) into TaskSamples. `task` only matters for
    referring records (ScanRefer/Nr3D): "grounding" (default), "dense_caption" or "object_caption".
    A record whose object the scene lacks raises DataFormatError naming `source` and the record
    (its index in `source`: `indices[i]` when the records are a selection of the file's)."""
    out: list[TaskSample] = []
    for i, r in enumerate(records):
        try:
            out.append(_task_sample(r, boxes, task))
        except DataFormatError as e:
            raise DataFormatError(source, f"{record_scene_id(r)}: {e}", record=i if indices is None else indices[i]) from None
    return out


def _task_sample(r, boxes: BoxLookup | None, task: str | None) -> TaskSample:
    if isinstance(r, F.Nr3dRecord):
        r = F.nr3d_to_refer([r])[0]
    if isinstance(r, F.ReferRecord):
        return _refer(r, boxes, task or "grounding")
    if isinstance(r, F.ScanQARecord):
        ids = list(r.object_ids or [])
        return TaskSample("qa", r.scene_id, r.question, list(r.answers or []), _boxes(boxes, r.scene_id, ids), ids,
                          meta={"source": "scanqa", "question_id": r.question_id, "object_names": r.object_names or []})
    if isinstance(r, F.SQA3DRecord):
        return TaskSample("qa", r.scene_id, f"{r.situation} {r.question}", list(r.answers),
                          meta={"source": "sqa3d", "question_id": r.question_id, "situation": r.situation,
                                "position": r.position, "rotation": r.rotation, "question_only": r.question})
    if isinstance(r, F.LLM3DRecord):
        turns = r.turns()
        if turns[-1][0] != "user":
            raise ValueError(f"3D-LLM {r.task} record of {r.scene_id}: the last turn must be the user's, got {turns[-1]}")
        history = [f"{who}: {text}" for who, text in turns[:-1]]
        return TaskSample(r.task, r.scene_id, turns[-1][1], list(r.answers), history=history,
                          meta={"source": f"3dllm_{r.task}"})
    if isinstance(r, F.Scene30KRecord):
        parsed = parse_response(r.cot)
        ids = [int(i) for i in r.meta.get("object_ids", [])]
        bx = _boxes(boxes, r.scene_id, ids) if ids else parsed.boxes
        return TaskSample("reasoning", r.scene_id, r.question, [parsed.answer], bx, ids, cot=r.cot,
                          meta={"source": "scene30k", **r.meta})
    raise TypeError(f"cannot convert {type(r).__name__} to TaskSample")


@dataclass
class DatasetLayout:
    """Paths of one dataset root (real or synthetic), mirroring the layouts of the released data:

        <root>/scannet/scannet_data/<scene>_{aligned_vert,ins_label,sem_label,aligned_bbox}.npy
        <root>/scannet/meta_data/scannetv2_{train,val}.txt
        <root>/ScanRefer/ScanRefer_filtered_{split}.json   (+ ScanRefer_filtered_{split}.txt)
        <root>/Nr3D/nr3d.csv   <root>/Nr3D/nr3d_{split}.json   (+ nr3d_{split}.txt)
        <root>/ScanQA/ScanQA_v1.0_{split}.json
        <root>/SQA3D/balanced/v1_balanced_{questions,sqa_annotations}_{split}_scannetv2.json
        <root>/3D_LLM/3d_llm_embodied_{dialogue,planning}_filtered_{split}.json
        <root>/Scene-30K/scene30k_{split}.jsonl
        <root>/synthetic/<scene>.json       (synthetic ground truth: colours, parts, relations)
        <root>/scannet/frames/<scene>/      (real RGB-D frames, SensReader export: r1_core.data.scannet_frames)
    """
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def scannet_dir(self) -> Path:
        return self.root / "scannet" / "scannet_data"

    def frames_dir(self, scene_id: str) -> Path:
        return self.root / "scannet" / "frames" / scene_id

    def split_file(self, split: str) -> Path:
        return self.root / "scannet" / "meta_data" / f"scannetv2_{split}.txt"

    def scene_ids(self, split: str) -> list[str]:
        return read_split(self.split_file(split))

    def path(self, source: str, split: str) -> Path:
        r = self.root
        paths = {
            "scanrefer": r / "ScanRefer" / f"ScanRefer_filtered_{split}.json",
            "nr3d": r / "Nr3D" / f"nr3d_{split}.json",
            "nr3d_csv": r / "Nr3D" / "nr3d.csv",
            "scanqa": r / "ScanQA" / f"ScanQA_v1.0_{split}.json",
            "sqa3d": F.sqa3d_paths(r / "SQA3D" / "balanced", split)[0],
            "sqa3d_annotations": F.sqa3d_paths(r / "SQA3D" / "balanced", split)[1],
            "3dllm_dialogue": r / "3D_LLM" / f"3d_llm_embodied_dialogue_filtered_{split}.json",
            "3dllm_planning": r / "3D_LLM" / f"3d_llm_embodied_planning_filtered_{split}.json",
            "scene30k": r / "Scene-30K" / f"scene30k_{split}.jsonl",
        }
        if source not in paths:
            raise ValueError(f"unknown source {source!r}; choose one of {sorted(paths)}")
        return paths[source]

    def read(self, source: str, split: str) -> list:
        p = self.path(source, split)
        if source == "scanrefer":
            return F.read_scanrefer(p)
        if source == "nr3d":
            return F.read_nr3d_json(p)
        if source == "nr3d_csv":
            return F.read_nr3d_csv(p)
        if source == "scanqa":
            return F.read_scanqa(p)
        if source == "sqa3d":
            return F.read_sqa3d(p, self.path("sqa3d_annotations", split))
        if source.startswith("3dllm_"):
            return F.read_3dllm(p, source.split("_", 1)[1])
        if source == "scene30k":
            return F.read_scene30k(p)
        raise ValueError(f"unknown source {source!r}; choose one of {list(SOURCES)}")


def load_task_samples(layout: DatasetLayout | str | Path, split: str, sources: Sequence[str] | None = None,
                      refer_task: str = "grounding", scene_ids: Iterable[str] | None = None) -> list[TaskSample]:
    """TaskSamples of one split. `sources=None` takes every source whose file exists (at least one
    must); named sources must exist. With `scene_ids` (e.g. the split file's: the scenes prepared),
    records of other scenes are left out, with a warning that counts them: the released
    annotation files cover all of ScanNet, a user's tree often a part of it."""
    layout = layout if isinstance(layout, DatasetLayout) else DatasetLayout(Path(layout))
    if sources is None:
        sources = [s for s in SOURCES if layout.path(s, split).is_file()]
        if not sources:
            raise DataFormatError(layout.root, f"no annotation files of split {split!r} found (looked for {list(SOURCES)})")
    keep = None if scene_ids is None else set(scene_ids)
    lookup = SceneBoxIndex(layout.scannet_dir)
    out: list[TaskSample] = []
    for s in sources:
        records = layout.read(s, split)
        indices = None
        if keep is not None:
            indices = [i for i, r in enumerate(records) if record_scene_id(r) in keep]
            if len(indices) < len(records):
                log.warning("%s: %d of %d records are of scenes outside split %r (%s); left out",
                            layout.path(s, split), len(records) - len(indices), len(records), split, layout.split_file(split))
            records = [records[i] for i in indices]
        out += to_task_samples(records, lookup, task=refer_task if s in ("scanrefer", "nr3d") else None,
                               source=layout.path(s, split), indices=indices)
    return out
