"""r1_ros pieces that need no ROS graph: transform buffer vs the bag reader's reference,
colour/depth pairing vs an offline brute force, message conversions vs rclpy serialisation,
CDR restamping, declared parameters vs the config dataclasses, config/nodes.yaml, and the
launch file vs `r1 up` (both from r1_ros.graph.plan)."""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from r1_core.config import ConfigError, load_config, read_yaml

ROOT = Path(__file__).resolve().parent.parent


# ---- transform buffer ---------------------------------------------------------------------------
def _rand_T(rng) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng.integers(1 << 30)).as_matrix()
    T[:3, 3] = rng.uniform(-3, 3, 3)
    return T


def _tq(T):
    return T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_quat()


def test_transform_buffer_matches_bag_reference_on_random_trees():
    from r1_core.data.bags import TFBuffer
    from r1_ros.tf_buffer import TransformBuffer

    rng = np.random.default_rng(0)
    for trial in range(20):
        ours, ref = TransformBuffer(cache_s=100.0), TFBuffer()
        # a random tree: frame i's parent is one of frames < i; some links static, some dynamic
        n = int(rng.integers(3, 7))
        names = [f"f{i}" for i in range(n)]
        times = np.sort(rng.choice(np.arange(1, 50), size=6, replace=False)) * 10_000_000
        for i in range(1, n):
            parent = names[int(rng.integers(0, i))]
            if rng.random() < 0.4:
                T = _rand_T(rng)
                ours.add(parent, names[i], 0, *_tq(T), static=True)
                ref.add(parent, names[i], 0, T, static=True)
            else:
                for t in rng.permutation(times):          # arrival order does not matter
                    T = _rand_T(rng)
                    ours.add(parent, names[i], int(t), *_tq(T))
                    ref.add(parent, names[i], int(t), T, static=False)
        for _ in range(10):
            a, b = rng.choice(names, 2, replace=False)
            t = int(rng.integers(times[0], times[-1]))
            got = ours.lookup(a, b, t, tolerance_ns=0)
            want = ref.lookup(a, b, t, tol_ns=0)
            assert np.allclose(got, want, atol=1e-9), (trial, a, b, t)
            assert np.allclose(got @ ours.lookup(b, a, t), np.eye(4), atol=1e-9)


def test_transform_buffer_errors_tolerance_and_bounded_history():
    from r1_ros.conversions import BadInput
    from r1_ros.tf_buffer import PoseError, TransformBuffer

    buf = TransformBuffer(cache_s=1.0)
    q = (0.0, 0.0, 0.0, 1.0)
    for k in range(30):                                   # 3 s of a 10 Hz link; 1 s is kept
        buf.add("map", "cam", k * 100_000_000, (k * 0.1, 0.0, 0.0), q)
    assert np.allclose(buf.lookup("map", "cam", 2_550_000_000)[:3, 3], [2.55, 0, 0])
    assert np.allclose(buf.lookup("map", "cam", 2_950_000_000, tolerance_ns=60_000_000)[:3, 3], [2.9, 0, 0])
    with pytest.raises(PoseError) as e:
        buf.lookup("map", "cam", 3_100_000_000, tolerance_ns=100_000_000)
    assert e.value.reason == "pose_pending"
    with pytest.raises(PoseError) as e:
        buf.lookup("map", "cam", 1_000_000_000, tolerance_ns=100_000_000)   # pruned: older than 1 s
    assert e.value.reason == "stale_pose"
    with pytest.raises(PoseError) as e:
        buf.lookup("map", "elsewhere", 2_500_000_000)
    assert e.value.reason == "no_pose" and "elsewhere" in str(e.value)
    with pytest.raises(BadInput) as e:
        buf.add("map", "cam", 5, (0, 0, 0), (0, 0, 0, 0))
    assert e.value.reason == "bad_pose"
    buf.add("odom", "cam", 2_900_000_000, (0, 0, 0), q)   # re-parented: old history dropped
    with pytest.raises(PoseError) as e:
        buf.lookup("map", "cam", 2_900_000_000)
    assert e.value.reason == "no_pose"


def test_transform_buffer_reads_tf_messages():
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from r1_ros.tf_buffer import TransformBuffer

    rng = np.random.default_rng(1)
    T = _rand_T(rng)
    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = "/map", "base"
    ts.header.stamp.sec, ts.header.stamp.nanosec = 3, 500
    t, q = _tq(T)
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = t
    r = ts.transform.rotation
    r.x, r.y, r.z, r.w = q
    buf = TransformBuffer()
    assert buf.add_tf_message(TFMessage(transforms=[ts])) == 1
    assert np.allclose(buf.lookup("map", "base", 3_000_000_500), T)


