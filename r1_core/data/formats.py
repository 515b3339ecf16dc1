"""Readers and writers of the real 3D-language annotation formats, one record dataclass each.

    recs = read_scanrefer("data/ScanRefer/ScanRefer_filtered_train.json")   # list[ReferRecord]
    write_scanrefer(recs, "out/ScanRefer_filtered_train.json")             # same file layout

| format      | file(s)                                                         | reader              |
|-------------|-----------------------------------------------------------------|---------------------|
| ScanRefer   | ScanRefer_filtered_{split}.json                                 | read_scanrefer      |
| Nr3D        | nr3d.csv (ReferIt3D) / nr3d_{split}.json (LL3DA, ScanRefer-like) | read_nr3d_csv / read_nr3d_json |
| ScanQA      | ScanQA_v1.0_{split}.json                                        | read_scanqa         |
| SQA3D       | v1_balanced_questions_{split}_scannetv2.json + v1_balanced_sqa_annotations_{split}_scannetv2.json | read_sqa3d |
| 3D-LLM      | 3d_llm_embodied_{dialogue,planning}_filtered_{split}.json        | read_3dllm          |
| Scene-30K   | JSON list or JSONL of {scene_id, question, cot}                  | read_scene30k       |

Quirks handled as the real files have them: ScanRefer/Nr3D-json ids are strings ("12"),
Nr3D's `tokens` is a stringified Python list and booleans are "True"/"False", ScanQA test files
have no answers/object ids, SQA3D answers are dicts ({"answer": …}) or plain strings, 3D-LLM
dialogue history lives inside `question` ("### human: … ### assistant: …"). Any missing or
malformed field raises DataFormatError naming the file, the record index and the field.
Writers emit exactly these layouts, so synthetic data and real data read the same way.
"""
from __future__ import annotations

import ast
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from r1_core.data.errors import DataFormatError, require_file

# ---------------------------------------------------------------------------------------------
# helpers


def load_json(path: str | Path, what: str, top: type = list) -> Any:
    """Load a JSON file whose top level must be `top`; errors name the file and the position."""
    path = require_file(path, what)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if not isinstance(data, top):
        raise DataFormatError(path, f"expected a JSON {top.__name__} at the top level, got {type(data).__name__}")
    return data


def load_jsonl(path: str | Path, what: str) -> list[dict]:
    path = require_file(path, what)
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"line {i + 1} is not valid JSON: {e.msg}", record=len(out)) from None
    return out


def dump_json(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


_MISSING = object()


def field_of(rec: Any, key: str, kind: type | tuple, path: Path | str, i: int, default: Any = _MISSING) -> Any:
    """`rec[key]` checked against `kind`; missing (without default) or wrong types raise."""
    if not isinstance(rec, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(rec).__name__}", record=i)
    if key not in rec or rec[key] is None:
        if default is not _MISSING:
            return default
        raise DataFormatError(path, f"missing required field; record has {sorted(rec)}", record=i, field=key)
    value = rec[key]
    if kind is int and isinstance(value, str):
        # ScanRefer-style string ids ("12")
        if not re.fullmatch(r"-?\d+", value.strip()):
            raise DataFormatError(path, f"expected an integer id, got {value!r}", record=i, field=key)
        return int(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) and kind is int:
        raise DataFormatError(path, f"expected an integer, got {value!r}", record=i, field=key)
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataFormatError(path, f"expected {want}, got {type(value).__name__} {value!r:.80}", record=i, field=key)
    return value


def _str_list(value: Any, path, i, key) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(path, f"expected a list of strings, got {value!r:.80}", record=i, field=key)
    return list(value)


def _int_list(value: Any, path, i, key) -> list[int]:
    if not isinstance(value, list):
        raise DataFormatError(path, f"expected a list of integer ids, got {value!r:.80}", record=i, field=key)
    out = []
    for v in value:
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit())):
            raise DataFormatError(path, f"expected integer ids, got {v!r}", record=i, field=key)
        out.append(int(v))
    return out


def tokenize(text: str) -> list[str]:
    """ScanRefer-style tokens: lower-case words and punctuation."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text.lower())


# ---------------------------------------------------------------------------------------------
# ScanRefer (and LL3DA's Nr3D json, which has the same fields)


@dataclass
class ReferRecord:
    """One referring expression: ScanRefer, or Nr3D in LL3DA's json (`source` says which)."""
    scene_id: str
    object_id: int
    object_name: str
    ann_id: int
    description: str
    tokens: list[str] = field(default_factory=list)
    source: str = "scanrefer"


