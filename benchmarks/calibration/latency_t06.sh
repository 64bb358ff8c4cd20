#!/usr/bin/env bash
# Latency of the shipped calibrated rule vs speculative decoding alone at T = 0.6 x 3 seeds (docs/calibration.md):
# the testbed's seed-0 test problems (never seen by calibration, which used seed 1), the demo's tree, fp32.
# Two shards run side by side on the 2 cores; about 15 minutes.
#   benchmarks/calibration/latency_t06.sh [N]   (default 100 problems)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100}
OUT=benchmarks/results/calibration/latency-t06
args=(bench --target src/specexit/assets/testbed --draft src/specexit/assets/testbed-draft --dataset "testbed:$N:0"
      --methods vanilla,spec,calibrated --seeds 0,1,2 --temperature 0.6 --tree 16,5,4 --dtype float32 --out "$OUT"
      --no-progress --no-plots)
OMP_WAIT_POLICY=PASSIVE specexit --threads 1 "${args[@]}" --shard 0/2 &
OMP_WAIT_POLICY=PASSIVE specexit --threads 1 "${args[@]}" --shard 1/2
wait
specexit bench "${args[@]}" --report-only
