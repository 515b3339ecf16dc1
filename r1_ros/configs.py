"""Typed configs of the r1 ROS nodes (ROS-free: loadable and testable without rclpy).

    from r1_ros.configs import FusionNodeConfig, load_node_config
    cfg = load_node_config(FusionNodeConfig, "config/nodes.yaml", "rgbd_fusion")

One dataclass per node. `config/nodes.yaml` is a standard ROS 2 parameters file
(`<node>: ros__parameters: {...}`, plus `/**` for settings every node shares); its nested
mappings are the nested dataclasses here, so the same file feeds `ros2 launch`, `r1 up` and
`load_config`. Every field carries `metadata` with its help text, its numeric range (turned
into a ParameterDescriptor range by r1_ros.params) and whether it may change at run time.
Nested r1_core configs (FusionConfig, BankConfig, SelectorConfig, ServiceConfig) are declared
the same way, with help texts from CORE_PARAM_DOCS.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from r1_core.config import ConfigError, load_config, read_yaml
from r1_core.geometry.fusion import FusionConfig
from r1_core.service import ServiceConfig
from r1_core.views.bank import BankConfig
from r1_core.views.select import SelectorConfig

from r1_ros.graph import DEFAULT_CHECKPOINT, DEPTH_SOURCES  # noqa: E402  (light module; launch reads it)

POSE_SOURCES = ("tf", "pose", "odometry")
# parameters rclpy declares on every node itself: a params file may set them for any node
ROS_BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service", "qos_overrides")
CAMERA_QOS = ("reliable", "best_effort")
CLOUD_REFINE = ("idle", "always", "never")


def p(default: Any = dataclasses.MISSING, help: str = "", range: tuple | None = None,
      dynamic: bool = False, factory: Any = None) -> Any:
    """A dataclass field with ROS parameter metadata: help text, (lo, hi) range, and
    whether it may change while the node runs (dynamic) or is read-only after start."""
    meta = {"help": help, "range": range, "dynamic": dynamic}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


@dataclass
class FusionNodeConfig:
    """rgbd_fusion: synchronisation, pose, fusion map, keyframes and publishing."""

    map_frame: str = p("map", "fixed frame of the fused map (REP 105); clouds and keyframes are published in it")
    depth_source: str = p("topic", "topic: a registered depth image topic; estimated: metric depth predicted from "
                                   "colour by Depth Anything (RGB-only cameras)")
    pose_source: str = p("tf", "tf: map -> image frame from /tf and /tf_static; pose: a PoseStamped topic; "
                               "odometry: an Odometry topic (both composed with /tf_static to the image frame)")
    pose_child_frame: str = p("", "pose/odometry: frame whose pose the topic carries ('' = Odometry child_frame_id, "
                                  "or the image frame for PoseStamped)")
    camera_qos: str = p("reliable", "QoS reliability of the colour, depth and camera_info subscriptions: reliable, "
                                    "or best_effort for a driver that publishes sensor-data QoS (a reliable "
                                    "subscription gets nothing from a best-effort publisher; best_effort takes both, "
                                    "but may lose ~1 MB images under load)")
    sync_tolerance_s: float = p(0.02, "colour/depth/camera_info stamps closer than this are one frame",
                                (0.0, 1.0), dynamic=True)
    frame_wait_s: float = p(0.2, "how long a frame waits for its camera_info and for a pose at its stamp to "
                                 "arrive before it falls back to max_pose_age_s or is dropped (no_camera_info / "
                                 "stale_pose)", (0.0, 5.0), dynamic=True)
    max_pose_age_s: float = p(0.1, "once frame_wait_s has passed without a pose at the frame's stamp, a pose this "
                                   "much older (or newer) than the frame is still used; beyond: "
                                   "stale_pose", (0.0, 10.0), dynamic=True)
    tf_cache_s: float = p(10.0, "transform history kept per frame (seconds)", (0.5, 600.0))
    queue_size: int = p(30, "frames waiting for fusion; when full the oldest is dropped (reason: overload)",
                        (1, 1000))
    max_image_pixels: int = p(4096 * 3072, "images with more pixels are dropped unread (reason: too_large)",
                              (1, 1 << 28), dynamic=True)
    cloud_rate_hz: float = p(1.0, "fused cloud publishing rate (only when the map changed; deferred up to 4 "
                                  "periods while frames wait to be fused)", (0.01, 30.0), dynamic=True)
    cloud_refine: str = p("idle", "snapshot refinement of published clouds (FusionConfig support_ratio/project, "
                                  "~1 s per 500k voxels): idle = quick previews while frames stream, one refined "
                                  "cloud once the stream pauses; always; never", dynamic=True)
    cloud_idle_s: float = p(1.0, "cloud_refine idle: the stream counts as paused after this long without a fused "
                                 "frame", (0.0, 600.0), dynamic=True)
    status_rate_hz: float = p(2.0, "FusionStatus heartbeat rate (a status also goes out each time the worker "
                                   "finishes a frame, fused or dropped: an offline replayer paces itself on it)",
                              (0.1, 50.0))
    log_throttle_s: float = p(30.0, "each kind of dropped frame is logged once, then at most once per this period",
                              (0.0, 86400.0), dynamic=True)
    publish_keyframes: bool = p(True, "publish keyframes (r1_msgs/Keyframe) accepted by the keyframe bank")
    keyframe_history: int = p(20, "keyframes kept for late subscribers (transient-local depth)", (1, 1000))
    depth_model_path: str = p("", "depth_source=estimated: local Depth Anything (metric) checkpoint directory")
    depth_model_tiny: bool = p(False, "depth_source=estimated: random-init tiny Depth Anything (tests only)")
    fusion: FusionConfig = p(help="fusion map", factory=FusionConfig)
    bank: BankConfig = p(help="keyframe bank (the keyframe criterion)", factory=BankConfig)

    def __post_init__(self) -> None:
        _choice("depth_source", self.depth_source, DEPTH_SOURCES)
        _choice("cloud_refine", self.cloud_refine, CLOUD_REFINE)
        _choice("pose_source", self.pose_source, POSE_SOURCES)
        _choice("camera_qos", self.camera_qos, CAMERA_QOS)
        if self.depth_source == "estimated" and not (self.depth_model_path or self.depth_model_tiny):
            raise ValueError("depth_source 'estimated' needs depth_model_path (a local Depth Anything dir)")
        for n in ("cloud_rate_hz", "status_rate_hz", "tf_cache_s"):
            _positive(n, getattr(self, n))


@dataclass
class ViewSelectorNodeConfig:
    """view_selector: a keyframe bank fed by the keyframe topic, serving SelectViews."""

    map_frame: str = p("map", "frame of keyframe poses")
    default_k: int = p(4, "views returned when a request asks for k = 0", (1, 64), dynamic=True)
    bank: BankConfig = p(help="keyframe bank bounds (keyframes arrive already gated by rgbd_fusion)",
                         factory=BankConfig)
    selector: SelectorConfig = p(help="view selection (r1_core.views)", factory=SelectorConfig)


@dataclass
class ModelSource:
    """Which model the reasoner loads."""

    checkpoint: str = p(DEFAULT_CHECKPOINT, "r1 checkpoint directory (package:// URIs resolve in installed "
                                            "packages); the default is the bundled R1-nano")
    preset: str = p("", "when set (e.g. smollm2-135m), build this backbone preset with untrained "
                        "encoder/projector instead of loading the checkpoint")
    dtype: str = p("float32", "float32 | bfloat16 | float16")


@dataclass
class ReasonerNodeConfig:
    """scene_reasoner: model, request service, in-process view selection, markers."""

    map_frame: str = p("map", "frame of the scene cloud and of answer boxes")
    autostart: bool = p(True, "configure and activate at start (no lifecycle manager needed)")
    device: str = p("cpu", "torch device of the model: cpu | cuda | cuda:N")
    torch_threads: int = p(0, "torch CPU threads of this process (0 = torch's default, all cores); on a small CPU "
                              "shared with rgbd_fusion, 1 keeps torch's spinning threads from starving fusion",
                           (0, 256))
    model: ModelSource = p(help="model", factory=ModelSource)
    service: ServiceConfig = p(help="request queue, batching, timeouts, generation", factory=ServiceConfig)
    bank: BankConfig = p(help="keyframe bank bounds (keyframes arrive already gated by rgbd_fusion)",
                         factory=BankConfig)
    selector: SelectorConfig = p(help="view selection (r1_core.views)", factory=SelectorConfig)
    marker_lifetime_s: float = p(0.0, "lifetime of answer markers (0 = until the next answer)", (0.0, 3600.0),
                                 dynamic=True)
    feedback_rate_hz: float = p(20.0, "Reason feedback: generated text is sent in deltas at most this often "
                                      "(stage changes at once); per-token messages would flood DDS at small-model "
                                      "token rates", (0.1, 1000.0), dynamic=True)

    def __post_init__(self) -> None:
        dev = self.device
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"unknown device {dev!r}; choose one of ['cpu', 'cuda', 'cuda:N']")


@dataclass
class BagReplayConfig:
    """bag_replay: publish a recorded rosbag2 like the live sensors."""

    bag: str = p("", "rosbag2 directory (mcap or sqlite3) to replay")
    rate: float = p(1.0, "playback speed factor (1 = as recorded)", (0.01, 100.0), dynamic=True)
    loop: bool = p(False, "start again at the end")
    restamp: bool = p(True, "rewrite header/transform stamps to the current time (keeps time moving forward "
                            "across loops)")
    start_paused: bool = p(False, "wait for ~/resume before publishing")
    start_offset_s: float = p(0.0, "skip this much of the bag's beginning", (0.0, 1e6))
    wait_subscribers_s: float = p(10.0, "before the first message, wait up to this long until every replayed "
                                        "topic has a subscriber (messages published before discovery are lost)",
                                  (0.0, 3600.0))
    topics: list[str] = p(help="topics to publish (empty = all)", factory=list)
    qos_depth: int = p(30, "publisher history depth (reliable)", (1, 1000))
    wait_for_fusion: bool = p(False, "offline replay with backpressure: publish a frame (a message on frame_topic) "
                                     "only while fewer than max_frames_in_flight earlier ones are unfinished by "
                                     "rgbd_fusion (fused + dropped in its fusion_status), so that none is dropped "
                                     "as overload however slow fusion is; the replay then runs as fast as fusion "
                                     "allows, never faster than `rate`. Off: paced by the clock only, as live "
                                     "sensors are")
    frame_topic: str = p("/camera/color/image_raw", "wait_for_fusion: the bag topic whose messages are the frames "
                                                    "rgbd_fusion counts (its colour topic)")
    max_frames_in_flight: int = p(2, "wait_for_fusion: frames published but not yet finished by rgbd_fusion; at "
                                     "most rgbd_fusion's queue_size", (1, 1000))
    fusion_timeout_s: float = p(60.0, "wait_for_fusion: the node fails (exit code 1, naming the frame and the "
                                      "last fusion_status) when rgbd_fusion finishes no frame for this long",
                                (0.1, 86400.0))

    def __post_init__(self) -> None:
        _positive("rate", self.rate)
        if self.wait_for_fusion and not self.frame_topic:
            raise ValueError("wait_for_fusion needs frame_topic (the colour topic rgbd_fusion counts frames on)")


NODE_CONFIGS: dict[str, type] = {
    "rgbd_fusion": FusionNodeConfig,
    "view_selector": ViewSelectorNodeConfig,
    "scene_reasoner": ReasonerNodeConfig,
    "bag_replay": BagReplayConfig,
}


def downstream_bank(cfg: BankConfig) -> BankConfig:
    """The bank of a keyframe *consumer*: rgbd_fusion already applied the keyframe criterion
    (pose gate + new coverage), so consumers keep every keyframe they receive (gates off) and
    only apply the bounds and eviction rule, ending with the same set as the producer."""
    return dataclasses.replace(cfg, min_translation_m=0.0, min_rotation_deg=0.0, min_new_fraction=0.0)


def shared_defaults(cls: type) -> dict:
    """The sections of config/views.yaml that `cls` has (bank, selector): the nodes take their
    keyframe-bank and view-selector settings from the same file as `r1 views`, so there is one
    set of values (nodes.yaml may still override them per node)."""
    from r1_ros.graph import config_dir

    path = config_dir() / "views.yaml"
    if not path.is_file():
        return {}
    data = read_yaml(path)
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: dict(data[k]) for k in ("bank", "selector") if k in names and isinstance(data.get(k), Mapping)}


def merge_mappings(a: Mapping, b: Mapping) -> dict:
    """Nested merge, b winning."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_mappings(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def node_parameters(data: Mapping[str, Any], node: str, origin: str = "parameters",
                    known: set[str] | None = None) -> dict:
    """The parameters a ROS 2 params mapping gives `node`: `/**` merged with `<node>` (and
    `/<node>`), the node's own values winning. With `known` (the node's top-level parameter
    names), `/**` keys outside it are left out: a wildcard section names parameters of every
    node, and a node ignores the ones it lacks (as r1_ros.runtime does when the node starts)."""
    out: dict = {}
    for key in ("/**", node, f"/{node}"):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping) or "ros__parameters" not in section:
            raise ConfigError(f"{origin}: section {key!r} must hold a 'ros__parameters' mapping")
        values = {k: v for k, v in (section["ros__parameters"] or {}).items() if k not in ROS_BUILTIN_PARAMETERS}
        if key == "/**" and known is not None:
            values = {k: v for k, v in values.items() if k in known}
        out = merge_mappings(out, values)
    return out


