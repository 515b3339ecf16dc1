"""Scan2Cap m@kIoU: matching against a brute-force argmax, the masked mean on a hand-built
scene against per-sample scores of the same corpus, missing scenes, sos/eos, errors."""
import math

import numpy as np
import pytest

from r1_core.eval.captions import CaptionScorer
from r1_core.eval.dense_caption import dense_caption_metrics, match_ground_truth

METRICS = ("CIDEr", "BLEU-4", "ROUGE-L")   # METEOR's JVM is exercised once, below


def box(cx=0.0, cy=0.0, cz=0.0, dx=1.0, dy=1.0, dz=1.0, yaw=0.0):
    return np.array([cx, cy, cz, dx, dy, dz, yaw])


@pytest.fixture(scope="module")
def scorer():
    with CaptionScorer(METRICS) as s:
        yield s


def test_matching_is_argmax_iou_per_ground_truth():
    from r1_core.geometry.boxes import box_iou_3d_aligned

    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(-2, 2, (7, 3)), rng.uniform(0.3, 1.2, (7, 3)), rng.uniform(-3, 3, (7, 1))], 1)
    pred = np.concatenate([rng.uniform(-2, 2, (11, 3)), rng.uniform(0.3, 1.2, (11, 3)), rng.uniform(-3, 3, (11, 1))], 1)
    best, best_iou = match_ground_truth(pred, gt)
    for g in range(len(gt)):
        ious = [box_iou_3d_aligned(gt[g][None], pred[p][None])[0] for p in range(len(pred))]
        assert best_iou[g] == pytest.approx(max(ious))
        assert ious[best[g]] == pytest.approx(max(ious))
    b, i = match_ground_truth(np.zeros((0, 7)), gt)
    assert (b == -1).all() and (i == 0).all()


SCENE_GT = {
    "scene_a": (np.stack([box(), box(cx=3.0), box(cx=-3.0)]),
                [["this is a brown chair next to the desk", "a wooden chair"],
                 ["a white table in the middle of the room"],
                 ["the door is on the left wall"]]),
    "scene_b": (np.stack([box(cy=2.0, dx=2.0)]), [["a long grey sofa against the wall"]]),
}


def test_masked_mean_over_all_ground_truth_objects(scorer):
    # scene_a: object 0 found exactly (IoU 1) with a good caption; object 1 found with
    # IoU 1/3 (between 0.25 and 0.5); object 2 missed (no box near it); a stray prediction
    # far away costs nothing. scene_b has no predictions at all.
    p1 = box(cx=3.5)                       # shifted half a metre: IoU = 0.5 / 1.5
    preds = {"scene_a": (np.stack([box(), p1, box(cx=10.0)]),
                         ["a brown chair next to the desk", "a white table in the room", "a lamp"])}
    m = dense_caption_metrics(preds, SCENE_GT, metrics=METRICS, scorer=scorer)
    # the same corpus scored directly: the matched caption per object, "" where none
    cands = {("scene_a", 0): preds["scene_a"][1][0], ("scene_a", 1): preds["scene_a"][1][1],
             ("scene_a", 2): "", ("scene_b", 0): ""}
    refs = {("scene_a", i): r for i, r in enumerate(SCENE_GT["scene_a"][1])}
    refs[("scene_b", 0)] = SCENE_GT["scene_b"][1][0]
    per = scorer.score(cands, refs, per_sample=True).per_sample
    # object 2 overlaps no prediction (IoU 0 with all): it is scored with an empty caption
    # and masked at every threshold
    for metric in METRICS:
        s = per[metric]
        assert m[f"{metric}@0.5"] == pytest.approx(s[("scene_a", 0)] / 4)
        assert m[f"{metric}@0.25"] == pytest.approx((s[("scene_a", 0)] + s[("scene_a", 1)]) / 4)
    assert m["count"] == 4 and m["recall@0.25"] == 0.5 and m["recall@0.5"] == 0.25
    assert m["CIDEr@0.25"] > m["CIDEr@0.5"] > 0
    # a perfect system: every object found with its first reference as caption
    perfect = {s: (b, [r[0] for r in refs_]) for s, (b, refs_) in SCENE_GT.items()}
    mp = dense_caption_metrics(perfect, SCENE_GT, metrics=METRICS, scorer=scorer)
    assert mp["BLEU-4@0.5"] > 0.6 and mp["ROUGE-L@0.5"] > 0.8 and mp["recall@0.5"] == 1.0
    assert mp["ROUGE-L@0.5"] > m["ROUGE-L@0.5"]


def test_rotated_prediction_below_threshold_scores_zero(scorer):
    gt = {"s": (np.stack([box(dx=3.0, dy=0.4)]), [["a long thin shelf"]])}
    turned = {"s": (np.stack([box(dx=3.0, dy=0.4, yaw=math.pi / 2)]), ["a long thin shelf"])}
    m = dense_caption_metrics(turned, gt, metrics=METRICS, scorer=scorer)
    assert m["recall@0.25"] == 0.0 and m["CIDEr@0.25"] == 0.0 and m["BLEU-4@0.25"] == 0.0


def test_sos_eos_and_meteor():
    perfect = {s: (b, [r[0] for r in refs_]) for s, (b, refs_) in SCENE_GT.items()}
    with CaptionScorer() as sc:
        plain = dense_caption_metrics(perfect, SCENE_GT, scorer=sc)
        wrapped = dense_caption_metrics(perfect, SCENE_GT, sos_eos=True, scorer=sc)
    assert set(plain) >= {"METEOR@0.5", "METEOR@0.25", "CIDEr@0.5"}
    assert plain["METEOR@0.5"] > 0.5
    assert wrapped["BLEU-4@0.5"] != plain["BLEU-4@0.5"]


def test_bad_inputs_are_named(scorer):
    with pytest.raises(ValueError, match="without ground truth"):
        dense_caption_metrics({"x": (np.zeros((0, 7)), [])}, SCENE_GT, metrics=METRICS, scorer=scorer)
    with pytest.raises(ValueError, match="2 boxes but 1 captions"):
        dense_caption_metrics({"scene_b": (np.stack([box(), box()]), ["a"])}, SCENE_GT, metrics=METRICS, scorer=scorer)
    with pytest.raises(ValueError, match="1 boxes but 2 reference lists"):
        dense_caption_metrics({}, {"s": (box()[None], [["a"], ["b"]])}, metrics=METRICS, scorer=scorer)
    with pytest.raises(ValueError, match="iou_thresholds"):
        dense_caption_metrics({}, SCENE_GT, iou_thresholds=(0.0,), metrics=METRICS, scorer=scorer)
    with pytest.raises(ValueError, match="unknown dense-caption metric"):
        dense_caption_metrics({}, SCENE_GT, metrics=("SPICE",))
    with pytest.raises(ValueError, match="not all of the requested"):
        dense_caption_metrics({}, SCENE_GT, metrics=("METEOR",), scorer=scorer)
    with pytest.raises(ValueError, match=r"shape \(K, 7\)"):
        dense_caption_metrics({}, {"s": (np.zeros((1, 6)), [["a"]])}, metrics=METRICS, scorer=scorer)
