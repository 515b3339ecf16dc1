"""Point ops (torch reference, CPU) against brute-force numpy loops, edge cases included.

Distances in the brute force are formed in float32 in the same order as the library
((dx*dx + dy*dy) + dz*dz), so index results must match exactly.
"""
import numpy as np
import pytest
import torch

from r1_core.geometry.points import (
    ball_query, furthest_point_sample, gather_points, group_points, inverse_distance_weights,
    three_interpolate, three_nn, voxel_downsample,
)


def d2_np(p, c):
    d = (p - c).astype(np.float32)
    return (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]


def fps_np(xyz, n):
    N = len(xyz)
    dist = np.full(N, np.inf, np.float32)
    out = [0]
    for _ in range(1, n):
        dist = np.minimum(dist, d2_np(xyz, xyz[out[-1]]))
        out.append(int(np.argmax(dist)))
    return out


def ball_np(xyz, c, r, k):
    r2 = np.float32(r) * np.float32(r)
    d = d2_np(xyz, c)
    found = [j for j in range(len(xyz)) if d[j] < r2][:k]
    if not found:
        return [int(np.argmin(d))] * k
    return found + [found[0]] * (k - len(found))


def cloud(rng, B, N, dup=0):
    x = rng.uniform(-1, 1, (B, N, 3)).astype(np.float32)
    if dup:                                   # duplicate some points exactly
        x[:, -dup:] = x[:, :dup]
    return x


# ---- FPS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,N,n,dup", [(3, 500, 64, 0), (2, 300, 100, 150), (1, 1, 1, 0)])
def test_fps_matches_brute_force(B, N, n, dup):
    rng = np.random.default_rng(N + n)
    x = cloud(rng, B, N, dup)
    got = furthest_point_sample(torch.from_numpy(x), n)
    assert got.dtype == torch.long and got.shape == (B, n)
    for b in range(B):
        assert got[b].tolist() == fps_np(x[b], n)
    if dup == 0:
        assert all(len(set(got[b].tolist())) == n for b in range(B))   # distinct samples


def test_fps_fewer_points_than_samples_and_all_equal():
    x = np.array([[[0, 0, 0], [1, 0, 0], [0, 2, 0], [1, 0, 0]]], np.float32)
    got = furthest_point_sample(torch.from_numpy(x), 7)[0].tolist()
    assert got == fps_np(x[0], 7) == [0, 2, 1, 0, 0, 0, 0]
    same = torch.ones(2, 5, 3)
    assert furthest_point_sample(same, 3).tolist() == [[0, 0, 0], [0, 0, 0]]
    assert furthest_point_sample(same, 0).shape == (2, 0)


def test_fps_accepts_float64_and_rejects_bad_input():
    x = torch.rand(1, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert furthest_point_sample(x, 5).tolist()[0] == fps_np(x[0].float().numpy(), 5)
    with pytest.raises(ValueError, match=r"xyz: expected shape \(B, N, 3\)"):
        furthest_point_sample(torch.rand(50, 3), 5)
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="xyz: 1 point"):
        furthest_point_sample(bad, 5)
    with pytest.raises(ValueError, match="no points"):
        furthest_point_sample(torch.zeros(1, 0, 3), 2)
    with pytest.raises(ValueError, match="n must be an int"):
        furthest_point_sample(x, -1)


# ---- ball query ---------------------------------------------------------------------------------
@pytest.mark.parametrize("r,k", [(0.3, 8), (0.6, 32), (0.05, 4)])
def test_ball_query_matches_brute_force(r, k):
    rng = np.random.default_rng(int(r * 100) + k)
    x = cloud(rng, 2, 400, dup=40)
    c = np.concatenate([x[:, :30], rng.uniform(-1.5, 1.5, (2, 20, 3)).astype(np.float32)], 1)
    got = ball_query(torch.from_numpy(x), torch.from_numpy(c), r, k)
    assert got.shape == (2, 50, k) and got.dtype == torch.long
    for b in range(2):
        for s in range(50):
            assert got[b, s].tolist() == ball_np(x[b], c[b, s], r, k), (b, s)


def test_ball_query_no_neighbour_gives_nearest_and_full_balls_stop_at_k():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 0, 0], [0.1, 0, 0], [0.05, 0, 0]]])
    c = torch.tensor([[[5.0, 0, 0], [0.0, 0, 0], [0.9, 0, 0]]])
    got = ball_query(x, c, 0.2, 2).tolist()[0]
    assert got[0] == [1, 1]            # empty ball: nearest (tie 1 vs 2 -> lowest index)
    assert got[1] == [0, 3]            # first two in index order, 4 is left out
    assert got[2] == [1, 2]
    # boundary is exclusive: a point at exactly r is outside
    x2 = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0]]])
    assert ball_query(x2, x2[:, :1], 0.5, 3).tolist() == [[[0, 0, 0]]]


def test_ball_query_rejects_bad_arguments():
    x = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="radius must be"):
        ball_query(x, x, 0.0, 4)
    with pytest.raises(ValueError, match="k must be"):
        ball_query(x, x, 0.1, 0)
    with pytest.raises(ValueError, match="batch"):
        ball_query(x, torch.rand(2, 3, 3), 0.1, 4)


