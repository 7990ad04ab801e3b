"""NATTACK at Li et al.'s settings against chapter 11's gradient-masking defenses, on the full-profile network.

    python benchmarks/nattack_full.py --images 100 --eot-images 100 --eot-samples 8 --kappa 8

Chapter 11's quick profile cannot show NATTACK at the paper's settings (population 300, 500 iterations), and
its quick network keeps 13-20% under PGD itself, a floor no attack on a defense around it goes below. This
script takes the network the full profile trains (``zoo.get("wong-kolter", profile="full")``: all 60,000
training images, 20 epochs; trained on first use) and wraps it in the chapter's two defenses (input
quantization to 16 levels; random resizing and padding on top of it). On the first ``--images`` test images of
the full profile's test set it records the accuracy, clean, under PGD-20 (eps 0.1, step eps/4, random start)
and under NATTACK, querying the defense as it is. On the first ``--eot-images`` it also runs NATTACK against
the randomized defense queried through EOT (mean probabilities over ``--eot-samples`` draws), once as it stops
by default (at the first wrong mean vote) and once with the confidence ``--kappa`` (an image stops only at a
log-probability margin of -kappa), and scores the examples on the defense itself over five fresh draws (their
median is the row's accuracy). Results: ``results/nattack-full-<host>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (the shared run helpers of benchmarks/attacks.py)

from advlib import config, data, metrics, zoo  # noqa: E402
from advlib.attacks import eot, nattack, pgd  # noqa: E402
from advlib.defenses import InputQuantization, RandomResizePad  # noqa: E402

EPS, POPSIZE, ITERS = 0.1, 300, 500  # chapter 11's budget; Li et al.'s population and iterations


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def timed(fn, device: torch.device):
    """(fn(), its seconds): :func:`bench.timed` (the run's clock, the device synchronised), keeping the result."""
    result = []
    seconds = bench.timed(lambda: result.append(fn()), device)
    return result[0], seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--eot-images", type=int, default=100)
    parser.add_argument("--eot-samples", type=int, default=8)
    parser.add_argument("--kappa", type=float, default=8.0, help="NATTACK's confidence through EOT")
    bench.add_run_arguments(parser, "nattack-full")
    args = parser.parse_args(argv)
    device, run = bench.start_run(parser, args, argv, images=args.images, eot_images=args.eot_images,
                                  eot_samples=args.eot_samples)
    if not 0 <= args.kappa < float("inf"):
        parser.error("--kappa must be a finite confidence >= 0")
    config.seed_everything(0)
    natural = zoo.get("wong-kolter", profile="full", device=device)
    quantized = InputQuantization(natural, levels=16)
    randomized = RandomResizePad(quantized, min_scale=0.9, generator=torch.Generator().manual_seed(1))
    full = config.sizes("full")
    _, (x_test, y_test) = data.load_subsets("fashion-mnist", full.train_size, full.test_size)
    x, y = x_test[:args.images].to(device), y_test[:args.images].to(device)

    rows = {}
    for label, model in {"no defense": natural, "quantization": quantized, "randomization": randomized}.items():
        x_pgd, pgd_s = timed(lambda m=model: pgd(m, x, y, eps=EPS, alpha=EPS / 4, steps=20, generator=seeded()), device)
        x_nat, nattack_s = timed(lambda m=model: nattack(m, x, y, eps=EPS, popsize=POPSIZE, steps=ITERS,
                                                         generator=seeded()), device)
        rows[label] = {"images": len(x), "clean": metrics.accuracy(model, x, y),
                       "pgd20": metrics.accuracy(model, x_pgd, y), "nattack": metrics.accuracy(model, x_nat, y),
                       "pgd_seconds": pgd_s, "nattack_seconds": nattack_s}
        print(label, rows[label], flush=True)

    xe, ye = x[:args.eot_images], y[:args.eot_images]
    query = eot(randomized, samples=args.eot_samples, average="probs")
    for kappa in (0.0, args.kappa):
        x_eot, seconds = timed(lambda k=kappa: nattack(query, xe, ye, eps=EPS, popsize=POPSIZE, steps=ITERS, kappa=k,
                                                       generator=seeded()), device)
        draws = [metrics.accuracy(randomized, x_eot, ye) for _ in range(5)]
        label = f"randomization, NATTACK through EOT-{args.eot_samples}" + (f", confidence {kappa:g}" if kappa else "")
        rows[label] = {"images": len(xe), "clean": metrics.accuracy(randomized, xe, ye), "kappa": kappa,
                       "nattack_draws": draws, "nattack": statistics.median(draws), "nattack_seconds": seconds}
        print(label, rows[label], flush=True)
    bench.write_results(run | {"eps": EPS, "popsize": POPSIZE, "iters": ITERS, "kappa": args.kappa, "rows": rows},
                        bench.results_file(args, "nattack-full"))


if __name__ == "__main__":
    main()
