"""Real ScanNet RGB-D frames (SensReader export) into the pack: written here from a synthetic
room in exactly that layout, with a known axisAlignment and a lost-tracking (-inf) pose."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from r1_core.data.errors import DataFormatError
from r1_core.data.rgbd import backproject
from r1_core.data.scannet_frames import read_scannet_frames
from r1_core.data.scene import load_scannet_scene
from r1_core.data.synthetic.render import RenderConfig, make_renderer, walkthrough_poses
from r1_core.data.synthetic.world import SynthRoom
from r1_core.data.tasks import DatasetLayout

FRAMES = 12
LOST = 5       # this frame's pose is -inf, as ScanNet writes when tracking is lost


def _align() -> np.ndarray:
    c, s = np.cos(0.7), np.sin(0.7)
    A = np.eye(4)
    A[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    A[:3, 3] = [1.5, -2.0, 0.1]
    return A


@pytest.fixture(scope="module")
def scannet_export(world, tmp_path_factory):
    """A copy of the tiny world whose val scene has exported RGB-D frames instead of a synthetic room."""
    root = tmp_path_factory.mktemp("scannet_frames") / "data"
    shutil.copytree(world[0] / "data", root)
    layout = DatasetLayout(root)
    sid = layout.scene_ids("val")[0]
    room_file = root / "synthetic" / f"{sid}.json"
    room = SynthRoom.load_json(room_file)
    room_file.unlink()
    rcfg = RenderConfig()
    renderer = make_renderer(room, rcfg)
    poses = walkthrough_poses(room, rcfg, n_frames=FRAMES, seed=0)
    d = layout.frames_dir(sid)
    for sub in ("color", "depth", "pose", "intrinsic"):
        (d / sub).mkdir(parents=True)
    A = _align()
    (d / f"{sid}.txt").write_text("sceneType = Bedroom\naxisAlignment = " + " ".join(f"{v:.17g}" for v in A.ravel()) + "\n")
    K4 = np.eye(4)
    K4[:3, :3] = renderer.K
    np.savetxt(d / "intrinsic" / "intrinsic_depth.txt", K4)
    truth = {}
    for i, T in enumerate(poses):
        view = renderer.render(T, noise=False)
        big = cv2.resize(view.color, (2 * view.color.shape[1], 2 * view.color.shape[0]))    # colour camera: larger
        cv2.imwrite(str(d / "color" / f"{i}.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        depth = np.asarray(view.depth)
        if depth.dtype != np.uint16:                      # metres -> ScanNet's millimetres
            depth = np.round(np.nan_to_num(depth.astype(np.float64), nan=0.0) * 1000).astype(np.uint16)
        cv2.imwrite(str(d / "depth" / f"{i}.png"), depth)
        pose = np.full((4, 4), -np.inf) if i == LOST else np.linalg.inv(A) @ T      # ScanNet pose: pre-alignment
        np.savetxt(d / "pose" / f"{i}.txt", pose)
        truth[i] = (T, view.color)
    return root, sid, truth


def test_frames_read_back_in_the_aligned_frame_and_land_on_the_scene(scannet_export):
    root, sid, truth = scannet_export
    layout = DatasetLayout(root)
    skipped: list[int] = []
    frames = list(read_scannet_frames(layout.frames_dir(sid), sid, skipped=skipped))
    assert skipped == [LOST] and len(frames) == FRAMES - 1
    scene = load_scannet_scene(layout.scannet_dir, sid)
    from scipy.spatial import cKDTree

    tree = cKDTree(scene.points[:, :3])
    for f in frames[::4]:
        T, color = truth[f.stamp_ns]
        np.testing.assert_allclose(f.T_map_optical, T, atol=1e-9)
        assert f.color.shape == color.shape and np.abs(f.color.astype(int) - color).mean() < 8
        pts = backproject(f.depth_m(), f.K, f.T_map_optical)
        assert len(pts) > 1000 and np.median(tree.query(pts)[0]) < 0.02
    # evenly spread subset
    few = [f.stamp_ns for f in read_scannet_frames(layout.frames_dir(sid), sid, max_frames=4)]
    assert few == [0, 4, 7, 11]


def test_pack_selects_views_from_real_frames(scannet_export, tmp_path):
    import dataclasses

    from training.data import TrainingPack
    from training.pack import build_pack
    from training.recipe import load_recipe

    root, sid, _ = scannet_export
    recipe = load_recipe("config/train/tiny.yaml")
    cfg = dataclasses.replace(recipe.pack, frames=FRAMES)
    build_pack(root, tmp_path / "pack", cfg, splits=("val",), progress=False)
    pack = TrainingPack(tmp_path / "pack")
    kfs = pack.keyframes(sid)
    assert 2 <= len(kfs) < FRAMES
    examples = pack.examples("val")
    assert examples and all(len(e.views["dynamic"]) == min(cfg.num_views, len(kfs)) for e in examples)


def test_missing_or_malformed_export_files_are_named(scannet_export, tmp_path):
    root, sid, _ = scannet_export
    d = tmp_path / sid
    shutil.copytree(DatasetLayout(root).frames_dir(sid), d)
    (d / "intrinsic" / "intrinsic_depth.txt").write_text("1 2 3\n")
    with pytest.raises(DataFormatError, match=r"intrinsic_depth.txt: expected a 4×4 matrix"):
        next(read_scannet_frames(d, sid))
    (d / "intrinsic" / "intrinsic_depth.txt").unlink()
    with pytest.raises(DataFormatError, match="missing depth intrinsics"):
        next(read_scannet_frames(d, sid))
