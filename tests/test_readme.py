"""The README's Python blocks run as shown: each runnable block, as a script of its own in a
child process, against the test's Redis (KICKQ_REDIS_URL; the database is emptied before each
test, so each block starts on a namespace with nothing in it).

The README's conventions: a block whose first line is `# fragment: ...` is part of a larger
program (it says which) and is not run; a block whose first line names a file (`# app/jobs.py`)
is that file, written where later blocks import it from, and checked by compiling it."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from support import uncaught

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
TIMEOUT = 60  # seconds for one block: each block that starts workers stops them or exits
FENCE = re.compile(r"^```(python[^\n]*)\n(.*?)^```", re.S | re.M)
FILE_LINE = re.compile(r"# ([\w/]+\.py)\s*(#.*)?$")


def blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of the README."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text)]


def first_line(code: str) -> str:
    return code.lstrip().splitlines()[0] if code.strip() else ""


def is_fragment(code: str) -> bool:
    return first_line(code).startswith("# fragment:")


def file_of(code: str) -> str | None:
    found = FILE_LINE.match(first_line(code))
    return found.group(1) if found else None


RUNNABLE = [(line, code) for line, code in blocks() if not is_fragment(code) and not file_of(code)]
FILES = [(line, code) for line, code in blocks() if file_of(code)]


def test_the_readme_has_runnable_blocks() -> None:
    """Most blocks run; every fragment says what it is part of."""
    assert len(RUNNABLE) >= 15
    for _, code in blocks():
        if is_fragment(code):
            assert len(first_line(code)) > len("# fragment: ") + 10, first_line(code)


@pytest.mark.parametrize(("line", "code"), FILES, ids=[f"line{line}" for line, _ in FILES])
def test_file_blocks_compile(line: int, code: str) -> None:
    compile(code, f"README.md:{line}", "exec")


@pytest.mark.parametrize(("line", "code"), RUNNABLE, ids=[f"line{line}" for line, _ in RUNNABLE])
def test_block_runs(
    line: int, code: str, tmp_path: pathlib.Path, subprocess_env: dict[str, str]
) -> None:
    """The block exits 0, with no traceback but those of failed runs the job log reports, on
    the test's Redis."""
    for _, source in FILES:
        path = tmp_path / str(file_of(source))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    script = tmp_path / f"readme_line{line}.py"
    script.write_text(code)
    env = {**subprocess_env, "KICKQ_HOME": str(tmp_path / "home")}  # never an embedded Redis
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"README.md line {line}:\n{code}\n{done.stderr}"
    assert "Traceback" not in uncaught(done.stderr), done.stderr
