"""Training throughput (issue: training).

    python3 bench/train.py --gpu                      # 7B-sized Qwen2.5-VL LM + LoRA: SFT samples/s, GRPO prompts/s
    python bench/train.py --from-runs runs/nano       # R1-nano: rates from a real run's metrics.jsonl
    python bench/train.py --grpo-steps A/metrics.jsonl B/metrics.jsonl   # GRPO seconds per step and phase

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--from-runs", type=Path)
    ap.add_argument("--grpo-steps", type=Path, nargs="+", help="GRPO metrics.jsonl files")
    ap.add_argument("--prompt-tokens", type=int, default=1200)
    ap.add_argument("--response-tokens", type=int, default=128)
    ap.add_argument("--sft-batch", type=int, default=4)
    ap.add_argument("--grpo-prompts", type=int, default=2)
    args = ap.parse_args()
    payload = {"date": dt.date.today().isoformat()}
    if args.from_runs:
        payload["r1_nano"] = from_runs(args.from_runs)
        print(json.dumps(payload["r1_nano"]))
    if args.grpo_steps:
        payload["grpo_steps"] = grpo_steps(args.grpo_steps)
    if args.gpu:
        payload["device"] = torch.cuda.get_device_name(0)
        payload["qwen2.5-vl-7b-lora"] = gpu_7b(args)
    tag = payload.get("device", "runs").split()[1].lower() if args.gpu else ("grpo-steps" if args.grpo_steps else "nano-run")
    out = ROOT / "bench" / "results" / f"train-{payload['date']}-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
