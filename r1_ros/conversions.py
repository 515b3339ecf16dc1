"""ROS message <-> numpy / r1_core conversions, at the node boundary only.

    color = image_to_array(msg, "color")            # (H, W, 3) uint8 RGB, or BadInput(reason)
    cloud = pointcloud2_to_cloud(msg)                # (N, 6) float32 xyz + rgb 0..255
    msg = cloud_to_pointcloud2(records, header)      # from FusionMap.snapshot_records()
    boxes_msg = boxes_to_msgs(boxes, labels, header) # r1_msgs/Box3D[]

Why our own image decoding rather than cv_bridge: cv_bridge is not available for Kilted here,
and the nodes need a reason code per kind of bad input (for the status counters) rather than
an exception type. Decoding is a zero-copy numpy view of the message buffer where the row
stride allows it.
"""
from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "16UC1": 2, "mono16": 2, "32FC1": 4}


class BadInput(ValueError):
    """An input message the node cannot use; `reason` is the status counter it goes to."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---- time -----------------------------------------------------------------------------------
def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


# ---- images ---------------------------------------------------------------------------------
def check_image_size(msg, what: str, max_pixels: int) -> None:
    """BadInput('too_large') before touching the data of an oversized image."""
    h, w = int(msg.height), int(msg.width)
    if h * w > max_pixels:
        raise BadInput("too_large", f"{what}: {w}x{h} image ({len(msg.data)} bytes) exceeds max_image_pixels "
                                    f"{max_pixels}")


def image_to_array(msg, what: str) -> np.ndarray:
    """sensor_msgs/Image -> numpy. what='color': (H, W, 3) uint8 RGB from rgb8/bgr8/rgba8/bgra8;
    what='depth': (H, W) uint16 mm (16UC1/mono16) or float32 m (32FC1). BadInput otherwise."""
    enc = msg.encoding
    allowed = COLOR_ENCODINGS if what == "color" else DEPTH_ENCODINGS
    if enc not in allowed:
        raise BadInput("bad_encoding", f"{what} image: encoding {enc!r} not supported; expected one of {list(allowed)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    bpp = _BPP[enc]
    if h <= 0 or w <= 0:
        raise BadInput("bad_image", f"{what} image: empty ({w}x{h})")
    if step < w * bpp:
        raise BadInput("bad_image", f"{what} image: step {step} < width {w} x {bpp} bytes per pixel ({enc})")
    data = np.frombuffer(msg.data, dtype=np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    if data.size != step * h:
        raise BadInput("bad_image", f"{what} image: {data.size} data bytes, expected step x height = {step * h}")
    rows = data.reshape(h, step)[:, : w * bpp]
    if what == "color":
        img = rows.reshape(h, w, bpp)
        if enc.startswith("bgr"):
            img = img[..., 2::-1]
        elif bpp == 4:
            img = img[..., :3]
        return np.ascontiguousarray(img)
    dt = {"16UC1": "u2", "mono16": "u2", "32FC1": "f4"}[enc]
    img = np.ascontiguousarray(rows).view((">" if msg.is_bigendian else "<") + dt).reshape(h, w)
    return img.astype(np.uint16 if dt == "u2" else np.float32, copy=False)


def array_to_image(arr: np.ndarray, encoding: str, header=None):
    """numpy -> sensor_msgs/Image (rgb8 (H, W, 3) uint8, 16UC1 uint16, 32FC1 float32)."""
    from sensor_msgs.msg import Image

    arr = np.ascontiguousarray(arr)
    expect = {"rgb8": (np.uint8, 3), "16UC1": (np.uint16, 2), "32FC1": (np.float32, 2)}
    if encoding not in expect:
        raise ValueError(f"array_to_image: unknown encoding {encoding!r}; choose one of {list(expect)}")
    dt, nd = expect[encoding]
    if arr.dtype != dt or arr.ndim != nd or (nd == 3 and arr.shape[2] != 3):
        raise ValueError(f"array_to_image: {encoding} needs {np.dtype(dt).name} with {nd} dims, got "
                         f"{arr.dtype} {arr.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.strides[0])
    msg.data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return msg


# ---- camera info ----------------------------------------------------------------------------
def camera_info_to_K(msg) -> np.ndarray:
    """3x3 K from sensor_msgs/CameraInfo; BadInput('bad_camera_info') when unusable."""
    k = np.asarray(msg.k, dtype=np.float64)
    if k.size != 9 or not np.isfinite(k).all() or k[0] <= 0 or k[4] <= 0 or int(msg.width) <= 0 or int(msg.height) <= 0:
        raise BadInput("bad_camera_info", f"camera_info: unusable K {k.tolist()} for {msg.width}x{msg.height}")
    return k.reshape(3, 3)


def make_camera_info(K: np.ndarray, width: int, height: int, header=None):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(x) for x in np.asarray(K, np.float64).reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = np.asarray(K, np.float64)
    msg.p = [float(x) for x in P.reshape(-1)]
    return msg


# ---- transforms -----------------------------------------------------------------------------
def quat_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a (normalised) quaternion; BadInput('bad_pose') when zero/non-finite."""
    q = np.array([x, y, z, w], np.float64)
    n = float(np.linalg.norm(q))
    if not np.isfinite(q).all() or n < 1e-9:
        raise BadInput("bad_pose", f"quaternion {q.tolist()} is zero or not finite")
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (scipy's robust conversion)."""
    x, y, z, w = Rotation.from_matrix(np.asarray(R, np.float64)).as_quat()
    return float(x), float(y), float(z), float(w)


def transform_to_matrix(tr) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    T = np.eye(4)
    r, t = tr.rotation, tr.translation
    T[:3, :3] = quat_to_matrix(r.x, r.y, r.z, r.w)
    T[:3, 3] = [t.x, t.y, t.z]
    if not np.isfinite(T).all():
        raise BadInput("bad_pose", f"transform translation not finite: {[t.x, t.y, t.z]}")
    return T


def pose_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    T = np.eye(4)
    o, p_ = pose.orientation, pose.position
    T[:3, :3] = quat_to_matrix(o.x, o.y, o.z, o.w)
    T[:3, 3] = [p_.x, p_.y, p_.z]
    if not np.isfinite(T).all():
        raise BadInput("bad_pose", f"pose position not finite: {[p_.x, p_.y, p_.z]}")
    return T


def matrix_to_pose(T: np.ndarray):
    from geometry_msgs.msg import Pose

    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    o = pose.orientation
    o.x, o.y, o.z, o.w = matrix_to_quat(T[:3, :3])
    return pose


def matrix_to_transform(T: np.ndarray):
    from geometry_msgs.msg import Transform

    tr = Transform()
    tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in T[:3, 3])
    r = tr.rotation
    r.x, r.y, r.z, r.w = matrix_to_quat(T[:3, :3])
    return tr


