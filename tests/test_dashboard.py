"""kickq.dashboard's pages and actions over HTTP (the dashboard served in a thread of this
process): what each page shows, paging, escaping, the security headers, and actions refused
without allow_actions or without the session's token. test_dashboard_browser.py drives a real
browser; test_dashboard_serve.py the event stream, the command line and the extra."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

import kickq
from kickq.dashboard import _pages as pages
from kickq.dashboard import create_app
from kickq.dashboard._guard import LOCAL_HOSTS, allowed_hosts
from support import DashboardServer, wait_until

PROBE = "<script>alert(1)</script>"
DASH = "\u2013"  # the en dash of "Jobs 1-50 of 120"
TOKEN = re.compile(r'name="token" value="([0-9a-f]{64})"')


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A browser of a read-only dashboard."""
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=20) as browser:
        yield browser


@pytest.fixture
def dashboard() -> Iterator[DashboardServer]:
    """A dashboard with actions allowed."""
    with DashboardServer(allow_actions=True) as server:
        yield server


@pytest.fixture
def actor(dashboard: DashboardServer) -> Iterator[httpx.Client]:
    """A browser of the dashboard with actions allowed (redirects are not followed)."""
    with httpx.Client(base_url=dashboard.url, timeout=20) as browser:
        yield browser


def count_in(page: str, name: str, state: str) -> int:
    row = re.search(rf'<tr data-name="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {name}"
    cell = re.search(rf'data-state="{state}"><a [^>]*>([\d,]+)</a>', row.group(1))
    assert cell, f"no {state} count for {name}"
    return int(cell.group(1).replace(",", ""))


def ids_in(page: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)">', page)


def token_of(test_client: httpx.Client, path: str = "/") -> str:
    found = TOKEN.search(test_client.get(path).text)
    assert found, "no action form on the page"
    return found.group(1)


def fail_first(job: kickq.Job, data: dict[str, int]) -> dict[str, int]:
    if data["n"] == 0:
        raise RuntimeError("<b>boom</b> & more")
    return {"double": data["n"] * 2}


def seed_failures(name: str, n: int) -> list[kickq.Job]:
    """n jobs of `name`: the one with n == 0 fails for good, the others succeed."""
    worker = kickq.process(name, fail_first, concurrent_jobs=4)
    jobs = [f.result(5) for f in [kickq.create(name, {"n": i}) for i in range(n)]]
    query = kickq.jobs(name=name, state=["success", "fail"])
    wait_until(lambda: query.count().result(5) == n, what=f"{n} jobs of {name} done")
    worker.stop(5)
    return jobs


@pytest.mark.both_backends
def test_overview_shows_every_name_with_its_counts(client: httpx.Client) -> None:
    """Counts by state per name and in total, the hour's throughput, and paused names."""
    for _ in range(3):
        kickq.create("dash-email", {"to": "a@b.c"}).result(5)
    kickq.create("dash-report", None, delay=600).result(5)
    kickq.pause("dash-report").result(5)
    seed_failures("dash-resize", 3)
    page = client.get("/").text
    assert count_in(page, "dash-email", "queued") == 3
    assert count_in(page, "dash-report", "delayed") == 1
    assert count_in(page, "dash-resize", "success") == 2
    assert count_in(page, "dash-resize", "fail") == 1
    assert count_in(page, "dash-email", "success") == 0
    assert re.search(r'class="num total" data-state="queued"><a [^>]*>3</a>', page)
    assert "2 succeeded" in page and "1 failed" in page
    assert re.search(r'Paused: <a href="/jobs\?name=dash-report">dash-report</a>', page)
    assert page.count('<svg class="chart spark"') == 3


def test_overview_shows_the_limits(client: httpx.Client) -> None:
    """A name's limits across processes are on the overview, as text."""
    kickq.create("dash-crawl").result(5)
    assert "Limits" not in client.get("/").text  # no name has any
    kickq.limit("dash-crawl", rate=(100, 60), concurrency=5).result(5)
    assert "100 per 60 s, 5 at once" in client.get("/").text


def test_overview_of_an_empty_namespace(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "No jobs in this namespace yet." in response.text
    assert "0 succeeded" in response.text


@pytest.mark.both_backends
def test_jobs_by_name_and_state_a_page_at_a_time(client: httpx.Client) -> None:
    """Pages of 50, the newest first, that together list every job once."""
    made = [f.result(5).id for f in kickq.create_many("dash-bulk", [{"i": i} for i in range(120)])]
    kickq.create("dash-other").result(5)
    first = client.get("/jobs", params={"name": "dash-bulk"}).text
    assert f"Jobs 1{DASH}50 of 120" in first and "page 1 of 3" in first
    seen = ids_in(first)
    for number in (2, 3):
        seen += ids_in(client.get("/jobs", params={"name": "dash-bulk", "page": number}).text)
    assert sorted(seen) == sorted(made)
    assert seen[0] == made[-1]  # the most recently updated first
    last = client.get("/jobs", params={"name": "dash-bulk", "page": 3}).text
    assert f"Jobs 101{DASH}120 of 120" in last and 'rel="next"' not in last
    queued = client.get("/jobs", params={"state": "queued"}).text
    assert "of 121" in queued
    assert "No jobs match." in client.get("/jobs", params={"state": "fail"}).text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "nope"}, "unknown state &#39;nope&#39;"),
        ({"page": "0"}, "page must be a whole number"),
        ({"page": "x"}, "page must be a whole number"),
        ({"name": "n", "page": "99999999"}, "page must be a whole number"),
    ],
)
def test_jobs_page_refuses_bad_input(
    client: httpx.Client, params: dict[str, str], message: str
) -> None:
    response = client.get("/jobs", params=params)
    assert response.status_code == 400
    assert message in response.text


