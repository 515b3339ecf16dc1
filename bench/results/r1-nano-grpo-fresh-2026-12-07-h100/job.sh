#!/usr/bin/env bash
# GPU job of 2026-12-07 (fourth session): GRPO whose prompts come from 100 rooms no earlier stage saw
# (400-499), from the committed SFT checkpoint; the SFT term keeps SFT's own rooms (0-99, as in the
# shipped run). Two recipes of 14 steps, one after the other:
#   g  (run/grpo):   the shipped recipe (grounding alone, sft_coef 0.25), grpo.steps=14
#   gq (run/grpo_b): the same with QA among GRPO's tasks (the paper's format + semantic rewards)
# Beside them, each checkpoint's dev predictions (rooms 380-399), the pick by the rule fixed in the
# README (bench/select_checkpoint.py), then the pick's held-out predictions (80 rooms: dynamic with
# dense captions, and uniform), or, when the shipped model is the pick, both
# finals' held-out QA for the record.
#   job.sh TREE_COPY      (the tree copied outside the work tree; /tmp/sft, /tmp/dev_pack, /tmp/prev carried in)
set -euo pipefail
T=$1
cd "$T"
R="python3 -m r1_ros.cli"
export PYTHONPATH=/tmp/site:$T HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
W=/tmp/A
RECIPE=config/train/nano.yaml
mkdir -p $W/dev/sft
zcat /tmp/prev/sft_h100.jsonl.gz > $W/dev/sft/predictions.jsonl          # the SFT checkpoint's dev predictions (2026-12-07, H100)
zcat /tmp/prev/shipped_h100.jsonl.gz > /tmp/prev/shipped.jsonl            # the shipped model's (same dev pack, same day)
dev_eval() {  # NAME CHECKPOINT
  echo "=== dev $1 $(date +%T)"
  $R eval --checkpoint "$2" --pack /tmp/dev_pack --out "$W/dev/$1" --no-score --batch-size 256 \
    --tasks grounding qa --no-dense-caption > /tmp/log_dev_$1 2>&1
  echo "=== dev $1 done $(date +%T)"
}
wait_for() { while [ ! -e "$1" ]; do sleep 5; done; }
(
  wait_for $W/run/grpo/checkpoint-7/train_state.pt;   dev_eval g-7  $W/run/grpo/checkpoint-7
  wait_for $W/.done-grpo;                             dev_eval g-14 $W/run/grpo/final
  wait_for $W/run/grpo_b/checkpoint-7/train_state.pt; dev_eval gq-7 $W/run/grpo_b/checkpoint-7
  wait_for $W/.done-grpo_b;                           dev_eval gq-14 $W/run/grpo_b/final
) > /tmp/dev.log 2>&1 &
devs=$!
SCENES=100 VAL_ROOMS=100-119,320-379 SFT_FROM=/tmp/sft GRPO_ROOMS=400-499 WAIT_FOR=/tmp/site/.ready STOP_AFTER=grpo \
  SETS="grpo.steps=14" scripts/gpu/nano_pipeline.sh $W > /tmp/pipe.log 2>&1
echo "=== grpo_b $(date +%T)" >> /tmp/pipe.log
$R train grpo --recipe $RECIPE --set grpo.steps=14 --set "grpo.tasks=[grounding,qa]" --pack $W/run/grpo_pack \
  --sft-pack $W/run/pack --init /tmp/sft --out $W/run/grpo_b >> /tmp/pipe.log 2>&1
touch $W/.done-grpo_b
echo "=== grpo_b done $(date +%T)" >> /tmp/pipe.log
wait $devs
python3 bench/select_checkpoint.py --baseline $W/dev/sft/predictions.jsonl --out $W/dev/selection.json --candidates \
  shipped=/tmp/prev/shipped.jsonl g-7=$W/dev/g-7/predictions.jsonl g-14=$W/dev/g-14/predictions.jsonl \
  gq-7=$W/dev/gq-7/predictions.jsonl gq-14=$W/dev/gq-14/predictions.jsonl > /tmp/select.log 2>&1
pick=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pick'])" $W/dev/selection.json)
declare -A CK=([g-7]=$W/run/grpo/checkpoint-7 [g-14]=$W/run/grpo/final [gq-7]=$W/run/grpo_b/checkpoint-7 [gq-14]=$W/run/grpo_b/final)
held() {  # NAME CHECKPOINT ARGS...
  local name=$1 ck=$2; shift 2
  echo "=== held-out $name $(date +%T)"
  $R eval --checkpoint "$ck" --pack $W/run/pack --out $W/eval/$name --no-score --batch-size 256 "$@" > /tmp/log_held_$name 2>&1
  echo "=== held-out $name done $(date +%T)"; touch $W/eval/$name.done
}
mkdir -p $W/eval
if [ "$pick" = shipped ]; then   # for the record: both finals' held-out QA
  held g-14_qa ${CK[g-14]} --tasks qa --no-dense-caption >> /tmp/held.log 2>&1 &
  held gq-14_qa ${CK[gq-14]} --tasks qa --no-dense-caption >> /tmp/held.log 2>&1 &
else
  held "${pick}_dynamic" ${CK[$pick]} --tasks grounding qa >> /tmp/held.log 2>&1 &
  held "${pick}_uniform" ${CK[$pick]} --views uniform --tasks grounding qa --no-dense-caption >> /tmp/held.log 2>&1 &
fi
wait
echo "=== job done $(date +%T)" >> /tmp/held.log
touch /tmp/job.done
