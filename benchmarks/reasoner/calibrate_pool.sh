#!/usr/bin/env bash
# The thinking model's calibrated exit from the second calibration pool (calibration_pool.sh): the finished
# chunks merged into one pipeline folder (prompt ids moved 1,000 apart per chunk), `specexit calibrate` at
# EPS = 1, 2, then 5 points (the first certified is installed beside the shipped draft), the rules replayed
# (exit_replay.py: budgets, the DEER probe, answer agreement, the draft's confidence, the policy), and the
# repeated random splits.  Seconds: every signal is recorded already.
#   [LOSS=net-exact] benchmarks/reasoner/calibrate_pool.sh [POOL_DIR] [CHUNKS]    (default runs/think-pool, "0 1 2")
# LOSS: calibrate's --loss (default net); results of another loss are named POOL-LOSS-*
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${1:-runs/think-pool}
CHUNKS=${2:-"0 1 2"}
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
D=src/specexit/assets/qwen2.5-coder-0.5b-think-draft
R=benchmarks/results/reasoner/pool
TAG=pool$(echo "$CHUNKS" | tr -d ' ')
LOSS=${LOSS:-net}
NAME=$TAG$([ "$LOSS" = net ] || echo "-$LOSS")  # the results of this loss
mkdir -p "$R"
python - "$P" "$P/$TAG" $CHUNKS <<'PY'
import json, shutil, sys
from pathlib import Path
pool, out, chunks = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
out.mkdir(exist_ok=True)
from specexit.probe import answer_key
for name in ("traces.jsonl", "labels.jsonl", "signals.jsonl"):
    with (out / name).open("w") as f:
        for k in chunks:
            if not (pool / f"chunk{k}" / "signals.jsonl.done").is_file():
                sys.exit(f"error: {pool}/chunk{k}: not finished (no signals.jsonl.done)")
            labels = {}
            for line in (pool / f"chunk{k}" / "labels.jsonl").read_text().splitlines():
                lab = json.loads(line)
                labels[lab["prompt_id"], lab["sample"]] = lab
            for line in (pool / f"chunk{k}" / name).read_text().splitlines():
                row = json.loads(line)
                if name == "signals.jsonl" and "answers" not in row:  # recorded before answers were
                    row["answers"] = [answer_key(a) for a in labels[row["prompt_id"], row["sample"]]["probe_answers"]]
                row["prompt_id"] += 1000 * int(k)
                f.write(json.dumps(row) + "\n")
shutil.copy(pool / f"chunk{chunks[0]}" / "pipeline.json", out / "pipeline.json")
for cal in ("cal", "cal-agree"):  # calibrate finds every trace's signals recorded: nothing to recompute
    (out / cal).mkdir(exist_ok=True)
    shutil.copy(out / "signals.jsonl", out / cal / "signals.jsonl")
PY
# what the pool's outputs are: closed spans, accuracy (closed and stopped, the answer right), thinking length
python - "$P/$TAG/traces.jsonl" "$R/$TAG-outputs.json" <<'PY'
import json, statistics, sys
from specexit.scoring import answers_equal
ts = [json.loads(line) for line in open(sys.argv[1])]
closed = [t for t in ts if t["think_end"] is not None]
right = [t["think_end"] is not None and t.get("finish_reason") == "stop"
         and answers_equal(t.get("final_answer"), t.get("gold")) for t in ts]  # fmt: skip
lengths = sorted(t["think_end"] - t["think_start"] for t in closed)
out = {"outputs": len(ts), "closed": len(closed) / len(ts), "accuracy": sum(right) / len(ts),
       "thinking_median": statistics.median(lengths), "thinking_p90": lengths[int(0.9 * (len(lengths) - 1))]}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print(out)
PY
cp "$P/$TAG/signals.jsonl" "$R/$TAG-signals.jsonl"  # the calibration data of every number below (small)
rm -f "$P/$TAG/cal/exit_policy.json"
for EPS in 1 2 5; do
  specexit --threads 2 calibrate --target "$M" --draft $D --data "$P/$TAG" --risk "0.0$EPS" --delta 0.1 --loss "$LOSS" \
      --dtype bfloat16 --out "$P/$TAG/cal" --no-progress || [ $? -eq 1 ]  # 1: no rule certified (said on stdout)
  cp "$P/$TAG/cal/calibration.json" "$R/$NAME-calibration-eps$EPS.json"
  [ -f "$P/$TAG/cal/exit_policy.json" ] && break
done
# rules confirmed by agreement compete too (torch backend only: results, not installed)
rm -f "$P/$TAG/cal-agree/exit_policy.json"
for EPS in 1 2 5; do
  specexit --threads 2 calibrate --target "$M" --draft $D --data "$P/$TAG" --risk "0.0$EPS" --delta 0.1 --loss "$LOSS" --agree 0,1,2 --probe-tokens 16 \
      --dtype bfloat16 --out "$P/$TAG/cal-agree" --no-progress || [ $? -eq 1 ]
  cp "$P/$TAG/cal-agree/calibration.json" "$R/$NAME-agree-calibration-eps$EPS.json"
  [ -f "$P/$TAG/cal-agree/exit_policy.json" ] && break
done
[ -f "$P/$TAG/cal-agree/exit_policy.json" ] && cp "$P/$TAG/cal-agree/exit_policy.json" "$R/$NAME-agree-exit_policy.json"
# the rules replayed: the new policy (if any) beside the one shipped before it
POLICY=(--policy $D/exit_policy.json)
if [ -f "$P/$TAG/cal/exit_policy.json" ]; then
  cp "$P/$TAG/cal/exit_policy.json" "$R/$NAME-exit_policy.json"
  POLICY+=(--policy "$R/$NAME-exit_policy.json")
fi
python benchmarks/reasoner/exit_replay.py "$P/$TAG" --signals "$P/$TAG/signals.jsonl" "${POLICY[@]}" \
    --json "$R/$NAME-exit_replay.json"
python benchmarks/calibration/splits.py "$P/$TAG/signals.jsonl" --eps 0.005,0.01,0.02,0.05 --delta 0.1 --loss "$LOSS" --splits 20 \
    --test-fraction 0.3 --json "$R/$NAME-splits.json"
python benchmarks/calibration/splits.py "$P/$TAG/signals.jsonl" --eps 0.005,0.01,0.02,0.05 --delta 0.1 --loss "$LOSS" --splits 20 \
    --test-fraction 0.3 --agree 0,1,2 --json "$R/$NAME-agree-splits.json"
# INSTALL=1: the new policy becomes the shipped draft's (generate / bench / serve / vLLM use it by default)
if [ "${INSTALL:-0}" = 1 ] && [ -f "$R/$NAME-exit_policy.json" ]; then cp "$R/$NAME-exit_policy.json" $D/exit_policy.json; fi
