"""Evaluation: run a checkpoint over a split, then score the predictions with the benchmarks'
metric definitions (r1_core.eval).

    r1 eval --checkpoint runs/nano/grpo/final --pack data/nano_pack --out runs/nano/eval
    # or in two halves (e.g. predict on a GPU machine without Java, score where METEOR runs):
    r1 eval --checkpoint … --pack … --out runs/nano/eval --no-score
    r1 eval --predictions runs/nano/eval/predictions.jsonl --out runs/nano/eval --name "R1-nano (SFT+GRPO)"

Benchmarks scored from a pack's validation examples (their original annotation files):
  scanrefer        grounding Acc@0.25 / Acc@0.5 (overall, unique, multiple), predicted box =
                   the first box of the answer, none = a miss
  scanqa           EM / EM-R and BLEU / METEOR / ROUGE-L / CIDEr of the answer text
  3dllm_dialogue   caption metrics of the answer text
  3dllm_planning   caption metrics of the answer text
  scan2cap         dense captioning m@0.25 / m@0.5: every proposal of a scene with grounding
                   examples is captioned (object_caption request for its box; the scene's uniform
                   views) and each described object is scored against the caption of its
                   best-overlapping proposal (ScanRefer descriptions are the references)

A predictions file is checked before it is scored (check_predictions): every record needs the
fields its task's metric reads; a wrong one stops with the file, line and field.
"""
from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from r1_core.data.errors import DataFormatError
from r1_core.eval.grounding import scanrefer_class, scanrefer_unique_lookup
from r1_core.geometry.boxes import is_box_list
from r1_core.model.answer import AnswerFormatError, parse_response, resolve_refs
from r1_core.model.generate import GenerationSettings, by_budget, generate
from r1_core.model.r1model import R1Model
from r1_core.query import SceneQuery
from training.data import TrainExample, TrainingPack

TASK_BENCHMARK = {"grounding": "scanrefer", "qa": "scanqa", "dialogue": "3dllm_dialogue",
                  "planning": "3dllm_planning"}
# New-token budgets that differ from `max_new_tokens`: a plan's reasoning and steps run 200-300
# tokens, so at the common 160 most plans were cut off inside <think> and scored as empty answers.
TASK_MAX_NEW_TOKENS = {"planning": 384}
PREDICTION_TASKS = (*TASK_BENCHMARK, "scan2cap")


