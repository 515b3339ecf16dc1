"""Training recipes: one YAML per recipe (config/train/*.yaml) with a section per stage.

    recipe = load_recipe("config/train/nano.yaml", overrides={"sft.steps": 10})
    recipe.model / recipe.detector / recipe.pack / recipe.sft / recipe.grpo

The resolved recipe is printed at the start of every stage and saved next to its outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from r1_core.config import load_config
from r1_core.model.r1model import ModelConfig
from training.common import OptimConfig
from training.detector import DetectorTrainConfig
from training.pack import PackConfig


PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}   # ours -> accelerate's names


def accelerate_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision: unknown {name!r}; choose one of {list(PRECISIONS)}")
    return PRECISIONS[name]


@dataclass
class SFTConfig:
    steps: int = 1000
    batch_size: int = 8              # per device
    grad_accum: int = 1
    seed: int = 0
    views: str = "dynamic"           # dynamic | uniform | random | none
    num_views: int = 4
    tasks: tuple[str, ...] = ()      # empty: all tasks in the pack
    min_ref_iou: float = 0.25        # target box -> proposal match needed to keep an example
    mixed_precision: str = "fp32"    # fp32 | bf16 | fp16 (autocast through accelerate)
    log_every: int = 10
    save_every: int = 0              # 0: only at the end
    gradient_checkpointing: bool = False   # recompute the LM's activations in backward: less memory, ~30% slower
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_steps=30))

    def uses_task(self, task: str) -> bool:
        """Whether SFT trains on examples of `task` (every task when `tasks` is empty)."""
        return not self.tasks or task in self.tasks

    def __post_init__(self):
        if self.views not in ("dynamic", "uniform", "random", "none"):
            raise ValueError(f"sft.views: unknown strategy {self.views!r}; choose one of dynamic, uniform, random, none")
        if self.batch_size <= 0 or self.grad_accum <= 0 or self.steps <= 0:
            raise ValueError("sft.steps, sft.batch_size and sft.grad_accum must be > 0")


@dataclass
class GRPOConfig:
    steps: int = 200
    prompts_per_step: int = 8        # per device
    group_size: int = 8              # G completions per prompt
    num_iterations: int = 1          # policy updates per batch of samples (μ)
    micro_batch: int = 16            # completions per forward/backward chunk
    seed: int = 0
    views: str = "dynamic"
    num_views: int = 4
    tasks: tuple[str, ...] = ("grounding", "qa", "object_caption", "dense_caption", "reasoning")
    min_ref_iou: float = 0.25
    max_new_tokens: int = 160
    task_max_new_tokens: dict = field(default_factory=dict)   # per-task budgets, e.g. {planning: 384}
    temperature: float = 1.0
    top_p: float = 1.0
    clip_eps: float = 0.2
    beta: float = 0.04               # KL weight
    loss_type: str = "grpo"          # grpo | bnpo | dr_grpo | dapo (training/grpo_loss.py)
    reward_weights: dict = field(default_factory=lambda: {"format": 1.0, "perception": 1.0, "semantic": 1.0})
    # Tasks a reward scores, where not its default (training/rewards.py RewardConfig.<name>_tasks),
    # e.g. {semantic: [grounding], evidence: [qa]}.
    reward_tasks: dict = field(default_factory=dict)
    mixed_precision: str = "fp32"    # fp32 | bf16 | fp16: autocast over the log-prob passes (sampling is fp32)
    log_every: int = 5
    save_every: int = 0
    gradient_checkpointing: bool = False   # recompute the LM's activations in backward: less memory, ~30% slower
    # Weight of an SFT loss (the `sft` stage's examples and targets) added to every step, as
    # InstructGPT's PPO-ptx mixes its pre-training loss into PPO, to hold the tasks the rewards do
    # not score where SFT left them. 0 = off (the paper's GRPO).
    sft_coef: float = 0.0
    sft_batch_size: int = 16         # SFT examples per device per step when sft_coef > 0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, warmup_steps=5))

    def __post_init__(self):
        from training.grpo_loss import LOSS_TYPES

        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"grpo.loss_type: unknown {self.loss_type!r}; choose one of {list(LOSS_TYPES)}")
        if isinstance(self.sft_coef, bool) or not isinstance(self.sft_coef, (int, float)) \
                or not math.isfinite(self.sft_coef) or self.sft_coef < 0:
            raise ValueError(f"grpo.sft_coef: expected a finite number >= 0, got {self.sft_coef!r}")
        if self.sft_batch_size < 1:
            raise ValueError(f"grpo.sft_batch_size: expected a positive integer, got {self.sft_batch_size!r}")
        if self.group_size < 2:
            raise ValueError(f"grpo.group_size must be >= 2 (advantages are group-normalised), got {self.group_size}")
        from r1_core.query import TASKS

        from training.rewards import RewardConfig

        scoped = [f.name.removesuffix("_tasks") for f in fields(RewardConfig) if f.name.endswith("_tasks")]
        for name, tasks in self.reward_tasks.items():
            if name not in scoped:
                raise ValueError(f"grpo.reward_tasks: {name!r} has no task scope; choose from {list(scoped)}")
            if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or any(t not in TASKS for t in tasks):
                raise ValueError(f"grpo.reward_tasks.{name}: expected a list of tasks from {list(TASKS)}, got {tasks!r}")
        for task, n in self.task_max_new_tokens.items():
            if task not in TASKS:
                raise ValueError(f"grpo.task_max_new_tokens: unknown task {task!r}; choose from {list(TASKS)}")
            if not isinstance(n, int) or n <= 0:
                raise ValueError(f"grpo.task_max_new_tokens.{task}: expected a positive integer, got {n!r}")


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorTrainConfig = field(default_factory=DetectorTrainConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def load_recipe(path: str | Path | None, overrides: dict | None = None) -> Recipe:
    return load_config(Recipe, path, overrides=overrides)
