"""Visualiser: rerun recording written and read back, PNG renders of exact size with box
edges where the projection puts them, z-buffered splatting against a brute-force loop."""
import math

import numpy as np
import pytest
from PIL import Image

from r1_core.data.errors import DataFormatError
from r1_core.eval.visualize import (
    Keyframe,
    VisualizeConfig,
    box_segments_in_view,
    log_rrd,
    pick_best_view,
    project_points,
    render_topdown,
    render_view,
    rrd_entities,
    splat_view,
)
from r1_core.geometry.boxes import boxes_to_corners

GREY = 128.0
K = np.array([[400.0, 0.0, 159.5], [0.0, 400.0, 119.5], [0.0, 0.0, 1.0]])
W, H = 320, 240
GT = np.array([[0.0, 0.0, 0.5, 1.0, 0.8, 1.0, 0.3]])
PRED = np.array([[0.15, 0.1, 0.5, 0.9, 0.9, 1.0, 0.1]])


def look_at(eye, target):
    eye = np.asarray(eye, float)
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.c_[x, np.cross(z, x), z]
    T[:3, 3] = eye
    return T


T_CAM = look_at([0.4, -3.0, 1.6], [0.0, 0.0, 0.5])


@pytest.fixture(scope="module")
def floor():
    rng = np.random.default_rng(0)
    n = 40_000
    return np.c_[rng.uniform(-2, 2, (n, 2)), np.zeros(n), np.full((n, 3), GREY)].astype(np.float32)


def _near(img, u, v, color, r=1):
    """The colour occurs within r pixels of (u, v)."""
    u, v = int(round(u)), int(round(v))
    patch = img[max(v - r, 0):v + r + 1, max(u - r, 0):u + r + 1].reshape(-1, 3)
    return bool((np.abs(patch.astype(int) - np.array(color)).max(axis=1) <= 2).any())


def test_project_points_matches_pinhole_model():
    rng = np.random.default_rng(1)
    p = rng.uniform(-1, 1, (50, 3))
    uv, z = project_points(p, K, T_CAM)
    R, t = T_CAM[:3, :3], T_CAM[:3, 3]
    for i in range(50):
        q = R.T @ (p[i] - t)
        assert z[i] == pytest.approx(q[2])
        np.testing.assert_allclose(uv[i], (K @ (q / q[2]))[:2], atol=1e-9)
    uv_b, z_b = project_points(T_CAM[:3, 3] - T_CAM[:3, 2][None], K, T_CAM)   # 1 m behind the camera
    assert z_b[0] == pytest.approx(-1.0) and np.isnan(uv_b).all()


def test_splatting_matches_brute_force_zbuffer():
    rng = np.random.default_rng(2)
    n = 400
    xyz = np.c_[rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(0, 1, n)]
    cloud = np.c_[xyz, rng.integers(0, 256, (n, 3))].astype(np.float64)
    for max_px in (0, 2):
        cfg = VisualizeConfig(max_splat_px=max_px, point_size_m=0.03)
        img, depth = splat_view(cloud, K, T_CAM, W, H, cfg)
        ref_d = np.full((H, W), np.inf)
        ref_c = np.tile(np.array(cfg.background, np.uint8), (H, W, 1))
        uv, z = project_points(xyz, K, T_CAM)
        for i in range(n):
            if z[i] <= 0:
                continue
            r = int(min(max_px, np.rint(K[0, 0] * cfg.point_size_m / (2 * z[i]))))
            u0, v0 = int(np.rint(uv[i, 0])), int(np.rint(uv[i, 1]))
            for v in range(v0 - r, v0 + r + 1):
                for u in range(u0 - r, u0 + r + 1):
                    if 0 <= u < W and 0 <= v < H and z[i] < ref_d[v, u]:
                        ref_d[v, u] = z[i]
                        ref_c[v, u] = cloud[i, 3:6]
        np.testing.assert_array_equal(depth, ref_d)
        np.testing.assert_array_equal(img, ref_c)
        assert np.isfinite(depth).sum() > 100


def test_nearer_point_wins_whatever_the_order():
    T = np.eye(4)   # camera at the origin looking along +z (map z)
    near = [0.0, 0.0, 1.0, 255, 0, 0]
    far = [0.0, 0.0, 2.0, 0, 0, 255]
    for cloud in (np.array([near, far]), np.array([far, near])):
        img, depth = splat_view(cloud, K, T, W, H, VisualizeConfig(max_splat_px=0))
        assert tuple(img[120, 160]) == (255, 0, 0) and depth[120, 160] == 1.0