def test_job_page_shows_the_last_progress_reported(client: httpx.Client) -> None:
    """A job that reported progress shows its last value; one that never did shows none."""

    def reporting(job: kickq.Job, data: None) -> str:
        for done in range(1, 4):
            kickq.progress({"done": done, "of": 3})
        return "ok"

    worker = kickq.process("dash-progress", reporting)
    reported = kickq.create("dash-progress", None, hotjob=True).result(5)
    reported.hotjob_future.result(15)
    worker.stop(5)
    silent = kickq.create("dash-silent").result(5)
    page = client.get(f"/jobs/{reported.id}").text
    assert 'id="job-progress"' in page
    assert '"done": 3' in html.unescape(page)
    assert 'id="job-progress"' not in client.get(f"/jobs/{silent.id}").text


def test_job_page_shows_data_result_runs_and_errors(client: httpx.Client) -> None:
    """A retried job: its data, result, metadata, both runs and the first run's error, as text."""

    def once_then_ok(job: kickq.Job, data: dict[str, int]) -> dict[str, int]:
        if len(job.runs) == 1:
            raise RuntimeError("<b>boom</b> & more")
        return {"double": data["n"] * 2}

    worker = kickq.process("dash-retry", once_then_ok)
    job = kickq.create(
        "dash-retry", {"n": 21}, retry=True, retry_interval=0, meta={"trace": "t-1"}
    ).result(5)
    done = kickq.wait(job.id, 10).result(15)
    worker.stop(5)
    page = client.get(f"/jobs/{job.id}").text
    assert done.result == {"double": 42}
    text = html.unescape(page)
    assert '"double": 42' in text and '"n": 21' in text and '"trace": "t-1"' in text
    assert page.count('<td class="num">1</td>') == 1 and page.count('<td class="num">2</td>') == 1
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; more" in page
    assert "<b>boom</b>" not in page
    assert "complete: succeeded" in page


