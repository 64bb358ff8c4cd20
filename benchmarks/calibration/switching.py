"""How many answers an exit rule switches, both ways, and what that costs a certificate.

    python benchmarks/calibration/switching.py SIGNALS.jsonl --json OUT.json

For each rule (boundary read-out, raw confidence, optionally confirmed by answer agreement) on one
trace per problem of a calibration pool: answers turned wrong and turned right against full thinking,
the net loss, the share switched, the thinking cut, and a normal approximation of the certification
problems a one-sided test at delta = 0.1 needs to bound the loss by EPS: n = (z sd / (EPS - net))^2,
sd the standard deviation of the per-problem net loss (-1, 0 or +1).  The certificate of
`specexit calibrate` (a betting p-value) needs somewhat more.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from specexit.calibration.choose import one_per_problem
from specexit.calibration.record import load_signals
from specexit.calibration.replay import outcome
from specexit.exit_policy import ExitConfig

Z = 1.2816  # one-sided, delta = 0.1
RULES = [(0.7, 0), (0.6, 0), (0.5, 0), (0.5, 2), (0.35, 2), (0.2, 2), (0.2, 3)]  # (confidence, agree)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("signals", type=Path)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    ts = one_per_problem(load_signals(a.signals))
    n, total = len(ts), sum(t.thinking for t in ts)
    rows = []
    for conf, k in RULES:
        rule = ExitConfig(thresholds={"confidence": conf}, smoothing="none", readout="boundary", agree=k)
        outs = [outcome(rule, t) for t in ts]
        to_wrong = sum(t.full_right and not o.right for t, o in zip(ts, outs, strict=True))
        to_right = sum(not t.full_right and o.right for t, o in zip(ts, outs, strict=True))
        net, switched = (to_wrong - to_right) / n, (to_wrong + to_right) / n
        sd = math.sqrt(switched - net * net)
        need = {f"{e * 100:g}pt": math.ceil((Z * sd / (e - net)) ** 2) if e > net else None for e in (0.01, 0.02)}
        rows.append({"confidence": conf, "agree": k, "turned_wrong": to_wrong, "turned_right": to_right,
                     "net_loss": net, "switched": switched, "thinking_cut": 1 - sum(o.thinking for o in outs) / total,
                     "certification_problems_needed": need})  # fmt: skip
        print(json.dumps(rows[-1]))
    a.json.write_text(json.dumps({"signals": str(a.signals), "problems": n, "rules": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
