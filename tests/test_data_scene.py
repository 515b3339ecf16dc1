"""ScanNet-preprocessed arrays, class maps, split lists and raw ScanNet preparation on a tiny
hand-made scan in the real layout (ply + segs + aggregation + axis alignment + label tsv)."""
import json

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from r1_core.data import classes as C
from r1_core.data.errors import DataFormatError
from r1_core.data.scannet_raw import prepare_scannet, read_axis_alignment
from r1_core.data.scene import Scene, SceneObject, load_scannet_scene, read_split, save_scannet_scene, write_split


def random_scene(rng, n=500, k=4, cols=6):
    pts = rng.uniform(0, 3, (n, cols)).astype(np.float32)
    inst = rng.integers(0, k + 1, n).astype(np.int32)
    objs = [SceneObject(i, "chair", 5, [*rng.uniform(0, 3, 3), *rng.uniform(0.1, 1, 3), 0.0]) for i in range(k)]
    return Scene("scene0001_00", pts, inst, np.where(inst > 0, 5, 1), objs)


@pytest.mark.parametrize("cols", [6, 9])
def test_save_load_roundtrip(tmp_path, cols):
    s = random_scene(np.random.default_rng(cols), cols=cols)
    save_scannet_scene(s, tmp_path)
    r = load_scannet_scene(tmp_path, s.scene_id)
    np.testing.assert_array_equal(r.points, s.points)
    np.testing.assert_array_equal(r.instance_labels, s.instance_labels)
    np.testing.assert_array_equal(r.semantic_labels, s.semantic_labels)
    np.testing.assert_allclose(r.boxes(), s.boxes())
    assert [o.object_id for o in r.objects] == [0, 1, 2, 3] and r.object(2).label == "chair"
    with pytest.raises(KeyError, match="no object 9"):
        r.object(9)


def test_zero_bbox_rows_skipped_and_errors(tmp_path):
    s = random_scene(np.random.default_rng(0))
    save_scannet_scene(s, tmp_path)
    rows = np.load(tmp_path / "scene0001_00_aligned_bbox.npy")
    np.save(tmp_path / "scene0001_00_aligned_bbox.npy", np.vstack([rows, np.zeros((2, 8), np.float32)]))
    assert len(load_scannet_scene(tmp_path, "scene0001_00").objects) == 4
    np.save(tmp_path / "scene0001_00_aligned_bbox.npy", rows[:, :7])
    with pytest.raises(DataFormatError, match=r"\(K, 8\)"):
        load_scannet_scene(tmp_path, "scene0001_00")
    bad = rows.copy(); bad[1, 6] = 55
    np.save(tmp_path / "scene0001_00_aligned_bbox.npy", bad)
    with pytest.raises(DataFormatError) as e:
        load_scannet_scene(tmp_path, "scene0001_00")
    assert e.value.record == 1 and e.value.field == "nyu40_label"
    np.save(tmp_path / "scene0001_00_aligned_bbox.npy", rows)
    np.save(tmp_path / "scene0001_00_ins_label.npy", np.zeros(3, np.int32))
    with pytest.raises(DataFormatError, match="one per vertex"):
        load_scannet_scene(tmp_path, "scene0001_00")
    with pytest.raises(DataFormatError, match="missing aligned vertices"):
        load_scannet_scene(tmp_path, "scene0002_00")
    with pytest.raises(ValueError, match="yaw"):
        save_scannet_scene(Scene("x", np.zeros((1, 6)), [0], [0], [SceneObject(0, "bed", 4, [0, 0, 0, 1, 1, 1, 0.3])]), tmp_path)


def test_class_maps():
    assert C.nyu40_id("chair") == 5 and C.nyu40_id("refridgerator") == C.nyu40_id("refrigerator") == 24
    assert C.nyu40_id("trash can") == 39 and C.scanrefer_class(39) == "others" and C.scanrefer_class(28) == "shower curtain"
    assert C.scannet18_index(36) == 16 and C.scannet18_index(1) == -1
    assert len(C.SCANNET18_NAMES) == len(C.SCANNET18_NYU40_IDS) == 18 and len(C.NYU40_NAMES) == 40
    with pytest.raises(ValueError, match="unknown class name"):
        C.nyu40_id("spaceship")


def test_split_lists(tmp_path):
    write_split(tmp_path / "scannetv2_train.txt", ["scene0000_00", "scene0001_00"])
    (tmp_path / "scannetv2_val.txt").write_text("scene0002_00\n\nscene0003_00\n")
    assert read_split(tmp_path / "scannetv2_train.txt") == ["scene0000_00", "scene0001_00"]
    assert read_split(tmp_path / "scannetv2_val.txt") == ["scene0002_00", "scene0003_00"]
    (tmp_path / "bad.txt").write_text("scene0000_00 scene0001_00\n")
    with pytest.raises(DataFormatError) as e:
        read_split(tmp_path / "bad.txt")
    assert e.value.record == 0


TSV = ("id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\n"
       "1\tchair\tchair\t100\t5\t11\tchair\tchair\n2\toffice chair\tchair\t50\t5\t11\tchair\tchair\n"
       "3\ttable\ttable\t80\t7\t10\ttable\ttable\n4\tfloor\tfloor\t70\t2\t5\tfloor\tfloor\n5\tmystery\tmystery\t1\t\t\t\t\n")


