"""The dashboard's search by id, its job and schedule actions (cancel, promote, unschedule,
run a schedule now), the namespace in its header and the status of polled pages, over HTTP
(the dashboard served in a thread of this process, as in test_dashboard.py: Starlette's
httpx.Client warns about httpx). test_dashboard_browser.py drives the same in a real browser."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator

import httpx
import pytest

import kickq
from support import DashboardServer, wait_until

TOKEN = re.compile(r'name="token" value="([0-9a-f]{64})"')


@pytest.fixture
def reader() -> Iterator[httpx.Client]:
    """A browser of a read-only dashboard (redirects not followed)."""
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


@pytest.fixture
def actor() -> Iterator[httpx.Client]:
    """A browser of a dashboard with actions allowed (redirects not followed)."""
    with (
        DashboardServer(allow_actions=True) as server,
        httpx.Client(base_url=server.url, timeout=20) as client,
    ):
        yield client


def token_of(client: httpx.Client, path: str = "/") -> str:
    found = TOKEN.search(client.get(path).text)
    assert found, f"no action form on {path}"
    return found.group(1)


def buttons(page: str) -> list[str]:
    return re.findall(r'<button type="submit"[^>]*>([^<]+)</button>', page)


@pytest.fixture
def four_ids(monkeypatch: pytest.MonkeyPatch) -> list[kickq.Job]:
    """Four delayed jobs whose ids share their first 9 digits (on a cluster the first digit
    is the name's partition), then differ."""
    made = iter(["0abcdef12" + digit * 23 for digit in "1234"])
    monkeypatch.setattr("kickq._model.ids.new_id", lambda: next(made))
    return [kickq.create("dash-find", n, delay=600).result(5) for n in range(4)]


# -- search ------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_search_goes_to_the_job_of_an_id_or_its_unique_prefix(
    reader: httpx.Client, four_ids: list[kickq.Job]
) -> None:
    one, two = four_ids[:2]
    for typed in (one.id, one.id[:10], f"  {one.id[:10].upper()} "):
        response = reader.get("/search", params={"q": typed})
        assert response.status_code == 303, typed
        assert response.headers["location"] == f"/jobs/{one.id}", typed
    assert reader.get("/search", params={"q": two.id[:10]}).headers["location"].endswith(two.id)


@pytest.mark.both_backends
def test_search_lists_the_jobs_a_shared_prefix_names(
    reader: httpx.Client, four_ids: list[kickq.Job]
) -> None:
    common = four_ids[0].id[:9]
    response = reader.get("/search", params={"q": common})
    assert response.status_code == 200
    assert "4 jobs have an id that starts with" in response.text
    links = re.findall(r'<a class="id" href="/jobs/([0-9a-f]{32})">', response.text)
    assert links == [job.id for job in four_ids]


def test_search_says_clearly_when_no_job_has_the_id(reader: httpx.Client) -> None:
    kickq.create("dash-find").result(5)
    cases = {
        "0123456789abcdef0123456789abcdef": (404, "No job has the id 0123456789abcdef"),
        "ffff0000": (404, "No job has an id that starts with ffff0000"),
        "abc": (400, "Give at least 4 digits"),
        "not-an-id": (400, "is not a job id"),
        "0" * 33: (400, "is not a job id: an id is 32 digits"),
        "x" * 5000: (400, "is not a job id"),
        "": (200, "Type a job id"),
    }
    for typed, (status, says) in cases.items():
        response = reader.get("/search", params={"q": typed})
        assert response.status_code == status, typed
        assert says in response.text, typed
        assert 'class="search"' in response.text  # the box, to try again
        assert "x" * 40 not in response.text


def test_search_box_is_in_every_page_header(reader: httpx.Client) -> None:
    job = kickq.create("dash-find").result(5)
    kickq.schedule("dash-tick", every=60).result(5)
    for path in ("/", "/jobs", f"/jobs/{job.id}", "/workers", "/schedules", "/nowhere"):
        page = reader.get(path).text
        assert '<form class="search" method="get" action="/search"' in page, path
        assert 'name="q"' in page, path


# -- namespace ---------------------------------------------------------------------------------


def test_the_header_shows_the_namespace(reader: httpx.Client) -> None:
    namespace = kickq.config()["redis_namespace"]
    assert f"namespace <b>{namespace}</b>" in reader.get("/").text
    kickq.config(redis_namespace="dash-other-ns")
    assert "namespace <b>dash-other-ns</b>" in reader.get("/workers").text


def test_polled_pages_say_so(reader: httpx.Client) -> None:
    """Workers and schedules re-read themselves: the page script names the poll, and they
    open no event stream."""
    for path in ("/workers", "/schedules"):
        assert 'data-refresh="poll"' in reader.get(path).text
    script = reader.get("/static/dashboard.js").text
    assert '"updates every "' in script


# -- cancel and promote ------------------------------------------------------------------------


