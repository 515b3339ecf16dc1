"""Renderer: the box rasteriser agrees with open3d's raycaster, back-projected depth lands on
the geometry, the noise model behaves, trajectories are smooth and clear of obstacles."""
import numpy as np
import open3d as o3d
import open3d.core as o3c
import pytest

from r1_core.data.rgbd import backproject, look_at
from r1_core.data.synthetic.render import (BoxRenderer, RaycastRenderer, RenderConfig, make_renderer,
                                           room_mesh_arrays, walkthrough_poses)
from r1_core.data.synthetic.world import clearance, generate_room


@pytest.fixture(scope="module")
def setup():
    room = generate_room(seed=6)
    cfg = RenderConfig()
    poses = walkthrough_poses(room, cfg, n_frames=40, seed=1)
    return room, cfg, poses, BoxRenderer(room, cfg), RaycastRenderer(room, cfg)


def test_box_renderer_matches_raycast_reference(setup):
    room, cfg, poses, br, rr = setup
    for T in poses[::8]:
        a, b = br.render(T, noise=False), rr.render(T, noise=False)
        both = (a.depth_clean > 0) & (b.depth_clean > 0)
        assert both.mean() > 0.97
        diff = np.abs(a.depth_clean - b.depth_clean)[both]
        assert np.median(diff) < 1e-3 and np.mean(diff < 2e-3) > 0.98
        assert np.mean(a.instance == b.instance) > 0.98
        assert np.mean(np.all(a.color == b.color, -1)) > 0.98


def test_backprojection_lands_on_geometry(setup):
    room, cfg, poses, br, _ = setup
    V, F, _, _ = room_mesh_arrays(room)
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3c.Tensor(V.astype(np.float32)), o3c.Tensor(F.astype(np.uint32)))
    for T in poses[::10]:
        v = br.render(T, noise=False)
        pts = backproject(v.depth, br.K, T, stride=4)
        assert len(pts) > 5000
        d = sc.compute_distance(o3c.Tensor(pts.astype(np.float32))).numpy()
        assert np.median(d) < 0.01 and np.percentile(d, 95) < 0.02


def test_instance_image_counts_visible_objects(setup):
    room, cfg, poses, br, _ = setup
    v = br.render(poses[0], noise=False)
    vis = v.visible_objects()
    assert vis and all(room.objects[i] is not None for i in vis)
    # each visible object's pixels back-project into (or onto) its own box
    for oid, n in list(vis.items())[:6]:
        m = v.instance == oid + 1
        ys, xs = np.nonzero(m)
        z = v.depth_clean[ys, xs]
        K = br.K
        p = np.stack([(xs - K[0, 2]) / K[0, 0] * z, (ys - K[1, 2]) / K[1, 1] * z, z], 1) @ poses[0][:3, :3].T + poses[0][:3, 3]
        o = room.objects[oid]
        inside = np.all((p >= o.lo - 0.02) & (p <= o.hi + 0.02), 1)
        assert inside.mean() > 0.97 and n == m.sum()


def test_noise_model(setup):
    room, cfg, poses, br, _ = setup
    T = poses[3]
    clean = br.render(T, noise=False)
    rng = np.random.default_rng(0)
    noisy = br.render(T, rng=rng)
    assert noisy.depth.dtype == np.uint16 and noisy.color.dtype == np.uint8
    holes = (noisy.depth == 0) & (clean.depth > 0)
    assert 0.002 < holes.mean() < 0.2
    ok = (noisy.depth > 0) & (clean.depth > 0)
    err = noisy.depth[ok].astype(np.float64) / 1000 - clean.depth_clean[ok]
    z = clean.depth_clean[ok]
    q1, q3 = np.percentile(z, [25, 75])
    assert q3 > q1 + 0.8
    near, far = err[z < q1], err[z > q3]
    assert np.std(far) > 1.5 * np.std(near)                     # noise grows with distance
    assert abs(np.mean(err)) < 0.005
    assert not np.array_equal(br.render(T, rng=np.random.default_rng(1)).depth, noisy.depth)
    assert np.array_equal(br.render(T, rng=np.random.default_rng(0)).depth, noisy.depth)   # seeded
    assert noisy.depth.max() <= cfg.max_depth * 1000 + 100


def test_trajectory(setup):
    room, cfg, poses, _, _ = setup
    P = np.array([T[:3, 3] for T in poses])
    assert np.all((P[:, 2] >= 1.2) & (P[:, 2] <= 1.5))
    assert np.all(clearance(room, P) >= cfg.clearance - 1e-6)
    step = np.linalg.norm(np.diff(P, axis=0), axis=1)
    assert step.max() < 3 * np.median(step) + 1e-6        # smooth: no jumps
    for T in poses:
        R = T[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) > 0 and R[2, 1] < 0        # optical y (down) points down in the map
    full = walkthrough_poses(room, cfg, seed=1)
    assert len(full) == int(cfg.fps * cfg.duration_s)


def test_look_at_and_config_errors(setup):
    room = setup[0]
    T = look_at([1, 1, 1.3], [3, 1, 1.3])
    np.testing.assert_allclose(T[:3, 2], [1, 0, 0]); np.testing.assert_allclose(T[:3, 0], [0, -1, 0])
    with pytest.raises(ValueError, match="unknown render backend"):
        RenderConfig(backend="opengl")
    with pytest.raises(ValueError, match="near"):
        RenderConfig(near=0.5)
    assert isinstance(make_renderer(room, RenderConfig(backend="raycast")), RaycastRenderer)


def test_visible_point_counts_against_bruteforce(setup):
    from r1_core.data.rgbd import visible_point_counts

    room, cfg, poses, br, _ = setup
    scene = room.to_scene()
    T = poses[2]
    view = br.render(T, noise=False)
    got = visible_point_counts(scene.points, scene.instance_labels, view.depth, br.K, T)
    # brute force, one point at a time
    K, d = br.K, view.depth.astype(np.float64) / 1000
    Rinv, t = T[:3, :3].T, T[:3, 3]
    want: dict[int, int] = {}
    for p, lab in zip(scene.points[::7, :3], scene.instance_labels[::7]):
        q = Rinv @ (p - t)
        if q[2] <= 0 or lab == 0:
            continue
        u, v = int(round(q[0] / q[2] * K[0, 0] + K[0, 2])), int(round(q[1] / q[2] * K[1, 1] + K[1, 2]))
        if 0 <= u < d.shape[1] and 0 <= v < d.shape[0] and d[v, u] > 0 and abs(d[v, u] - q[2]) <= 0.03:
            want[int(lab) - 1] = want.get(int(lab) - 1, 0) + 1
    sub = visible_point_counts(scene.points[::7], scene.instance_labels[::7], view.depth, br.K, T)
    assert sub == want and len(want) > 3
    pix = view.visible_objects()
    assert set(got) <= set(pix) | {i for i in got if got[i] < 20}   # seen points come from seen objects
    assert visible_point_counts(scene.points, scene.instance_labels, np.zeros_like(view.depth), br.K, T) == {}   # all holes
