"""bench/paired.py: per-example metrics agree with the benchmark scorers; the paired bootstrap is right."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from r1_core.eval.grounding import scanrefer_metrics
from r1_core.eval.qa import exact_match

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_paired", ROOT / "bench" / "paired.py")
paired = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired)


def _predictions(seed: int, n_ground: int = 60, n_qa: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    preds = []
    for i in range(n_ground):
        gt = [float(i % 5), 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
        shift = float(rng.uniform(0, 1.2))     # IoU spread over 0..1
        box = None if i % 7 == 0 else [gt[0] + shift, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
        preds.append({"task": "grounding", "scene_id": f"s{i % 3}", "question": f"q{i}", "object_ids": [i],
                      "references": [], "boxes": [box] if box else [], "gt_boxes": [gt], "unique": bool(i % 2),
                      "well_formed": True})
    for i in range(n_qa):
        preds.append({"task": "qa", "scene_id": "s0", "question": f"qa{i}", "object_ids": [],
                      "references": ["two", "2 chairs"], "answer": str(rng.choice(["two", "three", "Two."])),
                      "well_formed": True})
    return preds


def _write(tmp_path: Path, name: str, preds: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return str(path)


def test_per_example_means_equal_the_benchmark_scorers():
    preds = _predictions(0)
    m = paired.per_example(preds)
    g = [p for p in preds if p["task"] == "grounding"]
    ref = scanrefer_metrics([p["boxes"][0] if p["boxes"] else None for p in g],
                            np.array([p["gt_boxes"][0] for p in g]), [p["unique"] for p in g])
    assert np.mean(list(m["Acc@0.25"].values())) == pytest.approx(ref["Acc@0.25"])
    assert np.mean(list(m["Acc@0.5"].values())) == pytest.approx(ref["Acc@0.5"])
    assert 0 < ref["Acc@0.25"] < 1 and ref["Acc@0.5"] < ref["Acc@0.25"]
    q = [p for p in preds if p["task"] == "qa"]
    assert np.mean(list(m["QA EM"].values())) == pytest.approx(exact_match([p["answer"] for p in q],
                                                                           [p["references"] for p in q])["EM"])


def test_paired_table_counts_and_intervals(tmp_path):
    a = _predictions(0)
    b = json.loads(json.dumps(a))
    qa_b = [p for p in b if p["task"] == "qa"]
    wrong_in_a = [i for i, p in enumerate(qa_b) if paired.answer_match(p["answer"], p["references"])[0] == 0]
    for i in wrong_in_a[:10]:
        qa_b[i]["answer"] = "two"             # B fixes 10 of A's wrong answers and breaks none
    out = paired.main([_write(tmp_path, "a.jsonl", a), _write(tmp_path, "b.jsonl", b), "--names", "A", "B",
                       "--samples", "2000", "--out", str(tmp_path / "p.json")])
    rows = {r["metric"]: r for r in out["rows"]}
    assert rows["Acc@0.25"]["diff"] == 0 and rows["Acc@0.25"]["ci95"] == [0, 0]
    em = rows["QA EM"]
    assert (em["only_a"], em["only_b"], em["n"]) == (0, 10, 40)
    assert em["diff"] == pytest.approx(100 * 10 / 40)
    assert 0 < em["ci95"][0] < em["diff"] < em["ci95"][1]
    assert json.loads((tmp_path / "p.json").read_text())["rows"] == out["rows"]


def test_files_of_different_examples_are_refused(tmp_path):
    a = _predictions(0)
    b = _predictions(0, n_qa=39)
    with pytest.raises(ValueError, match="QA EM: 1 examples are in only one of the two files"):
        paired.main([_write(tmp_path, "a.jsonl", a), _write(tmp_path, "b.jsonl", b)])


def test_tasks_option_compares_a_subset_of_the_tasks(tmp_path):
    a = _predictions(0)
    b = _predictions(0, n_qa=0)          # B has no QA predictions: QA EM cannot be paired
    a_path, b_path = _write(tmp_path, "a.jsonl", a), _write(tmp_path, "b.jsonl", b)
    with pytest.raises(ValueError, match="QA EM"):
        paired.main([a_path, b_path, "--samples", "100"])
    rows = paired.main([a_path, b_path, "--samples", "100", "--tasks", "grounding"])["rows"]
    assert [r["metric"] for r in rows] == ["Acc@0.25", "Acc@0.5"] and rows[0]["n"] == 60
    with pytest.raises(ValueError, match="--tasks planning: no such predictions"):
        paired.main([a_path, b_path, "--tasks", "planning"])


def _captioned(seed: int, n: int = 30) -> list[dict]:
    """Dialogue examples with varied references (CIDEr's idf needs them); the last one repeats."""
    rng = np.random.default_rng(seed)
    words = ["red chair", "blue table", "green pillow", "white door", "brown bed", "black lamp"]
    preds = []
    for i in range(n - 1):
        ref = f"the {words[i % 6]} by the wall {i % 4}"
        answer = ref if rng.random() < 0.5 else f"a {words[(i + 1) % 6]}"
        preds.append({"task": "dialogue", "scene_id": f"s{i % 5}", "question": f"d{i}", "object_ids": [],
                      "references": [ref], "answer": answer, "well_formed": True})
    return preds + [dict(preds[-1])]


def test_cider_rows_equal_the_benchmark_scorer_and_count_repeated_examples(tmp_path):
    from r1_core.eval.captions import caption_metrics

    a = _captioned(0)
    assert paired._keys(a)[-1][-1] == 1          # the last example repeats the one before it: both count
    b = json.loads(json.dumps(a))
    for p in b[:10]:
        p["answer"] = p["references"][0]         # B gets 10 more answers exactly right
    out = paired.main([_write(tmp_path, "a.jsonl", a), _write(tmp_path, "b.jsonl", b), "--cider-samples", "300"])
    row = {r["metric"]: r for r in out["rows"]}["Dialogue CIDEr"]
    assert row["n"] == len(a)
    for name, preds in (("A", a), ("B", b)):
        ref = caption_metrics({i: p["answer"] for i, p in enumerate(preds)},
                              {i: p["references"] for i, p in enumerate(preds)}, metrics=("CIDEr",))["CIDEr"]
        assert row[name] == pytest.approx(100 * ref)
    assert row["diff"] > 0 and 0 < row["ci95"][0] < row["diff"] < row["ci95"][1]
    same = paired.main([_write(tmp_path, "a.jsonl", a), _write(tmp_path, "a2.jsonl", a), "--cider-samples", "50"])
    assert {r["metric"]: r for r in same["rows"]}["Dialogue CIDEr"]["ci95"] == [0, 0]
