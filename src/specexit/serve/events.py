"""What the worker thread hands to a request handler for one generation: ``Started``, then ``Delta``s,
then one ``Outcome`` (or an exception object; see :class:`.worker.Job`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..results import GenerationResult


@dataclass
class Started:
    prompt_tokens: int
    started_at: float  # time.perf_counter() when the engine began


@dataclass
class Delta:
    field: str  # "reasoning_content" | "content" (chat) or "text" (completions)
    text: str


@dataclass
class Outcome:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    texts: dict[str, str]  # final text per field
    mode: str
    result: GenerationResult | None  # None when a stop sequence cut the engine stream short
    generation_s: float

    def specexit_usage(self) -> dict[str, Any]:
        """The ``usage.specexit`` object (fields are null when the engine result is unknown)."""
        r = self.result
        exit_rec = r.exit if r is not None else None
        return {
            "mode": self.mode,
            "exited_early": r.exited_early if r is not None else None,
            "exit_position": exit_rec["thinking_tokens"] if exit_rec else None,
            "exit_boundary": exit_rec["boundary"] if exit_rec else None,
            "smoothed": exit_rec["smoothed"] if exit_rec else None,
            # which rule ended the thinking: its source (calibrated policy + guarantee, flags, defaults)
            "exit_rule": {"thresholds": exit_rec["thresholds"], "origin": exit_rec.get("origin")} if exit_rec else None,
            "mean_accept_length": round(r.mean_accept_length, 4) if r is not None and r.accept_lengths else None,
            "draft_rounds": len(r.accept_lengths) if r is not None else None,
            "generation_s": round(self.generation_s, 4),
        }
