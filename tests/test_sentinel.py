"""Redis Sentinel: a redis+sentinel:// URL, jobs run on the master the sentinels name, and a
failover followed without a restart (workers go on, pending hotjobs and waits resolve).

Each test brings its own topology (a master, a replica and three sentinels, started from the
same server binary as the other tests' servers)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import kickq
from kickq._engine import runtime
from kickq._model import config
from kickq._model.config import settings
from kickq._model.errors import ConfigError, RedisUnavailable
from kickq._redis import connection, sentinel
from kickq._redis.sentinel import SentinelClient, SentinelConnection
from support import RedisSentinelSet, job_key, wait_until

pytestmark = [pytest.mark.lowest_redis_py]

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def sentinels(tmp_path: pathlib.Path) -> Iterator[RedisSentinelSet]:
    topology = RedisSentinelSet(tmp_path / "sentinel").start()
    try:
        yield topology
    finally:
        kickq.reset()  # before the servers go: no loop left retrying on them
        topology.stop()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names no master"),
        ("redis+sentinel://127.0.0.1:26379/", "names no master"),
        ("redis+sentinel:///mymaster/0", "a sentinel address is empty"),
        ("redis+sentinel://a:26379,,b:26379/mymaster", "a sentinel address is empty"),
        ("redis+sentinel://a:0/mymaster", "the port '0' of sentinel 'a'"),
        ("redis+sentinel://a:http/mymaster", "the port 'http' of sentinel 'a'"),
        ("redis+sentinel://a:26379/mymaster/x", "its database 'x'"),
        ("redis+sentinel://a:26379/mymaster/0/1", "its path is /master or /master/db"),
        ("redis+sentinel://[::1/mymaster", "the sentinel address '[::1' cannot be read"),
        ("redis+sentinel://a:26379/mymaster?socket_timeout=soon", "socket_timeout"),
        ("sentinel://a:26379/mymaster", "must start with redis://"),
    ],
)
def test_bad_sentinel_urls_are_refused(url: str, says: str) -> None:
    """kickq.config() and KICKQ_REDIS_URL refuse a sentinel URL they cannot use, naming the
    part, and store nothing; the error never shows the password."""
    secret = url.replace("://", "://:hunter2@", 1)
    before = kickq.config()["redis_url"]
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        kickq.config(redis_url=secret)
    assert "hunter2" not in str(raised.value)
    assert kickq.config()["redis_url"] == before
    with pytest.raises(ConfigError, match=re.escape(says)):
        connection.check_redis_url(connection.ENV_URL, url)


def test_sentinel_options_are_checked() -> None:
    """sentinel_kwargs must be a dict; a sentinel URL with `cluster` is refused when kickq
    connects."""
    with pytest.raises(ConfigError, match=r"sentinel_kwargs.*must be a dict"):
        kickq.config(redis_options={"sentinel_kwargs": "password=x"})
    kickq.config(redis_url="redis+sentinel://127.0.0.1:1/mymaster", redis_options={"cluster": True})
    error = kickq.create("x").exception(10)
    assert isinstance(error, ConfigError)
    assert "not a Redis Cluster" in str(error)


def test_tls_options_reach_the_masters_connections() -> None:
    """redis_options' ssl options make the connections to the master TLS ones (redis-py's
    sentinel pool would otherwise drop `ssl` for the connection class kickq gives it)."""
    kickq.config(
        redis_url="redis+sentinel://127.0.0.1:1/mymaster",
        redis_options={"ssl": True, "ssl_cert_reqs": "none"},
    )
    client = connection.connect(settings.snapshot(), settings.explicit)
    try:
        pool: Any = client.connection_pool
        assert issubclass(pool.connection_class, redis.SSLConnection)
        assert issubclass(pool.connection_class, SentinelConnection)
        assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    finally:
        client.close()


def test_the_switch_watch_reaches_tls_sentinels_as_kickq_does() -> None:
    """sentinel_kwargs' ssl reaches the watch's own connection to a sentinel too: TLS, with the
    same options, from a pool that is not the sentinel's (no I/O here)."""
    kickq.config(
        redis_url="redis+sentinel://127.0.0.1:1/mymaster",
        redis_options={"sentinel_kwargs": {"ssl": True, "ssl_cert_reqs": "none"}},
    )
    client = connection.connect(settings.snapshot(), settings.explicit)
    try:
        assert isinstance(client, SentinelClient) and client.sentinel_manager is not None
        node = client.sentinel_manager.sentinels[0]
        own = sentinel.MasterWatch.own_client(node)
        assert issubclass(own.connection_pool.connection_class, redis.SSLConnection)
        assert own.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
        assert own.connection_pool is not node.connection_pool
        own.close()
    finally:
        client.close()


