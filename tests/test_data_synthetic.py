"""Synthetic world: determinism, geometry/cloud consistency, unambiguous referring expressions
(resolved from their text by the independent parser), QA answers against brute force, the
demo scene's promises, and a full dataset that the readers load back unchanged."""
import json

import numpy as np
import pytest

from r1_core.data.graph import RefQuery, SceneGraph, parse_expression
from r1_core.data.synthetic.demo import demo_room
from r1_core.data.synthetic.language import annotate_scene
from r1_core.data.synthetic.world import SynthRoom, generate_room
from r1_core.data.tasks import DatasetLayout, load_task_samples
from r1_core.data.scene import load_scannet_scene

SEEDS = [0, 1, 4, 9, 17, 23]


@pytest.fixture(scope="module")
def rooms():
    out = [generate_room(seed=s) for s in SEEDS] + [generate_room(seed=5, kind=k) for k in ("bedroom", "living room")]
    return [(r, r.to_scene()) for r in out]


def test_deterministic_by_seed():
    a, b, c = generate_room(seed=3), generate_room(seed=3), generate_room(seed=4)
    assert a.to_json() == b.to_json() and a.to_json() != c.to_json()
    np.testing.assert_array_equal(a.to_scene().points, b.to_scene().points)
    assert SynthRoom.from_json(json.loads(json.dumps(a.to_json()))).to_json() == a.to_json()


def test_rooms_are_scannet_like(rooms):
    for room, scene in rooms:
        W, D, H = room.size
        assert 4.0 <= W <= 8.0 and 4.0 <= D <= 8.0 and 2.5 <= H <= 3.0
        furn = room.furniture()
        assert 10 <= len(furn) <= 25, (room.kind, len(furn))
        assert 40000 <= len(scene.points) <= 100000
        assert scene.points.shape[1] == 6 and scene.points[:, 3:].min() >= 0 and scene.points[:, 3:].max() <= 255
        ids = {o.object_id for o in scene.objects}
        assert set(np.unique(scene.instance_labels)) - {0} <= {i + 1 for i in ids}
        for o in scene.objects:  # every point of an object lies in its box (by brute force)
            p = scene.object_points(o.object_id)[:, :3]
            lo, hi = o.box[:3] - o.box[3:6] / 2 - 1e-4, o.box[:3] + o.box[3:6] / 2 + 1e-4
            assert np.all((p >= lo) & (p <= hi))
        for o in furn:  # parts of different objects never interpenetrate (the renderer relies on it)
            for q in furn:
                if q.object_id <= o.object_id:
                    continue
                for a0, a1 in zip(o.parts_lo, o.parts_hi):
                    for b0, b1 in zip(q.parts_lo, q.parts_hi):
                        overlap = np.minimum(a1, b1) - np.maximum(a0, b0)
                        assert not np.all(overlap > 1e-6), (room.scene_id, o.label, q.label)
    kinds = {r.kind for r, _ in rooms}
    assert {"bedroom", "living room", "office", "kitchen", "bathroom"} <= kinds


def test_several_instances_with_colours(rooms):
    from r1_core.data.synthetic.catalog import CLASSES
    multi = distinct = 0
    for room, scene in rooms:
        for lab in {o.label for o in room.furniture()}:
            cols = [o.color for o in room.furniture() if o.label == lab]
            if len(cols) >= 2 and len(CLASSES[lab].colors) >= len(cols):
                multi += 1
                distinct += len(set(cols)) == len(cols)
            assert all(c in CLASSES[lab].colors for c in cols)
    assert multi >= 5 and distinct >= 0.6 * multi   # mostly distinct; some repeats so relations matter


def test_relations_match_bruteforce_geometry(rooms):
    room, scene = rooms[1]
    g = SceneGraph(scene)
    for a, r, b in g.triples():
        na, nb = g.nodes[a], g.nodes[b]
        if r == "on":
            assert nb.lo[2] + 0.1 <= na.lo[2] <= nb.hi[2] + 0.04
        if r == "under":
            assert na.hi[2] < nb.hi[2]
        if r == "next to":
            gap = np.maximum(0, np.maximum(na.lo[:2] - nb.hi[:2], nb.lo[:2] - na.hi[:2]))
            assert np.linalg.norm(gap) < 0.5
    built = [(o.object_id, o.support) for o in room.objects if o.place == "on"]
    assert all(g.holds(a, "on", b) for a, b in built)
    built = [(o.object_id, o.support) for o in room.objects if o.place == "under"]
    assert all(g.holds(a, "under", b) for a, b in built)


