"""Speed of advlib's attacks against their limit and against peer libraries (a script, not a test).

    python benchmarks/attacks.py [--device cpu|cuda] [--only pgd cw one_pixel apgd autoattack] [--repeats 5]
                                 [--out benchmarks/results/attacks-<host>.json]

PGD (Madry et al. 2017): same model, same 256 Fashion-MNIST test images, same budget (Linf, eps 0.1,
alpha 0.01, 20 steps, random start). Per model, the median over repeats of

- the limit: one forward and backward pass of the model with respect to its input (the cross-entropy
  summed over the batch), which every PGD step must do, at a point PGD visits (the images plus uniform
  noise in the eps-ball, clipped to [0,1]). On a CPU a pass costs more there than at the clean images
  (5-9% for the small CNN, measured; max pooling and ReLU branch on the values, and noisy images
  likely make those branches unpredictable), so the clean-image pass (``limit_clean``) is recorded
  too but is not the limit. The pass is made as advlib's attacks make it: on the CPU a strided
  convolution's input gradient comes from one forward convolution (``advlib.attacks.conv_gradient``);
  the same pass through autograd alone is recorded too (``limit_autograd``);
- ours: ``advlib.attacks.pgd`` total time / steps (so its random start, best-iterate bookkeeping and
  final evaluation pass are charged to the steps);
- ours with ``keep="last"``: the last iterate, as torchattacks returns it (no best-iterate bookkeeping and
  no final evaluation pass), the like-for-like comparison with torchattacks;
- torchattacks: ``torchattacks.PGD(model, eps, alpha, steps, random_start=True)`` total time / steps;
- the contract's cost (:mod:`advlib.attacks.core`: argument checks, eval-mode switch, device moves, clamp):
  an attack whose algorithm returns at once, through the same contract, as a share of the limit of the
  call's steps (goal <= 2%); and ``keep="last"`` through ``pgd`` against its algorithm alone
  (``pgd.__wrapped__``), a ratio of two noisy timings;

and the ratios ours/limit (goal <= 1.05) and ours/torchattacks (goal <= 1.0). All are timed in
turn within each repeat (in a rotating order), so a change in the machine's load hits all of them
alike; recorded beside the ratios of medians: the ratios of minimums, and the medians of the ratios
within each repeat (paired, the steadiest under a varying load).

Clocks: ``--clock wall`` (the default; the device is synchronised around each timing) measures what a
user waits. On a shared CPU whose other tenants keep it busy, wall times mostly measure the others;
there ``--threads 1 --clock cpu`` measures this process's CPU time instead (with one thread, every
operation runs on it and no thread spins waiting for a busy core), which the other tenants barely move.

CW-L2 (Carlini and Wagner 2017) with its binary search (``--only cw``): ours against Foolbox's
``L2CarliniWagnerAttack`` at the same settings (5 binary-search steps of 100 Adam iterations, step 1e-2,
first constant 1e-3, confidence 0, early abort) on the same model (FC100-100-10 trained 2 epochs on
10,000 images) and images: the median time of a whole attack, the ratio ours/Foolbox (goal <= 1.0), the
success rates, and the median L2 of the successful perturbations (goal: ours not larger), also over the
examples both attacks break.

One pixel (Su, Vargas and Sakurai 2019) (``--only one_pixel``): ours against torchattacks' ``OnePixel``
(SciPy's differential evolution, one image at a time) with equal populations (144 members) and
generations (40), for 1 and 3 pixels, on the CW section's trained FC100-100-10 and the first 50 test
images (fewer with a smaller ``--batch``): the median time of a whole attack, the ratio ours/torchattacks
(goal <= 0.5) and the images each fools among those classified right (goal: ours not fewer).

APGD (Croce and Hein 2020) (``--only apgd``): time per step of ``advlib.attacks.apgd`` (cross-entropy, 100
steps) against the forward+backward limit (goal <= 1.05) and torchattacks' ``APGD`` (goal <= 1.0), on
chapter 10's adversarially trained network (the zoo's ``wong-kolter-madry``) and ``--batch`` test images at
Linf eps 0.1, with both attacks' robust accuracy.

AutoAttack (``--only autoattack``): a whole standard evaluation, ours (``advlib.evaluate.autoattack``) against
torchattacks' ``AutoAttack`` set to the paper's 100 iterations, on the same network and the first 500 test
images at Linf eps 0.1: the time of each (goal: ours at most half of theirs) and the robust accuracy each
reports (goal: ours not above theirs), with ours after each of its attacks. Each attack's wall time, ours
and theirs, splits the whole (wall time, as advlib's report measures it, while the totals are on the run's
clock); beside Square, the wall time of full forward passes alone, as many as our Square made, over the
images it attacked: what an implementation evaluating every query by a full pass spends in the model (ours,
on a CPU, recomputes only the windows of the feature maps a proposal reaches and updates the first dense
layer by the window's columns, ``advlib.attacks.window_forward``).

Each benchmark is a function in :data:`BENCHMARKS` taking the run's settings and returning
``{"rows": [...], ...}``.
Results go to a JSON file that names the hardware, torch's version, the device and the date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from advlib import data, models
from advlib.attacks import core, pgd
from advlib.attacks.conv_gradient import conv_input_gradients

RESULTS = Path(__file__).resolve().parent / "results"


# --- helpers ----------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = {"now": time.perf_counter}  # set by main()


def timed(fn: Callable[[], object], device: torch.device, now: Callable[[], float] | None = None) -> float:
    """Seconds ``fn()`` takes on the chosen clock (or on ``now``), the device synchronised before and after."""
    now = now or CLOCK["now"]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def timed_in_turn(runs: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``runs`` over ``repeats`` rounds, all timed in turn within a round and the order
    rotated by one each round, so a drift in the machine's load hits every run alike."""
    times: dict[str, list[float]] = {key: [] for key in runs}
    order = list(runs)
    for r in range(repeats):
        for key in order[r % len(order):] + order[:r % len(order)]:
            times[key].append(timed(runs[key], device))
    return times


