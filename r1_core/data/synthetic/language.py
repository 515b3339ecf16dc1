"""Annotations of a synthetic scene in every real format, generated from its scene graph.

    ann = annotate_scene(scene, room, np.random.default_rng(0), LanguageConfig())
    ann.scanrefer, ann.nr3d, ann.scanqa, ann.sqa3d, ann.dialogue, ann.planning

Every referring expression (ScanRefer descriptions, Nr3D utterances, noun phrases inside QA,
dialogue and planning text) is produced from a RefQuery that the scene graph resolves to
exactly its target; `ann.queries[(object_id, ann_id)]` keeps the query for each ScanRefer
record. Answers are short (a number, a colour, a noun, a direction) so a small model can learn
them; templates, synonyms and relations vary the wording.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from r1_core.data.formats import (LLM3DRecord, Nr3dRecord, ReferRecord, ScanQARecord, SQA3DRecord,
                                  format_dialogue, tokenize)
from r1_core.data.graph import DISTANCE_RELATIONS, RELATIONS, RefQuery, SceneGraph, noun_phrase_core, render_np
from r1_core.data.scene import Scene
from r1_core.data.synthetic.catalog import CLASSES
from r1_core.data.synthetic.world import SynthRoom, clearance
from r1_core.data.vocab import DIST_PHRASES, NOUNS, REL_PHRASES, VIEWPOINT_PHRASES, plural

NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@dataclass
class LanguageConfig:
    """How many annotations of each kind per scene (config/data.yaml, section `language`)."""
    descriptions_per_object: int = 3
    nr3d_per_object: int = 2
    qa_per_scene: int = 16
    sqa_per_scene: int = 8
    dialogues_per_scene: int = 3
    plans_per_scene: int = 2

    def __post_init__(self) -> None:
        for k, v in self.__dict__.items():
            if v < 0:
                raise ValueError(f"LanguageConfig.{k} must be >= 0, got {v}")


@dataclass
class SceneAnnotations:
    scanrefer: list[ReferRecord] = field(default_factory=list)
    nr3d: list[Nr3dRecord] = field(default_factory=list)
    scanqa: list[ScanQARecord] = field(default_factory=list)
    sqa3d: list[SQA3DRecord] = field(default_factory=list)
    dialogue: list[LLM3DRecord] = field(default_factory=list)
    planning: list[LLM3DRecord] = field(default_factory=list)
    queries: dict[tuple[int, int], RefQuery] = field(default_factory=dict)


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _rel_part(q: RefQuery, rng) -> str:
    if q.relation in RELATIONS:
        s = f" {_pick(rng, REL_PHRASES[q.relation])} {render_np(q.anchor, rng)}"
        if q.relation in ("left of", "right of"):
            s += " " + _pick(rng, VIEWPOINT_PHRASES)
        return s
    if q.relation in DISTANCE_RELATIONS:
        return f" {_pick(rng, DIST_PHRASES[q.relation])} {render_np(q.anchor, rng)}"
    return ""


def _extras(scene_room: SynthRoom | None, obj_box: np.ndarray, rng) -> list[str]:
    h, w = float(obj_box[5]), float(max(obj_box[3], obj_box[4]))
    out = [f"it is about {h:.1f} meters tall", f"it is about {w:.1f} meters wide"]
    if scene_room is not None:
        W, D, _ = scene_room.size
        lo, hi = obj_box[:3] - obj_box[3:6] / 2, obj_box[:3] + obj_box[3:6] / 2
        walls = [lo[0] < 0.1, hi[0] > W - 0.1, lo[1] < 0.1, hi[1] > D - 0.1]
        if sum(walls) >= 2:
            out.append("it is in the corner of the room")
        elif any(walls):
            out.append("it is placed against the wall")
        else:
            out.append("it stands away from the walls")
    return out


def describe(g: SceneGraph, q: RefQuery, rng, room: SynthRoom | None, box: np.ndarray) -> str:
    """A ScanRefer-style description (1–2 sentences) of the query's target."""
    core = noun_phrase_core(q, rng)
    rel = _rel_part(q, rng)
    extra = _pick(rng, _extras(room, box, rng))
    forms = [f"this is the {core}{rel}.", f"the {core}{rel}. {extra}.", f"look for the {core}{rel}. {extra}."]
    if q.superlative is None:
        forms.append(f"there is a {core}{rel}. {extra}.")
        if rel:
            forms.append(f"this is a {core}. it is{rel}.")
    return _pick(rng, forms)


