"""KickqFuture, and the one event-loop thread that runs coroutine handlers.

The only module that imports asyncio: everything else in kickq waits on concurrent futures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class KickqFuture(concurrent.futures.Future[T]):
    """A concurrent.futures.Future that can also be awaited from asyncio code."""

    def __await__(self) -> Generator[Any, None, T]:
        # wrap_future hands the result over with call_soon_threadsafe: awaiting never blocks
        # the event loop, whichever kickq thread resolves the future.
        return (yield from asyncio.wrap_future(self).__await__())


def failed(error: BaseException) -> KickqFuture[Any]:
    future: KickqFuture[Any] = KickqFuture()
    future.set_exception(error)
    return future


def resolve(future: concurrent.futures.Future[T], result: T) -> None:
    """Set the result, unless the future was cancelled meanwhile (by its caller, or reset)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(result)


def reject(future: concurrent.futures.Future[Any], error: BaseException) -> None:
    """Set the exception, unless the future was cancelled meanwhile."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_exception(error)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _contained(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a handler's coroutine so that SystemExit or KeyboardInterrupt fail its run: asyncio
    re-raises those out of the loop, which would kill the thread every coroutine shares."""
    try:
        return await coroutine
    except (KeyboardInterrupt, SystemExit) as exc:
        raise RuntimeError(str(exc) or type(exc).__name__) from exc


class LoopThread:
    """One asyncio loop in a daemon thread, started on first use, shared by all workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="kickq-asyncio", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(_contained(coroutine), self._start())

    def run_awaitable(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        return self.run(_await(awaitable))

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout=2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        if not thread.is_alive():
            loop.close()
