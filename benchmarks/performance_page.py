"""The book's performance page (``book/performance.md``), rendered from ``benchmarks/results/*.json``.

    python benchmarks/performance_page.py           # write book/performance.md
    python benchmarks/performance_page.py --check   # fail if the committed page differs from a fresh render

Every figure on the page is read from the results files; none is typed here. Each benchmark is looked up
in the files whose names start with its script's prefix (``attacks-``, ``certify-``, ``training-``,
``exact-``, ``smoothing-``, ``ablation-``), so a new file from another machine (``attacks-h100.json``, say)
adds its rows and its hardware line on the next render. Where several files record one benchmark on the same machine and
device, the latest run is shown. Standard library only: no torch, no advlib.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pages  # noqa: E402  (what both generated pages share)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "book" / "performance.md"
REGENERATE = "python benchmarks/performance_page.py"
CLOCKS = {"cpu": "this process's CPU time", "wall": "wall-clock time"}
RUN_KEYS = ("hardware", "clock", "repeats", "command")
SCRIPTS = ("attacks", "certify", "exact", "training", "smoothing", "ablation")
GPU_SCRIPTS = tuple(script for script in SCRIPTS if script != "exact")  # exact.py: HiGHS, on the CPU only
DASH = "–"


class Run(NamedTuple):
    """One benchmark's entry in one results file, with the run that recorded it."""

    file: str
    entry: dict
    info: dict  # hardware, clock, repeats, command


class Benchmark(NamedTuple):
    """A section of the page: where its entries live and how its table reads them."""

    title: str
    about: str
    script: str  # the results files' prefix and the script's name
    path: tuple[str, ...]  # the keys leading to the entry inside a results file
    headers: list[str]
    rows: Callable[[dict], list[list[str]]]
    at_most: bool = True  # goals on times are upper bounds; on throughputs, lower bounds


# --- numbers ------------------------------------------------------------------------------------------

def milliseconds(value: float | None) -> str:
    """A time in milliseconds, to one decimal."""
    return DASH if value is None else f"{value:.1f}"


def seconds_as_ms(value: float | None) -> str:
    """A time recorded in seconds, in milliseconds to one decimal."""
    return DASH if value is None else milliseconds(1000 * value)