def test_job_actions_are_offered_only_where_they_apply(actor: httpx.Client) -> None:
    delayed = kickq.create("dash-act", delay=600).result(5)
    queued = kickq.create("dash-act").result(5)
    cancelled = kickq.create("dash-act").result(5)
    kickq.cancel(cancelled.id).result(5)
    assert buttons(actor.get(f"/jobs/{delayed.id}").text) == ["Run now", "Cancel", "Delete"]
    assert buttons(actor.get(f"/jobs/{queued.id}").text) == ["Cancel", "Delete"]
    assert buttons(actor.get(f"/jobs/{cancelled.id}").text) == ["Requeue", "Delete"]
    page = actor.get(f"/jobs/{delayed.id}").text
    assert f'data-confirm="Cancel job {delayed.id}? It ends failed, as cancelled."' in page


def test_a_job_waiting_to_retry_can_run_now(actor: httpx.Client) -> None:
    def broken(job: kickq.Job, data: None) -> None:
        raise RuntimeError("not yet")

    worker = kickq.process("dash-retry", broken)
    job = kickq.create("dash-retry", retry=True, retry_interval=600).result(5)
    wait_until(lambda: kickq.get(job.id).result(5).state is kickq.State.RETRY, what="a retry")
    worker.stop(5)
    page = actor.get(f"/jobs/{job.id}").text
    assert buttons(page) == ["Run now", "Cancel", "Delete"]
    form = {"id": job.id, "token": TOKEN.search(page).group(1)}  # type: ignore[union-attr]
    assert actor.post("/actions/promote", data=form).status_code == 303
    assert kickq.get(job.id).result(5).state is kickq.State.QUEUED


def test_cancel_a_job_with_the_token(actor: httpx.Client) -> None:
    job = kickq.create("dash-act", delay=600).result(5)
    token = token_of(actor, f"/jobs/{job.id}")
    form = {"id": job.id, "token": token, "next": f"/jobs/{job.id}"}
    response = actor.post("/actions/cancel", data=form)
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{job.id}"
    done = kickq.get(job.id).result(5)
    assert done.state is kickq.State.FAIL and done.last_error == "cancelled"
    again = actor.post("/actions/cancel", data=form)  # complete: nothing to cancel
    assert again.status_code == 409 and "already complete" in again.text
    assert kickq.get(job.id).result(5).update_time == done.update_time


def test_promote_a_delayed_job_with_the_token(actor: httpx.Client) -> None:
    job = kickq.create("dash-act", delay=600).result(5)
    queued = kickq.create("dash-act").result(5)
    token = token_of(actor, f"/jobs/{job.id}")
    assert actor.post("/actions/promote", data={"id": job.id, "token": token}).status_code == 303
    assert kickq.get(job.id).result(5).state is kickq.State.QUEUED
    refused = actor.post("/actions/promote", data={"id": queued.id, "token": token})
    assert refused.status_code == 409 and "is not waiting" in refused.text
    assert kickq.get(queued.id).result(5) == queued


@pytest.mark.parametrize("verb", ["cancel", "promote"])
def test_job_actions_on_an_unknown_id_change_nothing(actor: httpx.Client, verb: str) -> None:
    job = kickq.create("dash-act", delay=600).result(5)
    token = token_of(actor)
    for bad in ("0123456789abcdef0123456789abcdef", "not-an-id"):
        response = actor.post(f"/actions/{verb}", data={"id": bad, "token": token})
        assert response.status_code == 404, bad
        assert "no job with id" in response.text
    assert actor.post(f"/actions/{verb}", data={"token": token}).status_code == 400  # no id
    assert kickq.get(job.id).result(5) == job


# -- schedules ---------------------------------------------------------------------------------


def test_schedule_actions_are_offered_with_actions_only(
    reader: httpx.Client, actor: httpx.Client
) -> None:
    kickq.schedule("dash-tick", every=60, key="dash-tick-1m").result(5)
    assert buttons(reader.get("/schedules").text) == []
    page = actor.get("/schedules").text
    assert buttons(page) == ["Run now", "Unschedule"]
    assert 'data-confirm="Remove the schedule dash-tick-1m?' in page


def test_unschedule_with_the_token(actor: httpx.Client) -> None:
    kickq.schedule("dash-tick", every=60, key="dash-tick-1m").result(5)
    kickq.schedule("dash-tock", every=60).result(5)
    token = token_of(actor, "/schedules")
    form = {"key": "dash-tick-1m", "token": token, "next": "/schedules"}
    response = actor.post("/actions/unschedule", data=form)
    assert response.status_code == 303 and response.headers["location"] == "/schedules"
    assert [s.key for s in kickq.schedules().result(5)] == ["dash-tock"]
    missing = actor.post("/actions/unschedule", data=form)
    assert missing.status_code == 404 and "no schedule with key 'dash-tick-1m'" in html.unescape(
        missing.text
    )
    assert actor.post("/actions/unschedule", data={"token": token}).status_code == 400
    assert [s.key for s in kickq.schedules().result(5)] == ["dash-tock"]


