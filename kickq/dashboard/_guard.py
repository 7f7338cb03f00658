"""What keeps the dashboard safe to leave open: response headers, the Host check, action tokens.

- Every response carries a Content-Security-Policy that allows scripts, styles and connections
  from the dashboard itself only: even if some job data slipped through as markup, no inline
  script or event handler of it would run. Pages are not to be framed, sniffed or cached.
- Served by `kickq dashboard` (`serve()`), the Host header must name the address the dashboard
  listens on (DNS rebinding: a web page whose host name suddenly resolves to 127.0.0.1 must not
  read the dashboard). An app of the user's (`create_app()`, mounted or served by the user's
  own server) answers any Host unless told which: there the app or its server owns that check.
- `authorize(request)`, when given, decides every request but the static files': False is
  403, and whatever HTTPException it raises is answered as such (a 401 with its challenge).
- An action is a POST carrying the token of its session: a random session id in a cookie
  (HttpOnly, SameSite=Strict) and, in each form, an HMAC of that id under a key of this server
  process, compared in constant time. Another site can neither read the token nor forge it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ANY_ADDRESS = ("0.0.0.0", "::", "")
SESSION_COOKIE = "kickq_session"
_SESSION = re.compile(r"[A-Za-z0-9_-]{32,64}")
PUBLIC = "/static/"  # what every visitor may fetch, authorized or not: the CSS, the script
NOT_AUTHORIZED = "kickq dashboard: not authorized"
Authorize = Callable[[Request], "bool | Awaitable[bool]"]


def check_hosts(hosts: object) -> list[str] | None:
    """`allowed_hosts` as given to create_app(): host names, or None for any."""
    if hosts is None:
        return None
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, (Sequence, set, frozenset)):
        raise TypeError(f"allowed_hosts must be a list of host names or None, not {hosts!r}")
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise TypeError(f"allowed_hosts must hold host names (str), not {host!r}")
    return list(hosts)


def check_authorize(authorize: object) -> Authorize | None:
    if authorize is not None and not callable(authorize):
        raise TypeError(
            f"authorize must be a callable taking the request (or None), not {authorize!r}"
        )
    return authorize


def allowed_hosts(host: str) -> list[str] | None:
    """The Host header values to accept when listening on `host`; None: any (the dashboard
    listens on every address, so it cannot know the names it is reached by)."""
    if host in ANY_ADDRESS:
        return None
    literal = f"[{host}]" if ":" in host else host
    return list(dict.fromkeys([literal.lower(), *LOCAL_HOSTS]))


def _host_of(header: str) -> str:
    """The host part of a Host header: "[::1]:8765" -> "[::1]", "Example:80" -> "example"."""
    if header.startswith("["):
        return header[: header.find("]") + 1].lower()
    return header.split(":", 1)[0].lower()


class Guard:
    """ASGI middleware: the Host check and the security headers of every response."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str] | None) -> None:
        self.app = app
        self.hosts = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _host_of(Headers(scope=scope).get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            response = PlainTextResponse("kickq dashboard: unknown Host header", 421)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        return send_with_headers


def _is_async(function: object) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    if inspect.iscoroutinefunction(function):
        return True
    method = inspect.getattr_static(type(function), "__call__", None)  # an async __call__
    return inspect.iscoroutinefunction(method)


async def authorized(authorize: Authorize, request: Request) -> bool:
    """What `authorize` says of `request`: an async one is awaited, a plain one runs in the
    thread pool (it may read a database), and what it returns may be awaitable."""
    if _is_async(authorize):
        result: object = await authorize(request)  # type: ignore[misc]
    else:
        result = await run_in_threadpool(authorize, request)
        if inspect.isawaitable(result):
            result = await result
    if not isinstance(result, bool):  # fail closed, and say why
        raise TypeError(f"authorize must return True or False, not {result!r}")
    return result


def route_path(scope: Scope) -> str:
    """The path within the dashboard: "/static/x.css" of "/admin/kickq/static/x.css"."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class Authorization:
    """ASGI middleware: `authorize(request)` decides every request but the static files'."""

    def __init__(self, app: ASGIApp, authorize: Authorize) -> None:
        self.app = app
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope).startswith(PUBLIC):
            await self.app(scope, receive, send)
            return
        try:
            allowed = await authorized(self.authorize, Request(scope, receive))
            refusal: Response = PlainTextResponse(NOT_AUTHORIZED, 403)
        except HTTPException as exc:  # the hook's own answer: 401 with its challenge, ...
            allowed = False
            refusal = PlainTextResponse(f"kickq dashboard: {exc.detail}", exc.status_code)
            refusal.headers.update(exc.headers or {})
        if allowed:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)


class Sessions:
    """Per-session action tokens under a key that lives as long as this server process."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    @staticmethod
    def session_of(request: Request) -> str | None:
        value = request.cookies.get(SESSION_COOKIE, "")
        return value if _SESSION.fullmatch(value) else None

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    def token(self, session: str) -> str:
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def check(self, request: Request, token: str) -> bool:
        """Whether `token` (from the form) belongs to the request's session."""
        session = self.session_of(request)
        if session is None or not token:
            return False
        return secrets.compare_digest(self.token(session).encode(), token.encode())

    @staticmethod
    def set_cookie(response: Response, session: str, path: str = "/") -> None:
        """The session's cookie, sent back only to the dashboard's pages (`path`: where it is
        mounted), not to the rest of an app that mounts it."""
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path=path)
