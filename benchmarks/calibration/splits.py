"""Does the calibrated exit keep its promise?  Repeated random calibration / test splits of one pool.

    python benchmarks/calibration/splits.py POOL/signals.jsonl --eps 0.005,0.01,0.02,0.05 --delta 0.1 \
        --splits 20 --test-fraction 0.4 --json benchmarks/results/calibration/NAME.json

POOL is the output folder of `specexit calibrate` (its signals.jsonl: one trace per problem is used).
For each split seed the problems are shuffled and cut into a calibration part (which itself is split
again by `calibrate` into selection and certification) and a disjoint test part.  On the test part the
chosen rule's accuracy loss against full thinking is the *realized* loss; a split breaks the promise
when it exceeds EPS.  The matched-accuracy oracle (specexit.bench.oracle) on the same test part, at the
realized accuracy, says how much any rule with these exit points could have cut at that accuracy.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from specexit.bench.oracle import TraceExits, oracle_cut
from specexit.calibration.choose import calibrate, one_per_problem
from specexit.calibration.record import load_signals
from specexit.calibration.replay import summarize
from specexit.errors import ConfigError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("signals", type=Path)
    ap.add_argument("--eps", default="0.005,0.01,0.02,0.05")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--loss", default="net", choices=["net", "harm", "net-exact"])
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--test-fraction", type=float, default=0.4)
    ap.add_argument("--agree", default="0", help="agreement counts to try, as `specexit calibrate --agree`")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    agree = tuple(int(x) for x in a.agree.split(","))
    pool = one_per_problem(load_signals(a.signals))
    signals = sorted(pool[0].signals)
    rows = []
    for eps in (float(x) for x in a.eps.split(",")):
        per = []
        for seed in range(a.splits):
            units = list(pool)
            random.Random(10_000 + seed).shuffle(units)
            k = round(a.test_fraction * len(units))
            test, cal = units[:k], units[k:]
            try:
                c = calibrate(cal, signals, eps, a.delta, a.loss, seed=seed, agree=agree)
            except ConfigError as e:
                raise SystemExit(f"splits: {e}") from None
            if c.rule is None:
                per.append({"seed": seed, "rule": None, "loss": 0.0, "cut": 0.0, "oracle_cut": 0.0, "broken": False})
                continue
            s = summarize(c.rule, test)
            loss = s["accuracy_full"] - s["accuracy_exit"]
            exits = [TraceExits(t.thinking, t.full_right, t.cuts, t.cut_right) for t in test]
            oracle = oracle_cut(exits, max(loss, 0.0))
            per.append({"seed": seed, "rule": f"{c.family.label()},confidence>{c.threshold:g}", "loss": loss,
                        "cut": s["thinking_cut"], "oracle_cut": oracle["thinking_cut"], "broken": loss > eps,
                        "accuracy_full": s["accuracy_full"], "accuracy_exit": s["accuracy_exit"]})  # fmt: skip
        ratios = [p["cut"] / p["oracle_cut"] for p in per if p["oracle_cut"] > 0]
        row = {
            "eps": eps,
            "delta": a.delta,
            "splits": a.splits,
            "n_calibration": len(pool) - round(a.test_fraction * len(pool)),
            "n_test": round(a.test_fraction * len(pool)),
            "certified_share": sum(p["rule"] is not None for p in per) / len(per),
            "broken_share": sum(p["broken"] for p in per) / len(per),
            "loss_mean": statistics.mean(p["loss"] for p in per),
            "loss_max": max(p["loss"] for p in per),
            "cut_mean": statistics.mean(p["cut"] for p in per),
            "oracle_cut_mean": statistics.mean(p["oracle_cut"] for p in per),
            "cut_over_oracle_mean": statistics.mean(ratios) if ratios else None,
            "per_split": per,
        }
        rows.append(row)
        print(f"eps {100 * eps:4.1f} pt: certified in {100 * row['certified_share']:.0f}% of splits, promise broken "
              f"in {100 * row['broken_share']:.0f}%, realized loss {100 * row['loss_mean']:.2f} pt (max "
              f"{100 * row['loss_max']:.2f}), cut {100 * row['cut_mean']:.1f}% vs oracle "
              f"{100 * row['oracle_cut_mean']:.1f}% at the same accuracy")  # fmt: skip
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"signals": str(a.signals), "problems": len(pool), "loss": a.loss, "rows": rows,
               "command": "python benchmarks/calibration/splits.py " + " ".join(
                   f"{k}" for k in [str(a.signals), "--eps", a.eps, "--delta", str(a.delta), "--splits",
                                    str(a.splits), "--test-fraction", str(a.test_fraction)])}  # fmt: skip
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
