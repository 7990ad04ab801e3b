"""NATTACK (Li, Li, Wang, Zhang and Gong 2019, "NATTACK: learning the distributions of adversarial examples
for an improved black-box attack on deep neural networks", ICML, Alg. 1, Linf): a black-box attack that
learns, per image, the mean mu of an isotropic Gaussian search distribution N(mu, sigma^2 I) in the tanh
space of the image, by natural evolution strategies on the model's outputs alone.

Each iteration draws a population z_1, ..., z_P ~ N(0, I) per image and turns each into a candidate

    x'_j = Pi_{B(x, eps) cap [0,1]} ( (tanh(arctanh(2x - 1) + mu + sigma z_j) + 1) / 2 ),

scores it by the loss f_j (below), and moves mu against the z-scored losses:
mu <- mu - lr / (P sigma) * sum_j ((f_j - mean f) / std f) z_j. The model is only ever *evaluated*, under
``torch.no_grad``, so the attack works on a model whose output carries no gradient (a non-differentiable
or gradient-masking defense, Athalye et al. 2018): that is why it belongs in the obfuscated-gradients
chapter. The population of every image still being attacked goes through the model in one batched
forward pass per iteration (cut into pieces of at most ``chunk`` candidates), and each image stops as
soon as it is fooled.

Randomness
----------
As in :mod:`advlib.attacks.one_pixel`: one 32-bit seed per example is drawn from ``generator`` (or torch's
global CPU generator) at the start, and every Gaussian of example i (the initial mu and each iteration's
population) comes, by Box-Muller, from uniforms that are counter-based hashes of (seed_i, iteration, slot,
component), computed with integer tensor operations. An image's numbers do not depend on the other images
in the batch or on when they stop, so a batch gives the same result as its images attacked one by one
from the same generator state (up to floating-point differences between batched and single forward passes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..utils import progress
from . import core
from .one_pixel import _MASK, _mix

__all__ = ["nattack"]

CHUNK = 4096  # default number of candidate images per forward pass
MU_INIT_STD = 0.001  # the paper's initial mean: N(0, 0.001^2) per coordinate


@core.attack("linf", positive=("sigma", "lr"), counts={"popsize": 2})
def nattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, popsize: int = 300,
            sigma: float = 0.1, lr: float = 0.02, steps: int = 500, targeted: bool = False, kappa: float = 0.0,
            generator: torch.Generator | None = None, chunk: int | None = None) -> torch.Tensor:
    """NATTACK of Li et al. (2019, Alg. 1), Linf: natural evolution strategies on the mean mu of a Gaussian
    search distribution in tanh space, using only the model's outputs (never its gradients).

    Per image, mu starts at N(0, 0.001^2 I) (the authors' initialisation) and each of ``steps`` iterations

    1. draws z_1, ..., z_P ~ N(0, I), P = ``popsize``, in the image's tanh space (one per pixel value);
    2. forms the candidates x'_j = Pi((tanh(w + mu + sigma z_j) + 1) / 2), w = arctanh((2x - 1)(1 - eps)),
       Pi the projection onto the Linf ball of radius ``eps`` around x and onto [0,1];
    3. scores them with the paper's loss f_j = max(0, log p_y(x'_j) - max_{c != y} log p_c(x'_j)), equal to
       Carlini and Wagner's margin on the logits clipped at 0 (log-softmax differences are logit
       differences; :func:`core.margin` with kappa = 0); targeted (``y`` the targets):
       max(0, max_{c != t} log p_c - log p_t). With a confidence ``kappa`` > 0 the floor 0 becomes -kappa
       (Carlini and Wagner's kappa, :func:`core.margin`): the search goes on until the margin reaches -kappa;
    4. z-scores the losses over the population, A_j = (f_j - mean f) / (std f + 1e-7), and steps
       mu <- mu - lr / (P sigma) sum_j A_j z_j (``lr`` the paper's learning rate eta).

    The image's point in tanh space, w: arctanh(2x - 1) is infinite at pixels of exactly 0 or 1, so it needs
    its argument shrunk towards 0. The authors shrink by 1 - 1e-6, which puts such pixels at ``|w|`` ~ 7, where
    tanh is flat: a search of width sigma = 0.1 can never move them, and Fashion-MNIST's background is 0 (on
    the book's networks this halves the attack's success). Here 2x - 1 is shrunk by 1 - eps instead (by
    1 - 1e-6 when eps < 1e-6): the starting point (tanh(w) + 1) / 2 moves each pixel towards 1/2 by at most
    eps / 2, inside the ball, and a pixel at 0 or 1 starts at the centre of its feasible interval ([0, eps]
    or [1 - eps, 1]), where the search can move it either way.

    Early stop, per image: at the start of every iteration the candidate at mu itself, Pi((tanh(w + mu) +
    1) / 2), is evaluated as in the authors' code, and the image stops when it is misclassified (targeted:
    classified as the target) with a margin of at most -kappa. A sampled candidate that succeeds also stops its
    image (the first such slot), at no extra cost: the attack asks only for an adversarial example in the ball.

    A randomized model (:class:`advlib.defenses.RandomResizePad`) answers every query with one draw of its
    randomness, so a candidate that fools one draw need not fool the next, and with kappa = 0 the attack stops
    on such lucky draws. Query it through Expectation over Transformation instead,
    ``nattack(eot(model, samples=k, average="probs"), ...)`` (:func:`advlib.attacks.eot`: the log of the mean
    probabilities over k draws, still outputs only), with a confidence kappa > 0, so that an image stops only
    when the mean vote is wrong by a margin that fresh draws keep. Returned: the successful
    candidate, or, for an image not fooled after ``steps`` iterations, the candidate at its final mu.
    ``steps=0`` evaluates the candidate at the initial mu only.

    ``chunk`` bounds the candidate images per forward pass (default 4096); the Gaussians of as many images
    as fit into one chunk are drawn at once (at least one image's population, P x C x H x W values). Random
    numbers come from one seed per example drawn from ``generator`` (a CPU ``torch.Generator``; torch's
    global one when None), so a batch equals its images attacked one by one (module docstring).

    Runs under ``torch.no_grad``; keeps the contract of :mod:`advlib.attacks.core` (Linf ball).
    """
    popsize, chunk = int(popsize), int(chunk or CHUNK)
    n = len(x)
    device = x.device
    x0, y0 = x, y
    shape, d = x0.shape[1:], x0[0].numel()
    flat = x0.flatten(1)
    lo, hi = (flat - eps).clamp_min(0.0), (flat + eps).clamp_max(1.0)  # the ball cap the box, a box itself
    w = torch.atanh((2 * flat - 1) * (1 - min(max(eps, 1e-6), 1.0)))  # see the docstring: shrunk by 1 - eps
    seeds = torch.randint(0, 2**32, (n,), generator=generator).to(device)

    def candidates(rows: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Pi((tanh(w + offset) + 1) / 2) for the images ``rows`` (offset shaped (len(rows), d) or
        (len(rows), P, d)), flat."""
        extra = (slice(None),) + (None,) * (offset.ndim - 2)
        z = (torch.tanh(w[rows][extra] + offset) + 1) / 2
        return torch.max(torch.min(z, hi[rows][extra]), lo[rows][extra])

    def succeeded(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if kappa > 0:  # a margin of at most -kappa < 0 already puts the decision where the adversary wants it
            return core.margin(logits, labels, targeted=targeted, kappa=math.inf) <= -kappa
        return (logits.argmax(dim=1) == labels) if targeted else (logits.argmax(dim=1) != labels)

    mu = MU_INIT_STD * _gaussians(seeds, 0, torch.zeros(n, dtype=torch.long, device=device), d, x0.dtype)
    result = torch.empty_like(flat)
    active = torch.arange(n, device=device)
    group = max(1, chunk // popsize)  # images whose populations are drawn and scored together
    slots = torch.arange(popsize, device=device)
    with torch.no_grad():
        for t in progress(range(steps + 1), desc="NATTACK (iterations)", leave=False):
            # the candidate at mu: stop the images it fools (and, after the last iteration, every image)
            at_mu = candidates(active, mu[active])
            logits = torch.cat([model(at_mu[s:s + chunk].view(-1, *shape)) for s in range(0, len(active), chunk)])
            done = succeeded(logits, y0[active]) if t < steps else torch.ones_like(active, dtype=torch.bool)
            result[active[done]] = at_mu[done]
            active = active[~done]
            if len(active) == 0:
                break
            fooled = torch.zeros(len(active), dtype=torch.bool, device=device)
            for start in range(0, len(active), group):
                rows = active[start:start + group]
                g = len(rows)
                z = _gaussians(seeds[rows].repeat_interleave(popsize), t + 1, slots.repeat(g), d, x0.dtype)
                z = z.view(g, popsize, d)
                cand = candidates(rows, mu[rows][:, None] + sigma * z).view(g * popsize, d)
                labels = y0[rows].repeat_interleave(popsize)
                logits = torch.cat([model(cand[s:s + chunk].view(-1, *shape)) for s in range(0, len(cand), chunk)])
                loss = core.margin(logits, labels, targeted=targeted, kappa=kappa).view(g, popsize)
                won = succeeded(logits, labels).view(g, popsize)
                # an image with a successful sample stops here, with its first successful candidate
                hit = won.any(dim=1)
                if hit.any():
                    first = won.to(torch.int8).argmax(dim=1)
                    pick = cand.view(g, popsize, d)[torch.arange(g, device=device), first]
                    result[rows[hit]] = pick[hit]
                    fooled[start:start + g] = hit
                score = (loss - loss.mean(dim=1, keepdim=True)) / (loss.std(dim=1, keepdim=True) + 1e-7)
                mu[rows] -= lr / (popsize * sigma) * torch.einsum("gp,gpd->gd", score, z)
            active = active[~fooled]
            if len(active) == 0:
                break
    return result.view_as(x0)


def _gaussians(seeds: torch.Tensor, iteration: int, slots: torch.Tensor, d: int,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard Gaussians of ``dtype``, shaped (len(seeds), d): row r from (``seeds[r]``, ``iteration``,
    ``slots[r]``), by Box-Muller on counter-based uniforms (the hash chain of
    :func:`advlib.attacks.one_pixel._uniforms`, taken row by row instead of over an outer product, keeping
    the hash's top 24 bits, u = (bits + 1/2) / 2^24, exact in float32): with h = ceil(d / 2), Gaussians m
    and h + m are sqrt(-2 log u) (cos, sin)(2 pi v), u and v the uniforms of components m and h + m."""
    half = (d + 1) // 2
    v = _mix(seeds ^ 0x9E3779B9)
    v = _mix(v ^ (iteration & _MASK))
    v = _mix(v ^ slots)
    v = _mix(v[:, None] ^ torch.arange(2 * half, device=seeds.device)[None, :])
    u = v.bitwise_right_shift_(8).to(dtype).add_(0.5).div_(2.0**24)  # in place: P x d values per image
    radius = u[:, :half].log().mul_(-2).sqrt_()
    angle = u[:, half:].mul(2 * math.pi)
    out = torch.empty(len(seeds), 2 * half, dtype=dtype, device=seeds.device)
    torch.mul(radius, angle.cos(), out=out[:, :half])
    torch.mul(radius, angle.sin_(), out=out[:, half:])
    return out[:, :d]
