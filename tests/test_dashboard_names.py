"""The dashboard's overview with more names than fit one page: the totals, the throughput and
the paused names cover every name, the rows a page of names at a time (the page's size does not
grow with the number of names)."""

from __future__ import annotations

import re

import httpx

import kickq
from kickq.dashboard import _pages as pages
from support import DashboardServer


def rows_of(page: str) -> list[str]:
    return re.findall(r'<tr data-name="([^"]+)">', page)


def test_overview_shows_the_names_a_page_at_a_time() -> None:
    count = 2 * pages.NAMES_PER_PAGE + 50
    names = [f"page-{i:03d}" for i in range(count)]
    for future in [kickq.create(name) for name in names]:
        future.result(10)
    kickq.pause(names[-1]).result(5)
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=20) as browser:
        first = browser.get("/").text
        last = browser.get("/?page=3").text
        beyond = browser.get("/?page=4")
        zero = browser.get("/?page=0")
    assert rows_of(first) == names[: pages.NAMES_PER_PAGE]
    assert rows_of(last) == names[2 * pages.NAMES_PER_PAGE :]
    assert first.count('<svg class="chart spark"') == pages.NAMES_PER_PAGE
    for page in (first, last):
        assert re.search(rf'class="num total" data-state="queued"><a [^>]*>{count}</a>', page)
        assert re.search(rf'Paused: <a href="/jobs\?name={names[-1]}">', page)
    assert "page 1 of 3" in first and 'href="/?page=2" rel="next"' in first
    assert f"1-{pages.NAMES_PER_PAGE} of {count}" in first
    assert "page 3 of 3" in last and 'rel="next"' not in last
    assert 'href="/?page=2" rel="prev"' in last and 'href="/">« first' in last
    assert beyond.status_code == 404 and zero.status_code == 400


def test_one_page_of_names_has_no_pager() -> None:
    kickq.create("alone").result(5)
    with DashboardServer() as server, httpx.Client(base_url=server.url, timeout=20) as browser:
        page = browser.get("/").text
    assert rows_of(page) == ["alone"] and "page 1 of" not in page
