"""The inspect and repair commands run as a child process against the test's Redis: stats
(and --watch), workers, jobs, schedules, requeue, delete by name and state, pause, resume; their
JSON with the API's field names, bad usage and an unreachable Redis."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import attrs
import pytest
from test_cli import API_FIELDS, UNREACHABLE, kickq_cli, one_line

import kickq
from support import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

STATS_FIELDS = {field.name for field in attrs.fields(kickq.NameStats)}


def run_json(*args: str, env: dict[str, str]) -> Any:
    done = kickq_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


def run_table(*args: str, env: dict[str, str]) -> str:
    done = kickq_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def fail_for_good(name: str, count: int) -> list[kickq.Job]:
    """`count` jobs of `name` that failed for good (no retries), their worker stopped."""
    jobs = [kickq.create(name, {"n": n}, retry=False).result(5) for n in range(count)]
    worker = kickq.process(name, lambda job, data: 1 / 0)
    wait_until(lambda: kickq.jobs(name=name, state="fail").count().result(5) == count, 20)
    worker.stop(5)
    return jobs


def succeed(name: str, count: int) -> None:
    for n in range(count):
        kickq.create(name, {"n": n}).result(5)
    worker = kickq.process(name, lambda job, data: data["n"])
    wait_until(lambda: kickq.jobs(name=name, state="success").count().result(5) == count, 20)
    worker.stop(5)


@pytest.mark.both_backends
def test_stats(subprocess_env: dict[str, str]) -> None:
    """stats --json is kickq.stats() with its field names; the table shows every name, its
    counts, the paused mark and how many completed."""
    succeed("ops-mail", 3)
    fail_for_good("ops-mail", 1)
    kickq.create("ops-idle", {"k": 1}).result(5)
    kickq.pause("ops-idle").result(5)

    found = run_json("stats", env=subprocess_env)
    expected = kickq.stats().result(10)
    assert set(found) == set(expected) == {"ops-mail", "ops-idle"}
    for name, stats in found.items():
        assert set(stats) == STATS_FIELDS
        assert stats["counts"] == dict(expected[name].counts)
        assert stats["paused"] is expected[name].paused
    mail, idle = found["ops-mail"], found["ops-idle"]
    assert mail["counts"]["success"] == 3 and mail["counts"]["fail"] == 1
    assert len(mail["finished_per_minute"]) == 60
    assert set(mail["finished_per_minute"][-1]) == {"minute", "succeeded", "failed"}
    assert sum(m["succeeded"] for m in mail["finished_per_minute"]) == 3
    assert sum(m["failed"] for m in mail["finished_per_minute"]) == 1
    assert set(mail["process_time"]) == {"p50", "p95", "max"}
    assert mail["oldest_queued_age"] is None and mail["paused"] is False
    assert idle["paused"] is True and idle["counts"]["queued"] == 1
    assert idle["oldest_queued_age"] >= 0 and idle["process_time"] is None
    datetime.datetime.fromisoformat(mail["finished_per_minute"][0]["minute"])

    table = run_table("stats", env=subprocess_env)
    assert "ops-idle (paused)" in table and "3 ok, 1 failed" in table
    row = next(line for line in table.splitlines() if line.strip().startswith("ops-mail "))
    assert row.split()[1:] == ["0", "0", "0", "0", "0", "0", "3", "1"]  # deferred: the third


def test_stats_on_an_empty_namespace(subprocess_env: dict[str, str]) -> None:
    """With no job yet, stats says so (and --json is an empty object)."""
    assert run_json("stats", env=subprocess_env) == {}
    assert "no jobs yet" in run_table("stats", env=subprocess_env)


def watch(tmp_path: pathlib.Path, env: dict[str, str], *args: str) -> Any:
    """`kickq stats --watch ...` started with its stdout in a file: (process, output)."""
    output = tmp_path / "watch.out"
    with output.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "kickq", "stats", "--watch", "--interval", "0.2", *args],
            env=env,
            stdout=stream,
            stderr=subprocess.PIPE,
            text=True,
        )
    return process, output


def stop_watch(process: subprocess.Popen[str]) -> None:
    """Ctrl-C ends a watch: exit 0 and nothing on stderr."""
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=15)
    assert process.returncode == 0, errors
    assert errors == ""


def test_stats_watch_json_reads_again_until_ctrl_c(
    tmp_path: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """--watch --json prints one JSON line per reading, and sees a job created meanwhile."""
    kickq.create("ops-watch").result(5)
    process, output = watch(tmp_path, subprocess_env, "--json")
    try:

        def readings() -> list[Any]:
            return [json.loads(line) for line in output.read_text().splitlines()]

        wait_until(lambda: len(readings()) >= 1, 20, what="a first reading")
        kickq.create("ops-watch").result(5)
        wait_until(
            lambda: readings()[-1]["ops-watch"]["counts"]["queued"] == 2, 20, what="a new count"
        )
        assert readings()[0]["ops-watch"]["counts"]["queued"] == 1
    finally:
        stop_watch(process)


def test_stats_watch_tables_follow_one_another_when_piped(
    tmp_path: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """Piped, --watch prints each reading after the last, each headed by its time."""
    kickq.create("ops-watch").result(5)
    process, output = watch(tmp_path, subprocess_env)
    try:
        wait_until(lambda: output.read_text().count("\n-- ") >= 1, 20, what="two readings")
    finally:
        stop_watch(process)
    assert output.read_text().count("ops-watch") >= 2


def test_workers(subprocess_env: dict[str, str]) -> None:
    """workers lists the live workers of every process: --json with WorkerInfo's fields."""
    worker = kickq.process(["ops-a", "ops-b"], lambda job, data: None, concurrent_jobs=3)
    wait_until(lambda: kickq.workers().result(5), 20, what="the heartbeat")

    [found] = run_json("workers", env=subprocess_env)
    assert set(found) == {field.name for field in attrs.fields(kickq.WorkerInfo)}
    assert (found["id"], found["pid"], found["names"]) == (
        worker.id,
        os.getpid(),
        ["ops-a", "ops-b"],
    )
    assert (found["concurrent_jobs"], found["running"]) == (3, 0)
    assert datetime.datetime.fromisoformat(found["last_seen"]).tzinfo is not None

    table = run_table("workers", env=subprocess_env)
    assert worker.id in table and "ops-a,ops-b" in table and "1 live worker" in table
    worker.stop(5)