def _count_answer(n: int) -> list[str]:
    return [str(n), NUM_WORDS[n]] if n < len(NUM_WORDS) else [str(n)]


def _short(g: SceneGraph, i: int, rng) -> str:
    n = g.nodes[i]
    return f"{n.color} {_pick(rng, NOUNS[n.label])}" if n.color else _pick(rng, NOUNS[n.label])


def annotate_scene(scene: Scene, room: SynthRoom | None, rng: np.random.Generator, cfg: LanguageConfig | None = None,
                   split: str = "train") -> SceneAnnotations:
    cfg = cfg or LanguageConfig()
    g = SceneGraph(scene)
    out = SceneAnnotations()
    sid = scene.scene_id
    ids = sorted(g.nodes)
    # -- ScanRefer ----------------------------------------------------------------------------
    for oid in ids:
        qs = g.candidate_queries(oid)
        if not qs:
            continue
        w = np.array([x for x, _ in qs]); w = w / w.sum()
        picks = rng.choice(len(qs), size=min(cfg.descriptions_per_object, len(qs)), replace=False, p=w)
        for ann_id, k in enumerate(sorted(picks)):
            q = qs[int(k)][1]
            text = describe(g, q, rng, room, scene.object(oid).box)
            out.scanrefer.append(ReferRecord(sid, oid, g.nodes[oid].label, ann_id, text, tokenize(text)))
            out.queries[(oid, ann_id)] = q
    # -- Nr3D: only objects with same-class distractors, as in ReferIt3D --------------------------
    k = 0
    for oid in ids:
        same = g.of_class(g.nodes[oid].label)
        if len(same) < 2:
            continue
        qs = g.candidate_queries(oid)
        for _ in range(min(cfg.nr3d_per_object, len(qs))):
            q = qs[int(rng.integers(len(qs)))][1]
            utt = render_np(q, rng)
            if rng.random() < 0.4:
                utt = utt[4:]  # Nr3D speakers often drop the article
            distract = [d for d in same if d != oid]
            stim = f"{sid}-{g.nodes[oid].label.replace(' ', '_')}-{len(same)}-{oid}-" + "-".join(map(str, distract))
            out.nr3d.append(Nr3dRecord(
                sid, oid, g.nodes[oid].label, utt, stimulus_id=stim, tokens=tokenize(utt),
                assignmentid=f"{sid}-{k}", speaker_id="synth", listener_id="synth",
                uses_color_lang=q.color is not None or (q.anchor is not None and q.anchor.color is not None),
                uses_spatial_lang=q.relation is not None, uses_object_lang=q.anchor is not None, uses_shape_lang=q.superlative is not None))
            k += 1
    # -- ScanQA ---------------------------------------------------------------------------------
    out.scanqa = _scanqa(g, rng, cfg, sid, split)
    if room is not None:
        out.sqa3d = _sqa3d(g, room, rng, cfg, sid)
    out.dialogue = _dialogues(g, rng, cfg, sid)
    out.planning = _plans(g, rng, cfg, sid)
    return out


def _unique_np_without_color(g: SceneGraph, oid: int, rng) -> str | None:
    qs = [q for _, q in g.candidate_queries(oid) if q.color is None]
    return render_np(_pick(rng, qs), rng) if qs else None


