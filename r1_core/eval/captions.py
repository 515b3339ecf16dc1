"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) through pycocoevalcap 1.2.

    from r1_core.eval.captions import caption_metrics, CaptionScorer
    caption_metrics({"q1": "a brown chair"}, {"q1": ["the brown chair", "a wooden chair"]})
    # {'BLEU-1': ..., 'BLEU-4': ..., 'METEOR': ..., 'ROUGE-L': ..., 'CIDEr': ...}

    with CaptionScorer() as scorer:            # keeps one METEOR JVM for many calls
        scores = scorer.score(preds, refs, per_sample=True)
        scores.corpus["CIDEr"], scores.per_sample["CIDEr"]["q1"]

The numbers are pycocoevalcap's own scorers (`Bleu(4)` with the 'closest' reference length,
`Meteor` = METEOR 1.5 jar with `-l en -norm`, `Rouge` = ROUGE-L with beta 1.2, `Cider` =
CIDEr-D: tf-idf n-grams 1..4, clipping, Gaussian length penalty sigma 6, x10) on the COCO
caption protocol: every caption is first PTB-tokenised (Stanford CoreNLP 3.4.1
PTBTokenizer, lower-cased, the jar pycocoevalcap ships) and pycocoevalcap's punctuation
tokens are dropped. METEOR and the tokeniser run in Java (17 works); nothing touches the
network. SPICE is not offered: pycocoevalcap's SPICE downloads Stanford CoreNLP models on
first use, which cannot happen here.

Scores are fractions (BLEU/METEOR/ROUGE-L in [0, 1]; CIDEr in [0, 10]); tables multiply by
100. CIDEr's idf comes from the reference corpus passed in, so a CIDEr over one or two
samples is meaningless — score whole splits at once.

