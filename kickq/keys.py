"""The key schema: every Redis key and pub/sub channel kickq uses, built from the namespace.

<ns>:job:<id>        hash   the job record (see job.py for its fields)
<ns>:queue:<name>    list   ids of queued jobs of one name, oldest at the right
<ns>:scheduled       zset   delayed, retry and ghost jobs, scored by when they are due (ms)
<ns>:processing      zset   running jobs, scored by their run's deadline (ms)
<ns>:finished        zset   completed jobs, scored by when they are purged (ms)
<ns>:damaged:<id>    hash   a record that could not be decoded, moved aside with its error

<ns>:<event>         channel  create, queued, success, fail, delete: the job as JSON
<ns>:done:<id>       channel  the finished job as JSON, or "" when it was deleted
<ns>:wake:<name>     channel  empty message: a queue of that name stopped being empty
"""

from __future__ import annotations

import attrs

EVENTS = ("create", "queued", "success", "fail", "delete")


@attrs.frozen
class Keys:
    namespace: str

    @property
    def job_prefix(self) -> str:
        return f"{self.namespace}:job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def queue(self, name: str) -> str:
        return f"{self.namespace}:queue:{name}"

    @property
    def scheduled(self) -> str:
        return f"{self.namespace}:scheduled"

    @property
    def processing(self) -> str:
        return f"{self.namespace}:processing"

    @property
    def finished(self) -> str:
        return f"{self.namespace}:finished"

    @property
    def damaged_prefix(self) -> str:
        return f"{self.namespace}:damaged:"

    def damaged(self, job_id: str) -> str:
        return self.damaged_prefix + job_id

    def event(self, event: str) -> str:
        return f"{self.namespace}:{event}"

    def done(self, job_id: str) -> str:
        return f"{self.namespace}:done:{job_id}"

    def wake(self, name: str) -> str:
        return f"{self.namespace}:wake:{name}"

    def pattern(self) -> str:
        """Matches every key kickq owns in this namespace (for tests and tools)."""
        return f"{self.namespace}:*"