def significant(value: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (never fewer than its integer part), without an exponent."""
    if value is None:
        return DASH
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits - 1}e}")  # rounded first, so that 9.996 counts as 10.0
    places = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{value:.{places}f}"


def ratio(value: float | None) -> str:
    """A ratio, to two decimals."""
    return DASH if value is None else f"{value:.2f}"


def percent(value: float | None) -> str:
    """A rate in [0, 1] as a percentage, to one decimal."""
    return DASH if value is None else f"{100 * value:.1f}%"


def plain(value) -> str:
    """A setting as recorded (numbers in their shortest form)."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- the results files ----------------------------------------------------------------------------------

def load(path: Path) -> dict:
    """A results file's JSON, or an error naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def find_entry(data: dict, path: tuple[str, ...]) -> dict | None:
    """The dict at ``path`` inside a results file, or None when the file does not record it."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else None


def run_info(data: dict, entry: dict) -> dict:
    """The run that recorded ``entry``: its own ``run`` block where it has one, else the file's."""
    own = entry.get("run")
    return own if isinstance(own, dict) else {key: data.get(key) for key in RUN_KEYS}


def machine(info: dict) -> tuple[str, str, str]:
    """What tells two machines apart: host, device and device name."""
    hardware = info.get("hardware") or {}
    return (str(hardware.get("host")), str(hardware.get("device")), str(hardware.get("device_name")))


def measured_at(run: Run) -> str:
    """The date of a run (ISO 8601, so that strings sort by time)."""
    return str((run.info.get("hardware") or {}).get("date") or "")


def runs_of(results_dir: Path, benchmark: Benchmark) -> list[Run]:
    """The latest run of ``benchmark`` per machine, over the files with the benchmark's prefix."""
    latest: dict[tuple[str, str, str], Run] = {}
    for path in sorted(results_dir.glob(f"{benchmark.script}-*.json")):
        data = load(path)
        entry = find_entry(data, benchmark.path)
        if entry is None:
            continue
        run = Run(path.name, entry, run_info(data, entry))
        key = machine(run.info)
        if key not in latest or measured_at(run) > measured_at(latest[key]):
            latest[key] = run
    return sorted(latest.values(), key=lambda run: (is_cuda(run.info), machine(run.info), measured_at(run)))


def is_cuda(info: dict) -> bool:
    """Whether a run was measured on a CUDA device."""
    return str((info.get("hardware") or {}).get("device", "")).startswith("cuda")


def hardware_records(data) -> Iterable[dict]:
    """Every ``hardware`` dict inside a results file, at any depth."""
    if isinstance(data, dict):
        if isinstance(data.get("hardware"), dict):
            yield data["hardware"]
        for value in data.values():
            yield from hardware_records(value)
    elif isinstance(data, list):
        for value in data:
            yield from hardware_records(value)


def cuda_devices(results_dir: Path) -> list[str]:
    """The names of the CUDA devices the page's own results files (those of ``SCRIPTS``, not the chapter
    reproductions beside them) were measured on."""
    names = {str(hardware.get("device_name") or hardware.get("device"))
             for script in SCRIPTS for path in sorted(results_dir.glob(f"{script}-*.json"))
             for hardware in hardware_records(load(path)) if str(hardware.get("device", "")).startswith("cuda")}
    return sorted(names)


# --- Markdown -----------------------------------------------------------------------------------------

def label(info: dict) -> str:
    """A machine's short name for the tables' first column: device name (device, host)."""
    host, device, name = machine(info)
    return f"{name} ({device}, {host})"


def reproduce(command: str | None, script: str) -> str:
    """The recorded command, runnable from the repository root; or a note that the file records none."""
    if not command:
        return f"the file records no command (script `benchmarks/{script}.py`)"
    first = command.split()[0]
    runnable = f"python benchmarks/{command}" if first.endswith(".py") and "/" not in first else f"python {command}"
    return f"`{runnable}`"


def threads(count) -> str:
    """Torch's thread count, in words."""
    return f"{plain(count)} torch thread" + ("" if count == 1 else "s")


def clock(name) -> str:
    """The clock a run timed with, in words."""
    return f"{CLOCKS.get(name, plain(name))} (`--clock {plain(name)}`)"


def run_line(run: Run, script: str) -> str:
    """One bullet naming a run's hardware, clock, repeats, date, peer library and reproducing command."""
    hardware = run.info.get("hardware") or {}
    peer = f"; peer: {run.entry['peer']}" if run.entry.get("peer") else ""
    load_average = hardware.get("load_average_1min")
    load_text = "" if load_average is None else f", 1-minute load average {significant(load_average)}"
    return (f"- **{label(run.info)}**: {plain(hardware.get('processor'))}, {plain(hardware.get('cpu_count'))} cores, "
            f"{threads(hardware.get('torch_threads'))}, device {plain(hardware.get('device'))} "
            f"({plain(hardware.get('device_name'))}), torch {plain(hardware.get('torch'))}; "
            f"clock: {clock(run.info.get('clock'))}; {plain(run.info.get('repeats'))} "
            f"{'run' if run.info.get('repeats') == 1 else 'repeats'}; "
            f"measured {plain(hardware.get('date'))}{load_text}{peer}; file `{run.file}`; "
            f"reproduce: {reproduce(run.info.get('command'), script)}.")


def goal_text(goal: dict, at_most: bool) -> str:
    """A recorded goal in words: ``ours/limit ≤ 1.05``; textual goals as recorded."""
    parts = []
    for key, value in goal.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key.replace('_over_', '/')} {'≤' if at_most else '≥'} {plain(value)}")
        else:
            parts.append(f"{key.replace('_', ' ')}: {plain(value)}")
    return "; ".join(parts)


