"""`r1 eval-bag`: evaluate the live ROS pipeline on a recorded bag — the numbers a robot gets.

    r1 eval-bag --bag ~/.cache/r1/demo/demo_bag --data ~/.cache/r1/demo/dataset --split val \
        --sources scanrefer scanqa --out runs/eval_bag --name "R1-nano (bag)"
    r1 eval-bag --demo --out runs/eval_bag_demo          # the bundled demo bag and its annotations

Brings the nodes up exactly as `r1 up bag:=…` does, replays the bag once with backpressure
(every frame is fused, however loaded the machine: r1_ros.demo.GraphSession), waits for the final
fused map, then asks every annotation of the bag's scene in the question files of the benchmarks
`r1 eval` scores (ScanRefer, ScanQA, 3D-LLM dialogue and planning) through the ROS interfaces —
grounding through `Ground`, questions and dialogue through `Ask` (with the history), planning
through the `Reason` action — and scores the answers with the same code as `r1 eval`
(training/evaluate.py), ground truth from the dataset's ScanNet arrays. A request that times out
(`--timeout`) is scored as a miss. Writes predictions.jsonl, results.json and results.md to --out,
which must not hold an earlier run's (unless --overwrite).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ASK_TASKS = ("qa", "dialogue")
# the annotation sources whose benchmark training/evaluate.py scores (Nr3D and SQA3D have metrics of
# their own: scored as ScanRefer / ScanQA they would pass for those)
SCORED_SOURCES = ("scanrefer", "scanqa", "3dllm_dialogue", "3dllm_planning")
START_TIMEOUT_S = 600.0      # for the nodes' services: the model load (node deaths are noticed at once)


def _box_array(msgs) -> list[list[float]]:
    return [[b.center.x, b.center.y, b.center.z, b.size.x, b.size.y, b.size.z, b.yaw] for b in msgs]


def _samples(data: Path, split: str, sources: list[str], scene_id: str | None):
    from r1_core.data.tasks import load_task_samples

    samples = load_task_samples(data, split, sources=sources)
    ids = sorted({s.scene_id for s in samples})
    if scene_id is None:
        if len(ids) != 1:
            raise SystemExit(f"r1 eval-bag: the question files cover scenes {ids[:10]}; name the bag's with --scene-id")
        scene_id = ids[0]
    chosen = [s for s in samples if s.scene_id == scene_id and s.task in ("grounding", "planning", *ASK_TASKS)
              and (s.task == "grounding" or s.answers)]      # a question without an answer cannot be scored
    if not chosen:
        raise SystemExit(f"r1 eval-bag: no grounding/qa/dialogue/planning annotation of {scene_id} in {sources}")
    return scene_id, chosen


def _plan(planner, reason, text: str, timeout: float, alive):
    """A `Reason` planning goal's result and its time; (None, time) when it takes longer than
    `timeout` (the goal is cancelled, and the next request goes on)."""
    from r1_msgs.action import Reason

    fut = reason.send_goal_async(Reason.Goal(task=Reason.Goal.TASK_PLANNING, text=text))
    planner.wait_for("goal acceptance", fut.done, 30, alive)
    t0 = time.monotonic()
    handle = fut.result()
    rf = handle.get_result_async()
    try:
        planner.wait_for("the plan", rf.done, timeout, alive)
    except RuntimeError:
        if alive():          # a node died: the run cannot go on
            raise
        cancel = handle.cancel_goal_async()
        planner.wait_for("the cancellation", lambda: cancel.done() and rf.done(), 60, alive)
        return None, time.monotonic() - t0
    return rf.result().result, time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    from r1_ros.graph import local_dds_environment

    os.environ.update(local_dds_environment())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training.evaluate import refuse_earlier_run, score, write_predictions

    out = Path(args.out)
    refuse_earlier_run(out, ["predictions.jsonl", "results.json", "results.md"], args.overwrite, "r1 eval-bag")
    out.mkdir(parents=True, exist_ok=True)
    if args.demo:
        from r1_core.data.synthetic.demo import ensure_demo_assets

        assets = ensure_demo_assets(args.assets)
        bag, data = assets.bag, assets.dataset_root
    else:
        if not (args.bag and args.data):
            raise SystemExit("r1 eval-bag: give --bag and --data (or --demo)")
        bag, data = Path(args.bag), Path(args.data)
        if not (bag / "metadata.yaml").is_file():
            raise SystemExit(f"r1 eval-bag: --bag {bag}: not a rosbag2 directory (no metadata.yaml in it)")
    scene_id, all_samples = _samples(data, args.split, args.sources, args.scene_id)
    samples = all_samples[: args.limit] if args.limit else all_samples

    from r1_core.data.bags import BagConfig, color_frame_count
    from r1_ros.graph import resolve_topic
    from r1_core.data.scene import load_scannet_scene
    from r1_core.data.tasks import DatasetLayout
    from r1_core.eval.grounding import scanrefer_class, scanrefer_unique_lookup
    from r1_core.eval.report import save_report
    from r1_ros.demo import GraphSession

    scene = load_scannet_scene(DatasetLayout(data).scannet_dir, scene_id)
    camera = {"camera_namespace": args.camera_namespace, "color_topic": args.color_topic,
              "depth_topic": args.depth_topic, "info_topic": args.info_topic}
    color_topic = resolve_topic(args.camera_namespace, args.color_topic)
    n_frames = color_frame_count(bag, BagConfig(color_topic=color_topic))
    if n_frames == 0:
        raise SystemExit(f"r1 eval-bag: {bag} has no message on {color_topic}; name its camera topics with "
                         "--camera-namespace / --color-topic / --depth-topic / --info-topic")
    # ScanRefer's unique/multiple split: over the objects the scene's descriptions refer to
    unique = scanrefer_unique_lookup((scene_id, s.object_ids[0], scanrefer_class(scene.object(s.object_ids[0]).nyu40_id))
                                     for s in all_samples if s.task == "grounding")
    launch = {"bag": str(bag), "device": args.device, **camera}
    if args.checkpoint:
        launch["checkpoint"] = args.checkpoint
    if args.params_file:
        launch["params_file"] = args.params_file
    session = GraphSession(launch, out / "nodes.log")
    preds: list[dict] = []
    t0 = time.monotonic()
    try:
        with session:
            planner, alive = session.planner, session.alive
            from r1_msgs.action import Reason
            from r1_msgs.srv import Ask, Ground

            ground = planner.client(Ground, "ground", START_TIMEOUT_S, alive)
            ask = planner.client(Ask, "ask", START_TIMEOUT_S, alive)
            reason = planner.action_client(Reason, "reason")
            planner.replay(n_frames, alive, fuse_timeout=1800, cloud_timeout=300)
            fusion = planner.fusion_summary()
            print(f"[r1 eval-bag] {planner.fusion_line(fusion)}", flush=True)
            print(f"[r1 eval-bag] map ready after {time.monotonic() - t0:.0f} s; {len(samples)} requests on {scene_id}",
                  flush=True)
            for i, s in enumerate(samples):
                history = [t.split(": ", 1)[1] if ": " in t else t for t in s.history]
                rec = {"task": s.task, "scene_id": scene_id, "question": s.question,
                       "references": s.answers, "gt_boxes": s.boxes.tolist(), "object_ids": s.object_ids,
                       "source": s.meta.get("source", ""), "boxes": [], "answer": "", "reasoning": ""}
                if s.task == "grounding":
                    res, dt = planner.call(ground, Ground.Request(expression=s.question), args.timeout)
                    rec["unique"] = unique[(scene_id, s.object_ids[0])]
                elif s.task == "planning":
                    res, dt = _plan(planner, reason, s.question, args.timeout, alive)
                else:
                    res, dt = planner.call(ask, Ask.Request(question=s.question, history=history), args.timeout)
                ok = res is not None and bool(res.success)
                if res is not None:
                    plain = " ".join(re.sub(r"<box>.*?</box>", " ", res.answer).split())
                    rec.update(answer=plain, reasoning=res.reasoning, boxes=_box_array(res.boxes), message=res.message)
                rec.update(well_formed=ok, latency_s=dt)
                preds.append(rec)
                print(f"[r1 eval-bag] {i + 1}/{len(samples)} {s.task}: {'ok' if ok else 'failed'} ({dt:.1f} s)",
                      flush=True)
    except RuntimeError as e:
        print(f"[r1 eval-bag] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    write_predictions(preds, out / "predictions.jsonl")
    results = score(preds)
    meta = {"bag": str(bag), "scene_id": scene_id, "data": str(data), "split": args.split, "sources": args.sources,
            "checkpoint": args.checkpoint or "R1-nano (bundled)", "params_file": args.params_file or "config/nodes.yaml",
            "device": args.device, "limit": args.limit, "timeout_s": args.timeout, "requests": len(preds),
            "fusion": fusion, "latency_p50_s": float(np.median([p["latency_s"] for p in preds]))}
    _, md = save_report(out, {args.name: results}, meta=meta)
    print(md.read_text())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-bag", help="run the ROS nodes on a bag and score their answers to a question file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", help="rosbag2 directory of the scene")
    p.add_argument("--data", help="dataset root (DatasetLayout) holding the question files and the scene's arrays")
    p.add_argument("--demo", action="store_true", help="use the bundled demo bag and its annotations")
    p.add_argument("--assets", default=None, help="demo asset cache (default: ~/.cache/r1/demo)")
    p.add_argument("--split", default="val")
    p.add_argument("--sources", nargs="+", default=["scanrefer", "scanqa"], choices=SCORED_SOURCES,
                   help="annotation sources to ask")
    p.add_argument("--scene-id", help="the bag's scene (needed when the files cover several scenes)")
    p.add_argument("--checkpoint", default="", help="r1 checkpoint (default: the bundled R1-nano)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--params-file", default="", help="node parameters (default: config/nodes.yaml)")
    from r1_ros.graph import LAUNCH_ARGUMENTS

    for a in LAUNCH_ARGUMENTS:       # the bag's camera topics, as the launch arguments name them
        if a.name in ("camera_namespace", "color_topic", "depth_topic", "info_topic"):
            p.add_argument(f"--{a.name.replace('_', '-')}", default=a.default, help=f"{a.description} (default: {a.default})")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request; a request that takes longer "
                   "is scored as a miss")
    p.add_argument("--limit", type=int, default=0, help="only the first N requests")
    p.add_argument("--name", default="r1 (bag)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in --out")
    p.set_defaults(func=run)
