"""ROS 2 parameters from the nodes' typed config dataclasses.

    params = DataclassParameters(node, FusionNodeConfig, on_change=self._reconfigure)
    cfg = params.config                          # the validated FusionNodeConfig

Every leaf field of the dataclass (nested dataclasses become dotted names, as in a ROS params
YAML) is declared with a ParameterDescriptor: description, type, numeric range
(FloatingPointRange / IntegerRange) and read_only unless the field is marked dynamic. Values
come from `--params-file` / `-p` overrides as usual. The whole set is then validated by
building the dataclass with r1_core.config.load_config (unknown keys, types, `__post_init__`
checks); a set-parameters callback validates run-time changes the same way and rejects them
with the config's own message. ROS parameters have no null: an Optional string is "" and an
Optional list is [] when unset.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import math
import tokenize
import types
import typing
from typing import Any, Callable

from r1_core.config import ConfigError, load_config

# Help texts and ranges of the r1_core configs nested in the node configs (their dataclasses
# carry comments, not metadata). Key: "<Class>.<field>" -> (help, range or None, dynamic).
# A field not listed here gets its help text from its comment in the r1_core source
# (field_comments), no range, read-only.
CORE_PARAM_DOCS: dict[str, tuple[str, tuple | None, bool]] = {
    "FusionConfig.voxel_size": ("voxel edge of the fusion map (m)", (0.001, 1.0), False),
    "FusionConfig.min_depth": ("nearer pixels are ignored (m)", (0.0, 100.0), False),
    "FusionConfig.max_depth": ("farther pixels are ignored (m)", (0.01, 100.0), False),
    "FusionConfig.depth_scale": ("metres per unit of 16UC1 depth (0.001 = millimetres)", (1e-6, 1.0), False),
    "FusionConfig.pixel_stride": ("integrate every n-th pixel in u and v", (1, 64), False),
    "FusionConfig.edge_threshold": ("flying-pixel filter: relative depth jump to a neighbour (0 = off)",
                                    (0.0, 10.0), False),
    "FusionConfig.weighting": ("per-pixel weight: uniform | inverse_depth_squared", None, False),
    "FusionConfig.min_observations": ("frames a voxel must be seen in to appear in the cloud", (1, 1000), False),
    "FusionConfig.max_voxels": ("voxel cap; least recently seen voxels are evicted beyond it", (1, 1 << 31), False),
    "FusionConfig.evict_fraction": ("on overflow evict down to max_voxels * (1 - evict_fraction)", (0.001, 1.0),
                                    False),
    "FusionConfig.crop_min": ("map-frame crop box minimum [x, y, z] ([] = no crop)", None, False),
    "FusionConfig.crop_max": ("map-frame crop box maximum [x, y, z] ([] = no crop)", None, False),
    "FusionConfig.device": ("fusion backend: cpu | cuda | cuda:N", None, False),
    "BankConfig.max_keyframes": ("keyframes kept at most", (1, 100000), False),
    "BankConfig.max_bytes": ("memory bound of the keyframe bank (bytes)", (1, 1 << 40), False),
    "BankConfig.store_width": ("keyframe images are kept at this width (0 = as received)", (0, 8192), False),
    "BankConfig.voxel_size": ("voxel edge of the keyframes' visible-voxel sets (m)", (0.001, 1.0), False),
    "BankConfig.sample_stride": ("pixel stride of the visible-voxel back-projection", (1, 64), False),
    "BankConfig.min_depth_m": ("keyframe depth below this is ignored (m)", (0.0, 100.0), False),
    "BankConfig.max_depth_m": ("keyframe depth beyond this is ignored (m)", (0.01, 100.0), False),
    "BankConfig.min_translation_m": ("keyframe gate: camera moved this far since the last keyframe ...",
                                     (0.0, 100.0), False),
    "BankConfig.min_rotation_deg": ("... or turned this much ...", (0.0, 180.0), False),
    "BankConfig.min_new_fraction": ("... and this fraction of what it sees is new", (0.0, 1.0), False),
    "BankConfig.min_voxels": ("frames seeing fewer voxels are not keyframes", (0, 1 << 30), False),
    "BankConfig.eviction": ("most_redundant | oldest", None, False),
    "ServiceConfig.max_queue": ("requests waiting at most; more are rejected at once", (1, 10000), False),
    "ServiceConfig.max_batch": ("requests decoded together", (1, 256), False),
    "ServiceConfig.batch_wait_s": ("how long the worker waits to fill a batch", (0.0, 10.0), True),
    "ServiceConfig.request_timeout_s": ("a request fails after this long (queue + generation)", (0.01, 86400.0),
                                        True),
    "ServiceConfig.num_views": ("views per request when the request says 0", (0, 64), True),
    "ServiceConfig.max_new_tokens": ("generation length cap when the request says 0", (1, 65536), True),
    "ServiceConfig.do_sample": ("sample instead of greedy decoding", None, True),
    "ServiceConfig.temperature": ("sampling temperature", (1e-4, 100.0), True),
    "ServiceConfig.top_p": ("nucleus sampling mass", (1e-6, 1.0), True),
    "ServiceConfig.lm_weights": ("float | int8: weight-only int8 language model, CPU only (faster decode)", None,
                                 False),
    "SelectorConfig.method": ("dynamic | uniform | random", None, False),
    "SelectorConfig.seed": ("random baseline seed", (0, 1 << 31), False),
    "SelectorConfig.relevance": ("relevance encoders: proposals, clip", None, False),
    "SelectorConfig.clip_model_dir": ("local CLIP/SigLIP directory ('' = none)", None, False),
    "SelectorConfig.weights_file": ("fitted view-selection weights (safetensors; '' = config weights)", None,
                                    False),
    "WeightsConfig.text": ("utility weight of request relevance", (0.0, 1000.0), False),
    "WeightsConfig.clip": ("utility weight of CLIP relevance", (0.0, 1000.0), False),
    "WeightsConfig.coverage": ("utility weight of scene coverage", (0.0, 1000.0), False),
    "WeightsConfig.region": ("utility weight of request-region coverage", (0.0, 1000.0), False),
    "WeightsConfig.redundancy": ("utility penalty of overlap with chosen views", (0.0, 1000.0), False),
}


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """{field: the comment on its line} from a dataclass's source (`x: float = 1.0  # metres`)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    line_field: dict[int, str] = {}
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    for i, tok in enumerate(toks[:-1]):
        nxt = toks[i + 1]
        if tok.type == tokenize.NAME and nxt.type == tokenize.OP and nxt.string == ":" and tok.start[1] > 0 \
                and (i == 0 or toks[i - 1].type in (tokenize.INDENT, tokenize.NEWLINE, tokenize.NL, tokenize.DEDENT)):
            line_field[tok.start[0]] = tok.string
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            out.setdefault(line_field[tok.start[0]], tok.string.lstrip("#").strip())
    return out


