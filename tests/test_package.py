"""The package's shape: every subpackage reachable from ``import advlib``, and imports that flow one way.

DESIGN.md's layers: config, utils, data, models <- attacks, certify, smoothing, metrics <- evaluate, train,
defenses, zoo <- viz. A module may import from its own layer and from the layers below;
never from a layer above, and never from chapters, book, tests or benchmarks.
"""

from __future__ import annotations

import ast
import os
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


# One interpreter loads the third-party libraries once, then forks a child per subpackage, which imports it
# with no advlib module loaded before: the same check as a fresh interpreter per subpackage, without paying
# for torch's import thirteen times (40 s of the 2-core VM's make test).
IMPORT_ALONE = """
import os, sys, traceback
import filelock, matplotlib, numpy, scipy.optimize, scipy.stats, torch, tqdm  # noqa: F401
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(f"advlib.{name}")
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
assert not any(m == "advlib" or m.startswith("advlib.") for m in sys.modules)
sys.exit(f"these subpackages fail to import alone: {failed}" if failed else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the check forks one child per subpackage")
def test_modules_import_alone():
    """Each subpackage imports on its own (no import cycle hidden by an earlier import)."""
    result = subprocess.run([sys.executable, "-c", IMPORT_ALONE, *sorted(LAYER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_import_check_catches_a_module_that_fails_alone(tmp_path):
    """The forked check fails for a package whose import raises, and names it."""
    (tmp_path / "advlib").mkdir()
    (tmp_path / "advlib" / "__init__.py").write_text("")
    (tmp_path / "advlib" / "broken.py").write_text("from . import missing  # a cycle or a typo\n")
    (tmp_path / "advlib" / "fine.py").write_text("")
    result = subprocess.run([sys.executable, "-c", IMPORT_ALONE, "fine", "broken"], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0 and "['broken']" in result.stderr
