"""The thinking span: how it is delimited, what an exit forces, and where it lies in an output.

Pure Python (no torch).  A thinking model delimits the span with think-start / think-end tokens; a chat
model without think tokens has an implicit span (see ``answer_trigger``): open from the start of
generation until answer markers appear, and an exit forces an answer trigger of several tokens.  Both
backends, the trace generator and the exit controller read the span through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .answer_trigger import DEFAULT_ANSWER_MARKERS, last_paragraph
from .errors import ConfigError


@dataclass(frozen=True)
class SpanMarkers:
    """Token ids that delimit the thinking span of one tokenizer, and what an exit forces."""

    think_start_id: int | None
    think_end_id: int | None
    exit_ids: tuple[int, ...]  # forced to end the span: the think-end token, or the answer trigger's tokens
    answer_markers: tuple[str, ...] | None = None  # set for an implicit span (no think tokens)

    @property
    def implicit(self) -> bool:
        return self.answer_markers is not None

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        think_start: str = "<think>",
        think_end: str = "</think>",
        answer_trigger: str | None = None,
        answer_markers: Sequence[str] = DEFAULT_ANSWER_MARKERS,
    ) -> SpanMarkers:
        """Tagged span from the tokenizer's vocabulary, or, with ``answer_trigger``, an implicit one."""
        if answer_trigger is None:
            vocab = tokenizer.get_vocab()
            end = vocab.get(think_end)
            return cls(vocab.get(think_start), end, (end,) if end is not None else ())
        if not answer_trigger.strip():
            raise ConfigError("the answer trigger is empty; give the text that makes the model answer")
        if not tuple(answer_markers):
            raise ConfigError("an answer trigger needs at least one answer marker (e.g. \\boxed)")
        trigger = tuple(tokenizer.encode(answer_trigger, add_special_tokens=False))
        return cls(None, None, trigger, tuple(answer_markers))

    def asks_answer(self, prompt_ids: Sequence[int]) -> bool:
        """An implicit-span prompt that already ends with the answer trigger (thinking skipped)."""
        n = len(self.exit_ids)
        return self.implicit and n > 0 and list(prompt_ids[-n:]) == list(self.exit_ids)


def split_reasoning_ids(
    ids: list[int], think_start_id: int | None, think_end_id: int | None, opened: bool
) -> tuple[list[int], list[int]]:
    """(reasoning ids, answer ids) of a completion.  ``opened``: the prompt already opened thinking.
    Everything before the think-end marker is reasoning (a generated think-start is dropped); with no
    marker, the whole completion is reasoning if thinking was opened, else answer."""
    if think_end_id is not None and think_end_id in ids:
        cut = ids.index(think_end_id)
        head = ids[:cut]
        if think_start_id is not None and think_start_id in head:
            head = head[head.index(think_start_id) + 1 :]
        return head, ids[cut + 1 :]
    if think_start_id is not None and think_start_id in ids:
        return ids[ids.index(think_start_id) + 1 :], []
    return (list(ids), []) if opened else ([], list(ids))


def prompt_opens_thinking(prompt_ids: Sequence[int], think_start_id: int | None, think_end_id: int | None) -> bool:
    """Whether a prompt leaves the thinking span open (its last think marker is think-start, as in a chat
    template that ends with ``<think>``)."""
    last_start = max((i for i, t in enumerate(prompt_ids) if t == think_start_id), default=-1)
    last_end = max((i for i, t in enumerate(prompt_ids) if t == think_end_id), default=-1)
    return last_start > last_end


def split_output(
    tokenizer,
    body: Sequence[int],
    markers: SpanMarkers,
    opened: bool,
    thinking_tokens: int,
    open_at_end: bool,
) -> tuple[str, str]:
    """(reasoning, answer) texts of an output without its stop token.  ``thinking_tokens``: the thinking
    length the exit policy counted (the implicit span has no marker token to split at); ``open_at_end``:
    the span was still open when the output stopped by itself (not at the length cap)."""
    body = list(body)
    if markers.implicit:
        reasoning_ids, answer_ids = body[:thinking_tokens], body[thinking_tokens:]
    else:
        reasoning_ids, answer_ids = split_reasoning_ids(body, markers.think_start_id, markers.think_end_id, opened)
    reasoning = tokenizer.decode(reasoning_ids, skip_special_tokens=True)
    answer = tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
    if markers.implicit and not answer and open_at_end:
        # the model ended without any answer marker: its last paragraph is its answer
        answer = last_paragraph(reasoning)
    return reasoning.strip(), answer


def thinking_span(
    prompt_ids: Sequence[int], output_ids: Sequence[int], think_start_id: int | None, think_end_id: int
) -> tuple[int, int] | None:
    """[start, end) of the thinking tokens inside ``output_ids``, or None when the output has no
    complete thinking span.  The span is opened by the prompt (a template ending in the think-start
    token) or by a generated think-start token, and closed by the first think-end token."""
    if think_end_id not in output_ids:
        return None
    end = list(output_ids).index(think_end_id)
    head = list(output_ids[:end])
    if think_start_id is not None and think_start_id in head:
        return head.index(think_start_id) + 1, end
    return (0, end) if prompt_opens_thinking(prompt_ids, think_start_id, think_end_id) else None
