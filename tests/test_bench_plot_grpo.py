"""bench/plot_grpo.py: a panel for every reward a run logged, and a PNG with runs that weight different rewards."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_plot_grpo", ROOT / "bench" / "plot_grpo.py")
plot_grpo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_grpo)


def _rows(extra: dict) -> list[dict]:
    base = {"stage": "grpo", "reward_perception": 0.4, "reward_perception_std": 0.3, "reward_semantic": 0.8,
            "reward_format": 1.0, "kl": 0.001}
    return [{"step": s, **base, **extra} for s in (0, 5)]


def test_panels_are_the_papers_rewards_then_the_others_then_kl():
    assert plot_grpo.panels([_rows({})]) == ["reward_perception", "reward_semantic", "reward_format", "kl"]
    both = plot_grpo.panels([_rows({}), _rows({"reward_exact_match": 0.5, "reward_exact_match_std": 0.4})])
    assert both == ["reward_perception", "reward_semantic", "reward_format", "reward_exact_match", "kl"]


def test_png_of_two_runs_with_different_rewards(tmp_path, monkeypatch):
    paths = []
    for name, extra in (("a", {}), ("b", {"reward_exact_match": 0.5})):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in _rows(extra)))
        paths.append(f"{name}={p}")
    out = tmp_path / "r.png"
    monkeypatch.setattr("sys.argv", ["plot_grpo.py", *paths, "--out", str(out)])
    plot_grpo.main()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
