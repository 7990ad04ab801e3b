"""The built book's HTML, read as text (no browser needed): no page shows an error output or a traceback,
a Markdown table left as raw pipes, or TeX left outside the math elements MathJax typesets.

``make test`` builds the book and then runs this file (with the browser test). Without a built book it
skips, unless ``ADVLIB_REQUIRE_BOOK=1`` (set by ``make test``) makes that a failure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from repository import book_pages

bs4 = pytest.importorskip("bs4", reason="beautifulsoup4 is not installed")

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
if not (HTML / "index.html").exists():
    if os.environ.get("ADVLIB_REQUIRE_BOOK") == "1":
        raise RuntimeError(f"{HTML} holds no built book: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)

PAGES = book_pages()
# a Markdown table's rule line left as text; Sphinx's smart quotes turn its "---" into an em dash
RULE_CELL = r"\s*:?(?:-{3,}|—|–)\s*:?\s*"
RAW_TABLE = re.compile(rf"^\s*\|?{RULE_CELL}(?:\|{RULE_CELL})+\|?\s*$", re.M)
RAW_TEX = re.compile(r"\\(frac|varepsilon|epsilon|delta|sigma|mathbb|mathrm|lVert|rVert|nabla|sum|le|ge|in|"
                     r"operatorname|text|left|right|cdot|Phi|alpha|lambda|max|min|log)(?![a-zA-Z])|\$\$|\\\(|\\\[")
INLINE_DOLLARS = re.compile(r"(?<![\w$])\$[^\s$][^$\n]{0,80}?\$(?![\w$])")


def _soup(page: str):
    return bs4.BeautifulSoup((HTML / f"{page}.html").read_text(encoding="utf-8"), "html.parser")


def _main(page: str):
    soup = _soup(page)
    return soup.find("main") or soup


@pytest.mark.parametrize("page", PAGES)
def test_no_error_output_or_traceback(page):
    main = _main(page)
    errors = main.select(".output.traceback, .output.error, .output.stderr, .cell_output .traceback")
    assert not errors, f"{page}: error output: {errors[0].get_text()[:300]}"
    text = main.get_text()
    for sign in ("Traceback (most recent call last)", "AssertionError", "Error in cell"):
        assert sign not in text, f"{page} shows {sign!r}"


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_markdown_table(page):
    main = _main(page)
    for code in main.select(".cell_input, div.highlight-python, div.highlight-ipython3, div.highlight-bash"):
        code.decompose()  # code the reader reads as code may hold anything
    match = RAW_TABLE.search(main.get_text("\n"))
    assert not match, f"{page}: a Markdown table rendered as text: {match.group(0)!r}"


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_tex_outside_math(page):
    main = _main(page)
    for element in main.select(".math, .cell_input, pre, code, script, style, .MathJax"):
        element.decompose()
    text = main.get_text(" ")
    match = RAW_TEX.search(text) or INLINE_DOLLARS.search(text)
    assert not match, f"{page}: TeX outside a math element: ...{text[max(0, match.start() - 60):match.end() + 60]}..."


CHAPTERS = [page for page in PAGES if page.startswith("chapters/")]


@pytest.mark.parametrize("page", PAGES)
def test_every_api_cross_reference_resolves(page):
    """A ``{py:func}`` role whose target the API reference lacks renders as plain code, silently; here it fails."""
    main = _main(page)
    dangling = [code.get_text() for code in main.select("code.xref.py") if code.find_parent("a") is None]
    assert not dangling, f"{page}: references to nothing in the API reference: {dangling}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_links_the_functions_it_uses_to_the_api_reference(chapter):
    links = {a["href"].split("#")[-1] for a in _main(chapter).select("a.reference.internal[href*='api/']")
             if a.select_one("code.xref.py")}
    assert links, f"{chapter} links no advlib function to the API reference"
