"""Failures you can debug: a failed run keeps its error as type and message and its traceback
(bounded), read back by get(), carried by events, shown by `kickq show`, `--json` and the
dashboard's job page; the job log's line of a failure is a WARNING (an ERROR when the job fails
for good) with the exception as exc_info."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import html
import json
import logging
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import kickq
from kickq._engine.handlers import (
    MAX_TRACEBACK_CHARS,
    MAX_TRACEBACK_FRAMES,
    MAX_TRACEBACK_PART,
    cut_traceback,
    describe_error,
    describe_traceback,
)
from kickq._model.lifecycle import MAX_ERROR_CHARS
from kickq._redis.layout import gather, lay_out
from support import DashboardServer, wait_until

MISSING = "KeyError: 'missing'"


def finished(job_id: str, timeout: float = 10) -> kickq.Job:
    """The job once it is complete (success or failure)."""
    try:
        return kickq.wait(job_id, timeout=timeout).result(timeout + 5)
    except kickq.JobFailed as failed:
        return failed.job


def failed_job(name: str, handler: Callable[..., Any], **options: Any) -> kickq.Job:
    """Serve `name` with `handler`, create one job and return it once it failed for good."""
    kickq.process(name, handler)
    done = finished(kickq.create(name, **options).result(5).id)
    assert done.state == "fail", done
    return done


# -- the handler styles, each failing in a function named raise_missing -----------------------


def raise_missing() -> None:
    raise KeyError("missing")


def plain(job: kickq.Job, data: Any) -> None:
    raise_missing()


def callback(job: kickq.Job, data: Any, done: Callable[..., None]) -> None:
    def finish() -> None:
        try:
            raise_missing()
        except KeyError as exc:
            done(exc)

    threading.Thread(target=finish).start()


def returns_future(job: kickq.Job, data: Any) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def finish() -> None:
        try:
            raise_missing()
        except KeyError as exc:
            future.set_exception(exc)

    threading.Thread(target=finish).start()
    return future


def returns_awaitable(job: kickq.Job, data: Any) -> Any:
    async def later() -> None:
        await asyncio.sleep(0)
        raise_missing()

    return later()


async def coroutine(job: kickq.Job, data: Any) -> None:
    await asyncio.sleep(0)
    raise_missing()


STYLES: dict[str, Callable[..., Any]] = {
    "plain": plain,
    "callback": callback,
    "future": returns_future,
    "awaitable": returns_awaitable,
    "coroutine": coroutine,
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_handler_style_keeps_type_message_and_traceback(style: str) -> None:
    """Whatever the handler's style, the run's error and last_error read `KeyError: 'missing'`
    and the run keeps the traceback, naming the function that raised."""
    done = failed_job(f"tb-{style}", STYLES[style])
    [run] = done.runs
    assert done.last_error == run.error == MISSING
    assert run.traceback is not None
    assert "raise_missing" in run.traceback and run.traceback.rstrip().endswith(MISSING)
    again = kickq.get(done.id).result(5)  # read back from the record
    assert again.runs[0].traceback == run.traceback and again.last_error == MISSING


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
def test_a_middleware_error_keeps_its_traceback(kind: str) -> None:
    """An error raised by a middleware (plain or coroutine) is the run's, with its traceback."""

    def refuse_plain(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
        raise PermissionError("not today")

    async def refuse_coroutine(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
        raise PermissionError("not today")

    kickq.use(refuse_plain if kind == "plain" else refuse_coroutine)

    async def handler(job: kickq.Job, data: Any) -> str:
        return "never"

    done = failed_job(f"mw-{kind}", handler)
    assert done.last_error == "PermissionError: not today"
    traceback = done.runs[0].traceback
    assert traceback is not None and f"refuse_{kind}" in traceback


def test_a_callback_given_text_keeps_the_text_and_no_traceback() -> None:
    """done("text"): the error is the text as given (no type: none was raised), no traceback."""
    done = failed_job("tb-text", lambda job, data, done: done("disk full"))
    assert done.last_error == done.runs[0].error == "disk full"
    assert done.runs[0].traceback is None


def test_a_chained_cause_is_in_the_traceback() -> None:
    """`raise ... from ...`: the cause and its frames come first, then the outer exception."""

    def lookup() -> None:
        raise KeyError("inner")

    def handler(job: kickq.Job, data: Any) -> None:
        try:
            lookup()
        except KeyError as exc:
            raise ValueError("outer") from exc

    done = failed_job("tb-chain", handler)
    traceback = done.runs[0].traceback
    assert done.last_error == "ValueError: outer"
    assert traceback is not None
    assert "KeyError: 'inner'" in traceback and "direct cause" in traceback
    assert traceback.index("lookup") < traceback.index("ValueError: outer")


def test_kickq_own_texts_for_what_raised_nothing() -> None:
    """A result that is not JSON says so with its type and no traceback (kickq's check, not
    the handler's frames); a cancel keeps "cancelled"."""
    done = failed_job("tb-result", lambda job, data: object())
    assert done.last_error is not None and done.last_error.startswith("SerializationError: ")
    assert done.runs[0].traceback is None

    release = threading.Event()
    kickq.process("tb-cancel", lambda job, data: release.wait(10))
    job = kickq.create("tb-cancel").result(5)
    wait_until(lambda: kickq.get(job.id).result(5).state == "processing", what="processing")
    assert kickq.cancel(job.id).result(5) is True
    release.set()
    cancelled = finished(job.id)
    assert cancelled.last_error == "cancelled" and cancelled.runs[0].traceback is None


def test_a_ghost_keeps_its_text_and_no_traceback() -> None:
    """A run that overran process_timeout: kickq's own words, no type, no traceback."""

    async def slow(job: kickq.Job, data: Any) -> None:
        await asyncio.sleep(30)

    done = failed_job("tb-ghost", slow, process_timeout=0.3, ghost_retry=False)
    assert done.last_error == "run 1 overran process_timeout (0.3s): ghost"
    assert done.runs[0].traceback is None


def test_a_hotjob_fails_with_the_new_text() -> None:
    """JobFailed from a hotjob's future carries `Type: message`, and the job its traceback."""
    kickq.process("tb-hot", plain)
    job = kickq.create("tb-hot", hotjob=True).result(5)
    assert job.hotjob_future is not None
    with pytest.raises(kickq.JobFailed) as failed:
        job.hotjob_future.result(10)
    assert failed.value.error == MISSING and MISSING in str(failed.value)
    traceback = failed.value.job.runs[-1].traceback
    assert traceback is not None and "raise_missing" in traceback


def test_an_event_carries_the_traceback() -> None:
    """The fail event's job has the run's traceback."""
    seen: list[kickq.Job] = []
    kickq.on("fail", seen.append)
    done = failed_job("tb-event", plain)
    wait_until(lambda: seen, what="the fail event")
    assert seen[-1].id == done.id and seen[-1].runs[-1].traceback == done.runs[-1].traceback


# -- bounds ------------------------------------------------------------------------------------


def ping(depth: int) -> None:
    if depth == 0:
        raise RuntimeError("bottom")
    pong(depth - 1)


def pong(depth: int) -> None:
    ping(depth - 1)


def test_a_deep_traceback_keeps_its_innermost_frames() -> None:
    """A traceback of 400 frames (no two alike in a row) keeps its end: its innermost
    MAX_TRACEBACK_FRAMES frames, a note of what was left out first, the exception last."""
    done = failed_job("tb-deep", lambda job, data: ping(400))
    traceback = done.runs[0].traceback
    assert traceback is not None
    assert len(traceback) <= MAX_TRACEBACK_CHARS
    assert (
        traceback.startswith("[... ") and "outermost frames of the traceback left out" in traceback
    )
    assert traceback.count("\n  File ") == MAX_TRACEBACK_FRAMES
    assert traceback.rstrip().endswith("RuntimeError: bottom")
    assert "in ping" in traceback and "in pong" in traceback
    assert done.last_error == "RuntimeError: bottom"


def test_a_huge_message_leaves_room_for_the_frames() -> None:
    """A 1 MB message: the traceback stays bounded, its frames kept, the message cut in its
    middle; the error text is cut as before (MAX_ERROR_CHARS)."""

    def shout(job: kickq.Job, data: Any) -> None:
        raise RuntimeError("E" * 1_000_000)

    done = failed_job("tb-huge", shout)
    traceback = done.runs[0].traceback
    assert traceback is not None and len(traceback) <= MAX_TRACEBACK_CHARS
    assert "in shout" in traceback and "characters cut" in traceback
    assert done.last_error is not None and len(done.last_error) < MAX_ERROR_CHARS + 100


def test_cut_traceback_keeps_whole_parts_from_the_end() -> None:
    parts = [f"part {n:04d}\n" + "x" * 1000 + "\n" for n in range(40)]
    cut = cut_traceback(parts)
    assert len(cut) <= MAX_TRACEBACK_CHARS and cut.endswith(parts[-1])
    first_kept = cut.split("\n", 1)[1]
    assert first_kept.startswith("part ") and parts.index(first_kept[: len(parts[0])]) > 0
    assert cut_traceback(["short\n"]) == "short\n"


def test_describe_error_and_traceback() -> None:
    """The error text is the type's name and the message; an empty message leaves the type."""
    assert describe_error(KeyError("missing")) == MISSING
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert describe_error(ValueError("a\nb")) == "ValueError: a\nb"

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise TypeError("no")

    assert describe_error(Unprintable()).startswith("Unprintable: <")
    try:
        raise Unprintable()
    except Unprintable as exc:
        text = describe_traceback(exc)
    assert text is not None and "test_describe_error_and_traceback" in text
    never_raised = describe_traceback(KeyError("x"))
    assert never_raised is not None and never_raised.strip() == "KeyError: 'x'"
    long_line = describe_traceback(ValueError("x" * (MAX_TRACEBACK_PART * 2)))
    assert long_line is not None and len(long_line) < MAX_TRACEBACK_PART + 100


# -- the job log --------------------------------------------------------------------------------


def test_a_retried_failure_is_a_warning_and_a_final_one_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed run that will run again is a WARNING, the failure for good an ERROR, each with
    the exception as exc_info."""
    with caplog.at_level(logging.INFO, logger="kickq.jobs"):
        done = failed_job("tb-log", plain, retry=True, retry_count=1, retry_interval=0)
        wait_until(lambda: len([r for r in caplog.records if r.name == "kickq.jobs"]) >= 2)
    lines = [r for r in caplog.records if r.name == "kickq.jobs"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.ERROR]
    assert [r.kickq_outcome for r in lines] == ["retry", "fail"]  # type: ignore[attr-defined]
    for line in lines:
        assert line.exc_info is not None and isinstance(line.exc_info[1], KeyError)
        assert line.getMessage().endswith(MISSING) and done.id in line.getMessage()
    assert "raise_missing" in caplog.text  # the formatted traceback


class Kept(logging.Handler):
    """What a log handler saw of each line, without keeping the record (nor its exception)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelno, self.format(record)))


