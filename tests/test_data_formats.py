"""Readers/writers of the real annotation formats on small hand-written files with the real
field names and quirks; round trips; errors that name file, record and field; TaskSample."""
import json

import numpy as np
import pytest

from r1_core.data import formats as F
from r1_core.data.errors import DataFormatError
from r1_core.data.tasks import TaskSample, to_task_samples
from r1_core.model.answer import parse_box

BOXES = {("scene0000_00", 3): np.array([1, 2, 0.5, 0.5, 0.5, 1.0, 0], np.float32),
         ("scene0000_00", 7): np.array([3, 1, 0.4, 1.0, 2.0, 0.8, 0], np.float32)}


def lookup(s, i):
    return BOXES[(s, i)]


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_scanrefer_real_layout_string_ids_and_roundtrip(tmp_path):
    p = write(tmp_path, "ScanRefer_filtered_val.json", [
        {"scene_id": "scene0000_00", "object_id": "3", "object_name": "chair", "ann_id": "0",
         "description": "this is a red chair. it is next to the bed.", "token": ["this", "is", "a", "red", "chair", "."]},
        {"scene_id": "scene0000_00", "object_id": "7", "object_name": "bed", "ann_id": "1", "description": "a big bed."},
    ])
    recs = F.read_scanrefer(p)
    assert [r.object_id for r in recs] == [3, 7] and recs[0].ann_id == 0
    assert recs[1].tokens == ["a", "big", "bed", "."]          # missing token list: tokenised
    out = F.write_scanrefer(recs, tmp_path / "out.json")
    raw = json.loads(out.read_text())
    assert raw[0]["object_id"] == "3" and raw[0]["ann_id"] == "0"   # written as the real files have them
    assert F.read_scanrefer(out) == recs


@pytest.mark.parametrize("bad, field, record", [
    ([{"scene_id": "s", "object_id": "x1", "object_name": "c", "ann_id": "0", "description": "d"}], "object_id", 0),
    ([{"scene_id": "s", "object_id": "1", "object_name": "c", "ann_id": "0", "description": "d"},
      {"scene_id": "s", "object_id": "2", "ann_id": "0", "description": "d"}], "object_name", 1),
    ([{"scene_id": 5, "object_id": "1", "object_name": "c", "description": "d"}], "scene_id", 0),
])
def test_scanrefer_errors_name_file_record_field(tmp_path, bad, field, record):
    p = write(tmp_path, "ScanRefer_filtered_train.json", bad)
    with pytest.raises(DataFormatError) as e:
        F.read_scanrefer(p)
    assert e.value.field == field and e.value.record == record and str(p) in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(DataFormatError, match="missing"):
        F.read_scanqa(tmp_path / "ScanQA_v1.0_train.json")
    p = write(tmp_path, "ScanQA_v1.0_train.json", '[{"scene_id": "s",')
    with pytest.raises(DataFormatError, match="not valid JSON"):
        F.read_scanqa(p)
    p = write(tmp_path, "x.json", {"a": 1})
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        F.read_scanqa(p)


NR3D_CSV = """assignmentid,stimulus_id,utterance,correct_guess,speaker_id,listener_id,scan_id,target_id,dataset,tokens,instance_type,mentions_target_class,uses_object_lang,uses_spatial_lang,uses_color_lang,uses_shape_lang
a1,scene0525_00-chair-4-11-45-24-8,'The chair closest to the door',True,s1,l1,scene0525_00,11,nr3d,"['the', 'chair', 'closest', 'to', 'the', 'door']",chair,True,True,True,False,False
a2,scene0525_00-plant-2-3-4,"the plant, left of the sofa",False,s2,l2,scene0525_00,3,nr3d,"['the', 'plant', ',', 'left', 'of', 'the', 'sofa']",plant,False,True,True,False,False
"""


def test_nr3d_csv_quirks_roundtrip_and_ll3da_json(tmp_path):
    p = write(tmp_path, "nr3d.csv", NR3D_CSV)
    recs = F.read_nr3d_csv(p)
    assert recs[0].target_id == 11 and recs[0].tokens[:2] == ["the", "chair"] and recs[0].correct_guess is True
    assert recs[1].correct_guess is False and recs[1].mentions_target_class is False
    out = F.write_nr3d_csv(recs, tmp_path / "nr3d_out.csv")
    assert F.read_nr3d_csv(out) == recs
    refer = F.nr3d_to_refer(recs)
    assert refer[0].description == "The chair closest to the door"       # quoted utterance unwrapped
    j = F.write_nr3d_json(refer, tmp_path / "nr3d_train.json")
    assert F.read_nr3d_json(j) == refer and refer[0].source == "nr3d"


