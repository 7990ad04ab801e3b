"""The one pixel attack (Su, Vargas and Sakurai 2019, "One pixel attack for fooling deep neural networks",
IEEE Transactions on Evolutionary Computation 23(5), Sec. III): differential evolution over a few pixels.

A candidate solution is ``pixels`` tuples (row, column, one value per channel). Every image keeps its own
population of ``popsize`` candidates. Each generation, every slot i gets a mutant of DE/rand/1 (the
paper's Eq. 2), X_r1 + F (X_r2 - X_r3) with r1, r2, r3 and i distinct, without crossover; the mutant
replaces X_i when it lowers the fitness (the softmax probability of the true class; minus that of the
target for a targeted attack). The candidates of every image still being attacked are evaluated in one
batched forward pass per generation, and an image leaves the attack as soon as one of its candidates
succeeds.

Randomness
----------
One 32-bit seed per example is drawn from ``generator`` (or torch's global CPU generator), in example
order, at the start. Every other random number of example i, its initial population and its r1, r2, r3
in each generation, is a counter-based hash of (seed_i, generation, slot, component), computed with
integer tensor operations. An image's numbers therefore do not depend on the other images in the batch or
on when they stop, so attacking a batch equals attacking its examples one call at a time from the same
generator state (up to floating-point differences between batched and single forward passes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..utils import progress
from . import core

__all__ = ["one_pixel"]

CHUNK = {"cuda": 4096, "cpu": 256}  # default candidate images per forward pass, per device type (measured:
# on a CPU, batches of 128-256 small-CNN inputs ran twice as fast per image as 4096, which leave the caches)
_MASK = 0xFFFFFFFF


@core.attack(counts={"pixels": 1, "popsize": 4})
def one_pixel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, pixels: int = 1, popsize: int = 400,
              steps: int = 100, targeted: bool = False, F: float = 0.5, chunk: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Su, Vargas and Sakurai's one pixel attack (2019, Sec. III): differential evolution, DE/rand/1 (Eq. 2).

    Minimises, over perturbations that change at most ``pixels`` pixels of each image, the model's softmax
    probability of the true class ``y`` (``targeted=True``: maximises that of the target ``y``). A candidate
    is ``pixels`` tuples (row, column, value per channel); coordinates are continuous in [0, H] and [0, W]
    and floored when applied (H reads as the last row), values lie in [0, 1]. The initial population is
    the paper's: coordinates uniform over the image, values Gaussian N(128, 127) on the 0-255 scale, i.e.
    N(0.5, 127/255) here, clipped to [0, 1]. Generation g+1 (Eq. 2, F = ``F``, no crossover)::

        X_i(g+1) = X_r1(g) + F (X_r2(g) - X_r3(g)),   r1, r2, r3, i distinct,

    clipped to the image and to [0, 1], kept only where its fitness is lower than X_i(g)'s.

    An image's best candidate is a successful one (misclassified; targeted: classified as the target) of
    lowest fitness if any candidate succeeds, else the candidate of lowest fitness. An image stops as soon
    as its best candidate succeeds; the call stops when no image is left or after ``steps`` generations
    (``steps=0`` evaluates the initial population only). Returned: each image with its best candidate
    applied, successful or not (predict to see which succeeded), so it differs from ``x`` in at most
    ``pixels`` pixel positions (every channel of a pixel may change).

    ``chunk`` bounds the candidate images per forward pass (default 4096 on a GPU, about 13 MB of 28x28
    inputs, and 256 on a CPU, where large batches run slower per image; lower it for large images or models).
    Random numbers come from one seed per example drawn from
    ``generator`` (a CPU ``torch.Generator``; torch's global one when None), so a batch gives the same
    result as its examples one by one (see the module's docstring).

    Runs without gradients; keeps the contract of :mod:`advlib.attacks.core`. ``F`` must lie in (0, 2].
    """
    if not 0 < F <= 2:
        raise ValueError(f"F (the differential weight) must lie in (0, 2], got {F}")
    n, (c, h, w) = len(x), x.shape[1:]
    device = x.device
    pixels, popsize, steps = int(pixels), int(popsize), int(steps)
    chunk = int(chunk or CHUNK.get(device.type, CHUNK["cuda"]))
    x0, y0 = x, y
    seeds = torch.randint(0, 2**32, (n,), generator=generator).to(device)
    upper = torch.tensor([h, w] + [1.0] * c, dtype=x0.dtype, device=device)  # coordinates, then values
    slots = torch.arange(popsize, device=device)

    # initial population (generation 0): 2 uniforms for the position, 2 per channel for Box-Muller
    u = _uniforms(seeds, 0, slots, torch.arange(pixels * (2 + 2 * c), device=device))
    u = u.view(n, popsize, pixels, 2 + 2 * c)
    gauss = (-2 * u[..., 2:2 + c].log()).sqrt() * torch.cos(2 * math.pi * u[..., 2 + c:])
    pop = torch.cat([u[..., :2] * upper[:2], (0.5 + gauss * (127 / 255)).clamp(0, 1)], dim=-1).to(x0.dtype)

    active = torch.arange(n, device=device)  # the images still being attacked
    best = torch.empty(n, pixels, 2 + c, dtype=x0.dtype, device=device)
    with torch.no_grad():
        fit, won = _evaluate(model, x0, y0, active, pop, targeted, chunk)
        for g in progress(range(1, steps + 1), desc="one pixel attack (generations)", leave=False):
            _record_best(best, active, pop, fit, won)
            keep = ~won.any(dim=1)  # an image stops once its best candidate succeeds
            if not keep.any():
                break
            active, pop, fit, won = active[keep], pop[keep], fit[keep], won[keep]
            r1, r2, r3 = _distinct_indices(_uniforms(seeds[active], g, slots, torch.arange(3, device=device)))
            rows = torch.arange(len(active), device=device)[:, None]
            mutant = (pop[rows, r1] + F * (pop[rows, r2] - pop[rows, r3])).clamp(min=0).minimum(upper)
            fit_m, won_m = _evaluate(model, x0, y0, active, mutant, targeted, chunk)
            better = fit_m < fit
            pop = torch.where(better[..., None, None], mutant, pop)
            fit, won = torch.where(better, fit_m, fit), torch.where(better, won_m, won)
        else:
            _record_best(best, active, pop, fit, won)
    return _apply(x0, torch.arange(n, device=device), best)


