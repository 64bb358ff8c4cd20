#!/usr/bin/env bash
# CPU scaling of draft training (docs/training.md §7): the same global batch with 1 process x 2 threads
# and with 2 DDP processes (torchrun, gloo) x 1 thread each; prints seconds per step.
#   benchmarks/ddp_scaling.sh PIPELINE_DIR TARGET_DIR [STEPS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1; TARGET=$2; STEPS=${3:-30}; BATCH=${4:-8}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ARGS=(--target "$TARGET" --max-steps "$STEPS" --batch "$BATCH" --lr 1e-3 --eval-every 100000 --ckpt-every 100000
      --no-progress)
for run in p1 p2; do
    mkdir -p "$WORK/$run"
    cp "$SRC"/labels.jsonl "$SRC"/traces.jsonl "$SRC"/vocab.json "$WORK/$run/"
done
t0=$(date +%s.%N)
specexit --threads 2 train draft --out "$WORK/p1" "${ARGS[@]}" > /dev/null
t1=$(date +%s.%N)
OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m specexit.cli --threads 1 train draft --out "$WORK/p2" \
    "${ARGS[@]}" > /dev/null 2>&1
t2=$(date +%s.%N)
for run in p1 p2; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], round(d['wall_s'] / d['steps'], 3), 's/step in the training loop')" \
        "$WORK/$run/train_summary.json" "$run"
done
echo "wall incl. start-up: p1 $(echo "$t1 - $t0" | bc) s, p2 $(echo "$t2 - $t1" | bc) s ($STEPS steps, global batch $BATCH)"
