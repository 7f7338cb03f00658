"""The job lifecycle against a simple model: hypothesis drives kickq's store level (no threads).

Every step is what a worker or the timer does, made of the same pieces: `lifecycle` decides,
`Store` applies in one Lua script fenced by the record's version. The model is a dict of jobs
with their state, due time and runs, a FIFO queue per name, and a millisecond clock that
`kickq._model.clock.now` is patched to read. After every step Redis must match it exactly.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kickq._model import clock, lifecycle
from kickq._model.job import Job
from kickq._redis.layout import gather
from kickq._redis.record import from_record
from kickq._redis.store import Store
from kickq._redis.stored import StoredJob
from support import RedisServer

NS = "model"


def from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)


NAMES = ("a", "b")
PURGE_S = 20
BATCH = 200
START_MS = clock.to_ms(datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc))
WAITING = ("delayed", "retry", "ghost")
FINISHED = ("success", "fail")
INDEX_OF = {
    "queued": "queue",
    "delayed": "scheduled",
    "retry": "scheduled",
    "ghost": "scheduled",
    "processing": "processing",
    "success": "finished",
    "fail": "finished",
}
OPTIONS = st.fixed_dictionaries(
    {
        "delay": st.sampled_from([None, None, 0, 2, 30]),
        "process_timeout": st.sampled_from([1, 2.5, 10]),
        "retry": st.booleans(),
        "retry_count": st.integers(0, 2),
        "retry_interval": st.sampled_from([0, 5, 60]),
        "ghost_retry": st.booleans(),
        "ghost_count": st.integers(0, 2),
        "ghost_interval": st.sampled_from([0, 5, 60]),
    }
)
TIME_STEPS = st.sampled_from([0.5, 1, 2, 5, 30, 61])
SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def interval_for(job: Job, retry_number: int) -> float:
    return float(job.retry_interval or 0)


@attrs.define(eq=False)
class Held:
    """A run a (simulated) worker holds: the claimed job, its version and the run's deadline."""

    claimed: StoredJob
    deadline_ms: int


