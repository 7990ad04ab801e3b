"""The contract every attack keeps, enforced here once, and what the attacks share: losses, projections.

The contract (DESIGN.md). Every attack is a function ``x_adv = attack(model, x, y, *, eps=..., steps=...,
targeted=False, generator=None, ...)``, wrapped by :func:`attack`, which

- takes ``model, x, y`` positionally and everything else by keyword; an iteration count is ``steps``;
  ``targeted=True`` means ``y`` holds the target labels; randomness comes only from ``generator`` (a CPU
  ``torch.Generator``, or torch's global one when None);
- checks its arguments before any work (:mod:`advlib.utils`'s validators): ``model`` an ``nn.Module`` of
  the images' dtype, ``x`` a float batch (N, C, H, W) of finite values in [0,1] (half precision refused),
  ``y`` 1-D integer labels of the same length and inside the model's classes (checked on the first
  logits the attack computes), ``eps``, step sizes and confidences finite and >= 0, counts whole numbers,
  ``norm``/``loss`` known; each failure is a ``TypeError``/``ValueError`` that says what was expected;
- answers ``eps = 0`` and an empty batch with a copy of ``x``, without running the algorithm;
- runs the algorithm on the model's device, in eval mode (each submodule's mode restored afterwards), with
  gradients enabled (also under an enclosing ``torch.no_grad()``), never modifying ``x`` or ``y``; on the
  CPU the model's plain strided convolutions with few input channels (an image's first layer) compute their
  input gradients by a forward convolution (:mod:`advlib.attacks.conv_gradient`: autograd's result up to
  rounding, their weights getting none);
- returns a detached tensor on ``x``'s device, clamped to [0,1] and, for an eps-bounded attack, to the
  eps-ball around ``x`` (Linf or L2).

The body of an attack holds its algorithm only: it receives ``x`` and ``y`` detached, on the model's
device, the model in eval mode, and every argument already checked.

Shared pieces:

- :func:`margin` is Carlini and Wagner's f_6 (2017, Sec. V.A): max(Z_y - max_{j != y} Z_j, -kappa)
  for an untargeted attack, max(max_{j != t} Z_j - Z_t, -kappa) for a targeted one. The other classes'
  maximum is taken with the true class masked to -inf, never by multiplying logits by a one-hot mask
  (which picks 0 instead of the largest logit when every logit is negative).
- :func:`dlr` is Croce and Hein's Difference of Logits Ratio (2020, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks", Eq. (5), and its targeted form Eq. (6)):
  the margin divided by a spread of the largest logits, so unchanged by shifting and by positively scaling
  the logits.
- :func:`project_linf` and :func:`project_l2` are the Euclidean projections onto the eps-ball around x,
  intersected with the box [0,1] (exact for Linf; for L2 ball then box, as in Madry et al. 2018).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import utils
from ..utils import eval_mode, model_device
from .conv_gradient import conv_input_gradients

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin", "dlr")

# Arguments the contract checks wherever an attack has them: reals finite and >= 0 (None allowed where
# that is the default), counts whole numbers >= the minimum.
REALS = ("eps", "alpha", "kappa")
COUNTS = {"steps": 0, "restarts": 1, "chunk": 1}

__all__ = ["LOSSES", "NORMS", "attack", "dlr", "eval_mode", "input_gradient", "keep_rows", "loss_on_logits",
           "margin", "model_device", "project_l2", "project_linf"]


def attack(ball: str | None = None, *, reals: tuple[str, ...] = (), positive: tuple[str, ...] = (),
           counts: Mapping[str, int] | None = None) -> Callable:
    """Make an algorithm ``body(model, x, y, *, ...)`` an attack that keeps the contract (module docstring).

    ``ball`` is ``"linf"`` or ``"l2"`` for an attack bounded by ``eps`` in that norm, ``"norm"`` when the
    attack's own ``norm`` argument says which, None for an unbounded (minimal-perturbation) attack. An
    attack whose ``eps`` may be None (a minimal-perturbation attack with an optional budget) is only
    clamped to the box when it is.
    Beyond the arguments checked wherever they appear (``eps``, ``alpha``, ``kappa``, ``steps``,
    ``restarts``, ``chunk``, ``norm``, ``loss``, ``targeted``, ``generator``), ``reals`` names more that must
    be finite and >= 0, ``positive`` more that must be finite and > 0, and ``counts`` maps more whole
    numbers to their minimum.
    """
    counts = {**COUNTS, **(counts or {})}

    def decorate(body: Callable) -> Callable:
        signature = inspect.signature(body)
        name = body.__name__

        @functools.wraps(body)
        def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *extra, **kwargs) -> torch.Tensor:
            if extra:
                raise TypeError(f"{name}() takes model, x and y by position and every other argument by keyword, "
                                f"e.g. {name}(model, x, y, eps=...); got {len(extra)} more positional arguments")
            unknown = sorted(set(kwargs) - set(signature.parameters))
            if unknown:
                known = [p for p in signature.parameters if p not in ("model", "x", "y")]
                raise TypeError(f"{name}() got unknown argument(s) {unknown}; it takes {known}")
            arguments = signature.bind(model, x, y, **kwargs)
            arguments.apply_defaults()
            options = dict(arguments.arguments)
            del options["model"], options["x"], options["y"]
            options = _check(model, x, y, options, reals, positive, counts)
            eps = options.get("eps")
            if len(x) == 0 or eps == 0:
                return x.detach().clone()
            device = model_device(model)
            x_dev, y_dev = x.detach().to(device), y.detach().to(device)
            hook = model.register_forward_hook(utils.label_hook(y_dev))
            try:
                with eval_mode(model), conv_input_gradients(model), torch.enable_grad():
                    x_adv = body(model, x_dev, y_dev, **options)
            finally:
                hook.remove()
            norm = options.get("norm") if ball == "norm" else ball
            if eps is None:  # an attack whose budget is optional (FAB) is unbounded without one
                norm = None
            x_adv = x_adv.detach()
            if norm == "linf":
                x_adv = project_linf(x_adv, x_dev, eps)
            elif norm == "l2":
                x_adv = project_l2(x_adv, x_dev, eps)
            else:
                x_adv = x_adv.clamp(0.0, 1.0)
            return x_adv.to(x.device)

        run.bounded = ball
        return run

    return decorate


def _check(model, x, y, options: dict, reals, positive, counts) -> dict:
    """The contract's checks of one call (see :func:`attack`); the options with numbers as plain floats and
    counts as ints (``steps=40.0`` runs as 40 steps)."""
    utils.check_model(model)
    utils.check_images(x)
    utils.check_model(model, x)
    utils.check_labels(y, len(x))
    options = dict(options)
    for name, value in options.items():
        if name in REALS or name in reals:
            if value is not None:
                options[name] = utils.check_real(name, value)
        elif name in positive:
            options[name] = utils.check_real(name, value, strict=True)
        elif name in counts:
            if value is not None:
                options[name] = utils.check_count(name, value, low=counts[name])
        elif name == "norm":
            utils.check_choice("norm", value, NORMS)
        elif name == "loss":
            utils.check_choice("loss", value, LOSSES)
        elif name == "generator":
            utils.check_generator(value)
        elif name == "targeted" and not isinstance(value, bool):
            raise TypeError(f"targeted must be True or False, got {value!r}")
    return options


def margin(logits: torch.Tensor, y: torch.Tensor, *, targeted: bool = False, kappa: float = 0.0) -> torch.Tensor:
    """Carlini and Wagner's margin f_6 per example (2017, Sec. V.A; to be minimised; <= 0 once the attack
    succeeds, -kappa at best).

    Untargeted: max(Z_y - max_{j != y} Z_j, -kappa). Targeted (y = target t): max(max_{j != t} Z_j - Z_t, -kappa).
    Unchanged by adding a constant to every logit.
    """
    own = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    diff = others - own if targeted else own - others
    return diff.clamp_min(-kappa)


def dlr(logits: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None) -> torch.Tensor:
    """Croce and Hein's Difference of Logits Ratio per example (2020, Eqs. (5) and (6)), to be *ascended*.

    With z the logits, y the true class and z_pi1 >= z_pi2 >= ... the logits sorted decreasingly::

        DLR(x, y)      = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)                 (Eq. 5)
        DLR_T(x, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)                 (Eq. 6)

    (``target=t`` gives the targeted form; ``y`` is then still the true class). Positive once x is
    misclassified (untargeted) or z_t > z_y (targeted). Unchanged by adding a constant to every logit and
    by multiplying them by a positive number, unlike the cross-entropy and the margin; the 1e-12 keeps
    the ratio finite when the largest logits tie (as in the authors' code). Needs 3 classes (4 targeted).
    """
    need = 3 if target is None else 4
    if logits.shape[1] < need:
        form = "untargeted" if target is None else "targeted"
        raise ValueError(f"the {form} DLR loss needs logits of at least {need} classes, got {logits.shape[1]}")
    top = logits.topk(need, dim=1).values
    own = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
        return (others - own) / (top[:, 0] - top[:, 2] + 1e-12)
    aimed = logits.gather(1, target[:, None])[:, 0]
    return (aimed - own) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def loss_on_logits(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce", *, targeted: bool = False) -> torch.Tensor:
    """Per-example loss an attack *ascends*: cross-entropy, minus the margin, or the DLR loss (:func:`dlr`);
    targeted attacks ascend minus the cross-entropy to the target (the margin already knows the direction).
    The targeted DLR loss needs the true class beside the target: call :func:`dlr` with ``target``."""
    if loss == "ce":
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if loss == "margin":
        return -margin(logits, y, targeted=targeted, kappa=float("inf"))
    if loss == "dlr":
        if targeted:
            raise ValueError("the targeted DLR loss needs the true class beside the target: use "
                             "core.dlr(logits, y_true, target=t), or advlib.attacks.apgd, which supplies it")
        return dlr(logits, y)
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


def keep_rows(keep: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per example, ``new`` where ``keep`` (bool, (N,)) holds and ``old`` elsewhere: ``torch.where`` over
    the rows, computed as ``torch.lerp(old, new, keep)``, which returns its ends exactly for the weights 0
    and 1 and is several times faster on a CPU (31 against 125 microseconds for 316 Fashion-MNIST images on
    one core). Both must be finite (images are): lerp's arithmetic turns an infinite end into NaN."""
    return torch.lerp(old, new, keep.to(new.dtype).view(-1, *[1] * (new.ndim - 1)))


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
