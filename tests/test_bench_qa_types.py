"""bench/qa_types.py: EM per question type equals the scorer's on each type's questions; the most
common answer and its share are counted; files that do not share their questions are refused."""
import importlib.util
import json
from pathlib import Path

import pytest

from r1_core.eval.qa import scanqa_metrics
from helpers.predictions import prediction

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_qa_types", ROOT / "bench" / "qa_types.py")
qa_types = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qa_types)

QUESTIONS = [("Is there a mirror in the room?", ["yes"]), ("Is there a TV?", ["no"]), ("Are there two lamps?", ["no"]),
             ("How many chairs are there?", ["2", "two"]), ("How many tables are in the room?", ["1", "one"]),
             ("Where is the bed?", ["next to the wall"]), ("What colour is the sofa?", ["red"])]


def _preds(answers: list[str]) -> list[dict]:
    out = [prediction(task="qa", scene_id="s0", question=q, references=r, answer=a)
           for (q, r), a in zip(QUESTIONS, answers)]
    return out + [prediction(task="grounding", scene_id="s0", question="the chair", references=[])]


def _write(tmp_path: Path, name: str, preds: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return str(path)


def test_em_per_type_and_the_most_common_answer(tmp_path, capsys):
    a = _write(tmp_path, "a.jsonl", _preds(["no", "no", "no", "2", "1", "next to the wall", "blue"]))
    b = _write(tmp_path, "b.jsonl", _preds(["yes", "yes", "yes", "two", "2", "by the door", "red"]))
    table = qa_types.main([a, b, "--names", "A", "B", "--out", str(tmp_path / "t.json")])
    assert list(table) == ["how many", "is there", "what colour", "where"]     # the module's type order
    assert table["is there"]["n"] == 3
    assert table["is there"]["A"] == {"EM": pytest.approx(200 / 3), "top_answer": "no", "top_share": 100.0}
    assert table["is there"]["B"]["EM"] == pytest.approx(100 / 3) and table["is there"]["B"]["top_share"] == 100.0
    assert table["how many"]["A"]["EM"] == 100.0 and table["how many"]["B"]["EM"] == 50.0
    # each type's EM is the scorer's EM on that type's questions
    qs = {i: q for i, (q, _) in enumerate(QUESTIONS)}
    refs = {i: r for i, (_, r) in enumerate(QUESTIONS)}
    b_answers = {i: p["answer"] for i, p in enumerate(_preds(["yes", "yes", "yes", "two", "2", "by the door", "red"])[:7])}
    scored = scanqa_metrics(b_answers, refs, caption_metrics=(), questions=qs)
    for t, row in table.items():
        assert row["B"]["EM"] == pytest.approx(100 * scored[f"EM/{t}"])
    assert json.loads((tmp_path / "t.json").read_text())["types"]["where"]["B"]["EM"] == 0.0
    assert "| is there | 3 | 66.7 | 33.3 | 'no' 100 % | 'yes' 100 % |" in capsys.readouterr().out


def test_files_that_do_not_share_their_questions_are_refused(tmp_path):
    a = _write(tmp_path, "a.jsonl", _preds(["no"] * 7))
    b = _write(tmp_path, "b.jsonl", _preds(["no"] * 6))
    with pytest.raises(ValueError, match="answers 6 questions, not the same 7"):
        qa_types.main([a, b])
    twice = _write(tmp_path, "c.jsonl", _preds(["no"] * 7) + _preds(["no"] * 1)[:1])
    with pytest.raises(ValueError, match="appears twice"):
        qa_types.main([twice])
    with pytest.raises(SystemExit, match="distinct names"):
        qa_types.main([a, a, "--names", "x", "x"])


def test_answer_priors_of_an_annotation_file(tmp_path, capsys):
    records = [{"question": q, "answers": r, "scene_id": "s0"} for q, r in QUESTIONS]
    path = tmp_path / "ScanQA_v1.0_train.json"
    path.write_text(json.dumps(records))
    priors = qa_types.main(["--answers", str(path)])
    assert priors["is there"] == {"n": 3, "answers": [("no", pytest.approx(200 / 3)), ("yes", pytest.approx(100 / 3))]}
    assert priors["how many"]["n"] == 2 and priors["where"]["answers"] == [("next to the wall", 100.0)]
    assert "| is there | 3 | 'no' 67 %, 'yes' 33 % |" in capsys.readouterr().out
    path.write_text(json.dumps(records + [{"question": "Where?"}]))
    with pytest.raises(ValueError, match="question 7: expected a ScanQA record"):
        qa_types.main(["--answers", str(path)])
    with pytest.raises(SystemExit, match="give prediction files"):
        qa_types.main([])


def test_cider_shares_add_up_to_the_benchmark_scorer_and_show_which_type_moved(tmp_path):
    from r1_core.eval.captions import caption_metrics

    a_answers = ["no", "no", "no", "2", "1", "next to the wall", "blue"]
    b_answers = ["no", "no", "no", "2", "1", "in a corner", "blue"]          # B differs on "where" alone
    table = qa_types.main([_write(tmp_path, "a.jsonl", _preds(a_answers)), _write(tmp_path, "b.jsonl", _preds(b_answers)),
                           "--names", "A", "B", "--cider"])
    for name, answers in (("A", a_answers), ("B", b_answers)):
        corpus = caption_metrics(dict(enumerate(answers)), {i: r for i, (_, r) in enumerate(QUESTIONS)},
                                 metrics=("CIDEr",))["CIDEr"]
        assert sum(row[name]["cider_share"] for row in table.values()) == pytest.approx(100 * corpus)
    assert table["where"]["A"]["cider_mean"] > 0 == table["where"]["B"]["cider_mean"]
    for t in ("how many", "is there", "what colour"):                        # the same answers score the same
        assert table[t]["A"]["cider_share"] == pytest.approx(table[t]["B"]["cider_share"])
    assert table["is there"]["A"]["cider_mean"] == pytest.approx(table["is there"]["A"]["cider_share"] * 7 / 3)  # 3 of 7
