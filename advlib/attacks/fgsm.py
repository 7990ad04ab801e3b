"""The fast gradient sign method (Goodfellow, Shlens and Szegedy 2014, "Explaining and harnessing
adversarial examples", Sec. 4): one step of size eps along the sign of the input gradient of the loss."""

from __future__ import annotations

import torch
from torch import nn

from . import core

__all__ = ["fgsm"]


@core.attack("linf")
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, targeted: bool = False,
         loss: str = "ce") -> torch.Tensor:
    """The fast gradient sign method of Goodfellow et al. 2014 (Sec. 4): eta = eps * sign(grad_x J(theta, x, y)).

    Untargeted, returns exactly ``clip_[0,1](x + eps * sign(grad_x L(x, y)))``; targeted (``y`` holds
    the target labels), ``clip_[0,1](x - eps * sign(grad_x L(x, t)))``, a step *down* the loss to the
    target. ``loss`` is ``"ce"`` (the cross-entropy J of the paper) or ``"margin"`` (Carlini-Wagner's
    margin on the logits, :func:`advlib.attacks.core.margin`). A coordinate whose gradient is exactly
    zero does not move (sign(0) = 0). Keeps the contract of :mod:`advlib.attacks.core` (Linf ball).
    """
    # core's ascent loss is minus the cross-entropy for a targeted attack, so one formula serves both
    grad, _ = core.input_gradient(model, x, y, loss, targeted=targeted)
    return x + eps * grad.sign()
