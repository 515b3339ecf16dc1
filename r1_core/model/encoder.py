"""Point encoder: PointNet++ set abstraction + an object-proposal head -> scene tokens.

    enc = PointEncoder(EncoderConfig())
    out = enc(points)            # points: (B, N, 6|9) xyz + rgb 0..255 (+ normals)
    out.boxes, out.scores        # (B, P, 7) proposal boxes (map frame), (B, P) objectness
    tokens = enc.tokens(out.token_inputs)   # (B, P, token_dim): one token per object proposal

Why proposals as tokens: a 135M-parameter LLM cannot regress metric box coordinates from
pooled point features reliably, but it can point at one of P candidate objects. The encoder
therefore works like the 3D-R1/Vote2Cap-style scene encoders: set-abstraction layers give
seed points with features (optionally VoteNet's feature propagation: the last layer's
features interpolated back to the first layer's denser centroids, so small objects get seeds);
every seed votes for the box of the object it lies on (objectness, centre offset, log-size,
class); greedy 3D NMS keeps the top P boxes, those that most seeds agree on first, and each kept
box (and its class distribution) becomes the objectness-weighted mean of the seed boxes that
overlap it (box voting: a steadier box and label than any single seed's); each
kept proposal becomes one scene token built from its seed feature, the max-pooled features of
the seeds inside its box, its class distribution, the mean colour of the input points
inside it and a Fourier encoding of its centre and size (the 3D positional encoding).
The LLM refers to proposal k with `<ref>k</ref>` (see answer.py); the box it outputs is the
proposal's box.

The detection head is trained with `detection_loss` on ScanNet-format instance labels and
boxes (training/ runs it as the encoder pre-training stage); boxes are axis-aligned, as in
ScanNet's `_aligned_bbox.npy`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from r1_core.data.classes import STRUCTURE_NYU40_IDS
from r1_core.geometry.boxes import box_iou_3d, points_in_boxes
from r1_core.geometry.points import (ball_query, furthest_point_sample, gather_points, group_points, three_interpolate,
                                     three_nn)

NUM_NYU40 = 41                      # class ids 0..40; 0 = unannotated


@dataclass
class SetAbstractionConfig:
    centroids: int
    radius: float
    neighbours: int
    mlp: tuple[int, ...]


@dataclass
class EncoderConfig:
    """Point encoder settings; sizes default to R1-nano's."""

    num_points: int = 16384          # points fed to the encoder: larger clouds are subsampled
                                     # (seeded, uniform), smaller ones padded by repetition
    max_input_points: int = 2_000_000  # hard cap on the cloud handed in (memory guard)
    use_normals: bool = False        # use columns 6..8 when the cloud has them
    sa: tuple[SetAbstractionConfig, ...] = (
        SetAbstractionConfig(1024, 0.2, 32, (64, 64, 128)),
        SetAbstractionConfig(256, 0.4, 32, (128, 128, 256)),
    )
    propagate_mlp: tuple[int, ...] = (256, 256)  # feature propagation (VoteNet): interpolate the last layer's
                                     # features to the first layer's centroids, which become the seeds
                                     # (MLP widths); () = the last layer's centroids are the seeds
    num_proposals: int = 32          # P: scene tokens per scene
    nms_iou: float = 0.25
    rank_by: str = "support"         # NMS order: "support" = a seed's objectness times the objectness-
                                     # weighted count of seed boxes overlapping its box at IoU >= support_iou
                                     # (boxes many seeds agree on first), or "objectness" alone (it saturates
                                     # near 1 for every seed on an object: the order among them is arbitrary)
    support_iou: float = 0.4
    box_vote_iou: float = 0.25       # a kept box = objectness-weighted mean of the seed boxes overlapping
                                     # it at IoU >= this (1.0 keeps the single seed's box)
    vote_classes: bool = True        # a kept proposal's class distribution = the same weighted mean of its
                                     # voters' (False: its own seed's)
    fourier_bands: int = 8           # positional encoding of box centre and size
    token_dim: int = 256
    seed: int = 0                    # subsampling seed (deterministic encoding)

    def __post_init__(self):
        if not self.sa:
            raise ValueError("encoder.sa: need at least one set-abstraction layer")
        if self.propagate_mlp and len(self.sa) < 2:
            raise ValueError("encoder.propagate_mlp: feature propagation needs at least two set-abstraction layers")
        if self.num_proposals > self.num_seeds:
            raise ValueError(f"encoder.num_proposals ({self.num_proposals}) exceeds the number of seeds "
                             f"({self.num_seeds})")
        if self.rank_by not in ("support", "objectness"):
            raise ValueError(f"encoder.rank_by: expected 'support' or 'objectness', got {self.rank_by!r}")
        if not 0.0 < self.support_iou <= 1.0:
            raise ValueError(f"encoder.support_iou: expected a value in (0, 1], got {self.support_iou}")
        if not 0.0 < self.box_vote_iou <= 1.0:
            raise ValueError(f"encoder.box_vote_iou: expected a value in (0, 1], got {self.box_vote_iou}")

    @property
    def num_seeds(self) -> int:
        """Seeds that vote for boxes: the first layer's centroids with propagation, else the last's."""
        return self.sa[0].centroids if self.propagate_mlp else self.sa[-1].centroids


