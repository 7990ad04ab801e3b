"""What every attack shares: argument checks, the model in eval mode, losses on logits, projections.

- :func:`check_attack_inputs` raises ``ValueError``/``TypeError`` on bad input (DESIGN.md's contract).
- :func:`margin` is Carlini and Wagner's f_6 (2017, Sec. V.A): max(Z_y - max_{j != y} Z_j, -kappa)
  for an untargeted attack, max(max_{j != t} Z_j - Z_t, -kappa) for a targeted one. The other classes'
  maximum is taken with the true class masked to -inf, never by multiplying logits by a one-hot mask
  (which picks 0 instead of the largest logit when every logit is negative).
- :func:`project_linf` and :func:`project_l2` are the Euclidean projections onto the eps-ball around x,
  intersected with the box [0,1] (exact for Linf; for L2 ball then box, as in Madry et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import eval_mode, model_device

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")

__all__ = ["LOSSES", "NORMS", "check_attack_inputs", "eval_mode", "input_gradient", "loss_on_logits",
           "margin", "model_device", "project_l2", "project_linf"]


def check_attack_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                        eps: float | None = None, norm: str | None = None, loss: str | None = None,
                        **nonnegative: float) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` is a float batch (N,C,H,W) in [0,1], ``y`` an
    integer label vector of the same length, ``eps`` >= 0, ``norm`` and ``loss`` known, and every other
    keyword (``alpha=...``, ``steps=...``) >= 0."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of images, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images shaped (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.ndim != 1:
            raise ValueError("y must be a 1-D integer tensor of labels"
                             + (f", got dtype {y.dtype} shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else ""))
        if len(y) != len(x):
            raise ValueError(f"x holds {len(x)} images but y holds {len(y)} labels")
    if eps is not None and not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if loss is not None and loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    for name, value in nonnegative.items():
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def margin(logits: torch.Tensor, y: torch.Tensor, *, targeted: bool = False, kappa: float = 0.0) -> torch.Tensor:
    """Carlini-Wagner's margin per example (to be minimised; <= 0 once the attack succeeds, -kappa at best).

    Untargeted: max(Z_y - max_{j != y} Z_j, -kappa). Targeted (y = target t): max(max_{j != t} Z_j - Z_t, -kappa).
    Unchanged by adding a constant to every logit.
    """
    own = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    diff = others - own if targeted else own - others
    return diff.clamp_min(-kappa)


def loss_on_logits(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce", *, targeted: bool = False) -> torch.Tensor:
    """Per-example loss an attack *ascends*: cross-entropy, or minus the margin; targeted attacks ascend
    minus the cross-entropy to the target (the margin already knows the direction)."""
    if loss == "ce":
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if loss == "margin":
        return -margin(logits, y, targeted=targeted, kappa=float("inf"))
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", *,
                   targeted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of the summed per-example ascent loss with respect to x, the per-example loss).

    Summing makes each example's gradient its own loss's gradient, so one backward pass serves the batch.
    Only x's gradient is computed: the model's parameters accumulate nothing.
    """
    x = x.detach().requires_grad_(True)
    per_example = loss_on_logits(model(x), y, loss, targeted=targeted)
    (grad,) = torch.autograd.grad(per_example.sum(), x)
    return grad, per_example.detach()


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The closest point to ``x_adv`` in {x' : ||x' - x||_inf <= eps} intersected with [0,1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale ``x_adv - x`` into the L2 ball of radius ``eps`` (per example), then clip to [0,1].

    Clipping to the box only shortens the perturbation coordinate-wise, so the result stays in the ball.
    """
    delta = x_adv - x
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    delta = delta * (eps / norms).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)
