"""AutoAttack (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML, Sec. 4): the field's standard evaluation of robust accuracy since 2020.

Four attacks, run one after the other, each only on the examples every earlier one left standing
(correctly classified when clean and not yet broken); an example counts as robust when none breaks it:

1. APGD-CE: Auto-PGD on the cross-entropy (:func:`advlib.attacks.apgd`), 100 steps;
2. APGD-T: Auto-PGD on the targeted DLR loss toward each of the 9 classes the model ranks highest after
   the true one (:func:`advlib.attacks.apgd_t`), 100 steps each;
3. FAB-T: the targeted minimum-norm attack FAB (:func:`advlib.attacks.fab`), the same 9 targets, 100 steps;
4. Square: the score-based black box (:func:`advlib.attacks.square`), 5,000 queries.

Why each is there (Sec. 3-4): APGD replaces PGD's fixed step by a schedule that halves the step when the
loss stalls (no step size to tune); the DLR loss is unchanged when the logits are shifted or scaled, so a
model cannot hide behind the scale of its logits (as it can from the cross-entropy); a minimum-norm attack
looks for the closest boundary instead of the highest loss; a black box needs no gradient, so it sees
through masked gradients. ``version="rand"`` (for randomized defenses) runs APGD-CE and APGD-DLR with
the gradient averaged over 20 draws of the model (Expectation over Transformation).

:func:`autoattack` returns an :class:`AutoAttackResult`: per example the worst-case image and which attack
broke it; per attack the robust accuracy after it, its time and the model evaluations it spent per
example attacked; and AutoAttack's sanity flags (``advlib.evaluate.sanity``, plus ``"square"``: the
black box lowered the white-box attacks' robust accuracy by more than 0.2 points, a sign of masked
gradients, or of white-box attacks too weak for this model).
"""

from __future__ import annotations

import time
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from .. import metrics
from ..attacks import apgd, apgd_t, fab, square
from ..utils import check_choice, check_count, check_examples, check_model, check_real, model_device, progress
from .batches import _correct
from .sanity import sanity_flags

__all__ = ["CPU_TARGETED_ROWS", "SQUARE_TOLERANCE", "TARGETED", "VERSIONS", "AutoAttackResult", "autoattack",
           "autoattack_suite"]

VERSIONS = ("standard", "rand")
TARGETED = ("APGD-T", "FAB-T")  # attacks whose forward passes carry `targets` copies of each image
# on the CPU, the targeted attacks' passes hold at most this many rows (images times targets): measured
# faster per row (APGD-T on chapter 10's network: 17% less time at 144 rows than at 432, one AMD EPYC core);
# 72 rows took as long as 144 inside a whole evaluation (and 36 longer: more passes, each with its fixed
# cost). Square and APGD-CE keep batch_size images: Square at 81 rows took 27% longer than at 321, its loop
# costing per pass
CPU_TARGETED_ROWS = 144
# the square flag: raised when Square lowers the white-box attacks' robust accuracy by more than this
# (0.2 points, the tolerance of the reference implementation's check); on fewer than 500 images, one image
SQUARE_TOLERANCE = 0.002


class AutoAttackResult(NamedTuple):
    """The result of :func:`autoattack`.

    ``x_adv``: per example the image that broke it (the clean image where nothing did), on the CPU;
    ``clean``, ``robust``: per example, correctly classified when clean, and still after every attack;
    ``broken_by``: per example the name of the attack that broke it, ``"clean"`` when it was misclassified
    to begin with, None when it is robust; ``accuracy``: ``"clean"`` then each attack's name -> the robust
    accuracy after it (over every example); ``seconds``: attack -> time; ``evaluations``: attack -> model
    evaluations (forward passes of one image, gradient or not) spent per example it attacked, Square's
    being its queries; ``flags``: AutoAttack's sanity flags -> raised or not.
    """

    x_adv: torch.Tensor
    clean: torch.Tensor
    robust: torch.Tensor
    broken_by: list
    accuracy: dict
    seconds: dict
    evaluations: dict
    flags: dict

    @property
    def robust_accuracy(self) -> float:
        """The share of examples no attack broke (and correctly classified when clean)."""
        return self.robust.double().mean().item()


