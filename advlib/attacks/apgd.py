"""Auto-PGD and its targeted form APGD-T (Croce and Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", Sec. 3, Algorithm 1; the DLR loss of
Sec. 4, Eqs. (5) and (6), is :func:`advlib.attacks.core.dlr`).

APGD is projected gradient ascent without a step size to tune:

- the step size starts at eta = 2 eps and is halved, per example, at the checkpoints
  w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
  (:func:`checkpoints`), when the loss stalled since the last checkpoint (Condition 1: it increased in
  fewer than a fraction ``rho`` of the steps) or when the step was not halved at the last checkpoint and
  the best loss has not changed since (Condition 2); the iterate then restarts from the example's best point;
- each step has momentum 0.75 (Eq. (2)): z = P(x^k + eta s(grad)), x^{k+1} = P(x^k + 0.75 (z - x^k)
  + 0.25 (x^k - x^{k-1})), with s the sign (Linf) or the gradient divided by its L2 norm (L2), P the
  projection onto the eps-ball around the original image intersected with [0,1]; the first step has none.

How it runs here (batched, one forward and one backward pass per step):

- The loss of x^k comes from the pass that computes its gradient; the last iterate costs a forward pass
  only. The bookkeeping (best point, its gradient, the schedule) is a few element-wise operations.
- Restarts are batched: each example is replicated ``restarts`` times in one batch (APGD-T: ``targets``
  times ``restarts``), each copy with its own random start.
- Stop per example: an example leaves the working batch, with all its copies, as soon as one copy
  succeeds; it keeps that successful point and costs no more passes. An example that no copy breaks
  gets its highest-loss point over all copies and iterates.
- Random starts come from :mod:`advlib.attacks.pgd`'s helper (uniform in the Linf or L2 ball, drawn on the
  CPU example after example), so a batch gives the same result as its pieces attacked one after another.

:func:`apgd_details` and :func:`apgd_t_details` run the same algorithms and return, beside the points, per
example whether it was broken, its loss and the forward passes it cost (what an evaluation reports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from . import core
from .pgd import _random_starts

__all__ = ["APGDResult", "apgd", "apgd_details", "apgd_t", "apgd_t_details", "checkpoints"]

MOMENTUM = 0.75  # alpha of Eq. (2)


class APGDResult(NamedTuple):
    """What :func:`apgd_details` and :func:`apgd_t_details` return, per example (on the model's device):
    the adversarial point (the first successful point found, else the highest-loss one), whether it
    succeeds, its loss, and the forward passes the example cost (copies and EOT passes included)."""

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    passes: torch.Tensor


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints w_0 = 0 < w_1 < ... <= steps for ``steps`` iterations (Croce and Hein 2020, Sec. 3.2).

    w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22 and p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
    for every p_j <= 1. The p_j are kept in exact hundredths (0.41 * 100 is 41.000000000000007 in floats,
    whose ceiling would be 42). A checkpoint that coincides with the previous one (few steps) is dropped.
    """
    points, before, p = [0], 0, 22
    while p <= 100:
        w = -(-p * steps // 100)  # ceil(p * steps / 100) in integers
        if w > points[-1]:
            points.append(w)
        before, p = p, p + max(p - before - 3, 6)
    return points


@core.attack("norm", reals=("rho",), counts={"eot_iter": 1})
def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", loss: str = "ce",
         steps: int = 100, restarts: int = 1, targeted: bool = False, rho: float = 0.75, eot_iter: int = 1,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Auto-PGD of Croce and Hein 2020 (Sec. 3, Algorithm 1): the step-size schedule, momentum and restarts
    from the best point of this module's docstring, on ``loss`` ``"ce"`` (cross-entropy), ``"dlr"`` (the
    Difference of Logits Ratio, Eq. (5); targeted, Eq. (6)) or ``"margin"`` (Carlini-Wagner's).

    Defaults are the paper's: ``steps=100``, ``rho=0.75``, initial step 2 eps (Linf and L2), one restart.
    ``targeted=True``: ``y`` holds the target labels and success means being classified as the target.
    The targeted DLR loss (Eq. (6)) also needs the true class: it is taken to be the model's prediction at
    the clean ``x`` (one forward pass more). AutoAttack attacks only correctly classified examples, where
    that prediction is the label. ``eot_iter`` > 1 (Expectation over Transformation, for randomized models;
    AutoAttack's "rand" version uses 20) averages the gradient and the loss, which drives the schedule, over
    ``eot_iter`` forward-backward passes per step; success is judged on the averaged logits.
    Returns, per example, its first successful point (examples stop as soon as one restart succeeds), else
    its highest-loss point over all iterates and restarts. See :func:`apgd_details` for more per example.
    Keeps the contract of :mod:`advlib.attacks.core`.
    """
    return apgd_details(model, x, y, eps=eps, norm=norm, loss=loss, steps=steps, restarts=restarts,
                        targeted=targeted, rho=rho, eot_iter=eot_iter, generator=generator).x_adv


def apgd_details(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                 loss: str = "ce", steps: int = 100, restarts: int = 1, targeted: bool = False, rho: float = 0.75,
                 eot_iter: int = 1, generator: torch.Generator | None = None) -> APGDResult:
    """:func:`apgd`'s algorithm returning an :class:`APGDResult`. It runs the algorithm only: ``x`` and ``y``
    on the model's device, the model in eval mode, gradients enabled and the arguments checked (as
    :func:`apgd` does through the contract); the points are not clamped to the ball again."""
    y = y.detach()
    classes, extra = y[:, None], 0
    if targeted and loss == "dlr":  # Eq. (6) needs the true class: the clean prediction
        with torch.no_grad():
            classes = torch.stack([model(x).argmax(1), y], dim=1)
        extra = 1

    def objective(logits, rows):
        if targeted and loss == "dlr":
            return core.dlr(logits, rows[:, 0], target=rows[:, 1])
        return core.loss_on_logits(logits, rows[:, 0], loss, targeted=targeted)

    def succeeded(logits, rows):
        prediction = logits.argmax(1)
        return prediction == rows[:, -1] if targeted else prediction != rows[:, 0]

    result = _ascend(model, x, classes, objective, succeeded, copies=restarts, eps=eps, norm=norm, steps=steps,
                     rho=rho, eot_iter=eot_iter, generator=generator)
    return result._replace(passes=result.passes + extra)


@core.attack("norm", reals=("rho",), counts={"eot_iter": 1, "targets": 1})
def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 100,
           targets: int = 9, restarts: int = 1, rho: float = 0.75, eot_iter: int = 1,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """APGD-T, AutoAttack's targeted Auto-PGD (Croce and Hein 2020, Sec. 4 and 5): APGD on the targeted DLR
    loss (Eq. (6)) toward each of the ``targets`` classes with the highest logits at the clean image other
    than the true label (top-2 ... top-(targets+1) for a correctly classified image; at most K - 1).

    ``y`` holds the TRUE labels (not targets); success means the prediction is no longer ``y``, toward any
    class. The targets (and ``restarts`` per target) run batched, as copies of each example, and an example
    stops as soon as one copy succeeds. Returns, per example, that successful point, else its highest-loss
    point over all targets, restarts and iterates. The other settings are :func:`apgd`'s; see
    :func:`apgd_t_details` for more per example. Keeps the contract of :mod:`advlib.attacks.core`.
    """
    return apgd_t_details(model, x, y, eps=eps, norm=norm, steps=steps, targets=targets, restarts=restarts,
                          rho=rho, eot_iter=eot_iter, generator=generator).x_adv


def apgd_t_details(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                   steps: int = 100, targets: int = 9, restarts: int = 1, rho: float = 0.75, eot_iter: int = 1,
                   generator: torch.Generator | None = None) -> APGDResult:
    """:func:`apgd_t`'s algorithm returning an :class:`APGDResult` (the caller keeps the contract, as for
    :func:`apgd_details`). The clean forward pass that picks the targets is counted in ``passes``."""
    y = y.detach()
    with torch.no_grad():
        logits = model(x)
    targets = min(targets, logits.shape[1] - 1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    aims = others.topk(targets, dim=1).indices.repeat_interleave(restarts, dim=1)  # (N, targets * restarts)
    classes = torch.stack([y[:, None].expand_as(aims), aims], dim=2).flatten(0, 1)  # rows (true, target)

    def objective(logits, rows):
        return core.dlr(logits, rows[:, 0], target=rows[:, 1])

    def succeeded(logits, rows):
        return logits.argmax(1) != rows[:, 0]

    result = _ascend(model, x, classes, objective, succeeded, copies=targets * restarts, eps=eps, norm=norm,
                     steps=steps, rho=rho, eot_iter=eot_iter, generator=generator, replicated=True)
    return result._replace(passes=result.passes + 1)


class _Rows:
    """The working batch: one row per copy of every example still standing (copies of an example adjacent)."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the rows where ``mask`` is False from every tensor."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[mask])


