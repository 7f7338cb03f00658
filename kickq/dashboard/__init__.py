"""kickq.dashboard: a web page over the jobs of one Redis namespace (the extra kickq[dashboard]).

    kickq dashboard [--host 127.0.0.1] [--port 8765] [--allow-actions]
    python -m kickq.dashboard ...                    (the same)
    kickq.dashboard.serve(port=8765)                 (from Python; returns when interrupted)
    app = kickq.dashboard.create_app()               (an ASGI app, to serve or mount in yours:
        Mount("/admin/kickq", app=create_app(authorize=is_admin)) in Starlette)

Server-rendered pages (Starlette, Jinja2) with no front-end build step: every name with its
counts by state, throughput over the last hour, paused names; jobs by name and state, a page at
a time; a job's data, result, runs and errors; live workers; schedules. Pages update live from
kickq's events (server-sent events). It listens on 127.0.0.1 and is read-only unless told
otherwise; only with `allow_actions` does it requeue, delete, pause and resume, and only for a
POST carrying its session's token. Job data is shown as text, never as markup. Mounted in an
app, it works at its mount point (the ASGI root_path), starts its live updates with the first
page, leaves the Host check to the app and asks `authorize(request)`, if given, who gets in.

Importing kickq never imports this package (nor Starlette); importing it without the extra
installed raises an ImportError saying what to install.
"""

from __future__ import annotations

REQUIRED = ("starlette", "uvicorn", "jinja2", "anyio")

try:
    from kickq.dashboard._app import create_app
    from kickq.dashboard._server import serve
except ModuleNotFoundError as exc:
    missing = (exc.name or "").split(".")[0]
    if missing not in REQUIRED:
        raise
    raise ImportError(
        f"kickq.dashboard needs the dashboard extra ({missing} is missing): "
        "pip install 'kickq[dashboard]'"
    ) from exc

__all__ = ["create_app", "serve"]
