"""The inspect and repair commands called in this process through cli.main(): their options,
words and JSON in detail, the --watch loop, the views and the argument types
(test_cli_ops.py runs each command as a child process)."""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from rich.console import Console
from rich.text import Text

import kickq
from kickq import cli
from kickq._verbs.stats import SEEN_STATES, FinishedMinute, ProcessTime
from kickq.cli import inspect as inspect_cli
from kickq.cli import output as out
from kickq.cli import parser as cli_parser
from kickq.cli import views
from support import wait_until

UTC = datetime.timezone.utc
Run = Callable[..., str]


@pytest.fixture
def run(redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """cli.main(args) on the test's Redis, which must succeed; returns what it printed. The
    command's reset() is undone afterwards, so the test goes on using the same Redis."""
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
    """The exit status and the one line on stderr of a command that fails."""
    capsys.readouterr()
    status = cli.main([*args, "--redis-url", redis_url])
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    kickq.config(redis_url=redis_url)
    return status, line


def failed_jobs(name: str, count: int) -> list[kickq.Job]:
    jobs = [kickq.create(name, {"n": n}, retry=False).result(5) for n in range(count)]
    worker = kickq.process(name, lambda job, data: 1 / 0)
    wait_until(lambda: kickq.jobs(name=name, state="fail").count().result(5) == count, 20)
    worker.stop(5)
    return jobs


@pytest.mark.parametrize(
    "args",
    [
        ["stats", "--interval", "0"],
        ["stats", "--interval", "0.01"],
        ["stats", "--watch", "--interval", "soon"],
        ["stats", "extra"],
        ["stats", "--name", "a"],  # never read as --namespace
        ["workers", "--limit", "3"],
        ["jobs", "--state", "done"],
        ["jobs", "--state", "fail,done"],
        ["jobs", "--limit", "0"],
        ["jobs", "--limit", "x"],
        ["jobs", "--offset", "-1"],
        ["jobs", "--offset", "x"],
        ["jobs", "--name", ","],
        ["jobs", "--name", ""],
        ["requeue"],
        ["requeue", "0" * 32, "--name", "a"],
        ["delete"],
        ["delete", "--name", "a"],
        ["delete", "--state", "fail"],
        ["delete", "0" * 32, "--state", "fail"],
        ["delete", "0" * 32, "--name", "a", "--state", "fail"],
        ["pause"],
        ["resume", "a", "b"],
        ["schedules", "--json", "x"],
        ["jobs", "--redis-url", "http://127.0.0.1:1"],
        ["stats", "--namespace", "a{b}"],
    ],
)
def test_bad_usage_exits_2_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or extra argument, a bad value or a bad combination exits 2, in one line."""
    try:
        status = cli.main(args)
    except SystemExit as exited:
        status = int(str(exited.code))
    assert status == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert captured.out == "" and line.startswith("kickq")


def test_stats(run: Run) -> None:
    """stats prints kickq.stats(): JSON with its field names, or the tables."""
    assert json.loads(run("stats", "--json")) == {}
    assert run("stats") == "no jobs yet: no job name has stats\n"
    failed_jobs("main-s", 1)
    found = json.loads(run("stats", "--json"))["main-s"]
    assert (found["counts"]["fail"], found["paused"]) == (1, False)
    assert found["process_time"]["max"] >= found["process_time"]["p50"] >= 0
    assert "0 ok, 1 failed" in run("stats")
    kickq.limit("main-s", rate=(20, 1), concurrency=3).result(5)
    assert "20 per 1 s, 3 at once" in run("stats")
    limits = json.loads(run("stats", "--json"))["main-s"]["limits"]
    assert limits == {"rate": [20, 1.0], "concurrency": 3}


def test_jobs_options(run: Run) -> None:
    """--name and --state take lists; without them every job is listed; long data and errors
    are cut in the table, whole in JSON."""
    long = {"text": "x" * 100}
    queued = kickq.create("main-a", long).result(5)
    [failed] = failed_jobs("main-b", 1)

    every = json.loads(run("jobs", "--json"))
    assert {job["id"] for job in every} == {queued.id, failed.id}
    assert json.loads(run("jobs", "--name", "main-a,main-b", "--state", "fail,queued", "--json"))
    [only] = json.loads(run("jobs", "--state", "fail", "--json"))
    assert (only["id"], only["last_error"]) == (failed.id, "ZeroDivisionError: division by zero")
    assert json.loads(run("jobs", "--offset", "2", "--json")) == []

    table = run("jobs")
    assert queued.id in table and failed.id in table and "division by zero" in table
    assert '{"text": "xxx' in table and "x" * 100 not in table and "..." in table
    assert "jobs 1-2 of 2, newest first" in table
    assert "no jobs here (2 match)" in run("jobs", "--offset", "5")


def test_requeue_in_words(run: Run, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """requeue says what it did; an unknown id and a job not failed for good exit 1."""
    first, second = failed_jobs("main-rq", 2)
    assert run("requeue", first.id) == f"requeued {first.id} (main-rq)\n"
    assert failure(redis_url, capsys, "requeue", first.id) == (
        1,
        f"kickq requeue: job {first.id} has not failed for good (it is queued): only such a "
        "job can be requeued",
    )
    assert failure(redis_url, capsys, "requeue", "0" * 32) == (
        1,
        f"kickq requeue: no job with id {'0' * 32!r}",
    )
    said = run("requeue", "--name", "main-rq,main-none")
    assert said == "requeued 1 job of main-rq, main-none that had failed for good\n"
    assert kickq.get(second.id).result(5).state is kickq.State.QUEUED
    assert json.loads(run("requeue", "--name", "main-rq", "--json")) == {
        "name": ["main-rq"],
        "requeued": 0,
    }


def test_requeue_json_and_a_config_error(
    run: Run, redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requeue ID --json prints the job queued again; a ConfigError (a ValueError too) stays
    bad usage, not the failure of a job that has not failed for good."""
    [job] = failed_jobs("main-rq", 1)
    shown = json.loads(run("requeue", job.id, "--json"))
    assert (shown["id"], shown["state"], shown["runs"][0]["state"]) == (job.id, "queued", "fail")

    def refused(job_id: str) -> kickq.KickqFuture[kickq.Job]:
        future: kickq.KickqFuture[kickq.Job] = kickq.KickqFuture()
        future.set_exception(kickq.ConfigError("redis_options needs cluster"))
        return future

    monkeypatch.setattr(kickq, "requeue", refused)
    status, line = failure(redis_url, capsys, "requeue", job.id)
    assert (status, line) == (2, "kickq requeue: redis_options needs cluster")


def test_delete_in_words(run: Run, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """delete by name and state says how many; delete ID still deletes one job."""
    one, two = (kickq.create("main-del").result(5) for _ in range(2))
    assert run("delete", "--name", "main-del", "--state", "fail") == (
        "deleted 0 jobs of main-del (fail)\n"
    )
    kickq.create("main-del-all").result(5)
    assert json.loads(run("delete", "--name", "main-del-all", "--state", "queued", "--json")) == {
        "name": ["main-del-all"],
        "state": ["queued"],
        "deleted": 1,
    }
    assert run("delete", one.id) == f"deleted {one.id}\n"
    assert json.loads(run("delete", two.id, "--json")) == {"id": two.id, "deleted": True}
    assert failure(redis_url, capsys, "delete", two.id) == (
        1,
        f"kickq delete: no job with id {two.id!r}",
    )


def test_pause_and_resume_in_words(run: Run) -> None:
    """pause and resume say whether they changed anything."""
    kickq.create("main-p", 1).result(5)  # a name no job ever had is refused (see test_cli_verbs)
    assert run("pause", "main-p") == "paused main-p\n"
    assert run("pause", "main-p") == "main-p was paused already\n"
    assert json.loads(run("pause", "main-p", "--json")) == {
        "name": "main-p",
        "paused": True,
        "changed": False,
    }
    assert run("resume", "main-p") == "resumed main-p\n"
    assert run("resume", "main-p") == "main-p was not paused\n"


def test_workers_and_schedules_when_there_are_none(run: Run) -> None:
    assert json.loads(run("workers", "--json")) == []
    assert "0 live workers" in run("workers")
    assert json.loads(run("schedules", "--json")) == []
    assert "0 schedules" in run("schedules")


class Readings:
    """Stands in for the watch's sleep: lets `count` readings happen, then is Ctrl-C."""

    def __init__(self, count: int, between: Callable[[], None] = lambda: None) -> None:
        self.left = count
        self.between = between

    def __call__(self, seconds: float) -> None:
        assert seconds == 0.5
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt
        self.between()


def test_watch_json_lines(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """--watch --json: a JSON line per reading, each read anew; Ctrl-C ends it with 0."""
    kickq.create("main-w").result(5)
    monkeypatch.setattr(
        inspect_cli.time, "sleep", Readings(3, lambda: kickq.create("main-w").result(5))
    )
    lines = run("stats", "--watch", "--interval", "0.5", "--json").splitlines()
    queued = [json.loads(line)["main-w"]["counts"]["queued"] for line in lines]
    assert queued == [1, 2, 3]


def test_watch_tables_when_piped(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped, each reading is printed after the last, headed by the time."""
    kickq.create("main-w").result(5)
    monkeypatch.setattr(inspect_cli.time, "sleep", Readings(2))
    shown = run("stats", "--watch", "--interval", "0.5")
    assert shown.count("-- ") == 2 and shown.count("main-w") == 4
    assert " UTC" in shown


def test_watch_redraws_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the view is redrawn in place (rich's Live) until Ctrl-C."""
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    monkeypatch.setattr(out, "console", lambda: terminal)
    monkeypatch.setattr(inspect_cli.time, "sleep", Readings(3))
    readings = iter(range(10))

    def view(found: int) -> Text:
        return Text(f"reading {found}")

    assert inspect_cli.watch(lambda: next(readings), view, 0.5, as_json=False) == 0
    assert "reading 0" in screen.getvalue() and "reading 2" in screen.getvalue()
    assert "\x1b[" in screen.getvalue()  # cursor movements: drawn over, not appended


def stats(paused: bool = False, times: ProcessTime | None = None) -> kickq.NameStats:
    minute = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    return kickq.NameStats(
        counts={"queued": 4, "deferred": 2, "success": 10, "fail": 1},
        paused=paused,
        oldest_queued_age=75.0,
        finished_per_minute=[FinishedMinute(minute, 2, 0)] * 59 + [FinishedMinute(minute, 3, 1)],
        process_time=times,
    )


def render(view: Any, width: int = 200) -> str:
    screen = io.StringIO()
    Console(file=screen, width=width, markup=False).print(view)
    return screen.getvalue()


def test_stats_view() -> None:
    """A row per name for its counts (paused marked), a row per name for its flow."""
    shown = render(
        views.stats_view(
            {"b": stats(), "a": stats(paused=True, times=ProcessTime(0.012, 0.5, 61.0))}
        )
    )
    lines = [line.split() for line in shown.splitlines() if line.strip()]
    assert lines[0] == ["name", *SEEN_STATES]
    assert ["a", "(paused)", "4", "0", "2", "0", "0", "0", "10", "1"] in lines
    assert ["b", "4", "0", "2", "0", "0", "0", "10", "1"] in lines
    flow = ["1m15s", "3", "ok,", "1", "failed", "121", "ok,", "1", "failed"]
    assert ["a", *flow, "12ms", "500ms", "1m01s", "-"] in lines  # the last: no limits
    assert ["b", *flow, "-", "-", "-", "-"] in lines
    assert shown.index("a (paused)") < shown.index("b ")


def test_stats_view_reads_at_80_columns() -> None:
    """Every state's heading whole beside names of up to 8 characters, a line per name."""
    shown = render(views.stats_view({"email": stats(), "thumbnai": stats()}), width=80)
    lines = [line.split() for line in shown.splitlines() if line.strip()]
    assert lines[0] == ["name", *SEEN_STATES]
    assert ["email", "4", "0", "2", "0", "0", "0", "10", "1"] in lines
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= 80


def test_workers_view() -> None:
    now = datetime.datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)
    worker = kickq.WorkerInfo(
        id="f" * 16,
        host="web-1",
        pid=42,
        names=("email", "sms"),
        concurrent_jobs=4,
        running=1,
        started=datetime.datetime(2030, 1, 1, 11, 0, tzinfo=UTC),
        last_seen=datetime.datetime(2030, 1, 1, 12, 0, 7, tzinfo=UTC),
    )
    shown = render(views.workers_view([worker], now), width=60)
    assert "f" * 16 in shown  # an id is never cut, however narrow
    assert "3.0s ago" in render(views.workers_view([worker], now))
    assert "2030-01-01 11:00:00" in render(views.workers_view([worker], now))
    assert "stuck" not in render(views.workers_view([worker], now))
    blocked = attrs.evolve(worker, id="e" * 16, stuck_threads=2)
    shown = render(views.workers_view([worker, blocked], now), width=200)
    assert "stuck" in shown
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.strip()}
    assert rows["e" * 16][6] == "2" and rows["f" * 16][6] == "0"


def test_schedules_view_and_json() -> None:
    every = kickq.Schedule(key="k", name="n", every=datetime.timedelta(hours=2))
    cron = kickq.Schedule(key="c", name="n", cron="*/5 * * * *", options={"priority": 9})
    odd = kickq.Schedule(key="o", name="n")
    shown = render(views.schedules_view([every, cron, odd]))
    assert "every 2h00m" in shown and "cron */5 * * * * (UTC)" in shown
    assert '{"priority": 9}' in shown and "3 schedules" in shown
    assert out.plain(every)["every"] == 7200.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, None), (0.0, "0ms"), (0.0123, "12ms"), (4.25, "4.2s"), (200, "3m20s"), (7500, "2h05m")],
)
def test_human_duration(seconds: float | None, text: str | None) -> None:
    assert out.human_duration(seconds) == text


