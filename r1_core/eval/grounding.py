"""3D visual grounding accuracy: Acc@kIoU with the ScanRefer and Nr3D breakdowns.

    from r1_core.eval.grounding import scanrefer_metrics, nr3d_metrics
    scanrefer_metrics(pred_boxes, gt_boxes, unique)          # {'Acc@0.25': .., 'unique/Acc@0.5': ..}
    nr3d_metrics(pred_boxes, gt_boxes, n_same_class, utterances)

A sample is one referring expression with one ground-truth box (7,) and one predicted box
(7,) — or None when the model produced no box, which counts as a miss. Boxes follow
docs/conventions.md `(cx, cy, cz, dx, dy, dz, yaw)`; the IoU is the exact yaw-rotated 3D IoU
of `r1_core.geometry.boxes`. A sample is a hit at threshold k when IoU >= k (ScanRefer's
convention: an IoU of exactly 0.25 counts at 0.25). Acc@k = hits / samples.

ScanRefer breakdown: "unique" when the target is the only object of its class in the scene,
"multiple" otherwise; classes are ScanRefer's 18 (r1_core.data.classes.SCANREFER_CLASSES:
17 named ScanNet benchmark classes plus "others" for every other NYU40 class — two
different "others" objects count as the same class). ScanRefer decides this over the objects its annotations
refer to in that scene; `scanrefer_unique_lookup` rebuilds that table from the records.

Nr3D breakdown (ReferIt3D's evaluation code): "hard" when the scene holds more than 2
objects of the target's fine-grained class, target included — i.e. at least 2 distractors —
else "easy" (ReferIt3D: `n_objects <= 2` is easy, n_objects being the third field of the
stimulus id); "view-dependent" when the utterance contains one of ReferIt3D's words
front, behind, back, left, right, facing, leftmost, rightmost, looking, across (as whole
lower-cased tokens), else "view-independent". ReferIt3D itself scores Nr3D as choosing the
right object among ground-truth proposals; with box outputs we score Acc@kIoU, which
equals that accuracy when the model outputs the chosen proposal's ground-truth box.

Result keys: "Acc@0.25", "Acc@0.5", "<split>/Acc@0.25", ..., "mIoU", "count" and
"count/<split>"; a split with no samples is left out.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import numpy as np

from r1_core.data.classes import scanrefer_class as _scanrefer_class_of_nyu40
from r1_core.geometry.boxes import box_iou_3d_aligned

DEFAULT_THRESHOLDS = (0.25, 0.5)

NR3D_VIEW_DEPENDENT_WORDS = frozenset(
    {"front", "behind", "back", "left", "right", "facing", "leftmost", "rightmost", "looking", "across"}
)


def scanrefer_class(nyu40_id: int) -> str:
    """ScanRefer's class of an object from its NYU40 id (one of 17 names, else "others")."""
    if isinstance(nyu40_id, bool) or not isinstance(nyu40_id, (int, np.integer)) or not 0 <= nyu40_id <= 40:
        raise ValueError(f"nyu40_id: expected an integer 0..40, got {nyu40_id!r}")
    return _scanrefer_class_of_nyu40(int(nyu40_id))   # the data layer's class map


def scanrefer_is_unique(target_class: str, scene_classes: Sequence[str]) -> bool:
    """True when `target_class` occurs exactly once among the scene's object classes (which
    must include the target)."""
    n = sum(1 for c in scene_classes if c == target_class)
    if n == 0:
        raise ValueError(f"target class {target_class!r} is not among the scene's classes {sorted(set(scene_classes))}")
    return n == 1


def scanrefer_unique_lookup(records: Iterable[tuple[str, Any, str]]) -> dict[tuple[str, Any], bool]:
    """ScanRefer's unique/multiple table from (scene_id, object_id, class) records: per scene,
    each distinct referred object contributes its class once; a target is unique when no
    other referred object of that scene shares its class. A (scene, object) pair given two
    different classes is an error."""
    classes: dict[str, dict[Any, str]] = {}
    for i, (scene_id, object_id, cls) in enumerate(records):
        seen = classes.setdefault(scene_id, {})
        if seen.setdefault(object_id, cls) != cls:
            raise ValueError(
                f"record {i}: object {object_id!r} of {scene_id} has class {cls!r} here but "
                f"{seen[object_id]!r} in an earlier record"
            )
    out = {}
    for scene_id, objs in classes.items():
        counts: dict[str, int] = {}
        for cls in objs.values():
            counts[cls] = counts.get(cls, 0) + 1
        for object_id, cls in objs.items():
            out[(scene_id, object_id)] = counts[cls] == 1
    return out


def nr3d_is_hard(n_same_class: int) -> bool:
    """ReferIt3D: hard when more than 2 objects of the target's class (target included)."""
    if isinstance(n_same_class, bool) or not isinstance(n_same_class, (int, np.integer)) or n_same_class < 1:
        raise ValueError(f"n_same_class: expected an integer >= 1 (target included), got {n_same_class!r}")
    return n_same_class > 2


def nr3d_is_view_dependent(utterance: str | Sequence[str]) -> bool:
    """ReferIt3D's keyword rule on the utterance (a string, or its token list)."""
    if isinstance(utterance, str):
        tokens = re.findall(r"[a-z]+", utterance.lower())
    else:
        tokens = [str(t).lower() for t in utterance]
    return not NR3D_VIEW_DEPENDENT_WORDS.isdisjoint(tokens)


