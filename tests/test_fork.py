"""After fork(): the child gets an engine of its own, and the parent's goes on untouched.

Each child reports through a pipe and leaves with os._exit, so that nothing of pytest (or of the
parent's kickq) runs again in it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import kickq
from kickq._engine import runtime
from kickq._model import forks
from kickq._model.config import settings
from kickq._redis import embedded
from support import wait_until

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only"),
    # Python 3.12+ warns that forking a process with threads may deadlock the child: kickq's
    # job here is to make that child work
    pytest.mark.filterwarnings("ignore:This process.*multi-threaded:DeprecationWarning"),
]
CHILD_DEADLINE = 30.0


@attrs.define
class Parent:
    """What a parent that has used kickq looks like before the fork."""

    pending: kickq.Job  # a hotjob no worker has taken yet
    created: list[str]  # ids seen by a kickq.on("create") callback
    connection: Any  # the parent's pub/sub connection


def busy_parent() -> Parent:
    """Use kickq in this process: a worker, finished jobs, an event callback, a pending hotjob."""
    kickq.config(redis_namespace="forked", process_timeout=7)
    kickq.process("parent-job", lambda job, data: data * 2)
    done = kickq.create("parent-job", 21, hotjob=True).result(5)
    assert done.hotjob_future is not None and done.hotjob_future.result(10).result == 42
    created: list[str] = []
    kickq.on("create", lambda job: created.append(job.id))

    def event_seen() -> bool:
        if created:
            return True
        kickq.create("parent-probe").result(5)
        return False

    wait_until(event_seen, timeout=10, interval=0.05, what="a create event")
    pending = kickq.create("parent-later", hotjob=True, hotjob_timeout=60).result(5)
    engine = runtime.get()
    return Parent(pending, created, engine.listener._conn)


def parent_still_works(parent: Parent, caplog: pytest.LogCaptureFixture) -> None:
    """The parent's engine is the one it had: same pub/sub connection, its hotjobs resolve."""
    kickq.process("parent-later", lambda job, data: "late")
    assert parent.pending.hotjob_future is not None
    assert parent.pending.hotjob_future.result(10).result == "late"
    fresh = kickq.create("parent-job", 1, hotjob=True).result(5)
    assert fresh.hotjob_future is not None and fresh.hotjob_future.result(10).result == 2
    wait_until(lambda: fresh.id in parent.created, timeout=10, what="the parent's create event")
    assert runtime.get().listener._conn is parent.connection
    assert not [r for r in caplog.records if "pub/sub connection lost" in r.getMessage()]


def kickq_threads(kind: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"kickq-{kind}")]


def child_uses_kickq() -> str:
    """In the child: the parent's options, create/get/wait/hotjob resolve, a worker of its own."""
    assert kickq.config()["redis_namespace"] == "forked"
    job = kickq.create("child-job", {"n": 1}, hotjob=True).result(5)
    assert job.process_timeout == 7
    assert kickq.get(job.id).result(5).state == "queued"
    assert not kickq_threads("worker"), "the parent's workers do not run in the child"
    kickq.process("child-job", lambda job, data: data["n"] + 1)
    assert job.hotjob_future is not None and job.hotjob_future.result(10).result == 2
    assert kickq.wait(job.id, timeout=10).result(15).result == 2
    with pytest.raises(kickq.JobNotFound):
        kickq.get("0" * 32).result(5)
    return "ok"


def collect(pid: int, read_fd: int, deadline: float = CHILD_DEADLINE) -> str:
    """The child's report; fails the test if it did not exit 0 within `deadline` seconds."""
    chunks: list[bytes] = []
    end = time.monotonic() + deadline
    timed_out = False
    try:
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert not timed_out, f"the child did not finish in {deadline:g}s: {text}"
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


def report(work: Callable[[], str]) -> tuple[int, str]:
    """Run `work` (in the child) and say how it went: an exit status and a line of text."""
    try:
        return 0, work()
    except BaseException as exc:
        return 1, f"{type(exc).__name__}: {exc}"