def test_run_a_schedule_now_with_the_token(actor: httpx.Client) -> None:
    kickq.schedule("dash-tick", {"k": 1}, every=3600, key="dash-hourly", priority=7).result(5)
    before = kickq.schedules().result(5)
    token = token_of(actor, "/schedules")
    form = {"key": "dash-hourly", "token": token}
    assert actor.post("/actions/run-schedule", data=form).status_code == 303
    [job] = wait_until(lambda: kickq.jobs(name="dash-tick").list().result(5), what="the job")
    assert job.data == {"k": 1} and job.priority == 7 and job.state is kickq.State.QUEUED
    assert kickq.schedules().result(5) == before  # its ticks go on as before
    missing = actor.post("/actions/run-schedule", data={"key": "nope", "token": token})
    assert missing.status_code == 404
    assert kickq.jobs().count().result(5) == 1


# -- refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "field"),
    [("cancel", "id"), ("promote", "id"), ("unschedule", "key"), ("run-schedule", "key")],
)
def test_new_actions_are_refused_read_only_or_without_the_token(
    reader: httpx.Client, actor: httpx.Client, verb: str, field: str
) -> None:
    job = kickq.create("dash-act", delay=600).result(5)
    kickq.schedule("dash-tick", every=60).result(5)
    target = job.id if field == "id" else "dash-tick"
    refused = reader.post(f"/actions/{verb}", data={field: target, "token": "0" * 64})
    assert refused.status_code == 403 and "--allow-actions" in refused.text
    token_of(actor)  # a session, with a token this form does not carry
    for form in ({field: target}, {field: target, "token": "0" * 64}):
        response = actor.post(f"/actions/{verb}", data=form)
        assert response.status_code == 403 and "no valid token" in response.text
    assert kickq.get(job.id).result(5) == job
    assert [s.key for s in kickq.schedules().result(5)] == ["dash-tick"]
    assert kickq.jobs().count().result(5) == 1


# -- tracebacks --------------------------------------------------------------------------------


def test_a_long_traceback_is_folded_and_says_its_size(actor: httpx.Client) -> None:
    def deep(depth: int) -> None:
        if depth == 0:
            raise RuntimeError("at the bottom")
        deeper(depth - 1)

    def deeper(depth: int) -> None:  # two frames in turn: Python folds no repeated line
        deep(depth)

    kickq.process("dash-deep", lambda job, data: deep(data))
    short, long = (kickq.create("dash-deep", depth).result(5) for depth in (0, 40))
    for job in (short, long):
        wait_until(lambda j=job: kickq.get(j.id).result(5).complete, what="the failure")
    page = actor.get(f"/jobs/{short.id}").text
    assert '<details class="traceback" id="job-traceback" open>' in page
    page = actor.get(f"/jobs/{long.id}").text
    traceback = kickq.get(long.id).result(5).runs[-1].traceback
    assert traceback is not None
    lines = len(traceback.splitlines())
    assert lines > 40
    assert '<details class="traceback" id="job-traceback">' in page
    assert f"Traceback of run 1 ({lines} lines)</summary>" in page
    assert "RuntimeError: at the bottom" in page


# -- mounted under a path ----------------------------------------------------------------------


class MountedServer(DashboardServer):
    """The dashboard (actions allowed) mounted at /admin/kickq in an app of its own."""

    def __init__(self) -> None:
        super().__init__(allow_actions=True)
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from kickq.dashboard import _server, create_app

        inner = create_app(True, allowed_hosts=None)
        self.app = Starlette(routes=[Mount("/admin/kickq", app=inner)])
        self.server = _server.server(self.app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="dashboard", daemon=True
        )


def test_search_and_the_new_actions_stay_under_the_mount_point() -> None:
    job = kickq.create("dash-mount", delay=600).result(5)
    kickq.schedule("dash-mount", every=60).result(5)
    with MountedServer() as server, httpx.Client(base_url=server.url, timeout=20) as client:
        found = client.get("/admin/kickq/search", params={"q": job.id[:8]})
        assert found.status_code == 303
        assert found.headers["location"] == f"/admin/kickq/jobs/{job.id}"
        page = client.get(f"/admin/kickq/jobs/{job.id}").text
        assert 'action="/admin/kickq/search"' in page
        for verb in ("promote", "cancel", "delete"):
            assert f'action="/admin/kickq/actions/{verb}"' in page, verb
        assert 'name="next" value="/admin/kickq/jobs?name=dash-mount"' in page  # after delete
        schedules = client.get("/admin/kickq/schedules").text
        for verb in ("run-schedule", "unschedule"):
            assert f'action="/admin/kickq/actions/{verb}"' in schedules, verb
        token = TOKEN.search(page).group(1)  # type: ignore[union-attr]
        form = {"id": job.id, "token": token, "next": f"/admin/kickq/jobs/{job.id}"}
        done = client.post("/admin/kickq/actions/promote", data=form)
        assert done.status_code == 303
        assert done.headers["location"] == f"/admin/kickq/jobs/{job.id}"
        assert kickq.get(job.id).result(5).state is kickq.State.QUEUED
