"""Reproduce the talk's tables: run every chapter that prints one, in a profile, and record the tables.

    python benchmarks/reproduce.py                      # the profile of this machine (full on a GPU)
    python benchmarks/reproduce.py --profile quick      # the CPU profile, a few minutes a chapter
    python benchmarks/reproduce.py --only 10 12 --force # run chapters 10 and 12 again

A chapter's table cells carry the tag ``paper-table``: they print our numbers beside the paper's. Each
such chapter runs whole (nbclient, in ``chapters/``, with ``ADVLIB_PROFILE`` set), so its tables come
from the same code the book runs, under the chapter's own asserts. The outputs of its tagged cells, its
run time and the hash of its code go into ``benchmarks/results/reproduce-PROFILE-HOST.json``, written
after every chapter: an interrupted run resumes where it stopped, and a chapter whose code changed
since it was recorded runs again. ``python benchmarks/results_page.py`` renders ``book/results.md``
from these files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (hardware() and write_results() of the benchmark scripts)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
TAG = "paper-table"
KEPT_MIME = ("text/markdown", "text/plain")  # what a results page can show of a table cell's output


def table_chapters() -> list[Path]:
    """The chapters with at least one cell tagged ``paper-table``, in the book's order."""
    return [path for path in sorted(CHAPTERS.glob("*.ipynb"))
            if any(TAG in cell.get("metadata", {}).get("tags", []) for cell in json.loads(path.read_text())["cells"])]


def source_hash(path: Path) -> str:
    """sha256 of the code that makes a chapter's tables: its code cells from the second (the first only
    installs advlib on Colab and names the profile) to the last cell tagged ``paper-table``. Prose, metadata,
    outputs and the cells after the last table (exercises, the closing time) cannot change a recorded table;
    a chapter whose table-making code changed since it was recorded runs again."""
    cells = json.loads(path.read_text())["cells"]
    tagged = [i for i, cell in enumerate(cells) if TAG in cell.get("metadata", {}).get("tags", [])]
    end = tagged[-1] + 1 if tagged else len(cells)
    code = ["".join(cell["source"]) for cell in cells[:end] if cell["cell_type"] == "code"][1:]
    return hashlib.sha256("\x00".join(code).encode()).hexdigest()


def table_outputs(cell) -> list[dict]:
    """A tagged cell's outputs as ``{"mime": ..., "text": ...}``: printed text, or a displayed Markdown table."""
    kept = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream" and output["name"] == "stdout":
            kept.append({"mime": "text/plain", "text": output["text"]})
        elif output["output_type"] in ("display_data", "execute_result"):
            mime = next((m for m in KEPT_MIME if m in output["data"]), None)
            if mime is not None:
                kept.append({"mime": mime, "text": output["data"][mime]})
    return kept


def run_chapter(path: Path, profile: str, timeout: int, executed: Path | None = None) -> dict:
    """Execute one chapter in ``profile`` (a progress bar over its cells); return its tables and run time.
    With ``executed``, the executed notebook is also written there, under the chapter's file name."""
    notebook = nbformat.read(path, as_version=4)
    env = os.environ | {"ADVLIB_PROFILE": profile, "ADVLIB_SLIDER": "static", "ADVLIB_PROGRESS": "0"}
    cells = tqdm(total=len(notebook.cells), desc=path.stem, unit="cell", leave=False)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(CHAPTERS)}},
                            on_cell_executed=lambda **_: cells.update())
    started = time.perf_counter()
    try:
        client.execute(env=env)  # the kernel's environment: ours, with the profile set
    finally:
        cells.close()
    seconds = time.perf_counter() - started
    if executed is not None:
        executed.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, executed / path.name)
    tables = [{"cell": index, "outputs": table_outputs(cell)} for index, cell in enumerate(notebook.cells)
              if TAG in cell.get("metadata", {}).get("tags", [])]
    return {"title": notebook.cells[0].source.splitlines()[0].lstrip("# ").strip(), "seconds": round(seconds, 1),
            "source_sha256": source_hash(path), "tables": tables}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "full"],
                        default="full" if torch.cuda.is_available() else "quick")
    parser.add_argument("--only", nargs="+", default=None, metavar="NN", help="chapter numbers, e.g. 05 10")
    parser.add_argument("--force", action="store_true", help="run the chosen chapters even if already recorded")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds a cell may run (default 4 h)")
    parser.add_argument("--executed", type=Path, default=None, metavar="DIR",
                        help="also write each executed notebook (with its outputs) into DIR")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default benchmarks/results/reproduce-PROFILE-<host>.json)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.profile == "full" and device.type != "cuda":
        print("note: the full profile on a CPU uses the papers' sizes and takes days", file=sys.stderr)
    out = bench.results_file(args, f"reproduce-{args.profile}")

    chapters = table_chapters()
    if args.only:
        unknown = set(args.only) - {path.name[:2] for path in chapters}
        if unknown:
            parser.error(f"no chapter with a {TAG!r} cell numbered {sorted(unknown)}; "
                         f"choose from {[path.name[:2] for path in chapters]}")
        chapters = [path for path in chapters if path.name[:2] in args.only]
    results = json.loads(out.read_text()) if out.exists() else {"profile": args.profile, "chapters": {}}
    if results.get("profile") != args.profile:
        parser.error(f"{out} records the {results.get('profile')!r} profile, not {args.profile!r}")

    todo = [path for path in chapters if args.force or path.stem not in results["chapters"]
            or results["chapters"][path.stem]["source_sha256"] != source_hash(path)]
    print(f"profile {args.profile!r} on {device}: {len(chapters) - len(todo)} of {len(chapters)} chapters "
          f"already recorded in {out}; running {[path.name[:2] for path in todo]}")
    for path in tqdm(todo, desc="chapters", unit="chapter"):
        record = run_chapter(path, args.profile, args.timeout, args.executed)
        results["hardware"] = bench.hardware(device)
        results["chapters"][path.stem] = record | {"hardware": results["hardware"]}
        results["command"] = " ".join(["reproduce.py", *(sys.argv[1:] if argv is None else argv)])
        bench.write_results(results, out)
        tqdm.write(f"{path.stem}: {record['seconds']:.0f} s, {len(record['tables'])} table(s)")


if __name__ == "__main__":
    main()
