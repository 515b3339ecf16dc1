#!/usr/bin/env bash
# planning and dialogue predictions of checkpoint-7 and of the 28-step final, on the GPU machine.
set -euo pipefail
T=$1
cd "$T"
export PYTHONPATH=/tmp/site:$T HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
R="python3 -m r1_ros.cli"
while [ ! -f /tmp/d.done ]; do sleep 2; done
while [ ! -f /tmp/site/.ready ]; do sleep 2; done
echo "=== pack $(date +%T)"
$R train pack --recipe config/train/nano.yaml --data /tmp/d --detector /tmp/ck7 --out /tmp/p --workers 14 > /tmp/log_pack 2>&1
echo "=== eval $(date +%T)"
for c in ck7 final; do
  $R eval --checkpoint /tmp/$c --pack /tmp/p --out /tmp/e_$c --no-score --batch-size 256 --tasks planning dialogue --no-dense-caption > /tmp/log_$c 2>&1 &
done
wait
echo "=== done $(date +%T)"; touch /tmp/pd.done
