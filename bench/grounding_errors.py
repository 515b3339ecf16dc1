"""Where do grounding answers go wrong? Sorts every grounding prediction by its cause.

    python bench/grounding_errors.py runs/nano/eval/sft/predictions.jsonl --checkpoint runs/nano/sft/final \\
        --pack runs/nano/pack [--data data/synth] --out errors.json

The checkpoint's detector re-encodes each scene of the predictions from the pack's cloud (the
cloud `r1 eval` used), so the answer's `<ref>k</ref>` names the same proposal. Each answer is one of:
- no proposal: no proposal overlaps the target at IoU 0.25 (the detector's recall bounds it);
- right: the answer's proposal overlaps the target at IoU 0.25;
- wrong, and then the answer's proposal is another annotated object of the asked class, an object
  of another class, or a false positive (no annotated object at IoU 0.25).
Also the share right among answers that had a proposal, by the relation words of the expression,
and with --data (a synthetic dataset: objects carry colour names) how often a detected object's
colour word (the vote of `r1_core.views.vocab.dominant_colors`) is its annotated colour.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.geometry.boxes import box_iou_3d  # noqa: E402
from r1_core.model.answer import _REF_RE, ANSWER_OPEN  # noqa: E402
from r1_core.views.vocab import COLOR_WORDS, dominant_colors  # noqa: E402
from training.data import TrainingPack  # noqa: E402
from training.evaluate import read_predictions  # noqa: E402

RELATIONS = (("left/right", ("left", "right")), ("near", ("closest", "nearest", "next to", "close to", "beside", "near")),
             ("far", ("farthest", "far from")), ("above/below", ("above", "over", "on top", "under", "below")),
             ("size", ("largest", "smallest", "biggest", "tallest")))


def relation_kind(text: str) -> str:
    low = f" {text.lower()} "
    for kind, words in RELATIONS:
        if any(f" {w}" in low for w in words):
            return kind
    return "attribute only"


def answer_ref(raw: str) -> int | None:
    """The first proposal the answer part names, if any."""
    at = raw.find(ANSWER_OPEN)
    m = _REF_RE.search(raw[at:]) if at >= 0 else None
    return int(m.group(1)) if m else None


def classify(preds: list[dict], encodings: dict, objects: dict) -> dict:
    """encodings: scene -> SceneEncoding; objects: scene -> (boxes (K, 7), nyu40 ids (K,), object ids (K,)).
    A prediction's target is its first `object_ids` entry."""
    causes: Counter = Counter()
    by_relation: dict[str, Counter] = {}
    for p in preds:
        enc = encodings[p["scene_id"]]
        iou = box_iou_3d(np.asarray(p["gt_boxes"][:1], np.float32), enc.boxes.astype(np.float32))[0]
        good = set(np.flatnonzero(iou >= 0.25).tolist())
        k = answer_ref(p["raw"])
        if not good:
            causes["no proposal"] += 1
            continue
        rel = by_relation.setdefault(f"{relation_kind(p['question'])} / {'unique' if p.get('unique') else 'multiple'}", Counter())
        rel["n"] += 1
        if k is not None and k in good:
            causes["right"] += 1
            rel["right"] += 1
            continue
        if k is None or k >= len(enc.boxes):
            causes["wrong: no valid proposal named"] += 1
            continue
        boxes, classes, object_ids = objects[p["scene_id"]]
        hit = box_iou_3d(enc.boxes[k:k + 1].astype(np.float32), boxes)[0]
        target_class = classes[list(object_ids).index(p["object_ids"][0])]
        if hit.max(initial=0.0) < 0.25:
            causes["wrong: false-positive proposal"] += 1
        elif classes[int(hit.argmax())] == target_class:
            causes["wrong: another object of the class"] += 1
        else:
            causes["wrong: an object of another class"] += 1
    n = sum(causes.values())
    with_proposal = n - causes["no proposal"]
    return {"expressions": n, "causes": {c: v / n for c, v in sorted(causes.items())},
            "right_given_proposal": causes["right"] / max(with_proposal, 1),
            "right_given_proposal_by_relation": {r: {"n": c["n"], "right": c["right"] / c["n"]} for r, c in sorted(by_relation.items())}}


def color_accuracy(encodings: dict, votes: dict, objects: dict, colors: dict) -> dict:
    """Share of annotated objects with a proposal at IoU 0.25 whose best proposal's colour word
    (votes: scene -> (P,) `dominant_colors` of its proposals) is right."""
    ok = n = 0
    for sid, enc in encodings.items():
        iou = box_iou_3d(objects[sid][0], enc.boxes.astype(np.float32))
        for j, name in enumerate(colors[sid]):
            p = int(iou[j].argmax())
            if name is None or iou[j, p] < 0.25:
                continue
            n += 1
            ok += votes[sid][p] >= 0 and COLOR_WORDS[votes[sid][p]] == name
    return {"objects": n, "right": ok / max(n, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", help="predictions.jsonl of `r1 eval --no-score`")
    ap.add_argument("--checkpoint", required=True, help="the checkpoint that made the predictions")
    ap.add_argument("--pack", required=True, help="the pack it was evaluated on")
    ap.add_argument("--data", help="synthetic dataset root (for the colour check)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    from r1_core.model.checkpoint import load_checkpoint

    preds = [p for p in read_predictions(args.predictions) if p["task"] == "grounding"]
    if not preds:
        raise SystemExit(f"{args.predictions}: no grounding predictions")
    model, _ = load_checkpoint(args.checkpoint, device="cpu")
    pack = TrainingPack(args.pack)
    encodings, votes, objects, colors = {}, {}, {}, {}
    with torch.no_grad():
        for sid in sorted({p["scene_id"] for p in preds}):
            scene = pack.scene(sid)
            encodings[sid] = model.encode_scene(scene.points)
            objs = scene.annotated_objects()
            objects[sid] = (np.stack([o.box for o in objs]).astype(np.float32), np.array([o.nyu40_id for o in objs]),
                            np.array([o.object_id for o in objs]))
            if args.data:   # the vote on the points the encoder saw, whether or not the model reads it
                votes[sid] = encodings[sid].colors   # encode_scene voted already when the model reads colours
                if votes[sid] is None:
                    prepared, _ = model.encoder.prepare(torch.from_numpy(scene.points))
                    votes[sid] = dominant_colors(prepared.numpy(), encodings[sid].boxes)
                room = json.loads((Path(args.data) / "synthetic" / f"{sid}.json").read_text())
                by_id = {o["object_id"]: o.get("color") for o in room["objects"]}
                colors[sid] = [by_id.get(o.object_id) for o in objs]
    report = classify(preds, encodings, objects)
    if args.data:
        report["proposal_color_words"] = color_accuracy(encodings, votes, objects, colors)
    print(f"{report['expressions']} grounding expressions")
    for cause, share in report["causes"].items():
        print(f"  {cause:38s} {100 * share:5.1f} %")
    print(f"right among those with a proposal: {100 * report['right_given_proposal']:.1f} %")
    for rel, v in report["right_given_proposal_by_relation"].items():
        print(f"  {rel:32s} n={v['n']:4d}  {100 * v['right']:5.1f} %")
    if args.data:
        c = report["proposal_color_words"]
        print(f"colour word right for {100 * c['right']:.1f} % of {c['objects']} detected objects")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
