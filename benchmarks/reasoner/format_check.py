"""Did the thinking model learn its format?  Statistics of its own traces on held-out problems.

    specexit train traces --target MERGED --prompts HELDOUT.jsonl --out DIR --samples 1 --temperature 0.6 ...
    python benchmarks/reasoner/format_check.py DIR [DIR_GREEDY ...] --json OUT.json

Per folder (one `train traces` run): the share of outputs whose thinking span closed (`</think>` written),
how they finished (stop / length), accuracy against the gold answers, the re-check openers written in
the thinking (compose's RECHECK_OPENERS, and any "let me" / "wait" re-check), thinking tokens, by source.
The thinking model's template opens the span in the prompt, so every output starts thinking.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from specexit.reasoner.compose import RECHECK_LINE, RECHECK_OPENERS
from specexit.scoring import answers_equal
from specexit.train.traces import load_traces


def folder_stats(folder: Path) -> dict:
    rows = [t for _, t in load_traces(folder / "traces.jsonl")]
    n = len(rows)
    closed = [t for t in rows if t["think_end"] is not None]
    right = [answers_equal(t.get("final_answer"), t.get("gold")) for t in rows]
    text = [t.get("text", "") for t in rows]
    openers = [sum(x.count(o) for o in RECHECK_OPENERS) for x in text]
    loose = [len(RECHECK_LINE.findall(x)) for x in text]
    thinking = [t["think_end"] - t["think_start"] for t in closed]
    return {
        "folder": str(folder),
        "outputs": n,
        "closed": len(closed) / n,
        "finish": dict(Counter(t.get("finish_reason") for t in rows)),
        "accuracy": sum(right) / n,
        "accuracy_closed": sum(r for r, t in zip(right, rows, strict=True) if t["think_end"] is not None)
        / max(1, len(closed)),
        "rechecks_openers": dict(sorted(Counter(openers).items())),
        "rechecks_any": dict(sorted(Counter(loose).items())),
        "thinking_tokens_mean": statistics.mean(thinking) if thinking else None,
        "thinking_tokens_median": statistics.median(thinking) if thinking else None,
        "thinking_tokens_max": max(thinking) if thinking else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    out = [folder_stats(f) for f in a.folders]
    for s in out:
        print(json.dumps(s))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
