"""GRPO rewards (training/rewards.py) on crafted completions, against independent references:
format vs a string-level checker on random fragment soups, perception vs closed-form IoU and
brute-force matching, semantic vs a hand-pooled MiniLM (real weights) and a tiny random CLIP.

    .venv/bin/python -m pytest tests/test_rewards.py -q
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from r1_core.config import ConfigError, load_config
from r1_core.model.answer import ParsedResponse, format_box, format_response
from training.rewards import (REWARDS, CombinedReward, PerceptionReward, RewardConfig, SemanticReward,
                              clear_encoder_cache, format_reward, format_violation, get_reward,
                              load_text_encoder, matched_iou, minilm_dir, perception_reward, reward_stats)

CUBE = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0])


def resp(answer: str, think: str = "The chair is next to the bed.") -> str:
    return format_response(think, answer)


# ---- format -----------------------------------------------------------------------------------
WELL_FORMED = [
    "<think>a</think><answer>b</answer>",
    "<think>step one. step two.</think>\n<answer>the chair <box>1.00, 2.00, 0.50, 0.60, 0.60, 1.00</box></answer>",
    "  <think>\nmulti\nline\n</think>  <answer> yes </answer>\n",
    "<think>a</think><answer>b</answer><|im_end|>",                 # the closing EOS is allowed
    "<think>a</think><answer>b</answer>\n<|im_end|>\n",
    "<think>a</think><answer>b <box>1, 2, 3, 1, 1, 1, 0.5</box> and <box>0,0,0,1,1,1</box></answer>",
]
MALFORMED = {
    "missing <think>": "a</think><answer>b</answer>",
    "missing </think>": "<think>a<answer>b</answer>",
    "missing <answer>": "<think>a</think>b</answer>",
    "missing </answer>": "<think>a</think><answer>b",
    "no tags": "the chair is next to the bed",
    "answer only": "<answer>b</answer>",
    "wrong order": "<answer>b</answer><think>a</think>",
    "nested": "<think>a <think>b</think> c</think><answer>d</answer>",
    "nested answer in think": "<think>a <answer>x</answer></think><answer>d</answer>",
    "repeated answer": "<think>a</think><answer>b</answer><answer>c</answer>",
    "trailing garbage": "<think>a</think><answer>b</answer> and more",
    "leading garbage": "Sure! <think>a</think><answer>b</answer>",
    "text between blocks": "<think>a</think> so <answer>b</answer>",
    "empty think": "<think> </think><answer>b</answer>",
    "empty answer": "<think>a</think><answer></answer>",
    "stray <|im_start|> inside": "<think>a <|im_start|> b</think><answer>c</answer>",
    "leading <|im_start|>": "<|im_start|><think>a</think><answer>b</answer>",
    "other special at end": "<think>a</think><answer>b</answer><|endoftext|>",
    "two EOS": "<think>a</think><answer>b</answer><|im_end|><|im_end|>",
    "EOS inside": "<think>a<|im_end|></think><answer>b</answer>",
    "text after EOS": "<think>a</think><answer>b</answer><|im_end|>more",
    "malformed box": "<think>a</think><answer><box>1, 2, 3</box></answer>",
    "non-numeric box": "<think>a</think><answer><box>1, 2, 3, a, 1, 1</box></answer>",
    "unclosed box": "<think>a</think><answer><box>1, 2, 3, 1, 1, 1</answer>",
    "unresolved ref": "<think>a</think><answer><ref>3</ref></answer>",
}


def test_format_reward_well_formed_and_malformed():
    assert format_reward(None, WELL_FORMED) == [1.0] * len(WELL_FORMED)
    assert format_reward(None, list(MALFORMED.values())) == [0.0] * len(MALFORMED)
    for name, text in MALFORMED.items():
        assert format_violation(text) is not None, name
    assert "special token '<|im_start|>'" in format_violation(MALFORMED["stray <|im_start|> inside"])
    assert "special token '<|im_end|>'" in format_violation(MALFORMED["two EOS"])
    # The EOS set is configurable, and extra special tokens can be declared.
    cfg = RewardConfig(eos_tokens=("</s>",), extra_special_tokens=("</s>", "<s>"))
    fmt = get_reward("format", cfg)
    assert fmt(None, ["<think>a</think><answer>b</answer></s>", "<think>a</think><answer>b</answer><|im_end|>",
                      "<think><s>a</think><answer>b</answer>"]) == [1.0, 0.0, 0.0]


def test_format_reward_takes_trl_conversational_completions():
    conv = [[{"role": "assistant", "content": WELL_FORMED[0]}], [{"role": "assistant", "content": "nope"}],
            [{"role": "assistant", "content": [{"type": "text", "text": WELL_FORMED[1]}]}]]
    assert format_reward(None, conv) == [1.0, 0.0, 1.0]
    with pytest.raises(TypeError, match=r"completions\[0\]: expected a string or a list of chat messages"):
        format_reward(None, [42])


FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", "a", "b c", " ", "\n", "x.",
             "<|im_end|>", "<|im_start|>", "<|endoftext|>"]
TEMPLATE = ["<think>", "a", "</think>", "<answer>", "b c", "</answer>"]


def reference_format(text: str) -> float:
    """The rule restated with plain string operations (no regex), for fragment soups."""
    t = text.rstrip()
    if t.endswith("<|im_end|>"):
        t = t[: -len("<|im_end|>")]
    if any(s in t for s in ("<|im_end|>", "<|im_start|>", "<|endoftext|>")):
        return 0.0
    s = t.strip()
    tags = ["<think>", "</think>", "<answer>", "</answer>"]
    if any(s.count(tag) != 1 for tag in tags):
        return 0.0
    i0, i1, i2, i3 = (s.index(tag) for tag in tags)
    if not (i0 == 0 and i1 < i2 < i3 and s.endswith("</answer>")):
        return 0.0
    if s[i1 + len("</think>"):i2].strip():
        return 0.0
    if not s[len("<think>"):i1].strip() or not s[i2 + len("<answer>"):i3].strip():
        return 0.0
    return 1.0


def test_format_reward_matches_reference_on_random_fragment_soups():
    rng = np.random.default_rng(0)
    texts = []
    for k in range(3000):
        if k % 2:       # mutate the well-formed template: a few insertions / deletions / swaps
            frags = list(TEMPLATE)
            for _ in range(rng.integers(0, 3)):
                op = rng.integers(0, 3)
                if op == 0:
                    frags.insert(int(rng.integers(0, len(frags) + 1)), FRAGMENTS[rng.integers(len(FRAGMENTS))])
                elif op == 1 and frags:
                    frags.pop(int(rng.integers(0, len(frags))))
                elif len(frags) > 1:
                    i, j = rng.choice(len(frags), 2, replace=False)
                    frags[i], frags[j] = frags[j], frags[i]
        else:
            frags = [FRAGMENTS[i] for i in rng.integers(0, len(FRAGMENTS), rng.integers(0, 10))]
        texts.append("".join(frags))
    got = format_reward(None, texts)
    want = [reference_format(t) for t in texts]
    bad = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert not bad, bad[:5]
    assert 300 < sum(want) < 2700        # both outcomes well represented


# ---- perception -------------------------------------------------------------------------------
def test_perception_perfect_half_overlapping_rotated():
    gt = [CUBE[None]]
    perfect = resp("the chair " + format_box(CUBE))
    half = resp("the chair " + format_box(CUBE + [0.5, 0, 0, 0, 0, 0, 0]))      # offset 0.5 m along x
    assert perception_reward(None, [perfect], gt_boxes=gt) == [1.0]
    # Two unit cubes offset by 0.5 along x: intersection 0.5, union 1.5 -> 1/3.
    assert perception_reward(None, [half], gt_boxes=gt)[0] == pytest.approx(1 / 3, abs=1e-9)
    # Offset by 0.5 in x, y and z: intersection 0.125, union 1.875 -> 1/15.
    corner = resp(format_box(CUBE + [0.5, 0.5, 0.5, 0, 0, 0, 0]))
    assert perception_reward(None, [corner], gt_boxes=gt)[0] == pytest.approx(1 / 15, abs=1e-9)
    # A unit cube and the same cube turned 45 degrees about z: the footprints meet in a regular
    # octagon of area 2*sqrt(2) - 2; IoU = (2 sqrt2 - 2) / (4 - 2 sqrt2) = 1/sqrt(2).
    turned = CUBE + [0, 0, 0, 0, 0, 0, math.pi / 4]
    assert matched_iou(turned[None], CUBE[None]) == pytest.approx(1 / math.sqrt(2), abs=1e-9)
    # Disjoint and touching boxes score 0.
    far = resp(format_box(CUBE + [3, 0, 0, 0, 0, 0, 0]))
    touching = resp(format_box(CUBE + [1, 0, 0, 0, 0, 0, 0]))
    assert perception_reward(None, [far, touching], gt_boxes=gt * 2) == [0.0, 0.0]


def test_perception_malformed_missing_and_not_applicable():
    gt = [CUBE[None]]
    cases = [
        resp("the chair"),                                            # no box
        resp("the chair <box>0.5, 0, 0.5</box>"),                     # malformed box
        resp("the chair <ref>2</ref>"),                               # unresolved proposal ref
        "the chair " + format_box(CUBE),                              # box outside any answer block
        "<think>a</think>" + format_box(CUBE),                        # no answer block
    ]
    assert perception_reward(None, cases, gt_boxes=gt * len(cases)) == [0.0] * len(cases)
    # A stray special token breaks the format but not the answer: perception still scores the box.
    stray = resp("the chair " + format_box(CUBE), think="a <|im_start|> b")
    assert perception_reward(None, [stray + "<|im_end|>"], gt_boxes=gt) == [1.0]
    # No ground truth -> None (no perception reward), whatever the answer.
    perfect = resp(format_box(CUBE))
    empty = [None, [], np.zeros((0, 7))]
    assert perception_reward(None, [perfect] * 3, gt_boxes=empty) == [None, None, None]
    # Tasks outside perception_tasks -> None even with boxes (captions/QA carry context boxes).
    out = perception_reward(None, [perfect] * 3, gt_boxes=gt * 3, tasks=["grounding", "object_caption", "qa"])
    assert out == [1.0, None, None]
    wide = PerceptionReward(RewardConfig(perception_tasks=("grounding", "reasoning")))
    assert wide(None, [perfect] * 2, gt_boxes=gt * 2, tasks=["reasoning", "qa"]) == [1.0, None]


def test_perception_matching_rules():
    a, b = CUBE, CUBE + [3, 0, 0, 0, 0, 0, 0]
    half_b = b + [0.5, 0, 0, 0, 0, 0, 0]
    two = [np.stack([a, b])]
    # One-to-one matching, best pairing: (a, a) = 1 and (b, half_b) = 1/3, over max(P, K) = 2.
    out = perception_reward(None, [resp(format_box(half_b) + " " + format_box(a))], gt_boxes=two)
    assert out[0] == pytest.approx((1 + 1 / 3) / 2, abs=1e-9)
    # A missing box counts as 0: one perfect box for two targets -> 1/2.
    assert perception_reward(None, [resp(format_box(a))], gt_boxes=two)[0] == pytest.approx(0.5)
    # Extra boxes are penalised: perfect + a wrong extra for one target -> 1/2; a duplicate -> 1/2.
    one = [a[None]]
    assert perception_reward(None, [resp(format_box(a) + format_box(b))], gt_boxes=one)[0] == pytest.approx(0.5)
    assert perception_reward(None, [resp(format_box(a) + format_box(a))], gt_boxes=one)[0] == pytest.approx(0.5)
    # Order of the boxes does not matter.
    out = perception_reward(None, [resp(format_box(a) + format_box(half_b))], gt_boxes=two)
    assert out[0] == pytest.approx((1 + 1 / 3) / 2, abs=1e-9)


def _aabb_iou(p: np.ndarray, g: np.ndarray) -> float:
    """Closed-form IoU of two axis-aligned boxes (the reference for yaw = 0)."""
    lo = np.maximum(p[:3] - p[3:6] / 2, g[:3] - g[3:6] / 2)
    hi = np.minimum(p[:3] + p[3:6] / 2, g[:3] + g[3:6] / 2)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(p[3:6]) + np.prod(g[3:6])) - inter
    return inter / union if union > 0 else 0.0


def _brute_force_matched(pred: np.ndarray, gt: np.ndarray) -> float:
    P, K = len(pred), len(gt)
    if P == 0:
        return 0.0
    iou = np.array([[_aabb_iou(p, g) for g in gt] for p in pred])
    if P >= K:
        best = max(sum(iou[perm[k], k] for k in range(K)) for perm in itertools.permutations(range(P), K))
    else:
        best = max(sum(iou[p, perm[p]] for p in range(P)) for perm in itertools.permutations(range(K), P))
    return best / max(P, K)


def _random_boxes(rng, n: int) -> np.ndarray:
    c = rng.uniform(0, 2, (n, 3))
    s = rng.uniform(0.2, 1.5, (n, 3))
    return np.round(np.concatenate([c, s, np.zeros((n, 1))], 1), 2)    # 2 decimals: exact as box text


def _parsed_pair(completion: str, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from r1_core.model.answer import parse_response
    return parse_response(completion).boxes, gt


def test_perception_matches_brute_force_on_random_boxes():
    rng = np.random.default_rng(1)
    completions, gts, want = [], [], []
    for _ in range(150):
        P, K = int(rng.integers(0, 5)), int(rng.integers(1, 5))
        pred, gt = _random_boxes(rng, P), _random_boxes(rng, K)
        completions.append(resp("objects " + " ".join(format_box(b) for b in pred)))
        gts.append(gt)
        want.append(_brute_force_matched(pred, gt))
    got = perception_reward(None, completions, gt_boxes=gts)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)   # the parser returns float32 boxes
    np.testing.assert_allclose([matched_iou(*_parsed_pair(c, g)) for c, g in zip(completions[:40], gts)],
                               want[:40], rtol=0, atol=1e-6)
    assert sum(0 < w < 1 for w in want) > 50       # partial overlaps dominate, not trivial 0/1 cases


def test_perception_input_errors():
    perfect = resp(format_box(CUBE))
    with pytest.raises(ValueError, match="gt_boxes: required keyword"):
        perception_reward(None, [perfect])
    with pytest.raises(ValueError, match=r"gt_boxes: expected 2 entries \(one per completion\), got 1"):
        perception_reward(None, [perfect, perfect], gt_boxes=[CUBE[None]])
    with pytest.raises(ValueError, match=r"gt_boxes\[1\]: expected \(K, 7\) boxes .* got shape \(1, 6\)"):
        perception_reward(None, [perfect, perfect], gt_boxes=[CUBE[None], CUBE[None, :6]])
    with pytest.raises(ValueError, match=r"gt_boxes\[0\]: boxes must be finite with extents >= 0"):
        perception_reward(None, [perfect], gt_boxes=[[[0, 0, 0, -1, 1, 1, 0]]])
    with pytest.raises(ValueError, match=r"tasks\[0\]: unknown task 'grouding'; choose one of"):
        perception_reward(None, [perfect], gt_boxes=[CUBE[None]], tasks=["grouding"])


# ---- semantic: the real all-MiniLM-L6-v2 --------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_reference():
    """all-MiniLM-L6-v2 pooled by hand (transformers + mean pooling + L2), independent of
    sentence-transformers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    model = AutoModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for t in texts:          # one at a time: no padding in the reference
            enc = tok([t], return_tensors="pt", truncation=True, max_length=256)
            with torch.no_grad():
                h = model(**enc).last_hidden_state[0]
            out.append(torch.nn.functional.normalize(h.mean(0), dim=0))
        return torch.stack(out)
    return embed


