"""Request relevance of keyframes: which objects a request is about, and how well each keyframe
shows them.

    targets = resolve_targets(query, scene, snap, cfg)        # weighted proposal boxes
    enc = ProposalRelevance(cfg)                              # default, offline
    rel = enc.relevance(query, targets, snap)                 # (N,) in [0, 1]
    clip = ClipRelevance("/models/clip-vit-b32")              # optional: CLIP / SigLIP from a local dir
    rel = clip.relevance(query, targets, snap)

`resolve_targets` turns the request into weighted boxes using the scene understanding the
model already has (`SceneEncoding`: proposal boxes, scores, NYU40 labels): the object phrases
of the text (vocab.parse_mentions) select proposals by class; a colour word re-weights them by
the fraction of their map voxels of that colour; a superlative ("the largest box") by volume;
a near/far relation to the next phrase ("next to the bed", "farthest from the door") by the gap
to that phrase's proposals (exp(-gap / relation_scale_m), or its mirror for "far"). The first
phrase is the head (weight 1), the others context (`context_weight`); an object_caption
request's `target_box` is the head.

`ProposalRelevance` scores a keyframe by the weighted fraction of each target's extent it
sees: the target's observed surface (the bank's voxel centres inside its box, or a grid on the
box surface where the map has seen none of it) is projected into the keyframe, and a point
counts when it lands in the image and the keyframe's depth there is not in front of it
(occlusion, tolerance `occlusion_tol_m`).

`ClipRelevance` is an image-text relevance from a CLIP or SigLIP model in a local directory
(transformers CLIPModel / SiglipModel, loaded with local_files_only): cosine similarity of the
request text with each keyframe image, min-max normalised over the bank. Image embeddings are
cached per keyframe id.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from r1_core.views.bank import BankSnapshot
from r1_core.views.vocab import COLOR_WORDS, parse_mentions, relation_between

if TYPE_CHECKING:
    from r1_core.model.r1model import SceneEncoding
    from r1_core.query import SceneQuery
    from r1_core.views.select import SelectorConfig


@dataclass
class Targets:
    """The objects a request is about: boxes (R, 7) in the map frame with weights (R,) summing
    to 1 (or R = 0: the request names nothing the scene understanding knows)."""

    boxes: np.ndarray
    weights: np.ndarray
    proposal_index: np.ndarray     # (R,) index into the SceneEncoding, -1 for a query target_box
    phrases: list[str]             # the phrase each box came from
    voxels: list[np.ndarray] = field(default_factory=list)   # (R,) the bank voxels of each target object

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _request_mentions(query: "SceneQuery"):
    main = parse_mentions(query.text or "")
    hist = [m for turn in reversed(query.history) for m in parse_mentions(turn)]
    return main, hist


def resolve_targets(query: "SceneQuery", scene: "SceneEncoding", snap: BankSnapshot,
                    cfg: "SelectorConfig") -> Targets:
    """Weighted target boxes of a request (see the module docstring)."""
    boxes = np.asarray(scene.boxes, np.float64).reshape(-1, 7)
    labels = np.asarray(scene.labels).reshape(-1)
    scores = np.asarray(scene.scores, np.float64).reshape(-1)
    if not (labels.shape[0] == scores.shape[0] == boxes.shape[0]):
        raise ValueError(f"scene: boxes {boxes.shape}, scores {scores.shape} and labels {labels.shape} "
                         "must have one row per proposal")
    vox_cache: dict[int, np.ndarray] = {}

    def voxels(idx) -> list[np.ndarray]:
        """Object voxels of proposals `idx`, computed once per request."""
        todo = [int(i) for i in idx if int(i) not in vox_cache]
        if todo:
            vox_cache.update(zip(todo, _object_voxels(snap, boxes[todo])))
        return [vox_cache[int(i)] for i in idx]

    out_b, out_w, out_i, out_p = [], [], [], []
    head_taken = False
    if query.task == "object_caption" and query.target_box is not None:
        tb = np.asarray(query.target_box, np.float64)
        vox_cache[-1] = _object_voxels(snap, tb[None])[0]
        out_b.append(tb)
        out_w.append(1.0)
        out_i.append(-1)
        out_p.append("target_box")
        head_taken = True
    main, hist = _request_mentions(query)
    mentions = [(m, True) for m in main] + [(m, False) for m in hist]

    def candidates(m) -> tuple[np.ndarray, np.ndarray]:
        """Proposals of the phrase's classes and their weights from score and colour."""
        cand = np.nonzero(np.isin(labels, m.nyu40_ids) & (scores >= cfg.min_proposal_score))[0]
        w = scores[cand].copy()
        if m.color is not None and cand.size:
            col = COLOR_WORDS.index(m.color)
            frac = [float((snap.color_indices(v) == col).mean()) if v.size else 0.0 for v in voxels(cand)]
            w *= cfg.color_floor + np.asarray(frac)
        return cand, w

    for n_m, (m, from_text) in enumerate(mentions):
        cand, w = candidates(m)
        if cand.size == 0:
            continue
        if cand.size > 1 and m.superlative:
            vol = np.prod(np.maximum(boxes[cand, 3:6], 1e-3), 1)
            w *= (vol / vol.max()) ** 4 if m.superlative > 0 else (vol.min() / vol) ** 4
        if cand.size > 1 and from_text and n_m + 1 < len(main):
            # a relation to the next phrase ("next to the bed", "farthest from the door")
            rel = relation_between(query.text, m, main[n_m + 1])
            a_cand, a_w = candidates(main[n_m + 1])
            if rel is not None and a_cand.size:
                anchors = boxes[a_cand[a_w >= 0.5 * a_w.max()]]
                gap = np.array([_box_gap(boxes[j], anchors).min() for j in cand])
                s_ = cfg.relation_scale_m
                w *= np.exp(-gap / s_) if rel == "near" else np.exp((gap - gap.max()) / s_)
        w /= w.sum()
        if not head_taken and from_text:
            mw, head_taken = 1.0, True
        else:
            mw = cfg.context_weight * (1.0 if from_text else cfg.history_weight)
        for j, wj in zip(cand, w):
            out_b.append(boxes[j])
            out_w.append(mw * wj)
            out_i.append(int(j))
            out_p.append(m.phrase)
    if not out_b:
        return Targets(np.zeros((0, 7)), np.zeros(0), np.zeros(0, np.int64), [], [])
    # merge repeated proposals (a class named twice), keep the strongest targets
    merged: dict[int, int] = {}
    keep_b, keep_w, keep_i, keep_p = [], [], [], []
    for b, w_, i, p in zip(out_b, out_w, out_i, out_p):
        if i >= 0 and i in merged:
            keep_w[merged[i]] += w_
            continue
        merged[i] = len(keep_b)
        keep_b.append(b); keep_w.append(w_); keep_i.append(i); keep_p.append(p)
    wts = np.asarray(keep_w)
    order = np.argsort(-wts, kind="stable")[: cfg.max_targets]
    idx = np.asarray(keep_i)[order]
    bx = np.stack(keep_b)[order]
    vox = voxels(idx)
    return Targets(bx, wts[order] / wts[order].sum(), idx, [keep_p[i] for i in order], vox)


