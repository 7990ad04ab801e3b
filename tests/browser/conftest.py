"""The browser tests run page by page: every test of one page, one after another, on one worker.

A page of the book takes Chromium a second or two to load and typeset, and nine tests read each page.
Ordered the usual way (all pages for one test, then all pages for the next) every test loads its page
again; ordered by page, ``_open`` in ``test_book_in_browser.py`` finds the page already shown and loads it
once. ``make browser-test`` runs pytest-xdist with ``--dist loadgroup``, which keeps each page's group on
one worker, in this order.
"""

from __future__ import annotations

import pytest
from repository import book_pages

BROWSER_FILE = "test_book_in_browser.py"


def _page(item: pytest.Item) -> str | None:
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    return params.get("page") or params.get("chapter")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Sort the browser tests by page (in the table of contents' order; a stable sort keeps each page's
    tests in the order they are defined) and put each page's tests in one xdist group."""
    order = {page: k for k, page in enumerate(book_pages())}
    browser = [item for item in items if item.path.name == BROWSER_FILE]
    if not browser:
        return
    others = [item for item in items if item.path.name != BROWSER_FILE]
    browser.sort(key=lambda item: order.get(_page(item), len(order)))
    for item in browser:
        item.add_marker(pytest.mark.xdist_group(_page(item) or "no page"))
    items[:] = others + browser