def _record_best(best: torch.Tensor, active: torch.Tensor, pop: torch.Tensor, fit: torch.Tensor,
                 won: torch.Tensor) -> None:
    """Write each active image's best candidate into ``best``: a successful one of lowest fitness if any
    succeeds, else the one of lowest fitness (the fitness lies in [-1, 1]; ties go to the first slot)."""
    pick = (fit - 3.0 * won).argmin(dim=1)
    best[active] = pop[torch.arange(len(pop), device=pop.device), pick]


def _mix(v: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing hash (a bijection on [0, 2^32)), in int64 so no product overflows:
    v <- ((v >> 16) ^ v) * 0x45D9F3B mod 2^32, twice, then (v >> 16) ^ v. The argument is left as it was; the
    steps work in place on a new tensor (the hash runs over every candidate's every pixel)."""
    v = (v >> 16) ^ v
    v.mul_(0x45D9F3B).bitwise_and_(_MASK)
    v = (v >> 16).bitwise_xor_(v)
    v.mul_(0x45D9F3B).bitwise_and_(_MASK)
    return (v >> 16).bitwise_xor_(v)


def _uniforms(seeds: torch.Tensor, generation: int, slots: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), float64, shaped (len(seeds), len(slots), len(components)): hashes of
    (seed, generation, slot, component), chained through :func:`_mix`, mapped to (hash + 0.5) / 2^32."""
    v = _mix(seeds ^ 0x9E3779B9)
    v = _mix(v ^ (generation & _MASK))
    v = _mix(v[:, None] ^ slots[None, :])
    v = _mix(v[:, :, None] ^ components[None, None, :])
    return v.double().add_(0.5).div_(2.0**32)


def _distinct_indices(u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """r1, r2, r3 uniform over the population with r1, r2, r3 and the slot i distinct, from three uniforms
    per slot (``u`` shaped (N, P, 3)): draw r_k among the P - 1 - k indices left and step it over the
    excluded ones in increasing order (the skip-shift trick)."""
    n, p, _ = u.shape
    taken = torch.arange(p, device=u.device).expand(n, p)[..., None]  # slot i
    drawn = []
    for k in range(3):
        r = (u[..., k] * (p - 1 - k)).long().clamp(max=p - 2 - k)
        for excluded in torch.sort(taken, dim=-1).values.unbind(-1):
            r = r + (r >= excluded).long()
        drawn.append(r)
        taken = torch.cat([taken, r[..., None]], dim=-1)
    return tuple(drawn)


def _apply(x: torch.Tensor, image: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Copies of ``x[image]`` with each candidate's pixels written (``cand`` shaped (M, pixels, 2 + C));
    pixels are written in order, so a later one wins where two share a position."""
    out = x[image]  # a copy
    h, w = x.shape[2:]
    m = torch.arange(len(out), device=x.device)
    for k in range(cand.shape[1]):
        row = cand[:, k, 0].long().clamp(0, h - 1)  # the coordinates are >= 0: long() floors them
        col = cand[:, k, 1].long().clamp(0, w - 1)
        out[m, :, row, col] = cand[:, k, 2:].to(out.dtype)
    return out


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, active: torch.Tensor, pop: torch.Tensor,
              targeted: bool, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fitness, success) of every candidate in ``pop`` (shaped (A, P, pixels, 2 + C)) for the images
    ``x[active]``, in forward passes of at most ``chunk`` candidate images."""
    a, p = pop.shape[:2]
    image = active.repeat_interleave(p)
    cand = pop.reshape(a * p, *pop.shape[2:])
    fits, wins = [], []
    for start in range(0, a * p, chunk):
        part = slice(start, start + chunk)
        logits = model(_apply(x, image[part], cand[part]))
        label = y[image[part]]
        prob = logits.softmax(dim=1).gather(1, label[:, None])[:, 0]
        fits.append(-prob if targeted else prob)
        wins.append((logits.argmax(dim=1) == label) == targeted)
    return torch.cat(fits).view(a, p), torch.cat(wins).view(a, p)
