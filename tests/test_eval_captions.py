"""Caption metrics: equality with pycocoevalcap on a fixed corpus, brute-force references for
BLEU / ROUGE-L / CIDEr-D, hand-checkable cases, tokeniser robustness, errors."""
import math
from collections import Counter

import numpy as np
import pytest

from r1_core.eval.captions import CAPTION_METRICS, CaptionScorer, caption_metrics, ptb_tokenize

# A fixed corpus in the style of ScanRefer / ScanQA / Scan2Cap text: punctuation, case,
# apostrophes, parentheses, numbers, several references per key, a perfect and an empty answer.
PREDS = {
    "s0": "This is a brown wooden chair. It is next to the desk.",
    "s1": "The white table is in the middle of the room!",
    "s2": "a black office chair",
    "s3": "There are 2 pillows on the bed, (both grey).",
    "s4": "The trash can is to the left of the door.",
    "s5": "it's a tall bookshelf",
    "s6": "",
    "s7": "The lamp sits on the nightstand next to the bed.",
    "s8": "the sink is below the mirror in the bathroom",
    "s9": "Kitchen counter, near the fridge; it is long.",
    "s10": "a brown chair next to the desk",
    "s11": "The monitor is on the desk.",
}
REFS = {
    "s0": ["This is a brown chair. It is next to the desk.", "A wooden chair beside the desk."],
    "s1": ["The table is white and it is in the center of the room.", "a white table in the middle of the room"],
    "s2": ["This is a black chair with wheels.", "black office chair near the window", "the chair is black"],
    "s3": ["Two grey pillows lie on the bed.", "there are two pillows on the bed"],
    "s4": ["The trash can is left of the door.", "a small trash can beside the door"],
    "s5": ["It is a tall wooden bookshelf.", "tall bookshelf against the wall"],
    "s6": ["a blue sofa in the corner"],
    "s7": ["The lamp sits on the nightstand next to the bed."],
    "s8": ["The sink is under the mirror.", "a white sink in the bathroom"],
    "s9": ["a long kitchen counter next to the refrigerator", "The counter is long."],
    "s10": ["This is a brown chair. It is next to the desk.", "A wooden chair beside the desk."],
    "s11": ["the monitor sits on the desk", "A black monitor on the desk."],
}


@pytest.fixture(scope="module")
def scorer():
    with CaptionScorer() as s:
        yield s