def read_scanrefer(path: str | Path, source: str = "scanrefer") -> list[ReferRecord]:
    """Read `ScanRefer_filtered_{split}.json` (list of {scene_id, object_id, object_name, ann_id,
    description, token})."""
    data = load_json(path, f"{source} annotation")
    out = []
    for i, r in enumerate(data):
        desc = field_of(r, "description", str, path, i)
        tokens = r.get("token")
        tokens = _str_list(tokens, path, i, "token") if tokens is not None else tokenize(desc)
        out.append(ReferRecord(
            scene_id=field_of(r, "scene_id", str, path, i),
            object_id=field_of(r, "object_id", int, path, i),
            object_name=field_of(r, "object_name", str, path, i),
            ann_id=field_of(r, "ann_id", int, path, i, default=0),
            description=desc, tokens=tokens, source=source,
        ))
    return out


def write_scanrefer(records: Iterable[ReferRecord], path: str | Path) -> Path:
    """Write the ScanRefer layout: ids as strings, `token` list, as the released files have them."""
    rows = [{
        "scene_id": r.scene_id, "object_id": str(r.object_id), "object_name": r.object_name,
        "ann_id": str(r.ann_id), "description": r.description,
        "token": r.tokens or tokenize(r.description),
    } for r in records]
    return dump_json(rows, path)


def read_nr3d_json(path: str | Path) -> list[ReferRecord]:
    """LL3DA-style `nr3d_{split}.json` (ScanRefer fields)."""
    return read_scanrefer(path, source="nr3d")


write_nr3d_json = write_scanrefer

# ---------------------------------------------------------------------------------------------
# Nr3D csv (ReferIt3D)

NR3D_COLUMNS = [
    "assignmentid", "stimulus_id", "utterance", "correct_guess", "speaker_id", "listener_id",
    "scan_id", "target_id", "dataset", "tokens", "instance_type", "mentions_target_class",
    "uses_object_lang", "uses_spatial_lang", "uses_color_lang", "uses_shape_lang",
]


@dataclass
class Nr3dRecord:
    scan_id: str
    target_id: int
    instance_type: str
    utterance: str
    stimulus_id: str = ""
    tokens: list[str] = field(default_factory=list)
    correct_guess: bool = True
    mentions_target_class: bool = True
    assignmentid: str = ""
    speaker_id: str = ""
    listener_id: str = ""
    dataset: str = "nr3d"
    uses_object_lang: bool = False
    uses_spatial_lang: bool = False
    uses_color_lang: bool = False
    uses_shape_lang: bool = False


def _bool(value: str, path, i, key) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0", ""):
        return False
    raise DataFormatError(path, f"expected True/False, got {value!r}", record=i, field=key)


def read_nr3d_csv(path: str | Path) -> list[Nr3dRecord]:
    """Read ReferIt3D's `nr3d.csv`. Required columns: scan_id, target_id, instance_type, utterance."""
    path = require_file(path, "Nr3D csv")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for c in ("scan_id", "target_id", "instance_type", "utterance"):
            if c not in cols:
                raise DataFormatError(path, f"missing column {c!r}; columns: {cols}")
        out = []
        for i, row in enumerate(reader):
            tid = (row.get("target_id") or "").strip()
            if not re.fullmatch(r"\d+", tid):
                raise DataFormatError(path, f"expected an integer object id, got {tid!r}", record=i, field="target_id")
            utt = row["utterance"] or ""
            if not utt.strip():
                raise DataFormatError(path, "empty utterance", record=i, field="utterance")
            tok_raw = (row.get("tokens") or "").strip()
            if tok_raw:
                try:
                    tokens = ast.literal_eval(tok_raw)  # stored as "['the', 'chair', ...]"
                except (ValueError, SyntaxError):
                    raise DataFormatError(path, f"expected a Python list literal, got {tok_raw[:60]!r}", record=i, field="tokens") from None
                tokens = _str_list(tokens, path, i, "tokens")
            else:
                tokens = tokenize(utt)
            bools = {k: _bool(row.get(k) or "", path, i, k) for k in (
                "correct_guess", "mentions_target_class", "uses_object_lang", "uses_spatial_lang",
                "uses_color_lang", "uses_shape_lang") if k in cols}
            out.append(Nr3dRecord(
                scan_id=row["scan_id"].strip(), target_id=int(tid), instance_type=row["instance_type"].strip(),
                utterance=utt, stimulus_id=row.get("stimulus_id") or "", tokens=tokens,
                assignmentid=row.get("assignmentid") or "", speaker_id=row.get("speaker_id") or "",
                listener_id=row.get("listener_id") or "", dataset=row.get("dataset") or "nr3d", **bools,
            ))
    return out


