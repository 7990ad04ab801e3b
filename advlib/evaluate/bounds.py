"""Certified lower bounds (:mod:`advlib.certify`) run over a dataset in batches, per example."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import certify
from ..utils import (
    check_choice,
    check_examples,
    check_model,
    check_real,
    eval_mode,
    model_device,
    progress,
)
from .batches import _check_classes_on_first_logits


def _check_bound_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int,
                        methods: Sequence[str]) -> float:
    check_model(model)
    check_examples(x, y, batch_size)
    check_model(model, x)
    eps = check_real("eps", eps)
    for method in methods:
        check_choice("bound method", method, certify.METHODS)
    _check_classes_on_first_logits(model, x, y)
    return eps


@torch.no_grad()
def _lowest_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str) -> torch.Tensor:
    """min_{j != y} J_j(x) of one batch on the model's device, J the lower bounds of ``method`` on
    f_y - f_j over the ball (:func:`advlib.certify.margin_bounds`)."""
    device = model_device(model)
    xb, yb = x.to(device), y.to(device)
    bounds = certify.margin_bounds(model, xb, yb, eps, method=method)
    return bounds.scatter(1, yb[:, None], float("inf")).min(dim=1).values


def worst_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, method: str = "dual",
                  batch_size: int = 100, desc: str = "margin bounds") -> torch.Tensor:
    """Per example, a certified lower bound on the worst margin over the Linf eps-ball (within [0, 1]),
    min_{x'} min_{j != y} f_y(x') - f_j(x') >= min_{j != y} J_j(x), with J the bounds of ``method``:
    ``"dual"`` (Wong and Kolter 2018, Thm. 1, the dual network), ``"ibp"`` (Gowal et al. 2018) or
    ``"crown-ibp"`` (Zhang et al. 2020) (:func:`advlib.certify.margin_bounds`).

    A value > 0 certifies the example: no point of the ball is classified other than y. Returns a float
    tensor (N,) on ``x``'s device; the bounds run ``batch_size`` examples at a time on the model's device,
    in eval mode, without gradients, with a tqdm bar. The fraction certified alone is
    :func:`advlib.certify.certified_accuracy`.
    """
    eps = _check_bound_inputs(model, x, y, eps, batch_size, (method,))
    lowest = []
    with eval_mode(model):
        for start in progress(range(0, len(x), batch_size), desc=desc, unit="batch"):
            lowest.append(_lowest_margin(model, x[start:start + batch_size], y[start:start + batch_size], eps,
                                         method).to(x.device))
    return torch.cat(lowest)


def certified_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                       methods: Sequence[str] = ("ibp", "crown-ibp", "dual"), candidates: torch.Tensor | None = None,
                       batch_size: int = 100, desc: str = "certifying") -> torch.Tensor:
    """Per example, whether any bound of ``methods`` certifies it at ``eps`` (every margin bound
    J_j, j != y, > 0: Wong and Kolter 2018, Thm. 1; Gowal et al. 2018; Zhang et al. 2020), as a bool tensor
    (N,) on ``x``'s device.

    The bounds are tried in the order given, cheapest first by default, each only on the examples not yet
    certified and, when ``candidates`` (a bool tensor (N,)) is given, only among those: an example that an
    attack broke cannot be certified, so the flags of :func:`robustness_score` (``robust``) save bounding
    it. ``batch_size`` examples at a time on the model's device, in eval mode, with a tqdm bar.
    """
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty sequence of bound methods from {certify.METHODS}, "
                         f"got {methods!r}")
    eps = _check_bound_inputs(model, x, y, eps, batch_size, methods)
    if candidates is None:
        candidates = torch.ones(len(x), dtype=torch.bool)
    elif not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.bool or candidates.shape != (len(x),):
        got = f"{candidates.dtype} {tuple(candidates.shape)}" if isinstance(candidates, torch.Tensor) \
            else type(candidates).__name__
        raise ValueError(f"candidates must be None or a bool tensor with one flag per example ({len(x)},), got {got}")
    proved = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    candidates = candidates.to(x.device)
    with eval_mode(model), progress(total=len(methods), desc=desc, unit="bound") as bar:
        for method in methods:
            todo = (candidates & ~proved).nonzero().flatten()
            for index in todo.split(batch_size):
                proved[index] = (_lowest_margin(model, x[index], y[index], eps, method) > 0).to(x.device)
            bar.update(1)
    return proved
