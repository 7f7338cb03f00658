"""What the `kickq` command prints: tables for people, JSON for scripts, one line for errors.

JSON uses the API's field names (those of `Job`, times as ISO-8601 with the UTC offset), so a
script reads `kickq show ID --json` as it would read the job's events. Tables go through rich,
with every value passed as plain text: job data is shown as it is, never read as markup.
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from kickq._model import clock
from kickq._model.job import OPTION_FIELDS, TIME_FIELDS, Job, Run, State

WIDEST = 1000  # columns a piped table may take


def run_fields(run: Run) -> dict[str, Any]:
    return {
        "count": run.count,
        "start_time": clock.to_iso(run.start_time),
        "process_time": run.process_time,
        "state": run.state.value,
        "error": run.error,
        "traceback": run.traceback,
    }


def job_fields(job: Job) -> dict[str, Any]:
    """A Job as a JSON object with the API's field names (hotjob_future, a local thing, aside).
    `awaiting` is the parents a deferred job still awaits: empty for a job in any other state,
    whose record may keep those it awaited when it ended (cancelled, or failed with a parent)."""
    fields: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "data": job.data,
        "state": job.state.value,
        "complete": job.complete,
        "success": job.success,
    }
    fields.update({name: clock.to_iso(getattr(job, name)) for name in TIME_FIELDS})
    fields["total_process_time"] = job.total_process_time
    fields.update({name: getattr(job, name) for name in OPTION_FIELDS})
    fields.update(
        meta=job.meta,
        unique_key=job.unique_key,
        progress=job.progress,
        result=job.result,
        last_error=job.last_error,
        runs=[run_fields(run) for run in job.runs],
        parents=list(job.parents),
        parent_results=job.parent_results,
        awaiting=list(awaited(job)),
        after_failed=job.after_failed,
    )
    return fields


def awaited(job: Job) -> tuple[str, ...]:
    """The parents whose end the job still awaits: only a deferred job awaits any."""
    return job.awaiting if job.state is State.DEFERRED else ()


SUCCEEDED, AWAITED, NO_RESULT = "succeeded", "awaited", "no result"


def parent_outcomes(job: Job) -> list[tuple[str, str]]:
    """Each parent of `job` with what the job holds of it: SUCCEEDED (its result is on the
    job), AWAITED (the deferred job waits for its end) or NO_RESULT (it failed or was deleted,
    or the job ended before it did: its last_error says which parent failed it)."""
    waiting = set(awaited(job))
    return [
        (
            parent,
            SUCCEEDED
            if parent in job.parent_results
            else AWAITED
            if parent in waiting
            else NO_RESULT,
        )
        for parent in job.parents
    ]


def parents_summary(job: Job) -> str:
    """How many parents the job has and where they stand: "3: 2 succeeded, 1 awaited"."""
    counts: dict[str, int] = {}
    for _, outcome in parent_outcomes(job):
        counts[outcome] = counts.get(outcome, 0) + 1
    found = [
        f"{counts[outcome]} {outcome}"
        for outcome in (SUCCEEDED, AWAITED, NO_RESULT)
        if outcome in counts
    ]
    return f"{len(job.parents)}: {', '.join(found)}"


_AS_IS = frozenset({str, int, float, bool})


def plain(value: Any) -> Any:
    """A value of the API (NameStats, WorkerInfo, Schedule, ...) as JSON with the API's field
    names: attrs classes and named tuples become objects, times ISO-8601 text, durations
    seconds. Generic on purpose: a field the API gains shows up without a change here."""
    if value is None or type(value) in _AS_IS:  # most values: first, and cheap
        return value
    if attrs.has(type(value)):
        names = [field.name for field in attrs.fields(type(value))]
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {name: plain(item) for name, item in value._asdict().items()}
    if isinstance(value, datetime.datetime):
        return clock.to_iso(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(name): plain(item) for name, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    return value


def say(text: str) -> None:
    """One line of words for people: what a command did."""
    print(text, flush=True)


def print_json(value: Any, indent: int | None = 2) -> None:
    print(json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False), flush=True)


def quiet_library_logs() -> None:
    """Keep kickq's own warnings (a background thread retrying an unreachable Redis, say) off
    stderr unless logging is configured, as `kickq worker` does: a command's outcome is its
    output or its one error line. Without a handler of its own, Python would print them."""
    logger = logging.getLogger("kickq")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def error_line(prog: str, message: object) -> None:
    """A failure as one line on stderr, whatever line breaks the message holds."""
    text = " ".join(str(message).split()) or "failed"
    print(f"{prog}: {text}", file=sys.stderr)


def plural(count: int, word: str, words: str | None = None) -> str:
    """A count and its noun, agreeing: "1 job", "2 jobs", "0 jobs"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def text_of(value: Any) -> str:
    """A value in a table cell: JSON for data, results and metadata; '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> None:
    """A table with a header: the shape of every listing (jobs, workers, stats, ...)."""
    table = Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for row in rows:
        table.add_row(*(Text(text_of(value)) for value in row))
    console().print(table)


def print_fields(fields: Mapping[str, Any], title: str | None = None) -> None:
    """One record, a field per line."""
    table = Table(
        "field", "value", title=title, box=box.SIMPLE_HEAD, title_justify="left", show_header=False
    )
    for name, value in fields.items():
        table.add_row(Text(name), Text(text_of(value)))
    console().print(table)


def shorten(value: Any, width: int = 40) -> str:
    """A cell's text cut to `width` characters on one line: a listing shows a glimpse of
    data and errors (`kickq show ID` shows them whole)."""
    text = " ".join(text_of(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def human_duration(seconds: float | None) -> str | None:
    """A duration for people: 12ms, 4.2s, 3m20s, 2h05m."""
    if seconds is None:
        return None
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def human_time(moment: datetime.datetime | None) -> str | None:
    """A time for people: UTC to the millisecond, short enough for a table column."""
    if moment is None:
        return None
    return moment.astimezone(clock.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def short_time(moment: datetime.datetime | None) -> str | None:
    """A time in a listing, to the second, in UTC (the column header says so)."""
    if moment is None:
        return None
    return moment.astimezone(clock.UTC).strftime("%Y-%m-%d %H:%M:%S")


SHOWN_PARENTS = 20
"""Parents `kickq show ID` lists in words (a job may have 1,000; --json lists them all)."""
PARENT_RESULT_WIDTH = 60


def print_job(job: Job) -> None:
    fields = job_fields(job)
    for name in ("runs", "parents", "parent_results", "awaiting", "after_failed"):
        del fields[name]
    fields.update({name: human_time(getattr(job, name)) for name in TIME_FIELDS})
    if job.parents:
        fields.update(parents=parents_summary(job), after_failed=job.after_failed)
    print_fields(fields, title=f"job {job.id}")
    if job.parents:
        show(parents_table(job))
        more = len(job.parents) - SHOWN_PARENTS
        if more > 0:
            print(f"and {plural(more, 'more parent')} (kickq show {job.id} --json lists them all)")
    if job.runs:
        rows = [
            (run.count, human_time(run.start_time), run.process_time, run.state.value, run.error)
            for run in job.runs
        ]
        print_table(("run", "start_time", "process_time", "state", "error"), rows)
        raised = [(run.count, run.traceback) for run in job.runs if run.traceback is not None]
        if raised:
            count, text = raised[-1]
            print(f"traceback of run {count}:\n{text.rstrip()}")


def parents_table(job: Job) -> Table:
    """The first SHOWN_PARENTS parents of a job: ids whole (to be copied), what the job holds
    of each, and a glimpse of each result on one line (--json gives them whole)."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("parent", no_wrap=True, min_width=len(job.parents[0]))
    table.add_column("outcome", no_wrap=True, min_width=len(NO_RESULT))
    table.add_column("result")
    for parent, outcome in parent_outcomes(job)[:SHOWN_PARENTS]:
        result = job.parent_results[parent] if outcome == SUCCEEDED else None
        table.add_row(
            Text(parent),
            Text(outcome),
            Text(shorten(result, PARENT_RESULT_WIDTH), no_wrap=True, overflow="ellipsis"),
        )
    return table


def show(view: RenderableType) -> None:
    """Print a view: fitted to a terminal's width; piped, as wide as it needs (unless COLUMNS
    says otherwise), so that each row of a listing stays one line for grep and logs."""
    shown = console()
    if not shown.is_terminal and "COLUMNS" not in os.environ:
        wide = shown.options.update(max_width=WIDEST)
        width = max(Measurement.get(shown, wide, view).maximum, shown.width)
        shown = _Console(file=sys.stdout, highlight=False, emoji=False, markup=False, width=width)
    shown.print(view)


def fitted_width() -> int | None:
    """The columns a view must fit: the terminal's (or COLUMNS'); None when piped without
    COLUMNS, where `show` prints it as wide as it needs."""
    shown = console()
    if not shown.is_terminal and "COLUMNS" not in os.environ:
        return None
    return shown.width


def console() -> Console:
    """A console on the current stdout (tests and pipes swap it), plain text when piped."""
    return _Console(file=sys.stdout, highlight=False, emoji=False, markup=False)


class _Console(Console):
    """rich's Console, but a closed pipe is left to `kickq.cli.main` (rich would exit 1 at
    once), so that every command ends the same way on it."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError
