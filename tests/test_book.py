"""The book's structure keeps the conventions of DESIGN.md: every chapter in the table of contents,
committed without outputs, installing advlib on Colab from the repository the book links to,
seeded, sized by the run profile, and checking its claims with asserts."""

import json
import re
from pathlib import Path

import pytest
from repository import book_config, book_pages

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
BIB = (ROOT / "book" / "references.bib").read_text()


def _cells(path: Path, kind: str) -> list[str]:
    notebook = json.loads(path.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == kind]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 4


def test_every_chapter_and_page_is_in_the_toc():
    toc = book_pages()
    for chapter in CHAPTERS:
        assert f"chapters/{chapter.stem}" in toc, f"{chapter.name} is missing from _toc.yml"
    for entry in toc:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml names missing {entry}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_committed_without_outputs(chapter):
    notebook = json.loads(chapter.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{chapter.name} carries outputs"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_installs_advlib_on_colab_only_from_the_books_repository(chapter):
    url = book_config()["repository"]["url"]
    first = _cells(chapter, "code")[0]
    assert 'if "google.colab" in sys.modules:' in first
    assert f"git+{url}" in first, f"{chapter.name} installs advlib from elsewhere than {url}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_seeded_sized_by_the_profile_and_asserts_its_claims(chapter):
    code = "\n".join(_cells(chapter, "code"))
    assert "seed_everything(" in code
    assert "sizes()" in code, f"{chapter.name} does not take its sizes from advlib.config.sizes()"
    assert re.search(r"^\s*assert\b", code, re.MULTILINE), f"{chapter.name} asserts nothing"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_title_and_citations(chapter):
    markdown = _cells(chapter, "markdown")
    assert markdown[0].startswith("# "), f"{chapter.name} does not open with its title"
    for key in re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", "\n".join(markdown)):
        for k in key.split(","):
            assert f"{{{k.strip()}," in BIB, f"{chapter.name} cites {k!r}, absent from references.bib"


def test_the_book_skips_what_make_test_leaves_behind():
    """``make test`` leaves .pytest_cache (with a README.md) and .ruff_cache in the checkout; a later
    ``make book`` (``--warningiserror``) must not read them as pages of the book."""
    excluded = book_config()["exclude_patterns"]
    for folder in (".pytest_cache", ".ruff_cache", ".venv", "_build", "data"):
        assert folder in excluded, folder


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_draws_in_the_courses_style(chapter):
    """Figures share one style: a chapter that draws with matplotlib itself sets advlib's style first."""
    code = _cells(chapter, "code")
    draws = [i for i, source in enumerate(code) if re.search(r"\bplt\.|\.subplots\(", source)]
    styled = [i for i, source in enumerate(code) if "viz.use_style()" in source]
    if draws:
        assert styled and styled[0] <= draws[0], f"{chapter.name} draws before calling viz.use_style()"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_says_how_long_it_takes_in_each_profile(chapter):
    opening = _cells(chapter, "markdown")[0]
    line = next((line for line in opening.splitlines() if line.startswith("**Run time.**")), None)
    assert line, f"{chapter.name}: the opening cell has no '**Run time.**' line"
    assert "quick profile" in line.lower() and "full profile" in line.lower(), f"{chapter.name}: {line}"
    assert re.search(r"\d+ (s|min)", line), f"{chapter.name} gives no measured time: {line}"
