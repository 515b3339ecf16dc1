"""Training stages end to end on a tiny synthetic dataset (CPU): detector pre-training, pack,
SFT lowers the loss and moves every trainable tensor, GRPO raises the mean reward of a toy task,
evaluation produces the benchmark metrics."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from r1_core.data.errors import DataFormatError
from r1_core.model.r1model import R1Model
from training.common import read_metrics
from training.data import VIEW_STRATEGIES, TrainingPack
from training.recipe import load_recipe

pytestmark = pytest.mark.slow

RECIPE = "config/train/tiny.yaml"


def test_detector_loss_decreases(world):
    root, _ = world
    losses = [m["loss"] for m in read_metrics(root / "detector") if m.get("stage") == "detector"]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])


def test_pack_holds_scenes_keyframes_and_view_choices(world):
    root, recipe = world
    pack = TrainingPack(root / "pack")
    train, val = pack.examples("train"), pack.examples("val")
    assert train and val
    assert {e.task for e in train} >= {"grounding", "qa", "object_caption"}
    for ex in train[:50]:
        n_kf = len(pack.keyframes(ex.scene_id))
        for s in VIEW_STRATEGIES:
            ids = ex.views[s]
            assert len(ids) == min(recipe.pack.num_views, n_kf) and len(set(ids)) == len(ids)
            assert all(0 <= i < n_kf for i in ids)
        assert "<think>" in ex.target and "</answer>" in ex.target
    scene = pack.scene(train[0].scene_id)
    assert scene.points.shape == (recipe.pack.points, 6) and len(scene.objects) > 3


def test_fused_cloud_pack_is_the_walkthrough_seen_by_the_robot_with_mesh_labels(world, tmp_path):
    """pack.cloud=fused: the cloud is FusionMap's map of the rendered walk-through (only surfaces
    the camera saw, one point per voxel), each point labelled by the nearest mesh vertex."""
    import dataclasses

    from r1_core.data.scene import load_scannet_scene
    from r1_core.data.tasks import DatasetLayout
    from training.pack import build_pack

    root, recipe = world
    cfg = dataclasses.replace(recipe.pack, cloud="fused", points=3000)
    build_pack(root / "data", tmp_path / "pack", cfg, splits=("val",), progress=False)
    sid = DatasetLayout(root / "data").scene_ids("val")[0]
    fused = TrainingPack(tmp_path / "pack").scene(sid)
    mesh = load_scannet_scene(DatasetLayout(root / "data").scannet_dir, sid)
    assert fused.points.shape == (3000, 6)
    # every fused point lies on the mesh (noise within a few voxels), but the cloud is not the mesh
    from scipy.spatial import cKDTree
    d, nearest = cKDTree(mesh.points[:, :3]).query(fused.points[:, :3])
    assert np.quantile(d, 0.95) < 0.05
    labelled = fused.instance_labels > 0
    assert labelled.mean() > 0.9
    close = labelled & (d < cfg.label_radius_m)
    assert (fused.instance_labels[close] == mesh.instance_labels[nearest[close]]).all()
    assert not np.isin(np.round(fused.points[:100, :3], 4), np.round(mesh.points[:, :3], 4)).all(1).all()
    with pytest.raises(ValueError, match="pack.cloud"):
        dataclasses.replace(recipe.pack, cloud="lidar")


@pytest.fixture(scope="module")
def sft_run(world):
    from training.sft import train_sft

    from conftest import TINY_WORLD

    root, _ = world
    recipe = load_recipe(RECIPE, overrides=TINY_WORLD)
    recipe.sft.tasks = ("grounding",)
    recipe.sft.steps = 12
    recipe.sft.batch_size = 2
    summary = train_sft(recipe, TrainingPack(root / "pack"), root / "sft", detector=root / "detector", progress=False)
    return root, recipe, summary


def test_an_r1_checkpoint_gives_the_pack_the_same_proposals_as_its_stage0_detector(sft_run):
    """The detector side is frozen after stage 0, so a checkpoint rebuilds its training pack."""
    from r1_core.model.encoder import PointEncoder
    from training.detector import load_pretrained_encoder

    root, recipe, _ = sft_run
    from_detector, from_ckpt = PointEncoder(recipe.model.encoder).eval(), PointEncoder(recipe.model.encoder).eval()
    load_pretrained_encoder(from_detector, root / "detector")
    load_pretrained_encoder(from_ckpt, root / "sft" / "final")
    pack = TrainingPack(root / "pack")
    pts, _ = from_detector.prepare(torch.from_numpy(pack.scene(pack.examples("val")[0].scene_id).points))
    with torch.no_grad():
        a, b = from_detector(pts[None]), from_ckpt(pts[None])
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.token_inputs, b.token_inputs)
    # only the detector side comes from the checkpoint: the token MLP (SFT-trained) keeps its init
    parts = {k[len("encoder."):]: v for k, v in load_file(root / "sft" / "final" / "parts.safetensors").items()
             if k.startswith("encoder.")}
    state = from_ckpt.state_dict()
    assert all(torch.equal(state[k], v) for k, v in parts.items() if from_ckpt.is_detector_key(k))
    mlp = [k for k in parts if k.startswith("token_mlp.")]
    assert mlp and all(not torch.equal(state[k], parts[k]) for k in mlp)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(world):
    """recipe.*.gradient_checkpointing only trades memory for time: same loss, same grads."""
    from training.sft import build_model, encode_scenes

    root, _ = world
    recipe = load_recipe(RECIPE)
    pack = TrainingPack(root / "pack")
    examples = [e for e in pack.examples("train") if e.task == "grounding"][:2]
    grads, losses = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model(recipe, root / "detector", None, "cpu", gradient_checkpointing=checkpointing)
        model.train()
        assert model.backbone.model.is_activation_checkpointing == checkpointing
        enc = encode_scenes(model, pack, [e.scene_id for e in examples], progress=False)
        loss = model([(enc[e.scene_id], [], e.query(), e.target) for e in examples])
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert grads[0].keys() == grads[1].keys() and any("lora" in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


def test_sft_lowers_loss_and_moves_every_trainable_tensor(sft_run):
    root, recipe, summary = sft_run
    losses = [m["loss"] for m in read_metrics(root / "sft") if m.get("stage") == "sft"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    from training.detector import load_pretrained_encoder

    init = R1Model(recipe.model)                         # same seed: the exact starting point
    load_pretrained_encoder(init.encoder, root / "detector")
    start = {f"{n}.{k}": v for n, mod in init.trainable_modules().items() for k, v in mod.state_dict().items()}
    final = load_file(root / "sft" / "final" / "parts.safetensors")
    frozen_ids = {id(p) for p in init.encoder.detector_parameters()}
    detector = {f"encoder.{k}" for k, p in init.encoder.named_parameters() if id(p) in frozen_ids}
    params = {f"{n}.{k}" for n, mod in init.trainable_modules().items() for k, _ in mod.named_parameters()}
    trained = params - detector
    unchanged = [k for k in trained if torch.equal(start[k], final[k])]
    assert not unchanged, f"trainable tensors that did not move: {unchanged[:5]}"
    frozen_moved = [k for k in detector if not torch.equal(start[k], final[k])]
    assert not frozen_moved, f"the detector must stay frozen in SFT: {frozen_moved[:5]}"
    extra = load_file(root / "sft" / "final" / "extra.safetensors")
    assert set(extra) >= {"view_selection.w_text", "view_selection.w_redundancy"}
    adapter = load_file(root / "sft" / "final" / "adapter.safetensors")
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_grpo_raises_the_mean_reward_of_a_toy_task(sft_run):
    """Toy reward: the share of the letter 'e' among the completion's characters. GRPO must move
    the policy toward it (fixed seeds)."""
    from training.grpo import train_grpo

    root, recipe, _ = sft_run
    recipe.grpo.tasks = ("grounding",)
    recipe.grpo.steps = 10
    recipe.grpo.prompts_per_step = 2
    recipe.grpo.group_size = 6
    recipe.grpo.max_new_tokens = 12
    recipe.grpo.beta = 0.01
    recipe.grpo.optim.lr = 0.02

    def toy(prompts, completions, **kw):
        r = [c.count("e") / max(1, len(c)) for c in completions]
        return r, {"toy": r}

    summary = train_grpo(recipe, TrainingPack(root / "pack"), root / "grpo", init=root / "sft" / "final",
                         progress=False, reward_fn=toy)
    h = summary["reward_history"]
    assert np.mean(h[-3:]) > np.mean(h[:3]) + 0.05, h
    metrics = [m for m in read_metrics(root / "grpo") if m.get("stage") == "grpo"]
    assert summary["groups_with_spread"] == sum(m["groups_with_spread"] for m in metrics) > 0   # logged every step
    assert all("kl" in m and "clip_ratio" in m and np.isfinite(m["loss"]) for m in metrics)
    assert (root / "grpo" / "final" / "adapter.safetensors").is_file()


def _letter_e(prompts, completions, **kw):
    r = [c.count("e") / max(1, len(c)) for c in completions]
    return r, {"toy": r}


def test_grpo_resumed_at_a_checkpoint_ends_where_the_whole_run_ends(sft_run, tmp_path):
    """A run split over two machines: resuming at checkpoint-2 must give the uninterrupted run's
    rewards for steps 2.. and its final adapter."""
    import copy

    from r1_core.model.checkpoint import CheckpointError
    from training.grpo import train_grpo

    root, recipe, _ = sft_run
    recipe = copy.deepcopy(recipe)
    g = recipe.grpo
    g.tasks, g.steps, g.prompts_per_step, g.group_size, g.max_new_tokens = ("grounding",), 4, 2, 4, 8
    g.save_every, g.log_every, g.beta, g.optim.lr, g.optim.warmup_steps = 2, 1, 0.01, 0.02, 1
    pack, init = TrainingPack(root / "pack"), root / "sft" / "final"
    whole = train_grpo(recipe, pack, tmp_path / "whole", init=init, progress=False, reward_fn=_letter_e)
    ckpt = tmp_path / "whole" / "checkpoint-2"
    moved = load_file(ckpt / "adapter.safetensors")
    sft = load_file(init / "adapter.safetensors")
    assert any(not torch.equal(moved[k], sft[k]) for k in sft)       # resuming from SFT would not pass
    resumed = train_grpo(recipe, pack, tmp_path / "resumed", init=init, progress=False, reward_fn=_letter_e,
                         resume=ckpt)
    assert resumed["reward_history"] == pytest.approx(whole["reward_history"][2:], abs=1e-6)
    a = load_file(tmp_path / "whole" / "final" / "adapter.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "adapter.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    lrs = [m["lr"] for m in read_metrics(tmp_path / "resumed") if m.get("stage") == "grpo"]
    assert lrs == pytest.approx([m["lr"] for m in read_metrics(tmp_path / "whole") if m.get("stage") == "grpo"][2:])

    with pytest.raises(CheckpointError, match="init_sha256 differs"):     # another KL reference
        train_grpo(recipe, pack, tmp_path / "other", init=ckpt, progress=False, reward_fn=_letter_e, resume=ckpt)
    g.save_every = 1                                   # how often to save is not part of the run
    with pytest.raises(CheckpointError, match="saved at step 4, expected one in 1..3"):   # a finished run
        train_grpo(recipe, pack, tmp_path / "other", init=init, progress=False, reward_fn=_letter_e,
                   resume=tmp_path / "whole" / "checkpoint-4")
    g.optim.lr = 0.01
    with pytest.raises(CheckpointError, match=r"grpo differs(.|\n)*-  lr: 0.02\n\+  lr: 0.01"):
        train_grpo(recipe, pack, tmp_path / "other", init=init, progress=False, reward_fn=_letter_e, resume=ckpt)
    with pytest.raises(CheckpointError, match="no train_state.pt"):
        train_grpo(recipe, pack, tmp_path / "sft", init=init, progress=False, reward_fn=_letter_e, resume=init)


def test_grpo_runs_sampling_and_the_loss_in_the_recipe_precision(sft_run, tmp_path, monkeypatch):
    """grpo.mixed_precision must reach the log-prob and loss passes: the LM's projections give
    bf16 under bf16 and float32 under fp32 (the policy is not wrapped by accelerate.prepare, whose
    autocast would cover only `forward`); sampling stays fp32 (the CUDA graph's static cache holds
    one dtype). Each task gets its own new-token budget, and each prompt's G completions come from
    a batch of its own budget."""
    import copy

    import training.grpo as grpo

    root, recipe, _ = sft_run
    recipe = copy.deepcopy(recipe)
    g = recipe.grpo
    pack = TrainingPack(root / "pack")
    tasks = ("grounding", "qa")
    assert {e.task for e in pack.examples("train")} >= set(tasks)
    g.tasks, g.steps, g.prompts_per_step, g.group_size, g.max_new_tokens = tasks, 2, 6, 2, 3
    g.task_max_new_tokens = {"qa": 5}
    budgets, dtypes, phase = [], {"sampling": set(), "logprobs": set()}, ["sampling"]
    real = grpo.generate
    real_logprobs = grpo.completion_logprobs

    def logprobs(model, batch):
        phase[0] = "logprobs"
        try:
            return real_logprobs(model, batch)
        finally:
            phase[0] = "sampling"

    monkeypatch.setattr(grpo, "completion_logprobs", logprobs)

    def spy(model, batch, settings):
        budgets.append(settings.max_new_tokens)
        return [type(r)(f"<{settings.max_new_tokens}>{r.text}", r.token_ids, r.finish_reason)
                for r in real(model, batch, settings)]

    def reward(prompts, completions, tasks, **kw):
        for t, c in zip(tasks, completions):
            assert c.startswith(f"<{g.task_max_new_tokens.get(t, g.max_new_tokens)}>"), (t, c)
        return _letter_e(prompts, completions)

    monkeypatch.setattr(grpo, "generate", spy)
    real_build = grpo.build_model

    def build(*a, **k):
        model = real_build(*a, **k)
        proj = next(m for n, m in model.lm.named_modules() if n.endswith("q_proj.base_layer"))
        proj.register_forward_hook(lambda m, i, o: dtypes[phase[0]].add(o.dtype))
        return model

    monkeypatch.setattr(grpo, "build_model", build)
    from accelerate.state import AcceleratorState

    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        g.mixed_precision = precision
        budgets.clear(); dtypes["sampling"].clear(); dtypes["logprobs"].clear()
        AcceleratorState._reset_state()         # the precision is process-wide state in accelerate
        try:
            grpo.train_grpo(recipe, pack, tmp_path / precision, init=root / "sft" / "final", progress=False,
                            reward_fn=reward)
        finally:
            AcceleratorState._reset_state()     # later tests get a fresh (fp32) state
        assert dtypes == {"sampling": {torch.float32}, "logprobs": {dtype}}, precision
        assert sorted(set(budgets)) == [3, 5] and len(budgets) <= 2 * g.steps, budgets
    metrics = [m for m in read_metrics(tmp_path / "fp32") if m.get("stage") == "grpo"]
    assert all(m["seconds_generate"] > 0 and m["seconds_update"] > 0 for m in metrics)


def test_grpo_with_one_update_per_batch_never_clips_despite_lora_dropout(sft_run, tmp_path, monkeypatch):
    """num_iterations = 1: the old log-probs are the training pass's own, so the ratio is exactly
    1 and nothing is clipped, even with LoRA dropout 0.5 (a separate old pass with its own dropout
    masks clipped); with two updates per batch the second update does clip."""
    import copy

    import training.grpo as grpo

    root, recipe, _ = sft_run
    recipe = copy.deepcopy(recipe)
    g = recipe.grpo
    g.tasks, g.steps, g.prompts_per_step, g.group_size, g.max_new_tokens = ("grounding",), 2, 2, 4, 8
    g.log_every, g.beta, g.optim.lr, g.clip_eps = 1, 0.01, 0.05, 0.02
    real_build = grpo.build_model

    def build(*a, **k):
        model = real_build(*a, **k)
        drops = [m for n, m in model.lm.named_modules() if n.endswith("lora_dropout")]
        assert drops
        for m in drops:                      # the policy adapter's dropout (peft: a ModuleDict)
            m["default"] = torch.nn.Dropout(0.5)
        return model

    monkeypatch.setattr(grpo, "build_model", build)
    pack, init = TrainingPack(root / "pack"), root / "sft" / "final"
    clips = {}
    for mu in (1, 2):
        g.num_iterations = mu
        grpo.train_grpo(recipe, pack, tmp_path / f"mu{mu}", init=init, progress=False, reward_fn=_letter_e)
        clips[mu] = [m["clip_ratio"] for m in read_metrics(tmp_path / f"mu{mu}") if m.get("stage") == "grpo"]
    assert len(clips[1]) == 2 and clips[1] == [0.0, 0.0], clips
    assert max(clips[2]) > 0, clips


def _sft_loss(checkpoint, pack, recipe) -> float:
    """Mean SFT loss of a checkpoint over every SFT example of the pack (no dropout)."""
    from r1_core.model.checkpoint import load_checkpoint
    from training.sft import encode_scenes, resolve_examples, sft_items

    model, _ = load_checkpoint(checkpoint)
    model.eval()
    examples = [e for e in pack.examples("train") if e.task in recipe.sft.tasks]
    enc = encode_scenes(model, pack, [e.scene_id for e in examples], progress=False)
    data, _ = resolve_examples(examples, enc, recipe.sft.min_ref_iou)
    items = sft_items(pack, enc, data, range(len(data)), recipe.grpo.views, recipe.grpo.num_views)
    with torch.no_grad():
        return float(model(items))


def test_grpo_sft_term_trains_the_sft_targets_and_is_off_at_zero(sft_run, tmp_path, capsys):
    """grpo.sft_coef (PPO-ptx): with a reward that gives every completion the same value the
    advantages are 0, so with beta = 0 GRPO alone leaves the adapter exactly as SFT left it;
    with the SFT term the adapter moves, and lowers the SFT loss on the SFT examples."""
    import copy

    from training.grpo import train_grpo

    root, recipe, _ = sft_run
    recipe = copy.deepcopy(recipe)
    g = recipe.grpo
    g.tasks, g.steps, g.prompts_per_step, g.group_size, g.max_new_tokens = ("grounding",), 4, 2, 2, 4
    g.beta, g.optim.lr, g.optim.warmup_steps, g.sft_batch_size = 0.0, 0.01, 1, 2
    pack, init = TrainingPack(root / "pack"), root / "sft" / "final"

    def flat(prompts, completions, **kw):
        r = [0.5] * len(completions)
        return r, {"flat": r}

    sft = load_file(init / "adapter.safetensors")
    for coef in (0.0, 1.0):
        g.sft_coef = coef
        assert train_grpo(recipe, pack, tmp_path / f"c{coef}", init=init, progress=False,
                          reward_fn=flat)["groups_with_spread"] == 0
        assert "no group of G=2 completions had any reward spread in 4 steps" in capsys.readouterr().err
    still = load_file(tmp_path / "c0.0" / "final" / "adapter.safetensors")
    assert all(torch.equal(still[k], sft[k]) for k in sft)
    moved = load_file(tmp_path / "c1.0" / "final" / "adapter.safetensors")
    assert any(not torch.equal(moved[k], sft[k]) for k in sft)
    logged = [m for m in read_metrics(tmp_path / "c1.0") if m.get("stage") == "grpo"]
    assert all(np.isfinite(m["sft_loss"]) for m in logged) and len(logged) == g.steps
    assert not any("sft_loss" in m for m in read_metrics(tmp_path / "c0.0") if m.get("stage") == "grpo")
    before, after = _sft_loss(init, pack, recipe), _sft_loss(tmp_path / "c1.0" / "final", pack, recipe)
    assert after < before - 0.01, (before, after)
    with pytest.raises(ValueError, match="grpo.sft_coef: expected a finite number >= 0, got -1"):
        load_recipe(RECIPE, overrides={"grpo.sft_coef": -1})


def test_grpo_prompts_from_one_pack_and_the_sft_term_from_another(sft_run, tmp_path):
    """--sft-pack: GRPO samples its prompts from a pack of a room SFT never saw (room 9) while the
    SFT term trains on SFT's own pack, and lowers its loss there; naming GRPO's own pack as the
    SFT pack is the default run, adapter for adapter; two packs sharing a scene are refused."""
    import copy

    from r1_core.data.synthetic.dataset import write_dataset
    from training.grpo import train_grpo
    from training.pack import build_pack

    from conftest import TINY_WORLD

    root, recipe, _ = sft_run
    recipe = copy.deepcopy(recipe)
    g = recipe.grpo
    g.tasks, g.steps, g.prompts_per_step, g.group_size, g.max_new_tokens = ("grounding",), 3, 2, 2, 4
    g.beta, g.optim.lr, g.optim.warmup_steps, g.sft_batch_size, g.sft_coef = 0.0, 0.01, 1, 2, 1.0
    write_dataset(tmp_path / "fresh_data", train_scenes=1, val_scenes=0, seed=5, progress=False, train_rooms=[9])
    build_pack(tmp_path / "fresh_data", tmp_path / "fresh_pack", load_recipe(RECIPE, overrides=TINY_WORLD).pack,
               encoder_cfg=recipe.model.encoder, detector=root / "detector", progress=False)
    own, fresh, init = TrainingPack(root / "pack"), TrainingPack(tmp_path / "fresh_pack"), root / "sft" / "final"
    boxes = {name: {tuple(np.round(np.asarray(e.boxes, dtype=float).ravel(), 4)) for e in p.examples("train")
                    if e.task == "grounding"} for name, p in (("own", own), ("fresh", fresh))}
    assert boxes["fresh"] and not boxes["fresh"] & boxes["own"]
    seen = []

    def flat(prompts, completions, gt_boxes, **kw):   # equal rewards: only the SFT term moves the adapter
        seen.extend(tuple(np.round(np.asarray(b, dtype=float).ravel(), 4)) for b in gt_boxes)
        r = [0.5] * len(completions)
        return r, {"flat": r}

    train_grpo(recipe, fresh, tmp_path / "fresh", init=init, progress=False, reward_fn=flat, sft_pack=own)
    assert seen and set(seen) <= boxes["fresh"]
    assert _sft_loss(tmp_path / "fresh" / "final", own, recipe) < _sft_loss(init, own, recipe) - 0.01
    for name, sft_pack in (("default", None), ("named", TrainingPack(root / "pack"))):
        train_grpo(recipe, own, tmp_path / name, init=init, progress=False, reward_fn=flat, sft_pack=sft_pack)
    a, b = (load_file(tmp_path / n / "final" / "adapter.safetensors") for n in ("default", "named"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="share scenes"):
        train_grpo(recipe, own, tmp_path / "bad", init=init, progress=False, reward_fn=flat,
                   sft_pack=_copy_pack(root / "pack", tmp_path / "copy"))


def _copy_pack(src, dst) -> TrainingPack:
    """A copy of a pack under another root: the same scene ids in a second pack."""
    import shutil

    shutil.copytree(src, dst)
    return TrainingPack(dst)


def test_grpo_scores_qa_reasoning_against_the_reference_reasonings_boxes(sft_run, tmp_path):
    """With the evidence reward weighted, every QA completion is scored with the boxes its
    example's reference reasoning names (read here with a regex from the pack's targets); without
    it, none are passed. The configured rewards (no reward_fn) log the evidence reward."""
    import copy
    import re

    from training.grpo import train_grpo

    root, recipe, _ = sft_run
    recipe = copy.deepcopy(recipe)
    g = recipe.grpo
    g.tasks, g.steps, g.prompts_per_step, g.group_size, g.max_new_tokens = ("qa",), 2, 3, 2, 8
    pack, init = TrainingPack(root / "pack"), root / "sft" / "final"
    number = r"-?\d+(?:\.\d+)?"
    box_re = re.compile(rf"<box>\s*({number}(?:\s*,\s*{number}){{5,6}})\s*</box>")
    expected: dict[str, list[np.ndarray]] = {}
    for ex in pack.examples("train"):
        if ex.task == "qa":
            think = ex.target.split("</think>")[0]
            rows = [[float(v) for v in m.split(",")] + [0.0] * (7 - len(m.split(","))) for m in box_re.findall(think)]
            expected.setdefault(ex.text, []).append(np.asarray(rows, np.float64).reshape(-1, 7))
    seen = []

    def spy(prompts, completions, tasks, evidence_boxes, **kw):
        seen.extend(zip(prompts, evidence_boxes))
        r = [0.0] * len(completions)
        return r, {"flat": r}

    g.reward_weights = {"format": 1.0, "evidence": 1.0}
    train_grpo(recipe, pack, tmp_path / "spy", init=init, progress=False, reward_fn=spy)
    assert len(seen) == g.steps * g.prompts_per_step * g.group_size
    assert any(len(b) for _, b in seen)
    for prompt, boxes in seen:
        assert any(b.shape == boxes.shape and np.allclose(b, boxes, atol=1e-4) for b in expected[prompt]), prompt
    seen.clear()
    g.reward_weights = {"format": 1.0, "perception": 1.0}
    train_grpo(recipe, pack, tmp_path / "off", init=init, progress=False, reward_fn=spy)
    assert seen and all(b is None for _, b in seen)
    g.reward_weights = {"format": 1.0, "evidence": 1.0}
    train_grpo(recipe, pack, tmp_path / "real", init=init, progress=False)
    logged = [m for m in read_metrics(tmp_path / "real") if m.get("stage") == "grpo"]
    assert logged and all(0.0 <= m["reward_evidence"] <= 1.0 for m in logged)
    with pytest.raises(ValueError, match=r"grpo.reward_tasks: 'format' has no task scope"):
        load_recipe(RECIPE, overrides={"grpo.reward_tasks": {"format": ["qa"]}})
    with pytest.raises(ValueError, match=r"grpo.reward_tasks.semantic: expected a list of tasks"):
        load_recipe(RECIPE, overrides={"grpo.reward_tasks": {"semantic": ["trivia"]}})


def test_sample_groups_gives_g_completions_per_prompt_in_prompt_order(monkeypatch):
    """Prompts are generated in batches of one budget each; the results come back prompt-major,
    G per prompt, each from its own prompt and budget, and each batch has its own seed."""
    import training.grpo as grpo
    from r1_core.model.generate import GenerationResult
    from training.recipe import GRPOConfig

    class Model:
        def collate(self, samples, for_generation=False):
            return samples

    seen = []

    def fake_generate(model, batch, settings):
        seen.append((settings.max_new_tokens, settings.seed))
        return [GenerationResult(f"{p}#{settings.max_new_tokens}#{j}", [], "stop") for j, p in enumerate(batch)]

    monkeypatch.setattr(grpo, "generate", fake_generate)
    cfg = GRPOConfig(group_size=3, max_new_tokens=4, task_max_new_tokens={"planning": 9, "qa": 6})
    tasks = ["planning", "grounding", "qa", "grounding", "planning"]
    out = grpo.sample_groups(Model(), [f"p{i}" for i in range(len(tasks))], tasks, cfg, seed=5)
    budget = {"planning": 9, "qa": 6, "grounding": 4}
    assert [r.text.rsplit("#", 1)[0] for r in out] == [f"p{i}#{budget[t]}" for i, t in enumerate(tasks) for _ in range(3)]
    assert len({r.text for r in out}) == len(out)                       # each completion used once
    assert seen == [(4, 80), (6, 81), (9, 82)]


def test_grpo_task_budgets_are_checked():
    from training.recipe import GRPOConfig

    with pytest.raises(ValueError, match="unknown task 'plan'"):
        GRPOConfig(task_max_new_tokens={"plan": 384})
    with pytest.raises(ValueError, match="task_max_new_tokens.planning: expected a positive integer, got 0"):
        GRPOConfig(task_max_new_tokens={"planning": 0})


def test_training_state_restores_optimiser_scheduler_and_random_streams(tmp_path):
    import random

    from training.common import read_state, restore_state, save_state

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    w.grad = torch.ones(3)
    opt.step()
    sched.step()
    save_state(tmp_path / "state.pt", 7, opt, sched, extra={"k": "v"})
    draws = (random.random(), np.random.rand(), torch.rand(2))
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    state = read_state(tmp_path / "state.pt")
    step, extra = restore_state(state, opt2, sched2), state["extra"]
    assert (step, extra) == (7, {"k": "v"})
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(2), draws[2])
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 1
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_evaluation_predicts_and_scores(sft_run):
    from r1_core.model.checkpoint import load_checkpoint
    from training.evaluate import predict, score

    root, _, _ = sft_run
    model, _ = load_checkpoint(root / "sft" / "final")
    preds = predict(model, TrainingPack(root / "pack"), limit=6, max_new_tokens=8, batch_size=6, progress=False)
    tasks = {p["task"] for p in preds}
    assert "scan2cap" in tasks and len([p for p in preds if p["task"] != "scan2cap"]) == 6
    results = score(preds)
    if "scanrefer" in results:
        assert 0.0 <= results["scanrefer"]["Acc@0.25"] <= 1.0
    json.dumps(results)


def test_eval_cli_records_the_runs_settings_and_what_it_scored(sft_run, tmp_path, capsys):
    from r1_ros.cli import main

    root, _, _ = sft_run
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(root / "sft" / "final"), "--pack", str(root / "pack"), "--out", str(out),
                 "--limit", "3", "--tasks", "grounding", "--max-new-tokens", "8", "--no-dense-caption"]) == 0
    assert "r1 eval\n  checkpoint: " in capsys.readouterr().out             # the settings, before predicting
    meta = json.loads((out / "results.json").read_text())["meta"]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert meta["limit"] == 3 and meta["tasks"] == ["grounding"] and meta["max_new_tokens"] == 8
    assert meta["examples"] == {"grounding": {"n": 3, "well_formed": sum(p["well_formed"] for p in preds) / 3}}
    md = (out / "results.md").read_text()
    assert "- limit: 3\n" in md and '- examples: {"grounding": {"n": 3' in md
    # a second run into the same --out would replace this one's row and predictions: refused
    saved = {n: (out / n).read_bytes() for n in ("predictions.jsonl", "results.json", "results.md", "run.json")}
    again = ["eval", "--checkpoint", str(root / "sft" / "final"), "--pack", str(root / "pack"), "--out", str(out),
             "--limit", "1", "--tasks", "grounding", "--max-new-tokens", "8"]
    with pytest.raises(SystemExit, match="already holds results.json, results.md, predictions.jsonl, run.json"):
        main(again)
    rescore = ["eval", "--predictions", str(out / "predictions.jsonl"), "--out", str(out), "--name", "rescored"]
    with pytest.raises(SystemExit, match="already holds results.json, results.md of an earlier run"):
        main(rescore)
    assert {n: (out / n).read_bytes() for n in saved} == saved
    # rescored with --overwrite, the results keep the settings of the run that made the predictions
    assert main(rescore + ["--overwrite"]) == 0
    rescored = json.loads((out / "results.json").read_text())["meta"]
    assert rescored["limit"] == 3 and rescored["predictions"] == str(out / "predictions.jsonl")
    with pytest.raises(SystemExit, match="--no-score with --predictions does nothing"):
        main(rescore + ["--no-score"])
    with pytest.raises(SystemExit):
        main(again + ["--every", "0"])
    assert "--every: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_scores_break_qa_down_by_question_type_when_predictions_carry_questions():
    from training.evaluate import score

    def qa(question, answer, refs):
        return {"task": "qa", "question": question, "answer": answer, "references": refs, "well_formed": True}

    preds = [qa("How many chairs?", "2", ["2"]), qa("How many lamps?", "1", ["3"]),
             qa("Is there a TV?", "no", ["yes"]), qa("Where is the bed?", "by the wall", ["by the wall"])]
    scanqa = score(preds)["scanqa"]
    assert scanqa["EM"] == pytest.approx(0.5)
    assert scanqa["EM/how many"] == pytest.approx(0.5) and scanqa["EM/is there"] == 0.0 and scanqa["EM/where"] == 1.0
    del preds[0]["question"]                       # an older predictions file: no breakdown
    assert not any(k.startswith("EM/") for k in score(preds)["scanqa"])


def test_evaluation_leaves_the_lora_state_it_found_and_runs_on_int8_weights(sft_run):
    # `r1 eval --lm-weights int8` made every prediction, then failed: predict unmerged LoRA at the
    # end, which an int8 model refuses (its merge is one way)
    from r1_core.model.checkpoint import load_checkpoint
    from training.evaluate import predict

    root, _, _ = sft_run
    pack = TrainingPack(root / "pack")
    model, _ = load_checkpoint(root / "sft" / "final")
    float_preds = predict(model, pack, limit=4, max_new_tokens=8, batch_size=4, progress=False, dense_caption=False)
    assert not model.lora_merged
    model.quantize_int8()
    int8_preds = predict(model, pack, limit=4, max_new_tokens=8, batch_size=4, progress=False, dense_caption=False)
    assert model.int8_weights and model.lora_merged
    assert [p["question"] for p in int8_preds] == [p["question"] for p in float_preds]
    assert all(p["raw"] for p in int8_preds)


def test_evaluation_uses_each_task_budget(sft_run, monkeypatch):
    """Planning batches get their own new-token budget; no batch mixes budgets. Decoding replays
    a CUDA graph on a GPU only."""
    import training.evaluate as ev
    from r1_core.model.checkpoint import load_checkpoint

    root, _, _ = sft_run
    model, _ = load_checkpoint(root / "sft" / "final")
    seen, graphs = [], set()
    real = ev.generate

    def spy(model, batch, settings):
        res = real(model, batch, settings)
        seen.append(settings.max_new_tokens)
        graphs.add(settings.cuda_graph)
        return res

    monkeypatch.setattr(ev, "generate", spy)
    pack = TrainingPack(root / "pack")
    tasks = ("qa", "planning")
    counts = {t: sum(e.task == t for e in pack.examples("val")) for t in tasks}
    assert all(counts.values()), counts
    bs = 3      # QA's count is no multiple of it, so a batch straddling the two budgets would show
    assert counts["qa"] % bs, counts
    preds = ev.predict(model, pack, tasks=tasks, max_new_tokens=3, task_max_new_tokens={"planning": 5},
                       batch_size=bs, dense_caption=False, progress=False)
    assert sorted(p["task"] for p in preds) == sorted(t for t in tasks for _ in range(counts[t]))
    # batches of 3, QA first (budget 3), then planning (budget 5)
    expect = [3] * -(-counts["qa"] // bs) + [5] * -(-counts["planning"] // bs)
    assert seen == expect
    assert graphs == {model.device.type == "cuda"}
    if model.device.type != "cuda":
        with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
            ev.predict(model, pack, tasks=("qa",), limit=1, max_new_tokens=2, dense_caption=False, progress=False,
                       cuda_graph=True)


def test_task_budget_parsing():
    from training.evaluate import parse_task_budgets

    assert parse_task_budgets(["planning=384", "qa=64"]) == {"planning": 384, "qa": 64}
    assert parse_task_budgets([]) == {}
    for bad in ("planning", "plan=3", "planning=0", "planning=x"):
        with pytest.raises(ValueError, match="TASK=N"):
            parse_task_budgets([bad])


def _grounding(scene: str, box: list, unique: bool = True, pred: list | None = None) -> dict:
    return {"task": "grounding", "scene_id": scene, "question": f"the object at {box[0]}", "boxes": [pred or box],
            "gt_boxes": [box], "unique": unique, "well_formed": True}


def test_predictions_read_back_plain_or_gzipped_and_a_bad_line_is_named(tmp_path):
    import gzip

    from training.evaluate import read_predictions, write_predictions

    preds = [{"task": "qa", "answer": "two", "references": ["2"], "well_formed": True},
             _grounding("s0", [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0])]
    plain = write_predictions(preds, tmp_path / "p.jsonl")
    packed = tmp_path / "p.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_predictions(plain) == preds
    assert read_predictions(packed) == preds
    bad = tmp_path / "bad.jsonl"
    bad.write_text(plain.read_text() + '{"task": "qa", "answer": \n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 3 is not a JSON prediction"):
        read_predictions(bad)
    with pytest.raises(DataFormatError, match=r"missing.jsonl: no such predictions file"):
        read_predictions(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("line, change, message", [
    (2, lambda p: p.pop("unique"), r"line 2: field 'unique': expected true or false, got None"),
    (2, lambda p: p.update(task="grnding"), r"line 2: field 'task': expected one of \['grounding', .*got 'grnding'"),
    (2, lambda p: p.update(boxes=[[1, 2, 3, 1, 1, 1]]), r"line 2: field 'boxes': expected a list of at least 0 boxes of 7"),
    (2, lambda p: p.update(boxes=[[1, 2, 3, 1, float("nan"), 1, 0]]), r"line 2: field 'boxes': expected a list"),
    (2, lambda p: p.update(gt_boxes=[]), r"line 2: field 'gt_boxes': expected a list of at least 1 boxes"),
    (3, lambda p: p.update(scene_id="elsewhere"), r"line 3: field 'scene_id': scan2cap captions of 'elsewhere', but no "
                                                r"grounding record describes that scene"),
])
def test_a_prediction_without_what_its_metric_reads_is_refused_with_its_line_and_field(tmp_path, line, change, message):
    # each of these used to be scored: a missing `unique` counted the target as "multiple", a
    # misspelt task was left out of every table, a scan2cap record of an undescribed scene dropped
    # the whole Scan2Cap table
    from training.evaluate import read_predictions, write_predictions

    box = [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0]
    preds = [{"task": "qa", "answer": "two", "references": ["2"], "well_formed": True}, _grounding("s0", box),
             {"task": "scan2cap", "scene_id": "s0", "pred_boxes": [box], "captions": ["a box"]}]
    change(preds[line - 1])
    with pytest.raises(DataFormatError, match=message):
        read_predictions(write_predictions(preds, tmp_path / "p.jsonl"))


def test_empty_predictions_or_references_are_refused(tmp_path):
    from training.evaluate import read_predictions, write_predictions

    with pytest.raises(DataFormatError, match="no predictions to score"):
        read_predictions(write_predictions([], tmp_path / "empty.jsonl"))
    no_refs = [{"task": "qa", "answer": "two", "references": [], "well_formed": True}]
    with pytest.raises(DataFormatError, match=r"line 1: field 'references': expected a non-empty list"):
        read_predictions(write_predictions(no_refs, tmp_path / "norefs.jsonl"))


def test_scan2cap_counts_every_described_object_a_scene_without_captions_too():
    """Scan2Cap's m@kIoU is a mean over every described object: a scene with grounding records
    and no captions scores 0 for its objects (it used to be left out of the mean)."""
    from training.evaluate import score

    a, b = [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0], [4.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0]
    preds = [_grounding("s0", a), _grounding("s0", b), _grounding("s1", a),
             {"task": "scan2cap", "scene_id": "s0", "pred_boxes": [a, b], "captions": ["the object at 1.0"] * 2}]
    s2c = score(preds)["scan2cap"]
    assert s2c["count"] == 3 and s2c["recall@0.5"] == pytest.approx(2 / 3)
    only_s0 = score(preds[:2] + preds[3:])["scan2cap"]
    assert only_s0["count"] == 2 and s2c["CIDEr@0.5"] < only_s0["CIDEr@0.5"]


def test_sft_phase_bench_times_every_phase_of_real_steps(sft_run):
    """bench/train.py --sft-phases: each phase of the recipe's SFT step is timed, the synced
    phases add up to the step, and the unsynced step is timed too."""
    import importlib.util
    from pathlib import Path

    root, recipe, _ = sft_run
    spec = importlib.util.spec_from_file_location("bench_train", Path(__file__).resolve().parents[1] / "bench" / "train.py")
    bench_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_train)
    out = bench_train.sft_phases(recipe, root / "pack", root / "sft" / "final", steps=2, warmup=1)
    assert all(out[f"{name}_s"] > 0 for name in bench_train.PHASES)
    assert out["synced_step_s"] == pytest.approx(sum(out[f"{n}_s"] for n in bench_train.PHASES))
    assert 0 < out["step_s"] < 5 * out["synced_step_s"]
    assert out["batch_size"] == recipe.sft.batch_size and out["steps"] == 2
    # the operator count of a step: a transformer forward and backward call hundreds
    assert out["aten_ops_forward"] > 100 and out["aten_ops_backward"] > 100
    value, n = bench_train.aten_ops(lambda: torch.ones(3).add(1).mul(2))
    assert value.tolist() == [4.0, 4.0, 4.0] and n >= 3
