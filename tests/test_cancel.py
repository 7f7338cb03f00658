"""Cancel: kickq.cancel(job_id), kickq.cancelled() and kickq.JobCancelled."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from freezegun import freeze_time

import kickq
import kickq._engine.runtime
import kickq._model.clock
import kickq._model.lifecycle
import kickq._redis.stored
import kickq._verbs.cancel
import kickq._verbs.query
from support import ChildWorkers, job_key, scaled, wait_until

pytestmark = pytest.mark.both_backends

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def after(seconds: float) -> datetime.datetime:
    """`seconds` from now on the (frozen) clock."""
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def state_of(job_id: str) -> str:
    return str(kickq.get(job_id).result(5).state.value)


def assert_cancelled(job_id: str) -> kickq.Job:
    """The job ended `fail` for good, "cancelled", and waits on it fail with JobCancelled."""
    job = kickq.get(job_id).result(5)
    assert job.state is kickq.State.FAIL and job.complete and not job.success
    assert job.last_error == "cancelled" and job.finish_time is not None
    with pytest.raises(kickq.JobCancelled) as caught:
        kickq.wait(job_id, timeout=5).result(10)
    assert isinstance(caught.value, kickq.JobFailed) and caught.value.job.id == job_id
    return job


def test_a_queued_job_never_runs() -> None:
    """Cancelling a queued job: True, then False; it never runs; its hotjob future and waits
    fail with JobCancelled (a JobFailed); the fail event is published."""
    failed: list[kickq.Job] = []
    kickq.on("fail", failed.append)
    job = kickq.create("q", "data", hotjob=True).result(5)
    assert job.hotjob_future is not None
    assert kickq.cancel(job.id).result(5) is True
    assert kickq.cancel(job.id).result(5) is False
    with pytest.raises(kickq.JobCancelled):
        job.hotjob_future.result(10)
    ran: list[Any] = []
    kickq.process("q", lambda job, data: ran.append(data))
    after = kickq.create("q", "after").result(5)
    kickq.wait(after.id, timeout=5).result(10)
    assert ran == ["after"]
    assert assert_cancelled(job.id).runs == ()  # cancelling is not a run
    wait_until(lambda: [j.id for j in failed] == [job.id], what="the fail event")
    assert kickq.stats().result(5)["q"].counts["queued"] == 0


def test_a_delayed_job_never_runs() -> None:
    """A delayed job cancelled before its time never runs: a job due after it does."""
    ran: list[Any] = []
    with freeze_time(START, tick=True) as frozen:
        kickq.process("d", lambda job, data: ran.append(data), concurrent_jobs=1)
        job = kickq.create("d", "cancelled", delay=600).result(5)
        later = kickq.create("d", "later", delay=610).result(5)
        assert kickq.cancel(job.id).result(5) is True
        frozen.move_to(after(700))
        kickq.wait(later.id, timeout=10).result(15)
    assert ran == ["later"]
    assert assert_cancelled(job.id).scheduled_for is None


def test_a_job_waiting_for_its_retry_never_runs_again() -> None:
    """A job whose first run failed, waiting to be retried, is cancelled: it keeps that run and
    runs no more (a job due after its retry runs, alone)."""
    runs: list[Any] = []

    def flaky(job: kickq.Job, data: Any) -> None:
        runs.append(data)
        if data != "marker":
            raise ValueError("first try fails")

    with freeze_time(START, tick=True) as frozen:
        kickq.process("r", flaky, concurrent_jobs=1)
        job = kickq.create("r", "flaky", retry=True, retry_count=3, retry_interval=600).result(5)
        wait_until(lambda: state_of(job.id) == "retry", what="waiting for its retry")
        assert kickq.cancel(job.id).result(5) is True
        # due after the retry would have been: promoted with it or later, and run after it
        marker = kickq.create("r", "marker", delay=650).result(5)
        frozen.move_to(after(700))
        kickq.wait(marker.id, timeout=10).result(15)
    assert runs == ["flaky", "marker"]
    cancelled = assert_cancelled(job.id)
    failed = [("fail", "ValueError: first try fails")]
    assert [(run.state, run.error) for run in cancelled.runs] == failed


def test_a_job_waiting_for_its_ghost_rerun_never_runs_again() -> None:
    """A job whose first run overran process_timeout, waiting to run again, is cancelled: it
    keeps its ghost run and runs no more (a job due after its rerun runs, alone)."""
    runs: list[Any] = []
    release = threading.Event()

    def overruns(job: kickq.Job, data: Any) -> None:
        runs.append(data)
        if data != "marker":
            release.wait(scaled(30))

    with freeze_time(START, tick=True) as frozen:
        kickq.process("g", overruns, concurrent_jobs=1)
        job = kickq.create("g", "stuck", process_timeout=5, ghost_interval=600).result(5)
        wait_until(lambda: runs, what="the run started")
        frozen.move_to(after(6))
        wait_until(lambda: state_of(job.id) == "ghost", what="waiting to run again")
        assert kickq.cancel(job.id).result(5) is True
        release.set()  # the ghosted run returns late: ignored
        marker = kickq.create("g", "marker", delay=650).result(5)
        frozen.move_to(after(700))
        kickq.wait(marker.id, timeout=10).result(15)
    assert runs == ["stuck", "marker"]
    assert [run.state for run in assert_cancelled(job.id).runs] == ["ghost"]


def test_a_complete_job_is_left_alone() -> None:
    kickq.process("c", lambda job, data: data)
    job = kickq.create("c", 5).result(5)
    kickq.wait(job.id, timeout=5).result(10)
    assert kickq.cancel(job.id).result(5) is False
    done = kickq.get(job.id).result(5)
    assert done.success and done.result == 5 and done.last_error is None


def test_unknown_ids() -> None:
    """An unknown id fails with JobNotFound, one kickq cannot have made too (after asking
    Redis); an id that is not a str, or is empty, is a bad argument."""
    with pytest.raises(kickq.JobNotFound):
        kickq.cancel("0" * 32).result(5)
    with pytest.raises(kickq.JobNotFound):
        kickq.cancel("no-such-job").result(5)
    with pytest.raises(TypeError):
        kickq.cancel(7).result(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kickq.cancel("").result(5)


def test_a_job_that_keeps_changing_fails_cancel_and_requeue_with_job_kept_changing(
    r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another writer changes the record after every read of a cancel (or a requeue),
    each try is fenced off: the call fails with JobKeptChanging (a RuntimeError as a cancel's
    was, a ValueError as a requeue's was) and the job is left as it is."""
    changes: list[str] = []

    def changing(module: Any) -> None:
        read = module.current

        def current_then_changed(engine: Any, job_id: str) -> Any:
            loaded = read(engine, job_id)
            r.hincrby(job_key(job_id), "version", 1)  # another writer, after the read
            changes.append(module.__name__)
            return loaded

        monkeypatch.setattr(module, "current", current_then_changed)

    job = kickq.create("changing").result(5)
    changing(kickq._verbs.cancel)
    with pytest.raises(kickq.JobKeptChanging, match="it was not cancelled") as cancelling:
        kickq.cancel(job.id).result(10)
    assert changes == ["kickq._verbs.cancel"] * kickq._verbs.cancel.ATTEMPTS
    assert isinstance(cancelling.value, RuntimeError) and cancelling.value.job_id == job.id
    assert state_of(job.id) == "queued"
    monkeypatch.undo()
    assert kickq.cancel(job.id).result(5) is True  # now failed for good: requeueable
    changes.clear()
    changing(kickq._verbs.query)
    with pytest.raises(kickq.JobKeptChanging, match="it was not requeued") as requeueing:
        kickq.requeue(job.id).result(10)
    assert changes == ["kickq._verbs.query"] * kickq._verbs.query.ATTEMPTS
    assert isinstance(requeueing.value, ValueError) and requeueing.value.job_id == job.id
    assert state_of(job.id) == "fail"
    assert type(cancelling.value) is type(requeueing.value)


