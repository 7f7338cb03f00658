"""The dashboard in a real browser: the system's headless Chromium, driven by Playwright (no
browser download). The overview's counts, a job appearing without a reload, the script probe
shown as text, and actions refused without allow_actions or the token, and done with both.

Skipped only when no Chromium can be found (KICKQ_CHROMIUM, else chromium, chromium-browser or
google-chrome on PATH); with KICKQ_REQUIRE_BROWSER set, as CI sets it, that is a failure.
KICKQ_DASHBOARD_SCREENSHOT=path saves the overview's screenshot there (docs/dashboard.png).
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from kickq._engine import runtime as _runtime
from support import DashboardServer, numsub, wait_until

sync_api = pytest.importorskip("playwright.sync_api")
sync_api.expect.set_options(timeout=10_000)

PROBE = "<script>alert(1)</script>"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WAIT_MS = 10_000


def chromium() -> str | None:
    found = os.environ.get("KICKQ_CHROMIUM")
    for name in BROWSERS:
        found = found or shutil.which(name)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium()
    if path is None:
        if os.environ.get("KICKQ_REQUIRE_BROWSER"):
            pytest.fail(
                "no Chromium found (apt-get install chromium), and KICKQ_REQUIRE_BROWSER is set"
            )
        pytest.skip("no Chromium found: apt-get install chromium, or set KICKQ_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


class Tab:
    """A page of a fresh browser context, recording every dialog (alert, confirm) it opens;
    a confirm() is accepted."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.base = base
        self.dialogs: list[str] = []
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path.lstrip("/"))
        assert response is not None and response.ok, path
        return response

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).first.inner_text())

    def post(self, path: str, form: dict[str, str]) -> int:
        """A POST from the page's own script, with the page's cookies: as a forged form would."""
        script = "async ([path, form]) => (await fetch(path, {method: 'POST', body: form})).status"
        status = self.page.evaluate(
            script.replace("body: form", "body: new URLSearchParams(form)"), [path, form]
        )
        return int(status)

    def live(self, r: Any) -> None:
        """Wait until the page listens to the event stream and the dashboard to the events."""
        sync_api.expect(self.page.locator("#conn")).to_have_text("live")
        wait_until(lambda: numsub(r, _runtime.get().keys.event("create")) >= 1, what="subscribed")


@pytest.fixture
def read_only(browser: Any) -> Iterator[Tab]:
    with DashboardServer() as server:
        tab = Tab(browser, server.url)
        yield tab
        tab.context.close()


@pytest.fixture
def acting(browser: Any) -> Iterator[Tab]:
    with DashboardServer(allow_actions=True) as server:
        tab = Tab(browser, server.url)
        yield tab
        tab.context.close()


def fail_first(job: kickq.Job, data: dict[str, int]) -> None:
    if data["n"] == 0:
        raise RuntimeError("it broke")


def seed() -> list[kickq.Job]:
    """mail: 4 queued; report: 1 delayed, paused; resize: 2 succeeded, 1 failed (returned)."""
    for i in range(4):
        kickq.create("mail", {"to": f"user{i}@example.com"}, priority=i + 3).result(5)
    kickq.create("report", {"kind": "daily"}, delay=3600).result(5)
    kickq.pause("report").result(5)
    worker = kickq.process("resize", fail_first, concurrent_jobs=3)
    made = [f.result(5) for f in [kickq.create("resize", {"n": n}) for n in range(3)]]
    done = kickq.jobs(name="resize", state=["success", "fail"])
    wait_until(lambda: done.count().result(5) == 3, what="resize jobs done")
    worker.stop(5)
    return made


def row_of(tab: Tab, name: str) -> Any:
    """The overview's row of a job name, found by the name as the page shows it (as text)."""
    shown = tab.page.locator("td.name").get_by_text(name, exact=True)
    return tab.page.locator("tr[data-name]", has=shown)


def cell(tab: Tab, name: str, state: str) -> str:
    return str(row_of(tab, name).locator(f'td[data-state="{state}"]').inner_text())


def test_overview_shows_the_counts_of_a_seeded_namespace(
    read_only: Tab, tmp_path: pathlib.Path
) -> None:
    seed()
    read_only.open("/")
    assert cell(read_only, "mail", "queued") == "4"
    assert cell(read_only, "report", "delayed") == "1"
    assert cell(read_only, "resize", "success") == "2"
    assert cell(read_only, "resize", "fail") == "1"
    assert cell(read_only, "mail", "success") == "0"
    assert read_only.text('tfoot th[data-state="queued"]') == "4"
    assert "paused" in read_only.text('tr[data-name="report"] td.status')
    assert "2 succeeded" in read_only.text("section.throughput h2")
    assert read_only.page.locator("svg.chart.big rect.ok").count() == 1
    assert read_only.page.locator("form.action").count() == 0
    shot = read_only.page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("KICKQ_DASHBOARD_SCREENSHOT"):
        pathlib.Path(os.environ["KICKQ_DASHBOARD_SCREENSHOT"]).write_bytes(shot)


