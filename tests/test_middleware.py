"""Middleware (kickq.use): order, outcomes, every handler style, async middleware, ghosting."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import kickq
from support import RedisCluster, RedisServer, wait_until

pytestmark = pytest.mark.both_backends

CallNext = Callable[[], Any]


def finished(job_id: str, timeout: float = 10) -> kickq.Job:
    """The job once it is complete (success or failure)."""
    try:
        return kickq.wait(job_id, timeout=timeout).result(timeout + 5)
    except kickq.JobFailed as failed:
        return failed.job


def run_job(name: str, data: Any = None, **options: Any) -> kickq.Job:
    """Create a job and return it finished."""
    return finished(kickq.create(name, data, **options).result(5).id)


# -- the handler styles: each returns data["value"], or fails with "handler broke" ------------


def _outcome(data: dict[str, Any]) -> Any:
    if data.get("fail"):
        raise RuntimeError("handler broke")
    return data["value"]


def plain(job: kickq.Job, data: dict[str, Any]) -> Any:
    return _outcome(data)


def callback(job: kickq.Job, data: dict[str, Any], done: Callable[..., None]) -> None:
    def finish() -> None:
        try:
            value = _outcome(data)
        except RuntimeError as exc:
            done(exc)
        else:
            done(None, value)

    threading.Timer(0.01, finish).start()


def returns_future(job: kickq.Job, data: dict[str, Any]) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def finish() -> None:
        try:
            future.set_result(_outcome(data))
        except RuntimeError as exc:
            future.set_exception(exc)

    threading.Timer(0.01, finish).start()
    return future


def returns_awaitable(job: kickq.Job, data: dict[str, Any]) -> Any:
    async def later() -> Any:
        await asyncio.sleep(0.01)
        return _outcome(data)

    return later()


async def coroutine(job: kickq.Job, data: dict[str, Any]) -> Any:
    await asyncio.sleep(0.01)
    return _outcome(data)


STYLES: dict[str, Callable[..., Any]] = {
    "plain": plain,
    "callback": callback,
    "future": returns_future,
    "awaitable": returns_awaitable,
    "coroutine": coroutine,
}
every_style = pytest.mark.parametrize("style", sorted(STYLES))


def recorder(label: str, events: list[str]) -> Callable[[kickq.Job, CallNext], Any]:
    """A plain middleware that notes when it enters and what call_next() gave it."""

    def middleware(job: kickq.Job, call_next: CallNext) -> Any:
        events.append(f"{label} in")
        result = call_next()
        events.append(f"{label} out {result}")
        return result

    return middleware


def async_recorder(label: str, events: list[str]) -> Callable[[kickq.Job, CallNext], Any]:
    """An async middleware that notes when it enters and what call_next() gave it."""

    async def middleware(job: kickq.Job, call_next: CallNext) -> Any:
        events.append(f"{label} in")
        result = await call_next()
        events.append(f"{label} out {result}")
        return result

    return middleware


# -- around every handler style ---------------------------------------------------------------


@every_style
def test_first_middleware_added_is_the_outermost(style: str) -> None:
    """Two middlewares wrap the handler in the order added, the first one outermost."""
    events: list[str] = []
    kickq.use(recorder("a", events))
    kickq.use(recorder("b", events))
    kickq.process(f"order-{style}", STYLES[style])
    done = run_job(f"order-{style}", {"value": 7})
    assert done.state == "success" and done.result == 7
    assert events == ["a in", "b in", "b out 7", "a out 7"]


@every_style
def test_what_the_middleware_returns_is_the_result(style: str) -> None:
    """A middleware that changes call_next()'s value changes the job's result."""

    def wrap(job: kickq.Job, call_next: CallNext) -> Any:
        return {"wrapped": call_next()}

    kickq.use(wrap)
    kickq.process(f"change-{style}", STYLES[style])
    done = run_job(f"change-{style}", {"value": 7})
    assert done.state == "success" and done.result == {"wrapped": 7}


@every_style
def test_a_middleware_that_raises_fails_the_run_and_retry_works(style: str) -> None:
    """An error raised by a middleware fails the run, is its recorded error, and is retried."""

    def refuse_first_run(job: kickq.Job, call_next: CallNext) -> Any:
        result = call_next()
        if len(job.runs) == 1:
            raise ValueError("middleware says no")
        return result

    kickq.use(refuse_first_run)
    kickq.process(f"raise-{style}", STYLES[style])
    done = run_job(f"raise-{style}", {"value": 7}, retry=True, retry_interval=0)
    assert done.state == "success" and done.result == 7
    assert [run.state for run in done.runs] == ["fail", "success"]
    assert done.runs[0].error == "ValueError: middleware says no"
    assert done.last_error == "ValueError: middleware says no"


@every_style
def test_a_middleware_that_swallows_the_error_makes_the_run_succeed(style: str) -> None:
    """call_next() raises the handler's error; a middleware returning instead succeeds."""
    caught: list[str] = []

    def recover(job: kickq.Job, call_next: CallNext) -> Any:
        try:
            return call_next()
        except RuntimeError as exc:
            caught.append(str(exc))
            return "recovered"

    kickq.use(recover)
    kickq.process(f"swallow-{style}", STYLES[style])
    done = run_job(f"swallow-{style}", {"fail": True})
    assert done.state == "success" and done.result == "recovered"
    assert caught == ["handler broke"]


