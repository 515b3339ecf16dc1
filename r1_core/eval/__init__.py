"""Evaluation: benchmark metrics (captions, QA, grounding, dense captioning), paper-style
reports, and visualisation (rerun recordings, PNG renders).

    from r1_core.eval import caption_metrics, exact_match, scanrefer_metrics, save_report

Modules: captions (BLEU/METEOR/ROUGE-L/CIDEr via pycocoevalcap), qa (EM, EM-R, SQA3D),
grounding (Acc@kIoU, ScanRefer/Nr3D splits), dense_caption (Scan2Cap m@kIoU), report
(results JSON + Markdown tables), visualize (rerun .rrd, PNG renders), viz_cli (`r1 viz`),
config (MetricsConfig).
Each module documents its definitions; import the visualiser explicitly (it pulls in
matplotlib and rerun).
"""
from r1_core.eval.captions import CAPTION_METRICS, CaptionScorer, caption_metrics, ptb_tokenize
from r1_core.eval.config import MetricsConfig
from r1_core.eval.dense_caption import dense_caption_metrics
from r1_core.eval.grounding import (
    accuracy_at_iou,
    grounding_ious,
    nr3d_metrics,
    scanrefer_metrics,
    scanrefer_unique_lookup,
)
from r1_core.eval.qa import exact_match, normalize_answer, scanqa_metrics, sqa3d_metrics
from r1_core.eval.report import markdown_tables, save_report

__all__ = [
    "CAPTION_METRICS", "CaptionScorer", "caption_metrics", "ptb_tokenize", "MetricsConfig",
    "dense_caption_metrics", "accuracy_at_iou", "grounding_ious", "nr3d_metrics",
    "scanrefer_metrics", "scanrefer_unique_lookup", "exact_match", "normalize_answer",
    "scanqa_metrics", "sqa3d_metrics", "markdown_tables", "save_report",
]
