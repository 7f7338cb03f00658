"""kickq.dashboard served: its live event stream and one pub/sub connection, the command line
(`kickq dashboard`, `python -m kickq.dashboard`) as a child process, the extra, and the pure
parts (charts, the viewers' bounded summaries, the text filters)."""

from __future__ import annotations

import datetime
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import kickq
from kickq._engine import runtime as _runtime
from kickq._verbs.stats import FinishedMinute, NameStats
from kickq.cli import commands as cli
from kickq.cli import worker as worker_cli
from kickq.dashboard import _chart as charts
from kickq.dashboard import _live as live
from kickq.dashboard import _render as render
from kickq.dashboard import serve
from support import DashboardServer, numsub, wait_until

LISTENING = re.compile(r"kickq dashboard on (http://\S+) \((read-only|actions allowed)\)")


def changes(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The `change` messages of an event stream, as they come."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def subscribed(client: Any, event: str = "create") -> bool:
    return numsub(client, _runtime.get().keys.event(event)) >= 1


def test_event_stream_tells_each_page_what_changed(r: Any) -> None:
    """Two pages, one pub/sub subscription: both are told of a new job, by name and id."""
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=10) as client:
        with client.stream("GET", "/events") as first, client.stream("GET", "/events") as second:
            assert first.headers["content-type"].startswith("text/event-stream")
            assert "content-length" not in first.headers
            wait_until(lambda: server.app.state.fanout.viewers == 2, what="two viewers")
            wait_until(lambda: subscribed(r), what="the dashboard's subscription")
            job = kickq.create("dash-live", {"x": 1}).result(5)
            for stream in (first, second):
                message = next(changes(stream))
                assert message["names"] == ["dash-live"]
                assert message["ids"] == [job.id]
                assert message["recent"][0] == {
                    "event": "create",
                    "id": job.id,
                    "name": "dash-live",
                    "state": "queued",
                }
            assert numsub(r, _runtime.get().keys.event("create")) == 1
        wait_until(lambda: server.app.state.fanout.viewers == 0, what="closed pages to leave")


def test_a_burst_of_events_is_a_few_bounded_messages(r: Any) -> None:
    """300 events (150 jobs created and queued) arrive as a few messages, each bounded."""
    with (
        DashboardServer() as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/events") as stream,
    ):
        wait_until(lambda: server.app.state.fanout.viewers == 1, what="the viewer")
        wait_until(lambda: subscribed(r, "queued"), what="the dashboard's subscription")
        futures = kickq.create_many("dash-burst", [{"i": i} for i in range(150)])
        [future.result(10) for future in futures]
        seen, messages = 0, []
        for message in changes(stream):
            messages.append(message)
            seen += sum(message["counts"].values())
            if seen >= 300:
                break
    assert seen == 300
    assert len(messages) <= 20  # a message per 0.3 s while the burst lasts, not one per event
    assert all(
        len(m["ids"]) <= live.MAX_IDS and len(m["recent"]) <= live.MAX_RECENT for m in messages
    )


def test_viewer_summaries_are_bounded() -> None:
    viewer = live.Viewer()
    for i in range(500):
        viewer.add(("create", f"id{i}", f"name{i}", "queued"))
    viewer.add(("delete", "id0", "name0", ""))
    message = viewer.take()
    assert message["counts"] == {"create": 500, "delete": 1}
    assert len(message["names"]) == live.MAX_IDS and len(message["ids"]) == live.MAX_IDS
    assert message["overflow"] is True
    assert message["recent"][-1] == {"event": "delete", "id": "id0", "name": "name0", "state": ""}
    assert len(message["recent"]) == live.MAX_RECENT
    assert not viewer.ready.is_set()
    assert viewer.take() == {"counts": {}, "names": [], "ids": [], "recent": [], "overflow": False}


