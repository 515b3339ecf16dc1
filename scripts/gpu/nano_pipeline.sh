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
#   DETECTOR_FROM=CHECKPOINT scripts/gpu/nano_pipeline.sh WORKDIR
#       no detector stage: pack and SFT use that checkpoint's (frozen) detector side, e.g. the
#       shipped r1_core/assets/r1-nano.
# Other settings (environment): SCENES / VAL_SCENES / VAL_FROM (`r1 data synth --val-from`: more
# training rooms, the same held-out ones), SETS ("key=value ..." recipe overrides for every
# training stage), STOP_AFTER (a stage name: stop once it is done, e.g. eval_sft).
set -euo pipefail
W=${1:-/tmp/nano}
R="${PYTHON:-python3} -m r1_ros.cli"
RECIPE=${RECIPE:-config/train/nano.yaml}
SCENES=${SCENES:-100}
VAL_SCENES=${VAL_SCENES:-20}
WORKERS=${WORKERS:-14}
VAL_FROM=${VAL_FROM:+--val-from $VAL_FROM}
SET_ARGS=""; for kv in ${SETS:-}; do SET_ARGS="$SET_ARGS --set $kv"; done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -n "${FROM_SHIPPED:-}" ]; then
  echo "FROM_SHIPPED is gone: the shipped R1-nano is the SFT+GRPO stage; give SFT_FROM=<SFT checkpoint>" >&2; exit 2
fi
for ck in "${SFT_FROM:-}" "${DETECTOR_FROM:-}"; do
  if [ -n "$ck" ] && [ ! -f "$ck/r1_meta.json" ]; then
    echo "$ck: not an r1 checkpoint (no r1_meta.json)" >&2; exit 2
  fi
done
mkdir -p "$W"
stage() {
  local name=$1; shift
  if [ ! -f "$W/.done-$name" ]; then echo "=== $name $(date +%T)"; "$@"; touch "$W/.done-$name"; echo "=== $name done $(date +%T)"; fi
  if [ "${STOP_AFTER:-}" = "$name" ]; then echo "=== stopped after $name (STOP_AFTER)"; exit 0; fi
}
stage synth    $R data synth --out "$W/data" --scenes $SCENES --val-scenes $VAL_SCENES --seed 0 $VAL_FROM
if [ -n "${SFT_FROM:-}" ]; then
  mkdir -p "$W/run/sft" && ln -sfn "$(cd "$SFT_FROM" && pwd)" "$W/run/sft/final"
  stage pack   $R train pack --recipe $RECIPE $SET_ARGS --data "$W/data" --detector "$SFT_FROM" --out "$W/run/pack" --workers $WORKERS
else
  DET=${DETECTOR_FROM:-$W/run/detector}
  [ -n "${DETECTOR_FROM:-}" ] || stage detector $R train detector --recipe $RECIPE $SET_ARGS --data "$W/data" --out "$DET" --workers $WORKERS
  stage pack     $R train pack --recipe $RECIPE $SET_ARGS --data "$W/data" --detector "$DET" --out "$W/run/pack" --workers $WORKERS
  stage sft      $R train sft --recipe $RECIPE $SET_ARGS --pack "$W/run/pack" --detector "$DET" --out "$W/run/sft"
  stage eval_sft $R eval --checkpoint "$W/run/sft/final" --pack "$W/run/pack" --out "$W/eval/sft" --no-score --batch-size 64
fi
stage grpo     $R train grpo --recipe $RECIPE $SET_ARGS --pack "$W/run/pack" --init "$W/run/sft/final" --out "$W/run/grpo"
stage eval_grpo $R eval --checkpoint "$W/run/grpo/final" --pack "$W/run/pack" --out "$W/eval/grpo" --no-score --batch-size 64
stage eval_uniform $R eval --checkpoint "$W/run/grpo/final" --pack "$W/run/pack" --out "$W/eval/grpo_uniform" --views uniform --no-score --batch-size 64 --no-dense-caption
echo "=== all done $(date +%T)"
