"""R1Model end to end on tiny backbones (text-only and Qwen2.5-VL-style): cloud + views +
request -> parsed answer with boxes; gradients reach every trainable part; save -> load gives
identical outputs; bad input is refused clearly."""
import numpy as np
import pytest
import torch

from r1_core.model.answer import parse_response, resolve_refs
from r1_core.model.backbones import BackboneError, load_backbone
from r1_core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from r1_core.model.encoder import EncoderConfig, SetAbstractionConfig
from r1_core.model.generate import GenerationSettings, generate
from r1_core.model.r1model import ModelConfig, R1Model
from r1_core.model.views_encoder import ViewEncoderConfig, ViewInput
from r1_core.query import SceneQuery

TINY_ENCODER = EncoderConfig(
    num_points=512, num_proposals=8, token_dim=32, propagate_mlp=(64,),
    sa=(SetAbstractionConfig(128, 0.4, 16, (32, 32)), SetAbstractionConfig(32, 0.8, 16, (32, 64))),
)


def tiny_config(backbone="tiny", **kw) -> ModelConfig:
    cfg = ModelConfig(backbone=backbone, encoder=TINY_ENCODER, projector_hidden=64,
                      views=ViewEncoderConfig(image_size=32, tokens_per_view=4), **kw)
    cfg.lora.rank, cfg.lora.dropout = 8, 0.0
    return cfg


def cloud(seed=0, n=3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(0, 4, (n, 3)), rng.uniform(0, 255, (n, 3))], 1).astype(np.float32)


def views(seed=0, n=2) -> list[ViewInput]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = np.eye(4)
        T[:3, 3] = [i, 0.5, 1.4]
        out.append(ViewInput((rng.random((48, 64, 3)) * 255).astype(np.uint8), T,
                             depth=rng.uniform(0.5, 4, (48, 64)).astype(np.float32), keyframe_id=i))
    return out


@pytest.fixture(scope="module", params=["tiny", "tiny-vl"])
def trained(request):
    """A tiny model taught one grounding answer (enough steps to make greedy decoding produce it)."""
    torch.manual_seed(0)
    model = R1Model(tiny_config(request.param))
    scene = model.encode_scene(cloud())
    vs = views()
    query = SceneQuery("grounding", "the red chair")
    target = "<think>red chair</think><answer><ref>3</ref></answer>"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(150):
        loss = model([(scene, vs, query, target)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), scene, vs, query


def test_end_to_end_answer_with_box(trained):
    model, scene, vs, query = trained
    (res,) = generate(model, model.collate([model.prepare(scene, vs, query)], for_generation=True),
                      GenerationSettings(max_new_tokens=60))
    parsed = parse_response(resolve_refs(res.text, scene.boxes))
    assert res.finish_reason == "stop"
    assert parsed.reasoning == "red chair"
    assert np.allclose(parsed.boxes, scene.boxes[3:4], atol=0.006)


def test_gradients_reach_encoder_projector_views_and_lora():
    model = R1Model(tiny_config())
    scene = model.encode_scene(cloud())
    loss = model([(scene, views(), SceneQuery("qa", "how many chairs?"), "<think>x</think><answer>2</answer>")])
    loss.backward()
    groups = {"encoder.token_mlp": 0, "projector": 0, "view_encoder": 0, "pose_embed": 0, "lora_": 0}
    for name, p in model.named_parameters():
        for g in groups:
            if g in name and p.grad is not None and p.grad.abs().sum() > 0:
                groups[g] += 1
    assert all(groups.values()), groups
    frozen = [n for n, p in model.named_parameters() if "lora_" not in n and n.startswith("lm.") and p.requires_grad]
    assert not frozen, f"base weights must stay frozen: {frozen[:3]}"


def test_save_load_gives_identical_outputs(trained, tmp_path):
    model, scene, vs, query = trained
    extra = {"view_selection.w": torch.arange(3.0)}
    save_checkpoint(model, tmp_path / "ck", extra=extra)
    loaded, got_extra = load_checkpoint(tmp_path / "ck")
    assert torch.equal(got_extra["view_selection.w"], extra["view_selection.w"])
    scene2 = loaded.encode_scene(cloud())
    assert np.allclose(scene2.boxes, scene.boxes)
    b1 = model.collate([model.prepare(scene, vs, query)], for_generation=True)
    b2 = loaded.collate([loaded.prepare(scene2, vs, query)], for_generation=True)
    assert torch.allclose(b1.inputs_embeds, b2.inputs_embeds, atol=1e-6)
    r1 = generate(model, b1, GenerationSettings(max_new_tokens=30))
    r2 = generate(loaded, b2, GenerationSettings(max_new_tokens=30))
    assert r1[0].token_ids == r2[0].token_ids


def test_checkpoint_mismatch_is_named(trained, tmp_path):
    model, *_ = trained
    save_checkpoint(model, tmp_path / "ck")
    cfg_file = tmp_path / "ck" / "r1_model.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("token_dim: 32", "token_dim: 48"))
    with pytest.raises(CheckpointError, match=r"encoder.*shape"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_atomic_save_keeps_previous_checkpoint_on_failure(trained, tmp_path, monkeypatch):
    model, *_ = trained
    save_checkpoint(model, tmp_path / "ck")
    before = (tmp_path / "ck" / "parts.safetensors").read_bytes()
    import r1_core.model.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tmp_path / "ck")
    assert (tmp_path / "ck" / "parts.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 6), np.float32), "no finite points"),
    (np.full((10, 6), np.nan, np.float32), "no finite points"),
    (np.zeros((10, 4), np.float32), r"expected shape \(N, 6\) or \(N, 9\)"),
])
def test_bad_clouds(bad, match):
    model = R1Model(tiny_config())
    with pytest.raises(ValueError, match=match):
        model.encode_scene(bad)


