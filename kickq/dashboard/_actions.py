"""Actions, as POSTs (`POST /actions/<verb>`): a job's requeue, delete, cancel and promote; a
name's pause, resume and requeue of its failed jobs; a schedule's unschedule and run-now.

Refused (403) unless the dashboard was started with `allow_actions` (`--allow-actions`), and
refused (403) without the session's token (see _guard.Sessions). A form is small and urlencoded;
the browser is then sent back (303) to the page it came from: `next`, a path of this site.
"""

from __future__ import annotations

import concurrent.futures
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import kickq
from kickq.dashboard._guard import Sessions
from kickq.dashboard._pages import fetch
from kickq.dashboard._render import root_of

MAX_BODY = 4096  # bytes: a form holds a token, an id or a name, and a path
Form = dict[str, str]

READ_ONLY = (
    "this dashboard is read-only: start it with --allow-actions (allow_actions=True) to "
    "act on jobs, names or schedules"
)
NO_TOKEN = "this action carries no valid token for your session: reload the page and try again"


async def _form(request: Request) -> Form:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"an action's form is at most {MAX_BODY} bytes")
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "an action's form must be UTF-8 text") from None
    return dict(pairs)


def _field(form: Form, name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise HTTPException(400, f"this action needs a {name}")
    return value


def _back(request: Request, form: Form) -> str:
    """Where to send the browser: the form's `next` if it is a path of this site, else the
    dashboard's overview."""
    target = form.get("next", "")
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return root_of(request) + "/"
    return target


async def _requeue(form: Form) -> None:
    job_id = _field(form, "id")
    try:
        await fetch(kickq.requeue(job_id))
    except kickq.JobNotFound:
        raise HTTPException(404, f"no job with id {job_id!r}") from None
    except ValueError as exc:  # it has not failed for good
        raise HTTPException(409, str(exc)) from None


async def _delete(form: Form) -> None:
    job_id = _field(form, "id")
    if not await fetch(kickq.delete(job_id)):
        raise HTTPException(404, f"no job with id {job_id!r}")


async def _cancel(form: Form) -> None:
    job_id = _field(form, "id")
    try:
        cancelled = await fetch(kickq.cancel(job_id))
    except kickq.JobNotFound:
        raise HTTPException(404, f"no job with id {job_id!r}") from None
    if not cancelled:
        raise HTTPException(409, f"job {job_id} is already complete: there is nothing to cancel")


async def _promote(form: Form) -> None:
    job_id = _field(form, "id")
    try:
        await fetch(kickq.promote(job_id))
    except kickq.JobNotFound:
        raise HTTPException(404, f"no job with id {job_id!r}") from None
    except ValueError as exc:  # it is not waiting
        raise HTTPException(409, str(exc)) from None


async def _schedule(form: Form) -> kickq.Schedule:
    key = _field(form, "key")
    for schedule in await fetch(kickq.schedules()):
        if schedule.key == key:
            return schedule
    raise HTTPException(404, f"no schedule with key {key!r}")


async def _unschedule(form: Form) -> None:
    key = _field(form, "key")
    try:
        existed = await fetch(kickq.unschedule(key))
    except kickq.ConfigError as exc:  # not a key a schedule can have
        raise HTTPException(400, str(exc)) from None
    if not existed:
        raise HTTPException(404, f"no schedule with key {key!r}")


async def _run_schedule(form: Form) -> None:
    """One job of the schedule now, as a tick would make it (its name, data and options);
    its ticks go on as before."""
    schedule = await _schedule(form)
    try:
        await fetch(kickq.create(schedule.name, schedule.data, dict(schedule.options)))
    except (TypeError, ValueError) as exc:  # options this process's config refuses
        raise HTTPException(409, f"schedule {schedule.key!r} cannot run now: {exc}") from None


async def _by_name(form: Form, verb: Callable[[str], concurrent.futures.Future[Any]]) -> None:
    try:
        await fetch(verb(_field(form, "name")))
    except (TypeError, ValueError) as exc:  # a bad name (ConfigError is a ValueError)
        raise HTTPException(400, str(exc)) from None


async def _requeue_failed(form: Form) -> None:
    name = _field(form, "name")
    await _by_name(form, lambda _: kickq.jobs(name=name, state="fail").requeue())


ACTIONS: dict[str, Callable[[Form], Awaitable[None]]] = {
    "requeue": _requeue,
    "delete": _delete,
    "pause": lambda form: _by_name(form, kickq.pause),
    "resume": lambda form: _by_name(form, kickq.resume),
    "requeue-failed": _requeue_failed,
    "cancel": _cancel,
    "promote": _promote,
    "unschedule": _unschedule,
    "run-schedule": _run_schedule,
}


async def act(request: Request) -> Response:
    """POST /actions/<verb>: check that actions are on and the token is right, then act."""
    if not request.app.state.allow_actions:
        raise HTTPException(403, READ_ONLY)
    sessions: Sessions = request.app.state.sessions
    form = await _form(request)
    if not sessions.check(request, form.get("token", "")):
        raise HTTPException(403, NO_TOKEN)
    run = ACTIONS.get(str(request.path_params["verb"]))
    if run is None:
        raise HTTPException(404, f"no action {request.path_params['verb']!r}")
    await run(form)
    return RedirectResponse(_back(request, form), 303)