@pytest.mark.single_backend  # pure: never reaches Redis
def test_cancelled_is_false_outside_a_handler() -> None:
    assert kickq.cancelled() is False


def test_a_running_thread_sees_cancelled_and_its_result_is_discarded() -> None:
    """A thread handler keeps running; kickq.cancelled() turns True inside it; what it returns
    is discarded; its slot is free again once it returns."""
    started, seen = threading.Event(), []

    def slow(job: kickq.Job, data: Any) -> str:
        if data == "next":
            return "next ran"
        started.set()
        seen.append(kickq.cancelled())
        wait_until(kickq.cancelled, timeout=10, what="the cancel")
        seen.append(kickq.cancelled())
        return "discarded"

    kickq.process("t", slow)
    job = kickq.create("t", hotjob=True, hotjob_timeout=20).result(5)
    assert started.wait(10)
    assert kickq.cancel(job.id).result(5) is True
    with pytest.raises(kickq.JobCancelled):
        assert job.hotjob_future is not None
        job.hotjob_future.result(10)
    following = kickq.create("t", "next").result(5)
    assert kickq.wait(following.id, timeout=5).result(10).result == "next ran"
    assert seen == [False, True]
    cancelled = assert_cancelled(job.id)
    assert cancelled.result is None
    (run,) = cancelled.runs
    assert run.state == "fail" and run.error == "cancelled" and run.process_time is not None


