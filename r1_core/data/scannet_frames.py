"""ScanNet RGB-D frames as exported by ScanNet's SensReader (`reader.py --export_color_images
--export_depth_images --export_poses --export_intrinsics`), in the axis-aligned frame of the
preprocessed point clouds.

    <root>/scannet/frames/<scene>/
        color/<i>.jpg                  RGB (1296×968 in ScanNet), resized here to the depth size
        depth/<i>.png                  uint16 millimetres (640×480), 0 = no reading
        pose/<i>.txt                   4×4 camera-to-world (OpenCV optical axes); ScanNet marks
                                       frames without tracking with -inf: they are skipped
        intrinsic/intrinsic_depth.txt  4×4, the depth camera's K in the top-left 3×3
        <scene>.txt                    the scan's meta file with `axisAlignment` (as in scans/)

    for frame in read_scannet_frames(layout.frames_dir("scene0000_00"), "scene0000_00", max_frames=150):
        frame.T_map_optical   # axisAlignment @ pose: the frame of <scene>_aligned_vert.npy
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from r1_core.data.errors import DataFormatError, require_file
from r1_core.data.rgbd import RGBDFrame
from r1_core.data.scannet_raw import read_axis_alignment


def _matrix(path: Path) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except ValueError as e:
        raise DataFormatError(path, f"expected a 4×4 matrix of numbers ({e})") from None
    if m.shape != (4, 4):
        raise DataFormatError(path, f"expected a 4×4 matrix, got shape {m.shape}")
    return m


def frame_ids(frames_dir: str | Path) -> list[int]:
    """The exported frame numbers (from pose/*.txt), ascending."""
    pose_dir = Path(frames_dir) / "pose"
    if not pose_dir.is_dir():
        raise FileNotFoundError(f"{pose_dir}: no exported poses (SensReader --export_poses)")
    ids = sorted(int(p.stem) for p in pose_dir.glob("*.txt") if p.stem.isdigit())
    if not ids:
        raise FileNotFoundError(f"{pose_dir}: no <i>.txt pose files")
    return ids


def read_scannet_frames(frames_dir: str | Path, scene_id: str, max_frames: int = 0,
                        skipped: list[int] | None = None) -> Iterator[RGBDFrame]:
    """Up to `max_frames` (0 = all) frames spread evenly over the sequence, in order, with poses in
    the axis-aligned frame and colour at the depth resolution. Frames whose pose is not finite
    (ScanNet's lost tracking) are skipped and their numbers appended to `skipped`."""
    d = Path(frames_dir)
    align = read_axis_alignment(require_file(d / f"{scene_id}.txt", "scan meta (axisAlignment)"))
    K = _matrix(require_file(d / "intrinsic" / "intrinsic_depth.txt", "depth intrinsics"))[:3, :3]
    ids = frame_ids(d)
    if max_frames and len(ids) > max_frames:
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, max_frames).round().astype(int)]
    for i in ids:
        pose = _matrix(d / "pose" / f"{i}.txt")
        if not np.isfinite(pose).all():
            if skipped is not None:
                skipped.append(i)
            continue
        depth = cv2.imread(str(require_file(d / "depth" / f"{i}.png", "depth image")), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.dtype != np.uint16 or depth.ndim != 2:
            raise DataFormatError(d / "depth" / f"{i}.png", f"expected a 16-bit single-channel PNG (mm), got "
                                                           f"{None if depth is None else (depth.dtype, depth.shape)}")
        bgr = cv2.imread(str(require_file(d / "color" / f"{i}.jpg", "colour image")), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataFormatError(d / "color" / f"{i}.jpg", "not a readable image")
        h, w = depth.shape
        color = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        yield RGBDFrame(color, depth, K.copy(), align @ pose, stamp_ns=i)
