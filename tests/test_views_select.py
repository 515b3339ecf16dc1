"""View scoring and selection on hand-built scenes: relevance against ray-cast ground truth,
occlusion, coverage, redundancy, colour/relations, greedy against a reference, baselines, weights."""

import numpy as np
import pytest
import torch

from r1_core.config import ConfigError, load_config
from r1_core.model.r1model import SceneEncoding
from r1_core.model.views_encoder import ViewInput
from r1_core.query import SceneQuery
from r1_core.views.bank import BankConfig, KeyframeBank
from r1_core.views.relevance import ProposalRelevance, resolve_targets
from r1_core.views.select import (WEIGHT_NAMES, DynamicSelector, RandomSelector, SelectorConfig, UniformSelector,
                                  ViewScorerWeights, WeightsConfig, greedy_select, make_selector)
from r1_core.views.vocab import color_names, parse_mentions
from test_views_helpers import intrinsics, look_at, object_fraction_visible, render, room

K = intrinsics()
RED, BLUE, BED, PANEL = 1, 2, 3, 4


def world():
    w = room()
    w.add([1, 1, 0], [1.5, 1.5, 0.9], (190, 35, 35), RED, 5)            # red chair
    w.add([4.5, 3.5, 0], [5, 4, 0.9], (40, 70, 190), BLUE, 5)           # blue chair
    w.add([2.5, 3.5, 0], [4.5, 5, 0.6], (235, 235, 232), BED, 4)        # white bed
    w.add([1.9, 0.9, 0], [2.1, 1.6, 1.2], (120, 75, 40), PANEL, 39)     # a panel hiding the red chair from +x
    return w


def scene_of(w, ids=(RED, BLUE, BED, PANEL), labels=(5, 5, 4, 39)):
    return SceneEncoding(torch.zeros(len(ids), 1), np.stack([w.box7(i) for i in ids]).astype(np.float32),
                         np.ones(len(ids), np.float32), np.asarray(labels))


@pytest.fixture(scope="module")
def filled():
    """A bank fed from three spots, turning in 36-degree steps."""
    w = world()
    bank = KeyframeBank(BankConfig(store_width=0, min_new_fraction=0.0, min_rotation_deg=10))
    for eye in ([3, 2.5, 1.4], [4.5, 1.0, 1.4], [0.6, 3.5, 1.4]):
        for a in np.radians(np.arange(0, 360, 36)):
            e = np.array(eye, float)
            T = look_at(e, e + [np.cos(a), np.sin(a), -0.35])
            c, d, _ = render(w, K, T)
            assert bank.offer(c, d, K, T, float(len(bank)))
    return w, bank


def gt(w, bank, inst):
    return np.array([object_fraction_visible(w, inst, K, k.T_map_optical) for k in bank.snapshot().keyframes])


def test_relevance_follows_ray_cast_visibility(filled):
    w, bank = filled
    snap = bank.snapshot()
    cfg = SelectorConfig()
    for inst, text in ((RED, "the red chair"), (BED, "the bed")):
        tg = resolve_targets(SceneQuery("grounding", text), scene_of(w), snap, cfg)
        rel = ProposalRelevance(cfg).per_target(tg, snap)[:, 0]
        g = gt(w, bank, inst)
        assert (rel[g > 0.15] > 0.02).all() and (rel[g == 0] < 0.05).all()   # sees it <=> relevant
        assert (g > 0.15).sum() >= 3 and (g == 0).sum() >= 10
        # as a fraction of the *observed* surface, relevance reads at least the ground truth's
        # fraction of the whole surface (faces against walls are never seen), and tracks it
        assert (rel >= g - 0.1).all()
        assert np.corrcoef(rel, g)[0, 1] > 0.95


