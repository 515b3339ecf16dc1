"""Bags: written by the engine, read back with rosbags, deserialised into rclpy messages; a
RealSense-like bag (other topics, bgr8, 32FC1, tf_static-only chain) reads too; clear errors."""
import numpy as np
import pytest

from r1_core.data.bags import BagConfig, TFBuffer, decode_image, read_bag, typestore, write_bag
from r1_core.data.errors import DataFormatError
from r1_core.data.rgbd import RGBDFrame, look_at


def frames(n=4, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    out = []
    for i in range(n):
        T = look_at([1 + 0.1 * i, 2, 1.3], [4, 2.5 - 0.2 * i, 0.8])
        out.append(RGBDFrame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                             rng.integers(0, 5000, (h, w), dtype=np.uint16), K, T))
    return out


@pytest.mark.parametrize("storage, chain", [("mcap", True), ("sqlite3", False)])
def test_write_read_roundtrip(tmp_path, storage, chain):
    fs = frames()
    cfg = BagConfig(storage=storage, static_chain=chain)
    write_bag(tmp_path / "bag", fs, cfg)
    back = list(read_bag(tmp_path / "bag", cfg))
    assert len(back) == len(fs)
    stamps = [f.stamp_ns for f in back]
    np.testing.assert_allclose(np.diff(stamps), 1e9 / 30, atol=1)
    for a, b in zip(fs, back):
        np.testing.assert_array_equal(a.color, b.color)
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_allclose(a.T_map_optical, b.T_map_optical, atol=1e-9)
    with pytest.raises(FileExistsError):
        write_bag(tmp_path / "bag", fs, cfg)


def test_bag_deserialises_into_rclpy_messages(tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    fs = frames(2)
    cfg = BagConfig()
    write_bag(tmp_path / "bag", fs, cfg)
    types = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo, "tf2_msgs/msg/TFMessage": TFMessage}
    seen = set()
    with AnyReader([tmp_path / "bag"], default_typestore=typestore()) as r:
        for conn, t, raw in r.messages():
            msg = deserialize_message(bytes(raw), types[conn.msgtype])
            seen.add(conn.topic)
            if conn.topic == cfg.color_topic:
                assert msg.encoding == "rgb8" and msg.header.frame_id == cfg.optical_frame
                assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t
                np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(48, 64, 3), fs[0].color if t == cfg.start_ns else fs[1].color)
            if conn.topic == cfg.depth_topic:
                assert msg.encoding == "16UC1" and msg.step == 128
            if conn.topic == cfg.tf_static_topic:
                tr = msg.transforms[0]
                assert (tr.header.frame_id, tr.child_frame_id) == (cfg.base_frame, cfg.optical_frame)
                q = tr.transform.rotation
                qv = np.array([q.x, q.y, q.z, q.w]) * np.sign(q.w)   # q and -q are the same rotation
                np.testing.assert_allclose(qv, [-0.5, 0.5, -0.5, 0.5], atol=1e-9)  # REP 103 optical
            if conn.topic == cfg.info_topic:
                assert msg.k[0] == 50.0 and msg.width == 64 and msg.distortion_model == "plumb_bob"
    assert seen == {cfg.color_topic, cfg.depth_topic, cfg.info_topic, cfg.tf_topic, cfg.tf_static_topic}


