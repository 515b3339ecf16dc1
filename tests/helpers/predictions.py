"""Predictions-file records for tests of tools that read them (training.evaluate.read_predictions
checks every field the scorer reads)."""
from __future__ import annotations

UNIT_BOX = [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]


def prediction(**fields) -> dict:
    """A record of `fields["task"]` with every field check_predictions requires; `fields` on top."""
    task = fields["task"]
    if task == "scan2cap":
        base: dict = {"scene_id": "s0", "pred_boxes": [], "captions": []}
    elif task == "grounding":
        base = {"scene_id": "s0", "question": "", "boxes": [], "gt_boxes": [UNIT_BOX], "unique": True,
                "well_formed": True}
    else:
        base = {"scene_id": "s0", "question": "", "answer": "", "references": ["none"], "well_formed": True}
    return {**base, **fields}
