"""docs/architecture.md stays true: its module tables are generated from the modules' docstrings,
and every file it names exists."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"


def _generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "architecture_table", ROOT / "docs" / "architecture_table.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_module_tables_are_generated_from_the_code() -> None:
    """Run `python docs/architecture_table.py` when this fails."""
    generator = _generator()
    assert generator.missing_groups() == []
    page = PAGE.read_text(encoding="utf-8")
    assert generator.rewritten(page) == page


def test_every_module_is_in_a_table() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for path in (ROOT / "kickq").rglob("*.py"):
        group = path.parent.relative_to(ROOT).as_posix() + "/"
        assert f"### `{group}`" in page, group
        assert f"| `{path.name}` |" in page, path


def test_every_file_the_page_names_exists() -> None:
    page = PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:_[a-z]+|tests|docs|scripts)/[\w/]+\.(?:py|lua))`", page))
    assert named, "the page names files by their paths"
    missing = [
        name
        for name in sorted(named)
        if not (ROOT / "kickq" / name).exists()
        and not (ROOT / name).exists()
        and not (ROOT / "kickq" / "_redis" / name).exists()
    ]
    assert missing == []
