"""The dashboard in a real browser (headless Chromium, see test_dashboard_browser.py): the
search box in the header, the layout on a phone, and the status of the polled pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_dashboard_browser import WAIT_MS, Tab, browser, sync_api

import kickq
from support import DashboardServer, wait_until

__all__ = ["browser"]  # the fixture, shared with test_dashboard_browser.py

PHONE = {"width": 390, "height": 844}
LONG = "a-rather-long-job-name-that-goes-on.and-on"


class Phone(Tab):
    """A tab the size of a phone's screen, that reports touch. Not `is_mobile`: a mobile
    viewport zooms out to show a page wider than the screen, and innerWidth grows with it."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport=PHONE, has_touch=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.base = base
        self.dialogs = []
        self.page.on("dialog", self._dialog)

    def sideways(self) -> int:
        """How far the page itself scrolls sideways (0: it does not)."""
        assert self.page.evaluate("window.innerWidth") == PHONE["width"]
        return int(self.page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth"))


@pytest.fixture
def acting(browser: Any) -> Iterator[Tab]:
    with DashboardServer(allow_actions=True) as server:
        tab = Tab(browser, server.url)
        yield tab
        tab.context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Phone]:
    with DashboardServer(allow_actions=True) as server:
        tab = Phone(browser, server.url)
        yield tab
        tab.context.close()


def broken(job: kickq.Job, data: Any) -> None:
    raise KeyError("a missing key, with a message long enough to wrap on any phone screen " * 3)


def seed() -> kickq.Job:
    """A failed job with a traceback and wide data, queued and delayed jobs of a long name,
    and a schedule: every kind of row and action the pages show."""
    worker = kickq.process(LONG, broken)
    failed = kickq.create(LONG, {"payload": "x" * 300, "nested": {"list": list(range(40))}})
    failed_job = failed.result(5)
    wait_until(
        lambda: kickq.get(failed_job.id).result(5).state is kickq.State.FAIL, what="the failure"
    )
    worker.stop(5)
    for n in range(3):
        kickq.create(LONG, {"n": n, "text": "y" * 120}, delay=600 * n).result(5)
    kickq.schedule(LONG, {"k": "z" * 80}, cron="*/5 * * * *", tz="Europe/Athens").result(5)
    return failed_job


def test_the_search_box_finds_a_job_by_its_start(acting: Tab) -> None:
    job = kickq.create("dash-find", {"to": "a@b.c"}, delay=600).result(5)
    acting.open("/workers")
    box = acting.page.get_by_role("searchbox")
    box.fill(job.id[:8])
    box.press("Enter")
    sync_api.expect(acting.page.locator("h1 .id")).to_have_text(job.id)
    assert acting.page.url.endswith(f"/jobs/{job.id}")

    acting.page.get_by_role("searchbox").fill("ffff0000")
    acting.page.get_by_role("searchbox").press("Enter")
    sync_api.expect(acting.page.locator("#search-problem")).to_have_text(
        "No job has an id that starts with ffff0000."
    )
    assert acting.page.get_by_role("searchbox").input_value() == "ffff0000"


def test_promote_and_cancel_from_the_job_page(acting: Tab) -> None:
    job = kickq.create("dash-act", delay=600).result(5)
    acting.open(f"/jobs/{job.id}")
    acting.page.get_by_role("button", name="Run now").click()
    sync_api.expect(acting.page.locator("h1 .badge")).to_have_text("queued")
    assert acting.page.get_by_role("button", name="Run now").count() == 0
    acting.page.get_by_role("button", name="Cancel").click()
    sync_api.expect(acting.page.locator("h1 .badge")).to_have_text("fail")
    assert acting.dialogs == [f"confirm: Cancel job {job.id}? It ends failed, as cancelled."]
    assert kickq.get(job.id).result(5).last_error == "cancelled"
    assert acting.page.get_by_role("button", name="Cancel").count() == 0


def test_unschedule_from_the_schedules_page(acting: Tab) -> None:
    kickq.schedule("dash-tick", every=60, key="dash-tick-1m").result(5)
    acting.open("/schedules")
    acting.page.get_by_role("button", name="Unschedule").click()
    sync_api.expect(acting.page.locator("main .summary")).to_contain_text("0 repeatable jobs")
    assert kickq.schedules().result(5) == []
    assert acting.dialogs[0].startswith("confirm: Remove the schedule dash-tick-1m?")


def test_polled_pages_do_not_say_offline(acting: Tab) -> None:
    """Workers and schedules re-read themselves every 10 s and open no event stream: their
    status says so."""
    for path in ("/workers", "/schedules"):
        acting.open(path)
        sync_api.expect(acting.page.locator("#conn")).to_have_text("updates every 10 s")
    acting.open("/jobs")
    sync_api.expect(acting.page.locator("#conn")).to_have_text("live")


def test_the_namespace_is_in_the_header(acting: Tab) -> None:
    acting.open("/")
    namespace = kickq.config()["redis_namespace"]
    assert acting.text("header .namespace") == f"namespace {namespace}"


def test_a_phone_never_scrolls_the_page_sideways(phone: Phone) -> None:
    """At 390 x 844 every page fits the screen's width: the header wraps, wide tables scroll
    in their own box, and buttons and links are big enough to tap."""
    failed = seed()
    delayed = kickq.jobs(name=LONG, state="delayed").list().result(5)[0]
    deferred = kickq.create(LONG, {"n": 1}, after=[delayed.id]).result(5)  # its parents' table
    paths = [
        "/",
        "/jobs",
        f"/jobs?name={LONG}",
        f"/jobs/{failed.id}",
        f"/jobs/{delayed.id}",
        f"/jobs/{deferred.id}",
        "/workers",
        "/schedules",
        f"/search?q={failed.id[:4]}",
    ]
    for path in paths:
        phone.open(path)
        assert phone.sideways() <= 0, path
    for path in paths:
        phone.open(path)
        for target in phone.page.locator("header nav a, main button").all():
            box = target.bounding_box()
            assert box is not None and box["height"] >= 32, (path, target.inner_text())
    phone.open(f"/jobs/{failed.id}")
    assert phone.page.locator("details.traceback pre").first.is_visible()
    header = phone.page.locator("header.top").bounding_box()
    assert header is not None and header["width"] <= PHONE["width"]
