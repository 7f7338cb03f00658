"""How a cancel reaches the run it stops, and what a handler sees of it (`kickq.cancelled()`).

`kickq.cancel()` makes a running job `fail` in Redis (transition.lua, fenced by the record's
version like every change) and publishes the job on `<ns>:cancel`. Each process with workers
listens on that channel once, on its one pub/sub connection, and hands every message to its
workers: the one holding that run stops it (cancels a coroutine or a Future, flags a thread).

A claim's reply and the cancel message come on different connections, so a cancel may arrive
before the worker has started the run it claimed: the router remembers the last cancels, and a
worker asks it as each run starts. A message missed while the channel was not subscribed (on
start-up, or while the pub/sub connection was down) is made up for each time the subscription
is confirmed: every worker reads the records of its runs in progress at its next turn, in its
own thread, so that a run whose claim was on its way then is among them.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from kickq._model.job import CANCELLED, State
from kickq._redis.listener import Listener
from kickq._redis.stored import StoredJob

if TYPE_CHECKING:
    from kickq._engine.progress import ProgressWriter, RunReports

log = logging.getLogger("kickq")
RunKey = tuple[str, int]  # a job's id and the count of one of its runs
REMEMBERED = 1024  # cancels kept for runs not started yet: a claim's reply is milliseconds away


@attrs.define(eq=False)
class RunToken:
    """What a handler's run carries: marked once the run is cancelled; and what its progress
    reports need (see progress.py)."""

    key: RunKey
    claimed: StoredJob | None = None  # the job as the run's claim read it
    writer: ProgressWriter | None = None  # writes the progress this run reports
    reports: RunReports | None = None  # its progress reports, from the first on
    ended: bool = False  # the run ended here: its reports no longer count (see progress.py)
    _cancelled: threading.Event = attrs.field(factory=threading.Event, init=False)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> bool:
        """Mark the run cancelled; False if it was already."""
        if self._cancelled.is_set():
            return False
        self._cancelled.set()
        return True


# the run of the handler the calling code runs in: a thread's, or a coroutine's (an asyncio
# task starts with a copy of the context that scheduled it)
_current: contextvars.ContextVar[RunToken | None] = contextvars.ContextVar(
    "kickq_run", default=None
)


@contextlib.contextmanager
def inside(token: RunToken) -> Iterator[None]:
    """Run a handler (or schedule its coroutine) as part of the run of `token`."""
    previous = _current.set(token)
    try:
        yield
    finally:
        _current.reset(previous)


def current_run() -> RunToken | None:
    """The run of the handler (or middleware) the calling code runs in, if any."""
    return _current.get()


def cancelled() -> bool:
    """True inside a handler whose run was cancelled by `kickq.cancel()`: a handler that runs
    in a thread, which kickq cannot stop, checks it to stop early. False anywhere else."""
    token = _current.get()
    return token is not None and token.cancelled


class Target(Protocol):
    """A worker, as the router sees it."""

    def cancel_run(self, key: RunKey) -> None: ...

    def recheck_cancels(self) -> None: ...


def _run_of(payload: str) -> RunKey:
    """The cancelled run a message names: the job's id and its last run's count."""
    value = json.loads(payload)
    return str(value["id"]), int(value["runs"][-1]["count"])


def run_was_cancelled(loaded: StoredJob | Any, run: int) -> bool:
    """Whether a record says run `run` of its job was stopped by a cancel."""
    if not isinstance(loaded, StoredJob) or loaded.job.state is not State.FAIL:
        return False
    return any(r.count == run and r.error == CANCELLED for r in loaded.job.runs)


class CancelRouter:
    """The cancels of the namespace, routed to this process's workers."""

    def __init__(
        self, listener: Listener, channel: str, targets: Callable[[], Sequence[Target]]
    ) -> None:
        self._listener = listener
        self._channel = channel
        self._targets = targets
        self._lock = threading.Lock()
        self._recent: collections.OrderedDict[RunKey, None] = collections.OrderedDict()
        self._started = False

    def start(self) -> None:
        """Listen for cancels (once; a process without workers need not)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._listener.subscribe(self._channel, self._on_message, self._on_ready)

    def was_cancelled(self, key: RunKey) -> bool:
        """Whether a cancel of this run came already (asked as a run starts)."""
        with self._lock:
            return key in self._recent

    def _on_message(self, payload: str) -> None:
        try:
            key = _run_of(payload)
        except (ValueError, KeyError, IndexError, TypeError):
            log.warning("a message on %s names no run: %.100r", self._channel, payload)
            return
        self.cancelled(key)

    def cancelled(self, key: RunKey) -> None:
        """Run `key` was cancelled: remember it, and stop it wherever this process holds it."""
        with self._lock:
            self._recent[key] = None
            while len(self._recent) > REMEMBERED:
                self._recent.popitem(last=False)
        for target in self._targets():
            target.cancel_run(key)

    def _on_ready(self) -> None:
        """Subscribed (again): cancels published meanwhile were missed; the workers read the
        records of their runs instead."""
        for target in self._targets():
            target.recheck_cancels()
