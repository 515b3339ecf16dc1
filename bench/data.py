"""Benchmark of the data layer: synthetic scenes per minute and rendered RGB-D frames per second.

    .venv/bin/python bench/data.py                 # 20 scenes, 5 rooms × 60 frames at 640×480
    .venv/bin/python bench/data.py --scenes 120    # the full 100 + 20 training set

Prints a table and writes bench/results/data-<date>-<device>.json. Targets (issue 3):
≥ 30 rendered frames/s at 640×480 on 2 cores; a 100-scene training set in under 10 minutes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_tag  # noqa: E402

from r1_core.data.bags import BagConfig, write_bag  # noqa: E402
from r1_core.data.rgbd import RGBDFrame  # noqa: E402
from r1_core.data.synthetic.dataset import write_dataset  # noqa: E402
from r1_core.data.synthetic.render import RenderConfig, make_renderer, walkthrough_poses  # noqa: E402
from r1_core.data.synthetic.world import generate_room  # noqa: E402




def bench_render(rooms: int, frames: int, backend: str, noise: bool) -> dict:
    times = []
    for s in range(rooms):
        room = generate_room(seed=100 + s)
        cfg = RenderConfig(backend=backend, noise=noise)
        r = make_renderer(room, cfg)
        poses = walkthrough_poses(room, cfg, n_frames=frames, seed=s)
        rng = np.random.default_rng(s)
        r.render(poses[0], rng=rng)  # warm-up
        t = time.perf_counter()
        for T in poses:
            r.render(T, rng=rng)
        times.append((time.perf_counter() - t) / len(poses))
    ms = 1000 * np.asarray(times)
    return {"backend": backend, "noise": noise, "frames": rooms * frames, "ms_per_frame": float(ms.mean()),
            "fps": float(1000 / ms.mean()), "worst_room_fps": float(1000 / ms.max())}


def bench_bag(frames: int) -> dict:
    room = generate_room(seed=7)
    cfg = RenderConfig()
    r = make_renderer(room, cfg)
    poses = walkthrough_poses(room, cfg, n_frames=frames)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        write_bag(Path(d) / "b", (RGBDFrame(v.color, v.depth, r.K, T) for T in poses for v in [r.render(T, rng=rng)]), BagConfig())
        dt = time.perf_counter() - t
    return {"frames": frames, "fps_render_and_write_mcap": frames / dt}


def bench_scenes(n: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        st = write_dataset(d, train_scenes=n, val_scenes=0, seed=0, progress=False)
        dt = time.perf_counter() - t
    per_min = 60.0 * n / dt
    return {"scenes": n, "seconds": dt, "scenes_per_minute": per_min, "projected_100_scene_minutes": 100 / per_min,
            "records": st.records, "cot_kept_rejected": st.cot.get("train")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--rooms", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--no-raycast", action="store_true", help="skip the (slow) open3d reference renderer")
    ap.add_argument("--no-bag", action="store_true", help="skip the bag benchmark (machines without rosbags)")
    ap.add_argument("--tag", default="", help="appended to the device name in the results file")
    args = ap.parse_args()
    res = {"date": datetime.date.today().isoformat(), "device": cpu_tag(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "loadavg_before": os.getloadavg(), "render": []}
    res["render"].append(bench_render(args.rooms, args.frames, "boxes", True))
    res["render"].append(bench_render(args.rooms, args.frames, "boxes", False))
    if not args.no_raycast:
        res["render"].append(bench_render(2, 20, "raycast", False))
    if args.tag:
        res["device"] += "-" + args.tag
    res["bag"] = None if args.no_bag else bench_bag(60)
    res["scenes"] = bench_scenes(args.scenes)
    print(f"{'what':44s} {'value':>10s}")
    for r in res["render"]:
        print(f"render 640x480 {r['backend']:8s} noise={str(r['noise']):5s} fps {'':9s} {r['fps']:10.1f}"
              f"   ({r['ms_per_frame']:.1f} ms/frame, worst room {r['worst_room_fps']:.1f} fps)")
    if res["bag"]:
        print(f"{'render + write mcap bag, frames/s':44s} {res['bag']['fps_render_and_write_mcap']:10.1f}")
    s = res["scenes"]
    print(f"{'synthetic scenes per minute':44s} {s['scenes_per_minute']:10.1f}   ({s['scenes']} scenes in {s['seconds']:.1f} s)")
    print(f"{'projected 100-scene training set, minutes':44s} {s['projected_100_scene_minutes']:10.2f}")
    res["loadavg_after"] = os.getloadavg()   # other jobs on the 2 cores skew every figure: keep the load
    print(f"load average before/after: {res['loadavg_before'][0]:.1f} / {res['loadavg_after'][0]:.1f} (on {os.cpu_count()} cores)")
    out = ROOT / "bench" / "results" / f"data-{res['date']}-{res['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
