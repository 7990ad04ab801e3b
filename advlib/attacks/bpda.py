"""Attacking through obfuscated gradients (Athalye, Carlini and Wagner 2018, "Obfuscated gradients give a
false sense of security: circumventing defenses to adversarial examples", ICML): wrappers that make a
defended model's gradient useful again, so that the ordinary attacks (:func:`~advlib.attacks.pgd`) apply.

- :func:`bpda`, Backward Pass Differentiable Approximation (Sec. 4.1): the forward pass runs the real,
  non-differentiable transform g(x); the backward pass uses the gradient of a differentiable stand-in
  h(x) ~ g(x) instead, by default h(x) = x (the straight-through estimator, right when g(x) ~ x, as for
  quantization)::

      attacked = nn.Sequential(bpda(defense.transform), defense.model)
      x_adv = pgd(attacked, x, y, eps=0.1, alpha=0.01, steps=40)

- :func:`eot`, Expectation over Transformation (Sec. 4.3; Athalye, Engstrom, Ilyas and Kwok 2018,
  "Synthesizing robust adversarial examples"): for a randomized defense, a model whose output is the mean
  of the defended model's outputs over ``samples`` independent draws of its randomness, computed in one
  batched forward pass. Its gradient is the mean of the draws' gradients, a Monte-Carlo estimate of the
  expected gradient, and PGD on it follows E_t[grad f(t(x))]::

      x_adv = pgd(eot(defense, samples=16), x, y, eps=0.1, alpha=0.01, steps=40)

Both return an ``nn.Module`` (so that attacks find the model's device and switch its mode) and compose:
``eot(nn.Sequential(bpda(transform), model))`` for a transform both random and non-differentiable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["BPDA", "EOT", "bpda", "eot"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class _BackwardApproximation(torch.autograd.Function):
    """y = transform(x) in the forward pass; in the backward pass, the vector-Jacobian product of
    ``approximation`` at x (the incoming gradient itself when ``approximation`` is None: the identity)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, transform: Transform, approximation: Transform | None) -> torch.Tensor:
        ctx.approximation = approximation
        if approximation is not None:
            ctx.save_for_backward(x)
        with torch.no_grad():
            return transform(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        if ctx.approximation is None:
            return grad_output, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            out = ctx.approximation(x)
            (grad,) = torch.autograd.grad(out, x, grad_output)
        return grad, None, None


class BPDA(nn.Module):
    """The module :func:`bpda` returns: forward ``transform(x)``, backward the gradient of ``approximation``
    at x (the identity when None). ``transform`` and ``approximation`` are registered as submodules when
    they are modules, so the wrapper moves and switches mode with them."""

    def __init__(self, transform: Transform, approximation: Transform | None = None):
        super().__init__()
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if approximation is not None and not callable(approximation):
            raise TypeError(f"approximation must be callable or None, got {type(approximation).__name__}")
        self.transform = transform
        self.approximation = approximation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return self.transform(x)
        return _BackwardApproximation.apply(x, self.transform, self.approximation)


def bpda(transform: Transform, approximation: Transform | None = None) -> BPDA:
    """Backward Pass Differentiable Approximation of Athalye, Carlini and Wagner (2018, Sec. 4.1).

    Returns a module whose forward pass is ``transform(x)`` exactly (the defense's real, possibly
    non-differentiable or gradient-masking transform g) and whose backward pass replaces g's Jacobian by
    that of ``approximation`` h at the same x: the gradient with respect to x of L(f(g(x))) is taken as
    grad_z L(f(z)) at z = g(x), pulled back through h's Jacobian, J_h(x)^T grad_z L(f(g(x))). With
    ``approximation=None``, h is the identity (Sec. 4.1.1: g(x) ~ x), and the gradient passes through
    unchanged: the straight-through estimator. Put it in front of the classifier and attack as usual::

        pgd(nn.Sequential(bpda(defense.transform), defense.model), x, y, eps=0.1, alpha=0.01, steps=40)

    ``transform`` and ``approximation`` map a batch of images to a tensor of the same shape; either may be
    an ``nn.Module``. Raises ``TypeError`` when they are not callable.
    """
    return BPDA(transform, approximation)


class EOT(nn.Module):
    """The module :func:`eot` returns: the mean output of ``model`` over ``samples`` random draws."""

    AVERAGES = ("logits", "probs")

    def __init__(self, model: nn.Module, samples: int = 10, average: str = "logits"):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(samples, bool) or int(samples) != samples or samples < 1:
            raise ValueError(f"samples must be a whole number >= 1, got {samples!r}")
        if average not in self.AVERAGES:
            raise ValueError(f"unknown average {average!r}; expected one of {self.AVERAGES}")
        self.model = model
        self.samples = int(samples)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        out = self.model(x.repeat(self.samples, *([1] * (x.ndim - 1))))  # draw k: rows k n ... (k + 1) n - 1
        out = out.view(self.samples, n, *out.shape[1:])
        if self.average == "logits":
            return out.mean(dim=0)
        return out.softmax(dim=-1).mean(dim=0).clamp_min(1e-30).log()

    def extra_repr(self) -> str:
        return f"samples={self.samples}, average={self.average!r}"


def eot(model: nn.Module, samples: int = 10, average: str = "logits") -> EOT:
    """Expectation over Transformation (Athalye, Carlini and Wagner 2018, Sec. 4.3; Athalye, Engstrom, Ilyas
    and Kwok 2018, Eq. 1): a model whose output averages a randomized ``model`` over ``samples`` draws.

    The batch x (N images) is stacked ``samples`` times into one batch of ``samples * N`` images, one forward
    pass draws the defense's randomness independently for every row (as a randomized defense does per
    image), and the outputs are averaged per image:

    - ``average="logits"`` (default): (1/k) sum_j f(t_j(x)), the mean logits. The gradient of any loss of the
      output is then taken at the mean, and the gradient of each logit is exactly the mean of the k draws'
      gradients: an unbiased estimate of E_t[grad f(t(x))], which PGD on the wrapper follows.
    - ``average="probs"``: log((1/k) sum_j softmax(f(t_j(x)))), the log of the mean probabilities, whose
      argmax is the randomized classifier's expected vote and whose cross-entropy is -log E_t[p_y(t(x))].

    ``samples`` times the memory of a forward pass; attack smaller batches when that is too much. Raises
    ``ValueError`` for ``samples`` < 1 or an unknown ``average``.
    """
    return EOT(model, samples, average)
