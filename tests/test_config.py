"""r1_core.config: typed YAML configs with unknown keys and wrong types rejected by name."""
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from r1_core.config import ConfigError, config_to_dict, format_config, load_config


@dataclass
class Inner:
    rank: int = 8
    dropout: float = 0.0


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    limit: Optional[float] = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be > 0, got {self.limit}")


def test_yaml_nested_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: y\nsizes: [3, 4, 5]\ninner:\n  rank: 4\n")
    cfg = load_config(Outer, p, overrides={"inner.dropout": 0.1, "limit": 2})
    assert cfg == Outer(name="y", sizes=(3, 4, 5), limit=2.0, inner=Inner(rank=4, dropout=0.1))
    assert config_to_dict(cfg)["inner"] == {"rank": 4, "dropout": 0.1}
    assert "rank: 4" in format_config(cfg)


def test_unknown_key_named_with_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rnak'\] in inner .*valid keys: \['dropout', 'rank'\]"):
        load_config(Outer, {"inner": {"rnak": 3}})


@pytest.mark.parametrize("data, match", [
    ({"inner": {"rank": "8"}}, r"inner.rank: expected an integer, got '8'"),
    ({"inner": {"rank": True}}, r"inner.rank: expected an integer"),
    ({"mode": "c"}, r"mode: expected one of \['a', 'b'\], got 'c'"),
    ({"sizes": [1, "x"]}, r"sizes\[1\]: expected an integer"),
    ({"limit": -1}, r"limit must be > 0, got -1.0"),
])
def test_bad_values_named(data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, data)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(Outer, bad)


@dataclass
class Weights:
    weights: dict = field(default_factory=lambda: {"a": 1.0, "b": 1.0})
    steps: int = 1


@dataclass
class Run:
    stage: Weights = field(default_factory=lambda: Weights(steps=7))   # a factory that is not Weights()
    other: Weights = field(default_factory=Weights)


def test_a_dotted_override_into_a_dict_field_keeps_its_other_entries(tmp_path):
    """`stage.weights.c=2` adds to the default weights (it used to replace them all: only c
    left); a dict the YAML states is the YAML's; a nested factory's values are not reset."""
    cfg = load_config(Run, {}, overrides={"stage.weights.c": 2.0})
    assert cfg.stage.weights == {"a": 1.0, "b": 1.0, "c": 2.0} and cfg.stage.steps == 7
    assert cfg.other == Weights()
    cfg = load_config(Run, {}, overrides={"stage": {"weights": {"b": 0.0}}})
    assert cfg.stage.weights == {"a": 1.0, "b": 0.0} and cfg.stage.steps == 7
    y = tmp_path / "run.yaml"
    y.write_text("stage:\n  weights: {a: 3.0}\n")
    assert load_config(Run, y).stage.weights == {"a": 3.0}
    assert load_config(Run, y, overrides={"stage.weights.c": 2.0}).stage.weights == {"a": 3.0, "c": 2.0}
    assert load_config(Run, {}, overrides={"stage.steps": 2}).stage == Weights(steps=2)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nope'\]"):
        load_config(Run, {}, overrides={"stage.nope.x": 1})
