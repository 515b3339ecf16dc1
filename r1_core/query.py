"""One request and one answer: the dataclasses every layer passes around.

A ROS message is converted to a `SceneQuery` at the node boundary and a `SceneAnswer` back;
the core never sees ROS types.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TASKS = ("grounding", "qa", "dense_caption", "object_caption", "dialogue", "planning", "reasoning")


@dataclass
class SceneQuery:
    task: str                              # one of TASKS
    text: str = ""                         # expression, question, instruction or goal
    history: list[str] = field(default_factory=list)   # dialogue turns, oldest first, user first
    target_box: np.ndarray | None = None   # object_caption: (7,) box of the object to describe
    num_views: int | None = None           # None: the configured default
    max_new_tokens: int | None = None      # None: the configured default

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {list(TASKS)}")
        if self.task in ("grounding", "qa", "dialogue", "planning", "reasoning") and not self.text.strip():
            raise ValueError(f"task {self.task!r} needs a non-empty text")
        if self.task == "object_caption":
            if self.target_box is None:
                raise ValueError("task 'object_caption' needs target_box (the object to describe)")
            box = np.asarray(self.target_box, dtype=np.float32).reshape(-1)
            if box.shape[0] not in (6, 7) or not np.all(np.isfinite(box)) or not np.all(box[3:6] > 0):
                raise ValueError(f"target_box: expected 6 or 7 finite numbers (cx cy cz dx dy dz [yaw]) with "
                                 f"sizes > 0, got {box.tolist()}")
            self.target_box = np.concatenate([box, np.zeros(7 - box.shape[0], np.float32)])
        if self.num_views is not None and self.num_views < 0:
            raise ValueError(f"num_views must be >= 0, got {self.num_views}")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")


@dataclass
class SceneAnswer:
    answer: str                            # answer text, boxes as <box>…</box> literals
    reasoning: str
    boxes: np.ndarray                      # (K, 7) in the map frame
    labels: list[str] = field(default_factory=list)     # a label per box where known
    steps: list[str] = field(default_factory=list)      # planning: ordered steps
    raw: str = ""                          # the model's text as generated
    view_ids: list[int] = field(default_factory=list)   # keyframes the answer was based on
    timings: dict[str, float] = field(default_factory=dict)
