"""Fusion map: accuracy on a ray-cast walk-through, an independent numpy reference, bad frames,
eviction, crop, save/load (atomic) and PLY export."""
import os

import numpy as np
import pytest
from plyfile import PlyData
from scipy.spatial import cKDTree

from r1_core.config import ConfigError, load_config
from r1_core.geometry.fusion import FusionConfig, FusionMap, unpack_keys
from r1_core.geometry.raycast import demo_room, orbit_poses, scene_intrinsics
from r1_core.geometry.rgbd import backproject

VOX = 0.03


@pytest.fixture(scope="module")
def stream():
    """A noisy 320x240 walk-through of the demo room (24 frames) + noise-free ground truth."""
    scene = demo_room(0)
    K = scene_intrinsics(320, 240)
    poses = orbit_poses(24, turns=0.5)
    rng = np.random.default_rng(1)
    frames, truth = [], []
    for T in poses:
        c, d, z = scene.render(K, T, noise=True, rng=rng, return_clean=True)
        frames.append((c, d))
        truth.append(backproject(c, z, K, T, max_depth=4.0))
    gt = np.concatenate(truth)
    return scene, K, poses, frames, gt


def fuse(frames, K, poses, **cfg):
    fmap = FusionMap(FusionConfig(**{"voxel_size": VOX, **cfg}))
    for (c, d), T in zip(frames, poses):
        res = fmap.integrate(c, d, K, T)
        assert res.fused, res.message
    return fmap


def test_walkthrough_chamfer_within_1p5_voxels_and_true_colours(stream):
    scene, K, poses, frames, gt = stream
    fmap = fuse(frames, K, poses)
    snap = fmap.snapshot()
    assert snap.dtype == np.float32 and snap.shape[1] == 6 and len(snap) > 5000
    tree_gt, tree_f = cKDTree(gt[:, :3]), cKDTree(snap[:, :3])
    acc, nn = tree_gt.query(snap[:, :3])              # fused -> truth
    comp, _ = tree_f.query(gt[:, :3])                 # truth -> fused
    chamfer = acc.mean() + comp.mean()
    assert chamfer < 1.5 * VOX, (acc.mean(), comp.mean())
    assert np.percentile(acc, 95) < 1.5 * VOX
    # colours: each fused point against the true colour of the nearest true surface point
    err = np.abs(snap[:, 3:6] - gt[nn, 3:6]).max(1)
    assert np.median(err) < 1.0
    assert (err < 20).mean() > 0.9                    # the rest mixes faces at colour edges


@pytest.mark.parametrize("stride", [1, 2])
def test_matches_an_independent_numpy_reference(stream, stride):
    """Every pixel in range, no filters: the map must equal grouping back-projected points by voxel."""
    scene, K, poses, frames, gt = stream
    fmap = fuse(frames[:6], K, poses[:6], edge_threshold=0.0, min_observations=1, pixel_stride=stride)
    pts, frame_of = [], []
    for i, ((c, d), T) in enumerate(zip(frames[:6], poses[:6])):
        z = d.astype(np.float32) * np.float32(0.001)
        z[d == 0] = np.nan
        p = backproject(c, z, K, T, min_depth=0.2, max_depth=4.0, stride=stride)
        pts.append(p)
        frame_of.append(np.full(len(p), i))
    pts, frame_of = np.concatenate(pts), np.concatenate(frame_of)
    vox = np.floor(pts[:, :3] / np.float32(VOX)).astype(np.int64)
    uniq, inv = np.unique(vox, axis=0, return_inverse=True)
    inv = inv.ravel()
    cnt = np.bincount(inv)
    mean = np.stack([np.bincount(inv, pts[:, j].astype(np.float64)) for j in range(6)], 1) / cnt[:, None]
    snap = fmap.snapshot(refine=False)
    keys = unpack_keys(fmap.voxel_keys())
    # same voxels (the snapshot is sorted by packed key = lexicographic x, y, z = np.unique order)
    np.testing.assert_array_equal(keys, uniq)
    np.testing.assert_allclose(snap, mean.astype(np.float32), rtol=1e-6, atol=1e-5)
    # observation counts: frames per voxel
    seen = np.unique(np.stack([inv, frame_of], 1), axis=0)
    obs_ref = np.bincount(seen[:, 0], minlength=len(uniq))
    k, _, obs, last = fmap._backend.state()
    order = np.argsort(k)
    np.testing.assert_array_equal(obs[order], obs_ref)


