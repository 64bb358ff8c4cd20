"""Request bodies of the OpenAI-compatible API, and the ``specexit`` extension field.

Validation is strict (JSON types are not coerced: ``"max_tokens": "10"`` is an error, as with
OpenAI) so that a client bug shows up as a clear 400 instead of a silently different request.
Unknown top-level fields are ignored (OpenAI clients send many optional ones), but fields that would
change the output in a way this server cannot honour are rejected in :mod:`.planning`.  Inside the
``specexit`` object unknown fields are errors: a misspelt threshold must not silently fall back to a
default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["vanilla", "spec", "specexit"]
Smoothing = Literal["ewma", "momentum", "window", "none"]


class _Lenient(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Thresholds(_Closed):
    """Per-signal exit thresholds; a field left out keeps the server default, ``null`` turns the signal off."""

    confidence: float | None = None
    progress: float | None = None
    remain: float | None = None


class SpecExitOptions(_Closed):
    """The ``specexit`` body field: per-request control of speculative decoding and early exit."""

    enabled: bool | None = None  # False: no early exit (mode spec); True: mode specexit
    mode: Mode | None = None
    thresholds: Thresholds | None = None
    smoothing: Smoothing | None = None
    alpha: float | None = None
    window: int | None = None
    min_thinking_tokens: int | None = None
    connectors: list[str] | None = None
    thinking_budget: int | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class TextPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class GenerationFields(_Lenient):
    """Fields shared by chat and text completions."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI, but accepted by vLLM / SGLang clients
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    specexit: SpecExitOptions | None = None
    # vLLM's name: end thinking within N tokens, at the last paragraph / sentence / word end that fits
    thinking_token_budget: int | None = None
    # known OpenAI fields this server cannot honour: rejected when set to anything but the neutral value
    logprobs: bool | int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(default_factory=list)
    max_completion_tokens: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # e.g. {"enable_thinking": false} (vLLM convention)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(GenerationFields):
    prompt: str | list[str] | list[int] | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None
