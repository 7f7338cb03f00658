"""The parts of `kickq worker --processes/--reload` in this process: the supervisor's loop over
small stand-in children, the run deadlines a worker keeps for it, and the reload watcher.
(tests/test_cli_workers.py runs the whole command.)"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from kickq.cli import reload, runwatch, supervisor
from support import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# a stand-in child: does what its slot's line in the script file says, again at each start
CHILD = """
import os, signal, struct, sys, time
slot = os.path.basename(os.environ["KICKQ_SUPERVISOR_CELL"]).split(".")[0]
plan = dict(line.split("=", 1) for line in open(sys.argv[1]).read().split())
what = plan.get(slot, "wait")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if what.startswith("exit"):
    sys.exit(int(what[4:]))
if what == "stuck":  # a run that passed its deadline a minute ago, still in its handler
    with open(os.environ["KICKQ_SUPERVISOR_CELL"], "r+b") as cell:
        cell.write(struct.pack("d", time.monotonic() - 60))
open(f"{sys.argv[1]}.ready.{os.getpid()}", "w").close()
while True:
    time.sleep(0.05)
"""


class Stand:
    """A Supervisor of stand-in children, run in a thread."""

    def __init__(self, tmp_path: pathlib.Path, plan: dict[str, str], count: int, **options: Any):
        self.script = tmp_path / "child.py"
        self.script.write_text(CHILD)
        self.plan_path = tmp_path / "plan"
        self.plan(plan)
        self.boss = supervisor.Supervisor(
            [sys.executable, str(self.script), str(self.plan_path)],
            count,
            env=dict(os.environ),
            grace=options.pop("grace", 5),
            **options,
        )
        self.status: list[int] = []
        self.thread = threading.Thread(target=lambda: self.status.append(self.boss.run()))
        self.thread.start()

    def plan(self, plan: dict[str, str]) -> None:
        self.plan_path.write_text("\n".join(f"{slot}={what}" for slot, what in plan.items()))

    def finish(self, timeout: float = 30) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self.status[0]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.boss.request_stop(signum)
        return self.finish()

    def pids(self) -> list[int]:
        return [child.pid for child in self.boss.children if child.process is not None]

    def ready(self, count: int) -> list[int]:
        """Wait until `count` children run and have read the plan; their pids."""

        def waiting() -> list[int]:
            pids = self.pids()
            ready = all(pathlib.Path(f"{self.plan_path}.ready.{pid}").exists() for pid in pids)
            return pids if len(pids) == count and ready else []

        return wait_until(waiting, 30, what=f"{count} children ready")


@pytest.fixture
def stands() -> Iterator[list[Stand]]:
    made: list[Stand] = []
    yield made
    for stand in made:
        if stand.thread.is_alive():
            stand.stop()


@pytest.fixture
def cli_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="kickq.cli")
    return caplog


def test_children_are_started_and_stopped_with_0(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any
) -> None:
    stand = Stand(tmp_path, {}, 3)
    stands.append(stand)
    wait_until(lambda: len(stand.pids()) == 3, 30, what="3 children")
    pids = stand.pids()
    assert stand.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopped" in cli_log.messages


def test_a_child_that_will_not_stop_is_killed_and_the_status_is_1(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(supervisor, "STOP_MARGIN", 0.5)
    stand = Stand(tmp_path, {}, 1, grace=0)
    stands.append(stand)
    (child,) = stand.ready(1)
    os.kill(child, signal.SIGSTOP)  # deaf to the signal passed on
    assert stand.stop() == 1
    assert any("did not stop in time; killing it" in m for m in cli_log.messages)


def test_quick_deaths_are_restarted_later_and_later(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_FIRST", 0.1)
    monkeypatch.setattr(supervisor, "BACKOFF_MAX", 0.4)
    stand = Stand(tmp_path, {"child-1": "exit1"}, 1)
    stands.append(stand)
    wanted = [f"starting another in {delay:g}s" for delay in (0.1, 0.2, 0.4)]
    wait_until(lambda: sum("starting another in 0.4s" in m for m in cli_log.messages) >= 2, 30)
    for text in wanted:
        assert any(text in m for m in cli_log.messages), cli_log.messages
    assert stand.stop() == 0


def test_a_long_lived_child_that_dies_is_restarted_at_once(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(supervisor, "STABLE", 0.0)
    stand = Stand(tmp_path, {}, 1)
    stands.append(stand)
    wait_until(lambda: len(stand.pids()) == 1, 30, what="the child")
    first = stand.pids()[0]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: stand.pids() and stand.pids()[0] != first, 30, what="a new child")
    assert any("was killed by SIGKILL" in m and "in 0s" in m for m in cli_log.messages)
    assert stand.stop() == 0


def test_a_stuck_child_is_killed_and_replaced(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any
) -> None:
    stand = Stand(tmp_path, {"child-2": "stuck"}, 2, margin=1.0)
    stands.append(stand)
    wait_until(lambda: stand.boss.children[1].runs >= 2, 30, what="a replacement")
    stand.plan({})  # the next one is not stuck
    wait_until(lambda: len(stand.pids()) == 2, 30, what="both children")
    assert any("worker process 2" in m and "is stuck" in m for m in cli_log.messages)
    assert stand.boss.children[0].runs == 1
    assert stand.stop() == 0


def test_burst_ends_once_every_child_exits_0(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any
) -> None:
    stand = Stand(tmp_path, {"child-1": "exit0", "child-2": "exit0"}, 2, burst=True)
    stands.append(stand)
    assert stand.finish() == 0
    assert "burst: every worker process is done" in cli_log.messages


def test_a_first_start_that_exits_2_stops_everything_with_2(
    tmp_path: pathlib.Path, stands: list[Stand]
) -> None:
    stand = Stand(tmp_path, {"child-1": "exit2"}, 2)
    stands.append(stand)
    assert stand.finish() == 2
    assert stand.pids() == []


def test_reload_restarts_on_a_change_and_waits_after_an_exit(
    tmp_path: pathlib.Path, stands: list[Stand], cli_log: Any
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("x = 1\n")
    watcher = reload.Watcher(str(code), poll=0.05)
    stand = Stand(tmp_path, {}, 1, watcher=watcher)
    stands.append(stand)
    (first,) = stand.ready(1)
    stand.plan({"child-1": "exit1"})
    (code / "app.py").write_text("x = 22\n")
    wait_until(lambda: any("waiting for a change" in m for m in cli_log.messages), 30)
    assert any("app.py changed: restarting the worker" in m for m in cli_log.messages)
    assert stand.boss.children[0].runs == 2 and stand.pids() == []
    stand.plan({})
    (code / "other.py").write_text("y = 1\n")
    wait_until(lambda: len(stand.pids()) == 1 and stand.pids()[0] != first, 30)
    assert stand.stop() == 0


def test_describe_says_how_a_child_ended() -> None:
    assert supervisor.describe(3) == "exited with status 3"
    assert supervisor.describe(-9) == "was killed by SIGKILL"
    assert supervisor.describe(-200) == "was killed by signal 200"


# -- the reload watcher ----------------------------------------------------------------------


def test_watcher_sees_py_files_written_added_and_removed_only(tmp_path: pathlib.Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "jobs.py").write_text("a = 1\n")
    for skipped in (".git", "__pycache__", "node_modules", "env"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.py").write_text("")
    (tmp_path / "env" / "pyvenv.cfg").write_text("")
    watcher = reload.Watcher(str(tmp_path), poll=0)
    assert watcher.changed() == []
    (tmp_path / "app" / "jobs.py").write_text("a = 22\n")
    (tmp_path / "notes.txt").write_text("not code")
    for skipped in (".git", "__pycache__", "node_modules", "env"):
        (tmp_path / skipped / "x.py").write_text("changed")
    assert watcher.changed() == [os.path.join("app", "jobs.py")]
    (tmp_path / "new.py").write_text("")
    (tmp_path / "app" / "jobs.py").unlink()
    assert watcher.changed() == [os.path.join("app", "jobs.py"), "new.py"]
    assert watcher.changed() == []


def test_watcher_reads_the_tree_at_most_every_poll(tmp_path: pathlib.Path) -> None:
    watcher = reload.Watcher(str(tmp_path), poll=3600)
    (tmp_path / "new.py").write_text("")
    assert watcher.changed() == []  # not yet time to look


# -- what a worker tells its supervisor ------------------------------------------------------


def test_runwatch_keeps_the_deadline_of_the_oldest_run_in_a_handler(
    tmp_path: pathlib.Path,
) -> None:
    cell = str(tmp_path / "cell")
    runwatch.clear(cell)
    release = threading.Event()

    def block(job: Any, data: Any) -> str:
        release.wait(30)
        return "done"

    async def coro(job: Any, data: Any) -> str:
        await asyncio.sleep(0.01)
        return "coro"

    runwatch.install(cell, [block, coro])
    kickq.process("rw-block", block)
    kickq.process("rw-coro", coro)
    before = time.monotonic()
    job = kickq.create("rw-block", None, process_timeout=100).result(5)
    wait_until(lambda: runwatch.read(cell) > 0, 20, what="the deadline")
    deadline = runwatch.read(cell)
    assert before + 95 < deadline < time.monotonic() + 100
    other = kickq.create("rw-coro", None).result(5)
    assert kickq.wait(other.id, timeout=20).result(25).result == "coro"
    assert runwatch.read(cell) == deadline  # still the blocked run's
    release.set()
    assert kickq.wait(job.id, timeout=20).result(25).result == "done"
    wait_until(lambda: runwatch.read(cell) == 0.0, 20, what="no run left")


def test_supervised_takes_its_variables_out_of_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv(runwatch.CELL_ENV, "/tmp/some.cell")
    monkeypatch.setenv(runwatch.PARENT_ENV, str(os.getppid()))
    taken = runwatch.Supervised.take()
    assert taken.cell == "/tmp/some.cell"
    assert runwatch.CELL_ENV not in os.environ and runwatch.PARENT_ENV not in os.environ
    assert not taken.orphaned()
    assert runwatch.Supervised(None, "1" if os.getppid() != 1 else "2").orphaned()
    assert not runwatch.Supervised(None, None).orphaned()


def test_worker_options_pass_everything_but_the_supervisors_own() -> None:
    from kickq.cli.parser import parse

    args = parse(
        "0",
        [
            *("worker", "app.jobs", "--processes", "3", "--names", "a,b", "--concurrency", "4"),
            *("--grace", "7", "--log-level", "DEBUG", "--no-log-config", "--burst"),
            *("--stuck-margin", "2", "--redis-url", "redis://secret@h:1/0", "--namespace", "n"),
        ],
    )
    options = supervisor.worker_options(args)
    assert options == [
        *("app.jobs", "--grace", "7.0", "--log-format", "text", "--names", "a,b"),
        *("--concurrency", "4", "--log-level", "DEBUG", "--no-log-config", "--burst"),
    ]
