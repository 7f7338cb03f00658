"""The only module that talks to Redis about `after=`: the hand-over's notices and the parents'
adoption of their children (see _engine/dependencies.py for the protocol).

A parent and its child may live in different partitions of a Redis Cluster: every call here
touches the keys of one partition, and a step that concerns both is two calls, each of them
safe to make again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from kickq._redis.keys import partition_of_id
from kickq._redis.lua import Each, Shape
from kickq._redis.runner import ScriptCall
from kickq._redis.store import Store

ADOPT = Shape("adopt", keys=(Each("parents", ("job", "children")),), args=("child",))
TAKE = Shape(
    "handover_take",
    keys=("scheduled", "handover"),
    args=("now_ms", "lease_ms", "children_prefix", Each("notices", ("notice",))),
)
DONE = Shape(
    "handover_done",
    keys=("scheduled", "handover", "children"),
    args=("notice", Each("heard", ("child",))),
)
END, LINK = "end:", "link:"
"""The two kinds of notice: a parent ended ("end:<parent id>"); a deferred job was saved and its
parents do not know it yet ("link:<child id>")."""


def is_notice(member: str) -> bool:
    """Whether a member of the scheduled zset is a hand-over notice rather than a job id."""
    return member.startswith((END, LINK))


def notice_job(notice: str) -> str:
    """The id of the job a notice is about: the parent of an "end:", the child of a "link:"."""
    return notice.partition(":")[2]


@attrs.frozen
class Taken:
    """A notice this process took: for "end:<id>", how the parent ended (JSON) and its
    children; for "link:<id>", nothing more."""

    notice: str
    told: str
    children: tuple[str, ...]


class DependencyStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        client = store.client
        self._adopt = ADOPT.register(client)
        self._take = TAKE.register(client)
        self._done = DONE.register(client)

    def take(self, notices: Sequence[str], now_ms: int, lease_ms: int) -> list[Taken]:
        """Take the notices still due (see scripts/handover_take.lua), each left to this
        process for `lease_ms`."""
        store = self._store
        groups: dict[int, list[str]] = {}
        for notice in notices:
            part = partition_of_id(notice_job(notice)) if store.cluster else 0
            groups.setdefault(part, []).append(notice)
        calls: list[ScriptCall] = []
        for notices_of_one in groups.values():
            keys = store.keys_of(notice_job(notices_of_one[0]))
            call_keys = TAKE.keys(scheduled=keys.scheduled, handover=keys.handover)
            args = TAKE.args(
                now_ms=now_ms,
                lease_ms=lease_ms,
                children_prefix=keys.children(""),
                notices=notices_of_one,
            )
            calls.append((self._take, call_keys, args))
        return [
            Taken(str(notice), str(told), tuple(map(str, children)))
            for reply in store.run_all(calls)
            for notice, told, children in reply
        ]

    def adopt_calls(self, child: str, parents: Sequence[str]) -> list[ScriptCall]:
        """The calls telling `parents` of the deferred job `child`, one per partition (see
        scripts/adopt.lua); `adopted` reads their replies."""
        store = self._store
        groups: dict[int, list[str]] = {}
        for parent in parents:
            groups.setdefault(partition_of_id(parent) if store.cluster else 0, []).append(parent)
        calls: list[ScriptCall] = []
        for group in groups.values():
            keys = store.keys_of(group[0])
            flat = [key for parent in group for key in (keys.job(parent), keys.children(parent))]
            calls.append((self._adopt, ADOPT.keys(parents=flat), ADOPT.args(child=child)))
        return calls

    @staticmethod
    def adopted(
        calls: Sequence[ScriptCall], replies: Sequence[Sequence[str]]
    ) -> dict[str, tuple[str, str]]:
        """How each parent of `adopt_calls` stands: (outcome, result JSON) by its id."""
        told: dict[str, tuple[str, str]] = {}
        for (_, keys, _), reply in zip(calls, replies, strict=True):
            for i, job_key in enumerate(keys[::2]):
                parent = job_key.rpartition(":")[2]
                told[parent] = (str(reply[2 * i]), str(reply[2 * i + 1]))
        return told

    def done_calls(self, heard: Mapping[str, Sequence[str]]) -> list[ScriptCall]:
        """The calls removing notices (by notice, the children that heard it: for an "end:"
        notice, they leave its parent's set of children)."""
        calls: list[ScriptCall] = []
        for notice, children in heard.items():
            job_id = notice_job(notice)
            keys = self._store.keys_of(job_id)
            call_keys = DONE.keys(
                scheduled=keys.scheduled, handover=keys.handover, children=keys.children(job_id)
            )
            heard_it = list(children) if notice.startswith(END) else []
            calls.append((self._done, call_keys, DONE.args(notice=notice, heard=heard_it)))
        return calls
