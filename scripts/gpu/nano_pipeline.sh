#!/usr/bin/env bash
# The R1-nano pipeline exactly as run on the GPU machine (one H100): synthetic data, detector
# pre-training, pack, SFT, GRPO, then predictions on the held-out split for the three rows of
# the results table. Scoring (METEOR needs Java) runs afterwards with `r1 eval --predictions`.
#   scripts/gpu/nano_pipeline.sh WORKDIR          (idempotent: finished stages are skipped)
#   SFT_FROM=CHECKPOINT scripts/gpu/nano_pipeline.sh WORKDIR
#       GRPO from an SFT checkpoint (e.g. the first run's runs/sft/final, brought to a second
#       machine): the pack is rebuilt with its encoder (the detector side is frozen after stage 0,
#       so the pack is the one it was trained on); no detector or SFT stage. Fits one 30-minute GPU
#       session (synth ~1 min, pack ~1 min, GRPO ~17 min, evals ~5 min). R1-nano's own SFT
#       checkpoint: r1_core/assets/r1-nano with adapter.safetensors replaced by
#       bench/results/r1-nano-propagate-2026-11-24-h100/sft_adapter.safetensors.
set -euo pipefail
W=${1:-/tmp/nano}
R="${PYTHON:-python3} -m r1_ros.cli"
RECIPE=${RECIPE:-config/train/nano.yaml}
SCENES=${SCENES:-100}
VAL_SCENES=${VAL_SCENES:-20}
WORKERS=${WORKERS:-14}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -n "${FROM_SHIPPED:-}" ]; then
  echo "FROM_SHIPPED is gone: the shipped R1-nano is the SFT+GRPO stage; give SFT_FROM=<SFT checkpoint>" >&2; exit 2
fi
if [ -n "${SFT_FROM:-}" ] && [ ! -f "$SFT_FROM/r1_meta.json" ]; then
  echo "SFT_FROM=$SFT_FROM: not an r1 checkpoint (no r1_meta.json)" >&2; exit 2
fi
mkdir -p "$W"
stage() { local name=$1; shift; if [ ! -f "$W/.done-$name" ]; then echo "=== $name $(date +%T)"; "$@"; touch "$W/.done-$name"; echo "=== $name done $(date +%T)"; fi; }
stage synth    $R data synth --out "$W/data" --scenes $SCENES --val-scenes $VAL_SCENES --seed 0
if [ -n "${SFT_FROM:-}" ]; then
  mkdir -p "$W/run/sft" && ln -sfn "$(cd "$SFT_FROM" && pwd)" "$W/run/sft/final"
  stage pack   $R train pack --recipe $RECIPE --data "$W/data" --detector "$SFT_FROM" --out "$W/run/pack" --workers $WORKERS
else
  stage detector $R train detector --recipe $RECIPE --data "$W/data" --out "$W/run/detector" --workers $WORKERS
  stage pack     $R train pack --recipe $RECIPE --data "$W/data" --detector "$W/run/detector" --out "$W/run/pack" --workers $WORKERS
  stage sft      $R train sft --recipe $RECIPE --pack "$W/run/pack" --detector "$W/run/detector" --out "$W/run/sft"
  stage eval_sft $R eval --checkpoint "$W/run/sft/final" --pack "$W/run/pack" --out "$W/eval/sft" --no-score --batch-size 64
fi
stage grpo     $R train grpo --recipe $RECIPE --pack "$W/run/pack" --init "$W/run/sft/final" --out "$W/run/grpo"
stage eval_grpo $R eval --checkpoint "$W/run/grpo/final" --pack "$W/run/pack" --out "$W/eval/grpo" --no-score --batch-size 64
stage eval_uniform $R eval --checkpoint "$W/run/grpo/final" --pack "$W/run/pack" --out "$W/eval/grpo_uniform" --views uniform --no-score --batch-size 64 --no-dense-caption
echo "=== all done $(date +%T)"