def test_oversized_cloud_refused_and_large_cloud_subsampled():
    cfg = tiny_config()
    cfg.encoder.max_input_points = 5000
    model = R1Model(cfg)
    with pytest.raises(ValueError, match="exceed encoder.max_input_points"):
        model.encode_scene(cloud(n=5001))
    enc = model.encode_scene(cloud(n=4000))          # subsampled to num_points, deterministic
    assert np.array_equal(enc.boxes, model.encode_scene(cloud(n=4000)).boxes)


def test_unknown_preset_and_missing_local_checkpoint(tmp_path):
    with pytest.raises(BackboneError, match=r"unknown backbone preset 'gpt5'; choose one of"):
        load_backbone("gpt5")
    with pytest.raises(BackboneError, match=f"no hub-format checkpoint at {tmp_path}"):
        load_backbone("qwen2.5-vl", path=str(tmp_path))
    with pytest.raises(BackboneError, match="needs a local checkpoint directory"):
        load_backbone("qwen2.5-vl")


def test_bad_queries():
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        SceneQuery("dance", "x")
    with pytest.raises(ValueError, match="needs target_box"):
        SceneQuery("object_caption")
    with pytest.raises(ValueError, match="target_box: expected .* sizes > 0, got"):     # it used to be captioned
        SceneQuery("object_caption", target_box=np.zeros(7))
    with pytest.raises(ValueError, match="non-empty text"):
        SceneQuery("qa", "  ")


def test_merged_lora_gives_the_same_answer_and_refuses_to_save(trained, tmp_path):
    model, scene, vs, query = trained
    batch = model.collate([model.prepare(scene, vs, query)], for_generation=True)
    before = generate(model, batch, GenerationSettings(max_new_tokens=30))[0].token_ids
    model.merge_lora()
    try:
        merged = generate(model, batch, GenerationSettings(max_new_tokens=30))[0].token_ids
        with pytest.raises(CheckpointError, match="merged"):
            save_checkpoint(model, tmp_path / "ck")
    finally:
        model.unmerge_lora()
    assert merged == before


def test_proposal_colours_written_before_the_class_name():
    """label_colors: each ref reads '<ref>k</ref> <colour> <class>' with the colour voted by the
    points inside the proposal's box; a scene encoding without colours is refused."""
    from dataclasses import replace

    from r1_core.views.vocab import COLOR_WORDS, dominant_colors

    torch.manual_seed(0)
    model = R1Model(tiny_config(label_colors=True)).eval()
    pts = cloud()
    pts[:, 3:6] = [190, 35, 35]                                     # every point red
    scene = model.encode_scene(pts)
    assert scene.colors.shape == (len(scene.boxes),)
    prepared, _ = model.encoder.prepare(torch.from_numpy(pts))
    assert np.array_equal(scene.colors, dominant_colors(prepared.numpy(), scene.boxes))
    assert {COLOR_WORDS[c] for c in scene.colors if c >= 0} == {"red"}
    text = model.tokenizer.decode(model.prepare(scene, [], SceneQuery("grounding", "the chair")).input_ids)
    k = int(np.flatnonzero(scene.colors >= 0)[0])
    from r1_core.data.classes import NYU40_NAMES
    assert f"<ref>{k}</ref> red {NYU40_NAMES.get(int(scene.labels[k]), 'object')}" in text
    plain = R1Model(tiny_config()).eval()
    plain_scene = plain.encode_scene(pts)
    assert plain_scene.colors is None                               # no colour vote for a model that does not read it
    assert " red " not in plain.tokenizer.decode(plain.prepare(plain_scene, [], SceneQuery("grounding", "the chair")).input_ids)
    with pytest.raises(ValueError, match="label_colors"):
        model.prepare(replace(scene, colors=None), [], SceneQuery("grounding", "the chair"))
    with pytest.raises(ValueError, match="needs label_objects"):
        tiny_config(label_colors=True, label_objects=False)


