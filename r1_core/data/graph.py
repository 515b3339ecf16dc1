"""Scene graphs of spatial relations and unambiguous referring expressions over them.

    g = SceneGraph(scene)                       # any Scene: synthetic, or real ScanNet
    g.holds(3, "next to", 7); g.relations_of(3)
    q, text = g.refer(3, rng)                   # RefQuery that selects only object 3, and its words
    g.resolve(parse_expression(text)) == [3]    # the parser shares only vocabulary with the generator

Relations (boxes in the map frame, z up; structure classes wall/floor/ceiling are left out):
  on(a, b)       a rests on b: a's bottom within b's height span (above b's base), a's centre over b
  under(a, b)    a stands on the floor inside b's footprint, below b's top (box under a table)
  above(a, b)    a is at least 5 cm over b's top and over b's footprint (± 0.3 m) — pictures over beds
  next to(a, b)  horizontal gap < `next_to_gap`, overlapping height spans, neither on/under/above
  left of / right of (a, b)  seen from the viewpoint (0.6 m inside the door, looking at b):
                 a is beside b (|depth offset| < 1.5 m, within 2.5 m) and > 0.3 m to that side
  closest / farthest to an anchor, largest / smallest of a class: unique only with a clear margin
  (0.3 m in distance, ×1.25 in volume); otherwise the expression is ambiguous and not generated.
Colours: SceneObject.color, or for real scans the nearest named colour of the object's mean point colour.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from r1_core.data.classes import STRUCTURE_NYU40_IDS
from r1_core.data.scene import Scene
from r1_core.data.synthetic.catalog import COLORS
from r1_core.data.vocab import DIST_PHRASES, NOUNS, REL_PHRASES, SUP_PHRASES, VIEWPOINT_PHRASES

RELATIONS = ("on", "under", "above", "next to", "left of", "right of")
DISTANCE_RELATIONS = ("closest", "farthest")
SUPERLATIVES = ("largest", "smallest")


@dataclass(frozen=True)
class RefQuery:
    label: str
    color: str | None = None
    relation: str | None = None        # one of RELATIONS or DISTANCE_RELATIONS
    anchor: "RefQuery | None" = None
    superlative: str | None = None     # one of SUPERLATIVES


@dataclass
class Node:
    object_id: int
    label: str
    color: str | None
    lo: np.ndarray
    hi: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    @property
    def volume(self) -> float:
        return float(np.prod(np.maximum(self.hi - self.lo, 1e-3)))


def nearest_color(rgb255: np.ndarray) -> str:
    rgb = np.asarray(rgb255, np.float64) / 255.0
    names = list(COLORS)
    d = [np.linalg.norm(rgb - np.asarray(COLORS[n])) for n in names]
    return names[int(np.argmin(d))]


class SceneGraph:
    def __init__(self, scene: Scene, next_to_gap: float = 0.5, viewpoint: np.ndarray | None = None):
        self.scene = scene
        self.next_to_gap = next_to_gap
        self.nodes: dict[int, Node] = {}
        for o in scene.objects:
            if o.nyu40_id in STRUCTURE_NYU40_IDS:
                continue
            c = o.color
            if c is None:
                pts = scene.object_points(o.object_id)
                c = nearest_color(pts[:, 3:6].mean(0)) if len(pts) else None
            b = o.box.astype(np.float64)
            self.nodes[o.object_id] = Node(o.object_id, o.label, c, b[:3] - b[3:6] / 2, b[:3] + b[3:6] / 2)
        self.viewpoint = viewpoint if viewpoint is not None else self._door_viewpoint()
        self._rel: dict[str, set[tuple[int, int]]] = {r: set() for r in RELATIONS}
        ids = list(self.nodes)
        for a in ids:
            for b in ids:
                if a != b:
                    for r in RELATIONS:
                        if self._test(r, self.nodes[a], self.nodes[b]):
                            self._rel[r].add((a, b))

    # -- relations ---------------------------------------------------------------------------
    def _door_viewpoint(self) -> np.ndarray | None:
        doors = [n for n in self.nodes.values() if n.label == "door"]
        if not doors:
            return None
        d = doors[0]
        ext = d.hi - d.lo
        axis = int(np.argmin(ext[:2]))
        allc = np.array([n.center for n in self.nodes.values()])
        sign = 1.0 if allc[:, axis].mean() > d.center[axis] else -1.0
        p = d.center[:2].copy()
        p[axis] += sign * 0.6
        return p

    @staticmethod
    def _inside_xy(p, n: Node, margin: float = 0.0) -> bool:
        return bool(np.all(p[:2] >= n.lo[:2] - margin) and np.all(p[:2] <= n.hi[:2] + margin))

    def _test(self, r: str, a: Node, b: Node) -> bool:
        if r == "on":
            return (self._inside_xy(a.center, b) and a.lo[2] >= b.lo[2] + 0.1 and a.lo[2] <= b.hi[2] + 0.04
                    and a.volume < b.volume)
        if r == "under":
            return (self._inside_xy(a.center, b) and a.lo[2] <= b.lo[2] + 0.1 and a.hi[2] < b.hi[2] - 0.05
                    and a.volume < b.volume)
        if r == "above":
            return (a.lo[2] >= b.hi[2] + 0.05 and self._inside_xy(a.center, b, 0.3)
                    and not self._test("on", a, b))
        if r == "next to":
            if any(self._test(x, a, b) or self._test(x, b, a) for x in ("on", "under", "above")):
                return False
            gap = np.maximum(0.0, np.maximum(a.lo[:2] - b.hi[:2], b.lo[:2] - a.hi[:2]))
            zover = min(a.hi[2], b.hi[2]) - max(a.lo[2], b.lo[2])
            return bool(np.linalg.norm(gap) < self.next_to_gap and zover > 0.05)
        if r in ("left of", "right of"):
            if self.viewpoint is None:
                return False
            f = b.center[:2] - self.viewpoint
            if np.linalg.norm(f) < 0.5:
                return False
            f = f / np.linalg.norm(f)
            right = np.array([f[1], -f[0]])
            off = a.center[:2] - b.center[:2]
            lateral, depth = float(off @ right), float(off @ f)
            if abs(depth) > 1.5 or np.linalg.norm(off) > 2.5:
                return False
            return lateral < -0.3 if r == "left of" else lateral > 0.3
        raise ValueError(f"unknown relation {r!r}; choose one of {list(RELATIONS)}")

    def holds(self, a: int, r: str, b: int) -> bool:
        if r not in self._rel:
            raise ValueError(f"unknown relation {r!r}; choose one of {list(RELATIONS)}")
        return (a, b) in self._rel[r]

    def relations_of(self, a: int) -> list[tuple[str, int]]:
        return sorted((r, b) for r, pairs in self._rel.items() for (x, b) in pairs if x == a)

    def triples(self) -> list[tuple[int, str, int]]:
        return sorted((a, r, b) for r, pairs in self._rel.items() for a, b in pairs)

    def of_class(self, label: str) -> list[int]:
        return [i for i, n in self.nodes.items() if n.label == label]

    def distance(self, a: int, b: int) -> float:
        return float(np.linalg.norm(self.nodes[a].center[:2] - self.nodes[b].center[:2]))

    # -- referring expressions --------------------------------------------------------------
    def resolve(self, q: RefQuery) -> list[int]:
        """Ids matching the query (a unique referent gives a one-element list)."""
        c = [i for i, n in self.nodes.items() if n.label == q.label and (q.color is None or n.color == q.color)]
        if q.relation is not None:
            if q.anchor is None:
                raise ValueError(f"query {q}: relation {q.relation!r} needs an anchor")
            anchors = self.resolve(q.anchor)
            if len(anchors) != 1:
                return []
            a = anchors[0]
            c = [i for i in c if i != a]
            if q.relation in RELATIONS:
                c = [i for i in c if self.holds(i, q.relation, a)]
            elif q.relation in DISTANCE_RELATIONS:
                c = self._extreme(c, [self.distance(i, a) for i in c], q.relation == "farthest", 0.3, ratio=False)
            else:
                raise ValueError(f"unknown relation {q.relation!r}; choose one of {list(RELATIONS + DISTANCE_RELATIONS)}")
        if q.superlative is not None:
            if q.superlative not in SUPERLATIVES:
                raise ValueError(f"unknown superlative {q.superlative!r}; choose one of {list(SUPERLATIVES)}")
            c = self._extreme(c, [self.nodes[i].volume for i in c], q.superlative == "largest", 1.25, ratio=True)
        return sorted(c)

    @staticmethod
    def _extreme(ids, values, biggest: bool, margin: float, ratio: bool) -> list[int]:
        if len(ids) <= 1:
            return list(ids)
        v = np.asarray(values, np.float64)
        order = np.argsort(-v if biggest else v)
        best, second = v[order[0]], v[order[1]]
        if ratio:
            clear = (best >= second * margin) if biggest else (second >= best * margin)
        else:
            clear = abs(best - second) >= margin
        return [ids[order[0]]] if clear else [ids[k] for k in order if abs(v[k] - best) < (margin if not ratio else abs(best) * (margin - 1))]

    def unique_anchor(self, b: int) -> RefQuery | None:
        n = self.nodes[b]
        for q in (RefQuery(n.label), RefQuery(n.label, n.color)):
            if self.resolve(q) == [b]:
                return q
        return None

    def candidate_queries(self, t: int) -> list[tuple[float, RefQuery]]:
        """Every query of our grammar that selects exactly `t`, with a preference weight."""
        n = self.nodes[t]
        qs: list[tuple[float, RefQuery]] = [(0.6, RefQuery(n.label)), (2.0, RefQuery(n.label, n.color))]
        for r, b in self.relations_of(t):
            aq = self.unique_anchor(b)
            if aq is not None:
                qs += [(3.0, RefQuery(n.label, None, r, aq)), (1.5, RefQuery(n.label, n.color, r, aq))]
        for b, m in self.nodes.items():
            if m.label != n.label and b != t:
                aq = self.unique_anchor(b)
                if aq is not None and len(self.of_class(n.label)) > 1:
                    for r in DISTANCE_RELATIONS:
                        qs.append((0.4, RefQuery(n.label, None, r, aq)))
        if len(self.of_class(n.label)) > 1:
            qs += [(1.2, RefQuery(n.label, superlative=s)) for s in SUPERLATIVES]
        return [(w, q) for w, q in qs if self.resolve(q) == [t]]

    def refer(self, t: int, rng: np.random.Generator) -> tuple[RefQuery, str] | None:
        """A random unambiguous expression for `t` (None when the grammar cannot single it out)."""
        qs = self.candidate_queries(t)
        if not qs:
            return None
        w = np.array([x for x, _ in qs])
        q = qs[int(rng.choice(len(qs), p=w / w.sum()))][1]
        return q, render_np(q, rng)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def noun_phrase_core(q: RefQuery, rng: np.random.Generator) -> str:
    noun = _pick(rng, NOUNS[q.label])
    sup = _pick(rng, SUP_PHRASES[q.superlative]) + " " if q.superlative else ""
    col = q.color + " " if q.color else ""
    return f"{sup}{col}{noun}"


def render_np(q: RefQuery, rng: np.random.Generator) -> str:
    """Words for a query: "the red chair next to the bed", "the largest box", …"""
    out = "the " + noun_phrase_core(q, rng)
    if q.relation in RELATIONS:
        out += f" {_pick(rng, REL_PHRASES[q.relation])} {render_np(q.anchor, rng)}"
        if q.relation in ("left of", "right of"):
            out += " " + _pick(rng, VIEWPOINT_PHRASES)
    elif q.relation in DISTANCE_RELATIONS:
        out += f" {_pick(rng, DIST_PHRASES[q.relation])} {render_np(q.anchor, rng)}"
    return out


# ---------------------------------------------------------------------------------------------
# parser: vocabulary-driven, independent of the templates


def _lexicon() -> list[tuple[str, str, str]]:
    lex = []
    for label, syns in NOUNS.items():
        lex += [(s, "NOUN", label) for s in syns]
    lex += [(c, "COLOR", c) for c in COLORS]
    for r, ps in REL_PHRASES.items():
        lex += [(p, "REL", r) for p in ps]
    for r, ps in DIST_PHRASES.items():
        lex += [(p, "DIST", r) for p in ps]
    for s, ps in SUP_PHRASES.items():
        lex += [(p, "SUP", s) for p in ps]
    return sorted(lex, key=lambda x: -len(x[0]))


_LEX = _lexicon()
_LEX_MAP = {p: (k, v) for p, k, v in _LEX}
_LEX_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p, _, _ in _LEX) + r")\b")
_VIEW_RE = re.compile(r",?\s*(" + "|".join(re.escape(p) for p in VIEWPOINT_PHRASES) + r")")


def parse_expression(text: str) -> RefQuery:
    """Read a referring expression back into a RefQuery: the first class noun is the target
    (with the colour / superlative right before it), the first relation after it names the
    anchor (the next noun, with its colour). Raises ValueError when no class noun is present."""
    t = _VIEW_RE.sub(" ", text.lower())
    toks = [_LEX_MAP[m.group(1)] for m in _LEX_RE.finditer(t)]
    nouns = [i for i, (k, _) in enumerate(toks) if k == "NOUN"]
    if not nouns:
        raise ValueError(f"no object noun in {text!r}")
    i = nouns[0]
    color = toks[i - 1][1] if i >= 1 and toks[i - 1][0] == "COLOR" else None
    sup = next((v for k, v in toks[:i] if k == "SUP"), None)
    relation, anchor = None, None
    for j in range(i + 1, len(toks)):
        if toks[j][0] in ("REL", "DIST"):
            relation = toks[j][1]
            for k in range(j + 1, len(toks)):
                if toks[k][0] == "NOUN":
                    acol = toks[k - 1][1] if toks[k - 1][0] == "COLOR" else None
                    anchor = RefQuery(toks[k][1], acol)
                    break
            break
    if relation is not None and anchor is None:
        raise ValueError(f"relation {relation!r} without an anchor object in {text!r}")
    return RefQuery(toks[i][1], color, relation, anchor, sup)
