"""Serving the dashboard with uvicorn: `serve()`, and the pieces tests start it from.

The socket is bound here, before uvicorn starts, so that an address in use or a bad host is an
OSError raised to the caller (the `kickq dashboard` command turns it into one line and exit
status 1) instead of uvicorn logging it and exiting the process.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from starlette.applications import Starlette

import kickq
from kickq.dashboard._app import create_app
from kickq.dashboard._guard import allowed_hosts

log = logging.getLogger("kickq.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
SHUTDOWN_GRACE = 1  # seconds open pages (their event streams) may hold up a shutdown


def check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port}")
    return port


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port).

    Made with IPPROTO_TCP named, not 0 as socket.create_server() does: asyncio turns Nagle's
    algorithm off (TCP_NODELAY) only on the connections of such a socket. With it on, a
    response written in two parts waits for the client's delayed ACK: 40 ms per request on a
    kept-alive connection."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {host!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    check_port(port)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, but once a signal (Ctrl-C, SIGTERM) has shut it down gracefully it
    returns, instead of raising the signal again: `serve()` returns and the command exits 0,
    as `kickq worker` does. A second Ctrl-C still exits at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


def server(app: Starlette) -> uvicorn.Server:
    """A uvicorn server for `app` that leaves logging alone (the caller's) and logs no line
    per request."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    return _Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_actions: bool = False,
    *,
    redis_url: str | None = None,
    namespace: str | None = None,
    hosts: Sequence[str] | None = None,
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C or SIGTERM: it then returns).

    It listens on 127.0.0.1 unless `host` says otherwise, and is read-only unless
    `allow_actions`. `redis_url` and `namespace` configure kickq first (else its config,
    KICKQ_REDIS_URL, or the embedded Redis). `hosts` are the Host header values it answers
    (default: the address it listens on and the loopback names; any, on 0.0.0.0 or ::).
    Raises OSError if it cannot listen there.
    """
    if not isinstance(allow_actions, bool):
        raise TypeError(f"allow_actions must be True or False, not {allow_actions!r}")
    options = {"redis_url": redis_url, "redis_namespace": namespace}
    kickq.config({name: value for name, value in options.items() if value is not None})
    sock = bind(host, port)
    app = create_app(allow_actions, allowed_hosts(host) if hosts is None else list(hosts))
    mode = "actions allowed" if allow_actions else "read-only"
    log.info("kickq dashboard on %s (%s)", url_of(sock), mode)
    with sock:
        server(app).run(sockets=[sock])
