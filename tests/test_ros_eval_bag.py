"""`r1 eval-bag` end to end: the real nodes replay the demo bag, every annotation of the question
files is asked over ROS (Ground for ScanRefer, Ask for ScanQA), and the scores are those of the
r1 eval code on what came back. The scripted checkpoint answers its two scripted requests."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from r1_ros.graph import local_dds_environment
from r1_ros.testing import ASK_TEXT, GROUND_TEXT, scripted_checkpoint

pytestmark = pytest.mark.ros
os.environ.update(local_dds_environment())     # this process's DDS participants too (see test_ros_demo)
ROOT = Path(__file__).resolve().parent.parent


def test_eval_bag_asks_every_annotation_over_ros_and_scores_the_answers(tmp_path):
    from r1_core.data import formats as F
    from r1_core.data.synthetic.demo import ensure_demo_assets
    from r1_core.data.tasks import DatasetLayout
    from r1_core.geometry.boxes import box_iou_3d

    assets = ensure_demo_assets(tmp_path / "assets")
    layout = DatasetLayout(assets.dataset_root)
    refer = F.read_scanrefer(layout.path("scanrefer", "val"))[:2]
    F.write_scanrefer([dataclasses.replace(r, description=GROUND_TEXT) for r in refer], layout.path("scanrefer", "val"))
    qa = F.read_scanqa(layout.path("scanqa", "val"))[:1]
    F.write_scanqa([dataclasses.replace(qa[0], question=ASK_TEXT, answers=["the red chair"])],
                   layout.path("scanqa", "val"))
    params = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    params["scene_reasoner"]["ros__parameters"]["torch_threads"] = 1
    params["scene_reasoner"]["ros__parameters"].setdefault("service", {}).update(num_views=2, max_new_tokens=64)
    (tmp_path / "nodes.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "r1_ros.cli", "eval-bag", "--bag", str(assets.bag), "--data", str(assets.dataset_root),
           "--sources", "scanrefer", "scanqa", "--checkpoint", str(scripted_checkpoint(num_views=2)),
           "--params-file", str(tmp_path / "nodes.yaml"), "--out", str(out), "--name", "scripted", "--timeout", "300"]
    wrong = subprocess.run(cmd + ["--camera-namespace", "/d435"], env=dict(os.environ), capture_output=True, text=True,
                           timeout=600)             # a bag recorded under other topics: said before any node starts
    assert wrong.returncode == 1 and "has no message on /d435/color/image_raw; name its camera topics" in wrong.stderr
    assert not (out / "nodes.log").exists()
    proc = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    log = (out / "nodes.log").read_text() if (out / "nodes.log").is_file() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-3000:]

    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["task"] for p in preds] == ["grounding", "grounding", "qa"]
    for p in preds[:2]:                       # Ground answered the script: one box (<ref>3</ref>), its reasoning
        assert p["well_formed"] and p["reasoning"] == "red chair" and len(p["boxes"]) == 1
    assert preds[2]["answer"] == "the red chair" and preds[2]["references"] == ["the red chair"]
    # the scores are the r1 eval code's on these answers: recompute them from the predictions
    report = json.loads((out / "results.json").read_text())
    res = report["results"]["scripted"]
    fusion = report["meta"]["fusion"]        # the map the answers came from: every frame fused (backpressure)
    assert fusion["frames_in"] == 60 and fusion["frames_fused"] == 60 and fusion["frames_dropped"] == 0
    assert fusion["num_voxels"] > 100_000
    ious = [float(box_iou_3d(np.array(p["boxes"], float), np.array(p["gt_boxes"], float))[0, 0]) for p in preds[:2]]
    assert res["scanrefer"]["count"] == 2
    assert res["scanrefer"]["Acc@0.25"] == pytest.approx(np.mean([i >= 0.25 for i in ious]))
    assert res["scanqa"]["EM"] == pytest.approx(1.0)
    assert "Traceback" not in log
    assert "never retrieved" not in proc.stdout + proc.stderr      # clean shutdown of the planner's clients
    saved = (out / "results.json").read_bytes()        # a second run into the same --out: refused, nothing started
    again = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "already holds predictions.jsonl, results.json, results.md" in again.stderr
    assert (out / "results.json").read_bytes() == saved


class _Future:
    def __init__(self, value=None, done: bool = True):
        self.value, self._done = value, done

    def done(self) -> bool:
        return self._done

    def result(self):
        return self.value


class _Goal:
    """A Reason goal whose result comes after `takes` polls, or once cancelled."""

    def __init__(self, takes: int | None):
        self.polls, self.takes, self.cancelled = 0, takes, False
        outer = self

        class Result(_Future):
            def done(self) -> bool:
                outer.polls += 1
                return outer.cancelled or (outer.takes is not None and outer.polls > outer.takes)

        self.result_future = Result(value=type("Wrapped", (), {"result": "the plan"})(), done=False)

    def get_result_async(self):
        return self.result_future

    def cancel_goal_async(self):
        self.cancelled = True
        return _Future()


def test_a_plan_that_takes_too_long_is_cancelled_and_scored_as_a_miss():
    from r1_ros.demo import Planner
    from r1_ros.eval_bag import _plan

    class FakePlanner:
        wait_for = Planner.wait_for

    def reason(goal):
        return type("Client", (), {"send_goal_async": lambda self, g: _Future(goal)})()

    quick, slow = _Goal(takes=2), _Goal(takes=None)
    assert _plan(FakePlanner(), reason(quick), "tidy up", 5.0, lambda: None)[0] == "the plan" and not quick.cancelled
    res, dt = _plan(FakePlanner(), reason(slow), "tidy up", 0.3, lambda: None)
    assert res is None and slow.cancelled and 0.3 <= dt < 5.0
    with pytest.raises(RuntimeError, match="scene_reasoner exited"):       # a dead node still ends the run
        _plan(FakePlanner(), reason(_Goal(takes=None)), "tidy up", 0.3, lambda: "scene_reasoner exited")
