"""The warning signs of obfuscated gradients (Athalye, Carlini and Wagner 2018, Sec. 3.1), checked on
a model."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..attacks import core, nattack, pgd
from ..utils import (
    check_count,
    check_examples,
    check_model,
    check_real,
    eval_mode,
    model_device,
)
from . import sanity
from .batches import (
    Attack,
    _attacked,
    _check_attack,
    _correct,
)


class MaskingChecks(NamedTuple):
    """The result of :func:`gradient_masking_checks`.

    ``masked``: whether any check flags; ``flags``: per check, whether it flags (``"unbounded"``,
    ``"black_box"``, ``"eps_growth"``, ``"zero_gradient"``, and AutoAttack's ``"randomized"``, ``"softmax"``
    and ``"dynamic"``); ``clean_accuracy``; ``pgd_accuracy``: eps ->
    accuracy under PGD, over the eps grid (the last entry eps = 1, the whole box); ``unbounded_success``:
    the fraction of correctly classified examples that PGD at eps = 1 fools; ``black_box_accuracy``: the
    accuracy under the black-box attack at eps; ``zero_gradient``: the fraction of examples whose input
    gradient of the cross-entropy is (near) zero; ``pgd_robust`` (eps -> tensor) and ``black_box_robust``:
    per example, correct when clean and under the attack (bool, on the CPU), whose means are the
    accuracies above (for intervals: :func:`advlib.metrics.confidence_interval`).
    """

    masked: bool
    flags: dict[str, bool]
    clean_accuracy: float
    pgd_accuracy: dict[float, float]
    unbounded_success: float
    black_box_accuracy: float
    zero_gradient: float
    pgd_robust: dict[float, torch.Tensor]
    black_box_robust: torch.Tensor


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
      largest entry <= 1e-12, on more than half of the examples (shattered gradients);
    - AutoAttack's flags that need no attack (``advlib.evaluate.sanity``): ``"randomized"`` (two forward
      passes disagree: evaluate with EOT), ``"softmax"`` (probabilities instead of logits) and ``"dynamic"``
      (the forward pass computes gradients).

    PGD is Linf, ``steps`` steps of 2.5 eps' / steps from a random start at each eps' of the grid (Madry et
    al.'s, :func:`advlib.attacks.pgd`), seeded by ``seed``. A flag is a warning, not a proof: ``masked`` is
    whether any check flags. An undefended model passes every check; a defense that only masks gradients
    (``advlib.defenses.masking``) fails some. Returns a :class:`MaskingChecks`.
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
    black_box_robust = clean & _correct(model, _attacked(black_box, model, x, y), y)
    black_box_accuracy = black_box_robust.float().mean().item()
    with eval_mode(model):
        grad, _ = core.input_gradient(model, x, y)
    zero_gradient = (grad.flatten(1).abs().amax(dim=1) <= 1e-12).float().mean().item()

    accuracies = [pgd_accuracy[e] for e in grid]
    rises = any(b > a + tolerance for a, b in zip(accuracies, accuracies[1:], strict=False))
    flat = accuracies[-2] > 0.5 * clean_accuracy  # at 4 eps, or the largest eps of the grid below 1
    flags = {"unbounded": unbounded_success < 1 - tolerance,
             "black_box": black_box_accuracy < pgd_accuracy[eps] - tolerance,
             "eps_growth": rises or flat,
             "zero_gradient": zero_gradient > 0.5,
             "randomized": sanity.is_randomized(model, x[:256]),
             "softmax": sanity.outputs_probabilities(model, x[:256]),
             "dynamic": sanity.optimizes_at_inference(model, x[:8])}
    return MaskingChecks(masked=any(flags.values()), flags=flags, clean_accuracy=clean_accuracy,
                         pgd_accuracy=pgd_accuracy, unbounded_success=unbounded_success,
                         black_box_accuracy=black_box_accuracy, zero_gradient=zero_gradient,
                         pgd_robust={e: r.cpu() for e, r in pgd_correct.items()},
                         black_box_robust=black_box_robust.cpu())