# ---- colour / depth pairing -----------------------------------------------------------------------
def _offline_pairs(colors, depths, tol):
    """Reference: colour in stamp order takes the nearest unused depth within tol (earliest on ties)."""
    used, pairs, unmatched = set(), [], []
    for tc in colors:
        cands = [(abs(td - tc), i) for i, td in enumerate(depths) if i not in used and abs(td - tc) <= tol]
        if cands:
            _, i = min(cands)
            used.add(i)
            pairs.append((tc, depths[i]))
        else:
            unmatched.append(tc)
    return pairs, unmatched


@pytest.mark.parametrize("seed", range(6))
def test_pair_sync_matches_offline_greedy(seed):
    from r1_ros.framesync import PairSync

    rng = np.random.default_rng(seed)
    period, tol = 33_000_000, 12_000_000
    base = np.arange(80) * period
    colors = [int(t + rng.integers(-4, 5) * 1_000_000) for t in base if rng.random() > 0.1]
    depths = [int(t + rng.integers(-15, 16) * 1_000_000) for t in base if rng.random() > 0.15]
    depths += [int(t) for t in rng.integers(0, base[-1], 8)]             # stray extra depth frames
    colors, depths = sorted(set(colors)), sorted(set(depths))
    events = sorted([(t, "color") for t in colors] + [(t, "depth") for t in depths])
    sync = PairSync(tol, max_pending=1000)
    pairs, unmatched = [], []
    for t, kind in events:
        p, u = sync.add(kind, t, t)
        pairs += [(tc, td) for tc, _, td, _ in p]
        unmatched += [tc for tc, _ in u]
    p, u = sync.add("depth", 1 << 50, None)                              # flush the tail
    pairs += [(tc, td) for tc, _, td, _ in p]
    unmatched += [tc for tc, _ in u]
    want_pairs, want_unmatched = _offline_pairs(colors, depths, tol)
    assert pairs == want_pairs
    assert unmatched == want_unmatched
    assert sync.pending()["color"] == 0


def test_pair_sync_identical_stamps_pair_at_once_and_queue_is_bounded():
    from r1_ros.framesync import PairSync

    sync = PairSync(10, max_pending=3)
    assert sync.add("depth", 100, "d") == ([], [])
    assert sync.add("color", 100, "c") == ([(100, "c", 100, "d")], [])
    outs = [sync.add("color", t, t) for t in (200, 300, 400, 500)]     # no depth at all
    assert outs[-1][1] == [(200, 200)] and sync.pending()["color"] == 3


def test_pair_sync_survives_stamp_jumps_late_colour_and_lost_depth():
    from r1_ros.framesync import PairSync

    now = [0.0]
    sync = PairSync(10, max_pending=30, clock=lambda: now[0])
    assert sync.add("color", 1000, "c1") == ([], [])
    assert sync.add("depth", 1000, "d1")[0] == [(1000, "c1", 1000, "d1")]
    sync.add("depth", 5000, "d-left-over")            # a depth whose colour never comes
    # a colour from the past whose depth follows it: the left-over newer depth (arrived
    # before it) must not make it unmatched
    assert sync.add("color", 500, "c0") == ([], [])
    assert sync.add("depth", 500, "d0")[0] == [(500, "c0", 500, "d0")]
    # a colour whose depth is lost is given up as soon as a newer depth follows it
    sync.add("color", 7000, "c-lost")
    sync.add("color", 8000, "c2")
    assert sync.add("depth", 8000, "d2") == ([(8000, "c2", 8000, "d2")], [(7000, "c-lost")])
    # ... or, when the depth stream stops, once it waited too long in wall time
    sync.add("color", 9000, "c3")
    now[0] = 0.5
    assert sync.expire(1.0) == ([], [])
    now[0] = 2.0
    assert sync.expire(1.0) == ([], [(9000, "c3")])
    assert sync.pending()["color"] == 0


def test_stamped_cache_nearest_vs_brute_force():
    from r1_ros.framesync import StampedCache

    rng = np.random.default_rng(2)
    c = StampedCache(max_items=50)
    stamps = rng.permutation(rng.choice(10_000, 80, replace=False))
    for t in stamps:
        c.add(int(t), int(t))
    keep = sorted(stamps)[-50:]                          # the cache keeps the 50 newest stamps
    assert len(c) == 50
    for q in rng.integers(0, 10_000, 200):
        want = min(keep, key=lambda t: (abs(t - q), t))
        assert abs(c.nearest(int(q), 10_000) - q) == abs(want - q)
        if abs(want - q) > 0:
            assert c.nearest(int(q), abs(want - q) - 1) is None


