"""What the book's two generated pages share (``performance_page.py``, ``results_page.py``): a Markdown
table, and writing a page or checking that the committed one equals a fresh render. Standard library only."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def check(page: Path, fresh: str, regenerate: str) -> int:
    """0 when the committed page equals a fresh render; else 1, with a message and the start of the diff."""
    name = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    if not page.is_file():
        print(f"{name} is missing: run `{regenerate}`.", file=sys.stderr)
        return 1
    committed = page.read_text()
    if committed == fresh:
        print(f"{name} is up to date with benchmarks/results/.")
        return 0
    diff = difflib.unified_diff(committed.splitlines(), fresh.splitlines(), "committed", "fresh render", lineterm="")
    print(f"{name} differs from a fresh render of benchmarks/results/: run `{regenerate}` and commit the page.",
          file=sys.stderr)
    print("\n".join(list(diff)[:40]), file=sys.stderr)
    return 1


def write_or_check(page: Path, fresh: str, regenerate: str, only_check: bool) -> int:
    """Write ``fresh`` to ``page`` (0), or with ``only_check`` compare them (:func:`check`)."""
    if only_check:
        return check(page, fresh, regenerate)
    page.write_text(fresh)
    print(f"wrote {page}")
    return 0