def test_semantic_synonyms_beat_unrelated_answers():
    sem = get_reward("semantic")
    out = sem(None, [resp("couch"), resp("refrigerator"), resp("a wooden chair"), resp("a ceiling lamp")],
              references=[["sofa"], ["sofa"], ["the chair made of wood"], ["the chair made of wood"]])
    assert out[0] > out[1] + 0.3          # measured: 0.86 vs 0.27
    assert out[2] > out[3] + 0.3
    assert all(0.0 <= v <= 1.0 for v in out)


def test_semantic_equals_hand_pooled_minilm(minilm_reference):
    answers = ["couch", "the brown table next to the window", "two", "it is on the left of the bed"]
    refs = [["sofa", "a couch"], ["table by the window"], ["2", "two"], ["left of the bed", "near the door"]]
    got = get_reward("semantic")(None, [resp(a) for a in answers], references=refs)
    for a, rs, g in zip(answers, refs, got):
        e = minilm_reference([a] + rs)
        want = max(0.0, min(1.0, float((e[1:] @ e[0]).max())))
        assert g == pytest.approx(want, abs=1e-5), (a, rs)
    assert got[2] == pytest.approx(1.0, abs=1e-5)          # "two" is one of the references


def test_semantic_rules():
    sem = get_reward("semantic")
    box = format_box(CUBE)
    out = sem(None, [resp(f"the sofa {box}"), resp("the sofa"), resp("the sofa"), "not formatted",
                     resp(box), resp("the sofa"), resp("the sofa")],
              references=[["sofa"], ["sofa"], [f"sofa {box}"], ["sofa"], ["sofa"], [], ["  ", box]])
    assert out[0] == pytest.approx(out[1], abs=1e-6)         # box literals removed from the answer
    assert out[2] == pytest.approx(out[1], abs=1e-6)         # ... and from the references
    assert out[3] == 0.0                                     # unparsable answer
    assert out[4] == 0.0                                     # nothing but a box: no text to compare
    assert out[5] is None and out[6] is None                 # no (non-blank) reference: not applicable
    with pytest.raises(ValueError, match=r"references\[0\]: expected a list of reference strings, got 'sofa'"):
        sem(None, [resp("x")], references=["sofa"])
    with pytest.raises(ValueError, match="references: required keyword"):
        sem(None, [resp("x")])


