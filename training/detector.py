"""Stage 0: pre-train the point encoder's proposal detector on ScanNet-format boxes.

    r1 train detector --config config/train/nano.yaml --data data/synth --out runs/nano/detector

3D-R1 starts from a pretrained 3D scene encoder; here the encoder's set-abstraction layers
and per-seed box head (r1_core.model.encoder) learn to propose the annotated objects. After
this stage the detector side is frozen: SFT and GRPO train the token MLP, projector, view
encoder and LoRA on top of fixed proposals (so a training target can name proposal k).
Augmentation: rotations about z by multiples of 90° (boxes stay axis-aligned), mirror flips,
small translations and colour jitter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from r1_core.config import format_config
from r1_core.data.scene import Scene
from r1_core.geometry.boxes import box_iou_3d
from r1_core.model.encoder import EncoderConfig, PointEncoder, detection_loss, seed_targets
from training.common import MetricLogger, OptimConfig, make_optimizer, seed_everything

ENCODER_FILE = "encoder_pretrained.safetensors"


@dataclass
class DetectorTrainConfig:
    steps: int = 2000
    batch_size: int = 8
    seed: int = 0
    log_every: int = 20
    eval_every: int = 500
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-4, warmup_steps=50))
    rotate90: bool = True
    flip: bool = True
    translate_m: float = 0.5
    color_jitter: float = 0.1


def augment(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
            cfg: DetectorTrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by k·90° about z, flip, translate, jitter colour; boxes (K, 7) follow."""
    pts, bx = points.copy(), boxes.copy()
    if cfg.rotate90:
        k = int(rng.integers(4))
        for _ in range(k):  # (x, y) -> (-y, x); sizes swap
            pts[:, [0, 1]] = np.stack([-pts[:, 1], pts[:, 0]], 1)
            bx[:, [0, 1]] = np.stack([-bx[:, 1], bx[:, 0]], 1)
            bx[:, [3, 4]] = bx[:, [4, 3]]
    if cfg.flip:
        for axis in (0, 1):
            if rng.random() < 0.5:
                pts[:, axis] *= -1
                bx[:, axis] *= -1
    shift = rng.uniform(-cfg.translate_m, cfg.translate_m, size=3) * np.array([1, 1, 0.1])
    pts[:, :3] += shift
    bx[:, :3] += shift
    if cfg.color_jitter > 0:
        gain = 1 + rng.uniform(-cfg.color_jitter, cfg.color_jitter, size=3)
        pts[:, 3:6] = np.clip(pts[:, 3:6] * gain, 0, 255)
    return pts.astype(np.float32), bx.astype(np.float32)


def _scene_batch(enc: PointEncoder, scenes: Sequence[Scene], rng: np.random.Generator | None,
                 cfg: DetectorTrainConfig | None, device) -> tuple:
    pts_b, inst_b, sem_b, boxes_b, ids_b = [], [], [], [], []
    for sc in scenes:
        objs = sc.annotated_objects()
        boxes = np.stack([o.box for o in objs]) if objs else np.zeros((0, 7), np.float32)
        pts = sc.points
        if rng is not None:
            pts, boxes = augment(pts, boxes, rng, cfg)
        prepared, index = enc.prepare(torch.from_numpy(pts))
        pts_b.append(prepared)
        inst_b.append(torch.from_numpy(sc.instance_labels)[index])
        sem_b.append(torch.from_numpy(sc.semantic_labels)[index])
        boxes_b.append(torch.from_numpy(boxes).to(device))
        ids_b.append(torch.tensor([o.object_id + 1 for o in objs], dtype=torch.long))
    return (torch.stack(pts_b).to(device), torch.stack(inst_b).to(device), torch.stack(sem_b).to(device),
            boxes_b, ids_b)


