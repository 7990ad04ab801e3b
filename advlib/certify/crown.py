"""CROWN-IBP (Zhang, Chen, Xiao, Gowal, Stanforth, Li, Boning and Hsieh 2020, "Towards stable and
efficient training of verifiably robust neural networks", Sec. 3).

The pre-activation bounds of every ReLU come from interval bound propagation (:mod:`advlib.certify.ibp`,
one cheap forward pass); then one CROWN backward pass (Zhang et al. 2018) from the margin specification
c = e_y - e_j bounds c^T f(x') with those intermediate bounds: the linear-relaxation backward pass of
:mod:`advlib.certify.backward` with the ``"crown"`` rule (upper slope u/(u - l), adaptive lower slope 1
if u >= -l else 0).

Zhang et al. train on a mix of the two bounds, beta * CROWN-IBP + (1 - beta) * IBP (their Eq. (8)),
with beta going from 1 to 0 as eps grows: ``beta`` below does that mix (beta = 1: CROWN-IBP alone).
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils import eval_mode, model_device
from .backward import backward, relaxation
from .ibp import folded_margins, interval_boxes
from .network import RELU, check_certify_inputs, input_region, layers
from .specification import margin_specification, num_outputs

__all__ = ["crown_ibp_bounds"]


def crown_ibp_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                     box: tuple[float, float] | None = (0.0, 1.0), beta: float = 1.0) -> torch.Tensor:
    """(N, K) lower bounds on f_y(x') - f_j(x') for every class j (0 at j = y) over the Linf ball of radius
    ``eps`` around each image of ``x``, intersected with ``box`` (None: the plain ball), by CROWN-IBP
    (Zhang et al. 2020, Sec. 3): IBP bounds for the hidden layers, then a CROWN backward pass.

    ``beta`` in [0, 1] returns beta * CROWN-IBP + (1 - beta) * :func:`advlib.certify.ibp_margin_bounds`
    (their Eq. (8); a mix of two sound bounds is sound). On the model's device, in eval mode;
    differentiable in the model's parameters."""
    check_certify_inputs(model, x, y, eps, box)
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    with eval_mode(model):
        steps = layers(model, x[:1])
        centre, radius = input_region(x, eps, box)
        boxes = interval_boxes(steps, centre, radius)
        ibp = folded_margins(steps, boxes, y) if beta < 1 else 0.0
        if beta == 0:
            return ibp
        relaxations = {i: relaxation(c - r, c + r, "crown") for i, (c, r) in enumerate(boxes[:-1]) if steps[i] is RELU}
        spec = margin_specification(y, num_outputs(steps), x.dtype)
        crown = backward(steps, relaxations, spec, centre, radius)
        return crown if beta == 1 else beta * crown + (1 - beta) * ibp
