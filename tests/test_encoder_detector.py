"""The point encoder's detector side: seed targets against a per-seed reference, box voting,
feature propagation (seeds, gradients, config errors)."""
import pytest
import torch

from r1_core.data.classes import STRUCTURE_NYU40_IDS
from r1_core.geometry.boxes import box_iou_3d
from r1_core.model.encoder import EncoderConfig, PointEncoder, SetAbstractionConfig, detection_loss, seed_targets

SA = (SetAbstractionConfig(128, 0.4, 16, (32, 32)), SetAbstractionConfig(32, 0.8, 16, (32, 64)))


def _cloud(b=2, n=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(b, n, 3, generator=g) * 4, torch.rand(b, n, 3, generator=g) * 255], -1)


def _seed_targets_reference(seed_index, inst_labels, sem_labels, gt_boxes, gt_ids):
    """One seed at a time, straight from the definition."""
    B, S = seed_index.shape
    pos = torch.zeros(B, S, dtype=torch.bool)
    center, log_size = torch.zeros(B, S, 3), torch.zeros(B, S, 3)
    cls = torch.zeros(B, S, dtype=torch.long)
    for b in range(B):
        for s in range(S):
            i, c = int(inst_labels[b, seed_index[b, s]]), int(sem_labels[b, seed_index[b, s]])
            hits = [k for k, v in enumerate(gt_ids[b].tolist()) if v == i]
            if not hits or i == 0 or c in STRUCTURE_NYU40_IDS:
                continue
            pos[b, s] = True
            center[b, s] = gt_boxes[b][hits[0], :3]
            log_size[b, s] = gt_boxes[b][hits[0], 3:6].clamp(min=1e-3).log()
            cls[b, s] = c
    return {"positive": pos, "center": center, "log_size": log_size, "class": cls}


def test_seed_targets_match_the_per_seed_reference():
    g = torch.Generator().manual_seed(3)
    B, N, S = 3, 200, 64
    seed_index = torch.randint(N, (B, S), generator=g)
    inst = torch.randint(0, 8, (B, N), generator=g)
    sem = torch.randint(0, 41, (B, N), generator=g)
    sem[:, ::7] = 1                                               # some wall points
    gt_ids = [torch.tensor([1, 2, 5, 7]), torch.tensor([3]), torch.zeros(0, dtype=torch.long)]
    gt_boxes = [torch.rand(len(i), 7, generator=g) + 0.01 for i in gt_ids]
    got = seed_targets(seed_index, inst, sem, gt_boxes, gt_ids)
    ref = _seed_targets_reference(seed_index, inst, sem, gt_boxes, gt_ids)
    assert got["positive"].any() and not got["positive"][2].any()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], msg=k)


def _seed_boxes(out):
    h = out.head
    return torch.cat([h["center"], h["log_size"].exp(), torch.zeros_like(h["center"][..., :1])], -1)


def test_box_voting_averages_overlapping_seed_boxes_by_objectness():
    enc = PointEncoder(EncoderConfig(num_points=256, num_proposals=2, token_dim=16, sa=SA))
    seeds = torch.tensor([[[0, 0, 0, 1, 1, 1, 0], [0.2, 0, 0, 1, 1, 1, 0],      # overlap each other
                           [5, 5, 5, 2, 2, 2, 0], [9, 9, 9, 1, 1, 1, 0]]], dtype=torch.float32)
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    keep = torch.tensor([[0, 2]])
    kept_iou = box_iou_3d(seeds[0, [0, 2]], seeds[0])[None]
    votes = enc._vote_weights(kept_iou, logits, keep)
    w = torch.tensor([2.0, 0.0]).sigmoid()
    torch.testing.assert_close(votes[0, 0], torch.cat([w / w.sum(), torch.zeros(2)]))
    torch.testing.assert_close(votes[0, 1], torch.tensor([0.0, 0.0, 1.0, 0.0]))    # nothing else overlaps it
    no_vote = PointEncoder(EncoderConfig(num_points=256, num_proposals=2, token_dim=16, sa=SA, box_vote_iou=1.0))
    torch.testing.assert_close(no_vote._vote_weights(kept_iou, logits, keep)[0],
                               torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]))