def test_a_new_job_appears_without_a_reload(read_only: Tab, r: Any) -> None:
    read_only.open("/jobs?name=arrivals")
    assert "No jobs match." in read_only.text("main")
    read_only.live(r)
    read_only.page.evaluate("window.stillTheSamePage = true")
    job = kickq.create("arrivals", {"hello": "world"}).result(5)
    row = read_only.page.locator(f'tr[data-id="{job.id}"]')
    sync_api.expect(row).to_be_visible()
    assert "queued" in row.inner_text() and '{"hello": "world"}' in row.inner_text()
    assert read_only.page.evaluate("window.stillTheSamePage") is True
    read_only.open("/")
    read_only.live(r)
    read_only.page.evaluate("window.stillTheSamePage = true")
    kickq.create("arrivals").result(5)
    sync_api.expect(
        read_only.page.locator('tr[data-name="arrivals"] td[data-state="queued"]')
    ).to_have_text("2")
    sync_api.expect(read_only.page.locator("#feed li").first).to_contain_text("arrivals")
    assert read_only.page.evaluate("window.stillTheSamePage") is True


def test_the_script_probe_is_shown_as_text(read_only: Tab, r: Any) -> None:
    """Markup in data, a name or an error runs nothing: not on load, not in live updates."""
    name = '<img src=x onerror="alert(2)">'
    job = kickq.create(name, PROBE, meta={"note": PROBE}).result(5)
    read_only.open(f"/jobs/{job.id}")
    assert PROBE in read_only.text("#job-data")
    assert name in read_only.text("h1 + table")
    read_only.open("/jobs")
    assert PROBE in read_only.text(f'tr[data-id="{job.id}"] td.data')
    read_only.open("/")
    read_only.live(r)
    kickq.create(name, PROBE).result(5)
    sync_api.expect(read_only.page.locator("#feed li").first).to_contain_text(name)
    queued = row_of(read_only, name).locator('td[data-state="queued"]')
    sync_api.expect(queued).to_have_text("2")
    assert read_only.page.locator("main script, main img, #feed img").count() == 0
    assert read_only.dialogs == []


def test_actions_are_refused_without_allow_actions(read_only: Tab) -> None:
    failed = seed()[0]
    read_only.open(f"/jobs/{failed.id}")
    assert read_only.page.locator("form.action, button").count() == 0
    assert read_only.text("header .mode") == "read-only"
    for verb, form in (("requeue", {"id": failed.id}), ("pause", {"name": "mail"})):
        assert read_only.post(f"/actions/{verb}", {**form, "token": "0" * 64}) == 403
    assert kickq.get(failed.id).result(5).state is kickq.State.FAIL
    assert not kickq.stats().result(5)["mail"].paused


def test_actions_need_the_token_and_work_with_it(acting: Tab) -> None:
    failed, succeeded, _ = seed()
    acting.open(f"/jobs/{failed.id}")
    assert acting.text("header .mode") == "actions allowed"
    assert acting.post("/actions/requeue", {"id": failed.id}) == 403
    assert acting.post("/actions/requeue", {"id": failed.id, "token": "0" * 64}) == 403
    assert kickq.get(failed.id).result(5).state is kickq.State.FAIL

    acting.page.get_by_role("button", name="Requeue").click()
    sync_api.expect(acting.page.locator("h1 .badge")).to_have_text("queued")
    assert kickq.get(failed.id).result(5).state is kickq.State.QUEUED

    acting.open("/")
    acting.page.locator('tr[data-name="mail"]').get_by_role("button", name="Pause").click()
    sync_api.expect(acting.page.locator('tr[data-name="mail"] .badge')).to_have_text("paused")
    assert kickq.stats().result(5)["mail"].paused
    acting.page.locator('tr[data-name="mail"]').get_by_role("button", name="Resume").click()
    sync_api.expect(acting.page.locator('tr[data-name="mail"] .badge')).to_have_text("running")
    assert not kickq.stats().result(5)["mail"].paused

    acting.open(f"/jobs/{succeeded.id}")
    acting.page.get_by_role("button", name="Delete").click()
    sync_api.expect(acting.page.locator("h1")).to_contain_text("Jobs of resize")
    assert acting.dialogs == [f"confirm: Delete job {succeeded.id}?"]
    with pytest.raises(kickq.JobNotFound):
        kickq.get(succeeded.id).result(5)


def test_a_deferred_job_page_follows_its_parents(read_only: Tab, r: Any) -> None:
    """A parent's end reaches its deferred child with no event of the child's own: the child's
    page re-reads itself after the parent's event, and shows the result it now holds."""
    now = kickq.create("dep-parent", {"n": 1}).result(5)
    later = kickq.create("dep-parent", {"n": 2}, delay=3600).result(5)
    child = kickq.create("dep-child", after=[now.id, later.id]).result(5)
    read_only.open(f"/jobs/{child.id}")
    badge = read_only.page.locator("h1 .badge.state-deferred")
    sync_api.expect(badge).to_have_text("deferred")
    colour = badge.evaluate("element => getComputedStyle(element).backgroundColor")
    assert colour == "rgb(217, 242, 242)"  # a colour of its own, not the default grey
    row = read_only.page.locator(f'tr[data-parent="{now.id}"]')
    sync_api.expect(row).to_contain_text("awaited")
    read_only.live(r)
    read_only.page.evaluate("window.stillTheSamePage = true")

    worker = kickq.process("dep-parent", lambda job, data: {"doubled": data["n"] * 2})
    try:
        sync_api.expect(row).to_contain_text("succeeded")
        sync_api.expect(row).to_contain_text('"doubled": 2')
        assert kickq.get(child.id).result(5).state is kickq.State.DEFERRED  # no event of its own
        sync_api.expect(read_only.page.locator("h2#parents")).to_contain_text("1 awaited")
        assert read_only.page.evaluate("window.stillTheSamePage") is True
        kickq.promote(later.id).result(5)  # the last parent: the child is queued
        sync_api.expect(read_only.page.locator("h1 .badge")).to_have_text("queued")
    finally:
        worker.stop(5)
