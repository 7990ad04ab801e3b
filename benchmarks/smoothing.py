"""Throughput of randomized smoothing's certification against the base classifier's own (a script, not a test).

    python benchmarks/smoothing.py [--device cpu|cuda] [--n 10000 100000] [--batch 1000] [--repeats 5]
                                   [--budget 600] [--threads N] [--clock wall|cpu]
                                   [--out benchmarks/results/smoothing-<host>.json]

Cohen, Rosenfeld and Kolter's CERTIFY (2019) spends all its time classifying noisy copies of one image, so
its limit is the base classifier's throughput on noisy batches. Per model (the small CNN and the
Wong-Kolter net, freshly initialised and seeded; timing needs no trained weights), per sample count n,
on the first Fashion-MNIST test image, the median over repeats of

- the limit (``raw``): n noisy samples in batches of ``--batch``, each batch x + sigma * randn, one
  forward pass, argmax, under ``torch.inference_mode``, written the obvious way;
- ``certify``: ``Smooth.certify(x, n0=100, n, alpha=0.001, batch_size)``, which classifies n0 + n noisy
  samples (its n0 = 100 selection samples make a batch of 100) and counts the votes;
- ``counts``: ``Smooth.counts(x, n, batch_size)``, the sampling loop alone on n samples;

as noisy samples per second, and the ratios of certify's and counts' throughput to the limit's (goal >= 0.9).
All three are timed in turn within each repeat (rotating the order; ``attacks.timed_in_turn``), and the
ratio is also given as the median of the ratios within each repeat (paired). A (model, n) whose estimated
time (from its smaller n) would exceed ``--budget`` seconds is skipped and marked so. Clocks and
``--threads`` as in ``benchmarks/attacks.py``; results go to a JSON file naming the hardware.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (the shared timing helpers of benchmarks/attacks.py)

from advlib import models  # noqa: E402
from advlib.smoothing import Smooth  # noqa: E402

SIGMA, N0, ALPHA = 0.25, 100, 0.001
MODELS = {"small-cnn": models.small_cnn, "wong-kolter": models.wong_kolter_cnn}


def raw_votes(model: torch.nn.Module, x: torch.Tensor, n: int, batch: int) -> None:
    """The limit: n noisy samples through the model in batches, the obvious way."""
    with torch.inference_mode():
        for start in range(0, n, batch):
            noisy = x + SIGMA * torch.randn((min(batch, n - start), *x.shape[1:]), device=x.device)
            model(noisy).argmax(dim=1)


def time_row(model: torch.nn.Module, x: torch.Tensor, n: int, batch: int, device: torch.device,
             repeats: int) -> dict:
    smooth = Smooth(model, 10, SIGMA)
    runs = {"raw": lambda: raw_votes(model, x, n, batch),
            "certify": lambda: smooth.certify(x[0], N0, n, ALPHA, batch),
            "counts": lambda: smooth.counts(x[0], n, batch)}
    raw_votes(model, x, 2 * batch, batch)  # warm up (allocator, kernels, lazy imports)
    smooth.certify(x[0], N0, 2 * batch, ALPHA, batch)
    times = bench.timed_in_turn(runs, device, repeats)
    samples = {"raw": n, "certify": N0 + n, "counts": n}
    rate = {key: [samples[key] / t for t in values] for key, values in times.items()}
    med = {key: statistics.median(values) for key, values in rate.items()}
    return {
        "n": n, "n0": N0, "batch": batch, "sigma": SIGMA, "alpha": ALPHA,
        "samples_per_s": med,
        "certify_over_raw": med["certify"] / med["raw"], "counts_over_raw": med["counts"] / med["raw"],
        "certify_over_raw_paired": statistics.median(c / r for c, r in zip(rate["certify"], rate["raw"], strict=True)),
        "counts_over_raw_paired": statistics.median(c / r for c, r in zip(rate["counts"], rate["raw"], strict=True)),
        "certify_s": statistics.median(times["certify"]),
        "seconds": {key: [round(t, 4) for t in values] for key, values in times.items()},
    }


def bench_smoothing(device: torch.device, repeats: int, ns: list[int], batch: int, budget: float) -> dict:
    x, _ = bench.test_images(1, device)
    rows = []
    for name, build in MODELS.items():
        model = bench.seeded_model(build, device)
        seconds_per_sample = None
        for n in sorted(ns):
            if seconds_per_sample is not None:
                estimate = 3 * repeats * (n + N0) * seconds_per_sample
                if estimate > budget:
                    skipped = f"estimated {estimate:.0f} s > budget {budget:.0f} s"
                    rows.append({"model": name, "n": n, "skipped": skipped})
                    print(f"{name:>12} n={n:>7}: skipped, {skipped}")
                    continue
            row = {"model": name, **time_row(model, x, n, batch, device, repeats)}
            seconds_per_sample = 1 / row["samples_per_s"]["raw"]
            rows.append(row)
            show(row)
    return {"goal": {"certify_over_raw": 0.9}, "rows": rows}


def show(row: dict) -> None:
    rate = row["samples_per_s"]
    print(f"{row['model']:>12} n={row['n']:>7}: raw {rate['raw']:>9.0f}/s, certify {rate['certify']:>9.0f}/s "
          f"({row['certify_s']:.2f} s per image) = {row['certify_over_raw']:.3f}x (paired "
          f"{row['certify_over_raw_paired']:.3f}x), counts {rate['counts']:>9.0f}/s = {row['counts_over_raw']:.3f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="CERTIFY's sample counts")
    parser.add_argument("--batch", type=int, default=1000, help="noisy samples per forward pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; medians are reported")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="skip a (model, n) whose timings would take longer than this many seconds")
    bench.add_run_arguments(parser, "smoothing")
    args = parser.parse_args(argv)
    device, run_info = bench.start_run(parser, args, argv, repeats=args.repeats, batch=args.batch, n=min(args.n))
    result = {**run_info, "repeats": args.repeats,
              "smoothing": bench_smoothing(device, args.repeats, args.n, args.batch, args.budget)}
    bench.write_results(result, bench.results_file(args, "smoothing"))
    return 0

if __name__ == "__main__":
    sys.exit(main())
