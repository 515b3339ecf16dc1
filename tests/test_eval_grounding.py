"""Grounding accuracy: hand-built IoU cases at the thresholds (exactly 0.25, just below,
rotated boxes), missing predictions, ScanRefer / Nr3D splits against plain loops, helpers."""
import math

import numpy as np
import pytest

from r1_core.eval.grounding import (
    accuracy_at_iou,
    grounding_ious,
    nr3d_is_hard,
    nr3d_is_view_dependent,
    nr3d_metrics,
    nr3d_parse_stimulus_id,
    scanrefer_class,
    scanrefer_is_unique,
    scanrefer_metrics,
    scanrefer_unique_lookup,
)

UNIT = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])


def box(cx=0.0, cy=0.0, cz=0.0, dx=1.0, dy=1.0, dz=1.0, yaw=0.0):
    return np.array([cx, cy, cz, dx, dy, dz, yaw])


def test_iou_exactly_quarter_counts_just_below_does_not():
    gt = np.stack([UNIT, UNIT])
    exact = box(dx=2.0, dy=2.0)                 # contains the unit cube: IoU = 1 / 4 exactly
    below = box(dx=2.0, dy=2.0, dz=1.0 + 1e-6)  # a hair larger: IoU = 1 / (4 (1 + 1e-6)) < 0.25
    ious = grounding_ious([exact, below], gt)
    assert ious[0] == 0.25 and ious[1] < 0.25 and ious[1] == pytest.approx(0.25, abs=1e-5)
    m = scanrefer_metrics([exact, below], gt, unique=[True, False])
    assert m["Acc@0.25"] == 0.5 and m["Acc@0.5"] == 0.0
    assert m["unique/Acc@0.25"] == 1.0 and m["multiple/Acc@0.25"] == 0.0
    # the 0.5 threshold is inclusive too: half-height box inside the unit cube, IoU = 0.5
    half = box(dz=0.5)
    assert scanrefer_metrics([half], UNIT[None], [True])["Acc@0.5"] == 1.0


def test_rotated_boxes():
    # A 4 x 0.5 slab against itself turned by 90 degrees: an axis-aligned IoU that ignores
    # yaw would say 1; the true overlap is a 0.5 x 0.5 square: IoU = 0.25 / (2 + 2 - 0.25).
    slab = box(dx=4.0, dy=0.5)
    turned = box(dx=4.0, dy=0.5, yaw=math.pi / 2)
    # The unit cube turned by 45 degrees about z: the overlap is a regular octagon of area
    # 2 (sqrt 2 - 1); IoU = that / (2 - that) = 1 / sqrt 2.
    diamond = box(yaw=math.pi / 4)
    # A 180-degree turn is the same box.
    flipped = box(dx=4.0, dy=0.5, yaw=math.pi)
    # The same box described with swapped extents and yaw 90 degrees.
    swapped = box(dx=0.5, dy=4.0, yaw=math.pi / 2)
    gt = np.stack([slab, UNIT, slab, slab])
    ious = grounding_ious([turned, diamond, flipped, swapped], gt)
    np.testing.assert_allclose(ious, [0.25 / 3.75, 1 / math.sqrt(2), 1.0, 1.0], atol=1e-9)
    m = accuracy_at_iou(ious)
    assert m["Acc@0.25"] == 0.75 and m["Acc@0.5"] == 0.75
    # rotation and translation together: a turned box shifted so that the yaw decides
    gt2 = box(cx=1.0, dx=2.0, dy=0.2)
    pred_rot = box(cx=1.0, dx=2.0, dy=0.2, yaw=0.3)
    assert grounding_ious([pred_rot], gt2[None])[0] < 0.5
    assert grounding_ious([gt2], gt2[None])[0] == pytest.approx(1.0)


def test_missing_prediction_is_a_miss():
    gt = np.stack([UNIT, UNIT, UNIT])
    ious = grounding_ious([None, UNIT, None], gt)
    np.testing.assert_array_equal(ious, [0.0, 1.0, 0.0])
    m = scanrefer_metrics([None, UNIT, None], gt, [True, True, False])
    assert m["Acc@0.25"] == pytest.approx(1 / 3) and m["count"] == 3
    assert m["unique/Acc@0.5"] == 0.5 and m["multiple/Acc@0.5"] == 0.0
    assert scanrefer_metrics([None], UNIT[None], [False])["Acc@0.25"] == 0.0
    # a (1, 7) prediction is accepted as one box
    assert grounding_ious([UNIT[None]], UNIT[None])[0] == 1.0


def _random_boxes(rng, n):
    return np.concatenate([rng.uniform(-1, 1, (n, 3)), rng.uniform(0.3, 1.5, (n, 3)),
                           rng.uniform(-math.pi, math.pi, (n, 1))], axis=1)


