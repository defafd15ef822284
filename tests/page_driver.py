"""Driving the search page in a real browser: Debian's Chromium through Playwright for Python
(Playwright's own browser download is not reachable from where this runs; scripts/test.sh
installs the `chromium` package). For tests/test_page_browser.py and bench/bench_page.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# No sandbox (root in a container has none to give), no GPU, and nothing the browser would
# fetch for itself: the only network it reaches is the loopback server under test.
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 30_000


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return None
    return (
        f"Chromium is missing at {CHROMIUM}: `bash scripts/test.sh` installs Debian's chromium "
        "package (apt-get install chromium), or set CHROMIUM to a Chromium binary"
    )


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(ARGS))
        try:
            yield browser
        finally:
            browser.close()


def search_number(page: Page) -> int:
    """Which search the results table shows (the page counts them)."""
    return int(page.get_attribute("#results", "data-search") or 0)


def wait_for_search(page: Page, after: int) -> None:
    """Until a search later than `after` has its page of results (or its error) shown."""
    page.wait_for_function(
        "after => { const t = document.querySelector('#results');"
        " return Number(t.dataset.search) > after && t.dataset.state !== 'loading'; }",
        arg=after,
        timeout=TIMEOUT_MS,
    )


def searched(page: Page, action: Callable[[], Any]) -> None:
    """Do `action` (a click, a navigation) and wait until the search it starts is shown."""
    before = search_number(page)
    action()
    wait_for_search(page, before)


def wait_idle(page: Page) -> None:
    """Until the table is not loading (a Load more, say)."""
    page.wait_for_function(
        "() => document.querySelector('#results').dataset.state !== 'loading'", timeout=TIMEOUT_MS
    )


def shown_keys(page: Page) -> list[str]:
    """The EventKey of every row shown, top to bottom."""
    keys: list[str] = page.eval_on_selector_all(
        "#results tbody tr", "rows => rows.map(row => row.dataset.key)"
    )
    return keys


def shown_cells(page: Page) -> list[list[str]]:
    """Every row's cells as the user reads them."""
    cells: list[list[str]] = page.eval_on_selector_all(
        "#results tbody tr", "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))"
    )
    return cells
