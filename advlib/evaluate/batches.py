"""Attacks run over a dataset in batches: the adversarial images, robust accuracy, the accuracy a
minimal-perturbation attack implies at each budget, and the epsilon-robustness score of a suite of attacks."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .. import metrics
from ..attacks import pgd
from ..utils import (
    check_choice,
    check_classes,
    check_count,
    check_examples,
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_real,
    eval_mode,
    label_hook,
    model_device,
    progress,
)

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# --- shared checks and steps --------------------------------------------------------------------

def _check_attack(attack, name: str = "attack") -> None:
    if not callable(attack):
        raise TypeError(f"{name} must be a callable attack(model, x, y) -> x_adv, e.g. "
                        f"functools.partial(pgd, eps=0.1, alpha=0.01, steps=40); got {type(attack).__name__}")


def _check_classes_on_first_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Labels ``y`` inside the model's classes, read from its logits on the first image (one forward pass)."""
    if len(x):
        with torch.no_grad(), eval_mode(model):
            logits = model(x[:1].to(model_device(model)))
        check_classes(y, check_logits(logits, 1))


def _batches(data, batch_size: int) -> tuple[Iterable, int | None]:
    """``(iterable of (x, y) batches, number of batches or None)`` from a DataLoader (any iterable of
    ``(x, y)`` pairs) or from one ``(x, y)`` pair of tensors cut into ``batch_size`` pieces."""
    batch_size = check_count("batch_size", batch_size, low=1)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        check_examples(x, y, batch_size)
        starts = range(0, len(x), batch_size)
        return ((x[s:s + batch_size], y[s:s + batch_size]) for s in starts), len(starts)
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(f"expected a DataLoader of (x, y) batches or an (x, y) pair of tensors, "
                        f"got {type(data).__name__}")
    try:
        total = len(data)
    except TypeError:
        total = None
    return data, total


