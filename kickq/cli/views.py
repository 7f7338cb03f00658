"""What the inspect commands show people: stats a table per name, workers, jobs, schedules.

Each view is a rich renderable built from what the public API returns, so `kickq stats --watch`
can redraw the same view in place. Every value goes in as plain text (see `_cli_output`): job
data, names and errors are shown as they are, never read as markup.
"""

from __future__ import annotations

import datetime
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kickq._engine.heartbeats import WorkerInfo
from kickq._model.job import Job
from kickq._model.schedules import Schedule
from kickq._redis.keys import SEEN_STATES
from kickq._verbs.stats import NameStats
from kickq.cli import output as out

FLOW_COLUMNS = (
    "name",
    "oldest queued",
    "this minute",
    "last hour",
    "run p50",
    "p95",
    "max",
    "limits",
)


def _table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    whole: int = 0,
    glimpse: Container[str] = (),
    keep: Container[str] = (),
) -> Table:
    """A table of plain-text cells whose first `whole` columns are never cut or wrapped,
    however narrow the terminal: ids are there to be copied. The columns named in `glimpse`
    (data, errors, options: free text) keep each cell on one line, cut with an ellipsis, and
    give way first when the terminal is narrow; those in `keep` (short values, times) are not
    wrapped; the others wrap."""
    texts = [[out.text_of(value) for value in row] for row in rows]
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
    for i, column in enumerate(columns):
        whole_width = i < whole or column in keep
        widest = max([len(column), *(len(row[i]) for row in texts)]) if whole_width else None
        table.add_column(column, no_wrap=whole_width, min_width=widest)
    cut = [column in glimpse for column in columns]
    for row in texts:
        table.add_row(
            *(
                Text(text, no_wrap=True, overflow="ellipsis") if short else Text(text)
                for text, short in zip(row, cut, strict=True)
            )
        )
    return table


def _finished(stats: NameStats, minutes: int) -> str:
    """Jobs completed in the last `minutes` minutes (the current one counting as one)."""
    recent = list(stats.finished_per_minute)[-minutes:]
    ok = sum(minute.succeeded for minute in recent)
    failed = sum(minute.failed for minute in recent)
    return f"{ok} ok, {failed} failed" if failed else f"{ok} ok"


def _flow(name: str, stats: NameStats) -> list[Any]:
    """How a name's jobs move: how long the head of its queue has waited, how many completed
    lately (ok and failed), how long its runs take."""
    times = stats.process_time or (None, None, None)
    return [
        name,
        out.human_duration(stats.oldest_queued_age),
        _finished(stats, 1),
        _finished(stats, 60),
        *(out.human_duration(seconds) for seconds in times),
        str(stats.limits) if stats.limits.any else "-",
    ]


def stats_view(stats: Mapping[str, NameStats]) -> RenderableType:
    """Two tables with a row per job name: its jobs by state, then how they flow. Compact, so
    that `--watch` fits dozens of names on one screen."""
    if not stats:
        return Text("no jobs yet: no job name has stats")
    names = sorted(stats)
    counts = [
        [f"{name} (paused)" if stats[name].paused else name]
        + [stats[name].counts.get(state, 0) for state in SEEN_STATES]
        for name in names
    ]
    flows = [_flow(name, stats[name]) for name in names]
    if len(names) > ALIGNED_ROWS:
        right = range(1, len(SEEN_STATES) + 1)
        return Group(
            _aligned(("name", *SEEN_STATES), counts, right, gap=COUNTS_GAP),
            _aligned(FLOW_COLUMNS, flows),
        )
    by_state = _table(("name", *SEEN_STATES), counts, whole=1)
    # two spaces between counts rather than three: the eight states' headings then fit 80
    # columns beside a name of up to 8 characters, none cut to "defer…"
    by_state.collapse_padding = True
    for column in by_state.columns[1:]:
        column.justify = "right"
    flow = _table(FLOW_COLUMNS, flows, whole=1)
    return Group(by_state, flow)


COUNTS_GAP = 2  # spaces between two columns of the counts by state (see `stats_view`)

# Beyond this many rows a table is drawn as aligned text: a rich Table measures and pads every
# cell (about 1.5 ms a row, so 15 s for the two tables of 10,000 job names).
ALIGNED_ROWS = 500


