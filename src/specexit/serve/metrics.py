"""Prometheus metrics of the server (``GET /metrics``); the list is documented in docs/serving.md.

Each app gets its own registry, so several servers (tests) can live in one process.  Tokens "saved"
by early exit are not estimated (that would need the counterfactual run): we export where exits
happen instead -- the number of exits and the thinking tokens kept up to each exit.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from .events import Outcome

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
ACCEPT_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384)
KNOWN_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


def endpoint_label(path: str) -> str:
    """Route label with bounded cardinality (arbitrary 404 paths all count as "other")."""
    return path if path in KNOWN_PATHS else "other"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes etc. (Linux)
        p = "specexit_"
        self.requests = Counter(
            p + "requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.cancelled = Counter(
            p + "requests_cancelled", "requests whose client disconnected before the end", ["endpoint"], registry=r
        )
        self.stopped = Counter(
            p + "generations_stopped", "generations stopped mid-way because the client went away", registry=r
        )
        self.generations = Counter(
            p + "generations", "finished generations by mode and finish reason", ["mode", "finish_reason"], registry=r
        )
        self.prompt_tokens = Counter(p + "prompt_tokens", "prompt tokens of finished generations", registry=r)
        self.completion_tokens = Counter(
            p + "generated_tokens", "generated tokens (reasoning + answer + markers)", registry=r
        )
        self.thinking_tokens = Counter(p + "thinking_tokens", "generated tokens inside the thinking span", registry=r)
        self.exits = Counter(
            p + "early_exits", "generations whose thinking span was ended by the exit policy", registry=r
        )
        self.exit_thinking_tokens = Counter(
            p + "exit_thinking_tokens", "thinking tokens kept up to each early exit (sum over exits)", registry=r
        )
        self.exit_position = Histogram(
            p + "exit_position_tokens", "thinking tokens at early exit", buckets=TOKEN_BUCKETS, registry=r
        )
        self.exit_rate = Gauge(
            p + "exit_rate", "early exits / finished generations in mode specexit (since start)", registry=r
        )
        self.accept_length = Histogram(
            p + "accept_length",
            "tokens accepted per draft round (incl. the bonus token)",
            buckets=ACCEPT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            p + "request_latency_seconds", "end-to-end latency of generation requests (arrival to last byte)",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            p + "queue_wait_seconds", "time a request waited for the worker", buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            p + "time_to_first_token_seconds", "arrival to the first text delta", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(p + "queue_depth", "requests waiting for the worker", registry=r)
        self.busy = Gauge(p + "busy", "1 while a generation runs", registry=r)
        self._specexit_runs = 0
        self._specexit_exits = 0

    def queue_changed(self, waiting: int, busy: bool) -> None:
        self.queue_depth.set(waiting)
        self.busy.set(1 if busy else 0)

    def generation_finished(self, out: Outcome) -> None:
        self.generations.labels(mode=out.mode, finish_reason=out.finish_reason).inc()
        self.prompt_tokens.inc(out.prompt_tokens)
        self.completion_tokens.inc(out.completion_tokens)
        self.thinking_tokens.inc(out.reasoning_tokens)
        r = out.result
        if r is None:
            return
        for n in r.accept_lengths:
            self.accept_length.observe(n)
        if r.exit:
            self.exits.inc()
            self.exit_thinking_tokens.inc(r.exit["thinking_tokens"])
            self.exit_position.observe(r.exit["thinking_tokens"])
        if out.mode == "specexit":
            self._specexit_runs += 1
            self._specexit_exits += bool(r.exit)
            self.exit_rate.set(self._specexit_exits / self._specexit_runs)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
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
