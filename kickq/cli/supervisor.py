"""`kickq worker MODULE --processes N` and `--reload`: a process that runs workers as children.

The supervisor imports no application code and starts no kickq thread: it starts N children,
each `python -m kickq worker MODULE` with the same options but these (a new process, never a
fork of one with threads), and watches them in its main thread, in short slices:

- A child that dies is started again: at once if it had run STABLE seconds, else after a delay
  that doubles with each quick death (BACKOFF_FIRST up to BACKOFF_MAX), so a crash loop does not
  spin. A child whose first run exits 2 (bad usage: no such module, no processor) stops
  everything with that status: every child would do the same.
- A child that is stuck is killed (SIGKILL) and replaced: one whose oldest run in a handler
  (see runwatch.py) is still going `margin` seconds past its process_timeout. Its job was
  ghosted at its deadline (by any process's timer) and re-runs as ghost_retry says: a kill
  costs at most a ghost re-run, never a job.
- The first SIGINT or SIGTERM is passed on to every child (started in sessions of their own,
  so that a terminal's Ctrl-C reaches them only this way, once): each stops as `kickq worker`
  does, its runs finishing within --grace and handed back after it. A child still alive
  STOP_MARGIN seconds after the grace is killed. Exit status 0 when every child exited 0 (or,
  still starting, died of the signal itself: it had no run yet), else 1.
  A second signal kills the children at once and exits 128 + its number.
- With burst, a child that exits 0 is done; the supervisor exits 0 once all are.
- With a watcher (--reload), a change of the application's files stops the child (SIGTERM, as
  a deploy would) and starts a new one; a child that exits on its own waits for the next change.

A child learns that its supervisor is gone by its parent changing (see runwatch.orphaned), and
stops as on SIGTERM: a supervisor killed with SIGKILL leaves no worker behind for long.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

import attrs

from kickq._model import clock
from kickq.cli import runwatch
from kickq.cli.parser import EXIT_USAGE
from kickq.cli.reload import Watcher

log = logging.getLogger("kickq.cli")
POLL = 0.25  # seconds between two rounds of the main loop
STABLE = 10.0  # seconds a child must have run for its death to restart it at once
BACKOFF_FIRST = 0.5  # seconds before restarting a child that died quickly; doubles each time
BACKOFF_MAX = 30.0
STOP_MARGIN = 10.0  # seconds past --grace a stopping child has to hand its runs back and exit
STUCK_MARGIN = 10.0  # default seconds past process_timeout before a stuck child is killed


@attrs.define
class Child:
    """One slot of the supervisor, and the process that fills it now."""

    slot: int
    cell: str  # the file its runs' deadlines are kept in (see runwatch.py)
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    runs: int = 0  # how many processes this slot has started
    failures: int = 0  # quick deaths in a row
    start_at: float | None = 0.0  # when to start the next process; None: not to start one
    killed: bool = False  # the supervisor killed it: it was stuck
    restarting: bool = False  # asked to stop for a reload: started again at once

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


def worker_options(args: argparse.Namespace) -> list[str]:
    """The arguments of a child: the module and the options of `kickq worker` the supervisor
    was given, but its own (--processes, --reload, --stuck-margin) and the connection's (the
    children get those in their environment)."""
    options = [args.module, "--grace", repr(args.grace), "--log-format", args.log_format]
    if args.names:
        options += ["--names", ",".join(args.names)]
    if args.concurrency is not None:
        options += ["--concurrency", str(args.concurrency)]
    if args.log_level is not None:
        options += ["--log-level", args.log_level]
    if args.no_log_config:
        options.append("--no-log-config")
    if args.metrics_port is not None:
        options += ["--metrics-port", str(args.metrics_port)]
    if args.metrics_host is not None:
        options += ["--metrics-host", args.metrics_host]
    if args.burst:
        options.append("--burst")
    return options


def describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        count: int,
        *,
        env: Mapping[str, str],
        grace: float,
        burst: bool = False,
        margin: float = STUCK_MARGIN,
        watcher: Watcher | None = None,
    ) -> None:
        self._command = list(command)
        self._env = dict(env)
        self._grace = grace
        self._burst = burst
        self._margin = margin
        self._watcher = watcher
        self._directory = tempfile.mkdtemp(prefix="kickq-supervisor-")
        self.children = [
            Child(slot, os.path.join(self._directory, f"child-{slot}.cell"))
            for slot in range(1, count + 1)
        ]
        self._stop = threading.Event()
        self._signal = 0

    # -- signals ----------------------------------------------------------------------------

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._first)

    def _first(self, signum: int, _frame: FrameType | None) -> None:
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, self._second)
        self.request_stop(signum)

    def request_stop(self, signum: int) -> None:
        """Stop the children as on the signal `signum` (any thread may call it)."""
        self._signal = signum
        self._stop.set()

    def _second(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        os.write(2, f"kickq worker: second signal ({name}): killing the workers\n".encode())
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.kill()
        os._exit(128 + signum)

    # -- the main loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until a signal (or, with burst, until every child is done); the exit
        status."""
        what = (
            "a worker process, restarted on changes"
            if self._watcher
            else (f"{len(self.children)} worker processes")
        )
        log.info("supervising %s (pid %d); Ctrl-C or SIGTERM stops", what, os.getpid())
        try:
            while not self._stop.wait(POLL):
                status = self._round(clock.real_monotonic())
                if status is not None:
                    self._stop_all(signal.SIGTERM)
                    return status
            log.info("%s: stopping the workers", signal.Signals(self._signal).name)
            return self._stop_all(self._signal)
        finally:
            for child in self.children:  # never leave one behind (an error of this loop)
                if child.process is not None and child.process.poll() is None:
                    child.process.kill()
                    child.process.wait()
            shutil.rmtree(self._directory, ignore_errors=True)

    def _round(self, now: float) -> int | None:
        for child in self.children:
            if child.process is not None:
                status = child.process.poll()
                if status is None:
                    self._check_stuck(child, now)
                    continue
                usage = self._ended(child, status, now)
                if usage is not None:
                    return usage
            if child.start_at is not None and now >= child.start_at:
                self._start(child)
        if self._burst and all(c.process is None and c.start_at is None for c in self.children):
            log.info("burst: every worker process is done")
            return 0
        if self._watcher is not None:
            changed = self._watcher.changed()
            if changed:
                self._reload(changed, now)
        return None

    def _start(self, child: Child) -> None:
        runwatch.clear(child.cell)
        env = {
            **self._env,
            runwatch.CELL_ENV: child.cell,
            runwatch.PARENT_ENV: str(os.getpid()),
        }
        # a session of its own: a terminal's Ctrl-C reaches the child through this process only
        child.process = subprocess.Popen(self._command, env=env, start_new_session=True)
        child.started = clock.real_monotonic()
        child.runs += 1
        child.start_at = None
        child.killed = child.restarting = False
        log.info("worker process %d started (pid %d)", child.slot, child.pid)

    def _ended(self, child: Child, status: int, now: float) -> int | None:
        """A child's process ended on its own: decide when its slot starts another (or that
        the command is wrong: its status to exit with)."""
        pid, ran = child.pid, now - child.started
        child.process = None
        if child.killed or child.restarting:
            child.start_at = now
            return None
        if self._burst and status == 0:
            log.info("worker process %d (pid %d) is done", child.slot, pid)
            return None
        if status == EXIT_USAGE and child.runs == 1:
            log.error(
                "worker process %d (pid %d) exited with status 2 (bad usage)", child.slot, pid
            )
            return EXIT_USAGE
        if self._watcher is not None:
            log.error(
                "worker process (pid %d) %s; waiting for a change to start it again",
                pid,
                describe(status),
            )
            return None
        child.failures = 0 if ran >= STABLE else child.failures + 1
        delay = min(BACKOFF_FIRST * 2 ** (child.failures - 1), BACKOFF_MAX) if child.failures else 0
        child.start_at = now + delay
        log.error(
            "worker process %d (pid %d) %s after %.1fs; starting another in %gs",
            child.slot,
            pid,
            describe(status),
            ran,
            delay,
        )
        return None

    def _check_stuck(self, child: Child, now: float) -> None:
        if child.killed or child.process is None:
            return
        deadline = runwatch.read(child.cell)
        if deadline and now > deadline + self._margin:
            log.error(
                "worker process %d (pid %d) is stuck: a run of it is %.0fs past its "
                "process_timeout; killing it (SIGKILL) and starting another (the job is a "
                "ghost and runs again as ghost_retry says)",
                child.slot,
                child.pid,
                now - deadline,
            )
            child.killed = True
            child.process.kill()

    def _reload(self, changed: list[str], now: float) -> None:
        shown = ", ".join(changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        log.warning("%s changed: restarting the worker", shown)
        for child in self.children:
            if child.process is None:
                child.start_at = now
            elif not child.restarting:
                child.restarting = True
                child.process.send_signal(signal.SIGTERM)

    def _stop_all(self, signum: int) -> int:
        """Pass `signum` on to every child, wait for them (killing one that overstays), and
        return 0 if every one exited 0."""
        alive = [child for child in self.children if child.process is not None]
        for child in alive:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)
        deadline = clock.real_monotonic() + self._grace + STOP_MARGIN
        status = 0
        for child in alive:
            process = child.process
            assert process is not None
            while process.poll() is None:
                if clock.real_monotonic() > deadline:
                    log.error(
                        "worker process %d (pid %d) did not stop in time; killing it",
                        child.slot,
                        child.pid,
                    )
                    process.kill()
                process_wait(process, POLL)
            # a child still starting (importing the app) dies of the signal itself: it had
            # no run to hand back yet
            if process.returncode not in (0, -signum, 128 + signum):
                log.error(
                    "worker process %d (pid %d) %s",
                    child.slot,
                    child.pid,
                    describe(process.returncode),
                )
                status = 1
            child.process = None
        if status == 0:
            log.info("stopped")
        return status


def process_wait(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to `timeout` seconds for `process` (in a short slice: see worker.serve)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
