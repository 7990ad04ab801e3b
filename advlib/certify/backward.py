"""Linear-relaxation bound propagation, backward: the one pass that the dual network and CROWN share.

Each ReLU a = max(z, 0) with pre-activation bounds l <= z <= u is replaced by two lines,

    alpha * z  <=  a  <=  s * z + t,

with slope 1 (and t = 0) where l >= 0 (active), 0 where u <= 0 (dead), and, where l < 0 < u (crossing),
the upper line through (l, 0) and (u, u): s = u / (u - l), t = -s l. The lower slope alpha is the
rule that tells the methods apart:

- ``"dual"``: alpha = s. This is Wong and Kolter's dual network (2018, "Provable defenses against
  adversarial examples via the convex outer adversarial polytope", Thm. 1 and Alg. 1), whose ReLU layers
  multiply by D = diag(0, 1 or u/(u - l)); Weng et al.'s Fast-Lin (2018) gives the same numbers.
- ``"crown"``: alpha = 1 if u >= -l else 0 for a crossing ReLU: the adaptive lower bound of CROWN
  (Zhang, Weng, Chen, Hsieh and Daniel 2018, "Efficient neural network robustness certification with
  general activation functions", Sec. 3.2), which keeps the area between the two lines smallest.

:func:`backward` bounds Lambda^T z_L (any rows Lambda of coefficients on the last layer's output) from
below over every x' in the input box, by carrying Lambda back through the network: an affine layer
contributes Lambda b and turns Lambda into Lambda A; a ReLU takes the lower line where a coefficient is
positive and the upper line where it is negative, so it contributes [Lambda]_- t and turns Lambda into
[Lambda]_+ alpha + [Lambda]_- s; at the input, Lambda^T x' >= Lambda^T c - |Lambda|^T r over the box
centre c +- radius r. In Wong and Kolter's notation, Lambda = -nu, the [Lambda]_- t terms are their sum
over the crossing set I of l_ij [nu_ij]_+, and the input term is -nu_1^T x - eps ||nu_1||_1 (for the
plain ball). The dual's layer-by-layer bounds would need one such row per unit; they come from the same
relaxed network run forward instead (:mod:`advlib.certify.layer_bounds`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .network import RELU

__all__ = ["RULES", "Relaxation", "backward", "relaxation"]

RULES = ("dual", "crown")


class Relaxation(NamedTuple):
    """The two lines alpha z <= relu(z) <= slope z + intercept of every ReLU unit of a layer, (N, *shape)."""

    lower_slope: torch.Tensor
    slope: torch.Tensor
    intercept: torch.Tensor


def relaxation(lower: torch.Tensor, upper: torch.Tensor, rule: str) -> Relaxation:
    """The ReLU relaxation on [lower, upper] under ``rule`` (``"dual"`` or ``"crown"``; see the module)."""
    if rule not in RULES:
        raise ValueError(f"unknown relaxation rule {rule!r}; expected one of {RULES}")
    active = lower >= 0
    crossing = (upper > 0) & ~active
    width = torch.where(crossing, upper - lower, torch.ones_like(upper))  # no 0/0, not even in the gradient
    slope = torch.where(crossing, upper / width, active.to(upper.dtype))
    intercept = torch.where(crossing, -slope * lower, torch.zeros_like(upper))
    if rule == "dual":
        return Relaxation(slope, slope, intercept)
    lower_slope = torch.where(crossing, (upper >= -lower).to(upper.dtype), active.to(upper.dtype))
    return Relaxation(lower_slope, slope, intercept)


def _dot(lam: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum over a layer of lam * v for rows lam (B, S, *shape) and a batch v (N, *shape) -> (N or B, S)."""
    return (lam.flatten(2) @ v.flatten(1).unsqueeze(-1)).squeeze(-1)


def backward(steps: list, relaxations: dict[int, Relaxation], lam: torch.Tensor, centre: torch.Tensor,
             radius: torch.Tensor) -> torch.Tensor:
    """Lower bounds (N, S) on lam^T z over the input box centre +- radius, where z is the output of
    ``steps`` (a list from :func:`advlib.certify.network.layers`, or a suffix of one whose input box is
    given) and ``relaxations[i]`` relaxes the ReLU at position i of ``steps``. ``lam`` holds the rows
    (B, S, *shape) with B = N or 1."""
    terms: list[torch.Tensor] = []
    for i in reversed(range(len(steps))):
        step = steps[i]
        if step is RELU:
            relax = relaxations[i]
            positive = lam.clamp(min=0)
            negative = lam - positive
            terms.append(_dot(negative, relax.intercept))
            lam = positive * relax.lower_slope.unsqueeze(1) + negative * relax.slope.unsqueeze(1)
        else:
            bias = step.bias_term(lam)
            if bias is not None:
                terms.append(bias)
            lam = step.transpose(lam)
    return _dot(lam, centre) - _dot(lam.abs(), radius) + sum(terms)
