"""bench/select_checkpoint.py: gains over the baseline per metric on the same examples, and the
pick is the candidate whose smaller gain (Acc@0.25, QA EM) is largest."""
import importlib.util
import json
from pathlib import Path

import pytest
from helpers.predictions import prediction

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_select_checkpoint", ROOT / "bench" / "select_checkpoint.py")
sel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sel)

GT = [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
HIT = [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]          # IoU 1
MISS = [5.0, 5.0, 0.5, 1.0, 1.0, 1.0, 0.0]         # IoU 0


def _preds(grounding_hits: list[bool], qa_right: list[bool]) -> list[dict]:
    out = [prediction(task="grounding", scene_id="s0", question=f"object {i}", object_ids=[i], references=[],
                      boxes=[HIT if h else MISS], gt_boxes=[GT]) for i, h in enumerate(grounding_hits)]
    out += [prediction(task="qa", scene_id="s0", question=f"question {i}", object_ids=[], references=["two"],
                       answer="two" if r else "three") for i, r in enumerate(qa_right)]
    return out


def _write(path: Path, preds: list[dict]) -> str:
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return str(path)


def test_gains_and_pick(tmp_path):
    base = _write(tmp_path / "sft.jsonl", _preds([True, False, False, False], [True, True, False, False]))
    # a: grounding +50, QA -25 · b: grounding +25, QA +25 · c: grounding +25, QA +25 (ties b; later wins)
    a = _write(tmp_path / "a.jsonl", _preds([True, True, True, False], [True, False, False, False]))
    b = _write(tmp_path / "b.jsonl", _preds([True, True, False, False], [True, True, True, False]))
    c = _write(tmp_path / "c.jsonl", _preds([True, False, True, False], [True, True, False, True]))
    out = sel.main(["--baseline", base, "--candidates", f"a={a}", f"b={b}", f"c={c}", "--out", str(tmp_path / "s.json")])
    assert out["candidates"]["a"]["Acc@0.25"] == {"n": 4, "baseline": 25.0, "candidate": 75.0, "gain": 50.0}
    assert out["candidates"]["a"]["QA EM"]["gain"] == -25.0
    assert out["candidates"]["b"]["QA EM"]["gain"] == 25.0
    assert out["pick"] == "c"
    assert json.loads((tmp_path / "s.json").read_text())["pick"] == "c"
    out = sel.main(["--baseline", base, "--candidates", f"a={a}", f"b={b}"])
    assert out["pick"] == "b"


def test_candidate_on_other_examples_is_an_error(tmp_path):
    base = _write(tmp_path / "sft.jsonl", _preds([True, False], [True]))
    other = _write(tmp_path / "o.jsonl", _preds([True, False, True], [True]))
    with pytest.raises(ValueError, match="Acc@0.25: 1 examples are in only one"):
        sel.main(["--baseline", base, "--candidates", f"o={other}"])


def test_malformed_candidate_argument(tmp_path):
    base = _write(tmp_path / "sft.jsonl", _preds([True], [True]))
    with pytest.raises(SystemExit, match="expected NAME=PREDICTIONS, got 'nopath'"):
        sel.main(["--baseline", base, "--candidates", "nopath"])
