#!/usr/bin/env bash
# Reproduces the tables of docs/performance.md (about 10 minutes on 2 cores; nothing else running).
# Needs the zoo model: specexit models get smollm2-135m --install
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/round_overhead
mkdir -p "$out"
run() { name=$1; shift; python benchmarks/round_overhead.py "$@" --out "$out/$name.json" > /dev/null; echo "wrote $out/$name.json"; }
run tiny-fp32 --model tiny --rounds 30 --repeats 3
run smollm2-fp32 --model smollm2-135m --rounds 20 --repeats 3 --dtype float32
run smollm2-fp32-draftbf16 --model smollm2-135m --rounds 20 --repeats 3 --dtype float32 --draft-dtype bfloat16
run smollm2-bf16 --model smollm2-135m --rounds 20 --repeats 3 --dtype bfloat16
run smollm2-fp32-draftbf16-ctx2k --model smollm2-135m --rounds 10 --repeats 3 --dtype float32 --draft-dtype bfloat16 --context 2048
run smollm2-fp32-draftbf16-vocab8k --model smollm2-135m --rounds 20 --repeats 3 --dtype float32 --draft-dtype bfloat16 --draft-vocab 8192
python benchmarks/summarize_round_overhead.py "$out"