@pytest.mark.both_backends
def test_jobs(subprocess_env: dict[str, str]) -> None:
    """jobs lists by name and state, newest first, a page at a time; --json is a list of jobs
    with the API's field names (test_cli_ops_main.py tries the options further)."""
    queued = [kickq.create("ops-list", {"n": n}).result(5) for n in range(3)]
    kickq.create("ops-other", {"n": 9}).result(5)

    page = run_json(
        *("jobs", "--name", "ops-list", "--state", "queued", "--limit", "1", "--offset", "1"),
        env=subprocess_env,
    )
    assert [job["id"] for job in page] == [queued[1].id]
    assert set(page[0]) == API_FIELDS and page[0]["data"] == {"n": 1}

    table = run_table("jobs", "--name", "ops-list", "--limit", "2", env=subprocess_env)
    assert queued[2].id in table and queued[1].id in table and queued[0].id not in table
    assert "jobs 1-2 of 3" in table


def test_requeue(subprocess_env: dict[str, str]) -> None:
    """requeue ID queues a job that failed for good again (--json: the job); a job that has not
    failed for good exits 1; --name requeues every such job of the names."""
    first, second = fail_for_good("ops-requeue", 2)

    job = run_json("requeue", first.id, env=subprocess_env)
    assert set(job) == API_FIELDS
    assert (job["id"], job["state"], len(job["runs"])) == (first.id, "queued", 1)
    assert kickq.get(first.id).result(5).state is kickq.State.QUEUED

    again = kickq_cli("requeue", first.id, env=subprocess_env)
    assert again.returncode == 1
    assert "has not failed for good" in one_line(again)

    assert run_json("requeue", "--name", "ops-requeue", env=subprocess_env) == {
        "name": ["ops-requeue"],
        "requeued": 1,
    }
    assert kickq.get(second.id).result(5).state is kickq.State.QUEUED