def test_occluded_view_is_not_relevant(filled):
    w, bank = filled
    snap = bank.snapshot()
    # views from (4.5, 1.0) facing -x have the red chair in the frustum, behind the panel
    T_occ = look_at([4.5, 1.0, 1.4], [1.25, 1.25, 0.45])
    c, d, _ = render(w, K, T_occ)
    assert object_fraction_visible(w, RED, K, T_occ) == 0.0
    b2 = KeyframeBank(BankConfig(store_width=0, min_new_fraction=0.0, min_rotation_deg=1))
    for k in snap.keyframes:          # same map, plus the occluded view
        b2.offer(k.color, k.depth_m, k.K, k.T_map_optical, k.stamp)
    assert b2.offer(c, d, K, T_occ, 99.0)
    s2 = b2.snapshot()
    q = SceneQuery("grounding", "the red chair")
    for tol, expect_seen in ((0.1, False), (100.0, True)):     # tol 100 m = no occlusion test
        cfg = SelectorConfig(occlusion_tol_m=tol)
        tg = resolve_targets(q, scene_of(w), s2, cfg)
        rel = ProposalRelevance(cfg).per_target(tg, s2)[-1, 0]
        assert (rel > 0.3) == expect_seen, (tol, rel)


def test_view_that_sees_the_target_scores_higher(filled):
    w, bank = filled
    sel = DynamicSelector(bank)
    s = sel.scores(SceneQuery("grounding", "the blue chair"), scene_of(w))
    g = gt(w, bank, BLUE)
    sees, blind = g > 0.2, g == 0
    assert s.features[sees, 0].min() > s.features[blind, 0].max()          # relevance
    assert s.features[sees, 3].mean() > s.features[blind, 3].mean()        # relevant-region coverage
    # scene coverage = |V_i| / max_j |V_j|
    snap = bank.snapshot()
    assert np.allclose(s.features[:, 2], snap.sizes / snap.sizes.max())


def test_colour_and_relation_pick_the_right_instance(filled):
    w, bank = filled
    snap = bank.snapshot()
    cfg = SelectorConfig()
    sc = scene_of(w)
    red = resolve_targets(SceneQuery("grounding", "the red chair"), sc, snap, cfg)
    blue = resolve_targets(SceneQuery("grounding", "find the blue chair"), sc, snap, cfg)
    assert red.proposal_index[0] == 0 and red.weights[0] > 0.8
    assert blue.proposal_index[0] == 1 and blue.weights[0] > 0.8
    near = resolve_targets(SceneQuery("grounding", "the chair next to the bed"), sc, snap, cfg)
    far = resolve_targets(SceneQuery("grounding", "the chair farthest from the bed"), sc, snap, cfg)
    w_near = dict(zip(near.proposal_index, near.weights))
    w_far = dict(zip(far.proposal_index, far.weights))
    assert w_near[1] > 2 * w_near[0] and w_far[0] > 2 * w_far[1]     # blue chair is by the bed
    assert 2 in w_near                                                 # the bed is context
    none = resolve_targets(SceneQuery("qa", "what is this room used for?"), sc, snap, cfg)
    assert len(none) == 0
    cap = resolve_targets(SceneQuery("object_caption", target_box=w.box7(BED)), sc, snap, cfg)
    assert cap.proposal_index[0] == -1 and cap.weights[0] == 1.0


def test_near_duplicate_view_is_penalised():
    w = world()
    bank = KeyframeBank(BankConfig(store_width=0, min_new_fraction=0.0, min_rotation_deg=3))
    e = np.array([3.0, 2.5, 1.4])
    yaws = [200, 204, 150, 250, 20]          # 200 and 204 nearly duplicate views of the red chair
    for i, a in enumerate(np.radians(yaws)):
        T = look_at(e, e + [np.cos(a), np.sin(a), -0.35])
        c, d, _ = render(w, K, T)
        assert bank.offer(c, d, K, T, float(i))
    q = SceneQuery("grounding", "the red chair")
    sel_red = DynamicSelector(bank, weights=ViewScorerWeights(WeightsConfig(text=1, coverage=0, region=0, redundancy=2)))
    sel_plain = DynamicSelector(bank, weights=ViewScorerWeights(WeightsConfig(text=1, coverage=0, region=0, redundancy=0)))
    s = sel_red.scores(q, scene_of(w))
    assert set(np.argsort(-s.features[:, 0])[:2]) == {0, 1}       # the pair sees the chair best
    picks_red = sel_red.select_indices(q, scene_of(w), 2)
    picks_plain = sel_plain.select_indices(q, scene_of(w), 2)
    first = picks_red[0]
    dup = 1 - first
    assert first in (0, 1) and s.redundancy[dup, first] > 0.8
    assert sorted(picks_plain) == [0, 1]                  # without the term: the duplicate comes second
    assert picks_red[1] != dup                            # with it: something new instead


