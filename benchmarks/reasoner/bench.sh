#!/usr/bin/env bash
# The reasoning model's benchmark (docs/benchmarks.md "The reasoning model"): every method through this
# package's engine on a subset of each dataset, T = 0.6, top-p 0.95 (the sampling of the evaluation outputs),
# seed 0; latency per question, side by side.
#   BUDGET=N benchmarks/reasoner/bench.sh [OUT_DIR]      (BUDGET: the token count of budget:N and
#   boundary-budget:N, chosen to match the calibrated rule's cut in exit_replay_heldout.json)
# Accuracy at scale comes from the replay over all labelled outputs (calibrate.sh); this run measures what a
# replay cannot: wall time, acceptance, and the methods that generate (paper defaults, probe, budgets, nothink).
# Two shards, one per core with one torch thread each; all methods of a question run in the same process, so
# their latencies compare.  Subsets: every 56th held-out problem (6: 5 testbed, 1 chain_sum) and every
# 20th gsm8k100 problem (5); DATASETS="heldout" runs the first only.
set -euo pipefail
cd "$(dirname "$0")/../.."
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
D=src/specexit/assets/qwen2.5-coder-0.5b-think-draft
OUT=${1:-benchmarks/results/reasoner/bench}
BUDGET=${BUDGET:?give BUDGET=N}
METHODS=${METHODS:-"vanilla,spec,specexit,calibrated,budget:$BUDGET,boundary-budget:$BUDGET,probe,nothink"}
E=runs/think-eval
python - <<'PY'
import json
for name, step in (("heldout", 56), ("gsm8k100", 20)):
    lines = open(f"runs/think-eval/{name}.jsonl").read().splitlines()
    open(f"runs/think-eval/{name}-bench.jsonl", "w").write("\n".join(lines[::step]) + "\n")
PY
export OMP_WAIT_POLICY=PASSIVE
# measure the round costs --tree auto plans with (1 thread) once, before the shards would both measure them
specexit --threads 1 bench --target "$M" --draft $D --dataset $E/heldout-bench.jsonl --limit 1 --methods spec \
    --max-new-tokens 4 --dtype bfloat16 --out "$OUT/warm-up" --no-progress --no-plots > /dev/null
rm -rf "$OUT/warm-up"
for ds in ${DATASETS:-heldout gsm8k100}; do
  args=(bench --target "$M" --draft $D --dataset $E/$ds-bench.jsonl --methods "$METHODS" --seeds 0
        --temperature 0.6 --top-p 0.95 --max-new-tokens 1536 --tree auto --dtype bfloat16 --out "$OUT/$ds" --no-progress)
  taskset -c 0 specexit --threads 1 "${args[@]}" --shard 0/2 &
  taskset -c 1 specexit --threads 1 "${args[@]}" --shard 1/2
  wait
  specexit "${args[@]}" --report-only
done
