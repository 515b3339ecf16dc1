"""Stage 2: GRPO, as the paper describes it (the public reference code does not implement it).

    r1 train grpo --recipe config/train/nano.yaml --pack data/nano_pack --init runs/nano/sft/final \
        --out runs/nano/grpo

Per step and prompt: G completions are sampled from the current policy (our KV-cached
generator, with the scene/view embeddings in the prompt); each is scored by the weighted
rewards (training/rewards.py: format, perception = IoU of the answer's boxes with the ground
truth through r1_core's box ops, semantic = sentence-embedding cosine with the reference);
advantages are normalised within each prompt's group; the loss is the token-level clipped
surrogate with the k3 KL estimator to a frozen reference policy (training/grpo_loss.py, tested
against TRL's implementation).

Why not TRL's GRPOTrainer: it builds prompts from text and generates with `model.generate` (or
vLLM); our prompts carry point-cloud and view embeddings spliced at placeholder positions and,
for Qwen2.5-VL, 3-axis rotary positions — the trainer cannot carry them without re-implementing
its generation and batching. The loss itself is the same function (checked in the tests).

A run split over several machines (a GPU machine is held for 30 minutes at most): every
`save_every` steps a checkpoint-N directory also holds the optimiser, scheduler and RNG states
(`train_state.pt`); `--resume checkpoint-N`, with the same --init, recipe, pack and process count
(checked), continues at step N with the batches and sampling seeds the uninterrupted run would
have used. With several processes every rank resumes with rank 0's RNG state, so LoRA-dropout
masks on the other ranks differ from the uninterrupted run's.

Precision: sampling is fp32 (on a GPU from a CUDA graph: eager decoding of the LoRA model is
bound by kernel launches); the old, reference and training log-prob passes run under
`grpo.mixed_precision` autocast. Sampling, the old and the reference passes run without LoRA
dropout; the training pass with it. With num_iterations = 1 there is no old pass: the old
log-probs are the training pass's, detached.

`grpo.sft_coef` > 0 adds that weight times the SFT loss on a batch of the SFT stage's examples to
every step (InstructGPT's PPO-ptx; not in the paper), to hold the tasks the rewards do not score
where SFT left them. In R1-nano's one run with it (grounding and QA tasks, weight 0.25) QA still
fell: bench/results/r1-nano-grpo-variants-2026-11-25-h200. `sft_pack` (`--sft-pack`) takes those
examples from another pack than GRPO's prompts: GRPO can then sample its prompts from rooms SFT
never saw while the SFT term keeps SFT's own rooms (no new supervised data).

What trains: the LoRA adapter (the policy). The reference policy is the SFT adapter, kept as a
second, frozen peft adapter on the same base weights; encoder, projector and view encoders stay
as SFT left them, so policy and reference see identical inputs.
"""
from __future__ import annotations

import itertools
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from r1_core.config import format_config
from r1_core.model.answer import AnswerFormatError, extract_boxes, parse_response, resolve_refs
from r1_core.model.checkpoint import save_checkpoint
from r1_core.model.generate import GenerationSettings, by_budget, generate
from r1_core.model.r1model import R1Model
from training.common import MetricLogger, make_optimizer, read_state, restore_state, save_state, seed_everything
from training.data import TrainingPack
from training.grpo_loss import group_advantages, grpo_loss
from training.recipe import Recipe, accelerate_precision
from training.rewards import CombinedReward, RewardConfig
from training.sft import build_model, encode_scenes, global_batches, resolve_examples, sft_items

REFERENCE = "reference"
TRAIN_STATE = "train_state.pt"


def add_reference_adapter(model: R1Model) -> None:
    """Copy the current ('default') LoRA adapter into a frozen 'reference' adapter."""
    lm = model.lm
    lm.add_adapter(REFERENCE, lm.peft_config["default"])
    with torch.no_grad():
        params = dict(lm.named_parameters())
        for name, p in params.items():
            if ".default." in name and "lora_" in name:
                params[name.replace(".default.", f".{REFERENCE}.")].copy_(p)
    lm.set_adapter("default")                       # policy active and trainable, reference frozen


@contextmanager
def reference_policy(model: R1Model):
    """Run the enclosed forward passes with the frozen reference adapter."""
    model.lm.set_adapter(REFERENCE, inference_mode=True)
    try:
        yield
    finally:
        model.lm.set_adapter("default")


