#!/usr/bin/env bash
# Side by side on the testbed (docs/vllm.md §6): vLLM plain / EAGLE-3 / SpecExit at batch 1, 4 and 16,
# and this package's PyTorch engine (batch 1), same problems, greedy, one thread each.
#   VLLM_PY=/work/vllm-venv/bin/python TORCH_PY=.venv/bin/python benchmarks/vllm_compare.sh [N] [OUT]
# then: python benchmarks/summarize_vllm_compare.py OUT
set -euo pipefail
N=${1:-100}
OUT=${2:-benchmarks/results/vllm-testbed}
VLLM_PY=${VLLM_PY:-/work/vllm-venv/bin/python}
TORCH_PY=${TORCH_PY:-.venv/bin/python}
TARGET=src/specexit/assets/testbed
DRAFT=src/specexit/assets/testbed-draft
EXIT="specexit[readout=boundary,smoothing=none,progress=off,remain=off,confidence=0.5]"
METHODS="vanilla,spec,$EXIT"
COMMON=(--target "$TARGET" --draft "$DRAFT" --dataset "testbed:$N" --methods "$METHODS" --max-new-tokens 768
        --no-plots --no-progress)
export OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1
mkdir -p "$OUT"
for B in 1 4 16; do
  echo "== vLLM batch $B"
  "$VLLM_PY" -m specexit bench --backend vllm --batch-size "$B" --num-speculative-tokens 5 "${COMMON[@]}" \
      --out "$OUT/vllm-b$B" > "$OUT/vllm-b$B.log" 2>&1
done
echo "== PyTorch engine"
"$TORCH_PY" -m specexit --threads 1 bench "${COMMON[@]}" --out "$OUT/torch" > "$OUT/torch.log" 2>&1
echo done
