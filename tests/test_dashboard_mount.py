"""kickq.dashboard mounted inside an app of the user's, at /admin/kickq, in Starlette and in
FastAPI: every link, form and asset under the mount, the actions sending the browser back under
it, the Host check left to the app, the `authorize` hook, and the live feed without the mounted
app's lifespan (subscribed with the first page, cancelled after the last). The same in headless
Chromium: test_dashboard_mount_browser.py."""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.exceptions import HTTPException
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.routing import Mount

import kickq
from kickq._engine import runtime as _runtime
from kickq.dashboard import _live as live
from kickq.dashboard import _server, create_app
from kickq.dashboard._guard import LOCAL_HOSTS, SESSION_COOKIE
from support import MOUNT, AppServer, mounted_dashboard, numsub, wait_until

FRAMEWORKS = ["starlette", "fastapi", "asgi"]
URL_ATTRIBUTE = re.compile(r'\b(?:href|src|action|data-root)="([^"]*)"')
TOKEN = re.compile(r'name="token" value="([0-9a-f]{64})"')
PAGES = ["/", "/jobs", "/jobs?name=mount-seed&state=fail", "/workers", "/schedules"]


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    if request.param == "fastapi":
        pytest.importorskip("fastapi")
    return str(request.param)


@contextlib.contextmanager
def browser(app: Any) -> Iterator[httpx.Client]:
    """A browser of `app`, served, that does not follow redirects (a test looks at where they
    go)."""
    with AppServer(app) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


def urls_in(page: str) -> list[str]:
    return [html.unescape(url) for url in URL_ATTRIBUTE.findall(page)]


def fail(job: kickq.Job, data: Any) -> None:
    raise RuntimeError("mount-seed fails")


def seed() -> kickq.Job:
    """A job of mount-seed that failed for good, a delayed one, and a schedule."""
    worker = kickq.process("mount-seed", fail)
    failed = kickq.create("mount-seed", {"n": 1}).result(5)
    wait_until(lambda: kickq.get(failed.id).result(5).state is kickq.State.FAIL, what="failed")
    worker.stop(5)
    kickq.create("mount-seed", {"n": 2}, delay=3600).result(5)
    return failed


def test_every_link_form_and_asset_of_every_page_is_under_the_mount(framework: str) -> None:
    failed = seed()
    with browser(mounted_dashboard(framework, allow_actions=True)) as client:
        assert client.get("/").text == "the app's own home"
        bare = client.get(MOUNT)  # without the slash: sent to the overview
        assert bare.status_code in (307, 308) and bare.headers["location"].endswith(MOUNT + "/")
        followed: set[str] = set()
        for path in [*PAGES, f"/jobs/{failed.id}"]:
            page = client.get(MOUNT + path)
            assert page.status_code == 200, path
            assert f'data-root="{MOUNT}"' in page.text
            urls = urls_in(page.text)
            assert urls, path
            outside = [url for url in urls if url != MOUNT and not url.startswith(MOUNT + "/")]
            assert outside == [], f"{path}: {outside}"
            followed.update(url for url in urls if "/actions/" not in url and url != MOUNT)
        for url in sorted(followed):  # every link leads somewhere under the mount
            assert client.get(url).status_code == 200, url
        assert f"{MOUNT}/static/dashboard.css" in followed
        assert f"{MOUNT}/jobs/{failed.id}" in followed
        css = client.get(f"{MOUNT}/static/dashboard.css")
        assert css.headers["content-type"].startswith("text/css") and "header.top" in css.text
        script = client.get(f"{MOUNT}/static/dashboard.js")
        assert "javascript" in script.headers["content-type"] and "dataset.root" in script.text
        assert "header.top" not in client.get("/static/dashboard.css").text  # the app's, not ours


def test_actions_send_the_browser_back_under_the_mount(framework: str) -> None:
    failed = seed()
    with browser(mounted_dashboard(framework, allow_actions=True)) as client:
        page = client.get(f"{MOUNT}/jobs?name=mount-seed")
        cookie = page.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie and f"Path={MOUNT}/" in cookie  # not the whole app
        token = TOKEN.search(page.text)
        assert token
        form = {"token": token.group(1), "name": "mount-seed"}
        paused = client.post(
            f"{MOUNT}/actions/pause", data={**form, "next": f"{MOUNT}/jobs?name=mount-seed"}
        )
        assert paused.status_code == 303
        assert paused.headers["location"] == f"{MOUNT}/jobs?name=mount-seed"
        assert kickq.stats().result(5)["mount-seed"].paused
        resumed = client.post(
            f"{MOUNT}/actions/resume", data={**form, "next": "https://x.example/"}
        )
        assert resumed.headers["location"] == f"{MOUNT}/"  # not another site: the overview
        assert not kickq.stats().result(5)["mount-seed"].paused

        # the job page's delete sends the browser to the jobs of its name, under the mount
        job_page = client.get(f"{MOUNT}/jobs/{failed.id}").text
        next_of_delete = re.search(
            r'action="[^"]*/actions/delete".*?name="next" value="([^"]*)"', job_page, re.S
        )
        assert next_of_delete
        back = html.unescape(next_of_delete.group(1))
        assert back == f"{MOUNT}/jobs?name=mount-seed"
        deleted = client.post(
            f"{MOUNT}/actions/delete", data={"token": token.group(1), "id": failed.id, "next": back}
        )
        assert deleted.status_code == 303 and deleted.headers["location"] == back
        with pytest.raises(kickq.JobNotFound):
            kickq.get(failed.id).result(5)
        assert client.get(back).status_code == 200


