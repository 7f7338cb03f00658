"""The only module that talks to Redis about jobs: one method per Lua script, Jobs in and out.

On a Redis Cluster (`cluster=True`) each job lives in the partition of its name (see _keys.py):
calls about one job go to its partition's slot, and the timer's reads and purges go to
every partition, in one pipeline.

Scripts are registered with redis-py (`register_script`), which owns their SHA. Batches of calls
go out in one round trip as plain EVALSHA: redis-py's own pipeline path asks SCRIPT EXISTS before
every execute, a second round trip on the hottest path, so a batch instead re-sends only the
calls that came back NOSCRIPT, as EVAL with the script's text, which caches it on that node.
No script call is ever sent twice otherwise (see `run_batch`): a call whose reply was lost may
have been applied, and only its caller can tell (a create by its job's id, `settle_call`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import attrs
import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from kickq._model import clock, ids, lifecycle
from kickq._model.job import STATES, Job, State
from kickq._redis.connection import Client
from kickq._redis.keys import (
    PARTITIONS,
    RUN_TIMES,
    SEEN_STATES,
    Keys,
    partition_of_id,
    partition_of_name,
)
from kickq._redis.layout import changes, gather, lay_out
from kickq._redis.outage import NODE_DOWN, Unanswered, is_outage
from kickq._redis.record import (
    DEFAULT_TEXTS,
    NEW_JOB_FIELDS,
    OPTIONAL_FIELDS,
    encode,
    from_record,
    new_jobs_event_texts,
    record_event_json,
    to_record,
    version_of,
)

ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]
log = logging.getLogger("kickq")
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
WRITE_AT_ONCE = 65536  # bytes `Store.write` sends from a caller's thread at most
FENCED = -1  # create.lua's result for a job whose id is fenced
# what a lost reply looks like in a cluster pipeline's results
_LOST = (redis.ConnectionError, redis.TimeoutError)
REDIRECTS = 3  # rounds a cluster call redirected (MOVED, ASK) is sent again in, at most


def load_script(name: str, announces: bool = False) -> str:
    """The text of scripts/<name>.lua; with `announces`, after announce.lua's function."""
    scripts = resources.files("kickq._redis").joinpath("scripts")
    text = scripts.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if announces:
        return scripts.joinpath("announce.lua").read_text(encoding="utf-8") + text
    return text


_MARK = "\x00"  # stands for a job name in a key, to split the key around it (the last one)
# what a transition out of processing removes when the new record lacks it: the run's start is
# its run's now (run:<count>)
_AFTER_A_RUN = OPTIONAL_FIELDS | {"run_start", "claim"}


def _flat(record: Mapping[str, str | None]) -> list[str | None]:
    return [item for pair in record.items() for item in pair]