def completion_logprobs(model: R1Model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of a collated batch's completions, right-aligned to a (b, T) grid."""
    logp, mask = model.token_logprobs(batch)
    T = int(mask.sum(1).max())
    n = len(batch.samples)
    out = torch.zeros(n, T, device=logp.device)
    m = torch.zeros(n, T, dtype=torch.bool, device=logp.device)
    for b in range(n):
        vals = logp[b][mask[b]]
        out[b, : len(vals)] = vals
        m[b, : len(vals)] = True
    return out, m


def sample_groups(model: R1Model, prompts: list, tasks: list[str], cfg, seed: int, cuda_graph: bool = False) -> list:
    """cfg.group_size sampled completions per prepared prompt, grouped per prompt (prompt-major).
    Prompts are generated in batches of one new-token budget (`cfg.task_max_new_tokens[task]`,
    else `cfg.max_new_tokens`; `by_budget`). Batch k of the budgets in ascending order samples
    with seed * 16 + k (distinct from every other step's and rank's batches). `cuda_graph`:
    decode steps replayed from a captured graph (eager decoding of the LoRA model is bound by
    kernel launches: ~190 ms a step at 256 sequences on an H100, GPU mostly idle)."""
    G = cfg.group_size
    budget = [cfg.task_max_new_tokens.get(t, cfg.max_new_tokens) for t in tasks]
    results: list = [None] * (len(prompts) * G)
    for k, (n, group) in enumerate(by_budget(range(len(prompts)), budget.__getitem__)):
        samples = [prompts[i] for i in group for _ in range(G)]
        settings = GenerationSettings(max_new_tokens=n, do_sample=True, temperature=cfg.temperature,
                                      top_p=cfg.top_p, seed=seed * 16 + k, cuda_graph=cuda_graph)
        out = generate(model, model.collate(samples, for_generation=True), settings)
        for j, i in enumerate(group):
            results[i * G:(i + 1) * G] = out[j * G:(j + 1) * G]
    return results


def run_identity(cfg, init: str | Path, examples: list, world: int, sft_examples: list = ()) -> dict[str, str | int]:
    """What a resumed run must share with the run it continues: the GRPO settings that shape
    training (not save_every/log_every), the process count (it sets the batches and sampling
    seeds), the --init checkpoint (the policy's start and the KL reference), the examples and
    those of the SFT term."""
    import dataclasses
    import hashlib
    import json

    from r1_core.model.checkpoint import ADAPTER_FILE, PARTS_FILE

    init_hash = hashlib.sha256()
    for name in (ADAPTER_FILE, PARTS_FILE):
        init_hash.update((Path(init) / name).read_bytes())
    def digest(items: list) -> str:
        return hashlib.sha256(json.dumps([(e.scene_id, e.task, e.text) for e in items]).encode()).hexdigest()

    identity = {"grpo": format_config(dataclasses.replace(cfg, save_every=0, log_every=1)), "processes": world,
                "init_sha256": init_hash.hexdigest(), "examples_sha256": digest(examples)}
    if sft_examples:
        identity["sft_examples_sha256"] = digest(sft_examples)
    return identity


def load_policy(model: R1Model, checkpoint: str | Path, identity: dict, steps: int) -> dict:
    """Check that a GRPO checkpoint-N continues this run (files, model config, run identity,
    step), put its adapter into the policy ("default") adapter and return its training state
    (`read_state`)."""
    import dataclasses
    import difflib

    from r1_core.model.checkpoint import ADAPTER_FILE, CheckpointError, load_adapter, read_model_config

    checkpoint = Path(checkpoint)
    for name in (ADAPTER_FILE, TRAIN_STATE):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"--resume {checkpoint}: no {name}; expected a GRPO checkpoint-N directory "
                                  f"(written every grpo.save_every steps)")
    saved_cfg, now_cfg = dataclasses.asdict(read_model_config(checkpoint)), dataclasses.asdict(model.cfg)
    differ = [k for k in now_cfg if saved_cfg.get(k) != now_cfg[k]]
    if differ:
        raise CheckpointError(f"--resume {checkpoint}: model config fields {differ} differ from the --init checkpoint's")
    state = read_state(checkpoint / TRAIN_STATE)
    saved = state["extra"]
    for key, now in identity.items():
        if saved.get(key) != now:
            if key == "grpo":
                diff = "\n".join(difflib.unified_diff(str(saved.get(key)).splitlines(), now.splitlines(),
                                                      "saved", "now", lineterm="", n=0))
            else:
                diff = f"saved: {saved.get(key)}\nnow:   {now}"
            raise CheckpointError(f"--resume {checkpoint}: {key} differs from the run it continues "
                                  f"(expected the same --init, pack, grpo recipe and process count)\n{diff}")
    if not 0 < state["step"] < steps:
        raise CheckpointError(f"--resume {checkpoint}: saved at step {state['step']}, expected one in 1..{steps - 1}")
    load_adapter(model, checkpoint, adapter_name="default")
    return state


