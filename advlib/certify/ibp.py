"""Interval bound propagation (Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann and
Kohli 2018, "On the effectiveness of interval bound propagation for training verifiably robust models").

Every layer maps a box to a box: for an affine layer z' = W z + b, Eq. (6) in centre-radius form,

    mu' = W mu + b,   r' = |W| r,

and a monotone activation maps the box's ends: [relu(l), relu(u)]. :func:`ibp_bounds` returns the
logits' box. :func:`ibp_margin_bounds` bounds the margins f_y - f_j the tight way Gowal et al. do (Sec. 3,
"elision of the last layer"): the specification c = e_y - e_j is folded into the affine layers after the
last ReLU, so that c^T (W h + b) is bounded over the last hidden box directly (by the backward pass of
:mod:`advlib.certify.backward`, which through affine layers alone is exactly this interval bound).
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils import eval_mode, model_device
from .backward import backward
from .network import RELU, check_certify_inputs, input_region, layers
from .specification import margin_specification, num_outputs

__all__ = ["folded_margins", "ibp_bounds", "ibp_margin_bounds", "interval_boxes"]


def interval_boxes(steps: list, centre: torch.Tensor, radius: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(centre, radius) of the box entering each step, and last of the output box: len(steps) + 1 boxes
    (Gowal et al.'s Eq. (6), layer by layer)."""
    boxes = [(centre, radius)]
    for step in steps:
        if step is RELU:
            lower, upper = (centre - radius).clamp(min=0), (centre + radius).clamp(min=0)
            centre, radius = (upper + lower) / 2, (upper - lower) / 2
        else:
            centre, radius = step(centre), step.abs_linear(radius)
        boxes.append((centre, radius))
    return boxes


def folded_margins(steps: list, boxes: list, y: torch.Tensor) -> torch.Tensor:
    """Lower bounds (N, K) on the margins from the :func:`interval_boxes` of ``steps``, with the affine
    layers after the last ReLU folded into the specification."""
    last = max((i for i, step in enumerate(steps) if step is RELU), default=-1) + 1  # the step after the last ReLU
    centre, radius = boxes[last]
    return backward(steps[last:], {}, margin_specification(y, num_outputs(steps), centre.dtype), centre, radius)


def ibp_bounds(model: nn.Module, x: torch.Tensor, eps: float,
               box: tuple[float, float] | None = (0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper), each (N, K): interval bounds on the logits over the Linf ball of radius ``eps``
    around each image of ``x``, intersected with ``box`` (None: the plain ball), by interval bound
    propagation (Gowal et al. 2018, Eq. (6), layer by layer). On the model's device, in eval mode;
    differentiable in the model's parameters."""
    check_certify_inputs(model, x, None, eps, box)
    x = x.to(model_device(model))
    with eval_mode(model):
        steps = layers(model, x[:1])
        centre, radius = interval_boxes(steps, *input_region(x, eps, box))[-1]
    return centre - radius, centre + radius


def ibp_margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                      box: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """(N, K) lower bounds on f_y(x') - f_j(x') for every class j (0 at j = y) by interval bound
    propagation with the last affine layers folded into the specification (Gowal et al. 2018, Sec. 3).

    Never looser than ``lower[:, y] - upper[:, j]`` from :func:`ibp_bounds`."""
    check_certify_inputs(model, x, y, eps, box)
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    with eval_mode(model):
        steps = layers(model, x[:1])
        return folded_margins(steps, interval_boxes(steps, *input_region(x, eps, box)), y)