Why the tokeniser call is our own code (same jar, same flags, same punctuation list):
pycocoevalcap's `PTBTokenizer.tokenize` writes a temp file into its own package directory
(fails on a read-only install) and zips the tokeniser's output lines with the caption keys
without checking their number — a caption holding '\\r' or U+2028 (Java line breaks) shifts
every following caption onto the wrong key, silently. Ours replaces those characters with a
space before tokenising and refuses a line-count mismatch. On ordinary text the output is
identical (tests compare with pycocoevalcap's tokenizer on a fixed corpus).
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

# Every character Java's PTBLexer (and Python's str.splitlines) treats as a line break.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; choose from {list(CAPTION_METRICS)}")
    if not metrics:
        raise ValueError(f"metrics: expected at least one of {list(CAPTION_METRICS)}, got none")
    return metrics


def _java_error(what: str, err: BaseException) -> RuntimeError:
    return RuntimeError(
        f"{what} needs a Java runtime on PATH (`java`, 17 works): {err}. "
        "Install a JRE (e.g. apt-get install openjdk-17-jre-headless)."
    )


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """PTB-tokenise and lower-case every caption, dropping punctuation tokens, exactly as
    pycocoevalcap's PTBTokenizer does (same jar and flags); keys and order are kept.

    Blank captions come back as "" without a Java call; line-break characters inside a
    caption are replaced by a space first."""
    from pycocoevalcap.tokenizer import ptbtokenizer as ptb

    flat: list[tuple[Hashable, str]] = []
    for key, caps in captions.items():
        if isinstance(caps, str) or not isinstance(caps, Sequence):
            raise ValueError(f"captions[{key!r}]: expected a list of strings, got {type(caps).__name__}")
        for i, cap in enumerate(caps):
            if not isinstance(cap, str):
                raise ValueError(f"captions[{key!r}][{i}]: expected a string, got {type(cap).__name__}")
            flat.append((key, _LINE_BREAKS.sub(" ", cap)))
    out: dict[Hashable, list[str]] = {key: [] for key in captions}
    todo = [i for i, (_, cap) in enumerate(flat) if cap.strip()]
    lines: list[str] = []
    if todo:
        jar = os.path.join(os.path.dirname(os.path.abspath(ptb.__file__)), ptb.STANFORD_CORENLP_3_4_1_JAR)
        cmd = ["java", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8"]
        text = "\n".join(flat[i][1] for i in todo) + "\n"
        try:
            proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
        except OSError as e:
            raise _java_error("PTB tokenisation", e) from e
        if proc.returncode != 0:
            raise RuntimeError(
                f"PTBTokenizer ({jar}) exited with {proc.returncode}: "
                f"{proc.stderr.decode('utf-8', 'replace')[-2000:]}"
            )
        lines = proc.stdout.decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != len(todo):
            raise RuntimeError(
                f"PTBTokenizer returned {len(lines)} lines for {len(todo)} captions; "
                "refusing to guess which caption is which"
            )
    tokenised = [""] * len(flat)
    for i, line in zip(todo, lines):
        tokenised[i] = " ".join(w for w in line.rstrip().split(" ") if w not in ptb.PUNCTUATIONS)
    for (key, _), tok in zip(flat, tokenised):
        out[key].append(tok)
    return out


@dataclass
class CaptionScores:
    """Corpus scores per metric, and (when asked) per-sample scores per metric and key."""
    corpus: dict[str, float]
    per_sample: dict[str, dict[Hashable, float]] = field(default_factory=dict)


def _validate(predictions: Mapping, references: Mapping) -> None:
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise ValueError(
            "predictions and references: expected mappings key -> caption / key -> list of captions, "
            f"got {type(predictions).__name__} and {type(references).__name__}"
        )
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(
            f"predictions and references must have the same keys: {len(missing)} key(s) without a "
            f"prediction (e.g. {missing[:5]}), {len(extra)} prediction(s) without references "
            f"(e.g. {extra[:5]})"
        )
    if not references:
        raise ValueError("no samples to score: predictions and references are empty")
    for key, pred in predictions.items():
        if not isinstance(pred, str):
            raise ValueError(f"predictions[{key!r}]: expected one string, got {type(pred).__name__}: {pred!r}")
    for key, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise ValueError(f"references[{key!r}]: expected a non-empty list of strings, got {refs!r}")
        for i, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ValueError(f"references[{key!r}][{i}]: expected a string, got {type(ref).__name__}")


class CaptionScorer:
    """pycocoevalcap scorers behind one call; keeps the METEOR JVM (about 5 s to start, it
    loads the paraphrase table) alive between calls. Close it, or use `with`."""

    def __init__(self, metrics: Sequence[str] = CAPTION_METRICS):
        self.metrics = _check_metrics(metrics)
        self._meteor = None
        self._lock = threading.Lock()

    def __enter__(self) -> "CaptionScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR JVM if one was started."""
        with self._lock:
            m, self._meteor = self._meteor, None
        if m is not None:
            with m.lock:
                m.meteor_p.stdin.close()
                m.meteor_p.kill()
                m.meteor_p.wait()

    def _meteor_scorer(self):
        with self._lock:
            if self._meteor is None:
                from pycocoevalcap.meteor.meteor import Meteor

                try:
                    self._meteor = Meteor()
                except OSError as e:
                    raise _java_error("METEOR", e) from e
            return self._meteor

    def tokenize(self, captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
        """See `ptb_tokenize`."""
        return ptb_tokenize(captions)

    def score(
        self,
        predictions: Mapping[Hashable, str],
        references: Mapping[Hashable, Sequence[str]],
        *,
        tokenize: bool = True,
        per_sample: bool = False,
    ) -> CaptionScores:
        """Score one prediction per key against that key's references.

        tokenize=False skips PTB tokenisation (inputs must then be space-separated tokens,
        as pycocoevalcap's scorers expect)."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        _validate(predictions, references)
        keys = list(references)
        if tokenize:
            # One Java call for predictions and references together; tagged keys keep them apart.
            both = {("ref", k): list(references[k]) for k in keys}
            both.update({("pred", k): [predictions[k]] for k in keys})
            tok = ptb_tokenize(both)
            gts = {k: tok[("ref", k)] for k in keys}
            res = {k: tok[("pred", k)] for k in keys}
        else:
            gts = {k: list(references[k]) for k in keys}
            res = {k: [predictions[k]] for k in keys}

        corpus: dict[str, float] = {}
        samples: dict[str, list[float]] = {}
        wanted = set(self.metrics)
        if wanted & {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}:
            score, scores = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                corpus[f"BLEU-{n + 1}"] = float(score[n])
                samples[f"BLEU-{n + 1}"] = [float(s) for s in scores[n]]
        if "METEOR" in wanted:
            score, scores = self._meteor_scorer().compute_score(gts, res)
            corpus["METEOR"], samples["METEOR"] = float(score), [float(s) for s in scores]
        if "ROUGE-L" in wanted:
            score, scores = Rouge().compute_score(gts, res)
            corpus["ROUGE-L"], samples["ROUGE-L"] = float(score), [float(s) for s in scores]
        if "CIDEr" in wanted:
            score, scores = Cider().compute_score(gts, res)
            corpus["CIDEr"], samples["CIDEr"] = float(score), [float(s) for s in scores]

        out = CaptionScores(corpus={m: corpus[m] for m in self.metrics})
        if per_sample:
            out.per_sample = {m: dict(zip(keys, samples[m])) for m in self.metrics}
        return out


def caption_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = CAPTION_METRICS,
    scorer: CaptionScorer | None = None,
) -> dict[str, float]:
    """Corpus BLEU-1..4 / METEOR / ROUGE-L / CIDEr of one prediction per key against that
    key's references, PTB-tokenised. Pass a long-lived `scorer` to reuse its METEOR JVM."""
    metrics = _check_metrics(metrics)
    if scorer is not None:
        lacking = [m for m in metrics if m not in scorer.metrics]
        if lacking:
            raise ValueError(f"scorer computes {list(scorer.metrics)}, not the requested {lacking}")
        result = scorer.score(predictions, references)
        return {m: result.corpus[m] for m in metrics}
    with CaptionScorer(metrics) as own:
        return own.score(predictions, references).corpus
