"""The dashboard and jobs created with `after=`, over HTTP (the dashboard served in a thread of
this process, as in test_dashboard.py): the state `deferred` in the overview, the filter and
the lists; a job's parents, those it awaits and their results on its page; and the actions a
deferred job is offered (cancel, delete) and refused (promote)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

import kickq
from kickq.dashboard import _pages as pages
from support import DashboardServer, succeeded, wait_until

TOKEN = re.compile(r'name="token" value="([0-9a-f]{64})"')


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A browser of a read-only dashboard."""
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=20) as browser:
        yield browser


@pytest.fixture
def actor() -> Iterator[httpx.Client]:
    """A browser of a dashboard with actions allowed (redirects not followed)."""
    with (
        DashboardServer(allow_actions=True) as server,
        httpx.Client(base_url=server.url, timeout=20) as browser,
    ):
        yield browser


def parent_rows(page: str) -> dict[str, str]:
    """The rows of a job page's parents table, by parent id."""
    return dict(re.findall(r'<tr data-parent="([0-9a-f]{32})">(.*?)</tr>', page, re.S))


def buttons(page: str) -> list[str]:
    return re.findall(r'<button type="submit"[^>]*>([^<]+)</button>', page)


@pytest.mark.both_backends
def test_overview_filter_and_lists_know_deferred(client: httpx.Client) -> None:
    later = kickq.create("dash-parent", delay=3600).result(5)
    child = kickq.create("dash-child", after=[later.id]).result(5)
    kickq.create("dash-child").result(5)

    overview = client.get("/").text
    row = re.search(r'<tr data-name="dash-child">(.*?)</tr>', overview, re.S)
    assert row
    cell = re.search(r'count state-deferred" data-state="deferred"><a [^>]*>(\d+)<', row[1])
    assert cell and cell[1] == "1"
    assert re.search(r'data-state="deferred"><a href="/jobs\?state=deferred">1</a>', overview)

    listed = client.get("/jobs", params={"state": "deferred"})
    assert listed.status_code == 200
    assert re.findall(r'<tr data-id="([^"]+)">', listed.text) == [child.id]
    assert '<span class="badge state-deferred">deferred</span>' in listed.text
    assert '<span class="muted awaits">awaits 1 of 1</span>' in listed.text  # its parents
    assert '<option value="deferred" selected>deferred</option>' in listed.text


def test_job_page_shows_parents_awaited_and_results(client: httpx.Client) -> None:
    small = {"total": 42}
    big = {"rows": [f"row {n}" for n in range(50)]}
    first, second = succeeded("dash-parent", small), succeeded("dash-parent", big)
    later = kickq.create("dash-parent", delay=3600).result(5)
    child = kickq.create("dash-child", after=[first.id, second.id, later.id]).result(5)

    page = client.get(f"/jobs/{child.id}").text
    assert "Parents <small>3: 2 succeeded, 1 awaited</small>" in page
    assert "Deferred: it is queued once every parent it awaits has succeeded" in page
    rows = parent_rows(page)
    assert list(rows) == [first.id, second.id, later.id]
    for parent in rows:  # each a link to the parent's page
        assert f'<a class="id" href="/jobs/{parent}">{parent}</a>' in rows[parent]
    assert '<span class="badge outcome-awaited">awaited</span>' in rows[later.id]
    assert '<span class="badge outcome-succeeded">succeeded</span>' in rows[first.id]
    shown = html.unescape(rows[first.id])
    assert '<pre class="json">{\n  "total": 42\n}</pre>' in shown  # short: open
    folded = html.unescape(rows[second.id])
    assert '<details class="result"><summary>{"rows": ["row 0"' in folded  # long: folded
    assert "(54 lines)" in folded and '"row 49"' in folded
    assert f"data-parents='[\"{later.id}\"]'" in html.unescape(page)  # re-read when it ends
    assert "<th>after_failed</th><td>&#34;fail&#34;</td>" in page

    plain = client.get(f"/jobs/{first.id}").text  # a job without parents: no such section
    assert 'id="parents"' not in plain and "after_failed" not in plain
    assert "data-parents" not in plain


def test_job_page_of_a_job_failed_by_its_parent(client: httpx.Client) -> None:
    worker = kickq.process("dash-bad", lambda job, data: 1 / 0)
    try:
        bad = kickq.create("dash-bad", retry=False).result(5)
        child = kickq.create("dash-child", "<b>x</b>", after=[bad.id]).result(5)
        wait_until(lambda: kickq.get(child.id).result(5).complete, 10, what="the child failed")
    finally:
        worker.stop(5)
    page = client.get(f"/jobs/{child.id}").text
    assert f'<pre class="error" id="job-error">parent {bad.id} failed</pre>' in page
    assert "Parents <small>1: 1 no result</small>" in page
    assert '<span class="badge outcome-no-result">no result</span>' in parent_rows(page)[bad.id]
    assert "Deferred:" not in page and "data-parents" not in page


def test_job_page_lists_the_first_parents_and_counts_the_others(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "SHOWN_PARENTS", 3)
    parents = [f.result(5) for f in kickq.create_many("dash-parent", [None] * 5, delay=3600)]
    child = kickq.create("dash-child", after=[p.id for p in parents]).result(5)
    page = client.get(f"/jobs/{child.id}").text
    assert list(parent_rows(page)) == [p.id for p in parents[:3]]
    assert "Parents <small>5: 5 awaited</small>" in page
    assert "and 2 more parents" in page


def test_a_deferred_job_offers_cancel_and_delete_never_run_now(actor: httpx.Client) -> None:
    later = kickq.create("dash-parent", delay=3600).result(5)
    child = kickq.create("dash-child", after=[later.id]).result(5)
    page = actor.get(f"/jobs/{child.id}").text
    assert buttons(page) == ["Cancel", "Delete"]
    assert buttons(actor.get(f"/jobs/{later.id}").text) == ["Run now", "Cancel", "Delete"]
    token = TOKEN.search(page)
    assert token

    refused = actor.post("/actions/promote", data={"token": token[1], "id": child.id})
    assert refused.status_code == 409
    assert "is deferred: it awaits its parents" in html.unescape(refused.text)
    assert kickq.get(child.id).result(5).state is kickq.State.DEFERRED

    done = actor.post("/actions/cancel", data={"token": token[1], "id": child.id})
    assert done.status_code == 303
    cancelled = kickq.get(child.id).result(5)
    assert (cancelled.state, cancelled.last_error) == (kickq.State.FAIL, "cancelled")
    assert buttons(actor.get(f"/jobs/{child.id}").text) == ["Requeue", "Delete"]
