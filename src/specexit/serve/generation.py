"""One generation as the server sees it: prompt -> engine stream -> text deltas per output field.

Runs entirely on the worker thread (the engine and its tokenizer are used from that thread only).
The deltas are decoded here from the engine's token ids, per output field, so that

- the concatenated ``reasoning_content`` / ``content`` deltas equal the non-streamed fields exactly
  (both come from the same :class:`TextAssembler`), and equal the engine's own ``reasoning`` /
  ``answer`` split (same token ids, ``skip_special_tokens=True``, stripped);
- stop sequences can be applied to the answer while streaming: text that could be the start of a
  stop sequence is held back until it is known not to be one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..exit_policy import ExitConfig
from ..proposer import TreeConfig
from ..results import GenerationResult
from ..sampling import SamplingParams


@dataclass
class GenerationPlan:
    """Everything a request asks of the engine, validated on the event loop before queueing."""

    mode: str
    max_new_tokens: int
    sampling: SamplingParams
    exit_config: ExitConfig
    tree: TreeConfig
    stops: tuple[str, ...] = ()


@dataclass
class ChatPrompt:
    messages: list[dict[str, str]]
    template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextPrompt:
    text: str | None = None
    ids: list[int] | None = None


# ---- events the worker hands to the request handler ------------------------------------------------
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
            "mean_accept_length": round(r.mean_accept_length, 4) if r is not None and r.accept_lengths else None,
            "draft_rounds": len(r.accept_lengths) if r is not None else None,
            "generation_s": round(self.generation_s, 4),
        }


@dataclass
class Failed:
    error: BaseException


# ---- text assembly ----------------------------------------------------------------------------------
class TextAssembler:
    """Incremental text of one output field from its token ids.

    ``push`` returns the next delta; ``finish`` the last one.  Held back until known: an incomplete
    UTF-8 character, trailing whitespace (``strip``: the final text is stripped like the engine's
    reasoning / answer) and any tail that might begin a stop sequence.  After a stop sequence the
    field is ``stopped`` and its text ends just before it.
    """

    def __init__(self, decode: Callable[[list[int]], str], strip: bool, stops: Sequence[str] = ()) -> None:
        self.decode, self.strip, self.stops = decode, strip, tuple(s for s in stops if s)
        self.ids: list[int] = []
        self.text = ""  # text emitted so far
        self.stopped = False

    def push(self, ids: list[int]) -> str:
        if self.stopped or not ids:
            return ""
        self.ids += ids
        full = self.decode(self.ids)
        if full.endswith("\ufffd"):  # half a character: wait for the rest
            return ""
        return self._advance(full, final=False)

    def finish(self) -> str:
        return "" if self.stopped else self._advance(self.decode(self.ids), final=True)

    def _advance(self, full: str, final: bool) -> str:
        body = full.lstrip() if self.strip else full
        cut = min((i for i in (body.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            body, final, self.stopped = body[:cut], True, True
        ready = body if final else body[: len(body) - self._stop_prefix(body)]
        if self.strip:
            ready = ready.rstrip()
        if not ready.startswith(self.text):  # a decoder rewrote earlier text: never retract what was sent
            return ""
        delta, self.text = ready[len(self.text) :], ready
        return delta

    def _stop_prefix(self, body: str) -> int:
        """Length of the longest tail of ``body`` that is a proper prefix of a stop sequence."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(body)), best, -1):
                if body.endswith(s[:n]):
                    best = n
                    break
        return best


# ---- the generation -----------------------------------------------------------------------------------
def encode(gen: SpecExitGenerator, prompt: ChatPrompt | TextPrompt) -> list[int]:
    """Prompt token ids: the chat template for chat (as ``gen.encode_prompt`` does), raw text otherwise."""
    tok = gen.tokenizer
    if isinstance(prompt, ChatPrompt):
        if not getattr(tok, "chat_template", None):
            raise ConfigError("the model's tokenizer has no chat template: use /v1/completions with a raw prompt")
        kwargs = {"enable_thinking": True, **prompt.template_kwargs}
        try:
            text = tok.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True, **kwargs)
        except jinja2.TemplateError as e:  # e.g. a template that requires alternating user/assistant turns
            raise ConfigError(f"the model's chat template rejected the messages: {e}") from None
        ids = tok.encode(text, add_special_tokens=False)
    elif prompt.ids is not None:
        vocab = len(tok)
        bad = [i for i in prompt.ids if not 0 <= i < vocab]
        if bad:
            raise ConfigError(f"prompt token ids out of range [0, {vocab}): {bad[:5]}")
        ids = list(prompt.ids)
    else:
        ids = gen.encode_prompt(prompt.text or "", chat=False)
    if not ids:
        raise ConfigError("the prompt is empty after tokenisation")
    return ids


