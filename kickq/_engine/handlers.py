"""Every handler style turned into one Future the worker waits on.

def h(job, data): return value          plain: runs in a worker thread
async def h(job, data): ...             coroutine: runs on the shared event-loop thread
def h(job, data, done): done(err=None)  callback: the run ends when done() is called
a plain handler returning a concurrent Future or an awaitable: the run ends when it does

Under middleware (see middleware.py), `run_in_middleware` runs the plain middleware around any
style in the calling thread, and `start_coroutine` runs the coroutine middleware around a
coroutine on the loop.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import traceback
import types
from collections.abc import Callable
from typing import Any

from kickq._engine.future import LoopThread
from kickq._engine.middleware import (
    Chain,
    Middleware,
    await_through,
    call_through,
    is_coroutine_callable,
)
from kickq._model.job import Job

RunFuture = concurrent.futures.Future[Any]


class HandlerError(Exception):
    """A failure reported through a callback handler's done(err)."""


def _takes_done(function: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    return len(positional) >= 3 and not varargs


class Handler:
    """A user's handler, classified once when `process()` is called."""

    def __init__(self, function: Callable[..., Any], loop: LoopThread) -> None:
        if not callable(function):
            raise TypeError(f"a handler must be callable, not {function!r}")
        self.function = function
        self.is_coroutine = is_coroutine_callable(function)
        self.takes_done = not self.is_coroutine and _takes_done(function)
        self._loop = loop

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the event-loop thread that runs coroutine handlers."""
        return self._loop.is_current()

    def start_coroutine(self, job: Job, middleware: tuple[Middleware, ...] = ()) -> RunFuture:
        """Schedule a coroutine handler's run on the loop thread (from any thread), inside the
        coroutine `middleware`; cancelling the Future cancels the whole run."""
        if not middleware:
            return self._loop.run(self.function(job, job.data))
        return self._loop.run(await_through(middleware, job, lambda: self.function(job, job.data)))

    def run_in_middleware(
        self, job: Job, chain: Chain, started: Callable[[RunFuture], None]
    ) -> RunFuture:
        """Run any handler style inside the plain middleware of `chain`, in the calling thread,
        which waits for the run to end; the Future returned is done. The run's own Future (a
        coroutine's as soon as it is scheduled, or what the handler returned) is handed to
        `started`, for the worker to cancel."""
        outcome: RunFuture = concurrent.futures.Future()
        try:
            value = call_through(
                chain.plain, job, lambda: self._innermost(job, chain.coroutine, started)
            )
        except BaseException as exc:  # as in call(): the run fails, not the thread
            outcome.set_exception(exc)
        else:
            outcome.set_result(value)
        return outcome

    def _innermost(
        self, job: Job, middleware: tuple[Middleware, ...], started: Callable[[RunFuture], None]
    ) -> Any:
        """The handler, as the last `call_next()` of the plain middleware sees it."""
        future = self.start_coroutine(job, middleware) if self.is_coroutine else self.call(job)
        started(future)
        return future.result()

    def call(self, job: Job) -> RunFuture:
        """Run a plain or callback handler in the calling thread; the Future ends the run."""
        if self.takes_done:
            return self._call_with_done(job)
        outcome: RunFuture = concurrent.futures.Future()
        try:
            value = self.function(job, job.data)
        except BaseException as exc:  # SystemExit & co. fail the run, not the worker thread
            outcome.set_exception(exc)
            return outcome
        if isinstance(value, concurrent.futures.Future):
            return value
        if inspect.isawaitable(value):
            return self._loop.run_awaitable(value)
        outcome.set_result(value)
        return outcome

    def _call_with_done(self, job: Job) -> RunFuture:
        outcome: RunFuture = concurrent.futures.Future()

        def done(error: object = None, result: object = None) -> None:
            if outcome.done():
                return
            if error is None or error is False:
                outcome.set_result(result)
            elif isinstance(error, BaseException):
                outcome.set_exception(error)
            else:
                outcome.set_exception(HandlerError(str(error)))

        try:
            self.function(job, job.data, done)
        except BaseException as exc:
            if not outcome.done():
                outcome.set_exception(exc)
        return outcome


def describe_error(error: BaseException) -> str:
    """The text kept in last_error and the run's error: the exception's type and message, as
    the last line of its traceback reads (`KeyError: 'missing'`), the type alone when the
    message is empty. A callback handler's `done(err)` with an `err` that is not an exception
    keeps the text it gave as it is."""
    kind = type(error)
    message = _message(error)
    if kind is HandlerError:
        return message or kind.__name__
    return f"{kind.__name__}: {message}" if message else kind.__name__


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # an exception whose __str__ fails still fails its run
        return "<the exception's str() failed>"


MAX_TRACEBACK_CHARS = 16384
"""The longest traceback a run keeps (in its record and in every event of its job). A longer
one keeps its end, the innermost frames and the exception itself, behind a line that says how
much was cut; any single part of it (a frame, a message) longer than MAX_TRACEBACK_PART is cut
in its middle first, so that one huge message leaves room for the frames."""
MAX_TRACEBACK_PART = 4096
MAX_TRACEBACK_FRAMES = 100
"""The innermost frames formatted of each exception of a traceback, the others counted: a frame
costs ~30 µs to format (a RecursionError's thousand frames, 30 ms); a hundred are ~10 kB."""


def describe_traceback(error: BaseException) -> str | None:
    """The formatted traceback of a run's exception, with its chained causes and contexts,
    bounded (MAX_TRACEBACK_CHARS); None for a callback handler's `done(err)` given text, which
    was never raised."""
    if type(error) is HandlerError and error.__traceback__ is None:
        return None
    try:
        formatted = traceback.TracebackException.from_exception(error, limit=-MAX_TRACEBACK_FRAMES)
        parts = [_cut_part(part) for part in formatted.format()]
        depth = _depth(error.__traceback__)
        if depth > MAX_TRACEBACK_FRAMES:
            left_out = depth - MAX_TRACEBACK_FRAMES
            parts.insert(0, f"[... {left_out} outermost frames of the traceback left out ...]\n")
        return cut_traceback(parts)
    except Exception as exc:  # never let a traceback that cannot be formatted lose the run
        return f"<the traceback could not be formatted: {type(exc).__qualname__}>"


def _depth(frames: types.TracebackType | None) -> int:
    depth = 0
    while frames is not None:
        depth += 1
        frames = frames.tb_next
    return depth


def _cut_part(part: str) -> str:
    if len(part) <= MAX_TRACEBACK_PART:
        return part
    half = MAX_TRACEBACK_PART // 2
    return f"{part[:half]}... [{len(part) - 2 * half} characters cut] ...{part[-half:]}"


def cut_traceback(parts: list[str]) -> str:
    """The parts of a traceback joined, keeping at most MAX_TRACEBACK_CHARS of its end (whole
    parts, after a line saying how many characters were cut)."""
    size = sum(map(len, parts))
    if size <= MAX_TRACEBACK_CHARS:
        return "".join(parts)
    kept: list[str] = []
    room = MAX_TRACEBACK_CHARS - 64  # for the line that says what was cut
    for part in reversed(parts):
        if len(part) > room:
            break
        kept.append(part)
        room -= len(part)
    kept.reverse()
    cut = size - sum(map(len, kept))
    return f"[... {cut} characters of the traceback cut: its outermost frames ...]\n" + "".join(
        kept
    )
