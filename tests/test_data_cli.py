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


def test_annotations_of_other_scenes_and_missing_objects_are_named(tmp_path, caplog):
    import json

    import pytest

    from r1_core.data.errors import DataFormatError

    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--scenes", "1", "--val-scenes", "1", "--seed", "5", "--no-cot"]) == 0
    lay = DatasetLayout(out)
    path = lay.path("scanqa", "val")
    records = json.loads(path.read_text())
    n = len(records)
    stray = dict(records[0], scene_id="scene0707_00", question_id="stray")   # a scene this tree lacks
    path.write_text(json.dumps(records + [stray]))
    with pytest.raises(DataFormatError) as e:        # without the split's scenes: its boxes are missing
        load_task_samples(lay, "val", sources=["scanqa"])
    assert str(path) in str(e.value) and e.value.record == n and "scene0707_00_aligned_bbox.npy" in str(e.value)
    with caplog.at_level("WARNING"):
        kept = load_task_samples(lay, "val", sources=["scanqa"], scene_ids=lay.scene_ids("val"))
    assert len(kept) == n and "1 of %d records are of scenes outside split 'val'" % (n + 1) in caplog.text
    bad = next(i for i, r in enumerate(records) if r.get("object_ids"))
    records[bad]["object_ids"] = [999]
    path.write_text(json.dumps([stray] + records))     # the stray record first: indices are the file's
    with pytest.raises(DataFormatError) as e:
        load_task_samples(lay, "val", sources=["scanqa"], scene_ids=lay.scene_ids("val"))
    assert e.value.record == bad + 1 and str(path) in str(e.value) and "no object 999" in str(e.value)


def test_pack_checks_every_input_before_packing(tmp_path, capsys):
    import pytest

    from r1_core.data.errors import DataFormatError
    from training.pack import PackConfig, build_pack

    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--scenes", "1", "--val-scenes", "1", "--seed", "5", "--no-cot"]) == 0
    lay = DatasetLayout(out)
    with pytest.raises(DataFormatError, match=r"scene30k_train\.jsonl: missing Scene-30K .* `r1 data cot --dataset"):
        build_pack(out, tmp_path / "pack", PackConfig(frames=4), progress=False)
    capsys.readouterr()          # train all says so before its detector stage trains
    assert main(["train", "all", "--recipe", "config/train/tiny.yaml", "--data", str(out), "--out", str(tmp_path / "run")]) == 2
    assert "r1 train: DataFormatError: " in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["data", "cot", "--dataset", str(out), "--split", "train", "--sources", "scanrefer,scanqa"]) == 0
    cot = load_task_samples(lay, "train", sources=["scene30k"])     # the synthetic tree has SQA3D and 3D-LLM too
    assert {s.meta["source"] for s in cot} == {"scanrefer", "scanqa"} and {s.meta["task"] for s in cot} == {"grounding", "qa"}
    val = lay.scene_ids("val")[0]
    (out / "synthetic" / f"{val}.json").rename(tmp_path / "room.json")      # the val scene loses its frames
    with pytest.raises(DataFormatError, match=f"scene {val}: no frames to select views from"):
        build_pack(out, tmp_path / "pack", PackConfig(frames=4), progress=False)
    assert not any((tmp_path / "pack" / "scenes").iterdir())                 # found before any scene was packed
    assert "pack train: 1 scenes; annotations scene30k, scanrefer" in capsys.readouterr().out
