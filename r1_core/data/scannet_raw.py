"""Raw ScanNet scans → the preprocessed arrays (r1_core.data.scene layout).

    r1 data prepare-scannet --scans /data/ScanNet/scans --out data/scannet/scannet_data
    prepare_scan("/data/ScanNet/scans/scene0000_00", "out", label_map)   # one scan

Reads per scan directory `<scene>/`:
    <scene>_vh_clean_2.ply                   vertices x y z red green blue (plyfile)
    <scene>_vh_clean_2.0.010000.segs.json    {"segIndices": [segment id per vertex]}
    <scene>.aggregation.json                 {"segGroups": [{"objectId", "label", "segments"}]}
                                             (or <scene>_vh_clean.aggregation.json)
    <scene>.txt                              "axisAlignment = 16 numbers" (row-major 4×4)
and ScanNet's `scannetv2-labels.combined.tsv` (raw_category → nyu40id). Writes `_vert.npy`,
`_aligned_vert.npy` (N×6 xyz rgb), `_ins_label.npy` (objectId + 1, 0 = none), `_sem_label.npy`
(NYU40), `_bbox.npy` and `_aligned_bbox.npy` (K×8 from each instance's points).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from r1_core.data.classes import read_label_map
from r1_core.data.errors import DataFormatError, require_file
from r1_core.data.formats import load_json

LABEL_MAP_NAME = "scannetv2-labels.combined.tsv"


def read_axis_alignment(path: str | Path) -> np.ndarray:
    """The 4×4 axisAlignment of `<scene>.txt` (identity when the file has none, as in ScanNet's test scans)."""
    path = require_file(path, "scan meta (<scene>.txt)")
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if line.strip().startswith("axisAlignment"):
            vals = line.split("=", 1)[1].split()
            try:
                M = np.array([float(v) for v in vals], np.float64)
            except ValueError:
                raise DataFormatError(path, f"axisAlignment must be 16 numbers, got {vals[:16]}", record=i, field="axisAlignment") from None
            if M.size != 16:
                raise DataFormatError(path, f"axisAlignment must be 16 numbers, got {M.size}", record=i, field="axisAlignment")
            return M.reshape(4, 4)
    return np.eye(4)


def read_ply_vertices(path: str | Path) -> np.ndarray:
    from plyfile import PlyData

    path = require_file(path, "mesh (<scene>_vh_clean_2.ply)")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for a corrupt file; re-raised with the path
        raise DataFormatError(path, f"not a readable PLY mesh: {e}") from e
    if "vertex" not in ply:
        raise DataFormatError(path, "no vertex element")
    v = ply["vertex"]
    names = v.data.dtype.names
    for k in ("x", "y", "z", "red", "green", "blue"):
        if k not in names:
            raise DataFormatError(path, f"vertex property {k!r} missing; has {names}", field=k)
    return np.stack([v[k] for k in ("x", "y", "z", "red", "green", "blue")], 1).astype(np.float32)


def _boxes(pts: np.ndarray, inst: np.ndarray, sem_of: dict[int, int]) -> np.ndarray:
    rows = []
    for oid, nyu in sorted(sem_of.items()):
        p = pts[inst == oid + 1, :3]
        if len(p) == 0:
            continue
        lo, hi = p.min(0), p.max(0)
        rows.append([*((lo + hi) / 2), *(hi - lo), nyu, oid])
    return np.asarray(rows, np.float32).reshape(-1, 8)


def prepare_scan(scan_dir: str | Path, out: str | Path, label_map: dict[str, int]) -> str:
    """Convert one scan directory; returns its scene id."""
    scan_dir = Path(scan_dir)
    sid = scan_dir.name
    verts = read_ply_vertices(scan_dir / f"{sid}_vh_clean_2.ply")
    segs_path = scan_dir / f"{sid}_vh_clean_2.0.010000.segs.json"
    segs = load_json(segs_path, "over-segmentation", top=dict)
    if "segIndices" not in segs or len(segs["segIndices"]) != len(verts):
        n = len(segs.get("segIndices", []))
        raise DataFormatError(segs_path, f"expected segIndices with one entry per vertex ({len(verts)}), got {n}", field="segIndices")
    seg_idx = np.asarray(segs["segIndices"], np.int64)
    candidates = [scan_dir / f"{sid}.aggregation.json", scan_dir / f"{sid}_vh_clean.aggregation.json"]
    agg_path = next((p for p in candidates if p.is_file()), None)
    if agg_path is None:
        raise DataFormatError(scan_dir, f"missing aggregation file: expected {candidates[0].name} or {candidates[1].name} here")
    agg = load_json(agg_path, "aggregation", top=dict)
    if "segGroups" not in agg:
        raise DataFormatError(agg_path, "missing segGroups", field="segGroups")
    inst = np.zeros(len(verts), np.int32)
    sem = np.zeros(len(verts), np.int32)
    sem_of: dict[int, int] = {}
    for i, g in enumerate(agg["segGroups"]):
        for k in ("label", "segments"):
            if k not in g:
                raise DataFormatError(agg_path, "missing field", record=i, field=k)
        oid = g.get("objectId", g.get("id"))
        if not isinstance(oid, int) or isinstance(oid, bool):
            raise DataFormatError(agg_path, f"expected an integer objectId (or id), got {oid!r}", record=i, field="objectId")
        label = g["label"]
        if label not in label_map:
            raise DataFormatError(agg_path, f"raw label {label!r} is not in the label map", record=i, field="label")
        mask = np.isin(seg_idx, np.asarray(g["segments"], np.int64))
        inst[mask] = oid + 1
        sem[mask] = label_map[label]
        sem_of[oid] = label_map[label]
    M = read_axis_alignment(scan_dir / f"{sid}.txt")
    aligned = verts.copy()
    aligned[:, :3] = (np.c_[verts[:, :3], np.ones(len(verts))] @ M.T)[:, :3]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{sid}_vert.npy", verts)
    np.save(out / f"{sid}_aligned_vert.npy", aligned.astype(np.float32))
    np.save(out / f"{sid}_ins_label.npy", inst)
    np.save(out / f"{sid}_sem_label.npy", sem)
    np.save(out / f"{sid}_bbox.npy", _boxes(verts, inst, sem_of))
    np.save(out / f"{sid}_aligned_bbox.npy", _boxes(aligned, inst, sem_of))
    return sid


def find_label_map(scans: Path) -> Path:
    for p in (scans / LABEL_MAP_NAME, scans.parent / LABEL_MAP_NAME):
        if p.is_file():
            return p
    raise DataFormatError(scans, f"no {LABEL_MAP_NAME} in {scans} or {scans.parent}; pass --label-map")


def prepare_scannet(scans: str | Path, out: str | Path, label_map: str | Path | None = None,
                    scene_ids: list[str] | None = None, progress: bool = True) -> list[str]:
    from tqdm import tqdm

    scans = Path(scans)
    if not scans.is_dir():
        raise DataFormatError(scans, "scans directory not found")
    lm = read_label_map(label_map or find_label_map(scans))
    dirs = sorted(d for d in scans.iterdir() if d.is_dir() and re.fullmatch(r"scene\d{4}_\d{2}", d.name))
    if scene_ids:
        missing = sorted(set(scene_ids) - {d.name for d in dirs})
        if missing:
            raise DataFormatError(scans, f"scans not found: {missing}")
        dirs = [d for d in dirs if d.name in scene_ids]
    if not dirs:
        raise DataFormatError(scans, "no scene####_## directories")
    with tqdm(dirs, desc="prepare scannet", disable=not progress, unit="scan") as bar:   # closed before an error prints
        return [prepare_scan(d, out, lm) for d in bar]
