"""`kickq worker` as people deploy it: --burst drains and exits, --processes N supervises N
worker processes (restarting one that dies, killing one that is stuck), --reload restarts the
worker when the application's code changes. Each runs `python -m kickq worker` in a
subprocess against the test's Redis."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from kickq._model.job import State
from support import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

APP = """
import logging
import os
import pathlib
import time

import kickq


def mark(path, text):
    # whole or not at all: the test reads the pid as soon as the file exists
    pathlib.Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)


@kickq.processor("cw-pid")
def pid(job, data):
    return os.getpid()


@kickq.processor("cw-stuck")
def stuck(job, data):
    marker = pathlib.Path(data["marker"])
    if not marker.exists():  # the first run blocks in C, past any in-thread limit
        mark(str(marker), str(os.getpid()))
        time.sleep(1000)
    return os.getpid()


@kickq.processor("cw-block")
def block(job, data):
    mark(data["marker"], str(os.getpid()))
    time.sleep(data["seconds"])
    return "slept"
"""
STARTED = re.compile(r"worker process \d+ started \(pid (\d+)\)")


class Cli:
    """`kickq worker cw_app ...` in `directory`, its stderr in a file."""

    def __init__(self, directory: pathlib.Path, env: dict[str, str], *args: str) -> None:
        self.log_path = directory / f"worker-{len(list(directory.glob('worker-*')))}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kickq", "worker", "cw_app", *args],
                env=env,
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def children(self) -> list[int]:
        """The pids of the worker processes the supervisor started, in order."""
        return [int(pid) for pid in STARTED.findall(self.log)]


@pytest.fixture
def app(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "cw_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
def cli(app: pathlib.Path, subprocess_env: dict[str, str]) -> Iterator[Any]:
    started: list[Cli] = []

    def start(*args: str) -> Cli:
        started.append(Cli(app, subprocess_env, *args))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)
        for pid in worker.children():  # a supervisor killed above leaves its children
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def live_pids() -> set[int]:
    return {info.pid for info in kickq.workers().result(5)}


def stop(worker: Cli, timeout: float = 40) -> int:
    worker.process.send_signal(signal.SIGTERM)
    return worker.process.wait(timeout)


# -- --burst ---------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_burst_runs_what_is_queued_and_due_then_exits_0(cli: Any) -> None:
    """Queued jobs and a job whose delay is over run; a job delayed by an hour is not waited
    for; the worker exits 0 on its own."""
    queued = [kickq.create("cw-pid", {}).result(5) for _ in range(5)]
    due = kickq.create("cw-pid", {}, delay=0.5).result(5)
    later = kickq.create("cw-pid", {}, delay=3600).result(5)
    worker = cli("--burst")
    assert worker.process.wait(60) == 0, worker.log
    for job in [*queued, due]:
        done = kickq.get(job.id).result(5)
        assert done.state is State.SUCCESS, done
        assert done.result == worker.process.pid
    assert kickq.get(later.id).result(5).state is State.DELAYED
    assert "burst: no job of cw-block, cw-pid, cw-stuck left to do; stopping" in worker.log
    assert "Traceback" not in worker.log


def test_burst_with_nothing_to_do_exits_0_at_once(cli: Any) -> None:
    worker = cli("--burst", "--names", "cw-pid")
    assert worker.process.wait(30) == 0, worker.log
    assert "burst: no job of cw-pid left to do" in worker.log


def test_burst_waits_for_the_runs_in_progress(cli: Any, app: pathlib.Path) -> None:
    """A job still running when nothing is queued is waited for, not handed back."""
    job = kickq.create("cw-block", {"marker": str(app / "started"), "seconds": 2}).result(5)
    worker = cli("--burst", "--names", "cw-block")
    assert worker.process.wait(60) == 0, worker.log
    assert kickq.get(job.id).result(5).result == "slept"


def test_burst_with_processes_exits_0_once_every_child_is_done(cli: Any) -> None:
    jobs = [kickq.create("cw-pid", {}).result(5) for _ in range(10)]
    worker = cli("--burst", "--processes", "2", "--names", "cw-pid")
    assert worker.process.wait(60) == 0, worker.log
    children = set(worker.children())
    assert len(children) == 2, worker.log
    for job in jobs:
        assert kickq.get(job.id).result(5).result in children
    assert "burst: every worker process is done" in worker.log


# -- --processes -----------------------------------------------------------------------------


def test_processes_run_jobs_in_n_children_and_sigterm_stops_all_with_0(cli: Any) -> None:
    worker = cli("--processes", "3", "--names", "cw-pid", "--concurrency", "1")
    wait_until(lambda: len(live_pids()) == 3, 60, interval=0.2, what="3 worker processes")
    children = live_pids()
    assert children == set(worker.children())
    assert worker.process.pid not in children  # the supervisor runs no worker itself
    jobs = [kickq.create("cw-pid", {}).result(5) for _ in range(12)]
    for job in jobs:
        assert kickq.wait(job.id, timeout=30).result(35).result in children
    assert stop(worker) == 0, worker.log
    assert "SIGTERM: stopping the workers" in worker.log
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in worker.log


def test_a_child_that_dies_is_started_again(cli: Any) -> None:
    worker = cli("--processes", "2", "--names", "cw-pid")
    wait_until(lambda: len(live_pids()) == 2, 60, interval=0.2, what="2 worker processes")
    victim = worker.children()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(worker.children()) == 3, 30, interval=0.2, what="a new child")
    replacement = worker.children()[2]
    assert f"(pid {victim}) was killed by SIGKILL" in worker.log
    wait_until(lambda: replacement in live_pids(), 30, interval=0.2, what="the new worker")
    job = kickq.create("cw-pid", {}).result(5)
    assert kickq.wait(job.id, timeout=30).result(35).result in {worker.children()[1], replacement}
    assert stop(worker) == 0, worker.log


def test_a_stuck_child_is_killed_and_replaced_and_its_job_runs_again(
    cli: Any, app: pathlib.Path
) -> None:
    """A handler blocked in C (time.sleep) past process_timeout + --stuck-margin: the
    supervisor kills its process; the job, ghosted, runs again in the new one and ends (its
    ghost_interval outlasts the margin, so the re-run finds the new process)."""
    worker = cli("--processes", "1", "--names", "cw-stuck", "--stuck-margin", "1")
    wait_until(lambda: len(worker.children()) == 1, 30, interval=0.2, what="the child")
    first = worker.children()[0]
    job = kickq.create(
        "cw-stuck", {"marker": str(app / "stuck")}, process_timeout=1, ghost_interval=5
    ).result(5)
    wait_until(lambda: len(worker.children()) == 2, 60, interval=0.2, what="a replacement")
    assert f"worker process 1 (pid {first}) is stuck" in worker.log
    assert (app / "stuck").read_text() == str(first)
    replacement = worker.children()[1]
    assert kickq.wait(job.id, timeout=60).result(65).result == replacement
    done = kickq.get(job.id).result(5)
    assert [run.state for run in done.runs] == [State.GHOST, State.SUCCESS]
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    assert stop(worker) == 0, worker.log


def test_sigterm_reaches_the_children_which_hand_their_runs_back(
    cli: Any, app: pathlib.Path
) -> None:
    """--grace runs out in the child: its job is queued again at once, and all exit 0."""
    worker = cli("--processes", "2", "--names", "cw-block", "--grace", "1")
    job = kickq.create("cw-block", {"marker": str(app / "started"), "seconds": 600}).result(5)
    wait_until((app / "started").exists, 60, interval=0.1, what="the job to start")
    assert stop(worker) == 0, worker.log
    back = kickq.get(job.id).result(5)
    assert back.state is State.QUEUED, back
    assert back.runs[-1].error is not None and back.runs[-1].error.startswith("abandoned")
    assert "1 jobs still running after 1s; handed back, queued again" in worker.log


def test_sigterm_to_every_process_at_once_is_one_signal(cli: Any, app: pathlib.Path) -> None:
    """systemd's stop sends SIGTERM to each process of the unit, and the supervisor passes its
    own on: a child takes the two as one, so the grace still applies, and all exit 0."""
    worker = cli("--processes", "1", "--names", "cw-block", "--grace", "1")
    job = kickq.create("cw-block", {"marker": str(app / "started"), "seconds": 600}).result(5)
    wait_until((app / "started").exists, 60, interval=0.1, what="the job to start")
    os.kill(int((app / "started").read_text()), signal.SIGTERM)
    # the supervisor passes its own on once the child has taken the first (as it would be,
    # systemd's reaching both at once and the supervisor's loop passing it on within 0.25 s)
    wait_until(lambda: "stopping (a second signal exits at once)" in worker.log, 20)
    assert stop(worker) == 0, worker.log
    assert kickq.get(job.id).result(5).state is State.QUEUED
    assert "second signal (SIGTERM): exiting now" not in worker.log, worker.log


def test_a_second_signal_kills_the_children_at_once(cli: Any, app: pathlib.Path) -> None:
    worker = cli("--processes", "1", "--names", "cw-block", "--grace", "600")
    kickq.create("cw-block", {"marker": str(app / "started"), "seconds": 600}).result(5)
    wait_until((app / "started").exists, 60, interval=0.1, what="the job to start")
    child = int((app / "started").read_text())
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping the workers" in worker.log, 20, what="the first signal")
    worker.process.send_signal(signal.SIGINT)
    assert worker.process.wait(20) == 128 + signal.SIGINT
    wait_until(lambda: not _alive(child), 20, what="the child to be killed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (its parent gone, not reaped yet by init) counts as dead
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


# -- --reload --------------------------------------------------------------------------------


def test_reload_restarts_the_worker_when_a_py_file_changes(cli: Any, app: pathlib.Path) -> None:
    (app / "cw_reload.py").write_text(
        "import kickq\n\n@kickq.processor('cw-version')\ndef v(job, data):\n    return 1\n"
    )
    (app / "cw_app.py").write_text(APP + "\nimport cw_reload\n")
    worker = cli("--reload", "--names", "cw-version", "--grace", "5")
    first = kickq.create("cw-version", {}).result(5)
    assert kickq.wait(first.id, timeout=60).result(65).result == 1
    (app / "cw_reload.py").write_text(
        "import kickq\n\n@kickq.processor('cw-version')\ndef v(job, data):\n    return 2\n"
    )
    wait_until(lambda: len(worker.children()) == 2, 30, interval=0.2, what="a restart")
    assert "cw_reload.py changed: restarting the worker" in worker.log
    second = kickq.create("cw-version", {}).result(5)
    assert kickq.wait(second.id, timeout=60).result(65).result == 2
    assert stop(worker) == 0, worker.log


def test_reload_waits_for_a_fix_when_the_worker_exits(cli: Any, app: pathlib.Path) -> None:
    """An edit that breaks the module stops the worker; the next edit starts it again."""
    worker = cli("--reload", "--names", "cw-pid", "--grace", "5")
    wait_until(lambda: "processing cw-pid" in worker.log, 60, interval=0.2, what="the worker")
    (app / "cw_app.py").write_text(APP + "\nraise RuntimeError('half edited')\n")
    wait_until(lambda: "waiting for a change to start it again" in worker.log, 60, what="exit")
    assert len(worker.children()) == 2  # started once more on the edit, which then failed
    (app / "cw_app.py").write_text(APP + "\n# fixed\n")
    wait_until(lambda: len(worker.children()) == 3, 30, interval=0.2, what="a restart")
    job = kickq.create("cw-pid", {}).result(5)
    assert kickq.wait(job.id, timeout=60).result(65).result == worker.children()[2]
    assert stop(worker) == 0, worker.log


# -- bad usage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "0"], "argument --processes: expected a whole number from 1 to 1024"),
        (["--processes", "2", "--reload"], "--reload runs one worker process"),
        (["--reload", "--burst"], "--reload restarts the worker on changes"),
        (["--stuck-margin", "5"], "--stuck-margin goes with --processes or --reload"),
        (["--processes", "2", "--metrics-port", "0"], "--metrics-port does not go with"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    app: pathlib.Path, subprocess_env: dict[str, str], args: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kickq", "worker", "cw_app", *args],
        env=subprocess_env,
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_processes_with_a_module_that_does_not_exist_exits_2(
    cli: Any, app: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kickq", "worker", "no_such_app", "--processes", "2"],
        env=subprocess_env,
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "no module named 'no_such_app'" in done.stderr


def test_a_child_that_keeps_dying_is_started_again_later_and_later(
    cli: Any, app: pathlib.Path
) -> None:
    """A module that fails on import: each quick death doubles the wait before the next
    start, so a crash loop does not spin."""
    (app / "cw_app.py").write_text("raise RuntimeError('broken deploy')\n")
    worker = cli("--processes", "1")
    wait_until(lambda: "starting another in 2s" in worker.log, 60, what="three deaths")
    assert "exited with status 1 after" in worker.log
    assert "starting another in 0.5s" in worker.log
    assert "starting another in 1s" in worker.log
    assert worker.log.count("importing cw_app failed: RuntimeError: broken deploy") >= 3
    assert stop(worker) == 0, worker.log


def test_children_stop_when_the_supervisor_is_killed(cli: Any) -> None:
    worker = cli("--processes", "1", "--names", "cw-pid")
    wait_until(lambda: len(live_pids()) == 1, 60, interval=0.2, what="the worker process")
    (child,) = worker.children()
    worker.process.kill()
    worker.process.wait(10)
    wait_until(lambda: not _alive(child), 30, interval=0.1, what="the orphan to stop")
    assert "the supervisor of this worker is gone; stopping" in worker.log
    assert live_pids() == set()  # it stopped as on SIGTERM: its worker is out of workers()


def test_worker_help_documents_the_modes_and_the_exit_status(capsys: Any) -> None:
    from kickq.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["worker", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for option in ("--burst", "--processes N", "--stuck-margin SECONDS", "--reload"):
        assert option in shown
    assert "exit status: 0 stopped by a signal" in shown
    assert "replaces one with a run --stuck-margin seconds past" in " ".join(shown.split())


# -- serve() in this process -----------------------------------------------------------------


def test_serve_in_burst_mode_returns_0_once_the_work_is_done(caplog: Any) -> None:
    from kickq.cli import worker as worker_cli

    caplog.set_level(logging.INFO, logger="kickq.cli")
    jobs = [kickq.create("cw-inproc", i).result(5) for i in range(5)]
    later = kickq.create("cw-inproc", 99, delay=3600).result(5)
    workers = [kickq.process("cw-inproc", lambda job, data: data * 2)]
    assert worker_cli.serve(workers, worker_cli.Signals(), 10, burst=True) == 0
    assert [kickq.get(job.id).result(5).result for job in jobs] == [0, 2, 4, 6, 8]
    assert kickq.get(later.id).result(5).state is State.DELAYED
    assert "burst: no job of cw-inproc left to do; stopping" in caplog.messages


def test_serve_stops_when_its_supervisor_is_gone(caplog: Any) -> None:
    from kickq.cli import worker as worker_cli

    workers = [kickq.process("cw-inproc", lambda job, data: data)]
    assert worker_cli.serve(workers, worker_cli.Signals(), 10, orphaned=lambda: True) == 0
    assert "the supervisor of this worker is gone; stopping" in caplog.messages
    assert workers[0].stopped


def test_serve_in_burst_mode_runs_a_retry_that_is_due_at_once() -> None:
    from kickq.cli import worker as worker_cli

    def flaky(job: Any, data: Any) -> str:
        if len(job.runs) < 2:
            raise RuntimeError("first run fails")
        return "second run"

    job = kickq.create("cw-inproc", None, retry=True, retry_count=1, retry_interval=0).result(5)
    workers = [kickq.process("cw-inproc", flaky)]
    assert worker_cli.serve(workers, worker_cli.Signals(), 10, burst=True) == 0
    done = kickq.get(job.id).result(5)
    assert (done.state, done.result, len(done.runs)) == (State.SUCCESS, "second run", 2)
