"""Uniqueness: while a job with the same name and key is not complete, create() stores nothing
new and resolves to that job; the key is free again once it completes, is deleted or purged."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from typing import Any

import pytest

import kickq
from support import all_keys, wait_until

pytestmark = pytest.mark.both_backends


def stored_jobs(r: Any) -> int:
    return sum(1 for key in all_keys(r) if ":job:" in key)


def test_same_name_and_data_give_the_same_job(r: Any) -> None:
    """unique=True: equal data (whatever its dicts' key order) is one job; other data another."""
    first = kickq.create("report", {"day": 1, "kind": "x"}, unique=True).result(5)
    again = kickq.create("report", {"kind": "x", "day": 1}, unique=True).result(5)
    other = kickq.create("report", {"day": 2, "kind": "x"}, unique=True).result(5)
    elsewhere = kickq.create("summary", {"day": 1, "kind": "x"}, unique=True).result(5)
    assert again.id == first.id and again.unique_key == first.unique_key is not None
    assert len({first.id, other.id, elsewhere.id}) == 3
    assert stored_jobs(r) == 3
    plain = kickq.create("report", {"day": 1, "kind": "x"}).result(5)
    assert plain.id != first.id and plain.unique_key is None


def test_an_explicit_unique_key_implies_unique() -> None:
    """unique_key names the key (data aside) and makes the job unique; job.unique_key is it."""
    first = kickq.create("mail", {"to": "a"}, unique_key="welcome:7").result(5)
    again = kickq.create("mail", {"to": "b"}, unique_key="welcome:7").result(5)
    assert again.id == first.id and again.data == {"to": "a"}
    assert first.unique_key == "welcome:7"
    assert kickq.get(first.id).result(5).unique_key == "welcome:7"


def test_unique_cascades_like_any_per_job_option() -> None:
    """unique can be set globally and in job_flags."""
    kickq.config(job_flags={"dedup": {"unique": True}})
    assert kickq.create("dedup", 1).result(5).id == kickq.create("dedup", 1).result(5).id
    assert kickq.create("other", 1).result(5).id != kickq.create("other", 1).result(5).id
    kickq.config(unique=True)
    assert kickq.create("other", 2).result(5).id == kickq.create("other", 2).result(5).id


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"unique_key": ""}, id="empty-key"),
        pytest.param({"unique_key": 5}, id="int-key"),
        pytest.param({"unique": "yes"}, id="str-unique"),
    ],
)
def test_bad_uniqueness_options_fail_with_config_error(r: Any, options: dict[str, Any]) -> None:
    """An empty or non-str unique_key, or a unique that is not a bool, is a ConfigError."""
    with pytest.raises(kickq.ConfigError):
        kickq.create("bad-unique", None, options).result(5)
    assert stored_jobs(r) == 0


def test_the_key_is_free_again_after_success_failure_delete_and_purge() -> None:
    """Once the job holding a key succeeds, fails for good, is deleted or purged, the same
    unique create makes a new job."""
    kickq.process("ok", lambda job, data: data)
    kickq.process("ko", lambda job, data: 1 / 0)
    for name in ("ok", "ko"):
        held = kickq.create(name, "d", unique=True).result(5)
        with pytest.raises(kickq.JobFailed) if name == "ko" else contextlib.nullcontext():
            kickq.wait(held.id, timeout=5).result(10)
        assert kickq.create(name, "d", unique=True).result(5).id != held.id

    deleted = kickq.create("gone", "d", unique=True, delay=3600).result(5)
    assert kickq.create("gone", "d", unique=True).result(5).id == deleted.id
    assert kickq.delete(deleted.id).result(5)
    assert kickq.create("gone", "d", unique=True).result(5).id != deleted.id

    kickq.config(purge_timeout=0.2)
    kickq.process("purged", lambda job, data: data)
    old = kickq.create("purged", "d", unique_key="k").result(5)
    kickq.wait(old.id, timeout=5).result(10)
    wait_until(lambda: _gone(old.id), timeout=10, what="the purge")
    assert kickq.create("purged", "d", unique_key="k").result(5).id != old.id


def _gone(job_id: str) -> bool:
    return isinstance(kickq.get(job_id).exception(5), kickq.JobNotFound)


def test_a_hotjob_that_meets_a_held_key_waits_for_the_holder() -> None:
    """A unique hotjob resolving to an existing job gets that job's completion."""
    release = threading.Event()
    kickq.process("held", lambda job, data: release.wait(10) and "done")
    first = kickq.create("held", "d", unique=True).result(5)
    again = kickq.create("held", "d", unique=True, hotjob=True).result(5)
    assert again.id == first.id and again.hotjob_future is not None
    release.set()
    assert again.hotjob_future.result(10).result == "done"


CHILD = """
import json, sys, threading, kickq
go = threading.Barrier(25)
ids = []
def one():
    go.wait()
    ids.append(kickq.create("raced", {"same": True}, unique=True).result(20).id)
threads = [threading.Thread(target=one) for _ in range(25)]
kickq.get("warm-up").exception(20)  # connected, scripts about to be loaded
sys.stdin.readline()  # both processes start together
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(ids))
"""


def test_fifty_concurrent_creates_from_two_processes_give_one_job(
    r: Any, subprocess_env: dict[str, str]
) -> None:
    """The same unique job created 50 times at once, 25 from each of two processes: one job."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env=subprocess_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    ids: list[str] = []
    for child in children:
        out, _ = child.communicate(timeout=40)
        assert child.returncode == 0
        ids += json.loads(out.strip().splitlines()[-1])
    assert len(ids) == 50 and len(set(ids)) == 1
    assert stored_jobs(r) == 1
