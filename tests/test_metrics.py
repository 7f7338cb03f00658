"""kickq.metrics: Prometheus metrics scraped over HTTP, from register() in this process and from
`kickq worker --metrics-port` as a child process; run counts and durations match the runs,
queue depth matches the stats; a scrape never hangs on Redis; the extra stays optional."""

from __future__ import annotations

import importlib
import logging
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import kickq
import kickq.metrics
from kickq._engine import run_ends as _run_ends
from kickq.cli import commands as cli
from kickq.cli import worker as worker_cli
from support import free_port, scaled, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
WORKER_MODULE = """
import kickq

@kickq.processor("m-ok")
def ok(job, data):
    return data

@kickq.processor("m-bad")
def bad(job, data):
    raise RuntimeError("no")
"""


def scrape(port: int) -> Samples:
    """Every sample at http://127.0.0.1:port/metrics: {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


@pytest.fixture
def served() -> Iterator[tuple[kickq.metrics.Metrics, int]]:
    """kickq's metrics registered into a registry of their own, served on a free port."""
    registry = CollectorRegistry()
    metrics = kickq.metrics.register(registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield metrics, port
    server.shutdown()
    server.server_close()
    thread.join(5)
    metrics.unregister()


def test_counts_and_durations_match_the_runs(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Every outcome of a run this process's workers ended is counted by name, and the
    histogram holds each such run's process time."""
    caplog.set_level(logging.INFO, logger="kickq")
    _, port = served
    kickq.config(retry_interval=0, ghost_interval=0)
    slow_once = threading.Event()

    def handler(job: kickq.Job, data: str) -> str:
        if data == "bad":
            raise ValueError("bad")
        if data == "slow" and not slow_once.is_set():
            slow_once.set()
            time.sleep(1.0)  # overruns process_timeout once: a ghost, then a success
        return data

    ok = [kickq.create("met", "ok").result(5) for _ in range(3)]
    bad = kickq.create("met", "bad", retry=True, retry_count=1).result(5)
    slow = kickq.create("met", "slow", process_timeout=0.3, ghost_count=1).result(5)
    worker = kickq.process("met", handler, concurrent_jobs=4)
    jobs = [*ok, bad, slow]
    wait_until(lambda: all(kickq.get(job.id).result(5).complete for job in jobs), 20)
    worker.stop(5)

    # The overrun is ghosted by the worker, at the run's deadline, or, on a loaded machine,
    # sometimes first by the timer of the process, at the same deadline: then the worker's own
    # end of that run is ignored, and it is not a run this process's workers ended.
    timer_ghosted = any(
        "changed meanwhile" in record.getMessage() and slow.id in record.getMessage()
        for record in caplog.records
    )
    samples = scrape(port)
    counts = {
        outcome: value(samples, "kickq_jobs_total", name="met", outcome=outcome)
        for outcome in ("success", "retry", "ghost", "fail")
    }
    ghosts = None if timer_ghosted else 1.0
    assert counts == {"success": 4.0, "retry": 1.0, "ghost": ghosts, "fail": 1.0}
    runs = [run for job in jobs for run in kickq.get(job.id).result(5).runs]
    assert len(runs) == 7
    if timer_ghosted:
        runs = [run for run in runs if run.state != "ghost"]
    assert value(samples, "kickq_job_duration_seconds_count", name="met") == len(runs)
    total = value(samples, "kickq_job_duration_seconds_sum", name="met")
    assert total == pytest.approx(sum(run.process_time or 0 for run in runs), abs=1e-5)
    assert value(samples, "kickq_job_duration_seconds_bucket", name="met", le="+Inf") == len(runs)


@pytest.mark.both_backends
def test_queue_depth_matches_the_stats(served: Any) -> None:
    """kickq_queue_depth (waiting and running jobs) and kickq_finished_jobs (finished ones)
    are read from kickq.stats() at scrape time, for every name and state."""
    _, port = served
    for _ in range(2):
        kickq.create("depth-a").result(5)
    kickq.create("depth-a", delay=3600).result(5)
    kickq.create("depth-b", priority=9).result(5)
    kickq.pause("depth-b").result(5)
    kickq.cancel(kickq.create("depth-a").result(5).id).result(5)  # finished: fail

    samples = scrape(port)
    stats = kickq.stats().result(10)
    for name, found in stats.items():
        for state, count in found.counts.items():
            finished = state in ("success", "fail")
            gauge = "kickq_finished_jobs" if finished else "kickq_queue_depth"
            assert value(samples, gauge, name=name, state=state) == count
            other = "kickq_queue_depth" if finished else "kickq_finished_jobs"
            assert value(samples, other, name=name, state=state) is None
    assert value(samples, "kickq_queue_depth", name="depth-a", state="queued") == 2
    assert value(samples, "kickq_queue_depth", name="depth-a", state="delayed") == 1
    assert value(samples, "kickq_finished_jobs", name="depth-a", state="fail") == 1
    assert value(samples, "kickq_paused", name="depth-b") == 1
    assert value(samples, "kickq_paused", name="depth-a") == 0
    age = value(samples, "kickq_oldest_queued_age_seconds", name="depth-a")
    assert age is not None and age >= 0
    assert value(samples, "kickq_stats_up") == 1

    kickq.create("depth-a").result(5)
    assert value(scrape(port), "kickq_queue_depth", name="depth-a", state="queued") == 3


def test_deferred_jobs_are_queue_depth_until_their_parents_succeed(served: Any) -> None:
    """A job awaiting its parents (after=) is work still to do: kickq_queue_depth's state
    "deferred", from its create until its last parent succeeds, when it moves to "queued"."""
    _, port = served
    parent = kickq.create("depth-parent").result(5)
    kickq.create("depth-child", after=[parent.id]).result(5)
    samples = scrape(port)
    assert value(samples, "kickq_queue_depth", name="depth-child", state="deferred") == 1
    assert value(samples, "kickq_queue_depth", name="depth-child", state="queued") == 0
    assert value(samples, "kickq_queue_depth", name="depth-parent", state="deferred") == 0
    assert value(samples, "kickq_finished_jobs", name="depth-child", state="deferred") is None

    worker = kickq.process("depth-parent", lambda job, data: data)
    try:
        wait_until(
            lambda: (
                value(scrape(port), "kickq_queue_depth", name="depth-child", state="queued") == 1
            ),
            10,
            what="the child released",
        )
    finally:
        worker.stop(5)
    samples = scrape(port)
    assert value(samples, "kickq_queue_depth", name="depth-child", state="deferred") == 0
    assert value(samples, "kickq_finished_jobs", name="depth-parent", state="success") == 1


def test_a_scrape_never_hangs_on_redis(
    served: Any, r: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis does not answer, a scrape returns after STATS_TIMEOUT with kickq_stats_up
    0 and no queue depth (the counters still there), logging once; then it recovers."""
    kickq.create("hang").result(5)
    monkeypatch.setattr(kickq.metrics, "STATS_TIMEOUT", 0.2)
    _, port = served
    # far longer than two scrapes of 0.2 s: a scrape that waited for Redis would see it up
    r.execute_command("CLIENT", "PAUSE", str(int(scaled(3) * 1000)), "ALL")
    with caplog.at_level(logging.WARNING, logger="kickq.metrics"):
        first, second = scrape(port), scrape(port)
    for samples in (first, second):
        assert value(samples, "kickq_stats_up") == 0
        assert not any(name == "kickq_queue_depth" for name, _ in samples)
    assert len([rec for rec in caplog.records if "queue depth left out" in rec.message]) == 1
    wait_until(lambda: value(scrape(port), "kickq_stats_up") == 1, 10, what="Redis back")
    assert value(scrape(port), "kickq_queue_depth", name="hang", state="queued") == 1


def test_an_unreachable_redis_is_up_0(served: Any) -> None:
    _, port = served
    kickq.config(redis_url="redis://127.0.0.1:1")
    assert value(scrape(port), "kickq_stats_up") == 0


def test_register_and_unregister() -> None:
    """Registering again into one registry gives the same Metrics; unregister stops counting
    and frees the names; a name taken already fails and leaves the registry as it was."""
    registry = CollectorRegistry()
    metrics = kickq.metrics.register(registry)
    assert kickq.metrics.register(registry) is metrics
    metrics.observe(kickq.Job(id="x", name="n", state=kickq.State.FAIL))  # no run: no time
    assert registry.get_sample_value("kickq_jobs_total", {"name": "n", "outcome": "fail"}) == 1
    assert registry.get_sample_value("kickq_job_duration_seconds_count", {"name": "n"}) is None
    assert metrics.observe in _run_ends._observers
    metrics.unregister()
    assert metrics.observe not in _run_ends._observers
    assert registry.get_sample_value("kickq_jobs_total", {"name": "x", "outcome": "fail"}) is None
    again = kickq.metrics.register(registry)
    assert again is not metrics
    again.unregister()

    taken = CollectorRegistry()
    Histogram("kickq_job_duration_seconds", "someone else's", registry=taken)
    with pytest.raises(ValueError, match="Duplicated"):
        kickq.metrics.register(taken)
    assert [family.name for family in taken.collect()] == ["kickq_job_duration_seconds"]


def test_an_observer_that_raises_costs_the_worker_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing observer is logged; the run's end is applied and other observers still run."""
    seen: list[str] = []

    def broken(job: kickq.Job) -> None:
        raise RuntimeError("observer bug")

    _run_ends.add(broken)
    _run_ends.add(lambda job: seen.append(job.id))
    try:
        worker = kickq.process("obs", lambda job, data: "done")
        job = kickq.create("obs").result(5)
        wait_until(lambda: seen == [job.id], 10)
        assert kickq.get(job.id).result(5).result == "done"
        worker.stop(5)
    finally:
        _run_ends._observers = ()
    assert any("observer of run ends failed" in rec.message for rec in caplog.records)


def test_importing_kickq_does_not_import_prometheus_client(
    subprocess_env: dict[str, str],
) -> None:
    code = "import sys, kickq, kickq.cli; print('prometheus_client' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


@pytest.fixture
def without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if prometheus_client were not installed (kickq.metrics imported anew)."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "kickq.metrics")
    monkeypatch.delattr(kickq, "metrics")


def test_a_missing_extra_says_what_to_install(without_the_extra: None) -> None:
    with pytest.raises(ImportError, match=r"pip install 'kickq\[metrics\]'"):
        importlib.import_module("kickq.metrics")


@pytest.fixture
def app(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A module registering the processors of m-ok and m-bad, in the current directory."""
    (tmp_path / "metrics_app.py").write_text(WORKER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(worker_cli, "configure_logging", lambda level: None)
    return tmp_path


def test_worker_without_the_extra_fails_in_one_line(
    app: pathlib.Path, without_the_extra: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["worker", "metrics_app", "--metrics-port", "0"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "kickq worker: --metrics-port: kickq.metrics needs prometheus_client: "
        "pip install 'kickq[metrics]'"
    )


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["--metrics-host", "0.0.0.0"], 2, "--metrics-host goes with --metrics-port"),
        (["--metrics-port", "taken"], 1, "cannot serve metrics on 127.0.0.1:"),
    ],
)
def test_worker_metrics_options_fail_in_one_line(
    args: list[str], status: int, says: str, app: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--metrics-host alone is bad usage; a port already taken is a failure."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        assert cli.main(
            ["worker", "metrics_app", *(taken if a == "taken" else a for a in args)]
        ) == (status)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("kickq worker: ") and says in line
    kickq.metrics.register().unregister()  # what the failed start registered, taken out


def test_serve_metrics_in_process() -> None:
    """serve_metrics registers into prometheus_client's REGISTRY and serves it on the port."""
    server = worker_cli.serve_metrics(None, 0)
    assert server is not None
    try:
        samples = scrape(server.server_port)
        assert value(samples, "kickq_stats_up") == 1
        assert any(name.startswith("process_") for name, _ in samples)  # the default registry
    finally:
        server.shutdown()
        server.server_close()
        kickq.metrics.register().unregister()
    assert worker_cli.serve_metrics(None, None) is None


@pytest.mark.both_backends
def test_kickq_worker_serves_the_metrics(
    tmp_path: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """`kickq worker --metrics-port` serves the counts and durations of the runs it did and the
    queue depth of the namespace; SIGTERM still stops it with 0."""
    (tmp_path / "metrics_app.py").write_text(WORKER_MODULE)
    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "kickq", "worker", "metrics_app", "--metrics-port", str(port)],
            env=subprocess_env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(lambda: f"metrics on http://127.0.0.1:{port}/metrics" in log_path.read_text())
        jobs = [kickq.create("m-ok", n).result(5) for n in range(3)]
        jobs.append(kickq.create("m-bad", retry=False).result(5))
        kickq.create("m-none").result(5)
        wait_until(lambda: all(kickq.get(job.id).result(5).complete for job in jobs), 20)
        # a run is counted once its worker has read Redis's answer, a moment after the record
        # says complete
        wait_until(
            lambda: value(scrape(port), "kickq_jobs_total", name="m-bad", outcome="fail") == 1,
            10,
            what="the failed run counted",
        )
        samples = scrape(port)
        assert value(samples, "kickq_jobs_total", name="m-ok", outcome="success") == 3
        assert value(samples, "kickq_jobs_total", name="m-bad", outcome="fail") == 1
        assert value(samples, "kickq_job_duration_seconds_count", name="m-ok") == 3
        runs = [kickq.get(job.id).result(5).runs[-1] for job in jobs[:3]]
        total = value(samples, "kickq_job_duration_seconds_sum", name="m-ok")
        assert total == pytest.approx(sum(run.process_time or 0 for run in runs), abs=1e-5)
        assert value(samples, "kickq_queue_depth", name="m-none", state="queued") == 1
        assert value(samples, "kickq_finished_jobs", name="m-ok", state="success") == 3
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
