"""Plain arithmetic on a classifier's predictions: accuracy, perturbation sizes, success rates, intervals.

- :func:`predict`, :func:`correct`, :func:`accuracy`: the clean classifier, evaluated in batches on the
  model's device.
- :func:`perturbation_norms` (and :func:`l0_norm`, :func:`l2_norm`, :func:`linf_norm`): the sizes of
  perturbations in the three distances of Carlini and Wagner (2017, Sec. II.D).
- :func:`attack_success_rate`: the fraction of adversarial examples that reach their goal.
- :func:`confidence_interval`: the exact (Clopper-Pearson) 95% interval of a rate measured on n examples;
  :func:`clearly_above`: whether one rate lies above another beyond those intervals.

What runs an attack or a bound over a dataset (robust accuracy, the epsilon-robustness score, the
transfer matrix, the gradient-masking checks) is in :mod:`advlib.evaluate`.

Every function checks its inputs with :mod:`advlib.utils`' validators: images a float batch (N, C, H, W) of
finite values in [0, 1], labels 1-D integers of the same length and inside the model's classes (known from
its first logits), ``batch_size`` a whole number >= 1; each failure is a ``TypeError``/``ValueError`` that
says what was expected.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .smoothing import clopper_pearson_lower
from .utils import (
    check_classes,
    check_count,
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_real,
    eval_mode,
    model_device,
)

__all__ = ["accuracy", "attack_success_rate", "clearly_above", "confidence_interval", "correct", "l0_norm",
           "l2_norm", "linf_norm", "outcome_counts", "perturbation_norms", "predict"]


def _num_classes(logits: torch.Tensor, n: int) -> int:
    """The classes of a model's output: 2 for a one-logit perceptron (N, 1), else K after
    :func:`advlib.utils.check_logits`."""
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape == (n, 1):
        return 2
    return check_logits(logits, n)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, y: torch.Tensor | None = None,
             name: str = "x") -> torch.Tensor:
    """:func:`predict` after its checks; labels ``y``, when given, are checked against the model's classes as
    soon as the first logits are known."""
    check_model(model)
    check_images(x, name, allow_half=True, box=False)
    check_model(model, x)
    batch_size = check_count("batch_size", batch_size, low=1)
    device = model_device(model)
    labels = []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            logits = model(xb)
            classes = _num_classes(logits, len(xb))
            if start == 0 and y is not None:
                check_classes(y, classes)
            if classes == 2 and logits.shape[1] == 1:
                labels.append((logits[:, 0] > 0).long().cpu())
            else:
                labels.append(logits.argmax(dim=1).cpu())
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class(x) = argmax_i p_i(x) = argmax_i z_i(x) for each image (the classifier of Szegedy et al. 2013,
    Sec. 4.1; for a one-logit perceptron, Rosenblatt's rule: 1 if the logit > 0).

    Runs in batches on the model's device, in eval mode (the model's own mode is restored after);
    returns int64 labels on the CPU. ``x`` is a batch (N, C, H, W) of finite values of the model's dtype
    (half precision allowed for a half model): images in [0, 1], or noisy copies of them that leave it
    (randomized smoothing's x + N(0, sigma^2 I)); the model must return logits (N, K).
    """
    return _predict(model, x, batch_size)


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per example, Class(x) = y, Szegedy et al.'s (2013, Sec. 4.1) classifier against the label: a bool
    tensor (N,) on the CPU (see :func:`predict`).

    ``y`` must hold one 1-D integer label per image, each one of the model's classes: a column of labels
    (N, 1) is refused, not broadcast into an (N, N) table.
    """
    check_labels(y, len(x) if isinstance(x, torch.Tensor) else None)
    return _predict(model, x, batch_size, y) == y.cpu()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """The fraction of images whose predicted class equals the label, (1/N) sum_i [Class(x_i) = y_i]: one
    minus the test error that Szegedy et al. (2013, Table 1) and every later paper report."""
    check_labels(y, len(x) if isinstance(x, torch.Tensor) else None)
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined: x and y hold no examples")
    return correct(model, x, y, batch_size).float().mean().item()


def outcome_counts(successes, trials: int | None = None) -> tuple[int, int]:
    """``(successes, trials)`` from a count and its number of trials, or from a 1-D boolean (or 0/1) tensor of
    per-example outcomes (its sum and its length)."""
    if isinstance(successes, torch.Tensor):
        if trials is not None:
            raise TypeError("pass a tensor of per-example outcomes alone: trials is its length")
        if successes.ndim != 1:
            raise ValueError(f"per-example outcomes must be a 1-D tensor, got shape {tuple(successes.shape)}")
        return int(successes.bool().sum()), len(successes)
    if trials is None:
        raise TypeError("give the number of trials with the number of successes, or a tensor of outcomes")
    return successes, trials


def confidence_interval(successes, trials: int | None = None, level: float = 0.95) -> tuple[float, float]:
    """The exact two-sided ``level`` confidence interval of Clopper and Pearson (1934) for a rate measured as
    ``successes`` of ``trials`` (an accuracy, an error, a success rate): [B(alpha/2; k, n - k + 1),
    B(1 - alpha/2; k + 1, n - k + 1)] with alpha = 1 - level, B(q; a, b) the q quantile of Beta(a, b), and the
    bounds 0 at k = 0 and 1 at k = n. ``successes`` may instead be a 1-D boolean tensor of per-example outcomes
    (:func:`outcome_counts`).

    Both ends come from the one-sided bound :func:`advlib.smoothing.clopper_pearson_lower` (Cohen et al.
    2019's ``LowerConfBound``): the lower end at alpha/2, the upper end by symmetry, one minus the lower
    bound of the failures. The interval covers the true rate with probability at least ``level``.
    """
    successes, trials = outcome_counts(successes, trials)
    trials = check_count("trials", trials, low=1)
    successes = check_count("successes", successes)
    if successes > trials:
        raise ValueError(f"successes must lie in [0, trials = {trials}], got {successes}")
    level = check_real("level", level, strict=True, high=1)
    if level == 1:
        raise ValueError("level must lie in (0, 1), got 1: only the whole interval [0, 1] has confidence 1")
    alpha = (1 - level) / 2
    return clopper_pearson_lower(successes, trials, alpha), 1 - clopper_pearson_lower(trials - successes, trials, alpha)



def clearly_above(rate, other, level: float = 0.95) -> bool:
    """Whether one measured rate lies above another beyond sampling noise: the lower end of ``rate``'s
    ``level`` Clopper-Pearson interval (:func:`confidence_interval`) above the upper end of ``other``'s.

    Each of ``rate`` and ``other`` is a 1-D boolean (or 0/1) tensor of per-example outcomes or a pair
    ``(successes, trials)``. Non-overlapping 95% intervals are a conservative test (stricter than a two-sample
    test at 5%): what it calls apart is apart; what it does not may still differ. The book compares two
    rates in words only where this holds, or says that they do not separate.
    """
    low = confidence_interval(*_as_counts(rate), level=level)[0]
    high = confidence_interval(*_as_counts(other), level=level)[1]
    return low > high


def _as_counts(outcomes) -> tuple:
    """``(successes, trials)`` from a tensor of outcomes or from such a pair, for :func:`clearly_above`."""
    if isinstance(outcomes, torch.Tensor):
        return (outcomes,)
    if isinstance(outcomes, tuple | list) and len(outcomes) == 2:
        return tuple(outcomes)
    raise TypeError("expected a 1-D tensor of per-example outcomes or a pair (successes, trials), "
                    f"got {type(outcomes).__name__}")

# --- perturbation sizes -------------------------------------------------------------------------

def _perturbation(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    check_images(x, "x", allow_half=True)
    check_images(x_adv, "x_adv", allow_half=True)
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have one shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    if len(x) == 0:
        raise ValueError("no examples: x and x_adv are empty")
    return x_adv.to(x.device, torch.float32) - x.to(torch.float32)


def _check_delta(delta: torch.Tensor) -> None:
    """``TypeError``/``ValueError`` unless ``delta`` is a finite float batch of perturbations (N, C, H, W)."""
    if not isinstance(delta, torch.Tensor) or not delta.is_floating_point():
        got = f"a tensor of dtype {delta.dtype}" if isinstance(delta, torch.Tensor) else type(delta).__name__
        raise TypeError(f"delta must be a floating-point tensor of perturbations x_adv - x, got {got}")
    if delta.ndim != 4:
        raise ValueError(f"expected perturbations shaped (N, C, H, W), got shape {tuple(delta.shape)}")
    if delta.numel() and not bool(torch.isfinite(delta).all()):
        raise ValueError("delta holds values that are NaN or infinite; a perturbation of images in [0, 1] is finite")


def l0_norm(delta: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Per example of ``delta`` (N,C,H,W): the number of pixel positions (h, w) changed.

    A pixel counts as changed when any of its channels moved by more than ``tol`` (the L0 "distance"
    of Carlini and Wagner 2017, Sec. II.D, which counts pixels, not channel values; a tolerance keeps
    float round-off from counting). Returns a float tensor (N,).
    """
    _check_delta(delta)
    tol = check_real("tol", tol)
    return (delta.abs() > tol).any(dim=1).flatten(1).sum(dim=1).float()


def l2_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per example of ``delta`` (N,C,H,W): the Euclidean norm ||delta||_2 over all channel values (Carlini and
    Wagner 2017, Sec. II.D). Returns a float tensor (N,)."""
    _check_delta(delta)
    return delta.flatten(1).float().norm(dim=1)


def linf_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per example of ``delta`` (N,C,H,W): the largest change of any channel value, ||delta||_inf (Carlini and
    Wagner 2017, Sec. II.D; the budget of Goodfellow et al.'s and Madry et al.'s attacks). Returns a float
    tensor (N,)."""
    _check_delta(delta)
    return delta.flatten(1).abs().amax(dim=1).float()


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-6) -> dict[str, torch.Tensor]:
    """The sizes of the perturbations ``delta = x_adv - x``, per example, in the three distances that
    Carlini and Wagner (2017, Sec. II.D) use to compare attacks:

    - ``"l0"``: the number of pixel positions changed (a pixel is changed when any channel moved by
      more than ``tol``), see :func:`l0_norm`;
    - ``"l2"``: the Euclidean norm of delta over every channel value;
    - ``"linf"``: the largest change of any channel value.

    ``x`` and ``x_adv`` are batches of images in [0, 1] shaped (N,C,H,W); each entry of the dict is a float
    tensor (N,) on ``x``'s device (take ``.mean()`` for the average distortion).
    """
    delta = _perturbation(x, x_adv)
    return {"l0": l0_norm(delta, tol), "l2": l2_norm(delta), "linf": linf_norm(delta)}


