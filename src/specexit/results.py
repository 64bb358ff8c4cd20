"""What a generation returns, on either backend: the result record, stream chunks and the mode list.

The PyTorch engine and the vLLM backend both build their results with these types, so the benchmark,
the trace generator and the server read one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("vanilla", "spec", "specexit")


@dataclass
class StreamChunk:
    token_ids: list[int]
    text: str  # decoded text delta
    phase: str  # "reasoning" | "answer" | "marker" (the think-start / think-end token itself)


@dataclass
class GenerationResult:
    mode: str
    text: str
    reasoning: str
    answer: str
    token_ids: list[int]
    prompt_tokens: int
    new_tokens: int
    thinking_tokens: int
    accept_lengths: list[int]
    exited_early: bool
    exit: dict | None
    finish_reason: str  # "stop" | "length" | "abort" (the consumer stopped iterating)
    wall_s: float
    signal_history: list = field(default_factory=list)
    probe_calls: int = 0  # trial answers run by the probing baseline

    @property
    def mean_accept_length(self) -> float:
        return sum(self.accept_lengths) / len(self.accept_lengths) if self.accept_lengths else 0.0

    def to_dict(self, history: bool = False) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "mode",
                "text",
                "reasoning",
                "answer",
                "new_tokens",
                "thinking_tokens",
                "prompt_tokens",
                "accept_lengths",
                "exited_early",
                "exit",
                "finish_reason",
                "wall_s",
                "probe_calls",
            )
        }
        d["mean_accept_length"] = round(self.mean_accept_length, 4)
        d["token_ids"] = self.token_ids
        if history:
            d["signal_history"] = [{"thinking_tokens": t, "raw": r, "smoothed": s} for t, r, s in self.signal_history]
        return d
