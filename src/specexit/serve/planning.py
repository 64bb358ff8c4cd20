"""Request planning: a request body, validated, becomes a :class:`GenerationPlan` and a prompt.

Runs on the event loop before the request is queued (no tokenizer needed), so a bad request is
answered at once with a 400 naming the field instead of waiting for the worker.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ValidationError

from ..engine import SpecExitGenerator
from ..errors import SpecExitError
from ..exit_policy import DEFAULT_THRESHOLDS, ExitConfig
from ..sampling import SamplingParams
from .config import ServeConfig
from .errors import APIError, validation_error
from .generation import ChatPrompt, GenerationPlan, TextPrompt
from .schemas import ChatCompletionRequest, CompletionRequest, GenerationFields, SpecExitOptions

MAX_STOPS = 16
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
# arguments of apply_chat_template the server sets itself (or does not support)
_RESERVED_TEMPLATE_KWARGS = frozenset(
    {"conversation", "messages", "tokenize", "add_generation_prompt", "continue_final_message", "return_dict",
     "return_tensors", "chat_template", "tokenizer_kwargs", "tools", "documents", "padding", "truncation"}
)  # fmt: skip


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """The request body as ``model``; a malformed one as the API error naming the field."""
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as e:
        raise validation_error(e) from None


class RequestPlanner:
    """The server's generation defaults, and the rules a request must pass to override them."""

    def __init__(self, gen: SpecExitGenerator, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.has_draft = gen.draft is not None
        self.signals: list[str] = list(gen.draft.signals) if gen.draft is not None else []
        if cfg.default_mode is not None:
            self.default_mode = cfg.default_mode
        elif gen.draft is None:
            self.default_mode = "vanilla"
        else:
            self.default_mode = "specexit" if self.signals and gen.think_end_id is not None else "spec"
        base = cfg.exit_config or ExitConfig(
            thresholds={n: v for n, v in DEFAULT_THRESHOLDS.items() if n in self.signals} or dict(DEFAULT_THRESHOLDS)
        )
        self.exit_config = dataclasses.replace(base, think_start=gen.think_start, think_end=gen.think_end)

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.cfg.model_name:
            raise APIError(
                404,
                f"the model '{model}' does not exist; this server serves '{self.cfg.model_name}'",
                param="model",
                code="model_not_found",
            )

    # ---- the two endpoints -----------------------------------------------------------------------------
    def chat(self, body: ChatCompletionRequest) -> tuple[GenerationPlan, ChatPrompt]:
        self.check_model(body.model)
        if body.max_tokens is not None and body.max_completion_tokens is not None:
            raise APIError(
                400, "give max_tokens or max_completion_tokens, not both", param="max_tokens", code="invalid_value"
            )
        _positive_or_none(body.max_completion_tokens, "max_completion_tokens")
        name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        plan = self.plan(body, body.max_completion_tokens or body.max_tokens, name)
        if body.tools:
            raise APIError(400, "tools are not supported", param="tools", code="unsupported_value")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise APIError(
                400, "only response_format type 'text' is supported", param="response_format", code="unsupported_value"
            )
        kwargs = dict(body.chat_template_kwargs or {})
        if reserved := sorted(set(kwargs) & _RESERVED_TEMPLATE_KWARGS):
            raise APIError(
                400,
                f"chat_template_kwargs may not set {reserved}",
                param="chat_template_kwargs",
                code="invalid_value",
            )
        return plan, ChatPrompt(_messages(body), kwargs)

    def completion(self, body: CompletionRequest) -> tuple[GenerationPlan, TextPrompt]:
        self.check_model(body.model)
        plan = self.plan(body, body.max_tokens, "max_tokens")
        if body.echo or (body.best_of not in (None, 1)) or body.suffix:
            raise APIError(400, "echo, best_of > 1 and suffix are not supported", code="unsupported_value")
        p = body.prompt
        if isinstance(p, list) and p and all(isinstance(x, str) for x in p):
            if len(p) != 1:
                raise APIError(
                    400, "only one prompt per request is supported", param="prompt", code="unsupported_value"
                )
            p = p[0]
        if p is None or p == "" or p == []:
            raise APIError(
                400,
                "'prompt' must be a non-empty string (or a list of token ids)",
                param="prompt",
                code="invalid_value",
            )
        prompt = TextPrompt(text=p) if isinstance(p, str) else TextPrompt(ids=list(p))
        return plan, prompt

    # ---- settings shared by both ---------------------------------------------------------------------
    def plan(self, body: GenerationFields, max_tokens: int | None, max_tokens_name: str) -> GenerationPlan:
        """Validate the generation settings of a request."""
        if body.n is not None and body.n != 1:
            raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")
        if body.logprobs:
            raise APIError(400, "logprobs are not supported", param="logprobs", code="unsupported_value")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"'{name}' is not supported (only 0)", param=name, code="unsupported_value")
        max_new = self.cfg.default_max_tokens if max_tokens is None else max_tokens
        if not 0 < max_new <= self.cfg.max_tokens_cap:
            raise APIError(
                400,
                f"'{max_tokens_name}' must be between 1 and {self.cfg.max_tokens_cap}, got {max_new}",
                param=max_tokens_name,
                code="invalid_value",
            )
        stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        if len(stops) > MAX_STOPS:
            raise APIError(400, f"at most {MAX_STOPS} stop sequences are supported", param="stop", code="invalid_value")
        try:
            sampling = SamplingParams(
                temperature=0.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                top_k=body.top_k or 0,
                seed=body.seed,
            )
        except SpecExitError as e:  # the engine's message starts with the field's name
            name = str(e).split(" ", 1)[0]
            raise APIError(
                400, str(e), param=name if name in _SAMPLING_FIELDS else None, code="invalid_value"
            ) from None
        mode, exit_config = self.exit_settings(body.specexit or SpecExitOptions())
        if body.thinking_token_budget is not None:
            _positive_or_none(body.thinking_token_budget, "thinking_token_budget")
            if mode == "vanilla":
                raise APIError(400, "thinking_token_budget needs speculative decoding: this request runs mode "
                               "'vanilla' (no draft, or specexit.mode='vanilla')", param="thinking_token_budget",
                               code="unsupported_value")  # fmt: skip
            exit_config = dataclasses.replace(exit_config, thinking_budget=body.thinking_token_budget,
                                              budget_at="boundary")  # fmt: skip
        return GenerationPlan(mode, max_new, sampling, exit_config, self.cfg.tree, tuple(s for s in stops if s))

    def exit_settings(self, opts: SpecExitOptions) -> tuple[str, ExitConfig]:
        """The mode and exit rule of a request: the server defaults overridden by its ``specexit`` field."""
        mode = opts.mode
        if opts.enabled is True:
            if mode not in (None, "specexit"):
                raise APIError(
                    400,
                    f"specexit.enabled=true conflicts with mode '{mode}'",
                    "invalid_request_error",
                    "specexit.enabled",
                    "invalid_value",
                )
            mode = "specexit"
        elif opts.enabled is False:
            if mode == "specexit":
                raise APIError(
                    400,
                    "specexit.enabled=false conflicts with mode 'specexit'",
                    "invalid_request_error",
                    "specexit.enabled",
                    "invalid_value",
                )
            mode = mode or ("spec" if self.has_draft else "vanilla")
        mode = mode or self.default_mode
        if mode != "vanilla" and not self.has_draft:
            raise APIError(
                400,
                f"mode '{mode}' needs a draft model; this server has none",
                "invalid_request_error",
                "specexit.mode",
                "invalid_value",
            )
        thresholds = dict(self.exit_config.thresholds)
        if opts.thresholds is not None:
            for name in opts.thresholds.model_fields_set:
                value = getattr(opts.thresholds, name)
                if value is None:
                    thresholds.pop(name, None)
                else:
                    thresholds[name] = value
        changes = {
            k: getattr(opts, k)
            for k in ("smoothing", "alpha", "window", "min_thinking_tokens", "thinking_budget")
            if getattr(opts, k) is not None
        }
        if opts.connectors is not None:
            changes["connectors"] = tuple(opts.connectors)
        cfg = dataclasses.replace(self.exit_config, thresholds=thresholds, **changes)
        try:
            cfg.validate(self.signals, enabled=mode == "specexit")
        except SpecExitError as e:
            raise APIError(400, str(e), param="specexit", code="invalid_value") from None
        return mode, cfg


def _positive_or_none(value: int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise APIError(400, f"'{name}' must be a positive integer, got {value}", param=name, code="invalid_value")


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    if not body.messages:
        raise APIError(400, "'messages' must contain at least one message", param="messages", code="invalid_value")
    out = []
    for i, m in enumerate(body.messages):
        if isinstance(m.content, list):
            bad = [p.type for p in m.content if p.type != "text" or p.text is None]
            if bad:
                raise APIError(
                    400,
                    f"only text content parts are supported, got {bad[0]!r}",
                    param=f"messages.{i}.content",
                    code="unsupported_value",
                )
            text = "\n".join(p.text or "" for p in m.content)
        else:
            text = m.content or ""
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out