def goals(runs: list[Run], at_most: bool) -> str:
    """The goal line of a section (each distinct recorded goal once), or nothing when none is recorded."""
    texts = []
    for run in runs:
        text = goal_text(run.entry["goal"], at_most) if isinstance(run.entry.get("goal"), dict) else ""
        if text and text not in texts:
            texts.append(text)
    return f"Goal (as recorded): {' | '.join(texts)}." if texts else ""


def render_section(results_dir: Path, benchmark: Benchmark) -> str:
    """A benchmark's section: heading, what it measures, its recorded goal, one table, one line per run."""
    runs = runs_of(results_dir, benchmark)
    parts = [f"## {benchmark.title}", benchmark.about]
    if not runs:
        return "\n\n".join([*parts, "No results file records this benchmark yet."])
    rows = [[label(run.info), *row] for run in runs for row in benchmark.rows(run.entry)]
    parts += [goals(runs, benchmark.at_most), pages.table(["hardware", *benchmark.headers], rows),
              "\n".join(run_line(run, benchmark.script) for run in runs)]
    return "\n\n".join(part for part in parts if part)


# --- one table per benchmark ------------------------------------------------------------------------------

def pgd_rows(entry: dict) -> list[list[str]]:
    """PGD: ms per step of the limit, ours (best and last iterate) and torchattacks, and their ratios."""
    return [[plain(r.get("model")), f"eps {plain(r.get('eps'))}, alpha {plain(r.get('alpha'))}, "
             f"{plain(r.get('steps'))} steps", plain(r.get("batch")),
             milliseconds(r.get("limit_ms")), milliseconds(r.get("ours_ms_per_step")),
             milliseconds(r.get("ours_last_ms_per_step")), milliseconds(r.get("torchattacks_ms_per_step")),
             ratio(r.get("ours_over_limit")), ratio(r.get("ours_last_over_limit")),
             ratio(r.get("ours_over_torchattacks")), ratio(r.get("ours_last_over_torchattacks")),
             percent(r.get("contract_share_of_steps"))]
            for r in entry.get("rows", [])]


def cw_settings(r: dict) -> str:
    """CW-L2's recorded settings in one cell."""
    return (f"{plain(r.get('binary_steps'))} binary steps × {plain(r.get('steps'))} steps, lr {plain(r.get('lr'))}, "
            f"first c {plain(r.get('c'))}, kappa {plain(r.get('kappa'))}, abort early {plain(r.get('abort_early'))}")


def pair(r: dict, key: str, show: Callable[[float | None], str]) -> list[str]:
    """The ours and peer values of a ``{"ours": ..., "<peer>": ...}`` field, formatted."""
    values = r.get(key) or {}
    peer = next((name for name in values if name != "ours"), None)
    return [show(values.get("ours")), show(values.get(peer) if peer else None)]


def cw_rows(entry: dict) -> list[list[str]]:
    """CW-L2: one row per measure (time, success rates, median L2), ours beside Foolbox."""
    rows = []
    for r in entry.get("rows", []):
        case = [f"{plain(r.get('model'))}, {plain(r.get('batch'))} images ({plain(r.get('correct'))} classified "
                f"right)", cw_settings(r)]
        measures = [["time (s)", significant(r.get("ours_s")), significant(r.get("foolbox_s")),
                     ratio(r.get("ours_over_foolbox"))],
                    ["success rate", *pair(r, "success_rate", percent), ""]]
        if "success_rate_without_fallbacks" in r:
            measures.append([f"success rate, not counting Foolbox's {plain(r.get('foolbox_black_fallbacks'))} "
                             "all-black images", *pair(r, "success_rate_without_fallbacks", percent), ""])
        measures.append(["median L2 of the successes", *pair(r, "median_l2", significant), ""])
        if "median_l2_without_fallbacks" in r:
            measures.append(["median L2, not counting the all-black images",
                             *pair(r, "median_l2_without_fallbacks", significant), ""])
        measures.append([f"median L2 where both succeed ({plain(r.get('both_succeed'))} images)",
                         *pair(r, "median_l2_where_both_succeed", significant), ""])
        rows += [(case if index == 0 else ["", ""]) + measure for index, measure in enumerate(measures)]
    return rows


