"""`r1 data …`: synthetic datasets, bags, the Scene-30K engine and raw ScanNet preparation.

    r1 data synth --out data/synth --scenes 100 --val-scenes 20 --seed 0
    r1 data bag --scene synth0003_00 --dataset data/synth --out walk_bag --frames 300
    r1 data bag --demo --out demo_bag
    r1 data cot --dataset data/synth --split train --backend template
    r1 data cot --dataset data/synth --backend openai --base-url http://127.0.0.1:8000/v1 --model my-model
    r1 data prepare-scannet --scans /data/ScanNet/scans --out data/scannet_prepared
    r1 data demo-assets [--dir ~/.cache/r1/demo]

Settings come from config/data.yaml (sections synth, language, render, bag, cot); flags override.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "data.yaml"


def _cfg(args, cls, section: str, overrides: dict | None = None):
    from r1_core.config import load_config, read_yaml

    path = Path(args.config)
    if not path.is_file() and path != DEFAULT_CONFIG:
        raise SystemExit(f"r1 data: config file {path} not found")
    data = read_yaml(path) if path.is_file() else {}   # an installed package without config/: defaults
    return load_config(cls, {section: data.get(section) or {}}, overrides=overrides or {}, section=section)


def parse_room_ranges(text: str) -> list[int]:
    """"100-119,320-379" -> [100, ..., 119, 320, ..., 379]; names the bad part."""
    rooms: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or (sep and int(hi) < int(lo)):
            raise ValueError(f"{part!r}: expected a room index N or a range A-B with A <= B (e.g. 100-119,320-379)")
        rooms += range(int(lo), int(hi if sep else lo) + 1)
    if len(set(rooms)) != len(rooms):
        raise ValueError(f"{text!r}: the ranges overlap")
    return rooms


def _synth(args) -> int:
    from r1_core.config import format_config
    from r1_core.data.synthetic.dataset import write_dataset
    from r1_core.data.synthetic.language import LanguageConfig
    from r1_core.data.synthetic.world import SynthConfig

    cfg, lang = _cfg(args, SynthConfig, "synth"), _cfg(args, LanguageConfig, "language")
    print(format_config(cfg)); print(format_config(lang))
    if args.val_rooms is not None and (args.val_from is not None or args.val_scenes is not None):
        raise SystemExit("r1 data synth: --val-rooms names the held-out rooms; give it without --val-from "
                         "and --val-scenes")
    rooms = {}
    for flag in ("val_rooms", "train_rooms"):
        try:
            rooms[flag] = None if getattr(args, flag) is None else parse_room_ranges(getattr(args, flag))
        except ValueError as e:
            raise SystemExit(f"r1 data synth --{flag.replace('_', '-')}: {e}") from None
    try:   # --scenes defaults to the count of --train-rooms, else 100 (write_dataset's train_scenes)
        st = write_dataset(args.out, args.scenes, args.val_scenes, args.seed, cfg, lang, cot=not args.no_cot,
                           val_start=args.val_from, val_rooms=rooms["val_rooms"], train_rooms=rooms["train_rooms"])
    except ValueError as e:
        raise SystemExit(f"r1 data synth: {e}") from None
    print(f"wrote {sum(len(v) for v in st.scenes.values())} scenes to {args.out} in {st.seconds:.1f} s")
    for k, v in sorted(st.records.items()):
        print(f"  {k:24s} {v}")
    for k, (kept, rej) in st.cot.items():
        print(f"  scene30k {k:15s} kept {kept}, rejected {rej}")
    return 0


def _bag(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from r1_core.data.bags import BagConfig, write_bag
    from r1_core.data.rgbd import RGBDFrame
    from r1_core.data.synthetic.render import RenderConfig, make_renderer, walkthrough_poses
    from r1_core.data.synthetic.world import SynthRoom

    rcfg = _cfg(args, RenderConfig, "render", {"noise": not args.no_noise} if args.no_noise else None)
    bcfg = _cfg(args, BagConfig, "bag", {"storage": args.storage} if args.storage else None)
    if args.demo:
        from r1_core.data.synthetic.demo import demo_room
        room = demo_room()
    else:
        if not args.scene or not args.dataset:
            raise SystemExit("r1 data bag: give --demo, or --scene ID with --dataset DIR (a dataset written by `r1 data synth`)")
        room = SynthRoom.load_json(Path(args.dataset) / "synthetic" / f"{args.scene}.json")
    r = make_renderer(room, rcfg)
    poses = walkthrough_poses(room, rcfg, n_frames=args.frames, seed=args.seed)
    rng = np.random.default_rng(args.seed)

    def frames():
        for T in tqdm(poses, desc=f"render {room.scene_id}", unit="frame"):
            v = r.render(T, rng=rng)
            yield RGBDFrame(v.color, v.depth, r.K, T)

    write_bag(args.out, frames(), bcfg)
    print(f"wrote {len(poses)} frames of {room.scene_id} to {args.out} ({bcfg.storage})")
    return 0


def _cot(args) -> int:
    from r1_core.config import format_config
    from r1_core.data.cot import CotConfig, CotEngine

    over = {k: v for k, v in (("backend", args.backend), ("model_path", args.model_path), ("base_url", args.base_url),
                              ("model", args.model), ("max_per_scene", args.max_per_scene)) if v is not None}
    if args.sources:
        over["sources"] = [x.strip() for x in args.sources.split(",") if x.strip()]
    cfg = _cfg(args, CotConfig, "cot", over)
    print(format_config(cfg))
    st = CotEngine(cfg, args.dataset).run(args.split, args.out, None)
    print(f"kept {st.kept}, rejected {st.rejected} -> {st.out_path} (rejects: {st.reject_path})")
    for reason, n in st.reasons.most_common():
        print(f"  {reason}: {n}")
    return 0


def _prepare(args) -> int:
    from r1_core.data.scannet_raw import prepare_scannet

    ids = prepare_scannet(args.scans, args.out, label_map=args.label_map, scene_ids=args.scene or None)
    print(f"prepared {len(ids)} scans into {args.out}")
    return 0


def _demo_assets(args) -> int:
    from r1_core.data.synthetic.demo import ensure_demo_assets

    a = ensure_demo_assets(args.dir, progress=True)
    print(f"demo dataset: {a.dataset_root}\ndemo bag: {a.bag}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets: synthetic world, bags, Scene-30K CoT, ScanNet preparation")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML with sections synth/language/render/bag/cot")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    s = dsub.add_parser("synth", help="write a synthetic ScanNet-format dataset with all annotation files")
    s.add_argument("--out", required=True)
    s.add_argument("--scenes", type=int, default=None, help="training scenes (default: the count of --train-rooms, else 100)")
    s.add_argument("--val-scenes", type=int, default=None, help="held-out rooms (default 20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--val-from", type=int, default=None,
                   help="index of the first held-out room (default: after the training rooms); "
                        "--scenes 300 --val-from 100 keeps the held-out rooms of --scenes 100")
    s.add_argument("--val-rooms", help="the held-out rooms by index, e.g. 100-119,320-379 (the training rooms are "
                   "the first --scenes others: with --scenes 300 the same as --val-from 100's, with 60 more held out)")
    s.add_argument("--train-rooms", help="the training rooms by index instead of the first --scenes, e.g. "
                   "400-499 with --val-scenes 0: rooms no earlier stage saw, for GRPO's prompts (r1 train grpo --sft-pack)")
    s.add_argument("--no-cot", action="store_true", help="skip the template Scene-30K pass")
    s.set_defaults(func=_synth)

    b = dsub.add_parser("bag", help="render a walk-through of a synthetic scene into a ROS 2 bag")
    b.add_argument("--out", required=True, help="bag directory to create (rosbag2 layout)")
    b.add_argument("--scene", help="scene id in --dataset")
    b.add_argument("--dataset", help="dataset root written by `r1 data synth`")
    b.add_argument("--demo", action="store_true", help="use the bundled demo scene")
    b.add_argument("--frames", type=int, default=None, help="default: fps × duration_s from the render config")
    b.add_argument("--storage", choices=["mcap", "sqlite3"])
    b.add_argument("--no-noise", action="store_true", help="clean depth and colour")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_bag)

    c = dsub.add_parser("cot", help="run the Scene-30K CoT engine over a dataset")
    c.add_argument("--dataset", required=True)
    c.add_argument("--split", default="train")
    c.add_argument("--out", default=None, help="default: <dataset>/Scene-30K/scene30k_<split>.jsonl")
    c.add_argument("--backend", choices=["template", "transformers", "openai"])
    c.add_argument("--model-path", help="transformers backend: local model directory")
    c.add_argument("--base-url", help="openai backend: endpoint root, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--model", help="openai backend: model name")
    c.add_argument("--max-per-scene", type=int)
    c.add_argument("--sources", help="annotation sources to write CoT for, comma-separated (default: cot.sources of "
                   "--config: scanrefer,scanqa,sqa3d,3dllm_dialogue,3dllm_planning); e.g. scanrefer,scanqa "
                   "when the tree has no SQA3D or 3D-LLM files")
    c.set_defaults(func=_cot)

    r = dsub.add_parser("prepare-scannet", help="raw ScanNet scans → the preprocessed arrays")
    r.add_argument("--scans", required=True, help="directory of <scene>/ folders (ScanNet's scans/)")
    r.add_argument("--out", required=True)
    r.add_argument("--label-map", help="scannetv2-labels.combined.tsv (default: next to or inside --scans)")
    r.add_argument("--scene", action="append", help="only these scene ids (repeatable)")
    r.set_defaults(func=_prepare)

    d = dsub.add_parser("demo-assets", help="generate (or reuse) the demo dataset and bag")
    d.add_argument("--dir", default=None, help="default ~/.cache/r1/demo")
    d.set_defaults(func=_demo_assets)