def test_splits_match_plain_loops_on_random_data():
    from r1_core.geometry.boxes import box_iou_3d_aligned

    rng = np.random.default_rng(0)
    n = 300
    gt = _random_boxes(rng, n)
    pred = gt + rng.normal(0, 0.15, gt.shape) * np.array([1, 1, 1, 0.5, 0.5, 0.5, 1])
    pred[:, 3:6] = np.abs(pred[:, 3:6])
    preds = [None if rng.random() < 0.1 else pred[i] for i in range(n)]
    unique = rng.random(n) < 0.4
    n_same = rng.integers(1, 6, n)
    words = ["the", "chair", "left", "front", "table", "near", "facing", "window", "leftover"]
    utts = [" ".join(rng.choice(words, 5)) for _ in range(n)]
    sr = scanrefer_metrics(preds, gt, unique)
    nr = nr3d_metrics(preds, gt, n_same, utts)
    for t in (0.25, 0.5):
        hits = [p is not None and box_iou_3d_aligned(p[None], gt[i][None])[0] >= t for i, p in enumerate(preds)]
        hits = np.array(hits)
        assert sr[f"Acc@{t:g}"] == pytest.approx(hits.mean())
        assert sr[f"unique/Acc@{t:g}"] == pytest.approx(hits[unique].mean())
        assert sr[f"multiple/Acc@{t:g}"] == pytest.approx(hits[~unique].mean())
        hard = n_same > 2
        vd = np.array([any(w in u.split() for w in ("left", "front", "facing")) for u in utts])
        assert nr[f"Acc@{t:g}"] == pytest.approx(hits.mean())
        assert nr[f"easy/Acc@{t:g}"] == pytest.approx(hits[~hard].mean())
        assert nr[f"hard/Acc@{t:g}"] == pytest.approx(hits[hard].mean())
        assert nr[f"view_dep/Acc@{t:g}"] == pytest.approx(hits[vd].mean())
        assert nr[f"view_indep/Acc@{t:g}"] == pytest.approx(hits[~vd].mean())
    assert sr["count/unique"] == unique.sum() and nr["count/hard"] == (n_same > 2).sum()
    assert 0.2 < sr["Acc@0.5"] < 0.95   # the random case is not degenerate


def test_empty_split_is_left_out():
    m = scanrefer_metrics([UNIT], UNIT[None], [True])
    assert "unique/Acc@0.25" in m and "multiple/Acc@0.25" not in m and "count/multiple" not in m


def test_nr3d_rules():
    assert not nr3d_is_hard(1) and not nr3d_is_hard(2) and nr3d_is_hard(3)
    assert nr3d_is_view_dependent("The chair on the LEFT of the desk")
    assert nr3d_is_view_dependent("facing the bed, it's the one in front")
    assert nr3d_is_view_dependent(["looking", "at", "tv"])
    assert not nr3d_is_view_dependent("the leftover box near the backpack")
    assert not nr3d_is_view_dependent("the chair closest to the door")
    assert nr3d_parse_stimulus_id("scene0525_00-plant-3-22-28-30") == ("scene0525_00", "plant", 3, 22, [28, 30])
    assert nr3d_parse_stimulus_id("scene0000_00-chair-2-5-7")[2] == 2
    with pytest.raises(ValueError, match="distractor ids"):
        nr3d_parse_stimulus_id("scene0525_00-plant-3-22-28")
    with pytest.raises(ValueError, match="expected 'scene-class"):
        nr3d_parse_stimulus_id("scene0525_00-plant")
    with pytest.raises(ValueError, match="n_same_class"):
        nr3d_is_hard(0)


def test_scanrefer_unique_helpers():
    assert scanrefer_class(5) == "chair" and scanrefer_class(39) == "others" and scanrefer_class(35) == "others"
    with pytest.raises(ValueError, match="nyu40_id"):
        scanrefer_class(41)
    assert scanrefer_is_unique("bed", ["bed", "chair", "chair"])
    assert not scanrefer_is_unique("chair", ["bed", "chair", "chair"])
    with pytest.raises(ValueError, match="not among"):
        scanrefer_is_unique("sofa", ["bed"])
    records = [("s0", 1, "chair"), ("s0", 1, "chair"), ("s0", 2, "chair"), ("s0", 3, "bed"),
               ("s0", 4, "others"), ("s0", 5, "others"), ("s1", 1, "chair")]
    lookup = scanrefer_unique_lookup(records)
    assert lookup == {("s0", 1): False, ("s0", 2): False, ("s0", 3): True, ("s0", 4): False,
                      ("s0", 5): False, ("s1", 1): True}
    with pytest.raises(ValueError, match="record 1"):
        scanrefer_unique_lookup([("s0", 1, "chair"), ("s0", 1, "bed")])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="must align"):
        grounding_ious([UNIT], np.stack([UNIT, UNIT]))
    with pytest.raises(ValueError, match=r"pred_boxes\[0\]"):
        grounding_ious([np.zeros(6)], UNIT[None])
    with pytest.raises(ValueError, match=r"pred_boxes\[0\]"):
        grounding_ious([box(dx=np.nan)], UNIT[None])
    with pytest.raises(ValueError, match="gt_boxes"):
        grounding_ious([UNIT], UNIT)
    with pytest.raises(ValueError, match="unique"):
        scanrefer_metrics([UNIT], UNIT[None], [1])
    with pytest.raises(ValueError, match="thresholds"):
        accuracy_at_iou(np.array([0.3]), thresholds=(0.0,))
    with pytest.raises(ValueError, match="one entry per sample"):
        nr3d_metrics([UNIT], UNIT[None], [2, 3], ["x"])