def prediction_counts(preds: list[dict]) -> dict[str, dict[str, float]]:
    """Per task: how many predictions were scored ("n"; scenes for scan2cap) and the share of them
    whose answer was well-formed (`<think>…</think><answer>…</answer>`)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for p in preds:
        by_task[p["task"]].append(p)
    return {t: {"n": len(ps), **({"well_formed": float(np.mean([p["well_formed"] for p in ps]))}
                                  if all("well_formed" in p for p in ps) else {})}
            for t, ps in sorted(by_task.items())}


def parse_task_budgets(pairs: list[str]) -> dict[str, int]:
    """`["planning=384", ...]` -> {"planning": 384}; names the bad pair and what was expected."""
    out = {}
    for pair in pairs:
        task, sep, value = pair.partition("=")
        if not sep or task not in TASK_BENCHMARK or not value.isdigit() or int(value) <= 0:
            raise ValueError(f"task new-token budget {pair!r}: expected TASK=N with TASK one of "
                             f"{sorted(TASK_BENCHMARK)} and N a positive integer")
        out[task] = int(value)
    return out


def _record(ex: TrainExample | None, raw: str, boxes_props: np.ndarray, finish: str, **extra) -> dict:
    rec = {"raw": raw, "finish": finish, "answer": "", "reasoning": "", "boxes": [], "well_formed": False,
           "error": ""}
    try:
        parsed = parse_response(resolve_refs(raw, boxes_props))
        rec.update(answer=parsed.answer_plain, reasoning=parsed.reasoning, boxes=parsed.boxes.tolist(), well_formed=True)
    except AnswerFormatError as e:
        rec["error"] = str(e)
    if ex is not None:
        rec.update(task=ex.task, scene_id=ex.scene_id, question=ex.text, references=ex.answers,
                   gt_boxes=ex.gt_boxes, source=ex.meta.get("source", ""), object_ids=ex.object_ids)
    rec.update(extra)
    return rec


@torch.no_grad()
def predict(model: R1Model, pack: TrainingPack, split: str = "val", views: str = "dynamic", num_views: int = 4,
            batch_size: int = 16, max_new_tokens: int = 160, tasks: tuple[str, ...] = tuple(TASK_BENCHMARK),
            dense_caption: bool = True, limit: int = 0, every: int = 1, progress: bool = True,
            task_max_new_tokens: dict[str, int] | None = None, cuda_graph: bool | None = None) -> list[dict]:
    """Greedy answers for the split's examples (+ dense captions of the scenes with grounding
    examples, whose descriptions are Scan2Cap's references). `every` keeps every
    n-th example (a deterministic, evenly spread subset for slow machines). Each task's new-token
    budget is `task_max_new_tokens[task]` (default TASK_MAX_NEW_TOKENS), else `max_new_tokens`.
    `cuda_graph` (default: on a CUDA device) replays decode steps from a captured graph: eager
    decoding of the 135M model is bound by kernel launches (~7 s a batch of 64 on an H100)."""
    budgets = TASK_MAX_NEW_TOKENS if task_max_new_tokens is None else task_max_new_tokens
    if cuda_graph is None:
        cuda_graph = model.device.type == "cuda"
    was_merged = model.lora_merged          # an int8 model (quantize_int8) is merged for good
    model.eval().merge_lora()
    try:
        return _predict(model, pack, split, views, num_views, batch_size, max_new_tokens, tasks, dense_caption,
                        limit, every, progress, budgets, cuda_graph)
    finally:
        if not was_merged:
            model.unmerge_lora()


def _predict(model, pack, split, views, num_views, batch_size, max_new_tokens, tasks, dense_caption, limit, every,
             progress, budgets, cuda_graph) -> list[dict]:
    examples = [e for e in pack.examples(split) if e.task in tasks][::every]
    if limit:
        examples = examples[:limit]

    def budget(e: TrainExample) -> int:
        return budgets.get(e.task, max_new_tokens)

    groups = by_budget(examples, budget)
    examples = [e for _, group in groups for e in group]
    batches = [(n, group[i:i + batch_size]) for n, group in groups for i in range(0, len(group), batch_size)]
    encodings = {sid: model.encode_scene(pack.scene(sid).points)
                 for sid in tqdm(sorted({e.scene_id for e in examples}), desc="encode", disable=not progress)}
    settings = GenerationSettings(max_new_tokens=max_new_tokens, cuda_graph=cuda_graph)
    out: list[dict] = []

    def run(jobs: list[tuple], settings: GenerationSettings = settings) -> list:
        samples = [model.prepare(encodings[sid], v, q) for sid, v, q in jobs]
        return generate(model, model.collate(samples, for_generation=True), settings)

    # ScanRefer's unique/multiple split: over the objects the split's descriptions refer to
    unique = scanrefer_unique_lookup(
        (e.scene_id, e.object_ids[0], scanrefer_class(pack.scene(e.scene_id).object(e.object_ids[0]).nyu40_id))
        for e in pack.examples(split) if e.task == "grounding" and e.scene_id in encodings)
    for n, chunk in tqdm(batches, desc=f"predict {split}", disable=not progress):
        jobs = [(e.scene_id, pack.views(e, views, num_views) if views != "none" else [], e.query()) for e in chunk]
        for e, res in zip(chunk, run(jobs, GenerationSettings(max_new_tokens=n, cuda_graph=cuda_graph))):
            extra = {"unique": unique[(e.scene_id, e.object_ids[0])]} if e.task == "grounding" else {}
            out.append(_record(e, res.text, encodings[e.scene_id].boxes, res.finish_reason, **extra))
    if dense_caption:
        by_scene = defaultdict(list)
        for e in examples:
            by_scene[e.scene_id].append(e)
        described = sorted({e.scene_id for e in examples if e.task == "grounding"})
        for sid in tqdm(described, desc="dense captions", disable=not progress):
            enc = encodings[sid]
            first = by_scene[sid][0]
            v = pack.views(first, "uniform", num_views) if views != "none" else []
            jobs = [(sid, v, SceneQuery("object_caption", target_box=b)) for b in enc.boxes]
            caps = []
            for j in range(0, len(jobs), batch_size):
                caps += run(jobs[j:j + batch_size])
            out.append({"task": "scan2cap", "scene_id": sid, "pred_boxes": enc.boxes.tolist(),
                        "captions": [_record(None, c.text, enc.boxes, c.finish_reason)["answer"] for c in caps]})
    return out


def score(predictions: list[dict]) -> dict[str, dict[str, float]]:
    """Benchmark metrics of a prediction list (see module docstring). Needs pycocoevalcap and
    Java (METEOR), so it runs where those are — not necessarily where `predict` ran."""
    from r1_core.eval.captions import CaptionScorer

    check_predictions(predictions, "predictions")
    by_task = defaultdict(list)
    for p in predictions:
        by_task[p["task"]].append(p)
    with CaptionScorer() as scorer:
        return _score(by_task, scorer)


def _score(by_task: dict[str, list[dict]], scorer) -> dict[str, dict[str, float]]:
    from r1_core.eval.captions import caption_metrics
    from r1_core.eval.dense_caption import dense_caption_metrics
    from r1_core.eval.grounding import scanrefer_metrics
    from r1_core.eval.qa import scanqa_metrics

    results: dict[str, dict[str, float]] = {}
    g = by_task.get("grounding", [])
    if g:
        preds = [p["boxes"][0] if p["boxes"] else None for p in g]
        gts = np.array([p["gt_boxes"][0] for p in g], np.float64)
        results["scanrefer"] = scanrefer_metrics(preds, gts, [p["unique"] for p in g])
        results["scanrefer"]["well_formed"] = float(np.mean([p["well_formed"] for p in g]))
    for task in ("qa", "dialogue", "planning"):
        ps = by_task.get(task, [])
        if not ps:
            continue
        preds = {i: p["answer"] for i, p in enumerate(ps)}
        refs = {i: p["references"] for i, p in enumerate(ps)}
        bench = TASK_BENCHMARK[task]
        if task == "qa":
            # EM per question type where every prediction carries its question
            questions = {i: p.get("question") for i, p in enumerate(ps)}
            if not all(isinstance(q, str) for q in questions.values()):
                questions = None
            results[bench] = scanqa_metrics(preds, refs, scorer=scorer, questions=questions)
        else:
            results[bench] = caption_metrics(preds, refs, scorer=scorer)
        results[bench]["well_formed"] = float(np.mean([p["well_formed"] for p in ps]))
    dense = by_task.get("scan2cap", [])
    if dense:
        gt: dict[str, tuple[list, list[list[str]]]] = {}
        for p in g:   # the grounding descriptions are the Scan2Cap references
            boxes, caps = gt.setdefault(p["scene_id"], ([], []))
            key = tuple(np.round(p["gt_boxes"][0], 4))
            keys = [tuple(np.round(b, 4)) for b in boxes]
            if key in keys:
                caps[keys.index(key)].append(p["question"])
            else:
                boxes.append(p["gt_boxes"][0])
                caps.append([p["question"]])
        # every described object counts: one in a scene without captions scores 0 (Scan2Cap's mean)
        preds = {d["scene_id"]: (np.array(d["pred_boxes"]), d["captions"]) for d in dense}
        gt_arr = {sid: (np.array(b), c) for sid, (b, c) in gt.items()}
        results["scan2cap"] = dense_caption_metrics(preds, gt_arr, scorer=scorer)
    return results


def refuse_earlier_run(out: Path, names: list[str], overwrite: bool, command: str) -> None:
    """SystemExit when `out` holds any of an earlier run's files `names` and `overwrite` is off:
    nothing a run saved (another model's row, hours of predictions) is replaced without asking."""
    held = [n for n in names if (out / n).exists()]
    if held and not overwrite:
        raise SystemExit(f"{command}: {out} already holds {', '.join(held)} of an earlier run; give another --out, "
                         "or --overwrite to replace them")


def write_predictions(preds: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return path


def read_predictions(path: str | Path) -> list[dict]:
    """Predictions written by write_predictions: JSON lines, plain or gzipped (name ending .gz, as
    bench/results keeps them), checked by check_predictions."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such predictions file")
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    preds, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            preds.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"line {n} is not a JSON prediction ({e.msg}): {line[:80]!r}") from None
        lines.append(n)
    check_predictions(preds, path, lines)
    return preds


def check_predictions(preds: list, path: str | Path, lines: list[int] | None = None) -> None:
    """Raise DataFormatError (file, line, field) unless every record carries what its task's metric
    reads: grounding `scene_id`, `question`, `boxes` (K x 7, K may be 0), `gt_boxes` (>= 1 x 7),
    `unique`, `well_formed`; qa / dialogue / planning `answer`, `references` (>= 1 text),
    `well_formed`; scan2cap `scene_id`, `pred_boxes`, `captions` (one per box), for a scene some
    grounding record describes. An empty list is an error too: there is nothing to score."""
    if not preds:
        raise DataFormatError(path, "no predictions to score")
    lines = lines or list(range(1, len(preds) + 1))

    def bad(i: int, field: str | None, message: str) -> DataFormatError:
        return DataFormatError(f"{path}: line {lines[i]}", message, field=field)

    def text(i: int, p: dict, field: str) -> None:
        if not isinstance(p.get(field), str):
            raise bad(i, field, f"expected a string, got {p.get(field)!r:.60}")

    def boxes(i: int, p: dict, field: str, least: int) -> None:
        v = p.get(field)
        if not is_box_list(v, least):
            raise bad(i, field, f"expected a list of at least {least} boxes of 7 finite numbers "
                                f"(cx cy cz dx dy dz yaw), got {v!r:.80}")

    def flag(i: int, p: dict, field: str) -> None:
        if not isinstance(p.get(field), bool):
            raise bad(i, field, f"expected true or false, got {p.get(field)!r:.40}")

    described, captioned = set(), []
    for i, p in enumerate(preds):
        if not isinstance(p, dict):
            raise bad(i, None, f"expected a JSON object (one prediction per line), got {type(p).__name__}")
        task = p.get("task")
        if task not in PREDICTION_TASKS:
            raise bad(i, "task", f"expected one of {list(PREDICTION_TASKS)}, got {task!r:.40}")
        if task == "grounding":
            text(i, p, "scene_id"), text(i, p, "question"), boxes(i, p, "boxes", 0), boxes(i, p, "gt_boxes", 1)
            flag(i, p, "unique"), flag(i, p, "well_formed")
            described.add(p["scene_id"])
        elif task == "scan2cap":
            text(i, p, "scene_id"), boxes(i, p, "pred_boxes", 0)
            caps = p.get("captions")
            if not (isinstance(caps, list) and all(isinstance(c, str) for c in caps) and len(caps) == len(p["pred_boxes"])):
                raise bad(i, "captions", f"expected one caption string per pred_boxes entry "
                                         f"({len(p['pred_boxes'])}), got {caps!r:.80}")
            captioned.append(i)
        else:
            text(i, p, "answer"), flag(i, p, "well_formed")
            refs = p.get("references")
            if not (isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs)):
                raise bad(i, "references", f"expected a non-empty list of reference strings, got {refs!r:.80}")
    for i in captioned:
        if preds[i]["scene_id"] not in described:
            raise bad(i, "scene_id", f"scan2cap captions of {preds[i]['scene_id']!r}, but no grounding record "
                                     "describes that scene (its descriptions are the references)")
