"""Class maps: NYU40 ids/names, the ScanNet-18 detection benchmark classes and ScanRefer's
18 classes (17 + "others"), plus the raw-category → NYU40 map used for synthetic scenes.

    from r1_core.data.classes import NYU40_NAMES, nyu40_id, scanrefer_class
    nyu40_id("chair") == 5; scanrefer_class(39) == "others"

Real ScanNet maps its raw categories with `scannetv2-labels.combined.tsv`
(`read_label_map`); the synthetic world uses NYU40 names or ScanNet raw names directly.
"""
from __future__ import annotations

import csv
from pathlib import Path

from r1_core.data.errors import DataFormatError, require_file

# NYU40 (index = id). NYU spells id 24 "refridgerator"; both spellings resolve.
NYU40_NAMES: dict[int, str] = {
    1: "wall", 2: "floor", 3: "cabinet", 4: "bed", 5: "chair", 6: "sofa", 7: "table", 8: "door",
    9: "window", 10: "bookshelf", 11: "picture", 12: "counter", 13: "blinds", 14: "desk",
    15: "shelves", 16: "curtain", 17: "dresser", 18: "pillow", 19: "mirror", 20: "floor mat",
    21: "clothes", 22: "ceiling", 23: "books", 24: "refrigerator", 25: "television", 26: "paper",
    27: "towel", 28: "shower curtain", 29: "box", 30: "whiteboard", 31: "person",
    32: "night stand", 33: "toilet", 34: "sink", 35: "lamp", 36: "bathtub", 37: "bag",
    38: "otherstructure", 39: "otherfurniture", 40: "otherprop",
}
_NAME_TO_NYU40 = {v: k for k, v in NYU40_NAMES.items()}
_NAME_TO_NYU40["refridgerator"] = 24

# ScanNet raw categories the synthetic world uses that are not NYU40 names themselves.
RAW_TO_NYU40: dict[str, int] = {
    "trash can": 39, "tv": 25, "nightstand": 32, "kitchen counter": 12, "shelf": 15,
    "monitor": 40, "plant": 40, "backpack": 37, "coffee table": 7, "office chair": 5,
    "armchair": 5, "couch": 6, "kitchen cabinet": 3, "rug": 20,
}

# VoteNet's ScanNet-18 detection benchmark (order and spelling as in the benchmark).
SCANNET18_NAMES = [
    "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "showercurtrain", "toilet", "sink", "bathtub",
    "garbagebin",
]
SCANNET18_NYU40_IDS = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]

# ScanRefer's 18 classes: the first 17 of ScanNet-18 and "others" for everything else.
SCANREFER_CLASSES = [
    "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
    "others",
]
_SCANREFER_BY_NYU40 = dict(zip(SCANNET18_NYU40_IDS[:17], SCANREFER_CLASSES[:17]))

# Structure classes that referring expressions and detection benchmarks leave out.
STRUCTURE_NYU40_IDS = (1, 2, 22)


def nyu40_id(name: str) -> int:
    """NYU40 id of a NYU40 class name or a known ScanNet raw category; unknown names raise."""
    key = name.strip().lower()
    if key in _NAME_TO_NYU40:
        return _NAME_TO_NYU40[key]
    if key in RAW_TO_NYU40:
        return RAW_TO_NYU40[key]
    raise ValueError(
        f"unknown class name {name!r}; choose a NYU40 name ({sorted(_NAME_TO_NYU40)}) "
        f"or a known raw category ({sorted(RAW_TO_NYU40)})"
    )


def nyu40_name(nyu40: int) -> str:
    if nyu40 not in NYU40_NAMES:
        raise ValueError(f"nyu40 id must be in 1..40, got {nyu40}")
    return NYU40_NAMES[nyu40]


def scannet18_index(nyu40: int) -> int:
    """Index into SCANNET18_NAMES, or -1 for classes outside the benchmark."""
    try:
        return SCANNET18_NYU40_IDS.index(int(nyu40))
    except ValueError:
        return -1


def scanrefer_class(nyu40: int) -> str:
    """ScanRefer's class of a NYU40 id ("others" for everything outside its 17 named classes)."""
    return _SCANREFER_BY_NYU40.get(int(nyu40), "others")


def read_label_map(path: str | Path, to: str = "nyu40id") -> dict[str, int]:
    """Read ScanNet's `scannetv2-labels.combined.tsv`: raw_category → `to` column (nyu40id by default)."""
    path = require_file(path, "ScanNet label map (scannetv2-labels.combined.tsv)")
    out: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        cols = reader.fieldnames or []
        for col in ("raw_category", to):
            if col not in cols:
                raise DataFormatError(path, f"missing column {col!r}; columns: {cols}")
        for i, row in enumerate(reader):
            value = (row.get(to) or "").strip()
            if not value:
                continue  # the real file leaves some nyu40 cells empty for unmapped raw names
            try:
                out[row["raw_category"]] = int(value)
            except ValueError:
                raise DataFormatError(path, f"expected an integer, got {value!r}", record=i, field=to) from None
    return out
