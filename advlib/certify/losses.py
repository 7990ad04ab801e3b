"""Margin bounds by any method, the robust loss, and certified accuracy over a dataset.

Wong and Kolter (2018, Thm. 2) bound the worst-case loss over the eps-ball by the loss at the negated
margin bounds: for the cross-entropy L, which only grows when a logit other than y's grows relative to
y's, max over the ball of L(f(x'), y) <= L(-J(x), y), where J(x)_j is the lower bound on f_y - f_j
(J_y = 0). :func:`robust_loss` is that bound averaged over a batch, with the fraction of examples not
certified (some J_j <= 0 with j != y). Gowal et al. (2018, Eq. (8)) and Zhang et al. (2020) use the same
loss with their bounds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_examples, eval_mode, model_device, progress
from .crown import crown_ibp_bounds
from .dual import dual_bounds
from .ibp import ibp_margin_bounds

__all__ = ["METHODS", "certified", "certified_accuracy", "margin_bounds", "robust_loss"]

METHODS = ("dual", "ibp", "crown-ibp")


def margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "dual",
                  box: tuple[float, float] | None = (0.0, 1.0), projections: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, K) lower bounds on f_y(x') - f_j(x') over the eps-ball (intersected with ``box``) by ``method``:
    ``"dual"`` (:func:`advlib.certify.dual_bounds`, Wong and Kolter 2018), ``"ibp"``
    (:func:`advlib.certify.ibp_margin_bounds`, Gowal et al. 2018) or ``"crown-ibp"``
    (:func:`advlib.certify.crown_ibp_bounds`, Zhang et al. 2020). ``projections`` (and ``generator``)
    only for ``"dual"``: its random-projection estimate, which is not a sound bound."""
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; expected one of {METHODS}")
    if method == "dual":
        return dual_bounds(model, x, y, eps, box, projections=projections, generator=generator)
    if projections is not None:
        raise ValueError(f"projections estimate the dual bound only; method {method!r} takes none")
    if method == "ibp":
        return ibp_margin_bounds(model, x, y, eps, box)
    return crown_ibp_bounds(model, x, y, eps, box)


def certified(bounds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean per example: is every margin bound J_j, j != y, > 0 (so that no point of the ball is
    classified other than y; Wong and Kolter 2018, Thm. 1)?"""
    others = bounds.masked_fill(F.one_hot(y, bounds.shape[1]).bool(), float("inf"))
    return (others > 0).all(dim=1)


def robust_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "dual",
                box: tuple[float, float] | None = (0.0, 1.0), projections: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """(loss, certified error): the mean cross-entropy of the logits -J(x) (Wong and Kolter 2018, Thm. 2,
    with c = e_y - e_j; an upper bound on the worst-case cross-entropy over the ball when J is sound), and
    the fraction of examples with some j != y bound J_j <= 0 (a float). J is :func:`margin_bounds` by
    ``method``; the loss is differentiable in the model's parameters."""
    bounds = margin_bounds(model, x, y, eps, method, box, projections, generator)
    y = y.to(bounds.device)
    return F.cross_entropy(-bounds, y), 1.0 - certified(bounds.detach(), y).float().mean().item()


@torch.no_grad()
def certified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "dual",
                       box: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 50,
                       desc: str = "certified accuracy") -> float:
    """The fraction of examples certified robust at ``eps`` by ``method``: every j != y margin bound > 0.
    A certified example is also classified correctly (x lies in its own ball), so this is a lower bound on
    the accuracy under any attack in the ball (intersected with ``box``). Batches of ``batch_size`` on the
    model's device, with a tqdm progress bar."""
    check_examples(x, y, batch_size)
    device = model_device(model)
    count = 0
    with eval_mode(model):
        for start in progress(range(0, len(x), batch_size), desc=desc, unit="batch"):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            count += int(certified(margin_bounds(model, xb, yb, eps, method, box), yb).sum())
    return count / len(x)