def _pycoco_direct():
    """The COCO caption protocol called directly through pycocoevalcap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": PREDS[k]}] for k in REFS})
    out, per = {}, {}
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"BLEU-{n + 1}"], per[f"BLEU-{n + 1}"] = b[n], bs[n]
    m = Meteor()
    out["METEOR"], per["METEOR"] = m.compute_score(gts, res)
    out["ROUGE-L"], per["ROUGE-L"] = Rouge().compute_score(gts, res)
    out["CIDEr"], per["CIDEr"] = Cider().compute_score(gts, res)
    return gts, res, out, per


def test_equal_to_pycocoevalcap_on_fixed_corpus(scorer):
    gts, res, ref, ref_per = _pycoco_direct()
    # the tokeniser first: same tokens as pycocoevalcap's PTBTokenizer
    tok = ptb_tokenize({**{("r", k): v for k, v in REFS.items()}, **{("p", k): [PREDS[k]] for k in REFS}})
    assert {k: tok[("r", k)] for k in REFS} == gts
    assert {k: tok[("p", k)] for k in REFS} == res
    got = scorer.score(PREDS, REFS, per_sample=True)
    assert set(got.corpus) == set(CAPTION_METRICS)
    for m in CAPTION_METRICS:
        assert got.corpus[m] == pytest.approx(float(ref[m]), abs=1e-6), m
        per = [got.per_sample[m][k] for k in REFS]
        np.testing.assert_allclose(per, np.asarray(ref_per[m], dtype=float), atol=1e-6, err_msg=m)
    # the one-shot function gives the same numbers
    one = caption_metrics(PREDS, REFS, scorer=scorer)
    assert one == got.corpus
    # the corpus is not trivial: scores are strictly between the extremes
    assert 0.1 < got.corpus["BLEU-4"] < 0.9 and 0.5 < got.corpus["CIDEr"] < 9


# ---- brute-force references on the tokenised corpus -------------------------------------

def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu_reference(res, gts, n_max=4):
    testlen = reflen = 0
    correct, guess = [0] * n_max, [0] * n_max
    for k in gts:
        hyp = res[k][0].split()
        refs = [r.split() for r in gts[k]]
        testlen += len(hyp)
        reflen += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]   # closest, ties -> shorter
        for n in range(1, n_max + 1):
            h = _ngrams(hyp, n)
            maxref = Counter()
            for r in refs:
                for g, c in _ngrams(r, n).items():
                    maxref[g] = max(maxref[g], c)
            correct[n - 1] += sum(min(c, maxref[g]) for g, c in h.items())
            guess[n - 1] += max(0, len(hyp) - n + 1)
    bp = math.exp(1 - reflen / testlen) if testlen < reflen else 1.0
    return [bp * math.prod(correct[i] / guess[i] for i in range(n)) ** (1 / n) for n in range(1, n_max + 1)]


def _lcs(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            dp[i + 1][j + 1] = dp[i][j] + 1 if a[i] == b[j] else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


def _rouge_reference(res, gts, beta=1.2):
    scores = []
    for k in gts:
        c = res[k][0].split(" ")
        p = max(_lcs(r.split(" "), c) / len(c) for r in gts[k])
        r_ = max(_lcs(r.split(" "), c) / len(r.split(" ")) for r in gts[k])
        scores.append(0.0 if p == 0 or r_ == 0 else (1 + beta**2) * p * r_ / (r_ + beta**2 * p))
    return float(np.mean(scores)), scores


def _cider_d_reference(res, gts, sigma=6.0):
    """CIDEr-D as defined by Vedantam et al. and coco-caption: tf-idf over n = 1..4 with idf
    from the reference corpus, clipped cosine, Gaussian penalty on the bigram-count
    difference, mean over n and references, x10."""
    keys = list(gts)
    df = Counter()
    for k in keys:
        df.update({g for r in gts[k] for n in range(1, 5) for g in _ngrams(r.split(), n)})
    log_n = math.log(len(keys))

    def vec(tokens):
        v = [{} for _ in range(4)]
        for n in range(1, 5):
            for g, tf in _ngrams(tokens, n).items():
                v[n - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
        return v, sum(_ngrams(tokens, 2).values())

    scores = []
    for k in keys:
        vh, lh = vec(res[k][0].split())
        total = 0.0
        for r in gts[k]:
            vr, lr = vec(r.split())
            for n in range(4):
                num = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                nh = math.sqrt(sum(w * w for w in vh[n].values()))
                nr = math.sqrt(sum(w * w for w in vr[n].values()))
                val = num / (nh * nr) if nh and nr else num
                total += val * math.exp(-((lh - lr) ** 2) / (2 * sigma**2)) / 4
        scores.append(10.0 * total / len(gts[k]))
    return float(np.mean(scores)), scores


def test_bleu_rouge_cider_match_brute_force_references(scorer):
    tok = ptb_tokenize({**{("r", k): v for k, v in REFS.items()}, **{("p", k): [PREDS[k]] for k in REFS}})
    gts = {k: tok[("r", k)] for k in REFS}
    res = {k: tok[("p", k)] for k in REFS}
    got = scorer.score(PREDS, REFS, per_sample=True)
    for n, v in enumerate(_bleu_reference(res, gts), start=1):
        assert got.corpus[f"BLEU-{n}"] == pytest.approx(v, rel=1e-6, abs=1e-9)
    r, rs = _rouge_reference(res, gts)
    assert got.corpus["ROUGE-L"] == pytest.approx(r, abs=1e-9)
    np.testing.assert_allclose([got.per_sample["ROUGE-L"][k] for k in REFS], rs, atol=1e-9)
    c, cs = _cider_d_reference(res, gts)
    assert got.corpus["CIDEr"] == pytest.approx(c, abs=1e-9)
    np.testing.assert_allclose([got.per_sample["CIDEr"][k] for k in REFS], cs, atol=1e-9)


def test_random_corpora_match_brute_force():
    """Random token sentences (no Java needed with tokenize=False): BLEU/ROUGE/CIDEr agree
    with the references on 5 random corpora."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(12)]
    sc = CaptionScorer(("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"))
    for _ in range(5):
        gts, res = {}, {}
        for k in range(15):
            gts[k] = [" ".join(rng.choice(vocab, rng.integers(5, 12))) for _ in range(rng.integers(1, 4))]
            base = gts[k][0].split()
            hyp = [w if rng.random() < 0.7 else str(rng.choice(vocab)) for w in base][: rng.integers(4, len(base) + 1)]
            res[k] = [" ".join(hyp)]
        got = sc.score({k: v[0] for k, v in res.items()}, gts, tokenize=False, per_sample=True)
        for n, v in enumerate(_bleu_reference(res, gts), start=1):
            assert got.corpus[f"BLEU-{n}"] == pytest.approx(v, rel=1e-6, abs=1e-9)
        assert got.corpus["ROUGE-L"] == pytest.approx(_rouge_reference(res, gts)[0], abs=1e-9)
        assert got.corpus["CIDEr"] == pytest.approx(_cider_d_reference(res, gts)[0], abs=1e-9)
    sc.close()


