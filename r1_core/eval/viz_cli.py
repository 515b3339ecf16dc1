"""`r1 viz`: pictures of a scene and, optionally, a model's answer about it.

    r1 viz --synthetic-seed 3 --out out/viz                     # a synthetic room, GT boxes
    r1 viz --synthetic-seed 3 --objects 7,9 --pred answer.json --out out/viz
    r1 viz --scannet-root data/scannet/scannet_data --scene-id scene0000_00 --poses poses.npy \\
           --intrinsics 577.6,577.6,319.5,239.5,640,480 --out out/viz
    python -m r1_core.eval.viz_cli ...                         # the same without the entry point
    rerun out/viz/scene.rrd                                     # look at the recording

Writes OUT/scene.rrd (cloud, camera trajectory, keyframes, GT and predicted boxes, reasoning),
OUT/topdown.png and OUT/view.png (the cloud seen from the trajectory pose that sees the boxes
best; without poses, from a virtual camera above a corner of the scene).

--pred takes a JSON object: {"boxes": [[cx, cy, cz, dx, dy, dz, yaw], ...], "labels": [...],
"question": "...", "reasoning": "...", "answer": "..."}; only "boxes" is required.
--objects picks the ground-truth objects to draw (default: every object but walls, floor and
ceiling). --config reads VisualizeConfig from a YAML file (section `visualize` if present).
Synthetic scenes come from r1_core.data.synthetic (deterministic by seed) with a rendered
walk-through; ScanNet-preprocessed scenes from r1_core.data.scene.load_scannet_scene.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STRUCTURE_LABELS = ("wall", "floor", "ceiling")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _intrinsics(text: str) -> tuple[np.ndarray, int, int]:
    try:
        fx, fy, cx, cy, w, h = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fx,fy,cx,cy,width,height, got {text!r}") from None
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), int(w), int(h)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic-seed", type=int, help="render a synthetic room generated with this seed")
    src.add_argument("--scannet-root", type=Path, help="folder of ScanNet-preprocessed arrays, <scene>_vert.npy etc. "
                     "(a dataset root's scannet/scannet_data; with --scene-id)")
    p.add_argument("--scene-id", help="scene to load from --scannet-root")
    p.add_argument("--synthetic-kind", default=None, help="room kind of the synthetic scene (default: by seed)")
    p.add_argument("--objects", type=_int_list, default=None, help="ground-truth object ids to draw, e.g. 3,7")
    p.add_argument("--pred", type=Path, default=None, help="JSON with predicted boxes (+ labels, question, reasoning, answer)")
    p.add_argument("--poses", type=Path, default=None, help=".npy (F, 4, 4) T_map_optical camera trajectory")
    p.add_argument("--intrinsics", type=_intrinsics, default=None, help="fx,fy,cx,cy,width,height of --poses' camera")
    p.add_argument("--frames", type=int, default=60, help="synthetic walk-through length in frames")
    p.add_argument("--keyframes", type=int, default=4, help="synthetic keyframes rendered into the recording")
    p.add_argument("--config", type=Path, default=None, help="YAML with VisualizeConfig fields (section 'visualize' if present)")
    p.add_argument("--out", type=Path, required=True, help="output directory")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("viz", help="render a scene and an answer: rerun .rrd + top-down and best-view PNGs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def _load_pred(path: Path) -> dict:
    from r1_core.data.errors import DataFormatError
    from r1_core.geometry.boxes import is_box_list

    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataFormatError(path, f"not a readable JSON file: {e}") from None
    if not isinstance(doc, dict) or "boxes" not in doc:
        raise DataFormatError(path, "expected a JSON object with a 'boxes' list of [cx,cy,cz,dx,dy,dz,yaw]")
    raw = doc["boxes"]
    if not is_box_list(raw):
        raise DataFormatError(path, f"expected a list of boxes of 7 finite numbers (cx cy cz dx dy dz yaw), "
                                    f"got {raw!r:.80}", field="boxes")
    boxes = np.asarray(raw, dtype=np.float64).reshape(-1, 7)
    labels = doc.get("labels")
    if labels is not None and not (isinstance(labels, list) and len(labels) == len(boxes)):
        raise DataFormatError(path, f"expected a list of {len(boxes)} labels, one per box, got {labels!r:.80}",
                              field="labels")
    for key in ("question", "reasoning", "answer"):
        if key in doc and not isinstance(doc[key], str):
            raise DataFormatError(path, f"expected a string, got {type(doc[key]).__name__}", field=key)
    return {"boxes": boxes, "labels": labels, **{k: doc.get(k) for k in ("question", "reasoning", "answer")}}


def run(args: argparse.Namespace) -> int:
    from r1_core.config import load_config, read_yaml
    from r1_core.data.rgbd import look_at
    from r1_core.eval.visualize import Keyframe, VisualizeConfig, log_rrd, pick_best_view, render_topdown, render_view

    if args.config is not None:
        data = read_yaml(args.config)
        cfg = load_config(VisualizeConfig, data.get("visualize", data))
    else:
        cfg = VisualizeConfig()
    if args.frames < 1 or args.keyframes < 0:
        raise SystemExit(f"r1 viz: --frames must be >= 1 and --keyframes >= 0, got {args.frames}, {args.keyframes}")

    room = None
    if args.synthetic_seed is not None:
        from r1_core.data.synthetic.world import SynthConfig, generate_room

        room = generate_room(SynthConfig(), seed=args.synthetic_seed, kind=args.synthetic_kind)
        scene = room.to_scene()
    else:
        from r1_core.data.scene import load_scannet_scene

        if not args.scene_id:
            raise SystemExit("r1 viz: --scannet-root needs --scene-id")
        scene = load_scannet_scene(args.scannet_root, args.scene_id)

    if args.objects is None:
        objs = [o for o in scene.objects if o.label not in STRUCTURE_LABELS]
    else:
        known = {o.object_id for o in scene.objects}
        missing = [i for i in args.objects if i not in known]
        if missing:
            raise SystemExit(f"r1 viz: --objects: no object(s) {missing} in {scene.scene_id}; it has ids {sorted(known)}")
        objs = [scene.object(i) for i in args.objects]
    gt = np.stack([o.box for o in objs]).astype(np.float64) if objs else np.zeros((0, 7))
    gt_labels = [f"{o.label} #{o.object_id}" for o in objs]
    pred = _load_pred(args.pred) if args.pred else {"boxes": np.zeros((0, 7)), "labels": None,
                                                     "question": None, "reasoning": None, "answer": None}

    poses: list[np.ndarray] = []
    keyframes: list[Keyframe] = []
    K, w, h = np.array([[cfg.width * 0.8, 0, (cfg.width - 1) / 2], [0, cfg.width * 0.8, (cfg.height - 1) / 2],
                        [0, 0, 1.0]]), cfg.width, cfg.height
    if room is not None:
        from r1_core.data.synthetic.render import RenderConfig, make_renderer, walkthrough_poses

        rcfg = RenderConfig(noise=False)
        poses = walkthrough_poses(room, rcfg, n_frames=args.frames)
        renderer = make_renderer(room, rcfg)
        K, w, h = renderer.K, rcfg.width, rcfg.height
        picks = np.unique(np.linspace(0, len(poses) - 1, args.keyframes).round().astype(int)) if args.keyframes else []
        for i in picks:
            view = renderer.render(poses[i])
            keyframes.append(Keyframe(view.color, K, poses[i], depth=view.depth, name=f"frame {i}"))
    elif args.poses is not None:
        arr = np.load(args.poses)
        if arr.ndim != 3 or arr.shape[1:] != (4, 4):
            from r1_core.data.errors import DataFormatError

            raise DataFormatError(args.poses, f"expected (F, 4, 4) T_map_optical poses, got {arr.shape}")
        if args.intrinsics is None:
            raise SystemExit("r1 viz: --poses needs --intrinsics fx,fy,cx,cy,width,height")
        poses = list(arr)
        K, w, h = args.intrinsics

    focus = pred["boxes"] if len(pred["boxes"]) else gt
    if poses and len(focus):
        T_view = poses[pick_best_view(poses, K, w, h, focus)]
    else:   # a virtual camera above the scene's lower-left corner, looking at the boxes / the middle
        xyz = scene.points[:, :3].astype(np.float64)
        lo, hi = xyz.min(axis=0), xyz.max(axis=0)
        target = focus[:, :3].mean(axis=0) if len(focus) else (lo + hi) / 2
        T_view = look_at(np.array([lo[0] - 0.5, lo[1] - 0.5, hi[2] + 1.0]), target)

    args.out.mkdir(parents=True, exist_ok=True)
    rrd = log_rrd(args.out / "scene.rrd", scene.points, trajectory=poses, keyframes=keyframes,
                  pred_boxes=pred["boxes"], gt_boxes=gt, pred_labels=pred["labels"], gt_labels=gt_labels,
                  reasoning=pred["reasoning"], question=pred["question"], answer=pred["answer"], cfg=cfg,
                  recording_name=scene.scene_id)
    _, _ = render_topdown(scene.points, pred_boxes=pred["boxes"], gt_boxes=gt, pred_labels=pred["labels"],
                          gt_labels=gt_labels, cfg=cfg, path=args.out / "topdown.png")
    render_view(scene.points, K, T_view, w, h, pred_boxes=pred["boxes"], gt_boxes=gt, pred_labels=pred["labels"],
                gt_labels=gt_labels, cfg=cfg, path=args.out / "view.png")
    for p in (rrd, args.out / "topdown.png", args.out / "view.png"):
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m r1_core.eval.viz_cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