def test_render_view_size_png_and_box_corners(tmp_path, floor):
    cfg = VisualizeConfig(labels=False, legend=False)
    img = render_view(floor, K, T_CAM, W, H, gt_boxes=GT, cfg=cfg, path=tmp_path / "gt.png")
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "gt.png").convert("RGB")), img)
    uv, _ = project_points(boxes_to_corners(GT)[0], K, T_CAM)
    for u, v in uv:
        assert 0 <= u < W and 0 <= v < H
        assert _near(img, u, v, cfg.gt_color, r=0), (u, v, img[int(round(v)), int(round(u))])
    # an edge midpoint is drawn too, and a point well inside the box's image is the floor
    mid = (uv[0] + uv[1]) / 2
    assert _near(img, mid[0], mid[1], cfg.gt_color, r=1)
    # predicted boxes: dashed edges with a dot on every corner
    img_p = render_view(floor, K, T_CAM, W, H, pred_boxes=PRED, cfg=cfg)
    uvp, _ = project_points(boxes_to_corners(PRED)[0], K, T_CAM)
    for u, v in uvp:
        assert _near(img_p, u, v, cfg.pred_color, r=0)
    assert not _near(img_p, uv[0][0], uv[0][1], cfg.gt_color, r=1)   # no GT drawn there
    # dashed: along an edge, some pixels are the floor, not the box colour
    a, b = uvp[0], uvp[1]
    line = [img_p[int(round(a[1] + t * (b[1] - a[1]))), int(round(a[0] + t * (b[0] - a[0])))]
            for t in np.linspace(0.15, 0.85, 60)]
    is_pred = [np.abs(c.astype(int) - cfg.pred_color).max() <= 2 for c in line]
    assert 0 < sum(is_pred) < len(is_pred)


def test_render_view_with_labels_and_odd_size(floor):
    w, h = 333, 257
    K2 = K.copy()
    K2[0, 2], K2[1, 2] = (w - 1) / 2, (h - 1) / 2
    img = render_view(floor, K2, T_CAM, w, h, pred_boxes=PRED, gt_boxes=GT,
                      pred_labels=["chair"], gt_labels=["chair"])
    plain = render_view(floor, K2, T_CAM, w, h, pred_boxes=PRED, gt_boxes=GT,
                        cfg=VisualizeConfig(labels=False, legend=False))
    assert img.shape == (h, w, 3) and (img != plain).any()   # labels and legend add pixels


def test_box_edges_are_clipped_at_the_near_plane():
    T = np.eye(4)
    straddling = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]])   # map z is the optical axis here
    segs = box_segments_in_view(straddling, K, T, near=0.05)[0]
    assert 0 < len(segs) < 12 and all(np.isfinite(s).all() for s in segs)
    behind = np.array([[0.0, 0.0, -3.0, 1.0, 1.0, 1.0, 0.0]])
    assert box_segments_in_view(behind, K, T, near=0.05)[0] == []
    in_front = np.array([[0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0]])
    assert len(box_segments_in_view(in_front, K, T, near=0.05)[0]) == 12


def test_render_topdown_corners_and_crop(tmp_path, floor):
    cfg = VisualizeConfig(width=400, height=300, labels=False, legend=False)
    img, grid = render_topdown(floor, gt_boxes=GT, pred_boxes=PRED, cfg=cfg, path=tmp_path / "top.png")
    assert img.shape == (300, 400, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "top.png").convert("RGB")), img)
    foot = boxes_to_corners(GT)[0][:4, :2]
    for u, v in grid.to_pixel(foot):
        assert _near(img, u, v, cfg.gt_color, r=1)
    for u, v in grid.to_pixel(boxes_to_corners(PRED)[0][:4, :2]):
        assert _near(img, u, v, cfg.pred_color, r=1)
    # the floor is where the grid says; a ceiling above topdown_z_max is dropped
    u, v = grid.to_pixel([[1.5, -1.5]])[0]
    assert tuple(img[int(round(v)), int(round(u))]) == (128, 128, 128)
    ceiling = floor.copy()
    ceiling[:, 2] = 2.5
    ceiling[:, 3:] = (250, 200, 0)
    both = np.concatenate([floor, ceiling])
    top_all, g = render_topdown(both, cfg=cfg)
    top_cut, _ = render_topdown(both, cfg=VisualizeConfig(width=400, height=300, legend=False, topdown_z_max=2.0))
    u, v = np.rint(g.to_pixel([[1.5, -1.5]])[0]).astype(int)
    assert tuple(top_all[v, u]) == (250, 200, 0) and tuple(top_cut[v, u]) == (128, 128, 128)