def fooled(r: dict, key: str) -> str:
    """Images an attack fooled, with its success rate."""
    return f"{plain((r.get('fooled') or {}).get(key))} ({percent((r.get('success_rate') or {}).get(key))})"


def one_pixel_rows(entry: dict) -> list[list[str]]:
    """One pixel: seconds of a whole attack, ours and torchattacks', the ratio, and the images each fooled."""
    return [[plain(r.get("model")), f"{plain(r.get('batch'))} ({plain(r.get('correct'))} right)",
             plain(r.get("pixels")), plain(r.get("popsize")), plain(r.get("iters")),
             significant(r.get("ours_s")), significant(r.get("torchattacks_s")),
             ratio(r.get("ours_over_torchattacks")), fooled(r, "ours"), fooled(r, "torchattacks")]
            for r in entry.get("rows", [])]


def apgd_rows(entry: dict) -> list[list[str]]:
    """APGD: ms per step of the limit, ours and torchattacks', the ratios, and each one's robust accuracy."""
    return [[plain(r.get("model")), f"eps {plain(r.get('eps'))}, {plain(r.get('steps'))} steps",
             plain(r.get("batch")), milliseconds(r.get("limit_ms")), milliseconds(r.get("ours_ms_per_step")),
             milliseconds(r.get("torchattacks_ms_per_step")), ratio(r.get("ours_over_limit")),
             ratio(r.get("ours_over_torchattacks")), percent((r.get("robust_accuracy") or {}).get("ours")),
             percent((r.get("robust_accuracy") or {}).get("torchattacks"))]
            for r in entry.get("rows", [])]


def autoattack_rows(entry: dict) -> list[list[str]]:
    """AutoAttack: seconds of a whole evaluation, ours and torchattacks', the ratio, and the robust accuracy
    each reports."""
    return [[plain(r.get("model")), f"eps {plain(r.get('eps'))}, {plain(r.get('steps'))} steps",
             plain(r.get("images")), significant(r.get("ours_s")), significant(r.get("torchattacks_s")),
             ratio(r.get("ours_over_torchattacks")), percent(r.get("clean_accuracy")),
             percent((r.get("robust_accuracy") or {}).get("ours")),
             percent((r.get("robust_accuracy") or {}).get("torchattacks"))]
            for r in entry.get("rows", [])]


def autoattack_attack_rows(entry: dict) -> list[list[str]]:
    """AutoAttack attack by attack: seconds of each, ours and torchattacks', the ratio, and for Square the time
    of its queries made as full forward passes alone."""
    rows = []
    for r in entry.get("rows", []):
        ours, theirs = r.get("ours_seconds_per_attack") or {}, r.get("torchattacks_seconds_per_attack") or {}
        ratios = r.get("ours_over_torchattacks_per_attack") or {}
        for name in theirs:
            floor = r.get("square_forward_limit_s") if name == "Square" else None
            rows.append([plain(r.get("model")), name, significant(ours.get(name)), significant(theirs.get(name)),
                         ratio(ratios.get(name)), significant(floor)])
    return rows


def box(value) -> str:
    """The input box of a dual bound: ``[lo, hi]``, or none (the plain eps-ball)."""
    return "none" if value is None else "[" + ", ".join(plain(bound) for bound in value) + "]"


