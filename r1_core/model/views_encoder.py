"""View tokens for the selected keyframes.

Backbones with a vision tower (Qwen2.5-VL) see the view's image through it; every backbone
also gets one *pose token* per view (a Fourier encoding of the camera centre and viewing
direction in the map frame), so the model knows where each view was taken. Text-only
backbones (SmolLM2) get their image tokens from `ConvViewEncoder`, a small CNN over the
RGB(-D) image trained with the rest of the encoder. When a depth branch is configured
(depth.py), its pooled features are added to the view's image tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from r1_core.model.encoder import fourier_encode, mlp


@dataclass
class ViewEncoderConfig:
    num_views: int = 4               # default k of view selection
    image_size: int = 96             # text-only backbones: views resized to this square
    tokens_per_view: int = 4         # text-only backbones: image tokens per view (a square grid)
    use_depth_channel: bool = True   # text-only backbones: add the depth image as a 4th channel
    max_depth_m: float = 8.0         # depth normalisation
    fourier_bands: int = 6

    def __post_init__(self):
        side = int(round(self.tokens_per_view ** 0.5))
        if side * side != self.tokens_per_view:
            raise ValueError(f"views.tokens_per_view must be a square number, got {self.tokens_per_view}")


@dataclass
class ViewInput:
    """One selected keyframe as the model sees it."""

    color: np.ndarray                # (H, W, 3) uint8 RGB
    T_map_optical: np.ndarray        # (4, 4) camera pose (docs/conventions.md)
    depth: np.ndarray | None = None  # (H, W) float32 metres (0 / NaN invalid), optional
    keyframe_id: int = -1
    K: np.ndarray | None = None      # (3, 3) intrinsics at this image's resolution, optional

    def __post_init__(self):
        c = np.asarray(self.color)
        if c.ndim != 3 or c.shape[2] != 3 or c.dtype != np.uint8:
            raise ValueError(f"view color: expected (H, W, 3) uint8, got {c.shape} {c.dtype}")
        T = np.asarray(self.T_map_optical, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"view pose: expected a finite 4x4 T_map_optical, got shape {T.shape}")
        self.T_map_optical = T
        if self.depth is not None and np.asarray(self.depth).shape != c.shape[:2]:
            raise ValueError(f"view depth: shape {np.asarray(self.depth).shape} != color {c.shape[:2]}")


def pose_features(T: torch.Tensor, bands: int) -> torch.Tensor:
    """(V, 4, 4) camera poses -> (V, 6 * (2 * bands + 1)): camera centre and optical axis."""
    centre = T[:, :3, 3]
    forward = T[:, :3, 2]                                   # optical z axis in the map frame
    return fourier_encode(torch.cat([centre / 4.0, forward], dim=-1), bands)


class PoseEmbedding(nn.Module):
    def __init__(self, cfg: ViewEncoderConfig, out_dim: int):
        super().__init__()
        self.bands = cfg.fourier_bands
        self.mlp = mlp([6 * (2 * cfg.fourier_bands + 1), out_dim, out_dim], last_act=False)

    def forward(self, T: torch.Tensor) -> torch.Tensor:
        return self.mlp(pose_features(T, self.bands))


class ConvViewEncoder(nn.Module):
    """A small CNN: (V, 3|4, S, S) -> (V, tokens_per_view, out_dim)."""

    def __init__(self, cfg: ViewEncoderConfig, out_dim: int):
        super().__init__()
        self.cfg = cfg
        chans = [4 if cfg.use_depth_channel else 3, 32, 64, 128, 128]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(8, b), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.side = int(round(cfg.tokens_per_view ** 0.5))
        self.out = nn.Linear(chans[-1], out_dim)

    def images_to_tensor(self, views: list[ViewInput], device: torch.device) -> torch.Tensor:
        S = self.cfg.image_size
        ims = []
        for v in views:
            rgb = torch.from_numpy(np.ascontiguousarray(v.color)).to(device).permute(2, 0, 1).float() / 255.0 - 0.5
            chans = [rgb]
            if self.cfg.use_depth_channel:
                d = np.zeros(v.color.shape[:2], np.float32) if v.depth is None else np.nan_to_num(
                    np.asarray(v.depth, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
                chans.append(torch.from_numpy(d).to(device)[None] / self.cfg.max_depth_m)
            ims.append(F.interpolate(torch.cat(chans)[None], size=(S, S), mode="area")[0])
        return torch.stack(ims)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.net(images), self.side)          # (V, C, side, side)
        return self.out(x.flatten(2).transpose(1, 2))                    # (V, side*side, out)
