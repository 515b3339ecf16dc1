"""Prompt layout and the target rewrite from boxes to proposal refs."""
import numpy as np

from r1_core.geometry.boxes import box_iou_3d
from r1_core.model.answer import extract_boxes, format_box, format_response
from r1_core.model.backbones import load_backbone
from r1_core.model.prompts import boxes_to_refs, build_prompt
from r1_core.query import SceneQuery

PROPS = np.array([[0, 0, 0.5, 1, 1, 1, 0], [3, 0, 0.5, 1, 1, 1, 0], [0, 3, 0.5, 0.5, 0.5, 0.5, 0]], np.float32)


def test_boxes_become_refs_and_unmatched_reasoning_boxes_are_dropped():
    near_1 = [3.05, 0, 0.5, 1, 1, 1]
    nowhere = [9, 9, 9, 1, 1, 1]
    text = format_response(f"a chair at {format_box(near_1)} and a bed at {format_box(nowhere)}.",
                           f"the chair {format_box(near_1)}")
    out, ok = boxes_to_refs(text, extract_boxes(text), PROPS, 0.25, box_iou_3d)
    assert ok
    assert out == "<think>a chair at <ref>1</ref> and a bed.</think><answer>the chair <ref>1</ref></answer>"


def test_unmatched_answer_box_marks_the_example_unusable():
    text = format_response("x", f"the bed {format_box([9, 9, 9, 1, 1, 1])}")
    _, ok = boxes_to_refs(text, extract_boxes(text), PROPS, 0.25, box_iou_3d)
    assert not ok


def test_prompt_has_one_slot_per_object_and_view_and_history_first():
    tok = load_backbone("tiny").tokenizer
    q = SceneQuery("dialogue", "and the bed?", history=["where is the chair?", "by the window."])
    pieces = build_prompt(q, num_objects=3, view_slots=[5, 5], tokenizer=tok)
    scene = [p for p in pieces if p.kind == "scene"]
    views = [p for p in pieces if p.kind == "view"]
    assert [p.index for p in scene] == [0, 1, 2] and [p.slots for p in views] == [5, 5]
    text = "".join(p.text for p in pieces)
    assert text.index("<ref>2</ref>") < text.index("where is the chair?") < text.index("by the window.") < text.index("and the bed?")
    assert text.endswith("<|im_start|>assistant\n")


def test_object_caption_names_target_by_ref_or_box():
    tok = load_backbone("tiny").tokenizer
    q = SceneQuery("object_caption", target_box=np.array([1, 2, 0.5, 0.4, 0.4, 0.9]))
    with_ref = "".join(p.text for p in build_prompt(q, 3, [], tok, target_ref=2))
    assert "Describe the object <ref>2</ref>." in with_ref
    without = "".join(p.text for p in build_prompt(q, 3, [], tok))
    assert "Describe the object at <box>1.00, 2.00, 0.50, 0.40, 0.40, 0.90</box>." in without


def test_object_labels_follow_their_refs():
    tok = load_backbone("tiny").tokenizer
    pieces = build_prompt(SceneQuery("qa", "how many chairs?"), 2, [], tok, object_labels=["chair", "bed"])
    text = "".join(p.text if not p.kind else "#" for p in pieces)
    assert "<ref>0</ref> chair#<ref>1</ref> bed#" in text
