"""Redis Cluster: hash-tagged keys spread job names over the shards, one slot per script.

The core and timer modules run on the cluster too (they are marked both_backends); these tests
cover what only a cluster has.
"""

from __future__ import annotations

import collections
import gc
import pathlib
import re
import threading
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

import kickq
import kickq._engine.runtime
from kickq._redis.keys import PARTITIONS, partition_of_id, partition_of_name
from support import (
    RedisCluster,
    RedisServer,
    all_keys,
    capped,
    job_key,
    queue_key,
    scaled,
    wait_until,
)

pytestmark = pytest.mark.lowest_redis_py
NAMES = [f"name-{i}" for i in range(40)]


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    redis_cluster.flushall()
    kickq.reset()
    kickq.config(redis_url=redis_cluster.url, redis_options={"cluster": True})
    return redis_cluster


def node_of(client: redis.RedisCluster, key: str) -> str:
    return str(client.get_node_from_key(key).name)


def test_job_names_spread_over_every_shard_and_each_job_keeps_to_one_slot(
    cluster: RedisCluster,
) -> None:
    """Jobs of 40 names land on all three masters; a job's record and its queue share a slot,
    and its id says which partition it is in."""
    client = cluster.client()
    jobs = [kickq.create(name, i).result(10) for i, name in enumerate(NAMES)]
    nodes = collections.Counter()
    for job in jobs:
        assert partition_of_id(job.id) == partition_of_name(job.name)
        assert key_slot(job_key(job.id).encode()) == key_slot(queue_key(job.name).encode())
        assert client.hget(job_key(job.id), "state") == "queued"
        nodes[node_of(client, job_key(job.id))] += 1
    assert len(nodes) == 3, nodes
    assert len({partition_of_name(name) for name in NAMES}) > PARTITIONS // 2
    client.close()


def test_get_and_delete_find_any_job_by_id(cluster: RedisCluster) -> None:
    """get() and delete() go straight to the job's partition, for jobs on every shard."""
    jobs = [kickq.create(name, name).result(10) for name in NAMES]
    for job in jobs:
        assert kickq.get(job.id).result(10).data == job.name
    for job in jobs[::2]:
        assert kickq.delete(job.id).result(10) is True
    for job in jobs[::2]:
        with pytest.raises(kickq.JobNotFound):
            kickq.get(job.id).result(10)
    assert [kickq.get(job.id).result(10).state for job in jobs[1::2]] == ["queued"] * 20
    with pytest.raises(kickq.JobNotFound):
        kickq.get("not-an-id-kickq-made").result(10)


def test_one_worker_serves_names_in_different_partitions(cluster: RedisCluster) -> None:
    """A worker for many names (many partitions, so one claim per partition) runs every job
    exactly once, including jobs created while it sleeps."""
    ran: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(job: kickq.Job, data: int) -> int:
        with lock:
            ran[job.id] += 1
        return data

    first = [kickq.create(name, i).result(10) for i, name in enumerate(NAMES)]
    kickq.process(NAMES, handler, concurrent_jobs=4)
    wait_until(lambda: len(ran) == len(first), timeout=30, what="the first jobs")
    later = [kickq.create(name, i).result(10) for i, name in enumerate(reversed(NAMES))]
    for job in later:
        assert kickq.wait(job.id, timeout=20).result(25).state == "success"
    assert set(ran) == {job.id for job in first + later}
    assert set(ran.values()) == {1}


def test_hotjobs_and_timers_across_shards(cluster: RedisCluster) -> None:
    """Hotjobs of names on different shards resolve over the one pub/sub connection; delayed
    jobs of every shard are promoted by the timer."""
    kickq.process(NAMES, lambda job, data: data * 2, concurrent_jobs=10)
    hot = [
        kickq.create(name, i, hotjob=True, hotjob_timeout=scaled(60)).result(10)
        for i, name in enumerate(NAMES)
    ]
    assert [job.hotjob_future.result(20).result for job in hot] == [i * 2 for i in range(40)]
    delayed = [kickq.create(name, 1, delay=0.3).result(10) for name in NAMES[:10]]
    assert {job.state for job in delayed} == {"delayed"}
    for job in delayed:
        assert kickq.wait(job.id, timeout=20).result(25).result == 2