def test_every_expression_resolves_to_exactly_its_target(rooms):
    n = 0
    for room, scene in rooms:
        ann = annotate_scene(scene, room, np.random.default_rng(1))
        g = SceneGraph(scene)
        ids = {o.object_id for o in scene.objects}
        for r in ann.scanrefer:
            assert r.object_id in ids
            assert g.resolve(parse_expression(r.description)) == [r.object_id], r.description
            assert g.resolve(ann.queries[(r.object_id, r.ann_id)]) == [r.object_id]
            n += 1
        for r in ann.nr3d:
            assert g.resolve(parse_expression(r.utterance)) == [r.target_id], r.utterance
            assert len(g.of_class(r.instance_type)) >= 2       # Nr3D: same-class distractors exist
        for r in ann.scanqa + []:
            assert set(r.object_ids) <= ids
    assert n > 150


def test_parser_is_not_trivial():
    q = parse_expression("there is a red chair. it is next to the white bed.")
    assert q == RefQuery("chair", "red", "next to", RefQuery("bed", "white"))
    assert parse_expression("the largest couch") == RefQuery("sofa", superlative="largest")
    assert parse_expression("the trash bin to the left of the desk as seen from the door") == \
        RefQuery("trash can", None, "left of", RefQuery("desk"))
    with pytest.raises(ValueError, match="no object noun"):
        parse_expression("it is over there")


def test_qa_answers_against_bruteforce(rooms):
    for room, scene in rooms[:4]:
        ann = annotate_scene(scene, room, np.random.default_rng(2))
        g = SceneGraph(scene)
        for r in ann.scanqa:
            q = r.question
            if q.startswith(("how many", "what is the number")):
                noun = next(lab for lab in g.nodes.values() if lab.label == r.object_names[0]).label if r.object_names else None
                count = sum(1 for o in room.furniture() if o.label == noun)
                assert r.answers[0] == str(count) and len(r.object_ids) == count
            if q.startswith("is there"):
                assert (r.answers == ["yes"]) == bool(r.object_ids)
            if q.startswith(("what color", "what is the color")):
                assert r.answers[0] == room.object(r.object_ids[0]).color
        for r in ann.sqa3d:
            assert r.position is not None and abs(np.linalg.norm(r.rotation) - 1) < 1e-6


def test_demo_scene_promises():
    room = demo_room()
    assert room.to_json() == demo_room().to_json()
    g = SceneGraph(room.to_scene())
    bed = g.of_class("bed")
    chairs = g.of_class("chair")
    red = [c for c in chairs if g.nodes[c].color == "red"]
    assert len(bed) == 1 and len(red) == 1 and len(chairs) == 2
    other = [c for c in chairs if c != red[0]][0]
    assert g.holds(red[0], "next to", bed[0]) and not g.holds(other, "next to", bed[0])
    assert g.resolve(parse_expression("the red chair next to the bed")) == red


def test_dataset_roundtrip(tmp_path):
    from r1_core.data import formats as F
    from r1_core.data.synthetic.dataset import write_dataset

    st = write_dataset(tmp_path, train_scenes=2, val_scenes=1, seed=3, progress=False)
    lay = DatasetLayout(tmp_path)
    assert lay.scene_ids("train") == st.scenes["train"] and lay.scene_ids("val") == st.scenes["val"]
    for split in ("train", "val"):
        samples = load_task_samples(lay, split)
        assert {s.task for s in samples} >= {"grounding", "qa", "dialogue", "reasoning"}
        for s in samples:
            scene = load_scannet_scene(lay.scannet_dir, s.scene_id)
            assert all(scene.has_object(i) for i in s.object_ids)
            if s.object_ids and s.task != "reasoning":
                np.testing.assert_allclose(s.boxes, scene.boxes(s.object_ids))
        recs = F.read_scanrefer(lay.path("scanrefer", split))   # write → read → write gives the same file
        again = F.write_scanrefer(recs, tmp_path / "again.json")
        assert again.read_text() == lay.path("scanrefer", split).read_text()
        assert st.records[f"{split}/scanrefer"] == len(recs)
    kept, rejected = st.cot["train"]
    assert kept > 0 and rejected <= 0.05 * (kept + rejected)
    nr3d = F.read_nr3d_csv(lay.path("nr3d_csv", "train"))
    assert {r.scan_id for r in nr3d} <= set(st.scenes["train"] + st.scenes["val"])


