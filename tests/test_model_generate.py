"""Our KV-cached decoding loop against transformers.generate, streaming, stop strings, cancel."""
from types import SimpleNamespace

import pytest
import torch

from r1_core.model.backbones import load_backbone
from r1_core.model.generate import GenerationSettings, generate


@pytest.fixture(scope="module")
def tiny():
    bb = load_backbone("tiny", seed=3)
    model = SimpleNamespace(backbone=bb, eos_id=bb.tokenizer.eos_token_id)
    return model


def _batch(model, prompts):
    tok = model.backbone.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    L = max(map(len, ids))
    input_ids = torch.full((len(ids), L), tok.pad_token_id)
    mask = torch.zeros((len(ids), L), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, L - len(x):] = torch.tensor(x)
        mask[i, L - len(x):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    emb = model.backbone.embed_tokens(input_ids)
    return SimpleNamespace(input_ids=input_ids, attention_mask=mask, position_ids=pos, inputs_embeds=emb)


def test_greedy_matches_transformers_generate_on_a_padded_batch(tiny):
    prompts = ["the red chair is", "where is the bed next to the window?"]
    batch = _batch(tiny, prompts)
    ours = generate(tiny, batch, GenerationSettings(max_new_tokens=20, stop_strings=()))
    ref = tiny.backbone.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                       max_new_tokens=20, do_sample=False, eos_token_id=None,
                                       pad_token_id=tiny.backbone.tokenizer.pad_token_id)
    for b, res in enumerate(ours):
        expect = ref[b, batch.input_ids.shape[1]:].tolist()
        assert res.token_ids == expect[: len(res.token_ids)]
        assert res.finish_reason in ("length", "stop")
        assert len(res.token_ids) == 20 or res.finish_reason == "stop"


def test_streaming_deltas_concatenate_to_the_text_and_stop_string_ends(tiny):
    batch = _batch(tiny, ["hello"])
    got = []
    # Force the model to emit "</answer>" by biasing the head: replace lm_head with one that
    # spells the stop string byte by byte.
    tok = tiny.backbone.tokenizer
    script = tok("ab</answer>zz", add_special_tokens=False)["input_ids"]
    state = {"i": 0}
    real_head = tiny.backbone.lm_head

    class Scripted(torch.nn.Module):
        def forward(self, h):
            logits = torch.full((h.shape[0], len(tok)), -1e9)
            logits[:, script[min(state["i"], len(script) - 1)]] = 0
            state["i"] += 1
            return logits

    tiny.backbone.lm_head = Scripted()
    try:
        (res,) = generate(tiny, batch, GenerationSettings(max_new_tokens=50), on_text=[got.append])
        state["i"] = 0      # without a callback texts are decoded only where a stop string may end
        (quiet,) = generate(tiny, batch, GenerationSettings(max_new_tokens=50))
    finally:
        tiny.backbone.lm_head = real_head
    assert res.text == "ab</answer>" and res.finish_reason == "stop"
    assert "".join(got) == res.text
    assert (quiet.text, quiet.token_ids, quiet.finish_reason) == (res.text, res.token_ids, res.finish_reason)


def test_cancel_per_sequence(tiny):
    batch = _batch(tiny, ["one", "two"])
    calls = {"n": 0}

    def cancel_first():
        calls["n"] += 1
        return calls["n"] > 3

    res = generate(tiny, batch, GenerationSettings(max_new_tokens=12, stop_strings=()),
                   cancel=[cancel_first, None])
    assert res[0].finish_reason == "cancelled" and len(res[0].token_ids) == 3
    assert res[1].finish_reason in ("length", "stop")


def test_sampling_is_reproducible_with_a_seed(tiny):
    batch = _batch(tiny, ["abc", "de"])
    s = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, top_p=0.9, top_k=50,
                           seed=7, stop_strings=())
    a = [r.token_ids for r in generate(tiny, batch, s)]
    b = [r.token_ids for r in generate(tiny, batch, s)]
    c = [r.token_ids for r in generate(tiny, batch, GenerationSettings(**{**s.__dict__, "seed": 8}))]
    assert a == b and a != c


@pytest.mark.parametrize("kw, match", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"do_sample": True, "temperature": 0}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"stop_strings": ("</answer>", "")}, "stop_strings")])
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        GenerationSettings(**kw)


@pytest.mark.gpu
def test_cuda_graph_decoding_matches_eager():
    bb = load_backbone("tiny", seed=5)
    model = SimpleNamespace(backbone=bb, eos_id=bb.tokenizer.eos_token_id)
    batch = _batch(model, ["the red chair is", "where is the bed next to the window?"])
    bb.model.to("cuda")
    batch = SimpleNamespace(**{k: v.detach().to("cuda") for k, v in vars(batch).items()})
    s = dict(max_new_tokens=40, stop_strings=())
    eager = generate(model, batch, GenerationSettings(**s))
    graph = generate(model, batch, GenerationSettings(**s, cuda_graph=True))
    assert [r.token_ids for r in graph] == [r.token_ids for r in eager]


@pytest.mark.gpu
def test_cuda_graph_decoding_matches_eager_for_lora():
    """GRPO's sampling: a peft LoRA model with a second (inactive) adapter, decoded from a
    captured graph, gives eager decoding's tokens."""
    from peft import LoraConfig, get_peft_model

    bb = load_backbone("tiny", seed=5)
    lora = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    peft_model = get_peft_model(bb.model, LoraConfig(**lora))
    peft_model.add_adapter("reference", LoraConfig(**lora))
    model = SimpleNamespace(backbone=bb, eos_id=bb.tokenizer.eos_token_id)
    batch = _batch(model, ["the red chair is", "where is the bed next to the window?"])
    bb.model.to("cuda")
    batch = SimpleNamespace(**{k: v.detach().to("cuda") for k, v in vars(batch).items()})
    s = dict(max_new_tokens=40, stop_strings=())
    with torch.no_grad():
        eager = generate(model, batch, GenerationSettings(**s))
        graph = generate(model, batch, GenerationSettings(**s, cuda_graph=True))
        with peft_model.disable_adapter():
            base = generate(model, batch, GenerationSettings(**s, cuda_graph=True))
    assert [r.token_ids for r in graph] == [r.token_ids for r in eager]
    assert [r.token_ids for r in base] != [r.token_ids for r in eager]      # the adapter is in the graph