def test_purge_empties_every_shard(cluster: RedisCluster) -> None:
    """Finished jobs of every partition are purged down to no key but the names' bounded
    stats (the set of names, completions per minute, last process times) and the workers."""
    client = cluster.client()
    kickq.config(purge_timeout=0.2)
    kickq.process(NAMES, lambda job, data: None, concurrent_jobs=10)
    # hotjobs: each is waited for from before its save, however soon it is purged
    hot = [kickq.create(name, hotjob=True, hotjob_timeout=scaled(60)) for name in NAMES]
    for job in [future.result(10) for future in hot]:
        assert job.hotjob_future is not None
        job.hotjob_future.result(25)
    kept = re.compile(r"kickq:(\{.\}:)?(names|minutes:.*|times:.*|workers|next_due|claim:.*)")

    def job_keys() -> list[str]:
        return [key for key in all_keys(client, "kickq:*") if not kept.fullmatch(key)]

    wait_until(lambda: not job_keys(), timeout=60, what="every job key purged")
    client.close()


def test_script_calls_in_pipelines_are_routed_without_asking_a_node(cluster: RedisCluster) -> None:
    """EVALSHA names its keys: no COMMAND GETKEYS round trip is spent on routing one."""
    for node in cluster.primaries:
        node.client().config_resetstat()
    kickq.process(NAMES[:6], lambda job, data: data, concurrent_jobs=4)
    futures = [
        kickq.create(NAMES[i % 6], i, hotjob=True, hotjob_timeout=scaled(60)) for i in range(60)
    ]
    for future in futures:
        future.result(10).hotjob_future.result(10)  # type: ignore[union-attr]
    stats = [node.client().info("commandstats") for node in cluster.primaries]
    assert sum(int(s.get("cmdstat_evalsha", {}).get("calls", 0)) for s in stats) >= 120
    assert not [s for s in stats if "cmdstat_command|getkeys" in s]


def test_a_script_a_node_lacks_is_sent_to_that_node_alone(cluster: RedisCluster) -> None:
    """A node without kickq's scripts (restarted, or a replica promoted before it ran them) gets
    each one as EVAL on the call that needed it, never as SCRIPT LOAD to every primary: so a
    primary that is down cannot fail, and lose the answers of, calls that went elsewhere."""
    kickq.create(NAMES[0]).result(10)
    clients = [node.client() for node in cluster.primaries]
    for client in clients:
        client.script_flush()
        client.config_resetstat()
    names = NAMES * 3  # about 40 creates to each primary
    jobs = [kickq.create(name, i).result(10) for i, name in enumerate(names)]
    assert [kickq.get(job.id).result(10).data for job in jobs] == list(range(len(names)))
    stats = [client.info("commandstats") for client in clients]
    assert not [s for s in stats if "cmdstat_script|load" in s]
    # each primary got an EVAL for the first create there, and at most one for each other
    # script the timers ran meanwhile; every later call found its script
    scripts = len(list(pathlib.Path(kickq.__file__).parent.rglob("*.lua")))
    evals = [int(s.get("cmdstat_eval", {}).get("calls", 0)) for s in stats]
    assert all(1 <= count <= scripts for count in evals), evals
    for client in clients:
        client.close()


def test_cluster_needs_a_node_address() -> None:
    """The cluster switch without any server named is a clear error, not the embedded Redis."""
    kickq.reset()
    kickq.config(redis_options={"cluster": True})
    with pytest.raises(kickq.ConfigError, match="node"):
        kickq.create("x").result(10)


def test_cluster_switch_must_be_a_bool() -> None:
    with pytest.raises(kickq.ConfigError, match="cluster"):
        kickq.config(redis_options={"cluster": "yes"})