def make_scan(root, sid="scene0042_00", rng=None):
    """A tiny scan: 3 segments of random vertices, grouped into 2 objects; one segment unlabelled."""
    rng = rng or np.random.default_rng(0)
    d = root / "scans" / sid
    d.mkdir(parents=True)
    n = 60
    xyz = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    v = np.empty(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    v["x"], v["y"], v["z"] = xyz.T
    v["red"], v["green"], v["blue"] = rgb.T
    v["alpha"] = 255
    faces = np.array([([0, 1, 2],), ([2, 3, 4],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(v, "vertex"), PlyElement.describe(faces, "face")], text=False).write(str(d / f"{sid}_vh_clean_2.ply"))
    seg = rng.choice([10, 20, 30], n)
    (d / f"{sid}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"params": {}, "sceneId": sid, "segIndices": seg.tolist()}))
    (d / f"{sid}.aggregation.json").write_text(json.dumps({"sceneId": sid, "appId": "test", "segGroups": [
        {"id": 0, "objectId": 0, "segments": [10], "label": "office chair"},
        {"id": 1, "objectId": 1, "segments": [30], "label": "table"}]}))
    M = np.eye(4); M[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]; M[:3, 3] = [0.5, -0.2, 0.1]
    (d / f"{sid}.txt").write_text("colorHeight = 968\naxisAlignment = " + " ".join(f"{x:.6f}" for x in M.reshape(-1)) + "\nnumColorFrames = 1\n")
    (root / "scannetv2-labels.combined.tsv").write_text(TSV)
    return d, xyz, rgb, seg, M


def test_prepare_raw_scan_matches_bruteforce(tmp_path):
    d, xyz, rgb, seg, M = make_scan(tmp_path)
    ids = prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    assert ids == ["scene0042_00"]
    s = load_scannet_scene(tmp_path / "out", "scene0042_00")
    aligned = xyz @ M[:3, :3].T + M[:3, 3]
    np.testing.assert_allclose(s.points[:, :3], aligned, atol=1e-5)
    np.testing.assert_array_equal(s.points[:, 3:], rgb)
    expect_inst = np.select([seg == 10, seg == 30], [1, 2], 0)
    np.testing.assert_array_equal(s.instance_labels, expect_inst)
    np.testing.assert_array_equal(s.semantic_labels, np.select([seg == 10, seg == 30], [5, 7], 0))
    for o in s.objects:  # boxes from the aligned points of each instance, by brute force
        p = aligned[expect_inst == o.object_id + 1]
        np.testing.assert_allclose(o.box[:3], (p.min(0) + p.max(0)) / 2, atol=1e-5)
        np.testing.assert_allclose(o.box[3:6], p.max(0) - p.min(0), atol=1e-5)
    assert [(o.object_id, o.nyu40_id) for o in s.objects] == [(0, 5), (1, 7)]
    raw = np.load(tmp_path / "out" / "scene0042_00_vert.npy")
    np.testing.assert_allclose(raw[:, :3], xyz, atol=1e-6)
    np.testing.assert_allclose(read_axis_alignment(d / "scene0042_00.txt"), M, atol=1e-6)


def test_prepare_raw_scan_errors(tmp_path):
    d, *_ = make_scan(tmp_path)
    agg = json.loads((d / "scene0042_00.aggregation.json").read_text())
    agg["segGroups"][1]["label"] = "spaceship"
    (d / "scene0042_00.aggregation.json").write_text(json.dumps(agg))
    with pytest.raises(DataFormatError) as e:
        prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    assert e.value.record == 1 and e.value.field == "label" and "aggregation.json" in str(e.value)
    (d / "scene0042_00_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [1, 2]}))
    with pytest.raises(DataFormatError, match="one entry per vertex"):
        prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    (tmp_path / "scannetv2-labels.combined.tsv").unlink()
    with pytest.raises(DataFormatError, match="label-map"):
        prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    (d / "scene0042_00.txt").write_text("axisAlignment = 1 2 3\n")
    with pytest.raises(DataFormatError, match="16 numbers"):
        read_axis_alignment(d / "scene0042_00.txt")


def test_prepare_raw_scan_names_bad_json_missing_aggregation_and_object_id(tmp_path):
    d, *_ = make_scan(tmp_path)
    agg = json.loads((d / "scene0042_00.aggregation.json").read_text())
    del agg["segGroups"][1]["objectId"], agg["segGroups"][1]["id"]
    (d / "scene0042_00.aggregation.json").write_text(json.dumps(agg))
    with pytest.raises(DataFormatError) as e:
        prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    assert e.value.record == 1 and e.value.field == "objectId" and "got None" in str(e.value)
    (d / "scene0042_00.aggregation.json").rename(d / "elsewhere.json")
    with pytest.raises(DataFormatError, match=r"scene0042_00\.aggregation\.json or scene0042_00_vh_clean\.aggregation\.json"):
        prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    (d / "scene0042_00_vh_clean_2.0.010000.segs.json").write_text('{"segIndices": [1, 2,')
    with pytest.raises(DataFormatError, match=r"segs\.json: not valid JSON \(line 1"):
        prepare_scannet(tmp_path / "scans", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "scene0042_00_aligned_vert.npy").exists()


def test_cli_prints_bad_input_as_one_line(tmp_path, capsys):
    from r1_ros.cli import main

    d, *_ = make_scan(tmp_path)
    (d / "scene0042_00_vh_clean_2.0.010000.segs.json").write_text("[]")
    assert main(["data", "prepare-scannet", "--scans", str(tmp_path / "scans"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("r1 data: DataFormatError: ") and "segs.json: expected a JSON dict" in err[-1]
    assert not any("Traceback" in line for line in err)
