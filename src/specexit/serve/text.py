"""The text of each output field, decoded on the worker thread from the engine's token ids.

Decoded here per field rather than taken from ``StreamChunk.text`` (which keeps special tokens and
the final stop token), so that

- the concatenated ``reasoning_content`` / ``content`` deltas equal the non-streamed fields exactly
  (both come from the same :class:`TextAssembler`), and equal the engine's own ``reasoning`` /
  ``answer`` split (same token ids, ``skip_special_tokens=True``, stripped);
- stop sequences can be applied to the answer while streaming: text that could be the start of a
  stop sequence is held back until it is known not to be one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

from ..detokenize import Decode, IncrementalDetokenizer
from ..span import prompt_opens_thinking
from .events import Delta

if TYPE_CHECKING:
    from ..engine import SpecExitGenerator


class TextAssembler:
    """Incremental text of one output field from its token ids, in O(new tokens) per push.

    ``push`` returns the next delta; ``finish`` the last one and ends the field; the deltas concatenate
    to ``text``.  Held back until known: an incomplete UTF-8 character, trailing whitespace (``strip``:
    the final text is stripped like the engine's reasoning / answer) and any tail that might begin a
    stop sequence.  After a stop sequence the field is ``stopped`` and its text ends just before it.
    """

    def __init__(self, decode: Decode, strip: bool, stops: Sequence[str] = ()) -> None:
        self.decode, self.strip, self.stops = decode, strip, tuple(s for s in stops if s)
        self.detok = IncrementalDetokenizer(decode=decode)
        self.stopped = False
        self._finished = False
        self._begun = not strip  # with strip: leading whitespace is dropped until the first other character
        self._held = ""  # decoded but not sent yet (trailing whitespace, a possible start of a stop sequence)
        self._sent: list[str] = []

    @property
    def text(self) -> str:
        """The text sent so far (the whole field once finished)."""
        if len(self._sent) > 1:
            self._sent[:] = ["".join(self._sent)]
        return self._sent[0] if self._sent else ""

    def push(self, ids: list[int]) -> str:
        if self.stopped or self._finished or not ids:
            return ""
        new = self.detok.push(ids)
        if not new:
            return ""  # the held text is unchanged, so is what of it can go
        if not self._begun:
            new = new.lstrip()
            self._begun = bool(new)
        # only the held tail needs searching: a possible start of a stop sequence is never sent
        held = self._held + new
        cut = self._first_stop(held)
        if cut >= 0:
            held, self.stopped = held[:cut], True
        ready = held if self.stopped else held[: len(held) - self._stop_prefix(held)]
        if self.strip:
            ready = ready.rstrip()
        self._held = held[len(ready) :]
        return self._send(ready)

    def finish(self) -> str:
        """The rest, from one decoding of the whole field: the final text is exactly that decoding's
        (stripped, cut at a stop sequence), also where a decoder rewrote text across the window of the
        incremental decoding and so held it back."""
        if self.stopped or self._finished:
            return ""
        self._finished = True
        body = self.decode(self.detok.ids)
        if self.strip:
            body = body.lstrip()
        cut = self._first_stop(body)
        if cut >= 0:
            body, self.stopped = body[:cut], True
        if self.strip:
            body = body.rstrip()
        sent = self.text
        if not body.startswith(sent):  # a decoder rewrote text already sent: never retract it
            return ""
        return self._send(body[len(sent) :])

    def _send(self, delta: str) -> str:
        if delta:
            self._sent.append(delta)
        return delta

    def _first_stop(self, text: str) -> int:
        return min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)

    def _stop_prefix(self, body: str) -> int:
        """Length of the longest tail of ``body`` that is a proper prefix of a stop sequence."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(body)), best, -1):
                if body.endswith(s[:n]):
                    best = n
                    break
        return best


class ChatRouter:
    """Sends tokens to ``reasoning_content`` or ``content`` following the think markers.

    Follows :func:`specexit.span.split_reasoning_ids` as far as streaming can (docs/serving.md): thinking
    is open at the start when the prompt opened it; the first think-end marker switches to the answer;
    markers are not text; a later marker is part of the answer.  Stop ids never become text.
    """

    def __init__(self, gen: SpecExitGenerator, prompt_ids: list[int], stops: Sequence[str]) -> None:
        decode = partial(gen.tokenizer.decode, skip_special_tokens=True)
        self.start_id, self.end_id, self.stop_ids = gen.think_start_id, gen.think_end_id, gen.stop_ids
        self.thinking = prompt_opens_thinking(prompt_ids, self.start_id, self.end_id)
        self.seen_start = self.thinking
        self.seen_end = False
        self.reasoning = TextAssembler(decode, strip=True)
        self.answer = TextAssembler(decode, strip=True, stops=stops)
        self.reasoning_tokens = 0

    @property
    def stopped(self) -> bool:
        return self.answer.stopped

    def push(self, ids: list[int]) -> Iterator[Delta]:
        run: list[int] = []
        for t in ids:
            if t in self.stop_ids:
                continue
            if t == self.end_id and not self.seen_end:
                yield from self._flush(run)
                run = []
                self.seen_end, self.thinking = True, False
                if tail := self.reasoning.finish():
                    yield Delta("reasoning_content", tail)
                continue
            if t == self.start_id and not self.seen_end and not self.seen_start:
                yield from self._flush(run)
                run = []
                self.seen_start = self.thinking = True
                continue
            run.append(t)
        yield from self._flush(run)

    def _flush(self, run: list[int]) -> Iterator[Delta]:
        if not run:
            return
        if self.thinking:
            self.reasoning_tokens += len(run)
            if d := self.reasoning.push(run):
                yield Delta("reasoning_content", d)
        elif d := self.answer.push(run):
            yield Delta("content", d)

    def finish(self) -> Iterator[Delta]:
        if d := self.reasoning.finish():
            yield Delta("reasoning_content", d)
        if d := self.answer.finish():
            yield Delta("content", d)

    def texts(self) -> dict[str, str]:
        return {"reasoning_content": self.reasoning.text, "content": self.answer.text}


class TextRouter:
    """Raw completions: the whole completion is one text (markers included, as ``result.text``).

    Counts the reasoning tokens as :class:`ChatRouter` routes them (the same marker rule), for the usage
    of a generation whose engine result is unknown."""

    def __init__(self, gen: SpecExitGenerator, prompt_ids: list[int], stops: Sequence[str]) -> None:
        self.stop_ids = gen.stop_ids
        self.text = TextAssembler(partial(gen.tokenizer.decode, skip_special_tokens=False), False, stops)
        self.start_id, self.end_id = gen.think_start_id, gen.think_end_id
        self.thinking = prompt_opens_thinking(prompt_ids, self.start_id, self.end_id)
        self.seen_start, self.seen_end = self.thinking, False
        self.reasoning_tokens = 0

    @property
    def stopped(self) -> bool:
        return self.text.stopped

    def push(self, ids: list[int]) -> Iterator[Delta]:
        kept = [t for t in ids if t not in self.stop_ids]
        for t in kept:
            if t == self.end_id and not self.seen_end:
                self.seen_end, self.thinking = True, False
            elif t == self.start_id and not self.seen_end and not self.seen_start:
                self.seen_start = self.thinking = True
            elif self.thinking:
                self.reasoning_tokens += 1
        if d := self.text.push(kept):
            yield Delta("text", d)

    def finish(self) -> Iterator[Delta]:
        if d := self.text.finish():
            yield Delta("text", d)

    def texts(self) -> dict[str, str]:
        return {"text": self.text.text}
