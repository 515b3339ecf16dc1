#!/usr/bin/env bash
# Two SFT variants side by side on one GPU machine (an SFT step leaves the GPU
# partly idle, so two runs share an H100 well), both from the shipped R1-nano's detector (no detector stage):
#   A: the default 100 + 20 rooms, the recipe as it is;
#   B: 300 training rooms (the same 20 held-out rooms, `--val-from 100`), SFT steps B_STEPS.
# Each stops after its SFT predictions on the held-out split. The backbone wheels may still be
# arriving when this starts: data and packs are built first, SFT waits for the file $READY.
#   READY=/tmp/site/.ready scripts/gpu/sft_variants.sh /tmp/A /tmp/B
set -euo pipefail
A=${1:?workdir A}; B=${2:?workdir B}
READY=${READY:?the file that says the wheels are installed}
B_STEPS=${B_STEPS:-1200}
DET=r1_core/assets/r1-nano
run() {   # workdir, then env settings for nano_pipeline.sh
  local w=$1; shift
  mkdir -p "$w"
  env "$@" STOP_AFTER=eval_sft DETECTOR_FROM=$DET WAIT_FOR="$READY" WORKERS=7 scripts/gpu/nano_pipeline.sh "$w"
}
run "$A" SCENES=100 > "$A.log" 2>&1 &
run "$B" SCENES=300 VAL_FROM=100 SETS="sft.steps=$B_STEPS" > "$B.log" 2>&1 &
wait
echo "=== variants done $(date +%T)"