@dataclass
class EncoderOutput:
    token_inputs: torch.Tensor       # (B, P, token_in_dim): per-proposal features (detector side)
    boxes: torch.Tensor              # (B, P, 7)
    scores: torch.Tensor             # (B, P) objectness probability, sorted descending
    labels: torch.Tensor             # (B, P) predicted nyu40 class
    seed_xyz: torch.Tensor           # (B, S, 3)
    seed_index: torch.Tensor         # (B, S) index of each seed in the (sampled) input points
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # raw per-seed predictions


def mlp(widths: list[int], last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2 or last_act:
            layers += [nn.LayerNorm(widths[i + 1]), nn.GELU()]
    return nn.Sequential(*layers)


def fourier_encode(x: torch.Tensor, bands: int) -> torch.Tensor:
    """(…, D) -> (…, D * (2 * bands + 1)): x, sin(2^k π x), cos(2^k π x) for k < bands."""
    freqs = (2.0 ** torch.arange(bands, device=x.device, dtype=x.dtype)) * math.pi
    ang = x[..., None] * freqs                             # (…, D, bands)
    enc = torch.cat([x[..., None], ang.sin(), ang.cos()], dim=-1)
    return enc.flatten(-2)


class SetAbstraction(nn.Module):
    """FPS centroids, ball-query neighbourhoods, a shared MLP on (relative xyz, features), max-pool."""

    def __init__(self, cfg: SetAbstractionConfig, in_dim: int):
        super().__init__()
        self.cfg = cfg
        self.mlp = mlp([in_dim + 3, *cfg.mlp])

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = furthest_point_sample(xyz, self.cfg.centroids)                 # (B, S)
        centers = gather_points(xyz, idx)                                     # (B, S, 3)
        nbr = ball_query(xyz, centers, self.cfg.radius, self.cfg.neighbours)  # (B, S, k)
        rel = (group_points(xyz, nbr) - centers[:, :, None]) / self.cfg.radius
        grouped = torch.cat([rel, group_points(feats, nbr)], dim=-1)          # (B, S, k, 3 + C)
        return centers, self.mlp(grouped).amax(dim=2), idx


class PointEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        in_dim = 3 + 1 + (3 if cfg.use_normals else 0)                      # rgb, height (+ normals)
        layers, dim = [], in_dim
        for sa in cfg.sa:
            layers.append(SetAbstraction(sa, dim))
            dim = sa.mlp[-1]
        self.sa = nn.ModuleList(layers)
        self.propagate = None
        if cfg.propagate_mlp:
            self.propagate = mlp([cfg.sa[0].mlp[-1] + dim, *cfg.propagate_mlp])
            dim = cfg.propagate_mlp[-1]
        self.feat_dim = dim
        # per seed: objectness 1, centre offset 3, log size 3, class logits
        self.head = mlp([dim, dim, dim], last_act=True)
        self.head_out = nn.Linear(dim, 1 + 3 + 3 + NUM_NYU40)
        pe_dim = 6 * (2 * cfg.fourier_bands + 1)
        self.token_in_dim = 2 * dim + NUM_NYU40 + 3 + pe_dim
        self.token_mlp = mlp([self.token_in_dim, cfg.token_dim, cfg.token_dim], last_act=False)

    DETECTOR_MODULES = ("sa", "propagate", "head", "head_out")

    def detector_parameters(self) -> list[nn.Parameter]:
        """Set abstraction (+ propagation) + proposal head: trained in the encoder pre-training
        stage, then frozen."""
        return [p for name in self.DETECTOR_MODULES if getattr(self, name) is not None
                for p in getattr(self, name).parameters()]

    def is_detector_key(self, state_key: str) -> bool:
        """Whether a state_dict key belongs to the detector side (parameters and buffers)."""
        return state_key.split(".", 1)[0] in self.DETECTOR_MODULES

    def tokens(self, token_inputs: torch.Tensor) -> torch.Tensor:
        """Scene tokens from the per-proposal features (the part that trains with the LLM)."""
        return self.token_mlp(token_inputs)

    # ---- input handling ---------------------------------------------------------------
    def prepare(self, cloud: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate one (N, 6|9) cloud and resample it to exactly num_points.

        Returns (points (num_points, C), index into the input). Raises ValueError on an empty,
        all-non-finite, wrongly shaped or oversized cloud; non-finite rows are dropped.
        """
        if cloud.ndim != 2 or cloud.shape[1] not in (6, 9):
            raise ValueError(f"scene cloud: expected shape (N, 6) or (N, 9) (xyz, rgb[, normals]), got {tuple(cloud.shape)}")
        if cloud.shape[0] > self.cfg.max_input_points:
            raise ValueError(f"scene cloud: {cloud.shape[0]} points exceed encoder.max_input_points "
                             f"({self.cfg.max_input_points}); downsample it first (e.g. voxel_downsample)")
        if self.cfg.use_normals and cloud.shape[1] != 9:
            raise ValueError("scene cloud: encoder.use_normals is set but the cloud has no normal columns")
        finite = torch.isfinite(cloud).all(dim=1)
        valid = torch.nonzero(finite).squeeze(1)
        if valid.numel() == 0:
            raise ValueError(f"scene cloud: no finite points (of {cloud.shape[0]})")
        g = torch.Generator().manual_seed(self.cfg.seed)
        n = self.cfg.num_points
        if valid.numel() >= n:
            pick = torch.randperm(valid.numel(), generator=g)[:n]
        else:
            pick = torch.cat([torch.arange(valid.numel()),
                              torch.randint(valid.numel(), (n - valid.numel(),), generator=g)])
        index = valid[pick.to(valid.device)]
        return cloud[index], index

    def _features(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xyz = pts[..., :3].contiguous()
        rgb = pts[..., 3:6] / 255.0 - 0.5
        floor = xyz[..., 2].quantile(0.01, dim=1, keepdim=True)
        height = (xyz[..., 2] - floor)[..., None]
        parts = [rgb, height]
        if self.cfg.use_normals:
            parts.append(pts[..., 6:9])
        return xyz, torch.cat(parts, dim=-1)

    # ---- forward ----------------------------------------------------------------------
    def forward(self, points: torch.Tensor) -> EncoderOutput:
        """points: (B, num_points, 6|9), already prepared (see `prepare`)."""
        xyz, feats = self._features(points)
        seed_xyz, seed_feat, seed_index = xyz, feats, None
        first = None
        for layer in self.sa:
            seed_xyz, seed_feat, idx = layer(seed_xyz, seed_feat)
            seed_index = idx if seed_index is None else torch.gather(seed_index, 1, idx)
            if first is None:                  # the first layer's centroids: the seeds with propagation
                first = (seed_xyz, seed_feat, seed_index)
        if self.propagate is not None:
            dist, nn_idx = three_nn(first[0], seed_xyz)
            weight = 1.0 / (dist + 1e-8)
            up = three_interpolate(seed_feat, nn_idx, weight / weight.sum(-1, keepdim=True))
            seed_feat = self.propagate(torch.cat([first[1], up], dim=-1))
            seed_xyz, seed_index = first[0], first[2]
        raw = self.head_out(self.head(seed_feat))
        head = {
            "objectness": raw[..., 0],
            "center": seed_xyz + raw[..., 1:4],
            "log_size": raw[..., 4:7].clamp(-5.0, 3.0),
            "class_logits": raw[..., 7:],
        }
        boxes_all = torch.cat([head["center"], head["log_size"].exp(),
                               torch.zeros_like(head["center"][..., :1])], dim=-1)  # (B, S, 7)
        seed_boxes, logits = boxes_all.detach(), head["objectness"].detach()
        seed_iou = torch.stack([box_iou_3d(seed_boxes[b], seed_boxes[b]) for b in range(seed_boxes.shape[0])])
        keep = self._nms(seed_iou, self._rank(seed_iou, logits))                     # (B, P)
        votes = self._vote_weights(torch.gather(seed_iou, 1, keep[..., None].expand(-1, -1, seed_iou.shape[-1])),
                                   logits, keep)                                      # (B, P, S)
        boxes = torch.cat([votes @ seed_boxes[..., :3], (votes @ seed_boxes[..., 3:6].log()).exp(),
                           torch.gather(seed_boxes[..., 6:], 1, keep[..., None])], dim=-1)
        scores = torch.gather(head["objectness"], 1, keep).sigmoid()
        seed_cls = head["class_logits"].softmax(-1)
        cls_prob = (votes @ seed_cls if self.cfg.vote_classes
                    else torch.gather(seed_cls, 1, keep[..., None].expand(-1, -1, NUM_NYU40)))
        own = torch.gather(seed_feat, 1, keep[..., None].expand(-1, -1, seed_feat.shape[-1]))
        inside = self._inside(seed_xyz, boxes.detach())                             # (B, P, S)
        pooled = seed_feat[:, None].masked_fill(~inside[..., None], -1e4).amax(dim=2)
        pooled = torch.where(inside.any(-1, keepdim=True), pooled, own)
        colour = self._mean_colour(points, boxes.detach())                          # (B, P, 3)
        geo = torch.cat([boxes[..., :3], boxes[..., 3:6].log()], dim=-1)
        token_in = torch.cat([own, pooled, cls_prob, colour, fourier_encode(geo, self.cfg.fourier_bands)], -1)
        return EncoderOutput(
            token_inputs=token_in, boxes=boxes, scores=scores,
            labels=cls_prob.argmax(-1), seed_xyz=seed_xyz, seed_index=seed_index, head=head,
        )

    def _rank(self, seed_iou: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, S) NMS order keys from the seeds' pairwise box IoU (B, S, S) and objectness logits."""
        if self.cfg.rank_by == "objectness":
            return logits
        prob = logits.sigmoid()
        return prob * ((seed_iou >= self.cfg.support_iou).to(logits.dtype) @ prob[..., None])[..., 0]

    def _nms(self, seed_iou: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """Greedy NMS per scene over the seeds' pairwise box IoU (B, S, S), highest rank first;
        returns exactly P seed indices (suppressed ones fill up the tail, best first, when fewer
        than P boxes survive)."""
        P = self.cfg.num_proposals
        out = []
        for b in range(seed_iou.shape[0]):
            order = torch.argsort(rank[b], descending=True)
            # the greedy loop runs on the host: one transfer instead of a device sync per seed
            over = (seed_iou[b][order][:, order] > self.cfg.nms_iou).cpu().numpy()
            suppressed = np.zeros(len(order), dtype=bool)
            kept: list[int] = []
            for i in range(len(order)):
                if suppressed[i]:
                    continue
                kept.append(i)
                if len(kept) == P:
                    break
                suppressed |= over[i]
            if len(kept) < P:
                taken = set(kept)
                rest = [i for i in range(len(order)) if i not in taken]
                kept += rest[: P - len(kept)]
            out.append(order[torch.tensor(kept, device=seed_iou.device)])
        return torch.stack(out)

    def _vote_weights(self, kept_iou: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Box voting weights (B, P, S): each kept seed's proposal is the objectness-weighted mean of
        the seeds whose boxes overlap its box at IoU >= box_vote_iou (its own seed included);
        kept_iou (B, P, S) is the kept boxes' IoU with every seed box. box_vote_iou 1.0: its own seed."""
        if self.cfg.box_vote_iou >= 1.0:
            return F.one_hot(keep, logits.shape[-1]).to(logits.dtype)
        w = (kept_iou >= self.cfg.box_vote_iou).to(logits.dtype) * logits.sigmoid()[:, None]
        return w / w.sum(-1, keepdim=True).clamp(min=1e-12)

    @staticmethod
    def _inside(xyz: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return torch.stack([points_in_boxes(xyz[b], boxes[b]).T for b in range(xyz.shape[0])])

    def _mean_colour(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        inside = self._inside(points[..., :3], boxes).to(points.dtype)            # (B, P, N)
        rgb = points[..., 3:6] / 255.0
        count = inside.sum(-1, keepdim=True)
        mean = inside @ rgb / count.clamp(min=1)
        return torch.where(count > 0, mean, torch.full_like(mean, 0.5)) - 0.5


def seed_targets(seed_index: torch.Tensor, instance_labels: torch.Tensor, semantic_labels: torch.Tensor,
                 gt_boxes: list[torch.Tensor], gt_instance_ids: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detection targets per seed from ScanNet-format labels of the *prepared* points.

    instance_labels / semantic_labels: (B, N) of the prepared points. gt_boxes[b]: (K, 7) boxes
    whose instance label values are gt_instance_ids[b] (K,). A seed is positive when it lies
    on an annotated, non-structural instance that has a box.
    """
    B, S = seed_index.shape
    dev = seed_index.device
    pos = torch.zeros(B, S, dtype=torch.bool, device=dev)
    center = torch.zeros(B, S, 3, device=dev)
    log_size = torch.zeros(B, S, 3, device=dev)
    cls = torch.zeros(B, S, dtype=torch.long, device=dev)
    inst = torch.gather(instance_labels.to(dev), 1, seed_index)
    sem = torch.gather(semantic_labels.to(dev), 1, seed_index).long()
    structure = torch.isin(sem, torch.tensor(STRUCTURE_NYU40_IDS, device=dev))
    for b in range(B):
        ids = gt_instance_ids[b].to(dev)
        if ids.numel() == 0:
            continue
        match = inst[b][:, None] == ids[None]                      # (S, K)
        pos[b] = match.any(1) & (inst[b] != 0) & ~structure[b]
        k = match.to(torch.uint8).argmax(1)                         # the matching box (ids are unique)
        box = gt_boxes[b].to(dev)[k]
        center[b] = torch.where(pos[b, :, None], box[:, :3], 0.0)
        log_size[b] = torch.where(pos[b, :, None], box[:, 3:6].clamp(min=1e-3).log(), 0.0)
        cls[b] = torch.where(pos[b], sem[b], 0)
    return {"positive": pos, "center": center, "log_size": log_size, "class": cls}


def detection_loss(out: EncoderOutput, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Objectness BCE over all seeds + centre/size L1 and class CE over positive seeds."""
    head, pos = out.head, targets["positive"]
    obj = F.binary_cross_entropy_with_logits(head["objectness"], pos.float())
    if pos.any():
        center = F.smooth_l1_loss(head["center"][pos], targets["center"][pos], beta=0.1)
        size = F.smooth_l1_loss(head["log_size"][pos], targets["log_size"][pos], beta=0.1)
        cls = F.cross_entropy(head["class_logits"][pos], targets["class"][pos])
    else:
        center = size = cls = head["objectness"].sum() * 0.0
    total = obj + center + size + 0.5 * cls
    return {"loss": total, "objectness": obj, "center": center, "size": size, "class": cls}
