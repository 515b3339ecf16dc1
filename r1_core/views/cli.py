"""`r1 views …`: fit and evaluate dynamic view selection on synthetic walk-throughs.

    r1 views fit --data data/synth --out runs/views/weights.safetensors
    r1 views fit --synthetic-tours 12 --seed 0 --out runs/views/weights.safetensors   # no dataset dir
    r1 views eval --data data/synth --split val --weights runs/views/weights.safetensors

Settings come from config/views.yaml (sections bank, selector, walk, fit; `--config` to use
another file, `--set section.key=value` to override). The fitted weights file holds the
`view_selection.*` tensors (select.ViewScorerWeights), the keys a model checkpoint's
extra.safetensors carries.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = "config/views.yaml"


def _overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for it in items:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise SystemExit(f"--set expects section.key=value, got {it!r}")
        key, value = it.split("=", 1)
        section, name = key.split(".", 1)
        import yaml

        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def load_settings(path: str | None, overrides: list[str]):
    """(BankConfig, SelectorConfig, WalkConfig, FitConfig) from the YAML file (or defaults)."""
    from r1_core.config import ConfigError, format_config, load_config, read_yaml
    from r1_core.views.bank import BankConfig
    from r1_core.views.evaluate import WalkConfig
    from r1_core.views.fit import FitConfig
    from r1_core.views.select import SelectorConfig

    data: dict = {}
    if path is not None:
        data = read_yaml(path)
    elif Path(DEFAULT_CONFIG).is_file():
        data = read_yaml(DEFAULT_CONFIG)
    sections = {"bank": BankConfig, "selector": SelectorConfig, "walk": WalkConfig, "fit": FitConfig}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{path or DEFAULT_CONFIG}: unknown section(s) {unknown}; valid: {sorted(sections)}")
    ov = _overrides(overrides)
    bad = sorted(set(ov) - set(sections))
    if bad:
        raise ConfigError(f"--set: unknown section(s) {bad}; valid: {sorted(sections)}")
    cfgs = [load_config(cls, data.get(name) or {}, overrides=ov.get(name)) for name, cls in sections.items()]
    for c in cfgs:
        print(format_config(c), file=sys.stderr)
    return cfgs


def _episodes(args, bank_cfg, walk, split: str, seed_offset: int = 0):
    from r1_core.views.evaluate import dataset_episodes, synthetic_episodes

    if args.data:
        return dataset_episodes(args.data, split, bank_cfg, walk, max_scenes=args.max_scenes)
    return synthetic_episodes(args.synthetic_tours, args.seed + seed_offset, bank_cfg, walk)


def _collect(gen, what: str) -> list:
    from tqdm import tqdm

    return list(tqdm(gen, desc=f"walk-throughs ({what})", unit="tour"))


def cmd_fit(args) -> int:
    from r1_core.views.fit import evaluate_weights, fit_weights, prepare
    from r1_core.views.select import DynamicSelector, ViewScorerWeights

    bank_cfg, sel_cfg, walk, fit_cfg = load_settings(args.config, args.set)
    t0 = time.perf_counter()
    train = _collect(_episodes(args, bank_cfg, walk, args.split), args.split)
    sel = DynamicSelector(None, sel_cfg)
    data = prepare(train, sel, fit_cfg.k, fit_cfg.visible_fraction)
    print(f"[views fit] {len(train)} tours, {data.n_requests} requests ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    weights, log = fit_weights(data, fit_cfg, init=sel.weights)
    report = {"train": {"initial": log.initial, "final": log.final, "requests": data.n_requests}}
    if args.val_split:
        val = _collect(_episodes(args, bank_cfg, walk, args.val_split, seed_offset=100_000), args.val_split)
        vdata = prepare(val, sel, fit_cfg.k, fit_cfg.visible_fraction)
        report["val"] = {"initial": evaluate_weights(vdata, sel.weights.weights().detach().numpy(), fit_cfg),
                         "final": evaluate_weights(vdata, weights.weights().detach().numpy(), fit_cfg),
                         "requests": vdata.n_requests}
    out = weights.save(args.out)
    report["weights_file"] = str(out)
    report["steps"] = log.steps
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        Path(args.log).write_text(json.dumps(report, indent=1))
    brief = {k: v for k, v in report.items() if k != "steps"}
    print(json.dumps(brief, indent=1))
    return 0


def cmd_eval(args) -> int:
    from r1_core.views.evaluate import hit_rates
    from r1_core.views.select import DynamicSelector, RandomSelector, UniformSelector, ViewScorerWeights

    bank_cfg, sel_cfg, walk, fit_cfg = load_settings(args.config, args.set)
    eps = _collect(_episodes(args, bank_cfg, walk, args.split), args.split)
    weights = ViewScorerWeights.load(args.weights) if args.weights else None
    sels = {"dynamic": DynamicSelector(None, sel_cfg, weights=weights), "uniform": UniformSelector(None),
            "random": RandomSelector(None, sel_cfg.seed)}
    rates = hit_rates(eps, sels, args.k, walk.visible_fraction)
    text = json.dumps(rates, indent=1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    print(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("views", help="dynamic view selection: fit weights, evaluate on synthetic walk-throughs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vs = p.add_subparsers(dest="views_command", metavar="SUBCOMMAND", required=True)

    def common(q: argparse.ArgumentParser, split: str) -> None:
        src = q.add_mutually_exclusive_group(required=True)
        src.add_argument("--data", help="synthetic dataset dir (r1_core.data.synthetic.dataset layout)")
        src.add_argument("--synthetic-tours", type=int, help="generate this many tours in-process instead")
        q.add_argument("--split", default=split, help=f"dataset split (default {split})")
        q.add_argument("--max-scenes", type=int, default=None, help="use at most this many scenes of the split")
        q.add_argument("--seed", type=int, default=0, help="first room seed with --synthetic-tours")
        q.add_argument("--config", default=None, help=f"YAML with sections bank/selector/walk/fit (default {DEFAULT_CONFIG})")
        q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting")

    f = vs.add_parser("fit", help="fit the utility weights (writes view_selection.* safetensors)")
    common(f, "train")
    f.add_argument("--val-split", default=None, help="also report the fit on this split (e.g. val)")
    f.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    f.add_argument("--log", default=None, help="write the fit log (JSON) here")
    f.set_defaults(func=cmd_fit)

    e = vs.add_parser("eval", help="hit rates of dynamic / uniform / random selection")
    common(e, "val")
    e.add_argument("--weights", default=None, help="fitted weights (default: selector.weights of the config)")
    e.add_argument("--k", type=int, default=4, help="views per request (default 4)")
    e.add_argument("--json", default=None, help="write the rates (JSON) here")
    e.set_defaults(func=cmd_eval)