def nr3d_parse_stimulus_id(stimulus_id: str) -> tuple[str, str, int, int, list[int]]:
    """Nr3D's `stimulus_id` "scene-class-n_objects-target_id[-distractor_id...]" ->
    (scene_id, instance_label, n_objects, target_id, distractor_ids); n_objects counts the
    target and its same-class distractors."""
    parts = stimulus_id.split("-")
    try:
        scene_id, label, n, target = parts[0], parts[1], int(parts[2]), int(parts[3])
        distractors = [int(p) for p in parts[4:] if p != ""]
    except (IndexError, ValueError):
        raise ValueError(
            f"stimulus_id {stimulus_id!r}: expected 'scene-class-n_objects-target_id[-distractor_id...]'"
        ) from None
    if len(distractors) != n - 1:
        raise ValueError(
            f"stimulus_id {stimulus_id!r}: n_objects={n} but {len(distractors)} distractor ids "
            f"(expected n_objects - 1)"
        )
    return scene_id, label, n, target, distractors


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    ts = tuple(float(t) for t in thresholds)
    if not ts or any(not 0.0 < t <= 1.0 for t in ts):
        raise ValueError(f"thresholds: expected IoU thresholds in (0, 1], got {list(thresholds)}")
    return ts


def _as_box(box: Any, where: str) -> np.ndarray:
    arr = np.asarray(box, dtype=np.float64)
    if arr.shape == (1, 7):
        arr = arr[0]
    if arr.shape != (7,):
        raise ValueError(f"{where}: expected one box of 7 numbers (cx,cy,cz,dx,dy,dz,yaw), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr[3:6] < 0):
        raise ValueError(f"{where}: expected finite values and non-negative extents, got {arr.tolist()}")
    return arr


def grounding_ious(pred_boxes: Sequence[Any | None], gt_boxes: Any) -> np.ndarray:
    """(N,) IoU of each sample's predicted box with its ground-truth box; 0 where the
    prediction is None (no box)."""
    gt = np.asarray(gt_boxes, dtype=np.float64)
    if gt.ndim != 2 or gt.shape[1] != 7:
        raise ValueError(f"gt_boxes: expected shape (N, 7), got {gt.shape}")
    if len(pred_boxes) != len(gt):
        raise ValueError(f"pred_boxes and gt_boxes must align: {len(pred_boxes)} predictions, {len(gt)} ground-truth boxes")
    for i in range(len(gt)):
        _as_box(gt[i], f"gt_boxes[{i}]")
    present = [i for i, b in enumerate(pred_boxes) if b is not None]
    ious = np.zeros(len(gt), dtype=np.float64)
    if present:
        pred = np.stack([_as_box(pred_boxes[i], f"pred_boxes[{i}]") for i in present])
        ious[present] = np.asarray(box_iou_3d_aligned(pred, gt[present]), dtype=np.float64)
    return ious


def accuracy_at_iou(
    ious: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    splits: dict[str, Sequence[bool]] | None = None,
) -> dict[str, float]:
    """Acc@k (IoU >= k) over all samples and per named boolean split, plus mIoU and counts."""
    ts = _check_thresholds(thresholds)
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 1 or len(ious) == 0:
        raise ValueError(f"ious: expected a non-empty 1-D array, got shape {ious.shape}")
    groups = {"": np.ones(len(ious), dtype=bool)}
    for name, mask in (splits or {}).items():
        mask = np.asarray(mask)
        if mask.shape != ious.shape or mask.dtype != bool:
            raise ValueError(f"split {name!r}: expected {len(ious)} booleans, got {mask.dtype} of shape {mask.shape}")
        groups[name] = mask
    out: dict[str, float] = {}
    for name, mask in groups.items():
        n = int(mask.sum())
        if n == 0:
            continue
        prefix = f"{name}/" if name else ""
        for t in ts:
            out[f"{prefix}Acc@{t:g}"] = float(np.mean(ious[mask] >= t))
        out[f"{prefix}mIoU"] = float(np.mean(ious[mask]))
        out[f"count/{name}" if name else "count"] = float(n)
    return out


def scanrefer_metrics(
    pred_boxes: Sequence[Any | None],
    gt_boxes: Any,
    unique: Sequence[bool],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """ScanRefer Acc@k overall and on the unique / multiple splits."""
    ious = grounding_ious(pred_boxes, gt_boxes)
    u = np.asarray(unique)
    if u.shape != ious.shape or u.dtype != bool:
        raise ValueError(f"unique: expected {len(ious)} booleans, got {u.dtype} of shape {u.shape}")
    return accuracy_at_iou(ious, thresholds, {"unique": u, "multiple": ~u})


def nr3d_metrics(
    pred_boxes: Sequence[Any | None],
    gt_boxes: Any,
    n_same_class: Sequence[int],
    utterances: Sequence[str | Sequence[str]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Nr3D Acc@k overall and on the easy / hard and view_dep / view_indep splits.
    n_same_class[i]: objects of the target's class in the scene, target included."""
    ious = grounding_ious(pred_boxes, gt_boxes)
    if len(n_same_class) != len(ious) or len(utterances) != len(ious):
        raise ValueError(
            f"n_same_class ({len(n_same_class)}) and utterances ({len(utterances)}) must have one "
            f"entry per sample ({len(ious)})"
        )
    hard = np.array([nr3d_is_hard(n) for n in n_same_class], dtype=bool)
    vd = np.array([nr3d_is_view_dependent(u) for u in utterances], dtype=bool)
    return accuracy_at_iou(ious, thresholds, {"easy": ~hard, "hard": hard, "view_dep": vd, "view_indep": ~vd})
