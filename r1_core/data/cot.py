"""The Scene-30K data engine: chain-of-thought records `<think>…</think><answer>…</answer>`
synthesised from a dataset's annotations, then kept only if they pass the quality filters.

    engine = CotEngine(CotConfig(backend="template"), DatasetLayout("data/synth"))
    stats = engine.run("train")      # writes Scene-30K/scene30k_train.jsonl (+ _rejected.jsonl)

Backends (CotConfig.backend):
  template      deterministic, offline; reasoning grounded in the scene graph (objects of the
                asked class with colours and positions, the relation that singles out the target)
  transformers  a local causal LM directory (AutoModelForCausalLM, local files only)
  openai        any OpenAI-compatible POST {base_url}/chat/completions endpoint
The LLM backends get what the paper's engine gave Gemini: the scene's objects (class, colour,
position), the question and the reference answer, and are asked for the two blocks.

Filters (as the 3D-R1 paper describes its engine; thresholds in CotFilterConfig):
  format           exactly one think block then one answer block (r1_core.model.answer.check_format)
  length           at least `min_think_words` / `min_answer_words` words
  steps            at least `min_step_cues` step cues (First / Second / Next / Then / Finally / Step n …)
  final step       the text from the last cue on mentions a content word of the question
  consistency      grounding: IoU of the answer's box with the target box ≥ `box_iou`;
                   otherwise the answer matches a reference (normalised containment, or
                   difflib similarity ratio ≥ `answer_similarity`)
"""
from __future__ import annotations

import difflib
import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from r1_core.data.formats import Scene30KRecord, write_scene30k
from r1_core.data.graph import SceneGraph, parse_expression
from r1_core.data.scene import Scene, load_scannet_scene
from r1_core.data.tasks import SOURCES, DatasetLayout, TaskSample, load_task_samples
from r1_core.data.vocab import NOUNS, plural
from r1_core.model.answer import AnswerFormatError, format_box, format_response, parse_response

BACKENDS = ("template", "transformers", "openai")
POSITIONS = ("boxes", "coords")
# a step cue opens a sentence ("Next, …"), so "next to the bed" inside a step is not one
STEP_CUE_RE = re.compile(r"(?:^|(?<=[.!?;:])\s+)(step\s*\d+|first|firstly|second|secondly|third|next|then|afterwards?|finally|lastly)\b", re.I)
_STOP = set("the a an of in on to is are was were what which where who how many much does do did there this that "
            "it its and or for with from at by be as room scene object objects can you me my i".split())


@dataclass
class CotFilterConfig:
    min_think_words: int = 20
    min_answer_words: int = 1
    min_step_cues: int = 3
    final_step_mentions_question: bool = True
    answer_similarity: float = 0.8
    box_iou: float = 0.5


@dataclass
class CotConfig:
    """Scene-30K engine settings (config/data.yaml, section `cot`)."""
    backend: str = "template"
    positions: str = "boxes"               # template: name objects by <box> (trainable as refs) or (x, y)
    sources: tuple[str, ...] = ("scanrefer", "scanqa", "sqa3d", "3dllm_dialogue", "3dllm_planning")
    max_per_scene: int = 0                 # 0 = every annotation
    model_path: str = ""                   # transformers: local model directory
    base_url: str = "http://127.0.0.1:8000/v1"   # openai: endpoint root
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"   # name of the env var holding the key (may be unset)
    timeout_s: float = 60.0
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    filters: CotFilterConfig = field(default_factory=CotFilterConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown CoT backend {self.backend!r}; choose one of {list(BACKENDS)}")
        if self.backend == "transformers" and not self.model_path:
            raise ValueError("backend 'transformers' needs model_path (a local model directory)")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; choose one of {list(POSITIONS)}")
        annotations = [s for s in SOURCES if s != "scene30k"]     # what CoT is written from
        if not self.sources or any(s not in annotations for s in self.sources):
            raise ValueError(f"sources: expected annotation sources among {annotations}, got {list(self.sources)}")


# ---------------------------------------------------------------------------------------------
# filters


@dataclass
class FilterResult:
    ok: bool
    reasons: list[str]


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def _stems(w: str) -> set[str]:
    """The word and its singular candidates ("boxes" → box/boxe, "pictures" → picture, "tvs" → tv)."""
    w = w.lower()
    out = {w}
    if w.endswith("s") and len(w) >= 3:
        out.add(w[:-1])
    if w.endswith("es") and len(w) >= 4:
        out.add(w[:-2])
    return out


def _norm(text: str) -> str:
    t = re.sub(r"<box>.*?</box>", " ", text.lower())
    t = re.sub(r"[^a-z0-9 ]", " ", t)
    return " ".join(w for w in t.split() if w not in ("a", "an", "the"))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two axis-aligned boxes (cx, cy, cz, dx, dy, dz[, yaw]); yaw is ignored."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lo = np.maximum(a[:3] - a[3:6] / 2, b[:3] - b[3:6] / 2)
    hi = np.minimum(a[:3] + a[3:6] / 2, b[:3] + b[3:6] / 2)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[3:6]) + np.prod(b[3:6]) - inter)
    return inter / union if union > 0 else 0.0


