"""Speed of advlib.certify against the authors' convex_adversarial, and of certified training steps
(a script, not a test).

    python benchmarks/certify.py [--device cpu|cuda] [--only dual training] [--repeats 3] [--batch 50]
                                 [--threads N] [--clock wall|cpu] [--out benchmarks/results/certify-<host>.json]

``dual``: Wong and Kolter's exact dual bounds on the margins f_y - f_j of the same net and the same batch of
Fashion-MNIST test images at eps 0.1, ours (``advlib.certify.dual_bounds``) against
``convex_adversarial.DualNetwork(net, X, eps, bounded_input=...)`` applied to c = e_y - e_j, with the box
[0,1] (``bounded_input=True``) and without (the plain ball); both under ``torch.no_grad()`` (certification)
and with the gradient (``robust_loss`` forward and backward, a training step's bound). Nets: Wong and
Kolter's conv net (``advlib.models.wong_kolter_cnn``) with the authors' robust Fashion-MNIST weights when
``../shared/reference`` holds them (a trained net: few units cross zero, as in practice), else seeded
random weights (recorded in ``weights``); and an MLP 784-100-100-10 (seeded random weights; no Normalize
layer, which convex_adversarial does not know). Per case: the median seconds over repeats and the ratio
ours/theirs (goal <= 1), both timed in turn within each repeat (``attacks.timed_in_turn``).

``training``: the time of one certified training step (bounds, loss, backward pass, Adam step; through
``advlib.defenses.certified_training`` at the full eps 0.1, kappa = 0, CROWN-IBP with beta = 1) on the
Wong-Kolter net, per method (IBP, CROWN-IBP, the dual with 50 random projections, the exact dual), against
a standard training step (``advlib.train.fit``) on the same batches, starting from the same weights as
above; the ratio to the standard step.

Results go to a JSON file that names the hardware (``attacks.hardware``), the clock and the date.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (the shared timing helpers of benchmarks/attacks.py)

from advlib import certify, data, defenses, models, train  # noqa: E402

EPS = 0.1
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "wong_kolter_fashion_mnist.pth"


def wong_kolter(device: torch.device) -> tuple[nn.Module, str]:
    """Wong and Kolter's conv net: the authors' robust weights when available, else seeded random ones."""
    torch.manual_seed(0)
    model = models.wong_kolter_cnn()
    weights = "seeded random"
    if REFERENCE.is_file():
        model.load_state_dict(torch.load(REFERENCE, weights_only=True, map_location="cpu"))
        weights = "the authors' robust Fashion-MNIST model"
    return model.to(device).eval(), weights


def mlp(device: torch.device) -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    return model.to(device).eval(), "seeded random"


def bench_dual(device: torch.device, repeats: int, batch: int) -> dict:
    import convex_adversarial

    x, y = bench.test_images(batch, device)
    rows = []
    for name, build in (("wong-kolter", wong_kolter), ("mlp-100-100", mlp)):
        model, weights = build(device)
        for box in ((0.0, 1.0), None):
            rows.append({"model": name, "weights": weights, "batch": batch, "eps": EPS, "box": box,
                         **time_dual(model, x, y, box, device, repeats, convex_adversarial)})
    return {"goal": {"ours_over_theirs": 1.0}, "peer": f"convex_adversarial {_version('convex-adversarial')}",
            "rows": rows}


def time_dual(model: nn.Module, x: torch.Tensor, y: torch.Tensor, box, device: torch.device, repeats: int,
              convex_adversarial) -> dict:
    """Median seconds of ours and theirs, without and with the gradient, on one net and one box."""
    bounded = box is not None
    eye = torch.eye(10, device=device)
    spec = eye[y].unsqueeze(1) - eye.unsqueeze(0)

    def ours():
        with torch.no_grad():
            return certify.dual_bounds(model, x, y, EPS, box)

    def theirs():
        with torch.no_grad():
            return convex_adversarial.DualNetwork(model, x, EPS, bounded_input=bounded)(spec)

    def ours_grad():
        certify.robust_loss(model, x, y, EPS, box=box)[0].backward()

    def theirs_grad():
        convex_adversarial.robust_loss(model, EPS, x, y, bounded_input=bounded)[0].backward()

    runs = {"ours": ours, "theirs": theirs, "ours_grad": ours_grad, "theirs_grad": theirs_grad}
    agreement = (ours() - theirs()).abs().max().item()  # also the warm-up
    ours_grad(), theirs_grad()
    times = bench.timed_in_turn(runs, device, repeats)
    model.zero_grad(set_to_none=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    return {"seconds": median, "ours_over_theirs": median["ours"] / median["theirs"],
            "ours_over_theirs_grad": median["ours_grad"] / median["theirs_grad"],
            "max_abs_difference": agreement, "samples": times}


def bench_training(device: torch.device, repeats: int, batch: int) -> dict:
    x, y = data.load("fashion-mnist", "train")
    steps = 2
    x, y = x[:steps * batch].contiguous(), y[:steps * batch]
    _, weights = wong_kolter(device)

    def fresh():
        return wong_kolter(device)[0]

    common = dict(epochs=1, batch_size=batch, seed=0, device=device)
    robust = dict(eps=EPS, warmup_epochs=0, kappa=(0.0, 0.0), **common)
    runs = {
        "standard": lambda: train.fit(fresh(), x, y, **common),
        "ibp": lambda: defenses.certified_training(fresh(), x, y, method="ibp", **robust),
        "crown-ibp": lambda: defenses.certified_training(fresh(), x, y, method="crown-ibp", beta=(1.0, 1.0), **robust),
        "dual-proj50": lambda: defenses.certified_training(fresh(), x, y, method="dual", projections=50, **robust),
        "dual": lambda: defenses.certified_training(fresh(), x, y, method="dual", **robust),
    }
    for run in runs.values():  # warm-up
        run()
    times = bench.timed_in_turn(runs, device, repeats)
    per_step = {key: statistics.median(values) / steps for key, values in times.items()}
    return {"model": "wong-kolter", "weights": weights, "batch": batch, "eps": EPS, "steps_per_run": steps,
            "seconds_per_step": per_step,
            "over_standard": {key: value / per_step["standard"] for key, value in per_step.items()},
            "samples": times}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def print_dual(result: dict) -> None:
    print(f"dual bounds, eps {EPS}: ours against {result['peer']} (median seconds)")
    for row in result["rows"]:
        s = row["seconds"]
        print(f"  {row['model']:<12} box {str(row['box']):<10} no grad: ours {s['ours']:.3f} theirs {s['theirs']:.3f} "
              f"= {row['ours_over_theirs']:.2f}x; with grad: ours {s['ours_grad']:.3f} theirs {s['theirs_grad']:.3f} "
              f"= {row['ours_over_theirs_grad']:.2f}x; max |difference| {row['max_abs_difference']:.1e}")


def print_training(result: dict) -> None:
    print(f"certified training step on {result['model']} ({result['weights']}), batch {result['batch']}, eps {EPS}:")
    for key, seconds in result["seconds_per_step"].items():
        print(f"  {key:<12} {seconds:.3f} s/step = {result['over_standard'][key]:.1f}x standard")


BENCHMARKS = {"dual": (bench_dual, print_dual), "training": (bench_training, print_training)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported")
    parser.add_argument("--batch", type=int, default=50, help="images per batch (Wong and Kolter's 50)")
    bench.add_run_arguments(parser, "certify")
    args = parser.parse_args(argv)
    device, run_info = bench.start_run(parser, args, argv, repeats=args.repeats, batch=args.batch)
    results = {**run_info, "repeats": args.repeats, "benchmarks": {}}
    for name in args.only:
        run, show = BENCHMARKS[name]
        results["benchmarks"][name] = run(device, args.repeats, args.batch)
        show(results["benchmarks"][name])
        print()
    bench.write_results(results, bench.results_file(args, "certify"))
    return 0

if __name__ == "__main__":
    sys.exit(main())
