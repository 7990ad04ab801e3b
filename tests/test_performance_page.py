"""The book's performance page is rendered from the recorded benchmark results, not written by hand.

``benchmarks/`` is not a package, so its ``performance_page.py`` is loaded from its path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from repository import benchmark_script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "book" / "performance.md"


performance_page = benchmark_script("performance_page")


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    """A copy of the committed results folder that a test may change."""
    return Path(shutil.copytree(RESULTS, tmp_path / "results"))


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def test_committed_page_is_a_fresh_render_of_the_committed_results():
    assert PAGE.read_text() == performance_page.render(RESULTS), (
        "book/performance.md is out of date: run `python benchmarks/performance_page.py`")


def test_check_passes_on_the_committed_page():
    assert performance_page.main(["--check"]) == 0


def test_a_changed_ratio_in_the_results_changes_the_page(results_copy: Path):
    def slower_pgd(data):
        data["benchmarks"]["pgd"]["rows"][0]["ours_over_limit"] = 7.654

    _edit(results_copy / "attacks-vm.json", slower_pgd)
    page = performance_page.render(results_copy)
    assert page != PAGE.read_text()
    assert "| 7.65 |" in page


def test_a_gpu_results_file_adds_rows_and_names_its_hardware(results_copy: Path):
    def on_a_gpu(data):
        for hardware in (data["hardware"], data["benchmarks"]["pgd"]["run"]["hardware"]):
            hardware.update(host="h100", device="cuda", device_name="NVIDIA H100 80GB HBM3")

    gpu_file = results_copy / "attacks-h100.json"
    shutil.copy(results_copy / "attacks-vm.json", gpu_file)
    _edit(gpu_file, on_a_gpu)
    page = performance_page.render(results_copy)
    assert "| NVIDIA H100 80GB HBM3 (cuda, h100) | small-cnn |" in page
    assert "| AMD EPYC (cpu, vm) | small-cnn |" in page
    assert "No GPU measurements are recorded yet" not in page
    for path in results_copy.glob("*.json"):  # without any file measured on a GPU, the page says so
        if '"device": "cuda"' in path.read_text():
            path.unlink()
    assert "No GPU measurements are recorded yet" in performance_page.render(results_copy)
