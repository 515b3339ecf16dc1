"""ROS pipeline benchmark: does the r1 graph keep up with a 30 Hz 640x480 RGB-D stream, and how
long does a planner wait for Ground / Ask answers?

    .venv/bin/python bench/ros.py                         # 300 frames, pixel strides 2 and 4
    .venv/bin/python bench/ros.py --frames 150 --strides 2 --requests 10
    .venv/bin/python bench/ros.py --model preset:smollm2-135m --requests 3

For each fusion pixel stride, `r1 up` (BringUp: rgbd_fusion, view_selector, scene_reasoner,
bag_replay - separate processes, as deployed) replays a synthetic walk-through bag of the demo
bedroom at its recorded 30 Hz. While it streams, a planner client sends a Ground or an Ask
request once a second (latency under load); after it, `--requests` more of each back to back
(idle latency).
Reported: frames in / fused / dropped by reason (FusionStatus), the largest backlog seen
(frames received but not yet fused or dropped), and request-to-answer latency p50 / p95 /
max measured at the client. The default model is the scripted tiny checkpoint of
r1_ros.testing (model time near zero: the numbers are the pipeline's own cost: DDS, queue,
scene encoding of the tiny encoder, view selection); `--model <checkpoint dir>` or
`--model preset:<name>` measures a real model. Writes
bench/results/ros-<date>-<device>.json and prints a table. The machine's 2 cores are shared
with other work: timings are noisy, run it twice before believing a difference.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_tag  # noqa: E402

REQUEST_PERIOD_S = 1.0


def make_bag(path: Path, frames: int) -> Path:
    """A `frames`-long 30 Hz walk-through of the demo bedroom as a rosbag2 (cached)."""
    from r1_core.data.synthetic.demo import write_demo_bag

    if (path / "metadata.yaml").is_file():
        return path
    tmp = path.with_name(path.name + ".tmp")
    write_demo_bag(tmp, frames)
    tmp.rename(path)
    return path


def pct(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs) * 1e3
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1)}


class Planner:
    def __init__(self):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        from r1_msgs.msg import FusionStatus
        from r1_ros import qos

        rclpy.init()
        self.node = rclpy.create_node("r1_bench_planner")
        self.status = None
        self.backlog = 0
        self.node.create_subscription(FusionStatus, "fusion_status", self._on_status, qos.STATUS)
        self.ex = MultiThreadedExecutor(num_threads=3)
        self.ex.add_node(self.node)
        self.th = threading.Thread(target=self.ex.spin, daemon=True)
        self.th.start()

    def _on_status(self, m) -> None:
        self.status = m
        self.backlog = max(self.backlog, int(m.frames_in - m.frames_fused - m.frames_dropped))

    def close(self) -> None:
        import rclpy

        self.ex.shutdown()
        self.th.join()
        self.node.destroy_node()
        rclpy.shutdown()

    def client(self, t, name, timeout=300.0):
        c = self.node.create_client(t, name)
        if not c.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {name} did not appear within {timeout} s")
        return c

    @staticmethod
    def timed(client, req, timeout=600.0) -> tuple[float, bool, str]:
        t0 = time.perf_counter()
        res = client.call(req, timeout_sec=timeout)
        return time.perf_counter() - t0, bool(res.success), res.message


def run_stride(stride: int, bag: Path, frames: int, model: dict, requests: int, tmp: Path) -> dict:
    from std_srvs.srv import Trigger

    from r1_msgs.srv import Ask, Ground
    from r1_ros.bringup import BringUp

    params = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    params["rgbd_fusion"]["ros__parameters"].setdefault("fusion", {})["pixel_stride"] = stride
    params["rgbd_fusion"]["ros__parameters"]["status_rate_hz"] = 10.0
    params["scene_reasoner"]["ros__parameters"].setdefault("service", {}).update(model.get("service", {}))
    params["scene_reasoner"]["ros__parameters"]["torch_threads"] = model.get("torch_threads", 0)
    pf = tmp / f"nodes-{stride}.yaml"
    pf.write_text(yaml.safe_dump(params))
    log = open(tmp / f"nodes-{stride}.log", "w")
    up = BringUp({"params_file": str(pf), "bag": str(bag), "bag_start_paused": "true", **model["launch"]},
                 stdout=log, stderr=log).start()
    planner = Planner()
    try:
        ground, ask = planner.client(Ground, "ground"), planner.client(Ask, "ask")
        resume = planner.client(Trigger, "/bag_replay/resume")
        gq, aq = Ground.Request(expression=model["ground"]), Ask.Request(question=model["ask"])
        resume.call(Trigger.Request(), timeout_sec=30)
        t0 = time.monotonic()
        loaded = {"ground": [], "ask": []}
        failures: list[str] = []

        last = {"key": None, "since": time.monotonic()}

        def done() -> bool:
            """The bag has played and every frame that arrived is fused or dropped, for 2 s."""
            s = planner.status
            if s is None or time.monotonic() - t0 < frames / 30.0:
                return False
            key = (s.frames_in, s.frames_fused, s.frames_dropped)
            if key != last["key"]:
                last["key"], last["since"] = key, time.monotonic()
            return s.frames_fused + s.frames_dropped >= s.frames_in and time.monotonic() - last["since"] > 2.0

        def ask_while_streaming() -> None:       # a planner asking once a second (own thread)
            i = 0
            while time.monotonic() - t0 < frames / 30.0:
                kind, cl, rq = ("ground", ground, gq) if i % 2 == 0 else ("ask", ask, aq)
                lat, ok, msg = planner.timed(cl, rq)
                loaded[kind].append(lat)
                if not ok:
                    failures.append(msg)
                i += 1
                time.sleep(max(0.0, t0 + i * REQUEST_PERIOD_S - time.monotonic()))

        requester = threading.Thread(target=ask_while_streaming, daemon=True)
        requester.start()
        while not done():
            if time.monotonic() - t0 > frames / 30.0 + 120:
                raise RuntimeError(f"stream not finished: {planner.status}")
            time.sleep(0.02)
        requester.join()
        stream_s = last["since"] - t0           # until the last frame was accounted for
        s = planner.status
        idle = {"ground": [], "ask": []}
        for _ in range(requests):
            for kind, cl, rq in (("ground", ground, gq), ("ask", ask, aq)):
                lat, ok, msg = planner.timed(cl, rq)
                idle[kind].append(lat)
                if not ok:
                    failures.append(msg)
        drops = dict(zip(s.drop_reasons, (int(c) for c in s.drop_counts)))
        return {"pixel_stride": stride, "frames_sent": frames, "frames_lost_in_transport": frames - int(s.frames_in),
                "frames_in": int(s.frames_in), "frames_fused": int(s.frames_fused),
                "frames_dropped": int(s.frames_dropped), "drops": drops, "max_backlog_frames": planner.backlog,
                "stream_s": round(stream_s, 2), "bag_s": round(frames / 30.0, 2),
                "fused_fps": round(s.frames_fused / stream_s, 1), "voxels": int(s.num_voxels),
                "keyframes": int(s.num_keyframes),
                "latency_under_stream": {k: pct(v) for k, v in loaded.items()},
                "latency_idle": {k: pct(v) for k, v in idle.items()},
                "failed_requests": len(failures), "failure_examples": sorted(set(failures))[:3]}
    finally:
        planner.close()
        codes = up.stop()
        log.close()
        if any(codes.values()):
            print(f"  unclean node exit: {codes}; see {tmp}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames of the 30 Hz bag (default 300 = 10 s)")
    ap.add_argument("--strides", type=int, nargs="+", default=[2, 4],
                    help="fusion pixel strides to run (2 = FusionConfig's default)")
    ap.add_argument("--requests", type=int, default=20, help="idle Ground and Ask requests each")
    ap.add_argument("--model", default="scripted", help="scripted | <checkpoint dir> | preset:<name>")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ros-<date>-<device>.json)")
    args = ap.parse_args()

    from r1_ros.graph import local_dds_environment
    from r1_ros.testing import ASK_TEXT, GROUND_TEXT, scripted_checkpoint

    os.environ.update(local_dds_environment())
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
    if args.model == "scripted":
        model = {"name": "scripted tiny checkpoint (r1_ros.testing)", "ground": GROUND_TEXT, "ask": ASK_TEXT,
                 "launch": {"checkpoint": str(scripted_checkpoint(num_views=2))}, "service": {"num_views": 2},
                 "torch_threads": 1}
    elif args.model.startswith("preset:"):
        name = args.model.split(":", 1)[1]
        model = {"name": f"preset {name} (untrained encoder)", "ground": "the red chair next to the bed",
                 "ask": "What colour is the chair next to the desk?", "launch": {"preset": name}}
    else:
        model = {"name": args.model, "ground": "the red chair next to the bed",
                 "ask": "What colour is the chair next to the desk?", "launch": {"checkpoint": args.model}}
    cache = Path(tempfile.gettempdir()) / "r1_bench_ros"
    cache.mkdir(exist_ok=True)
    bag = make_bag(cache / f"walk{args.frames}", args.frames)
    runs = []
    with tempfile.TemporaryDirectory(prefix="r1_bench_ros_") as tmp:
        for stride in args.strides:
            print(f"[bench ros] pixel stride {stride}: replaying {args.frames} frames at 30 Hz ...", flush=True)
            runs.append(run_stride(stride, bag, args.frames, model, args.requests, Path(tmp)))
    res = {"date": dt.date.today().isoformat(), "device": cpu_tag(), "model": model["name"], "frames": args.frames,
           "fps": 30, "resolution": "640x480", "requests_idle": args.requests, "runs": runs,
           "note": "separate processes per node (r1 up), shared-memory Fast DDS profile; 2 shared cores"}
    print(f"\n{'stride':>6} {'sent':>5} {'in':>5} {'fused':>6} {'dropped':>8} {'backlog':>8} {'fused/s':>8}   "
          f"{'Ground p50/p95 ms':>18} {'Ask p50/p95 ms':>16}   {'(under stream: Ground p50/p95)':>30}")
    for r in runs:
        gi, ai, gl = r["latency_idle"]["ground"], r["latency_idle"]["ask"], r["latency_under_stream"]["ground"]
        print(f"{r['pixel_stride']:>6} {r['frames_sent']:>5} {r['frames_in']:>5} {r['frames_fused']:>6} {r['frames_dropped']:>8} "
              f"{r['max_backlog_frames']:>8} {r['fused_fps']:>8}   {gi.get('p50_ms', '-'):>8}/{gi.get('p95_ms', '-'):<9} "
              f"{ai.get('p50_ms', '-'):>7}/{ai.get('p95_ms', '-'):<8}   {gl.get('p50_ms', '-'):>14}/{gl.get('p95_ms', '-')}")
        if r["drops"]:
            print(f"{'':>6} drops: {r['drops']}")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"ros-{res['date']}-{res['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
