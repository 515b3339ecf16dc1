"""QA metrics: the answer normalisation against a literal step-by-step reference on random
strings, hand-checked cases, EM / EM-R rules, ScanQA and SQA3D aggregation, errors."""
import re

import numpy as np
import pytest

from r1_core.eval.qa import (
    answer_match,
    exact_match,
    normalize_answer,
    scanqa_metrics,
    scanqa_question_type,
    sqa3d_metrics,
    sqa3d_question_type,
)


def _reference_normalize(s: str) -> str:
    """The rule of the module docstring, one substitution after another."""
    s = s.lower()
    s = re.sub(r" +$", "", s)
    s = re.sub(r"^ +", "", s)
    s = re.sub(r" {2,}", " ", s)
    s = re.sub(r"\. {2,}", ". ", s)
    s = re.sub(r"[^a-zA-Z0-9,'\s\-:]+", "", s)
    for a, b in [("letf", "left"), ("let", "left"), ("tehre", "there"), ("rigth", "right"),
                 ("rght", "right"), ("behine", "behind"), ("tv", "TV"), ("chai", "chair"),
                 ("wasing", "washing"), ("waslked", "walked"), ("oclock", "o'clock")]:
        s = re.sub(rf"\b{a}\b", b, s)
    s = re.sub(r"\bo' +clock\b", "o'clock", s)
    numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
               "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
               "eighteen", "nineteen", "twenty"]
    s = re.sub(r"\b0\b", "zero", s)
    s = re.sub(r"\bnone\b", "zero", s)
    for i in range(1, 21):
        s = re.sub(rf"\b{i}\b", numbers[i], s)
    s = re.sub(r"\b23\b", "twenty-three", s)
    s = re.sub(r"\b([a-zA-Z]+)([0-9])\b", r"\1", s)
    s = re.sub(r"\ba\b ([a-zA-Z]+)", r"\1", s)
    s = re.sub(r"\ban\b ([a-zA-Z]+)", r"\1", s)
    s = re.sub(r"\bthe\b ([a-zA-Z]+)", r"\1", s)
    s = re.sub(r"\bbackwards\b", "backward", s)
    return s


def test_normalisation_matches_step_by_step_reference_on_random_strings():
    rng = np.random.default_rng(0)
    pieces = ["a", "an", "the", "The", "A", "let", "letf", "tehre", "rigth", "rght", "behine", "tv",
              "TV", "chai", "chair", "wasing", "waslked", "oclock", "o'", "clock", "none", "None",
              "0", "1", "2", "7", "10", "12", "20", "21", "23", "100", "mat2", "no1", "ab12",
              "backwards", "left", "brown", "it's", "café", "’", "ç", ".", ",", "?", "!", ":", "-",
              "(", ")", "\"", "  ", " ", "\t", "..", "x-ray"]
    for _ in range(3000):
        parts = rng.choice(pieces, rng.integers(0, 9))
        seps = rng.choice([" ", "", "  ", ". "], len(parts))
        s = "".join(p + q for p, q in zip(parts, seps))
        assert normalize_answer(s) == _reference_normalize(s), repr(s)


@pytest.mark.parametrize("raw, norm", [
    ("The Brown Chair.", "brown chair"),
    ("2 chairs", "two chairs"),
    ("None", "zero"),
    ("23", "twenty-three"),
    ("21", "21"),
    ("mat2", "mat"),
    ("it's on the left", "it's on left"),
    ("Tehre is a TV", "there is TV"),
    ("5 o' clock", "five o'clock"),
    ("walk backwards", "walk backward"),
    ("Façade", "faade"),
    ("the", "the"),
    ("  a   brown  sofa  ", "brown sofa"),
    ("Yes!", "yes"),
])
def test_normalisation_hand_cases(raw, norm):
    assert normalize_answer(raw) == norm


def test_answer_match_em_and_refined():
    assert answer_match("Brown.", ["brown", "dark brown"]) == (1, 1)
    assert answer_match("brown", ["dark brown"]) == (0, 1)          # prediction inside reference
    assert answer_match("the dark brown chair", ["dark brown"]) == (0, 1)  # reference inside prediction
    assert answer_match("dark  brown", ["darkbrown"]) == (0, 1)     # whitespace ignored for containment
    assert answer_match("white", ["brown", "black"]) == (0, 0)
    assert answer_match("2", ["two"]) == (1, 1)
    assert answer_match("", ["brown"]) == (0, 0)
    assert answer_match("?!", ["brown"]) == (0, 0)                  # normalises to empty
    assert answer_match("brown", ["?"]) == (0, 0)                   # empty reference never contains
    assert answer_match("Brown", ["brown"], normalize=False) == (0, 0)


