"""The dashboard mounted at /admin/kickq inside a Starlette app, in headless Chromium (as
test_dashboard_browser.py drives it): the page styled by its CSS and nothing fetched from
outside the mount, navigation, an action sending the browser back under the mount, and the
live feed (whose subscription the mounted app's lifespan never starts) showing a new job.

Skipped only when no Chromium can be found; with KICKQ_REQUIRE_BROWSER set, a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from kickq._engine import runtime as _runtime
from support import MOUNT, AppServer, mounted_dashboard, numsub, wait_until

sync_api = pytest.importorskip("playwright.sync_api")
from test_dashboard_browser import Tab, chromium  # noqa: E402 (after the skip)

HEADER_BACKGROUND = "rgb(22, 32, 46)"  # header.top in dashboard.css; no CSS: transparent


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium()
    if path is None:
        if os.environ.get("KICKQ_REQUIRE_BROWSER"):
            pytest.fail("no Chromium found, and KICKQ_REQUIRE_BROWSER is set")
        pytest.skip("no Chromium found: apt-get install chromium, or set KICKQ_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


class RecordingTab(Tab):
    """A tab that records every URL its page fetched, with its status."""

    def __init__(self, browser: Any, base: str) -> None:
        super().__init__(browser, base)
        self.fetched: list[tuple[str, int]] = []
        self.page.on("response", self._record)

    def _record(self, response: Any) -> None:
        self.fetched.append((response.url, response.status))

    def header_style(self, name: str) -> str:
        """A computed style of the page's header: what dashboard.css made of it."""
        script = f"getComputedStyle(document.querySelector('header.top')).{name}"
        return str(self.page.evaluate(script))


@pytest.fixture
def mounted(browser: Any) -> Iterator[RecordingTab]:
    """A tab on an app that mounts the dashboard (actions allowed) at MOUNT."""
    with AppServer(mounted_dashboard(allow_actions=True)) as server:
        tab = RecordingTab(browser, server.url + "/")
        yield tab
        tab.context.close()


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_the_mounted_dashboard_works_in_a_browser(mounted: RecordingTab, r: Any) -> None:
    kickq.create("mounted-mail", {"to": "ann@example.com"}).result(5)
    mounted.open(f"{MOUNT}/")
    assert mounted.header_style("backgroundColor") == HEADER_BACKGROUND
    assert mounted.header_style("display") == "flex"

    # navigation: the header's links and the overview's, all under the mount
    mounted.page.locator("header.top nav").get_by_role("link", name="Jobs").click()
    mounted.page.wait_for_url(f"**{MOUNT}/jobs")
    sync_api.expect(mounted.page.locator("h1")).to_contain_text("Jobs")
    mounted.page.locator("td.name a", has_text="mounted-mail").first.click()
    mounted.page.wait_for_url(f"**{MOUNT}/jobs?name=mounted-mail")
    mounted.page.locator("td.id a").first.click()
    sync_api.expect(mounted.page.locator("#job-data")).to_contain_text("ann@example.com")
    mounted.page.locator("header.top").get_by_role("link", name="kickq").click()
    mounted.page.wait_for_url(f"**{MOUNT}/")

    # an action sends the browser back to the page it came from, under the mount
    row = mounted.page.locator('tr[data-name="mounted-mail"]')
    row.get_by_role("button", name="Pause").click()
    sync_api.expect(row.locator(".badge")).to_have_text("paused")
    assert path_of(mounted.page.url) == f"{MOUNT}/"
    assert kickq.stats().result(5)["mounted-mail"].paused

    # live: no lifespan started the subscription, the page's stream does
    sync_api.expect(mounted.page.locator("#conn")).to_have_text("live")
    channel = _runtime.get().keys.event("create")
    wait_until(lambda: numsub(r, channel) >= 1, what="the dashboard's subscription")
    job = kickq.create("mounted-live", {"n": 1}).result(5)
    first = mounted.page.locator("#feed li").first
    sync_api.expect(first).to_contain_text("mounted-live")
    assert first.locator("a").get_attribute("href") == f"{MOUNT}/jobs/{job.id}"
    sync_api.expect(
        mounted.page.locator('tr[data-name="mounted-live"] td[data-state="queued"]')
    ).to_have_text("1")

    fetched = mounted.fetched
    paths = [path_of(url) for url, _ in fetched]
    assert f"{MOUNT}/static/dashboard.css" in paths and f"{MOUNT}/static/dashboard.js" in paths
    assert [p for p in paths if not p.startswith(MOUNT + "/")] == []
    assert [(url, status) for url, status in fetched if status >= 400] == []
    assert mounted.dialogs == []
