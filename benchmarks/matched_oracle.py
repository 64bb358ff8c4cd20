"""The matched-accuracy oracle on a pipeline folder's traces and gold-referenced label probes.

    specexit train traces --target T --prompts P --out DIR --samples 3 --temperature 0.6 --top-p 1.0
    specexit train labels --target T --out DIR --label-reference gold
    python benchmarks/matched_oracle.py DIR --tolerance 0,0.01,0.02 --json OUT

Definition and proof of optimality: ``specexit.bench.oracle``.  A trace without a closed thinking span
(cut off by the token cap) counts as wrong, with its whole output as thinking and no exit point: the
oracle gets no credit for it.  Full-thinking accuracy is the trace's own final answer against the gold
answer, scored like the benchmark (``scoring.answers_equal``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specexit.bench.oracle import TraceExits, oracle_cut
from specexit.scoring import answers_equal
from specexit.train.labels import load_labels
from specexit.train.traces import load_traces, trace_key


def trace_exits(folder: Path) -> list[TraceExits]:
    labels = load_labels(folder / "labels.jsonl")
    out = []
    for _, tr in load_traces(folder / "traces.jsonl"):
        lab = labels.get(trace_key(tr))
        if tr["think_end"] is None or lab is None:  # no closed span: wrong, nothing to cut
            out.append(TraceExits(len(tr["output_ids"]), False))
            continue
        s, e = lab["span"]
        right = answers_equal(tr.get("final_answer"), tr.get("gold"))
        out.append(TraceExits(e - s, right, tuple(lab["cuts"]), tuple(bool(c) for c in lab["probe_correct"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="pipeline folder with traces.jsonl and labels.jsonl")
    ap.add_argument("--tolerance", default="0,0.01,0.02,0.05", help="accuracy losses allowed (fractions)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    a = ap.parse_args()
    traces = trace_exits(a.folder)
    rows = [oracle_cut(traces, float(t)) for t in a.tolerance.split(",")]
    for r in rows:
        print(
            f"tolerance {100 * r['tolerance']:4.1f} pt: cut {100 * r['thinking_cut']:5.1f}% of thinking "
            f"({r['thinking_full']:.1f} -> {r['thinking_oracle']:.1f} tokens), accuracy "
            f"{100 * r['accuracy_full']:.1f}% -> {100 * r['accuracy_oracle']:.1f}%, "
            f"exit rate {100 * r['exit_rate']:.0f}%"
        )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"folder": str(a.folder), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
