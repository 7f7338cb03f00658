"""The pages: overview, jobs by name and state, one job, workers, schedules.

Each reads only what it shows, through kickq's public calls: the overview one `kickq.stats()`
(a few small reads per name), a jobs page a count and one page of the indexes, so every page
costs the same with a hundred jobs or a hundred thousand. The calls are awaited (their futures
are resolved by kickq's threads), so a slow Redis never blocks the server's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import urllib.parse
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import kickq
from kickq._model import clock, lifecycle
from kickq._redis.keys import SEEN_STATES, is_job_id
from kickq._verbs.query import MIN_PREFIX, ids_starting
from kickq.dashboard._chart import chart, charts, minutes_of
from kickq.dashboard._render import Renderer, root_of

T = TypeVar("T")
WAIT = 10.0  # seconds a page waits for Redis before it says Redis is unavailable
PAGE_SIZE = 50
NAMES_PER_PAGE = 100  # rows of the overview's names table
MAX_PAGE = 1_000_000
SHOWN_MATCHES = 20  # ids a search by a shared prefix lists
ID_DIGITS = 32  # hex digits of a job id
SHOWN_PARENTS = 100  # parents a job's page lists (a job may have 1,000)
SUCCEEDED, AWAITED, NO_RESULT = "succeeded", "awaited", "no result"


class Unavailable(Exception):
    """Redis did not answer: the page says so (503) instead of hanging."""


async def fetch(future: concurrent.futures.Future[T]) -> T:
    """A kickq future's result, awaited without blocking the event loop."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), WAIT)
    except asyncio.TimeoutError:
        raise Unavailable(f"no answer from Redis within {WAIT:g} s") from None
    except kickq.RedisUnavailable as exc:
        raise Unavailable(str(exc)) from None


