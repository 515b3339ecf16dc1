"""Typed configs: one dataclass per component, filled from YAML, unknown keys rejected.

    cfg = load_config(FusionConfig, "config/fusion.yaml", overrides={"voxel_size": 0.03})
    print(format_config(cfg))

Nested dataclass fields are filled from nested mappings. Values are checked against the
field's annotated type (int, float, bool, str, tuple/list of those, Optional, nested
dataclasses); a wrong type or an unknown key raises ConfigError naming the key path, what
was expected and what came. Dataclasses may validate further in `__post_init__`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key path."""


def _check_value(path: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(path, arg, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}: expected {tp}, got {value!r} ({type(value).__name__})")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r} ({type(value).__name__})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}: {value!r}")
            return tuple(_check_value(f"{path}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_check_value(f"{path}[{i}]", item_tp, v) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r} ({type(value).__name__})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r} ({type(value).__name__})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r} ({type(value).__name__})")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{path}: expected a path, got {value!r}")
        return Path(value)
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(
            f"unknown key(s) {unknown}{where} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(path, hints[name], value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e


def _merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if "." in key:  # dotted override "model.lora_rank": 8
            head, rest = key.split(".", 1)
            out[head] = _merge(dict(out.get(head) or {}), {rest: value})
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _with_overridden_sections(obj: Any, data: dict, overrides: Mapping[str, Any]) -> dict:
    """`data` where each section (nested dataclass) and dict field an override reaches into
    starts from its value in `obj`, the config built from `data` alone. So
    `grpo.reward_weights.exact_match=1` adds a weight to the default ones instead of replacing
    them all, and `stage.steps=2` keeps the other values of a section whose default factory
    sets them."""
    out = dict(data)
    names = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        sub = {rest: value} if rest else value
        if head not in names or not isinstance(sub, Mapping):
            continue                      # unknown keys and plain values: _build judges them
        current = getattr(obj, head)
        if isinstance(current, dict):
            out.setdefault(head, dict(current))
        elif dataclasses.is_dataclass(current):
            prev = out.get(head)
            section = dict(prev) if isinstance(prev, Mapping) else {}
            for f in dataclasses.fields(current):
                if f.init and f.name not in section:
                    section[f.name] = getattr(current, f.name)
            out[head] = _with_overridden_sections(current, section, sub)
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a non-mapping top level is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def load_config(
    cls: type[T],
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    section: str | None = None,
) -> T:
    """Build `cls` from a YAML file or mapping (optionally one top-level `section` of it),
    applying `overrides` (nested mappings or dotted keys)."""
    if source is None:
        data: dict = {}
        origin = "defaults"
    elif isinstance(source, Mapping):
        data, origin = dict(source), "mapping"
    else:
        data, origin = read_yaml(source), str(source)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{origin}: no section {section!r}; sections: {sorted(data)}")
        data = dict(data[section] or {})
    if overrides:
        try:
            base = _build(cls, data)
        except ConfigError:
            base = None                   # the overrides may be what makes it valid
        if base is not None:
            data = _with_overridden_sections(base, data, overrides)
    data = _merge(data, overrides or {})
    try:
        return _build(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None


def config_to_dict(cfg: Any) -> dict:
    """A plain dict (YAML/JSON-serialisable) of a config dataclass."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v
    return conv(cfg)


def format_config(cfg: Any) -> str:
    """The resolved config as YAML under a header, for printing at the start of long jobs."""
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip()
    return f"# {type(cfg).__name__}\n{body}"


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(format_config(cfg) + "\n")