def test_the_exception_is_not_kept_once_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once its line is written, nothing of kickq holds the run's exception (nor its frames)."""
    raised: list[weakref.ref[BaseException]] = []

    class Missing(KeyError):
        pass

    def handler(job: kickq.Job, data: Any) -> None:
        error = Missing("missing")
        raised.append(weakref.ref(error))
        raise error

    logger = logging.getLogger("kickq.jobs")
    kept = Kept()
    monkeypatch.setattr(logger, "propagate", False)  # no test capture keeps the records
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(kept)
    try:
        failed_job("tb-leak", handler, retry=True, retry_count=1, retry_interval=0)
        wait_until(lambda: len(kept.seen) >= 2, what="two lines")
    finally:
        logger.removeHandler(kept)
    assert [level for level, _ in kept.seen] == [logging.WARNING, logging.ERROR]
    assert all("Traceback (most recent call last)" in text for _, text in kept.seen)
    assert len(raised) == 2
    wait_until(lambda: gc.collect() >= 0 and all(ref() is None for ref in raised), timeout=5)


def test_a_success_stays_info(caplog: pytest.LogCaptureFixture) -> None:
    kickq.process("tb-ok", lambda job, data: "ok")
    with caplog.at_level(logging.INFO, logger="kickq.jobs"):
        finished(kickq.create("tb-ok").result(5).id)
        wait_until(lambda: [r for r in caplog.records if r.name == "kickq.jobs"])
    [line] = [r for r in caplog.records if r.name == "kickq.jobs"]
    assert line.levelno == logging.INFO and line.exc_info is None


