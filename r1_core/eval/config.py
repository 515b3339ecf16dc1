"""The metrics component's typed config (r1_core.config.load_config).

    from r1_core.config import load_config
    from r1_core.eval.config import MetricsConfig
    cfg = load_config(MetricsConfig, "config/eval.yaml", section="metrics")

The visualiser's config is r1_core.eval.visualize.VisualizeConfig.
"""
from __future__ import annotations

from dataclasses import dataclass

from r1_core.eval.captions import CAPTION_METRICS
from r1_core.eval.dense_caption import DENSE_CAPTION_METRICS


@dataclass
class MetricsConfig:
    """Which numbers the benchmarks report."""
    grounding_iou_thresholds: tuple[float, ...] = (0.25, 0.5)       # ScanRefer / Nr3D Acc@k
    dense_caption_iou_thresholds: tuple[float, ...] = (0.25, 0.5)   # Scan2Cap m@kIoU
    caption_metrics: tuple[str, ...] = CAPTION_METRICS              # ScanQA, 3D-LLM dialogue/planning
    dense_caption_metrics: tuple[str, ...] = DENSE_CAPTION_METRICS
    scan2cap_sos_eos: bool = False   # wrap captions in "sos ... eos" as Scan2Cap's code does

    def __post_init__(self):
        for name in ("grounding_iou_thresholds", "dense_caption_iou_thresholds"):
            ts = getattr(self, name)
            if not ts or any(not 0.0 < t <= 1.0 for t in ts):
                raise ValueError(f"{name}: expected IoU thresholds in (0, 1], got {list(ts)}")
        bad = [m for m in self.caption_metrics if m not in CAPTION_METRICS]
        if bad or not self.caption_metrics:
            raise ValueError(f"caption_metrics: unknown {bad or 'empty list'}; choose from {list(CAPTION_METRICS)}")
        bad = [m for m in self.dense_caption_metrics if m not in DENSE_CAPTION_METRICS]
        if bad or not self.dense_caption_metrics:
            raise ValueError(
                f"dense_caption_metrics: unknown {bad or 'empty list'}; choose from {list(DENSE_CAPTION_METRICS)}"
            )