def _ascend(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, objective: Callable, succeeded: Callable, *,
            copies: int, eps: float, norm: str, steps: int, rho: float, eot_iter: int,
            generator: torch.Generator | None, replicated: bool = False) -> APGDResult:
    """Algorithm 1 on ``copies`` copies of each example at once, stopping per example (module docstring).

    ``classes`` holds the labels the loss needs, one row per example, or per copy when ``replicated``;
    ``objective(logits, classes)`` is the per-row loss to ascend, ``succeeded(logits, classes)`` says which
    rows are adversarial.
    """
    n, view = len(x), (-1,) + (1,) * (x.ndim - 1)
    rows = _start_rows(x, classes if replicated else classes.repeat_interleave(copies, dim=0), copies=copies,
                       eps=eps, norm=norm, generator=generator)
    out = APGDResult(x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device),
                     torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype),
                     torch.full((n,), (steps + 1) * copies * eot_iter, device=x.device))
    checks, last_check = set(checkpoints(steps)[1:]), 0
    for k in range(steps + 1):
        loss, grad, success = _evaluate(model, rows.cur, rows.classes, objective, succeeded, eot_iter, k < steps)
        _track(rows, k, loss, grad)
        if success.any():
            _stop_broken(rows, success, loss, copies, out, (k + 1) * copies * eot_iter)
            if len(rows.cur) == 0:
                break
        if k == steps:
            break
        if k in checks:
            _checkpoint(rows, rho * (k - last_check))
            last_check = k
        _step(rows, k, eps, norm, view)
    if len(rows.cur):  # the examples still standing: their highest-loss point over copies and iterates
        pick = rows.best_loss.view(-1, copies).argmax(1) + torch.arange(0, len(rows.cur), copies, device=x.device)
        standing = rows.example[pick]
        out.x_adv[standing], out.loss[standing] = rows.best[pick], rows.best_loss[pick]
    return out


