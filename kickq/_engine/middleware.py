"""Middleware: functions that wrap every handler run of this process (`kickq.use`).

A middleware is `fn(job, call_next)`. `call_next()` runs the rest of the chain (the next
middleware, and last the handler) and returns its result or raises its error; what `fn` returns
or raises is the run's outcome. The first middleware added is the outermost: after `use(a)`
and `use(b)`, a run is

    a(job, lambda: b(job, lambda: handler(job, data)))

Two kinds, told apart once, when added:

* plain middleware (`def`) runs in the thread that calls the handler, a pool thread, for every
  handler style. For a coroutine handler, `call_next()` starts the coroutine on kickq's loop and
  blocks that thread until it is done; so with plain middleware a coroutine's run starts in a
  pool thread instead of going straight to the loop.
* coroutine middleware (`async def`) runs on the loop, around coroutine handlers only:
  `return await call_next()`. Other handler styles do not go through it.

Both kinds on a coroutine handler: every plain middleware wraps every coroutine one, each kind in
the order added (the loop cannot wait for a thread, so a plain middleware cannot sit inside a
coroutine one).

The chain is an immutable `Chain`, replaced as a whole by `add()` and `clear()`: a worker reads
the current one as each run starts (workers started before `use()` get it too), without a lock,
and a run keeps the chain it started with. With no middleware, runs take the exact path they
take without this module.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from kickq._model import forks
from kickq._model.job import Job

CallNext = Callable[[], Any]
Middleware = Callable[[Job, CallNext], Any]


def is_coroutine_callable(function: object) -> bool:
    """Whether calling `function` makes a coroutine: an `async def`, or an object whose
    `__call__` is one."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - async callable objects
    )


@attrs.frozen
class Chain:
    """The middleware of the process when a run starts, outermost first."""

    plain: tuple[Middleware, ...] = ()
    coroutine: tuple[Middleware, ...] = ()


EMPTY = Chain()
_lock = threading.Lock()  # serializes the writers; readers take the current Chain as it is


@forks.in_child
def _renew_lock() -> None:
    """After fork(), in the child: a parent thread may have held the lock at the fork."""
    global _lock
    _lock = threading.Lock()


_chain = EMPTY


def add(middleware: Middleware) -> None:
    """Add `middleware` (checked by `kickq.use`) inside those added before."""
    global _chain
    with _lock:
        if is_coroutine_callable(middleware):
            _chain = attrs.evolve(_chain, coroutine=(*_chain.coroutine, middleware))
        else:
            _chain = attrs.evolve(_chain, plain=(*_chain.plain, middleware))


def clear() -> None:
    """Remove every middleware (`kickq.reset()`); runs in progress keep theirs."""
    global _chain
    with _lock:
        _chain = EMPTY


def current() -> Chain:
    """The chain a run starting now goes through."""
    return _chain


def call_through(middleware: tuple[Middleware, ...], job: Job, handler: CallNext) -> Any:
    """Call `handler()` inside the plain `middleware`, the first outermost, in this thread."""

    def layer(index: int) -> Any:
        if index == len(middleware):
            return handler()
        return middleware[index](job, lambda: layer(index + 1))

    return layer(0)


async def await_through(
    middleware: tuple[Middleware, ...], job: Job, handler: Callable[[], Awaitable[Any]]
) -> Any:
    """Await `handler()` inside the coroutine `middleware`, the first outermost, on the loop."""

    async def layer(index: int) -> Any:
        if index == len(middleware):
            return await handler()
        return await middleware[index](job, lambda: layer(index + 1))

    return await layer(0)
