"""The thread that runs the API's Redis work, so that no public call blocks its caller.

Requests that arrive close together go out together: script calls queued while one batch is
on the wire leave in the next, as one pipeline (creates issued in a loop cost one round trip
per batch, not per job).

Each script call is sent once: a batch whose replies were lost fails its calls with
RedisUnavailable, but for those that settle it themselves (`Call.unanswered`: the creates).

Stopping cancels every request that has not started: its future is cancelled, and nothing of it
reaches Redis. Only the request in flight is waited for, briefly; past that it is cancelled too
(whether Redis applied it is then unknown), so that stopping never waits on a Redis that does
not answer.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import attrs

from kickq._model.errors import RedisUnavailable
from kickq._redis.outage import Unanswered, translate
from kickq._redis.runner import ScriptCall, Written
from kickq._redis.store import Store

log = logging.getLogger("kickq")
MAX_BATCH = 1000
STOP_WAIT = 0.5  # seconds stop() waits for the request in flight


def _nothing() -> None:
    """The cancellation of a request that has no future of its own."""


@attrs.frozen
class Call:
    """A script call; `done` gets its result, or the exception it raised. `cancel` is called
    instead when the dispatcher stops before the result is in. `unanswered`, when given, is
    called instead of `done` with the `Unanswered` error of a call sent whose reply was lost
    (Redis may have applied it): the caller settles it; without it, `done` gets the error."""

    call: ScriptCall
    done: Callable[[Any], None]
    cancel: Callable[[], object] = _nothing
    unanswered: Callable[[BaseException], None] | None = None


@attrs.frozen
class Task:
    """Any other Redis work; it reports its own outcome, or `cancel` is called instead."""

    run: Callable[[], None]
    cancel: Callable[[], object] = _nothing


@attrs.frozen
class Sent:
    """A script call the caller's thread wrote already: the dispatcher reads its reply."""

    call: Call
    written: Written

    def cancel(self) -> None:
        """Never read: the connection is closed, the call cancelled."""
        self.written.abandon()
        self.call.cancel()


Request = Call | Task | Sent


