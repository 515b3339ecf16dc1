#!/usr/bin/env bash
# GPU job of 2026-12-07 (third session): the shipped GRPO recipe (grounding alone, sft_coef 0.25) from
# the committed SFT checkpoint, with the evidence reward added on grounding (its reasoning's boxes
# against the reference reasoning's). Beside it, the dev-room choice among the shipped model and this
# run's checkpoints 7/14/final by the rule fixed before (bench/select_checkpoint.py), then the
# pick's held-out grounding and QA predictions (80 rooms), or, when the shipped model is the pick,
# final's held-out QA predictions for the record.
#   job.sh TREE_COPY      (the tree copied outside the work tree; /tmp/sft, /tmp/dev_pack, /tmp/prev carried in)
set -euo pipefail
T=$1
cd "$T"
R="python3 -m r1_ros.cli"
export PYTHONPATH=/tmp/site:$T HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
W=/tmp/A
mkdir -p $W/dev/sft
zcat /tmp/prev/sft_h100.jsonl.gz > $W/dev/sft/predictions.jsonl          # the SFT checkpoint's dev predictions (2026-12-07, H100)
zcat /tmp/prev/shipped_h100.jsonl.gz > /tmp/prev/shipped.jsonl            # the shipped model's (same dev pack, same day)
SETS="grpo.reward_weights.evidence=1.0 grpo.reward_tasks.evidence=[grounding]"
SCENES=100 VAL_ROOMS=100-119,320-379 SFT_FROM=/tmp/sft WAIT_FOR=/tmp/site/.ready STOP_AFTER=grpo SETS="$SETS" \
  scripts/gpu/nano_pipeline.sh $W > /tmp/pipe.log 2>&1 &
STEPS="7 14" EXTRA_CANDIDATES="shipped=/tmp/prev/shipped.jsonl" EVAL_FINAL=1 WAIT_FOR=/tmp/site/.ready EVAL_BATCH=256 \
  EVAL_TASKS="grounding qa" scripts/gpu/grpo_dev_select.sh $W /tmp/dev_pack > /tmp/dev.log 2>&1
wait
pick=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pick'])" $W/dev/selection.json)
if [ "$pick" = shipped ]; then   # for the record: final's held-out QA
  echo "=== held-out final (record) $(date +%T)" >> /tmp/dev.log
  $R eval --checkpoint $W/run/grpo/final --pack $W/run/pack --out $W/eval/grpo_final --no-score --batch-size 256 \
    --tasks qa --no-dense-caption >> /tmp/dev.log 2>&1
fi
echo "=== job done $(date +%T)" >> /tmp/dev.log
touch /tmp/job.done
