"""AutoAttack's sanity flags (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", and the checks its reference implementation added in 2021):
signs that a model is not the deterministic logit classifier a standard evaluation assumes, so that its
robust accuracy may be overestimated.

- :func:`is_randomized`: two forward passes on the same images disagree (logits or predictions), so an
  attack must average over the randomness (EOT; AutoAttack's ``version="rand"``);
- :func:`outputs_probabilities`: the model returns a probability distribution (softmax), not logits,
  which flattens the cross-entropy's gradient where the model is confident;
- :func:`zero_gradient_share`: the share of examples whose input gradient of the DLR loss at a random
  start in the eps-ball is exactly zero (quantization, saturated outputs: no direction to follow);
- :func:`optimizes_at_inference`: the forward pass itself computes gradients (a defense that optimizes its
  input at inference, which an attack must differentiate through);
- the fourth flag, the black box (Square) lowering the accuracy left by the white-box attacks, comes out of
  :func:`advlib.evaluate.autoattack`'s run itself.

Each is a warning, never a proof of masking; :func:`advlib.evaluate.gradient_masking_checks` reports them
beside Athalye et al.'s checks.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..attacks import core
from ..utils import check_count, check_examples, check_images, check_model, check_real, eval_mode, model_device

__all__ = ["is_randomized", "optimizes_at_inference", "outputs_probabilities", "sanity_flags",
           "zero_gradient_share"]


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return model(x.to(model_device(model))).float()


def is_randomized(model: nn.Module, x: torch.Tensor, *, runs: int = 5, tolerance: float = 1e-4) -> bool:
    """Whether ``runs`` forward passes on the same images ``x`` disagree: a prediction changes, or a row of
    logits, scaled to unit L2 norm, moves by more than ``tolerance`` (AutoAttack's randomized-defense flag).
    The model runs in eval mode, so dropout and batch statistics are not randomness."""
    check_model(model)
    check_images(x)
    runs = check_count("runs", runs, low=2)
    tolerance = check_real("tolerance", tolerance)
    outputs = [_outputs(model, x) for _ in range(runs)]
    unit = [o / o.norm(dim=1, keepdim=True).clamp_min(1e-10) for o in outputs]
    moved = any((u - unit[0]).abs().amax().item() > tolerance for u in unit[1:])
    changed = any(not torch.equal(o.argmax(1), outputs[0].argmax(1)) for o in outputs[1:])
    return moved or changed


def outputs_probabilities(model: nn.Module, x: torch.Tensor, *, tolerance: float = 1e-5) -> bool:
    """Whether the model's outputs on ``x`` look like probabilities: every entry in [0, 1] and every row
    summing to 1 within ``tolerance`` (AutoAttack's softmax flag; its attacks expect logits)."""
    check_model(model)
    check_images(x)
    out = _outputs(model, x)
    return bool(out.min() >= 0 and out.max() <= 1 and (out.sum(dim=1) - 1).abs().max() <= tolerance)


def zero_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                        seed: int = 0) -> float:
    """The share of examples whose gradient of the DLR loss (Croce and Hein 2020, Eq. (5)) with respect to
    the input is exactly zero at a uniformly random point of the Linf eps-ball (clipped to [0, 1]), where
    APGD starts, among those the model classifies correctly there: AutoAttack's zero-gradient flag is
    raised when it is above 0 (0.0 when no example is classified correctly).

    Only those examples count, judged by the same forward pass as the gradient: where the label ranks
    third or lower, DLR is exactly 1 around the point and its gradient exactly zero however differentiable
    the model is (and a randomized model may rank an image differently from one pass to the next)."""
    check_model(model)
    check_examples(x, y)
    eps = check_real("eps", eps)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(check_count("seed", seed)))
    device = model_device(model)
    start = (x + (2 * noise - 1) * eps).clamp(0, 1).to(device).requires_grad_(True)
    y = y.to(device)
    with eval_mode(model), torch.enable_grad():
        logits = model(start)
        right = logits.argmax(1) == y
        if not right.any():
            return 0.0
        (grad,) = torch.autograd.grad(core.dlr(logits[right], y[right]).sum(), start)
    return (grad[right].flatten(1).abs().amax(dim=1) == 0).float().mean().item()


def optimizes_at_inference(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether one forward pass on ``x`` (in eval mode, under ``torch.no_grad``) calls
    ``torch.autograd.grad`` or ``Tensor.backward``: a defense that optimizes at inference (AutoAttack's
    dynamic-defense flag), which a standard attack does not differentiate through."""
    check_model(model)
    check_images(x)
    calls = []
    grad, backward = torch.autograd.grad, torch.Tensor.backward

    def counted(function):
        def run(*args, **kwargs):
            calls.append(function.__name__)
            return function(*args, **kwargs)
        return run

    with contextlib.ExitStack() as restore:
        torch.autograd.grad, torch.Tensor.backward = counted(grad), counted(backward)
        restore.callback(setattr, torch.autograd, "grad", grad)
        restore.callback(setattr, torch.Tensor, "backward", backward)
        _outputs(model, x)
    return bool(calls)


def sanity_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seed: int = 0) -> dict:
    """AutoAttack's flags that need no attack, on the examples (x, y): ``{"randomized", "softmax",
    "zero_gradient", "dynamic"}`` -> bool (see each function)."""
    check_examples(x, y)
    x_few, y_few = x[:256], y[:256]
    return {"randomized": is_randomized(model, x_few),
            "softmax": outputs_probabilities(model, x_few),
            "zero_gradient": zero_gradient_share(model, x_few, y_few, eps, seed=seed) > 0,
            "dynamic": optimizes_at_inference(model, x_few[:8])}
