"""Scenes in the ScanNet-preprocessed layout (as ScanRefer / VoteNet / 3D-LLM / LL3DA loaders read it).

    scene = load_scannet_scene("data/scannet/scannet_data", "scene0000_00")
    scene.points            # (N, 6) xyz + rgb 0..255 (or N×9 with normals), map frame
    scene.object(3).box     # (7,) cx, cy, cz, dx, dy, dz, yaw (yaw 0 for ScanNet)
    save_scannet_scene(scene, "out/scannet_data")
    train_ids = read_split("data/scannet/meta_data/scannetv2_train.txt")

Files per scene under `root` (all numpy .npy):
    <scene>_aligned_vert.npy   (N, 6|9) float32  x y z r g b [nx ny nz], axis-aligned
    <scene>_vert.npy           same before axis alignment (optional; written when asked)
    <scene>_ins_label.npy      (N,) instance id: 0 = none, else object_id + 1
    <scene>_sem_label.npy      (N,) NYU40 id (0 = unannotated)
    <scene>_aligned_bbox.npy   (K, 8) cx cy cz dx dy dz nyu40_label object_id
    <scene>_bbox.npy           same before axis alignment (optional)
Zero rows in the bbox arrays (objects without points, as ScanNet's own preprocessing leaves
them) are skipped on load.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from r1_core.data.classes import NYU40_NAMES, STRUCTURE_NYU40_IDS
from r1_core.data.errors import DataFormatError, require_file

SUFFIXES = {
    "points": "_aligned_vert.npy",
    "instance": "_ins_label.npy",
    "semantic": "_sem_label.npy",
    "boxes": "_aligned_bbox.npy",
}


@dataclass
class SceneObject:
    object_id: int          # 0-based, as ScanRefer's object_id (instance label = object_id + 1)
    label: str              # ScanNet/NYU40 class name, e.g. "chair"
    nyu40_id: int
    box: np.ndarray         # (7,) float32 cx,cy,cz,dx,dy,dz,yaw (docs/conventions.md)
    color: str | None = None  # named colour where known (synthetic), e.g. "red"

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(-1)
        if self.box.shape != (7,):
            raise ValueError(f"SceneObject {self.object_id}: box must have 7 numbers, got {self.box.shape}")


@dataclass
class Scene:
    scene_id: str                 # e.g. "scene0000_00" (synthetic: "synth0007_00")
    points: np.ndarray            # (N, 6) float32 xyz + rgb 0..255 (or N×9 with normals)
    instance_labels: np.ndarray   # (N,) int32, 0 = none, else object_id + 1
    semantic_labels: np.ndarray   # (N,) int32 nyu40 ids
    objects: list[SceneObject] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.instance_labels = np.asarray(self.instance_labels, dtype=np.int32).reshape(-1)
        self.semantic_labels = np.asarray(self.semantic_labels, dtype=np.int32).reshape(-1)
        if self.points.ndim != 2 or self.points.shape[1] not in (6, 9):
            raise ValueError(f"scene {self.scene_id}: points must be (N, 6) or (N, 9), got {self.points.shape}")
        n = len(self.points)
        for name, arr in (("instance_labels", self.instance_labels), ("semantic_labels", self.semantic_labels)):
            if len(arr) != n:
                raise ValueError(f"scene {self.scene_id}: {name} has {len(arr)} entries for {n} points")
        self._by_id = {o.object_id: o for o in self.objects}
        if len(self._by_id) != len(self.objects):
            raise ValueError(f"scene {self.scene_id}: duplicate object ids")

    def object(self, object_id: int) -> SceneObject:
        """The object with this 0-based id; an unknown id raises KeyError naming the scene."""
        try:
            return self._by_id[int(object_id)]
        except KeyError:
            raise KeyError(
                f"scene {self.scene_id} has no object {object_id}; ids: {sorted(self._by_id)[:50]}"
            ) from None

    def has_object(self, object_id: int) -> bool:
        return int(object_id) in self._by_id

    def annotated_objects(self) -> list[SceneObject]:
        """The objects a detector proposes and a request names: all but wall, floor and ceiling."""
        return [o for o in self.objects if o.nyu40_id not in STRUCTURE_NYU40_IDS]

    def boxes(self, object_ids: list[int] | None = None) -> np.ndarray:
        """(K, 7) boxes of the given ids (all objects when None)."""
        objs = self.objects if object_ids is None else [self.object(i) for i in object_ids]
        return np.stack([o.box for o in objs]) if objs else np.zeros((0, 7), np.float32)

    def object_points(self, object_id: int) -> np.ndarray:
        return self.points[self.instance_labels == int(object_id) + 1]


def boxes_to_scannet_rows(objects: list[SceneObject]) -> np.ndarray:
    """(K, 8) rows cx,cy,cz,dx,dy,dz,nyu40,object_id; yaw must be 0 (ScanNet boxes are axis-aligned)."""
    rows = np.zeros((len(objects), 8), np.float32)
    for i, o in enumerate(objects):
        if abs(float(o.box[6])) > 1e-6:
            raise ValueError(f"object {o.object_id}: ScanNet bbox arrays are axis-aligned, got yaw {o.box[6]}")
        rows[i, :6] = o.box[:6]
        rows[i, 6] = o.nyu40_id
        rows[i, 7] = o.object_id
    return rows


def objects_from_scannet_rows(rows: np.ndarray, path: str | Path = "<array>",
                              colors: dict[int, str] | None = None) -> list[SceneObject]:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != 8:
        raise DataFormatError(path, f"expected a (K, 8) bbox array (cx,cy,cz,dx,dy,dz,nyu40,object_id), got {rows.shape}")
    objs = []
    for i, r in enumerate(rows):
        if not np.any(r[3:6]) and r[6] == 0:
            continue  # placeholder row of an object without points
        nyu = int(round(float(r[6])))
        if nyu not in NYU40_NAMES:
            raise DataFormatError(path, f"nyu40 label must be in 1..40, got {r[6]}", record=i, field="nyu40_label")
        if np.any(r[3:6] < 0) or not np.all(np.isfinite(r[:6])):
            raise DataFormatError(path, f"box must be finite with sizes >= 0, got {r[:6].tolist()}", record=i, field="box")
        oid = int(round(float(r[7])))
        box = np.concatenate([r[:6], [0.0]]).astype(np.float32)
        objs.append(SceneObject(oid, NYU40_NAMES[nyu], nyu, box, (colors or {}).get(oid)))
    return objs


def scene_files(root: str | Path, scene_id: str) -> dict[str, Path]:
    root = Path(root)
    return {k: root / f"{scene_id}{s}" for k, s in SUFFIXES.items()}


def _load(path: Path, what: str) -> np.ndarray:
    require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataFormatError(path, f"not a readable .npy array: {e}") from e


def load_scannet_scene(root: str | Path, scene_id: str) -> Scene:
    """Load one scene of the preprocessed layout; missing or inconsistent files raise DataFormatError."""
    files = scene_files(root, scene_id)
    pts = _load(files["points"], "aligned vertices")
    if pts.ndim != 2 or pts.shape[1] not in (6, 9):
        raise DataFormatError(files["points"], f"expected (N, 6) or (N, 9) vertices, got {pts.shape}")
    ins = _load(files["instance"], "instance labels").reshape(-1)
    sem = _load(files["semantic"], "semantic labels").reshape(-1)
    for p, arr in ((files["instance"], ins), (files["semantic"], sem)):
        if len(arr) != len(pts):
            raise DataFormatError(p, f"expected {len(pts)} labels (one per vertex), got {len(arr)}")
    objs = objects_from_scannet_rows(_load(files["boxes"], "aligned boxes"), files["boxes"])
    return Scene(scene_id, pts.astype(np.float32), ins.astype(np.int32), sem.astype(np.int32), objs)


def save_scannet_scene(scene: Scene, root: str | Path, write_unaligned: bool = False) -> dict[str, Path]:
    """Write `scene` in the preprocessed layout (see module docstring); returns the written paths."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = scene_files(root, scene.scene_id)
    rows = boxes_to_scannet_rows(scene.objects)
    np.save(files["points"], scene.points.astype(np.float32))
    np.save(files["instance"], scene.instance_labels.astype(np.int32))
    np.save(files["semantic"], scene.semantic_labels.astype(np.int32))
    np.save(files["boxes"], rows)
    if write_unaligned:  # synthetic scenes are already aligned: the unaligned copies are identical
        np.save(root / f"{scene.scene_id}_vert.npy", scene.points.astype(np.float32))
        np.save(root / f"{scene.scene_id}_bbox.npy", rows)
    return files


def read_split(path: str | Path) -> list[str]:
    """Scene ids of a split list (`scannetv2_train.txt`): one id per line, blanks ignored."""
    path = require_file(path, "split list")
    ids = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    for i, s in enumerate(ids):
        if " " in s or "/" in s:
            raise DataFormatError(path, f"expected one scene id per line, got {s!r}", record=i)
    return ids


def write_split(path: str | Path, scene_ids: list[str]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(f"{s}\n" for s in scene_ids))