def test_a_failing_run_fails_with_the_middleware_error() -> None:
    """Without retry, a middleware's error fails the job for good and is its last_error."""

    def refuse(job: kickq.Job, call_next: CallNext) -> Any:
        raise PermissionError("not today")

    kickq.use(refuse)
    kickq.process("refused", plain)
    done = run_job("refused", {"value": 1})
    assert done.state == "fail" and done.last_error == "PermissionError: not today"
    assert [run.error for run in done.runs] == ["PermissionError: not today"]


def test_a_result_that_is_not_json_fails_the_run() -> None:
    """A middleware's return value must be JSON, like a handler's result."""
    kickq.use(lambda job, call_next: {call_next()})
    kickq.process("not-json", plain)
    done = run_job("not-json", {"value": 1})
    assert done.state == "fail" and "result" in (done.last_error or "")


def test_plain_middleware_runs_in_the_thread_that_calls_the_handler() -> None:
    """A plain middleware runs in the handler's thread; around a coroutine, in a pool thread."""
    threads: dict[str, str] = {}

    def note(job: kickq.Job, call_next: CallNext) -> Any:
        threads[f"middleware {job.name}"] = threading.current_thread().name
        return call_next()

    def plain_noting(job: kickq.Job, data: None) -> None:
        threads["handler plain"] = threading.current_thread().name

    async def coroutine_noting(job: kickq.Job, data: None) -> None:
        threads["handler coro"] = threading.current_thread().name

    kickq.use(note)
    kickq.process("plain", plain_noting)
    kickq.process("coro", coroutine_noting)
    assert run_job("plain").state == "success" and run_job("coro").state == "success"
    assert threads["middleware plain"] == threads["handler plain"]
    assert threads["middleware plain"].startswith("kickq-run")
    assert threads["middleware coro"].startswith("kickq-run")
    assert threads["handler coro"] == "kickq-asyncio"


# -- async middleware -------------------------------------------------------------------------


def test_async_middleware_wraps_coroutine_handlers_on_the_loop() -> None:
    """An async middleware runs on kickq's loop around a coroutine handler, and not around a
    plain handler."""
    seen: list[tuple[str, str]] = []

    async def on_loop(job: kickq.Job, call_next: CallNext) -> Any:
        asyncio.get_running_loop()  # raises off the loop
        seen.append((job.name, threading.current_thread().name))
        return {"awaited": await call_next()}

    kickq.use(on_loop)
    kickq.process("async-coro", coroutine)
    kickq.process("async-plain", plain)
    assert run_job("async-coro", {"value": 3}).result == {"awaited": 3}
    assert run_job("async-plain", {"value": 3}).result == 3
    assert seen == [("async-coro", "kickq-asyncio")]


def test_async_middleware_can_swallow_a_coroutine_error() -> None:
    """`await call_next()` raises the coroutine's error, which an async middleware may handle."""

    async def recover(job: kickq.Job, call_next: CallNext) -> Any:
        try:
            return await call_next()
        except RuntimeError as exc:
            return f"recovered from {exc}"

    kickq.use(recover)
    kickq.process("async-swallow", coroutine)
    done = run_job("async-swallow", {"fail": True})
    assert done.state == "success" and done.result == "recovered from handler broke"


def test_plain_middleware_wraps_async_middleware_whatever_the_order_added() -> None:
    """On a coroutine handler every plain middleware is outside every async one, each kind in
    the order added."""
    events: list[str] = []
    kickq.use(async_recorder("async 1", events))
    kickq.use(recorder("plain 1", events))
    kickq.use(async_recorder("async 2", events))
    kickq.use(recorder("plain 2", events))
    kickq.process("mixed", coroutine)
    assert run_job("mixed", {"value": 5}).result == 5
    assert events == [
        "plain 1 in",
        "plain 2 in",
        "async 1 in",
        "async 2 in",
        "async 2 out 5",
        "async 1 out 5",
        "plain 2 out 5",
        "plain 1 out 5",
    ]


# -- what a middleware sees, and the registry -------------------------------------------------


def test_middleware_sees_the_job() -> None:
    """The middleware gets the running Job: its name, data and id."""
    seen: list[kickq.Job] = []

    def look(job: kickq.Job, call_next: CallNext) -> Any:
        seen.append(job)
        return call_next()

    kickq.use(look)
    kickq.process("seen", plain)
    created = kickq.create("seen", {"value": "x"}).result(5)
    assert finished(created.id).result == "x"
    (job,) = seen
    assert (job.name, job.data, job.id) == ("seen", {"value": "x"}, created.id)
    assert job.state == "processing"


