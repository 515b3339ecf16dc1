"""Which GRPO checkpoint to keep? Picks one on dev rooms, by a rule fixed before the run.

    python bench/select_checkpoint.py --baseline dev/sft/predictions.jsonl \
        --candidates checkpoint-7=dev/checkpoint-7/predictions.jsonl final=dev/final/predictions.jsonl \
        --out dev/selection.json

All files come from `r1 eval --no-score` on the same dev pack (rooms in neither the training nor
the held-out split). Each candidate's gains over the baseline (the SFT checkpoint) in grounding
Acc@0.25 and QA EM are measured on the same examples; the pick is the candidate whose smaller
gain is largest (the goal is to beat SFT on every metric, not on their sum), ties going to the
larger sum of the two gains, then to the later candidate. Per-example metrics only (those of
bench/paired.py), so it runs where Java, and with it CIDEr's PTB tokeniser, is missing: on the
GPU machine, between GRPO and the held-out evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paired import _same_examples, per_example  # noqa: E402
from training.evaluate import read_predictions  # noqa: E402

RULE_METRICS = ("Acc@0.25", "QA EM")


def gains(mb: dict[str, dict[tuple, float]], candidate: list[dict]) -> dict[str, dict[str, float]]:
    """metric -> {baseline, candidate, gain} in percent, on the examples both files hold; `mb` is
    the baseline's per_example()."""
    mc = per_example(candidate)
    out = {}
    for metric in mb:
        keys = _same_examples(metric, mb[metric], mc[metric])
        if not keys:
            raise ValueError(f"{metric}: no examples in the baseline's predictions; "
                             "evaluate with --tasks grounding qa")
        b = 100 * float(np.mean([mb[metric][k] for k in keys]))
        c = 100 * float(np.mean([mc[metric][k] for k in keys]))
        out[metric] = {"n": len(keys), "baseline": b, "candidate": c, "gain": c - b}
    return out


def select(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """The candidate (in the given order) whose smaller RULE_METRICS gain is largest; ties to the
    larger sum, then to the later candidate."""
    def score(name: str) -> tuple[float, float]:
        g = [table[name][m]["gain"] for m in RULE_METRICS]
        return round(min(g), 9), round(sum(g), 9)

    names = list(table)
    return max(reversed(names), key=score)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="dev predictions.jsonl of the SFT checkpoint")
    ap.add_argument("--candidates", nargs="+", required=True, metavar="NAME=PREDICTIONS",
                    help="dev predictions of each GRPO checkpoint, in training order")
    ap.add_argument("--out", help="write the table and the pick as JSON here")
    args = ap.parse_args(argv)
    baseline = per_example(read_predictions(args.baseline))    # once, not once per candidate
    table = {}
    for item in args.candidates:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--candidates: expected NAME=PREDICTIONS, got {item!r}")
        table[name] = gains(baseline, read_predictions(path))
    pick = select(table)
    first = next(iter(table.values()))
    print("| candidate | " + " | ".join(f"{m} (gain)" for m in first) + " |")
    print("|---|" + "---:|" * len(first))
    print("| baseline | " + " | ".join(f"{first[m]['baseline']:.1f}" for m in first) + " |")
    for name, row in table.items():
        mark = " (pick)" if name == pick else ""
        print(f"| {name}{mark} | " + " | ".join(f"{row[m]['candidate']:.1f} ({row[m]['gain']:+.1f})" for m in row) + " |")
    result = {"baseline": args.baseline, "rule": f"max over candidates of min gain in {list(RULE_METRICS)}",
              "candidates": table, "pick": pick}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