def write_nr3d_csv(records: Iterable[Nr3dRecord], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=NR3D_COLUMNS)
        w.writeheader()
        for r in records:
            row = {c: getattr(r, c) for c in NR3D_COLUMNS}
            row["tokens"] = repr(list(r.tokens or tokenize(r.utterance)))
            for k in ("correct_guess", "mentions_target_class", "uses_object_lang", "uses_spatial_lang",
                      "uses_color_lang", "uses_shape_lang"):
                row[k] = "True" if row[k] else "False"
            w.writerow(row)
    return path


def nr3d_to_refer(records: Iterable[Nr3dRecord]) -> list[ReferRecord]:
    """Nr3D csv rows as ScanRefer-like records (what LL3DA's nr3d_{split}.json holds)."""
    out = []
    for k, r in enumerate(records):
        utt = r.utterance.strip()
        if len(utt) >= 2 and utt[0] == utt[-1] == "'":
            utt = utt[1:-1]  # some utterances are stored quoted
        out.append(ReferRecord(r.scan_id, r.target_id, r.instance_type, k, utt, list(r.tokens) or tokenize(utt), "nr3d"))
    return out

# ---------------------------------------------------------------------------------------------
# ScanQA


@dataclass
class ScanQARecord:
    scene_id: str
    question_id: str
    question: str
    answers: list[str] | None = None       # None in the test files
    object_ids: list[int] | None = None
    object_names: list[str] | None = None


def read_scanqa(path: str | Path) -> list[ScanQARecord]:
    """Read `ScanQA_v1.0_{split}.json`; answers/object ids are optional (test splits lack them)."""
    data = load_json(path, "ScanQA annotation")
    out = []
    for i, r in enumerate(data):
        answers = r.get("answers")
        obj_ids = r.get("object_ids")
        names = r.get("object_names")
        out.append(ScanQARecord(
            scene_id=field_of(r, "scene_id", str, path, i),
            question_id=str(field_of(r, "question_id", (str, int), path, i)),
            question=field_of(r, "question", str, path, i),
            answers=_str_list(answers, path, i, "answers") if answers is not None else None,
            object_ids=_int_list(obj_ids, path, i, "object_ids") if obj_ids is not None else None,
            object_names=_str_list(names, path, i, "object_names") if names is not None else None,
        ))
        if out[-1].object_ids is not None and out[-1].object_names is not None \
                and len(out[-1].object_ids) != len(out[-1].object_names):
            raise DataFormatError(path, f"{len(out[-1].object_ids)} object_ids but {len(out[-1].object_names)} object_names",
                                  record=i, field="object_names")
    return out


def write_scanqa(records: Iterable[ScanQARecord], path: str | Path) -> Path:
    rows = []
    for r in records:
        row: dict[str, Any] = {}
        if r.answers is not None:
            row["answers"] = list(r.answers)
        if r.object_ids is not None:
            row["object_ids"] = [int(x) for x in r.object_ids]
        if r.object_names is not None:
            row["object_names"] = list(r.object_names)
        row.update(question=r.question, question_id=r.question_id, scene_id=r.scene_id)
        rows.append(row)
    return dump_json(rows, path)

# ---------------------------------------------------------------------------------------------
# SQA3D


@dataclass
class SQA3DRecord:
    scene_id: str
    question_id: int
    situation: str
    question: str
    answers: list[str] = field(default_factory=list)
    alternative_situation: list[str] = field(default_factory=list)
    position: tuple[float, float, float] | None = None          # agent position (map frame)
    rotation: tuple[float, float, float, float] | None = None   # quaternion x, y, z, w
    question_type: str = ""
    answer_type: str = ""


def sqa3d_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    root = Path(root)
    return (root / f"v1_balanced_questions_{split}_scannetv2.json",
            root / f"v1_balanced_sqa_annotations_{split}_scannetv2.json")


