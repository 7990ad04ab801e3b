"""Projected gradient descent (Madry, Makelov, Schmidt, Tsipras and Vladu 2017, "Towards deep learning
models resistant to adversarial attacks", Sec. 2.1): iterated steepest-ascent steps on the loss, each
followed by the projection back onto the eps-ball around the original image and onto [0,1].

Random starts and reproducibility
---------------------------------
The random start of each example and restart is drawn on the CPU, from ``generator`` (a CPU
``torch.Generator``) or else from torch's global CPU generator, and copied to the model's device.
All of a call's noise is drawn at once, example after example (example i's numbers for every restart,
then example i+1's): torch's CPU generator fills a tensor element after element, so example i receives
the i-th consecutive block of the stream. Hence attacking a batch equals attacking its examples, or any
split of it into consecutive pieces, one call after another from the same generator state::

    g = torch.Generator().manual_seed(0); whole = pgd(model, x, y, ..., generator=g)
    g = torch.Generator().manual_seed(0)
    pieces = torch.cat([pgd(model, x[i:i + 1], y[i:i + 1], ..., generator=g) for i in range(len(x))])
    # whole == pieces (up to floating-point differences between batched and single kernels)

so a robust accuracy computed over a seeded loader does not depend on its batch size, and the result
does not depend on the device either (the noise is the same on the CPU and on a GPU).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import core

__all__ = ["pgd"]


@core.attack("norm")
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
        steps: int = 40, norm: str = "linf", random_start: bool = True, restarts: int = 1, targeted: bool = False,
        loss: str = "ce", generator: torch.Generator | None = None, keep: str = "best") -> torch.Tensor:
    """Projected gradient ascent of Madry et al. 2017 (Sec. 2.1, on the inner maximisation of Eq. (2.1)).

    Approximates max_{||delta|| <= eps, x + delta in [0,1]} L(x + delta, y) by ``steps`` iterations of::

        x^{t+1} = Pi_{B(x, eps) cap [0,1]^d} (x^t + alpha * s^t),

    with the steepest-ascent direction s^t = sign(grad_x L(x^t, y)) for ``norm="linf"`` (the paper's
    update) and s^t = grad / ||grad||_2, per example, for ``norm="l2"``. The projection Pi onto the ball
    around the *original* ``x`` and onto the box follows every step (:func:`core.project_linf`,
    :func:`core.project_l2`). ``loss`` is ``"ce"`` (the cross-entropy; a targeted attack, where ``y``
    holds the target labels, ascends minus the cross-entropy to the target) or ``"margin"``
    (Carlini-Wagner's margin on the logits, :func:`core.margin`, which is right when every logit is
    negative).

    Defaults: ``steps=40`` (Madry et al.'s MNIST adversary) and the step size ``alpha = 2.5 * eps / steps``
    (Madry et al.'s rule, their robustness library's default: enough to cross the ball 1.25 times).

    Random start (``random_start=True``): x^0 = clip_[0,1](x + delta) with delta uniform in the Linf
    ball of radius eps, or, for L2, uniform in the L2 ball (a Gaussian direction, normalised, times
    eps * U^(1/d), U uniform on [0,1), d the number of pixels). Otherwise x^0 = x. See the module's
    docstring for how the noise is drawn from ``generator`` so that a batch gives the same result as its
    examples attacked one by one.

    What is returned: for each example, the best point among *all* the iterates x^0, ..., x^steps of
    *all* ``restarts`` runs, where a point that succeeds (misclassified; for a targeted attack,
    classified as its target) beats one that does not, and among equals the one with the higher loss
    wins. Each example keeps its own best (never the batch's best restart). With ``restarts=1`` and a
    loss that only grows, this is Madry et al.'s last iterate. The tracking is free: the loss of x^t
    comes out of the forward pass that computes its gradient, and only the last iterate of each run
    costs one extra forward pass. ``keep="last"`` returns Madry et al.'s last iterate x^steps instead
    (of the last restart), without that pass: the inner maximisation of adversarial training, where
    every forward pass counts (:mod:`advlib.defenses`). Keeps the contract of :mod:`advlib.attacks.core`.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if alpha is None:
        alpha = 2.5 * eps / steps if steps else 0.0
    if steps == 0 and not random_start:
        return x.clone()
    noise = _random_starts(x, eps, norm, restarts, generator) if random_start else None
    view = (len(x),) + (1,) * (x.ndim - 1)
    if norm == "linf":
        # the Linf ball cap the box is itself a box [lo, hi]: clamping to it is exactly core.project_linf
        lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    best, best_loss = x.clone(), torch.full((len(x),), float("-inf"), device=x.device, dtype=x.dtype)
    best_success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for restart in range(restarts):
        x_adv = x.clone() if noise is None else (x + noise[:, restart].to(x.device, non_blocking=True)).clamp_(0, 1)
        for t in range(steps + 1):
            last = t == steps
            if last and keep == "last":
                break
            with torch.set_grad_enabled(not last):  # the final iterate needs its loss only
                x_adv.requires_grad_(not last)
                logits = model(x_adv)
                per_example = core.loss_on_logits(logits, y, loss, targeted=targeted)
                if not last:
                    (grad,) = torch.autograd.grad(per_example.sum(), x_adv)
            x_adv, per_example = x_adv.detach(), per_example.detach()
            with torch.no_grad():
                if keep == "best":  # keep x^t where it beats the example's best: success first, then the loss
                    success = (logits.argmax(1) == y) if targeted else (logits.argmax(1) != y)
                    better = (success & ~best_success) | ((success == best_success) & (per_example > best_loss))
                    best = core.keep_rows(better, x_adv, best)
                    best_loss = torch.where(better, per_example, best_loss)
                    best_success |= success
                if last:
                    break
                if norm == "linf":  # x^{t+1} = Pi(x^t + alpha sign(grad)), in place
                    x_adv.add_(grad.sign_(), alpha=alpha).clamp_(lo, hi)
                else:  # x^{t+1} = Pi(x^t + alpha grad / ||grad||_2)
                    scale = alpha / grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                    x_adv = core.project_l2(x_adv.addcmul_(grad, scale.view(view)), x, eps)
    return x_adv if keep == "last" else best


def _random_starts(x: torch.Tensor, eps: float, norm: str, restarts: int,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Random starting offsets, shaped (N, restarts, C, H, W), on the CPU, drawn example after example.

    One ``torch.rand`` call fills the whole tensor from the CPU generator in order, so example i gets
    the i-th block of the stream whatever the batch (see the module's docstring). Linf: uniform on
    [-eps, eps]^d. L2: uniform in the L2 ball, a Gaussian direction (Box-Muller on the uniforms, so the
    stream is consumed in order too) times eps * U^(1/d).
    """
    n, shape = len(x), tuple(x.shape[1:])
    d = math.prod(shape)
    if norm == "linf":
        u = torch.rand((n, restarts, d), generator=generator, dtype=x.dtype)
        return u.mul_(2 * eps).sub_(eps).view(n, restarts, *shape)
    half = (d + 1) // 2
    u = torch.rand((n, restarts, 2 * half + 1), generator=generator, dtype=x.dtype)
    radius = u[..., :half].neg().log1p_().mul_(-2.0).sqrt_()  # sqrt(-2 log(1 - u)), finite: u < 1
    angle = u[..., half:2 * half] * (2 * math.pi)
    direction = torch.cat([radius * angle.cos(), radius * angle.sin()], dim=-1)[..., :d]
    direction /= direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    length = u[..., -1:].pow(1.0 / d).mul_(eps)
    return (direction * length).view(n, restarts, *shape)
