"""What keeps the dashboard safe to leave open: response headers, the Host check, action tokens.

- Every response carries a Content-Security-Policy that allows scripts, styles and connections
  from the dashboard itself only: even if some job data slipped through as markup, no inline
  script or event handler of it would run. Pages are not to be framed, sniffed or cached.
- The Host header must name the address the dashboard listens on (DNS rebinding: a web page
  whose host name suddenly resolves to 127.0.0.1 must not read the dashboard).
- An action is a POST carrying the token of its session: a random session id in a cookie
  (HttpOnly, SameSite=Strict) and, in each form, an HMAC of that id under a key of this server
  process, compared in constant time. Another site can neither read the token nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from starlette.datastructures import Headers
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
    def set_cookie(response: Response, session: str) -> None:
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
