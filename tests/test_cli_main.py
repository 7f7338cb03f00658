"""The `kickq` command's parts, called in this process: main()'s exit statuses and output, the
worker's import, reachability check, signals and graceful stop (test_cli.py runs the command
as a child process)."""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from kickq._verbs import processors as _processors
from kickq.cli import commands as cli
from kickq.cli import reach as _cli_redis
from kickq.cli import worker as worker_cli
from support import wait_until

UNREACHABLE = "redis://127.0.0.1:1"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> Iterator[None]:
    """No registrations, sys.path and sys.modules as they were, a private KICKQ_HOME."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("KICKQ_HOME", str(tmp_path / "home"))
    modules = set(sys.modules)
    _processors.clear()
    yield
    _processors.clear()
    for name in set(sys.modules) - modules:
        if name.startswith("cli_"):
            del sys.modules[name]


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    return line


def test_show_and_delete(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """show prints the job (JSON with --json); delete deletes it, then fails with one line."""
    job = kickq.create("main-show", {"k": 1}).result(5)
    assert cli.main(["show", job.id, "--redis-url", redis_url]) == 0
    assert job.id in capsys.readouterr().out
    assert cli.main(["show", job.id, "--json", "--redis-url", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == {"k": 1}
    assert cli.main(["delete", job.id, "--redis-url", redis_url]) == 0
    assert capsys.readouterr().out == f"deleted {job.id}\n"
    assert cli.main(["delete", job.id, "--redis-url", redis_url]) == 1
    assert error_of(capsys) == f"kickq delete: no job with id {job.id!r}"


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["show", "x", "--namespace", "a{b}"], 2, "redis_namespace must not contain"),
        (["show", "0" * 32, "--redis-url", UNREACHABLE], 1, "cannot be reached"),
        (["worker", "cli_nothing_here"], 2, "no module named 'cli_nothing_here'"),
    ],
)
def test_failures_are_one_line(
    args: list[str],
    status: int,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad option value exits 2, an unreachable Redis 1, each with one line on stderr."""
    monkeypatch.setattr(worker_cli, "configure_logging", lambda level: None)
    assert cli.main(args) == status
    line = error_of(capsys)
    assert line.startswith(f"kickq {args[0]}: ") and says in line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["jobs", "--limit", str(2**63 + 1)], "--limit"),
        (["jobs", "--limit", "10001"], "--limit"),
        (["jobs", "--offset", str(2**63)], "--offset"),
        (["jobs", "--offset", "9" * 5000], "--offset"),
        (["worker", "app", "--concurrency", "10001"], "--concurrency"),
        (["worker", "app", "--concurrency", str(10**30)], "--concurrency"),
        (["worker", "app", "--grace", "1e300"], "--grace"),
        (["worker", "app", "--metrics-port", "99999"], "--metrics-port"),
        (["stats", "--watch", "--interval", "1e300"], "--interval"),
        (["dashboard", "--port", str(2**64)], "--port"),
        (["jobs", "--redis-url", "redis://127.0.0.1:99999"], "--redis-url"),
        (["stats", "--redis-url", "redis://127.0.0.1:6379/abc"], "--redis-url"),
        (["worker", "app", "--redis-url", "redis://127.0.0.1:6379/x"], "--redis-url"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(
    args: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A number an option cannot take (a port or database in a URL too) exits 2 with one line
    naming the option and what is wrong, before anything connects to Redis."""
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert option in line and ("from" in line or "whole number" in line)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's errors are one line ending with where to find help, and exit status 2."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["show"])
    assert exited.value.code == 2
    assert error_of(capsys) == (
        "kickq show: the following arguments are required: ID (see kickq show --help)"
    )


@pytest.mark.parametrize("error", [RuntimeError("surprise"), KeyboardInterrupt()])
def test_unforeseen_errors(
    error: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unforeseen error is still one line (exit 1); Ctrl-C exits 130 quietly."""

    def boom(job_id: str) -> Any:
        raise error

    monkeypatch.setattr(kickq, "get", boom)
    status = cli.main(["show", "0" * 32])
    if isinstance(error, KeyboardInterrupt):
        assert status == 130
        assert capsys.readouterr().err == ""
    else:
        assert status == 1
        assert error_of(capsys) == "kickq show: unexpected RuntimeError: surprise"


def test_wait_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A future Redis never answers fails the command after WAIT seconds."""
    monkeypatch.setattr(_cli_redis, "WAIT", 0.01)
    with pytest.raises(cli.Failure, match="no answer from Redis"):
        cli._wait(concurrent.futures.Future())


def test_embedded_without_starting_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """embedded path/status/stop print words or, with --json, JSON."""
    assert cli.main(["embedded", "path"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'home'}\n"
    assert cli.main(["embedded", "path", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(tmp_path / "home")}
    assert cli.main(["embedded", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert cli.main(["embedded", "stop"]) == 0
    assert capsys.readouterr().out == "not running\n"
    assert cli.main(["embedded", "stop", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"stopped": False}


def write_module(directory: pathlib.Path, name: str, text: str) -> None:
    (directory / f"{name}.py").write_text(text)


def test_import_processors(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module is found in the current directory; a missing module is bad usage, a missing
    dependency of the module or its own error is not."""
    monkeypatch.chdir(tmp_path)
    write_module(tmp_path, "cli_ok", "import kickq\nkickq.processor('ok')(print)\n")
    write_module(tmp_path, "cli_dep", "import cli_no_such_dependency\n")
    write_module(tmp_path, "cli_bad", "raise ValueError('bad\\nconfig')\n")
    [entry] = worker_cli.import_processors("cli_ok")
    assert entry.names == ("ok",)
    with pytest.raises(worker_cli.ImportFailed) as missing:
        worker_cli.import_processors("cli_ok.sub")
    assert missing.value.usage
    for name in ("cli_dep", "cli_bad"):
        with pytest.raises(worker_cli.ImportFailed) as failed:
            worker_cli.import_processors(name)
        assert not failed.value.usage and f"importing {name} failed" in str(failed.value)


def test_check_reachable(redis_url: str) -> None:
    """The worker's check answers for a live server and raises RedisUnavailable otherwise."""
    worker_cli.check_reachable()
    kickq.config(redis_url=UNREACHABLE)
    with pytest.raises(kickq.RedisUnavailable, match="cannot be reached"):
        worker_cli.check_reachable()


def test_worker_command_serves_until_stopped(
    tmp_path: pathlib.Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kickq worker` imports, checks Redis, starts the processors and, once told to stop,
    stops them and exits 0 (the signal itself is the child-process tests' part)."""
    monkeypatch.chdir(tmp_path)
    write_module(tmp_path, "cli_app", "import kickq\nkickq.processor('app')(lambda j, d: d)\n")
    monkeypatch.setattr(worker_cli, "configure_logging", lambda level: None)
    job = kickq.create("app", 7).result(5)

    class Told(worker_cli.Signals):
        def install(self) -> None:
            threading.Thread(target=self.stop_when_done, daemon=True).start()

        def stop_when_done(self) -> None:
            wait_until(lambda: kickq.get(job.id).result(5).success, 10)
            self.stop.set()

    monkeypatch.setattr(worker_cli, "Signals", Told)
    assert cli.main(["worker", "cli_app", "--redis-url", redis_url, "--concurrency", "2"]) == 0


def test_worker_command_without_processors(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module that registers no processors is bad usage."""
    monkeypatch.chdir(tmp_path)
    write_module(tmp_path, "cli_none", "x = 1\n")
    monkeypatch.setattr(worker_cli, "configure_logging", lambda level: None)
    assert cli.main(["worker", "cli_none"]) == 2
    assert "registers no processors" in error_of(capsys)


def test_first_signal_asks_for_a_stop() -> None:
    """The first SIGTERM sets the stop event and arms the immediate exit for a second one."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals = worker_cli.Signals()
    try:
        signals.install()
        signal.raise_signal(signal.SIGTERM)
        assert signals.stop.is_set() and signals.received == "SIGTERM"
        assert signal.getsignal(signal.SIGINT) == signals._second
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def held_worker(name: str) -> tuple[kickq.Worker, kickq.Job, threading.Event]:
    """A worker whose job is running, held until the event returned is set."""
    release, started = threading.Event(), threading.Event()

    def held(job: kickq.Job, data: Any) -> str:
        started.set()
        release.wait(10)
        return "released"

    worker = kickq.process(name, held)
    job = kickq.create(name).result(5)
    assert started.wait(10)
    return worker, job, release


def test_stop_lets_the_running_job_finish() -> None:
    """stop() claims nothing more and waits for the running job, which succeeds: 0."""
    worker, job, release = held_worker("held")
    queued = kickq.create("held").result(5)
    stopping = concurrent.futures.ThreadPoolExecutor(1)
    try:
        status = stopping.submit(worker_cli.stop, [worker], 10)
        wait_until(worker._stopping.is_set, 5, what="the worker to stop fetching")
        release.set()
        assert status.result(15) == 0
    finally:
        stopping.shutdown()
    assert kickq.get(job.id).result(5).state is kickq.State.SUCCESS
    assert kickq.get(queued.id).result(5).state is kickq.State.QUEUED


def test_stop_gives_up_after_the_grace() -> None:
    """When the grace runs out with a job still running, stop() hands it back and returns 0."""
    worker, job, release = held_worker("held-long")
    try:
        assert worker_cli.stop([worker], 0.2) == 0
    finally:
        release.set()
    assert kickq.get(job.id).result(5).state is kickq.State.QUEUED