def dual_rows(entry: dict) -> list[list[str]]:
    """Dual bounds: seconds of ours and convex_adversarial's, without and with the gradient, and the ratios."""
    rows = []
    for r in entry.get("rows", []):
        s = r.get("seconds") or {}
        difference = r.get("max_abs_difference")
        rows.append([plain(r.get("model")), plain(r.get("weights")), plain(r.get("batch")), plain(r.get("eps")),
                     box(r.get("box")), significant(s.get("ours")), significant(s.get("theirs")),
                     ratio(r.get("ours_over_theirs")), significant(s.get("ours_grad")),
                     significant(s.get("theirs_grad")), ratio(r.get("ours_over_theirs_grad")),
                     DASH if difference is None else f"{difference:.1e}"])
    return rows


def certified_training_rows(entry: dict) -> list[list[str]]:
    """Certified training: ms per training step of each method and its ratio to a standard step."""
    per_step, over = entry.get("seconds_per_step") or {}, entry.get("over_standard") or {}
    case = [plain(entry.get("model")), plain(entry.get("weights")), plain(entry.get("batch")), plain(entry.get("eps"))]
    return [[*case, method, seconds_as_ms(value), ratio(over.get(method))] for method, value in per_step.items()]


def exact_rows(entry: dict) -> list[list[str]]:
    """Exact verification: per variant, the solver's seconds and binaries per image, the images finished, and
    its time over ours."""
    rows = []
    for r in entry.get("rows", []):
        rows.append([plain(entry.get("model")), plain(entry.get("images")), plain(r.get("eps")),
                     plain(entry.get("time_limit")), plain(r.get("variant")), significant(r.get("seconds_per_image")),
                     plain(r.get("binaries_per_image")), f"{r.get('finished')}/{entry.get('images')}",
                     ratio(r.get("over_ours")) if "over_ours" in r else DASH])
    return rows


TRAINING_METHODS = {"madry": "Madry (PGD)", "fast": "fast (FGSM)"}


def training_rows(entry: dict) -> list[list[str]]:
    """Adversarial training: seconds per epoch against a standard epoch (and its limit) and the hand-written floor."""
    rows = []
    for r in entry.get("rows", []):
        median = r.get("median") or {}
        for method, name in TRAINING_METHODS.items():
            rows.append([plain(r.get("model")), plain(r.get("images")), name, significant(median.get(method)),
                         significant(median.get("standard")), ratio(r.get(f"{method}_over_standard")),
                         plain(r.get(f"{method}_limit")), significant(median.get(f"{method}_floor")),
                         ratio(r.get(f"{method}_over_floor"))])
    return rows


def rate(value: float | None) -> str:
    """A throughput in samples per second, to the unit."""
    return DASH if value is None else f"{value:.0f}"


def smoothing_rows(entry: dict) -> list[list[str]]:
    """Randomized smoothing: noisy samples per second of the base model, certify and counts, and the ratios."""
    rows = []
    for r in entry.get("rows", []):
        case = [plain(r.get("model")), plain(r.get("n"))]
        if "skipped" in r:
            rows.append([*case, f"skipped: {plain(r['skipped'])}", *[""] * 8])
            continue
        rates = r.get("samples_per_s") or {}
        rows.append([*case, plain(r.get("n0")), plain(r.get("batch")), plain(r.get("sigma")), rate(rates.get("raw")),
                     rate(rates.get("certify")), rate(rates.get("counts")), ratio(r.get("certify_over_raw")),
                     ratio(r.get("counts_over_raw")), significant(r.get("certify_s"))])
    return rows


def ablation_rows(entry: dict) -> list[list[str]]:
    """De-randomized smoothing: images per second of the base model over the ablated batches, certify and counts,
    and the ratios."""
    rates = entry.get("images_per_s") or {}
    return [[plain(entry.get("model")), f"{plain(entry.get('kind'))}, width {plain(entry.get('size'))}",
             plain(entry.get("threshold")), plain(entry.get("images")), plain(entry.get("positions")),
             plain(entry.get("batch")), rate(rates.get("raw")), rate(rates.get("certify")), rate(rates.get("counts")),
             ratio(entry.get("certify_over_raw")), ratio(entry.get("counts_over_raw")),
             ratio(entry.get("certify_over_raw_paired"))]]


