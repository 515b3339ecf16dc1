"""GRPO reward curves of the two runs in this folder -> grpo_rewards.png (python plot_rewards.py)."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
RUNS = {"lr 5e-5 (the recipe, 60 steps)": HERE / "grpo_metrics.jsonl",
        "lr 2e-4 (OOM after step 29)": HERE / "lr2e-4" / "grpo_metrics.jsonl"}
KEYS = ["reward_perception", "reward_semantic", "reward_format", "kl"]

fig, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.2))
for name, path in RUNS.items():
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for ax, key in zip(axes, KEYS):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=name)
for ax, key in zip(axes, KEYS):
    ax.set_title(key)
    ax.set_xlabel("GRPO step (16 prompts x 8 completions)")
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "grpo_rewards.png", dpi=80)