def _aligned(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    right: Container[int] = (),
    gap: int = 3,
) -> Text:
    """A long table as lines of text laid out as `_table`'s (box.SIMPLE_HEAD: a heading, a
    rule, a line per row), columns `right` justified right, `gap` spaces between two columns
    (2 for a table that collapses its padding); no line is wrapped (a console narrower than
    the table cuts them)."""
    texts = [[out.text_of(value) for value in row] for row in rows]
    widths = [
        max(cell_len(column), *(cell_len(row[i]) for row in texts))
        for i, column in enumerate(columns)
    ]

    def line(cells: Sequence[str]) -> str:
        padded = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            pad = " " * (width - cell_len(cell))
            padded.append(pad + cell if i in right else cell + pad)
        return "  " + (" " * gap).join(padded) + "  "

    rule = " " + "\u2500" * (sum(widths) + gap * (len(widths) - 1) + 2) + " "
    lines = ["", line(columns), rule, *(line(row) for row in texts), ""]
    return Text("\n".join(lines), no_wrap=True, overflow="crop")


def workers_view(workers: Sequence[WorkerInfo], now: datetime.datetime) -> RenderableType:
    """The live workers; a column of stuck handler threads (runs ghosted whose thread has not
    returned, see max_stuck_threads) only when some worker has any."""
    stuck = any(worker.stuck_threads for worker in workers)
    columns: tuple[str, ...] = ("id", "host", "pid", "names", "concurrent_jobs", "running")
    columns += ("stuck",) * stuck + ("started (UTC)", "last seen")
    rows = [
        (
            worker.id,
            worker.host,
            worker.pid,
            ",".join(worker.names),
            worker.concurrent_jobs,
            worker.running,
            *((worker.stuck_threads,) * stuck),
            out.short_time(worker.started),
            f"{out.human_duration(max((now - worker.last_seen).total_seconds(), 0.0))} ago",
        )
        for worker in sorted(workers, key=lambda w: (w.host, w.pid, w.started))
    ]
    table = _table(columns, rows, whole=1, glimpse=("names",))
    table.caption = out.plural(len(workers), "live worker")
    return table


NARROW = 110  # columns under which a listing of jobs shows ids cut to SHORT_ID digits
SHORT_ID = 8  # digits enough to find a job by (any command takes an id's first digits)


def _updated(job: Job, narrow: bool) -> str | None:
    shown = out.short_time(job.update_time)
    return shown[len("2030-") :] if narrow and shown else shown


def jobs_view(
    jobs: Sequence[Job], offset: int, total: int, width: int | None = None
) -> RenderableType:
    """The jobs, a row each; for a terminal `width` columns wide (None: piped, as wide as it
    needs), under NARROW columns with ids cut to their first SHORT_ID digits and times to the
    second without the year, so that a row still reads at 80 columns."""
    narrow = width is not None and width < NARROW
    columns = ("id", "name", "state", "runs", "updated (UTC)", "data", "last_error")
    rows = [
        (
            job.id[:SHORT_ID] if narrow else job.id,
            job.name,
            job.state.value,
            len(job.runs),
            _updated(job, narrow),
            out.shorten(job.data),
            out.shorten(job.last_error),
        )
        for job in jobs
    ]
    table = _table(
        columns, rows, whole=3, glimpse=("data", "last_error"), keep=("runs", "updated (UTC)")
    )
    if jobs:
        table.caption = f"jobs {offset + 1}-{offset + len(jobs)} of {total}, newest first"
        if narrow:
            table.caption += f"; ids cut to {SHORT_ID} digits (kickq show takes them)"
    else:
        table.caption = f"no jobs here ({total} match)"
    return table


def _timing(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.tz})"
    if schedule.every is not None:
        return f"every {out.human_duration(schedule.every.total_seconds())}"
    return "-"


def schedules_view(schedules: Sequence[Schedule]) -> RenderableType:
    columns = ("key", "name", "when", "next_time (UTC)", "misfire", "data", "options")
    rows = [
        (
            schedule.key,
            schedule.name,
            _timing(schedule),
            out.short_time(schedule.next_time),
            schedule.misfire,
            out.shorten(schedule.data),
            out.shorten(dict(schedule.options) or None),
        )
        for schedule in schedules
    ]
    table = _table(columns, rows, whole=1, glimpse=("data", "options"), keep=("misfire",))
    table.caption = out.plural(len(schedules), "schedule")
    return table
