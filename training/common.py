"""Shared training plumbing: seeding, optimiser/scheduler, metric logging (JSONL + TensorBoard),
resumable training state.

    logger = MetricLogger(out_dir)            # out_dir/metrics.jsonl and out_dir/tb/
    logger.log(step, {"loss": 0.5})
    save_state(out_dir / "state", step, optimizer, scheduler)  # next to the model checkpoint
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig, total_steps: int):
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))

    def schedule(step: int) -> float:  # linear warm-up, then cosine to 10 %
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        t = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


class MetricLogger:
    """Append-only JSONL metrics plus TensorBoard scalars (main process only)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out_dir) / "tb"))
        self.t0 = time.time()

    def log(self, step: int, values: dict[str, float], stage: str = "") -> None:
        if not self.enabled:
            return
        rec = {"step": step, "time_s": round(time.time() - self.t0, 3), **({"stage": stage} if stage else {}),
               **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{stage}/{k}" if stage else k, float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(out_dir: str | Path) -> list[dict]:
    p = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


def save_state(path: str | Path, step: int, optimizer, scheduler, extra: dict | None = None) -> None:
    """Optimiser, scheduler, RNG states and the step, written atomically (for --resume)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},   # this process's device
        "extra": extra or {},
    }, tmp)
    os.replace(tmp, path)


def read_state(path: str | Path) -> dict:
    """A `save_state` file: step, optimiser, scheduler, rng and extra."""
    return torch.load(path, weights_only=False, map_location="cpu")   # the optimiser moves it to its params


def restore_state(state: dict, optimizer, scheduler) -> int:
    """Put a `read_state` dict's optimiser, scheduler and RNG states back; returns its step."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    return int(state["step"])