def _attacked(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``attack(model, x, y)``, checked to return images of ``x``'s shape, finite and in [0, 1]."""
    x_adv = attack(model, x, y)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise ValueError(f"the attack must return a tensor shaped like its input {tuple(x.shape)}, got {got}")
    check_images(x_adv, "the attack's output", allow_half=True)
    return x_adv.detach()


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean per example (on the CPU): is the model's prediction on ``x`` the label ``y``? (One batch.)"""
    return metrics.correct(model, x, y, batch_size=max(1, len(x)))


def _judged_batches(model: nn.Module, data, batch_size: int, desc: str):
    """``(x, y, clean)`` per batch of ``data`` (see :func:`_batches`), x and y on the model's device and
    ``clean`` whether the model classifies each example correctly (on the CPU), with a progress bar."""
    batches, total = _batches(data, batch_size)
    device = model_device(model)
    for x, y in progress(batches, total=total, desc=desc, unit="batch"):
        check_images(x, "a batch's images")
        check_labels(y, len(x), "a batch's labels")
        x, y = x.to(device), y.to(device)
        yield x, y, _correct(model, x, y)


# --- an attack over a dataset -------------------------------------------------------------------

def attack_batches(attack: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500,
                   desc: str = "attack", **kwargs) -> torch.Tensor:
    """``attack(model, x, y, **kwargs)`` over a whole dataset, ``batch_size`` examples at a time: the
    adversarial images, concatenated in the order of ``x`` and returned on ``x``'s device.

    Each batch goes to the model's device before the attack (so a dataset on the CPU is attacked on the GPU
    without holding it there), and a tqdm bar shows the progress. For an attack that treats each example
    on its own (FGSM, PGD with a seeded generator, Carlini and Wagner's), the result is the attack on the
    whole batch at once, at the memory cost of one batch. ``kwargs`` go to the attack by keyword, e.g.
    ``attack_batches(fgsm, model, x, y, eps=0.1)`` or ``attack_batches(pgd, model, x, t, eps=0.1, alpha=0.01,
    steps=40, targeted=True)``. The labels are checked against the model's classes on the first logits the
    attack computes.
    """
    _check_attack(attack)
    check_model(model)
    check_examples(x, y, batch_size, allow_empty=True)
    if len(x) == 0:
        return x.detach().clone()
    device = model_device(model)
    hook = model.register_forward_hook(label_hook(y))
    try:
        starts = range(0, len(x), batch_size)
        adversarial = []
        for start in progress(starts, desc=desc, unit="batch"):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            adversarial.append(_attacked(lambda m, a, b: attack(m, a, b, **kwargs), model, xb, yb).to(x.device))
    finally:
        hook.remove()
    return torch.cat(adversarial)


def robust_examples(model: nn.Module, attack: Attack, data, *, batch_size: int = 256,
                    desc: str = "robust accuracy") -> torch.Tensor:
    """Per example, whether the model still classifies it correctly after the attack: a 1-D boolean tensor
    on the CPU, in the order of ``data``; its mean is :func:`robust_accuracy`, and it is what
    :func:`advlib.metrics.confidence_interval` and :func:`advlib.metrics.clearly_above` take.

    An example counts as robust when the model is right on the clean image *and* on the attacked one
    ``attack(model, x, y)``, so an example misclassified clean is never robust, and the identity attack
    gives the clean :func:`advlib.metrics.correct`. For an eps-bounded attack this is the empirical
    robustness of Madry et al. (2018): an upper bound on robustness to every attack in that eps-ball.

    ``data`` is a DataLoader (any iterable of ``(x, y)`` batches) or an ``(x, y)`` pair of tensors,
    attacked ``batch_size`` examples at a time. Each batch is moved to the model's device; a tqdm bar
    shows the progress. ``attack`` is a callable ``attack(model, x, y) -> x_adv``, e.g.
    ``functools.partial(pgd, eps=0.1, alpha=0.01, steps=40)``.
    """
    check_model(model)
    _check_attack(attack)
    robust = [(clean & _correct(model, _attacked(attack, model, x, y), y)).cpu()
              for x, y, clean in _judged_batches(model, data, batch_size, desc)]
    if not robust:
        raise ValueError("no examples: the loader yielded no batch")
    return torch.cat(robust)


def robust_accuracy(model: nn.Module, attack: Attack, data, *, batch_size: int = 256,
                    desc: str = "robust accuracy") -> float:
    """The fraction of examples the model still classifies correctly after the attack (the mean of
    :func:`robust_examples`, whose docstring says what counts): one minus the adversarial error of Madry
    et al. (2018), an upper bound on the accuracy under every attack in the attack's eps-ball.
    """
    return robust_examples(model, attack, data, batch_size=batch_size, desc=desc).double().mean().item()


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10,
                 alpha: float | None = None, seed: int = 0) -> float:
    """Accuracy of ``model`` on the outputs of Linf PGD (Madry et al. 2018, Eq. (2.1)'s inner maximisation:
    a uniformly random start in the eps-ball, then ``steps`` signed-gradient steps of ``alpha``, eps/4 by
    default, each projected back onto the ball and [0, 1]), the random start drawn from a generator seeded
    by ``seed``. The check of Wong, Rice and Kolter's guard against catastrophic overfitting (2020,
    Sec. 5.2); on a whole dataset, :func:`robust_accuracy` runs in batches."""
    check_model(model)
    check_examples(x, y)
    eps = check_real("eps", eps)
    alpha = eps / 4 if alpha is None else check_real("alpha", alpha)
    seed = check_count("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    x_adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=generator)
    return metrics.accuracy(model, x_adv, y)


def accuracy_under_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps, *,
                            norm: str = "linf", batch_size: int = 1024) -> float | list[float]:
    """The robust accuracy at budget ``eps`` implied by a minimal-perturbation attack's outputs ``x_adv``
    (Carlini and Wagner 2017, whose attacks look for the closest adversarial example instead of the worst
    one in a fixed ball): an example counts as robust when the model classifies ``x`` correctly and the
    attack found no adversarial example within eps, i.e. Class(x_adv) = y or ||x_adv - x|| > eps.

    One attack run thus gives the whole curve of accuracy against eps: ``eps`` is a number (returns a
    float) or a sequence of numbers (returns a list). ``norm`` is ``"linf"``, ``"l2"`` or ``"l0"``
    (:func:`advlib.metrics.perturbation_norms`). An upper bound on the true robust accuracy, as for every
    attack.
    """
    check_model(model)
    check_examples(x, y, batch_size)
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x and x_adv must have one shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    check_choice("norm", norm, ("linf", "l2", "l0"))
    single = isinstance(eps, numbers.Real) or (isinstance(eps, torch.Tensor) and eps.ndim == 0)
    if not single and not isinstance(eps, (Sequence, torch.Tensor)):
        raise TypeError(f"eps must be a number or a sequence of numbers, got {type(eps).__name__}")
    budgets = [check_real("eps", e) for e in ([eps] if single else list(eps))]
    right = metrics.correct(model, x, y, batch_size)
    fooled = right & ~metrics.correct(model, x_adv, y, batch_size)
    distances = metrics.perturbation_norms(x, x_adv)[norm].cpu()
    accuracies = [(right & ~(fooled & (distances <= e))).sum().item() / len(y) for e in budgets]
    return accuracies[0] if single else accuracies


