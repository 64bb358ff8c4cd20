#!/usr/bin/env bash
# A second calibration pool for the thinking model (docs/calibration.md "The reasoning model, seventh
# session"): 600 held-out-generator problems that no earlier stage saw (make_mix(900, 130, "heldout") minus
# make_mix(420, 70, "heldout"), which holds the reported held-out problems, the round-choosing ones and the
# first tuning pool; the held-out filter already drops every training question).  Three chunks of 200, each:
# outputs at T = 0.6 (evaluate.sh's settings, vLLM), forced-answer labels against gold, and the shipped
# draft's signals at every boundary.  Every stage resumes; a chunk's labels run on core 1 while vLLM writes
# the next chunk.
#   benchmarks/reasoner/calibration_pool.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/think-pool}
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
D=src/specexit/assets/qwen2.5-coder-0.5b-think-draft
VLLM_PY=${VLLM_PY:-${SPECEXIT_CACHE:-$HOME/.cache/specexit}/vllm-venv/bin/python}
PIN=${PIN:-"taskset -c 1"}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
if [ ! -f "$OUT/chunk2.jsonl" ]; then
  python - "$OUT" <<'PY'
import sys
from specexit.reasoner.problems import make_mix, write_problems
used = {p.question for p in make_mix(420, 70, "heldout")}
new = [p for p in make_mix(900, 130, "heldout") if p.question not in used]
for k in range(3):
    write_problems(f"{sys.argv[1]}/chunk{k}.jsonl", new[k::3])  # every chunk holds the same mix
PY
fi
label_and_record() {  # $1: a chunk's traces folder
  $PIN specexit --threads 1 train labels --target "$M" --out "$1" --dtype bfloat16 --label-reference gold \
      --probe-tokens 16 --no-progress
  [ -f "$1/signals.jsonl.done" ] && return 0
  $PIN python - "$M" $D "$1" <<'PY'
import sys
from pathlib import Path
import torch  # record_signals writes its file whole: the marker says it finished
from specexit.calibration.record import record_signals
from specexit.engine import SpecExitGenerator
torch.set_num_threads(1)
gen = SpecExitGenerator.from_pretrained(sys.argv[1], sys.argv[2], dtype="bfloat16")
print(record_signals(gen, sys.argv[3], f"{sys.argv[3]}/signals.jsonl", progress=False))
Path(f"{sys.argv[3]}/signals.jsonl.done").touch()
PY
}
for k in 0 1 2; do
  "$VLLM_PY" -m specexit train traces --target "$M" --prompts "$OUT/chunk$k.jsonl" --out "$OUT/chunk$k" \
      --samples 1 --temperature 0.6 --max-new-tokens 1536 --backend vllm --batch-size 32 --dtype bfloat16 \
      --seed 0 --no-progress
  if [ $k -gt 0 ]; then wait "$post"; fi  # one post-processing job at a time beside vLLM
  label_and_record "$OUT/chunk$k" > "$OUT/chunk$k.post.log" 2>&1 &
  post=$!
done
wait "$post"
echo "calibration pool done: $OUT"
