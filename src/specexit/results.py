"""What a generation returns, on either backend: the result record, stream chunks and the mode list.

The PyTorch engine and the vLLM backend both build their results with these types, so the benchmark,
the trace generator and the server read one shape.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .exit_policy import history_records
from .span import SpanMarkers, split_output

if TYPE_CHECKING:
    from .exit_control import ExitController

MODES = ("vanilla", "spec", "specexit")


@dataclass
class StreamChunk:
    token_ids: list[int]
    text: str  # decoded text delta


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
    probe_calls: int = 0  # trial answers: the probing baseline's, or those confirming an agree rule's exits
    speculation: dict | None = None  # what ``--tree auto`` decided (rounds with / without a tree, sizes)

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
        if self.speculation is not None:
            d["speculation"] = self.speculation
        d["token_ids"] = self.token_ids
        if history:
            d["signal_history"] = history_records(self.signal_history)
        return d


def build_result(
    tokenizer,
    markers: SpanMarkers,
    *,
    mode: str,
    prompt_ids: Sequence[int],
    generated: Sequence[int],
    stop_ids: Collection[int],
    opened: bool,
    control: ExitController,
    finish_reason: str,
    wall_s: float,
    accept_lengths: Sequence[int] = (),
    exit: dict | None = None,
    signal_history: list | None = None,
    probe_calls: int = 0,
) -> GenerationResult:
    """A GenerationResult from an output's token ids, as both backends build it.  ``control``: the
    request's exit controller after it has seen the whole output (it counts the thinking tokens);
    ``opened``: the prompt itself opened the thinking span."""
    generated = list(generated)
    body = generated[:-1] if generated and generated[-1] in stop_ids else generated
    open_at_end = control.in_thinking and finish_reason == "stop"
    reasoning, answer = split_output(tokenizer, body, markers, opened, control.thinking_tokens, open_at_end)
    return GenerationResult(
        mode=mode,
        text=tokenizer.decode(body, skip_special_tokens=False),
        reasoning=reasoning,
        answer=answer,
        token_ids=generated,
        prompt_tokens=len(prompt_ids),
        new_tokens=len(generated),
        thinking_tokens=control.thinking_tokens,
        accept_lengths=list(accept_lengths),
        exited_early=exit is not None,
        exit=exit,
        finish_reason=finish_reason,
        wall_s=wall_s,
        signal_history=list(signal_history or []),
        probe_calls=probe_calls,
    )
