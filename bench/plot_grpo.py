"""GRPO reward curves of one or more runs (their metrics.jsonl) side by side -> a PNG.

    python bench/plot_grpo.py "lr 5e-5=runs/a/metrics.jsonl" "lr 2e-4=runs/b/metrics.jsonl" --out grpo_rewards.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.data.formats import load_jsonl  # noqa: E402

FIRST = ["reward_perception", "reward_semantic", "reward_format"]   # the paper's rewards, then any others, then KL


def panels(runs: list[list[dict]]) -> list[str]:
    """One panel per reward any run logged (its mean, not its _std), then KL."""
    logged = {k for rows in runs for r in rows for k in r
              if k.startswith("reward_") and not k.endswith("_std")}
    return [k for k in FIRST if k in logged] + sorted(logged - set(FIRST)) + ["kl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=PATH to a GRPO metrics.jsonl")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()
    runs = []
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"run {spec!r}: expected LABEL=PATH")
        rows = [r for r in load_jsonl(path, "GRPO metrics") if r.get("stage", "grpo") == "grpo" and "reward_perception" in r]
        if not rows:
            raise SystemExit(f"{path}: no GRPO rows with rewards")
        runs.append((label, rows))
    keys = panels([rows for _, rows in runs])
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for label, rows in runs:
        for ax, key in zip(axes, keys):
            have = [r for r in rows if key in r]   # a reward the run did not weight is not plotted
            ax.plot([r["step"] for r in have], [r[key] for r in have], marker="o", label=label)
    for ax, key in zip(axes, keys):
        ax.set_title(key)
        ax.set_xlabel("GRPO step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)


if __name__ == "__main__":
    main()