def read_sqa3d(questions_path: str | Path, annotations_path: str | Path | None) -> list[SQA3DRecord]:
    """Join SQA3D's questions file ({"questions": [...]}) with its annotations file
    ({"annotations": [...]}) by question_id. Without annotations, answers stay empty."""
    q = load_json(questions_path, "SQA3D questions", top=dict)
    if "questions" not in q or not isinstance(q["questions"], list):
        raise DataFormatError(questions_path, "expected {\"questions\": [...]}", field="questions")
    anns: dict[int, dict] = {}
    if annotations_path is not None:
        a = load_json(annotations_path, "SQA3D annotations", top=dict)
        if "annotations" not in a or not isinstance(a["annotations"], list):
            raise DataFormatError(annotations_path, "expected {\"annotations\": [...]}", field="annotations")
        for i, r in enumerate(a["annotations"]):
            qid = field_of(r, "question_id", int, annotations_path, i)
            answers = field_of(r, "answers", list, annotations_path, i)
            texts = []
            for ans in answers:
                if isinstance(ans, dict) and isinstance(ans.get("answer"), str):
                    texts.append(ans["answer"])
                elif isinstance(ans, str):
                    texts.append(ans)
                else:
                    raise DataFormatError(annotations_path, f"expected {{'answer': str}} or str, got {ans!r:.60}", record=i, field="answers")
            pos = rot = None
            if r.get("position") is not None:
                p = field_of(r, "position", dict, annotations_path, i)
                try:
                    pos = (float(p["x"]), float(p["y"]), float(p["z"]))
                except (KeyError, TypeError, ValueError):
                    raise DataFormatError(annotations_path, f"expected {{x, y, z}} numbers, got {p!r:.80}", record=i, field="position") from None
            if r.get("rotation") is not None:
                q_ = field_of(r, "rotation", dict, annotations_path, i)
                try:
                    rot = tuple(float(q_[k]) for k in ("_x", "_y", "_z", "_w"))
                except (KeyError, TypeError, ValueError):
                    raise DataFormatError(annotations_path, f"expected {{_x, _y, _z, _w}} numbers, got {q_!r:.80}", record=i, field="rotation") from None
            anns[qid] = dict(answers=texts, position=pos, rotation=rot,
                             question_type=str(r.get("question_type", "")), answer_type=str(r.get("answer_type", "")),
                             scene_id=r.get("scene_id"))
    out = []
    for i, r in enumerate(q["questions"]):
        qid = field_of(r, "question_id", int, questions_path, i)
        alt = r.get("alternative_situation") or []
        rec = SQA3DRecord(
            scene_id=field_of(r, "scene_id", str, questions_path, i), question_id=qid,
            situation=field_of(r, "situation", str, questions_path, i),
            question=field_of(r, "question", str, questions_path, i),
            alternative_situation=_str_list(alt, questions_path, i, "alternative_situation"),
        )
        if annotations_path is not None:
            if qid not in anns:
                raise DataFormatError(annotations_path, f"no annotation for question_id {qid} (question record {i} of {questions_path})", field="question_id")
            ann = anns[qid]
            if ann["scene_id"] not in (None, rec.scene_id):
                raise DataFormatError(annotations_path, f"question {qid}: scene {ann['scene_id']!r} differs from the questions file's {rec.scene_id!r}", field="scene_id")
            rec.answers, rec.position, rec.rotation = ann["answers"], ann["position"], ann["rotation"]
            rec.question_type, rec.answer_type = ann["question_type"], ann["answer_type"]
        out.append(rec)
    return out


def write_sqa3d(records: Iterable[SQA3DRecord], questions_path: str | Path, annotations_path: str | Path,
                split: str = "train") -> tuple[Path, Path]:
    records = list(records)
    qs = {"info": "SQA3D-format questions", "data_type": "scannetv2", "data_subtype": split,
          "questions": [{"alternative_situation": list(r.alternative_situation), "question": r.question,
                         "question_id": int(r.question_id), "scene_id": r.scene_id, "situation": r.situation}
                        for r in records]}
    anns = []
    for r in records:
        a: dict[str, Any] = {
            "answer_type": r.answer_type,
            "answers": [{"answer": t, "answer_confidence": "yes", "answer_id": k + 1} for k, t in enumerate(r.answers)],
            "question_id": int(r.question_id), "question_type": r.question_type, "scene_id": r.scene_id,
        }
        if r.position is not None:
            a["position"] = dict(zip("xyz", map(float, r.position)))
        if r.rotation is not None:
            a["rotation"] = dict(zip(("_x", "_y", "_z", "_w"), map(float, r.rotation)))
        anns.append(a)
    return dump_json(qs, questions_path), dump_json({"annotations": anns, "data_subtype": split}, annotations_path)

