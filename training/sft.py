"""Stage 1: SFT cold start on chain-of-thought targets (Scene-30K format and the task mixtures).

    r1 train sft --recipe config/train/nano.yaml --pack data/nano_pack --detector runs/nano/detector \
        --out runs/nano/sft
    accelerate launch --config_file config/accelerate/ddp_2gpu.yaml -m training.cli train sft ...

Loss on the response tokens only. Trained: LoRA on the LLM, the encoder's token MLP, the
projector and the view/pose encoders; the detector side of the encoder stays as stage 0 left
it, so every `<box>` in a target can be rewritten as `<ref>k</ref>` of the proposal it matches
(examples whose boxes no proposal matches at `min_ref_iou` are dropped and counted).
Each global step draws `batch_size × processes` examples from one seeded permutation; process
r takes its slice, so N processes and one process with the same global batch see the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from r1_core.config import format_config
from r1_core.geometry.boxes import box_iou_3d
from r1_core.model.answer import extract_boxes
from r1_core.model.checkpoint import save_checkpoint
from r1_core.model.prompts import boxes_to_refs
from r1_core.model.r1model import R1Model, SceneEncoding
from training.common import MetricLogger, make_optimizer, seed_everything
from training.data import TrainExample, TrainingPack
from training.detector import load_pretrained_encoder
from training.recipe import Recipe, accelerate_precision


@dataclass
class ResolvedExample:
    example: TrainExample
    target: str          # boxes rewritten as <ref>k</ref>


def freeze_detector(model: R1Model) -> None:
    for p in model.encoder.detector_parameters():
        p.requires_grad_(False)


def encode_scenes(model: R1Model, pack: TrainingPack, scene_ids: list[str], progress: bool = True) -> dict[str, SceneEncoding]:
    return {sid: model.encode_scene(pack.scene(sid).points)
            for sid in tqdm(sorted(set(scene_ids)), desc="encode scenes", disable=not progress)}


def resolve_examples(examples: list[TrainExample], encodings: dict[str, SceneEncoding],
                     min_iou: float) -> tuple[list[ResolvedExample], int]:
    """Rewrite target boxes as proposal refs; returns (kept, dropped)."""
    kept, dropped = [], 0
    for ex in examples:
        text, ok = boxes_to_refs(ex.target, extract_boxes(ex.target), encodings[ex.scene_id].boxes, min_iou, box_iou_3d)
        if ok:
            kept.append(ResolvedExample(ex, text))
        else:
            dropped += 1
    return kept, dropped


def sft_items(pack: TrainingPack, encodings: dict[str, SceneEncoding], data: list[ResolvedExample],
              indices, views: str, num_views: int) -> list[tuple]:
    """R1Model.forward's input for the resolved examples at `indices`: (scene encoding, views,
    query, target) each, the views chosen by `views` (none: no views)."""
    items = []
    for i in indices:
        r = data[i]
        chosen = pack.views(r.example, views, num_views) if views != "none" else []
        items.append((encodings[r.example.scene_id], chosen, r.example.query(), r.target))
    return items


def global_batches(n: int, batch: int, steps: int, seed: int):
    """Deterministic global batches over n items: epochs of seeded permutations."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch:
            order += rng.permutation(n).tolist()
        yield order[:batch]
        order = order[batch:]


def build_model(recipe: Recipe, detector: str | Path | None, init: str | Path | None, device,
                gradient_checkpointing: bool = False) -> R1Model:
    if init is not None:
        from r1_core.model.checkpoint import load_checkpoint

        model, _ = load_checkpoint(init, device=device)
        model.train()
    else:
        model = R1Model(recipe.model)
        if detector is not None:
            load_pretrained_encoder(model.encoder, detector)
        model.to(device)
    freeze_detector(model)
    if gradient_checkpointing:
        # non-reentrant: the frozen base's inputs_embeds carry the projector's grad, no hooks needed
        model.backbone.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def train_sft(recipe: Recipe, pack: TrainingPack, out_dir: str | Path, detector: str | Path | None = None,
              init: str | Path | None = None, progress: bool = True) -> dict:
    """Run SFT; writes out_dir/final (checkpoint), metrics.jsonl, tb/. Returns a summary."""
    from accelerate import Accelerator

    cfg = recipe.sft
    acc = Accelerator(mixed_precision=accelerate_precision(cfg.mixed_precision), gradient_accumulation_steps=cfg.grad_accum)
    out_dir = Path(out_dir)
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(format_config(recipe))
        (out_dir / "recipe.yaml").write_text(format_config(recipe) + "\n")
    seed_everything(cfg.seed)
    model = build_model(recipe, detector, init, acc.device, cfg.gradient_checkpointing)
    examples = [e for e in pack.examples("train") if cfg.uses_task(e.task)]
    if not examples:
        raise ValueError(f"no training examples for tasks {cfg.tasks or 'all'} in {pack.root}")
    encodings = encode_scenes(model, pack, [e.scene_id for e in examples], progress and acc.is_main_process)
    data, dropped = resolve_examples(examples, encodings, cfg.min_ref_iou)
    if not data:
        raise ValueError("every example was dropped: no proposal matches the target boxes (train the detector first)")
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = make_optimizer(params, cfg.optim, cfg.steps)
    model, opt = acc.prepare(model, opt)
    log = MetricLogger(out_dir, enabled=acc.is_main_process)
    log.log(0, {"examples": len(data), "dropped_unmatched": dropped, "trainable_params": sum(p.numel() for p in params)},
            stage="sft_data")
    world, rank = acc.num_processes, acc.process_index
    per_step = cfg.batch_size * world
    bar = tqdm(total=cfg.steps, desc="sft", disable=not (progress and acc.is_main_process))
    unwrapped = acc.unwrap_model(model)
    losses: list[float] = []
    step = 0
    for gbatch in global_batches(len(data), per_step * cfg.grad_accum, cfg.steps, cfg.seed):
        for micro in range(cfg.grad_accum):
            chunk = gbatch[micro * per_step:(micro + 1) * per_step][rank::world]
            items = sft_items(pack, encodings, data, chunk, cfg.views, cfg.num_views)
            with acc.accumulate(model):
                loss = model(items)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(float(acc.reduce(loss.detach(), reduction="mean")))
        sched.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = float(np.mean(losses[-cfg.log_every * cfg.grad_accum:]))
            log.log(step, {"loss": mean, "lr": sched.get_last_lr()[0]}, stage="sft")
            bar.set_postfix(loss=f"{mean:.3f}")
        if cfg.save_every and step % cfg.save_every == 0 and acc.is_main_process:
            save_checkpoint(unwrapped, out_dir / f"checkpoint-{step}", extra=pack.view_selection_tensors())
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_checkpoint(unwrapped, out_dir / "final", extra=pack.view_selection_tensors())
    log.close()
    bar.close()
    return {"steps": step, "first_loss": losses[0], "last_loss": float(np.mean(losses[-max(1, cfg.log_every):])),
            "examples": len(data), "dropped": dropped}