def context_length(gen: SpecExitGenerator) -> int | None:
    cfg = getattr(gen.target.model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) else None


def run_generation(
    gen: SpecExitGenerator, plan: GenerationPlan, prompt: ChatPrompt | TextPrompt
) -> Iterator[Started | Delta | Outcome]:
    """Generate and yield events: ``Started``, then ``Delta``s, then one ``Outcome``.

    Closing the iterator (client gone) stops the engine after its current round.  Engine errors raised
    before ``Started`` (bad settings, prompt too long) propagate to the caller as exceptions.
    """
    ids = encode(gen, prompt)
    ctx = context_length(gen)
    if ctx is not None and len(ids) + plan.max_new_tokens > ctx:
        raise ConfigError(
            f"the prompt ({len(ids)} tokens) plus max_tokens ({plan.max_new_tokens}) exceeds the model's "
            f"context length ({ctx}); shorten the prompt or lower max_tokens"
        )
    stream = gen.stream(
        input_ids=ids,
        mode=plan.mode,
        max_new_tokens=plan.max_new_tokens,
        sampling=plan.sampling,
        tree=plan.tree,
        exit_config=plan.exit_config,
    )
    t0 = time.perf_counter()
    yield Started(prompt_tokens=len(ids), started_at=t0)
    route = _ChatRouter(gen, ids, plan.stops) if isinstance(prompt, ChatPrompt) else _TextRouter(gen, plan.stops)
    chunks = iter(stream)
    n_tokens = 0
    try:
        for chunk in chunks:
            n_tokens += len(chunk.token_ids)
            yield from route.push(chunk.token_ids)
            if route.stopped:
                break
        yield from route.finish()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    result = stream.result if not route.stopped else None
    yield Outcome(
        finish_reason="stop" if route.stopped else (result.finish_reason if result else "length"),
        prompt_tokens=len(ids),
        completion_tokens=result.new_tokens if result else n_tokens,
        reasoning_tokens=result.thinking_tokens if result else route.reasoning_tokens,
        texts=route.texts(),
        mode=plan.mode,
        result=result,
        generation_s=time.perf_counter() - t0,
    )


class _ChatRouter:
    """Sends tokens to ``reasoning_content`` or ``content`` following the think markers.

    Mirrors :func:`specexit.chat.split_reasoning_ids`: thinking is open at the start when the prompt
    opened it; the first think-end marker switches to the answer; markers are not text; a later marker
    is part of the answer (as in the engine's split).  Stop ids never become text.
    """

    def __init__(self, gen: SpecExitGenerator, prompt_ids: list[int], stops: Sequence[str]) -> None:
        def decode(ids: list[int]) -> str:
            return gen.tokenizer.decode(ids, skip_special_tokens=True)

        self.start_id, self.end_id, self.stop_ids = gen.think_start_id, gen.think_end_id, gen.stop_ids
        last_start = max((i for i, t in enumerate(prompt_ids) if t == self.start_id), default=-1)
        last_end = max((i for i, t in enumerate(prompt_ids) if t == self.end_id), default=-1)
        self.thinking = last_start > last_end
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


class _TextRouter:
    """Raw completions: the whole completion is one text (markers included, as ``result.text``)."""

    def __init__(self, gen: SpecExitGenerator, stops: Sequence[str]) -> None:
        self.stop_ids = gen.stop_ids
        self.text = TextAssembler(lambda ids: gen.tokenizer.decode(ids, skip_special_tokens=False), False, stops)
        self.reasoning_tokens = 0  # not tracked without the engine result

    @property
    def stopped(self) -> bool:
        return self.text.stopped

    def push(self, ids: list[int]) -> Iterator[Delta]:
        if d := self.text.push([t for t in ids if t not in self.stop_ids]):
            yield Delta("text", d)

    def finish(self) -> Iterator[Delta]:
        if d := self.text.finish():
            yield Delta("text", d)

    def texts(self) -> dict[str, str]:
        return {"text": self.text.text}
