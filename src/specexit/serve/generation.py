"""One generation as the server sees it: prompt -> engine stream -> text deltas per output field.

Runs entirely on the worker thread (the engine and its tokenizer are used from that thread only).
The request's settings arrive as a :class:`GenerationPlan` (validated on the event loop, see
:mod:`.planning`); the text of each field is assembled by :mod:`.text`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jinja2

from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..exit_policy import ExitConfig
from ..proposer import TreeConfig
from ..sampling import SamplingParams
from .events import Delta, Outcome, Started
from .text import ChatRouter, TextRouter


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
    route = ChatRouter(gen, ids, plan.stops) if isinstance(prompt, ChatPrompt) else TextRouter(gen, ids, plan.stops)
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
    # after a stop sequence the engine was closed mid-generation: its result is then the partial one
    # (finish_reason "abort"), with the exit record, accept lengths and the token counts up to the cut
    result = getattr(stream, "result", None)
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