# ---- point clouds ---------------------------------------------------------------------------
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])


def cloud_to_records(cloud: np.ndarray) -> np.ndarray:
    """(N, 6) xyz + rgb 0..255 -> PointCloud2 records (x, y, z, rgb packed 0x00RRGGBB as float32)."""
    cloud = np.asarray(cloud, np.float32)
    rec = np.empty(len(cloud), CLOUD_DTYPE)
    rec["x"], rec["y"], rec["z"] = cloud[:, 0], cloud[:, 1], cloud[:, 2]
    c = np.clip(np.rint(cloud[:, 3:6]), 0, 255).astype(np.uint32)
    rec["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    return rec


def cloud_to_pointcloud2(records: np.ndarray, header):
    """Structured records with x, y, z (float32) and rgb (float32-packed) -> PointCloud2
    (height 1, little endian, dense)."""
    from sensor_msgs.msg import PointCloud2, PointField

    if records.dtype != CLOUD_DTYPE:
        records = records.astype(CLOUD_DTYPE)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, int(len(records))
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "rgb"))]
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = records.tobytes()
    return msg


def pointcloud2_to_cloud(msg) -> np.ndarray:
    """PointCloud2 with float32 x, y, z and a packed rgb (FLOAT32 or UINT32) or rgba field ->
    (N, 6) float32 xyz + rgb 0..255. Points with non-finite xyz are dropped. BadInput
    ('bad_cloud') for any other layout."""
    from sensor_msgs.msg import PointField

    fields = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in fields]
    color = fields.get("rgb") or fields.get("rgba")
    if missing or color is None:
        raise BadInput("bad_cloud", f"PointCloud2: need fields x, y, z and rgb, got {sorted(fields)}")
    for n in ("x", "y", "z"):
        if fields[n].datatype != PointField.FLOAT32:
            raise BadInput("bad_cloud", f"PointCloud2: field {n} must be FLOAT32, got datatype {fields[n].datatype}")
    if color.datatype not in (PointField.FLOAT32, PointField.UINT32):
        raise BadInput("bad_cloud", f"PointCloud2: field {color.name} must be FLOAT32 or UINT32 (packed), got "
                                    f"datatype {color.datatype}")
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    data = np.frombuffer(msg.data, np.uint8)
    if step <= 0 or int(msg.row_step) != step * int(msg.width) or data.size != n * step:
        raise BadInput("bad_cloud", f"PointCloud2: {data.size} bytes for {n} points of {step} bytes "
                                    f"(row_step {msg.row_step})")
    if max(f.offset for f in (fields["x"], fields["y"], fields["z"], color)) + 4 > step:
        raise BadInput("bad_cloud", "PointCloud2: a field lies past point_step")
    end = ">" if msg.is_bigendian else "<"
    dt = np.dtype({"names": ["x", "y", "z", "c"], "formats": [end + "f4"] * 3 + [end + "u4"],
                   "offsets": [fields["x"].offset, fields["y"].offset, fields["z"].offset, color.offset],
                   "itemsize": step})
    rec = data.view(dt)
    out = np.empty((n, 6), np.float32)
    out[:, 0], out[:, 1], out[:, 2] = rec["x"], rec["y"], rec["z"]
    c = rec["c"]
    out[:, 3] = (c >> 16) & 0xFF
    out[:, 4] = (c >> 8) & 0xFF
    out[:, 5] = c & 0xFF
    return out[np.isfinite(out[:, :3]).all(1)]


