"""The chapters as a reader meets them (DESIGN.md, "Each chapter, as a reader meets it"): the code that
carries an idea stays visible and narrow; set-up, plotting, table-building and checks are folded; checks
are labelled with the claim they check; tables come from ``viz.table``; one notation; the talk is cited.

Visible code is what the built book shows without a click: the source of every code cell without a
``hide-input``, ``hide-cell``, ``remove-input`` or ``remove-cell`` tag.
"""

import json
import re
from pathlib import Path

import pytest
from test_exercises import solution_cells

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
FOLDED = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
WIDTH = 90  # characters of a code line the book shows unclipped
ASSERT = re.compile(r"^\s*assert\b", re.M)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _markdown(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "markdown")


def _folded(cell: dict) -> bool:
    return bool(FOLDED & set(cell["metadata"].get("tags", [])))


def _text_code_cells(path: Path) -> list[dict]:
    """The code cells of the chapter's text: before its ``## Exercises``, where the reader's cells to fill in
    and the folded solutions begin."""
    cells = json.loads(path.read_text())["cells"]
    end = next((i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises")), len(cells))
    return [c for c in cells[:end] if c["cell_type"] == "code"]


def _in_solutions(path: Path) -> list[dict]:
    return [cell for _, cell in solution_cells(path)]


def visible_code_lines(path: Path) -> int:
    """Lines of code the built chapter's text shows unfolded (blank lines not counted)."""
    return sum(1 for cell in _text_code_cells(path) if not _folded(cell)
               for line in "".join(cell["source"]).splitlines() if line.strip())


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(chapter):
    wide = [(i, line) for i, cell in enumerate(_code_cells(chapter))
            for line in "".join(cell["source"]).splitlines() if len(line) > WIDTH]
    assert not wide, f"{chapter.name}: code lines over {WIDTH} characters (clipped in the book): {wide[:3]}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_checks_are_folded_and_labelled(chapter):
    folded_by_a_solution = _in_solutions(chapter)  # a solution's checks show when the reader opens it
    for i, cell in enumerate(_code_cells(chapter)):
        if not ASSERT.search("".join(cell["source"])) or cell in folded_by_a_solution:
            continue
        prompt = cell["metadata"].get("mystnb", {}).get("code_prompt_show", "")
        assert _folded(cell), f"{chapter.name}, code cell {i}: a cell with asserts must be folded (hide-input)"
        assert prompt.startswith("Checked: ") and len(prompt) > len("Checked: ") + 10, (
            f"{chapter.name}, code cell {i}: a check's fold must say what it checks "
            f"(metadata mystnb.code_prompt_show = 'Checked: ...'), got {prompt!r}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_the_visible_code_is_the_few_lines_that_carry_ideas(chapter):
    lines = visible_code_lines(chapter)
    assert lines <= 80, f"{chapter.name} shows {lines} lines of code unfolded; fold set-up, plots and tables"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_tables_come_from_the_table_helper(chapter):
    for i, cell in enumerate(_code_cells(chapter)):
        source = "".join(cell["source"])
        assert "--- |" not in source and "|---" not in source, (
            f"{chapter.name}, code cell {i} writes a Markdown table: use viz.table(rows, columns, paper=...)")
        assert not re.search(r"\bMarkdown\(", source), (
            f"{chapter.name}, code cell {i} displays Markdown from code: use viz.table, or write it as text")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_one_notation(chapter):
    text = _markdown(chapter)
    assert not re.search(r"\\epsilon(?![a-zA-Z])", text), f"{chapter.name}: write \\varepsilon, not \\epsilon"
    assert not re.search(r"\\eta(?![a-zA-Z])", text), f"{chapter.name}: the perturbation is \\delta, not \\eta"


def test_the_talk_is_named_and_cited():
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "{cite}`hajri2021talk`" in intro or "hajri2021talk" in intro
    assert "Hatem Hajri" in intro
    assert "@misc{hajri2021talk" in (ROOT / "book" / "references.bib").read_text()