def _realsense_like(path, fs, T_world_link):
    """A bag as a RealSense driver + static localisation would record it: different topic names,
    bgr8 colour, 32FC1 depth, odom → camera_link on /tf_static and link → optical too."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from r1_core.data.bags import T_LINK_OPTICAL, _header, _transform_msg

    ts = typestore(); T = ts.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cc = w.add_connection("/rs/color", "sensor_msgs/msg/Image", typestore=ts)
        cd = w.add_connection("/rs/depth", "sensor_msgs/msg/Image", typestore=ts)
        ci = w.add_connection("/rs/info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        cs = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
        t0 = 10**18
        st = T["tf2_msgs/msg/TFMessage"](transforms=[_transform_msg(ts, t0, "odom", "cam_link", T_world_link),
                                                     _transform_msg(ts, t0, "cam_link", "cam_optical", T_LINK_OPTICAL)])
        w.write(cs, t0, ts.serialize_cdr(st, "tf2_msgs/msg/TFMessage"))
        for i, f in enumerate(fs):
            t = t0 + i * 33_333_333
            h, wd = f.depth.shape
            info = T["sensor_msgs/msg/CameraInfo"](header=_header(ts, t, "cam_optical"), height=h, width=wd, distortion_model="plumb_bob",
                                                   d=np.zeros(5), k=f.K.reshape(-1), r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
                                                   roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            w.write(ci, t, ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            bgr = np.ascontiguousarray(f.color[..., ::-1])
            padded = np.concatenate([bgr.reshape(h, -1), np.zeros((h, 4), np.uint8)], 1)   # step > width * 3
            img = T["sensor_msgs/msg/Image"](header=_header(ts, t, "cam_optical"), height=h, width=wd, encoding="bgr8",
                                             is_bigendian=0, step=wd * 3 + 4, data=padded.reshape(-1))
            w.write(cc, t, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
            dm = (f.depth.astype(np.float32) / 1000).astype("<f4")
            dep = T["sensor_msgs/msg/Image"](header=_header(ts, t + 1_000_000, "cam_optical"), height=h, width=wd, encoding="32FC1",
                                             is_bigendian=0, step=wd * 4, data=dm.view(np.uint8).reshape(-1))
            w.write(cd, t + 1_000_000, ts.serialize_cdr(dep, "sensor_msgs/msg/Image"))


def test_realsense_like_bag(tmp_path):
    fs = frames(3)
    T_world_link = look_at([0.5, 0.2, 1.0], [2, 1, 1.0]) @ np.linalg.inv(np.array(
        [[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float))
    _realsense_like(tmp_path / "rs", fs, T_world_link)
    cfg = BagConfig(color_topic="/rs/color", depth_topic="/rs/depth", info_topic="/rs/info", world_frame="odom")
    back = list(read_bag(tmp_path / "rs", cfg))
    assert len(back) == 3
    for a, b in zip(fs, back):
        np.testing.assert_array_equal(a.color, b.color)                  # bgr8 with row padding → RGB
        assert b.depth.dtype == np.float32
        np.testing.assert_allclose(b.depth, a.depth / 1000.0, atol=1e-6)  # 32FC1 metres
        np.testing.assert_allclose(b.T_map_optical, look_at([0.5, 0.2, 1.0], [2, 1, 1.0]), atol=1e-9)
    with pytest.raises(ValueError, match="no transform chain from 'map'.*frames present"):
        list(read_bag(tmp_path / "rs", BagConfig(color_topic="/rs/color", depth_topic="/rs/depth", info_topic="/rs/info")))
    with pytest.raises(DataFormatError, match="no topic '/camera/color/image_raw'"):
        list(read_bag(tmp_path / "rs", BagConfig()))


def test_decode_errors_and_tf_interpolation():
    class Msg:
        height, width, step, is_bigendian, encoding = 2, 2, 8, 1, "16UC1"
        data = np.array([0, 1, 0, 2, 9, 9, 9, 9, 1, 0, 0, 0, 9, 9, 9, 9], np.uint8)
    np.testing.assert_array_equal(decode_image(Msg, "t"), [[1, 2], [256, 0]])   # big-endian with padding
    class Bgra:
        height, width, step, is_bigendian, encoding = 1, 2, 8, 0, "bgra8"
        data = np.array([1, 2, 3, 255, 4, 5, 6, 255], np.uint8)
    np.testing.assert_array_equal(decode_image(Bgra, "t"), [[[3, 2, 1], [6, 5, 4]]])
    Bgra.encoding = "rgba8"
    np.testing.assert_array_equal(decode_image(Bgra, "t"), [[[1, 2, 3], [4, 5, 6]]])
    Msg.encoding = "yuv422"
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        decode_image(Msg, "/cam")
    tf = TFBuffer()
    A, B = np.eye(4), np.eye(4)
    B[:3, 3] = [2, 0, 0]
    c, s = np.cos(np.pi / 2), np.sin(np.pi / 2)
    B[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    tf.add("map", "base", 0, A, False)
    tf.add("map", "base", 100, B, False)
    M = tf.lookup("map", "base", 50)
    np.testing.assert_allclose(M[:3, 3], [1, 0, 0])
    np.testing.assert_allclose(np.degrees(np.arctan2(M[1, 0], M[0, 0])), 45)
    with pytest.raises(ValueError, match="no transform map → base"):
        tf.lookup("map", "base", 10**10)
