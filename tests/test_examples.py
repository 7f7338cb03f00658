"""The examples keep working: each runs to completion against the test server."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(example: pathlib.Path, subprocess_env: dict[str, str]) -> None:
    """The example exits 0 and prints the results it promises."""
    done = subprocess.run(
        [sys.executable, str(example)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "success" in done.stdout or "result" in done.stdout
    assert "Traceback" not in uncaught(done.stderr)


# a line of the job log ("kickq.jobs") for a failed run: its traceback follows it
FAILED_RUN = re.compile(r"^\S+ [0-9a-f]{32} (retry|ghost|fail) in \S+: ")


def uncaught(stderr: str) -> str:
    """stderr without the failed runs the job log reports with their tracebacks (an example
    that fails runs on purpose shows them: Python prints WARNINGs without logging set up). A
    thread's uncaught exception ("Exception in thread") is kept; the main thread's fails the
    exit status."""
    kept: list[str] = []
    logged = False
    for line in stderr.splitlines():
        if FAILED_RUN.match(line):
            logged = True
        elif line.startswith("Exception in thread"):
            logged = False
        if not logged:
            kept.append(line)
    return "\n".join(kept)
