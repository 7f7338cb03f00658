"""The key schema: every Redis key and pub/sub channel kickq uses, built from the namespace.

<ns>:job:<id>          hash   the job record (see record.py for its fields)
<ns>:queue:{<name>}    zset   ids of queued jobs of one name, the next to claim lowest:
                              (9 - priority) * 1e14, plus one more than the last queued
                              with that priority (first in, first out within a priority)
<ns>:unique:<digest>   string the id of the job holding a unique key (sha256 of name and key)
<ns>:scheduled         zset   delayed, retry and ghost jobs, scored by when they are due (ms);
                              and the hand-over notices of `after=` ("link:<id>", "end:<id>":
                              see _engine/dependencies.py), scored by when any process may
                              take them
<ns>:processing        zset   running jobs, scored by their run's deadline (ms)
<ns>:finished          zset   completed jobs, scored by when they are purged (ms)
<ns>:children:<id>     set    the ids of the deferred jobs that await job <id> (its `after=`
                              children), while it is not complete; its record's field
                              `children` says it has some
<ns>:handover          hash   "end:<id>" -> how job <id>, a parent, ended, as JSON, until every
                              child heard it
<ns>:damaged:<id>      hash   a record that could not be decoded, moved aside with its error
<ns>:state:<state>:{<name>}  zset  ids of the jobs of one name in one state, scored by their
                              update time (µs): delayed, deferred, processing, retry, ghost,
                              success, fail. Queued jobs are indexed by their queue. Kept by
                              the same script that changes the state: counts are ZCARDs, a
                              page a range
<ns>:names             set    every job name that has had a job (or was paused)
<ns>:paused            set    paused job names: the claim script starts no run of them
<ns>:minutes:{<name>}  hash   jobs of one name completed per minute: 60 fields, one per
                              minute of the hour, "<epoch minute>:<succeeded>:<failed>"
<ns>:times:{<name>}    list   the process times (s) of the last RUN_TIMES runs of one name
<ns>:workers           hash   live workers: worker id -> its info as JSON, with last_seen
<ns>:next_due          string the last deadline published on <ns>:timers (ms): see
                              `announce` in scripts/lib.lua
<ns>:fenced            zset   ids of jobs whose create's reply was lost and that were not
                              saved, scored by when the fence ends (ms): create.lua saves
                              none of them (see scripts/settle.lua); expires when unused
<ns>:schedules         hash   repeatable jobs: schedule key -> the schedule as JSON
<ns>:schedule_times    zset   schedule keys, scored by their next tick (ms)
<ns>:limits:{<name>}   hash   the limits of one name, obeyed by every claim: rate_count and
                              rate_ms (at most rate_count runs start in any rate_ms), and
                              concurrency (at most that many in processing at once)
<ns>:starts:{<name>}   zset   the runs of one name started within its rate window,
                              "<id>:<run count>" scored by their start (µs); expires when idle
<ns>:claim:<worker id> string "void:<token>": a claim whose reply was lost and that started
                              nothing, so that it starts nothing if it reaches Redis later;
                              written only then, gone after a minute (see reclaim.lua)

<ns>:<event>           channel  create, queued, success, fail, delete, progress: the job as
                                JSON (progress: with the value reported, see
                                scripts/progress.lua)
<ns>:done:<id>         channel  the finished job as JSON; "" when it was deleted, "damaged"
                                when its record was moved aside; "progress:<id>:<n>:<value>"
                                (the report's number, the value's JSON) for each progress
                                its run reports
<ns>:reply:<token>     channel  one per process (a new token after fork), named in the
                                `reply_to` field of the hotjobs it created: the finished job
                                as JSON, "deleted:<id>", "damaged:<id>" or
                                "progress:<id>:<n>:<value>". The process subscribes it once, not
                                once per hotjob
<ns>:wake:{<name>}     channel  empty message: a queue of that name stopped being empty, or
                                a run of it ended while a concurrency limit held jobs back
<ns>:timers            channel  a deadline (ms) that every process's timer must know of
<ns>:cancel            channel  a running job was cancelled: the job as JSON (the worker that
                                holds its run stops it)

Two namespaces never share a key or a channel, whatever their names and the job names, even
when one namespace extends another ("app" and "app:queue"): a namespace holds no brace, job
names stand inside braces, and ids are the 32 hex digits kickq makes (see `is_job_id`). So the
text after "<ns>:" of one namespace's key can never read as "<more>:<key>" of another's.

On a Redis Cluster the jobs are split into PARTITIONS by the crc32 of their name, and the keys
of partition p carry the hash tag {p} (one hex digit) after the namespace: <ns>:{p}:job:<id>,
<ns>:{p}:queue:{<name>}, <ns>:{p}:scheduled and so on. Every script then touches one slot
(Redis hashes the first braces of a key), while the job names spread over the shards. A job's
id starts with its partition's digit, so its key is known from the id alone. Channels are not
keys and stay the same. The two schedule keys live in partition 0, so that one script sees
every schedule; the job a tick creates goes to its own name's partition.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import zlib

import attrs

EVENTS = ("create", "queued", "success", "fail", "delete", "progress")
STATE_EVENTS = EVENTS[:5]  # those published when a job changes state (or goes)
# before the waiters' message of a progress report: no other message on a done or reply channel
# starts so (a job's JSON starts with "{", the others are "", "damaged", "deleted:<id>" and
# "damaged:<id>"), and a job id holds no ":"
PROGRESS_PREFIX = "progress:"
# the states a job can be seen in, in the order people read them; "new" is never stored
SEEN_STATES = (
    "queued",
    "delayed",
    "deferred",
    "processing",
    "retry",
    "ghost",
    "success",
    "fail",
)
RUN_TIMES = 1000  # run process times kept per name, for the stats' percentiles
PRIORITY_BANDS = 10  # a queue's scores: (9 - priority) * BAND, plus the place in the band
BAND = 100_000_000_000_000  # 1e14, the scores of one priority (see `next_score`, scripts/lib.lua)
PARTITIONS = 16  # on a Redis Cluster; one hex digit each
HANDOVER_LEASE_MS = 1000
"""How long a hand-over notice taken by a process is left to it (see _engine/dependencies.py):
a notice whose taker died is taken again by another process after that long."""
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def progress_message_head(job_id: str) -> str:
    """The start of the message a progress report of job `job_id` sends its waiters, on its
    done and reply channels: scripts/progress.lua adds the report's number and its value,
    "progress:<id>:<number>:<value JSON>" (see `read_progress_message`)."""
    return f"{PROGRESS_PREFIX}{job_id}:"


def read_progress_message(payload: str) -> tuple[str, int, str] | None:
    """The job id, the report's number (the record's `progress_seq`, one more for each report
    Redis kept) and the value's JSON of a progress message; None for any other message."""
    if not payload.startswith(PROGRESS_PREFIX):
        return None
    job_id, _, rest = payload[len(PROGRESS_PREFIX) :].partition(":")
    number, colon, value_json = rest.partition(":")
    if not colon or not number.isdigit():
        return None
    return job_id, int(number), value_json


