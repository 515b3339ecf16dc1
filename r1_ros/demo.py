"""`r1 demo` (what `make demo` runs): the whole robot pipeline on the bundled synthetic bedroom.

    r1 demo                                   # default model, results in demo_output/
    r1 demo --checkpoint runs/nano/final      # another model
    r1 demo --out /tmp/demo --device cuda
    r1 demo --ground "the lamp on the night stand" --question "how many chairs are there?"

1. builds (or reuses) the demo scene and its RGB-D bag (r1_core.data.synthetic.demo, cached in
   ~/.cache/r1/demo);
2. brings up rgbd_fusion, view_selector, scene_reasoner and bag_replay exactly as `r1 up`
   does (node output goes to <out>/nodes.log), and replays the bag once with backpressure
   (bag_wait_for_fusion: every frame is fused, however loaded the machine; only slower);
3. acts as a planner over ROS: Ground ("the red chair next to the bed"), Ask (a question about
   the room) and the Reason action with a planning task, streaming its reasoning as it is
   generated; prints every answer with its boxes and reasoning;
4. writes <out>/results.json and <out>/scene.png (top-down view of the fused cloud with the
   answers' boxes, dashed red, and the ground-truth boxes of the objects the requests name,
   green);
5. shuts the graph down with SIGINT and exits 0 when every request was answered over ROS
   (an answer may be a failure the model caused, e.g. malformed output: it is printed as such).

The default model is the bundled R1-nano checkpoint (r1_core/assets/r1-nano); without it the
demo stops and says so (`--preset smollm2-135m` runs the pipeline with an untrained encoder).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

GROUND = "the red chair next to the bed"
QUESTION = "What colour is the chair next to the desk?"
PLAN = "bring the green pillow to the red chair"
QUIET_S = 4.0           # no new cloud for this long after the replay: the map is final


def named_objects(scene, texts: list[str]) -> list:
    """Ground-truth objects the requests name: "<colour> <label>" phrases, and labels that are
    unique in the scene (structure classes excluded)."""
    out = []
    counts: dict[str, int] = {}
    for o in scene.objects:
        counts[o.label] = counts.get(o.label, 0) + 1
    for o in scene.objects:
        if o.label in ("wall", "floor", "ceiling") or o in out:
            continue
        for t in (x.lower() for x in texts):
            if (o.color and f"{o.color} {o.label}" in t) or (counts[o.label] == 1 and f" {o.label}" in f" {t}"):
                out.append(o)
                break
    return out


def _box_dicts(msgs) -> list[dict]:
    return [{"label": b.label, "center": [b.center.x, b.center.y, b.center.z], "size": [b.size.x, b.size.y, b.size.z],
             "yaw": b.yaw, "frame_id": b.header.frame_id} for b in msgs]


def _print_answer(kind: str, request: str, rec: dict) -> None:
    print(f"\n=== {kind}: {request!r}  ({rec['latency_s']:.1f} s)")
    if not rec["success"]:
        print(f"  failed: {rec['message']}")
        return
    if rec["reasoning"]:
        print(f"  reasoning: {rec['reasoning']}")
    print(f"  answer:    {rec['answer']}")
    for k, b in enumerate(rec["boxes"]):        # [k] in a plan step is box k
        c, s = b["center"], b["size"]
        print(f"  box {k} [{b['frame_id']}] {b['label'] or '?':<12} centre ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) m, "
              f"size {s[0]:.2f} x {s[1]:.2f} x {s[2]:.2f} m, yaw {b['yaw']:.2f}")
    for i, step in enumerate(rec.get("steps") or [], 1):
        print(f"  step {i}: {step}")


class Planner:
    """The demo's ROS client: waits for the graph, drives the replay, calls the services."""

    def __init__(self):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import PointCloud2

        from r1_msgs.msg import FusionStatus
        from r1_ros import qos

        rclpy.init(args=None)
        self.node = rclpy.create_node("r1_demo_planner")
        self.status = None
        self.cloud = None
        self.cloud_time = 0.0
        self.node.create_subscription(FusionStatus, "fusion_status", self._on_status, qos.STATUS)
        self.node.create_subscription(PointCloud2, "fused_cloud", self._on_cloud, qos.CLOUD)
        self.action_clients: list = []
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_status(self, msg) -> None:
        self.status = msg

    def _on_cloud(self, msg) -> None:
        self.cloud, self.cloud_time = msg, time.monotonic()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join()
        # action clients go only once the executor has stopped: destroyed while it spins, a
        # pending task of theirs fails ("cannot use Destroyable ...") and is logged at exit
        for c in self.action_clients:
            c.destroy()
        self.node.destroy_node()
        rclpy.shutdown()

    def wait_for(self, what: str, cond, timeout: float, alive) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            problem = alive()
            if problem:
                raise RuntimeError(f"while waiting for {what}: {problem}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)

    def client(self, srv_type, name: str, timeout: float, alive):
        c = self.node.create_client(srv_type, name)
        self.wait_for(f"service {name}", lambda: c.service_is_ready(), timeout, alive)
        return c

    def fusion_summary(self) -> dict:
        """rgbd_fusion's latest status as a plain dict (frames in / fused / fused at an older pose /
        dropped by reason, map size)."""
        s = self.status
        if s is None:
            raise RuntimeError("no fusion_status received from rgbd_fusion yet")
        return {"frames_in": s.frames_in, "frames_fused": s.frames_fused, "frames_older_pose": s.frames_older_pose,
                "frames_dropped": s.frames_dropped,
                "drops": dict(zip(s.drop_reasons, (int(c) for c in s.drop_counts))), "num_voxels": s.num_voxels,
                "num_keyframes": s.num_keyframes}

    def fusion_line(self, f: dict) -> str:
        """One line of `f` (a fusion_summary()) and the size of the latest cloud."""
        cloud = f"; cloud of {self.cloud.width} points" if self.cloud is not None else ""
        older = f", {f['frames_older_pose']} at an older pose" if f["frames_older_pose"] else ""
        return (f"fused {f['frames_fused']}/{f['frames_in']} frames (dropped: {f['drops'] or 'none'}{older}), "
                f"{f['num_voxels']} voxels, {f['num_keyframes']} keyframes{cloud}")

    def action_client(self, action_type, name: str):
        """An rclpy ActionClient on the planner's node, destroyed by close()."""
        from rclpy.action import ActionClient

        c = ActionClient(self.node, action_type, name)
        self.action_clients.append(c)
        return c

    def call(self, client, request, timeout: float):
        t0 = time.monotonic()
        try:
            res = client.call(request, timeout_sec=timeout)
        except TimeoutError:
            res = None
        return res, time.monotonic() - t0

    def replay(self, n_frames: int, alive, fuse_timeout: float, cloud_timeout: float) -> None:
        """Resume the paused bag_replay and return once its `n_frames` frames are fused (or
        dropped) and the final cloud is out: the refined cloud rgbd_fusion publishes when the
        stream pauses (cloud_refine: idle), after which no cloud comes for QUIET_S. The replay
        waits for fusion frame by frame (GraphSession), so no frame is dropped as overload; if
        fusion stalls, bag_replay exits naming the frame and alive() reports it."""
        from std_srvs.srv import Trigger

        resume = self.client(Trigger, "/bag_replay/resume", 120, alive)
        self.call(resume, Trigger.Request(), 30)

        def replayed() -> bool:
            s = self.status
            return s is not None and s.frames_in >= n_frames and s.frames_fused + s.frames_dropped >= s.frames_in

        self.wait_for("the replay to be fused", replayed, fuse_timeout, alive)
        t_fused = time.monotonic()
        self.wait_for("the final fused cloud", lambda: self.cloud_time > t_fused
                      and time.monotonic() - self.cloud_time > QUIET_S, cloud_timeout, alive)


class GraphSession:
    """The r1 nodes brought up as `r1 up` does plus a Planner client, for the commands that
    drive them over an offline bag (r1 demo, r1 eval-bag). The bag replay starts paused
    (Planner.replay resumes it) and runs with backpressure (bag_wait_for_fusion): each frame
    waits until rgbd_fusion has finished the earlier ones, so the fused map, and the answers,
    do not depend on the machine's load. Use as a context manager: on exit the planner closes,
    the nodes stop (their exit codes in `exit_codes`) and the log closes."""

    OFFLINE_REPLAY = {"bag_start_paused": "true", "bag_wait_for_fusion": "true"}

    def __init__(self, launch: dict, log_path: Path):
        from r1_ros.bringup import BringUp

        if not launch.get("bag"):
            raise ValueError("GraphSession drives a bag replay: give the launch argument 'bag'")
        launch = {**launch, **self.OFFLINE_REPLAY}
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.graph = BringUp(launch, stdout=self.log, stderr=self.log)
        self.planner: Planner | None = None
        self.exit_codes: dict[str, int] = {}

    def __enter__(self) -> "GraphSession":
        self.graph.start()
        try:
            self.planner = Planner()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.planner is not None:
            self.planner.close()
        self.exit_codes = self.graph.stop()
        self.log.close()

    def alive(self) -> str:
        """'' while every node runs, else which exited and the last lines of their log."""
        dead = self.graph.failed()
        if not dead:
            return ""
        self.log.flush()
        tail = self.log_path.read_text().splitlines()[-15:]
        return f"node(s) exited: {dead}; last lines of {self.log_path}:\n  " + "\n  ".join(tail)


def run(args: argparse.Namespace) -> int:
    from r1_ros.graph import local_dds_environment

    os.environ.update(local_dds_environment())           # this process talks to the graph too
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    from r1_core.data.synthetic.demo import demo_scene, ensure_demo_assets
    from r1_ros.configs import resolve_path
    from r1_ros.graph import DEFAULT_CHECKPOINT

    print("[r1 demo] preparing the demo scene and its RGB-D bag ...", flush=True)
    assets = ensure_demo_assets(args.assets)
    launch = {"bag": str(assets.bag), "device": args.device}
    if args.preset:
        launch["preset"], model = args.preset, f"preset {args.preset} (untrained encoder)"
    elif args.checkpoint:
        launch["checkpoint"], model = args.checkpoint, args.checkpoint
    elif resolve_path(DEFAULT_CHECKPOINT).is_dir():
        model = f"R1-nano ({resolve_path(DEFAULT_CHECKPOINT)})"
    else:
        print(f"[r1 demo] the default model R1-nano is missing: no checkpoint at {resolve_path(DEFAULT_CHECKPOINT)} "
              f"(it ships in the repository; is the checkout complete?). Give --checkpoint, or --preset "
              f"smollm2-135m to run the pipeline with an untrained encoder.", file=sys.stderr, flush=True)
        return 2
    if args.params_file:
        launch["params_file"] = args.params_file
    from r1_core.data.bags import color_frame_count

    n_frames = color_frame_count(assets.bag)
    session = GraphSession(launch, out / "nodes.log")
    print(f"[r1 demo] starting the r1 nodes (model: {model}; node output: {session.log_path}) ...", flush=True)
    records: dict[str, dict] = {}
    answered = True
    try:
        with session:
            planner, alive = session.planner, session.alive
            from r1_msgs.action import Reason
            from r1_msgs.srv import Ask, Ground

            ground = planner.client(Ground, "ground", args.timeout, alive)
            ask = planner.client(Ask, "ask", args.timeout, alive)
            print(f"[r1 demo] graph up after {time.monotonic() - t_start:.0f} s; replaying {n_frames} frames ...",
                  flush=True)
            planner.replay(n_frames, alive, fuse_timeout=600, cloud_timeout=120)
            status = planner.fusion_summary()
            print(f"[r1 demo] {planner.fusion_line(status)}", flush=True)

            res, dt = planner.call(ground, Ground.Request(expression=args.ground), args.timeout)
            answered &= res is not None
            records["ground"] = _record(res, dt, args.ground)
            _print_answer("Ground", args.ground, records["ground"])
            res, dt = planner.call(ask, Ask.Request(question=args.question), args.timeout)
            answered &= res is not None
            records["ask"] = _record(res, dt, args.question)
            _print_answer("Ask", args.question, records["ask"])
            records["reason"] = _reason(planner, Reason, args.plan, args.timeout, alive)
            answered &= records["reason"]["answered"]
            _print_answer("Reason (planning)", args.plan, records["reason"])
            cloud = _cloud_array(planner.cloud)
    except RuntimeError as e:
        print(f"[r1 demo] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    codes = session.exit_codes
    unclean = {n: c for n, c in codes.items() if c != 0}
    scene = demo_scene()
    named = named_objects(scene, [r["request"] for r in records.values()])
    gt = [o.box for o in named]
    gt_labels = [f"{o.color} {o.label}" if o.color else o.label for o in named]
    pred = [np.array(b["center"] + b["size"] + [b["yaw"]], np.float32) for r in records.values() for b in r["boxes"]]
    pred_labels = [f"{k}: {b['label']}" for k, r in records.items() for b in r["boxes"]]
    grounded = _ground_truth_iou(scene, records["ground"])
    if grounded is not None:
        records["ground"]["ground_truth"] = grounded
        print(f"\n[r1 demo] Ground vs the scene's ground truth ({grounded['object']}): IoU {grounded['iou']:.2f} "
              f"({'right' if grounded['iou'] >= 0.25 else 'wrong'} at IoU 0.25)", flush=True)
    from r1_core.eval.visualize import render_topdown

    png = out / "scene.png"
    render_topdown(cloud, pred_boxes=np.array(pred).reshape(-1, 7), gt_boxes=np.array(gt).reshape(-1, 7),
                   pred_labels=pred_labels, gt_labels=gt_labels, path=png)
    results = {"model": model, "scene_id": scene.scene_id, "bag": str(assets.bag), "fusion": status,
               "requests": records, "node_exit_codes": codes, "wall_time_s": round(time.monotonic() - t_start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    ok = sum(r["success"] for r in records.values())
    print(f"\n[r1 demo] {ok}/{len(records)} requests succeeded; wrote {out / 'results.json'} and {png} "
          f"in {time.monotonic() - t_start:.0f} s", flush=True)
    if unclean:
        print(f"[r1 demo] nodes did not exit cleanly: {unclean}", file=sys.stderr)
        return 1
    return 0 if answered else 1


def _ground_truth_iou(scene, rec: dict) -> dict | None:
    """IoU of the Ground answer's first box with the object the expression names first (the
    referred object: "the red chair next to the bed" -> the red chair); None without a box."""
    from r1_core.geometry.boxes import box_iou_3d

    text = rec["request"].lower()
    named = named_objects(scene, [rec["request"]])
    if not rec["boxes"] or not named:
        return None

    def position(o) -> int:
        name = f"{o.color} {o.label}" if o.color and f"{o.color} {o.label}" in text else o.label
        return text.find(name)

    target = min(named, key=position)
    b = rec["boxes"][0]
    pred = np.array([b["center"] + b["size"] + [b["yaw"]]], np.float64)
    iou = float(box_iou_3d(pred, np.asarray(target.box, np.float64).reshape(1, 7))[0, 0])
    return {"object": f"{target.color} {target.label}".strip(), "box": [float(v) for v in target.box], "iou": iou}


def _record(res, latency: float, request: str) -> dict:
    if res is None:
        return {"request": request, "success": False, "message": "no response (timed out)", "answer": "",
                "reasoning": "", "boxes": [], "latency_s": latency}
    return {"request": request, "success": bool(res.success), "message": res.message, "answer": res.answer,
            "reasoning": res.reasoning, "boxes": _box_dicts(res.boxes), "latency_s": latency}


def _reason(planner: Planner, Reason, plan: str, timeout: float, alive) -> dict:
    client = planner.action_client(Reason, "reason")
    planner.wait_for("action reason", lambda: client.server_is_ready(), timeout, alive)
    print(f"\n[r1 demo] Reason (planning): {plan!r} - streaming:", flush=True)
    stages: list[str] = []

    def on_feedback(msg) -> None:
        fb = msg.feedback
        if fb.stage and (not stages or stages[-1] != fb.stage):
            stages.append(fb.stage)
            print(f"\n  [{fb.stage}] ", end="", flush=True)
        if fb.text_delta:
            print(fb.text_delta, end="", flush=True)

    t0 = time.monotonic()
    goal = Reason.Goal(task=Reason.Goal.TASK_PLANNING, text=plan)
    fut = client.send_goal_async(goal, feedback_callback=on_feedback)
    planner.wait_for("the goal to be accepted", fut.done, 30, alive)
    handle = fut.result()
    rec = {"request": plan, "success": False, "message": "", "answer": "", "reasoning": "", "boxes": [], "steps": [],
           "stages": stages, "answered": False}
    if not handle.accepted:
        rec.update(message="goal rejected", latency_s=time.monotonic() - t0)
        return rec
    res_fut = handle.get_result_async()
    planner.wait_for("the plan", res_fut.done, timeout, alive)
    print(flush=True)
    r = res_fut.result().result
    rec.update(success=bool(r.success), message=r.message, answer=r.answer, reasoning=r.reasoning,
               boxes=_box_dicts(r.boxes), steps=list(r.steps), latency_s=time.monotonic() - t0, answered=True)
    return rec


def _cloud_array(msg) -> np.ndarray:
    from r1_ros.conversions import pointcloud2_to_cloud

    return pointcloud2_to_cloud(msg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the out-of-the-box demo: bring-up on the synthetic bag, Ground/Ask/Reason "
                                    "over ROS, results JSON + picture", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output directory (default: demo_output)")
    p.add_argument("--checkpoint", default="", help="r1 checkpoint directory (default: the bundled R1-nano)")
    p.add_argument("--preset", default="", help="backbone preset with an untrained encoder instead of a checkpoint")
    p.add_argument("--device", default="cpu", help="model device: cpu | cuda | cuda:N")
    p.add_argument("--assets", default=None, help="demo asset cache (default: ~/.cache/r1/demo)")
    p.add_argument("--params-file", default="", help="node parameters (default: config/nodes.yaml)")
    p.add_argument("--ground", default=GROUND, help=f"the Ground expression (default: {GROUND!r})")
    p.add_argument("--question", default=QUESTION, help=f"the Ask question (default: {QUESTION!r})")
    p.add_argument("--plan", default=PLAN, help=f"the planning goal of the Reason action (default: {PLAN!r})")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the model to load / a request")
    p.set_defaults(func=run)