def test_delete_events_reach_the_viewers(r: Any) -> None:
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=10) as client:
        job = kickq.create("dash-gone").result(5)
        with client.stream("GET", "/events") as stream:
            wait_until(lambda: server.app.state.fanout.viewers == 1, what="the viewer")
            wait_until(lambda: subscribed(r, "delete"), what="the dashboard's subscription")
            assert kickq.delete(job.id).result(5)
            # the job's create and queued events may reach the dashboard late (a loaded machine),
            # after the page joined: they may come first or with the delete
            message = next(m for m in changes(stream) if "delete" in m["counts"])
    assert message["counts"]["delete"] == 1
    assert set(message["counts"]) <= {"create", "queued", "delete"}
    assert message["recent"][-1] == {
        "event": "delete",
        "id": job.id,
        "name": "dash-gone",
        "state": "",
    }


class Child:
    """`python -m ...` as a child process, its stderr read line by line in a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args], env=env, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.lines.put(line)

    def url(self) -> tuple[str, str]:
        while True:
            line = self.lines.get(timeout=30)
            found = LISTENING.search(line)
            if found:
                return found.group(1), found.group(2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(15)
        self.reader.join(5)
        return status


def test_python_m_kickq_dashboard_is_read_only_on_localhost(subprocess_env: dict[str, str]) -> None:
    child = Child(["-m", "kickq.dashboard", "--port", "0"], subprocess_env)
    try:
        url, mode = child.url()
        assert url.startswith("http://127.0.0.1:") and mode == "read-only"
        kickq.create("dash-cli").result(5)
        with httpx.Client(base_url=url, timeout=10) as client:
            page = client.get("/")
            assert page.status_code == 200 and 'data-name="dash-cli"' in page.text
            assert 'class="action"' not in page.text
            refused = client.post("/actions/pause", data={"name": "dash-cli", "token": "0" * 64})
            assert refused.status_code == 403
    finally:
        status = child.stop()
    assert status == 0  # SIGTERM stops it gracefully
    assert not kickq.stats().result(5)["dash-cli"].paused


def test_kickq_dashboard_allow_actions(subprocess_env: dict[str, str]) -> None:
    """--allow-actions and --namespace: a pause with the page's token works."""
    args = ["-m", "kickq", "dashboard", "--allow-actions", "--port", "0", "--namespace", "dashns"]
    child = Child(args, subprocess_env)
    try:
        url, mode = child.url()
        assert mode == "actions allowed"
        kickq.config(redis_namespace="dashns")
        kickq.create("dash-ns").result(5)
        with httpx.Client(base_url=url, timeout=10) as client:
            token = re.search(r'name="token" value="(\w+)"', client.get("/").text)
            assert token
            form = {"name": "dash-ns", "token": token.group(1)}
            assert client.post("/actions/pause", data=form).status_code == 303
        assert kickq.stats().result(5)["dash-ns"].paused
    finally:
        assert child.stop() == 0


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_importing_kickq_imports_no_web_stack() -> None:
    done = run_python(
        "import sys, kickq, kickq.cli\n"
        "names = ('starlette', 'uvicorn', 'jinja2', 'kickq.dashboard')\n"
        "print([m for m in names if m in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_extra_a_clear_error() -> None:
    missing = "import sys\nsys.modules['starlette'] = None\n"
    done = run_python(missing + "import kickq.dashboard")
    assert done.returncode == 1
    assert (
        "ImportError: kickq.dashboard needs the dashboard extra (starlette is missing): "
        in done.stderr
    )
    assert "pip install 'kickq[dashboard]'" in done.stderr
    done = run_python(missing + "from kickq.cli import main\nsys.exit(main(['dashboard']))")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "kickq dashboard: kickq.dashboard needs the dashboard extra (starlette is missing): "
        "pip install 'kickq[dashboard]'"
    ]


