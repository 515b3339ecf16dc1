"""ScanQA exact match by question type, for several models on the same questions, and each
model's most common answer per type: where a training stage moved an answer prior.

    python bench/qa_types.py sft.jsonl.gz grpo.jsonl.gz --names SFT SFT+GRPO --out qa_types.json
    python bench/qa_types.py sft.jsonl.gz grpo.jsonl.gz --names SFT SFT+GRPO --cider   # + CIDEr by type
    python bench/qa_types.py --answers data/ScanQA/ScanQA_v1.0_train.json   # the references' priors

The files are `r1 eval --no-score` predictions (plain or .gz) of the same pack and split; only
their QA predictions are read. Types: r1_core.eval.qa.scanqa_question_type. A type whose most
common answer takes most of its questions (e.g. every "is there" answered "yes") is answered
from a prior, not from the scene.

`--cider` adds each type's share of the corpus QA CIDEr (pycocoevalcap's, over all shared
questions: its per-question scores summed over the type's questions and divided by the number of
questions, so the types add up to the corpus score) and its mean per-question CIDEr. Where two
models' QA CIDEr differ, the shares say which types make the difference. Needs Java (the PTB
tokeniser), as the benchmark's scorer does.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1_core.eval.qa import SCANQA_TYPE_NAMES, exact_match, scanqa_question_type  # noqa: E402
from training.evaluate import read_predictions  # noqa: E402


def qa_by_key(preds: list[dict], source: str) -> dict[tuple[str, str], dict]:
    """QA predictions keyed by (scene, question); a repeated key is an error (it could not be paired)."""
    out: dict[tuple[str, str], dict] = {}
    for p in preds:
        if p.get("task") != "qa" or not p.get("references"):
            continue
        key = (p["scene_id"], p["question"])
        if key in out:
            raise ValueError(f"{source}: question {key[1]!r} of scene {key[0]} appears twice")
        out[key] = p
    if not out:
        raise ValueError(f"{source}: no QA predictions with references")
    return out


def load_models(predictions: list[str], names: list[str] | None) -> dict[str, dict[tuple[str, str], dict]]:
    """name -> qa_by_key of each prediction file; `names` (default: the file names) must be distinct,
    one per file."""
    names = names or [Path(p).name for p in predictions]
    if len(names) != len(predictions) or len(set(names)) != len(names):
        raise SystemExit(f"--names: expected {len(predictions)} distinct names, got {names}")
    return {n: qa_by_key(read_predictions(p), p) for n, p in zip(names, predictions)}


def shared_questions(models: dict[str, dict[tuple[str, str], dict]]) -> list[tuple[str, str]]:
    """The first model's question keys, which every model must answer (no more, no fewer)."""
    keys = list(next(iter(models.values())))
    for name, m in models.items():
        if set(m) != set(keys):
            raise ValueError(f"{name}: answers {len(m)} questions, not the same {len(keys)} as the first model")
    return keys


def type_indices(keys: list[tuple[str, str]]) -> dict[str, list[int]]:
    """type -> the indices into `keys` of its questions, in SCANQA_TYPE_NAMES order (types with
    questions only)."""
    types = [scanqa_question_type(k[1]) for k in keys]
    return {t: [i for i, x in enumerate(types) if x == t] for t in SCANQA_TYPE_NAMES if t in types}


def by_type(models: dict[str, dict[tuple[str, str], dict]]) -> dict[str, dict]:
    """type -> {"n", then per model {"EM", "top_answer", "top_share"}} over the questions every
    model answered (the models must share their questions)."""
    keys = shared_questions(models)
    out = {}
    for t, idx in type_indices(keys).items():
        ks = [keys[i] for i in idx]
        row: dict = {"n": len(ks)}
        for name, m in models.items():
            answers = [m[k].get("answer") or "" for k in ks]
            em = exact_match(answers, [m[k]["references"] for k in ks])["EM"]
            top, count = Counter(answers).most_common(1)[0]
            row[name] = {"EM": 100.0 * em, "top_answer": top, "top_share": 100.0 * count / len(ks)}
        out[t] = row
    return out


