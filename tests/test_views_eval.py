"""Synthetic walk-through ground truth, dynamic vs baselines, weight fitting and the CLI."""
import json

import numpy as np
import pytest
import torch

from r1_core.data.synthetic.render import make_renderer, walkthrough_poses
from r1_core.data.synthetic.world import SynthConfig, generate_room
from r1_core.views.evaluate import WalkConfig, gt_visibility, hit_rates, synthetic_episodes
from r1_core.views.fit import FitConfig, evaluate_weights, fit_weights, greedy_sets, prepare, set_reward
from r1_core.views.select import (DynamicSelector, RandomSelector, UniformSelector, ViewScorerWeights, WeightsConfig,
                                  greedy_select)

SMALL = WalkConfig(width=160, height=120, frames=120)     # 3 rooms per tour, 120 frames each


@pytest.fixture(scope="module")
def tour():
    """One 3-room tour, room seeds 0, 1, 2 (the first seeds, not picked)."""
    eps = list(synthetic_episodes(1, seed=0, walk=SMALL))
    assert len(eps) == 1 and len(eps[0].requests) > 50
    return eps[0]


def test_gt_visibility_against_instance_pixels():
    room = generate_room(SynthConfig(), seed=0, scene_id="synth0000_00")
    scene = room.to_scene()
    rc = SMALL.render_config()
    r = make_renderer(room, rc)
    n = len(scene.objects)
    for T in walkthrough_poses(room, rc, n_frames=6, seed=0):
        view = r.render(T, noise=False)
        vis = gt_visibility(scene, view, rc.intrinsics.K, T, 0.05, n)
        px = view.visible_objects()
        for oid in range(n):
            if px.get(oid, 0) == 0:
                assert vis[oid] == 0.0                 # not in the image: nothing seen
            elif px[oid] > 300:
                assert vis[oid] > 0.02                 # large in the image: some points seen
        assert ((vis >= 0) & (vis <= 1)).all()


def test_dynamic_beats_uniform_and_random(tour):
    sels = {"dynamic": DynamicSelector(None), "uniform": UniformSelector(None), "random": RandomSelector(None, 0)}
    r = hit_rates([tour], sels, k=4)
    dyn, uni, rnd = (r[n]["scanrefer"]["rate"] for n in ("dynamic", "uniform", "random"))
    assert dyn > uni and dyn > rnd, r
    assert r["oracle"]["scanrefer"]["rate"] >= dyn
    # the ground truth used for scoring is the renderer's, per keyframe of the bank
    assert tour.visibility.shape[0] == len(tour.snap)


def test_batched_greedy_and_reward_match_references(tour):
    data = prepare([tour], DynamicSelector(None), k=4)
    rng = np.random.default_rng(0)
    cfg = FitConfig()
    idx = torch.arange(min(data.n_requests, 30))
    W = torch.as_tensor(rng.random((3, 5)))
    sets = greedy_sets(data, idx, W, 4)
    rewards = set_reward(data, idx, sets, cfg)
    snap, vis = tour.snap, tour.visibility
    for p in range(3):
        for b in idx.tolist():
            n = int(data.valid[b].sum())
            base = data.features[b, :n].double().numpy() @ W[p, :4].numpy()
            R = snap.overlap / np.maximum(snap.sizes, 1)[:, None]
            ref = greedy_select(base, R, float(W[p, 4]), 4)
            assert sorted(np.nonzero(sets[p, b].numpy())[0].tolist()) == sorted(ref)
            req = tour.requests[b]
            hit = float((vis[ref][:, list(req.targets)] >= 0.1).any())
            anch = np.mean([(vis[ref, a] >= 0.1).any() for a in req.anchors]) if req.anchors else 0.0
            # coverage: Bonferroni bound from brute-force set sizes and pairwise intersections
            sets_ = [set(snap.keyframes[i].voxel_ids.tolist()) for i in ref]
            bonf = sum(len(s) for s in sets_) - sum(len(a & c) for i, a in enumerate(sets_) for c in sets_[i + 1:])
            cov = min(max(bonf / snap.live.sum(), 0.0), 1.0)
            assert float(rewards[p, b]) == pytest.approx(hit + 0.25 * anch + 0.25 * cov, abs=1e-9)


def test_fit_recovers_from_bad_weights(tour):
    data = prepare([tour], DynamicSelector(None), k=4)
    bad = ViewScorerWeights(WeightsConfig(text=0.02, clip=0.0, coverage=1.0, region=0.0, redundancy=0.02))
    cfg = FitConfig(steps=40, eval_every=5, population=8, seed=0)
    w, log = fit_weights(data, cfg, init=bad, progress=False)
    assert log.final["hit_rate"] > log.initial["hit_rate"] + 0.1, (log.initial, log.final)
    assert w.as_dict()["text"] / w.as_dict()["coverage"] > 1.0        # relevance now outweighs coverage
    assert sum(w.as_dict().values()) == pytest.approx(1.0, abs=1e-5)
    assert evaluate_weights(data, w.weights().detach().numpy(), cfg)["hit_rate"] == pytest.approx(log.final["hit_rate"])
    assert len(log.steps) == 40


def test_cli_fit_and_eval(tmp_path, capsys):
    from r1_ros.cli import main

    small = ["--set", "walk.width=96", "--set", "walk.height=72", "--set", "walk.frames=60",
             "--set", "walk.rooms_per_tour=2", "--config", "config/views.yaml"]
    out = tmp_path / "w.safetensors"
    assert main(["views", "fit", "--synthetic-tours", "1", "--seed", "0", "--out", str(out),
                 "--log", str(tmp_path / "log.json"), "--set", "fit.steps=3", *small]) == 0
    w = ViewScorerWeights.load(out)
    assert sum(w.as_dict().values()) == pytest.approx(1.0, abs=1e-5)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["train"]["requests"] > 0 and len(log["steps"]) == 3
    capsys.readouterr()
    assert main(["views", "eval", "--synthetic-tours", "1", "--seed", "0", "--weights", str(out), *small]) == 0
    rates = json.loads(capsys.readouterr().out)
    assert set(rates) == {"dynamic", "uniform", "random", "oracle"}
    # a dataset directory in the synthetic layout (rooms + ScanRefer/ScanQA files)
    from r1_core.data.synthetic.dataset import write_dataset

    write_dataset(tmp_path / "synth", train_scenes=2, val_scenes=0, seed=0, cot=False, progress=False)
    capsys.readouterr()
    assert main(["views", "fit", "--data", str(tmp_path / "synth"), "--out", str(tmp_path / "w2.safetensors"),
                 "--set", "fit.steps=2", *small]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["train"]["requests"] > 20
    # bad input is one line on stderr and exit status 2 (r1_ros.cli)
    assert main(["views", "eval", "--synthetic-tours", "1", "--set", "bogus.x=1"]) == 2
    assert "r1 views: ConfigError: --set: unknown section(s) ['bogus']" in capsys.readouterr().err
    (tmp_path / "ds" / "scannet" / "meta_data").mkdir(parents=True)
    (tmp_path / "ds" / "scannet" / "meta_data" / "scannetv2_val.txt").write_text("scene0000_00\n")
    (tmp_path / "ds" / "ScanRefer").mkdir()
    (tmp_path / "ds" / "ScanRefer" / "ScanRefer_filtered_val.json").write_text("[]")
    assert main(["views", "eval", "--data", str(tmp_path / "ds"), *small]) == 2
    err = capsys.readouterr().err
    assert "r1 views: DataFormatError: " in err and "synthetic room description" in err
