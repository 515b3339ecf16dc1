"""Scan2Cap-style dense-captioning metrics: CIDEr / BLEU-4 / METEOR / ROUGE-L @ kIoU.

    from r1_core.eval.dense_caption import dense_caption_metrics
    m = dense_caption_metrics(
        predictions={"scene0000_00": (pred_boxes (P, 7), ["a brown chair ...", ...])},
        ground_truth={"scene0000_00": (gt_boxes (G, 7), [["the chair by the desk", ...], ...])},
    )
    m["CIDEr@0.5"], m["BLEU-4@0.25"]

Definition (Scan2Cap, Chen et al. CVPR 2021, "m@kIoU"):

    m@kIoU = (1 / N) * sum_i  m_i * u_i,     u_i = 1 if IoU(pred box matched to GT i) >= k else 0

over all N ground-truth objects i of all scenes. Each ground-truth object is matched to the
predicted (box, caption) with the highest 3D IoU in its scene (a prediction may serve several
objects); m_i is the caption metric of that prediction's caption against object i's reference
descriptions. An object with no prediction in its scene, or whose best IoU is below k,
scores 0 — false negatives cost, surplus predictions do not (run NMS before, as Scan2Cap
does). m_i are pycocoevalcap's per-sample scores (BLEU-4 sentence score, METEOR segment
score, ROUGE-L, CIDEr-D) computed in one call over all N objects, so CIDEr's idf comes from
every object's references regardless of k. Captions are PTB-tokenised as in
r1_core.eval.captions. Scan2Cap's own code wraps every caption in "sos ... eos" tokens, which
lifts BLEU/METEOR a little; `sos_eos=True` reproduces that, the default does not.
Also returned: "count" (N) and "recall@k" (share of objects with IoU >= k).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from r1_core.eval.captions import CaptionScorer
from r1_core.geometry.boxes import box_iou_3d

DENSE_CAPTION_METRICS = ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")


def _boxes(arr: Any, where: str) -> np.ndarray:
    b = np.asarray(arr, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 7))
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(f"{where}: expected boxes of shape (K, 7), got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{where}: boxes contain non-finite values")
    return b


def _wrap(tokens: str) -> str:
    return " ".join(["sos", *tokens.split(), "eos"])


def match_ground_truth(pred_boxes: Any, gt_boxes: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each GT box, the index of the predicted box with the highest IoU (-1 when there
    are no predictions) and that IoU (0 then)."""
    pred = _boxes(pred_boxes, "pred_boxes")
    gt = _boxes(gt_boxes, "gt_boxes")
    if len(pred) == 0 or len(gt) == 0:
        return np.full(len(gt), -1, dtype=np.int64), np.zeros(len(gt))
    iou = np.asarray(box_iou_3d(gt, pred), dtype=np.float64)   # (G, P)
    best = iou.argmax(axis=1)
    return best.astype(np.int64), iou[np.arange(len(gt)), best]


def dense_caption_metrics(
    predictions: Mapping[str, tuple[Any, Sequence[str]]],
    ground_truth: Mapping[str, tuple[Any, Sequence[Sequence[str]]]],
    iou_thresholds: Sequence[float] = (0.25, 0.5),
    metrics: Sequence[str] = DENSE_CAPTION_METRICS,
    sos_eos: bool = False,
    scorer: CaptionScorer | None = None,
) -> dict[str, float]:
    """m@kIoU for each metric and threshold ("CIDEr@0.5", ...). A scene of `ground_truth`
    missing from `predictions` has no predictions; a scene only in `predictions` is an error."""
    ts = tuple(float(t) for t in iou_thresholds)
    if not ts or any(not 0.0 < t <= 1.0 for t in ts):
        raise ValueError(f"iou_thresholds: expected values in (0, 1], got {list(iou_thresholds)}")
    unknown = [m for m in metrics if m not in DENSE_CAPTION_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown dense-caption metric(s) {unknown or metrics}; choose from {list(DENSE_CAPTION_METRICS)}")
    extra = [s for s in predictions if s not in ground_truth]
    if extra:
        raise ValueError(f"predictions for {len(extra)} scene(s) without ground truth, e.g. {extra[:5]}")

    cands: dict[tuple[str, int], str] = {}
    refs: dict[tuple[str, int], list[str]] = {}
    ious: list[float] = []
    for scene_id, gt_entry in ground_truth.items():
        gt_boxes, gt_refs = gt_entry
        gt = _boxes(gt_boxes, f"ground_truth[{scene_id!r}] boxes")
        if len(gt_refs) != len(gt):
            raise ValueError(f"ground_truth[{scene_id!r}]: {len(gt)} boxes but {len(gt_refs)} reference lists")
        if scene_id in predictions:
            p_boxes, p_caps = predictions[scene_id]
            pb = _boxes(p_boxes, f"predictions[{scene_id!r}] boxes")
            if len(p_caps) != len(pb):
                raise ValueError(f"predictions[{scene_id!r}]: {len(pb)} boxes but {len(p_caps)} captions")
        else:
            pb, p_caps = np.zeros((0, 7)), []
        best, best_iou = match_ground_truth(pb, gt)
        for i in range(len(gt)):
            key = (scene_id, i)
            r = gt_refs[i]
            if isinstance(r, str) or not isinstance(r, Sequence) or not r:
                raise ValueError(f"ground_truth[{scene_id!r}] object {i}: expected a non-empty list of descriptions, got {r!r}")
            refs[key] = list(r)
            # no overlapping prediction: nothing to caption (masked out at every k > 0 anyway)
            cands[key] = p_caps[best[i]] if best[i] >= 0 and best_iou[i] > 0 else ""
            ious.append(float(best_iou[i]))
    if not refs:
        raise ValueError("ground_truth holds no objects to score")

    if scorer is not None and any(m not in scorer.metrics for m in metrics):
        raise ValueError(f"scorer computes {list(scorer.metrics)}, not all of the requested {list(metrics)}")
    own = scorer is None
    sc = CaptionScorer(tuple(metrics)) if own else scorer
    try:
        if sos_eos:
            both = sc.tokenize({**{("r",) + k: v for k, v in refs.items()},
                                **{("c",) + k: [v] for k, v in cands.items()}})
            refs_t = {k: [_wrap(s) for s in both[("r",) + k]] for k in refs}
            cands_t = {k: _wrap(both[("c",) + k][0]) for k in cands}
            scores = sc.score(cands_t, refs_t, tokenize=False, per_sample=True)
        else:
            scores = sc.score(cands, refs, per_sample=True)
    finally:
        if own:
            sc.close()

    keys = list(refs)
    iou_arr = np.asarray(ious)
    out: dict[str, float] = {"count": float(len(keys))}
    for t in ts:
        hit = iou_arr >= t
        out[f"recall@{t:g}"] = float(hit.mean())
        for m in metrics:
            per = np.array([scores.per_sample[m][k] for k in keys])
            out[f"{m}@{t:g}"] = float(np.mean(per * hit))
    return out