def test_refine_voxels_matches_brute_force():
    from r1_core.geometry.fusion import pack_keys, refine_voxels
    rng = np.random.default_rng(3)
    vox = np.unique(rng.integers(-4, 5, (300, 3)), axis=0)
    keys = pack_keys(vox)
    order = np.argsort(keys)
    vox, keys = vox[order], keys[order]
    w = rng.uniform(1, 10, len(keys))
    xyz = (vox + rng.uniform(0, 1, vox.shape)) * 0.02
    keep, out = refine_voxels(keys, w, xyz, 0.4, True)
    where = {tuple(v): i for i, v in enumerate(vox)}
    for i, v in enumerate(vox):
        nb = [where[t] for t in ((v[0] + a, v[1] + b, v[2] + c) for a in (-1, 0, 1) for b in (-1, 0, 1)
                                 for c in (-1, 0, 1)) if t in where]
        others = [j for j in nb if j != i]
        assert keep[i] == (w[i] >= 0.4 * max([w[j] for j in others], default=0.0))
        if not keep[i]:
            continue
        P, ww = xyz[nb], w[nb]
        c = (P * ww[:, None]).sum(0) / ww.sum()
        cov = ((P - c).T * ww) @ (P - c) / ww.sum()
        ev, evec = np.linalg.eigh(cov)
        n = evec[:, 0]
        want = xyz[i] - ((xyz[i] - c) @ n) * n if ev[1] > 1e-12 else xyz[i]
        np.testing.assert_allclose(out[i], want, atol=1e-9)


def test_refinement_removes_the_voxel_truncation_bias():
    """A plane seen with noise as wide as a voxel: raw voxel means are pulled towards voxel
    centres; refined points lie on the plane."""
    rng = np.random.default_rng(5)
    K = scene_intrinsics(160, 120)
    from r1_core.geometry.rgbd import look_at
    fmap = FusionMap(FusionConfig(voxel_size=0.02, edge_threshold=0.0, pixel_stride=1))
    n = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    for i in range(10):
        T = look_at([0.1 * i, 0.05 * i, 1.5], [0.0, 0.0, 0.0], up=(0, 1, 0))
        from r1_core.geometry.rgbd import pixel_rays
        rx, ry = pixel_rays(K)
        d = np.stack([rx, ry, np.ones_like(rx)], -1).astype(np.float64) @ T[:3, :3].T
        t = -(T[:3, 3] @ n) / (d @ n)                       # ray / plane through the origin
        z = t + rng.normal(0, 0.012, t.shape)               # 1.2 cm noise, ~ a voxel
        fmap.integrate(np.full((120, 160, 3), 100, np.uint8), z.astype(np.float32), K, T)
    raw, ref = fmap.snapshot(refine=False), fmap.snapshot()
    err_raw = np.abs(raw[:, :3] @ n).mean()
    err_ref = np.abs(ref[:, :3] @ n).mean()
    assert err_ref < 0.35 * err_raw and err_ref < 0.002, (err_raw, err_ref)


def test_inverse_square_weighting_moves_means_not_voxels(stream):
    scene, K, poses, frames, gt = stream
    w = fuse(frames[:4], K, poses[:4], weighting="inverse_depth_squared", min_observations=1)
    u = fuse(frames[:4], K, poses[:4], min_observations=1)
    np.testing.assert_array_equal(w.voxel_keys(), u.voxel_keys())
    assert not np.allclose(w.snapshot(refine=False), u.snapshot(refine=False))
    # a voxel seen at one depth only keeps its mean under any weighting
    ws, us = w.snapshot(refine=False), u.snapshot(refine=False)
    assert np.isclose(ws, us, atol=1e-4).all(1).mean() > 0.2