def test_nr3d_csv_errors(tmp_path):
    p = write(tmp_path, "nr3d.csv", NR3D_CSV.replace(",11,nr3d", ",eleven,nr3d"))
    with pytest.raises(DataFormatError) as e:
        F.read_nr3d_csv(p)
    assert e.value.record == 0 and e.value.field == "target_id"
    p = write(tmp_path, "nr3d2.csv", NR3D_CSV.replace("\"['the', 'plant'", "\"['the' 'plant'").replace("', 'sofa']", "', 'sofa'"))
    with pytest.raises(DataFormatError) as e:
        F.read_nr3d_csv(p)
    assert e.value.field == "tokens" and e.value.record == 1
    p = write(tmp_path, "nr3d3.csv", "scan_id,target_id\nscene0000_00,1\n")
    with pytest.raises(DataFormatError, match="missing column"):
        F.read_nr3d_csv(p)


def test_scanqa_optional_fields_and_roundtrip(tmp_path):
    p = write(tmp_path, "ScanQA_v1.0_val.json", [
        {"answers": ["brown", "dark brown"], "object_ids": [3], "object_names": ["chair"], "question": "What color is the chair?",
         "question_id": "val-scene0000-0", "scene_id": "scene0000_00"},
    ])
    t = write(tmp_path, "ScanQA_v1.0_test_wo_obj.json", [
        {"question": "Where is the bed?", "question_id": "test-scene0707-1", "scene_id": "scene0707_00"}])
    recs, test = F.read_scanqa(p), F.read_scanqa(t)
    assert recs[0].answers == ["brown", "dark brown"] and recs[0].object_ids == [3]
    assert test[0].answers is None and test[0].object_ids is None
    for rs in (recs, test):
        assert F.read_scanqa(F.write_scanqa(rs, tmp_path / "o.json")) == rs
    bad = write(tmp_path, "b.json", [{"answers": "brown", "question": "q", "question_id": "x", "scene_id": "s"}])
    with pytest.raises(DataFormatError) as e:
        F.read_scanqa(bad)
    assert e.value.field == "answers"
    bad = write(tmp_path, "c.json", [{"answers": ["a"], "object_ids": [1, 2], "object_names": ["x"], "question": "q", "question_id": "x", "scene_id": "s"}])
    with pytest.raises(DataFormatError, match="object_names"):
        F.read_scanqa(bad)


def test_sqa3d_join_quirks_and_roundtrip(tmp_path):
    q = write(tmp_path, "v1_balanced_questions_val_scannetv2.json", {"questions": [
        {"alternative_situation": ["I sit on the bed."], "question": "What is on my left?", "question_id": 220602000000,
         "scene_id": "scene0380_00", "situation": "I am facing a window and there is a desk on my right."},
        {"alternative_situation": [], "question": "How many chairs?", "question_id": 220602000001, "scene_id": "scene0380_00",
         "situation": "I stand by the door."}]})
    a = write(tmp_path, "v1_balanced_sqa_annotations_val_scannetv2.json", {"annotations": [
        {"answer_type": "other", "answers": [{"answer": "brown cabinet", "answer_confidence": "yes", "answer_id": 1}],
         "position": {"x": -0.96, "y": -1.24, "z": 0}, "question_id": 220602000000, "question_type": "what",
         "rotation": {"_w": 0.995, "_x": 0, "_y": 0, "_z": 0.0998}, "scene_id": "scene0380_00"},
        {"answer_type": "number", "answers": ["two"], "question_id": 220602000001, "scene_id": "scene0380_00"}]})
    recs = F.read_sqa3d(q, a)
    assert recs[0].answers == ["brown cabinet"] and recs[0].position == (-0.96, -1.24, 0.0)
    assert recs[0].rotation == (0.0, 0.0, 0.0998, 0.995)
    assert recs[1].answers == ["two"] and recs[1].position is None
    q2, a2 = F.write_sqa3d(recs, tmp_path / "q.json", tmp_path / "a.json")
    assert F.read_sqa3d(q2, a2) == recs
    assert F.read_sqa3d(q, None)[0].answers == []
    a_bad = write(tmp_path, "a_bad.json", {"annotations": [{"answers": [{"answer": "x"}], "question_id": 220602000000, "scene_id": "scene0380_00"}]})
    with pytest.raises(DataFormatError, match="no annotation for question_id 220602000001"):
        F.read_sqa3d(q, a_bad)
    a_pos = write(tmp_path, "a_pos.json", {"annotations": [{"answers": ["x"], "question_id": 1, "position": {"x": 1}}]})
    with pytest.raises(DataFormatError) as e:
        F.read_sqa3d(q, a_pos)
    assert e.value.field == "position" and e.value.record == 0


