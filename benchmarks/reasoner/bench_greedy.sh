#!/usr/bin/env bash
# The reasoning model's greedy benchmark (docs/reasoner.md "A greedy benchmark"): under greedy decoding
# spec's output is the target's own and an exit method's output is the same text up to its exit, so the
# latency ratios and the accuracy differences are paired per question (T = 0.6 outputs differ by sampling).
# Every 8th held-out problem (42); methods: spec, the shipped calibrated rule, the draft's confidence
# confirmed by two agreeing trial answers (chosen on the second calibration pool, a tuning split), a boundary
# budget and the DEER probe at about that rule's cut (also chosen there), nothink; vanilla on every 4th of
# them (11: its speed per token against spec's, on the same outputs).  Two shards, one core and one torch
# thread each; all methods of a question run in one process, so their latencies compare.  ~65 minutes.
#   benchmarks/reasoner/bench_greedy.sh [OUT_DIR]
# (the eighth session ran METHODS="spec,calibrated,$AGREE,boundary-budget:320" and stopped after 34 problems:
#  2026-12-07-eighth/; the ninth ran it all, with trial answers verified against the previous one)
set -euo pipefail
cd "$(dirname "$0")/../.."
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
D=src/specexit/assets/qwen2.5-coder-0.5b-think-draft
OUT=${1:-benchmarks/results/reasoner/bench-greedy}
E=runs/think-eval
AGREE="specexit[confidence=0.5,progress=off,remain=off,smoothing=none,readout=boundary,min=32,agree=2,agree_tokens=16]"
METHODS=${METHODS:-"spec,calibrated,$AGREE,boundary-budget:320,probe[threshold=0.995,tokens=16,min=32],nothink"}
python - <<'PY'
lines = open("runs/think-eval/heldout.jsonl").read().splitlines()[::8]
open("runs/think-eval/heldout-greedy.jsonl", "w").write("\n".join(lines) + "\n")
open("runs/think-eval/heldout-greedy-vanilla.jsonl", "w").write("\n".join(lines[::4]) + "\n")
PY
export OMP_WAIT_POLICY=PASSIVE
# measure the round costs --tree auto plans with (1 thread) once, before the shards would both measure them
specexit --threads 1 bench --target "$M" --draft $D --dataset $E/heldout-greedy.jsonl --limit 1 --methods spec \
    --max-new-tokens 4 --dtype bfloat16 --out "$OUT/warm-up" --no-progress --no-plots > /dev/null
rm -rf "$OUT/warm-up"
shards() {  # $1: dataset file, $2: methods, $3: out folder
  args=(bench --target "$M" --draft $D --dataset "$1" --methods "$2" --seeds 0 --temperature 0
        --max-new-tokens 1536 --tree auto --dtype bfloat16 --out "$3" --no-progress)
  taskset -c 0 specexit --threads 1 "${args[@]}" --shard 0/2 &
  taskset -c 1 specexit --threads 1 "${args[@]}" --shard 1/2
  wait
  specexit "${args[@]}" --report-only
}
shards $E/heldout-greedy.jsonl "$METHODS" "$OUT/heldout"
shards $E/heldout-greedy-vanilla.jsonl "vanilla,spec" "$OUT/heldout-vanilla"
