"""The FastAPI app: OpenAI-compatible chat / text completions with reasoning streaming and per-request
early-exit control.  ``create_app(generator, ServeConfig(...))`` builds it around an already loaded
:class:`~specexit.engine.SpecExitGenerator`, so tests and embedders can serve a model in-process.

This module owns the routes and the life of a request: planning (:mod:`.planning`), queueing on the
worker (:mod:`.worker`), then a JSON body or an SSE stream (:mod:`.responses`).  Errors follow
:mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..engine import SpecExitGenerator
from . import responses
from .config import ServeConfig
from .errors import APIError, as_api_error, install_error_handlers
from .events import Delta, Outcome, Started
from .generation import ChatPrompt, GenerationPlan, TextPrompt, context_length, run_generation
from .metrics import Metrics, RequestCounter
from .planning import RequestPlanner, parse_body
from .schemas import ChatCompletionRequest, CompletionRequest, GenerationFields
from .worker import END, Job, QueueFullError, Worker

__all__ = ["ServeConfig", "SpecExitServer", "create_app"]

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}  # endpoint -> metrics label


class _ClientGone(Exception):
    """The client disconnected while we waited for the worker."""


class SpecExitServer:
    """State of one server: the generator, its worker, metrics and the request handlers."""

    def __init__(self, gen: SpecExitGenerator, cfg: ServeConfig) -> None:
        self.gen, self.cfg = gen, cfg
        self.planner = RequestPlanner(gen, cfg)
        self.context = context_length(gen)
        self.metrics = Metrics()
        self.worker = Worker(cfg.max_queue, self.metrics.queue_changed, self.metrics.stopped.inc)
        self.created = int(time.time())

    @property
    def default_mode(self) -> str:
        return self.planner.default_mode

    # ---- endpoints -------------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        body = parse_body(await request.body(), ChatCompletionRequest)
        plan, prompt = self.planner.chat(body)
        return await self.generate(request, "chat", body, plan, prompt)

    async def completions(self, request: Request) -> Response:
        body = parse_body(await request.body(), CompletionRequest)
        plan, prompt = self.planner.completion(body)
        return await self.generate(request, "completions", body, plan, prompt)

    def model_card(self) -> dict[str, Any]:
        p = self.planner
        return {
            "id": self.cfg.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "specexit",
            "max_model_len": self.context,
            "specexit": {
                "draft": p.has_draft,
                "signals": p.signals,
                "default_mode": p.default_mode,
                "default_thresholds": p.exit_config.thresholds,
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

    # ---- running a job ---------------------------------------------------------------------------------
    async def generate(
        self,
        request: Request,
        endpoint: str,
        body: GenerationFields,
        plan: GenerationPlan,
        prompt: ChatPrompt | TextPrompt,
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
                raise as_api_error(first)
            assert isinstance(first, Started)
            self.metrics.queue_wait.observe(max(0.0, first.started_at - job.submitted_at))
            rid = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
            if body.stream:
                watcher.cancel()
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                streaming = True
                chunks = responses.StreamChunks(endpoint, rid, self.cfg.model_name, include_usage)
                return StreamingResponse(
                    self._sse(job, endpoint, chunks, t0),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            outcome = await self._collect(job, watcher, t0)
            self.metrics.latency.labels(endpoint=PATHS[endpoint]).observe(time.perf_counter() - t0)
            return JSONResponse(responses.completion(endpoint, rid, self.cfg.model_name, outcome))
        except _ClientGone:
            self.metrics.cancelled.labels(endpoint=PATHS[endpoint]).inc()
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
                raise as_api_error(event)
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

    async def _sse(self, job: Job, endpoint: str, chunks: responses.StreamChunks, t0: float) -> AsyncIterator[str]:
        finished = False
        try:
            if chunks.chat:
                yield chunks.delta({"role": "assistant", "content": ""})
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
                        out.append(chunks.delta({event.field: event.text}))
                    elif isinstance(event, Outcome):
                        self.metrics.generation_finished(event)
                        out.append(chunks.delta({}, finish=event.finish_reason))
                        if chunks.include_usage:
                            out.append(chunks.usage_line(event))
                        finished = True
                    elif isinstance(event, BaseException):
                        out.append(responses.sse_line(as_api_error(event).body()))
                        finished = True
                if out:
                    yield "".join(out)
            yield "data: [DONE]\n\n"
            self.metrics.latency.labels(endpoint=PATHS[endpoint]).observe(time.perf_counter() - t0)
        finally:
            if not job.done:
                self.worker.cancel(job)
            if not finished:
                self.metrics.cancelled.labels(endpoint=PATHS[endpoint]).inc()


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
    install_error_handlers(app)

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
        server.planner.check_model(model)
        return server.model_card()

    @app.get("/health")
    async def health() -> JSONResponse:
        return server.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    app.add_middleware(RequestCounter, metrics=server.metrics)
    return app
