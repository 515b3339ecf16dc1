#!/usr/bin/env bash
# One GPU machine: GRPO from an SFT checkpoint with the held-out predictions of the result
# (dynamic and uniform views side by side), and, on the same GPU meanwhile, one SFT variant from
# the same detector with its held-out predictions. The wheels may still be arriving when this
# starts: data and packs come first; the variant's SFT waits for $READY_LM (the backbone), GRPO for
# $READY_ALL (backbone and the semantic reward's sentence encoder).
#   SFT_FROM=ckpt VARIANT_SETS="model.object_order=class" READY_LM=... READY_ALL=... \
#     scripts/gpu/grpo_and_variant.sh /tmp/G /tmp/C
set -euo pipefail
G=${1:?GRPO workdir}; C=${2:?variant workdir}
: "${SFT_FROM:?SFT checkpoint}" "${VARIANT_SETS:?recipe overrides of the variant}" "${READY_LM:?}" "${READY_ALL:?}"
# (Its first run on 2026-11-25 gave the variant SFT_FROM too, so both ran GRPO and ran out of GPU
# memory; the variant now clears it.)
mkdir -p "$G" "$C"
grpo() { env SFT_FROM="$SFT_FROM" WAIT_FOR="$READY_ALL" WORKERS=7 scripts/gpu/nano_pipeline.sh "$G"; }
variant() {
  env -u SFT_FROM SETS="$VARIANT_SETS" DETECTOR_FROM="$SFT_FROM" STOP_AFTER=eval_sft WAIT_FOR="$READY_LM" WORKERS=7 \
      scripts/gpu/nano_pipeline.sh "$C"
}
grpo > "$G.log" 2>&1 &
variant > "$C.log" 2>&1 &
wait
echo "=== done $(date +%T)"
