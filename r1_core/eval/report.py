"""Results JSON and Markdown tables laid out like the 3D-R1 paper's tables.

    from r1_core.eval.report import markdown_tables, save_report
    results = {"R1-nano": {"scanrefer": {"Acc@0.25": 0.41, "Acc@0.5": 0.30, ...},
                           "scanqa": {"CIDEr": 0.97, "BLEU-4": 0.12, "EM": 0.25, ...}}}
    print(markdown_tables(results))
    save_report("runs/eval", results, name="r1-nano-synthetic", meta={"checkpoint": "..."})

`results` maps a method (one table row) to benchmark -> metric -> value, as the metric
functions of r1_core.eval return them (fractions; CIDEr on its 0..10 scale). Tables show
every value x100 with two decimals, as the paper does. Benchmarks (`BENCHMARKS`): scanrefer,
nr3d (grounding.py), scan2cap (dense_caption.py), scanqa, sqa3d (qa.py), 3dllm_dialogue,
3dllm_planning (captions.caption_metrics). A benchmark no method has is left out with its
columns (and a table with no benchmark left, or with none of its metrics in any method, is left
out), a method that ran none of a table's benchmarks has no row there, and a metric a method
lacks shows "–".
An unknown benchmark name is an error (a typo would otherwise vanish from the report).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from r1_core.eval.qa import SCANQA_TYPE_NAMES


@dataclass(frozen=True)
class Column:
    benchmark: str
    metric: str
    header: str


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]


def _cols(benchmark: str, label: str, pairs: list[tuple[str, str]]) -> tuple[Column, ...]:
    return tuple(Column(benchmark, m, f"{label} {h}".strip()) for m, h in pairs)


_CAP4 = [("CIDEr", "C"), ("BLEU-4", "B-4"), ("METEOR", "M"), ("ROUGE-L", "R")]

TABLES: tuple[Table, ...] = (
    Table("3D visual grounding: Acc@kIoU",
          _cols("scanrefer", "ScanRefer", [
              ("unique/Acc@0.25", "Unique@0.25"), ("unique/Acc@0.5", "Unique@0.5"),
              ("multiple/Acc@0.25", "Multiple@0.25"), ("multiple/Acc@0.5", "Multiple@0.5"),
              ("Acc@0.25", "Overall@0.25"), ("Acc@0.5", "Overall@0.5")])
          + _cols("nr3d", "Nr3D", [
              ("Acc@0.25", "Overall@0.25"), ("Acc@0.5", "Overall@0.5"),
              ("easy/Acc@0.25", "Easy@0.25"), ("hard/Acc@0.25", "Hard@0.25"),
              ("view_dep/Acc@0.25", "View-dep@0.25"), ("view_indep/Acc@0.25", "View-indep@0.25")])),
    Table("3D dense captioning (Scan2Cap): m@kIoU",
          _cols("scan2cap", "", [(f"{m}@{k}", f"{h}@{k}") for k in ("0.25", "0.5") for m, h in _CAP4])),
    Table("3D question answering (ScanQA)",
          _cols("scanqa", "", [("CIDEr", "CIDEr"), ("BLEU-4", "BLEU-4"), ("METEOR", "METEOR"),
                               ("ROUGE-L", "ROUGE-L"), ("EM", "EM"), ("EM-R", "EM-R")])),
    Table("ScanQA exact match by question type (a diagnostic, not in the paper)",
          _cols("scanqa", "", [(f"EM/{t}", t) for t in SCANQA_TYPE_NAMES])),
    Table("Situated question answering (SQA3D): EM",
          _cols("sqa3d", "", [("EM/what", "What"), ("EM/is", "Is"), ("EM/how", "How"),
                              ("EM/can", "Can"), ("EM/which", "Which"), ("EM/others", "Others"),
                              ("EM", "Avg.")])),
    Table("3D dialogue and planning (3D-LLM)",
          _cols("3dllm_dialogue", "Dialogue", _CAP4) + _cols("3dllm_planning", "Planning", _CAP4)),
)
BENCHMARKS = tuple(dict.fromkeys(c.benchmark for t in TABLES for c in t.columns))


def _check(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results: expected a non-empty mapping method -> benchmark -> metric -> value")
    for method, benches in results.items():
        if not isinstance(benches, Mapping):
            raise ValueError(f"results[{method!r}]: expected a mapping benchmark -> metrics, got {type(benches).__name__}")
        for bench, metrics in benches.items():
            if bench not in BENCHMARKS:
                raise ValueError(f"results[{method!r}]: unknown benchmark {bench!r}; choose one of {list(BENCHMARKS)}")
            if not isinstance(metrics, Mapping):
                raise ValueError(f"results[{method!r}][{bench!r}]: expected a mapping metric -> value")
            for name, value in metrics.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(
                        f"results[{method!r}][{bench!r}][{name!r}]: expected a finite number, got {value!r}"
                    )


def markdown_tables(results: Mapping[str, Mapping[str, Mapping[str, float]]], digits: int = 2) -> str:
    """The paper-style Markdown tables (one row per method) for whatever benchmarks are present."""
    _check(results)
    present = {b for benches in results.values() for b in benches}
    blocks = []
    for table in TABLES:
        cols = [c for c in table.columns if c.benchmark in present]
        if not cols:
            continue
        lines = [f"**{table.title}**", "",
                 "| Method | " + " | ".join(c.header for c in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        any_value = False
        for method, benches in results.items():
            if not any(c.benchmark in benches for c in cols):
                continue   # this method ran none of the table's benchmarks
            cells = []
            for c in cols:
                v = benches.get(c.benchmark, {}).get(c.metric)
                cells.append("–" if v is None else f"{100.0 * v:.{digits}f}")
                any_value |= v is not None
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if any_value:   # e.g. ScanQA by question type needs the questions
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def results_json(results: Mapping[str, Mapping[str, Mapping[str, float]]], meta: Mapping[str, Any] | None = None) -> str:
    """The results as strict JSON (no NaN): {"schema", "created", "meta", "results"}."""
    _check(results)
    doc = {
        "schema": "r1-eval/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "meta": dict(meta or {}),
        "results": {m: {b: {k: float(v) for k, v in ms.items()} for b, ms in bs.items()} for m, bs in results.items()},
    }
    try:
        return json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta: not JSON-serialisable: {e}") from e


def load_results(path: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """The `results` of a JSON written by `save_report` (checked as on writing)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable results JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("schema") != "r1-eval/1" or "results" not in doc:
        raise ValueError(f"{path}: expected an r1-eval/1 results JSON with a 'results' key")
    _check(doc["results"])
    return doc["results"]


def save_report(
    out_dir: str | Path,
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    name: str = "results",
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write <out_dir>/<name>.json and <out_dir>/<name>.md; returns both paths. The Markdown lists
    `meta` (the run's settings) under the tables, so a partial run does not pass for a full one."""
    text_json = results_json(results, meta)
    text_md = f"# {name}\n\n" + markdown_tables(results)
    if meta:
        text_md += "\n**Run**\n\n" + "".join(f"- {k}: {json.dumps(v)}\n" for k, v in meta.items())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pj, pm = out / f"{name}.json", out / f"{name}.md"
    pj.write_text(text_json + "\n")
    pm.write_text(text_md)
    return pj, pm
