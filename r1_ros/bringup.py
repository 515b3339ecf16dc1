"""`r1 up`: start the r1 nodes without `ros2 launch`, exactly as launch/scene_reasoner.launch.py
does (both read r1_ros.graph.plan), and `r1 node <name>`: run one node.

    r1 up                                          # live camera, default model
    r1 up bag:=~/.cache/r1/demo/demo_bag bag_loop:=true device:=cuda
    r1 up --bag run1 --preset smollm2-135m         # --name value works too
    r1 node rgbd_fusion --ros-args --params-file config/nodes.yaml

Each node is its own process (`python -m r1_ros.cli node <node> --ros-args -r __node:=<name>
[-r __ns:=<ns>] --params-file <params_file> --params-file <overrides.yaml> -r from:=to ...`):
the overrides file is written the way launch_ros writes a `parameters=[{...}]` dict. DDS stays
on loopback unless ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise. Ctrl-C (SIGINT) is forwarded
to every node, which stops cleanly; a node that dies takes the others down with it and `r1 up`
exits non-zero naming it. Children get SIGTERM if `r1 up` itself is killed (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from r1_ros.graph import LAUNCH_ARGUMENTS, NodeSpec, local_dds_environment, plan, resolve_arguments

NODE_MAINS = {
    "rgbd_fusion": "r1_ros.rgbd_fusion",
    "view_selector": "r1_ros.view_selector",
    "scene_reasoner": "r1_ros.scene_reasoner",
    "bag_replay": "r1_ros.bag_replay",
}


def nested(flat: dict) -> dict:
    """{'model.checkpoint': x} -> {'model': {'checkpoint': x}} (ROS params YAML layout)."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p_ in parts[:-1]:
            node = node.setdefault(p_, {})
        node[parts[-1]] = value
    return out


def ros_arguments(spec: NodeSpec, overrides_file: str | None) -> list[str]:
    """The --ros-args of one node process (the same rules launch_ros applies to a Node action)."""
    out = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        out += ["-r", f"__ns:={'/' + spec.namespace.strip('/')}"]
    out += ["--params-file", spec.params_file]
    if overrides_file is not None:
        out += ["--params-file", overrides_file]
    for src, dst in spec.remappings:
        out += ["-r", f"{src}:={dst}"]
    return out


def write_overrides(spec: NodeSpec, directory: Path) -> str | None:
    if not spec.overrides:
        return None
    path = directory / f"{spec.name}_overrides.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested(spec.overrides)}}, sort_keys=False))
    return str(path)


def node_command(spec: NodeSpec, overrides_file: str | None) -> list[str]:
    return [sys.executable, "-m", "r1_ros.cli", *spec.arguments, *ros_arguments(spec, overrides_file)]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG = 1
    except OSError:
        pass                                # not Linux: children outlive a killed `r1 up`


class BringUp:
    """The running r1 graph: one child process per node of `plan(args)`."""

    def __init__(self, args: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 stdout=None, stderr=None):
        self.args = resolve_arguments(args)
        self.specs = plan(self.args)
        self._tmp = tempfile.TemporaryDirectory(prefix="r1_up_")
        self.env = {**os.environ, **local_dds_environment(), **(env or {})}
        self.stdout, self.stderr = stdout, stderr
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands = {s.name: node_command(s, write_overrides(s, Path(self._tmp.name))) for s in self.specs}

    def start(self) -> "BringUp":
        for spec in self.specs:
            self.procs[spec.name] = subprocess.Popen(
                self.commands[spec.name], env=self.env, stdout=self.stdout, stderr=self.stderr,
                start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def failed(self) -> list[tuple[str, int]]:
        """Nodes that have exited (name, return code)."""
        return [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGINT every running node, wait (then SIGKILL stragglers); name -> return code."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
                print(f"[r1 up] {name} did not stop within {timeout:.0f} s: killed", file=sys.stderr, flush=True)
        self._tmp.cleanup()
        return codes

    def __enter__(self) -> "BringUp":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_launch_args(items: list[str], namespace: argparse.Namespace) -> dict[str, str]:
    """`name:=value` items plus --name options -> launch argument dict (only those given)."""
    out = {}
    for a in LAUNCH_ARGUMENTS:
        v = getattr(namespace, a.name, None)
        if v is not None:
            out[a.name] = v
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            raise ValueError(f"expected name:=value, got {item!r}; arguments: {[a.name for a in LAUNCH_ARGUMENTS]}")
        out[name] = value
    resolve_arguments(out)     # unknown names fail here with the list of valid ones
    return out


def up(args: argparse.Namespace) -> int:
    try:
        launch_args = parse_launch_args(args.assignments, args)
        graph = BringUp(launch_args)
    except ValueError as e:
        print(f"r1 up: {e}", file=sys.stderr)
        return 2
    print(f"[r1 up] starting {', '.join(s.name for s in graph.specs)} "
          f"(DDS discovery {graph.env['ROS_AUTOMATIC_DISCOVERY_RANGE']})", flush=True)
    stop = {"sig": False}

    def on_signal(signum, frame):
        stop["sig"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    graph.start()
    rc = 0
    try:
        while not stop["sig"]:
            dead = graph.failed()
            if dead:
                for name, code in dead:
                    print(f"[r1 up] {name} exited with code {code}; stopping the others", file=sys.stderr, flush=True)
                rc = 1
                break
            time.sleep(0.2)
    finally:
        codes = graph.stop()
        for s, h in old.items():
            signal.signal(s, h)
    bad = {n: c for n, c in codes.items() if c != 0}
    if bad and rc == 0:
        print(f"[r1 up] unclean exit: {bad}", file=sys.stderr)
        rc = 1
    return rc


def node(args: argparse.Namespace) -> int:
    module = importlib.import_module(NODE_MAINS[args.name])
    return int(module.main([f"r1-{args.name}", *args.rest]) or 0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the r1 nodes (as the launch file does, without ros2 launch)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in LAUNCH_ARGUMENTS:
        p.add_argument(f"--{a.name.replace('_', '-')}", dest=a.name, default=None,
                       help=f"{a.description} (default: {a.default!r})")
    p.add_argument("assignments", nargs="*", metavar="name:=value", help="launch arguments, ros2 launch style")
    p.set_defaults(func=up)
    n = sub.add_parser("node", help="run one r1 node (rgbd_fusion, view_selector, scene_reasoner, bag_replay)")
    n.add_argument("name", choices=sorted(NODE_MAINS))
    n.add_argument("rest", nargs=argparse.REMAINDER, help="--ros-args ...")
    n.set_defaults(func=node)
