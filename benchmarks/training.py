"""Cost of an adversarial training epoch against a standard one (a script, not a test).

    python benchmarks/training.py [--device cpu|cuda] [--repeats 5] [--images 4096] [--threads N]
                                  [--clock wall|cpu] [--out benchmarks/results/training-<host>.json]

Per model (the Wong-Kolter net and the small CNN, freshly initialised and seeded), the median over repeats
of the time of one epoch over the same Fashion-MNIST training images (batches of 128) of

- standard training (``advlib.train.fit``): a forward and a backward pass per batch;
- Madry et al.'s adversarial training (``advlib.defenses.madry_training``, PGD with 7 steps): 7 forward
  and backward passes to the input, then the training step; the limit is steps + 1 = 8 standard epochs;
- fast adversarial training (``advlib.defenses.fast_adversarial_training``, one FGSM step from a random
  start, guard off: its check runs once per epoch and is charged to no step): limit 2 standard epochs.

The nominal limits count a PGD step as one standard training step. On a CPU a backward pass to the input
can cost more than one to the weights (a first convolution with one input channel has cheap weight
gradients and an expensive input gradient), so the script also times the algorithm's own floor, written out
by hand without advlib: per batch, ``steps`` forward and backward passes to the input, then a training step
(``madry_floor``; for fast training, one such pass then a training step, ``fast_floor``), and reports
advlib's epochs over those floors too (goal: about 1). All five are timed in turn within each repeat
(rotating the order), so a change in the machine's load hits all of them alike. Results go to a JSON file
naming the hardware (``attacks.hardware``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (the shared timing helpers of benchmarks/attacks.py)

from advlib import data, defenses, models, train  # noqa: E402

STEPS, EPS = 7, 0.1


def bench_training(device: torch.device, repeats: int, images: int) -> dict:
    x, y = data.load("fashion-mnist", "train")
    x, y = x[:images].contiguous(), y[:images]
    return {"rows": [time_epochs(arch, x, y, device, repeats) for arch in ("wong-kolter", "small-cnn")]}


def time_epochs(arch: str, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int) -> dict:
    def fresh():
        torch.manual_seed(0)
        return models.build(arch).to(device)

    common = dict(epochs=1, batch_size=128, seed=0, device=device, desc=arch)

    def floor(steps: int):
        """An epoch of the algorithm written out by hand: per batch, ``steps`` sign-gradient steps on the input
        (forward and backward to the input), then one Adam step on the weights."""
        model = fresh()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xd, yd = x.to(device), y.to(device)
        for index in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(128):
            xb, yb = xd[index], yd[index]
            x_adv = (xb + torch.empty_like(xb).uniform_(-EPS, EPS)).clamp(0, 1)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), yb, reduction="sum"), x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + EPS / 4 * grad.sign(), xb - EPS), xb + EPS).clamp(0, 1)
            loss = F.cross_entropy(model(x_adv), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    runs = {
        "standard": lambda: train.fit(fresh(), x, y, **common),
        "madry": lambda: defenses.madry_training(fresh(), x, y, eps=EPS, alpha=EPS / 4, steps=STEPS, **common),
        "fast": lambda: defenses.fast_adversarial_training(fresh(), x, y, eps=EPS, guard=False, **common),
        "madry_floor": lambda: floor(STEPS),
        "fast_floor": lambda: floor(1),
    }
    for run in runs.values():  # warm-up
        run()
    times = bench.timed_in_turn(runs, device, repeats)
    median = {key: statistics.median(values) for key, values in times.items()}
    return {"model": arch, "images": len(x), "seconds": times, "median": median,
            "madry_over_standard": median["madry"] / median["standard"], "madry_limit": STEPS + 1,
            "fast_over_standard": median["fast"] / median["standard"], "fast_limit": 2,
            "madry_over_floor": median["madry"] / median["madry_floor"],
            "fast_over_floor": median["fast"] / median["fast_floor"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=4096)
    bench.add_run_arguments(parser, "training")
    args = parser.parse_args(argv)
    device, run_info = bench.start_run(parser, args, argv, repeats=args.repeats, images=args.images)
    result = {**run_info, "repeats": args.repeats, "training": bench_training(device, args.repeats, args.images)}
    for row in result["training"]["rows"]:
        m = row["median"]
        print(f"{row['model']:>12}: standard {m['standard']:.2f} s, Madry (PGD-{STEPS}) {m['madry']:.2f} s "
              f"= {row['madry_over_standard']:.2f}x (limit {STEPS + 1}), fast {m['fast']:.2f} s "
              f"= {row['fast_over_standard']:.2f}x (limit 2); over the hand-written floors: Madry "
              f"{row['madry_over_floor']:.3f}, fast {row['fast_over_floor']:.3f}")
    bench.write_results(result, bench.results_file(args, "training"))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