def check_cot(text: str, question: str, answers: list[str], boxes: np.ndarray | None, cfg: CotFilterConfig) -> FilterResult:
    """Apply every filter; `reasons` lists each one that failed (empty when kept)."""
    try:
        parsed = parse_response(text)
    except AnswerFormatError as e:
        return FilterResult(False, [f"format: {e}"])
    reasons = []
    think, ans = parsed.reasoning, parsed.answer_plain
    if len(words(think)) < cfg.min_think_words:
        reasons.append(f"think_too_short: {len(words(think))} < {cfg.min_think_words} words")
    if len(words(ans)) + len(parsed.boxes) < cfg.min_answer_words:
        reasons.append(f"answer_too_short: {len(words(ans))} < {cfg.min_answer_words} words")
    cues = list(STEP_CUE_RE.finditer(think))
    if len(cues) < cfg.min_step_cues:
        reasons.append(f"insufficient_steps: {len(cues)} step cues < {cfg.min_step_cues}")
    if cfg.final_step_mentions_question:
        final = think[cues[-1].start(1):] if cues else think
        qwords = set().union(*[_stems(w) for w in words(question) if len(w) >= 2 and w.lower() not in _STOP])
        if qwords and not (qwords & set().union(set(), *[_stems(w) for w in words(final)])):
            reasons.append("final_step_no_question_ref: the last step mentions nothing the question asks about")
    if boxes is not None and len(boxes):
        if not len(parsed.boxes):
            reasons.append("inconsistent: the answer has no box")
        else:
            iou = box_iou(parsed.boxes[0], boxes[0])
            if iou < cfg.box_iou:
                reasons.append(f"inconsistent: answer box IoU {iou:.2f} < {cfg.box_iou}")
    elif answers:
        a = _norm(ans)
        refs = [_norm(r) for r in answers]
        sim = max(difflib.SequenceMatcher(None, a, r).ratio() for r in refs)
        contained = any(r and re.search(rf"\b{re.escape(r)}\b", a) for r in refs)
        if not contained and sim < cfg.answer_similarity:
            reasons.append(f"inconsistent: answer {ans[:60]!r} vs reference {answers[0][:60]!r} (similarity {sim:.2f})")
    return FilterResult(not reasons, reasons)


# ---------------------------------------------------------------------------------------------
# backends


class CotBackend(Protocol):
    def generate(self, sample: TaskSample, graph: SceneGraph) -> str: ...


def _xy(g: SceneGraph, i: int, positions: str = "coords") -> str:
    """Where object i is, as written in reasoning: `(x, y)` or its `<box>…</box>` (CotConfig.positions)."""
    n = g.nodes[i]
    if positions == "boxes":
        return format_box(np.concatenate([n.center, n.hi - n.lo]))
    c = n.center
    return f"({c[0]:.1f}, {c[1]:.1f})"


def _noun_used(label: str, text: str) -> str:
    """The synonym of `label` the text uses (longest match, plurals allowed), else the label."""
    t = text.lower()
    for s in sorted(NOUNS.get(label, (label,)), key=len, reverse=True):
        if re.search(rf"\b{re.escape(s)}(?:e?s)?\b", t):
            return s
    return label


def _describe_objects(g: SceneGraph, ids: list[int], limit: int = 6, positions: str = "coords") -> str:
    parts = []
    for i in ids[:limit]:
        n = g.nodes[i]
        parts.append(f"a {n.color + ' ' if n.color else ''}{n.label} at {_xy(g, i, positions)}")
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(parts) + more


def _question_nouns(g: SceneGraph, question: str) -> list[str]:
    """Class labels mentioned in the text, in order of first mention."""
    q = question.lower()
    hits = []
    for lab in set(NOUNS) | {n.label for n in g.nodes.values()}:
        pos = [m.start() for s in NOUNS.get(lab, (lab,)) for m in [re.search(rf"\b{re.escape(s)}(?:e?s)?\b", q)] if m]
        if pos:
            hits.append((min(pos), -len(lab), lab))
    return [lab for _, _, lab in sorted(hits)]