def test_a_running_coroutine_is_cancelled() -> None:
    """A coroutine handler gets CancelledError at once; kickq.cancelled() is True inside it."""
    started, seen = threading.Event(), []

    async def waits(job: kickq.Job, data: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(3600)  # far past any wait bound below: only a cancel ends it
        except asyncio.CancelledError:
            seen.append(kickq.cancelled())
            raise
        return "never"

    kickq.process("co", waits)
    job = kickq.create("co").result(5)
    assert started.wait(10)
    assert kickq.cancel(job.id).result(5) is True
    wait_until(lambda: seen, timeout=5, what="the coroutine cancelled")
    assert seen == [True]
    assert_cancelled(job.id)


def _plain() -> Callable[..., Any]:
    def handler(job: kickq.Job, data: Any) -> str:
        if data == "second":
            return "next"
        wait_until(kickq.cancelled, timeout=20)
        return "discarded"

    return handler


def _coroutine() -> Callable[..., Any]:
    async def handler(job: kickq.Job, data: Any) -> str:
        if data != "second":
            await asyncio.sleep(30)
        return "next"

    return handler


def _callback() -> Callable[..., Any]:
    def handler(job: kickq.Job, data: Any, done: Callable[..., None]) -> None:
        if data == "second":
            done(None, "next")
        # else done() is never called: the cancel ends the run

    return handler


def _future() -> Callable[..., Any]:
    def handler(job: kickq.Job, data: Any) -> concurrent.futures.Future[str]:
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        if data == "second":
            future.set_result("next")
        return future  # else never resolved: the cancel ends the run

    return handler


def _awaitable() -> Callable[..., Any]:
    async def later(data: Any) -> str:
        if data != "second":
            await asyncio.sleep(30)
        return "next"

    def handler(job: kickq.Job, data: Any) -> Any:
        return later(data)

    return handler


STYLES = {
    "plain": _plain,
    "coroutine": _coroutine,
    "callback": _callback,
    "future": _future,
    "awaitable": _awaitable,
}


@pytest.mark.parametrize("middleware", [False, True], ids=["bare", "middleware"])
@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_handler_style_is_stopped(style: str, middleware: bool) -> None:
    """Whatever the handler style, with or without plain middleware: a cancelled run ends
    within a moment (its slot is free for the next job, with concurrent_jobs=1), its outcome is
    discarded and the job stays cancelled."""
    if middleware:
        kickq.use(lambda job, call_next: call_next())
    kickq.process("style", STYLES[style](), concurrent_jobs=1)
    job = kickq.create("style", "first").result(5)
    wait_until(lambda: state_of(job.id) == "processing", what="the run started")
    time.sleep(0.05)  # the handler is in its wait
    assert kickq.cancel(job.id).result(5) is True
    following = kickq.create("style", "second").result(5)
    assert kickq.wait(following.id, timeout=5).result(10).result == "next"
    assert assert_cancelled(job.id).result is None


def test_cancel_and_claim_race_each_job_ends_one_way() -> None:
    """Cancels racing with a busy worker's claims and runs: a job cancelled (True) ends
    cancelled and its handler's result is never stored; a job found complete (False) had
    succeeded. No job is both, none is lost."""
    kickq.process("race", lambda job, data: data, concurrent_jobs=8)
    jobs = [f.result(5) for f in kickq.create_many("race", range(300))]
    answers = [kickq.cancel(job.id) for job in jobs]
    for job, answer in zip(jobs, answers, strict=True):
        cancelled = answer.result(10)
        try:
            done = kickq.wait(job.id, timeout=10).result(15)
        except kickq.JobCancelled as error:
            assert cancelled is True
            assert error.job.result is None and error.job.last_error == "cancelled"
        else:
            assert cancelled is False and done.success and done.result == job.data


# A worker process: its handler says it started (a job "started"), waits to be cancelled,
# and says it saw the cancel (a job "saw-cancel").
WORKER_SCRIPT = """
import asyncio, sys, time, kickq

def plain(job, data):
    kickq.create("started", job.id).result(5)
    while not kickq.cancelled():
        time.sleep(0.01)
    kickq.create("saw-cancel", job.id).result(5)
    return "discarded"

async def coroutine(job, data):
    await kickq.create("started", job.id)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        kickq.create("saw-cancel", job.id)
        raise

kickq.process(sys.argv[1], plain if sys.argv[1] == "far-thread" else coroutine)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def child_worker(subprocess_env: dict[str, str]) -> Iterator[Callable[[str], None]]:
    workers = ChildWorkers(subprocess_env)

    def start(name: str) -> None:
        workers.start(WORKER_SCRIPT, name)

    yield start
    workers.stop_all()


@pytest.mark.parametrize("name", ["far-thread", "far-coroutine"])
def test_a_run_in_another_process_is_stopped(name: str, child_worker: Any) -> None:
    """Cancelled here, the job runs in another process: that process learns of it (the cancel
    channel), its thread sees kickq.cancelled() / its coroutine is cancelled."""
    child_worker(name)
    job = kickq.create(name).result(5)
    started = kickq.jobs(name="started")
    wait_until(lambda: started.count().result(5) == 1, what="the child runs it")
    assert kickq.cancel(job.id).result(5) is True
    seen = kickq.jobs(name="saw-cancel")
    wait_until(lambda: seen.count().result(5) == 1, timeout=10, what="the child saw it")
    assert [j.data for j in seen.list().result(5)] == [job.id]
    assert_cancelled(job.id)


def test_a_run_cancelled_before_its_claim_reply_never_starts() -> None:
    """A cancel can reach a process before the reply of the claim that took the job: the
    process remembers it, and the run never starts (shown here by telling the process of the
    cancel before its worker claims)."""
    ran: list[Any] = []
    job = kickq.create("early").result(5)
    kickq._engine.runtime.get().cancels.cancelled((job.id, 1))  # as a message on <ns>:cancel does
    kickq.process("early", lambda job, data: ran.append(data))
    wait_until(lambda: state_of(job.id) == "processing", what="the claim")
    later = kickq.create("early", "later").result(5)
    kickq.wait(later.id, timeout=5).result(10)  # the slot (concurrent_jobs=1) is free again
    assert ran == ["later"]


def test_a_cancel_missed_while_disconnected_is_found_on_reconnect() -> None:
    """A running job cancelled while this process could not hear the cancel channel (here: the
    cancel applied without publishing on it) is stopped when the subscription is confirmed
    again: the runs in progress are read from their records."""
    started = threading.Event()

    def slow(job: kickq.Job, data: Any) -> str:
        started.set()
        wait_until(kickq.cancelled, timeout=10, what="the cancel")
        kickq.create("noticed", job.id)
        return "discarded"

    kickq.process("missed", slow)
    job = kickq.create("missed").result(5)
    assert started.wait(10)
    engine = kickq._engine.runtime.get()
    store = engine.store
    loaded = store.load(job.id)
    assert isinstance(loaded, kickq._redis.stored.StoredJob)
    change = kickq._model.lifecycle.cancel(loaded.job, kickq._model.clock.now())
    assert change is not None
    assert store.run(store.transition_call(change, loaded, 60.0))  # no message on the channel
    time.sleep(0.2)
    assert kickq.jobs(name="noticed").count().result(5) == 0
    engine.cancels._on_ready()  # what the listener calls when it has subscribed again
    wait_until(lambda: kickq.jobs(name="noticed").count().result(5) == 1, what="noticed")
    assert_cancelled(job.id)
