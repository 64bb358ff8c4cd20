"""The FastAPI app: OpenAI-compatible chat / text completions with reasoning streaming and per-request
early-exit control.  ``create_app(generator, ServeConfig(...))`` builds it around an already loaded
:class:`~specexit.engine.SpecExitGenerator`, so tests and embedders can serve a model in-process.

Error model (docs/serving.md): every error is ``{"error": {"message", "type", "param", "code"}}``;
400 for anything wrong with the request (malformed JSON, wrong types, bad values, unsupported
options, engine ``SpecExitError``), 404 for an unknown model or route, 503 when the queue is full,
500 for a bug.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import SpecExitGenerator
from ..errors import SpecExitError
from ..exit_policy import DEFAULT_THRESHOLDS, ExitConfig
from ..proposer import TreeConfig
from ..sampling import SamplingParams
from .generation import (
    ChatPrompt,
    Delta,
    GenerationPlan,
    Outcome,
    Started,
    TextPrompt,
    context_length,
    run_generation,
)
from .metrics import Metrics, endpoint_label
from .schemas import ChatCompletionRequest, CompletionRequest, SpecExitOptions, _GenerationFields
from .worker import END, Job, QueueFullError, Worker

log = logging.getLogger("specexit.serve")

MAX_STOPS = 16
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
# arguments of apply_chat_template the server sets itself (or does not support)
_RESERVED_TEMPLATE_KWARGS = frozenset(
    {"conversation", "messages", "tokenize", "add_generation_prompt", "continue_final_message", "return_dict",
     "return_tensors", "chat_template", "tokenizer_kwargs", "tools", "documents", "padding", "truncation"}
)  # fmt: skip


@dataclass
class ServeConfig:
    """Server-wide settings; requests may override generation settings within these bounds."""

    model_name: str = "specexit"
    max_queue: int = 16  # requests allowed to wait behind the running one
    max_tokens_cap: int = 8192  # largest max_tokens a request may ask for
    default_max_tokens: int = 1024
    default_mode: str | None = None  # None: specexit if the draft predicts signals, spec with a draft, else vanilla
    tree: TreeConfig = field(default_factory=TreeConfig)
    exit_config: ExitConfig | None = None  # default exit rule (None: the paper's thresholds the draft supports)


class APIError(Exception):
    """An OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class _ClientGone(Exception):
    """The client disconnected while we waited for the worker."""


