#!/usr/bin/env bash
# Output digests of `specexit bench` on the first 20 testbed problems, greedy and T = 0.6, every method.
# Used to show that a refactor changes no output: run it before and after, compare digests.txt.
#   benchmarks/refactor/digests.sh OUT [SRC]   (SRC: a source tree to run instead of the installed one)
set -euo pipefail
out=${1:?usage: digests.sh OUT [SRC]}
[[ -n "${2:-}" ]] && export PYTHONPATH="$2"
a=src/specexit/assets
methods="vanilla,spec,specexit,specexit[readout=boundary,smoothing=none,remain=off,confidence=0.5,progress=0.2],budget:256,probe,nothink"
common=(--target $a/testbed --draft $a/testbed-draft --dataset testbed --limit 20 --methods "$methods"
        --no-plots --no-progress)
specexit --threads 1 bench "${common[@]}" --temperature 0 --seeds 0 --out "$out/greedy"
specexit --threads 1 bench "${common[@]}" --temperature 0.6 --seeds 0,1 --out "$out/t06"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = []
for run in ("greedy", "t06"):
    for line in (out / run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append(f"{run}\t{r['method']}\t{r['problem_id']}\t{r['seed']}\t{r['output_digest']}\t{r['thinking_tokens']}")
rows.sort()
(out / "digests.txt").write_text("\n".join(rows) + "\n")
print(f"{len(rows)} digests -> {out / 'digests.txt'}")
PY
