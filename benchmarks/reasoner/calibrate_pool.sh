#!/usr/bin/env bash
# The thinking model's calibrated exit from the second calibration pool (calibration_pool.sh): the finished
# chunks merged into one pipeline folder (prompt ids moved 1,000 apart per chunk), `specexit calibrate` at
# EPS = 1, 2, then 5 points (the first certified is installed beside the shipped draft), the rules replayed
# (exit_replay.py: budgets, the DEER probe, answer agreement, the draft's confidence, the policy), and the
# repeated random splits.  Seconds: every signal is recorded already.
#   benchmarks/reasoner/calibrate_pool.sh [POOL_DIR] [CHUNKS]    (default runs/think-pool, "0 1 2")
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${1:-runs/think-pool}
CHUNKS=${2:-"0 1 2"}
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
D=src/specexit/assets/qwen2.5-coder-0.5b-think-draft
R=benchmarks/results/reasoner/pool
TAG=pool$(echo "$CHUNKS" | tr -d ' ')
mkdir -p "$R"
python - "$P" "$P/$TAG" $CHUNKS <<'PY'
import json, shutil, sys
from pathlib import Path
pool, out, chunks = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
out.mkdir(exist_ok=True)
for name in ("traces.jsonl", "labels.jsonl", "signals.jsonl"):
    with (out / name).open("w") as f:
        for k in chunks:
            if not (pool / f"chunk{k}" / "signals.jsonl.done").is_file():
                sys.exit(f"error: {pool}/chunk{k}: not finished (no signals.jsonl.done)")
            for line in (pool / f"chunk{k}" / name).read_text().splitlines():
                row = json.loads(line)
                row["prompt_id"] += 1000 * int(k)
                f.write(json.dumps(row) + "\n")
shutil.copy(pool / f"chunk{chunks[0]}" / "pipeline.json", out / "pipeline.json")
(out / "cal").mkdir(exist_ok=True)  # calibrate finds every trace's signals recorded: nothing to recompute
shutil.copy(out / "signals.jsonl", out / "cal" / "signals.jsonl")
PY
cp "$P/$TAG/signals.jsonl" "$R/$TAG-signals.jsonl"  # the calibration data of every number below (small)
rm -f "$P/$TAG/cal/exit_policy.json"
for EPS in 1 2 5; do
  specexit --threads 2 calibrate --target "$M" --draft $D --data "$P/$TAG" --risk "0.0$EPS" --delta 0.1 \
      --dtype bfloat16 --out "$P/$TAG/cal" --no-progress || [ $? -eq 1 ]  # 1: no rule certified (said on stdout)
  cp "$P/$TAG/cal/calibration.json" "$R/$TAG-calibration-eps$EPS.json"
  [ -f "$P/$TAG/cal/exit_policy.json" ] && break
done
# the rules replayed: the new policy (if any) beside the one shipped before it
POLICY=(--policy $D/exit_policy.json)
if [ -f "$P/$TAG/cal/exit_policy.json" ]; then
  cp "$P/$TAG/cal/exit_policy.json" "$R/$TAG-exit_policy.json"
  POLICY+=(--policy "$R/$TAG-exit_policy.json")
fi
python benchmarks/reasoner/exit_replay.py "$P/$TAG" --signals "$P/$TAG/signals.jsonl" "${POLICY[@]}" \
    --json "$R/$TAG-exit_replay.json"
python benchmarks/calibration/splits.py "$P/$TAG/signals.jsonl" --eps 0.005,0.01,0.02,0.05 --delta 0.1 --splits 20 \
    --test-fraction 0.3 --json "$R/$TAG-splits.json"
# INSTALL=1: the new policy becomes the shipped draft's (generate / bench / serve / vLLM use it by default)
if [ "${INSTALL:-0}" = 1 ] && [ -f "$R/$TAG-exit_policy.json" ]; then cp "$R/$TAG-exit_policy.json" $D/exit_policy.json; fi