def _as_dict(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _command(call: ScriptCall, with_text: bool) -> tuple[Any, ...]:
    script, keys, args = call
    if with_text:
        return ("EVAL", script.script, len(keys), *keys, *args)
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _redirected(result: Any) -> bool:
    """A cluster node's answer that the call belongs elsewhere: it was not applied."""
    if isinstance(result, redis.exceptions.MovedError | redis.exceptions.AskError):
        return True
    return isinstance(result, redis.ResponseError) and str(result).startswith(("MOVED ", "ASK "))


def _moved(result: Any) -> redis.exceptions.MovedError | None:
    """The MOVED reply `result` is, as redis-py's MovedError (older versions give the text)."""
    if isinstance(result, redis.exceptions.MovedError):
        return result
    if isinstance(result, redis.ResponseError) and str(result).startswith("MOVED "):
        with contextlib.suppress(ValueError):
            return redis.exceptions.MovedError(str(result)[len("MOVED ") :])
    return None


def _still_redirected(result: Any) -> redis.exceptions.TryAgainError:
    """A call the cluster kept redirecting (not applied): the slot is moving, try later."""
    error = redis.exceptions.TryAgainError(
        f"TRYAGAIN the cluster still redirects this call after {REDIRECTS} tries ({result})"
    )
    error.__cause__ = result
    return error


def _unanswered(exc: BaseException) -> Unanswered:
    if isinstance(exc, Unanswered):
        return exc
    lost = Unanswered(f"a Redis Cluster node did not answer a call sent to it: {exc}")
    lost.__cause__ = exc
    return lost


def checked(results: Sequence[Any]) -> list[Any]:
    """The replies of a pipeline, or the first error among them raised."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)


def _zset_of(keys: Keys, state: State, queue: str) -> str:
    """The sorted set a job in `state` lives in: processing, scheduled, finished, or its queue."""
    if state is State.QUEUED:
        return queue
    if state is State.PROCESSING:
        return keys.processing
    if state in (State.SUCCESS, State.FAIL):
        return keys.finished
    return keys.scheduled


@attrs.define(eq=False)
class Written:
    """Script calls written on a pooled connection whose replies are still to be read."""

    calls: Sequence[ScriptCall]
    commands: list[tuple[Any, ...]]
    connection: Any
    pool: Any
    error: BaseException | None = None  # the write failed: all or part of it may have gone out
    released: bool = False

    def abandon(self) -> None:
        """Give the connection back unread (its replies can never be matched): closed."""
        if not self.released:
            self.connection.disconnect()
            self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.connection)


@attrs.frozen
class StoredJob:
    """A job as read from Redis, with the record it was read from and that record's version,
    which fences the next change (a claim hands the worker the run it now holds this way):
    `record` with its long values joined, `fields` the hash as stored (see _layout.py)."""

    job: Job
    version: int
    record: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)
    fields: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class Damaged:
    """A record that could not be decoded; `moved` once a script has set it aside already."""

    job_id: str
    record: Mapping[str, str]
    error: str
    moved: bool = False


def decode(job_id: str, record: Mapping[str, str]) -> StoredJob | Damaged:
    """The one way a stored record becomes a Job: the job with its version, or a Damaged
    marker saying why not. Nothing a record holds can make this raise."""
    try:
        joined = gather(record)
        return StoredJob(from_record(joined, job_id), version_of(record), joined, record)
    except Exception as exc:  # any field of any type: one record never stops the caller
        return Damaged(job_id, record, f"{type(exc).__name__}: {exc}")


# the states whose jobs each index of due jobs holds, as scripts/unlist.lua takes them
_HELD = {"scheduled": " delayed retry ghost ", "processing": " processing "}
_DAMAGED_REPLY = "damaged: "  # how transition.lua answers a change of a damaged record


def damage_of(job_id: str, reply: Any) -> Damaged | None:
    """A `transition_call`'s reply saying that the record cannot be fenced (no version, a
    version that is not one, a key that is not a hash: see transition.lua), as the record to
    set aside; None for any other reply (1, 2, 0 or an error)."""
    if isinstance(reply, str) and reply.startswith(_DAMAGED_REPLY):
        return Damaged(job_id, {}, reply[len(_DAMAGED_REPLY) :])
    return None


@attrs.define
class Due:
    scheduled: list[str]
    overdue: list[str]
    purge: bool
    earliest_ms: int | None


class Store:
    def __init__(self, client: Client, namespace: str, cluster: bool = False) -> None:
        self.client = client
        self.cluster = cluster
        self.keys = Keys(namespace)  # the channels, and every key on a single node
        # called (from any thread) when the set of a cluster's primaries changed
        self.on_failover: Callable[[], None] = lambda: None
        self._layout: frozenset[str] = frozenset()
        self._layout = self._primaries()
        self.partitions = (
            [Keys(namespace, p) for p in range(PARTITIONS)] if cluster else [self.keys]
        )
        self._create = client.register_script(load_script("create", announces=True))
        self._transition = client.register_script(load_script("transition", announces=True))
        self._claim = client.register_script(load_script("claim", announces=True))
        self._reclaim = client.register_script(load_script("reclaim"))
        self._due = client.register_script(load_script("due"))
        self._purge = client.register_script(load_script("purge"))
        self._delete = client.register_script(load_script("delete"))
        self._quarantine = client.register_script(load_script("quarantine"))
        self._unlist = client.register_script(load_script("unlist"))
        self._pause = client.register_script(load_script("pause"))
        self._pending = client.register_script(load_script("pending"))
        self._limit = client.register_script(load_script("limit"))
        self._stats = client.register_script(load_script("stats"))
        self._settle = client.register_script(load_script("settle"))

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

    # -- running scripts -------------------------------------------------------------

    def run_batch(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls in one round trip; each result is a value or the exception raised.

        Each call is sent at most once. Raises `Unanswered` when the connection failed or timed
        out after the send began (Redis may have applied any of the calls), any other
        connection error only when nothing was sent. On a Redis Cluster the calls of one node
        whose reply was lost come back as `Unanswered` results instead, the others' as usual.
        """
        if not calls:
            return []
        return self._reloaded(calls, self._send(calls))

    def write(self, calls: Sequence[ScriptCall]) -> Written | None:
        """Write script calls now, on an idle connection of a single server's pool, for
        `finish` to read their replies, maybe on another thread; None when no connection is
        idle and connected (connecting could block the caller) or on a Redis Cluster. An error
        of the write is kept for `finish`: some of it may have gone out."""
        if self.cluster:
            return None
        pool: Any = self.client.connection_pool  # type: ignore[union-attr]
        take = getattr(pool, "idle_connection", None)  # kickq's pool (_connection.Pool)
        conn = None if take is None else take()
        if conn is None:
            return None
        written = Written(calls, [_command(call, False) for call in calls], conn, pool)
        try:
            packed = conn.pack_commands(written.commands)
        except Exception:  # an argument redis-py refuses: the usual path fails the call
            written.release()
            return None
        if sum(len(part) for part in packed) > WRITE_AT_ONCE:
            written.release()  # the kernel may not take it all at once: the caller would wait
            return None
        try:
            conn.send_packed_command(packed, check_health=False)
        except BaseException as exc:
            written.error = exc
        return written

    def finish(self, written: Written) -> list[Any]:
        """The results of calls `write` sent, as `run_batch` gives them (it raises alike)."""
        return self._reloaded(written.calls, self._read(written))

    def _reloaded(self, calls: Sequence[ScriptCall], results: list[Any]) -> list[Any]:
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            # EVAL loads the script on the node that lacked it, and on no other: SCRIPT LOAD
            # goes to every primary of a cluster, so one that is down would fail the batch
            # and throw away what the other calls did (a claim's jobs, left to ghost).
            try:
                retried = self._send([calls[i] for i in missing], with_text=True)
            except Exception as exc:  # the answers in hand stand; only these calls failed
                retried = [exc] * len(missing)
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    def _send(self, calls: Sequence[ScriptCall], with_text: bool = False) -> list[Any]:
        if self.cluster:
            return self._send_to_cluster([_command(call, with_text) for call in calls])
        # Written on one pooled connection, one reply read each: redis-py's pipeline would
        # send them all again after a timeout or a dropped connection (its Retry), and costs
        # more Python per call.
        pool: Any = self.client.connection_pool  # type: ignore[union-attr]
        conn = pool.get_connection()  # connects and checks it: a failure here sent nothing
        written = Written(calls, [_command(call, with_text) for call in calls], conn, pool)
        try:
            conn.send_packed_command(conn.pack_commands(written.commands), check_health=False)
        except BaseException as exc:
            written.error = exc
        return self._read(written)

    @staticmethod
    def _read(written: Written) -> list[Any]:
        """One reply per call written; the connection goes back to its pool either way."""
        conn, commands = written.connection, written.commands
        results: list[Any] = []
        try:
            if written.error is not None:
                raise written.error
            for _ in commands:
                try:
                    results.append(conn.read_response())
                except redis.ResponseError as exc:  # an error reply: that call's result
                    results.append(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            conn.disconnect()  # replies may still come: never read them as the next ones'
            raise Unanswered(
                f"Redis did not answer {len(commands) - len(results)} of {len(commands)} "
                f"script calls sent ({type(exc).__name__}: {exc}); they may have been applied"
            ) from exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            written.release()
        return results

    def _send_to_cluster(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """redis-py's cluster pipeline, told not to follow redirections: it would re-send the
        calls of a node whose connection failed, one by one. It still retries the whole batch
        when it cannot get a node's connection, before anything is written. A node's calls
        whose replies were lost come back as Unanswered; calls redirected (MOVED, ASK: not
        applied) are sent again, after the slot table is read again and the slots the MOVED
        replies name are moved: a node asked for the table may not have heard of a failover
        yet, while the node that refused a call knows who serves its slot now. A call still
        redirected after REDIRECTS rounds comes back as a TryAgainError (an outage)."""
        results = self._cluster_round(commands)
        redirected = [i for i, r in enumerate(results) if _redirected(r)]
        if redirected:
            self._relearn_layout()
        for _ in range(REDIRECTS):
            if not redirected:
                break
            self._follow([results[i] for i in redirected])
            again = self._cluster_round([commands[i] for i in redirected])
            for i, result in zip(redirected, again, strict=True):
                results[i] = result
            redirected = [i for i in redirected if _redirected(results[i])]
        for i in redirected:
            results[i] = _still_redirected(results[i])
        if any(isinstance(result, NODE_DOWN) for result in results):
            self._relearn_layout()
        return [_unanswered(result) if isinstance(result, _LOST) else result for result in results]

    def _cluster_round(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=False)
        for command in commands:
            # a plain command: a cluster pipeline refuses pipe.evalsha, but routes this one by
            # the slot of its keys
            pipe.execute_command(*command)
        strategy = getattr(pipe, "_execution_strategy", None)
        try:
            if strategy is None or not hasattr(strategy, "_command_queue"):
                return list(pipe.execute(raise_on_error=False))  # an older redis-py
            queued = strategy._command_queue
            try:
                return list(
                    strategy.send_cluster_commands(
                        queued, raise_on_error=False, allow_redirections=False
                    )
                )
            finally:
                strategy.reset()
        except NODE_DOWN:
            self._relearn_layout()
            raise

    def _relearn_layout(self) -> None:
        """On a cluster, a node that does not answer may have been failed over: read the slot
        table again so that the next calls go to the new primary. redis-py does this for
        single commands, but not when a pipeline's command reports the node down."""
        if not self.cluster:
            return
        # when no node answers yet, the caller's retry comes back here
        with contextlib.suppress(Exception):
            self.client.nodes_manager.initialize()  # type: ignore[union-attr]
        self._check_primaries()

    def _follow(self, redirects: Sequence[Any]) -> None:
        """Move each slot a MOVED reply names to the node it names, in the client's table."""
        manager: Any = self.client.nodes_manager  # type: ignore[union-attr]
        for redirect in redirects:
            moved = _moved(redirect)
            if moved is None:
                continue
            with contextlib.suppress(Exception):
                if hasattr(manager, "move_slot"):  # redis-py 7 and later
                    manager.move_slot(moved)
                else:  # applied by the next lookup of a slot
                    manager.update_moved_exception(moved)
                    manager.get_node_from_slot(moved.slot_id)
        self._check_primaries()

    def _primaries(self) -> frozenset[str]:
        if not self.cluster:
            return frozenset()
        try:
            nodes = self.client.get_primaries()  # type: ignore[union-attr]
        except Exception:
            return self._layout
        return frozenset(str(node.name) for node in nodes)

    def _check_primaries(self) -> None:
        """Tell `on_failover` when the set of primaries changed: what the old primary published
        last (a wake, a run's end, a timer's deadline) may never have crossed the cluster bus,
        and nothing else would say so."""
        layout = self._primaries()
        if layout == self._layout:
            return
        self._layout = layout
        try:
            self.on_failover()
        except Exception:
            log.exception("kickq: catching up after a failover failed")

    def run(self, call: ScriptCall) -> Any:
        result = self.run_batch([call])[0]
        if isinstance(result, Exception):
            raise result
        return result

    # -- transitions -----------------------------------------------------------------

    def create_call(
        self, changes: Sequence[lifecycle.Change], data_jsons: Sequence[str]
    ) -> ScriptCall:
        """The call saving new jobs of one name, alike but for their id, data and unique key:
        one for create(), a batch for create_many() (see scripts/create.lua and
        `parse_created`)."""
        first = changes[0].job
        keys = self.keys_of(first.id)
        where, score = lifecycle.placement(first, 0.0)
        shared = to_record(first, "null")
        for field in NEW_JOB_FIELDS:
            shared.pop(field, None)
        channels = [self.keys.event(event) for event in changes[0].events]
        wake = self.keys.wake(first.name)
        now_us = clock.to_us(first.update_time or clock.now())
        args: list[Any] = [where, score, wake, keys.job_prefix, now_us, self.keys.timers]
        args += [len(channels), *channels]
        args += [json.dumps(_flat(lay_out(shared))), *new_jobs_event_texts(shared)]
        for change, data_json in zip(changes, data_jsons, strict=True):
            job = change.job
            lock = "" if job.unique_key is None else keys.unique(job.name, job.unique_key)
            args += [job.id, data_json, encode(job.unique_key), lock]
        call_keys = [
            keys.scheduled,
            keys.queue(first.name),
            keys.index("delayed", first.name),
            keys.names,
            keys.next_due,
            keys.fenced,
        ]
        return self._create, call_keys, args

    def settle_call(self, job_ids: Sequence[str]) -> ScriptCall:
        """The call settling creates whose reply was lost, jobs of one name (one partition):
        1 for a job saved, 0 for one not saved, now fenced so that the lost call can never
        save it later (see scripts/settle.lua)."""
        keys = self.keys_of(job_ids[0])
        call_keys = [keys.fenced, *(keys.job(job_id) for job_id in job_ids)]
        args = [clock.to_ms(clock.now()), FENCE_SECONDS * 1000, *job_ids]
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
    ) -> ScriptCall:
        """The call applying `change` to the job as `stored`, if its record is still at that
        version: only the fields that changed are written, and the event is assembled from
        the field texts (nothing is encoded twice). The indexes and the stats of the job's
        name follow in the same step. The job is also published on the channels `also`.
        `again` for a call sent again after its reply was lost: it then returns 2 if its first
        send applied it. A record it cannot fence is answered as `damage_of` reads."""
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
        channels = [self.keys.event(event) for event in change.events]
        if change.finished:
            channels.append(self.keys.done(job.id))
            if job.reply_to is not None:  # a hotjob: its creator listens there
                channels.append(job.reply_to)
        channels += also
        message = record_event_json(merged, job.total_process_time)
        wake = self.keys.wake(job.name)
        before = stored.job.state
        run_ended = before is State.PROCESSING and job.state is not State.PROCESSING
        args: list[Any] = [
            stored.version,
            job.id,
            where,
            score,
            wake,
            message,
            clock.to_us(job.update_time or clock.now()),
            job.state.value if job.complete else "",
            encode(job.runs[-1].process_time) if run_ended and job.runs else "",
            RUN_TIMES,
            self.keys.timers,
            len(channels),
        ]
        queue = keys.queue(job.name)
        call_keys = [
            keys.job(job.id),
            _zset_of(keys, before, queue),
            _zset_of(keys, job.state, queue),
            queue,
            keys.index(before.value, job.name),
            keys.index(job.state.value, job.name),
            keys.minutes(job.name),
            keys.times(job.name),
            keys.limits(job.name),
            keys.next_due,
        ]
        args += [*channels, json.dumps(_flat(written)), "1" if run_ended else ""]
        args.append("1" if again else "")
        return self._transition, call_keys, args

    @staticmethod
    def sent_again(call: ScriptCall) -> ScriptCall:
        """A `transition_call` to send again after its reply was lost (its `again` set)."""
        script, keys, args = call
        return script, keys, [*args[:-1], "1"]

    def claim_call(
        self, names: Sequence[str], count: int, worker_id: str = "", token: str | None = None
    ) -> ScriptCall:
        """A claim from the queues of `names`, which must lie in one of `claim_groups`; `token`
        (unique to the claim) finds it again if its reply is lost (see `reclaim_call`)."""
        now = clock.now()
        part = self.keys_of_name(names[0])
        keys = [part.processing, part.scheduled, part.finished, part.paused, part.next_due]
        keys.append(part.claim(worker_id or "none"))
        for name in names:
            keys += [part.queue(name), part.index("processing", name)]
            keys += [part.limits(name), part.starts(name)]
        args = [
            part.job_prefix,
            clock.to_ms(now),
            DEFAULT_TEXTS["process_timeout"],
            count,
            part.damaged_prefix,
            self.keys.done(""),
            clock.to_us(now),
            self.keys.timers,
            secrets.token_hex(8) if token is None else token,
            *names,
        ]
        return self._claim, keys, args

    def reclaim_call(self, claim: ScriptCall) -> ScriptCall:
        """The call finding what `claim` (a `claim_call`) started, its reply having been lost,
        or making sure it never starts anything (see scripts/reclaim.lua)."""
        _, claim_keys, claim_args = claim
        names = claim_args[9:]
        part = self.keys_of_name(names[0])
        keys = [claim_keys[5], *(part.index("processing", name) for name in names)]
        args = [claim_args[8], part.job_prefix, claim_args[6], CLAIM_GIVEN_UP_MS]
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
        call_keys = [keys.job(job_id), keys.scheduled, keys.processing, keys.finished]
        args = [
            job_id,
            self.keys.event("delete"),
            self.keys.done(job_id),
            *keys.queue_affixes,
            keys.index_prefix,
            keys.limits_prefix,
            self.keys.wake_prefix,
        ]
        return self._delete, call_keys, args

    def due(self, now_ms: int, limit: int) -> Due:
        """What is due in every partition (up to `limit` ids of each kind per partition)."""
        calls: list[ScriptCall] = [
            (self._due, [keys.scheduled, keys.processing, keys.finished], [now_ms, limit])
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
                [keys.finished],
                [now_ms, limit, keys.job_prefix, delete_channel, keys.index_prefix],
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
            held = _HELD[index]
            calls.append((self._unlist, [getattr(keys, index)], [keys.job_prefix, held, *job_ids]))
        dropped: list[tuple[str, str]] = []
        for (_, index), reply in zip(groups, self.run_all(calls), strict=True):
            dropped += [(job_id, index) for job_id in reply]
        return dropped

    def run_all(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls in one round trip; the first error among them is raised."""
        return checked(self.run_batch(calls))

    def quarantine(self, damaged: Damaged) -> bool:
        """Move an undecodable record aside (to `<ns>:damaged:<id>`) so no worker trips on it."""
        keys = self.keys_of(damaged.job_id)
        call_keys = [
            keys.job(damaged.job_id),
            keys.damaged(damaged.job_id),
            keys.scheduled,
            keys.processing,
            keys.finished,
        ]
        args = [
            damaged.job_id,
            damaged.error,
            self.keys.done(damaged.job_id),
            keys.index_prefix,
            *keys.queue_affixes,
        ]
        return bool(self.run((self._quarantine, call_keys, args)))

    def pause_call(self, name: str, action: str) -> ScriptCall:
        """The call pausing (`action` "pause") or resuming ("resume") a job name."""
        keys = self.keys_of_name(name)
        call_keys = [keys.paused, keys.names, keys.queue(name)]
        return self._pause, call_keys, [action, name, self.keys.wake(name)]

    def limit_call(
        self, name: str, rate: tuple[int, float] | None, concurrency: int | None
    ) -> ScriptCall:
        """The call setting the limits of a job name (`rate`: runs, seconds), replacing its
        own; both None remove them."""
        keys = self.keys_of_name(name)
        call_keys = [keys.limits(name), keys.starts(name), keys.names, keys.queue(name)]
        count, window = ("", "") if rate is None else (str(rate[0]), encode(rate[1] * 1000))
        most = "" if concurrency is None else str(concurrency)
        return self._limit, call_keys, [name, count, window, most, self.keys.wake(name)]

    def pending(self, names: Sequence[str], now_ms: int) -> tuple[int, int, int]:
        """How many jobs of `names` are queued, due by `now_ms` (delayed, retry or ghost) and
        processing: one read-only script call per partition, each a consistent snapshot (the
        jobs of a name never leave its partition, so no job is missed between two calls)."""
        calls: list[ScriptCall] = []
        for group in self.claim_groups(names):
            keys = self.keys_of_name(group[0])
            call_keys = [keys.scheduled, keys.processing, *(keys.queue(name) for name in group)]
            calls.append((self._pending, call_keys, [now_ms, keys.job_prefix, *group]))
        totals = [0, 0, 0]
        for reply in self.run_all(calls):
            totals = [total + int(count) for total, count in zip(totals, reply, strict=True)]
        return totals[0], totals[1], totals[2]

    def stats_call(
        self, names: Sequence[str], now_minute: int, band: int, bands: int
    ) -> ScriptCall:
        """The call reading what `kickq.stats()` reports of `names`, which must share a
        partition, their queues' scores being in `bands` priority bands `band` wide (see
        scripts/stats.lua; `_stats` decodes its reply)."""
        keys = self.keys_of_name(names[0])
        shapes = [keys.index(state, _MARK) for state in SEEN_STATES]
        shapes += [keys.minutes(_MARK), keys.times(_MARK), keys.limits(_MARK)]
        affixes = [part for shape in shapes for part in shape.rsplit(_MARK, 1)]
        args = [now_minute, keys.job_prefix, band, bands, len(SEEN_STATES), *affixes, *names]
        return self._stats, [keys.paused], args
