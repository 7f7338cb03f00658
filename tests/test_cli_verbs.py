"""The commands of single jobs, schedules and limits through cli.main(): create, cancel,
promote, purge, unschedule and limit; and id prefixes wherever a command takes an ID."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

import kickq
from kickq import cli
from support import wait_until

Run = Callable[..., str]


@pytest.fixture(autouse=True)
def _command_line_env(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands on the test's Redis: a cluster is said in the environment, as for any
    kickq process, so that it outlives the reset() each command ends with."""
    monkeypatch.delenv("COLUMNS", raising=False)
    if backend == "cluster":
        monkeypatch.setenv("KICKQ_REDIS_CLUSTER", "1")


@pytest.fixture
def run(redis_url: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """cli.main(args) on the test's Redis, which must succeed; returns what it printed."""

    def run(*args: str) -> str:
        capsys.readouterr()
        status = cli.main([*args, "--redis-url", redis_url])
        captured = capsys.readouterr()
        assert status == 0, captured.err
        assert captured.err == ""
        kickq.config(redis_url=redis_url)
        return captured.out

    return run


Fail = Callable[..., tuple[int, str]]


@pytest.fixture
def fail(redis_url: str, capsys: pytest.CaptureFixture[str]) -> Fail:
    """The exit status and the one line on stderr of a command that fails."""

    def fail(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            status = cli.main([*args, "--redis-url", redis_url])
        except SystemExit as exc:  # argparse's usage errors
            status = int(str(exc.code))
        captured = capsys.readouterr()
        assert captured.out == ""
        [line] = captured.err.splitlines()
        kickq.config(redis_url=redis_url)
        return status, line

    return fail


def test_create_prints_the_new_id_with_its_options(run: Run) -> None:
    printed = run("create", "email", '{"to": "a@b.c"}', "--priority", "8", "--retry")
    job = kickq.get(printed.strip()).result(5)
    assert (job.name, job.data, job.priority, job.retry) == ("email", {"to": "a@b.c"}, 8, True)
    assert job.state is kickq.State.QUEUED


def test_create_delayed_with_meta_as_json(run: Run) -> None:
    printed = run("create", "email", "--delay", "60", "--meta", '{"by": "ops"}', "--json")
    fields = json.loads(printed)
    assert (fields["state"], fields["data"], fields["meta"]) == ("delayed", None, {"by": "ops"})
    assert kickq.get(fields["id"]).result(5).state is kickq.State.DELAYED


def test_create_at_a_time(run: Run) -> None:
    fields = json.loads(run("create", "email", "1", "--at", "2099-01-01T00:00:00", "--json"))
    assert fields["scheduled_for"].startswith("2099-01-01T00:00:00")


@pytest.mark.parametrize(
    "args",
    [
        ["create", "email", "{bad"],
        ["create", "email", "1", "--meta", "nope"],
        ["create", "email", "--priority", "10"],
        ["create", "email", "--delay", "-1"],
        ["create", "email", "--at", "tomorrow"],
        ["create", "email", "--meta", "[1]"],  # JSON, but refused by create()
        ["create", "", "1"],
    ],
)
def test_create_bad_input_is_usage_and_stores_nothing(fail: Fail, args: list[str]) -> None:
    status, line = fail(*args)
    assert status == 2
    assert line.startswith("kickq create: ")
    assert kickq.jobs().count().result(5) == 0


def test_cancel_and_promote(run: Run, fail: Fail) -> None:
    delayed = kickq.create("email", 1, delay=600).result(5)
    assert "promoted" in run("promote", delayed.id)
    assert kickq.get(delayed.id).result(5).state is kickq.State.QUEUED
    status, line = fail("promote", delayed.id)
    assert status == 1
    assert "is not waiting (it is queued)" in line
    assert run("cancel", delayed.id) == f"cancelled {delayed.id}\n"
    assert kickq.get(delayed.id).result(5).last_error == "cancelled"
    assert json.loads(run("cancel", delayed.id, "--json")) == {"id": delayed.id, "cancelled": False}
    assert fail("cancel", "0" * 32) == (1, f"kickq cancel: no job with id {'0' * 32!r}")
    assert fail("promote", "0" * 32)[0] == 1


def test_promote_a_job_waiting_to_retry(run: Run) -> None:
    job = kickq.create("flaky", 1, retry=True, retry_interval=600).result(5)
    worker = kickq.process("flaky", lambda job, data: 1 / 0)
    wait_until(lambda: kickq.get(job.id).result(5).state is kickq.State.RETRY, 20)
    worker.stop(5)
    fields = json.loads(run("promote", job.id, "--json"))
    assert (fields["id"], fields["state"]) == (job.id, "queued")


def test_kickq_promote_api() -> None:
    job = kickq.create("email", 1, delay=600).result(5)
    promoted = kickq.promote(job.id).result(5)
    assert promoted.state is kickq.State.QUEUED
    with pytest.raises(ValueError, match="not waiting"):
        kickq.promote(job.id).result(5)
    with pytest.raises(kickq.JobNotFound):
        kickq.promote("f" * 32).result(5)


def test_purge_deletes_finished_jobs_only(run: Run, fail: Fail) -> None:
    done = [kickq.create("email", n).result(5) for n in range(2)]
    worker = kickq.process("email", lambda job, data: data)
    wait_until(lambda: kickq.jobs(name="email", state="success").count().result(5) == 2, 20)
    worker.stop(5)
    waiting = kickq.create("email", 9).result(5)
    assert run("purge", "--name", "email") == "deleted 2 jobs of email (success, fail)\n"
    assert kickq.get(waiting.id).result(5).state is kickq.State.QUEUED
    with pytest.raises(kickq.JobNotFound):
        kickq.get(done[0].id).result(5)
    assert json.loads(run("purge", "--name", "email", "--state", "fail", "--json")) == {
        "name": ["email"],
        "state": ["fail"],
        "deleted": 0,
    }
    status, line = fail("purge", "--name", "email", "--state", "queued")
    assert status == 2
    assert "kickq delete --name email --state queued" in line
    assert fail("purge")[0] == 2


def test_unschedule(run: Run, fail: Fail) -> None:
    kickq.schedule("report", every=3600, key="nightly").result(5)
    assert run("unschedule", "nightly") == "unscheduled nightly\n"
    assert kickq.schedules().result(5) == []
    assert fail("unschedule", "nightly") == (1, "kickq unschedule: no schedule with key 'nightly'")


def test_limit_show_set_remove(run: Run, fail: Fail) -> None:
    kickq.create("email", 1).result(5)
    assert run("limit", "email") == "email: none\n"
    assert run("limit", "email", "--rate", "10/60", "--concurrency", "2") == (
        "limited email: 10 per 60 s, 2 at once\n"
    )
    assert json.loads(run("limit", "email", "--json")) == {
        "name": "email",
        "rate": [10, 60.0],
        "concurrency": 2,
    }
    assert kickq.stats().result(5)["email"].limits.concurrency == 2
    run("limit", "email", "--concurrency", "3")  # as kickq.limit(): the rate left out goes
    assert run("limit", "email") == "email: 3 at once\n"
    assert run("limit", "email", "--remove") == "removed the limits of email\n"
    assert not kickq.stats().result(5)["email"].limits.any
    assert fail("limit", "email", "--remove", "--concurrency", "1")[0] == 2
    assert fail("limit", "email", "--rate", "10")[0] == 2
    assert fail("limit", "email", "--rate", "0/60")[0] == 2


@pytest.mark.both_backends
def test_an_id_prefix_finds_the_one_job_it_starts(
    run: Run, fail: Fail, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = iter(["0abcdef12" + digit * 23 for digit in "1234"])
    monkeypatch.setattr("kickq._model.ids.new_id", lambda: next(made))
    one, two, three, four = (kickq.create("email", n, delay=600).result(5) for n in range(4))
    common = one.id[:9]  # on a cluster the first digit is the name's partition
    assert all(job.id.startswith(common) for job in (two, three, four))

    assert json.loads(run("show", one.id[:10], "--json"))["id"] == one.id
    assert json.loads(run("show", two.id[:10].upper(), "--json"))["id"] == two.id
    status, line = fail("show", common)
    assert status == 1
    assert line == (
        f"kickq show: {common!r} is the start of several job ids: "
        f"{one.id}, {two.id}, {three.id}, {four.id}"
    )
    assert fail("show", "ffff0000") == (1, "kickq show: no job with id 'ffff0000'")
    assert fail("show", "abc")[0] == 1  # too short to look for: an id as it is

    assert "promoted" in run("promote", one.id[:10])
    assert run("cancel", two.id[:10]) == f"cancelled {two.id}\n"
    assert "requeued" in run("requeue", two.id[:10])
    assert run("delete", three.id[:10]) == f"deleted {three.id}\n"
    assert fail("delete", common)[0] == 1
    assert kickq.jobs().count().result(5) == 3


def test_ids_starting_reads_only_job_records(r: object) -> None:
    from kickq._verbs.query import ids_starting

    job = kickq.create("email", 1).result(5)
    assert ids_starting(job.id[:6]).result(5) == [job.id]
    assert ids_starting(job.id[:3]).result(5) == []
    assert ids_starting("zzzz").result(5) == []
    assert ids_starting(job.id[:6] + "*").result(5) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["stat"], "kickq: unknown command 'stat'; did you mean 'stats'? (see kickq --help)"),
        (["cancle", "x"], "kickq: unknown command 'cancle'; did you mean 'cancel'?"),
        (["zzz"], "kickq: unknown command 'zzz' (see kickq --help)"),
        (["jobs", "--limt", "3"], "kickq jobs: unknown option '--limt'; did you mean '--limit'?"),
        (["jobs", "--stat=fail"], "kickq jobs: unknown option '--stat'; did you mean '--state'?"),
        (["jobs", "--zzz"], "kickq jobs: unrecognized arguments: --zzz (see kickq jobs --help)"),
        (["stats", "extra"], "kickq stats: unrecognized arguments: extra"),
    ],
)
def test_a_typo_says_what_was_meant(fail: Fail, args: list[str], said: str) -> None:
    status, line = fail(*args)
    assert status == 2
    assert line.startswith(said)


