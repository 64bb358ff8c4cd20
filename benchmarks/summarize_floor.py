"""One table from the JSON files of benchmarks/floor.py (docs/performance.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/floor")
    print("| run | vanilla ms/tok | best fixed (ms/tok, x) | auto ms/tok | auto x vanilla | auto / best fixed |"
          " auto tokens/round | auto overhead % | auto vs floor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        if "methods" not in r:  # not a floor.py result (e.g. a trace_auto.py trace beside them)
            continue
        m = r["methods"]
        best = m[r["best_fixed"]]
        auto = next(v for k, v in m.items() if k.startswith("auto"))
        print(f"| {f.stem} | {m['vanilla']['ms_per_token']:.2f} | {r['best_fixed']}: {best['ms_per_token']:.2f}, "
              f"{best['speedup_vs_vanilla']:.2f}x | {auto['ms_per_token']:.2f} | {auto['speedup_vs_vanilla']:.2f}x | "
              f"{r['auto_vs_best_fixed']:.2f} | {auto['tokens_per_round']:.2f} | {auto['overhead_pct_of_round']:.1f} | "
              f"{auto['vs_floor']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
