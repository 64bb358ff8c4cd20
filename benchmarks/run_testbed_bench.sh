#!/usr/bin/env bash
# The testbed benchmark of docs/benchmarks.md: every method, 200 held-out problems x 3 sampling seeds at
# temperature 0.6, on the shipped testbed model and draft.  Two shards run side by side (one per core,
# one torch thread each; all methods of a question run in the same process, so their latencies compare),
# then a last run writes summary.json / summary.md / plots.  Rerunning resumes.
#   benchmarks/run_testbed_bench.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/testbed}
TB=${TB:-src/specexit/assets/testbed}  # another target: TB=DIR
DRAFT=${DRAFT:-src/specexit/assets/testbed-draft}  # another draft: DRAFT=DIR
METHODS=${METHODS:-"vanilla,spec,specexit,specexit[smoothing=none,progress=off,remain=off,confidence=0.5],specexit[smoothing=none,progress=off,remain=off,confidence=0.4],specexit[readout=boundary,smoothing=none,progress=off,remain=off,confidence=0.5],budget:96,probe,nothink"}
ARGS=(--target "$TB" --draft "$DRAFT" --dataset testbed:200 --methods "$METHODS" --seeds 0,1,2
      --temperature 0.6 --max-new-tokens 768 --tree 16,5,4 --out "$OUT")
NSHARDS=${NSHARDS:-2}
mkdir -p "$OUT"
pids=()
for ((k = 0; k < NSHARDS; k++)); do
    specexit --threads 1 bench "${ARGS[@]}" --shard "$k/$NSHARDS" --no-progress > "$OUT.shard$k.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
specexit --threads 1 bench "${ARGS[@]}"
