"""`kickq stats` with many job names: past ALIGNED_ROWS rows the tables are drawn as aligned
text (a rich Table takes about 1.5 ms a row), which reads exactly as the rich tables do."""

from __future__ import annotations

import datetime

import pytest

from kickq._verbs import stats as _stats
from kickq._verbs.limits import Limits
from kickq.cli import output as out
from kickq.cli import views


def many_stats(count: int) -> dict[str, _stats.NameStats]:
    now = datetime.datetime(2031, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    minute = int(now.timestamp()) // 60
    found = {}
    for i in range(count):
        name = f"name-{i:04d}" + ("\u9577\u3044" if i % 97 == 0 else "")
        counts = dict.fromkeys(_stats.SEEN_STATES, 0) | {"queued": i % 5, "success": i * 37}
        found[name] = _stats.NameStats(
            counts=counts,
            paused=i % 50 == 3,
            oldest_queued_age=i * 1.5 if i % 5 else None,
            finished_per_minute=_stats.finished_per_minute(
                {str(minute % 60): f"{minute}:{i % 7}:{i % 3}"}, now
            ),
            process_time=_stats.ProcessTime(0.01 * i, 0.02 * i, 0.5 * i) if i % 4 else None,
            limits=Limits(rate=(10, 60.0), concurrency=i % 3 or None) if i % 9 == 0 else Limits(),
        )
    return found


def shown(stats: dict[str, _stats.NameStats], capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    out.show(views.stats_view(stats))
    return [line.rstrip() for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_many_names_read_as_the_rich_tables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # piped, whatever the runner's terminal
    monkeypatch.delenv("LINES", raising=False)
    stats = many_stats(300)
    monkeypatch.setattr(views, "ALIGNED_ROWS", 1_000)
    tables = shown(stats, capsys)
    monkeypatch.setattr(views, "ALIGNED_ROWS", 100)
    aligned = shown(stats, capsys)
    assert len(aligned) == 2 * (2 + 300)  # a heading and a rule, then a line per name
    assert aligned == tables
    assert any("(paused)" in line for line in aligned)
    assert any("10 per 60 s" in line for line in aligned)
