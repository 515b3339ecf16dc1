#!/usr/bin/env bash
# Choose among a GRPO run's checkpoints on dev rooms, beside nano_pipeline.sh on the same machine:
# evaluates the SFT checkpoint and each GRPO checkpoint-N (as the run writes them) on a dev pack
# (rooms in neither split), picks one with bench/select_checkpoint.py, and makes the pick's
# held-out predictions unless it is `final` (nano_pipeline.sh makes those).
#   WAIT_FOR=/tmp/site/.ready scripts/gpu/grpo_dev_select.sh PIPELINE_WORKDIR DEV_PACK
# Settings (environment): STEPS (the checkpoint-N to evaluate, default "7": grpo.save_every 7 of the
# recipe's 14 steps; "7 14 21" for a 28-step run; empty: final alone), EVAL_BATCH, WAIT_FOR (as nano_pipeline.sh's: the weights are installed),
# EXTRA_CANDIDATES ("NAME=PREDICTIONS ...": dev predictions made before on the same dev pack, e.g. the
# shipped model's; listed first, and a pick among them gets no held-out predictions), EVAL_FINAL=1
# (make final's held-out predictions here when it is the pick: nano_pipeline.sh ran with STOP_AFTER=grpo).
# Writes PIPELINE_WORKDIR/dev/<name>/predictions.jsonl, dev/selection.json and, for a pick other
# than final, eval/grpo_<pick>/predictions.jsonl.
set -euo pipefail
W=$1; DEV=$2
R="${PYTHON:-python3} -m r1_ros.cli"
STEPS=${STEPS-7}
EVAL_BATCH=${EVAL_BATCH:-256}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ -f "$DEV/pack.json" ] || { echo "$DEV: not a pack (no pack.json)" >&2; exit 2; }
wait_for() { while [ ! -e "$1" ]; do sleep 5; done; }
dev_eval() {  # NAME CHECKPOINT
  [ -f "$W/dev/$1/predictions.jsonl" ] && return 0
  echo "=== dev $1 $(date +%T)"
  $R eval --checkpoint "$2" --pack "$DEV" --out "$W/dev/$1" --no-score --batch-size $EVAL_BATCH \
    --tasks grounding qa --no-dense-caption
}
[ -z "${WAIT_FOR:-}" ] || wait_for "$WAIT_FOR"
wait_for "$W/run/sft/final/r1_meta.json"
dev_eval sft "$W/run/sft/final"
candidates="${EXTRA_CANDIDATES:-}"
for n in $STEPS; do
  wait_for "$W/run/grpo/checkpoint-$n/train_state.pt"   # written after the checkpoint itself
  dev_eval checkpoint-$n "$W/run/grpo/checkpoint-$n"
  candidates="$candidates checkpoint-$n=$W/dev/checkpoint-$n/predictions.jsonl"
done
wait_for "$W/.done-grpo"
dev_eval final "$W/run/grpo/final"
${PYTHON:-python3} bench/select_checkpoint.py --baseline "$W/dev/sft/predictions.jsonl" \
  --candidates $candidates "final=$W/dev/final/predictions.jsonl" --out "$W/dev/selection.json"
pick=$(${PYTHON:-python3} -c "import json,sys; print(json.load(open(sys.argv[1]))['pick'])" "$W/dev/selection.json")
echo "=== pick: $pick"
case " ${EXTRA_CANDIDATES:-} " in *" $pick="*) extra=1 ;; *) extra=0 ;; esac
if [ "$extra" = 0 ] && { [ "$pick" != final ] || [ "${EVAL_FINAL:-0}" = 1 ]; } \
   && [ ! -f "$W/eval/grpo_$pick/predictions.jsonl" ]; then     # a rerun keeps what an earlier one made
  $R eval --checkpoint "$W/run/grpo/$pick" --pack "$W/run/pack" --out "$W/eval/grpo_$pick" --no-score \
    --batch-size $EVAL_BATCH ${EVAL_TASKS:+--tasks $EVAL_TASKS}
fi
echo "=== dev selection done $(date +%T)"
