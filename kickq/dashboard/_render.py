"""Rendering pages: the Jinja2 environment (autoescape on), its filters, and `render()`.

Everything a job brings (its name, data, result, errors, metadata) reaches a page through a
template expression and is escaped there: it is shown as text, never read as markup. Filters
turn values into text first (JSON for data, "3 min ago" for times); none marks anything safe.

A page is its content template inside layout.html; a request with the X-Kickq-Fragment header
(the live updates' re-read, see static/dashboard.js) gets the content alone.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

import kickq
from kickq._model import clock
from kickq.dashboard._guard import Sessions

FRAGMENT_HEADER = "x-kickq-fragment"


def as_json(value: Any, indent: int | None = 2) -> str:
    """A value as JSON text, as the API and the events carry it."""
    return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True, default=str)


def short(value: Any, width: int = 80) -> str:
    """A one-line preview of data or a result, cut at `width` characters."""
    text = value if isinstance(value, str) else as_json(value, None)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def num(value: int) -> str:
    """A count for people: 100,000."""
    return f"{value:,}"


def when(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(clock.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    """A duration for people: 0.4 ms, 12 ms, 4.20 s, 42.0 s, 3 min, 2 h, 5 d."""
    if value is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if value >= 2 * size:
            return f"{value / size:.0f} {unit}"
    if value < 1:
        ms = value * 1000
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def ago(moment: datetime.datetime | None) -> str:
    """How long ago (or, for a time to come, in how long): "3 min ago", "in 4.0 s"."""
    if moment is None:
        return "-"
    delta = (clock.now() - moment).total_seconds()
    return f"{seconds(delta)} ago" if delta >= 0 else f"in {seconds(-delta)}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kickq.dashboard", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(as_json=as_json, short=short, num=num, when=when, seconds=seconds, ago=ago)
    return env


class Renderer:
    """Renders pages with what every page needs: the navigation, whether actions are on, and
    the session's action token (a new session gets its cookie with the page)."""

    def __init__(self, allow_actions: bool, sessions: Sessions) -> None:
        self.env = environment()
        self.allow_actions = allow_actions
        self.sessions = sessions

    def __call__(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        session = self.sessions.session_of(request) if self.allow_actions else None
        fresh = self.allow_actions and session is None
        if fresh:
            session = self.sessions.new_session()
        context.update(
            allow_actions=self.allow_actions,
            token=self.sessions.token(session) if session else "",
            path=request.url.path,
            root=root_of(request),
            here=_here(request),
            namespace=kickq.config()["redis_namespace"],
            content=template,
        )
        fragment = request.headers.get(FRAGMENT_HEADER) == "1"
        page = self.env.get_template(template if fragment else "layout.html").render(context)
        response = HTMLResponse(page, status, headers={"cache-control": "no-store"})
        if fresh and session:
            self.sessions.set_cookie(response, session, root_of(request) + "/")
        return response


def root_of(request: Request) -> str:
    """Where the dashboard is mounted: "" at the top of a site, "/admin/kickq" when an app
    mounts it there. Every link and form of a page starts with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _here(request: Request) -> str:
    """The page's own path and query: where an action sends the browser back to."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