def test_kickq_namespace_is_the_default_namespace(
    run: Run, fail: Fail, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kickq.config(redis_url=redis_url, redis_namespace="shop")
    job = kickq.create("email", 1).result(5)
    monkeypatch.setenv("KICKQ_NAMESPACE", "shop")
    assert json.loads(run("show", job.id, "--json"))["id"] == job.id
    assert fail("show", job.id, "--namespace", "kickq")[0] == 1
    monkeypatch.setenv("KICKQ_NAMESPACE", "a{b")
    status, line = fail("show", job.id)
    assert status == 2
    assert "namespace" in line


def test_pause_refuses_a_name_no_job_ever_had(run: Run, fail: Fail) -> None:
    kickq.create("email", 1).result(5)
    kickq.schedule("report", every=3600, key="nightly").result(5)
    assert fail("pause", "emial") == (
        1,
        "kickq pause: no job named 'emial'; did you mean 'email'? (--force pauses it all the same)",
    )
    assert fail("pause", "zzz") == (
        1,
        "kickq pause: no job named 'zzz' (--force pauses it all the same)",
    )
    assert set(kickq.stats().result(5)) == {"email"}  # the typo is not among the names
    assert run("pause", "report") == "paused report\n"  # a schedule's name, before its first job
    assert run("pause", "emial", "--force") == "paused emial\n"
    assert kickq.stats().result(5)["emial"].paused
    assert run("resume", "zzz") == "zzz was not paused\n"
    assert "zzz" not in kickq.stats().result(5)


@pytest.mark.parametrize(
    "args", [["stats", "--watch", "--interval", "0.1"], ["jobs", "--json", "--limit", "2000"]]
)
def test_a_reader_that_stops_early_gets_no_broken_pipe_error(
    subprocess_env: dict[str, str], args: list[str]
) -> None:
    """`kickq ... | head -1`: the command ends quietly (141, as SIGPIPE would), no traceback."""
    kickq.create_many("email", list(range(2000)))
    wait_until(lambda: kickq.jobs().count().result(5) == 2000, 20)
    child = subprocess.Popen(
        [sys.executable, "-m", "kickq", *args],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline()
    child.stdout.close()  # as head does once it has its line
    try:
        status = child.wait(30)
    finally:
        child.kill()
    with child.stderr:
        assert child.stderr.read() == b""
    assert status == 141


def test_tables_read_at_80_columns(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80 columns a job is a row of one line (ids cut to 8 digits, which commands take);
    piped without COLUMNS, ids stay whole. Counts agree in number."""
    jobs = [kickq.create("email", {"to": "x" * 60}).result(5) for _ in range(2)]
    kickq.cancel(jobs[0].id).result(5)
    monkeypatch.setenv("COLUMNS", "80")
    shown = run("jobs").splitlines()
    assert max(len(line) for line in shown) <= 80
    rows = [line for line in shown if line.strip()[:8] in {job.id[:8] for job in jobs}]
    assert len(rows) == 2
    assert any("cancel" in row for row in rows)
    assert "ids cut to 8 digits" in shown[-1]
    assert json.loads(run("show", rows[0].split()[0], "--json"))["id"] in {job.id for job in jobs}
    assert run("schedules").rstrip().splitlines()[-1].rstrip() == "0 schedules"
    kickq.schedule("report", every=60).result(5)
    assert run("schedules").rstrip().splitlines()[-1].rstrip() == "1 schedule"
    monkeypatch.delenv("COLUMNS")
    assert jobs[1].id in run("jobs")
    assert run("jobs", "--name", "nope").rstrip().splitlines()[-1].strip() == (
        "no jobs here (0 match)"
    )
