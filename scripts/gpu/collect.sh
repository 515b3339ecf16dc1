#!/usr/bin/env bash
# Wait (up to $2 s) for the pipeline in $1 to finish, then copy what exists to $OUT:
# log, metrics, predictions, and each finished checkpoint as its own tarball (< 16 MiB each).
W=${1:-/tmp/nano}; WAIT=${2:-540}
end=$(( $(date +%s) + WAIT ))
while [ $(date +%s) -lt $end ] && ! grep -q "=== all done" "$W/log" 2>/dev/null && pgrep -f nano_pipeline.sh >/dev/null; do sleep 10; done
grep "===\|Error\|Traceback" "$W/log" | tail -20; tail -c 1500 "$W/log"
cp "$W/log" "$OUT/log.txt" 2>/dev/null
tar czf "$OUT/metrics.tgz" -C "$W" $(cd "$W" && ls -d run/*/metrics.jsonl run/*/recipe.yaml 2>/dev/null) 2>/dev/null
[ -d "$W/eval" ] && tar czf "$OUT/predictions.tgz" -C "$W" eval
for c in detector sft grpo; do
  d="$W/run/$c"; [ -f "$W/.done-$c" ] || continue
  if [ "$c" = detector ]; then tar czf "$OUT/detector.tgz" -C "$W/run" detector/encoder_pretrained.safetensors
  else tar czf "$OUT/$c.tgz" -C "$W/run" "$c/final"; fi
done
ls -la "$OUT"