@torch.no_grad()
def proposal_quality(enc: PointEncoder, scenes: Sequence[Scene], device="cpu", batch_size: int = 4) -> dict[str, float]:
    """How well the P proposals cover the annotated (non-structural) objects.

    recall@0.25 / recall@0.5: share of objects some proposal overlaps at that IoU; per scene, on
    average: false_positives (proposals overlapping no object at IoU 0.25) and duplicates (further
    proposals whose best-overlapping object an earlier, higher-ranked proposal already matched);
    class_accuracy: share of the proposals matching an object whose predicted class is its class.
    """
    enc.eval()
    hit25 = hit50 = total = matched = right_class = false_pos = dups = n_scenes = 0
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i:i + batch_size]
        pts, _, _, boxes, _ = _scene_batch(enc, chunk, None, None, device)
        out = enc(pts)
        for b, (sc, gt) in enumerate(zip(chunk, boxes)):
            n_scenes += 1
            if len(gt) == 0:
                false_pos += out.boxes.shape[1]
                continue
            iou = box_iou_3d(gt, out.boxes[b])                               # (K, P)
            best = iou.amax(dim=1)
            hit25 += int((best >= 0.25).sum())
            hit50 += int((best >= 0.5).sum())
            total += len(gt)
            classes = torch.tensor([o.nyu40_id for o in sc.annotated_objects()], device=iou.device)
            seen: set[int] = set()
            for p, (ov, k) in enumerate(zip(*iou.max(dim=0))):               # proposals in rank order
                if ov < 0.25:
                    false_pos += 1
                    continue
                dups += int(int(k) in seen)
                seen.add(int(k))
                matched += 1
                right_class += int(out.labels[b, p] == classes[k])
    enc.train()
    return {"recall@0.25": hit25 / max(1, total), "recall@0.5": hit50 / max(1, total), "objects": float(total),
            "false_positives": false_pos / max(1, n_scenes), "duplicates": dups / max(1, n_scenes),
            "class_accuracy": right_class / max(1, matched)}


def train_detector(enc_cfg: EncoderConfig, cfg: DetectorTrainConfig, train_scenes: Callable[[], Sequence[Scene]],
                   val_scenes: Sequence[Scene], out_dir: str | Path, device: str = "cpu",
                   progress: bool = True) -> tuple[PointEncoder, dict[str, float]]:
    """Train the detector side of a PointEncoder; writes out_dir/encoder_pretrained.safetensors."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(format_config(cfg))
    seed_everything(cfg.seed)
    enc = PointEncoder(enc_cfg).to(device)
    opt, sched = make_optimizer(enc.detector_parameters(), cfg.optim, cfg.steps)
    scenes = list(train_scenes())
    if not scenes:
        raise ValueError("detector training: no training scenes")
    rng = np.random.default_rng(cfg.seed)
    log = MetricLogger(out_dir)
    bar = tqdm(range(cfg.steps), desc="detector", disable=not progress)
    metrics: dict[str, float] = {}
    for step in bar:
        pick = rng.choice(len(scenes), size=min(cfg.batch_size, len(scenes)), replace=False)
        pts, inst, sem, boxes, ids = _scene_batch(enc, [scenes[i] for i in pick], rng, cfg, device)
        out = enc(pts)
        losses = detection_loss(out, seed_targets(out.seed_index, inst, sem, boxes, ids))
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(enc.detector_parameters(), cfg.optim.max_grad_norm)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            vals = {k: float(v.detach()) for k, v in losses.items()}
            log.log(step, {**vals, "lr": sched.get_last_lr()[0]}, stage="detector")
            bar.set_postfix(loss=f"{vals['loss']:.3f}")
        if val_scenes and ((step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1):
            metrics = proposal_quality(enc, val_scenes, device)
            log.log(step, metrics, stage="detector_val")
    save_file({k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}, out_dir / ENCODER_FILE)
    log.close()
    return enc, metrics


def load_pretrained_encoder(enc: PointEncoder, path: str | Path) -> None:
    """Load a stage-0 encoder into `enc` (shapes must match: same EncoderConfig). `path` is a
    stage-0 output (dir or file) or an r1 checkpoint. From a checkpoint only the detector side
    is taken (it is frozen after stage 0, so e.g. the shipped R1-nano rebuilds the exact pack it
    was trained on); the token MLP, which SFT trains, keeps `enc`'s own initialisation."""
    from r1_core.model.checkpoint import META_FILE, PARTS_FILE

    path = Path(path)
    if path.is_dir() and (path / META_FILE).is_file():           # an r1 checkpoint: its detector side
        state = {k[len("encoder."):]: v for k, v in load_file(path / PARTS_FILE).items()
                 if k.startswith("encoder.") and enc.is_detector_key(k[len("encoder."):])}
        if not state:
            raise ValueError(f"{path}: an r1 checkpoint without encoder weights")
        state = {**{k: v for k, v in enc.state_dict().items() if not enc.is_detector_key(k)}, **state}
    else:
        if path.is_dir():
            path = path / ENCODER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"pre-trained encoder not found: {path} (run `r1 train detector` first)")
        state = load_file(path)
    own = enc.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if bad or set(state) - set(own):
        raise ValueError(f"{path}: does not fit this encoder config (mismatched {bad[:4]}, "
                         f"unexpected {sorted(set(state) - set(own))[:4]})")
    enc.load_state_dict(state)