def test_pick_best_view():
    away = look_at([0.0, -3.0, 1.5], [0.0, -6.0, 1.5])
    far = look_at([0.0, -9.0, 1.5], [0.0, 0.0, 0.5])
    near = look_at([0.0, -2.5, 1.5], [0.0, 0.0, 0.5])
    assert pick_best_view([away, far, near], K, W, H, GT) == 2
    assert pick_best_view([away, far], K, W, H, GT) == 1


def _rrd_values(path):
    from rerun.chunk import RrdReader

    vals = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        rb = chunk.to_record_batch()
        for name in rb.schema.names:
            if ":" in name:
                vals.setdefault((chunk.entity_path, name), []).extend(rb.column(name).to_pylist())
    return vals


def test_rrd_recording_is_written_and_reads_back(tmp_path, floor):
    rng = np.random.default_rng(3)
    poses = [look_at([2.5 * math.cos(a), 2.5 * math.sin(a), 1.5], [0, 0, 0.5]) for a in np.linspace(0, 3, 8)]
    kf = Keyframe(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), K, poses[2],
                  depth=rng.integers(500, 4000, (H, W)).astype(np.uint16))
    path = log_rrd(tmp_path / "rec" / "scene.rrd", floor, trajectory=poses, keyframes=[kf],
                   pred_boxes=PRED, gt_boxes=GT, pred_labels=["chair"], gt_labels=["chair"],
                   reasoning="<think>The chair is by the desk.</think><answer><box>...</box></answer>",
                   question="Where is the brown chair?", answer="by the desk")
    assert path.is_file() and path.stat().st_size > 50_000   # the cloud alone is ~0.5 MB
    ents = rrd_entities(path)
    for ent, comp in [("/world/cloud", "Points3D:positions"), ("/world/trajectory", "LineStrips3D:strips"),
                      ("/world/camera", "Transform3D:translation"), ("/world/keyframes/kf_0", "Pinhole:image_from_camera"),
                      ("/world/keyframes/kf_0", "EncodedImage:blob"), ("/world/keyframes/kf_0", "DepthImage:buffer"),
                      ("/world/boxes/gt", "Boxes3D:half_sizes"), ("/world/boxes/pred", "Boxes3D:quaternions"),
                      ("/reasoning", "TextDocument:text")]:
        assert comp in ents.get(ent, []), (ent, comp, ents.get(ent))
    vals = _rrd_values(path)
    assert vals[("/world/boxes/gt", "Boxes3D:labels")] == [["gt: chair"]]
    assert vals[("/world/boxes/pred", "Boxes3D:labels")] == [["pred: chair"]]
    np.testing.assert_allclose(vals[("/world/boxes/gt", "Boxes3D:centers")][0][0], GT[0, :3], atol=1e-6)
    np.testing.assert_allclose(vals[("/world/boxes/gt", "Boxes3D:half_sizes")][0][0], GT[0, 3:6] / 2, atol=1e-6)
    q = vals[("/world/boxes/gt", "Boxes3D:quaternions")][0][0]
    np.testing.assert_allclose(q, [0, 0, math.sin(0.15), math.cos(0.15)], atol=1e-6)
    assert len(vals[("/world/cloud", "Points3D:positions")][0]) == len(floor)
    assert len(vals[("/world/camera", "Transform3D:translation")]) == len(poses)
    text = vals[("/reasoning", "TextDocument:text")][0][0]
    assert "Where is the brown chair?" in text and "The chair is by the desk." in text


