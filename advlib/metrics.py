"""How well a classifier does, clean and under attack, evaluated in batches on the model's device.

- :func:`predict`, :func:`accuracy`: the clean classifier.
- :func:`robust_accuracy`: accuracy on an attack's outputs (the complement of the adversarial error).
- :func:`robustness_score`: the epsilon-robustness score as far as a suite of attacks can tell (an
  upper bound: a point counts as robust until some attack breaks it).
- :func:`perturbation_norms` (and :func:`l0_norm`, :func:`l2_norm`, :func:`linf_norm`): the sizes of
  perturbations in the three distances of Carlini and Wagner (2017, Sec. II.D).
- :func:`attack_success_rate`: the fraction of attacks that reach their goal.
- :func:`transfer_matrix`: the error adversarial examples made on one model cause on others
  (Szegedy et al. 2013, Table 2, "cross-model generalization").
- :func:`gradient_masking_checks`: the warning signs of obfuscated gradients (Athalye, Carlini and
  Wagner 2018, Sec. 3.1): unbounded PGD failing, black-box beating white-box, accuracy flat in eps,
  zero input gradients.

An attack, for these functions, is any callable ``attack(model, x, y) -> x_adv``; bind its other
arguments with :func:`functools.partial`, e.g. ``partial(pgd, eps=0.1, alpha=0.01, steps=40)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import torch
from torch import nn

from .utils import check_examples, eval_mode, model_device, progress

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class(x) = argmax_i p_i(x) for each image (for a one-logit perceptron: 1 if the logit > 0).

    Runs in batches on the model's device, in eval mode (the model's own mode is restored after);
    returns int64 labels on the CPU.
    """
    device = model_device(model)
    labels = []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(device))
            if logits.shape[1] == 1:
                labels.append((logits[:, 0] > 0).long().cpu())
            else:
                labels.append(logits.argmax(dim=1).cpu())
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """The fraction of images whose predicted class equals the label."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return (predict(model, x, batch_size) == y.cpu()).float().mean().item()


# --- under attack -------------------------------------------------------------------------------

def _batches(data, batch_size: int) -> tuple[Iterable, int | None]:
    """``(iterable of (x, y) batches, number of batches or None)`` from a DataLoader (any iterable of
    ``(x, y)`` pairs) or from one ``(x, y)`` pair of tensors cut into ``batch_size`` pieces."""
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
    """``attack(model, x, y)``, checked to return images of ``x``'s shape."""
    x_adv = attack(model, x, y)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise ValueError(f"the attack must return a tensor shaped like its input {tuple(x.shape)}, got {got}")
    return x_adv.detach()


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean per example (on the CPU): is the model's prediction on ``x`` the label ``y``?"""
    return predict(model, x, batch_size=max(1, len(x))) == y.cpu()


def _judged_batches(model: nn.Module, data, batch_size: int, desc: str):
    """``(x, y, clean)`` per batch of ``data`` (see :func:`_batches`), x and y on the model's device and
    ``clean`` whether the model classifies each example correctly (on the CPU), with a progress bar."""
    batches, total = _batches(data, batch_size)
    device = model_device(model)
    for x, y in progress(batches, total=total, desc=desc, unit="batch"):
        if len(x) != len(y):
            raise ValueError(f"a batch holds {len(x)} images but {len(y)} labels")
        x, y = x.to(device), y.to(device)
        yield x, y, _correct(model, x, y)


def robust_accuracy(model: nn.Module, attack: Attack, data, *, batch_size: int = 256,
                    desc: str = "robust accuracy") -> float:
    """The fraction of examples the model still classifies correctly after the attack.

    An example counts as robust when the model is right on the clean image *and* on the attacked one
    ``attack(model, x, y)``, so an example misclassified clean is never robust, and the identity attack
    gives the clean :func:`accuracy`. For an eps-bounded attack this is the empirical robust accuracy of
    Madry et al. (2018): one minus the adversarial error, an upper bound on the accuracy under every
    attack in that eps-ball.

    ``data`` is a DataLoader (any iterable of ``(x, y)`` batches) or an ``(x, y)`` pair of tensors,
    attacked ``batch_size`` examples at a time. Each batch is moved to the model's device; a tqdm bar
    shows the progress. ``attack`` is a callable ``attack(model, x, y) -> x_adv``, e.g.
    ``functools.partial(pgd, eps=0.1, alpha=0.01, steps=40)``.
    """
    robust, seen = 0, 0
    for x, y, clean in _judged_batches(model, data, batch_size, desc):
        attacked = _correct(model, _attacked(attack, model, x, y), y)
        robust += int((clean & attacked).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("no examples: the loader yielded no batch")
    return robust / seen


class RobustnessScore(NamedTuple):
    """The result of :func:`robustness_score`.

    ``upper_bound``: the fraction of examples classified correctly with no attack of the suite finding
    an adversarial example within the eps-ball; ``accuracy``: the clean accuracy (the score's own upper
    bound); ``broken``: per attack, the fraction of examples it broke within the ball; ``robust``: per
    example, whether it survived every attack (bool, on the CPU).
    """

    upper_bound: float
    accuracy: float
    broken: dict[str, float]
    robust: torch.Tensor
    eps: float
    norm: str


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
    attacks); certified lower bounds come from :mod:`advlib.certify`. ``data`` is as for
    :func:`robust_accuracy`.
    """
    if not attacks:
        raise ValueError("attacks is empty: give at least one attack, e.g. {'PGD': partial(pgd, ...)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    norms = {"linf": linf_norm, "l2": l2_norm}
    if norm not in norms:
        raise ValueError(f"unknown norm {norm!r}; expected one of {tuple(norms)}")
    correct, robust, broken = [], [], {name: 0 for name in attacks}
    for x, y, clean in _judged_batches(model, data, batch_size, desc):
        survived = clean.clone()
        for name, attack in attacks.items():
            x_adv = _attacked(attack, model, x, y)
            inside = (norms[norm](_perturbation(x, x_adv)) <= eps * (1 + 1e-5) + 1e-6).cpu()
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
                           eps=eps, norm=norm)


# --- perturbation sizes -------------------------------------------------------------------------

def _perturbation(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not isinstance(x_adv, torch.Tensor):
        raise TypeError("x and x_adv must be tensors of images")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have one shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    if x.ndim != 4:
        raise ValueError(f"expected batches of images shaped (N, C, H, W), got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("no examples: x and x_adv are empty")
    return x_adv.to(x.device, torch.float32) - x.to(torch.float32)


def l0_norm(delta: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Per example of ``delta`` (N,C,H,W): the number of pixel positions (h, w) changed.

    A pixel counts as changed when any of its channels moved by more than ``tol`` (the L0 "distance"
    of Carlini and Wagner 2017, Sec. II.D, which counts pixels, not channel values; a tolerance keeps
    float round-off from counting). Returns a float tensor (N,).
    """
    if delta.ndim != 4:
        raise ValueError(f"expected perturbations shaped (N, C, H, W), got shape {tuple(delta.shape)}")
    return (delta.abs() > tol).any(dim=1).flatten(1).sum(dim=1).float()


