#!/usr/bin/env bash
# Rebuilds the shipped testbed assets from nothing and measures them (docs/testbed.md, docs/training.md §6):
#   1. trains the testbed target from scratch          -> runs/testbed/target        (resumes)
#   2. evaluates it (accuracy with/without thinking, overthinking, forced-exit probes) + plots
#   3. trains its SpecExit draft with the training pipeline (benchmarks/train_testbed_draft.sh)
#   4. copies both into src/specexit/assets/{testbed,testbed-draft}
#   5. runs the demo at full size (200 held-out problems)
# Every stage resumes; rerunning after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/testbed}
THREADS=${THREADS:-2}
ASSETS=src/specexit/assets
mkdir -p "$RUN" docs/img/testbed

specexit testbed train --preset full --out "$RUN/target" --threads "$THREADS"
specexit testbed eval --model "$RUN/target" --n 200 --threads "$THREADS" --report "$RUN/eval.json"
python benchmarks/plot_testbed.py "$RUN/eval.json" docs/img/testbed

benchmarks/train_testbed_draft.sh "$RUN/target" "$RUN/draft-pipeline"

mkdir -p "$ASSETS/testbed" "$ASSETS/testbed-draft"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json \
    chat_template.jinja testbed.json; do
    cp "$RUN/target/$f" "$ASSETS/testbed/"
done
cp "$RUN/draft-pipeline/draft/"* "$ASSETS/testbed-draft/"
cp "$RUN/draft-pipeline/train_summary.json" "$ASSETS/testbed-draft/train_summary.json"

specexit --threads 1 demo --problems 200 --save "$RUN/demo200.json" | tee "$RUN/demo200.txt"