def _greedy_reference(base, R, w_red, k):
    chosen = []
    for _ in range(min(k, len(base))):
        best, best_u = None, None
        for i in range(len(base)):
            if i in chosen:
                continue
            u = base[i] - w_red * max([R[i][j] for j in chosen] + [0.0])
            if best_u is None or u > best_u:          # strict: ties keep the lower index
                best, best_u = i, u
        chosen.append(best)
    return chosen


def test_greedy_matches_reference_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 12))
        base = rng.integers(0, 4, n).astype(float) / 4 if trial % 2 else rng.random(n)   # many ties
        R = rng.random((n, n))
        k = int(rng.integers(0, 6))
        w_red = float(rng.choice([0.0, 0.5, 2.0]))
        assert greedy_select(base, R, w_red, k) == _greedy_reference(base, R, w_red, k)


def test_deterministic_and_view_inputs(filled):
    w, bank = filled
    q = SceneQuery("grounding", "the red chair and the bed")
    a = DynamicSelector(bank).select_views(q, scene_of(w), 4)
    b = DynamicSelector(bank).select_views(q, scene_of(w), 4)
    assert [v.keyframe_id for v in a] == [v.keyframe_id for v in b]
    assert len(a) == 4 and len({v.keyframe_id for v in a}) == 4
    for v in a:
        assert isinstance(v, ViewInput) and v.depth.dtype == np.float32 and v.color.dtype == np.uint8
    g = gt(w, bank, RED)
    ids = [k.keyframe_id for k in bank.snapshot().keyframes]
    assert g[ids.index(a[0].keyframe_id)] > 0.2           # the first view shows the red chair


def test_k_edge_cases(filled):
    w, bank = filled
    q = SceneQuery("grounding", "the bed")
    for sel in (DynamicSelector(bank), UniformSelector(bank), RandomSelector(bank, 1)):
        assert sel.select_views(q, scene_of(w), 0) == []
        assert len(sel.select_views(q, scene_of(w), 1000)) == len(bank)
        with pytest.raises(ValueError, match="k must be >= 0"):
            sel.select_views(q, scene_of(w), -1)
    for empty in (DynamicSelector(KeyframeBank()), UniformSelector(KeyframeBank()), RandomSelector(KeyframeBank(), 0)):
        assert empty.select_views(q, scene_of(w), 3) == []


def test_uniform_and_random_baselines(filled):
    _, bank = filled
    snap = bank.snapshot()
    n = len(snap)
    q = SceneQuery("grounding", "the bed")
    u = UniformSelector(bank).select_indices(q, None, 4)
    assert u == [int(np.floor((i + 0.5) * n / 4)) for i in range(4)]        # stamps are 0..n-1 here
    r1 = RandomSelector(bank, seed=3).select_indices(q, None, 4)
    r2 = RandomSelector(bank, seed=3).select_indices(q, None, 4)
    assert r1 == r2 and len(set(r1)) == 4
    draws = [tuple(RandomSelector(bank, seed=s).select_indices(q, None, 4)) for s in range(20)]
    assert len(set(draws)) > 10


def test_selector_by_name_and_config_errors(filled):
    _, bank = filled
    assert isinstance(make_selector(bank, SelectorConfig(method="uniform")), UniformSelector)
    assert isinstance(make_selector(bank, SelectorConfig(method="random")), RandomSelector)
    assert isinstance(make_selector(bank, SelectorConfig()), DynamicSelector)
    with pytest.raises(ConfigError, match="unknown selector method 'best'; choose one of"):
        load_config(SelectorConfig, {"method": "best"})
    with pytest.raises(ConfigError, match="unknown relevance encoder"):
        load_config(SelectorConfig, {"relevance": ["siglip2"]})
    with pytest.raises(ConfigError, match="clip_model_dir is not set"):
        load_config(SelectorConfig, {"relevance": ["proposals", "clip"]})
    with pytest.raises(ConfigError, match="weights.redundancy must be >= 0"):
        load_config(SelectorConfig, {"weights": {"redundancy": -1}})
    with pytest.raises(ValueError, match="one row per proposal"):
        DynamicSelector(bank).scores(SceneQuery("grounding", "the bed"),
                                     SceneEncoding(torch.zeros(1, 1), np.zeros((2, 7)), np.ones(1), np.ones(1)))


