"""Does a QA answer follow the objects its reasoning names? Per model and question type: the
evidence reward of each QA prediction (training/rewards.py: matched 3D IoU of the boxes its
reasoning names with the question's objects; 1/0 for naming none/some where the question has
none), and exact match among the questions whose evidence reaches 0.5 and among the others.

    python bench/qa_evidence.py sft.jsonl.gz grpo.jsonl.gz --names SFT SFT+GRPO --out qa_evidence.json

The files are `r1 eval --no-score` predictions (plain or .gz); their QA predictions are read (the
held-out examples carry the question's objects as `gt_boxes`, not a reference reasoning, so those
stand in for the boxes the reference reasoning names). A malformed prediction scores 0, as in GRPO.
Types: r1_core.eval.qa.scanqa_question_type.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.qa_types import load_models, shared_questions, type_indices  # noqa: E402
from r1_core.eval.qa import answer_match  # noqa: E402
from r1_core.model.answer import format_response  # noqa: E402
from training.rewards import EvidenceReward  # noqa: E402

THRESHOLD = 0.5


def evidence(preds: list[dict]) -> list[float]:
    """The evidence reward of each QA prediction, scored on its reasoning as decoded (boxes resolved)."""
    texts = [format_response(p["reasoning"], p["answer"]) if p.get("well_formed") else p.get("raw", "")
             for p in preds]
    return EvidenceReward()(None, texts, evidence_boxes=[np.asarray(p.get("gt_boxes") or [], np.float64).reshape(-1, 7)
                                                         for p in preds], tasks=["qa"] * len(preds))


def summarise(ev: list[float], em: list[float]) -> dict:
    e, m = np.asarray(ev, np.float64), np.asarray(em, np.float64)
    hi = e >= THRESHOLD

    def share(mask):
        return 100.0 * float(m[mask].mean()) if mask.any() else None

    return {"n": len(e), "evidence": float(e.mean()), "EM": 100.0 * float(m.mean()),
            "n_evidence": int(hi.sum()), "EM_evidence": share(hi), "EM_no_evidence": share(~hi)}


def table(models: dict[str, dict[tuple[str, str], dict]]) -> dict[str, dict[str, dict]]:
    """type (then "all") -> model -> summarise(...) over the questions every model answered."""
    keys = shared_questions(models)
    groups = {**type_indices(keys), "all": list(range(len(keys)))}
    out: dict[str, dict[str, dict]] = {}
    for name, m in models.items():
        preds = [m[k] for k in keys]
        ev = evidence(preds)
        em = [float(answer_match(p.get("answer") or "", p["references"])[0]) for p in preds]
        for t, idx in groups.items():
            out.setdefault(t, {})[name] = summarise([ev[i] for i in idx], [em[i] for i in idx])
    return out


def markdown(rows: dict[str, dict[str, dict]], names: list[str]) -> str:
    lines = [f"| type | n | " + " | ".join(f"{n} evidence | {n} EM (evidence ≥ {THRESHOLD} / below)" for n in names) + " |",
             "|---|---:|" + "---:|---|" * len(names)]

    def pct(x):
        return "–" if x is None else f"{x:.0f}"

    for t, row in rows.items():
        cells = " | ".join(f"{row[n]['evidence']:.3f} | {row[n]['EM']:.1f} ({pct(row[n]['EM_evidence'])} / "
                           f"{pct(row[n]['EM_no_evidence'])} %, {row[n]['n_evidence']} with)" for n in names)
        lines.append(f"| {t} | {row[names[0]]['n']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="+", help="r1 eval --no-score predictions (.jsonl or .jsonl.gz)")
    ap.add_argument("--names", nargs="+", help="one name per file (default: the file names)")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args(argv)
    models = load_models(args.predictions, args.names)
    names = list(models)
    rows = table(models)
    print(markdown(rows, names))
    if args.out:
        Path(args.out).write_text(json.dumps({"predictions": dict(zip(names, args.predictions)), "types": rows},
                                             indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
