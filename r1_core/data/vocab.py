"""Words of the synthetic language: class nouns and synonyms, plurals, colour names, relation
and superlative phrases. The generator and the independent parser share only these tables.

    NOUNS["sofa"] == ("sofa", "couch");  plural("box") == "boxes"
"""
from __future__ import annotations

from r1_core.data.synthetic.catalog import COLORS

NOUNS: dict[str, tuple[str, ...]] = {
    "bed": ("bed",), "chair": ("chair",), "sofa": ("sofa", "couch"), "table": ("table",),
    "desk": ("desk",), "cabinet": ("cabinet",), "bookshelf": ("bookshelf", "bookcase"),
    "dresser": ("dresser",), "night stand": ("night stand", "nightstand", "bedside table"),
    "refrigerator": ("refrigerator", "fridge"), "counter": ("counter", "countertop"),
    "sink": ("sink",), "toilet": ("toilet",), "bathtub": ("bathtub", "bath tub"),
    "shower curtain": ("shower curtain",), "door": ("door",), "window": ("window",),
    "curtain": ("curtain",), "picture": ("picture", "painting"), "whiteboard": ("whiteboard",),
    "mirror": ("mirror",), "lamp": ("lamp",), "pillow": ("pillow", "cushion"), "box": ("box",),
    "trash can": ("trash can", "trash bin", "garbage bin"), "tv": ("tv", "television"),
}
_PLURAL_EXCEPTIONS = {"box": "boxes", "bookshelf": "bookshelves", "couch": "couches",
                      "bench": "benches", "trash can": "trash cans"}


def plural(word: str) -> str:
    if word in _PLURAL_EXCEPTIONS:
        return _PLURAL_EXCEPTIONS[word]
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


COLOR_NAMES = tuple(COLORS)

# relation → phrases (first is canonical). left/right are seen from the door (VIEWPOINT_PHRASES).
REL_PHRASES: dict[str, tuple[str, ...]] = {
    "next to": ("next to", "beside", "close to", "near"),
    "on": ("on", "on top of", "sitting on", "resting on"),
    "under": ("under", "underneath", "below", "beneath"),
    "above": ("above", "hanging above", "over"),
    "left of": ("to the left of", "left of", "on the left side of"),
    "right of": ("to the right of", "right of", "on the right side of"),
}
DIST_PHRASES: dict[str, tuple[str, ...]] = {
    "closest": ("closest to", "nearest to"),
    "farthest": ("farthest from", "furthest from"),
}
SUP_PHRASES: dict[str, tuple[str, ...]] = {
    "largest": ("largest", "biggest"),
    "smallest": ("smallest", "tiniest"),
}
VIEWPOINT_PHRASES = ("as seen from the door", "when you look from the door", "seen from the entrance",
                     "looking from the doorway")
