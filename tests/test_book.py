"""The book's structure keeps the conventions of DESIGN.md: every chapter in the table of contents,
committed without outputs, installing advlib on Colab from the repository the book links to,
seeded, sized by the run profile, and checking its claims with asserts that check something."""

import ast
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
def test_chapter_is_seeded_and_sized_by_the_profile(chapter):
    code = "\n".join(_cells(chapter, "code"))
    assert "seed_everything(" in code
    assert "sizes()" in code, f"{chapter.name} does not take its sizes from advlib.config.sizes()"


# --- the assert cells ------------------------------------------------------------------------------------

MIN_ASSERTS = 5  # every chapter makes several claims; the fewest asserts any chapter has today is 9


def _python(source: str) -> ast.Module:
    """A code cell parsed as Python, its IPython lines (``%pip``, ``!ls``) read as ``pass``."""
    lines = [line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
             for line in source.splitlines()]
    return ast.parse("\n".join(lines))


def _stored(node: ast.AST) -> set[str]:
    """The names ``node`` binds: assignment, loop, ``with`` and comprehension targets, definitions, arguments."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
              for a in (*n.posonlyargs, *n.args, *n.kwonlyargs, n.vararg, n.kwarg) if a is not None}
    return names


def _is_bool_test(node: ast.AST, expression: str) -> bool | None:
    """True or False when ``node`` is ``expression is/== True`` or ``... False``; None otherwise."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Is, ast.Eq)) \
            and ast.dump(node.left) == expression and isinstance(node.comparators[0], ast.Constant) \
            and isinstance(node.comparators[0].value, bool):
        return node.comparators[0].value
    return None


def assert_weakness(test: ast.expr, computed: set[str]) -> str | None:
    """Why an assert's ``test`` cannot fail or checks nothing the chapter computed (None if it can fail):

    - a constant, or an expression of literals alone (``assert True``, ``assert 1 < 2``);
    - it reads no name the chapter binds (an assignment, loop, definition or argument; imported modules do
      not count): it does not look at anything the chapter computed;
    - it compares an expression with itself (``a == a``, ``x <= x``);
    - a tautology: ``e or not e``, ``e is True or e is False``.
    """
    if not any(isinstance(n, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)) for n in ast.walk(test)):
        return "asserts a constant"
    reads = {n.id for n in ast.walk(test) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if not reads & (computed - _stored(test)):
        return "reads nothing the chapter computed"
    for node in ast.walk(test):
        if isinstance(node, ast.Compare):
            operands = [ast.dump(operand) for operand in (node.left, *node.comparators)]
            if any(a == b for a, b in zip(operands, operands[1:], strict=False)):
                return "compares an expression with itself"
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            dumps = [ast.dump(value) for value in node.values]
            negated = {ast.dump(v.operand) for v in node.values if isinstance(v, ast.UnaryOp)
                       and isinstance(v.op, ast.Not)}
            if negated & set(dumps):
                return "a tautology (e or not e)"
            for value in node.values:
                if isinstance(value, ast.Compare):
                    expression = ast.dump(value.left)
                    if {_is_bool_test(v, expression) for v in node.values} >= {True, False}:
                        return "a tautology (e is True or e is False)"
    return None


def _compares_with_a_number(test: ast.expr) -> bool:
    """Whether ``test`` compares something with a numeric literal (a threshold or a value the text states)."""
    return any(isinstance(node, ast.Compare) and any(isinstance(n, ast.Constant) and type(n.value) in (int, float)
                                                     for operand in (node.left, *node.comparators)
                                                     for n in ast.walk(operand))
               for node in ast.walk(test))


def test_the_assert_check_catches_asserts_that_cannot_fail():
    """The check below is itself checked: it flags asserts that cannot fail, and passes real claims."""
    computed = {"accuracy", "model", "robust", "natural", "x", "x_adv", "eps"}

    def weakness(source: str) -> str | None:
        return assert_weakness(_python(source).body[0].test, computed)

    for trivial in ("assert True", "assert 1 < 2", "assert len([1, 2]) == 2", "assert accuracy == accuracy",
                    "assert model.training is False or model.training is True", "assert robust or not robust",
                    "assert all(v >= 0 for v in [1, 2])"):
        assert weakness(trivial), trivial
    for claim in ("assert accuracy > 0.8", "assert robust > natural + 0.1, (robust, natural)",
                  "assert (x_adv - x).abs().max() <= eps + 1e-6", "assert all(a > 0.5 for a in accuracy)",
                  "assert model.training"):
        assert weakness(claim) is None, claim


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_asserts_its_claims_with_asserts_that_can_fail(chapter):
    """DESIGN.md: "every notebook asserts the claims its text makes". Matching the word ``assert`` would pass
    ``assert True``; this parses every code cell (a syntax error fails here, before nbval) and asks of the
    chapter's asserts what can be checked without running them: there are at least ``MIN_ASSERTS``; each one
    reads a quantity the chapter computed and can fail (not a constant, not ``a == a``, not a tautology, see
    :func:`assert_weakness`); and at least one compares a computed quantity with a number, the form a claim
    of the text ("above 80%", "at most 0.1") takes. Whether each claim holds is nbval's part: it runs them."""
    trees = [_python(source) for source in _cells(chapter, "code")]
    imported = {(alias.asname or alias.name).split(".")[0] for tree in trees for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    computed = set().union(*(_stored(tree) for tree in trees)) - imported
    asserts = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert len(asserts) >= MIN_ASSERTS, f"{chapter.name} has {len(asserts)} asserts, fewer than {MIN_ASSERTS}"
    weak = [(ast.unparse(node.test), why) for node in asserts if (why := assert_weakness(node.test, computed))]
    assert not weak, f"{chapter.name}: asserts that cannot fail or check nothing computed: {weak}"
    assert any(_compares_with_a_number(node.test) for node in asserts), \
        f"{chapter.name}: no assert compares a computed quantity with a number"


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


def test_every_chapter_has_a_measured_duration_for_the_test_order():
    """``make test`` starts the longest chapters first, by ``chapters/durations.json``: a chapter missing
    there would start last, after the unit tests, and run alone at the end."""
    seconds = json.loads((ROOT / "chapters" / "durations.json").read_text())["seconds"]
    assert sorted(seconds) == [path.stem for path in CHAPTERS]
    assert all(isinstance(value, (int, float)) and value > 0 for value in seconds.values())