def autoattack_suite(eps: float, *, norm: str = "linf", version: str = "standard", steps: int = 100,
                     targets: int = 9, queries: int = 5000, eot_iter: int = 20) -> dict:
    """AutoAttack's attacks as named callables ``attack(model, x, y, generator=None)``, in the order it runs
    them, at the paper's settings by default (Croce and Hein 2020, Sec. 4; ``steps``, ``targets``,
    ``queries``, ``eot_iter`` lower them for a quick run)."""
    check_choice("version", version, VERSIONS)
    check_choice("norm", norm, ("linf", "l2"))
    if version == "rand":
        return {"APGD-CE (EOT)": partial(apgd, eps=eps, norm=norm, loss="ce", steps=steps, eot_iter=eot_iter),
                "APGD-DLR (EOT)": partial(apgd, eps=eps, norm=norm, loss="dlr", steps=steps, eot_iter=eot_iter)}
    return {"APGD-CE": partial(apgd, eps=eps, norm=norm, loss="ce", steps=steps),
            "APGD-T": partial(apgd_t, eps=eps, norm=norm, steps=steps, targets=targets),
            "FAB-T": partial(fab, eps=eps, norm=norm, steps=steps, targets=targets),
            "Square": partial(square, eps=eps, norm=norm, queries=queries)}


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               version: str = "standard", steps: int = 100, targets: int = 9, queries: int = 5000,
               eot_iter: int = 20, batch_size: int = 500, seed: int = 0, desc: str = "AutoAttack") -> AutoAttackResult:
    """AutoAttack's robust accuracy of ``model`` on (x, y) within the ``norm`` ball of radius ``eps`` (Croce
    and Hein 2020, Sec. 4; module docstring): each attack of :func:`autoattack_suite` in turn on the
    examples still standing, in batches of ``batch_size`` on the model's device. An attack's output counts
    only when the model misclassifies it (checked here, not trusted). Returns an :class:`AutoAttackResult`.

    ``version="standard"`` is the paper's (APGD-CE, APGD-T, FAB-T, Square); ``"rand"`` the one for randomized
    models (APGD-CE and APGD-DLR averaging ``eot_iter`` gradients per step). ``steps``, ``targets``,
    ``queries`` and ``eot_iter`` default to the paper's 100, 9, 5,000 and 20.

    ``batch_size`` is the number of images per forward pass: APGD-T and FAB-T, which attack every target
    of an image in one batch, take ``batch_size // targets`` images at a time, and on the CPU at most
    ``CPU_TARGETED_ROWS // targets`` (144 rows, measured faster on a CPU). Each attack draws from its
    own generator seeded by ``seed``, one stream across its batches, so APGD's and FAB's results do not
    depend on ``batch_size`` (they give a batch the result of its pieces); Square's random squares do. The
    speed does: on a CPU a pass over a few hundred images costs less per image than one over thousands
    (1.5-1.8 times less for APGD-T and FAB-T on chapter 10's network, measured); on a GPU, raise it.
    """
    check_model(model)
    check_examples(x, y)
    eps = check_real("eps", eps)
    batch_size = check_count("batch_size", batch_size, low=1)
    suite = autoattack_suite(eps, norm=norm, version=version, steps=check_count("steps", steps),
                             targets=check_count("targets", targets, low=1),
                             queries=check_count("queries", queries, low=1),
                             eot_iter=check_count("eot_iter", eot_iter, low=1))
    seed = check_count("seed", seed)
    device = model_device(model)
    x, y = x.detach().cpu(), y.detach().cpu()
    clean = metrics.correct(model, x, y, batch_size=batch_size) if len(x) else torch.zeros(0, dtype=torch.bool)
    robust, x_adv = clean.clone(), x.clone()
    broken_by = [None if c else "clean" for c in clean.tolist()]
    accuracy, seconds, evaluations = {"clean": clean.double().mean().item()}, {}, {}
    flags = sanity_flags(model, x, y, eps, seed=seed) if len(x) else {}
    rows = [0]
    hook = model.register_forward_hook(lambda module, inputs, output: rows.__setitem__(0, rows[0] + len(inputs[0])))
    try:
        for name, attack in progress(suite.items(), desc=desc, total=len(suite), unit="attack"):
            standing = robust.nonzero().flatten()
            rows[0], tic = 0, time.perf_counter()
            generator = torch.Generator().manual_seed(seed)  # one stream per attack, across its batches
            # batch_size images per forward pass: the targeted attacks replicate each image per target
            per_call = batch_size
            if name in TARGETED:
                cap = batch_size if device.type != "cpu" else min(batch_size, CPU_TARGETED_ROWS)
                per_call = max(1, cap // targets)
            for chunk in standing.split(per_call):
                xb, yb = x[chunk].to(device), y[chunk].to(device)
                adv = attack(model, xb, yb, generator=generator)
                broken = ~_correct(model, adv, yb).cpu()
                x_adv[chunk[broken]] = adv[broken.to(adv.device)].cpu()
                robust[chunk[broken]] = False
                for i in chunk[broken].tolist():
                    broken_by[i] = name
            seconds[name] = time.perf_counter() - tic
            evaluations[name] = rows[0] / max(1, len(standing))
            accuracy[name] = robust.double().mean().item()
    finally:
        hook.remove()
    if "Square" in accuracy:
        white_box = [accuracy[name] for name in accuracy if name not in ("clean", "Square")]
        flags["square"] = accuracy["Square"] < min(white_box) - SQUARE_TOLERANCE
    return AutoAttackResult(x_adv=x_adv, clean=clean, robust=robust, broken_by=broken_by, accuracy=accuracy,
                            seconds=seconds, evaluations=evaluations, flags=flags)