def test_class_order_groups_proposals_and_keeps_them_whole():
    torch.manual_seed(0)
    by_detector = R1Model(tiny_config(label_colors=True)).eval()
    by_class = R1Model(tiny_config(label_colors=True, object_order="class")).eval()
    by_class.load_state_dict(by_detector.state_dict())
    a, b = by_detector.encode_scene(cloud()), by_class.encode_scene(cloud())
    assert np.all(np.diff(b.labels) >= 0)                       # grouped by class
    order = [int(np.flatnonzero((a.boxes == box).all(1))[0]) for box in b.boxes]
    assert sorted(order) == list(range(len(a.boxes)))           # a permutation of the same proposals
    for k, j in enumerate(order):                               # every field moved with its box
        assert a.labels[j] == b.labels[k] and a.colors[j] == b.colors[k] and a.scores[j] == b.scores[k]
        assert torch.equal(a.token_inputs[j], b.token_inputs[k])
    with pytest.raises(ValueError, match="object_order"):
        tiny_config(object_order="size")


def test_a_prompt_given_a_target_equals_the_prompt_prepared_with_it(trained):
    """with_target (GRPO: one prepared prompt, G sampled completions) gives what prepare with the
    target's token ids gives: ids, labels and the collated embeddings and log-probs."""
    model, scene, vs, query = trained
    target = model.tokenizer("<think>red chair</think><answer>", add_special_tokens=False)["input_ids"]
    prompt = model.prepare(scene, vs, query)
    a, b = model.with_target(prompt, target), model.prepare(scene, vs, query, target=target)
    assert (a.input_ids, a.labels, a.prompt_len) == (b.input_ids, b.labels, b.prompt_len)
    assert prompt.input_ids == b.input_ids[:b.prompt_len]                   # the prompt is left as it was
    with torch.no_grad():
        ba, bb = model.collate([a, a]), model.collate([b, b])
        torch.testing.assert_close(ba.inputs_embeds, bb.inputs_embeds)
        torch.testing.assert_close(model.token_logprobs(ba)[0], model.token_logprobs(bb)[0])
    with pytest.raises(ValueError, match="already has a target"):
        model.with_target(a, target)
    with pytest.raises(ValueError, match="exceeds max_length"):
        model.with_target(prompt, [target[0]] * model.cfg.max_length)


@pytest.mark.parametrize("backbone", ["tiny", "tiny-vl"])
def test_prompt_pieces_are_tokenised_once_and_give_the_tokenizers_ids(backbone, monkeypatch):
    """prepare memoises each prompt piece's token ids (text_ids): a second prompt over the same
    scene tokenises only what is new, and the ids are what the tokenizer gives for each piece."""
    from r1_core.model.prompts import build_prompt

    torch.manual_seed(0)
    model = R1Model(tiny_config(backbone)).eval()
    scene, vs = model.encode_scene(cloud()), views()
    tok = model.tokenizer
    calls = []
    real_call = type(tok).__call__
    monkeypatch.setattr(type(tok), "__call__", lambda self, text, **kw: calls.append(text) or real_call(self, text, **kw))
    first = model.prepare(scene, vs, SceneQuery("grounding", "the red chair"))
    n_first = len(calls)
    second = model.prepare(scene, vs, SceneQuery("grounding", "the blue chair"))
    assert 0 < len(calls) - n_first < n_first / 3          # only the pieces holding the new question
    n_second = len(calls)
    again = model.prepare(scene, vs, SceneQuery("grounding", "the red chair"))
    assert again.input_ids == first.input_ids and len(calls) == n_second     # every piece cached
    monkeypatch.undo()
    # the ids are the tokenizer's, piece by piece: a model with an empty cache gives the same prompt
    fresh = R1Model(tiny_config(backbone)).eval()
    assert fresh.prepare(scene, vs, SceneQuery("grounding", "the blue chair")).input_ids == second.input_ids
    pieces = build_prompt(SceneQuery("grounding", "the red chair"), len(scene.token_inputs),
                          [model.cfg.views.tokens_per_view + 1] * len(vs), tok, model.cfg.system_prompt)
    text = next(p.text for p in pieces if not p.kind)
    assert list(model.text_ids(text)) == tok(text, add_special_tokens=False)["input_ids"]
