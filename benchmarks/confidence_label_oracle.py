"""What a perfect confidence head would buy, per label definition, on a draft pipeline's own traces.

For every labelled trace, an oracle exits at the first boundary whose confidence label is 1 (the
label the draft is trained to predict, with ``--confidence-confirm N``) and is scored by that
boundary's probe; a trace with no positive boundary runs to the end and keeps its own final answer.
This bounds what an exit rule trained on each label can reach: thinking kept, accuracy, exit rate.

    python benchmarks/confidence_label_oracle.py runs/testbed-draft --confirm 0,1,2 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specexit.jsonl import DataError
from specexit.scoring import answers_equal
from specexit.train.labels import cut_positives, load_labels
from specexit.train.traces import load_traces, trace_key


def oracle(traces: dict, labels: dict, confirm: int) -> dict:
    n = kept = full_right = exit_right = exits = 0
    thinking = 0
    for key, lab in labels.items():
        tr = traces.get(key)
        if tr is None:
            continue
        s, e = lab["span"]
        span = e - s
        if span <= 0:
            continue
        ref = lab["reference"]
        right_full = ref is not None and answers_equal(tr.get("final_answer"), ref)
        pos = cut_positives(lab, confirm)
        first = next((c for c, p in zip(lab["cuts"], pos, strict=True) if p), None)
        n += 1
        thinking += span
        full_right += right_full
        if first is None:
            kept += span
            exit_right += right_full
        else:
            exits += 1
            kept += first
            exit_right += 1  # a positive label means the probe there answers right
    return {
        "confirm": confirm,
        "traces": n,
        "accuracy_full": full_right / n,
        "accuracy_oracle_exit": exit_right / n,
        "exit_rate": exits / n,
        "thinking_full": thinking / n,
        "thinking_oracle_exit": kept / n,
        "thinking_cut": 1 - kept / thinking,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", help="draft pipeline folder with traces.jsonl and labels.jsonl")
    ap.add_argument("--confirm", default="0,1,2", help="comma-separated --confidence-confirm values")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args()
    out = Path(a.pipeline)
    traces = {trace_key(tr): tr for _, tr in load_traces(out / "traces.jsonl")}
    labels = load_labels(out / "labels.jsonl")
    try:
        rows = [oracle(traces, labels, int(c)) for c in a.confirm.split(",")]
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print("| confirm | traces | accuracy full | accuracy oracle exit | exit rate | thinking full | at exit | cut |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['confirm']} | {r['traces']} | {r['accuracy_full']:.1%} | {r['accuracy_oracle_exit']:.1%} | "
            f"{r['exit_rate']:.1%} | {r['thinking_full']:.1f} | {r['thinking_oracle_exit']:.1f} | "
            f"{r['thinking_cut']:.1%} |"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