def test_semantic_task_scope():
    """semantic_tasks: samples of other tasks get None (default: every task is scored)."""
    comps = [resp("the sofa")] * 2
    refs = [["sofa"], ["sofa"]]
    every = get_reward("semantic")(None, comps, references=refs, tasks=["grounding", "qa"])
    assert every[0] == every[1] and every[0] > 0.9
    scoped = SemanticReward(RewardConfig(semantic_tasks=("grounding",)))
    assert scoped(None, comps, references=refs, tasks=["grounding", "qa"]) == [every[0], None]


def test_encoder_loaded_once_and_batched(monkeypatch):
    enc = load_text_encoder("minilm")
    assert load_text_encoder("minilm") is enc and load_text_encoder("minilm", minilm_dir()) is enc
    calls = []
    real = enc.encode
    monkeypatch.setattr(enc, "encode", lambda texts: calls.append(list(texts)) or real(texts))
    get_reward("semantic")(None, [resp("couch")] * 5 + [resp("lamp")], references=[["sofa"]] * 6)
    assert calls == [sorted({"couch", "lamp", "sofa"})]       # one batched call, unique strings


# ---- semantic: a CLIP text encoder from a local path ---------------------------------------------
def _clip_dir(path, with_eos: bool = True):
    """A tiny random CLIP text model + byte-level tokenizer saved like a hub checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>", "<pad>"])
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    if with_eos:
        tok.post_processor = processors.TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>")
    torch.manual_seed(5)
    cfg = CLIPTextConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, projection_dim=16,
                         bos_token_id=bos, eos_token_id=eos, pad_token_id=fast.pad_token_id)
    CLIPTextModelWithProjection(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_semantic_with_a_local_clip_text_encoder(tmp_path):
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    d = _clip_dir(tmp_path / "clip")
    cfg = RewardConfig(encoder="clip", encoder_path=str(d), encoder_batch_size=3)
    answers = ["couch", "a long answer about the table by the window", "x", "the lamp", "red", "two chairs"]
    refs = [["sofa"], ["table", "window table"], ["y", "zz"], ["lamp"], ["blue chair"], ["2 chairs"]]
    got = SemanticReward(cfg)(None, [resp(a) for a in answers], references=refs)
    # Reference: the same model, one text at a time (no padding, no batching).
    tok = AutoTokenizer.from_pretrained(str(d))
    model = CLIPTextModelWithProjection.from_pretrained(str(d)).eval()

    def emb(t: str) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(model(**tok([t], return_tensors="pt")).text_embeds[0], dim=0)
    raw = [max(float(emb(r) @ emb(a)) for r in rs) for a, rs in zip(answers, refs)]
    np.testing.assert_allclose(got, [min(1.0, max(0.0, v)) for v in raw], rtol=0, atol=1e-5)
    assert min(raw) < 0 and 0.0 in got          # the random encoder gives negative cosines: clipped to 0
    assert load_text_encoder("clip", d) is load_text_encoder("clip", str(d))


def test_clip_encoder_errors(tmp_path):
    with pytest.raises(ValueError, match="encoder 'clip' needs encoder_path"):
        RewardConfig(encoder="clip")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_text_encoder("clip", tmp_path / "nowhere")
    d = _clip_dir(tmp_path / "clip_no_eos", with_eos=False)
    sem = SemanticReward(RewardConfig(encoder="clip", encoder_path=str(d)))
    with pytest.raises(ValueError, match="did not end every text with the model's eos_token_id"):
        sem(None, [resp("couch")], references=[["sofa"]])
    with pytest.raises(ValueError, match=r"unknown encoder 'bert'; choose one of \['minilm', 'clip'\]"):
        load_text_encoder("bert")
    clear_encoder_cache()


# ---- registry, config, combination -------------------------------------------------------------
def test_registry_and_config():
    assert list(REWARDS) == ["format", "perception", "semantic", "evidence", "exact_match"]
    for name in REWARDS:
        assert get_reward(name).__name__ == name            # TRL names reward functions by __name__
    with pytest.raises(ValueError, match=r"unknown reward 'iou'; choose one of \['format', 'perception', 'semantic', 'evidence', 'exact_match'\]"):
        get_reward("iou")
    cfg = load_config(RewardConfig, "config/rewards.yaml")
    assert cfg == RewardConfig()                              # the YAML states the defaults
    with pytest.raises(ConfigError, match=r"weights: unknown reward\(s\) \['iou'\]"):
        load_config(RewardConfig, {"weights": {"format": 1.0, "iou": 1.0}})
    with pytest.raises(ConfigError, match=r"weights.format: expected a finite number >= 0, got -1"):
        load_config(RewardConfig, {"weights": {"format": -1}})
    with pytest.raises(ConfigError, match="at least one reward needs a weight > 0"):
        load_config(RewardConfig, {"weights": {"format": 0.0}})
    with pytest.raises(ConfigError, match=r"perception_tasks: unknown task\(s\) \['detection'\]"):
        load_config(RewardConfig, {"perception_tasks": ["detection"]})
    with pytest.raises(ConfigError, match=r"evidence_tasks: unknown task\(s\) \['trivia'\]"):
        load_config(RewardConfig, {"evidence_tasks": ["trivia"]})
    with pytest.raises(ConfigError, match=r"exact_match_tasks: unknown task\(s\) \['trivia'\]"):
        load_config(RewardConfig, {"exact_match_tasks": ["trivia"]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['weight'\]"):
        load_config(RewardConfig, {"weight": {"format": 1.0}})


def _think(boxes, answer: str = "2") -> str:
    """A QA completion whose reasoning names `boxes` (the answer names none)."""
    listed = ", ".join(f"a chair at {format_box(b)}" for b in boxes)
    return format_response(f"First, the question asks about the chair. Next, the relevant objects are {listed}.", answer)


def test_evidence_is_the_matched_iou_of_the_reasonings_boxes():
    """evidence = matched IoU (the perception rule) of the boxes named in <think> against the
    reference reasoning's boxes, checked against brute-force matching on random boxes; the
    answer's boxes do not count."""
    ev = get_reward("evidence")
    rng = np.random.default_rng(3)
    comps, refs, want = [], [], []
    for _ in range(80):
        P, K = int(rng.integers(0, 4)), int(rng.integers(1, 4))
        pred, ref = _random_boxes(rng, P), _random_boxes(rng, K)
        comps.append(_think(pred, answer="the chair " + format_box(ref[0])))   # a right box in the answer
        refs.append(ref)
        want.append(_brute_force_matched(pred, ref))
    got = ev(None, comps, evidence_boxes=refs, tasks=["qa"] * len(comps))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert sum(0 < w < 1 for w in want) > 25
    # Naming the two reference chairs: 1; one of them: 1/2; one and a duplicate of it: 1/2.
    a, b = CUBE, CUBE + [3, 0, 0, 0, 0, 0, 0]
    two = np.stack([a, b])
    assert ev(None, [_think([a, b]), _think([a]), _think([a, a])], evidence_boxes=[two] * 3) == [1.0, 0.5, 0.5]