BENCHMARKS = (
    Benchmark(
        "PGD: time per step",
        "Time per step of `advlib.attacks.pgd` (L∞, random start; its whole run divided by its steps, so the random "
        "start, the best-iterate bookkeeping and the final evaluation are charged to the steps), of the same with "
        "`keep=\"last\"` (the last iterate, as torchattacks returns it), and of torchattacks' `PGD`, against the "
        "limit: one forward and backward pass of the model to its input at a point PGD visits, as advlib makes it "
        "(on the CPU a strided first convolution's input gradient comes from a forward convolution, "
        "`advlib.attacks.conv_gradient`; autograd's own pass is recorded as `limit_autograd_ms`). The last column is "
        "the cost of the contract every attack goes through (`advlib.attacks.core`: argument checks, eval mode, "
        "device moves, the final clamp), measured on an attack whose algorithm returns at once, as a share of the "
        "limit of the call's steps.",
        "attacks", ("benchmarks", "pgd"),
        ["model", "budget", "batch", "limit (ms)", "ours (ms/step)", "ours, last iterate (ms/step)",
         "torchattacks (ms/step)", "ours/limit", "last/limit", "ours/torchattacks", "last/torchattacks",
         "contract"],
        pgd_rows),
    Benchmark(
        "Carlini-Wagner L2 against Foolbox",
        "A whole CW-L2 attack with its binary search, ours (`advlib.attacks.cw_l2`) against Foolbox's "
        "`L2CarliniWagnerAttack` at the same settings, on the same trained model and images: the median time, "
        "the success rate among the images classified right and the median L2 of the successful perturbations. "
        "Foolbox returns an all-black image where it found nothing, which the model may misclassify; those are "
        "also counted apart. Success and L2 come from one run of each attack.",
        "attacks", ("benchmarks", "cw"),
        ["case", "settings", "measure", "ours", "Foolbox", "ours/Foolbox"],
        cw_rows),
    Benchmark(
        "One pixel against torchattacks",
        "The one pixel attack (differential evolution), ours against torchattacks' `OnePixel` with equal "
        "populations and generations, on the same trained model and images: the median time of a whole attack "
        "and the images each fools among those classified right.",
        "attacks", ("benchmarks", "one_pixel"),
        ["model", "images", "pixels", "population", "generations", "ours (s)", "torchattacks (s)",
         "ours/torchattacks", "fooled by ours", "fooled by torchattacks"],
        one_pixel_rows),
    Benchmark(
        "APGD against its limit and torchattacks",
        "Auto-PGD on the cross-entropy (`advlib.attacks.apgd`, 100 steps), ms per step against one forward and "
        "backward pass at a visited point as advlib makes it (the limit; autograd's own pass is recorded as "
        "`limit_autograd_ms`) and against torchattacks' `APGD` at the same settings, on chapter 10's "
        "adversarially trained network, with the robust accuracy each leaves. APGD stops costing passes on an "
        "image once it is broken, so it can run below the limit.",
        "attacks", ("benchmarks", "apgd"),
        ["model", "budget", "batch", "limit (ms)", "ours (ms/step)", "torchattacks (ms/step)", "ours/limit",
         "ours/torchattacks", "robust accuracy, ours", "robust accuracy, torchattacks"],
        apgd_rows),
    Benchmark(
        "AutoAttack against torchattacks",
        "A whole standard AutoAttack evaluation (APGD-CE, APGD-T, FAB-T, Square), ours "
        "(`advlib.evaluate.autoattack`) against torchattacks' `AutoAttack` with its iterations set to the "
        "paper's 100, on chapter 10's adversarially trained network and the same test images: the median time "
        "of the recorded runs of each, taken in turn, and the robust accuracy each reports (ours must not be "
        "above theirs).",
        "attacks", ("benchmarks", "autoattack"),
        ["model", "budget", "images", "ours (s)", "torchattacks (s)", "ours/torchattacks", "clean",
         "robust accuracy, ours", "robust accuracy, torchattacks"],
        autoattack_rows),
    Benchmark(
        "AutoAttack, attack by attack",
        "The same runs split by attack: the wall time of each attack inside the whole evaluation, ours and "
        "torchattacks' (medians; the totals above are on the run's clock). Each attack runs on the images "
        "every earlier one left standing. The last column is the wall time of full forward passes of the "
        "model alone, as many as our Square made (5,000 queries per image at the paper's settings), over the "
        "images it attacked: what an implementation that evaluates every query by a full pass spends in the "
        "model. Ours goes below it on a CPU: a query recomputes only the windows of the feature maps that its "
        "proposal reaches and updates the first dense layer by the window's columns "
        "(`advlib.attacks.window_forward`); on a GPU it makes full passes.",
        "attacks", ("benchmarks", "autoattack"),
        ["model", "attack", "ours (s)", "torchattacks (s)", "ours/torchattacks",
         "Square's queries as full passes (s)"],
        autoattack_attack_rows),
    Benchmark(
        "Dual bounds against convex_adversarial",
        "Wong and Kolter's exact dual bounds on the margins, ours (`advlib.certify.dual_bounds`, and "
        "`advlib.certify.robust_loss` with its backward pass) against the authors' `convex_adversarial` "
        "(`DualNetwork`, `robust_loss`) on the same net and images, with and without the input box; the last "
        "column is the largest difference between the two bounds.",
        "certify", ("benchmarks", "dual"),
        ["model", "weights", "batch", "eps", "input box", "ours (s)", "convex_adversarial (s)", "ours/theirs",
         "ours with gradient (s)", "theirs with gradient (s)", "ours/theirs with gradient", "max difference"],
        dual_rows),
    Benchmark(
        "Certified training steps",
        "One certified training step (bounds, loss, backward pass, optimizer step) per method, against a "
        "standard training step on the same batches; `dual-projN` is the dual with N random projections.",
        "certify", ("benchmarks", "training"),
        ["model", "weights", "batch", "eps", "method", "ms per step", "over a standard step"],
        certified_training_rows),
    Benchmark(
        "Exact verification against the program without its savings",
        "The exact smallest margin of chapter 15's certified MLP (`advlib.certify.exact_margins`, Tjeng et al.'s "
        "mixed-integer program solved by HiGHS) with big-M constants from the tighter of interval and "
        "dual-network bounds and no binary for stable ReLUs (ours), against big-M from interval arithmetic "
        "alone, and against a binary for every ReLU as well; the solver's seconds per image (median). A variant "
        "whose programs stopped at the time limit (fewer images finished) is slower than its ratio says.",
        "exact", ("benchmarks", "exact"),
        ["model", "images", "eps", "time limit (s)", "variant", "s per image", "binaries per image", "finished",
         "time over ours"],
        exact_rows, at_most=False),
    Benchmark(
        "Adversarial training epochs",
        "One epoch of Madry et al.'s adversarial training and of fast adversarial training against a standard "
        "epoch on the same images (the limit counts a PGD step as one standard training step), and against "
        "the same algorithm written out by hand without advlib (the floor).",
        "training", ("training",),
        ["model", "images", "method", "epoch (s)", "standard epoch (s)", "over standard", "limit (standard epochs)",
         "floor (s)", "over floor"],
        training_rows),
    Benchmark(
        "Randomized smoothing throughput",
        "Noisy samples per second through `Smooth.certify` and through its sampling loop `Smooth.counts`, "
        "against the base model's own throughput on noisy batches of the same size (raw, the limit); "
        "the last column is certify's time for one image.",
        "smoothing", ("smoothing",),
        ["model", "n", "n0", "batch", "sigma", "raw (samples/s)", "certify (samples/s)", "counts (samples/s)",
         "certify/raw", "counts/raw", "certify (s per image)"],
        smoothing_rows, at_most=False),
    Benchmark(
        "De-randomized (ablation) smoothing throughput",
        "Images per second certified by `AblationSmooth.certify` (Levine and Feizi's column smoothing: every band "
        "position of every image classified, the votes counted, the certified sticker sizes computed) and by its "
        "vote counting `AblationSmooth.counts`, against the base model alone over exactly the same ablated "
        "batches of (image, position) pairs, built beforehand and held in memory (raw, the limit). Certification "
        "makes those batches itself, so the ratios charge it for gathering, masking and encoding the images and "
        "for the votes; the last column is the median of the ratios within each repeat.",
        "ablation", ("ablation",),
        ["model", "bands", "threshold", "images", "positions", "batch (pairs)", "raw (images/s)",
         "certify (images/s)", "counts (images/s)", "certify/raw", "counts/raw", "certify/raw, paired"],
        ablation_rows, at_most=False),
)


