"""bag_replay's backpressure (wait_for_fusion, what `r1 demo` and `r1 eval-bag` use): an rgbd_fusion
process made far slower than the replay (a two-frame queue, the bag at 100x) drops frames when
the replay is paced by the clock, as a live camera is, and fuses every frame when the replay
waits for its fusion_status; a replay whose fusion never answers fails with a message naming
what did not arrive. The replay node runs in this process with the parameters r1_ros.graph.plan
gives it (as `r1 up` / the launch file would)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from r1_ros.graph import local_dds_environment  # noqa: E402

pytestmark = pytest.mark.ros
# this process's DDS participants use the nodes' Fast DDS profile (see test_ros_demo.py)
os.environ.update(local_dds_environment())
FRAMES = 12
# bag_replay's default max_frames_in_flight (2) is within this queue (it must be)
SLOW_FUSION = {"queue_size": 2, "status_rate_hz": 10.0}


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    from r1_core.data.synthetic.demo import ensure_demo_assets

    return ensure_demo_assets(tmp_path_factory.mktemp("demo"), frames=FRAMES).bag


@pytest.fixture(scope="module")
def ros():
    """rclpy with a spinning executor and the latest FusionStatus on /fusion_status."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from r1_msgs.msg import FusionStatus
    from r1_ros import qos

    rclpy.init()
    node = rclpy.create_node("backpressure_test")
    state = {"status": None}
    node.create_subscription(FusionStatus, "/fusion_status", lambda m: state.__setitem__("status", m), qos.STATUS)
    ex = MultiThreadedExecutor(num_threads=3)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    state["executor"] = ex
    yield state
    ex.shutdown()
    spin.join()
    node.destroy_node()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def fusion(bag, ros, tmp_path_factory):
    """rgbd_fusion as `r1 up bag:=…` starts it (its own process), with SLOW_FUSION."""
    from r1_ros.bringup import node_command, write_overrides
    from r1_ros.graph import plan

    spec = next(s for s in plan({"bag": str(bag)}) if s.name == "rgbd_fusion")
    spec.overrides.update(SLOW_FUSION)
    cmd = node_command(spec, write_overrides(spec, tmp_path_factory.mktemp("fusion")))
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(ln.rstrip() for ln in proc.stdout), daemon=True)
    reader.start()
    fusion = {"proc": proc, "log": lambda: "\n".join(lines[-30:])}
    try:
        _wait(lambda: ros["status"] is not None, "rgbd_fusion's first status", 60, fusion)
        yield fusion
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=5)
    assert rc == 0, fusion["log"]()


def _wait(cond, what: str, timeout: float, fusion: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if fusion is not None:
            p = fusion["proc"]
            assert p.poll() is None, f"rgbd_fusion exited ({p.returncode}) while waiting for {what}:\n{fusion['log']()}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def _replay(ros, launch: dict, namespace: str = "", **params):
    """bag_replay in this process with plan(launch)'s parameters (+ params), once it finished
    or failed; it is destroyed on exit (only then: its last messages must still be delivered)."""
    from rclpy.parameter import Parameter

    from r1_ros.bag_replay import BagReplayNode
    from r1_ros.graph import plan

    overrides = {**next(s for s in plan(launch) if s.name == "bag_replay").overrides, **params}
    node = BagReplayNode(namespace=namespace,
                         parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    ros["executor"].add_node(node)
    try:
        node.start()
        _wait(lambda: node.finished.is_set() or node.stop_requested.is_set(), "the replay to end", 60)
        yield node
    finally:
        node.close()
        ros["executor"].remove_node(node)
        node.destroy_node()


@pytest.mark.parametrize("wait_for_fusion", [False, True], ids=["clock-paced", "backpressure"])
def test_replay_with_backpressure_fuses_every_frame_of_a_slow_fusion(bag, ros, fusion, wait_for_fusion):
    before = ros["status"]
    drops0 = dict(zip(before.drop_reasons, before.drop_counts))

    def delta(s) -> tuple[int, int]:          # frames received, frames finished (fused or dropped)
        return (s.frames_in - before.frames_in,
                s.frames_fused + s.frames_dropped - before.frames_fused - before.frames_dropped)

    launch = {"bag": str(bag), "bag_rate": "100", "bag_wait_for_fusion": str(wait_for_fusion).lower()}
    with _replay(ros, launch, wait_subscribers_s=30.0) as node:
        assert node.exit_code == 0 and node.finished.is_set()
        if wait_for_fusion:
            _wait(lambda: delta(ros["status"]) == (FRAMES, FRAMES), "every frame to be fused or dropped", 60, fusion)
        else:   # a reader overrun may lose frames uncounted: wait until what came in is finished
            _wait(lambda: (lambda r, f: r > 0 and r == f)(*delta(ros["status"])), "the frames to be finished", 60,
                  fusion)
            time.sleep(1.5)                     # colour frames whose depth was lost expire after 1 s
            _wait(lambda: (lambda r, f: r == f)(*delta(ros["status"])), "the frames to be finished", 60, fusion)
    s = ros["status"]
    fused = s.frames_fused - before.frames_fused
    drops = {r: c - drops0.get(r, 0) for r, c in zip(s.drop_reasons, s.drop_counts) if c > drops0.get(r, 0)}
    if wait_for_fusion:
        assert fused == FRAMES and drops == {}, (drops, fusion["log"]())
    else:       # the premise: this fusion cannot keep up with a clock-paced replay and loses frames
        # (queue full: overload; colour waiting for its depth beyond the queue: unsynced; a frame that
        # came before the latched camera_info reached the loaded node: no_camera_info - a clock-paced
        # replay orders nothing; or, uncounted, images overwritten in the reader's history before the
        # executor took them)
        assert fused < FRAMES and set(drops) <= {"overload", "unsynced", "no_camera_info"}, (drops, fusion["log"]())


def test_replay_without_fusion_status_fails_naming_what_did_not_arrive(bag, ros, capfd):
    # in a namespace without an rgbd_fusion: nothing arrives on /nowhere/fusion_status
    with _replay(ros, {"bag": str(bag), "bag_wait_for_fusion": "true"}, namespace="nowhere",
                 fusion_timeout_s=1.0, wait_subscribers_s=0.0) as node:
        assert node.stop_requested.is_set() and node.exit_code == 1 and not node.finished.is_set()
        assert node.published < 5 and node.frames_sent == 0      # at most the first frame's tf / camera_info
    err = capfd.readouterr().err                                  # the node's fatal log line
    assert "no r1_msgs/FusionStatus arrived on /nowhere/fusion_status within 1.0 s" in err, err
    assert "is rgbd_fusion running in this namespace?" in err
