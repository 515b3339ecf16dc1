"""scripts/gpu/nano_pipeline.sh, the script every GPU run of R1-nano goes through, end to end on the
tiny recipe on the CPU: every stage runs once and is skipped when run again; EVAL_TASKS limits the
evaluations; SFT_FROM trains GRPO from a given SFT checkpoint, GRPO_ROOMS takes its prompts from
rooms of their own, and EVAL_SFT=0 skips that checkpoint's evaluation."""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu" / "nano_pipeline.sh"


def _run(workdir: Path, **env: str) -> str:
    full = {**os.environ, "PYTHON": sys.executable, "RECIPE": "config/train/tiny.yaml", "SCENES": "2",
            "VAL_SCENES": "1", "VAL_FROM": "", "WORKERS": "2", "EVAL_BATCH": "8", "UNIFORM": "0",
            "SETS": "pack.frames=20 pack.caption_per_scene=2", **env}
    done = subprocess.run(["bash", str(SCRIPT), str(workdir)], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _tasks(predictions: Path) -> Counter:
    return Counter(json.loads(line)["task"] for line in predictions.read_text().splitlines())


@pytest.mark.timeout(1800)   # three pipeline runs and the dev selection: 13 min on 2 cores shared with another job
def test_the_pipeline_runs_every_stage_once_and_grpo_from_a_given_sft_checkpoint(tmp_path):
    out = _run(tmp_path / "a", EVAL_TASKS="grounding qa")
    stages = ["synth", "detector", "pack", "sft", "grpo", "eval_sft", "eval_grpo"]
    assert [s for s in stages if f"=== {s} done" in out] == stages
    for name in ("sft", "grpo"):
        tasks = _tasks(tmp_path / "a" / "eval" / name / "predictions.jsonl")
        assert set(tasks) == {"grounding", "qa", "scan2cap"}, tasks        # no dialogue or planning
    assert (tmp_path / "a" / "run" / "grpo" / "final" / "adapter.safetensors").is_file()
    again = _run(tmp_path / "a", EVAL_TASKS="grounding qa")
    assert "=== sft" not in again and "=== grpo" not in again and "=== all done" in again

    sft = tmp_path / "a" / "run" / "sft" / "final"
    out = _run(tmp_path / "b", SFT_FROM=str(sft), EVAL_SFT="0", EVAL_TASKS="grounding", GRPO_ROOMS="7",
               SETS="pack.frames=20 pack.caption_per_scene=2 grpo.save_every=2 grpo.sft_coef=0.25")
    assert "=== detector" not in out and "=== sft " not in out and "=== grpo done" in out
    # GRPO_ROOMS: GRPO's prompts from room 7 alone (its own dataset and pack), the SFT term's from rooms 0-1
    assert json.loads((tmp_path / "b" / "run" / "grpo_pack" / "pack.json").read_text())["splits"]["train"] == ["synth0007_00"]
    assert f"prompts of 1 scenes from {tmp_path / 'b' / 'run' / 'grpo_pack'}; SFT term:" in out
    assert f"examples of 2 scenes from {tmp_path / 'b' / 'run' / 'pack'}" in out
    assert (tmp_path / "b" / "run" / "sft" / "final").resolve() == sft.resolve()
    assert not (tmp_path / "b" / "eval" / "sft").exists()
    assert set(_tasks(tmp_path / "b" / "eval" / "grpo" / "predictions.jsonl")) == {"grounding", "scan2cap"}

    # grpo_dev_select.sh beside it: the SFT checkpoint and each GRPO checkpoint on a dev pack (here
    # run a's), the pick by bench/select_checkpoint.py, and held-out predictions for a pick other than final
    env = {**os.environ, "PYTHON": sys.executable, "STEPS": "2", "EVAL_BATCH": "8", "EVAL_TASKS": "grounding"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "grpo_dev_select.sh"), str(tmp_path / "b"),
                           str(tmp_path / "a" / "run" / "pack")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for name in ("sft", "checkpoint-2", "final"):
        assert set(_tasks(tmp_path / "b" / "dev" / name / "predictions.jsonl")) == {"grounding", "qa"}, name
    selection = json.loads((tmp_path / "b" / "dev" / "selection.json").read_text())
    assert list(selection["candidates"]) == ["checkpoint-2", "final"] and selection["pick"] in selection["candidates"]
    assert f"=== pick: {selection['pick']}" in done.stdout
    picked = tmp_path / "b" / "eval" / f"grpo_{selection['pick']}" / "predictions.jsonl"
    assert picked.is_file() == (selection["pick"] != "final")

    # EXTRA_CANDIDATES: dev predictions made before (here an oracle's: the reference boxes and
    # answers) come first; picked, they get no held-out predictions. EVAL_FINAL=1 with final the
    # only candidate: final's held-out predictions are made here.
    oracle = tmp_path / "oracle.jsonl"
    with open(tmp_path / "b" / "dev" / "sft" / "predictions.jsonl") as f, open(oracle, "w") as g:
        for line in f:
            p = json.loads(line)
            if p["task"] == "grounding":
                p["boxes"] = p["gt_boxes"][:1]
            elif p["references"]:
                p["answer"] = p["references"][0]
            g.write(json.dumps(p) + "\n")
    for extra, final_only, want in ((f"oracle={oracle}", "0", "oracle"), ("", "1", "final")):
        shutil.rmtree(tmp_path / "b" / "eval", ignore_errors=True)
        env.update(EXTRA_CANDIDATES=extra, EVAL_FINAL=final_only, STEPS="2" if extra else "")
        done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "grpo_dev_select.sh"), str(tmp_path / "b"),
                               str(tmp_path / "a" / "run" / "pack")], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        selection = json.loads((tmp_path / "b" / "dev" / "selection.json").read_text())
        names = ["oracle", "checkpoint-2", "final"] if extra else ["final"]
        assert list(selection["candidates"]) == names and selection["pick"] == want
        made = sorted(p.name for p in (tmp_path / "b" / "eval").glob("grpo_*")) if (tmp_path / "b" / "eval").exists() else []
        assert made == ([] if extra else ["grpo_final"]), made