def _any_np(g: SceneGraph, oid: int, rng) -> str | None:
    qs = g.candidate_queries(oid)
    return render_np(_pick(rng, qs)[1], rng) if qs else None


def _scanqa(g: SceneGraph, rng, cfg: LanguageConfig, sid: str, split: str) -> list[ScanQARecord]:
    items: list[tuple[str, list[str], list[int]]] = []
    labels = sorted({n.label for n in g.nodes.values()})
    for lab in labels:
        ids = g.of_class(lab)
        word = plural(_pick(rng, NOUNS[lab]))
        q = _pick(rng, [f"how many {word} are in the room?", f"how many {word} are there?",
                        f"what is the number of {word} in this room?"])
        items.append((q, _count_answer(len(ids)), ids))
    absent = [c for c in CLASSES if c not in labels]
    for lab in rng.permutation(absent)[:2]:
        items.append((f"is there a {_pick(rng, NOUNS[str(lab)])} in the room?", ["no"], []))
    for lab in rng.permutation(labels)[:2]:
        ids = g.of_class(str(lab))
        items.append((f"is there a {_pick(rng, NOUNS[str(lab)])} in the room?", ["yes"], ids))
    for oid in g.nodes:
        n = g.nodes[oid]
        np_ = _unique_np_without_color(g, oid, rng)
        if np_ and n.color:
            items.append((_pick(rng, [f"what color is {np_}?", f"what is the color of {np_}?"]), [n.color], [oid]))
        rels = [(r, b) for r, b in g.relations_of(oid) if r in ("on", "under", "above", "next to") and g.unique_anchor(b)]
        if rels:
            r, b = _pick(rng, rels)
            anchor = render_np(g.unique_anchor(b), rng)
            obj_np = _any_np(g, oid, rng)
            if obj_np:
                items.append((f"where is {obj_np}?", [f"{REL_PHRASES[r][0]} {anchor}"], [oid, b]))
        for r in ("on", "under"):
            subj = sorted(a for a in g.nodes if g.holds(a, r, oid))
            anchor_q = g.unique_anchor(oid)
            if subj and anchor_q is not None:
                labs = sorted({g.nodes[a].label for a in subj})
                if len(labs) == 1:
                    ans = f"{len(subj)} {plural(labs[0])}" if len(subj) > 1 else _short(g, subj[0], rng)
                else:
                    ans = " and ".join(f"a {g.nodes[a].label}" for a in subj)
                items.append((f"what is {r} {render_np(anchor_q, rng)}?", [ans], subj))
    if g.viewpoint is not None:
        door = next((i for i, n in g.nodes.items() if n.label == "door"), None)
        for oid in rng.permutation(list(g.nodes))[:4]:
            oid = int(oid)
            if oid == door:
                continue
            np_ = _any_np(g, oid, rng)
            if not np_:
                continue
            allc = np.array([n.center[:2] for n in g.nodes.values()])
            fwd = allc.mean(0) - g.viewpoint
            fwd /= np.linalg.norm(fwd)
            v = g.nodes[oid].center[:2] - g.viewpoint
            ang = np.degrees(np.arctan2(fwd[0] * v[1] - fwd[1] * v[0], fwd @ v))  # + = left (ccw)
            dirn = "straight ahead" if abs(ang) < 20 else ("on the left" if ang > 0 else "on the right")
            if abs(ang) > 110:
                dirn = "behind you"
            items.append((f"standing at the door and facing into the room, where is {np_}?", [dirn], [oid]))
            dist = float(np.linalg.norm(v))
            items.append((f"how far is {np_} from the door?", [f"about {max(1, round(dist))} meters"], [oid]))
    order = rng.permutation(len(items))[: cfg.qa_per_scene]
    out = []
    for j, k in enumerate(sorted(order)):
        q, ans, oids = items[int(k)]
        out.append(ScanQARecord(sid, f"{split}-{sid}-{j}", q, ans, list(map(int, oids)), [g.nodes[i].label for i in oids]))
    return out


