#!/usr/bin/env bash
# SpecExit draft for Qwen2.5-Coder-0.5B-Instruct (a chat model without think tokens: its reasoning span
# is implicit and an exit forces the answer trigger; docs/zoo.md).  Every stage resumes.
#   benchmarks/zoo/train_qwen05_draft.sh [OUT_DIR]
# Needs `specexit models get qwen2.5-coder-0.5b --install`, reasoning-gym, and the vLLM venv of
# docs/vllm.md for the traces (VLLM_PY, default /work/vllm-venv/bin/python; TRACE_BACKEND=hf without it).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/zoo/qwen05-pipeline}
TARGET=${TARGET:-$(specexit models get qwen2.5-coder-0.5b)}
VLLM_PY=${VLLM_PY:-/work/vllm-venv/bin/python}
TRACE_BACKEND=${TRACE_BACKEND:-vllm}
N_PROMPTS=${N_PROMPTS:-360}
N_TESTBED=${N_TESTBED:-320}
STEPS=${STEPS:-280}
DRAFT_VOCAB=${DRAFT_VOCAB:-4096}
DRAFT_INTERMEDIATE=${DRAFT_INTERMEDIATE:-1024}  # small enough to ship in bf16 (< 25 MB)
TRIGGER='The final answer is \boxed{'
mkdir -p "$OUT"
python benchmarks/zoo/make_train_prompts.py --n "$N_PROMPTS" --testbed "$N_TESTBED" --out "$OUT/prompts.jsonl"
# 1. the model's own greedy outputs (vLLM batches them: ~110 tokens/s on one core vs ~6 for one sequence)
if [ "$TRACE_BACKEND" = vllm ]; then TRACES=("$VLLM_PY" -m specexit); else TRACES=(specexit); fi
OMP_NUM_THREADS=2 VLLM_CPU_KVCACHE_SPACE=4 "${TRACES[@]}" train traces --target "$TARGET" --out "$OUT" \
    --prompts "$OUT/prompts.jsonl" --backend "$TRACE_BACKEND" --batch-size 32 --temperature 0 \
    --max-new-tokens 512 --dtype bfloat16 --answer-trigger "$TRIGGER"
# 2. labels: the model is right on few of these prompts, so a probe is labelled right when it gives the
#    trace's own final answer (the answer is settled there); probes need ~12 tokens after the trigger
torchrun --standalone --nproc_per_node 2 -m specexit.cli --threads 1 train labels --target "$TARGET" \
    --out "$OUT" --dtype bfloat16 --answer-trigger "$TRIGGER" --label-reference trace --probe-tokens 12 --no-progress
# 3. draft vocabulary, offline target features, the draft (2 DDP processes, one per core)
specexit train vocab --target "$TARGET" --out "$OUT" --draft-vocab "$DRAFT_VOCAB" --answer-trigger "$TRIGGER"
specexit --threads 2 train hidden --target "$TARGET" --out "$OUT" --dtype bfloat16 --answer-trigger "$TRIGGER"
torchrun --standalone --nproc_per_node 2 -m specexit.cli --threads 1 train draft --target "$TARGET" --out "$OUT" \
    --answer-trigger "$TRIGGER" --features offline --max-steps "$STEPS" --batch 8 --lr 5e-4 --ttt-steps 4 \
    --max-len 1024 --ckpt-every 40 --eval-every 80 --draft-vocab "$DRAFT_VOCAB" \
    --draft-intermediate "$DRAFT_INTERMEDIATE" --save-dtype bfloat16 --no-progress
