"""The `kickq` command and jobs created with `after=`: the state `deferred` in listings, stats
and help, `kickq show` with the parents, what is still awaited and the parents' results, and
the commands a deferred job takes (cancel, delete) or refuses (promote). Called in this
process, as test_cli_ops_main.py does."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import kickq
from kickq.cli import commands as cli
from kickq.cli import output as out
from support import succeeded, wait_until

Run = Callable[..., str]


@pytest.fixture
def run(redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """cli.main(args) on the test's Redis, which must succeed; returns what it printed."""
    monkeypatch.delenv("COLUMNS", raising=False)

    def run(*args: str) -> str:
        capsys.readouterr()
        status = cli.main([*args, "--redis-url", redis_url])
        captured = capsys.readouterr()
        assert status == 0, captured.err
        assert captured.err == ""
        kickq.config(redis_url=redis_url)
        return captured.out

    return run


def failure(redis_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main([*args, "--redis-url", redis_url])
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    kickq.config(redis_url=redis_url)
    return status, line


def table_rows(shown: str, ids: list[str]) -> dict[str, list[str]]:
    """The lines of a table that start with one of `ids`, split into words, by id."""
    rows = [line.split() for line in shown.splitlines() if line.strip()]
    return {row[0]: row for row in rows if row[0] in ids}


def test_jobs_and_stats_count_and_list_deferred_jobs(run: Run) -> None:
    later = kickq.create("dep-parent", delay=3600).result(5)
    child = kickq.create("dep-child", {"k": 1}, after=[later.id]).result(5)
    kickq.create("dep-child", {"k": 2}).result(5)  # queued: not listed as deferred

    [listed] = json.loads(run("jobs", "--state", "deferred", "--json"))
    assert (listed["id"], listed["state"], listed["awaiting"]) == (child.id, "deferred", [later.id])
    table = run("jobs", "--state", "deferred")
    assert table_rows(table, [child.id])[child.id][1:3] == ["dep-child", "deferred"]
    assert "jobs 1-1 of 1" in table

    counts = json.loads(run("stats", "--json"))["dep-child"]["counts"]
    assert (counts["deferred"], counts["queued"]) == (1, 1)
    rows = [line.split() for line in run("stats").splitlines() if line.strip()]
    heading = next(row for row in rows if row[0] == "name" and "queued" in row)
    [mine] = [row for row in rows if row[0] == "dep-child" and len(row) == len(heading)]
    assert dict(zip(heading, mine, strict=True))["deferred"] == "1"


@pytest.mark.parametrize("command", ["jobs", "delete"])
def test_help_lists_the_deferred_state(
    command: str, run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "queued, delayed, deferred, processing, retry, ghost, success, fail" in shown


def test_show_prints_the_parents_what_is_awaited_and_the_results(run: Run) -> None:
    big = {"rows": ["x" * 50] * 20}
    done = succeeded("dep-parent", big)
    later = kickq.create("dep-parent", delay=3600).result(5)
    child = kickq.create("dep-child", after=[done.id, later.id]).result(5)

    fields = json.loads(run("show", child.id, "--json"))
    assert fields["parents"] == [done.id, later.id]
    assert fields["parent_results"] == {done.id: big}  # whole, in JSON
    assert (fields["awaiting"], fields["after_failed"]) == ([later.id], "fail")

    shown = run("show", child.id)
    assert "2: 1 succeeded, 1 awaited" in shown
    rows = table_rows(shown, [done.id, later.id])
    assert rows[later.id][1:] == ["awaited", "-"]
    assert rows[done.id][1] == "succeeded"
    assert " ".join(rows[done.id][2:]).startswith('{"rows": ["xxxx')
    assert rows[done.id][-1].endswith("...")  # cut, on one line
    assert "x" * 60 not in shown

    plain = kickq.create("dep-plain").result(5)  # no parents: nothing about them in words
    assert "parents" not in run("show", plain.id) and "after_failed" not in run("show", plain.id)
    fields = json.loads(run("show", plain.id, "--json"))
    assert (fields["parents"], fields["parent_results"], fields["awaiting"]) == ([], {}, [])


def test_show_lists_the_first_parents_and_counts_the_others(run: Run) -> None:
    parents = [f.result(5) for f in kickq.create_many("dep-parent", [None] * 25, delay=3600)]
    child = kickq.create("dep-child", after=[p.id for p in parents]).result(5)
    shown = run("show", child.id)
    assert "25: 25 awaited" in shown
    assert list(table_rows(shown, [p.id for p in parents])) == [
        p.id for p in parents[: out.SHOWN_PARENTS]
    ]
    assert f"and 5 more parents (kickq show {child.id} --json lists them all)" in shown
    assert len(json.loads(run("show", child.id, "--json"))["parents"]) == 25


def test_a_child_failed_by_its_parent_shows_why(run: Run) -> None:
    worker = kickq.process("dep-bad", lambda job, data: 1 / 0)
    try:
        bad = kickq.create("dep-bad", retry=False).result(5)
        later = kickq.create("dep-parent", delay=3600).result(5)
        child = kickq.create("dep-child", after=[bad.id, later.id]).result(5)
        wait_until(lambda: kickq.get(child.id).result(5).complete, 10, what="the child failed")
    finally:
        worker.stop(5)
    fields = json.loads(run("show", child.id, "--json"))
    assert (fields["state"], fields["last_error"]) == ("fail", f"parent {bad.id} failed")
    assert fields["awaiting"] == []  # a failed job awaits nothing
    shown = run("show", child.id)
    assert f"parent {bad.id} failed" in shown and "2: 2 no result" in shown
    rows = table_rows(shown, [bad.id, later.id])
    assert rows[bad.id][1:] == rows[later.id][1:] == ["no", "result", "-"]


def test_a_deferred_job_is_cancelled_or_deleted_never_promoted(
    run: Run, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    later = kickq.create("dep-parent", delay=3600).result(5)
    first, second, third = (
        kickq.create("dep-child", n, after=[later.id]).result(5) for n in range(3)
    )
    status, line = failure(redis_url, capsys, "promote", first.id)
    assert status == 1
    assert line == (
        f"kickq promote: job {first.id} is deferred: it awaits its parents (after=) and is "
        "queued once they have all succeeded, so it cannot be promoted"
    )
    assert kickq.get(first.id).result(5).state is kickq.State.DEFERRED

    assert run("cancel", first.id) == f"cancelled {first.id}\n"
    cancelled = json.loads(run("show", first.id, "--json"))
    assert (cancelled["state"], cancelled["last_error"]) == ("fail", "cancelled")
    assert run("delete", second.id) == f"deleted {second.id}\n"
    assert run("delete", "--name", "dep-child", "--state", "deferred") == (
        "deleted 1 job of dep-child (deferred)\n"
    )
    with pytest.raises(kickq.JobNotFound):
        kickq.get(third.id).result(5)
    assert kickq.get(later.id).result(5).state is kickq.State.DELAYED
