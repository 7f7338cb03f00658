"""@kickq.processor, kickq.start() and the "kickq.jobs" log line of every finished run."""

from __future__ import annotations

import ast
import logging
import os
import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import connect_kickq
from test_fork import in_forked_child

import kickq
from kickq._verbs import processors as _processors
from support import RedisCluster, RedisServer, wait_until

pytestmark = pytest.mark.both_backends
PACKAGE = pathlib.Path(kickq.__file__).parent
PRINTING_MODULES = {"cli/commands.py", "cli/output.py"}  # the command's output; nothing else prints


@pytest.fixture(autouse=True)
def no_registrations() -> Iterator[None]:
    """Each test starts with no processor registered (reset() keeps them, by design)."""
    _processors.clear()
    yield
    _processors.clear()


def finished(job_id: str, timeout: float = 10) -> kickq.Job:
    try:
        return kickq.wait(job_id, timeout=timeout).result(timeout + 5)
    except kickq.JobFailed as failed:
        return failed.job


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kickq-worker-")]


def test_decorator_registers_without_starting() -> None:
    """The decorator returns the function unchanged and starts no worker: a job stays queued."""

    def resize(job: kickq.Job, data: Any) -> str:
        return "done"

    assert kickq.processor("resize", concurrent_jobs=4)(resize) is resize
    [entry] = _processors.registered()
    assert (entry.names, entry.handler, entry.concurrent_jobs) == (("resize",), resize, 4)
    assert worker_threads() == []
    job = kickq.create("resize").result(5)
    assert kickq.get(job.id).result(5).state is kickq.State.QUEUED


def test_start_runs_registered_processors() -> None:
    """start() starts a worker per processor; names lists and option dicts work as in process()."""

    @kickq.processor("double")
    def double(job: kickq.Job, data: int) -> int:
        return data * 2

    @kickq.processor(["upper", "lower"], {"concurrent_jobs": 2})
    def case(job: kickq.Job, data: str) -> str:
        return data.upper() if job.name == "upper" else data.lower()

    workers = kickq.start()
    assert sorted(w.names for w in workers) == [("double",), ("upper", "lower")]
    assert {w.names: w.concurrent_jobs for w in workers}[("upper", "lower")] == 2
    jobs = [
        kickq.create(n, d).result(5) for n, d in [("double", 21), ("upper", "a"), ("lower", "B")]
    ]
    assert [finished(job.id).result for job in jobs] == [42, "A", "b"]


def test_start_is_idempotent() -> None:
    """A second start() starts nothing more and returns the same workers."""
    kickq.processor("once")(lambda job, data: None)
    first = kickq.start()
    second = kickq.start()
    assert second == first and len(first) == 1
    assert worker_threads() == ["kickq-worker-once"]


def test_start_by_names_then_the_rest() -> None:
    """start(names) starts only those names (a processor of several serves only them); a later
    start() starts what is left, without starting any name twice."""
    kickq.processor(["a", "b"])(lambda job, data: job.name)
    kickq.processor("c")(lambda job, data: job.name)
    [worker] = kickq.start("a")
    assert worker.names == ("a",)
    held = kickq.create("b").result(5)
    assert finished(kickq.create("a").result(5).id).result == "a"
    assert kickq.get(held.id).result(5).state is kickq.State.QUEUED
    assert sorted(w.names for w in kickq.start(["b", "c"])) == [("b",), ("c",)]
    assert finished(held.id).result == "b"
    assert sorted(w.names for w in kickq.start()) == [("a",), ("b",), ("c",)]
    assert sorted(worker_threads()) == ["kickq-worker-a", "kickq-worker-b", "kickq-worker-c"]


def test_concurrent_jobs_override() -> None:
    """start(concurrent_jobs=N) gives every worker it starts N slots."""
    kickq.processor("x", concurrent_jobs=1)(lambda job, data: None)
    [worker] = kickq.start(concurrent_jobs=3)
    assert worker.concurrent_jobs == 3


def test_reset_stops_workers_and_keeps_registrations(target: RedisServer | RedisCluster) -> None:
    """reset() stops the workers; the registrations stay, and start() starts them again."""
    kickq.processor("kept")(lambda job, data: "ran")
    [before] = kickq.start()
    kickq.reset()
    assert before.stopped
    assert len(_processors.registered()) == 1
    connect_kickq(target)  # the test's server again: reset() restored the defaults
    [after] = kickq.start()
    assert after is not before
    assert finished(kickq.create("kept").result(5).id).result == "ran"