def test_support_ranking_puts_the_box_many_seeds_agree_on_first():
    """Three confident seeds agree on one box; a lone seed with a higher objectness has another.
    Support ranking keeps the agreed box first, objectness ranking the lone one."""
    seeds = torch.tensor([[0, 0, 0, 1, 1, 1, 0], [0.05, 0, 0, 1, 1, 1, 0], [0, 0.05, 0, 1, 1, 1, 0],
                          [5, 5, 5, 1, 1, 1, 0]], dtype=torch.float32)
    logits = torch.tensor([[3.0, 3.0, 3.0, 6.0]])
    iou = box_iou_3d(seeds, seeds)[None]
    cfg = dict(num_points=256, num_proposals=2, token_dim=16, sa=SA)
    support = PointEncoder(EncoderConfig(**cfg))
    p = logits.sigmoid()[0]
    torch.testing.assert_close(support._rank(iou, logits)[0],
                               torch.stack([p[i] * sum(p[j] for j in range(4) if iou[0, i, j] >= 0.4) for i in range(4)]))
    assert support._nms(iou, support._rank(iou, logits))[0, 0] in (0, 1, 2)
    by_objectness = PointEncoder(EncoderConfig(**cfg, rank_by="objectness"))
    assert by_objectness._nms(iou, by_objectness._rank(iou, logits))[0, 0] == 3


def test_proposals_match_a_per_proposal_vote_reference():
    """Boxes and class distributions of the proposals against a loop over the kept seeds, with
    classes voted and not."""
    torch.manual_seed(0)
    for vote_classes in (True, False):
        enc = PointEncoder(EncoderConfig(num_points=1024, num_proposals=8, token_dim=16, sa=SA,
                                         vote_classes=vote_classes)).eval()
        with torch.no_grad():
            out = enc(_cloud())
        seeds = _seed_boxes(out)
        prob, cls = out.head["objectness"].sigmoid(), out.head["class_logits"].softmax(-1)
        for b in range(2):
            iou = box_iou_3d(seeds[b], seeds[b])
            rank = prob[b] * ((iou >= 0.4).float() * prob[b]).sum(1)
            keep = enc._nms(iou[None], rank[None])[0]
            for k, s in enumerate(keep.tolist()):
                w = (iou[s] >= 0.25).float() * prob[b]
                w = w / w.sum()
                torch.testing.assert_close(out.boxes[b, k, :3], w @ seeds[b, :, :3])
                torch.testing.assert_close(out.boxes[b, k, 3:6], (w @ seeds[b, :, 3:6].log()).exp())
                expect = w @ cls[b] if vote_classes else cls[b, s]
                assert out.labels[b, k] == expect.argmax()
                torch.testing.assert_close(out.scores[b, k], prob[b, s])


def test_voted_proposals_overlap_their_nms_seed():
    torch.manual_seed(0)
    enc = PointEncoder(EncoderConfig(num_points=1024, num_proposals=8, token_dim=16, sa=SA)).eval()
    with torch.no_grad():
        out = enc(_cloud())
    seed_boxes = _seed_boxes(out)
    for b in range(2):   # each proposal is a vote among boxes overlapping one seed at >= 0.25: close to it
        assert (box_iou_3d(out.boxes[b], seed_boxes[b]).amax(1) > 0.2).all()


def test_feature_propagation_gives_first_layer_seeds_and_trains():
    torch.manual_seed(0)
    cfg = EncoderConfig(num_points=1024, num_proposals=8, token_dim=16, sa=SA, propagate_mlp=(48, 48))
    assert cfg.num_seeds == 128
    enc = PointEncoder(cfg)
    pts = _cloud()
    out = enc(pts)
    assert out.seed_xyz.shape == (2, 128, 3) and out.seed_index.shape == (2, 128)
    torch.testing.assert_close(out.seed_xyz, torch.gather(pts[..., :3], 1, out.seed_index[..., None].expand(-1, -1, 3)))
    inst = torch.randint(0, 4, (2, 1024))
    sem = torch.full((2, 1024), 5)
    boxes = [torch.tensor([[1, 1, 1, 1, 1, 1, 0.0]] * 3)] * 2
    loss = detection_loss(out, seed_targets(out.seed_index, inst, sem, boxes, [torch.tensor([1, 2, 3])] * 2))
    loss["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.propagate.parameters())
    assert {id(p) for p in enc.propagate.parameters()} <= {id(p) for p in enc.detector_parameters()}


@pytest.mark.parametrize("kw, match", [
    (dict(sa=SA[:1], propagate_mlp=(32,)), "at least two"),
    (dict(sa=SA, num_proposals=64, propagate_mlp=()), "exceeds the number of seeds"),   # 32 seeds
    (dict(sa=SA, num_proposals=129), "exceeds the number of seeds"),                     # 128 with propagation
    (dict(sa=SA, box_vote_iou=0.0), "box_vote_iou"),
    (dict(sa=SA, rank_by="score"), "rank_by"),
    (dict(sa=SA, support_iou=1.5), "support_iou"),
])
def test_bad_encoder_configs_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        EncoderConfig(num_points=256, token_dim=16, **kw)
