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


def on_event_loop() -> bool:
    """Whether the calling thread is running an asyncio event loop (which kickq must not hold
    up: work it would do there goes to its own threads instead)."""
    return asyncio._get_running_loop() is not None


def follow(source: concurrent.futures.Future[T], target: concurrent.futures.Future[T]) -> None:
    """Settle `target` as `source` settles (a cancelled source cancels it)."""

    def settled(done: concurrent.futures.Future[T]) -> None:
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            reject(target, error)
        else:
            resolve(target, done.result())

    source.add_done_callback(settled)


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


class ContainedExit(RuntimeError):
    """A coroutine handler's SystemExit or KeyboardInterrupt (its `__cause__`), carried out of
    the loop as an ordinary exception; the run's error and traceback are its cause's."""


async def _contained(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a handler's coroutine so that SystemExit or KeyboardInterrupt fail its run: asyncio
    re-raises those out of the loop, which would kill the thread every coroutine shares."""
    try:
        return await coroutine
    except (KeyboardInterrupt, SystemExit) as exc:
        raise ContainedExit(str(exc) or type(exc).__name__) from exc


async def _wind_down(spare: asyncio.Task[Any] | None, stop: bool = True) -> None:
    """Cancel every task but `spare`, let them end, wait for `spare`, then stop the loop (or
    leave that to the caller, who must first see this coroutine's result)."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and t is not spare]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if spare is not None:
        await asyncio.wait([spare])
    if stop:
        asyncio.get_running_loop().stop()


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
                    target=self._serve, args=(loop,), name="kickq-asyncio", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            loop.close()

    def is_current(self) -> bool:
        """Whether the caller runs on the loop's thread (in a coroutine handler, say)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(_contained(coroutine), self._start())

    def run_awaitable(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        return self.run(_await(awaitable))

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel every task and stop the loop. From a coroutine on the loop (which the loop
        cannot wait for while it runs), the loop is stopped once that coroutine's task ends,
        and every other task is cancelled as soon as it gives the loop control."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            loop.create_task(_wind_down(asyncio.current_task(loop)))
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            # past the timeout, a task outlives its cancellation: stop the loop all the same
            asyncio.run_coroutine_threadsafe(_wind_down(None, stop=False), loop).result(timeout)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout)
