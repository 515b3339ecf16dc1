"""Proposal quality of a checkpoint's detector, under variants of its proposal settings.

    python bench/proposals.py --checkpoint r1_core/assets/r1-nano --pack runs/nano/pack --split val \\
        --variant "objectness ranking: rank_by=objectness vote_classes=false" --variant "support ranking: rank_by=support" \\
        --out proposals.json

Each variant re-encodes the split's scenes (the pack's clouds, as `r1 eval` sees them) with the
checkpoint's detector weights and its encoder config with the given `key=value` changes (fields of
`EncoderConfig`), and reports `training.detector.proposal_quality`: recall at IoU 0.25 / 0.5,
false positives and duplicates per scene, and the class accuracy of the matched proposals.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.model.checkpoint import read_model_config  # noqa: E402
from r1_core.model.encoder import EncoderConfig, PointEncoder  # noqa: E402
from training.data import TrainingPack  # noqa: E402
from training.detector import load_pretrained_encoder, proposal_quality  # noqa: E402


def parse_variant(text: str, base: EncoderConfig) -> tuple[str, EncoderConfig]:
    """'name: key=value key=value' -> (name, base with those fields replaced, typed as in base)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--variant {text!r}: expected 'NAME: key=value ...'")
    changes = {}
    for kv in rest.split():
        key, eq, value = kv.partition("=")
        if not eq or not hasattr(base, key):
            raise ValueError(f"--variant {text!r}: {kv!r} is not key=value with a key of EncoderConfig")
        current = getattr(base, key)
        if isinstance(current, bool):
            if value not in ("true", "false"):
                raise ValueError(f"--variant {text!r}: {key} expects true or false, got {value!r}")
            changes[key] = value == "true"
        else:
            changes[key] = type(current)(value)
    return name.strip(), dataclasses.replace(base, **changes)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="an r1 checkpoint (its detector side and encoder config)")
    ap.add_argument("--pack", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=0, help="only the first N scenes of the split (0 = all)")
    ap.add_argument("--variant", action="append", default=[], help="'NAME: key=value ...' (repeatable); "
                    "none: the checkpoint's own settings")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args(argv)

    base = read_model_config(args.checkpoint).encoder
    variants = [parse_variant(v, base) for v in args.variant] or [("as configured", base)]
    pack = TrainingPack(args.pack)
    ids = pack.scene_ids(args.split)
    ids = ids[:args.limit] if args.limit else ids
    scenes = [pack.scene(s) for s in ids]
    rows = []
    print(f"{len(scenes)} scenes of {args.pack} ({args.split}); detector of {args.checkpoint}")
    print("| variant | recall@0.25 | recall@0.5 | false positives / scene | duplicates / scene | class accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, cfg in variants:
        enc = PointEncoder(cfg)
        load_pretrained_encoder(enc, args.checkpoint)
        t0 = time.perf_counter()
        q = proposal_quality(enc, scenes)
        rows.append({"variant": name, "encoder": dataclasses.asdict(cfg), **q, "seconds": time.perf_counter() - t0})
        print(f"| {name} | {100 * q['recall@0.25']:.1f} | {100 * q['recall@0.5']:.1f} | {q['false_positives']:.2f} "
              f"| {q['duplicates']:.2f} | {100 * q['class_accuracy']:.1f} |")
    result = {"checkpoint": str(args.checkpoint), "pack": str(args.pack), "split": args.split,
              "scenes": ids, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
