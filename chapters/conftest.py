"""Each chapter executes once in ``make test``: nbval runs its cells (their asserts are the checks), and this
plugin keeps what the cells printed and drew. When every code cell of a chapter has passed, the executed
chapter goes into the book's jupyter-cache (``_build/.jupyter_cache``), where ``jupyter-book build`` (with
``execute_notebooks: cache``) finds it by the hash of its code and renders it without running it again.

A chapter that failed, or ran only in part (``pytest -k``), is not cached: the book build runs it itself.
``make book`` empties the cache first, so a book built on its own always comes from a fresh execution.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"
DURATIONS = Path(__file__).with_name("durations.json")  # seconds per chapter in make test, measured
_runs: dict[str, dict] = {}  # notebook path -> {"notebook", "cells", "passed", "failed", "start"}


def pytest_collection_modifyitems(session, config, items):
    """Chapters first, the longest (by ``durations.json``, measured in ``make test``) first, then the unit
    tests. ``pytest -n 2 --dist loadfile --no-loadscope-reorder`` hands whole files to the two workers in this
    order, each taking the next when it is done (without ``--no-loadscope-reorder``, pytest-xdist would
    reorder the files by their number of tests, that is of cells): the longest-first rule, which keeps the
    two workers finishing together."""
    seconds = json.loads(DURATIONS.read_text())["seconds"] if DURATIONS.exists() else {}

    def order(item):
        path = Path(str(item.path))
        if path.suffix == ".ipynb":
            return (0, -seconds.get(path.stem, 0.0), path.name)
        return (1, 0.0, "")

    items.sort(key=order)  # stable: cells keep their order within a chapter, tests within a file


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "test_outputs")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_nbval_cell(item) or call.when != "call":
        return
    report = outcome.get_result()
    notebook = item.parent.nb
    run = _runs.setdefault(str(item.parent.path), {
        "notebook": notebook, "passed": 0, "failed": False, "start": time.time(),
        "cells": sum(1 for cell in notebook.cells if cell.cell_type == "code")})
    if not report.passed:
        run["failed"] = True
        return
    run["passed"] += 1
    item.cell.outputs = list(item.test_outputs or [])
    item.cell.execution_count = run["passed"]  # cells run in order, one kernel per chapter
    for output in item.cell.outputs:
        if output.get("output_type") == "execute_result":
            output["execution_count"] = run["passed"]


def pytest_sessionfinish(session):
    complete = {path: run for path, run in _runs.items() if not run["failed"] and run["passed"] == run["cells"]}
    if not complete:
        return
    from filelock import FileLock
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE) + ".lock"):  # pytest-xdist workers finish at their own times
        cache = get_cache(CACHE)
        for path, run in complete.items():
            cache.cache_notebook_bundle(
                CacheBundleIn(run["notebook"], path, data={"execution_seconds": time.time() - run["start"]}),
                check_validity=True, overwrite=True)
