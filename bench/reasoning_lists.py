"""The object lists in the models' reasoning: how long they are, and how many of their objects
are the proposal they point at. Where a training stage changed how the model lists candidates.

    python bench/reasoning_lists.py sft.jsonl.gz grpo.jsonl.gz --names SFT SFT+GRPO \\
        --checkpoint r1_core/assets/r1-nano --pack runs/nano/pack --out lists.json

The files are `r1 eval --no-score` predictions (plain or .gz) of the same pack; their grounding
and QA predictions are read. A list is the reasoning's "Next, …" sentence (r1_core.data.cot's
templates: grounding "Next, I find the chairs in the scene: there are 2: a blue chair at
`<ref>3</ref>`, …", QA "Next, the relevant objects are …"); its items are "a <words> at
`<ref>k</ref>`". An item is of the wrong class when its words do not end in a name (or synonym)
of the class the detector gave proposal k (the class the prompt showed beside `<ref>k</ref>`).
The checkpoint's detector re-encodes the pack's clouds to get those classes, so every file must
come from models with that detector (R1-nano's SFT and GRPO checkpoints share theirs). "how many" is the QA
questions of that type (r1_core.eval.qa.scanqa_question_type, as bench/qa_types.py).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.data.classes import NYU40_NAMES, RAW_TO_NYU40, nyu40_id  # noqa: E402
from r1_core.data.vocab import NOUNS  # noqa: E402
from r1_core.eval.qa import scanqa_question_type  # noqa: E402
from r1_core.model.answer import THINK_CLOSE  # noqa: E402
from training.evaluate import read_predictions  # noqa: E402

ITEM_RE = re.compile(r"\ban? ((?:[a-z]+ )*?[a-z]+) at <ref>(\d+)</ref>")
GROUPS = ("grounding", "qa", "qa: how many")
# Every name an object goes by (NYU40 names, the synthetic world's raw categories and their
# synonyms) -> its NYU40 id; longest first, so "kitchen cabinet" is not read as "cabinet".
_IDS = {**{n: i for i, n in NYU40_NAMES.items()}, **RAW_TO_NYU40,
        **{s: nyu40_id(label) for label, synonyms in NOUNS.items() for s in synonyms}}
NAMES = sorted(_IDS, key=len, reverse=True)


def list_items(raw: str) -> list[tuple[str, int]]:
    """(words, k) of each "a <words> at <ref>k</ref>" in the reasoning's "Next, …" sentence."""
    think = raw.split(THINK_CLOSE)[0]
    sentence = next((s for s in re.split(r"(?<=\.) ", think) if s.startswith("Next,")), "")
    return [(words, int(k)) for words, k in ITEM_RE.findall(sentence)]


def named_class(words: str) -> int | None:
    """The NYU40 id of the name the item's words end in, if any."""
    name = next((n for n in NAMES if words == n or words.endswith(" " + n)), None)
    return None if name is None else _IDS[name]


def summarise(preds: list[dict], classes: dict[str, list[int]]) -> dict[str, dict]:
    """group -> {"n", "items", "length": {"0", "1", "2", "3+"} counts, "repeated_ref" (lists naming
    a proposal twice), "wrong_class_items", "wrong_class_lists"}; classes: scene -> the detector's
    class (NYU40 id) of each proposal."""
    out = {g: Counter() for g in GROUPS}
    for p in preds:
        if p.get("task") not in ("grounding", "qa"):
            continue
        counting = p["task"] == "qa" and scanqa_question_type(p["question"]) == "how many"
        groups = [p["task"]] + (["qa: how many"] if counting else [])
        items = list_items(p.get("raw", ""))
        names = classes[p["scene_id"]]
        wrong = sum(1 for words, k in items if k >= len(names) or named_class(words) != names[k])
        refs = [k for _, k in items]
        for g in groups:
            c = out[g]
            c["n"] += 1
            c["items"] += len(items)
            c[f"length {min(len(items), 3)}{'+' if len(items) >= 3 else ''}"] += 1
            c["repeated_ref"] += len(set(refs)) < len(refs)
            c["wrong_class_items"] += wrong
            c["wrong_class_lists"] += wrong > 0
    keys = ("n", "items", "length 0", "length 1", "length 2", "length 3+", "repeated_ref", "wrong_class_items",
            "wrong_class_lists")
    return {g: {k: int(out[g][k]) for k in keys} for g in GROUPS if out[g]["n"]}


def markdown(tables: dict[str, dict[str, dict]]) -> str:
    names = list(tables)
    lines = ["| list | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    first = tables[names[0]]
    rows = (("items per list", lambda r: f"{r['items'] / r['n']:.2f}"),
            ("two or more items", lambda r: f"{r['length 2'] + r['length 3+']}"),
            ("a proposal named twice", lambda r: f"{r['repeated_ref']}"),
            ("items of another class than their proposal", lambda r: f"{r['wrong_class_items']}"))
    for g in first:
        for label, fmt in rows:
            lines.append(f"| {g}: {label} | {first[g]['n']} | " + " | ".join(fmt(tables[m][g]) for m in names) + " |")
    return "\n".join(lines)


def detector_classes(checkpoint: str, pack_root: str, scene_ids: list[str]) -> dict[str, list[int]]:
    """scene -> the class (NYU40 id) of each proposal the checkpoint's detector makes on the pack's cloud."""
    import torch

    from r1_core.model.checkpoint import load_checkpoint
    from training.data import TrainingPack
    from training.sft import encode_scenes

    model, _ = load_checkpoint(checkpoint, device="cpu")
    with torch.no_grad():
        encodings = encode_scenes(model, TrainingPack(pack_root), scene_ids, progress=True)
    return {sid: [int(i) for i in e.labels] for sid, e in encodings.items()}


def main(argv: list[str] | None = None, classes: dict[str, list[int]] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", nargs="+", help="predictions.jsonl(.gz) of `r1 eval --no-score`, one per model")
    ap.add_argument("--names", nargs="+", help="a name per file (default: the file names)")
    ap.add_argument("--checkpoint", help="a checkpoint with the models' detector (its proposals' classes)")
    ap.add_argument("--pack", help="the pack the predictions were made on")
    ap.add_argument("--out", help="write the counts as JSON here")
    args = ap.parse_args(argv)
    names = args.names or [Path(f).name for f in args.predictions]
    if len(names) != len(args.predictions):
        raise ValueError(f"--names: {len(names)} names for {len(args.predictions)} files")
    preds = {n: read_predictions(f) for n, f in zip(names, args.predictions)}
    if classes is None:
        if not (args.checkpoint and args.pack):
            raise ValueError("--checkpoint and --pack are needed: the detector's classes come from them")
        scenes = sorted({p["scene_id"] for ps in preds.values() for p in ps if p.get("task") in ("grounding", "qa")})
        classes = detector_classes(args.checkpoint, args.pack, scenes)
    tables = {n: summarise(ps, classes) for n, ps in preds.items()}
    print(markdown(tables))
    if args.out:
        Path(args.out).write_text(json.dumps({"files": dict(zip(names, args.predictions)), "lists": tables},
                                             indent=1) + "\n")
    return tables


if __name__ == "__main__":
    main()
