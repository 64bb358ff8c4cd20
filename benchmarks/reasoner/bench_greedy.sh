#!/usr/bin/env bash
# The reasoning model's greedy benchmark (docs/reasoner.md "A greedy benchmark"): under greedy decoding
# spec's output is the target's own and an exit method's output is the same text up to its exit, so the
# latency ratios and the accuracy differences are paired per question (T = 0.6 outputs differ by sampling).
# Every 8th held-out problem (42) or every 4th of gsm8k100 (25); methods: spec, the shipped calibrated rule,
# the draft's confidence confirmed by two agreeing trial answers (chosen on the second calibration pool, a
# tuning split), a boundary budget and the DEER probe at about that rule's cut (also chosen there), nothink;
# vanilla on every 4th of them (its speed per token against spec's, on the same outputs).  Two shards, one
# core and one torch thread each; all methods of a question run in one process, so their latencies compare.
# ~65 minutes for held-out.
#   [DATA=gsm8k100] benchmarks/reasoner/bench_greedy.sh [OUT_DIR]
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
# DATA=heldout (runs/think-eval/heldout.jsonl, the prompt file benchmarks/reasoner/evaluate.sh writes) or
# gsm8k100 (the shipped GSM8K test problems); every EVERY-th problem of it (8 for held-out: 42; 4 for gsm8k100: 25)
DATA=${DATA:-heldout}
case $DATA in
  heldout) SRC=$E/heldout.jsonl; EVERY=${EVERY:-8} ;;
  gsm8k100) SRC=src/specexit/assets/datasets/gsm8k100.jsonl; EVERY=${EVERY:-4} ;;
  *) echo "DATA=$DATA: heldout or gsm8k100" >&2; exit 2 ;;
esac
python - "$SRC" "$E/$DATA-greedy.jsonl" "$EVERY" <<'PY'
import sys
src, dst, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(src).read().splitlines()[::every]
open(dst, "w").write("\n".join(lines) + "\n")
open(dst.replace(".jsonl", "-vanilla.jsonl"), "w").write("\n".join(lines[::4]) + "\n")
PY
export OMP_WAIT_POLICY=PASSIVE
# measure the round costs --tree auto plans with (1 thread) once, before the shards would both measure them
specexit --threads 1 bench --target "$M" --draft $D --dataset $E/$DATA-greedy.jsonl --limit 1 --methods spec \
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
shards $E/$DATA-greedy.jsonl "$METHODS" "$OUT/$DATA"
shards $E/$DATA-greedy-vanilla.jsonl "vanilla,spec" "$OUT/$DATA-vanilla"