def test_drop_counter_logs_once_per_kind_then_throttles():
    from r1_ros.framesync import DropCounter

    now = [0.0]
    lines: list[str] = []
    d = DropCounter(lines.append, throttle_s=10.0, clock=lambda: now[0])
    for _ in range(3):
        d.drop("bad_encoding", "x")
    d.drop("no_camera_info", "y")
    assert d.snapshot() == {"bad_encoding": 3, "no_camera_info": 1} and d.total == 4
    assert [ln.split("]")[0] for ln in lines] == ["dropped frame [bad_encoding", "dropped frame [no_camera_info"]
    now[0] = 11.0
    d.drop("bad_encoding", "x")
    assert len(lines) == 3 and "3 dropped for this reason since the last report" in lines[-1]


# ---- conversions ------------------------------------------------------------------------------------
def _image(arr_bytes: bytes, h, w, step, enc, big=0):
    from sensor_msgs.msg import Image

    m = Image(height=h, width=w, step=step, encoding=enc, is_bigendian=big)
    m.data = arr_bytes
    return m


def test_image_decoding_vs_numpy_with_padding_and_endianness():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from r1_ros.conversions import BadInput, array_to_image, image_to_array

    rng = np.random.default_rng(3)
    h, w = 5, 7
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pad = np.zeros((h, 3), np.uint8)
    for enc, img in (("rgb8", rgb), ("bgr8", rgb[..., ::-1])):
        raw = np.concatenate([img.reshape(h, -1), pad], 1).tobytes()        # step > width * 3
        got = image_to_array(deserialize_message(serialize_message(_image(raw, h, w, w * 3 + 3, enc)), Image), "color")
        assert np.array_equal(got, rgb)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 9, np.uint8)], 2)
    assert np.array_equal(image_to_array(_image(rgba.tobytes(), h, w, w * 4, "rgba8"), "color"), rgb)
    assert np.array_equal(image_to_array(_image(rgba[..., [2, 1, 0, 3]].tobytes(), h, w, w * 4, "bgra8"), "color"), rgb)
    d16 = rng.integers(0, 65535, (h, w), dtype=np.uint16)
    assert np.array_equal(image_to_array(_image(d16.astype(">u2").tobytes(), h, w, w * 2, "16UC1", 1), "depth"), d16)
    msg = deserialize_message(serialize_message(array_to_image(d16, "16UC1")), Image)
    assert np.array_equal(image_to_array(msg, "depth"), d16)
    d32 = rng.uniform(0, 5, (h, w)).astype(np.float32)
    d32[0, 0] = np.nan
    got = image_to_array(array_to_image(d32, "32FC1"), "depth")
    assert got.dtype == np.float32 and np.array_equal(got, d32, equal_nan=True)
    cases = [(_image(rgb.tobytes(), h, w, w * 3, "yuv422"), "color", "bad_encoding"),
             (_image(d16.tobytes(), h, w, w * 2, "16UC1"), "color", "bad_encoding"),
             (_image(rgb.tobytes()[:-1], h, w, w * 3, "rgb8"), "color", "bad_image"),
             (_image(rgb.tobytes(), h, w, w * 2, "rgb8"), "color", "bad_image"),
             (_image(b"", 0, 0, 0, "rgb8"), "color", "bad_image")]
    for msg, what, reason in cases:
        with pytest.raises(BadInput) as e:
            image_to_array(msg, what)
        assert e.value.reason == reason


