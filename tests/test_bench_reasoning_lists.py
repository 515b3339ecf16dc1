"""bench/reasoning_lists.py: the reasoning's list items are read from the "Next, …" sentence only;
lengths, repeated proposals and items whose class is not their proposal's are counted per task."""
import importlib.util
import json
from pathlib import Path

import pytest
from helpers.predictions import prediction

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_reasoning_lists", ROOT / "bench" / "reasoning_lists.py")
lists = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lists)

CLASSES = {"s0": [5, 5, 3, 7]}    # chair, chair, cabinet, table (NYU40)


def _think(next_sentence: str) -> str:
    # the other sentences name refs too: only the "Next, …" sentence is the list
    return (f"<think>First, the description asks for a chair at <ref>3</ref>. {next_sentence} Then, a red chair at "
            f"<ref>3</ref> is next to it.</think><answer>the chair <ref>0</ref></answer>")


PREDS = [
    {"task": "grounding", "scene_id": "s0", "question": "the red chair",
     "raw": _think("Next, I find the chairs in the scene: there are 2: a red chair at <ref>0</ref>, a blue chair at <ref>1</ref>.")},
    {"task": "grounding", "scene_id": "s0", "question": "the chair by the table",
     "raw": _think("Next, I find the chairs in the scene: there are 2: a red chair at <ref>0</ref>, a red chair at <ref>0</ref>.")},
    {"task": "qa", "scene_id": "s0", "question": "How many cabinets are there?",
     "raw": _think("Next, the relevant objects are a white kitchen cabinet at <ref>2</ref>, a brown cabinet at <ref>3</ref>.")},
    {"task": "qa", "scene_id": "s0", "question": "What colour is the table?",
     "raw": _think("Next, the relevant objects are a brown table at <ref>9</ref>.")},
    {"task": "qa", "scene_id": "s0", "question": "Is there a sofa?", "raw": _think("Next, I look for a sofa and find none.")},
    {"task": "planning", "scene_id": "s0", "question": "tidy up", "raw": _think("Next, a chair at <ref>1</ref>.")},
]
PREDS = [prediction(**p) for p in PREDS]      # the fields the predictions reader checks, too


def test_list_items_and_class_names():
    assert lists.list_items(PREDS[2]["raw"]) == [("white kitchen cabinet", 2), ("brown cabinet", 3)]
    assert lists.list_items(PREDS[4]["raw"]) == []
    # NYU40 ids: the longer name wins ("shower curtain" is 28, "curtain" 16); raw names and synonyms count
    assert lists.named_class("white shower curtain") == 28 and lists.named_class("red curtain") == 16
    assert lists.named_class("white kitchen cabinet") == 3 and lists.named_class("black trash bin") == 39
    assert lists.named_class("brown couch") == 6 and lists.named_class("blue thing") is None


def test_counts_per_task(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PREDS))
    tables = lists.main([str(path), "--names", "M", "--out", str(tmp_path / "l.json")], classes=CLASSES)
    g, q, how = tables["M"]["grounding"], tables["M"]["qa"], tables["M"]["qa: how many"]
    assert g == {"n": 2, "items": 4, "length 0": 0, "length 1": 0, "length 2": 2, "length 3+": 0,
                 "repeated_ref": 1, "wrong_class_items": 0, "wrong_class_lists": 0}
    # a kitchen cabinet is a cabinet; ref 3 is a table, not a cabinet; ref 9 is no proposal
    assert q == {"n": 3, "items": 3, "length 0": 1, "length 1": 1, "length 2": 1, "length 3+": 0,
                 "repeated_ref": 0, "wrong_class_items": 2, "wrong_class_lists": 2}
    assert how["n"] == 1 and how["wrong_class_items"] == 1 and how["length 2"] == 1
    assert set(tables["M"]) == {"grounding", "qa", "qa: how many"}           # planning is not read
    assert json.loads((tmp_path / "l.json").read_text())["lists"]["M"]["grounding"]["repeated_ref"] == 1
    assert "| grounding: items per list | 2 | 2.00 |" in capsys.readouterr().out


def test_classes_are_required_and_names_must_match(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(PREDS[0]) + "\n")
    with pytest.raises(ValueError, match="--checkpoint and --pack"):
        lists.main([str(path)])
    with pytest.raises(ValueError, match="2 names for 1 files"):
        lists.main([str(path), "--names", "A", "B"], classes=CLASSES)


def test_how_many_is_scanqa_type():
    pred = {"task": "qa", "scene_id": "s0", "question": "What is the number of chairs in the room?",
            "raw": _think("Next, the relevant objects are a red chair at <ref>0</ref>.")}
    assert lists.summarise([pred], CLASSES)["qa: how many"]["n"] == 1
