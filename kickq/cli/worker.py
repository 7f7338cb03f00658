"""`kickq worker MODULE`: import a module, run the processors it registers, stop on a signal.

The first SIGINT or SIGTERM stops fetching and lets the running jobs finish for up to `grace`
seconds; the runs still going then are given up and handed back, their jobs queued again at
once (see Worker._give_up), and the worker exits 0. It exits 1 only if Redis did not take a run
back: that run becomes a ghost after its process_timeout, and runs again as ghost_retry says.
A second signal gives up the runs at once, waits up to SECOND_SIGNAL_WAIT for their hand-back
(one round trip; longer, and they are left to ghost), and exits with status 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by it.

With --burst it also stops on its own, as RQ's burst mode, once its work is done: when no job
of the names it serves is queued, due now (delayed, or waiting for a retry or a ghost re-run,
whose time has come) or processing in any process, and nothing this process created is unsent
(kickq.testing.drain's reading, see kickq._verbs.drain). A job delayed until later is not
waited for (RQ ignores scheduled jobs too); a job processing elsewhere is, so that its retry,
when due at once, is run too. It then stops as on a signal (the runs have ended) and exits 0.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from wsgiref.simple_server import WSGIServer

from kickq._engine import runtime
from kickq._engine.future import KickqFuture
from kickq._engine.worker import Worker
from kickq._model import clock
from kickq._model.config import settings
from kickq._redis import connection
from kickq._verbs import drain, processors
from kickq.cli import logs
from kickq.cli.parser import EXIT_USAGE, Failure

log = logging.getLogger("kickq.cli")
POLL = 0.25  # seconds: how late the main thread may run a signal's handler
SECOND_SIGNAL_WAIT = 1.0  # seconds a second signal waits for the runs' hand-back
SUPERVISED_ECHO = 2.0  # seconds after the first signal a supervised worker takes none as second
BURST_CHECK = 0.5  # seconds between two readings of what is left, with --burst
METRICS_HOST = "127.0.0.1"  # where --metrics-port listens unless --metrics-host says otherwise


class ImportFailed(Exception):
    """The module cannot be imported: `usage` when it does not exist (a wrong name)."""

    def __init__(self, message: str, usage: bool) -> None:
        super().__init__(message)
        self.usage = usage


def configure_logging(level: str | None, log_format: str = "text") -> None:
    """Log to stderr at `level` (a line per finished job, "kickq.jobs", at INFO), unless the
    root logger has handlers already (see kickq.cli.logs)."""
    logs.configure(level, log_format)


def import_processors(module: str) -> list[processors.Processor]:
    """Import `module` as other worker commands do, the current directory first on sys.path;
    returns the processors registered by then (by this module or those it imports)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise ImportFailed(f"no module named {module!r}", usage=True) from None
        raise _failed(module, exc) from None
    except Exception as exc:  # the module's own error: its message, the traceback at DEBUG
        raise _failed(module, exc) from None
    return processors.registered()


def _failed(module: str, exc: Exception) -> ImportFailed:
    log.debug("importing %s failed", module, exc_info=exc)
    return ImportFailed(f"importing {module} failed: {type(exc).__name__}: {exc}", usage=False)


def check_reachable() -> None:
    """Fail at once, in one line, when Redis cannot be reached: started, the workers would wait
    the outage out (as they should once running), logging it. One PING on a client of its own,
    before kickq's threads start."""
    connection.check_reachable(settings.snapshot(), settings.explicit)


def serve_metrics(host: str | None, port: int | None) -> WSGIServer | None:
    """With --metrics-port, register kickq.metrics and serve prometheus_client's registry over
    HTTP at /metrics, in a daemon thread, on `host` (127.0.0.1 unless told: metrics are for the
    machine's own Prometheus, or for --metrics-host 0.0.0.0 in a container)."""
    if port is None:
        if host is not None:
            raise Failure("--metrics-host goes with --metrics-port", EXIT_USAGE)
        return None
    try:
        from kickq import metrics  # says what to install when prometheus_client is missing
    except ImportError as exc:
        raise Failure(f"--metrics-port: {exc}") from None
    from prometheus_client import start_http_server

    host = host or METRICS_HOST
    metrics.register()
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise Failure(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server


class Signals:
    """The first SIGINT/SIGTERM asks for a graceful stop; the second hands the running jobs back
    (within SECOND_SIGNAL_WAIT) and ends the process; a third ends it without waiting."""

    def __init__(self, echo: float = 0.0) -> None:
        self.stop = threading.Event()
        self.received = ""  # the first signal's name, logged by the main loop (not the handler)
        self.workers: Sequence[Worker] = ()  # whose runs a second signal hands back
        self._exiting = False
        self._installed = False
        # a signal this soon after the first is the same one arriving twice, not a second: a
        # supervised worker gets systemd's SIGTERM (sent to a unit's every process) and the one
        # its supervisor passes on
        self._echo = echo
        self._first_at = 0.0

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._first)
        self._installed = True

    def stopping(self) -> None:
        """The worker stops on its own (--burst, or its supervisor gone): a signal now is
        taken as the second, as if the stop had come from a first one."""
        if self._installed:
            for other in (signal.SIGINT, signal.SIGTERM):
                signal.signal(other, self._second)

    def _first(self, signum: int, _frame: FrameType | None) -> None:
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, self._second)
        self.received = signal.Signals(signum).name
        self._first_at = clock.real_monotonic()
        self.stop.set()

    def _second(self, signum: int, _frame: FrameType | None) -> None:
        if self._first_at and clock.real_monotonic() - self._first_at < self._echo:
            return
        name = signal.Signals(signum).name
        if not self._exiting:  # a third signal, while this one waits, exits at once
            self._exiting = True
            os.write(2, f"kickq worker: second signal ({name}): exiting now\n".encode())
            give_up(self.workers, SECOND_SIGNAL_WAIT)
        os._exit(128 + signum)


