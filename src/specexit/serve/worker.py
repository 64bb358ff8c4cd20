"""A single worker thread in front of the engine, with a bounded first-come-first-served queue.

The engine is batch size 1 and not thread-safe, so exactly one generation runs at a time, on one
thread that owns the model and the tokenizer.  Requests wait in FIFO order; when ``max_queue``
requests are already waiting behind the running one, ``submit`` refuses (the server answers 503)
instead of letting latency grow without bound.  A request whose client went away is cancelled: taken
out of the queue if it is still waiting, or stopped after the engine's current round if it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import SpecExitError

log = logging.getLogger("specexit.serve")

END = object()  # last item of every job's event stream


class QueueFullError(Exception):
    """Raised by ``Worker.submit`` when the wait queue is full."""


class Job:
    """One request's work: ``work()`` returns an iterator of events, run on the worker thread; the events
    reach the request's event loop through an asyncio queue.  An exception from ``work`` becomes an
    event (the exception object itself), followed by ``END``."""

    def __init__(self, work: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop) -> None:
        self.work, self.loop = work, loop
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self._cancel = threading.Event()
        self.submitted_at = time.perf_counter()
        self.started_at: float | None = None
        self.done = False

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def post(self, item: Any) -> None:
        """Hand an event to the request's loop (from the worker thread); a closed loop cancels the job."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancel.set()

    async def next(self) -> Any:
        return await self.events.get()

    def drain(self) -> list[Any]:
        """The events already waiting (without blocking)."""
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out


class Worker:
    def __init__(
        self,
        max_queue: int,
        on_change: Callable[[int, bool], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        """``on_change(waiting, busy)`` is called whenever the queue depth or the busy state changes,
        ``on_stopped()`` when a running generation is stopped because its client went away."""
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.max_queue = max_queue
        self.on_change, self.on_stopped = on_change, on_stopped
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- state ---------------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._pending), self._running is not None)

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="specexit-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything and wait (bounded) for the current engine round to end."""
        with self._cond:
            self._stopping = True
            for job in self._pending:
                job._cancel.set()
                job.post(END)
            self._pending.clear()
            if self._running is not None:
                self._running._cancel.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ---- requests ------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise QueueFullError("the server is shutting down")
            # the running job does not count: up to max_queue jobs may wait behind it
            admitted = len(self._pending) + (self._running is not None)
            if admitted >= self.max_queue + 1:
                raise QueueFullError(f"the server is busy: {len(self._pending)} requests are already waiting")
            self._pending.append(job)
            self._changed()
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Client gone: drop the job if it waits, else ask the worker to stop it after this round."""
        with self._cond:
            job._cancel.set()
            if job in self._pending:
                self._pending.remove(job)
                job.done = True
                self._changed()

    # ---- the thread ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running = job
                self._changed()
            try:
                if not job.cancelled:
                    self._run(job)
            finally:
                with self._cond:
                    self._running, job.done = None, True
                    self._changed()
                job.post(END)

    def _run(self, job: Job) -> None:
        job.started_at = time.perf_counter()
        events: Iterator[Any] | None = None
        try:
            events = job.work()
            for event in events:
                job.post(event)
                if job.cancelled:
                    if self.on_stopped is not None:
                        self.on_stopped()
                    break
        except Exception as e:  # reported to the client; the worker lives on
            if not isinstance(e, SpecExitError):
                log.exception("generation failed")
            job.post(e)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