def test_jobs_run_on_the_master_the_sentinels_name(sentinels: RedisSentinelSet) -> None:
    """With a redis+sentinel:// URL, creates, workers, hotjobs and waits all reach the master:
    its records are there, and its replica has them too."""
    kickq.config(redis_url=sentinels.url)
    kickq.process("add", lambda job, data: data["a"] + data["b"])
    job = kickq.create("add", {"a": 2, "b": 3}, hotjob=True, hotjob_timeout=30).result(30)
    assert job.hotjob_future.result(30).result == 5
    later = kickq.create("add", {"a": 1, "b": 1}).result(10)
    assert kickq.wait(later.id, timeout=30).result(30).result == 2
    with sentinels.master.client() as master:
        assert any(later.id in key for key in master.scan_iter("*"))
        assert master.info("replication")["role"] == "master"
    client = runtime.get().client  # kept: no garbage collection closes its connections
    assert isinstance(client, SentinelClient)
    # kickq.reset() closes the connections to the sentinels too, not only the master's
    assert sum(kickq_connections(sentinels, i) for i in range(3)) >= 1
    kickq.reset()
    wait_until(
        lambda: sum(kickq_connections(sentinels, i) for i in range(3)) == 0,
        timeout=10,
        what="kickq's connections to the sentinels closed",
    )
    assert client.sentinel_manager is not None


def watchers(sentinels: RedisSentinelSet) -> int:
    """Connections subscribed to +switch-master, on all three sentinels."""
    count = 0
    for i in range(3):
        with sentinels.sentinel(i) as client:
            count += sum(1 for c in client.client_list() if int(c.get("sub", 0)) > 0)
    return count


def kickq_connections(sentinels: RedisSentinelSet, i: int) -> int:
    """Connections to sentinel `i` but the sentinels' own and this one."""
    with sentinels.sentinel(i) as client:
        me = client.client_id()
        return sum(
            1
            for c in client.client_list()
            if not c.get("name", "").startswith("sentinel-") and int(c["id"]) != me
        )


def test_the_password_in_the_url_is_the_masters_and_sentinel_kwargs_reach_the_sentinels(
    tmp_path: pathlib.Path,
) -> None:
    """A master with a password (requirepass), sentinels with another one: the URL's password
    opens the master, redis_options['sentinel_kwargs'] the sentinels; a wrong master password is
    RedisUnavailable saying Redis refused kickq."""
    topology = RedisSentinelSet(
        tmp_path / "auth", password="m-secret", sentinel_password="s-secret"
    )
    topology.start()
    try:
        hosts = topology.url.removeprefix("redis+sentinel://")
        kickq.config(
            redis_url=f"redis+sentinel://:m-secret@{hosts}",
            redis_options={"sentinel_kwargs": {"password": "s-secret"}},
        )
        kickq.process("echo", lambda job, data: data)
        job = kickq.create("echo", "hi", hotjob=True).result(30)
        assert job.hotjob_future.result(30).result == "hi"
        kickq.reset()
        kickq.config(
            redis_url=f"redis+sentinel://:wrong@{hosts}",
            redis_options={"sentinel_kwargs": {"password": "s-secret"}},
        )
        error = kickq.create("echo", "hi").exception(30)
        assert isinstance(error, RedisUnavailable)
        assert "wrong" not in str(error)
    finally:
        kickq.reset()
        topology.stop()


