"""bench/qa_evidence.py: each QA prediction's evidence is the matched IoU of its reasoning's boxes
with the question's objects (hand-computed here), malformed predictions score 0, and EM is split
at evidence 0.5."""
import importlib.util
import json
from pathlib import Path

import pytest

from r1_core.model.answer import format_box
from helpers.predictions import prediction

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_qa_evidence", ROOT / "bench" / "qa_evidence.py")
qa_evidence = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qa_evidence)

CHAIR = [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
HALF = [0.5, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]          # a unit cube 0.5 m along x: IoU 1/3 with CHAIR
FAR = [3.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]


def _qa(question, reasoning_boxes, answer, refs, gt, well_formed=True):
    reasoning = "the relevant objects are " + ", ".join(f"a chair at {format_box(b)}" for b in reasoning_boxes) \
        if reasoning_boxes else "I find none"
    return {"task": "qa", "scene_id": "s0", "question": question, "references": refs, "gt_boxes": gt,
            "reasoning": reasoning, "answer": answer, "well_formed": well_formed, "raw": "not formatted"}


def _write(tmp_path: Path, name: str, preds: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return str(path)


def test_evidence_and_em_split(tmp_path, capsys):
    preds = [
        _qa("How many chairs are there?", [CHAIR], "1", ["1"], [CHAIR]),                # evidence 1, right
        _qa("How many tables are there?", [HALF], "1", ["2"], [CHAIR]),                 # 1/3, wrong
        _qa("How many beds are there?", [CHAIR, FAR], "2", ["1"], [CHAIR]),             # 1/2 (an extra box), wrong
        _qa("Is there a TV?", [], "no", ["no"], []),                                    # names none, none asked: 1
        _qa("Is there a sofa?", [FAR], "yes", ["no"], []),                              # names one, none asked: 0
        _qa("What colour is the chair?", [CHAIR], "red", ["red"], [CHAIR], well_formed=False),   # malformed: 0
        prediction(task="grounding", scene_id="s0", question="the chair", references=[]),
    ]
    rows = qa_evidence.main([_write(tmp_path, "a.jsonl", preds), "--names", "A", "--out", str(tmp_path / "e.json")])
    assert list(rows) == ["how many", "is there", "what colour", "all"]
    many = rows["how many"]["A"]
    assert many["evidence"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3, abs=1e-6)
    assert many["n_evidence"] == 2 and many["EM_evidence"] == 50.0 and many["EM_no_evidence"] == 0.0
    there = rows["is there"]["A"]
    assert there["evidence"] == 0.5 and there["EM_evidence"] == 100.0 and there["EM_no_evidence"] == 0.0
    assert rows["what colour"]["A"] == {"n": 1, "evidence": 0.0, "EM": 100.0, "n_evidence": 0,
                                        "EM_evidence": None, "EM_no_evidence": 100.0}
    everything = rows["all"]["A"]
    assert everything["n"] == 6 and everything["EM"] == pytest.approx(50.0)
    assert everything["evidence"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 + 0 + 0) / 6, abs=1e-6)
    assert json.loads((tmp_path / "e.json").read_text())["types"]["all"]["A"]["n_evidence"] == 3
    assert "| what colour | 1 | 0.000 | 100.0 (– / 100 %, 0 with) |" in capsys.readouterr().out
    other = _write(tmp_path, "b.jsonl", preds[:2])
    with pytest.raises(ValueError, match="B: answers 2 questions, not the same 6"):
        qa_evidence.main([_write(tmp_path, "a.jsonl", preds), other, "--names", "A", "B"])
