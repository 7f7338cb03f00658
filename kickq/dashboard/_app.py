"""The dashboard's ASGI application: routes, error pages, and the live updates' lifetime.

It works at the top of a site and mounted inside an app (`Mount("/admin/kickq", app=...)`):
every link starts at the ASGI root_path (see _render.root_of), the live updates start with the
first page that listens (a mounted app's lifespan never runs), and the app that mounts it owns
the Host check and may decide who gets in (`authorize`).
"""

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
from kickq.dashboard._guard import (
    Authorization,
    Authorize,
    Guard,
    Sessions,
    check_authorize,
    check_hosts,
)
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
    allow_actions: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    *,
    authorize: Authorize | None = None,
) -> Starlette:
    """The dashboard as an ASGI application, on the Redis and namespace kickq is configured
    for (`kickq.config()`, else KICKQ_REDIS_URL, else the embedded Redis): to serve with a
    server of your own, or to mount in your app, at any path (`Mount("/admin/kickq", app=...)`
    in Starlette, `app.mount("/admin/kickq", ...)` in FastAPI).

    `allow_actions`: offer the actions (a job's requeue, delete, cancel and promote; a name's
    pause and resume; a schedule's unschedule and run-now), else every page is read-only and
    every action is refused. `allowed_hosts`: the Host header values to answer; None (the
    default) answers any, leaving that check to your app or server (Starlette's
    TrustedHostMiddleware, your proxy); `serve()` sets them from the address it listens on.
    `authorize(request)`: who may see the dashboard, checked on every request but the static
    files' (the CSS and the script), the live stream and the actions included: True lets the
    request in, False refuses it (403); an HTTPException it raises is the answer (a 401 with
    a WWW-Authenticate header, for one). It may be async; a plain function runs in the thread
    pool. It must not read the request's body.
    """
    if not isinstance(allow_actions, bool):
        raise TypeError(f"allow_actions must be True or False, not {allow_actions!r}")
    hosts = check_hosts(allowed_hosts)
    authorize = check_authorize(authorize)
    fanout = live.Fanout()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # the live updates start with the first page that listens, lifespan or not; a server
        # that runs the lifespan stops them with itself
        try:
            yield
        finally:
            fanout.stop()

    middleware = [Middleware(Guard, hosts=hosts)]
    if authorize is not None:
        middleware.append(Middleware(Authorization, authorize=authorize))
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
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, pages.Unavailable: _unavailable},
        lifespan=lifespan,
    )
    app.state.allow_actions = allow_actions
    app.state.sessions = sessions
    app.state.fanout = fanout
    app.state.render = Renderer(allow_actions, sessions)
    return app
