"""Throughput of de-randomized (ablation) smoothing's certification against the base classifier's own (a script,
not a test).

    python benchmarks/ablation.py [--device cpu|cuda] [--images 1000] [--batch 1024] [--repeats 5]
                                  [--threads N] [--clock wall|cpu] [--out benchmarks/results/ablation-<host>.json]

Levine and Feizi's de-randomized smoothing (2020; :class:`advlib.smoothing.AblationSmooth`) classifies every
band position of every image: its limit is the base classifier's throughput on the ablated images. On the
zoo's ``wong-kolter-ablation-column-4`` (column bands of width 4, so 28 positions per 28x28 image, threshold
0.2) and the first ``--images`` Fashion-MNIST test images, the median over repeats of

- the limit (``raw``): the base model alone, in eval mode under ``torch.inference_mode``, over exactly the
  ablated batches certification evaluates (every (image, position) pair in order, ``--batch`` pairs a batch,
  the last one smaller), built beforehand by :func:`advlib.smoothing.ablate` and held in memory;
- ``certify``: ``AblationSmooth.certify(x, batch_size)``, which makes those batches itself (gathering the
  images, masking and encoding them), counts the votes (softmax, threshold, a sum per image) and turns them
  into certified sticker sizes;
- ``counts``: ``AblationSmooth.counts(x, batch_size)``, the same without the certificate;

as images per second ((image, position) pairs per second divided by the positions), and the ratios of
certify's and counts' throughput to the limit's (goal >= 0.9). All three are timed in turn within each
repeat (rotating the order; ``attacks.timed_in_turn``), and the ratio is also given as the median of the
ratios within each repeat (paired). The warm-up's certificates give the smoothed classifier's accuracy and
how many images it certifies right against 5x5 stickers (a check that the weights are trained; not timed).
Clocks and ``--threads`` as in ``benchmarks/attacks.py``; results go to a JSON file naming the hardware.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attacks as bench  # noqa: E402  (the shared timing helpers of benchmarks/attacks.py)

from advlib import zoo  # noqa: E402
from advlib.smoothing import AblationSmooth, ablate, ablation_masks  # noqa: E402

MODEL, SIZE, KIND, THRESHOLD = "wong-kolter-ablation-column-4", 4, "column", 0.2
STICKER = 5  # the sticker side whose certified accuracy the warm-up reports


def ablated_batches(x: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """Every (image, position) pair's ablated image, in certification's order and batches."""
    positions = len(ablation_masks(x.shape[-2:], SIZE, KIND))
    pairs = torch.arange(len(x) * positions, device=x.device)
    return [ablate(x[chunk // positions], chunk % positions, SIZE, KIND) for chunk in pairs.split(batch)]


def raw_forward(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """The limit: the base model over the ablated batches, nothing else."""
    with torch.inference_mode():
        for ablated in batches:
            model(ablated)


def bench_ablation(device: torch.device, images: int, batch: int, repeats: int) -> dict:
    model = zoo.get(MODEL).to(device).eval()
    x, y = bench.test_images(images, device)
    smooth = AblationSmooth(model, 10, SIZE, KIND, THRESHOLD)
    positions = len(ablation_masks(x.shape[-2:], SIZE, KIND))
    batches = ablated_batches(x, batch)
    runs = {"raw": lambda: raw_forward(model, batches),
            "certify": lambda: smooth.certify(x, batch),
            "counts": lambda: smooth.counts(x, batch)}
    raw_forward(model, batches[:2])  # warm up (allocator, kernels, lazy imports)
    predictions, sizes = smooth.certify(x, batch)
    times = bench.timed_in_turn(runs, device, repeats)
    rate = {key: [images / t for t in values] for key, values in times.items()}
    med = {key: statistics.median(values) for key, values in rate.items()}
    right = predictions == y.cpu()
    return {
        "goal": {"certify_over_raw": 0.9},
        "model": MODEL, "size": SIZE, "kind": KIND, "threshold": THRESHOLD,
        "images": images, "positions": positions, "pairs": images * positions, "batch": batch,
        "batches": len(batches),
        "images_per_s": med, "pairs_per_s": {key: value * positions for key, value in med.items()},
        "certify_over_raw": med["certify"] / med["raw"], "counts_over_raw": med["counts"] / med["raw"],
        "certify_over_raw_paired": statistics.median(c / r for c, r in zip(rate["certify"], rate["raw"], strict=True)),
        "counts_over_raw_paired": statistics.median(c / r for c, r in zip(rate["counts"], rate["raw"], strict=True)),
        "accuracy": right.float().mean().item(),
        "sticker": STICKER, "certified_accuracy": (right & (sizes >= STICKER)).float().mean().item(),
        "seconds": {key: [round(t, 4) for t in values] for key, values in times.items()},
    }


def show(result: dict) -> None:
    rate = result["images_per_s"]
    print(f"{result['model']}, {result['images']} images x {result['positions']} positions, batch {result['batch']}: "
          f"raw {rate['raw']:.1f} images/s ({result['pairs_per_s']['raw']:.0f} pairs/s), certify {rate['certify']:.1f} "
          f"images/s = {result['certify_over_raw']:.3f}x (paired {result['certify_over_raw_paired']:.3f}x), counts "
          f"{rate['counts']:.1f} images/s = {result['counts_over_raw']:.3f}x; accuracy {result['accuracy']:.3f}, "
          f"certified against {result['sticker']}x{result['sticker']} stickers {result['certified_accuracy']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="test images to certify")
    parser.add_argument("--batch", type=int, default=1024, help="(image, position) pairs per forward pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; medians are reported")
    bench.add_run_arguments(parser, "ablation")
    args = parser.parse_args(argv)
    device, run_info = bench.start_run(parser, args, argv, images=args.images, batch=args.batch,
                                       repeats=args.repeats)
    result = bench_ablation(device, args.images, args.batch, args.repeats)
    show(result)
    bench.write_results({**run_info, "repeats": args.repeats, "ablation": result}, bench.results_file(args, "ablation"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