def test_job_data_and_names_are_text_never_markup(client: httpx.Client) -> None:
    """The script probe, in data and in a name, is escaped on every page that shows it."""
    name = '<img src=x onerror="alert(2)">'
    job = kickq.create(name, PROBE, meta={"note": PROBE}).result(5)
    for path in ("/", f"/jobs/{job.id}", "/jobs", f"/jobs?name={name}"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert PROBE not in response.text, path
        assert "<img src=x" not in response.text, path
        assert "&lt;img src=x onerror=" in response.text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/jobs/{job.id}").text


def test_every_response_carries_the_security_headers(client: httpx.Client) -> None:
    for path in ("/", "/jobs", "/static/dashboard.js", "/nowhere"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert "default-src 'none'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/").headers["cache-control"] == "no-store"


def test_unknown_job_and_unknown_page(client: httpx.Client) -> None:
    for path in ("/jobs/0123456789abcdef0123456789abcdef", "/jobs/not-an-id", "/nowhere"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text


def test_workers_page_lists_live_workers(client: httpx.Client) -> None:
    worker = kickq.process(["dash-a", "dash-b"], lambda job, data: None, concurrent_jobs=3)
    [info] = wait_until(lambda: kickq.workers().result(5), what="the worker's heartbeat")
    page = client.get("/workers").text
    worker.stop(5)
    assert "1 live worker:" in page
    assert f'<tr data-id="{info.id}">' in page
    assert "0 / 3" in page and ">dash-a</a>, <a" in page
    assert 'data-refresh="poll"' in page


def test_schedules_page_lists_schedules(client: httpx.Client) -> None:
    assert "0 repeatable jobs" in client.get("/schedules").text
    kickq.schedule("dash-tick", {"k": PROBE}, every=120, key="dash-tick-2m").result(5)
    kickq.schedule("dash-cron", cron="0 9 * * MON-FRI", tz="Europe/Athens").result(5)
    page = client.get("/schedules").text
    assert "2 repeatable jobs" in page
    assert '<tr data-key="dash-tick-2m">' in page and "2 min" in page
    assert "<code>0 9 * * MON-FRI</code>" in page and "Europe/Athens" in page
    assert PROBE not in page


def test_redis_unavailable_is_a_page_not_a_hang(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "WAIT", 5.0)
    kickq.config(redis_url="redis://127.0.0.1:1")
    response = client.get("/")
    assert response.status_code == 503
    assert "Redis is unavailable" in response.text


def test_host_header_must_name_this_server(client: httpx.Client) -> None:
    """DNS rebinding: a page of another site that resolves to 127.0.0.1 gets nothing."""
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
    assert client.get("/", headers={"host": "[::1]:8765"}).status_code == 200
    refused = client.get("/", headers={"host": "rebound.example:8765"})
    assert refused.status_code == 421
    assert "default-src 'none'" in refused.headers["content-security-policy"]
    assert client.get("/", headers={"host": "127.0.0.1.rebound.example"}).status_code == 421


def test_allowed_hosts_follow_the_listening_address() -> None:
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("::") is None
    assert allowed_hosts("::1") == ["[::1]", "127.0.0.1", "localhost"]
    assert allowed_hosts("10.1.2.3") == ["10.1.2.3", *LOCAL_HOSTS]
    assert allowed_hosts("Box.Local")[0] == "box.local"  # type: ignore[index]


def test_read_only_offers_no_action_and_refuses_every_one(client: httpx.Client) -> None:
    kickq.create("dash-ro").result(5)
    page = client.get("/")
    assert 'class="action"' not in page.text and "read-only" in page.text
    assert "set-cookie" not in page.headers
    for verb in ("pause", "resume", "delete", "requeue", "requeue-failed"):
        response = client.post(f"/actions/{verb}", data={"name": "dash-ro", "token": "x" * 64})
        assert response.status_code == 403, verb
        assert "--allow-actions" in response.text
    assert not kickq.stats().result(5)["dash-ro"].paused


def test_actions_need_the_session_token(actor: httpx.Client, dashboard: DashboardServer) -> None:
    """No token, a wrong one, or another session's: 403 and nothing done."""
    kickq.create("dash-token").result(5)
    token = token_of(actor)
    with httpx.Client(base_url=dashboard.url) as other:
        other_token = token_of(other)
    for data in ({"name": "dash-token"}, {"name": "dash-token", "token": "0" * 64}):
        response = actor.post("/actions/pause", data=data)
        assert response.status_code == 403
        assert "no valid token" in response.text
    assert (
        actor.post("/actions/pause", data={"name": "dash-token", "token": other_token}).status_code
        == 403
    )
    actor.cookies.clear()
    assert (
        actor.post("/actions/pause", data={"name": "dash-token", "token": token}).status_code == 403
    )
    assert not kickq.stats().result(5)["dash-token"].paused


def test_pause_and_resume_with_the_token(actor: httpx.Client) -> None:
    kickq.create("dash-pause").result(5)
    token = token_of(actor)
    form = {"name": "dash-pause", "token": token, "next": "/jobs?name=dash-pause"}
    response = actor.post("/actions/pause", data=form)
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs?name=dash-pause"
    assert kickq.stats().result(5)["dash-pause"].paused
    assert "Resume" in actor.get("/").text
    assert actor.post("/actions/resume", data=form).status_code == 303
    assert not kickq.stats().result(5)["dash-pause"].paused


def test_requeue_and_delete_with_the_token(actor: httpx.Client) -> None:
    failed, ok, _ = seed_failures("dash-fix", 3)
    token = token_of(actor, f"/jobs/{failed.id}")
    assert actor.post("/actions/requeue", data={"id": ok.id, "token": token}).status_code == 409
    assert actor.post("/actions/requeue", data={"id": failed.id, "token": token}).status_code == 303
    assert kickq.get(failed.id).result(5).state is kickq.State.QUEUED
    assert actor.post("/actions/delete", data={"id": ok.id, "token": token}).status_code == 303
    with pytest.raises(kickq.JobNotFound):
        kickq.get(ok.id).result(5)
    assert actor.post("/actions/delete", data={"id": ok.id, "token": token}).status_code == 404
    missing = actor.post("/actions/requeue", data={"id": ok.id, "token": token})
    assert missing.status_code == 404


def test_requeue_every_failed_job_of_a_name(actor: httpx.Client) -> None:
    seed_failures("dash-bulkfix", 2)
    page = actor.get("/jobs", params={"name": "dash-bulkfix", "state": "fail"}).text
    assert "Requeue all 1 failed" in page
    form = {"name": "dash-bulkfix", "token": TOKEN.search(page).group(1)}  # type: ignore[union-attr]
    assert actor.post("/actions/requeue-failed", data=form).status_code == 303
    assert kickq.jobs(name="dash-bulkfix", state="fail").count().result(5) == 0


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"name": ""}, 400),  # no name
        ({"name": "x" * 5000}, 413),  # too big a form
    ],
)
def test_bad_action_forms(actor: httpx.Client, form: dict[str, str], status: int) -> None:
    kickq.create("dash-form").result(5)
    form["token"] = token_of(actor)
    assert actor.post("/actions/pause", data=form).status_code == status


def test_action_edge_cases(actor: httpx.Client) -> None:
    """An unknown verb, a GET, a name of blanks (a name like any other), and a `next` that
    leaves the site."""
    kickq.create("dash-edge").result(5)
    token = token_of(actor)
    assert actor.post("/actions/explode", data={"token": token}).status_code == 404
    assert actor.get("/actions/pause").status_code == 405
    blanks = actor.post("/actions/pause", data={"token": token, "name": " "})
    assert blanks.status_code == 303
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        form = {"name": "dash-next", "token": token, "next": target}
        assert actor.post("/actions/pause", data=form).headers["location"] == "/"


def test_session_cookie_is_strict_and_http_only(actor: httpx.Client) -> None:
    cookie = actor.get("/").headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "set-cookie" not in actor.get("/").headers  # one session, kept


def test_fragment_is_the_content_alone(client: httpx.Client) -> None:
    page = client.get("/jobs", headers={"x-kickq-fragment": "1"}).text
    assert page.lstrip().startswith("<h1>Jobs")
    assert "<html" not in page and "<header" not in page


def test_create_app_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="allow_actions"):
        create_app(allow_actions="yes")  # type: ignore[arg-type]
