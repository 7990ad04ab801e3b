"""The results page comes from the recorded data: ``book/results.md`` is what ``benchmarks/results_page.py``
renders from ``benchmarks/results/reproduce-*.json``, and those records match the chapters' tagged cells.

``benchmarks/`` is not a package, so its scripts are loaded from their paths."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results_page = _load("results_page")


def test_the_committed_results_page_is_rendered_from_the_recorded_runs():
    assert (ROOT / "book" / "results.md").read_text() == results_page.render(RESULTS), \
        "book/results.md is out of date: run `python benchmarks/results_page.py`"


def test_a_changed_record_changes_the_page(tmp_path):
    for path in RESULTS.glob("reproduce-*.json"):
        shutil.copy(path, tmp_path / path.name)
    quick = sorted(tmp_path.glob("reproduce-quick-*.json"))
    assert quick, "no quick-profile run is recorded"
    run = json.loads(quick[0].read_text())
    stem, record = next(iter(run["chapters"].items()))
    record["tables"][0]["outputs"] = [{"mime": "text/plain", "text": "a figure only the test wrote: 12.345%\n"}]
    record["seconds"] = 4321.0
    quick[0].write_text(json.dumps(run))
    page = results_page.render(tmp_path)
    assert "a figure only the test wrote: 12.345%" in page
    assert "72 min 01 s" in page
    assert "a figure only the test wrote" not in results_page.render(RESULTS)


def test_the_recorded_runs_cover_every_table_chapter_at_its_current_code():
    """Every chapter with a ``paper-table`` cell is recorded for the quick profile, and every record (either
    profile) comes from today's code, with one non-empty table per tagged cell: a chapter whose code changed
    must be reproduced again."""
    pytest.importorskip("nbclient")
    reproduce = _load("reproduce")
    chapters = reproduce.table_chapters()
    assert len(chapters) >= 8, [path.name for path in chapters]
    runs = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("reproduce-*.json"))]
    assert any(run["profile"] == "quick" for run in runs), "no quick-profile run is recorded"
    for path in chapters:
        records = [run["chapters"][path.stem] for run in runs if path.stem in run["chapters"]]
        assert any(path.stem in run["chapters"] for run in runs if run["profile"] == "quick"), \
            f"{path.stem} is not recorded: python benchmarks/reproduce.py --profile quick"
        tagged = [i for i, cell in enumerate(json.loads(path.read_text())["cells"])
                  if reproduce.TAG in cell.get("metadata", {}).get("tags", [])]
        for record in records:
            assert [table["cell"] for table in record["tables"]] == tagged, path.stem
            assert all(table["outputs"] for table in record["tables"]), f"{path.stem}: a tagged cell printed nothing"
            assert record["source_sha256"] == reproduce.source_hash(path), \
                f"{path.stem}'s code changed since it was recorded: python benchmarks/reproduce.py"