def test_plain_gives_the_api_field_names() -> None:
    """Named tuples become objects, times text, durations seconds, enums their values."""
    moment = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    assert out.plain(ProcessTime(1.0, 2.0, 3.0)) == {"p50": 1.0, "p95": 2.0, "max": 3.0}
    assert out.plain({"at": moment, "for": datetime.timedelta(minutes=1)}) == {
        "at": "2030-01-01T00:00:00+00:00",
        "for": 60.0,
    }
    assert out.plain([kickq.State.FAIL, ("a", 1), frozenset({"x"})]) == ["fail", ["a", 1], ["x"]]
    fields = out.plain(stats())
    assert fields["finished_per_minute"][0] == {
        "minute": "2030-01-01T00:00:00+00:00",
        "succeeded": 2,
        "failed": 0,
    }


def test_show_fits_a_terminal_and_widens_when_piped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped, a wide table keeps each row on one line; COLUMNS still rules when set."""
    wide = views.jobs_view([kickq.Job(id="a" * 32, name="n", data={"k": "v" * 38})], 0, 1)
    monkeypatch.delenv("COLUMNS", raising=False)
    out.show(wide)
    row = next(line for line in capsys.readouterr().out.splitlines() if "a" * 32 in line)
    assert '{"k": "' in row and len(row) > 80
    monkeypatch.setenv("COLUMNS", "60")
    out.show(wide)
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 60


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (cli_parser.offset, "0", 0),
        (cli_parser.offset, "12", 12),
        (cli_parser.states, "fail, queued", ["fail", "queued"]),
        (cli_parser.interval, "0.1", 0.1),
        (cli_parser.port, "0", 0),
        (cli_parser.port, "9191", 9191),
    ],
)
def test_argument_types(parse: Callable[[str], Any], text: str, value: Any) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (cli_parser.offset, "-1"),
        (cli_parser.states, "failed"),
        (cli_parser.interval, "0.05"),
        (cli_parser.port, "65536"),
        (cli_parser.port, "http"),
    ],
)
def test_bad_argument_values(parse: Callable[[str], Any], text: str) -> None:
    with pytest.raises(cli_parser.argparse.ArgumentTypeError):
        parse(text)