def test_evidence_rules():
    ev = get_reward("evidence")
    a = CUBE
    none = np.zeros((0, 7))
    nothing_named = format_response("I look for a dresser and find none.", "no")
    cases = [
        (nothing_named, none, "qa", 1.0),                       # the reference names nothing, nor does it
        (_think([a], "yes"), none, "qa", 0.0),                  # ... but it names a box
        (nothing_named, a[None], "qa", 0.0),                    # it names nothing where the reference names one
        ("the relevant objects are " + format_box(a), a[None], "qa", 0.0),        # no think/answer blocks
        (format_response("a chair at <box>1, 2</box>", "1"), a[None], "qa", 0.0),   # malformed box in the reasoning
        (format_response("a chair at <ref>3</ref>", "1"), a[None], "qa", 0.0),      # unresolved proposal ref
        (_think([a]), a[None], "grounding", None),              # outside evidence_tasks
        (_think([a]), None, "qa", None),                        # no reference reasoning
    ]
    comps, refs, tasks, want = map(list, zip(*cases))
    assert ev(None, comps, evidence_boxes=refs, tasks=tasks) == want
    assert ev(None, [_think([a])], evidence_boxes=[[a.tolist()]]) == [1.0]             # no tasks: applies
    wide = get_reward("evidence", RewardConfig(evidence_tasks=("qa", "grounding")))
    assert wide(None, [_think([a])], evidence_boxes=[a[None]], tasks=["grounding"]) == [1.0]
    with pytest.raises(ValueError, match="evidence_boxes: required keyword"):
        ev(None, comps[:1])
    with pytest.raises(ValueError, match=r"evidence_boxes\[0\]: expected \(K, 7\) boxes .* got shape \(1, 6\)"):
        ev(None, comps[:1], evidence_boxes=[a[None, :6]], tasks=["qa"])
    # In the combination: a QA sample scored by format and evidence alone (semantic scoped away).
    reward = CombinedReward(RewardConfig(weights={"format": 1.0, "semantic": 1.0, "evidence": 1.0},
                                         semantic_tasks=("grounding",)))
    total, per = reward(None, [_think([a], "2")], references=[["3"]], evidence_boxes=[np.stack([a, a + 3])],
                        tasks=["qa"])
    assert per == {"format": [1.0], "semantic": [None], "evidence": [0.5]} and total == [0.75]


