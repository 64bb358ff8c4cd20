#!/usr/bin/env bash
# Trains the SpecExit draft of the testbed model end to end and measures it (docs/training.md, section 6).
#   benchmarks/train_testbed_draft.sh [TESTBED_DIR] [OUT_DIR]
# Defaults: the shipped testbed (src/specexit/assets/testbed) and runs/testbed-draft.  Every stage resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
TB=${1:-src/specexit/assets/testbed}
OUT=${2:-runs/testbed-draft}
N_PROMPTS=${N_PROMPTS:-1500}
STEPS=${STEPS:-700}  # the shipped draft (pipeline.json)
LR=${LR:-1e-3}
EXTRA=${EXTRA:-}  # more `specexit train all` options, e.g. EXTRA="--confidence-confirm 1"
mkdir -p "$OUT"
specexit testbed data --split train --seed 1 --n "$N_PROMPTS" --out "$OUT/prompts.jsonl"
specexit --threads 2 train all --target "$TB" --prompts "$OUT/prompts.jsonl" --out "$OUT" \
    --max-new-tokens 768 --temperature 0.6 --samples 1 --batch-size 32 \
    --max-steps "$STEPS" --batch 8 --lr "$LR" --draft-vocab 32000 --ckpt-every 100 --eval-every 350 $EXTRA
# acceptance length with the engine on held-out problems (test split), tree 60 and a CPU-sized tree
[ "${SKIP_ACCEPT:-0}" = 1 ] && exit 0
specexit --threads 2 bench --target "$TB" --draft "$OUT/draft" --dataset testbed:200 --methods spec \
    --max-new-tokens 768 --tree 60,6,10 --out "$OUT/accept-tree60" --no-plots
specexit --threads 2 bench --target "$TB" --draft "$OUT/draft" --dataset testbed:200 --methods spec \
    --max-new-tokens 768 --tree 16,5,4 --out "$OUT/accept-tree16" --no-plots
