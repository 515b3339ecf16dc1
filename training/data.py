"""Training examples and the training pack.

    pack = TrainingPack("data/nano_pack")
    examples = pack.examples("train")            # list[TrainExample]
    scene = pack.scene(examples[0].scene_id)     # r1_core.data.scene.Scene (subsampled cloud)
    views = pack.views(examples[0], "dynamic")   # list[ViewInput] chosen by view selection

A *training pack* is a compact, self-contained copy of a ScanNet-format dataset prepared for the
model (`r1 train pack`): each scene's cloud subsampled to the encoder's input size, its
walk-through keyframes at the view encoder's resolution, and every annotation turned into a
TrainExample with its chain-of-thought target and the views each selection strategy picks for
it. It moves to a GPU machine or cluster as one small folder; training never touches the raw
dataset or the renderer.

    <pack>/pack.json                      what it was built from, with which settings
    <pack>/scenes/<scene_id>.npz          xyz float32 (N,3), rgb uint8 (N,3), instance int32,
                                          semantic int32, boxes (K,8) ScanNet rows,
                                          kf_color uint8 (F,S,S,3), kf_depth float16 (F,S,S),
                                          kf_pose float32 (F,4,4)
    <pack>/examples_<split>.jsonl         one TrainExample per line
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from r1_core.data.errors import DataFormatError
from r1_core.data.scene import Scene, objects_from_scannet_rows
from r1_core.data.tasks import TaskSample
from r1_core.model.answer import format_box, format_response
from r1_core.model.views_encoder import ViewInput
from r1_core.query import SceneQuery

VIEW_STRATEGIES = ("dynamic", "uniform", "random")


@dataclass
class TrainExample:
    task: str
    scene_id: str
    text: str                                   # request text (empty for object captions)
    target: str                                 # <think>…</think><answer>…</answer>, boxes as literals
    answers: list[str]                          # reference answers (for rewards and metrics)
    gt_boxes: list[list[float]] = field(default_factory=list)   # (K, 7) boxes the answer refers to
    history: list[str] = field(default_factory=list)            # alternating user/assistant turns
    target_box: list[float] | None = None       # object_caption: the object described
    object_ids: list[int] = field(default_factory=list)
    views: dict[str, list[int]] = field(default_factory=dict)   # strategy -> keyframe indices
    meta: dict = field(default_factory=dict)

    def query(self, num_views: int | None = None) -> SceneQuery:
        task = {"dense_caption": "object_caption"}.get(self.task, self.task)
        return SceneQuery(task, self.text, list(self.history),
                          np.asarray(self.target_box, np.float32) if self.target_box is not None else None,
                          num_views=num_views)

    @property
    def boxes(self) -> np.ndarray:
        return np.asarray(self.gt_boxes, np.float32).reshape(-1, 7)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _strip_speaker(turn: str) -> str:
    for prefix in ("user:", "assistant:"):
        if turn.lower().startswith(prefix):
            return turn[len(prefix):].strip()
    return turn.strip()


def example_from_sample(s: TaskSample, target: str | None = None) -> TrainExample:
    """A TrainExample from a TaskSample. The target is the sample's CoT (Scene-30K), the given
    `target`, or — for samples without one — a minimal well-formed response around the first
    reference answer (so every task trains the same format)."""
    if target is None:
        target = s.cot
    if target is None:
        if not s.answers:
            raise ValueError(f"{s.scene_id}: {s.task} sample without answers or CoT: {s.question!r}")
        answer = s.answers[0]
        target = format_response(f"The request: {s.question.strip()}", answer)
    history = [_strip_speaker(t) for t in s.history]
    target_box = None
    text = s.question
    if s.task in ("dense_caption", "object_caption"):
        if len(s.boxes) == 0:
            raise ValueError(f"{s.scene_id}: {s.task} sample without the object's box")
        target_box = s.boxes[0].tolist()
        text = ""
    return TrainExample(task=s.task, scene_id=s.scene_id, text=text, target=target, answers=list(s.answers),
                        gt_boxes=s.boxes.tolist(), history=history, target_box=target_box,
                        object_ids=list(s.object_ids), meta=dict(s.meta))


class TrainingPack:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = self.root / "pack.json"
        if not meta.is_file():
            raise DataFormatError(meta, "not a training pack (pack.json missing); build one with `r1 train pack`")
        self.meta = json.loads(meta.read_text())
        self._scenes: dict[str, tuple[Scene, list[ViewInput]]] = {}

    def view_selection_tensors(self) -> dict:
        """The view-selection weights the pack's views were chosen with, as the tensors a model
        checkpoint carries in extra.safetensors (so the robot selects views the same way)."""
        from r1_core.views.select import ViewScorerWeights, WeightsConfig

        w = self.meta["config"]["selector"]["weights"]
        return {k: v.contiguous() for k, v in ViewScorerWeights(WeightsConfig(**w)).to_tensors().items()}

    def examples(self, split: str) -> list[TrainExample]:
        path = self.root / f"examples_{split}.jsonl"
        if not path.is_file():
            raise DataFormatError(path, f"pack has no {split!r} examples")
        out = []
        for i, line in enumerate(path.read_text().splitlines()):
            try:
                out.append(TrainExample(**json.loads(line)))
            except (TypeError, json.JSONDecodeError) as e:
                raise DataFormatError(path, f"bad example: {e}", record=i) from e
        return out

    def scene_ids(self, split: str) -> list[str]:
        return list(self.meta["splits"][split])

    def _load(self, scene_id: str) -> tuple[Scene, list[ViewInput]]:
        if scene_id not in self._scenes:
            path = self.root / "scenes" / f"{scene_id}.npz"
            if not path.is_file():
                raise DataFormatError(path, f"pack has no scene {scene_id!r}")
            z = np.load(path)
            pts = np.concatenate([z["xyz"], z["rgb"].astype(np.float32)], axis=1)
            scene = Scene(scene_id, pts, z["instance"], z["semantic"], objects_from_scannet_rows(z["boxes"], path))
            K = np.asarray(self.meta["view_K"], np.float64)
            views = [ViewInput(c, T, depth=d.astype(np.float32), keyframe_id=i, K=K)
                     for i, (c, d, T) in enumerate(zip(z["kf_color"], z["kf_depth"], z["kf_pose"]))]
            self._scenes[scene_id] = (scene, views)
        return self._scenes[scene_id]

    def scene(self, scene_id: str) -> Scene:
        return self._load(scene_id)[0]

    def keyframes(self, scene_id: str) -> list[ViewInput]:
        return self._load(scene_id)[1]

    def views(self, ex: TrainExample, strategy: str, k: int | None = None) -> list[ViewInput]:
        if strategy == "none":
            return []
        if strategy not in VIEW_STRATEGIES:
            raise ValueError(f"unknown view strategy {strategy!r}; choose one of {list(VIEW_STRATEGIES) + ['none']}")
        ids = ex.views.get(strategy)
        if ids is None:
            raise DataFormatError(self.root, f"example of {ex.scene_id} has no {strategy!r} views")
        kfs = self.keyframes(ex.scene_id)
        return [kfs[i] for i in ids[: k if k is not None else len(ids)]]
