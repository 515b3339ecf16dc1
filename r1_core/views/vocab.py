"""The request vocabulary of view selection, in one place: object class phrases (NYU40 names,
ScanNet raw categories and everyday synonyms) and colour words, plus the parser that finds
them in a request.

    from r1_core.views.vocab import parse_mentions, color_names
    parse_mentions("the red chair next to the bed")
    # [Mention(phrase='chair', nyu40_ids=(5,), color='red', position=2),
    #  Mention(phrase='bed', nyu40_ids=(4,), color=None, position=6)]
    color_names(np.array([[200, 40, 40]]))          # array(['red'])

Class names come from the data layer: `r1_core.data.classes` (NYU40 names and the raw ScanNet
categories it maps) and `r1_core.data.vocab.NOUNS` (the synonyms the annotation language uses:
"cushion", "countertop", "painting", …); this module adds plural forms, a few everyday
synonyms, colour words, and the relation / superlative words that re-weight same-class
candidates. Swap the tables here to change what requests can refer to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from r1_core.data.classes import NYU40_NAMES, RAW_TO_NYU40, STRUCTURE_NYU40_IDS, nyu40_id
from r1_core.data.vocab import NOUNS

# Everyday words for NYU40 classes that neither NYU40 nor the ScanNet raw map spells out.
SYNONYMS: dict[str, tuple[int, ...]] = {
    "fridge": (24,), "couch": (6,), "settee": (6,), "bookcase": (10,), "cupboard": (3,),
    "nightstand": (32,), "night table": (32,), "bedside table": (32,), "end table": (7, 32),
    "dining table": (7,), "side table": (7, 32), "stool": (5,), "seat": (5, 6),
    "trash bin": (39,), "garbage bin": (39,), "garbage can": (39,), "waste bin": (39,),
    "wastebasket": (39,), "bin": (39,), "trashcan": (39,),
    "painting": (11,), "poster": (11,), "photo": (11,), "frame": (11,),
    "drapes": (16,), "carpet": (20,), "mat": (20,), "screen": (25,), "tv stand": (39,),
    "tub": (36,), "basin": (34,), "light": (35,), "drawers": (17,), "chest of drawers": (17,),
    "board": (30,), "shelving": (15,), "sofa chair": (5,), "lounge chair": (5,),
}

# Basic colour terms with a prototype sRGB (0..255) each. Requests use these words; the
# proposal colour test classifies map colours to the nearest prototype (color_names).
COLOR_PROTOTYPES: dict[str, tuple[int, int, int]] = {
    "red": (190, 35, 35), "orange": (230, 125, 35), "yellow": (225, 205, 45),
    "green": (45, 140, 60), "blue": (40, 70, 190), "purple": (115, 55, 150),
    "pink": (235, 140, 175), "brown": (120, 75, 40), "beige": (215, 200, 160),
    "white": (235, 235, 232), "gray": (128, 128, 128), "black": (25, 25, 28),
}
COLOR_ALIASES = {"grey": "gray", "violet": "purple", "tan": "beige", "cream": "beige"}


@dataclass(frozen=True)
class Mention:
    """One object phrase found in a request."""

    phrase: str                    # the matched words, e.g. "night stand"
    nyu40_ids: tuple[int, ...]     # the classes the phrase can mean
    color: str | None              # a colour word attached to the phrase, if any
    position: int                  # token index of the phrase's first word
    end: int = -1                  # token index after the phrase's last word
    superlative: int = 0           # +1 "largest"/"biggest", -1 "smallest" (right before the phrase)


# Relation words between a head phrase and its anchor ("the chair next to the bed"): "near"
# relations favour head candidates close to the anchor, "far" ones those far from it.
# Left/right relations depend on a viewpoint the selector does not know and are not used.
NEAR_RELATIONS = ("next to", "beside", "near", "close to", "closest to", "nearest to", "by", "on",
                  "on top of", "sitting on", "resting on", "under", "underneath", "below", "beneath",
                  "above", "over", "hanging above", "in front of", "against")
FAR_RELATIONS = ("farthest from", "furthest from", "far from", "away from")
SUPERLATIVES = {"largest": 1, "biggest": 1, "smallest": -1, "tiniest": -1}


def relation_between(text: str, head: Mention, anchor: Mention) -> str | None:
    """"near" / "far" when a relation phrase stands between the two phrases, else None."""
    tokens = _TOKEN.findall(text.lower())
    between = " " + " ".join(tokens[head.end:anchor.position]) + " "
    if " left " in between or " right " in between:
        return None
    if any(f" {p} " in between for p in FAR_RELATIONS):
        return "far"
    if any(f" {p} " in between for p in NEAR_RELATIONS):
        return "near"
    return None


def _plural(word: str) -> list[str]:
    if word.endswith(("s", "x", "ch", "sh")):
        return [word + "es"]
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return [word[:-1] + "ies"]
    if word.endswith("f"):
        return [word + "s", word[:-1] + "ves"]
    return [word + "s"]


def _build_phrases() -> dict[tuple[str, ...], tuple[int, ...]]:
    table: dict[str, set[int]] = {}

    def add(name: str, ids: tuple[int, ...]) -> None:
        name = name.strip().lower()
        if name.startswith("other"):       # otherprop / otherfurniture / otherstructure
            return
        head, _, last = name.rpartition(" ")
        for form in [name] + [f"{head} {p}".strip() for p in _plural(last)]:
            table.setdefault(form, set()).update(ids)

    for i, name in NYU40_NAMES.items():
        add(name, (i,))
    add("refridgerator", (24,))
    for name, i in RAW_TO_NYU40.items():
        add(name, (i,))
    for label, words in NOUNS.items():
        for word in words:
            add(word, (nyu40_id(label),))
    for name, ids in SYNONYMS.items():
        add(name, ids)
    return {tuple(k.split()): tuple(sorted(v)) for k, v in table.items()}


PHRASES: dict[tuple[str, ...], tuple[int, ...]] = _build_phrases()
_MAX_WORDS = max(len(k) for k in PHRASES)
_TOKEN = re.compile(r"[a-z]+")


def parse_mentions(text: str, ignore_ids: tuple[int, ...] = STRUCTURE_NYU40_IDS) -> list[Mention]:
    """Object phrases in `text`, in order of appearance (longest phrase wins at each word).

    A colour word attaches to the next object phrase within three words ("the red wooden
    chair"), otherwise to the previous one ("the chair that is red"). Phrases whose classes
    are all in `ignore_ids` (walls, floor, ceiling by default) are left out.
    """
    tokens = _TOKEN.findall(text.lower())
    found: list[tuple[int, int, tuple[int, ...]]] = []    # (start, end, ids)
    colors: list[tuple[int, str]] = []
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_WORDS, len(tokens) - i), 0, -1):
            ids = PHRASES.get(tuple(tokens[i:i + n]))
            if ids is not None:
                found.append((i, i + n, ids))
                i += n
                break
        else:
            word = COLOR_ALIASES.get(tokens[i], tokens[i])
            if word in COLOR_PROTOTYPES:
                colors.append((i, word))
            i += 1
    attached: dict[int, str] = {}
    for pos, word in colors:
        nxt = [k for k, (s, _, _) in enumerate(found) if 0 < s - pos <= 3 and k not in attached]
        prv = [k for k, (_, e, _) in enumerate(found) if e <= pos and k not in attached]
        if nxt:
            attached[nxt[0]] = word
        elif prv:
            attached[prv[-1]] = word
    out = []
    for k, (s, e, ids) in enumerate(found):
        if all(x in ignore_ids for x in ids):
            continue
        sup = 0
        for j in range(max(0, s - 3), s):
            sup = SUPERLATIVES.get(tokens[j], sup)
        out.append(Mention(" ".join(tokens[s:e]), ids, attached.get(k), s, e, sup))
    return out


# ---- colours ------------------------------------------------------------------------------------
COLOR_WORDS: tuple[str, ...] = tuple(COLOR_PROTOTYPES)
_PROTO = np.array([COLOR_PROTOTYPES[c] for c in COLOR_WORDS], np.float64)
# Shading scales a surface's colour: a lit white face and a shaded one differ by a factor, not
# by hue. So a colour is compared with the *segment* s * prototype, s in [SHADE_MIN, SHADE_MAX],
# and the nearest segment names it (a dark-shaded white box is still white, not gray).
SHADE_MIN, SHADE_MAX = 0.55, 1.15


def color_distances(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB 0..255 -> (..., len(COLOR_WORDS)) distance to each colour's shading segment."""
    rgb = np.asarray(rgb, np.float64)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"color: expected (..., 3) RGB in 0..255, got shape {rgb.shape}")
    s = np.clip((rgb @ _PROTO.T) / (_PROTO ** 2).sum(1), SHADE_MIN, SHADE_MAX)    # (..., C)
    return np.linalg.norm(rgb[..., None, :] - s[..., None] * _PROTO, axis=-1)