def reference_evidence(ex) -> np.ndarray:
    """The (K, 7) boxes the example's reference reasoning names (the evidence reward's target)."""
    try:
        return extract_boxes(parse_response(ex.target).reasoning)
    except AnswerFormatError as e:
        raise ValueError(f"{ex.scene_id} {ex.task} example {ex.text[:80]!r}: its target is not a "
                         f"<think>…</think><answer>…</answer> with well-formed boxes: {e}") from e


def train_grpo(recipe: Recipe, pack: TrainingPack, out_dir: str | Path, init: str | Path,
               progress: bool = True, reward_fn=None, resume: str | Path | None = None,
               sft_pack: TrainingPack | None = None) -> dict:
    """Run GRPO from an SFT checkpoint; writes out_dir/final, metrics.jsonl, tb/. Returns a summary.

    GRPO's prompts are `pack`'s training examples of `grpo.tasks`; the SFT term's (sft_coef > 0)
    are `sft_pack`'s (default: `pack`'s) training examples of the SFT stage's tasks.

    `reward_fn(prompts, completions, **kw) -> (total, per_reward)` replaces the configured
    CombinedReward (toy tasks in tests). `resume`: a checkpoint-N of a run with the same init,
    recipe and pack; training continues at step N."""
    from accelerate import Accelerator

    cfg = recipe.grpo
    acc = Accelerator(mixed_precision=accelerate_precision(cfg.mixed_precision))
    out_dir = Path(out_dir)
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(format_config(recipe))
        (out_dir / "recipe.yaml").write_text(format_config(recipe) + "\n")
    seed_everything(cfg.seed)
    model = build_model(recipe, None, init, acc.device, cfg.gradient_checkpointing)
    if model.cfg.lora.rank == 0:
        raise ValueError("GRPO trains the LoRA adapter: the SFT checkpoint has lora.rank = 0")
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name and ".default." in name)
    add_reference_adapter(model)                    # the reference is always the SFT (--init) adapter
    policy_params = [p for p in model.parameters() if p.requires_grad]
    train_examples = pack.examples("train")
    examples = [e for e in train_examples if e.task in cfg.tasks]
    if not examples:
        raise ValueError(f"no GRPO examples for tasks {cfg.tasks} in {pack.root}")
    if sft_pack is None or Path(sft_pack.root).resolve() == Path(pack.root).resolve():
        sft_pack = pack
    sft_examples = [e for e in sft_pack.examples("train") if recipe.sft.uses_task(e.task)] \
        if cfg.sft_coef > 0 else []
    identity = run_identity(cfg, init, examples, acc.num_processes, sft_examples)
    resume_state = load_policy(model, resume, identity, cfg.steps) if resume is not None else None
    show = progress and acc.is_main_process
    if sft_pack is pack:
        encodings = encode_scenes(model, pack, [e.scene_id for e in examples + sft_examples], show)
    else:
        encodings = encode_scenes(model, pack, [e.scene_id for e in examples], show)
        shared = sorted(set(encodings) & {e.scene_id for e in sft_examples})
        if shared:                                    # one scene id, two packs: which cloud is it?
            raise ValueError(f"--sft-pack {sft_pack.root} and --pack {pack.root} share scenes {shared[:5]}: "
                             "give packs of distinct rooms (or one pack for both)")
        encodings |= encode_scenes(model, sft_pack, [e.scene_id for e in sft_examples], show)
    if acc.is_main_process:
        print(f"grpo: {len(examples)} prompts of {len({e.scene_id for e in examples})} scenes from {pack.root}"
              + (f"; SFT term: {len(sft_examples)} examples of {len({e.scene_id for e in sft_examples})} scenes "
                 f"from {sft_pack.root}" if sft_examples else ""), flush=True)
    anchor = None
    if sft_examples:                                  # the SFT stage's data and targets (PPO-ptx)
        anchor, _ = resolve_examples(sft_examples, encodings, recipe.sft.min_ref_iou)
        if not anchor:
            raise ValueError("grpo.sft_coef > 0 but every SFT example was dropped: no proposal matches "
                             "their target boxes")
    # the sentence encoder of the semantic reward runs beside the policy (on the CPU it took
    # seconds per step)
    reward_fn = reward_fn or CombinedReward(RewardConfig(
        weights=dict(cfg.reward_weights), encoder_device=str(acc.device),
        **{f"{name}_tasks": tuple(tasks) for name, tasks in cfg.reward_tasks.items()}))
    evidence = {id(e): reference_evidence(e) for e in examples} if cfg.reward_weights.get("evidence", 0) > 0 else {}
    opt, sched = make_optimizer(policy_params, cfg.optim, cfg.steps)
    opt = acc.prepare(opt)
    # rank 0's RNG states, on every rank
    start = restore_state(resume_state, opt, sched) if resume_state is not None else 0
    log = MetricLogger(out_dir, enabled=acc.is_main_process)
    world, rank = acc.num_processes, acc.process_index
    G = cfg.group_size
    bar = tqdm(total=cfg.steps, initial=start, desc="grpo", disable=not (progress and acc.is_main_process))
    history: list[float] = []
    groups_with_spread = spread_since_log = 0         # groups whose rewards differ: the only ones with advantages
    seconds: dict[str, list[float]] = {"generate": [], "reward": [], "update": []}
    max_budget = max(cfg.task_max_new_tokens.get(t, cfg.max_new_tokens) for t in cfg.tasks)
    cuda_graph = acc.device.type == "cuda"
    # the SFT batches come from a stream of their own (seed + 1), so the GRPO batches are the same
    # with and without them
    anchor_batches = global_batches(len(anchor), cfg.sft_batch_size * world, cfg.steps, cfg.seed + 1) \
        if anchor else itertools.repeat(None)
    grpo_batches = global_batches(len(examples), cfg.prompts_per_step * world, cfg.steps, cfg.seed)
    for step, (gbatch, abatch) in enumerate(zip(grpo_batches, anchor_batches)):
        if step < start:
            continue                                  # resumed: these batches were trained on already
        chunk_ex = [examples[i] for i in gbatch[rank::world]]
        # ---- sample G completions per prompt from the current policy --------------------------
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            prompts = []                              # prepared once; the G completions share it
            for ex in chunk_ex:
                views = pack.views(ex, cfg.views, cfg.num_views) if cfg.views != "none" else []
                prompts.append(model.prepare(encodings[ex.scene_id], views, ex.query()))
            # sampled in fp32: transformers' static cache (the graph's) holds one dtype, and under
            # autocast the rotary keys come out fp32 while the values come out bf16
            results = sample_groups(model, prompts, [ex.task for ex in chunk_ex], cfg,
                                    seed=cfg.seed * 1_000_003 + step * world + rank, cuda_graph=cuda_graph)
        t1 = time.perf_counter()
        # ---- rewards on the resolved answers ------------------------------------------------
        texts, gt_boxes, refs, tasks, evidence_boxes = [], [], [], [], []
        for i, res in enumerate(results):
            ex = chunk_ex[i // G]
            try:
                text = resolve_refs(res.text, encodings[ex.scene_id].boxes)
            except AnswerFormatError:
                text = res.text                       # a bad ref: the format reward sees the raw text
            texts.append(text)
            gt_boxes.append(ex.boxes)
            refs.append([a for a in ex.answers] or [""])
            tasks.append(ex.task)
            evidence_boxes.append(evidence.get(id(ex)))
        total, per_reward = reward_fn([ex.text for ex in chunk_ex for _ in range(G)], texts, gt_boxes=gt_boxes,
                                      references=refs, tasks=tasks, evidence_boxes=evidence_boxes)
        rewards = torch.tensor(total, dtype=torch.float32, device=acc.device)
        t2 = time.perf_counter()
        advantages = group_advantages(rewards, G, scale=cfg.loss_type != "dr_grpo")
        # groups whose rewards differ, on every process, since the last log line
        spread = (rewards.view(-1, G).std(dim=1) > 0).sum()
        spread_since_log += int(acc.reduce(spread, reduction="sum"))
        # ---- policy update(s) -----------------------------------------------------------------
        samples = []
        for i, res in enumerate(results):
            ids = res.token_ids + ([model.eos_id] if res.finish_reason == "stop" and not res.text.endswith("</answer>") else [])
            samples.append(model.with_target(prompts[i // G], ids or [model.eos_id]))
        chunks = [list(range(i, min(i + cfg.micro_batch, len(samples)))) for i in range(0, len(samples), cfg.micro_batch)]
        # Still in eval mode: the old and reference passes see no LoRA dropout, like the sampling
        # whose policy they stand for. With one update per batch (num_iterations = 1) the old
        # log-probs are the training pass's own, detached, as TRL does: the ratio is exactly 1
        # (a separate old pass with dropout on clipped 0.4 % of tokens at step 0).
        with torch.no_grad(), acc.autocast():
            # one collate per chunk for all passes: its embeddings come from frozen parts
            batches = [model.collate([samples[i] for i in c]) for c in chunks]
            old = [completion_logprobs(model, b)[0] for b in batches] if cfg.num_iterations > 1 else None
            if cfg.beta > 0:
                with reference_policy(model):
                    ref = [completion_logprobs(model, b)[0] for b in batches]
        model.train()
        anchor_items = None if abatch is None else \
            sft_items(sft_pack, encodings, anchor, abatch[rank::world], cfg.views, cfg.num_views)
        stats: dict[str, list[float]] = {"loss": [], "kl": [], "clip_ratio": [], "sft_loss": []}
        n_tokens = sum(len(s.input_ids) - s.prompt_len for s in samples)
        for _ in range(cfg.num_iterations):
            opt.zero_grad(set_to_none=True)
            for ci, c in enumerate(chunks):
                with acc.autocast():
                    logp, mask = completion_logprobs(model, batches[ci])
                # micro-batches accumulate to exactly the full-batch loss of each aggregation
                extra, weight = {}, len(c) / len(samples)
                if cfg.loss_type == "dr_grpo":
                    extra["max_completion_length"] = max_budget + 1   # Dr. GRPO's fixed constant (+ EOS)
                elif cfg.loss_type in ("dapo", "bnpo"):
                    extra, weight = {"num_items": n_tokens}, 1.0
                old_logp = old[ci] if old is not None else logp.detach()
                loss, metrics = grpo_loss(logp, old_logp, ref[ci] if cfg.beta > 0 else None, advantages[c], mask,
                                          clip_eps=cfg.clip_eps, beta=cfg.beta,
                                          loss_type="dapo" if cfg.loss_type == "bnpo" else cfg.loss_type, **extra)
                acc.backward(loss * weight)
                stats["loss"].append(float(loss.detach()))
                for k in ("kl", "clip_ratio"):
                    if k in metrics:
                        stats[k].append(float(metrics[k]))
            if anchor_items is not None:              # the SFT term, on the policy adapter only
                with acc.autocast():
                    sft_loss = model(anchor_items)
                acc.backward(cfg.sft_coef * sft_loss)
                stats["sft_loss"].append(float(sft_loss.detach()))
            if world > 1:
                for p in policy_params:   # policy is not DDP-wrapped (generation needs the bare module)
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
            acc.clip_grad_norm_(policy_params, cfg.optim.max_grad_norm)
            opt.step()
        sched.step()
        mean_r = float(acc.reduce(rewards.mean(), reduction="mean"))
        seconds["generate"].append(t1 - t0)
        seconds["reward"].append(t2 - t1)
        seconds["update"].append(time.perf_counter() - t2)
        history.append(mean_r)
        bar.update(1)
        bar.set_postfix(reward=f"{mean_r:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            vals = {"reward": mean_r, "reward_std": float(rewards.std()), "groups_with_spread": float(spread_since_log),
                    "lr": sched.get_last_lr()[0],
                    "completion_tokens": float(np.mean([len(r.token_ids) for r in results]))}
            for name, v in per_reward.items():
                arr = np.array([x for x in v if x is not None], dtype=np.float64)
                if len(arr):
                    vals[f"reward_{name}"] = float(arr.mean())
                    vals[f"reward_{name}_std"] = float(arr.std())
            for k, v in stats.items():
                if v:
                    vals[k] = float(np.mean(v))
            groups_with_spread += spread_since_log
            spread_since_log = 0
            for k, v in seconds.items():              # mean seconds per step since the last log line
                vals[f"seconds_{k}"] = float(np.mean(v))
                v.clear()
            log.log(step, vals, stage="grpo")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and acc.is_main_process:
            ckpt = save_checkpoint(model, out_dir / f"checkpoint-{step + 1}", extra=pack.view_selection_tensors())
            save_state(ckpt / TRAIN_STATE, step + 1, opt, sched, extra=identity)
    acc.wait_for_everyone()
    if groups_with_spread == 0 and acc.is_main_process and cfg.steps > start:
        print(f"grpo: warning: no group of G={G} completions had any reward spread in {cfg.steps - start} steps, so "
              "every advantage was 0 and only the KL and SFT terms moved the policy (completions too short for "
              "the format reward? see grpo.max_new_tokens, and reward_* in metrics.jsonl)", file=sys.stderr)
    if acc.is_main_process:  # the checkpoint holds the policy ("default") adapter only
        save_checkpoint(model, out_dir / "final", extra=pack.view_selection_tensors())
    log.close()
    bar.close()
    return {"steps": cfg.steps, "first_reward": history[0], "last_reward": float(np.mean(history[-5:])),
            "reward_history": history, "groups_with_spread": groups_with_spread}

