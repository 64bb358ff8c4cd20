"""Replay exit rules offline over recorded signals: what each rule would have done on each trace.

A calibration trace is a complete output of the target (sampled at the deployment temperature, or
greedy), with, at every semantic boundary of its thinking span, (a) the draft's exit signals read at
that boundary and (b) whether a forced answer there is right (the label probes of ``train labels``).
A rule with the ``boundary`` read-out sees exactly those signals, boundary by boundary: its exit point
on a trace is a function of the trace alone, so one recorded pass serves every candidate rule.

What a replay predicts exactly, and what not:
- The exit point: exact.  The draft's signals are a function of the target's hidden states at the
  boundary token (``Eagle3Draft.fuse``), and with early exit the engine emits the same tokens up to the
  exit as without it (speculative decoding is lossless), so the exit lands where the replay says.
  Under greedy decoding this is the very trace; under sampling it holds in distribution.
- The answer after the exit: exact under greedy decoding (the probe *is* the greedy answer after the
  forced think-end, capped at the probe's token budget).  Under sampling the real answer is sampled,
  not greedy: the replay then scores the mode of the answer distribution, which for a model whose
  answer is settled at the exit point is the same answer, and otherwise is an approximation (checked
  against real generation in docs/calibration.md).
- The ``round`` read-out (the reference code's mean over a decoding round) depends on where rounds end,
  i.e. on acceptance: it is not replayable exactly, so calibrated rules use the boundary read-out.

The replay reuses the engine's own smoother and threshold test (``exit_policy``), and a test checks
it against the policy fed token by token and against real greedy generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..exit_policy import ExitConfig, SignalSmoother
from ..signals import passes


@dataclass(frozen=True)
class TraceSignals:
    """One calibration trace: its thinking, the full answer's verdict, and each boundary's state."""

    prompt_id: int
    sample: int
    thinking: int  # L: thinking tokens of the full trace
    full_right: bool
    cuts: tuple[int, ...]  # thinking tokens an exit at each boundary keeps (ascending)
    cut_right: tuple[bool, ...]  # the forced answer at each boundary is right
    signals: dict[str, tuple[float, ...]]  # name -> the draft's activated value at each boundary
    # the forced answer at each boundary as ``probe.answer_key`` (None: no answer), for rules that
    # confirm exits by agreement; empty when not recorded (files written before it existed)
    answers: tuple[str | None, ...] = ()

    def to_dict(self) -> dict:
        return {"prompt_id": self.prompt_id, "sample": self.sample, "thinking": self.thinking,
                "full_right": self.full_right, "cuts": list(self.cuts), "cut_right": list(self.cut_right),
                "signals": {k: list(v) for k, v in self.signals.items()}, "answers": list(self.answers)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> TraceSignals:
        return cls(int(d["prompt_id"]), int(d["sample"]), int(d["thinking"]), bool(d["full_right"]),
                   tuple(d["cuts"]), tuple(bool(c) for c in d["cut_right"]),
                   {k: tuple(float(x) for x in v) for k, v in d["signals"].items()},
                   tuple(d.get("answers") or ()))  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    exit_at: int | None  # index into the trace's cuts, None: full thinking
    thinking: int  # thinking tokens kept
    right: bool


def replay_exit(rule: ExitConfig, t: TraceSignals) -> int | None:
    """The boundary (index into ``t.cuts``) where ``rule`` exits on ``t``, or None.  Mirrors
    ``ExitPolicy`` with the boundary read-out: boundaries under ``min_thinking_tokens`` are not read,
    each read boundary updates the smoothers, the first whose smoothed values pass every threshold is
    the exit; with ``agree`` > 0, such a boundary is only a trial (its recorded forced answer is counted)
    and the exit is the first whose answer has now come up ``agree`` times (``probe.AgreementJudge``)."""
    if rule.readout != "boundary":
        raise ValueError("only boundary read-out rules replay exactly (see the module docstring)")
    if rule.agree and len(t.answers) != len(t.cuts):
        raise ValueError("a rule with agree needs the forced answers at every boundary (signals recorded anew)")
    smoothers = {n: SignalSmoother(rule.smoothing, rule.alpha, rule.window) for n in rule.thresholds}
    counts: dict[str, int] = {}
    for k, cut in enumerate(t.cuts):
        if cut < rule.min_thinking_tokens:
            continue
        for name, sm in smoothers.items():
            sm.update(t.signals[name][k])
        if all(sm.value is not None and passes(n, sm.value, rule.thresholds[n]) for n, sm in smoothers.items()):
            if not rule.agree:
                return k
            a = t.answers[k]
            if a is not None:
                counts[a] = counts.get(a, 0) + 1
                if counts[a] >= rule.agree:
                    return k
    return None


def outcome(rule: ExitConfig, t: TraceSignals) -> Outcome:
    k = replay_exit(rule, t)
    if k is None:
        return Outcome(None, t.thinking, t.full_right)
    return Outcome(k, t.cuts[k], t.cut_right[k])


def summarize(rule: ExitConfig, traces: Sequence[TraceSignals]) -> dict:
    """Accuracy with full thinking and with the rule, the share of thinking removed, the exit rate."""
    return summarize_outcomes(traces, [outcome(rule, t) for t in traces])


def summarize_outcomes(traces: Sequence[TraceSignals], outs: Sequence[Outcome]) -> dict:
    """``summarize`` from a rule's outcomes on ``traces`` (one per trace, in order)."""
    total = sum(t.thinking for t in traces)
    kept = sum(o.thinking for o in outs)
    n = len(traces)
    return {
        "n": n,
        "accuracy_full": sum(t.full_right for t in traces) / n,
        "accuracy_exit": sum(o.right for o in outs) / n,
        "thinking_cut": 1 - kept / total if total else 0.0,
        "exit_rate": sum(o.exit_at is not None for o in outs) / n,
    }
