"""The `kickq` command, run as a child process against the test's Redis: worker, show, delete,
exit statuses and their one line on stderr."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from support import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TIMEOUT = 60  # seconds any one command may take
UNREACHABLE = "redis://127.0.0.1:1"
SAMPLE = """
import pathlib
import time

import kickq


@kickq.processor("cli-sleep")
def sleep(job, data):
    pathlib.Path(data["marker"]).write_text(job.id)
    time.sleep(data["seconds"])
    return "slept"


@kickq.processor(["cli-add", "cli-other"], concurrent_jobs=2)
def add(job, data):
    return data["a"] + data["b"]
"""
API_FIELDS = {
    *("id", "name", "data", "state", "complete", "success", "result", "last_error", "runs"),
    *("create_time", "update_time", "finish_time", "scheduled_for", "total_process_time"),
    *("delay", "process_timeout", "retry", "retry_count", "retry_interval", "ghost_retry"),
    *("ghost_count", "ghost_interval", "hotjob", "hotjob_timeout", "priority", "meta"),
    *("unique_key", "parents", "parent_results", "awaiting", "after_failed", "progress"),
}


def kickq_cli(
    *args: str, env: dict[str, str], cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    # as a script would run it: no terminal width inherited from the test runner
    env = {name: value for name, value in env.items() if name not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "kickq", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command writes on stderr (and nothing on stdout)."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return lines[0]


class Worker:
    """`kickq worker` running in tmp_path (where the sample module is), its log in a file."""

    def __init__(self, directory: pathlib.Path, env: dict[str, str], *args: str) -> None:
        self.log_path = directory / "worker.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kickq", "worker", "cli_sample", *args],
                env=env,
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def exit_status(self, timeout: float = 15) -> int:
        return self.process.wait(timeout)


@pytest.fixture
def sample(tmp_path: pathlib.Path) -> pathlib.Path:
    """The directory of a module, cli_sample, that registers processors."""
    (tmp_path / "cli_sample.py").write_text(SAMPLE)
    return tmp_path


@pytest.fixture
def workers(sample: pathlib.Path, subprocess_env: dict[str, str]) -> Iterator[Any]:
    """Starts `kickq worker cli_sample ...`; whatever still runs at the end is killed."""
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        started.append(Worker(sample, subprocess_env, *args))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def state_of(job_id: str) -> kickq.State:
    return kickq.get(job_id).result(5).state


def sleep_job(directory: pathlib.Path, seconds: float, marker: str = "started") -> kickq.Job:
    data = {"marker": str(directory / marker), "seconds": seconds}
    return kickq.create("cli-sleep", data).result(5)


@pytest.mark.both_backends
def test_worker_runs_the_jobs_of_the_names_given(workers: Any) -> None:
    """`kickq worker MODULE --names` runs those names' jobs, logs a line per job, leaves other
    names queued, and exits 0 on SIGTERM."""
    jobs = [kickq.create("cli-add", {"a": i, "b": 1}).result(5) for i in range(3)]
    other = kickq.create("cli-other", {"a": 1, "b": 1}).result(5)
    worker = workers("--names", "cli-add", "--concurrency", "3")
    for job in jobs:
        wait_until(lambda job=job: state_of(job.id) is kickq.State.SUCCESS, 20, what=job.id)
    assert [kickq.get(job.id).result(5).result for job in jobs] == [1, 2, 3]
    wait_until(lambda: all(f"cli-add {job.id} success in " in worker.log for job in jobs), 10)
    assert state_of(other.id) is kickq.State.QUEUED
    worker.signal(signal.SIGTERM)
    assert worker.exit_status() == 0, worker.log
    assert "Traceback" not in worker.log
    assert state_of(other.id) is kickq.State.QUEUED


def test_sigterm_lets_the_running_job_finish(workers: Any, sample: pathlib.Path) -> None:
    """On SIGTERM the worker claims nothing more, finishes its running job (about 1 s), and
    exits 0 with that job succeeded."""
    running = sleep_job(sample, 1.0)
    queued = sleep_job(sample, 0, marker="second")
    worker = workers()
    wait_until((sample / "started").exists, 20, what="the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.exit_status() == 0, worker.log
    done = kickq.get(running.id).result(5)
    assert (done.state, done.result) == (kickq.State.SUCCESS, "slept")
    assert done.runs[-1].process_time is not None and done.runs[-1].process_time >= 1.0
    assert f"cli-sleep {running.id} success in " in worker.log
    assert state_of(queued.id) is kickq.State.QUEUED
    assert not (sample / "second").exists()


def test_second_signal_exits_at_once(workers: Any, sample: pathlib.Path) -> None:
    """A second signal, while the first waits for a long job, ends the worker at once with
    128 + the signal's number; the job is handed back first (queued again)."""
    job = sleep_job(sample, 30)
    worker = workers()
    wait_until((sample / "started").exists, 20, what="the job to start")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in worker.log, 10, what="the first signal to be handled")
    worker.signal(signal.SIGINT)
    assert worker.exit_status(timeout=5) == 128 + signal.SIGINT
    assert "second signal (SIGINT)" in worker.log
    assert state_of(job.id) is kickq.State.QUEUED