# ---------------------------------------------------------------------------------------------
# 3D-LLM embodied dialogue / planning

_TURN_RE = re.compile(r"(?:###\s*)?\b(human|user|assistant|robot|agent)\s*:", re.I)


@dataclass
class LLM3DRecord:
    scene_id: str
    question: str               # as stored: for dialogue, the whole history ending with the user's turn
    answers: list[str]
    task: str = "dialogue"      # "dialogue" or "planning"

    def turns(self) -> list[tuple[str, str]]:
        """(speaker, text) turns parsed from `question`; speaker is "user" or "assistant".
        A question without speaker tags is one user turn."""
        parts = _TURN_RE.split(self.question)
        if len(parts) == 1:
            return [("user", self.question.strip())]
        turns = []
        if parts[0].strip():
            turns.append(("user", parts[0].strip()))
        for who, text in zip(parts[1::2], parts[2::2]):
            role = "user" if who.lower() in ("human", "user") else "assistant"
            turns.append((role, text.strip()))
        return turns


def format_dialogue(turns: list[tuple[str, str]]) -> str:
    """Turns back into the 3D-LLM question string ("### human: … ### assistant: …")."""
    names = {"user": "human", "assistant": "assistant"}
    return " ".join(f"### {names[r]}: {t}" for r, t in turns)


def read_3dllm(path: str | Path, task: str = "dialogue") -> list[LLM3DRecord]:
    """Read 3D-LLM's embodied dialogue or planning json (list of {scene_id, question, answers})."""
    if task not in ("dialogue", "planning"):
        raise ValueError(f"unknown 3D-LLM task {task!r}; choose one of ['dialogue', 'planning']")
    data = load_json(path, f"3D-LLM {task}")
    out = []
    for i, r in enumerate(data):
        answers = field_of(r, "answers", list, path, i)
        out.append(LLM3DRecord(field_of(r, "scene_id", str, path, i), field_of(r, "question", str, path, i),
                               _str_list(answers, path, i, "answers"), task))
        if not out[-1].answers:
            raise DataFormatError(path, "expected at least one answer", record=i, field="answers")
    return out


def write_3dllm(records: Iterable[LLM3DRecord], path: str | Path) -> Path:
    return dump_json([{"scene_id": r.scene_id, "question": r.question, "answers": list(r.answers)} for r in records], path)

# ---------------------------------------------------------------------------------------------
# Scene-30K


@dataclass
class Scene30KRecord:
    scene_id: str
    question: str
    cot: str                     # "<think>…</think><answer>…</answer>"
    meta: dict = field(default_factory=dict)   # any further fields (task, object_ids, source, …)


def read_scene30k(path: str | Path, check: bool = True) -> list[Scene30KRecord]:
    """Read Scene-30K records from JSON (list) or JSONL; with `check`, every `cot` must parse
    with r1_core.model.answer.parse_response."""
    from r1_core.model.answer import AnswerFormatError, parse_response

    path = Path(path)
    if path.suffix == ".jsonl":
        data = load_jsonl(path, "Scene-30K")
    else:
        data = load_json(path, "Scene-30K")
    out = []
    for i, r in enumerate(data):
        cot = field_of(r, "cot", str, path, i)
        if check:
            try:
                parse_response(cot)
            except AnswerFormatError as e:
                raise DataFormatError(path, f"not a <think>…</think><answer>…</answer> response: {e}", record=i, field="cot") from None
        meta = {k: v for k, v in r.items() if k not in ("scene_id", "question", "cot")}
        out.append(Scene30KRecord(field_of(r, "scene_id", str, path, i), field_of(r, "question", str, path, i), cot, meta))
    return out


def write_scene30k(records: Iterable[Scene30KRecord], path: str | Path) -> Path:
    rows = [{"scene_id": r.scene_id, "question": r.question, "cot": r.cot, **r.meta} for r in records]
    path = Path(path)
    if path.suffix == ".jsonl":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
        return path
    return dump_json(rows, path)
