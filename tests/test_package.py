"""The package's shape: every subpackage reachable from ``import advlib``, and imports that flow one way.

DESIGN.md's layers: config, utils, data, models <- attacks, certify, smoothing, metrics <- evaluate, train,
defenses, zoo <- viz. A module may import from its own layer and from the layers below;
never from a layer above, and never from chapters, book, tests or benchmarks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import advlib

PACKAGE = Path(advlib.__file__).resolve().parent
LAYERS = [
    {"config", "utils", "data", "models"},
    {"attacks", "certify", "smoothing", "metrics"},
    {"evaluate", "train", "defenses", "zoo"},
    {"viz"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def test_every_subpackage_is_an_attribute_of_advlib():
    """``import advlib; advlib.attacks`` works (it once raised AttributeError), in a fresh interpreter."""
    names = sorted(LAYER)
    assert sorted(advlib.__all__) == names
    code = "import advlib; " + "; ".join(f"advlib.{name}" for name in names) + "; advlib.attacks.pgd"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'attack'"):
        advlib.attack  # noqa: B018


def _imported_subpackages(source: str, module_parts: tuple[str, ...]) -> set[str]:
    """The advlib subpackages that the module ``module_parts`` (e.g. ("advlib", "certify", "dual")) imports
    in ``source`` (relative imports resolved; ``from .. import x`` counted)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module_parts[:len(module_parts) - node.level])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = node.module.split(".")
            if target[:1] != ["advlib"]:
                continue
            if len(target) == 1:  # from advlib import x, y
                found |= {alias.name for alias in node.names}
            else:
                found.add(target[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names
                      if alias.name.startswith("advlib.") and alias.name.count(".") >= 1}
    return found & set(LAYER)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    own = parts[0]
    if own == "__init__" or own == "__main__":
        return
    level = LAYER[own]
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    for name in _imported_subpackages(path.read_text(), module_parts) - {own}:
        assert LAYER[name] <= level, \
            f"advlib.{own} (layer {level}) imports advlib.{name} (layer {LAYER[name]})"


def test_the_layering_check_sees_forbidden_imports():
    """The parser finds what certify once imported from attacks, and every spelling of an import."""
    source = ("from ..attacks.core import margin\nfrom .. import evaluate, utils\nimport advlib.viz\n"
              "from advlib.zoo import get\nfrom .network import layers\nimport torch\n")
    found = _imported_subpackages(source, ("advlib", "certify", "network"))
    assert found == {"attacks", "evaluate", "utils", "viz", "zoo", "certify"}


def test_modules_import_alone():
    """Each subpackage imports on its own (no import cycle hidden by an earlier import)."""
    for name in sorted(LAYER):
        subprocess.run([sys.executable, "-c", f"import advlib.{name}"], check=True)
