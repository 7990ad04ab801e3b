"""Certified (provable) training: minimise an upper bound on the worst-case loss over the eps-ball.

Wong and Kolter (2018, "Provable defenses against adversarial examples via the convex outer adversarial
polytope", Thm. 2 and Sec. 4) train on the robust loss L(-J(x), y) of their dual network's bounds J;
Gowal et al. (2018, "On the effectiveness of interval bound propagation ...", Eq. (8)) train on

    kappa * L(f(x), y) + (1 - kappa) * L(-J(x), y)

with J from interval bound propagation, and Zhang et al. (2020, "Towards stable and efficient training
of verifiably robust neural networks", Sec. 3-4) with J = beta * J_CROWN-IBP + (1 - beta) * J_IBP. All
three grow eps from a small value to its target during training, one step at a time, because training on
the full eps from the start fails (the bounds of an untrained net are loose and the loss then only
flattens the network). :func:`certified_training` runs any of them through :func:`advlib.train.fit`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import train
from ..certify import METHODS, certified, crown_ibp_bounds, dual_bounds, ibp_margin_bounds
from ..certify.network import check_certify_inputs, layers
from ..utils import check_count, check_examples, check_model, check_real, model_device

__all__ = ["certified_training", "ramp"]

# eps_start, the length of the ramp as a fraction of the run, kappa (start, end)
DEFAULTS = {"dual": (0.01, 0.5, (0.0, 0.0)), "ibp": (0.0, 0.6, (1.0, 0.5)), "crown-ibp": (0.0, 0.6, (1.0, 0.0))}


def ramp(progress: float, warmup: float) -> float:
    """The fraction of the way from the start to the end of every schedule after ``progress`` epochs
    (fractional) of a ramp ``warmup`` epochs long: min(1, progress / warmup), 1 without a ramp."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