def is_job_id(text: str) -> bool:
    """True for an id kickq could have made: only such an id is ever part of a key."""
    return _JOB_ID.fullmatch(text) is not None


def partition_of_name(name: str) -> int:
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % PARTITIONS


def partition_of_id(job_id: str) -> int:
    """The partition a job id was made in; any partition for an id kickq did not make."""
    first = job_id[:1]
    return int(first, 16) if first and first in string.hexdigits else 0


@attrs.frozen
class Keys:
    namespace: str
    partition: int | None = None  # on a Redis Cluster: the partition whose keys these are
    # the start of every key, made once: keys are built on every state change
    _prefix: str = attrs.field(init=False, repr=False, eq=False)

    @_prefix.default
    def _make_prefix(self) -> str:
        if self.partition is None:
            return f"{self.namespace}:"
        return f"{self.namespace}:{{{self.partition:x}}}:"

    @property
    def job_prefix(self) -> str:
        return f"{self._prefix}job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def queue(self, name: str) -> str:
        return f"{self._prefix}queue:{{{name}}}"

    @property
    def queue_affixes(self) -> tuple[str, str]:
        """What stands before and after a job name in its queue's key (for a script)."""
        return f"{self._prefix}queue:{{", "}"

    def unique(self, name: str, unique_key: str) -> str:
        """The lock of a unique key: a digest, so that no name or key can look like another."""
        text = json.dumps([name, unique_key], ensure_ascii=False)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{self._prefix}unique:{digest}"

    def index(self, state: str, name: str) -> str:
        """The ids of the jobs of `name` in `state`: the queue itself for queued jobs."""
        if state == "queued":
            return self.queue(name)
        return f"{self._prefix}state:{state}:{{{name}}}"

    @property
    def index_prefix(self) -> str:
        """What stands before "<state>:{<name>}" in an index key (for a script)."""
        return f"{self._prefix}state:"

    @property
    def names(self) -> str:
        return f"{self._prefix}names"

    @property
    def paused(self) -> str:
        return f"{self._prefix}paused"

    def minutes(self, name: str) -> str:
        return f"{self._prefix}minutes:{{{name}}}"

    def times(self, name: str) -> str:
        return f"{self._prefix}times:{{{name}}}"

    def limits(self, name: str) -> str:
        return f"{self.limits_prefix}{name}}}"

    @property
    def limits_prefix(self) -> str:
        """What stands before a job name in its limits key (which ends with "}"; for a script)."""
        return f"{self._prefix}limits:{{"

    def starts(self, name: str) -> str:
        return f"{self._prefix}starts:{{{name}}}"

    def claim(self, worker_id: str) -> str:
        return f"{self._prefix}claim:{worker_id}"

    @property
    def next_due(self) -> str:
        return f"{self._prefix}next_due"

    @property
    def fenced(self) -> str:
        return f"{self._prefix}fenced"

    @property
    def timers(self) -> str:
        """The channel of deadlines every process's timer must know of (not a key)."""
        return f"{self.namespace}:timers"

    @property
    def workers(self) -> str:
        return f"{self._prefix}workers"

    @property
    def scheduled(self) -> str:
        return f"{self._prefix}scheduled"

    @property
    def processing(self) -> str:
        return f"{self._prefix}processing"

    @property
    def finished(self) -> str:
        return f"{self._prefix}finished"

    @property
    def schedules(self) -> str:
        return f"{self._prefix}schedules"

    @property
    def schedule_times(self) -> str:
        return f"{self._prefix}schedule_times"

    def children(self, job_id: str) -> str:
        return f"{self._prefix}children:{job_id}"

    @property
    def handover(self) -> str:
        return f"{self._prefix}handover"

    @property
    def damaged_prefix(self) -> str:
        return f"{self._prefix}damaged:"

    def damaged(self, job_id: str) -> str:
        return self.damaged_prefix + job_id

    def event(self, event: str) -> str:
        return f"{self.namespace}:{event}"

    def done(self, job_id: str) -> str:
        return f"{self.namespace}:done:{job_id}"

    def reply(self, token: str) -> str:
        """The reply channel of one process's hotjobs (see the table above)."""
        return f"{self.namespace}:reply:{token}"

    def wake(self, name: str) -> str:
        return f"{self.wake_prefix}{name}}}"

    @property
    def wake_prefix(self) -> str:
        """What stands before a job name in its wake channel (which ends with "}")."""
        return f"{self.namespace}:wake:{{"

    @property
    def cancel(self) -> str:
        return f"{self.namespace}:cancel"