def give_up(workers: Sequence[Worker], wait: float) -> bool:
    """Give up every worker's runs in progress and wait up to `wait` seconds in all for their
    hand-back; whether every worker's thread ended by then."""
    for worker in workers:
        worker._give_up()
    deadline = clock.real_monotonic() + wait
    return all(worker._join(max(deadline - clock.real_monotonic(), 0.0)) for worker in workers)


def serve(
    workers: Sequence[Worker],
    signals: Signals,
    grace: float,
    burst: bool = False,
    orphaned: Callable[[], bool] = lambda: False,
) -> int:
    """Run until the first signal (with `burst`, or until the work is done; or until
    `orphaned()` says the supervisor that started this process is gone), then stop the
    workers within `grace` seconds.

    The main thread only ever waits in short slices: Python runs a signal's handler in the
    main thread between two bytecodes, so a main thread blocked in a long join (on a signal
    that another thread received) would hold back the second signal until the join ends."""
    names = sorted({name for worker in workers for name in worker.names})
    log.info("processing %s (pid %d); Ctrl-C or SIGTERM stops", ", ".join(names), os.getpid())
    signals.workers = workers
    done = BurstCheck(names) if burst else None
    while not signals.stop.wait(POLL):
        if done is not None and done.empty():
            log.info("burst: no job of %s left to do; stopping", ", ".join(names))
            signals.stopping()
            break
        if orphaned():
            log.warning("the supervisor of this worker is gone; stopping")
            signals.stopping()
            break
    else:
        log.info("%s: stopping (a second signal exits at once)", signals.received)
    status: list[int] = []
    stopper = threading.Thread(
        target=lambda: status.append(stop(workers, grace)), name="kickq-cli-stop", daemon=True
    )
    stopper.start()
    while stopper.is_alive():
        stopper.join(POLL)
    return status[0] if status else 1


class BurstCheck:
    """For --burst: whether the work of `names` is done, read at most every BURST_CHECK
    seconds (a reading is one script call per partition)."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = list(names)
        self._next = clock.real_monotonic() + BURST_CHECK
        self._asking: KickqFuture[drain.Backlog] | None = None

    def empty(self) -> bool:
        if self._asking is None:
            if clock.real_monotonic() < self._next:
                return False
            self._next = clock.real_monotonic() + BURST_CHECK
            self._asking = drain.backlog(runtime.get(), self._names, clock.now())
        if not self._asking.done():  # read by a later call: the signals wait meanwhile
            return False
        asking, self._asking = self._asking, None
        try:
            left = asking.result()
        except Exception as exc:  # Redis down: the workers wait it out, and so does this
            log.warning("burst: cannot read what is left to do: %s", exc)
            return False
        if left.due:
            runtime.get().timer.nudge(0)  # queue them now, not at the timer's next round
        return left.empty


def stop(workers: Sequence[Worker], grace: float) -> int:
    """Stop fetching everywhere at once, wait for running jobs up to one shared deadline, then
    give up those still running and hand them back: 0 unless some could not be."""
    running = sum(worker.running for worker in workers)
    log.info("no new jobs; waiting up to %gs for %d running", grace, running)
    for worker in workers:
        worker.stop_fetching()
    deadline = clock.real_monotonic() + grace
    for worker in workers:
        worker.stop(max(deadline - clock.real_monotonic(), 0.0))
    handed = sum(worker._handed_back for worker in workers)
    if handed:
        log.info("%d jobs still running after %gs; handed back, queued again", handed, grace)
    left = sum(worker.running + worker._left_behind for worker in workers)
    if left:
        log.warning("%d jobs could not be handed back; they become ghosts", left)
        return 1
    log.info("stopped")
    return 0
