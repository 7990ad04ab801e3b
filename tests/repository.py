"""The repository's own files as tests read them: the book's pages in table-of-contents order, its
configuration, and the scripts of ``benchmarks/`` (not a package, so loaded from their paths)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(node) -> list[str]:
    """Every ``file`` and ``root`` entry of a parsed ``_toc.yml``, in order."""
    files = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                files.append(value)
            else:
                files.extend(toc_files(value))
    elif isinstance(node, list):
        for item in node:
            files.extend(toc_files(item))
    return files


def book_pages() -> list[str]:
    """The book's pages (paths without extension), as ``_toc.yml`` lists them."""
    return toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))


def book_config() -> dict:
    """The parsed ``_config.yml``."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def benchmark_script(name: str):
    """``benchmarks/NAME.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