def test_pointcloud2_round_trip_and_foreign_layouts():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from r1_core.geometry.fusion import FusionMap
    from r1_ros.conversions import BadInput, cloud_to_pointcloud2, cloud_to_records, pointcloud2_to_cloud

    rng = np.random.default_rng(4)
    cloud = np.concatenate([rng.uniform(-3, 3, (500, 3)), rng.integers(0, 256, (500, 3))], 1).astype(np.float32)
    msg = cloud_to_pointcloud2(cloud_to_records(cloud), Header(frame_id="map"))
    back = pointcloud2_to_cloud(deserialize_message(serialize_message(msg), PointCloud2))
    assert np.array_equal(back, cloud)
    # the fusion map's own PointCloud2 records parse to its snapshot
    fm = FusionMap(min_observations=1)
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    fm.integrate(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), np.full((24, 32), 1500, np.uint16), K, np.eye(4))
    snap = fm.snapshot()
    got = pointcloud2_to_cloud(cloud_to_pointcloud2(fm.snapshot_records(), Header(frame_id="map")))
    assert np.allclose(got[:, :3], snap[:, :3]) and np.array_equal(got[:, 3:], np.rint(snap[:, 3:]))
    # a foreign layout: padding, an extra field, uint32 rgba, a NaN point
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "rgba"], "formats": ["<f4"] * 4 + ["<u4"],
                   "offsets": [0, 4, 8, 16, 20], "itemsize": 32})
    rec = np.zeros(4, dt)
    rec["x"], rec["y"], rec["z"] = [1, 2, np.nan, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    rec["rgba"] = [0xFF102030, 0xFF000000, 0, 0x00FFFFFF]
    m = PointCloud2(height=2, width=2, point_step=32, row_step=64, is_dense=False,
                    fields=[PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
                            for n, o in (("x", 0), ("y", 4), ("z", 8), ("intensity", 16))]
                    + [PointField(name="rgba", offset=20, datatype=PointField.UINT32, count=1)])
    m.data = rec.tobytes()
    got = pointcloud2_to_cloud(m)
    assert np.array_equal(got, np.array([[1, 5, 9, 0x10, 0x20, 0x30], [2, 6, 10, 0, 0, 0], [4, 8, 12, 255, 255, 255]],
                                        np.float32))
    m.fields = m.fields[:3]
    with pytest.raises(BadInput, match="need fields x, y, z and rgb"):
        pointcloud2_to_cloud(m)


def test_boxes_markers_keyframes_and_quaternions():
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker

    from r1_core.views.bank import BankConfig, KeyframeBank
    from r1_ros.conversions import (boxes_to_markers, boxes_to_msgs, keyframe_to_msg, matrix_to_pose, msg_to_box,
                                    msg_to_keyframe_arrays, pose_to_matrix, quat_to_matrix)

    rng = np.random.default_rng(5)
    for _ in range(20):
        q = rng.normal(size=4)
        assert np.allclose(quat_to_matrix(*q), Rotation.from_quat(q).as_matrix())
        T = _rand_T(rng)
        assert np.allclose(pose_to_matrix(matrix_to_pose(T)), T)
    boxes = np.array([[1, 2, 0.5, 0.4, 0.6, 0.9, 0.3], [0, 0, 1, 1, 1, 1, -2.0]], np.float32)
    header = Header(frame_id="map")
    msgs = boxes_to_msgs(boxes, ["chair"], header)
    assert [m.label for m in msgs] == ["chair", ""] and all(m.header.frame_id == "map" for m in msgs)
    assert np.allclose(np.stack([msg_to_box(m) for m in msgs]), boxes)
    arr = boxes_to_markers(boxes, ["chair", "bed"], header)
    assert arr.markers[0].action == Marker.DELETEALL
    cubes = [m for m in arr.markers if m.type == Marker.CUBE]
    texts = [m.text for m in arr.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert texts == ["chair", "bed"] and len(cubes) == 2
    for c, b in zip(cubes, boxes):
        o = c.pose.orientation
        R = Rotation.from_quat([o.x, o.y, o.z, o.w]).as_matrix()
        assert np.allclose(R, Rotation.from_euler("z", b[6]).as_matrix(), atol=1e-6)
        assert np.allclose([c.scale.x, c.scale.y, c.scale.z], b[3:6]) and c.header.frame_id == "map"
    bank = KeyframeBank(BankConfig(store_width=32, min_voxels=1))
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    T = _rand_T(rng)
    assert bank.offer(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), np.full((48, 64), 2000, np.uint16), K, T, 12.5)
    kf = bank.keyframes()[-1]
    header.stamp.sec, header.stamp.nanosec = 12, 500_000_000
    color, depth, K2, T2, stamp = msg_to_keyframe_arrays(keyframe_to_msg(kf, header, "cam_optical"))
    assert np.array_equal(color, kf.color) and np.array_equal(depth, kf.depth_mm)
    assert np.allclose(K2, kf.K) and np.allclose(T2, kf.T_map_optical) and stamp == 12.5


# ---- restamping -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("little_endian", [True, False])
def test_restamp_shifts_every_stamp_and_nothing_else(little_endian):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from r1_core.data.bags import typestore
    from r1_ros.bag_replay import Restamper

    ts = typestore()
    T = ts.types
    time_t, header_t = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
    img = T["sensor_msgs/msg/Image"](header=header_t(stamp=time_t(sec=10, nanosec=900_000_000), frame_id="cam"),
                                      height=2, width=3, encoding="rgb8", is_bigendian=0, step=9,
                                      data=np.arange(18, dtype=np.uint8))
    tr = T["geometry_msgs/msg/Transform"](translation=T["geometry_msgs/msg/Vector3"](x=1.0, y=2.0, z=3.0),
                                          rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    tfm = T["tf2_msgs/msg/TFMessage"](transforms=[
        T["geometry_msgs/msg/TransformStamped"](header=header_t(stamp=time_t(sec=s, nanosec=5), frame_id="map"),
                                                child_frame_id=f"c{s}", transform=tr) for s in (10, 11)])
    off = 2_250_000_000
    rs = Restamper(ts)
    raw = bytes(ts.serialize_cdr(img, "sensor_msgs/msg/Image", little_endian=little_endian))
    got = deserialize_message(rs(raw, "sensor_msgs/msg/Image", off), Image)
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (13, 150_000_000)
    assert got.header.frame_id == "cam" and list(got.data) == list(range(18)) and got.step == 9
    raw = bytes(ts.serialize_cdr(tfm, "tf2_msgs/msg/TFMessage", little_endian=little_endian))
    got = deserialize_message(rs(raw, "tf2_msgs/msg/TFMessage", off), TFMessage)
    assert [(t.header.stamp.sec, t.header.stamp.nanosec, t.child_frame_id) for t in got.transforms] == \
        [(12, 250_000_005, "c10"), (13, 250_000_005, "c11")]
    assert got.transforms[1].transform.translation.z == 3.0
    assert rs.header_first("sensor_msgs/msg/CameraInfo") and not rs.header_first("tf2_msgs/msg/TFMessage")
    info = T["sensor_msgs/msg/CameraInfo"](
        header=header_t(stamp=time_t(sec=1, nanosec=0), frame_id="cam"), height=4, width=5, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.arange(9.0), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    raw = bytes(ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo", little_endian=little_endian))
    got = deserialize_message(rs(raw, "sensor_msgs/msg/CameraInfo", -500_000_000), CameraInfo)
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (0, 500_000_000) and list(got.k) == list(range(9))


# ---- parameters and configs ------------------------------------------------------------------------------
def _node_configs():
    from r1_ros.configs import NODE_CONFIGS
    return NODE_CONFIGS


@pytest.mark.parametrize("node", ["rgbd_fusion", "view_selector", "scene_reasoner", "bag_replay"])
def test_declared_parameters_cover_the_config_with_docs_and_round_trip(node):
    from rcl_interfaces.msg import ParameterType

    from r1_ros.params import descriptor, parameter_specs, to_mapping

    cls = _node_configs()[node]
    specs = parameter_specs(cls)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for s in specs:
        assert s.help, s.name              # own fields: metadata; r1_core fields: their source comment
        d = descriptor(s)
        assert d.read_only == (not s.dynamic) and d.description == s.help
        if s.range is not None and d.type == ParameterType.PARAMETER_DOUBLE:
            assert d.floating_point_range[0].from_value == s.range[0]
        if s.range is not None and d.type == ParameterType.PARAMETER_INTEGER:
            assert d.integer_range[0].to_value == s.range[1]
            assert s.range[0] <= s.default <= s.range[1], s.name
    # the declared defaults rebuild the dataclass defaults exactly
    assert load_config(cls, to_mapping(specs, {s.name: s.default for s in specs})) == cls()


def test_core_field_help_comes_from_the_source_comment():
    from r1_core.geometry.fusion import FusionConfig
    from r1_ros.params import field_comments, parameter_specs

    comments = field_comments(FusionConfig)
    assert comments["voxel_size"] == "metres" and "flying-pixel" in comments["edge_threshold"]
    by = {s.name: s for s in parameter_specs(_node_configs()["rgbd_fusion"])}
    assert by["fusion.voxel_size"].range == (0.001, 1.0)                 # range from CORE_PARAM_DOCS
    if "fusion.support_ratio" in by:                                      # help from the comment
        assert by["fusion.support_ratio"].help == field_comments(FusionConfig)["support_ratio"]


def test_parameter_validation_rejects_with_the_config_message():
    from r1_ros.configs import FusionNodeConfig
    from r1_ros.params import check_range, parameter_specs, to_mapping

    specs = parameter_specs(FusionNodeConfig)
    by = {s.name: s for s in specs}
    values = {s.name: s.default for s in specs}
    with pytest.raises(ConfigError, match=r"sync_tolerance_s: expected 0.0 <= value <= 1.0, got 2.0"):
        check_range(by["sync_tolerance_s"], 2.0)
    values["pose_source"] = "gps"
    with pytest.raises(ConfigError, match=r"unknown pose_source 'gps'; choose one of \['tf', 'pose', 'odometry'\]"):
        load_config(FusionNodeConfig, to_mapping(specs, values))
    values["pose_source"] = "tf"
    values["fusion.crop_min"], values["fusion.crop_max"] = [0.0, 0.0, 0.0], []
    with pytest.raises(ConfigError, match="crop_min and crop_max go together"):
        load_config(FusionNodeConfig, to_mapping(specs, values))


def test_nodes_yaml_loads_for_every_node_and_matches_views_yaml():
    from r1_core.views.bank import BankConfig
    from r1_core.views.select import SelectorConfig
    from r1_ros.configs import downstream_bank, load_node_config

    nodes = ROOT / "config" / "nodes.yaml"
    cfgs = {n: load_node_config(c, nodes, n) for n, c in _node_configs().items()}
    assert cfgs["rgbd_fusion"].fusion.pixel_stride == 2
    views = read_yaml(ROOT / "config" / "views.yaml")
    # the nodes' keyframe bank and selector follow config/views.yaml (no second set of values)
    assert cfgs["rgbd_fusion"].bank == load_config(BankConfig, views["bank"])
    assert cfgs["scene_reasoner"].selector == load_config(SelectorConfig, views["selector"])
    assert cfgs["view_selector"].selector == cfgs["scene_reasoner"].selector
    down = downstream_bank(cfgs["scene_reasoner"].bank)
    assert (down.min_translation_m, down.min_rotation_deg, down.min_new_fraction) == (0.0, 0.0, 0.0)
    assert down.max_keyframes == cfgs["rgbd_fusion"].bank.max_keyframes
    with pytest.raises(ConfigError, match=r"\[rgbd_fusion\].*unknown key\(s\) \['voxel'\]"):
        load_node_config(_node_configs()["rgbd_fusion"], {"rgbd_fusion": {"ros__parameters": {"voxel": 1}}},
                         "rgbd_fusion")


def test_checkpoint_paths_resolve_package_uris(tmp_path):
    from r1_ros.configs import resolve_path

    assert resolve_path("package://r1_core/assets/r1-nano") == ROOT / "r1_core" / "assets" / "r1-nano"
    assert resolve_path(str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="not installed"):
        resolve_path("package://no_such_pkg_r1/x")


# ---- launch file vs r1 up -------------------------------------------------------------------------------
class _Recorder:
    """Stand-ins for launch / launch_ros classes: record constructor arguments."""

    def __init__(self, kind):
        self.kind = kind

    def __call__(self, *args, **kwargs):
        return types.SimpleNamespace(kind=self.kind, args=args, kwargs=kwargs)


def _run_launch_file(monkeypatch, values: dict[str, str]):
    """Execute launch/scene_reasoner.launch.py against recording stand-ins; returns
    (declared arguments, environment actions, Node actions)."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda actions: list(actions)
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = _Recorder("declare")
    actions.OpaqueFunction = _Recorder("opaque")
    actions.SetEnvironmentVariable = _Recorder("env")
    subs = types.ModuleType("launch.substitutions")

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    subs.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = _Recorder("node")
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
                      "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    path = ROOT / "launch" / "scene_reasoner.launch.py"
    ns: dict = {"__name__": "scene_reasoner_launch", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    desc = ns["generate_launch_description"]()
    declared = {a.args[0]: a.kwargs["default_value"] for a in desc if a.kind == "declare"}
    (opaque,) = [a for a in desc if a.kind == "opaque"]
    context = {**declared, **values}
    produced = opaque.kwargs["function"](context)
    return declared, [a for a in produced if a.kind == "env"], [a for a in produced if a.kind == "node"]


def _launch_ros_argv(node) -> list[str]:
    """What launch_ros runs for a Node action: executable, arguments, then --ros-args with the
    node name, namespace, parameter files (a dict becomes a params file) and remappings."""
    kw = node.kwargs
    out = [kw["executable"], *kw["arguments"], "--ros-args", "-r", f"__node:={kw['name']}"]
    if kw["namespace"]:
        out += ["-r", f"__ns:=/{kw['namespace'].strip('/')}"]
    for p_ in kw["parameters"]:
        out += ["--params-file", p_ if isinstance(p_, str) else ("DICT", tuple(sorted(p_.items())))]
    for src, dst in kw["remappings"]:
        out += ["-r", f"{src}:={dst}"]
    return out


def _bringup_argv(cmd: list[str]) -> list[str]:
    """`r1 up`'s command with `python -m r1_ros.cli` as `r1` and the overrides file read back."""
    import yaml

    assert cmd[:3] == [sys.executable, "-m", "r1_ros.cli"]
    out = ["r1"]
    it = iter(cmd[3:])
    params = 0
    for a in it:
        if a == "--params-file":
            f = next(it)
            params += 1
            if params == 1:
                out += [a, f]
                continue
            data = yaml.safe_load(Path(f).read_text())["/**"]["ros__parameters"]
            flat = {}

            def walk(d, prefix=""):
                for k, v in d.items():
                    if isinstance(v, dict):
                        walk(v, f"{prefix}{k}.")
                    else:
                        flat[f"{prefix}{k}"] = v
            walk(data)
            out += [a, ("DICT", tuple(sorted(flat.items())))]
        else:
            out.append(a)
    return out


@pytest.mark.parametrize("values", [
    {},
    {"bag": "/data/run1", "bag_loop": "true", "bag_rate": "2.5", "device": "cuda:1", "namespace": "robot1",
     "camera_namespace": "/d435", "color_topic": "/elsewhere/rgb", "use_view_selector": "false",
     "preset": "smollm2-135m", "params_file": "/etc/r1/nodes.yaml"},
    {"depth_source": "estimated", "checkpoint": "/models/nano"},
])
def test_launch_file_and_r1_up_start_the_same_processes(monkeypatch, values):
    from r1_ros.bringup import BringUp
    from r1_ros.graph import LAUNCH_ARGUMENTS, local_dds_environment

    declared, env, nodes = _run_launch_file(monkeypatch, values)
    assert declared == {a.name: a.default for a in LAUNCH_ARGUMENTS}
    assert {e.args for e in env} == set(local_dds_environment().items())
    graph = BringUp(values)
    try:
        assert [n.kwargs["name"] for n in nodes] == [s.name for s in graph.specs]
        assert all(n.kwargs["package"] == "r1_ros" for n in nodes)
        for n in nodes:
            assert _launch_ros_argv(n) == _bringup_argv(graph.commands[n.kwargs["name"]])
        assert local_dds_environment().items() <= graph.env.items()
    finally:
        graph._tmp.cleanup()


def test_launch_file_uses_only_the_standard_api():
    tree = ast.parse((ROOT / "launch" / "scene_reasoner.launch.py").read_text())
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {("launch", "LaunchDescription"), ("launch.actions", "DeclareLaunchArgument"),
            ("launch_ros.actions", "Node")} <= imports
    assert {m for m, _ in imports} <= {"launch", "launch.actions", "launch.substitutions", "launch_ros.actions",
                                       "r1_ros.graph"}


def test_launch_arguments_are_checked():
    from r1_ros.bringup import parse_launch_args
    from r1_ros.graph import plan

    with pytest.raises(ValueError, match=r"unknown launch argument\(s\) \['camera'\]; valid: \['params_file'"):
        plan({"camera": "/x"})
    with pytest.raises(ValueError, match="bag_loop: expected true or false, got 'maybe'"):
        plan({"bag": "/b", "bag_loop": "maybe"})
    with pytest.raises(ValueError, match="bag_wait_for_fusion: expected true or false, got 'ja'"):
        plan({"bag_wait_for_fusion": "ja"})           # without a bag too
    with pytest.raises(ValueError, match="pose_topic: expected a topic name, got ''"):
        plan({"pose_topic": ""})
    with pytest.raises(ValueError, match="depth_source: unknown 'lidar'"):
        plan({"depth_source": "lidar"})
    ns = types.SimpleNamespace()                       # no --name options given
    assert parse_launch_args(["bag:=/b", "device:=cuda"], ns) == {"bag": "/b", "device": "cuda"}
    with pytest.raises(ValueError, match="expected name:=value"):
        parse_launch_args(["bag=/b"], ns)
    specs = {s.name: s for s in plan({"depth_source": "estimated"})}
    assert "depth/image_raw" not in dict(specs["rgbd_fusion"].remappings)
    assert "bag_replay" not in specs
    remaps = dict(plan({})[0].remappings)               # pose and odom stay as named unless given
    assert "pose" not in remaps and "odom" not in remaps and remaps["color/image_raw"] == "/camera/color/image_raw"
    remaps = dict(plan({"pose_topic": "/slam/camera_pose", "odom_topic": "wheel/odom"})[0].remappings)
    assert remaps["pose"] == "/slam/camera_pose" and remaps["odom"] == "wheel/odom"


def test_doctor_checks_the_node_configs(monkeypatch, tmp_path):
    import r1_ros.graph
    from r1_ros.doctor import _node_configs

    ok = _node_configs()
    assert ok.ok and "rgbd_fusion, view_selector, scene_reasoner" in ok.detail
    bad = tmp_path / "nodes.yaml"
    bad.write_text("rgbd_fusion:\n  ros__parameters:\n    pose_source: gps\n")
    monkeypatch.setattr(r1_ros.graph, "default_params_file", lambda: str(bad))
    check = _node_configs()
    assert not check.ok and "unknown pose_source 'gps'" in check.detail and "[rgbd_fusion]" in check.detail
    # a robot's own file, named on the command line: a typo is named; a wildcard key only some nodes have is not
    robot = tmp_path / "robot.yaml"
    robot.write_text("/**:\n  ros__parameters:\n    map_frame: odom\nrgbd_fusion:\n  ros__parameters:\n"
                     "    fusion: {voxel_sise: 0.03}\n")
    check = _node_configs(str(robot))
    assert not check.ok and "voxel_sise" in check.detail and "[rgbd_fusion]" in check.detail
    robot.write_text("/**:\n  ros__parameters:\n    map_frame: odom\n    queue_size: 5\n"
                     "scene_reasoner:\n  ros__parameters:\n    use_sim_time: true\n")     # rclpy's own: fine
    check = _node_configs(str(robot))
    assert check.ok and str(robot) in check.detail
    robot.write_text("/**:\n  ros__parameters:\n    map_frme: odom\n")                     # no node has it
    check = _node_configs(str(robot))
    assert not check.ok and "['/**']: no r1 node has the parameter(s) ['map_frme']" in check.detail
    robot.write_text("/**:\n  ros__parameters:\n    map_frame: odom\n    queue_size: 5\n")
    from r1_ros.configs import FusionNodeConfig, ViewSelectorNodeConfig, load_node_config
    assert load_node_config(FusionNodeConfig, robot, "rgbd_fusion").queue_size == 5
    assert load_node_config(ViewSelectorNodeConfig, robot, "view_selector").map_frame == "odom"


def test_shared_memory_profile_only_with_discovery_on_loopback(monkeypatch):
    from r1_ros.graph import DISCOVERY_VAR, FASTDDS_PROFILE_VAR, local_dds_environment

    monkeypatch.delenv(DISCOVERY_VAR, raising=False)
    monkeypatch.delenv(FASTDDS_PROFILE_VAR, raising=False)
    env = local_dds_environment()          # the default: this machine only, through shared memory
    assert env[DISCOVERY_VAR] == "LOCALHOST" and env[FASTDDS_PROFILE_VAR].endswith("r1_ros/fastdds_local.xml")
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in Path(env[FASTDDS_PROFILE_VAR]).read_text()
    monkeypatch.setenv(DISCOVERY_VAR, "SUBNET")   # other machines: Fast DDS's own UDP + SHM transports
    assert local_dds_environment() == {DISCOVERY_VAR: "SUBNET"}
    monkeypatch.setenv(FASTDDS_PROFILE_VAR, "/etc/dds/robot.xml")       # the user's profile is kept
    assert local_dds_environment() == {DISCOVERY_VAR: "SUBNET", FASTDDS_PROFILE_VAR: "/etc/dds/robot.xml"}


def test_reasoner_names_a_cuda_device_torch_does_not_have():
    from r1_ros.configs import ReasonerNodeConfig
    from r1_ros.scene_reasoner import check_model_source

    with pytest.raises(ValueError, match=r"device 'cuda:99': torch sees \d+ CUDA device\(s\) .*; use device:=cpu"):
        check_model_source(ReasonerNodeConfig(device="cuda:99"))
    check_model_source(ReasonerNodeConfig(device="cpu"))          # the bundled checkpoint is there


def test_map_keyframes_follow_the_fusion_status_and_drop_other_maps_keyframes(monkeypatch):
    import r1_ros.conversions as conv

    class Bank:                                   # counts clears and offers
        clears = offers = 0

        def __len__(self):
            return 0

        def clear(self):
            self.clears += 1

        def offer(self, *arrays):
            self.offers += 1

    class Drops:
        def __init__(self):
            self.reasons: list[str] = []

        def drop(self, reason, message):
            self.reasons.append(reason)

    monkeypatch.setattr(conv, "msg_to_keyframe_arrays", lambda msg: (None,) * 5)   # the map logic alone

    def msg(map_id):
        return types.SimpleNamespace(map_id=map_id, id=1)

    bank, drops = Bank(), Drops()
    m = conv.MapKeyframes(bank, drops, print)

    def admitted(map_id) -> bool:                 # offered to the bank, else dropped as another map's
        offers, dropped = bank.offers, len(drops.reasons)
        m.on_keyframe(msg(map_id))
        assert (bank.offers - offers) + (len(drops.reasons) - dropped) == 1
        assert drops.reasons[dropped:] in ([], ["old_map_keyframe"])
        return bank.offers > offers

    # a late joiner: latched keyframes of an old map, then the new map's, before any status
    assert admitted(5) and admitted(5) and admitted(9)
    assert (bank.clears, m.map_id) == (2, 9)
    m.on_status(msg(9))                           # the status agrees: nothing new
    assert bank.clears == 2 and not admitted(5) and admitted(9)
    # a reset, or a restart whose clock went back: the status decides, by equality
    m.on_status(msg(3))
    assert (bank.clears, m.map_id) == (3, 3) and not admitted(9) and admitted(3)
