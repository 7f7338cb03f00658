"""The package's layers hold: the contracts of [tool.importlinter] in pyproject.toml.

CI runs `lint-imports` as a step of its own; this runs the same check, so that the usual test
command catches an import that points up a layer (or a module outside kickq._redis importing
redis-py) too.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_import_contract_is_kept() -> None:
    script = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    script = script or shutil.which("lint-imports")
    assert script is not None, "lint-imports is missing: install kickq's test extras"
    # the graph is this tree's kickq (not an installed copy), the contracts its pyproject.toml's
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [script, "--no-cache"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
