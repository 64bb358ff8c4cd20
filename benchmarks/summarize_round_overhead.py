"""Markdown table from the JSON files written by round_overhead.py (one row per file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLS = ["propose", "tree_inputs", "target_forward", "verify", "kv_compact", "signals_exit", "draft_commit", "other"]


def main(folder: str) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
    tail = " | overhead | accept len | ms/token spec vs vanilla |"
    print("| run | target / draft dtype | context | round ms | " + " | ".join(COLS) + tail)
    print("|" + "---|" * (len(COLS) + 7))
    for r in rows:
        m = r["median"]
        cells = [f"{m[c + '_ms']:.1f}" for c in COLS]
        print(
            f"| {r['model']} v{r['draft_vocab']} | {r['dtype']} / {r['draft_dtype']} | {r['prompt_tokens']} | "
            f"{m['round_ms']:.1f} | " + " | ".join(cells) + f" | **{r['overhead_pct_of_round']}%** | "
            f"{m['mean_accept_length']:.2f} | {r['spec_ms_per_token']:.1f} vs {r['vanilla_ms_per_token']:.1f} "
            f"({r['speedup_vs_vanilla']:.2f}x) |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/round_overhead")
