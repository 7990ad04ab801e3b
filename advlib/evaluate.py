"""What runs attacks or bounds over a dataset, in batches on the model's device, with a progress bar.

- :func:`attack_batches`: an attack's adversarial images for a whole dataset, one batch at a time.
- :func:`robust_accuracy`: accuracy on an attack's outputs (the complement of the adversarial error).
- :func:`pgd_accuracy`: accuracy under Madry et al.'s PGD, the check adversarial training runs.
- :func:`accuracy_under_distance`: the accuracy at each budget eps implied by a minimal-perturbation
  attack (Carlini and Wagner's), from the distances of its outputs.
- :func:`robustness_score`: the epsilon-robustness score as far as a suite of attacks can tell (an
  upper bound: a point counts as robust until some attack breaks it).
- :func:`worst_margins`, :func:`certified_examples`: certified lower bounds over a dataset (the dual
  network, IBP, CROWN-IBP of :mod:`advlib.certify`), per example; the certified accuracy itself is
  :func:`advlib.certify.certified_accuracy`.
- :func:`transfer_matrix`: the error adversarial examples made on one model cause on others
  (Szegedy et al. 2013, Table 2, "cross-model generalization").
- :func:`gradient_masking_checks`: the warning signs of obfuscated gradients (Athalye, Carlini and
  Wagner 2018, Sec. 3.1): unbounded PGD failing, black-box beating white-box, accuracy flat in eps,
  zero input gradients.

An attack, for these functions, is any callable ``attack(model, x, y) -> x_adv``; bind its other
arguments by keyword with :func:`functools.partial`, e.g. ``partial(pgd, eps=0.1, alpha=0.01, steps=40)``.
Plain arithmetic on predictions (accuracy, norms, intervals) is in :mod:`advlib.metrics`.

Every function checks its inputs with :mod:`advlib.utils`' validators before any work: the model an
``nn.Module``, images a float batch (N, C, H, W) of finite values in [0, 1], labels 1-D integers of the same
length and inside the model's classes (checked on the first logits), eps finite and >= 0, counts whole
numbers, names known; each failure is a ``TypeError``/``ValueError`` that says what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from . import certify, metrics
from .attacks import core, nattack, pgd
from .utils import (
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
    model_device,
    progress,
)

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["MaskingChecks", "RobustnessScore", "TransferMatrix", "accuracy_under_distance", "attack_batches",
           "certified_examples", "gradient_masking_checks", "pgd_accuracy", "robust_accuracy", "robustness_score",
           "transfer_matrix", "worst_margins"]


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
    checked = []

    def check_labels_once(module, inputs, output):
        if not checked:
            checked.append(True)
            check_classes(y, check_logits(output))

    device = model_device(model)
    hook = model.register_forward_hook(check_labels_once)
    try:
        starts = range(0, len(x), batch_size)
        adversarial = []
        for start in progress(starts, desc=desc, unit="batch"):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            adversarial.append(_attacked(lambda m, a, b: attack(m, a, b, **kwargs), model, xb, yb).to(x.device))
    finally:
        hook.remove()
    return torch.cat(adversarial)


def robust_accuracy(model: nn.Module, attack: Attack, data, *, batch_size: int = 256,
                    desc: str = "robust accuracy") -> float:
    """The fraction of examples the model still classifies correctly after the attack.

    An example counts as robust when the model is right on the clean image *and* on the attacked one
    ``attack(model, x, y)``, so an example misclassified clean is never robust, and the identity attack
    gives the clean :func:`advlib.metrics.accuracy`. For an eps-bounded attack this is the empirical
    robust accuracy of Madry et al. (2018): one minus the adversarial error, an upper bound on the
    accuracy under every attack in that eps-ball.

    ``data`` is a DataLoader (any iterable of ``(x, y)`` batches) or an ``(x, y)`` pair of tensors,
    attacked ``batch_size`` examples at a time. Each batch is moved to the model's device; a tqdm bar
    shows the progress. ``attack`` is a callable ``attack(model, x, y) -> x_adv``, e.g.
    ``functools.partial(pgd, eps=0.1, alpha=0.01, steps=40)``.
    """
    check_model(model)
    _check_attack(attack)
    robust, seen = 0, 0
    for x, y, clean in _judged_batches(model, data, batch_size, desc):
        attacked = _correct(model, _attacked(attack, model, x, y), y)
        robust += int((clean & attacked).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("no examples: the loader yielded no batch")
    return robust / seen


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


# --- certified bounds over a dataset ------------------------------------------------------------

def _check_bound_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int,
                        methods: Sequence[str]) -> float:
    check_model(model)
    check_examples(x, y, batch_size)
    check_model(model, x)
    eps = check_real("eps", eps)
    for method in methods:
        check_choice("bound method", method, certify.METHODS)
    _check_classes_on_first_logits(model, x, y)
    return eps


@torch.no_grad()
def _lowest_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str) -> torch.Tensor:
    """min_{j != y} J_j(x) of one batch on the model's device, J the lower bounds of ``method`` on
    f_y - f_j over the ball (:func:`advlib.certify.margin_bounds`)."""
    device = model_device(model)
    xb, yb = x.to(device), y.to(device)
    bounds = certify.margin_bounds(model, xb, yb, eps, method=method)
    return bounds.scatter(1, yb[:, None], float("inf")).min(dim=1).values


def worst_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, method: str = "dual",
                  batch_size: int = 100, desc: str = "margin bounds") -> torch.Tensor:
    """Per example, a certified lower bound on the worst margin over the Linf eps-ball (within [0, 1]),
    min_{x'} min_{j != y} f_y(x') - f_j(x') >= min_{j != y} J_j(x), with J the bounds of ``method``:
    ``"dual"`` (Wong and Kolter 2018, Thm. 1, the dual network), ``"ibp"`` (Gowal et al. 2018) or
    ``"crown-ibp"`` (Zhang et al. 2020) (:func:`advlib.certify.margin_bounds`).

    A value > 0 certifies the example: no point of the ball is classified other than y. Returns a float
    tensor (N,) on ``x``'s device; the bounds run ``batch_size`` examples at a time on the model's device,
    in eval mode, without gradients, with a tqdm bar. The fraction certified alone is
    :func:`advlib.certify.certified_accuracy`.
    """
    eps = _check_bound_inputs(model, x, y, eps, batch_size, (method,))
    lowest = []
    with eval_mode(model):
        for start in progress(range(0, len(x), batch_size), desc=desc, unit="batch"):
            lowest.append(_lowest_margin(model, x[start:start + batch_size], y[start:start + batch_size], eps,
                                         method).to(x.device))
    return torch.cat(lowest)


def certified_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                       methods: Sequence[str] = ("ibp", "crown-ibp", "dual"), candidates: torch.Tensor | None = None,
                       batch_size: int = 100, desc: str = "certifying") -> torch.Tensor:
    """Per example, whether any bound of ``methods`` certifies it at ``eps`` (every margin bound
    J_j, j != y, > 0: Wong and Kolter 2018, Thm. 1; Gowal et al. 2018; Zhang et al. 2020), as a bool tensor
    (N,) on ``x``'s device.

    The bounds are tried in the order given, cheapest first by default, each only on the examples not yet
    certified and, when ``candidates`` (a bool tensor (N,)) is given, only among those: an example that an
    attack broke cannot be certified, so the flags of :func:`robustness_score` (``robust``) save bounding
    it. ``batch_size`` examples at a time on the model's device, in eval mode, with a tqdm bar.
    """
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty sequence of bound methods from {certify.METHODS}, "
                         f"got {methods!r}")
    eps = _check_bound_inputs(model, x, y, eps, batch_size, methods)
    if candidates is None:
        candidates = torch.ones(len(x), dtype=torch.bool)
    elif not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.bool or candidates.shape != (len(x),):
        got = f"{candidates.dtype} {tuple(candidates.shape)}" if isinstance(candidates, torch.Tensor) \
            else type(candidates).__name__
        raise ValueError(f"candidates must be None or a bool tensor with one flag per example ({len(x)},), got {got}")
    proved = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    candidates = candidates.to(x.device)
    with eval_mode(model), progress(total=len(methods), desc=desc, unit="bound") as bar:
        for method in methods:
            todo = (candidates & ~proved).nonzero().flatten()
            for index in todo.split(batch_size):
                proved[index] = (_lowest_margin(model, x[index], y[index], eps, method) > 0).to(x.device)
            bar.update(1)
    return proved


# --- transfer between models --------------------------------------------------------------------

class TransferMatrix(NamedTuple):
    """The result of :func:`transfer_matrix`.

    ``errors[i, j]``: the error rate of target model ``targets[j]`` on the adversarial examples made on
    source model ``sources[i]``; ``distortion[i]``: their mean distortion, Szegedy et al.'s
    sqrt(sum_k (x'_k - x_k)^2 / n) over the n channel values of an image.
    """

    errors: torch.Tensor  # (len(sources), len(targets)), float64, on the CPU
    sources: list[str]  # row names
    targets: list[str]  # column names
    distortion: torch.Tensor  # (len(sources),)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{source: {target: error}}``, e.g. for ``pandas.DataFrame(result.to_dict()).T``."""
        return {s: {t: float(self.errors[i, j]) for j, t in enumerate(self.targets)}
                for i, s in enumerate(self.sources)}


def _check_models(name: str, models) -> None:
    if not isinstance(models, Mapping):
        raise TypeError(f"{name} must be a mapping name -> model, got {type(models).__name__}")
    if not models:
        raise ValueError(f"{name} must hold at least one named model")
    for key, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name}[{key!r}] must be a torch.nn.Module returning logits, got {type(model).__name__}")


def transfer_matrix(sources: Mapping[str, nn.Module], targets: Mapping[str, nn.Module],
                    attack: Attack | Mapping[str, Attack], x: torch.Tensor, y: torch.Tensor, *,
                    batch_size: int = 256, desc: str = "transfer") -> TransferMatrix:
    """How adversarial examples transfer between models (Szegedy et al. 2013, Sec. 4.3 and Table 2).

    For each source model, ``attack(source, x, y)`` makes the adversarial examples once (in batches of
    ``batch_size``), and every target model classifies them: entry ``[i, j]`` of the returned
    ``errors`` is the error rate, Class_j(x_adv) != y, of target j on the examples made on source i.
    When a model is both source i and target j, the entry is its white-box error under the attack
    (the diagonal of Szegedy's table, 100% for an attack that always succeeds).

    ``attack`` is a callable ``attack(model, x, y) -> x_adv``, or a mapping from each source's name to
    its own callable (rows that add noise instead of attacking, like Szegedy's Gaussian-noise rows,
    take any model and ignore it). ``y`` holds the true labels. Returns a :class:`TransferMatrix`
    ``(errors, sources, targets, distortion)``.
    """
    _check_models("sources", sources)
    _check_models("targets", targets)
    check_examples(x, y, batch_size)
    if isinstance(attack, Mapping):
        missing = [name for name in sources if name not in attack]
        if missing:
            raise ValueError(f"no attack given for the sources {missing}")
        attacks = dict(attack)
        for name in sources:
            _check_attack(attacks[name], f"attack[{name!r}]")
    else:
        _check_attack(attack)
        attacks = {name: attack for name in sources}
    source_names, target_names = list(sources), list(targets)
    wrong = torch.zeros(len(source_names), len(target_names), dtype=torch.float64)
    distortion = torch.zeros(len(source_names), dtype=torch.float64)
    starts = range(0, len(x), batch_size)
    bar = progress(total=len(starts) * len(source_names), desc=desc, unit="batch")
    with bar:
        for start in starts:
            yb = y[start:start + batch_size]
            for i, name in enumerate(source_names):
                source = sources[name]
                device = model_device(source)
                xb = x[start:start + batch_size].to(device)
                x_adv = _attacked(attacks[name], source, xb, yb.to(device))
                delta = (x_adv.float() - xb.float()).flatten(1)
                distortion[i] += delta.pow(2).mean(dim=1).sqrt().sum().item()
                for j, target_name in enumerate(target_names):
                    wrong[i, j] += int((~_correct(targets[target_name], x_adv, yb)).sum())
                bar.update(1)
    return TransferMatrix(wrong / len(x), source_names, target_names, distortion / len(x))


# --- gradient masking ---------------------------------------------------------------------------

class MaskingChecks(NamedTuple):
    """The result of :func:`gradient_masking_checks`.

    ``masked``: whether any check flags; ``flags``: per check, whether it flags (``"unbounded"``,
    ``"black_box"``, ``"eps_growth"``, ``"zero_gradient"``); ``clean_accuracy``; ``pgd_accuracy``: eps ->
    accuracy under PGD, over the eps grid (the last entry eps = 1, the whole box); ``unbounded_success``:
    the fraction of correctly classified examples that PGD at eps = 1 fools; ``black_box_accuracy``: the
    accuracy under the black-box attack at eps; ``zero_gradient``: the fraction of examples whose input
    gradient of the cross-entropy is (near) zero.
    """

    masked: bool
    flags: dict[str, bool]
    clean_accuracy: float
    pgd_accuracy: dict[float, float]
    unbounded_success: float
    black_box_accuracy: float
    zero_gradient: float


def gradient_masking_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                            steps: int = 20, black_box: Attack | None = None, tolerance: float = 0.05,
                            seed: int = 0) -> MaskingChecks:
    """Warning signs that a defense masks (obfuscates) gradients instead of being robust: the checks of
    Athalye, Carlini and Wagner (2018, Sec. 3.1, "Identifying obfuscated and masked gradients") and Carlini
    et al. (2019, "On evaluating adversarial robustness", Sec. 5), on the examples (x, y):

    - ``"unbounded"``: PGD with an unbounded budget, eps = 1 (the whole box [0,1]), fools fewer than
      1 - ``tolerance`` of the correctly classified examples. An unbounded attack must always succeed;
    - ``"black_box"``: a gradient-free attack (``black_box(model, x, y)``, by default :func:`NATTACK
      <advlib.attacks.nattack>` at eps, population 50, 200 steps) leaves an accuracy more than
      ``tolerance`` below white-box PGD's at eps. A black-box attack should be weaker than a white-box one.
      For a randomized model, pass one that queries through EOT with a confidence (:func:`advlib.attacks.nattack`
      says why), ``lambda m, x, y: nattack(eot(m, 8, average="probs"), x, y, eps=eps, kappa=8)``;
    - ``"eps_growth"``: PGD accuracy does not fall as eps grows, over eps/2, eps, 2 eps, 4 eps (those below
      1) and 1: it rises by more than ``tolerance`` from one eps to the next, or at 4 eps (or the largest
      below 1) it still keeps more than half the clean accuracy, flat;
    - ``"zero_gradient"``: the cross-entropy's gradient with respect to the input is (numerically) zero,
      largest entry <= 1e-12, on more than half of the examples (shattered gradients).

    PGD is Linf, ``steps`` steps of 2.5 eps' / steps from a random start at each eps' of the grid (Madry et
    al.'s, :func:`advlib.attacks.pgd`), seeded by ``seed``. A flag is a warning, not a proof: ``masked`` is
    whether any check flags. An undefended model passes every check; a defense that only masks gradients
    (:mod:`advlib.defenses.masking`) fails some. Returns a :class:`MaskingChecks`.
    """
    check_model(model)
    check_examples(x, y)
    eps = check_real("eps", eps, strict=True, high=1)
    if eps == 1:
        raise ValueError(f"eps must lie in (0, 1) (the checks compare it with the unbounded eps = 1), got {eps:g}")
    steps = check_count("steps", steps, low=1)
    tolerance = check_real("tolerance", tolerance, high=1)
    seed = check_count("seed", seed)
    if black_box is not None:
        _check_attack(black_box, "black_box")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    if black_box is None:
        def black_box(model, x, y):
            return nattack(model, x, y, eps=eps, popsize=50, steps=200, generator=torch.Generator().manual_seed(seed))

    clean = _correct(model, x, y)
    clean_accuracy = clean.float().mean().item()
    grid = sorted({e for e in (eps / 2, eps, 2 * eps, 4 * eps) if e < 1}) + [1.0]
    pgd_accuracy, pgd_correct = {}, {}
    for e in grid:
        generator = torch.Generator().manual_seed(seed)
        x_adv = pgd(model, x, y, eps=e, alpha=2.5 * e / steps, steps=steps, generator=generator)
        pgd_correct[e] = clean & _correct(model, x_adv, y)
        pgd_accuracy[e] = pgd_correct[e].float().mean().item()
    n_clean = int(clean.sum())
    unbounded_success = 1 - int(pgd_correct[1.0].sum()) / n_clean if n_clean else 1.0
    black_box_accuracy = (clean & _correct(model, _attacked(black_box, model, x, y), y)).float().mean().item()
    with eval_mode(model):
        grad, _ = core.input_gradient(model, x, y)
    zero_gradient = (grad.flatten(1).abs().amax(dim=1) <= 1e-12).float().mean().item()

    accuracies = [pgd_accuracy[e] for e in grid]
    rises = any(b > a + tolerance for a, b in zip(accuracies, accuracies[1:], strict=False))
    flat = accuracies[-2] > 0.5 * clean_accuracy  # at 4 eps, or the largest eps of the grid below 1
    flags = {"unbounded": unbounded_success < 1 - tolerance,
             "black_box": black_box_accuracy < pgd_accuracy[eps] - tolerance,
             "eps_growth": rises or flat,
             "zero_gradient": zero_gradient > 0.5}
    return MaskingChecks(masked=any(flags.values()), flags=flags, clean_accuracy=clean_accuracy,
                         pgd_accuracy=pgd_accuracy, unbounded_success=unbounded_success,
                         black_box_accuracy=black_box_accuracy, zero_gradient=zero_gradient)
