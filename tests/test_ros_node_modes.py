"""rgbd_fusion's alternative inputs, driven in-process (callbacks and the worker step called
directly, no DDS traffic): the RGB-only mode fuses colour frames with depth from the Depth
Anything branch, and PoseStamped / Odometry pose sources give exactly the map the /tf source
gives for the same camera poses."""
from __future__ import annotations

import os

import numpy as np
import pytest

from r1_ros.graph import local_dds_environment  # noqa: E402

pytestmark = pytest.mark.ros
# The r1 nodes run with the shared-memory Fast DDS profile (r1_ros.graph.local_dds_environment);
# this process's own participants must use it too, and Fast DDS reads it once per process, at
# the first participant: set it while the test modules are collected, before any rclpy.init().
os.environ.update(local_dds_environment())
OPTICAL = "camera_color_optical_frame"
T_LINK_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], np.float64)
BASE = 5_000_000_000


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from r1_core.data.bags import read_bag
    from r1_core.data.synthetic.demo import ensure_demo_assets

    return list(read_bag(ensure_demo_assets(tmp_path_factory.mktemp("demo"), frames=12).bag))[:4]


@pytest.fixture(scope="module")
def ros():
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()


def _node(ns: str, **params):
    from rclpy.parameter import Parameter

    from r1_ros.rgbd_fusion import RgbdFusionNode

    return RgbdFusionNode(namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _header(ns: int, frame: str = OPTICAL):
    from std_msgs.msg import Header

    from r1_ros.conversions import ns_to_stamp

    return Header(stamp=ns_to_stamp(ns), frame_id=frame)


def _tf(parent: str, child: str, T: np.ndarray, ns: int):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from r1_ros.conversions import matrix_to_transform

    ts = TransformStamped(header=_header(ns, parent), child_frame_id=child)
    ts.transform = matrix_to_transform(T)
    return TFMessage(transforms=[ts])


def _drain(node) -> None:
    """Run the worker's per-frame step on everything queued."""
    while node._pending:
        assert node._process(node._pending.popleft())


def _feed(node, frames, pose: str) -> None:
    from nav_msgs.msg import Odometry
    from geometry_msgs.msg import PoseStamped

    from r1_ros.conversions import array_to_image, make_camera_info, matrix_to_pose

    node._on_tf(_tf("camera_link", OPTICAL, T_LINK_OPTICAL, BASE), static=True)
    for i, f in enumerate(frames):
        t = BASE + i * 33_000_000
        T_link = f.T_map_optical @ np.linalg.inv(T_LINK_OPTICAL)
        if pose == "tf":
            node._on_tf(_tf("map", "camera_link", T_link, t), static=False)
        elif pose == "odometry":
            odom = Odometry(header=_header(t, "map"), child_frame_id="camera_link")
            odom.pose.pose = matrix_to_pose(T_link)
            node._on_odom(odom)
        else:                                     # PoseStamped of the optical frame itself
            node._on_pose(PoseStamped(header=_header(t, "map"), pose=matrix_to_pose(f.T_map_optical)))
        node._on_info(make_camera_info(f.K, 640, 480, _header(t)))
        node._on_color(array_to_image(f.color, "rgb8", _header(t)))
        if node.depth_model is None:
            node._on_depth(array_to_image(f.depth, "16UC1", _header(t)))
        _drain(node)


def test_pose_and_odometry_sources_give_the_tf_map(ros, frames):
    nodes = {"tf": _node("a"), "odometry": _node("b", pose_source="odometry"), "pose": _node("c", pose_source="pose")}
    try:
        for source, node in nodes.items():
            _feed(node, frames, source)
            assert node.frames_fused == len(frames), (source, node.drops.snapshot())
        keys = nodes["tf"].fmap.voxel_keys()
        assert len(keys) > 10000
        for source in ("odometry", "pose"):
            other = nodes[source].fmap
            assert np.array_equal(other.voxel_keys(), keys), source
            assert np.allclose(other.snapshot(), nodes["tf"].fmap.snapshot(), atol=1e-4)
    finally:
        for node in nodes.values():
            node.destroy_node()


def test_rgb_only_mode_fuses_estimated_depth(ros, frames):
    # the tiny random Depth Anything predicts ~5 m everywhere; the fused points must lie on that
    # plane in each frame's camera, i.e. depth came from the estimator and the pose from /tf
    node = _node("rgb", depth_source="estimated", depth_model_tiny=True, **{"fusion.max_depth": 6.0,
                                                                           "fusion.min_observations": 1})
    try:
        f = frames[0]
        _feed(node, [f], "tf")
        assert node.frames_fused == 1 and node.drops.total == 0
        pts = node.fmap.snapshot()
        est = node.depth_model.predict_depth(f.color)
        T_inv = np.linalg.inv(f.T_map_optical)
        z_cam = (pts[:, :3] @ T_inv[:3, :3].T + T_inv[:3, 3])[:, 2]
        assert len(pts) > 1000
        assert np.all(np.abs(z_cam - float(np.median(est))) < 0.05)
    finally:
        node.destroy_node()


def test_a_frame_whose_transform_is_late_waits_for_it_instead_of_taking_the_older_pose(ros, frames):
    # /tf and the images are separate topics: the frame at t1 may reach the idle worker before the
    # transform at t1 does, while the one at t0 (33 ms older, within max_pose_age_s) is there.
    # Fusing at once with that older pose would make the map depend on timing; the frame waits
    # (up to frame_wait_s) and is fused at its own pose, as when the transform came first.
    from r1_ros.conversions import array_to_image, make_camera_info

    late, ref = _node("late", frame_wait_s=5.0), _node("ref")
    try:
        _feed(ref, frames[:2], "tf")
        late._on_tf(_tf("camera_link", OPTICAL, T_LINK_OPTICAL, BASE), static=True)
        _feed(late, frames[:1], "tf")                        # frame 0 (t0) and its transform
        f, t1 = frames[1], BASE + 33_000_000
        late._on_info(make_camera_info(f.K, 640, 480, _header(t1)))
        late._on_color(array_to_image(f.color, "rgb8", _header(t1)))
        late._on_depth(array_to_image(f.depth, "16UC1", _header(t1)))
        frame = late._pending.popleft()
        assert not late._process(frame) and late.frames_fused == 1      # waits for the transform at t1
        late._on_tf(_tf("map", "camera_link", f.T_map_optical @ np.linalg.inv(T_LINK_OPTICAL), t1), static=False)
        assert late._process(frame) and late.frames_fused == 2 and late.drops.total == 0
        assert np.array_equal(late.fmap.voxel_keys(), ref.fmap.voxel_keys())
        assert np.allclose(late.fmap.snapshot(), ref.fmap.snapshot(), atol=1e-5)
    finally:
        late.destroy_node()
        ref.destroy_node()