# ---- hand-checkable cases -----------------------------------------------------------------

def test_identical_sentences_score_one(scorer):
    preds = {"a": "The brown chair is next to the desk.", "b": "A tall white bookshelf against the wall."}
    refs = {k: [v] for k, v in preds.items()}
    got = scorer.score(preds, refs).corpus
    for m in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "METEOR"):
        assert got[m] == pytest.approx(1.0, abs=1e-6), m


def test_cider_behaviour_on_a_corpus():
    sc = CaptionScorer(("CIDEr",))
    # Every hypothesis equals all its references and shares no n-gram with other keys: 10.
    preds = {"a": "red sofa by window", "b": "small green plant pot", "c": "wooden door frame open"}
    refs = {k: [v, v] for k, v in preds.items()}
    assert sc.score(preds, refs, tokenize=False).corpus["CIDEr"] == pytest.approx(10.0)
    # N-grams that occur in every key's references carry no information (idf 0): a
    # hypothesis made only of them scores 0 even though it matches its references.
    refs2 = {"a": ["the chair x1"], "b": ["the chair x2"], "c": ["the chair x3"]}
    preds2 = {"a": "the chair", "b": "the chair x2", "c": "x3"}
    s = sc.score(preds2, refs2, tokenize=False, per_sample=True).per_sample["CIDEr"]
    assert s["a"] == 0.0 and s["b"] > 0 and s["c"] > 0
    # A wrong-length hypothesis is penalised: the Gaussian length penalty
    long = sc.score({"a": "red sofa by window red sofa by window", "b": preds["b"], "c": preds["c"]},
                    refs, tokenize=False, per_sample=True).per_sample["CIDEr"]["a"]
    assert 0 < long < 10
    sc.close()


def test_empty_prediction_scores_zero(scorer):
    got = scorer.score({"a": "", "b": "a red chair"}, {"a": ["a blue sofa"], "b": ["a red chair"]},
                       per_sample=True)
    for m in CAPTION_METRICS:
        assert got.per_sample[m]["a"] == pytest.approx(0.0, abs=1e-6), m


# ---- tokeniser --------------------------------------------------------------------------

def test_tokenizer_keeps_alignment_with_java_line_breaks():
    caps = {"a": ["x\ry z"], "b": ["left\u2028right", ""], "c": ["The Chair's (red)."], "d": ["   "]}
    tok = ptb_tokenize(caps)
    assert tok == {"a": ["x y z"], "b": ["left right", ""], "c": ["the chair 's -lrb- red -rrb-"], "d": [""]}


# ---- errors ----------------------------------------------------------------------------

def test_bad_inputs_are_named():
    sc = CaptionScorer(("BLEU-4",))
    with pytest.raises(ValueError, match="same keys"):
        sc.score({"a": "x"}, {"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match=r"references\['a'\]"):
        sc.score({"a": "x"}, {"a": []})
    with pytest.raises(ValueError, match=r"predictions\['a'\]: expected one string"):
        sc.score({"a": ["x"]}, {"a": ["x"]})
    with pytest.raises(ValueError, match="no samples"):
        sc.score({}, {})
    with pytest.raises(ValueError, match="unknown caption metric"):
        CaptionScorer(("BLEU-5",))
    with pytest.raises(ValueError, match="not the requested"):
        caption_metrics({"a": "x"}, {"a": ["x"]}, metrics=("CIDEr",), scorer=sc)
