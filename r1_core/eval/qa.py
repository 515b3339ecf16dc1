"""Question-answering metrics: exact match (EM), refined exact match (EM-R), SQA3D accuracy.

    from r1_core.eval.qa import exact_match, scanqa_metrics, sqa3d_metrics
    exact_match(["Brown."], [["brown", "dark brown"]])      # {'EM': 1.0, 'EM-R': 1.0}
    scanqa_metrics({"q1": "a chair"}, {"q1": ["chair"]})    # EM, EM-R + caption metrics
    scanqa_metrics(preds, refs, questions=questions)        # + EM per question type
    sqa3d_metrics(preds, refs, questions)                   # EM overall + per question type

Answer normalisation (`normalize_answer`), the rule the 3D-LLM line of work (LEO, and the
3D-R1 evaluation after it) applies to ScanQA and SQA3D answers, in this order:
  1. lower-case; strip leading/trailing spaces; collapse runs of spaces; ". " + spaces -> ". ";
  2. delete every character other than a-z, 0-9, comma, apostrophe ('), whitespace, hyphen,
     colon (so "?", ".", "!", quotes, and also non-ASCII letters such as "ç" and the curly
     apostrophe U+2019 are deleted — the reference code maps those two only after this
     deletion, where they no longer occur; we keep that effective behaviour so numbers stay
     comparable with published ones);
  3. fix the annotation typos the reference code fixes: letf/let -> left, tehre -> there,
     rigth/rght -> right, behine -> behind, chai -> chair, wasing -> washing,
     waslked -> walked, oclock / o' clock -> o'clock; "tv" -> "TV" (upper-case after
     lower-casing; harmless since both sides go through it);
  4. whole-word numbers to words: 0..20 -> zero..twenty, 23 -> twenty-three, "none" -> zero;
  5. drop one trailing digit glued to a word ("mat2" -> "mat");
  6. delete the articles "a", "an", "the" when a word follows ("the brown chair" -> "brown
     chair"; a final or lone "the" stays);
  7. "backwards" -> "backward".

EM: 1 when the normalised prediction equals one of the normalised references.
EM-R ("refined" EM, as LEO/3D-R1 report it): 1 when EM is 1, or when — with all whitespace
removed — the normalised prediction is a substring of a normalised reference or a reference
is a substring of the prediction ("brown" vs "dark brown" counts; "six" vs "sixteen" also
counts, which is the rule's known looseness). An empty (or whitespace-only) normalised prediction
scores 0 for both; a reference that normalises to "" never matches by containment (the reference code
would let it match anything).

ScanQA EM per question type (`scanqa_question_type`, with `questions` given to `scanqa_metrics`):
not part of ScanQA's protocol, a diagnostic. The types are what the question asks for, by the
first rule that matches: "how many" (how many / number of), "is there" (is / are there),
"how far", "what colour", "left/right from the door" (standing at / facing from the door),
"where", "what is on/under/above", else "other". Counts, existence and distances are the types
a model may answer from a prior rather than from the scene, so a shift in them shows up here first.

SQA3D accuracy is EM (and EM-R) over all questions plus per question type; the type is the
question's first word — what / is / how / can / which — anything else is "others" (the
SQA3D paper's breakdown).
"""
from __future__ import annotations

import re
from typing import Hashable, Mapping, Sequence

