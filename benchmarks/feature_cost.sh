#!/usr/bin/env bash
# Online vs offline target features for draft training (docs/training.md §4/§6): the cost of writing the
# hidden-state shards once, their size, and the seconds per training step either way.
#   benchmarks/feature_cost.sh PIPELINE_DIR TARGET_DIR [STEPS] [THREADS]
# PIPELINE_DIR must hold traces.jsonl, labels.jsonl and vocab.json (e.g. from `specexit train all`); it is
# copied, never modified.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1; TARGET=$2; STEPS=${3:-40}; THREADS=${4:-1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for mode in online offline; do
    mkdir -p "$WORK/$mode"
    cp "$SRC"/labels.jsonl "$SRC"/traces.jsonl "$SRC"/vocab.json "$WORK/$mode/"
done
t0=$(date +%s.%N)
specexit --threads "$THREADS" train hidden --target "$TARGET" --out "$WORK/offline" --no-progress > /dev/null
t1=$(date +%s.%N)
echo "hidden shards: $(echo "$t1 - $t0" | bc) s, $(du -sh "$WORK/offline/hidden" | cut -f1) on disk"
for mode in online offline; do
    t0=$(date +%s.%N)
    specexit --threads "$THREADS" train draft --target "$TARGET" --out "$WORK/$mode" --features "$mode" \
        --max-steps "$STEPS" --batch 8 --lr 1e-3 --eval-every 100000 --ckpt-every 100000 --no-progress > /dev/null
    t1=$(date +%s.%N)
    echo "$mode: $STEPS steps in $(echo "$t1 - $t0" | bc) s (including start-up)"
done