# ---- boxes and markers ------------------------------------------------------------------------
def box_to_msg(box: np.ndarray, header, label: str = "", score: float = 0.0):
    """(7,) (cx, cy, cz, dx, dy, dz, yaw) -> r1_msgs/Box3D."""
    from r1_msgs.msg import Box3D

    b = np.asarray(box, np.float64).reshape(-1)
    if b.shape[0] not in (6, 7) or not np.isfinite(b).all():
        raise ValueError(f"box: expected 6 or 7 finite numbers, got {b.tolist()}")
    m = Box3D()
    m.header = header
    m.center.x, m.center.y, m.center.z = float(b[0]), float(b[1]), float(b[2])
    m.size.x, m.size.y, m.size.z = float(b[3]), float(b[4]), float(b[5])
    m.yaw = float(b[6]) if b.shape[0] == 7 else 0.0
    m.label, m.score = label, float(score)
    return m


def msg_to_box(m) -> np.ndarray:
    return np.array([m.center.x, m.center.y, m.center.z, m.size.x, m.size.y, m.size.z, m.yaw], np.float32)


def boxes_to_msgs(boxes: np.ndarray, labels: list[str], header) -> list:
    boxes = np.asarray(boxes).reshape(-1, 7)
    labels = list(labels) + [""] * (len(boxes) - len(labels))
    return [box_to_msg(b, header, lab) for b, lab in zip(boxes, labels)]


def boxes_to_markers(boxes: np.ndarray, labels: list[str], header, ns: str = "r1_answer",
                     lifetime_s: float = 0.0, color=(0.9, 0.15, 0.15, 0.45)):
    """MarkerArray: DELETEALL, then per box a CUBE (centre, yaw, full extents) and a text label
    above it, all in header.frame_id."""
    from builtin_interfaces.msg import Duration
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.ns = ns
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    life = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    labels = list(labels) + [""] * (len(boxes) - len(labels))
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        cube = Marker()
        cube.header, cube.ns, cube.id = header, ns, 2 * i
        cube.type, cube.action = Marker.CUBE, Marker.ADD
        cube.pose.position.x, cube.pose.position.y, cube.pose.position.z = float(b[0]), float(b[1]), float(b[2])
        cube.pose.orientation.z, cube.pose.orientation.w = math.sin(b[6] / 2), math.cos(b[6] / 2)
        cube.scale.x, cube.scale.y, cube.scale.z = (max(float(v), 1e-3) for v in b[3:6])
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = color
        cube.lifetime = life
        text = Marker()
        text.header, text.ns, text.id = header, ns, 2 * i + 1
        text.type, text.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        text.pose.position.x, text.pose.position.y = float(b[0]), float(b[1])
        text.pose.position.z = float(b[2] + b[5] / 2 + 0.1)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.12
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = lab or f"box {i}"
        text.lifetime = life
        out.markers += [cube, text]
    return out