# -- records written before runs kept a traceback ----------------------------------------------


def test_a_record_without_a_traceback_reads_none(r: Any) -> None:
    """A run written before (no traceback in its JSON) reads back with traceback None."""
    done = failed_job("tb-old", plain)
    key = f"kickq:job:{done.id}"
    pieces = [name for name in r.hkeys(key) if name == "run:1" or name.startswith("run:1~")]
    old = json.loads(gather(r.hgetall(key))["run:1"])
    del old["traceback"]
    r.hdel(key, *pieces)
    r.hset(key, mapping=lay_out({"run:1": json.dumps(old)}))
    back = kickq.get(done.id).result(5)
    assert back.runs[0].error == MISSING and back.runs[0].traceback is None


# -- kickq show, --json, the dashboard ----------------------------------------------------------


def kickq_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in env.items() if name not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "kickq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kickq_show_prints_the_traceback(subprocess_env: dict[str, str]) -> None:
    done = failed_job("tb-show", plain, retry=True, retry_count=1, retry_interval=0)
    shown = kickq_cli("show", done.id, env=subprocess_env)
    assert shown.returncode == 0, shown.stderr
    assert MISSING in shown.stdout
    assert "traceback of run 2:" in shown.stdout and "traceback of run 1:" not in shown.stdout
    assert "Traceback (most recent call last):" in shown.stdout
    assert "raise_missing" in shown.stdout

    runs = json.loads(kickq_cli("show", done.id, "--json", env=subprocess_env).stdout)["runs"]
    assert [run["error"] for run in runs] == [MISSING, MISSING]
    assert all("raise_missing" in run["traceback"] for run in runs)


