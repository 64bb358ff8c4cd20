"""Choose and certify an exit rule from replayed calibration traces (the procedure of docs/calibration.md).

1. One trace per problem (the first sample): problems are the i.i.d. units the guarantee is about;
   two samples of one problem are not independent.
2. The problems are shuffled (seeded) and split: a *selection* part picks the rule family (smoothing,
   progress gate, minimum thinking) and a disjoint *certification* part tests it, so the order of the
   tested rules is fixed before the certification data are looked at, as Learn-then-Test requires.
3. A family's rules differ only in the confidence threshold, from cautious (0.99) to aggressive: a
   lower threshold exits at the same boundary or earlier, so the order is the order of aggressiveness.
4. Fixed-sequence testing on the certification part (``risk.certify``): every accepted rule has an
   accuracy loss against full thinking of at most EPS with probability >= 1 - delta; the chosen one
   is the accepted rule with the largest cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..exit_policy import ExitConfig
from .replay import TraceSignals, outcome, summarize, summarize_outcomes
from .risk import certify

CONFIDENCE_PATH: tuple[float, ...] = (0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55,
                                      0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)  # fmt: skip


@dataclass(frozen=True)
class Family:
    """Rules that differ only in the confidence threshold."""

    smoothing: str = "none"
    alpha: float = 1.0
    progress: float | None = None  # a progress gate (progress > this), or none
    min_thinking_tokens: int = 0
    agree: int = 0  # > 0: the thresholds pick where trial answers are written, agreement exits
    agree_tokens: int = 24  # the trial answers' token cap: the labels' probes'

    def rule(self, confidence: float) -> ExitConfig:
        thresholds = {"confidence": confidence}
        if self.progress is not None:
            thresholds["progress"] = self.progress
        return ExitConfig(thresholds=thresholds, smoothing=self.smoothing, alpha=self.alpha, readout="boundary",
                          min_thinking_tokens=self.min_thinking_tokens, agree=self.agree,
                          agree_tokens=self.agree_tokens)  # fmt: skip

    def label(self) -> str:
        s = self.smoothing if self.smoothing != "ewma" else f"ewma{self.alpha:g}"
        gate = f",progress>{self.progress:g}" if self.progress is not None else ""
        agree = f",agree={self.agree}" if self.agree else ""
        return f"{s}{gate},min={self.min_thinking_tokens}{agree}"


def families(signals: Sequence[str], agree: Sequence[int] = (0,), agree_tokens: int = 24) -> list[Family]:
    """The candidate families for a draft with these signals (confidence is required); ``agree``: the
    agreement counts to try (0: the signal rule alone), with trial answers of ``agree_tokens`` tokens."""
    if "confidence" not in signals:
        raise ConfigError("calibration needs a draft that predicts the confidence signal")
    smoothings = [("none", 1.0), ("ewma", 0.5), ("ewma", 0.3)]
    gates = [None, 0.1, 0.2, 0.3] if "progress" in signals else [None]
    return [Family(s, a, g, m, k, agree_tokens) for k in agree for s, a in smoothings for g in gates for m in (0, 32)]


def one_per_problem(traces: Sequence[TraceSignals]) -> list[TraceSignals]:
    """The first sample of each problem, in problem order."""
    first: dict[int, TraceSignals] = {}
    for t in sorted(traces, key=lambda t: (t.prompt_id, t.sample)):
        first.setdefault(t.prompt_id, t)
    return [first[k] for k in sorted(first)]


def split_problems(traces: Sequence[TraceSignals], select_fraction: float, seed: int):
    """(selection, certification) parts of one-trace-per-problem data, shuffled with ``seed``."""
    units = one_per_problem(traces)
    random.Random(seed).shuffle(units)
    k = round(select_fraction * len(units))
    return units[:k], units[k:]


def family_score(fam: Family, traces: Sequence[TraceSignals], eps: float) -> tuple[float, float | None]:
    """(cut, threshold) of the family's most aggressive rule whose empirical loss on ``traces`` is at
    most eps / 2 (a margin that leaves the certification room), (0, None) when none is."""
    best = (0.0, None)
    for c in CONFIDENCE_PATH:
        s = summarize(fam.rule(c), traces)
        if s["accuracy_full"] - s["accuracy_exit"] <= eps / 2 and s["thinking_cut"] > best[0]:
            best = (s["thinking_cut"], c)
    return best


@dataclass
class Calibration:
    family: Family
    rule: ExitConfig | None  # None: no rule certified
    threshold: float | None
    certified: dict  # the risk procedure's record
    selection: list[dict]  # every family's score on the selection part
    path: list[dict]  # the chosen family's rules on the certification part
    n_select: int
    n_certify: int


def calibrate(
    traces: Sequence[TraceSignals],
    signals: Sequence[str],
    eps: float,
    delta: float,
    loss: str = "net",
    select_fraction: float = 0.3,
    seed: int = 0,
    agree: Sequence[int] = (0,),
    agree_tokens: int = 24,
) -> Calibration:
    """``agree``: the agreement counts whose families compete (``Family.agree``); ``agree_tokens``: the
    token cap of the labels' forced answers, which the trial answers of those rules repeat."""
    if not 0 < select_fraction < 1:
        raise ConfigError(f"--select-fraction must be in (0, 1), got {select_fraction}")
    if any(agree) and any(len(t.answers) != len(t.cuts) for t in traces):
        raise ConfigError("--agree: the recorded signals lack the forced answers; record them anew (delete "
                          "signals.jsonl in --out)")  # fmt: skip
    select, cert = split_problems(traces, select_fraction, seed)
    if len(select) < 10 or len(cert) < 30:
        raise ConfigError(
            f"--data: {len(select) + len(cert)} problems are too few to calibrate on (need >= 10 to select and "
            ">= 30 to certify); give more problems"
        )
    scored = [(fam, *family_score(fam, select, eps)) for fam in families(signals, agree, agree_tokens)]
    selection = [{"family": f.label(), "cut": cut, "threshold": th} for f, cut, th in scored]
    fam = max(scored, key=lambda x: x[1])[0]  # ties: the first (the simplest) family
    rules = [fam.rule(c) for c in CONFIDENCE_PATH]
    full = [t.full_right for t in cert]
    outs = [[outcome(r, t) for t in cert] for r in rules]  # [rule][problem]
    exits = [[o.right for o in row] for row in outs]
    stats = [summarize_outcomes(cert, row) for row in outs]
    res = certify(full, exits, [s["thinking_cut"] for s in stats], eps, delta, loss=loss, seed=seed)
    path = [{"confidence": c, **s, "pvalue": res.pvalues[i] if i < len(res.pvalues) else None}
            for i, (c, s) in enumerate(zip(CONFIDENCE_PATH, stats, strict=True))]  # fmt: skip
    chosen = res.chosen
    record = {"eps": eps, "delta": delta, "loss": loss, "n": len(cert), "accepted": list(res.accepted),
              "pvalue": res.pvalues[chosen] if chosen is not None else None}  # fmt: skip
    return Calibration(
        family=fam,
        rule=rules[chosen] if chosen is not None else None,
        threshold=CONFIDENCE_PATH[chosen] if chosen is not None else None,
        certified=record,
        selection=selection,
        path=path,
        n_select=len(select),
        n_certify=len(cert),
    )