_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
    "13": "thirteen", "14": "fourteen", "15": "fifteen", "16": "sixteen", "17": "seventeen",
    "18": "eighteen", "19": "nineteen", "20": "twenty", "23": "twenty-three", "none": "zero",
}
_TYPOS = {
    "letf": "left", "let": "left", "tehre": "there", "rigth": "right", "rght": "right",
    "behine": "behind", "tv": "TV", "chai": "chair", "wasing": "washing", "waslked": "walked",
    "oclock": "o'clock",
}
_TYPO_RE = re.compile(r"\b(" + "|".join(sorted(_TYPOS, key=len, reverse=True)) + r")\b")
_NUMBER_RE = re.compile(r"\b(" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b")

SQA3D_QUESTION_TYPES = ("what", "is", "how", "can", "which", "others")
# (type, pattern on the lower-cased question); the first match wins
SCANQA_QUESTION_TYPES = (
    ("how many", r"\bhow many\b|\bnumber of\b"),
    ("is there", r"^\s*(is|are) there\b"),
    ("how far", r"\bhow far\b"),
    ("what colour", r"\bwhat colou?r\b"),
    ("left/right from the door", r"\bstanding at\b|\bfacing\b"),
    ("where", r"\bwhere\b"),
    ("what is on/under/above", r"\bwhat is (on|under|above)\b"),
)
SCANQA_TYPE_NAMES = tuple(t for t, _ in SCANQA_QUESTION_TYPES) + ("other",)   # "other": no rule matched


def normalize_answer(text: str) -> str:
    """The ScanQA/SQA3D answer normalisation described in the module docstring."""
    if not isinstance(text, str):
        raise ValueError(f"answer: expected a string, got {type(text).__name__}: {text!r}")
    s = text.lower().strip(" ")
    s = re.sub(r" {2,}", " ", s)
    s = re.sub(r"\. {2,}", ". ", s)
    s = re.sub(r"[^a-z0-9,'\s\-:]+", "", s)
    # The typo table maps each word independently (one pass is equivalent to the reference
    # code's sequence of substitutions: no replacement produces another table entry).
    s = _TYPO_RE.sub(lambda m: _TYPOS[m.group(1)], s)
    s = re.sub(r"\bo' +clock\b", "o'clock", s)
    s = _NUMBER_RE.sub(lambda m: _NUMBER_WORDS[m.group(1)], s)
    s = re.sub(r"\b([a-zA-Z]+)[0-9]\b", r"\1", s)
    for article in ("a", "an", "the"):  # sequential, as in the reference ("a the chair" -> "chair")
        s = re.sub(rf"\b{article}\b ([a-zA-Z]+)", r"\1", s)
    s = re.sub(r"\bbackwards\b", "backward", s)
    return s


def answer_match(prediction: str, references: Sequence[str], normalize: bool = True) -> tuple[int, int]:
    """(EM, EM-R) of one prediction against its references, each 0 or 1."""
    if isinstance(references, str) or not isinstance(references, Sequence) or not references:
        raise ValueError(f"references: expected a non-empty list of strings, got {references!r}")
    pred = normalize_answer(prediction) if normalize else prediction
    refs = [normalize_answer(r) if normalize else r for r in references]
    if not pred.strip():
        return 0, 0
    if pred in refs:
        return 1, 1
    p = "".join(pred.split())
    for ref in refs:
        r = "".join(ref.split())
        if r and (p in r or r in p):
            return 0, 1
    return 0, 0


def exact_match(
    predictions: Sequence[str], references: Sequence[Sequence[str]], normalize: bool = True
) -> dict[str, float]:
    """Mean EM and EM-R over aligned lists of predictions and reference lists."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must align: {len(predictions)} predictions, "
            f"{len(references)} reference lists"
        )
    if not predictions:
        raise ValueError("no samples to score: predictions are empty")
    em = emr = 0
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        try:
            a, b = answer_match(pred, refs, normalize)
        except ValueError as e:
            raise ValueError(f"sample {i}: {e}") from None
        em += a
        emr += b
    n = len(predictions)
    return {"EM": em / n, "EM-R": emr / n}


def _aligned(predictions: Mapping, references: Mapping) -> list:
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(
            f"predictions and references must have the same keys: {len(missing)} without a "
            f"prediction (e.g. {missing[:5]}), {len(extra)} without references (e.g. {extra[:5]})"
        )
    return list(references)


def scanqa_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    caption_metrics: Sequence[str] | None = None,
    scorer=None,
    questions: Mapping[Hashable, str] | None = None,
) -> dict[str, float]:
    """ScanQA: EM and EM-R (normalised answers) plus the caption metrics on the raw answers
    (PTB-tokenised, pycocoevalcap) — the columns 3D-LLM papers report for ScanQA.

    caption_metrics: which of r1_core.eval.captions.CAPTION_METRICS (default all; () for none);
    scorer: a CaptionScorer to reuse its METEOR JVM; questions: the question texts, which add
    "EM/<type>" and "count/<type>" per `scanqa_question_type` (types with questions only)."""
    from r1_core.eval.captions import CAPTION_METRICS
    from r1_core.eval.captions import caption_metrics as _caption_metrics

    keys = _aligned(predictions, references)
    out = exact_match([predictions[k] for k in keys], [references[k] for k in keys])
    if questions is not None:
        out.update(_by_question_type(predictions, references, questions, keys, scanqa_question_type,
                                     SCANQA_TYPE_NAMES, metrics=("EM",)))
    wanted = CAPTION_METRICS if caption_metrics is None else tuple(caption_metrics)
    if wanted:
        out.update(_caption_metrics(
            {k: predictions[k] for k in keys}, {k: list(references[k]) for k in keys},
            metrics=wanted, scorer=scorer,
        ))
    return out


def _by_question_type(predictions: Mapping, references: Mapping, questions: Mapping, keys: list,
                      type_of, types: Sequence[str], metrics: Sequence[str]) -> dict[str, float]:
    """`metrics` (of exact_match: EM, EM-R) as "<metric>/<type>" plus "count/<type>" for each of
    `types` that has questions, the type of a key being type_of(questions[key])."""
    missing = [k for k in keys if k not in questions]
    if missing:
        raise ValueError(f"questions: {len(missing)} key(s) without a question text (e.g. {missing[:5]})")
    by_type: dict[str, list] = {t: [] for t in types}
    for k in keys:
        by_type[type_of(questions[k])].append(k)
    out: dict[str, float] = {}
    for t, ks in by_type.items():
        if not ks:
            continue
        sub = exact_match([predictions[k] for k in ks], [references[k] for k in ks])
        out.update({f"{m}/{t}": sub[m] for m in metrics})
        out[f"count/{t}"] = float(len(ks))
    return out


def scanqa_question_type(question: str) -> str:
    """The question's type for the per-type ScanQA breakdown (module docstring), or "other"."""
    if not isinstance(question, str):
        raise ValueError(f"question: expected a string, got {type(question).__name__}")
    q = question.lower()
    return next((name for name, pattern in SCANQA_QUESTION_TYPES if re.search(pattern, q)), "other")


def sqa3d_question_type(question: str) -> str:
    """what / is / how / can / which by the question's first word, else "others"."""
    if not isinstance(question, str):
        raise ValueError(f"question: expected a string, got {type(question).__name__}")
    words = re.findall(r"[a-z]+", question.lower())
    first = words[0] if words else ""
    return first if first in SQA3D_QUESTION_TYPES[:-1] else "others"


def sqa3d_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    questions: Mapping[Hashable, str],
) -> dict[str, float]:
    """SQA3D accuracy: EM / EM-R overall and "EM/<type>" per question type (types with no
    questions are left out), plus "count/<type>"."""
    keys = _aligned(predictions, references)
    by_type = _by_question_type(predictions, references, questions, keys, sqa3d_question_type,
                                SQA3D_QUESTION_TYPES, metrics=("EM", "EM-R"))
    out = exact_match([predictions[k] for k in keys], [references[k] for k in keys])
    out.update(by_type)
    return out
