"""Speed of the evaluation library on generated data: caption metrics, grounding accuracy,
Scan2Cap m@kIoU, and the visualiser's renders and recording.

    .venv/bin/python bench/eval.py                 # full sizes
    .venv/bin/python bench/eval.py --quick         # smaller, a smoke run

Prints a table and writes bench/results/eval-<date>-<device>.json. CPU only (the metrics
are Python/Java; the renders numpy + matplotlib).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import numpy as np


def _sentences(rng, n, vocab):
    return [" ".join(rng.choice(vocab, rng.integers(6, 16))).capitalize() + "." for _ in range(n)]


def _timed(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    rng = np.random.default_rng(0)
    vocab = ("the a chair table brown white black wooden next to left right of desk bed sofa door window "
             "is in front behind near corner room lamp small large shelf cabinet on under").split()
    rows = []

    from r1_core.eval.captions import CaptionScorer
    from r1_core.eval.dense_caption import dense_caption_metrics
    from r1_core.eval.grounding import scanrefer_metrics
    from r1_core.eval.qa import exact_match

    n_cap = int(2000 * scale)
    preds = dict(enumerate(_sentences(rng, n_cap, vocab)))
    refs = {k: _sentences(rng, 3, vocab) for k in preds}
    with CaptionScorer() as sc:
        t_start, _ = _timed(lambda: sc.score({0: "a chair"}, {0: ["the chair"]}))
        t_all, _ = _timed(lambda: sc.score(preds, refs))
        t_tok, _ = _timed(lambda: sc.tokenize({**{("r", k): v for k, v in refs.items()}, **{("p", k): [v] for k, v in preds.items()}}))
    rows.append(("caption metrics, first call (METEOR JVM start)", 1, t_start))
    rows.append((f"caption metrics, all 7 ({n_cap} samples x 3 refs)", n_cap, t_all))
    rows.append((f"  of which PTB tokenisation ({4 * n_cap} captions)", 4 * n_cap, t_tok))

    n_qa = int(20000 * scale)
    answers = [str(rng.choice(vocab)) for _ in range(n_qa)]
    qrefs = [[str(w) for w in rng.choice(vocab, 2)] for _ in range(n_qa)]
    t, _ = _timed(lambda: exact_match(answers, qrefs), repeat=3)
    rows.append((f"EM / EM-R ({n_qa} answers)", n_qa, t))

    n_g = int(20000 * scale)
    gt = np.concatenate([rng.uniform(-3, 3, (n_g, 3)), rng.uniform(0.2, 2, (n_g, 3)), rng.uniform(-3.14, 3.14, (n_g, 1))], 1)
    pred = gt + rng.normal(0, 0.1, gt.shape)
    pred[:, 3:6] = np.abs(pred[:, 3:6])
    t, _ = _timed(lambda: scanrefer_metrics(list(pred), gt, rng.random(n_g) < 0.3), repeat=3)
    rows.append((f"ScanRefer Acc@k, rotated IoU ({n_g} samples)", n_g, t))

    n_scenes = max(2, int(50 * scale))
    gtd, pdd = {}, {}
    for s in range(n_scenes):
        g = np.concatenate([rng.uniform(0, 5, (20, 3)), rng.uniform(0.3, 1.5, (20, 3)), np.zeros((20, 1))], 1)
        p = np.concatenate([g, g[:10] + rng.normal(0, 0.2, (10, 7)) * [1, 1, 1, 0, 0, 0, 0]])
        gtd[f"s{s}"] = (g, [_sentences(rng, 2, vocab) for _ in range(20)])
        pdd[f"s{s}"] = (p, _sentences(rng, len(p), vocab))
    with CaptionScorer(("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")) as sc:
        sc.score({0: "a"}, {0: ["a"]})  # start the JVM outside the timing
        t, _ = _timed(lambda: dense_caption_metrics(pdd, gtd, scorer=sc))
    rows.append((f"Scan2Cap m@kIoU ({n_scenes} scenes x 20 objects)", 20 * n_scenes, t))

    from r1_core.data.rgbd import look_at
    from r1_core.data.synthetic.world import SynthConfig, generate_room
    from r1_core.eval.visualize import log_rrd, render_topdown, render_view, splat_view

    room = generate_room(SynthConfig(min_points=100_000, max_points=200_000), seed=3)
    scene = room.to_scene(SynthConfig(min_points=100_000, max_points=200_000))
    cloud = scene.points
    boxes = scene.boxes()
    K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    W, D = room.size[0], room.size[1]
    T = look_at(np.array([0.4, 0.4, 1.6]), np.array([W / 2, D / 2, 0.6]))
    t, _ = _timed(lambda: splat_view(cloud, K, T, 640, 480), repeat=3)
    rows.append((f"splat_view 640x480 ({len(cloud)} points)", len(cloud), t))
    t, _ = _timed(lambda: render_view(cloud, K, T, 640, 480, gt_boxes=boxes), repeat=3)
    rows.append((f"render_view PNG array, {len(boxes)} boxes", len(cloud), t))
    t, _ = _timed(lambda: render_topdown(cloud, gt_boxes=boxes), repeat=3)
    rows.append(("render_topdown 960x720", len(cloud), t))
    with tempfile.TemporaryDirectory() as d:
        t, _ = _timed(lambda: log_rrd(Path(d) / "x.rrd", cloud, trajectory=[T] * 300, gt_boxes=boxes), repeat=3)
        size = (Path(d) / "x.rrd").stat().st_size
    rows.append((f"log_rrd (cloud, 300 poses, boxes; {size / 1e6:.1f} MB)", len(cloud), t))

    device = f"{platform.processor() or platform.machine()}-{os.cpu_count()}cpu"
    print(f"\nr1 eval library on {socket.gethostname()} ({device}), {'quick' if args.quick else 'full'}\n")
    print(f"{'what':<58} {'items':>8} {'seconds':>9} {'items/s':>10}")
    for name, n, t in rows:
        print(f"{name:<58} {n:>8} {t:>9.3f} {n / t:>10.0f}")
    out = Path(__file__).parent / "results" / f"eval-{dt.date.today().isoformat()}-cpu{os.cpu_count()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "host": socket.gethostname(), "quick": args.quick,
                               "rows": [{"what": a, "items": b, "seconds": c} for a, b, c in rows]}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
