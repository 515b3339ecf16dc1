"""Is model B better than model A on the same examples? Paired bootstrap over two prediction files.

    python bench/paired.py A/predictions.jsonl B/predictions.jsonl --names SFT SFT+GRPO --out paired.json

Both files come from `r1 eval --no-score` on the same pack and split. `--tasks grounding qa`
compares those tasks alone, e.g. a file of every task against one made with `r1 eval --tasks`.
For the per-example metrics (grounding Acc@0.25 / Acc@0.5 by r1_core.eval.grounding, QA EM by
r1_core.eval.qa) it prints A, B, B − A and the 95 % interval of B − A from resampling the
examples (both models together, so the interval reflects the models' disagreement, not the
split's size alone).

CIDEr (QA, dialogue, planning) does not decompose per example: its idf comes from the whole
reference corpus. Its interval resamples the examples and recomputes both models' corpus CIDEr
on each resample (pycocoevalcap's CIDEr-D on the PTB-tokenised text, as `r1 eval` scores it;
--cider-samples resamples, 0 for none). Scan2Cap's CIDEr matches captions to boxes per scene and
is left to `r1 eval --predictions`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.eval.captions import ptb_tokenize  # noqa: E402
from r1_core.eval.grounding import grounding_ious  # noqa: E402
from r1_core.eval.qa import answer_match  # noqa: E402
from training.evaluate import read_predictions  # noqa: E402


def _keys(preds: list[dict]) -> list[tuple]:
    """One key per prediction: its example's inputs, then how many earlier predictions had the
    same inputs (a pack can hold the same dialogue turn twice; each copy is an example)."""
    seen: Counter = Counter()
    keys = []
    for p in preds:
        k = (p["task"], p["scene_id"], p.get("question"), json.dumps(p.get("object_ids")), json.dumps(p.get("references")))
        keys.append(k + (seen[k],))
        seen[k] += 1
    return keys


def per_example(preds: list[dict]) -> dict[str, dict[tuple, float]]:
    """metric -> {example key -> 0/1}: grounding Acc@0.25, Acc@0.5 and QA EM."""
    out: dict[str, dict[tuple, float]] = {"Acc@0.25": {}, "Acc@0.5": {}, "QA EM": {}}
    keyed = list(zip(_keys(preds), preds))
    g = [(k, p) for k, p in keyed if p["task"] == "grounding"]
    if g:
        ious = grounding_ious([p["boxes"][0] if p["boxes"] else None for _, p in g], [p["gt_boxes"][0] for _, p in g])
        for (k, _), iou in zip(g, ious):
            out["Acc@0.25"][k] = float(iou >= 0.25)
            out["Acc@0.5"][k] = float(iou >= 0.5)
    for k, p in keyed:
        if p["task"] == "qa" and p["references"]:
            out["QA EM"][k] = float(answer_match(p["answer"], p["references"])[0])
    return out


CIDER_TASKS = {"qa": "QA CIDEr", "dialogue": "Dialogue CIDEr", "planning": "Planning CIDEr"}


def cider_examples(preds: list[dict]) -> dict[str, dict[tuple, tuple[str, list[str]]]]:
    """metric -> {example key -> (answer, references)} for the CIDEr-scored tasks."""
    out: dict[str, dict[tuple, tuple[str, list[str]]]] = {m: {} for m in CIDER_TASKS.values()}
    for k, p in zip(_keys(preds), preds):
        if p["task"] in CIDER_TASKS and p["references"]:
            out[CIDER_TASKS[p["task"]]][k] = (p["answer"], list(p["references"]))
    return out


def cider_bootstrap(refs: list[list[str]], a: list[str], b: list[str], samples: int,
                    seed: int) -> tuple[float, float, tuple[float, float] | None]:
    """Corpus CIDEr of A and B (fractions, as pycocoevalcap gives them) and the 95 % interval of
    CIDEr(B) − CIDEr(A) over examples resampled with replacement (None when samples is 0)."""
    from pycocoevalcap.cider.cider import Cider

    n = len(refs)
    tok = ptb_tokenize({**{("ref", i): r for i, r in enumerate(refs)},
                        **{("a", i): [t] for i, t in enumerate(a)}, **{("b", i): [t] for i, t in enumerate(b)}})

    def cider(model: str, idx) -> float:
        gts = {j: tok[("ref", int(i))] for j, i in enumerate(idx)}
        res = {j: tok[(model, int(i))] for j, i in enumerate(idx)}
        return float(Cider().compute_score(gts, res)[0])

    full = np.arange(n)
    ca, cb = cider("a", full), cider("b", full)
    if samples == 0:
        return ca, cb, None
    rng = np.random.default_rng(seed)
    diffs = []
    for idx in rng.integers(0, n, size=(samples, n)):
        diffs.append(cider("b", idx) - cider("a", idx))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return ca, cb, (float(lo), float(hi))


def _same_examples(metric: str, a: dict, b: dict) -> list:
    missing = len(set(a) ^ set(b))
    if missing:
        raise ValueError(f"{metric}: {missing} examples are in only one of the two files; "
                         "compare predictions of the same pack, split and --every/--limit")
    return sorted(a, key=repr)


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
    ap.add_argument("--cider-samples", type=int, default=2000,
                    help="resamples for the CIDEr intervals (each recomputes two corpus CIDErs); 0: no interval")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", help="compare only these tasks' predictions (default: all in the files)")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args(argv)
    pa, pb = read_predictions(args.a), read_predictions(args.b)
    if args.tasks:
        pa, pb = ([p for p in preds if p["task"] in args.tasks] for preds in (pa, pb))
        if not (pa and pb):
            raise ValueError(f"--tasks {' '.join(args.tasks)}: no such predictions in "
                             f"{args.a if not pa else args.b}")
    ma, mb = per_example(pa), per_example(pb)
    rows = []
    for metric in ma:
        if not (ma[metric] or mb[metric]):
            continue
        keys = _same_examples(metric, ma[metric], mb[metric])
        a = np.array([ma[metric][k] for k in keys])
        b = np.array([mb[metric][k] for k in keys])
        lo, hi = paired_bootstrap(a, b, args.samples, args.seed)
        rows.append({"metric": metric, "n": len(keys), args.names[0]: 100 * a.mean(), args.names[1]: 100 * b.mean(),
                     "diff": 100 * (b.mean() - a.mean()), "ci95": [100 * lo, 100 * hi],
                     "only_a": int(((a == 1) & (b == 0)).sum()), "only_b": int(((a == 0) & (b == 1)).sum())})
    ca_all, cb_all = cider_examples(pa), cider_examples(pb)
    for metric in ca_all:
        if not (ca_all[metric] or cb_all[metric]):
            continue
        keys = _same_examples(metric, ca_all[metric], cb_all[metric])
        ca, cb, ci = cider_bootstrap([ca_all[metric][k][1] for k in keys], [ca_all[metric][k][0] for k in keys],
                                     [cb_all[metric][k][0] for k in keys], args.cider_samples, args.seed)
        rows.append({"metric": metric, "n": len(keys), args.names[0]: 100 * ca, args.names[1]: 100 * cb,
                     "diff": 100 * (cb - ca), "ci95": None if ci is None else [100 * ci[0], 100 * ci[1]],
                     "only_a": None, "only_b": None})
    print(f"| metric | n | {args.names[0]} | {args.names[1]} | diff | 95% CI | right only in {args.names[0]} | "
          f"right only in {args.names[1]} |\n|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        ci = "–" if r["ci95"] is None else f"[{r['ci95'][0]:+.1f}, {r['ci95'][1]:+.1f}]"
        only = ("–", "–") if r["only_a"] is None else (r["only_a"], r["only_b"])
        print(f"| {r['metric']} | {r['n']} | {r[args.names[0]]:.1f} | {r[args.names[1]]:.1f} | {r['diff']:+.1f} | "
              f"{ci} | {only[0]} | {only[1]} |")
    result = {"a": args.a, "b": args.b, "names": list(args.names), "samples": args.samples, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
