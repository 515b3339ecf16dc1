"""Test and benchmark support: a tiny r1 checkpoint with known answers, built in seconds offline.

    path = build_scripted_checkpoint(tmp_path / "ckpt", num_views=2)
    # scene_reasoner with model.checkpoint:=path and service.num_views:=2 then answers
    #   Ground(GROUND_TEXT)  -> GROUND_TARGET   (<ref>3</ref>: proposal 3 of the scene's encoding)
    #   Ask(ASK_TEXT)        -> ASK_TARGET
    #   Ask(PLAIN_TEXT)      -> PLAIN_TARGET    (an answer without a box)
    #   Reason(planning, PLAN_TEXT) -> "<think>go go go ..." that never closes (runs to max_new_tokens)

How: a `tiny` backbone R1Model whose scene, view and pose token projections are zeroed and
frozen, and whose prompt does not name the proposals' classes, so the prompt's embeddings
depend only on the request text (and the number of views), then
LoRA is trained on the three scripted prompts until greedy decoding reproduces every target
exactly on a cloud and views it never saw. The answers are therefore independent of the scene
while the boxes still come from the scene (the <ref> resolves to the live cloud's proposal),
which is what cross-process tests of the nodes need: a well-formed answer with a real box, one
without a box, a long stream to cancel, and a request that keeps the worker busy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GROUND_TEXT = "the red chair next to the bed"
GROUND_TARGET = "<think>red chair</think><answer><ref>3</ref></answer>"
ASK_TEXT = "what is next to the bed?"
ASK_TARGET = "<think>bed</think><answer>the red chair <ref>3</ref></answer>"
PLAIN_TEXT = "what colour is the bed?"
PLAIN_TARGET = "<think>bed</think><answer>white</answer>"
PLAN_TEXT = "tidy up"
PLAN_TARGET = "<think>" + "go " * 30          # no closing tag, no end token: rambles on
SCRIPT = (("grounding", GROUND_TEXT, GROUND_TARGET), ("qa", ASK_TEXT, ASK_TARGET), ("qa", PLAIN_TEXT, PLAIN_TARGET),
          ("planning", PLAN_TEXT, PLAN_TARGET))


def tiny_model_config():
    from r1_core.model.encoder import EncoderConfig, SetAbstractionConfig
    from r1_core.model.r1model import ModelConfig
    from r1_core.model.views_encoder import ViewEncoderConfig

    enc = EncoderConfig(num_points=512, num_proposals=8, token_dim=32, propagate_mlp=(64,),
                        sa=(SetAbstractionConfig(128, 0.4, 16, (32, 32)), SetAbstractionConfig(32, 0.8, 16, (32, 64))))
    cfg = ModelConfig(backbone="tiny", encoder=enc, projector_hidden=64, system_prompt="r1",
                      views=ViewEncoderConfig(image_size=32, tokens_per_view=4))
    if hasattr(cfg, "label_objects"):
        cfg.label_objects = False     # proposal class names in the prompt would make its text scene-dependent
    cfg.lora.rank, cfg.lora.dropout = 8, 0.0
    return cfg


def _cloud(seed: int, n: int = 3000) -> np.ndarray:
    r = np.random.default_rng(seed)
    return np.concatenate([r.uniform(0, 4, (n, 3)), r.uniform(0, 255, (n, 3))], 1).astype(np.float32)


def _views(seed: int, n: int):
    from r1_core.model.views_encoder import ViewInput

    r = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = np.eye(4)
        T[:3, 3] = r.uniform(0, 3, 3)
        out.append(ViewInput((r.random((48, 64, 3)) * 255).astype(np.uint8), T,
                             depth=r.uniform(0.5, 4, (48, 64)).astype(np.float32), keyframe_id=i))
    return out


def build_scripted_checkpoint(path: str | Path, num_views: int = 2, seed: int = 0, max_steps: int = 600) -> Path:
    """Train and save the scripted tiny checkpoint (see the module docstring); RuntimeError if
    greedy decoding does not reproduce the script within max_steps."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # tiny matrices: extra threads only spin against other processes
    try:
        return _build(path, num_views, seed, max_steps)
    finally:
        torch.set_num_threads(threads)


def _build(path: str | Path, num_views: int, seed: int, max_steps: int) -> Path:
    import torch

    from r1_core.model.checkpoint import save_checkpoint
    from r1_core.model.generate import GenerationSettings, generate
    from r1_core.model.r1model import R1Model
    from r1_core.query import SceneQuery

    torch.manual_seed(seed)
    model = R1Model(tiny_model_config())
    with torch.no_grad():          # slot embeddings = 0: the answer depends on the prompt text only
        for mod in (model.projector, model.pose_embed.mlp, model.view_encoder.out):
            last = [m for m in mod.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.zero_()
    for mod in (model.encoder, model.projector, model.pose_embed, model.view_encoder):
        for prm in mod.parameters():
            prm.requires_grad_(False)
    tok = model.tokenizer
    scene = model.encode_scene(_cloud(seed))
    items = []
    for task, text, target in SCRIPT:
        # the rambling target is given as token ids: no end token is appended, so it never stops
        tgt = tok(target, add_special_tokens=False)["input_ids"] if target == PLAN_TARGET else target
        items.append((scene, _views(seed, num_views), SceneQuery(task, text), tgt))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-2)

    def reproduces() -> bool:
        model.eval()
        check_scene = model.encode_scene(_cloud(seed + 1, 5000))
        ok = True
        for (_, _, query, _), (_, _, target) in zip(items, SCRIPT):
            batch = model.collate([model.prepare(check_scene, _views(seed + 1, num_views), query)], for_generation=True)
            (res,) = generate(model, batch, GenerationSettings(max_new_tokens=len(target) + 8))
            ok &= res.text.startswith(target) if target == PLAN_TARGET else res.text == target
        model.train()
        return ok

    step = 0
    while step < max_steps:
        for _ in range(50):
            loss = model([(s, v, q, t) for s, v, q, t in items])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        if step >= 100 and reproduces():
            return save_checkpoint(model.eval(), path)
    raise RuntimeError(f"scripted checkpoint: greedy decoding did not reproduce the script after {max_steps} steps "
                       f"(last loss {float(loss):.3f})")


def _source_key(num_views: int, seed: int) -> str:
    """Hash of everything the scripted checkpoint depends on: this file, the model code, the
    torch / transformers / peft versions."""
    import hashlib
    import importlib.metadata

    import r1_core.model

    h = hashlib.sha256(f"{num_views}/{seed}".encode())
    files = [Path(__file__)] + sorted(Path(r1_core.model.__file__).parent.glob("*.py"))
    for f in files:
        h.update(f.read_bytes())
    for dist in ("torch", "transformers", "peft", "tokenizers"):
        h.update(importlib.metadata.version(dist).encode())
    return h.hexdigest()[:16]


def scripted_checkpoint(cache_dir: str | Path | None = None, num_views: int = 2, seed: int = 0) -> Path:
    """The scripted checkpoint, built once per source version into `cache_dir` (default
    ~/.cache/r1/test-checkpoints) and reused: the build is deterministic (seeded), and the key
    covers the code and library versions it depends on."""
    import os
    import shutil
    import tempfile

    root = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "r1" / "test-checkpoints"
    path = root / f"scripted-{_source_key(num_views, seed)}"
    if (path / "r1_meta.json").is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".scripted.", dir=root))
    try:
        build_scripted_checkpoint(tmp / "ckpt", num_views=num_views, seed=seed)
        try:
            os.replace(tmp / "ckpt", path)
        except OSError:
            if not (path / "r1_meta.json").is_file():     # not another process's finished build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
