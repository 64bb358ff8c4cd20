#!/usr/bin/env bash
# The testbed's calibration pool and its shipped calibrated rule (docs/calibration.md).
# Problems: the testbed's test split, data seed 1 (a block disjoint from seed 0, which the benchmark and
# the demo use): the calibration data never touch the problems that are reported.  One trace per
# problem at T = 0.6, top-p 1.0 (the benchmark's sampling), gold-referenced probes at every boundary,
# the draft's signals there; then `specexit calibrate` at EPS = 1 point, delta = 0.1, installed beside the
# shipped draft, and the repeated-split check.  Every stage resumes; about 25 min on 2 cores.
#   benchmarks/calibration/testbed_pool.sh [OUT_DIR] [N]   (default runs/cal-testbed, 2000; not committed)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=src/specexit/assets/testbed
D=src/specexit/assets/testbed-draft
OUT=${1:-runs/cal-testbed}
N=${2:-2000}
R=benchmarks/results/calibration
mkdir -p "$OUT" "$R"
specexit testbed data --split test --seed 1 --n "$N" --out "$OUT/prompts.jsonl"
run2() { torchrun --standalone --nproc-per-node 2 "$(command -v specexit)" --threads 1 "$@"; }
run2 train traces --target $T --prompts "$OUT/prompts.jsonl" --out "$OUT" --samples 1 --temperature 0.6 \
    --top-p 1.0 --max-new-tokens 768 --batch-size 32 --no-progress
run2 train labels --target $T --out "$OUT" --label-reference gold --no-progress
specexit --threads 2 calibrate --target $T --draft $D --data "$OUT" --risk 0.01 --delta 0.1 --temperature 0.6 --top-p 1.0 \
    --out "$OUT/cal" --install --no-progress || [ $? -eq 1 ]  # 1: no rule certified (said on stdout)
cp "$OUT/cal/calibration.json" "$R/testbed_t06_calibration.json"
python benchmarks/calibration/splits.py "$OUT/cal/signals.jsonl" --eps 0.005,0.01,0.02,0.05 --delta 0.1 \
    --splits 20 --test-fraction 0.4 --json "$R/testbed_t06_splits.json"
python benchmarks/calibration/replay_check.py "$OUT/cal" --target $T --draft $D --n 300 \
    --json "$R/testbed_t06_replay_check.json"
