#!/usr/bin/env bash
# The matched-accuracy oracle of the shipped testbed at T = 0.6 on test-split traces (docs/testbed.md):
# 3 sampled traces for each of the benchmark's 200 held-out problems (testbed:200, top-p 1.0 as in the
# benchmark), forced-answer probes at every paragraph boundary scored against the gold answer, then
# benchmarks/matched_oracle.py.  About 8 minutes on 1 core; every stage resumes.
#   benchmarks/testbed_oracle.sh [OUT_DIR]   (default runs/oracle-test; the traces are not committed)
set -euo pipefail
cd "$(dirname "$0")/.."
T=src/specexit/assets/testbed
OUT=${1:-runs/oracle-test}
mkdir -p "$OUT"
specexit testbed data --split test --seed 0 --n 200 --out "$OUT/prompts.jsonl"
specexit --threads 1 train traces --target $T --prompts "$OUT/prompts.jsonl" --out "$OUT" --samples 3 \
    --temperature 0.6 --top-p 1.0 --max-new-tokens 768 --batch-size 32 --no-progress
specexit --threads 1 train labels --target $T --out "$OUT" --label-reference gold --no-progress
python benchmarks/matched_oracle.py "$OUT" --json benchmarks/results/testbed-oracle/oracle_t06_test.json
