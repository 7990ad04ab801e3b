"""The API reference (``book/api/``) against advlib itself, read from the sources (no build).

Every name a subpackage exports (its ``__all__``) and every public function and class of a module without
``__all__`` has an autodoc entry on its page, under the name users import it by
(``advlib.attacks.pgd``, not ``advlib.attacks.pgd.pgd``); every entry names a real object, the function
and not the submodule where the two share a name; and every public function, class and method has a
docstring. The build itself (``--warningiserror``) checks that the docstrings render.
"""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

import pytest
from repository import ROOT, book_pages

API = ROOT / "book" / "api"

# Page -> the modules it documents.
PAGES = {
    "attacks": ["advlib.attacks", "advlib.attacks.core", "advlib.attacks.suite", "advlib.attacks.conv_gradient",
                "advlib.attacks.window_forward"],
    "certify": ["advlib.certify"],
    "defenses": ["advlib.defenses"],
    "evaluate": ["advlib.evaluate"],
    "smoothing": ["advlib.smoothing"],
    "metrics": ["advlib.metrics"],
    "models": ["advlib.models", "advlib.train", "advlib.zoo"],
    "data": ["advlib.data", "advlib.config", "advlib.utils"],
    "viz": ["advlib.viz"],
}
MODULES = [(page, module) for page, modules in PAGES.items() for module in modules]

# An entry: ``.. autofunction:: NAME`` in an {eval-rst} block, or MyST's ```{autofunction} NAME.
ENTRY = re.compile(
    r"^[ \t]*(?:\.\.[ \t]+(?P<rst>[a-z:]+)::|```+\{(?P<myst>[a-z:-]+)\})[ \t]*(?P<name>\S+)[ \t]*$", re.MULTILINE
)
DIRECTIVES = {"autofunction", "autoclass", "autoexception", "autodata", "automodule", "py:function", "py:class",
              "py:exception", "py:data"}


def public_names(module: ModuleType) -> list[str]:
    """The names a page must document: ``__all__``, else the module's own public functions and classes.
    A name that re-exports what another documented module defines (``advlib.attacks.core.eval_mode`` is
    ``advlib.utils.eval_mode``) is documented there."""
    if hasattr(module, "__all__"):
        elsewhere = {m for _, m in MODULES} - {module.__name__}
        return [name for name in module.__all__ if getattr(getattr(module, name), "__module__", None) not in elsewhere]
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__]


def entries(text: str) -> list[tuple[str, str, str]]:
    """(directive, full name, options and body) of every autodoc or py-domain entry in a page's text; a
    ``:module:`` option is the module of a short name (``.. py:data:: ABSTAIN`` ``:module: advlib.smoothing``)."""
    found = []
    matches = list(ENTRY.finditer(text))
    for i, match in enumerate(matches):
        directive = match["rst"] or match["myst"]
        if directive in DIRECTIVES:
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            rest = text[match.end():end].removeprefix("\n")
            module = re.match(r"(?:[ \t]*:[a-z-]+:.*\n)*?[ \t]*:module:[ \t]*(\S+)", rest)
            name = f"{module[1]}.{match['name']}" if module else match["name"]
            found.append((directive, name, rest))
    return found


def documented(text: str, module: ModuleType) -> set[str]:
    """The names of ``module`` that a page's text documents: an entry ``module.name``, or an automodule
    of ``module`` with ``:members:`` (all of them, or those it lists)."""
    names = set()
    for directive, name, rest in entries(text):
        if directive == "automodule":
            members = re.match(r"(?:[ \t]*:[a-z-]+:.*\n)*?[ \t]*:members:(.*)", rest)
            if name == module.__name__ and members:
                listed = [m.strip() for m in members[1].split(",") if m.strip()]
                names.update(listed or public_names(module))
        elif name.rpartition(".")[0] == module.__name__:
            names.add(name.rpartition(".")[2])
    return names