def test_flying_pixel_filter_and_min_observations_remove_outliers(stream):
    scene, K, poses, frames, gt = stream
    tree = cKDTree(gt[:, :3])
    raw = fuse(frames[:8], K, poses[:8], edge_threshold=0.0, min_observations=1).snapshot(refine=False)
    filt = fuse(frames[:8], K, poses[:8]).snapshot(refine=False)
    far_raw = (tree.query(raw[:, :3])[0] > 3 * VOX).sum()
    far_filt = (tree.query(filt[:, :3])[0] > 3 * VOX).sum()
    assert far_raw > 20 and far_filt < far_raw / 4, (far_raw, far_filt)


def test_bad_frames_are_counted_and_never_touch_the_map(stream):
    scene, K, poses, frames, gt = stream
    fmap = fuse(frames[:2], K, poses[:2])
    before = fmap.snapshot().copy(), fmap.voxel_keys().copy()
    c, d = frames[2]
    T = poses[2]
    zf = d.astype(np.float32) / 1000
    bad_pose = T.copy()
    bad_pose[0, 3] = np.nan
    shear = T.copy()
    shear[0, 1] += 0.3
    cases = {
        "bad_depth_dtype": (c, d.astype(np.int32), K, T),
        "size_mismatch": (c[:-1], d[:-1], K, T),
        "bad_color": (c[..., :2], d, K, T),
        "bad_pose": (c, d, K, bad_pose),
        "no_valid_depth": (c, np.full_like(zf, np.nan), K, T),
        "bad_shape": (c[:0], d[:0], K.K, T),
    }
    for reason, args in cases.items():
        res = fmap.integrate(*args)
        assert not res.fused and res.reason == reason, (reason, res)
        assert res.message
    assert not fmap.integrate(c, d, K, shear).fused
    assert not fmap.integrate(c, np.full_like(zf, np.inf), K, T).fused       # +inf = no return
    far = T.copy()
    far[0, 3] = 1e6
    assert fmap.integrate(c, d, K, far).reason == "out_of_range"
    assert fmap.stats.frames_skipped["bad_pose"] == 2
    assert sum(fmap.stats.frames_skipped.values()) == len(cases) + 3
    np.testing.assert_array_equal(fmap.snapshot(), before[0])
    np.testing.assert_array_equal(fmap.voxel_keys(), before[1])
    # NaN / inf / negative pixels inside an otherwise good float frame are just invalid pixels
    zf2 = zf.copy()
    zf2[:10] = np.nan
    zf2[10:20] = np.inf
    zf2[20:30] = -1
    res = fmap.integrate(c, zf2, K, T)
    assert res.fused and res.valid_pixels < np.count_nonzero(d)
    with pytest.raises(ValueError, match="no pixel with valid depth"):
        fmap.integrate(c, np.zeros_like(d), K, T).raise_if_skipped()


