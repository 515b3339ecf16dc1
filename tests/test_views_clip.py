"""CLIP / SigLIP image-text relevance from a local directory (tiny random models saved to tmp)."""
import numpy as np
import pytest
import torch

from r1_core.query import SceneQuery
from r1_core.views.bank import BankConfig, KeyframeBank
from r1_core.views.relevance import ClipRelevance, Targets
from r1_core.views.select import DynamicSelector, SelectorConfig
from test_views_helpers import intrinsics, look_at, render, room

K = intrinsics()


def _tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(path)
    return len(fast)


def _save_model(kind, path):
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    n = _tokenizer(path)
    text = dict(vocab_size=n, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    if kind == "clip":
        cfg = CLIPConfig(text_config=dict(text, eos_token_id=2), vision_config=vision, projection_dim=16)
        CLIPModel(cfg).save_pretrained(path)
    else:
        cfg = SiglipConfig(text_config=text, vision_config=vision)
        SiglipModel(cfg).save_pretrained(path)
    return path


def _bank(n=5):
    w = room()
    w.add([1, 1, 0], [1.5, 1.5, 0.9], (190, 35, 35), 1, 5)
    w.add([2.5, 3.5, 0], [4.5, 5, 0.6], (235, 235, 232), 2, 4)
    bank = KeyframeBank(BankConfig(min_new_fraction=0.0))
    e = np.array([3.0, 2.5, 1.4])
    for i, a in enumerate(np.radians(np.linspace(0, 360, n, endpoint=False))):
        T = look_at(e, e + [np.cos(a), np.sin(a), -0.3])
        c, d, _ = render(w, K, T)
        assert bank.offer(c, d, K, T, float(i))
    return bank


NO_TARGETS = Targets(np.zeros((0, 7)), np.zeros(0), np.zeros(0, np.int64), [], [])


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_clip_relevance_matches_the_model(kind, tmp_path):
    path = _save_model(kind, tmp_path / kind)
    enc = ClipRelevance(path)
    bank = _bank()
    snap = bank.snapshot()
    q = SceneQuery("grounding", "the red chair")
    rel = enc.relevance(q, NO_TARGETS, snap)
    assert rel.shape == (len(snap),) and rel.min() == 0.0 and rel.max() == 1.0
    # the same ranking as the model's own image-text logits
    pix = enc._pixels([k.color for k in snap.keyframes])
    pad = "max_length" if kind == "siglip" else True
    tok = enc.tokenizer([q.text], padding=pad, truncation=True, max_length=enc.max_len, return_tensors="pt")
    with torch.no_grad():
        logits = enc.model(input_ids=tok["input_ids"], pixel_values=pix).logits_per_image[:, 0].numpy()
    assert np.array_equal(np.argsort(rel, kind="stable"), np.argsort(logits, kind="stable"))
    # logits = scale * cosine (+ bias for SigLIP): affine, so min-max normalised they are equal
    expect = (logits - logits.min()) / (logits.max() - logits.min())
    assert np.allclose(rel, expect, atol=1e-4)


def test_image_embeddings_cached_per_keyframe(tmp_path, monkeypatch):
    enc = ClipRelevance(_save_model("clip", tmp_path / "clip"))
    bank = _bank(4)
    calls = []
    orig = enc.model.get_image_features

    def counting(**kw):
        calls.append(kw["pixel_values"].shape[0])
        return orig(**kw)

    monkeypatch.setattr(enc.model, "get_image_features", counting)
    q = SceneQuery("qa", "where is the bed?")
    enc.relevance(q, NO_TARGETS, bank.snapshot())
    enc.relevance(q, NO_TARGETS, bank.snapshot())
    assert calls == [4]                                  # second request: all cached
    w = room()
    c, d, _ = render(w, K, look_at([1, 1, 1.4], [5, 4, 0.5]))
    assert bank.offer(c, d, K, look_at([1, 1, 1.4], [5, 4, 0.5]), 9.0)
    enc.relevance(q, NO_TARGETS, bank.snapshot())
    assert calls == [4, 1]                               # only the new keyframe


def test_selector_uses_clip_term(tmp_path):
    path = _save_model("clip", tmp_path / "clip")
    bank = _bank(4)
    sel = DynamicSelector(bank, SelectorConfig(relevance=("proposals", "clip"), clip_model_dir=str(path)))
    s = sel.scores(SceneQuery("grounding", "the red chair"), _scene())
    assert s.features[:, 1].max() == 1.0 and s.features[:, 1].min() == 0.0
    assert len(sel.select_views(SceneQuery("grounding", "the red chair"), _scene(), 2)) == 2


def _scene():
    from r1_core.model.r1model import SceneEncoding

    return SceneEncoding(torch.zeros(1, 1), np.array([[1.25, 1.25, 0.45, 0.5, 0.5, 0.9, 0]], np.float32),
                         np.ones(1, np.float32), np.array([5]))


def test_clip_dir_errors(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        ClipRelevance(tmp_path)
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="model_type 'bert'; choose one of"):
        ClipRelevance(tmp_path / "bert")