# --- a suite of attacks -------------------------------------------------------------------------

class RobustnessScore(NamedTuple):
    """The result of :func:`robustness_score`.

    ``upper_bound``: the fraction of examples classified correctly with no attack of the suite finding
    an adversarial example within the eps-ball; ``accuracy``: the clean accuracy (the score's own upper
    bound); ``broken``: per attack, the fraction of examples it broke within the ball; ``robust``: per
    example, whether it survived every attack (bool, on the CPU); ``correct``: per example, whether the
    model classifies the clean image correctly (bool, on the CPU).
    """

    upper_bound: float
    accuracy: float
    broken: dict[str, float]
    robust: torch.Tensor
    eps: float
    norm: str
    correct: torch.Tensor


def robustness_score(model: nn.Module, attacks: Mapping[str, Attack], data, eps: float, *, norm: str = "linf",
                     batch_size: int = 256, desc: str = "robustness score") -> RobustnessScore:
    """The epsilon-robustness score of ``model``: the fraction of examples (x, y) on which the model is
    right at every point of the ball {x' in [0,1]^n : ||x' - x|| <= eps} (``norm`` ``"linf"`` or ``"l2"``).

    No attack can prove that a point is robust, only that it is not. So the score is estimated from above:
    an example counts as robust when the model classifies it correctly and *no* attack of ``attacks``
    (a mapping name -> ``attack(model, x, y)``) returns an image inside the ball that the model
    misclassifies; outputs outside the ball do not count (so minimal-perturbation attacks such as
    Carlini-Wagner's, whose output may lie farther than eps, can join the suite). The stronger the
    suite, the tighter the bound (Carlini and Wagner 2017, Sec. VII: evaluate against the strongest
    attacks); certified lower bounds come from :mod:`advlib.certify` (:func:`certified_examples`). ``data``
    is as for :func:`robust_accuracy`; the attacks run in the order of the mapping, on each batch in turn.
    """
    check_model(model)
    if not isinstance(attacks, Mapping):
        raise TypeError(f"attacks must be a mapping name -> attack(model, x, y), got {type(attacks).__name__}")
    if not attacks:
        raise ValueError("attacks is empty: give at least one attack, e.g. {'PGD': partial(pgd, ...)}")
    for name, attack in attacks.items():
        _check_attack(attack, f"attacks[{name!r}]")
    eps = check_real("eps", eps)
    norms = {"linf": metrics.linf_norm, "l2": metrics.l2_norm}
    check_choice("norm", norm, tuple(norms))
    correct, robust, broken = [], [], {name: 0 for name in attacks}
    for x, y, clean in _judged_batches(model, data, batch_size, desc):
        survived = clean.clone()
        for name, attack in attacks.items():
            x_adv = _attacked(attack, model, x, y)
            delta = x_adv.float() - x.float()
            inside = (norms[norm](delta) <= eps * (1 + 1e-5) + 1e-6).cpu()
            fooled = clean & inside & ~_correct(model, x_adv, y)
            broken[name] += int(fooled.sum())
            survived &= ~fooled
        correct.append(clean)
        robust.append(survived)
    if not correct:
        raise ValueError("no examples: the loader yielded no batch")
    correct, robust = torch.cat(correct), torch.cat(robust)
    n = len(correct)
    return RobustnessScore(upper_bound=int(robust.sum()) / n, accuracy=int(correct.sum()) / n,
                           broken={name: count / n for name, count in broken.items()}, robust=robust,
                           eps=eps, norm=norm, correct=correct)
