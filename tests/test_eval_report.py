"""Report: paper-layout Markdown tables, clean omission of missing benchmarks, strict JSON."""
import json

import pytest

from r1_core.eval.report import BENCHMARKS, TABLES, load_results, markdown_tables, results_json, save_report

RESULTS = {
    "R1-nano": {
        "scanrefer": {"Acc@0.25": 0.4123, "Acc@0.5": 0.3, "unique/Acc@0.25": 0.7, "unique/Acc@0.5": 0.6,
                      "multiple/Acc@0.25": 0.3, "multiple/Acc@0.5": 0.2, "count": 120},
        "scanqa": {"CIDEr": 0.9795, "BLEU-4": 0.12, "METEOR": 0.18, "ROUGE-L": 0.45, "EM": 0.25, "EM-R": 0.4},
    },
    "baseline": {
        "scanrefer": {"Acc@0.25": 0.2, "Acc@0.5": 0.1},
    },
}


def _table(md: str, title_part: str) -> list[list[str]]:
    block = next(b for b in md.split("\n\n**") if title_part in b.split("\n")[0])
    rows = [line for line in block.split("\n") if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def test_tables_follow_the_paper_layout_and_omit_missing_benchmarks():
    md = markdown_tables(RESULTS)
    grounding = _table(md, "visual grounding")
    assert grounding[0] == ["Method", "ScanRefer Unique@0.25", "ScanRefer Unique@0.5", "ScanRefer Multiple@0.25",
                            "ScanRefer Multiple@0.5", "ScanRefer Overall@0.25", "ScanRefer Overall@0.5"]
    assert grounding[2] == ["R1-nano", "70.00", "60.00", "30.00", "20.00", "41.23", "30.00"]
    assert grounding[3] == ["baseline", "–", "–", "–", "–", "20.00", "10.00"]   # missing metrics show a dash
    qa = _table(md, "ScanQA")
    assert qa[0] == ["Method", "CIDEr", "BLEU-4", "METEOR", "ROUGE-L", "EM", "EM-R"]
    assert qa[2][1] == "97.95"
    assert len(qa) == 3   # header, rule, R1-nano: the baseline ran no ScanQA, so it has no row
    # benchmarks nobody ran are absent: no Nr3D columns, no Scan2Cap / SQA3D / 3D-LLM tables
    assert "Nr3D" not in md and "Scan2Cap" not in md and "SQA3D" not in md and "Dialogue" not in md
    assert md.count("**") == 4   # two tables


def test_scanqa_by_question_type_shows_only_when_the_types_were_scored():
    assert "by question type" not in markdown_tables(RESULTS)
    typed = {"m": {"scanqa": {"EM": 0.5, "EM/how many": 0.75, "EM/where": 0.125}}}
    rows = _table(markdown_tables(typed), "by question type")
    assert rows[0][:3] == ["Method", "how many", "is there"] and rows[0][-1] == "other"
    assert rows[2][1] == "75.00" and rows[2][2] == "–" and "12.50" in rows[2]


def test_every_table_renders_with_all_benchmarks():
    full = {b: {c.metric: 0.5 for t in TABLES for c in t.columns if c.benchmark == b} for b in BENCHMARKS}
    md = markdown_tables({"m": full})
    assert md.count("**") == 2 * len(TABLES)
    assert "–" not in md and md.count("50.00") == sum(len(t.columns) for t in TABLES)


def test_json_roundtrip_and_files(tmp_path):
    pj, pm = save_report(tmp_path / "out", RESULTS, name="r1-nano-synthetic", meta={"checkpoint": "ckpt/x", "split": "val"})
    doc = json.loads(pj.read_text())
    assert doc["schema"] == "r1-eval/1" and doc["meta"]["split"] == "val"
    assert load_results(pj) == {m: {b: {k: float(v) for k, v in ms.items()} for b, ms in bs.items()}
                                for m, bs in RESULTS.items()}
    assert pm.read_text().startswith("# r1-nano-synthetic\n") and "| R1-nano |" in pm.read_text()


def test_bad_results_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'scanrefr'"):
        markdown_tables({"m": {"scanrefr": {"Acc@0.25": 0.1}}})
    with pytest.raises(ValueError, match=r"results\['m'\]\['scanqa'\]\['EM'\]: expected a finite number"):
        markdown_tables({"m": {"scanqa": {"EM": float("nan")}}})
    with pytest.raises(ValueError, match="non-empty mapping"):
        markdown_tables({})
    with pytest.raises(ValueError, match="meta"):
        results_json(RESULTS, meta={"x": object()})
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="r1-eval/1"):
        load_results(bad)