def test_a_demoted_master_is_an_outage_not_an_error_of_the_call(
    sentinels: RedisSentinelSet,
) -> None:
    """A connection of the master's pool that meets a replica (READONLY, bare or wrapped in a
    script error as Redis 6.2 sends it) drops itself and raises a ConnectionError, which kickq
    waits out as an outage."""
    kickq.config(redis_url=sentinels.url)
    client = runtime.get().client
    pool: Any = client.connection_pool
    conn = pool.connection_class(**pool.connection_kwargs)
    assert isinstance(conn, SentinelConnection)
    try:
        conn.connect_to(("127.0.0.1", sentinels.replica.port))  # as after a failover
        conn.send_command("EVAL", "return redis.call('SET', KEYS[1], 'x')", 1, "k")
        with pytest.raises(redis.ConnectionError):
            conn.read_response()
        assert conn._sock is None
        conn.connect_to(("127.0.0.1", sentinels.master.port))
        wrapped = "return redis.error_reply('ERR Error running script: -READONLY no writes')"
        conn.send_command("EVAL", wrapped, 0)
        with pytest.raises(redis.ConnectionError, match="now a replica"):
            conn.read_response()
        assert conn._sock is None
    finally:
        conn.disconnect()


HOLD = threading.Event()


class KeepCreating:
    """A thread that creates a job of `name` every 10 ms while in the `with` block: the creates
    acknowledged (with their time.monotonic()) and the errors of the others."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.acknowledged: list[tuple[float, str]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    @property
    def ids(self) -> list[str]:
        return [job_id for _, job_id in self.acknowledged]

    def __enter__(self) -> KeepCreating:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            future = kickq.create(self.name, i)
            error = future.exception(60)
            if error is None:
                self.acknowledged.append((time.monotonic(), future.result().id))
            else:
                self.errors.append(error)
            i += 1
            time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["SENTINEL FAILOVER", "master killed"])
def test_a_failover_is_followed_without_a_restart(sentinels: RedisSentinelSet, how: str) -> None:
    """A failover (asked of a sentinel, or after the master was killed) while a worker holds a
    hotjob's run, a wait is pending and another thread keeps creating: creates during the switch
    fail with RedisUnavailable only, the worker and the timer go on with jobs created after it,
    and the held hotjob and the wait resolve on the new master."""
    kickq.config(redis_url=sentinels.url)
    HOLD.clear()
    held = threading.Event()

    def hold(job: Any, data: Any) -> Any:
        held.set()
        assert HOLD.wait(120)
        return {"held": data}

    kickq.process("hold", hold)
    kickq.process("count", lambda job, data: data * 2, concurrent_jobs=4)

    hot = (
        kickq.create("hold", 7, hotjob=True, hotjob_timeout=180, process_timeout=150)
        .result(30)
        .hotjob_future
    )
    wait_until(held.is_set, timeout=30, what="the hold job running")
    # a job no worker takes before the failover: its wait is pending across it
    waited = kickq.create("late", 1).result(10)
    pending_wait = kickq.wait(waited.id, timeout=180)
    sentinels.replicated()  # nothing of the above is lost in the failover

    with KeepCreating("count") as creator:
        wait_until(lambda: len(creator.ids) >= 5, timeout=30, what="creates before the failover")
        old, new = sentinels.failover(kill=how == "master killed")
        before = len(creator.ids)
        wait_until(lambda: len(creator.ids) >= before + 20, timeout=60, what="creates afterwards")
    errors, created = creator.errors, creator.ids
    assert all(isinstance(error, RedisUnavailable) for error in errors), errors

    # the timer follows too: a delayed job created now is queued and run by it on the new master
    delayed = kickq.create("count", 500, delay=1).result(30)
    kickq.process("late", lambda job, data: f"late {data}")
    HOLD.set()  # the held run ends after the failover: its end goes to the new master
    assert hot.result(120).result == {"held": 7}
    assert pending_wait.result(120).result == "late 1"
    # the worker went on: the jobs created after the switch ran, on the new master
    for job_id in created[before + 2 :]:
        job = kickq.wait(job_id, timeout=60).result(60)
        assert job.state == kickq.State.SUCCESS
        assert job.result == job.data * 2
    assert kickq.wait(delayed.id, timeout=60).result(60).result == 1000
    with new.client() as client:
        assert client.info("replication")["role"] == "master"
    if how == "SENTINEL FAILOVER":
        with old.client() as client:  # and a replica answers kickq's writes READONLY
            assert client.info("replication")["role"] == "slave"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_creates_acknowledged_after_the_switch_is_announced_are_kept(
    sentinels: RedisSentinelSet,
) -> None:
    """After SENTINEL FAILOVER the old master stays a master until Sentinel next looks at it
    (about 10 s), and what it acknowledges meanwhile is lost when it resyncs as a replica.
    kickq hears the sentinels' +switch-master and moves at once: every create acknowledged a
    moment after every sentinel names the new master is on the new master."""
    kickq.config(redis_url=sentinels.url)
    with KeepCreating("kept") as creator:
        wait_until(lambda: len(creator.ids) >= 5, timeout=30, what="creates before the failover")
        _, new = sentinels.failover()  # returns once the old master is a replica
        before = len(creator.ids)
        wait_until(lambda: len(creator.ids) >= before + 5, timeout=60, what="creates afterwards")
    assert sentinels.switched_at is not None
    # a create already on its way when the announcement came may have gone to the old master
    # (a margin for a slow machine: without the watch, the old master takes creates for 10 s)
    late = [job_id for at, job_id in creator.acknowledged if at > sentinels.switched_at + 2.0]
    assert len(late) >= 5
    with new.client() as client:
        missing = [job_id for job_id in late if not client.exists(job_key(job_id))]
    assert not missing, f"{len(missing)} of {len(late)} creates acknowledged after the switch lost"


def test_a_switch_announcement_moves_the_pool_and_the_pub_sub_connection(
    sentinels: RedisSentinelSet,
) -> None:
    """What the watch does on a +switch-master naming its master: the pool's master address is
    the announced one, an idle connection is closed, and a connection still open to the old
    address (the pub/sub one never goes back to the pool) drops on its next read; other
    masters' announcements and unreadable ones change nothing. (A client of its own: an
    engine's threads would connect again, and the sentinels still name the old master.)"""
    url = config.sentinel_parts("redis_url", sentinels.url)
    client = sentinel.connect(url, {}, None, connection.Pool)
    pool: Any = client.connection_pool
    reader = pool.connection_class(**pool.connection_kwargs)
    try:
        assert client.ping()
        old = pool.master_address
        assert old == ("127.0.0.1", sentinels.master.port)
        # the watch listens on a connection of its own, outside the sentinels' pools, which the
        # client's close() closes from another thread (at exit, maybe while the watch is frozen)
        wait_until(lambda: watchers(sentinels) == 1, timeout=10, what="the watch subscribed")
        assert client.sentinel_manager is not None
        for node in client.sentinel_manager.sentinels:
            assert not node.connection_pool._in_use_connections
        reader.connect()
        for ignored in ("othermaster 127.0.0.1 1 127.0.0.1 2", "mymaster garbage", b"\xff"):
            pool.watch.heard(ignored)
            assert pool.master_address == old
        assert not reader.can_read(0)
        assert pool._available_connections[0]._sock is not None
        pool.watch.heard(f"mymaster 127.0.0.1 {old[1]} 127.0.0.1 {sentinels.replica.port}")
        assert pool.master_address == ("127.0.0.1", sentinels.replica.port)
        assert pool._available_connections[0]._sock is None
        with pytest.raises(redis.ConnectionError, match="master moved"):
            reader.can_read(0)
        assert reader._sock is None
    finally:
        reader.disconnect()
        client.close()


def test_kickq_redis_url_takes_a_sentinel_url(
    sentinels: RedisSentinelSet, tmp_path: pathlib.Path
) -> None:
    """KICKQ_REDIS_URL takes a sentinel URL too: a worker in another process runs a job
    created here; the command line's --redis-url shows it."""
    kickq.config(redis_url=sentinels.url)
    env = {
        **os.environ,
        "KICKQ_REDIS_URL": sentinels.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    code = (
        "import sys, kickq\n"
        "kickq.process('env', lambda job, data: data + 1)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        job = kickq.create("env", 41, hotjob=True, hotjob_timeout=30).result(30)
        assert job.hotjob_future.result(30).result == 42
        # and the command line's --redis-url
        shown = subprocess.run(
            [sys.executable, "-m", "kickq", "show", job.id, "--json", "--redis-url", sentinels.url],
            env={k: v for k, v in env.items() if k != "KICKQ_REDIS_URL"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["result"] == 42
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()
