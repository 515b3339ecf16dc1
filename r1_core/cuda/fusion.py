"""CUDA backend of r1_core.geometry.fusion.FusionMap (chosen with FusionConfig.device="cuda").

    fmap = FusionMap(FusionConfig(device="cuda"))
    fmap.integrate(color, depth, K, T)      # numpy arrays, or torch CUDA tensors (no host copy)

State lives on the GPU: an open-addressing hash table (keys int64, slot int32; capacity a power
of two >= 2 x slots), and per-slot arrays (key, float64 sums (7, cap), observations, last
seen). A frame costs two kernels: a check pass that counts valid pixels and detects
out-of-range voxels (so a bad frame is skipped before anything is written, as on the CPU), and
the integrate pass (one thread per pixel; find-or-insert with atomicCAS; runs of equal voxels
within a warp are summed with a segmented shuffle scan, then one set of float64 atomics per
run). Eviction uses the CPU backend's rule (eviction_order) on the device, then rebuilds the
table. The per-pixel arithmetic is the CPU path's, so both put each pixel in the same voxel;
sums differ only by float64 summation order.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from r1_core.cuda import load_extension
from r1_core.geometry.fusion import (
    KEY_BITS, KEY_LIMIT, KEY_OFFSET, FusionConfig, IntegrationResult, frame_inputs,
)
from r1_core.geometry.rgbd import FrameError, Intrinsics, pixel_rays


def _check_torch_frame(color: torch.Tensor, depth: torch.Tensor, intr: Intrinsics) -> None:
    if depth.dtype not in (torch.uint16, torch.float32):
        raise FrameError("bad_depth_dtype", f"depth: expected uint16 (mm) or float32 (m), got {depth.dtype}")
    if depth.ndim != 2 or depth.numel() == 0:
        raise FrameError("bad_shape", f"depth: expected a non-empty (H, W) image, got shape {tuple(depth.shape)}")
    if tuple(depth.shape) != (intr.height, intr.width):
        raise FrameError("size_mismatch", f"depth is {depth.shape[1]}x{depth.shape[0]} but the intrinsics are for "
                                          f"{intr.width}x{intr.height}")
    if not isinstance(color, torch.Tensor) or color.dtype != torch.uint8 or color.ndim != 3 or color.shape[2] != 3:
        raise FrameError("bad_color", f"color: expected uint8 (H, W, 3) rgb8, got "
                                      f"{getattr(color, 'dtype', type(color).__name__)} {tuple(getattr(color, 'shape', ()))}")
    if tuple(color.shape[:2]) != tuple(depth.shape):
        raise FrameError("size_mismatch", f"color is {color.shape[1]}x{color.shape[0]} but depth is "
                                          f"{depth.shape[1]}x{depth.shape[0]}; register/resize them first")


class CudaFusionBackend:
    def __init__(self, cfg: FusionConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if not torch.cuda.is_available():
            raise RuntimeError(f"FusionConfig.device={cfg.device!r} but torch sees no CUDA device")
        self.ext = load_extension()
        self._rays: dict[Intrinsics, tuple[torch.Tensor, torch.Tensor]] = {}
        self.headroom = 1 << 16
        self._alloc(1 << 16)
        self.n = 0

    # ---- storage ------------------------------------------------------------------------------------------
    def _alloc(self, cap: int, keep: int = 0) -> None:
        """(Re)allocate slot arrays of capacity `cap`, keeping the first `keep` slots, and rebuild the table."""
        dev = self.device
        old = getattr(self, "slot_keys", None)
        slot_keys = torch.zeros(cap, dtype=torch.long, device=dev)
        sums = torch.zeros(7, cap, dtype=torch.float64, device=dev)
        obs = torch.zeros(cap, dtype=torch.int32, device=dev)
        last = torch.full((cap,), -1, dtype=torch.int32, device=dev)
        if old is not None and keep:
            slot_keys[:keep] = self.slot_keys[:keep]
            sums[:, :keep] = self.sums[:, :keep]
            obs[:keep] = self.obs[:keep]
            last[:keep] = self.last[:keep]
        self.slot_keys, self.sums, self.obs, self.last = slot_keys, sums, obs, last
        bits = max(12, int(math.ceil(math.log2(2 * cap))))
        self.tkeys = torch.empty(1 << bits, dtype=torch.long, device=dev)
        self.tslot = torch.empty(1 << bits, dtype=torch.int32, device=dev)
        self.counter = torch.tensor([keep, 0], dtype=torch.int32, device=dev)
        self.ext.fusion_rebuild(self.tkeys, self.tslot, self.slot_keys, self.sums, self.obs, self.last, self.counter, keep)

    def _ensure_capacity(self, frame_pixels: int) -> None:
        need = self.n + frame_pixels
        if need > self.slot_keys.numel():
            cap = 1 << int(math.ceil(math.log2(max(need, 2 * self.slot_keys.numel()))))
            self._alloc(cap, keep=self.n)

    def set_state(self, keys: np.ndarray, sums: np.ndarray, obs: np.ndarray, last: np.ndarray) -> None:
        n = len(keys)
        self.slot_keys = None
        self._alloc(max(1 << 16, 1 << int(math.ceil(math.log2(max(2 * n, 2))))), keep=0)
        if n:
            self.slot_keys[:n] = torch.from_numpy(np.ascontiguousarray(keys, np.int64)).to(self.device)
            self.sums[:, :n] = torch.from_numpy(np.ascontiguousarray(sums.T, np.float64)).to(self.device)
            self.obs[:n] = torch.from_numpy(np.ascontiguousarray(obs, np.int32)).to(self.device)
            self.last[:n] = torch.from_numpy(np.ascontiguousarray(last, np.int32)).to(self.device)
        self.n = n
        self.counter[0] = n
        self.ext.fusion_rebuild(self.tkeys, self.tslot, self.slot_keys, self.sums, self.obs, self.last, self.counter, n)

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        return (self.slot_keys[:n].cpu().numpy(), self.sums[:, :n].T.cpu().numpy(), self.obs[:n].cpu().numpy(),
                self.last[:n].cpu().numpy())

    def num_voxels(self) -> int:
        return self.n

    # ---- per frame ------------------------------------------------------------------------------------------
    def _frame_tensors(self, color: Any, depth: Any, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(depth, torch.Tensor) or isinstance(color, torch.Tensor):
            if not (isinstance(depth, torch.Tensor) and isinstance(color, torch.Tensor)):
                raise FrameError("bad_color", "color and depth must both be numpy arrays or both torch tensors")
            _check_torch_frame(color, depth, intr)
            if depth.dtype == torch.uint16:
                depth = depth.view(torch.int16)          # same bits; the kernel reads them as uint16
            return (color.to(self.device, non_blocking=True).contiguous(),
                    depth.to(self.device, non_blocking=True).contiguous())
        color, depth = frame_inputs(color, depth, intr)
        depth = np.ascontiguousarray(depth)
        if depth.dtype == np.uint16:
            depth = depth.view(np.int16)
        return (torch.from_numpy(np.ascontiguousarray(color)).to(self.device, non_blocking=True),
                torch.from_numpy(depth).to(self.device, non_blocking=True))

    def _rays_for(self, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._rays.get(intr)
        if hit is None:
            rx, ry = pixel_rays(intr)
            hit = (torch.from_numpy(np.array(rx)).to(self.device), torch.from_numpy(np.array(ry)).to(self.device))
            if len(self._rays) > 8:
                self._rays.clear()
            self._rays[intr] = hit
        return hit

    def _params(self, T: np.ndarray, frame: int) -> list[float]:
        cfg = self.cfg
        R = T[:3, :3].astype(np.float32).astype(np.float64)
        t = T[:3, 3].astype(np.float32).astype(np.float64)
        crop = cfg.crop_min is not None
        lo = cfg.crop_min if crop else (0.0, 0.0, 0.0)
        hi = cfg.crop_max if crop else (0.0, 0.0, 0.0)
        return [cfg.depth_scale, cfg.min_depth, cfg.max_depth, cfg.edge_threshold, cfg.voxel_size,
                *R.ravel().tolist(), *t.tolist(), float(crop), *[float(v) for v in lo], *[float(v) for v in hi],
                1.0 if cfg.weighting == "inverse_depth_squared" else 0.0, float(frame),
                float(KEY_LIMIT), float(KEY_OFFSET), float(KEY_BITS)]

    def integrate(self, color: Any, depth: Any, intr: Intrinsics, T: np.ndarray, frame: int) -> IntegrationResult:
        cfg = self.cfg
        c, d = self._frame_tensors(color, depth, intr)
        rx, ry = self._rays_for(intr)
        f = self._params(T, frame)
        st = cfg.pixel_stride
        counts = self.ext.fusion_check(d, rx, ry, st, f).cpu()
        valid, out_of_range = int(counts[0]), int(counts[1])
        if out_of_range:
            raise FrameError("out_of_range", f"frame {frame}: points reach beyond {KEY_LIMIT} voxels from the origin; "
                                             f"check the pose and voxel_size")
        if valid == 0:
            raise FrameError("no_valid_depth", f"frame {frame}: no pixel with valid depth in "
                                               f"[{cfg.min_depth}, {cfg.max_depth}] m (inside the crop box, if any)")
        self._ensure_capacity(valid)
        before = self.n
        self.ext.fusion_integrate(c, d, rx, ry, st, f, self.tkeys, self.tslot, self.slot_keys, self.sums, self.obs,
                                  self.last, self.counter)
        cnt = self.counter.cpu()
        if int(cnt[1]):
            raise RuntimeError("fusion kernel: slot capacity exceeded (internal error: capacity check failed)")
        self.n = int(cnt[0])
        evicted = self._evict_if_full()
        return IntegrationResult(True, None, "", frame, valid, self.n + evicted - before, self.n, evicted)

    def _evict_if_full(self) -> int:
        cfg = self.cfg
        if self.n <= cfg.max_voxels:
            return 0
        n = self.n
        keep_n = int(cfg.max_voxels * (1.0 - cfg.evict_fraction))
        keys, w, last = self.slot_keys[:n], self.sums[0, :n], self.last[:n].long()
        # lexsort (last desc, weight desc, key asc) by stable sorts from the last key to the first
        order = torch.argsort(keys, stable=True)
        order = order[torch.argsort(-w[order], stable=True)]
        order = order[torch.argsort(-last[order], stable=True)]
        keep = torch.sort(order[:keep_n]).values
        cap = self.slot_keys.numel()
        slot_keys = torch.zeros(cap, dtype=torch.long, device=self.device)
        sums = torch.zeros(7, cap, dtype=torch.float64, device=self.device)
        obs = torch.zeros(cap, dtype=torch.int32, device=self.device)
        lastn = torch.full((cap,), -1, dtype=torch.int32, device=self.device)
        slot_keys[:keep_n], sums[:, :keep_n] = self.slot_keys[keep], self.sums[:, keep]
        obs[:keep_n], lastn[:keep_n] = self.obs[keep], self.last[keep]
        self.slot_keys, self.sums, self.obs, self.last = slot_keys, sums, obs, lastn
        self.counter[0] = keep_n
        self.n = keep_n
        self.ext.fusion_rebuild(self.tkeys, self.tslot, self.slot_keys, self.sums, self.obs, self.last, self.counter, keep_n)
        return n - keep_n
