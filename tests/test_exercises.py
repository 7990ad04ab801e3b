"""Every chapter is a lesson: it opens with what the reader will be able to do and what to read first,
closes with a summary that answers those objectives point by point and a pointer onwards, and ends with
graded exercises (sphinx-exercise) whose solutions are folded and whose solution code runs in the build.

The format these tests read (one convention for all chapters):

- the opening cell holds ``**In this chapter you will**`` and a numbered list of 3-5 objectives, then a
  ``**Prerequisites.**`` line;
- a ``## Summary`` cell holds a numbered list with one point per objective, in the same order, then
  ``**Where next.**``;
- ``## Exercises`` follows; each exercise is an ``{exercise}`` directive labelled ``ex-NN-...`` whose text
  starts with ``*Easy · code.*`` (a difficulty: easy, medium, hard; a kind: pen and paper, predict then run,
  code);
- each exercise has a solution folded behind a toggle (``:class: dropdown``): a ``{solution}`` directive,
  or, when the solution runs code, ``{solution-start}`` and ``{solution-end}`` around its code cells;
- on Colab, where the directives are plain text, a code exercise offers a cell to fill in
  (``# Your code here``), and each solution code cell is a folded form (``# @title``, ``cellView: form``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
LEVELS = ("Easy", "Medium", "Hard")
KINDS = ("pen and paper", "predict then run", "code")
GRADE = re.compile(rf"^\*({'|'.join(LEVELS)}) · ({'|'.join(KINDS)})\.\*", re.M)
EXERCISE = re.compile(r"```\{exercise\}[^\n]*\n:label: (ex-\d\d-[a-z0-9-]+)\n(.*?)```", re.S)
SOLUTION = re.compile(r"```\{solution(?:-start)?\} (ex-\d\d-[a-z0-9-]+)\n:class: dropdown\n")
GATE = re.compile(r"```\{solution-(start|end)\}")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _numbered(text: str) -> list[str]:
    """The items of the first numbered list in ``text`` (``1. ...``, continuation lines joined)."""
    items, started = [], False
    for line in text.splitlines():
        if re.match(r"^\d+\. ", line):
            items.append(line.split(". ", 1)[1])
            started = True
        elif started and line.startswith("   ") and items:
            items[-1] += " " + line.strip()
        elif started:
            break
    return items


def objectives(path: Path) -> list[str]:
    opening = _source(_cells(path)[0])
    head, _, rest = opening.partition("**In this chapter you will**")
    return _numbered(rest) if rest else []


def summary(path: Path) -> list[str]:
    cell = next((_source(c) for c in _cells(path) if c["cell_type"] == "markdown"
                 and _source(c).startswith("## Summary")), "")
    return _numbered(cell)


def exercises(path: Path) -> dict[str, str]:
    """Label -> text of every exercise of a chapter."""
    text = "\n".join(_source(c) for c in _cells(path) if c["cell_type"] == "markdown")
    return dict(EXERCISE.findall(text))


def solution_cells(path: Path) -> list[tuple[str, dict]]:
    """(label, cell) for every code cell between a ``{solution-start}`` and its ``{solution-end}``."""
    inside, found = None, []
    for cell in _cells(path):
        source = _source(cell)
        if cell["cell_type"] == "markdown":
            start = re.search(r"```\{solution-start\} (ex-[a-z0-9-]+)", source)
            if start:
                assert inside is None, f"{path.name}: a solution starts inside another"
                inside = start.group(1)
            if "```{solution-end}" in source:
                assert inside is not None, f"{path.name}: a solution ends that did not start"
                inside = None
        elif inside is not None:
            found.append((inside, cell))
    assert inside is None, f"{path.name}: the solution of {inside} never ends"
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_objectives_and_prerequisites(chapter):
    goals = objectives(chapter)
    assert 3 <= len(goals) <= 5, f"{chapter.name}: {len(goals)} objectives under 'In this chapter you will'"
    assert "**Prerequisites.**" in _source(_cells(chapter)[0]), f"{chapter.name} names no prerequisites"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_summary_answers_each_objective_and_points_onwards(chapter):
    points = summary(chapter)
    assert len(points) == len(objectives(chapter)), (
        f"{chapter.name}: the summary has {len(points)} numbered points for {len(objectives(chapter))} objectives")
    closing = next(_source(c) for c in _cells(chapter) if _source(c).startswith("## Summary"))
    assert "**Where next.**" in closing, f"{chapter.name}: the summary does not say where to go next"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_graded_exercises_each_with_a_folded_solution(chapter):
    cells = _cells(chapter)
    headings = [i for i, c in enumerate(cells) if _source(c).startswith("## Exercises")]
    assert headings, f"{chapter.name} has no '## Exercises' section"
    summary_at = next(i for i, c in enumerate(cells) if _source(c).startswith("## Summary"))
    assert headings[0] > summary_at, f"{chapter.name}: the exercises come after the summary"
    found = exercises(chapter)
    assert 3 <= len(found) <= 6, f"{chapter.name} has {len(found)} exercises (3-6 wanted)"
    number = chapter.name[:2]
    text = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    solved = set(SOLUTION.findall(text))
    for label, body in found.items():
        assert label.startswith(f"ex-{number}-"), f"{chapter.name}: {label} is not labelled ex-{number}-..."
        assert GRADE.search(body), f"{chapter.name}, {label}: no '*Level · kind.*' line ({LEVELS}, {KINDS})"
        assert label in solved, f"{chapter.name}, {label} has no solution folded behind a toggle"
    levels = {GRADE.search(body).group(1) for body in found.values()}
    assert len(levels) >= 2, f"{chapter.name}: every exercise is {levels}; grade them"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_code_exercises_offer_a_cell_to_fill_in_and_solutions_that_run_and_check(chapter):
    found = exercises(chapter)
    running = {label for label, body in found.items() if GRADE.search(body).group(2) != "pen and paper"}
    assert running, f"{chapter.name}: no exercise asks the reader to run or write code"
    cells = solution_cells(chapter)
    for label in running:
        code = [cell for owner, cell in cells if owner == label]
        assert code, f"{chapter.name}, {label}: its solution runs no code (use solution-start/solution-end)"
        assert any(re.search(r"^\s*assert\b", _source(cell), re.M) for cell in code), (
            f"{chapter.name}, {label}: its solution checks nothing (an assert against advlib or the claim)")
        for cell in code:
            assert _source(cell).startswith("# @title ") and cell["metadata"].get("cellView") == "form", (
                f"{chapter.name}, {label}: a solution cell must be a folded Colab form "
                "('# @title ...' first, metadata cellView: form)")
    for label, body in found.items():
        if GRADE.search(body).group(2) == "code":
            at = next(i for i, c in enumerate(_cells(chapter)) if f":label: {label}\n" in _source(c))
            after = _cells(chapter)[at + 1]
            assert after["cell_type"] == "code" and _source(after).startswith("# Your code here"), (
                f"{chapter.name}, {label}: the cell after a code exercise is the reader's ('# Your code here')")


def test_the_format_check_reads_what_it_should(tmp_path):
    """The readers above are themselves checked on a small chapter, so a broken pattern cannot pass silently."""
    def markdown(text):
        return {"cell_type": "markdown", "metadata": {}, "source": text}

    def code(text, **metadata):
        return {"cell_type": "code", "metadata": metadata, "outputs": [], "execution_count": None, "source": text}

    notebook = {"cells": [
        markdown("# 99. X\n\n**In this chapter you will**\n\n1. a\n2. b,\n   continued\n3. c\n\n"
                 "**Prerequisites.** None."),
        markdown("## Summary\n\n1. a\n2. b\n3. c\n\n**Where next.** On."),
        markdown("## Exercises\n\n```{exercise} One\n:label: ex-99-one\n\n*Easy · code.* Do it.\n```"),
        code("# Your code here"),
        markdown("```{solution-start} ex-99-one\n:class: dropdown\n```"),
        code("# @title Solution\nx = 1", cellView="form"),
        code("# @title Check\nassert x == 1", cellView="form"),
        markdown("```{solution-end}\n```"),
        markdown("```{exercise} Two\n:label: ex-99-two\n\n*Hard · pen and paper.* Prove it.\n```\n\n"
                 "```{solution} ex-99-two\n:class: dropdown\n\nBecause.\n```"),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "99_x.ipynb"
    path.write_text(json.dumps(notebook))
    assert objectives(path) == ["a", "b, continued", "c"]
    assert summary(path) == ["a", "b", "c"]
    assert set(exercises(path)) == {"ex-99-one", "ex-99-two"}
    assert [label for label, _ in solution_cells(path)] == ["ex-99-one", "ex-99-one"]
    test_code_exercises_offer_a_cell_to_fill_in_and_solutions_that_run_and_check(path)
    with pytest.raises(AssertionError, match="has 2 exercises"):
        test_chapter_ends_with_graded_exercises_each_with_a_folded_solution(path)
    notebook["cells"][3]["source"] = "x = 0"  # the reader's cell is gone
    path.write_text(json.dumps(notebook))
    with pytest.raises(AssertionError, match="the reader's"):
        test_code_exercises_offer_a_cell_to_fill_in_and_solutions_that_run_and_check(path)