def test_exact_match_is_scanqas_em_on_qa_answers():
    """exact_match scores the answer as r1 eval's ScanQA EM does (normalised: case, articles,
    punctuation); malformed answers score 0; other tasks and samples without references get None;
    it agrees with answer_match on every sample."""
    from r1_core.eval.qa import answer_match

    em = get_reward("exact_match")
    answers = ["The brown chair.", "a chair", "brown", "brown chair <box>1,2,3,1,1,1</box>", "brown chair", "x"]
    comps = [f"<think>t</think><answer>{a}</answer>" for a in answers] + ["brown chair"]   # last: no tags
    refs = [["brown chair"]] * 6 + [["brown chair"]]
    tasks = ["qa"] * 5 + ["grounding", "qa"]
    out = em(None, comps, references=refs, tasks=tasks)
    assert out == [1.0, 0.0, 0.0, 1.0, 1.0, None, 0.0]
    for a, r, o in zip(answers[:5], refs, out):
        assert o == answer_match(ParsedResponse("", a).answer_plain, r)[0]
    assert em(None, comps[:1], references=[[" "]], tasks=["qa"]) == [None]        # no usable reference
    assert em(None, comps[:1], references=[["brown chair"]]) == [1.0]              # no tasks: applies
    with pytest.raises(ValueError, match=r"references\[0\]: expected a list of reference strings"):
        em(None, comps[:1], references=["brown chair"], tasks=["qa"])
    with pytest.raises(ValueError, match="tasks\\[0\\]: unknown task 'trivia'"):
        em(None, comps[:1], references=refs[:1], tasks=["trivia"])
    total, per = CombinedReward(RewardConfig(weights={"format": 1.0, "exact_match": 1.0}))(
        None, comps, references=refs, tasks=tasks)
    assert per["exact_match"] == out and total[:3] == [1.0, 0.5, 0.5] and total[5] == 1.0 and total[6] == 0.0