@dataclasses.dataclass
class ParamSpec:
    """One declared leaf: dotted name, python type, ROS type, default, doc, range, dynamic."""

    name: str
    tp: Any
    ros_type: int
    default: Any
    help: str
    range: tuple | None
    dynamic: bool
    optional: bool


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _ros_type(tp: Any, where: str) -> int:
    from rcl_interfaces.msg import ParameterType as PT

    if tp is bool:
        return PT.PARAMETER_BOOL
    if tp is int:
        return PT.PARAMETER_INTEGER
    if tp is float:
        return PT.PARAMETER_DOUBLE
    if tp is str:
        return PT.PARAMETER_STRING
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        items = {a for a in typing.get_args(tp) if a is not Ellipsis} or {str}
        if items == {str}:
            return PT.PARAMETER_STRING_ARRAY
        if items == {float}:
            return PT.PARAMETER_DOUBLE_ARRAY
        if items == {int}:
            return PT.PARAMETER_INTEGER_ARRAY
        if items == {bool}:
            return PT.PARAMETER_BOOL_ARRAY
    raise TypeError(f"parameter {where}: type {tp} has no ROS 2 parameter type")


def parameter_specs(cls: type, prefix: str = "") -> list[ParamSpec]:
    """The leaf parameters of a config dataclass (nested dataclasses flattened to dotted names)."""
    out: list[ParamSpec] = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = f"{prefix}{f.name}"
        tp, optional = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            out += parameter_specs(tp, name + ".")
            continue
        meta = dict(f.metadata)
        help_, rng, dyn = meta.get("help"), meta.get("range"), meta.get("dynamic", False)
        if help_ is None:
            fallback = field_comments(cls).get(f.name) or f"{cls.__name__}.{f.name} (see its r1_core docstring)"
            help_, rng, dyn = CORE_PARAM_DOCS.get(f"{cls.__name__}.{f.name}", (fallback, None, False))
        default = getattr(defaults, f.name)
        if default is None:
            default = "" if tp is str else []
        elif isinstance(default, tuple):
            default = list(default)
        out.append(ParamSpec(name, tp, _ros_type(tp, name), default, help_, rng, dyn, optional))
    return out


