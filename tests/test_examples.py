"""The examples keep working: each runs to completion against the test server."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from support import uncaught

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
