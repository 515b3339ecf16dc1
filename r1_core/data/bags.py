"""RGB-D walk-throughs as ROS 2 bags (rosbags; mcap or sqlite3; Kilted type store) and a frame
reader that also works on real RealSense / Azure Kinect bags.

    write_bag("out/walk", frames, BagConfig())            # a rosbag2 directory (metadata.yaml + data)
    for f in read_bag("out/walk", BagConfig()):            # RGBDFrame(color, depth, K, T_map_optical, stamp)
        ...

Written topics (names configurable, defaults as a RealSense driver publishes them):
  /camera/color/image_raw                    sensor_msgs/Image rgb8
  /camera/aligned_depth_to_color/image_raw   sensor_msgs/Image 16UC1 (mm, 0 = invalid)
  /camera/color/camera_info                  sensor_msgs/CameraInfo (plumb_bob, zero distortion)
  /tf                                        map → camera_link, per frame
  /tf_static                                 camera_link → camera_color_optical_frame (REP 103 optical
                                             rotation; transient-local QoS, as tf2 publishes it)
Stamps start at `start_ns` and advance at `fps`. With `static_chain: false`, /tf carries
map → optical directly.

Reading pairs colour and depth by header stamp (within `sync_tolerance_s`), takes the camera
info closest in time, and composes the /tf + /tf_static chain from `world_frame` to the image's
frame_id (interpolating dynamic transforms). Encodings rgb8, bgr8, rgba8/bgra8 (Azure Kinect),
16UC1 (also mono16), 32FC1; anything else is a clear error.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from r1_core.data.errors import DataFormatError
from r1_core.data.rgbd import RGBDFrame

# optical frame in the camera_link frame (REP 103): x_opt = -y_link, y_opt = -z_link, z_opt = x_link
T_LINK_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], np.float64)
STORAGES = ("mcap", "sqlite3")


@dataclass
class BagConfig:
    """Bag topics and frames (config/data.yaml, section `bag`)."""
    color_topic: str = "/camera/color/image_raw"
    depth_topic: str = "/camera/aligned_depth_to_color/image_raw"
    info_topic: str = "/camera/color/camera_info"
    tf_topic: str = "/tf"
    tf_static_topic: str = "/tf_static"
    world_frame: str = "map"
    base_frame: str = "camera_link"
    optical_frame: str = "camera_color_optical_frame"
    static_chain: bool = True
    storage: str = "mcap"
    fps: float = 30.0
    start_ns: int = 1_700_000_000_000_000_000
    sync_tolerance_s: float = 0.02

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"unknown bag storage {self.storage!r}; choose one of {list(STORAGES)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


def typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


def _time(ts, ns: int):
    return ts.types["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _header(ts, ns: int, frame: str):
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, ns), frame_id=frame)


def _transform_msg(ts, ns: int, parent: str, child: str, T: np.ndarray):
    q = Rotation.from_matrix(T[:3, :3]).as_quat()  # x, y, z, w
    t = ts.types
    tr = t["geometry_msgs/msg/Transform"](
        translation=t["geometry_msgs/msg/Vector3"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        rotation=t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
    return t["geometry_msgs/msg/TransformStamped"](header=_header(ts, ns, parent), child_frame_id=child, transform=tr)


def write_bag(path: str | Path, frames: Iterable[RGBDFrame], cfg: BagConfig | None = None) -> Path:
    """Write frames to a new rosbag2 directory at `path` (must not exist). Frame stamps of 0
    are replaced by `start_ns + i / fps`."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import StoragePlugin, Writer

    cfg = cfg or BagConfig()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bag output {path} already exists; remove it or choose another path")
    ts = typestore()
    T = ts.types
    plugin = StoragePlugin.MCAP if cfg.storage == "mcap" else StoragePlugin.SQLITE3
    zero = QosTime(0, 0)
    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                  QosLiveliness.AUTOMATIC, zero, False)
    img_t, info_t, tf_t = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "tf2_msgs/msg/TFMessage"
    with Writer(path, version=9, storage_plugin=plugin) as w:
        c_col = w.add_connection(cfg.color_topic, img_t, typestore=ts)
        c_dep = w.add_connection(cfg.depth_topic, img_t, typestore=ts)
        c_inf = w.add_connection(cfg.info_topic, info_t, typestore=ts)
        c_tf = w.add_connection(cfg.tf_topic, tf_t, typestore=ts)
        first = True
        for i, f in enumerate(frames):
            ns = int(f.stamp_ns) if f.stamp_ns else int(cfg.start_ns + round(i * 1e9 / cfg.fps))
            if first and cfg.static_chain:
                c_st = w.add_connection(cfg.tf_static_topic, tf_t, typestore=ts, offered_qos_profiles=[latched])
                st = T[tf_t](transforms=[_transform_msg(ts, ns, cfg.base_frame, cfg.optical_frame, T_LINK_OPTICAL)])
                w.write(c_st, ns, ts.serialize_cdr(st, tf_t))
            first = False
            h, wd = f.color.shape[:2]
            if f.color.dtype != np.uint8 or f.color.shape != (h, wd, 3):
                raise ValueError(f"frame {i}: colour must be (H, W, 3) uint8, got {f.color.shape} {f.color.dtype}")
            if f.depth.shape != (h, wd) or f.depth.dtype != np.uint16:
                raise ValueError(f"frame {i}: depth must be (H, W) uint16 mm aligned to colour, got {f.depth.shape} {f.depth.dtype}")
            Tmo = np.asarray(f.T_map_optical, np.float64)
            if cfg.static_chain:
                tf = _transform_msg(ts, ns, cfg.world_frame, cfg.base_frame, Tmo @ np.linalg.inv(T_LINK_OPTICAL))
            else:
                tf = _transform_msg(ts, ns, cfg.world_frame, cfg.optical_frame, Tmo)
            w.write(c_tf, ns, ts.serialize_cdr(T[tf_t](transforms=[tf]), tf_t))
            K = np.asarray(f.K, np.float64)
            P = np.zeros((3, 4)); P[:, :3] = K
            info = T[info_t](header=_header(ts, ns, cfg.optical_frame), height=h, width=wd, distortion_model="plumb_bob",
                             d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
                             roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            w.write(c_inf, ns, ts.serialize_cdr(info, info_t))
            col = T[img_t](header=_header(ts, ns, cfg.optical_frame), height=h, width=wd, encoding="rgb8", is_bigendian=0,
                           step=wd * 3, data=np.ascontiguousarray(f.color).reshape(-1))
            w.write(c_col, ns, ts.serialize_cdr(col, img_t))
            dep = T[img_t](header=_header(ts, ns, cfg.optical_frame), height=h, width=wd, encoding="16UC1", is_bigendian=0,
                           step=wd * 2, data=np.ascontiguousarray(f.depth).view(np.uint8).reshape(-1))
            w.write(c_dep, ns, ts.serialize_cdr(dep, img_t))
    return path


# ---------------------------------------------------------------------------------------------
# reading


class TFBuffer:
    """Static and time-stamped transforms; `lookup(target, source, t)` composes the chain."""

    def __init__(self) -> None:
        self.static: dict[str, tuple[str, np.ndarray]] = {}
        self.dynamic: dict[str, tuple[str, list[int], list[np.ndarray], list[np.ndarray]]] = {}

    def add(self, parent: str, child: str, t_ns: int, T: np.ndarray, static: bool) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if static:
            self.static[child] = (parent, T)
            return
        p, times, trans, quats = self.dynamic.setdefault(child, (parent, [], [], []))
        if p != parent:
            raise ValueError(f"frame {child!r} has two parents in /tf: {p!r} and {parent!r}")
        k = bisect.bisect(times, t_ns)
        times.insert(k, t_ns); trans.insert(k, T[:3, 3]); quats.insert(k, Rotation.from_matrix(T[:3, :3]).as_quat())

    def frames(self) -> list[str]:
        fs = set(self.static) | set(self.dynamic)
        fs |= {p for p, _ in self.static.values()} | {v[0] for v in self.dynamic.values()}
        return sorted(fs)

    def _parent(self, child: str, t_ns: int, tol_ns: int) -> tuple[str, np.ndarray] | None:
        if child in self.static:
            return self.static[child]
        if child not in self.dynamic:
            return None
        parent, times, trans, quats = self.dynamic[child]
        T = np.eye(4)
        if t_ns <= times[0] or t_ns >= times[-1]:
            k = 0 if t_ns <= times[0] else len(times) - 1
            if abs(t_ns - times[k]) > tol_ns:
                raise ValueError(f"no transform {parent} → {child} at t={t_ns} ns (have {times[0]}..{times[-1]})")
            T[:3, :3] = Rotation.from_quat(quats[k]).as_matrix(); T[:3, 3] = trans[k]
            return parent, T
        k = bisect.bisect(times, t_ns)
        t0, t1 = times[k - 1], times[k]
        a = (t_ns - t0) / (t1 - t0)
        T[:3, :3] = Slerp([0, 1], Rotation.from_quat([quats[k - 1], quats[k]]))([a]).as_matrix()[0]
        T[:3, 3] = (1 - a) * trans[k - 1] + a * trans[k]
        return parent, T

    def _to_root(self, frame: str, t_ns: int, tol_ns: int) -> tuple[str, np.ndarray, list[str]]:
        T = np.eye(4)
        chain = [frame]
        while True:
            pt = self._parent(frame, t_ns, tol_ns)
            if pt is None:
                return frame, T, chain
            frame, Tp = pt
            T = Tp @ T
            chain.append(frame)
            if len(chain) > 64:
                raise ValueError(f"transform loop through {chain[:8]}")

    def lookup(self, target: str, source: str, t_ns: int, tol_ns: int = 50_000_000) -> np.ndarray:
        """T_target_source at time t (maps points in `source` into `target`)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        rs, Ts, cs = self._to_root(source, t_ns, tol_ns)
        rt, Tt, ct = self._to_root(target, t_ns, tol_ns)
        if rs != rt:
            raise ValueError(
                f"no transform chain from {target!r} to {source!r} in /tf or /tf_static: {source!r} leads to "
                f"{' → '.join(cs)}, {target!r} to {' → '.join(ct)}; frames present: {self.frames()} "
                f"(set world_frame to one of them)")
        return np.linalg.inv(Tt) @ Ts


def _tf_from_msg(msg) -> list[tuple[str, str, int, np.ndarray]]:
    out = []
    for t in msg.transforms:
        T = np.eye(4)
        q = t.transform.rotation
        T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        v = t.transform.translation
        T[:3, 3] = [v.x, v.y, v.z]
        out.append((t.header.frame_id, t.child_frame_id, t.header.stamp.sec * 1_000_000_000 + t.header.stamp.nanosec, T))
    return out


def decode_image(msg, where: str) -> np.ndarray:
    """sensor_msgs/Image → numpy: rgb8/bgr8/rgba8/bgra8 → (H, W, 3) uint8 RGB; 16UC1/mono16 → uint16;
    32FC1 → float32 metres. Other encodings raise ValueError naming the topic."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    enc = msg.encoding.lower()
    if enc in ("rgb8", "bgr8"):
        img = data.reshape(h, step)[:, : w * 3].reshape(h, w, 3)
        return np.ascontiguousarray(img[..., ::-1] if enc == "bgr8" else img)
    if enc in ("rgba8", "bgra8"):  # Azure Kinect's driver publishes bgra8: alpha is dropped
        img = data.reshape(h, step)[:, : w * 4].reshape(h, w, 4)
        return np.ascontiguousarray(img[..., 2::-1] if enc == "bgra8" else img[..., :3])
    if enc in ("16uc1", "mono16"):
        img = data.reshape(h, step)[:, : w * 2].copy().view(">u2" if msg.is_bigendian else "<u2").reshape(h, w)
        return img.astype(np.uint16)
    if enc == "32fc1":
        img = data.reshape(h, step)[:, : w * 4].copy().view(">f4" if msg.is_bigendian else "<f4").reshape(h, w)
        return img.astype(np.float32)
    raise ValueError(f"{where}: unsupported image encoding {msg.encoding!r}; supported: rgb8, bgr8, rgba8, bgra8, 16UC1, mono16, 32FC1")


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def color_frame_count(path: str | Path, cfg: BagConfig | None = None) -> int:
    """Messages on the bag's colour topic (from the bag's index, nothing decoded)."""
    from rosbags.highlevel import AnyReader

    topic = (cfg or BagConfig()).color_topic
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topic)


