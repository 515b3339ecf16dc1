"""The answer format of r1: `<think>…</think><answer>…</answer>`, and the box grammar.

    text = format_response("The red chair is next to the bed.", "It is " + format_box(box) + ".")
    parsed = parse_response(text)          # -> ParsedResponse(reasoning, answer, boxes)

Box grammar (one, documented, round-trips):

    <box>cx, cy, cz, dx, dy, dz</box>          axis-aligned (yaw = 0)
    <box>cx, cy, cz, dx, dy, dz, yaw</box>     yaw in radians about +z

Numbers are decimal metres in the scene (`map`) frame, centre then *full* extents
(docs/conventions.md), written with `BOX_DECIMALS` decimals. A model that points at one of the
encoder's object proposals instead of writing numbers emits `<ref>k</ref>` (k = proposal index);
`resolve_refs` swaps each for the proposal's `<box>…</box>` before parsing, so every consumer
sees boxes in one grammar.

The parser reports malformed output (raises AnswerFormatError naming what is wrong and where)
instead of guessing; `check_format` is the non-raising structural check the format reward uses.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

BOX_DECIMALS = 2
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<box>", "</box>"
REF_OPEN, REF_CLOSE = "<ref>", "</ref>"

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_RE = re.compile(re.escape(BOX_OPEN) + r"(.*?)" + re.escape(BOX_CLOSE), re.S)
_REF_RE = re.compile(re.escape(REF_OPEN) + r"\s*(\d+)\s*" + re.escape(REF_CLOSE))
_RESPONSE_RE = re.compile(
    r"^\s*" + re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE)
    + r"\s*" + re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE) + r"\s*$",
    re.S,
)


class AnswerFormatError(ValueError):
    """Model output that does not follow the answer format; the message says what and where."""


@dataclass
class ParsedResponse:
    reasoning: str
    answer: str                      # the answer text with box literals kept
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))  # (K, 7)

    @property
    def answer_plain(self) -> str:
        """The answer with box literals removed and whitespace tidied (for text metrics)."""
        return " ".join(_BOX_RE.sub(" ", self.answer).split())

    @property
    def answer_indexed(self) -> str:
        """The answer with its k-th box literal written `[k]`, k indexing `boxes`: a plan step
        keeps which box it acts on ("put it on [1]") instead of losing the object."""
        count = iter(range(len(self.boxes)))
        return " ".join(_BOX_RE.sub(lambda _: f"[{next(count)}]", self.answer).split())


def _fmt(x: float) -> str:
    s = f"{x:.{BOX_DECIMALS}f}"
    return "0." + "0" * BOX_DECIMALS if s in ("-0." + "0" * BOX_DECIMALS,) else s


def format_box(box: Sequence[float] | np.ndarray) -> str:
    """One box (6 or 7 numbers: cx,cy,cz,dx,dy,dz[,yaw]) as `<box>…</box>`; yaw omitted when it
    rounds to 0."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape[0] not in (6, 7):
        raise ValueError(f"format_box: expected 6 or 7 numbers (cx,cy,cz,dx,dy,dz[,yaw]), got {b.shape[0]}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"format_box: non-finite box {b.tolist()}")
    if np.any(b[3:6] < 0):
        raise ValueError(f"format_box: negative size {b[3:6].tolist()}")
    nums = [_fmt(v) for v in b[:6]]
    if b.shape[0] == 7:
        yaw = math.remainder(float(b[6]), 2 * math.pi)
        if _fmt(yaw) != _fmt(0.0):
            nums.append(_fmt(yaw))
    return BOX_OPEN + ", ".join(nums) + BOX_CLOSE


def parse_box(text: str) -> np.ndarray:
    """Parse the inside of one `<box>…</box>` (or the whole tag) into a (7,) float32 array."""
    inner = text.strip()
    m = _BOX_RE.fullmatch(inner)
    if m:
        inner = m.group(1).strip()
    parts = [p.strip() for p in inner.split(",")]
    if len(parts) not in (6, 7):
        raise AnswerFormatError(f"box {text!r}: expected 6 or 7 comma-separated numbers, got {len(parts)}")
    vals = []
    for i, p in enumerate(parts):
        if not re.fullmatch(_NUM, p):
            raise AnswerFormatError(f"box {text!r}: item {i} is not a number: {p!r}")
        vals.append(float(p))
    if not all(math.isfinite(v) for v in vals):
        raise AnswerFormatError(f"box {text!r}: non-finite number")
    if any(v < 0 for v in vals[3:6]):
        raise AnswerFormatError(f"box {text!r}: negative size")
    if len(vals) == 6:
        vals.append(0.0)
    return np.asarray(vals, dtype=np.float32)


def format_boxes(boxes: np.ndarray) -> str:
    return " ".join(format_box(b) for b in np.asarray(boxes).reshape(-1, np.asarray(boxes).shape[-1]))


def extract_boxes(text: str) -> np.ndarray:
    """All `<box>…</box>` in `text` as a (K, 7) array; a malformed box raises."""
    boxes = [parse_box(m.group(0)) for m in _BOX_RE.finditer(text)]
    if BOX_OPEN in _BOX_RE.sub("", text) or BOX_CLOSE in _BOX_RE.sub("", text):
        raise AnswerFormatError(f"unbalanced {BOX_OPEN}/{BOX_CLOSE} in {text!r}")
    return np.stack(boxes) if boxes else np.zeros((0, 7), np.float32)


def format_response(reasoning: str, answer: str) -> str:
    return f"{THINK_OPEN}{reasoning.strip()}{THINK_CLOSE}{ANSWER_OPEN}{answer.strip()}{ANSWER_CLOSE}"


def check_format(text: str) -> bool:
    """True when `text` is exactly one think block then one answer block, with no stray tags
    and every box well-formed. Special tokens (e.g. `<|im_end|>`) must be stripped first."""
    try:
        parse_response(text)
    except AnswerFormatError:
        return False
    return True


def parse_response(text: str) -> ParsedResponse:
    """Split a model response into reasoning, answer and boxes; raise on malformed output."""
    m = _RESPONSE_RE.match(text)
    if not m:
        missing = [t for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE) if t not in text]
        why = f"missing {missing}" if missing else "tags out of order or text outside the blocks"
        raise AnswerFormatError(f"response is not <think>…</think><answer>…</answer>: {why}: {text[:200]!r}")
    reasoning, answer = m.group(1), m.group(2)
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        if tag in reasoning or tag in answer:
            raise AnswerFormatError(f"nested or repeated {tag} in response: {text[:200]!r}")
    if not reasoning.strip():
        raise AnswerFormatError("empty <think> block")
    if not answer.strip():
        raise AnswerFormatError("empty <answer> block")
    if REF_OPEN in answer:
        raise AnswerFormatError("unresolved <ref> in answer: call resolve_refs with the proposals first")
    return ParsedResponse(reasoning.strip(), answer.strip(), extract_boxes(answer))


def resolve_refs(text: str, proposal_boxes: np.ndarray) -> str:
    """Replace each `<ref>k</ref>` by `format_box(proposal_boxes[k])`; an index out of range raises."""
    proposal_boxes = np.asarray(proposal_boxes)

    def sub(m: re.Match) -> str:
        k = int(m.group(1))
        if k >= len(proposal_boxes):
            raise AnswerFormatError(f"<ref>{k}</ref> points past the {len(proposal_boxes)} proposals")
        return format_box(proposal_boxes[k])

    return _REF_RE.sub(sub, text)
