"""Is model B better than model A on the same examples? Paired bootstrap over two prediction files.

    python bench/paired.py A/predictions.jsonl B/predictions.jsonl --names SFT SFT+GRPO --out paired.json

Both files come from `r1 eval --no-score` on the same pack and split. For the per-example metrics
(grounding Acc@0.25 / Acc@0.5 by r1_core.eval.grounding, QA EM by r1_core.eval.qa) it prints A, B,
B − A and the 95 % interval of B − A from resampling the examples (both models together, so
the interval reflects the models' disagreement, not the split's size alone). Corpus metrics
(CIDEr) do not decompose per example and are left to `r1 eval --predictions`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.eval.grounding import grounding_ious  # noqa: E402
from r1_core.eval.qa import answer_match  # noqa: E402
from training.evaluate import read_predictions  # noqa: E402


def _key(p: dict) -> tuple:
    return p["task"], p["scene_id"], p.get("question"), json.dumps(p.get("object_ids")), json.dumps(p.get("references"))


def per_example(preds: list[dict]) -> dict[str, dict[tuple, float]]:
    """metric -> {example key -> 0/1}: grounding Acc@0.25, Acc@0.5 and QA EM."""
    out: dict[str, dict[tuple, float]] = {"Acc@0.25": {}, "Acc@0.5": {}, "QA EM": {}}
    g = [p for p in preds if p["task"] == "grounding"]
    if g:
        ious = grounding_ious([p["boxes"][0] if p["boxes"] else None for p in g], [p["gt_boxes"][0] for p in g])
        for p, iou in zip(g, ious):
            out["Acc@0.25"][_key(p)] = float(iou >= 0.25)
            out["Acc@0.5"][_key(p)] = float(iou >= 0.5)
    for p in preds:
        if p["task"] == "qa" and p["references"]:
            out["QA EM"][_key(p)] = float(answer_match(p["answer"], p["references"])[0])
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """95 % interval of mean(b) − mean(a) over examples resampled with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(samples, len(a)))
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="predictions.jsonl of the baseline")
    ap.add_argument("b", help="predictions.jsonl of the model compared with it")
    ap.add_argument("--names", nargs=2, default=("A", "B"))
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args(argv)
    ma, mb = per_example(read_predictions(args.a)), per_example(read_predictions(args.b))
    rows = []
    for metric in ma:
        keys = sorted(set(ma[metric]) & set(mb[metric]), key=repr)
        if not keys:
            continue
        missing = len(set(ma[metric]) ^ set(mb[metric]))
        if missing:
            raise ValueError(f"{metric}: {missing} examples are in only one of the two files; "
                             "compare predictions of the same pack, split and --every/--limit")
        a = np.array([ma[metric][k] for k in keys])
        b = np.array([mb[metric][k] for k in keys])
        lo, hi = paired_bootstrap(a, b, args.samples, args.seed)
        rows.append({"metric": metric, "n": len(keys), args.names[0]: 100 * a.mean(), args.names[1]: 100 * b.mean(),
                     "diff": 100 * (b.mean() - a.mean()), "ci95": [100 * lo, 100 * hi],
                     "only_a": int(((a == 1) & (b == 0)).sum()), "only_b": int(((a == 0) & (b == 1)).sum())})
    print(f"| metric | n | {args.names[0]} | {args.names[1]} | diff | 95% CI | right only in {args.names[0]} | "
          f"right only in {args.names[1]} |\n|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['metric']} | {r['n']} | {r[args.names[0]]:.1f} | {r[args.names[1]]:.1f} | {r['diff']:+.1f} | "
              f"[{r['ci95'][0]:+.1f}, {r['ci95'][1]:+.1f}] | {r['only_a']} | {r['only_b']} |")
    result = {"a": args.a, "b": args.b, "names": list(args.names), "samples": args.samples, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