def test_kickq_show_json_has_a_null_traceback_for_a_success(
    subprocess_env: dict[str, str],
) -> None:
    kickq.process("tb-fine", lambda job, data: "ok")
    job = finished(kickq.create("tb-fine").result(5).id)
    shown = kickq_cli("show", job.id, "--json", env=subprocess_env)
    assert json.loads(shown.stdout)["runs"][0]["traceback"] is None
    assert "traceback of run" not in kickq_cli("show", job.id, env=subprocess_env).stdout


PROBE = "<script>alert(1)</script>"


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


def test_the_dashboard_shows_the_traceback_escaped(browser: httpx.Client) -> None:
    def handler(job: kickq.Job, data: Any) -> None:
        raise ValueError(PROBE)

    done = failed_job("tb-dash", handler)
    page = browser.get(f"/jobs/{done.id}").text
    assert PROBE not in page
    assert '<details class="traceback" id="job-traceback" open>' in page
    assert html.escape(f"ValueError: {PROBE}", quote=False) in page
    assert "in handler" in page and "Traceback of run 1" in page


def test_the_dashboard_shows_no_traceback_for_a_success(browser: httpx.Client) -> None:
    kickq.process("tb-dash-ok", lambda job, data: "ok")
    job = finished(kickq.create("tb-dash-ok").result(5).id)
    page = browser.get(f"/jobs/{job.id}").text
    assert "job-traceback" not in page and "<details" not in page


def test_the_formatting_cost_is_small() -> None:
    """Formatting a traceback of a few frames takes well under a millisecond (a bound for the
    record; the measured cost is in the changelog)."""
    try:
        ping(6)
    except RuntimeError as exc:
        error = exc
    import time

    start = time.perf_counter()
    for _ in range(100):
        describe_traceback(error)
    per_call = (time.perf_counter() - start) / 100
    assert per_call < 0.01 * max(1.0, float(os.environ.get("KICKQ_TEST_TIME_FACTOR", "1")))
