"""The declarative node table: which nodes the r1 bring-up starts, with which parameters and
remappings, for given launch arguments. Both `launch/scene_reasoner.launch.py` (standard
launch_ros API, for robots with a full ROS 2 install) and `r1 up` (no `ros2 launch` here)
build their processes from `plan()`, so they cannot drift apart; tests/test_ros_units.py
runs the launch file against recording stand-ins of launch/launch_ros and compares.

    specs = plan({"bag": "/data/run1", "device": "cuda"})
    for s in specs: s.name, s.executable, s.arguments, s.params_file, s.overrides, s.remappings

Arguments (all strings, as launch arguments are): see LAUNCH_ARGUMENTS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from r1_ros.dds import DISCOVERY_VAR

PACKAGE = "r1_ros"
DEFAULT_CHECKPOINT = "package://r1_core/assets/r1-nano"    # the bundled R1-nano
DEPTH_SOURCES = ("topic", "estimated")


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("params_file", "", "node parameters (ROS 2 params YAML); '' = the package's config/nodes.yaml"),
    LaunchArgument("namespace", "", "namespace of the r1 nodes"),
    LaunchArgument("camera_namespace", "/camera", "namespace of the camera topics"),
    LaunchArgument("color_topic", "color/image_raw", "colour image topic (relative to camera_namespace)"),
    LaunchArgument("depth_topic", "aligned_depth_to_color/image_raw",
                   "registered depth image topic (relative to camera_namespace)"),
    LaunchArgument("info_topic", "color/camera_info", "camera_info topic (relative to camera_namespace)"),
    LaunchArgument("pose_topic", "pose", "rgbd_fusion's PoseStamped input when pose_source is pose (relative to namespace)"),
    LaunchArgument("odom_topic", "odom", "rgbd_fusion's Odometry input when pose_source is odometry "
                                         "(relative to namespace)"),
    LaunchArgument("depth_source", "topic", "topic: depth image topic; estimated: Depth Anything from colour"),
    LaunchArgument("checkpoint", DEFAULT_CHECKPOINT, "r1 model checkpoint directory"),
    LaunchArgument("preset", "", "backbone preset with untrained encoder instead of the checkpoint "
                                 "(e.g. smollm2-135m); '' = use the checkpoint"),
    LaunchArgument("device", "cpu", "model device: cpu | cuda | cuda:N"),
    LaunchArgument("bag", "", "rosbag2 directory to replay instead of a live camera ('' = live)"),
    LaunchArgument("bag_rate", "1.0", "bag playback speed factor"),
    LaunchArgument("bag_loop", "false", "replay the bag in a loop"),
    LaunchArgument("bag_restamp", "true", "restamp replayed messages to the current time"),
    LaunchArgument("bag_start_paused", "false", "bag replay waits for its ~/resume service"),
    LaunchArgument("bag_wait_for_fusion", "false", "offline replay with backpressure: each colour frame waits until "
                                                   "rgbd_fusion has finished the earlier ones, so none is dropped "
                                                   "as overload (false: clock-paced like a live camera)"),
    LaunchArgument("use_view_selector", "true", "start the view_selector node (SelectViews service)"),
)
ARGUMENT_NAMES = tuple(a.name for a in LAUNCH_ARGUMENTS)


@dataclass
class NodeSpec:
    """One process: an r1 node run as `r1 node <node> --ros-args ...`."""

    node: str                                   # rgbd_fusion | view_selector | scene_reasoner | bag_replay
    name: str                                   # ROS node name (and its section in the params file)
    namespace: str
    params_file: str
    overrides: dict = field(default_factory=dict)          # dotted parameter names -> typed values
    remappings: list[tuple[str, str]] = field(default_factory=list)
    package: str = PACKAGE
    executable: str = "r1"

    @property
    def arguments(self) -> list[str]:
        return ["node", self.node]


def default_params_file() -> str:
    """config/nodes.yaml: the installed share directory on a robot, else the source tree."""
    if os.environ.get("AMENT_PREFIX_PATH"):       # a sourced ROS 2 workspace
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            share = Path(get_package_share_directory(PACKAGE)) / "config" / "nodes.yaml"
            if share.is_file():
                return str(share)
        except PackageNotFoundError:
            pass                                     # not installed there: the source tree below
    return str(Path(__file__).resolve().parent.parent / "config" / "nodes.yaml")


def config_dir() -> Path:
    """The directory of the r1 YAML configs (installed share dir, else the source tree)."""
    return Path(default_params_file()).parent


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}: expected true or false, got {value!r}")


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"launch argument {name}: expected a number, got {value!r}") from None


def resolve_topic(ns: str, topic: str) -> str:
    """A topic relative to a namespace, as ROS resolves it ("/camera", "color/image_raw" ->
    "/camera/color/image_raw"); absolute topics stay as they are."""
    if topic.startswith("/"):
        return topic
    return "/" + "/".join(p for p in (ns.strip("/"), topic.strip("/")) if p)


def resolve_arguments(args: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults filled in; an unknown argument name is an error listing the valid ones."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(ARGUMENT_NAMES))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; valid: {list(ARGUMENT_NAMES)}")
    out = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    out.update({k: str(v) for k, v in args.items()})
    return out


def plan(args: Mapping[str, str] | None = None) -> list[NodeSpec]:
    """The processes of the r1 bring-up for these launch arguments."""
    a = resolve_arguments(args)
    params = a["params_file"] or default_params_file()
    ns = a["namespace"]
    if a["depth_source"] not in DEPTH_SOURCES:
        raise ValueError(f"launch argument depth_source: unknown {a['depth_source']!r}; choose one of "
                         f"{list(DEPTH_SOURCES)}")
    for name in ("color_topic", "depth_topic", "info_topic", "pose_topic", "odom_topic"):
        if not a[name].strip():
            raise ValueError(f"launch argument {name}: expected a topic name, got {a[name]!r}")
    # parsed without a bag too: a typo is an error, not ignored
    flags = {name: _bool(name, a[name]) for name in ("bag_loop", "bag_restamp", "bag_start_paused", "bag_wait_for_fusion")}
    rate = _float("bag_rate", a["bag_rate"])
    cam = a["camera_namespace"]
    fusion_remaps = [("color/image_raw", resolve_topic(cam, a["color_topic"])),
                     ("color/camera_info", resolve_topic(cam, a["info_topic"]))]
    if a["depth_source"] == "topic":
        fusion_remaps.insert(1, ("depth/image_raw", resolve_topic(cam, a["depth_topic"])))
    fusion_remaps += [(name, a[f"{name}_topic"]) for name in ("pose", "odom") if a[f"{name}_topic"] != name]
    specs = [NodeSpec("rgbd_fusion", "rgbd_fusion", ns, params, {"depth_source": a["depth_source"]}, fusion_remaps)]
    if _bool("use_view_selector", a["use_view_selector"]):
        specs.append(NodeSpec("view_selector", "view_selector", ns, params))
    reasoner = {"model.checkpoint": a["checkpoint"], "model.preset": a["preset"], "device": a["device"]}
    specs.append(NodeSpec("scene_reasoner", "scene_reasoner", ns, params, reasoner))
    if a["bag"]:
        replay = {"bag": a["bag"], "rate": rate, "loop": flags["bag_loop"], "restamp": flags["bag_restamp"],
                  "start_paused": flags["bag_start_paused"], "wait_for_fusion": flags["bag_wait_for_fusion"],
                  "frame_topic": resolve_topic(cam, a["color_topic"])}       # the topic rgbd_fusion counts frames on
        specs.append(NodeSpec("bag_replay", "bag_replay", ns, params, replay))
    return specs


FASTDDS_PROFILE_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"


def local_dds_environment() -> dict[str, str]:
    """Environment the launched nodes get: DDS discovery on loopback unless the user chose
    otherwise (ROS 2 Kilted ignores ROS_LOCALHOST_ONLY), and, with discovery on loopback, the
    shared-memory Fast DDS profile r1_ros/fastdds_local.xml unless the user set a profile file.

    The profile replaces Fast DDS's built-in transports by shared memory alone, so it is for one
    machine only: with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET (a planner or RViz on another
    machine, a camera in a container without the host's /dev/shm) it is not applied and Fast
    DDS keeps its UDP and shared-memory transports.

    Measured here with the default transports: a small CameraInfo sent next to 1 MB images is
    now and then delayed by seconds (a lost UDP datagram, resent after the reliable heartbeat);
    with the profile, max 5 ms. Processes on this machine that talk to the r1 nodes (a camera
    driver, RViz, a planner) should run with the same FASTDDS_DEFAULT_PROFILES_FILE. Fast DDS
    reads the file once per process, when the first participant is created."""
    discovery = os.environ.get(DISCOVERY_VAR, "LOCALHOST")
    env = {DISCOVERY_VAR: discovery}
    if FASTDDS_PROFILE_VAR in os.environ:
        env[FASTDDS_PROFILE_VAR] = os.environ[FASTDDS_PROFILE_VAR]
    elif discovery == "LOCALHOST":
        env[FASTDDS_PROFILE_VAR] = str(Path(__file__).with_name("fastdds_local.xml"))
    return env
