"""The depth branch (3D-R1's third encoder): Depth Anything through transformers' own
implementation, loaded from a local checkpoint.

    est = DepthBranch("/models/Depth-Anything-V2-Metric-Indoor-Small-hf", out_dim=576)
    depth_m = est.predict_depth(rgb)          # (H, W) float32 metres (metric checkpoints)
    tokens = est.view_tokens([rgb])           # (1, T, out_dim) features for the view tokens

The same estimator serves the RGB-only mode of the fusion node: a camera without a depth
sensor still builds the map from predicted metric depth. The Depth Anything weights stay
frozen; only the projection of its features into the LLM's space trains.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tiny_depth_anything(seed: int = 0):
    """A random-init Depth Anything (metric head) small enough for CPU tests."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                              fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="metric", max_depth=10)
    return DepthAnythingForDepthEstimation(cfg).eval()


class DepthBranch(nn.Module):
    def __init__(self, model_path: str | None, out_dim: int, tokens: int = 1, tiny: bool = False,
                 input_size: int | None = None):
        super().__init__()
        from transformers import DepthAnythingForDepthEstimation

        if tiny:
            self.model, size, mean, std = tiny_depth_anything(), 56, IMAGENET_MEAN, IMAGENET_STD
        else:
            if not model_path:
                raise ValueError("depth branch: no model_path given (a local Depth Anything checkpoint dir)")
            p = Path(model_path).expanduser()
            if not (p / "config.json").is_file():
                raise ValueError(f"depth branch: no Depth Anything checkpoint at {p} (config.json missing)")
            self.model = DepthAnythingForDepthEstimation.from_pretrained(p, local_files_only=True).eval()
            size, mean, std = 518, IMAGENET_MEAN, IMAGENET_STD
            pre = p / "preprocessor_config.json"
            if pre.is_file():
                pc = json.loads(pre.read_text())
                size = int(pc.get("size", {}).get("height", size))
                mean, std = tuple(pc.get("image_mean", mean)), tuple(pc.get("image_std", std))
        for q in self.model.parameters():
            q.requires_grad_(False)
        patch = self.model.config.patch_size
        self.size = (input_size or size) // patch * patch
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.side = int(round(tokens ** 0.5))
        if self.side * self.side != tokens:
            raise ValueError(f"depth branch: tokens must be a square number, got {tokens}")
        self.metric = self.model.config.depth_estimation_type == "metric"
        hidden = self.model.config.backbone_config.hidden_size
        self.proj = nn.Linear(hidden, out_dim)

    def _pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        dev = self.mean.device
        x = torch.stack([torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]).to(dev)
        x = F.interpolate(x.float() / 255.0, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def predict_depth(self, rgb: np.ndarray) -> np.ndarray:
        """Metric depth (metres) at the image's resolution. Needs a metric checkpoint."""
        if not self.metric:
            raise ValueError("depth branch: the checkpoint predicts relative depth; RGB-only fusion needs "
                             "a metric Depth Anything checkpoint (depth_estimation_type: metric)")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"predict_depth: expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        pred = self.model(pixel_values=self._pixels([rgb])).predicted_depth[:, None]
        pred = F.interpolate(pred, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        return pred[0, 0].float().cpu().numpy()

    def view_tokens(self, images: list[np.ndarray]) -> torch.Tensor:
        """(V, side*side, out_dim): the backbone's patch features pooled to a grid, projected."""
        with torch.no_grad():
            out = self.model.backbone.forward_with_filtered_kwargs(self._pixels(images), output_hidden_states=False)
            feat = out.feature_maps[-1]                                   # (V, 1 + n_patches, C)
        n = self.size // self.model.config.patch_size
        patches = feat[:, 1:].transpose(1, 2).reshape(feat.shape[0], -1, n, n)
        pooled = F.adaptive_avg_pool2d(patches.float(), self.side).flatten(2).transpose(1, 2)
        return self.proj(pooled)