def l2_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per example: the Euclidean norm ||delta||_2 over all channel values. Returns a float tensor (N,)."""
    return delta.flatten(1).float().norm(dim=1)


def linf_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per example: the largest change of any channel value, ||delta||_inf. Returns a float tensor (N,)."""
    return delta.flatten(1).abs().amax(dim=1).float()


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-6) -> dict[str, torch.Tensor]:
    """The sizes of the perturbations ``delta = x_adv - x``, per example, in the three distances that
    Carlini and Wagner (2017, Sec. II.D) use to compare attacks:

    - ``"l0"``: the number of pixel positions changed (a pixel is changed when any channel moved by
      more than ``tol``), see :func:`l0_norm`;
    - ``"l2"``: the Euclidean norm of delta over every channel value;
    - ``"linf"``: the largest change of any channel value.

    ``x`` and ``x_adv`` are batches shaped (N,C,H,W); each entry of the dict is a float tensor (N,)
    on ``x``'s device (take ``.mean()`` for the average distortion).
    """
    delta = _perturbation(x, x_adv)
    return {"l0": l0_norm(delta, tol), "l2": l2_norm(delta), "linf": linf_norm(delta)}


# --- success and transfer -----------------------------------------------------------------------

def attack_success_rate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, targeted: bool = False,
                        x: torch.Tensor | None = None, batch_size: int = 1024) -> float:
    """The fraction of adversarial examples ``x_adv`` that reach the attack's goal on ``model``.

    - untargeted (``y`` the true labels): the fraction misclassified, Class(x_adv) != y. With the clean
      images ``x``, only the examples the model classifies correctly on ``x`` are counted (the others
      need no attack), as Carlini and Wagner (2017) and most papers report it; ``nan`` when there are
      none.
    - targeted (``y`` the target labels): the fraction classified as their target, Class(x_adv) == t,
      over every example (``x`` is not used; choose targets other than the true labels).
    """
    if len(x_adv) != len(y):
        raise ValueError(f"x_adv has {len(x_adv)} examples but y has {len(y)}")
    if len(y) == 0:
        raise ValueError("no examples: x_adv and y are empty")
    predicted = predict(model, x_adv, batch_size)
    y = y.cpu()
    if targeted:
        return (predicted == y).float().mean().item()
    fooled = predicted != y
    if x is not None:
        if x.shape != x_adv.shape:
            raise ValueError(f"x and x_adv must have one shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
        right = predict(model, x, batch_size) == y
        if not right.any():
            return math.nan
        fooled = fooled[right]
    return fooled.float().mean().item()


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
    if not sources or not targets:
        raise ValueError("sources and targets must each hold at least one named model")
    check_examples(x, y, batch_size)
    if isinstance(attack, Mapping):
        missing = [name for name in sources if name not in attack]
        if missing:
            raise ValueError(f"no attack given for the sources {missing}")
        attacks = dict(attack)
    else:
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
      <advlib.attacks.nattack>` at eps, population 50, 200 iterations) leaves an accuracy more than
      ``tolerance`` below white-box PGD's at eps. A black-box attack should be weaker than a white-box one.
      For a randomized model, pass one that queries through EOT with a confidence (:func:`advlib.attacks.nattack`
      says why), ``lambda m, x, y: nattack(eot(m, 8, average="probs"), x, y, eps, kappa=8)``;
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
    from .attacks import core, nattack, pgd  # attacks sit beside metrics; imported late to keep the order

    core.check_attack_inputs(model, x, y, eps=eps, steps=steps)
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1) (the checks compare it with the unbounded eps = 1), got {eps}")
    if len(x) == 0:
        raise ValueError("no examples: x and y are empty")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    if black_box is None:
        def black_box(model, x, y):
            return nattack(model, x, y, eps, popsize=50, iters=200, generator=torch.Generator().manual_seed(seed))

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
