"""Training throughput (issue: training).

    python3 bench/train.py --gpu                      # 7B-sized Qwen2.5-VL LM + LoRA: SFT samples/s, GRPO prompts/s
    python bench/train.py --from-runs runs/nano       # R1-nano: rates from a real run's metrics.jsonl
    python bench/train.py --grpo-steps A/metrics.jsonl B/metrics.jsonl   # GRPO seconds per step and phase
    python3 bench/train.py --sft-phases PACK --init CHECKPOINT           # where an SFT step's time goes

SFT phases: R1-nano's SFT step (the recipe's batch, precision and views) split into views,
prepare, collate, forward, backward and optimiser, with a device sync after each phase; and the
same steps unsynchronised, as training runs them: which part of the step to make faster. On an
H200 (bench/results/train-2026-11-25-h200-sft-phases.json) forward and backward take 430 ms of
the 514 ms step synced after each phase (388 ms unsynced); the CPU-side prepare and collate 71 ms.
It also counts the aten operators one step calls (torch profiler): tens of thousands, each with a
few µs of Python and dispatcher time, which is what bounds that forward and backward.

GPU: random-init model with Qwen2.5-VL-7B's language-model shapes in bf16, LoRA rank 16 on all
attention/MLP projections (peft), the same code paths our trainers use: SFT = forward+backward
of a (B, 1,200-token) scene+views prompt with a 128-token response; GRPO = G=8 sampled
completions of 128 tokens per prompt with our CUDA-graph generator, then the policy,
reference (adapter disabled) and gradient passes with training.grpo_loss. The scene encoder
costs <1 % of either and is left out. R1-nano's rates come from its actual training run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def from_runs(run: Path) -> dict:
    def rows(stage_dir, stage):
        return [json.loads(x) for x in (run / stage_dir / "metrics.jsonl").read_text().splitlines()
                if json.loads(x).get("stage") == stage]

    recipe = (run / "sft" / "recipe.yaml").read_text()
    import yaml

    r = yaml.safe_load(recipe.split("\n", 1)[1])
    sft = rows("sft", "sft")
    grpo = rows("grpo", "grpo")
    out = {}
    if len(sft) > 1:
        steps = sft[-1]["step"] - sft[0]["step"]
        out["sft_samples_per_s"] = steps * r["sft"]["batch_size"] / (sft[-1]["time_s"] - sft[0]["time_s"])
    if len(grpo) > 1:
        steps = grpo[-1]["step"] - grpo[0]["step"]
        out["grpo_prompts_per_s"] = steps * r["grpo"]["prompts_per_step"] / (grpo[-1]["time_s"] - grpo[0]["time_s"])
        out["grpo_completions_per_prompt"] = r["grpo"]["group_size"]
    return out


def grpo_steps(paths: list[Path]) -> dict:
    """Seconds per GRPO step (from the logged time_s) and per phase (generate, reward, update:
    the means over each log interval that GRPO writes since the phase timers exist)."""
    out = {}
    print(f"| run | steps | s/step | generate | reward | update |\n|---|---:|---:|---:|---:|---:|")
    for path in paths:
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        rows = [r for r in rows if r.get("stage") == "grpo"]
        if len(rows) < 2:
            raise SystemExit(f"{path}: fewer than two GRPO log lines")
        per_step = (rows[-1]["time_s"] - rows[0]["time_s"]) / (rows[-1]["step"] - rows[0]["step"])
        phases = {k: sum(r[f"seconds_{k}"] for r in rows) / len(rows) if all(f"seconds_{k}" in r for r in rows) else None
                  for k in ("generate", "reward", "update")}
        out[str(path)] = {"seconds_per_step": per_step, "steps": rows[-1]["step"] + 1,
                          **{f"seconds_{k}": v for k, v in phases.items()}}
        cells = " | ".join("–" if v is None else f"{v:.1f}" for v in phases.values())
        print(f"| {path} | {rows[-1]['step'] + 1} | {per_step:.1f} | {cells} |")
    return out


def gpu_7b(args) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from inference import QWEN25_VL_7B_TEXT
    from r1_core.model.backbones import Backbone
    from r1_core.model.generate import GenerationSettings, generate
    from r1_core.model.r1model import LORA_TARGETS
    from training.grpo_loss import group_advantages, grpo_loss

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        lm = Qwen2ForCausalLM(Qwen2Config(**QWEN25_VL_7B_TEXT))
    torch.set_default_dtype(torch.float32)
    for p in lm.parameters():
        p.requires_grad_(False)
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    H, L, R = QWEN25_VL_7B_TEXT["hidden_size"], args.prompt_tokens, args.response_tokens
    base = lm.get_base_model()
    out = {"lora_params": sum(p.numel() for p in params)}

    def sft_step(B):
        emb = torch.randn(B, L + R, H, device="cuda", dtype=torch.bfloat16) * 0.02
        labels = torch.randint(0, 1000, (B, R), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = base.model(inputs_embeds=emb, use_cache=False).last_hidden_state[:, L - 1:-1]
            loss = torch.nn.functional.cross_entropy(base.lm_head(h).float().flatten(0, 1), labels.flatten())
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)

    for B in (args.sft_batch,):
        sft_step(B); torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(3):
            sft_step(B)
        torch.cuda.synchronize()
        out[f"sft_samples_per_s_b{B}"] = 3 * B / (time.perf_counter() - t)
        print(f"7B LoRA SFT, batch {B}, {L}+{R} tokens: {out[f'sft_samples_per_s_b{B}']:.2f} samples/s")

    # GRPO: P prompts x G completions
    P, G = args.grpo_prompts, 8
    bb = Backbone("7b", base, SimpleNamespace(eos_token_id=-2, pad_token_id=0, decode=lambda ids, **k: "x" * len(ids)),
                  base.model, base.lm_head)
    model = SimpleNamespace(backbone=bb, eos_id=-1)

    def grpo_step():
        emb = torch.randn(P, L, H, device="cuda", dtype=torch.bfloat16).repeat_interleave(G, 0) * 0.02
        B = P * G
        batch = SimpleNamespace(inputs_embeds=emb, attention_mask=torch.ones(B, L, dtype=torch.long, device="cuda"),
                                position_ids=torch.arange(L, device="cuda")[None].expand(B, -1),
                                input_ids=torch.zeros(B, L, dtype=torch.long, device="cuda"))
        with torch.no_grad():
            res = generate(model, batch, GenerationSettings(max_new_tokens=R, do_sample=True, stop_strings=(),
                                                             cuda_graph=True, seed=0))
        ids = torch.tensor([r.token_ids for r in res], device="cuda")
        full = torch.cat([emb, bb.embed_tokens(ids)], 1)

        def logp(sl):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                h = base.model(inputs_embeds=full[sl], use_cache=False).last_hidden_state[:, L - 1:-1]
                return torch.log_softmax(base.lm_head(h).float(), -1).gather(-1, ids[sl][..., None]).squeeze(-1)

        chunks = [slice(i, i + 4) for i in range(0, B, 4)]     # micro-batches of 4 completions
        with torch.no_grad():
            old = [logp(c) for c in chunks]
            with lm.disable_adapter():
                ref = [logp(c) for c in chunks]
        adv = group_advantages(torch.randn(B, device="cuda"), G)
        for c, o, r in zip(chunks, old, ref):
            loss, _ = grpo_loss(logp(c), o, r, adv[c], torch.ones_like(o, dtype=torch.bool))
            (loss * 4 / B).backward()
        opt.step(); opt.zero_grad(set_to_none=True)

    grpo_step(); torch.cuda.synchronize()
    t = time.perf_counter()
    grpo_step(); torch.cuda.synchronize()
    out["grpo_prompts_per_s"] = P / (time.perf_counter() - t)
    out["grpo_group_size"] = G
    print(f"7B LoRA GRPO, {P} prompts x {G} completions of {R} tokens: {out['grpo_prompts_per_s']:.3f} prompts/s")
    out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return out


PHASES = ("views", "prepare", "collate", "forward", "backward", "optimizer")


def sft_phases(recipe, pack_dir: Path, init: Path, steps: int, warmup: int = 3) -> dict:
    """Mean seconds per SFT step phase (synced after each) and per whole step (unsynced)."""
    import numpy as np

    from training.common import make_optimizer
    from training.data import TrainingPack
    from training.sft import build_model, encode_scenes, global_batches, resolve_examples, sft_items

    cfg = recipe.sft
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    model = build_model(recipe, None, init, dev)
    pack = TrainingPack(pack_dir)
    examples = [e for e in pack.examples("train") if cfg.uses_task(e.task)]
    batches = list(global_batches(len(examples), cfg.batch_size, 2 * (warmup + steps), cfg.seed))
    used = sorted({i for b in batches for i in b})
    enc = encode_scenes(model, pack, [examples[i].scene_id for i in used], progress=False)
    kept, _ = resolve_examples([examples[i] for i in used], enc, cfg.min_ref_iou)
    if len(kept) < cfg.batch_size:
        raise SystemExit(f"{pack_dir}: fewer than {cfg.batch_size} usable SFT examples")
    params = [p for p in model.parameters() if p.requires_grad]
    opt, _ = make_optimizer(params, cfg.optim, 2 * (warmup + steps))
    order = np.random.default_rng(cfg.seed).permutation(len(kept))

    def step(k: int, timed: dict | None) -> None:
        marks = [time.perf_counter()]

        def mark():
            if timed is not None:
                sync()
                marks.append(time.perf_counter())
        chunk = [int(order[(k * cfg.batch_size + j) % len(kept)]) for j in range(cfg.batch_size)]
        items = sft_items(pack, enc, kept, chunk, cfg.views, cfg.num_views)
        mark()
        # under the recipe's autocast, as accelerate runs R1Model.forward (prepare, collate, loss)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            samples = [model.prepare(*it) for it in items]
            mark()
            batch = model.collate(samples)
            mark()
            loss = model.loss(batch)
        mark()
        loss.backward()
        mark()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark()
        if timed is not None:
            for name, a, b in zip(PHASES, marks, marks[1:]):
                timed[name].append(b - a)

    model.train()
    for k in range(warmup):
        step(k, None)
    timed = {name: [] for name in PHASES}
    for k in range(steps):
        step(warmup + k, timed)
    sync()
    t = time.perf_counter()
    for k in range(steps):
        step(warmup + steps + k, None)
    sync()
    unsynced = (time.perf_counter() - t) / steps
    # Operator dispatches of one step (each costs CPU time in Python and the dispatcher, and most
    # launch a kernel): when forward + backward take about (ops x a few µs), the step is bound by
    # dispatch, not by the device's arithmetic.
    items = sft_items(pack, enc, kept, [int(i) for i in order[:cfg.batch_size]], cfg.views, cfg.num_views)
    with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        loss, ops_forward = aten_ops(lambda: model.loss(model.collate([model.prepare(*it) for it in items])))
    _, ops_backward = aten_ops(loss.backward)
    opt.zero_grad(set_to_none=True)
    out = {f"{name}_s": float(np.mean(v)) for name, v in timed.items()}
    out.update(synced_step_s=float(sum(out.values())), step_s=unsynced, batch_size=cfg.batch_size,
               steps=steps, device=str(dev), mixed_precision=cfg.mixed_precision,
               aten_ops_forward=ops_forward, aten_ops_backward=ops_backward)
    print("| phase | ms per step |\n|---|---:|")
    for name in PHASES:
        print(f"| {name} | {1e3 * out[name + '_s']:.1f} |")
    print(f"| sum (synced after each phase) | {1e3 * out['synced_step_s']:.1f} |\n"
          f"| step as training runs it (unsynced) | {1e3 * unsynced:.1f} |")
    print(f"aten operator calls per step: {ops_forward} forward (prepare + collate + loss), {ops_backward} backward")
    return out


def aten_ops(fn):
    """(fn(), how many aten operators it called), counted by the torch profiler on the CPU side."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    return result, int(sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--from-runs", type=Path)
    ap.add_argument("--grpo-steps", type=Path, nargs="+", help="GRPO metrics.jsonl files")
    ap.add_argument("--prompt-tokens", type=int, default=1200)
    ap.add_argument("--response-tokens", type=int, default=128)
    ap.add_argument("--sft-batch", type=int, default=4)
    ap.add_argument("--grpo-prompts", type=int, default=2)
    ap.add_argument("--sft-phases", type=Path, metavar="PACK", help="time an SFT step's phases on this pack")
    ap.add_argument("--init", type=Path, help="--sft-phases: the checkpoint to train from")
    ap.add_argument("--recipe", type=Path, default=ROOT / "config" / "train" / "nano.yaml")
    ap.add_argument("--steps", type=int, default=20, help="--sft-phases: steps timed (after 3 warm-up steps)")
    ap.add_argument("--batch-size", type=int, help="--sft-phases: instead of the recipe's sft.batch_size (a CPU check)")
    args = ap.parse_args()
    if args.sft_phases and not args.init:
        ap.error("--sft-phases needs --init CHECKPOINT")
    payload = {"date": dt.date.today().isoformat()}
    if args.from_runs:
        payload["r1_nano"] = from_runs(args.from_runs)
        print(json.dumps(payload["r1_nano"]))
    if args.grpo_steps:
        payload["grpo_steps"] = grpo_steps(args.grpo_steps)
    if args.gpu:
        payload["device"] = torch.cuda.get_device_name(0)
        payload["qwen2.5-vl-7b-lora"] = gpu_7b(args)
    if args.sft_phases:
        from training.recipe import load_recipe

        payload["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
        recipe = load_recipe(args.recipe)
        if args.batch_size:
            recipe.sft.batch_size = args.batch_size
        payload["r1_nano_sft_phases"] = sft_phases(recipe, args.sft_phases, args.init, args.steps)
        tag = ("-".join(payload["device"].split()[1:3]).lower() if torch.cuda.is_available() else "cpu") + "-sft-phases"
    else:
        tag = payload.get("device", "runs").split()[1].lower() if args.gpu else ("grpo-steps" if args.grpo_steps else "nano-run")
    out = ROOT / "bench" / "results" / f"train-{payload['date']}-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