def test_stopped_worker_is_started_again() -> None:
    """A worker stopped by its handle counts as not started: start() starts a new one."""
    kickq.processor("again")(lambda job, data: None)
    [first] = kickq.start()
    first.stop(5)
    [second] = kickq.start()
    assert second is not first and not second.stopped


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: kickq.processor(""), kickq.ConfigError),
        (lambda: kickq.processor([]), kickq.ConfigError),
        (lambda: kickq.processor(42), TypeError),  # type: ignore[arg-type]
        (lambda: kickq.processor(lambda job, data: None), TypeError),  # bare @kickq.processor
        (lambda: kickq.processor("a", concurrent_jobs=0), kickq.ConfigError),
        (lambda: kickq.processor("a", retry=True), kickq.ConfigError),
        (lambda: kickq.processor("a", [1]), kickq.ConfigError),  # type: ignore[arg-type]
        (lambda: kickq.processor("a")(42), TypeError),  # type: ignore[type-var]
        (lambda: kickq.start("unknown"), kickq.ConfigError),
        (lambda: kickq.start(""), kickq.ConfigError),
        (lambda: kickq.start(concurrent_jobs=0), kickq.ConfigError),
        (lambda: kickq.start(concurrent_jobs=True), kickq.ConfigError),
    ],
)
def test_bad_arguments_raise_and_register_nothing(call: Any, error: type[Exception]) -> None:
    """Bad names, options or handlers raise at once; nothing is registered or started."""
    with pytest.raises(error):
        call()
    assert _processors.registered() == []
    assert worker_threads() == []


@pytest.mark.single_backend  # pure: never reaches Redis
def test_unknown_name_error_lists_registered_names() -> None:
    """start() with a name no processor serves says which names are registered."""
    kickq.processor("known")(lambda job, data: None)
    with pytest.raises(kickq.ConfigError, match=r"'nope'.*registered: known"):
        kickq.start(["known", "nope"])
    assert worker_threads() == []


@pytest.mark.single_backend  # pure: never reaches Redis
def test_start_with_nothing_registered_returns_no_workers() -> None:
    """start() with no processor registered starts nothing."""
    assert kickq.start() == []


def test_one_log_line_per_finished_run(caplog: pytest.LogCaptureFixture) -> None:
    """Each run a worker ends is one line on "kickq.jobs": name, id, outcome, duration, and the
    error of a failure (a WARNING with its exception, as the run will run again; a success at
    INFO); the parts are on the record too."""

    def flaky(job: kickq.Job, data: Any) -> str:
        if len(job.runs) == 1:
            raise ValueError("first\nrun fails")
        return "ok"

    kickq.process("flaky", flaky)
    with caplog.at_level(logging.INFO, logger="kickq.jobs"):
        job = kickq.create("flaky", retry=True, retry_interval=0).result(5)
        assert finished(job.id).state is kickq.State.SUCCESS
        wait_until(lambda: len(caplog.records) >= 2, what="two log lines")
    lines = [r for r in caplog.records if r.name == "kickq.jobs"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO]
    assert lines[0].exc_info is not None and isinstance(lines[0].exc_info[1], ValueError)
    assert lines[1].exc_info is None
    failed, succeeded = (r.getMessage() for r in lines)
    assert failed.startswith(f"flaky {job.id} retry in ") and failed.endswith("first run fails")
    assert succeeded.startswith(f"flaky {job.id} success in ") and succeeded.endswith("s")
    assert [r.kickq_outcome for r in lines] == ["retry", "success"]  # type: ignore[attr-defined]
    assert lines[1].kickq_job.result == "ok"  # type: ignore[attr-defined]
    assert isinstance(lines[1].kickq_duration, float)  # type: ignore[attr-defined]


def test_job_log_is_quiet_unless_configured(subprocess_env: dict[str, str]) -> None:
    """An application that configures no logging sees nothing of the job lines on stderr."""
    code = (
        "import kickq\n"
        "kickq.process('quiet', lambda job, data: 1)\n"
        "job = kickq.create('quiet').result(10)\n"
        "print(kickq.wait(job.id, timeout=10).result(15).state)\n"
        "kickq.reset()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "success", "")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


@pytest.mark.single_backend
def test_library_prints_nothing_and_logs_under_kickq() -> None:
    """No module prints but the command's output ones, and every logger is "kickq" or a child."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        if path.relative_to(PACKAGE).as_posix() not in PRINTING_MODULES:
            assert _calls(tree, "print") == [], f"{path.name} prints"
        for call in _calls(tree, "getLogger"):
            [name] = call.args
            assert isinstance(name, ast.Constant), f"{path.name}: a logger named at run time"
            assert name.value == "kickq" or name.value.startswith("kickq."), path.name


@pytest.mark.single_backend
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
@pytest.mark.filterwarnings("ignore:This process.*multi-threaded:DeprecationWarning")
def test_forked_child_starts_workers_of_its_own() -> None:
    """After fork(), start() in the child starts its own workers: the parent's do not run
    there (the job may be run by either)."""
    kickq.processor("forked-proc")(lambda job, data: "ran")
    [parent_worker] = kickq.start()

    def child() -> str:
        [worker] = kickq.start()
        assert worker is not parent_worker and not worker.stopped
        job = kickq.create("forked-proc").result(5)
        assert kickq.wait(job.id, timeout=10).result(15).result == "ran"
        return "ok"

    assert in_forked_child(child) == "ok"