class TemplateBackend:
    """Deterministic reasoning from the scene graph; short, grounded, consistent.

    `positions="boxes"` names objects in the reasoning by their boxes, which a model that
    points at object proposals learns as `<ref>k</ref>` (training/sft.py); "coords" writes
    (x, y) centres for readers."""

    def __init__(self, positions: str = "boxes"):
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}; choose one of {list(POSITIONS)}")
        self.positions = positions

    def generate(self, s: TaskSample, g: SceneGraph) -> str:
        if s.task in ("grounding",):
            return self._grounding(s, g)
        if s.task in ("dialogue", "planning"):
            return self._dialogue(s, g)
        return self._qa(s, g)

    def _grounding(self, s: TaskSample, g: SceneGraph) -> str:
        t = s.object_ids[0]
        n = g.nodes.get(t)
        if n is None:
            raise ValueError(f"{s.scene_id}: grounding target {t} is not an object of the scene graph")
        noun = _noun_used(n.label, s.question)
        same = g.of_class(n.label)
        col = f"{n.color} " if n.color else ""
        steps = [f"First, the description asks for a {noun}."]
        steps.append(f"Next, I find the {plural(noun)} in the scene: there {'is' if len(same) == 1 else 'are'} "
                     f"{len(same)}: {_describe_objects(g, same, positions=self.positions)}.")
        try:
            q = parse_expression(s.question)
        except ValueError:
            q = None
        ev = []
        if len(same) == 1:
            ev.append(f"only one {noun} is present")
        if q is not None and q.color and q.label == n.label:
            k = sum(1 for i in same if g.nodes[i].color == q.color)
            ev.append(f"{'only one' if k == 1 else str(k)} of them {'is' if k == 1 else 'are'} {q.color}")
        if q is not None and q.relation and q.anchor is not None:
            anchors = g.resolve(q.anchor)
            if len(anchors) == 1:
                a = anchors[0]
                ev.append(f"the {g.nodes[a].color + ' ' if g.nodes[a].color else ''}{g.nodes[a].label} is at {_xy(g, a, self.positions)} "
                          f"and the {col}one at {_xy(g, t, self.positions)} is {q.relation}{' to' if q.relation in ('closest',) else ''}"
                          f"{' from' if q.relation == 'farthest' else ''} it")
        if q is not None and q.superlative:
            ev.append(f"the {col}one is the {q.superlative}")
        if not ev:
            rel = g.relations_of(t)
            if rel:
                r, b = rel[0]
                ev.append(f"the {col}one is {r} the {g.nodes[b].label}")
            else:
                ev.append(f"the {col}one matches the described details")
        steps.append("Then, " + "; ".join(ev) + ".")
        steps.append(f"Finally, the {col}{noun} at {_xy(g, t, self.positions)} is the {noun} the description refers to.")
        box = s.boxes[0] if len(s.boxes) else None
        if box is None:
            raise ValueError(f"{s.scene_id}: grounding sample without a target box")
        return format_response(" ".join(steps), f"the {col}{n.label} {format_box(box)}")

    def _qa(self, s: TaskSample, g: SceneGraph) -> str:
        if not s.answers:
            raise ValueError(f"{s.scene_id}: QA sample without a reference answer: {s.question!r}")
        ans = s.answers[0]
        q = s.question.lower()
        nouns = _question_nouns(g, s.question)
        ids = [i for i in s.object_ids if i in g.nodes]
        topic = nouns[0] if nouns else (g.nodes[ids[0]].label if ids else None)
        topic_word = _noun_used(topic, s.question) if topic else (words(s.question)[-1] if words(s.question) else "question")
        steps = [f"First, the question asks about the {topic_word}." if topic else f"First, I read the question: {s.question.strip()}"]
        if ids:
            steps.append(f"Next, the relevant objects are {_describe_objects(g, ids, positions=self.positions)}.")
        elif topic:
            present = g.of_class(topic)
            steps.append(f"Next, I look for a {topic_word} in the scene and find "
                         + (_describe_objects(g, present, positions=self.positions) if present else "none") + ".")
        else:
            steps.append("Next, I look at the objects around the described position.")
        if "how many" in q or "number of" in q:
            steps.append(f"Then, counting them gives {ans}.")
        elif "color" in q or "colour" in q:
            steps.append(f"Then, the color of that {topic_word} is {ans}.")
        elif q.startswith("is there") or q.startswith("are there"):
            steps.append(f"Then, {'it is present' if ans.lower().startswith('yes') else 'it is not present'}, so the answer is {ans}.")
        elif q.startswith("where"):
            steps.append(f"Then, comparing positions, the {topic_word} is {ans}.")
        else:
            steps.append(f"Then, checking positions and relations gives {ans}.")
        steps.append(f"Finally, for the {topic_word}, the answer is {ans}.")
        return format_response(" ".join(steps), ans)

    def _dialogue(self, s: TaskSample, g: SceneGraph) -> str:
        if not s.answers:
            raise ValueError(f"{s.scene_id}: {s.task} sample without a reference answer")
        ans = s.answers[0]
        ctx = " ".join(s.history + [s.question])
        nouns = _question_nouns(g, ans) or _question_nouns(g, ctx)
        qwords = [w for w in words(s.question) if len(w) >= 3 and w.lower() not in _STOP]
        key = qwords[-1].lower() if qwords else "request"
        ids = [i for lab in nouns for i in g.of_class(lab)]
        steps = [f"First, the user {'asks' if s.task == 'dialogue' else 'wants to'}: {s.question.strip().rstrip('?.')}."]
        steps.append(f"Next, the relevant objects are {_describe_objects(g, ids, positions=self.positions)}." if ids else "Next, I check the objects in the room.")
        steps.append("Then, I " + ("keep the earlier turns in mind and pick the matching object." if s.task == "dialogue"
                                   else "order the actions so each one uses an object that is there."))
        steps.append(f"Finally, I answer the {key} request with the steps and objects above.")
        return format_response(" ".join(steps), ans)