def test_bad_inputs_are_named(tmp_path, floor):
    with pytest.raises(ValueError, match=r"cloud: expected \(N, 6\)"):
        render_topdown(floor[:, :3])
    bad = floor.copy()
    bad[0, 3] = 300
    with pytest.raises(ValueError, match="colours must be 0..255"):
        render_topdown(bad)
    with pytest.raises(ValueError, match=".rrd"):
        log_rrd(tmp_path / "x.png", floor)
    with pytest.raises(ValueError, match="K: expected"):
        render_view(floor, np.eye(2), T_CAM, W, H)
    with pytest.raises(ValueError, match="not a rotation"):
        render_view(floor, K, np.diag([2.0, 1, 1, 1]), W, H)
    with pytest.raises(ValueError, match="gt_labels: expected 1 labels"):
        render_topdown(floor, gt_boxes=GT, gt_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"keyframes\[0\].image"):
        log_rrd(tmp_path / "x.rrd", floor, keyframes=[Keyframe(np.zeros((4, 4)), K, T_CAM)])
    with pytest.raises(ValueError, match="width/height"):
        VisualizeConfig(width=8)


def test_zbuffer_chunking_changes_nothing():
    from r1_core.eval.visualize import _zbuffer

    rng = np.random.default_rng(4)
    n = 3000
    u, v = rng.integers(-5, 70, n), rng.integers(-5, 50, n)
    d, r = rng.uniform(0.5, 5, n), rng.integers(0, 4, n)
    pix_a, pt_a = _zbuffer(u, v, d, r, 64, 48)
    pix_b, pt_b = _zbuffer(u, v, d, r, 64, 48, chunk=37)
    np.testing.assert_array_equal(pix_a, pix_b)
    np.testing.assert_array_equal(pt_a, pt_b)


def test_viz_cli_synthetic_and_scannet(tmp_path):
    import json

    from r1_core.data.scene import save_scannet_scene
    from r1_core.data.synthetic.world import SynthConfig, generate_room
    from r1_core.eval.viz_cli import main

    pred = tmp_path / "answer.json"
    pred.write_text(json.dumps({"boxes": [[1.0, 1.0, 0.5, 0.6, 0.6, 1.0, 0.2]], "labels": ["chair"],
                                "question": "Where is the chair?", "reasoning": "<think>...</think>",
                                "answer": "by the bed"}))
    out = tmp_path / "syn"
    assert main(["--synthetic-seed", "3", "--frames", "6", "--keyframes", "1", "--pred", str(pred), "--out", str(out)]) == 0
    assert Image.open(out / "topdown.png").size == (VisualizeConfig().width, VisualizeConfig().height)
    assert Image.open(out / "view.png").size == (640, 480)
    ents = rrd_entities(out / "scene.rrd")
    assert {"/world/cloud", "/world/boxes/gt", "/world/boxes/pred", "/world/keyframes/kf_0", "/reasoning"} <= set(ents)

    scene = generate_room(SynthConfig(), seed=5).to_scene()
    save_scannet_scene(scene, tmp_path / "scannet")
    poses = np.stack([look_at([0.5, 0.5 + 0.1 * i, 1.5], [3.0, 3.0, 0.5]) for i in range(4)])
    np.save(tmp_path / "poses.npy", poses)
    obj = next(o.object_id for o in scene.objects if o.label not in ("wall", "floor", "ceiling"))
    out2 = tmp_path / "scn"
    assert main(["--scannet-root", str(tmp_path / "scannet"), "--scene-id", scene.scene_id, "--objects", str(obj),
                 "--poses", str(tmp_path / "poses.npy"), "--intrinsics", "300,300,159.5,119.5,320,240",
                 "--out", str(out2)]) == 0
    assert Image.open(out2 / "view.png").size == (320, 240)
    assert "/world/boxes/pred" not in rrd_entities(out2 / "scene.rrd")
    with pytest.raises(SystemExit, match="no object"):
        main(["--scannet-root", str(tmp_path / "scannet"), "--scene-id", scene.scene_id, "--objects", "999",
              "--out", str(out2)])
    bad = tmp_path / "bad.json"
    bad.write_text('{"labels": []}')
    with pytest.raises(ValueError, match="'boxes'"):
        main(["--synthetic-seed", "3", "--pred", str(bad), "--out", str(out2)])
    for boxes in ("[[1, 2, 3, 1, 1, 1]]", "[1, 2, 3, 1, 1, 1, 0, 1, 2, 3, 1, 1, 1, 0]", "[[1, 2, 3, 1, NaN, 1, 0]]"):
        bad.write_text('{"boxes": %s}' % boxes)       # 6 numbers; a flat list of two; not finite
        with pytest.raises(DataFormatError, match=r"bad.json: field 'boxes': expected a list of boxes of 7 finite"):
            main(["--synthetic-seed", "3", "--pred", str(bad), "--out", str(out2)])
