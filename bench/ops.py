"""Point/box op benchmark at the 3D-R1 encoder's sizes: CUDA kernels vs the torch reference on the
same GPU vs a floor computed from bytes moved and sequential steps.

    python bench/ops.py                    # on the GPU machine (JIT-builds r1_core/cuda first)
    python bench/ops.py --quick            # smaller reference repetitions

Sizes: batch 8, 40,000 points, 2,048 centroids, radius 0.2, 64 neighbours, 256 feature
channels, 3-NN interpolation 2,048 -> 40,000, IoU of 256 x 256 boxes, voxel downsampling of
1M points. Prints a table and writes bench/results/ops-<date>-<device>.json.

Floors: bytes / measured copy bandwidth (a 1 GiB device-to-device copy, read + write counted)
for memory-bound ops; for FPS also (n - 1) x the measured latency of one iteration's
sequential critical path (warp + block + cluster reductions and barriers, sync_probe kernel);
for the brute-force searches (ball query, 3-NN) also the FP32 instruction floor of the
distance tests (N x S pairs x 6 FP32 ops at the measured FMA rate).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from r1_core.geometry.boxes import box_iou_3d, generalized_box_iou_3d  # noqa: E402
from r1_core.geometry.dispatch import reference_ops  # noqa: E402
from r1_core.geometry.points import (  # noqa: E402
    ball_query, furthest_point_sample, group_points, inverse_distance_weights, three_interpolate, three_nn,
    voxel_downsample,
)

B, N, S, R, K, C = 8, 40000, 2048, 0.2, 64, 256


def cuda_time(fn, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of fn() over reps, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write)."""
    x = torch.empty(1 << 28, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time(lambda: y.copy_(x), 10)
    return 2 * x.numel() * 4 / (ms * 1e-3)


def sync_floor_us(ext) -> float:
    """Microseconds per FPS iteration of the critical path alone (cluster of 8 x 640 threads, 8 clusters)."""
    out = torch.empty(64, device="cuda")
    iters = 4096
    ms = cuda_time(lambda: ext.sync_probe(iters, 8, 640, B, out), 5)
    return ms * 1e3 / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions of the slow references")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ops-<date>-<device>.json)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/ops.py needs a CUDA device (the CPU references are exercised by the tests)")
        return 2
    from r1_core.cuda import load_extension

    ext = load_extension()
    dev = torch.cuda.get_device_name()
    g = torch.Generator(device="cuda").manual_seed(0)
    # a scene-like cloud: points on the surfaces of a 6 x 5 x 3 m room (radius 0.2 -> ~30 neighbours)
    xyz = torch.rand(B, N, 3, device="cuda", generator=g) * torch.tensor([6.0, 5.0, 3.0], device="cuda")
    face = torch.randint(0, 3, (B, N), device="cuda", generator=g)
    side = torch.randint(0, 2, (B, N), device="cuda", generator=g).float()
    lim = torch.tensor([6.0, 5.0, 3.0], device="cuda")
    xyz.scatter_(2, face[..., None], (side * lim[face])[..., None])
    feat = torch.randn(B, N, C, device="cuda", generator=g)
    bw = copy_bandwidth()
    sync_us = sync_floor_us(ext)
    slow = 1 if args.quick else 3
    rows = []

    def run(name, fn, ref_reps, floor_bytes=0.0, floor_extra_ms=0.0, note="", raw=None):
        k_ms = cuda_time(fn, 20)
        raw_ms = cuda_time(raw, 20) if raw is not None else None
        with reference_ops():
            r_ms = cuda_time(fn, ref_reps, warmup=1)
        floor_ms = max(floor_bytes / bw * 1e3, floor_extra_ms)
        rows.append({"op": name, "kernel_ms": k_ms, "kernel_raw_ms": raw_ms, "reference_ms": r_ms, "floor_ms": floor_ms,
                     "bytes_floor_ms": floor_bytes / bw * 1e3, "other_floor_ms": floor_extra_ms,
                     "x_floor": k_ms / floor_ms if floor_ms else None, "speedup_vs_reference": r_ms / k_ms, "note": note})
        rs = f" (raw {raw_ms:.3f})" if raw_ms is not None else ""
        print(f"  {name:28s} kernel {k_ms:9.3f} ms{rs}  reference {r_ms:10.2f} ms  floor {floor_ms:7.3f} ms", flush=True)

    print(f"device {dev}; copy bandwidth {bw / 1e12:.2f} TB/s; FPS iteration critical path {sync_us:.3f} us", flush=True)
    run("furthest_point_sample", lambda: furthest_point_sample(xyz, S), slow, B * N * 12 + B * S * 8,
        (S - 1) * sync_us * 1e-3, "floor: (S-1) sequential iterations x measured cluster critical path",
        raw=lambda: ext.furthest_point_sample(xyz, S))
    idx = furthest_point_sample(xyz, S)
    centers = torch.gather(xyz, 1, idx[..., None].expand(-1, -1, 3)).contiguous()
    # brute force: B*S*N distance tests x ~6 FP32 instructions; H100 SXM spec rate (not measured):
    # 132 SMs x 128 FP32 lanes x 1.755 GHz boost
    lanes_per_s = 132 * 128 * 1.755e9
    r2 = float(torch.tensor(R, dtype=torch.float32) ** 2)
    bq_compute = B * S * N * 6 / lanes_per_s * 1e3
    run("ball_query", lambda: ball_query(xyz, centers, R, K), slow, B * N * 12 + B * S * 12 + B * S * K * 8,
        0.0, f"bytes floor; brute-force instruction floor {bq_compute:.3f} ms",
        raw=lambda: ext.ball_query(xyz, centers, r2, K))
    rows[-1]["bruteforce_instruction_floor_ms"] = bq_compute
    nbr = ball_query(xyz, centers, R, K)
    nbr_flat = nbr.reshape(B, -1).contiguous()
    run("group_points C=256", lambda: group_points(feat, nbr), slow,
        B * S * K * C * 4 + B * N * C * 4 + B * S * K * 8, raw=lambda: ext.gather_rows(feat, nbr_flat))
    fr = feat.clone().requires_grad_(True)
    out = group_points(fr, nbr)
    gout = torch.randn_like(out)
    run("group_points backward", lambda: torch.autograd.grad(group_points(fr, nbr), fr, gout), slow,
        2 * (B * S * K * C * 4) + 2 * B * N * C * 4 + B * S * K * 8, 0.0, "forward + backward")
    del out, gout
    run("three_nn 2048->40000", lambda: three_nn(xyz, centers), slow, B * N * 12 + B * S * 12 + B * N * 3 * 12,
        B * N * S * 6 / lanes_per_s * 1e3, "floor: brute-force instruction floor")
    dist, i3 = three_nn(xyz, centers)
    w = inverse_distance_weights(dist)
    f2 = torch.randn(B, S, C, device="cuda", generator=g)
    run("three_interpolate C=256", lambda: three_interpolate(f2, i3, w), slow,
        B * N * C * 4 + B * S * C * 4 + B * N * 3 * 12)
    a = torch.rand(256, 7, device="cuda", generator=g, dtype=torch.float64) * torch.tensor(
        [6, 5, 3, 2, 2, 2, 6.28], device="cuda", dtype=torch.float64)
    b = torch.rand(256, 7, device="cuda", generator=g, dtype=torch.float64) * torch.tensor(
        [6, 5, 3, 2, 2, 2, 6.28], device="cuda", dtype=torch.float64)
    run("box_iou_3d 256x256 rotated", lambda: box_iou_3d(a, b), slow, 256 * 256 * 8 + 2 * 256 * 56, 0.005,
        "floor: one launch (~5 us)")
    run("giou hull 256x256 rotated", lambda: generalized_box_iou_3d(a, b, "hull"), slow, 256 * 256 * 8, 0.005)
    aa, bb = a.clone(), b.clone()
    aa[:, 6] = 0
    bb[:, 6] = 0
    run("box_iou_3d 256x256 aligned", lambda: box_iou_3d(aa, bb), slow, 256 * 256 * 8, 0.005)
    scene = torch.rand(1_000_000, 3, device="cuda", generator=g) * torch.tensor([8.0, 8.0, 3.0], device="cuda")
    pts = torch.cat([scene, torch.rand(1_000_000, 3, device="cuda", generator=g) * 255], 1)
    run("voxel_downsample 1M x 6", lambda: voxel_downsample(pts, 0.02), slow, 1_000_000 * (24 + 8 * 3))

    print(f"\n{'op':30s} {'kernel ms':>10s} {'torch ref ms':>13s} {'floor ms':>9s} {'x floor':>8s} {'x faster':>9s}")
    for r in rows:
        xf = f"{r['x_floor']:.1f}" if r["x_floor"] else "-"
        print(f"{r['op']:30s} {r['kernel_ms']:10.3f} {r['reference_ms']:13.2f} {r['floor_ms']:9.3f} {xf:>8s} "
              f"{r['speedup_vs_reference']:9.1f}")
    date = dt.date.today().isoformat()
    tag = "h100" if "H100" in dev else ("h200" if "H200" in dev else dev.lower().replace(" ", "-"))
    path = Path(args.out) if args.out else Path(__file__).parent / "results" / f"ops-{date}-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "device": dev, "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
        "sizes": {"batch": B, "points": N, "centroids": S, "radius": R, "neighbours": K, "channels": C},
        "copy_bandwidth_Bps": bw, "fps_iteration_critical_path_us": sync_us, "results": rows,
        "reference_points_h100_classic_pointnet2_ms": {"fps": 27.4, "ball_query": 4.0, "group_256": 50.0,
                                                       "torch_loop_fps": 210.0, "cdist_topk_ball_query": 17.9},
        "env": {k: os.environ.get(k) for k in ("R1_OPS_BACKEND", "TORCH_CUDA_ARCH_LIST")},
    }, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