def _prompt(s: TaskSample, g: SceneGraph) -> str:
    objs = "\n".join(f"- {n.label} (id {i}){', ' + n.color if n.color else ''} at {_xy(g, i)}, size "
                     f"{'x'.join(f'{v:.1f}' for v in (n.hi - n.lo))} m" for i, n in sorted(g.nodes.items()))
    hist = "\n".join(s.history)
    ref = s.answers[0] if s.answers else ""
    if s.task == "grounding" and len(s.boxes):
        ref = format_box(s.boxes[0])
    return (f"You are an AI visual assistant in a 3D scene (scene {s.scene_id}). Objects (map frame, metres):\n{objs}\n\n"
            + (f"Conversation so far:\n{hist}\n\n" if hist else "")
            + f"Task: {s.task}\nQuestion: {s.question}\nReference answer: {ref}\n\n"
            "Explain step by step how the scene leads to the reference answer, in 3-8 short sentences that start "
            "with First, Next, Then and Finally, the last one naming what the question asks about. Output ONLY:\n"
            "<think>your reasoning</think><answer>the final short answer</answer>"
            + (" with the box written as <box>cx, cy, cz, dx, dy, dz</box>" if s.task == "grounding" else ""))


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint (urllib; no extra dependency)."""

    def __init__(self, cfg: CotConfig):
        self.cfg = cfg

    def generate(self, s: TaskSample, g: SceneGraph) -> str:
        body = json.dumps({"model": self.cfg.model, "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_new_tokens,
                           "messages": [{"role": "system", "content": "You write grounded step-by-step reasoning about 3D scenes."},
                                        {"role": "user", "content": _prompt(s, g)}]}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as r:
                data = json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"CoT endpoint {url} answered HTTP {e.code}: {e.read()[:300]!r}") from None
        except urllib.error.URLError as e:
            raise RuntimeError(f"CoT endpoint {url} unreachable: {e.reason}") from None
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(f"CoT endpoint {url}: no choices[0].message.content in {str(data)[:300]}") from None


class TransformersBackend:
    """A local causal LM (AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True))."""

    def __init__(self, cfg: CotConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = Path(cfg.model_path)
        if not p.is_dir():
            raise FileNotFoundError(f"CoT backend 'transformers': model directory {p} not found (CotConfig.model_path)")
        self.cfg = cfg
        self.tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True).eval()
        self.torch = torch

    def generate(self, s: TaskSample, g: SceneGraph) -> str:
        prompt = _prompt(s, g)
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        else:
            text = prompt + "\n"
        enc = self.tok(text, return_tensors="pt")
        gen = dict(max_new_tokens=self.cfg.max_new_tokens, do_sample=self.cfg.temperature > 0,
                   pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id)
        if self.cfg.temperature > 0:
            gen["temperature"] = self.cfg.temperature
        with self.torch.no_grad():
            out = self.model.generate(**enc, **gen)
        return self.tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def make_backend(cfg: CotConfig) -> CotBackend:
    if cfg.backend == "template":
        return TemplateBackend(cfg.positions)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg)
    if cfg.backend == "transformers":
        return TransformersBackend(cfg)
    raise ValueError(f"unknown CoT backend {cfg.backend!r}; choose one of {list(BACKENDS)}")


# ---------------------------------------------------------------------------------------------
# engine


@dataclass
class CotStats:
    kept: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    out_path: Path | None = None
    reject_path: Path | None = None


def load_scene_graph(layout: DatasetLayout, scene_id: str) -> SceneGraph:
    """The scene graph of one scene; synthetic ground-truth colours are used when the
    `synthetic/<scene>.json` file is there, otherwise colours come from the points."""
    scene = load_scannet_scene(layout.scannet_dir, scene_id)
    gt = layout.root / "synthetic" / f"{scene_id}.json"
    if gt.is_file():
        truth = {o["object_id"]: o for o in json.loads(gt.read_text())["objects"]}
        for o in scene.objects:  # the arrays keep NYU40 ids only: restore raw names and colours
            if o.object_id in truth:
                o.color, o.label = truth[o.object_id]["color"], truth[o.object_id]["label"]
    return SceneGraph(scene)


class CotEngine:
    def __init__(self, cfg: CotConfig, layout: DatasetLayout | str | Path, backend: CotBackend | None = None):
        self.cfg = cfg
        self.layout = layout if isinstance(layout, DatasetLayout) else DatasetLayout(Path(layout))
        self.backend = backend or make_backend(cfg)

    def samples(self, split: str) -> list[TaskSample]:
        # the split file's scenes (the prepared ones) when there is one: released annotation files cover all of ScanNet
        scenes = self.layout.scene_ids(split) if self.layout.split_file(split).is_file() else None
        out = load_task_samples(self.layout, split, sources=self.cfg.sources, scene_ids=scenes)
        rng = np.random.default_rng(self.cfg.seed)
        if self.cfg.max_per_scene > 0:
            by: dict[str, list[TaskSample]] = {}
            for s in out:
                by.setdefault(s.scene_id, []).append(s)
            out = [s for v in by.values() for s in
                   (v if len(v) <= self.cfg.max_per_scene else [v[i] for i in sorted(rng.choice(len(v), self.cfg.max_per_scene, replace=False))])]
        return out

    def process(self, s: TaskSample, g: SceneGraph) -> tuple[str, FilterResult]:
        text = self.backend.generate(s, g)
        boxes = s.boxes if s.task == "grounding" else None
        return text, check_cot(text, s.question, s.answers, boxes, self.cfg.filters)

    def run(self, split: str, out_path: str | Path | None = None, reject_path: str | Path | None = None,
            progress: bool = True) -> CotStats:
        from tqdm import tqdm

        out_path = Path(out_path) if out_path else self.layout.path("scene30k", split)
        reject_path = Path(reject_path) if reject_path else out_path.with_name(out_path.stem + "_rejected.jsonl")
        samples = self.samples(split)
        graphs: dict[str, SceneGraph] = {}
        kept: list[Scene30KRecord] = []
        stats = CotStats(out_path=out_path, reject_path=reject_path)
        reject_path.parent.mkdir(parents=True, exist_ok=True)
        with open(reject_path, "w", encoding="utf-8") as rej:
            for s in tqdm(samples, desc=f"cot {split} ({self.cfg.backend})", disable=not progress, unit="q"):
                if s.scene_id not in graphs:
                    graphs[s.scene_id] = load_scene_graph(self.layout, s.scene_id)
                question = "\n".join(s.history + [s.question]) if s.history else s.question
                text, res = self.process(s, graphs[s.scene_id])
                meta = {"task": s.task, "source": s.meta.get("source", ""), "object_ids": list(s.object_ids)}
                if res.ok:
                    kept.append(Scene30KRecord(s.scene_id, question, text, meta))
                    stats.kept += 1
                else:
                    stats.rejected += 1
                    stats.reasons.update(r.split(":")[0] for r in res.reasons)
                    rej.write(json.dumps({"scene_id": s.scene_id, "question": question, "output": text,
                                          "reject_reasons": res.reasons, **meta}) + "\n")
        write_scene30k(kept, out_path)
        return stats
