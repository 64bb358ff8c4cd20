"""Per-section wall-clock timing of speculative rounds (for benchmarks; off by default)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class RoundProfile:
    """Accumulates seconds per named section and counts rounds.  Pass one to
    ``SpecExitGenerator.generate(profile=...)``; the engine wraps each step of a round in a section."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.rounds = 0
        self.tree_tokens = 0  # draft tokens verified, summed over rounds

    @contextmanager
    def section(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def per_round_ms(self) -> dict[str, float]:
        n = max(self.rounds, 1)
        return {k: 1000.0 * v / n for k, v in self.seconds.items()}
