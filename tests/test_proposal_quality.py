"""training.detector.proposal_quality against a set-based reference on fixed proposals, and
bench/proposals.py's variant parsing."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from r1_core.data.classes import STRUCTURE_NYU40_IDS
from r1_core.data.synthetic.world import generate_room
from r1_core.geometry.boxes import box_iou_3d
from r1_core.model.encoder import EncoderConfig, EncoderOutput, PointEncoder, SetAbstractionConfig
from training.detector import proposal_quality

SA = (SetAbstractionConfig(64, 0.4, 8, (16, 16)), SetAbstractionConfig(32, 0.8, 8, (16, 32)))


class FixedProposals(PointEncoder):
    """An encoder whose proposals are given: boxes (B, P, 7) and labels (B, P), one row per scene."""

    def __init__(self, boxes, labels):
        super().__init__(EncoderConfig(num_points=512, num_proposals=boxes.shape[1], token_dim=8, sa=SA))
        self.fixed = (boxes, labels)

    def forward(self, points):
        b = points.shape[0]
        boxes, labels = self.fixed
        z = torch.zeros(b, 1)
        return EncoderOutput(token_inputs=z, boxes=boxes[:b], scores=torch.ones(labels[:b].shape), labels=labels[:b],
                             seed_xyz=z, seed_index=z.long())


def _reference(gt, classes, boxes, labels):
    """Per scene: matched proposals, distinct objects they match, right classes, recall hits."""
    iou = box_iou_3d(gt, boxes).numpy()
    match = iou.max(0) >= 0.25
    target = iou.argmax(0)
    return dict(hit25=int((iou.max(1) >= 0.25).sum()), hit50=int((iou.max(1) >= 0.5).sum()), k=len(gt),
                fp=int((~match).sum()), dup=int(match.sum()) - len(set(target[match].tolist())),
                right=int((labels.numpy()[match] == classes[target[match]]).sum()), matched=int(match.sum()))


def test_proposal_quality_matches_a_set_based_reference():
    scenes = [generate_room(seed=s).to_scene() for s in (1, 2)]
    all_boxes, all_labels, refs = [], [], []
    for sc in scenes:
        objs = [o for o in sc.objects if o.nyu40_id not in STRUCTURE_NYU40_IDS]
        gt = torch.from_numpy(np.stack([o.box for o in objs])).float()
        classes = np.array([o.nyu40_id for o in objs])
        # proposals: exact boxes, a shifted copy (duplicate or miss), far-away false positives
        boxes = torch.cat([gt[:5], gt[:3] + torch.tensor([0.05, 0, 0, 0, 0, 0, 0]), gt[:2] + 50.0])
        labels = torch.tensor(classes[[0, 1, 2, 3, 4, 0, 1, 2, 0, 1]])
        labels[1] = 0                                                    # one wrong class
        all_boxes.append(boxes)
        all_labels.append(labels)
        refs.append(_reference(gt, classes, boxes, labels))
    enc = FixedProposals(torch.stack(all_boxes), torch.stack(all_labels))
    q = proposal_quality(enc, scenes, batch_size=2)
    total = sum(r["k"] for r in refs)
    assert q["recall@0.25"] == pytest.approx(sum(r["hit25"] for r in refs) / total)
    assert q["recall@0.5"] == pytest.approx(sum(r["hit50"] for r in refs) / total)
    assert q["false_positives"] == pytest.approx(np.mean([r["fp"] for r in refs])) and q["false_positives"] >= 2
    assert q["duplicates"] == pytest.approx(np.mean([r["dup"] for r in refs])) and q["duplicates"] > 0
    assert q["class_accuracy"] == pytest.approx(sum(r["right"] for r in refs) / sum(r["matched"] for r in refs))
    assert q["class_accuracy"] < 1.0


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "proposals.py"
    spec = importlib.util.spec_from_file_location("bench_proposals", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_variants_are_typed_and_bad_ones_named():
    bench = _bench()
    base = EncoderConfig(sa=SA, num_proposals=8)
    name, cfg = bench.parse_variant("old: rank_by=objectness vote_classes=false support_iou=0.5", base)
    assert name == "old" and cfg.rank_by == "objectness" and cfg.vote_classes is False and cfg.support_iou == 0.5
    for bad, match in [("no colon", "NAME"), ("x: nosuchkey=1", "EncoderConfig"), ("x: vote_classes=yes", "true or false"),
                       ("x: rank_by=score", "rank_by")]:
        with pytest.raises(ValueError, match=match):
            bench.parse_variant(bad, base)
