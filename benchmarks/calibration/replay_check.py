"""The replay against real sampled generation: does a calibrated rule do, when it runs, what its replay said?

    python benchmarks/calibration/replay_check.py CAL_DIR --target T --draft D --n 300 --json OUT.json

CAL_DIR is a `specexit calibrate` output folder (signals.jsonl, exit_policy.json, data/ or the --data
folder named in calibration.json).  For the first N problems: the replayed outcome of the policy's rule
on the recorded trace (exit point from the recorded signals, answer from the greedy probe), and a real
`specexit` run of the engine with that rule at the traces' temperature (a fresh sample: the same
distribution, not the same path).  Under sampling the two agree in distribution only; the paired
numbers say how far apart they are (accuracy, exit rate, thinking kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from specexit.calibration.record import load_signals
from specexit.calibration.replay import outcome
from specexit.engine import SpecExitGenerator
from specexit.policy_file import read_policy
from specexit.sampling import SamplingParams
from specexit.scoring import answers_equal, extract_answer
from specexit.train.traces import load_traces, trace_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cal", type=Path)
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=768)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    report = json.loads((a.cal / "calibration.json").read_text())
    policy = read_policy(a.cal / "exit_policy.json")
    rule = policy.exit_config()
    temperature = policy.data.get("temperature") or 0.0
    traces = {trace_key(t): t for _, t in load_traces(Path(report["data"]) / "traces.jsonl")}
    recorded = sorted((t for t in load_signals(a.cal / "signals.jsonl") if t.sample == 0), key=lambda t: t.prompt_id)
    gen = SpecExitGenerator.from_pretrained(a.target, a.draft)
    rows = []
    for t in recorded[: a.n]:
        tr = traces[(t.prompt_id, t.sample)]
        o = outcome(rule, t)
        sampling = SamplingParams(temperature=temperature, top_p=policy.data.get("top_p") or 1.0, seed=t.prompt_id)
        r = gen.generate(input_ids=list(tr["prompt_ids"]), mode="specexit", exit_config=rule,
                         max_new_tokens=a.max_new_tokens, sampling=sampling)  # fmt: skip
        rows.append({"prompt_id": t.prompt_id, "replay_right": o.right, "replay_exit": o.exit_at is not None,
                     "replay_thinking": o.thinking, "real_right": answers_equal(extract_answer(r.answer), tr["gold"]),
                     "real_exit": r.exit is not None, "real_thinking": r.thinking_tokens})  # fmt: skip

    def mean(key: str) -> float:
        return statistics.mean(float(x[key]) for x in rows)

    summary = {k: mean(k) for k in ("replay_right", "real_right", "replay_exit", "real_exit", "replay_thinking",
                                     "real_thinking")}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"cal": str(a.cal), "temperature": temperature, "n": len(rows),
                                      "summary": summary, "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
