"""Write a benchmark dataset as a prompt file (JSONL: question + the gold answer as scored), e.g. to
generate the target's own traces on it and label them with forced-answer probes.

    python benchmarks/zoo/export_dataset.py gsm8k100 runs/zoo/gsm8k100.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specexit.bench.datasets import load_dataset
from specexit.scoring import score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="any `specexit bench --dataset` name")
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    rows = [
        {"question": p.question, "answer": score("", p.answer)["gold"], "id": p.id}
        for p in load_dataset(a.dataset, a.limit)
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} problems -> {out}")


if __name__ == "__main__":
    main()
