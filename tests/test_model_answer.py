"""The answer format and box grammar: round trips, and malformed output rejected clearly."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1_core.model.answer import (
    AnswerFormatError, check_format, extract_boxes, format_box, format_response, parse_box,
    parse_response, resolve_refs,
)

coord = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
size = st.floats(0, 20, allow_nan=False, allow_infinity=False)
yaw = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(c=st.tuples(coord, coord, coord), s=st.tuples(size, size, size), y=yaw)
def test_box_round_trips_to_printed_precision(c, s, y):
    box = np.array([*c, *s, y])
    parsed = parse_box(format_box(box))
    assert np.allclose(parsed[:6], box[:6], atol=0.005 + 1e-6)
    wrapped = math.remainder(y, 2 * math.pi)
    assert abs(math.remainder(float(parsed[6]) - wrapped, 2 * math.pi)) <= 0.005 + 1e-6
    # Parsing then formatting again is exact: the grammar is a fixed point after one trip.
    assert format_box(parsed) == format_box(parse_box(format_box(parsed)))


@settings(max_examples=100, deadline=None)
@given(boxes=st.lists(st.tuples(coord, coord, coord, size, size, size), min_size=0, max_size=5),
       reasoning=st.text(alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1).filter(str.strip))
def test_response_round_trip(boxes, reasoning):
    answer = "Here: " + " and ".join(format_box(b) for b in boxes) if boxes else "none"
    parsed = parse_response(format_response(reasoning, answer))
    assert parsed.reasoning == reasoning.strip()
    assert parsed.boxes.shape == (len(boxes), 7)
    if boxes:
        assert np.allclose(parsed.boxes[:, :6], np.array(boxes), atol=0.005 + 1e-6)


def test_axis_aligned_box_omits_yaw_and_keeps_it_otherwise():
    assert format_box([1, 2, 3, 0.5, 0.5, 1, 0]) == "<box>1.00, 2.00, 3.00, 0.50, 0.50, 1.00</box>"
    assert format_box([1, 2, 3, 0.5, 0.5, 1, 2 * math.pi]) == "<box>1.00, 2.00, 3.00, 0.50, 0.50, 1.00</box>"
    assert format_box([0, 0, 0, 1, 1, 1, 0.3]).endswith(", 0.30</box>")
    assert format_box([-0.001, 0, 0, 1, 1, 1]).startswith("<box>0.00,")


@pytest.mark.parametrize("text, match", [
    ("<box>1, 2, 3</box>", "expected 6 or 7"),
    ("<box>1, 2, 3, 4, 5, x</box>", "item 5 is not a number"),
    ("<box>1, 2, 3, -4, 5, 6</box>", "negative size"),
    ("<box>1, 2, 3, 4, 5, 6, 7, 8</box>", "expected 6 or 7"),
    ("<box>1, 2, nan, 4, 5, 6</box>", "not a number"),
])
def test_parse_box_rejects_malformed(text, match):
    with pytest.raises(AnswerFormatError, match=match):
        parse_box(text)


@pytest.mark.parametrize("text, match", [
    ("<answer>x</answer>", r"missing \['<think>', '</think>'\]"),
    ("<think>a</think>", r"missing \['<answer>', '</answer>'\]"),
    ("<answer>x</answer><think>a</think>", "out of order"),
    ("<think>a</think><answer>x</answer> trailing", "text outside"),
    ("<think>a<think>b</think><answer>x</answer>", "nested or repeated <think>"),
    ("<think> </think><answer>x</answer>", "empty <think>"),
    ("<think>a</think><answer> </answer>", "empty <answer>"),
    ("<think>a</think><answer><box>1,2,3</box></answer>", "expected 6 or 7"),
    ("<think>a</think><answer><box>1,2,3,1,1,1</answer>", "unbalanced"),
    ("<think>a</think><answer><ref>3</ref></answer>", "unresolved <ref>"),
])
def test_parse_response_rejects_malformed(text, match):
    with pytest.raises(AnswerFormatError, match=match):
        parse_response(text)
    assert not check_format(text)


def test_resolve_refs_and_extract():
    props = np.array([[0, 0, 0, 1, 1, 1, 0], [1, 2, 0.5, 0.4, 0.4, 0.9, 0]], np.float32)
    text = "<think>the chair</think><answer>It is <ref>1</ref>.</answer>"
    resolved = resolve_refs(text, props)
    assert "<box>1.00, 2.00, 0.50, 0.40, 0.40, 0.90</box>" in resolved
    assert np.allclose(parse_response(resolved).boxes, props[1:2], atol=1e-6)
    assert parse_response(resolved).answer_plain == "It is ."
    assert parse_response(resolved).answer_indexed == "It is [0]."
    with pytest.raises(AnswerFormatError, match="points past the 2 proposals"):
        resolve_refs("<ref>2</ref>", props)
    assert extract_boxes("no boxes").shape == (0, 7)


def test_plan_steps_keep_which_box_each_step_acts_on():
    from r1_core.service import planning_steps

    props = np.array([[0, 0, 0, 1, 1, 1, 0], [1, 2, 0.5, 0.4, 0.4, 0.9, 0]], np.float32)
    text = ("<think>the pillow and the chair</think><answer>1. pick up the pillow at <ref>0</ref>. "
            "2. put it on the chair <ref>1</ref> 3. done</answer>")
    parsed = parse_response(resolve_refs(text, props))
    assert planning_steps(parsed.answer_indexed) == ["pick up the pillow at [0].", "put it on the chair [1]", "done"]
    assert np.allclose(parsed.boxes, props, atol=1e-6)       # [k] is parsed.boxes[k]
    assert planning_steps(parsed.answer_plain)[0] == "pick up the pillow at ."