def color_indices(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB 0..255 -> int index into COLOR_WORDS of the nearest colour."""
    return np.argmin(color_distances(rgb), axis=-1)


def color_names(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB 0..255 -> the nearest colour word per colour (numpy str array)."""
    return np.asarray(COLOR_WORDS)[color_indices(rgb)]


def dominant_colors(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K,) index into COLOR_WORDS of the most common colour among the points inside each box
    (-1 for a box with no points). points (N, 6+) xyz + sRGB 0..255, boxes (K, 7).

    The vote, not the mean colour, names the object: a box also holds some floor or wall. On the
    synthetic held-out rooms the vote names 94 % of detected objects' colours right
    (bench/grounding_errors.py); naming the mean colour got 91 % in a one-off check."""
    from r1_core.geometry.boxes import points_in_boxes

    points, boxes = np.asarray(points), np.asarray(boxes)
    if points.ndim != 2 or points.shape[1] < 6:
        raise ValueError(f"dominant_colors: points must be (N, 6+) xyz + rgb, got shape {points.shape}")
    inside = points_in_boxes(points[:, :3].astype(np.float32), boxes.astype(np.float32))   # (N, K)
    idx = color_indices(points[:, 3:6])                                                      # (N,)
    votes = inside.T.astype(np.int64) @ np.eye(len(COLOR_WORDS), dtype=np.int64)[idx]       # (K, C)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1)
