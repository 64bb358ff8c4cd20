#!/usr/bin/env bash
# What the thinking model is (docs/reasoner.md "Evaluation"): its outputs at T = 0.6 with thinking and with
# `nothink`, on 336 generated held-out problems and on GSM8K's 100 test problems; the forced-answer labels of
# the thinking outputs (oracle, first right answer); then evaluate.py and exit_replay.py.  Every stage resumes.
#   benchmarks/reasoner/evaluate.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/think-eval}
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
VLLM_PY=${VLLM_PY:-/work/vllm-venv/bin/python}
PIN=${PIN:-"taskset -c 1"}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
# held-out: the held-out split (other seeds than training), minus the 64 problems that chose between the
# fine-tuning rounds (their tuning split: the first 48 testbed and 8 + 8 reasoning-gym problems)
python - "$OUT/heldout.jsonl" <<'PY'
import sys
from specexit.reasoner.problems import make_mix, write_problems
tuning = {p.question for p in make_mix(48, 8, "heldout")}
write_problems(sys.argv[1], [p for p in make_mix(300, 50, "heldout") if p.question not in tuning])
PY
python benchmarks/zoo/export_dataset.py gsm8k100 "$OUT/gsm8k100.jsonl"
COMMON=(--samples 1 --temperature 0.6 --max-new-tokens 1536 --backend vllm --batch-size 32 --dtype bfloat16
        --seed 0 --no-progress)
for ds in heldout gsm8k100; do
  "$VLLM_PY" -m specexit train traces --target "$M" --prompts "$OUT/$ds.jsonl" --out "$OUT/$ds-think" "${COMMON[@]}"
  "$VLLM_PY" -m specexit train traces --target "$M" --prompts "$OUT/$ds.jsonl" --out "$OUT/$ds-nothink" "${COMMON[@]}" \
      --no-thinking
  $PIN specexit --threads 1 train labels --target "$M" --out "$OUT/$ds-think" --dtype bfloat16 \
      --label-reference gold --probe-tokens 16 --no-progress
done
python benchmarks/reasoner/evaluate.py --dataset heldout "$OUT/heldout-think" "$OUT/heldout-nothink" \
    --dataset gsm8k100 "$OUT/gsm8k100-think" "$OUT/gsm8k100-nothink" --prompts "$OUT/heldout.jsonl" \
    --json benchmarks/results/reasoner/eval.json --plots benchmarks/results/reasoner/eval
for ds in heldout gsm8k100; do
  python benchmarks/reasoner/exit_replay.py "$OUT/$ds-think" --json "benchmarks/results/reasoner/exit_replay_$ds.json"
done