# ---- keyframes ------------------------------------------------------------------------------
def keyframe_to_msg(kf, header, image_frame: str = "", map_id: int = 0):
    """r1_core.views.Keyframe -> r1_msgs/Keyframe (stored colour rgb8, depth 16UC1 mm, its K;
    header in the map frame, images in `image_frame`; the fusion map's `map_id`)."""
    from r1_msgs.msg import Keyframe as KeyframeMsg

    m = KeyframeMsg()
    m.header = header
    m.id = int(kf.keyframe_id) & 0xFFFFFFFF
    m.map_id = int(map_id)
    img_header = type(header)(stamp=header.stamp, frame_id=image_frame or header.frame_id)
    m.color = array_to_image(kf.color, "rgb8", img_header)
    m.depth = array_to_image(kf.depth_mm, "16UC1", img_header)
    h, w = kf.depth_mm.shape
    m.camera_info = make_camera_info(kf.K, w, h, img_header)
    m.pose = matrix_to_pose(kf.T_map_optical)
    return m


def msg_to_keyframe_arrays(m) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """r1_msgs/Keyframe -> (color uint8 HxWx3, depth uint16 mm or float32 m, K 3x3, T 4x4,
    stamp seconds); BadInput on malformed content."""
    color = image_to_array(m.color, "color")
    depth = image_to_array(m.depth, "depth")
    if depth.shape != color.shape[:2]:
        raise BadInput("size_mismatch", f"keyframe {m.id}: depth {depth.shape} != colour {color.shape[:2]}")
    K = camera_info_to_K(m.camera_info)
    T = pose_to_matrix(m.pose)
    return color, depth, K, T, stamp_ns(m.header.stamp) * 1e-9


class MapKeyframes:
    """A downstream node's keyframe input (view_selector, scene_reasoner): the keyframes of
    rgbd_fusion's current map go into `bank`. rgbd_fusion stamps its status and keyframes with
    `map_id` (a new id when it starts, resets or loads a map); the keyframes of another map must
    not be offered as views of this one (nor the latched ones a late joiner receives). The status
    decides the current map (ids are compared for equality, so a restart with a clock that went
    back still begins a new map); until a status has come, keyframes do. Unusable keyframes are
    counted in `ignored` (a DropCounter)."""

    def __init__(self, bank, ignored, log: Callable[[str], None]):
        self.bank = bank
        self.map_id = 0
        self._ignored = ignored
        self._log = log
        self._from_status = False
        self._lock = threading.Lock()

    def on_status(self, msg) -> None:
        """fusion_status: another map_id begins a new map."""
        with self._lock:
            self._from_status = True
            if msg.map_id != self.map_id:
                self._new_map(msg.map_id)

    def on_keyframe(self, msg) -> None:
        """keyframes: one of the current map is offered to the bank."""
        with self._lock:
            if msg.map_id != self.map_id:
                if self._from_status:
                    self._ignored.drop("old_map_keyframe", f"keyframe {msg.id} belongs to fusion map {msg.map_id}, "
                                                           f"not the current one ({self.map_id})")
                    return
                self._new_map(msg.map_id)   # no status yet: the newest keyframes' map, provisionally
        try:
            color, depth, K, T, stamp = msg_to_keyframe_arrays(msg)
            self.bank.offer(color, depth, K, T, stamp)
        except (BadInput, ValueError) as e:
            self._ignored.drop("bad_keyframe", f"keyframe {msg.id}: {e}")

    def _new_map(self, map_id: int) -> None:
        if len(self.bank):
            self._log(f"a new fusion map ({map_id}): the {len(self.bank)} keyframes of the last one dropped")
        self.bank.clear()
        self.map_id = map_id
