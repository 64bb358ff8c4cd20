#!/usr/bin/env bash
# SpecExit draft for the thinking model qwen2.5-coder-0.5b-think (docs/reasoner.md "Its draft").  Every stage
# resumes.   benchmarks/reasoner/train_think_draft.sh [OUT_DIR]
# Needs `specexit models get qwen2.5-coder-0.5b-think`, reasoning-gym, and the vLLM venv of docs/vllm.md
# (VLLM_PY, default /work/vllm-venv/bin/python).
# On 2 cores, vLLM computes on core 0 and reserves core 1 for its engine loop; a 1-thread torch job pinned to
# core 1 costs it ~5% throughput (measured), so the label / feature / training stages run there while the
# evaluation traces of docs/reasoner.md are generated.  Alone on the machine, use 2 threads.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/think-draft}
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
VLLM_PY=${VLLM_PY:-/work/vllm-venv/bin/python}
PIN=${PIN:-"taskset -c 1"}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
# 1. prompts: the training split, minus every problem the thinking model was fine-tuned on (rounds 1-2 of
#    docs/reasoner.md use the first 320 testbed and 30 + 30 reasoning-gym problems): 240 fresh problems
python - "$OUT/prompts.jsonl" <<'PY'
import sys
from specexit.reasoner.problems import make_mix, write_problems
sft = {p.question for p in make_mix(320, 30, "train")}
write_problems(sys.argv[1], [p for p in make_mix(480, 70, "train") if p.question not in sft])
PY
# 2. the model's own outputs at T = 0.6 (the deployment temperature), up to 1,536 tokens
"$VLLM_PY" -m specexit train traces --target "$M" --prompts "$OUT/prompts.jsonl" --out "$OUT" --samples 1 \
    --temperature 0.6 --max-new-tokens 1536 --backend vllm --batch-size 32 --dtype bfloat16 --seed 0 --no-progress
# 3. labels against the gold answers (forced answers at every paragraph boundary, with their probe scores)
$PIN specexit --threads 1 train labels --target "$M" --out "$OUT" --dtype bfloat16 --label-reference gold \
    --probe-tokens 16 --no-progress
# 4. draft vocabulary, offline bf16 target features, the draft (MLP 1,024 wide, bf16: < 25 MB)
$PIN specexit --threads 1 train vocab --target "$M" --out "$OUT" --draft-vocab 4096
$PIN specexit --threads 1 train hidden --target "$M" --out "$OUT" --dtype bfloat16
# the shipped draft: 200 steps (the warm-up is 10% of them), then resumed to 400 at the same constant lr, as
# it was made (the second run came a session later, resuming from the step-200 checkpoint)
for STEPS in 200 400; do
  $PIN specexit --threads 1 train draft --target "$M" --out "$OUT" --features offline --max-steps "$STEPS" \
      --batch 4 --lr 5e-4 --ttt-steps 4 --max-len 1024 --ckpt-every 20 --eval-every 50 --draft-vocab 4096 \
      --draft-intermediate 1024 --save-dtype bfloat16 --no-progress
done