def _sqa3d(g: SceneGraph, room: SynthRoom, rng, cfg: LanguageConfig, sid: str) -> list[SQA3DRecord]:
    W, D, _ = room.size
    cand = np.stack([rng.uniform(0.4, W - 0.4, 400), rng.uniform(0.4, D - 0.4, 400), np.full(400, 0.9)], 1)
    free = cand[clearance(room, cand) > 0.35]
    out: list[SQA3DRecord] = []
    base_id = int(rng.integers(10 ** 6)) * 1000
    tries = 0
    while len(out) < cfg.sqa_per_scene and tries < 10 * max(1, cfg.sqa_per_scene) and len(free):
        tries += 1
        p = free[int(rng.integers(len(free)))][:2]
        near = sorted(g.nodes, key=lambda i: np.linalg.norm(np.maximum(0, np.maximum(g.nodes[i].lo[:2] - p, p - g.nodes[i].hi[:2]))))
        a = near[0]
        if np.linalg.norm(np.maximum(0, np.maximum(g.nodes[a].lo[:2] - p, p - g.nodes[a].hi[:2]))) > 1.2:
            continue
        f = _pick(rng, [i for i in g.nodes if i != a])
        heading = g.nodes[f].center[:2] - p
        if np.linalg.norm(heading) < 0.5:
            continue
        a_np, f_np = _any_np(g, a, rng), _any_np(g, f, rng)
        if not a_np or not f_np:
            continue
        yaw = float(np.arctan2(heading[1], heading[0]))
        fwd = heading / np.linalg.norm(heading)

        def sector(i):
            v = g.nodes[i].center[:2] - p
            ang = np.degrees(np.arctan2(fwd[0] * v[1] - fwd[1] * v[0], fwd @ v))
            return "front" if abs(ang) <= 45 else "back" if abs(ang) >= 135 else ("left" if ang > 0 else "right"), float(np.linalg.norm(v))

        situation = _pick(rng, [f"I am standing next to {a_np} and facing {f_np}.",
                                f"I am standing by {a_np}, looking at {f_np}."])
        qa: list[tuple[str, str, str]] = []
        for side, word in (("left", "on my left"), ("right", "on my right"), ("back", "behind me")):
            objs = sorted((sector(i)[1], i) for i in g.nodes if i not in (a,) and sector(i)[0] == side and sector(i)[1] < 3.0)
            if objs:
                qa.append((f"what is the closest object {word}?", g.nodes[objs[0][1]].label, "what"))
        t = _pick(rng, [i for i in g.nodes if i not in (a, f)] or [f])
        t_np = _any_np(g, t, rng)
        if t_np:
            s = sector(t)[0]
            qa.append((f"which direction should I go to reach {t_np}?",
                       {"front": "forward", "back": "backward", "left": "left", "right": "right"}[s], "which"))
        lab = _pick(rng, sorted({n.label for n in g.nodes.values()}))
        n_front = sum(1 for i in g.of_class(lab) if sector(i)[0] == "front")
        qa.append((f"how many {plural(lab)} are in front of me?", str(n_front), "how many"))
        if not qa:
            continue
        q, ans, qtype = _pick(rng, qa)
        out.append(SQA3DRecord(sid, base_id + len(out), situation, q, [ans], alternative_situation=[],
                               position=(float(p[0]), float(p[1]), 0.0),
                               rotation=(0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))),
                               question_type=qtype, answer_type="number" if qtype == "how many" else "other"))
    return out


_INTENTS = [
    ("sit down", ("chair", "sofa")), ("read a book", ("bookshelf",)), ("take a nap", ("bed", "sofa")),
    ("work on my laptop", ("desk", "table")), ("wash my hands", ("sink",)), ("get something cold to drink", ("refrigerator",)),
    ("watch a movie", ("tv",)), ("throw away this paper", ("trash can",)), ("put away my clothes", ("dresser", "cabinet")),
    ("take a bath", ("bathtub",)), ("write down a note", ("whiteboard", "desk")), ("check my hair", ("mirror",)),
]