def descriptor(spec: ParamSpec):
    """The ParameterDescriptor of one spec: type, description, range, read_only."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    d = ParameterDescriptor(name=spec.name, type=spec.ros_type, description=spec.help,
                            read_only=not spec.dynamic)
    if spec.range is not None:
        lo, hi = spec.range
        if spec.ros_type == ParameterType.PARAMETER_DOUBLE:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
            d.additional_constraints = f"{lo} <= value <= {hi}"
        elif spec.ros_type == ParameterType.PARAMETER_INTEGER:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
            d.additional_constraints = f"{lo} <= value <= {hi}"
    return d


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return list(value)
    return value


def to_mapping(specs: list[ParamSpec], values: dict[str, Any]) -> dict:
    """Nested mapping for load_config from flat {dotted name: value} ("" / [] -> None where
    the field is Optional)."""
    out: dict = {}
    by_name = {s.name: s for s in specs}
    for name, value in values.items():
        value = _plain(value)
        spec = by_name[name]
        if spec.optional and value in ("", []):
            value = None
        node = out
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def check_range(spec: ParamSpec, value: Any) -> None:
    """ConfigError when a numeric value lies outside the spec's range (rclpy checks declared
    ranges itself; this is the same check for values that never pass through rclpy)."""
    if spec.range is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, hi = spec.range
    if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(f"{spec.name}: expected {lo} <= value <= {hi}, got {value}")


def flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def ros_value(spec: ParamSpec, value: Any) -> Any:
    """A config value as the parameter holds it: None -> "" / [], tuples -> lists, ints -> floats
    for double (array) parameters."""
    from rcl_interfaces.msg import ParameterType as PT

    if value is None:
        return "" if spec.ros_type == PT.PARAMETER_STRING else []
    if isinstance(value, tuple):
        value = list(value)
    if spec.ros_type == PT.PARAMETER_DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if spec.ros_type == PT.PARAMETER_DOUBLE_ARRAY and isinstance(value, list):
        return [float(v) for v in value]
    return value


class DataclassParameters:
    """Declares a config dataclass as ROS parameters on `node`, validates them into
    `self.config`, and validates run-time changes (calling `on_change(new_config)` when one
    is accepted). `defaults` (a nested mapping, e.g. configs.shared_defaults) replaces the
    dataclass defaults of the parameters it names."""

    def __init__(self, node, cls: type, on_change: Callable[[Any], None] | None = None,
                 defaults: dict | None = None):
        from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

        self.node, self.cls, self.on_change = node, cls, on_change
        self.specs = parameter_specs(cls)
        given = flatten(defaults or {})
        unknown = sorted(set(given) - {s.name for s in self.specs})
        if unknown:
            raise ConfigError(f"node {node.get_name()}: defaults for unknown parameters {unknown}")
        for spec in self.specs:
            if spec.name in given:
                spec.default = ros_value(spec, given[spec.name])
        self._by_name = {s.name: s for s in self.specs}
        values = {}
        for spec in self.specs:
            try:
                param = node.declare_parameter(spec.name, spec.default, descriptor(spec))
            except InvalidParameterTypeException as e:
                hint = " (write floats with a decimal point, e.g. 1.0)" if spec.tp is float else ""
                raise ConfigError(f"node {node.get_name()}: parameter {spec.name}: {e}{hint}") from None
            except InvalidParameterValueException as e:
                raise ConfigError(f"node {node.get_name()}: parameter {spec.name}: {e}; "
                                  f"{descriptor(spec).additional_constraints}") from None
            values[spec.name] = param.value
        self._values = values
        try:
            self.config = load_config(cls, to_mapping(self.specs, values))
        except ConfigError as e:
            raise ConfigError(f"node {node.get_name()}: {e}") from None
        node.add_on_set_parameters_callback(self._on_set)

    def _on_set(self, params):
        from rcl_interfaces.msg import SetParametersResult

        mine = [q for q in params if q.name in self._by_name]
        if not mine:
            return SetParametersResult(successful=True)
        values = dict(self._values)
        for q in mine:
            values[q.name] = q.value
        try:
            for q in mine:
                check_range(self._by_name[q.name], _plain(q.value))
            cfg = load_config(self.cls, to_mapping(self.specs, values))
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        self._values, self.config = values, cfg
        if self.on_change is not None:
            self.on_change(cfg)
        return SetParametersResult(successful=True)