def _start_rows(x: torch.Tensor, classes: torch.Tensor, *, copies: int, eps: float, norm: str,
                generator: torch.Generator | None) -> _Rows:
    """The working batch at x^0: ``copies`` rows per example (adjacent), each from its own random start, with
    the step size 2 eps and what the projection needs (the box [lo, hi] for Linf, the center for L2)."""
    start = (x[:, None] + _random_starts(x, eps, norm, copies, generator).to(x.device)).clamp_(0, 1).flatten(0, 1)
    rows = _Rows(cur=start, classes=classes, example=torch.arange(len(x), device=x.device).repeat_interleave(copies),
                 eta=torch.full((len(start),), 2 * eps, device=x.device, dtype=x.dtype))
    if norm == "linf":  # the Linf ball cap the box is a box [lo, hi]: clamping is the projection
        rows.lo = (x - eps).clamp_(min=0).repeat_interleave(copies, dim=0)
        rows.hi = (x + eps).clamp_(max=1).repeat_interleave(copies, dim=0)
    else:
        rows.center = x.repeat_interleave(copies, dim=0)
    return rows


def _track(rows: _Rows, k: int, loss: torch.Tensor, grad: torch.Tensor | None) -> None:
    """Take in x^k's loss and gradient: count an increase over x^{k-1}'s loss (Condition 1) and keep the
    highest-loss point x_max with its loss and gradient (where the iterate restarts after halving)."""
    if k == 0:
        rows.best, rows.best_loss, rows.checked_loss = rows.cur.clone(), loss.clone(), loss.clone()
        rows.best_grad = grad.clone() if grad is not None else None
        rows.increases = torch.zeros_like(loss, dtype=torch.long)
        rows.reduced = torch.zeros_like(loss, dtype=torch.bool)
    else:
        rows.increases += loss > rows.prev_loss
        improved = (loss > rows.best_loss).nonzero()[:, 0]
        rows.best.index_copy_(0, improved, rows.cur[improved])
        rows.best_loss.index_copy_(0, improved, loss[improved])
        if grad is not None:
            rows.best_grad.index_copy_(0, improved, grad[improved])
    rows.prev_loss, rows.grad = loss, grad