def _box_gap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Gap (m) between the axis-aligned extents of `box` and each of `others` (0 when touching)."""
    d = np.abs(others[:, :3] - box[:3]) - (others[:, 3:6] + box[3:6]) / 2
    return np.linalg.norm(np.maximum(d, 0.0), axis=1)


def _object_voxels(snap: BankSnapshot, boxes: np.ndarray) -> list[np.ndarray]:
    """Live voxel ids of each box's object: voxels whose centre lies in the box grown by half a
    voxel (a surface voxel's centre can sit up to that far outside the surface: the top of a bed
    at z = 0.61 has its voxel centres at 0.625), less the bottom layer when anything else is left
    (that layer is mostly the floor or the supporting surface)."""
    grown = np.asarray(boxes, np.float64).reshape(-1, 7).copy()
    grown[:, 3:6] += snap.voxel_size
    out = []
    for b, ids in zip(grown, snap.voxels_in_boxes(grown)):
        keep = snap.centers[ids, 2] > (b[2] - b[5] / 2) + 1.25 * snap.voxel_size
        out.append(ids[keep] if keep.any() else ids)
    return out


def box_surface_points(box: np.ndarray, n: int = 3) -> np.ndarray:
    """An n×n×n grid on the box, without its interior points: (n^3 - (n-2)^3, 3) map frame."""
    g = np.linspace(-0.5, 0.5, n)
    local = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    local = local[np.abs(local).max(1) >= 0.5 - 1e-9] * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ R.T + box[:3]


def target_points(snap: BankSnapshot, targets: Targets, max_points: int, min_points: int) -> list[np.ndarray]:
    """Per target the points that stand for its extent: its observed voxel centres (evenly
    subsampled to `max_points`), or the box surface grid when fewer than `min_points`."""
    out = []
    for b, ids in zip(targets.boxes, targets.voxels):
        if ids.size >= min_points:
            if ids.size > max_points:
                ids = ids[np.linspace(0, ids.size - 1, max_points).round().astype(np.int64)]
            out.append(snap.centers[ids].astype(np.float64))
        else:
            out.append(box_surface_points(b))
    return out


def _projection_cache(snap: BankSnapshot) -> dict:
    """Per-snapshot arrays for projecting into every keyframe at once (built at first use)."""
    c = snap._cache.get("proj")
    if c is None:
        kfs = snap.keyframes
        N = len(kfs)
        Rt = np.stack([k.T_map_optical[:3, :3].T for k in kfs]).astype(np.float32) if N else np.zeros((0, 3, 3), np.float32)
        t = np.stack([-k.T_map_optical[:3, :3].T @ k.T_map_optical[:3, 3] for k in kfs]).astype(np.float32) \
            if N else np.zeros((0, 3), np.float32)
        Ks = np.stack([k.K for k in kfs]).astype(np.float32) if N else np.zeros((0, 3, 3), np.float32)
        hw = np.array([k.depth_mm.shape for k in kfs], np.int64).reshape(-1, 2)
        # all depth images in one flat array: one gather serves every keyframe
        offs = np.concatenate([[0], np.cumsum(hw[:, 0] * hw[:, 1])]).astype(np.int64)
        flat = np.concatenate([k.depth_mm.reshape(-1) for k in kfs]) if N else np.zeros(0, np.uint16)
        c = {"Rt": Rt, "t": t, "K": Ks, "h": hw[:, 0:1].astype(np.float32), "w": hw[:, 1:2].astype(np.float32),
             "wi": hw[:, 1:2], "offs": offs[:-1, None], "flat": flat}
        snap._cache["proj"] = c
    return c


def visible_points(snap: BankSnapshot, points: np.ndarray, tol_m: float, min_depth_m: float,
                   keyframes: np.ndarray | None = None) -> np.ndarray:
    """bool (N, M): keyframe n sees point m (M, 3): it projects into the image, in front of the
    camera, and the keyframe's depth there is not in front of it by more than `tol_m`.
    float32 arithmetic; the pixel is the nearest one (round half up). With `keyframes` (indices)
    only those rows are computed, the others are False."""
    N, M = len(snap), points.shape[0]
    out = np.zeros((N, M), bool)
    if N == 0 or M == 0:
        return out
    c = _projection_cache(snap)
    sel = np.arange(N) if keyframes is None else np.asarray(keyframes, np.int64)
    if sel.size == 0:
        return out
    cam = np.matmul(c["Rt"][sel], points.T.astype(np.float32)) + c["t"][sel, :, None]     # (n, 3, M)
    x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
    inv = 1.0 / np.maximum(z, np.float32(min_depth_m))
    K = c["K"][sel]
    uf = (K[:, 0, 0, None] * x + K[:, 0, 1, None] * y) * inv + K[:, 0, 2, None]
    vf = K[:, 1, 1, None] * y * inv + K[:, 1, 2, None]
    ok = (z > min_depth_m) & (uf >= -0.5) & (vf >= -0.5) & (uf < c["w"][sel] - 0.5) & (vf < c["h"][sel] - 0.5)
    ui = (np.where(ok, uf, 0) + 0.5).astype(np.int64)
    vi = (np.where(ok, vf, 0) + 0.5).astype(np.int64)
    d = c["flat"][np.where(ok, c["offs"][sel] + vi * c["wi"][sel] + ui, 0)]
    out[sel] = ok & (d > 0) & (d >= (z - np.float32(tol_m)) * np.float32(1000.0))
    return out


def frustum_candidates(snap: BankSnapshot, centers: np.ndarray, radii: np.ndarray, min_depth_m: float) -> np.ndarray:
    """Indices of keyframes whose view frustum may contain any of the spheres (R, 3), (R,): a
    conservative test that spares projecting points into keyframes looking elsewhere."""
    N = len(snap)
    if N == 0 or len(centers) == 0:
        return np.zeros(0, np.int64)
    c = _projection_cache(snap)
    cam = np.matmul(c["Rt"], centers.T.astype(np.float32)) + c["t"][:, :, None]          # (N, 3, R)
    x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
    K = c["K"]
    # half-angle tangents of the image edges (left/right, top/bottom) per keyframe
    tl = (K[:, 0, 2, None] + 0.5) / K[:, 0, 0, None]
    tr = (c["w"] - 0.5 - K[:, 0, 2, None]) / K[:, 0, 0, None]
    tt = (K[:, 1, 2, None] + 0.5) / K[:, 1, 1, None]
    tb = (c["h"] - 0.5 - K[:, 1, 2, None]) / K[:, 1, 1, None]
    r = radii[None, :].astype(np.float32)
    ok = ((z + r > min_depth_m) & (x <= z * tr + r * np.sqrt(1 + tr * tr)) & (-x <= z * tl + r * np.sqrt(1 + tl * tl))
          & (y <= z * tb + r * np.sqrt(1 + tb * tb)) & (-y <= z * tt + r * np.sqrt(1 + tt * tt)))
    return np.nonzero(ok.any(1))[0]


def visible_fraction(snap: BankSnapshot, points: np.ndarray, tol_m: float, min_depth_m: float) -> np.ndarray:
    """(N,) fraction of `points` (M, 3) each keyframe sees (visible_points)."""
    if points.shape[0] == 0:
        return np.zeros(len(snap))
    return visible_points(snap, points, tol_m, min_depth_m).mean(1)


class RelevanceEncoder(Protocol):
    """One relevance term: (N,) in [0, 1] for the keyframes of `snap`, higher = more relevant."""

    name: str

    def relevance(self, query: "SceneQuery", targets: Targets, snap: BankSnapshot) -> np.ndarray: ...


class ProposalRelevance:
    """Default, offline: weighted visible fraction of the request's target objects."""

    name = "proposals"

    def __init__(self, cfg: "SelectorConfig"):
        self.cfg = cfg

    def per_target(self, targets: Targets, snap: BankSnapshot) -> np.ndarray:
        """(N, R) visible fraction of each target in each keyframe."""
        if len(targets) == 0:
            return np.zeros((len(snap), 0))
        pts = target_points(snap, targets, self.cfg.max_points_per_target, self.cfg.min_points_per_target)
        centers = np.stack([p.mean(0) for p in pts])
        radii = np.array([np.linalg.norm(p - c, axis=1).max() for p, c in zip(pts, centers)]) + 1e-3
        cand = frustum_candidates(snap, centers, radii, self.cfg.min_depth_m)
        vis = visible_points(snap, np.concatenate(pts), self.cfg.occlusion_tol_m, self.cfg.min_depth_m, cand)
        starts = np.concatenate([[0], np.cumsum([len(p) for p in pts])[:-1]])
        return np.add.reduceat(vis, starts, axis=1) / np.array([len(p) for p in pts])

    def relevance(self, query: "SceneQuery", targets: Targets, snap: BankSnapshot) -> np.ndarray:
        if len(targets) == 0:
            return np.zeros(len(snap))
        return self.per_target(targets, snap) @ targets.weights


