"""bench/grounding_errors.py: each answer lands in the right cause; colour words are checked per object."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from r1_core.model.r1model import SceneEncoding
from r1_core.views.vocab import COLOR_WORDS

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_grounding_errors", ROOT / "bench" / "grounding_errors.py")
errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(errors)


def box(x, y, s=0.5):
    return [x, y, 0.5, s, s, 1.0, 0.0]


def test_causes_relations_and_colours():
    # annotated: chair A (1, 1), chair B (3, 1), table (1, 3), lamp (5, 5) with no proposal near it
    objects = {"s": (np.array([box(1, 1), box(3, 1), box(1, 3), box(5, 5)], np.float32), np.array([5, 5, 7, 35]),
                     np.array([10, 11, 12, 13]))}
    # proposals: 0 on chair A, 1 on chair B, 2 on the table, 3 on nothing
    enc = SceneEncoding(torch.zeros(4, 1), np.array([box(1, 1), box(3.05, 1), box(1, 3), box(8, 8)], np.float32),
                        np.ones(4), np.array([5, 5, 7, 5]))
    votes = {"s": np.array([COLOR_WORDS.index("red"), COLOR_WORDS.index("blue"), -1, 0])}

    def pred(ref, target, question="the chair left of the table"):
        raw = "<think>x</think><answer>it" + (f" <ref>{ref}</ref>" if ref is not None else "") + "</answer>"
        object_id = {box(1, 1)[0]: 10, box(5, 5)[0]: 13}[target[0]]
        return {"scene_id": "s", "raw": raw, "gt_boxes": [target], "object_ids": [object_id], "question": question,
                "unique": False}

    preds = [pred(0, box(1, 1)), pred(0, box(1, 1), "the red chair"), pred(1, box(1, 1)), pred(2, box(1, 1)),
             pred(3, box(1, 1)), pred(None, box(1, 1)), pred(0, box(5, 5))]
    rep = errors.classify(preds, {"s": enc}, objects)
    n = len(preds)
    assert rep["expressions"] == n
    assert rep["causes"] == pytest.approx({"right": 2 / n, "wrong: another object of the class": 1 / n,
                                           "wrong: an object of another class": 1 / n, "wrong: false-positive proposal": 1 / n,
                                           "wrong: no valid proposal named": 1 / n, "no proposal": 1 / n})
    assert rep["right_given_proposal"] == pytest.approx(2 / 6)
    by = rep["right_given_proposal_by_relation"]
    assert by["left/right / multiple"] == {"n": 5, "right": pytest.approx(1 / 5)}
    assert by["attribute only / multiple"] == {"n": 1, "right": 1.0}
    # colour words: chair A red (right), chair B "green" (wrong), the table's proposal has none, the lamp has no proposal
    acc = errors.color_accuracy({"s": enc}, votes, objects, {"s": ["red", "green", "white", "black"]})
    assert acc == {"objects": 3, "right": pytest.approx(1 / 3)}
