"""Throughput charts as inline SVG, drawn on the server: no script and no chart library.

Pure: from per-minute counts (kickq.stats()'s `finished_per_minute`) to the geometry of the
bars, which the templates turn into `<rect>` elements. Only numbers and text the template
escapes reach the page, so a chart cannot carry markup.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from kickq._model import clock
from kickq._verbs.stats import FinishedMinute, NameStats


class Bar(NamedTuple):
    """One minute's bar: the failed part stacked on the succeeded part (SVG user units)."""

    x: float
    width: float
    ok_y: float
    ok_height: float
    failed_y: float
    failed_height: float
    label: str  # the tooltip: "12:34 UTC: 40 succeeded, 2 failed"


class Chart(NamedTuple):
    width: int
    height: int
    bars: list[Bar]
    top: int  # the value of the top of the scale
    succeeded: int  # over the whole hour
    failed: int
    start: str  # the first minute's label, "HH:MM"
    end: str


def minutes_of(stats: Mapping[str, NameStats]) -> list[FinishedMinute]:
    """Every name's completions added up, minute by minute (the minutes line up: kickq.stats()
    reads them all at one instant)."""
    total: dict[datetime.datetime, list[int]] = {}
    for name_stats in stats.values():
        for minute, succeeded, failed in name_stats.finished_per_minute:
            counts = total.setdefault(minute, [0, 0])
            counts[0] += succeeded
            counts[1] += failed
    return [FinishedMinute(minute, ok, bad) for minute, (ok, bad) in sorted(total.items())]


def _scale_top(peak: int) -> int:
    """A round number at or above `peak`, so the scale reads as 10, 20, 50, 100, ..."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= peak:
                return top * step
        top *= 10


def _hhmm(moment: datetime.datetime) -> str:
    return moment.astimezone(clock.UTC).strftime("%H:%M")


def chart(minutes: Sequence[FinishedMinute], width: int = 600, height: int = 120) -> Chart:
    """The bars of `minutes`, oldest on the left, in a `width` x `height` drawing."""
    top = _scale_top(max((ok + bad for _, ok, bad in minutes), default=0))
    slot = width / max(len(minutes), 1)
    bars = []
    for i, (minute, ok, bad) in enumerate(minutes):
        ok_height = height * ok / top
        failed_height = height * bad / top
        bars.append(
            Bar(
                x=round(i * slot + slot * 0.1, 2),
                width=round(slot * 0.8, 2),
                ok_y=round(height - ok_height, 2),
                ok_height=round(ok_height, 2),
                failed_y=round(height - ok_height - failed_height, 2),
                failed_height=round(failed_height, 2),
                label=f"{_hhmm(minute)} UTC: {ok} succeeded, {bad} failed",
            )
        )
    return Chart(
        width=width,
        height=height,
        bars=bars,
        top=top,
        succeeded=sum(ok for _, ok, _ in minutes),
        failed=sum(bad for _, _, bad in minutes),
        start=_hhmm(minutes[0].minute) if minutes else "",
        end=_hhmm(minutes[-1].minute) if minutes else "",
    )


def charts(stats: Mapping[str, NameStats]) -> dict[str, Chart]:
    """A small chart per name, for the overview's table."""
    return {name: chart(s.finished_per_minute, 120, 24) for name, s in stats.items()}