def _render(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.render
    return renderer


async def overview(request: Request) -> Response:
    """Every name's counts by state in total, the hour's throughput and the paused names; the
    names' rows a page of NAMES_PER_PAGE at a time, so that the page stays small with
    thousands of names."""
    page = _page_number(request.query_params.get("page"))
    stats = dict(sorted((await fetch(kickq.stats())).items()))
    totals = {state: sum(s.counts.get(state, 0) for s in stats.values()) for state in SEEN_STATES}
    pages = max(1, -(-len(stats) // NAMES_PER_PAGE))
    if page > pages:
        raise HTTPException(404, f"there are {pages} pages of names, not {page}")
    first = (page - 1) * NAMES_PER_PAGE
    shown = dict(itertools.islice(stats.items(), first, first + NAMES_PER_PAGE))
    # limits across processes, as text; the column shows when any name shown has one
    limits = {name: str(s.limits) if s.limits.any else None for name, s in shown.items()}
    return _render(request)(
        request,
        "overview.html",
        stats=shown,
        states=SEEN_STATES,
        totals=totals,
        chart=chart(minutes_of(stats)),
        sparks=charts(shown),
        limits=limits if any(v is not None for v in limits.values()) else None,
        paused=[name for name, s in stats.items() if s.paused],
        names=len(stats),
        page=page,
        pages=pages,
        first=first + 1,
        page_url=lambda number: "/?page=" + str(number) if number > 1 else "/",
    )


def _page_number(text: str | None) -> int:
    if text is None or text == "":
        return 1
    try:
        page = int(text)
    except ValueError:
        page = 0
    if not 1 <= page <= MAX_PAGE:
        raise HTTPException(400, f"page must be a whole number from 1 to {MAX_PAGE}, not {text!r}")
    return page


async def jobs(request: Request) -> Response:
    """The jobs of a name (or every name) in a state (or every state), a page at a time."""
    params = request.query_params
    name, state = params.get("name") or None, params.get("state") or None
    page = _page_number(params.get("page"))
    try:
        query = kickq.jobs(name=name, state=state)
    except (kickq.ConfigError, TypeError, ValueError) as exc:
        raise HTTPException(400, str(exc)) from None
    total, found = await asyncio.gather(
        fetch(query.count()), fetch(query.list(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE))
    )

    def page_url(number: int) -> str:
        wanted = {"name": name, "state": state, "page": number if number > 1 else None}
        return "/jobs?" + urllib.parse.urlencode({k: v for k, v in wanted.items() if v})

    return _render(request)(
        request,
        "jobs.html",
        title="Jobs",
        name=name or "",
        state=state or "",
        states=SEEN_STATES,
        jobs=found,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        first=(page - 1) * PAGE_SIZE + 1,
        page_url=page_url,
        live_names=[name] if name else None,
    )


async def job(request: Request) -> Response:
    """One job: its fields, data, result, metadata, runs and errors."""
    job_id = str(request.path_params["job_id"])
    try:
        found = await fetch(kickq.get(job_id))
    except kickq.JobNotFound:
        raise HTTPException(
            404, f"no job with id {job_id!r} (deleted, purged or never made)"
        ) from None
    now = clock.now()
    parents = _parents(found)
    return _render(request)(
        request,
        "job.html",
        title=f"Job {job_id}",
        job=found,
        options=_options(found),
        parents=parents[:SHOWN_PARENTS],
        parent_counts=collections.Counter(outcome for _, outcome, _ in parents),
        live_job=job_id,
        # a parent's end changes this page (the job's results, or its state) without an event
        # of the job's own: the page re-reads when one of those it awaits ends
        live_parents=[parent for parent, outcome, _ in parents if outcome == AWAITED][
            :SHOWN_PARENTS
        ],
        # the actions offered are those the API would apply to the job as it is now
        promotable=lifecycle.promote(found, now) is not None,
        cancellable=lifecycle.cancel(found, now) is not None,
    )


def _options(job: kickq.Job) -> dict[str, Any]:
    names = ("priority", "process_timeout", "delay", "retry", "retry_count", "retry_interval")
    more = ("ghost_retry", "ghost_count", "ghost_interval", "hotjob", "hotjob_timeout")
    options = {name: getattr(job, name) for name in (*names, *more)}
    if job.parents:
        options["after_failed"] = job.after_failed
    return options


def _parents(job: kickq.Job) -> list[tuple[str, str, Any]]:
    """Each parent of the job (`after=`) with what the job holds of it and its result:
    SUCCEEDED (the result is on the job), AWAITED (a deferred job waits for its end) or
    NO_RESULT (it failed or was deleted, or the job ended before it: the job's last_error says
    which parent failed it). Only a deferred job awaits: a job that ended keeps on its record
    the parents it awaited then."""
    awaited = set(job.awaiting) if job.state is kickq.State.DEFERRED else set()
    found = []
    for parent in job.parents:
        if parent in job.parent_results:
            found.append((parent, SUCCEEDED, job.parent_results[parent]))
        else:
            found.append((parent, AWAITED if parent in awaited else NO_RESULT, None))
    return found


async def workers(request: Request) -> Response:
    """The live workers of every process sharing the Redis and namespace."""
    found = await fetch(kickq.workers())
    return _render(request)(request, "workers.html", title="Workers", workers=found, refresh="poll")


async def schedules(request: Request) -> Response:
    """The repeatable jobs, the next to tick first."""
    found = await fetch(kickq.schedules())
    return _render(request)(
        request, "schedules.html", title="Schedules", schedules=found, refresh="poll"
    )


async def search(request: Request) -> Response:
    """GET /search?q=...: the page of the job whose id is `q`, or of the one job whose id
    starts with it (a 303 there); else a page listing the ids that share the prefix, or saying
    that no job has it (404). A prefix is looked up as `kickq show` does (`ids_starting`: a
    SCAN of the namespace's records, for people typing an id)."""
    typed = request.query_params.get("q", "").strip()
    wanted = typed.lower()
    found: list[str] = []
    status, problem = 200, None
    if not wanted:
        problem = f"Type a job id, or its first {MIN_PREFIX} digits or more, to find the job."
    elif len(wanted) > ID_DIGITS or not all(c in "0123456789abcdef" for c in wanted):
        status, typed = 400, typed[: ID_DIGITS + 1]  # a pasted page is not echoed whole
        problem = (
            f"{typed!r} is not a job id: an id is {ID_DIGITS} digits 0-9 and a-f, "
            "and its start is enough."
        )
    elif len(wanted) < MIN_PREFIX:
        status = 400
        problem = f"Give at least {MIN_PREFIX} digits of the id ({typed!r} is too short)."
    elif is_job_id(wanted):
        try:
            found = [(await fetch(kickq.get(wanted))).id]
        except kickq.JobNotFound:
            status, problem = 404, f"No job has the id {wanted} (deleted, purged or never made)."
    else:
        found = await fetch(ids_starting(wanted, SHOWN_MATCHES))
        if not found:
            status, problem = 404, f"No job has an id that starts with {wanted}."
    if len(found) == 1:
        return RedirectResponse(f"{root_of(request)}/jobs/{found[0]}", 303)
    return _render(request)(
        request,
        "search.html",
        status,
        title="Search",
        query=typed,
        found=found,
        more=len(found) == SHOWN_MATCHES,
        problem=problem,
    )