def test_more_training_rooms_keep_the_held_out_rooms(tmp_path):
    """val_start: a larger dataset holds out the very rooms (and annotations) of a smaller one."""
    from r1_core.data.synthetic.dataset import write_dataset

    small = write_dataset(tmp_path / "small", train_scenes=2, val_scenes=1, seed=3, progress=False)
    big = write_dataset(tmp_path / "big", train_scenes=3, val_scenes=1, seed=3, progress=False, val_start=2)
    assert big.scenes["val"] == small.scenes["val"] == ["synth0002_00"]
    assert big.scenes["train"] == ["synth0000_00", "synth0001_00", "synth0003_00"]
    for source in ("scanrefer", "scanqa", "scene30k"):
        a, b = DatasetLayout(tmp_path / "small").path(source, "val"), DatasetLayout(tmp_path / "big").path(source, "val")
        assert a.read_bytes() == b.read_bytes(), source
    with pytest.raises(ValueError, match="val_start"):
        write_dataset(tmp_path / "bad", train_scenes=2, val_scenes=1, progress=False, val_start=3)


def test_named_held_out_rooms_keep_the_training_rooms_and_add_more(tmp_path):
    """val_rooms: holding out room 1 and also room 4 trains on the rooms of val_start=1 and
    writes room 1's very annotations."""
    from r1_core.data.cli import parse_room_ranges
    from r1_core.data.synthetic.dataset import write_dataset

    base = write_dataset(tmp_path / "base", train_scenes=3, val_scenes=1, seed=3, progress=False, val_start=1,
                         cot=False)
    more = write_dataset(tmp_path / "more", train_scenes=3, val_scenes=2, seed=3, progress=False, cot=False,
                         val_rooms=parse_room_ranges("4,1"))
    assert more.scenes["train"] == base.scenes["train"] == ["synth0000_00", "synth0002_00", "synth0003_00"]
    assert more.scenes["val"] == ["synth0001_00", "synth0004_00"]
    a = json.loads(DatasetLayout(tmp_path / "base").path("scanrefer", "val").read_text())
    b = json.loads(DatasetLayout(tmp_path / "more").path("scanrefer", "val").read_text())
    assert a and a == [r for r in b if r["scene_id"] == "synth0001_00"]
    assert DatasetLayout(tmp_path / "base").path("scanrefer", "train").read_bytes() == \
        DatasetLayout(tmp_path / "more").path("scanrefer", "train").read_bytes()
    assert parse_room_ranges("100-102,7") == [100, 101, 102, 7]
    for bad, why in (("3-1", "A <= B"), ("a-3", "range"), ("1-3,2", "overlap"), ("", "room index")):
        with pytest.raises(ValueError, match=why):
            parse_room_ranges(bad)
    with pytest.raises(ValueError, match="val_start or val_rooms"):
        write_dataset(tmp_path / "bad", train_scenes=2, val_scenes=1, progress=False, val_start=0, val_rooms=[1])
    with pytest.raises(ValueError, match="val_scenes: expected 2"):
        write_dataset(tmp_path / "bad", train_scenes=2, val_scenes=1, progress=False, val_rooms=[1, 5])


def test_named_training_rooms_are_the_very_rooms_of_a_larger_dataset(tmp_path):
    """train_rooms: rooms 2 and 0 alone (e.g. rooms no earlier stage saw, for GRPO's prompts) are
    written exactly as the dataset of rooms 0-2 writes them; a training room may not be held out."""
    from r1_core.data.synthetic.dataset import write_dataset

    base = write_dataset(tmp_path / "base", train_scenes=3, val_scenes=0, seed=3, progress=False, cot=False)
    some = write_dataset(tmp_path / "some", train_scenes=2, val_scenes=0, seed=3, progress=False, cot=False,
                         train_rooms=[2, 0])
    assert base.scenes["train"] == ["synth0000_00", "synth0001_00", "synth0002_00"]
    assert some.scenes["train"] == ["synth0000_00", "synth0002_00"] and not some.scenes.get("val")
    a = json.loads(DatasetLayout(tmp_path / "base").path("scanrefer", "train").read_text())
    b = json.loads(DatasetLayout(tmp_path / "some").path("scanrefer", "train").read_text())
    assert b and b == [r for r in a if r["scene_id"] != "synth0001_00"]
    with pytest.raises(ValueError, match=r"rooms \[1\] are also held out"):
        write_dataset(tmp_path / "bad", train_scenes=2, val_scenes=1, progress=False, val_start=1, train_rooms=[1, 4])
    with pytest.raises(ValueError, match="train_scenes: expected 2"):
        write_dataset(tmp_path / "bad", train_scenes=3, val_scenes=0, progress=False, train_rooms=[1, 4])