def test_3dllm_dialogue_turns_and_planning(tmp_path):
    p = write(tmp_path, "3d_llm_embodied_dialogue_filtered_train.json", [
        {"scene_id": "scene0000_00", "question": "### human: I want to read. ### assistant: Use the lamp by the bed. ### human: Where is it?",
         "answers": ["on the night stand."]},
        {"scene_id": "scene0000_00", "question": "where can I sit?", "answers": ["on the sofa."]}])
    recs = F.read_3dllm(p, "dialogue")
    assert recs[0].turns() == [("user", "I want to read."), ("assistant", "Use the lamp by the bed."), ("user", "Where is it?")]
    assert recs[1].turns() == [("user", "where can I sit?")]
    assert F.format_dialogue(recs[0].turns()) == recs[0].question
    assert F.read_3dllm(F.write_3dllm(recs, tmp_path / "o.json"), "dialogue") == recs
    s = to_task_samples(recs)
    assert s[0].task == "dialogue" and s[0].question == "Where is it?" and len(s[0].history) == 2
    assert s[0].history[1] == "assistant: Use the lamp by the bed."
    with pytest.raises(ValueError, match="unknown 3D-LLM task"):
        F.read_3dllm(p, "chat")
    bad = write(tmp_path, "b.json", [{"scene_id": "s", "question": "q", "answers": []}])
    with pytest.raises(DataFormatError, match="at least one answer"):
        F.read_3dllm(bad, "planning")


def test_scene30k_json_jsonl_and_validation(tmp_path):
    good = {"scene_id": "scene0000_00", "question": "Where is the chair?",
            "cot": "<think>First, find chairs. Then compare.</think><answer>next to the bed <box>1, 2, 0.5, 0.5, 0.5, 1</box></answer>",
            "task": "grounding", "object_ids": [3]}
    for name in ("scene30k.json", "scene30k.jsonl"):
        p = tmp_path / name
        recs = [F.Scene30KRecord(good["scene_id"], good["question"], good["cot"], {"task": "grounding", "object_ids": [3]})]
        F.write_scene30k(recs, p)
        assert F.read_scene30k(p) == recs
    bad = write(tmp_path, "bad.jsonl", json.dumps(good) + "\n" + json.dumps({**good, "cot": "no tags here"}) + "\n")
    with pytest.raises(DataFormatError) as e:
        F.read_scene30k(bad)
    assert e.value.record == 1 and e.value.field == "cot"
    s = to_task_samples(F.read_scene30k(tmp_path / "scene30k.json"), lookup)
    assert s[0].task == "reasoning" and s[0].cot == good["cot"]
    np.testing.assert_allclose(s[0].boxes[0], BOXES[("scene0000_00", 3)])


def test_task_samples_from_every_record_kind():
    refer = [F.ReferRecord("scene0000_00", 3, "chair", 0, "the red chair")]
    g = to_task_samples(refer, lookup)[0]
    assert g.task == "grounding" and g.object_ids == [3]
    np.testing.assert_allclose(parse_box(g.answers[0].split(" ", 1)[1]), BOXES[("scene0000_00", 3)], atol=0.005)
    for task in ("dense_caption", "object_caption"):
        c = to_task_samples(refer, lookup, task=task)[0]
        assert c.task == task and c.answers == ["the red chair"] and "<box>" in c.question
    with pytest.raises(ValueError, match="unknown task"):
        to_task_samples(refer, lookup, task="qa")
    qa = to_task_samples([F.ScanQARecord("scene0000_00", "q0", "what?", ["x"], [3, 7], ["chair", "bed"])], lookup)[0]
    assert qa.boxes.shape == (2, 7) and qa.task == "qa"
    sqa = to_task_samples([F.SQA3DRecord("scene0000_00", 1, "I face the bed.", "What is left?", ["lamp"])])[0]
    assert sqa.question == "I face the bed. What is left?" and sqa.meta["situation"] == "I face the bed."
    with pytest.raises(ValueError, match="unknown task"):
        TaskSample("chat", "s", "q", [])
    with pytest.raises(KeyError):
        to_task_samples([F.ReferRecord("scene0000_00", 99, "chair", 0, "x")], lookup)