@pytest.mark.both_backends
def test_delete_by_name_and_state(subprocess_env: dict[str, str]) -> None:
    """delete --name --state deletes those jobs only, and says how many."""
    succeed("ops-del", 2)
    [failed] = fail_for_good("ops-del", 1)
    kept = kickq.create("ops-del").result(5)
    other = kickq.create("ops-keep").result(5)

    deleted = run_json("delete", "--name", "ops-del", "--state", "success,fail", env=subprocess_env)
    assert deleted == {"name": ["ops-del"], "state": ["success", "fail"], "deleted": 3}
    with pytest.raises(kickq.JobNotFound):
        kickq.get(failed.id).result(5)
    assert kickq.get(kept.id).result(5).state is kickq.State.QUEUED
    assert kickq.get(other.id).result(5).state is kickq.State.QUEUED


def test_pause_and_resume(subprocess_env: dict[str, str]) -> None:
    """pause and resume change the name's paused flag, and say whether they changed it."""
    kickq.create("ops-p", 1).result(5)  # a name no job ever had is refused (see test_cli_verbs)
    paused = run_json("pause", "ops-p", env=subprocess_env)
    assert paused == {"name": "ops-p", "paused": True, "changed": True}
    assert kickq.stats().result(5)["ops-p"].paused is True
    assert run_table("resume", "ops-p", env=subprocess_env).strip() == "resumed ops-p"
    assert kickq.stats().result(5)["ops-p"].paused is False


def test_schedules(subprocess_env: dict[str, str]) -> None:
    """schedules lists the schedules: --json with Schedule's field names, every in seconds."""
    kickq.schedule("ops-report", {"kind": "daily"}, cron="0 9 * * MON-FRI", tz="Europe/Athens")
    kickq.schedule("ops-ping", every=datetime.timedelta(minutes=5), key="ping-5m", priority=7)
    wait_until(lambda: len(kickq.schedules().result(5)) == 2, 10)

    found = run_json("schedules", env=subprocess_env)
    assert all(set(item) == {f.name for f in attrs.fields(kickq.Schedule)} for item in found)
    by_key = {item["key"]: item for item in found}
    ping, report = by_key["ping-5m"], by_key["ops-report"]
    assert (ping["name"], ping["every"], ping["cron"], ping["options"]) == (
        "ops-ping",
        300.0,
        None,
        {"priority": 7},
    )
    assert (report["cron"], report["tz"], report["data"]) == (
        "0 9 * * MON-FRI",
        "Europe/Athens",
        {"kind": "daily"},
    )
    assert datetime.datetime.fromisoformat(report["next_time"]).tzinfo is not None

    table = run_table("schedules", env=subprocess_env)
    assert "cron 0 9 * * MON-FRI (Europe/Athens)" in table and "every 5m00s" in table
    assert "2 schedules" in table


@pytest.mark.parametrize(
    "args",
    [
        ["stats", "--watch", "--interval", "0"],
        ["workers", "--limit", "3"],
        ["jobs", "--state", "done"],
        ["schedules", "--name", "a"],
        ["requeue"],
        ["delete", "--name", "a"],
        ["pause"],
        ["resume", "a", "--namespace", "a{b}"],
    ],
)
def test_bad_usage_exits_2_with_one_line(args: list[str], subprocess_env: dict[str, str]) -> None:
    """A missing or extra argument, a bad value or a bad combination exits 2, in one line
    (test_cli_ops_main.py tries many more)."""
    done = kickq_cli(*args, env=subprocess_env)
    assert done.returncode == 2
    assert one_line(done).startswith("kickq")


@pytest.mark.parametrize(
    "args",
    [
        ["stats"],
        ["stats", "--watch"],
        ["workers"],
        ["jobs", "--name", "a"],
        ["schedules"],
        ["requeue", "0" * 32],
        ["delete", "--name", "a", "--state", "fail"],
        ["pause", "a"],
        ["resume", "a"],
    ],
)
def test_unreachable_redis_exits_1_with_one_line(
    args: list[str], subprocess_env: dict[str, str]
) -> None:
    """A Redis that cannot be reached exits 1 with one line naming it."""
    done = kickq_cli(*args, "--redis-url", UNREACHABLE, env=subprocess_env)
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(f"kickq {args[0]}: ")
    assert "127.0.0.1:1" in line and "cannot be reached" in line