def test_voxel_cap_evicts_least_recently_seen(stream):
    scene, K, poses, frames, gt = stream
    from r1_core.geometry.fusion import eviction_order
    # reference: the uncapped map after frames 0..2; the cap is first exceeded by frame 2
    two = fuse(frames[:2], K, poses[:2], min_observations=1)
    three = fuse(frames[:3], K, poses[:3], min_observations=1)
    cap = len(two) + (len(three) - len(two)) // 2
    fmap = fuse(frames[:2], K, poses[:2], min_observations=1, max_voxels=cap, evict_fraction=0.3)
    res = fmap.integrate(*frames[2], K, poses[2])
    keys, sums, obs, last = three._backend.state()
    keep = keys[eviction_order(keys, sums[:, 0], last)[: int(cap * 0.7)]]
    np.testing.assert_array_equal(fmap.voxel_keys(), np.sort(keep))
    assert res.evicted == len(three) - len(keep) and res.voxels == len(keep)
    # the most recent voxels (frame 2's) go last: either all of them are kept, or only they are
    k2 = fuse(frames[2:3], K, poses[2:3], min_observations=1).voxel_keys()
    if len(k2) <= len(keep):
        assert np.isin(k2, fmap.voxel_keys()).all()
    else:
        assert np.isin(fmap.voxel_keys(), k2).all()
    # kept voxels keep their statistics
    full = dict(zip(keys.tolist(), sums[:, 0].tolist()))
    k, s, _, _ = fmap._backend.state()
    assert all(full[a] == b for a, b in zip(k.tolist(), s[:, 0].tolist()))
    # a long run never exceeds the cap
    small = FusionMap(FusionConfig(voxel_size=VOX, max_voxels=cap // 2, min_observations=1))
    for (c, d), T in zip(frames[:10], poses[:10]):
        assert small.integrate(c, d, K, T).voxels <= cap // 2
    assert small.stats.evicted_total > 0


def test_crop_box_keeps_points_inside():
    scene = demo_room(0)
    K = scene_intrinsics(160, 120)
    poses = orbit_poses(6)
    frames = [scene.render(K, T) for T in poses]
    lo, hi = (-1.0, -1.0, 0.1), (1.0, 1.0, 1.2)
    fmap = fuse(frames, K, poses, crop_min=lo, crop_max=hi, min_observations=1)
    snap = fmap.snapshot()
    assert len(snap) > 100
    assert (snap[:, :3] >= np.array(lo) - 1e-6).all() and (snap[:, :3] <= np.array(hi) + 1e-6).all()
    with pytest.raises(ConfigError, match="crop_min and crop_max go together"):
        load_config(FusionConfig, {"crop_min": [0, 0, 0]})


def test_save_load_round_trip_and_continue(stream, tmp_path):
    scene, K, poses, frames, gt = stream
    a = fuse(frames[:5], K, poses[:5])
    path = a.save(tmp_path / "scene.r1map")
    b = FusionMap.load(path)
    np.testing.assert_array_equal(b.snapshot(), a.snapshot())
    assert b.stats.frames_fused == 5 and b.config == a.config
    for m in (a, b):
        m.integrate(*frames[5], K, poses[5])
    np.testing.assert_array_equal(b.snapshot(), a.snapshot())
    # a different voxel size cannot load the map
    with pytest.raises(ValueError, match="voxel_size"):
        FusionMap.load(path, FusionConfig(voxel_size=0.05))


def test_save_is_atomic(stream, tmp_path, monkeypatch):
    scene, K, poses, frames, gt = stream
    a = fuse(frames[:3], K, poses[:3])
    path = a.save(tmp_path / "scene.r1map")
    good = path.read_bytes()
    a.integrate(*frames[3], K, poses[3])

    def crash(*args, **kw):
        raise OSError("disk died mid-save")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        a.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good                     # previous map intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.r1map"]   # no temp left behind
    assert len(FusionMap.load(path).snapshot()) > 0


def test_load_rejects_bad_files(tmp_path):
    p = tmp_path / "x.r1map"
    p.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{p}: not a readable"):
        FusionMap.load(p)
    np.savez(p.open("wb"), keys=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="expected arrays"):
        FusionMap.load(p)
    with pytest.raises(ValueError, match="not found"):
        FusionMap.load(tmp_path / "missing.r1map")


def test_export_ply_and_pointcloud_records(stream, tmp_path):
    scene, K, poses, frames, gt = stream
    a = fuse(frames[:3], K, poses[:3])
    snap = a.snapshot()
    ply = PlyData.read(str(a.export_ply(tmp_path / "scene.ply")))
    v = ply["vertex"].data
    assert len(v) == len(snap)
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), snap[:, :3])
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), np.rint(snap[:, 3:]).astype(np.uint8))
    rec = a.snapshot_records()
    assert rec.dtype.itemsize == 16
    rgb = rec["rgb"].view(np.uint32)
    np.testing.assert_array_equal((rgb >> 16) & 255, np.rint(snap[:, 3]).astype(np.uint32))


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown weighting 'cubic'; choose one of"):
        load_config(FusionConfig, {"weighting": "cubic"})
    with pytest.raises(ConfigError, match="min_depth < max_depth"):
        load_config(FusionConfig, {"min_depth": 5.0, "max_depth": 4.0})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(FusionConfig, {"voxel": 0.1})
    cfg = load_config(FusionConfig, "config/fusion.yaml")
    assert cfg.voxel_size == 0.02 and cfg.device == "cpu"