def wildcard_parameters(data: Any) -> Mapping[str, Any]:
    """The `ros__parameters` of a params mapping's `/**` section, the one every node reads ({}
    without one)."""
    section = data.get("/**") if isinstance(data, Mapping) else None
    if not isinstance(section, Mapping) or not isinstance(section.get("ros__parameters"), Mapping):
        return {}
    return section["ros__parameters"]


def unknown_wildcard_keys(data: Mapping[str, Any]) -> list[str]:
    """Keys of a params mapping's `/**` section that no r1 node has (nor rclpy itself): typos,
    since a wildcard key a node lacks is otherwise ignored by that node."""
    names = {f.name for cls in NODE_CONFIGS.values() for f in dataclasses.fields(cls)} | set(ROS_BUILTIN_PARAMETERS)
    return sorted(k for k in wildcard_parameters(data) if k not in names)


def load_node_config(cls: type, source: str | Path | Mapping[str, Any] | None, node: str,
                     overrides: Mapping[str, Any] | None = None) -> Any:
    """Build a node config from a ROS 2 parameters file (or mapping) for `node`, over the
    shared defaults of config/views.yaml - the values the running node ends up with."""
    if source is None:
        data: Mapping = {}
        origin = "defaults"
    elif isinstance(source, Mapping):
        data, origin = source, "mapping"
    else:
        data, origin = read_yaml(source), str(source)
    known = {f.name for f in dataclasses.fields(cls)}
    params = merge_mappings(shared_defaults(cls), node_parameters(data, node, origin, known))
    try:
        return load_config(cls, params, overrides=overrides)
    except ConfigError as e:
        raise ConfigError(f"{origin} [{node}]: {e}") from None


def resolve_path(path: str) -> Path:
    """A filesystem path from a parameter: `package://<python package>/<rest>` resolves inside
    the installed package; `~` expands."""
    if path.startswith("package://"):
        pkg, _, rest = path[len("package://"):].partition("/")
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{path}: python package {pkg!r} is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / rest
    return Path(path).expanduser()