def test_images(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` Fashion-MNIST test images and labels, on ``device``."""
    x, y = data.load("fashion-mnist", "test")
    return x[:n].contiguous().to(device), y[:n].to(device)


def seeded_model(build: Callable[[], torch.nn.Module], device: torch.device) -> torch.nn.Module:
    """A freshly initialised (seeded) model in eval mode; timing needs no trained weights."""
    torch.manual_seed(0)
    return build().to(device).eval()


def hardware(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "processor": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --- PGD ----------------------------------------------------------------------------------------------

PGD_MODELS = {"small-cnn": models.small_cnn, "wong-kolter": models.wong_kolter_cnn}
PGD_BUDGET = {"eps": 0.1, "alpha": 0.01, "steps": 20}


# --- what every benchmark script's command line shares ------------------------------------------------------

def add_run_arguments(parser: argparse.ArgumentParser, script: str) -> None:
    """``--device``, ``--threads``, ``--clock`` and ``--out`` (default ``results/SCRIPT-<host>.json``)."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (CPU device, one thread only)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file for the results (default: benchmarks/results/{script}-<host>.json)")


def start_run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
              **positive: int) -> tuple[torch.device, dict]:
    """Check the shared arguments (and that every keyword of ``positive`` is >= 1), set torch's threads and
    the clock, turn progress bars off; return the device and the run's description (hardware, clock,
    command) that every results file records."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA GPU")
    for name, value in positive.items():
        if value < 1:
            parser.error(f"--{name} must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (args.device != "cpu" or torch.get_num_threads() != 1):
        parser.error("--clock cpu measures CPU time: use it with --device cpu --threads 1")
    CLOCK["now"] = CLOCKS[args.clock]
    device = torch.device(args.device)
    os.environ.setdefault("ADVLIB_PROGRESS", "0")
    return device, {"hardware": hardware(device), "clock": args.clock,
                    "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])}


def results_file(args: argparse.Namespace, script: str) -> Path:
    """``--out``, or ``results/SCRIPT-<host>.json``."""
    return args.out or RESULTS / f"{script}-{socket.gethostname()}.json"


def write_results(results: dict, out: Path) -> None:
    """Write ``results`` as JSON to ``out`` atomically (a temporary file renamed over it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)
    print(f"results written to {out}")


def gradient_passes(model: torch.nn.Module, images: torch.Tensor, y: torch.Tensor, steps: int, *,
                    library: bool = True) -> None:
    """``steps`` forward and backward passes of ``model`` to its input at ``images`` (the cross-entropy summed
    over the batch): the limit of a gradient attack's steps. ``library``: made as advlib's attacks make them
    (``advlib.attacks.conv_gradient``); otherwise by autograd alone."""
    with conv_input_gradients(model) if library else contextlib.nullcontext():
        for _ in range(steps):
            x_var = images.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x_var), y, reduction="sum"), x_var)


def bench_pgd(device: torch.device, repeats: int, batch: int) -> dict:
    """Time per Linf PGD step: ours against one forward+backward (the limit) and against torchattacks."""
    import torchattacks

    x, y = test_images(batch, device)
    rows = [{"model": name, "batch": batch, **PGD_BUDGET,
             **time_pgd(seeded_model(build, device), x, y, device, repeats, torchattacks)}
            for name, build in PGD_MODELS.items()]
    return {"goal": {"ours_over_limit": 1.05, "ours_over_torchattacks": 1.0, "contract_share_of_steps": 0.02},
            "peer": f"torchattacks {torchattacks.__version__}", "rows": rows}


def time_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int,
             torchattacks) -> dict:
    """Medians (and minimums) over ``repeats`` of the limit's and both PGDs' time per step on one model."""
    eps, alpha, steps = PGD_BUDGET["eps"], PGD_BUDGET["alpha"], PGD_BUDGET["steps"]
    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(x.shape, generator=generator).mul_(2 * eps).sub_(eps).to(device)
    x_visited = (x + noise).clamp_(0.0, 1.0)  # where a PGD step computes its gradient

    def passes(images):  # as many passes as a PGD run makes, so the timings are of similar length
        gradient_passes(model, images, y, steps)

    def autograd_passes(images):  # the same passes as autograd alone makes them
        gradient_passes(model, images, y, steps, library=False)

    def algorithm_only():  # pgd's body without the contract around it (checks, eval mode, clamp, device moves),
        with torch.enable_grad(), conv_input_gradients(model):  # its passes made as the contract makes them
            return pgd.__wrapped__(model, x, y, eps=eps, alpha=alpha, steps=steps, keep="last")

    # the contract alone: an attack whose algorithm returns x at once, through the same checks, moves and clamp
    contract_only = core.attack("linf")(lambda model, x, y, *, eps, alpha=None, steps=1: x)
    model.eval()
    runs = {"limit": lambda: passes(x_visited), "ours": lambda: pgd(model, x, y, eps=eps, alpha=alpha, steps=steps),
            "ours_last": lambda: pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, keep="last"),
            "algorithm_last": algorithm_only,
            "contract": lambda: contract_only(model, x, y, eps=eps, alpha=alpha, steps=steps),
            "torchattacks": lambda: attack(x, y), "limit_clean": lambda: passes(x),
            "limit_autograd": lambda: autograd_passes(x_visited)}
    for fn in runs.values():  # warm up (allocator, kernels, lazy imports)
        fn()
    times = {key: [t / steps for t in values] for key, values in timed_in_turn(runs, device, repeats).items()}
    med = {key: statistics.median(v) for key, v in times.items()}
    low = {key: min(v) for key, v in times.items()}
    return {
        "limit_ms": 1e3 * med["limit"], "ours_ms_per_step": 1e3 * med["ours"],
        "torchattacks_ms_per_step": 1e3 * med["torchattacks"], "limit_clean_ms": 1e3 * med["limit_clean"],
        "ours_over_limit": med["ours"] / med["limit"], "ours_over_limit_clean": med["ours"] / med["limit_clean"],
        "ours_over_torchattacks": med["ours"] / med["torchattacks"],
        # the same passes through autograd alone (without advlib.attacks.conv_gradient)
        "limit_autograd_ms": 1e3 * med["limit_autograd"],
        "limit_over_limit_autograd": med["limit"] / med["limit_autograd"],
        # keep="last" returns the last iterate as torchattacks does: no best-iterate bookkeeping, no final pass
        "ours_last_ms_per_step": 1e3 * med["ours_last"], "ours_last_over_limit": med["ours_last"] / med["limit"],
        "ours_last_over_torchattacks": med["ours_last"] / med["torchattacks"],
        # the contract's cost (attacks.core: checks, eval mode, clamp, moves): keep="last" with it and without it
        "algorithm_last_ms_per_step": 1e3 * med["algorithm_last"],
        "contract_overhead": med["ours_last"] / med["algorithm_last"],
        "contract_overhead_paired": statistics.median(
            o / t for o, t in zip(times["ours_last"], times["algorithm_last"], strict=True)),
        # the contract's fixed cost per call, as a share of the limit of the call's steps (goal <= 0.02)
        "contract_ms_per_call": 1e3 * med["contract"] * steps,
        "contract_share_of_steps": med["contract"] / med["limit"],
        "min_ms": {key: 1e3 * v for key, v in low.items()},
        "ours_over_limit_of_minimums": low["ours"] / low["limit"],
        "ours_over_torchattacks_of_minimums": low["ours"] / low["torchattacks"],
        "ours_over_limit_paired": statistics.median(o / t for o, t in zip(times["ours"], times["limit"], strict=True)),
        "ours_over_torchattacks_paired": statistics.median(
            o / t for o, t in zip(times["ours"], times["torchattacks"], strict=True)),
        "samples_ms": {key: [round(1e3 * t, 3) for t in v] for key, v in times.items()},
    }


def print_pgd(result: dict) -> None:
    head = f"{'model':<12} {'limit ms':>9} {'ours ms/step':>13} {'torchattacks ms/step':>21} " \
           f"{'ours/limit':>11} {'ours/torchattacks':>18}"
    budget = ", ".join(f"{k} {v}" for k, v in PGD_BUDGET.items())
    print(f"PGD Linf, {result['rows'][0]['batch']} images, {budget}, {result['peer']} "
          f"(medians; goals: ours/limit <= 1.05, ours/torchattacks <= 1.0)")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(f"{r['model']:<12} {r['limit_ms']:>9.2f} {r['ours_ms_per_step']:>13.2f} "
              f"{r['torchattacks_ms_per_step']:>21.2f} {r['ours_over_limit']:>11.3f} "
              f"{r['ours_over_torchattacks']:>18.3f}")
    for r in result["rows"]:
        print(f"{r['model']}: keep='last' (torchattacks' output) {r['ours_last_ms_per_step']:.2f} ms/step, "
              f"/limit {r['ours_last_over_limit']:.3f}, /torchattacks {r['ours_last_over_torchattacks']:.3f}; "
              f"the contract costs {r['contract_ms_per_call']:.3f} ms a call, {r['contract_share_of_steps']:.2%} of "
              f"{PGD_BUDGET['steps']} steps' limit (with the algorithm x{r['contract_overhead']:.4f}, "
              f"paired x{r['contract_overhead_paired']:.4f})")
        print(f"{r['model']}: paired medians ours/limit {r['ours_over_limit_paired']:.3f}, ours/torchattacks "
              f"{r['ours_over_torchattacks_paired']:.3f}; of minimums {r['ours_over_limit_of_minimums']:.3f}, "
              f"{r['ours_over_torchattacks_of_minimums']:.3f}")


# --- CW-L2 -------------------------------------------------------------------------------------------

CW_SETTINGS = {"binary_steps": 5, "steps": 100, "lr": 1e-2, "c": 1e-3, "kappa": 0.0, "abort_early": True}
CW_TRAINING = {"arch": "fc100-100-10", "train_size": 10_000, "epochs": 2, "seed": 0}


def trained_mlp(device: torch.device) -> torch.nn.Module:
    """Szegedy's FC100-100-10 trained briefly (seeded): CW's distances and success rates need a real
    decision boundary, not a random one."""
    from advlib import train

    (x_train, y_train), _ = data.load_subsets("fashion-mnist", CW_TRAINING["train_size"], 1, seed=CW_TRAINING["seed"])
    torch.manual_seed(CW_TRAINING["seed"])
    model = models.build(CW_TRAINING["arch"])
    train.fit(model, x_train, y_train, epochs=CW_TRAINING["epochs"], seed=CW_TRAINING["seed"], device=device)
    return model.eval()


def bench_cw(device: torch.device, repeats: int, batch: int) -> dict:
    """CW-L2 with its binary search: ours against Foolbox's ``L2CarliniWagnerAttack`` at the same settings
    (5 binary-search steps of 100 Adam iterations, step 1e-2, first c 1e-3, confidence 0, early abort)
    on the same trained model and images. Times are of whole attacks (medians over repeats, the two
    attacks timed in turn); distances are the L2 norms of the successful perturbations."""
    import foolbox as fb

    from advlib.attacks import cw_l2

    model = trained_mlp(device)
    x, y = test_images(batch, device)
    s = CW_SETTINGS
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=s["binary_steps"], steps=s["steps"],
                                              stepsize=s["lr"], confidence=s["kappa"], initial_const=s["c"],
                                              abort_early=s["abort_early"])
    runs = {
        "ours": lambda: cw_l2(model, x, y, kappa=s["kappa"], c=s["c"], binary_steps=s["binary_steps"],
                              steps=s["steps"], lr=s["lr"], abort_early=s["abort_early"]),
        "foolbox": lambda: attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=None)[1],
    }
    outputs = {key: fn() for key, fn in runs.items()}  # warm-up runs; their results are the ones scored
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            times[key].append(timed(fn, device))
    with torch.no_grad():
        right = model(x).argmax(1) == y
        fooled = {key: right & (model(out).argmax(1) != y) for key, out in outputs.items()}
    l2 = {key: (out - x).flatten(1).norm(dim=1) for key, out in outputs.items()}
    # Foolbox returns an all-black image where it found nothing; the model may well misclassify that, so
    # those "successes" are counted apart (ours returns x itself there, which is never a success)
    fallback = (outputs["foolbox"].flatten(1) == 0).all(1) & (x.flatten(1) != 0).any(1)
    found = {"ours": fooled["ours"], "foolbox": fooled["foolbox"] & ~fallback}
    both = fooled["ours"] & fooled["foolbox"]
    med = {key: statistics.median(v) for key, v in times.items()}

    def median(t: torch.Tensor) -> float | None:
        return t.median().item() if len(t) else None

    row = {
        "model": CW_TRAINING["arch"], "batch": batch, "correct": int(right.sum()), **s,
        "ours_s": med["ours"], "foolbox_s": med["foolbox"], "ours_over_foolbox": med["ours"] / med["foolbox"],
        "ours_over_foolbox_of_minimums": min(times["ours"]) / min(times["foolbox"]),
        "success_rate": {key: f.sum().item() / max(1, int(right.sum())) for key, f in fooled.items()},
        "foolbox_black_fallbacks": int((right & fallback).sum()),
        "success_rate_without_fallbacks": {key: f.sum().item() / max(1, int(right.sum())) for key, f in found.items()},
        "median_l2": {key: median(l2[key][f]) for key, f in fooled.items()},
        "median_l2_without_fallbacks": {key: median(l2[key][f]) for key, f in found.items()},
        "median_l2_where_both_succeed": {key: median(l2[key][both]) for key in outputs},
        "both_succeed": int(both.sum()),
        "samples_s": {key: [round(t, 3) for t in v] for key, v in times.items()},
    }
    return {"goal": {"ours_over_foolbox": 1.0, "median_l2": "ours <= foolbox"},
            "peer": f"foolbox {fb.__version__}", "training": CW_TRAINING, "rows": [row]}


def print_cw(result: dict) -> None:
    r = result["rows"][0]
    print(f"CW-L2, {r['model']} trained {result['training']['epochs']} epochs, {r['batch']} images "
          f"({r['correct']} classified right), binary steps {r['binary_steps']}, steps {r['steps']}, "
          f"lr {r['lr']}, first c {r['c']}, {result['peer']} (medians; goals: time ratio <= 1.0, L2 not larger)")
    head = f"{'':<8} {'time s':>8} {'success':>8} {'median L2':>10} {'success*':>9} {'median L2*':>11} " \
           f"{'median L2 (both)':>17}"
    print(head)
    print("-" * len(head))
    for key in ("ours", "foolbox"):
        print(f"{key:<8} {r[key + '_s']:>8.2f} {r['success_rate'][key]:>8.3f} {r['median_l2'][key]:>10.4f} "
              f"{r['success_rate_without_fallbacks'][key]:>9.3f} {r['median_l2_without_fallbacks'][key]:>11.4f} "
              f"{r['median_l2_where_both_succeed'][key]:>17.4f}")
    print(f"* without Foolbox's {r['foolbox_black_fallbacks']} all-black images returned where it found nothing; "
          f"(both): over the {r['both_succeed']} examples both break")
    print(f"ours/foolbox time: {r['ours_over_foolbox']:.3f} (of minimums {r['ours_over_foolbox_of_minimums']:.3f})")


# --- one pixel ----------------------------------------------------------------------------------------

ONE_PIXEL_SETTINGS = {"popsize": 144, "iters": 40, "images": 50}
ONE_PIXEL_PIXELS = (1, 3)  # one row each


def bench_one_pixel(device: torch.device, repeats: int, batch: int) -> dict:
    """The one pixel attack: ours (batched DE/rand/1) against ``torchattacks.OnePixel`` (SciPy's
    differential evolution, one image at a time) with equal populations and generations, for 1 and 3
    pixels, on CW's trained FC100-100-10 and the first ``min(batch, 50)`` test images. Times are of whole
    attacks (medians over repeats, the two attacks timed in turn, each seeded alike every run)."""
    import torchattacks

    model = trained_mlp(device)
    n = min(batch, ONE_PIXEL_SETTINGS["images"])
    x, y = test_images(n, device)
    rows = [time_one_pixel(model, x, y, pixels, device, repeats, torchattacks) for pixels in ONE_PIXEL_PIXELS]
    return {"goal": {"ours_over_torchattacks": 0.5, "success_rate": "ours >= torchattacks"},
            "peer": f"torchattacks {torchattacks.__version__}", "training": CW_TRAINING, "rows": rows}


def time_one_pixel(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: int, device: torch.device,
                   repeats: int, torchattacks) -> dict:
    import numpy as np

    from advlib.attacks import one_pixel

    popsize, iters = ONE_PIXEL_SETTINGS["popsize"], ONE_PIXEL_SETTINGS["iters"]
    # torchattacks hands SciPy popsize // (pixels * (2 + C)) and SciPy multiplies it back by the number of
    # parameters, pixels * (2 + C) = 3 or 9 here: 144 is a multiple of both, so 144 members there as here
    attack = torchattacks.OnePixel(model, pixels=pixels, steps=iters, popsize=popsize, inf_batch=4096)

    def theirs():
        np.random.seed(0)  # SciPy's differential evolution draws from NumPy's global generator
        return attack(x, y)

    runs = {
        "ours": lambda: one_pixel(model, x, y, pixels=pixels, popsize=popsize, steps=iters,
                                  generator=torch.Generator().manual_seed(0)),
        "torchattacks": theirs,
    }
    outputs = {key: fn() for key, fn in runs.items()}  # warm-up runs; their results are the ones scored
    times = timed_in_turn(runs, device, repeats)  # two runs: the order alternates each repeat
    with torch.no_grad():
        right = model(x).argmax(1) == y
        fooled = {key: right & (model(out).argmax(1) != y) for key, out in outputs.items()}
    med = {key: statistics.median(v) for key, v in times.items()}
    return {
        "model": CW_TRAINING["arch"], "batch": len(x), "correct": int(right.sum()), "pixels": pixels,
        "popsize": popsize, "iters": iters,
        "ours_s": med["ours"], "torchattacks_s": med["torchattacks"],
        "ours_over_torchattacks": med["ours"] / med["torchattacks"],
        "ours_over_torchattacks_of_minimums": min(times["ours"]) / min(times["torchattacks"]),
        "success_rate": {key: f.sum().item() / max(1, int(right.sum())) for key, f in fooled.items()},
        "fooled": {key: int(f.sum()) for key, f in fooled.items()},
        "both_fool": int((fooled["ours"] & fooled["torchattacks"]).sum()),
        "samples_s": {key: [round(t, 3) for t in v] for key, v in times.items()},
    }


def print_one_pixel(result: dict) -> None:
    r0 = result["rows"][0]
    print(f"One pixel, {r0['model']} trained {result['training']['epochs']} epochs, {r0['batch']} images "
          f"({r0['correct']} classified right), population {r0['popsize']}, {r0['iters']} generations, "
          f"{result['peer']} (medians; goals: time ratio <= 0.5, success not lower)")
    head = f"{'pixels':>6} {'ours s':>8} {'torchattacks s':>15} {'ratio':>6} {'ours fooled':>12} " \
           f"{'theirs fooled':>14} {'both':>5}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(f"{r['pixels']:>6} {r['ours_s']:>8.2f} {r['torchattacks_s']:>15.2f} {r['ours_over_torchattacks']:>6.3f} "
              f"{r['fooled']['ours']:>12d} {r['fooled']['torchattacks']:>14d} {r['both_fool']:>5d}")


# --- APGD and AutoAttack --------------------------------------------------------------------------------

# a whole AutoAttack evaluation takes minutes on a CPU: it is timed "repeats" times per library, not --repeats
AUTOATTACK_SETTINGS = {"zoo": "wong-kolter-madry", "images": 500, "eps": 0.1, "steps": 100, "repeats": 3}
AUTOATTACK_NAMES = ("APGD-CE", "APGD-T", "FAB-T", "Square")  # the standard version's attacks, in order


def clocked(forward: Callable, name: str, seconds: list[dict[str, float]]) -> Callable:
    """``forward`` that adds the wall time of each call to ``seconds[-1][name]`` (the current run's; the clock
    of advlib's own per-attack report, so that the two split alike)."""
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            seconds[-1][name] = seconds[-1].get(name, 0.0) + time.perf_counter() - start
    return run


def forward_passes(model: torch.nn.Module, x: torch.Tensor, passes: int, device: torch.device) -> float:
    """Wall seconds of ``passes`` forward passes of ``model`` over ``x`` (one batch), without autograd."""
    def run():
        with torch.no_grad():
            for _ in range(passes):
                model(x)
    return timed(run, device, now=time.perf_counter)


def madry_network(device: torch.device) -> torch.nn.Module:
    """Chapter 10's adversarially trained network, from the zoo's cache (trained there if missing)."""
    from advlib import zoo

    return zoo.get(AUTOATTACK_SETTINGS["zoo"]).to(device).eval()


def bench_apgd(device: torch.device, repeats: int, batch: int) -> dict:
    """Time per APGD step (Croce and Hein 2020): ``advlib.attacks.apgd`` on the cross-entropy, 100 steps,
    against the limit (one forward and backward pass at a visited point, made as advlib makes it, as for PGD)
    and against ``torchattacks.APGD`` at the same settings, on chapter 10's Madry network and ``batch`` test
    images."""
    import torchattacks

    from advlib.attacks import apgd

    model = madry_network(device)
    x, y = test_images(batch, device)
    eps, steps = AUTOATTACK_SETTINGS["eps"], AUTOATTACK_SETTINGS["steps"]
    theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)).mul_(2 * eps).sub_(eps).to(device)
    x_visited = (x + noise).clamp_(0.0, 1.0)

    runs = {"limit": lambda: gradient_passes(model, x_visited, y, steps),
            "limit_autograd": lambda: gradient_passes(model, x_visited, y, steps, library=False),
            "ours": lambda: apgd(model, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(0)),
            "torchattacks": lambda: theirs(x, y)}
    outputs = {key: fn() for key, fn in runs.items()}  # warm-up; the attacks' outputs are scored
    times = {key: [t / steps for t in v] for key, v in timed_in_turn(runs, device, repeats).items()}
    med = {key: statistics.median(v) for key, v in times.items()}
    with torch.no_grad():
        robust = {key: ((model(x).argmax(1) == y) & (model(outputs[key]).argmax(1) == y)).float().mean().item()
                  for key in ("ours", "torchattacks")}
    row = {"model": AUTOATTACK_SETTINGS["zoo"], "batch": len(x), "eps": eps, "steps": steps,
           "limit_ms": 1e3 * med["limit"], "ours_ms_per_step": 1e3 * med["ours"],
           "torchattacks_ms_per_step": 1e3 * med["torchattacks"],
           "ours_over_limit": med["ours"] / med["limit"], "ours_over_torchattacks": med["ours"] / med["torchattacks"],
           "ours_over_limit_paired": statistics.median(
               o / t for o, t in zip(times["ours"], times["limit"], strict=True)),
           "limit_autograd_ms": 1e3 * med["limit_autograd"],
           "limit_over_limit_autograd": med["limit"] / med["limit_autograd"],
           "robust_accuracy": robust,
           "samples_ms": {key: [round(1e3 * t, 3) for t in v] for key, v in times.items()}}
    return {"goal": {"ours_over_limit": 1.05, "ours_over_torchattacks": 1.0},
            "peer": f"torchattacks {torchattacks.__version__}", "rows": [row]}


def print_apgd(result: dict) -> None:
    r = result["rows"][0]
    print(f"APGD-CE Linf, {r['model']}, {r['batch']} images, eps {r['eps']}, {r['steps']} steps, "
          f"{result['peer']} (medians; goals: ours/limit <= 1.05, ours/torchattacks <= 1.0)")
    print(f"limit {r['limit_ms']:.2f} ms, ours {r['ours_ms_per_step']:.2f} ms/step, torchattacks "
          f"{r['torchattacks_ms_per_step']:.2f} ms/step; ours/limit {r['ours_over_limit']:.3f}, "
          f"ours/torchattacks {r['ours_over_torchattacks']:.3f}; robust accuracy {r['robust_accuracy']}")


def bench_autoattack(device: torch.device, repeats: int, batch: int) -> dict:
    """AutoAttack's standard version, ours (``advlib.evaluate.autoattack``) against torchattacks'
    ``AutoAttack`` with its APGD, APGD-T and FAB set to the paper's 100 iterations (its default of 10 is a
    departure from the reference), on chapter 10's Madry network and the first ``images`` test images at
    Linf eps 0.1: the time of a whole evaluation and of each attack in it (medians) and the robust accuracy
    each reports. ``AUTOATTACK_SETTINGS["repeats"]`` runs each, in turn (not ``--repeats``): a whole
    evaluation takes minutes on a CPU. Then Square's queries as full forward passes alone, as many as ours
    made over the images it attacked, timed as many times (median): what evaluating every query by a full
    pass costs (ours recomputes only what a proposal's window reaches, so it can take less)."""
    import torchattacks

    from advlib import evaluate

    model = madry_network(device)
    n = AUTOATTACK_SETTINGS["images"]
    x, y = test_images(n, device)
    eps, steps = AUTOATTACK_SETTINGS["eps"], AUTOATTACK_SETTINGS["steps"]
    theirs = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    their_seconds: list[dict[str, float]] = []  # per run: attack -> wall seconds
    for name, attack in zip(AUTOATTACK_NAMES, theirs._autoattack.attacks, strict=True):
        if hasattr(attack, "steps") and not isinstance(attack, torchattacks.Square):
            attack.steps = steps  # the paper's 100 iterations (Square keeps its 5,000 queries)
        attack.forward = clocked(attack.forward, name, their_seconds)
    outputs, our_seconds = {}, []

    def ours():
        outputs["ours"] = evaluate.autoattack(model, x, y, eps=eps, steps=steps, batch_size=n, desc=None)
        our_seconds.append(outputs["ours"].seconds)

    def peer():
        their_seconds.append({})
        outputs["torchattacks"] = theirs(x, y)

    times = timed_in_turn({"ours": ours, "torchattacks": peer}, device, AUTOATTACK_SETTINGS["repeats"])
    med = {key: statistics.median(v) for key, v in times.items()}
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        robust = {"ours": outputs["ours"].robust_accuracy,
                  "torchattacks": (clean & (model(outputs["torchattacks"]).argmax(1) == y)).float().mean().item()}
    report = outputs["ours"]
    # Square's queries as full forward passes alone, as many as it made, over the images it attacked
    square_images = x[torch.tensor([b in (None, "Square") for b in report.broken_by], device=x.device) & clean]
    square_limit = statistics.median(forward_passes(model, square_images, round(report.evaluations["Square"]),
                                                    device) for _ in range(AUTOATTACK_SETTINGS["repeats"]))
    # an attack that found no image left standing is not called (theirs) or takes no time
    ours_split = {name: statistics.median(run.get(name, 0.0) for run in our_seconds) for name in AUTOATTACK_NAMES}
    their_split = {name: statistics.median(run.get(name, 0.0) for run in their_seconds) for name in AUTOATTACK_NAMES}
    per_attack = {name: ours_split[name] / their_split[name] if their_split[name] else None
                  for name in AUTOATTACK_NAMES}
    row = {"model": AUTOATTACK_SETTINGS["zoo"], "images": n, "eps": eps, "steps": steps,
           "ours_s": med["ours"], "torchattacks_s": med["torchattacks"],
           "ours_over_torchattacks": med["ours"] / med["torchattacks"],
           "clean_accuracy": clean.float().mean().item(), "robust_accuracy": robust,
           "ours_after_each_attack": report.accuracy, "ours_seconds_per_attack": ours_split,
           "torchattacks_seconds_per_attack": their_split, "ours_over_torchattacks_per_attack": per_attack,
           "square_images": len(square_images), "square_forward_limit_s": square_limit,
           "square_limit_over_torchattacks_square": square_limit / their_split["Square"],
           "samples_seconds_per_attack": {"ours": our_seconds, "torchattacks": their_seconds},
           "ours_evaluations_per_example": report.evaluations, "ours_flags": report.flags,
           "samples_s": {key: [round(t, 2) for t in v] for key, v in times.items()}}
    return {"goal": {"ours_over_torchattacks": 0.5, "robust_accuracy": "ours <= torchattacks"},
            "peer": f"torchattacks {torchattacks.__version__}", "rows": [row],
            "run": {"repeats": AUTOATTACK_SETTINGS["repeats"]}}


def print_autoattack(result: dict) -> None:
    r = result["rows"][0]
    print(f"AutoAttack standard, {r['model']}, {r['images']} images, Linf eps {r['eps']}, {r['steps']} steps, "
          f"{result['peer']} (goals: time ratio <= 0.5, robust accuracy not above theirs)")
    print(f"ours {r['ours_s']:.1f} s, torchattacks {r['torchattacks_s']:.1f} s, "
          f"ratio {r['ours_over_torchattacks']:.3f}; clean {r['clean_accuracy']:.3f}, "
          f"robust accuracy {r['robust_accuracy']}")
    print(f"ours after each attack: {r['ours_after_each_attack']}; seconds {r['ours_seconds_per_attack']}")
    print(f"torchattacks' seconds {r['torchattacks_seconds_per_attack']}; ours/theirs per attack "
          f"{ {k: round(v, 3) for k, v in r['ours_over_torchattacks_per_attack'].items()} }")
    print(f"Square's queries as full passes alone ({r['square_images']} images): {r['square_forward_limit_s']:.1f} s, "
          f"{r['square_limit_over_torchattacks_square']:.3f} of torchattacks' Square")


# name -> (benchmark function(device, repeats, batch) -> dict, printer of its result)
BENCHMARKS: dict[str, tuple[Callable[[torch.device, int, int], dict], Callable[[dict], None]]] = {
    "pgd": (bench_pgd, print_pgd),
    "cw": (bench_cw, print_cw),
    "one_pixel": (bench_one_pixel, print_one_pixel),
    "apgd": (bench_apgd, print_apgd),
    "autoattack": (bench_autoattack, print_autoattack),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS),
                        help="the benchmarks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; medians are reported")
    parser.add_argument("--batch", type=int, default=256, help="Fashion-MNIST test images per batch")
    add_run_arguments(parser, "attacks")
    args = parser.parse_args(argv)
    device, run_info = start_run(parser, args, argv, repeats=args.repeats, batch=args.batch)
    run_info["repeats"] = args.repeats
    results = {**run_info, "benchmarks": {}}
    for name in args.only:
        run, show = BENCHMARKS[name]
        entry = run(device, args.repeats, args.batch)  # its "run" block, if any, overrides the run's (repeats)
        results["benchmarks"][name] = {**entry, "run": {**run_info, **entry.get("run", {})}}
        show(results["benchmarks"][name])
        print()
    out = results_file(args, "attacks")
    if out.is_file():  # keep the benchmarks not run this time (each entry records its own run)
        try:
            earlier = json.loads(out.read_text())
            benchmarks = dict(earlier.get("benchmarks", {}))
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            earlier, benchmarks = {}, {}
        for name, entry in benchmarks.items():
            if name not in results["benchmarks"] and isinstance(entry, dict):
                entry.setdefault("run", {key: earlier[key] for key in run_info if key in earlier})
                results["benchmarks"][name] = entry
    write_results(results, out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
