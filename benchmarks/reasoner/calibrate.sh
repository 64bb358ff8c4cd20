#!/usr/bin/env bash
# The reasoning model's calibrated exit (docs/calibration.md "The reasoning model").  Every stage resumes.
#   benchmarks/reasoner/calibrate.sh
# Needs the labelled T = 0.6 outputs of evaluate.sh (runs/think-eval) and of the tuning pool (runs/think-tune:
# 224 problems of the held-out generators that no reported number uses: the 64 that chose between the
# fine-tuning rounds and 160 beyond the 350 evaluated; made by the snippet below, outputs by `train traces`
# with evaluate.sh's settings, labels as there).
# 1. `specexit calibrate` on the tuning pool at EPS = 1, 2, then 5 points (the first certified), delta = 0.1,
#    installed beside the shipped draft: the rule `calibrated` runs by default;
# 2. the draft's signals at every boundary of the reported outputs (held-out, gsm8k100): recorded only;
# 3. exit_replay.py with the installed policy on them; the repeated random splits over held-out + tuning.
set -euo pipefail
cd "$(dirname "$0")/../.."
M=${TARGET:-$(specexit models get qwen2.5-coder-0.5b-think | tail -1)}
D=src/specexit/assets/qwen2.5-coder-0.5b-think-draft
R=benchmarks/results/reasoner
E=runs/think-eval
T=runs/think-tune
THREADS=${THREADS:-2}
if [ ! -f $T/tune.jsonl ]; then
  mkdir -p $T
  python - $T/tune.jsonl <<'PY'
import json, sys
from specexit.reasoner.problems import make_mix, write_problems
reported = {json.loads(line)["question"] for line in open("runs/think-eval/heldout.jsonl")}
train = {p.question for p in make_mix(480, 70, "train")}
write_problems(sys.argv[1], [p for p in make_mix(420, 70, "heldout") if p.question not in reported | train])
PY
fi
# the smallest risk at which a rule is certified, 1 point first (146 certification problems: 5 points here)
rm -f $D/exit_policy.json
for EPS in 1 2 5; do
  specexit --threads "$THREADS" calibrate --target "$M" --draft $D --data $T/think --risk "0.0$EPS" --delta 0.1 \
      --dtype bfloat16 --out $T/cal --install --no-progress || [ $? -eq 1 ]  # 1: no rule certified (said on stdout)
  cp $T/cal/calibration.json $R/calibration_tune_eps$EPS.json
  [ -f $D/exit_policy.json ] && break
done
python benchmarks/reasoner/exit_replay.py $T/think --signals $T/cal/signals.jsonl --policy $D/exit_policy.json \
    --json $R/exit_replay_tune.json
for ds in heldout gsm8k100; do
  python - "$M" $D $E/$ds-think "$THREADS" <<'PY'
import sys
import torch
from specexit.calibration.record import record_signals
from specexit.engine import SpecExitGenerator
torch.set_num_threads(int(sys.argv[4]))
gen = SpecExitGenerator.from_pretrained(sys.argv[1], sys.argv[2], dtype="bfloat16")
print(record_signals(gen, sys.argv[3], f"{sys.argv[3]}/signals.jsonl", progress=False))
PY
  python benchmarks/reasoner/exit_replay.py $E/$ds-think --signals $E/$ds-think/signals.jsonl \
      --policy $D/exit_policy.json --json $R/exit_replay_$ds.json
done
# one pool for the splits: the tuning pool's prompt ids moved past the held-out ones
python - $E/heldout-think/signals.jsonl $T/cal/signals.jsonl $T/split-pool.jsonl <<'PY'
import json, sys
with open(sys.argv[3], "w") as out:
    for k, path in enumerate(sys.argv[1:3]):
        for line in open(path):
            row = json.loads(line)
            row["prompt_id"] += 100_000 * k
            out.write(json.dumps(row) + "\n")
PY
python benchmarks/calibration/splits.py $T/split-pool.jsonl --eps 0.005,0.01,0.02,0.05 --delta 0.1 --splits 20 \
    --test-fraction 0.3 --json $R/calibration_splits.json