def test_weights_round_trip_and_checks(tmp_path):
    w = ViewScorerWeights(WeightsConfig(text=0.5, clip=0.1, coverage=0.2, region=0.05, redundancy=0.15))
    t = w.to_tensors()
    assert set(t) == {f"view_selection.w_{n}" for n in WEIGHT_NAMES} | {"view_selection.format"}
    p = w.save(tmp_path / "w.safetensors")
    back = ViewScorerWeights.load(p)
    assert back.as_dict() == pytest.approx(w.as_dict(), rel=1e-6)
    # a checkpoint's extra file may hold other tensors too
    mixed = dict(t, **{"other.thing": torch.zeros(3)})
    assert ViewScorerWeights.from_tensors(mixed).as_dict() == pytest.approx(w.as_dict(), rel=1e-6)
    bad = dict(t)
    del bad["view_selection.w_region"]
    with pytest.raises(ValueError, match="missing .*w_region"):
        ViewScorerWeights.from_tensors(bad)
    neg = dict(t, **{"view_selection.w_text": torch.tensor(-1.0)})
    with pytest.raises(ValueError, match="w_text must be one finite number >= 0"):
        ViewScorerWeights.from_tensors(neg)
    with pytest.raises(ValueError, match="not found"):
        ViewScorerWeights.load(tmp_path / "nope.safetensors")
    # the selector loads a weights file named in its config
    bank = KeyframeBank()
    sel = DynamicSelector(bank, SelectorConfig(weights_file=str(p)))
    assert sel.weights.as_dict() == pytest.approx(w.as_dict(), rel=1e-6)


def test_vocabulary_parsing_and_colours():
    m = parse_mentions("Is the grey couch next to the two nightstands?")
    assert [(x.phrase, x.nyu40_ids, x.color) for x in m] == [("couch", (6,), "gray"), ("nightstands", (32,), None)]
    m = parse_mentions("the cushion on the bed by the wall")                   # data-layer synonym; wall ignored
    assert [x.nyu40_ids for x in m] == [(18,), (4,)]
    assert parse_mentions("the largest box")[0].superlative == 1
    # colour words attach forward first, else backward
    assert parse_mentions("the chair that is red")[0].color == "red"
    # colours under shading keep their names (prototype segments)
    for rgb, name in (((190, 35, 35), "red"), ((40, 70, 190), "blue"), ((235, 235, 232), "white"),
                      ((120, 75, 40), "brown"), ((25, 25, 28), "black")):
        for shade in (0.66, 0.8, 1.0):
            assert color_names(np.array([rgb]) * shade)[0] == name, (rgb, shade)


def test_dominant_colors_vote_of_the_points_inside_each_box():
    from r1_core.geometry.boxes import points_in_boxes
    from r1_core.views.vocab import COLOR_WORDS, dominant_colors

    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform(0, 4, (4000, 3)), rng.uniform(0, 255, (4000, 3))], 1)
    boxes = np.concatenate([rng.uniform(0.5, 3.5, (12, 3)), rng.uniform(0.2, 1.5, (12, 3)), rng.uniform(-1, 1, (12, 1))], 1)
    boxes[0, :3] = 10.0                                                    # no points: -1
    got = dominant_colors(pts, boxes)
    inside = points_in_boxes(pts[:, :3].astype(np.float32), boxes.astype(np.float32))
    names = color_names(pts[:, 3:6])
    for k in range(len(boxes)):
        sel = names[inside[:, k]]
        if len(sel) == 0:
            assert got[k] == -1
            continue
        words, counts = np.unique(sel, return_counts=True)
        assert COLOR_WORDS[got[k]] in set(words[counts == counts.max()])
    # a red object on a gray floor: the box holds more floor-coloured points than a mean can ignore
    obj = np.concatenate([rng.uniform([1, 1, 0], [2, 2, 1], (600, 3)), np.tile([190, 35, 35], (600, 1))], 1)
    floor = np.concatenate([rng.uniform([0.9, 0.9, 0], [2.1, 2.1, 0.02], (400, 3)), np.tile([128, 128, 128], (400, 1))], 1)
    assert COLOR_WORDS[dominant_colors(np.concatenate([obj, floor]), np.array([[1.5, 1.5, 0.5, 1.2, 1.2, 1.05, 0]]))[0]] == "red"
    with pytest.raises(ValueError, match=r"\(N, 6\+\)"):
        dominant_colors(pts[:, :3], boxes)