def test_command_line_errors(
    redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad port is bad usage (2); a port in use a failure (1); each one line."""
    monkeypatch.setattr(worker_cli, "configure_logging", lambda level: None)  # logging as it was
    for port in ("x", "70000", "-1"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["dashboard", "--port", port])
        assert exited.value.code == 2
        assert "expected a port number from 0 to 65535" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        assert cli.main(["dashboard", "--port", port, "--redis-url", redis_url]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("kickq dashboard: ") and "in use" in line


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"port": "8765"}, TypeError),
        ({"port": 70000}, ValueError),
        ({"port": True}, TypeError),
        ({"host": 1}, TypeError),
        ({"allow_actions": "yes"}, TypeError),
    ],
)
def test_serve_checks_its_arguments(arguments: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        serve(**arguments)


def minute(n: int) -> datetime.datetime:
    return datetime.datetime(2030, 1, 1, 12, n, tzinfo=datetime.timezone.utc)


def test_chart_bars_stack_failures_on_successes() -> None:
    drawing = charts.chart([FinishedMinute(minute(0), 10, 0), FinishedMinute(minute(1), 5, 5)])
    assert drawing.top == 10 and (drawing.succeeded, drawing.failed) == (15, 5)
    full, half = drawing.bars
    assert full.ok_height == 120 and full.failed_height == 0
    assert half.ok_height == 60 and half.ok_y == 60 and half.failed_y == 0
    assert half.label == "12:01 UTC: 5 succeeded, 5 failed"
    assert (drawing.start, drawing.end) == ("12:00", "12:01")
    assert charts.chart([]).bars == []


@pytest.mark.parametrize(("peak", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (101, 200)])
def test_chart_scale_is_round(peak: int, top: int) -> None:
    assert charts._scale_top(peak) == top


def test_throughput_adds_up_every_name() -> None:
    def stats(ok: int, bad: int) -> NameStats:
        return NameStats({}, False, None, [FinishedMinute(minute(0), ok, bad)], None)

    assert charts.minutes_of({"a": stats(1, 2), "b": stats(3, 4)}) == [
        FinishedMinute(minute(0), 4, 6)
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0.0004, "0.4 ms"),
        (0.0123, "12 ms"),
        (4.2, "4.20 s"),
        (42, "42.0 s"),
        (600, "10 min"),
        (7200, "2 h"),
        (3 * 86400, "3 d"),
    ],
)
def test_durations_for_people(value: float | None, text: str) -> None:
    assert render.seconds(value) == text


def test_text_filters() -> None:
    assert render.short("a\n  b") == "a b"
    assert render.short({"k": "v" * 100}, 20) == '{"k": "vvvvvvvvvvvv…'
    assert render.num(100000) == "100,000"
    assert render.when(None) == "-" and render.ago(None) == "-"
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    assert render.ago(soon).startswith("in ")
    assert render.when(minute(5)) == "2030-01-01 12:05:00 UTC"


def test_kickq_dashboard_metrics_port(subprocess_env: dict[str, str]) -> None:
    """--metrics-port serves the namespace's gauges beside the dashboard, as the worker does."""
    kickq.create("dash-metrics").result(5)
    args = ["-m", "kickq", "dashboard", "--port", "0", "--metrics-port", "0"]
    child = Child(args, subprocess_env)
    try:
        metrics_url = ""
        while not metrics_url:
            found = re.search(r"metrics on (http://\S+/metrics)", child.lines.get(timeout=30))
            metrics_url = found.group(1) if found else ""
        url, _ = child.url()
        with httpx.Client(timeout=10) as client:
            assert client.get(url).status_code == 200
            page = client.get(metrics_url).text
        assert 'kickq_queue_depth{name="dash-metrics",state="queued"} 1.0' in page
        assert "kickq_stats_up 1.0" in page
    finally:
        assert child.stop() == 0


def test_kickq_dashboard_metrics_host_needs_a_port(subprocess_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kickq", "dashboard", "--metrics-host", "0.0.0.0"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "kickq dashboard: --metrics-host goes with --metrics-port\n"