def test_a_cluster_taken_for_a_single_server_says_so(redis_cluster: RedisCluster) -> None:
    """Pointed at a cluster node without the switch, the first command that reaches another
    shard fails with a ConfigError that names the fix."""
    redis_cluster.flushall()
    kickq.reset()
    kickq.config(redis_url=redis_cluster.url)
    errors = [kickq.create(name).exception(10) for name in NAMES]
    refused = [error for error in errors if error is not None]
    assert refused and all(isinstance(error, kickq.ConfigError) for error in refused)
    assert "redis_options" in str(refused[0])


def test_unreachable_cluster_fails_futures_with_redis_unavailable(cluster: RedisCluster) -> None:
    from support import free_port

    kickq.reset()
    kickq.config(redis_url=f"redis://127.0.0.1:{free_port()}", redis_options={"cluster": True})
    for future in (kickq.create("x"), kickq.get("abc"), kickq.wait("abc", timeout=1)):
        with pytest.raises(kickq.RedisUnavailable):
            future.result(15)


def test_an_idle_worker_wakes_for_the_partition_that_got_a_job(cluster: RedisCluster) -> None:
    """A worker serving many partitions, idle, claims from the partition whose queue a wake
    message names, not merely the next in its rotation: each job starts well before the
    worker's 60 s recheck of idle names."""
    kickq.process(NAMES, lambda job, data: data, concurrent_jobs=2)
    settle = kickq.create(NAMES[0], 0).result(10)
    kickq.wait(settle.id, timeout=10).result(15)
    for name in NAMES[5:15]:
        job = kickq.create(name, name).result(10)
        wait_until(
            lambda job=job: kickq.get(job.id).result(10).state is kickq.State.SUCCESS,
            timeout=capped(10, 40),
            what=f"{name} run",
        )


@pytest.fixture
def replicated_cluster(tmp_path: pathlib.Path) -> Iterator[RedisCluster]:
    """A cluster of its own: 3 primaries with a replica each, failing over within seconds."""
    cluster = RedisCluster(tmp_path / "failover", replicas=1, node_timeout_ms=2000).start()
    kickq.reset()
    kickq.config(redis_url=cluster.url, redis_options={"cluster": True})
    try:
        yield cluster
    finally:
        kickq.reset()
        cluster.stop()


def in_sync(primary: RedisServer) -> bool:
    """The primary's replica has every write the primary has."""
    client = primary.client()
    try:
        info = client.info("replication")
    finally:
        client.close()
    replica = info.get("slave0")
    return bool(replica) and int(replica["offset"]) == int(info["master_repl_offset"])


@pytest.mark.slow
def test_jobs_survive_a_primary_failover(replicated_cluster: RedisCluster) -> None:
    """A primary SIGKILLed with runs in progress and creates under way: once its replica takes
    over, every saved job finishes exactly once, and creating works again (creates during the
    failover fail clearly with RedisUnavailable)."""
    cluster = replicated_cluster
    release = threading.Event()
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def handler(job: kickq.Job, data: int) -> int:
        release.wait(60)
        with lock:
            runs[data] += 1
        return data

    worker = kickq.process(NAMES, {"concurrent_jobs": 10}, handler)
    before = [kickq.create(name, i, process_timeout=120).result(10) for i, name in enumerate(NAMES)]
    wait_until(lambda: worker.running == 10, 20, what="10 runs in progress")
    wait_until(lambda: all(map(in_sync, cluster.primaries)), 20, what="replicas in sync")
    cluster.primaries[0].stop(kill=True)
    release.set()

    during: list[kickq.Job] = []
    refused: list[BaseException] = []
    seq = iter(range(1000, 100_000))

    def create_one() -> bool:
        i = next(seq)
        try:
            during.append(kickq.create(NAMES[i % len(NAMES)], i, process_timeout=120).result(15))
            return True
        except kickq.RedisUnavailable as exc:
            refused.append(exc)
            return False

    # keep creating until a run of 20 creates in a row succeeds: the cluster is serving again
    streak = collections.deque(maxlen=20)
    wait_until(
        lambda: streak.append(create_one()) or (len(streak) == 20 and all(streak)),
        timeout=60,
        interval=0.02,
        what="creates to succeed again after the failover",
    )
    for job in before + during:
        assert kickq.wait(job.id, timeout=60).result(65).state == "success"
    expected = {job.data for job in before + during}
    assert set(runs) == expected
    assert set(runs.values()) == {1}, "a job ran twice"


