"""The thread that runs the API's Redis work, so that no public call blocks its caller.

Requests that arrive close together go out together: script calls queued while one batch is
on the wire leave in the next, as one pipeline (creates issued in a loop cost one round trip
per batch, not per job).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import attrs

from .errors import RedisUnavailable
from .outage import translate
from .store import ScriptCall, Store

log = logging.getLogger("kickq")
MAX_BATCH = 1000


@attrs.frozen
class Call:
    """A script call; `done` gets its result, or the exception it raised."""

    call: ScriptCall
    done: Callable[[Any], None]


@attrs.frozen
class Task:
    """Any other Redis work; it reports its own outcome."""

    run: Callable[[], None]


Request = Call | Task | None


class Dispatcher:
    def __init__(self, store: Store, where: str) -> None:
        self._store = store
        self._where = where
        self._queue: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kickq-dispatcher", daemon=True)
        self._thread.start()

    def call(self, call: ScriptCall, done: Callable[[Any], None]) -> None:
        self._queue.put(Call(call, done))

    def task(self, run: Callable[[], None]) -> None:
        self._queue.put(Task(run))

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._serve(batch):
                return

    def _serve(self, batch: list[Request]) -> bool:
        calls: list[Call] = []
        for request in batch:
            if isinstance(request, Call):
                calls.append(request)
                continue
            self._send(calls)
            calls = []
            if request is None:
                return False
            self._guarded(request.run)
        self._send(calls)
        return True

    def _send(self, calls: list[Call]) -> None:
        if not calls:
            return
        try:
            results: list[Any] = self._store.run_batch([c.call for c in calls])
        except Exception as exc:  # fail the futures, never the thread
            if not isinstance(translate(exc, self._where), RedisUnavailable):
                log.exception("kickq: a batch of Redis calls failed")
            results = [exc] * len(calls)
        results = [
            translate(r, self._where) if isinstance(r, BaseException) else r for r in results
        ]
        for call, result in zip(calls, results, strict=True):
            self._guarded(functools.partial(call.done, result))

    @staticmethod
    def _guarded(run: Callable[[], None]) -> None:
        try:
            run()
        except Exception:
            log.exception("kickq: a request callback failed")