@attrs.define(eq=False)
class ModelJob:
    id: str
    name: str
    options: dict[str, Any]
    state: str
    due_ms: int | None  # due time (waiting), run deadline (processing) or purge time (ms)
    runs: list[str] = attrs.field(factory=list)
    failures: int = 0
    ghosts: int = 0
    holder: Held | None = None  # the claim whose run is the job's current one


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self, client: redis.Redis, store: Store, now_ms: list[int]) -> None:
        super().__init__()
        self.client = client
        self.store = store
        self.clock = now_ms
        self.clock[0] = START_MS
        for key in client.scan_iter(f"{NS}:*", count=1000):
            client.delete(key)
        self.jobs: dict[str, ModelJob] = {}
        self.queues: dict[str, list[str]] = {name: [] for name in NAMES}
        self.created = 0
        self.deleted: set[str] = set()
        self.purged: set[str] = set()
        self.held: list[Held] = []
        self.stale: list[Held] = []

    # -- the model -------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return self.clock[0]

    def now(self) -> datetime.datetime:
        return from_ms(self.now_ms)

    def end(self, job: ModelJob, kind: str) -> None:
        """The model's rules for the end of a run: success, a failure or a ghost."""
        job.runs[-1] = kind
        job.holder = None
        opts = job.options
        again = False
        if kind == "fail":
            job.failures += 1
            again = opts["retry"] and job.failures <= opts["retry_count"]
            wait = opts["retry_interval"]
        elif kind == "ghost":
            job.ghosts += 1
            again = opts["ghost_retry"] and job.ghosts <= opts["ghost_count"]
            wait = opts["ghost_interval"]
        if again:
            job.state, job.due_ms = ("retry" if kind == "fail" else "ghost"), self.at(wait)
        else:
            job.state = "success" if kind == "success" else "fail"
            job.due_ms = self.at(PURGE_S)

    def due_now(self, states: tuple[str, ...]) -> list[str]:
        """Ids of jobs in `states` whose time has come, in sorted-set order (score, then id)."""
        due = [(j.due_ms, j.id) for j in self.jobs.values() if j.state in states]
        return [
            job_id for due_ms, job_id in sorted(due) if due_ms is not None and due_ms <= self.now_ms
        ]

    def at(self, seconds: float) -> int:
        return self.now_ms + round(seconds * 1000)

    def queue(self, job: ModelJob) -> None:
        job.state, job.due_ms = "queued", None
        self.queues[job.name].append(job.id)

    def expected_end(self, held: Held) -> int:
        """1 if this run is still the job's current run (the end applies), else 0."""
        job = self.jobs.get(held.claimed.job.id)
        return int(job is not None and job.holder is held)

    def finish_run(self, held: Held, outcome: lifecycle.Outcome, kind: str) -> None:
        """A worker ends its run: decide with lifecycle, apply fenced by the claim's version."""
        expected = self.expected_end(held)
        change = lifecycle.end_run(held.claimed.job, outcome, self.now(), interval_for)
        assert change is not None
        call = self.store.transition_call(change, held.claimed, PURGE_S)
        assert self.store.run(call) == expected
        if expected:
            self.end(self.jobs[held.claimed.job.id], kind)
        self.held.remove(held)
        self.stale.append(held)

    # -- rules -----------------------------------------------------------------------------

    def create_job(self, name: str, options: dict[str, Any]) -> None:
        job_id = f"j{self.created:03d}"
        data = {"n": self.created}
        change = lifecycle.create(job_id, name, data, options, self.now())
        call = self.store.create_call([change], [json.dumps(data)])
        assert self.store.run(call) == [1]
        assert self.store.run(call) == [0]  # the same creation sent twice is not applied twice
        self.created += 1
        job = ModelJob(job_id, name, options, "delayed", None)
        self.jobs[job_id] = job
        if options["delay"]:
            job.due_ms = self.at(options["delay"])
        else:
            self.queue(job)

    @initialize(jobs=st.lists(st.tuples(st.sampled_from(NAMES), OPTIONS), max_size=4))
    def some_jobs(self, jobs: list[tuple[str, dict[str, Any]]]) -> None:
        for name, options in jobs:
            self.create_job(name, options)

    @rule(name=st.sampled_from(NAMES), options=OPTIONS)
    def create(self, name: str, options: dict[str, Any]) -> None:
        self.create_job(name, options)

    @rule(
        names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True),
        count=st.integers(1, 3),
    )
    def claim(self, names: list[str], count: int) -> None:
        expected: list[str] = []
        for name in names:
            while self.queues[name] and len(expected) < count:
                expected.append(self.queues[name].pop(0))
        claimed = self.store.parse_claimed(self.store.run(self.store.claim_call(names, count)))
        assert all(isinstance(item, StoredJob) for item in claimed)
        got = [item.job.id for item in claimed if isinstance(item, StoredJob)]
        assert got == expected
        assert not set(got) & (self.deleted | self.purged)  # nothing runs after delete
        for item in claimed:
            assert isinstance(item, StoredJob)
            job = self.jobs[item.job.id]
            assert item.job.state == "processing" and item.job.data == {"n": int(job.id[1:])}
            held = Held(item, self.now_ms + math.floor(job.options["process_timeout"] * 1000))
            job.state, job.due_ms, job.holder = "processing", held.deadline_ms, held
            job.runs.append("processing")
            self.held.append(held)

    def pick(self, data: st.DataObject, runs: list[Held], label: str) -> Held:
        return runs[data.draw(st.integers(0, len(runs) - 1), label=label)]

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def worker_run_succeeds(self, data: st.DataObject) -> None:
        held = self.pick(data, self.held, "held run")
        self.finish_run(held, lifecycle.Succeeded({"ok": True}), "success")

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def worker_run_fails(self, data: st.DataObject) -> None:
        held = self.pick(data, self.held, "held run")
        self.finish_run(held, lifecycle.Failed("handler raised"), "fail")

    @precondition(lambda self: any(h.deadline_ms <= self.now_ms for h in self.held))
    @rule(data=st.data())
    def worker_ghosts_overdue_run(self, data: st.DataObject) -> None:
        overdue = [h for h in self.held if h.deadline_ms <= self.now_ms]
        held = self.pick(data, overdue, "overdue run")
        self.finish_run(held, lifecycle.Ghosted(), "ghost")

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def stale_run_ends_again(self, data: st.DataObject) -> None:
        """A run already ended (or ghosted, or whose job was deleted) never applies again."""
        held = self.pick(data, self.stale, "stale run")
        change = lifecycle.end_run(
            held.claimed.job, lifecycle.Succeeded("late"), self.now(), interval_for
        )
        assert change is not None
        call = self.store.transition_call(change, held.claimed, PURGE_S)
        assert self.store.run(call) == 0

    @rule(seconds=TIME_STEPS)
    def clock_moves(self, seconds: float) -> None:
        self.clock[0] = self.at(seconds)

    @rule(seconds=TIME_STEPS)
    def clock_moves_and_timer_ticks(self, seconds: float) -> None:
        self.clock[0] = self.at(seconds)
        self.sweep()

    def sweep(self) -> None:
        """What timer.Timer.tick does: promote due waits, ghost overdue runs, purge."""
        now, now_ms = self.now(), self.now_ms
        due_waits = self.due_now(WAITING)
        overdue = self.due_now(("processing",))
        purgeable = self.due_now(FINISHED)
        scores = [j.due_ms for j in self.jobs.values() if j.due_ms is not None]

        due = self.store.due(now_ms, BATCH)
        assert due.scheduled == due_waits
        assert due.overdue == overdue
        assert due.purge == bool(purgeable)
        assert due.earliest_ms == (min(scores) if scores else None)
        calls = []
        for loaded in self.store.load_many(due.scheduled):
            assert isinstance(loaded, StoredJob)
            change = lifecycle.promote(loaded.job, now)
            assert change is not None
            calls.append(self.store.transition_call(change, loaded, PURGE_S))
        for loaded in self.store.load_many(due.overdue):
            assert isinstance(loaded, StoredJob)
            change = lifecycle.end_run(loaded.job, lifecycle.Ghosted(), now, interval_for)
            assert change is not None
            calls.append(self.store.transition_call(change, loaded, PURGE_S))
        assert self.store.run_batch(calls) == [1] * len(calls)
        purged = self.store.purge(now_ms, BATCH) if due.purge else 0

        for job_id in due_waits:
            self.queue(self.jobs[job_id])
        for job_id in overdue:
            self.end(self.jobs[job_id], "ghost")  # the worker holding it is now stale
        self.forget(purgeable)
        assert purged == len(purgeable)

    def forget(self, purged: list[str]) -> None:
        for job_id in purged:
            del self.jobs[job_id]
            self.purged.add(job_id)

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        job_id = f"j{data.draw(st.integers(0, self.created - 1), label='job number'):03d}"
        job = self.jobs.pop(job_id, None)
        assert self.store.delete(job_id) is (job is not None)
        if job is not None:
            self.deleted.add(job_id)
            if job_id in self.queues[job.name]:
                self.queues[job.name].remove(job_id)

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """kickq.cancel's step: a job not complete ends fail, its run (if any) goes stale."""
        job_id = f"j{data.draw(st.integers(0, self.created - 1), label='job number'):03d}"
        job = self.jobs.get(job_id)
        loaded = self.store.load(job_id)
        assert (loaded is None) == (job is None)
        if job is None:
            return
        assert isinstance(loaded, StoredJob)
        change = lifecycle.cancel(loaded.job, self.now())
        assert (change is None) == (job.state in FINISHED)
        if change is None:
            return
        assert self.store.run(self.store.transition_call(change, loaded, PURGE_S)) == 1
        if job.holder is not None:
            job.runs[-1] = "fail"
            self.held.remove(job.holder)
            self.stale.append(job.holder)
            job.holder = None
        if job_id in self.queues[job.name]:
            self.queues[job.name].remove(job_id)
        job.state, job.due_ms = "fail", self.at(PURGE_S)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def redis_matches_the_model(self) -> None:
        client, keys = self.client, self.store.keys
        assert self.created == len(self.jobs) + len(self.deleted) + len(self.purged)
        assert set(client.scan_iter(f"{NS}:job:*", count=1000)) == {keys.job(i) for i in self.jobs}
        assert not list(client.scan_iter(f"{keys.namespace}:damaged:*"))
        zsets = {
            where: dict(client.zrange(getattr(keys, where), 0, -1, withscores=True))
            for where in ("scheduled", "processing", "finished")
        }
        queues = {name: client.zrange(keys.queue(name), 0, -1) for name in NAMES}
        for name in NAMES:  # the next to claim first; a deleted job leaves its queue
            assert queues[name] == self.queues[name]
        pipe = client.pipeline(transaction=False)
        for job_id in self.jobs:
            pipe.hgetall(keys.job(job_id))
        for job, record in zip(self.jobs.values(), pipe.execute(), strict=True):
            stored = from_record(gather(record), job.id)
            assert (stored.name, stored.state.value) == (job.name, job.state)
            assert [run.state.value for run in stored.runs] == job.runs
            found = {where for where, members in zsets.items() if job.id in members}
            if job.id in queues[job.name]:
                assert queues[job.name].count(job.id) == 1
                found.add("queue")
            assert found == {INDEX_OF[job.state]}, (job.id, job.state, found)
            if job.state != "queued":
                assert zsets[INDEX_OF[job.state]][job.id] == job.due_ms
        for gone in self.deleted | self.purged:
            assert all(gone not in members for members in zsets.values())


@pytest.fixture
def model_store(redis_server: RedisServer) -> Iterator[Store]:
    client = redis.Redis(port=redis_server.port, decode_responses=True, protocol=2)
    yield Store(client, NS)
    client.close()


@pytest.mark.timeout(400)  # passing takes ~10 s; a failure may shrink for up to ~5 minutes
def test_lifecycle_matches_the_model(model_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random sequences of create, claim, end, ghost, sweep, purge, delete and cancel keep Redis
    equal to the model: one index per job matching its state, conserved counts, fenced versions."""
    now_ms = [START_MS]
    monkeypatch.setattr(clock, "now", lambda: from_ms(now_ms[0]))
    run_state_machine_as_test(
        lambda: LifecycleMachine(model_store.client, model_store, now_ms), settings=SETTINGS
    )