def test_mounted_it_answers_the_apps_own_host() -> None:
    """The app owns the Host check: the dashboard answers whatever host the app is reached by,
    unless told which hosts to answer."""
    with browser(mounted_dashboard()) as client:
        for host in ("app.example", "10.0.0.7:8000", "admin.example.com"):
            assert client.get(f"{MOUNT}/", headers={"host": host}).status_code == 200, host
    with browser(mounted_dashboard(allowed_hosts=["admin.example.com"])) as client:
        assert client.get(f"{MOUNT}/", headers={"host": "admin.example.com"}).status_code == 200
        refused = client.get(f"{MOUNT}/", headers={"host": "rebound.example"})
        assert refused.status_code == 421
        # the app's own pages are the app's business
        assert client.get("/", headers={"host": "rebound.example"}).status_code == 200


def test_serve_keeps_the_dns_rebinding_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kickq dashboard` (serve()) answers only the address it listens on and the loopback."""
    served: list[Any] = []

    def run(self: Any, sockets: Any = None) -> None:
        served.append(self.config.app)

    monkeypatch.setattr(_server._Server, "run", run)
    _server.serve(port=0)
    monkeypatch.undo()
    (app,) = served
    with browser(app) as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
        assert client.get("/", headers={"host": "rebound.example:8765"}).status_code == 421
    assert set(LOCAL_HOSTS) == {"127.0.0.1", "localhost", "[::1]"}


def test_create_app_checks_hosts_and_authorize() -> None:
    with pytest.raises(TypeError, match="allowed_hosts"):
        create_app(allowed_hosts="localhost")
    with pytest.raises(TypeError, match="allowed_hosts"):
        create_app(allowed_hosts=["localhost", 8000])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="authorize must be a callable"):
        create_app(authorize=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="authorize must be a callable"):
        create_app(authorize="admin")  # type: ignore[arg-type]


def staff_only(request: Request) -> bool:
    return request.headers.get("x-staff") == "yes"


async def staff_only_async(request: Request) -> bool:
    return request.headers.get("x-staff") == "yes"


class StaffOnly:
    async def __call__(self, request: Request) -> bool:
        return request.headers.get("x-staff") == "yes"


@pytest.mark.parametrize("authorize", [staff_only, staff_only_async, StaffOnly()])
def test_authorize_decides_every_route_but_the_static_files(authorize: Any) -> None:
    job = kickq.create("mount-auth").result(5)
    app = mounted_dashboard(allow_actions=True, authorize=authorize)
    staff = {"x-staff": "yes"}
    with browser(app) as client:
        for path in [*PAGES, f"/jobs/{job.id}", "/events", "/nowhere"]:
            refused = client.get(MOUNT + path)
            assert refused.status_code == 403, path
            assert "not authorized" in refused.text and "set-cookie" not in refused.headers
            assert "default-src 'none'" in refused.headers["content-security-policy"]
        page = client.get(f"{MOUNT}/jobs/{job.id}", headers=staff)
        assert page.status_code == 200 and job.id in page.text
        token = TOKEN.search(page.text)
        assert token
        act = {"token": token.group(1), "name": "mount-auth"}
        assert client.post(f"{MOUNT}/actions/pause", data=act).status_code == 403
        assert not kickq.stats().result(5)["mount-auth"].paused
        assert client.post(f"{MOUNT}/actions/pause", data=act, headers=staff).status_code == 303
        assert kickq.stats().result(5)["mount-auth"].paused
        assert client.get(f"{MOUNT}/static/dashboard.css").status_code == 200
        assert client.get("/").status_code == 200  # the app's own pages are the app's
    fanout = app.state.dashboard.state.fanout
    assert fanout.viewers == 0 and not fanout.subscribed  # a refused stream never joined


def test_authorize_may_answer_with_a_challenge_and_must_say_yes_or_no() -> None:
    def basic(request: Request) -> bool:
        if "authorization" not in request.headers:
            raise HTTPException(401, "sign in", headers={"WWW-Authenticate": 'Basic realm="q"'})
        return request.headers["authorization"] == "Basic YWRtaW46c2VjcmV0"  # admin:secret

    with browser(mounted_dashboard(authorize=basic)) as client:
        challenged = client.get(f"{MOUNT}/")
        assert challenged.status_code == 401
        assert challenged.headers["www-authenticate"] == 'Basic realm="q"'
        assert client.get(f"{MOUNT}/", auth=("admin", "nope")).status_code == 403
        assert client.get(f"{MOUNT}/", auth=("admin", "secret")).status_code == 200

    unsure = mounted_dashboard(authorize=lambda request: request.headers.get("x-user"))
    with browser(unsure) as client:
        assert client.get(f"{MOUNT}/", headers={"x-user": "ann"}).status_code == 500  # not in


class HeaderUsers(AuthenticationBackend):
    """The app's own authentication: the user a trusted proxy names in X-User."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


def test_the_apps_own_authentication_middleware_reaches_the_dashboard() -> None:
    """The app's middleware runs before the mounted dashboard: `authorize` reads its user."""
    dashboard = create_app(authorize=lambda request: request.user.is_authenticated)
    app = Starlette(routes=[Mount(MOUNT, app=dashboard)])
    app.add_middleware(AuthenticationMiddleware, backend=HeaderUsers())
    with browser(app) as client:
        assert client.get(f"{MOUNT}/").status_code == 403
        assert client.get(f"{MOUNT}/", headers={"x-user": "ann"}).status_code == 200


def changes(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def listener_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "kickq-listener")


def test_live_feed_works_mounted_without_the_lifespan(
    framework: str, r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mounted dashboard's lifespan never runs: the first stream subscribes, the last one
    to leave lets the subscriptions go after LINGER; one subscription on the wire throughout."""
    monkeypatch.setattr(live, "LINGER", 0.5)
    channel = _runtime.get().keys.event("create")
    app = mounted_dashboard(framework)
    fanout: live.Fanout = app.state.dashboard.state.fanout
    with AppServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get(f"{MOUNT}/").status_code == 200
        assert not fanout.subscribed and numsub(r, channel) == 0  # nobody listens yet
        for _ in range(2):  # and again once the first stream's subscriptions went
            with (
                client.stream("GET", f"{MOUNT}/events") as first,
                client.stream("GET", f"{MOUNT}/events") as second,
            ):
                assert first.headers["content-type"].startswith("text/event-stream")
                wait_until(lambda: fanout.viewers == 2, what="two viewers")
                assert fanout.subscribed and numsub(r, channel) == 1
                job = kickq.create("mount-live", {"x": 1}).result(5)
                for stream in (first, second):
                    message = next(changes(stream))
                    assert message["ids"] == [job.id] and message["names"] == ["mount-live"]
            wait_until(lambda: fanout.viewers == 0, what="the pages to leave")
            wait_until(lambda: not fanout.subscribed, what="the subscriptions to go")
            wait_until(lambda: numsub(r, channel) == 0, what="the channel unsubscribed")
            assert listener_threads() == 1  # kickq's one pub/sub connection, still there
    assert listener_threads() == 1


def test_a_page_that_comes_back_keeps_the_subscriptions(
    r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload (the stream closes, another opens) within LINGER subscribes nothing anew."""
    monkeypatch.setattr(live, "LINGER", 60.0)
    app = mounted_dashboard()
    fanout: live.Fanout = app.state.dashboard.state.fanout
    with AppServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        with client.stream("GET", f"{MOUNT}/events"):
            wait_until(lambda: fanout.viewers == 1, what="the viewer")
            kept = list(fanout._subscriptions)
        wait_until(lambda: fanout.viewers == 0, what="the page to leave")
        with client.stream("GET", f"{MOUNT}/events") as again:
            wait_until(lambda: fanout.viewers == 1, what="the viewer back")
            assert fanout._subscriptions == kept
            job = kickq.create("mount-back").result(5)
            assert next(changes(again))["ids"] == [job.id]


def test_two_mounted_dashboards_share_one_subscription_on_the_wire(r: Any) -> None:
    first, second = create_app(), create_app(allow_actions=True)
    app = Starlette(routes=[Mount("/ro", app=first), Mount("/rw", app=second)])
    channel = _runtime.get().keys.event("create")
    with (
        AppServer(app) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/ro/events") as one,
        client.stream("GET", "/rw/events") as other,
    ):
        wait_until(lambda: first.state.fanout.viewers == 1 == second.state.fanout.viewers)
        assert numsub(r, channel) == 1
        job = kickq.create("mount-two").result(5)
        assert next(changes(one))["ids"] == [job.id] == next(changes(other))["ids"]


def test_behind_a_proxy_that_strips_the_prefix(r: Any) -> None:
    """`uvicorn --root-path /admin/kickq`: the proxy sends /jobs, the page links /admin/kickq."""
    job = kickq.create("mount-proxy").result(5)
    server = AppServer(create_app())
    server.server.config.root_path = MOUNT
    with server, httpx.Client(base_url=server.url, timeout=20) as client:
        page = client.get("/jobs")
        assert page.status_code == 200 and job.id in page.text
        urls = urls_in(page.text)
        assert f"{MOUNT}/jobs/{job.id}" in urls and f"{MOUNT}/static/dashboard.css" in urls
        assert [url for url in urls if not url.startswith(MOUNT)] == []
        assert client.get("/static/dashboard.css").status_code == 200
