"""rgbd_fusion across processes: good frames are fused; every kind of bad input (wrong
encoding, truncated data, mismatched sizes, zero / NaN depth, missing camera_info, stale or
missing pose, out-of-order stamps, a huge image, a colour frame without depth) is dropped,
counted in FusionStatus by reason and logged once per kind, the map stays exactly as it was,
and the node keeps fusing; a frame fused at an older pose is counted and logged; map services;
clean SIGINT shutdown."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from r1_ros.graph import local_dds_environment  # noqa: E402

pytestmark = pytest.mark.ros
# The r1 nodes run with the shared-memory Fast DDS profile (r1_ros.graph.local_dds_environment);
# this process's own participants must use it too, and Fast DDS reads it once per process, at
# the first participant: set it while the test modules are collected, before any rclpy.init().
os.environ.update(local_dds_environment())
ROOT = Path(__file__).resolve().parent.parent
OPTICAL = "camera_color_optical_frame"
T_LINK_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], np.float64)
BASE = 1_000_000_000_000            # our own stamps: t = 1000 s + ...
REASONS = ["bad_encoding", "bad_image", "size_mismatch", "no_valid_depth", "unregistered_depth", "no_camera_info",
           "stale_pose",
           "no_pose", "out_of_order", "too_large", "unsynced"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from r1_core.data.bags import read_bag
    from r1_core.data.synthetic.demo import ensure_demo_assets

    assets = ensure_demo_assets(tmp_path_factory.mktemp("demo"), frames=12)
    return list(read_bag(assets.bag))


class FusionProcess:
    def __init__(self, tmp: Path, *params: str):
        from r1_ros.graph import local_dds_environment

        self.env = {**os.environ, **local_dds_environment()}
        cmd = [sys.executable, "-m", "r1_ros.cli", "node", "rgbd_fusion", "--ros-args",
               "--params-file", str(ROOT / "config" / "nodes.yaml"),
               "-p", "log_throttle_s:=1000.0", "-p", "frame_wait_s:=1.0", "-p", "max_image_pixels:=400000",
               "-p", "status_rate_hz:=20.0", "-p", "cloud_rate_hz:=5.0", "-p", "queue_size:=100",
               "-r", "color/image_raw:=/cam/color", "-r", "depth/image_raw:=/cam/depth",
               "-r", "color/camera_info:=/cam/info"] + [a for kv in params for a in ("-p", kv)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=5)
        return rc


class Client:
    """Publishes camera topics like a driver; reads status; calls the map services."""

    def __init__(self, best_effort: bool = False):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from r1_msgs.msg import FusionStatus
        from r1_ros import qos

        rclpy.init()
        self.node = rclpy.create_node("fusion_test_client")
        camera = qos.sensor(10, best_effort=best_effort)      # best effort: a sensor-data QoS driver
        self.color = self.node.create_publisher(Image, "/cam/color", camera)
        self.depth = self.node.create_publisher(Image, "/cam/depth", camera)
        self.info = self.node.create_publisher(CameraInfo, "/cam/info", camera)
        self.tf = self.node.create_publisher(TFMessage, "/tf", qos.TF)
        self.tf_static = self.node.create_publisher(TFMessage, "/tf_static", qos.TF_STATIC)
        self.status = None
        self.node.create_subscription(FusionStatus, "fusion_status", self._on_status, qos.STATUS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_status(self, msg) -> None:
        self.status = msg

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        rclpy.shutdown()

    def wait(self, cond, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; last status: {self.status}"
            time.sleep(0.02)

    def settled(self, fused: int | None = None, dropped: int | None = None, timeout: float = 30.0):
        """Wait until every frame that came in is fused or dropped (and the given totals hold)."""
        def ok():
            s = self.status
            if s is None or s.frames_in != s.frames_fused + s.frames_dropped:
                return False
            return (fused is None or s.frames_fused == fused) and (dropped is None or s.frames_dropped == dropped)
        self.wait(ok, f"fused={fused} dropped={dropped}", timeout)
        return self.status

    def call(self, srv_type, name: str, request):
        c = self.node.create_client(srv_type, name)
        assert c.wait_for_service(timeout_sec=30), name
        res = c.call(request, timeout_sec=30)
        self.node.destroy_client(c)
        return res


def _stamp(ns: int):
    from r1_ros.conversions import ns_to_stamp
    return ns_to_stamp(ns)


def _tf(parent: str, child: str, T: np.ndarray, ns: int):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from r1_ros.conversions import matrix_to_transform

    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = parent, child
    ts.header.stamp = _stamp(ns)
    ts.transform = matrix_to_transform(T)
    return TFMessage(transforms=[ts])


def _send(c: Client, f, ns: int, *, color=None, depth=None, info=True, tf=True, frame_id=OPTICAL,
          send_depth=True) -> None:
    """One camera frame: /tf (map -> camera_link), camera_info, colour, depth - all at stamp ns."""
    from std_msgs.msg import Header

    from r1_ros.conversions import array_to_image, make_camera_info

    header = Header(stamp=_stamp(ns), frame_id=frame_id)
    if tf:
        c.tf.publish(_tf("map", "camera_link", f.T_map_optical @ np.linalg.inv(T_LINK_OPTICAL), ns))
    if info:
        c.info.publish(make_camera_info(f.K, 640, 480, header))
    c.color.publish(color if color is not None else array_to_image(f.color, "rgb8", header))
    if send_depth:
        c.depth.publish(depth if depth is not None else array_to_image(f.depth, "16UC1", header))


def _raw_image(h: int, w: int, enc: str, data: bytes, step: int, ns: int):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    m = Image(height=h, width=w, encoding=enc, step=step, is_bigendian=0)
    m.header = Header(stamp=_stamp(ns), frame_id=OPTICAL)
    m.data = data
    return m


def _map_arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in ("keys", "sums", "observations", "last_seen")}


def test_bad_inputs_are_dropped_counted_logged_once_and_leave_the_map_intact(frames, tmp_path):
    from r1_msgs.srv import MapFile
    from std_srvs.srv import Trigger

    from std_msgs.msg import Header

    from r1_ros.conversions import array_to_image
    proc = FusionProcess(tmp_path)
    client = Client()
    try:
        for pub in (client.color, client.depth, client.info, client.tf):
            client.wait(lambda: pub.get_subscription_count() > 0, f"the node subscribing {pub.topic_name}", 60)
        t = BASE
        step = 50_000_000
        # warm-up: the first messages after discovery can take seconds (reliable resends), so
        # send good frames until one is fused; what happened to them is the baseline
        deadline = time.monotonic() + 60
        while client.status is None or client.status.frames_fused == 0:
            assert time.monotonic() < deadline, f"no frame fused in 60 s: {client.status}"
            client.tf_static.publish(_tf("camera_link", OPTICAL, T_LINK_OPTICAL, BASE))
            t += step
            _send(client, frames[0], t)
            time.sleep(0.5)
        time.sleep(1.5)                           # stragglers of the warm-up arrive
        base = client.settled()
        base_counts = dict(zip(base.drop_reasons, (int(n) for n in base.drop_counts)))
        fused0, dropped0 = base.frames_fused, base.frames_dropped
        good = []
        for i in range(1, 4):                    # three more good frames, 50 ms apart
            t += step
            good.append(t)
            _send(client, frames[i], t)
            client.settled(fused=fused0 + i)
        status = client.settled(fused=fused0 + 3, dropped=dropped0)
        assert status.num_voxels > 1000
        before = tmp_path / "before.npz"
        assert client.call(MapFile, "/rgbd_fusion/save_map", MapFile.Request(path=str(before))).success
        voxels = status.num_voxels
        fused = fused0 + 3

        f = frames[5]
        H, W = 480, 640
        bad = {
            "bad_encoding": lambda ns: _send(client, f, ns, color=_raw_image(H, W, "yuv422", bytes(H * W * 2), W * 2, ns)),
            "bad_image": lambda ns: _send(client, f, ns, color=_raw_image(H, W, "rgb8", bytes(H * W * 3 - 1), W * 3, ns)),
            "size_mismatch": lambda ns: _send(client, f, ns, depth=_raw_image(240, 320, "16UC1", f.depth[::2, ::2].tobytes(),
                                                                             640, ns)),
            "no_valid_depth": lambda ns: _send(client, f, ns, depth=_raw_image(H, W, "16UC1", bytes(H * W * 2), W * 2, ns)),
            "no_valid_depth/nan": lambda ns: _send(
                client, f, ns, depth=_raw_image(H, W, "32FC1", np.full((H, W), np.nan, np.float32).tobytes(), W * 4, ns)),
            # same size, but from the depth camera's own frame (a driver without depth alignment)
            "unregistered_depth": lambda ns: _send(client, f, ns, depth=array_to_image(
                f.depth, "16UC1", Header(stamp=_stamp(ns), frame_id="camera_depth_optical_frame"))),
            "no_camera_info": lambda ns: _send(client, f, ns, info=False),
            # the newest transform is 100 s older than the frame (max_pose_age_s is 0.1)
            "stale_pose": lambda ns: _send(client, f, ns + 100_000_000_000, tf=False),
            "no_pose": lambda ns: _send(client, f, ns, frame_id="nowhere_optical"),
            "out_of_order": lambda ns: _send(client, frames[2], good[0] + step // 2),
            "too_large": lambda ns: _send(client, f, ns, color=_raw_image(1536, 2048, "rgb8", bytes(1536 * 2048 * 3),
                                                                         2048 * 3, ns)),
            "unsynced": lambda ns: (_send(client, f, ns, send_depth=False),
                                    client.depth.publish(array_to_image(f.depth, "16UC1", _header_at(ns + step)))),
        }
        dropped = dropped0
        for _ in range(2):                        # every kind twice: logged once, counted twice
            for kind, send in bad.items():
                t += step
                send(t)
                dropped += 1
                client.settled(fused=fused, dropped=dropped)
                t += step                         # keep later stamps clear of this one's
        status = client.settled(fused=fused)
        counts = dict(zip(status.drop_reasons, (int(n) for n in status.drop_counts)))
        expected = {r: 2 + base_counts.get(r, 0) for r in REASONS}
        expected["no_valid_depth"] += 2           # zero depth and NaN depth
        assert counts == expected, (counts, base_counts)
        assert status.frames_in == status.frames_fused + status.frames_dropped
        after = tmp_path / "after.npz"
        assert client.call(MapFile, "/rgbd_fusion/save_map", MapFile.Request(path=str(after))).success
        a, b = _map_arrays(before), _map_arrays(after)
        assert all(np.array_equal(a[k], b[k]) for k in a), "a dropped frame changed the map"

        # still fusing
        t += step
        _send(client, frames[6], t)
        status = client.settled(fused=fused + 1)
        assert status.num_voxels > voxels

        # a frame whose pose at its stamp never comes: after frame_wait_s (1 s here) it is fused at
        # the newest pose, 50 ms older (max_pose_age_s is 0.1), and counted as such, not dropped
        older0 = status.frames_older_pose
        t += step
        _send(client, frames[7], t, tf=False)
        status = client.settled(fused=fused + 2, dropped=dropped)
        assert status.frames_older_pose == older0 + 1

        # map services: reset and load_map each begin a new map (map_id), so the keyframes of the
        # old one are told apart downstream
        first_map = client.status.map_id
        assert first_map > 0
        assert client.call(Trigger, "/rgbd_fusion/reset", Trigger.Request()).success
        client.wait(lambda: client.status.num_voxels == 0, "the reset map")
        reset_map = client.status.map_id
        assert reset_map > first_map and client.status.num_keyframes == 0
        res = client.call(MapFile, "/rgbd_fusion/load_map", MapFile.Request(path=str(before)))
        assert res.success and res.num_voxels == voxels
        client.wait(lambda: client.status.map_id > reset_map, "the loaded map's id")
        res = client.call(MapFile, "/rgbd_fusion/load_map", MapFile.Request(path=str(tmp_path / "nope.npz")))
        assert not res.success and "nope.npz" in res.message and "not found" in res.message
    finally:
        client.close()
        rc = proc.stop()
    log = "\n".join(proc.lines)
    assert rc == 0, log[-3000:]
    assert "terminate called" not in log
    for reason in REASONS:                        # logged once per kind, with what was wrong
        assert log.count(f"dropped frame [{reason}]") == 1, (reason, log[-3000:])
    assert "encoding 'yuv422' not supported" in log and "exceeds max_image_pixels 400000" in log
    assert "no depth image within 0.02 s" in log and "not newer than the last fused frame" in log
    assert log.count("fused at a pose up to max_pose_age_s (0.1 s) from its stamp: no pose at its stamp after") == 1


def _header_at(ns: int):
    from std_msgs.msg import Header

    return Header(stamp=_stamp(ns), frame_id=OPTICAL)


def test_camera_qos_best_effort_takes_a_sensor_data_driver(frames, tmp_path):
    """A best-effort publisher reaches no reliable subscription; with camera_qos best_effort the
    node subscribes best effort and fuses the driver's frames."""
    from rclpy.qos import ReliabilityPolicy

    proc = FusionProcess(tmp_path, "camera_qos:=best_effort")
    client = Client(best_effort=True)
    try:
        for pub in (client.color, client.depth, client.info):
            client.wait(lambda: pub.get_subscription_count() > 0, f"the node subscribing {pub.topic_name}", 60)
            subs = client.node.get_subscriptions_info_by_topic(pub.topic_name)
            assert [i.qos_profile.reliability for i in subs] == [ReliabilityPolicy.BEST_EFFORT]
        t, deadline = BASE, time.monotonic() + 60
        while client.status is None or client.status.frames_fused == 0:
            assert time.monotonic() < deadline, f"no frame fused in 60 s: {client.status}"
            client.tf_static.publish(_tf("camera_link", OPTICAL, T_LINK_OPTICAL, BASE))
            t += 50_000_000
            _send(client, frames[0], t)
            time.sleep(0.5)
        assert client.status.num_voxels > 1000
    finally:
        client.close()
        assert proc.stop() == 0, "\n".join(proc.lines[-30:])