def missing(text: str, module: ModuleType) -> list[str]:
    return sorted(set(public_names(module)) - documented(text, module))


def page_text(page: str) -> str:
    return (API / f"{page}.md").read_text()


def test_the_api_part_is_in_the_table_of_contents():
    pages = book_pages()
    api = [p for p in pages if p.startswith("book/api/")]
    assert api == ["book/api/index"] + [f"book/api/{page}" for page in PAGES]
    assert pages.index("book/results") < pages.index("book/api/index")
    assert pages.index("book/api/viz") < pages.index("book/bibliography")
    assert sorted(p.name for p in API.glob("*.md")) == sorted(["index.md"] + [f"{p}.md" for p in PAGES])


@pytest.mark.parametrize(("page", "module_name"), MODULES)
def test_every_public_name_has_an_entry_on_its_page(page, module_name):
    module = importlib.import_module(module_name)
    assert public_names(module), f"{module_name} exports nothing?"
    assert missing(page_text(page), module) == [], f"book/api/{page}.md lacks entries for these {module_name} names"


def test_a_missing_entry_is_found():
    """The check above can fail: drop one entry from the attacks page and it names the dropped function."""
    attacks = importlib.import_module("advlib.attacks")
    text = page_text("attacks")
    assert missing(text, attacks) == []
    assert missing(text.replace(".. autofunction:: advlib.attacks.pgd\n", ""), attacks) == ["pgd"]
    assert missing(text.replace("advlib.attacks.SquareResult", "advlib.attacks.square.SquareResult"), attacks) == [
        "SquareResult"]
    # An automodule with :members: covers the module's names; without it, none.
    assert missing(".. automodule:: advlib.attacks\n   :members:\n   :imported-members:\n", attacks) == []
    assert missing(".. automodule:: advlib.attacks\n", attacks) == sorted(attacks.__all__)
    assert missing("```{autofunction} advlib.attacks.pgd\n```\n", attacks) == sorted(set(attacks.__all__) - {"pgd"})


@pytest.mark.parametrize("page", list(PAGES))
def test_every_entry_names_a_public_object_with_a_docstring(page):
    modules = PAGES[page]
    for directive, name, rest in entries(page_text(page)):
        if directive == "automodule":
            assert name in modules, f"{page}.md documents module {name}, which belongs on another page"
            continue
        module_name, _, attribute = name.rpartition(".")
        assert module_name in modules, f"{page}.md: {name} is not a name of {modules}"
        obj = getattr(importlib.import_module(module_name), attribute)
        assert not inspect.ismodule(obj), f"{name} is documented as the submodule, not the function"
        if directive.endswith(("function", "class", "exception")):
            assert inspect.isfunction(obj) or inspect.isclass(obj), f"{name} is a {type(obj).__name__}"
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
        else:  # a constant, written by hand (autodata would show its type's docstring)
            value = re.search(r"^[ \t]*:value:[ \t]*(.*)$", rest, re.MULTILINE)
            if value:
                assert value[1].strip() == repr(obj), f"{page}.md gives {name} the value {value[1]}"


@pytest.mark.parametrize(("page", "module_name"), MODULES)
def test_every_public_function_class_and_method_has_a_docstring(page, module_name):
    module = importlib.import_module(module_name)
    undocumented = []
    for name in public_names(module):
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            undocumented.append(name)
        if inspect.isclass(obj) and obj.__module__.startswith("advlib"):
            for attribute, member in vars(obj).items():
                function = getattr(member, "__func__", member)
                function = getattr(function, "fget", function)
                overrides = any(hasattr(base, attribute) for base in obj.__mro__[1:])
                if (attribute.startswith("_") or not inspect.isfunction(function) or overrides
                        or attribute in getattr(obj, "_fields", ())):
                    continue
                if not (function.__doc__ or "").strip():
                    undocumented.append(f"{name}.{attribute}")
    assert undocumented == [], f"{module_name}: no docstring"