def certified_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, method: str = "dual",
                       epochs: int = 1, batch_size: int = 50, lr: float = 1e-3, optimizer: str = "adam",
                       schedule: str = "constant", seed: int = 0, device: torch.device | None = None,
                       desc: str = "certified training", eps_start: float | None = None,
                       warmup_epochs: float | None = None, projections: int | None = None,
                       kappa: tuple[float, float] | None = None, beta: tuple[float, float] = (1.0, 0.0),
                       box: tuple[float, float] | None = (0.0, 1.0)) -> train.History:
    """Train ``model`` to be certifiably robust in the Linf ball of radius ``eps`` (intersected with ``box``).

    Each step minimises kappa * CE(f(x), y) + (1 - kappa) * CE(-J(x), y), with J the margin bounds of
    ``method`` (:func:`advlib.certify.margin_bounds`) at the step's eps. Over the first ``warmup_epochs``
    (fractional; counted in steps, so the ramp is smooth) eps grows linearly from ``eps_start`` to ``eps``,
    kappa from ``kappa[0]`` to ``kappa[1]`` and, for CROWN-IBP, beta (the weight of the CROWN-IBP bound
    against the IBP bound, Zhang et al.'s Eq. (8)) from ``beta[0]`` to ``beta[1]``; then all stay at their
    end values. ``projections=k`` (dual only) trains on the random-projection estimate of the dual bound
    (Wong, Schmidt, Metzen and Kolter 2018, Sec. 3.2), seeded by ``seed``.

    The papers' settings, the defaults here (``None`` picks them by method):

    - ``"dual"`` (Wong and Kolter 2018; their code, locuslab/convex_adversarial, examples/mnist.py and
      problems.py): Adam, lr 1e-3, batch 50, 20 epochs, the box [0,1]; eps from 0.01 linearly to eps over
      the first half of the epochs (their 10 of 20, per epoch; per step here); kappa = 0 (the robust loss
      alone). Their code also halves the learning rate every 10 epochs after the ramp (not done here).
    - ``"ibp"`` (Gowal et al. 2018, Sec. 4 / App.): eps from 0, kappa from 1 to 0.5 over the ramp.
      Their MNIST ramp is 10k of 60k steps after 2k steps of clean training; here the ramp starts at once
      and lasts 0.6 of the run, as CROWN-IBP's.
    - ``"crown-ibp"`` (Zhang et al. 2020; their configs for MNIST and Fashion-MNIST, huanzhang12/CROWN-IBP):
      eps from 0 over 61 of 100 epochs (0.6 of the run here), beta from 1 to 0, Adam (lr 1e-3 for
      Fashion-MNIST, 5e-4 for MNIST), batch 256, the box [0,1]. Default kappa from 1 to 0 here: it starts
      on the clean loss as Gowal et al.'s does and ends on the robust loss alone, as in the authors'
      published configs (which use kappa = 0 throughout).

    ``schedule`` is the learning-rate schedule of :func:`advlib.train.fit`. Returns its
    :class:`~advlib.train.History` with two more lists, one entry per step: ``eps`` (the step's eps) and
    ``certified_error`` (the fraction of the batch not certified at that eps, NaN where the step computed
    no bound: kappa = 1 or eps = 0). The model is left in eval mode.
    """
    if method not in METHODS:
        raise ValueError(f"unknown certified training method {method!r}; expected one of {METHODS}")
    check_model(model)
    check_examples(x, y)
    check_certify_inputs(model, x[:1], y[:1], eps, box)
    layers(model, x[:1].to(model_device(model)))  # a TypeError now, not after a first step
    if not eps > 0:
        raise ValueError("eps must be > 0 for certified training (eps = 0 is standard training: use train.fit)")
    check_count("epochs", epochs)
    if projections is not None and method != "dual":
        raise ValueError(f"projections estimate the dual bound only; method {method!r} takes none")
    if projections is not None:
        check_count("projections", projections, low=1)
    default_start, default_ramp, default_kappa = DEFAULTS[method]
    eps_start = min(default_start, eps) if eps_start is None else check_real("eps_start", eps_start)
    warmup = default_ramp * epochs if warmup_epochs is None else check_real("warmup_epochs", warmup_epochs)
    kappa = default_kappa if kappa is None else _pair("kappa", kappa)
    beta = _pair("beta", beta)
    if not eps_start <= eps:
        raise ValueError(f"eps_start must lie in [0, eps] = [0, {eps:g}], got {eps_start:g}")

    generator = torch.Generator().manual_seed(seed)
    eps_steps: list[float] = []
    errors: list[float] = []

    def criterion(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, progress: float) -> torch.Tensor:
        along = ramp(progress * epochs, warmup)
        eps_now = eps_start + along * (eps - eps_start)
        kappa_now = kappa[0] + along * (kappa[1] - kappa[0])
        eps_steps.append(eps_now)
        errors.append(math.nan)
        if kappa_now == 1 or eps_now == 0:  # at eps = 0 the robust loss is the clean loss
            return F.cross_entropy(model(xb), yb)
        if method == "dual":
            bounds = dual_bounds(model, xb, yb, eps_now, box, projections=projections, generator=generator)
        elif method == "ibp":
            bounds = ibp_margin_bounds(model, xb, yb, eps_now, box)
        else:
            bounds = crown_ibp_bounds(model, xb, yb, eps_now, box, beta=beta[0] + along * (beta[1] - beta[0]))
        errors[-1] = 1.0 - certified(bounds.detach(), yb).float().mean().item()
        loss = F.cross_entropy(-bounds, yb)
        return loss if kappa_now == 0 else kappa_now * F.cross_entropy(model(xb), yb) + (1 - kappa_now) * loss

    history = train.fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                        schedule=schedule, seed=seed, device=device, desc=desc, criterion=criterion)
    history.eps = eps_steps
    history.certified_error = errors
    return history


def _pair(name: str, pair) -> tuple[float, float]:
    """``pair`` as (start, end), after a ``ValueError`` unless it holds two finite numbers in [0, 1]."""
    values = tuple(pair) if isinstance(pair, (tuple, list)) else ()
    if len(values) != 2:
        raise ValueError(f"{name} must be a pair (start, end) of numbers in [0, 1], got {pair!r}")
    return tuple(check_real(f"{name}[{i}]", v, high=1.0) for i, v in enumerate(values))
