"""The results page comes from the recorded data: ``book/results.md`` is what ``benchmarks/results_page.py``
renders from ``benchmarks/results/reproduce-*.json``, and those records match the chapters' tagged cells.

``benchmarks/`` is not a package, so its scripts are loaded from their paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from repository import ROOT, benchmark_script

RESULTS = ROOT / "benchmarks" / "results"


results_page = benchmark_script("results_page")


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
    """Every chapter with a ``paper-table`` cell is recorded for the quick profile, and every record comes from
    today's code, with one non-empty table per tagged cell: a chapter whose code changed must be reproduced
    again. The one exception is a full-profile (GPU) record kept after a change made where no GPU was lent:
    it must say so (``code_changed_since``: the commit and why), and the page prints that beside it."""
    pytest.importorskip("nbclient")
    reproduce = benchmark_script("reproduce")
    chapters = reproduce.table_chapters()
    assert len(chapters) >= 8, [path.name for path in chapters]
    runs = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("reproduce-*.json"))]
    page = results_page.render(RESULTS)
    assert any(run["profile"] == "quick" for run in runs), "no quick-profile run is recorded"
    for path in chapters:
        records = [run["chapters"][path.stem] | {"profile": run["profile"]} for run in runs
                   if path.stem in run["chapters"]]
        assert any(path.stem in run["chapters"] for run in runs if run["profile"] == "quick"), \
            f"{path.stem} is not recorded: python benchmarks/reproduce.py --profile quick"
        tagged = [i for i, cell in enumerate(json.loads(path.read_text())["cells"])
                  if reproduce.TAG in cell.get("metadata", {}).get("tags", [])]
        for record in records:
            if not record.get("code_changed_since"):  # a record kept after a change may hold the old cells' places
                assert [table["cell"] for table in record["tables"]] == tagged, path.stem
            assert all(table["outputs"] for table in record["tables"]), f"{path.stem}: a tagged cell printed nothing"
            if record["source_sha256"] != reproduce.source_hash(path):
                changed = record.get("code_changed_since")
                assert changed and changed["commit"] and changed["why"] and record["profile"] == "full", \
                    f"{path.stem}'s code changed since it was recorded: python benchmarks/reproduce.py"
                assert f"after commit {changed['commit']}: {changed['why']}" in page


def _notebook(path: Path, cells: list[tuple[str, str, list[str]]]) -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook()
    for kind, source, tags in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        notebook.cells.append(cell)
    nbformat.write(notebook, path)


def test_reproduce_keeps_the_tagged_outputs_and_resumes(tmp_path, monkeypatch, capsys):
    """A chapter runs in the asked profile; only its tagged cells' printed and Markdown outputs are kept; a second
    run skips it; a change to its code (not to its prose) makes it run again."""
    pytest.importorskip("nbclient")
    reproduce = benchmark_script("reproduce")
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    chapter = chapters / "99_example.ipynb"
    _notebook(chapter, [
        ("markdown", "# 99. An example\n\nProse.", []),
        ("code", "import os\nprint('not a table')", []),
        ("code", "from IPython.display import Markdown, display\nprint('profile', os.environ['ADVLIB_PROFILE'])\n"
                 "display(Markdown('| ours | paper |\\n|---|---|\\n| 1 | 2 |'))", [reproduce.TAG]),
    ])
    monkeypatch.setattr(reproduce, "CHAPTERS", chapters)
    out = tmp_path / "reproduce-quick-test.json"
    reproduce.main(["--profile", "quick", "--out", str(out), "--executed", str(tmp_path / "executed")])
    record = json.loads(out.read_text())["chapters"]["99_example"]
    executed = json.loads((tmp_path / "executed" / "99_example.ipynb").read_text())  # with its outputs
    assert "".join(executed["cells"][1]["outputs"][0]["text"]) == "not a table\n"
    assert record["title"] == "99. An example"
    assert record["tables"] == [{"cell": 2, "outputs": [
        {"mime": "text/plain", "text": "profile quick\n"},
        {"mime": "text/markdown", "text": "| ours | paper |\n|---|---|\n| 1 | 2 |"}]}]

    ran = []
    monkeypatch.setattr(reproduce, "run_chapter", lambda path, *args: ran.append(path.stem) or record)
    reproduce.main(["--profile", "quick", "--out", str(out)])
    assert ran == []  # recorded from the same code: nothing to run
    notebook = json.loads(chapter.read_text())
    notebook["cells"][0]["source"] = "# 99. An example\n\nOther prose."
    chapter.write_text(json.dumps(notebook))
    reproduce.main(["--profile", "quick", "--out", str(out)])
    assert ran == []  # prose does not change the numbers
    notebook["cells"][1]["source"] = "import os\nprint('the Colab install cell')"
    notebook["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                              "source": "print('an exercise after the last table')"})
    chapter.write_text(json.dumps(notebook))
    reproduce.main(["--profile", "quick", "--out", str(out)])
    assert ran == []  # the first code cell and the cells after the last table make no table
    notebook["cells"][2]["source"] = "".join(notebook["cells"][2]["source"]).replace("'profile'", "'the profile'")
    chapter.write_text(json.dumps(notebook))
    reproduce.main(["--profile", "quick", "--out", str(out)])
    assert ran == ["99_example"]
    capsys.readouterr()
    with pytest.raises(SystemExit, match="^2$"):  # a file of one profile is not continued in the other
        reproduce.main(["--profile", "full", "--out", str(out)])
    assert "records the 'quick' profile, not 'full'" in capsys.readouterr().err  # argparse's error, exit code 2