def test_reset_closes_the_connections_to_every_node(cluster: RedisCluster) -> None:
    """kickq.reset() leaves no connection open on any node, not even until the garbage
    collector runs."""
    names = [f"conns-{i}" for i in range(12)]
    for future in [kickq.create(name, i) for i, name in enumerate(names)]:
        future.result(10)
    clients = [node.client() for node in cluster.primaries]

    def connected() -> int:
        return sum(len(client.client_list()) - 1 for client in clients)  # minus our own

    assert connected() >= 3  # a pool connection to each primary, and the pub/sub one
    gc.disable()  # what the collector would close must already be closed
    try:
        kickq.reset()
        wait_until(lambda: connected() == 0, what="no connection left on any node")
    finally:
        gc.enable()
        for client in clients:
            client.close()


def fail_over(cluster: RedisCluster, primary: RedisServer) -> RedisServer:
    """CLUSTER FAILOVER on `primary`'s replica, once it is in sync: the replica it was."""
    replica = cluster.nodes[cluster.masters + cluster.primaries.index(primary)]
    wait_until(lambda: in_sync(primary), 20, what="the replica in sync")
    client = replica.client()
    try:
        client.execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: client.info("replication")["role"] == "master", 20, what="promotion")
    finally:
        client.close()
    return replica


@pytest.mark.slow
def test_jobs_queued_on_a_primary_that_fails_over_run_within_seconds(
    replicated_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean failover (CLUSTER FAILOVER on a replica in sync) of the primary holding queues
    with jobs waiting. The calls its old primary redirects go to the new one even while reading
    the slot table gives the old layout (as a node that has not heard of the failover yet
    answers): creates go on, and every job runs within seconds. A job whose wake message was
    lost (as one the old primary published last, which never crossed the cluster bus) runs too:
    once the process sees the primaries change, its worker asks for every name again."""
    cluster = replicated_cluster
    client = cluster.client()
    primary = cluster.primaries[0]
    on_primary = [n for n in NAMES if client.get_node_from_key(queue_key(n)).port == primary.port]
    elsewhere = [n for n in NAMES if n not in on_primary]
    client.close()
    assert len(on_primary) >= 3 and len(elsewhere) >= 4
    release = threading.Event()

    def handler(job: kickq.Job, data: str) -> str:
        if data == "hold":
            release.wait(scaled(60))
        return data

    worker = kickq.process(NAMES, {"concurrent_jobs": 4}, handler)
    warm = [kickq.create(name, "warm").result(scaled(10)) for name in NAMES]
    for job in warm:
        assert kickq.wait(job.id, timeout=scaled(20)).result(scaled(25)).state == "success"
    wait_until(lambda: not worker._rotation.has_ready(), what="every name resting")
    # the wake of this name's next job never reaches the worker
    quiet = on_primary[0]
    engine = kickq._engine.runtime.get()
    wake = engine.store.keys.wake(quiet)
    for subscription in [s for s in worker._subscriptions if s.channel == wake]:
        engine.listener.unsubscribe(subscription)
    unheard = kickq.create(quiet, "unheard").result(scaled(10))
    # the worker busy, jobs wait in the queues of the primary
    held = [kickq.create(name, "hold").result(scaled(10)) for name in elsewhere[:4]]
    wait_until(lambda: worker.running == 4, what="4 runs in progress")
    queued = [kickq.create(name, name).result(scaled(10)) for name in on_primary[1:] * 3]
    monkeypatch.setattr(engine.client.nodes_manager, "initialize", lambda *a, **k: None)

    fail_over(cluster, primary)
    release.set()
    later = [kickq.create(name, name).result(scaled(10)) for name in on_primary[1:] * 3]
    jobs = [unheard, *held, *queued, *later]

    def states() -> set[str]:
        return {kickq.get(job.id).result(scaled(10)).state for job in jobs}

    # well before the worker's 60 s recheck of idle names, however loaded the machine
    wait_until(lambda: states() == {"success"}, timeout=capped(15, 45), what="every job run")