# ---- gather / group -------------------------------------------------------------------------------
def test_gather_and_group_match_numpy_with_gradients():
    rng = np.random.default_rng(4)
    B, N, C, S, k = 2, 60, 5, 7, 4
    f = torch.tensor(rng.normal(size=(B, N, C)), requires_grad=True)
    idx = torch.tensor(rng.integers(0, N, (B, S, k)))
    idx[0, 0] = 3                                           # repeated index: gradients add up
    out = group_points(f, idx)
    ref = np.stack([f.detach().numpy()[b][idx[b].numpy()] for b in range(B)])
    assert out.shape == (B, S, k, C)
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    g = rng.normal(size=out.shape)
    out.backward(torch.tensor(g))
    gref = np.zeros((B, N, C))
    for b in range(B):
        np.add.at(gref[b], idx[b].numpy().reshape(-1), g[b].reshape(-1, C))
    np.testing.assert_allclose(f.grad.numpy(), gref, atol=1e-12)
    # gather_points with a 1-D index per batch
    i2 = torch.tensor(rng.integers(0, N, (B, 9)))
    np.testing.assert_array_equal(gather_points(f, i2).detach().numpy(),
                                  np.stack([f.detach().numpy()[b][i2[b].numpy()] for b in range(B)]))


def test_gather_rejects_out_of_range_and_bad_shapes():
    f = torch.rand(1, 4, 2)
    with pytest.raises(ValueError, match=r"idx: indices must lie in \[0, 4\), got min 0 max 4"):
        gather_points(f, torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="idx: expected an int64/int32"):
        gather_points(f, torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="group_points: idx must be"):
        group_points(f, torch.tensor([[0, 1]]))


# ---- three-NN / interpolation --------------------------------------------------------------------
def test_three_nn_matches_brute_force_including_ties():
    rng = np.random.default_rng(5)
    known = cloud(rng, 2, 120, dup=30)
    unknown = np.concatenate([cloud(rng, 2, 80), known[:, :10]], 1)
    dist, idx = three_nn(torch.from_numpy(unknown), torch.from_numpy(known))
    for b in range(2):
        for i in range(unknown.shape[1]):
            d = d2_np(known[b], unknown[b, i])
            order = np.argsort(d, kind="stable")[:3]
            assert idx[b, i].tolist() == order.tolist()
            np.testing.assert_allclose(dist[b, i].numpy(), np.sqrt(d[order]), rtol=1e-6)
    assert (dist[:, 80:, 0] == 0).all()                     # a known point is its own nearest
    with pytest.raises(ValueError, match="at least 3 points"):
        three_nn(torch.rand(1, 4, 3), torch.rand(1, 2, 3))


def test_three_interpolate_matches_numpy_and_gradients():
    rng = np.random.default_rng(6)
    B, m, n, C = 2, 20, 15, 4
    feat = torch.tensor(rng.normal(size=(B, m, C)), requires_grad=True)
    dist, idx = three_nn(torch.rand(B, n, 3, generator=torch.Generator().manual_seed(1)),
                         torch.rand(B, m, 3, generator=torch.Generator().manual_seed(2)))
    w = inverse_distance_weights(dist.double()).requires_grad_(True)
    out = three_interpolate(feat, idx, w)
    ref = np.einsum("bnj,bnjc->bnc", w.detach().numpy(),
                    np.stack([feat.detach().numpy()[b][idx[b].numpy()] for b in range(B)]))
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(w.detach().sum(-1).numpy(), 1.0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda f, ww: three_interpolate(f, idx, ww), (feat, w))


# ---- voxel downsampling ---------------------------------------------------------------------------
def test_voxel_downsample_matches_dictionary_grouping():
    rng = np.random.default_rng(7)
    pts = np.concatenate([rng.uniform(-1, 1, (2000, 3)), rng.uniform(0, 255, (2000, 3))], 1)
    pts[1500:] = pts[:500]                                  # duplicates
    pts[0, :3] = [-0.1, 0.0, 0.1]                           # exactly on voxel faces
    out, inv = voxel_downsample(pts, 0.1, return_inverse=True)
    groups: dict = {}
    for i, p in enumerate(pts):
        key = tuple(np.floor(p[:3].astype(np.float32) / np.float32(0.1)).astype(np.int64))
        groups.setdefault(key, []).append(i)
    ref = np.array([pts[g].mean(0) for g in groups.values()])   # dict keeps first-seen order
    assert out.shape == ref.shape and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    for r, g in enumerate(groups.values()):
        assert (inv[g] == r).all()


def test_voxel_downsample_edge_cases_and_gradient():
    assert voxel_downsample(np.zeros((0, 6)), 0.1).shape == (0, 6)
    one = torch.tensor([[0.5, 0.5, 0.5, 1.0]], requires_grad=True)
    assert torch.equal(voxel_downsample(one, 1.0), one.detach())
    p = torch.rand(50, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: voxel_downsample(x, 0.3), (p,))
    with pytest.raises(ValueError, match="voxel_size must be"):
        voxel_downsample(np.zeros((3, 3)), -1.0)
    with pytest.raises(ValueError, match="non-finite xyz"):
        voxel_downsample(np.array([[np.nan, 0, 0]]), 0.1)
    with pytest.raises(ValueError, match="exceed"):
        voxel_downsample(np.array([[1e9, 0, 0]]), 0.01)
