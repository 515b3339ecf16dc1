"""`r1 train …` and `r1 eval`: the training stages and the benchmark evaluation.

    r1 train detector --recipe config/train/nano.yaml --data data/synth --out runs/nano/detector
    r1 train pack     --recipe config/train/nano.yaml --data data/synth --detector runs/nano/detector --out runs/nano/pack
    r1 train sft      --recipe config/train/nano.yaml --pack runs/nano/pack --detector runs/nano/detector --out runs/nano/sft
    r1 train grpo     --recipe config/train/nano.yaml --pack runs/nano/pack --init runs/nano/sft/final --out runs/nano/grpo
    r1 train grpo     … --resume runs/nano/grpo/checkpoint-14   # continue a run (e.g. on the next GPU machine)
    r1 train grpo     --pack runs/fresh/pack --sft-pack runs/nano/pack …   # prompts from other rooms, the SFT term from SFT's
    r1 train all      --recipe config/train/nano.yaml --data data/synth --out runs/nano   # all of the above
    r1 eval --checkpoint runs/nano/grpo/final --pack runs/nano/pack --out runs/nano/eval/grpo --name "R1-nano"
    r1 eval … --out runs/nano/eval/grpo --no-score     # predictions only (and run.json: the settings)
    r1 eval --predictions runs/nano/eval/grpo/predictions.jsonl --out runs/nano/eval/grpo --name "R1-nano"

`r1 eval` never replaces the results or predictions of an earlier run in --out unless --overwrite.

`--set key=value` overrides any recipe field (dotted, YAML-typed), e.g. `--set sft.steps=50`.
Multi-GPU: `accelerate launch --config_file config/accelerate/<cfg>.yaml -m r1_ros.cli train sft …`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _recipe(args):
    from training.recipe import load_recipe

    return load_recipe(args.recipe, overrides=_overrides(args.set))


def _detector(args) -> int:
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from r1_core.data.tasks import DatasetLayout
    from training.detector import train_detector
    from training.pack import training_scene

    r = _recipe(args)
    layout = DatasetLayout(Path(args.data))
    workers = max(1, args.workers)

    def load(split: str) -> list:
        """The split's scenes with the recipe's pack.cloud (fused clouds take seconds each: in parallel)."""
        ids = layout.scene_ids(split)
        if r.pack.cloud == "mesh" or workers == 1:
            return [training_scene(args.data, s, r.pack) for s in ids]
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(partial(training_scene, args.data, cfg=r.pack), ids))

    _, metrics = train_detector(r.model.encoder, r.detector, lambda: load("train"), load("val"), args.out,
                                device=_device(args.device))
    print(json.dumps(metrics))
    return 0


def _pack(args) -> int:
    from training.pack import build_pack

    r = _recipe(args)
    counts = build_pack(args.data, args.out, r.pack, encoder_cfg=r.model.encoder, detector=args.detector,
                        workers=args.workers)
    print(json.dumps(counts))
    return 0


def _sft(args) -> int:
    from training.data import TrainingPack
    from training.sft import train_sft

    print(json.dumps(train_sft(_recipe(args), TrainingPack(args.pack), args.out, detector=args.detector, init=args.init)))
    return 0


def _grpo(args) -> int:
    from training.data import TrainingPack
    from training.grpo import train_grpo

    summary = train_grpo(_recipe(args), TrainingPack(args.pack), args.out, init=args.init,
                         resume=args.resume, sft_pack=TrainingPack(args.sft_pack) if args.sft_pack else None)
    print(json.dumps({k: v for k, v in summary.items() if k != "reward_history"}))
    return 0


def _all(args) -> int:
    out = Path(args.out)
    base = dict(recipe=args.recipe, set=args.set, device=args.device)
    ns = argparse.Namespace
    from training.pack import check_pack_inputs

    check_pack_inputs(args.data)      # a missing file is found now, not after the detector has trained
    _detector(ns(**base, data=args.data, out=out / "detector", workers=args.workers))
    _pack(ns(**base, data=args.data, out=out / "pack", detector=out / "detector", workers=args.workers))
    _sft(ns(**base, pack=out / "pack", out=out / "sft", detector=out / "detector", init=None))
    _grpo(ns(**base, pack=out / "pack", out=out / "grpo", init=out / "sft" / "final", resume=None, sft_pack=None))
    return 0


def _eval(args) -> int:
    from r1_core.eval.report import save_report
    from training.evaluate import (TASK_MAX_NEW_TOKENS, parse_task_budgets, predict, prediction_counts,
                                   read_predictions, refuse_earlier_run, score, write_predictions)

    out = Path(args.out)
    if args.predictions and args.no_score:
        raise SystemExit("r1 eval: --no-score with --predictions does nothing (they are scored, not made)")
    made_here = [] if args.predictions else ["predictions.jsonl", "run.json"]
    refuse_earlier_run(out, ["results.json", "results.md", *made_here], args.overwrite, "r1 eval")
    if args.predictions:
        preds = read_predictions(args.predictions)
        settings = Path(args.predictions).parent / "run.json"     # written beside predictions.jsonl
        run = {**(json.loads(settings.read_text()) if settings.is_file() else {}), "predictions": str(args.predictions)}
    else:
        if not (args.checkpoint and args.pack):
            raise SystemExit("r1 eval: give --checkpoint and --pack (or --predictions to score saved predictions)")
        try:        # None: evaluate's defaults (TASK_MAX_NEW_TOKENS)
            budgets = None if args.task_max_new_tokens is None else parse_task_budgets(args.task_max_new_tokens)
        except ValueError as e:
            raise SystemExit(f"r1 eval --task-max-new-tokens: {e}") from None
        from r1_core.model.checkpoint import load_checkpoint
        from training.data import TrainingPack

        run = {"checkpoint": args.checkpoint, "pack": args.pack, "split": args.split, "views": args.views,
               "num_views": args.num_views, "tasks": list(args.tasks) if args.tasks else "all",
               "limit": args.limit, "every": args.every, "max_new_tokens": args.max_new_tokens,
               "task_max_new_tokens": TASK_MAX_NEW_TOKENS if budgets is None else budgets,
               # Scan2Cap's references are the grounding descriptions: no grounding, no dense captions
               "dense_caption": not args.no_dense_caption and (not args.tasks or "grounding" in args.tasks),
               "lm_weights": args.lm_weights, "dtype": args.dtype}
        print("r1 eval\n" + "".join(f"  {k}: {v}\n" for k, v in run.items()), end="")
        model, _ = load_checkpoint(args.checkpoint, device=_device(args.device),
                                   overrides={"dtype": args.dtype} if args.dtype else None)
        if args.lm_weights == "int8":
            model.quantize_int8()
        preds = predict(model, TrainingPack(args.pack), split=args.split, views=args.views,
                        num_views=args.num_views, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        task_max_new_tokens=budgets, cuda_graph=False if args.eager_decoding else None,
                        limit=args.limit, every=args.every, dense_caption=run["dense_caption"],
                        **({"tasks": tuple(args.tasks)} if args.tasks else {}))
        write_predictions(preds, out / "predictions.jsonl")
        (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
        print(f"wrote {len(preds)} predictions to {out / 'predictions.jsonl'}, the settings to {out / 'run.json'}")
    if args.no_score:
        return 0
    results = score(preds)
    # scored from a file, the settings are those its run.json records (if any), and the file's name
    meta = {**run, "examples": prediction_counts(preds)}
    pj, pm = save_report(out, {args.name: results}, meta=meta)
    print(pm.read_text())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="training stages: detector, pack, sft, grpo, all")
    ts = t.add_subparsers(dest="stage", metavar="STAGE", required=True)

    def common(p, data=False):
        p.add_argument("--recipe", required=True, help="training recipe YAML (config/train/*.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--device", default="auto", help="cuda, cpu or auto")
        if data:
            p.add_argument("--data", required=True, help="ScanNet-format dataset root (r1 data synth writes one)")

    p = ts.add_parser("detector", help="stage 0: pre-train the encoder's proposal detector")
    common(p, data=True)
    p.add_argument("--workers", type=int, default=1, help="processes fusing the walk-throughs (pack.cloud: fused)")
    p.set_defaults(func=_detector)
    p = ts.add_parser("pack", help="build a training pack (clouds, keyframes, view selections, CoT targets)")
    common(p, data=True)
    p.add_argument("--detector", help="stage-0 output: select views with its proposals (else ground truth)")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_pack)
    p = ts.add_parser("sft", help="stage 1: SFT cold start")
    common(p)
    p.add_argument("--pack", required=True)
    p.add_argument("--detector", help="stage-0 output to initialise the encoder")
    p.add_argument("--init", help="start from an r1 checkpoint instead")
    p.set_defaults(func=_sft)
    p = ts.add_parser("grpo", help="stage 2: GRPO from an SFT checkpoint")
    common(p)
    p.add_argument("--pack", required=True)
    p.add_argument("--init", required=True, help="the SFT checkpoint (also the KL reference)")
    p.add_argument("--resume", help="continue a run at its checkpoint-N directory (same --init, recipe and packs)")
    p.add_argument("--sft-pack", help="the pack of grpo.sft_coef's SFT examples (default --pack), e.g. SFT's own "
                   "rooms while --pack holds rooms SFT never saw")
    p.set_defaults(func=_grpo)
    p = ts.add_parser("all", help="detector, pack, sft and grpo in sequence under --out")
    common(p, data=True)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_all)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a pack's split; paper-style tables")
    e.add_argument("--checkpoint")
    e.add_argument("--pack")
    e.add_argument("--predictions", help="score saved predictions instead of running a model")
    e.add_argument("--out", required=True)
    e.add_argument("--name", default="r1", help="row name in the results table")
    e.add_argument("--split", default="val")
    e.add_argument("--views", default="dynamic", choices=["dynamic", "uniform", "random", "none"])
    e.add_argument("--num-views", type=int, default=4)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-new-tokens", type=int, default=160, help="new-token budget of the tasks not named in "
                   "--task-max-new-tokens")
    e.add_argument("--task-max-new-tokens", nargs="*", metavar="TASK=N",
                   help="per-task new-token budgets (default: planning=384, training.evaluate.TASK_MAX_NEW_TOKENS; "
                   "the flag alone: --max-new-tokens for every task)")
    e.add_argument("--limit", type=_count(0), default=0, help="only the first N examples (0 = all)")
    e.add_argument("--every", type=_count(1), default=1, help="keep every N-th example (an evenly spread subset)")
    e.add_argument("--tasks", nargs="+", choices=["grounding", "qa", "dialogue", "planning"],
                   help="only these tasks (default: all)")
    e.add_argument("--device", default="auto", help="cuda, cpu or auto")
    e.add_argument("--lm-weights", default="float", choices=["float", "int8"],
                   help="int8: weight-only int8 language model, as the CPU service can run it")
    e.add_argument("--dtype", help="override the checkpoint's dtype, e.g. bfloat16")
    e.add_argument("--eager-decoding", action="store_true",
                   help="on a GPU, decode eagerly instead of replaying a CUDA graph per batch (how predictions "
                   "were made before 2026-11-25; greedy answers can differ in the last bits of a logit)")
    e.add_argument("--no-dense-caption", action="store_true")
    e.add_argument("--no-score", action="store_true", help="write predictions only")
    e.add_argument("--overwrite", action="store_true", help="replace the results (and predictions) already in --out")
    e.set_defaults(func=_eval)


def _count(least: int):
    """argparse type: an integer >= least."""
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return int(text)
    return parse


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
