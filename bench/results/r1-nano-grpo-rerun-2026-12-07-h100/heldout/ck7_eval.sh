#!/usr/bin/env bash
# checkpoint-7's held-out predictions (dynamic with dense captions; uniform without), on the GPU machine.
set -euo pipefail
T=$1
cd "$T"
export PYTHONPATH=/tmp/site:$T HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
R="python3 -m r1_ros.cli"
while [ ! -f /tmp/d.done ]; do sleep 2; done
while [ ! -f /tmp/site/.ready ]; do sleep 2; done
echo "=== pack $(date +%T)"
$R train pack --recipe config/train/nano.yaml --data /tmp/d --detector /tmp/ck7 --out /tmp/p --workers 14
echo "=== eval $(date +%T)"
$R eval --checkpoint /tmp/ck7 --pack /tmp/p --out /tmp/e_dyn --no-score --batch-size 256 --tasks grounding qa > /tmp/log_dyn 2>&1 &
d=$!
$R eval --checkpoint /tmp/ck7 --pack /tmp/p --out /tmp/e_uni --views uniform --no-dense-caption --no-score --batch-size 256 --tasks grounding qa > /tmp/log_uni 2>&1 &
u=$!
wait $d; echo "=== dyn done $(date +%T)"; touch /tmp/dyn.done
wait $u; echo "=== uni done $(date +%T)"; touch /tmp/uni.done
