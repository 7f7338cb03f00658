"""Jobs in and out of Redis: one method per job script building its calls, reading its replies.

Each script's KEYS and ARGV are declared once, by name, in its `Shape` (lua.py; all of them
below), which the method building its calls (a `..._call` method, or the method that runs it)
fills by name. The calls run through `ScriptRunner` (runner.py), which `Store` is. Records are
read here too (one pipeline of HGETALLs) and decoded by stored.py.

On a Redis Cluster (`cluster=True`) each job lives in the partition of its name (see keys.py):
calls about one job go to its partition's slot, and the timer's reads and purges go to
every partition, in one pipeline.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from kickq._model import clock, ids, lifecycle
from kickq._model.job import STATES, State
from kickq._redis.connection import Client
from kickq._redis.keys import (
    PARTITIONS,
    RUN_TIMES,
    SEEN_STATES,
    Keys,
    partition_of_id,
    partition_of_name,
)
from kickq._redis.layout import changes, lay_out
from kickq._redis.lua import Counted, Each, Shape
from kickq._redis.outage import is_outage
from kickq._redis.record import (
    DEFAULT_TEXTS,
    NEW_JOB_FIELDS,
    OPTIONAL_FIELDS,
    encode,
    new_jobs_event_texts,
    record_event_json,
    to_record,
)
from kickq._redis.runner import ScriptCall, ScriptRunner
from kickq._redis.stored import Damaged, Due, StoredJob, decode

# how long a claim given up (see scripts/reclaim.lua) is remembered: a lost claim that reaches
# Redis later than this (after a stall of over a minute) may start runs nobody runs, which then
# ghost at their deadline
CLAIM_GIVEN_UP_MS = 60_000
# How long a fence (scripts/settle.lua) keeps a lost create from saving its job. The lost call
# is either in Redis already, applied before the settle, or bytes still travelling on a
# connection kickq closed: the kernel gives up retransmitting an orphaned socket's data within
# minutes (tcp_orphan_retries); an hour is far past that, and costs one entry of a sorted set
# per job whose create was lost.
FENCE_SECONDS = 3600
FENCED = -1  # create.lua's result for a job whose id is fenced
_MARK = "\x00"  # stands for a job name in a key, to split the key around it (the last one)
# what a transition out of processing removes when the new record lacks it: the run's start is
# its run's now (run:<count>)
_AFTER_A_RUN = OPTIONAL_FIELDS | {"run_start", "claim"}
# the states whose jobs each index of due jobs holds, as scripts/unlist.lua takes them
_HELD = {"scheduled": " delayed retry ghost ", "processing": " processing "}


def _flat(record: Mapping[str, str | None]) -> list[str | None]:
    return [item for pair in record.items() for item in pair]


def _as_dict(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _zset_of(keys: Keys, state: State, name: str) -> str:
    """The sorted set a job of `name` in `state` lives in: processing, scheduled, finished,
    its queue, or (deferred) its index alone."""
    if state is State.QUEUED or state is State.DEFERRED:
        return keys.index(state.value, name)
    if state is State.PROCESSING:
        return keys.processing
    if state in (State.SUCCESS, State.FAIL):
        return keys.finished
    return keys.scheduled


# -- each script's KEYS and ARGV, by name (the scripts' headers say what each is) ---------------

CREATE = Shape(
    "create",
    keys=("scheduled", "queue", "delayed_index", "names", "next_due", "fenced"),
    args=(
        "placement",
        "score",
        "wake",
        "job_prefix",
        "now_us",
        "timers",
        Counted("channels", ("channels",)),
        "shared",
        "head",
        "middle",
        "before_key",
        "tail",
        "traces",
        Each("jobs", ("id", "data", "unique_key", "lock")),
    ),
)
SETTLE = Shape(
    "settle",
    keys=("fenced", Each("job_keys", ("job",))),
    args=("now_ms", "fence_ms", Each("ids", ("id",))),
)
TRANSITION = Shape(
    "transition",
    keys=(
        "job",
        "leaves",
        "joins",
        "queue",
        "index_before",
        "index_after",
        "minutes",
        "times",
        "limits",
        "next_due",
    ),
    args=(
        "version",
        "id",
        "placement",
        "score",
        "wake",
        "message",
        "now_us",
        "completes",
        "process_time",
        "run_times",
        "timers",
        Counted("channels", ("channels",)),
        "fields",
        "run_ended",
        "again",
    ),
)
CLAIM = Shape(
    "claim",
    keys=(
        "processing",
        "scheduled",
        "finished",
        "paused",
        "next_due",
        "claim_key",
        Each("per_name", ("queue", "processing_index", "limits", "starts")),
    ),
    args=(
        "job_prefix",
        "now_ms",
        "process_timeout",
        "count",
        "damaged_prefix",
        "done_prefix",
        "now_us",
        "timers",
        "token",
        Each("names", ("name",)),
    ),
)
RECLAIM = Shape(
    "reclaim",
    keys=("claim_key", Each("indexes", ("processing_index",))),
    args=("token", "job_prefix", "now_us", "given_up_ms"),
)
DELETE = Shape(
    "delete",
    keys=("job", "scheduled", "processing", "finished"),
    args=(
        "id",
        "delete_channel",
        "done_channel",
        "queue_before",
        "queue_after",
        "index_prefix",
        "limits_prefix",
        "wake_prefix",
        "now_ms",
        "timers",
    ),
)
DUE = Shape("due", keys=("scheduled", "processing", "finished"), args=("now_ms", "limit"))
PURGE = Shape(
    "purge",
    keys=("finished",),
    args=("now_ms", "limit", "job_prefix", "delete_channel", "index_prefix"),
)
UNLIST = Shape("unlist", keys=("index",), args=("job_prefix", "held", Each("ids", ("id",))))
QUARANTINE = Shape(
    "quarantine",
    keys=("job", "damaged", "scheduled", "processing", "finished"),
    args=(
        "id",
        "why",
        "done_channel",
        "index_prefix",
        "queue_before",
        "queue_after",
        "now_ms",
        "timers",
    ),
)
PAUSE = Shape("pause", keys=("paused", "names", "queue"), args=("action", "name", "wake"))
LIMIT = Shape(
    "limit",
    keys=("limits", "starts", "names", "queue"),
    args=("name", "rate_count", "rate_ms", "concurrency", "wake"),
)
PENDING = Shape(
    "pending",
    keys=("scheduled", "processing", Each("queues", ("queue",))),
    args=("now_ms", "job_prefix", Each("names", ("name",))),
)
STATS = Shape(
    "stats",
    keys=("paused",),
    args=(
        "now_minute",
        "job_prefix",
        Counted("shapes", ("before", "after")),
        Each("names", ("name",)),
    ),
)
PROGRESS = Shape(
    "progress",
    keys=("job",),
    args=("run", "value", "event", "event_channel", "waiters", "done_channel"),
)
_CLAIM_KEY = CLAIM.key_at("claim_key")
_CLAIM_NOW_US = CLAIM.arg_at("now_us")
_CLAIM_TOKEN = CLAIM.arg_at("token")
_CLAIM_NAMES = CLAIM.arg_at("names")
_AGAIN = TRANSITION.arg_at("again")


class Store(ScriptRunner):
    """The job scripts of one namespace, registered with `client`, and the records' reads."""

    def __init__(self, client: Client, namespace: str, cluster: bool = False) -> None:
        super().__init__(client, cluster)
        self.keys = Keys(namespace)  # the channels, and every key on a single node
        self.partitions = (
            [Keys(namespace, p) for p in range(PARTITIONS)] if cluster else [self.keys]
        )
        self._create = CREATE.register(client)
        self._transition = TRANSITION.register(client)
        self._claim = CLAIM.register(client)
        self._reclaim = RECLAIM.register(client)
        self._due = DUE.register(client)
        self._purge = PURGE.register(client)
        self._delete = DELETE.register(client)
        self._quarantine = QUARANTINE.register(client)
        self._unlist = UNLIST.register(client)
        self._pause = PAUSE.register(client)
        self._pending = PENDING.register(client)
        self._limit = LIMIT.register(client)
        self._stats = STATS.register(client)
        self._settle = SETTLE.register(client)
        self._progress = PROGRESS.register(client)

    # -- where jobs live -------------------------------------------------------------

    def keys_of(self, job_id: str) -> Keys:
        """The keys of the partition holding job `job_id`."""
        return self.partitions[partition_of_id(job_id)] if self.cluster else self.keys

    def keys_of_name(self, name: str) -> Keys:
        return self.partitions[partition_of_name(name)] if self.cluster else self.keys

    def new_id(self, name: str) -> str:
        """A fresh id for a job called `name`: on a cluster, its first digit is the partition."""
        job_id = ids.new_id()
        if self.cluster:
            return f"{partition_of_name(name):x}{job_id[1:]}"
        return job_id

    def claim_groups(self, names: Sequence[str]) -> list[tuple[str, ...]]:
        """`names` in groups that one claim can serve (one group per partition), in order."""
        groups: dict[int, list[str]] = {}
        for name in names:
            part = partition_of_name(name) if self.cluster else 0
            groups.setdefault(part, []).append(name)
        return [tuple(group) for group in groups.values()]

    # -- transitions -----------------------------------------------------------------

    def create_call(
        self,
        changes: Sequence[lifecycle.Change],
        data_jsons: Sequence[str],
        traces: Sequence[str] | None = None,
    ) -> ScriptCall:
        """The call saving new jobs of one name, alike but for their id, data and unique key:
        one for create(), a batch for create_many() (see scripts/create.lua and
        `parse_created`). `traces`: the trace context of each job's producer span, as the
        JSON text its record keeps (see _engine/tracing.py); None when they have none."""
        first = changes[0].job
        keys = self.keys_of(first.id)
        where, score = lifecycle.placement(first, 0.0)
        shared = to_record(first, "null")
        for field in NEW_JOB_FIELDS:
            shared.pop(field, None)
        head, middle, before_key, tail = new_jobs_event_texts(shared)
        jobs: list[str] = []
        for change, data_json in zip(changes, data_jsons, strict=True):
            job = change.job
            lock = "" if job.unique_key is None else keys.unique(job.name, job.unique_key)
            jobs += [job.id, data_json, encode(job.unique_key), lock]
        args = CREATE.args(
            placement=where,
            score=score,
            wake=self.keys.wake(first.name),
            job_prefix=keys.job_prefix,
            now_us=clock.to_us(first.update_time or clock.now()),
            timers=self.keys.timers,
            channels=[self.keys.event(event) for event in changes[0].events],
            shared=json.dumps(_flat(lay_out(shared))),
            head=head,
            middle=middle,
            before_key=before_key,
            tail=tail,
            traces="" if traces is None else json.dumps(traces),
            jobs=jobs,
        )
        call_keys = CREATE.keys(
            scheduled=keys.scheduled,
            queue=keys.queue(first.name),
            delayed_index=keys.index("deferred" if where == "deferred" else "delayed", first.name),
            names=keys.names,
            next_due=keys.next_due,
            fenced=keys.fenced,
        )
        return self._create, call_keys, args

    def settle_call(self, job_ids: Sequence[str]) -> ScriptCall:
        """The call settling creates whose reply was lost, jobs of one name (one partition):
        1 for a job saved, 0 for one not saved, now fenced so that the lost call can never
        save it later (see scripts/settle.lua)."""
        keys = self.keys_of(job_ids[0])
        call_keys = SETTLE.keys(fenced=keys.fenced, job_keys=[keys.job(i) for i in job_ids])
        args = SETTLE.args(
            now_ms=clock.to_ms(clock.now()), fence_ms=FENCE_SECONDS * 1000, ids=job_ids
        )
        return self._settle, call_keys, args

    def parse_created(self, reply: Any) -> StoredJob | Damaged | Exception | None:
        """What a create call returned for one job: None when it was saved (or was there
        already), the error of its own, or the job holding its unique key, as it is now."""
        if isinstance(reply, Exception):
            return reply
        if not isinstance(reply, list):
            return None
        holder, flat = reply
        return decode(holder, _as_dict(flat))

    def transition_call(
        self,
        change: lifecycle.Change,
        stored: StoredJob,
        purge_timeout: float,
        also: Sequence[str] = (),
        again: bool = False,
        progress: str | None = None,
    ) -> ScriptCall:
        """The call applying `change` to the job as `stored`, if its record is still at that
        version: only the fields that changed are written, and the event is assembled from
        the field texts (nothing is encoded twice). The indexes and the stats of the job's
        name follow in the same step. The job is also published on the channels `also`.
        `again` for a call sent again after its reply was lost: it then returns 2 if its first
        send applied it. A record it cannot fence is answered as `damage_of` reads.
        `progress`: the JSON text of the last progress the run reported, which Redis has
        (scripts/progress.lua wrote it, after `stored` was read): the event carries it, and the
        record keeps it (no change writes that field)."""
        job, previous = change.job, stored.record
        keys = self.keys_of(job.id)
        where, score = lifecycle.placement(job, purge_timeout)
        fresh = to_record(job, previous.get("data", "null"), (stored.job, previous))
        ended = OPTIONAL_FIELDS if job.state is State.PROCESSING else _AFTER_A_RUN
        written = changes(stored.fields, fresh, ended)
        merged = {
            **{name: text for name, text in previous.items() if name not in OPTIONAL_FIELDS},
            **fresh,
            "id": job.id,
        }
        if progress is not None:
            merged["progress"] = progress
        channels = [self.keys.event(event) for event in change.events]
        if change.finished:
            channels.append(self.keys.done(job.id))
            if job.reply_to is not None:  # a hotjob: its creator listens there
                channels.append(job.reply_to)
        channels += also
        before = stored.job.state
        run_ended = before is State.PROCESSING and job.state is not State.PROCESSING
        args = TRANSITION.args(
            version=stored.version,
            id=job.id,
            placement=where,
            score=score,
            wake=self.keys.wake(job.name),
            message=record_event_json(merged, job.total_process_time),
            now_us=clock.to_us(job.update_time or clock.now()),
            completes=job.state.value if job.complete else "",
            process_time=encode(job.runs[-1].process_time) if run_ended and job.runs else "",
            run_times=RUN_TIMES,
            timers=self.keys.timers,
            channels=channels,
            fields=json.dumps(_flat(written)),
            run_ended="1" if run_ended else "",
            again="1" if again else "",
        )
        queue = keys.queue(job.name)
        call_keys = TRANSITION.keys(
            job=keys.job(job.id),
            leaves=_zset_of(keys, before, job.name),
            joins=_zset_of(keys, job.state, job.name),
            queue=queue,
            index_before=keys.index(before.value, job.name),
            index_after=keys.index(job.state.value, job.name),
            minutes=keys.minutes(job.name),
            times=keys.times(job.name),
            limits=keys.limits(job.name),
            next_due=keys.next_due,
        )
        return self._transition, call_keys, args

    def progress_call(
        self, job_id: str, run: int, value_json: str, event: str, waiters: str
    ) -> ScriptCall:
        """The call keeping `value_json` as the progress of run `run` of the job, if that run
        still counts (1; else 0), and publishing `event` (its progress event) and `waiters`
        (the start of the message for its waiters, see `progress_message_head`): see
        scripts/progress.lua."""
        args = PROGRESS.args(
            run=run,
            value=value_json,
            event=event,
            event_channel=self.keys.event("progress"),
            waiters=waiters,
            done_channel=self.keys.done(job_id),
        )
        return self._progress, PROGRESS.keys(job=self.keys_of(job_id).job(job_id)), args

    @staticmethod
    def sent_again(call: ScriptCall) -> ScriptCall:
        """A `transition_call` to send again after its reply was lost (its `again` set)."""
        script, keys, args = call
        again = list(args)
        again[_AGAIN] = "1"
        return script, keys, again

    def claim_call(
        self, names: Sequence[str], count: int, worker_id: str = "", token: str | None = None
    ) -> ScriptCall:
        """A claim from the queues of `names`, which must lie in one of `claim_groups`; `token`
        (unique to the claim) finds it again if its reply is lost (see `reclaim_call`)."""
        now = clock.now()
        part = self.keys_of_name(names[0])
        per_name: list[str] = []
        for name in names:
            per_name += [part.queue(name), part.index("processing", name)]
            per_name += [part.limits(name), part.starts(name)]
        keys = CLAIM.keys(
            processing=part.processing,
            scheduled=part.scheduled,
            finished=part.finished,
            paused=part.paused,
            next_due=part.next_due,
            claim_key=part.claim(worker_id or "none"),
            per_name=per_name,
        )
        args = CLAIM.args(
            job_prefix=part.job_prefix,
            now_ms=clock.to_ms(now),
            process_timeout=DEFAULT_TEXTS["process_timeout"],
            count=count,
            damaged_prefix=part.damaged_prefix,
            done_prefix=self.keys.done(""),
            now_us=clock.to_us(now),
            timers=self.keys.timers,
            token=secrets.token_hex(8) if token is None else token,
            names=names,
        )
        return self._claim, keys, args

    def reclaim_call(self, claim: ScriptCall) -> ScriptCall:
        """The call finding what `claim` (a `claim_call`) started, its reply having been lost,
        or making sure it never starts anything (see scripts/reclaim.lua)."""
        _, claim_keys, claim_args = claim
        names = claim_args[_CLAIM_NAMES:]
        part = self.keys_of_name(names[0])
        keys = RECLAIM.keys(
            claim_key=claim_keys[_CLAIM_KEY],
            indexes=[part.index("processing", name) for name in names],
        )
        args = RECLAIM.args(
            token=claim_args[_CLAIM_TOKEN],
            job_prefix=part.job_prefix,
            now_us=claim_args[_CLAIM_NOW_US],
            given_up_ms=CLAIM_GIVEN_UP_MS,
        )
        return self._reclaim, keys, args

    def parse_claimed(self, reply: Sequence[Any]) -> list[StoredJob | Damaged]:
        """The runs a claim (or a reclaim) started, and the records it set aside."""
        records = reply[0]
        set_aside = reply[1] if len(reply) > 1 else []
        claimed: list[StoredJob | Damaged] = [
            Damaged(job_id, {}, why, moved=True) for job_id, why in set_aside
        ]
        claimed.extend(decode(job_id, _as_dict(flat)) for job_id, flat in records)
        return claimed

    @staticmethod
    def idle_names(reply: Sequence[Any]) -> list[str]:
        """From a claim's reply: the names with nothing to start now (empty queue, paused, or
        held back by a limit)."""
        return list(reply[3])

    @staticmethod
    def rate_wait(reply: Sequence[Any]) -> float | None:
        """From a claim's reply: the seconds until a rate limit that held queued jobs back lets
        the next run start, or None when no rate held any back."""
        ms = int(reply[2])
        return None if ms < 0 else ms / 1000

    # -- reads, deletes and the timer's work ----------------------------------------

    def load(self, job_id: str) -> StoredJob | Damaged | None:
        """The job's record and version, Damaged (also when it was set aside), or None if
        there is no such job."""
        keys = self.keys_of(job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.job(job_id))
        pipe.hget(keys.damaged(job_id), "damaged_error")
        record, set_aside = pipe.execute(raise_on_error=False)
        return self._loaded(job_id, record, set_aside)

    def state(self, job_id: str) -> str | Damaged | None:
        """Just the job's state (cheap): a known state, Damaged, or None if there is no
        record (nor one set aside)."""
        keys = self.keys_of(job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(keys.job(job_id), "state")
        pipe.hget(keys.damaged(job_id), "damaged_error")
        state, set_aside = pipe.execute(raise_on_error=False)
        if isinstance(state, redis.ResponseError) and not is_outage(state):  # WRONGTYPE
            return Damaged(job_id, {}, str(state))
        if isinstance(state, Exception):
            raise state
        if state is None:
            return None if set_aside is None else Damaged(job_id, {}, str(set_aside), True)
        if state not in STATES:
            return Damaged(job_id, {"state": state}, f"unknown state {state!r}")
        return str(state)

    def load_many(self, job_ids: Sequence[str]) -> list[StoredJob | Damaged | None]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys_of(job_id).job(job_id))
        return [
            self._loaded(job_id, record)
            for job_id, record in zip(job_ids, pipe.execute(raise_on_error=False), strict=True)
        ]

    def load_waited(self, job_ids: Sequence[str]) -> list[StoredJob | Damaged | Exception | None]:
        """`load` of many jobs in one round trip (the waits re-reading their records): each
        job's answer, or the error reading it gave."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            keys = self.keys_of(job_id)
            pipe.hgetall(keys.job(job_id))
            pipe.hget(keys.damaged(job_id), "damaged_error")
        replies = pipe.execute(raise_on_error=False)
        answers: list[StoredJob | Damaged | Exception | None] = []
        for i, job_id in enumerate(job_ids):
            try:
                answers.append(self._loaded(job_id, replies[2 * i], replies[2 * i + 1]))
            except Exception as exc:
                answers.append(exc)
        return answers

    @staticmethod
    def _loaded(job_id: str, record: Any, set_aside: Any = None) -> StoredJob | Damaged | None:
        if isinstance(record, redis.ResponseError) and not is_outage(record):  # WRONGTYPE
            return Damaged(job_id, {}, str(record))
        if isinstance(record, Exception):
            raise record
        if not record:
            if set_aside is None or isinstance(set_aside, Exception):
                return None
            return Damaged(job_id, {}, str(set_aside), moved=True)
        return decode(job_id, record)

    def delete(self, job_id: str) -> bool:
        return bool(self.run(self.delete_call(job_id)))

    def delete_call(self, job_id: str) -> ScriptCall:
        """The call deleting a job in any state (1 if it existed, else 0)."""
        keys = self.keys_of(job_id)
        call_keys = DELETE.keys(
            job=keys.job(job_id),
            scheduled=keys.scheduled,
            processing=keys.processing,
            finished=keys.finished,
        )
        queue_before, queue_after = keys.queue_affixes
        args = DELETE.args(
            id=job_id,
            delete_channel=self.keys.event("delete"),
            done_channel=self.keys.done(job_id),
            queue_before=queue_before,
            queue_after=queue_after,
            index_prefix=keys.index_prefix,
            limits_prefix=keys.limits_prefix,
            wake_prefix=self.keys.wake_prefix,
            now_ms=clock.to_ms(clock.now()),
            timers=self.keys.timers,
        )
        return self._delete, call_keys, args

    def due(self, now_ms: int, limit: int) -> Due:
        """What is due in every partition (up to `limit` ids of each kind per partition)."""
        calls: list[ScriptCall] = [
            (
                self._due,
                DUE.keys(
                    scheduled=keys.scheduled, processing=keys.processing, finished=keys.finished
                ),
                DUE.args(now_ms=now_ms, limit=limit),
            )
            for keys in self.partitions
        ]
        total = Due([], [], False, None)
        for reply in self.run_all(calls):
            scheduled, overdue, purge, earliest = reply
            total.scheduled.extend(scheduled)
            total.overdue.extend(overdue)
            total.purge = total.purge or bool(purge)
            if earliest:
                earliest_ms = int(float(earliest))
                if total.earliest_ms is None or earliest_ms < total.earliest_ms:
                    total.earliest_ms = earliest_ms
        return total

    def purge(self, now_ms: int, limit: int) -> int:
        """Purge up to `limit` due jobs in each partition; returns the most one purged."""
        delete_channel = self.keys.event("delete")
        calls: list[ScriptCall] = [
            (
                self._purge,
                PURGE.keys(finished=keys.finished),
                PURGE.args(
                    now_ms=now_ms,
                    limit=limit,
                    job_prefix=keys.job_prefix,
                    delete_channel=delete_channel,
                    index_prefix=keys.index_prefix,
                ),
            )
            for keys in self.partitions
        ]
        return max(int(purged) for purged in self.run_all(calls))

    def unlist(self, stale: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Drop due ids from their index ("scheduled" or "processing"), each given with it,
        when their record is gone or in a state that index does not hold, checked again by
        the script (see scripts/unlist.lua); returns those dropped, (id, index) each."""
        groups: dict[tuple[int, str], list[str]] = {}
        for job_id, index in stale:
            part = partition_of_id(job_id) if self.cluster else 0
            groups.setdefault((part, index), []).append(job_id)
        calls: list[ScriptCall] = []
        for (part, index), job_ids in groups.items():
            keys = self.partitions[part]
            call_keys = UNLIST.keys(index=getattr(keys, index))
            args = UNLIST.args(job_prefix=keys.job_prefix, held=_HELD[index], ids=job_ids)
            calls.append((self._unlist, call_keys, args))
        dropped: list[tuple[str, str]] = []
        for (_, index), reply in zip(groups, self.run_all(calls), strict=True):
            dropped += [(job_id, index) for job_id in reply]
        return dropped

    def quarantine(self, damaged: Damaged) -> bool:
        """Move an undecodable record aside (to `<ns>:damaged:<id>`) so no worker trips on it."""
        keys = self.keys_of(damaged.job_id)
        call_keys = QUARANTINE.keys(
            job=keys.job(damaged.job_id),
            damaged=keys.damaged(damaged.job_id),
            scheduled=keys.scheduled,
            processing=keys.processing,
            finished=keys.finished,
        )
        queue_before, queue_after = keys.queue_affixes
        args = QUARANTINE.args(
            id=damaged.job_id,
            why=damaged.error,
            done_channel=self.keys.done(damaged.job_id),
            index_prefix=keys.index_prefix,
            queue_before=queue_before,
            queue_after=queue_after,
            now_ms=clock.to_ms(clock.now()),
            timers=self.keys.timers,
        )
        return bool(self.run((self._quarantine, call_keys, args)))

    def pause_call(self, name: str, action: str) -> ScriptCall:
        """The call pausing (`action` "pause") or resuming ("resume") a job name."""
        keys = self.keys_of_name(name)
        call_keys = PAUSE.keys(paused=keys.paused, names=keys.names, queue=keys.queue(name))
        args = PAUSE.args(action=action, name=name, wake=self.keys.wake(name))
        return self._pause, call_keys, args

    def limit_call(
        self, name: str, rate: tuple[int, float] | None, concurrency: int | None
    ) -> ScriptCall:
        """The call setting the limits of a job name (`rate`: runs, seconds), replacing its
        own; both None remove them."""
        keys = self.keys_of_name(name)
        call_keys = LIMIT.keys(
            limits=keys.limits(name),
            starts=keys.starts(name),
            names=keys.names,
            queue=keys.queue(name),
        )
        count, window = ("", "") if rate is None else (str(rate[0]), encode(rate[1] * 1000))
        args = LIMIT.args(
            name=name,
            rate_count=count,
            rate_ms=window,
            concurrency="" if concurrency is None else str(concurrency),
            wake=self.keys.wake(name),
        )
        return self._limit, call_keys, args

    def pending(self, names: Sequence[str], now_ms: int) -> tuple[int, int, int]:
        """How many jobs of `names` are queued, due by `now_ms` (delayed, retry or ghost) and
        processing: one read-only script call per partition, each a consistent snapshot (the
        jobs of a name never leave its partition, so no job is missed between two calls)."""
        calls: list[ScriptCall] = []
        for group in self.claim_groups(names):
            keys = self.keys_of_name(group[0])
            call_keys = PENDING.keys(
                scheduled=keys.scheduled,
                processing=keys.processing,
                queues=[keys.queue(name) for name in group],
            )
            args = PENDING.args(now_ms=now_ms, job_prefix=keys.job_prefix, names=group)
            calls.append((self._pending, call_keys, args))
        totals = [0, 0, 0]
        for reply in self.run_all(calls):
            totals = [total + int(count) for total, count in zip(totals, reply, strict=True)]
        return totals[0], totals[1], totals[2]

    def stats_call(self, names: Sequence[str], now_minute: int) -> ScriptCall:
        """The call reading what `kickq.stats()` reports of `names`, which must share a
        partition (see scripts/stats.lua; _verbs/stats.py decodes its reply)."""
        keys = self.keys_of_name(names[0])
        shapes = [keys.index(state, _MARK) for state in SEEN_STATES]
        shapes += [keys.minutes(_MARK), keys.times(_MARK), keys.limits(_MARK)]
        affixes = [part for shape in shapes for part in shape.rsplit(_MARK, 1)]
        args = STATS.args(
            now_minute=now_minute, job_prefix=keys.job_prefix, shapes=affixes, names=names
        )
        return self._stats, STATS.keys(paused=keys.paused), args