# --- success --------------------------------------------------------------------------------------

def attack_success_rate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, targeted: bool = False,
                        x: torch.Tensor | None = None, batch_size: int = 1024) -> float:
    """The fraction of adversarial examples ``x_adv`` that reach the attack's goal on ``model`` (the success
    rate of Carlini and Wagner 2017, Sec. VI, Tables III-V).

    - untargeted (``y`` the true labels): the fraction misclassified, Class(x_adv) != y. With the clean
      images ``x``, only the examples the model classifies correctly on ``x`` are counted (the others
      need no attack), as Carlini and Wagner (2017) and most papers report it; ``nan`` when there are
      none.
    - targeted (``y`` the target labels): the fraction classified as their target, Class(x_adv) == t,
      over every example (``x`` is not used; choose targets other than the true labels).
    """
    if not isinstance(targeted, bool):
        raise TypeError(f"targeted must be True or False, got {targeted!r}")
    check_images(x_adv, "x_adv", allow_half=True)
    check_labels(y, len(x_adv))
    if len(y) == 0:
        raise ValueError("no examples: x_adv and y are empty")
    if x is not None:
        check_images(x, "x", allow_half=True)
        if x.shape != x_adv.shape:
            raise ValueError(f"x and x_adv must have one shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    predicted = _predict(model, x_adv, batch_size, y, name="x_adv")
    y = y.cpu()
    if targeted:
        return (predicted == y).float().mean().item()
    fooled = predicted != y
    if x is not None:
        right = _predict(model, x, batch_size) == y
        if not right.any():
            return math.nan
        fooled = fooled[right]
    return fooled.float().mean().item()