def test_middleware_reaches_workers_started_before_use() -> None:
    """use() applies to the next run of a worker that was already running."""
    kickq.process("early", plain)
    assert run_job("early", {"value": 1}).result == 1
    kickq.use(lambda job, call_next: call_next() + 100)
    assert run_job("early", {"value": 1}).result == 101


def test_reset_removes_middleware(target: RedisServer | RedisCluster) -> None:
    """After kickq.reset() no middleware wraps the runs."""
    calls: list[str] = []

    def count(job: kickq.Job, call_next: CallNext) -> Any:
        calls.append(job.id)
        return call_next()

    kickq.use(count)
    kickq.process("before-reset", plain)
    assert run_job("before-reset", {"value": 1}).result == 1 and len(calls) == 1
    kickq.reset()
    cluster = {"redis_options": {"cluster": True}} if isinstance(target, RedisCluster) else {}
    kickq.config(redis_url=target.url, **cluster)
    kickq.process("after-reset", plain)
    assert run_job("after-reset", {"value": 2}).result == 2
    assert len(calls) == 1


@pytest.mark.single_backend
@pytest.mark.parametrize("bad", [None, 42, "timing", [print]])
def test_use_of_a_non_callable_raises_type_error(bad: Any) -> None:
    """use() refuses what cannot be called, at once."""
    with pytest.raises(TypeError, match="callable"):
        kickq.use(bad)


@pytest.mark.single_backend
def test_use_of_a_function_that_cannot_take_job_and_call_next_raises_type_error() -> None:
    """use() refuses a function that cannot be called as fn(job, call_next)."""
    with pytest.raises(TypeError, match="call_next"):
        kickq.use(lambda job: None)


# -- ghosting ---------------------------------------------------------------------------------


def test_coroutine_under_plain_middleware_that_overruns_is_ghosted_and_cancelled() -> None:
    """A coroutine run under plain middleware that overruns process_timeout ghosts, its
    coroutine is cancelled on the loop, and call_next() raises in the middleware."""
    cancelled = threading.Event()
    raised: list[BaseException] = []

    async def slow(job: kickq.Job, data: None) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def note(job: kickq.Job, call_next: CallNext) -> Any:
        try:
            return call_next()
        except BaseException as exc:
            raised.append(exc)
            raise

    kickq.use(note)
    kickq.process("overrun", slow)
    done = run_job("overrun", None, process_timeout=0.5, ghost_count=0)
    assert done.state == "fail" and [run.state for run in done.runs] == ["ghost"]
    assert cancelled.wait(10)
    wait_until(lambda: raised, what="call_next() to raise")
    assert isinstance(raised[0], concurrent.futures.CancelledError)


def test_coroutine_under_async_middleware_that_overruns_is_ghosted_and_cancelled() -> None:
    """A coroutine run under async middleware that overruns process_timeout ghosts, and the
    whole chain is cancelled on the loop."""
    cancelled: list[str] = []

    async def slow(job: kickq.Job, data: None) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append("handler")
            raise

    async def note(job: kickq.Job, call_next: CallNext) -> Any:
        try:
            return await call_next()
        except asyncio.CancelledError:
            cancelled.append("middleware")
            raise

    kickq.use(note)
    kickq.process("overrun-async", slow)
    done = run_job("overrun-async", None, process_timeout=0.5, ghost_count=0)
    assert done.state == "fail" and [run.state for run in done.runs] == ["ghost"]
    wait_until(lambda: len(cancelled) == 2, what="the chain to be cancelled")
    assert cancelled == ["handler", "middleware"]


def test_coroutine_started_after_its_run_ghosted_is_cancelled_at_once() -> None:
    """A coroutine that plain middleware starts only after the run ghosted is cancelled at once:
    call_next() raises CancelledError and the coroutine never finishes."""
    ghosted = threading.Event()
    raised: list[BaseException] = []
    completed: list[str] = []

    async def quick(job: kickq.Job, data: None) -> str:
        await asyncio.sleep(0.05)
        completed.append(job.id)
        return "done"

    def late(job: kickq.Job, call_next: CallNext) -> Any:
        ghosted.wait(10)
        try:
            return call_next()
        except BaseException as exc:
            raised.append(exc)
            raise

    kickq.use(late)
    kickq.process("late-start", quick)
    done = run_job("late-start", None, process_timeout=0.3, ghost_count=0)
    assert [run.state for run in done.runs] == ["ghost"]
    ghosted.set()
    wait_until(lambda: raised, what="call_next() to raise")
    assert isinstance(raised[0], concurrent.futures.CancelledError)
    time.sleep(0.2)  # the coroutine would have completed by now
    assert completed == []