def read_bag(path: str | Path, cfg: BagConfig | None = None) -> Iterator[RGBDFrame]:
    """Yield RGBDFrames from a rosbag2 (mcap or sqlite3). See module docstring."""
    from rosbags.highlevel import AnyReader

    cfg = cfg or BagConfig()
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "bag not found")
    with AnyReader([path], default_typestore=typestore()) as reader:
        topics = {c.topic: c for c in reader.connections}
        for name, topic in (("color_topic", cfg.color_topic), ("depth_topic", cfg.depth_topic), ("info_topic", cfg.info_topic)):
            if topic not in topics:
                raise DataFormatError(path, f"no topic {topic!r} (BagConfig.{name}); topics in the bag: {sorted(topics)}")
            if name != "info_topic" and topics[topic].msgtype != "sensor_msgs/msg/Image":
                raise DataFormatError(path, f"topic {topic!r} has type {topics[topic].msgtype}, expected sensor_msgs/msg/Image")
        tf = TFBuffer()
        infos: list[tuple[int, np.ndarray]] = []
        small = [c for c in reader.connections if c.topic in (cfg.tf_topic, cfg.tf_static_topic, cfg.info_topic)]
        for conn, _, raw in reader.messages(connections=small):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == cfg.info_topic:
                infos.append((_stamp(msg), np.asarray(msg.k, np.float64).reshape(3, 3)))
            else:
                for parent, child, t, T in _tf_from_msg(msg):
                    tf.add(parent, child, t, T, static=conn.topic == cfg.tf_static_topic)
        if not infos:
            raise DataFormatError(path, f"no CameraInfo on {cfg.info_topic!r}")
        infos.sort(key=lambda x: x[0])
        info_t = [t for t, _ in infos]
        tol = int(cfg.sync_tolerance_s * 1e9)
        cq: deque = deque()
        dq: deque = deque()
        imgs = [topics[cfg.color_topic], topics[cfg.depth_topic]]
        for conn, _, raw in reader.messages(connections=imgs):
            msg = reader.deserialize(raw, conn.msgtype)
            (cq if conn.topic == cfg.color_topic else dq).append(msg)
            while cq and dq:
                c, d = cq[0], dq[0]
                tc, td = _stamp(c), _stamp(d)
                if abs(tc - td) <= tol:
                    cq.popleft(); dq.popleft()
                    color = decode_image(c, f"{path}:{cfg.color_topic}")
                    depth = decode_image(d, f"{path}:{cfg.depth_topic}")
                    if color.ndim != 3:
                        raise DataFormatError(path, f"{cfg.color_topic}: expected a colour image, got encoding {c.encoding!r}")
                    if depth.ndim != 2 or depth.shape != color.shape[:2]:
                        raise DataFormatError(path, f"depth {depth.shape} ({d.encoding}) is not aligned to colour {color.shape[:2]}: "
                                                    f"record the aligned depth topic")
                    k = min(max(bisect.bisect(info_t, tc) - 1, 0), len(infos) - 1)
                    frame_id = c.header.frame_id or cfg.optical_frame
                    T = tf.lookup(cfg.world_frame, frame_id, tc)
                    yield RGBDFrame(color, depth, infos[k][1], T, tc)
                elif tc < td:
                    cq.popleft()
                else:
                    dq.popleft()
