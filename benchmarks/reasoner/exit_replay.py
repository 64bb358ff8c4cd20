"""Exit rules replayed over labelled traces: what each would cut and what accuracy it would keep.

    specexit train labels --target $M --out DIR --label-reference gold   # forced answers + probe scores
    python benchmarks/reasoner/exit_replay.py DIR --json OUT.json [--signals DIR/cal/signals.jsonl]

Every rule here exits at one of the thinking's boundaries (where ``train labels`` forced an answer), so
its answer there is the labelled forced answer: exact for greedy answering after the exit, the mode of
the answer for sampled decoding (``specexit.calibration.replay`` says what that means).  A trace whose
span never closed counts as wrong with nothing to cut.  Rules:

- ``boundary-budget:N``: exit at the last boundary at or before N thinking tokens (the boundary budget
  of ``--thinking-budget``; the hard cap ``budget:N`` cuts mid-sentence and has no forced answer here);
- ``probe:T``: DEER-style, exit at the first boundary whose forced answer scores above T
  (``probe.answer_confidence``), after ``--min-thinking`` tokens;
- ``agree:K``: consistency (Dynasor-CoT's idea), exit at the first boundary whose forced answer has now
  been given at K boundaries; with ``--signals``, ``gated_agree:C:K`` probes only boundaries where the
  draft's confidence is above C;
- with ``--signals`` (``specexit calibrate`` records the draft's signals at the same boundaries): the
  draft's confidence above C at a boundary, boundary read-out, no smoothing;
- with ``--signals``, the paper's rule (confidence > 0.8, progress > 0.3, remain < 200, EWMA 0.1) read at
  boundaries, and each ``--policy`` file (``exit_policy.json`` of ``specexit calibrate``) replayed by the
  engine's own smoother (``specexit.calibration.replay``), each with the paired 95% bootstrap interval of
  its accuracy change against full thinking;
- the matched-accuracy oracle at 0, 1, 2 points.

The comparison at equal cut: for each probe / confidence rule, the boundary budget whose cut is closest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specexit.bench.oracle import TraceExits, oracle_cut
from specexit.bench.report import paired_bootstrap
from specexit.calibration.replay import TraceSignals, replay_exit
from specexit.errors import ConfigError
from specexit.exit_policy import ExitConfig
from specexit.policy_file import read_policy
from specexit.probe import answer_key
from specexit.scoring import answers_equal
from specexit.train.labels import load_labels
from specexit.train.traces import load_traces, trace_key

BUDGETS = (32, 64, 96, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024)
AGREE = (1, 2, 3)  # forced answers that must agree (1: the first probed boundary with any answer)
GATES = (0.2, 0.35, 0.5, 0.7)  # draft confidence above which a boundary is probed
THRESHOLDS = (0.999, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5)


def labels_file(folder: Path) -> Path:
    """labels.jsonl, or the part file of a labelling run still going (or stopped): its prefix is used."""
    done = folder / "labels.jsonl"
    return done if done.is_file() or not (folder / "labels.part-0.jsonl").is_file() else folder / "labels.part-0.jsonl"


def load(folder: Path, signals_path: Path | None) -> list[dict]:
    labels = load_labels(labels_file(folder))
    last = max(k[0] for k in labels)  # the labels stage walks the traces in order
    sig = {}
    if signals_path is not None:
        for line in signals_path.read_text().splitlines():
            row = json.loads(line)
            sig[(row["prompt_id"], row["sample"])] = row["signals"]
    rows = []
    for _, t in load_traces(folder / "traces.jsonl"):
        if t["prompt_id"] > last:
            continue
        lab = labels.get(trace_key(t))
        closed = t["think_end"] is not None and lab is not None
        full = closed and t.get("finish_reason") == "stop" and answers_equal(t.get("final_answer"), t.get("gold"))
        rows.append({
            "key": trace_key(t),
            "labelled": closed,  # a closed span with forced answers (else: wrong, nothing to cut)
            "thinking": (lab["span"][1] - lab["span"][0]) if closed else len(t["output_ids"]),
            "full_right": bool(full),
            "cuts": list(lab["cuts"]) if closed else [],
            "right": [bool(x) for x in lab["probe_correct"]] if closed else [],
            "probe": list(lab.get("probe_confidence") or []) if closed else [],
            "answers": [answer_key(a) for a in lab.get("probe_answers", [])] if closed else [],
            "signals": sig.get(trace_key(t), {}),
        })  # fmt: skip
    return rows


def trace_exits(rows: list[dict]) -> list[TraceExits]:
    """The oracle's view of ``load``'s rows."""
    return [TraceExits(r["thinking"], r["full_right"], tuple(r["cuts"]), tuple(r["right"])) for r in rows]


def apply(rows: list[dict], pick, paired: bool = False) -> dict:
    """``pick(row) -> index into row['cuts'] or None``: accuracy, cut and exit rate of that rule; with
    ``paired``, also its accuracy change against full thinking with a paired 95% bootstrap interval."""
    total = sum(r["thinking"] for r in rows)
    kept = exits = 0
    right = {}
    for r in rows:
        k = pick(r) if r["cuts"] else None
        if k is None:
            kept += r["thinking"]
            right[r["key"]] = r["full_right"]
        else:
            kept += r["cuts"][k]
            right[r["key"]] = r["right"][k]
            exits += 1
    n = len(rows)
    out = {"accuracy": sum(right.values()) / n, "thinking_cut": 1 - kept / total, "exit_rate": exits / n,
           "mean_thinking": kept / n}  # fmt: skip
    if paired:
        d, lo, hi = paired_bootstrap(right, {r["key"]: r["full_right"] for r in rows})
        out["delta_vs_full"], out["delta_ci95"] = d, [lo, hi]
    return out


def rule_pick(rule: ExitConfig):
    """An ExitConfig replayed on a row (its recorded signals at the row's boundaries)."""

    def pick(r):
        if not all(r["signals"].get(n) for n in rule.thresholds):
            return None
        t = TraceSignals(r["key"][0], r["key"][1], r["thinking"], r["full_right"], tuple(r["cuts"]),
                         tuple(r["right"]), {n: tuple(v) for n, v in r["signals"].items()},
                         tuple(r["answers"]))  # fmt: skip
        return replay_exit(rule, t)

    return pick


def budget_rule(n: int):
    def pick(r):
        ks = [k for k, c in enumerate(r["cuts"]) if c <= n]
        return ks[-1] if ks and r["thinking"] > n else None

    return pick


def threshold_rule(values_of, threshold: float, min_thinking: int):
    def pick(r):
        vals = values_of(r)
        for k, c in enumerate(r["cuts"]):
            if c >= min_thinking and k < len(vals) and vals[k] > threshold:
                return k
        return None

    return pick


def trials(rows: list[dict], pick, min_thinking: int, gate=None) -> float:
    """Trial answers an agreement rule (``pick``) writes per output: the boundaries it probes (past
    ``min_thinking``, where ``gate`` lets it) up to its exit."""
    n = 0
    for r in rows:
        last = pick(r)
        stop = len(r["cuts"]) if last is None else last + 1
        n += sum(1 for i in range(stop) if r["cuts"][i] >= min_thinking and (gate is None or gate(r, i)))
    return n / len(rows)


def agreement_rule(k: int, min_thinking: int):
    """Exit at the first boundary whose forced answer has now been given at ``k`` boundaries (Dynasor-style
    consistency, a probe at every boundary; gated by the draft's confidence it is ``ExitConfig.agree``)."""

    def pick(r):
        seen: dict[str, int] = {}
        for i, c in enumerate(r["cuts"]):
            if c < min_thinking or i >= len(r["answers"]):
                continue
            a = r["answers"][i]
            if a is not None:
                seen[a] = seen.get(a, 0) + 1
                if seen[a] >= k:
                    return i
        return None

    return pick


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="pipeline folder with traces.jsonl and labels.jsonl")
    ap.add_argument("--signals", type=Path, default=None, help="signals.jsonl recorded by specexit calibrate")
    ap.add_argument("--policy", type=Path, action="append", default=[],
                    help="exit_policy.json to replay (needs --signals); repeatable")  # fmt: skip
    ap.add_argument("--min-thinking", type=int, default=32)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    for path in (a.folder / "traces.jsonl", labels_file(a.folder)):
        if not path.is_file():
            print(f"error: {a.folder}: no {path.name}", file=sys.stderr)
            return 2
    if a.signals is not None and not a.signals.is_file():
        print(f"error: --signals {a.signals}: no such file", file=sys.stderr)
        return 2
    if a.policy and a.signals is None:
        print("error: --policy needs --signals (the draft's signals at the boundaries)", file=sys.stderr)
        return 2
    try:
        policies = {str(p): read_policy(p).exit_config() for p in a.policy}
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = load(a.folder, a.signals)
    full = apply(rows, lambda r: None)
    exits = trace_exits(rows)
    out = {
        "folder": str(a.folder),
        "traces": len(rows),
        "full": full,
        "oracle": {f"{t * 100:g}pt": oracle_cut(exits, t) for t in (0.0, 0.01, 0.02)},
        "boundary_budget": {str(n): apply(rows, budget_rule(n)) for n in BUDGETS},
        "probe": {},
        "confidence": {},
    }
    if any(r["probe"] for r in rows):
        out["probe"] = {
            f"{t:g}": apply(rows, threshold_rule(lambda r: r["probe"], t, a.min_thinking)) for t in THRESHOLDS
        }
    if any(r["answers"] for r in rows):
        out["agree"] = {str(k): apply(rows, agreement_rule(k, a.min_thinking)) for k in AGREE}
    if any(r["signals"].get("confidence") for r in rows):
        conf = lambda r: r["signals"].get("confidence", [])  # noqa: E731
        gated = lambda t: lambda r, i: i < len(conf(r)) and conf(r)[i] > t  # noqa: E731

        out["gated_agree"] = {}
        for t in GATES:
            for k in AGREE:  # the engine's rule (ExitConfig.agree), replayed as calibration does
                pick = rule_pick(ExitConfig(thresholds={"confidence": t}, smoothing="none", readout="boundary",
                                            agree=k, min_thinking_tokens=a.min_thinking))  # fmt: skip
                per_output = trials(rows, pick, a.min_thinking, gated(t))
                out["gated_agree"][f"{t:g}:{k}"] = {**apply(rows, pick), "trials_per_output": per_output}
        out["confidence"] = {f"{t:g}": apply(rows, threshold_rule(conf, t, a.min_thinking)) for t in THRESHOLDS}
        rules = {"paper:boundary": ExitConfig(readout="boundary"), **{f"policy:{k}": v for k, v in policies.items()}}
        out["rules"] = {name: apply(rows, rule_pick(rule), paired=True) for name, rule in rules.items()}
    # at equal cut: each threshold rule beside the boundary budget with the closest cut
    budgets = out["boundary_budget"]
    pairs = []
    families = ("probe", "confidence", "agree", "gated_agree")
    named = [(f"{family}:{t}", s) for family in families for t, s in out.get(family, {}).items()]
    for name, s in named + list(out.get("rules", {}).items()):
        if s["exit_rate"] == 0:
            continue
        n = min(budgets, key=lambda b: abs(budgets[b]["thinking_cut"] - s["thinking_cut"]))
        pairs.append({"rule": name, **s, "budget": int(n), "budget_accuracy": budgets[n]["accuracy"],
                      "budget_cut": budgets[n]["thinking_cut"]})  # fmt: skip
    out["at_equal_cut"] = pairs
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"traces": len(rows), "full": full, "oracle_1pt": out["oracle"]["1pt"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