# --- the page --------------------------------------------------------------------------------------------

def render_intro() -> str:
    """The title and the opening paragraphs: what is measured and how to read a ratio."""
    return "\n\n".join([
        "# Performance",
        "How fast `advlib` is, measured by the scripts in `benchmarks/` and read from what they recorded "
        "under `benchmarks/results/`. Each section times one part of the library against its limit (the least "
        "work the algorithm must do; for an attack, one forward and backward pass of the model per step) or "
        "against a peer library that implements the same algorithm, on the same model, images and settings. "
        "A ratio is the time of ours divided by the limit's or by the peer library's: below 1 means ours is "
        "faster. For randomized and de-randomized smoothing the ratio is of throughputs (samples or images per "
        "second), so there above 1 means ours is faster. All times and throughputs are medians over the repeats "
        "recorded in the file; the files also keep every repeat, the ratios of the minimums and, where measured, "
        "the medians of the ratios within each repeat.",
        "Every table names the machine of each row, and the line below it gives that machine's processor, "
        "cores, torch threads, device, torch version, clock, repeats and date, and the command that reproduces "
        "it. Where several files record the same benchmark on the same machine and device, the latest run is "
        f"shown. This page is generated: edit the results, not the page, and run `{REGENERATE}`.",
    ])


def render_gpu_note(results_dir: Path) -> str:
    """The closing section: the GPU measurements recorded, or plainly that there are none yet."""
    devices = cuda_devices(results_dir)
    if devices:
        return "## GPU measurements\n\nMeasured on a CUDA device: " + ", ".join(devices) + " (rows above)."
    commands = ", ".join(f"`python benchmarks/{script}.py --device cuda`" for script in GPU_SCRIPTS)
    return ("## GPU measurements\n\nNo GPU measurements are recorded yet: every results file was measured on a "
            f"CPU. On a machine with a CUDA GPU, run {commands}; each writes `benchmarks/results/SCRIPT-<host>.json`, "
            f"and `{REGENERATE}` then adds its rows to the tables above.")


def render(results_dir: str | Path = RESULTS) -> str:
    """The whole page, in MyST Markdown: the introduction, one section per benchmark, the GPU note."""
    results_dir = Path(results_dir)
    sections = [render_intro(), *(render_section(results_dir, benchmark) for benchmark in BENCHMARKS),
                render_gpu_note(results_dir)]
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write ``book/performance.md`` from the results, or with ``--check`` compare it with a fresh render."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed page differs from a fresh render")
    args = parser.parse_args(argv)
    return pages.write_or_check(PAGE, render(RESULTS), REGENERATE, args.check)


if __name__ == "__main__":
    sys.exit(main())
