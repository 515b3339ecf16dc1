"""The CUDA fusion map gives the CPU map's results (run on the GPU machine: pytest -m gpu)."""
import numpy as np
import pytest
import torch

from r1_core.geometry.fusion import FusionConfig, FusionMap
from r1_core.geometry.raycast import demo_room, orbit_poses, scene_intrinsics

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def stream():
    scene = demo_room(3)
    K = scene_intrinsics(320, 240)
    poses = orbit_poses(12, turns=0.6)
    rng = np.random.default_rng(4)
    return K, poses, [scene.render(K, T, noise=True, rng=rng) for T in poses]


def both(**cfg):
    return FusionMap(FusionConfig(**cfg)), FusionMap(FusionConfig(device="cuda", **cfg))


def assert_same(cpu, gpu):
    kc, sc, oc, lc = cpu._backend.state()
    kg, sg, og, lg = gpu._backend.state()
    oc_, og_ = np.argsort(kc), np.argsort(kg)
    np.testing.assert_array_equal(kc[oc_], kg[og_])
    np.testing.assert_array_equal(oc[oc_], og[og_])
    np.testing.assert_array_equal(lc[oc_], lg[og_])
    np.testing.assert_allclose(sc[oc_], sg[og_], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cpu.snapshot(), gpu.snapshot(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("cfg", [{}, {"pixel_stride": 2, "weighting": "inverse_depth_squared"},
                                 {"crop_min": (-1.0, -1.5, 0.05), "crop_max": (2.0, 1.5, 1.5), "edge_threshold": 0.0},
                                 {"voxel_size": 0.05, "max_voxels": 20000, "evict_fraction": 0.25}])
def test_cuda_map_equals_cpu_map(stream, cfg):
    K, poses, frames = stream
    cpu, gpu = both(**cfg)
    for (c, d), T in zip(frames, poses):
        rc, rg = cpu.integrate(c, d, K, T), gpu.integrate(c, d, K, T)
        assert rc.fused and rg.fused, (rc, rg)
        assert (rc.valid_pixels, rc.new_voxels, rc.voxels, rc.evicted) == (rg.valid_pixels, rg.new_voxels, rg.voxels, rg.evicted)
    assert_same(cpu, gpu)
    if "max_voxels" in cfg:
        assert gpu.stats.evicted_total > 0


def test_cuda_map_accepts_device_tensors_and_float_depth(stream):
    K, poses, frames = stream
    cpu, gpu = both()
    for (c, d), T in zip(frames[:4], poses[:4]):
        z = d.astype(np.float32) / 1000.0
        z[d == 0] = np.nan
        cpu.integrate(c, z, K, T)
        gpu.integrate(torch.from_numpy(c).cuda(), torch.from_numpy(z).cuda(), K, T)
    assert_same(cpu, gpu)
    a, b = both()
    a.integrate(*frames[0], K, poses[0])
    b.integrate(torch.from_numpy(frames[0][0]).cuda(), torch.from_numpy(frames[0][1]).cuda(), K, poses[0])
    assert_same(a, b)


def test_cuda_bad_frames_skip_like_cpu(stream, tmp_path):
    K, poses, frames = stream
    cpu, gpu = both()
    c, d = frames[0]
    far = poses[0].copy()
    far[0, 3] = 1e6
    for m in (cpu, gpu):
        m.integrate(c, d, K, poses[0])
        assert m.integrate(c, d, K, far).reason == "out_of_range"
        assert m.integrate(c, np.zeros_like(d), K, poses[0]).reason == "no_valid_depth"
        assert m.integrate(c[:-1], d, K, poses[0]).reason == "size_mismatch"
    assert_same(cpu, gpu)
    # save on the GPU, load on the CPU
    path = gpu.save(tmp_path / "g.r1map")
    np.testing.assert_array_equal(FusionMap.load(path).snapshot(), gpu.snapshot())
    back = FusionMap.load(path, device="cuda")
    np.testing.assert_array_equal(back.snapshot(), gpu.snapshot())
