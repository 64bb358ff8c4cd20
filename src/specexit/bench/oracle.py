"""The matched-accuracy oracle: how much thinking *any* exit rule could remove at a given accuracy.

Definition.  Each trace i (a complete sampled output of the target) has thinking length L_i, a full-
thinking answer that is right or wrong, and a set of exit points: the semantic boundaries of its
thinking, where a forced answer (the label probes of ``train labels``) is right or wrong.  An exit
rule picks, per trace, one exit point or none (full thinking).  The oracle knows every probe's outcome
and picks, over all traces jointly, the exit points that remove the most thinking tokens in total,
subject to accuracy >= full-thinking accuracy - ``tolerance``.  Its cut is
``sum(removed) / sum(L_i)``: an upper bound on what an exit rule with the same exit points can reach
at that accuracy (on these traces; a real rule also changes later sampling, which a replay cannot).

Solving it exactly: per trace, the best *right* choice removes ``a_i`` tokens (the earliest exit point
whose answer is right, or full thinking when that is right; none if nothing is right) and the best
choice at all removes ``b_i`` (the earliest exit point).  Take every trace's best right choice (a
trace that is never right takes ``b_i``: it is wrong either way); that accuracy is at least the full
one.  Every point above the required accuracy buys one switch from ``a_i`` to ``b_i``, each costing
exactly one right answer, so the best switches are the largest ``b_i - a_i``: a unit-cost knapsack
that the greedy choice solves exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TraceExits:
    """One trace: thinking length, whether full thinking is right, and its exit points."""

    thinking: int  # L: thinking tokens of the full trace
    full_right: bool
    cuts: tuple[int, ...] = ()  # thinking tokens kept at each exit point (ascending)
    cut_right: tuple[bool, ...] = ()  # the forced answer at each exit point is right


def oracle_cut(traces: Sequence[TraceExits], tolerance: float) -> dict:
    """The matched-accuracy oracle at ``accuracy >= full - tolerance`` (a fraction, e.g. 0.01)."""
    n = len(traces)
    if n == 0:
        raise ValueError("no traces")
    total = sum(t.thinking for t in traces)
    full_right = sum(t.full_right for t in traces)
    removed = right = exits = 0
    switchable: list[tuple[int, int]] = []  # (gain, removal of the right choice) per trace that can be right
    for t in traces:
        options = [(0, t.full_right)] + [(t.thinking - c, ok) for c, ok in zip(t.cuts, t.cut_right, strict=True)]
        best_any = max(r for r, _ in options)
        best_right = max((r for r, ok in options if ok), default=None)
        if best_right is None:  # wrong whatever the exit: remove the most
            removed += best_any
            exits += best_any > 0
            continue
        removed += best_right
        right += 1
        switchable.append((best_any - best_right, best_right))
    # right answers above the required count: each one buys one switch to the earliest exit point
    spare = max(math.floor(right - (full_right - tolerance * n) + 1e-9), 0)
    switchable.sort(reverse=True)
    switched = [g for g, _ in switchable[:spare] if g > 0]
    removed += sum(switched)
    right -= len(switched)
    exits += len(switched) + sum(1 for g, r in switchable[len(switched) :] if r > 0)
    return {
        "traces": n,
        "tolerance": tolerance,
        "accuracy_full": full_right / n,
        "accuracy_oracle": right / n,
        "thinking_full": total / n,
        "thinking_oracle": (total - removed) / n,
        "thinking_cut": removed / total if total else 0.0,
        "switched_to_wrong": len(switched),
        "exit_rate": exits / n,
    }
