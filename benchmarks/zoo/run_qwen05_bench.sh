#!/usr/bin/env bash
# Qwen2.5-Coder-0.5B-Instruct on GSM8K's 100 test problems, every method (docs/benchmarks.md): a real
# pretrained model without think tokens, so the reasoning span is implicit and an exit forces the answer
# trigger (docs/zoo.md).  Greedy, bf16, two shards side by side (one per core, one torch thread each; all
# methods of a question run in the same process), then a last run writes the report.  Rerunning resumes.
#   benchmarks/zoo/run_qwen05_bench.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-benchmarks/results/qwen05-gsm8k100}
TARGET=${TARGET:-$(specexit models get qwen2.5-coder-0.5b | tail -1)}
DRAFT=${DRAFT:-$(specexit models draft qwen2.5-coder-0.5b)}  # shipped; made by benchmarks/zoo/train_qwen05_draft.sh
METHODS=${METHODS:-"vanilla,spec,specexit,budget:128,probe,nothink"}  # specexit: the paper's exit defaults
TREE=${TREE:-chain:4}  # picked by benchmarks/zoo/choose_tree.py (docs/zoo.md)
ARGS=(--target "$TARGET" --draft "$DRAFT" --dataset gsm8k100 --methods "$METHODS" --temperature 0
      --max-new-tokens 768 --dtype bfloat16 --tree "$TREE" --answer-trigger 'The final answer is \boxed{'
      --out "$OUT")
NSHARDS=${NSHARDS:-2}
mkdir -p "$OUT"
pids=()
for ((k = 0; k < NSHARDS; k++)); do
    specexit --threads 1 bench "${ARGS[@]}" --shard "$k/$NSHARDS" --no-progress > "$OUT.shard$k.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
specexit --threads 1 bench "${ARGS[@]}"
