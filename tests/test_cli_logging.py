"""`kickq worker`'s logging: the application's own set-up wins, kickq configures a stderr handler
(text or JSON) only where nothing did, --no-log-config configures nothing; messages carry no
redundant "kickq: " prefix."""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

import kickq
from kickq.cli import logs
from support import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TIMEOUT = 60
APP = """
import logging

import kickq

{setup}


@kickq.processor("log-add")
def add(job, data):
    return data["a"] + data["b"]
"""
DEBUG_JSON = ("--log-level", "DEBUG", "--log-format", "json")
APP_SETUP = (
    """logging.basicConfig(level=logging.INFO, format="APP %(levelname)s %(name)s %(message)s")"""
)


@contextlib.contextmanager
def bare() -> Iterator[logging.Logger]:
    """The root and kickq loggers without handlers (pytest's own, added for each test's call,
    put aside) and kickq's level unset, as in a fresh process; restored afterwards."""
    root, kickq_log = logging.getLogger(), logging.getLogger("kickq")
    saved = (root.handlers[:], root.level, kickq_log.handlers[:], kickq_log.level)
    root.handlers.clear()
    kickq_log.handlers.clear()  # kickq's commands may have added a NullHandler
    kickq_log.setLevel(logging.NOTSET)
    try:
        yield root
    finally:
        root.handlers[:], kickq_log.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        kickq_log.setLevel(saved[3])


def test_nothing_configured_kickq_adds_its_handler() -> None:
    with bare() as bare_root:
        with logs.around_import(None, "text"):
            assert len(logging.getLogger("kickq").handlers) == 1  # kickq logs during the import
            assert bare_root.handlers == []
        assert logging.getLogger("kickq").handlers == []
        (handler,) = bare_root.handlers
        assert bare_root.level == logging.INFO
        assert handler.formatter is not None and handler.formatter._fmt == logs.TEXT_FORMAT


def test_the_apps_set_up_during_the_import_is_kept() -> None:
    with bare() as bare_root:
        mine = logging.NullHandler()
        with logs.around_import(None, "json"):
            logging.basicConfig(handlers=[mine], level=logging.WARNING)  # the app's module
        assert bare_root.handlers == [mine]
        assert bare_root.level == logging.WARNING
        assert logging.getLogger("kickq").handlers == []
        assert logging.getLogger("kickq").level == logging.NOTSET  # the app's levels apply


def test_a_root_configured_before_is_kept_an_explicit_level_is_kickqs() -> None:
    with bare() as bare_root:
        mine = logging.NullHandler()
        bare_root.addHandler(mine)
        with logs.around_import("DEBUG", "text"):
            pass
        assert bare_root.handlers == [mine]
        assert logging.getLogger("kickq").level == logging.DEBUG
        assert logging.getLogger("kickq").handlers == []


def test_the_apps_level_for_kickq_is_kept() -> None:
    with bare():
        with logs.around_import(None, "text"):
            logging.getLogger("kickq").setLevel(logging.ERROR)
        assert logging.getLogger("kickq").level == logging.ERROR


def test_no_log_config_configures_nothing() -> None:
    with bare() as bare_root:
        with logs.around_import("DEBUG", "json", enabled=False):
            assert logging.getLogger("kickq").handlers == []
        assert bare_root.handlers == []
        assert logging.getLogger("kickq").level == logging.NOTSET


def test_json_formatter_one_object_per_line() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise KeyError("missing")
    except KeyError:
        record = logging.LogRecord(
            "kickq.jobs", logging.ERROR, __file__, 1, "job %s\nfailed", ("a1",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "kickq.jobs"
    assert entry["message"] == "job a1\nfailed"
    assert entry["time"].endswith("Z")
    assert "Traceback" in entry["exc_info"] and "KeyError: 'missing'" in entry["exc_info"]
    plain = logging.LogRecord("kickq", logging.INFO, __file__, 1, "hi", (), None)
    assert set(json.loads(formatter.format(plain))) == {"time", "level", "logger", "message"}


def test_the_dashboards_logging_respects_a_configured_root() -> None:
    with bare() as bare_root:
        from kickq.cli import worker as worker_cli

        mine = logging.NullHandler()
        bare_root.addHandler(mine)
        worker_cli.configure_logging("INFO")
        assert bare_root.handlers == [mine]


# -- the command, in a child process ---------------------------------------------------------


def start_worker(
    directory: pathlib.Path, env: dict[str, str], setup: str, *args: str
) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
    (directory / "log_app.py").write_text(APP.format(setup=setup))
    log_path = directory / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kickq", "worker", "log_app", *args],
            env=env,
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return process, log_path


def run_one_job_and_stop(process: subprocess.Popen[bytes], log_path: pathlib.Path) -> str:
    try:
        job = kickq.create("log-add", {"a": 1, "b": 2}).result(5)
        wait_until(lambda: kickq.get(job.id).result(5).result == 3, 20, what=job.id)
        wait_until(lambda: job.id in log_path.read_text(), 10, what="the job's log line")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return log_path.read_text()


def test_worker_keeps_the_apps_logging(
    tmp_path: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """The app's basicConfig() at import is what the job line and kickq's own lines go
    through: kickq adds no handler of its own (no line twice, none in kickq's format)."""
    process, log_path = start_worker(tmp_path, subprocess_env, APP_SETUP)
    log = run_one_job_and_stop(process, log_path)
    lines = log.splitlines()
    assert lines and all(line.startswith("APP ") for line in lines), log
    assert any(line.startswith("APP INFO kickq.jobs log-add ") for line in lines)
    assert any("APP INFO kickq.cli processing log-add" in line for line in lines)
    assert "kickq: " not in log


def test_worker_logs_json_lines(tmp_path: pathlib.Path, subprocess_env: dict[str, str]) -> None:
    process, log_path = start_worker(tmp_path, subprocess_env, "", "--log-format", "json")
    entries = [json.loads(line) for line in run_one_job_and_stop(process, log_path).splitlines()]
    assert {e["logger"] for e in entries} >= {"kickq.cli", "kickq.jobs"}
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)


def test_worker_no_log_config(tmp_path: pathlib.Path, subprocess_env: dict[str, str]) -> None:
    """--no-log-config: no handler, so Python's last resort shows only warnings and errors."""
    process, log_path = start_worker(tmp_path, subprocess_env, "", "--no-log-config")
    try:
        job = kickq.create("log-add", {"a": 1, "b": 2}).result(5)
        wait_until(lambda: kickq.get(job.id).result(5).result == 3, 20, what=job.id)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert log_path.read_text() == ""


def test_a_failed_import_is_logged_before_any_app_logging(
    tmp_path: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """kickq's handler is there while the module is imported: with --log-level DEBUG the
    import's traceback is logged (here as JSON), then the one-line error."""
    (tmp_path / "log_broken.py").write_text("raise RuntimeError('no config here')\n")
    done = subprocess.run(
        [sys.executable, "-m", "kickq", "worker", "log_broken", *DEBUG_JSON],
        env=subprocess_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 1
    *logged, last = done.stderr.splitlines()
    entries = [json.loads(line) for line in logged]
    (failure,) = [e for e in entries if e["message"] == "importing log_broken failed"]
    assert failure["logger"] == "kickq.cli" and failure["level"] == "DEBUG"
    assert "RuntimeError: no config here" in failure["exc_info"]
    assert "RuntimeError: no config here" in last
