"""The fast gradient sign method (Goodfellow, Shlens and Szegedy 2014, "Explaining and harnessing
adversarial examples", Sec. 4): one step of size eps along the sign of the input gradient of the loss."""

from __future__ import annotations

import torch
from torch import nn

from . import core

__all__ = ["fgsm"]


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False,
         loss: str = "ce") -> torch.Tensor:
    """The fast gradient sign method of Goodfellow et al. 2014 (Sec. 4): eta = eps * sign(grad_x J(theta, x, y)).

    Untargeted, returns exactly ``clip_[0,1](x + eps * sign(grad_x L(x, y)))``; targeted (``y`` holds
    the target labels), ``clip_[0,1](x - eps * sign(grad_x L(x, t)))``, a step *down* the loss to the
    target. ``loss`` is ``"ce"`` (the cross-entropy J of the paper) or ``"margin"`` (Carlini-Wagner's
    margin on the logits, :func:`advlib.attacks.core.margin`). A coordinate whose gradient is exactly
    zero does not move (sign(0) = 0).

    Linf-bounded: the result lies in [0,1] and within eps of ``x`` in the Linf norm. Runs the model in
    eval mode on its own device and restores its mode; returns a detached tensor on ``x``'s device;
    never modifies ``x`` or ``y``. ``eps = 0`` returns ``x`` (a copy). Raises ``ValueError`` for a
    negative eps, images outside [0,1], batch sizes that differ or an unknown loss.
    """
    core.check_attack_inputs(model, x, y, eps=eps, loss=loss)
    if eps == 0 or len(x) == 0:
        return x.detach().clone()
    device = core.model_device(model)
    x_dev, y_dev = x.detach().to(device), y.to(device)
    with core.eval_mode(model):
        # core's ascent loss is minus the cross-entropy for a targeted attack, so one formula serves both
        grad, _ = core.input_gradient(model, x_dev, y_dev, loss, targeted=targeted)
    x_adv = (x_dev + eps * grad.sign()).clamp_(0.0, 1.0)
    return x_adv.detach().to(x.device)
