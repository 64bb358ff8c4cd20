"""The matched-accuracy oracle (bench/oracle.py) is the true optimum: checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from specexit.bench.oracle import TraceExits, oracle_cut


def brute_force(traces: list[TraceExits], tolerance: float) -> float:
    """Largest removed share over every joint choice of exit points with accuracy >= full - tolerance."""
    n, total = len(traces), sum(t.thinking for t in traces)
    need = sum(t.full_right for t in traces) - tolerance * n - 1e-9
    per_trace = [
        [(0, t.full_right)] + [(t.thinking - c, ok) for c, ok in zip(t.cuts, t.cut_right, strict=True)] for t in traces
    ]
    best = 0.0
    for choice in itertools.product(*per_trace):
        if sum(ok for _, ok in choice) >= need:
            best = max(best, sum(r for r, _ in choice) / total)
    return best


def random_trace(rng: random.Random) -> TraceExits:
    length = rng.randint(5, 60)
    cuts = tuple(sorted(rng.sample(range(1, length), rng.randint(0, min(3, length - 1)))))
    return TraceExits(length, rng.random() < 0.6, cuts, tuple(rng.random() < 0.5 for _ in cuts))


@pytest.mark.parametrize("seed", range(40))
def test_oracle_equals_brute_force(seed):
    rng = random.Random(seed)
    traces = [random_trace(rng) for _ in range(rng.randint(1, 6))]
    for tol in (0.0, 0.2, 0.5):
        got = oracle_cut(traces, tol)
        assert got["thinking_cut"] == pytest.approx(brute_force(traces, tol)), (seed, tol)
        assert got["accuracy_oracle"] >= got["accuracy_full"] - tol - 1e-9


def test_oracle_spends_the_tolerance_on_the_largest_cuts():
    # two traces right only at the end, one right early; a 1-in-3 loss buys the biggest wrong early exit
    traces = [
        TraceExits(100, True, (10,), (False,)),
        TraceExits(50, True, (40,), (False,)),
        TraceExits(80, True, (20,), (True,)),
    ]
    strict = oracle_cut(traces, 0.0)
    assert strict["thinking_cut"] == pytest.approx(60 / 230) and strict["accuracy_oracle"] == 1.0
    loose = oracle_cut(traces, 1 / 3)
    assert loose["thinking_cut"] == pytest.approx((60 + 90) / 230) and loose["switched_to_wrong"] == 1
