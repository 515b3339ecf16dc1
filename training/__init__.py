"""training: the paper's stages offline — encoder (detector) pre-training, SFT cold start, GRPO —
plus evaluation, on ScanNet-format data. Entry points: `r1 train …`, `r1 eval` (training/cli.py)."""
