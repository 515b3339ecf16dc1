"""RGB-D back-projection, intrinsics (incl. distortion), poses and the REP 103 optical frame."""
import math

import cv2
import numpy as np
import pytest

from r1_core.geometry.rgbd import (
    T_LINK_OPTICAL, FrameError, Intrinsics, backproject, check_pose, compose, depth_to_metres,
    intrinsics_from_camera_info, invert, look_at, optical_from_link, pixel_rays, transform_from_tq,
    world_points,
)


def test_backprojection_reprojects_to_the_pixel():
    K = Intrinsics(500.0, 480.0, 319.5, 239.5, 640, 480)
    rng = np.random.default_rng(0)
    depth = rng.integers(300, 4000, (480, 640)).astype(np.uint16)
    depth[::7, ::5] = 0
    color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pts = backproject(color, depth, K)                       # optical frame
    ok = depth > 0
    assert pts.shape == (ok.sum(), 6)
    v, u = np.nonzero(ok)
    np.testing.assert_allclose(pts[:, 2], depth[ok] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(500.0 * pts[:, 0] / pts[:, 2] + 319.5, u, atol=1e-3)
    np.testing.assert_allclose(480.0 * pts[:, 1] / pts[:, 2] + 239.5, v, atol=1e-3)
    np.testing.assert_array_equal(pts[:, 3:], color[ok])
    # with a pose: p_map = R p + t
    T = transform_from_tq([1.0, -2.0, 0.5], [0.1, -0.3, 0.2, 0.9])
    pw = backproject(None, depth, K, T)
    np.testing.assert_allclose(pw, pts[:, :3] @ T[:3, :3].T + T[:3, 3], atol=2e-5)


def test_float_depth_validity_rules():
    d = np.array([[1.0, np.nan, np.inf, -np.inf, 0.0, -1.0, 2.5]], np.float32)
    z = depth_to_metres(d)
    assert np.isfinite(z).tolist()[0] == [True, False, False, False, False, False, True]
    with pytest.raises(FrameError, match="uint16 .* or float32"):
        depth_to_metres(d.astype(np.float64))


@pytest.mark.parametrize("model,D", [("plumb_bob", [-0.28, 0.07, 0.001, -0.0005, 0.0]),
                                     ("rational_polynomial", [0.1, -0.05, 0.0, 0.0, 0.0, 0.05, -0.02, 0.01]),
                                     ("equidistant", [0.05, -0.01, 0.002, 0.0])])
def test_distorted_rays_project_back_to_their_pixels(model, D):
    K = intrinsics_from_camera_info([400, 0, 160, 0, 410, 120, 0, 0, 1], 320, 240, D, model)
    rx, ry = pixel_rays(K)
    obj = np.stack([rx.ravel(), ry.ravel(), np.ones(rx.size)], 1).astype(np.float64)[:, None, :]
    if model == "equidistant":
        pix, _ = cv2.fisheye.projectPoints(obj, np.zeros(3), np.zeros(3), K.K, np.array(D))
    else:
        pix, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), K.K, np.array(D))
    u, v = np.meshgrid(np.arange(320), np.arange(240))
    err = np.abs(pix[:, 0, 0] - u.ravel()).max(), np.abs(pix[:, 0, 1] - v.ravel()).max()
    assert max(err) < 2e-3, err
    # undistorted rays differ from the pinhole ones away from the centre
    assert abs(float(rx[0, 0]) - (0 - 160) / 400) > 1e-3


def test_intrinsics_errors_name_the_problem():
    with pytest.raises(FrameError, match="fx, fy must be finite and > 0"):
        Intrinsics(0.0, 1.0, 0.0, 0.0, 10, 10)
    with pytest.raises(FrameError, match="no skew"):
        Intrinsics.from_K([[1, 0.5, 0], [0, 1, 0], [0, 0, 1]], 10, 10)
    with pytest.raises(FrameError, match="expected 9 numbers"):
        Intrinsics.from_K([1, 2, 3], 10, 10)
    with pytest.raises(FrameError, match="unknown distortion_model 'fisheye62'"):
        intrinsics_from_camera_info([1, 0, 0, 0, 1, 0, 0, 0, 1], 10, 10, [0.1], "fisheye62")
    K = Intrinsics(1.0, 1.0, 0.0, 0.0, 4, 3)
    with pytest.raises(FrameError, match="depth is 4x2 but the intrinsics are for 4x3"):
        backproject(None, np.zeros((2, 4), np.uint16), K)
    with pytest.raises(FrameError, match="color is 5x3 but depth is 4x3"):
        backproject(np.zeros((3, 5, 3), np.uint8), np.zeros((3, 4), np.uint16), K)


def test_pose_helpers():
    rng = np.random.default_rng(1)
    q = rng.normal(size=4)
    T = transform_from_tq(rng.normal(size=3), q)
    check_pose(T)
    np.testing.assert_allclose(compose(T, invert(T)), np.eye(4), atol=1e-12)
    T2 = transform_from_tq(rng.normal(size=3), rng.normal(size=4))
    p = rng.normal(size=3)
    np.testing.assert_allclose(compose(T, T2)[:3, :3] @ p + compose(T, T2)[:3, 3],
                               T[:3, :3] @ (T2[:3, :3] @ p + T2[:3, 3]) + T[:3, 3], atol=1e-12)
    # 90 degrees about z: x -> y
    Rz = transform_from_tq([0, 0, 0], [0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    np.testing.assert_allclose(Rz[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(FrameError, match="zero quaternion"):
        transform_from_tq([0, 0, 0], [0, 0, 0, 0])
    bad = T.copy()
    bad[:3, :3] *= 1.1
    with pytest.raises(FrameError, match="not orthonormal"):
        check_pose(bad)
    bad = T.copy()
    bad[3, 0] = 1
    with pytest.raises(FrameError, match="bottom row"):
        check_pose(bad)


def test_rep103_optical_frame():
    # optical z (forward) is the body's x, optical x (right) is the body's -y, optical y (down) is -z
    R = T_LINK_OPTICAL[:3, :3]
    np.testing.assert_array_equal(R @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_array_equal(R @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_array_equal(R @ [0, 1, 0], [0, 0, -1])
    # a body frame at the origin looking along +x sees a point 2 m ahead at the image centre
    T = optical_from_link(np.eye(4))
    p_opt = invert(T)[:3, :3] @ [2.0, 0.0, 0.0] + invert(T)[:3, 3]
    np.testing.assert_allclose(p_opt, [0, 0, 2], atol=1e-12)
    # look_at agrees
    np.testing.assert_allclose(look_at([0, 0, 0], [1, 0, 0]), T, atol=1e-12)
    # a point above the camera appears in the upper half of the image (v < cy)
    L = look_at([0, 0, 1], [3, 0, 1])
    q = invert(L)[:3, :3] @ [3, 0, 2] + invert(L)[:3, 3]
    assert q[1] < 0


def test_world_points_fixed_order_matches_float64_within_rounding():
    rng = np.random.default_rng(2)
    z = rng.uniform(0.2, 5, 1000).astype(np.float32)
    rx, ry = rng.uniform(-0.6, 0.6, (2, 1000)).astype(np.float32)
    T = transform_from_tq(rng.normal(size=3), rng.normal(size=4))
    p = world_points(z, rx, ry, T)
    ref = np.stack([z * rx, z * ry, z], 1).astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(p, ref, atol=5e-6)