def _evaluate(model, cur, classes, objective, succeeded, eot_iter: int, need_grad: bool):
    """(loss, gradient or None, success) at ``cur``, averaged over ``eot_iter`` passes (success judged on the
    averaged logits). One forward and, when ``need_grad``, one backward pass per EOT draw."""
    point = cur.detach().requires_grad_(need_grad)
    loss_sum = grad = logits_sum = None
    for _ in range(eot_iter):
        with torch.set_grad_enabled(need_grad):
            logits = model(point)
            loss = objective(logits, classes)
        if need_grad:
            (g,) = torch.autograd.grad(loss.sum(), point)
            grad = g if grad is None else grad.add_(g)
        logits, loss = logits.detach(), loss.detach()
        loss_sum = loss if loss_sum is None else loss_sum.add_(loss)
        logits_sum = logits if logits_sum is None else logits_sum.add_(logits)
    if eot_iter > 1:
        loss_sum = loss_sum / eot_iter
        grad = grad.div_(eot_iter) if grad is not None else None
    return loss_sum, grad, succeeded(logits_sum, classes)


def _stop_broken(rows: _Rows, success: torch.Tensor, loss: torch.Tensor, copies: int, out: APGDResult,
                 passes: int) -> None:
    """Record, for every example with a successful copy, that copy's point, and drop all its copies."""
    hits = success.view(-1, copies)
    broken = hits.any(1)
    first = hits.int().argmax(1) + torch.arange(0, len(success), copies, device=success.device)
    pick = first[broken]
    done = rows.example[pick]
    out.x_adv[done], out.loss[done], out.passes[done] = rows.cur[pick], loss[pick], passes
    out.success[done] = True
    rows.keep((~broken).repeat_interleave(copies))


def _checkpoint(rows: _Rows, needed: float) -> None:
    """At a checkpoint, halve the step of the rows where Condition 1 (the loss increased in fewer than
    ``needed`` = rho * (w_j - w_{j-1}) steps) or Condition 2 (not halved at the last checkpoint and the best
    loss unchanged since) holds, and move those rows back to their best point and its gradient."""
    stalled = rows.increases < needed
    flat = ~rows.reduced & (rows.best_loss <= rows.checked_loss)
    halve = stalled | flat
    rows.eta = torch.where(halve, rows.eta / 2, rows.eta)
    back = halve.nonzero()[:, 0]
    rows.cur.index_copy_(0, back, rows.best[back])
    rows.grad.index_copy_(0, back, rows.best_grad[back])
    rows.prev_loss = torch.where(halve, rows.best_loss, rows.prev_loss)
    rows.reduced, rows.checked_loss = halve, rows.best_loss.clone()
    rows.increases.zero_()


def _step(rows: _Rows, k: int, eps: float, norm: str, view: tuple) -> None:
    """x^{k+1} from x^k (Eq. (2)): z = P(x^k + eta s(grad)); the first step is z, later ones
    P(x^k + 0.75 (z - x^k) + 0.25 (x^k - x^{k-1})) = P(0.75 z + 0.5 x^k - 0.25 x^{k-1})."""
    cur, eta = rows.cur, rows.eta.view(view)
    if norm == "linf":
        z = torch.addcmul(cur, rows.grad.sign_(), eta).clamp_(rows.lo, rows.hi)
    else:
        scale = eta / rows.grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        z = core.project_l2(torch.addcmul(cur, rows.grad, scale), rows.center, eps)
    if k == 0:
        rows.prev, rows.cur = cur, z
        return
    # x + a (z - x) + (1 - a)(x - prev) = a z + 2 (1 - a) x - (1 - a) prev, written into prev's buffer
    new = rows.prev.mul_(-(1 - MOMENTUM)).add_(cur, alpha=2 * (1 - MOMENTUM)).add_(z, alpha=MOMENTUM)
    new = new.clamp_(rows.lo, rows.hi) if norm == "linf" else core.project_l2(new, rows.center, eps)
    rows.prev, rows.cur = cur, new

