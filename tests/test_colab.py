"""A chapter as Colab runs it: a fresh virtual environment holding only a Jupyter kernel, a stand-in for
Colab's ``google.colab`` module, and the chapter's own first cell installing advlib with ``%pip`` from a
``git+file://`` URL of this repository (in place of the GitHub URL). Like Colab's image, the environment
already holds torch and torchvision (linked from this one, with what they require); every other
dependency must come from ``pyproject.toml``. The chapter must then run end to end in the quick profile,
Colab's default.

It fails when a dependency is missing from ``pyproject.toml``, when the install cell breaks, or when a
chapter reaches for something only ``make env`` installs. ``git+file://`` installs the committed tree
(``HEAD``): on a fresh clone, as in CI, that is everything. The registry must be reachable (it is in CI);
the datasets and trained models come from this checkout's data folder, as Colab's would from its cache.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import venv
from importlib import metadata
from pathlib import Path

import pytest
from repository import book_config

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "06_fgsm.ipynb"  # data, the zoo, attacks, evaluation, tables and a slider

pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None,
                                reason="the Colab test installs advlib from this git checkout")


def _colab_notebook(path: Path) -> dict:
    """The chapter with its install URL pointed at this checkout, and a last cell that says where advlib
    was imported from and which profile ran."""
    notebook = json.loads(path.read_text())
    url = f"git+{book_config()['repository']['url']}"
    first = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    source = "".join(first["source"])
    assert url in source, f"{path.name}'s first cell does not install from {url}"
    first["source"] = source.replace(url, f"git+file://{ROOT}")
    notebook["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                              "source": "import advlib, advlib.config\n"
                                        "print('ADVLIB', advlib.__file__, advlib.config.profile())"})
    return notebook


PREINSTALLED = ("torch", "torchvision")  # Colab's runtime has them; a fresh copy is gigabytes of CUDA


def _distributions_with_requirements(names) -> set[str]:
    """The installed distributions ``names`` and everything they require, transitively (extras aside)."""
    found, todo = set(), list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.add(name)
        todo += [re.match(r"[A-Za-z0-9._-]+", req).group(0) for req in dist.requires or [] if "extra ==" not in req]
    return found


def _preinstalled(site: Path) -> None:
    """Links in ``site`` to this environment's torch and torchvision and what they require (and only
    those), as Colab's image has them: advlib's other dependencies must come from its own install."""
    site.mkdir()
    for name in _distributions_with_requirements(PREINSTALLED):
        dist = metadata.distribution(name)
        tops = {Path(str(file)).parts[0] for file in dist.files or []}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists() and top != "..":
                (site / top).symlink_to(source)


def test_a_chapter_runs_as_on_colab(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    env_dir = tmp_path / "colab-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _preinstalled(tmp_path / "preinstalled")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "colab-preinstalled.pth").write_text(str(tmp_path / "preinstalled") + "\n")
    # Colab's runtime brings a kernel and a recent pip; all else advlib needs comes from its own install
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip", "ipykernel"], check=True)

    colab = tmp_path / "colab-stand-in"  # the module Colab's runtime has loaded when a notebook starts
    (colab / "google" / "colab").mkdir(parents=True)
    (colab / "google" / "__init__.py").write_text("")
    (colab / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module."""\n')
    (colab / "sitecustomize.py").write_text("import google.colab  # noqa: F401\n")
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    env = {"PYTHONPATH": str(colab), "ADVLIB_DATA": str(ROOT / "data"), "ADVLIB_PROGRESS": "0",
           "ADVLIB_SLIDER": "static", "ADVLIB_PROFILE": ""}
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab stand-in", "language": "python", "env": env}))

    work = tmp_path / "content"  # Colab's working folder: no advlib source next to the notebook
    work.mkdir()
    notebook = nbformat.reads(json.dumps(_colab_notebook(CHAPTER)), as_version=4)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # where the "colab" kernel is found
    nbclient.NotebookClient(notebook, kernel_name="colab", timeout=1200,
                            resources={"metadata": {"path": str(work)}}).execute()

    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    where, profile = printed.split("ADVLIB ", 1)[1].split()
    assert Path(where).resolve().is_relative_to(env_dir.resolve()), f"advlib came from {where}, not the install"
    assert profile == "quick", f"Colab's default profile should be quick, the chapter ran {profile!r}"
