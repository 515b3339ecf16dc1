"""A node refuses to start on parameters it does not have (a misspelt name would otherwise run
on the default without a word) and on a params file rcl cannot read; a `/**` section may name
parameters only some r1 nodes have, but not names no r1 node has."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1_ros.graph import local_dds_environment

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


def test_undeclared_overrides_split_into_this_nodes_and_wildcard_ones(tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from r1_ros.runtime import undeclared_overrides

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    rate: 2.0\n    map_frme: odom\n"      # bag_replay's; a typo
                      "node_x:\n  ros__parameters:\n    declard: 2\n    use_sim_time: true\n")
    rclpy.init(args=["--ros-args", "--params-file", str(params)])
    try:
        node = rclpy.create_node("node_x", parameter_overrides=[Parameter("declared", value=3)])
        node.declare_parameter("declared", 0)
        assert undeclared_overrides(node, ["--ros-args", "--params-file", str(params)]) == (["declard", "map_frme"], ["rate"])
        node.destroy_node()
    finally:
        rclpy.shutdown()


def _start(*ros_args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **local_dds_environment()}
    return subprocess.run([sys.executable, "-m", "r1_ros.cli", "node", "view_selector", "--ros-args", *ros_args],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_misspelt_parameter_or_an_unreadable_params_file_stops_the_node():
    done = _start("--params-file", str(ROOT / "config" / "nodes.yaml"), "-p", "default_kk:=3")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot start: node view_selector: unknown parameters ['default_kk'] given" in done.stderr
    done = _start("--params-file", "/nonexistent/nodes.yaml")
    assert done.returncode == 2 and "[r1] cannot start: " in done.stderr and "Traceback" not in done.stderr


SLOW_START = """
import sys, time
import rclpy.node
from r1_ros.runtime import run_node

class SlowStart(rclpy.node.Node):
    def __init__(self):
        super().__init__("slow_start")

    def start(self):                  # stands in for scene_reasoner's model load
        print("starting", flush=True)
        time.sleep(120)

sys.exit(run_node(SlowStart, sys.argv))
"""


def test_sigint_while_the_node_starts_stops_it_at_once():
    import signal

    env = {**os.environ, **local_dds_environment()}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_START], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "starting"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)       # the start would take 120 s
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "stopped while starting" in out and "Traceback" not in out, out
