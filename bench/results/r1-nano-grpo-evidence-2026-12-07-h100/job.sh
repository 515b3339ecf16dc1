#!/usr/bin/env bash
# GPU job of 2026-12-07 (second session): GRPO from the committed SFT checkpoint on grounding AND QA,
# QA scored by format + the evidence reward (its reasoning's boxes against the reference reasoning's),
# grounding as the shipped recipe (format + perception + semantic). Beside it, the dev-room choice
# among the shipped model (step 7 of the sixth run) and this run's checkpoints 7/14/21/final by the
# rule fixed before (bench/select_checkpoint.py); then the pick's held-out predictions (80 rooms).
#   evidence.sh TREE_COPY      (the tree copied outside the work tree; /tmp/sft, /tmp/dev_pack, /tmp/prev carried in)
set -euo pipefail
T=$1
cd "$T"
export PYTHONPATH=/tmp/site:$T HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
W=/tmp/A
mkdir -p $W/dev/sft
zcat /tmp/prev/sft_h100.jsonl.gz > $W/dev/sft/predictions.jsonl          # the SFT checkpoint's dev predictions (2026-12-07, H100)
zcat /tmp/prev/shipped_h100.jsonl.gz > /tmp/prev/shipped.jsonl            # the shipped model's (same dev pack, same day)
SETS="grpo.tasks=[grounding,qa] grpo.reward_weights.evidence=1.0 grpo.reward_tasks.semantic=[grounding]"
SCENES=100 VAL_ROOMS=100-119,320-379 SFT_FROM=/tmp/sft WAIT_FOR=/tmp/site/.ready STOP_AFTER=grpo SETS="$SETS" \
  scripts/gpu/nano_pipeline.sh $W > /tmp/pipe.log 2>&1 &
EXTRA_CANDIDATES="shipped=/tmp/prev/shipped.jsonl" EVAL_FINAL=1 WAIT_FOR=/tmp/site/.ready EVAL_BATCH=256 \
  EVAL_TASKS="grounding qa" scripts/gpu/grpo_dev_select.sh $W /tmp/dev_pack > /tmp/dev.log 2>&1
wait
touch /tmp/job.done
