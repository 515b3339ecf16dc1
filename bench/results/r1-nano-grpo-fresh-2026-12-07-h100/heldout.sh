#!/usr/bin/env bash
# The pick's (g-14's) held-out predictions on the GPU machine, for the README's table: dynamic views
# with dense captions, and uniform views, both grounding and QA; planning and dialogue (MODEL.md's). /tmp/g14 = r1_core/assets/r1-nano with
# this folder's g-14/adapter.safetensors (GRPO trains the LoRA alone: parts and view weights are the
# shipped ones); the weights installed in /tmp/site (scripts/gpu/weights_wheels.sh install).
#   heldout.sh TREE_COPY
set -euo pipefail
T=$1
cd "$T"
export PYTHONPATH=/tmp/site:$T HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
R="python3 -m r1_ros.cli"
echo "=== synth $(date +%T)"
$R data synth --out /tmp/d --scenes 1 --seed 0 --val-rooms 100-119,320-379 > /tmp/log_synth 2>&1
echo "=== pack $(date +%T)"
$R train pack --recipe config/train/nano.yaml --data /tmp/d --detector /tmp/g14 --out /tmp/p --workers 14 > /tmp/log_pack 2>&1
while [ ! -f /tmp/site/.ready ]; do sleep 2; done
echo "=== eval $(date +%T)"
$R eval --checkpoint /tmp/g14 --pack /tmp/p --out /tmp/e_dyn --no-score --batch-size 256 --tasks grounding qa > /tmp/log_dyn 2>&1 &
d=$!
$R eval --checkpoint /tmp/g14 --pack /tmp/p --out /tmp/e_uni --views uniform --no-dense-caption --no-score --batch-size 256 --tasks grounding qa > /tmp/log_uni 2>&1 &
u=$!
$R eval --checkpoint /tmp/g14 --pack /tmp/p --out /tmp/e_pd --no-score --batch-size 256 --tasks planning dialogue --no-dense-caption > /tmp/log_pd 2>&1 &
pd=$!
wait $d; echo "=== dyn done $(date +%T)"; touch /tmp/dyn.done
wait $u; echo "=== uni done $(date +%T)"; touch /tmp/uni.done
wait $pd; echo "=== pd done $(date +%T)"; touch /tmp/pd.done