def test_combined_reward_is_the_weighted_mean_of_applicable_rewards():
    reward = CombinedReward(RewardConfig(weights={"format": 1.0, "perception": 3.0, "semantic": 0.0}))
    assert list(reward.rewards) == ["format", "perception"]    # weight 0: not computed at all
    gt = CUBE[None]
    completions = [resp(format_box(CUBE)),                                   # format 1, IoU 1
                   resp(format_box(CUBE + [0.5, 0, 0, 0, 0, 0, 0])),         # format 1, IoU 1/3
                   resp("yes"),                                              # qa: no perception
                   "<answer>" + format_box(CUBE) + "</answer>"]              # format 0, IoU 0
    total, per = reward(["q"] * 4, completions, gt_boxes=[gt, gt, gt, gt],
                        tasks=["grounding", "grounding", "qa", "grounding"])
    assert per["format"] == [1.0, 1.0, 1.0, 0.0]
    assert per["perception"][2] is None
    # (1*1 + 3*1)/4, (1*1 + 3/3)/4, 1*1/1 (perception skipped, not counted as 0), 0/4
    np.testing.assert_allclose(total, [1.0, 0.5, 1.0, 0.0], atol=1e-9)
    stats = reward_stats(total, per)
    assert stats["reward_perception_count"] == 3 and stats["reward_perception"] == pytest.approx((1 + 1 / 3) / 3)
    assert stats["reward"] == pytest.approx(0.625)
    # No weighted reward applies -> a clear error, not a silent 0.
    only_iou = CombinedReward(RewardConfig(weights={"perception": 1.0}))
    with pytest.raises(ValueError, match=r"completion 0 \(task 'qa'\): none of the weighted rewards"):
        only_iou(["q"], [resp("yes")], gt_boxes=[None], tasks=["qa"])
    with pytest.raises(ValueError, match=r"prompts: expected 2 entries"):
        reward(["q"], completions[:2], gt_boxes=[gt, gt])


def test_combined_reward_with_all_three():
    reward = CombinedReward()
    gt = CUBE[None]
    completions = [resp("the sofa " + format_box(CUBE)), resp("a fridge"), "the sofa"]
    total, per = reward(["q"] * 3, completions, gt_boxes=[gt, None, gt], references=[["sofa"], ["sofa"], ["sofa"]],
                        tasks=["grounding", "qa", "grounding"])
    assert per["format"] == [1.0, 1.0, 0.0] and per["perception"] == [1.0, None, 0.0]
    assert per["semantic"][2] == 0.0 and per["semantic"][0] > per["semantic"][1] > 0
    assert total[0] == pytest.approx((2.0 + per["semantic"][0]) / 3)
    assert total[1] == pytest.approx((1.0 + per["semantic"][1]) / 2)
    assert total[2] == 0.0