# ---- CLIP / SigLIP ----------------------------------------------------------------------------------
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class ClipRelevance:
    """Image-text relevance from a local CLIP or SigLIP checkpoint (hub layout: config.json,
    weights, tokenizer files, optionally preprocessor_config.json for mean/std)."""

    name = "clip"

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ValueError(f"clip_model_dir: no config.json in {path} (expected a local CLIP/SigLIP "
                             "checkpoint directory; nothing is downloaded)")
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        kinds = {"clip": CLIPModel, "siglip": SiglipModel}
        if cfg.model_type not in kinds:
            raise ValueError(f"clip_model_dir {path}: model_type {cfg.model_type!r}; choose one of {list(kinds)}")
        self.kind = cfg.model_type
        self.model = kinds[cfg.model_type].from_pretrained(path, local_files_only=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.size = int(cfg.vision_config.image_size)
        self.max_len = int(cfg.text_config.max_position_embeddings)
        mean, std = (_CLIP_MEAN, _CLIP_STD) if self.kind == "clip" else ((0.5,) * 3, (0.5,) * 3)
        pp = path / "preprocessor_config.json"
        if pp.is_file():
            meta = json.loads(pp.read_text())
            mean, std = meta.get("image_mean", mean), meta.get("image_std", std)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def _pixels(self, images: list[np.ndarray]):
        S = self.size
        out = []
        for im in images:
            h, w = im.shape[:2]
            if self.kind == "clip":          # shortest side to S, centre crop (CLIP's recipe)
                s = S / min(h, w)
                im = cv2.resize(im, (max(S, round(w * s)), max(S, round(h * s))), interpolation=cv2.INTER_CUBIC)
                y0, x0 = (im.shape[0] - S) // 2, (im.shape[1] - S) // 2
                im = im[y0:y0 + S, x0:x0 + S]
            else:                            # SigLIP: squash to S x S
                im = cv2.resize(im, (S, S), interpolation=cv2.INTER_CUBIC)
            out.append((im.astype(np.float32) / 255.0 - self.mean) / self.std)
        return self._torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(self.device)

    @staticmethod
    def _embeds(out):
        t = out if hasattr(out, "shape") else out.pooler_output
        return t / t.norm(dim=-1, keepdim=True)

    def image_embeddings(self, snap: BankSnapshot) -> np.ndarray:
        """(N, D) unit image embeddings, computed once per keyframe id."""
        with self._lock:
            todo = [k for k in snap.keyframes if k.keyframe_id not in self._cache]
            with self._torch.no_grad():
                for i in range(0, len(todo), self.batch_size):
                    chunk = todo[i:i + self.batch_size]
                    e = self._embeds(self.model.get_image_features(pixel_values=self._pixels([k.color for k in chunk])))
                    for k, row in zip(chunk, e.float().cpu().numpy()):
                        self._cache[k.keyframe_id] = row
            live = {k.keyframe_id for k in snap.keyframes}
            for kid in [k for k in self._cache if k not in live]:
                del self._cache[kid]
            return np.stack([self._cache[k.keyframe_id] for k in snap.keyframes]) if snap.keyframes else np.zeros((0, 1))

    def text_embedding(self, text: str) -> np.ndarray:
        padding = "max_length" if self.kind == "siglip" else True
        tok = self.tokenizer([text], padding=padding, truncation=True, max_length=self.max_len, return_tensors="pt")
        with self._torch.no_grad():
            e = self._embeds(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device)))
        return e[0].float().cpu().numpy()

    def relevance(self, query: "SceneQuery", targets: Targets, snap: BankSnapshot) -> np.ndarray:
        text = query.text.strip() or " ".join(targets.phrases)
        if len(snap) == 0 or not text:
            return np.zeros(len(snap))
        sim = self.image_embeddings(snap) @ self.text_embedding(text)
        lo, hi = float(sim.min()), float(sim.max())
        return (sim - lo) / (hi - lo) if hi > lo else np.zeros(len(snap))