def test_grace_bounds_the_wait_for_running_jobs(workers: Any, sample: pathlib.Path) -> None:
    """When --grace runs out before the running job ends, the worker hands the job back (queued
    again), exits 0 and says so."""
    job = sleep_job(sample, 30)
    worker = workers("--grace", "0.5")
    wait_until((sample / "started").exists, 20, what="the job to start")
    worker.signal(signal.SIGINT)
    assert worker.exit_status(timeout=10) == 0
    assert "1 jobs still running after 0.5s; handed back" in worker.log
    assert state_of(job.id) is kickq.State.QUEUED


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["worker"],
        ["show"],
        ["delete"],
        ["embedded"],
        ["embedded", "status", "--redis-url", UNREACHABLE],  # the embedded Redis takes no URL
        ["worker", "cli_sample", "--concurrency", "0"],
        ["worker", "cli_sample", "--concurrency", "many"],
        ["worker", "cli_sample", "--grace", "-1"],
        ["worker", "cli_sample", "--grace", "inf"],
        ["worker", "cli_sample", "--names", ","],
        ["worker", "cli_sample", "--log-level", "LOUD"],
        ["worker", "cli_sample", "--names", "cli-add,nope"],
        ["worker", "no_such_module"],
        ["worker", "cli_empty"],
        ["show", "x", "--redis-url", "http://127.0.0.1:1"],
        ["show", "x", "--namespace", "a{b}"],
    ],
)
def test_bad_usage_exits_2_with_one_line(
    args: list[str], sample: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """Bad usage — a missing or unknown argument, a bad value, a module that does not exist or
    registers no processors — exits 2 with one line on stderr."""
    (sample / "cli_empty.py").write_text("import kickq\n")
    done = kickq_cli(*args, env=subprocess_env, cwd=sample)
    assert done.returncode == 2
    assert one_line(done).startswith("kickq")


def test_a_module_that_fails_to_import_exits_1(
    sample: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """A module raising on import exits 1 with its error in one line."""
    (sample / "cli_broken.py").write_text("import kickq\nraise RuntimeError('no config here')\n")
    done = kickq_cli("worker", "cli_broken", env=subprocess_env, cwd=sample)
    assert done.returncode == 1
    line = one_line(done)
    assert "cli_broken" in line and "RuntimeError: no config here" in line


@pytest.mark.parametrize(
    "args", [["show", "0" * 32], ["delete", "0" * 32], ["worker", "cli_sample"]]
)
def test_unreachable_redis_exits_1_with_one_line(
    args: list[str], sample: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """A Redis that cannot be reached exits 1 with one line naming it (no worker waits on)."""
    done = kickq_cli(*args, "--redis-url", UNREACHABLE, env=subprocess_env, cwd=sample)
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(f"kickq {args[0]}: ")
    assert "127.0.0.1:1" in line and "cannot be reached" in line


@pytest.mark.both_backends
def test_show_and_delete(subprocess_env: dict[str, str]) -> None:
    """show prints a known job (a table, or JSON with the API's field names) and fails for an
    unknown id; delete deletes a known job and fails for an unknown one."""
    data = {"text": "[bold]not markup[/bold]", "n": [1, 2]}
    job = kickq.create("cli-show", data, meta={"trace": "ab12"}, priority=7).result(5)

    table = kickq_cli("show", job.id, env=subprocess_env)
    assert table.returncode == 0, table.stderr
    assert job.id in table.stdout and "queued" in table.stdout and "cli-show" in table.stdout
    assert "[bold]not markup[/bold]" in table.stdout

    shown = kickq_cli("show", job.id, "--json", env=subprocess_env)
    assert shown.returncode == 0, shown.stderr
    fields = json.loads(shown.stdout)
    assert set(fields) == API_FIELDS
    assert (fields["id"], fields["name"], fields["data"]) == (job.id, "cli-show", data)
    assert (fields["state"], fields["priority"], fields["meta"]) == ("queued", 7, {"trace": "ab12"})
    assert fields["create_time"] == job.create_time.isoformat()  # type: ignore[union-attr]
    assert fields["runs"] == [] and fields["complete"] is False

    deleted = kickq_cli("delete", job.id, "--json", env=subprocess_env)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"id": job.id, "deleted": True}
    with pytest.raises(kickq.JobNotFound):
        kickq.get(job.id).result(5)

    for args in (["show", job.id], ["delete", job.id], ["show", "not-an-id", "--json"]):
        done = kickq_cli(*args, env=subprocess_env)
        assert done.returncode == 1
        assert "no job with id" in one_line(done)


def test_show_runs_and_delete_in_words(subprocess_env: dict[str, str]) -> None:
    """A finished job's runs are listed, with their error; delete without --json says so."""
    kickq.process("cli-fails", lambda job, data: 1 / 0)
    job = kickq.create("cli-fails").result(5)
    wait_until(lambda: state_of(job.id) is kickq.State.FAIL, 10)

    table = kickq_cli("show", job.id, env=subprocess_env)
    assert table.returncode == 0, table.stderr
    assert "division by zero" in table.stdout and " UTC" in table.stdout
    runs = json.loads(kickq_cli("show", job.id, "--json", env=subprocess_env).stdout)["runs"]
    assert [(run["count"], run["state"]) for run in runs] == [(1, "fail")]
    assert set(runs[0]) == {"count", "start_time", "process_time", "state", "error", "traceback"}

    deleted = kickq_cli("delete", job.id, env=subprocess_env)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted {job.id}")


def test_namespace_option(subprocess_env: dict[str, str]) -> None:
    """--namespace picks the namespace the job is looked up in."""
    kickq.config(redis_namespace="cli-other-ns")
    job = kickq.create("cli-ns").result(5)
    assert kickq_cli("show", job.id, env=subprocess_env).returncode == 1
    found = kickq_cli("show", job.id, "--namespace", "cli-other-ns", env=subprocess_env)
    assert found.returncode == 0, found.stderr


def test_redis_url_option_wins_over_the_environment(
    subprocess_env: dict[str, str], redis_url: str
) -> None:
    """--redis-url is used even when KICKQ_REDIS_URL names another server."""
    job = kickq.create("cli-url").result(5)
    env = {**subprocess_env, "KICKQ_REDIS_URL": UNREACHABLE}
    assert kickq_cli("show", job.id, env=env).returncode == 1
    found = kickq_cli("show", job.id, "--redis-url", redis_url, env=env)
    assert found.returncode == 0, found.stderr


def test_console_script_runs_the_cli_main() -> None:
    """The installed `kickq` console script is kickq.cli:main."""
    [script] = importlib.metadata.entry_points(group="console_scripts", name="kickq")
    assert script.value == "kickq.cli:main"
    assert script.load() is kickq.cli.main  # type: ignore[attr-defined]
