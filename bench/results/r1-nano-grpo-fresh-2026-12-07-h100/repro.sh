#!/usr/bin/env bash
# Check that the documented command retrains the shipped R1-nano's GRPO stage (g-14) the same way,
# within what this session's GPU time allowed: the same 14-step recipe from the committed SFT
# checkpoint (/tmp/sft), stopped once step 5 is logged; its logged rewards at steps 0 and 5 are
# compared with the original run's (grpo_g_metrics.jsonl). One held-out room instead of 80 (the
# training rooms and GRPO's rooms are the same either way; the held-out split is not used by GRPO).
#   repro.sh TREE_COPY      (weights installed in /tmp/site by scripts/gpu/weights_wheels.sh install)
set -euo pipefail
T=$1
cd "$T"
export PYTHONPATH=/tmp/site:$T
SCENES=100 VAL_SCENES=1 SFT_FROM=/tmp/sft GRPO_ROOMS=400-499 WAIT_FOR=/tmp/site/.ready STOP_AFTER=grpo \
  SETS="grpo.steps=14" scripts/gpu/nano_pipeline.sh /tmp/A > /tmp/pipe.log 2>&1 &
p=$!
m=/tmp/A/run/grpo/metrics.jsonl
until grep -q '"step": 5,' $m 2>/dev/null; do sleep 2; kill -0 $p 2>/dev/null || exit 1; done
echo "step 5 logged $(date +%T)" >> /tmp/pipe.log
kill -- -$$ 2>/dev/null || true