def test_exact_match_means_and_em_r_dominates():
    rng = np.random.default_rng(1)
    words = ["brown", "dark brown", "chair", "the chair", "two", "2", "left", "on the left", "table"]
    preds = [str(rng.choice(words)) for _ in range(200)]
    refs = [[str(w) for w in rng.choice(words, rng.integers(1, 4))] for _ in range(200)]
    got = exact_match(preds, refs)
    loop = np.array([answer_match(p, r) for p, r in zip(preds, refs)])
    assert got["EM"] == pytest.approx(loop[:, 0].mean()) and got["EM-R"] == pytest.approx(loop[:, 1].mean())
    assert got["EM-R"] >= got["EM"] and 0 < got["EM"] < 1


def test_scanqa_metrics_em_and_caption_columns():
    preds = {"q1": "Brown.", "q2": "next to the desk", "q3": "white", "q4": "two"}
    refs = {"q1": ["brown"], "q2": ["it is next to the desk"], "q3": ["black"], "q4": ["2", "two chairs"]}
    m = scanqa_metrics(preds, refs, caption_metrics=("BLEU-1", "ROUGE-L", "CIDEr"))
    assert m["EM"] == pytest.approx(2 / 4) and m["EM-R"] == pytest.approx(3 / 4)
    assert set(m) == {"EM", "EM-R", "BLEU-1", "ROUGE-L", "CIDEr"}
    assert 0 < m["ROUGE-L"] < 1
    assert set(scanqa_metrics(preds, refs, caption_metrics=())) == {"EM", "EM-R"}


def test_scanqa_question_types_and_em_per_type():
    t = scanqa_question_type
    assert t("How many chairs are in the room?") == "how many"
    assert t("What is the number of tables in this room?") == "how many"
    assert t("Is there a mirror in the room?") == "is there" and t("  are there two lamps?") == "is there"
    assert t("What is there on the table?") == "other"              # "is there" only at the start
    assert t("How far is the cabinet from the door?") == "how far"
    assert t("What colour is the sofa?") == "what colour" and t("what color is it") == "what colour"
    assert t("Standing at the door and facing into the room, where is the lamp?") == "left/right from the door"
    assert t("Where is the sink?") == "where"
    assert t("What is under the desk?") == "what is on/under/above"
    assert t("What kind of chair is it?") == "other"
    with pytest.raises(ValueError, match="expected a string"):
        t(None)
    qs = {"a": "How many chairs?", "b": "how many lamps?", "c": "Where is the bed?", "d": "Is there a TV?"}
    preds = {"a": "2", "b": "1", "c": "on the left", "d": "no"}
    refs = {"a": ["two"], "b": ["3"], "c": ["next to the wall"], "d": ["no"]}
    m = scanqa_metrics(preds, refs, caption_metrics=(), questions=qs)
    assert m["EM"] == pytest.approx(0.5)
    assert m["EM/how many"] == pytest.approx(0.5) and m["count/how many"] == 2
    assert m["EM/where"] == 0.0 and m["EM/is there"] == 1.0
    assert not any(k.startswith(("EM/how far", "EM/other")) for k in m)   # types without questions
    with pytest.raises(ValueError, match="1 key.*without a question"):
        scanqa_metrics(preds, refs, caption_metrics=(), questions={k: qs[k] for k in "abc"})


def test_sqa3d_question_types_and_accuracy():
    assert sqa3d_question_type("What is in front of me?") == "what"
    assert sqa3d_question_type("  Is the door open?") == "is"
    assert sqa3d_question_type("Isn't it dark?") == "others"      # first word, not a prefix
    assert sqa3d_question_type("How many chairs?") == "how"
    assert sqa3d_question_type("Which way should I go?") == "which"
    assert sqa3d_question_type("Can I sit down?") == "can"
    assert sqa3d_question_type("Where is the sink?") == "others"
    qs = {"a": "What color is the sofa?", "b": "What is on my left?", "c": "Is the tv on?", "d": "Where is it?"}
    preds = {"a": "blue", "b": "table", "c": "no", "d": "left"}
    refs = {"a": ["blue"], "b": ["chair"], "c": ["no"], "d": ["behind"]}
    m = sqa3d_metrics(preds, refs, qs)
    assert m["EM"] == pytest.approx(0.5)
    assert m["EM/what"] == pytest.approx(0.5) and m["EM/is"] == 1.0 and m["EM/others"] == 0.0
    assert m["count/what"] == 2 and "EM/how" not in m


def test_qa_errors_name_the_problem():
    with pytest.raises(ValueError, match="must align"):
        exact_match(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="sample 1"):
        exact_match(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="same keys"):
        scanqa_metrics({"a": "x"}, {"b": ["x"]}, caption_metrics=())
    with pytest.raises(ValueError, match="without a question"):
        sqa3d_metrics({"a": "x"}, {"a": ["x"]}, {})
    with pytest.raises(ValueError, match="expected a string"):
        normalize_answer(3)