class Dispatcher:
    def __init__(self, store: Store, where: str) -> None:
        self._store = store
        self._where = where
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()  # None: wake up
        self._lock = threading.Lock()
        self._stopping = False
        # requests the thread has taken off the queue but not started, and those on the wire
        self._backlog: collections.deque[Request] = collections.deque()
        self._in_flight: list[Request] = []
        self._unfinished = 0  # requests queued and not yet served: 0 when idle
        self._thread = threading.Thread(target=self._run, name="kickq-dispatcher", daemon=True)

    def call(
        self, call: ScriptCall, done: Callable[[Any], None], cancel: Callable[[], object] = _nothing
    ) -> None:
        self._put(Call(call, done, cancel))

    def call_many(self, calls: list[Call]) -> None:
        """Queue many script calls; those queued together leave together, MAX_BATCH at most
        to a pipeline. A lone call while the dispatcher is idle is written at once, from the
        caller's thread, when a pooled connection is idle and connected (so the write does
        not block): the dispatcher only reads its reply, and no thread wakes to send it."""
        if len(calls) == 1:
            with self._lock:
                lone = not self._stopping and not self._unfinished
                if lone:
                    self._unfinished += 1
            if lone:
                try:
                    written = self._store.write([calls[0].call])
                except Exception:  # the usual path meets the same error and reports it
                    written = None
                self._put(calls[0] if written is None else Sent(calls[0], written), True)
                return
        for call in calls:
            self._put(call)

    def call_next(self, calls: list[Call]) -> None:
        """From a task, on the dispatcher thread: serve these script calls next, before any
        request queued after the task, as if the task had queued them when it was queued."""
        with self._lock:
            stopping = self._stopping
            if not stopping:
                self._unfinished += len(calls)
                self._backlog.extendleft(reversed(calls))
        if stopping:
            _cancel(list(calls))

    def task(self, run: Callable[[], None], cancel: Callable[[], object] = _nothing) -> None:
        self._put(Task(run, cancel))

    def start(self) -> None:
        self._thread.start()

    def waiting(self) -> int:
        """How many requests wait to be served: called from a task, those queued after it
        (every request queued before a task is done when the task runs)."""
        with self._lock:
            return len(self._backlog) + self._queue.qsize()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Cancel every request that has not started; give the one in flight `timeout` seconds,
        then cancel it too. Callable from a callback that runs on the dispatcher thread: the
        thread ends once that callback returns."""
        with self._lock:
            self._stopping = True
            waiting = [*self._backlog, *self._drain()]
            self._backlog.clear()
        self._queue.put(None)
        _cancel(waiting)
        if threading.current_thread() is self._thread:
            return
        self._thread.join(timeout)
        with self._lock:
            abandoned, self._in_flight = self._in_flight, []
        # a written call in flight: its connection is the thread's to close, being read
        _cancel([r.call if isinstance(r, Sent) else r for r in abandoned])

    def _put(self, request: Request, counted: bool = False) -> None:
        if not counted:
            with self._lock:
                self._unfinished += 1
        self._queue.put(request)
        if self._stopping:  # stop() may have emptied the queue before this request came
            _cancel(self._drain())

    def _drain(self) -> list[Request]:
        """Take every request off the queue (thread-safe); a wake-up stays queued."""
        taken: list[Request] = []
        wake = False
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                wake = True
            else:
                taken.append(request)
        if wake:
            self._queue.put(None)
        return taken

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            requests = [request for request in batch if request is not None]
            with self._lock:
                stopping = self._stopping
                if not stopping:
                    self._backlog.extend(requests)
            if stopping:
                _cancel(requests)
                return
            while self._serve_next():
                pass
            if self._stopping:
                return

    def _serve_next(self) -> bool:
        """Serve the next request of the backlog (a run of script calls goes as one batch);
        False once the backlog is empty or the dispatcher is stopping."""
        with self._lock:
            backlog = self._backlog
            if self._stopping or not backlog:
                return False
            if not isinstance(backlog[0], Call):
                self._in_flight = [backlog.popleft()]
            else:
                run: list[Request] = []
                while backlog and isinstance(backlog[0], Call):
                    run.append(backlog.popleft())
                self._in_flight = run
            unit = self._in_flight
        first = unit[0]
        calls: list[Call] = []
        results: list[Any] = []
        if isinstance(first, Task):
            _guarded(first.run)
        elif isinstance(first, Sent):
            calls = [first.call]
            results = self._fetch(calls, functools.partial(self._store.finish, first.written))
        else:
            calls = [call for call in unit if isinstance(call, Call)]
            batch = [call.call for call in calls]
            results = self._fetch(calls, functools.partial(self._store.run_batch, batch))
        with self._lock:  # idle again before the callbacks: a caller they wake finds it so
            self._unfinished -= len(unit)
            if self._in_flight is unit:
                self._in_flight = []
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, Unanswered) and call.unanswered is not None:
                _guarded(functools.partial(call.unanswered, result))
                continue
            if isinstance(result, BaseException):
                result = translate(result, self._where)
            _guarded(functools.partial(call.done, result))
        return True

    def _fetch(self, calls: list[Call], send: Callable[[], list[Any]]) -> list[Any]:
        """The results of the calls: values, or the errors raised."""
        try:
            return send()
        except Exception as exc:  # fail the futures, never the thread
            if not isinstance(translate(exc, self._where), RedisUnavailable):
                log.exception("a batch of Redis calls failed")
            return [exc] * len(calls)


def _guarded(run: Callable[[], object]) -> None:
    try:
        run()
    except Exception:
        log.exception("a request callback failed")


def _cancel(requests: list[Request]) -> None:
    for request in requests:
        _guarded(request.cancel)