def _dialogues(g: SceneGraph, rng, cfg: LanguageConfig, sid: str) -> list[LLM3DRecord]:
    out = []
    possible = [(intent, [i for i in g.nodes if g.nodes[i].label in labs]) for intent, labs in _INTENTS]
    possible = [(it, ids) for it, ids in possible if ids]
    for k in rng.permutation(len(possible))[: cfg.dialogues_per_scene]:
        intent, ids = possible[int(k)]
        t = _pick(rng, ids)
        t_np = _any_np(g, t, rng)
        if not t_np:
            continue
        turns = [("user", _pick(rng, [f"I want to {intent}.", f"I would like to {intent}. can you help?"])),
                 ("assistant", f"sure. you can use {t_np}.")]
        follow = []
        if g.nodes[t].color:
            follow.append(("what color is it?", f"it is {g.nodes[t].color}."))
        n = len(g.of_class(g.nodes[t].label))
        follow.append((f"how many {plural(g.nodes[t].label)} are there?", f"there {'is' if n == 1 else 'are'} {NUM_WORDS[min(n, 10)]}."))
        rels = [(r, b) for r, b in g.relations_of(t) if g.unique_anchor(b)]
        if rels:
            r, b = _pick(rng, rels)
            follow.append(("where exactly is it?", f"it is {REL_PHRASES[r][0]} {render_np(g.unique_anchor(b), rng)}."))
        q, a = _pick(rng, follow)
        turns.append(("user", q))
        out.append(LLM3DRecord(sid, format_dialogue(turns), [a], "dialogue"))
    return out


def _plans(g: SceneGraph, rng, cfg: LanguageConfig, sid: str) -> list[LLM3DRecord]:
    def one(label):
        ids = g.of_class(label)
        return _any_np(g, _pick(rng, ids), rng) if ids else None

    goals = []
    bed, lamp, desk, chair, box, shelf, trash, sink, sofa, tv, fridge, window, curtain = (
        one(x) for x in ("bed", "lamp", "desk", "chair", "box", "bookshelf", "trash can", "sink", "sofa", "tv",
                         "refrigerator", "window", "curtain"))
    if bed and lamp:
        goals.append(("get ready to sleep", [f"walk to {lamp}", "turn off the lamp", f"go to {bed}", "lie down on the bed"]))
    if desk and chair:
        goals.append(("start working at the desk", [f"walk to {desk}", f"take {chair}", "sit down at the desk"]
                      + ([f"turn on {lamp}"] if lamp else [])))
    if box and (shelf or desk):
        dest = shelf or desk
        goals.append(("tidy up the room", [f"pick up {box}", f"carry it to {dest}", "put it down there"]))
    if trash:
        goals.append(("throw away the trash", ["pick up the trash", f"walk to {trash}", "drop the trash into it"]))
    if sink:
        goals.append(("wash your hands", [f"walk to {sink}", "turn on the tap", "wash your hands with soap", "turn off the tap"]))
    if sofa and tv:
        goals.append(("watch tv", [f"walk to {sofa}", "sit down", f"turn on {tv}"]))
    if fridge:
        goals.append(("get a cold drink", [f"walk to {fridge}", "open the door", "take out a drink", "close the door"]))
    if window and curtain:
        goals.append(("let some light in", [f"walk to {window}", f"open {curtain}"]))
    out = []
    for k in rng.permutation(len(goals))[: cfg.plans_per_scene]:
        goal, steps = goals[int(k)]
        q = _pick(rng, [f"how do I {goal}?", f"plan the steps to {goal}.", f"I need to {goal}. what should I do?"])
        ans = " ".join(f"{i + 1}. {s}." for i, s in enumerate(steps))
        out.append(LLM3DRecord(sid, q, [ans], "planning"))
    return out
