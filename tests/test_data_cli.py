"""`r1 data …` end to end on tiny sizes: synth → files the readers load; bag → frames; cot."""
import numpy as np

from r1_core.data.bags import read_bag
from r1_core.data.tasks import DatasetLayout, load_task_samples
from r1_ros.cli import main


def test_cli_synth_cot_and_bag(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--scenes", "1", "--val-scenes", "1", "--seed", "5", "--no-cot"]) == 0
    lay = DatasetLayout(out)
    assert len(lay.scene_ids("train")) == 1 and not lay.path("scene30k", "train").exists()
    assert main(["data", "cot", "--dataset", str(out), "--split", "val"]) == 0
    assert "kept" in capsys.readouterr().out
    samples = load_task_samples(lay, "val")
    assert any(s.task == "reasoning" for s in samples)
    sid = lay.scene_ids("val")[0]
    assert main(["data", "bag", "--scene", sid, "--dataset", str(out), "--out", str(tmp_path / "bag"), "--frames", "3",
                 "--storage", "sqlite3"]) == 0
    frames = list(read_bag(tmp_path / "bag"))
    assert len(frames) == 3 and frames[0].color.shape == (480, 640, 3) and (frames[0].depth > 0).mean() > 0.5
    assert not np.allclose(frames[0].T_map_optical, frames[2].T_map_optical)
