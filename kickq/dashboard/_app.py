"""The dashboard's ASGI application: routes, error pages, and the live updates' lifetime."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kickq.dashboard import _actions as actions
from kickq.dashboard import _live as live
from kickq.dashboard import _pages as pages
from kickq.dashboard._guard import LOCAL_HOSTS, Guard, Sessions
from kickq.dashboard._render import Renderer

STATIC = pathlib.Path(__file__).parent / "static"
TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    render: Renderer = request.app.state.render
    title = TITLES.get(exc.status_code, "Error")
    response = render(request, "error.html", exc.status_code, title=title, message=exc.detail)
    response.headers.update(exc.headers or {})  # 405's Allow
    return response


async def _unavailable(request: Request, exc: Exception) -> Response:
    render: Renderer = request.app.state.render
    return render(request, "error.html", 503, title="Redis is unavailable", message=str(exc))


def create_app(
    allow_actions: bool = False, allowed_hosts: Sequence[str] | None = LOCAL_HOSTS
) -> Starlette:
    """The dashboard as an ASGI application, on the Redis and namespace kickq is configured
    for (`kickq.config()`, else KICKQ_REDIS_URL, else the embedded Redis).

    `allow_actions`: offer the actions (a job's requeue, delete, cancel and promote; a name's
    pause and resume; a schedule's unschedule and run-now), else every page is read-only and
    every action is refused. `allowed_hosts`: the Host header values to answer (None: any);
    `serve()` sets them from the address it listens on.
    """
    if not isinstance(allow_actions, bool):
        raise TypeError(f"allow_actions must be True or False, not {allow_actions!r}")
    fanout = live.Fanout()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        fanout.start()
        try:
            yield
        finally:
            fanout.stop()

    sessions = Sessions()
    app = Starlette(
        routes=[
            Route("/", pages.overview),
            Route("/jobs", pages.jobs),
            Route("/jobs/{job_id}", pages.job),
            Route("/workers", pages.workers),
            Route("/schedules", pages.schedules),
            Route("/search", pages.search),
            Route("/events", live.events),
            Route("/actions/{verb}", actions.act, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(Guard, hosts=allowed_hosts)],
        exception_handlers={HTTPException: _http_error, pages.Unavailable: _unavailable},
        lifespan=lifespan,
    )
    app.state.allow_actions = allow_actions
    app.state.sessions = sessions
    app.state.fanout = fanout
    app.state.render = Renderer(allow_actions, sessions)
    return app
