"""Render ``book/results.md``, the talk's tables beside ours, from what ``reproduce.py`` recorded.

    python benchmarks/results_page.py          # write book/results.md
    python benchmarks/results_page.py --check  # fail if book/results.md is not what the data gives

Every number on the page is read from ``benchmarks/results/reproduce-*.json``: the chapters print ours
beside the paper's (labelled as the paper's), ``reproduce.py`` keeps those outputs, and this script
only lays them out, one section per chapter with the quick (CPU) and full (GPU) profile side by side.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pages  # noqa: E402  (what both generated pages share)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "book" / "results.md"
PROFILES = {"quick": "Quick profile", "full": "Full profile (the papers' settings)"}


def load_runs(results_dir: Path) -> dict[str, list[dict]]:
    """The recorded runs by profile, each file one run (one machine), in file-name order."""
    runs: dict[str, list[dict]] = {profile: [] for profile in PROFILES}
    for path in sorted(results_dir.glob("reproduce-*.json")):
        run = json.loads(path.read_text())
        runs.setdefault(run["profile"], []).append(run | {"file": path.name})
    return runs


def hardware_line(hardware: dict) -> str:
    """The machine in one phrase: device, processor and cores, torch."""
    device = hardware["device_name"] if hardware["device"].startswith("cuda") else "CPU only"
    return (f"{device}; {hardware['processor']}, {hardware['cpu_count']} cores; torch {hardware['torch']}, "
            f"Python {hardware['python']}")


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def outputs_markdown(outputs: list[dict]) -> str:
    """A table cell's recorded outputs: Markdown as it is, printed text in a code block."""
    parts = []
    for output in outputs:
        text = output["text"].rstrip("\n")
        parts.append(text if output["mime"] == "text/markdown" else f"```text\n{text}\n```")
    return "\n\n".join(parts)


def chapter_titles(runs: dict[str, list[dict]]) -> dict[str, str]:
    titles = {}
    for profile_runs in runs.values():
        for run in profile_runs:
            titles.update({stem: record["title"] for stem, record in run["chapters"].items()})
    return dict(sorted(titles.items()))


def times_table(runs: dict[str, list[dict]], titles: dict[str, str]) -> str:
    """Each chapter's run time in each profile, one column per recorded run."""
    columns = [(profile, run) for profile in PROFILES for run in runs.get(profile, [])]
    head = ["chapter", *(f"{profile}: {run['hardware']['device_name']}"
                         + (" (CPU)" if run["hardware"]["device"] == "cpu" else "") for profile, run in columns)]
    rows = [[f"[{title}](../chapters/{stem}.ipynb)",
             *(duration(run["chapters"][stem]["seconds"]) if stem in run["chapters"] else "not run"
               for _, run in columns)] for stem, title in titles.items()]
    return pages.table(head, rows)


def chapter_section(stem: str, title: str, runs: dict[str, list[dict]]) -> str:
    parts = [f"## [{title}](../chapters/{stem}.ipynb)"]
    for profile, heading in PROFILES.items():
        recorded = [run for run in runs.get(profile, []) if stem in run["chapters"]]
        if not recorded:
            parts.append(f"**{heading}.** Not recorded yet: run `python benchmarks/reproduce.py --profile {profile}`"
                         + (" on a GPU." if profile == "full" else "."))
        for run in recorded:
            record = run["chapters"][stem]
            hardware = record["hardware"]
            note = f" Note: {record['note']}." if record.get("note") else ""
            if record.get("code_changed_since"):  # kept, not re-run, after a change that should not move its numbers
                changed = record["code_changed_since"]
                note += (f" The chapter's code has changed since this run (after commit {changed['commit']}: "
                         f"{changed['why']}).")
            parts.append(f"**{heading}**: {hardware_line(hardware)}; run on {hardware['date'][:10]}, "
                         f"{duration(record['seconds'])} (`{run['file']}`).{note}")
            parts.extend(outputs_markdown(table["outputs"]) for table in record["tables"])
    return "\n\n".join(parts)


def render(results_dir: Path = RESULTS) -> str:
    """The whole results page as MyST Markdown."""
    runs = load_runs(results_dir)
    titles = chapter_titles(runs)
    intro = """# Results: the talk's tables, reproduced

Each chapter that shows a table from a paper prints our numbers beside the paper's, labelled as the
paper's. This page collects those tables as `benchmarks/reproduce.py` recorded them: it runs each such
chapter whole, in one profile, under the chapter's own asserts, and keeps the printed tables, the run
time and the machine. Our experiments use Fashion-MNIST where most papers used MNIST or CIFAR-10, so the
numbers are comparable in kind (which attack is stronger, which defense holds), not digit by digit.

- **Quick profile** (the default on a CPU): small subsets, few steps; every claim of the text still holds.
- **Full profile** (the default on a GPU): the papers' settings.

To reproduce: `python benchmarks/reproduce.py --profile quick` (or `--profile full` on a GPU), then
`python benchmarks/results_page.py`. The run resumes where it stopped and re-runs a chapter whose code
changed.

## Run times"""
    missing = [profile for profile in PROFILES if not runs.get(profile)]
    note = "".join(f"\n\nNothing is recorded yet for the {profile} profile: run "
                   f"`python benchmarks/reproduce.py --profile {profile}`{' on a GPU' if profile == 'full' else ''}."
                   for profile in missing)
    build = """Every chapter, as the build of the book you are reading ran it (its profile is the build machine's):

```{nb-exec-table}
```"""
    sections = [chapter_section(stem, title, runs) for stem, title in titles.items()]
    return "\n\n".join([intro, times_table(runs, titles) + note, build, *sections]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed page differs from the data")
    args = parser.parse_args(argv)
    return pages.write_or_check(PAGE, render(), "python benchmarks/results_page.py", args.check)


if __name__ == "__main__":
    sys.exit(main())
