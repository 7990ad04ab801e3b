"""Exact verification's cost against the same mixed-integer programs built without its two savings (a script,
not a test).

    python benchmarks/exact.py [--images 4] [--eps 0.02 0.05] [--time-limit 20] [--threads 1] [--clock wall|cpu]
                               [--out benchmarks/results/exact-<host>.json]

``advlib.certify.exact_margins`` (Tjeng, Xiao and Tedrake 2019) on chapter 15's certified MLP (the zoo's
``fc100-100-10-certified``, 784-100-100-10 ReLU, trained on Wong and Kolter's robust loss at eps 0.1), the
first ``--images`` Fashion-MNIST test images, at each budget of ``--eps`` (the chapter's 0.02, and 0.05),
each example's smallest margin (``smallest_only=True``), three ways:

- ``ours``: big-M constants from the tighter of interval arithmetic and the dual network's layer bounds,
  stable ReLUs without a binary (the defaults);
- ``ibp``: big-M from interval arithmetic alone (no dual-network tightening), stable ReLUs still fixed;
- ``ibp, every relu``: big-M from interval arithmetic and a binary for every ReLU (Tjeng et al.'s program
  with neither saving).

Per variant: the solver's seconds per image (median), the binaries per image (median), the images whose
programs all finished, and the ratio of each ablation's median time to ours (goal: at least 5 for the
program with neither saving). A program stopped by ``--time-limit`` makes its variant's time, and so the
ratio, a lower bound: the file records how many stopped. Results go to a JSON file that names the hardware.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (the shared run arguments, hardware and results file)

from advlib import certify, data, zoo  # noqa: E402

MODEL = "fc100-100-10-certified"
VARIANTS = {"ours": {"big_m": "dual", "fix_stable": True},
            "ibp": {"big_m": "ibp", "fix_stable": True},
            "ibp, every relu": {"big_m": "ibp", "fix_stable": False}}
GOAL = 5.0  # the program with neither saving, over ours


def bench_exact(images: int, budgets: list[float], time_limit: float) -> dict:
    model = zoo.get(MODEL).cpu().eval()
    x, y = data.load("fashion-mnist", "test")
    x, y = x[:images], y[:images]
    rows = [row for eps in budgets for row in _variants(model, x, y, eps, time_limit)]
    return {"model": MODEL, "images": images, "time_limit": time_limit,
            "goal": {"every_relu_over_ours": GOAL}, "rows": rows}


def _variants(model, x, y, eps: float, time_limit: float) -> list[dict]:
    rows, reference = [], None
    for name, options in VARIANTS.items():
        started = bench.CLOCK["now"]()
        result = certify.exact_margins(model, x, y, eps, time_limit=time_limit, smallest_only=True, **options)
        total = bench.CLOCK["now"]() - started
        smallest = result.margins.masked_fill(torch.nn.functional.one_hot(y, 10).bool(), float("inf")).amin(1)
        row = {"eps": eps, "variant": name, **options, "seconds_per_image": statistics.median(result.seconds.tolist()),
               "total_seconds": total, "binaries_per_image": statistics.median(result.binaries.tolist()),
               "finished": sum(status == "optimal" for status in result.status),
               "robust": int(result.robust.sum()), "broken": int(result.broken.sum())}
        if reference is None:
            reference = (row["seconds_per_image"], smallest)
        else:
            row["over_ours"] = row["seconds_per_image"] / reference[0]
            both = [a == b == "optimal" for a, b in zip(rows[0]["status"], result.status, strict=True)]
            done = torch.tensor(both)
            row["max_margin_difference"] = (smallest - reference[1])[done].abs().max().item() if any(both) else None
        row["status"] = result.status
        rows.append(row)
    return rows


def show(result: dict) -> None:
    for row in result["rows"]:
        print(f"eps {row['eps']}, {row['variant']:>16}: {row['seconds_per_image']:7.2f} s per image, "
              f"{row['binaries_per_image']:5.0f} binaries, {row['finished']}/{result['images']} finished"
              + (f", {row['over_ours']:.1f}x ours" if "over_ours" in row else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="test images")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05], help="Linf budgets")
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per program")
    bench.add_run_arguments(parser, "exact")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        parser.error("the programs are solved on the CPU: --device cpu")
    _, run_info = bench.start_run(parser, args, argv, images=args.images)
    result = bench_exact(args.images, args.eps, args.time_limit)
    show(result)
    bench.write_results({**run_info, "benchmarks": {"exact": result}}, bench.results_file(args, "exact"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