class _RequestCounter:
    """ASGI middleware counting every HTTP response by endpoint and status (streams count as sent)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counted_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            self.metrics.requests.labels(endpoint=endpoint_label(scope.get("path", "")), status=str(status)).inc()


def _validation_error(e: ValidationError) -> APIError:
    """The first pydantic error as a 400 naming the offending field."""
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {err['msg']}", code="invalid_json")
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    if err["type"] == "extra_forbidden":
        return APIError(400, f"unknown field '{loc}'", param=loc, code="unknown_field")
    if err["type"] in ("model_type", "dict_type") and not loc:
        return APIError(400, "the request body must be a JSON object", code="invalid_type")
    return APIError(400, f"invalid value for '{loc}': {err['msg']}", param=loc or None, code="invalid_type")


# pydantic names union members in error locations ("stop.str", "content.list[TextPart]"): drop those tags
_UNION_TAGS = {"str", "int", "float", "bool", "list[str]", "list[int]", "list[TextPart]", "function-after"}


def _positive_or_none(value: int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise APIError(400, f"'{name}' must be a positive integer, got {value}", param=name, code="invalid_value")


class SpecExitServer:
    """State of one server: the generator, its worker, metrics and the request handlers."""

    def __init__(self, gen: SpecExitGenerator, cfg: ServeConfig) -> None:
        self.gen, self.cfg = gen, cfg
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
        self.context = context_length(gen)
        self.metrics = Metrics()
        self.worker = Worker(cfg.max_queue, self.metrics.queue_changed, self.metrics.stopped.inc)
        self.created = int(time.time())

    # ---- request -> plan -----------------------------------------------------------------------------
    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.cfg.model_name:
            raise APIError(
                404,
                f"the model '{model}' does not exist; this server serves '{self.cfg.model_name}'",
                param="model",
                code="model_not_found",
            )

    def plan(self, body: _GenerationFields, max_tokens: int | None, max_tokens_name: str) -> GenerationPlan:
        """Validate the generation settings of a request (no tokenizer needed: runs on the event loop)."""
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
        mode, exit_config = self._exit_settings(body.specexit or SpecExitOptions())
        return GenerationPlan(mode, max_new, sampling, exit_config, self.cfg.tree, tuple(s for s in stops if s))

    def _exit_settings(self, opts: SpecExitOptions) -> tuple[str, ExitConfig]:
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
            mode = mode or ("spec" if self.gen.draft is not None else "vanilla")
        mode = mode or self.default_mode
        if mode != "vanilla" and self.gen.draft is None:
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

    # ---- running a job ---------------------------------------------------------------------------------
    async def generate(
        self, request: Request, endpoint: str, body: _GenerationFields, plan: GenerationPlan, prompt: Any
    ) -> Response:
        t0 = time.perf_counter()
        job = Job(partial(run_generation, self.gen, plan, prompt), asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except QueueFullError as e:
            raise APIError(503, f"{e}; retry later", type="server_error", code="queue_full") from None
        watcher = asyncio.ensure_future(_until_disconnect(request))
        streaming = False  # once the stream is handed to starlette, its generator owns the job
        try:
            first = await _next(job, watcher)
            if first is END:
                raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
            if isinstance(first, BaseException):
                raise _as_api_error(first)
            assert isinstance(first, Started)
            self.metrics.queue_wait.observe(max(0.0, first.started_at - job.submitted_at))
            rid = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
            if body.stream:
                watcher.cancel()
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                streaming = True
                return StreamingResponse(
                    self._sse(job, endpoint, rid, t0, include_usage),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            outcome = await self._collect(job, watcher, t0)
            self.metrics.latency.labels(endpoint=_PATHS[endpoint]).observe(time.perf_counter() - t0)
            return JSONResponse(self._response(endpoint, rid, outcome))
        except _ClientGone:
            self.metrics.cancelled.labels(endpoint=_PATHS[endpoint]).inc()
            return Response(status_code=499)  # nobody reads it; logged like nginx's "client closed request"
        finally:
            watcher.cancel()
            if not streaming and not job.done:  # client gone, error or server shutdown: free the worker
                self.worker.cancel(job)

    async def _collect(self, job: Job, watcher: asyncio.Future, t0: float) -> Outcome:
        outcome: Outcome | None = None
        first_delta = True
        while (event := await _next(job, watcher)) is not END:
            if isinstance(event, BaseException):
                raise _as_api_error(event)
            if isinstance(event, Delta) and first_delta:
                first_delta = False
                self.metrics.ttft.observe(time.perf_counter() - t0)
            elif isinstance(event, Outcome):
                outcome = event
                self.metrics.generation_finished(event)
        if outcome is None:
            raise APIError(
                503, "the generation was stopped (server shutting down)", "server_error", None, "shutting_down"
            )
        return outcome

    async def _sse(self, job: Job, endpoint: str, rid: str, t0: float, include_usage: bool) -> AsyncIterator[str]:
        chat = endpoint == "chat"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        finished = False

        def line(choices: list[dict[str, Any]], usage: Outcome | None = None) -> str:
            data: dict[str, Any] = {
                "id": rid, "object": obj, "created": created, "model": self.cfg.model_name, "choices": choices
            }  # fmt: skip
            if include_usage:
                data["usage"] = _usage(usage) if usage is not None else None
            return _sse_line(data)

        def chunk(delta: dict[str, str], finish: str | None = None) -> str:
            if chat:
                return line([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
            return line([{"index": 0, "text": delta.get("text", ""), "logprobs": None, "finish_reason": finish}])

        try:
            if chat:
                yield chunk({"role": "assistant", "content": ""})
            first_delta, done = True, False
            while not done:
                # everything the worker already produced goes out in one write (fewer sends when the loop lags)
                out = []
                for event in [await job.next(), *job.drain()]:
                    if event is END:
                        done = True
                    elif isinstance(event, Delta):
                        if first_delta:
                            first_delta = False
                            self.metrics.ttft.observe(time.perf_counter() - t0)
                        out.append(chunk({event.field: event.text}))
                    elif isinstance(event, Outcome):
                        self.metrics.generation_finished(event)
                        out.append(chunk({}, finish=event.finish_reason))
                        if include_usage:
                            out.append(line([], usage=event))
                        finished = True
                    elif isinstance(event, BaseException):
                        out.append(_sse_line(_as_api_error(event).body()))
                        finished = True
                if out:
                    yield "".join(out)
            yield "data: [DONE]\n\n"
            self.metrics.latency.labels(endpoint=_PATHS[endpoint]).observe(time.perf_counter() - t0)
        finally:
            if not job.done:
                self.worker.cancel(job)
            if not finished:
                self.metrics.cancelled.labels(endpoint=_PATHS[endpoint]).inc()

    def _response(self, endpoint: str, rid: str, out: Outcome) -> dict[str, Any]:
        base = {"id": rid, "created": int(time.time()), "model": self.cfg.model_name}
        if endpoint == "chat":
            message = {
                "role": "assistant",
                "content": out.texts["content"],
                "reasoning_content": out.texts["reasoning_content"] or None,
            }
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": out.finish_reason}
            return {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(out)}
        choice = {"index": 0, "text": out.texts["text"], "logprobs": None, "finish_reason": out.finish_reason}
        return {**base, "object": "text_completion", "choices": [choice], "usage": _usage(out)}

    # ---- endpoints -------------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        body = await _parse(request, ChatCompletionRequest)
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
        prompt = ChatPrompt(_messages(body), kwargs)
        return await self.generate(request, "chat", body, plan, prompt)

    async def completions(self, request: Request) -> Response:
        body = await _parse(request, CompletionRequest)
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
        return await self.generate(request, "completions", body, plan, prompt)

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.cfg.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "specexit",
            "max_model_len": self.context,
            "specexit": {
                "draft": self.gen.draft is not None,
                "signals": self.signals,
                "default_mode": self.default_mode,
                "default_thresholds": self.exit_config.thresholds,
            },
        }

    def health(self) -> JSONResponse:
        alive = self.worker.alive
        body = {
            "status": "ok" if alive else "unavailable",
            "model": self.cfg.model_name,
            "busy": self.worker.busy,
            "queue_depth": self.worker.waiting,
            "max_queue": self.cfg.max_queue,
        }
        return JSONResponse(body, status_code=200 if alive else 503)


_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def _usage(out: Outcome) -> dict[str, Any]:
    return {
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "total_tokens": out.prompt_tokens + out.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
        "specexit": out.specexit_usage(),
    }


def _sse_line(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


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


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as e:
        raise _validation_error(e) from None


def _as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, SpecExitError):
        return APIError(400, str(e), code="invalid_value")
    return APIError(500, f"internal error: {type(e).__name__}", type="server_error", code="internal_error")


async def _until_disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _next(job: Job, watcher: asyncio.Future) -> Any:
    """The job's next event, or ``_ClientGone`` if the client leaves first."""
    getter = asyncio.ensure_future(job.next())
    done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    raise _ClientGone


def create_app(gen: SpecExitGenerator, cfg: ServeConfig | None = None) -> FastAPI:
    """The ASGI app serving ``gen``; its worker thread starts and stops with the app's lifespan."""
    from contextlib import asynccontextmanager

    server = SpecExitServer(gen, cfg or ServeConfig())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.worker.stop)

    app = FastAPI(title="specexit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return APIError(e.status_code, str(e.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _bug(_request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=e)
        return _as_api_error(e).response()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await server.chat_completions(request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.completions(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [server.model_card()]}

    @app.get("/v1/models/{model}")
    async def model(model: str) -> dict[str, Any]:
        server.check_model(model)
        return server.model_card()

    @app.get("/health")
    async def health() -> JSONResponse:
        return server.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    app.add_middleware(_RequestCounter, metrics=server.metrics)
    return app
