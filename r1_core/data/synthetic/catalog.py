"""The synthetic world's catalogue: ScanNet classes with realistic sizes, named colours, part
builders (compositions of axis-aligned boxes) and room recipes.

    spec = CLASSES["chair"]; parts = spec.build(rng, w, d, h)   # local frame, back at +y

Local object frame: x ∈ [-w/2, w/2] (width), y ∈ [-d/2, d/2] (depth, back at +y, front at -y),
z ∈ [0, h]. Parts are (lo, hi) corner pairs in that frame; placement rotates by multiples of 90°
so every part stays an axis-aligned box in the map frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# Named colours (sRGB 0..1). Names are the vocabulary the language and the CoT use.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.14, 0.14), "blue": (0.15, 0.28, 0.75), "green": (0.18, 0.56, 0.24),
    "yellow": (0.90, 0.80, 0.18), "black": (0.10, 0.10, 0.11), "white": (0.93, 0.93, 0.91),
    "brown": (0.47, 0.30, 0.16), "gray": (0.50, 0.50, 0.50), "orange": (0.92, 0.50, 0.14),
    "purple": (0.46, 0.22, 0.60), "pink": (0.92, 0.55, 0.68), "beige": (0.85, 0.78, 0.62),
}

Part = tuple[tuple[float, float, float], tuple[float, float, float]]


def _block(w, d, h, z0=0.0) -> list[Part]:
    return [((-w / 2, -d / 2, z0), (w / 2, d / 2, z0 + h))]


def _legs_top(w, d, h, top=0.04, leg=0.05) -> list[Part]:
    parts = [((-w / 2, -d / 2, h - top), (w / 2, d / 2, h))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x0 = sx * (w / 2 - leg / 2)
            y0 = sy * (d / 2 - leg / 2)
            parts.append(((x0 - leg / 2, y0 - leg / 2, 0.0), (x0 + leg / 2, y0 + leg / 2, h - top)))
    return parts


def _chair(w, d, h) -> list[Part]:
    seat_h, t = 0.45, 0.05
    parts = _legs_top(w, d, seat_h, top=t, leg=0.04)
    parts.append(((-w / 2, d / 2 - 0.06, seat_h), (w / 2, d / 2, h)))  # back rest
    return parts


def _desk(w, d, h) -> list[Part]:
    t = 0.04
    return [((-w / 2, -d / 2, h - t), (w / 2, d / 2, h)),
            ((-w / 2, -d / 2, 0.0), (-w / 2 + 0.04, d / 2, h - t)),
            ((w / 2 - 0.04, -d / 2, 0.0), (w / 2, d / 2, h - t))]


def _bed(w, d, h) -> list[Part]:
    frame, mattress = 0.3, 0.22
    return [((-w / 2, -d / 2, 0.0), (w / 2, d / 2 - 0.08, frame)),
            ((-w / 2 + 0.03, -d / 2 + 0.03, frame), (w / 2 - 0.03, d / 2 - 0.08, frame + mattress)),
            ((-w / 2, d / 2 - 0.08, 0.0), (w / 2, d / 2, h))]  # headboard at the back


def _sofa(w, d, h) -> list[Part]:
    seat, arm = 0.42, 0.18
    return [((-w / 2 + arm, -d / 2, 0.0), (w / 2 - arm, d / 2 - 0.2, seat)),
            ((-w / 2 + arm, d / 2 - 0.2, 0.0), (w / 2 - arm, d / 2, h)),
            ((-w / 2, -d / 2, 0.0), (-w / 2 + arm, d / 2, 0.62)),
            ((w / 2 - arm, -d / 2, 0.0), (w / 2, d / 2, 0.62))]


def _toilet(w, d, h) -> list[Part]:
    return [((-w / 2 + 0.04, -d / 2, 0.0), (w / 2 - 0.04, d / 2 - 0.2, 0.42)),
            ((-w / 2, d / 2 - 0.2, 0.0), (w / 2, d / 2, h))]


def _bathtub(w, d, h) -> list[Part]:
    t = 0.07
    return [((-w / 2, -d / 2, 0.0), (w / 2, d / 2, 0.1)),
            ((-w / 2, -d / 2, 0.1), (-w / 2 + t, d / 2, h)), ((w / 2 - t, -d / 2, 0.1), (w / 2, d / 2, h)),
            ((-w / 2 + t, -d / 2, 0.1), (w / 2 - t, -d / 2 + t, h)), ((-w / 2 + t, d / 2 - t, 0.1), (w / 2 - t, d / 2, h))]


def _lamp(w, d, h) -> list[Part]:
    pole = 0.03
    return [((-w / 3, -d / 3, 0.0), (w / 3, d / 3, 0.03)),
            ((-pole / 2, -pole / 2, 0.03), (pole / 2, pole / 2, h * 0.7)),
            ((-w / 2, -d / 2, h * 0.7), (w / 2, d / 2, h))]


def _bookshelf(w, d, h) -> list[Part]:
    t = 0.03
    parts = [((-w / 2, d / 2 - t, 0.0), (w / 2, d / 2, h)),          # back
             ((-w / 2, -d / 2, 0.0), (-w / 2 + t, d / 2 - t, h)),     # sides
             ((w / 2 - t, -d / 2, 0.0), (w / 2, d / 2 - t, h))]
    n = max(2, int(h / 0.4))
    for k in range(n + 1):
        z = min(k * h / n, h - t)
        parts.append(((-w / 2 + t, -d / 2, z), (w / 2 - t, d / 2 - t, z + t)))
    return parts


def _tv(w, d, h) -> list[Part]:
    return [((-0.12, -0.1, 0.0), (0.12, 0.1, 0.04)), ((-0.03, 0.0, 0.04), (0.03, 0.04, 0.12)),
            ((-w / 2, 0.0, 0.12), (w / 2, d / 2, h))]


def _trash(w, d, h) -> list[Part]:
    return _block(w, d, h)


@dataclass
class ClassSpec:
    label: str                         # ScanNet raw / NYU40 name
    size: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # (w, d, h) ranges, metres
    place: str                         # wall | free | near | on | under | wallmount | door | window
    colors: tuple[str, ...]
    builder: Callable[[float, float, float], list[Part]] = _block
    supports: tuple[str, ...] = ()     # for place in (on, under, near): classes it goes on/under/next to
    mount_z: tuple[float, float] = (0.0, 0.0)   # wall-mounted: bottom height range

    def sample_size(self, rng: np.random.Generator) -> tuple[float, float, float]:
        return tuple(float(rng.uniform(lo, hi)) for lo, hi in self.size)  # type: ignore[return-value]


_FURN = ("brown", "white", "black", "gray", "beige")
_SEAT = ("red", "blue", "green", "black", "white", "brown", "gray", "yellow", "orange", "purple", "pink")
_BRIGHT = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "black", "gray")

CLASSES: dict[str, ClassSpec] = {s.label: s for s in [
    ClassSpec("bed", ((1.4, 1.8), (2.0, 2.1), (0.9, 1.1)), "wall", ("white", "blue", "gray", "brown", "beige", "green"), _bed),
    ClassSpec("chair", ((0.44, 0.5), (0.46, 0.52), (0.85, 1.0)), "near", _SEAT, _chair, ("table", "desk", "bed", "sofa")),
    ClassSpec("sofa", ((1.7, 2.2), (0.85, 0.95), (0.8, 0.9)), "wall", ("gray", "blue", "red", "green", "brown", "black", "beige"), _sofa),
    ClassSpec("table", ((0.9, 1.5), (0.7, 0.9), (0.72, 0.76)), "free", _FURN, _legs_top),
    ClassSpec("desk", ((1.1, 1.5), (0.6, 0.75), (0.72, 0.76)), "wall", _FURN, _desk),
    ClassSpec("cabinet", ((0.6, 1.1), (0.45, 0.6), (0.8, 1.9)), "wall", _FURN + ("blue", "green")),
    ClassSpec("bookshelf", ((0.8, 1.2), (0.3, 0.4), (1.6, 2.0)), "wall", _FURN, _bookshelf),
    ClassSpec("dresser", ((1.0, 1.4), (0.45, 0.55), (0.8, 0.95)), "wall", _FURN),
    ClassSpec("night stand", ((0.4, 0.5), (0.38, 0.45), (0.5, 0.6)), "near", _FURN, supports=("bed",)),
    ClassSpec("refrigerator", ((0.65, 0.8), (0.65, 0.75), (1.7, 1.9)), "wall", ("white", "gray", "black")),
    ClassSpec("counter", ((1.4, 2.6), (0.6, 0.65), (0.88, 0.92)), "wall", ("white", "gray", "black", "beige", "brown")),
    ClassSpec("sink", ((0.45, 0.6), (0.4, 0.45), (0.15, 0.2)), "on", ("white", "gray"), supports=("counter",)),
    ClassSpec("toilet", ((0.38, 0.42), (0.65, 0.72), (0.72, 0.8)), "wall", ("white",), _toilet),
    ClassSpec("bathtub", ((1.6, 1.75), (0.72, 0.8), (0.5, 0.58)), "wall", ("white", "beige"), _bathtub),
    ClassSpec("shower curtain", ((1.5, 1.7), (0.02, 0.03), (1.8, 1.9)), "near", ("white", "blue", "green", "pink"), supports=("bathtub",)),
    ClassSpec("door", ((0.85, 0.95), (0.04, 0.05), (2.0, 2.1)), "door", ("brown", "white", "gray")),
    ClassSpec("window", ((1.0, 1.5), (0.04, 0.05), (1.0, 1.3)), "window", ("white", "gray", "black"), mount_z=(0.85, 1.0)),
    ClassSpec("curtain", ((0.5, 0.8), (0.05, 0.07), (2.0, 2.3)), "near", ("red", "blue", "green", "beige", "white", "purple", "yellow"), supports=("window",)),
    ClassSpec("picture", ((0.4, 1.0), (0.03, 0.04), (0.3, 0.7)), "wallmount", _BRIGHT, mount_z=(1.3, 1.6)),
    ClassSpec("whiteboard", ((1.2, 1.8), (0.03, 0.04), (0.9, 1.1)), "wallmount", ("white",), mount_z=(0.9, 1.0)),
    ClassSpec("mirror", ((0.5, 0.7), (0.03, 0.04), (0.6, 0.9)), "wallmount", ("gray", "white"), mount_z=(1.1, 1.3)),
    ClassSpec("lamp", ((0.22, 0.3), (0.22, 0.3), (0.4, 0.5)), "on", ("white", "black", "yellow", "red", "blue", "green", "orange"), _lamp, ("night stand", "desk", "dresser", "table")),
    ClassSpec("pillow", ((0.45, 0.6), (0.3, 0.4), (0.12, 0.16)), "on", _BRIGHT + ("beige",), supports=("bed", "sofa")),
    ClassSpec("box", ((0.3, 0.5), (0.25, 0.4), (0.2, 0.4)), "free", ("brown", "white", "red", "blue", "green", "yellow", "black", "orange")),
    ClassSpec("trash can", ((0.28, 0.35), (0.28, 0.35), (0.35, 0.45)), "under", ("black", "gray", "white", "blue", "green"), _trash, ("desk", "table")),
    ClassSpec("tv", ((0.9, 1.3), (0.06, 0.08), (0.6, 0.8)), "on", ("black",), _tv, ("dresser", "cabinet")),
]}

# Room recipes: (class, min count, max count), placed in this order (supports first).
ROOM_KINDS: dict[str, list[tuple[str, int, int]]] = {
    "bedroom": [("door", 1, 1), ("window", 1, 2), ("bed", 1, 1), ("night stand", 1, 2), ("dresser", 0, 1),
                ("desk", 0, 1), ("cabinet", 0, 1), ("curtain", 1, 2), ("chair", 2, 3), ("lamp", 1, 2),
                ("pillow", 1, 2), ("tv", 0, 1), ("picture", 1, 2), ("box", 1, 2), ("trash can", 0, 1)],
    "living room": [("door", 1, 1), ("window", 1, 2), ("sofa", 1, 2), ("cabinet", 1, 1), ("bookshelf", 1, 2),
                    ("table", 1, 2), ("curtain", 1, 2), ("chair", 2, 4), ("tv", 1, 1), ("lamp", 1, 2),
                    ("pillow", 1, 3), ("picture", 1, 3), ("box", 1, 3), ("trash can", 0, 1)],
    "office": [("door", 1, 1), ("window", 1, 2), ("desk", 2, 3), ("bookshelf", 1, 2), ("cabinet", 1, 2),
               ("table", 0, 1), ("chair", 3, 5), ("whiteboard", 0, 1), ("lamp", 1, 2), ("trash can", 1, 2),
               ("box", 1, 3), ("picture", 0, 2), ("curtain", 0, 1)],
    "kitchen": [("door", 1, 1), ("window", 1, 1), ("counter", 1, 2), ("refrigerator", 1, 1), ("sink", 1, 1),
                ("cabinet", 1, 2), ("table", 1, 1), ("chair", 2, 4), ("trash can", 1, 1), ("box", 1, 2),
                ("picture", 0, 2), ("lamp", 0, 1), ("curtain", 0, 1)],
    "bathroom": [("door", 1, 1), ("window", 0, 1), ("bathtub", 1, 1), ("toilet", 1, 1), ("counter", 1, 1),
                 ("sink", 1, 1), ("shower curtain", 1, 1), ("mirror", 1, 1), ("cabinet", 0, 1),
                 ("trash can", 1, 1), ("box", 0, 2), ("picture", 0, 1)],
}
ROOM_SIZES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "bedroom": ((4.0, 6.5), (4.0, 6.0)), "living room": ((5.0, 8.0), (4.5, 7.0)), "office": ((4.5, 8.0), (4.0, 7.0)),
    "kitchen": ((4.0, 6.5), (4.0, 6.0)), "bathroom": ((4.0, 5.0), (4.0, 5.0)),
}
WALL_COLORS = ("white", "beige", "gray")
FLOOR_COLORS = ("brown", "gray", "beige")