def cider_by_type(models: dict[str, dict[tuple[str, str], dict]]) -> dict[str, dict]:
    """type -> per model {"share", "mean"}: the type's part of the corpus QA CIDEr (×100; the
    shares of all types add up to the corpus score) and its questions' mean CIDEr, from the
    benchmark's scorer (per-sample CIDEr of one corpus run per model) over the questions every
    model answered."""
    from r1_core.eval.captions import CaptionScorer

    keys = shared_questions(models)
    first = next(iter(models.values()))
    references = {i: first[k]["references"] for i, k in enumerate(keys)}
    scorer = CaptionScorer(metrics=("CIDEr",))
    per_question = {}
    for name, m in models.items():
        scored = scorer.score({i: m[k].get("answer") or "" for i, k in enumerate(keys)}, references, per_sample=True)
        per_question[name] = 100.0 * np.array([scored.per_sample["CIDEr"][i] for i in range(len(keys))])
    out = {}
    for t, idx in type_indices(keys).items():
        out[t] = {name: {"share": float(s[idx].sum() / len(keys)), "mean": float(s[idx].mean())}
                  for name, s in per_question.items()}
    return out


def answer_priors(questions: list[dict], top: int = 4) -> dict[str, dict]:
    """type -> {"n", "answers": [(answer, share %), ...]} of a ScanQA annotation file's first
    answers: what a model that cannot read a type from the scene would learn to say."""
    by: dict[str, Counter] = {}
    for i, q in enumerate(questions):
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not q.get("answers"):
            raise ValueError(f"question {i}: expected a ScanQA record with 'question' and 'answers', got {q!r:.120}")
        by.setdefault(scanqa_question_type(q["question"]), Counter())[q["answers"][0]] += 1
    return {t: {"n": sum(by[t].values()),
                "answers": [(a, 100.0 * k / sum(by[t].values())) for a, k in by[t].most_common(top)]}
            for t in SCANQA_TYPE_NAMES if t in by}


def markdown(table: dict[str, dict], names: list[str]) -> str:
    lines = ["| type | n | " + " | ".join(f"{n} EM" for n in names) + " | "
             + " | ".join(f"{n} most common answer" for n in names) + " |",
             "|---|---:|" + "---:|" * len(names) + "---|" * len(names)]
    for t, row in table.items():
        em = " | ".join(f"{row[n]['EM']:.1f}" for n in names)
        top = " | ".join(f"{row[n]['top_answer']!r} {row[n]['top_share']:.0f} %" for n in names)
        lines.append(f"| {t} | {row['n']} | {em} | {top} |")
    return "\n".join(lines)


def cider_markdown(table: dict[str, dict], names: list[str]) -> str:
    lines = ["| type | " + " | ".join(f"{n} CIDEr share" for n in names) + " | "
             + " | ".join(f"{n} mean CIDEr" for n in names) + " |",
             "|---|" + "---:|" * (2 * len(names))]
    for t, row in table.items():
        lines.append(f"| {t} | " + " | ".join(f"{row[n]['share']:.1f}" for n in names) + " | "
                     + " | ".join(f"{row[n]['mean']:.1f}" for n in names) + " |")
    lines.append("| all | " + " | ".join(f"{sum(r[n]['share'] for r in table.values()):.1f}" for n in names)
                 + " |" + " |" * len(names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="*", help="r1 eval --no-score predictions (.jsonl or .jsonl.gz)")
    ap.add_argument("--answers", type=Path, help="instead: a ScanQA annotation JSON; print each type's answer shares")
    ap.add_argument("--names", nargs="+", help="one name per file (default: the file names)")
    ap.add_argument("--cider", action="store_true", help="add each type's share of the corpus QA CIDEr (needs Java)")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args(argv)
    if args.answers:
        priors = answer_priors(json.loads(args.answers.read_text()))
        for t, row in priors.items():
            print(f"| {t} | {row['n']} | " + ", ".join(f"{a!r} {share:.0f} %" for a, share in row["answers"]) + " |")
        return priors
    if not args.predictions:
        raise SystemExit("give prediction files, or --answers with a ScanQA annotation file")
    models = load_models(args.predictions, args.names)
    names = list(models)
    table = by_type(models)
    print(markdown(table, names))
    if args.cider:
        cider = cider_by_type(models)
        print()
        print(cider_markdown(cider, names))
        for t, row in cider.items():
            for n in names:
                table[t][n].update(cider_share=row[n]["share"], cider_mean=row[n]["mean"])
    if args.out:
        Path(args.out).write_text(json.dumps({"predictions": dict(zip(names, args.predictions)), "types": table},
                                             indent=1) + "\n")
    return table


if __name__ == "__main__":
    main()