def in_forked_child(work: Callable[[], str], deadline: float = CHILD_DEADLINE) -> str:
    """Run `work` in a child made by os.fork(); return what it reported."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status, text = 1, "no report"
        try:
            os.close(read_fd)
            status, text = report(work)
            os.write(write_fd, text.encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    return collect(pid, read_fd, deadline)


def test_forked_child_creates_waits_and_processes(caplog: pytest.LogCaptureFixture) -> None:
    """A child forked from a busy parent gets its own engine; the parent's goes on untouched."""
    caplog.set_level(logging.INFO, logger="kickq")
    parent = busy_parent()
    assert in_forked_child(child_uses_kickq) == "ok"
    parent_still_works(parent, caplog)


def _multiprocessing_child(conn: Any) -> None:
    status, text = report(child_uses_kickq)
    try:
        conn.send(text)
    finally:
        os._exit(status)


def test_multiprocessing_fork_child_creates_waits_and_processes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A multiprocessing child started with the fork method works like the os.fork() one."""
    caplog.set_level(logging.INFO, logger="kickq")
    parent = busy_parent()
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_multiprocessing_child, args=(sender,))
    child.start()
    sender.close()
    try:
        assert receiver.poll(CHILD_DEADLINE), "the child did not report in time"
        assert receiver.recv() == "ok"
        child.join(10)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)
        receiver.close()
    parent_still_works(parent, caplog)


def test_forked_child_reset_leaves_the_parent_alone(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """reset() and a new connection in the child close nothing of the parent's."""
    caplog.set_level(logging.INFO, logger="kickq")
    parent = busy_parent()

    def reset_then_use() -> str:
        kickq.reset()
        kickq.config(redis_url=redis_url, redis_namespace="forked", process_timeout=7)
        return child_uses_kickq()

    assert in_forked_child(reset_then_use) == "ok"
    parent_still_works(parent, caplog)


def test_locks_held_at_fork_do_not_block_the_child() -> None:
    """A lock another parent thread holds at the moment of fork does not block the child."""
    kickq.create("warm").result(5)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runtime._lock, settings._lock, embedded._announce_lock:
            held.set()
            release.wait(CHILD_DEADLINE)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)

    def configure_and_use() -> str:
        kickq.config(redis_namespace="forked", process_timeout=7)
        return child_uses_kickq()

    try:
        assert in_forked_child(configure_and_use, deadline=15) == "ok"
    finally:
        release.set()
        holder.join(5)


def test_each_module_registers_one_fork_hook_in_its_place() -> None:
    """Every module that keeps process state has its hook registered, in the order of ORDER
    (lowest layer first), and kickq registers one hook of its own with os.register_at_fork."""
    assert [hook.__module__ for hook in forks.hooks()] == list(forks.ORDER)
    with pytest.raises(ValueError, match="no place"):
        forks.in_child(lambda: None)


def test_the_hooks_run_in_the_child_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a forked child every hook runs once, in the order of ORDER."""
    ran: list[str] = []

    def recorded(module: str, hook: forks.Hook) -> forks.Hook:
        def run() -> None:
            ran.append(module)
            hook()

        return run

    for module, hook in list(forks._hooks.items()):
        monkeypatch.setitem(forks._hooks, module, recorded(module, hook))
    assert in_forked_child(lambda: " ".join(ran)) == " ".join(forks.ORDER)
    assert ran == []  # not in the parent


def test_a_failing_hook_is_logged_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One hook that raises does not keep the hooks after it from running."""
    ran: list[str] = []

    def fails() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(
        forks, "_hooks", {forks.ORDER[0]: fails, forks.ORDER[1]: lambda: ran.append("next")}
    )
    forks._after_fork_in_child()  # the runner alone: these hooks touch nothing of kickq's
    assert ran == ["next"]
    assert [r.levelname for r in caplog.records if "failed in a forked child" in r.message] == [
        "ERROR"
    ]
